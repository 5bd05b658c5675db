/*
 * Aggregation strategies: how the server turns a round's client updates into the next global
 * model (FedAvg and its server-optimizer, robust and fairness variants, and SCAFFOLD).
 *
 * A strategy is chosen by name from the config ("strategy.name"; docs/STRATEGIES.md lists every
 * strategy with its parameters and defaults). One round, driven by the round engine:
 *
 *   fedc_strategy_begin_round(s, r)
 *   fedc_strategy_configure_fit(s, r, &fit_cfg)      what every selected client gets
 *   fedc_strategy_add(s, &result, &err)  per client   validated, then folded or held
 *   fedc_strategy_finish_round(s, global, &info, &err)  global <- new global
 *
 * Updates are deltas: client parameters minus the global parameters the client started from,
 * fedc_strategy_update_len(s) floats. Weights are num_examples, capped by strategy.max_weight.
 *
 * Determinism (DESIGN.md rule 3): linear strategies fold each update into exact fixed-point
 * sums (fedc/accum.h), so their result does not depend on arrival order; robust strategies hold
 * the round's updates (at most fedc_strategy_max_held) and sort them by client id before
 * computing. Either way the new global model is bit-identical whatever the order of the adds.
 *
 * Thread safety: a strategy is not synchronised; the engine serialises the calls on one handle.
 */
#ifndef FEDC_STRATEGY_H
#define FEDC_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/rng.h"
#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_strategy fedc_strategy;

/* What the strategy asks of every client selected in a round (fedc_strategy_configure_fit). */
typedef struct fedc_fit_config {
    uint32_t round;
    /* FedProx proximal term mu for the client's local objective (0 = off). From train.prox_mu
     * for every strategy; fedprox requires it to be > 0. */
    double prox_mu;
    /* Client learning rate to use this round; 0 = the trainer's own setting (train.lr).
     * FedOpt strategies set it from strategy.eta_l when that is nonzero. */
    double lr;
    /* QFedAvg: the client must report its loss on the global model before training
     * (fedc_fit_result.loss_before). */
    int want_loss_before;
    /* SCAFFOLD: the server control variate c (control_len = update length floats), which the
     * client uses in its corrected steps; the client returns its control delta in
     * fedc_fit_result.control_delta. Owned by the strategy; valid until the next
     * fedc_strategy_finish_round or fedc_strategy_destroy. NULL for other strategies. */
    const float *control;
    size_t control_len;
} fedc_fit_config;

/* One client's training result, as handed to fedc_strategy_add. Nothing is retained: the
 * strategy copies what it needs before returning. */
typedef struct fedc_fit_result {
    uint32_t client;       /* client id: unique within a round; robust strategies sort by it */
    uint64_t num_examples; /* examples the client trained on (the weight); must be > 0 */
    const float *update;   /* client parameters - global parameters */
    size_t update_len;     /* must equal fedc_strategy_update_len */
    double train_loss;     /* mean training loss reported by the client (for the record) */
    double loss_before;    /* QFedAvg: loss of the global model on the client's data, >= 0 */
    const float *control_delta; /* SCAFFOLD: c_i(new) - c_i(old); NULL otherwise */
    size_t control_delta_len;
} fedc_fit_result;

/* What a finished round did. */
typedef struct fedc_round_agg {
    uint32_t round;
    size_t accepted;           /* updates that entered the aggregate */
    size_t rejected;           /* updates refused (all reasons) */
    size_t rejected_nonfinite; /* ... because of a NaN or Inf */
    size_t rejected_shape;     /* ... because of a wrong length or a missing vector */
    uint64_t examples;         /* sum of num_examples over accepted updates */
    double train_loss;         /* example-weighted mean train loss of accepted updates */
    size_t selected;           /* updates the rule kept: Krum 1, Multi-Krum m, Bulyan theta;
                                  the number accepted for the other strategies */
    int64_t krum_client;       /* krum: the chosen client's id; -1 otherwise */
    double step_norm;          /* L2 norm of (new global - old global) */
} fedc_round_agg;

/* Creates the strategy named by cfg's "strategy.name" for models of num_params floats, reading
 * its parameters from the [strategy] section (and train.prox_mu, clients.count,
 * clients.per_round where a strategy needs them). initial_global (num_params floats, may be
 * NULL) is checked for NaN/Inf; the strategy keeps no pointer to it.
 * *out is owned by the caller (fedc_strategy_destroy). Errors: FEDC_ERR_NOTFOUND (unknown name;
 * the message lists the known ones), FEDC_ERR_CONFIG (a parameter out of place, e.g. fedprox
 * with train.prox_mu = 0, bulyan's f too large for clients.per_round), FEDC_ERR_NONFINITE,
 * FEDC_ERR_NOMEM. */
fedc_status fedc_strategy_create(const fedc_config *cfg, size_t num_params,
                                 const float *initial_global, fedc_strategy **out, fedc_err *err);
void fedc_strategy_destroy(fedc_strategy *s); /* NULL allowed */

/* The strategy's name ("fedavg"); static storage. */
const char *fedc_strategy_name(const fedc_strategy *s);
/* Length of updates (and SCAFFOLD control deltas): num_params. */
size_t fedc_strategy_update_len(const fedc_strategy *s);
/* 1 for linear strategies (updates folded into O(P) running sums as they arrive), 0 for robust
 * ones that hold the round's updates. */
int fedc_strategy_is_streaming(const fedc_strategy *s);
/* Robust strategies: the most updates one round can hold (strategy.max_updates, by default
 * clients.per_round); memory is max_held * update_len floats. 0 for streaming strategies. */
size_t fedc_strategy_max_held(const fedc_strategy *s);

/* The names of all built-in strategies, as a NULL-terminated static array. */
const char *const *fedc_strategy_names(void);

/* Fills *out with what the clients of `round` receive. Does not change the strategy. */
void fedc_strategy_configure_fit(const fedc_strategy *s, uint32_t round, fedc_fit_config *out);

/* Starts a round: clears the running sums / held updates and the round's counters. Calling it
 * again before finishing abandons the round in progress. */
void fedc_strategy_begin_round(fedc_strategy *s, uint32_t round);

/* Validates one client's result and folds it in (linear) or stores a copy (robust). A refused
 * result is counted (fedc_round_agg.rejected*) and leaves the aggregate untouched; the round goes
 * on. Errors: FEDC_ERR_SHAPE (update or control delta missing or of the wrong length),
 * FEDC_ERR_NONFINITE (a NaN or Inf; the message names client and index), FEDC_ERR_INVALID
 * (num_examples 0, a second result from the same client, a missing or negative loss_before for
 * qfedavg), FEDC_ERR_RANGE (robust: more than max_held results; linear: a value outside the
 * exact accumulator's range). Must be called between begin_round and finish_round. */
fedc_status fedc_strategy_add(fedc_strategy *s, const fedc_fit_result *res, fedc_err *err);

/* Adds k results at once, with the same outcome as k calls of fedc_strategy_add in that order
 * (each accepted, or refused and counted alike), except that a second result from the same
 * client within one batch is refused even when the first one is refused too. Linear strategies
 * fold the batch in one cache-blocked pass (fedc_accum_add_many), which moves little more than
 * the updates' own bytes: use it when several results are ready at once. status (k entries, may
 * be NULL) receives each result's outcome. Returns FEDC_OK when all were accepted, else the
 * first refusal's code, with its message in err. */
fedc_status fedc_strategy_add_batch(fedc_strategy *s, size_t k, const fedc_fit_result *res,
                                    fedc_status *status, fedc_err *err);

/* Ends the round: computes the aggregate from the accepted results and applies the server
 * update to global (num_params floats; in: the current global model, out: the new one). info
 * (may be NULL) receives the round's record. With no accepted result: FEDC_ERR_STATE and global
 * untouched. Other errors (global untouched): FEDC_ERR_NONFINITE (the step overflowed),
 * FEDC_ERR_NOMEM. After finish_round, begin_round starts the next round. */
fedc_status fedc_strategy_finish_round(fedc_strategy *s, float *global, fedc_round_agg *info,
                                       fedc_err *err);

/*
 * Partial aggregates (scale-out, docs/SCALING.md): one round split over several handles created
 * with the same config and fed the same history (one per MPI rank). Each handle runs
 * begin_round and adds its share of the round's results; the shares are then combined and
 * installed in one handle (or in each of them), which finishes the round exactly as if it had
 * received every result itself: the new global model is bit-identical to a one-handle round.
 *
 * A partial has three parts, each combined by a plain collective:
 *   sums     fedc_strategy_partial_sums_len(s) int64 words, combined by element-wise integer
 *            addition in any order and grouping (MPI_Allreduce or MPI_Reduce with MPI_INT64_T
 *            and MPI_SUM): the exact running sums of linear strategies (fedc/accum.h raw arrays,
 *            SCAFFOLD's control sum too) followed by the round's counters.
 *   records  FEDC_STRATEGY_RECORD_BYTES bytes per accepted result (client id, examples, weight,
 *            losses; little-endian), combined by concatenation in any order (MPI_Gatherv or
 *            MPI_Allgatherv of bytes). Records are sorted by client id before use.
 *   held     robust strategies only: the held updates, update_len floats each, in the order of
 *            the records and concatenated in the same order as them.
 * Linear strategies need sums and records (O(P) words whatever the number of clients); robust
 * ones need records and held updates (their sums are only the counters).
 *
 * Export (sums, records, held) between the adds and finish_round. The range check of the
 * exact sums (fedc/accum.h) applies to the combined sums, in fedc_strategy_partial_set.
 */
#define FEDC_STRATEGY_RECORD_BYTES 48

/* Int64 words in the sums part (the same on every handle of the same config). */
size_t fedc_strategy_partial_sums_len(const fedc_strategy *s);
/* Writes the open round's sums part (fedc_strategy_partial_sums_len words) into out. */
void fedc_strategy_partial_sums(const fedc_strategy *s, int64_t *out);
/* The number of results accepted so far in the open round: the partial's records. */
size_t fedc_strategy_partial_count(const fedc_strategy *s);
/* Writes the open round's records (fedc_strategy_partial_count * FEDC_STRATEGY_RECORD_BYTES
 * bytes) into out. */
void fedc_strategy_partial_records(const fedc_strategy *s, unsigned char *out);
/* Robust strategies: the held updates (fedc_strategy_partial_count * update_len floats, in
 * record order), owned by the strategy and valid until its next call. NULL for linear ones. */
const float *fedc_strategy_partial_held(const fedc_strategy *s);
/* Robust strategies: makes room for `count` held updates and returns the held area (count *
 * update_len floats, owned by the strategy, valid until its next call); its first
 * fedc_strategy_partial_count(s) updates are this handle's own. A gather may write the other
 * partials' updates after them and pass the area as `held` to fedc_strategy_partial_set, which
 * then copies nothing. Errors (NULL returned): FEDC_ERR_RANGE (count above max_held),
 * FEDC_ERR_NOMEM; FEDC_ERR_STATE for a linear strategy. */
float *fedc_strategy_partial_held_reserve(fedc_strategy *s, size_t count, fedc_err *err);

/* Replaces the open round's aggregate with a combined partial: `sums` (the element-wise sum of
 * every partial's sums, this handle's included), `count` records (the concatenation of every
 * partial's records), and for robust strategies `held` (count * update_len floats in record
 * order; may be the area of fedc_strategy_partial_held_reserve). Nothing is retained; then
 * fedc_strategy_finish_round computes the round. Errors: FEDC_ERR_FORMAT (a record malformed:
 * bad reserved bytes, 0 examples, a weight not finite and > 0; the count disagreeing with the
 * sums; the message names the record), FEDC_ERR_INVALID (a client twice), FEDC_ERR_RANGE (the
 * combined exact sums out of range, or more held updates than max_held), FEDC_ERR_NONFINITE (a
 * held update has a NaN or Inf), FEDC_ERR_NOMEM. After an error the round in progress is unusable:
 * begin a new one. */
fedc_status fedc_strategy_partial_set(fedc_strategy *s, const int64_t *sums,
                                      const unsigned char *records, size_t count,
                                      const float *held, fedc_err *err);

/*
 * Server state across rounds (checkpoints: fedc_engine_checkpoint_save / _load; owner: state).
 * What a strategy carries from one round to the next besides the global model, as named items:
 *   fedavgm     "momentum" (tensor; only with strategy.server_momentum > 0)
 *   fedadagrad, fedadam, fedyogi  "m", "v" (tensors: the server moments; Flower's semantics
 *               have no bias correction, hence no step count)
 *   qfedavg     "f_ref" (real: the previous round's mean loss_before, which scales the weights)
 *   scaffold    "control" (tensor: the server control variate c)
 * fedavg, fedprox and the robust strategies have none. Tensors have fedc_strategy_update_len
 * floats. The round's own sums are not state: a checkpoint is taken between rounds.
 */
typedef enum fedc_state_kind {
    FEDC_STATE_TENSOR = 0, /* len float32 values (data) */
    FEDC_STATE_REAL = 1,   /* one double (real) */
    FEDC_STATE_INT = 2     /* one int64 (integer) */
} fedc_state_kind;

typedef struct fedc_state_item {
    const char *name; /* e.g. "momentum"; static storage, at most 32 bytes */
    fedc_state_kind kind;
    const float *data; /* TENSOR: len floats */
    size_t len;
    double real;       /* REAL */
    int64_t integer;   /* INT */
} fedc_state_item;

#define FEDC_STRATEGY_STATE_MAX 4 /* items of any strategy, at most */

/* The strategy's server state: fills out[0..count-1] (room for FEDC_STRATEGY_STATE_MAX) and
 * returns count (0: none). Tensor pointers point into the strategy and stay valid until its next
 * non-const call. */
size_t fedc_strategy_state_get(const fedc_strategy *s,
                               fedc_state_item out[FEDC_STRATEGY_STATE_MAX]);

/* Replaces the server state with items[0..n-1] (any order), as fedc_strategy_state_get gave
 * them for a strategy of the same config. Everything is checked before anything changes:
 * exactly the strategy's item names, each once, with its kind, tensors of update_len floats,
 * every value finite and in its range (qfedavg's f_ref >= 0). Errors (the message names the
 * item and, for a NaN or Inf, the index): FEDC_ERR_FORMAT (an unknown, missing or repeated
 * item, a wrong kind), FEDC_ERR_SHAPE (a tensor's length), FEDC_ERR_NONFINITE, FEDC_ERR_RANGE.
 * On error the strategy is unchanged. Call between rounds. */
fedc_status fedc_strategy_state_set(fedc_strategy *s, const fedc_state_item *items, size_t n,
                                    fedc_err *err);

/*
 * Simulated attacks for robustness tests (a client option; see docs/STRATEGIES.md):
 *   "none" (or "")    no change
 *   "scale:F"         update *= F
 *   "signflip"        update = -update        ("signflip:F": update *= -F)
 *   "gaussian:SIGMA"  update replaced by N(0, SIGMA^2) noise, drawn from rng
 */
typedef enum fedc_attack_kind {
    FEDC_ATTACK_NONE = 0,
    FEDC_ATTACK_SCALE = 1,
    FEDC_ATTACK_SIGNFLIP = 2,
    FEDC_ATTACK_GAUSSIAN = 3
} fedc_attack_kind;

typedef struct fedc_attack {
    fedc_attack_kind kind;
    double param; /* F, or SIGMA */
} fedc_attack;

/* Parses an attack spec (above). Errors: FEDC_ERR_INVALID, naming the spec. */
fedc_status fedc_attack_parse(const char *spec, fedc_attack *out, fedc_err *err);

/* Applies the attack to update[0..n-1] in place. rng (needed only by "gaussian"; may be NULL
 * otherwise) should be the stream (seed, round, client, FEDC_RNG_ATTACK). Results that overflow
 * float (a huge scale) become +-Inf, which the strategies then refuse: that is part of the test.
 * Thread-safe (no shared state). */
void fedc_attack_apply(const fedc_attack *attack, float *update, size_t n, fedc_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
