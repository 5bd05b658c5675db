/*
 * The one gemm adapter of the engine: every matrix product goes through fedci_gemm, which
 * calls cblas_sgemm when the build has BLAS (FEDC_WITH_BLAS) and the plain-C kernel
 * otherwise. The plain kernel is also the tests' oracle. BLAS threading and the OpenBLAS
 * kernel family are handled here too.
 */
#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fedc/alloc.h"
#include "nn/nn_internal.h"

#if FEDC_WITH_BLAS
#include <cblas.h>
#endif

/* ---- plain-C kernel ---- */

/* Row i of C = beta * C (C not read when beta == 0). */
static void scale_row(float *c, int n, float beta)
{
    if (beta == 0.0f)
        memset(c, 0, (size_t)n * sizeof *c);
    else if (beta != 1.0f)
        for (int j = 0; j < n; j++) c[j] *= beta;
}

void fedci_gemm_plain(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        scale_row(c, N, beta);
        if (K == 0 || alpha == 0.0f) continue;
        if (!tb) {
            /* c += sum_k a(i,k) * B[k,:]: rows of B are contiguous, the inner loop vectorises. */
            for (int k = 0; k < K; k++) {
                float a = alpha * (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                const float *b = B + (size_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            }
        } else if (!ta) {
            /* c[j] = dot(A[i,:], B[j,:]): both contiguous. */
            const float *a = A + (size_t)i * lda;
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * ldb;
                float s = 0.0f;
                for (int k = 0; k < K; k++) s += a[k] * b[k];
                c[j] += alpha * s;
            }
        } else {
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * ldb;
                float s = 0.0f;
                for (int k = 0; k < K; k++) s += A[(size_t)k * lda + i] * b[k];
                c[j] += alpha * s;
            }
        }
    }
}

/* ---- skinny products (small batch): own kernels, AVX-512 or AVX2 ---- */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FEDCI_HAVE_SKINNY 1
/* acc += a * b must become one fused multiply-add: ISO C mode (-std=c11) turns GCC's
 * contraction off, so ask for it here (Clang contracts within expressions by default). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

#define SK_SUFFIX _avx512
#define SK_VL 16
#define SK_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma")))
#define SK_NN_NV 4
#define SK_NN_RB 5
#define SK_NN_KB FEDCI_SKINNY_NN_KB
#define SK_TN_MB 8
#define SK_NT_MB 5
#define SK_NT_NB 5
#define SK_NT_KC (1 << 30)
#include "nn/gemm_skinny.h"
#undef SK_SUFFIX
#undef SK_VL
#undef SK_TARGET
#undef SK_NN_NV
#undef SK_NN_RB
#undef SK_NN_KB
#undef SK_TN_MB
#undef SK_NT_MB
#undef SK_NT_NB
#undef SK_NT_KC

#define SK_SUFFIX _avx2
#define SK_VL 8
#define SK_TARGET __attribute__((target("avx2,fma")))
#define SK_NN_NV 2
#define SK_NN_RB 4
#define SK_NN_KB FEDCI_SKINNY_NN_KB
#define SK_TN_MB 4
#define SK_NT_MB 3
#define SK_NT_NB 4
#define SK_NT_KC (1 << 30)
#include "nn/gemm_skinny.h"
#undef SK_SUFFIX
#undef SK_VL
#undef SK_TARGET
#undef SK_NN_NV
#undef SK_NN_RB
#undef SK_NN_KB
#undef SK_TN_MB
#undef SK_NT_MB
#undef SK_NT_NB
#undef SK_NT_KC

static atomic_int skinny_cap = -1;

/* 2: AVX-512, 1: AVX2 + FMA, 0: neither; at most the cap set by fedci_gemm_cap_isa. */
static int skinny_isa(void)
{
    static atomic_int isa = -1;
    int v = atomic_load_explicit(&isa, memory_order_relaxed);
    int cap = atomic_load_explicit(&skinny_cap, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
            v = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            v = 1;
        else
            v = 0;
        atomic_store_explicit(&isa, v, memory_order_relaxed);
    }
    return cap >= 0 && cap < v ? cap : v;
}
#endif

void fedci_gemm_cap_isa(int level)
{
#ifdef FEDCI_HAVE_SKINNY
    atomic_store_explicit(&skinny_cap, level, memory_order_relaxed);
#else
    (void)level;
#endif
}

int fedci_gemm_skinny(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
#ifdef FEDCI_HAVE_SKINNY
    const int isa = skinny_isa();
    if (isa == 0 || M < 1 || N < 1 || K < 1) return 0;
    if (!ta && tb && M <= FEDCI_SKINNY_MAX && N >= 4 && K >= 32) {
        for (int i = 0; i < M; i++) scale_row(C + (size_t)i * ldc, N, beta);
        if (isa == 2)
            sk_nt_avx512(M, N, K, alpha, A, lda, B, ldb, C, ldc);
        else
            sk_nt_avx2(M, N, K, alpha, A, lda, B, ldb, C, ldc);
        return 1;
    }
    if (!ta && !tb && M <= FEDCI_SKINNY_MAX && N >= 16) {
        if (isa == 2)
            sk_nn_avx512(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        else
            sk_nn_avx2(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return 1;
    }
    if (ta && !tb && K <= FEDCI_SKINNY_MAX && N >= 16) {
        if (isa == 2)
            sk_tn_avx512(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        else
            sk_tn_avx2(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return 1;
    }
#else
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda;
    (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
#endif
    return 0;
}

/* ---- BLAS ---- */

void fedci_gemm_blas(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
#if FEDC_WITH_BLAS
    if (M == 0 || N == 0) return;
    if (K == 0) {
        for (int i = 0; i < M; i++) scale_row(C + (size_t)i * ldc, N, beta);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    fedci_gemm_plain(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void fedci_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc)
{
    /* Small-batch products: BLAS would pack the large operand for a single use. */
    if ((M <= FEDCI_SKINNY_MAX || K <= FEDCI_SKINNY_MAX) &&
        (double)M * N * K >= 32768.0 &&
        fedci_gemm_skinny(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return;
#if FEDC_WITH_BLAS
    fedci_gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    fedci_gemm_plain(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void fedci_gemm_rows(int ta, int tb, int M, int m0, int mb, int N, int K, const float *A,
                     int lda, const float *B, int ldb, float *C, int ldc)
{
    assert(m0 >= 0 && mb >= 1 && m0 + mb <= M);
    const float *Ab = A + (ta ? (size_t)m0 : (size_t)m0 * lda);
    /* The path fedci_gemm takes for the whole product (the skinny kernels cover a shape
     * whatever its number of rows, so trying the block answers for the whole). */
    if ((M <= FEDCI_SKINNY_MAX || K <= FEDCI_SKINNY_MAX) && (double)M * N * K >= 32768.0 &&
        (ta || M <= FEDCI_SKINNY_MAX) &&
        fedci_gemm_skinny(ta, tb, mb, N, K, 1.0f, Ab, lda, B, ldb, 0.0f, C, ldc))
        return;
#if FEDC_WITH_BLAS
    fedci_gemm_blas(ta, tb, mb, N, K, 1.0f, Ab, lda, B, ldb, 0.0f, C, ldc);
#else
    fedci_gemm_plain(ta, tb, mb, N, K, 1.0f, Ab, lda, B, ldb, 0.0f, C, ldc);
#endif
}

/* ---- threading and kernel family ---- */

static atomic_int blas_threads_chosen;

void fedc_nn_set_blas_threads(int n)
{
    if (n < 1) n = 1;
    atomic_store(&blas_threads_chosen, 1);
#if FEDC_WITH_BLAS
    openblas_set_num_threads(n);
#endif
}

void fedci_blas_threads_default(void)
{
    /* The first workspace of the process sets one thread, unless the caller chose. */
    if (atomic_exchange(&blas_threads_chosen, 1) == 0) {
#if FEDC_WITH_BLAS
        openblas_set_num_threads(1);
#endif
    }
}

const char *fedc_nn_blas_core(void)
{
#if FEDC_WITH_BLAS
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
#else
    return "none";
#endif
}

const char *fedc_nn_blas_suggest_coretype(void)
{
#if FEDC_WITH_BLAS && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (getenv("OPENBLAS_CORETYPE")) return NULL;
    /* Kernel families OpenBLAS falls back to when it does not know a CPU model. */
    static const char *const generic[] = {"Prescott", "Core2",  "Penryn", "Dunnington",
                                          "Nehalem",  "Atom",   "Katmai", "Coppermine",
                                          "Northwood", "Banias", "Sandybridge", "unknown"};
    const char *core = fedc_nn_blas_core();
    int is_generic = 0;
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        if (strcmp(core, generic[i]) == 0) is_generic = 1;
    if (!is_generic) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
#else
    return NULL;
#endif
}

/* ---- benchmark helper ---- */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

fedc_status fedc_nn_bench_gemm(int m, int n, int k, double min_seconds, double *gflops)
{
    assert(gflops);
    if (m < 1 || n < 1 || k < 1 || m > 16384 || n > 16384 || k > 16384)
        return FEDC_ERR_INVALID;
    fedci_blas_threads_default();
    float *A = fedc_malloc((size_t)m * k * sizeof *A);
    float *B = fedc_malloc((size_t)k * n * sizeof *B);
    float *C = fedc_malloc((size_t)m * n * sizeof *C);
    if (!A || !B || !C) {
        fedc_free(A);
        fedc_free(B);
        fedc_free(C);
        return FEDC_ERR_NOMEM;
    }
    for (size_t i = 0; i < (size_t)m * k; i++) A[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)k * n; i++) B[i] = (float)(i % 7) * 0.01f;
    fedci_gemm(0, 0, m, n, k, 1.0f, A, k, B, n, 0.0f, C, n); /* warm-up */
    double best = 0.0, t_start = now_seconds();
    do {
        double t0 = now_seconds();
        fedci_gemm(0, 0, m, n, k, 1.0f, A, k, B, n, 0.0f, C, n);
        double dt = now_seconds() - t0;
        if (dt > 0.0 && 2.0 * m * n * k / dt > best) best = 2.0 * m * n * k / dt;
    } while (now_seconds() - t_start < min_seconds);
    *gflops = best / 1e9;
    fedc_free(A);
    fedc_free(B);
    fedc_free(C);
    return FEDC_OK;
}
