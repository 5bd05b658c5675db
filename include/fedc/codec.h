/*
 * Update compression (issue 9): encodings of flat float vectors for the wire, both directions
 * (client updates up, global models down), and the self-describing message they travel in.
 *
 * An encoding is a pipeline of up to three stages, written as a spec string such as
 * "topk:1%+q8+zstd" (docs/COMPRESSION.md has the grammar and the byte format):
 *   1. sparsification (optional): top-k by magnitude (a fraction or a count; pair it with error
 *      feedback, fedc_codec_encode_ef) or a random mask with a shared seed (Konecny et al. 2016:
 *      only the values are sent, the receiver re-derives the indices from the seed carried in
 *      the message and scales by 1/p, so the result is unbiased);
 *   2. value coding: float32 (lossless), float16, bfloat16 (round to nearest even), 8-bit or
 *      4-bit linear quantization per tensor, per block or for the whole vector (stochastic
 *      rounding: unbiased), or QSGD (Alistarh et al. 2017: norm + sign + level, s levels,
 *      stochastic, unbiased);
 *   3. lossless zstd of the message body, kept only when it makes the message smaller.
 * Every message names its encoding in a fixed 88-byte header (magic "FCDC", version, stage ids,
 * element count, sizes of every section), so the receiver decodes any message without knowing
 * the sender's config. Declared sizes, indices, scales or values that are inconsistent are
 * refused with FEDC_ERR_FORMAT and a message naming the field and its byte offset.
 *
 * Randomness (stochastic rounding, the mask) comes from the stream
 * (seed, round, client, FEDC_RNG_QUANTIZE): an encode is a pure function of its inputs.
 *
 * Thread safety: a fedc_codec is a workspace (the parsed spec plus reusable buffers): one per
 * thread. Any fedc_codec decodes any message, whatever spec it was created with.
 */
#ifndef FEDC_CODEC_H
#define FEDC_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/status.h"
#include "fedc/vec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_CODEC_MAGIC "FCDC"
#define FEDC_CODEC_FORMAT_VERSION 1
#define FEDC_CODEC_HEADER_SIZE 88
/* Largest vector a message may carry (indices are 32-bit). */
#define FEDC_CODEC_MAX_N 0xffffffffull

/* Header flags. */
#define FEDC_CODEC_FLAG_ZSTD 1u  /* the body is one zstd frame */
#define FEDC_CODEC_FLAG_DELTA 2u /* the payload is (model - base_version's model) */

/* Ids written in messages: pinned numbers, append only. */
typedef enum fedc_codec_sparse {
    FEDC_SPARSE_NONE = 0,
    FEDC_SPARSE_TOPK = 1, /* largest |x|: indices sent */
    FEDC_SPARSE_MASK = 2  /* random mask from a seed: indices not sent, values scaled by 1/p */
} fedc_codec_sparse;

typedef enum fedc_codec_values {
    FEDC_VALUES_F32 = 0,
    FEDC_VALUES_F16 = 1,
    FEDC_VALUES_BF16 = 2,
    FEDC_VALUES_Q8 = 3,  /* 8-bit linear, per group [min, max] */
    FEDC_VALUES_Q4 = 4,  /* 4-bit linear, per group [min, max] */
    FEDC_VALUES_QSGD = 5 /* per group L2 norm; sign + level in 0..s per value */
} fedc_codec_values;

/* What one scale (q8, q4) or norm (qsgd) covers. */
typedef enum fedc_codec_groups {
    FEDC_GROUPS_WHOLE = 0, /* one group: all values */
    FEDC_GROUPS_BLOCK = 1, /* consecutive blocks of `block` transmitted values */
    FEDC_GROUPS_TENSOR = 2 /* one group per tensor of the layout (the values whose index falls
                              in it); without a layout, the whole vector */
} fedc_codec_groups;

/* A parsed spec. Plain value type. */
typedef struct fedc_codec_spec {
    fedc_codec_sparse sparse;
    double fraction; /* topk (count == 0): fraction kept, in (0, 1];
                        mask: keep probability p, in (0, 1) */
    uint64_t count;  /* topk: number of values kept (0: use fraction) */
    fedc_codec_values values;
    fedc_codec_groups groups; /* q8, q4, qsgd (float values: always WHOLE) */
    uint32_t block;           /* FEDC_GROUPS_BLOCK: values per block (>= 1) */
    uint32_t levels;          /* qsgd: s in 1..32767 */
    int nearest;              /* q8, q4: round to nearest (biased) instead of stochastically */
    int zstd_level;           /* 0: no zstd stage; else 1..19 */
} fedc_codec_spec;

/*
 * Parses a spec: stages joined by '+', in the order sparsifier, value coding, zstd, each
 * optional ("none" alone = float32, uncompressed):
 *   none | f32
 *   f16 | fp16 | bf16
 *   q8[:OPTS] | q4[:OPTS]     OPTS, comma-separated: tensor (default) | whole | b=N, nearest
 *   qsgd[:OPTS]               s=N (levels, default 15), tensor | whole | b=N (default b=512)
 *   topk:F                    F a fraction ("0.01"), a percentage ("1%") or a count ("k=5000")
 *   mask:P                    keep probability P in (0, 1), e.g. "0.1" or "10%"
 *   zstd[:L]                  level 1..19 (default 3)
 * Errors: FEDC_ERR_CONFIG naming the offending token.
 */
fedc_status fedc_codec_parse(const char *text, fedc_codec_spec *spec, fedc_err *err);
/* The canonical spec string of spec ("topk:1%+q8+zstd:3") into buf (truncated to size). */
void fedc_codec_format(const fedc_codec_spec *spec, char *buf, size_t size);
/* 1 when decode(encode(x)) may differ from x. */
int fedc_codec_is_lossy(const fedc_codec_spec *spec);
/* 1 when the decoded vector's L2 norm never exceeds the input's (no encoding, or top-k of
 * float32 values): what a clipped update needs to keep its clip. */
int fedc_codec_keeps_norm_bound(const fedc_codec_spec *spec);

/* Who encodes what: keys the rng stream and names the model version. */
typedef struct fedc_codec_ctx {
    uint64_t seed; /* run seed */
    uint32_t round;
    uint32_t client;           /* FEDC_RNG_ANY for the server */
    const fedc_layout *layout; /* tensors for FEDC_GROUPS_TENSOR (total must equal n), or
                                  NULL: the vector is one tensor */
    uint64_t model_version;    /* written in the header (downloads: the model's round); 0 */
} fedc_codec_ctx;

typedef struct fedc_codec fedc_codec;

/* A workspace for spec (copied). *out is freed with fedc_codec_destroy.
 * Errors: FEDC_ERR_INVALID (spec out of range: see fedc_codec_spec), FEDC_ERR_NOMEM. */
fedc_status fedc_codec_create(const fedc_codec_spec *spec, fedc_codec **out, fedc_err *err);
/* fedc_codec_parse then fedc_codec_create. Errors: FEDC_ERR_CONFIG, FEDC_ERR_NOMEM. */
fedc_status fedc_codec_create_str(const char *spec, fedc_codec **out, fedc_err *err);
void fedc_codec_destroy(fedc_codec *c); /* NULL allowed */
const fedc_codec_spec *fedc_codec_get_spec(const fedc_codec *c);
/* The canonical spec string (lives as long as c). */
const char *fedc_codec_name(const fedc_codec *c);

/*
 * Encodes x[0..n-1] (1 <= n <= FEDC_CODEC_MAX_N). On success *msg points to *len bytes owned
 * by c, valid until the next fedc_codec_encode* call on c (decoding on c does not invalidate
 * them). ctx may be NULL (seed 0, round 0, client FEDC_RNG_ANY, no layout, version 0).
 * Errors: FEDC_ERR_NONFINITE (x holds a NaN/Inf: the message names the index),
 * FEDC_ERR_RANGE (a value does not fit float16/bfloat16), FEDC_ERR_NOMEM, FEDC_ERR_INVALID
 * (n out of range, layout total != n).
 */
fedc_status fedc_codec_encode(fedc_codec *c, const float *x, size_t n, const fedc_codec_ctx *ctx,
                              const uint8_t **msg, size_t *len, fedc_err *err);

/*
 * Encoding with error feedback (Seide et al. 2014; Stich et al. 2018; Karimireddy et al. 2019):
 * encodes v = x + residual, then sets residual = v - decode(msg), so what a lossy encoding
 * drops is sent in later rounds. residual (n floats) is owned by the caller, one per client,
 * all zero before the client's first round, and carried to the next round the client takes
 * part in. On error residual is unchanged. Errors: as fedc_codec_encode.
 */
fedc_status fedc_codec_encode_ef(fedc_codec *c, const float *x, float *residual, size_t n,
                                 const fedc_codec_ctx *ctx, const uint8_t **msg, size_t *len,
                                 fedc_err *err);

/*
 * Model download as a delta: encodes x - base (both n floats) with the DELTA flag and
 * base_version in the header; the receiver adds it to its cached copy of base_version
 * (fedc_codec_decode_model). With a lossy encoding the receiver holds an approximation of x
 * afterwards (docs/COMPRESSION.md). Errors: as fedc_codec_encode.
 */
fedc_status fedc_codec_encode_delta(fedc_codec *c, const float *x, const float *base,
                                    uint64_t base_version, size_t n, const fedc_codec_ctx *ctx,
                                    const uint8_t **msg, size_t *len, fedc_err *err);

/*
 * Exact model deltas (downloads against a client's cached version; docs/COMPRESSION.md,
 * "Exact delta downloads"). A message of its own ("FCXD", not a codec message): a 104-byte
 * header (magic, format version, flags 1 zstd / 2 byte planes, 2 reserved zero bytes, then u64
 * LE: n, base version, model version, stored bytes; then the base model's and the result's
 * SHA-256, 32 bytes each) and the body: the n words base XOR model (float32 bit patterns), as
 * little-endian words or as 4 byte planes (byte 0 of every word, then byte 1, ...), optionally
 * one zstd frame declaring its size. Reconstruction is bit-exact.
 */
#define FEDC_XDELTA_MAGIC "FCXD"
#define FEDC_XDELTA_FORMAT_VERSION 1
#define FEDC_XDELTA_HEADER_SIZE 104
#define FEDC_XDELTA_SHUFFLE 1u /* option: byte planes before zstd */

typedef struct fedc_xdelta_header {
    unsigned version; /* format version (1) */
    int zstd, shuffle;
    uint64_t n;
    uint64_t base_version, model_version; /* base_version < model_version */
    uint64_t stored_bytes;                /* body bytes after the header */
    char base_sha256[65], sha256[65];     /* hex: the base model's and the result's */
} fedc_xdelta_header;

/*
 * Encodes the delta from base (version base_version) to x (version version > base_version),
 * both n floats. base_sha / sha: their fedc_vec_sha256_hex, or NULL to compute them. options:
 * 0 or FEDC_XDELTA_SHUFFLE; zstd_level 0 (none) or 1..19 (kept only when smaller). *msg
 * (owned by c) lives until the next fedc_codec_encode* / fedc_codec_xdelta_encode call on c.
 * Errors: FEDC_ERR_INVALID (n, level), FEDC_ERR_NOMEM.
 */
fedc_status fedc_codec_xdelta_encode(fedc_codec *c, const float *base, const float *x, size_t n,
                                     uint64_t base_version, uint64_t version,
                                     const char *base_sha, const char *sha, unsigned options,
                                     int zstd_level, const uint8_t **msg, size_t *len,
                                     fedc_err *err);
/* Reads and checks a delta's header (not its body). Errors: FEDC_ERR_FORMAT naming the field
 * and its offset. */
fedc_status fedc_codec_xdelta_peek(const uint8_t *msg, size_t len, fedc_xdelta_header *h,
                                   fedc_err *err);
/*
 * Applies a delta in place: model (n floats) holds version base_version; afterwards it holds
 * the delta's model version, bit for bit, and sha (may be NULL) its SHA-256 hex. Checked: the
 * header, n, the base version and the base's SHA-256 (FEDC_ERR_STATE: the client should ask
 * for the full model), the zstd frame (exact size), and that the result hashes to the
 * announced SHA-256 and is finite. On any error model is left exactly as it was.
 * Errors: FEDC_ERR_FORMAT, FEDC_ERR_STATE, FEDC_ERR_NOMEM.
 */
fedc_status fedc_codec_xdelta_apply(fedc_codec *c, const uint8_t *msg, size_t len, float *model,
                                    size_t n, uint64_t base_version, char sha[65], fedc_err *err);

/* A message's header, as read by fedc_codec_peek. */
typedef struct fedc_codec_header {
    unsigned version; /* format version (1) */
    unsigned flags;   /* FEDC_CODEC_FLAG_* */
    fedc_codec_sparse sparse;
    fedc_codec_values values;
    fedc_codec_groups groups;
    unsigned index_format;   /* topk: 1 varint gaps, 2 bitmap; otherwise 0 */
    unsigned levels;         /* q8 255, q4 15, qsgd s; float values 0 */
    uint32_t group_param;    /* block size (BLOCK), tensor count (TENSOR), 0 (WHOLE) */
    uint64_t n;              /* elements of the decoded vector */
    uint64_t k;              /* values transmitted */
    uint64_t mask_key;       /* mask: the seed of the index stream */
    uint32_t mask_threshold; /* mask: keep iff a 32-bit word < this; p = threshold / 2^32 */
    uint64_t model_version;
    uint64_t base_version; /* DELTA: the version the receiver must hold */
    uint64_t index_bytes;  /* topk: bytes of the index section */
    uint64_t body_bytes;   /* body size after decompression */
    uint64_t stored_bytes; /* bytes after the header (== body_bytes without zstd) */
} fedc_codec_header;

/* Reads and checks a message's header (not its body): every field in range and consistent
 * with the others and with len. Errors: FEDC_ERR_FORMAT naming the field and its offset. */
fedc_status fedc_codec_peek(const uint8_t *msg, size_t len, fedc_codec_header *h, fedc_err *err);

/*
 * Decodes msg into out[0..n-1]; n must equal the message's element count. Every section is
 * checked (sizes, indices strictly increasing and < n, scales finite with min <= max, levels
 * <= s, values finite, padding bits zero, zstd frame size) and every decoded value is finite.
 * out's contents are unspecified on error. A DELTA message is refused (FEDC_ERR_STATE): decode
 * models with fedc_codec_decode_model. msg must not point into c's own encode buffer unless
 * it is the message last encoded on c. Errors: FEDC_ERR_FORMAT (malformed: the message names
 * field and offset), FEDC_ERR_STATE, FEDC_ERR_NOMEM.
 */
fedc_status fedc_codec_decode(fedc_codec *c, const uint8_t *msg, size_t len, float *out, size_t n,
                              fedc_err *err);

/*
 * Decodes a model download: a full model (out = decoded; base may be NULL) or a DELTA against
 * base_version (out = base + decoded; base must hold that version: otherwise FEDC_ERR_STATE,
 * naming both versions, so the client can ask for a full model). out may equal base; on error
 * base is untouched (out is unspecified when it differs from base). Errors: as
 * fedc_codec_decode, FEDC_ERR_STATE, FEDC_ERR_NONFINITE (base + delta overflows).
 */
fedc_status fedc_codec_decode_model(fedc_codec *c, const uint8_t *msg, size_t len,
                                    const float *base, uint64_t base_version, float *out, size_t n,
                                    fedc_err *err);

/*
 * Lossless zstd of any byte string (a general helper: fedc's HTTP bodies are not
 * Content-Encoded, docs/COMPRESSION.md says why). *out (owned by c,
 * valid until the next call of either function on c) gets the result.
 * _compress: level 1..19. _decompress refuses (FEDC_ERR_FORMAT) a frame that is corrupt, does
 * not declare its size, or would exceed max_len bytes. Errors also FEDC_ERR_NOMEM.
 */
fedc_status fedc_codec_zstd_compress(fedc_codec *c, const void *src, size_t len, int level,
                                     const uint8_t **out, size_t *out_len, fedc_err *err);
fedc_status fedc_codec_zstd_decompress(fedc_codec *c, const void *src, size_t len, size_t max_len,
                                       const uint8_t **out, size_t *out_len, fedc_err *err);

/*
 * Checks the [compress] section of cfg: both specs parse, and the combination with privacy
 * settings is one whose guarantee holds (docs/COMPRESSION.md, "Privacy"):
 *   - secure aggregation on: the upload must not be sparsified or quantized (SecAgg's own
 *     quantizer is the only one; zstd is allowed);
 *   - dp.mode = central with dp.clip_on = client: the upload must keep the clip's norm bound
 *     (none, or top-k of float32 values without error feedback), otherwise the sensitivity the
 *     accountant assumes is not the one sent;
 *   - dp.mode = local, dp.sgd, dp.clip_on = server, and all downloads: any encoding (after the
 *     noise, or before the server's clipping, encoding is post-processing or pre-processing).
 * Errors: FEDC_ERR_CONFIG naming the keys and values.
 */
fedc_status fedc_codec_config_check(const fedc_config *cfg, fedc_err *err);

/* 1 when the upload spec of cfg wants error feedback (compress.error_feedback = on, or auto
 * with a top-k upload). cfg's spec must parse (fedc_codec_config_check). */
int fedc_codec_config_error_feedback(const fedc_config *cfg);

/* Speed measurement (a benchmark, not a test): encodes and decodes a vector of n floats
 * (normal, std 0.01, like an update) with spec and copies it with memcpy, each for about
 * min_seconds. Rates are GB/s (1e9 bytes) of the float32 input (4n bytes per call). */
typedef struct fedc_codec_bench_result {
    size_t n;
    size_t bytes;     /* encoded message size */
    double ratio;     /* 4n / bytes */
    double copy_gbps; /* memcpy of 4n bytes */
    double encode_gbps;
    double decode_gbps;
    double rel_error; /* ||decode(encode(x)) - x|| / ||x|| */
} fedc_codec_bench_result;

/* layout may be NULL (one tensor). Errors: FEDC_ERR_CONFIG (spec), FEDC_ERR_NOMEM, the
 * encoder's. Takes about 3 * min_seconds. */
fedc_status fedc_codec_bench(const char *spec, size_t n, const fedc_layout *layout,
                             double min_seconds, fedc_codec_bench_result *out, fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
