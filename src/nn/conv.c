/*
 * 2-D convolution lowered to GEMMs (im2col). Weights are [F, C, k, k] (PyTorch layout), so W is
 * an [F x K] matrix with K = C*k*k, and a chunk of n samples becomes
 *     Y[F, n*HWo] = W[F, K] * col[K, n*HWo]
 * where col holds the receptive fields of the chunk, one column per output pixel. Backward:
 *     dW += dY * col^T       dcol = W^T * dY  -> col2im -> dx
 * col is rebuilt in backward rather than kept: it is written to cache-resident scratch, which
 * costs far less than storing it for the whole batch and streaming it back from memory.
 * Chunks are one sample when a sample has at least 128 output pixels (the GEMM is then
 * already wide, and its output is the NCHW layout directly); smaller maps are batched until
 * the GEMM is 128 columns wide and scattered back to NCHW (an F*n*HWo copy, K times cheaper
 * than the product). The weight gradient is accumulated transposed, dW^T[K, F] += col dY^T,
 * the orientation in which BLAS runs these shapes fastest, and transposed once at the end.
 * Stride 1 (the common case) builds col and scatters dcol through a zero-padded copy of one
 * input plane, so that every row operation is a plain copy or add of Wo floats.
 *
 * On CPUs with AVX-512 or AVX2, stride-1 layers whose filter count is a multiple of 16 skip all
 * of this and run the direct kernels of conv_direct.c (forward, weight gradient, and the input
 * gradient when the channel count is a multiple of 16 too, and per-example norms); the GEMM
 * path serves every other shape and is the tests' oracle for the kernels.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

#define CONV_MIN_COLS 128
/* Stride 1 goes through a zero-padded copy of one input plane, [Ho+k-1, Wo+k-1]: the row of
 * tap (kh, kw) for output row oh is then the Wo values at padded (oh + kh, kw), with no
 * bounds or padding cases left in the inner loops (the plane is in L1). */
static size_t pad_floats(const fedci_layer *L)
{
    return L->stride == 1 ? (size_t)(L->out[1] + L->k - 1) * (L->out[2] + L->k - 1) : 0;
}

static fedc_status conv_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    if (L->in_ndim == 2) {
        L->in[2] = L->in[1];
        L->in[1] = L->in[0];
        L->in[0] = 1;
        L->in_ndim = 3;
    }
    if (L->in_ndim != 3)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: conv needs an image input (C,H,W), got a 1-D input of %zu",
                            where, L->in_n);
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    int Ho, Wo;
    if (L->same) {
        Ho = (H + s - 1) / s;
        Wo = (W + s - 1) / s;
        int ph = (Ho - 1) * s + k - H, pw = (Wo - 1) * s + k - W;
        L->pad_t = ph > 0 ? ph / 2 : 0;
        L->pad_l = pw > 0 ? pw / 2 : 0;
    } else {
        if (k > H || k > W)
            return fedc_err_set(err, FEDC_ERR_SHAPE,
                                "%s: kernel %dx%d is larger than the %dx%d input (valid padding)",
                                where, k, k, H, W);
        Ho = (H - k) / s + 1;
        Wo = (W - k) / s + 1;
        L->pad_t = L->pad_l = 0;
    }
    const int F = L->units;
    const size_t K = (size_t)C * k * k, HWo = (size_t)Ho * Wo;
    if (K > FEDCI_MAX_DIM)
        return fedc_err_set(err, FEDC_ERR_RANGE, "%s: %d channels x %dx%d kernel is too large",
                            where, C, k, k);
    L->out_ndim = 3;
    L->out[0] = F;
    L->out[1] = Ho;
    L->out[2] = Wo;
    L->nt = 2;
    L->tname[0] = "weight";
    L->tndim[0] = 4;
    L->tshape[0][0] = F;
    L->tshape[0][1] = C;
    L->tshape[0][2] = k;
    L->tshape[0][3] = k;
    L->tinit[0] = L->relu_after ? FEDCI_INIT_HE : FEDCI_INIT_GLOROT;
    L->fan_in[0] = (double)K;
    L->fan_out[0] = (double)F * k * k;
    L->tname[1] = "bias";
    L->tndim[1] = 1;
    L->tshape[1][0] = F;
    L->tinit[1] = FEDCI_INIT_ZERO;
    L->chunk = HWo >= CONV_MIN_COLS ? 1 : (int)((CONV_MIN_COLS + HWo - 1) / HWo);
    const size_t nb = (size_t)L->chunk;
    /* col, the chunk's output (when chunks have more than one sample), one example's dW,
     * the transposed weight gradient, the padded plane of stride 1. */
    L->scratch_c = K * nb * HWo + (nb > 1 ? (size_t)F * nb * HWo : 0) + 2 * (size_t)F * K +
                   pad_floats(L);
    /* The direct kernels' needs (the path is chosen per call: tests cap it). */
    if (fedci_conv_direct_fits(L, 0) && fedci_conv_direct_scratch(L) > L->scratch_c)
        L->scratch_c = fedci_conv_direct_scratch(L);
    L->macs_ps = (double)F * K * HWo;
    return FEDC_OK;
}

/* The valid output columns [lo, hi) of kernel column kw: input column ow*s - pl + kw in [0, W). */
static void col_range(int W, int Wo, int s, int pl, int kw, int *lo, int *hi)
{
    int a = pl - kw;
    int l = a > 0 ? (a + s - 1) / s : 0;
    int b = W - 1 + pl - kw;
    int h = b >= 0 ? b / s + 1 : 0;
    if (h > Wo) h = Wo;
    if (l > Wo) l = Wo;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* Rows of w floats: d[r*w + j] = s[r*ss + j] (copy) or s[r*ss + j] += d[r*w + j] (add), for
 * r < rows. The rows of col are one output row long (14 floats in the cnn preset's second
 * conv), too short for the vectorizer's loops; AVX-512 does each as one masked load and
 * store. The add is one rounding per element either way: every version gives the same
 * bits. */
static void rows_copy_c(float *restrict d, const float *restrict s, int rows, int w, size_t ss)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < w; j++) d[(size_t)r * w + j] = s[(size_t)r * ss + j];
}

static void rows_add_c(float *restrict s, const float *restrict d, int rows, int w, size_t ss)
{
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < w; j++) s[(size_t)r * ss + j] += d[(size_t)r * w + j];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONV_AVX512 __attribute__((target("avx512f")))

CONV_AVX512 static void rows_copy_avx512(float *restrict d, const float *restrict s, int rows,
                                         int w, size_t ss)
{
    const __mmask16 tail = (__mmask16)((1u << (w & 15)) - 1u);
    for (int r = 0; r < rows; r++, d += w, s += ss) {
        int j = 0;
        for (; j + 16 <= w; j += 16) _mm512_storeu_ps(d + j, _mm512_loadu_ps(s + j));
        if (tail) _mm512_mask_storeu_ps(d + j, tail, _mm512_maskz_loadu_ps(tail, s + j));
    }
}

CONV_AVX512 static void rows_add_avx512(float *restrict s, const float *restrict d, int rows,
                                        int w, size_t ss)
{
    const __mmask16 tail = (__mmask16)((1u << (w & 15)) - 1u);
    for (int r = 0; r < rows; r++, d += w, s += ss) {
        int j = 0;
        for (; j + 16 <= w; j += 16)
            _mm512_storeu_ps(s + j, _mm512_add_ps(_mm512_loadu_ps(s + j), _mm512_loadu_ps(d + j)));
        if (tail)
            _mm512_mask_storeu_ps(s + j, tail,
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(tail, s + j),
                                                _mm512_maskz_loadu_ps(tail, d + j)));
    }
}

static atomic_int conv_cap = -1;

static int conv_has_avx512(void)
{
    static atomic_int v = -1;
    int r = atomic_load_explicit(&v, memory_order_relaxed);
    if (r < 0) {
        __builtin_cpu_init();
        r = __builtin_cpu_supports("avx512f") ? 1 : 0;
        atomic_store_explicit(&v, r, memory_order_relaxed);
    }
    return r && atomic_load_explicit(&conv_cap, memory_order_relaxed) != 0;
}

void fedci_conv_cap_isa(int level)
{
    atomic_store_explicit(&conv_cap, level, memory_order_relaxed);
}
int fedci_nn_avx512(void)
{
    /* cap 2 stands for an AVX2-only CPU: no AVX-512 loops anywhere in the engine */
    return conv_has_avx512() && atomic_load_explicit(&conv_cap, memory_order_relaxed) != 2;
}

/* The direct kernels' instruction set for L (3 AVX-512, 2 AVX2 + FMA), or 0: the CPU's best,
 * at most the cap (1 and 0 keep im2col). */
static int conv_direct(const fedci_layer *L, int need_dx)
{
    static atomic_int cpu = -1;
    int lvl = atomic_load_explicit(&cpu, memory_order_relaxed);
    if (lvl < 0) {
        __builtin_cpu_init();
        lvl = __builtin_cpu_supports("avx512f")                                        ? 3
              : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 2
                                                                                  : 0;
        atomic_store_explicit(&cpu, lvl, memory_order_relaxed);
    }
    const int cap = atomic_load_explicit(&conv_cap, memory_order_relaxed);
    if (cap >= 0 && cap < lvl) lvl = cap;
    return lvl >= 2 && fedci_conv_direct_fits(L, need_dx) ? lvl : 0;
}
#define ROWS_COPY (conv_has_avx512() ? rows_copy_avx512 : rows_copy_c)
#define ROWS_ADD (conv_has_avx512() ? rows_add_avx512 : rows_add_c)
#else
#define ROWS_COPY rows_copy_c
#define ROWS_ADD rows_add_c
int fedci_nn_avx512(void)
{
    return 0;
}
static int conv_direct(const fedci_layer *L, int need_dx)
{
    (void)L;
    (void)need_dx;
    return 0;
}
void fedci_conv_cap_isa(int level)
{
    (void)level;
}
#endif

/* col[K, n*HWo] from n samples of x, stride 1; pad: pad_floats(L) of scratch. */
static void im2col_s1(const fedci_layer *L, const float *x, int n, float *col, float *pad)
{
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k;
    const int Ho = L->out[1], Wo = L->out[2], pt = L->pad_t, pl = L->pad_l;
    const int Hp = Ho + k - 1, Wp = Wo + k - 1;
    const size_t HWo = (size_t)Ho * Wo, ld = (size_t)n * HWo, HW = (size_t)H * W;
    void (*copy)(float *restrict, const float *restrict, int, int, size_t) = ROWS_COPY;
    memset(pad, 0, (size_t)Hp * Wp * sizeof *pad);
    /* The interior: the input rows and columns that fall inside the padded plane (all of
     * them for "same" and "valid"). */
    const int hin = H < Hp - pt ? H : Hp - pt, win = W < Wp - pl ? W : Wp - pl;
    for (int bi = 0; bi < n; bi++)
        for (int c = 0; c < C; c++) {
            const float *src = x + (size_t)bi * L->in_n + (size_t)c * HW;
            for (int ih = 0; ih < hin; ih++)
                memcpy(pad + (size_t)(ih + pt) * Wp + pl, src + (size_t)ih * W,
                       (size_t)win * sizeof *pad);
            for (int kh = 0; kh < k; kh++)
                for (int kw = 0; kw < k; kw++)
                    copy(col + ((size_t)(c * k + kh) * k + kw) * ld + (size_t)bi * HWo,
                         pad + (size_t)kh * Wp + kw, Ho, Wo, (size_t)Wp);
        }
}

/* dx (n samples) = the receptive fields of dcol[K, n*HWo] summed, stride 1: accumulated in the
 * padded plane in the same tap order as col2im (so the same sums), then its interior is
 * copied out. */
static void col2im_s1(const fedci_layer *L, const float *col, int n, float *dx, float *pad)
{
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k;
    const int Ho = L->out[1], Wo = L->out[2], pt = L->pad_t, pl = L->pad_l;
    const int Hp = Ho + k - 1, Wp = Wo + k - 1;
    const size_t HWo = (size_t)Ho * Wo, ld = (size_t)n * HWo, HW = (size_t)H * W;
    void (*add)(float *restrict, const float *restrict, int, int, size_t) = ROWS_ADD;
    const int hin = H < Hp - pt ? H : Hp - pt, win = W < Wp - pl ? W : Wp - pl;
    for (int bi = 0; bi < n; bi++)
        for (int c = 0; c < C; c++) {
            memset(pad, 0, (size_t)Hp * Wp * sizeof *pad);
            for (int kh = 0; kh < k; kh++)
                for (int kw = 0; kw < k; kw++)
                    add(pad + (size_t)kh * Wp + kw,
                        col + ((size_t)(c * k + kh) * k + kw) * ld + (size_t)bi * HWo, Ho, Wo,
                        (size_t)Wp);
            /* Input pixels outside the padded plane (none for "same" and "valid") get no
             * gradient. */
            float *dst = dx + (size_t)bi * L->in_n + (size_t)c * HW;
            if (hin < H || win < W) memset(dst, 0, HW * sizeof *dst);
            for (int ih = 0; ih < hin; ih++)
                memcpy(dst + (size_t)ih * W, pad + (size_t)(ih + pt) * Wp + pl,
                       (size_t)win * sizeof *dst);
        }
}

/* col[K, n*HWo] from n samples of x. pad: pad_floats(L) floats of scratch. */
static void im2col(const fedci_layer *L, const float *x, int n, float *col, float *pad)
{
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2], pt = L->pad_t, pl = L->pad_l;
    const size_t HWo = (size_t)Ho * Wo, ld = (size_t)n * HWo, HW = (size_t)H * W;
    if (s == 1) {
        im2col_s1(L, x, n, col, pad);
        return;
    }
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                float *row = col + ((size_t)(c * k + kh) * k + kw) * ld;
                int lo, hi;
                col_range(W, Wo, s, pl, kw, &lo, &hi);
                const int off = kw - pl;
                for (int bi = 0; bi < n; bi++) {
                    const float *src = x + (size_t)bi * L->in_n + (size_t)c * HW;
                    float *d = row + (size_t)bi * HWo;
                    for (int oh = 0; oh < Ho; oh++) {
                        float *restrict dr = d + (size_t)oh * Wo;
                        int ih = oh * s - pt + kh;
                        if (ih < 0 || ih >= H) {
                            for (int ow = 0; ow < Wo; ow++) dr[ow] = 0.0f;
                            continue;
                        }
                        const float *restrict sr = src + (size_t)ih * W;
                        for (int ow = 0; ow < lo; ow++) dr[ow] = 0.0f;
                        for (int ow = lo; ow < hi; ow++) dr[ow] = sr[ow * s + off];
                        for (int ow = hi; ow < Wo; ow++) dr[ow] = 0.0f;
                    }
                }
            }
}

/* dx (n samples, overwritten) = the receptive fields of dcol[K, n*HWo], summed per input
 * pixel in tap order. pad: pad_floats(L) floats of scratch. */
static void col2im(const fedci_layer *L, const float *col, int n, float *dx, float *pad)
{
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2], pt = L->pad_t, pl = L->pad_l;
    const size_t HWo = (size_t)Ho * Wo, ld = (size_t)n * HWo, HW = (size_t)H * W;
    if (s == 1) {
        col2im_s1(L, col, n, dx, pad);
        return;
    }
    memset(dx, 0, (size_t)n * L->in_n * sizeof *dx);
    for (int c = 0; c < C; c++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++) {
                const float *row = col + ((size_t)(c * k + kh) * k + kw) * ld;
                int lo, hi;
                col_range(W, Wo, s, pl, kw, &lo, &hi);
                const int off = kw - pl;
                for (int bi = 0; bi < n; bi++) {
                    float *dst = dx + (size_t)bi * L->in_n + (size_t)c * HW;
                    const float *d = row + (size_t)bi * HWo;
                    for (int oh = 0; oh < Ho; oh++) {
                        int ih = oh * s - pt + kh;
                        if (ih < 0 || ih >= H) continue;
                        const float *restrict dr = d + (size_t)oh * Wo;
                        float *restrict sr = dst + (size_t)ih * W;
                        for (int ow = lo; ow < hi; ow++) sr[ow * s + off] += dr[ow];
                    }
                }
            }
}

/* Sum of n floats in 8 interleaved partial sums (vectorises; fixed order). */
static float sum_row(const float *r, int n)
{
    float acc[8] = {0};
    int p = 0;
    for (; p + 8 <= n; p += 8)
        for (int k = 0; k < 8; k++) acc[k] += r[p + k];
    for (; p < n; p++) acc[0] += r[p];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static void conv_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                         const float *x, float *y, float *save, int B)
{
    (void)save;
    const int F = L->units, K = (int)(L->in[0] * L->k * L->k);
    const int HWo = L->out[1] * L->out[2], nb = L->chunk;
    const float *W = P + L->toff[0], *bias = P + L->toff[1];
    float *col = e->scratch;
    float *Yc = col + (size_t)K * nb * HWo;
    float *pad = Yc + (nb > 1 ? (size_t)F * nb * HWo : 0) + 2 * (size_t)F * K;
    const int isa = conv_direct(L, 0);
    if (isa) {
        fedci_conv_direct_forward(isa, L, W, bias, x, y, B, e->scratch);
        return;
    }
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb;
        im2col(L, x + (size_t)b0 * L->in_n, n, col, pad);
        if (n == 1) {
            float *yb = y + (size_t)b0 * L->out_n;
            fedci_gemm(0, 0, F, HWo, K, 1.0f, W, K, col, HWo, 0.0f, yb, HWo);
            for (int f = 0; f < F; f++) {
                float *r = yb + (size_t)f * HWo, bf = bias[f];
                for (int p = 0; p < HWo; p++) r[p] += bf;
            }
        } else {
            const int ld = n * HWo;
            fedci_gemm(0, 0, F, ld, K, 1.0f, W, K, col, ld, 0.0f, Yc, ld);
            for (int bi = 0; bi < n; bi++)
                for (int f = 0; f < F; f++) {
                    float *r = y + (size_t)(b0 + bi) * L->out_n + (size_t)f * HWo;
                    const float *src = Yc + (size_t)f * ld + (size_t)bi * HWo;
                    float bf = bias[f];
                    for (int p = 0; p < HWo; p++) r[p] = src[p] + bf;
                }
        }
    }
}

static void conv_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                          const float *x, const float *y, const float *save, const float *dy,
                          float *dx, float *dP, double *pe_sq, int B)
{
    (void)y;
    (void)save;
    const int F = L->units, K = (int)(L->in[0] * L->k * L->k);
    const int HWo = L->out[1] * L->out[2], nb = L->chunk;
    const float *W = P + L->toff[0];
    float *col = e->scratch;
    float *Yc = col + (size_t)K * nb * HWo;
    float *pedW = Yc + (nb > 1 ? (size_t)F * nb * HWo : 0), *dWT = pedW + (size_t)F * K;
    float *pad = dWT + (size_t)F * K;
    float *dW = dP ? dP + L->toff[0] : NULL, *db = dP ? dP + L->toff[1] : NULL;
    if (db) memset(db, 0, (size_t)F * sizeof *db);
    const int isa = conv_direct(L, dx != NULL);
    if (isa) {
        fedci_conv_direct_backward(isa, L, W, x, dy, dx, dW, pe_sq, B, e->scratch);
        for (int bi = 0; bi < B && (db || pe_sq); bi++) {
            double sq = 0.0; /* the bias part of the example's squared norm */
            for (int f = 0; f < F; f++) {
                const float s = sum_row(dy + (size_t)bi * L->out_n + (size_t)f * HWo, HWo);
                if (db) db[f] += s;
                sq += (double)s * s;
            }
            if (pe_sq) pe_sq[bi] += sq;
        }
        return;
    }
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb, ld = n * HWo;
        if (dW || pe_sq) im2col(L, x + (size_t)b0 * L->in_n, n, col, pad);
        const float *dyc;
        if (n == 1) {
            dyc = dy + (size_t)b0 * L->out_n;
        } else {
            for (int bi = 0; bi < n; bi++)
                for (int f = 0; f < F; f++)
                    memcpy(Yc + (size_t)f * ld + (size_t)bi * HWo,
                           dy + (size_t)(b0 + bi) * L->out_n + (size_t)f * HWo,
                           (size_t)HWo * sizeof *Yc);
            dyc = Yc;
        }
        if (dW) {
            fedci_gemm(0, 1, K, F, ld, 1.0f, col, ld, dyc, ld, b0 == 0 ? 0.0f : 1.0f, dWT, F);
            for (int f = 0; f < F; f++) db[f] += sum_row(dyc + (size_t)f * ld, ld);
        }
        if (pe_sq) {
            for (int bi = 0; bi < n; bi++) {
                fedci_gemm(0, 1, F, K, HWo, 1.0f, dyc + (size_t)bi * HWo, ld,
                           col + (size_t)bi * HWo, ld, 0.0f, pedW, K);
                double sq = 0.0;
                for (size_t i = 0; i < (size_t)F * K; i++) sq += (double)pedW[i] * pedW[i];
                for (int f = 0; f < F; f++) {
                    const float *r = dyc + (size_t)f * ld + (size_t)bi * HWo;
                    double s = 0.0;
                    for (int p = 0; p < HWo; p++) s += r[p];
                    sq += s * s;
                }
                pe_sq[b0 + bi] += sq;
            }
        }
        if (dx) {
            fedci_gemm(1, 0, K, ld, F, 1.0f, W, K, dyc, ld, 0.0f, col, ld);
            col2im(L, col, n, dx + (size_t)b0 * L->in_n, pad);
        }
    }
    if (dW)
        for (int f = 0; f < F; f++)
            for (int k = 0; k < K; k++) dW[(size_t)f * K + k] = dWT[(size_t)k * F + f];
}

const char *fedc_nn_conv_kernels(void)
{
    fedci_layer probe = {0}; /* a layer the direct kernels cover */
    probe.stride = 1;
    probe.units = 16;
    probe.in[0] = 16;
    switch (conv_direct(&probe, 1)) {
    case 3: return "direct AVX-512";
    case 2: return "direct AVX2";
    default: return "im2col + GEMM";
    }
}

const fedci_layer_ops fedci_conv_ops = {"conv", 1, conv_setup, conv_forward, conv_backward,
                                        0};
