/*
 * Group normalization (Wu & He 2018): the C channels of each sample (C = first dimension of
 * the sample, the rest is "spatial") are split into G groups; each group is normalised by its
 * own mean and variance, then scaled and shifted per channel (gamma = weight, beta = bias).
 * Statistics are per sample, so a client's update never depends on which other samples share
 * its batch: this is why the engine offers group norm and not batch norm (batch statistics
 * break with small, non-IID client batches and leak across examples under DP-SGD).
 */
#include <math.h>
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

#define GN_EPS 1e-5f

static fedc_status gn_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    const int C = L->in[0], G = L->units;
    if (C % G != 0)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "%s: %d channels do not split into %d groups",
                            where, C, G);
    L->out_ndim = L->in_ndim;
    memcpy(L->out, L->in, sizeof L->out);
    L->nt = 2;
    L->tname[0] = "weight";
    L->tndim[0] = 1;
    L->tshape[0][0] = C;
    L->tinit[0] = FEDCI_INIT_ONE;
    L->tname[1] = "bias";
    L->tndim[1] = 1;
    L->tshape[1][0] = C;
    L->tinit[1] = FEDCI_INIT_ZERO;
    L->save_ps = L->in_n + (size_t)G; /* normalised input, then 1/std per group */
    return FEDC_OK;
}

static void gn_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                       const float *x, float *y, float *save, int B)
{
    (void)e;
    const int C = L->in[0], G = L->units, cg = C / G;
    const size_t S = L->in_n / (size_t)C, gn = (size_t)cg * S;
    const float *gamma = P + L->toff[0], *beta = P + L->toff[1];
    float *xhat = save, *rstd = save + (size_t)B * L->in_n;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            size_t off = (size_t)b * L->in_n + (size_t)g * gn;
            const float *xg = x + off;
            double mean = 0.0, var = 0.0;
            for (size_t i = 0; i < gn; i++) mean += xg[i];
            mean /= (double)gn;
            for (size_t i = 0; i < gn; i++) var += ((double)xg[i] - mean) * ((double)xg[i] - mean);
            var /= (double)gn;
            float rs = (float)(1.0 / sqrt(var + GN_EPS));
            rstd[(size_t)b * G + g] = rs;
            float m = (float)mean;
            for (int c = 0; c < cg; c++) {
                int ch = g * cg + c;
                for (size_t s = 0; s < S; s++) {
                    size_t i = off + (size_t)c * S + s;
                    float xh = (x[i] - m) * rs;
                    xhat[i] = xh;
                    y[i] = xh * gamma[ch] + beta[ch];
                }
            }
        }
}

static void gn_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                        const float *x, const float *y, const float *save, const float *dy,
                        float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)x;
    (void)y;
    const int C = L->in[0], G = L->units, cg = C / G;
    const size_t S = L->in_n / (size_t)C, gn = (size_t)cg * S;
    const float *gamma = P + L->toff[0];
    const float *xhat = save, *rstd = save + (size_t)B * L->in_n;
    if (dP) {
        float *dg = dP + L->toff[0], *dbeta = dP + L->toff[1];
        memset(dg, 0, (size_t)C * sizeof *dg);
        memset(dbeta, 0, (size_t)C * sizeof *dbeta);
        for (int b = 0; b < B; b++)
            for (int ch = 0; ch < C; ch++) {
                size_t off = (size_t)b * L->in_n + (size_t)ch * S;
                float sg = 0.0f, sb = 0.0f;
                for (size_t s = 0; s < S; s++) {
                    sg += dy[off + s] * xhat[off + s];
                    sb += dy[off + s];
                }
                dg[ch] += sg;
                dbeta[ch] += sb;
            }
    }
    if (pe_sq)
        for (int b = 0; b < B; b++) {
            double sq = 0.0;
            for (int ch = 0; ch < C; ch++) {
                size_t off = (size_t)b * L->in_n + (size_t)ch * S;
                double sg = 0.0, sb = 0.0;
                for (size_t s = 0; s < S; s++) {
                    sg += (double)dy[off + s] * xhat[off + s];
                    sb += dy[off + s];
                }
                sq += sg * sg + sb * sb;
            }
            pe_sq[b] += sq;
        }
    if (!dx) return;
    /* dx = rstd * (dxh - mean(dxh) - xhat * mean(dxh * xhat)) per group, dxh = dy * gamma. */
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            size_t off = (size_t)b * L->in_n + (size_t)g * gn;
            double s1 = 0.0, s2 = 0.0;
            for (int c = 0; c < cg; c++) {
                float gm = gamma[g * cg + c];
                for (size_t s = 0; s < S; s++) {
                    size_t i = off + (size_t)c * S + s;
                    double d = (double)dy[i] * gm;
                    s1 += d;
                    s2 += d * xhat[i];
                }
            }
            float m1 = (float)(s1 / (double)gn), m2 = (float)(s2 / (double)gn);
            float rs = rstd[(size_t)b * G + g];
            for (int c = 0; c < cg; c++) {
                float gm = gamma[g * cg + c];
                for (size_t s = 0; s < S; s++) {
                    size_t i = off + (size_t)c * S + s;
                    dx[i] = rs * (dy[i] * gm - m1 - xhat[i] * m2);
                }
            }
        }
}

const fedci_layer_ops fedci_groupnorm_ops = {"groupnorm", 1, gn_setup, gn_forward,
                                             gn_backward, 0};
