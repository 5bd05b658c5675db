/*
 * Element-wise layers without parameters: ReLU, tanh, sigmoid, dropout, and flatten. Their
 * backward passes use the forward output (y), so nothing else is saved, except dropout's mask.
 * Flatten moves no data: the engine passes its input and gradient through (see engine.c).
 */
#include <math.h>
#include <string.h>

#include "fedc/rng.h"
#include "fedc/status.h"
#include "nn/nn_internal.h"

static fedc_status same_shape_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    (void)where;
    (void)err;
    L->out_ndim = L->in_ndim;
    memcpy(L->out, L->in, sizeof L->out);
    if (L->kind == FEDCI_DROPOUT) L->save_ps = L->in_n;
    return FEDC_OK;
}

static fedc_status flatten_setup(fedci_layer *L, const char *where, fedc_err *err)
{
    (void)where;
    (void)err;
    L->out_ndim = 1;
    L->out[0] = (int)L->in_n;
    L->out[1] = L->out[2] = 1;
    return FEDC_OK;
}

static void relu_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                         const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)P;
    (void)save;
    const size_t n = (size_t)B * L->in_n;
    const float *restrict xs = x;
    float *restrict ys = y;
    for (size_t i = 0; i < n; i++) {
        float v = xs[i];
        ys[i] = v > 0.0f ? v : 0.0f;
    }
}

static void relu_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                          const float *x, const float *y, const float *save, const float *dy,
                          float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)P;
    (void)x;
    (void)save;
    (void)dP;
    (void)pe_sq;
    if (!dx) return;
    const size_t n = (size_t)B * L->in_n;
    const float *restrict ys = y, *restrict dys = dy;
    float *restrict dxs = dx;
    /* Branch-free: signs are random, a branch would mispredict half the time. */
    for (size_t i = 0; i < n; i++) {
        float d = dys[i];
        dxs[i] = ys[i] > 0.0f ? d : 0.0f;
    }
}

static void tanh_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                         const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)P;
    (void)save;
    const size_t n = (size_t)B * L->in_n;
    for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

static void tanh_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                          const float *x, const float *y, const float *save, const float *dy,
                          float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)P;
    (void)x;
    (void)save;
    (void)dP;
    (void)pe_sq;
    if (!dx) return;
    const size_t n = (size_t)B * L->in_n;
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

/* Logistic function without overflow for large |x|. */
static inline float sigmoidf(float x)
{
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float z = expf(x);
    return z / (1.0f + z);
}

static void sigmoid_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                            const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)P;
    (void)save;
    const size_t n = (size_t)B * L->in_n;
    for (size_t i = 0; i < n; i++) y[i] = sigmoidf(x[i]);
}

static void sigmoid_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                             const float *x, const float *y, const float *save, const float *dy,
                             float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)P;
    (void)x;
    (void)save;
    (void)dP;
    (void)pe_sq;
    if (!dx) return;
    const size_t n = (size_t)B * L->in_n;
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

/* Inverted dropout: kept values are scaled by 1/(1-p) in training, so evaluation is the
 * identity. The mask (0 or 1/(1-p) per element) is saved for backward. */
static void dropout_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                            const float *x, float *y, float *mask, int B)
{
    (void)P;
    const size_t n = (size_t)B * L->in_n;
    if (!e->train || L->p <= 0.0f) {
        memcpy(y, x, n * sizeof *y);
        for (size_t i = 0; i < n; i++) mask[i] = 1.0f;
        return;
    }
    const float keep = 1.0f / (1.0f - L->p), p = L->p;
    for (size_t i = 0; i < n; i++) {
        mask[i] = fedc_rng_uniformf(e->rng) >= p ? keep : 0.0f;
        y[i] = x[i] * mask[i];
    }
}

static void dropout_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
                             const float *x, const float *y, const float *mask, const float *dy,
                             float *dx, float *dP, double *pe_sq, int B)
{
    (void)e;
    (void)P;
    (void)x;
    (void)y;
    (void)dP;
    (void)pe_sq;
    if (!dx) return;
    const size_t n = (size_t)B * L->in_n;
    for (size_t i = 0; i < n; i++) dx[i] = dy[i] * mask[i];
}

/* Flatten: only reached when the engine cannot alias (it always can); kept complete anyway. */
static void flatten_forward(const fedci_layer *L, const fedci_exec *e, const float *P,
                            const float *x, float *y, float *save, int B)
{
    (void)e;
    (void)P;
    (void)save;
    if (y != x) memcpy(y, x, (size_t)B * L->in_n * sizeof *y);
}

static void flatten_backward(const fedci_layer *L, const fedci_exec *e, const float *P,
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
    if (dx && dx != dy) memcpy(dx, dy, (size_t)B * L->in_n * sizeof *dx);
}

const fedci_layer_ops fedci_relu_ops = {"relu", 0, same_shape_setup, relu_forward,
                                        relu_backward, 0};
const fedci_layer_ops fedci_tanh_ops = {"tanh", 0, same_shape_setup, tanh_forward,
                                        tanh_backward, 0};
const fedci_layer_ops fedci_sigmoid_ops = {"sigmoid", 0, same_shape_setup, sigmoid_forward,
                                           sigmoid_backward, 0};
const fedci_layer_ops fedci_dropout_ops = {"dropout", 0, same_shape_setup, dropout_forward,
                                           dropout_backward, 0};
const fedci_layer_ops fedci_flatten_ops = {"flatten", 0, flatten_setup, flatten_forward,
                                           flatten_backward, 0};
