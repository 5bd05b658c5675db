/*
 * Convolution forward against a direct convolution computed here in double (stride 1 and 2,
 * "same" with odd and even kernels, "valid", maps small enough to be chunked), and the
 * AVX-512 and plain-C row loops of im2col/col2im against each other (same bits, forward and
 * gradient). The finite-difference checks of the backward pass are in nn_grad_test.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "nn/nn_internal.h"
#include "testutil.h"

typedef struct ccase {
    int C, H, W;      /* input */
    int F, k, stride; /* filters, kernel, stride */
    int same;
    int batch;
} ccase;

/* Output size and top/left padding by TensorFlow's rule (docs/NN.md). */
static void out_shape(const ccase *c, int *Ho, int *Wo, int *pt, int *pl)
{
    if (c->same) {
        *Ho = (c->H + c->stride - 1) / c->stride;
        *Wo = (c->W + c->stride - 1) / c->stride;
        int ph = (*Ho - 1) * c->stride + c->k - c->H, pw = (*Wo - 1) * c->stride + c->k - c->W;
        *pt = ph > 0 ? ph / 2 : 0;
        *pl = pw > 0 ? pw / 2 : 0;
    } else {
        *Ho = (c->H - c->k) / c->stride + 1;
        *Wo = (c->W - c->k) / c->stride + 1;
        *pt = *pl = 0;
    }
}

static void check_forward(const ccase *c)
{
    int Ho, Wo, pt, pl;
    out_shape(c, &Ho, &Wo, &pt, &pl);
    char spec[128];
    snprintf(spec, sizeof spec, "conv(%d,%d,%s,%d) loss(mse)", c->F, c->k,
             c->same ? "same" : "valid", c->stride);
    const int64_t shape[3] = {c->C, c->H, c->W};
    const int O = c->F * Ho * Wo, B = c->batch;
    fedc_model *m = NULL;
    fedc_err err;
    if (fedc_model_create(spec, shape, 3, O, &m, &err) != FEDC_OK)
        fail_msg("%s: %s", spec, err.msg);
    fedc_nn_workspace *ws = NULL;
    assert_int_equal(fedc_nn_workspace_create(m, B, &ws, &err), FEDC_OK);
    const size_t np = fedc_model_param_count(m), in = fedc_model_input_size(m);
    assert_int_equal(np, (size_t)c->F * c->C * c->k * c->k + (size_t)c->F);
    float *w = malloc(np * sizeof *w), *x = malloc((size_t)B * in * sizeof *x);
    assert_non_null(w);
    assert_non_null(x);
    fedc_model_init_params(m, w, 7);
    const float *bias = w + np - (size_t)c->F;
    for (int f = 0; f < c->F; f++) w[np - (size_t)c->F + (size_t)f] = 0.25f * (float)(f + 1);
    fedc_rng rng;
    fedc_rng_init(&rng, 3, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < (size_t)B * in; i++) x[i] = 2.0f * fedc_rng_uniformf(&rng) - 1.0f;
    const float *y = NULL;
    assert_int_equal(fedc_nn_forward(ws, w, x, B, &y), FEDC_OK);
    double worst = 0.0;
    for (int b = 0; b < B; b++)
        for (int f = 0; f < c->F; f++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    double s = bias[f];
                    for (int ch = 0; ch < c->C; ch++)
                        for (int kh = 0; kh < c->k; kh++)
                            for (int kw = 0; kw < c->k; kw++) {
                                int ih = oh * c->stride - pt + kh, iw = ow * c->stride - pl + kw;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                s += (double)w[(((size_t)f * c->C + ch) * c->k + kh) * c->k + kw] *
                                     x[(size_t)b * in + ((size_t)ch * c->H + ih) * c->W + iw];
                            }
                    double got = y[(size_t)b * O + ((size_t)f * Ho + oh) * Wo + ow];
                    double d = fabs(got - s) / (1.0 + fabs(s));
                    if (d > worst) worst = d;
                }
    if (worst > 1e-5)
        fail_msg("%s on %dx%dx%d: forward off by %.3g", spec, c->C, c->H, c->W, worst);
    free(w);
    free(x);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
}

static void test_forward_direct(void **state)
{
    (void)state;
    static const ccase cases[] = {
        {3, 14, 14, 8, 5, 1, 1, 3},  /* the cnn preset's shape class: one sample per GEMM */
        {2, 7, 9, 4, 4, 1, 1, 2},    /* even kernel, stride 1: pads 1 before, 2 after */
        {2, 12, 11, 3, 3, 1, 0, 2},  /* valid */
        {2, 9, 8, 3, 2, 1, 1, 3},    /* 2x2 same: pads 0 before, 1 after; chunked */
        {3, 9, 10, 4, 3, 2, 1, 2},   /* stride 2 */
        {1, 5, 5, 2, 5, 1, 1, 5},    /* kernel as large as the map */
        {2, 6, 6, 2, 1, 1, 0, 2},    /* 1x1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_forward(&cases[i]);
}

/* Train steps with the AVX-512 row loops and with the plain ones give the same bits. */
static void test_isa_same_bits(void **state)
{
    (void)state;
    const char *spec = "conv(4,5,same) relu maxpool(2) conv(6,4,same) relu conv(3,3,valid) "
                       "dense(5)";
    const int64_t shape[3] = {2, 16, 16};
    const int B = 3;
    fedc_model *m = NULL;
    fedc_err err;
    assert_int_equal(fedc_model_create(spec, shape, 3, 5, &m, &err), FEDC_OK);
    fedc_nn_workspace *ws = NULL;
    assert_int_equal(fedc_nn_workspace_create(m, B, &ws, &err), FEDC_OK);
    const size_t np = fedc_model_param_count(m), in = fedc_model_input_size(m);
    float *w = malloc(np * sizeof *w), *g0 = malloc(np * sizeof *g0);
    float *x = malloc((size_t)B * in * sizeof *x);
    assert_non_null(w);
    assert_non_null(g0);
    assert_non_null(x);
    fedc_model_init_params(m, w, 11);
    fedc_rng rng;
    fedc_rng_init(&rng, 4, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < (size_t)B * in; i++) x[i] = fedc_rng_uniformf(&rng) - 0.5f;
    const int32_t y[3] = {0, 4, 2};
    float l0, l1;
    fedci_conv_cap_isa(0);
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, B, &l0), FEDC_OK);
    memcpy(g0, fedc_nn_workspace_grad(ws), np * sizeof *g0);
    fedci_conv_cap_isa(-1);
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, B, &l1), FEDC_OK);
    assert_memory_equal(&l0, &l1, sizeof l0);
    assert_memory_equal(g0, fedc_nn_workspace_grad(ws), np * sizeof *g0);
    /* The gradient is not trivially zero. */
    double sq = 0.0;
    for (size_t i = 0; i < np; i++) sq += (double)g0[i] * g0[i];
    assert_true(sq > 1e-8);
    free(w);
    free(g0);
    free(x);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_direct),
        cmocka_unit_test(test_isa_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
