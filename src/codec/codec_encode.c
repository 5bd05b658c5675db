/*
 * The encoder: sparsification (top-k by radix select, seeded random mask), value coding
 * (float32/16, bfloat16, 8/4-bit linear with stochastic rounding, QSGD), the optional zstd
 * body, and the two wrappers that callers use for error feedback and model deltas.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "codec/codec_internal.h"
#include "fedc/alloc.h"
#include "fedc/rng.h"

#define CHUNK 1024 /* values quantized per batch of random words */

/* ---- sparsifiers ---- */

/* The k largest |x[i]| (ties: lowest index first), as sorted indices. Radix select over the
 * magnitude bits (non-negative floats order like their bit patterns): a histogram of the top
 * 11 bits over all of x finds the bin holding the k-th largest magnitude; the magnitudes in
 * that bin (cand, a small fraction of n for any spread of values) are refined on the next 11
 * and last 9 bits; one pass over x collects. O(n), deterministic. Returns -1 when cand cannot
 * be allocated. */
static int topk_select(const float *x, size_t n, size_t k, uint32_t *idx, fedci_codec_buf *cbuf)
{
    if (k >= n) {
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        return 0;
    }
    static const unsigned shift[3] = {20, 9, 0}, width[3] = {11, 11, 9};
    uint32_t prefix = 0, mask = 0;
    size_t need = k; /* how many of those matching prefix/mask we still must take */
    uint32_t hist[2048];
    uint32_t *cand = NULL;
    size_t ncand = 0;
    for (int pass = 0; pass < 3; pass++) {
        uint32_t bins = 1u << width[pass], bmask = bins - 1;
        memset(hist, 0, bins * sizeof *hist);
        if (pass == 0) {
            for (size_t i = 0; i < n; i++) hist[(fedci_f2u(x[i]) & 0x7fffffffu) >> shift[0]]++;
        } else {
            for (size_t i = 0; i < ncand; i++)
                if ((cand[i] & mask) == prefix) hist[(cand[i] >> shift[pass]) & bmask]++;
        }
        size_t above = 0;
        uint32_t b = bins - 1;
        while (above + hist[b] < need && b > 0) above += hist[b--];
        need -= above;
        prefix |= b << shift[pass];
        mask |= bmask << shift[pass];
        if (pass == 0) {
            cand = fedci_codec_reserve(cbuf, (hist[b] ? hist[b] : 1) * sizeof *cand);
            if (!cand) return -1;
            for (size_t i = 0; i < n; i++) {
                uint32_t a = fedci_f2u(x[i]) & 0x7fffffffu;
                cand[ncand] = a;
                ncand += (a & mask) == prefix;
            }
        }
    }
    /* prefix is now the magnitude T of the k-th largest; take all above, `need` equal ones */
    size_t m = 0;
    for (size_t i = 0; i < n && m < k; i++) {
        uint32_t a = fedci_f2u(x[i]) & 0x7fffffffu;
        if (a > prefix || (a == prefix && need > 0)) {
            if (a == prefix) need--;
            idx[m++] = (uint32_t)i;
        }
    }
    assert(m == k);
    return 0;
}

/* Indices kept by the mask (key, threshold) over n elements; returns the count. */
static size_t mask_select(uint64_t key, uint32_t thr, size_t n, uint32_t *idx)
{
    uint32_t w[CHUNK];
    size_t m = 0;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t len = n - i0 < CHUNK ? n - i0 : CHUNK;
        fedci_codec_words(key, i0, len, w);
        for (size_t j = 0; j < len; j++) {
            idx[m] = (uint32_t)(i0 + j);
            m += w[j] < thr;
        }
    }
    return m;
}

/* ---- value coding ---- */

typedef struct enc {
    const float *v; /* k values */
    size_t k;
    const uint32_t *idx; /* their dense indices, or NULL (dense) */
    const size_t *gb;    /* group bounds */
    size_t ngroups;
    uint64_t srkey;  /* stochastic rounding stream */
    uint8_t *scales; /* scale section */
    uint8_t *codes;  /* value section */
} enc;

static size_t dense_index(const enc *e, size_t j) { return e->idx ? e->idx[j] : j; }

static fedc_status encode_float(const enc *e, fedc_codec_values vals, fedc_err *err)
{
    uint8_t *p = e->codes;
    if (vals == FEDC_VALUES_F32) {
#ifdef FEDCI_LITTLE_ENDIAN
        memcpy(p, e->v, e->k * sizeof(float));
#else
        for (size_t j = 0; j < e->k; j++) fedci_putf(p + 4 * j, e->v[j]);
#endif
        return FEDC_OK;
    }
    if (vals == FEDC_VALUES_F16) {
        fedci_codec_to_f16(e->v, e->k, p);
    } else {
        uint16_t h[CHUNK];
        for (size_t j0 = 0; j0 < e->k; j0 += CHUNK) {
            size_t len = e->k - j0 < CHUNK ? e->k - j0 : CHUNK;
            size_t t = 0;
            for (; t + 16 <= len; t += 16) /* fixed trip count: vectorized */
                for (size_t l = 0; l < 16; l++) h[t + l] = fedci_f32_to_bf16(e->v[j0 + t + l]);
            for (; t < len; t++) h[t] = fedci_f32_to_bf16(e->v[j0 + t]);
#ifdef FEDCI_LITTLE_ENDIAN
            memcpy(p + 2 * j0, h, 2 * len);
#else
            for (size_t t = 0; t < len; t++) {
                p[2 * (j0 + t)] = (uint8_t)h[t];
                p[2 * (j0 + t) + 1] = (uint8_t)(h[t] >> 8);
            }
#endif
        }
    }
    /* overflow check after the loop (keeps the conversion loop branch-free) */
    uint16_t inf = vals == FEDC_VALUES_F16 ? 0x7c00 : 0x7f80; /* exponent all ones */
    for (size_t j = 0; j < e->k; j++) {
        if (((p[2 * j] | p[2 * j + 1] << 8) & inf) == inf)
            return fedc_err_set(err, FEDC_ERR_RANGE,
                                "element %zu = %g does not fit %s (largest finite %g)",
                                dense_index(e, j), (double)e->v[j],
                                vals == FEDC_VALUES_F16 ? "float16" : "bfloat16",
                                vals == FEDC_VALUES_F16 ? 65504.0 : 3.3895313892515355e38);
    }
    return FEDC_OK;
}

/* min and max of v[0..n-1], n >= 1 (8 lanes: no dependency chain, vectorizable). */
static void min_max(const float *v, size_t n, float *pmn, float *pmx)
{
    float mn[8], mx[8];
    for (int l = 0; l < 8; l++) mn[l] = mx[l] = v[0];
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int l = 0; l < 8; l++) {
            mn[l] = v[i + l] < mn[l] ? v[i + l] : mn[l];
            mx[l] = v[i + l] > mx[l] ? v[i + l] : mx[l];
        }
    }
    for (; i < n; i++) {
        mn[0] = v[i] < mn[0] ? v[i] : mn[0];
        mx[0] = v[i] > mx[0] ? v[i] : mx[0];
    }
    for (int l = 1; l < 8; l++) {
        mn[0] = mn[l] < mn[0] ? mn[l] : mn[0];
        mx[0] = mx[l] > mx[0] ? mx[l] : mx[0];
    }
    *pmn = mn[0];
    *pmx = mx[0];
}

/* Codes of len values: q = min((v - mn) * inv, L); c = floor(q) + [u < q - floor(q)] with u
 * uniform in [0, 1) from 24 bits of w (P(up) = fractional part: unbiased), or round(q).
 * q <= L keeps c <= L. Branch-free, for the vectorizer. */
static inline uint8_t quantize_one(float v, float mn, float inv, float Lf, uint32_t w)
{
    float q = (v - mn) * inv;
    q = q < Lf ? q : Lf;
    int32_t c = (int32_t)q;
    float fr = q - (float)c;
    float u = (float)(int32_t)(w >> 8) * 0x1p-24f;
    return (uint8_t)(c + (u < fr));
}

static void quantize_chunk(const float *restrict v, size_t len, float mn, float inv, float Lf,
                           const uint32_t *restrict w, uint8_t *restrict c8)
{
    size_t t = 0;
    for (; t + 16 <= len; t += 16) /* fixed trip count: vectorized at -O2 */
        for (size_t l = 0; l < 16; l++) c8[t + l] = quantize_one(v[t + l], mn, inv, Lf, w[t + l]);
    for (; t < len; t++) c8[t] = quantize_one(v[t], mn, inv, Lf, w[t]);
}

static inline uint8_t nearest_one(float v, float mn, float inv, float Lf)
{
    float q = (v - mn) * inv;
    q = q < Lf ? q : Lf;
    return (uint8_t)(int32_t)(q + 0.5f);
}

static void quantize_chunk_nearest(const float *restrict v, size_t len, float mn, float inv,
                                   float Lf, uint8_t *restrict c8)
{
    size_t t = 0;
    for (; t + 16 <= len; t += 16)
        for (size_t l = 0; l < 16; l++) c8[t + l] = nearest_one(v[t + l], mn, inv, Lf);
    for (; t < len; t++) c8[t] = nearest_one(v[t], mn, inv, Lf);
}

/* 8/4-bit linear: per group [min, max], L levels; code = (v - min) / step, step =
 * (max - min) / L, rounded stochastically (unbiased) or to nearest. */
static fedc_status encode_linear(const enc *e, unsigned L, int nearest, fedc_err *err)
{
    uint32_t w[CHUNK];
    uint8_t c8[CHUNK];
    for (size_t g = 0; g < e->ngroups; g++) {
        size_t a = e->gb[g], b = e->gb[g + 1];
        float mn = 0, mx = 0;
        if (b > a) min_max(e->v + a, b - a, &mn, &mx);
        float range = mx - mn;
        if (!isfinite(range))
            return fedc_err_set(err, FEDC_ERR_RANGE,
                                "group %zu: values span [%g, %g], wider than float range", g,
                                (double)mn, (double)mx);
        fedci_putf(e->scales + 8 * g, mn);
        fedci_putf(e->scales + 8 * g + 4, mx);
        float step = range / (float)L;
        float inv = step > 0 ? 1.0f / step : 0.0f;
        for (size_t j0 = a; j0 < b; j0 += CHUNK) {
            size_t len = b - j0 < CHUNK ? b - j0 : CHUNK;
            uint8_t *dst = L == 255 ? e->codes + j0 : c8;
            if (nearest) {
                quantize_chunk_nearest(e->v + j0, len, mn, inv, (float)L, dst);
            } else {
                fedci_codec_words(e->srkey, j0, len, w);
                quantize_chunk(e->v + j0, len, mn, inv, (float)L, w, dst);
            }
            if (L != 255) { /* two codes per byte, low nibble first */
                size_t t = 0;
                if (j0 & 1) e->codes[j0 >> 1] |= (uint8_t)(c8[t++] << 4);
                uint8_t *q = e->codes + ((j0 + t) >> 1);
                for (; t + 1 < len; t += 2) *q++ = (uint8_t)(c8[t] | c8[t + 1] << 4);
                if (t < len) *q |= c8[t];
            }
        }
    }
    return FEDC_OK;
}

static inline uint16_t qsgd_one(float v, float inv, float sf, uint32_t w, unsigned lbits)
{
    float q = fabsf(v) * inv;
    q = q < sf ? q : sf;
    int32_t l = (int32_t)q;
    float fr = q - (float)l;
    float u = (float)(int32_t)(w >> 8) * 0x1p-24f;
    l += u < fr;
    return (uint16_t)(l | ((l != 0) & (v < 0)) << lbits);
}

/* QSGD: per group the L2 norm; per value sign and level l in 0..s, E[l] = s |v| / norm. */
static fedc_status encode_qsgd(const enc *e, unsigned s, fedc_err *err)
{
    uint32_t w[CHUNK];
    uint16_t code[CHUNK];
    unsigned bits = fedci_codec_value_bits(FEDC_VALUES_QSGD, s), lbits = bits - 1;
    uint64_t buf = 0; /* bit writer: values are contiguous across groups */
    unsigned have = 0;
    uint8_t *out = e->codes;
    for (size_t g = 0; g < e->ngroups; g++) {
        size_t a = e->gb[g], b = e->gb[g + 1];
        double ss[8] = {0};
        size_t j = a;
        for (; j + 8 <= b; j += 8)
            for (int l = 0; l < 8; l++) ss[l] += (double)e->v[j + l] * e->v[j + l];
        for (; j < b; j++) ss[0] += (double)e->v[j] * e->v[j];
        float norm =
            (float)sqrt(((ss[0] + ss[1]) + (ss[2] + ss[3])) + ((ss[4] + ss[5]) + (ss[6] + ss[7])));
        if (!isfinite(norm))
            return fedc_err_set(err, FEDC_ERR_RANGE, "group %zu: L2 norm beyond float range", g);
        fedci_putf(e->scales + 4 * g, norm);
        float inv = norm > 0 ? (float)s / norm : 0.0f, sf = (float)s;
        for (size_t j0 = a; j0 < b; j0 += CHUNK) {
            size_t len = b - j0 < CHUNK ? b - j0 : CHUNK, t = 0;
            fedci_codec_words(e->srkey, j0, len, w);
            for (; t + 16 <= len; t += 16)
                for (size_t l = 0; l < 16; l++)
                    code[t + l] = qsgd_one(e->v[j0 + t + l], inv, sf, w[t + l], lbits);
            for (; t < len; t++) code[t] = qsgd_one(e->v[j0 + t], inv, sf, w[t], lbits);
            for (t = 0; t < len; t++) {
                buf |= (uint64_t)code[t] << have;
                have += bits;
                while (have >= 8) {
                    *out++ = (uint8_t)buf;
                    buf >>= 8;
                    have -= 8;
                }
            }
        }
    }
    if (have) *out = (uint8_t)buf;
    return FEDC_OK;
}

/* ---- the message ---- */

static unsigned varint_len(uint32_t v)
{
    return v < (1u << 7) ? 1 : v < (1u << 14) ? 2 : v < (1u << 21) ? 3 : v < (1u << 28) ? 4 : 5;
}

static uint8_t *put_varint(uint8_t *p, uint32_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Encodes x into c->msg (raw) and, with zstd, c->zmsg. *raw gets c->msg; *msg the message to
 * send (c->zmsg when zstd made it smaller, else c->msg). */
static fedc_status encode_impl(fedc_codec *c, const float *x, size_t n, const fedc_codec_ctx *ctx,
                               unsigned flags, uint64_t base_version, const uint8_t **raw,
                               size_t *raw_len, const uint8_t **msg, size_t *len, fedc_err *err)
{
    static const fedc_codec_ctx none = {0, 0, FEDC_RNG_ANY, NULL, 0};
    if (!ctx) ctx = &none;
    const fedc_codec_spec *s = &c->spec;
    if (n == 0 || (uint64_t)n > FEDC_CODEC_MAX_N)
        return fedc_err_set(err, FEDC_ERR_INVALID, "encode: %zu elements, expected 1..%llu", n,
                            (unsigned long long)FEDC_CODEC_MAX_N);
    const fedc_layout *layout = ctx->layout;
    if (layout && layout->total != n)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "encode: %zu elements, the layout has %zu parameters", n,
                            layout->total);
    ptrdiff_t bad = fedc_vec_find_nonfinite(n, x);
    if (bad >= 0)
        return fedc_err_set(err, FEDC_ERR_NONFINITE, "encode: element %td is %g", bad,
                            (double)x[bad]);

    fedc_codec_header h;
    memset(&h, 0, sizeof h);
    h.version = FEDC_CODEC_FORMAT_VERSION;
    h.flags = flags;
    h.sparse = s->sparse;
    h.values = s->values;
    h.levels = s->values == FEDC_VALUES_Q8     ? 255
               : s->values == FEDC_VALUES_Q4   ? 15
               : s->values == FEDC_VALUES_QSGD ? s->levels
                                               : 0;
    h.n = n;
    h.model_version = ctx->model_version;
    h.base_version = base_version;

    /* the stream (seed, round, client, QUANTIZE) gives the rounding key and the mask key */
    fedc_rng rng;
    fedc_rng_init(&rng, ctx->seed, ctx->round, ctx->client, FEDC_RNG_QUANTIZE);
    enc e;
    memset(&e, 0, sizeof e);
    e.srkey = fedc_rng_u64(&rng);

    /* 1. sparsify */
    uint32_t *idx = NULL;
    size_t k = n;
    if (s->sparse != FEDC_SPARSE_NONE) {
        if (s->sparse == FEDC_SPARSE_TOPK) {
            k = s->count ? (s->count < n ? (size_t)s->count : n)
                         : (size_t)ceil(s->fraction * (double)n);
            if (k < 1) k = 1;
            if (k > n) k = n;
        }
        idx = fedci_codec_reserve(&c->idx, (s->sparse == FEDC_SPARSE_TOPK ? k : n) * sizeof *idx);
        float *vals =
            fedci_codec_reserve(&c->vals, (s->sparse == FEDC_SPARSE_TOPK ? k : n) * sizeof *vals);
        if (!idx || !vals) return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory");
        if (s->sparse == FEDC_SPARSE_TOPK) {
            if (topk_select(x, n, k, idx, &c->cand) != 0)
                return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory");
        } else {
            h.mask_key = fedc_rng_u64(&rng);
            double t = floor(s->fraction * 4294967296.0 + 0.5);
            h.mask_threshold = t < 1 ? 1u : t > 4294967295.0 ? 0xffffffffu : (uint32_t)t;
            k = mask_select(h.mask_key, h.mask_threshold, n, idx);
            /* the receiver scales by 1/p: refuse what would overflow there */
            double inv_p = 4294967296.0 / h.mask_threshold;
            for (size_t j = 0; j < k; j++)
                if (!isfinite((float)((double)x[idx[j]] * inv_p)))
                    return fedc_err_set(err, FEDC_ERR_RANGE,
                                        "element %u = %g overflows float when scaled by 1/p = %g",
                                        idx[j], (double)x[idx[j]], inv_p);
        }
        for (size_t j = 0; j < k; j++) vals[j] = x[idx[j]];
        e.v = vals;
    } else {
        e.v = x;
    }
    e.k = k;
    e.idx = idx;
    h.k = k;

    /* 2. groups */
    fedc_codec_groups groups = s->values >= FEDC_VALUES_Q8 ? s->groups : FEDC_GROUPS_WHOLE;
    if (groups == FEDC_GROUPS_TENSOR && !layout) groups = FEDC_GROUPS_WHOLE;
    h.groups = groups;
    h.group_param = groups == FEDC_GROUPS_BLOCK    ? s->block
                    : groups == FEDC_GROUPS_TENSOR ? (uint32_t)layout->count
                                                   : 0;
    size_t nseg = groups == FEDC_GROUPS_TENSOR ? layout->count : 0;
    size_t ngroups = fedci_codec_group_count(groups, h.group_param, k);
    /* tensor ends (uint64) then group bounds (size_t): both aligned */
    uint64_t *seg_end = fedci_codec_reserve(&c->groups, nseg * 8 + (ngroups + 1) * sizeof(size_t));
    if (!seg_end) return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory");
    size_t *gb = (size_t *)(void *)(seg_end + nseg);
    for (size_t t = 0; t < nseg; t++)
        seg_end[t] = (uint64_t)(layout->tensors[t].offset + layout->tensors[t].numel);
    fedci_codec_group_bounds(groups, s->block, seg_end, nseg, idx, k, ngroups, gb);
    e.gb = gb;
    e.ngroups = ngroups;

    /* 3. section sizes */
    uint64_t varint_bytes = 0;
    if (s->sparse == FEDC_SPARSE_TOPK) {
        for (size_t j = 0; j < k; j++)
            varint_bytes += varint_len(j ? idx[j] - idx[j - 1] - 1 : idx[0]);
        uint64_t bitmap = ((uint64_t)n + 7) / 8;
        h.index_format = bitmap < varint_bytes ? 2 : 1;
        h.index_bytes = h.index_format == 2 ? bitmap : varint_bytes;
    }
    uint64_t scale_bytes = (uint64_t)ngroups * fedci_codec_scale_bytes(s->values);
    uint64_t value_bytes = ((uint64_t)k * fedci_codec_value_bits(s->values, h.levels) + 7) / 8;
    h.body_bytes = 8ull * nseg + h.index_bytes + scale_bytes + value_bytes;
    h.stored_bytes = h.body_bytes;
    size_t total = FEDC_CODEC_HEADER_SIZE + (size_t)h.body_bytes;
    uint8_t *m = fedci_codec_reserve(&c->msg, total);
    if (!m) return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory for %zu bytes", total);

    /* 4. body */
    uint8_t *p = m + FEDC_CODEC_HEADER_SIZE;
    for (size_t t = 0; t < nseg; t++, p += 8) fedci_put64(p, layout->tensors[t].numel);
    if (h.index_format == 1) {
        for (size_t j = 0; j < k; j++) p = put_varint(p, j ? idx[j] - idx[j - 1] - 1 : idx[0]);
    } else if (h.index_format == 2) {
        memset(p, 0, (size_t)h.index_bytes);
        for (size_t j = 0; j < k; j++) p[idx[j] >> 3] |= (uint8_t)(1u << (idx[j] & 7));
        p += h.index_bytes;
    }
    e.scales = p;
    e.codes = p + scale_bytes;
    memset(e.codes, 0, (size_t)value_bytes); /* packers OR their bits in; padding stays 0 */
    fedc_status st;
    switch (s->values) {
    case FEDC_VALUES_Q8: st = encode_linear(&e, 255, s->nearest, err); break;
    case FEDC_VALUES_Q4: st = encode_linear(&e, 15, s->nearest, err); break;
    case FEDC_VALUES_QSGD: st = encode_qsgd(&e, s->levels, err); break;
    default: st = encode_float(&e, s->values, err); break;
    }
    if (st != FEDC_OK) return st;
    fedci_codec_header_write(m, &h);
    *raw = m;
    *raw_len = total;
    *msg = m;
    *len = total;

    /* 5. zstd, kept when it helps */
    if (s->zstd_level && h.body_bytes > 0) {
        size_t cap = FEDC_CODEC_HEADER_SIZE + fedci_codec_zstd_bound((size_t)h.body_bytes);
        uint8_t *z = fedci_codec_reserve(&c->zmsg, cap);
        if (!z) return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory for zstd");
        size_t zlen;
        FEDC_TRY(fedci_codec_zstd_compress(c, m + FEDC_CODEC_HEADER_SIZE, (size_t)h.body_bytes,
                                           s->zstd_level, z + FEDC_CODEC_HEADER_SIZE,
                                           cap - FEDC_CODEC_HEADER_SIZE, &zlen, err));
        if (zlen < h.body_bytes) {
            h.flags |= FEDC_CODEC_FLAG_ZSTD;
            h.stored_bytes = zlen;
            fedci_codec_header_write(z, &h);
            *msg = z;
            *len = FEDC_CODEC_HEADER_SIZE + zlen;
        }
    }
    return FEDC_OK;
}

fedc_status fedc_codec_encode(fedc_codec *c, const float *x, size_t n, const fedc_codec_ctx *ctx,
                              const uint8_t **msg, size_t *len, fedc_err *err)
{
    assert(c && x && msg && len);
    const uint8_t *raw;
    size_t raw_len;
    return encode_impl(c, x, n, ctx, 0, 0, &raw, &raw_len, msg, len, err);
}

fedc_status fedc_codec_encode_ef(fedc_codec *c, const float *x, float *residual, size_t n,
                                 const fedc_codec_ctx *ctx, const uint8_t **msg, size_t *len,
                                 fedc_err *err)
{
    assert(c && x && residual && msg && len);
    float *v = fedci_codec_reserve(&c->work, (n ? n : 1) * sizeof(float));
    float *d = fedci_codec_reserve(&c->dec, (n ? n : 1) * sizeof(float));
    if (!v || !d) return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory");
    fedc_vec_add(n, x, residual, v);
    const uint8_t *raw;
    size_t raw_len;
    FEDC_TRY(encode_impl(c, v, n, ctx, 0, 0, &raw, &raw_len, msg, len, err));
    fedc_codec_header h;
    fedc_status st = fedci_codec_decode(c, raw, raw_len, d, n, &h, err);
    if (st != FEDC_OK) return st == FEDC_ERR_NOMEM ? st : FEDC_ERR_INTERNAL;
    fedc_vec_sub(n, v, d, residual);
    return FEDC_OK;
}

fedc_status fedc_codec_encode_delta(fedc_codec *c, const float *x, const float *base,
                                    uint64_t base_version, size_t n, const fedc_codec_ctx *ctx,
                                    const uint8_t **msg, size_t *len, fedc_err *err)
{
    assert(c && x && base && msg && len);
    float *v = fedci_codec_reserve(&c->work, (n ? n : 1) * sizeof(float));
    if (!v) return fedc_err_set(err, FEDC_ERR_NOMEM, "encode: out of memory");
    fedc_vec_sub(n, x, base, v);
    const uint8_t *raw;
    size_t raw_len;
    return encode_impl(c, v, n, ctx, FEDC_CODEC_FLAG_DELTA, base_version, &raw, &raw_len, msg, len,
                       err);
}
