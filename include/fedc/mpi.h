/*
 * Scale-out simulation on MPI (docs/SCALING.md): one federation over R processes ("ranks"), on
 * one machine or many, under `mpirun -np R fedc sim CONFIG`.
 *
 * Every rank loads the data and builds the same engine; per round, all ranks select the same
 * clients, each trains its share (assigned deterministically, balanced by example counts) with
 * its own worker threads, and the shares' partial aggregates meet through MPI collectives:
 *   - linear strategies: one integer MPI_Allreduce of the exact sums (fedc/accum.h) plus the
 *     round's counters, an MPI_Allgatherv of the small per-client records; then every rank
 *     computes the same server step (identical deterministic computation, checked each round
 *     by a digest of the model), so server state (momenta, control variates) stays in step;
 *   - robust strategies: MPI_Gatherv of the held updates and records to rank 0, which computes
 *     the round and broadcasts the new model;
 *   - differential privacy: the DP run's exact sum and counts join the allreduce, every result's
 *     privacy charge is replayed on every rank, and rank 0 draws the noise and broadcasts the
 *     noised mean (fedc_dp_run_set_release_hook).
 * The final model is bit-identical to the single-process run (fedc_sim_run) with the same
 * config and seed, whatever the number of ranks and threads. Rank 0 evaluates and reports.
 *
 * Built when OpenMPI is found at configure time (FEDC_HAVE_MPI in fedc/config_build.h; never
 * in sanitizer builds). Without it every function below still exists: fedc_mpi_available
 * returns 0 and fedc_mpi_init fails with FEDC_ERR_UNSUPPORTED and fedc_mpi_install_hint.
 *
 * Thread safety: MPI is process-wide. Call these functions from one thread (the one that
 * called fedc_mpi_init); fedc_mpi_run's worker threads never call MPI.
 */
#ifndef FEDC_MPI_H
#define FEDC_MPI_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/engine.h"
#include "fedc/sim.h"
#include "fedc/status.h"
#include "fedc/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this libfedc was built with MPI, else 0. */
int fedc_mpi_available(void);
/* How to get an MPI-enabled build (static text naming the Debian packages). */
const char *fedc_mpi_install_hint(void);
/* 1 when the environment says this process was started by mpirun/mpiexec (OpenMPI's
 * OMPI_COMM_WORLD_SIZE, or PMI_SIZE / PMIX_RANK of other launchers), else 0. Works in every
 * build, before fedc_mpi_init. */
int fedc_mpi_launched(void);

/* Initialises MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) once per process; later calls do
 * nothing. Errors: FEDC_ERR_UNSUPPORTED (built without MPI; the message says how to install
 * it), FEDC_ERR_NETWORK (MPI failed to start). */
fedc_status fedc_mpi_init(fedc_err *err);
/* This process's rank and the number of ranks; 0 and 1 before fedc_mpi_init or without MPI. */
int fedc_mpi_rank(void);
int fedc_mpi_size(void);
/* Worker threads per rank by default: the node's cores divided by the ranks on the node
 * (at least 1). Before fedc_mpi_init: all cores. */
int fedc_mpi_default_threads(void);
/* Ends MPI (MPI_Finalize) if fedc_mpi_init started it. */
void fedc_mpi_finalize(void);
/* Ends every rank of the run at once (MPI_Abort with `code`): for an error on one rank that
 * the others cannot learn about. Returns only without MPI. */
void fedc_mpi_abort(int code);

/* Collective (every rank calls it): agrees on the outcome of a step that each rank did
 * alone, such as loading the data. Returns FEDC_OK when every rank passed `local` = FEDC_OK;
 * otherwise, on every rank, the code of the lowest failing rank, with its local_err message
 * (may be NULL) in err: as is when that rank is 0, else "rank 1: data.dataset = ...", plus
 * "(3 ranks failed)" when several did. Without MPI or before fedc_mpi_init: returns local and
 * copies local_err. Errors also: FEDC_ERR_NETWORK (the collective failed). */
fedc_status fedc_mpi_agree(fedc_status local, const fedc_err *local_err, fedc_err *err);

/* Where a run's time went on this rank, summed over its rounds (seconds). */
typedef struct fedc_mpi_stats {
    int ranks;              /* ranks in the run */
    int threads;            /* worker threads per rank */
    uint32_t rounds;        /* rounds run */
    double train_seconds;   /* wall time training this rank's clients */
    double wait_seconds;    /* waiting for the slowest rank before combining (load imbalance) */
    double comm_seconds;    /* collectives: partial aggregates, records, models, digests */
    double server_seconds;  /* aggregation and server step (fedc_engine_round_end) */
    double eval_seconds;    /* evaluation (central on rank 0, federated on every rank) */
    uint64_t comm_bytes;    /* bytes this rank passed to collectives */
    double imbalance;       /* mean over rounds of (largest rank's examples / mean examples) */
    /* Means over ranks, filled on every rank at the end of the run. */
    double mean_train_seconds, mean_wait_seconds, mean_comm_seconds;
} fedc_mpi_stats;

/* Collective: runs rounds last_round+1 .. run.rounds of the engine's run over all ranks, like
 * fedc_sim_run (opts: threads per rank, 0 = run.threads, 0 there = fedc_mpi_default_threads;
 * on_round is called on rank 0 only). Every rank passes its own engine, trainer and config,
 * built identically. The engine holds the final global model afterwards on every rank.
 * Errors are agreed: every rank returns a failure together, with the message of the lowest
 * failing rank (fedc_mpi_agree); a rank that dies is reported by mpirun, which ends the others.
 * Differential privacy and compression run as in one process (the same model and epsilon):
 * DP's sums and per-client charges are combined across ranks and central noise is drawn once,
 * at rank 0, and broadcast. Checkpoints and run.resume as fedc_sim_run (fedc/sim.h): rank 0
 * writes, every rank reads the newest checkpoint. Errors:
 * FEDC_ERR_UNSUPPORTED (no MPI; secagg.enabled), FEDC_ERR_NETWORK (an MPI call failed),
 * FEDC_ERR_STATE (the ranks' models diverged, e.g. different CPUs or libm), the trainer's and
 * the engine's (as fedc_sim_run). stats (may be NULL) receives this rank's timings. */
fedc_status fedc_mpi_run(fedc_engine *engine, const fedc_trainer *trainer, const fedc_config *cfg,
                         const fedc_sim_opts *opts, fedc_mpi_stats *stats, fedc_err *err);

/* Assigns n items with costs cost[0..n-1] to `ranks` ranks, balanced (longest processing time
 * first: items by decreasing cost, ties by index, each to the least loaded rank, ties by the
 * lowest rank), into owner[0..n-1]; load (ranks entries, may be NULL) receives each rank's total.
 * Deterministic: the same on every rank. Every rank's load is at most the mean plus the largest
 * cost. Errors: FEDC_ERR_NOMEM. Pure; thread-safe; works without MPI. */
fedc_status fedc_mpi_assign(size_t n, const uint64_t *cost, int ranks, int *owner,
                            uint64_t *load, fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
