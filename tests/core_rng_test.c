/* Random streams: Philox known answers, pinned stream output, independence, distributions. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "fedc/fedc.h"

/* Known-answer vectors of Philox4x32-10 from Random123's kat_vectors (Salmon et al. 2011). */
static void test_philox_known_answers(void **state)
{
    (void)state;
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        fedc_philox4x32_10(kat[i].key, kat[i].ctr, out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], kat[i].out[j]);
    }
}

/* The first draws of fixed streams, pinned: a change here changes every fedc run's results. */
static void test_pinned_stream(void **state)
{
    (void)state;
    fedc_rng r;
    fedc_rng_init(&r, 42, 3, 7, FEDC_RNG_SAMPLE);
    uint32_t first[6];
    for (int i = 0; i < 6; i++) first[i] = fedc_rng_u32(&r);
    /* the stream is block (ctr = {b, round, client, purpose}) by block */
    uint32_t key[2] = {42, 0}, ctr[4] = {0, 3, 7, FEDC_RNG_SAMPLE}, out[4];
    fedc_philox4x32_10(key, ctr, out);
    for (int i = 0; i < 4; i++) assert_int_equal(first[i], out[i]);
    ctr[0] = 1;
    fedc_philox4x32_10(key, ctr, out);
    assert_int_equal(first[4], out[0]);
    assert_int_equal(first[5], out[1]);

    fedc_rng_init(&r, 1234, 0, 0, FEDC_RNG_INIT);
    static const uint32_t pinned_u32[4] = {0xe470c152u, 0x1ff4c101u, 0x9abe9664u, 0x9b7ae5efu};
    for (int i = 0; i < 4; i++) assert_int_equal(fedc_rng_u32(&r), pinned_u32[i]);
    fedc_rng_init(&r, 1234, 0, 0, FEDC_RNG_INIT);
    static const double pinned_normal[3] = {-1.6725620585825192, -1.2884846920441515,
                                            -0.32708626574860422};
    for (int i = 0; i < 3; i++) assert_close(fedc_rng_normal(&r), pinned_normal[i], 0, 1e-15);
}

static void test_streams_independent(void **state)
{
    (void)state;
    /* Different (seed, round, client, purpose) give different streams; same gives same. */
    fedc_rng a, b;
    uint32_t key_fields[5][4] = {{1, 0, 0, 1}, {2, 0, 0, 1}, {1, 1, 0, 1}, {1, 0, 1, 1},
                                 {1, 0, 0, 2}};
    uint32_t firsts[5];
    for (int s = 0; s < 5; s++) {
        fedc_rng_init(&a, key_fields[s][0], key_fields[s][1], key_fields[s][2],
                      (fedc_rng_purpose)key_fields[s][3]);
        fedc_rng_init(&b, key_fields[s][0], key_fields[s][1], key_fields[s][2],
                      (fedc_rng_purpose)key_fields[s][3]);
        for (int i = 0; i < 100; i++) assert_int_equal(fedc_rng_u32(&a), fedc_rng_u32(&b));
        fedc_rng_init(&a, key_fields[s][0], key_fields[s][1], key_fields[s][2],
                      (fedc_rng_purpose)key_fields[s][3]);
        firsts[s] = fedc_rng_u32(&a);
        for (int t = 0; t < s; t++) assert_int_not_equal(firsts[s], firsts[t]);
    }
    /* Correlation between two neighbouring streams over 100k uniforms ~ N(0, 1/sqrt(n)):
     * |r| < 5/sqrt(n) fails by chance with probability < 1e-6. */
    fedc_rng_init(&a, 9, 0, 0, FEDC_RNG_SHUFFLE);
    fedc_rng_init(&b, 9, 0, 1, FEDC_RNG_SHUFFLE);
    const int n = 100000;
    double sxy = 0, sx = 0, sy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double x = fedc_rng_uniform(&a), y = fedc_rng_uniform(&b);
        sx += x;
        sy += y;
        sxy += x * y;
        sxx += x * x;
        syy += y * y;
    }
    double cov = sxy / n - (sx / n) * (sy / n);
    double r = cov / sqrt((sxx / n - (sx / n) * (sx / n)) * (syy / n - (sy / n) * (sy / n)));
    assert_true(fabs(r) < 5 / sqrt((double)n));
}

static void test_distributions(void **state)
{
    (void)state;
    fedc_rng r;
    fedc_rng_init(&r, 7, FEDC_RNG_ANY, FEDC_RNG_ANY, FEDC_RNG_DATA);
    const int n = 200000;
    /* uniform: mean 1/2, var 1/12; bounds */
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) {
        double u = fedc_rng_uniform(&r);
        assert_true(u >= 0 && u < 1);
        s += u;
        ss += u * u;
    }
    /* 6-sigma bounds: false alarm < 1e-8 each */
    assert_close(s / n, 0.5, 0, 6 * sqrt(1.0 / 12 / n));
    assert_close(ss / n - (s / n) * (s / n), 1.0 / 12, 0, 0.002);
    /* normal: mean 0, var 1, kurtosis 3 */
    double m1 = 0, m2 = 0, m4 = 0;
    for (int i = 0; i < n; i++) {
        double z = fedc_rng_normal(&r);
        m1 += z;
        m2 += z * z;
        m4 += z * z * z * z;
    }
    assert_close(m1 / n, 0, 0, 6 / sqrt((double)n));
    assert_close(m2 / n, 1, 0, 6 * sqrt(2.0 / n));
    assert_close(m4 / n, 3, 0, 0.15);
    /* below: every residue equally likely (chi-square, 9 dof; 40 is p < 1e-5) */
    int counts[10] = {0};
    for (int i = 0; i < 100000; i++) counts[fedc_rng_below(&r, 10)]++;
    double chi = 0;
    for (int k = 0; k < 10; k++) chi += (counts[k] - 10000.0) * (counts[k] - 10000.0) / 10000.0;
    assert_true(chi < 40);
    /* bernoulli */
    int ones = 0;
    for (int i = 0; i < n; i++) ones += fedc_rng_bernoulli(&r, 0.3);
    assert_close((double)ones / n, 0.3, 0, 6 * sqrt(0.21 / n));
    assert_int_equal(fedc_rng_bernoulli(&r, 0), 0);
    assert_int_equal(fedc_rng_bernoulli(&r, 1), 1);
    /* gamma(k): mean k, var k, for k above and below 1 */
    double shapes[] = {0.1, 0.5, 1, 2.5, 10};
    for (int t = 0; t < 5; t++) {
        double k = shapes[t], g1 = 0, g2 = 0;
        for (int i = 0; i < n; i++) {
            double g = fedc_rng_gamma(&r, k);
            assert_true(g >= 0);
            g1 += g;
            g2 += g * g;
        }
        double mean = g1 / n, var = g2 / n - mean * mean;
        assert_close(mean, k, 0, 6 * sqrt(k / n));
        assert_close(var, k, 0.1, 0);
    }
}

static void test_dirichlet_and_permutation(void **state)
{
    (void)state;
    fedc_rng r;
    fedc_rng_init(&r, 11, 0, 0, FEDC_RNG_PARTITION);
    double alpha[4] = {0.5, 1, 2, 4.5}, p[4], mean[4] = {0};
    const int n = 50000;
    for (int i = 0; i < n; i++) {
        fedc_rng_dirichlet(&r, alpha, 4, p);
        double sum = 0;
        for (int k = 0; k < 4; k++) {
            assert_true(p[k] >= 0);
            sum += p[k];
            mean[k] += p[k] / n;
        }
        assert_close(sum, 1, 0, 1e-12);
    }
    for (int k = 0; k < 4; k++) assert_close(mean[k], alpha[k] / 8, 0, 0.005);
    /* tiny alphas: still on the simplex */
    double tiny[3] = {1e-3, 1e-3, 1e-3};
    fedc_rng_dirichlet(&r, tiny, 3, p);
    assert_close(p[0] + p[1] + p[2], 1, 0, 1e-12);

    uint32_t perm[1000];
    fedc_rng_permutation(&r, perm, 1000);
    char seen[1000] = {0};
    int fixed = 0;
    for (int i = 0; i < 1000; i++) {
        assert_true(perm[i] < 1000);
        assert_false(seen[perm[i]]);
        seen[perm[i]] = 1;
        fixed += perm[i] == (uint32_t)i;
    }
    assert_true(fixed < 10); /* expected 1 fixed point */
    /* uniformity over positions: element 0 lands in each of 4 slots ~1/4 of the time */
    int where[4] = {0};
    for (int i = 0; i < 40000; i++) {
        uint32_t q[4];
        fedc_rng_permutation(&r, q, 4);
        for (int k = 0; k < 4; k++)
            if (q[k] == 0) where[k]++;
    }
    for (int k = 0; k < 4; k++) assert_close(where[k], 10000, 0, 600);
    assert_true(fedc_rng_lognormal(&r, 0, 1) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers), cmocka_unit_test(test_pinned_stream),
        cmocka_unit_test(test_streams_independent), cmocka_unit_test(test_distributions),
        cmocka_unit_test(test_dirichlet_and_permutation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
