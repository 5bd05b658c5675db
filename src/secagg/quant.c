/*
 * Quantization for secure aggregation (fedc/secagg.h): float updates to the ring Z_{2^bits}
 * with clipping and unbiased stochastic rounding, weighted by capped example counts, and back.
 * The overflow bound is checked once, at configuration time, so no sum can wrap.
 */
#include <assert.h>
#include <math.h>

#include "fedc/secagg.h"

fedc_status fedc_secagg_quant_check(fedc_secagg_quant *q, uint32_t n, fedc_err *err)
{
    assert(q);
    if (!(q->clip > 0) || !isfinite(q->clip))
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.clip = %g must be > 0", q->clip);
    if (q->bits < 1 || q->bits > 32)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.bits = %u, need 1..32", q->bits);
    if (q->max_weight < 1)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.max_weight must be >= 1");
    if (n < 1) return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg: no clients");
    double ring = ldexp(1.0, (int)q->bits);
    double nw = (double)n * q->max_weight;
    if (nw >= ring)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg: %u clients x max_weight %u = %.0f "
                            "does not fit the ring 2^%u (the weight sum would overflow)", n,
                            q->max_weight, nw, q->bits);
    if (q->levels == 0) {
        double l1 = floor((ring - 1) / nw);
        if (l1 > 16777215.0) l1 = 16777215.0;
        if (l1 < 1)
            return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg: no quantization level fits "
                                "2^%u for %u clients x max_weight %u", q->bits, n,
                                q->max_weight);
        q->levels = (uint32_t)l1 + 1;
    }
    if (q->levels < 2)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.levels = %u, need >= 2", q->levels);
    if (nw * (q->levels - 1.0) >= ring)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg: %u clients x max_weight %u x (levels "
                            "%u - 1) = %.0f >= 2^%u: the sum could overflow; lower "
                            "secagg.levels or secagg.max_weight, or raise secagg.bits", n,
                            q->max_weight, q->levels, nw * (q->levels - 1.0), q->bits);
    return FEDC_OK;
}

fedc_status fedc_secagg_quantize(const fedc_secagg_quant *q, const float *x, size_t n,
                                 uint64_t num_examples, fedc_rng *rng, uint32_t *out,
                                 fedc_err *err)
{
    assert(q && x && rng && out && q->levels >= 2 && q->clip > 0);
    if (num_examples < 1)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg: num_examples must be >= 1");
    uint32_t w = num_examples < q->max_weight ? (uint32_t)num_examples : q->max_weight;
    double c = q->clip, scale = (q->levels - 1.0) / (2.0 * c), top = q->levels - 1.0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        if (!isfinite(v))
            return fedc_err_set(err, FEDC_ERR_NONFINITE, "secagg: update[%zu] is not finite", i);
        if (v > c) v = c;
        if (v < -c) v = -c;
        double r = floor((v + c) * scale + fedc_rng_uniform(rng));
        if (r > top) r = top;
        if (r < 0) r = 0;
        out[i] = (uint32_t)r * w;
    }
    out[n] = w;
    return FEDC_OK;
}

fedc_status fedc_secagg_dequantize(const fedc_secagg_quant *q, const uint32_t *sum, size_t n,
                                   float *out, uint64_t *weight_sum, fedc_err *err)
{
    assert(q && sum && out && q->levels >= 2);
    uint64_t w = sum[n];
    if (weight_sum) *weight_sum = w;
    if (w == 0) return fedc_err_set(err, FEDC_ERR_STATE, "secagg: weight sum is 0");
    double step = 2.0 * q->clip / (q->levels - 1.0);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)sum[i] / (double)w * step - q->clip);
    return FEDC_OK;
}
