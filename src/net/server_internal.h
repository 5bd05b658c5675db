/*
 * The federation server's shared state, between the round driver (server.c: the thread in
 * fedc_server_run) and the HTTP handlers (server_http.c: libmicrohttpd's worker threads).
 * Everything marked "lock" is read and written under s->lock only.
 */
#ifndef FEDC_NET_SERVER_INTERNAL_H
#define FEDC_NET_SERVER_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "fedc/server.h"
#include "fedc/store.h"
#include "net/sign.h"
#include "net/wire.h"

enum { PHASE_IDLE = 0, PHASE_FIT = 1, PHASE_DONE = 2 };

/* Early folds (fedc_server.fold_early): stripe locks over the sums, each FEDCI_FOLD_GROUP
 * floats (8 accumulator blocks) under lock (group index % FEDCI_FOLD_STRIPES). */
#define FEDCI_FOLD_STRIPES 64
#define FEDCI_FOLD_GROUP 8192

/* The state of a selected client's task in the open round. */
enum {
    TASK_SELECTED = 0, /* selected, not yet handed out */
    TASK_ISSUED = 1,   /* handed out (check-in answered with it) */
    TASK_ACCEPTED = 2, /* its result is in the aggregate */
    TASK_REFUSED = 3   /* its last result was refused (it may send another) */
};

/* A cached session key (sign.h: fedci_session_server) of the client with a given id. */
typedef struct fedci_session_slot {
    uint8_t pk[FEDC_KEY_PUBLIC_BYTES]; /* the key it was derived for */
    uint8_t key[FEDCI_SESSION_BYTES];
    uint8_t ok;
} fedci_session_slot;

typedef struct allow_entry {
    uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
    uint32_t id;
} allow_entry;

/* A served model version: its download stream as one immutable libmicrohttpd response. */
typedef struct model_blob {
    uint64_t version;
    char sha256[65];
    char etag[70];
    uint64_t size;
    uint64_t num_params;
    struct MHD_Response *resp; /* one reference held by the server */
} model_blob;

/* Delta downloads: A-IM / IM instance-manipulation name (RFC 3229) and the ModelHeader
 * encoding of an exact delta. */
#define FEDCI_XDELTA_IM "fedc-xdelta"
#define FEDCI_XDELTA_ENCODING "xdelta"

/* Delta downloads: a model version clients may hold, and a delta response from it. */
typedef struct delta_base {
    uint64_t version;
    char sha256[65];
    float *model; /* num_params floats: what clients decoded */
} delta_base;
typedef struct delta_resp {
    uint64_t base_version;
    char base_etag[70];        /* the base's ETag, matched against If-None-Match */
    uint64_t size;             /* body bytes */
    struct MHD_Response *resp; /* one reference held by the server */
} delta_resp;

/* Replay protection: nonces seen within the clock-skew window. */
typedef struct nonce_entry {
    uint8_t key[24]; /* nonce (16) + first 8 bytes of the public key */
    uint64_t expires_ms;
} nonce_entry;

typedef struct nonce_cache {
    pthread_mutex_t lock;
    nonce_entry *slots;
    size_t cap, used, max;
} nonce_cache;

typedef struct part_info {
    uint8_t state;
    uint8_t submitting; /* its result is being folded (outside the lock) */
    char status[12]; /* for the store: accepted, refused, late, dropped */
    uint64_t num_examples;
    double train_loss, fit_seconds;
    uint64_t bytes_up;
    char detail[96];
} part_info;

struct req;

/* Counters for GET /metrics. */
#define FEDCI_HTTP_CODES 11
#define FEDCI_AUTH_REASONS 7
typedef struct server_stats {
    atomic_ullong http[FEDCI_HTTP_CODES];        /* by status code (server_http.c's table) */
    atomic_ullong auth_fail[FEDCI_AUTH_REASONS]; /* by reason (server_http.c's table) */
    atomic_ullong results_accepted, results_refused, results_late;
    atomic_ullong bytes_in, bytes_out;
    atomic_ullong rounds_aborted;
    atomic_uint uploads_active;
    /* early folds: results folded chunk by chunk as they arrived and accepted that way, and
     * results whose folded chunks were taken out again (refused, late, or cut off) */
    atomic_ullong folds_early, folds_undone;
} server_stats;

struct fedc_server {
    const fedc_config *cfg;
    const fedc_trainer *trainer;
    void *worker; /* the trainer's worker state for central evaluation */
    int worker_ready;
    fedc_engine *engine;
    fedc_store *store;
    fedc_server_opts opts;
    struct MHD_Daemon *mhd;
    uint16_t port;
    /* the listening socket, accepted on by our own thread (server_http.c: libmicrohttpd's own
     * accept loop hands a burst of new connections to one worker thread) */
    int listen_fd, accept_wake[2];
    pthread_t acceptor;
    int acceptor_running;
    char *cert_pem, *key_pem;

    /* limits and policy (from cfg) */
    size_t max_message;
    uint32_t chunk_bytes;
    uint64_t max_upload;
    uint32_t max_uploads;
    double long_poll, retry_after, clock_skew, deadline, linger, retry_delay, max_norm;
    uint32_t target, select, min_clients, rounds;
    size_t num_params;
    uint64_t start_ms; /* requests signed before this are refused (replays across restarts) */
    char run_id[33];
    uint32_t resumed_round;

    /* the settings sent to clients ("train.lr" = "0.05", ...) */
    size_t nsettings;
    char **setting_keys, **setting_values;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when a result is accepted */

    /* lock: allow-list, sorted by public key */
    allow_entry *allow;
    size_t nallow;
    uint64_t *last_seen_ms; /* per id (nallow_cap entries) */
    size_t nseen_cap;

    /* lock: the served model */
    model_blob model;

    /* lock: the round */
    int phase;
    uint32_t round, attempt;
    uint32_t *selected; /* sorted ids */
    size_t nselected;
    part_info *parts; /* per position in selected */
    uint32_t accepted, refused;
    uint32_t submitting; /* results being folded now (server_http.c); the round closes after */
    double round_t0, round_deadline; /* monotonic seconds */
    uint64_t deadline_wall_ms;
    double prox_mu, lr;
    int want_loss_before;

    /* lock: suspended check-ins */
    struct req *waiters;
    size_t nwaiters;

    /* pool_lock: update buffers for uploads, and the uploads waiting for one (suspended) */
    pthread_mutex_t pool_lock;
    float **free_bufs;
    size_t nfree, nbufs;
    struct req *upq_head, *upq_tail;

    /* lock: the end of the run */
    uint32_t final_rounds;
    char final_sha[65];

    nonce_cache nonces;
    /* compression (docs/COMPRESSION.md): canonical codec specs ("" = float32), error feedback
     * on the clients, and the round's wire bytes (accepted results, model downloads) */
    char up_codec[128], down_codec[128];
    int up_ef;
    atomic_ullong round_bytes_up, round_bytes_down;
    /* exact delta downloads (compress.download_delta; server_http.c): the last delta_keep
     * (0: off) models as clients hold them, oldest first (publisher only); under lock, the
     * delta responses from each of them to the served version; what the round's downloads
     * would have cost as full models */
    size_t delta_keep, nbases, ndeltas;
    struct delta_base *bases;
    struct delta_resp *deltas;
    atomic_ullong round_bytes_down_full;
    /* session MACs (docs/PROTOCOL.md, "Signing"): this run's X25519 key pair; kx_sk points to
     * sodium_malloc memory */
    uint8_t kx_pk[FEDCI_KX_BYTES];
    uint8_t *kx_sk;
    /* session keys (sign.h) per client id, computed at a client's first MAC-mode request:
     * sodium_malloc memory, nsession_cap entries; lock */
    struct fedci_session_slot *sessions;
    size_t nsession_cap;
    /* early folds (server.fold_early; server_http.c): float32 results folded into the
     * strategy's exact sums (fold_acc) chunk by chunk as they arrive, while in cache; a result
     * that is then refused, or still arriving when its round closes, is taken out again
     * exactly. fold_lock guards the fold state (fold_open/round/attempt, the folding list,
     * each result's fold fields), held briefly; the sums are guarded by stripe locks, one per
     * FEDCI_FOLD_GROUP floats (modulo FEDCI_FOLD_STRIPES), so that uploads fold different
     * parts of the vector at once and no lock is held over a long fold; a whole-vector fold
     * (a result submitted without its early fold) holds them all, while a result folded early
     * is only recorded (the trailer, under the engine's lock). Lock order: s->lock,
     * fold_lock, the stripes in ascending order, the engine's. */
    int fold_early;
    pthread_mutex_t fold_lock;
    pthread_cond_t fold_cond; /* a result's piece was folded (fold_busy cleared) */
    pthread_mutex_t fold_stripes[FEDCI_FOLD_STRIPES];
    struct fedc_accum *fold_acc;
    uint64_t fold_max_weight;
    int fold_open;
    uint32_t fold_round, fold_attempt;
    struct req *folding;
    server_stats stats;
    volatile sig_atomic_t stop;
    /* SecAgg+ rounds (server_secagg.c); NULL when secagg.enabled is false. Its round state is
     * read and written under s->lock. */
    struct fedci_secagg *secagg;
};

/* server_http.c */
fedc_status fedci_server_http_start(fedc_server *s, fedc_err *err);
void fedci_server_http_stop(fedc_server *s);
/* Resumes suspended check-ins: all of them (all = 1) or those whose wait is over. Lock held. */
void fedci_server_wake(fedc_server *s, int all);
/* Builds the download response of the engine's current global model as `version` (sha: its
 * SHA-256 hex, or NULL to compute it). Lock NOT held (the encoding takes time); it takes the
 * lock to swap. */
fedc_status fedci_server_publish_model(fedc_server *s, uint64_t version, const char *sha,
                                       fedc_err *err);
void fedci_nonce_cache_init(nonce_cache *c, size_t max);
void fedci_nonce_cache_fini(nonce_cache *c);
/* 0: recorded (first sight); 1: replay; -1: cache full. */
int fedci_nonce_check(nonce_cache *c, const uint8_t pk[32], const uint8_t nonce[16],
                      uint64_t now_ms, uint64_t expires_ms);
/* Task ids: "<run id 8>-<round>-<attempt>-<client>". */
void fedci_task_id(const fedc_server *s, uint32_t round, uint32_t attempt, uint32_t client,
                   char *buf, size_t size);
int fedci_task_id_parse(const fedc_server *s, const char *id, uint32_t *round, uint32_t *attempt,
                        uint32_t *client);
/* Early folds: the round the driver just opened (its sums zeroed by the engine) takes early
 * folds; closing takes out the folded chunks of every result still arriving and takes no more
 * (before fedc_engine_round_end, once no result is being submitted). s->lock held. */
void fedci_server_fold_open(fedc_server *s, uint32_t round, uint32_t attempt);
void fedci_server_fold_close(fedc_server *s);
/* Sorts the allow-list for lookups by key (lock held, or before the HTTP side starts). */
void fedci_server_sort_allow(fedc_server *s);
/* Position of client in the open round's selection, or -1. Lock held. */
long fedci_server_selected_pos(const fedc_server *s, uint32_t client);

/* ---- server_secagg.c: SecAgg+ rounds over HTTP (docs/SECAGG.md, "Deployment") ----
 * The secagg id of a selected client is its position in s->selected. */
/* At creation, after the engine: s->secagg stays NULL unless secagg.enabled; refuses what
 * cannot run under secure aggregation (fedci_secagg_conf_init). Errors: FEDC_ERR_CONFIG,
 * FEDC_ERR_CRYPTO, FEDC_ERR_NOMEM. */
fedc_status fedci_secagg_create(fedc_server *s, fedc_err *err);
void fedci_secagg_destroy(fedc_server *s);
/* Round driver, lock held, once the selection is in s->selected: starts the protocol (a fresh
 * public seed, the keys table). On failure the round runs without it and aborts. */
void fedci_secagg_open(fedc_server *s);
/* Round driver, lock held, every tick: closes the stage being collected when every live
 * client answered or its deadline passed. 1 when the protocol is over (done or aborted). */
int fedci_secagg_tick(fedc_server *s);
/* Round driver, lock NOT held, after the wait: hands the unmasked sum to the engine (or
 * nothing, when the protocol aborted: the round then misses its quorum), records each
 * participant's outcome, wipes the round's secrets. Errors (fatal): FEDC_ERR_NOMEM. */
fedc_status fedci_secagg_finish(fedc_server *s, fedc_err *err);
/* After fedc_engine_round_end: the record's participants are the protocol's survivors. */
void fedci_secagg_record(const fedc_server *s, fedc_round_record *rec);
/* Check-in, lock held: fills t for the selected client at pos (pointers into server memory,
 * valid while the lock is held). 0 when the client cannot take part any more (it missed the
 * first stage, or the protocol is over). */
int fedci_secagg_task(fedc_server *s, long pos, Fedc__V1__SecAggTask *t);
/* POST /v1/tasks/{task_id}/secagg from authenticated `client`: the HTTP status (200 = taken)
 * and, otherwise, a short reason for the wire in why. Lock NOT held. */
unsigned fedci_secagg_post(fedc_server *s, int client, const char *task_id, const uint8_t *body,
                           size_t len, char *why, size_t why_size);
/* GET /v1/tasks/{task_id}/secagg: 200 with a packed SecAggMessage in out, or a refusal. */
unsigned fedci_secagg_get(fedc_server *s, int client, const char *task_id, fedci_buf *out,
                          char *why, size_t why_size);

#endif
