/*
 * The SecAgg+ client state machine (fedc/secagg.h): key advertisement, Shamir sharing of the
 * self-mask seed and of the mask secret key to the neighbours (encrypted with XChaCha20-Poly1305
 * under an X25519-derived key), the masked input, and the unmasking answer. Every message from
 * the server is checked (header, sizes, ids, authentication) before anything is used; after any
 * error the client aborts, wipes its secrets and answers nothing more.
 */
#include <assert.h>

#include "secagg/secagg_internal.h"

typedef struct client_secrets {
    unsigned char c_sk[SA_KEY]; /* share encryption key pair (secret half) */
    unsigned char s_sk[SA_KEY]; /* mask key pair (secret half) */
    unsigned char b[SA_KEY];    /* self-mask seed */
} client_secrets;

struct fedc_secagg_client {
    fedc_secagg_params p;
    uint32_t id;
    int stage;                   /* the next call expected: 1..4; 5 done; 6 aborted */
    uint32_t *nbr;               /* k neighbours, ascending */
    unsigned char c_pk[SA_KEY], s_pk[SA_KEY];
    unsigned char (*pk_c)[SA_KEY]; /* neighbours' advertised keys, by neighbour index */
    unsigned char (*pk_s)[SA_KEY];
    unsigned char *have_key;     /* k flags: the neighbour advertised (in the stage-1 list) */
    unsigned char *have_share;   /* k flags: the neighbour's shares arrived (it is in U2) */
    client_secrets *sec;         /* sodium_malloc */
    uint64_t *shares;            /* sodium_malloc: k * 2 * SA_ELEMS (b share, s share) */
};

static void wipe(fedc_secagg_client *c)
{
    if (c->sec) {
        sodium_free(c->sec); /* sodium_free zeroes the region */
        c->sec = NULL;
    }
    if (c->shares) {
        sodium_free(c->shares);
        c->shares = NULL;
    }
}

void fedc_secagg_client_destroy(fedc_secagg_client *c)
{
    if (!c) return;
    wipe(c);
    fedc_free(c->nbr);
    fedc_free(c->pk_c);
    fedc_free(c->pk_s);
    fedc_free(c->have_key);
    fedc_free(c->have_share);
    fedc_free(c);
}

fedc_status fedc_secagg_client_create(const fedc_secagg_params *p, uint32_t id,
                                      fedc_secagg_client **out, fedc_err *err)
{
    assert(p && out);
    *out = NULL;
    fedc_secagg_params pc = *p;
    FEDC_TRY(fedc_secagg_params_check(&pc, err));
    if (id >= pc.n)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg client: id %u, need < n = %u", id,
                            pc.n);
    if (fedci_sa_sodium() != 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg client: libsodium unusable");
    fedc_secagg_client *c = fedc_calloc(1, sizeof *c);
    if (!c) return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg client: out of memory");
    c->p = pc;
    c->id = id;
    c->stage = FEDC_SECAGG_ADVERTISE;
    size_t k = pc.k;
    c->nbr = fedc_malloc(k * sizeof *c->nbr);
    c->pk_c = fedc_malloc(k * sizeof *c->pk_c);
    c->pk_s = fedc_malloc(k * sizeof *c->pk_s);
    c->have_key = fedc_calloc(k, 1);
    c->have_share = fedc_calloc(k, 1);
    c->sec = sodium_malloc(sizeof *c->sec);
    c->shares = sodium_malloc(k * 2 * SA_ELEMS * sizeof *c->shares);
    uint32_t *perm = fedc_malloc(2 * (size_t)pc.n * sizeof *perm);
    if (!c->nbr || !c->pk_c || !c->pk_s || !c->have_key || !c->have_share || !c->sec ||
        !c->shares || !perm) {
        fedc_free(perm);
        fedc_secagg_client_destroy(c);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "secagg client: out of memory");
    }
    fedci_sa_perm(&c->p, perm, perm + pc.n);
    fedci_sa_neighbors_from(&c->p, perm, perm + pc.n, id, c->nbr);
    fedc_free(perm);
    crypto_kx_keypair(c->c_pk, c->sec->c_sk);
    crypto_kx_keypair(c->s_pk, c->sec->s_sk);
    randombytes_buf(c->sec->b, SA_KEY);
    *out = c;
    return FEDC_OK;
}

/* Index of v among the neighbours, or -1. */
static long nbr_index(const fedc_secagg_client *c, uint32_t v)
{
    size_t lo = 0, hi = c->p.k;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->nbr[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->p.k && c->nbr[lo] == v ? (long)lo : -1;
}

static fedc_status fail(fedc_secagg_client *c, fedc_status st)
{
    c->stage = FEDC_SECAGG_ABORTED;
    wipe(c);
    return st;
}

static fedc_status expect(fedc_secagg_client *c, int stage, fedc_err *err)
{
    if (c->stage != stage)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg client %u: called for stage %d in "
                            "state %d", c->id, stage, c->stage);
    return FEDC_OK;
}

static unsigned char *new_msg(size_t len, fedc_err *err)
{
    unsigned char *m = fedc_malloc(len);
    if (!m) fedc_err_set(err, FEDC_ERR_NOMEM, "secagg: out of memory for a %zu-byte message",
                         len);
    return m;
}


fedc_status fedc_secagg_client_advertise(fedc_secagg_client *c, unsigned char **msg,
                                         size_t *msg_len, fedc_err *err)
{
    assert(c && msg && msg_len);
    FEDC_TRY(expect(c, FEDC_SECAGG_ADVERTISE, err));
    size_t len = SA_HDR + 3 * SA_KEY;
    unsigned char *m = new_msg(len, err);
    if (!m) return FEDC_ERR_NOMEM;
    fedci_sa_header(m, FEDC_SECAGG_ADVERTISE, c->p.round, c->id);
    memcpy(m + SA_HDR, c->c_pk, SA_KEY);
    memcpy(m + SA_HDR + SA_KEY, c->s_pk, SA_KEY);
    fedci_sa_commit_b(c->sec->b, m + SA_HDR + 2 * SA_KEY);
    *msg = m;
    *msg_len = len;
    c->stage = FEDC_SECAGG_SHARE;
    return FEDC_OK;
}

static void make_ad(unsigned char ad[12], uint32_t round, uint32_t from, uint32_t to)
{
    sa_put32(ad, round);
    sa_put32(ad + 4, from);
    sa_put32(ad + 8, to);
}

fedc_status fedc_secagg_client_share(fedc_secagg_client *c, const unsigned char *in,
                                     size_t in_len, unsigned char **msg, size_t *msg_len,
                                     fedc_err *err)
{
    assert(c && msg && msg_len);
    FEDC_TRY(expect(c, FEDC_SECAGG_SHARE, err));
    fedc_status st = fedci_sa_check_header(in, in_len, FEDC_SECAGG_ADVERTISE, c->p.round, c->id,
                                           "client (keys)", err);
    if (st) return fail(c, st);
    const size_t entry = 4 + 2 * SA_KEY;
    uint32_t count = in_len >= SA_HDR + 4 ? sa_get32(in + SA_HDR) : 0;
    if (in_len < SA_HDR + 4 || count > c->p.k || in_len != SA_HDR + 4 + (size_t)count * entry)
        return fail(c, fedc_err_set(err, FEDC_ERR_FORMAT, "secagg client %u: key list of %zu "
                                    "bytes is malformed", c->id, in_len));
    long prev = -1;
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = in + SA_HDR + 4 + (size_t)i * entry;
        uint32_t v = sa_get32(e);
        long j = nbr_index(c, v);
        if (j < 0 || j <= prev)
            return fail(c, fedc_err_set(err, FEDC_ERR_FORMAT, "secagg client %u: key list "
                                        "entry %u names client %u, not a new neighbour", c->id,
                                        i, v));
        prev = j;
        memcpy(c->pk_c[j], e + 4, SA_KEY);
        memcpy(c->pk_s[j], e + 4 + SA_KEY, SA_KEY);
        c->have_key[j] = 1;
    }
    if (count < c->p.t)
        return fail(c, fedc_err_set(err, FEDC_ERR_ABORTED, "secagg client %u: only %u "
                                    "neighbours advertised keys, threshold %u", c->id, count,
                                    c->p.t));
    /* Shares of b and s_sk for the neighbours that advertised, at x = their id + 1. */
    uint64_t *xs = fedc_malloc((size_t)count * sizeof *xs);
    uint64_t *sh = sodium_malloc((size_t)count * 2 * SA_ELEMS * sizeof *sh);
    size_t len = SA_HDR + 4 + (size_t)count * (4 + SA_CT);
    unsigned char *m = new_msg(len, err);
    unsigned char *plain = sodium_malloc(SA_PLAIN);
    if (!xs || !sh || !m || !plain) {
        fedc_free(xs);
        fedc_free(m);
        if (sh) sodium_free(sh);
        if (plain) sodium_free(plain);
        return fail(c, fedc_err_set(err, FEDC_ERR_NOMEM, "secagg client: out of memory"));
    }
    uint32_t m_i = 0;
    for (uint32_t j = 0; j < c->p.k; j++)
        if (c->have_key[j]) xs[m_i++] = (uint64_t)c->nbr[j] + 1;
    fedci_sa_split(c->sec->b, c->p.t, xs, count, sh);
    fedci_sa_split(c->sec->s_sk, c->p.t, xs, count, sh + (size_t)count * SA_ELEMS);
    fedci_sa_header(m, FEDC_SECAGG_SHARE, c->p.round, c->id);
    sa_put32(m + SA_HDR, count);
    st = FEDC_OK;
    m_i = 0;
    for (uint32_t j = 0; j < c->p.k && st == FEDC_OK; j++) {
        if (!c->have_key[j]) continue;
        uint32_t v = c->nbr[j];
        unsigned char *e = m + SA_HDR + 4 + (size_t)m_i * (4 + SA_CT);
        unsigned char key[SA_KEY], ad[12];
        sa_put32(e, v);
        if (fedci_sa_pair_key("enc", c->p.round, c->id, v, c->sec->c_sk, c->pk_c[j], key)) {
            st = fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg client %u: neighbour %u advertised "
                              "a degenerate key", c->id, v);
            break;
        }
        sa_put32(plain, c->id);
        sa_put32(plain + 4, v);
        fedci_sa_share_put(plain + 8, sh + (size_t)m_i * SA_ELEMS);
        fedci_sa_share_put(plain + 8 + SA_SHARE_BYTES, sh + ((size_t)count + m_i) * SA_ELEMS);
        make_ad(ad, c->p.round, c->id, v);
        unsigned char *nonce = e + 4;
        randombytes_buf(nonce, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
        crypto_aead_xchacha20poly1305_ietf_encrypt(
            nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, NULL, plain, SA_PLAIN, ad,
            sizeof ad, NULL, nonce, key);
        sodium_memzero(key, sizeof key);
        m_i++;
    }
    fedc_free(xs);
    sodium_free(sh);
    sodium_free(plain);
    if (st) {
        fedc_free(m);
        return fail(c, st);
    }
    *msg = m;
    *msg_len = len;
    c->stage = FEDC_SECAGG_MASKED;
    return FEDC_OK;
}

fedc_status fedc_secagg_client_masked(fedc_secagg_client *c, const unsigned char *in,
                                      size_t in_len, const uint32_t *x, unsigned char **msg,
                                      size_t *msg_len, fedc_err *err)
{
    assert(c && x && msg && msg_len);
    FEDC_TRY(expect(c, FEDC_SECAGG_MASKED, err));
    fedc_status st = fedci_sa_check_header(in, in_len, FEDC_SECAGG_SHARE, c->p.round, c->id,
                                           "client (shares)", err);
    if (st) return fail(c, st);
    const size_t entry = 4 + SA_CT;
    uint32_t count = in_len >= SA_HDR + 4 ? sa_get32(in + SA_HDR) : 0;
    if (in_len < SA_HDR + 4 || count > c->p.k || in_len != SA_HDR + 4 + (size_t)count * entry)
        return fail(c, fedc_err_set(err, FEDC_ERR_FORMAT, "secagg client %u: share list of %zu "
                                    "bytes is malformed", c->id, in_len));
    uint32_t mask = c->p.bits == 32 ? UINT32_MAX : (UINT32_C(1) << c->p.bits) - 1;
    for (size_t i = 0; i < c->p.len; i++)
        if (x[i] & ~mask)
            return fedc_err_set(err, FEDC_ERR_RANGE, "secagg client %u: input[%zu] = %u is "
                                "outside Z_2^%u", c->id, i, x[i], c->p.bits);
    unsigned char *plain = sodium_malloc(SA_PLAIN);
    if (!plain) return fail(c, fedc_err_set(err, FEDC_ERR_NOMEM, "secagg client: no memory"));
    long prev = -1;
    for (uint32_t i = 0; i < count && st == FEDC_OK; i++) {
        const unsigned char *e = in + SA_HDR + 4 + (size_t)i * entry;
        uint32_t v = sa_get32(e);
        long j = nbr_index(c, v);
        if (j < 0 || j <= prev || !c->have_key[j]) {
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "secagg client %u: share entry %u comes "
                              "from client %u, not a new neighbour with keys", c->id, i, v);
            break;
        }
        prev = j;
        unsigned char key[SA_KEY], ad[12];
        if (fedci_sa_pair_key("enc", c->p.round, c->id, v, c->sec->c_sk, c->pk_c[j], key)) {
            st = fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg client %u: degenerate key of %u",
                              c->id, v);
            break;
        }
        make_ad(ad, c->p.round, v, c->id);
        const unsigned char *nonce = e + 4;
        int bad = crypto_aead_xchacha20poly1305_ietf_decrypt(
            plain, NULL, NULL, nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
            SA_CT - crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, ad, sizeof ad, nonce, key);
        sodium_memzero(key, sizeof key);
        uint64_t *bs = c->shares + (size_t)j * 2 * SA_ELEMS;
        if (bad || sa_get32(plain) != v || sa_get32(plain + 4) != c->id ||
            fedci_sa_share_get(plain + 8, bs) ||
            fedci_sa_share_get(plain + 8 + SA_SHARE_BYTES, bs + SA_ELEMS)) {
            st = fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg client %u: the share from client "
                              "%u fails authentication", c->id, v);
            break;
        }
        c->have_share[j] = 1;
    }
    sodium_free(plain);
    if (st) return fail(c, st);
    if (count < c->p.t)
        return fail(c, fedc_err_set(err, FEDC_ERR_ABORTED, "secagg client %u: shares from "
                                    "only %u neighbours, threshold %u", c->id, count, c->p.t));
    size_t len = SA_HDR + 4 * c->p.len;
    unsigned char *m = new_msg(len, err);
    uint32_t *y = fedc_malloc(c->p.len * sizeof *y);
    if (!m || !y) {
        fedc_free(m);
        fedc_free(y);
        return fail(c, fedc_err_set(err, FEDC_ERR_NOMEM, "secagg client: out of memory"));
    }
    memcpy(y, x, c->p.len * sizeof *y);
    fedci_sa_prg_add(c->sec->b, SA_NONCE_SELF, +1, y, c->p.len);
    for (uint32_t j = 0; j < c->p.k; j++) {
        if (!c->have_share[j]) continue;
        unsigned char key[SA_KEY];
        uint32_t v = c->nbr[j];
        if (fedci_sa_pair_key("mask", c->p.round, c->id, v, c->sec->s_sk, c->pk_s[j], key)) {
            fedc_free(m);
            fedc_free(y);
            return fail(c, fedc_err_set(err, FEDC_ERR_CRYPTO, "secagg client %u: degenerate "
                                        "mask key of %u", c->id, v));
        }
        fedci_sa_prg_add(key, SA_NONCE_PAIR, c->id < v ? +1 : -1, y, c->p.len);
        sodium_memzero(key, sizeof key);
    }
    fedci_sa_header(m, FEDC_SECAGG_MASKED, c->p.round, c->id);
    for (size_t i = 0; i < c->p.len; i++)
        sa_put32(m + SA_HDR + 4 * i, y[i] & mask);
    fedc_free(y);
    *msg = m;
    *msg_len = len;
    c->stage = FEDC_SECAGG_UNMASK;
    return FEDC_OK;
}

fedc_status fedc_secagg_client_unmask(fedc_secagg_client *c, const unsigned char *in,
                                      size_t in_len, unsigned char **msg, size_t *msg_len,
                                      fedc_err *err)
{
    assert(c && msg && msg_len);
    FEDC_TRY(expect(c, FEDC_SECAGG_UNMASK, err));
    fedc_status st = fedci_sa_check_header(in, in_len, FEDC_SECAGG_MASKED, c->p.round, c->id,
                                           "client (survivors)", err);
    if (st) return fail(c, st);
    uint32_t total = in_len >= SA_HDR + 8 ? sa_get32(in + SA_HDR) : 0;
    uint32_t count = in_len >= SA_HDR + 8 ? sa_get32(in + SA_HDR + 4) : 0;
    if (in_len < SA_HDR + 8 || count > c->p.k || count > total || total > c->p.n ||
        in_len != SA_HDR + 8 + (size_t)count * 4)
        return fail(c, fedc_err_set(err, FEDC_ERR_FORMAT, "secagg client %u: survivor list of "
                                    "%zu bytes is malformed", c->id, in_len));
    if (total < c->p.t)
        return fail(c, fedc_err_set(err, FEDC_ERR_ABORTED, "secagg client %u: only %u "
                                    "survivors, threshold %u", c->id, total, c->p.t));
    unsigned char *alive = fedc_calloc(c->p.k, 1);
    if (!alive) return fail(c, fedc_err_set(err, FEDC_ERR_NOMEM, "secagg client: no memory"));
    long prev = -1;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t v = sa_get32(in + SA_HDR + 8 + 4 * (size_t)i);
        long j = nbr_index(c, v);
        if (j < 0 || j <= prev || !c->have_share[j]) {
            fedc_free(alive);
            return fail(c, fedc_err_set(err, FEDC_ERR_FORMAT, "secagg client %u: survivor %u "
                                        "is not a new neighbour whose shares it holds", c->id,
                                        v));
        }
        prev = j;
        alive[j] = 1;
    }
    uint32_t held = 0;
    for (uint32_t j = 0; j < c->p.k; j++)
        held += c->have_share[j];
    size_t len = SA_HDR + 4 + (size_t)held * SA_UNMASK_ENTRY;
    unsigned char *m = new_msg(len, err);
    if (!m) {
        fedc_free(alive);
        return fail(c, FEDC_ERR_NOMEM);
    }
    fedci_sa_header(m, FEDC_SECAGG_UNMASK, c->p.round, c->id);
    sa_put32(m + SA_HDR, held);
    unsigned char *e = m + SA_HDR + 4;
    for (uint32_t j = 0; j < c->p.k; j++) {
        if (!c->have_share[j]) continue;
        int kind = alive[j] ? SA_KIND_B : SA_KIND_S; /* exactly one kind per neighbour */
        sa_put32(e, c->nbr[j]);
        e[4] = (unsigned char)kind;
        e[5] = e[6] = e[7] = 0;
        fedci_sa_share_put(e + 8, c->shares + ((size_t)j * 2 + (kind == SA_KIND_S)) * SA_ELEMS);
        e += SA_UNMASK_ENTRY;
    }
    fedc_free(alive);
    *msg = m;
    *msg_len = len;
    c->stage = FEDC_SECAGG_DONE;
    wipe(c); /* answered once: nothing more to reveal */
    return FEDC_OK;
}
