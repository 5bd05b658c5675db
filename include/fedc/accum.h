/*
 * Exact, order-independent weighted sums of float vectors (DESIGN.md rules 3 and 4).
 *
 * A fedc_accum holds, for n coordinates, the running sum of w * x[i] over every vector x added
 * with weight w, in 64-bit fixed point: each term is rounded once, to the nearest multiple of
 * 2^-FEDC_ACCUM_FRAC_BITS (ties to even), and the terms are added as integers. Integer addition
 * is associative, so the sum is bit-identical whatever the order of the adds, the number of
 * threads, or how the vectors were split between partial accumulators that are merged later
 * (fedc_accum_merge, or an MPI integer sum over fedc_accum_raw). Memory is O(n) whatever the
 * number of vectors added: this is the streaming aggregation of the linear strategies.
 *
 * Range: every term must satisfy |w * x[i]| < 2^30, and the sum of the per-add maxima
 * max_i |w * x[i]| (plus |w|) over all adds must stay below 2^31; otherwise the add is refused
 * with FEDC_ERR_RANGE and the accumulator is left exactly as it was. Within that range no
 * partial or final sum can overflow. Resolution: 2^-32 (2.3e-10) per term, in units of w * x.
 *
 * Thread safety: an accumulator is not synchronised; give each thread its own and merge them.
 */
#ifndef FEDC_ACCUM_H
#define FEDC_ACCUM_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_ACCUM_FRAC_BITS 32
/* The raw array (fedc_accum_raw) holds n sums followed by this many trailer words:
 * [n] sum of weights (fixed point), [n+1] number of adds, [n+2] range bound (units of 1.0). */
#define FEDC_ACCUM_TRAILER 3

typedef struct fedc_accum fedc_accum;

/* A zeroed accumulator for vectors of n floats (n >= 1). *out is owned by the caller, freed with
 * fedc_accum_destroy. Errors: FEDC_ERR_NOMEM, FEDC_ERR_RANGE (n too large). */
fedc_status fedc_accum_create(size_t n, fedc_accum **out, fedc_err *err);
void fedc_accum_destroy(fedc_accum *acc); /* NULL allowed */

/* Vector length n given at creation. */
size_t fedc_accum_len(const fedc_accum *acc);

/* Back to zero: no adds, every sum 0. */
void fedc_accum_reset(fedc_accum *acc);

/* Adds weight * x[0..n-1]. weight must be finite with |weight| < 2^30 (negative weights are
 * allowed: they remove a contribution). On any error nothing is added and acc is unchanged.
 * Errors: FEDC_ERR_NONFINITE (an x[i] or the weight is NaN/Inf; the message names the index),
 * FEDC_ERR_RANGE (a term or the running bound exceeds the range above). */
fedc_status fedc_accum_add(fedc_accum *acc, double weight, const float *x, fedc_err *err);

/* Adds k vectors at once: the same result bits as k calls of fedc_accum_add, but one pass over
 * the accumulator in cache-sized tiles, so the fold moves little more than the k vectors' bytes
 * (the fast path when several updates are ready at once). A vector that fails is skipped and
 * leaves no trace; the others are added. status (k entries, may be NULL) receives each vector's
 * outcome. Returns FEDC_OK when all were added, else the first failure's code, with its message
 * in err. */
fedc_status fedc_accum_add_many(fedc_accum *acc, size_t k, const double *weights,
                                const float *const *xs, fedc_status *status, fedc_err *err);

/* acc += other (same n). Errors: FEDC_ERR_SHAPE (lengths differ), FEDC_ERR_RANGE (the merged
 * bound would exceed the range; acc unchanged). other is not modified. */
fedc_status fedc_accum_merge(fedc_accum *acc, const fedc_accum *other, fedc_err *err);

/* out[i] = sum[i] / (sum of weights): the weighted mean. out has n floats.
 * Errors: FEDC_ERR_STATE (nothing added, or the sum of weights is <= 0). */
fedc_status fedc_accum_mean(const fedc_accum *acc, float *out, fedc_err *err);

/* out[i] = scale * sum[i] (the unnormalised sum, scaled). out has n floats. */
void fedc_accum_sum(const fedc_accum *acc, double scale, float *out);

/* The sum of the weights of all adds, and the number of adds. */
double fedc_accum_weight(const fedc_accum *acc);
uint64_t fedc_accum_count(const fedc_accum *acc);

/* The accumulator's storage, for reductions outside the library (MPI_Allreduce with
 * MPI_INT64_T and MPI_SUM over *len words): n sums then FEDC_ACCUM_TRAILER trailer words.
 * Integer-summing the raw arrays of several accumulators gives exactly the merged
 * accumulator. The pointer lives as long as acc. After writing into it, call
 * fedc_accum_check_raw before using the result. */
int64_t *fedc_accum_raw(fedc_accum *acc, size_t *len);

/* Checks the range bound after an external reduction (FEDC_ERR_RANGE if the reduced sums may
 * have overflowed, FEDC_ERR_FORMAT if the trailer is inconsistent). */
fedc_status fedc_accum_check_raw(const fedc_accum *acc, fedc_err *err);

/* Throughput measurement (a benchmark, not a test): folds vectors of n floats into an
 * accumulator and copies (memcpy) buffers of the same size, each for about min_seconds.
 * All rates are bytes of the input vectors per second (4n bytes per vector folded or copied). */
typedef struct fedc_accum_bench_result {
    size_t n;             /* floats per vector */
    size_t k;             /* vectors folded per fedc_accum_add_many call */
    double copy_gbps;     /* memcpy of 4n bytes, in GB/s (1e9 bytes) of bytes copied */
    double fold_gbps;     /* fedc_accum_add, GB/s of vector bytes folded */
    double fold_many_gbps; /* fedc_accum_add_many with k vectors, GB/s of vector bytes folded */
} fedc_accum_bench_result;

/* Runs the measurement above. Errors: FEDC_ERR_NOMEM. Not a test: takes about
 * 3 * min_seconds. */
fedc_status fedc_accum_bench(size_t n, size_t k, double min_seconds, fedc_accum_bench_result *out,
                             fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
