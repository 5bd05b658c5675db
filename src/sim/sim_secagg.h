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

/* *out = NULL when secagg.enabled is false. Refuses (FEDC_ERR_CONFIG) what cannot run under
 * secure aggregation: robust strategies, scaffold and qfedavg (per-client side channels),
 * dp.mode central/local and dp.sgd (their accounting is per client; not yet combined),
 * lossy compress.upload (masks need ring elements; none and zstd are fine), and quantization that could overflow for
 * clients.per_round clients. Errors also: FEDC_ERR_NOMEM. */
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
