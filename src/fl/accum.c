/*
 * The exact fixed-point accumulator behind streaming aggregation (include/fedc/accum.h).
 *
 * Each term w * x[i] is computed in double (one IEEE multiply: deterministic), scaled by 2^32,
 * rounded to the nearest integer (ties to even) and added to an int64 sum with wrapping uint64
 * arithmetic. Wrapping addition is associative and commutative, so the final bits never depend
 * on the order of the adds; the range bound (header comment) guarantees the true sum fits, so the
 * wrapped result is the exact one.
 *
 * Speed: the fold is memory-bound (read x, read and write the int64 sums) once it is vectorised.
 * Vector kernels (AVX-512 when the CPU has it, else AVX2, else SSE2; chosen at run time) fold a
 * chunk optimistically and check it on the side; a chunk holding a NaN, an Inf or a term beyond
 * the kernel's exact range is undone and redone by the scalar kernel (llrint, same rounding),
 * which also finds the offending index. Every kernel gives identical bits for every term it
 * accepts, so the path taken never shows in the result. fedc_accum_add_many folds several
 * vectors per accumulator tile (cache blocking), so the sums stay in L1 between vectors.
 */
#include <assert.h>
#include <math.h>
#include <string.h>
#include <time.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(FEDC_ACCUM_NO_DISPATCH)
#define FEDC_ACCUM_X86_DISPATCH 1
#include <immintrin.h>
#endif

#include "fedc/accum.h"
#include "fedc/alloc.h"
#include "fl/strategy_internal.h"

struct fedc_accum {
    size_t n;
    int64_t *data; /* n sums, then weight sum, count, bound (FEDC_ACCUM_TRAILER words) */
};

#define SCALE 0x1p32              /* 2^FEDC_ACCUM_FRAC_BITS */
#define TERM_LIMIT 0x1p62         /* |w x| * 2^32 must stay below this (|w x| < 2^30) */
#define WEIGHT_LIMIT 0x1p30       /* |w| < 2^30 */
#define BOUND_LIMIT (INT64_C(1) << 31) /* sum of per-add maxima, in units of 1.0 */
#define FAST_LIMIT 0x1p51         /* the magic-number rounding is exact below this */
#define CHUNK 1024                /* floats per tile: 8 KiB of sums, 4 KiB of input */
#define MANY_BATCH 16             /* vectors per tile pass in fedc_accum_add_many */

#define W_SUM(a) ((a)->data[(a)->n])
#define COUNT(a) ((a)->data[(a)->n + 1])
#define BOUND(a) ((a)->data[(a)->n + 2])

/* Wrapping int64 add/sub without signed-overflow UB. */
static inline int64_t wrap_add(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

static inline int64_t wrap_sub(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a - (uint64_t)b);
}

fedc_status fedc_accum_create(size_t n, fedc_accum **out, fedc_err *err)
{
    assert(out);
    *out = NULL;
    if (n == 0) return fedc_err_set(err, FEDC_ERR_INVALID, "accumulator: length 0");
    if (n > (SIZE_MAX / sizeof(int64_t)) - FEDC_ACCUM_TRAILER)
        return fedc_err_set(err, FEDC_ERR_RANGE, "accumulator: length %zu too large", n);
    fedc_accum *acc = fedc_calloc(1, sizeof *acc);
    if (!acc) return fedc_err_set(err, FEDC_ERR_NOMEM, "accumulator: out of memory");
    acc->n = n;
    acc->data = fedc_calloc(n + FEDC_ACCUM_TRAILER, sizeof(int64_t));
    if (!acc->data) {
        fedc_free(acc);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "accumulator: out of memory for %zu sums", n);
    }
    *out = acc;
    return FEDC_OK;
}

void fedc_accum_destroy(fedc_accum *acc)
{
    if (!acc) return;
    fedc_free(acc->data);
    fedc_free(acc);
}

size_t fedc_accum_len(const fedc_accum *acc)
{
    assert(acc);
    return acc->n;
}

void fedc_accum_reset(fedc_accum *acc)
{
    assert(acc);
    memset(acc->data, 0, (acc->n + FEDC_ACCUM_TRAILER) * sizeof(int64_t));
}

/* ---- kernels ---- */

/* Exact scalar kernel: acc[i] += sign * round(x[i] * wd) for i < len, stopping at the first
 * term that is NaN/Inf or out of range; that element's index is returned after the elements
 * before it are undone. Returns -1 when the whole range was folded; *mx gets the max |term|. */
static ptrdiff_t fold_exact(int64_t *acc, const float *x, size_t len, double wd, int sign,
                            double *mx)
{
    double m = *mx;
    for (size_t i = 0; i < len; i++) {
        double d = (double)x[i] * wd;
        double a = fabs(d);
        if (!(a < TERM_LIMIT)) {
            for (size_t j = 0; j < i; j++) {
                int64_t q = llrint((double)x[j] * wd);
                acc[j] = sign > 0 ? wrap_sub(acc[j], q) : wrap_add(acc[j], q);
            }
            return (ptrdiff_t)i;
        }
        if (a > m) m = a;
        int64_t q = llrint(d);
        acc[i] = sign > 0 ? wrap_add(acc[i], q) : wrap_sub(acc[i], q);
    }
    *mx = m;
    return -1;
}

/* The vector kernels share one contract. They fold len (a multiple of 16) terms into acc
 * (64-byte aligned) unconditionally, and check the inputs in the float domain on the side: the
 * largest |x[i]| (rounding is monotone, so max |term| = round(max |x| * |wd|)) and whether any
 * x[i] is NaN. They return 1 when every term was finite and below `limit` (then the result is
 * exact and *mx holds the max |term|), else 0: the caller then undoes the chunk by calling again
 * with -sign, which subtracts exactly what was added (same arithmetic, wrapping integers). */
static int fast_verdict(double max_abs_x, int any_nan, double wd, double limit, double *mx)
{
    double m = max_abs_x * fabs(wd);
    if (any_nan || !(m < limit)) return 0;
    if (m > *mx) *mx = m;
    return 1;
}

#if defined(__SSE2__)
/* SSE2: the 1.5 * 2^52 "magic number" rounding, exact for |term| < 2^51. */
static int fold_fast_sse2(int64_t *acc, const float *x, size_t len, double wd, int sign,
                          double *mx)
{
    const __m128d w = _mm_set1_pd(wd);
    const __m128d magic = _mm_set1_pd(0x1.8p52);
    const __m128i magic_bits = _mm_castpd_si128(magic);
    const __m128 absmask = _mm_castsi128_ps(_mm_set1_epi32(INT32_MAX));
    __m128 nan = _mm_setzero_ps();
    __m128 m = _mm_setzero_ps();
    __m128i *a = (__m128i *)acc;
    for (size_t i = 0; i < len; i += 4, a += 2) {
        __m128 xf = _mm_loadu_ps(x + i);
        m = _mm_max_ps(m, _mm_and_ps(xf, absmask));
        nan = _mm_or_ps(nan, _mm_cmpunord_ps(xf, xf));
        __m128d d0 = _mm_mul_pd(_mm_cvtps_pd(xf), w);
        __m128d d1 = _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(xf, xf)), w);
        __m128i q0 = _mm_sub_epi64(_mm_castpd_si128(_mm_add_pd(d0, magic)), magic_bits);
        __m128i q1 = _mm_sub_epi64(_mm_castpd_si128(_mm_add_pd(d1, magic)), magic_bits);
        __m128i s0 = _mm_load_si128(a);
        __m128i s1 = _mm_load_si128(a + 1);
        if (sign > 0) {
            s0 = _mm_add_epi64(s0, q0);
            s1 = _mm_add_epi64(s1, q1);
        } else {
            s0 = _mm_sub_epi64(s0, q0);
            s1 = _mm_sub_epi64(s1, q1);
        }
        _mm_store_si128(a, s0);
        _mm_store_si128(a + 1, s1);
    }
    float mm[4];
    _mm_storeu_ps(mm, m);
    float r = mm[0];
    for (int j = 1; j < 4; j++)
        if (mm[j] > r) r = mm[j];
    return fast_verdict(r, _mm_movemask_ps(nan), wd, FAST_LIMIT, mx);
}
#endif

#if defined(FEDC_ACCUM_X86_DISPATCH)
/* AVX-512 (F + DQ): vcvtpd2qq rounds under the default mode (nearest, ties to even), giving the
 * same integers as llrint, for any |term| < 2^63: no magic-number limit. */
__attribute__((target("avx512f,avx512dq"))) static int
fold_fast_avx512(int64_t *acc, const float *x, size_t len, double wd, int sign, double *mx)
{
    const __m512d w = _mm512_set1_pd(wd);
    __mmask16 nan = 0;
    __m512 m = _mm512_setzero_ps();
    for (size_t i = 0; i < len; i += 16) {
        __m512 xf = _mm512_loadu_ps(x + i);
        m = _mm512_max_ps(m, _mm512_abs_ps(xf));
        nan |= _mm512_cmp_ps_mask(xf, xf, _CMP_UNORD_Q);
        __m512d d0 = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xf)), w);
        __m512d d1 = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(xf, 1)), w);
        __m512i q0 = _mm512_cvtpd_epi64(d0);
        __m512i q1 = _mm512_cvtpd_epi64(d1);
        __m512i s0 = _mm512_load_si512(acc + i);
        __m512i s1 = _mm512_load_si512(acc + i + 8);
        if (sign > 0) {
            s0 = _mm512_add_epi64(s0, q0);
            s1 = _mm512_add_epi64(s1, q1);
        } else {
            s0 = _mm512_sub_epi64(s0, q0);
            s1 = _mm512_sub_epi64(s1, q1);
        }
        _mm512_store_si512(acc + i, s0);
        _mm512_store_si512(acc + i + 8, s1);
    }
    return fast_verdict(_mm512_reduce_max_ps(m), nan != 0, wd, TERM_LIMIT, mx);
}

/* AVX2: the magic-number rounding on 4 doubles per instruction (exact for |term| < 2^51). */
__attribute__((target("avx2"))) static int fold_fast_avx2(int64_t *acc, const float *x,
                                                          size_t len, double wd, int sign,
                                                          double *mx)
{
    const __m256d w = _mm256_set1_pd(wd);
    const __m256d magic = _mm256_set1_pd(0x1.8p52);
    const __m256i magic_bits = _mm256_castpd_si256(magic);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MAX));
    __m256 nan = _mm256_setzero_ps();
    __m256 m = _mm256_setzero_ps();
    for (size_t i = 0; i < len; i += 8) {
        __m256 xf = _mm256_loadu_ps(x + i);
        m = _mm256_max_ps(m, _mm256_and_ps(xf, absmask));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(xf, xf, _CMP_UNORD_Q));
        __m256d d0 = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xf)), w);
        __m256d d1 = _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xf, 1)), w);
        __m256i q0 = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(d0, magic)), magic_bits);
        __m256i q1 = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(d1, magic)), magic_bits);
        __m256i *a = (__m256i *)(acc + i);
        __m256i s0 = _mm256_load_si256(a);
        __m256i s1 = _mm256_load_si256(a + 1);
        if (sign > 0) {
            s0 = _mm256_add_epi64(s0, q0);
            s1 = _mm256_add_epi64(s1, q1);
        } else {
            s0 = _mm256_sub_epi64(s0, q0);
            s1 = _mm256_sub_epi64(s1, q1);
        }
        _mm256_store_si256(a, s0);
        _mm256_store_si256(a + 1, s1);
    }
    float mm[8];
    _mm256_storeu_ps(mm, m);
    float r = mm[0];
    for (int j = 1; j < 8; j++)
        if (mm[j] > r) r = mm[j];
    return fast_verdict(r, _mm256_movemask_ps(nan), wd, FAST_LIMIT, mx);
}
#endif

typedef int (*fold_fast_fn)(int64_t *acc, const float *x, size_t len, double wd, int sign,
                            double *mx);

/* The widest kernel this CPU runs (NULL: scalar only). All give identical bits. Resolved once;
 * a race between first calls only writes the same value twice. */
static fold_fast_fn pick_kernel(void)
{
#if defined(FEDC_ACCUM_X86_DISPATCH)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
        return fold_fast_avx512;
    if (__builtin_cpu_supports("avx2")) return fold_fast_avx2;
#endif
#if defined(__SSE2__)
    return fold_fast_sse2;
#else
    return NULL;
#endif
}

static fold_fast_fn kernel_fn;
static int kernel_resolved;

static fold_fast_fn fast_kernel(void)
{
    if (!__atomic_load_n(&kernel_resolved, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&kernel_fn, pick_kernel(), __ATOMIC_RELAXED);
        __atomic_store_n(&kernel_resolved, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&kernel_fn, __ATOMIC_RELAXED);
}

int fedci_accum_set_kernel(int which)
{
    fold_fast_fn fn = NULL;
    switch (which) {
    case FEDCI_ACCUM_KERNEL_AUTO: fn = pick_kernel(); break;
    case FEDCI_ACCUM_KERNEL_SCALAR: fn = NULL; break;
#if defined(__SSE2__)
    case FEDCI_ACCUM_KERNEL_SSE2: fn = fold_fast_sse2; break;
#endif
#if defined(FEDC_ACCUM_X86_DISPATCH)
    case FEDCI_ACCUM_KERNEL_AVX2:
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2")) return 0;
        fn = fold_fast_avx2;
        break;
    case FEDCI_ACCUM_KERNEL_AVX512:
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq")) return 0;
        fn = fold_fast_avx512;
        break;
#endif
    default: return 0;
    }
    __atomic_store_n(&kernel_fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&kernel_resolved, 1, __ATOMIC_RELEASE);
    return 1;
}

/* Folds one chunk (acc aligned to 64 bytes, len <= CHUNK). Returns -1 on success, else the index
 * of the first bad element, with the chunk left untouched. */
static ptrdiff_t fold_chunk(int64_t *acc, const float *x, size_t len, double wd, int sign,
                            double *mx)
{
    fold_fast_fn fast = fast_kernel();
    size_t n16 = len & ~(size_t)15;
    if (fast && n16) {
        double m = *mx;
        if (fast(acc, x, n16, wd, sign, &m)) {
            ptrdiff_t bad = fold_exact(acc + n16, x + n16, len - n16, wd, sign, &m);
            if (bad < 0) {
                *mx = m;
                return -1;
            }
            double unused = 0;
            int ok = fast(acc, x, n16, wd, -sign, &unused);
            assert(ok);
            (void)ok;
            return (ptrdiff_t)n16 + bad;
        }
        double unused = 0;
        (void)fast(acc, x, n16, wd, -sign, &unused);
    }
    return fold_exact(acc, x, len, wd, sign, mx);
}

/* Removes a vector's terms from chunks [0, end) (all of which it was added to successfully). */
static void unfold_range(fedc_accum *acc, const float *x, size_t end, double wd)
{
    for (size_t c = 0; c < end; c += CHUNK) {
        size_t len = end - c < CHUNK ? end - c : CHUNK;
        double unused = 0;
        ptrdiff_t bad = fold_chunk(acc->data + c, x + c, len, wd, -1, &unused);
        assert(bad < 0);
        (void)bad;
    }
}

static fedc_status check_weight(double w, fedc_err *err)
{
    if (!isfinite(w))
        return fedc_err_set(err, FEDC_ERR_NONFINITE, "accumulator: weight is %g", w);
    if (!(fabs(w) < WEIGHT_LIMIT))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "accumulator: weight %g is outside the exact range (|w| < 2^30)", w);
    return FEDC_OK;
}

static fedc_status element_error(const float *x, size_t i, double w, fedc_err *err)
{
    if (!isfinite(x[i]))
        return fedc_err_set(err, FEDC_ERR_NONFINITE, "element %zu is %g", i, (double)x[i]);
    return fedc_err_set(err, FEDC_ERR_RANGE,
                        "element %zu: weight %g * value %g = %g is outside the exact "
                        "accumulator's range (|w x| < 2^30)",
                        i, w, (double)x[i], w * (double)x[i]);
}

/* The bound units one add contributes: ceil(max |term| and |w|, in units of 1.0) + 1. */
static int64_t bound_units(double max_scaled, double w)
{
    double m = max_scaled / SCALE;
    if (fabs(w) > m) m = fabs(w);
    return (int64_t)ceil(m) + 1;
}

/* Records an add whose terms are already in the sums; fails (caller undoes) if the bound would
 * leave the exact range. */
static fedc_status commit_add(fedc_accum *acc, double w, double max_scaled, fedc_err *err)
{
    int64_t units = bound_units(max_scaled, w);
    if (BOUND(acc) + units >= BOUND_LIMIT)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "accumulator: the sum of the adds' largest terms would reach 2^31 "
                            "(this add: %g); the exact sum could overflow",
                            max_scaled / SCALE);
    BOUND(acc) += units;
    W_SUM(acc) = wrap_add(W_SUM(acc), llrint(w * SCALE));
    COUNT(acc) += 1;
    return FEDC_OK;
}

/* ---- folds by range (a vector folded piece by piece as it arrives) ---- */

size_t fedci_accum_range_block(void) { return CHUNK; }

fedc_status fedci_accum_fold_range(fedc_accum *acc, double weight, size_t off, const float *x,
                                   size_t len, double *mx, fedc_err *err)
{
    assert(acc && mx && (x || len == 0));
    assert(off % CHUNK == 0 && off <= acc->n && len <= acc->n - off);
    assert((len % CHUNK == 0 || off + len == acc->n) && "a range ends on a block or at n");
    FEDC_TRY(check_weight(weight, err));
    const double wd = weight * SCALE;
    double m = *mx;
    for (size_t c = 0; c < len; c += CHUNK) {
        size_t l = len - c < CHUNK ? len - c : CHUNK;
        ptrdiff_t bad = fold_chunk(acc->data + off + c, x + c, l, wd, +1, &m);
        if (bad >= 0) {
            for (size_t u = 0; u < c; u += CHUNK) { /* this call's blocks so far */
                double unused = 0;
                ptrdiff_t b2 = fold_chunk(acc->data + off + u, x + u, CHUNK, wd, -1, &unused);
                assert(b2 < 0);
                (void)b2;
            }
            fedc_status st = element_error(x, c + (size_t)bad, weight, err);
            if (err) fedc_err_prefix(err, "update ");
            return st;
        }
    }
    *mx = m;
    return FEDC_OK;
}

void fedci_accum_unfold_range(fedc_accum *acc, double weight, size_t off, const float *x,
                              size_t len)
{
    assert(acc && off % CHUNK == 0 && off <= acc->n && len <= acc->n - off);
    const double wd = weight * SCALE;
    for (size_t c = 0; c < len; c += CHUNK) {
        size_t l = len - c < CHUNK ? len - c : CHUNK;
        double unused = 0;
        ptrdiff_t bad = fold_chunk(acc->data + off + c, x + c, l, wd, -1, &unused);
        assert(bad < 0); /* the same terms were folded successfully */
        (void)bad;
    }
}

/* The prefolded vector the calling thread announced (fedci_accum_expect_prefolded). */
static _Thread_local struct {
    const fedc_accum *acc;
    const float *x;
    double weight, mx;
    int taken;
} prefolded;

void fedci_accum_expect_prefolded(const fedc_accum *acc, const float *x, double weight,
                                  double mx)
{
    prefolded.acc = acc;
    prefolded.x = x;
    prefolded.weight = weight;
    prefolded.mx = mx;
    prefolded.taken = 0;
}

int fedci_accum_prefolded_taken(void)
{
    int t = prefolded.taken;
    memset(&prefolded, 0, sizeof prefolded);
    return t;
}

fedc_status fedc_accum_add(fedc_accum *acc, double weight, const float *x, fedc_err *err)
{
    assert(acc && x);
    if (prefolded.acc == acc && prefolded.x == x && !prefolded.taken) {
        /* x's terms are in the sums already (folded by range as it arrived): only the add is
         * recorded. The sums are not touched here, whatever happens (the caller, who folded
         * them without this add's locks, takes the terms out when the add does not take them) */
        if (prefolded.weight != weight)
            return fedc_err_set(err, FEDC_ERR_INTERNAL,
                                "accumulator: the vector was folded with weight %g, added with %g",
                                prefolded.weight, weight);
        FEDC_TRY(commit_add(acc, weight, prefolded.mx, err));
        prefolded.taken = 1;
        return FEDC_OK;
    }
    FEDC_TRY(check_weight(weight, err));
    const double wd = weight * SCALE;
    double mx = 0;
    for (size_t c = 0; c < acc->n; c += CHUNK) {
        size_t len = acc->n - c < CHUNK ? acc->n - c : CHUNK;
        ptrdiff_t bad = fold_chunk(acc->data + c, x + c, len, wd, +1, &mx);
        if (bad >= 0) {
            unfold_range(acc, x, c, wd);
            return element_error(x, c + (size_t)bad, weight, err);
        }
    }
    fedc_status st = commit_add(acc, weight, mx, err);
    if (st != FEDC_OK) unfold_range(acc, x, acc->n, wd);
    return st;
}

void fedci_accum_undo(fedc_accum *acc, double weight, const float *x)
{
    assert(acc && x && COUNT(acc) > 0);
    const double wd = weight * SCALE;
    double mx = 0;
    for (size_t c = 0; c < acc->n; c += CHUNK) {
        size_t len = acc->n - c < CHUNK ? acc->n - c : CHUNK;
        ptrdiff_t bad = fold_chunk(acc->data + c, x + c, len, wd, -1, &mx);
        assert(bad < 0); /* the same vector was added successfully */
        (void)bad;
    }
    BOUND(acc) -= bound_units(mx, weight);
    W_SUM(acc) = wrap_sub(W_SUM(acc), llrint(weight * SCALE));
    COUNT(acc) -= 1;
}

fedc_status fedc_accum_add_many(fedc_accum *acc, size_t k, const double *weights,
                                const float *const *xs, fedc_status *status, fedc_err *err)
{
    assert(acc && (k == 0 || (weights && xs)));
    fedc_status first = FEDC_OK;
    fedc_err tmp;
    for (size_t b = 0; b < k; b += MANY_BATCH) {
        size_t nb = k - b < MANY_BATCH ? k - b : MANY_BATCH;
        fedc_status st[MANY_BATCH];
        double mx[MANY_BATCH], wd[MANY_BATCH];
        for (size_t j = 0; j < nb; j++) {
            assert(xs[b + j]);
            mx[j] = 0;
            wd[j] = weights[b + j] * SCALE;
            st[j] = check_weight(weights[b + j], &tmp);
            if (st[j] != FEDC_OK && first == FEDC_OK) {
                first = st[j];
                fedc_err_set(err, st[j], "vector %zu: %s", b + j, tmp.msg);
            }
        }
        for (size_t c = 0; c < acc->n; c += CHUNK) {
            size_t len = acc->n - c < CHUNK ? acc->n - c : CHUNK;
            for (size_t j = 0; j < nb; j++) {
                if (st[j] != FEDC_OK) continue;
                const float *x = xs[b + j];
                if (c + 2 * CHUNK <= acc->n)
                    for (size_t o = 0; o < CHUNK; o += 16) __builtin_prefetch(x + c + CHUNK + o);
                ptrdiff_t bad = fold_chunk(acc->data + c, x + c, len, wd[j], +1, &mx[j]);
                if (bad >= 0) {
                    unfold_range(acc, x, c, wd[j]);
                    st[j] = element_error(x, c + (size_t)bad, weights[b + j], &tmp);
                    if (first == FEDC_OK) {
                        first = st[j];
                        fedc_err_set(err, st[j], "vector %zu: %s", b + j, tmp.msg);
                    }
                }
            }
        }
        for (size_t j = 0; j < nb; j++) {
            if (st[j] == FEDC_OK) {
                st[j] = commit_add(acc, weights[b + j], mx[j], &tmp);
                if (st[j] != FEDC_OK) {
                    unfold_range(acc, xs[b + j], acc->n, wd[j]);
                    if (first == FEDC_OK) {
                        first = st[j];
                        fedc_err_set(err, st[j], "vector %zu: %s", b + j, tmp.msg);
                    }
                }
            }
            if (status) status[b + j] = st[j];
        }
    }
    return first;
}

fedc_status fedc_accum_merge(fedc_accum *acc, const fedc_accum *other, fedc_err *err)
{
    assert(acc && other);
    if (acc->n != other->n)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "accumulator merge: lengths %zu and %zu differ",
                            acc->n, other->n);
    if (other->data[other->n + 2] < 0 || BOUND(acc) + other->data[other->n + 2] >= BOUND_LIMIT)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "accumulator merge: the combined range bound reaches 2^31; the exact "
                            "sum could overflow");
    int64_t *restrict a = acc->data;
    const int64_t *restrict o = other->data;
    for (size_t i = 0; i < acc->n + FEDC_ACCUM_TRAILER; i++) a[i] = wrap_add(a[i], o[i]);
    return FEDC_OK;
}

fedc_status fedc_accum_check_raw(const fedc_accum *acc, fedc_err *err)
{
    assert(acc);
    if (COUNT(acc) < 0 || BOUND(acc) < 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "accumulator: negative count (%lld) or bound (%lld) after reduction",
                            (long long)COUNT(acc), (long long)BOUND(acc));
    if (BOUND(acc) >= BOUND_LIMIT)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "accumulator: range bound %lld reaches 2^31 after reduction; the "
                            "exact sum could overflow",
                            (long long)BOUND(acc));
    return FEDC_OK;
}

fedc_status fedc_accum_mean(const fedc_accum *acc, float *out, fedc_err *err)
{
    assert(acc && out);
    if (COUNT(acc) == 0)
        return fedc_err_set(err, FEDC_ERR_STATE, "accumulator: nothing was added");
    if (W_SUM(acc) <= 0)
        return fedc_err_set(err, FEDC_ERR_STATE, "accumulator: the sum of weights is %g",
                            (double)W_SUM(acc) / SCALE);
    const double wsum = (double)W_SUM(acc);
    const int64_t *s = acc->data;
    for (size_t i = 0; i < acc->n; i++) out[i] = (float)((double)s[i] / wsum);
    return FEDC_OK;
}

void fedc_accum_sum(const fedc_accum *acc, double scale, float *out)
{
    assert(acc && out);
    const double f = scale / SCALE;
    const int64_t *s = acc->data;
    for (size_t i = 0; i < acc->n; i++) out[i] = (float)((double)s[i] * f);
}

double fedc_accum_weight(const fedc_accum *acc)
{
    assert(acc);
    return (double)W_SUM(acc) / SCALE;
}

uint64_t fedc_accum_count(const fedc_accum *acc)
{
    assert(acc);
    return (uint64_t)COUNT(acc);
}

int64_t *fedc_accum_raw(fedc_accum *acc, size_t *len)
{
    assert(acc && len);
    *len = acc->n + FEDC_ACCUM_TRAILER;
    return acc->data;
}

/* ---- benchmark ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

fedc_status fedc_accum_bench(size_t n, size_t k, double min_seconds, fedc_accum_bench_result *out,
                             fedc_err *err)
{
    assert(out && n > 0);
    if (k == 0) k = 1;
    memset(out, 0, sizeof *out);
    out->n = n;
    out->k = k;
    fedc_status st = FEDC_OK;
    fedc_accum *acc = NULL;
    float *buf = fedc_malloc(k * n * sizeof(float));
    float *dst = fedc_malloc(n * sizeof(float));
    const float **xs = fedc_malloc(k * sizeof *xs);
    double *ws = fedc_malloc(k * sizeof *ws);
    if (!buf || !dst || !xs || !ws) {
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "accumulator bench: out of memory");
        goto done;
    }
    if ((st = fedc_accum_create(n, &acc, err)) != FEDC_OK) goto done;
    /* Small values of both signs, like a model update. */
    uint32_t h = 2463534242u;
    for (size_t i = 0; i < k * n; i++) {
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        buf[i] = ((float)(h >> 8) * 0x1p-24f - 0.5f) * 0.01f;
    }
    for (size_t j = 0; j < k; j++) {
        xs[j] = buf + j * n;
        ws[j] = 1.0 + (double)j;
    }
    const double bytes = (double)n * sizeof(float);

    /* memcpy, cycling through the k sources like the folds do */
    size_t reps = 0;
    double t0 = now_seconds(), t = t0;
    while (t - t0 < min_seconds) {
        for (size_t j = 0; j < k; j++) memcpy(dst, xs[j], n * sizeof(float));
        reps += k;
        t = now_seconds();
    }
    out->copy_gbps = bytes * (double)reps / (t - t0) / 1e9;

    reps = 0;
    t0 = t = now_seconds();
    /* No resets in the timed loops: the bench's terms are tiny, the bound cannot be reached. */
    while (t - t0 < min_seconds) {
        for (size_t j = 0; j < k; j++)
            if ((st = fedc_accum_add(acc, ws[j], xs[j], err)) != FEDC_OK) goto done;
        reps += k;
        t = now_seconds();
    }
    out->fold_gbps = bytes * (double)reps / (t - t0) / 1e9;

    reps = 0;
    t0 = t = now_seconds();
    while (t - t0 < min_seconds) {
        if ((st = fedc_accum_add_many(acc, k, ws, xs, NULL, err)) != FEDC_OK) goto done;
        reps += k;
        t = now_seconds();
    }
    out->fold_many_gbps = bytes * (double)reps / (t - t0) / 1e9;
    /* Keep the compiler from dropping the copies. */
    if (dst[n / 2] == 12345.0f) out->copy_gbps += 0;

done:
    fedc_accum_destroy(acc);
    fedc_free(buf);
    fedc_free(dst);
    fedc_free(xs);
    fedc_free(ws);
    return st;
}
