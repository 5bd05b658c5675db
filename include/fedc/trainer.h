/*
 * The trainer: the extension point of fedc (DESIGN.md rule 5). Any C program becomes a client
 * by implementing `fit` and `evaluate` over flat parameter vectors plus their layout, the way
 * Flower's NumPyClient does. The built-in trainer (fedc_trainer_nn) trains fedc's own neural
 * networks; examples/custom_trainer.c shows one written from scratch.
 *
 * Shape of a trainer (nng-style plug-in): a table of function pointers, a `shared` pointer
 * that every worker reads (datasets, partitions, model definition: immutable during a run),
 * and per-worker state of `worker_size` bytes that the engine allocates, one per thread, and
 * reuses across clients (no per-client allocation of a model).
 */
#ifndef FEDC_TRAINER_H
#define FEDC_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/status.h"
#include "fedc/vec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The client id meaning "the server's own test set" in evaluation. */
#define FEDC_CLIENT_SERVER 0xffffffffu

/* What a client is asked to do in a round. All pointers are owned by the engine and valid for
 * the duration of the call only. */
typedef struct fedc_fit_ins {
    uint32_t round;
    uint32_t client;              /* the client's id (its data shard in simulation) */
    uint64_t seed;                /* run seed: key the client's rng streams with it */
    const float *global;          /* the global parameters, num_params floats */
    size_t num_params;
    const fedc_config *config;    /* the run configuration ([train] keys) */
    double prox_mu;               /* FedProx: add mu (w - global) to gradients (0 = off) */
    double lr;                    /* client learning rate this round; 0 = the trainer's own */
    const float *server_control;  /* SCAFFOLD: the server control variate c, or NULL */
    float *client_control;        /* SCAFFOLD: this client's c_i (in: current; out: new), or NULL */
    int want_loss_before;         /* the strategy needs fit_out.loss_before (QFedAvg) */
} fedc_fit_ins;

/* What the client returns. `update` and `control_delta` are engine-owned buffers of num_params
 * floats that fit fills. */
typedef struct fedc_fit_out {
    float *update;          /* local parameters minus global */
    float *control_delta;   /* SCAFFOLD: c_i(new) - c_i(old); NULL when not used */
    uint64_t num_examples;  /* examples the client trained on (the FedAvg weight); 0: the
                               client has no training data and the engine skips the result */
    double train_loss;      /* mean training loss over the local steps */
    double loss_before;     /* loss of the global model on the client's data before training
                               (QFedAvg needs it; NAN when not computed) */
    uint64_t steps;         /* local optimizer steps taken */
} fedc_fit_out;

typedef struct fedc_eval_ins {
    uint32_t round;
    uint32_t client;        /* FEDC_CLIENT_SERVER: the central test set */
    const float *params;
    size_t num_params;
    const fedc_config *config;
    /* Central test set, for a trainer whose ops set eval_parts: evaluate only slice `part`
     * (0 <= part < parts) of the set cut into `parts` slices at points that depend only on
     * the set and `parts` (the engine evaluates the slices on several threads and combines
     * them with fedc_eval_combine). parts 0 or 1: the whole set. */
    uint32_t part, parts;
} fedc_eval_ins;

typedef struct fedc_eval_out {
    double loss;            /* mean loss */
    double accuracy;        /* fraction correct in [0, 1]; NAN when not meaningful */
    uint64_t num_examples;
} fedc_eval_out;

typedef struct fedc_trainer_ops {
    const char *name;
    size_t worker_size; /* bytes of per-worker state the engine allocates (zeroed) */
    /* The parameter layout; lives as long as `shared`. */
    const fedc_layout *(*layout)(const void *shared);
    /* Fills params (layout->total floats) with the initial global model for `seed`. */
    fedc_status (*init_params)(const void *shared, uint64_t seed, float *params, fedc_err *err);
    /* Prepares a worker's state (workspace, optimizer buffers). */
    fedc_status (*worker_init)(const void *shared, void *worker, fedc_err *err);
    /* Frees what worker_init allocated; tolerates a zeroed or half-built state. */
    void (*worker_fini)(void *worker);
    /* Local training of one client. Deterministic given (ins), whatever worker runs it. */
    fedc_status (*fit)(const void *shared, void *worker, const fedc_fit_ins *ins,
                       fedc_fit_out *out, fedc_err *err);
    /* Evaluation of params on a client's test split, or on the central test set. */
    fedc_status (*evaluate)(const void *shared, void *worker, const fedc_eval_ins *ins,
                            fedc_eval_out *out, fedc_err *err);
    /* Number of examples client k holds for training (0 if unknown). May be NULL. */
    uint64_t (*num_examples)(const void *shared, uint32_t client);
    /* 1 when evaluate honours fedc_eval_ins.part/parts for the central test set (0: it is
     * always evaluated whole, on one thread). */
    int eval_parts;
} fedc_trainer_ops;

/* The central test set is evaluated in this many slices (on as many threads as there are,
 * whatever their number: the result does not depend on it). */
#define FEDC_EVAL_PARTS 8

/* The result over a whole set from the results over its n slices, in slice order: the mean
 * loss weighted by examples, the accuracy from the exact counts of correct examples (NAN when
 * a slice with examples has none meaningful). Slices with no examples count for nothing; one
 * slice is copied as it is. */
void fedc_eval_combine(const fedc_eval_out *parts, size_t n, fedc_eval_out *out);

/* A trainer: its operations and its shared state. */
typedef struct fedc_trainer {
    const fedc_trainer_ops *ops;
    void *shared;
} fedc_trainer;

#ifdef __cplusplus
}
#endif
#endif
