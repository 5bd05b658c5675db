/*
 * Secure aggregation under `fedc sim` ([secagg] enabled = true; docs/SECAGG.md): the round's
 * updates are quantized by each simulated client, aggregated through the SecAgg+ protocol
 * (fedc_secagg_simulate, with the configured dropouts), and the engine receives only the
 * dequantized weighted mean of the survivors, as one result. Internal to src/sim.
 */
#ifndef FEDC_SIM_SECAGG_H
#define FEDC_SIM_SECAGG_H

#include "fedc/engine.h"
#include "fedc/secagg.h"

typedef struct fedci_sim_secagg fedci_sim_secagg;

/* ---- shared by the simulation and the HTTP server (src/net/server_secagg.c) ---- */

/* What a run's [secagg] section (and [dp]) asks of each round. */
typedef struct fedci_secagg_conf {
    fedc_secagg_quant quant;
    uint32_t k, t, bits; /* as configured (0 = default) */
    int central_dp;      /* dp.mode = central: weights 1, the engine noises the unmasked sum */
} fedci_secagg_conf;

/* Reads and checks the configuration for rounds of at most n clients. Refuses (FEDC_ERR_CONFIG)
 * what cannot run under secure aggregation: robust strategies, scaffold and qfedavg (per-client
 * side channels), dp.mode = local and dp.sgd (per-client accounts), central DP with
 * dp.clip_on = server (the server never sees an update to clip) or dp.adaptive_clip (it needs
 * each client's clipped bit), lossy compress.upload (masks need ring elements; none and zstd
 * are fine), and quantization that could overflow for n clients. With central DP the weight
 * is 1 (secagg.max_weight is ignored). Errors also: FEDC_ERR_CRYPTO. */
fedc_status fedci_secagg_conf_init(const fedc_config *cfg, fedc_engine *engine, uint32_t n,
                                   fedci_secagg_conf *c, fedc_err *err);
/* A round's protocol parameters for m clients (k and t capped to fit m), the vector length
 * num_params + 1 and the public seed; the seed is filled by the caller. */
void fedci_secagg_round_params(const fedci_secagg_conf *c, uint32_t m, size_t num_params,
                               uint32_t round, fedc_secagg_params *p);
/* Hands an unmasked sum (num_params + 1 ring elements) of `count` clients to the engine as the
 * round's one result: without DP the dequantized weighted mean (num_examples = the weight
 * sum, submitted as client `first`); with central DP the dequantized sum of the clipped
 * updates (fedc_engine_submit_sum: noise once, at round end). scratch holds num_params floats.
 * Sets the round's accepted count to `count`. *weight_sum (may be NULL) gets the weight sum.
 * Errors: the engine's, FEDC_ERR_STATE (weight sum 0). */
fedc_status fedci_secagg_submit(const fedci_secagg_conf *c, fedc_engine *engine,
                                const uint32_t *sum, size_t num_params, const uint32_t *clients,
                                uint32_t count, double train_loss, double fit_seconds,
                                float *scratch, uint64_t *weight_sum, fedc_err *err);

/* ---- the simulation ---- */

/* *out = NULL when secagg.enabled is false. Refuses (FEDC_ERR_CONFIG) what cannot run under
 * secure aggregation (fedci_secagg_conf_init, for clients.per_round clients). Errors also:
 * FEDC_ERR_NOMEM. */
fedc_status fedci_sim_secagg_create(const fedc_config *cfg, fedc_engine *engine,
                                    fedci_sim_secagg **out, fedc_err *err);
void fedci_sim_secagg_destroy(fedci_sim_secagg *s); /* NULL allowed */

/* A round starts with these selected clients (ascending ids). */
fedc_status fedci_sim_secagg_begin(fedci_sim_secagg *s, uint32_t round, const uint32_t *clients,
                                   size_t n, fedc_err *err);
/* A client's fit result instead of fedc_engine_submit: quantized into its slot. Thread-safe
 * for distinct clients. A refused result (NaN/Inf) is reported to the engine as a failure. */
void fedci_sim_secagg_stash(fedci_sim_secagg *s, uint32_t client, const fedc_fit_out *out,
                            double fit_seconds);
/* Runs the protocol over the stashed results and submits the survivors' mean to the engine.
 * An aborted protocol submits nothing (the round then misses its quorum). Errors (fatal):
 * FEDC_ERR_NOMEM, FEDC_ERR_CRYPTO. */
fedc_status fedci_sim_secagg_finish(fedci_sim_secagg *s, fedc_engine *engine, fedc_err *err);
/* Fixes the round's record after fedc_engine_round_end: participants and examples are the
 * protocol's survivors, bytes_up what the clients sent. */
void fedci_sim_secagg_record(const fedci_sim_secagg *s, fedc_round_record *rec);

#endif
