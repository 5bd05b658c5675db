/* SecAgg quantization tests: the overflow bound at config time, the error bound of the
 * dequantized weighted mean against clip range and bits, unbiased stochastic rounding, and
 * the whole path (quantize -> protocol -> dequantize). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/secagg.h"

static void test_bound_check(void **state)
{
    (void)state;
    fedc_err err;
    fedc_secagg_quant q = {8.0, 1u << 22, 1000, 32};
    /* Flower's defaults (2^22 levels, max weight 1000) overflow 2^32 for 1000 clients */
    assert_int_equal(fedc_secagg_quant_check(&q, 1000, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "overflow"));
    assert_int_equal(fedc_secagg_quant_check(&q, 1, &err), FEDC_OK); /* 1000 * (2^22-1) < 2^32 */
    q.levels = 0; /* automatic: the largest that fits */
    assert_int_equal(fedc_secagg_quant_check(&q, 100, &err), FEDC_OK);
    assert_int_equal(q.levels, 4294967295u / 100000u + 1);
    assert_true(100.0 * 1000 * (q.levels - 1.0) < 4294967296.0);
    assert_true(100.0 * 1000 * q.levels >= 4294967296.0 - 100000.0);
    fedc_secagg_quant w = {8.0, 0, 70000, 16};
    assert_int_equal(fedc_secagg_quant_check(&w, 1, &err), FEDC_ERR_CONFIG); /* weight sum */
    fedc_secagg_quant c = {0, 16, 1, 32};
    assert_int_equal(fedc_secagg_quant_check(&c, 1, &err), FEDC_ERR_CONFIG);
    fedc_secagg_quant big = {1.0, 0, 1, 32};
    assert_int_equal(fedc_secagg_quant_check(&big, 1, &err), FEDC_OK);
    assert_int_equal(big.levels, 16777216u); /* capped at 2^24 */
}

/* Quantizes n clients' vectors, sums them exactly and checks the dequantized weighted mean
 * against the true weighted mean of the clipped inputs: |error| < step = 2c/(levels-1). */
static void check_error_bound(uint32_t bits, double clip, uint32_t n, uint32_t max_weight)
{
    fedc_err err;
    fedc_secagg_quant q = {clip, 0, max_weight, bits};
    assert_int_equal(fedc_secagg_quant_check(&q, n, &err), FEDC_OK);
    const size_t len = 500;
    double step = 2 * clip / (q.levels - 1.0);
    float *x = malloc(len * sizeof *x), *mean = malloc(len * sizeof *mean);
    uint32_t *qx = malloc((len + 1) * sizeof *qx), *sum = calloc(len + 1, sizeof *sum);
    double *truth = calloc(len, sizeof *truth), wsum = 0;
    fedc_rng data;
    fedc_rng_init(&data, 11, 0, 0, FEDC_RNG_DATA);
    for (uint32_t u = 0; u < n; u++) {
        uint64_t ex = 1 + fedc_rng_below(&data, 2 * (uint64_t)max_weight);
        double w = (double)(ex < max_weight ? ex : max_weight);
        for (size_t i = 0; i < len; i++) /* some beyond the clip range */
            x[i] = (float)((fedc_rng_uniform(&data) * 2 - 1) * clip * 1.2);
        fedc_rng r;
        fedc_rng_init(&r, 3, 1, u, FEDC_RNG_QUANTIZE);
        assert_int_equal(fedc_secagg_quantize(&q, x, len, ex, &r, qx, &err), FEDC_OK);
        assert_int_equal(qx[len], (uint32_t)w);
        for (size_t i = 0; i <= len; i++) {
            if (i < len) assert_true(qx[i] <= (q.levels - 1) * (uint32_t)w);
            sum[i] += qx[i];
        }
        for (size_t i = 0; i < len; i++)
            truth[i] += w * fmax(-clip, fmin(clip, x[i]));
        wsum += w;
    }
    uint64_t ws;
    assert_int_equal(fedc_secagg_dequantize(&q, sum, len, mean, &ws, &err), FEDC_OK);
    assert_int_equal(ws, (uint64_t)wsum);
    double worst = 0;
    for (size_t i = 0; i < len; i++)
        worst = fmax(worst, fabs(mean[i] - truth[i] / wsum));
    if (!(worst < step + 1e-6 * clip))
        fail_msg("bits %u clip %g n %u: error %.3g above the bound %.3g", bits, clip, n, worst,
                 step);
    free(x);
    free(mean);
    free(qx);
    free(sum);
    free(truth);
}

static void test_error_bound(void **state)
{
    (void)state;
    check_error_bound(32, 8.0, 10, 1000);
    check_error_bound(32, 0.5, 100, 100);
    check_error_bound(16, 1.0, 4, 1);   /* coarse ring: step 2/16383 */
    check_error_bound(12, 2.0, 3, 10);  /* very coarse: step 4/136 */
}

static void test_unbiased(void **state)
{
    (void)state;
    fedc_err err;
    fedc_secagg_quant q = {1.0, 5, 1, 32}; /* step 0.5: levels at -1, -0.5, 0, 0.5, 1 */
    assert_int_equal(fedc_secagg_quant_check(&q, 1, &err), FEDC_OK);
    const size_t len = 20000;
    float *x = malloc(len * sizeof *x), out;
    uint32_t *qx = malloc((len + 1) * sizeof *qx);
    for (size_t i = 0; i < len; i++)
        x[i] = 0.13f; /* between 0 and 0.5: rounds up with probability 0.26 */
    fedc_rng r;
    fedc_rng_init(&r, 5, 0, 0, FEDC_RNG_QUANTIZE);
    assert_int_equal(fedc_secagg_quantize(&q, x, len, 1, &r, qx, &err), FEDC_OK);
    uint64_t s = 0;
    for (size_t i = 0; i < len; i++) {
        assert_true(qx[i] == 2 || qx[i] == 3);
        s += qx[i];
    }
    uint32_t one[2] = {(uint32_t)s, (uint32_t)len};
    assert_int_equal(fedc_secagg_dequantize(&q, one, 1, &out, NULL, &err), FEDC_OK);
    /* mean of 20000 draws: stddev 0.5 * sqrt(0.26 * 0.74 / 20000) = 0.0016; 5 sigma */
    assert_close(out, 0.13, 0, 0.008);
    x[0] = NAN;
    assert_int_equal(fedc_secagg_quantize(&q, x, len, 1, &r, qx, &err), FEDC_ERR_NONFINITE);
    uint32_t zero[2] = {0, 0};
    assert_int_equal(fedc_secagg_dequantize(&q, zero, 1, &out, NULL, &err), FEDC_ERR_STATE);
    free(x);
    free(qx);
}

/* Quantize -> SecAgg+ with 10% dropout -> dequantize: the weighted mean of the survivors. */
static void test_end_to_end(void **state)
{
    (void)state;
    fedc_err err;
    const uint32_t n = 20;
    const size_t len = 200;
    fedc_secagg_quant q = {1.0, 0, 50, 32};
    assert_int_equal(fedc_secagg_quant_check(&q, n, &err), FEDC_OK);
    uint32_t **xs = malloc(n * sizeof *xs);
    float *x = malloc(len * sizeof *x), *mean = malloc(len * sizeof *mean);
    float *plain = malloc(n * len * sizeof *plain);
    uint32_t *sum = malloc((len + 1) * sizeof *sum);
    unsigned char surv[20];
    for (uint32_t u = 0; u < n; u++) {
        xs[u] = malloc((len + 1) * sizeof **xs);
        for (size_t i = 0; i < len; i++)
            plain[u * len + i] = x[i] = (float)sin((double)(u * len + i)) * 0.9f;
        fedc_rng r;
        fedc_rng_init(&r, 1, 2, u, FEDC_RNG_QUANTIZE);
        assert_int_equal(fedc_secagg_quantize(&q, x, len, 10 + u, &r, xs[u], &err), FEDC_OK);
    }
    fedc_secagg_params p;
    memset(&p, 0, sizeof p);
    p.n = n;
    p.t = 3;
    p.bits = 32;
    p.len = len + 1;
    p.round = 2;
    fedc_secagg_sim_opts o = {{0.1, 0.1, 0.1}, 5, NULL};
    assert_int_equal(fedc_secagg_simulate(&p, (const uint32_t *const *)xs, &o, sum, surv, NULL,
                                          &err),
                     FEDC_OK);
    uint64_t ws;
    assert_int_equal(fedc_secagg_dequantize(&q, sum, len, mean, &ws, &err), FEDC_OK);
    double wsum = 0;
    uint32_t alive = 0;
    for (uint32_t u = 0; u < n; u++)
        if (surv[u]) {
            wsum += 10 + u;
            alive++;
        }
    assert_true(alive < n && alive >= n - 4);
    assert_int_equal(ws, (uint64_t)wsum);
    double step = 2.0 / (q.levels - 1.0);
    for (size_t i = 0; i < len; i++) {
        double t = 0;
        for (uint32_t u = 0; u < n; u++)
            if (surv[u]) t += (10.0 + u) * plain[u * len + i];
        assert_close(mean[i], t / wsum, 0, step + 1e-6);
    }
    for (uint32_t u = 0; u < n; u++)
        free(xs[u]);
    free(xs);
    free(x);
    free(mean);
    free(plain);
    free(sum);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bound_check),
        cmocka_unit_test(test_error_bound),
        cmocka_unit_test(test_unbiased),
        cmocka_unit_test(test_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
