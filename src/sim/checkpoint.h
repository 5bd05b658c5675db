/*
 * Checkpoints of `fedc sim` (single process and MPI; fedc/sim.h, docs/SCALING.md): the
 * directory layout, atomic commit and pruning, and the sidecar of per-client state.
 * Internal to src/sim.
 *
 *   DIR/round-NNNNNNNN/engine.safetensors   fedc_engine_checkpoint_save
 *   DIR/round-NNNNNNNN/clients.safetensors  per-client state (when some client has any)
 *   DIR/round-NNNNNNNN/MANIFEST             "fedc-sim-checkpoint 1", round, client tensors
 * A checkpoint is written in DIR/round-NNNNNNNN.tmp/ and renamed when complete (then the
 * directory is fsynced): a crash leaves the previous checkpoints and at most a stale .tmp.
 */
#ifndef FEDC_SIM_CHECKPOINT_H
#define FEDC_SIM_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/status.h"
#include "sim/worker.h"

/* Kinds of per-client state vectors. */
enum { FEDCI_STATE_CONTROL = 0, FEDCI_STATE_RESIDUAL = 1 };

/* DIR/round-NNNNNNNN[.tmp]/file (file may be "" for the directory) into buf. */
void fedci_ckpt_path(char *buf, size_t size, const char *dir, uint32_t round, int tmp,
                     const char *file);
/* Creates DIR (and parents) and an empty DIR/round-NNNNNNNN.tmp/. Errors: FEDC_ERR_IO. */
fedc_status fedci_ckpt_begin(const char *dir, uint32_t round, fedc_err *err);
/* Writes the MANIFEST, renames the .tmp directory to its final name (replacing an older copy
 * of the same round), fsyncs DIR, then removes all but the newest `keep` checkpoints (0: keeps
 * all). Errors: FEDC_ERR_IO. */
fedc_status fedci_ckpt_commit(const char *dir, uint32_t round, size_t client_tensors, int keep,
                              fedc_err *err);
/* Reads DIR/round-NNNNNNNN/MANIFEST: *client_tensors. Errors: FEDC_ERR_IO, FEDC_ERR_FORMAT. */
fedc_status fedci_ckpt_manifest(const char *dir, uint32_t round, size_t *client_tensors,
                                fedc_err *err);

/* Per-client state held by the pool: the number of vectors, and all of them (ids: 2 words per
 * vector, kind then client; data: num_params floats per vector), by kind then client. */
size_t fedci_pool_state_count(const fedci_pool *p);
void fedci_pool_state_pack(const fedci_pool *p, uint32_t *ids, float *data);
/* Writes n vectors (as packed above) to path as safetensors, atomically. Errors: those of
 * fedc_safetensors_write, FEDC_ERR_NOMEM. */
fedc_status fedci_ckpt_write_clients(const char *path, size_t num_params, size_t n,
                                     const uint32_t *ids, const float *data, uint32_t round,
                                     fedc_err *err);
/* Loads a sidecar into the pool: expect vectors in all, of which those of clients with
 * home[c] == rank (home NULL: all) are kept. Checks names, kinds (the pool must hold that kind
 * of state), client ids, sizes and the count. Errors: FEDC_ERR_IO, FEDC_ERR_FORMAT,
 * FEDC_ERR_CONFIG (state of a kind this run does not keep), FEDC_ERR_NOMEM, the reader's. */
fedc_status fedci_pool_state_load(fedci_pool *p, const char *path, size_t expect,
                                  const int *home, int rank, fedc_err *err);

#endif
