/*
 * The round engine (DESIGN.md rule 2): selection, the fit/aggregate/evaluate cycle and the
 * per-round record, written once. Transports drive it: the in-process simulation
 * (fedc_sim_run), and later the HTTP server and MPI ranks. None of them re-implements a step.
 *
 * A round, as a transport drives it:
 *   fedc_engine_round_begin   -> the clients selected this round (seeded, sorted by id)
 *   fedc_engine_fit_ins       -> for each, what it is asked to do (global model, FedProx mu,
 *                                SCAFFOLD control variate)
 *   fedc_engine_submit        -> each result as it arrives, from any thread, in any order:
 *                                checked (size, NaN/Inf) and folded into the aggregate
 *   fedc_engine_round_end     -> the strategy's new global model and the round's record
 *   fedc_engine_evaluate      -> centralized / federated evaluation into the record
 * The result does not depend on arrival order or thread count: linear strategies sum in exact
 * fixed point, robust ones sort by client id.
 */
#ifndef FEDC_ENGINE_H
#define FEDC_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/status.h"
#include "fedc/trainer.h"
#include "fedc/vec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One round's record: what `fedc sim` prints per round and writes to metrics.jsonl. */
typedef struct fedc_round_record {
    uint32_t round;
    uint32_t selected;       /* clients asked to train */
    uint32_t participants;   /* results accepted into the aggregate */
    uint32_t rejected;       /* results refused (wrong size, NaN/Inf, failed fit) */
    uint64_t examples;       /* training examples behind the accepted results */
    double train_loss;       /* example-weighted mean of the clients' training losses */
    int evaluated;           /* centralized evaluation ran this round */
    double test_loss, test_accuracy;
    int fed_evaluated;       /* federated evaluation ran this round */
    uint32_t fed_clients;
    double fed_loss, fed_accuracy;
    uint64_t bytes_down;     /* bytes sent to clients (as encoded on the wire) */
    uint64_t bytes_up;       /* bytes received from clients */
    double seconds;          /* wall time of the round */
    double fit_seconds;      /* sum over clients of their fit time (pure local training) */
    double update_norm;      /* L2 norm of the global model's change this round */
} fedc_round_record;

typedef struct fedc_engine fedc_engine;

/* Creates an engine for a run: the strategy named in cfg, the global model initialised by the
 * trainer (seeded by run.seed). cfg and trainer must outlive the engine. Checks the config:
 * clients.per_round <= clients.count, clients.min <= clients.per_round, the strategy's
 * parameters. Errors: FEDC_ERR_CONFIG, FEDC_ERR_NOMEM, and the trainer's. */
fedc_status fedc_engine_create(const fedc_config *cfg, const fedc_trainer *trainer,
                               fedc_engine **out, fedc_err *err);
void fedc_engine_destroy(fedc_engine *e); /* NULL allowed */

/* The current global parameters (num_params floats) and their layout. Valid until the next
 * fedc_engine_round_end or fedc_engine_set_global. */
const float *fedc_engine_global(const fedc_engine *e);
size_t fedc_engine_num_params(const fedc_engine *e);
const fedc_layout *fedc_engine_layout(const fedc_engine *e);
/* Replaces the global model (checkpoint restore). round = the last completed round. */
fedc_status fedc_engine_restore(fedc_engine *e, uint32_t round, const float *global,
                                fedc_err *err);
/* The last completed round (0 before the first). */
uint32_t fedc_engine_last_round(const fedc_engine *e);
/* The strategy's name ("fedavg"). */
const char *fedc_engine_strategy_name(const fedc_engine *e);

/* Starts round last_round + 1: selects clients. *clients points to an engine-owned array of
 * *n ids sorted ascending, valid until round_end. Errors: FEDC_ERR_STATE (a round is open). */
fedc_status fedc_engine_round_begin(fedc_engine *e, const uint32_t **clients, size_t *n,
                                    fedc_err *err);
/* Fills ins for `client` in the open round (pointers into the engine, valid until round_end).
 * The transport sets ins->client_control itself (a client's own state). */
void fedc_engine_fit_ins(const fedc_engine *e, uint32_t client, fedc_fit_ins *ins);
/* 1 when the strategy needs a SCAFFOLD-style control delta from clients. */
int fedc_engine_needs_control(const fedc_engine *e);

/* Hands a client's result to the round. Thread-safe. A result with a wrong size, NaN/Inf, or
 * out of the aggregator's range is refused (counted in the record's `rejected`, logged) and
 * the round goes on: the return value says why. */
fedc_status fedc_engine_submit(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                               double fit_seconds, fedc_err *err);
/* Records a client that failed or vanished (counted as rejected). Thread-safe. */
void fedc_engine_report_failure(fedc_engine *e, uint32_t client, const char *why);

/* Closes the round: fewer accepted results than clients.min -> FEDC_ERR_ABORTED and the
 * global model stays as it was (the round is counted as done: the run goes on). Otherwise the
 * strategy computes the new global model. rec receives the round's record (evaluation fields
 * unset: see fedc_engine_evaluate). */
fedc_status fedc_engine_round_end(fedc_engine *e, fedc_round_record *rec, fedc_err *err);

/* 1 when centralized evaluation is due after `round` (eval.every; always after the last). */
int fedc_engine_eval_due(const fedc_engine *e, uint32_t round);
/* The clients sampled for federated evaluation after `round` (eval.fraction of clients.count,
 * seeded). Engine-owned array valid until the next call. */
void fedc_engine_eval_clients(fedc_engine *e, uint32_t round, const uint32_t **clients,
                              size_t *n);

#ifdef __cplusplus
}
#endif
#endif
