/*
 * 2-D max and average pooling over each channel, window k, stride s, no padding
 * (out = (in - k) / s + 1, PyTorch's floor mode). Max pooling remembers the argmax of every
 * output so its backward is a scatter; ties go to the first maximum in scan order.
 */
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

static fedc_status pool_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    if (L->in_ndim == 2) {
        L->in[2] = L->in[1];
        L->in[1] = L->in[0];
        L->in[0] = 1;
        L->in_ndim = 3;
    }
    if (L->in_ndim != 3)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: pooling needs an image input (C,H,W), got a 1-D input of %zu",
                            where, L->in_n);
    const int H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    if (k > H || k > W)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "%s: window %dx%d is larger than the %dx%d input",
                            where, k, k, H, W);
    L->out_ndim = 3;
    L->out[0] = L->in[0];
    L->out[1] = (H - k) / s + 1;
    L->out[2] = (W - k) / s + 1;
    if (L->kind == FEDCI_MAXPOOL)
        L->save_ps = (size_t)L->out[0] * L->out[1] * L->out[2]; /* int32 argmax per output */
    return FEDC_OK;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define POOL_AVX512 1

/* The mask of the first n of 16 lanes (none for n <= 0, all for n >= 16). */
static __mmask16 lanes16(int n)
{
    return (__mmask16)(n <= 0 ? 0u : n >= 16 ? 0xFFFFu : (1u << n) - 1u);
}

/* One output row of the 2x2/2 max pool, 16 outputs at a time: the scalar loop's comparisons
 * (strict >, in the order top-left, top-right, bottom-left, bottom-right; NaN never wins), so
 * the same values and argmaxes. r0: the top input row (W floats, then the bottom one); i0:
 * r0's flat index in the plane. */
__attribute__((target("avx512f"))) static void maxpool2_row_avx512(const float *r0, int W,
                                                                 int Wo, int i0, float *yo,
                                                                 int32_t *ao)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int ow0 = 0; ow0 < Wo; ow0 += 16) {
        const int n = Wo - ow0 < 16 ? Wo - ow0 : 16;
        const __mmask16 mo = lanes16(n), m0 = lanes16(2 * n), m1 = lanes16(2 * n - 16);
        const float *p = r0 + 2 * ow0, *q = p + W;
        const __m512 a0 = _mm512_maskz_loadu_ps(m0, p), a1 = _mm512_maskz_loadu_ps(m1, p + 16);
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, q), b1 = _mm512_maskz_loadu_ps(m1, q + 16);
        const __m512 tl = _mm512_permutex2var_ps(a0, ev, a1);
        const __m512 tr = _mm512_permutex2var_ps(a0, od, a1);
        const __m512 bl = _mm512_permutex2var_ps(b0, ev, b1);
        const __m512 br = _mm512_permutex2var_ps(b0, od, b1);
        const __m512i base = _mm512_add_epi32(_mm512_set1_epi32(i0 + 2 * ow0), ev);
        __m512 m = tl;
        __m512i best = base;
        __mmask16 k = _mm512_cmp_ps_mask(tr, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, k, tr);
        best = _mm512_mask_add_epi32(best, k, base, _mm512_set1_epi32(1));
        k = _mm512_cmp_ps_mask(bl, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, k, bl);
        best = _mm512_mask_add_epi32(best, k, base, _mm512_set1_epi32(W));
        k = _mm512_cmp_ps_mask(br, m, _CMP_GT_OQ);
        m = _mm512_mask_mov_ps(m, k, br);
        best = _mm512_mask_add_epi32(best, k, base, _mm512_set1_epi32(W + 1));
        _mm512_mask_storeu_ps(yo + ow0, mo, m);
        _mm512_mask_storeu_epi32(ao + ow0, mo, best);
    }
}

/* The input gradient of one output row of the 2x2/2 max pool, written whole (no memset and
 * scatter): each window's argmax gets 0 + dy (the scalar path's sum, so -0 becomes +0 alike),
 * its other three inputs 0. Columns past 2 Wo (an odd width) are the caller's. */
__attribute__((target("avx512f"))) static void maxpool2_back_row_avx512(const float *dyr,
                                                                      const int32_t *ar, int W,
                                                                      int Wo, int i0, float *r0)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
    const __m512 zero = _mm512_setzero_ps();
    for (int ow0 = 0; ow0 < Wo; ow0 += 16) {
        const int n = Wo - ow0 < 16 ? Wo - ow0 : 16;
        const __mmask16 mo = lanes16(n), m0 = lanes16(2 * n), m1 = lanes16(2 * n - 16);
        const __m512 d = _mm512_add_ps(zero, _mm512_maskz_loadu_ps(mo, dyr + ow0));
        const __m512i rel = _mm512_sub_epi32(
            _mm512_maskz_loadu_epi32(mo, ar + ow0),
            _mm512_add_epi32(_mm512_set1_epi32(i0 + 2 * ow0), ev)); /* 0, 1, W or W + 1 */
        const __m512 tl = _mm512_maskz_mov_ps(
            _mm512_cmpeq_epi32_mask(rel, _mm512_setzero_si512()), d);
        const __m512 tr = _mm512_maskz_mov_ps(
            _mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(1)), d);
        const __m512 bl = _mm512_maskz_mov_ps(
            _mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(W)), d);
        const __m512 br = _mm512_maskz_mov_ps(
            _mm512_cmpeq_epi32_mask(rel, _mm512_set1_epi32(W + 1)), d);
        float *p = r0 + 2 * ow0, *q = p + W;
        _mm512_mask_storeu_ps(p, m0, _mm512_permutex2var_ps(tl, lo, tr));
        _mm512_mask_storeu_ps(p + 16, m1, _mm512_permutex2var_ps(tl, hi, tr));
        _mm512_mask_storeu_ps(q, m0, _mm512_permutex2var_ps(bl, lo, br));
        _mm512_mask_storeu_ps(q + 16, m1, _mm512_permutex2var_ps(bl, hi, br));
    }
}
#else
#define POOL_AVX512 0
#endif

static void maxpool_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                            const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)P;
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2];
    int32_t *arg = (int32_t *)save;
    if (k == 2 && s == 2) {
        /* The common 2x2/2 window, without the generic loops' overhead. */
#if POOL_AVX512
        if (fedci_nn_avx512()) {
            for (size_t p = 0; p < (size_t)B * C; p++)
                for (int oh = 0; oh < Ho; oh++)
                    maxpool2_row_avx512(x + p * H * W + (size_t)(2 * oh) * W, W, Wo,
                                        2 * oh * W, y + p * Ho * Wo + (size_t)oh * Wo,
                                        arg + p * Ho * Wo + (size_t)oh * Wo);
            return;
        }
#endif
        for (size_t p = 0; p < (size_t)B * C; p++) {
            const float *src = x + p * H * W;
            float *yo = y + p * Ho * Wo;
            int32_t *ao = arg + p * Ho * Wo;
            for (int oh = 0; oh < Ho; oh++) {
                const float *r0 = src + (size_t)(2 * oh) * W, *r1 = r0 + W;
                for (int ow = 0; ow < Wo; ow++) {
                    float a = r0[2 * ow], b2 = r0[2 * ow + 1], c2 = r1[2 * ow], d = r1[2 * ow + 1];
                    int i0 = 2 * oh * W + 2 * ow;
                    float m = a;
                    int best = i0;
                    if (b2 > m) { m = b2; best = i0 + 1; }
                    if (c2 > m) { m = c2; best = i0 + W; }
                    if (d > m) { m = d; best = i0 + W + 1; }
                    yo[oh * Wo + ow] = m;
                    ao[oh * Wo + ow] = best;
                }
            }
        }
        return;
    }
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const float *src = x + (size_t)b * L->in_n + (size_t)c * H * W;
            size_t o = (size_t)b * L->out_n + (size_t)c * Ho * Wo;
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++, o++) {
                    int best = (oh * s) * W + ow * s;
                    float m = src[best];
                    for (int i = 0; i < k; i++) {
                        const float *r = src + (size_t)(oh * s + i) * W + ow * s;
                        for (int j = 0; j < k; j++)
                            if (r[j] > m) {
                                m = r[j];
                                best = (oh * s + i) * W + ow * s + j;
                            }
                    }
                    y[o] = m;
                    arg[o] = best;
                }
        }
}

static void maxpool_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                             const float *x, const float *y, const float *save, const float *dy,
                             float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)P;
    (void)x;
    (void)y;
    (void)dP;
    (void)pe_sq;
    if (!dx) return;
    const int C = L->in[0], HW = L->in[1] * L->in[2], HWo = L->out[1] * L->out[2];
    const int32_t *arg = (const int32_t *)save;
#if POOL_AVX512
    if (L->k == 2 && L->stride == 2 && fedci_nn_avx512()) {
        /* windows do not overlap: each input row pair is written whole */
        const int H = L->in[1], W = L->in[2], Ho = L->out[1], Wo = L->out[2];
        for (size_t p = 0; p < (size_t)B * C; p++) {
            float *d = dx + p * HW;
            for (int oh = 0; oh < Ho; oh++) {
                float *r0 = d + (size_t)(2 * oh) * W;
                maxpool2_back_row_avx512(dy + p * HWo + (size_t)oh * Wo,
                                         arg + p * HWo + (size_t)oh * Wo, W, Wo, 2 * oh * W, r0);
                if (W > 2 * Wo) r0[W - 1] = r0[2 * W - 1] = 0.0f; /* odd width */
            }
            if (H > 2 * Ho) memset(d + (size_t)(H - 1) * W, 0, (size_t)W * sizeof *d);
        }
        return;
    }
#endif
    memset(dx, 0, (size_t)B * L->in_n * sizeof *dx);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *d = dx + (size_t)b * L->in_n + (size_t)c * HW;
            size_t o = (size_t)b * L->out_n + (size_t)c * HWo;
            for (int p = 0; p < HWo; p++) d[arg[o + p]] += dy[o + p];
        }
}

static void avgpool_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                            const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)P;
    (void)save;
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2];
    const float inv = 1.0f / (float)(k * k);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const float *src = x + (size_t)b * L->in_n + (size_t)c * H * W;
            float *o = y + (size_t)b * L->out_n + (size_t)c * Ho * Wo;
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    float acc = 0.0f;
                    for (int i = 0; i < k; i++) {
                        const float *r = src + (size_t)(oh * s + i) * W + ow * s;
                        for (int j = 0; j < k; j++) acc += r[j];
                    }
                    o[oh * Wo + ow] = acc * inv;
                }
        }
}

static void avgpool_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                             const float *x, const float *y, const float *save, const float *dy,
                             float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)P;
    (void)x;
    (void)y;
    (void)save;
    (void)dP;
    (void)pe_sq;
    if (!dx) return;
    const int C = L->in[0], H = L->in[1], W = L->in[2], k = L->k, s = L->stride;
    const int Ho = L->out[1], Wo = L->out[2];
    const float inv = 1.0f / (float)(k * k);
    memset(dx, 0, (size_t)B * L->in_n * sizeof *dx);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *d = dx + (size_t)b * L->in_n + (size_t)c * H * W;
            const float *g = dy + (size_t)b * L->out_n + (size_t)c * Ho * Wo;
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    float v = g[oh * Wo + ow] * inv;
                    for (int i = 0; i < k; i++) {
                        float *r = d + (size_t)(oh * s + i) * W + ow * s;
                        for (int j = 0; j < k; j++) r[j] += v;
                    }
                }
        }
}

const fedci_layer_ops fedci_maxpool_ops = {"maxpool", 0, pool_setup, maxpool_forward,
                                           maxpool_backward, 0};
const fedci_layer_ops fedci_avgpool_ops = {"avgpool", 0, pool_setup, avgpool_forward,
                                           avgpool_backward, 0};
