/*
 * The fused SGD step (fedc_nn_train_step_sgd) against its oracle, fedc_nn_train_batch followed
 * by fedc_optim_step with plain SGD: bit-identical parameters and losses over several steps,
 * for dense layers (block by block, skinny kernels and BLAS, partial blocks), convolutions,
 * and the layers updated by the engine's generic path (embed, LSTM, group norm); with every
 * instruction set of the skinny kernels; with momentum, Nesterov, weight decay and FedProx.
 * Non-finite gradients stop the step with an error naming the tensor. fedc_optim_sgd_fuse
 * offers exactly the steps that may be fused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "nn/nn_internal.h"
#include "testutil.h"

/* Runs `steps` steps both ways from the same initial parameters and compares the bits after
 * every step. tokens: inputs are token indices below `tokens` (0: uniform floats). */
static void check_fused_cfg(const char *spec, const int64_t *shape, int ndim, int outputs,
                            int batch, int steps, int tokens, const fedc_optim_config *cfg,
                            int prox)
{
    fedc_model *m = tu_model(spec, shape, ndim, outputs);
    const size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
    fedc_err err;
    fedc_nn_workspace *wa = NULL, *wb = NULL;
    assert_int_equal(fedc_nn_workspace_create(m, batch, &wa, &err), FEDC_OK);
    assert_int_equal(fedc_nn_workspace_create(m, batch, &wb, &err), FEDC_OK);
    fedc_optim *opt = NULL, *fopt = NULL;
    assert_int_equal(fedc_optim_create(cfg, P, &opt, &err), FEDC_OK);
    assert_int_equal(fedc_optim_create(cfg, P, &fopt, &err), FEDC_OK);
    float *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b), *w0 = malloc(P * sizeof *w0);
    float *x = malloc((size_t)batch * in * sizeof *x);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(w0);
    assert_non_null(x);
    assert_non_null(y);
    fedc_model_init_params(m, w0, 7);
    /* Non-zero biases, so that every tensor's update is visible. */
    const fedc_layout *lay = fedc_model_layout(m);
    for (size_t t = 0; t < lay->count; t++)
        if (strstr(lay->tensors[t].name, "bias"))
            for (size_t i = 0; i < lay->tensors[t].numel; i++)
                w0[lay->tensors[t].offset + i] = 0.01f * (float)((int)(i % 7) - 3);
    memcpy(a, w0, P * sizeof *a);
    memcpy(b, w0, P * sizeof *b);
    float *center = NULL;
    if (prox) { /* FedProx: the round's global model, here the initial parameters moved */
        center = malloc(P * sizeof *center);
        assert_non_null(center);
        for (size_t i = 0; i < P; i++) center[i] = w0[i] + 0.01f * (float)((int)(i % 5) - 2);
        fedc_optim_set_prox_center(opt, center);
        fedc_optim_set_prox_center(fopt, center);
    }
    fedc_rng rng;
    fedc_rng_init(&rng, 3, 0, 0, FEDC_RNG_DATA);
    for (int s = 0; s < steps; s++) {
        for (size_t i = 0; i < (size_t)batch * in; i++)
            x[i] = tokens ? (float)fedc_rng_below(&rng, (uint64_t)tokens)
                          : 2.0f * fedc_rng_uniformf(&rng) - 1.0f;
        for (int i = 0; i < batch; i++)
            y[i] = (int32_t)fedc_rng_below(&rng, (uint64_t)(outputs > 1 ? outputs : 2));
        float la = 0, lb = 0;
        if (fedc_nn_train_batch(wa, a, x, y, batch, &la) != FEDC_OK)
            fail_msg("%s: %s", spec, fedc_nn_workspace_errmsg(wa));
        assert_int_equal(fedc_optim_step(opt, a, fedc_nn_workspace_grad(wa)), FEDC_OK);
        fedc_sgd_step sgd;
        assert_int_equal(fedc_optim_sgd_fuse(fopt, &sgd), 1);
        assert_true(sgd.first == (s == 0));
        assert_int_equal(fedc_nn_train_step_sgd(wb, b, x, y, batch, &sgd, &lb), FEDC_OK);
        assert_int_equal(fedc_optim_step_count(fopt), fedc_optim_step_count(opt));
        assert_true(la == lb);
        for (size_t i = 0; i < P; i++)
            if (memcmp(&a[i], &b[i], sizeof *a) != 0) {
                size_t t = 0;
                while (t + 1 < lay->count && lay->tensors[t + 1].offset <= i) t++;
                fail_msg("%s, batch %d, step %d: %s[%zu] unfused %.9g, fused %.9g", spec, batch,
                         s, lay->tensors[t].name, i - lay->tensors[t].offset, (double)a[i],
                         (double)b[i]);
            }
    }
    /* The steps did move every tensor. */
    for (size_t t = 0; t < lay->count; t++)
        assert_true(memcmp(a + lay->tensors[t].offset, w0 + lay->tensors[t].offset,
                           lay->tensors[t].numel * sizeof *a) != 0);
    free(a);
    free(b);
    free(w0);
    free(x);
    free(y);
    free(center);
    fedc_optim_destroy(opt);
    fedc_optim_destroy(fopt);
    fedc_nn_workspace_destroy(wa);
    fedc_nn_workspace_destroy(wb);
    fedc_model_destroy(m);
}

/* Plain SGD at lr 0.05. */
static void check_fused(const char *spec, const int64_t *shape, int ndim, int outputs, int batch,
                        int steps, int tokens)
{
    fedc_optim_config oc;
    fedc_optim_config_default(&oc, FEDC_OPTIM_SGD);
    oc.lr = 0.05;
    check_fused_cfg(spec, shape, ndim, outputs, batch, steps, tokens, &oc, 0);
}

static void test_fused_dense(void **state)
{
    (void)state;
    const int64_t img[3] = {1, 28, 28}, wide = 2000, small = 20;
    /* mlp: skinny kernels at batch <= 16, BLAS above; 16-row blocks of 784 and 200. */
    static const int batches[] = {1, 3, 10, 16, 17, 50};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++)
        check_fused("mlp", img, 3, 10, batches[i], 3, 0);
    /* 16-row blocks with a partial last one (40 rows of 2000); one block (300 rows of 20). */
    check_fused("dense(40) relu dense(300) tanh dense(4)", &wide, 1, 4, 5, 3, 0);
    check_fused("dense(300) sigmoid dense(3)", &small, 1, 3, 20, 3, 0);
    check_fused("dense(1) loss(bce)", &small, 1, 1, 7, 3, 0);
}

static void test_fused_isa(void **state)
{
    (void)state;
    const int64_t img[3] = {1, 28, 28};
    for (int cap = 0; cap <= 2; cap++) {
        fedci_gemm_cap_isa(cap);
        check_fused("mlp", img, 3, 10, 10, 2, 0);
    }
    fedci_gemm_cap_isa(-1);
}

static void test_fused_conv_and_generic(void **state)
{
    (void)state;
    const int64_t img[3] = {1, 28, 28}, odd[3] = {2, 9, 9}, seq = 6;
    check_fused("cnn", img, 3, 10, 10, 2, 0);
    check_fused("cnn", img, 3, 10, 20, 1, 0);
    check_fused("conv(3,3,valid,2) relu maxpool(2) dense(37) tanh dense(5)", odd, 3, 5, 3, 3, 0);
    check_fused("conv(4,3,same) groupnorm(2) relu avgpool(3) dense(3)", odd, 3, 3, 4, 3, 0);
    check_fused("embed(12,4) lstm(8,seq) lstm(5) dense(12)", &seq, 1, 12, 5, 3, 12);
}

/* Momentum, Nesterov, weight decay and FedProx, alone and together: the same bits too. */
static void test_fused_momentum_decay_prox(void **state)
{
    (void)state;
    const int64_t img[3] = {1, 28, 28}, odd[3] = {2, 9, 9};
    struct {
        double momentum, wd, mu;
        int nesterov;
    } cases[] = {{0.9, 0, 0, 0}, {0.9, 0, 0, 1}, {0, 1e-3, 0, 0}, {0, 0, 0.1, 0},
                 {0.5, 1e-3, 0.1, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fedc_optim_config oc;
        fedc_optim_config_default(&oc, FEDC_OPTIM_SGD);
        oc.lr = 0.05;
        oc.momentum = cases[i].momentum;
        oc.nesterov = cases[i].nesterov;
        oc.weight_decay = cases[i].wd;
        oc.prox_mu = cases[i].mu;
        check_fused_cfg("mlp", img, 3, 10, 10, 3, 0, &oc, cases[i].mu > 0);
        check_fused_cfg("conv(3,3,valid,2) relu dense(37) tanh dense(5)", odd, 3, 5, 20, 3, 0,
                        &oc, cases[i].mu > 0);
    }
}

/* fedc_optim_sgd_fuse: SGD without clipping only; it counts the step and says when the
 * momentum buffer starts. */
static void test_sgd_fuse_conditions(void **state)
{
    (void)state;
    fedc_err err;
    const float center[4] = {0};
    fedc_sgd_step st;
    struct {
        fedc_optim_kind kind;
        double clip, mu;
        int center, want;
    } cases[] = {
        {FEDC_OPTIM_SGD, 0, 0, 0, 1},   {FEDC_OPTIM_SGD, 5.0, 0, 0, 0}, {FEDC_OPTIM_SGD, 0, 0.1, 1, 1},
        {FEDC_OPTIM_SGD, 0, 0.1, 0, 1}, {FEDC_OPTIM_ADAM, 0, 0, 0, 0},  {FEDC_OPTIM_ADAMW, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fedc_optim_config oc;
        fedc_optim_config_default(&oc, cases[i].kind);
        oc.lr = 0.1;
        oc.momentum = 0.9;
        oc.clip_norm = cases[i].clip;
        oc.prox_mu = cases[i].mu;
        fedc_optim *o = NULL;
        assert_int_equal(fedc_optim_create(&oc, 4, &o, &err), FEDC_OK);
        if (cases[i].center) fedc_optim_set_prox_center(o, center);
        if (fedc_optim_sgd_fuse(o, &st) != cases[i].want) fail_msg("case %zu", i);
        assert_int_equal(fedc_optim_step_count(o), cases[i].want);
        if (cases[i].want) {
            assert_true(st.lr == 0.1f && st.momentum == 0.9f && st.first == 1);
            assert_non_null(st.momentum_buf);
            assert_true(st.prox_mu == (cases[i].center ? 0.1f : 0.0f));
            assert_int_equal(fedc_optim_sgd_fuse(o, &st), 1);
            assert_int_equal(st.first, 0);
            fedc_optim_reset(o);
            assert_int_equal(fedc_optim_sgd_fuse(o, &st), 1);
            assert_int_equal(st.first, 1);
        }
        fedc_optim_destroy(o);
    }
}

/* dense(4) dense(10) on 3 inputs: the first layer outputs 0, so the logits are finite (0),
 * but the second layer's huge weights make the first layer's output gradient overflow to Inf
 * (|dz| sums to 1.8, times 3e38). */
static void test_fused_nonfinite(void **state)
{
    (void)state;
    const int64_t d = 3;
    fedc_model *m = tu_model("dense(4) dense(10)", &d, 1, 10);
    const size_t P = fedc_model_param_count(m);
    assert_int_equal(P, 3 * 4 + 4 + 4 * 10 + 10);
    float w[66], w0[66];
    memset(w, 0, sizeof w);
    float *WB = w + 16; /* [10, 4] */
    for (int o = 0; o < 10; o++)
        for (int j = 0; j < 4; j++) WB[o * 4 + j] = o == 0 ? -3e38f : 3e38f;
    memcpy(w0, w, sizeof w);
    const float x[3] = {1, 1, 1};
    const int32_t y[1] = {0};
    fedc_err err;
    fedc_nn_workspace *ws = NULL;
    assert_int_equal(fedc_nn_workspace_create(m, 1, &ws, &err), FEDC_OK);
    fedc_optim_config oc;
    fedc_optim_config_default(&oc, FEDC_OPTIM_SGD);
    fedc_optim *opt = NULL;
    assert_int_equal(fedc_optim_create(&oc, P, &opt, &err), FEDC_OK);
    float loss;
    /* Unfused: the gradient holds Inf, the optimizer refuses the whole step. */
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 1, &loss), FEDC_OK);
    assert_close(loss, log(10.0), 1e-6, 0);
    assert_int_equal(fedc_optim_step(opt, w, fedc_nn_workspace_grad(ws)), FEDC_ERR_NONFINITE);
    assert_memory_equal(w, w0, sizeof w);
    /* Fused: the second layer has taken its step, the first refuses; the message names it. */
    fedc_sgd_step sgd;
    assert_int_equal(fedc_optim_sgd_fuse(opt, &sgd), 1);
    sgd.lr = 0.01f;
    assert_int_equal(fedc_nn_train_step_sgd(ws, w, x, y, 1, &sgd, &loss), FEDC_ERR_NONFINITE);
    const char *msg = fedc_nn_workspace_errmsg(ws);
    if (!strstr(msg, "0.bias[0]") || !strstr(msg, "partially updated"))
        fail_msg("message: %s", msg);
    assert_memory_equal(w, w0, 16 * sizeof *w);       /* layer 0 untouched */
    assert_memory_equal(WB, w0 + 16, 40 * sizeof *w); /* dW of layer 1 is 0 */
    assert_close(w[56], 0.009, 1e-5, 0); /* its bias moved: -lr * (p - onehot) */
    assert_close(w[57], -0.001, 1e-5, 0);
    /* Bad learning rates are errors. */
    sgd.lr = 0.0f;
    assert_int_equal(fedc_nn_train_step_sgd(ws, w, x, y, 1, &sgd, &loss), FEDC_ERR_INVALID);
    sgd.lr = NAN;
    assert_int_equal(fedc_nn_train_step_sgd(ws, w, x, y, 1, &sgd, &loss), FEDC_ERR_INVALID);
    fedc_optim_destroy(opt);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
}

static void test_sgd_apply(void **state)
{
    (void)state;
    float w[37], g[37], w0[37];
    for (int i = 0; i < 37; i++) {
        w[i] = w0[i] = 0.5f + (float)i;
        g[i] = 0.25f * (float)(i - 18);
    }
    fedc_sgd_step st;
    memset(&st, 0, sizeof st);
    st.lr = 0.5f;
    g[29] = INFINITY;
    assert_int_equal(fedci_sgd_apply(&st, w, 0, g, 37), 29);
    assert_memory_equal(w, w0, sizeof w);
    g[29] = NAN;
    assert_int_equal(fedci_sgd_apply(&st, w, 0, g, 37), 29);
    g[29] = 1.0f;
    assert_int_equal(fedci_sgd_apply(&st, w, 0, g, 37), -1);
    for (int i = 0; i < 37; i++) assert_true(w[i] == w0[i] - 0.5f * g[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_dense),
        cmocka_unit_test(test_fused_isa),
        cmocka_unit_test(test_fused_conv_and_generic),
        cmocka_unit_test(test_fused_momentum_decay_prox),
        cmocka_unit_test(test_sgd_fuse_conditions),
        cmocka_unit_test(test_fused_nonfinite),
        cmocka_unit_test(test_sgd_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
