/*
 * Direct convolution kernels for stride 1, AVX-512 and AVX2: no im2col, no GEMM packing. conv.c
 * takes this path when the CPU has either and the layer's filter count is a multiple of 16
 * (and, for the input gradient, its channel count too); im2col + GEMM stays the path for
 * everything else and the oracle the tests compare against.
 *
 * Why: at batch 10 the cnn preset's second convolution (32 -> 64 channels, 5x5, 14x14) is 82% of
 * the model's FLOPs; as GEMMs its products run at 84-88% of the sgemm peak, and building and
 * scattering the 800-row column matrix costs another fifth of that. Here the three passes read
 * the activations in place (after a transposition to HWC of one sample at a time, a few
 * microseconds) and keep their accumulators in registers.
 *
 * Layouts. A sample is transposed into a zero-padded HWC plane: xh[r][s][c], Hp x Wp x C, with
 * Hp = Ho + k - 1, Wp = Wo + k - 1, the input at (pad_t, pad_l). For a kernel row kh the k taps
 * kw = 0..k-1 of channel c read xh[oh + kh][ow + kw][c] = row(oh + kh)[ow*C + j] with
 * j = kw*C + c: the k*C values one kernel row needs are contiguous. So
 *   forward:  y[f][oh][ow] = b[f] + sum_kh sum_j xh(oh + kh)[ow*C + j] * wt[kh][j][f]
 *   weights:  dW[f][c][kh][kw] = sum_{oh,ow} xh(oh + kh)[ow*C + j] * dy[f][oh][ow]
 *   input:    dx = the forward pass of dy (zero-padded by k-1-pad, HWC) with the kernel
 *             flipped and its channels swapped: wb[kh'][kw'*F + f][c] = W[f][c][k-1-kh'][k-1-kw']
 * with wt[kh][kw*C + c][f] = W[f][c][kh][kw]. The forward tile is one output row segment of up
 * to 14 pixels x 32 filters (28 zmm accumulators; per step of j two weight vectors and 14
 * broadcasts), the weight-gradient tile up to 6 values of j x 64 filters (24 accumulators, per
 * pixel four dy vectors and 6 broadcasts). Every output element is summed in a fixed order that
 * depends only on the shapes: the same bits for any batch split and thread count.
 */
#include <stddef.h>
#include <string.h>

#include "nn/nn_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define CD_TARGET __attribute__((target("avx512f")))
#define CD_INLINE static inline __attribute__((always_inline, target("avx512f")))
#define CD_NP 14 /* pixels per forward tile */

/* ---- forward tile: acc[NP][FV] over kh < k, j < kC ---------------------------------------- */

CD_INLINE void fwd_tile(const float *restrict x, size_t rs, int cs, int kC, int k,
                        const float *restrict w, size_t ws, const float *restrict bias,
                        float *restrict t, const int NP, const int FV)
{
    __m512 acc[CD_NP][2], b0[2];
#pragma GCC unroll 2
    for (int v = 0; v < FV; v++) b0[v] = bias ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 14
    for (int i = 0; i < NP; i++)
#pragma GCC unroll 2
        for (int v = 0; v < FV; v++) acc[i][v] = b0[v];
    for (int kh = 0; kh < k; kh++) {
        const float *xr = x + (size_t)kh * rs;
        const float *wr = w + (size_t)kh * kC * ws;
        for (int j = 0; j < kC; j++, wr += ws) {
            __m512 wv[2];
#pragma GCC unroll 2
            for (int v = 0; v < FV; v++) wv[v] = _mm512_loadu_ps(wr + 16 * v);
#pragma GCC unroll 14
            for (int i = 0; i < NP; i++) {
                const __m512 b = _mm512_set1_ps(xr[(size_t)i * cs + j]);
#pragma GCC unroll 2
                for (int v = 0; v < FV; v++) acc[i][v] = _mm512_fmadd_ps(b, wv[v], acc[i][v]);
            }
        }
    }
#pragma GCC unroll 14
    for (int i = 0; i < NP; i++)
#pragma GCC unroll 2
        for (int v = 0; v < FV; v++) _mm512_storeu_ps(t + (size_t)(i * FV + v) * 16, acc[i][v]);
}

typedef void (*fwd_fn)(const float *restrict, size_t, int, int, int, const float *restrict,
                       size_t, const float *restrict, float *restrict);

#define FWD(NP, FV)                                                                            \
    CD_TARGET static void fwd_##NP##_##FV(const float *restrict x, size_t rs, int cs, int kC,  \
                                          int k, const float *restrict w, size_t ws,           \
                                          const float *restrict bias, float *restrict t)       \
    {                                                                                          \
        fwd_tile(x, rs, cs, kC, k, w, ws, bias, t, NP, FV);                                    \
    }
#define FWD_ALL(FV)                                                                            \
    FWD(1, FV) FWD(2, FV) FWD(3, FV) FWD(4, FV) FWD(5, FV) FWD(6, FV) FWD(7, FV) FWD(8, FV)    \
    FWD(9, FV) FWD(10, FV) FWD(11, FV) FWD(12, FV) FWD(13, FV) FWD(14, FV)
FWD_ALL(1)
FWD_ALL(2)
#define FWD_TAB(FV)                                                                            \
    {NULL, fwd_1_##FV, fwd_2_##FV, fwd_3_##FV, fwd_4_##FV, fwd_5_##FV, fwd_6_##FV, fwd_7_##FV, \
     fwd_8_##FV, fwd_9_##FV, fwd_10_##FV, fwd_11_##FV, fwd_12_##FV, fwd_13_##FV, fwd_14_##FV}
static const fwd_fn fwd_tab[3][CD_NP + 1] = {{NULL}, FWD_TAB(1), FWD_TAB(2)};

/* ---- weight-gradient tile: acc[CB][FV] over pixels -------------------------------------- */

#define CD_CB4 6  /* j values per tile with 4 filter vectors */
#define CD_CB2 13 /* with 2 or 1 */

CD_INLINE void dw_tile(const float *restrict x, size_t rs, int cs, const float *restrict dy,
                       size_t drs, int dcs, int rows, int wo, float *restrict g, size_t gs,
                       const int CB, const int FV)
{
    __m512 acc[CD_CB2][4];
#pragma GCC unroll 13
    for (int c = 0; c < CB; c++)
#pragma GCC unroll 4
        for (int v = 0; v < FV; v++) acc[c][v] = _mm512_loadu_ps(g + (size_t)c * gs + 16 * v);
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * rs, *dr = dy + (size_t)r * drs;
        for (int ow = 0; ow < wo; ow++, xr += cs, dr += dcs) {
            __m512 d[4];
#pragma GCC unroll 4
            for (int v = 0; v < FV; v++) d[v] = _mm512_loadu_ps(dr + 16 * v);
#pragma GCC unroll 13
            for (int c = 0; c < CB; c++) {
                const __m512 b = _mm512_set1_ps(xr[c]);
#pragma GCC unroll 4
                for (int v = 0; v < FV; v++) acc[c][v] = _mm512_fmadd_ps(b, d[v], acc[c][v]);
            }
        }
    }
#pragma GCC unroll 13
    for (int c = 0; c < CB; c++)
#pragma GCC unroll 4
        for (int v = 0; v < FV; v++) _mm512_storeu_ps(g + (size_t)c * gs + 16 * v, acc[c][v]);
}

typedef void (*dw_fn)(const float *restrict, size_t, int, const float *restrict, size_t, int,
                      int, int, float *restrict, size_t);

#define DW(CB, FV)                                                                             \
    CD_TARGET static void dw_##CB##_##FV(const float *restrict x, size_t rs, int cs,           \
                                         const float *restrict dy, size_t drs, int dcs,        \
                                         int rows, int wo, float *restrict g, size_t gs)       \
    {                                                                                          \
        dw_tile(x, rs, cs, dy, drs, dcs, rows, wo, g, gs, CB, FV);                             \
    }
#define DW_13(FV)                                                                              \
    DW(1, FV) DW(2, FV) DW(3, FV) DW(4, FV) DW(5, FV) DW(6, FV) DW(7, FV) DW(8, FV) DW(9, FV) \
    DW(10, FV) DW(11, FV) DW(12, FV) DW(13, FV)
DW_13(1)
DW_13(2)
DW(1, 4) DW(2, 4) DW(3, 4) DW(4, 4) DW(5, 4) DW(6, 4)
#define DW_TAB13(FV)                                                                           \
    {NULL,       dw_1_##FV,  dw_2_##FV,  dw_3_##FV, dw_4_##FV, dw_5_##FV, dw_6_##FV,           \
     dw_7_##FV,  dw_8_##FV,  dw_9_##FV,  dw_10_##FV, dw_11_##FV, dw_12_##FV, dw_13_##FV}
static const dw_fn dw_tab1[CD_CB2 + 1] = DW_TAB13(1);
static const dw_fn dw_tab2[CD_CB2 + 1] = DW_TAB13(2);
static const dw_fn dw_tab4[CD_CB4 + 1] = {NULL, dw_1_4, dw_2_4, dw_3_4, dw_4_4, dw_5_4, dw_6_4};

/* ---- layouts ------------------------------------------------------------------------------ */

/* In-register transpose of the 16x16 block m[row][col]. */
CD_INLINE void tr16(__m512 m[16])
{
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(m[2 * i], m[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(m[2 * i], m[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        m[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        m[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        m[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        m[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    /* m[4a + b] lane q now holds column 4q + b of rows 4a .. 4a+3 */
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++) {
        t[b] = _mm512_shuffle_f32x4(m[b], m[4 + b], 0x88);
        t[4 + b] = _mm512_shuffle_f32x4(m[b], m[4 + b], 0xDD);
        t[8 + b] = _mm512_shuffle_f32x4(m[8 + b], m[12 + b], 0x88);
        t[12 + b] = _mm512_shuffle_f32x4(m[8 + b], m[12 + b], 0xDD);
    }
#pragma GCC unroll 4
    for (int b = 0; b < 4; b++) {
        m[b] = _mm512_shuffle_f32x4(t[b], t[8 + b], 0x88);
        m[8 + b] = _mm512_shuffle_f32x4(t[b], t[8 + b], 0xDD);
        m[4 + b] = _mm512_shuffle_f32x4(t[4 + b], t[12 + b], 0x88);
        m[12 + b] = _mm512_shuffle_f32x4(t[4 + b], t[12 + b], 0xDD);
    }
}

static __mmask16 lanes(int n)
{
    return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
}

/* dst[s*ds + r] = src[r*ss + s] for r < R, s < S (strides in floats, ds may be negative). */
CD_TARGET static void transpose(const float *src, ptrdiff_t ss, float *dst, ptrdiff_t ds, int R,
                                int S)
{
    for (int r0 = 0; r0 < R; r0 += 16) {
        const int nr = R - r0 < 16 ? R - r0 : 16;
        const __mmask16 mr = lanes(nr);
        for (int s0 = 0; s0 < S; s0 += 16) {
            const int ns = S - s0 < 16 ? S - s0 : 16;
            const __mmask16 ms = lanes(ns);
            __m512 m[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                m[i] = i < nr ? _mm512_maskz_loadu_ps(ms, src + (r0 + i) * ss + s0)
                              : _mm512_setzero_ps();
            tr16(m);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) /* unrolled: m stays in registers */
                if (j < ns) _mm512_mask_storeu_ps(dst + (s0 + j) * ds + r0, mr, m[j]);
        }
    }
}

/* ---- AVX2 kernels: 8-float vectors, 16 registers ----------------------------------------- */

#define C2_TARGET __attribute__((target("avx2,fma")))
#define C2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))
#define C2_NP 6 /* pixels per forward tile: 6 x 2 vectors = 12 accumulators */
#define C2_CB 6 /* j values per weight-gradient tile, x 2 vectors */

C2_INLINE void fwd2_tile(const float *restrict x, size_t rs, int cs, int kC, int k,
                         const float *restrict w, size_t ws, const float *restrict bias,
                         float *restrict t, const int NP)
{
    __m256 acc[C2_NP][2];
    const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++) {
        acc[i][0] = b0;
        acc[i][1] = b1;
    }
    for (int kh = 0; kh < k; kh++) {
        const float *xr = x + (size_t)kh * rs;
        const float *wr = w + (size_t)kh * kC * ws;
        for (int j = 0; j < kC; j++, wr += ws) {
            const __m256 w0 = _mm256_loadu_ps(wr), w1 = _mm256_loadu_ps(wr + 8);
#pragma GCC unroll 6
            for (int i = 0; i < NP; i++) {
                const __m256 b = _mm256_broadcast_ss(xr + (size_t)i * cs + j);
                acc[i][0] = _mm256_fmadd_ps(b, w0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(b, w1, acc[i][1]);
            }
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++) {
        _mm256_storeu_ps(t + (size_t)i * 16, acc[i][0]);
        _mm256_storeu_ps(t + (size_t)i * 16 + 8, acc[i][1]);
    }
}

#define FWD2(NP)                                                                               \
    C2_TARGET static void fwd2_##NP(const float *restrict x, size_t rs, int cs, int kC, int k,  \
                                    const float *restrict w, size_t ws,                        \
                                    const float *restrict bias, float *restrict t)             \
    {                                                                                          \
        fwd2_tile(x, rs, cs, kC, k, w, ws, bias, t, NP);                                       \
    }
FWD2(1) FWD2(2) FWD2(3) FWD2(4) FWD2(5) FWD2(6)
static const fwd_fn fwd2_tab[C2_NP + 1] = {NULL, fwd2_1, fwd2_2, fwd2_3, fwd2_4, fwd2_5, fwd2_6};

C2_INLINE void dw2_tile(const float *restrict x, size_t rs, int cs, const float *restrict dy,
                        size_t drs, int dcs, int rows, int wo, float *restrict g, size_t gs,
                        const int CB)
{
    __m256 acc[C2_CB][2];
#pragma GCC unroll 6
    for (int c = 0; c < CB; c++) {
        acc[c][0] = _mm256_loadu_ps(g + (size_t)c * gs);
        acc[c][1] = _mm256_loadu_ps(g + (size_t)c * gs + 8);
    }
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * rs, *dr = dy + (size_t)r * drs;
        for (int ow = 0; ow < wo; ow++, xr += cs, dr += dcs) {
            const __m256 d0 = _mm256_loadu_ps(dr), d1 = _mm256_loadu_ps(dr + 8);
#pragma GCC unroll 6
            for (int c = 0; c < CB; c++) {
                const __m256 b = _mm256_broadcast_ss(xr + c);
                acc[c][0] = _mm256_fmadd_ps(b, d0, acc[c][0]);
                acc[c][1] = _mm256_fmadd_ps(b, d1, acc[c][1]);
            }
        }
    }
#pragma GCC unroll 6
    for (int c = 0; c < CB; c++) {
        _mm256_storeu_ps(g + (size_t)c * gs, acc[c][0]);
        _mm256_storeu_ps(g + (size_t)c * gs + 8, acc[c][1]);
    }
}

#define DW2(CB)                                                                                \
    C2_TARGET static void dw2_##CB(const float *restrict x, size_t rs, int cs,                  \
                                   const float *restrict dy, size_t drs, int dcs, int rows,    \
                                   int wo, float *restrict g, size_t gs)                       \
    {                                                                                          \
        dw2_tile(x, rs, cs, dy, drs, dcs, rows, wo, g, gs, CB);                                \
    }
DW2(1) DW2(2) DW2(3) DW2(4) DW2(5) DW2(6)
static const dw_fn dw2_tab[C2_CB + 1] = {NULL, dw2_1, dw2_2, dw2_3, dw2_4, dw2_5, dw2_6};

/* dst[s*ds + r] = src[r*ss + s] for r < R, s < S, in 8x8 blocks. */
C2_TARGET static void transpose2(const float *src, ptrdiff_t ss, float *dst, ptrdiff_t ds, int R,
                                 int S)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int r0 = 0; r0 < R; r0 += 8) {
        const int nr = R - r0 < 8 ? R - r0 : 8;
        const __m256i mr = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), iota);
        for (int s0 = 0; s0 < S; s0 += 8) {
            const int ns = S - s0 < 8 ? S - s0 : 8;
            const __m256i ms = _mm256_cmpgt_epi32(_mm256_set1_epi32(ns), iota);
            __m256 m[8], t[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                m[i] = i < nr ? _mm256_maskload_ps(src + (r0 + i) * ss + s0, ms)
                              : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                t[2 * i] = _mm256_unpacklo_ps(m[2 * i], m[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_ps(m[2 * i], m[2 * i + 1]);
            }
#pragma GCC unroll 2
            for (int i = 0; i < 2; i++) {
                m[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
                m[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
                m[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
                m[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
            }
            /* m[4a + b] half q holds column 4q + b of rows 4a .. 4a+3 */
#pragma GCC unroll 4
            for (int b = 0; b < 4; b++) {
                t[b] = _mm256_permute2f128_ps(m[b], m[4 + b], 0x20);
                t[4 + b] = _mm256_permute2f128_ps(m[b], m[4 + b], 0x31);
            }
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                if (j < ns) _mm256_maskstore_ps(dst + (s0 + j) * ds + r0, mr, t[j]);
        }
    }
}

/* ---- the passes, for either instruction set ------------------------------------------------ */

typedef void (*tr_fn)(const float *, ptrdiff_t, float *, ptrdiff_t, int, int);

typedef struct cd_isa {
    int vl; /* floats per vector */
    int np; /* pixels per forward tile at most */
    int fv; /* filter vectors per forward tile at most */
    tr_fn transpose;
} cd_isa;

static const cd_isa isa512 = {16, CD_NP, 2, transpose};
static const cd_isa isa256 = {8, C2_NP, 2, transpose2};

static void fwd_call(const cd_isa *I, int fv, int np, const float *x, size_t rs, int cs, int kC,
                     int k, const float *w, size_t ws, const float *bias, float *t)
{
    if (I->vl == 16)
        fwd_tab[fv][np](x, rs, cs, kC, k, w, ws, bias, t);
    else
        fwd2_tab[np](x, rs, cs, kC, k, w, ws, bias, t);
}

/* One sample x[C][H][W] into the plane xh[Hp][Wp][C] at (pt, pl), whose padding the caller
 * zeroed (it stays zero: only the interior is written). */
static void to_hwc(const cd_isa *I, const float *restrict x, int C, int H, int W, int Hp, int Wp,
                   int pt, int pl, float *restrict xh)
{
    const int h1 = H < Hp - pt ? H : Hp - pt, w1 = W < Wp - pl ? W : Wp - pl;
    for (int h = 0; h < h1; h++) {
        float *d = xh + ((size_t)(h + pt) * Wp + pl) * C;
        if (C == 1)
            memcpy(d, x + (size_t)h * W, (size_t)w1 * sizeof *d);
        else
            I->transpose(x + (size_t)h * W, (ptrdiff_t)H * W, d, C, C, w1);
    }
}

/*
 * out[f][oh][ow] (+ bias[f] when bias is not NULL), f < F (a multiple of 16), for oh < Ho,
 * ow < Wo, from the HWC plane xh (rows of rs floats, pixels of cs floats) and weights
 * wt[k][kC][F]. A row is cut into equal tiles of at most I->np pixels. t: CD_NP * 32 floats.
 */
static void fwd_plane(const cd_isa *I, const float *xh, size_t rs, int cs, int k, int kC,
                      const float *wt, int F, const float *bias, int Ho, int Wo, float *out,
                      float *t)
{
    const size_t HWo = (size_t)Ho * Wo;
    const int tiles = (Wo + I->np - 1) / I->np, base = Wo / tiles, extra = Wo % tiles;
    for (int f0 = 0; f0 < F;) {
        const int fv = (F - f0) / I->vl >= I->fv ? I->fv : (F - f0) / I->vl, nf = fv * I->vl;
        for (int oh = 0; oh < Ho; oh++)
            for (int ti = 0, ow0 = 0; ti < tiles; ti++) {
                const int np = base + (ti < extra);
                fwd_call(I, fv, np, xh + (size_t)oh * rs + (size_t)ow0 * cs, rs, cs, kC, k,
                         wt + f0, (size_t)F, bias ? bias + f0 : NULL, t);
                I->transpose(t, nf, out + (size_t)f0 * HWo + (size_t)oh * Wo + ow0,
                             (ptrdiff_t)HWo, np, nf);
                ow0 += np;
            }
        f0 += nf;
    }
}

int fedci_conv_direct_fits(const fedci_layer *L, int need_dx)
{
    return L->stride == 1 && L->units % 16 == 0 && (!need_dx || L->in[0] % 16 == 0);
}

size_t fedci_conv_direct_scratch(const fedci_layer *L)
{
    const size_t C = (size_t)L->in[0], F = (size_t)L->units, k = (size_t)L->k;
    const size_t Ho = (size_t)L->out[1], Wo = (size_t)L->out[2];
    const size_t H = (size_t)L->in[1], W = (size_t)L->in[2];
    const size_t wsz = k * k * C * F;
    const size_t xh = (Ho + k - 1) * (Wo + k - 1) * C, dyh = (H + k - 1) * (W + k - 1) * F;
    /* weights (repacked), weight gradient, the two planes, the output tile, one example's
     * weight gradient (per-example norms) */
    return 3 * wsz + xh + dyh + CD_NP * 32 + 64;
}

static const cd_isa *isa_of(int isa)
{
    return isa >= 3 ? &isa512 : &isa256;
}

/* wt[kh][kw*C + c][f] = W[f][c][kh][kw] */
static void pack_fwd(const cd_isa *I, const float *W, int F, int C, int k, float *wt)
{
    const int kk = k * k;
    for (int c = 0; c < C; c++)
        I->transpose(W + (size_t)c * kk, (ptrdiff_t)C * kk, wt + (size_t)c * F, (ptrdiff_t)C * F,
                     F, kk);
}

void fedci_conv_direct_forward(int isa, const fedci_layer *L, const float *W, const float *bias,
                               const float *x, float *y, int B, float *scratch)
{
    const cd_isa *I = isa_of(isa);
    const int C = L->in[0], H = L->in[1], Wd = L->in[2], F = L->units, k = L->k;
    const int Ho = L->out[1], Wo = L->out[2], Hp = Ho + k - 1, Wp = Wo + k - 1;
    float *wt = scratch, *xh = wt + (size_t)k * k * C * F;
    float *t = xh + (size_t)Hp * Wp * C;
    pack_fwd(I, W, F, C, k, wt);
    memset(xh, 0, (size_t)Hp * Wp * C * sizeof *xh);
    for (int b = 0; b < B; b++) {
        to_hwc(I, x + (size_t)b * L->in_n, C, H, Wd, Hp, Wp, L->pad_t, L->pad_l, xh);
        fwd_plane(I, xh, (size_t)Wp * C, C, k, k * C, wt, F, bias, Ho, Wo,
                  y + (size_t)b * L->out_n, t);
    }
}

/*
 * g[j0 .. j0+cb)[f] += the weight-gradient tiles of one kernel row over one sample's pixels,
 * all filters: AVX-512 in blocks of 4, 2 or 1 vectors (the j block is 6 tall when F >= 64,
 * else 13), AVX2 in blocks of 2 vectors of 8 (j blocks of 6).
 */
static int dw_jblock(const cd_isa *I, int F)
{
    return I->vl == 16 ? (F >= 64 ? CD_CB4 : CD_CB2) : C2_CB;
}

static void dw_row(const cd_isa *I, const float *x, size_t rs, int cs, const float *dy,
                   size_t drs, int dcs, int rows, int wo, float *g, int F, int cb)
{
    for (int f0 = 0; f0 < F;) {
        if (I->vl == 8) {
            dw2_tab[cb](x, rs, cs, dy + f0, drs, dcs, rows, wo, g + f0, (size_t)F);
            f0 += 16;
            continue;
        }
        const int fv = F - f0 >= 64 ? 4 : F - f0 >= 32 ? 2 : 1;
        const dw_fn fn = fv == 4 ? dw_tab4[cb] : fv == 2 ? dw_tab2[cb] : dw_tab1[cb];
        fn(x, rs, cs, dy + f0, drs, dcs, rows, wo, g + f0, (size_t)F);
        f0 += 16 * fv;
    }
}

/* The sum of squares below, lanes l of 16-float blocks in a0 (l < 8) and a1 (l >= 8), then
 * reduced in this fixed tree, by both versions: the same bits on AVX-512 and AVX2 hosts. */
static double sq_reduce(const double t[8])
{
    const double u0 = t[0] + t[4], u1 = t[1] + t[5], u2 = t[2] + t[6], u3 = t[3] + t[7];
    return (u0 + u2) + (u1 + u3);
}

/* Adds the squares of g[0..n-1] (in double) and, when sum is not NULL, adds g into sum. */
CD_TARGET static double sq_add(const float *g, float *sum, size_t n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(g + i);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
            _mm512_castps_pd(v), 1)));
        a0 = _mm512_fmadd_pd(lo, lo, a0); /* exact products: the same as a0 + lo * lo */
        a1 = _mm512_fmadd_pd(hi, hi, a1);
        if (sum) _mm512_storeu_ps(sum + i, _mm512_add_ps(_mm512_loadu_ps(sum + i), v));
    }
    double t[8];
    _mm512_storeu_pd(t, _mm512_add_pd(a0, a1));
    double s = sq_reduce(t);
    for (; i < n; i++) {
        s += (double)g[i] * g[i];
        if (sum) sum[i] += g[i];
    }
    return s;
}

static double sq_add_plain(const float *g, float *sum, size_t n)
{
    double a[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            a[l] += (double)g[i + l] * g[i + l];
            if (sum) sum[i + l] += g[i + l];
        }
    double t[8];
    for (int l = 0; l < 8; l++) t[l] = a[l] + a[l + 8];
    double s = sq_reduce(t);
    for (; i < n; i++) {
        s += (double)g[i] * g[i];
        if (sum) sum[i] += g[i];
    }
    return s;
}

void fedci_conv_direct_backward(int isa, const fedci_layer *L, const float *W, const float *x,
                                const float *dy, float *dx, float *dW, double *pe_sq, int B,
                                float *scratch)
{
    const cd_isa *I = isa_of(isa);
    const int C = L->in[0], H = L->in[1], Wd = L->in[2], F = L->units, k = L->k;
    const int Ho = L->out[1], Wo = L->out[2], Hp = Ho + k - 1, Wp = Wo + k - 1;
    const int Hq = H + k - 1, Wq = Wd + k - 1, kC = k * C;
    const size_t wsz = (size_t)k * k * C * F;
    float *wb = scratch, *g = wb + wsz, *xh = g + wsz;
    float *dyh = xh + (size_t)Hp * Wp * C, *t = dyh + (size_t)Hq * Wq * F;
    /* with per-example norms, each example's gradient goes to gi first */
    float *gi = pe_sq ? t + CD_NP * 32 + 64 : g;
    const size_t rs = (size_t)Wp * C, drs = (size_t)Wq * F;
    /* dy's plane: dy at (k-1-pad_t, k-1-pad_l) of Hq x Wq, so that dx is the forward pass. */
    const int qt = k - 1 - L->pad_t, ql = k - 1 - L->pad_l;
    const int kk = k * k;
    if (dx) /* wb[kk-1-t][f][c] = W[f][c][t] */
        for (int f = 0; f < F; f++)
            I->transpose(W + (size_t)f * C * kk, kk, wb + ((size_t)(kk - 1) * F + f) * C,
                         -(ptrdiff_t)F * C, C, kk);
    if (dW) memset(g, 0, wsz * sizeof *g);
    const int need_g = dW || pe_sq;
    memset(xh, 0, (size_t)Hp * Wp * C * sizeof *xh);
    memset(dyh, 0, (size_t)Hq * Wq * F * sizeof *dyh);
    const int cmax = dw_jblock(I, F);
    for (int b = 0; b < B; b++) {
        to_hwc(I, dy + (size_t)b * L->out_n, F, Ho, Wo, Hq, Wq, qt, ql, dyh);
        if (need_g) {
            to_hwc(I, x + (size_t)b * L->in_n, C, H, Wd, Hp, Wp, L->pad_t, L->pad_l, xh);
            const float *d0 = dyh + (size_t)qt * drs + (size_t)ql * F;
            if (pe_sq) memset(gi, 0, wsz * sizeof *gi);
            for (int kh = 0; kh < k; kh++)
                for (int j0 = 0; j0 < kC; j0 += cmax)
                    dw_row(I, xh + (size_t)kh * rs + j0, rs, C, d0, drs, F, Ho, Wo,
                           gi + ((size_t)kh * kC + j0) * F, F,
                           kC - j0 < cmax ? kC - j0 : cmax);
            if (pe_sq)
                pe_sq[b] += I->vl == 16 ? sq_add(gi, dW ? g : NULL, wsz)
                                        : sq_add_plain(gi, dW ? g : NULL, wsz);
        }
        if (dx)
            fwd_plane(I, dyh, drs, F, k, k * F, wb, C, NULL, H, Wd, dx + (size_t)b * L->in_n, t);
    }
    if (dW) /* dW[f][c][t] = g[t][c][f] */
        for (int c = 0; c < C; c++)
            I->transpose(g + (size_t)c * F, (ptrdiff_t)C * F, dW + (size_t)c * kk,
                         (ptrdiff_t)C * kk, kk, F);
}

#else /* not x86-64 with GCC or Clang: conv.c never takes this path */

int fedci_conv_direct_fits(const fedci_layer *L, int need_dx)
{
    (void)L;
    (void)need_dx;
    return 0;
}

size_t fedci_conv_direct_scratch(const fedci_layer *L)
{
    (void)L;
    return 0;
}

void fedci_conv_direct_forward(int isa, const fedci_layer *L, const float *W, const float *bias,
                               const float *x, float *y, int B, float *scratch)
{
    (void)isa, (void)L, (void)W, (void)bias, (void)x, (void)y, (void)B, (void)scratch;
}

void fedci_conv_direct_backward(int isa, const fedci_layer *L, const float *W, const float *x,
                                const float *dy, float *dx, float *dW, double *pe_sq, int B,
                                float *scratch)
{
    (void)isa, (void)L, (void)W, (void)x, (void)dy, (void)dx, (void)dW, (void)pe_sq, (void)B;
    (void)scratch;
}
#endif
