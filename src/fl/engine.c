/*
 * The round engine: client selection, the per-round cycle around the strategy, and the round's
 * record. Every transport (simulation, HTTP server, MPI) drives this same code.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
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
};

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
    if (st == FEDC_OK) st = trainer->ops->init_params(trainer->shared, e->seed, e->global, err);
    if (st == FEDC_OK)
        st = fedc_strategy_create(cfg, e->num_params, e->global, &e->strategy, err);
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

fedc_status fedc_engine_submit(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                               double fit_seconds, fedc_err *err)
{
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
        st = fedc_strategy_add(e->strategy, &res, err);
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

fedc_status fedc_engine_round_end(fedc_engine *e, fedc_round_record *rec, fedc_err *err)
{
    memset(rec, 0, sizeof *rec);
    if (!e->round_open) return fedc_err_set(err, FEDC_ERR_STATE, "engine: no round is open");
    uint32_t round = e->last_round + 1;
    rec->round = round;
    rec->selected = (uint32_t)e->nselected;
    rec->bytes_down = (uint64_t)e->nselected * update_bytes(e);
    rec->bytes_up = e->bytes_up;
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
        return fedc_err_set(err, FEDC_ERR_ABORTED,
                            "round %u: %u of %u results accepted, below clients.min = %u; "
                            "the global model is unchanged",
                            round, e->accepted, rec->selected, e->min_clients);
    }
    fedc_round_agg info;
    memset(&info, 0, sizeof info);
    fedc_status st = fedc_strategy_finish_round(e->strategy, e->global, &info, err);
    if (st != FEDC_OK) return st;
    rec->participants = (uint32_t)info.accepted;
    rec->rejected = (uint32_t)info.rejected + e->failures;
    rec->examples = info.examples;
    rec->train_loss = info.train_loss;
    rec->update_norm = info.step_norm;
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
