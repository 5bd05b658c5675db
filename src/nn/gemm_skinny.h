/*
 * Skinny GEMM kernels, a template included by gemm.c once per instruction set (SK_SUFFIX,
 * SK_VL lanes, SK_TARGET, tile sizes); no include guard on purpose. They cover the products
 * of a dense layer at small batch B, for which BLAS packs the whole weight matrix although
 * each weight is used only B times:
 *   nt: C = alpha A[M,K] B[N,K]^T (+ C, pre-scaled by the caller), M <= 16  (y  = x W^T)
 *   nn: C = alpha A[M,K] B[K,N] + beta C,                          M <= 16  (dx = dy W)
 *   tn: C = alpha A[K,M]^T B[K,N] + beta C,                        K <= 16  (dW = dy^T x)
 * Each streams the big operand once and keeps a register tile of C. Vector code uses
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

/* The first n (< SK_VL) lanes from p, the rest 0; and the first n lanes to p. */
SK_TARGET static inline __attribute__((always_inline)) SKV SK_FN(sk_load_part)(const float *p,
                                                                               int n)
{
    float t[SK_VL] = {0};
    memcpy(t, p, (size_t)n * sizeof *t);
    return SK_FN(sk_load)(t);
}

SK_TARGET static inline __attribute__((always_inline)) void SK_FN(sk_store_part)(float *p, SKV v,
                                                                                 int n)
{
    float t[SK_VL];
    SK_FN(sk_store)(t, v);
    memcpy(p, t, (size_t)n * sizeof *t);
}

SK_TARGET static inline __attribute__((always_inline)) SKV SK_FN(sk_splat)(float x)
{
    const SKV zero = {0};
    return zero + x; /* vector + scalar broadcasts the scalar (one instruction) */
}

typedef float SK_FN(skh_) __attribute__((vector_size(SK_VL * 2)));
typedef float SK_FN(skq_) __attribute__((vector_size(16)));

/* Horizontal sum by halving: extract-and-add down to 4 lanes, then scalars. */
SK_TARGET static inline __attribute__((always_inline)) float SK_FN(sk_hsum)(SKV v)
{
    SK_FN(skh_) lo, hi;
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (const char *)&v + sizeof lo, sizeof hi);
    lo += hi;
#if SK_VL == 16
    SK_FN(skq_) a, b;
    memcpy(&a, &lo, sizeof a);
    memcpy(&b, (const char *)&lo + sizeof a, sizeof b);
    a += b;
#else
    SK_FN(skq_) a = lo;
#endif
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* ---- nt: dot products, a tile of MB rows of A by NB rows of B over k in [0, kc) ---- */

_Static_assert(SK_NT_MB >= 3 && SK_NT_MB <= 5, "the nt row switch covers 3 to 5 rows");

SK_TARGET static inline __attribute__((always_inline)) void
SK_FN(sk_nt_tile)(int MB, int NB, int kc, const float *A, int lda, const float *B, int ldb,
                  float alpha, float *C, int ldc)
{
    SKV acc[SK_NT_MB][SK_NT_NB];
    for (int r = 0; r < MB; r++)
        for (int c = 0; c < NB; c++) acc[r][c] = SK_FN(sk_splat)(0.0f);
    int k = 0;
    for (; k + SK_VL <= kc; k += SK_VL) {
        SKV b[SK_NT_NB];
        for (int c = 0; c < NB; c++) b[c] = SK_FN(sk_load)(B + (size_t)c * ldb + k);
        for (int r = 0; r < MB; r++) {
            SKV a = SK_FN(sk_load)(A + (size_t)r * lda + k);
            for (int c = 0; c < NB; c++) acc[r][c] += a * b[c];
        }
    }
    if (k < kc) {
        SKV b[SK_NT_NB];
        for (int c = 0; c < NB; c++) b[c] = SK_FN(sk_load_part)(B + (size_t)c * ldb + k, kc - k);
        for (int r = 0; r < MB; r++) {
            SKV a = SK_FN(sk_load_part)(A + (size_t)r * lda + k, kc - k);
            for (int c = 0; c < NB; c++) acc[r][c] += a * b[c];
        }
    }
    for (int r = 0; r < MB; r++)
        for (int c = 0; c < NB; c++) C[(size_t)r * ldc + c] += alpha * SK_FN(sk_hsum)(acc[r][c]);
}

/* K is cut in blocks so that the rows of A in use stay in L1 while B streams by. */
SK_TARGET static void SK_FN(sk_nt)(int M, int N, int K, float alpha, const float *A, int lda,
                                   const float *B, int ldb, float *C, int ldc)
{
    for (int k0 = 0; k0 < K; k0 += SK_NT_KC) {
        const int kc = K - k0 < SK_NT_KC ? K - k0 : SK_NT_KC;
        for (int j = 0; j < N;) {
            const int nb = N - j >= SK_NT_NB ? SK_NT_NB : 1;
            const float *Bj = B + (size_t)j * ldb + k0;
            for (int i = 0; i < M; i += SK_NT_MB) {
                const int mb = M - i < SK_NT_MB ? M - i : SK_NT_MB;
                const float *Ai = A + (size_t)i * lda + k0;
                float *Cij = C + (size_t)i * ldc + j;
#define SK_NT_CALL(mm, nn) SK_FN(sk_nt_tile)(mm, nn, kc, Ai, lda, Bj, ldb, alpha, Cij, ldc)
#define SK_NT_SWITCH(nn)                                                                       \
    switch (mb) {                                                                              \
    case 1: SK_NT_CALL(1, nn); break;                                                          \
    case 2: SK_NT_CALL(2, nn); break;                                                          \
    case 3: SK_NT_CALL(3, nn); break;                                                          \
    case 4: SK_NT_CALL(4 < SK_NT_MB ? 4 : SK_NT_MB, nn); break;                                \
    default: SK_NT_CALL(SK_NT_MB, nn); break;                                                  \
    }
                if (nb == SK_NT_NB) {
                    SK_NT_SWITCH(SK_NT_NB)
                } else {
                    SK_NT_SWITCH(1)
                }
#undef SK_NT_SWITCH
#undef SK_NT_CALL
            }
            j += nb;
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

/* The last cols (< SK_VL) columns: one partial vector per row. */
SK_TARGET static inline __attribute__((always_inline)) void
SK_FN(sk_outer_tail)(int MB, int cols, int K, const float *A, int ars, int aks, const float *B,
                     int ldb, float alpha, float beta, float *C, int ldc)
{
    SKV acc[8];
    for (int r = 0; r < MB; r++) acc[r] = SK_FN(sk_splat)(0.0f);
    for (int k = 0; k < K; k++) {
        SKV b = SK_FN(sk_load_part)(B + (size_t)k * ldb, cols);
        for (int r = 0; r < MB; r++)
            acc[r] += SK_FN(sk_splat)(A[(size_t)r * ars + (size_t)k * aks]) * b;
    }
    for (int r = 0; r < MB; r++) {
        float *c = C + (size_t)r * ldc;
        SKV out = SK_FN(sk_splat)(alpha) * acc[r];
        if (beta != 0.0f) out += SK_FN(sk_splat)(beta) * SK_FN(sk_load_part)(c, cols);
        SK_FN(sk_store_part)(c, out, cols);
    }
}

/* Rows in blocks of RB (<= 8), columns in blocks of NVB vectors then single vectors. */
#define SK_OUTER_BODY(RB, NVB, M, N, K, A, ars, aks, B, ldb, alpha, beta, C, ldc)             \
    const int sk_k_ = (K);                                                                    \
    const float *sk_b_ = (B);                                                                 \
    const float sk_beta_ = (beta);                                                            \
    for (int i = 0; i < (M); i += (RB)) {                                                     \
        const int mb = (M) - i < (RB) ? (M) - i : (RB);                                       \
        const float *Ai = (A) + (size_t)i * (ars);                                            \
        float *Ci = (C) + (size_t)i * (ldc);                                                  \
        int n = 0;                                                                            \
        for (; n + (NVB) * SK_VL <= (N); n += (NVB) * SK_VL) SK_OUTER_SWITCH(mb, NVB);         \
        for (; n + SK_VL <= (N); n += SK_VL) SK_OUTER_SWITCH(mb, 1);                           \
        if (n < (N)) SK_OUTER_TAIL_SWITCH(mb, (N) - n);                                       \
    }

/* The same with the column blocks outer: a block of B (K rows by NVB vectors) is loaded once
 * and reused from L1 by every row block (nn, where B is the big operand). */
#define SK_OUTER_BODY_COLS(RB, NVB, M, N, K, A, ars, aks, B, ldb, alpha, beta, C, ldc)        \
    const int sk_k_ = (K);                                                                    \
    const float *sk_b_ = (B);                                                                 \
    const float sk_beta_ = (beta);                                                            \
    int n = 0;                                                                                \
    for (; n + (NVB) * SK_VL <= (N); n += (NVB) * SK_VL)                                      \
        SK_OUTER_ROWS(RB, M, A, ars, C, ldc, SK_OUTER_SWITCH(mb, NVB));                        \
    for (; n + SK_VL <= (N); n += SK_VL) SK_OUTER_ROWS(RB, M, A, ars, C, ldc,                  \
                                                       SK_OUTER_SWITCH(mb, 1));                \
    if (n < (N)) SK_OUTER_ROWS(RB, M, A, ars, C, ldc, SK_OUTER_TAIL_SWITCH(mb, (N) - n));
#define SK_OUTER_ROWS(RB, M, A, ars, C, ldc, stmt)                                             \
    for (int i = 0; i < (M); i += (RB)) {                                                     \
        const int mb = (M) - i < (RB) ? (M) - i : (RB);                                       \
        const float *Ai = (A) + (size_t)i * (ars);                                            \
        float *Ci = (C) + (size_t)i * (ldc);                                                  \
        stmt;                                                                                 \
    }

#define SK_OUTER_CALL(mm, nv)                                                                  \
    SK_FN(sk_outer_tile)(mm, nv, sk_k_, Ai, ars, aks, sk_b_ + n, ldb, alpha, sk_beta_, Ci + n, ldc)
#define SK_OUTER_TAIL_CALL(mm, cols)                                                           \
    SK_FN(sk_outer_tail)(mm, cols, sk_k_, Ai, ars, aks, sk_b_ + n, ldb, alpha, sk_beta_, Ci + n, \
                         ldc)
#define SK_OUTER_TAIL_SWITCH(mb, cols)                                                         \
    do {                                                                                       \
        switch (mb) {                                                                          \
        case 1: SK_OUTER_TAIL_CALL(1, cols); break;                                            \
        case 2: SK_OUTER_TAIL_CALL(2, cols); break;                                            \
        case 3: SK_OUTER_TAIL_CALL(3, cols); break;                                            \
        case 4: SK_OUTER_TAIL_CALL(4, cols); break;                                            \
        case 5: SK_OUTER_TAIL_CALL(5, cols); break;                                            \
        case 6: SK_OUTER_TAIL_CALL(6, cols); break;                                            \
        case 7: SK_OUTER_TAIL_CALL(7, cols); break;                                            \
        case 8: SK_OUTER_TAIL_CALL(8, cols); break;                                            \
        default: break;                                                                        \
        }                                                                                      \
    } while (0)
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
    /* K in blocks of SK_NN_KB rows of B: a column block of B then spans few pages (rows of B
     * are far apart) and stays in L1 across the row blocks of A; C accumulates in place. */
    for (int k0 = 0; k0 < K; k0 += SK_NN_KB) {
        const int kb = K - k0 < SK_NN_KB ? K - k0 : SK_NN_KB;
        const int ars = lda, aks = 1;
        const float *Ak = A + k0, *Bk = B + (size_t)k0 * ldb;
        const float bt = k0 == 0 ? beta : 1.0f;
        SK_OUTER_BODY_COLS(SK_NN_RB, SK_NN_NV, M, N, kb, Ak, ars, aks, Bk, ldb, alpha, bt, C, ldc)
    }
}

/* tn: a(r, k) = A[k*lda + r]. Row blocks of 8 (4 with 8-lane vectors) by 2 vectors. */
SK_TARGET static void SK_FN(sk_tn)(int M, int N, int K, float alpha, const float *A, int lda,
                                   const float *B, int ldb, float beta, float *C, int ldc)
{
    const int ars = 1, aks = lda;
    SK_OUTER_BODY(SK_TN_MB, 2, M, N, K, A, ars, aks, B, ldb, alpha, beta, C, ldc)
}

#undef SK_OUTER_BODY
#undef SK_OUTER_BODY_COLS
#undef SK_OUTER_ROWS
#undef SK_OUTER_CALL
#undef SK_OUTER_SWITCH
#undef SK_OUTER_TAIL_CALL
#undef SK_OUTER_TAIL_SWITCH
#undef SKV
#undef SK_FN
#undef SK_CAT
#undef SK_CAT2
