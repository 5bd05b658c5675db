/* Tests of the update codecs (include/fedc/codec.h): spec grammar, round-trip error bounds of
 * every encoding, unbiasedness of stochastic rounding (mean over many draws), top-k exactness,
 * the seeded mask, error feedback recovering the dropped mass, composition, zstd, model
 * deltas, determinism, input refusals, the [compress] config check and allocation failures. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec_internal.h"
#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/config.h"
#include "fedc/rng.h"

/* ---- helpers ---- */

static fedc_codec *make(const char *spec)
{
    fedc_codec *c = NULL;
    fedc_err err;
    fedc_status st = fedc_codec_create_str(spec, &c, &err);
    if (st != FEDC_OK) fail_msg("%s: %s", spec, err.msg);
    return c;
}

/* n values like an update: normal with a spread of scales, a few outliers. */
static float *update_like(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    fedc_rng rng;
    fedc_rng_init(&rng, seed, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < n; i++) {
        double s = i % 97 == 0 ? 0.2 : 0.01;
        x[i] = (float)(s * fedc_rng_normal(&rng));
    }
    return x;
}

/* Encodes then decodes x with spec; returns the decoded vector (malloc'd) and the size. */
static float *roundtrip(fedc_codec *c, const float *x, size_t n, const fedc_codec_ctx *ctx,
                        size_t *len_out)
{
    const uint8_t *msg;
    size_t len;
    fedc_err err;
    fedc_status st = fedc_codec_encode(c, x, n, ctx, &msg, &len, &err);
    if (st != FEDC_OK) fail_msg("encode %s: %s", fedc_codec_name(c), err.msg);
    float *y = malloc((n ? n : 1) * sizeof *y);
    assert_non_null(y);
    st = fedc_codec_decode(c, msg, len, y, n, &err);
    if (st != FEDC_OK) fail_msg("decode %s: %s", fedc_codec_name(c), err.msg);
    if (len_out) *len_out = len;
    return y;
}

static fedc_layout *two_tensors(size_t a, size_t b)
{
    fedc_layout *l = fedc_layout_create();
    assert_non_null(l);
    int64_t sa[2] = {(int64_t)a, 1}, sb[1] = {(int64_t)b};
    assert_int_equal(fedc_layout_add(l, "0.weight", 2, sa, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "0.bias", 1, sb, NULL), FEDC_OK);
    return l;
}

/* ---- spec grammar ---- */

static void test_spec_parse(void **state)
{
    (void)state;
    static const char *const ok[][2] = {
        {"none", "none"},
        {"f32", "none"},
        {"fp16", "f16"},
        {"bf16", "bf16"},
        {"q8", "q8:tensor"},
        {"q4:b=64", "q4:b=64"},
        {"q8:whole,nearest", "q8:whole,nearest"},
        {"qsgd", "qsgd:s=15,b=512"},
        {"qsgd:s=3,tensor", "qsgd:s=3,tensor"},
        {"topk:1%", "topk:1%+f32"},
        {"topk:0.05+q8", "topk:5%+q8:tensor"},
        {"topk:k=100+q4:b=32+zstd", "topk:k=100+q4:b=32+zstd:3"},
        {"mask:0.1+bf16", "mask:10%+bf16"},
        {"zstd:9", "f32+zstd:9"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        fedc_codec_spec s;
        fedc_err err;
        fedc_status st = fedc_codec_parse(ok[i][0], &s, &err);
        if (st != FEDC_OK) fail_msg("%s: %s", ok[i][0], err.msg);
        char buf[96];
        fedc_codec_format(&s, buf, sizeof buf);
        assert_string_equal(buf, ok[i][1]);
        /* the canonical form parses to the same spec */
        fedc_codec_spec s2;
        assert_int_equal(fedc_codec_parse(buf, &s2, NULL), FEDC_OK);
        char buf2[96];
        fedc_codec_format(&s2, buf2, sizeof buf2);
        assert_string_equal(buf2, buf);
    }
    static const char *const bad[][2] = {
        {"", "empty"},
        {"q9", "'q9'"},
        {"q8+topk:1%", "'topk'"},
        {"q8+q4", "'q4'"},
        {"zstd+q8", "'q8'"},
        {"topk", "'topk'"},
        {"topk:0", "'0'"},
        {"topk:1.5", "'1.5'"},
        {"topk:k=0", "'k=0'"},
        {"mask:1", "'1'"},
        {"mask:100%", "'100%'"},
        {"q8:b=0", "'b=0'"},
        {"q8:s=3", "'s=3'"},
        {"qsgd:s=40000", "'s=40000'"},
        {"qsgd:nearest", "'nearest'"},
        {"zstd:20", "'20'"},
        {"f16:x", "'f16'"},
        {"none+zstd", "stands alone"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fedc_codec_spec s;
        fedc_err err;
        fedc_err_clear(&err);
        assert_int_equal(fedc_codec_parse(bad[i][0], &s, &err), FEDC_ERR_CONFIG);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("'%s': message \"%s\" does not name %s", bad[i][0], err.msg, bad[i][1]);
    }
    fedc_codec_spec s;
    assert_int_equal(fedc_codec_parse("topk:1%+q8", &s, NULL), FEDC_OK);
    assert_true(fedc_codec_is_lossy(&s));
    assert_false(fedc_codec_keeps_norm_bound(&s));
    assert_int_equal(fedc_codec_parse("topk:1%", &s, NULL), FEDC_OK);
    assert_true(fedc_codec_keeps_norm_bound(&s));
    assert_int_equal(fedc_codec_parse("zstd", &s, NULL), FEDC_OK);
    assert_false(fedc_codec_is_lossy(&s));
}

/* ---- float codings ---- */

static void test_float_exact_and_f16_bits(void **state)
{
    (void)state;
    /* known encodings (IEEE 754 binary16, bfloat16) */
    static const struct {
        float x;
        uint16_t f16, bf16;
    } known[] = {
        {1.0f, 0x3c00, 0x3f80},       {-2.0f, 0xc000, 0xc000},
        {65504.0f, 0x7bff, 0x4780},   {0x1p-24f, 0x0001, 0x3380},
        {0.1f, 0x2e66, 0x3dcd},       {0x1p-14f, 0x0400, 0x3880},
        {0.0f, 0x0000, 0x0000},       {1.0009765625f, 0x3c01, 0x3f80},
        {0x1.002p0f, 0x3c00, 0x3f80}, /* half-way: ties to even */
        {0x1.006p0f, 0x3c02, 0x3f80},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        assert_int_equal(fedci_f32_to_f16(known[i].x), known[i].f16);
        assert_int_equal(fedci_f32_to_bf16(known[i].x), known[i].bf16);
    }
    /* the bulk path (F16C where available) gives the scalar code's bits, over every
     * magnitude from f16 subnormals to overflow-adjacent values, and ties */
    size_t n = 40000;
    float *x = malloc(n * sizeof *x);
    fedc_rng rng;
    fedc_rng_init(&rng, 7, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < n; i++) {
        double mag = ldexp(1.0, -30 + (int)fedc_rng_below(&rng, 46));
        x[i] = (float)((fedc_rng_uniform(&rng) * 2 - 1) * mag);
        if (i % 5 == 0) x[i] = fedci_f16_to_f32(fedci_f32_to_f16(x[i])) + 0x1p-24f * 0.5f;
        if (fabsf(x[i]) > 65504.0f) x[i] = 65504.0f;
    }
    uint8_t *bulk = malloc(2 * n);
    fedci_codec_to_f16(x, n, bulk);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(bulk[2 * i] | bulk[2 * i + 1] << 8);
        if (h != fedci_f32_to_f16(x[i])) fail_msg("x[%zu] = %a: bulk %04x", i, (double)x[i], h);
    }
    float *back = malloc(n * sizeof *back);
    fedci_codec_from_f16(bulk, n, back);
    for (size_t i = 0; i < n; i++)
        assert_true(fedci_f2u(back[i]) ==
                    fedci_f2u(fedci_f16_to_f32((uint16_t)(bulk[2 * i] | bulk[2 * i + 1] << 8))));

    /* round trips: none is bit-exact; f16 relative error <= 2^-11 on normal values and
     * absolute <= 2^-25 below 2^-14; bf16 relative error <= 2^-8 */
    fedc_codec *c32 = make("none"), *c16 = make("f16"), *cb = make("bf16");
    float *y = roundtrip(c32, x, n, NULL, NULL);
    assert_memory_equal(x, y, n * sizeof *x);
    free(y);
    y = roundtrip(c16, x, n, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        double ax = fabs((double)x[i]), d = fabs((double)y[i] - x[i]);
        if (ax >= 0x1p-14 ? d > ax * 0x1p-11 : d > 0x1p-25)
            fail_msg("f16: x[%zu] = %a decoded %a", i, (double)x[i], (double)y[i]);
    }
    free(y);
    y = roundtrip(cb, x, n, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        if (fabs((double)y[i] - x[i]) > fabs((double)x[i]) * 0x1p-8)
            fail_msg("bf16: x[%zu] = %a decoded %a", i, (double)x[i], (double)y[i]);
    free(y);
    fedc_codec_destroy(c32);
    fedc_codec_destroy(c16);
    fedc_codec_destroy(cb);
    free(x);
    free(bulk);
    free(back);
}

/* ---- linear quantization ---- */

/* Checks |y - x| <= bound_factor * (max - min) / L per group, with groups of `block` values
 * (0: the tensors of layout, or the whole vector when layout is NULL). */
static void check_linear(const char *spec, const float *x, size_t n, const fedc_layout *layout,
                         size_t block, unsigned L, double factor)
{
    fedc_codec *c = make(spec);
    fedc_codec_ctx ctx = {11, 3, 5, layout, 0};
    size_t len;
    float *y = roundtrip(c, x, n, &ctx, &len);
    size_t ng = block ? (n + block - 1) / block : layout ? layout->count : 1;
    for (size_t g = 0; g < ng; g++) {
        size_t a = block ? g * block : layout ? layout->tensors[g].offset : 0;
        size_t b = block    ? (a + block < n ? a + block : n)
                   : layout ? a + layout->tensors[g].numel
                            : n;
        float mn = x[a], mx = x[a];
        for (size_t i = a; i < b; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        double step = ((double)mx - mn) / L, tol = factor * step * (1 + 1e-5) + 1e-12;
        for (size_t i = a; i < b; i++) {
            if (fabs((double)y[i] - x[i]) > tol)
                fail_msg("%s: x[%zu] = %g decoded %g, group %zu step %g", spec, i, (double)x[i],
                         (double)y[i], g, step);
            if (y[i] < mn || y[i] > mx)
                fail_msg("%s: x[%zu] decoded %g outside [%g, %g]", spec, i, (double)y[i],
                         (double)mn, (double)mx);
        }
    }
    /* size: header + segments + scales + codes */
    size_t nseg = !block && layout ? layout->count : 0;
    size_t want = FEDC_CODEC_HEADER_SIZE + 8 * nseg + 8 * ng + (n * (L == 255 ? 8 : 4) + 7) / 8;
    assert_int_equal(len, want);
    free(y);
    fedc_codec_destroy(c);
}

static void test_linear_bounds(void **state)
{
    (void)state;
    size_t n = 10007;
    float *x = update_like(n, 3);
    fedc_layout *l = two_tensors(9000, 1007);
    check_linear("q8", x, n, l, 0, 255, 1.0);
    check_linear("q8", x, n, NULL, 0, 255, 1.0);
    check_linear("q8:b=256", x, n, l, 256, 255, 1.0);
    check_linear("q4", x, n, l, 0, 15, 1.0);
    check_linear("q4:b=33", x, n, NULL, 33, 15, 1.0);
    check_linear("q8:nearest", x, n, l, 0, 255, 0.5);
    check_linear("q4:b=7,nearest", x, n, NULL, 7, 15, 0.5);
    /* a constant group decodes exactly */
    float *k = malloc(100 * sizeof *k);
    for (int i = 0; i < 100; i++) k[i] = -0.25f;
    fedc_codec *c = make("q4");
    float *y = roundtrip(c, k, 100, NULL, NULL);
    assert_memory_equal(k, y, 100 * sizeof *k);
    free(y);
    fedc_codec_destroy(c);
    free(k);
    fedc_layout_destroy(l);
    free(x);
}

static void test_whole_ignores_layout(void **state)
{
    (void)state;
    /* a whole-vector spec writes one group even with a layout; tensor groups follow it */
    size_t n = 1000;
    float *x = update_like(n, 4);
    fedc_layout *l = two_tensors(600, 400);
    fedc_codec *c = make("q8:whole");
    fedc_codec_ctx ctx = {1, 1, 1, l, 0};
    const uint8_t *msg;
    size_t len;
    assert_int_equal(fedc_codec_encode(c, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    fedc_codec_header h;
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    assert_int_equal(h.groups, FEDC_GROUPS_WHOLE);
    fedc_codec_destroy(c);
    c = make("q8");
    assert_int_equal(fedc_codec_encode(c, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    assert_int_equal(h.groups, FEDC_GROUPS_TENSOR);
    assert_int_equal(h.group_param, 2);
    /* a layout whose total differs from n is a caller error */
    fedc_err err;
    assert_int_equal(fedc_codec_encode(c, x, n - 1, &ctx, &msg, &len, &err), FEDC_ERR_INVALID);
    fedc_codec_destroy(c);
    fedc_layout_destroy(l);
    free(x);
}

/* ---- QSGD ---- */

static void test_qsgd_bounds(void **state)
{
    (void)state;
    size_t n = 5000;
    float *x = update_like(n, 5);
    static const char *const specs[] = {"qsgd", "qsgd:s=1,whole", "qsgd:s=255,b=100"};
    static const unsigned s_of[] = {15, 1, 255};
    static const size_t block_of[] = {512, 0, 100};
    for (int t = 0; t < 3; t++) {
        fedc_codec *c = make(specs[t]);
        fedc_codec_ctx ctx = {2, 2, 2, NULL, 0};
        size_t len;
        float *y = roundtrip(c, x, n, &ctx, &len);
        size_t B = block_of[t] ? block_of[t] : n;
        for (size_t a = 0; a < n; a += B) {
            size_t b = a + B < n ? a + B : n;
            double ss = 0;
            for (size_t i = a; i < b; i++) ss += (double)x[i] * x[i];
            double unit = sqrt(ss) / s_of[t];
            for (size_t i = a; i < b; i++) {
                /* one level either side, and never the opposite sign */
                if (fabs((double)y[i] - x[i]) > unit * (1 + 1e-5))
                    fail_msg("%s: x[%zu] = %g decoded %g, norm/s = %g", specs[t], i, (double)x[i],
                             (double)y[i], unit);
                assert_true((double)y[i] * x[i] >= 0);
            }
        }
        free(y);
        fedc_codec_destroy(c);
    }
    free(x);
}

/* ---- unbiasedness ---- */

/* Mean of R decodes (rounds 1..R: independent rounding) against x, per element within
 * z_max standard errors, where sd_i bounds the per-draw standard deviation. Returns the
 * largest |z| seen. */
static double mean_z(const char *spec, const float *x, size_t n, int R, const double *sd)
{
    fedc_codec *c = make(spec);
    double *sum = calloc(n, sizeof *sum);
    for (int r = 1; r <= R; r++) {
        fedc_codec_ctx ctx = {99, (uint32_t)r, 4, NULL, 0};
        float *y = roundtrip(c, x, n, &ctx, NULL);
        for (size_t i = 0; i < n; i++) sum[i] += y[i];
        free(y);
    }
    double zmax = 0;
    for (size_t i = 0; i < n; i++) {
        double se = sd[i] / sqrt((double)R);
        double z = se > 0 ? fabs(sum[i] / R - x[i]) / se : (sum[i] / R == x[i] ? 0 : INFINITY);
        if (z > zmax) zmax = z;
    }
    free(sum);
    fedc_codec_destroy(c);
    return zmax;
}

static void test_unbiased(void **state)
{
    (void)state;
    /* 64 values in one group, at every fractional offset between levels */
    enum { N = 64, R = 3000 };
    float x[N];
    double sd[N];
    for (int i = 0; i < N; i++) x[i] = (float)(-1.0 + 2.0 * i / (N - 1) + 0.0037 * (i % 7));
    /* stochastic rounding between two levels step apart: sd <= step / 2 */
    double step8 = (x[N - 1] - x[0]) / 255.0, step4 = (x[N - 1] - x[0]) / 15.0;
    for (int i = 0; i < N; i++) sd[i] = step8 / 2;
    /* 64 elements: P(any |z| > 5) < 64 * 6e-7 */
    assert_true(mean_z("q8:whole", x, N, R, sd) < 5.0);
    for (int i = 0; i < N; i++) sd[i] = step4 / 2;
    assert_true(mean_z("q4:whole", x, N, R, sd) < 5.0);
    /* the same check catches a biased rounding: nearest is off by up to step/2 */
    assert_true(mean_z("q4:whole,nearest", x, N, R, sd) > 20.0);
    /* QSGD: between two levels norm/s apart */
    double ss = 0;
    for (int i = 0; i < N; i++) ss += (double)x[i] * x[i];
    for (int i = 0; i < N; i++) sd[i] = sqrt(ss) / 4 / 2;
    assert_true(mean_z("qsgd:s=4,whole", x, N, R, sd) < 5.0);
    /* mask: x / p with probability p, else 0: sd = |x| sqrt((1 - p) / p) */
    for (int i = 0; i < N; i++) sd[i] = fabs(x[i]) * sqrt(0.75 / 0.25);
    assert_true(mean_z("mask:25%", x, N, R, sd) < 5.0);
    /* composed: mask then 8-bit values (the variances add) */
    for (int i = 0; i < N; i++) sd[i] = fabs(x[i]) * sqrt(3.0) + step8 * 4 / 2 + 1e-3;
    assert_true(mean_z("mask:25%+q8:whole", x, N, R, sd) < 5.0);
}

/* ---- top-k ---- */

static const float *g_x;
static int cmp_idx(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float fa = fabsf(g_x[i]), fb = fabsf(g_x[j]);
    if (fa != fb) return fa > fb ? -1 : 1;
    return (i > j) - (i < j); /* ties: lowest index first */
}

static void check_topk(const char *spec, const float *x, size_t n, size_t k, unsigned want_fmt)
{
    fedc_codec *c = make(spec);
    const uint8_t *msg;
    size_t len;
    assert_int_equal(fedc_codec_encode(c, x, n, NULL, &msg, &len, NULL), FEDC_OK);
    fedc_codec_header h;
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    assert_int_equal(h.k, k);
    assert_int_equal(h.index_format, want_fmt);
    float *y = malloc(n * sizeof *y);
    assert_int_equal(fedc_codec_decode(c, msg, len, y, n, NULL), FEDC_OK);
    /* reference: sort indices by magnitude */
    uint32_t *ord = malloc(n * sizeof *ord);
    for (size_t i = 0; i < n; i++) ord[i] = (uint32_t)i;
    g_x = x;
    qsort(ord, n, sizeof *ord, cmp_idx);
    char *kept = calloc(n, 1);
    for (size_t j = 0; j < k; j++) kept[ord[j]] = 1;
    for (size_t i = 0; i < n; i++) {
        if (kept[i]) {
            if (fedci_f2u(y[i]) != fedci_f2u(x[i]))
                fail_msg("%s: kept x[%zu] = %a decoded %a", spec, i, (double)x[i], (double)y[i]);
        } else if (y[i] != 0.0f) {
            fail_msg("%s: x[%zu] not among the top %zu but decoded %g", spec, i, k, (double)y[i]);
        }
    }
    free(kept);
    free(ord);
    free(y);
    fedc_codec_destroy(c);
}

static void test_topk_exact(void **state)
{
    (void)state;
    size_t n = 20000;
    float *x = update_like(n, 6);
    /* ties: a block of equal magnitudes straddling the cut */
    for (size_t i = 100; i < 400; i += 3) x[i] = (i & 1) ? 0.05f : -0.05f;
    check_topk("topk:1%", x, n, 200, 1); /* sparse: varint gaps; cut in the ties */
    check_topk("topk:k=150", x, n, 150, 1);
    check_topk("topk:0.5", x, n, 10000, 2); /* dense: bitmap is smaller */
    check_topk("topk:k=99999", x, n, n, 2); /* clamped to n */
    check_topk("topk:k=1", x, n, 1, 1);
    /* all equal: ties resolved by index */
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    check_topk("topk:k=10", x, n, 10, 1);
    free(x);
}

/* ---- random mask ---- */

static void test_mask(void **state)
{
    (void)state;
    size_t n = 50000;
    float *x = update_like(n, 8);
    fedc_codec *c = make("mask:10%");
    fedc_codec_ctx ctx = {5, 6, 7, NULL, 0};
    const uint8_t *msg;
    size_t len;
    assert_int_equal(fedc_codec_encode(c, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    fedc_codec_header h;
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    /* Binomial(n, 0.1): mean 5000, sd 67 */
    assert_in_range(h.k, 5000 - 400, 5000 + 400);
    /* only values travel: header + k float32 */
    assert_int_equal(len, FEDC_CODEC_HEADER_SIZE + 4 * h.k);
    double p = (double)h.mask_threshold / 4294967296.0;
    assert_true(fabs(p - 0.1) < 1e-9);
    float *y = malloc(n * sizeof *y);
    assert_int_equal(fedc_codec_decode(c, msg, len, y, n, NULL), FEDC_OK);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] != 0.0f) {
            kept++;
            assert_true(fabs((double)y[i] - (double)x[i] / p) <= 1e-6 * fabs((double)x[i] / p));
        }
    }
    assert_int_equal(kept, h.k);
    /* the same (seed, round, client) gives the same message; another client another mask */
    uint8_t *first = malloc(len);
    memcpy(first, msg, len);
    size_t len1 = len;
    assert_int_equal(fedc_codec_encode(c, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    assert_int_equal(len, len1);
    assert_memory_equal(first, msg, len);
    ctx.client = 8;
    assert_int_equal(fedc_codec_encode(c, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    assert_true(len != len1 || memcmp(first, msg, len) != 0);
    free(first);
    free(y);
    fedc_codec_destroy(c);
    free(x);
}

/* ---- error feedback ---- */

/* Over T rounds of x_t = m + noise, returns ||sum x_t - sum decoded_t|| / ||sum x_t||. */
static double ef_gap(const char *spec, int use_ef, int T, size_t n)
{
    fedc_codec *c = make(spec);
    float *m = update_like(n, 20), *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    float *res = calloc(n, sizeof *res);
    double *sx = calloc(n, sizeof *sx), *sy = calloc(n, sizeof *sy);
    fedc_rng rng;
    fedc_rng_init(&rng, 21, 0, 0, FEDC_RNG_DATA);
    for (int t = 1; t <= T; t++) {
        for (size_t i = 0; i < n; i++) x[i] = m[i] + (float)(0.01 * fedc_rng_normal(&rng));
        fedc_codec_ctx ctx = {3, (uint32_t)t, 1, NULL, 0};
        const uint8_t *msg;
        size_t len;
        fedc_err err;
        fedc_status st = use_ef ? fedc_codec_encode_ef(c, x, res, n, &ctx, &msg, &len, &err)
                                : fedc_codec_encode(c, x, n, &ctx, &msg, &len, &err);
        if (st != FEDC_OK) fail_msg("%s", err.msg);
        assert_int_equal(fedc_codec_decode(c, msg, len, y, n, NULL), FEDC_OK);
        for (size_t i = 0; i < n; i++) {
            sx[i] += x[i];
            sy[i] += y[i];
        }
    }
    double num = 0, den = 0, ident = 0;
    for (size_t i = 0; i < n; i++) {
        num += (sx[i] - sy[i]) * (sx[i] - sy[i]);
        den += sx[i] * sx[i];
        /* the books balance: sum sent + residual = sum of inputs */
        double d = sx[i] - sy[i] - res[i];
        ident = fmax(ident, use_ef ? fabs(d) : 0);
    }
    assert_true(ident < 1e-4);
    free(m);
    free(x);
    free(y);
    free(res);
    free(sx);
    free(sy);
    fedc_codec_destroy(c);
    return sqrt(num / den);
}

static void test_error_feedback(void **state)
{
    (void)state;
    size_t n = 4000;
    /* without feedback top-1% keeps dropping the same half of the mass; with it the dropped
     * mass is sent in later rounds and the gap shrinks like 1/T (measured: no feedback 0.50;
     * with it 0.31 at T = 50, 0.064 at T = 400) */
    double g_no = ef_gap("topk:1%", 0, 400, n);
    double g50 = ef_gap("topk:1%", 1, 50, n), g400 = ef_gap("topk:1%", 1, 400, n);
    assert_true(g_no > 0.45);
    assert_true(g400 < 0.09);
    assert_true(g400 < g50 / 3);
    /* composed with 8-bit values it still converges (0.064); 4-bit rounding errors cancel too
     * (0.0017) */
    assert_true(ef_gap("topk:1%+q8", 1, 400, n) < 0.09);
    assert_true(ef_gap("q4:whole,nearest", 1, 400, n) < 0.005);
}

/* ---- composition ---- */

static void test_compose(void **state)
{
    (void)state;
    size_t n = 30000;
    float *x = update_like(n, 9);
    fedc_layout *l = two_tensors(20000, 10000);
    fedc_codec_ctx ctx = {1, 2, 3, l, 0};
    fedc_codec *f = make("topk:2%"), *c = make("topk:2%+q8");
    size_t lf, lc;
    float *yf = roundtrip(f, x, n, &ctx, &lf), *yc = roundtrip(c, x, n, &ctx, &lc);
    /* same positions; 8-bit values within one step of the exact ones, per tensor group */
    for (size_t t = 0; t < 2; t++) {
        size_t a = l->tensors[t].offset, b = a + l->tensors[t].numel;
        float mn = INFINITY, mx = -INFINITY;
        for (size_t i = a; i < b; i++)
            if (yf[i] != 0) {
                mn = fminf(mn, yf[i]);
                mx = fmaxf(mx, yf[i]);
            }
        double step = ((double)mx - mn) / 255;
        for (size_t i = a; i < b; i++) {
            assert_true((yf[i] != 0) == (yc[i] != 0) || fabs(yc[i]) <= step);
            assert_true(fabs((double)yc[i] - yf[i]) <= step * (1 + 1e-5));
        }
    }
    /* 600 values: indices (varint) + 1 byte each, against 4 bytes each */
    assert_true(lc < lf / 2);
    assert_true(lc < 600 * 3 + 200);
    free(yf);
    free(yc);
    fedc_codec_destroy(f);
    fedc_codec_destroy(c);
    fedc_layout_destroy(l);
    free(x);
}

/* ---- zstd ---- */

static void test_zstd(void **state)
{
    (void)state;
    size_t n = 20000;
    float *x = update_like(n, 10);
    /* compressible: a quantized vector with many repeated codes */
    for (size_t i = 0; i < n; i++) x[i] = i % 4 ? 0.0f : x[i];
    fedc_codec *plain = make("q8"), *z = make("q8+zstd");
    fedc_codec_ctx ctx = {1, 1, 1, NULL, 0};
    size_t lp, lz;
    float *yp = roundtrip(plain, x, n, &ctx, &lp), *yz = roundtrip(z, x, n, &ctx, &lz);
    assert_memory_equal(yp, yz, n * sizeof *yp); /* lossless stage */
    assert_true(lz < lp * 0.8);
    const uint8_t *msg;
    size_t len;
    assert_int_equal(fedc_codec_encode(z, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    fedc_codec_header h;
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    assert_true(h.flags & FEDC_CODEC_FLAG_ZSTD);
    assert_int_equal(h.body_bytes, lp - FEDC_CODEC_HEADER_SIZE);
    /* incompressible: random float32 mantissas; the raw body is kept */
    float *r = update_like(n, 11);
    fedc_codec *zf = make("zstd:1");
    assert_int_equal(fedc_codec_encode(zf, r, 64, &ctx, &msg, &len, NULL), FEDC_OK);
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    assert_false(h.flags & FEDC_CODEC_FLAG_ZSTD);
    assert_int_equal(len, FEDC_CODEC_HEADER_SIZE + 64 * 4);
    /* the HTTP-body helpers */
    const char *text = "fedc fedc fedc fedc fedc fedc fedc fedc fedc fedc fedc fedc fedc";
    const uint8_t *zb, *back;
    size_t zl, bl;
    assert_int_equal(fedc_codec_zstd_compress(zf, text, strlen(text), 3, &zb, &zl, NULL), FEDC_OK);
    assert_true(zl < strlen(text));
    uint8_t *zcopy = malloc(zl);
    memcpy(zcopy, zb, zl);
    assert_int_equal(fedc_codec_zstd_decompress(zf, zcopy, zl, 1000, &back, &bl, NULL), FEDC_OK);
    assert_int_equal(bl, strlen(text));
    assert_memory_equal(back, text, bl);
    fedc_err err;
    assert_int_equal(fedc_codec_zstd_decompress(zf, zcopy, zl, 10, &back, &bl, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "limit"));
    assert_int_equal(fedc_codec_zstd_decompress(zf, zcopy, zl - 3, 1000, &back, &bl, &err),
                     FEDC_ERR_FORMAT);
    assert_int_equal(fedc_codec_zstd_decompress(zf, "nope", 4, 1000, &back, &bl, &err),
                     FEDC_ERR_FORMAT);
    free(zcopy);
    free(yp);
    free(yz);
    free(r);
    fedc_codec_destroy(plain);
    fedc_codec_destroy(z);
    fedc_codec_destroy(zf);
    free(x);
}

/* ---- model deltas ---- */

static void test_delta(void **state)
{
    (void)state;
    size_t n = 5000;
    float *base = update_like(n, 12), *x = malloc(n * sizeof *x), *out = malloc(n * sizeof *out);
    for (size_t i = 0; i < n; i++) x[i] = base[i] + 0.001f * (float)((int)(i % 13) - 6);
    fedc_codec *c = make("none");
    fedc_codec_ctx ctx = {1, 8, FEDC_RNG_ANY, NULL, 8};
    const uint8_t *msg;
    size_t len;
    assert_int_equal(fedc_codec_encode_delta(c, x, base, 7, n, &ctx, &msg, &len, NULL), FEDC_OK);
    fedc_codec_header h;
    assert_int_equal(fedc_codec_peek(msg, len, &h, NULL), FEDC_OK);
    assert_true(h.flags & FEDC_CODEC_FLAG_DELTA);
    assert_int_equal(h.base_version, 7);
    assert_int_equal(h.model_version, 8);
    assert_int_equal(fedc_codec_decode_model(c, msg, len, base, 7, out, n, NULL), FEDC_OK);
    for (size_t i = 0; i < n; i++) /* (x - base) + base: within one rounding of x */
        assert_true(fabsf(out[i] - x[i]) <= 2 * fabsf(x[i]) * 0x1p-24f + 1e-30f);
    /* wrong cached version, or none: refused, and base untouched even in place */
    float *copy = malloc(n * sizeof *copy);
    memcpy(copy, base, n * sizeof *copy);
    fedc_err err;
    assert_int_equal(fedc_codec_decode_model(c, msg, len, base, 6, base, n, &err), FEDC_ERR_STATE);
    assert_non_null(strstr(err.msg, "version 7"));
    assert_non_null(strstr(err.msg, "version 6"));
    assert_int_equal(fedc_codec_decode_model(c, msg, len, NULL, 0, out, n, &err), FEDC_ERR_STATE);
    assert_int_equal(fedc_codec_decode(c, msg, len, out, n, &err), FEDC_ERR_STATE);
    /* a malformed delta (its last value a NaN) leaves base as it was */
    uint8_t *bad = malloc(len);
    memcpy(bad, msg, len);
    fedci_put32(bad + len - 4, 0x7fc00000u);
    assert_int_not_equal(fedc_codec_decode_model(c, bad, len, base, 7, base, n, &err), FEDC_OK);
    assert_memory_equal(copy, base, n * sizeof *copy);
    /* in place, the right version */
    assert_int_equal(fedc_codec_decode_model(c, msg, len, base, 7, base, n, NULL), FEDC_OK);
    for (size_t i = 0; i < n; i++)
        assert_true(fabsf(base[i] - x[i]) <= 2 * fabsf(x[i]) * 0x1p-24f + 1e-30f);
    /* a full model through decode_model (base ignored) */
    assert_int_equal(fedc_codec_encode(c, x, n, &ctx, &msg, &len, NULL), FEDC_OK);
    assert_int_equal(fedc_codec_decode_model(c, msg, len, NULL, 0, out, n, NULL), FEDC_OK);
    assert_memory_equal(out, x, n * sizeof *x);
    /* lossy delta (q8): the receiver's model is within one step of x */
    fedc_codec *q = make("q8:whole");
    memcpy(base, copy, n * sizeof *copy);
    assert_int_equal(fedc_codec_encode_delta(q, x, base, 7, n, &ctx, &msg, &len, NULL), FEDC_OK);
    assert_int_equal(fedc_codec_decode_model(q, msg, len, base, 7, out, n, NULL), FEDC_OK);
    for (size_t i = 0; i < n; i++)
        assert_true(fabsf(out[i] - x[i]) <= 0.012f / 255 * 1.01f + 1e-6f);
    fedc_codec_destroy(q);
    free(bad);
    free(copy);
    fedc_codec_destroy(c);
    free(base);
    free(x);
    free(out);
}

/* ---- determinism and refusals of bad input ---- */

static void test_deterministic_and_refusals(void **state)
{
    (void)state;
    size_t n = 3000;
    float *x = update_like(n, 13);
    static const char *const specs[] = {"q8", "q4:b=64", "qsgd", "mask:5%+q8", "topk:3%+q4+zstd"};
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        fedc_codec *a = make(specs[s]), *b = make(specs[s]);
        fedc_codec_ctx ctx = {77, 4, 9, NULL, 0};
        const uint8_t *ma, *mb;
        size_t la, lb;
        assert_int_equal(fedc_codec_encode(a, x, n, &ctx, &ma, &la, NULL), FEDC_OK);
        assert_int_equal(fedc_codec_encode(b, x, n, &ctx, &mb, &lb, NULL), FEDC_OK);
        assert_int_equal(la, lb);
        assert_memory_equal(ma, mb, la);
        ctx.round = 5; /* another round, other random draws */
        assert_int_equal(fedc_codec_encode(b, x, n, &ctx, &mb, &lb, NULL), FEDC_OK);
        assert_true(la != lb || memcmp(ma, mb, la) != 0);
        fedc_codec_destroy(a);
        fedc_codec_destroy(b);
    }
    /* non-finite input names the index; float16 overflow is refused */
    fedc_codec *c = make("q8");
    fedc_err err;
    const uint8_t *msg;
    size_t len;
    x[1234] = NAN;
    assert_int_equal(fedc_codec_encode(c, x, n, NULL, &msg, &len, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "1234"));
    x[1234] = 70000.0f;
    fedc_codec *h = make("f16");
    assert_int_equal(fedc_codec_encode(h, x, n, NULL, &msg, &len, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "1234"));
    x[1234] = 65504.0f; /* the largest float16 is fine */
    assert_int_equal(fedc_codec_encode(h, x, n, NULL, &msg, &len, &err), FEDC_OK);
    x[1234] = 3e38f;
    x[1235] = -3e38f; /* a range wider than float */
    assert_int_equal(fedc_codec_encode(c, x, n, NULL, &msg, &len, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_codec_encode(c, x, 0, NULL, &msg, &len, &err), FEDC_ERR_INVALID);
    /* the decoder wants the receiver's own n */
    x[1234] = x[1235] = 0;
    assert_int_equal(fedc_codec_encode(c, x, n, NULL, &msg, &len, NULL), FEDC_OK);
    float *y = malloc((n + 1) * sizeof *y);
    assert_int_equal(fedc_codec_decode(c, msg, len, y, n + 1, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "element count n at offset 16"));
    /* any workspace decodes any message */
    assert_int_equal(fedc_codec_decode(h, msg, len, y, n, NULL), FEDC_OK);
    free(y);
    fedc_codec_destroy(c);
    fedc_codec_destroy(h);
    free(x);
}

/* ---- configuration ---- */

static fedc_status check_cfg(const char *const *sets, size_t n, fedc_err *err)
{
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (size_t i = 0; i < n; i++)
        if (fedc_config_set(cfg, sets[i], "test") != FEDC_OK)
            fail_msg("%s: %s", sets[i], fedc_config_errmsg(cfg));
    fedc_err_clear(err);
    fedc_status st = fedc_codec_config_check(cfg, err);
    fedc_config_destroy(cfg);
    return st;
}

static void test_config_check(void **state)
{
    (void)state;
    fedc_err err;
    assert_int_equal(check_cfg(NULL, 0, &err), FEDC_OK);
    const char *bad_spec[] = {"compress.upload=topk:2"};
    assert_int_equal(check_cfg(bad_spec, 1, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "compress.upload"));
    const char *bad_down[] = {"compress.download=q5"};
    assert_int_equal(check_cfg(bad_down, 1, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "compress.download"));
    /* central DP, clipped on the client: the encoded update must keep the clip */
    const char *central_q8[] = {"dp.mode=central", "dp.clip_on=client", "compress.upload=q8"};
    assert_int_equal(check_cfg(central_q8, 3, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "dp.clip_on"));
    const char *central_topk[] = {"dp.mode=central", "compress.upload=topk:1%"};
    assert_int_equal(check_cfg(central_topk, 2, &err), FEDC_ERR_CONFIG); /* auto: feedback on */
    assert_non_null(strstr(err.msg, "error feedback"));
    const char *central_topk_noef[] = {"dp.mode=central", "compress.upload=topk:1%",
                                       "compress.error_feedback=off"};
    assert_int_equal(check_cfg(central_topk_noef, 3, &err), FEDC_OK);
    const char *central_zstd[] = {"dp.mode=central", "compress.upload=zstd"};
    assert_int_equal(check_cfg(central_zstd, 2, &err), FEDC_OK);
    /* the server clips what it decodes; local DP noises before encoding; downloads are public */
    const char *central_server[] = {"dp.mode=central", "dp.clip_on=server",
                                    "compress.upload=topk:1%+q8"};
    assert_int_equal(check_cfg(central_server, 3, &err), FEDC_OK);
    const char *local[] = {"dp.mode=local", "compress.upload=q4"};
    assert_int_equal(check_cfg(local, 2, &err), FEDC_OK);
    const char *down[] = {"dp.mode=central", "compress.download=q8"};
    assert_int_equal(check_cfg(down, 2, &err), FEDC_OK);
    /* secure aggregation quantizes itself: no lossy upload on top; lossless zstd is fine */
    const char *sa_q8[] = {"secagg.enabled=true", "compress.upload=topk:1%+q8"};
    assert_int_equal(check_cfg(sa_q8, 2, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "secagg.enabled"));
    const char *sa_zstd[] = {"secagg.enabled=true", "compress.upload=zstd",
                             "compress.download=q8"};
    assert_int_equal(check_cfg(sa_zstd, 3, &err), FEDC_OK);
    /* error feedback needs something to feed back */
    const char *ef_none[] = {"compress.error_feedback=on"};
    assert_int_equal(check_cfg(ef_none, 1, &err), FEDC_ERR_CONFIG);
    /* the helper */
    fedc_config *cfg = fedc_config_create();
    assert_false(fedc_codec_config_error_feedback(cfg));
    assert_int_equal(fedc_config_set(cfg, "compress.upload=topk:1%+q8", "t"), FEDC_OK);
    assert_true(fedc_codec_config_error_feedback(cfg));
    assert_int_equal(fedc_config_set(cfg, "compress.error_feedback=off", "t"), FEDC_OK);
    assert_false(fedc_codec_config_error_feedback(cfg));
    assert_int_equal(fedc_config_set(cfg, "compress.upload=q8", "t"), FEDC_OK);
    assert_int_equal(fedc_config_set(cfg, "compress.error_feedback=on", "t"), FEDC_OK);
    assert_true(fedc_codec_config_error_feedback(cfg));
    fedc_config_destroy(cfg);
}

/* ---- allocation failures ---- */

static void test_alloc_failure(void **state)
{
    (void)state;
    size_t n = 4000;
    float *x = update_like(n, 14), *y = malloc(n * sizeof *y), *res = calloc(n, sizeof *res);
    fedc_layout *l = two_tensors(3000, 1000);
    static const char *const specs[] = {"topk:1%+q8+zstd", "mask:10%+qsgd", "f16+zstd"};
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        int succeeded = 0;
        for (uint64_t k = 1; k < 200 && !succeeded; k++) {
            fedc_alloc_stats before, after;
            fedc_alloc_get_stats(&before);
            fedc_alloc_fail_after(k, 0);
            fedc_codec *c = NULL;
            fedc_err err;
            fedc_codec_ctx ctx = {1, 1, 1, l, 0};
            const uint8_t *msg;
            size_t len;
            fedc_status st = fedc_codec_create_str(specs[s], &c, &err);
            if (st == FEDC_OK) st = fedc_codec_encode_ef(c, x, res, n, &ctx, &msg, &len, &err);
            if (st == FEDC_OK) st = fedc_codec_decode(c, msg, len, y, n, &err);
            fedc_alloc_fail_after(0, 0);
            if (st == FEDC_OK)
                succeeded = 1;
            else if (st != FEDC_ERR_NOMEM)
                fail_msg("%s, allocation %llu failing: %s", specs[s], (unsigned long long)k,
                         err.msg);
            fedc_codec_destroy(c);
            fedc_alloc_get_stats(&after);
            assert_int_equal(after.current_bytes, before.current_bytes);
        }
        assert_true(succeeded);
    }
    fedc_layout_destroy(l);
    free(x);
    free(y);
    free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_float_exact_and_f16_bits),
        cmocka_unit_test(test_linear_bounds),
        cmocka_unit_test(test_whole_ignores_layout),
        cmocka_unit_test(test_qsgd_bounds),
        cmocka_unit_test(test_unbiased),
        cmocka_unit_test(test_topk_exact),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_error_feedback),
        cmocka_unit_test(test_compose),
        cmocka_unit_test(test_zstd),
        cmocka_unit_test(test_delta),
        cmocka_unit_test(test_deterministic_and_refusals),
        cmocka_unit_test(test_config_check),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
