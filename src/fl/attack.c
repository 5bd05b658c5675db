/*
 * Simulated Byzantine clients for robustness tests (declared in include/fedc/strategy.h): an
 * attack spec ("scale:F", "signflip", "gaussian:SIGMA") parsed once and applied to a client's
 * update before it is sent. Deterministic: the only randomness comes from the caller's stream.
 */
#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/strategy.h"

/* Parses the number after "name:" in spec; the whole rest must be a finite number. */
static fedc_status parse_param(const char *spec, const char *text, double *out, fedc_err *err)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v))
        return fedc_err_set(err, FEDC_ERR_INVALID, "attack '%s': '%s' is not a finite number",
                            spec, text);
    *out = v;
    return FEDC_OK;
}

fedc_status fedc_attack_parse(const char *spec, fedc_attack *out, fedc_err *err)
{
    assert(out);
    out->kind = FEDC_ATTACK_NONE;
    out->param = 0;
    if (!spec || !*spec || strcmp(spec, "none") == 0) return FEDC_OK;
    if (strncmp(spec, "scale:", 6) == 0) {
        out->kind = FEDC_ATTACK_SCALE;
        return parse_param(spec, spec + 6, &out->param, err);
    }
    if (strcmp(spec, "signflip") == 0) {
        out->kind = FEDC_ATTACK_SIGNFLIP;
        out->param = 1;
        return FEDC_OK;
    }
    if (strncmp(spec, "signflip:", 9) == 0) {
        out->kind = FEDC_ATTACK_SIGNFLIP;
        return parse_param(spec, spec + 9, &out->param, err);
    }
    if (strncmp(spec, "gaussian:", 9) == 0) {
        out->kind = FEDC_ATTACK_GAUSSIAN;
        FEDC_TRY(parse_param(spec, spec + 9, &out->param, err));
        if (out->param < 0)
            return fedc_err_set(err, FEDC_ERR_INVALID, "attack '%s': sigma must be >= 0", spec);
        return FEDC_OK;
    }
    return fedc_err_set(err, FEDC_ERR_INVALID,
                        "unknown attack '%s' (known: none, scale:F, signflip[:F], gaussian:SIGMA)",
                        spec);
}

/* The factor as a float; beyond float's range it is +-Inf (so the product overflows to Inf,
 * which is what an attacker sending huge values achieves). */
static float as_float(double v)
{
    if (v > FLT_MAX) return INFINITY;
    if (v < -FLT_MAX) return -INFINITY;
    return (float)v;
}

void fedc_attack_apply(const fedc_attack *attack, float *update, size_t n, fedc_rng *rng)
{
    assert(attack && (update || n == 0));
    switch (attack->kind) {
    case FEDC_ATTACK_NONE: return;
    case FEDC_ATTACK_SCALE: {
        const float f = as_float(attack->param);
        for (size_t i = 0; i < n; i++) update[i] *= f;
        return;
    }
    case FEDC_ATTACK_SIGNFLIP: {
        const float f = as_float(-attack->param);
        for (size_t i = 0; i < n; i++) update[i] *= f;
        return;
    }
    case FEDC_ATTACK_GAUSSIAN:
        assert(rng && "the gaussian attack needs an rng stream");
        for (size_t i = 0; i < n; i++) update[i] = (float)(attack->param * fedc_rng_normal(rng));
        return;
    }
}
