/*
 * Cross-key validation of the [dp] configuration: the constraints between dp.* and the rest of
 * the run (clients.*, run.*) that per-key bounds in src/core/config_keys.c cannot express.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/privacy.h"

fedc_status fedc_dp_config_check(const fedc_config *cfg, fedc_err *err)
{
    assert(cfg);
    const char *mode = fedc_config_str(cfg, "dp.mode");
    int central_or_local = strcmp(mode, "off") != 0;
    if (!central_or_local && !fedc_config_bool(cfg, "dp.sgd")) return FEDC_OK;

    int64_t n = fedc_config_int(cfg, "clients.count");
    int64_t k = fedc_config_int(cfg, "clients.per_round");
    double delta = fedc_config_double(cfg, "dp.delta");
    double z = fedc_config_double(cfg, "dp.noise_multiplier");
    if (n <= 0 || k <= 0 || k > n)
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "clients.per_round = %lld with clients.count = %lld: the sampling "
                            "rate %g is outside (0, 1]",
                            (long long)k, (long long)n, n > 0 ? (double)k / (double)n : 0.0);
    double q = (double)k / (double)n;
    if (!(delta < 1.0 / (double)n))
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "dp.delta = %g must be < 1/clients.count = %g (%lld clients): a "
                            "larger delta allows releasing one client's data outright",
                            delta, 1.0 / (double)n, (long long)n);
    double *orders = NULL;
    size_t norders = 0;
    fedc_status st = fedc_rdp_orders_parse(fedc_config_str(cfg, "dp.orders"), &orders, &norders,
                                           err);
    if (st != FEDC_OK) {
        if (st != FEDC_ERR_NOMEM) {
            fedc_err_prefix(err, "dp.orders: ");
            if (err) err->code = FEDC_ERR_CONFIG;
            st = FEDC_ERR_CONFIG;
        }
        return st;
    }
    int central = strcmp(mode, "central") == 0, local = strcmp(mode, "local") == 0;
    if (local && strcmp(fedc_config_str(cfg, "dp.clip_on"), "client") != 0) {
        fedc_free(orders);
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "dp.clip_on = %s with dp.mode = local: local DP clips and noises on "
                            "the client (set dp.clip_on = client)",
                            fedc_config_str(cfg, "dp.clip_on"));
    }
    if (!central && fedc_config_bool(cfg, "dp.adaptive_clip")) {
        fedc_free(orders);
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "dp.adaptive_clip needs dp.mode = central (dp.mode = %s): the "
                            "clipped count is noised on the server",
                            mode);
    }
    if (central && fedc_config_bool(cfg, "dp.adaptive_clip")) {
        double sb = fedc_config_double(cfg, "dp.clipped_count_stddev");
        if (sb == 0.0) sb = (double)k / 20.0;
        double zd;
        if (fedc_dp_noise_split(z, sb, &zd, NULL) != FEDC_OK) {
            fedc_free(orders);
            return fedc_err_set(err, FEDC_ERR_CONFIG,
                                "dp.noise_multiplier = %g must be < 2 * clipped-count stddev = "
                                "%g with dp.adaptive_clip (dp.clipped_count_stddev, default "
                                "clients.per_round / 20)",
                                z, 2.0 * sb);
        }
    }
    double budget = fedc_config_double(cfg, "dp.epsilon_budget");
    /* Central DP: one round is one step at q. Local DP: one participation is one Gaussian
     * mechanism seen directly by the server (q = 1) with sensitivity 2C (any two clipped
     * updates), i.e. noise multiplier z / 2. DP-SGD's cost depends on each client's data size:
     * the engine checks it. */
    if ((central || local) && budget > 0.0) {
        double eps = 0.0, order = 0.0, qq = central ? q : 1.0, zz = central ? z : z / 2.0;
        fedc_err e2;
        fedc_err_clear(&e2);
        st = fedc_dp_epsilon(qq, zz, 1, delta, orders, norders, &eps, &order, &e2);
        if (st == FEDC_OK && eps > budget)
            st = fedc_err_set(err, FEDC_ERR_CONFIG,
                              "dp.epsilon_budget = %g is spent by the first round alone "
                              "(epsilon %g at q = %g, z = %g, delta = %g%s)",
                              budget, eps, qq, zz, delta,
                              central ? "" : "; local DP: q = 1 and z / 2 for sensitivity 2C");
        else if (st != FEDC_OK)
            st = fedc_err_set(err, st == FEDC_ERR_NOMEM ? st : FEDC_ERR_CONFIG, "dp: %s",
                              fedc_err_message(&e2));
    }
    fedc_free(orders);
    return st;
}
