/*
 * LSTM over a sequence [T, F] with H units (gates i, f, g, o in that order, one bias vector:
 * the Keras/TensorFlow layout LEAF's Shakespeare model uses; PyTorch keeps two biases that
 * sum to this one). Output: the last step's h [H], or every step's [T, H] ("seq").
 *   z_t = W_ih x_t + W_hh h_{t-1} + b;  i,f,o = sigmoid, g = tanh;  c_t = f c_{t-1} + i g;
 *   h_t = o tanh(c_t).
 * The input projection of all steps and samples is one GEMM [B*T, F] x [F, 4H]; each step adds
 * one [B, H] x [H, 4H] GEMM. Backward through time collects dz for every step, then the
 * weight gradients are two GEMMs over all B*T rows and the input gradient one more.
 */
#include <math.h>
#include <string.h>

#include "fedc/status.h"
#include "nn/nn_internal.h"

static fedc_status lstm_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    if (L->in_ndim != 2)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: lstm needs a sequence input (T,F), got %d dimension%s", where,
                            L->in_ndim, L->in_ndim == 1 ? "" : "s");
    const int T = L->in[0], F = L->in[1], H = L->units;
    if (L->seq) {
        L->out_ndim = 2;
        L->out[0] = T;
        L->out[1] = H;
    } else {
        L->out_ndim = 1;
        L->out[0] = H;
        L->out[1] = 1;
    }
    L->out[2] = 1;
    L->nt = 3;
    L->tname[0] = "weight_ih";
    L->tndim[0] = 2;
    L->tshape[0][0] = 4 * (int64_t)H;
    L->tshape[0][1] = F;
    L->tinit[0] = FEDCI_INIT_GLOROT;
    L->fan_in[0] = F;
    L->fan_out[0] = 4.0 * H;
    L->tname[1] = "weight_hh";
    L->tndim[1] = 2;
    L->tshape[1][0] = 4 * (int64_t)H;
    L->tshape[1][1] = H;
    L->tinit[1] = FEDCI_INIT_GLOROT;
    L->fan_in[1] = H;
    L->fan_out[1] = 4.0 * H;
    L->tname[2] = "bias";
    L->tndim[2] = 1;
    L->tshape[2][0] = 4 * (int64_t)H;
    L->tinit[2] = FEDCI_INIT_LSTM_BIAS;
    /* Saved: activated gates [T, 4H], cell states [T, H], hidden states [T, H]. */
    L->save_ps = (size_t)T * 6 * H;
    /* Backward: dz [T, 4H], shifted hidden states [T, H], dh and dc [H] each. */
    L->scratch_ps = (size_t)T * 5 * H + 2 * (size_t)H;
    L->macs_ps = (double)T * 4 * H * (F + H);
    return FEDC_OK;
}

static inline float sigm(float x)
{
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float z = expf(x);
    return z / (1.0f + z);
}

static void lstm_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                         const float *x, float *y, float *save, int B)
{
    (void)e;
    const int T = L->in[0], F = L->in[1], H = L->units, G = 4 * H;
    const float *Wih = P + L->toff[0], *Whh = P + L->toff[1], *bias = P + L->toff[2];
    float *Z = save, *C = save + (size_t)B * T * G, *Hs = C + (size_t)B * T * H;
    const size_t rows = (size_t)B * T;
    for (size_t r = 0; r < rows; r++) memcpy(Z + r * G, bias, (size_t)G * sizeof *Z);
    fedci_gemm(0, 1, (int)rows, G, F, 1.0f, x, F, Wih, F, 1.0f, Z, G);
    for (int t = 0; t < T; t++) {
        if (t > 0)
            fedci_gemm(0, 1, B, G, H, 1.0f, Hs + (size_t)(t - 1) * H, T * H, Whh, H, 1.0f,
                       Z + (size_t)t * G, T * G);
        for (int b = 0; b < B; b++) {
            size_t r = (size_t)b * T + t;
            float *z = Z + r * G, *c = C + r * H, *h = Hs + r * H;
            const float *cp = t > 0 ? c - H : NULL;
            for (int j = 0; j < H; j++) {
                float ig = sigm(z[j]), fg = sigm(z[H + j]);
                float gg = tanhf(z[2 * H + j]), og = sigm(z[3 * H + j]);
                z[j] = ig;
                z[H + j] = fg;
                z[2 * H + j] = gg;
                z[3 * H + j] = og;
                float cj = ig * gg + (cp ? fg * cp[j] : 0.0f);
                c[j] = cj;
                h[j] = og * tanhf(cj);
            }
        }
    }
    if (L->seq)
        memcpy(y, Hs, rows * H * sizeof *y);
    else
        for (int b = 0; b < B; b++)
            memcpy(y + (size_t)b * H, Hs + ((size_t)b * T + T - 1) * H, (size_t)H * sizeof *y);
}

static void lstm_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                          const float *x, const float *y, const float *save, const float *dy,
                          float *dx, float *dP, double *pe_sq, int B)
{
    (void)y;
    (void)pe_sq; /* ghost = 0: the engine never asks */
    const int T = L->in[0], F = L->in[1], H = L->units, G = 4 * H;
    const float *Wih = P + L->toff[0], *Whh = P + L->toff[1];
    const float *Z = save, *C = save + (size_t)B * T * G, *Hs = C + (size_t)B * T * H;
    const size_t rows = (size_t)B * T;
    float *dZ = e->scratch, *hprev = dZ + rows * G, *dh = hprev + rows * H;
    float *dc = dh + (size_t)B * H;
    memset(dc, 0, (size_t)B * H * sizeof *dc);
    memset(dh, 0, (size_t)B * H * sizeof *dh);
    for (int t = T - 1; t >= 0; t--) {
        for (int b = 0; b < B; b++) {
            size_t r = (size_t)b * T + t;
            float *dhb = dh + (size_t)b * H, *dcb = dc + (size_t)b * H;
            if (L->seq) {
                const float *g = dy + r * H;
                for (int j = 0; j < H; j++) dhb[j] += g[j];
            } else if (t == T - 1) {
                const float *g = dy + (size_t)b * H;
                for (int j = 0; j < H; j++) dhb[j] += g[j];
            }
            const float *z = Z + r * G, *c = C + r * H;
            const float *cp = t > 0 ? c - H : NULL;
            float *dz = dZ + r * G;
            for (int j = 0; j < H; j++) {
                float ig = z[j], fg = z[H + j], gg = z[2 * H + j], og = z[3 * H + j];
                float tc = tanhf(c[j]);
                float dho = dhb[j];
                float dcj = dcb[j] + dho * og * (1.0f - tc * tc);
                float d_o = dho * tc, d_i = dcj * gg, d_g = dcj * ig;
                float d_f = cp ? dcj * cp[j] : 0.0f;
                dcb[j] = dcj * fg;
                dz[j] = d_i * ig * (1.0f - ig);
                dz[H + j] = d_f * fg * (1.0f - fg);
                dz[2 * H + j] = d_g * (1.0f - gg * gg);
                dz[3 * H + j] = d_o * og * (1.0f - og);
            }
        }
        if (t > 0)
            fedci_gemm(0, 0, B, H, G, 1.0f, dZ + (size_t)t * G, T * G, Whh, H, 0.0f, dh, H);
    }
    if (dP) {
        float *dWih = dP + L->toff[0], *dWhh = dP + L->toff[1], *db = dP + L->toff[2];
        fedci_gemm(1, 0, G, F, (int)rows, 1.0f, dZ, G, x, F, 0.0f, dWih, F);
        for (int b = 0; b < B; b++) {
            float *hp = hprev + (size_t)b * T * H;
            memset(hp, 0, (size_t)H * sizeof *hp);
            memcpy(hp + H, Hs + (size_t)b * T * H, (size_t)(T - 1) * H * sizeof *hp);
        }
        fedci_gemm(1, 0, G, H, (int)rows, 1.0f, dZ, G, hprev, H, 0.0f, dWhh, H);
        memset(db, 0, (size_t)G * sizeof *db);
        for (size_t r = 0; r < rows; r++) {
            const float *dz = dZ + r * G;
            for (int j = 0; j < G; j++) db[j] += dz[j];
        }
    }
    if (dx) fedci_gemm(0, 0, (int)rows, F, G, 1.0f, dZ, G, Wih, F, 0.0f, dx, F);
}

const fedci_layer_ops fedci_lstm_ops = {"lstm", 0, lstm_setup, lstm_forward, lstm_backward,
                                        0};
