/*
 * The federation server's HTTP side: libmicrohttpd (internal thread pool, epoll, suspend and
 * resume for long polls, GnuTLS), request authentication, and the endpoints of
 * docs/PROTOCOL.md:
 *
 *   POST /v1/checkin                 CheckinRequest -> CheckinResponse (long poll)
 *   GET  /v1/run                     RunInfo
 *   GET  /v1/models/{version}        model stream (immutable; ETag = model sha256; 304; 226
 *                                    with an exact delta: A-IM fedc-xdelta + If-None-Match)
 *   POST /v1/tasks/{task_id}/result  result stream -> ResultAck
 *   GET  /v1/status                  JSON (no authentication)
 *   GET  /metrics                    Prometheus text (no authentication)
 *
 * Locks: s->lock guards the round and the waiters (and is held when calling
 * MHD_suspend_connection / MHD_resume_connection, so that a wake-up cannot overtake a
 * suspension); the request-completed callback never takes it. Update buffers have their own
 * pool lock; early folds (results folded into the round's sums as their chunks arrive) have
 * fold_lock and the stripe locks of the sums (server_internal.h gives the order).
 *
 * Connections are accepted by a thread of ours and handed to libmicrohttpd's workers
 * (accept_main), so that a burst of clients is spread over the worker threads.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/log.h"
#include "fedc/rng.h"
#include "fl/strategy_internal.h"
#include "net/server_internal.h"

enum route { R_NONE = 0, R_CHECKIN, R_RUN, R_MODEL, R_RESULT, R_STATUS, R_METRICS,
             R_SECAGG_POST, R_SECAGG_GET };

enum auth_reason {
    AUTH_UNSIGNED = 0,
    AUTH_MALFORMED,
    AUTH_UNKNOWN_KEY,
    AUTH_STALE,
    AUTH_BAD_SIGNATURE,
    AUTH_REPLAY,
    AUTH_BODY_MISMATCH,
    AUTH_REASONS_
};
static const char *const auth_reason_name[AUTH_REASONS_] = {
    "unsigned", "malformed", "unknown_key", "stale", "bad_signature", "replay", "body_mismatch"};

static const unsigned http_codes[] = {200, 226, 304, 400, 401, 404, 409, 413, 422, 503, 0};
#define N_HTTP_CODES (sizeof http_codes / sizeof http_codes[0])
_Static_assert(N_HTTP_CODES == FEDCI_HTTP_CODES, "one counter per status code");
_Static_assert(AUTH_REASONS_ == FEDCI_AUTH_REASONS, "one counter per refusal reason");

typedef struct req {
    fedc_server *s;
    struct MHD_Connection *conn;
    enum route route;
    int responded;
    int client; /* id of the signing key, -1 before authentication */
    fedci_auth auth;
    fedci_hash_state hash; /* hash mode */
    fedci_mac_state mac;   /* session mode */
    uint64_t body_len, body_limit;
    fedci_buf body;
    /* an error found while the body streams in: answered when it has ended */
    unsigned fail_code;
    char fail_msg[48];
    /* result upload */
    uint32_t t_round, t_attempt;
    char task_id[80];
    fedci_vstream vs;
    int vs_ready;
    float *buf;
    uint8_t *enc; /* an encoded result's codec message (ResultHeader.encoding) */
    uint64_t enc_len;
    /* early fold (fedc_server.fold_early): FOLD_NONE until the first whole block arrives, then
     * FOLD_ON (in s->folding: floats [0, folded) are in the sums with weight fold_w) or
     * FOLD_OFF (none are: not eligible, failed, taken out) -- under s->fold_lock */
    int fold;
    uint64_t folded;
    double fold_w, fold_mx;
    struct req *fprev, *fnext;
    /* ... and, read and written by the connection's thread only: floats offered to the fold
     * so far, the fold ended (taken out or refused), every float was folded (so checked
     * finite: the stream's own NaN/Inf scan is off meanwhile) */
    uint64_t fold_offered;
    int fold_ended, fold_verified;
    int fold_busy; /* fold_lock: a piece is being folded outside fold_lock (its folded stays) */
    int wait_buf;      /* queued for an update buffer */
    int buf_suspended; /* ... and its connection is suspended (pool_lock) */
    struct req *qnext;
    /* model download */
    uint64_t version;
    /* long poll */
    int parsed, waiting, woken;
    uint32_t wait_ms;
    double wake_at;
    struct req *prev, *next;
} req;

/* ---- small helpers ---- */

static void count_http(fedc_server *s, unsigned code)
{
    size_t i = 0;
    while (http_codes[i] && http_codes[i] != code) i++;
    atomic_fetch_add(&s->stats.http[i], 1);
}

static enum MHD_Result respond(req *r, unsigned code, const char *ctype, const void *data,
                               size_t len, const char *etag, unsigned retry_after_ms)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (etag) MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    if (retry_after_ms) {
        char ra[24];
        snprintf(ra, sizeof ra, "%u", (retry_after_ms + 999) / 1000);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result rc = MHD_queue_response(r->conn, code, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    count_http(r->s, code);
    atomic_fetch_add(&r->s->stats.bytes_out, len);
    return rc;
}

/* An error answer: an Error message with a short reason. */
static enum MHD_Result respond_error(req *r, unsigned code, const char *msg, unsigned retry_ms)
{
    Fedc__V1__Error e = FEDC__V1__ERROR__INIT;
    e.message = (char *)msg;
    e.retry_after_ms = retry_ms;
    uint8_t buf[256];
    size_t n = protobuf_c_message_get_packed_size(&e.base);
    if (n > sizeof buf)
        n = 0;
    else
        protobuf_c_message_pack(&e.base, buf);
    return respond(r, code, FEDCI_CT_MESSAGE, buf, n, NULL, retry_ms);
}

static enum MHD_Result respond_msg(req *r, const ProtobufCMessage *m)
{
    fedci_buf b = {0};
    fedc_err err;
    if (fedci_pack(m, &b, &err) != FEDC_OK) {
        fedci_buf_fini(&b);
        return respond_error(r, 503, "out of memory", 1000);
    }
    enum MHD_Result rc = respond(r, 200, FEDCI_CT_MESSAGE, b.data, b.len, NULL, 0);
    fedci_buf_fini(&b);
    return rc;
}

/* Authentication failures: terse on the wire, detailed in the log. */
static enum MHD_Result auth_fail(req *r, enum auth_reason why, const char *detail)
{
    atomic_fetch_add(&r->s->stats.auth_fail[why], 1);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[64] = "?";
    if (ci && ci->client_addr)
        getnameinfo(ci->client_addr,
                    ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                           : sizeof(struct sockaddr_in),
                    host, sizeof host, NULL, 0, NI_NUMERICHOST);
    fedc_log(FEDC_LOG_WARN, "server", "refused request from %s: %s: %s", host,
             auth_reason_name[why], detail);
    return respond_error(r, 401, "unauthorized", 0);
}

static void fail_later(req *r, unsigned code, const char *msg)
{
    if (r->fail_code) return;
    r->fail_code = code;
    snprintf(r->fail_msg, sizeof r->fail_msg, "%s", msg);
}

static unsigned status_http(fedc_status st)
{
    switch (st) {
    case FEDC_ERR_RANGE: return 413;
    case FEDC_ERR_SHAPE:
    case FEDC_ERR_NONFINITE:
    case FEDC_ERR_INVALID: return 422;
    case FEDC_ERR_STATE: return 409;
    case FEDC_ERR_NOMEM: return 503;
    default: return 400;
    }
}

static const char *status_reason(unsigned code)
{
    switch (code) {
    case 413: return "too large";
    case 422: return "invalid result";
    case 409: return "task is not open";
    case 503: return "busy";
    default: return "malformed request";
    }
}

/* ---- update buffers ---- */

/* A free buffer, or NULL after queueing r for the next one (pool_lock). */
static float *buf_take_or_queue(fedc_server *s, req *r)
{
    float *b = NULL;
    pthread_mutex_lock(&s->pool_lock);
    if (s->nfree > 0) {
        b = s->free_bufs[--s->nfree];
    } else if (s->nbufs < s->max_uploads) {
        b = fedc_malloc((s->num_params ? s->num_params : 1) * sizeof(float));
        if (b) s->nbufs++;
    }
    if (!b && r) {
        r->wait_buf = 1;
        r->qnext = NULL;
        if (s->upq_tail)
            s->upq_tail->qnext = r;
        else
            s->upq_head = r;
        s->upq_tail = r;
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (b) atomic_fetch_add(&s->stats.uploads_active, 1);
    return b;
}

/* Returns a buffer: to the first upload waiting for one (resumed), or to the pool. Never
 * called with a lock held that libmicrohttpd's callbacks take. */
static void buf_give(fedc_server *s, float *b)
{
    if (!b) return;
    req *next = NULL;
    int resume = 0;
    pthread_mutex_lock(&s->pool_lock);
    if (s->upq_head && !s->stop) {
        next = s->upq_head;
        s->upq_head = next->qnext;
        if (!s->upq_head) s->upq_tail = NULL;
        next->qnext = NULL;
        next->buf = b;
        resume = next->buf_suspended;
        next->buf_suspended = 0;
    } else {
        s->free_bufs[s->nfree++] = b;
    }
    struct MHD_Connection *conn = next ? next->conn : NULL;
    pthread_mutex_unlock(&s->pool_lock);
    if (!next) atomic_fetch_sub(&s->stats.uploads_active, 1);
    if (resume) MHD_resume_connection(conn);
}

/* Removes r from the upload queue if it is there (its connection ended). */
static void buf_unqueue(fedc_server *s, req *r)
{
    pthread_mutex_lock(&s->pool_lock);
    for (req **pp = &s->upq_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->qnext) {
        if (*pp != r) continue;
        *pp = r->qnext;
        if (s->upq_tail == r) s->upq_tail = prev;
        break;
    }
    r->wait_buf = 0;
    pthread_mutex_unlock(&s->pool_lock);
}

/* ---- early folds (fedc_server.fold_early) ---- */

enum { FOLD_NONE = 0, FOLD_ON = 1, FOLD_OFF = 2 };

_Static_assert(FEDCI_FOLD_GROUP % 1024 == 0, "a stripe covers whole accumulator blocks");

/* Folds (sign > 0) or unfolds floats [start, end) of x with weight w, group by group under
 * the groups' stripe locks (not held by the caller). A fold that fails leaves nothing of this
 * call's range in the sums. */
static fedc_status fold_range_striped(fedc_server *s, double w, size_t start, size_t end,
                                      const float *x, int sign, double *mx, fedc_err *err)
{
    for (size_t g = start; g < end;) {
        size_t stop = (g / FEDCI_FOLD_GROUP + 1) * FEDCI_FOLD_GROUP;
        if (stop > end) stop = end;
        pthread_mutex_t *m = &s->fold_stripes[(g / FEDCI_FOLD_GROUP) % FEDCI_FOLD_STRIPES];
        pthread_mutex_lock(m);
        fedc_status st = FEDC_OK;
        if (sign > 0)
            st = fedci_accum_fold_range(s->fold_acc, w, g, x + g, stop - g, mx, err);
        else
            fedci_accum_unfold_range(s->fold_acc, w, g, x + g, stop - g);
        pthread_mutex_unlock(m);
        if (st != FEDC_OK) {
            double unused = 0;
            fold_range_striped(s, w, start, g, x, -1, &unused, NULL);
            return st;
        }
        g = stop;
    }
    return FEDC_OK;
}

static void stripes_lock_all(fedc_server *s)
{
    for (int i = 0; i < FEDCI_FOLD_STRIPES; i++) pthread_mutex_lock(&s->fold_stripes[i]);
}

static void stripes_unlock_all(fedc_server *s)
{
    for (int i = FEDCI_FOLD_STRIPES - 1; i >= 0; i--) pthread_mutex_unlock(&s->fold_stripes[i]);
}

/* fold_lock held for these two. */
static void fold_unlink(fedc_server *s, req *r)
{
    if (r->fprev)
        r->fprev->fnext = r->fnext;
    else
        s->folding = r->fnext;
    if (r->fnext) r->fnext->fprev = r->fprev;
    r->fprev = r->fnext = NULL;
}

/* Takes r's folded chunks out of the sums (exactly: the same integer terms); r folds no more.
 * Not while r's thread folds a piece (fold_busy): the caller is that thread, or waited (and
 * then looks r up again: r may be gone by the time it wakes). */
static void fold_undo(fedc_server *s, req *r)
{
    assert(!r->fold_busy);
    if (r->fold == FOLD_ON) {
        fold_range_striped(s, r->fold_w, 0, (size_t)r->folded, r->buf, -1, NULL, NULL);
        fold_unlink(s, r);
        if (r->folded) atomic_fetch_add(&s->stats.folds_undone, 1);
        r->folded = 0;
    }
    r->fold = FOLD_OFF;
}

/* The result will not be submitted with its early fold (refused, late, connection gone): its
 * chunks leave the sums before its buffer does. */
static void fold_release(fedc_server *s, req *r)
{
    if (!s->fold_early || !r->buf) return;
    pthread_mutex_lock(&s->fold_lock);
    fold_undo(s, r);
    pthread_mutex_unlock(&s->fold_lock);
}

/* After a piece of a float32 result was copied into r->buf: folds the blocks it completed
 * (all that is left once the vector is whole) while they are still in cache. A block that
 * cannot be folded (NaN/Inf, a term out of the exact range) ends the early fold: what was
 * folded comes out again, and the result takes the ordinary path when it has arrived (which
 * refuses it with the usual message). */
static void fold_more(fedc_server *s, req *r)
{
    if (r->fold_ended || !r->vs.header || r->vs.unit != 4) return;
    size_t n = s->num_params, blk = fedci_accum_range_block();
    uint64_t have = r->vs.filled / 4;
    size_t end = have >= n ? n : (size_t)(have / blk * blk);
    if (end <= r->fold_offered) return;
    r->fold_offered = end;
    pthread_mutex_lock(&s->fold_lock);
    if (r->fold == FOLD_NONE) {
        const Fedc__V1__ResultHeader *h = (const Fedc__V1__ResultHeader *)r->vs.header;
        if (s->fold_open && r->t_round == s->fold_round && r->t_attempt == s->fold_attempt) {
            uint64_t ne = h->num_examples;
            r->fold_w = (double)(s->fold_max_weight && ne > s->fold_max_weight ? s->fold_max_weight
                                                                               : ne);
            r->fold_mx = 0;
            r->folded = 0;
            r->fold = FOLD_ON;
            r->fprev = NULL;
            r->fnext = s->folding;
            if (s->folding) s->folding->fprev = r;
            s->folding = r;
            r->vs.scan_finite = 0; /* the fold checks every float (NaN/Inf) */
        } else {
            r->fold = FOLD_OFF;
        }
    }
    /* its round is closing (fedci_server_fold_close): out of the sums now, rather than make
     * the close wait for piece after piece */
    if (r->fold == FOLD_ON && !s->fold_open) fold_undo(s, r);
    int on = r->fold == FOLD_ON;
    size_t start = (size_t)r->folded;
    double w = r->fold_w, mx = r->fold_mx;
    if (on) r->fold_busy = 1; /* r->folded and the state stay as they are meanwhile */
    pthread_mutex_unlock(&s->fold_lock);
    if (!on) {
        r->fold_ended = 1;
        if (!r->vs.scan_finite) fedci_vstream_scan_resume(&r->vs); /* the first NaN/Inf */
        return;
    }
    fedc_err err;
    fedc_status st = fold_range_striped(s, w, start, end, r->buf, +1, &mx, &err);
    pthread_mutex_lock(&s->fold_lock);
    r->fold_busy = 0;
    pthread_cond_broadcast(&s->fold_cond);
    if (st == FEDC_OK) {
        r->folded = end;
        r->fold_mx = mx;
    } else {
        fold_undo(s, r);
    }
    pthread_mutex_unlock(&s->fold_lock);
    if (st == FEDC_OK) {
        if (r->vs.scanned < (uint64_t)end * 4) r->vs.scanned = (uint64_t)end * 4;
        if (end == n) r->fold_verified = 1;
    } else {
        r->fold_ended = 1;
        fedci_vstream_scan_resume(&r->vs); /* the first NaN/Inf, if that was it */
    }
}

/* Which runs fold early: float32 results into a linear strategy's sums with the weight
 * precheck gives them (num_examples, capped), nothing that must see the whole update first. */
static int fold_eligible(const fedc_server *s)
{
    if (!fedc_config_bool(s->cfg, "server.fold_early") || s->secagg || s->up_codec[0] ||
        s->max_norm > 0 || fedc_engine_dp(s->engine))
        return 0;
    const fedc_strategy *st = fedc_engine_strategy(s->engine);
    return st && st->acc && st->ops->streaming && !st->ops->weigh && !st->ops->add_extra &&
           !st->ops->needs_control;
}

void fedci_server_fold_open(fedc_server *s, uint32_t round, uint32_t attempt)
{
    if (!s->fold_early) return;
    const fedc_strategy *st = fedc_engine_strategy(s->engine);
    pthread_mutex_lock(&s->fold_lock);
    assert(!s->folding);
    s->fold_acc = st->acc;
    s->fold_max_weight = st->max_weight;
    s->fold_round = round;
    s->fold_attempt = attempt;
    s->fold_open = 1;
    pthread_mutex_unlock(&s->fold_lock);
}

void fedci_server_fold_close(fedc_server *s)
{
    if (!s->fold_early) return;
    pthread_mutex_lock(&s->fold_lock);
    s->fold_open = 0;
    for (req *r; (r = s->folding) != NULL;) {
        if (r->fold_busy) { /* its thread is folding a piece; r may be gone when we wake */
            pthread_cond_wait(&s->fold_cond, &s->fold_lock);
            continue;
        }
        fold_undo(s, r);
    }
    pthread_mutex_unlock(&s->fold_lock);
}

/* Gives r's update buffer back, its early fold (if any) taken out first. */
static void result_buf_drop(fedc_server *s, req *r)
{
    fold_release(s, r);
    buf_give(s, r->buf);
    r->buf = NULL;
}

/* ---- nonce cache ---- */

void fedci_nonce_cache_init(nonce_cache *c, size_t max)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    c->max = max;
}

void fedci_nonce_cache_fini(nonce_cache *c)
{
    fedc_free(c->slots);
    pthread_mutex_destroy(&c->lock);
}

static size_t nonce_hash(const uint8_t key[24], size_t cap)
{
    uint64_t h;
    memcpy(&h, key, 8);
    return (size_t)((h * 0x9E3779B97F4A7C15ull) >> 7) & (cap - 1);
}

/* Rebuilds the table with room for twice the live entries (expired ones dropped). */
static int nonce_rehash(nonce_cache *c, uint64_t now_ms)
{
    size_t live = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].expires_ms > now_ms) live++;
    size_t cap = 1024;
    while (cap < 4 * (live + 1)) cap *= 2;
    if (live >= c->max) return -1;
    nonce_entry *n = fedc_calloc(cap, sizeof *n);
    if (!n) return -1;
    for (size_t i = 0; i < c->cap; i++) {
        if (c->slots[i].expires_ms <= now_ms) continue;
        size_t h = nonce_hash(c->slots[i].key, cap);
        while (n[h].expires_ms) h = (h + 1) & (cap - 1);
        n[h] = c->slots[i];
    }
    fedc_free(c->slots);
    c->slots = n;
    c->cap = cap;
    c->used = live;
    return 0;
}

int fedci_nonce_check(nonce_cache *c, const uint8_t pk[32], const uint8_t nonce[16],
                      uint64_t now_ms, uint64_t expires_ms)
{
    uint8_t key[24];
    memcpy(key, nonce, 16);
    memcpy(key + 16, pk, 8);
    pthread_mutex_lock(&c->lock);
    int rc = 0;
    if ((c->used + 1) * 2 > c->cap && nonce_rehash(c, now_ms) != 0) {
        rc = -1;
    } else {
        size_t h = nonce_hash(key, c->cap);
        /* expired entries stay as tombstones until the next rehash (they keep chains intact) */
        while (c->slots[h].expires_ms) {
            if (memcmp(c->slots[h].key, key, sizeof key) == 0 && c->slots[h].expires_ms > now_ms) {
                rc = 1;
                break;
            }
            h = (h + 1) & (c->cap - 1);
        }
        if (rc == 0) {
            memcpy(c->slots[h].key, key, sizeof key);
            c->slots[h].expires_ms = expires_ms;
            c->used++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* ---- ids ---- */

void fedci_task_id(const fedc_server *s, uint32_t round, uint32_t attempt, uint32_t client,
                   char *buf, size_t size)
{
    snprintf(buf, size, "%.8s-%u-%u-%u", s->run_id, round, attempt, client);
}

int fedci_task_id_parse(const fedc_server *s, const char *id, uint32_t *round, uint32_t *attempt,
                        uint32_t *client)
{
    if (strlen(id) > 64 || strncmp(id, s->run_id, 8) != 0 || id[8] != '-') return -1;
    uint64_t v[3];
    const char *p = id + 9;
    for (int i = 0; i < 3; i++) {
        char num[24];
        size_t n = 0;
        while (p[n] >= '0' && p[n] <= '9' && n < 20) n++;
        if (n == 0 || n > 10 || (i < 2 && p[n] != '-') || (i == 2 && p[n] != '\0')) return -1;
        memcpy(num, p, n);
        num[n] = '\0';
        if (fedci_parse_u64(num, &v[i]) != 0 || v[i] > UINT32_MAX) return -1;
        p += n + 1;
    }
    *round = (uint32_t)v[0];
    *attempt = (uint32_t)v[1];
    *client = (uint32_t)v[2];
    return 0;
}

long fedci_server_selected_pos(const fedc_server *s, uint32_t client)
{
    size_t lo = 0, hi = s->nselected;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->selected[mid] < client)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->nselected && s->selected[lo] == client ? (long)lo : -1;
}

static int allow_cmp(const void *a, const void *b) { return memcmp(a, b, FEDC_KEY_PUBLIC_BYTES); }

/* ---- routing ---- */

static enum route route_of(const char *method, const char *url, req *r)
{
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (get && strcmp(url, "/v1/status") == 0) return R_STATUS;
    if (get && strcmp(url, "/metrics") == 0) return R_METRICS;
    if (post && strcmp(url, "/v1/checkin") == 0) return R_CHECKIN;
    if (get && strcmp(url, "/v1/run") == 0) return R_RUN;
    if (get && strncmp(url, "/v1/models/", 11) == 0)
        return fedci_parse_u64(url + 11, &r->version) == 0 ? R_MODEL : R_NONE;
    if ((post || get) && strncmp(url, "/v1/tasks/", 10) == 0) { /* SecAgg: server_secagg.c */
        const char *id = url + 10, *slash = strchr(id, '/');
        if (slash && strcmp(slash, "/secagg") == 0 && (size_t)(slash - id) < sizeof r->task_id) {
            memcpy(r->task_id, id, (size_t)(slash - id));
            r->task_id[slash - id] = '\0';
            return post ? R_SECAGG_POST : R_SECAGG_GET;
        }
    }
    if (post && strncmp(url, "/v1/tasks/", 10) == 0) {
        const char *id = url + 10;
        const char *slash = strchr(id, '/');
        if (!slash || strcmp(slash, "/result") != 0 || (size_t)(slash - id) >= sizeof r->task_id)
            return R_NONE;
        memcpy(r->task_id, id, (size_t)(slash - id));
        r->task_id[slash - id] = '\0';
        return R_RESULT;
    }
    return R_NONE;
}

/* ---- the first call: headers only ---- */

/* The session key of client `id` (key pk): derived once per run and client (an X25519
 * exchange and a hash), then cached in secure memory. */
static fedc_status session_key(fedc_server *s, int id, const uint8_t pk[FEDC_KEY_PUBLIC_BYTES],
                               uint8_t out[FEDCI_SESSION_BYTES], fedc_err *err)
{
    size_t i = (size_t)id;
    pthread_mutex_lock(&s->lock);
    if (i < s->nsession_cap && s->sessions[i].ok &&
        memcmp(s->sessions[i].pk, pk, FEDC_KEY_PUBLIC_BYTES) == 0) {
        memcpy(out, s->sessions[i].key, FEDCI_SESSION_BYTES);
        pthread_mutex_unlock(&s->lock);
        return FEDC_OK;
    }
    pthread_mutex_unlock(&s->lock);
    FEDC_TRY(fedci_session_server(s->kx_pk, s->kx_sk, pk, out, err));
    pthread_mutex_lock(&s->lock);
    if (i >= s->nsession_cap) { /* grow (without the room, the key is just not cached) */
        size_t cap = s->nsession_cap ? s->nsession_cap : 64;
        while (cap <= i) cap *= 2;
        fedci_session_slot *grown = sodium_malloc(cap * sizeof *grown);
        if (grown) {
            sodium_memzero(grown, cap * sizeof *grown);
            if (s->sessions) {
                memcpy(grown, s->sessions, s->nsession_cap * sizeof *grown);
                sodium_free(s->sessions);
            }
            s->sessions = grown;
            s->nsession_cap = cap;
        }
    }
    if (i < s->nsession_cap) {
        memcpy(s->sessions[i].pk, pk, FEDC_KEY_PUBLIC_BYTES);
        memcpy(s->sessions[i].key, out, FEDCI_SESSION_BYTES);
        s->sessions[i].ok = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return FEDC_OK;
}

static enum MHD_Result authenticate(fedc_server *s, req *r, const char *method, const char *url)
{
    const char *hv = NULL;
    size_t hlen = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION,
                                      strlen(MHD_HTTP_HEADER_AUTHORIZATION), &hv,
                                      &hlen) != MHD_YES ||
        !hv)
        return auth_fail(r, AUTH_UNSIGNED, url);
    fedc_err err;
    if (fedci_auth_parse(hv, hlen, &r->auth, &err) != FEDC_OK)
        return auth_fail(r, AUTH_MALFORMED, fedc_err_message(&err));
    char pkhex[FEDC_KEY_PUBLIC_HEX];
    fedc_key_public_to_hex(r->auth.pk, pkhex);
    pthread_mutex_lock(&s->lock);
    const allow_entry *a =
        s->nallow ? bsearch(r->auth.pk, s->allow, s->nallow, sizeof *s->allow, allow_cmp) : NULL;
    int id = a ? (int)a->id : -1;
    pthread_mutex_unlock(&s->lock);
    if (id < 0) return auth_fail(r, AUTH_UNKNOWN_KEY, pkhex);
    uint64_t now = fedci_now_ms(), skew = (uint64_t)(s->clock_skew * 1000);
    char detail[160];
    if (r->auth.ts_ms + skew < now || r->auth.ts_ms > now + skew || r->auth.ts_ms < s->start_ms) {
        snprintf(detail, sizeof detail, "client %d: timestamp %" PRIu64 " is %s (now %" PRIu64 ")",
                 id, r->auth.ts_ms,
                 r->auth.ts_ms < s->start_ms && r->auth.ts_ms + skew >= now
                     ? "from before this server started"
                     : "outside the clock-skew window",
                 now);
        return auth_fail(r, AUTH_STALE, detail);
    }
    if (fedci_auth_verify_any(&r->auth, method, url) != 0) {
        snprintf(detail, sizeof detail, "client %d: signature does not verify for %s %s", id,
                 method, url);
        return auth_fail(r, AUTH_BAD_SIGNATURE, detail);
    }
    int rc = fedci_nonce_check(&s->nonces, r->auth.pk, r->auth.nonce, now, r->auth.ts_ms + skew);
    if (rc == 1) {
        snprintf(detail, sizeof detail, "client %d: nonce already used (%s %s)", id, method, url);
        return auth_fail(r, AUTH_REPLAY, detail);
    }
    if (rc < 0) {
        fedc_log(FEDC_LOG_WARN, "server", "replay cache full: refusing requests for now");
        return respond_error(r, 503, "busy", 1000);
    }
    if (r->auth.mode == FEDCI_AUTH_MAC) {
        uint8_t session[FEDCI_SESSION_BYTES];
        if (session_key(s, id, r->auth.pk, session, &err) != FEDC_OK) {
            snprintf(detail, sizeof detail, "client %d: %s", id, fedc_err_message(&err));
            return auth_fail(r, AUTH_MALFORMED, detail);
        }
        fedci_mac_init(&r->mac, session, r->auth.nonce);
        sodium_memzero(session, sizeof session);
    } else {
        fedci_body_hash_init(&r->hash);
    }
    r->client = id;
    pthread_mutex_lock(&s->lock);
    if ((size_t)id < s->nseen_cap) s->last_seen_ms[id] = now;
    pthread_mutex_unlock(&s->lock);
    return MHD_YES;
}

static fedc_status on_result_header(void *user, const ProtobufCMessage *m, float **dest,
                                    uint64_t *num_floats, fedc_err *err)
{
    req *r = user;
    fedc_server *s = r->s;
    const Fedc__V1__ResultHeader *h = (const Fedc__V1__ResultHeader *)m;
    if (strcmp(h->task_id, r->task_id) != 0)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "client %d: result header names task '%.64s', "
                            "posted to task %s",
                            r->client, h->task_id, r->task_id);
    if (h->round != r->t_round)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "client %d: result for round %u posted to a "
                            "task of round %u",
                            r->client, h->round, r->t_round);
    if (h->stage != FEDC__V1__STAGE__STAGE_FIT)
        return fedc_err_set(err, FEDC_ERR_INVALID, "client %d: result of stage %d for a fit task",
                            r->client, (int)h->stage);
    if (h->num_params != s->num_params)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "client %d: update of %" PRIu64 " floats, the "
                            "model has %zu",
                            r->client, h->num_params, s->num_params);
    if (h->num_examples == 0)
        return fedc_err_set(err, FEDC_ERR_INVALID, "client %d: num_examples is 0", r->client);
    if (!isfinite(h->train_loss) && !isnan(h->train_loss))
        return fedc_err_set(err, FEDC_ERR_NONFINITE, "client %d: train_loss is infinite",
                            r->client);
    if (h->encoding && h->encoding[0]) {
        /* an encoded update: the chunks carry one codec message, decoded once it is whole
         * and authenticated (answer_result) */
        if (!s->up_codec[0] || strcmp(h->encoding, s->up_codec) != 0)
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "client %d: update encoded as '%.40s', the task asks for '%s'",
                                r->client, h->encoding, s->up_codec[0] ? s->up_codec : "none");
        if (h->encoded_bytes == 0 || h->encoded_bytes > s->max_upload)
            return fedc_err_set(err, FEDC_ERR_RANGE,
                                "client %d: encoded update of %" PRIu64 " bytes (limit %" PRIu64
                                ")",
                                r->client, h->encoded_bytes, s->max_upload);
        r->enc = fedc_malloc((size_t)h->encoded_bytes);
        if (!r->enc)
            return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for an encoded update");
        r->enc_len = h->encoded_bytes;
        r->vs.unit = 1;
        *dest = (float *)(void *)r->enc;
        *num_floats = h->encoded_bytes;
        return FEDC_OK;
    }
    *dest = r->buf;
    *num_floats = s->num_params;
    return FEDC_OK;
}

static enum MHD_Result first_call(fedc_server *s, req *r, const char *url, const char *method)
{
    r->route = route_of(method, url, r);
    if (r->route == R_NONE) return respond_error(r, 404, "not found", 0);
    if (r->route == R_STATUS || r->route == R_METRICS) return MHD_YES;
    r->body_limit = r->route == R_RESULT         ? s->max_upload
                    : r->route == R_SECAGG_POST ? s->max_upload + 64 /* masked vector */
                                                : s->max_message;
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t clen = 0;
    if (cl && fedci_parse_u64(cl, &clen) == 0 && clen > r->body_limit) {
        fedc_log(FEDC_LOG_WARN, "server",
                 "refused %s %s: body of %" PRIu64 " bytes exceeds %" PRIu64, method, url, clen,
                 r->body_limit);
        return respond_error(r, 413, "too large", 0);
    }
    enum MHD_Result ar = authenticate(s, r, method, url);
    if (r->responded || ar != MHD_YES) return ar;
    if (r->route != R_RESULT) return MHD_YES;
    if (s->secagg) { /* SecAgg rounds take masked inputs only (POST .../secagg) */
        fedc_log(FEDC_LOG_WARN, "server", "client %d: a plain result in a SecAgg run refused",
                 r->client);
        atomic_fetch_add(&s->stats.results_refused, 1);
        return respond_error(r, 409, "task is not open", 0);
    }

    /* a result: the task must be this client's, in the open round, not yet accepted */
    uint32_t round, attempt, client;
    if (fedci_task_id_parse(s, r->task_id, &round, &attempt, &client) != 0 ||
        client != (uint32_t)r->client) {
        fedc_log(FEDC_LOG_WARN, "server", "client %d: result for task '%s', not one of its tasks",
                 r->client, r->task_id);
        atomic_fetch_add(&s->stats.results_refused, 1);
        return respond_error(r, 409, "task is not open", 0);
    }
    pthread_mutex_lock(&s->lock);
    long pos = -1;
    const char *why = NULL;
    if (s->phase != PHASE_FIT || round != s->round || attempt != s->attempt)
        why = "its round is closed";
    else if ((pos = fedci_server_selected_pos(s, client)) < 0)
        why = "the client was not selected";
    else if (s->parts[pos].state == TASK_ACCEPTED)
        why = "its result was already accepted";
    uint32_t cur_round = s->round;
    pthread_mutex_unlock(&s->lock);
    if (why) {
        fedc_log(FEDC_LOG_INFO, "server", "client %d: result for round %u refused: %s (round %u)",
                 r->client, round, why, cur_round);
        atomic_fetch_add(&s->stats.results_late, 1);
        return respond_error(r, 409, "task is not open", 0);
    }
    r->t_round = round;
    r->t_attempt = attempt;
    r->buf = buf_take_or_queue(s, r);
    if (!r->buf) {
        /* every update buffer is receiving: wait for one, suspended (the body is not read) */
        fedc_log(FEDC_LOG_DEBUG, "server", "client %d: waits for one of %u upload buffers",
                 r->client, s->max_uploads);
        MHD_suspend_connection(r->conn);
        pthread_mutex_lock(&s->pool_lock);
        int granted = r->buf != NULL;
        r->buf_suspended = !granted;
        pthread_mutex_unlock(&s->pool_lock);
        if (granted) MHD_resume_connection(r->conn); /* it came while suspending */
        return MHD_YES;
    }
    fedci_vstream_init(&r->vs, FEDCI_VS_RESULT, s->max_message, s->chunk_bytes, on_result_header,
                       r);
    r->vs.scan_finite = 1;
    r->vs_ready = 1;
    return MHD_YES;
}

/* A queued upload was given a buffer (or the server stops): start reading its body. */
static enum MHD_Result upload_resumed(fedc_server *s, req *r)
{
    r->wait_buf = 0;
    if (!r->buf) return respond_error(r, 503, "busy", 1000); /* stopping */
    fedci_vstream_init(&r->vs, FEDCI_VS_RESULT, s->max_message, s->chunk_bytes, on_result_header,
                       r);
    r->vs.scan_finite = 1;
    r->vs_ready = 1;
    return MHD_YES;
}

/* ---- the body ---- */

static void on_body(fedc_server *s, req *r, const char *data, size_t n)
{
    atomic_fetch_add(&s->stats.bytes_in, n);
    r->body_len += n;
    if (r->fail_code) return;
    if (r->body_len > r->body_limit) {
        fedc_log(FEDC_LOG_WARN, "server", "client %d: body exceeds %" PRIu64 " bytes", r->client,
                 r->body_limit);
        fail_later(r, 413, "too large");
        return;
    }
    if (r->route == R_STATUS || r->route == R_METRICS) return;
    if (r->auth.mode == FEDCI_AUTH_MAC)
        fedci_mac_update(&r->mac, data, n);
    else
        fedci_body_hash_update(&r->hash, data, n);
    if (r->route == R_RESULT) {
        fedc_err err;
        fedc_status st = fedci_vstream_feed(&r->vs, (const uint8_t *)data, n, &err);
        if (st != FEDC_OK) {
            unsigned code = status_http(st);
            fedc_log(FEDC_LOG_WARN, "server", "client %d: result refused: %s", r->client,
                     fedc_err_message(&err));
            if (code == 409)
                atomic_fetch_add(&s->stats.results_late, 1);
            else
                atomic_fetch_add(&s->stats.results_refused, 1);
            fail_later(r, code, status_reason(code));
            result_buf_drop(s, r);
        } else if (s->fold_early && !r->enc) {
            fold_more(s, r);
        }
        return;
    }
    fedc_err err;
    if (fedci_buf_append(&r->body, data, n, &err) != FEDC_OK) fail_later(r, 503, "busy");
}

/* ---- answers ---- */

static uint32_t jitter_ms(double seconds)
{
    double j = 0.75 + 0.5 * ((double)randombytes_uniform(1000) / 1000.0);
    double ms = seconds * 1000 * j;
    return ms > 3.6e6 ? 3600000u : (uint32_t)ms;
}

static void fill_model_ref(const fedc_server *s, Fedc__V1__ModelRef *m)
{
    m->version = s->model.version;
    m->sha256 = (char *)s->model.sha256;
    m->num_params = s->model.num_params;
    m->size_bytes = s->model.size;
}

/* Builds the check-in answer into b, or returns 1 when the request should wait. Lock held. */
static int checkin_answer(fedc_server *s, req *r, int may_wait, fedci_buf *b, fedc_err *err,
                          fedc_status *st)
{
    Fedc__V1__CheckinResponse resp = FEDC__V1__CHECKIN_RESPONSE__INIT;
    Fedc__V1__Retry retry = FEDC__V1__RETRY__INIT;
    Fedc__V1__Done done = FEDC__V1__DONE__INIT;
    Fedc__V1__Task task = FEDC__V1__TASK__INIT;
    Fedc__V1__ModelRef mref = FEDC__V1__MODEL_REF__INIT;
    Fedc__V1__TaskConfig tcfg = FEDC__V1__TASK_CONFIG__INIT;
    Fedc__V1__DpTask dp = FEDC__V1__DP_TASK__INIT;
    Fedc__V1__SecAggTask satask = FEDC__V1__SEC_AGG_TASK__INIT;
    Fedc__V1__TaskConfig__SettingsEntry *entries = NULL, **eptr = NULL;
    char task_id[80];
    *st = FEDC_OK;
    long pos = -1;
    if (s->phase == PHASE_DONE) {
        mref.version = s->final_rounds;
        mref.sha256 = s->final_sha;
        mref.num_params = s->num_params;
        done.rounds = s->final_rounds;
        done.model = &mref;
        resp.reply_case = FEDC__V1__CHECKIN_RESPONSE__REPLY_DONE;
        resp.done = &done;
    } else if (s->phase == PHASE_FIT &&
               (pos = fedci_server_selected_pos(s, (uint32_t)r->client)) >= 0 &&
               s->parts[pos].state != TASK_ACCEPTED && s->model.resp &&
               (!s->secagg || fedci_secagg_task(s, pos, &satask))) {
        if (s->parts[pos].state == TASK_SELECTED) s->parts[pos].state = TASK_ISSUED;
        fedci_task_id(s, s->round, s->attempt, (uint32_t)r->client, task_id, sizeof task_id);
        fill_model_ref(s, &mref);
        entries = fedc_calloc(s->nsettings ? s->nsettings : 1, sizeof *entries);
        eptr = fedc_calloc(s->nsettings ? s->nsettings : 1, sizeof *eptr);
        if (!entries || !eptr) {
            fedc_free(entries);
            fedc_free(eptr);
            *st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
            return 0;
        }
        for (size_t i = 0; i < s->nsettings; i++) {
            Fedc__V1__TaskConfig__SettingsEntry e = FEDC__V1__TASK_CONFIG__SETTINGS_ENTRY__INIT;
            e.key = s->setting_keys[i];
            e.value = s->setting_values[i];
            entries[i] = e;
            eptr[i] = &entries[i];
        }
        tcfg.seed = (uint64_t)fedc_config_int(s->cfg, "run.seed");
        tcfg.prox_mu = s->prox_mu;
        tcfg.lr = s->lr;
        tcfg.want_loss_before = s->want_loss_before;
        tcfg.n_settings = s->nsettings;
        tcfg.settings = eptr;
        fedc_dp_client_task dpt;
        fedc_engine_dp_task(s->engine, (uint32_t)r->client, &dpt);
        if (dpt.clip > 0 || dpt.noise_stddev > 0) {
            dp.clip = dpt.clip;
            dp.noise_stddev = dpt.noise_stddev;
            dp.seeded_noise = dpt.seeded_noise;
            tcfg.dp = &dp;
        }
        task.task_id = task_id;
        task.run_id = s->run_id;
        task.round = s->round;
        task.attempt = s->attempt;
        task.stage = FEDC__V1__STAGE__STAGE_FIT;
        task.client_id = (uint32_t)r->client;
        task.model = &mref;
        task.config = &tcfg;
        uint64_t now = fedci_now_ms();
        task.deadline_ms = s->deadline_wall_ms > now ? s->deadline_wall_ms - now : 0;
        task.max_upload_bytes = s->max_upload;
        task.chunk_bytes = s->chunk_bytes;
        if (!s->secagg) { /* SecAgg's own quantizer is the upload encoding */
            task.upload_encoding = s->up_codec;
            task.error_feedback = s->up_ef;
        }
        if (s->secagg) task.secagg = &satask;
        resp.reply_case = FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK;
        resp.task = &task;
    } else if (may_wait) {
        return 1;
    } else {
        retry.after_ms = jitter_ms(s->retry_after);
        retry.reason = s->phase == PHASE_FIT
                           ? (pos >= 0 ? "result already accepted" : "not selected")
                           : "no round open";
        resp.reply_case = FEDC__V1__CHECKIN_RESPONSE__REPLY_RETRY;
        resp.retry = &retry;
    }
    *st = fedci_pack(&resp.base, b, err);
    fedc_free(entries);
    fedc_free(eptr);
    return 0;
}

static enum MHD_Result answer_checkin(fedc_server *s, req *r)
{
    if (!r->parsed) {
        ProtobufCMessage *m;
        fedc_err err;
        if (fedci_unpack(&fedc__v1__checkin_request__descriptor, r->body.data, r->body.len,
                         "check-in", &m, &err) != FEDC_OK) {
            fedc_log(FEDC_LOG_WARN, "server", "client %d: %s", r->client, fedc_err_message(&err));
            return respond_error(r, 400, "malformed request", 0);
        }
        Fedc__V1__CheckinRequest *c = (Fedc__V1__CheckinRequest *)m;
        r->wait_ms = c->wait_ms;
        fedci_unpacked_free(m);
        r->parsed = 1;
    }
    double wait = s->long_poll;
    if (r->wait_ms && r->wait_ms / 1000.0 < wait) wait = r->wait_ms / 1000.0;
    fedci_buf b = {0};
    fedc_err err;
    fedc_status st;
    pthread_mutex_lock(&s->lock);
    int may_wait = !r->woken && wait > 0 && !s->stop;
    if (checkin_answer(s, r, may_wait, &b, &err, &st)) {
        /* long poll: park the connection; the round driver resumes it */
        r->waiting = 1;
        r->wake_at = fedci_mono() + wait;
        r->prev = NULL;
        r->next = s->waiters;
        if (s->waiters) s->waiters->prev = r;
        s->waiters = r;
        s->nwaiters++;
        MHD_suspend_connection(r->conn);
        pthread_mutex_unlock(&s->lock);
        return MHD_YES;
    }
    pthread_mutex_unlock(&s->lock);
    enum MHD_Result rc = st == FEDC_OK ? respond(r, 200, FEDCI_CT_MESSAGE, b.data, b.len, NULL, 0)
                                       : respond_error(r, 503, "busy", 1000);
    fedci_buf_fini(&b);
    return rc;
}

void fedci_server_wake(fedc_server *s, int all)
{
    double now = fedci_mono();
    req *r = s->waiters;
    while (r) {
        req *next = r->next;
        if (all || r->wake_at <= now) {
            if (r->prev)
                r->prev->next = r->next;
            else
                s->waiters = r->next;
            if (r->next) r->next->prev = r->prev;
            r->prev = r->next = NULL;
            r->waiting = 0;
            r->woken = 1;
            s->nwaiters--;
            MHD_resume_connection(r->conn);
        }
        r = next;
    }
}

static enum MHD_Result answer_run(fedc_server *s, req *r)
{
    Fedc__V1__RunInfo ri = FEDC__V1__RUN_INFO__INIT;
    Fedc__V1__RunInfo__SettingsEntry *entries =
        fedc_calloc(s->nsettings ? s->nsettings : 1, sizeof *entries);
    Fedc__V1__RunInfo__SettingsEntry **eptr =
        fedc_calloc(s->nsettings ? s->nsettings : 1, sizeof *eptr);
    if (!entries || !eptr) {
        fedc_free(entries);
        fedc_free(eptr);
        return respond_error(r, 503, "busy", 1000);
    }
    for (size_t i = 0; i < s->nsettings; i++) {
        Fedc__V1__RunInfo__SettingsEntry e = FEDC__V1__RUN_INFO__SETTINGS_ENTRY__INIT;
        e.key = s->setting_keys[i];
        e.value = s->setting_values[i];
        entries[i] = e;
        eptr[i] = &entries[i];
    }
    ri.run_id = s->run_id;
    ri.client_id = (uint32_t)r->client;
    ri.rounds = s->rounds;
    pthread_mutex_lock(&s->lock);
    ri.round = s->phase == PHASE_DONE ? s->final_rounds : (s->round ? s->round - 1 : 0);
    pthread_mutex_unlock(&s->lock);
    ri.strategy = (char *)fedc_engine_strategy_name(s->engine);
    ri.num_params = s->num_params;
    ri.n_settings = s->nsettings;
    ri.settings = eptr;
    ri.max_message_bytes = (uint32_t)s->max_message;
    ri.chunk_bytes = s->chunk_bytes;
    ri.session_key.data = s->kx_pk;
    ri.session_key.len = sizeof s->kx_pk;
    ri.protocol_revision = FEDCI_PROTOCOL_REVISION;
    enum MHD_Result rc = respond_msg(r, &ri.base);
    fedc_free(entries);
    fedc_free(eptr);
    return rc;
}

static enum MHD_Result answer_model(fedc_server *s, req *r)
{
    const char *inm =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    pthread_mutex_lock(&s->lock);
    if (!s->model.resp || s->model.version != r->version) {
        uint64_t have = s->model.version;
        pthread_mutex_unlock(&s->lock);
        fedc_log(FEDC_LOG_INFO, "server",
                 "client %d: model version %" PRIu64 " is not served "
                 "(current: %" PRIu64 ")",
                 r->client, r->version, have);
        return respond_error(r, 404, "no such model version", 0);
    }
    if (inm && strcmp(inm, s->model.etag) == 0) {
        char etag[70];
        memcpy(etag, s->model.etag, sizeof etag);
        pthread_mutex_unlock(&s->lock);
        return respond(r, 304, NULL, "", 0, etag, 0);
    }
    /* an exact delta from the version the client holds (its If-None-Match), when it accepts
     * one (RFC 3229: A-IM names the delta format; the answer is 226 IM Used) and we have one */
    const char *aim = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "A-IM");
    if (inm && aim && strstr(aim, FEDCI_XDELTA_IM)) {
        for (size_t i = 0; i < s->ndeltas; i++) {
            if (strcmp(inm, s->deltas[i].base_etag) != 0) continue;
            enum MHD_Result rc = MHD_queue_response(r->conn, 226, s->deltas[i].resp);
            uint64_t size = s->deltas[i].size, full = s->model.size;
            pthread_mutex_unlock(&s->lock);
            r->responded = 1;
            count_http(s, 226);
            atomic_fetch_add(&s->stats.bytes_out, size);
            atomic_fetch_add(&s->round_bytes_down, size);
            atomic_fetch_add(&s->round_bytes_down_full, full);
            return rc;
        }
    }
    enum MHD_Result rc = MHD_queue_response(r->conn, 200, s->model.resp);
    uint64_t size = s->model.size;
    pthread_mutex_unlock(&s->lock);
    r->responded = 1;
    count_http(s, 200);
    atomic_fetch_add(&s->stats.bytes_out, size);
    atomic_fetch_add(&s->round_bytes_down, size);
    atomic_fetch_add(&s->round_bytes_down_full, size);
    return rc;
}

static void record_refusal(fedc_server *s, req *r, const char *detail)
{
    pthread_mutex_lock(&s->lock);
    if (s->phase == PHASE_FIT && r->t_round == s->round && r->t_attempt == s->attempt) {
        long pos = fedci_server_selected_pos(s, (uint32_t)r->client);
        if (pos >= 0 && s->parts[pos].state != TASK_ACCEPTED) {
            s->parts[pos].state = TASK_REFUSED;
            snprintf(s->parts[pos].status, sizeof s->parts[pos].status, "refused");
            snprintf(s->parts[pos].detail, sizeof s->parts[pos].detail, "%s", detail);
            s->refused++;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static enum MHD_Result answer_result(fedc_server *s, req *r)
{
    fedc_err err;
    fedc_status st = fedci_vstream_finish(&r->vs, &err);
    const Fedc__V1__ResultHeader *h = (const Fedc__V1__ResultHeader *)r->vs.header;
    int malformed = 0;
    if (st == FEDC_OK && !r->enc && !r->vs.scan_finite && !r->fold_verified)
        fedci_vstream_scan_resume(&r->vs); /* the early fold checked part of it: the rest */
    if (st == FEDC_OK && r->enc) {
        /* decode the update the client encoded; any workspace decodes any message, one per
         * request (MHD threads run requests concurrently) */
        fedc_codec_header ch;
        fedc_codec_spec want;
        fedc_codec *cd = NULL;
        st = fedc_codec_peek(r->enc, (size_t)r->enc_len, &ch, &err);
        if (st == FEDC_OK && fedc_codec_parse(s->up_codec, &want, NULL) == FEDC_OK &&
            (ch.sparse != want.sparse || ch.values != want.values ||
             (ch.flags & FEDC_CODEC_FLAG_DELTA)))
            st = fedc_err_set(&err, FEDC_ERR_FORMAT,
                              "the message's stages (sparsifier %d, values %d%s) are not those of "
                              "'%s'",
                              (int)ch.sparse, (int)ch.values,
                              ch.flags & FEDC_CODEC_FLAG_DELTA ? ", delta" : "", s->up_codec);
        if (st == FEDC_OK) st = fedc_codec_create_str("none", &cd, &err);
        if (st == FEDC_OK)
            st = fedc_codec_decode(cd, r->enc, (size_t)r->enc_len, r->buf, s->num_params, &err);
        fedc_codec_destroy(cd);
        if (st != FEDC_OK && st != FEDC_ERR_NOMEM) {
            malformed = 1;
            fedc_err e2 = err;
            st = fedc_err_set(&err, FEDC_ERR_FORMAT, "malformed encoded update (%s): %s",
                              s->up_codec, fedc_err_message(&e2));
        }
    } else if (st == FEDC_OK && r->vs.nonfinite_at != UINT64_MAX) {
        /* found while the chunks were copied (fedci_vstream.scan_finite), or by the early fold's
         * check and then the scan (fold_more) */
        uint64_t bad = r->vs.nonfinite_at;
        st = fedc_err_set(&err, FEDC_ERR_NONFINITE, "update value %" PRIu64 " is %s", bad,
                          isnan(r->buf[bad]) ? "NaN" : "infinite");
    }
    double norm = 0;
    if (st == FEDC_OK && s->max_norm > 0) {
        norm = fedc_vec_norm2(s->num_params, r->buf);
        if (!(norm <= s->max_norm))
            st = fedc_err_set(&err, FEDC_ERR_RANGE, "update norm %.6g exceeds round.max_norm = %g",
                              norm, s->max_norm);
    }
    if (st != FEDC_OK) {
        unsigned code = malformed || (st == FEDC_ERR_RANGE && s->max_norm > 0 && norm > 0)
                            ? 422
                            : status_http(st);
        fedc_log(FEDC_LOG_WARN, "server", "client %d: result for round %u refused: %s", r->client,
                 r->t_round, fedc_err_message(&err));
        atomic_fetch_add(&s->stats.results_refused, 1);
        record_refusal(s, r, fedc_err_message(&err));
        result_buf_drop(s, r);
        return respond_error(r, code, status_reason(code), 0);
    }
    /* into the aggregate, if the task is still open: late results are refused */
    fedc_fit_out out;
    memset(&out, 0, sizeof out);
    out.update = r->buf;
    out.num_examples = h->num_examples;
    out.train_loss = h->train_loss;
    out.loss_before = h->loss_before;
    out.steps = h->steps;
    unsigned code = 200;
    pthread_mutex_lock(&s->lock);
    long pos = -1;
    if (s->phase != PHASE_FIT || r->t_round != s->round || r->t_attempt != s->attempt ||
        (pos = fedci_server_selected_pos(s, (uint32_t)r->client)) < 0 ||
        s->parts[pos].state == TASK_ACCEPTED || s->parts[pos].submitting ||
        s->accepted + s->submitting >= s->target) {
        code = 409;
    } else {
        /* the fold runs outside the server lock (check-ins, authentication and other uploads
         * go on meanwhile); the slot is reserved, and the round driver waits for reserved
         * slots before it closes the round */
        s->parts[pos].submitting = 1;
        s->submitting++;
        pthread_mutex_unlock(&s->lock);
        fedc_err serr;
        double fit_s = isfinite(h->fit_seconds) && h->fit_seconds >= 0 ? h->fit_seconds : 0;
        fedc_dp_client_report rep = {h->dp ? h->dp->unclipped : 1};
        /* early fold: a result whose every chunk is in the sums already is only recorded by
         * the strategy's add (fedci_accum_expect_prefolded); any other result in such a run
         * has its partial fold taken out and is folded whole, under fold_lock like the rest */
        int pre = 0;
        if (s->fold_early) {
            /* r is ours and the round cannot close while it is submitted (s->submitting) */
            pthread_mutex_lock(&s->fold_lock);
            pre = r->fold == FOLD_ON && r->folded == s->num_params;
            if (!pre) fold_undo(s, r);
            pthread_mutex_unlock(&s->fold_lock);
            if (pre)
                fedci_accum_expect_prefolded(s->fold_acc, r->buf, r->fold_w, r->fold_mx);
            else
                stripes_lock_all(s); /* the strategy's add folds the whole vector */
        }
        st = fedc_engine_submit_dp(s->engine, (uint32_t)r->client, &out, h->dp ? &rep : NULL, fit_s,
                                   &serr);
        if (s->fold_early && !pre) stripes_unlock_all(s);
        if (pre) {
            int taken = fedci_accum_prefolded_taken();
            pthread_mutex_lock(&s->fold_lock);
            if (taken) { /* recorded: its terms stay */
                fold_unlink(s, r);
                r->fold = FOLD_OFF;
                atomic_fetch_add(&s->stats.folds_early, 1);
            } else {
                fold_undo(s, r); /* refused (before or by the strategy's add) */
            }
            pthread_mutex_unlock(&s->fold_lock);
        }
        pthread_mutex_lock(&s->lock);
        s->parts[pos].submitting = 0;
        s->submitting--;
        pthread_cond_broadcast(&s->cond);
        part_info *p = &s->parts[pos];
        if (st == FEDC_OK) {
            p->state = TASK_ACCEPTED;
            snprintf(p->status, sizeof p->status, "accepted");
            p->detail[0] = '\0';
            p->num_examples = h->num_examples;
            p->train_loss = h->train_loss;
            p->fit_seconds = fit_s;
            p->bytes_up = r->body_len;
            atomic_fetch_add(&s->round_bytes_up, r->body_len);
            s->accepted++;
            pthread_cond_broadcast(&s->cond);
        } else {
            code = 422;
            p->state = TASK_REFUSED;
            snprintf(p->status, sizeof p->status, "refused");
            snprintf(p->detail, sizeof p->detail, "%s", fedc_err_message(&serr));
        }
    }
    uint32_t round = s->round;
    pthread_mutex_unlock(&s->lock);
    result_buf_drop(s, r);
    if (code == 409) {
        fedc_log(FEDC_LOG_INFO, "server", "client %d: late result for round %u refused (round %u)",
                 r->client, r->t_round, round);
        atomic_fetch_add(&s->stats.results_late, 1);
        return respond_error(r, 409, "task is not open", 0);
    }
    if (code != 200) {
        atomic_fetch_add(&s->stats.results_refused, 1);
        return respond_error(r, code, status_reason(code), 0);
    }
    atomic_fetch_add(&s->stats.results_accepted, 1);
    fedc_log(FEDC_LOG_DEBUG, "server", "client %d: result for round %u accepted", r->client,
             r->t_round);
    Fedc__V1__ResultAck ack = FEDC__V1__RESULT_ACK__INIT;
    ack.accepted = 1;
    return respond_msg(r, &ack.base);
}

/* SecAgg+ stage messages (server_secagg.c). */
static enum MHD_Result answer_secagg(fedc_server *s, req *r)
{
    char why[64] = "";
    if (!s->secagg) return respond_error(r, 404, "not found", 0);
    if (r->route == R_SECAGG_POST) {
        unsigned code = fedci_secagg_post(s, r->client, r->task_id, r->body.data, r->body.len,
                                          why, sizeof why);
        if (code != 200) return respond_error(r, code, why, code == 503 ? 1000 : 0);
        Fedc__V1__ResultAck ack = FEDC__V1__RESULT_ACK__INIT;
        ack.accepted = 1;
        return respond_msg(r, &ack.base);
    }
    fedci_buf b = {0};
    unsigned code = fedci_secagg_get(s, r->client, r->task_id, &b, why, sizeof why);
    enum MHD_Result rc = code == 200
                             ? respond(r, 200, FEDCI_CT_MESSAGE, b.data, b.len, NULL, 0)
                             : respond_error(r, code, why, code == 503 ? 1000 : 0);
    fedci_buf_fini(&b);
    return rc;
}

static enum MHD_Result answer_status(fedc_server *s, req *r)
{
    json_t *o = json_object();
    pthread_mutex_lock(&s->lock);
    const char *stage = s->phase == PHASE_DONE ? "done" : s->phase == PHASE_FIT ? "fit" : "idle";
    json_object_set_new(o, "run_id", json_string(s->run_id));
    json_object_set_new(o, "state", json_string(s->phase == PHASE_DONE ? "done" : "running"));
    json_object_set_new(o, "stage", json_string(stage));
    json_object_set_new(o, "round",
                        json_integer(s->phase == PHASE_DONE ? s->final_rounds : s->round));
    json_object_set_new(o, "attempt", json_integer(s->attempt));
    json_object_set_new(o, "rounds", json_integer(s->rounds));
    json_object_set_new(o, "last_round", json_integer(fedc_engine_last_round(s->engine)));
    json_object_set_new(o, "selected",
                        json_integer((json_int_t)(s->phase == PHASE_FIT ? s->nselected : 0)));
    json_object_set_new(o, "accepted", json_integer(s->phase == PHASE_FIT ? s->accepted : 0));
    json_object_set_new(o, "target", json_integer(s->target));
    json_object_set_new(o, "model_version", json_integer((json_int_t)s->model.version));
    json_object_set_new(o, "model_sha256",
                        json_string(s->phase == PHASE_DONE ? s->final_sha : s->model.sha256));
    uint64_t now = fedci_now_ms();
    size_t seen = 0, recent = 0;
    for (size_t i = 0; i < s->nseen_cap; i++) {
        if (s->last_seen_ms[i]) seen++;
        if (s->last_seen_ms[i] + 60000 > now) recent++;
    }
    json_object_set_new(o, "clients_allowed", json_integer((json_int_t)s->nallow));
    json_object_set_new(o, "clients_seen", json_integer((json_int_t)seen));
    json_object_set_new(o, "clients_active", json_integer((json_int_t)recent));
    json_object_set_new(o, "waiting_checkins", json_integer((json_int_t)s->nwaiters));
    if (s->phase == PHASE_FIT) {
        double left = s->round_deadline - fedci_mono();
        json_object_set_new(o, "deadline_in", json_real(left > 0 ? left : 0));
    }
    pthread_mutex_unlock(&s->lock);
    char *txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!txt) return respond_error(r, 503, "busy", 1000);
    enum MHD_Result rc = respond(r, 200, "application/json", txt, strlen(txt), NULL, 0);
    free(txt);
    return rc;
}

static void prom(fedci_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void prom(fedci_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        fedci_buf_append(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, NULL);
}

static enum MHD_Result answer_metrics(fedc_server *s, req *r)
{
    fedci_buf b = {0};
    server_stats *st = &s->stats;
    pthread_mutex_lock(&s->lock);
    uint32_t last = fedc_engine_last_round(s->engine), round = s->round, attempt = s->attempt;
    size_t waiters = s->nwaiters, allowed = s->nallow, seen = 0;
    for (size_t i = 0; i < s->nseen_cap; i++) seen += s->last_seen_ms[i] != 0;
    uint32_t accepted = s->phase == PHASE_FIT ? s->accepted : 0;
    int phase = s->phase;
    pthread_mutex_unlock(&s->lock);
    prom(&b,
         "# HELP fedc_rounds_committed Last committed round.\n# TYPE fedc_rounds_committed gauge\n"
         "fedc_rounds_committed %u\n",
         last);
    prom(&b,
         "# HELP fedc_rounds_target run.rounds.\n# TYPE fedc_rounds_target gauge\n"
         "fedc_rounds_target %u\n",
         s->rounds);
    prom(&b,
         "# HELP fedc_round Round in progress (0 when none).\n# TYPE fedc_round gauge\n"
         "fedc_round %u\n",
         phase == PHASE_FIT ? round : 0);
    prom(&b,
         "# HELP fedc_round_attempt Attempt of the round in progress.\n# TYPE fedc_round_attempt "
         "gauge\n"
         "fedc_round_attempt %u\n",
         attempt);
    prom(&b,
         "# HELP fedc_round_accepted Results accepted in the round in progress.\n"
         "# TYPE fedc_round_accepted gauge\nfedc_round_accepted %u\n",
         accepted);
    prom(&b,
         "# HELP fedc_rounds_aborted_total Rounds re-run after missing their quorum.\n"
         "# TYPE fedc_rounds_aborted_total counter\nfedc_rounds_aborted_total %llu\n",
         (unsigned long long)atomic_load(&st->rounds_aborted));
    prom(&b, "# HELP fedc_http_responses_total Responses by status code.\n"
             "# TYPE fedc_http_responses_total counter\n");
    for (size_t i = 0; i < N_HTTP_CODES; i++) {
        if (http_codes[i])
            prom(&b, "fedc_http_responses_total{code=\"%u\"} %llu\n", http_codes[i],
                 (unsigned long long)atomic_load(&st->http[i]));
        else
            prom(&b, "fedc_http_responses_total{code=\"other\"} %llu\n",
                 (unsigned long long)atomic_load(&st->http[i]));
    }
    prom(&b, "# HELP fedc_auth_failures_total Refused requests by reason.\n"
             "# TYPE fedc_auth_failures_total counter\n");
    for (int i = 0; i < AUTH_REASONS_; i++)
        prom(&b, "fedc_auth_failures_total{reason=\"%s\"} %llu\n", auth_reason_name[i],
             (unsigned long long)atomic_load(&st->auth_fail[i]));
    prom(&b,
         "# HELP fedc_results_total Results by outcome.\n# TYPE fedc_results_total counter\n"
         "fedc_results_total{outcome=\"accepted\"} %llu\nfedc_results_total{outcome=\"refused\"} "
         "%llu\n"
         "fedc_results_total{outcome=\"late\"} %llu\n",
         (unsigned long long)atomic_load(&st->results_accepted),
         (unsigned long long)atomic_load(&st->results_refused),
         (unsigned long long)atomic_load(&st->results_late));
    prom(&b,
         "# HELP fedc_early_folds_total Results folded chunk by chunk as they arrived: accepted "
         "that way, or taken out of the sums again.\n# TYPE fedc_early_folds_total counter\n"
         "fedc_early_folds_total{outcome=\"accepted\"} %llu\n"
         "fedc_early_folds_total{outcome=\"undone\"} %llu\n",
         (unsigned long long)atomic_load(&st->folds_early),
         (unsigned long long)atomic_load(&st->folds_undone));
    prom(&b,
         "# HELP fedc_bytes_received_total Request body bytes.\n# TYPE fedc_bytes_received_total "
         "counter\n"
         "fedc_bytes_received_total %llu\n",
         (unsigned long long)atomic_load(&st->bytes_in));
    prom(&b,
         "# HELP fedc_bytes_sent_total Response body bytes.\n# TYPE fedc_bytes_sent_total counter\n"
         "fedc_bytes_sent_total %llu\n",
         (unsigned long long)atomic_load(&st->bytes_out));
    prom(&b,
         "# HELP fedc_uploads_active Results being received.\n# TYPE fedc_uploads_active gauge\n"
         "fedc_uploads_active %u\n",
         atomic_load(&st->uploads_active));
    prom(&b,
         "# HELP fedc_checkins_waiting Check-ins held (long poll).\n# TYPE fedc_checkins_waiting "
         "gauge\n"
         "fedc_checkins_waiting %zu\n",
         waiters);
    prom(&b,
         "# HELP fedc_clients_allowed Keys on the allow-list.\n# TYPE fedc_clients_allowed gauge\n"
         "fedc_clients_allowed %zu\n",
         allowed);
    prom(&b,
         "# HELP fedc_clients_seen Allowed clients seen since start.\n# TYPE fedc_clients_seen "
         "gauge\n"
         "fedc_clients_seen %zu\n",
         seen);
    fedc_alloc_stats as;
    fedc_alloc_get_stats(&as);
    prom(&b,
         "# HELP fedc_alloc_bytes Bytes held by libfedc allocations.\n# TYPE fedc_alloc_bytes "
         "gauge\n"
         "fedc_alloc_bytes %zu\n",
         as.current_bytes);
    enum MHD_Result rc =
        respond(r, 200, "text/plain; version=0.0.4", b.data ? (char *)b.data : "", b.len, NULL, 0);
    fedci_buf_fini(&b);
    return rc;
}

static enum MHD_Result on_complete(fedc_server *s, req *r)
{
    if (r->fail_code)
        return respond_error(r, r->fail_code, r->fail_msg, r->fail_code == 503 ? 1000 : 0);
    if (r->route == R_STATUS) return answer_status(s, r);
    if (r->route == R_METRICS) return answer_metrics(s, r);
    if (!r->parsed && !r->woken) {
        int match;
        if (r->auth.mode == FEDCI_AUTH_MAC) {
            uint8_t tag[FEDCI_MAC_BYTES];
            fedci_mac_final(&r->mac, tag);
            match = sodium_memcmp(tag, r->auth.mac, sizeof tag) == 0;
        } else {
            uint8_t h[FEDCI_HASH_BYTES];
            fedci_body_hash_final(&r->hash, h);
            match = sodium_memcmp(h, r->auth.body_hash, sizeof h) == 0;
        }
        if (!match) {
            if (r->buf) result_buf_drop(s, r);
            char d[96];
            snprintf(d, sizeof d,
                     "client %d: body does not match its signed %s (%" PRIu64 " bytes)", r->client,
                     r->auth.mode == FEDCI_AUTH_MAC ? "MAC" : "hash", r->body_len);
            return auth_fail(r, AUTH_BODY_MISMATCH, d);
        }
    }
    switch (r->route) {
    case R_CHECKIN: return answer_checkin(s, r);
    case R_RUN: return answer_run(s, r);
    case R_MODEL: return answer_model(s, r);
    case R_RESULT: return answer_result(s, r);
    case R_SECAGG_POST:
    case R_SECAGG_GET: return answer_secagg(s, r);
    default: return respond_error(r, 404, "not found", 0);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **req_cls)
{
    (void)version;
    fedc_server *s = cls;
    req *r = *req_cls;
    if (!r) {
        r = fedc_calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->client = -1;
        *req_cls = r;
        return first_call(s, r, url, method);
    }
    if (r->responded) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->wait_buf) {
        enum MHD_Result rc = upload_resumed(s, r);
        if (r->responded || !*upload_size) return rc;
    }
    if (*upload_size) {
        on_body(s, r, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    return on_complete(s, r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    fedc_server *s = cls;
    req *r = *req_cls;
    if (!r) return;
    if (r->wait_buf) buf_unqueue(s, r);
    if (r->buf) result_buf_drop(s, r);
    if (r->vs_ready) fedci_vstream_fini(&r->vs);
    fedci_mac_free(&r->mac); /* a body refused before its MAC was finalised */
    fedc_free(r->enc);
    fedci_buf_fini(&r->body);
    fedc_free(r);
    *req_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    fedc_log(FEDC_LOG_INFO, "http", "%s", msg);
}

static void free_deltas(delta_resp *d, size_t n)
{
    for (size_t i = 0; i < n; i++) MHD_destroy_response(d[i].resp);
    fedc_free(d);
}

/*
 * Exact delta downloads (compress.download_delta; docs/COMPRESSION.md): one response per kept
 * base version older than `version`, from what clients of that version hold to `held` (what
 * clients of `version` will hold, SHA-256 `sha`), kept only when smaller than the full
 * response (full_size bytes); then `held` joins the bases (the oldest leaves past
 * compress.delta_versions). hdr is the full response's header, reused with the delta fields.
 * Publisher only (s->bases is not shared); the caller swaps the responses in under the lock.
 */
static fedc_status build_deltas(fedc_server *s, uint64_t version, const float *held,
                                const char *sha, Fedc__V1__ModelHeader *hdr, uint64_t full_size,
                                delta_resp **out, size_t *nout, fedc_err *err)
{
    *out = NULL;
    *nout = 0;
    size_t n = s->num_params;
    if (!s->bases && !(s->bases = fedc_calloc(s->delta_keep, sizeof *s->bases)))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the delta bases");
    delta_resp *d = fedc_calloc(s->nbases ? s->nbases : 1, sizeof *d);
    fedc_codec *xc = NULL;
    fedc_status st = d ? fedc_codec_create_str("none", &xc, err)
                       : fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the deltas");
    size_t k = 0;
    for (size_t i = 0; st == FEDC_OK && i < s->nbases; i++) {
        const delta_base *bs = &s->bases[i];
        if (bs->version >= version || strcmp(bs->sha256, sha) == 0) continue;
        const uint8_t *msg;
        size_t len;
        st = fedc_codec_xdelta_encode(xc, bs->model, held, n, bs->version, version, bs->sha256,
                                      sha, FEDC_XDELTA_SHUFFLE, 3, &msg, &len, err);
        if (st != FEDC_OK) break;
        hdr->encoding = (char *)FEDCI_XDELTA_ENCODING;
        hdr->encoded_bytes = len;
        hdr->base_version = bs->version;
        fedci_buf db = {0};
        /* the stream's size is in its own header: encode until it is stable */
        uint64_t size = 0;
        for (int it = 0; it < 4 && st == FEDC_OK; it++) {
            hdr->model->size_bytes = size;
            db.len = 0;
            st = fedci_vstream_encode_bytes(&hdr->base, msg, len, s->chunk_bytes, &db, err);
            if (db.len == size) break;
            size = db.len;
        }
        if (st != FEDC_OK || db.len >= full_size) { /* not smaller: the full model serves */
            fedci_buf_fini(&db);
            continue;
        }
        struct MHD_Response *resp =
            MHD_create_response_from_buffer_with_free_callback(db.len, db.data, fedc_free);
        if (!resp) {
            fedci_buf_fini(&db);
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for a delta response");
            break;
        }
        char etag[70], base_etag[70];
        snprintf(etag, sizeof etag, "\"%s\"", sha);
        snprintf(base_etag, sizeof base_etag, "\"%s\"", bs->sha256);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, FEDCI_CT_STREAM);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
        MHD_add_response_header(resp, "IM", FEDCI_XDELTA_IM);
        MHD_add_response_header(resp, "Delta-Base", base_etag);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        d[k].base_version = bs->version;
        memcpy(d[k].base_etag, base_etag, sizeof base_etag);
        d[k].size = db.len;
        d[k].resp = resp;
        k++;
    }
    fedc_codec_destroy(xc);
    if (st == FEDC_OK && !(s->nbases && s->bases[s->nbases - 1].version >= version)) {
        /* held joins the bases, the oldest leaving when they are full */
        float *copy = fedc_malloc((n ? n : 1) * sizeof(float));
        if (!copy) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for a delta base");
        } else {
            memcpy(copy, held, n * sizeof(float));
            if (s->nbases == s->delta_keep) {
                fedc_free(s->bases[0].model);
                memmove(s->bases, s->bases + 1, (s->nbases - 1) * sizeof *s->bases);
                s->nbases--;
            }
            delta_base *nb = &s->bases[s->nbases++];
            nb->version = version;
            memcpy(nb->sha256, sha, 65);
            nb->model = copy;
        }
    }
    if (st != FEDC_OK) {
        free_deltas(d, k);
        return st;
    }
    *out = d;
    *nout = k;
    return FEDC_OK;
}

fedc_status fedci_server_publish_model(fedc_server *s, uint64_t version, const char *given_sha,
                                       fedc_err *err)
{
    const float *g = fedc_engine_global(s->engine);
    const fedc_layout *lay = fedc_engine_layout(s->engine);
    char sha[65];
    /* compress.download: the chunks carry the global model encoded as `fedc sim` encodes it
     * (stream (seed, round = version + 1, any client)), and the version's hash and ETag are of
     * what the clients decode: the model they train from */
    fedc_codec *dc = NULL;
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    float *held = NULL;
    if (s->down_codec[0]) {
        fedc_codec_ctx ctx = {(uint64_t)fedc_config_int(s->cfg, "run.seed"),
                              (uint32_t)version + 1, FEDC_RNG_ANY, lay, version};
        float *dec = fedc_malloc((s->num_params ? s->num_params : 1) * sizeof(float));
        fedc_status est = dec ? fedc_codec_create_str(s->down_codec, &dc, err)
                              : fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
        if (est == FEDC_OK)
            est = fedc_codec_encode(dc, g, s->num_params, &ctx, &msg, &msg_len, err);
        if (est == FEDC_OK) est = fedc_codec_decode(dc, msg, msg_len, dec, s->num_params, err);
        if (est == FEDC_OK) fedc_vec_sha256_hex(s->num_params, dec, sha);
        if (est != FEDC_OK) {
            fedc_free(dec);
            fedc_codec_destroy(dc);
            return est;
        }
        held = dec; /* what the clients hold: the base of later deltas */
    } else if (given_sha) {
        snprintf(sha, sizeof sha, "%s", given_sha);
    } else {
        fedc_vec_sha256_hex(s->num_params, g, sha);
    }
    Fedc__V1__ModelRef mref = FEDC__V1__MODEL_REF__INIT;
    Fedc__V1__ModelHeader hdr = FEDC__V1__MODEL_HEADER__INIT;
    Fedc__V1__TensorInfo *tis = fedc_calloc(lay->count ? lay->count : 1, sizeof *tis);
    Fedc__V1__TensorInfo **tptr = fedc_calloc(lay->count ? lay->count : 1, sizeof *tptr);
    int64_t *shapes =
        fedc_calloc((lay->count ? lay->count : 1) * FEDC_TENSOR_MAX_DIMS, sizeof *shapes);
    fedci_buf b = {0};
    fedc_status st = FEDC_OK;
    if (!tis || !tptr || !shapes) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == FEDC_OK && i < lay->count; i++) {
        Fedc__V1__TensorInfo t = FEDC__V1__TENSOR_INFO__INIT;
        t.name = (char *)lay->tensors[i].name;
        t.n_shape = (size_t)lay->tensors[i].ndim;
        for (int d = 0; d < lay->tensors[i].ndim; d++)
            shapes[i * FEDC_TENSOR_MAX_DIMS + (size_t)d] = lay->tensors[i].shape[d];
        t.shape = &shapes[i * FEDC_TENSOR_MAX_DIMS];
        t.offset = lay->tensors[i].offset;
        tis[i] = t;
        tptr[i] = &tis[i];
    }
    if (st == FEDC_OK) {
        mref.version = version;
        mref.sha256 = sha;
        mref.num_params = s->num_params;
        hdr.model = &mref;
        hdr.n_tensors = lay->count;
        hdr.tensors = tptr;
        hdr.chunk_bytes = s->chunk_bytes;
        if (msg) {
            hdr.encoding = s->down_codec;
            hdr.encoded_bytes = msg_len;
        }
        /* the size goes into the header itself: encode once to learn it, then for real */
        st = msg ? fedci_vstream_encode_bytes(&hdr.base, msg, msg_len, s->chunk_bytes, &b, err)
                 : fedci_vstream_encode(&hdr.base, g, s->num_params, s->chunk_bytes, &b, err);
        if (st == FEDC_OK) {
            uint64_t size = b.len;
            for (int k = 0; k < 3 && st == FEDC_OK; k++) {
                mref.size_bytes = size;
                b.len = 0;
                st = msg ? fedci_vstream_encode_bytes(&hdr.base, msg, msg_len, s->chunk_bytes, &b,
                                                      err)
                         : fedci_vstream_encode(&hdr.base, g, s->num_params, s->chunk_bytes, &b,
                                                err);
                if (b.len == size) break;
                size = b.len;
            }
        }
    }
    delta_resp *deltas = NULL;
    size_t ndeltas = 0;
    if (st == FEDC_OK && s->delta_keep)
        st = build_deltas(s, version, held ? held : g, sha, &hdr, b.len, &deltas, &ndeltas, err);
    fedc_free(tis);
    fedc_free(tptr);
    fedc_free(shapes);
    fedc_free(held);
    fedc_codec_destroy(dc); /* msg is no longer used */
    if (st != FEDC_OK) {
        fedci_buf_fini(&b);
        return st;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(b.len, b.data, fedc_free);
    if (!resp) {
        fedci_buf_fini(&b);
        free_deltas(deltas, ndeltas);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the model response");
    }
    char etag[70];
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, FEDCI_CT_STREAM);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                            "public, max-age=31536000, immutable");
    pthread_mutex_lock(&s->lock);
    struct MHD_Response *old = s->model.resp;
    s->model.resp = resp;
    s->model.version = version;
    s->model.size = b.len;
    s->model.num_params = s->num_params;
    memcpy(s->model.sha256, sha, sizeof sha);
    memcpy(s->model.etag, etag, sizeof etag);
    delta_resp *old_deltas = s->deltas;
    size_t old_n = s->ndeltas;
    s->deltas = deltas;
    s->ndeltas = ndeltas;
    pthread_mutex_unlock(&s->lock);
    if (old) MHD_destroy_response(old);
    free_deltas(old_deltas, old_n);
    return FEDC_OK;
}

/* "HOST:PORT", "[V6]:PORT" -> address. */
static fedc_status parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                                int *v6, uint16_t *port, fedc_err *err)
{
    char host[256];
    const char *colon;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof host)
            return fedc_err_set(err, FEDC_ERR_CONFIG, "--listen %s: expected [ADDR]:PORT", listen);
        memcpy(host, listen + 1, (size_t)(end - listen - 1));
        host[end - listen - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof host)
            return fedc_err_set(err, FEDC_ERR_CONFIG, "--listen %s: expected HOST:PORT", listen);
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
    }
    uint64_t p;
    if (fedci_parse_u64(colon + 1, &p) != 0 || p > 65535)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "--listen %s: bad port '%s'", listen, colon + 1);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc != 0 || !res)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "--listen %s: %s", listen, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    *v6 = res->ai_family == AF_INET6;
    *port = (uint16_t)p;
    freeaddrinfo(res);
    return FEDC_OK;
}

/*
 * Accepting: our own thread accepts and hands each connection to libmicrohttpd
 * (MHD_add_connection), which gives it to a worker thread chosen by the socket number: new
 * connections spread over the workers. libmicrohttpd's own accept loop lets whichever worker
 * wakes first take a whole burst, so that clients that connected together (a round's cohort,
 * keeping their connections alive) were all served, and their uploads received, copied, MACed
 * and folded, by one thread while the others idled.
 */
static void *accept_main(void *arg)
{
    fedc_server *s = arg;
    unsigned limit = (unsigned)fedc_config_int(s->cfg, "server.max_connections");
    struct pollfd p[2] = {{s->listen_fd, POLLIN, 0}, {s->accept_wake[0], POLLIN, 0}};
    for (;;) {
        /* at the connection limit, new connections wait in the listen backlog (as with
         * libmicrohttpd's own accepting), not accepted and closed at once */
        const union MHD_DaemonInfo *di =
            MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        int full = di && di->num_connections >= limit;
        if (poll(full ? &p[1] : p, full ? 1 : 2, full ? 50 : -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break; /* stopping */
        if (full) continue;
        if (!(p[0].revents & POLLIN)) { /* an error on the listening socket: do not spin */
            if (p[0].revents) poll(&p[1], 1, 100);
            continue;
        }
        for (;;) {
            di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
            if (di && di->num_connections >= limit) break;
            struct sockaddr_storage peer;
            socklen_t plen = sizeof peer;
            int fd = accept(s->listen_fd, (struct sockaddr *)&peer, &plen);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    /* out of descriptors or memory: retry every 100 ms, say so every 10 s */
                    static _Thread_local double last_warn = -1e9;
                    struct timespec ts;
                    clock_gettime(CLOCK_MONOTONIC, &ts);
                    const double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
                    if (now - last_warn >= 10.0) {
                        fedc_log(FEDC_LOG_WARN, "server",
                                 "accept: %s; retrying every 100 ms (said every 10 s)",
                                 strerror(errno));
                        last_warn = now;
                    }
                    poll(&p[1], 1, 100);
                }
                break; /* EAGAIN: all taken */
            }
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            /* closes fd itself when it cannot take it (connection limit, memory) */
            MHD_add_connection(s->mhd, fd, (struct sockaddr *)&peer, plen);
        }
    }
    return NULL;
}

/* Binds and listens on the address (port 0: any). */
static fedc_status listen_on(fedc_server *s, const struct sockaddr_storage *ss, socklen_t slen,
                             int v6, fedc_err *err)
{
    int fd = socket(ss->ss_family, SOCK_STREAM, 0);
    int one = 1;
    if (fd >= 0) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, (const struct sockaddr *)ss, slen) != 0 || listen(fd, 511) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return fedc_err_set(err, FEDC_ERR_NETWORK, "cannot listen on %s: %s", s->opts.listen,
                            strerror(e));
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6
                            ? ((struct sockaddr_in6 *)&bound)->sin6_port
                            : ((struct sockaddr_in *)&bound)->sin_port);
    s->listen_fd = fd;
    return FEDC_OK;
}

fedc_status fedci_server_http_start(fedc_server *s, fedc_err *err)
{
    struct sockaddr_storage ss;
    socklen_t slen = 0;
    int v6 = 0;
    uint16_t port = 0;
    s->listen_fd = s->accept_wake[0] = s->accept_wake[1] = -1;
    FEDC_TRY(parse_listen(s->opts.listen, &ss, &slen, &v6, &port, err));
    s->free_bufs = fedc_calloc(s->max_uploads, sizeof *s->free_bufs);
    if (!s->free_bufs) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    s->fold_early = fold_eligible(s);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    if (v6) flags |= MHD_USE_IPv6;
    if (s->cert_pem) flags |= MHD_USE_TLS;
    unsigned threads = (unsigned)fedc_config_int(s->cfg, "server.threads");
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
    FEDC_TRY(listen_on(s, &ss, slen, v6, err));
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)fedc_config_int(s->cfg, "server.max_connections"), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)fedc_config_int(s->cfg, "server.connection_timeout"),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_ARRAY,
        s->cert_pem ? tls_opts : no_opts, MHD_OPTION_END);
    if (!s->mhd)
        return fedc_err_set(err, FEDC_ERR_NETWORK, "cannot serve on %s%s", s->opts.listen,
                            s->cert_pem ? " (or the TLS certificate/key were refused)" : "");
    (void)port;
    if (pipe(s->accept_wake) != 0 || fcntl(s->accept_wake[0], F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(s->accept_wake[1], F_SETFD, FD_CLOEXEC) != 0 ||
        pthread_create(&s->acceptor, NULL, accept_main, s) != 0)
        return fedc_err_set(err, FEDC_ERR_NETWORK, "cannot start the accepting thread: %s",
                            strerror(errno));
    s->acceptor_running = 1;
    return FEDC_OK;
}

void fedci_server_http_stop(fedc_server *s)
{
    if (s->acceptor_running) { /* no new connections */
        char b = 1;
        if (write(s->accept_wake[1], &b, 1) != 1) { /* a pipe with room: cannot fail */
        }
        pthread_join(s->acceptor, NULL);
        s->acceptor_running = 0;
    }
    for (int i = 0; i < 2; i++)
        if (s->accept_wake[i] >= 0) close(s->accept_wake[i]);
    s->accept_wake[0] = s->accept_wake[1] = -1;
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
    if (s->mhd) {
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        fedci_server_wake(s, 1);
        pthread_mutex_unlock(&s->lock);
        /* uploads waiting for a buffer: resume them (they answer 503) */
        for (;;) {
            pthread_mutex_lock(&s->pool_lock);
            req *q = s->upq_head;
            int resume = 0;
            struct MHD_Connection *conn = NULL;
            if (q) {
                s->upq_head = q->qnext;
                if (!s->upq_head) s->upq_tail = NULL;
                q->qnext = NULL;
                resume = q->buf_suspended;
                q->buf_suspended = 0;
                conn = q->conn;
            }
            pthread_mutex_unlock(&s->pool_lock);
            if (!q) break;
            if (resume) MHD_resume_connection(conn);
        }
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
    if (s->model.resp) MHD_destroy_response(s->model.resp);
    s->model.resp = NULL;
    free_deltas(s->deltas, s->ndeltas);
    s->deltas = NULL;
    s->ndeltas = 0;
    for (size_t i = 0; i < s->nbases; i++) fedc_free(s->bases[i].model);
    fedc_free(s->bases);
    s->bases = NULL;
    s->nbases = 0;
    for (size_t i = 0; i < s->nfree; i++) fedc_free(s->free_bufs[i]);
    fedc_free(s->free_bufs);
    s->free_bufs = NULL;
    s->nfree = 0;
}

void fedci_server_sort_allow(fedc_server *s)
{
    qsort(s->allow, s->nallow, sizeof *s->allow, allow_cmp);
}
