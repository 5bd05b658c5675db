/*
 * Exact model deltas for downloads (docs/COMPRESSION.md, "Exact delta downloads"): the XOR of
 * the float32 bit patterns of a cached model and the current one, optionally split into byte
 * planes (byte 0 of every word, then byte 1, ...) and compressed with zstd. The receiver XORs
 * it back into its cached copy and gets the current model bit for bit: unlike
 * fedc_codec_encode_delta (x - base in floats, inexact), nothing is rounded.
 *
 * Between consecutive global models most weights move by far less than their magnitude, so
 * the XOR's sign and exponent bytes (planes 3 and 2) are nearly all zero and the mantissa's
 * high byte often is: those planes compress to almost nothing.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "codec_internal.h"
#include "fedc/alloc.h"

#define XD_FLAG_ZSTD 1u
#define XD_FLAG_SHUFFLE 2u

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t bits_of(const float *x, size_t i)
{
    uint32_t u;
    memcpy(&u, &x[i], 4);
    return u;
}

static int hex_nibble(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* The 32 bytes of the model's SHA-256 (fedc_vec_sha256_hex), or of a given hex string. */
static void sha_bytes(const float *x, size_t n, const char *hex, uint8_t out[32])
{
    char buf[65];
    if (!hex) {
        fedc_vec_sha256_hex(n, x, buf);
        hex = buf;
    }
    for (int i = 0; i < 32; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        assert(hi >= 0 && lo >= 0); /* a SHA-256 hex string: programmer's input */
        out[i] = (uint8_t)(hi << 4 | lo);
    }
}

static void sha_hex(const uint8_t s[32], char out[65])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = d[s[i] >> 4];
        out[2 * i + 1] = d[s[i] & 15];
    }
    out[64] = '\0';
}

/* model[i] ^= word i of the body (planes or little-endian words) */
static void xor_into(float *model, const uint8_t *body, size_t n, int shuffle)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t d = 0, u;
        for (size_t b = 0; b < 4; b++)
            d |= (uint32_t)(shuffle ? body[b * n + i] : body[4 * i + b]) << (8 * b);
        memcpy(&u, &model[i], 4);
        u ^= d;
        memcpy(&model[i], &u, 4);
    }
}

#define BAD(...) fedc_err_set(err, FEDC_ERR_FORMAT, "model delta: " __VA_ARGS__)
typedef unsigned long long ull;

fedc_status fedc_codec_xdelta_encode(fedc_codec *c, const float *base, const float *x, size_t n,
                                     uint64_t base_version, uint64_t version,
                                     const char *base_sha, const char *sha, unsigned options,
                                     int zstd_level, const uint8_t **msg, size_t *len,
                                     fedc_err *err)
{
    assert(c && base && x && msg && len);
    assert(base_version < version);
    assert(!(options & ~(unsigned)FEDC_XDELTA_SHUFFLE));
    if (n == 0 || (uint64_t)n > FEDC_CODEC_MAX_N)
        return fedc_err_set(err, FEDC_ERR_INVALID, "model delta: %zu elements (1..%llu)", n,
                            (unsigned long long)FEDC_CODEC_MAX_N);
    if (zstd_level < 0 || zstd_level > 19)
        return fedc_err_set(err, FEDC_ERR_INVALID, "model delta: zstd level %d (0..19)",
                            zstd_level);
    size_t raw_len = 4 * n;
    uint8_t *raw = fedci_codec_reserve(&c->work, raw_len);
    if (!raw) return fedc_err_set(err, FEDC_ERR_NOMEM, "model delta: out of memory");
    int shuffle = (options & FEDC_XDELTA_SHUFFLE) != 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t w = bits_of(base, i) ^ bits_of(x, i);
        if (shuffle)
            for (size_t b = 0; b < 4; b++) raw[b * n + i] = (uint8_t)(w >> (8 * b));
        else
            for (size_t b = 0; b < 4; b++) raw[4 * i + b] = (uint8_t)(w >> (8 * b));
    }
    /* the zstd bound is never below raw_len: room for either body */
    size_t cap = FEDC_XDELTA_HEADER_SIZE + (zstd_level ? fedci_codec_zstd_bound(raw_len) : raw_len);
    uint8_t *m = fedci_codec_reserve(&c->msg, cap);
    if (!m) return fedc_err_set(err, FEDC_ERR_NOMEM, "model delta: out of memory");
    unsigned flags = shuffle ? XD_FLAG_SHUFFLE : 0;
    size_t stored = raw_len;
    if (zstd_level) {
        size_t z;
        FEDC_TRY(fedci_codec_zstd_compress(c, raw, raw_len, zstd_level,
                                           m + FEDC_XDELTA_HEADER_SIZE,
                                           cap - FEDC_XDELTA_HEADER_SIZE, &z, err));
        if (z < raw_len) {
            flags |= XD_FLAG_ZSTD;
            stored = z;
        }
    }
    if (!(flags & XD_FLAG_ZSTD)) memcpy(m + FEDC_XDELTA_HEADER_SIZE, raw, raw_len);
    memset(m, 0, FEDC_XDELTA_HEADER_SIZE);
    memcpy(m, FEDC_XDELTA_MAGIC, 4);
    m[4] = FEDC_XDELTA_FORMAT_VERSION;
    m[5] = (uint8_t)flags;
    put64(m + 8, n);
    put64(m + 16, base_version);
    put64(m + 24, version);
    put64(m + 32, stored);
    sha_bytes(base, n, base_sha, m + 40);
    sha_bytes(x, n, sha, m + 72);
    *msg = m;
    *len = FEDC_XDELTA_HEADER_SIZE + stored;
    return FEDC_OK;
}

fedc_status fedc_codec_xdelta_peek(const uint8_t *msg, size_t len, fedc_xdelta_header *h,
                                   fedc_err *err)
{
    assert(h && (msg || len == 0));
    if (len < FEDC_XDELTA_HEADER_SIZE)
        return BAD("%zu bytes, shorter than the %d-byte header", len, FEDC_XDELTA_HEADER_SIZE);
    if (memcmp(msg, FEDC_XDELTA_MAGIC, 4) != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "model delta: magic at offset 0 is not \"" FEDC_XDELTA_MAGIC "\"");
    if (msg[4] != FEDC_XDELTA_FORMAT_VERSION)
        return BAD("format version %u at offset 4 (this reader knows %d)", msg[4],
                   FEDC_XDELTA_FORMAT_VERSION);
    if (msg[5] & ~(XD_FLAG_ZSTD | XD_FLAG_SHUFFLE))
        return BAD("unknown flags 0x%x at offset 5", msg[5]);
    if (msg[6] || msg[7]) return BAD("reserved bytes at offset 6-7 are not 0");
    memset(h, 0, sizeof *h);
    h->version = msg[4];
    h->zstd = (msg[5] & XD_FLAG_ZSTD) != 0;
    h->shuffle = (msg[5] & XD_FLAG_SHUFFLE) != 0;
    h->n = get64(msg + 8);
    h->base_version = get64(msg + 16);
    h->model_version = get64(msg + 24);
    h->stored_bytes = get64(msg + 32);
    sha_hex(msg + 40, h->base_sha256);
    sha_hex(msg + 72, h->sha256);
    if (h->n == 0 || h->n > FEDC_CODEC_MAX_N)
        return BAD("element count %llu at offset 8 is outside 1..%llu", (ull)h->n,
                   (ull)FEDC_CODEC_MAX_N);
    if (h->base_version >= h->model_version)
        return BAD("base version %llu (offset 16) is not below the model version %llu",
                   (ull)h->base_version, (ull)h->model_version);
    if (h->stored_bytes != len - FEDC_XDELTA_HEADER_SIZE)
        return BAD("stored bytes %llu at offset 32, but %zu bytes follow the header",
                   (ull)h->stored_bytes, len - FEDC_XDELTA_HEADER_SIZE);
    if (!h->zstd && h->stored_bytes != 4 * h->n)
        return BAD("an uncompressed body of %llu bytes for %llu elements (4 bytes each)",
                   (ull)h->stored_bytes, (ull)h->n);
    return FEDC_OK;
}

fedc_status fedc_codec_xdelta_apply(fedc_codec *c, const uint8_t *msg, size_t len, float *model,
                                    size_t n, uint64_t base_version, char sha[65], fedc_err *err)
{
    assert(c && model);
    fedc_xdelta_header h;
    FEDC_TRY(fedc_codec_xdelta_peek(msg, len, &h, err));
    if (h.n != n)
        return BAD("of %llu elements, the cached model has %zu", (ull)h.n, n);
    if (h.base_version != base_version)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "model delta: against version %llu, the cached model is version %llu",
                            (unsigned long long)h.base_version,
                            (unsigned long long)base_version);
    char have[65];
    fedc_vec_sha256_hex(n, model, have);
    if (strcmp(have, h.base_sha256) != 0)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "model delta: against a version %llu with SHA-256 %.16s..., the "
                            "cached one has %.16s...",
                            (unsigned long long)base_version, h.base_sha256, have);
    const uint8_t *body = msg + FEDC_XDELTA_HEADER_SIZE;
    size_t raw_len = 4 * n;
    if (h.zstd) {
        size_t got;
        fedc_err zerr;
        fedc_status st =
            fedc_codec_zstd_decompress(c, body, (size_t)h.stored_bytes, raw_len, &body, &got, &zerr);
        if (st == FEDC_ERR_NOMEM) return fedc_err_set(err, st, "model delta: out of memory");
        if (st != FEDC_OK)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "model delta: body at offset %d: %s",
                                FEDC_XDELTA_HEADER_SIZE, fedc_err_message(&zerr));
        if (got != raw_len)
            return BAD("the body decompresses to %zu bytes, expected %zu", got, raw_len);
    }
    xor_into(model, body, n, h.shuffle);
    /* the result must be the announced model, and finite; otherwise undo: XOR is its own
     * inverse, so the cache is left as it was */
    char got_sha[65];
    fedc_vec_sha256_hex(n, model, got_sha);
    fedc_status st = FEDC_OK;
    if (strcmp(got_sha, h.sha256) != 0)
        st = fedc_err_set(err, FEDC_ERR_FORMAT,
                          "model delta: the result hashes to %.16s..., the delta announces "
                          "%.16s...",
                          got_sha, h.sha256);
    for (size_t i = 0; st == FEDC_OK && i < n; i++)
        if (!(model[i] - model[i] == 0.0f))
            st = fedc_err_set(err, FEDC_ERR_FORMAT,
                              "model delta: element %zu of the result is not finite", i);
    if (st != FEDC_OK) {
        xor_into(model, body, n, h.shuffle);
        return st;
    }
    if (sha) memcpy(sha, got_sha, 65);
    return FEDC_OK;
}
