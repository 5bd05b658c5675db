/*
 * The decoder: checks every section of a message against its header and against itself
 * (segment sizes, indices, scales, levels, padding, finiteness) and refuses anything
 * inconsistent with FEDC_ERR_FORMAT naming the field and its offset in the body. Nothing in
 * a message is trusted before it is checked; allocations are bounded by the receiver's n.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "codec/codec_internal.h"
#include "fedc/alloc.h"

#define CHUNK 1024

/* Reads the top-k index section into idx (k entries). */
static fedc_status read_indices(const fedc_codec_header *h, const uint8_t *p, size_t off,
                                uint32_t *idx, fedc_err *err)
{
    size_t k = (size_t)h->k, nb = (size_t)h->index_bytes;
    uint64_t n = h->n;
    if (h->index_format == 2) { /* bitmap */
        size_t m = 0;
        for (size_t b = 0; b < nb; b++) {
            unsigned byte = p[b];
            while (byte) {
                unsigned bit = (unsigned)__builtin_ctz(byte);
                uint64_t i = (uint64_t)b * 8 + bit;
                if (i >= n)
                    return fedci_codec_bad(
                        err, "index bitmap at body offset %zu: bit %llu set, n = %llu", off + b,
                        (unsigned long long)i, (unsigned long long)n);
                if (m == k)
                    return fedci_codec_bad(
                        err, "index bitmap at body offset %zu: more than k = %zu bits set", off + b,
                        k);
                idx[m++] = (uint32_t)i;
                byte &= byte - 1;
            }
        }
        if (m != k)
            return fedci_codec_bad(err, "index bitmap at body offset %zu: %zu bits set, k = %zu",
                                   off, m, k);
        return FEDC_OK;
    }
    size_t pos = 0;
    uint64_t prev = 0;
    for (size_t j = 0; j < k; j++) {
        uint64_t gap = 0;
        size_t start = pos;
        for (unsigned shift = 0;; shift += 7) {
            if (pos >= nb)
                return fedci_codec_bad(
                    err,
                    "index %zu at body offset %zu: varint runs past the %zu-byte "
                    "index section",
                    j, off + start, nb);
            if (shift == 35)
                return fedci_codec_bad(err,
                                       "index %zu at body offset %zu: varint longer than 5 bytes",
                                       j, off + start);
            uint8_t byte = p[pos++];
            gap |= (uint64_t)(byte & 0x7f) << shift;
            if (!(byte & 0x80)) break;
        }
        uint64_t i = j ? prev + 1 + gap : gap;
        if (i >= n)
            return fedci_codec_bad(err, "index %zu at body offset %zu: %llu is >= n = %llu", j,
                                   off + start, (unsigned long long)i, (unsigned long long)n);
        idx[j] = (uint32_t)i;
        prev = i;
    }
    if (pos != nb)
        return fedci_codec_bad(err,
                               "index section at body offset %zu: %zu bytes left after %zu indices",
                               off + pos, nb - pos, k);
    return FEDC_OK;
}

/* Re-derives the mask's indices; their count must be k. */
static fedc_status mask_indices(const fedc_codec_header *h, uint32_t *idx, fedc_err *err)
{
    uint32_t w[CHUNK];
    size_t m = 0, n = (size_t)h->n, k = (size_t)h->k;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t len = n - i0 < CHUNK ? n - i0 : CHUNK;
        fedci_codec_words(h->mask_key, i0, len, w);
        for (size_t j = 0; j < len; j++) {
            if (w[j] < h->mask_threshold) {
                if (m == k) goto mismatch;
                idx[m++] = (uint32_t)(i0 + j);
            }
        }
    }
    if (m == k) return FEDC_OK;
mismatch:
    return fedci_codec_bad(err,
                           "value count k at offset 24: %zu, the mask (key at offset 32, threshold "
                           "at offset 40) keeps %s%zu",
                           k, m == k ? "more than " : "", m);
}

/* value = min + code * step, kept in [min, max] (rounding could step past max). */
static inline float dequant_one(unsigned q, float mn, float mx, float step)
{
    float v = mn + (float)q * step;
    return v < mx ? v : mx;
}

static void dequant8(const uint8_t *restrict p, size_t len, float mn, float mx, float step,
                     float *restrict out)
{
    size_t t = 0;
    for (; t + 16 <= len; t += 16) /* fixed trip count: vectorized at -O2 */
        for (size_t l = 0; l < 16; l++) out[t + l] = dequant_one(p[t + l], mn, mx, step);
    for (; t < len; t++) out[t] = dequant_one(p[t], mn, mx, step);
}

/* Values a..b-1 of a 4-bit section (value j: low nibble of byte j/2 when j is even). */
static void dequant4(const uint8_t *restrict p, size_t a, size_t b, float mn, float mx, float step,
                     float *restrict out)
{
    size_t j = a;
    if (j < b && (j & 1)) {
        out[j] = dequant_one(p[j >> 1] >> 4, mn, mx, step);
        j++;
    }
    for (; j + 32 <= b; j += 32) {
        const uint8_t *q = p + (j >> 1);
        for (size_t l = 0; l < 16; l++) {
            out[j + 2 * l] = dequant_one(q[l] & 15u, mn, mx, step);
            out[j + 2 * l + 1] = dequant_one(q[l] >> 4, mn, mx, step);
        }
    }
    for (; j < b; j++) out[j] = dequant_one((p[j >> 1] >> ((j & 1) * 4)) & 15u, mn, mx, step);
}

/* QSGD values: code = level | sign << bits(s); value = sign * (float)(level * (norm / s)). */
static fedc_status decode_qsgd(const uint8_t *p, size_t nbytes, unsigned s, unsigned bits,
                               const uint8_t *scales, const size_t *gb, size_t ngroups, size_t off,
                               float *out, fedc_err *err)
{
    unsigned lbits = bits - 1;
    uint32_t lmask = (1u << lbits) - 1;
    uint64_t buf = 0;
    unsigned have = 0;
    size_t pos = 0;
    for (size_t g = 0; g < ngroups; g++) {
        double unit = (double)fedci_getf(scales + 4 * g) / s;
        for (size_t j = gb[g]; j < gb[g + 1]; j++) {
            while (have < bits) { /* refill a byte at a time; the section holds every bit */
                buf |= (uint64_t)(pos < nbytes ? p[pos] : 0) << have;
                pos++;
                have += 8;
            }
            uint32_t code = (uint32_t)buf & ((1u << bits) - 1);
            buf >>= bits;
            have -= bits;
            unsigned l = code & lmask;
            if (l > s)
                return fedci_codec_bad(err, "value %zu at body offset %zu: level %u > s = %u", j,
                                       off + (size_t)((uint64_t)j * bits / 8), l, s);
            float v = (float)(unit * l); /* <= norm: finite */
            out[j] = (code >> lbits) ? -v : v;
        }
    }
    return FEDC_OK;
}

fedc_status fedci_codec_decode(fedc_codec *c, const uint8_t *msg, size_t len, float *out, size_t n,
                               fedc_codec_header *h, fedc_err *err)
{
    FEDC_TRY(fedc_codec_peek(msg, len, h, err));
    if (h->n != (uint64_t)n)
        return fedci_codec_bad(err, "element count n at offset 16: %llu, the receiver expects %zu",
                               (unsigned long long)h->n, n);
    const uint8_t *body;
    FEDC_TRY(fedci_codec_body(c, msg, h, &body, err));
    size_t k = (size_t)h->k, off = 0;

    /* tensor segments */
    size_t nseg = h->groups == FEDC_GROUPS_TENSOR ? h->group_param : 0;
    size_t ngroups = fedci_codec_group_count(h->groups, h->group_param, k);
    /* tensor ends (uint64) then group bounds (size_t): both aligned */
    uint64_t *seg_end = fedci_codec_reserve(&c->groups, nseg * 8 + (ngroups + 1) * sizeof(size_t));
    if (!seg_end) return fedc_err_set(err, FEDC_ERR_NOMEM, "decode: out of memory");
    size_t *gb = (size_t *)(void *)(seg_end + nseg);
    uint64_t sum = 0;
    for (size_t t = 0; t < nseg; t++, off += 8) {
        uint64_t len_t = fedci_get64(body + off);
        if (len_t == 0 || len_t > h->n - sum)
            return fedci_codec_bad(err, "tensor %zu size at body offset %zu: %llu, %s", t, off,
                                   (unsigned long long)len_t,
                                   len_t == 0 ? "must be >= 1" : "runs past n");
        sum += len_t;
        seg_end[t] = sum;
    }
    if (nseg && sum != h->n)
        return fedci_codec_bad(err, "tensor sizes at body offset 0: sum to %llu, n = %llu",
                               (unsigned long long)sum, (unsigned long long)h->n);

    /* indices */
    uint32_t *idx = NULL;
    if (h->sparse != FEDC_SPARSE_NONE) {
        idx = fedci_codec_reserve(&c->idx, (k ? k : 1) * sizeof *idx);
        if (!idx) return fedc_err_set(err, FEDC_ERR_NOMEM, "decode: out of memory");
        if (h->sparse == FEDC_SPARSE_TOPK)
            FEDC_TRY(read_indices(h, body + off, off, idx, err));
        else
            FEDC_TRY(mask_indices(h, idx, err));
        off += (size_t)h->index_bytes;
    }
    fedci_codec_group_bounds(h->groups, h->group_param, seg_end, nseg, idx, k, ngroups, gb);

    /* scales */
    const uint8_t *scales = body + off;
    unsigned sb = fedci_codec_scale_bytes(h->values);
    for (size_t g = 0; g < ngroups && sb; g++) {
        float a = fedci_getf(scales + sb * g);
        if (sb == 8) {
            float b = fedci_getf(scales + sb * g + 4);
            if (!isfinite(a) || !isfinite(b) || !(a <= b) || !isfinite(b - a))
                return fedci_codec_bad(err,
                                       "scale of group %zu at body offset %zu: [%g, %g] is not a "
                                       "finite range with min <= max",
                                       g, off + sb * g, (double)a, (double)b);
        } else if (!isfinite(a) || a < 0) {
            return fedci_codec_bad(
                err, "norm of group %zu at body offset %zu: %g is not finite and >= 0", g,
                off + sb * g, (double)a);
        }
    }
    off += (size_t)ngroups * sb;

    /* values, in transmission order, into out (dense) or a scratch (sparse) */
    const uint8_t *p = body + off;
    unsigned bits = fedci_codec_value_bits(h->values, h->levels);
    size_t vbytes = (size_t)(((uint64_t)k * bits + 7) / 8);
    if ((uint64_t)k * bits % 8) { /* padding bits of the last byte */
        unsigned used = (unsigned)((uint64_t)k * bits % 8);
        if (p[vbytes - 1] >> used)
            return fedci_codec_bad(err, "values at body offset %zu: padding bits are not zero",
                                   off + vbytes - 1);
    }
    float *dst = out;
    if (idx && !(dst = fedci_codec_reserve(&c->vals, (k ? k : 1) * sizeof *dst)))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "decode: out of memory");
    switch (h->values) {
    case FEDC_VALUES_F32: {
#ifdef FEDCI_LITTLE_ENDIAN
        memcpy(dst, p, k * sizeof *dst);
#else
        for (size_t j = 0; j < k; j++) dst[j] = fedci_getf(p + 4 * j);
#endif
        ptrdiff_t j = fedc_vec_find_nonfinite(k, dst);
        if (j >= 0)
            return fedci_codec_bad(err, "value %td at body offset %zu: not finite", j,
                                   off + 4 * (size_t)j);
        break;
    }
    case FEDC_VALUES_F16:
    case FEDC_VALUES_BF16: {
        int f16 = h->values == FEDC_VALUES_F16;
        uint16_t emask = f16 ? 0x7c00 : 0x7f80; /* exponent bits: all ones = Inf/NaN */
        uint16_t unit = f16 ? 0x0400 : 0x0080;  /* one exponent step: carries into bit 15 */
        uint16_t tmp[CHUNK];
        for (size_t j0 = 0; j0 < k; j0 += CHUNK) {
            size_t m = k - j0 < CHUNK ? k - j0 : CHUNK, t = 0;
#ifdef FEDCI_LITTLE_ENDIAN
            memcpy(tmp, p + 2 * j0, 2 * m);
#else
            for (t = 0; t < m; t++) tmp[t] = (uint16_t)(p[2 * (j0 + t)] | p[2 * (j0 + t) + 1] << 8);
#endif
            uint16_t acc = 0;
            for (t = 0; t + 16 <= m; t += 16) /* fixed trip count: vectorized */
                for (size_t l = 0; l < 16; l++) acc |= (uint16_t)((tmp[t + l] & emask) + unit);
            for (; t < m; t++) acc |= (uint16_t)((tmp[t] & emask) + unit);
            if (acc & 0x8000) {
                for (t = 0; (tmp[t] & emask) != emask; t++) continue;
                return fedci_codec_bad(err, "value %zu at body offset %zu: %s Inf/NaN (0x%04x)",
                                       j0 + t, off + 2 * (j0 + t), f16 ? "float16" : "bfloat16",
                                       (unsigned)tmp[t]);
            }
            if (!f16) {
                for (t = 0; t + 16 <= m; t += 16)
                    for (size_t l = 0; l < 16; l++) dst[j0 + t + l] = fedci_bf16_to_f32(tmp[t + l]);
                for (; t < m; t++) dst[j0 + t] = fedci_bf16_to_f32(tmp[t]);
            }
        }
        if (f16) fedci_codec_from_f16(p, k, dst);
        break;
    }
    case FEDC_VALUES_Q8:
    case FEDC_VALUES_Q4:
        for (size_t g = 0; g < ngroups; g++) {
            float mn = fedci_getf(scales + 8 * g), mx = fedci_getf(scales + 8 * g + 4);
            float step = (mx - mn) / (float)h->levels;
            if (h->levels == 255)
                dequant8(p + gb[g], gb[g + 1] - gb[g], mn, mx, step, dst + gb[g]);
            else
                dequant4(p, gb[g], gb[g + 1], mn, mx, step, dst);
        }
        break;
    case FEDC_VALUES_QSGD:
        FEDC_TRY(decode_qsgd(p, vbytes, h->levels, bits, scales, gb, ngroups, off, dst, err));
        break;
    }
    if (idx) {
        memset(out, 0, n * sizeof *out);
        if (h->sparse == FEDC_SPARSE_MASK) {
            double scale = 4294967296.0 / h->mask_threshold; /* 1/p */
            for (size_t j = 0; j < k; j++) {
                float v = (float)((double)dst[j] * scale);
                if (!isfinite(v))
                    return fedci_codec_bad(err, "value %zu: %g scaled by 1/p = %g overflows", j,
                                           (double)dst[j], scale);
                out[idx[j]] = v;
            }
        } else {
            for (size_t j = 0; j < k; j++) out[idx[j]] = dst[j];
        }
    }
    return FEDC_OK;
}

fedc_status fedc_codec_decode(fedc_codec *c, const uint8_t *msg, size_t len, float *out, size_t n,
                              fedc_err *err)
{
    assert(c && (msg || len == 0) && (out || n == 0));
    fedc_codec_header h;
    FEDC_TRY(fedc_codec_peek(msg, len, &h, err));
    if (h.flags & FEDC_CODEC_FLAG_DELTA)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "codec message: a model delta against version %llu; decode it with "
                            "fedc_codec_decode_model and the cached model",
                            (unsigned long long)h.base_version);
    return fedci_codec_decode(c, msg, len, out, n, &h, err);
}

fedc_status fedc_codec_decode_model(fedc_codec *c, const uint8_t *msg, size_t len,
                                    const float *base, uint64_t base_version, float *out, size_t n,
                                    fedc_err *err)
{
    assert(c && (msg || len == 0) && (out || n == 0));
    fedc_codec_header h;
    FEDC_TRY(fedc_codec_peek(msg, len, &h, err));
    int delta = (h.flags & FEDC_CODEC_FLAG_DELTA) != 0;
    if (delta && !base)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "codec message: a model delta against version %llu, and no cached "
                            "model: ask for the full model",
                            (unsigned long long)h.base_version);
    if (delta && h.base_version != base_version)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "codec message: a model delta against version %llu, the cached "
                            "model is version %llu: ask for the full model",
                            (unsigned long long)h.base_version, (unsigned long long)base_version);
    if (!delta && out != base) return fedci_codec_decode(c, msg, len, out, n, &h, err);
    /* decode aside, so that base survives an error even when out == base */
    float *d = fedci_codec_reserve(&c->dec, (n ? n : 1) * sizeof *d);
    if (!d) return fedc_err_set(err, FEDC_ERR_NOMEM, "decode: out of memory");
    FEDC_TRY(fedci_codec_decode(c, msg, len, d, n, &h, err));
    if (delta) {
        fedc_vec_add(n, base, d, d);
        ptrdiff_t bad = fedc_vec_find_nonfinite(n, d);
        if (bad >= 0)
            return fedc_err_set(err, FEDC_ERR_NONFINITE,
                                "codec message: cached model + delta overflows at element %td",
                                bad);
    }
    memcpy(out, d, n * sizeof *out);
    return FEDC_OK;
}
