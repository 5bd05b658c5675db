/*
 * The strategy framework (include/fedc/strategy.h): the registry of built-in strategies, the
 * handle, and everything the strategies share: validating each client's result, weights,
 * streaming into the exact accumulator or holding copies, sorting by client id, the server step
 * and the round record. The math of each strategy is in strategy_linear.c and
 * strategy_robust.c, behind the ops table of strategy_internal.h.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/vec.h"
#include "fl/strategy_internal.h"

static const fedci_strategy_ops *const registry[] = {
    &fedci_strategy_fedavg,    &fedci_strategy_fedavgm,       &fedci_strategy_fedprox,
    &fedci_strategy_fedadagrad, &fedci_strategy_fedadam,      &fedci_strategy_fedyogi,
    &fedci_strategy_fedmedian, &fedci_strategy_fedtrimmedavg, &fedci_strategy_krum,
    &fedci_strategy_multikrum, &fedci_strategy_bulyan,        &fedci_strategy_qfedavg,
    &fedci_strategy_scaffold,
};
#define REGISTRY_COUNT (sizeof registry / sizeof registry[0])

static const char *const names[] = {
    "fedavg",    "fedavgm", "fedprox", "fedadagrad", "fedadam",  "fedyogi", "fedmedian",
    "fedtrimmedavg", "krum", "multikrum", "bulyan", "qfedavg", "scaffold", NULL,
};
_Static_assert(sizeof names / sizeof names[0] == REGISTRY_COUNT + 1,
               "one name per registered strategy");

const char *const *fedc_strategy_names(void)
{
    return names;
}

static const fedci_strategy_ops *find_ops(const char *name)
{
    for (size_t i = 0; i < REGISTRY_COUNT; i++)
        if (strcmp(registry[i]->name, name) == 0) return registry[i];
    return NULL;
}

/* ---- deterministic reductions shared by the strategies ---- */

double fedci_sq_dist(size_t n, const float *a, const float *b)
{
    /* Four fixed lanes, combined in a fixed order: the same bits on every run and thread. */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = (double)a[i] - b[i], d1 = (double)a[i + 1] - b[i + 1];
        double d2 = (double)a[i + 2] - b[i + 2], d3 = (double)a[i + 3] - b[i + 3];
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < n; i++) {
        double d = (double)a[i] - b[i];
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

double fedci_sq_norm(size_t n, const float *a)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)a[i] * a[i];
        s1 += (double)a[i + 1] * a[i + 1];
        s2 += (double)a[i + 2] * a[i + 2];
        s3 += (double)a[i + 3] * a[i + 3];
    }
    for (; i < n; i++) s0 += (double)a[i] * a[i];
    return (s0 + s1) + (s2 + s3);
}

/* ---- handle ---- */

fedc_status fedc_strategy_create(const fedc_config *cfg, size_t num_params,
                                 const float *initial_global, fedc_strategy **out, fedc_err *err)
{
    assert(cfg && out);
    *out = NULL;
    const char *name = fedc_config_str(cfg, "strategy.name");
    const fedci_strategy_ops *ops = find_ops(name);
    if (!ops) {
        char known[256] = "";
        for (size_t i = 0; names[i]; i++) {
            if (i) strncat(known, ", ", sizeof known - strlen(known) - 1);
            strncat(known, names[i], sizeof known - strlen(known) - 1);
        }
        return fedc_err_set(err, FEDC_ERR_NOTFOUND,
                            "%s: [strategy] name: unknown strategy '%s' (known: %s)",
                            fedc_config_origin(cfg, "strategy.name"), name, known);
    }
    if (num_params == 0)
        return fedc_err_set(err, FEDC_ERR_INVALID, "strategy %s: model has 0 parameters", name);
    if (initial_global) {
        ptrdiff_t bad = fedc_vec_find_nonfinite(num_params, initial_global);
        if (bad >= 0)
            return fedc_err_set(err, FEDC_ERR_NONFINITE,
                                "strategy %s: initial model parameter %td is %g", name, bad,
                                (double)initial_global[bad]);
    }

    fedc_strategy *s = fedc_calloc(1, sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "strategy %s: out of memory", name);
    s->ops = ops;
    s->n = num_params;
    s->max_weight = (uint64_t)fedc_config_int(cfg, "strategy.max_weight");
    s->prox_mu = fedc_config_double(cfg, "train.prox_mu");
    fedc_status st = FEDC_OK;
    if (ops->state_size && !(s->state = fedc_calloc(1, ops->state_size))) goto nomem;
    if (!(s->delta = fedc_malloc(num_params * sizeof(float)))) goto nomem;
    if (!(s->next = fedc_malloc(num_params * sizeof(float)))) goto nomem;
    if (ops->streaming) {
        if ((st = fedc_accum_create(num_params, &s->acc, err)) != FEDC_OK) goto fail;
    } else {
        int64_t mh = fedc_config_int(cfg, "strategy.max_updates");
        if (mh == 0) mh = fedc_config_int(cfg, "clients.per_round");
        s->max_held = (size_t)mh;
        if (num_params > SIZE_MAX / sizeof(float) / s->max_held) {
            st = fedc_err_set(err, FEDC_ERR_RANGE,
                              "strategy %s: %zu updates of %zu floats do not fit in memory",
                              name, s->max_held, num_params);
            goto fail;
        }
    }
    if (ops->init && (st = ops->init(s, s->state, cfg, err)) != FEDC_OK) goto fail;
    *out = s;
    return FEDC_OK;

nomem:
    st = fedc_err_set(err, FEDC_ERR_NOMEM, "strategy %s: out of memory for %zu parameters", name,
                      num_params);
fail:
    fedc_strategy_destroy(s);
    return st;
}

void fedc_strategy_destroy(fedc_strategy *s)
{
    if (!s) return;
    if (s->ops->fini && s->state) s->ops->fini(s, s->state);
    fedc_free(s->state);
    fedc_accum_destroy(s->acc);
    fedc_free(s->held);
    fedc_free(s->recs);
    fedc_free(s->delta);
    fedc_free(s->next);
    fedc_free(s);
}

const char *fedc_strategy_name(const fedc_strategy *s)
{
    assert(s);
    return s->ops->name;
}

size_t fedc_strategy_update_len(const fedc_strategy *s)
{
    assert(s);
    return s->n;
}

int fedc_strategy_is_streaming(const fedc_strategy *s)
{
    assert(s);
    return s->ops->streaming;
}

size_t fedc_strategy_max_held(const fedc_strategy *s)
{
    assert(s);
    return s->ops->streaming ? 0 : s->max_held;
}

void fedc_strategy_configure_fit(const fedc_strategy *s, uint32_t round, fedc_fit_config *out)
{
    assert(s && out);
    memset(out, 0, sizeof *out);
    out->round = round;
    out->prox_mu = s->prox_mu;
    out->want_loss_before = s->ops->needs_loss_before;
    if (s->ops->configure_fit) s->ops->configure_fit(s, s->state, out);
}

void fedc_strategy_begin_round(fedc_strategy *s, uint32_t round)
{
    assert(s);
    s->round = round;
    s->in_round = 1;
    s->nrecs = 0;
    s->held_used = 0;
    s->rejected = s->rejected_nonfinite = s->rejected_shape = 0;
    if (s->acc) fedc_accum_reset(s->acc);
    if (s->ops->begin_round) s->ops->begin_round(s, s->state);
}

/* Counts a refused result, names it in the message, and returns the code. */
static fedc_status refuse(fedc_strategy *s, const fedc_fit_result *res, fedc_status code,
                          fedc_err *err)
{
    s->rejected++;
    if (code == FEDC_ERR_NONFINITE) s->rejected_nonfinite++;
    if (code == FEDC_ERR_SHAPE) s->rejected_shape++;
    fedc_err_prefix(err, "round %u, client %u: ", s->round, res->client);
    fedc_log(FEDC_LOG_DEBUG, "strategy", "update refused: %s", fedc_err_message(err));
    return code;
}

/* Room for `more` records beyond the current ones. */
static fedc_status grow_recs(fedc_strategy *s, size_t more, fedc_err *err)
{
    if (s->nrecs + more <= s->recs_cap) return FEDC_OK;
    size_t cap = s->recs_cap ? 2 * s->recs_cap : 16;
    while (cap < s->nrecs + more) cap *= 2;
    fedci_client_rec *r = fedc_realloc(s->recs, cap * sizeof *r);
    if (!r) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the round's records");
    s->recs = r;
    s->recs_cap = cap;
    return FEDC_OK;
}

/* A free slot for a held update; slots are allocated as needed, up to max_held. */
static float *held_slot(fedc_strategy *s, fedc_err *err)
{
    if (s->held_used == s->held_slots) {
        size_t slots = s->held_slots ? 2 * s->held_slots : 8;
        if (slots > s->max_held) slots = s->max_held;
        float *h = fedc_realloc(s->held, slots * s->n * sizeof(float));
        if (!h) {
            fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory holding %zu updates", slots);
            return NULL;
        }
        s->held = h;
        s->held_slots = slots;
    }
    return s->held + s->held_used * s->n;
}

/* Checks everything about a result that does not need a pass over its vectors, and fills
 * *rec. `pending` are results of the same batch already checked (for duplicates). */
static fedc_status precheck(fedc_strategy *s, const fedc_fit_result *res,
                            const fedci_client_rec *pending, size_t npending,
                            fedci_client_rec *rec, fedc_err *err)
{
    const fedci_strategy_ops *ops = s->ops;
    if (!res->update || res->update_len != s->n)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "update has %zu values, the model has %zu",
                            res->update ? res->update_len : 0, s->n);
    if (ops->needs_control && (!res->control_delta || res->control_delta_len != s->n))
        return fedc_err_set(err, FEDC_ERR_SHAPE, "%s needs a control delta of %zu values, got %zu",
                            ops->name, s->n, res->control_delta ? res->control_delta_len : 0);
    if (res->num_examples == 0) return fedc_err_set(err, FEDC_ERR_INVALID, "num_examples is 0");
    for (size_t i = 0; i < s->nrecs; i++)
        if (s->recs[i].client == res->client)
            return fedc_err_set(err, FEDC_ERR_INVALID, "a second result in the same round");
    for (size_t i = 0; i < npending; i++)
        if (pending[i].client == res->client)
            return fedc_err_set(err, FEDC_ERR_INVALID, "a second result in the same round");
    if (!ops->streaming && s->held_used == s->max_held)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "%s holds at most %zu updates per round (strategy.max_updates)",
                            ops->name, s->max_held);
    memset(rec, 0, sizeof *rec);
    rec->client = res->client;
    rec->examples = res->num_examples;
    rec->weight = (double)(s->max_weight && res->num_examples > s->max_weight
                               ? s->max_weight
                               : res->num_examples);
    rec->train_loss = isfinite(res->train_loss) ? res->train_loss : NAN;
    rec->loss_before = res->loss_before;
    if (ops->streaming && ops->weigh) {
        double w = rec->weight;
        FEDC_TRY(ops->weigh(s, s->state, res, rec, &w, err));
        rec->weight = w;
    }
    return grow_recs(s, npending + 1, err);
}

/* After the update was folded with rec->weight: the strategy's other vectors, then the record. */
static fedc_status complete_linear(fedc_strategy *s, const fedc_fit_result *res,
                                   const fedci_client_rec *rec, fedc_err *err)
{
    if (s->ops->add_extra) {
        fedc_status st = s->ops->add_extra(s, s->state, res, err);
        if (st != FEDC_OK) {
            fedci_accum_undo(s->acc, rec->weight, res->update);
            return st;
        }
    }
    s->recs[s->nrecs++] = *rec;
    return FEDC_OK;
}

fedc_status fedc_strategy_add(fedc_strategy *s, const fedc_fit_result *res, fedc_err *err)
{
    assert(s && res);
    assert(s->in_round && "fedc_strategy_add outside begin_round/finish_round");
    fedc_err local;
    if (!err) err = &local; /* the refusal is logged with its message either way */
    fedc_err_clear(err);
    fedci_client_rec rec;
    fedc_status st = precheck(s, res, NULL, 0, &rec, err);
    if (st != FEDC_OK) return refuse(s, res, st, err);
    if (s->ops->streaming) {
        if ((st = fedc_accum_add(s->acc, rec.weight, res->update, err)) != FEDC_OK) {
            fedc_err_prefix(err, "update ");
            return refuse(s, res, st, err);
        }
        if ((st = complete_linear(s, res, &rec, err)) != FEDC_OK) return refuse(s, res, st, err);
        return FEDC_OK;
    }
    float *slot = held_slot(s, err);
    if (!slot) return refuse(s, res, FEDC_ERR_NOMEM, err);
    /* Copy and check in one pass: each block is checked while it is hot in L1. The slot is
     * only taken on success. */
    for (size_t c = 0; c < s->n; c += 4096) {
        size_t len = s->n - c < 4096 ? s->n - c : 4096;
        memcpy(slot + c, res->update + c, len * sizeof(float));
        ptrdiff_t bad = fedc_vec_find_nonfinite(len, slot + c);
        if (bad >= 0) {
            fedc_err_set(err, FEDC_ERR_NONFINITE, "update element %zu is %g", c + (size_t)bad,
                         (double)slot[c + (size_t)bad]);
            return refuse(s, res, FEDC_ERR_NONFINITE, err);
        }
    }
    rec.slot = s->held_used++;
    s->recs[s->nrecs++] = rec;
    return FEDC_OK;
}

#define BATCH 16

fedc_status fedc_strategy_add_batch(fedc_strategy *s, size_t k, const fedc_fit_result *res,
                                    fedc_status *status, fedc_err *err)
{
    assert(s && (res || k == 0));
    assert(s->in_round && "fedc_strategy_add_batch outside begin_round/finish_round");
    fedc_err_clear(err);
    fedc_status first = FEDC_OK;
    fedc_err e;
    size_t first_j = SIZE_MAX; /* the lowest index refused: its message goes to err */
#define OUTCOME(j, code)                                                                       \
    do {                                                                                       \
        if (status) status[j] = (code);                                                        \
        if ((code) != FEDC_OK && (j) < first_j) {                                              \
            first = (code);                                                                    \
            first_j = (j);                                                                     \
            if (err) *err = e;                                                                 \
        }                                                                                      \
    } while (0)
    if (!s->ops->streaming) {
        for (size_t j = 0; j < k; j++) {
            fedc_status st = fedc_strategy_add(s, &res[j], &e);
            OUTCOME(j, st);
        }
        return first;
    }
    for (size_t b = 0; b < k; b += BATCH) {
        size_t nb = k - b < BATCH ? k - b : BATCH, np = 0;
        fedci_client_rec recs[BATCH];
        size_t idx[BATCH];
        double ws[BATCH];
        const float *xs[BATCH];
        fedc_status sts[BATCH];
        for (size_t j = b; j < b + nb; j++) {
            fedc_err_clear(&e);
            fedc_status st = precheck(s, &res[j], recs, np, &recs[np], &e);
            if (st != FEDC_OK) {
                refuse(s, &res[j], st, &e);
                OUTCOME(j, st);
                continue;
            }
            idx[np] = j;
            ws[np] = recs[np].weight;
            xs[np] = res[j].update;
            np++;
        }
        fedc_accum_add_many(s->acc, np, ws, xs, sts, NULL);
        for (size_t p = 0; p < np; p++) {
            size_t j = idx[p];
            fedc_status st = sts[p];
            fedc_err_clear(&e);
            if (st != FEDC_OK) {
                /* Redo the failed fold alone (it changes nothing) to get its message. */
                fedc_accum_add(s->acc, ws[p], xs[p], &e);
                fedc_err_prefix(&e, "update ");
            } else {
                st = complete_linear(s, &res[j], &recs[p], &e);
            }
            if (st != FEDC_OK) refuse(s, &res[j], st, &e);
            OUTCOME(j, st);
        }
    }
#undef OUTCOME
    return first;
}

static int rec_cmp(const void *a, const void *b)
{
    uint32_t x = ((const fedci_client_rec *)a)->client, y = ((const fedci_client_rec *)b)->client;
    return x < y ? -1 : x > y;
}

fedc_status fedc_strategy_finish_round(fedc_strategy *s, float *global, fedc_round_agg *info,
                                       fedc_err *err)
{
    assert(s && global);
    assert(s->in_round && "fedc_strategy_finish_round without begin_round");
    fedc_err_clear(err);
    fedc_round_agg agg;
    memset(&agg, 0, sizeof agg);
    agg.round = s->round;
    agg.accepted = s->nrecs;
    agg.rejected = s->rejected;
    agg.rejected_nonfinite = s->rejected_nonfinite;
    agg.rejected_shape = s->rejected_shape;
    agg.krum_client = -1;
    agg.selected = s->nrecs;
    agg.train_loss = NAN;
    if (info) *info = agg;
    if (s->nrecs == 0)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "round %u: no accepted update to aggregate (%zu refused); the global "
                            "model is unchanged",
                            s->round, s->rejected);

    /* Arrival order must not matter: everything below walks the records by client id. */
    qsort(s->recs, s->nrecs, sizeof *s->recs, rec_cmp);
    if (!s->ops->streaming)
        for (size_t i = 0; i < s->nrecs; i++) s->recs[i].update = s->held + s->recs[i].slot * s->n;
    double loss_sum = 0, loss_w = 0;
    for (size_t i = 0; i < s->nrecs; i++) {
        agg.examples += s->recs[i].examples;
        if (!isnan(s->recs[i].train_loss)) {
            loss_sum += (double)s->recs[i].examples * s->recs[i].train_loss;
            loss_w += (double)s->recs[i].examples;
        }
    }
    if (loss_w > 0) agg.train_loss = loss_sum / loss_w;

    fedc_status st;
    if (s->ops->aggregate)
        st = s->ops->aggregate(s, s->state, s->delta, &agg, err);
    else
        st = fedc_accum_mean(s->acc, s->delta, err);
    if (st != FEDC_OK) {
        fedc_err_prefix(err, "round %u: %s: ", s->round, s->ops->name);
        if (info) *info = agg;
        return st;
    }
    if (s->ops->apply) {
        s->ops->apply(s, s->state, global, s->delta, s->next);
    } else {
        for (size_t i = 0; i < s->n; i++) s->next[i] = global[i] + s->delta[i];
    }
    ptrdiff_t bad = fedc_vec_find_nonfinite(s->n, s->next);
    if (bad >= 0) {
        if (info) *info = agg;
        return fedc_err_set(err, FEDC_ERR_NONFINITE,
                            "round %u: %s: new parameter %td would be %g; the global model is "
                            "unchanged",
                            s->round, s->ops->name, bad, (double)s->next[bad]);
    }
    agg.step_norm = sqrt(fedci_sq_dist(s->n, s->next, global));
    memcpy(global, s->next, s->n * sizeof(float));
    if (s->ops->commit) s->ops->commit(s, s->state);
    s->in_round = 0;
    if (info) *info = agg;
    fedc_log(FEDC_LOG_DEBUG, "strategy", "round %u: %s aggregated %zu updates (%zu refused)",
             s->round, s->ops->name, agg.accepted, agg.rejected);
    return FEDC_OK;
}

/* ---- partial aggregates (scale-out; include/fedc/strategy.h) ---- */

/* The counters after the exact sums in the sums part. */
enum { PC_RECORDS, PC_REJECTED, PC_NONFINITE, PC_SHAPE, PARTIAL_COUNTERS };

/* Record layout (FEDC_STRATEGY_RECORD_BYTES, little-endian): client u32, reserved u32 (0),
 * examples u64, then the doubles weight, train_loss, loss_before, aux as IEEE-754 bits. */
_Static_assert(FEDC_STRATEGY_RECORD_BYTES == 48, "record layout");

static fedc_accum *extra_accum(const fedc_strategy *s)
{
    return s->ops->partial_accum ? s->ops->partial_accum(s, s->state) : NULL;
}

static size_t raw_len(fedc_accum *acc)
{
    return acc ? fedc_accum_len(acc) + FEDC_ACCUM_TRAILER : 0;
}

size_t fedc_strategy_partial_sums_len(const fedc_strategy *s)
{
    assert(s);
    return raw_len(s->acc) + raw_len(extra_accum(s)) + PARTIAL_COUNTERS;
}

void fedc_strategy_partial_sums(const fedc_strategy *s, int64_t *out)
{
    assert(s && out);
    assert(s->in_round && "partial sums outside begin_round/finish_round");
    fedc_accum *accs[2] = {s->acc, extra_accum(s)};
    for (int a = 0; a < 2; a++) {
        if (!accs[a]) continue;
        size_t len;
        const int64_t *raw = fedc_accum_raw(accs[a], &len);
        memcpy(out, raw, len * sizeof *out);
        out += len;
    }
    out[PC_RECORDS] = (int64_t)s->nrecs;
    out[PC_REJECTED] = (int64_t)s->rejected;
    out[PC_NONFINITE] = (int64_t)s->rejected_nonfinite;
    out[PC_SHAPE] = (int64_t)s->rejected_shape;
}

size_t fedc_strategy_partial_count(const fedc_strategy *s)
{
    assert(s);
    return s->nrecs;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_f64(unsigned char *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    put_u64(p, u);
}

static double get_f64(const unsigned char *p)
{
    uint64_t u = get_u64(p);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void fedc_strategy_partial_records(const fedc_strategy *s, unsigned char *out)
{
    assert(s && (out || s->nrecs == 0));
    assert(s->in_round && "partial records outside begin_round/finish_round");
    for (size_t i = 0; i < s->nrecs; i++, out += FEDC_STRATEGY_RECORD_BYTES) {
        const fedci_client_rec *r = &s->recs[i];
        /* Robust: records go out in slot order, which is the order of the held updates. */
        assert(s->ops->streaming || r->slot == i);
        put_u64(out, r->client); /* client in the low 4 bytes, reserved 0 in the high ones */
        put_u64(out + 8, r->examples);
        put_f64(out + 16, r->weight);
        put_f64(out + 24, r->train_loss);
        put_f64(out + 32, r->loss_before);
        put_f64(out + 40, r->aux);
    }
}

const float *fedc_strategy_partial_held(const fedc_strategy *s)
{
    assert(s);
    return s->ops->streaming ? NULL : s->held;
}

float *fedc_strategy_partial_held_reserve(fedc_strategy *s, size_t count, fedc_err *err)
{
    assert(s);
    assert(s->in_round && "partial held area outside begin_round/finish_round");
    if (s->ops->streaming) {
        fedc_err_set(err, FEDC_ERR_STATE, "%s is linear: it holds no updates", s->ops->name);
        return NULL;
    }
    if (count > s->max_held) {
        fedc_err_set(err, FEDC_ERR_RANGE,
                     "round %u: %zu updates in the combined round, but %s holds at most %zu "
                     "(strategy.max_updates)",
                     s->round, count, s->ops->name, s->max_held);
        return NULL;
    }
    size_t slots = count ? count : 1;
    if (slots > s->held_slots) {
        float *h = fedc_realloc(s->held, slots * s->n * sizeof(float));
        if (!h) {
            fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory holding %zu updates", slots);
            return NULL;
        }
        s->held = h;
        s->held_slots = slots;
    }
    return s->held;
}

fedc_status fedc_strategy_partial_set(fedc_strategy *s, const int64_t *sums,
                                      const unsigned char *records, size_t count,
                                      const float *held, fedc_err *err)
{
    assert(s && sums && (records || count == 0));
    assert(s->in_round && "fedc_strategy_partial_set outside begin_round/finish_round");
    assert(s->ops->streaming || held || count == 0);
    fedc_err_clear(err);
    const char *name = s->ops->name;
    const int64_t *ctr = sums + fedc_strategy_partial_sums_len(s) - PARTIAL_COUNTERS;
    for (int i = 0; i < PARTIAL_COUNTERS; i++)
        if (ctr[i] < 0)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "round %u: %s partial aggregate: counter %d is negative (%lld)",
                                s->round, name, i, (long long)ctr[i]);
    if ((uint64_t)ctr[PC_RECORDS] != count)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "round %u: %s partial aggregate: %zu records, but the sums count "
                            "%lld",
                            s->round, name, count, (long long)ctr[PC_RECORDS]);
    if (!s->ops->streaming && count > s->max_held)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "round %u: %zu updates in the combined round, but %s holds at most "
                            "%zu (strategy.max_updates)",
                            s->round, count, name, s->max_held);

    /* Records: decoded and checked before anything changes. */
    fedci_client_rec *recs = fedc_malloc((count ? count : 1) * sizeof *recs);
    if (!recs)
        return fedc_err_set(err, FEDC_ERR_NOMEM, "round %u: out of memory for %zu records",
                            s->round, count);
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = records + i * FEDC_STRATEGY_RECORD_BYTES;
        fedci_client_rec *r = &recs[i];
        memset(r, 0, sizeof *r);
        uint64_t id = get_u64(p);
        r->client = (uint32_t)id;
        r->examples = get_u64(p + 8);
        r->weight = get_f64(p + 16);
        r->train_loss = get_f64(p + 24);
        r->loss_before = get_f64(p + 32);
        r->aux = get_f64(p + 40);
        r->slot = i;
        const char *bad = id >> 32 ? "reserved bytes are not 0"
                          : r->examples == 0 ? "0 examples"
                          : !(isfinite(r->weight) && r->weight > 0) ? "weight not finite and > 0"
                          : !isfinite(r->aux) ? "aux not finite"
                                              : NULL;
        if (bad) {
            uint32_t client = r->client;
            fedc_free(recs);
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "round %u: %s partial aggregate: record %zu (client %u): %s",
                                s->round, name, i, client, bad);
        }
    }
    /* Sorted by client id here (finish_round would do it anyway), so duplicates are adjacent. */
    qsort(recs, count, sizeof *recs, rec_cmp);
    for (size_t i = 1; i < count; i++) {
        if (recs[i].client == recs[i - 1].client) {
            uint32_t dup = recs[i].client;
            fedc_free(recs);
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "round %u: %s partial aggregate: client %u appears twice", s->round,
                                name, dup);
        }
    }
    /* Robust: the held updates, into the strategy's area (no copy if they are already there). */
    if (!s->ops->streaming && count) {
        if (held != s->held) {
            if (!fedc_strategy_partial_held_reserve(s, count, err)) {
                fedc_free(recs);
                return err ? err->code : FEDC_ERR_NOMEM;
            }
            memmove(s->held, held, count * s->n * sizeof(float));
        }
        for (size_t i = 0; i < count; i++) {
            ptrdiff_t bad = fedc_vec_find_nonfinite(s->n, s->held + i * s->n);
            if (bad >= 0) {
                fedc_free(recs);
                return fedc_err_set(err, FEDC_ERR_NONFINITE,
                                    "round %u: %s partial aggregate: held update %zu element %td "
                                    "is %g",
                                    s->round, name, i, bad, (double)s->held[i * s->n + (size_t)bad]);
            }
        }
    }
    /* Exact sums: installed, then range-checked (the combined bound may be too large). */
    fedc_accum *accs[2] = {s->acc, extra_accum(s)};
    for (int a = 0; a < 2; a++) {
        if (!accs[a]) continue;
        size_t len;
        int64_t *raw = fedc_accum_raw(accs[a], &len);
        memcpy(raw, sums, len * sizeof *raw);
        sums += len;
        fedc_status st = fedc_accum_check_raw(accs[a], err);
        if (st != FEDC_OK) {
            fedc_free(recs);
            fedc_err_prefix(err, "round %u: %s partial aggregate: ", s->round, name);
            return st;
        }
    }
    fedc_free(s->recs);
    s->recs = recs;
    s->recs_cap = count ? count : 1;
    s->nrecs = count;
    if (!s->ops->streaming) s->held_used = count;
    s->rejected = (size_t)ctr[PC_REJECTED];
    s->rejected_nonfinite = (size_t)ctr[PC_NONFINITE];
    s->rejected_shape = (size_t)ctr[PC_SHAPE];
    return FEDC_OK;
}

/* ---- server state across rounds, for checkpoints (fedc/strategy.h; owner: state) ---- */

size_t fedc_strategy_state_get(const fedc_strategy *s,
                               fedc_state_item out[FEDC_STRATEGY_STATE_MAX])
{
    assert(s && out);
    if (!s->ops->state_get) return 0;
    size_t n = s->ops->state_get(s, s->state, out);
    assert(n <= FEDC_STRATEGY_STATE_MAX);
    return n;
}

static const char *state_kind_name(fedc_state_kind k)
{
    return k == FEDC_STATE_TENSOR ? "tensor" : k == FEDC_STATE_REAL ? "real" : "integer";
}

fedc_status fedc_strategy_state_set(fedc_strategy *s, const fedc_state_item *items, size_t n,
                                    fedc_err *err)
{
    assert(s && (items || n == 0));
    const char *name = s->ops->name;
    fedc_state_item want[FEDC_STRATEGY_STATE_MAX];
    size_t nwant = fedc_strategy_state_get(s, want);
    fedc_state_item got[FEDC_STRATEGY_STATE_MAX];
    int seen[FEDC_STRATEGY_STATE_MAX] = {0};
    /* every given item is one of the strategy's, once, of the right kind and size, finite */
    for (size_t i = 0; i < n; i++) {
        const fedc_state_item *it = &items[i];
        size_t k = 0;
        while (k < nwant && !(it->name && strcmp(it->name, want[k].name) == 0)) k++;
        if (k == nwant)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "strategy %s: unknown server state item '%s' (a checkpoint of "
                                "another strategy or configuration?)",
                                name, it->name ? it->name : "(null)");
        if (seen[k])
            return fedc_err_set(err, FEDC_ERR_FORMAT, "strategy %s: state item '%s' given twice",
                                name, it->name);
        seen[k] = 1;
        if (it->kind != want[k].kind)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "strategy %s: state item '%s' is a %s, expected a %s", name,
                                it->name, state_kind_name(it->kind), state_kind_name(want[k].kind));
        if (it->kind == FEDC_STATE_TENSOR) {
            if (!it->data || it->len != s->n)
                return fedc_err_set(err, FEDC_ERR_SHAPE,
                                    "strategy %s: state tensor '%s' has %zu values, the model "
                                    "has %zu",
                                    name, it->name, it->data ? it->len : 0, s->n);
            ptrdiff_t bad = fedc_vec_find_nonfinite(s->n, it->data);
            if (bad >= 0)
                return fedc_err_set(err, FEDC_ERR_NONFINITE,
                                    "strategy %s: state tensor '%s': element %td is %g", name,
                                    it->name, bad, (double)it->data[bad]);
        } else if (it->kind == FEDC_STATE_REAL && !isfinite(it->real)) {
            return fedc_err_set(err, FEDC_ERR_NONFINITE, "strategy %s: state value '%s' is %g",
                                name, it->name, it->real);
        }
        got[k] = *it;
    }
    for (size_t k = 0; k < nwant; k++)
        if (!seen[k])
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "strategy %s: server state item '%s' is missing", name,
                                want[k].name);
    if (s->ops->state_set) return s->ops->state_set(s, s->state, got, err);
    for (size_t k = 0; k < nwant; k++) /* tensors only: copied into the strategy's buffers */
        if (want[k].kind == FEDC_STATE_TENSOR)
            memmove((float *)want[k].data, got[k].data, s->n * sizeof(float));
    return FEDC_OK;
}
