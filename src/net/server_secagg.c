/*
 * SecAgg+ rounds over HTTP, the server side (docs/SECAGG.md "Deployment", docs/PROTOCOL.md
 * "Secure aggregation"). A round with [secagg] enabled hands every selected client a task with
 * a SecAggTask (the protocol's parameters, its secagg id = its place in the selection, the
 * Ed25519 keys of all the round's clients); the clients then drive the four stages through
 *
 *   POST /v1/tasks/{task_id}/secagg   a SecAggMessage stream (the masked vector as Chunks)
 *   GET  /v1/tasks/{task_id}/secagg   the server's message for the next stage, or "wait"
 *
 * and the round driver (server.c) calls fedci_secagg_tick to close each stage when every live
 * client answered or its deadline passed (stage 1: round.deadline, training included; the
 * others: secagg.stage_timeout each), carrying the surviving set forward. Stage-1 keys must
 * carry the client's signature by its request-signing key; the server forwards the signatures
 * with the keys so that each neighbour checks them (the server cannot substitute keys). After
 * the last stage the unmasked sum goes to the engine as the round's one result
 * (fedci_secagg_submit, as `fedc sim` does); an aborted protocol submits nothing and the round
 * misses its quorum (re-run). Everything here reads untrusted bytes: each refusal changes
 * nothing and names what was wrong in the log.
 */
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "net/server_internal.h"
#include "secagg/secagg_internal.h"
#include "sim/sim_secagg.h"

#define SIG_ENTRY (8 + FEDCI_NONCE_BYTES + FEDCI_SIG_BYTES) /* ts, nonce, signature */

typedef struct fedci_secagg {
    fedci_secagg_conf conf;
    double stage_s;
    /* the open round (s->lock) */
    fedc_secagg_server *srv; /* NULL: no protocol running */
    fedc_secagg_params p;
    uint32_t n;
    uint8_t *pks;                 /* n * 32: signing keys by secagg id */
    ProtobufCBinaryData *pk_bin;  /* n entries pointing into pks (for tasks) */
    uint8_t *sigs;                /* n * SIG_ENTRY: stage-1 key signatures */
    uint8_t *last;                /* n: the last stage each client's message was taken for */
    uint32_t posted;              /* messages taken in the stage being collected */
    double stage_deadline;        /* monotonic */
    /* the outcome, for the record */
    int done;
    uint32_t survivors;
    uint64_t bytes_up;
} fedci_secagg;

static const char *stage_name(int st)
{
    static const char *const names[] = {"?",      "advertise", "share", "masked",
                                        "unmask", "done",      "aborted"};
    return st >= 1 && st <= 6 ? names[st] : names[0];
}

fedc_status fedci_secagg_create(fedc_server *s, fedc_err *err)
{
    if (!fedc_config_bool(s->cfg, "secagg.enabled")) return FEDC_OK;
    fedci_secagg *sa = fedc_calloc(1, sizeof *sa);
    if (!sa) return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
    fedc_status st = fedci_secagg_conf_init(s->cfg, s->engine, s->select, &sa->conf, err);
    if (st != FEDC_OK) {
        fedc_free(sa);
        return st;
    }
    sa->stage_s = fedc_config_double(s->cfg, "secagg.stage_timeout");
    s->secagg = sa;
    return FEDC_OK;
}

/* Ends the round's protocol: the handle (wiped by destroy) and the tables. Lock held. */
static void round_close(fedci_secagg *sa)
{
    fedc_secagg_server_destroy(sa->srv);
    sa->srv = NULL;
    fedc_free(sa->pks);
    fedc_free(sa->pk_bin);
    fedc_free(sa->sigs);
    fedc_free(sa->last);
    sa->last = NULL;
    sa->pks = NULL;
    sa->pk_bin = NULL;
    sa->sigs = NULL;
}

void fedci_secagg_destroy(fedc_server *s)
{
    if (!s->secagg) return;
    round_close(s->secagg);
    fedc_free(s->secagg);
    s->secagg = NULL;
}

void fedci_secagg_open(fedc_server *s)
{
    fedci_secagg *sa = s->secagg;
    round_close(sa);
    sa->done = 0;
    sa->survivors = 0;
    sa->bytes_up = 0;
    sa->posted = 0;
    uint32_t n = (uint32_t)s->nselected;
    if (n < 2) {
        fedc_log(FEDC_LOG_WARN, "secagg", "round %u: %u client(s) selected, secure aggregation "
                 "needs 2", s->round, n);
        return;
    }
    fedci_secagg_round_params(&sa->conf, n, s->num_params, s->round, &sa->p);
    randombytes_buf(sa->p.seed, sizeof sa->p.seed); /* fresh per attempt: old adverts are void */
    sa->n = n;
    sa->pks = fedc_malloc((size_t)n * FEDC_KEY_PUBLIC_BYTES);
    sa->pk_bin = fedc_calloc(n, sizeof *sa->pk_bin);
    sa->sigs = fedc_calloc(n, SIG_ENTRY);
    sa->last = fedc_calloc(n, 1);
    fedc_err e;
    fedc_status st = (!sa->pks || !sa->pk_bin || !sa->sigs || !sa->last)
                         ? fedc_err_set(&e, FEDC_ERR_NOMEM, "out of memory")
                         : FEDC_OK;
    for (uint32_t i = 0; st == FEDC_OK && i < n; i++) {
        size_t j = 0;
        while (j < s->nallow && s->allow[j].id != s->selected[i]) j++;
        if (j == s->nallow) {
            st = fedc_err_set(&e, FEDC_ERR_STATE, "client %u is no longer on the allow-list",
                              s->selected[i]);
            break;
        }
        memcpy(sa->pks + (size_t)i * FEDC_KEY_PUBLIC_BYTES, s->allow[j].pk, FEDC_KEY_PUBLIC_BYTES);
        sa->pk_bin[i].data = sa->pks + (size_t)i * FEDC_KEY_PUBLIC_BYTES;
        sa->pk_bin[i].len = FEDC_KEY_PUBLIC_BYTES;
    }
    if (st == FEDC_OK) st = fedc_secagg_params_check(&sa->p, &e); /* fills k and t */
    if (st == FEDC_OK) st = fedc_secagg_server_create(&sa->p, &sa->srv, &e);
    if (st != FEDC_OK) {
        fedc_log(FEDC_LOG_ERROR, "secagg", "round %u: the protocol cannot start: %s", s->round,
                 fedc_err_message(&e));
        round_close(sa);
        return;
    }
    sa->stage_deadline = s->round_deadline;
    fedc_log(FEDC_LOG_INFO, "secagg", "round %u: SecAgg+ with n = %u, k = %u, t = %u; stage "
             "advertise open", s->round, sa->p.n, sa->p.k, sa->p.t);
}

int fedci_secagg_tick(fedc_server *s)
{
    fedci_secagg *sa = s->secagg;
    if (!sa->srv) return 1;
    int stage = fedc_secagg_server_stage(sa->srv);
    if (stage == FEDC_SECAGG_DONE || stage == FEDC_SECAGG_ABORTED) return 1;
    uint32_t alive = fedc_secagg_server_alive_count(sa->srv);
    double now = fedci_mono();
    if (sa->posted < alive && now < sa->stage_deadline) return 0;
    fedc_err e;
    fedc_status st = fedc_secagg_server_close_stage(sa->srv, &e);
    if (st != FEDC_OK) {
        fedc_log(FEDC_LOG_WARN, "secagg", "round %u: stage %s closed with %u of %u clients%s: "
                 "the protocol aborts: %s", s->round, stage_name(stage), sa->posted, alive,
                 sa->posted < alive ? " (deadline)" : "", fedc_err_message(&e));
        return 1;
    }
    int next = fedc_secagg_server_stage(sa->srv);
    fedc_log(FEDC_LOG_INFO, "secagg", "round %u: stage %s closed with %u of %u clients%s; "
             "stage %s open", s->round, stage_name(stage), sa->posted, alive,
             sa->posted < alive ? " (deadline)" : "", stage_name(next));
    sa->posted = 0;
    sa->stage_deadline = now + sa->stage_s;
    return next == FEDC_SECAGG_DONE;
}

fedc_status fedci_secagg_finish(fedc_server *s, fedc_err *err)
{
    fedci_secagg *sa = s->secagg;
    pthread_mutex_lock(&s->lock);
    fedc_secagg_server *srv = sa->srv;
    sa->srv = NULL; /* the HTTP side refuses everything from here on */
    uint32_t n = srv ? sa->n : 0;
    pthread_mutex_unlock(&s->lock);
    sa->done = 1;
    fedc_status st = FEDC_OK;
    int ok = srv && fedc_secagg_server_stage(srv) == FEDC_SECAGG_DONE;
    uint32_t *ids = NULL;
    float *mean = NULL;
    uint32_t count = 0;
    if (ok) {
        ids = fedc_malloc((size_t)n * sizeof *ids);
        mean = fedc_malloc((s->num_params ? s->num_params : 1) * sizeof *mean);
        if (!ids || !mean) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
            ok = 0;
        }
    }
    if (ok) {
        for (uint32_t i = 0; i < n; i++)
            if (fedc_secagg_server_alive(srv, i)) ids[count++] = s->selected[i];
        fedc_err serr;
        uint64_t wsum = 0;
        fedc_status sst = fedci_secagg_submit(&sa->conf, s->engine, fedc_secagg_server_sum(srv),
                                              s->num_params, ids, count, NAN, 0, mean, &wsum,
                                              &serr);
        if (sst == FEDC_ERR_NOMEM) {
            if (err) *err = serr;
            st = sst;
            ok = 0;
        } else if (sst != FEDC_OK) {
            fedc_log(FEDC_LOG_WARN, "secagg", "round %u: the unmasked sum was refused: %s",
                     s->round, fedc_err_message(&serr));
            ok = 0;
        } else {
            fedc_log(FEDC_LOG_INFO, "secagg", "round %u: unmasked the sum of %u client(s) "
                     "(weight sum %" PRIu64 ")", s->round, count, wsum);
        }
    }
    pthread_mutex_lock(&s->lock);
    uint64_t bytes = srv ? fedc_secagg_server_bytes_in(srv) : 0;
    for (uint32_t i = 0; i < (uint32_t)s->nselected; i++) {
        part_info *pi = &s->parts[i];
        int in = ok && srv && i < n && fedc_secagg_server_alive(srv, i);
        pi->state = in ? TASK_ACCEPTED : pi->state;
        snprintf(pi->status, sizeof pi->status, "%s", in ? "accepted" : "dropped");
        if (!in)
            snprintf(pi->detail, sizeof pi->detail, "secagg: %s",
                     !srv ? "the protocol did not start"
                     : fedc_secagg_server_stage(srv) == FEDC_SECAGG_ABORTED ? "the round aborted"
                                                                            : "dropped out");
        else
            pi->detail[0] = '\0';
    }
    sa->survivors = ok ? count : 0;
    sa->bytes_up = bytes;
    pthread_mutex_unlock(&s->lock);
    if (srv) {
        int64_t cnt[FEDC_ENGINE_COUNTERS];
        fedc_engine_round_counters(s->engine, cnt);
        cnt[2] += (int64_t)(n - sa->survivors);
        cnt[3] = (int64_t)bytes;
        fedc_engine_set_round_counters(s->engine, cnt);
    }
    fedc_secagg_server_destroy(srv); /* wipes the collected shares */
    fedc_free(ids);
    fedc_free(mean);
    pthread_mutex_lock(&s->lock);
    round_close(sa);
    pthread_mutex_unlock(&s->lock);
    return st;
}

void fedci_secagg_record(const fedc_server *s, fedc_round_record *rec)
{
    const fedci_secagg *sa = s->secagg;
    if (!sa->done) return;
    if (rec->participants > 0) rec->participants = sa->survivors;
    rec->bytes_up = sa->bytes_up;
}

int fedci_secagg_task(fedc_server *s, long pos, Fedc__V1__SecAggTask *t)
{
    fedci_secagg *sa = s->secagg;
    /* a task only while stage 1 is open and the client has not advertised: after that its
     * secrets are gone with the task it ran (a second training would be wasted) */
    if (!sa->srv || pos < 0 || (uint32_t)pos >= sa->n || sa->last[pos] ||
        fedc_secagg_server_stage(sa->srv) != FEDC_SECAGG_ADVERTISE)
        return 0;
    t->n = sa->p.n;
    t->k = sa->p.k;
    t->t = sa->p.t;
    t->bits = sa->p.bits;
    t->len = sa->p.len;
    t->seed.data = sa->p.seed;
    t->seed.len = sizeof sa->p.seed;
    t->secagg_id = (uint32_t)pos;
    t->clip = sa->conf.quant.clip;
    t->levels = sa->conf.quant.levels;
    t->max_weight = sa->conf.quant.max_weight;
    t->n_client_keys = sa->n;
    t->client_keys = sa->pk_bin;
    t->secagg_round = sa->p.round;
    t->stage_ms = (uint64_t)(sa->stage_s * 1000);
    return 1;
}

/* ---- HTTP ---- */

/* The task named in the path must be the caller's, in the open round: its secagg id, or -1
 * with why set. Lock held. */
static long task_pos(fedc_server *s, int client, const char *task_id, unsigned *code, char *why,
                     size_t why_size)
{
    uint32_t round, attempt, who;
    long pos = -1;
    if (fedci_task_id_parse(s, task_id, &round, &attempt, &who) == 0 && who == (uint32_t)client &&
        s->phase == PHASE_FIT && round == s->round && attempt == s->attempt && s->secagg->srv)
        pos = fedci_server_selected_pos(s, who);
    if (pos < 0) {
        *code = 409;
        snprintf(why, why_size, "task is not open");
    }
    return pos;
}

static unsigned status_code(fedc_status st)
{
    switch (st) {
    case FEDC_ERR_STATE: return 409;
    case FEDC_ERR_RANGE:
    case FEDC_ERR_INVALID:
    case FEDC_ERR_CRYPTO: return 422;
    case FEDC_ERR_NOMEM: return 503;
    default: return 400;
    }
}

unsigned fedci_secagg_post(fedc_server *s, int client, const char *task_id, const uint8_t *body,
                           size_t len, char *why, size_t why_size)
{
    fedci_secagg *sa = s->secagg;
    unsigned code = 0;
    /* which stage is open, and how long the vector is: read under the lock */
    pthread_mutex_lock(&s->lock);
    long pos = task_pos(s, client, task_id, &code, why, why_size);
    size_t vec_bytes = sa->srv ? SA_HDR + 4 * sa->p.len : 0;
    pthread_mutex_unlock(&s->lock);
    if (pos < 0) {
        fedc_log(FEDC_LOG_INFO, "secagg", "client %d: SecAgg message for task '%.64s' refused: "
                 "%s", client, task_id, why);
        return code;
    }
    Fedc__V1__SecAggMessage *pm = NULL;
    uint8_t *vec = NULL;
    fedc_err e;
    fedc_status st = fedci_secagg_parse_post(body, len, s->max_message, s->chunk_bytes, vec_bytes,
                                             &pm, &vec, &e);
    const uint8_t *m = vec ? vec : (pm ? pm->body.data : NULL);
    size_t mlen = vec ? vec_bytes : (pm ? pm->body.len : 0);

    if (st == FEDC_OK) {
        pthread_mutex_lock(&s->lock);
        pos = task_pos(s, client, task_id, &code, why, why_size);
        if (pos < 0) {
            st = fedc_err_set(&e, FEDC_ERR_STATE, "%s", why);
        } else {
            int stage = fedc_secagg_server_stage(sa->srv);
            int want = (int)pm->stage - 15;
            if (!fedc_secagg_server_alive(sa->srv, (uint32_t)pos)) {
                st = fedc_err_set(&e, FEDC_ERR_STATE, "the client dropped out of the round");
            } else if (want != stage) {
                st = fedc_err_set(&e, FEDC_ERR_STATE, "a message of stage %s while stage %s is "
                                  "open", stage_name(want), stage_name(stage));
            } else if (stage == FEDC_SECAGG_ADVERTISE) {
                /* the keys must be signed by the client's own request-signing key */
                const Fedc__V1__KeySignature *ks =
                    pm->n_signatures == 1 ? pm->signatures[0] : NULL;
                if (mlen != SA_HDR + 3 * SA_KEY) {
                    st = fedc_err_set(&e, FEDC_ERR_FORMAT, "keys message of %zu bytes", mlen);
                } else if (!ks || ks->nonce.len != FEDCI_NONCE_BYTES ||
                           ks->signature.len != FEDCI_SIG_BYTES) {
                    st = fedc_err_set(&e, FEDC_ERR_CRYPTO, "keys without one well-formed "
                                      "signature");
                } else {
                    fedci_auth a;
                    memset(&a, 0, sizeof a); /* hash mode; every field set */
                    memcpy(a.pk, sa->pks + (size_t)pos * FEDC_KEY_PUBLIC_BYTES, sizeof a.pk);
                    a.ts_ms = ks->ts;
                    memcpy(a.nonce, ks->nonce.data, FEDCI_NONCE_BYTES);
                    memcpy(a.sig, ks->signature.data, FEDCI_SIG_BYTES);
                    fedci_sa_key_digest(sa->p.seed, sa->p.round, (uint32_t)pos, m + SA_HDR,
                                        m + SA_HDR + SA_KEY, a.body_hash);
                    if (fedci_auth_verify(&a, "SECAGG", "/v1/secagg/keys") != 0)
                        st = fedc_err_set(&e, FEDC_ERR_CRYPTO, "the keys' signature does not "
                                          "verify with the client's key");
                }
                if (st == FEDC_OK)
                    st = fedc_secagg_server_recv(sa->srv, (uint32_t)pos, m, mlen, &e);
                if (st == FEDC_OK) {
                    uint8_t *sg = sa->sigs + (size_t)pos * SIG_ENTRY;
                    sa_put64(sg, ks->ts);
                    memcpy(sg + 8, ks->nonce.data, FEDCI_NONCE_BYTES);
                    memcpy(sg + 8 + FEDCI_NONCE_BYTES, ks->signature.data, FEDCI_SIG_BYTES);
                }
            } else {
                st = fedc_secagg_server_recv(sa->srv, (uint32_t)pos, m, mlen, &e);
            }
            if (st == FEDC_OK) {
                sa->posted++;
                sa->last[pos] = (uint8_t)stage;
                s->parts[pos].bytes_up += len;
                pthread_cond_broadcast(&s->cond);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    fedci_unpacked_free(pm ? &pm->base : NULL);
    fedc_free(vec);
    if (st == FEDC_OK) return 200;
    code = status_code(st);
    snprintf(why, why_size, "%s", code == 409 ? "wrong stage or not open"
                                  : code == 422 ? "invalid secagg message"
                                  : code == 503 ? "busy"
                                                : "malformed secagg message");
    fedc_log(FEDC_LOG_WARN, "secagg", "client %d: SecAgg message refused (HTTP %u): %s", client,
             code, fedc_err_message(&e));
    return code;
}

unsigned fedci_secagg_get(fedc_server *s, int client, const char *task_id, fedci_buf *out,
                          char *why, size_t why_size)
{
    fedci_secagg *sa = s->secagg;
    unsigned code = 0;
    Fedc__V1__SecAggMessage msg = FEDC__V1__SEC_AGG_MESSAGE__INIT;
    Fedc__V1__KeySignature *ks = NULL, **ksp = NULL;
    unsigned char *body = NULL;
    size_t blen = 0;
    fedc_status st = FEDC_OK;
    fedc_err e;
    pthread_mutex_lock(&s->lock);
    long pos = task_pos(s, client, task_id, &code, why, why_size);
    if (pos >= 0) {
        int stage = fedc_secagg_server_stage(sa->srv);
        if (!fedc_secagg_server_alive(sa->srv, (uint32_t)pos)) {
            code = 409;
            snprintf(why, why_size, "dropped from the secagg round");
        } else if (stage == FEDC_SECAGG_ADVERTISE ||
                   fedc_secagg_server_message(sa->srv, (uint32_t)pos, &body, &blen, &e) ==
                       FEDC_ERR_STATE) {
            msg.wait_ms = 100; /* it answered the stage being collected: wait for it to close */
        } else if (!body) {
            st = FEDC_ERR_NOMEM;
        } else {
            msg.stage = (Fedc__V1__Stage)(stage + 15);
            msg.body.data = body;
            msg.body.len = blen;
            if (stage == FEDC_SECAGG_SHARE) { /* the keys, with their owners' signatures */
                uint32_t count = blen >= SA_HDR + 4 ? sa_get32(body + SA_HDR) : 0;
                ks = fedc_calloc(count ? count : 1, sizeof *ks);
                ksp = fedc_calloc(count ? count : 1, sizeof *ksp);
                if (!ks || !ksp) st = FEDC_ERR_NOMEM;
                for (uint32_t i = 0; st == FEDC_OK && i < count; i++) {
                    uint32_t v = sa_get32(body + SA_HDR + 4 + (size_t)i * (4 + 2 * SA_KEY));
                    uint8_t *sg = sa->sigs + (size_t)v * SIG_ENTRY;
                    Fedc__V1__KeySignature k = FEDC__V1__KEY_SIGNATURE__INIT;
                    k.ts = sa_get64(sg);
                    k.nonce.data = sg + 8;
                    k.nonce.len = FEDCI_NONCE_BYTES;
                    k.signature.data = sg + 8 + FEDCI_NONCE_BYTES;
                    k.signature.len = FEDCI_SIG_BYTES;
                    ks[i] = k;
                    ksp[i] = &ks[i];
                }
                msg.n_signatures = count;
                msg.signatures = ksp;
            }
        }
        if (code == 0 && st == FEDC_OK) st = fedci_pack(&msg.base, out, &e);
    }
    pthread_mutex_unlock(&s->lock);
    fedc_free(body);
    fedc_free(ks);
    fedc_free(ksp);
    if (code) {
        fedc_log(FEDC_LOG_INFO, "secagg", "client %d: SecAgg poll for task '%.64s' refused: %s",
                 client, task_id, why);
        return code;
    }
    if (st != FEDC_OK) {
        snprintf(why, why_size, "busy");
        return 503;
    }
    return 200;
}
