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
    fedci_secagg_conf conf;
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

fedc_status fedci_secagg_conf_init(const fedc_config *cfg, fedc_engine *engine, uint32_t n,
                                   fedci_secagg_conf *c, fedc_err *err)
{
    memset(c, 0, sizeof *c);
    fedc_strategy *strat = fedc_engine_strategy(engine);
    const char *name = fedc_strategy_name(strat);
    if (!fedc_strategy_is_streaming(strat) || strcmp(name, "scaffold") == 0 ||
        strcmp(name, "qfedavg") == 0)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled: strategy.name = %s needs "
                            "each client's update (or a per-client value) but secure "
                            "aggregation reveals only the sum; use a linear strategy (fedavg, "
                            "fedprox, fedavgm, fedadagrad, fedadam, fedyogi)", name);
    const char *mode = fedc_config_str(cfg, "dp.mode");
    if (strcmp(mode, "local") == 0 || fedc_config_bool(cfg, "dp.sgd"))
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled with dp.mode = %s / dp.sgd = "
                            "%s: local DP and DP-SGD keep per-client accounts; under secure "
                            "aggregation use dp.mode = central (clipping on the client, noise "
                            "on the unmasked sum)", mode,
                            fedc_config_bool(cfg, "dp.sgd") ? "true" : "false");
    c->central_dp = strcmp(mode, "central") == 0;
    if (c->central_dp && strcmp(fedc_config_str(cfg, "dp.clip_on"), "client") != 0)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled with dp.mode = central needs "
                            "dp.clip_on = client: the server never sees an update to clip");
    if (c->central_dp && fedc_config_bool(cfg, "dp.adaptive_clip"))
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled with dp.adaptive_clip: "
                            "adaptive clipping needs each client's clipped bit, which secure "
                            "aggregation hides; set dp.adaptive_clip = false");
    const char *up = fedc_config_str(cfg, "compress.upload");
    if (strcmp(up, "none") != 0 && strcmp(up, "zstd") != 0) /* lossless zstd is harmless */
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled with compress.upload = %s: "
                            "masked updates are ring elements and cannot be compressed lossily; "
                            "set compress.upload = none or zstd", up);
    c->bits = (uint32_t)fedc_config_int(cfg, "secagg.bits");
    c->k = (uint32_t)fedc_config_int(cfg, "secagg.neighbors");
    c->t = (uint32_t)fedc_config_int(cfg, "secagg.threshold");
    c->quant.clip = fedc_config_double(cfg, "secagg.clip");
    c->quant.levels = (uint32_t)fedc_config_int(cfg, "secagg.levels");
    c->quant.max_weight = c->central_dp ? 1u : (uint32_t)fedc_config_int(cfg, "secagg.max_weight");
    c->quant.bits = c->bits;
    FEDC_TRY(fedc_secagg_quant_check(&c->quant, n, err));
    if (n < 2)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.enabled needs clients.per_round >= 2");
    if (c->k && (c->k % 2 || c->k < 2) && c->k != n - 1)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.neighbors = %u must be even or "
                            "clients.per_round - 1 = %u", c->k, n - 1);
    if (c->t && c->k && c->t > c->k)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "secagg.threshold = %u above secagg.neighbors "
                            "= %u", c->t, c->k);
    if (sodium_init() < 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg: libsodium unusable");
    return FEDC_OK;
}

void fedci_secagg_round_params(const fedci_secagg_conf *c, uint32_t m, size_t num_params,
                               uint32_t round, fedc_secagg_params *p)
{
    memset(p, 0, sizeof *p);
    p->n = m;
    p->k = c->k;
    if (p->k > m - 1) p->k = m - 1;
    if (p->k && p->k != m - 1 && p->k % 2) p->k--;
    p->t = c->t;
    if (p->k && p->t > p->k) p->t = p->k;
    p->bits = c->bits;
    p->len = num_params + 1;
    p->round = round;
}

fedc_status fedci_secagg_submit(const fedci_secagg_conf *c, fedc_engine *engine,
                                const uint32_t *sum, size_t num_params, const uint32_t *clients,
                                uint32_t count, double train_loss, double fit_seconds,
                                float *scratch, uint64_t *weight_sum, fedc_err *err)
{
    uint64_t wsum = 0;
    if (c->central_dp) {
        /* weights are 1: the sum of the clipped updates, sum_i q_i * step - count * c */
        wsum = sum[num_params];
        if (weight_sum) *weight_sum = wsum;
        if (wsum != count)
            return fedc_err_set(err, FEDC_ERR_STATE, "secagg: weight sum %llu for %u clients "
                                "with central DP (weights must be 1)",
                                (unsigned long long)wsum, count);
        double step = 2.0 * c->quant.clip / (c->quant.levels - 1.0);
        for (size_t i = 0; i < num_params; i++)
            scratch[i] = (float)((double)sum[i] * step - c->quant.clip * (double)count);
        return fedc_engine_submit_sum(engine, clients, count, scratch, fit_seconds, err);
    }
    FEDC_TRY(fedc_secagg_dequantize(&c->quant, sum, num_params, scratch, &wsum, err));
    if (weight_sum) *weight_sum = wsum;
    fedc_fit_out res;
    memset(&res, 0, sizeof res);
    res.update = scratch;
    res.num_examples = wsum;
    res.train_loss = train_loss;
    res.loss_before = NAN;
    FEDC_TRY(fedc_engine_submit(engine, clients[0], &res, fit_seconds, err));
    int64_t cnt[FEDC_ENGINE_COUNTERS];
    fedc_engine_round_counters(engine, cnt);
    cnt[0] = count;
    fedc_engine_set_round_counters(engine, cnt);
    return FEDC_OK;
}

fedc_status fedci_sim_secagg_create(const fedc_config *cfg, fedc_engine *engine,
                                    fedci_sim_secagg **out, fedc_err *err)
{
    *out = NULL;
    if (!fedc_config_bool(cfg, "secagg.enabled")) return FEDC_OK;
    fedci_secagg_conf conf;
    uint32_t per_round = (uint32_t)fedc_config_int(cfg, "clients.per_round");
    FEDC_TRY(fedci_secagg_conf_init(cfg, engine, per_round, &conf, err));
    fedci_sim_secagg *s = fedc_calloc(1, sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg: out of memory");
    s->engine = engine;
    s->seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    s->num_params = fedc_engine_num_params(engine);
    s->conf = conf;
    s->dropout = fedc_config_double(cfg, "secagg.dropout");
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
        fedc_secagg_quantize(&s->conf.quant, out->update, s->num_params, out->num_examples, &rng,
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
    fedci_secagg_round_params(&s->conf, m, s->num_params, s->round, &p);
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
    fedc_secagg_sim_opts o = {{s->dropout, s->dropout, s->dropout}, s->seed, NULL};
    /* TEST ONLY: FEDC_TEST_SECAGG_DROP = "CLIENT:STAGE" (STAGE share, masked or unmask): that
     * client vanishes before the stage, as `fedc client` does with FEDC_TEST_SECAGG_HANG (its
     * process killed there), so that a deployment test can compare with a simulation. */
    unsigned char *forced = NULL;
    const char *td = getenv("FEDC_TEST_SECAGG_DROP");
    if (td) {
        char *end = NULL;
        unsigned long who = strtoul(td, &end, 10);
        int stage = !end || *end != ':' ? 0 : !strcmp(end + 1, "share") ? FEDC_SECAGG_SHARE
                                             : !strcmp(end + 1, "masked") ? FEDC_SECAGG_MASKED
                                             : !strcmp(end + 1, "unmask") ? FEDC_SECAGG_UNMASK : 0;
        if (stage && (forced = fedc_calloc(m, 1)) != NULL) {
            for (uint32_t i = 0; i < m; i++)
                if (s->clients[ids[i]] == who) forced[i] = (unsigned char)stage;
            o.drop_before = forced;
            fedc_log(FEDC_LOG_WARN, "secagg", "TEST HOOK FEDC_TEST_SECAGG_DROP=%s active", td);
        }
    }
    fedc_secagg_sim_stats stats;
    fedc_err perr;
    fedc_err_clear(&perr);
    fedc_status pst = fedc_secagg_simulate(&p, xs, &o, sum, surv, &stats, &perr);
    fedc_free(forced);
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
    double loss = 0;
    uint32_t *surv_ids = ids; /* reused: the survivors' client ids, ascending */
    uint32_t ns = 0;
    uint64_t examples = 0;
    for (uint32_t i = 0; i < m; i++) {
        if (!surv[i]) continue;
        const slot *sl = &s->slots[ids[i]];
        examples += sl->num_examples;
        loss += sl->train_loss * (double)sl->num_examples; /* sim only: see docs/SECAGG.md */
        surv_ids[ns++] = s->clients[ids[i]];
    }
    fedc_err serr;
    fedc_err_clear(&serr);
    if (fedci_secagg_submit(&s->conf, engine, sum, s->num_params, surv_ids, ns,
                            examples ? loss / (double)examples : 0, fit_s, mean, NULL,
                            &serr) == FEDC_OK) {
        s->survivors = ns;
        s->examples = examples;
        s->bytes_up = stats.client_bytes_up * (uint64_t)ns;
        fedc_engine_round_counters(engine, cnt);
        cnt[2] += (int64_t)(m - ns);
        cnt[3] = (int64_t)s->bytes_up;
        fedc_engine_set_round_counters(engine, cnt);
    } else {
        fedc_log(FEDC_LOG_WARN, "secagg", "round %u: the unmasked sum was refused: %s",
                 s->round, fedc_err_message(&serr));
        cnt[2] += (int64_t)m;
        fedc_engine_set_round_counters(engine, cnt);
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
