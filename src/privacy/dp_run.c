/*
 * The DP state of a run, kept by the round engine (include/fedc/privacy.h, "The DP state of a
 * run"; docs/PRIVACY.md, "DP in the round engine"):
 *
 *   central (DP-FedAvg, McMahan et al. 2018): every update clipped to C (on the client or on
 *     arrival), folded with weight 1 into an exact fixed-point sum; at the end of the round the
 *     sum gets N(0, (z_delta C)^2) per coordinate and is divided by the fixed denominator
 *     m = clients.per_round; the accountant records one step at q = m / clients.count and z;
 *     adaptive clipping (Andrew et al. 2021) moves C from a noised count of unclipped updates.
 *   local: clients clip and noise their own updates (fedc_dp_client_apply); here only the
 *     per-client accounting (participations) and the budget.
 *   DP-SGD (Abadi et al. 2016): per-client example-level accounting at q = batch / examples
 *     and the steps each client reports.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "fedc/accum.h"
#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/privacy.h"

/* DP-SGD: one-step RDP per distinct sampling rate, cached (clients of equal size share it). */
#define SGD_CACHE_MAX 256

typedef struct sgd_rate {
    double q;
    double *rdp1; /* one-step RDP at each order */
} sgd_rate;

struct fedc_dp_run {
    const fedc_config *cfg;
    fedc_dp_mode mode;
    int sgd, seeded, server_clip, adaptive;
    size_t num_params;
    uint64_t seed;
    uint32_t num_clients, per_round, round;
    double q, z, z_update, delta, budget;
    double round_q, max_q; /* central: this round's sampling rate (over-selection raises it),
                              and the largest so far (the budget check's) */
    int charged;           /* local DP / DP-SGD: some client has been charged */
    double *orders;
    size_t norders;
    double *work; /* norders doubles */
    /* central */
    fedc_accum *sum;
    fedc_adaptive_clip ac;
    double fixed_clip, round_clip;
    fedc_accountant *acc;
    fedc_dp_noise noise;
    double last_fraction;
    /* local: participations per client */
    uint32_t *participations;
    uint32_t max_participations;
    /* DP-SGD: per client total steps and sampling rate */
    double sgd_z;
    int64_t batch, epochs, steps_cfg;
    uint64_t *sgd_steps;
    double *sgd_q;
    sgd_rate cache[SGD_CACHE_MAX];
    size_t ncache;
    double sgd_eps, sgd_order;
    fedc_dp_examples_fn examples;
    const void *examples_ctx;
};

void fedc_dp_run_destroy(fedc_dp_run *dp)
{
    if (!dp) return;
    fedc_accum_destroy(dp->sum);
    fedc_accountant_destroy(dp->acc);
    fedc_dp_noise_fini(&dp->noise);
    fedc_free(dp->orders);
    fedc_free(dp->work);
    fedc_free(dp->participations);
    fedc_free(dp->sgd_steps);
    fedc_free(dp->sgd_q);
    for (size_t i = 0; i < dp->ncache; i++) fedc_free(dp->cache[i].rdp1);
    fedc_free(dp);
}

fedc_dp_mode fedc_dp_run_mode(const fedc_dp_run *dp)
{
    assert(dp);
    return dp->mode;
}

fedc_status fedc_dp_run_create(const fedc_config *cfg, size_t num_params,
                               fedc_dp_examples_fn examples, const void *examples_ctx,
                               fedc_dp_run **out, fedc_err *err)
{
    assert(cfg && out);
    *out = NULL;
    const char *mode = fedc_config_str(cfg, "dp.mode");
    fedc_dp_mode m = strcmp(mode, "central") == 0 ? FEDC_DP_CENTRAL
                     : strcmp(mode, "local") == 0 ? FEDC_DP_LOCAL
                                                  : FEDC_DP_OFF;
    int sgd = fedc_config_bool(cfg, "dp.sgd");
    if (m == FEDC_DP_OFF && !sgd) return FEDC_OK;
    FEDC_TRY(fedc_dp_config_check(cfg, err));

    fedc_dp_run *dp = fedc_calloc(1, sizeof *dp);
    if (!dp) return fedc_err_set(err, FEDC_ERR_NOMEM, "dp: out of memory");
    dp->cfg = cfg;
    dp->mode = m;
    dp->sgd = sgd;
    dp->seeded = fedc_config_bool(cfg, "dp.seeded_noise");
    dp->server_clip = strcmp(fedc_config_str(cfg, "dp.clip_on"), "server") == 0;
    dp->adaptive = m == FEDC_DP_CENTRAL && fedc_config_bool(cfg, "dp.adaptive_clip");
    dp->num_params = num_params;
    dp->seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    dp->num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    dp->per_round = (uint32_t)fedc_config_int(cfg, "clients.per_round");
    dp->q = dp->round_q = dp->max_q = (double)dp->per_round / (double)dp->num_clients;
    dp->z = fedc_config_double(cfg, "dp.noise_multiplier");
    dp->z_update = dp->z;
    dp->delta = fedc_config_double(cfg, "dp.delta");
    dp->budget = fedc_config_double(cfg, "dp.epsilon_budget");
    dp->fixed_clip = dp->round_clip = fedc_config_double(cfg, "dp.clip");
    dp->sgd_z = fedc_config_double(cfg, "dp.sgd_noise_multiplier");
    dp->batch = fedc_config_int(cfg, "train.batch_size");
    dp->epochs = fedc_config_int(cfg, "train.epochs");
    dp->steps_cfg = fedc_config_int(cfg, "train.steps");
    dp->examples = examples;
    dp->examples_ctx = examples_ctx;
    dp->last_fraction = NAN;
    dp->sgd_order = NAN;

    fedc_status st = fedc_rdp_orders_parse(fedc_config_str(cfg, "dp.orders"), &dp->orders,
                                           &dp->norders, err);
    if (st == FEDC_OK && !(dp->work = fedc_malloc(dp->norders * sizeof(double))))
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "dp: out of memory");
    if (st == FEDC_OK && m == FEDC_DP_CENTRAL) {
        if (!(dp->acc = fedc_accountant_create(dp->orders, dp->norders, err)))
            st = err ? err->code : FEDC_ERR_NOMEM;
        if (st == FEDC_OK) st = fedc_accum_create(num_params, &dp->sum, err);
        if (st == FEDC_OK && dp->adaptive) {
            fedc_adaptive_clip_params p;
            fedc_adaptive_clip_defaults(&p, (double)dp->per_round);
            p.initial_clip = dp->fixed_clip;
            p.target_quantile = fedc_config_double(cfg, "dp.target_quantile");
            p.learning_rate = fedc_config_double(cfg, "dp.clip_lr");
            double sb = fedc_config_double(cfg, "dp.clipped_count_stddev");
            if (sb > 0.0) p.count_stddev = sb;
            st = fedc_adaptive_clip_init(&dp->ac, &p, err);
            if (st == FEDC_OK) st = fedc_dp_noise_split(dp->z, p.count_stddev, &dp->z_update, err);
            if (st != FEDC_OK && st != FEDC_ERR_NOMEM) {
                fedc_err_prefix(err, "dp.adaptive_clip: ");
                if (err) err->code = FEDC_ERR_CONFIG;
                st = FEDC_ERR_CONFIG;
            }
        }
    }
    if (st == FEDC_OK && m == FEDC_DP_LOCAL &&
        !(dp->participations = fedc_calloc(dp->num_clients, sizeof(uint32_t))))
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "dp: out of memory for %u clients' accounts",
                          dp->num_clients);
    if (st == FEDC_OK && sgd &&
        (!(dp->sgd_steps = fedc_calloc(dp->num_clients, sizeof(uint64_t))) ||
         !(dp->sgd_q = fedc_calloc(dp->num_clients, sizeof(double)))))
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "dp: out of memory for %u clients' DP-SGD accounts",
                          dp->num_clients);
    if (st == FEDC_OK && !dp->seeded && m != FEDC_DP_OFF)
        st = fedc_dp_noise_init_secure(&dp->noise, err);
    if (st != FEDC_OK) {
        fedc_dp_run_destroy(dp);
        return st;
    }
    if (dp->seeded)
        fedc_log(FEDC_LOG_WARN, "dp",
                 "dp.seeded_noise = true: DP noise comes from the run seed; this run is "
                 "reproducible and NOT private (tests only); its metrics say dp_private = false");
    *out = dp;
    return FEDC_OK;
}

/* ---- accounting helpers ---- */

/* eps at dp->delta of RDP values rdp[] (norders). */
static fedc_status eps_of(fedc_dp_run *dp, const double *rdp, double *eps, double *order,
                          fedc_err *err)
{
    return fedc_rdp_epsilon(dp->orders, rdp, dp->norders, dp->delta, eps, order, err);
}

/* Local DP: eps of one client after p participations (q = 1, sensitivity 2C: z / 2). */
static fedc_status local_eps(fedc_dp_run *dp, uint64_t p, double *eps, double *order,
                             fedc_err *err)
{
    if (p == 0) {
        *eps = 0.0;
        if (order) *order = NAN;
        return FEDC_OK;
    }
    return fedc_dp_epsilon(1.0, dp->z / 2.0, p, dp->delta, dp->orders, dp->norders, eps, order,
                           err);
}

/* DP-SGD: the sampling rate of a client with n examples. */
static double sgd_rate_of(const fedc_dp_run *dp, uint64_t n)
{
    if (n == 0 || (uint64_t)dp->batch >= n) return 1.0;
    return (double)dp->batch / (double)n;
}

/* DP-SGD: eps after `steps` steps at q (the one-step RDP of q cached). */
static fedc_status sgd_eps(fedc_dp_run *dp, double q, uint64_t steps, double *eps, double *order,
                           fedc_err *err)
{
    if (steps == 0) {
        *eps = 0.0;
        if (order) *order = NAN;
        return FEDC_OK;
    }
    const double *rdp1 = NULL;
    for (size_t i = 0; i < dp->ncache && !rdp1; i++)
        if (dp->cache[i].q == q) rdp1 = dp->cache[i].rdp1;
    if (!rdp1) {
        double *r = dp->ncache < SGD_CACHE_MAX ? fedc_malloc(dp->norders * sizeof(double)) : NULL;
        double *dst = r ? r : dp->work;
        fedc_status st = fedc_rdp_compute(q, dp->sgd_z, 1, dp->orders, dp->norders, dst, err);
        if (st != FEDC_OK) {
            fedc_free(r);
            return st;
        }
        if (r) dp->cache[dp->ncache++] = (sgd_rate){q, r};
        rdp1 = dst;
    }
    /* steps x the one-step RDP: what fedc_rdp_compute gives for `steps` steps, bit for bit */
    for (size_t k = 0; k < dp->norders; k++) dp->work[k] = rdp1[k] * (double)steps;
    return eps_of(dp, dp->work, eps, order, err);
}

/* DP-SGD: the steps a client with n examples takes in a round (the built-in trainer's rule:
 * train.epochs passes over ceil(n / batch) batches, or train.steps). */
static uint64_t sgd_steps_of(const fedc_dp_run *dp, uint64_t n)
{
    if (dp->epochs > 0)
        return (uint64_t)dp->epochs * ((n + (uint64_t)dp->batch - 1) / (uint64_t)dp->batch);
    return (uint64_t)dp->steps_cfg;
}

/* ---- rounds ---- */

fedc_status fedc_dp_run_check_round(fedc_dp_run *dp, const uint32_t *clients, size_t n,
                                    double *eps_after, fedc_err *err)
{
    assert(dp && (clients || n == 0));
    double eps = NAN, order = NAN;
    const char *what = "";
    if (dp->mode == FEDC_DP_CENTRAL) {
        FEDC_TRY(fedc_accountant_epsilon_if(dp->acc, dp->max_q, dp->z, 1, dp->delta, &eps,
                                            &order));
        what = "user-level (central)";
    } else if (dp->mode == FEDC_DP_LOCAL) {
        uint32_t p = 0;
        for (size_t i = 0; i < n; i++)
            if (clients[i] < dp->num_clients && dp->participations[clients[i]] > p)
                p = dp->participations[clients[i]];
        FEDC_TRY(local_eps(dp, (uint64_t)p + 1, &eps, &order, err));
        what = "user-level (local, the most-used selected client)";
    } else if (dp->sgd) {
        eps = dp->sgd_eps;
        for (size_t i = 0; i < n; i++) {
            uint32_t c = clients[i];
            if (c >= dp->num_clients) continue;
            uint64_t ex = dp->examples ? dp->examples(dp->examples_ctx, c) : 0;
            double q = ex ? sgd_rate_of(dp, ex) : dp->sgd_q[c];
            if (!(q > 0.0)) continue; /* size unknown and never seen: cannot predict */
            double e = 0.0;
            FEDC_TRY(sgd_eps(dp, q, dp->sgd_steps[c] + sgd_steps_of(dp, ex), &e, NULL, err));
            if (e > eps) eps = e;
        }
        what = "example-level (DP-SGD, the most-spent selected client)";
    }
    if (eps_after) *eps_after = eps;
    if (dp->budget > 0.0 && eps > dp->budget)
        return fedc_err_set(err, FEDC_ERR_BUDGET,
                            "round %u would spend epsilon %.6g (%s, delta %g), more than "
                            "dp.epsilon_budget = %g",
                            dp->round + 1, eps, what, dp->delta, dp->budget);
    return FEDC_OK;
}

void fedc_dp_run_round_begin(fedc_dp_run *dp, uint32_t round)
{
    assert(dp);
    dp->round = round;
    dp->round_q = dp->q;
    if (dp->mode != FEDC_DP_CENTRAL) return;
    fedc_accum_reset(dp->sum);
    dp->round_clip = dp->adaptive ? fedc_adaptive_clip_current(&dp->ac) : dp->fixed_clip;
    dp->ac.centred_sum = 0.0;
    dp->ac.observed = 0;
    if (dp->seeded) fedc_dp_noise_init_seeded(&dp->noise, dp->seed, round, FEDC_RNG_ANY);
}

void fedc_dp_run_round_cohort(fedc_dp_run *dp, size_t selected)
{
    assert(dp);
    double q = (double)selected / (double)dp->num_clients;
    dp->round_q = q > dp->q ? (q < 1.0 ? q : 1.0) : dp->q;
}

void fedc_dp_run_client_task(const fedc_dp_run *dp, uint32_t client, fedc_dp_client_task *task)
{
    assert(dp && task);
    memset(task, 0, sizeof *task);
    task->seed = dp->seed;
    task->round = dp->round;
    task->client = client;
    task->seeded_noise = dp->seeded;
    if (dp->mode == FEDC_DP_CENTRAL && !dp->server_clip) {
        task->clip = dp->round_clip;
    } else if (dp->mode == FEDC_DP_LOCAL) {
        task->clip = dp->fixed_clip;
        task->noise_stddev = dp->z * dp->fixed_clip;
    }
}

fedc_status fedc_dp_run_prepare(const fedc_dp_run *dp, uint32_t client, float *update,
                                const fedc_dp_client_report *report, int *unclipped,
                                fedc_err *err)
{
    assert(dp && update && unclipped);
    *unclipped = 1;
    if (dp->mode != FEDC_DP_CENTRAL) return FEDC_OK;
    double c = dp->round_clip, pre = 0.0;
    FEDC_TRY(fedc_dp_clip_l2(dp->num_params, update, c, &pre, err));
    if (dp->server_clip) {
        *unclipped = pre <= c;
    } else {
        if (pre > c)
            fedc_log(FEDC_LOG_WARN, "dp",
                     "round %u: client %u sent an update of norm %g above its clip %g "
                     "(dp.clip_on = client): clipped on arrival",
                     dp->round, client, pre, c);
        if (dp->adaptive) {
            if (!report)
                return fedc_err_set(err, FEDC_ERR_INVALID,
                                    "client %u: adaptive clipping with dp.clip_on = client needs "
                                    "the client's clipped bit (fedc_engine_submit_dp)",
                                    client);
            *unclipped = report->unclipped && pre <= c;
        }
    }
    /* Round every coordinate toward zero onto the exact sum's grid (2^-32). Coordinates of
     * magnitude >= 2^-9 are on it already (their float ulp is >= 2^-32); smaller ones move by
     * less than 2^-32 and only toward zero, so the norm stays <= C and the sum's own rounding
     * (to nearest) has nothing left to round. */
    for (size_t i = 0; i < dp->num_params; i++) {
        /* |a| < 2^-9: a * 2^32 fits an int32, and the conversion truncates toward zero (the
         * select keeps large values out of the conversion, which would overflow) */
        float a = update[i];
        int small = fabsf(a) < 0x1p-9f;
        float t = (float)(int32_t)((small ? a : 0.0f) * 0x1p32f) * 0x1p-32f;
        update[i] = small ? t : a;
    }
    return FEDC_OK;
}

fedc_status fedc_dp_run_fold(fedc_dp_run *dp, const float *update, int unclipped, fedc_err *err)
{
    assert(dp && update && dp->mode == FEDC_DP_CENTRAL);
    FEDC_TRY(fedc_accum_add(dp->sum, 1.0, update, err));
    if (dp->adaptive) fedc_adaptive_clip_observe_bit(&dp->ac, unclipped);
    return FEDC_OK;
}

fedc_status fedc_dp_run_charge(fedc_dp_run *dp, uint32_t client, uint64_t num_examples,
                               uint64_t steps, fedc_err *err)
{
    assert(dp);
    if (client >= dp->num_clients)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dp: client %u is not below clients.count = %u",
                            client, dp->num_clients);
    dp->charged = 1;
    if (dp->mode == FEDC_DP_LOCAL) {
        uint32_t p = ++dp->participations[client];
        if (p > dp->max_participations) dp->max_participations = p;
    }
    if (dp->sgd && steps > 0) {
        double q = sgd_rate_of(dp, num_examples);
        dp->sgd_q[client] = q;
        dp->sgd_steps[client] += steps;
        double e = 0.0, o = 0.0;
        FEDC_TRY(sgd_eps(dp, q, dp->sgd_steps[client], &e, &o, err));
        if (e > dp->sgd_eps) {
            dp->sgd_eps = e;
            dp->sgd_order = o;
        }
    }
    return FEDC_OK;
}

fedc_status fedc_dp_run_round_end(fedc_dp_run *dp, int release, float *mean_out,
                                  fedc_dp_round_info *info, fedc_err *err)
{
    assert(dp && info);
    memset(info, 0, sizeof *info);
    info->mode = dp->mode;
    info->sgd = dp->sgd;
    info->seeded = dp->seeded;
    info->clip = info->next_clip = info->noise_multiplier = info->update_noise_multiplier = NAN;
    info->noise_stddev = info->unclipped_fraction = info->epsilon = info->order = NAN;
    info->sgd_epsilon = info->sgd_order = NAN;
    if (dp->mode == FEDC_DP_CENTRAL) {
        double m = (double)dp->per_round, c = dp->round_clip;
        info->clip = info->next_clip = c;
        info->noise_multiplier = dp->z;
        info->update_noise_multiplier = dp->z_update;
        info->noise_stddev = dp->z_update * c / m;
        if (release) {
            assert(mean_out);
            fedc_accum_sum(dp->sum, 1.0 / m, mean_out);
            FEDC_TRY(fedc_dp_noise_add(&dp->noise, dp->num_params, mean_out, info->noise_stddev,
                                       err));
            if (fedc_accountant_add(dp->acc, dp->round_q, dp->z, 1) != FEDC_OK)
                return fedc_err_set(err, FEDC_ERR_RANGE, "dp accountant: %s",
                                    fedc_accountant_errmsg(dp->acc));
            if (dp->round_q > dp->max_q) dp->max_q = dp->round_q;
            info->released = 1;
            if (dp->adaptive) {
                fedc_adaptive_clip_update(&dp->ac, &dp->noise, &info->next_clip);
                dp->last_fraction = dp->ac.last_fraction;
            }
        }
        info->unclipped_fraction = dp->adaptive && release ? dp->last_fraction : NAN;
        if (fedc_accountant_epsilon(dp->acc, dp->delta, &info->epsilon, &info->order) != FEDC_OK)
            return fedc_err_set(err, FEDC_ERR_RANGE, "dp accountant: %s",
                                fedc_accountant_errmsg(dp->acc));
        info->steps = fedc_accountant_steps(dp->acc);
    } else if (dp->mode == FEDC_DP_LOCAL) {
        if (release)
            return fedc_err_set(err, FEDC_ERR_STATE, "dp: release is central DP's");
        info->clip = info->next_clip = dp->fixed_clip;
        info->noise_multiplier = dp->z / 2.0;
        info->update_noise_multiplier = dp->z;
        info->noise_stddev = dp->z * dp->fixed_clip;
        FEDC_TRY(local_eps(dp, dp->max_participations, &info->epsilon, &info->order, err));
        info->steps = dp->max_participations;
    } else if (release) {
        return fedc_err_set(err, FEDC_ERR_STATE, "dp: release is central DP's");
    }
    if (dp->sgd) {
        info->sgd_epsilon = dp->sgd_eps;
        info->sgd_order = dp->sgd_order;
    }
    return FEDC_OK;
}

fedc_status fedc_dp_run_restore(fedc_dp_run *dp, uint32_t rounds, fedc_err *err)
{
    assert(dp);
    if ((dp->mode == FEDC_DP_LOCAL || dp->sgd) && !dp->charged && rounds > 0)
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "restoring round %u of a run with dp.mode = local or dp.sgd: the "
                            "per-client privacy accounts are not in checkpoints yet",
                            rounds);
    if (dp->mode == FEDC_DP_CENTRAL) {
        uint64_t have = fedc_accountant_steps(dp->acc);
        if (have < rounds && fedc_accountant_add(dp->acc, dp->max_q, dp->z, rounds - have) !=
                                 FEDC_OK)
            return fedc_err_set(err, FEDC_ERR_RANGE, "dp accountant: %s",
                                fedc_accountant_errmsg(dp->acc));
        if (have == 0 && dp->adaptive) dp->ac.clip = dp->fixed_clip;
    }
    dp->round = rounds;
    return FEDC_OK;
}
