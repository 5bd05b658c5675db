/*
 * The simulation's worker pool and its one per-client step, shared by the in-process
 * transport (sim.c) and the MPI ranks (mpi.c). Internal to src/sim.
 *
 * A simulated client runs the client pipeline of a deployed one (DESIGN.md's spine):
 *   trainer->fit -> the engine's DP task (fedc_dp_client_apply: clip, local noise)
 *   -> compress.upload (with error feedback) and what the server decodes
 *   -> SecAgg's stash, or fedc_engine_submit_dp.
 * Per-client state that lives with the simulated clients (SCAFFOLD's c_i, error feedback's
 * residual) is held here, created at a client's first participation, only for the clients
 * this process trains. Training is a pure function of (seed, round, client, global model),
 * so any worker of any process may run any client whose per-client state it holds.
 */
#ifndef FEDC_SIM_WORKER_H
#define FEDC_SIM_WORKER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fedc/codec.h"
#include "fedc/config.h"
#include "fedc/engine.h"
#include "fedc/trainer.h"
#include "sim/sim_secagg.h"

typedef struct fedci_worker {
    void *state;           /* the trainer's per-worker state */
    int state_ready;
    float *update;         /* num_params */
    float *control_delta;  /* num_params, SCAFFOLD only */
    fedc_codec *up;        /* compress.upload, NULL when none */
    fedc_status fatal;     /* an error that stops the run (out of memory, trainer bug) */
    fedc_err err;
} fedci_worker;

/* One result handed to the engine (fedci_pool_fit), for a transport that replays the DP
 * charges of results submitted in other processes (MPI). */
typedef struct fedci_submission {
    uint32_t client;
    uint32_t reserved;
    uint64_t num_examples;
    uint64_t steps;
} fedci_submission;

typedef struct fedci_pool {
    fedc_engine *engine;
    const fedc_trainer *trainer;
    const fedc_config *cfg;
    size_t num_params;
    uint32_t num_clients;
    int nworkers;
    fedci_worker *workers;
    float **client_control;   /* SCAFFOLD: c_i per client (num_clients entries), else NULL */
    float **residual;         /* error feedback: residual per client, else NULL */
    fedc_codec *down;         /* compress.download, NULL when none */
    float *down_global;       /* the global model as the clients decoded it this round */
    uint64_t down_bytes;      /* the encoded download's size this round */
    atomic_uint_fast64_t up_bytes; /* encoded uploads of the current fit job */
    fedci_sim_secagg *secagg; /* set by the transport: results go to SecAgg, not the engine */
    /* results submitted in the current fit job (only with log_submissions) */
    int log_submissions;
    fedci_submission *subs;
    size_t subs_cap;
    atomic_size_t nsubs;
    /* the current job */
    const uint32_t *items;
    size_t nitems;
    atomic_size_t cursor;
    int job;
    uint32_t round;
    fedc_eval_out *eval_out;
    fedc_status *eval_status;
    const size_t *eval_pos;
    int eval_parts;               /* the eval job's items are slices of the central set */
    fedc_err *eval_errs;          /* when not NULL: each item's error message */
} fedci_pool;

/* Builds the pool: nworkers workers with their trainer state and buffers, SCAFFOLD's and error
 * feedback's per-client tables, the codecs of compress.upload/download. On failure the pool
 * may be half built: call fedci_pool_fini. Errors: FEDC_ERR_NOMEM, the trainer's, the
 * codecs'. */
fedc_status fedci_pool_init(fedci_pool *p, fedc_engine *engine, const fedc_trainer *trainer,
                            const fedc_config *cfg, int nworkers, fedc_err *err);
void fedci_pool_fini(fedci_pool *p); /* safe on a zeroed or half-built pool */

/* 1 when clients carry state from round to round (SCAFFOLD, error feedback): a transport that
 * splits clients over processes must then always train a client in the same process. */
int fedci_pool_clients_have_state(const fedci_pool *p);

/* Keeps a log of the next fit jobs' submitted results (at most cap per job). Errors:
 * FEDC_ERR_NOMEM. */
fedc_status fedci_pool_log_submissions(fedci_pool *p, size_t cap, fedc_err *err);

/* Compression: encodes and decodes the engine's global model for the round about to start
 * (compress.download); no-op without it. Deterministic: every process gets the same bits. */
fedc_status fedci_pool_download(fedci_pool *p, fedc_err *err);

/* Trains clients[0..n-1] of the open round with every worker (the calling thread is worker
 * 0) and hands each result to SecAgg or the engine. A client's own failure is reported to the
 * engine and the job goes on; a fatal error (out of memory, trainer bug, no secure noise)
 * stops it and is returned. */
fedc_status fedci_pool_fit(fedci_pool *p, const uint32_t *clients, size_t n, fedc_err *err);

/* Federated evaluation of clients[0..n-1] on the global model after `round`: client j's
 * result goes to out[pos[j]] and status[pos[j]] (pos NULL: j). */
fedc_status fedci_pool_eval(fedci_pool *p, uint32_t round, const uint32_t *clients, size_t n,
                            const size_t *pos, fedc_eval_out *out, fedc_status *status,
                            fedc_err *err);

/* Central evaluation: rec's test fields when due (or forced). With a trainer that evaluates
 * slices (ops->eval_parts), FEDC_EVAL_PARTS slices over every worker, combined in order
 * (fedc_eval_combine); otherwise the whole set on worker 0. */
fedc_status fedci_pool_eval_central(fedci_pool *p, fedc_round_record *rec, int force,
                                    fedc_err *err);

#endif
