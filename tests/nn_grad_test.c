/*
 * Gradients of every layer and loss against central finite differences.
 *
 * Each case is a tiny model whose layers sit between parameterised layers, so a wrong input
 * gradient of any layer shows up in the parameter gradients before it. The loss at w +- h e_j
 * is the training loss with the dropout stream re-keyed before every call (same masks).
 * float32 forward passes give the loss to ~1e-7 relative, so with h = 1e-3 the differences
 * carry ~1e-4 of noise; each tensor must match in relative L2 norm to 1.5e-2 (a wrong
 * gradient is off by O(1)). Shapes are small to keep the run short under ASan.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "testutil.h"

typedef struct gcase {
    const char *spec;
    int64_t shape[3];
    int ndim;
    int outputs; /* 0: whatever the spec gives */
    int batch;
    double h;
} gcase;

static float loss_at(fedc_nn_workspace *ws, const float *w, const float *x, const int32_t *y,
                     int B)
{
    float l;
    fedc_nn_workspace_set_rng(ws, 5, 0, 0);
    fedc_status st = fedc_nn_train_batch(ws, w, x, y, B, &l);
    if (st != FEDC_OK) fail_msg("train_batch: %s", fedc_nn_workspace_errmsg(ws));
    return l;
}

static void check_case(const gcase *c)
{
    fedc_model *m = NULL;
    fedc_err err;
    if (fedc_model_create(c->spec, c->shape, c->ndim, c->outputs, &m, &err) != FEDC_OK)
        fail_msg("%s: %s", c->spec, err.msg);
    const size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
    const int O = fedc_model_output_size(m), B = c->batch;
    float *w = malloc(P * sizeof *w), *g = malloc(P * sizeof *g), *x = malloc(B * in * sizeof *x);
    int32_t *y = malloc(B * sizeof *y);
    fedc_model_init_params(m, w, 11);
    fedc_rng r;
    fedc_rng_init(&r, 3, 0, 0, FEDC_RNG_DATA);
    /* Non-zero biases and scales too, so every term of every gradient is exercised. */
    for (size_t i = 0; i < P; i++) w[i] += (float)(0.2 * fedc_rng_normal(&r));
    for (size_t i = 0; i < B * in; i++)
        x[i] = fedc_model_takes_tokens(m) ? (float)fedc_rng_below(&r, 7)
                                          : (float)fedc_rng_normal(&r);
    for (int b = 0; b < B; b++)
        y[b] = O == 1 ? (int32_t)fedc_rng_below(&r, 2) : (int32_t)fedc_rng_below(&r, (uint64_t)O);

    fedc_nn_workspace *ws = NULL;
    assert_int_equal(fedc_nn_workspace_create(m, B, &ws, &err), FEDC_OK);
    loss_at(ws, w, x, y, B);
    memcpy(g, fedc_nn_workspace_grad(ws), P * sizeof *g);

    const fedc_layout *L = fedc_model_layout(m);
    for (size_t t = 0; t < L->count; t++) {
        const fedc_tensor_info *ti = &L->tensors[t];
        double diff2 = 0, ref2 = 0, got2 = 0;
        /* Large tensors: 48 coordinates drawn at random are enough to catch a wrong kernel. */
        const size_t count = ti->numel > 64 ? 48 : ti->numel;
        for (size_t k = 0; k < count; k++) {
            size_t j = ti->offset + (count == ti->numel ? k : fedc_rng_below(&r, ti->numel));
            float keep = w[j];
            w[j] = keep + (float)c->h;
            double lp = loss_at(ws, w, x, y, B);
            w[j] = keep - (float)c->h;
            double lm = loss_at(ws, w, x, y, B);
            w[j] = keep;
            double num = (lp - lm) / (2.0 * c->h);
            diff2 += (num - g[j]) * (num - g[j]);
            ref2 += num * num;
            got2 += (double)g[j] * g[j];
        }
        double rel = sqrt(diff2) / (sqrt(ref2) + 1e-4);
        if (getenv("NN_GRAD_VERBOSE")) printf("%-50s %-14s rel %.2e\n", c->spec, ti->name, rel);
        if (rel > 1.5e-2)
            fail_msg("%s: tensor %s: |analytic - numeric| / |numeric| = %.3g (|numeric| %.4g, "
                     "|analytic| %.4g)",
                     c->spec, ti->name, rel, sqrt(ref2), sqrt(got2));
        /* A check against an all-zero gradient would prove nothing. */
        if (sqrt(ref2) < 1e-5) fail_msg("%s: tensor %s has a zero gradient", c->spec, ti->name);
    }
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
    free(w);
    free(g);
    free(x);
    free(y);
}

static void test_dense_tanh(void **state)
{
    (void)state;
    gcase c = {"dense(5) tanh dense(3)", {4}, 1, 3, 3, 1e-3};
    check_case(&c);
    /* Wide enough for the adapter's skinny kernels (batch side 3): x W^T, dy W, dy^T x. */
    gcase d = {"dense(48) tanh dense(256) tanh dense(3)", {400}, 1, 3, 3, 1e-2};
    check_case(&d);
}

static void test_relu_sigmoid(void **state)
{
    (void)state;
    gcase c = {"dense(6) relu dense(4) sigmoid dense(3)", {5}, 1, 3, 4, 1e-3};
    check_case(&c);
}

static void test_conv_same_valid(void **state)
{
    (void)state;
    gcase c = {"conv(3,3,same) tanh conv(2,3,valid) sigmoid dense(3)", {2, 6, 6}, 3, 3, 2, 1e-3};
    check_case(&c);
}

static void test_conv_stride_even_kernel(void **state)
{
    (void)state;
    /* "same" with stride 2 and an even kernel pads unevenly (TensorFlow's rule). */
    gcase c = {"conv(2,4,same,2) tanh conv(2,2,valid,2) dense(3)", {2, 7, 7}, 3, 3, 2, 1e-3};
    check_case(&c);
    /* Stride 1, even kernels: "same" pads 1 before and 2 after (4x4), 0 and 1 (2x2); the
     * second layer's input gradient goes through the padded-plane col2im. */
    gcase e = {"conv(2,4,same) tanh conv(2,2,same) dense(3)", {2, 5, 6}, 3, 3, 2, 1e-3};
    check_case(&e);
    /* 1x1 convolutions (stride 2) */
    gcase f = {"conv(3,1) tanh conv(2,1,same,2) dense(2)", {2, 5, 5}, 3, 2, 3, 1e-3};
    check_case(&f);
}

static void test_conv_small_maps_chunked(void **state)
{
    (void)state;
    /* 5x5 outputs: the engine batches several samples per GEMM. */
    gcase c = {"conv(3,3,same) tanh conv(2,3,same) dense(2)", {1, 5, 5}, 3, 2, 13, 1e-3};
    check_case(&c);
}

static void test_maxpool(void **state)
{
    (void)state;
    gcase c = {"conv(2,3,same) maxpool(2) dense(3)", {1, 6, 6}, 3, 3, 2, 1e-3};
    check_case(&c);
}

static void test_avgpool(void **state)
{
    (void)state;
    gcase c = {"conv(2,3) avgpool(3,2) flatten dense(3)", {1, 9, 9}, 3, 3, 2, 1e-3};
    check_case(&c);
}

static void test_groupnorm(void **state)
{
    (void)state;
    gcase c = {"conv(4,3,same) groupnorm(2) tanh dense(3)", {1, 5, 5}, 3, 3, 2, 1e-3};
    check_case(&c);
    gcase d = {"dense(8) groupnorm(2) tanh dense(3)", {4}, 1, 3, 3, 1e-2};
    check_case(&d);
}

static void test_dropout(void **state)
{
    (void)state;
    gcase c = {"dense(8) dropout(0.4) tanh dense(3)", {4}, 1, 3, 3, 1e-3};
    check_case(&c);
}

static void test_embed_lstm(void **state)
{
    (void)state;
    gcase c = {"embed(7,3) lstm(4,seq) lstm(3) dense(5)", {5}, 1, 5, 2, 1e-2};
    check_case(&c);
    gcase d = {"embed(7,3) lstm(4) dense(3)", {4}, 1, 3, 3, 1e-2};
    check_case(&d);
}

static void test_losses(void **state)
{
    (void)state;
    gcase a = {"dense(3) tanh dense(1) loss(bce)", {4}, 1, 1, 4, 1e-3};
    check_case(&a);
    gcase b = {"dense(4) loss(bce)", {3}, 1, 4, 3, 1e-3};
    check_case(&b);
    gcase c = {"dense(3) tanh dense(4) loss(mse)", {3}, 1, 4, 3, 1e-3};
    check_case(&c);
    gcase e = {"dense(3) tanh dense(1) loss(mse)", {3}, 1, 1, 3, 1e-3};
    check_case(&e);
}

/* Softmax cross-entropy must stay finite and exact for huge logits. */
static void test_ce_stable(void **state)
{
    (void)state;
    int64_t d = 1;
    fedc_model *m = NULL;
    fedc_err err;
    assert_int_equal(fedc_model_create("dense(3)", &d, 1, 3, &m, &err), FEDC_OK);
    /* weight [3,1] = (1000, 0, -1000), bias 0, x = 1: logits (1000, 0, -1000). */
    float w[6] = {1000, 0, -1000, 0, 0, 0}, x = 1.0f;
    int32_t y = 1;
    fedc_nn_workspace *ws = NULL;
    assert_int_equal(fedc_nn_workspace_create(m, 1, &ws, &err), FEDC_OK);
    float loss;
    assert_int_equal(fedc_nn_train_batch(ws, w, &x, &y, 1, &loss), FEDC_OK);
    assert_close(loss, 1000.0, 1e-6, 0); /* logsumexp = 1000 + log(1 + e^-1000 + e^-2000) */
    const float *g = fedc_nn_workspace_grad(ws);
    assert_close(g[0], 1.0, 1e-6, 1e-7); /* dL/dz = softmax - onehot = (1, -1, 0) */
    assert_close(g[1], -1.0, 1e-6, 1e-7);
    assert_close(g[2], 0.0, 0, 1e-7);
    double sum = 0;
    int64_t correct = 0;
    y = 0;
    assert_int_equal(fedc_nn_eval_batch(ws, w, &x, &y, 1, &sum, &correct), FEDC_OK);
    assert_close(sum, 0.0, 0, 1e-9);
    assert_int_equal(correct, 1);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_tanh),
        cmocka_unit_test(test_relu_sigmoid),
        cmocka_unit_test(test_conv_same_valid),
        cmocka_unit_test(test_conv_stride_even_kernel),
        cmocka_unit_test(test_conv_small_maps_chunked),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_avgpool),
        cmocka_unit_test(test_groupnorm),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_embed_lstm),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_ce_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
