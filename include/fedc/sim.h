/*
 * In-process simulation: N virtual clients in one process, trained by a pool of worker
 * threads (one per core by default), each with its own trainer state reused across clients.
 * One copy of the data (the trainer's shared state). The transport under the round engine:
 * it selects nothing and aggregates nothing itself.
 *
 * Results are bit-identical whatever the number of threads: every client's training is
 * seeded by (seed, round, client) and the engine's aggregation does not depend on order.
 */
#ifndef FEDC_SIM_H
#define FEDC_SIM_H

#include "fedc/engine.h"
#include "fedc/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called after each round with its record (from the thread that called fedc_sim_run).
 * Return non-zero to stop the run after this round. */
typedef int (*fedc_sim_round_fn)(void *user, const fedc_round_record *rec);

typedef struct fedc_sim_opts {
    int threads;                 /* worker threads; 0 = run.threads, and 0 there = all cores */
    fedc_sim_round_fn on_round;  /* may be NULL */
    void *user;
} fedc_sim_opts;

/* Runs rounds last_round+1 .. run.rounds of the engine's run. The engine holds the final global
 * model afterwards.
 *
 * Checkpoints (run.checkpoint_dir not empty; docs/SCALING.md "Checkpoint and resume"): after
 * every run.checkpoint_every-th round, after the last one, and after a round where on_round
 * asked to stop, the run's complete state goes to DIR/round-NNNNNNNN/ (written as
 * DIR/round-NNNNNNNN.tmp/, then renamed: a checkpoint is complete or absent): engine.safetensors
 * (fedc_engine_checkpoint_save: model, strategy and DP state), clients.safetensors (state that
 * lives with the simulated clients: SCAFFOLD's c_i as "scaffold.c.<id>", error feedback's
 * residual as "residual.<id>"; only when some client has state) and MANIFEST. Only the newest
 * run.keep_checkpoints are kept. With run.resume = true the run first loads the newest one (none
 * there: it starts at round 1) and is then bit-identical to the uninterrupted run. A failed
 * write ends the run with its error. Each simulated client applies the engine's DP task to its update after
 * fit (clipping, local noise: fedc_dp_client_apply), as a deployed client does. A round that
 * misses its quorum is logged and the run goes on; when the DP budget would be exceeded the
 * record says so (dp_budget_stop) and the run ends with FEDC_OK; a trainer error that is not
 * the client's fault (out of memory) stops the run with that error.
 * Errors: FEDC_ERR_NOMEM, FEDC_ERR_INVALID, FEDC_ERR_CRYPTO (the secure noise source failed),
 * FEDC_ERR_BUDGET, the trainer's and the engine's. */
fedc_status fedc_sim_run(fedc_engine *engine, const fedc_trainer *trainer,
                         const fedc_config *cfg, const fedc_sim_opts *opts, fedc_err *err);

/* The round of the newest complete checkpoint in dir (DIR/round-NNNNNNNN/ holding a MANIFEST),
 * into *round; 0 when there is none or dir does not exist. Errors: FEDC_ERR_IO (dir cannot be
 * read). */
fedc_status fedc_sim_checkpoint_latest(const char *dir, uint32_t *round, fedc_err *err);

/* Number of online CPU cores (at least 1). */
int fedc_sim_default_threads(void);

#ifdef __cplusplus
}
#endif
#endif
