/*
 * Internal to the strategies (src/fl/strategy*.c): the plug-in interface every strategy
 * implements (nng style: one ops table per strategy plus the size of its private state, which
 * the framework allocates zeroed), and the handle the framework keeps around it.
 *
 * The framework (strategy.c) does everything common: validation of results (length, NaN/Inf,
 * duplicates, counts), weights, the running sum of linear strategies, the held copies of robust
 * ones (sorted by client id before aggregation), the finiteness check of the new model and the
 * round record. A strategy supplies only its math.
 */
#ifndef FEDC_FL_STRATEGY_INTERNAL_H
#define FEDC_FL_STRATEGY_INTERNAL_H

#include "fedc/accum.h"
#include "fedc/strategy.h"

/* One accepted result of the current round. */
typedef struct fedci_client_rec {
    uint32_t client;
    uint64_t examples;   /* as reported */
    double weight;       /* weight used in the running sum (linear) or for Multi-Krum */
    double train_loss;   /* NaN when not reported */
    double loss_before;  /* qfedavg */
    double aux;          /* per-strategy scalar (qfedavg: h_k) */
    size_t slot;         /* robust: index of the held copy */
    const float *update; /* robust: the held copy (n floats), set when the round finishes;
                            NULL for linear strategies */
} fedci_client_rec;

typedef struct fedci_strategy_ops fedci_strategy_ops;

struct fedc_strategy {
    const fedci_strategy_ops *ops;
    size_t n;            /* parameters */
    uint32_t round;
    int in_round;
    uint64_t max_weight; /* 0: no cap */
    double prox_mu;      /* train.prox_mu */
    size_t max_held;     /* robust only */

    fedci_client_rec *recs; /* accepted results of the round, recs_cap allocated */
    size_t nrecs, recs_cap;
    size_t rejected, rejected_nonfinite, rejected_shape;

    fedc_accum *acc;   /* linear: running sum of weight * update */
    float *held;       /* robust: held_slots * n floats */
    size_t held_slots; /* slots allocated so far (grows up to max_held) */
    size_t held_used;

    float *delta; /* n: the round's aggregate update */
    float *next;  /* n: the candidate new global model */
    void *state;  /* ops->state_size bytes */
};

struct fedci_strategy_ops {
    const char *name;
    size_t state_size;
    int streaming;         /* 1: linear (running sums); 0: robust (holds updates) */
    int needs_control;     /* results must carry a control delta (SCAFFOLD) */
    int needs_loss_before; /* results must carry loss_before (QFedAvg) */

    /* Reads parameters from cfg and allocates state buffers. NULL: nothing to do. */
    fedc_status (*init)(fedc_strategy *s, void *st, const fedc_config *cfg, fedc_err *err);
    /* Frees what init allocated; must tolerate a half-initialised state. NULL: nothing. */
    void (*fini)(fedc_strategy *s, void *st);
    /* Adds the strategy's fields to the fit config (prox_mu and round are already set). */
    void (*configure_fit)(const fedc_strategy *s, const void *st, fedc_fit_config *out);
    /* Round start (reset the strategy's own running sums). */
    void (*begin_round)(fedc_strategy *s, void *st);
    /* Linear: the weight of a validated result in the running sum, and rec->aux. NULL: the
     * capped num_examples. May refuse the result (its error is returned by fedc_strategy_add). */
    fedc_status (*weigh)(fedc_strategy *s, void *st, const fedc_fit_result *res,
                         fedci_client_rec *rec, double *weight, fedc_err *err);
    /* Linear: folds the result's other vectors after the update was folded; on failure the
     * framework removes the update again. NULL: nothing else to fold. */
    fedc_status (*add_extra)(fedc_strategy *s, void *st, const fedc_fit_result *res,
                             fedc_err *err);
    /* Writes the round's aggregate update (n floats) into delta. s->recs is sorted by client
     * id. NULL (linear only): the weighted mean of the running sum. */
    fedc_status (*aggregate)(fedc_strategy *s, void *st, float *delta, fedc_round_agg *info,
                             fedc_err *err);
    /* Server step: next = f(global, delta), updating the optimizer state. NULL: global+delta. */
    void (*apply)(fedc_strategy *s, void *st, const float *global, const float *delta,
                  float *next);
    /* Called once next has been accepted (finite) and copied to the global model. NULL: none. */
    void (*commit)(fedc_strategy *s, void *st);
    /* Linear, scale-out: the strategy's own exact running sum besides the update sum (SCAFFOLD's
     * control sum), combined across partial aggregates like it. NULL: none. */
    fedc_accum *(*partial_accum)(const fedc_strategy *s, void *st);
    /* Checkpoints: the server state carried across rounds (fedc_strategy_state_get's items,
     * tensors pointing into st; at most FEDC_STRATEGY_STATE_MAX), returning their count. NULL:
     * none. state_set installs items that the framework has matched to state_get's by name
     * and checked (kind, length, finite), in state_get's order; it checks value ranges first
     * and changes nothing on error. NULL: tensors are copied into state_get's buffers. */
    size_t (*state_get)(const fedc_strategy *s, const void *st, fedc_state_item *out);
    fedc_status (*state_set)(fedc_strategy *s, void *st, const fedc_state_item *items,
                             fedc_err *err);
};

/* Scale-out (fedc_strategy_partial_*) relies on two properties of every strategy:
 * - all that one round adds to a strategy is in s->acc, the partial_accum, s->recs and (robust)
 *   the held updates; weigh() may read state set by begin_round or commit, never by other adds;
 * - robust strategies keep no state across rounds besides the global model: the MPI backend
 *   finishes their rounds on rank 0 only and broadcasts the new model. */

/* The built-in strategies. */
extern const fedci_strategy_ops fedci_strategy_fedavg, fedci_strategy_fedavgm,
    fedci_strategy_fedprox, fedci_strategy_fedadagrad, fedci_strategy_fedadam,
    fedci_strategy_fedyogi, fedci_strategy_qfedavg, fedci_strategy_scaffold;
extern const fedci_strategy_ops fedci_strategy_fedmedian, fedci_strategy_fedtrimmedavg,
    fedci_strategy_krum, fedci_strategy_multikrum, fedci_strategy_bulyan;

/* Removes exactly what fedc_accum_add(acc, weight, x) added (terms, weight, count and bound):
 * only for an add that succeeded. */
void fedci_accum_undo(fedc_accum *acc, double weight, const float *x);

/* Folding a vector by range, as it arrives (the server's result uploads, src/net/server_http.c):
 * the sums get exactly the terms a whole-vector fedc_accum_add gives, block by block.
 * fold_range adds weight * x[0..len-1] to sums [off, off + len): off a multiple of
 * fedci_accum_range_block(), len a multiple of it unless the range ends at n. It checks the
 * terms like fedc_accum_add (NaN/Inf, the per-term range; on error the range is left
 * unchanged and the message names the index within x) and raises *mx to the largest |term| (in
 * the accumulator's units; start at 0), but does not record an add: no count, weight or bound.
 * unfold_range subtracts exactly what fold_range added. Neither is synchronised: the caller
 * keeps ranges of the same sums from being folded concurrently, and from any other use of acc.
 *
 * Once all n terms of x are in (*mx over all ranges), the caller announces them with
 * expect_prefolded on the thread that then adds x the ordinary way (fedc_accum_add(acc, w, x)
 * from the strategy): that add finds x's terms already in the sums and only records the add
 * (count, weight, the range bound), giving the same bits as a whole-vector add, without
 * touching the sums. If it cannot -- its bound check fails (FEDC_ERR_RANGE), or its weight is
 * not the one folded with (FEDC_ERR_INTERNAL: the caller's weight rule is not the strategy's) --
 * it refuses and leaves the terms where they are. prefolded_taken then says whether an add
 * recorded the announced vector (1) or not (0: refused by the add, or refused before it; the
 * terms are still in the sums and the caller must unfold them); it clears the announcement. */
size_t fedci_accum_range_block(void);
fedc_status fedci_accum_fold_range(fedc_accum *acc, double weight, size_t off, const float *x,
                                   size_t len, double *mx, fedc_err *err);
void fedci_accum_unfold_range(fedc_accum *acc, double weight, size_t off, const float *x,
                              size_t len);
void fedci_accum_expect_prefolded(const fedc_accum *acc, const float *x, double weight,
                                  double mx);
int fedci_accum_prefolded_taken(void);

/* Tests only: forces the accumulator's vector kernel (all give identical bits; this checks it).
 * Returns 1 if the kernel is available on this CPU and build, else 0 (nothing changed). Not
 * thread-safe with concurrent folds. */
enum {
    FEDCI_ACCUM_KERNEL_AUTO = 0,
    FEDCI_ACCUM_KERNEL_SCALAR = 1,
    FEDCI_ACCUM_KERNEL_SSE2 = 2,
    FEDCI_ACCUM_KERNEL_AVX2 = 3,
    FEDCI_ACCUM_KERNEL_AVX512 = 4
};
int fedci_accum_set_kernel(int which);

/* Squared Euclidean distance / norm in double, summed in a fixed order (deterministic). */
double fedci_sq_dist(size_t n, const float *a, const float *b);
double fedci_sq_norm(size_t n, const float *a);

#endif
