/*
 * Dense (fully connected) layer: y = x W^T + b with W [out, in] (PyTorch Linear layout). The
 * input is flattened. All three products (forward, weight gradient, input gradient) are one
 * GEMM each over the whole batch. Per-example gradient norms come for free from the batched
 * pass: the weight gradient of example i is the outer product dy_i x_i^T, whose squared
 * Frobenius norm is |dy_i|^2 |x_i|^2 (Goodfellow 2015), plus |dy_i|^2 for the bias.
 */
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

static fedc_status dense_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    (void)where;
    (void)err;
    L->out_ndim = 1;
    L->out[0] = L->units;
    L->out[1] = L->out[2] = 1;
    L->nt = 2;
    L->tname[0] = "weight";
    L->tndim[0] = 2;
    L->tshape[0][0] = L->units;
    L->tshape[0][1] = (int64_t)L->in_n;
    L->tinit[0] = L->relu_after ? FEDCI_INIT_HE : FEDCI_INIT_GLOROT;
    L->fan_in[0] = (double)L->in_n;
    L->fan_out[0] = L->units;
    L->tname[1] = "bias";
    L->tndim[1] = 1;
    L->tshape[1][0] = L->units;
    L->tinit[1] = FEDCI_INIT_ZERO;
    L->macs_ps = (double)L->in_n * L->units;
    return FEDC_OK;
}

static void dense_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                          const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)save;
    const int in = (int)L->in_n, out = L->units;
    const float *W = P + L->toff[0], *bias = P + L->toff[1];
    for (int b = 0; b < B; b++) memcpy(y + (size_t)b * out, bias, (size_t)out * sizeof *y);
    fedci_gemm(0, 1, B, out, in, 1.0f, x, in, W, in, 1.0f, y, out);
}

static void dense_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                           const float *x, const float *y, const float *save, const float *dy,
                           float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)y;
    (void)save;
    const int in = (int)L->in_n, out = L->units;
    const float *W = P + L->toff[0];
    if (dP) {
        float *dW = dP + L->toff[0], *db = dP + L->toff[1];
        fedci_gemm(1, 0, out, in, B, 1.0f, dy, out, x, in, 0.0f, dW, in);
        memset(db, 0, (size_t)out * sizeof *db);
        for (int b = 0; b < B; b++) {
            const float *d = dy + (size_t)b * out;
            for (int j = 0; j < out; j++) db[j] += d[j];
        }
    }
    if (pe_sq) {
        for (int b = 0; b < B; b++) {
            const float *d = dy + (size_t)b * out, *xb = x + (size_t)b * in;
            double sd = 0.0, sx = 0.0;
            for (int j = 0; j < out; j++) sd += (double)d[j] * d[j];
            for (int j = 0; j < in; j++) sx += (double)xb[j] * xb[j];
            pe_sq[b] += sd * (sx + 1.0);
        }
    }
    if (dx) fedci_gemm(0, 0, B, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
}

const fedci_layer_ops fedci_dense_ops = {"dense", 1, dense_setup, dense_forward,
                                         dense_backward};
