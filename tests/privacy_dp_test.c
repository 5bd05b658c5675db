/*
 * Tests of the DP primitives: L2 clipping (src/privacy/clip.c), Gaussian noise with real
 * statistical tests (src/privacy/noise.c), adaptive clipping and the noise split
 * (src/privacy/adaptive.c), with the values of REFERENCES.md.
 *
 * Statistical tests: each check has a false-alarm probability of at most 1e-6 for the secure
 * (unseeded) source, computed from the normal approximation of the statistic's distribution,
 * which is excellent at the sample sizes used (10^6 draws). The seeded source is deterministic.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/privacy.h"
#include "fedc/rng.h"
#include "fedc/vec.h"

/* Two-sided standard normal quantile for a false alarm of 1e-6: P(|N| > 4.8916) = 1e-6. */
#define Z_TWO_SIDED_1E6 4.8916
/* One-sided: P(N > 4.7534) = 1e-6. */
#define Z_ONE_SIDED_1E6 4.7534

/* --- clipping ------------------------------------------------------------------------------- */

static void test_clip_scales_down(void **state)
{
    (void)state;
    float x[4] = {3, 4, 0, 0}; /* norm 5 */
    double pre = 0;
    assert_int_equal(fedc_dp_clip_l2(4, x, 1.0, &pre, NULL), FEDC_OK);
    assert_close(pre, 5.0, 1e-15, 0);
    double post = fedc_vec_norm2(4, x);
    assert_true(post <= 1.0);
    assert_close(post, 1.0, 1e-6, 0);
    assert_close(x[0], 0.6, 1e-6, 0);
    assert_close(x[1], 0.8, 1e-6, 0);
    assert_true(x[2] == 0 && x[3] == 0);
}

static void test_clip_leaves_small_untouched(void **state)
{
    (void)state;
    float x[5] = {0.1f, -0.2f, 1e-30f, -0.0f, 0.3f}, copy[5];
    memcpy(copy, x, sizeof x);
    double pre;
    assert_int_equal(fedc_dp_clip_l2(5, x, 1.0, &pre, NULL), FEDC_OK);
    assert_memory_equal(x, copy, sizeof x);
    /* Exactly at the clip: untouched too. */
    float y[2] = {3, 4}, ycopy[2] = {3, 4};
    assert_int_equal(fedc_dp_clip_l2(2, y, 5.0, NULL, NULL), FEDC_OK);
    assert_memory_equal(y, ycopy, sizeof y);
    assert_int_equal(fedc_dp_clip_l2(0, NULL, 1.0, &pre, NULL), FEDC_OK);
    assert_true(pre == 0.0);
}

static void test_clip_norm_never_above(void **state)
{
    (void)state;
    /* Random vectors and clips: the clipped norm is <= C every time, and the direction kept. */
    fedc_rng rng;
    fedc_rng_init(&rng, 7, 0, 0, FEDC_RNG_ATTACK);
    enum { NMAX = 3000 };
    float *x = fedc_malloc(NMAX * sizeof *x), *orig = fedc_malloc(NMAX * sizeof *orig);
    assert_non_null(x);
    assert_non_null(orig);
    for (int trial = 0; trial < 400; trial++) {
        size_t n = 1 + fedc_rng_below(&rng, NMAX);
        double scale = exp(10 * (fedc_rng_uniform(&rng) - 0.5));
        for (size_t i = 0; i < n; i++) orig[i] = x[i] = (float)(scale * fedc_rng_normal(&rng));
        double norm0 = fedc_vec_norm2(n, x);
        double c = norm0 * (0.01 + 0.98 * fedc_rng_uniform(&rng));
        double pre;
        assert_int_equal(fedc_dp_clip_l2(n, x, c, &pre, NULL), FEDC_OK);
        assert_true(pre == norm0);
        double post = fedc_vec_norm2(n, x);
        assert_true(post <= c);
        assert_true(post >= c * (1 - 1e-5));
        double cosine = fedc_vec_dot(n, x, orig) / (post * norm0);
        assert_true(cosine > 1 - 1e-6);
    }
    fedc_free(x);
    fedc_free(orig);
}

static void test_clip_errors(void **state)
{
    (void)state;
    float x[3] = {1, NAN, 2}, copy[3];
    memcpy(copy, x, sizeof x);
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_dp_clip_l2(3, x, 1.0, NULL, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "element 1"));
    assert_memory_equal(x, copy, sizeof x);
    float y[2] = {1, 2};
    assert_int_equal(fedc_dp_clip_l2(2, y, 0.0, NULL, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "clip"));
    assert_int_equal(fedc_dp_clip_l2(2, y, -1.0, NULL, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_clip_l2(2, y, INFINITY, NULL, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_clip_l2(2, y, NAN, NULL, &err), FEDC_ERR_RANGE);
}

/* --- noise ---------------------------------------------------------------------------------- */

/* Standard normal CDF. */
static double phi(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

/* Checks that d[0..n-1] look like N(0, sigma^2): mean, variance and a 50-bin chi-square test of
 * the shape, each with false-alarm probability <= 1e-6. */
static void check_gaussian(const double *d, size_t n, double sigma)
{
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) sum += d[i];
    double mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) sq += (d[i] - mean) * (d[i] - mean);
    double var = sq / (double)(n - 1);
    /* Mean: N(0, sigma^2 / n). */
    assert_true(fabs(mean) <= Z_TWO_SIDED_1E6 * sigma / sqrt((double)n));
    /* Variance: (n-1) s^2 / sigma^2 ~ chi2(n-1) ~ N(n-1, 2(n-1)), so s^2/sigma^2 - 1 has sd
     * sqrt(2/(n-1)). */
    double ratio = var / (sigma * sigma);
    if (!(fabs(ratio - 1) <= Z_TWO_SIDED_1E6 * sqrt(2.0 / (double)(n - 1))))
        fail_msg("noise variance ratio %.6f (sigma %g, n %zu) outside 1 +- %.6f", ratio, sigma, n,
                 Z_TWO_SIDED_1E6 * sqrt(2.0 / (double)(n - 1)));
    /* Shape: 50 equiprobable bins; chi-square with 49 degrees of freedom, critical value at
     * 1e-6 by the Wilson-Hilferty approximation. */
    enum { BINS = 50 };
    double edges[BINS - 1];
    for (int b = 1; b < BINS; b++) {
        /* Invert phi by bisection. */
        double lo = -10, hi = 10, p = (double)b / BINS;
        for (int it = 0; it < 100; it++) {
            double mid = 0.5 * (lo + hi);
            if (phi(mid) < p)
                lo = mid;
            else
                hi = mid;
        }
        edges[b - 1] = 0.5 * (lo + hi) * sigma;
    }
    static size_t count[BINS];
    memset(count, 0, sizeof count);
    for (size_t i = 0; i < n; i++) {
        int lo = 0, hi = BINS - 1; /* first edge > d[i] */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (edges[mid] > d[i])
                hi = mid;
            else
                lo = mid + 1;
        }
        count[lo]++;
    }
    double expect = (double)n / BINS, chi2 = 0;
    for (int b = 0; b < BINS; b++) chi2 += (count[b] - expect) * (count[b] - expect) / expect;
    double k = BINS - 1, h = 2.0 / (9 * k);
    double crit = k * pow(1 - h + Z_ONE_SIDED_1E6 * sqrt(h), 3);
    if (!(chi2 <= crit)) fail_msg("noise shape: chi-square %.2f > %.2f (1e-6)", chi2, crit);
}

enum { NDRAW = 1000000 };

static void test_noise_secure_statistics(void **state)
{
    (void)state;
    fedc_dp_noise ns;
    assert_int_equal(fedc_dp_noise_init_secure(&ns, NULL), FEDC_OK);
    assert_int_equal(fedc_dp_noise_is_private(&ns), 1);
    /* sigma = z C with z = 1.1, C = 0.5, added to a vector of zeros. */
    float *x = fedc_calloc(NDRAW, sizeof *x);
    double *d = fedc_malloc(NDRAW * sizeof *d);
    assert_non_null(x);
    assert_non_null(d);
    double sigma = 1.1 * 0.5;
    assert_int_equal(fedc_dp_noise_add(&ns, NDRAW, x, sigma, NULL), FEDC_OK);
    for (size_t i = 0; i < NDRAW; i++) d[i] = x[i];
    check_gaussian(d, NDRAW, sigma);
    /* The unit sampler itself. */
    for (size_t i = 0; i < NDRAW; i++) d[i] = fedc_dp_noise_normal(&ns);
    check_gaussian(d, NDRAW, 1.0);
    fedc_dp_noise_fini(&ns);
    fedc_free(x);
    fedc_free(d);
}

static void test_noise_added_to_values(void **state)
{
    (void)state;
    /* Noise is added to the existing values (in double, one rounding): x - base ~ N(0, s^2). */
    fedc_dp_noise ns;
    fedc_dp_noise_init_seeded(&ns, 11, 3, 4);
    size_t n = 200000;
    float *x = fedc_malloc(n * sizeof *x), *base = fedc_malloc(n * sizeof *base);
    double *d = fedc_malloc(n * sizeof *d);
    assert_non_null(x);
    assert_non_null(base);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++) base[i] = x[i] = (float)(100.0 + (double)(i % 17));
    assert_int_equal(fedc_dp_noise_add(&ns, n, x, 2.0, NULL), FEDC_OK);
    for (size_t i = 0; i < n; i++) d[i] = (double)x[i] - (double)base[i];
    check_gaussian(d, n, 2.0);
    fedc_dp_noise_fini(&ns);
    fedc_free(x);
    fedc_free(base);
    fedc_free(d);
}

static void test_noise_seeded_reproducible(void **state)
{
    (void)state;
    fedc_dp_noise a, b, c;
    fedc_dp_noise_init_seeded(&a, 42, 1, 2);
    fedc_dp_noise_init_seeded(&b, 42, 1, 2);
    fedc_dp_noise_init_seeded(&c, 42, 1, 3);
    assert_int_equal(fedc_dp_noise_is_private(&a), 0);
    float xa[1000] = {0}, xb[1000] = {0}, xc[1000] = {0};
    assert_int_equal(fedc_dp_noise_add(&a, 1000, xa, 1.0, NULL), FEDC_OK);
    assert_int_equal(fedc_dp_noise_add(&b, 1000, xb, 1.0, NULL), FEDC_OK);
    assert_int_equal(fedc_dp_noise_add(&c, 1000, xc, 1.0, NULL), FEDC_OK);
    assert_memory_equal(xa, xb, sizeof xa);
    assert_memory_not_equal(xa, xc, sizeof xa);
    /* The seeded sampler passes the same statistical test. */
    double *d = fedc_malloc(NDRAW * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < NDRAW; i++) d[i] = fedc_dp_noise_normal(&a);
    check_gaussian(d, NDRAW, 1.0);
    fedc_free(d);
    fedc_dp_noise_fini(&a);
    fedc_dp_noise_fini(&b);
    fedc_dp_noise_fini(&c);
}

static char logged[1024];
static int logged_level = -1;

static void capture_log(void *user, fedc_log_level level, const char *subsys, const char *msg)
{
    (void)user;
    if (strcmp(subsys, "dp") != 0) return;
    snprintf(logged, sizeof logged, "%s", msg);
    if (logged_level < 0 || (int)level < logged_level) logged_level = (int)level;
}

static void test_noise_seeded_is_logged(void **state)
{
    (void)state;
    /* Seeded noise says in the log that it is not private: a warning the first time. */
    fedc_log_set(capture_log, NULL, FEDC_LOG_DEBUG);
    logged[0] = '\0';
    logged_level = -1;
    fedc_dp_noise a, b;
    fedc_dp_noise_init_seeded(&a, 9, 1, 2);
    fedc_dp_noise_init_seeded(&b, 9, 1, 3);
    fedc_log_set(NULL, NULL, FEDC_LOG_ERROR);
    assert_non_null(strstr(logged, "NOT private"));
    assert_non_null(strstr(logged, "client 3"));
    assert_int_equal(logged_level, FEDC_LOG_WARN);
    fedc_dp_noise_fini(&a);
    fedc_dp_noise_fini(&b);
}

static void test_noise_secure_streams_differ(void **state)
{
    (void)state;
    fedc_dp_noise a, b;
    assert_int_equal(fedc_dp_noise_init_secure(&a, NULL), FEDC_OK);
    assert_int_equal(fedc_dp_noise_init_secure(&b, NULL), FEDC_OK);
    float xa[64] = {0}, xb[64] = {0};
    assert_int_equal(fedc_dp_noise_add(&a, 64, xa, 1.0, NULL), FEDC_OK);
    assert_int_equal(fedc_dp_noise_add(&b, 64, xb, 1.0, NULL), FEDC_OK);
    assert_memory_not_equal(xa, xb, sizeof xa);
    fedc_dp_noise_fini(&a);
    fedc_dp_noise_fini(&b);
    /* fini wipes the buffered randomness. */
    static const fedc_dp_noise zero;
    assert_memory_equal(&a, &zero, sizeof a);
    fedc_dp_noise_fini(NULL);
}

static void test_noise_errors_and_zero(void **state)
{
    (void)state;
    fedc_dp_noise ns;
    fedc_dp_noise_init_seeded(&ns, 1, 0, 0);
    float x[3] = {1, 2, 3}, copy[3] = {1, 2, 3};
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_dp_noise_add(&ns, 3, x, 0.0, &err), FEDC_OK);
    assert_memory_equal(x, copy, sizeof x);
    assert_int_equal(fedc_dp_noise_add(&ns, 3, x, -1.0, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "stddev"));
    assert_int_equal(fedc_dp_noise_add(&ns, 3, x, NAN, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_noise_add(&ns, 3, x, INFINITY, &err), FEDC_ERR_RANGE);
    assert_memory_equal(x, copy, sizeof x);
    fedc_dp_noise_fini(&ns);
}

/* --- adaptive clipping ---------------------------------------------------------------------- */

static void test_adaptive_defaults(void **state)
{
    (void)state;
    fedc_adaptive_clip_params p;
    fedc_adaptive_clip_defaults(&p, 100);
    assert_true(p.initial_clip == 0.1 && p.target_quantile == 0.5 && p.learning_rate == 0.2 &&
                p.count_stddev == 5.0 && p.expected_clients == 100 && p.geometric == 1);
}

static void test_adaptive_zero_noise_geometric(void **state)
{
    (void)state;
    /* REFERENCES.md (TF Privacy's quantile_adaptive_clip_sum_query_test): records [5.0] and
     * [-2.5], C0 = 16, gamma = 0, eta = ln 2, geometric, no noise -> 8, 4, 2 sqrt 2, 2, 2. */
    fedc_adaptive_clip_params p = {16.0, 0.0, log(2.0), 0.0, 2.0, 1};
    fedc_adaptive_clip ac;
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, NULL), FEDC_OK);
    const double want[5] = {8, 4, 2 * sqrt(2.0), 2, 2};
    for (int r = 0; r < 5; r++) {
        float recs[2][1] = {{5.0f}, {-2.5f}};
        double c = fedc_adaptive_clip_current(&ac);
        for (int i = 0; i < 2; i++) {
            double pre;
            assert_int_equal(fedc_dp_clip_l2(1, recs[i], c, &pre, NULL), FEDC_OK);
            assert_true(fabsf(recs[i][0]) <= c);
            fedc_adaptive_clip_observe(&ac, pre);
        }
        double nc;
        fedc_adaptive_clip_update(&ac, NULL, &nc);
        assert_close(nc, want[r], 1e-12, 0);
        assert_close(fedc_adaptive_clip_current(&ac), want[r], 1e-12, 0);
    }
    assert_int_equal(ac.rounds, 5);
}

static void test_adaptive_zero_noise_linear(void **state)
{
    (void)state;
    /* Linear update, C0 = 10, gamma = 0, eta = 1, norms 5 and 2.5: C drops by eta * b. */
    fedc_adaptive_clip_params p = {10.0, 0.0, 1.0, 0.0, 2.0, 0};
    fedc_adaptive_clip ac;
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, NULL), FEDC_OK);
    const double want[10] = {9, 8, 7, 6, 5, 4, 3.5, 3, 2.5, 2};
    for (int r = 0; r < 10; r++) {
        fedc_adaptive_clip_observe(&ac, 5.0);
        fedc_adaptive_clip_observe_bit(&ac, 2.5 <= fedc_adaptive_clip_current(&ac));
        double nc;
        fedc_adaptive_clip_update(&ac, NULL, &nc);
        assert_close(nc, want[r], 1e-12, 0);
    }
    fedc_adaptive_clip_update(&ac, NULL, NULL); /* no records: b = 1/2 */
    assert_close(ac.last_fraction, 0.5, 0, 0);
    assert_close(fedc_adaptive_clip_current(&ac), 1.5, 1e-12, 0);
}

static void test_adaptive_converges(void **state)
{
    (void)state;
    /* Norms ~ lognormal(0, 1): the q-quantile is exp(z_q). TFF defaults for m = 100 (noise
     * sigma_b = 5 on the count, seeded), 400 rounds from C0 = 0.1: the clip settles at the
     * target quantile, within 10 %. */
    const double targets[2] = {0.5, 0.8}, z_q[2] = {0.0, 0.8416212335729143};
    for (int t = 0; t < 2; t++) {
        fedc_adaptive_clip_params p;
        fedc_adaptive_clip_defaults(&p, 100);
        p.target_quantile = targets[t];
        fedc_adaptive_clip ac;
        assert_int_equal(fedc_adaptive_clip_init(&ac, &p, NULL), FEDC_OK);
        fedc_dp_noise ns;
        fedc_dp_noise_init_seeded(&ns, 5, 0, (uint32_t)t);
        fedc_rng pop;
        fedc_rng_init(&pop, 5, 0, (uint32_t)t, FEDC_RNG_DATA);
        double log_sum = 0, frac_sum = 0;
        int counted = 0;
        for (int r = 0; r < 400; r++) {
            for (int i = 0; i < 100; i++)
                fedc_adaptive_clip_observe(&ac, fedc_rng_lognormal(&pop, 0.0, 1.0));
            fedc_adaptive_clip_update(&ac, &ns, NULL);
            if (r >= 200) {
                log_sum += log(fedc_adaptive_clip_current(&ac));
                frac_sum += ac.last_fraction;
                counted++;
            }
        }
        double clip = exp(log_sum / counted), want = exp(z_q[t]);
        if (fabs(clip / want - 1) > 0.10)
            fail_msg("quantile %.1f: clip %.4f, want %.4f", targets[t], clip, want);
        assert_close(frac_sum / counted, targets[t], 0, 0.03);
        fedc_dp_noise_fini(&ns);
    }
}

static void test_adaptive_init_errors(void **state)
{
    (void)state;
    fedc_adaptive_clip ac;
    fedc_adaptive_clip_params p;
    fedc_err err;
    fedc_adaptive_clip_defaults(&p, 10);
    p.initial_clip = 0;
    fedc_err_clear(&err);
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "initial clip"));
    fedc_adaptive_clip_defaults(&p, 10);
    p.target_quantile = 1.5;
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "quantile"));
    fedc_adaptive_clip_defaults(&p, 10);
    p.learning_rate = -1;
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, &err), FEDC_ERR_RANGE);
    fedc_adaptive_clip_defaults(&p, 10);
    p.count_stddev = -1;
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, &err), FEDC_ERR_RANGE);
    fedc_adaptive_clip_defaults(&p, 0);
    assert_int_equal(fedc_adaptive_clip_init(&ac, &p, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "expected clients"));
}

static void test_noise_split(void **state)
{
    (void)state;
    /* z = 1, m = 100: sigma_b = 5, z_delta = (1 - 1/100)^(-1/2) = 1.0050378153. */
    double zd;
    assert_int_equal(fedc_dp_noise_split(1.0, 100 / 20.0, &zd, NULL), FEDC_OK);
    assert_close(zd, 1.0050378153, 1e-10, 0);
    assert_int_equal(fedc_dp_noise_split(1.0, 0.0, &zd, NULL), FEDC_OK);
    assert_true(zd == 1.0);
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_dp_noise_split(10.0, 5.0, &zd, &err), FEDC_ERR_RANGE); /* z = 2 sigma_b */
    assert_non_null(strstr(err.msg, "2 * clipped-count stddev"));
    assert_int_equal(fedc_dp_noise_split(12.0, 5.0, &zd, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_noise_split(0.0, 5.0, &zd, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_noise_split(1.0, -1.0, &zd, &err), FEDC_ERR_RANGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip_scales_down),
        cmocka_unit_test(test_clip_leaves_small_untouched),
        cmocka_unit_test(test_clip_norm_never_above),
        cmocka_unit_test(test_clip_errors),
        cmocka_unit_test(test_noise_seeded_is_logged),
        cmocka_unit_test(test_noise_secure_statistics),
        cmocka_unit_test(test_noise_added_to_values),
        cmocka_unit_test(test_noise_seeded_reproducible),
        cmocka_unit_test(test_noise_secure_streams_differ),
        cmocka_unit_test(test_noise_errors_and_zero),
        cmocka_unit_test(test_adaptive_defaults),
        cmocka_unit_test(test_adaptive_zero_noise_geometric),
        cmocka_unit_test(test_adaptive_zero_noise_linear),
        cmocka_unit_test(test_adaptive_converges),
        cmocka_unit_test(test_adaptive_init_errors),
        cmocka_unit_test(test_noise_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
