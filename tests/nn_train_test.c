/*
 * The engine learns and is reproducible: small generated problems (a 3-arm spiral, bar images,
 * a periodic token sequence) reach the losses stated below; the same seed gives bit-identical
 * parameters; per-example clipped gradients (DP-SGD) match a one-example-at-a-time oracle;
 * bad batches give clear errors; passes do not allocate; workspaces run in parallel threads.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "testutil.h"

/* 3-arm spiral in 2-D (CS231n's toy problem), n points per arm. */
static void spiral(int n, float *x, int32_t *y)
{
    fedc_rng r;
    fedc_rng_init(&r, 2024, 0, 0, FEDC_RNG_DATA);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < n; i++) {
            double t = (double)i / n, ang = c * 4.0 + 4.0 * t + 0.2 * fedc_rng_normal(&r);
            x[2 * (c * n + i)] = (float)(t * sin(ang));
            x[2 * (c * n + i) + 1] = (float)(t * cos(ang));
            y[c * n + i] = c;
        }
}

typedef struct run_result {
    float *params;
    double loss;   /* mean loss over the whole set after training */
    double acc;
} run_result;

/* Trains spec on (x, y) with minibatches drawn from the FEDC_RNG_SHUFFLE stream. */
static run_result train(const char *spec, const int64_t *shape, int ndim, int outputs,
                        const float *x, const int32_t *y, int n, int batch, int steps,
                        const fedc_optim_config *oc, uint64_t seed)
{
    fedc_model *m = tu_model(spec, shape, ndim, outputs);
    const size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
    float *w = malloc(P * sizeof *w), *xb = malloc(batch * in * sizeof *xb);
    int32_t *yb = malloc(batch * sizeof *yb);
    fedc_model_init_params(m, w, seed);
    fedc_nn_workspace *ws = NULL;
    fedc_err err;
    assert_int_equal(fedc_nn_workspace_create(m, n > batch ? n : batch, &ws, &err), FEDC_OK);
    fedc_nn_workspace_set_rng(ws, seed, 0, 0);
    fedc_optim *opt = NULL;
    assert_int_equal(fedc_optim_create(oc, P, &opt, &err), FEDC_OK);
    fedc_rng r;
    fedc_rng_init(&r, seed, 0, 0, FEDC_RNG_SHUFFLE);
    for (int s = 0; s < steps; s++) {
        for (int b = 0; b < batch; b++) {
            uint64_t i = fedc_rng_below(&r, (uint64_t)n);
            memcpy(xb + b * in, x + i * in, in * sizeof *xb);
            yb[b] = y[i];
        }
        float loss;
        if (fedc_nn_train_batch(ws, w, xb, yb, batch, &loss) != FEDC_OK)
            fail_msg("step %d: %s", s, fedc_nn_workspace_errmsg(ws));
        assert_int_equal(fedc_optim_step(opt, w, fedc_nn_workspace_grad(ws)), FEDC_OK);
    }
    double sum = 0;
    int64_t correct = 0;
    assert_int_equal(fedc_nn_eval_batch(ws, w, x, y, n, &sum, &correct), FEDC_OK);
    run_result res = {w, sum / n, (double)correct / n};
    fedc_optim_destroy(opt);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
    free(xb);
    free(yb);
    return res;
}

static void test_spiral_learns_and_reproduces(void **state)
{
    (void)state;
    enum { N = 100 };
    float x[3 * N * 2];
    int32_t y[3 * N];
    spiral(N, x, y);
    int64_t d = 2;
    fedc_optim_config oc;
    fedc_optim_config_default(&oc, FEDC_OPTIM_SGD);
    oc.lr = 0.2;
    oc.momentum = 0.9;
    const char *spec = "dense(64) relu dense(64) relu dense(3)";
    run_result a = train(spec, &d, 1, 3, x, y, 3 * N, 30, 600, &oc, 1);
    /* Chance level is ln 3 = 1.10; a linear model cannot go below ~0.75 on this set. */
    if (!(a.loss < 0.25 && a.acc > 0.9))
        fail_msg("spiral: loss %.4f, accuracy %.3f (want < 0.25 and > 0.9)", a.loss, a.acc);
    run_result b = train(spec, &d, 1, 3, x, y, 3 * N, 30, 600, &oc, 1);
    fedc_model *m = tu_model(spec, &d, 1, 3);
    size_t P = fedc_model_param_count(m);
    assert_memory_equal(a.params, b.params, P * sizeof(float));
    run_result c = train(spec, &d, 1, 3, x, y, 3 * N, 30, 600, &oc, 2);
    assert_true(memcmp(a.params, c.params, P * sizeof(float)) != 0);
    fedc_model_destroy(m);
    free(a.params);
    free(b.params);
    free(c.params);
}

/* 8x8 images: a horizontal (class 0) or vertical (class 1) bar at a random place, plus noise. */
static void bars(int n, float *x, int32_t *y)
{
    fedc_rng r;
    fedc_rng_init(&r, 77, 0, 0, FEDC_RNG_DATA);
    for (int i = 0; i < n; i++) {
        float *img = x + i * 64;
        for (int p = 0; p < 64; p++) img[p] = (float)(0.3 * fedc_rng_normal(&r));
        int c = (int)fedc_rng_below(&r, 2), at = (int)fedc_rng_below(&r, 8);
        for (int k = 0; k < 8; k++) img[c ? k * 8 + at : at * 8 + k] += 1.0f;
        y[i] = c;
    }
}

static void test_cnn_learns_with_dropout_and_groupnorm(void **state)
{
    (void)state;
    enum { N = 200 };
    float *x = malloc(N * 64 * sizeof *x);
    int32_t y[N];
    bars(N, x, y);
    int64_t shape[3] = {1, 8, 8};
    fedc_optim_config oc;
    fedc_optim_config_default(&oc, FEDC_OPTIM_ADAM);
    oc.lr = 0.01;
    const char *spec = "conv(4,3,same) groupnorm(2) relu maxpool(2) dropout(0.1) dense(2)";
    run_result a = train(spec, shape, 3, 2, x, y, N, 20, 150, &oc, 5);
    if (!(a.loss < 0.1 && a.acc > 0.97))
        fail_msg("bars: loss %.4f, accuracy %.3f (want < 0.1 and > 0.97)", a.loss, a.acc);
    run_result b = train(spec, shape, 3, 2, x, y, N, 20, 150, &oc, 5);
    fedc_model *m = tu_model(spec, shape, 3, 2);
    assert_memory_equal(a.params, b.params, fedc_model_param_count(m) * sizeof(float));
    fedc_model_destroy(m);
    free(a.params);
    free(b.params);
    free(x);
}

/* Next token of a periodic sequence 0 1 2 3 4 0 1 ... seen through a window of 6 tokens. */
static void test_lstm_learns(void **state)
{
    (void)state;
    enum { N = 100, T = 6, V = 5 };
    float x[N * T];
    int32_t y[N];
    fedc_rng r;
    fedc_rng_init(&r, 9, 0, 0, FEDC_RNG_DATA);
    for (int i = 0; i < N; i++) {
        int phase = (int)fedc_rng_below(&r, V);
        for (int t = 0; t < T; t++) x[i * T + t] = (float)((phase + t) % V);
        y[i] = (phase + T) % V;
    }
    int64_t seq = T;
    fedc_optim_config oc;
    fedc_optim_config_default(&oc, FEDC_OPTIM_ADAM);
    oc.lr = 0.02;
    run_result a = train("embed(5,4) lstm(12,seq) lstm(12) dense(5)", &seq, 1, V, x, y, N, 10,
                         200, &oc, 3);
    if (!(a.loss < 0.05 && a.acc == 1.0))
        fail_msg("sequence: loss %.4f, accuracy %.3f (want < 0.05 and 1.0)", a.loss, a.acc);
    free(a.params);
}

/* One example at a time: g_i by train_batch on a batch of 1, clipped, summed. */
static void clipped_oracle(const fedc_model *m, const float *w, const float *x,
                           const int32_t *y, int B, double C, float *sum, float *norms)
{
    const size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
    fedc_nn_workspace *ws = NULL;
    fedc_err err;
    assert_int_equal(fedc_nn_workspace_create(m, 1, &ws, &err), FEDC_OK);
    memset(sum, 0, P * sizeof *sum);
    for (int b = 0; b < B; b++) {
        float l;
        assert_int_equal(fedc_nn_train_batch(ws, w, x + b * in, y + b, 1, &l), FEDC_OK);
        const float *g = fedc_nn_workspace_grad(ws);
        double nrm = fedc_vec_norm2(P, g);
        norms[b] = (float)nrm;
        double s = nrm > C ? C / nrm : 1.0;
        for (size_t i = 0; i < P; i++) sum[i] += (float)(s * g[i]);
    }
    fedc_nn_workspace_destroy(ws);
}

static void check_clipped(const char *spec, const int64_t *shape, int ndim, int outputs,
                          int tokens, double C)
{
    fedc_model *m = tu_model(spec, shape, ndim, outputs);
    const size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
    enum { B = 6 };
    float *w = malloc(P * sizeof *w), *want = malloc(P * sizeof *want);
    float *x = malloc(B * in * sizeof *x);
    int32_t y[B];
    float norms[B], want_norms[B], loss;
    fedc_model_init_params(m, w, 4);
    fedc_rng r;
    fedc_rng_init(&r, 8, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < B * in; i++)
        x[i] = tokens ? (float)fedc_rng_below(&r, (uint64_t)tokens) : (float)fedc_rng_normal(&r);
    for (int b = 0; b < B; b++) y[b] = (int32_t)fedc_rng_below(&r, (uint64_t)outputs);
    clipped_oracle(m, w, x, y, B, C, want, want_norms);
    fedc_nn_workspace *ws = NULL;
    fedc_err err;
    assert_int_equal(fedc_nn_workspace_create(m, B, &ws, &err), FEDC_OK);
    assert_int_equal(fedc_nn_train_batch_clipped(ws, w, x, y, B, C, &loss, norms), FEDC_OK);
    int clipped = 0;
    for (int b = 0; b < B; b++) {
        assert_close(norms[b], want_norms[b], 1e-4, 1e-6);
        clipped += want_norms[b] > C;
    }
    /* The test means something only if some examples are clipped and some are not. */
    if (getenv("NN_VERBOSE")) {
        for (int b = 0; b < B; b++) printf(" %.3f", (double)want_norms[b]);
        printf("  (%s)\n", spec);
    }
    if (clipped == 0 || clipped == B)
        fail_msg("%s: %d of %d examples clipped; pick another C", spec, clipped, (int)B);
    const float *got = fedc_nn_workspace_grad(ws);
    double d2 = 0, n2 = 0;
    for (size_t i = 0; i < P; i++) {
        d2 += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        n2 += (double)want[i] * want[i];
    }
    if (!(sqrt(d2) <= 1e-5 * sqrt(n2) + 1e-7))
        fail_msg("%s: clipped sum differs from the oracle by %.3g (norm %.3g)", spec, sqrt(d2),
                 sqrt(n2));
    /* Invalid clipping norms are refused. */
    assert_int_equal(fedc_nn_train_batch_clipped(ws, w, x, y, B, 0.0, &loss, norms),
                     FEDC_ERR_INVALID);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
    free(w);
    free(want);
    free(x);
}

static void test_clipped_per_example(void **state)
{
    (void)state;
    int64_t d = 5, img[3] = {2, 6, 6}, seq = 4;
    check_clipped("dense(7) tanh dense(4)", &d, 1, 4, 0, 2.0);
    check_clipped("conv(3,3,same) relu maxpool(2) conv(2,3,same) groupnorm(1) tanh dense(3)", img,
                  3, 3, 0, 7.0);
    check_clipped("conv(3,3) tanh dense(3)", img, 3, 3, 0, 4.0); /* 4x4 maps: chunked GEMMs */
    /* 16 filters: the direct kernels (where the CPU has AVX2 or AVX-512) */
    int64_t img16[3] = {2, 7, 9};
    check_clipped("conv(16,3,same) relu conv(16,3,same) tanh dense(3)", img16, 3, 3, 0, 18.0);
    check_clipped("embed(6,3) flatten dense(4)", &seq, 1, 4, 6, 2.0);
    /* LSTM has no batched per-example norms: the one-example fallback. */
    check_clipped("embed(6,3) lstm(5) dense(4)", &seq, 1, 4, 6, 1.19);
}

static void test_errors(void **state)
{
    (void)state;
    int64_t d = 3;
    fedc_model *m = tu_model("dense(4) tanh dense(3)", &d, 1, 3);
    fedc_nn_workspace *ws = NULL;
    fedc_err err;
    assert_int_equal(fedc_nn_workspace_create(m, 0, &ws, &err), FEDC_ERR_INVALID);
    assert_null(ws);
    assert_int_equal(fedc_nn_workspace_create(m, 4, &ws, &err), FEDC_OK);
    assert_int_equal(fedc_nn_workspace_max_batch(ws), 4);
    float w[4 * 3 + 4 + 3 * 4 + 3];
    fedc_model_init_params(m, w, 1);
    float x[15] = {0}, loss;
    int32_t y[5] = {0, 1, 2, 0, 1};
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 5, &loss), FEDC_ERR_INVALID);
    assert_non_null(strstr(fedc_nn_workspace_errmsg(ws), "outside [1, 4]"));
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 0, &loss), FEDC_ERR_INVALID);
    y[2] = 3;
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 3, &loss), FEDC_ERR_RANGE);
    assert_non_null(strstr(fedc_nn_workspace_errmsg(ws), "sample 2: label 3"));
    y[2] = -1;
    double sum = 0;
    int64_t correct = 0;
    assert_int_equal(fedc_nn_eval_batch(ws, w, x, y, 3, &sum, &correct), FEDC_ERR_RANGE);
    assert_true(sum == 0 && correct == 0);
    y[2] = 2;
    x[7] = NAN;
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 3, &loss), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(fedc_nn_workspace_errmsg(ws), "sample 2, feature 1"));
    x[7] = 0;
    /* Diverged parameters: the loss is not finite. */
    w[0] = INFINITY;
    x[0] = 1;
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 3, &loss), FEDC_ERR_NONFINITE);
    fedc_model_init_params(m, w, 1);
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 3, &loss), FEDC_OK);
    assert_true(isfinite(loss));
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);

    /* Tokens must be integers inside the vocabulary. */
    int64_t seq = 3;
    m = tu_model("embed(5,2) flatten dense(2)", &seq, 1, 2);
    assert_int_equal(fedc_nn_workspace_create(m, 2, &ws, &err), FEDC_OK);
    float wt[5 * 2 + 2 * 6 + 2];
    fedc_model_init_params(m, wt, 1);
    float tok[6] = {0, 1, 2, 3, 4, 5};
    assert_int_equal(fedc_nn_train_batch(ws, wt, tok, y, 2, &loss), FEDC_ERR_RANGE);
    assert_non_null(strstr(fedc_nn_workspace_errmsg(ws), "sample 1, position 2: token 5"));
    tok[5] = 1.5f;
    assert_int_equal(fedc_nn_train_batch(ws, wt, tok, y, 2, &loss), FEDC_ERR_RANGE);
    tok[5] = -1.0f;
    assert_int_equal(fedc_nn_train_batch(ws, wt, tok, y, 2, &loss), FEDC_ERR_RANGE);
    tok[5] = 4.0f;
    assert_int_equal(fedc_nn_train_batch(ws, wt, tok, y, 2, &loss), FEDC_OK);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);

    /* bce with one output wants 0/1 labels. */
    m = tu_model("dense(1) loss(bce)", &d, 1, 1);
    assert_int_equal(fedc_nn_workspace_create(m, 2, &ws, &err), FEDC_OK);
    float wb[4] = {0};
    int32_t yb[2] = {1, 2};
    assert_int_equal(fedc_nn_train_batch(ws, wb, x, yb, 2, &loss), FEDC_ERR_RANGE);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
}

/* No allocation per batch; eval and forward agree; dropout is off outside training. */
static void test_no_alloc_and_eval(void **state)
{
    (void)state;
    int64_t shape[3] = {1, 8, 8};
    fedc_model *m = tu_model("conv(4,3,same) relu maxpool(2) dropout(0.5) dense(3)", shape, 3, 3);
    const size_t P = fedc_model_param_count(m);
    float *w = malloc(P * sizeof *w), x[4 * 64];
    int32_t y[4] = {0, 1, 2, 1};
    fedc_model_init_params(m, w, 1);
    for (int i = 0; i < 4 * 64; i++) x[i] = (float)((i * 37) % 11) / 11.0f;
    fedc_nn_workspace *ws = NULL;
    fedc_err err;
    assert_int_equal(fedc_nn_workspace_create(m, 4, &ws, &err), FEDC_OK);
    assert_true(fedc_nn_workspace_bytes(ws) > P * sizeof(float));
    float loss;
    fedc_alloc_stats before, after;
    fedc_alloc_get_stats(&before);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 4, &loss), FEDC_OK);
        double s = 0;
        int64_t c = 0;
        assert_int_equal(fedc_nn_eval_batch(ws, w, x, y, 4, &s, &c), FEDC_OK);
    }
    fedc_alloc_get_stats(&after);
    assert_int_equal(after.allocations, before.allocations);

    const float *z;
    assert_int_equal(fedc_nn_forward(ws, w, x, 4, &z), FEDC_OK);
    float z1[12];
    memcpy(z1, z, sizeof z1);
    assert_int_equal(fedc_nn_forward(ws, w, x, 4, &z), FEDC_OK);
    assert_memory_equal(z1, z, sizeof z1);
    /* eval's loss is the CE of these logits, and its count their argmax hits. */
    double want = 0;
    int64_t hits = 0;
    for (int b = 0; b < 4; b++) {
        double mx = z1[b * 3], s = 0;
        int arg = 0;
        for (int j = 1; j < 3; j++)
            if (z1[b * 3 + j] > mx) {
                mx = z1[b * 3 + j];
                arg = j;
            }
        for (int j = 0; j < 3; j++) s += exp(z1[b * 3 + j] - mx);
        want += mx + log(s) - z1[b * 3 + y[b]];
        hits += arg == y[b];
    }
    double sum = 0;
    int64_t correct = 0;
    assert_int_equal(fedc_nn_eval_batch(ws, w, x, y, 4, &sum, &correct), FEDC_OK);
    assert_close(sum, want, 1e-6, 1e-7);
    assert_int_equal(correct, hits);
    /* Training draws dropout masks: two steps differ, the same stream key repeats. */
    float l1, l2, l3;
    fedc_nn_workspace_set_rng(ws, 1, 2, 3);
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 4, &l1), FEDC_OK);
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 4, &l2), FEDC_OK);
    fedc_nn_workspace_set_rng(ws, 1, 2, 3);
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, 4, &l3), FEDC_OK);
    assert_true(l1 != l2);
    assert_true(l1 == l3);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
    free(w);
}

/* One model, one workspace per thread: the same results as a single thread. */
typedef struct job {
    const fedc_model *m;
    const float *w, *x;
    const int32_t *y;
    float grad_sum;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    fedc_nn_workspace *ws = NULL;
    fedc_err err;
    if (fedc_nn_workspace_create(j->m, 8, &ws, &err) != FEDC_OK) return NULL;
    float loss;
    for (int i = 0; i < 20; i++) fedc_nn_train_batch(ws, j->w, j->x, j->y, 8, &loss);
    const float *g = fedc_nn_workspace_grad(ws);
    double s = 0;
    for (size_t i = 0; i < fedc_model_param_count(j->m); i++) s += g[i] * (double)(i % 7);
    j->grad_sum = (float)s;
    fedc_nn_workspace_destroy(ws);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    int64_t shape[3] = {1, 8, 8};
    fedc_model *m = tu_model("conv(4,3,same) relu dense(3)", shape, 3, 3);
    float *w = malloc(fedc_model_param_count(m) * sizeof *w), x[8 * 64];
    int32_t y[8];
    fedc_model_init_params(m, w, 2);
    for (int i = 0; i < 8 * 64; i++) x[i] = (float)((i * 13) % 17) / 17.0f;
    for (int i = 0; i < 8; i++) y[i] = i % 3;
    job solo = {m, w, x, y, 0};
    worker(&solo);
    job jobs[2] = {solo, solo};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    assert_true(solo.grad_sum != 0.0f);
    assert_true(jobs[0].grad_sum == solo.grad_sum);
    assert_true(jobs[1].grad_sum == solo.grad_sum);
    fedc_model_destroy(m);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spiral_learns_and_reproduces),
        cmocka_unit_test(test_cnn_learns_with_dropout_and_groupnorm),
        cmocka_unit_test(test_lstm_learns),
        cmocka_unit_test(test_clipped_per_example),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_no_alloc_and_eval),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
