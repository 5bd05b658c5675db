/*
 * Losses over logits: softmax cross-entropy (fused with the softmax, max-shifted so it never
 * overflows), binary cross-entropy with logits (the log1p(exp(-|z|)) form), mean squared
 * error; their gradients and the prediction counts used for accuracy.
 */
#include <math.h>

#include "nn/nn_internal.h"

const char *fedci_loss_name(fedc_loss_kind kind)
{
    switch (kind) {
    case FEDC_LOSS_CE: return "ce";
    case FEDC_LOSS_BCE: return "bce";
    case FEDC_LOSS_MSE: return "mse";
    }
    return "?";
}

/* Target of output j for label y: one-hot, or the label itself when there is one output. */
static inline float target(int32_t y, int O, int j)
{
    if (O == 1) return (float)y;
    return j == y ? 1.0f : 0.0f;
}

static double softmax_ce(const float *z, int32_t y, int O, float gscale, float *dz, int *ok)
{
    float mx = z[0];
    int arg = 0;
    for (int j = 1; j < O; j++)
        if (z[j] > mx) {
            mx = z[j];
            arg = j;
        }
    double s = 0.0;
    for (int j = 0; j < O; j++) s += exp((double)z[j] - mx);
    double lse = mx + log(s);
    if (dz) {
        double inv = 1.0 / s;
        for (int j = 0; j < O; j++) {
            double p = exp((double)z[j] - mx) * inv;
            dz[j] = (float)((p - (j == y ? 1.0 : 0.0)) * gscale);
        }
    }
    *ok = arg == y;
    return lse - z[y];
}

static double bce(const float *z, int32_t y, int O, float gscale, float *dz, int *ok)
{
    double l = 0.0;
    int arg = 0;
    for (int j = 0; j < O; j++) {
        double zj = z[j], t = target(y, O, j);
        l += fmax(zj, 0.0) - zj * t + log1p(exp(-fabs(zj)));
        if (dz) dz[j] = (float)((1.0 / (1.0 + exp(-zj)) - t) * gscale);
        if (z[j] > z[arg]) arg = j;
    }
    *ok = O == 1 ? ((z[0] > 0.0f) == (y != 0)) : arg == y;
    return l;
}

static double mse(const float *z, int32_t y, int O, float gscale, float *dz, int *ok)
{
    double l = 0.0;
    int arg = 0;
    for (int j = 0; j < O; j++) {
        double d = (double)z[j] - target(y, O, j);
        l += d * d;
        if (dz) dz[j] = (float)(2.0 * d / O * gscale);
        if (z[j] > z[arg]) arg = j;
    }
    *ok = O == 1 ? fabs((double)z[0] - y) < 0.5 : arg == y;
    return l / O;
}

double fedci_loss(fedc_loss_kind kind, const float *z, const int32_t *y, int B, int O,
                  float gscale, float *dz, double *per_ex, int64_t *correct)
{
    double sum = 0.0;
    int64_t hits = 0;
    for (int b = 0; b < B; b++) {
        const float *zb = z + (size_t)b * O;
        float *db = dz ? dz + (size_t)b * O : NULL;
        int ok = 0;
        double l;
        switch (kind) {
        case FEDC_LOSS_BCE: l = bce(zb, y[b], O, gscale, db, &ok); break;
        case FEDC_LOSS_MSE: l = mse(zb, y[b], O, gscale, db, &ok); break;
        case FEDC_LOSS_CE:
        default: l = softmax_ce(zb, y[b], O, gscale, db, &ok); break;
        }
        if (per_ex) per_ex[b] = l;
        sum += l;
        hits += ok;
    }
    if (correct) *correct += hits;
    return sum;
}
