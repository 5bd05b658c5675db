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

/* The state of a selected client's task in the open round. */
enum {
    TASK_SELECTED = 0, /* selected, not yet handed out */
    TASK_ISSUED = 1,   /* handed out (check-in answered with it) */
    TASK_ACCEPTED = 2, /* its result is in the aggregate */
    TASK_REFUSED = 3   /* its last result was refused (it may send another) */
};

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
    char status[12]; /* for the store: accepted, refused, late, dropped */
    uint64_t num_examples;
    double train_loss, fit_seconds;
    uint64_t bytes_up;
    char detail[96];
} part_info;

struct req;

/* Counters for GET /metrics. */
#define FEDCI_HTTP_CODES 10
#define FEDCI_AUTH_REASONS 7
typedef struct server_stats {
    atomic_ullong http[FEDCI_HTTP_CODES];        /* by status code (server_http.c's table) */
    atomic_ullong auth_fail[FEDCI_AUTH_REASONS]; /* by reason (server_http.c's table) */
    atomic_ullong results_accepted, results_refused, results_late;
    atomic_ullong bytes_in, bytes_out;
    atomic_ullong rounds_aborted;
    atomic_uint uploads_active;
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
    server_stats stats;
    volatile sig_atomic_t stop;
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
/* Sorts the allow-list for lookups by key (lock held, or before the HTTP side starts). */
void fedci_server_sort_allow(fedc_server *s);
/* Position of client in the open round's selection, or -1. Lock held. */
long fedci_server_selected_pos(const fedc_server *s, uint32_t client);

#endif
