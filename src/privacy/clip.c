/*
 * L2 clipping of a flat vector (DP-FedAvg's per-update clipping, DP-SGD's per-example
 * clipping): the sensitivity bound every DP guarantee of fedc rests on, so the result's norm is
 * guaranteed <= the clip, not just approximately.
 */
#include <assert.h>
#include <math.h>

#include "fedc/privacy.h"
#include "fedc/vec.h"

/* Float rounding of x[i] * s can leave the norm a few ulps above the clip; each retry shrinks
 * by a further 2^-20 relative, far more than the rounding, so one retry is all it ever takes. */
#define CLIP_MAX_TRIES 8

static void scale_in_double(size_t n, float *x, double s)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)x[i] * s);
}

fedc_status fedc_dp_clip_l2(size_t n, float *x, double clip, double *pre_norm, fedc_err *err)
{
    if (!(clip > 0.0) || !isfinite(clip))
        return fedc_err_set(err, FEDC_ERR_RANGE, "clip norm %g must be a finite number > 0",
                            clip);
    assert(x || n == 0);
    ptrdiff_t bad = fedc_vec_find_nonfinite(n, x);
    if (bad >= 0)
        return fedc_err_set(err, FEDC_ERR_NONFINITE, "cannot clip: element %td of %zu is %s",
                            bad, n, isnan(x[bad]) ? "NaN" : "Inf");
    double norm = fedc_vec_norm2(n, x);
    if (pre_norm) *pre_norm = norm;
    if (!(norm > clip)) return FEDC_OK;
    scale_in_double(n, x, clip / norm);
    for (int t = 0;; t++) {
        double m = fedc_vec_norm2(n, x);
        if (m <= clip) break;
        assert(t < CLIP_MAX_TRIES);
        scale_in_double(n, x, clip / m * (1.0 - ldexp(1.0, -20)));
    }
    return FEDC_OK;
}
