/*
 * The round engine (DESIGN.md rule 2): selection, the fit/aggregate/evaluate cycle and the
 * per-round record, written once. Transports drive it: the in-process simulation
 * (fedc_sim_run), and later the HTTP server and MPI ranks. None of them re-implements a step.
 *
 * A round, as a transport drives it:
 *   fedc_engine_round_begin   -> the clients selected this round (seeded, sorted by id)
 *   fedc_engine_fit_ins       -> for each, what it is asked to do (global model, FedProx mu,
 *                                SCAFFOLD control variate)
 *   fedc_engine_dp_task       -> with differential privacy: what the client does to its update
 *                                before sending it (fedc_dp_client_apply: clip, local noise)
 *   fedc_engine_submit[_dp]   -> each result as it arrives, from any thread, in any order:
 *                                checked (size, NaN/Inf) and folded into the aggregate
 *   fedc_engine_round_end     -> the strategy's new global model and the round's record
 *   fedc_engine_evaluate      -> centralized / federated evaluation into the record
 * The result does not depend on arrival order or thread count: linear strategies sum in exact
 * fixed point, robust ones sort by client id.
 *
 * Differential privacy ([dp], docs/PRIVACY.md) lives here, around the strategy, so that every
 * transport gets it: with dp.mode = central the engine clips each update (or enforces the
 * client's clip), folds it with weight 1 into its own exact sum, and at the end of the round
 * hands the strategy one noised mean update, sum + N(0, (zC)^2) over clients.per_round, as the
 * round's only result; the strategy's server step (fedavg, fedavgm, fedadam...) runs on it.
 * Every record carries the epsilon spent so far; a round that would exceed dp.epsilon_budget
 * is not started.
 */
#ifndef FEDC_ENGINE_H
#define FEDC_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/privacy.h"
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
    /* --- differential privacy (docs/PRIVACY.md): dp_mode FEDC_DP_OFF and the doubles NAN
     * when it does not apply --- */
    int dp_mode;             /* fedc_dp_mode: off, central, local */
    int dp_sgd;              /* example-level DP-SGD ran on the clients */
    int dp_seeded_noise;     /* seeded test noise: the epsilons are NOT a guarantee */
    double epsilon;          /* user-level eps spent so far at dp.delta (local: the largest
                                over clients) */
    double dp_order;         /* the RDP order attaining it */
    double dp_delta;
    double dp_clip;          /* the clip C of this round */
    double dp_noise_stddev;  /* central: noise stddev on the mean update (z_delta C / m);
                                local: on each client's update (z C) */
    double dp_unclipped_fraction; /* adaptive clipping: the noised fraction of unclipped
                                     updates this round */
    double dp_sgd_epsilon;   /* example-level eps of DP-SGD so far, the largest over clients */
    int dp_budget_stop;      /* 1: the next round would exceed dp.epsilon_budget, so the run
                                stops after this round (dp_next_epsilon says by how much) */
    double dp_next_epsilon;  /* with dp_budget_stop: the eps the next round would reach */
    /* --- compression (docs/COMPRESSION.md): bytes_up / bytes_down above are as encoded --- */
    uint64_t bytes_down_raw; /* the downloads as float32, before compress.download */
    uint64_t bytes_up_raw;   /* the uploads as float32, before compress.upload */
    uint64_t bytes_down_full; /* fedc server: what the round's downloads would have been as
                                 full models (bytes_down counts deltas as sent); 0 in sim */
} fedc_round_record;

typedef struct fedc_engine fedc_engine;

/* Creates an engine for a run: the strategy named in cfg, the global model initialised by the
 * trainer (seeded by run.seed). cfg and trainer must outlive the engine. Checks the config:
 * clients.per_round <= clients.count, clients.min <= clients.per_round, the strategy's
 * parameters, the [dp] section (fedc_dp_config_check: a budget the first round would exceed
 * is refused here) and that the strategy can run under DP: dp.mode = central needs a linear
 * strategy without per-client side channels (fedavg, fedprox, fedavgm, fedadagrad, fedadam,
 * fedyogi); dp.mode = local refuses scaffold and qfedavg (they send unprotected per-client
 * values). Errors: FEDC_ERR_CONFIG, FEDC_ERR_CRYPTO, FEDC_ERR_NOMEM, and the trainer's. */
fedc_status fedc_engine_create(const fedc_config *cfg, const fedc_trainer *trainer,
                               fedc_engine **out, fedc_err *err);
void fedc_engine_destroy(fedc_engine *e); /* NULL allowed */

/* The current global parameters (num_params floats) and their layout. Valid until the next
 * fedc_engine_round_end or fedc_engine_set_global. */
const float *fedc_engine_global(const fedc_engine *e);
size_t fedc_engine_num_params(const fedc_engine *e);
const fedc_layout *fedc_engine_layout(const fedc_engine *e);
/* Replaces the global model alone (a retry, or a model-only file; to resume a run exactly,
 * with the strategy's and DP's state, use fedc_engine_checkpoint_load). round = the last
 * completed round. Privacy accounts are never reduced (fedc_dp_run_restore): central DP
 * charges the rounds its accountant has not seen (an upper bound); local DP and DP-SGD keep
 * their per-client accounts, and a new engine restoring round > 0 without them is refused
 * (FEDC_ERR_UNSUPPORTED: load an engine checkpoint instead). */
fedc_status fedc_engine_restore(fedc_engine *e, uint32_t round, const float *global,
                                fedc_err *err);
/* ---- Checkpoints: the engine's complete state (owner: state; docs/DEPLOY.md "Resume") ----
 * Saves everything the engine needs to continue exactly after its last finished round: the
 * global model, the round, the strategy's server state (momentum, moments, step counts,
 * SCAFFOLD's control variate) and the DP run's state (adaptive clip, privacy accounts).
 * Atomic: a temp file, fsync, rename. The file is safetensors: the model tensors keep their
 * PyTorch names (fedc inspect and torch load them), the state tensors use the reserved
 * "__fedc__." prefix, and the scalars (round, model_sha256 over the model tensors, the config
 * digest, ...) live in __metadata__ (docs/DEPLOY.md "Resume" lists them). Not while a round is
 * open (FEDC_ERR_STATE). Errors: FEDC_ERR_IO (naming the path; the old file stays),
 * FEDC_ERR_NONFINITE (a state value overflowed), FEDC_ERR_NOMEM. */
fedc_status fedc_engine_checkpoint_save(const fedc_engine *e, const char *path, fedc_err *err);
/* Restores a checkpoint written by fedc_engine_checkpoint_save into an engine created from the
 * same config (and trainer/model): the config digest in the metadata must match, and every
 * tensor must have its expected name, dtype, size and finite values. The next round is then
 * bit-identical to the one the saved engine would have run. On error the engine is unchanged.
 * Not while a round is open. Errors: FEDC_ERR_IO (unreadable), FEDC_ERR_FORMAT (truncated,
 * corrupt, a missing or malformed tensor: the message names it), FEDC_ERR_CONFIG (another
 * config), FEDC_ERR_SHAPE (another model layout), FEDC_ERR_NONFINITE, FEDC_ERR_STATE,
 * FEDC_ERR_NOMEM. */
fedc_status fedc_engine_checkpoint_load(fedc_engine *e, const char *path, fedc_err *err);
/* The last completed round (0 before the first). */
uint32_t fedc_engine_last_round(const fedc_engine *e);
/* The strategy's name ("fedavg"). */
const char *fedc_engine_strategy_name(const fedc_engine *e);

/* Starts round last_round + 1: selects clients. *clients points to an engine-owned array of
 * *n ids sorted ascending, valid until round_end. Errors: FEDC_ERR_STATE (a round is open),
 * FEDC_ERR_BUDGET (the round would spend more than dp.epsilon_budget: it is not started, and
 * the run is over; the previous record said so with dp_budget_stop). */
fedc_status fedc_engine_round_begin(fedc_engine *e, const uint32_t **clients, size_t *n,
                                    fedc_err *err);
/* Fills ins for `client` in the open round (pointers into the engine, valid until round_end).
 * The transport sets ins->client_control itself (a client's own state). */
void fedc_engine_fit_ins(const fedc_engine *e, uint32_t client, fedc_fit_ins *ins);
/* 1 when the strategy needs a SCAFFOLD-style control delta from clients. */
int fedc_engine_needs_control(const fedc_engine *e);

/* Hands a client's result to the round. Thread-safe. A result with a wrong size, NaN/Inf, or
 * out of the aggregator's range is refused (counted in the record's `rejected`, logged) and
 * the round goes on: the return value says why. A result of 0 examples (a client without
 * training data: data.min_size = 0) is skipped: FEDC_OK, neither accepted nor rejected, nothing
 * folded or charged. Same as fedc_engine_submit_dp with no DP report. */
fedc_status fedc_engine_submit(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                               double fit_seconds, fedc_err *err);

/* What `client` must do to its update before sending it in the open round (clip, local noise;
 * all zero without DP): pass it to fedc_dp_client_apply on the client. Thread-safe. */
void fedc_engine_dp_task(const fedc_engine *e, uint32_t client, fedc_dp_client_task *task);

/* fedc_engine_submit with the client's DP report (may be NULL; required with adaptive
 * clipping and dp.clip_on = client). With dp.mode = central, out->update is clipped and
 * rounded in place (fedc_dp_run_prepare), outside the engine's lock, so that clients' norms are
 * computed in parallel; only the result of a selected client, once per round, is accepted.
 * With DP, every result received counts against its client's privacy account (local DP,
 * DP-SGD), accepted or not: it was released. Errors: as fedc_engine_submit. */
fedc_status fedc_engine_submit_dp(fedc_engine *e, uint32_t client, const fedc_fit_out *out,
                                  const fedc_dp_client_report *report, double fit_seconds,
                                  fedc_err *err);
/* Records a client that failed or vanished (counted as rejected). Thread-safe. */
void fedc_engine_report_failure(fedc_engine *e, uint32_t client, const char *why);

/* (HTTP transport addition, owner: net) fedc_engine_round_begin selecting `select` clients
 * (0 = clients.per_round; capped at clients.count): over-selection. attempt > 0 draws the
 * cohort from an independent stream (a round re-run after missing its quorum, following
 * fedc_engine_restore to the previous round). Attempt 0 with select = per_round is exactly
 * fedc_engine_round_begin. Errors: as fedc_engine_round_begin, FEDC_ERR_NOMEM. */
fedc_status fedc_engine_round_begin_select(fedc_engine *e, uint32_t select, uint32_t attempt,
                                           const uint32_t **clients, size_t *n, fedc_err *err);

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

/* ---- Addition for the MPI transport (src/sim/mpi.c, fedc/mpi.h; owner: mpi) ----
 * Scale-out: one round over several engines created with the same config and trainer and fed
 * the same history (one per MPI rank). Each engine gets its share of the round's clients; the
 * transport sums the engines' round counters and combines the strategies' partial aggregates
 * (fedc/strategy.h, fedc_strategy_partial_*), installs the combination in one engine or in
 * every engine, and finishes the round there with fedc_engine_round_end. With DP, the DP run's
 * partial and central DP's statistics are combined the same way (below). */
typedef struct fedc_strategy fedc_strategy;

#define FEDC_ENGINE_COUNTERS 5
/* The open round's counters as int64 words, to be summed across engines: results accepted,
 * results refused, clients failed, bytes received, clients' fit time (nanoseconds). */
void fedc_engine_round_counters(const fedc_engine *e, int64_t out[FEDC_ENGINE_COUNTERS]);
/* Replaces the open round's counters with combined ones (the sums of every engine's). */
void fedc_engine_set_round_counters(fedc_engine *e, const int64_t in[FEDC_ENGINE_COUNTERS]);
/* The engine's strategy, owned by the engine, for the partial-aggregate API. */
fedc_strategy *fedc_engine_strategy(fedc_engine *e);
/* DP under MPI: the engine's DP run (NULL without DP), for its partial API and release hook
 * (fedc/privacy.h, "Scale-out"). Central DP also keeps, per accepted result, what the round's
 * record needs (client, examples, training loss): FEDC_ENGINE_DP_STAT_BYTES bytes each,
 * combined by concatenation in any order and installed in every engine before round_end. */
fedc_dp_run *fedc_engine_dp(fedc_engine *e);
#define FEDC_ENGINE_DP_STAT_BYTES 24
size_t fedc_engine_dp_stats_count(const fedc_engine *e);
void fedc_engine_dp_stats(const fedc_engine *e, unsigned char *out);
/* Replaces the open round's statistics with `count` records (at most the selected clients).
 * Errors: FEDC_ERR_STATE (no round open), FEDC_ERR_FORMAT, FEDC_ERR_NOMEM. */
fedc_status fedc_engine_dp_stats_set(fedc_engine *e, const unsigned char *recs, size_t count,
                                     fedc_err *err);
/* Closes the open round with a global model computed by another engine (num_params floats;
 * may be fedc_engine_global(e) when the model is unchanged). The strategy's round is abandoned
 * (the next begin_round clears it): only for strategies whose server state is the model alone
 * (the robust ones). Errors: FEDC_ERR_STATE (no round open), FEDC_ERR_NONFINITE (global
 * unchanged). */
fedc_status fedc_engine_round_adopt(fedc_engine *e, const float *global, fedc_err *err);

/* ---- Addition for secure aggregation (src/sim/sim_secagg.c, src/net/server_secagg.c; owner:
 * secagg) ----
 * Central DP under SecAgg+: the round's one pre-aggregated result, the unmasked SUM of the
 * updates of `count` selected clients (clients, each clipped to dp.clip on the client), folded
 * as is into the DP run's exact sum; each of those clients counts as one accepted result (once
 * per round). Noise is added once, at fedc_engine_round_end, as for central DP. Thread-safe.
 * Errors: FEDC_ERR_STATE (no round open, or not dp.mode = central), FEDC_ERR_INVALID (a client
 * not selected or already counted), FEDC_ERR_RANGE / FEDC_ERR_NONFINITE (the sum), NOMEM. */
fedc_status fedc_engine_submit_sum(fedc_engine *e, const uint32_t *clients, uint32_t count,
                                   const float *sum, double fit_seconds, fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
