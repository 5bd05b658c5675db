/*
 * The run store of a federation server (DESIGN.md "Run store"): one state directory holding
 *
 *   DIR/fedc.db                SQLite in WAL mode: the run, its committed rounds, each round's
 *                              participation and metrics, and the client allow-list
 *   DIR/checkpoints/           round-NNNNNNNN.safetensors: engine checkpoints
 *                              (fedc_engine_checkpoint_save: the model under its PyTorch names,
 *                              the strategy's "__fedc__." state tensors, the DP accounts and
 *                              model_sha256 in the metadata), written atomically (temp, fsync,
 *                              rename, directory fsync)
 *   DIR/model.safetensors      the final model alone, when the run is over
 *
 * A round is committed by fedc_store_commit_round, in one transaction, only after its
 * checkpoint is durable; a restart resumes from the last committed round (fedc_store_run_open
 * gives it) with fedc_engine_checkpoint_load, exactly where the run was. Killing the process
 * at any moment leaves the database and every committed checkpoint intact (SQLite's WAL with
 * synchronous = FULL; atomic checkpoint files).
 *
 * Not in client-only builds. Thread safety: a fedc_store is used by one thread at a time;
 * several processes may open the same DIR (the server runs while `fedc server allow` adds a
 * key): SQLite serialises them (busy timeout 5 s).
 */
#ifndef FEDC_STORE_H
#define FEDC_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/engine.h"
#include "fedc/net.h"
#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_store fedc_store;

/* Opens (creating when missing: mode 0700) the state directory and its database, creating or
 * checking the schema. Errors: FEDC_ERR_IO (naming the path), FEDC_ERR_FORMAT (not a fedc
 * database, or a schema from a newer fedc), FEDC_ERR_NOMEM. */
fedc_status fedc_store_open(const char *dir, fedc_store **out, fedc_err *err);
void fedc_store_close(fedc_store *st); /* NULL allowed */
/* The state directory (as given to fedc_store_open). */
const char *fedc_store_dir(const fedc_store *st);

/* ---- allow-list ---- */
typedef struct fedc_store_client {
    uint32_t id; /* 0, 1, 2... in the order keys were allowed */
    uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
    char label[64]; /* free text given when allowed ("" if none) */
    int64_t added;  /* unix seconds */
} fedc_store_client;

/* Adds a public key to the allow-list. *id (may be NULL) gets its id: the next free one, or the
 * key's existing id when it is already allowed (then *added = 0). The id is the client's
 * stable identity: the client id the round engine selects and the data shard it trains on.
 * Errors: FEDC_ERR_IO (database). */
fedc_status fedc_store_allow(fedc_store *st, const uint8_t pk[FEDC_KEY_PUBLIC_BYTES],
                             const char *label, uint32_t *id, int *added, fedc_err *err);
/* Imports a file of public keys, one per line (64 hex digits, optionally followed by white
 * space and a label; '#' comments and blank lines ignored), in order. *added (may be NULL)
 * counts the new ones. Errors: FEDC_ERR_IO, FEDC_ERR_FORMAT (naming file and line); on error
 * nothing from the file is kept. */
fedc_status fedc_store_allow_file(fedc_store *st, const char *path, size_t *added, fedc_err *err);
/* The allow-list, ordered by id. *out (fedc_free) holds *n entries. */
fedc_status fedc_store_clients(fedc_store *st, fedc_store_client **out, size_t *n, fedc_err *err);

/* ---- the run ---- */
typedef struct fedc_store_run {
    char run_id[33];       /* 32 hex digits, random */
    uint32_t last_round;   /* last committed round; 0 = none yet */
    uint32_t rounds;       /* run.rounds */
    char model_sha256[65]; /* model of the last committed round ("" when none) */
    char checkpoint[4096]; /* its checkpoint file ("" when none) */
    int finished;          /* the run is over (DIR/model.safetensors written) */
} fedc_store_run;

/* Starts the run of `config_text` (fedc_config_write's output) in this directory, or finds
 * the one already there. `fingerprint` identifies what must not change across restarts (the
 * training-defining keys); a directory holding a run with another fingerprint is refused:
 * FEDC_ERR_STATE ("the state dir holds run X of a different configuration"). *resumed = 1
 * when an existing run was found. Errors: FEDC_ERR_IO, FEDC_ERR_STATE. */
fedc_status fedc_store_run_open(fedc_store *st, const char *config_text, const char *fingerprint,
                                uint32_t rounds, fedc_store_run *run, int *resumed, fedc_err *err);
/* The directory's run (the latest one), read-only, for listing its rounds. Errors:
 * FEDC_ERR_NOTFOUND (no run yet), FEDC_ERR_IO. */
fedc_status fedc_store_run_get(fedc_store *st, fedc_store_run *run, fedc_err *err);
/* Marks the run finished. */
fedc_status fedc_store_run_finish(fedc_store *st, const char *model_sha256, fedc_err *err);

/* DIR/checkpoints/round-NNNNNNNN.safetensors into buf. */
void fedc_store_checkpoint_path(const fedc_store *st, uint32_t round, char *buf, size_t size);

/* One client's part in a round. */
typedef struct fedc_store_participant {
    uint32_t client;
    const char *status; /* "accepted", "refused", "late", "failed" */
    uint64_t num_examples;
    double train_loss;
    double fit_seconds;
    uint64_t bytes_up;
    const char *detail; /* why refused (may be NULL) */
} fedc_store_participant;

/* A committed round. */
typedef struct fedc_store_round {
    fedc_round_record rec;
    uint32_t attempt;
    char model_sha256[65];
    char checkpoint[4096]; /* file name inside DIR/checkpoints ("" when not kept) */
    int64_t committed;     /* unix seconds */
} fedc_store_round;

/* Commits a round in one transaction: its row, its metrics, its participants. Call only after
 * the round's checkpoint (r->checkpoint) is durable. Errors: FEDC_ERR_IO, FEDC_ERR_STATE (the
 * round is not last_round + 1). */
fedc_status fedc_store_commit_round(fedc_store *st, const fedc_store_round *r,
                                    const fedc_store_participant *p, size_t np, fedc_err *err);
/* Calls fn for every committed round in order (r valid during the call only); fn returns
 * non-zero to stop. */
typedef int (*fedc_store_round_fn)(void *user, const fedc_store_round *r);
fedc_status fedc_store_rounds(fedc_store *st, fedc_store_round_fn fn, void *user, fedc_err *err);
/* The participants of a committed round: fn per row. */
typedef int (*fedc_store_part_fn)(void *user, const fedc_store_participant *p);
fedc_status fedc_store_participants(fedc_store *st, uint32_t round, fedc_store_part_fn fn,
                                    void *user, fedc_err *err);
/* Deletes checkpoint files of committed rounds older than the newest `keep` (0: keep all). */
fedc_status fedc_store_prune_checkpoints(fedc_store *st, uint32_t keep, fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
