/*
 * Skinny GEMM kernels, a template included by gemm.c once per instruction set (SK_SUFFIX,
 * SK_VL lanes, SK_TARGET). They cover the products of a dense layer at small batch B, where
 * BLAS packs the whole weight matrix for a product that only touches it once:
 *   nt: C[M,N] += A[M,K] B[N,K]^T, M <= 16   (forward:      y  = x W^T)
 *   nn: C[M,N] += A[M,K] B[K,N],   M <= 16   (input grad:   dx = dy W)
 *   tn: C[M,N] += A[K,M]^T B[K,N], K <= 16   (weight grad:  dW = dy^T x)
 * Each streams the big operand exactly once and keeps a register tile of C. Vector code uses
 * GCC/Clang vector extensions; unaligned loads and stores go through memcpy (one instruction).
 */

#define SK_CAT2(a, b) a##b
#define SK_CAT(a, b) SK_CAT2(a, b)
#define SK_FN(name) SK_CAT(name, SK_SUFFIX)

typedef float SK_FN(skv_) __attribute__((vector_size(SK_VL * 4)));
#define SKV SK_FN(skv_)

SK_TARGET static inline __attribute__((always_inline)) SKV SK_FN(sk_load)(const float *p)
{
    SKV v;
    memcpy(&v, p, sizeof v);
    return v;
}

SK_TARGET static inline __attribute__((always_inline)) void SK_FN(sk_store)(float *p, SKV v)
{
    memcpy(p, &v, sizeof v);
}

SK_TARGET static inline __attribute__((always_inline)) SKV SK_FN(sk_splat)(float x)
{
    SKV v;
    for (int i = 0; i < SK_VL; i++) v[i] = x;
    return v;
}

SK_TARGET static inline __attribute__((always_inline)) float SK_FN(sk_hsum)(SKV v)
{
    float s[SK_VL];
    memcpy(s, &v, sizeof s);
    for (int w = SK_VL / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) s[i] += s[i + w];
    return s[0];
}

/* ---- nt: dot products, a tile of MB rows of A by NB rows of B over k in [0, kc) ---- */

SK_TARGET static inline __attribute__((always_inline)) void
SK_FN(sk_nt_tile)(int MB, int NB, int kc, const float *A, int lda, const float *B, int ldb,
                  float alpha, float *C, int ldc)
{
    SKV acc[4][3];
    for (int r = 0; r < MB; r++)
        for (int c = 0; c < NB; c++) acc[r][c] = SK_FN(sk_splat)(0.0f);
    int k = 0;
    for (; k + SK_VL <= kc; k += SK_VL) {
        SKV b[3];
        for (int c = 0; c < NB; c++) b[c] = SK_FN(sk_load)(B + (size_t)c * ldb + k);
        for (int r = 0; r < MB; r++) {
            SKV a = SK_FN(sk_load)(A + (size_t)r * lda + k);
            for (int c = 0; c < NB; c++) acc[r][c] += a * b[c];
        }
    }
    for (int r = 0; r < MB; r++)
        for (int c = 0; c < NB; c++) {
            float s = SK_FN(sk_hsum)(acc[r][c]);
            for (int kk = k; kk < kc; kk++) s += A[(size_t)r * lda + kk] * B[(size_t)c * ldb + kk];
            C[(size_t)r * ldc + c] += alpha * s;
        }
}

#define SK_NT_KC 512

SK_TARGET static void SK_FN(sk_nt)(int M, int N, int K, float alpha, const float *A, int lda,
                                   const float *B, int ldb, float *C, int ldc)
{
    for (int k0 = 0; k0 < K; k0 += SK_NT_KC) {
        const int kc = K - k0 < SK_NT_KC ? K - k0 : SK_NT_KC;
        for (int j = 0; j < N; j += 3) {
            const int nb = N - j < 3 ? N - j : 3;
            const float *Bj = B + (size_t)j * ldb + k0;
            for (int i = 0; i < M; i += 4) {
                const int mb = M - i < 4 ? M - i : 4;
                const float *Ai = A + (size_t)i * lda + k0;
                float *Cij = C + (size_t)i * ldc + j;
#define SK_NT_CASE(mm, nn)                                                                     \
    case (mm) * 4 + (nn): SK_FN(sk_nt_tile)(mm, nn, kc, Ai, lda, Bj, ldb, alpha, Cij, ldc); break;
                switch (mb * 4 + nb) {
                    SK_NT_CASE(1, 1) SK_NT_CASE(1, 2) SK_NT_CASE(1, 3)
                    SK_NT_CASE(2, 1) SK_NT_CASE(2, 2) SK_NT_CASE(2, 3)
                    SK_NT_CASE(3, 1) SK_NT_CASE(3, 2) SK_NT_CASE(3, 3)
                    SK_NT_CASE(4, 1) SK_NT_CASE(4, 2) SK_NT_CASE(4, 3)
                default: break;
                }
#undef SK_NT_CASE
            }
        }
    }
}

/* ---- nn and tn: outer products over k, a tile of MB rows by NV vectors of C ---- */

/* C[r, n0 .. n0 + NV*VL) for r < MB: acc = sum_k a(r, k) * B[k, n0 ..]; then
 * C = alpha * acc + beta * C. a(r, k) = A[r*ars + k*aks]. */
SK_TARGET static inline __attribute__((always_inline)) void
SK_FN(sk_outer_tile)(int MB, int NV, int K, const float *A, int ars, int aks, const float *B,
                     int ldb, float alpha, float beta, float *C, int ldc)
{
    SKV acc[8][4];
    for (int r = 0; r < MB; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = SK_FN(sk_splat)(0.0f);
    for (int k = 0; k < K; k++) {
        SKV b[4];
        for (int v = 0; v < NV; v++) b[v] = SK_FN(sk_load)(B + (size_t)k * ldb + v * SK_VL);
        for (int r = 0; r < MB; r++) {
            SKV a = SK_FN(sk_splat)(A[(size_t)r * ars + (size_t)k * aks]);
            for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];
        }
    }
    const SKV va = SK_FN(sk_splat)(alpha), vb = SK_FN(sk_splat)(beta);
    for (int r = 0; r < MB; r++)
        for (int v = 0; v < NV; v++) {
            float *c = C + (size_t)r * ldc + v * SK_VL;
            SKV out = va * acc[r][v];
            if (beta != 0.0f) out += vb * SK_FN(sk_load)(c);
            SK_FN(sk_store)(c, out);
        }
}

/* Columns [n_done, N) that do not fill a vector: scalar. */
SK_TARGET static inline __attribute__((always_inline)) void
SK_FN(sk_outer_tail)(int MB, int n0, int N, int K, const float *A, int ars, int aks,
                     const float *B, int ldb, float alpha, float beta, float *C, int ldc)
{
    for (int r = 0; r < MB; r++)
        for (int n = n0; n < N; n++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++) s += A[(size_t)r * ars + (size_t)k * aks] * B[(size_t)k * ldb + n];
            float *c = C + (size_t)r * ldc + n;
            *c = beta != 0.0f ? alpha * s + beta * *c : alpha * s;
        }
}

/* Rows in blocks of RB (<= 8), columns in blocks of NVB vectors then single vectors. */
#define SK_OUTER_BODY(RB, NVB, M, N, K, A, ars, aks, B, ldb, alpha, beta, C, ldc)             \
    for (int i = 0; i < (M); i += (RB)) {                                                     \
        const int mb = (M) - i < (RB) ? (M) - i : (RB);                                       \
        const float *Ai = (A) + (size_t)i * (ars);                                            \
        float *Ci = (C) + (size_t)i * (ldc);                                                  \
        int n = 0;                                                                            \
        for (; n + (NVB) * SK_VL <= (N); n += (NVB) * SK_VL) SK_OUTER_SWITCH(mb, NVB);         \
        for (; n + SK_VL <= (N); n += SK_VL) SK_OUTER_SWITCH(mb, 1);                           \
        if (n < (N)) SK_FN(sk_outer_tail)(mb, n, (N), (K), Ai, (ars), (aks), (B), (ldb),      \
                                          (alpha), (beta), Ci, (ldc));                        \
    }

#define SK_OUTER_CALL(mm, nv)                                                                  \
    SK_FN(sk_outer_tile)(mm, nv, K, Ai, ars, aks, B + n, ldb, alpha, beta, Ci + n, ldc)
#define SK_OUTER_SWITCH(mb, nv)                                                                \
    do {                                                                                       \
        switch (mb) {                                                                          \
        case 1: SK_OUTER_CALL(1, nv); break;                                                   \
        case 2: SK_OUTER_CALL(2, nv); break;                                                   \
        case 3: SK_OUTER_CALL(3, nv); break;                                                   \
        case 4: SK_OUTER_CALL(4, nv); break;                                                   \
        case 5: SK_OUTER_CALL(5, nv); break;                                                   \
        case 6: SK_OUTER_CALL(6, nv); break;                                                   \
        case 7: SK_OUTER_CALL(7, nv); break;                                                   \
        case 8: SK_OUTER_CALL(8, nv); break;                                                   \
        default: break;                                                                        \
        }                                                                                      \
    } while (0)

/* nn: a(r, k) = A[r*lda + k]. Row blocks of 4 by 4 vectors (2 with 8-lane vectors). */
SK_TARGET static void SK_FN(sk_nn)(int M, int N, int K, float alpha, const float *A, int lda,
                                   const float *B, int ldb, float beta, float *C, int ldc)
{
    const int ars = lda, aks = 1;
    SK_OUTER_BODY(4, SK_NN_NV, M, N, K, A, ars, aks, B, ldb, alpha, beta, C, ldc)
}

/* tn: a(r, k) = A[k*lda + r]. Row blocks of 8 (4 with 8-lane vectors) by 2 vectors. */
SK_TARGET static void SK_FN(sk_tn)(int M, int N, int K, float alpha, const float *A, int lda,
                                   const float *B, int ldb, float beta, float *C, int ldc)
{
    const int ars = 1, aks = lda;
    SK_OUTER_BODY(SK_TN_MB, 2, M, N, K, A, ars, aks, B, ldb, alpha, beta, C, ldc)
}

#undef SK_OUTER_BODY
#undef SK_OUTER_CALL
#undef SK_OUTER_SWITCH
#undef SK_NT_KC
#undef SKV
#undef SK_FN
#undef SK_CAT
#undef SK_CAT2
