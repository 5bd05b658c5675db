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
 */
#include <stddef.h>
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

#define CONV_MIN_COLS 128

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
     * the transposed weight gradient. */
    L->scratch_c = K * nb * HWo + (nb > 1 ? (size_t)F * nb * HWo : 0) + 2 * (size_t)F * K;
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

/* Stride 1 and as many output as input columns ("same"): the row of kernel tap (dh, dw) is
 * the input plane shifted by dh rows and dw columns, so it is one long contiguous copy, then
 * the columns that wrapped around a row edge ([0, lo) and [hi, W)) and the rows that fell off
 * the top or bottom are zeroed. Short per-row copies would cost more in loop overhead than
 * in bytes. */
static void plane_shift(const float *restrict src, int H, int W, int Ho, int dh, int dw, int lo,
                        int hi, float *restrict d)
{
    int oh0 = dh < 0 ? -dh : 0, oh1 = H - dh < Ho ? H - dh : Ho;
    if (oh1 < oh0) oh1 = oh0;
    for (size_t j = 0; j < (size_t)oh0 * W; j++) d[j] = 0.0f;
    for (size_t j = (size_t)oh1 * W; j < (size_t)Ho * W; j++) d[j] = 0.0f;
    if (oh1 == oh0) return;
    /* d[oh0*W + j] = src[base + j], for the j whose source index is inside the plane. */
    const ptrdiff_t base = (ptrdiff_t)(oh0 + dh) * W + dw, len = (ptrdiff_t)(oh1 - oh0) * W;
    ptrdiff_t j0 = base < 0 ? -base : 0, j1 = (ptrdiff_t)H * W - base;
    if (j1 > len) j1 = len;
    float *restrict dd = d + (size_t)oh0 * W;
    for (ptrdiff_t j = j0; j < j1; j++) dd[j] = src[base + j];
    for (int oh = oh0; oh < oh1; oh++) {
        float *r = d + (size_t)oh * W;
        for (int ow = 0; ow < lo; ow++) r[ow] = 0.0f;
        for (int ow = hi; ow < W; ow++) r[ow] = 0.0f;
    }
}

/* col[K, n*HWo] from n samples of x. Rows are short (one output row, Wo values), so the
 * copies are plain loops rather than memcpy/memset calls. */
static void im2col(const fedci_layer *L, const float *x, int n, float *col)
{
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2], pt = L->pad_t, pl = L->pad_l;
    const size_t HWo = (size_t)Ho * Wo, ld = (size_t)n * HWo, HW = (size_t)H * W;
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
                    if (s == 1 && Wo == W) {
                        plane_shift(src, H, W, Ho, kh - pt, off, lo, hi, d);
                        continue;
                    }
                    for (int oh = 0; oh < Ho; oh++) {
                        float *restrict dr = d + (size_t)oh * Wo;
                        int ih = oh * s - pt + kh;
                        if (ih < 0 || ih >= H) {
                            for (int ow = 0; ow < Wo; ow++) dr[ow] = 0.0f;
                            continue;
                        }
                        const float *restrict sr = src + (size_t)ih * W;
                        for (int ow = 0; ow < lo; ow++) dr[ow] = 0.0f;
                        if (s == 1)
                            for (int ow = lo; ow < hi; ow++) dr[ow] = sr[ow + off];
                        else
                            for (int ow = lo; ow < hi; ow++) dr[ow] = sr[ow * s + off];
                        for (int ow = hi; ow < Wo; ow++) dr[ow] = 0.0f;
                    }
                }
            }
}

/* dx (n samples, zeroed here) += the receptive fields of dcol[K, n*HWo]. */
static void col2im(const fedci_layer *L, const float *col, int n, float *dx)
{
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2], pt = L->pad_t, pl = L->pad_l;
    const size_t HWo = (size_t)Ho * Wo, ld = (size_t)n * HWo, HW = (size_t)H * W;
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
                        if (s == 1)
                            for (int ow = lo; ow < hi; ow++) sr[ow + off] += dr[ow];
                        else
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
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb;
        im2col(L, x + (size_t)b0 * L->in_n, n, col);
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
    float *dW = dP ? dP + L->toff[0] : NULL, *db = dP ? dP + L->toff[1] : NULL;
    if (db) memset(db, 0, (size_t)F * sizeof *db);
    for (int b0 = 0; b0 < B; b0 += nb) {
        const int n = B - b0 < nb ? B - b0 : nb, ld = n * HWo;
        if (dW || pe_sq) im2col(L, x + (size_t)b0 * L->in_n, n, col);
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
            col2im(L, col, n, dx + (size_t)b0 * L->in_n);
        }
    }
    if (dW)
        for (int f = 0; f < F; f++)
            for (int k = 0; k < K; k++) dW[(size_t)f * K + k] = dWT[(size_t)k * F + f];
}

const fedci_layer_ops fedci_conv_ops = {"conv", 1, conv_setup, conv_forward, conv_backward};
