/* The gemm adapter: the plain-C kernel against a double-precision reference, and the BLAS
 * path against the plain kernel, over every transpose combination, alpha/beta, leading
 * dimensions wider than the matrices, and the shapes the engine uses (skinny batch-10
 * products, tall-and-thin conv products). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "nn/nn_internal.h"
#include "testutil.h"

typedef void (*gemm_fn)(int, int, int, int, int, float, const float *, int, const float *, int,
                        float, float *, int);

/* C = alpha op(A) op(B) + beta C in double, as the oracle's oracle. */
static void ref_gemm(int ta, int tb, int M, int N, int K, double alpha, const float *A, int lda,
                     const float *B, int ldb, double beta, double *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += a * b;
            }
            C[(size_t)i * ldc + j] = alpha * s + beta * C[(size_t)i * ldc + j];
        }
}

static void check(gemm_fn fn, const char *name, int ta, int tb, int M, int N, int K, float alpha,
                  float beta, int pad)
{
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int arows = ta ? K : M, brows = tb ? N : K;
    float *A = malloc(sizeof(float) * (size_t)arows * lda + 4);
    float *B = malloc(sizeof(float) * (size_t)brows * ldb + 4);
    float *C = malloc(sizeof(float) * (size_t)M * ldc + 4);
    double *R = malloc(sizeof(double) * (size_t)M * ldc + 4);
    fedc_rng r;
    fedc_rng_init(&r, 1, (uint32_t)M, (uint32_t)(N * 131 + K), FEDC_RNG_DATA);
    for (size_t i = 0; i < (size_t)arows * lda; i++) A[i] = (float)fedc_rng_normal(&r);
    for (size_t i = 0; i < (size_t)brows * ldb; i++) B[i] = (float)fedc_rng_normal(&r);
    for (size_t i = 0; i < (size_t)M * ldc; i++) {
        C[i] = beta == 0.0f ? NAN : (float)fedc_rng_normal(&r); /* beta 0: C is not read */
        R[i] = beta == 0.0f ? 0.0 : C[i];
    }
    fn(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    ref_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    /* float32 sums of K products of N(0,1) values: error ~ sqrt(K) * 6e-8 * |terms|. */
    double tol = 1e-5 * sqrt((double)K + 1) * (fabs(alpha) + fabs(beta) + 1);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double got = C[(size_t)i * ldc + j], want = R[(size_t)i * ldc + j];
            if (!(fabs(got - want) <= tol * (1 + fabs(want))))
                fail_msg("%s ta=%d tb=%d M=%d N=%d K=%d alpha=%g beta=%g: C[%d,%d] = %.7g, "
                         "expected %.7g",
                         name, ta, tb, M, N, K, (double)alpha, (double)beta, i, j, got, want);
        }
    /* Padding columns of C are untouched. */
    for (int i = 0; i < M && pad; i++)
        for (int j = N; j < ldc; j++) {
            double got = C[(size_t)i * ldc + j];
            if (beta == 0.0f ? !isnan(got) : got != (float)R[(size_t)i * ldc + j])
                fail_msg("%s wrote outside the matrix at [%d,%d]", name, i, j);
        }
    free(A);
    free(B);
    free(C);
    free(R);
}

static void run_all(gemm_fn fn, const char *name)
{
    static const int dims[][3] = {{1, 1, 1},    {3, 5, 7},     {17, 9, 33},  {10, 64, 100},
                                  {64, 10, 100}, {32, 100, 25}, {7, 130, 1},  {40, 3, 257},
                                  {10, 200, 78}, {5, 1, 16}};
    static const float ab[][2] = {{1, 0}, {1, 1}, {-0.5f, 2}, {2, 0}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t a = 0; a < sizeof ab / sizeof ab[0]; a++)
                    check(fn, name, ta, tb, dims[d][0], dims[d][1], dims[d][2], ab[a][0],
                          ab[a][1], (int)((d + a) % 3));
}

static void test_plain(void **state)
{
    (void)state;
    run_all(fedci_gemm_plain, "plain");
}

static void test_blas(void **state)
{
    (void)state;
    run_all(fedci_gemm_blas, "blas");
}

static void test_adapter(void **state)
{
    (void)state;
    run_all(fedci_gemm, "adapter");
    /* Engine-sized shapes: the CNN's conv2 per sample, dense at batch 10. */
    check(fedci_gemm, "adapter", 0, 0, 64, 196, 800, 1, 0, 0);
    check(fedci_gemm, "adapter", 0, 1, 64, 800, 196, 1, 1, 0);
    check(fedci_gemm, "adapter", 1, 0, 800, 196, 64, 1, 0, 0);
    check(fedci_gemm, "adapter", 0, 1, 10, 512, 3136, 1, 1, 0);
    check(fedci_gemm, "adapter", 1, 0, 512, 3136, 10, 1, 0, 0);
    check(fedci_gemm, "adapter", 0, 0, 10, 3136, 512, 1, 0, 0);
}

/* The skinny kernels directly (small batch side), over tile and vector remainders. */
static int skinny_ran;

static void skinny_fn(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    if (fedci_gemm_skinny(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        skinny_ran++;
    else
        fedci_gemm_plain(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void skinny_all(void)
{
    /* Rows: 1..5 cover every tile remainder, 10 and 16 several tiles; columns and depths
     * cover whole vectors, vector remainders and (513) more than one block. */
    static const int ms[] = {1, 2, 3, 4, 5, 10, 16};
    static const int ns[] = {4, 17, 64, 129};
    static const int ks[] = {3, 16, 47, 513};
    int cases = 0;
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++)
            for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
                int M = ms[a], N = ns[b], K = ks[c], pad = (int)((a + b + c) % 3);
                float beta = (a + c) % 2 ? 1.0f : 0.0f, alpha = b % 2 ? 1.0f : -0.5f;
                check(skinny_fn, "skinny nt", 0, 1, M, N, K, alpha, beta, pad);
                check(skinny_fn, "skinny nn", 0, 0, M, N, K, alpha, beta, pad);
                /* tn: the small side is K (a weight gradient over a batch of M... K rows) */
                check(skinny_fn, "skinny tn", 1, 0, N, K > 16 ? 100 : K + 30, M, alpha, beta, pad);
                cases += 3;
            }
    if (skinny_ran > 0) assert_true(skinny_ran > cases / 2);
}

static void test_skinny(void **state)
{
    (void)state;
    int any = 0;
    for (int isa = 2; isa >= 1; isa--) { /* AVX-512, then AVX2, as far as the CPU has them */
        fedci_gemm_cap_isa(isa);
        skinny_ran = 0;
        skinny_all();
        any += skinny_ran > 0;
    }
    fedci_gemm_cap_isa(0);
    skinny_ran = 0;
    check(skinny_fn, "no skinny", 0, 1, 4, 64, 64, 1, 0, 0);
    assert_int_equal(skinny_ran, 0);
    fedci_gemm_cap_isa(-1);
    if (!any) skip(); /* neither AVX2 nor AVX-512: the adapter uses BLAS */
}

/* K = 0 is a scaling of C. */
static void test_k_zero(void **state)
{
    (void)state;
    float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {0}, B[1] = {0};
    fedci_gemm(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 2.0f, C, 3);
    for (int i = 0; i < 6; i++) assert_true(C[i] == 2.0f * (float)(i + 1));
    fedci_gemm_plain(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 0.0f, C, 3);
    for (int i = 0; i < 6; i++) assert_true(C[i] == 0.0f);
}

static void test_bench_helper(void **state)
{
    (void)state;
    double g = 0;
    assert_int_equal(fedc_nn_bench_gemm(64, 64, 64, 0.01, &g), FEDC_OK);
    assert_true(g > 0.01);
    assert_int_equal(fedc_nn_bench_gemm(0, 64, 64, 0.01, &g), FEDC_ERR_INVALID);
    assert_non_null(fedc_nn_blas_core());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain), cmocka_unit_test(test_blas),
        cmocka_unit_test(test_adapter), cmocka_unit_test(test_skinny),
        cmocka_unit_test(test_k_zero),
        cmocka_unit_test(test_bench_helper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
