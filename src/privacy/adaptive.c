/*
 * Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
 * with Adaptive Clipping"), as TensorFlow Federated runs it (TF Privacy's
 * QuantileAdaptiveClipSumQuery): the clip tracks a target quantile of the update norms through
 * a noised count of unclipped updates, and the noise budget is split between that count and
 * the update sum.
 */
#include <assert.h>
#include <math.h>

#include "fedc/privacy.h"

void fedc_adaptive_clip_defaults(fedc_adaptive_clip_params *params, double expected_clients)
{
    assert(params);
    params->initial_clip = 0.1;
    params->target_quantile = 0.5;
    params->learning_rate = 0.2;
    params->count_stddev = expected_clients / 20.0;
    params->expected_clients = expected_clients;
    params->geometric = 1;
}

fedc_status fedc_adaptive_clip_init(fedc_adaptive_clip *ac, const fedc_adaptive_clip_params *p,
                                    fedc_err *err)
{
    assert(ac && p);
    if (!(p->initial_clip > 0.0) || !isfinite(p->initial_clip))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "adaptive clipping: initial clip %g must be a finite number > 0",
                            p->initial_clip);
    if (!(p->target_quantile >= 0.0 && p->target_quantile <= 1.0))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "adaptive clipping: target quantile %g is outside [0, 1]",
                            p->target_quantile);
    if (!(p->learning_rate >= 0.0) || !isfinite(p->learning_rate))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "adaptive clipping: learning rate %g must be finite and >= 0",
                            p->learning_rate);
    if (!(p->count_stddev >= 0.0) || !isfinite(p->count_stddev))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "adaptive clipping: clipped-count stddev %g must be finite and >= 0",
                            p->count_stddev);
    if (!(p->expected_clients > 0.0) || !isfinite(p->expected_clients))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "adaptive clipping: expected clients per round %g must be > 0",
                            p->expected_clients);
    ac->params = *p;
    ac->params.geometric = p->geometric ? 1 : 0;
    ac->clip = p->initial_clip;
    ac->centred_sum = 0.0;
    ac->observed = 0;
    ac->rounds = 0;
    ac->last_fraction = 0.0;
    return FEDC_OK;
}

double fedc_adaptive_clip_current(const fedc_adaptive_clip *ac)
{
    assert(ac);
    return ac->clip;
}

void fedc_adaptive_clip_observe_bit(fedc_adaptive_clip *ac, int unclipped)
{
    assert(ac);
    ac->centred_sum += unclipped ? 0.5 : -0.5;
    ac->observed++;
}

void fedc_adaptive_clip_observe(fedc_adaptive_clip *ac, double norm)
{
    fedc_adaptive_clip_observe_bit(ac, norm <= ac->clip);
}

void fedc_adaptive_clip_update(fedc_adaptive_clip *ac, fedc_dp_noise *noise, double *new_clip)
{
    assert(ac);
    const fedc_adaptive_clip_params *p = &ac->params;
    double sum = ac->centred_sum;
    if (noise && p->count_stddev > 0.0) sum += p->count_stddev * fedc_dp_noise_normal(noise);
    double b = sum / p->expected_clients + 0.5;
    if (b < 0.0) b = 0.0;
    if (b > 1.0) b = 1.0;
    double step = p->learning_rate * (b - p->target_quantile);
    double c = p->geometric ? ac->clip * exp(-step) : ac->clip - step;
    ac->clip = c > 0.0 ? c : 0.0;
    ac->last_fraction = b;
    ac->centred_sum = 0.0;
    ac->observed = 0;
    ac->rounds++;
    if (new_clip) *new_clip = ac->clip;
}

fedc_status fedc_dp_noise_split(double z, double count_stddev, double *z_delta, fedc_err *err)
{
    assert(z_delta);
    if (!(z > 0.0) || !isfinite(z))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "noise multiplier z = %g must be a finite number > 0", z);
    if (!(count_stddev >= 0.0) || !isfinite(count_stddev))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "clipped-count stddev %g must be finite and >= 0", count_stddev);
    if (count_stddev == 0.0) {
        *z_delta = z;
        return FEDC_OK;
    }
    /* The count has sensitivity 1/2, so its noise multiplier is 2 sigma_b; the two Gaussian
     * mechanisms compose as one with 1/z^2 = 1/z_delta^2 + 1/(2 sigma_b)^2. */
    double zb = 2.0 * count_stddev;
    if (z >= zb)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "noise multiplier z = %g must be < 2 * clipped-count stddev = %g: "
                            "the clipped count would take the whole privacy budget",
                            z, zb);
    *z_delta = 1.0 / sqrt(1.0 / (z * z) - 1.0 / (zb * zb));
    return FEDC_OK;
}
