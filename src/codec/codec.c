/*
 * The codec workspace (create/destroy, buffers), the message header (write, read and check),
 * and zstd through fedc_malloc. The byte format is specified in docs/COMPRESSION.md; the
 * header's field offsets below are that specification.
 */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem: zstd allocates through fedc_malloc */
#include <zstd.h>
#include <zstd_errors.h>

#include "codec/codec_internal.h"
#include "fedc/alloc.h"
#include "fedc/rng.h"

/* Header field offsets (docs/COMPRESSION.md, "Message format"). */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_FLAGS = 5,
    OFF_SPARSE = 6,
    OFF_VALUES = 7,
    OFF_GROUPS = 8,
    OFF_INDEX_FORMAT = 9,
    OFF_LEVELS = 10,
    OFF_GROUP_PARAM = 12,
    OFF_N = 16,
    OFF_K = 24,
    OFF_MASK_KEY = 32,
    OFF_MASK_THRESHOLD = 40,
    OFF_RESERVED = 44,
    OFF_MODEL_VERSION = 48,
    OFF_BASE_VERSION = 56,
    OFF_INDEX_BYTES = 64,
    OFF_BODY_BYTES = 72,
    OFF_STORED_BYTES = 80
};

void *fedci_codec_reserve(fedci_codec_buf *b, size_t bytes)
{
    if (bytes <= b->cap && b->p) return b->p;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < bytes) cap = cap > SIZE_MAX / 2 ? bytes : cap * 2;
    void *p = fedc_malloc(cap); /* contents need not survive: no realloc copy */
    if (!p) return NULL;
    fedc_free(b->p);
    b->p = p;
    b->cap = cap;
    return p;
}

static void buf_free(fedci_codec_buf *b)
{
    fedc_free(b->p);
    b->p = NULL;
    b->cap = 0;
}

static int spec_valid(const fedc_codec_spec *s)
{
    if ((unsigned)s->sparse > FEDC_SPARSE_MASK || (unsigned)s->values > FEDC_VALUES_QSGD ||
        (unsigned)s->groups > FEDC_GROUPS_TENSOR)
        return 0;
    if (s->sparse == FEDC_SPARSE_TOPK && s->count == 0 && !(s->fraction > 0 && s->fraction <= 1))
        return 0;
    if (s->sparse == FEDC_SPARSE_MASK && !(s->fraction > 0 && s->fraction < 1)) return 0;
    if (s->values >= FEDC_VALUES_Q8 && s->groups == FEDC_GROUPS_BLOCK &&
        (s->block < 1 || s->block > 0x7fffffffu))
        return 0;
    if (s->values == FEDC_VALUES_QSGD && (s->levels < 1 || s->levels > 32767)) return 0;
    if (s->zstd_level < 0 || s->zstd_level > 19) return 0;
    return 1;
}

fedc_status fedc_codec_create(const fedc_codec_spec *spec, fedc_codec **out, fedc_err *err)
{
    assert(spec && out);
    *out = NULL;
    if (!spec_valid(spec))
        return fedc_err_set(err, FEDC_ERR_INVALID, "codec: spec fields out of range");
    fedc_codec *c = fedc_calloc(1, sizeof *c);
    if (!c) return fedc_err_set(err, FEDC_ERR_NOMEM, "codec: out of memory");
    c->spec = *spec;
    if (c->spec.values < FEDC_VALUES_Q8) c->spec.groups = FEDC_GROUPS_WHOLE;
    fedc_codec_format(&c->spec, c->name, sizeof c->name);
    *out = c;
    return FEDC_OK;
}

fedc_status fedc_codec_create_str(const char *spec, fedc_codec **out, fedc_err *err)
{
    assert(out);
    *out = NULL;
    fedc_codec_spec s;
    FEDC_TRY(fedc_codec_parse(spec, &s, err));
    return fedc_codec_create(&s, out, err);
}

void fedc_codec_destroy(fedc_codec *c)
{
    if (!c) return;
    buf_free(&c->msg);
    buf_free(&c->zmsg);
    buf_free(&c->idx);
    buf_free(&c->cand);
    buf_free(&c->vals);
    buf_free(&c->work);
    buf_free(&c->dec);
    buf_free(&c->groups);
    buf_free(&c->body);
    buf_free(&c->zout);
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    fedc_free(c);
}

const fedc_codec_spec *fedc_codec_get_spec(const fedc_codec *c) { return &c->spec; }
const char *fedc_codec_name(const fedc_codec *c) { return c->name; }

unsigned fedci_codec_value_bits(fedc_codec_values v, unsigned levels)
{
    switch (v) {
    case FEDC_VALUES_F32: return 32;
    case FEDC_VALUES_F16:
    case FEDC_VALUES_BF16: return 16;
    case FEDC_VALUES_Q8: return 8;
    case FEDC_VALUES_Q4: return 4;
    case FEDC_VALUES_QSGD: {
        unsigned b = 0;
        while ((1u << b) < levels + 1u) b++;
        return 1 + b;
    }
    }
    return 0;
}

unsigned fedci_codec_scale_bytes(fedc_codec_values v)
{
    return v == FEDC_VALUES_Q8 || v == FEDC_VALUES_Q4 ? 8 : v == FEDC_VALUES_QSGD ? 4 : 0;
}

/* ---- zstd through fedc_malloc ---- */

static void *zalloc(void *opaque, size_t size)
{
    (void)opaque;
    return fedc_malloc(size);
}
static void zfree(void *opaque, void *p)
{
    (void)opaque;
    fedc_free(p);
}
static const ZSTD_customMem zmem = {zalloc, zfree, NULL};

size_t fedci_codec_zstd_bound(size_t len) { return ZSTD_compressBound(len); }

fedc_status fedci_codec_zstd_compress(fedc_codec *c, const void *src, size_t len, int level,
                                      void *dst, size_t cap, size_t *out_len, fedc_err *err)
{
    if (!c->cctx && !(c->cctx = ZSTD_createCCtx_advanced(zmem)))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "zstd: out of memory");
    size_t r = ZSTD_compressCCtx(c->cctx, dst, cap, src, len, level);
    if (ZSTD_isError(r)) {
        /* allocation failures inside zstd surface as memory_allocation errors */
        fedc_status st = ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? FEDC_ERR_NOMEM
                                                                              : FEDC_ERR_INTERNAL;
        return fedc_err_set(err, st, "zstd compress: %s", ZSTD_getErrorName(r));
    }
    *out_len = r;
    return FEDC_OK;
}

/* Decompresses one frame of exactly `expect` bytes into dst. */
static fedc_status zstd_decompress_exact(fedc_codec *c, const void *src, size_t len, void *dst,
                                         size_t expect, size_t offset, fedc_err *err)
{
    unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "zstd body at offset %zu: not a zstd frame",
                            offset);
    if (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != expect)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "zstd body at offset %zu: frame declares %llu bytes, header body "
                            "size says %zu",
                            offset, declared, expect);
    if (!c->dctx && !(c->dctx = ZSTD_createDCtx_advanced(zmem)))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "zstd: out of memory");
    size_t r = ZSTD_decompressDCtx(c->dctx, dst, expect, src, len);
    if (ZSTD_isError(r)) {
        if (ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
            return fedc_err_set(err, FEDC_ERR_NOMEM, "zstd: out of memory");
        return fedc_err_set(err, FEDC_ERR_FORMAT, "zstd body at offset %zu: %s", offset,
                            ZSTD_getErrorName(r));
    }
    if (r != expect)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "zstd body at offset %zu: %zu bytes, header body size says %zu", offset,
                            r, expect);
    return FEDC_OK;
}

fedc_status fedc_codec_zstd_compress(fedc_codec *c, const void *src, size_t len, int level,
                                     const uint8_t **out, size_t *out_len, fedc_err *err)
{
    assert(c && (src || len == 0) && out && out_len);
    if (level < 1 || level > 19)
        return fedc_err_set(err, FEDC_ERR_INVALID, "zstd level %d is outside 1..19", level);
    size_t cap = ZSTD_compressBound(len);
    void *dst = fedci_codec_reserve(&c->zout, cap);
    if (!dst) return fedc_err_set(err, FEDC_ERR_NOMEM, "zstd: out of memory");
    FEDC_TRY(fedci_codec_zstd_compress(c, src, len, level, dst, cap, out_len, err));
    *out = dst;
    return FEDC_OK;
}

fedc_status fedc_codec_zstd_decompress(fedc_codec *c, const void *src, size_t len, size_t max_len,
                                       const uint8_t **out, size_t *out_len, fedc_err *err)
{
    assert(c && (src || len == 0) && out && out_len);
    unsigned long long declared = ZSTD_getFrameContentSize(src, len);
    if (declared == ZSTD_CONTENTSIZE_ERROR)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "zstd: not a zstd frame");
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "zstd: the frame does not declare its size");
    if (declared > max_len)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "zstd: the frame declares %llu bytes, more than the limit %zu",
                            declared, max_len);
    void *dst = fedci_codec_reserve(&c->zout, declared ? (size_t)declared : 1);
    if (!dst) return fedc_err_set(err, FEDC_ERR_NOMEM, "zstd: out of memory");
    FEDC_TRY(zstd_decompress_exact(c, src, len, dst, (size_t)declared, 0, err));
    *out = dst;
    *out_len = (size_t)declared;
    return FEDC_OK;
}

/* ---- header ---- */

void fedci_codec_header_write(uint8_t *p, const fedc_codec_header *h)
{
    memset(p, 0, FEDC_CODEC_HEADER_SIZE);
    memcpy(p + OFF_MAGIC, FEDC_CODEC_MAGIC, 4);
    p[OFF_VERSION] = (uint8_t)h->version;
    p[OFF_FLAGS] = (uint8_t)h->flags;
    p[OFF_SPARSE] = (uint8_t)h->sparse;
    p[OFF_VALUES] = (uint8_t)h->values;
    p[OFF_GROUPS] = (uint8_t)h->groups;
    p[OFF_INDEX_FORMAT] = (uint8_t)h->index_format;
    p[OFF_LEVELS] = (uint8_t)h->levels;
    p[OFF_LEVELS + 1] = (uint8_t)(h->levels >> 8);
    fedci_put32(p + OFF_GROUP_PARAM, h->group_param);
    fedci_put64(p + OFF_N, h->n);
    fedci_put64(p + OFF_K, h->k);
    fedci_put64(p + OFF_MASK_KEY, h->mask_key);
    fedci_put32(p + OFF_MASK_THRESHOLD, h->mask_threshold);
    fedci_put64(p + OFF_MODEL_VERSION, h->model_version);
    fedci_put64(p + OFF_BASE_VERSION, h->base_version);
    fedci_put64(p + OFF_INDEX_BYTES, h->index_bytes);
    fedci_put64(p + OFF_BODY_BYTES, h->body_bytes);
    fedci_put64(p + OFF_STORED_BYTES, h->stored_bytes);
}

fedc_status fedci_codec_bad(fedc_err *err, const char *fmt, ...)
{
    char buf[FEDC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return fedc_err_set(err, FEDC_ERR_FORMAT, "codec message: %s", buf);
}

/* Sum with overflow check: returns 0 on overflow. */
static int add_ok(uint64_t *acc, uint64_t v)
{
    if (*acc > UINT64_MAX - v) return 0;
    *acc += v;
    return 1;
}

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

fedc_status fedc_codec_peek(const uint8_t *p, size_t len, fedc_codec_header *h, fedc_err *err)
{
    assert(h && (p || len == 0));
    memset(h, 0, sizeof *h);
    if (len < FEDC_CODEC_HEADER_SIZE)
        return fedci_codec_bad(err, "%zu bytes: shorter than the %d-byte header", len,
                               FEDC_CODEC_HEADER_SIZE);
    if (memcmp(p + OFF_MAGIC, FEDC_CODEC_MAGIC, 4) != 0)
        return fedci_codec_bad(err, "magic at offset 0: not \"FCDC\" (%02x %02x %02x %02x)", p[0],
                               p[1], p[2], p[3]);
    h->version = p[OFF_VERSION];
    if (h->version != FEDC_CODEC_FORMAT_VERSION)
        return fedci_codec_bad(err, "version at offset %d: %u, this build reads version %d",
                               OFF_VERSION, h->version, FEDC_CODEC_FORMAT_VERSION);
    h->flags = p[OFF_FLAGS];
    if (h->flags & ~(FEDC_CODEC_FLAG_ZSTD | FEDC_CODEC_FLAG_DELTA))
        return fedci_codec_bad(err, "flags at offset %d: unknown bits 0x%02x", OFF_FLAGS, h->flags);
    unsigned sparse = p[OFF_SPARSE], values = p[OFF_VALUES], groups = p[OFF_GROUPS];
    if (sparse > FEDC_SPARSE_MASK)
        return fedci_codec_bad(
            err, "sparsifier id at offset %d: %u is not 0 (none), 1 (topk) or 2 (mask)", OFF_SPARSE,
            sparse);
    if (values > FEDC_VALUES_QSGD)
        return fedci_codec_bad(err, "value coding id at offset %d: %u is not in 0..5", OFF_VALUES,
                               values);
    if (groups > FEDC_GROUPS_TENSOR)
        return fedci_codec_bad(err, "groups id at offset %d: %u is not in 0..2", OFF_GROUPS,
                               groups);
    h->sparse = (fedc_codec_sparse)sparse;
    h->values = (fedc_codec_values)values;
    h->groups = (fedc_codec_groups)groups;
    h->index_format = p[OFF_INDEX_FORMAT];
    h->levels = (unsigned)p[OFF_LEVELS] | (unsigned)p[OFF_LEVELS + 1] << 8;
    h->group_param = fedci_get32(p + OFF_GROUP_PARAM);
    h->n = fedci_get64(p + OFF_N);
    h->k = fedci_get64(p + OFF_K);
    h->mask_key = fedci_get64(p + OFF_MASK_KEY);
    h->mask_threshold = fedci_get32(p + OFF_MASK_THRESHOLD);
    h->model_version = fedci_get64(p + OFF_MODEL_VERSION);
    h->base_version = fedci_get64(p + OFF_BASE_VERSION);
    h->index_bytes = fedci_get64(p + OFF_INDEX_BYTES);
    h->body_bytes = fedci_get64(p + OFF_BODY_BYTES);
    h->stored_bytes = fedci_get64(p + OFF_STORED_BYTES);

    if (h->n == 0 || h->n > FEDC_CODEC_MAX_N)
        return fedci_codec_bad(err, "element count n at offset %d: %llu is outside 1..%llu", OFF_N,
                               (unsigned long long)h->n, (unsigned long long)FEDC_CODEC_MAX_N);
    if (h->sparse == FEDC_SPARSE_NONE ? h->k != h->n : h->k > h->n)
        return fedci_codec_bad(err, "value count k at offset %d: %llu %s n = %llu", OFF_K,
                               (unsigned long long)h->k, h->sparse == FEDC_SPARSE_NONE ? "!=" : ">",
                               (unsigned long long)h->n);
    /* levels */
    unsigned want_levels = h->values == FEDC_VALUES_Q8 ? 255 : h->values == FEDC_VALUES_Q4 ? 15 : 0;
    if (h->values == FEDC_VALUES_QSGD ? (h->levels < 1 || h->levels > 32767)
                                      : h->levels != want_levels)
        return fedci_codec_bad(err, "levels at offset %d: %u, expected %s", OFF_LEVELS, h->levels,
                               h->values == FEDC_VALUES_QSGD ? "1..32767"
                               : want_levels == 255          ? "255 for q8"
                               : want_levels == 15           ? "15 for q4"
                                                             : "0 for float values");
    /* groups */
    if (h->values < FEDC_VALUES_Q8 && h->groups != FEDC_GROUPS_WHOLE)
        return fedci_codec_bad(err, "groups id at offset %d: %u, float values have no groups (0)",
                               OFF_GROUPS, groups);
    if (h->groups == FEDC_GROUPS_WHOLE && h->group_param != 0)
        return fedci_codec_bad(
            err, "group parameter at offset %d: %u, must be 0 for whole-vector groups",
            OFF_GROUP_PARAM, h->group_param);
    if (h->groups == FEDC_GROUPS_BLOCK && (h->group_param < 1 || h->group_param > 0x7fffffffu))
        return fedci_codec_bad(err, "block size at offset %d: %u is outside 1..2147483647",
                               OFF_GROUP_PARAM, h->group_param);
    if (h->groups == FEDC_GROUPS_TENSOR && (h->group_param < 1 || h->group_param > h->n))
        return fedci_codec_bad(err, "tensor count at offset %d: %u is outside 1..n (%llu)",
                               OFF_GROUP_PARAM, h->group_param, (unsigned long long)h->n);
    /* sparsifier fields */
    if (h->sparse == FEDC_SPARSE_TOPK ? (h->index_format < 1 || h->index_format > 2)
                                      : h->index_format != 0)
        return fedci_codec_bad(
            err, "index format at offset %d: %u, expected %s", OFF_INDEX_FORMAT, h->index_format,
            h->sparse == FEDC_SPARSE_TOPK ? "1 (varint gaps) or 2 (bitmap)" : "0");
    if (h->sparse == FEDC_SPARSE_MASK ? h->mask_threshold == 0
                                      : (h->mask_key != 0 || h->mask_threshold != 0))
        return fedci_codec_bad(
            err, "mask %s at offset %d: %s", h->sparse == FEDC_SPARSE_MASK ? "threshold" : "fields",
            h->sparse == FEDC_SPARSE_MASK ? OFF_MASK_THRESHOLD : OFF_MASK_KEY,
            h->sparse == FEDC_SPARSE_MASK ? "0 would keep nothing" : "must be 0 without a mask");
    if (fedci_get32(p + OFF_RESERVED) != 0)
        return fedci_codec_bad(err, "reserved field at offset %d: not 0", OFF_RESERVED);
    if (!(h->flags & FEDC_CODEC_FLAG_DELTA) && h->base_version != 0)
        return fedci_codec_bad(err, "base version at offset %d: %llu without the delta flag",
                               OFF_BASE_VERSION, (unsigned long long)h->base_version);
    uint64_t want_index = 0;
    if (h->sparse == FEDC_SPARSE_TOPK) {
        if (h->index_format == 2) {
            want_index = (h->n + 7) / 8;
            if (h->index_bytes != want_index)
                return fedci_codec_bad(
                    err, "index bytes at offset %d: %llu, a bitmap of n = %llu takes %llu",
                    OFF_INDEX_BYTES, (unsigned long long)h->index_bytes, (unsigned long long)h->n,
                    (unsigned long long)want_index);
        } else if (h->index_bytes < h->k || h->index_bytes > 5 * h->k) {
            return fedci_codec_bad(
                err, "index bytes at offset %d: %llu, %llu varint gaps take %llu..%llu",
                OFF_INDEX_BYTES, (unsigned long long)h->index_bytes, (unsigned long long)h->k,
                (unsigned long long)h->k, (unsigned long long)(5 * h->k));
        }
        want_index = h->index_bytes;
    } else if (h->index_bytes != 0) {
        return fedci_codec_bad(err, "index bytes at offset %d: %llu without top-k indices",
                               OFF_INDEX_BYTES, (unsigned long long)h->index_bytes);
    }
    /* the body's size follows from the fields above */
    uint64_t ngroups = h->groups == FEDC_GROUPS_WHOLE ? 1
                       : h->groups == FEDC_GROUPS_TENSOR
                           ? h->group_param
                           : (h->k + h->group_param - 1) / h->group_param;
    uint64_t body = 0, t;
    int ok = 1;
    if (h->groups == FEDC_GROUPS_TENSOR) ok &= add_ok(&body, 8ull * h->group_param);
    ok &= add_ok(&body, want_index);
    ok &= mul_ok(ngroups, fedci_codec_scale_bytes(h->values), &t) && add_ok(&body, t);
    ok &= mul_ok(h->k, fedci_codec_value_bits(h->values, h->levels), &t) &&
          add_ok(&body, (t + 7) / 8);
    if (!ok || h->body_bytes != body)
        return fedci_codec_bad(err, "body bytes at offset %d: %llu, the header's sizes give %llu",
                               OFF_BODY_BYTES, (unsigned long long)h->body_bytes,
                               (unsigned long long)body);
    if (h->flags & FEDC_CODEC_FLAG_ZSTD) {
        if (h->stored_bytes == 0 || h->stored_bytes > fedci_codec_zstd_bound(h->body_bytes))
            return fedci_codec_bad(
                err,
                "stored bytes at offset %d: %llu, a zstd frame of %llu bytes takes "
                "1..%zu",
                OFF_STORED_BYTES, (unsigned long long)h->stored_bytes,
                (unsigned long long)h->body_bytes, fedci_codec_zstd_bound(h->body_bytes));
    } else if (h->stored_bytes != h->body_bytes) {
        return fedci_codec_bad(err,
                               "stored bytes at offset %d: %llu != body bytes %llu without zstd",
                               OFF_STORED_BYTES, (unsigned long long)h->stored_bytes,
                               (unsigned long long)h->body_bytes);
    }
    if (h->stored_bytes != (uint64_t)(len - FEDC_CODEC_HEADER_SIZE))
        return fedci_codec_bad(
            err, "stored bytes at offset %d: %llu, but %zu bytes follow the header",
            OFF_STORED_BYTES, (unsigned long long)h->stored_bytes, len - FEDC_CODEC_HEADER_SIZE);
    return FEDC_OK;
}

fedc_status fedci_codec_body(fedc_codec *c, const uint8_t *msg, const fedc_codec_header *h,
                             const uint8_t **body, fedc_err *err)
{
    if (!(h->flags & FEDC_CODEC_FLAG_ZSTD)) {
        *body = msg + FEDC_CODEC_HEADER_SIZE;
        return FEDC_OK;
    }
    void *dst = fedci_codec_reserve(&c->body, h->body_bytes ? (size_t)h->body_bytes : 1);
    if (!dst) return fedc_err_set(err, FEDC_ERR_NOMEM, "codec: out of memory for the body");
    fedc_status st = zstd_decompress_exact(c, msg + FEDC_CODEC_HEADER_SIZE, (size_t)h->stored_bytes,
                                           dst, (size_t)h->body_bytes, FEDC_CODEC_HEADER_SIZE, err);
    if (st != FEDC_OK) {
        if (st == FEDC_ERR_FORMAT) fedc_err_prefix(err, "codec message: ");
        return st;
    }
    *body = dst;
    return FEDC_OK;
}

/* ---- groups and random words ---- */

size_t fedci_codec_group_count(fedc_codec_groups groups, uint32_t param, size_t k)
{
    switch (groups) {
    case FEDC_GROUPS_WHOLE: return 1;
    case FEDC_GROUPS_TENSOR: return param;
    case FEDC_GROUPS_BLOCK: return k / param + (k % param != 0);
    }
    return 0;
}

void fedci_codec_group_bounds(fedc_codec_groups groups, uint32_t block, const uint64_t *seg_end,
                              size_t nseg, const uint32_t *idx, size_t k, size_t ngroups,
                              size_t *gb)
{
    gb[0] = 0;
    if (groups == FEDC_GROUPS_WHOLE) {
        gb[1] = k;
    } else if (groups == FEDC_GROUPS_BLOCK) {
        for (size_t g = 1; g <= ngroups; g++) gb[g] = g == ngroups ? k : g * (size_t)block;
    } else {
        size_t j = 0;
        for (size_t t = 0; t < nseg; t++) {
            if (!idx)
                j = (size_t)seg_end[t];
            else
                while (j < k && idx[j] < seg_end[t]) j++;
            gb[t + 1] = j;
        }
    }
}

static inline uint64_t splitmix64(uint64_t key, uint64_t i)
{
    uint64_t z = key + (i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fedci_codec_words(uint64_t key, uint64_t j0, size_t m, uint32_t *w)
{
    size_t o = 0;
    uint64_t i = j0 >> 1;
    if ((j0 & 1) && m) { /* start on a high half */
        w[o++] = (uint32_t)(splitmix64(key, i) >> 32);
        i++;
    }
    for (; o + 1 < m; o += 2, i++) {
        uint64_t z = splitmix64(key, i);
        w[o] = (uint32_t)z;
        w[o + 1] = (uint32_t)(z >> 32);
    }
    if (o < m) w[o] = (uint32_t)splitmix64(key, i);
}

/* ---- bulk float16 conversion: F16C where the CPU has it (same bits as the scalar code:
 * round to nearest even, subnormals kept) ---- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#define HAVE_F16C_PATH 1

/* 1 when the CPU has F16C and AVX and the OS saves YMM registers (cached; cpuid may trap to a
 * hypervisor). */
static int have_f16c(void)
{
    static atomic_int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v >= 0) return v;
    unsigned a, b, c, d;
    v = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && (c & bit_AVX) && (c & bit_OSXSAVE)) {
        unsigned lo, hi;
        __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        v = (lo & 6) == 6;
    }
    atomic_store_explicit(&cached, v, memory_order_relaxed);
    return v;
}
__attribute__((target("avx,f16c"))) static void to_f16_f16c(const float *x, size_t n, uint8_t *out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(out + 2 * i), h);
    }
    for (; i < n; i++) {
        uint16_t h = fedci_f32_to_f16(x[i]);
        out[2 * i] = (uint8_t)h;
        out[2 * i + 1] = (uint8_t)(h >> 8);
    }
}
__attribute__((target("avx,f16c"))) static void from_f16_f16c(const uint8_t *p, size_t n,
                                                              float *out)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i))));
    for (; i < n; i++) out[i] = fedci_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
}
#endif

void fedci_codec_to_f16(const float *x, size_t n, uint8_t *out)
{
#ifdef HAVE_F16C_PATH
    if (have_f16c()) {
        to_f16_f16c(x, n, out);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) {
        uint16_t h = fedci_f32_to_f16(x[i]);
        out[2 * i] = (uint8_t)h;
        out[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

void fedci_codec_from_f16(const uint8_t *p, size_t n, float *out)
{
#ifdef HAVE_F16C_PATH
    if (have_f16c()) {
        from_f16_f16c(p, n, out);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        out[i] = fedci_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
}
