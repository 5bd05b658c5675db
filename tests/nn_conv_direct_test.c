/*
 * The direct convolution kernels (src/nn/conv_direct.c), AVX-512 and AVX2, against im2col + GEMM, the
 * path the gradient checks of nn_layers_test pin: outputs, every parameter gradient and the
 * input gradients of stacked convolutions agree to float32 rounding, for filter counts that
 * fill one to six vectors (including odd numbers of vectors), channel counts 1 to 48, kernels
 * 1 to 5 (even ones with "same"), "valid" padding, and rows wider than one 14-pixel tile.
 * A sample's output does not depend on the batch it is in. The AVX-512 2x2 max pool gives the
 * plain loop's values and argmaxes. Each variant is skipped on CPUs without its instruction set.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "nn/nn_internal.h"
#include "testutil.h"

static int have_avx512(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static int have_avx2(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

typedef struct pass_out {
    float *logits, *grad;
    double loss;
} pass_out;

/* Forward logits and the gradient of one batch, with the convolution path capped at cap. */
static pass_out run_pass(fedc_model *m, const float *w, const float *x, const int32_t *y,
                         int B, int cap)
{
    fedc_err err;
    fedc_nn_workspace *ws = NULL;
    fedci_conv_cap_isa(cap);
    assert_int_equal(fedc_nn_workspace_create(m, B, &ws, &err), FEDC_OK);
    const size_t P = fedc_model_param_count(m), O = (size_t)fedc_model_output_size(m);
    pass_out o;
    o.logits = malloc((size_t)B * O * sizeof *o.logits);
    o.grad = malloc(P * sizeof *o.grad);
    assert_non_null(o.logits);
    assert_non_null(o.grad);
    const float *z = NULL;
    assert_int_equal(fedc_nn_forward(ws, w, x, B, &z), FEDC_OK);
    memcpy(o.logits, z, (size_t)B * O * sizeof *z);
    float loss = 0.0f;
    assert_int_equal(fedc_nn_train_batch(ws, w, x, y, B, &loss), FEDC_OK);
    o.loss = loss;
    memcpy(o.grad, fedc_nn_workspace_grad(ws), P * sizeof *o.grad);
    fedc_nn_workspace_destroy(ws);
    fedci_conv_cap_isa(-1);
    return o;
}

/* max |a - b| over n values <= rtol * max |b| (+ a tiny floor for all-zero tensors). */
static void assert_tensor_close(const char *what, const float *a, const float *b, size_t n,
                                double rtol)
{
    double scale = 0.0, worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
        if (d > worst || d != d) {
            worst = d;
            at = i;
        }
    }
    if (!(worst <= rtol * scale + 1e-30))
        fail_msg("%s: element %zu is %.9g, im2col gives %.9g (max |value| %.6g)", what, at,
                 (double)a[at], (double)b[at], scale);
}

/* One model both ways; returns 1 when some gradient differs in its bits (a different
 * summation order ran). direct: the direct kernels run, so a sample's output must not depend
 * on its batch (im2col batches small planes into one GEMM, whose blocking depends on B). */
static int compare_spec(const char *spec, int C, int H, int W, int B, int direct)
{
    const int64_t shape[3] = {C, H, W};
    fedc_model *m = tu_model(spec, shape, 3, 0);
    const size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
    const int O = fedc_model_output_size(m);
    float *w = malloc(P * sizeof *w), *x = malloc((size_t)B * in * sizeof *x);
    int32_t *y = malloc((size_t)B * sizeof *y);
    assert_non_null(w);
    assert_non_null(x);
    assert_non_null(y);
    fedc_model_init_params(m, w, 11);
    const fedc_layout *lay = fedc_model_layout(m);
    for (size_t t = 0; t < lay->count; t++) /* non-zero biases */
        if (strstr(lay->tensors[t].name, "bias"))
            for (size_t i = 0; i < lay->tensors[t].numel; i++)
                w[lay->tensors[t].offset + i] = 0.02f * (float)((int)(i % 9) - 4);
    fedc_rng rng;
    fedc_rng_init(&rng, 5, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < (size_t)B * in; i++) x[i] = 2.0f * fedc_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < B; i++) y[i] = (int32_t)(fedc_rng_u32(&rng) % (uint32_t)O);

    pass_out r = run_pass(m, w, x, y, B, 1);
    int differ = 0;
    /* The AVX-512 kernels (cap 3) and the AVX2 ones (cap 2), where the CPU has them. */
    for (int cap = 3; cap >= 2; cap--) {
        if (cap == 3 ? !have_avx512() : !have_avx2()) continue;
        pass_out d = run_pass(m, w, x, y, B, cap);
        char what[160];
        snprintf(what, sizeof what, "%s on %dx%dx%d, cap %d: logits", spec, C, H, W, cap);
        assert_tensor_close(what, d.logits, r.logits, (size_t)B * O, 2e-5);
        assert_close(d.loss, r.loss, 1e-5, 1e-7);
        for (size_t t = 0; t < lay->count; t++) {
            snprintf(what, sizeof what, "%s on %dx%dx%d, cap %d: gradient of %s", spec, C, H, W,
                     cap, lay->tensors[t].name);
            assert_tensor_close(what, d.grad + lay->tensors[t].offset,
                                r.grad + lay->tensors[t].offset, lay->tensors[t].numel, 5e-5);
        }
        differ |= memcmp(d.grad, r.grad, P * sizeof *d.grad) != 0;

        /* Each sample's output alone equals its output in the batch, bit for bit. */
        if (direct && B > 1) {
            fedc_err err;
            fedc_nn_workspace *ws = NULL;
            fedci_conv_cap_isa(cap);
            assert_int_equal(fedc_nn_workspace_create(m, 1, &ws, &err), FEDC_OK);
            for (int b = 0; b < B; b++) {
                const float *z = NULL;
                assert_int_equal(fedc_nn_forward(ws, w, x + (size_t)b * in, 1, &z), FEDC_OK);
                assert_memory_equal(z, d.logits + (size_t)b * O, (size_t)O * sizeof *z);
            }
            fedc_nn_workspace_destroy(ws);
            fedci_conv_cap_isa(-1);
        }
        free(d.logits);
        free(d.grad);
    }
    free(r.logits);
    free(r.grad);
    free(w);
    free(x);
    free(y);
    fedc_model_destroy(m);
    return differ;
}

static void test_direct_shapes(void **state)
{
    (void)state;
    if (!have_avx2()) skip();
    /* The cnn preset's two convolutions (the case the kernels are tuned for). */
    assert_true(compare_spec("conv(32,5,same) relu maxpool(2) conv(64,5,same) relu flatten "
                             "loss(mse)",
                             1, 28, 28, 3, 1));
    /* Stacked: the second layer's input gradient goes through the flipped-kernel pass. */
    assert_true(compare_spec("conv(16,3,same) relu conv(32,3,same) flatten loss(mse)", 3, 9, 17,
                             2, 1));
    assert_true(compare_spec("conv(32,5) conv(48,3) flatten loss(mse)", 2, 12, 31, 2, 1));
    /* One, three, five and six filter vectors; 1x1 and even kernels; thin and wide planes. */
    assert_true(compare_spec("conv(16,1,same) conv(48,2,same) flatten loss(mse)", 4, 5, 7, 2, 1));
    assert_true(compare_spec("conv(80,4,same) conv(96,3) flatten loss(mse)", 5, 8, 16, 2, 1));
    assert_true(compare_spec("conv(16,3) conv(16,5,same) flatten loss(mse)", 1, 6, 30, 1, 1));
    /* Channel counts above one tile of j values (k*C > 13). */
    assert_true(compare_spec("conv(32,3,same) relu conv(64,3,same) flatten loss(mse)", 48, 6,
                             6, 2, 1));
}

/* Layers outside the direct kernels' shapes (stride 2, filters not a multiple of 16) keep
 * im2col: both caps give the same bits. */
static void test_direct_not_taken(void **state)
{
    (void)state;
    const int64_t shape[3] = {3, 9, 9};
    fedc_model *m = tu_model("conv(20,3,same) flatten", shape, 3, 0);
    assert_false(fedci_conv_direct_fits(&m->layers[0], 0));
    fedc_model_destroy(m);
    m = tu_model("conv(32,3,same,2) flatten", shape, 3, 0);
    assert_false(fedci_conv_direct_fits(&m->layers[0], 0));
    fedc_model_destroy(m);
    m = tu_model("conv(32,3,same) conv(32,3,same) flatten", shape, 3, 0);
    assert_true(fedci_conv_direct_fits(&m->layers[0], 0));
    assert_false(fedci_conv_direct_fits(&m->layers[0], 1)); /* 3 channels: no input gradient */
    assert_true(fedci_conv_direct_fits(&m->layers[1], 1));
    fedc_model_destroy(m);
    /* Not taken: the two caps run the same code, so the same bits. */
    assert_false(compare_spec("conv(20,3,same) conv(24,3,same) flatten loss(mse)", 2, 7, 7, 2, 0));
}

/* The AVX-512 2x2 max pool against the plain loops: the same values and argmaxes, and the same
 * input gradient bits (signed zeros included), with ties (inputs from three levels), NaNs
 * (never win), odd heights and widths from 2 to 70 (output rows longer than one vector). */
static void test_maxpool_avx512(void **state)
{
    (void)state;
    if (!have_avx512()) skip();
    const int widths[] = {2, 3, 7, 28, 33, 40, 70};
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        const int64_t shape[3] = {3, 6 + (int64_t)(wi % 2), widths[wi]}; /* odd heights too */
        fedc_model *m = tu_model("maxpool(2) dense(4)", shape, 3, 0);
        const fedci_layer *L = &m->layers[0];
        const int B = 2;
        const size_t n = (size_t)B * L->in_n, on = (size_t)B * L->out_n;
        float *x = malloc(n * sizeof *x), *ya = malloc(on * sizeof *ya), *yb = malloc(on * 4);
        int32_t *aa = malloc(on * sizeof *aa), *ab = malloc(on * sizeof *ab);
        assert_true(x && ya && yb && aa && ab);
        fedc_rng rng;
        fedc_rng_init(&rng, 9, 0, (uint32_t)wi, FEDC_RNG_DATA);
        for (size_t i = 0; i < n; i++) {
            uint32_t r = fedc_rng_u32(&rng) % 16;
            x[i] = r == 0 ? NAN : (float)(r % 3) - 1.0f;
        }
        fedci_exec e = {NULL, NULL, 0, NULL, NULL, NULL};
        const fedci_layer_ops *ops = fedci_layer_ops_get(FEDCI_MAXPOOL);
        fedci_conv_cap_isa(-1);
        ops->forward(L, &e, NULL, x, ya, (float *)aa, B);
        fedci_conv_cap_isa(0);
        ops->forward(L, &e, NULL, x, yb, (float *)ab, B);
        fedci_conv_cap_isa(-1);
        assert_memory_equal(ya, yb, on * sizeof *ya);
        assert_memory_equal(aa, ab, on * sizeof *aa);
        /* backward: the input gradient written whole equals memset + scatter, -0 included */
        float *dy = malloc(on * sizeof *dy), *da = malloc(n * sizeof *da), *db = malloc(n * 4);
        assert_true(dy && da && db);
        for (size_t i = 0; i < on; i++)
            dy[i] = i % 5 == 0 ? -0.0f : (float)fedc_rng_normal(&rng);
        memset(da, 0x7f, n * sizeof *da); /* garbage the pass must overwrite */
        fedci_conv_cap_isa(-1);
        ops->backward(L, &e, NULL, x, ya, (float *)aa, dy, da, NULL, NULL, B);
        fedci_conv_cap_isa(0);
        ops->backward(L, &e, NULL, x, yb, (float *)ab, dy, db, NULL, NULL, B);
        fedci_conv_cap_isa(-1);
        assert_memory_equal(da, db, n * sizeof *da);
        free(dy);
        free(da);
        free(db);
        free(x);
        free(ya);
        free(yb);
        free(aa);
        free(ab);
        fedc_model_destroy(m);
    }
}

/* The AVX-512 and AVX2 kernels sum every element in the same order: the same bits for the
 * output, the weight and input gradients and DP-SGD's per-example squared norms (in double),
 * so a run does not depend on which of the two a host has. At the layer, with several
 * samples. */
static void test_isas_same_bits(void **state)
{
    (void)state;
    if (!have_avx512() || !have_avx2()) skip();
    const int64_t shape[3] = {16, 9, 11};
    fedc_model *m = tu_model("conv(48,5,same) flatten", shape, 3, 0);
    const fedci_layer *L = &m->layers[0];
    const fedci_layer_ops *ops = fedci_layer_ops_get(FEDCI_CONV);
    enum { B = 3 };
    const size_t P = fedc_model_param_count(m), nx = B * L->in_n, ny = B * L->out_n;
    float *w = malloc(P * sizeof *w), *x = malloc(nx * sizeof *x), *dy = malloc(ny * sizeof *dy);
    float *y[2], *dx[2], *dP[2];
    double sq[2][B];
    float *scratch = malloc(fedci_layer_scratch(L, B) * sizeof *scratch);
    assert_true(w && x && dy && scratch);
    fedc_model_init_params(m, w, 3);
    fedc_rng rng;
    fedc_rng_init(&rng, 2, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < nx; i++) x[i] = (float)fedc_rng_normal(&rng);
    for (size_t i = 0; i < ny; i++) dy[i] = (float)fedc_rng_normal(&rng);
    for (int v = 0; v < 2; v++) {
        y[v] = malloc(ny * sizeof(float));
        dx[v] = malloc(nx * sizeof(float));
        dP[v] = malloc(P * sizeof(float));
        assert_true(y[v] && dx[v] && dP[v]);
        fedci_exec e = {scratch, NULL, 1, NULL, NULL, NULL};
        fedci_conv_cap_isa(v == 0 ? 3 : 2);
        ops->forward(L, &e, w, x, y[v], NULL, B);
        for (int b = 0; b < B; b++) sq[v][b] = 0.0;
        ops->backward(L, &e, w, x, y[v], NULL, dy, dx[v], dP[v], sq[v], B);
    }
    fedci_conv_cap_isa(-1);
    assert_memory_equal(y[0], y[1], ny * sizeof(float));
    assert_memory_equal(dx[0], dx[1], nx * sizeof(float));
    assert_memory_equal(dP[0], dP[1], P * sizeof(float));
    assert_memory_equal(sq[0], sq[1], sizeof sq[0]);
    for (int v = 0; v < 2; v++) {
        free(y[v]);
        free(dx[v]);
        free(dP[v]);
    }
    free(w);
    free(x);
    free(dy);
    free(scratch);
    fedc_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direct_shapes),
        cmocka_unit_test(test_direct_not_taken),
        cmocka_unit_test(test_maxpool_avx512),
        cmocka_unit_test(test_isas_same_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
