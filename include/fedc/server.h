/*
 * The federation server: the HTTP transport under the round engine (DESIGN.md rule 2;
 * docs/PROTOCOL.md, docs/DEPLOY.md). It drives fedc_engine exactly as the simulation does --
 * round_begin, hand the tasks out, submit results as they arrive, round_end, evaluate -- with
 * clients that are real processes reaching it over HTTP(S):
 *
 *   - libmicrohttpd with its internal thread pool and epoll; check-ins long-poll by suspending
 *     their connection (no thread is held); TLS through GnuTLS when a certificate is given.
 *   - Every request but GET /v1/status and GET /metrics is signed with an allow-listed Ed25519
 *     key; stale timestamps and replayed nonces are refused (terse 401 on the wire, the detail
 *     in the log).
 *   - Round policy ([round] keys): over-selection, a reporting deadline, the quorum
 *     clients.min; a round that misses its quorum is re-run with a fresh cohort; late results
 *     are refused (409).
 *   - Every result is validated (task, round, size, NaN/Inf, round.max_norm) before it reaches
 *     the aggregate; at most server.max_uploads results are received at once, each into one
 *     update buffer: memory is a few models plus a bounded cost per client.
 *   - The run store (fedc/store.h) in the state directory: a round is committed after its
 *     checkpoint is durable; a restart on the same directory resumes from the last committed
 *     round. The final model is written to DIR/model.safetensors.
 *
 * Client ids: each allow-listed key's id (the order it was allowed) is the client id the
 * engine selects, so a federation of N clients holding shards 0..N-1 matches `fedc sim`.
 * Not in client-only builds.
 */
#ifndef FEDC_SERVER_H
#define FEDC_SERVER_H

#include <stdint.h>

#include "fedc/config.h"
#include "fedc/engine.h"
#include "fedc/status.h"
#include "fedc/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_server fedc_server;

/* Called after each committed round from fedc_server_run's thread. */
typedef void (*fedc_server_round_fn)(void *user, const fedc_round_record *rec, uint32_t attempt,
                                     const char *model_sha256);

typedef struct fedc_server_opts {
    const char *listen;            /* "HOST:PORT" ("[::1]:PORT" for IPv6); port 0 = any free port */
    const char *state_dir;         /* the run store's directory (created when missing) */
    const char *tls_cert;          /* PEM certificate chain file, or NULL for plain HTTP */
    const char *tls_key;           /* PEM private key file (with tls_cert) */
    const char *allow_file;        /* public keys to add to the allow-list at start (may be NULL) */
    int serve_on;                  /* after the run: keep serving until fedc_server_stop */
    fedc_server_round_fn on_round; /* may be NULL */
    void *user;
} fedc_server_opts;

/*
 * Opens the store (resuming its run, or starting one: a directory holding a run of another
 * configuration is refused), creates the engine from cfg and trainer (trainer: the model's
 * layout and initial parameters, and the central test set for evaluation), restores the last
 * committed checkpoint (verified against its model_sha256), and starts listening. cfg, trainer
 * and the strings in opts must outlive the server.
 * Errors: FEDC_ERR_CONFIG (bad listen address, TLS files, a setting the HTTP transport cannot
 * run yet such as SCAFFOLD's control variates), FEDC_ERR_STATE, FEDC_ERR_IO, FEDC_ERR_NETWORK
 * (cannot listen), FEDC_ERR_FORMAT (a corrupt checkpoint), FEDC_ERR_NOMEM, the engine's.
 */
fedc_status fedc_server_create(const fedc_config *cfg, const fedc_trainer *trainer,
                               const fedc_server_opts *opts, fedc_server **out, fedc_err *err);
void fedc_server_destroy(fedc_server *s); /* stops listening; NULL allowed */

/* The TCP port the server listens on (useful with port 0). */
uint16_t fedc_server_port(const fedc_server *s);
/* The run's id (32 hex digits) and the last committed round at creation (0: a new run). */
const char *fedc_server_run_id(const fedc_server *s);
uint32_t fedc_server_resumed_round(const fedc_server *s);
/* The engine (its global model is the final one after fedc_server_run). */
const fedc_engine *fedc_server_engine(const fedc_server *s);

/* Runs the remaining rounds, writes DIR/model.safetensors, answers 'done' to clients for
 * server.linger seconds (or until fedc_server_stop with serve_on), and returns FEDC_OK.
 * fedc_server_stop before the end: FEDC_ERR_ABORTED (committed rounds are kept: a restart
 * resumes). Errors: FEDC_ERR_IO (store, checkpoint), the engine's. */
fedc_status fedc_server_run(fedc_server *s, fedc_err *err);

/* Asks fedc_server_run to return soon. Async-signal-safe and thread-safe. */
void fedc_server_stop(fedc_server *s);

#ifdef __cplusplus
}
#endif
#endif
