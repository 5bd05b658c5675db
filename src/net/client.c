/*
 * The federation client: signed HTTP(S) requests through libcurl (one easy handle, kept-alive
 * connection), retries with exponential back-off and jitter, and the check-in / download /
 * train / upload loop around a fedc_trainer. Bodies are MACed with the session key once the
 * server's run key is known (session mode, sign.h), else hashed; result uploads are streamed
 * from the update (or its codec message, compress.upload) without a copy into one body
 * buffer. Contract in fedc/client.h; wire format in wire.h and docs/PROTOCOL.md. Built in
 * client-only configurations.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fedc/alloc.h"
#include "fedc/client.h"
#include "fedc/codec.h"
#include "fedc/log.h"
#include "fedc/privacy.h"
#include "fedc/version.h"
#include "net/sign.h"
#include "net/wire.h"

#define RESP_MAX (16u << 20) /* largest non-stream answer buffered */
#define MAX_AUTH_FAILURES 10 /* consecutive 401s before giving up */
#define DEFAULT_CHUNK (1u << 20)

/* A result stream generated while it is sent: a header frame, then a byte vector (float32
 * update or codec message) cut into Chunk frames whose few framing bytes are made on the fly,
 * so the vector is never copied into one body buffer. The bytes are those of
 * fedci_vstream_encode. */
typedef struct body_src {
    const uint8_t *prefix; /* the header frame */
    size_t prefix_len;
    const uint8_t *data;
    size_t data_len;
    size_t chunk; /* data bytes per Chunk */
    /* cursor */
    int stage; /* 0 prefix, 1 chunk framing, 2 chunk data, 3 end */
    size_t off, clen;
    uint8_t fr[32];
    size_t fr_len;
    const uint8_t *cur; /* src_read: the piece being copied */
    size_t cur_len, pos;
} body_src;

struct fedc_client {
    fedc_client_opts opts;
    char *base;
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
    double connect_timeout, timeout, wait, retry_initial, retry_max, give_up;
    double last_contact;
    int failing;
    volatile sig_atomic_t stop;
    /* the server's settings */
    size_t nsettings;
    char **keys, **values;
    /* the last answer */
    long status;
    fedci_buf resp;
    char resp_etag[80];
    uint32_t retry_after_ms;
    fedci_vstream *vs;
    fedc_status vs_status;
    fedc_err vs_err;
    /* the cached model */
    float *model;
    size_t num_params;
    uint64_t model_version;
    char model_sha[65];
    int have_model;
    const fedc_layout *layout; /* the trainer's, to check downloads against */
    /* the upload body */
    fedci_buf up;
    /* session mode (docs/PROTOCOL.md, "Signing"): the key that MACs request bodies, derived
     * from the server's per-run key in RunInfo; dropped on a 401, fetched again when needed */
    int have_session, session_tried;
    uint8_t session[FEDCI_SESSION_BYTES];
    body_src upsrc; /* the result stream (upload) */
    /* compression: a decoding workspace, the encoded download, the upload codec and the
     * error-feedback residual (kept across this process's rounds) */
    fedc_codec *codec, *up_codec;
    uint8_t *dl_enc;
    size_t dl_cap;
    float *residual;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;
static void do_curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static double cfg_double(const fedc_config *cfg, const char *key)
{
    if (cfg) return fedc_config_double(cfg, key);
    const fedc_config_key *k = fedc_config_key_find(key);
    return k ? strtod(k->def, NULL) : 0;
}

static void emit(fedc_client *c, fedc_client_event *ev)
{
    if (c->opts.on_event) c->opts.on_event(c->opts.user, ev);
}

fedc_status fedc_client_create(const fedc_client_opts *opts, fedc_client **out, fedc_err *err)
{
    *out = NULL;
    if (!opts->server || !opts->key)
        return fedc_err_set(err, FEDC_ERR_INVALID, "the client needs a server URL and a key");
    if (strncmp(opts->server, "https://", 8) != 0 && strncmp(opts->server, "http://", 7) != 0)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "server URL '%.200s' must start with https:// (or http://)",
                            opts->server);
    if (fedci_sodium_init() != 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "libsodium could not initialise");
    pthread_once(&curl_once, do_curl_init);
    if (curl_init_rc != CURLE_OK)
        return fedc_err_set(err, FEDC_ERR_NETWORK, "libcurl could not initialise");
    fedc_client *c = fedc_calloc(1, sizeof *c);
    if (!c) return fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory");
    c->opts = *opts;
    c->base = fedc_strdup(opts->server);
    c->curl = curl_easy_init();
    if (!c->base || !c->curl) {
        fedc_client_destroy(c);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory");
    }
    size_t n = strlen(c->base);
    while (n && c->base[n - 1] == '/') c->base[--n] = '\0';
    c->connect_timeout = cfg_double(opts->cfg, "client.connect_timeout");
    c->timeout = cfg_double(opts->cfg, "client.timeout");
    c->wait = cfg_double(opts->cfg, "client.wait");
    c->retry_initial = cfg_double(opts->cfg, "client.retry_initial");
    c->retry_max = cfg_double(opts->cfg, "client.retry_max");
    c->give_up = cfg_double(opts->cfg, "client.give_up");
    c->last_contact = fedci_mono();
    if (opts->insecure)
        fedc_log(FEDC_LOG_WARN, "client",
                 "TLS certificate verification is OFF (--insecure): for loopback tests only");
    if (strncmp(opts->server, "http://", 7) == 0)
        fedc_log(FEDC_LOG_WARN, "client",
                 "%s is plain HTTP: requests are signed but not "
                 "encrypted",
                 opts->server);
    *out = c;
    return FEDC_OK;
}

void fedc_client_destroy(fedc_client *c)
{
    if (!c) return;
    if (c->curl) curl_easy_cleanup(c->curl);
    fedc_free(c->base);
    for (size_t i = 0; i < c->nsettings; i++) {
        fedc_free(c->keys[i]);
        fedc_free(c->values[i]);
    }
    fedc_free(c->keys);
    fedc_free(c->values);
    fedci_buf_fini(&c->resp);
    fedci_buf_fini(&c->up);
    fedc_free(c->model);
    sodium_memzero(c->session, sizeof c->session);
    fedc_codec_destroy(c->codec);
    fedc_codec_destroy(c->up_codec);
    fedc_free(c->dl_enc);
    fedc_free(c->residual);
    fedc_free(c);
}

void fedc_client_stop(fedc_client *c) { c->stop = 1; }

/* ---- one HTTP exchange ---- */

static size_t on_write(char *p, size_t size, size_t nmemb, void *user)
{
    fedc_client *c = user;
    size_t len = size * nmemb;
    long code = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &code);
    if ((code == 200 || code == 226) && c->vs) {
        if (c->vs_status != FEDC_OK) return 0;
        c->vs_status = fedci_vstream_feed(c->vs, (const uint8_t *)p, len, &c->vs_err);
        return c->vs_status == FEDC_OK ? len : 0;
    }
    if (c->resp.len + len > RESP_MAX) return 0;
    return fedci_buf_append(&c->resp, p, len, NULL) == FEDC_OK ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *user)
{
    fedc_client *c = user;
    size_t len = size * nmemb;
    char line[256];
    size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, p, n);
    line[n] = '\0';
    while (n && (line[n - 1] == '\r' || line[n - 1] == '\n')) line[--n] = '\0';
    if (strncasecmp(line, "ETag:", 5) == 0) {
        const char *v = line + 5;
        while (*v == ' ') v++;
        snprintf(c->resp_etag, sizeof c->resp_etag, "%.79s", v);
    } else if (strncasecmp(line, "Retry-After:", 12) == 0) {
        long s = strtol(line + 12, NULL, 10);
        if (s > 0 && s < 3600) c->retry_after_ms = (uint32_t)s * 1000;
    }
    return len;
}

/* ---- stream bodies sent without a copy ---- */


static void src_frame(body_src *b)
{
    b->clen = b->data_len - b->off < b->chunk ? b->data_len - b->off : b->chunk;
    size_t msg = 1 + fedci_varint_size(b->clen) + b->clen;
    if (b->off) msg += 1 + fedci_varint_size(b->off);
    b->fr_len = fedci_varint_put(b->fr, msg);
    if (b->off) { /* proto3: a zero offset is not written */
        b->fr[b->fr_len++] = 0x08;
        b->fr_len += fedci_varint_put(b->fr + b->fr_len, b->off);
    }
    b->fr[b->fr_len++] = 0x12;
    b->fr_len += fedci_varint_put(b->fr + b->fr_len, b->clen);
}

static void src_rewind(body_src *b)
{
    b->stage = 0;
    b->off = b->pos = b->cur_len = 0;
    b->cur = NULL;
}

/* The next piece of the body (*n bytes at *p); 0 at the end. */
static int src_next(body_src *b, const uint8_t **p, size_t *n)
{
    for (;;) {
        switch (b->stage) {
        case 0:
            b->stage = 1;
            if (b->data_len) src_frame(b);
            if (b->prefix_len) {
                *p = b->prefix;
                *n = b->prefix_len;
                return 1;
            }
            break;
        case 1:
            if (b->off >= b->data_len) {
                b->stage = 3;
                break;
            }
            b->stage = 2;
            *p = b->fr;
            *n = b->fr_len;
            return 1;
        case 2:
            *p = b->data + b->off;
            *n = b->clen;
            b->off += b->clen;
            b->stage = 1;
            if (b->off < b->data_len) src_frame(b);
            return 1;
        default: return 0;
        }
    }
}

static size_t src_total(const body_src *b)
{
    body_src x = *b;
    src_rewind(&x);
    size_t total = 0, n;
    const uint8_t *p;
    while (src_next(&x, &p, &n)) total += n;
    return total;
}

/* libcurl's read callback over a body_src (rewound before the transfer). A framing piece
 * stays valid until the next src_next, which is called only once it has been copied. */
static size_t src_read(char *buf, size_t size, size_t nitems, void *user)
{
    body_src *b = user;
    size_t room = size * nitems, done = 0;
    while (done < room) {
        if (b->pos == b->cur_len) {
            if (!src_next(b, &b->cur, &b->cur_len)) {
                b->cur_len = b->pos = 0;
                break;
            }
            b->pos = 0;
        }
        size_t take = b->cur_len - b->pos;
        if (take > room - done) take = room - done;
        memcpy(buf + done, b->cur + b->pos, take);
        done += take;
        b->pos += take;
    }
    return done;
}

/* Sends one signed request. FEDC_OK when an HTTP answer came back (c->status, c->resp);
 * FEDC_ERR_NETWORK or FEDC_ERR_TIMEOUT when it did not. The body is body[0..len-1], or src
 * (then body is NULL). */
static fedc_status http_ex(fedc_client *c, const char *method, const char *path, const void *body,
                           size_t len, body_src *src, double timeout, const char *if_none_match,
                           fedci_vstream *vs, fedc_err *err)
{
    char url[2048], auth[FEDCI_AUTH_MAX + 32], inm[128];
    snprintf(url, sizeof url, "%s%s", c->base, path);
    fedci_auth a;
    int session = c->have_session;
    if (src) len = src_total(src);
    if (session) {
        /* session mode: Poly1305 of the body (3-4x faster than the hash on large uploads) */
        fedci_mac_state ms;
        fedci_auth_begin(c->opts.key, fedci_now_ms(), &a);
        fedci_mac_init(&ms, c->session, a.nonce);
        if (src) {
            const uint8_t *p;
            size_t n;
            src_rewind(src);
            while (src_next(src, &p, &n)) fedci_mac_update(&ms, p, n);
        } else {
            fedci_mac_update(&ms, body ? body : "", body ? len : 0);
        }
        fedci_mac_final(&ms, a.mac);
        fedci_auth_finish_mac(c->opts.key, method, path, &a);
    } else {
        uint8_t h[FEDCI_HASH_BYTES];
        if (src) {
            fedci_hash_state hs;
            const uint8_t *p;
            size_t n;
            fedci_body_hash_init(&hs);
            src_rewind(src);
            while (src_next(src, &p, &n)) fedci_body_hash_update(&hs, p, n);
            fedci_body_hash_final(&hs, h);
        } else {
            fedci_body_hash(body ? body : "", body ? len : 0, h);
        }
        fedci_auth_sign(c->opts.key, method, path, h, fedci_now_ms(), &a);
    }
    strcpy(auth, "Authorization: ");
    fedci_auth_format(&a, auth + strlen(auth), sizeof auth - strlen(auth));
    struct curl_slist *hdrs = curl_slist_append(NULL, auth);
    if (body || src) hdrs = curl_slist_append(hdrs, "Content-Type: " FEDCI_CT_STREAM);
    if (if_none_match) {
        snprintf(inm, sizeof inm, "If-None-Match: %s", if_none_match);
        hdrs = curl_slist_append(hdrs, inm);
        /* we hold that version: an exact delta from it is welcome (RFC 3229; 226 IM Used) */
        if (hdrs) hdrs = curl_slist_append(hdrs, "A-IM: fedc-xdelta");
    }
    if (!hdrs) return fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory");
    CURL *k = c->curl;
    curl_easy_reset(k); /* keeps the connection alive */
    curl_easy_setopt(k, CURLOPT_URL, url);
    curl_easy_setopt(k, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(k, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
    curl_easy_setopt(k, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(k, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(k, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(k, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(k, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(k, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->opts.ca_file) curl_easy_setopt(k, CURLOPT_CAINFO, c->opts.ca_file);
    if (c->opts.insecure) {
        curl_easy_setopt(k, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(k, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (src) {
        src_rewind(src);
        curl_easy_setopt(k, CURLOPT_POST, 1L);
        curl_easy_setopt(k, CURLOPT_READFUNCTION, src_read);
        /* fewer, larger sends than the 64 KiB default for large uploads */
        if (len >= (4u << 20)) curl_easy_setopt(k, CURLOPT_UPLOAD_BUFFERSIZE, 512L << 10);
        curl_easy_setopt(k, CURLOPT_READDATA, src);
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else if (body) {
        curl_easy_setopt(k, CURLOPT_POST, 1L);
        curl_easy_setopt(k, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        curl_easy_setopt(k, CURLOPT_HTTPGET, 1L);
    }
    c->resp.len = 0;
    c->resp_etag[0] = '\0';
    c->retry_after_ms = 0;
    c->status = 0;
    c->vs = vs;
    c->vs_status = FEDC_OK;
    c->errbuf[0] = '\0';
    CURLcode rc = curl_easy_perform(k);
    curl_slist_free_all(hdrs);
    c->vs = NULL;
    curl_easy_getinfo(k, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->status == 401 && session) {
        /* the server may have restarted with a new key: sign the next requests in hash mode
         * and fetch its session key again before the next large upload */
        c->have_session = 0;
        c->session_tried = 0;
    }
    if (vs && c->vs_status != FEDC_OK) {
        if (err) *err = c->vs_err;
        return c->vs_status;
    }
    if (rc != CURLE_OK) {
        const char *msg = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
        if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
            rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_ISSUER_ERROR)
            /* not transient: retrying cannot make the certificate valid */
            return fedc_err_set(err, FEDC_ERR_CRYPTO,
                                "%s: TLS: the server's certificate was not accepted: %s (give "
                                "the CA that signed it with --ca)",
                                url, msg);
        if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL)
            return fedc_err_set(err, FEDC_ERR_INVALID, "%s: %s", url, msg);
        return fedc_err_set(err,
                            rc == CURLE_OPERATION_TIMEDOUT ? FEDC_ERR_TIMEOUT : FEDC_ERR_NETWORK,
                            "%s %s: %s", method, url, msg);
    }
    return FEDC_OK;
}

static fedc_status http(fedc_client *c, const char *method, const char *path, const void *body,
                        size_t len, double timeout, const char *if_none_match, fedci_vstream *vs,
                        fedc_err *err)
{
    return http_ex(c, method, path, body, len, NULL, timeout, if_none_match, vs, err);
}

/* The Error message of a refusal, for the log. */
static void error_text(fedc_client *c, char *buf, size_t size)
{
    ProtobufCMessage *m = NULL;
    snprintf(buf, size, "HTTP %ld", c->status);
    if (c->resp.len && fedci_unpack(&fedc__v1__error__descriptor, c->resp.data, c->resp.len,
                                    "error", &m, NULL) == FEDC_OK) {
        Fedc__V1__Error *e = (Fedc__V1__Error *)m;
        snprintf(buf, size, "HTTP %ld: %.120s", c->status, e->message);
        if (e->retry_after_ms && !c->retry_after_ms) c->retry_after_ms = e->retry_after_ms;
    }
    fedci_unpacked_free(m);
}

/* Classifies an answer: FEDC_OK (200 or 304), retryable failures (FEDC_ERR_NETWORK for 5xx),
 * FEDC_ERR_AUTH (401), FEDC_ERR_STATE (409), FEDC_ERR_INVALID (other 4xx). */
static fedc_status classify(fedc_client *c, const char *what, fedc_err *err)
{
    if (c->status == 200 || c->status == 226 || c->status == 304) return FEDC_OK;
    char txt[160];
    error_text(c, txt, sizeof txt);
    if (c->status >= 500) return fedc_err_set(err, FEDC_ERR_NETWORK, "%s: %s", what, txt);
    if (c->status == 401)
        return fedc_err_set(err, FEDC_ERR_AUTH,
                            "%s: %s: the server refused our signature (is this key on its "
                            "allow-list? is the clock right?)",
                            what, txt);
    if (c->status == 409) return fedc_err_set(err, FEDC_ERR_STATE, "%s: %s", what, txt);
    return fedc_err_set(err, FEDC_ERR_INVALID, "%s: %s", what, txt);
}

/* ---- retries ---- */

static int sleep_interruptible(fedc_client *c, double seconds)
{
    double until = fedci_mono() + seconds;
    while (!c->stop) {
        double left = until - fedci_mono();
        if (left <= 0) return 0;
        if (left > 0.05) left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static double backoff(fedc_client *c, unsigned k)
{
    double d = c->retry_initial * pow(2.0, k > 30 ? 30 : k);
    if (d > c->retry_max) d = c->retry_max;
    /* equal jitter: half fixed, half uniform */
    return d / 2 + (d / 2) * ((double)randombytes_uniform(10001) / 10000.0);
}

typedef fedc_status (*op_fn)(fedc_client *c, void *arg, fedc_err *err);

/* Runs op until it succeeds or fails for a reason retrying cannot fix. */
static fedc_status with_retries(fedc_client *c, const char *what, op_fn op, void *arg,
                                unsigned max_tries, fedc_err *err)
{
    unsigned auth_failures = 0;
    for (unsigned k = 0;; k++) {
        if (c->stop) return fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
        fedc_err e;
        fedc_err_clear(&e);
        fedc_status st = op(c, arg, &e);
        int answered = c->status > 0;
        if (answered) c->last_contact = fedci_mono();
        if (st == FEDC_OK) {
            if (c->failing) {
                fedc_client_event ev = {.kind = FEDC_CLIENT_CONNECTED};
                emit(c, &ev);
                fedc_log(FEDC_LOG_INFO, "client", "%s: the server answers again", what);
            }
            c->failing = 0;
            return FEDC_OK;
        }
        int retry = st == FEDC_ERR_NETWORK || st == FEDC_ERR_TIMEOUT;
        if (st == FEDC_ERR_AUTH && ++auth_failures < MAX_AUTH_FAILURES) retry = 1;
        if (st != FEDC_ERR_AUTH) auth_failures = 0;
        if (!retry || (max_tries && k + 1 >= max_tries)) {
            if (err) *err = e;
            return st;
        }
        if (c->give_up > 0 && fedci_mono() - c->last_contact > c->give_up)
            return fedc_err_set(err, FEDC_ERR_TIMEOUT, "%s: no answer from %s for %.0f s: %s", what,
                                c->base, c->give_up, fedc_err_message(&e));
        double d = backoff(c, k);
        if (c->retry_after_ms && c->retry_after_ms / 1000.0 > d)
            d = c->retry_after_ms / 1000.0 * (1 + 0.25 * randombytes_uniform(1001) / 1000.0);
        c->failing = 1;
        fedc_log(FEDC_LOG_INFO, "client", "%s failed (%s); retrying in %.1f s", what,
                 fedc_err_message(&e), d);
        fedc_client_event ev = {.kind = FEDC_CLIENT_RETRY,
                                .seconds = d,
                                .message = fedc_err_message(&e),
                                .http_status = (int)c->status};
        emit(c, &ev);
        if (sleep_interruptible(c, d) != 0) return fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
    }
}

/* ---- settings ---- */

static fedc_status keep_settings(fedc_client *c, size_t n, char **keys, char **values,
                                 fedc_err *err)
{
    for (size_t i = 0; i < c->nsettings; i++) {
        fedc_free(c->keys[i]);
        fedc_free(c->values[i]);
    }
    fedc_free(c->keys);
    fedc_free(c->values);
    c->nsettings = 0;
    c->keys = fedc_calloc(n ? n : 1, sizeof(char *));
    c->values = fedc_calloc(n ? n : 1, sizeof(char *));
    if (!c->keys || !c->values) return fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory");
    for (size_t i = 0; i < n; i++) {
        c->keys[i] = fedc_strdup(keys[i] ? keys[i] : "");
        c->values[i] = fedc_strdup(values[i] ? values[i] : "");
        if (!c->keys[i] || !c->values[i]) {
            fedc_free(c->keys[i]);
            fedc_free(c->values[i]);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory");
        }
        c->nsettings++;
    }
    return FEDC_OK;
}

fedc_status fedc_client_apply_settings(const fedc_client *c, fedc_config *cfg, fedc_err *err)
{
    for (size_t i = 0; i < c->nsettings; i++) {
        char sec[64];
        const char *dot = strchr(c->keys[i], '.');
        if (!dot || (size_t)(dot - c->keys[i]) >= sizeof sec)
            return fedc_err_set(err, FEDC_ERR_CONFIG, "server setting '%.80s' is not section.key",
                                c->keys[i]);
        memcpy(sec, c->keys[i], (size_t)(dot - c->keys[i]));
        sec[dot - c->keys[i]] = '\0';
        if (!fedci_setting_is_sent(sec, dot + 1))
            return fedc_err_set(err, FEDC_ERR_CONFIG,
                                "the server sent setting '%.80s', which a server may not set",
                                c->keys[i]);
        if (fedc_config_set_value(cfg, sec, dot + 1, c->values[i], "server") != FEDC_OK)
            return fedc_err_set(err, FEDC_ERR_CONFIG, "%s", fedc_config_errmsg(cfg));
    }
    return FEDC_OK;
}

/* ---- GET /v1/run ---- */

static fedc_status op_hello(fedc_client *c, void *arg, fedc_err *err)
{
    fedc_client_run_info *info = arg;
    FEDC_TRY(http(c, "GET", "/v1/run", NULL, 0, c->timeout, NULL, NULL, err));
    FEDC_TRY(classify(c, "GET /v1/run", err));
    ProtobufCMessage *m;
    FEDC_TRY(fedci_unpack(&fedc__v1__run_info__descriptor, c->resp.data, c->resp.len, "run info",
                          &m, err));
    Fedc__V1__RunInfo *ri = (Fedc__V1__RunInfo *)m;
    memset(info, 0, sizeof *info);
    snprintf(info->run_id, sizeof info->run_id, "%s", ri->run_id);
    snprintf(info->strategy, sizeof info->strategy, "%s", ri->strategy);
    info->client_id = ri->client_id;
    info->rounds = ri->rounds;
    info->round = ri->round;
    info->num_params = ri->num_params;
    if (ri->protocol_revision >= 2 && ri->session_key.len == FEDCI_KX_BYTES) {
        fedc_err serr;
        if (fedci_session_client(c->opts.key, ri->session_key.data, c->session, &serr) == FEDC_OK)
            c->have_session = 1;
        else
            fedc_log(FEDC_LOG_WARN, "client", "%s: request bodies are hashed instead",
                     fedc_err_message(&serr));
    }
    char **k = fedc_calloc(ri->n_settings ? ri->n_settings : 1, sizeof *k);
    char **v = fedc_calloc(ri->n_settings ? ri->n_settings : 1, sizeof *v);
    fedc_status st =
        (!k || !v) ? fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory") : FEDC_OK;
    for (size_t i = 0; st == FEDC_OK && i < ri->n_settings; i++) {
        k[i] = ri->settings[i]->key;
        v[i] = ri->settings[i]->value;
    }
    if (st == FEDC_OK) st = keep_settings(c, ri->n_settings, k, v, err);
    fedc_free(k);
    fedc_free(v);
    fedci_unpacked_free(m);
    return st;
}

fedc_status fedc_client_hello(fedc_client *c, fedc_client_run_info *info, fedc_err *err)
{
    return with_retries(c, "hello", op_hello, info, 0, err);
}

/* ---- model download ---- */

typedef struct dl_arg {
    uint64_t version;
    const char *expect_sha; /* may be NULL */
    float *dst;
    size_t n;
    char sha[65];
    /* an exact delta is welcome: dst holds version base_version, of SHA-256 base_sha */
    int try_delta;
    uint64_t base_version;
    char base_sha[65];
} dl_arg;

typedef struct dl_ctx {
    fedc_client *c;
    dl_arg *a;
    fedci_vstream *vs;
    int encoded; /* the chunks carry a codec message (ModelHeader.encoding), into c->dl_enc */
    int delta;   /* ... an exact delta against a->base_version (encoding "xdelta") */
} dl_ctx;

static fedc_status check_model_header(void *user, const ProtobufCMessage *m, float **dest,
                                      uint64_t *num_floats, fedc_err *err)
{
    dl_ctx *x = user;
    const Fedc__V1__ModelHeader *h = (const Fedc__V1__ModelHeader *)m;
    if (!h->model)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "model stream: header without a model reference");
    if (h->model->version != x->a->version)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "model stream: version %" PRIu64 ", asked for %" PRIu64,
                            h->model->version, x->a->version);
    if (h->model->num_params != x->a->n)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "the server's model has %" PRIu64 " parameters, this trainer's %zu",
                            h->model->num_params, x->a->n);
    const fedc_layout *lay = x->c->layout;
    if (lay) {
        if (h->n_tensors != lay->count)
            return fedc_err_set(err, FEDC_ERR_SHAPE,
                                "the server's model has %zu tensors, this trainer's %zu: check "
                                "model.spec and the dataset",
                                h->n_tensors, lay->count);
        for (size_t i = 0; i < lay->count; i++) {
            const Fedc__V1__TensorInfo *t = h->tensors[i];
            const fedc_tensor_info *u = &lay->tensors[i];
            int ok = t && strcmp(t->name, u->name) == 0 && t->offset == u->offset &&
                     t->n_shape == (size_t)u->ndim;
            for (int d = 0; ok && d < u->ndim; d++) ok = t->shape[d] == u->shape[d];
            if (!ok)
                return fedc_err_set(err, FEDC_ERR_SHAPE,
                                    "the server's tensor %zu ('%.40s') differs from this "
                                    "trainer's ('%s'): check model.spec, the dataset and that "
                                    "both run the same fedc version",
                                    i, t ? t->name : "?", u->name);
        }
    }
    snprintf(x->a->sha, sizeof x->a->sha, "%s", h->model->sha256);
    if (h->encoding && strcmp(h->encoding, "xdelta") == 0) {
        if (!x->a->try_delta)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "model stream: a delta against version %" PRIu64
                                ", we asked for a full model",
                                h->base_version);
        /* The server picked the base by our ETag, the cached model's SHA-256: another version
         * with that hash is the same model (a round that changed nothing). The apply checks
         * the cached model against the delta's base hash. */
        x->a->base_version = h->base_version;
        x->delta = 1;
    }
    if (h->encoding && h->encoding[0]) {
        /* compress.download: a codec message, decoded once whole (op_download) */
        uint64_t max = (uint64_t)x->a->n * 5 + (64u << 10);
        if (h->encoded_bytes == 0 || h->encoded_bytes > max)
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "model stream: encoded model of %" PRIu64 " bytes (at most %" PRIu64
                                " for %zu parameters)",
                                h->encoded_bytes, max, x->a->n);
        if (x->c->dl_cap < h->encoded_bytes) {
            uint8_t *p = fedc_realloc(x->c->dl_enc, (size_t)h->encoded_bytes);
            if (!p) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the model");
            x->c->dl_enc = p;
            x->c->dl_cap = (size_t)h->encoded_bytes;
        }
        x->encoded = 1;
        x->vs->unit = 1;
        *dest = (float *)(void *)x->c->dl_enc;
        *num_floats = h->encoded_bytes;
        return FEDC_OK;
    }
    *dest = x->a->dst;
    *num_floats = x->a->n;
    return FEDC_OK;
}

static fedc_status op_download(fedc_client *c, void *arg, fedc_err *err)
{
    dl_arg *a = arg;
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%" PRIu64, a->version);
    fedci_vstream vs;
    dl_ctx x = {c, a, &vs, 0, 0};
    char inm[80];
    if (a->try_delta) snprintf(inm, sizeof inm, "\"%s\"", a->base_sha);
    fedci_vstream_init(&vs, FEDCI_VS_MODEL, RESP_MAX, 64u << 20, check_model_header, &x);
    fedc_status st =
        http(c, "GET", path, NULL, 0, c->timeout, a->try_delta ? inm : NULL, &vs, err);
    if (st == FEDC_OK) st = classify(c, path, err);
    if (st == FEDC_OK && c->status == 304 && a->try_delta) {
        /* Our cached base is this version's representation: the model did not change between
         * the versions (e.g. a round of all-zero updates). dst already holds it. */
        fedci_vstream_fini(&vs);
        if (a->expect_sha && strcmp(a->expect_sha, a->base_sha) != 0) {
            fedc_log(FEDC_LOG_WARN, "client",
                     "model %" PRIu64 ": HTTP 304 for our cached model %s, but the task "
                     "announced %s; downloading it in full",
                     a->version, a->base_sha, a->expect_sha);
            a->try_delta = 0;
            return op_download(c, a, err);
        }
        memcpy(a->sha, a->base_sha, sizeof a->sha);
        return FEDC_OK;
    }
    if (st == FEDC_OK && (c->status == 200 || c->status == 226))
        st = fedci_vstream_finish(&vs, err);
    if (st == FEDC_OK && c->status != 200 && c->status != 226)
        st = fedc_err_set(err, FEDC_ERR_NETWORK, "model %" PRIu64 ": HTTP %ld without a model",
                          a->version, c->status);
    if (st == FEDC_OK && (c->status == 226) != x.delta)
        st = fedc_err_set(err, FEDC_ERR_FORMAT, "model %" PRIu64 ": HTTP %ld with a%s stream",
                          a->version, c->status, x.delta ? " delta" : " full model");
    size_t enc_len = (size_t)vs.filled;
    fedci_vstream_fini(&vs);
    if (st != FEDC_OK) return st;
    if (x.delta) {
        /* exact delta (docs/COMPRESSION.md): XORed into the cached model in place, which is
         * left as it was on any error; then the full model is asked for */
        if (!c->codec) FEDC_TRY(fedc_codec_create_str("none", &c->codec, err));
        fedc_err derr;
        char got[65];
        if (fedc_codec_xdelta_apply(c->codec, c->dl_enc, enc_len, a->dst, a->n, a->base_version,
                                    got, &derr) != FEDC_OK) {
            fedc_log(FEDC_LOG_INFO, "client", "model %" PRIu64 ": %s; downloading it in full",
                     a->version, fedc_err_message(&derr));
            a->try_delta = 0;
            return op_download(c, a, err);
        }
        if (strcmp(got, a->sha) != 0 || (a->expect_sha && strcmp(got, a->expect_sha) != 0)) {
            a->try_delta = 0; /* the cache is no longer the base: the retry downloads in full */
            return fedc_err_set(err, FEDC_ERR_NETWORK,
                                "model %" PRIu64 ": the delta gives a model hashing to %s, "
                                "announced %s",
                                a->version, got, a->expect_sha ? a->expect_sha : a->sha);
        }
        memcpy(a->sha, got, sizeof got);
        return FEDC_OK;
    }
    if (x.encoded) {
        if (!c->codec) FEDC_TRY(fedc_codec_create_str("none", &c->codec, err));
        fedc_err derr;
        if (fedc_codec_decode(c->codec, c->dl_enc, enc_len, a->dst, a->n, &derr) != FEDC_OK)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "model %" PRIu64 ": %s", a->version,
                                fedc_err_message(&derr));
    }
    char got[65];
    fedc_vec_sha256_hex(a->n, a->dst, got);
    if (strcmp(got, a->sha) != 0 || (a->expect_sha && strcmp(got, a->expect_sha) != 0))
        /* corrupt in transit or a server bug: retry the download */
        return fedc_err_set(err, FEDC_ERR_NETWORK,
                            "model %" PRIu64 ": downloaded parameters hash to %s, announced %s",
                            a->version, got, a->expect_sha ? a->expect_sha : a->sha);
    memcpy(a->sha, got, sizeof got);
    return FEDC_OK;
}

fedc_status fedc_client_download(fedc_client *c, uint64_t version, float *params, size_t num_params,
                                 char sha[65], fedc_err *err)
{
    dl_arg a = {version, NULL, params, num_params, "", 0, 0, ""};
    FEDC_TRY(with_retries(c, "model download", op_download, &a, 0, err));
    if (sha) memcpy(sha, a.sha, 65);
    return FEDC_OK;
}

/* The task's model into the cache. */
static fedc_status ensure_model(fedc_client *c, const Fedc__V1__ModelRef *ref, fedc_err *err)
{
    if (c->have_model && c->model_version == ref->version && strcmp(c->model_sha, ref->sha256) == 0)
        return FEDC_OK;
    /* holding an older version: offer it as a delta base (the server answers with a delta
     * only when it kept that version and the delta is smaller) */
    dl_arg a = {ref->version, ref->sha256, c->model, c->num_params, "", 0, 0, ""};
    if (c->have_model && c->model_version < ref->version) {
        a.try_delta = 1;
        a.base_version = c->model_version;
        memcpy(a.base_sha, c->model_sha, sizeof a.base_sha);
    }
    c->have_model = 0;
    FEDC_TRY(with_retries(c, "model download", op_download, &a, 0, err));
    c->model_version = ref->version;
    memcpy(c->model_sha, a.sha, sizeof c->model_sha);
    c->have_model = 1;
    return FEDC_OK;
}

/* ---- check-in ---- */

typedef struct checkin_arg {
    const fedc_trainer *trainer;
    uint32_t client_id;
    int known_id;
    ProtobufCMessage *resp;
} checkin_arg;

static fedc_status op_checkin(fedc_client *c, void *arg, fedc_err *err)
{
    checkin_arg *a = arg;
    Fedc__V1__CheckinRequest rq = FEDC__V1__CHECKIN_REQUEST__INIT;
    Fedc__V1__ClientInfo info = FEDC__V1__CLIENT_INFO__INIT;
    char *caps[] = {"fit"};
    info.n_capabilities = 1;
    info.capabilities = caps;
    info.software = "fedc/" FEDC_VERSION;
    if (a->known_id && a->trainer->ops->num_examples)
        info.num_examples = a->trainer->ops->num_examples(a->trainer->shared, a->client_id);
    rq.info = &info;
    rq.wait_ms = (uint32_t)(c->wait * 1000);
    fedci_buf b = {0};
    fedc_status st = fedci_pack(&rq.base, &b, err);
    if (st == FEDC_OK)
        st = http(c, "POST", "/v1/checkin", b.data ? (void *)b.data : (void *)"", b.len,
                  c->wait + c->timeout, NULL, NULL, err);
    fedci_buf_fini(&b);
    if (st == FEDC_OK) st = classify(c, "check-in", err);
    if (st == FEDC_OK)
        st = fedci_unpack(&fedc__v1__checkin_response__descriptor, c->resp.data, c->resp.len,
                          "check-in answer", &a->resp, err);
    return st;
}

/* ---- result upload ---- */

typedef struct upload_arg {
    const Fedc__V1__Task *task;
} upload_arg;

static fedc_status op_upload(fedc_client *c, void *arg, fedc_err *err)
{
    upload_arg *a = arg;
    char path[160];
    if (!c->have_session && !c->session_tried) {
        /* the server's session key, for the MAC: once per server run (a failure only means
         * the body is hashed) */
        fedc_client_run_info info;
        c->session_tried = 1;
        (void)op_hello(c, &info, NULL);
    }
    snprintf(path, sizeof path, "/v1/tasks/%s/result", a->task->task_id);
    FEDC_TRY(http_ex(c, "POST", path, NULL, 0, &c->upsrc, c->timeout, NULL, NULL, err));
    return classify(c, "result upload", err);
}

static fedc_status build_result(fedc_client *c, const Fedc__V1__Task *task, const fedc_fit_out *out,
                                double fit_seconds, const fedc_dp_client_report *dp, fedc_err *err)
{
    Fedc__V1__ResultHeader h = FEDC__V1__RESULT_HEADER__INIT;
    Fedc__V1__DpReport rep = FEDC__V1__DP_REPORT__INIT;
    if (dp) {
        rep.unclipped = dp->unclipped != 0;
        h.dp = &rep;
    }
    h.task_id = task->task_id;
    h.round = task->round;
    h.stage = FEDC__V1__STAGE__STAGE_FIT;
    h.num_params = c->num_params;
    h.num_examples = out->num_examples;
    h.train_loss = out->train_loss;
    h.loss_before = out->loss_before;
    h.steps = out->steps;
    h.fit_seconds = fit_seconds;
    uint32_t chunk = task->chunk_bytes ? task->chunk_bytes : DEFAULT_CHUNK;
    const uint8_t *data = (const uint8_t *)out->update;
    size_t data_len = c->num_params * sizeof(float);
    if (task->upload_encoding && task->upload_encoding[0] &&
        strcmp(task->upload_encoding, "none") != 0) {
        /* compress.upload: encoded as `fedc sim` encodes it (stream (seed, round, client)),
         * with error feedback when the task says so (the residual stays in this process) */
        if (!c->up_codec || strcmp(fedc_codec_name(c->up_codec), task->upload_encoding) != 0) {
            fedc_codec_destroy(c->up_codec);
            c->up_codec = NULL;
            FEDC_TRY(fedc_codec_create_str(task->upload_encoding, &c->up_codec, err));
        }
        fedc_codec_ctx ctx = {task->config->seed, task->round, task->client_id, c->layout, 0};
        size_t len = 0;
        if (task->error_feedback) {
            if (!c->residual && !(c->residual = fedc_calloc(c->num_params, sizeof(float))))
                return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the residual");
            FEDC_TRY(fedc_codec_encode_ef(c->up_codec, out->update, c->residual, c->num_params,
                                          &ctx, &data, &len, err));
        } else {
            FEDC_TRY(fedc_codec_encode(c->up_codec, out->update, c->num_params, &ctx, &data, &len,
                                       err));
        }
        data_len = len;
        h.encoding = (char *)fedc_codec_name(c->up_codec);
        h.encoded_bytes = len;
    } else {
        chunk &= ~3u;
        if (chunk == 0) chunk = 4;
    }
    /* the header frame only: the update follows from where it is (body_src) */
    c->up.len = 0;
    FEDC_TRY(fedci_frame_append(&h.base, &c->up, err));
    memset(&c->upsrc, 0, sizeof c->upsrc);
    c->upsrc.prefix = c->up.data;
    c->upsrc.prefix_len = c->up.len;
    c->upsrc.data = data;
    c->upsrc.data_len = data_len;
    c->upsrc.chunk = chunk;
    return FEDC_OK;
}

/* ---- SecAgg+ stages (client_secagg.c drives them through these) ---- */

typedef struct sa_req {
    const char *path;
    const uint8_t *body; /* POST; NULL: GET */
    size_t len;
    unsigned tries;
} sa_req;

static fedc_status op_secagg(fedc_client *c, void *arg, fedc_err *err)
{
    sa_req *a = arg;
    c->resp.len = 0;
    a->tries++;
    FEDC_TRY(http(c, a->body ? "POST" : "GET", a->path, a->body, a->len, c->timeout, NULL, NULL,
                  err));
    fedc_status st = classify(c, a->body ? "secagg message" : "secagg poll", err);
    if (st == FEDC_ERR_STATE && a->body && a->tries > 1) {
        /* A retry after a lost answer: the first attempt may have been taken (the server
         * refuses a stage's message twice). Go on: the next stage's poll tells whether this
         * client is still in the round. */
        fedc_log(FEDC_LOG_INFO, "client", "%s; an earlier attempt may have been taken",
                 fedc_err_message(err));
        return FEDC_OK;
    }
    return st;
}

static fedc_status sa_post(void *ctx, const char *path, const uint8_t *body, size_t len,
                           fedc_err *err)
{
    sa_req a = {path, body ? body : (const uint8_t *)"", len, 0};
    return with_retries(ctx, "secagg message", op_secagg, &a, 10, err);
}

static fedc_status sa_get(void *ctx, const char *path, const uint8_t **resp, size_t *len,
                          fedc_err *err)
{
    fedc_client *c = ctx;
    sa_req a = {path, NULL, 0, 0};
    FEDC_TRY(with_retries(c, "secagg poll", op_secagg, &a, 10, err));
    *resp = c->resp.data ? c->resp.data : (const uint8_t *)"";
    *len = c->resp.len;
    return FEDC_OK;
}

static int sa_sleep(void *ctx, double seconds) { return sleep_interruptible(ctx, seconds); }

/* ---- the loop ---- */

static fedc_status run_task(fedc_client *c, const fedc_trainer *trainer, void *worker,
                            float *update, const fedc_config *cfg, const Fedc__V1__Task *task,
                            fedc_client_summary *sum, fedc_err *err)
{
    fedc_client_event ev = {
        .kind = FEDC_CLIENT_TASK, .round = task->round, .attempt = task->attempt};
    emit(c, &ev);
    if (!task->model || !task->config)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "task without a model or a config");
    if (task->model->num_params != c->num_params)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "the server's model has %" PRIu64 " parameters, this trainer's %zu",
                            task->model->num_params, c->num_params);
    if (task->config->n_settings) {
        char **k = fedc_calloc(task->config->n_settings, sizeof *k);
        char **v = fedc_calloc(task->config->n_settings, sizeof *v);
        fedc_status st = (!k || !v) ? fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory") : FEDC_OK;
        for (size_t i = 0; st == FEDC_OK && i < task->config->n_settings; i++) {
            k[i] = task->config->settings[i]->key;
            v[i] = task->config->settings[i]->value;
        }
        if (st == FEDC_OK) st = keep_settings(c, task->config->n_settings, k, v, err);
        fedc_free(k);
        fedc_free(v);
        FEDC_TRY(st);
    }
    fedc_err merr;
    fedc_status mst = ensure_model(c, task->model, &merr);
    if (mst == FEDC_ERR_INVALID || mst == FEDC_ERR_STATE || mst == FEDC_ERR_FORMAT) {
        /* the task went stale (its round closed and the model moved on: 404), or a bad answer:
         * drop it and check in again, after a pause */
        fedc_log(FEDC_LOG_INFO, "client", "round %u: task dropped: %s", task->round,
                 fedc_err_message(&merr));
        if (sleep_interruptible(c, c->retry_initial) != 0)
            return fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
        return FEDC_OK;
    }
    if (mst != FEDC_OK) {
        if (err) *err = merr;
        return mst;
    }

    fedc_fit_ins ins;
    memset(&ins, 0, sizeof ins);
    ins.round = task->round;
    ins.client = task->client_id;
    ins.seed = task->config->seed;
    ins.global = c->model;
    ins.num_params = c->num_params;
    ins.config = cfg;
    ins.prox_mu = task->config->prox_mu;
    ins.lr = task->config->lr;
    ins.want_loss_before = task->config->want_loss_before;
    fedc_fit_out out;
    memset(&out, 0, sizeof out);
    out.update = update;
    out.loss_before = NAN;
    double t0 = fedci_mono();
    fedc_err ferr;
    fedc_err_clear(&ferr);
    fedc_status st = trainer->ops->fit(trainer->shared, worker, &ins, &out, &ferr);
    double dt = fedci_mono() - t0;
    if (st == FEDC_ERR_NOMEM || st == FEDC_ERR_INTERNAL) {
        if (err) *err = ferr;
        return st;
    }
    if (st != FEDC_OK) {
        fedc_log(FEDC_LOG_WARN, "client", "round %u: training failed: %s", task->round,
                 fedc_err_message(&ferr));
        return FEDC_OK; /* the server will not hear from us this round */
    }
    sum->tasks++;
    ev = (fedc_client_event){.kind = FEDC_CLIENT_TRAINED,
                             .round = task->round,
                             .attempt = task->attempt,
                             .seconds = dt,
                             .loss = out.train_loss};
    emit(c, &ev);
    /* differential privacy: clip (and noise) the update as the server asks, before it leaves */
    fedc_dp_client_report rep = {1}, *repp = NULL;
    const Fedc__V1__DpTask *dpt = task->config->dp;
    if (dpt && (dpt->clip > 0 || dpt->noise_stddev > 0)) {
        fedc_dp_client_task t = {dpt->clip,          dpt->noise_stddev, dpt->seeded_noise,
                                 task->config->seed, task->round,       task->client_id};
        fedc_err derr;
        st = fedc_dp_client_apply(&t, c->num_params, update, &rep, &derr);
        if (st != FEDC_OK) {
            fedc_log(FEDC_LOG_WARN, "client", "round %u: the update cannot be sent: %s",
                     task->round, fedc_err_message(&derr));
            return st == FEDC_ERR_CRYPTO ? fedc_err_set(err, st, "%s", fedc_err_message(&derr))
                                         : FEDC_OK;
        }
        repp = &rep;
    }
    if (task->secagg) { /* secure aggregation: the update leaves only masked (client_secagg.c) */
        fedci_sa_io io = {c, sa_post, sa_get, sa_sleep};
        int done = 0;
        st = fedci_client_secagg_task(&io, c->opts.key, task, update, c->num_params,
                                      out.num_examples, &done, err);
        if (st == FEDC_OK && done) {
            sum->accepted++;
            ev = (fedc_client_event){
                .kind = FEDC_CLIENT_ACCEPTED, .round = task->round, .attempt = task->attempt};
            emit(c, &ev);
        }
        return st;
    }
    fedc_err berr;
    st = build_result(c, task, &out, dt, repp, &berr);
    if (st == FEDC_ERR_NOMEM) {
        if (err) *err = berr;
        return st;
    }
    if (st != FEDC_OK) { /* e.g. an update the encoding refuses (NaN, float16 overflow) */
        fedc_log(FEDC_LOG_WARN, "client", "round %u: the update cannot be sent: %s", task->round,
                 fedc_err_message(&berr));
        return FEDC_OK;
    }
    upload_arg ua = {task};
    fedc_err uerr;
    /* a busy server (503) or a lost connection: retry the same result until its deadline */
    unsigned tries =
        1 + (unsigned)(task->deadline_ms / 1000 / (c->retry_initial > 0 ? c->retry_initial : 1));
    if (tries < 3) tries = 3;
    st = with_retries(c, "result upload", op_upload, &ua, tries, &uerr);
    if (st == FEDC_OK) {
        sum->accepted++;
        ev = (fedc_client_event){
            .kind = FEDC_CLIENT_ACCEPTED, .round = task->round, .attempt = task->attempt};
        emit(c, &ev);
        return FEDC_OK;
    }
    if (st == FEDC_ERR_ABORTED || st == FEDC_ERR_TIMEOUT) {
        if (err) *err = uerr;
        return st;
    }
    /* refused (late, invalid) or the server stayed unreachable: back to check-in */
    fedc_log(FEDC_LOG_WARN, "client", "round %u: result not accepted: %s", task->round,
             fedc_err_message(&uerr));
    ev = (fedc_client_event){.kind = FEDC_CLIENT_REFUSED,
                             .round = task->round,
                             .attempt = task->attempt,
                             .http_status = (int)c->status,
                             .message = fedc_err_message(&uerr)};
    emit(c, &ev);
    return FEDC_OK;
}

fedc_status fedc_client_run(fedc_client *c, const fedc_trainer *trainer, const fedc_config *cfg,
                            fedc_client_summary *summary, fedc_err *err)
{
    fedc_client_summary sum;
    memset(&sum, 0, sizeof sum);
    const fedc_trainer_ops *ops = trainer->ops;
    c->layout = ops->layout(trainer->shared);
    c->num_params = c->layout->total;
    fedc_free(c->model);
    c->have_model = 0;
    c->model = fedc_malloc(c->num_params * sizeof(float));
    float *update = fedc_malloc(c->num_params * sizeof(float));
    void *worker = fedc_calloc(1, ops->worker_size ? ops->worker_size : 1);
    fedc_status st = FEDC_OK;
    int worker_ready = 0;
    if (!c->model || !update || !worker)
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory for %zu parameters",
                          c->num_params);
    if (st == FEDC_OK && ops->worker_init) st = ops->worker_init(trainer->shared, worker, err);
    if (st == FEDC_OK) worker_ready = 1;
    checkin_arg ca = {trainer, 0, 0, NULL};
    while (st == FEDC_OK) {
        ca.resp = NULL;
        st = with_retries(c, "check-in", op_checkin, &ca, 0, err);
        if (st != FEDC_OK) break;
        Fedc__V1__CheckinResponse *r = (Fedc__V1__CheckinResponse *)ca.resp;
        if (r->reply_case == FEDC__V1__CHECKIN_RESPONSE__REPLY_DONE) {
            sum.rounds = r->done->rounds;
            if (r->done->model)
                snprintf(sum.model_sha256, sizeof sum.model_sha256, "%s", r->done->model->sha256);
            fedc_client_event ev = {
                .kind = FEDC_CLIENT_DONE, .round = sum.rounds, .model_sha256 = sum.model_sha256};
            emit(c, &ev);
            fedci_unpacked_free(ca.resp);
            break;
        }
        if (r->reply_case == FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK && r->task &&
            r->task->stage == FEDC__V1__STAGE__STAGE_FIT) {
            ca.client_id = r->task->client_id;
            ca.known_id = 1;
            st = run_task(c, trainer, worker, update, cfg, r->task, &sum, err);
            if (st == FEDC_OK && c->opts.max_tasks && sum.tasks >= c->opts.max_tasks) {
                fedci_unpacked_free(ca.resp);
                break;
            }
        } else {
            double after = 1.0;
            if (r->reply_case == FEDC__V1__CHECKIN_RESPONSE__REPLY_RETRY && r->retry)
                after = r->retry->after_ms / 1000.0;
            else if (r->reply_case == FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK)
                fedc_log(FEDC_LOG_WARN, "client", "task of a stage this client cannot run (%d)",
                         r->task ? (int)r->task->stage : -1);
            if (after > 3600) after = 3600;
            if (sleep_interruptible(c, after) != 0)
                st = fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
        }
        fedci_unpacked_free(ca.resp);
        if (st == FEDC_OK && c->stop) st = fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
    }
    if (worker_ready && ops->worker_fini) ops->worker_fini(worker);
    fedc_free(worker);
    fedc_free(update);
    if (summary) *summary = sum;
    return st;
}
