/* Tests of the exact fixed-point accumulator (include/fedc/accum.h): exact sums, independence
 * from add order and merges, every vector kernel giving the same bits, refusals that leave no
 * trace, and the MPI-style raw reduction; and the model hash of the aggregation path
 * (fedc_vec_sha256_hex) against libsodium's SHA-256. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/accum.h"
#include "fedc/alloc.h"
#include "fedc/rng.h"
#include "fedc/vec.h"
#include "fl/strategy_internal.h"

#define K 24
#define N 3001 /* not a multiple of any kernel width or chunk */

typedef struct data {
    float x[K][N];
    double w[K];
} data;

/* Values spanning many magnitudes and both signs, and weights like example counts. */
static data *make_data(uint64_t seed)
{
    data *d = malloc(sizeof *d);
    assert_non_null(d);
    fedc_rng rng;
    fedc_rng_init(&rng, seed, 0, 0, FEDC_RNG_DATA);
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < N; i++) {
            double mag = pow(10.0, -7.0 + 8.0 * fedc_rng_uniform(&rng));
            d->x[k][i] = (float)((fedc_rng_uniform(&rng) - 0.5) * mag);
        }
        d->w[k] = (double)(1 + fedc_rng_below(&rng, 600));
    }
    d->w[3] = 0.37; /* a non-integer weight too */
    return d;
}

static int64_t *raw_copy(fedc_accum *acc, size_t *len)
{
    int64_t *r = fedc_accum_raw(acc, len);
    int64_t *c = malloc(*len * sizeof *c);
    assert_non_null(c);
    memcpy(c, r, *len * sizeof *c);
    return c;
}

static fedc_accum *make_acc(size_t n)
{
    fedc_accum *acc = NULL;
    fedc_err err;
    assert_int_equal(fedc_accum_create(n, &acc, &err), FEDC_OK);
    return acc;
}

/* The sums are exactly sum_k llrint(x * w * 2^32): each term rounded once, added exactly. */
static void test_exact_sum(void **state)
{
    (void)state;
    data *d = make_data(1);
    fedc_accum *acc = make_acc(N);
    fedc_err err;
    for (int k = 0; k < K; k++) assert_int_equal(fedc_accum_add(acc, d->w[k], d->x[k], &err), 0);
    size_t len;
    const int64_t *raw = fedc_accum_raw(acc, &len);
    assert_int_equal(len, N + FEDC_ACCUM_TRAILER);
    for (int i = 0; i < N; i++) {
        int64_t expect = 0;
        for (int k = 0; k < K; k++) expect += llrint((double)d->x[k][i] * d->w[k] * 0x1p32);
        if (raw[i] != expect) fail_msg("sum %d: %lld, expected %lld", i, (long long)raw[i],
                                       (long long)expect);
    }
    double wsum = 0;
    for (int k = 0; k < K; k++) wsum += d->w[k];
    assert_close(fedc_accum_weight(acc), wsum, 1e-12, 0);
    assert_int_equal(fedc_accum_count(acc), K);

    /* The mean is within the fixed-point resolution of the true weighted mean. */
    float *mean = malloc(N * sizeof *mean);
    assert_int_equal(fedc_accum_mean(acc, mean, &err), FEDC_OK);
    for (int i = 0; i < N; i++) {
        long double s = 0;
        for (int k = 0; k < K; k++) s += (long double)d->x[k][i] * d->w[k];
        double ref = (double)(s / wsum);
        assert_close(mean[i], ref, 1e-6, K * 0x1p-32 / wsum + 1e-30);
    }
    free(mean);
    fedc_accum_destroy(acc);
    free(d);
}

/* Rounding is to nearest, ties to even, in every kernel. */
static void test_rounding_ties(void **state)
{
    (void)state;
    fedc_accum *acc = make_acc(32);
    fedc_err err;
    float x[32] = {0};
    /* terms in units of 2^-32: 1.5 -> 2, 2.5 -> 2, -1.5 -> -2, 0.49 -> 0, 3.5 -> 4 */
    const double t[] = {1.5, 2.5, -1.5, 0.49, 3.5, -2.5};
    const int64_t want[] = {2, 2, -2, 0, 4, -2};
    for (int i = 0; i < 32; i++) x[i] = (float)(t[i % 6] * 0x1p-32);
    for (int kern = FEDCI_ACCUM_KERNEL_SCALAR; kern <= FEDCI_ACCUM_KERNEL_AVX512; kern++) {
        if (!fedci_accum_set_kernel(kern)) continue;
        fedc_accum_reset(acc);
        assert_int_equal(fedc_accum_add(acc, 1.0, x, &err), FEDC_OK);
        size_t len;
        const int64_t *raw = fedc_accum_raw(acc, &len);
        for (int i = 0; i < 32; i++)
            if (raw[i] != want[i % 6])
                fail_msg("kernel %d, element %d: %lld, expected %lld", kern, i,
                         (long long)raw[i], (long long)want[i % 6]);
    }
    fedci_accum_set_kernel(FEDCI_ACCUM_KERNEL_AUTO);
    fedc_accum_destroy(acc);
}

/* Shuffled add order, partial accumulators merged, raw arrays summed as integers (MPI), all
 * kernels and add_many: the same bits every time. */
static void test_order_independent(void **state)
{
    (void)state;
    data *d = make_data(2);
    /* A few terms beyond the magic-number kernels' fast range, to exercise their fallback. */
    d->x[5][17] = 3e5f;
    d->x[9][2000] = -2.9e5f;
    d->w[5] = d->w[9] = 2000;
    fedc_err err;
    size_t len;

    fedc_accum *ref = make_acc(N);
    for (int k = 0; k < K; k++) assert_int_equal(fedc_accum_add(ref, d->w[k], d->x[k], &err), 0);
    int64_t *want = raw_copy(ref, &len);

    /* Float summation in two orders differs (why the accumulator exists) ... */
    float fa = 0, fb = 0;
    int differs = 0;
    for (int i = 0; i < N && !differs; i++) {
        fa = fb = 0;
        for (int k = 0; k < K; k++) fa += (float)d->w[k] * d->x[k][i];
        for (int k = K - 1; k >= 0; k--) fb += (float)d->w[k] * d->x[k][i];
        differs = fa != fb;
    }
    assert_true(differs);

    /* ... the fixed-point sum does not. */
    fedc_rng rng;
    fedc_rng_init(&rng, 7, 0, 0, FEDC_RNG_SHUFFLE);
    uint32_t perm[K];
    for (int trial = 0; trial < 4; trial++) {
        fedc_rng_permutation(&rng, perm, K);
        fedc_accum *a = make_acc(N), *b = make_acc(N), *c = make_acc(N);
        for (int j = 0; j < K; j++) {
            int k = (int)perm[j];
            fedc_accum *to = j % 3 == 0 ? a : (j % 3 == 1 ? b : c);
            assert_int_equal(fedc_accum_add(to, d->w[k], d->x[k], &err), FEDC_OK);
        }
        /* MPI-style: integer sum of raw arrays, then check. */
        size_t lb, lc;
        int64_t *rb = fedc_accum_raw(b, &lb);
        const int64_t *rc = fedc_accum_raw(c, &lc);
        assert_int_equal(lb, lc);
        for (size_t i = 0; i < lb; i++) rb[i] += rc[i];
        assert_int_equal(fedc_accum_check_raw(b, &err), FEDC_OK);
        assert_int_equal(fedc_accum_merge(a, b, &err), FEDC_OK);
        size_t la;
        assert_memory_equal(fedc_accum_raw(a, &la), want, len * sizeof(int64_t));
        fedc_accum_destroy(a);
        fedc_accum_destroy(b);
        fedc_accum_destroy(c);
    }

    for (int kern = FEDCI_ACCUM_KERNEL_SCALAR; kern <= FEDCI_ACCUM_KERNEL_AVX512; kern++) {
        if (!fedci_accum_set_kernel(kern)) continue;
        fedc_accum *a = make_acc(N);
        for (int k = K - 1; k >= 0; k--)
            assert_int_equal(fedc_accum_add(a, d->w[k], d->x[k], &err), FEDC_OK);
        size_t la;
        assert_memory_equal(fedc_accum_raw(a, &la), want, len * sizeof(int64_t));
        /* add_many, in batches of uneven sizes */
        fedc_accum_reset(a);
        const float *xs[K];
        fedc_status st[K];
        for (int k = 0; k < K; k++) xs[k] = d->x[k];
        assert_int_equal(fedc_accum_add_many(a, 5, d->w, xs, st, &err), FEDC_OK);
        assert_int_equal(fedc_accum_add_many(a, K - 5, d->w + 5, xs + 5, NULL, &err), FEDC_OK);
        assert_memory_equal(fedc_accum_raw(a, &la), want, len * sizeof(int64_t));
        fedc_accum_destroy(a);
    }
    fedci_accum_set_kernel(FEDCI_ACCUM_KERNEL_AUTO);
    free(want);
    fedc_accum_destroy(ref);
    free(d);
}

/* NaN, Inf, out-of-range terms and weights are refused with no trace left. */
static void test_refusals_leave_no_trace(void **state)
{
    (void)state;
    data *d = make_data(3);
    fedc_accum *acc = make_acc(N);
    fedc_err err;
    assert_int_equal(fedc_accum_add(acc, d->w[0], d->x[0], &err), FEDC_OK);
    size_t len;
    int64_t *before = raw_copy(acc, &len);

    float *bad = malloc(N * sizeof *bad);
    memcpy(bad, d->x[1], N * sizeof *bad);
    bad[2500] = NAN; /* late in the vector: earlier chunks must be undone */
    assert_int_equal(fedc_accum_add(acc, 3.0, bad, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "element 2500"));
    assert_memory_equal(fedc_accum_raw(acc, &len), before, len * sizeof(int64_t));

    bad[2500] = -INFINITY;
    assert_int_equal(fedc_accum_add(acc, 3.0, bad, &err), FEDC_ERR_NONFINITE);
    assert_memory_equal(fedc_accum_raw(acc, &len), before, len * sizeof(int64_t));

    bad[2500] = 2e9f; /* finite, but |w x| >= 2^30 */
    assert_int_equal(fedc_accum_add(acc, 1.0, bad, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "element 2500"));
    assert_memory_equal(fedc_accum_raw(acc, &len), before, len * sizeof(int64_t));

    assert_int_equal(fedc_accum_add(acc, NAN, d->x[1], &err), FEDC_ERR_NONFINITE);
    assert_int_equal(fedc_accum_add(acc, 0x1p30, d->x[1], &err), FEDC_ERR_RANGE);
    assert_memory_equal(fedc_accum_raw(acc, &len), before, len * sizeof(int64_t));

    /* add_many: the bad vector is skipped, the others are added. */
    const float *xs[3] = {d->x[1], bad, d->x[2]};
    double ws[3] = {d->w[1], 1.0, d->w[2]};
    fedc_status st[3];
    bad[2500] = NAN;
    assert_int_equal(fedc_accum_add_many(acc, 3, ws, xs, st, &err), FEDC_ERR_NONFINITE);
    assert_int_equal(st[0], FEDC_OK);
    assert_int_equal(st[1], FEDC_ERR_NONFINITE);
    assert_int_equal(st[2], FEDC_OK);
    assert_non_null(strstr(err.msg, "vector 1"));
    fedc_accum *ref = make_acc(N);
    assert_int_equal(fedc_accum_add(ref, d->w[0], d->x[0], &err), FEDC_OK);
    assert_int_equal(fedc_accum_add(ref, d->w[2], d->x[2], &err), FEDC_OK);
    assert_int_equal(fedc_accum_add(ref, d->w[1], d->x[1], &err), FEDC_OK);
    size_t lr;
    assert_memory_equal(fedc_accum_raw(acc, &len), fedc_accum_raw(ref, &lr),
                        len * sizeof(int64_t));

    /* undo removes exactly one add */
    fedci_accum_undo(ref, d->w[1], d->x[1]);
    fedci_accum_undo(ref, d->w[2], d->x[2]);
    assert_memory_equal(fedc_accum_raw(ref, &lr), before, len * sizeof(int64_t));

    free(bad);
    free(before);
    fedc_accum_destroy(ref);
    fedc_accum_destroy(acc);
    free(d);
}

/* The running bound: adds whose largest terms sum to 2^31 are refused (the exact sum could
 * overflow int64), and a merge that would cross it too. */
static void test_bound(void **state)
{
    (void)state;
    fedc_accum *acc = make_acc(4), *other = make_acc(4);
    fedc_err err;
    float x[4] = {0x1p29f, -1.0f, 0.5f, 0.0f};
    for (int i = 0; i < 3; i++) assert_int_equal(fedc_accum_add(acc, 1.0, x, &err), FEDC_OK);
    size_t len;
    int64_t *before = raw_copy(acc, &len);
    assert_int_equal(fedc_accum_add(acc, 1.0, x, &err), FEDC_ERR_RANGE);
    assert_memory_equal(fedc_accum_raw(acc, &len), before, len * sizeof(int64_t));
    float y[4] = {0x1p28f, 0, 0, 0};
    assert_int_equal(fedc_accum_add(acc, 1.0, y, &err), FEDC_OK); /* still fits */

    assert_int_equal(fedc_accum_add(other, 1.0, x, &err), FEDC_OK);
    assert_int_equal(fedc_accum_merge(acc, other, &err), FEDC_ERR_RANGE);
    /* An MPI reduction past the bound is caught by check_raw. */
    int64_t *ra = fedc_accum_raw(acc, &len);
    const int64_t *ro = fedc_accum_raw(other, &len);
    for (size_t i = 0; i < len; i++) ra[i] = (int64_t)((uint64_t)ra[i] + (uint64_t)ro[i]);
    assert_int_equal(fedc_accum_check_raw(acc, &err), FEDC_ERR_RANGE);

    fedc_accum *wrong = make_acc(5);
    assert_int_equal(fedc_accum_merge(other, wrong, &err), FEDC_ERR_SHAPE);
    free(before);
    fedc_accum_destroy(wrong);
    fedc_accum_destroy(other);
    fedc_accum_destroy(acc);
}

static void test_empty_and_sums(void **state)
{
    (void)state;
    fedc_accum *acc = make_acc(3);
    fedc_err err;
    float out[3];
    assert_int_equal(fedc_accum_mean(acc, out, &err), FEDC_ERR_STATE);
    float a[3] = {1, 2, 3}, b[3] = {-1, 0, 1};
    assert_int_equal(fedc_accum_add(acc, 10, a, &err), FEDC_OK);
    assert_int_equal(fedc_accum_add(acc, 30, b, &err), FEDC_OK);
    assert_int_equal(fedc_accum_mean(acc, out, &err), FEDC_OK);
    assert_true(out[0] == -0.5f && out[1] == 0.5f && out[2] == 1.5f);
    fedc_accum_sum(acc, 0.5, out);
    assert_true(out[0] == -10.0f && out[1] == 10.0f && out[2] == 30.0f);
    /* A negative weight removes; zero total weight has no mean. */
    assert_int_equal(fedc_accum_add(acc, -40, a, &err), FEDC_OK);
    assert_int_equal(fedc_accum_mean(acc, out, &err), FEDC_ERR_STATE);
    fedc_accum_destroy(acc);
    assert_int_equal(fedc_accum_create(0, &acc, &err), FEDC_ERR_INVALID);
    assert_null(acc);
    fedc_accum_destroy(NULL);
}

/* Every allocation failure in create is a clean error. */
static void test_alloc_failure(void **state)
{
    (void)state;
    fedc_err err;
    for (uint64_t n = 1; n <= 2; n++) {
        fedc_accum *acc = (fedc_accum *)1;
        fedc_alloc_fail_after(n, 0);
        assert_int_equal(fedc_accum_create(100, &acc, &err), FEDC_ERR_NOMEM);
        assert_null(acc);
    }
    fedc_alloc_fail_after(0, 0);
}

/* The model hash (fedc_vec_sha256_hex, nettle's SHA-256, SHA-NI where present) gives libsodium's
 * SHA-256 of the same little-endian bytes: every length around the 64-byte block (16 floats)
 * and a cnn-sized model (6.65 MB, which the server hashes at each commit and every client at
 * each download). */
static void test_model_sha256(void **state)
{
    (void)state;
    const size_t big = 1663370;
    float *x = malloc(big * sizeof *x);
    assert_non_null(x);
    fedc_rng rng;
    fedc_rng_init(&rng, 11, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < big; i++) x[i] = (float)(fedc_rng_uniform(&rng) - 0.5);
    const size_t lens[] = {0, 1, 13, 14, 15, 16, 17, 31, 32, 33, 1000, 4097, big};
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        char got[65], want[65];
        unsigned char d[crypto_hash_sha256_BYTES];
        fedc_vec_sha256_hex(lens[t], x, got);
        crypto_hash_sha256(d, (const unsigned char *)x, lens[t] * sizeof(float));
        sodium_bin2hex(want, sizeof want, d, sizeof d);
        assert_string_equal(got, want);
    }
    /* one flipped bit anywhere changes it */
    char a[65], b[65];
    fedc_vec_sha256_hex(big, x, a);
    x[big - 1] = nextafterf(x[big - 1], 1.0f);
    fedc_vec_sha256_hex(big, x, b);
    assert_string_not_equal(a, b);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_sum),
        cmocka_unit_test(test_rounding_ties),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_refusals_leave_no_trace),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_empty_and_sums),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_model_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
