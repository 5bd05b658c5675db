/*
 * The SecAgg+ server state machine (fedc/secagg.h): collects each stage's messages, routes the
 * clients' encrypted shares to their neighbours, folds masked inputs into one running sum
 * (O(len) memory whatever n), and at the end reconstructs the survivors' self-mask seeds and
 * the dropped clients' mask keys to cancel every mask. A message that breaks a rule is refused
 * and changes nothing; the round aborts (no output) only when too few clients or shares remain.
 */
#include <assert.h>

#include "secagg/secagg_internal.h"

struct fedc_secagg_server {
    fedc_secagg_params p;
    int stage;               /* fedc_secagg_stage being collected, or DONE / ABORTED */
    uint32_t *nbr;           /* n * k neighbour ids, each row ascending */
    unsigned char *state;    /* per client: the last stage it completed (0..4) */
    unsigned char *keys;     /* per client: c_pk, s_pk, commitment to b (3 * SA_KEY) */
    unsigned char *ct;       /* n * k encrypted shares: [from * k + index of `to` in nbr[from]] */
    unsigned char *sh;       /* n * k unmasking shares: [about * k + index of holder], kind byte
                                then SA_ELEMS u64 */
    unsigned char *sh_have;  /* n * k flags */
    uint32_t *sum;           /* len: running sum of masked inputs, then the result */
    uint64_t bytes_in, bytes_out;
};

#define SH_STRIDE (1 + SA_ELEMS * 8)

void fedc_secagg_server_destroy(fedc_secagg_server *s)
{
    if (!s) return;
    fedc_free(s->nbr);
    fedc_free(s->state);
    fedc_free(s->keys);
    fedc_free(s->ct);
    if (s->sh) sodium_free(s->sh);
    fedc_free(s->sh_have);
    fedc_free(s->sum);
    fedc_free(s);
}

fedc_status fedc_secagg_server_create(const fedc_secagg_params *p, fedc_secagg_server **out,
                                      fedc_err *err)
{
    assert(p && out);
    *out = NULL;
    fedc_secagg_params pc = *p;
    FEDC_TRY(fedc_secagg_params_check(&pc, err));
    if (fedci_sa_sodium() != 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg server: libsodium unusable");
    fedc_secagg_server *s = fedc_calloc(1, sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg server: out of memory");
    s->p = pc;
    s->stage = FEDC_SECAGG_ADVERTISE;
    size_t nk = (size_t)pc.n * pc.k;
    uint32_t *perm = fedc_malloc(2 * (size_t)pc.n * sizeof *perm);
    s->nbr = fedc_malloc(nk * sizeof *s->nbr);
    s->state = fedc_calloc(pc.n, 1);
    s->keys = fedc_malloc((size_t)pc.n * 3 * SA_KEY);
    s->ct = fedc_malloc(nk * SA_CT);
    s->sh = sodium_malloc(nk * SH_STRIDE);
    s->sh_have = fedc_calloc(nk, 1);
    s->sum = fedc_calloc(pc.len, sizeof *s->sum);
    if (!perm || !s->nbr || !s->state || !s->keys || !s->ct || !s->sh || !s->sh_have ||
        !s->sum) {
        fedc_free(perm);
        fedc_secagg_server_destroy(s);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg server: out of memory (n = %u, k = "
                            "%u, len = %zu)", pc.n, pc.k, pc.len);
    }
    fedci_sa_perm(&s->p, perm, perm + pc.n);
    for (uint32_t u = 0; u < pc.n; u++)
        fedci_sa_neighbors_from(&s->p, perm, perm + pc.n, u, s->nbr + (size_t)u * pc.k);
    fedc_free(perm);
    *out = s;
    return FEDC_OK;
}

fedc_secagg_stage fedc_secagg_server_stage(const fedc_secagg_server *s)
{
    return (fedc_secagg_stage)s->stage;
}

int fedc_secagg_server_alive(const fedc_secagg_server *s, uint32_t id)
{
    if (id >= s->p.n) return 0;
    if (s->stage == FEDC_SECAGG_DONE) return s->state[id] >= FEDC_SECAGG_MASKED;
    if (s->stage == FEDC_SECAGG_ABORTED) return 0;
    return s->state[id] >= s->stage - 1;
}

uint32_t fedc_secagg_server_alive_count(const fedc_secagg_server *s)
{
    uint32_t c = 0;
    for (uint32_t u = 0; u < s->p.n; u++)
        c += (uint32_t)fedc_secagg_server_alive(s, u);
    return c;
}

uint64_t fedc_secagg_server_bytes_in(const fedc_secagg_server *s)
{
    return s->bytes_in;
}

uint64_t fedc_secagg_server_bytes_out(const fedc_secagg_server *s)
{
    return s->bytes_out;
}

const uint32_t *fedc_secagg_server_sum(const fedc_secagg_server *s)
{
    return s->stage == FEDC_SECAGG_DONE ? s->sum : NULL;
}

/* Index of v in u's neighbour row, or -1. */
static long row_index(const fedc_secagg_server *s, uint32_t u, uint32_t v)
{
    const uint32_t *row = s->nbr + (size_t)u * s->p.k;
    size_t lo = 0, hi = s->p.k;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (row[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->p.k && row[lo] == v ? (long)lo : -1;
}

/* Neighbours of u that completed stage `at_least`. */
static uint32_t count_nbr(const fedc_secagg_server *s, uint32_t u, int at_least)
{
    uint32_t c = 0;
    const uint32_t *row = s->nbr + (size_t)u * s->p.k;
    for (uint32_t j = 0; j < s->p.k; j++)
        c += s->state[row[j]] >= at_least;
    return c;
}

static fedc_status recv_keys(fedc_secagg_server *s, uint32_t from, const unsigned char *msg,
                             size_t len, fedc_err *err)
{
    if (len != SA_HDR + 3 * SA_KEY)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: keys of client %u: %zu bytes, "
                            "expected %d", from, len, SA_HDR + 3 * SA_KEY);
    memcpy(s->keys + (size_t)from * 3 * SA_KEY, msg + SA_HDR, 3 * SA_KEY);
    return FEDC_OK;
}

static fedc_status recv_shares(fedc_secagg_server *s, uint32_t from, const unsigned char *msg,
                               size_t len, fedc_err *err)
{
    const size_t entry = 4 + SA_CT;
    uint32_t want = count_nbr(s, from, FEDC_SECAGG_ADVERTISE);
    uint32_t count = len >= SA_HDR + 4 ? sa_get32(msg + SA_HDR) : 0;
    if (len < SA_HDR + 4 || count != want || len != SA_HDR + 4 + (size_t)count * entry)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: shares of client %u: %zu "
                            "bytes, expected one share for each of its %u neighbours", from,
                            len, want);
    long prev = -1;
    for (uint32_t i = 0; i < count; i++) { /* check everything before storing anything */
        uint32_t to = sa_get32(msg + SA_HDR + 4 + (size_t)i * entry);
        long j = row_index(s, from, to);
        if (j < 0 || j <= prev || s->state[to] < FEDC_SECAGG_ADVERTISE)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: client %u's share %u is "
                                "addressed to %u, not a new neighbour with keys", from, i, to);
        prev = j;
    }
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = msg + SA_HDR + 4 + (size_t)i * entry;
        long j = row_index(s, from, sa_get32(e));
        memcpy(s->ct + ((size_t)from * s->p.k + (size_t)j) * SA_CT, e + 4, SA_CT);
    }
    return FEDC_OK;
}

static fedc_status recv_masked(fedc_secagg_server *s, uint32_t from, const unsigned char *msg,
                               size_t len, fedc_err *err)
{
    if (len != SA_HDR + 4 * s->p.len)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: masked input of client %u: "
                            "%zu bytes, expected %zu", from, len, SA_HDR + 4 * s->p.len);
    const unsigned char *y = msg + SA_HDR;
    if (s->p.bits < 32) {
        uint32_t over = ~((UINT32_C(1) << s->p.bits) - 1);
        for (size_t i = 0; i < s->p.len; i++)
            if (sa_get32(y + 4 * i) & over)
                return fedc_err_set(err, FEDC_ERR_RANGE, "secagg server: masked input of client "
                                    "%u: element %zu outside Z_2^%u", from, i, s->p.bits);
    }
    for (size_t i = 0; i < s->p.len; i++)
        s->sum[i] += sa_get32(y + 4 * i);
    return FEDC_OK;
}

static fedc_status recv_unmask(fedc_secagg_server *s, uint32_t from, const unsigned char *msg,
                               size_t len, fedc_err *err)
{
    uint32_t want = count_nbr(s, from, FEDC_SECAGG_SHARE);
    uint32_t count = len >= SA_HDR + 4 ? sa_get32(msg + SA_HDR) : 0;
    if (len < SA_HDR + 4 || count != want ||
        len != SA_HDR + 4 + (size_t)count * SA_UNMASK_ENTRY)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: unmasking answer of client "
                            "%u: %zu bytes, expected shares for its %u neighbours", from, len,
                            want);
    long prev = -1;
    uint64_t y[SA_ELEMS];
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = msg + SA_HDR + 4 + (size_t)i * SA_UNMASK_ENTRY;
        uint32_t about = sa_get32(e);
        long j = row_index(s, from, about);
        if (j < 0 || j <= prev || s->state[about] < FEDC_SECAGG_SHARE || e[5] || e[6] || e[7] ||
            fedci_sa_share_get(e + 8, y))
            return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: unmasking entry %u of "
                                "client %u (about %u) is malformed or not its neighbour", i,
                                from, about);
        int want_kind = s->state[about] >= FEDC_SECAGG_MASKED ? SA_KIND_B : SA_KIND_S;
        if (e[4] != want_kind)
            return fedc_err_set(err, FEDC_ERR_INVALID, "secagg server: client %u revealed a %s "
                                "share of client %u, which %s: refused (never both kinds)",
                                from, e[4] == SA_KIND_B ? "self-mask" : "mask-key", about,
                                want_kind == SA_KIND_B ? "survived" : "dropped");
        prev = j;
    }
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = msg + SA_HDR + 4 + (size_t)i * SA_UNMASK_ENTRY;
        uint32_t about = sa_get32(e);
        long h = row_index(s, about, from); /* symmetric graph: from is about's neighbour */
        size_t slot = (size_t)about * s->p.k + (size_t)h;
        unsigned char *d = s->sh + slot * SH_STRIDE;
        d[0] = e[4];
        memcpy(d + 1, e + 8, SA_ELEMS * 8);
        s->sh_have[slot] = 1;
    }
    sodium_memzero(y, sizeof y);
    return FEDC_OK;
}

fedc_status fedc_secagg_server_recv(fedc_secagg_server *s, uint32_t from,
                                    const unsigned char *msg, size_t len, fedc_err *err)
{
    assert(s);
    if (s->stage < FEDC_SECAGG_ADVERTISE || s->stage > FEDC_SECAGG_UNMASK)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg server: round is %s, message of "
                            "client %u refused", s->stage == FEDC_SECAGG_DONE ? "done" :
                            "aborted", from);
    if (from >= s->p.n)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg server: client %u is not in the round "
                            "(n = %u)", from, s->p.n);
    FEDC_TRY(fedci_sa_check_header(msg, len, s->stage, s->p.round, from, "server", err));
    if (s->state[from] >= s->stage)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg server: duplicate stage-%d submission "
                            "from client %u refused", s->stage, from);
    if (s->state[from] != s->stage - 1)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg server: client %u dropped out before "
                            "stage %d; its message is refused", from, s->stage);
    fedc_status st;
    switch (s->stage) {
    case FEDC_SECAGG_ADVERTISE: st = recv_keys(s, from, msg, len, err); break;
    case FEDC_SECAGG_SHARE: st = recv_shares(s, from, msg, len, err); break;
    case FEDC_SECAGG_MASKED: st = recv_masked(s, from, msg, len, err); break;
    default: st = recv_unmask(s, from, msg, len, err); break;
    }
    if (st == FEDC_OK) {
        s->state[from] = (unsigned char)s->stage;
        s->bytes_in += len;
    }
    return st;
}

static fedc_status abort_round(fedc_secagg_server *s, fedc_status why, fedc_err *err)
{
    (void)why;
    s->stage = FEDC_SECAGG_ABORTED;
    memset(s->sum, 0, s->p.len * sizeof *s->sum);
    sodium_memzero(s->sh, (size_t)s->p.n * s->p.k * SH_STRIDE);
    return FEDC_ERR_ABORTED;
}

/* Reconstructs client u's secret of `kind` from the first t shares held. -1: too few. */
static int reconstruct(const fedc_secagg_server *s, uint32_t u, int kind, uint64_t *xs,
                       uint64_t *ys, unsigned char secret[SA_KEY])
{
    uint32_t m = 0;
    const uint32_t *row = s->nbr + (size_t)u * s->p.k;
    for (uint32_t j = 0; j < s->p.k && m < s->p.t; j++) {
        size_t slot = (size_t)u * s->p.k + j;
        const unsigned char *d = s->sh + slot * SH_STRIDE;
        if (!s->sh_have[slot] || d[0] != kind) continue;
        xs[m] = (uint64_t)row[j] + 1;
        for (int e = 0; e < SA_ELEMS; e++)
            ys[(size_t)m * SA_ELEMS + e] = sa_get64(d + 1 + 8 * e);
        m++;
    }
    if (m < s->p.t) return -1;
    return fedci_sa_combine(s->p.t, xs, ys, secret) == 0 ? 0 : -2;
}

static fedc_status finish(fedc_secagg_server *s, fedc_err *err)
{
    const fedc_secagg_params *p = &s->p;
    /* First: is every needed secret recoverable? Abort before computing anything if not. */
    for (uint32_t u = 0; u < p->n; u++) {
        if (s->state[u] < FEDC_SECAGG_SHARE) continue;
        int kind = s->state[u] >= FEDC_SECAGG_MASKED ? SA_KIND_B : SA_KIND_S;
        uint32_t have = 0;
        for (uint32_t j = 0; j < p->k; j++) {
            size_t slot = (size_t)u * p->k + j;
            have += s->sh_have[slot] && s->sh[slot * SH_STRIDE] == kind;
        }
        if (have < p->t) {
            fedc_err_set(err, FEDC_ERR_ABORTED, "secagg server: round %u aborted: %u %s shares "
                         "of client %u arrived, threshold %u", p->round, have,
                         kind == SA_KIND_B ? "self-mask" : "mask-key", u, p->t);
            return abort_round(s, FEDC_ERR_ABORTED, err);
        }
    }
    uint64_t *xs = fedc_malloc((size_t)p->t * sizeof *xs);
    uint64_t *ys = sodium_malloc((size_t)p->t * SA_ELEMS * sizeof *ys);
    unsigned char *secret = sodium_malloc(SA_KEY);
    uint32_t *tmp = fedc_calloc(p->len, sizeof *tmp); /* the masks to remove, then subtracted */
    if (!xs || !ys || !secret || !tmp) {
        fedc_free(xs);
        fedc_free(tmp);
        if (ys) sodium_free(ys);
        if (secret) sodium_free(secret);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg server: out of memory unmasking");
    }
    fedc_status st = FEDC_OK;
    for (uint32_t u = 0; u < p->n && st == FEDC_OK; u++) {
        if (s->state[u] < FEDC_SECAGG_SHARE) continue;
        const unsigned char *keys = s->keys + (size_t)u * 3 * SA_KEY;
        if (s->state[u] >= FEDC_SECAGG_MASKED) { /* survivor: remove its self-mask */
            unsigned char commit[SA_KEY];
            if (reconstruct(s, u, SA_KIND_B, xs, ys, secret) != 0 ||
                (fedci_sa_commit_b(secret, commit), sodium_memcmp(commit, keys + 2 * SA_KEY,
                                                                  SA_KEY) != 0)) {
                st = fedc_err_set(err, FEDC_ERR_ABORTED, "secagg server: round %u aborted: the "
                                  "self-mask seed of client %u does not match its commitment",
                                  p->round, u);
                break;
            }
            fedci_sa_prg_add(secret, SA_NONCE_SELF, +1, tmp, p->len);
        } else { /* dropped after sharing: cancel its pairwise masks with the survivors */
            unsigned char pk[SA_KEY];
            if (reconstruct(s, u, SA_KIND_S, xs, ys, secret) != 0 ||
                (crypto_scalarmult_base(pk, secret), memcmp(pk, keys + SA_KEY, SA_KEY) != 0)) {
                st = fedc_err_set(err, FEDC_ERR_ABORTED, "secagg server: round %u aborted: the "
                                  "mask key of client %u does not match its public key",
                                  p->round, u);
                break;
            }
            const uint32_t *row = s->nbr + (size_t)u * p->k;
            for (uint32_t j = 0; j < p->k; j++) {
                uint32_t v = row[j];
                if (s->state[v] < FEDC_SECAGG_MASKED) continue;
                unsigned char key[SA_KEY];
                if (fedci_sa_pair_key("mask", p->round, u, v, secret,
                                      s->keys + (size_t)v * 3 * SA_KEY + SA_KEY, key)) {
                    st = fedc_err_set(err, FEDC_ERR_ABORTED, "secagg server: degenerate mask "
                                      "key of client %u", v);
                    break;
                }
                /* v added +PRG when v < u, -PRG when v > u: accumulate what v added */
                fedci_sa_prg_add(key, SA_NONCE_PAIR, v < u ? +1 : -1, tmp, p->len);
                sodium_memzero(key, sizeof key);
            }
        }
    }
    fedc_free(xs);
    sodium_free(ys);
    sodium_free(secret);
    if (st != FEDC_OK) {
        fedc_free(tmp);
        return abort_round(s, st, err);
    }
    uint32_t mask = p->bits == 32 ? UINT32_MAX : (UINT32_C(1) << p->bits) - 1;
    for (size_t i = 0; i < p->len; i++)
        s->sum[i] = (s->sum[i] - tmp[i]) & mask;
    fedc_free(tmp);
    sodium_memzero(s->sh, (size_t)p->n * p->k * SH_STRIDE);
    s->stage = FEDC_SECAGG_DONE;
    return FEDC_OK;
}

fedc_status fedc_secagg_server_close_stage(fedc_secagg_server *s, fedc_err *err)
{
    assert(s);
    if (s->stage < FEDC_SECAGG_ADVERTISE || s->stage > FEDC_SECAGG_UNMASK)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg server: no stage open");
    uint32_t alive = 0;
    for (uint32_t u = 0; u < s->p.n; u++)
        alive += s->state[u] >= s->stage;
    if (alive < s->p.t) {
        fedc_err_set(err, FEDC_ERR_ABORTED, "secagg server: round %u aborted: %u clients "
                     "completed stage %d, threshold %u", s->p.round, alive, s->stage, s->p.t);
        return abort_round(s, FEDC_ERR_ABORTED, err);
    }
    if (s->stage == FEDC_SECAGG_UNMASK) return finish(s, err);
    s->stage++;
    return FEDC_OK;
}

fedc_status fedc_secagg_server_message(fedc_secagg_server *s, uint32_t id, unsigned char **msg,
                                       size_t *msg_len, fedc_err *err)
{
    assert(s && msg && msg_len);
    if (s->stage < FEDC_SECAGG_SHARE || s->stage > FEDC_SECAGG_UNMASK || id >= s->p.n ||
        s->state[id] != s->stage - 1)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg server: no message for client %u in "
                            "stage %d", id, s->stage);
    int closed = s->stage - 1;
    const uint32_t *row = s->nbr + (size_t)id * s->p.k;
    uint32_t count = count_nbr(s, id, closed);
    size_t entry = closed == FEDC_SECAGG_ADVERTISE ? 4 + 2 * SA_KEY :
                   closed == FEDC_SECAGG_SHARE ? 4 + SA_CT : 4;
    size_t extra = closed == FEDC_SECAGG_MASKED ? 4 : 0;
    size_t len = SA_HDR + extra + 4 + (size_t)count * entry;
    unsigned char *m = fedc_malloc(len);
    if (!m) return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg server: out of memory");
    fedci_sa_header(m, closed, s->p.round, id);
    unsigned char *e = m + SA_HDR;
    if (closed == FEDC_SECAGG_MASKED) {
        uint32_t total = 0;
        for (uint32_t u = 0; u < s->p.n; u++)
            total += s->state[u] >= FEDC_SECAGG_MASKED;
        sa_put32(e, total);
        e += 4;
    }
    sa_put32(e, count);
    e += 4;
    for (uint32_t j = 0; j < s->p.k; j++) {
        uint32_t v = row[j];
        if (s->state[v] < closed) continue;
        sa_put32(e, v);
        if (closed == FEDC_SECAGG_ADVERTISE) {
            memcpy(e + 4, s->keys + (size_t)v * 3 * SA_KEY, 2 * SA_KEY);
        } else if (closed == FEDC_SECAGG_SHARE) {
            long h = row_index(s, v, id);
            memcpy(e + 4, s->ct + ((size_t)v * s->p.k + (size_t)h) * SA_CT, SA_CT);
        }
        e += entry;
    }
    s->bytes_out += len;
    *msg = m;
    *msg_len = len;
    return FEDC_OK;
}
