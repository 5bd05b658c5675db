/*
 * The round engine: client selection, the per-round cycle around the strategy, and the round's
 * record. Every transport (simulation, HTTP server, MPI) drives this same code.
 *
 * Differential privacy (the blocks marked "DP") wraps the strategy: central DP folds clipped
 * updates into the DP run's own exact sum and gives the strategy one noised mean update per
 * round; local DP and DP-SGD only keep per-client accounts here (src/privacy/dp_run.c).
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/engine.h"
#include "fedc/log.h"
#include "fedc/rng.h"
#include "fedc/safetensors.h"
#include "fedc/strategy.h"
#include "fedc/version.h"

struct fedc_engine {
    const fedc_config *cfg;
    const fedc_trainer *trainer;
    fedc_strategy *strategy;
    const fedc_layout *layout;
    size_t num_params;
    float *global;
    float *previous; /* global before the open round, for the step norm */
    uint64_t seed;
    uint32_t num_clients, per_round, min_clients;
    uint32_t last_round;
    int round_open;
    uint32_t *selected;
    size_t nselected;
    uint32_t *eval_selected;
    size_t neval;
    fedc_fit_config fit_cfg;
    pthread_mutex_t lock;
    /* counters of the open round (under lock) */
    uint32_t failures;
    uint32_t accepted;
    uint32_t refused;
    uint64_t bytes_up;
    double fit_seconds;
    /* DP (NULL / unused when DP is off) */
    fedc_dp_run *dp;
    fedc_dp_mode dp_mode;
    double dp_delta;
    float *dp_mean;          /* central: the round's noised mean update */
    uint8_t *dp_seen;        /* central: per selected slot, a result arrived this round */
    struct dp_stat *dp_stats; /* central: accepted clients' examples and loss (under lock) */
    size_t dp_nstats;
    size_t dp_cap;           /* entries of dp_seen and dp_stats (>= nselected when used) */
    uint32_t *dp_next;       /* the next round's selection, for the budget check */
};

/* DP central: what the record needs of an accepted client (the strategy sees only the mean). */
typedef struct dp_stat {
    uint32_t client;
    uint64_t examples;
    double loss;
} dp_stat;

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* k distinct ids from [0, n), sorted: Floyd's algorithm over a hash set, O(k) memory. */
static fedc_status sample_clients(uint64_t seed, uint32_t round, fedc_rng_purpose purpose,
                                  uint32_t n, uint32_t k, uint32_t *out, fedc_err *err)
{
    fedc_rng rng;
    fedc_rng_init(&rng, seed, round, FEDC_RNG_ANY, purpose);
    if (k == n) {
        for (uint32_t i = 0; i < n; i++) out[i] = i;
        return FEDC_OK;
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)k) cap *= 2;
    uint32_t *set = fedc_malloc(cap * sizeof *set);
    if (!set) return fedc_err_set(err, FEDC_ERR_NOMEM, "client sampling: out of memory");
    memset(set, 0xff, cap * sizeof *set); /* 0xffffffff = empty (ids are < n <= 2^32-1) */
    uint32_t count = 0;
    for (uint32_t j = n - k; j < n; j++) {
        uint32_t t = (uint32_t)fedc_rng_below(&rng, (uint64_t)j + 1);
        /* insert t, or j if t is present */
        uint32_t pick = t;
        for (int attempt = 0; attempt < 2; attempt++) {
            size_t h = ((uint64_t)pick * 0x9E3779B97F4A7C15ull) >> 20 & (cap - 1);
            int found = 0;
            while (set[h] != 0xffffffffu) {
                if (set[h] == pick) {
                    found = 1;
                    break;
                }
                h = (h + 1) & (cap - 1);
            }
            if (!found) {
                set[h] = pick;
                out[count++] = pick;
                break;
            }
            pick = j;
        }
    }
    fedc_free(set);
    qsort(out, count, sizeof *out, cmp_u32);
    return FEDC_OK;
}

/* DP: the trainer's client sizes, for predicting DP-SGD's cost. */
static uint64_t dp_examples(const void *ctx, uint32_t client)
{
    const fedc_trainer *t = ctx;
    return t->ops->num_examples ? t->ops->num_examples(t->shared, client) : 0;
}

/* DP: can the strategy run under the DP mode? Central DP needs the plain noised mean: a linear
 * strategy with no per-client side channel. */
static fedc_status dp_check_strategy(const fedc_engine *e, fedc_err *err)
{
    fedc_fit_config fc;
    fedc_strategy_configure_fit(e->strategy, 1, &fc);
    const char *name = fedc_strategy_name(e->strategy);
    if (e->dp_mode == FEDC_DP_CENTRAL && !fedc_strategy_is_streaming(e->strategy))
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "strategy.name = %s cannot run with dp.mode = central: DP-FedAvg "
                            "noises the sum of clipped updates, whose sensitivity to one client "
                            "is C; a robust rule selects or ranks individual updates, so one "
                            "client can move its output by more than C / m and the noise would "
                            "not cover it (use fedavg, fedavgm, fedprox, fedadam, fedyogi or "
                            "fedadagrad; see docs/PRIVACY.md)",
                            name);
    if (e->dp_mode != FEDC_DP_OFF && (fc.control || fc.want_loss_before))
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "strategy.name = %s cannot run with dp.mode = %s: it needs a "
                            "per-client value (%s) that leaves the client without clipping or "
                            "noise (see docs/PRIVACY.md)",
                            name, e->dp_mode == FEDC_DP_CENTRAL ? "central" : "local",
                            fc.control ? "SCAFFOLD's control delta" : "qfedavg's loss before "
                                                                      "training");
    return FEDC_OK;
}

fedc_status fedc_engine_create(const fedc_config *cfg, const fedc_trainer *trainer,
                               fedc_engine **out, fedc_err *err)
{
    *out = NULL;
    int64_t count = fedc_config_int(cfg, "clients.count");
    int64_t per_round = fedc_config_int(cfg, "clients.per_round");
    int64_t min = fedc_config_int(cfg, "clients.min");
    if (count > 0xfffffffell)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "clients.count = %lld is too large",
                            (long long)count);
    if (per_round > count)
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "clients.per_round = %lld is more than clients.count = %lld",
                            (long long)per_round, (long long)count);
    if (min > per_round)
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "clients.min = %lld is more than clients.per_round = %lld: no round "
                            "could succeed",
                            (long long)min, (long long)per_round);
    fedc_engine *e = fedc_calloc(1, sizeof *e);
    if (!e) return fedc_err_set(err, FEDC_ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->lock, NULL);
    e->cfg = cfg;
    e->trainer = trainer;
    e->seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    e->num_clients = (uint32_t)count;
    e->per_round = (uint32_t)per_round;
    e->min_clients = (uint32_t)min;
    e->layout = trainer->ops->layout(trainer->shared);
    e->num_params = e->layout->total;
    e->global = fedc_malloc(e->num_params * sizeof(float));
    e->previous = fedc_malloc(e->num_params * sizeof(float));
    e->selected = fedc_malloc((size_t)e->per_round * sizeof(uint32_t));
    fedc_status st = FEDC_OK;
    if (!e->global || !e->previous || !e->selected)
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "engine: out of memory for %zu parameters",
                          e->num_params);
    if (st == FEDC_OK) st = fedc_codec_config_check(cfg, err); /* [compress] and privacy */
    if (st == FEDC_OK) st = trainer->ops->init_params(trainer->shared, e->seed, e->global, err);
    if (st == FEDC_OK)
        st = fedc_strategy_create(cfg, e->num_params, e->global, &e->strategy, err);
    /* DP */
    if (st == FEDC_OK)
        st = fedc_dp_run_create(cfg, e->num_params, dp_examples, trainer, &e->dp, err);
    if (st == FEDC_OK && e->dp) {
        e->dp_mode = fedc_dp_run_mode(e->dp);
        e->dp_delta = fedc_config_double(cfg, "dp.delta");
        st = dp_check_strategy(e, err);
        if (st == FEDC_OK && !(e->dp_next = fedc_malloc((size_t)e->per_round * sizeof(uint32_t))))
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "engine: out of memory");
        if (st == FEDC_OK && e->dp_mode == FEDC_DP_CENTRAL &&
            !(e->dp_mean = fedc_malloc(e->num_params * sizeof(float))))
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "engine: out of memory for %zu parameters",
                              e->num_params);
    }
    if (st != FEDC_OK) {
        fedc_engine_destroy(e);
        return st;
    }
    *out = e;
    return FEDC_OK;
}

void fedc_engine_destroy(fedc_engine *e)
{
    if (!e) return;
    fedc_strategy_destroy(e->strategy);
    fedc_free(e->global);
    fedc_free(e->previous);
    fedc_free(e->selected);
    fedc_free(e->eval_selected);
    fedc_dp_run_destroy(e->dp);
    fedc_free(e->dp_mean);
    fedc_free(e->dp_seen);
    fedc_free(e->dp_stats);
    fedc_free(e->dp_next);
    pthread_mutex_destroy(&e->lock);
    fedc_free(e);
}

const float *fedc_engine_global(const fedc_engine *e) { return e->global; }
size_t fedc_engine_num_params(const fedc_engine *e) { return e->num_params; }
const fedc_layout *fedc_engine_layout(const fedc_engine *e) { return e->layout; }
uint32_t fedc_engine_last_round(const fedc_engine *e) { return e->last_round; }
const char *fedc_engine_strategy_name(const fedc_engine *e)
{
    return fedc_strategy_name(e->strategy);
}

int fedc_engine_needs_control(const fedc_engine *e)
{
    fedc_fit_config fc;
    fedc_strategy_configure_fit(e->strategy, e->last_round + 1, &fc);
    return fc.control != NULL;
}

fedc_status fedc_engine_restore(fedc_engine *e, uint32_t round, const float *global,
                                fedc_err *err)
{
    if (e->round_open)
        return fedc_err_set(err, FEDC_ERR_STATE, "engine: cannot restore while a round is open");
    ptrdiff_t bad = fedc_vec_find_nonfinite(e->num_params, global);
    if (bad >= 0)
        return fedc_err_set(err, FEDC_ERR_NONFINITE, "restored model: parameter %td is not finite",
                            bad);
    if (e->dp) FEDC_TRY(fedc_dp_run_restore(e->dp, round, err));
    fedc_vec_copy(e->num_params, global, e->global);
    e->last_round = round;
    return FEDC_OK;
}

fedc_status fedc_engine_round_begin(fedc_engine *e, const uint32_t **clients, size_t *n,
                                    fedc_err *err)
{
    if (e->round_open)
        return fedc_err_set(err, FEDC_ERR_STATE, "engine: round %u is still open",
                            e->last_round + 1);
    uint32_t round = e->last_round + 1;
    FEDC_TRY(sample_clients(e->seed, round, FEDC_RNG_SAMPLE, e->num_clients, e->per_round,
                            e->selected, err));
    e->nselected = e->per_round;
    if (e->dp) { /* DP: the budget, then a fresh sum */
        FEDC_TRY(fedc_dp_run_check_round(e->dp, e->selected, e->nselected, NULL, err));
        fedc_dp_run_round_begin(e->dp, round);
        if (e->dp_seen) memset(e->dp_seen, 0, e->dp_cap);
        e->dp_nstats = 0;
    }
    fedc_strategy_begin_round(e->strategy, round);
    fedc_strategy_configure_fit(e->strategy, round, &e->fit_cfg);
    fedc_vec_copy(e->num_params, e->global, e->previous);
    e->failures = 0;
    e->accepted = 0;
    e->refused = 0;
    e->bytes_up = 0;
    e->fit_seconds = 0;
    e->round_open = 1;
    *clients = e->selected;
    *n = e->nselected;
    return FEDC_OK;
}

void fedc_engine_fit_ins(const fedc_engine *e, uint32_t client, fedc_fit_ins *ins)
{
    memset(ins, 0, sizeof *ins);
    ins->round = e->last_round + 1;
    ins->client = client;
    ins->seed = e->seed;
    ins->global = e->previous; /* stable for the whole round */
    ins->num_params = e->num_params;
    ins->config = e->cfg;
    ins->prox_mu = e->fit_cfg.prox_mu;
    ins->lr = e->fit_cfg.lr;
    ins->server_control = e->fit_cfg.control;
    ins->want_loss_before = e->fit_cfg.want_loss_before;
}

static uint64_t update_bytes(const fedc_engine *e)
{
    return (uint64_t)e->num_params * sizeof(float) * (e->fit_cfg.control ? 2 : 1);
}

void fedc_engine_dp_task(const fedc_engine *e, uint32_t client, fedc_dp_client_task *task)
{
    if (!e->dp) {
        memset(task, 0, sizeof *task);
        return;
    }
    fedc_dp_run_client_task(e->dp, client, task);
}

/* DP central, under the lock: room for a result from every selected client (a transport may
 * select more than clients.per_round: fedc_engine_round_begin_select). */
static fedc_status dp_reserve(fedc_engine *e, fedc_err *err)
{
    if (e->dp_cap >= e->nselected) return FEDC_OK;
    uint8_t *seen = fedc_realloc(e->dp_seen, e->nselected);
    if (seen) e->dp_seen = seen;
    dp_stat *stats = seen ? fedc_realloc(e->dp_stats, e->nselected * sizeof *stats) : NULL;
    if (!stats) return fedc_err_set(err, FEDC_ERR_NOMEM, "engine: out of memory");
    e->dp_stats = stats;
    memset(e->dp_seen + e->dp_cap, 0, e->nselected - e->dp_cap);
    e->dp_cap = e->nselected;
    return FEDC_OK;
}

/* DP central, under the lock: admits one result of a selected client per round. */
static fedc_status dp_admit(fedc_engine *e, uint32_t client, fedc_err *err)
{
    if (!e->round_open) return fedc_err_set(err, FEDC_ERR_STATE, "client %u: no round is open", client);
    FEDC_TRY(dp_reserve(e, err));
    const uint32_t *hit = bsearch(&client, e->selected, e->nselected, sizeof client, cmp_u32);
    if (!hit)
        return fedc_err_set(err, FEDC_ERR_INVALID, "client %u was not selected in round %u",
                            client, e->last_round + 1);
    size_t slot = (size_t)(hit - e->selected);
    if (e->dp_seen[slot])
        return fedc_err_set(err, FEDC_ERR_INVALID, "client %u: a second result in round %u",
                            client, e->last_round + 1);
    e->dp_seen[slot] = 1;
    return FEDC_OK;
}

/* DP central: the rest of a submit, outside the lock then under it. */
static fedc_status dp_submit_central(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                                     const fedc_dp_client_report *report, double fit_seconds,
                                     fedc_err *err)
{
    pthread_mutex_lock(&e->lock);
    uint32_t round = e->last_round + 1;
    fedc_status st = dp_admit(e, client, err);
    int open = e->round_open;
    if (open) {
        e->bytes_up += update_bytes(e);
        e->fit_seconds += fit_seconds;
    }
    if (st == FEDC_OK)
        st = fedc_dp_run_charge(e->dp, client, out->num_examples, out->steps, err);
    if (st != FEDC_OK && open) e->refused++;
    pthread_mutex_unlock(&e->lock);
    if (st != FEDC_OK) return st;

    int unclipped = 1;
    st = fedc_dp_run_prepare(e->dp, client, out->update, report, &unclipped, err);

    pthread_mutex_lock(&e->lock);
    if (!e->round_open || e->last_round + 1 != round) {
        st = fedc_err_set(err, FEDC_ERR_STATE, "client %u: round %u closed before its result "
                          "was folded", client, round);
    } else if (st == FEDC_OK && !isfinite(out->train_loss) && !isnan(out->train_loss)) {
        st = fedc_err_set(err, FEDC_ERR_NONFINITE, "client %u: training loss is %g", client,
                          out->train_loss);
        e->refused++;
    } else if (st == FEDC_OK && (st = fedc_dp_run_fold(e->dp, out->update, unclipped, err)) ==
                                    FEDC_OK) {
        e->accepted++;
        e->dp_stats[e->dp_nstats++] = (dp_stat){client, out->num_examples, out->train_loss};
    } else {
        e->refused++;
    }
    pthread_mutex_unlock(&e->lock);
    return st;
}

fedc_status fedc_engine_submit(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                               double fit_seconds, fedc_err *err)
{
    return fedc_engine_submit_dp(e, client, out, NULL, fit_seconds, err);
}

fedc_status fedc_engine_submit_dp(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                                  const fedc_dp_client_report *report, double fit_seconds,
                                  fedc_err *err)
{
    if (out->num_examples == 0) { /* (owner: data) a client without training data */
        pthread_mutex_lock(&e->lock); /* (data.min_size = 0): nothing to fold, no refusal */
        int open = e->round_open;
        if (open) {
            e->bytes_up += update_bytes(e);
            e->fit_seconds += fit_seconds;
        }
        pthread_mutex_unlock(&e->lock);
        return open ? FEDC_OK
                    : fedc_err_set(err, FEDC_ERR_STATE, "client %u: no round is open", client);
    }
    if (e->dp_mode == FEDC_DP_CENTRAL) {
        fedc_status st = dp_submit_central(e, client, out, report, fit_seconds, err);
        if (st != FEDC_OK)
            fedc_log(FEDC_LOG_WARN, "round", "round %u: result of client %u refused: %s",
                     e->last_round + 1, client, fedc_err_message(err));
        return st;
    }
    fedc_fit_result res = {
        .client = client,
        .num_examples = out->num_examples,
        .update = out->update,
        .update_len = e->num_params,
        .train_loss = out->train_loss,
        .loss_before = out->loss_before,
        .control_delta = out->control_delta,
        .control_delta_len = out->control_delta ? e->num_params : 0,
    };
    pthread_mutex_lock(&e->lock);
    fedc_status st;
    if (!e->round_open) {
        st = fedc_err_set(err, FEDC_ERR_STATE, "client %u: no round is open", client);
    } else {
        e->bytes_up += update_bytes(e);
        e->fit_seconds += fit_seconds;
        st = e->dp ? fedc_dp_run_charge(e->dp, client, out->num_examples, out->steps, err)
                   : FEDC_OK; /* DP: released, so charged, accepted or not */
        if (st == FEDC_OK) st = fedc_strategy_add(e->strategy, &res, err);
        if (st == FEDC_OK)
            e->accepted++;
        else
            e->refused++;
    }
    pthread_mutex_unlock(&e->lock);
    if (st != FEDC_OK)
        fedc_log(FEDC_LOG_WARN, "round", "round %u: result of client %u refused: %s",
                 e->last_round + 1, client, fedc_err_message(err));
    return st;
}

/* SecAgg + central DP (secagg): a pre-aggregated sum of clipped updates (engine.h). */
fedc_status fedc_engine_submit_sum(fedc_engine *e, const uint32_t *clients, uint32_t count,
                                   const float *sum, double fit_seconds, fedc_err *err)
{
    if (e->dp_mode != FEDC_DP_CENTRAL)
        return fedc_err_set(err, FEDC_ERR_STATE, "engine: a pre-aggregated sum needs central DP");
    pthread_mutex_lock(&e->lock);
    fedc_status st = FEDC_OK;
    uint32_t admitted = 0;
    while (admitted < count && (st = dp_admit(e, clients[admitted], err)) == FEDC_OK) admitted++;
    if (st == FEDC_OK) st = fedc_dp_run_fold(e->dp, sum, 1, err);
    if (st != FEDC_OK) /* nothing was folded: the clients admitted so far may still report */
        for (uint32_t i = 0; i < admitted; i++) {
            const uint32_t *hit =
                bsearch(&clients[i], e->selected, e->nselected, sizeof *clients, cmp_u32);
            e->dp_seen[hit - e->selected] = 0;
        }
    if (st == FEDC_OK) {
        e->fit_seconds += fit_seconds;
        e->accepted += count;
        for (uint32_t i = 0; i < count; i++)
            e->dp_stats[e->dp_nstats++] = (dp_stat){clients[i], 0, NAN};
    } else if (e->round_open) {
        e->refused += count;
    }
    pthread_mutex_unlock(&e->lock);
    return st;
}

void fedc_engine_report_failure(fedc_engine *e, uint32_t client, const char *why)
{
    pthread_mutex_lock(&e->lock);
    e->failures++;
    pthread_mutex_unlock(&e->lock);
    fedc_log(FEDC_LOG_WARN, "round", "round %u: client %u failed: %s", e->last_round + 1, client,
             why);
}

static int cmp_dp_stat(const void *a, const void *b)
{
    uint32_t x = ((const dp_stat *)a)->client, y = ((const dp_stat *)b)->client;
    return (x > y) - (x < y);
}

/* DP: the round's DP fields and the budget check of the next round, into rec. */
static fedc_status dp_end_round(fedc_engine *e, int release, fedc_round_record *rec,
                                fedc_err *err)
{
    fedc_dp_round_info info;
    fedc_dp_run_round_cohort(e->dp, e->nselected);
    FEDC_TRY(fedc_dp_run_round_end(e->dp, release, e->dp_mean, &info, err));
    rec->dp_mode = (int)info.mode;
    rec->dp_sgd = info.sgd;
    rec->dp_seeded_noise = info.seeded;
    rec->epsilon = info.epsilon;
    rec->dp_order = info.order;
    rec->dp_delta = e->dp_delta;
    rec->dp_clip = info.clip;
    rec->dp_noise_stddev = info.noise_stddev;
    rec->dp_unclipped_fraction = info.unclipped_fraction;
    rec->dp_sgd_epsilon = info.sgd_epsilon;
    uint32_t next = rec->round + 1;
    if (next > (uint64_t)fedc_config_int(e->cfg, "run.rounds")) return FEDC_OK;
    FEDC_TRY(sample_clients(e->seed, next, FEDC_RNG_SAMPLE, e->num_clients, e->per_round,
                            e->dp_next, err));
    fedc_err berr;
    fedc_err_clear(&berr);
    double eps = NAN;
    fedc_status st = fedc_dp_run_check_round(e->dp, e->dp_next, e->per_round, &eps, &berr);
    if (st == FEDC_ERR_BUDGET) {
        rec->dp_budget_stop = 1;
        rec->dp_next_epsilon = eps;
        fedc_log(FEDC_LOG_INFO, "dp", "%s: the run stops after round %u", berr.msg, rec->round);
    } else if (st != FEDC_OK) {
        if (err) *err = berr;
        return st;
    }
    return FEDC_OK;
}

/* DP central: the strategy gets the noised mean as the round's only result; the record gets
 * the clients' counts. */
static fedc_status dp_finish_central(fedc_engine *e, fedc_round_record *rec, fedc_err *err)
{
    qsort(e->dp_stats, e->dp_nstats, sizeof *e->dp_stats, cmp_dp_stat);
    double loss_sum = 0, loss_w = 0;
    uint64_t examples = 0;
    for (size_t i = 0; i < e->dp_nstats; i++) {
        examples += e->dp_stats[i].examples;
        if (!isnan(e->dp_stats[i].loss)) {
            loss_sum += (double)e->dp_stats[i].examples * e->dp_stats[i].loss;
            loss_w += (double)e->dp_stats[i].examples;
        }
    }
    FEDC_TRY(dp_end_round(e, 1, rec, err));
    fedc_fit_result res = {
        .client = FEDC_CLIENT_SERVER,
        .num_examples = 1, /* the mean is already formed: weight 1 */
        .update = e->dp_mean,
        .update_len = e->num_params,
        .train_loss = loss_w > 0 ? loss_sum / loss_w : NAN,
        .loss_before = NAN,
    };
    FEDC_TRY(fedc_strategy_add(e->strategy, &res, err));
    fedc_round_agg info;
    memset(&info, 0, sizeof info);
    FEDC_TRY(fedc_strategy_finish_round(e->strategy, e->global, &info, err));
    rec->participants = e->accepted;
    rec->rejected = e->refused + e->failures;
    rec->examples = examples;
    rec->train_loss = res.train_loss;
    rec->update_norm = info.step_norm;
    return FEDC_OK;
}

fedc_status fedc_engine_round_end(fedc_engine *e, fedc_round_record *rec, fedc_err *err)
{
    memset(rec, 0, sizeof *rec);
    rec->epsilon = rec->dp_order = rec->dp_delta = rec->dp_clip = NAN;
    rec->dp_noise_stddev = rec->dp_unclipped_fraction = rec->dp_sgd_epsilon = NAN;
    rec->dp_next_epsilon = NAN;
    if (!e->round_open) return fedc_err_set(err, FEDC_ERR_STATE, "engine: no round is open");
    uint32_t round = e->last_round + 1;
    rec->round = round;
    rec->selected = (uint32_t)e->nselected;
    rec->bytes_down = (uint64_t)e->nselected * update_bytes(e);
    rec->bytes_up = e->bytes_up;
    rec->bytes_down_raw = rec->bytes_down; /* compression: a transport that encodes sets */
    rec->bytes_up_raw = rec->bytes_up;     /* bytes_up/down to what it sent (sim.c) */
    rec->fit_seconds = e->fit_seconds;
    rec->test_loss = rec->test_accuracy = NAN;
    rec->fed_loss = rec->fed_accuracy = NAN;
    e->round_open = 0;
    e->last_round = round;
    if (e->accepted < e->min_clients || e->accepted == 0) {
        /* Below quorum: the strategy's round is abandoned (its state untouched; the next
         * begin_round clears it) and the global model stays as it was. */
        rec->participants = 0;
        rec->rejected = e->refused + e->failures;
        if (e->dp) FEDC_TRY(dp_end_round(e, 0, rec, err)); /* DP: nothing released or spent */
        return fedc_err_set(err, FEDC_ERR_ABORTED,
                            "round %u: %u of %u results accepted, below clients.min = %u; "
                            "the global model is unchanged",
                            round, e->accepted, rec->selected, e->min_clients);
    }
    if (e->dp_mode == FEDC_DP_CENTRAL) return dp_finish_central(e, rec, err);
    fedc_round_agg info;
    memset(&info, 0, sizeof info);
    fedc_status st = fedc_strategy_finish_round(e->strategy, e->global, &info, err);
    if (st != FEDC_OK) return st;
    rec->participants = (uint32_t)info.accepted;
    rec->rejected = (uint32_t)info.rejected + e->failures;
    rec->examples = info.examples;
    rec->train_loss = info.train_loss;
    rec->update_norm = info.step_norm;
    if (e->dp) return dp_end_round(e, 0, rec, err);
    return FEDC_OK;
}

int fedc_engine_eval_due(const fedc_engine *e, uint32_t round)
{
    int64_t every = fedc_config_int(e->cfg, "eval.every");
    int64_t rounds = fedc_config_int(e->cfg, "run.rounds");
    if (round >= (uint64_t)rounds) return 1;
    return every > 0 && round % (uint64_t)every == 0;
}

void fedc_engine_eval_clients(fedc_engine *e, uint32_t round, const uint32_t **clients,
                              size_t *n)
{
    *clients = NULL;
    *n = 0;
    double frac = fedc_config_double(e->cfg, "eval.fraction");
    if (frac <= 0 || !fedc_engine_eval_due(e, round)) return;
    uint32_t k = (uint32_t)ceil(frac * e->num_clients);
    if (k == 0) return;
    if (k > e->num_clients) k = e->num_clients;
    uint32_t *ids = fedc_realloc(e->eval_selected, (size_t)k * sizeof *ids);
    if (!ids) return; /* out of memory: skip federated evaluation this round */
    e->eval_selected = ids;
    if (sample_clients(e->seed, round, FEDC_RNG_EVAL, e->num_clients, k, ids, NULL) != FEDC_OK)
        return;
    e->neval = k;
    *clients = ids;
    *n = k;
}

/* ---- Addition for the HTTP transport (src/net/server.c; owner: net) ----
 * Over-selection and round retries: selects `select` clients instead of clients.per_round,
 * and for attempt > 0 (a round re-run after missing its quorum) from an independent stream, so
 * that a retry does not pick the same vanished cohort. Attempt 0 with select = per_round is
 * exactly fedc_engine_round_begin (the simulation's cohort). */
fedc_status fedc_engine_round_begin_select(fedc_engine *e, uint32_t select, uint32_t attempt,
                                           const uint32_t **clients, size_t *n, fedc_err *err)
{
    FEDC_TRY(fedc_engine_round_begin(e, clients, n, err));
    if (select == 0) select = e->per_round;
    if (select > e->num_clients) select = e->num_clients;
    if (select == e->nselected && attempt == 0) return FEDC_OK;
    if (select > e->per_round) {
        uint32_t *sel = fedc_realloc(e->selected, (size_t)select * sizeof *sel);
        if (!sel) {
            e->round_open = 0;
            return fedc_err_set(err, FEDC_ERR_NOMEM, "engine: out of memory selecting %u clients",
                                select);
        }
        e->selected = sel;
    }
    uint64_t seed = attempt ? e->seed ^ (0x9E3779B97F4A7C15ull * attempt) : e->seed;
    fedc_status st = sample_clients(seed, e->last_round + 1, FEDC_RNG_SAMPLE, e->num_clients,
                                    select, e->selected, err);
    if (st != FEDC_OK) {
        e->round_open = 0;
        return st;
    }
    e->nselected = select;
    *clients = e->selected;
    *n = select;
    return FEDC_OK;
}

/* ---- Addition for the MPI transport (src/sim/mpi.c; owner: mpi) ----
 * Scale-out: the open round's counters, summed across ranks, and closing a round whose model
 * another rank computed (fedc/engine.h). */
void fedc_engine_round_counters(const fedc_engine *e, int64_t out[FEDC_ENGINE_COUNTERS])
{
    fedc_engine *m = (fedc_engine *)e; /* the lock only */
    pthread_mutex_lock(&m->lock);
    out[0] = e->accepted;
    out[1] = e->refused;
    out[2] = e->failures;
    out[3] = (int64_t)e->bytes_up;
    out[4] = (int64_t)llround(e->fit_seconds * 1e9);
    pthread_mutex_unlock(&m->lock);
}

void fedc_engine_set_round_counters(fedc_engine *e, const int64_t in[FEDC_ENGINE_COUNTERS])
{
    pthread_mutex_lock(&e->lock);
    e->accepted = (uint32_t)in[0];
    e->refused = (uint32_t)in[1];
    e->failures = (uint32_t)in[2];
    e->bytes_up = (uint64_t)in[3];
    e->fit_seconds = (double)in[4] * 1e-9;
    pthread_mutex_unlock(&e->lock);
}

fedc_strategy *fedc_engine_strategy(fedc_engine *e)
{
    return e->strategy;
}

/* DP under MPI: the DP run (its partial API and release hook, fedc/privacy.h), and central DP's
 * per-client statistics of the record as fixed 24-byte records (client, examples, loss). */
fedc_dp_run *fedc_engine_dp(fedc_engine *e)
{
    return e->dp;
}

size_t fedc_engine_dp_stats_count(const fedc_engine *e)
{
    return e->dp_mode == FEDC_DP_CENTRAL ? e->dp_nstats : 0;
}

void fedc_engine_dp_stats(const fedc_engine *e, unsigned char *out)
{
    for (size_t i = 0; i < fedc_engine_dp_stats_count(e); i++) {
        unsigned char *r = out + i * FEDC_ENGINE_DP_STAT_BYTES;
        uint32_t zero = 0;
        memcpy(r, &e->dp_stats[i].client, 4);
        memcpy(r + 4, &zero, 4);
        memcpy(r + 8, &e->dp_stats[i].examples, 8);
        memcpy(r + 16, &e->dp_stats[i].loss, 8);
    }
}

fedc_status fedc_engine_dp_stats_set(fedc_engine *e, const unsigned char *recs, size_t count,
                                     fedc_err *err)
{
    if (e->dp_mode != FEDC_DP_CENTRAL) return FEDC_OK;
    if (!e->round_open) return fedc_err_set(err, FEDC_ERR_STATE, "engine: no round is open");
    if (count > e->nselected)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "dp statistics: %zu records for %zu clients",
                            count, e->nselected);
    FEDC_TRY(dp_reserve(e, err));
    for (size_t i = 0; i < count; i++) {
        const unsigned char *r = recs + i * FEDC_ENGINE_DP_STAT_BYTES;
        dp_stat d;
        memcpy(&d.client, r, 4);
        memcpy(&d.examples, r + 8, 8);
        memcpy(&d.loss, r + 16, 8);
        e->dp_stats[i] = d;
    }
    e->dp_nstats = count;
    return FEDC_OK;
}

fedc_status fedc_engine_round_adopt(fedc_engine *e, const float *global, fedc_err *err)
{
    if (!e->round_open) return fedc_err_set(err, FEDC_ERR_STATE, "engine: no round is open");
    ptrdiff_t bad = fedc_vec_find_nonfinite(e->num_params, global);
    if (bad >= 0)
        return fedc_err_set(err, FEDC_ERR_NONFINITE,
                            "round %u: adopted model: parameter %td is not finite",
                            e->last_round + 1, bad);
    if (global != e->global) fedc_vec_copy(e->num_params, global, e->global);
    e->round_open = 0;
    e->last_round++;
    return FEDC_OK;
}

/* ---- Checkpoints: the engine's complete state (fedc/engine.h; owner: state) ----
 * One safetensors file: the model's tensors first, under their PyTorch names, then the
 * strategy's state tensors "__fedc__.strategy.NAME" (flat, update_len floats each); scalars in
 * __metadata__: the usual model keys (format, fedc_version, model_spec, round, strategy,
 * model_sha256 over the model tensors) and "__fedc__."-prefixed ones: the format version, the
 * config digest, the SHA-256 of the state tensors, the strategy's scalars
 * ("__fedc__.strategy.NAME") and the DP run's entries ("__fedc__.dp.KEY"). */

#define CKPT_FORMAT "fedc-engine-checkpoint-1"
#define CKPT_PREFIX "__fedc__."
#define CKPT_STRATEGY CKPT_PREFIX "strategy."
#define CKPT_DP CKPT_PREFIX "dp."

/* Keys that may differ between the run that saved a checkpoint and the one loading it: they
 * do not change what the engine computes (how many rounds, threads, logging, evaluation, the
 * HTTP transport's settings, and run.* keys other than run.seed, such as checkpoint options). */
static int key_is_operational(const fedc_config_key *k)
{
    static const char *const sections[] = {"eval", "round", "server", "client", NULL};
    for (int i = 0; sections[i]; i++)
        if (strcmp(k->section, sections[i]) == 0) return 1;
    return strcmp(k->section, "run") == 0 && strcmp(k->name, "seed") != 0;
}

/* SHA-256 (hex) of "section.key=value\n" over every key that defines the run and differs
 * from its default (so that a key added to the registry later, at its default, does not change
 * the digest of an existing run). */
static void config_digest(const fedc_config *cfg, char out[65])
{
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (key_is_operational(k)) continue;
        char dotted[128], line[256];
        snprintf(dotted, sizeof dotted, "%s.%s", k->section, k->name);
        const char *def = k->def ? k->def : "";
        const char *str = NULL;
        int n = 0;
        switch (k->type) {
        case FEDC_CFG_INT: {
            long long x = (long long)fedc_config_int(cfg, dotted);
            if (x == strtoll(def, NULL, 10)) continue;
            n = snprintf(line, sizeof line, "%s=%lld\n", dotted, x);
            break;
        }
        case FEDC_CFG_DOUBLE: {
            double x = fedc_config_double(cfg, dotted);
            if (x == strtod(def, NULL)) continue;
            n = snprintf(line, sizeof line, "%s=%.17g\n", dotted, x);
            break;
        }
        case FEDC_CFG_BOOL: {
            int x = fedc_config_bool(cfg, dotted) != 0;
            int d = !strcmp(def, "true") || !strcmp(def, "yes") || !strcmp(def, "on") ||
                    !strcmp(def, "1");
            if (x == d) continue;
            n = snprintf(line, sizeof line, "%s=%d\n", dotted, x);
            break;
        }
        default:
            str = fedc_config_str(cfg, dotted);
            if (strcmp(str, def) == 0) continue;
            n = snprintf(line, sizeof line, "%s=", dotted);
            break;
        }
        crypto_hash_sha256_update(&h, (const unsigned char *)line, (size_t)n);
        if (str) { /* strings are hashed whole, however long */
            crypto_hash_sha256_update(&h, (const unsigned char *)str, strlen(str));
            crypto_hash_sha256_update(&h, (const unsigned char *)"\n", 1);
        }
    }
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&h, d);
    sodium_bin2hex(out, 65, d, sizeof d);
}

/* Metadata under construction: owned key and value strings. */
typedef struct ckpt_meta {
    fedc_st_meta *m;
    size_t n, cap;
} ckpt_meta;

static void ckpt_meta_free(ckpt_meta *cm)
{
    for (size_t i = 0; i < cm->n; i++) {
        fedc_free((char *)cm->m[i].key);
        fedc_free((char *)cm->m[i].value);
    }
    fedc_free(cm->m);
}

static fedc_status ckpt_meta_add(ckpt_meta *cm, const char *prefix, const char *key,
                                 const char *value, fedc_err *err)
{
    if (cm->n == cm->cap) {
        size_t cap = cm->cap ? 2 * cm->cap : 32;
        fedc_st_meta *m = fedc_realloc(cm->m, cap * sizeof *m);
        if (!m) return fedc_err_set(err, FEDC_ERR_NOMEM, "checkpoint: out of memory");
        cm->m = m;
        cm->cap = cap;
    }
    size_t lp = strlen(prefix), lk = strlen(key);
    char *k = fedc_malloc(lp + lk + 1);
    char *v = fedc_strdup(value);
    if (!k || !v) {
        fedc_free(k);
        fedc_free(v);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "checkpoint: out of memory");
    }
    memcpy(k, prefix, lp);
    memcpy(k + lp, key, lk + 1);
    cm->m[cm->n++] = (fedc_st_meta){k, v};
    return FEDC_OK;
}

static fedc_status ckpt_put_dp(void *ctx, const char *key, const char *value, fedc_err *err)
{
    return ckpt_meta_add(ctx, CKPT_DP, key, value, err);
}

static const char *ckpt_get_dp(void *ctx, const char *key)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s", CKPT_DP, key);
    return fedc_safetensors_meta(ctx, full);
}

fedc_status fedc_engine_checkpoint_save(const fedc_engine *e, const char *path, fedc_err *err)
{
    assert(e && path);
    if (e->round_open)
        return fedc_err_set(err, FEDC_ERR_STATE, "%s: cannot checkpoint while round %u is open",
                            path, e->last_round + 1);
    const size_t P = e->num_params;
    fedc_state_item items[FEDC_STRATEGY_STATE_MAX];
    size_t nitems = fedc_strategy_state_get(e->strategy, items);
    size_t ntensors = 0;
    for (size_t i = 0; i < nitems; i++) ntensors += items[i].kind == FEDC_STATE_TENSOR;

    ckpt_meta cm = {0};
    fedc_layout *layout = fedc_layout_copy(e->layout);
    float *data = fedc_malloc((ntensors + 1) * P * sizeof(float));
    fedc_status st = FEDC_OK;
    if (!layout || !data)
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for the checkpoint", path);
    char round_s[24], text[64], sha[65], state_sha[65], cfg_sha[65];
    if (st == FEDC_OK) {
        fedc_vec_copy(P, e->global, data);
        size_t at = P;
        for (size_t i = 0; i < nitems && st == FEDC_OK; i++) {
            char name[FEDC_TENSOR_NAME_MAX];
            if (items[i].kind == FEDC_STATE_TENSOR) {
                snprintf(name, sizeof name, "%s%s", CKPT_STRATEGY, items[i].name);
                int64_t shape[1] = {(int64_t)P};
                st = fedc_layout_add(layout, name, 1, shape, err);
                fedc_vec_copy(P, items[i].data, data + at);
                at += P;
                continue;
            }
            if (items[i].kind == FEDC_STATE_REAL)
                snprintf(text, sizeof text, "%.17g", items[i].real);
            else
                snprintf(text, sizeof text, "%lld", (long long)items[i].integer);
            st = ckpt_meta_add(&cm, CKPT_STRATEGY, items[i].name, text, err);
        }
        snprintf(round_s, sizeof round_s, "%u", e->last_round);
        fedc_vec_sha256_hex(P, data, sha);
        fedc_vec_sha256_hex(ntensors * P, data + P, state_sha);
        config_digest(e->cfg, cfg_sha);
    }
    const char *const fixed[][2] = {
        {"format", "pt"},
        {"fedc_version", FEDC_VERSION},
        {"model_spec", fedc_config_str(e->cfg, "model.spec")},
        {"round", round_s},
        {"strategy", fedc_strategy_name(e->strategy)},
        {"model_sha256", sha},
        {CKPT_PREFIX "checkpoint", CKPT_FORMAT},
        {CKPT_PREFIX "config_sha256", cfg_sha},
        {CKPT_PREFIX "state_sha256", state_sha},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && st == FEDC_OK; i++)
        st = ckpt_meta_add(&cm, "", fixed[i][0], fixed[i][1], err);
    if (st == FEDC_OK && e->dp) st = fedc_dp_run_state_save(e->dp, ckpt_put_dp, &cm, err);
    if (st == FEDC_OK) st = fedc_safetensors_write(path, layout, data, cm.m, cm.n, err);
    ckpt_meta_free(&cm);
    fedc_layout_destroy(layout);
    fedc_free(data);
    return st;
}

/* The file's model tensors (those before the first "__fedc__." one) against the engine's
 * layout (names and shapes, in order), and the rest: only flat state tensors. */
static fedc_status ckpt_check_layout(const fedc_engine *e, const char *path,
                                     const fedc_layout *fl, fedc_err *err)
{
    const fedc_layout *ml = e->layout;
    size_t k = 0;
    while (k < fl->count && strncmp(fl->tensors[k].name, CKPT_PREFIX, strlen(CKPT_PREFIX)) != 0)
        k++;
    for (size_t i = 0; i < k || i < ml->count; i++) {
        const fedc_tensor_info *a = i < k ? &fl->tensors[i] : NULL;
        const fedc_tensor_info *b = i < ml->count ? &ml->tensors[i] : NULL;
        if (!a || !b || strcmp(a->name, b->name) != 0 || a->ndim != b->ndim ||
            memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) != 0)
            return fedc_err_set(err, FEDC_ERR_SHAPE,
                                "%s: model tensor %zu is %s, the config's model (%s) has %s "
                                "there: a checkpoint of another model",
                                path, i, a ? a->name : "missing",
                                fedc_config_str(e->cfg, "model.spec"), b ? b->name : "nothing");
    }
    for (size_t i = k; i < fl->count; i++) {
        const fedc_tensor_info *t = &fl->tensors[i];
        if (strncmp(t->name, CKPT_STRATEGY, strlen(CKPT_STRATEGY)) != 0)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "%s: tensor '%s' after the state tensors: not a fedc engine "
                                "checkpoint layout",
                                path, t->name);
        if (t->ndim != 1 || t->numel != e->num_params)
            return fedc_err_set(err, FEDC_ERR_SHAPE,
                                "%s: state tensor '%s' has %zu values, the model has %zu", path,
                                t->name, t->numel, e->num_params);
    }
    return FEDC_OK;
}

/* Copies of the strategy's current state, to roll back. */
typedef struct ckpt_snapshot {
    fedc_state_item items[FEDC_STRATEGY_STATE_MAX];
    float *bufs[FEDC_STRATEGY_STATE_MAX];
    size_t n;
} ckpt_snapshot;

static void ckpt_snapshot_free(ckpt_snapshot *s)
{
    for (size_t i = 0; i < s->n; i++) fedc_free(s->bufs[i]);
}

static fedc_status ckpt_snapshot_take(const fedc_strategy *strat, ckpt_snapshot *s, fedc_err *err)
{
    memset(s, 0, sizeof *s);
    s->n = fedc_strategy_state_get(strat, s->items);
    for (size_t i = 0; i < s->n; i++) {
        if (s->items[i].kind != FEDC_STATE_TENSOR) continue;
        if (!(s->bufs[i] = fedc_malloc(s->items[i].len * sizeof(float)))) {
            ckpt_snapshot_free(s);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "checkpoint: out of memory");
        }
        fedc_vec_copy(s->items[i].len, s->items[i].data, s->bufs[i]);
        s->items[i].data = s->bufs[i];
    }
    return FEDC_OK;
}

fedc_status fedc_engine_checkpoint_load(fedc_engine *e, const char *path, fedc_err *err)
{
    assert(e && path);
    if (e->round_open)
        return fedc_err_set(err, FEDC_ERR_STATE, "%s: cannot load a checkpoint while round %u is "
                            "open", path, e->last_round + 1);
    fedc_safetensors *f = NULL;
    FEDC_TRY(fedc_safetensors_read(path, 0, &f, err)); /* also: every value finite */
    fedc_status st = FEDC_OK;
    const size_t P = e->num_params;
    const char *v = fedc_safetensors_meta(f, CKPT_PREFIX "checkpoint");
    if (!v || strcmp(v, CKPT_FORMAT) != 0)
        st = fedc_err_set(err, FEDC_ERR_FORMAT,
                          "%s: not a fedc engine checkpoint (metadata %scheckpoint is %s, "
                          "expected %s): a model-only file cannot restore the engine's state",
                          path, CKPT_PREFIX, v ? v : "missing", CKPT_FORMAT);
    char want[65];
    if (st == FEDC_OK) {
        config_digest(e->cfg, want);
        v = fedc_safetensors_meta(f, CKPT_PREFIX "config_sha256");
        const char *strat = fedc_safetensors_meta(f, "strategy");
        if (!v || strcmp(v, want) != 0)
            st = fedc_err_set(err, FEDC_ERR_CONFIG,
                              "%s: written by a run of another configuration (config digest %.16s, "
                              "this run's %.16s; strategy %s, this run's %s): load a checkpoint "
                              "with the config it was saved with",
                              path, v ? v : "missing", want, strat ? strat : "?",
                              fedc_strategy_name(e->strategy));
    }
    if (st == FEDC_OK) st = ckpt_check_layout(e, path, f->layout, err);
    uint64_t round = 0;
    if (st == FEDC_OK) {
        v = fedc_safetensors_meta(f, "round");
        const char *p = v;
        while (p && *p >= '0' && *p <= '9' && round <= UINT32_MAX)
            round = round * 10 + (uint64_t)(*p++ - '0');
        if (!v || !*v || *p || round > UINT32_MAX)
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: metadata round is %s, not a round number",
                              path, v ? v : "missing");
    }
    /* integrity: the hashes of the model and of the state tensors */
    if (st == FEDC_OK) {
        const char *keys[2] = {"model_sha256", CKPT_PREFIX "state_sha256"};
        size_t from[2] = {0, P}, len[2] = {P, f->layout->total - P};
        for (int i = 0; i < 2 && st == FEDC_OK; i++) {
            char got[65];
            fedc_vec_sha256_hex(len[i], f->data + from[i], got);
            v = fedc_safetensors_meta(f, keys[i]);
            if (!v || strcmp(v, got) != 0)
                st = fedc_err_set(err, FEDC_ERR_FORMAT,
                                  "%s: %s mismatch (metadata %.16s, data %.16s): the file is "
                                  "corrupt",
                                  path, keys[i], v ? v : "missing", got);
        }
    }
    /* the strategy's items: state tensors, then scalars from the metadata */
    fedc_state_item items[FEDC_STRATEGY_STATE_MAX], want_items[FEDC_STRATEGY_STATE_MAX];
    size_t nitems = 0, nwant = fedc_strategy_state_get(e->strategy, want_items);
    const size_t lp = strlen(CKPT_STRATEGY);
    for (size_t i = 0; st == FEDC_OK && i < f->layout->count; i++) {
        const fedc_tensor_info *t = &f->layout->tensors[i];
        if (strncmp(t->name, CKPT_STRATEGY, lp) != 0) continue;
        if (nitems == FEDC_STRATEGY_STATE_MAX) {
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: too many state tensors", path);
            break;
        }
        items[nitems++] = (fedc_state_item){.name = t->name + lp, .kind = FEDC_STATE_TENSOR,
                                            .data = f->data + t->offset, .len = t->numel};
    }
    for (size_t i = 0; st == FEDC_OK && i < f->nmeta; i++) {
        const fedc_st_meta *m = &f->meta[i];
        if (strncmp(m->key, CKPT_STRATEGY, lp) != 0) continue;
        if (nitems == FEDC_STRATEGY_STATE_MAX) {
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: too many strategy state entries", path);
            break;
        }
        fedc_state_item it = {.name = m->key + lp, .kind = FEDC_STATE_REAL};
        for (size_t k = 0; k < nwant; k++)
            if (strcmp(want_items[k].name, it.name) == 0) it.kind = want_items[k].kind;
        char *end = NULL;
        errno = 0;
        if (it.kind == FEDC_STATE_INT)
            it.integer = strtoll(m->value, &end, 10);
        else
            it.real = strtod(m->value, &end);
        if (!*m->value || *end || errno == ERANGE)
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: metadata %s = '%.40s' is not a number",
                              path, m->key, m->value);
        items[nitems++] = it;
    }
    ckpt_snapshot old = {0};
    if (st == FEDC_OK) st = ckpt_snapshot_take(e->strategy, &old, err);
    if (st == FEDC_OK) {
        st = fedc_strategy_state_set(e->strategy, items, nitems, err);
        if (st != FEDC_OK) fedc_err_prefix(err, "%s: ", path);
        if (st == FEDC_OK && e->dp) {
            st = fedc_dp_run_state_load(e->dp, (uint32_t)round, ckpt_get_dp, f, err);
            if (st != FEDC_OK) {
                fedc_err_prefix(err, "%s: ", path);
                fedc_status rb = fedc_strategy_state_set(e->strategy, old.items, old.n, NULL);
                assert(rb == FEDC_OK); /* the values were the strategy's own */
                (void)rb;
            }
        }
        ckpt_snapshot_free(&old);
    }
    if (st == FEDC_OK) {
        fedc_vec_copy(P, f->data, e->global);
        e->last_round = (uint32_t)round;
    }
    fedc_safetensors_destroy(f);
    return st;
}
