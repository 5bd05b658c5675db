/*
 * SecAgg+ over HTTP, the client side (docs/SECAGG.md "Deployment"): after training, a task
 * carrying a SecAggTask runs the four stages of src/secagg through POST and GET
 * /v1/tasks/{task_id}/secagg (fedci_client_secagg_task, contract in wire.h). The stage-1 keys
 * are signed with the client's request-signing key, and the neighbours' keys are accepted only
 * with a valid signature by the key the task lists for them, so the server cannot substitute
 * keys. The masked input travels as a SecAggMessage followed by Chunks, like an update. Also
 * the parser of that POST body (fedci_secagg_parse_post, used by server_secagg.c: here so that
 * client-only builds fuzz it too). Built in client-only configurations.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/rng.h"
#include "fedc/secagg.h"
#include "net/sign.h"
#include "net/wire.h"
#include "secagg/secagg_internal.h"

#define KEYS_PATH "/v1/secagg/keys"

void fedci_sa_key_digest(const uint8_t seed[32], uint32_t round, uint32_t id, const uint8_t *c_pk,
                         const uint8_t *s_pk, uint8_t out[32])
{
    static const char label[] = "fedc-secagg-keys-v1";
    uint8_t buf[sizeof label - 1 + 32 + 8 + 2 * SA_KEY];
    uint8_t *p = buf;
    memcpy(p, label, sizeof label - 1);
    p += sizeof label - 1;
    memcpy(p, seed, 32);
    p += 32;
    sa_put32(p, round);
    sa_put32(p + 4, id);
    p += 8;
    memcpy(p, c_pk, SA_KEY);
    memcpy(p + SA_KEY, s_pk, SA_KEY);
    crypto_generichash(out, 32, buf, sizeof buf, NULL, 0);
}

/* ---- the POST body (read by the server; here so that client-only builds can fuzz it) ---- */

typedef struct post_parse {
    Fedc__V1__SecAggMessage *msg;
    uint8_t *vec; /* the full protocol message: header + ring vector */
    size_t vec_len, filled;
    uint32_t max_chunk;
    int frames;
} post_parse;

static fedc_status on_frame(void *user, const uint8_t *m, size_t len, uint64_t off, fedc_err *err)
{
    post_parse *pp = user;
    if (pp->frames++ == 0) {
        ProtobufCMessage *pm;
        FEDC_TRY(fedci_unpack(&fedc__v1__sec_agg_message__descriptor, m, len, "SecAgg message",
                              &pm, err));
        pp->msg = (Fedc__V1__SecAggMessage *)pm;
        return FEDC_OK;
    }
    if (!pp->vec)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "byte %" PRIu64 ": a Chunk after a SecAgg "
                            "message that takes none", off);
    uint64_t coff;
    const uint8_t *data;
    size_t dlen;
    if (fedci_chunk_parse(m, len, &coff, &data, &dlen) != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "byte %" PRIu64 ": malformed Chunk", off);
    size_t have = pp->filled - SA_HDR;
    if (coff != have || dlen == 0 || dlen % 4 || dlen > pp->max_chunk ||
        dlen > pp->vec_len - pp->filled)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "byte %" PRIu64 ": Chunk at offset %" PRIu64
                            " of %zu bytes (expected offset %zu, a positive multiple of 4 within "
                            "the vector and chunk_bytes)", off, coff, dlen, have);
    memcpy(pp->vec + pp->filled, data, dlen);
    pp->filled += dlen;
    return FEDC_OK;
}

fedc_status fedci_secagg_parse_post(const uint8_t *body, size_t len, size_t max_message,
                                    uint32_t max_chunk, size_t vec_bytes,
                                    Fedc__V1__SecAggMessage **msg, uint8_t **vec, fedc_err *err)
{
    *msg = NULL;
    *vec = NULL;
    post_parse pp;
    memset(&pp, 0, sizeof pp);
    pp.max_chunk = max_chunk;
    /* the first frame alone says whether a vector follows */
    uint64_t flen = 0;
    size_t i = 0;
    for (int shift = 0; i < len && i < 5; i++, shift += 7) {
        flen |= (uint64_t)(body[i] & 0x7f) << shift;
        if (!(body[i] & 0x80)) break;
    }
    if (i >= len || i >= 5 || flen > max_message || flen > len - i - 1)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "a SecAgg POST must start with a "
                            "length-delimited SecAggMessage of at most %zu bytes", max_message);
    size_t first_end = i + 1 + (size_t)flen;
    fedci_framer fr;
    fedci_framer_init(&fr, max_message + 64);
    fedc_status st = fedci_framer_feed(&fr, body, first_end, on_frame, &pp, err);
    if (st == FEDC_OK && pp.msg->stage == FEDC__V1__STAGE__STAGE_SECAGG_MASKED) {
        if (pp.msg->body.len != SA_HDR || vec_bytes < SA_HDR)
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "masked input: the message body must be the "
                              "%d-byte header (the vector follows as Chunks), not %zu bytes",
                              SA_HDR, pp.msg->body.len);
        else if (!(pp.vec = fedc_malloc(vec_bytes)))
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for a masked input");
        else {
            pp.vec_len = vec_bytes;
            memcpy(pp.vec, pp.msg->body.data, SA_HDR);
            pp.filled = SA_HDR;
        }
    }
    if (st == FEDC_OK)
        st = fedci_framer_feed(&fr, body + first_end, len - first_end, on_frame, &pp, err);
    if (st == FEDC_OK && !fedci_framer_at_boundary(&fr))
        st = fedc_err_set(err, FEDC_ERR_FORMAT, "the stream ends inside a frame");
    if (st == FEDC_OK && pp.vec && pp.filled != pp.vec_len)
        st = fedc_err_set(err, FEDC_ERR_FORMAT, "masked input of %zu bytes, expected %zu",
                          pp.filled - SA_HDR, pp.vec_len - SA_HDR);
    fedci_framer_fini(&fr);
    if (st != FEDC_OK) {
        fedci_unpacked_free(pp.msg ? &pp.msg->base : NULL);
        fedc_free(pp.vec);
        return st;
    }
    *msg = pp.msg;
    *vec = pp.vec;
    return FEDC_OK;
}

/* The task's SecAgg parameters, checked: everything here came from the server. */
static fedc_status read_task(const Fedc__V1__SecAggTask *t, size_t num_params, const fedc_key *key,
                             fedc_secagg_params *p, fedc_secagg_quant *q, fedc_err *err)
{
    memset(p, 0, sizeof *p);
    if (t->seed.len != FEDC_SECAGG_SEED_BYTES || t->len != (uint64_t)num_params + 1 ||
        t->n_client_keys != t->n || t->secagg_id >= t->n)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg task: malformed (seed of %zu bytes, "
                            "len %" PRIu64 " for %zu parameters, %zu keys for n = %u, id %u)",
                            t->seed.len, t->len, num_params, t->n_client_keys, t->n,
                            t->secagg_id);
    for (size_t i = 0; i < t->n_client_keys; i++)
        if (t->client_keys[i].len != FEDC_KEY_PUBLIC_BYTES)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg task: key %zu is %zu bytes", i,
                                t->client_keys[i].len);
    uint8_t me[FEDC_KEY_PUBLIC_BYTES];
    fedc_key_public(key, me);
    if (memcmp(me, t->client_keys[t->secagg_id].data, sizeof me) != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg task: the key listed for our id %u is "
                            "not ours", t->secagg_id);
    p->n = t->n;
    p->k = t->k;
    p->t = t->t;
    p->bits = t->bits;
    p->len = (size_t)t->len;
    p->round = t->secagg_round;
    memcpy(p->seed, t->seed.data, FEDC_SECAGG_SEED_BYTES);
    FEDC_TRY(fedc_secagg_params_check(p, err));
    q->clip = t->clip;
    q->levels = t->levels;
    q->max_weight = t->max_weight;
    q->bits = t->bits;
    if (!(q->clip > 0) || q->levels < 2 || q->max_weight < 1)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg task: quantization clip %g, levels %u, "
                            "max_weight %u", q->clip, q->levels, q->max_weight);
    return fedc_secagg_quant_check(q, p->n, err);
}

/* Checks every neighbour's key signature in the server's stage-1 message. */
static fedc_status check_signatures(const Fedc__V1__SecAggTask *t, const fedc_secagg_params *p,
                                    const Fedc__V1__SecAggMessage *m, fedc_err *err)
{
    const size_t entry = 4 + 2 * SA_KEY;
    const uint8_t *b = m->body.data;
    uint32_t count = m->body.len >= SA_HDR + 4 ? sa_get32(b + SA_HDR) : 0;
    if (m->body.len != SA_HDR + 4 + (size_t)count * entry || m->n_signatures != count)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg: key list of %zu bytes with %zu "
                            "signatures", m->body.len, m->n_signatures);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = b + SA_HDR + 4 + (size_t)i * entry;
        uint32_t v = sa_get32(e);
        const Fedc__V1__KeySignature *ks = m->signatures[i];
        if (v >= p->n || !ks || ks->nonce.len != FEDCI_NONCE_BYTES ||
            ks->signature.len != FEDCI_SIG_BYTES)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg: key entry %u is malformed", i);
        fedci_auth a;
        memset(&a, 0, sizeof a); /* hash mode; every field set */
        memcpy(a.pk, t->client_keys[v].data, FEDC_KEY_PUBLIC_BYTES);
        a.ts_ms = ks->ts;
        memcpy(a.nonce, ks->nonce.data, FEDCI_NONCE_BYTES);
        memcpy(a.sig, ks->signature.data, FEDCI_SIG_BYTES);
        fedci_sa_key_digest(p->seed, p->round, v, e + 4, e + 4 + SA_KEY, a.body_hash);
        if (fedci_auth_verify(&a, "SECAGG", KEYS_PATH) != 0)
            return fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg: the keys of neighbour %u are not "
                                "signed by its key: refusing them (forged by the server?)", v);
    }
    return FEDC_OK;
}

/* Packs a SecAggMessage as the first frame of a stream, then (vec) the vector as Chunks. */
static fedc_status build_post(int stage, const uint8_t *body, size_t body_len,
                              const Fedc__V1__KeySignature *sig, const uint8_t *vec,
                              size_t vec_len, uint32_t chunk_bytes, fedci_buf *out, fedc_err *err)
{
    Fedc__V1__SecAggMessage m = FEDC__V1__SEC_AGG_MESSAGE__INIT;
    Fedc__V1__KeySignature *sp[1] = {(Fedc__V1__KeySignature *)sig};
    m.stage = (Fedc__V1__Stage)stage;
    m.body.data = (uint8_t *)body;
    m.body.len = body_len;
    if (sig) {
        m.n_signatures = 1;
        m.signatures = sp;
    }
    out->len = 0;
    FEDC_TRY(fedci_frame_append(&m.base, out, err));
    if (chunk_bytes < 4) chunk_bytes = 1u << 20;
    chunk_bytes &= ~3u;
    for (size_t off = 0; vec && off < vec_len; off += chunk_bytes) {
        Fedc__V1__Chunk c = FEDC__V1__CHUNK__INIT;
        c.offset = off;
        c.data.data = (uint8_t *)vec + off;
        c.data.len = vec_len - off < chunk_bytes ? vec_len - off : chunk_bytes;
        FEDC_TRY(fedci_frame_append(&c.base, out, err));
    }
    return FEDC_OK;
}

/* Test hook: hang before sending `stage`'s message until stopped. 1 when it hung. */
static int test_hang(const fedci_sa_io *io, const char *stage, uint32_t round)
{
    const char *h = getenv("FEDC_TEST_SECAGG_HANG");
    if (!h || strcmp(h, stage) != 0) return 0;
    fedc_log(FEDC_LOG_WARN, "client", "round %u: TEST HOOK FEDC_TEST_SECAGG_HANG=%s: hanging "
             "before the %s message", round, h, stage);
    while (io->sleep(io->ctx, 0.2) == 0) {
    }
    return 1;
}

fedc_status fedci_client_secagg_task(const fedci_sa_io *io, const fedc_key *key,
                                     const Fedc__V1__Task *task, const float *update,
                                     size_t num_params, uint64_t num_examples, int *completed,
                                     fedc_err *err)
{
    *completed = 0;
    const Fedc__V1__SecAggTask *t = task->secagg;
    fedc_secagg_params p;
    fedc_secagg_quant q;
    fedc_err e;
    fedc_status st = read_task(t, num_params, key, &p, &q, &e);
    if (st != FEDC_OK) {
        fedc_log(FEDC_LOG_WARN, "client", "round %u: SecAgg task refused: %s", task->round,
                 fedc_err_message(&e));
        return FEDC_OK;
    }
    char path[160];
    snprintf(path, sizeof path, "/v1/tasks/%s/secagg", task->task_id);
    uint32_t *x = fedc_malloc(p.len * sizeof *x);
    fedc_secagg_client *sc = NULL;
    fedci_buf up = {0};
    unsigned char *msg = NULL;
    size_t mlen = 0;
    ProtobufCMessage *got = NULL;
    if (!x) {
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "client: out of memory for the secagg vector");
        goto out;
    }
    /* quantize as `fedc sim` does: stream (seed, round, client, QUANTIZE) */
    fedc_rng rng;
    fedc_rng_init(&rng, task->config->seed, task->round, task->client_id, FEDC_RNG_QUANTIZE);
    if ((st = fedc_secagg_quantize(&q, update, num_params, num_examples ? num_examples : 1, &rng,
                                   x, &e)) != FEDC_OK) {
        fedc_log(FEDC_LOG_WARN, "client", "round %u: the update cannot be quantized: %s",
                 task->round, fedc_err_message(&e));
        st = FEDC_OK;
        goto out;
    }
    if ((st = fedc_secagg_client_create(&p, t->secagg_id, &sc, &e)) != FEDC_OK) goto fail;
    /* stage 1: signed keys */
    if ((st = fedc_secagg_client_advertise(sc, &msg, &mlen, &e)) != FEDC_OK) goto fail;
    Fedc__V1__KeySignature ks = FEDC__V1__KEY_SIGNATURE__INIT;
    fedci_auth a;
    uint8_t digest[32];
    fedci_sa_key_digest(p.seed, p.round, t->secagg_id, msg + SA_HDR, msg + SA_HDR + SA_KEY,
                        digest);
    fedci_auth_sign(key, "SECAGG", KEYS_PATH, digest, fedci_now_ms(), &a);
    ks.ts = a.ts_ms;
    ks.nonce.data = a.nonce;
    ks.nonce.len = FEDCI_NONCE_BYTES;
    ks.signature.data = a.sig;
    ks.signature.len = FEDCI_SIG_BYTES;
    if ((st = build_post(FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg, mlen, &ks, NULL, 0, 0, &up,
                         &e)) != FEDC_OK)
        goto fail;
    if ((st = io->post(io->ctx, path, up.data, up.len, &e)) != FEDC_OK) goto fail;
    fedc_free(msg);
    msg = NULL;
    double limit = (double)task->deadline_ms / 1000 + 4.0 * (double)t->stage_ms / 1000 + 30;
    double t0 = fedci_mono();
    for (int stage = FEDC__V1__STAGE__STAGE_SECAGG_SHARE;
         stage <= FEDC__V1__STAGE__STAGE_SECAGG_UNMASK; stage++) {
        /* wait for the previous stage to close: the server's message for this one */
        const Fedc__V1__SecAggMessage *m = NULL;
        for (;;) {
            fedci_unpacked_free(got);
            got = NULL;
            const uint8_t *r;
            size_t rl;
            if ((st = io->get(io->ctx, path, &r, &rl, &e)) != FEDC_OK) goto fail;
            if ((st = fedci_unpack(&fedc__v1__sec_agg_message__descriptor, r, rl,
                                   "SecAgg message", &got, &e)) != FEDC_OK)
                goto fail;
            m = (const Fedc__V1__SecAggMessage *)got;
            if ((int)m->stage == stage) break;
            if (m->stage != FEDC__V1__STAGE__STAGE_UNSPECIFIED) {
                st = fedc_err_set(&e, FEDC_ERR_FORMAT, "the server sent stage %d, expected %d",
                                  (int)m->stage, stage);
                goto fail;
            }
            if (fedci_mono() - t0 > limit) {
                st = fedc_err_set(&e, FEDC_ERR_STATE, "no stage %d message after %.0f s",
                                  stage, limit);
                goto fail;
            }
            double w = m->wait_ms ? m->wait_ms / 1000.0 : 0.1;
            if (io->sleep(io->ctx, w > 2 ? 2 : w) != 0) {
                st = fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
                goto out;
            }
        }
        const uint8_t *vec = NULL;
        size_t vec_len = 0, body_len;
        if (stage == FEDC__V1__STAGE__STAGE_SECAGG_SHARE) {
            if ((st = check_signatures(t, &p, m, &e)) != FEDC_OK) goto fail;
            st = fedc_secagg_client_share(sc, m->body.data, m->body.len, &msg, &mlen, &e);
        } else if (stage == FEDC__V1__STAGE__STAGE_SECAGG_MASKED) {
            st = fedc_secagg_client_masked(sc, m->body.data, m->body.len, x, &msg, &mlen, &e);
        } else {
            st = fedc_secagg_client_unmask(sc, m->body.data, m->body.len, &msg, &mlen, &e);
        }
        if (st != FEDC_OK) goto fail;
        body_len = mlen;
        if (stage == FEDC__V1__STAGE__STAGE_SECAGG_MASKED) { /* the vector as Chunks */
            vec = msg + SA_HDR;
            vec_len = mlen - SA_HDR;
            body_len = SA_HDR;
        }
        static const char *const hook[] = {"share", "masked", "unmask"};
        if (test_hang(io, hook[stage - FEDC__V1__STAGE__STAGE_SECAGG_SHARE], task->round)) {
            st = fedc_err_set(err, FEDC_ERR_ABORTED, "stopped");
            goto out;
        }
        if ((st = build_post(stage, msg, body_len, NULL, vec, vec_len, task->chunk_bytes, &up,
                             &e)) != FEDC_OK)
            goto fail;
        if ((st = io->post(io->ctx, path, up.data, up.len, &e)) != FEDC_OK) goto fail;
        fedc_free(msg);
        msg = NULL;
    }
    fedc_log(FEDC_LOG_INFO, "client", "round %u: SecAgg+ stages done (id %u of %u)", task->round,
             t->secagg_id, p.n);
    *completed = 1;
    st = FEDC_OK;
    goto out;
fail:
    if (st == FEDC_ERR_NOMEM || st == FEDC_ERR_ABORTED || st == FEDC_ERR_TIMEOUT) {
        if (err) *err = e;
        goto out;
    }
    /* refused, dropped, or the round moved on: this round is over for us */
    fedc_log(FEDC_LOG_WARN, "client", "round %u: SecAgg+ round left: %s", task->round,
             fedc_err_message(&e));
    st = FEDC_OK;
out:
    fedci_unpacked_free(got);
    fedc_free(msg);
    fedci_buf_fini(&up);
    fedc_secagg_client_destroy(sc);
    if (x) sodium_memzero(x, p.len * sizeof *x);
    fedc_free(x);
    return st;
}
