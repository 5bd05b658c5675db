/*
 * Secure aggregation in the in-process simulation (contract in sim/sim_secagg.h,
 * docs/SECAGG.md). Each simulated client quantizes its update (fedc_secagg_quantize, with the
 * stream (seed, round, client, QUANTIZE)); after the round's training the SecAgg+ protocol runs
 * over all of them in-process with the configured dropouts; the engine gets one result: the
 * dequantized weighted mean of the survivors. The unmasked sum is exact, so runs stay
 * bit-reproducible although the protocol's keys come from the CSPRNG.
 */
#include "sim/sim_secagg.h"

#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/strategy.h"

typedef struct slot {
    int ok;                /* a quantized update is here */
    uint64_t num_examples;
    double train_loss;
    double fit_seconds;
    uint32_t *q;           /* num_params + 1 ring elements */
} slot;

struct fedci_sim_secagg {
    fedc_engine *engine;
    uint64_t seed;
    size_t num_params;
    fedc_secagg_quant quant;
    uint32_t k, t, bits;
    double dropout;
    uint32_t round;
    const uint32_t *clients; /* the round's selection (the engine's, valid for the round) */
    size_t n;
    slot *slots;             /* per_round slots */
    size_t cap;
    /* the last round's outcome, for the record */
    int done;
    uint32_t survivors;
    uint64_t examples;
    uint64_t bytes_up;
};

void fedci_sim_secagg_destroy(fedci_sim_secagg *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->cap; i++)
        fedc_free(s->slots[i].q);
    fedc_free(s->slots);
    fedc_free(s);
}

fedc_status fedci_sim_secagg_create(const fedc_config *cfg, fedc_engine *engine,
                                    fedci_sim_secagg **out, fedc_err *err)
{
    *out = NULL;
    if (!fedc_config_bool(cfg, "secagg.enabled")) return FEDC_OK;
    fedc_strategy *strat = fedc_engine_strategy(engine);
    const char *name = fedc_strategy_name(strat);
    if (!fedc_strategy_is_streaming(strat) || strcmp(name, "scaffold") == 0 ||
        strcmp(name, "qfedavg") == 0)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled: strategy.name = %s needs "
                            "each client's update (or a per-client value) but secure "
                            "aggregation reveals only the sum; use a linear strategy (fedavg, "
                            "fedprox, fedavgm, fedadagrad, fedadam, fedyogi)", name);
    if (strcmp(fedc_config_str(cfg, "dp.mode"), "off") != 0 || fedc_config_bool(cfg, "dp.sgd"))
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled with dp.mode = %s / dp.sgd = "
                            "%s: differential privacy under secure aggregation is not "
                            "supported yet", fedc_config_str(cfg, "dp.mode"),
                            fedc_config_bool(cfg, "dp.sgd") ? "true" : "false");
    const char *up = fedc_config_str(cfg, "compress.upload");
    if (strcmp(up, "none") != 0 && strcmp(up, "zstd") != 0) /* lossless zstd is harmless */
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled with compress.upload = %s: "
                            "masked updates are ring elements and cannot be compressed lossily; "
                            "set compress.upload = none or zstd", up);
    fedci_sim_secagg *s = fedc_calloc(1, sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg: out of memory");
    s->engine = engine;
    s->seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    s->num_params = fedc_engine_num_params(engine);
    s->bits = (uint32_t)fedc_config_int(cfg, "secagg.bits");
    s->k = (uint32_t)fedc_config_int(cfg, "secagg.neighbors");
    s->t = (uint32_t)fedc_config_int(cfg, "secagg.threshold");
    s->dropout = fedc_config_double(cfg, "secagg.dropout");
    s->quant.clip = fedc_config_double(cfg, "secagg.clip");
    s->quant.levels = (uint32_t)fedc_config_int(cfg, "secagg.levels");
    s->quant.max_weight = (uint32_t)fedc_config_int(cfg, "secagg.max_weight");
    s->quant.bits = s->bits;
    uint32_t per_round = (uint32_t)fedc_config_int(cfg, "clients.per_round");
    fedc_status st = fedc_secagg_quant_check(&s->quant, per_round, err);
    if (st == FEDC_OK && per_round < 2)
        st = fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled needs clients.per_round >= 2");
    if (st == FEDC_OK && s->k && (s->k % 2 || s->k < 2) && s->k != per_round - 1)
        st = fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.neighbors = %u must be even or "
                          "clients.per_round - 1 = %u", s->k, per_round - 1);
    if (st == FEDC_OK && s->t && s->k && s->t > s->k)
        st = fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.threshold = %u above secagg.neighbors "
                          "= %u", s->t, s->k);
    if (st == FEDC_OK && sodium_init() < 0)
        st = fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg: libsodium unusable");
    if (st != FEDC_OK) {
        fedci_sim_secagg_destroy(s);
        return st;
    }
    *out = s;
    return FEDC_OK;
}

fedc_status fedci_sim_secagg_begin(fedci_sim_secagg *s, uint32_t round, const uint32_t *clients,
                                   size_t n, fedc_err *err)
{
    if (n > s->cap) {
        slot *ns = fedc_realloc(s->slots, n * sizeof *ns);
        if (!ns) return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg: out of memory");
        memset(ns + s->cap, 0, (n - s->cap) * sizeof *ns);
        s->slots = ns;
        s->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        s->slots[i].ok = 0;
        if (!s->slots[i].q && !(s->slots[i].q = fedc_malloc((s->num_params + 1) * 4)))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg: out of memory for %zu clients' "
                                "updates", n);
    }
    s->round = round;
    s->clients = clients;
    s->n = n;
    s->done = 0;
    return FEDC_OK;
}

static long find_slot(const fedci_sim_secagg *s, uint32_t client)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->clients[mid] < client) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && s->clients[lo] == client ? (long)lo : -1;
}

void fedci_sim_secagg_stash(fedci_sim_secagg *s, uint32_t client, const fedc_fit_out *out,
                            double fit_seconds)
{
    long i = find_slot(s, client);
    if (i < 0) return;
    slot *sl = &s->slots[i];
    fedc_rng rng;
    fedc_rng_init(&rng, s->seed, s->round, client, FEDC_RNG_QUANTIZE);
    fedc_err qerr;
    if (out->num_examples == 0 ||
        fedc_secagg_quantize(&s->quant, out->update, s->num_params, out->num_examples, &rng,
                             sl->q, &qerr) != FEDC_OK) {
        fedc_engine_report_failure(s->engine, client, out->num_examples ?
                                   fedc_err_message(&qerr) : "no examples");
        return;
    }
    sl->num_examples = out->num_examples;
    sl->train_loss = out->train_loss;
    sl->fit_seconds = fit_seconds;
    sl->ok = 1;
}

fedc_status fedci_sim_secagg_finish(fedci_sim_secagg *s, fedc_engine *engine, fedc_err *err)
{
    uint32_t m = 0;
    for (size_t i = 0; i < s->n; i++)
        m += (uint32_t)s->slots[i].ok;
    int64_t cnt[FEDC_ENGINE_COUNTERS];
    fedc_engine_round_counters(engine, cnt);
    double fit_s = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->slots[i].ok) fit_s += s->slots[i].fit_seconds;
    s->done = 1;
    s->survivors = 0;
    s->examples = 0;
    s->bytes_up = 0;
    if (m < 2) {
        fedc_log(FEDC_LOG_WARN, "secagg", "round %u: %u usable updates, secure aggregation "
                 "needs 2", s->round, m);
        cnt[2] += (int64_t)m;
        fedc_engine_set_round_counters(engine, cnt);
        return FEDC_OK;
    }
    fedc_secagg_params p;
    memset(&p, 0, sizeof p);
    p.n = m;
    p.k = s->k;
    if (p.k > m - 1) p.k = m - 1;
    if (p.k && p.k != m - 1 && p.k % 2) p.k--;
    p.t = s->t;
    if (p.k && p.t > p.k) p.t = p.k;
    p.bits = s->bits;
    p.len = s->num_params + 1;
    p.round = s->round;
    unsigned char in[12];
    for (int b = 0; b < 8; b++)
        in[b] = (unsigned char)(s->seed >> (8 * b));
    for (int b = 0; b < 4; b++)
        in[8 + b] = (unsigned char)(s->round >> (8 * b));
    crypto_generichash(p.seed, sizeof p.seed, in, sizeof in,
                       (const unsigned char *)"fedc-secagg-graph", 17);
    const uint32_t **xs = fedc_malloc(m * sizeof *xs);
    uint32_t *ids = fedc_malloc(m * sizeof *ids);
    uint32_t *sum = fedc_malloc(p.len * sizeof *sum);
    unsigned char *surv = fedc_malloc(m);
    float *mean = fedc_malloc(s->num_params * sizeof *mean);
    fedc_status st = FEDC_OK;
    if (!xs || !ids || !sum || !surv || !mean) {
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "secagg: out of memory");
        goto out;
    }
    m = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->slots[i].ok) {
            ids[m] = (uint32_t)i;
            xs[m++] = s->slots[i].q;
        }
    fedc_secagg_sim_opts o = {{s->dropout, s->dropout, s->dropout}, s->seed};
    fedc_secagg_sim_stats stats;
    fedc_err perr;
    fedc_err_clear(&perr);
    fedc_status pst = fedc_secagg_simulate(&p, xs, &o, sum, surv, &stats, &perr);
    if (pst == FEDC_ERR_NOMEM || pst == FEDC_ERR_CRYPTO) {
        if (err) *err = perr;
        st = pst;
        goto out;
    }
    if (pst != FEDC_OK) {
        fedc_log(FEDC_LOG_WARN, "secagg", "round %u: secure aggregation aborted: %s", s->round,
                 fedc_err_message(&perr));
        cnt[2] += (int64_t)m;
        fedc_engine_set_round_counters(engine, cnt);
        goto out;
    }
    uint64_t wsum;
    fedc_err derr;
    if (fedc_secagg_dequantize(&s->quant, sum, s->num_params, mean, &wsum, &derr) != FEDC_OK) {
        cnt[2] += (int64_t)m;
        fedc_engine_set_round_counters(engine, cnt);
        goto out;
    }
    double loss = 0;
    uint32_t first = UINT32_MAX;
    for (uint32_t i = 0; i < m; i++) {
        if (!surv[i]) continue;
        const slot *sl = &s->slots[ids[i]];
        if (first == UINT32_MAX) first = s->clients[ids[i]];
        s->survivors++;
        s->examples += sl->num_examples;
        loss += sl->train_loss * (double)sl->num_examples; /* sim only: see docs/SECAGG.md */
    }
    s->bytes_up = stats.client_bytes_up * (uint64_t)s->survivors;
    fedc_fit_out res;
    memset(&res, 0, sizeof res);
    res.update = mean;
    res.num_examples = wsum;
    res.train_loss = s->examples ? loss / (double)s->examples : 0;
    res.loss_before = NAN;
    fedc_err serr;
    fedc_err_clear(&serr);
    if (fedc_engine_submit(engine, first, &res, fit_s, &serr) == FEDC_OK) {
        fedc_engine_round_counters(engine, cnt);
        cnt[0] = s->survivors;
        cnt[2] += (int64_t)(m - s->survivors);
        cnt[3] = (int64_t)s->bytes_up;
        fedc_engine_set_round_counters(engine, cnt);
    } else {
        s->survivors = 0;
    }
out:
    fedc_free(xs);
    fedc_free(ids);
    fedc_free(sum);
    fedc_free(surv);
    fedc_free(mean);
    return st;
}

void fedci_sim_secagg_record(const fedci_sim_secagg *s, fedc_round_record *rec)
{
    if (!s->done) return;
    if (rec->participants > 0) {
        rec->participants = s->survivors;
        rec->examples = s->examples;
    }
    rec->bytes_up = s->bytes_up;
}
