/*
 * Embedding: a sequence of T token indices (stored as floats in x, validated by the engine
 * before the pass) becomes [T, D] rows of the table W [V, D]. Backward scatters dy into the
 * rows of the tokens seen. Per-example norms: an example's gradient is non-zero only in the
 * rows of its own tokens, each row the sum of dy over that token's positions.
 */
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

static fedc_status embed_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    if (L->in_ndim != 1)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: embed needs a 1-D input (a sequence of token indices)", where);
    const int T = L->in[0], D = L->units;
    L->out_ndim = 2;
    L->out[0] = T;
    L->out[1] = D;
    L->out[2] = 1;
    L->nt = 1;
    L->tname[0] = "weight";
    L->tndim[0] = 2;
    L->tshape[0][0] = L->vocab;
    L->tshape[0][1] = D;
    L->tinit[0] = FEDCI_INIT_GLOROT;
    L->fan_in[0] = L->vocab;
    L->fan_out[0] = D;
    L->scratch_c = (size_t)D;
    return FEDC_OK;
}

static void embed_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                          const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)save;
    const int T = L->in[0], D = L->units;
    const float *W = P + L->toff[0];
    for (size_t i = 0; i < (size_t)B * T; i++)
        memcpy(y + i * D, W + (size_t)x[i] * D, (size_t)D * sizeof *y);
}

static void embed_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                           const float *x, const float *y, const float *save, const float *dy,
                           float *dx, float *dP, double *pe_sq, int B)
{
    (void)P;
    (void)y;
    (void)save;
    (void)dx; /* token indices have no gradient */
    const int T = L->in[0], D = L->units;
    if (dP) {
        float *dW = dP + L->toff[0];
        memset(dW, 0, (size_t)L->vocab * D * sizeof *dW);
        for (size_t i = 0; i < (size_t)B * T; i++) {
            float *r = dW + (size_t)x[i] * D;
            const float *g = dy + i * D;
            for (int j = 0; j < D; j++) r[j] += g[j];
        }
    }
    if (pe_sq) {
        float *acc = e->scratch;
        for (int b = 0; b < B; b++) {
            const float *xb = x + (size_t)b * T;
            const float *gb = dy + (size_t)b * T * D;
            double sq = 0.0;
            for (int t = 0; t < T; t++) {
                int seen = 0;
                for (int u = 0; u < t && !seen; u++) seen = xb[u] == xb[t];
                if (seen) continue; /* this token's row was summed at its first position */
                memcpy(acc, gb + (size_t)t * D, (size_t)D * sizeof *acc);
                for (int u = t + 1; u < T; u++)
                    if (xb[u] == xb[t])
                        for (int j = 0; j < D; j++) acc[j] += gb[(size_t)u * D + j];
                for (int j = 0; j < D; j++) sq += (double)acc[j] * acc[j];
            }
            pe_sq[b] += sq;
        }
    }
}

const fedci_layer_ops fedci_embed_ops = {"embed", 1, embed_setup, embed_forward,
                                         embed_backward, 0};
