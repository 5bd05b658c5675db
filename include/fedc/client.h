/*
 * The federation client (docs/PROTOCOL.md, docs/DEPLOY.md): any C program becomes a member of
 * a real federation by giving a fedc_trainer (fedc/trainer.h) to fedc_client_run, which checks
 * in with the server (long poll), downloads the global model of each task (cached by version,
 * ETag), runs the trainer's fit, and uploads the update -- every request signed with the
 * client's Ed25519 key (fedc/net.h), over HTTPS verified against a CA file.
 *
 * Failures are expected: connection errors, timeouts and 5xx answers are retried with
 * exponential back-off and jitter ([client] keys), so a client rides through a server restart
 * with the same key. The client id (its place in the server's allow-list) is learnt from the
 * server: the built-in trainer trains the data shard of that id.
 *
 * Built in client-only configurations (libcurl; no server dependencies). Thread safety: a
 * fedc_client is used by one thread; fedc_client_stop may be called from any thread or a
 * signal handler.
 */
#ifndef FEDC_CLIENT_H
#define FEDC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/net.h"
#include "fedc/status.h"
#include "fedc/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_client fedc_client;

/* What happened, for progress displays (fedc_client_opts.on_event). */
typedef enum fedc_client_event_kind {
    FEDC_CLIENT_CONNECTED = 0, /* the server answered (after start or after failures) */
    FEDC_CLIENT_TASK = 1,      /* a task arrived: round, attempt */
    FEDC_CLIENT_TRAINED = 2,   /* local training finished: seconds, loss */
    FEDC_CLIENT_ACCEPTED = 3,  /* the server accepted the result */
    FEDC_CLIENT_REFUSED = 4,   /* the server refused the result: http_status, message */
    FEDC_CLIENT_RETRY = 5,     /* a request failed; retrying in `seconds`: message */
    FEDC_CLIENT_DONE = 6       /* the run is over: round = its rounds, model_sha256 */
} fedc_client_event_kind;

typedef struct fedc_client_event {
    fedc_client_event_kind kind;
    uint32_t round, attempt;
    int http_status;
    double seconds;
    double loss;
    const char *message;      /* may be NULL */
    const char *model_sha256; /* DONE */
} fedc_client_event;

typedef void (*fedc_client_event_fn)(void *user, const fedc_client_event *ev);

typedef struct fedc_client_opts {
    const char *server;            /* base URL: "https://host:port" */
    const fedc_key *key;           /* the client's identity; must outlive the client */
    const char *ca_file;           /* PEM CA bundle to verify the server; NULL: the system's */
    int insecure;                  /* do not verify the server's certificate (loopback tests) */
    const fedc_config *cfg;        /* [client] keys (timeouts, back-off); NULL: the defaults */
    fedc_client_event_fn on_event; /* may be NULL; called from the fedc_client_run thread */
    void *user;
    uint32_t max_tasks; /* fedc_client_run returns after this many tasks (0: until the
                                  run is done), e.g. a device that trains once per wake-up */
} fedc_client_opts;

/* Creates a client; makes no request yet. Errors: FEDC_ERR_INVALID (no URL or key, a URL that
 * is not http(s)://), FEDC_ERR_NETWORK (libcurl could not initialise), FEDC_ERR_NOMEM. */
fedc_status fedc_client_create(const fedc_client_opts *opts, fedc_client **out, fedc_err *err);
void fedc_client_destroy(fedc_client *c); /* NULL allowed */

/* What the server says about its run (GET /v1/run). */
typedef struct fedc_client_run_info {
    char run_id[33];
    uint32_t client_id; /* this client's id: its data shard */
    uint32_t rounds;    /* rounds in the run */
    uint32_t round;     /* last completed round */
    uint64_t num_params;
    char strategy[32];
} fedc_client_run_info;

/* Asks the server for its run, retrying network failures with back-off (until
 * client.give_up, or fedc_client_stop). The settings the server sends (training keys: train.*,
 * model.*, dp.*, attack.*, run.seed, clients.count) are kept on the client for
 * fedc_client_apply_settings, and so is the session key derived from the server's run key
 * (request bodies are then MACed instead of hashed: docs/PROTOCOL.md, "Session mode").
 * Errors: FEDC_ERR_AUTH (the key is not allowed), FEDC_ERR_NETWORK,
 * FEDC_ERR_TIMEOUT (gave up), FEDC_ERR_ABORTED (stopped), FEDC_ERR_FORMAT (a bad answer). */
fedc_status fedc_client_hello(fedc_client *c, fedc_client_run_info *info, fedc_err *err);

/* Sets the server's settings (from the last hello or task) in cfg, which should be the
 * client's own configuration (data location and partition stay the client's). Errors:
 * FEDC_ERR_CONFIG (a key or value this fedc does not accept, naming it). */
fedc_status fedc_client_apply_settings(const fedc_client *c, fedc_config *cfg, fedc_err *err);

/* What a run gave. */
typedef struct fedc_client_summary {
    uint32_t tasks;        /* tasks trained */
    uint32_t accepted;     /* results the server accepted */
    uint32_t rounds;       /* rounds of the finished run */
    char model_sha256[65]; /* the final model's hash */
} fedc_client_summary;

/*
 * Takes part in the run until the server says it is done (or after opts.max_tasks tasks):
 * check in, download the task's
 * model, trainer->fit (one worker state, allocated here), upload the update. cfg is passed to
 * the trainer in fit_ins.config. The model's layout must equal the trainer's (checked on every
 * download, with the model's SHA-256). summary may be NULL.
 * Errors: FEDC_ERR_ABORTED (fedc_client_stop), FEDC_ERR_TIMEOUT (no contact with the server
 * for client.give_up seconds), FEDC_ERR_SHAPE (the server's model does not fit the trainer),
 * FEDC_ERR_NOMEM, the trainer's fatal errors (FEDC_ERR_NOMEM, FEDC_ERR_INTERNAL). A fit that
 * fails otherwise is logged and the client checks in again.
 */
fedc_status fedc_client_run(fedc_client *c, const fedc_trainer *trainer, const fedc_config *cfg,
                            fedc_client_summary *summary, fedc_err *err);

/* Downloads model `version` (the current one: fedc_client_run_info.round) into params
 * (num_params floats) and its SHA-256 hex into sha (may be NULL). Retries like hello. With
 * compress.download on the server, params is the decoded model (what clients train from). */
fedc_status fedc_client_download(fedc_client *c, uint64_t version, float *params, size_t num_params,
                                 char sha[65], fedc_err *err);

/* Asks fedc_client_run / fedc_client_hello to return (FEDC_ERR_ABORTED) at the next
 * opportunity. Async-signal-safe. */
void fedc_client_stop(fedc_client *c);

#ifdef __cplusplus
}
#endif
#endif
