/*
 * Flat vectors and parameter layouts (DESIGN.md rule 1).
 *
 * A model's parameters are ONE contiguous float32 buffer; a layout names its pieces
 * (name, shape, offset). Everything after the trainer (clipping, compression, masking,
 * aggregation, checkpoints, the wire) works on flat vectors plus the layout.
 */
#ifndef FEDC_VEC_H
#define FEDC_VEC_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_TENSOR_NAME_MAX 64
#define FEDC_TENSOR_MAX_DIMS 6

typedef struct fedc_tensor_info {
    char name[FEDC_TENSOR_NAME_MAX];     /* "0.weight": PyTorch nn.Sequential naming */
    int ndim;
    int64_t shape[FEDC_TENSOR_MAX_DIMS]; /* PyTorch layout: dense [out, in], conv [out, in, kh, kw] */
    size_t offset;                       /* in floats, from the start of the flat buffer */
    size_t numel;
} fedc_tensor_info;

/* A parameter layout. Heap handle: fedc_layout_create / fedc_layout_destroy. */
typedef struct fedc_layout {
    size_t count;              /* tensors */
    size_t total;              /* floats in the flat buffer (sum of numel) */
    fedc_tensor_info *tensors; /* count entries, in buffer order */
    size_t capacity_;
} fedc_layout;

fedc_layout *fedc_layout_create(void); /* NULL on out-of-memory */
void fedc_layout_destroy(fedc_layout *layout); /* NULL allowed */
/* Appends a tensor at the end of the buffer. Errors: FEDC_ERR_INVALID (empty or too long name,
 * duplicate name, ndim out of 1..FEDC_TENSOR_MAX_DIMS, a dimension <= 0), FEDC_ERR_NOMEM. */
fedc_status fedc_layout_add(fedc_layout *layout, const char *name, int ndim, const int64_t *shape,
                            fedc_err *err);
/* A deep copy; NULL on out-of-memory. */
fedc_layout *fedc_layout_copy(const fedc_layout *layout);
/* 1 when both have the same tensors (names, shapes, offsets), else 0. */
int fedc_layout_equal(const fedc_layout *a, const fedc_layout *b);
/* The tensor of that name, or NULL. */
const fedc_tensor_info *fedc_layout_find(const fedc_layout *layout, const char *name);

/* A heap float32 vector, 64-byte aligned. */
typedef struct fedc_vec {
    float *data;
    size_t n;
} fedc_vec;

fedc_vec *fedc_vec_create(size_t n); /* zero-filled; NULL on out-of-memory */
fedc_vec *fedc_vec_dup(const fedc_vec *v);
void fedc_vec_destroy(fedc_vec *v); /* NULL allowed */

/* Kernels over raw float arrays (n elements). BLAS where it helps; sums in double where the
 * result is a scalar. None allocate. */
void fedc_vec_copy(size_t n, const float *src, float *dst);
void fedc_vec_zero(size_t n, float *x);
void fedc_vec_fill(size_t n, float value, float *x);
void fedc_vec_scale(size_t n, float a, float *x);                      /* x = a x */
void fedc_vec_axpy(size_t n, float a, const float *x, float *y);       /* y = a x + y */
void fedc_vec_sub(size_t n, const float *a, const float *b, float *out); /* out = a - b */
void fedc_vec_add(size_t n, const float *a, const float *b, float *out); /* out = a + b */
double fedc_vec_dot(size_t n, const float *x, const float *y);
double fedc_vec_norm2(size_t n, const float *x); /* Euclidean norm, accumulated in double */
/* Index of the first NaN or Inf, or -1 when all are finite. Branch-free, at memory speed
 * (every NaN/Inf check in the library, the codec's included, uses this one). */
ptrdiff_t fedc_vec_find_nonfinite(size_t n, const float *x);
/* Largest |a[i] - b[i]|. */
float fedc_vec_max_abs_diff(size_t n, const float *a, const float *b);

/* SHA-256 of n floats' bytes (little-endian float32) as 64 lowercase hex chars + NUL. */
void fedc_vec_sha256_hex(size_t n, const float *x, char out[65]);

#ifdef __cplusplus
}
#endif
#endif
