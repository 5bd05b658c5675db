/*
 * Model files in the safetensors format (Hugging Face), for checkpoints and exported models.
 *
 * A file is: an unsigned 64-bit little-endian header length N; N bytes of UTF-8 JSON, padded
 * with spaces so that 8 + N is a multiple of 8; then the tensors' bytes. The header maps each
 * tensor name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]} (byte offsets
 * into the data section) and may hold "__metadata__", a map of strings to strings. fedc writes
 * float32 tensors in layout order, contiguous, "__metadata__" first; it reads any F32 file that
 * Python's safetensors would accept and whose tensors fit a fedc_layout.
 *
 * Thread safety: functions are reentrant; a fedc_safetensors is read-only after it is made.
 */
#ifndef FEDC_SAFETENSORS_H
#define FEDC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/status.h"
#include "fedc/vec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header accepted on read (Python safetensors' limit). */
#define FEDC_SAFETENSORS_MAX_HEADER 100000000u

/* One metadata entry: both strings are NUL-terminated UTF-8. */
typedef struct fedc_st_meta {
    const char *key;
    const char *value;
} fedc_st_meta;

/*
 * Writes layout + data (layout->total floats, in layout order) and nmeta metadata entries
 * (meta may be NULL when nmeta is 0; keys must be distinct) to path, atomically: the bytes go
 * to a temporary file in the same directory, which is flushed and fsynced, then renamed over
 * path, and the directory is fsynced. A crash leaves either the old file or the new one, never
 * a torn file (a stale "<path>.tmp-*" may remain). Typical metadata: fedc_version, round,
 * model_spec, model_sha256.
 * Errors: FEDC_ERR_IO (naming the path and the system error; the temporary is removed),
 * FEDC_ERR_INVALID (duplicate or empty metadata key, a key "__metadata__" as a tensor name),
 * FEDC_ERR_NONFINITE (a NaN or Inf in data: the message names tensor and index),
 * FEDC_ERR_NOMEM.
 */
fedc_status fedc_safetensors_write(const char *path, const fedc_layout *layout, const float *data,
                                   const fedc_st_meta *meta, size_t nmeta, fedc_err *err);

/* A file read into memory. Heap handle: fedc_safetensors_read / fedc_safetensors_destroy. */
typedef struct fedc_safetensors {
    fedc_layout *layout; /* tensors in data order (= layout order for fedc's files) */
    float *data;         /* layout->total floats, 64-byte aligned */
    size_t nmeta;
    fedc_st_meta *meta;  /* nmeta entries, in file order; strings owned by the handle */
} fedc_safetensors;

/* Flags of fedc_safetensors_read / _decode. */
#define FEDC_ST_ALLOW_NONFINITE 1u /* accept NaN and Inf in the data (inspection tools) */
/* When the metadata holds "model_sha256", check it against fedc_vec_sha256_hex of the data
 * (FEDC_ERR_FORMAT "model_sha256 mismatch" if it differs): for checkpoints. */
#define FEDC_ST_VERIFY_SHA256 2u

/*
 * Reads and fully validates a safetensors file. On success *out is a new handle.
 * Checks, each failing with FEDC_ERR_FORMAT and a message "PATH: what is wrong" naming the
 * tensor or byte offset: file shorter than 8 bytes; header length beyond the file or above
 * FEDC_SAFETENSORS_MAX_HEADER; header not UTF-8 JSON, not an object, or with duplicate keys;
 * an entry that is not {dtype, shape, data_offsets}; "__metadata__" not a string map;
 * offsets not contiguous from 0 (gap, overlap, begin > end); the last tensor ending before
 * the end of the file (trailing bytes) or after it (truncated file); byte size != product of
 * the shape * 4. FEDC_ERR_UNSUPPORTED: a dtype other than "F32", a scalar or zero-sized
 * tensor, more than FEDC_TENSOR_MAX_DIMS dimensions, a name longer than
 * FEDC_TENSOR_NAME_MAX - 1 bytes. FEDC_ERR_NONFINITE: NaN or Inf in the data (unless
 * FEDC_ST_ALLOW_NONFINITE). With FEDC_ST_VERIFY_SHA256, a model_sha256 that does not match the
 * data: FEDC_ERR_FORMAT. FEDC_ERR_IO, FEDC_ERR_NOMEM.
 */
fedc_status fedc_safetensors_read(const char *path, unsigned flags, fedc_safetensors **out,
                                  fedc_err *err);

/* The same from bytes in memory; `name` is used in messages in place of the path. */
fedc_status fedc_safetensors_decode(const void *bytes, size_t len, const char *name,
                                    unsigned flags, fedc_safetensors **out, fedc_err *err);

void fedc_safetensors_destroy(fedc_safetensors *st); /* NULL allowed */

/* The value of metadata key `key`, or NULL. Lives as long as st. */
const char *fedc_safetensors_meta(const fedc_safetensors *st, const char *key);

#ifdef __cplusplus
}
#endif
#endif
