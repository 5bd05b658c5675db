/*
 * The round engine: client selection, the per-round cycle around the strategy, and the round's
 * record. Every transport (simulation, HTTP server, MPI) drives this same code.
 *
 * Differential privacy (the blocks marked "DP") wraps the strategy: central DP folds clipped
 * updates into the DP run's own exact sum and gives the strategy one noised mean update per
 * round; local DP and DP-SGD only keep per-client accounts here (src/privacy/dp_run.c).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/engine.h"
#include "fedc/log.h"
#include "fedc/rng.h"
#include "fedc/strategy.h"

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
