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
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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
    /* scale-out (MPI): a release shared from the process that draws the noise */
    fedc_dp_release_fn release_fn;
    void *release_user;
    int release_draws;
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
            int draw = !dp->release_fn || dp->release_draws; /* scale-out: one process draws */
            if (draw)
                FEDC_TRY(fedc_dp_noise_add(&dp->noise, dp->num_params, mean_out,
                                           info->noise_stddev, err));
            if (fedc_accountant_add(dp->acc, dp->round_q, dp->z, 1) != FEDC_OK)
                return fedc_err_set(err, FEDC_ERR_RANGE, "dp accountant: %s",
                                    fedc_accountant_errmsg(dp->acc));
            if (dp->round_q > dp->max_q) dp->max_q = dp->round_q;
            info->released = 1;
            if (dp->adaptive) {
                fedc_adaptive_clip_update(&dp->ac, draw ? &dp->noise : NULL, &info->next_clip);
                dp->last_fraction = dp->ac.last_fraction;
            }
            if (dp->release_fn) { /* scale-out: every process gets the drawing one's release */
                double shared[2] = {dp->ac.clip, dp->ac.last_fraction};
                FEDC_TRY(dp->release_fn(dp->release_user, mean_out, dp->num_params, shared, err));
                if (dp->adaptive) {
                    dp->ac.clip = info->next_clip = shared[0];
                    dp->ac.last_fraction = dp->last_fraction = shared[1];
                }
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
                            "restoring round %u of a run with dp.mode = local or dp.sgd from "
                            "the model alone: the per-client privacy accounts are in engine "
                            "checkpoints only (fedc_engine_checkpoint_load)",
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

/* ---- checkpoints: the state across rounds as text entries (fedc/privacy.h; owner: state) ---- */

typedef struct dp_text {
    char *s;
    size_t len, cap;
    int failed;
} dp_text;

static void text_add(dp_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(dp_text *t, const char *fmt, ...)
{
    if (t->failed) return;
    char piece[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(piece, sizeof piece, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof piece) {
        t->failed = 1;
        return;
    }
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        while (cap < t->len + (size_t)n + 1) cap *= 2;
        char *s = fedc_realloc(t->s, cap);
        if (!s) {
            t->failed = 1;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
    memcpy(t->s + t->len, piece, (size_t)n + 1);
    t->len += (size_t)n;
}

/* put(key, the text), freeing it. */
static fedc_status text_put(dp_text *t, const char *key, fedc_dp_put_fn put, void *ctx,
                            fedc_err *err)
{
    fedc_status st = t->failed ? fedc_err_set(err, FEDC_ERR_NOMEM, "dp state: out of memory")
                               : put(ctx, key, t->s ? t->s : "", err);
    fedc_free(t->s);
    memset(t, 0, sizeof *t);
    return st;
}

fedc_status fedc_dp_run_state_save(const fedc_dp_run *dp, fedc_dp_put_fn put, void *ctx,
                                   fedc_err *err)
{
    assert(dp && put);
    dp_text t = {0};
    text_add(&t, "%.17g", dp->max_q);
    FEDC_TRY(text_put(&t, "max_q", put, ctx, err));
    FEDC_TRY(put(ctx, "charged", dp->charged ? "1" : "0", err));
    if (dp->mode == FEDC_DP_CENTRAL) {
        for (size_t i = 0; i < fedc_accountant_phase_count(dp->acc); i++) {
            double q, z;
            uint64_t steps;
            fedc_accountant_phase(dp->acc, i, &q, &z, &steps);
            text_add(&t, "%s%.17g:%.17g:%llu", i ? ";" : "", q, z, (unsigned long long)steps);
        }
        FEDC_TRY(text_put(&t, "accountant", put, ctx, err));
        if (dp->adaptive) {
            text_add(&t, "%.17g", dp->ac.clip);
            FEDC_TRY(text_put(&t, "clip", put, ctx, err));
            text_add(&t, "%llu", (unsigned long long)dp->ac.rounds);
            FEDC_TRY(text_put(&t, "clip_rounds", put, ctx, err));
            text_add(&t, "%.17g", dp->last_fraction);
            FEDC_TRY(text_put(&t, "last_fraction", put, ctx, err));
        }
    }
    if (dp->mode == FEDC_DP_LOCAL) {
        for (uint32_t c = 0; c < dp->num_clients; c++)
            if (dp->participations[c])
                text_add(&t, "%s%u:%u", t.len ? "," : "", c, dp->participations[c]);
        FEDC_TRY(text_put(&t, "participations", put, ctx, err));
    }
    if (dp->sgd) {
        for (uint32_t c = 0; c < dp->num_clients; c++)
            if (dp->sgd_steps[c])
                text_add(&t, "%s%u:%llu:%.17g", t.len ? "," : "", c,
                         (unsigned long long)dp->sgd_steps[c], dp->sgd_q[c]);
        FEDC_TRY(text_put(&t, "sgd", put, ctx, err));
        text_add(&t, "%.17g", dp->sgd_eps);
        FEDC_TRY(text_put(&t, "sgd_eps", put, ctx, err));
        text_add(&t, "%.17g", dp->sgd_order);
        FEDC_TRY(text_put(&t, "sgd_order", put, ctx, err));
    }
    return FEDC_OK;
}

/* A double from *p up to one of the stop characters (or the end); advances *p. NaN only when
 * nan_ok. */
static int parse_real(const char **p, int nan_ok, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(*p, &end);
    if (end == *p || errno == ERANGE || (isnan(v) ? !nan_ok : !isfinite(v))) return -1;
    *p = end;
    *out = v;
    return 0;
}

static int parse_count(const char **p, uint64_t *out)
{
    if (**p < '0' || **p > '9') return -1;
    uint64_t v = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++) {
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(**p - '0');
    }
    *out = v;
    return 0;
}

/* The value of `key`, or NULL with err set. */
static const char *entry(fedc_dp_get_fn get, void *ctx, const char *key, fedc_err *err)
{
    const char *v = get(ctx, key);
    if (!v) fedc_err_set(err, FEDC_ERR_FORMAT, "dp state: entry '%s' is missing", key);
    return v;
}

static fedc_status bad_entry(fedc_err *err, const char *key, const char *v, const char *at,
                             const char *what)
{
    return fedc_err_set(err, FEDC_ERR_FORMAT, "dp state: entry '%s', at byte %td: %s", key,
                        at - v, what);
}

/* One real entry in [lo, hi] (NaN allowed when nan_ok). */
static fedc_status real_entry(fedc_dp_get_fn get, void *ctx, const char *key, double lo,
                              double hi, int nan_ok, double *out, fedc_err *err)
{
    const char *v = entry(get, ctx, key, err);
    if (!v) return FEDC_ERR_FORMAT;
    const char *p = v;
    if (parse_real(&p, nan_ok, out) != 0 || *p)
        return bad_entry(err, key, v, p, "not a finite number");
    if (!isnan(*out) && !(*out >= lo && *out <= hi))
        return fedc_err_set(err, FEDC_ERR_RANGE, "dp state: entry '%s' = %.17g is outside "
                            "[%g, %g]", key, *out, lo, hi);
    return FEDC_OK;
}

fedc_status fedc_dp_run_state_load(fedc_dp_run *dp, uint32_t rounds, fedc_dp_get_fn get,
                                   void *ctx, fedc_err *err)
{
    assert(dp && get);
    double max_q = 0, clip = 0, last_fraction = NAN, sgd_eps = 0, sgd_order = NAN;
    uint64_t clip_rounds = 0;
    FEDC_TRY(real_entry(get, ctx, "max_q", dp->q, 1.0, 0, &max_q, err));
    const char *v = entry(get, ctx, "charged", err);
    if (!v) return FEDC_ERR_FORMAT;
    if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        return bad_entry(err, "charged", v, v, "not 0 or 1");
    int charged = v[0] == '1';
    fedc_accountant *acc = NULL;
    uint32_t *part = NULL, max_part = 0;
    uint64_t *sgd_steps = NULL;
    double *sgd_q = NULL;
    fedc_status st = FEDC_OK;
    if (dp->mode == FEDC_DP_CENTRAL) {
        const char *key = "accountant";
        if (!(v = entry(get, ctx, key, err))) return FEDC_ERR_FORMAT;
        if (!(acc = fedc_accountant_create(dp->orders, dp->norders, err)))
            return err ? err->code : FEDC_ERR_NOMEM;
        for (const char *p = v; st == FEDC_OK && *p;) {
            double q, z;
            uint64_t steps;
            const char *at = p;
            if (parse_real(&p, 0, &q) || *p++ != ':' || parse_real(&p, 0, &z) || *p++ != ':' ||
                parse_count(&p, &steps) || (*p && *p != ';'))
                st = bad_entry(err, key, v, at, "not a phase q:z:steps");
            else if (steps > rounds - fedc_accountant_steps(acc)) /* no wrap-around */
                st = fedc_err_set(err, FEDC_ERR_RANGE,
                                  "dp state: accountant phase at byte %td holds %llu rounds, "
                                  "more than the %u rounds done",
                                  at - v, (unsigned long long)steps, rounds);
            else if (!(q >= dp->q && q <= max_q) || z != dp->z || steps == 0)
                st = fedc_err_set(err, FEDC_ERR_RANGE,
                                  "dp state: accountant phase at byte %td: q %.17g z %.17g "
                                  "steps %llu, this run has q in [%.17g, max_q %.17g], z %.17g",
                                  at - v, q, z, (unsigned long long)steps, dp->q, max_q, dp->z);
            else if ((st = fedc_accountant_add(acc, q, z, steps)) != FEDC_OK)
                st = fedc_err_set(err, st == FEDC_ERR_NOMEM ? st : FEDC_ERR_RANGE,
                                  "dp state: accountant: %s", fedc_accountant_errmsg(acc));
            else if (*p == ';')
                p++;
        }
        if (st == FEDC_OK && fedc_accountant_steps(acc) > rounds)
            st = fedc_err_set(err, FEDC_ERR_RANGE,
                              "dp state: the accountant holds %llu released rounds, more than "
                              "the %u rounds done",
                              (unsigned long long)fedc_accountant_steps(acc), rounds);
        if (st == FEDC_OK && dp->adaptive) {
            st = real_entry(get, ctx, "clip", 0, HUGE_VAL, 0, &clip, err);
            if (st == FEDC_OK && !(clip > 0))
                st = fedc_err_set(err, FEDC_ERR_RANGE, "dp state: entry 'clip' is %g", clip);
            const char *r = st == FEDC_OK ? entry(get, ctx, "clip_rounds", err) : NULL;
            const char *p = r;
            if (st == FEDC_OK && !r) st = FEDC_ERR_FORMAT;
            if (st == FEDC_OK && (parse_count(&p, &clip_rounds) || *p))
                st = bad_entry(err, "clip_rounds", r, p, "not a count");
            if (st == FEDC_OK && clip_rounds > rounds)
                st = fedc_err_set(err, FEDC_ERR_RANGE, "dp state: clip_rounds %llu > %u rounds",
                                  (unsigned long long)clip_rounds, rounds);
            if (st == FEDC_OK)
                st = real_entry(get, ctx, "last_fraction", 0, 1, 1, &last_fraction, err);
        }
    }
    if (st == FEDC_OK && dp->mode == FEDC_DP_LOCAL) {
        const char *key = "participations";
        if (!(v = entry(get, ctx, key, err))) st = FEDC_ERR_FORMAT;
        if (st == FEDC_OK && !(part = fedc_calloc(dp->num_clients, sizeof *part)))
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "dp state: out of memory");
        for (const char *p = v; st == FEDC_OK && *p;) {
            uint64_t c, n;
            const char *at = p;
            if (parse_count(&p, &c) || *p++ != ':' || parse_count(&p, &n) || (*p && *p != ','))
                st = bad_entry(err, key, v, at, "not client:count");
            else if (c >= dp->num_clients || n == 0 || n > rounds || part[c])
                st = fedc_err_set(err, FEDC_ERR_RANGE,
                                  "dp state: participations at byte %td: client %llu, count "
                                  "%llu (clients.count %u, %u rounds, each client once)",
                                  at - v, (unsigned long long)c, (unsigned long long)n,
                                  dp->num_clients, rounds);
            else {
                part[c] = (uint32_t)n;
                if (n > max_part) max_part = (uint32_t)n;
                if (*p == ',') p++;
            }
        }
    }
    if (st == FEDC_OK && dp->sgd) {
        const char *key = "sgd";
        if (!(v = entry(get, ctx, key, err))) st = FEDC_ERR_FORMAT;
        if (st == FEDC_OK && (!(sgd_steps = fedc_calloc(dp->num_clients, sizeof *sgd_steps)) ||
                              !(sgd_q = fedc_calloc(dp->num_clients, sizeof *sgd_q))))
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "dp state: out of memory");
        for (const char *p = v; st == FEDC_OK && *p;) {
            uint64_t c, n;
            double q;
            const char *at = p;
            if (parse_count(&p, &c) || *p++ != ':' || parse_count(&p, &n) || *p++ != ':' ||
                parse_real(&p, 0, &q) || (*p && *p != ','))
                st = bad_entry(err, key, v, at, "not client:steps:q");
            else if (c >= dp->num_clients || n == 0 || !(q > 0 && q <= 1) || sgd_steps[c])
                st = fedc_err_set(err, FEDC_ERR_RANGE,
                                  "dp state: sgd at byte %td: client %llu, steps %llu, q %g "
                                  "(clients.count %u, q in (0, 1], each client once)",
                                  at - v, (unsigned long long)c, (unsigned long long)n, q,
                                  dp->num_clients);
            else {
                sgd_steps[c] = n;
                sgd_q[c] = q;
                if (*p == ',') p++;
            }
        }
        if (st == FEDC_OK) st = real_entry(get, ctx, "sgd_eps", 0, HUGE_VAL, 0, &sgd_eps, err);
        if (st == FEDC_OK)
            st = real_entry(get, ctx, "sgd_order", 1, HUGE_VAL, 1, &sgd_order, err);
    }
    if (st != FEDC_OK) {
        fedc_accountant_destroy(acc);
        fedc_free(part);
        fedc_free(sgd_steps);
        fedc_free(sgd_q);
        return st;
    }
    /* all checked: install */
    dp->max_q = max_q;
    dp->charged = charged;
    dp->round = rounds;
    if (acc) {
        fedc_accountant_destroy(dp->acc);
        dp->acc = acc;
    }
    if (dp->adaptive) {
        dp->ac.clip = clip;
        dp->ac.rounds = clip_rounds;
        dp->ac.last_fraction = dp->last_fraction = last_fraction;
    }
    if (part) {
        fedc_free(dp->participations);
        dp->participations = part;
        dp->max_participations = max_part;
    }
    if (sgd_steps) {
        fedc_free(dp->sgd_steps);
        fedc_free(dp->sgd_q);
        dp->sgd_steps = sgd_steps;
        dp->sgd_q = sgd_q;
        dp->sgd_eps = sgd_eps;
        dp->sgd_order = sgd_order;
    }
    return FEDC_OK;
}

/* ---- scale-out: partial sums and a shared release (fedc/privacy.h; owner: mpi) ---- */

/* The partial: the exact sum's raw words, then the adaptive count's observed and unclipped
 * records. */
size_t fedc_dp_run_partial_len(const fedc_dp_run *dp)
{
    assert(dp);
    if (dp->mode != FEDC_DP_CENTRAL) return 0;
    return fedc_accum_len(dp->sum) + FEDC_ACCUM_TRAILER + 2;
}

void fedc_dp_run_partial(fedc_dp_run *dp, int64_t *out)
{
    assert(dp && out);
    if (dp->mode != FEDC_DP_CENTRAL) return;
    size_t len;
    const int64_t *raw = fedc_accum_raw(dp->sum, &len);
    memcpy(out, raw, len * sizeof *raw);
    /* centred_sum is a sum of +-1/2 terms: exact, so the unclipped count is too */
    out[len] = (int64_t)dp->ac.observed;
    out[len + 1] = (int64_t)llround(dp->ac.centred_sum + 0.5 * (double)dp->ac.observed);
}

fedc_status fedc_dp_run_partial_set(fedc_dp_run *dp, const int64_t *in, fedc_err *err)
{
    assert(dp && in);
    if (dp->mode != FEDC_DP_CENTRAL) return FEDC_OK;
    size_t len;
    int64_t *raw = fedc_accum_raw(dp->sum, &len);
    int64_t observed = in[len], unclipped = in[len + 1];
    if (observed < 0 || unclipped < 0 || unclipped > observed)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "dp partial: %lld unclipped of %lld observed updates",
                            (long long)unclipped, (long long)observed);
    memcpy(raw, in, len * sizeof *raw);
    fedc_status st = fedc_accum_check_raw(dp->sum, err);
    if (st != FEDC_OK) {
        fedc_accum_reset(dp->sum); /* the round is unusable; leave no torn sum behind */
        return st;
    }
    dp->ac.observed = (uint64_t)observed;
    /* the same bits as observing the records one by one: every term and sum is exact */
    dp->ac.centred_sum = 0.5 * (double)unclipped - 0.5 * (double)(observed - unclipped);
    return FEDC_OK;
}

void fedc_dp_run_set_release_hook(fedc_dp_run *dp, fedc_dp_release_fn fn, void *user, int draws)
{
    assert(dp);
    dp->release_fn = fn;
    dp->release_user = user;
    dp->release_draws = draws;
}
