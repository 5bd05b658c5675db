/*
 * Dense (fully connected) layer: y = x W^T + b with W [out, in] (PyTorch Linear layout). The
 * input is flattened. All three products (forward, weight gradient, input gradient) are one
 * GEMM each over the whole batch. Per-example gradient norms come for free from the batched
 * pass: the weight gradient of example i is the outer product dy_i x_i^T, whose squared
 * Frobenius norm is |dy_i|^2 |x_i|^2 (Goodfellow 2015), plus |dy_i|^2 for the bias.
 */
#include <stddef.h>
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

/* Rows of dW per block of the fused SGD step: about 16k floats (64 kB, stays in L2), a
 * multiple of 16 rows (the row tiles of the skinny kernels and of BLAS). */
static int sgd_block_rows(int in, int out)
{
    int rb = 16384 / in / 16 * 16;
    if (rb < 16) rb = 16;
    return rb < out ? rb : out;
}

/* Fused SGD (fedci_exec.upd): dx from the old weights, then the bias and the weight gradient
 * in blocks of rows, each block applied to the weights while it is in cache; dP is only
 * scratch. The weight gradient is never written out and read back as a whole, and the
 * elements are the ones fedci_gemm gives (fedci_gemm_rows), so the step has the bits of
 * train_batch + fedc_optim_step. When fedci_gemm would compute dx = dy W with the skinny nn
 * kernel, dx is accumulated block by block of FEDCI_SKINNY_NN_KB rows of W just before that
 * block is updated (the kernel's own K blocking, so the same bits): W is then read from
 * memory once in the backward pass instead of twice. */
static void dense_backward_sgd(const fedci_layer *L, const fedci_exec *e, const float *x,
                               const float *dy, float *dx, float *dP, int B)
{
    const int in = (int)L->in_n, out = L->units;
    const float *W = e->upd + L->toff[0];
    int merged = dx && B <= FEDCI_SKINNY_MAX && in >= 16 && (double)B * in * out >= 32768.0;
    if (dx && !merged) fedci_gemm(0, 0, B, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
    float *db = dP + L->toff[1], *blk = dP + L->toff[0];
    memset(db, 0, (size_t)out * sizeof *db);
    for (int b = 0; b < B; b++) {
        const float *d = dy + (size_t)b * out;
        for (int j = 0; j < out; j++) db[j] += d[j];
    }
    ptrdiff_t bad = fedci_sgd_apply(e->sgd, e->upd, L->toff[1], db, (size_t)out);
    if (bad >= 0) {
        *e->bad = L->toff[1] + (size_t)bad + 1;
        return;
    }
    const int kb = FEDCI_SKINNY_NN_KB, sb = sgd_block_rows(in, out);
    const int rb = sb < kb ? sb : kb;
    for (int r0 = 0; r0 < out; r0 += kb) {
        const int n0 = out - r0 < kb ? out - r0 : kb;
        if (merged && !fedci_gemm_skinny(0, 0, B, in, n0, 1.0f, dy + r0, out, W + (size_t)r0 * in,
                                         in, r0 ? 1.0f : 0.0f, dx, in)) {
            /* The CPU has no skinny kernels: fedci_gemm uses BLAS (nothing updated yet). */
            merged = 0;
            fedci_gemm(0, 0, B, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in);
        }
        for (int r1 = r0; r1 < r0 + n0; r1 += rb) {
            const int mb = r0 + n0 - r1 < rb ? r0 + n0 - r1 : rb;
            fedci_gemm_rows(1, 0, out, r1, mb, in, B, dy, out, x, in, blk, in);
            bad = fedci_sgd_apply(e->sgd, e->upd, L->toff[0] + (size_t)r1 * in, blk,
                                  (size_t)mb * in);
            if (bad >= 0) {
                *e->bad = L->toff[0] + (size_t)r1 * in + (size_t)bad + 1;
                return;
            }
        }
    }
}

static void dense_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                           const float *x, const float *y, const float *save, const float *dy,
                           float *dx, float *dP, double *pe_sq, int B)
{
    (void)y;
    (void)save;
    const int in = (int)L->in_n, out = L->units;
    const float *W = P + L->toff[0];
    if (e->upd && dP) {
        dense_backward_sgd(L, e, x, dy, dx, dP, B);
        return;
    }
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
                                         dense_backward, 1};
