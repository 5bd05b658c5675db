/* Models: preset parameter counts pinned to the papers, layouts, spec parsing and its errors,
 * shape inference, summaries, deterministic initialisation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "testutil.h"

static const int64_t IMG[3] = {1, 28, 28};

static fedc_model *make(const char *spec, const int64_t *shape, int ndim, int outputs)
{
    fedc_model *m = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_model_create(spec, shape, ndim, outputs, &m, &err);
    if (st != FEDC_OK) fail_msg("'%s': %s", spec, fedc_err_message(&err));
    return m;
}

/* Expects creation to fail with code and a message containing `needle`. */
static void expect_bad(const char *spec, const int64_t *shape, int ndim, int outputs,
                       fedc_status code, const char *needle)
{
    fedc_model *m = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_model_create(spec, shape, ndim, outputs, &m, &err);
    if (st == FEDC_OK) fail_msg("'%s' was accepted", spec);
    assert_null(m);
    if (st != code) fail_msg("'%s': status %d, expected %d (%s)", spec, st, code, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("'%s': message '%s' lacks '%s'", spec, err.msg, needle);
}

/* McMahan et al. 2017 and LEAF (REFERENCES.md). */
static void test_preset_counts(void **state)
{
    (void)state;
    fedc_model *m = make("mlp", IMG, 3, 10);
    assert_int_equal(fedc_model_param_count(m), 199210);
    fedc_model_destroy(m);
    m = make("cnn", IMG, 3, 10);
    assert_int_equal(fedc_model_param_count(m), 1663370);
    fedc_model_destroy(m);
    m = make("femnist-cnn", IMG, 3, 62);
    assert_int_equal(fedc_model_param_count(m), 6603710);
    fedc_model_destroy(m);
    int64_t seq = 80;
    m = make("shakespeare-lstm", &seq, 1, 80);
    assert_int_equal(fedc_model_param_count(m), 817872);
    assert_int_equal(fedc_model_takes_tokens(m), 1);
    assert_int_equal(fedc_model_output_size(m), 80);
    fedc_model_destroy(m);
    m = make("logreg", IMG, 3, 10);
    assert_int_equal(fedc_model_param_count(m), 7850);
    fedc_model_destroy(m);
    /* The same CNN with "valid" padding: 582,026 (REFERENCES.md). */
    m = make("conv(32,5,valid) relu maxpool(2) conv(64,5) relu maxpool(2) dense(512) relu "
             "dense(10)",
             IMG, 3, 10);
    assert_int_equal(fedc_model_param_count(m), 582026);
    fedc_model_destroy(m);
}

static void test_layout_names(void **state)
{
    (void)state;
    fedc_model *m = make("cnn", IMG, 3, 10);
    const fedc_layout *L = fedc_model_layout(m);
    assert_int_equal(L->count, 8);
    const fedc_tensor_info *t = fedc_layout_find(L, "0.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 1);
    assert_int_equal(t->shape[2], 5);
    assert_int_equal(t->offset, 0);
    t = fedc_layout_find(L, "3.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->shape[1], 32);
    /* PyTorch's equivalent nn.Sequential has an nn.Flatten() at 6 (fedc's dense flattens
     * implicitly), so the dense layers are modules 7 and 9 there: load_state_dict needs it. */
    assert_null(fedc_layout_find(L, "6.weight"));
    t = fedc_layout_find(L, "7.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->shape[1], 3136);
    assert_non_null(fedc_layout_find(L, "9.bias"));
    assert_int_equal(L->total, fedc_model_param_count(m));
    assert_string_equal(fedc_model_spec(m), "conv(32,5,same) relu maxpool(2) conv(64,5,same) relu "
                                            "maxpool(2) dense(512) relu dense(10)");
    /* Forward FLOPs: 2 x (32*25*784 + 64*800*196 + 3136*512 + 512*10). */
    assert_close(fedc_model_forward_flops(m), 2.0 * (627200.0 + 10035200.0 + 1605632.0 + 5120.0),
                 1e-12, 0);
    fedc_layer_info info;
    fedc_model_layer_info(m, 2, &info);
    assert_string_equal(info.kind, "maxpool");
    assert_int_equal(info.out_ndim, 3);
    assert_int_equal(info.out_shape[0], 32);
    assert_int_equal(info.out_shape[1], 14);
    fedc_model_destroy(m);

    int64_t seq = 80;
    m = make("shakespeare-lstm", &seq, 1, 80);
    L = fedc_model_layout(m);
    t = fedc_layout_find(L, "1.weight_ih");
    assert_non_null(t);
    assert_int_equal(t->shape[0], 1024);
    assert_int_equal(t->shape[1], 8);
    t = fedc_layout_find(L, "2.weight_hh");
    assert_non_null(t);
    assert_int_equal(t->shape[1], 256);
    assert_non_null(fedc_layout_find(L, "0.weight"));
    /* dense over the LSTM's last step (1-D): no flatten needed, so it is module 3 */
    assert_non_null(fedc_layout_find(L, "3.weight"));
    fedc_model_destroy(m);

    /* the 2NN on images: Flatten, Linear, ReLU, Linear, ReLU, Linear */
    m = make("mlp", IMG, 3, 10);
    L = fedc_model_layout(m);
    assert_non_null(fedc_layout_find(L, "1.weight"));
    assert_non_null(fedc_layout_find(L, "3.weight"));
    assert_non_null(fedc_layout_find(L, "5.bias"));
    assert_null(fedc_layout_find(L, "0.weight"));
    fedc_model_destroy(m);
    /* an explicit flatten is a module of its own, and adds no second one */
    m = make("conv(4,3,same) flatten dense(10)", IMG, 3, 10);
    L = fedc_model_layout(m);
    assert_non_null(fedc_layout_find(L, "2.weight"));
    fedc_model_destroy(m);
}

static void test_shapes(void **state)
{
    (void)state;
    int64_t img[3] = {3, 32, 32};
    fedc_model *m = make("conv(8,3,same,2) relu conv(4,4,valid) avgpool(3,2) groupnorm(2) "
                         "flatten dropout(0.5) dense(5) sigmoid dense(3)",
                         img, 3, 0);
    fedc_layer_info info;
    fedc_model_layer_info(m, 0, &info); /* same, stride 2: ceil(32/2) = 16 */
    assert_int_equal(info.out_shape[0], 8);
    assert_int_equal(info.out_shape[1], 16);
    assert_int_equal(info.out_shape[2], 16);
    fedc_model_layer_info(m, 2, &info); /* valid 4: 13 */
    assert_int_equal(info.out_shape[1], 13);
    fedc_model_layer_info(m, 3, &info); /* (13-3)/2+1 = 6 */
    assert_int_equal(info.out_shape[1], 6);
    assert_int_equal(info.out_shape[2], 6);
    fedc_model_layer_info(m, 5, &info);
    assert_int_equal(info.out_ndim, 1);
    assert_int_equal(info.out_shape[0], 4 * 36);
    assert_int_equal(fedc_model_output_size(m), 3);
    /* Params: 8*3*9+8 + 4*8*16+4 + 2*4 + 144*5+5 + 5*3+3 */
    assert_int_equal(fedc_model_param_count(m), 224 + 516 + 8 + 725 + 18);
    fedc_model_destroy(m);

    /* A 2-D input is one channel for conv, a sequence for lstm. */
    int64_t hw[2] = {6, 7};
    m = make("conv(2,3) dense(2)", hw, 2, 2);
    assert_int_equal(fedc_model_param_count(m), 2 * 9 + 2 + 2 * 4 * 5 * 2 + 2);
    fedc_model_destroy(m);
    m = make("lstm(4,seq) lstm(3) dense(2) loss(mse)", hw, 2, 2);
    assert_int_equal(fedc_model_loss(m), FEDC_LOSS_MSE);
    assert_int_equal(fedc_model_param_count(m),
                     (16 * 7 + 16 * 4 + 16) + (12 * 4 + 12 * 3 + 12) + (2 * 3 + 2));
    fedc_model_destroy(m);
    /* Spaces inside parentheses and upper case are fine; one output with bce. */
    int64_t d = 4;
    m = make("  Dense( 3 ) TANH dense(1)  loss( bce )", &d, 1, 1);
    assert_string_equal(fedc_model_spec(m), "dense(3) tanh dense(1) loss(bce)");
    fedc_model_destroy(m);
}

static void test_bad_specs(void **state)
{
    (void)state;
    int64_t d = 10;
    expect_bad("dense(10) frob dense(2)", &d, 1, 0, FEDC_ERR_INVALID, "token 2 'frob'");
    expect_bad("dense(10) frob dense(2)", &d, 1, 0, FEDC_ERR_INVALID, "unknown layer");
    expect_bad("dense(x)", &d, 1, 0, FEDC_ERR_INVALID, "units 'x' is not an integer");
    expect_bad("dense(0)", &d, 1, 0, FEDC_ERR_RANGE, "out of range");
    expect_bad("dense(-3)", &d, 1, 0, FEDC_ERR_RANGE, "out of range");
    expect_bad("dense(99999999999)", &d, 1, 0, FEDC_ERR_RANGE, "out of range");
    expect_bad("dense(999999999999999999999)", &d, 1, 0, FEDC_ERR_INVALID, "not an integer");
    expect_bad("dense(3", &d, 1, 0, FEDC_ERR_INVALID, "missing ')'");
    expect_bad("dense(3)x", &d, 1, 0, FEDC_ERR_INVALID, "unexpected 'x'");
    expect_bad("dense(3,4)", &d, 1, 0, FEDC_ERR_INVALID, "expected dense(UNITS)");
    expect_bad("dense(,)", &d, 1, 0, FEDC_ERR_INVALID, "argument 1 is empty");
    expect_bad("relu(2) dense(2)", &d, 1, 0, FEDC_ERR_INVALID, "no arguments");
    expect_bad("dropout(1.5) dense(2)", &d, 1, 0, FEDC_ERR_INVALID, "not in [0, 1)");
    expect_bad("", &d, 1, 0, FEDC_ERR_INVALID, "no layers");
    expect_bad("   ", &d, 1, 0, FEDC_ERR_INVALID, "no layers");
    expect_bad("(3)", &d, 1, 0, FEDC_ERR_INVALID, "expected a layer name");
    expect_bad("dense(2) loss(hinge)", &d, 1, 0, FEDC_ERR_INVALID, "unknown loss 'hinge'");
    expect_bad("loss(ce) dense(2)", &d, 1, 0, FEDC_ERR_INVALID, "nothing may follow");
    expect_bad("batchnorm dense(2)", &d, 1, 0, FEDC_ERR_UNSUPPORTED, "groupnorm");
    expect_bad("conv(4,3) dense(2)", &d, 1, 0, FEDC_ERR_SHAPE, "layer 0 'conv(4,3,valid)'");
    expect_bad("maxpool(2) dense(2)", &d, 1, 0, FEDC_ERR_SHAPE, "image input");
    expect_bad("dense(4) lstm(3) dense(2)", &d, 1, 0, FEDC_ERR_SHAPE, "sequence input");
    expect_bad("dense(4) embed(5,3) dense(2)", &d, 1, 0, FEDC_ERR_SHAPE, "first layer");
    expect_bad("dense(2) dense(3)", &d, 1, 10, FEDC_ERR_SHAPE, "data has 10 classes");
    expect_bad("dense(1)", &d, 1, 0, FEDC_ERR_SHAPE, "loss(bce)");
    expect_bad("groupnorm(3) dense(2)", &d, 1, 0, FEDC_ERR_SHAPE, "10 channels");
    expect_bad("maxpool(4) maxpool(4) conv(4,3) dense(2)", IMG, 3, 0, FEDC_ERR_SHAPE,
               "larger than the 1x1 input");
}

static void test_bad_inputs(void **state)
{
    (void)state;
    expect_bad("mlp", IMG, 3, 0, FEDC_ERR_INVALID, "needs the number of outputs");
    int64_t zero[2] = {0, 5};
    expect_bad("dense(2)", zero, 2, 0, FEDC_ERR_SHAPE, "dimension 1 is 0");
    expect_bad("dense(2)", IMG, 4, 0, FEDC_ERR_SHAPE, "1 to 3 dimensions");
    /* Parameter count beyond the engine's limit (2^31 floats). */
    int64_t d = 1 << 20;
    expect_bad("dense(4096)", &d, 1, 0, FEDC_ERR_RANGE, "exceed");
    char *long_spec = malloc(FEDC_NN_SPEC_MAX + 16);
    memset(long_spec, ' ', FEDC_NN_SPEC_MAX + 8);
    long_spec[FEDC_NN_SPEC_MAX + 8] = '\0';
    expect_bad(long_spec, &d, 1, 0, FEDC_ERR_INVALID, "longer than");
    free(long_spec);
}

static void test_summary(void **state)
{
    (void)state;
    fedc_model *m = make("mlp", IMG, 3, 10);
    size_t n = fedc_model_summary(m, NULL, 0);
    assert_true(n > 100);
    char *buf = malloc(n + 1);
    assert_int_equal(fedc_model_summary(m, buf, n + 1), n);
    assert_int_equal(strlen(buf), n);
    assert_non_null(strstr(buf, "dense(200)"));
    assert_non_null(strstr(buf, "157,000"));
    assert_non_null(strstr(buf, "199,210"));
    assert_non_null(strstr(buf, "1x28x28"));
    /* Truncation keeps a terminated prefix. */
    char small[20];
    assert_int_equal(fedc_model_summary(m, small, sizeof small), n);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, buf, sizeof small - 1);
    free(buf);
    fedc_model_destroy(m);
}

static void test_init(void **state)
{
    (void)state;
    fedc_model *m = make("conv(4,3,same) relu dense(6) tanh dense(3)", IMG, 3, 3);
    size_t P = fedc_model_param_count(m);
    float *a = malloc(P * sizeof *a), *b = malloc(P * sizeof *b);
    fedc_model_init_params(m, a, 7);
    fedc_model_init_params(m, b, 7);
    assert_memory_equal(a, b, P * sizeof *a);
    fedc_model_init_params(m, b, 8);
    assert_true(memcmp(a, b, P * sizeof *a) != 0);
    const fedc_layout *L = fedc_model_layout(m);
    /* conv followed by relu: He-uniform bound sqrt(6/9); dense(6) then tanh: Glorot. */
    const fedc_tensor_info *w0 = fedc_layout_find(L, "0.weight");
    double lim = sqrt(6.0 / 9.0), maxabs = 0;
    for (size_t i = 0; i < w0->numel; i++) maxabs = fmax(maxabs, fabs(a[w0->offset + i]));
    assert_true(maxabs <= lim && maxabs > 0.5 * lim);
    const fedc_tensor_info *w2 = fedc_layout_find(L, "3.weight"); /* after nn.Flatten at 2 */
    lim = sqrt(6.0 / (3136.0 + 6.0));
    maxabs = 0;
    double mean = 0;
    for (size_t i = 0; i < w2->numel; i++) {
        maxabs = fmax(maxabs, fabs(a[w2->offset + i]));
        mean += a[w2->offset + i];
    }
    mean /= (double)w2->numel;
    assert_true(maxabs <= lim && maxabs > 0.95 * lim);
    assert_true(fabs(mean) < 0.05 * lim);
    const fedc_tensor_info *b2 = fedc_layout_find(L, "3.bias");
    for (size_t i = 0; i < b2->numel; i++) assert_true(a[b2->offset + i] == 0.0f);
    /* Tensors draw from their own streams: a longer model keeps the earlier tensors. */
    fedc_model *m2 = make("conv(4,3,same) relu dense(6) tanh dense(3) tanh dense(3)", IMG, 3, 3);
    float *c = malloc(fedc_model_param_count(m2) * sizeof *c);
    fedc_model_init_params(m2, c, 7);
    assert_memory_equal(a, c, (w2->offset + w2->numel) * sizeof *a);
    free(c);
    fedc_model_destroy(m2);
    free(a);
    free(b);
    fedc_model_destroy(m);

    /* LSTM: forget-gate bias 1, the rest 0; group norm: scale 1, shift 0. */
    int64_t sh[2] = {3, 2};
    m = make("lstm(2) groupnorm(1) dense(2)", sh, 2, 2);
    P = fedc_model_param_count(m);
    a = malloc(P * sizeof *a);
    fedc_model_init_params(m, a, 1);
    L = fedc_model_layout(m);
    const fedc_tensor_info *lb = fedc_layout_find(L, "0.bias");
    float want[8] = {0, 0, 1, 1, 0, 0, 0, 0};
    assert_memory_equal(a + lb->offset, want, sizeof want);
    const fedc_tensor_info *gw = fedc_layout_find(L, "1.weight");
    assert_true(a[gw->offset] == 1.0f && a[gw->offset + 1] == 1.0f);
    free(a);
    fedc_model_destroy(m);
}

/* Random specs from the grammar's pieces and some garbage: creation either fails with a
 * message or gives a model that trains a step; never a crash (the ASan run checks memory). */
static void test_random_specs(void **state)
{
    (void)state;
    static const char *const names[] = {"dense", "conv", "maxpool", "avgpool", "relu", "tanh",
                                        "sigmoid", "dropout", "flatten", "embed", "lstm",
                                        "groupnorm", "loss", "frob", "", "("};
    static const char *const words[] = {"same", "valid", "seq", "last", "ce", "bce", "mse",
                                        "0.5", "-1", "x", "", "0", "99999999999"};
    fedc_rng r;
    fedc_rng_init(&r, 1, 0, 0, FEDC_RNG_DATA);
    int built = 0;
    for (int iter = 0; iter < 1500; iter++) {
        char spec[256] = "";
        size_t len = 0;
        int ntok = 1 + (int)fedc_rng_below(&r, 5);
        for (int t = 0; t < ntok && len < 200; t++) {
            len += (size_t)snprintf(spec + len, sizeof spec - len, "%s%s", t ? " " : "",
                                    names[fedc_rng_below(&r, sizeof names / sizeof names[0])]);
            int nargs = (int)fedc_rng_below(&r, 4) - 1; /* -1: no parentheses */
            if (nargs < 0) continue;
            len += (size_t)snprintf(spec + len, sizeof spec - len, "(");
            for (int a = 0; a < nargs; a++) {
                if (fedc_rng_below(&r, 3))
                    len += (size_t)snprintf(spec + len, sizeof spec - len, "%s%d", a ? "," : "",
                                            1 + (int)fedc_rng_below(&r, 6));
                else
                    len += (size_t)snprintf(
                        spec + len, sizeof spec - len, "%s%s", a ? "," : "",
                        words[fedc_rng_below(&r, sizeof words / sizeof words[0])]);
            }
            if (fedc_rng_below(&r, 10)) len += (size_t)snprintf(spec + len, sizeof spec - len, ")");
        }
        int64_t shapes[3][3] = {{2, 6, 6}, {5, 1, 1}, {4, 3, 1}};
        int which = (int)fedc_rng_below(&r, 3), ndim = which == 0 ? 3 : which == 1 ? 1 : 2;
        fedc_model *m = NULL;
        fedc_err err;
        fedc_err_clear(&err);
        fedc_status st = fedc_model_create(spec, shapes[which], ndim, 0, &m, &err);
        if (st != FEDC_OK) {
            assert_null(m);
            assert_true(err.msg[0] != '\0');
            continue;
        }
        built++;
        fedc_nn_workspace *ws = NULL;
        assert_int_equal(fedc_nn_workspace_create(m, 2, &ws, &err), FEDC_OK);
        size_t P = fedc_model_param_count(m), in = fedc_model_input_size(m);
        float *w = calloc(P + 1, sizeof *w), *x = calloc(2 * in, sizeof *x), loss;
        int32_t y[2] = {0, 0};
        fedc_model_init_params(m, w, 1);
        st = fedc_nn_train_batch(ws, w, x, y, 2, &loss);
        assert_true(st == FEDC_OK || st == FEDC_ERR_NONFINITE);
        free(w);
        free(x);
        fedc_nn_workspace_destroy(ws);
        fedc_model_destroy(m);
    }
    assert_true(built > 20); /* some valid models were exercised too */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preset_counts), cmocka_unit_test(test_layout_names),
        cmocka_unit_test(test_shapes),        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_bad_inputs),    cmocka_unit_test(test_summary),
        cmocka_unit_test(test_init),          cmocka_unit_test(test_random_specs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
