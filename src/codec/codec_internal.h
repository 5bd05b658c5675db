/*
 * Internals shared by the codec's files (codec*.c): the workspace, little-endian byte access,
 * float16/bfloat16 conversion, the random word streams, and section sizes of the format.
 */
#ifndef FEDC_CODEC_INTERNAL_H
#define FEDC_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fedc/codec.h"

/* A growable byte or element buffer owned by the workspace. */
typedef struct fedci_codec_buf {
    void *p;
    size_t cap; /* bytes */
} fedci_codec_buf;

struct fedc_codec {
    fedc_codec_spec spec;
    char name[96];
    fedci_codec_buf msg;    /* the last encoded message (header + raw body) */
    fedci_codec_buf zmsg;   /* the last encoded message with a zstd body */
    fedci_codec_buf idx;    /* selected or decoded indices (uint32) */
    fedci_codec_buf cand;   /* encoder: top-k candidates (uint32 magnitudes) */
    fedci_codec_buf vals;   /* encoder: selected values (float) */
    fedci_codec_buf work;   /* encoder: x + residual, x - base (float) */
    fedci_codec_buf dec;    /* decode scratch (float): error feedback, deltas in place */
    fedci_codec_buf groups; /* group boundaries (size_t) */
    fedci_codec_buf body;   /* decoder: decompressed body */
    fedci_codec_buf zout;   /* fedc_codec_zstd_* results */
    void *cctx;             /* ZSTD_CCtx, created on first use */
    void *dctx;             /* ZSTD_DCtx */
};

/* Ensures b holds at least `bytes`; returns its pointer or NULL (out of memory). */
void *fedci_codec_reserve(fedci_codec_buf *b, size_t bytes);

/* zstd with allocation through fedc_malloc. */
fedc_status fedci_codec_zstd_compress(fedc_codec *c, const void *src, size_t len, int level,
                                      void *dst, size_t cap, size_t *out_len, fedc_err *err);
size_t fedci_codec_zstd_bound(size_t len);

/* The raw decode used by fedc_codec_decode and the error-feedback path. */
fedc_status fedci_codec_decode(fedc_codec *c, const uint8_t *msg, size_t len, float *out, size_t n,
                               fedc_codec_header *h, fedc_err *err);
/* The decompressed body of a message fedc_codec_peek accepted: the message's own bytes, or
 * c->body after zstd. */
fedc_status fedci_codec_body(fedc_codec *c, const uint8_t *msg, const fedc_codec_header *h,
                             const uint8_t **body, fedc_err *err);
/* Records FEDC_ERR_FORMAT with "codec message: " + the formatted text; returns it. */
fedc_status fedci_codec_bad(fedc_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Boundaries of the scale groups in the transmitted value sequence: gb[0] = 0 <= gb[1] <= ...
 * <= gb[ngroups] = k (ngroups + 1 entries). TENSOR: seg_end[t] are the tensors' end offsets
 * in the dense vector and idx the k sorted dense indices (NULL when dense: k = n).
 */
void fedci_codec_group_bounds(fedc_codec_groups groups, uint32_t block, const uint64_t *seg_end,
                              size_t nseg, const uint32_t *idx, size_t k, size_t ngroups,
                              size_t *gb);
/* Number of groups of a message: 1 (WHOLE), nseg (TENSOR), ceil(k / block) (BLOCK). */
size_t fedci_codec_group_count(fedc_codec_groups groups, uint32_t param, size_t k);
/* 32-bit random words w[0 .. m-1] = words j0 .. j0+m-1 of the stream `key`: word j is the low
 * (j even) or high (j odd) half of output j/2 of SplitMix64 seeded with key (Steele, Lea and
 * Flood 2014): z = key + (j/2 + 1) * 0x9e3779b97f4a7c15, then the SplitMix64 finaliser. The
 * mask's indices are defined by this stream (docs/COMPRESSION.md). */
void fedci_codec_words(uint64_t key, uint64_t j0, size_t m, uint32_t *w);
/* n floats to little-endian float16 (round to nearest even; overflow gives Inf), and back
 * (codes must not be Inf/NaN). F16C when the CPU has it. */
void fedci_codec_to_f16(const float *x, size_t n, uint8_t *out);
void fedci_codec_from_f16(const uint8_t *p, size_t n, float *out);
/* Writes h into the first FEDC_CODEC_HEADER_SIZE bytes of p. */
void fedci_codec_header_write(uint8_t *p, const fedc_codec_header *h);
/* Bits per value of a value coding (32 for f32, 16 for f16/bf16, 8, 4, 1 + bits(s)). */
unsigned fedci_codec_value_bits(fedc_codec_values v, unsigned levels);
/* Bytes per group scale entry: q8/q4 8 (min, max), qsgd 4 (norm), float 0. */
unsigned fedci_codec_scale_bytes(fedc_codec_values v);

/* ---- little-endian access ---- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FEDCI_LITTLE_ENDIAN 1 /* float arrays are their own wire bytes */
#endif

static inline void fedci_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void fedci_put64(uint8_t *p, uint64_t v)
{
    fedci_put32(p, (uint32_t)v);
    fedci_put32(p + 4, (uint32_t)(v >> 32));
}
static inline uint32_t fedci_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fedci_get64(const uint8_t *p)
{
    return (uint64_t)fedci_get32(p) | (uint64_t)fedci_get32(p + 4) << 32;
}
static inline uint32_t fedci_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float fedci_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline void fedci_putf(uint8_t *p, float f) { fedci_put32(p, fedci_f2u(f)); }
static inline float fedci_getf(const uint8_t *p) { return fedci_u2f(fedci_get32(p)); }

/* ---- float16 / bfloat16 (round to nearest, ties to even; finite inputs) ---- */

/* IEEE binary16 of a finite float; values beyond 65504 after rounding give 0x7c00 (inf),
 * which the encoder refuses. */
static inline uint16_t fedci_f32_to_f16(float f)
{
    uint32_t x = fedci_f2u(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                                   /* below 2^-14: subnormal */
        /* a float add rounds to the nearest multiple of 2^-24 (ties to even) */
        float r = fedci_u2f(a) + 0.5f;
        return (uint16_t)(sign | (fedci_f2u(r) - 0x3f000000u));
    }
    uint32_t mant_odd = (a >> 13) & 1u;
    a += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round */
    return (uint16_t)(sign | (a >> 13));
}

static inline float fedci_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) /* zero or subnormal: m * 2^-24 */
        return fedci_u2f(sign | fedci_f2u((float)m * 0x1p-24f));
    return fedci_u2f(sign | ((e + 112u) << 23) | (m << 13)); /* e < 31: checked by the decoder */
}

static inline uint16_t fedci_f32_to_bf16(float f)
{
    uint32_t x = fedci_f2u(f);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static inline float fedci_bf16_to_f32(uint16_t h) { return fedci_u2f((uint32_t)h << 16); }

#endif
