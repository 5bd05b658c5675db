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
#if FEDC_WITH_BLAS
    fedci_gemm_blas(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    fedci_gemm_plain(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
