/*
 * SecAgg+ building blocks: round parameters and the neighbour graph (a Harary graph relabelled
 * by a permutation drawn from the round's public seed, as in Bell et al. 2020), message headers,
 * Shamir secret sharing over GF(2^61 - 1), pairwise key derivation (X25519 + BLAKE2b) and mask
 * expansion (ChaCha20). Cryptographic primitives are libsodium's; only the field arithmetic of
 * Shamir's scheme, which libsodium does not offer, is written here.
 */
#include <assert.h>
#include <stdlib.h>

#include "secagg/secagg_internal.h"

/* ------------------------------------------------------------------ params and graph */

uint32_t fedc_secagg_default_k(uint32_t n)
{
    uint32_t lg = 0;
    while (lg < 32 && (UINT64_C(1) << lg) < n)
        lg++;
    uint64_t k = 2u * (uint64_t)lg;
    if (k >= n - 1u) return n - 1u;
    return (uint32_t)k;
}

uint32_t fedc_secagg_default_t(uint32_t k)
{
    return k / 2u + 1u;
}

int fedci_sa_sodium(void)
{
    return sodium_init() < 0 ? -1 : 0; /* thread-safe and idempotent since libsodium 1.0.11 */
}

fedc_status fedc_secagg_params_check(fedc_secagg_params *p, fedc_err *err)
{
    assert(p);
    if (p->n < 2 || p->n > FEDC_SECAGG_MAX_CLIENTS)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg: n = %u clients, need 2..%u", p->n,
                            FEDC_SECAGG_MAX_CLIENTS);
    if (p->k == 0) p->k = fedc_secagg_default_k(p->n);
    if (p->k > p->n - 1)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg: k = %u neighbours, at most n-1 = %u",
                            p->k, p->n - 1);
    if (p->k != p->n - 1 && (p->k % 2 != 0 || p->k < 2))
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "secagg: k = %u neighbours must be even (or n-1 = %u)", p->k,
                            p->n - 1);
    if (p->t == 0) p->t = fedc_secagg_default_t(p->k);
    if (p->t > p->k)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg: threshold t = %u above k = %u", p->t,
                            p->k);
    if (p->bits < 1 || p->bits > 32)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg: bits = %u, need 1..32", p->bits);
    if (p->len < 1 || p->len > (size_t)1 << 30)
        return fedc_err_set(err, FEDC_ERR_INVALID, "secagg: vector length %zu, need 1..2^30",
                            p->len);
    return FEDC_OK;
}

/* Uniform words from ChaCha20 keyed by the public seed (nonce 2: never a mask stream's). */
typedef struct sa_stream {
    const unsigned char *key;
    uint64_t block;
    uint32_t buf[16];
    unsigned pos;
} sa_stream;

static uint32_t stream_u32(sa_stream *s)
{
    if (s->pos == 16) {
        static const unsigned char zero[64];
        unsigned char out[64], nonce[8];
        sa_put64(nonce, 2);
        crypto_stream_chacha20_xor_ic(out, zero, 64, nonce, s->block++, s->key);
        for (int i = 0; i < 16; i++)
            s->buf[i] = sa_get32(out + 4 * i);
        s->pos = 0;
    }
    return s->buf[s->pos++];
}

static uint32_t stream_below(sa_stream *s, uint32_t n)
{
    uint32_t lim = (uint32_t)(-n) % n; /* reject the low 2^32 mod n values */
    for (;;) {
        uint32_t r = stream_u32(s);
        if (r >= lim) return r % n;
    }
}

void fedci_sa_perm(const fedc_secagg_params *p, uint32_t *perm, uint32_t *inv)
{
    sa_stream s = {p->seed, 0, {0}, 16};
    for (uint32_t i = 0; i < p->n; i++)
        perm[i] = i;
    for (uint32_t i = p->n - 1; i > 0; i--) {
        uint32_t j = stream_below(&s, i + 1);
        uint32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (uint32_t i = 0; i < p->n; i++)
        inv[perm[i]] = i;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void fedci_sa_neighbors_from(const fedc_secagg_params *p, const uint32_t *perm,
                             const uint32_t *inv, uint32_t u, uint32_t *out)
{
    uint32_t n = p->n, k = p->k;
    if (k == n - 1) {
        uint32_t m = 0;
        for (uint32_t v = 0; v < n; v++)
            if (v != u) out[m++] = v;
        return;
    }
    uint32_t pos = inv[u];
    for (uint32_t j = 1; j <= k / 2; j++) {
        out[2 * (j - 1)] = perm[(pos + j) % n];
        out[2 * (j - 1) + 1] = perm[(pos + n - j) % n];
    }
    qsort(out, k, sizeof *out, cmp_u32);
}

void fedc_secagg_neighbors(const fedc_secagg_params *p, uint32_t u, uint32_t *out)
{
    assert(p && out && u < p->n);
    uint32_t *perm = fedc_malloc(2 * (size_t)p->n * sizeof *perm);
    if (!perm) { /* documented: a fatal condition for this convenience function */
        assert(!"out of memory in fedc_secagg_neighbors");
        memset(out, 0xff, (size_t)p->k * sizeof *out); /* never silently plausible */
        return;
    }
    fedci_sa_perm(p, perm, perm + p->n);
    fedci_sa_neighbors_from(p, perm, perm + p->n, u, out);
    fedc_free(perm);
}

/* ------------------------------------------------------------------ headers */

void fedci_sa_header(unsigned char *p, int stage, uint32_t round, uint32_t id)
{
    memcpy(p, SA_MAGIC, 4);
    p[4] = (unsigned char)stage;
    p[5] = p[6] = p[7] = 0;
    sa_put32(p + 8, round);
    sa_put32(p + 12, id);
}

fedc_status fedci_sa_check_header(const unsigned char *msg, size_t len, int stage,
                                  uint32_t round, uint32_t id, const char *who, fedc_err *err)
{
    if (!msg || len < SA_HDR)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg %s: message of %zu bytes, shorter "
                            "than the %d-byte header", who, len, SA_HDR);
    if (memcmp(msg, SA_MAGIC, 4) != 0 || msg[5] || msg[6] || msg[7])
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg %s: bad message magic", who);
    if (msg[4] != stage)
        return fedc_err_set(err, FEDC_ERR_STATE, "secagg %s: a stage-%u message while in "
                            "stage %d", who, msg[4], stage);
    if (sa_get32(msg + 8) != round)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg %s: message of round %u, expected "
                            "round %u", who, sa_get32(msg + 8), round);
    if (sa_get32(msg + 12) != id)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "secagg %s: message for client %u, expected "
                            "client %u (misrouted)", who, sa_get32(msg + 12), id);
    return FEDC_OK;
}

/* ------------------------------------------------------------------ GF(2^61 - 1) */

static uint64_t fadd(uint64_t a, uint64_t b)
{
    uint64_t r = a + b;
    return r >= SA_P ? r - SA_P : r;
}

static uint64_t fsub(uint64_t a, uint64_t b)
{
    return a >= b ? a - b : a + SA_P - b;
}

static uint64_t fmul(uint64_t a, uint64_t b)
{
    __uint128_t z = (__uint128_t)a * b;
    uint64_t r = ((uint64_t)z & SA_P) + (uint64_t)(z >> 61);
    r = (r & SA_P) + (r >> 61);
    return r >= SA_P ? r - SA_P : r;
}

static uint64_t finv(uint64_t a)
{
    uint64_t r = 1, e = SA_P - 2;
    while (e) {
        if (e & 1) r = fmul(r, a);
        a = fmul(a, a);
        e >>= 1;
    }
    return r;
}

static uint64_t frand(void)
{
    for (;;) {
        uint64_t r;
        randombytes_buf(&r, sizeof r);
        r &= SA_P;
        if (r < SA_P) return r;
    }
}

static void encode(const unsigned char s[SA_KEY], uint64_t e[SA_ELEMS])
{
    for (int i = 0; i < SA_ELEMS; i++) {
        int nb = i < 4 ? 7 : 4;
        uint64_t v = 0;
        for (int b = nb - 1; b >= 0; b--)
            v = v << 8 | s[7 * i + b];
        e[i] = v;
    }
}

static int decode(const uint64_t e[SA_ELEMS], unsigned char s[SA_KEY])
{
    for (int i = 0; i < SA_ELEMS; i++) {
        int nb = i < 4 ? 7 : 4;
        uint64_t v = e[i];
        if (v >> (8 * nb)) return -1;
        for (int b = 0; b < nb; b++, v >>= 8)
            s[7 * i + b] = (unsigned char)v;
    }
    return 0;
}

void fedci_sa_split(const unsigned char secret[SA_KEY], uint32_t t, const uint64_t *xs, size_t m,
                    uint64_t *out)
{
    uint64_t coef[SA_ELEMS];
    encode(secret, coef);
    uint64_t *poly = sodium_malloc((size_t)t * SA_ELEMS * sizeof *poly);
    assert(poly); /* small; sodium_malloc fails only when the OS is out of memory */
    for (int j = 0; j < SA_ELEMS; j++) {
        poly[j] = coef[j];
        for (uint32_t d = 1; d < t; d++)
            poly[(size_t)d * SA_ELEMS + j] = frand();
    }
    for (size_t i = 0; i < m; i++)
        for (int j = 0; j < SA_ELEMS; j++) {
            uint64_t y = 0;
            for (uint32_t d = t; d-- > 0;)
                y = fadd(fmul(y, xs[i]), poly[(size_t)d * SA_ELEMS + j]);
            out[i * SA_ELEMS + j] = y;
        }
    sodium_memzero(coef, sizeof coef);
    sodium_free(poly);
}

int fedci_sa_combine(uint32_t t, const uint64_t *xs, const uint64_t *ys,
                     unsigned char secret[SA_KEY])
{
    uint64_t acc[SA_ELEMS] = {0};
    for (uint32_t i = 0; i < t; i++) {
        uint64_t num = 1, den = 1;
        for (uint32_t j = 0; j < t; j++) {
            if (j == i) continue;
            if (xs[j] == xs[i]) return -1;
            num = fmul(num, xs[j]);
            den = fmul(den, fsub(xs[j], xs[i]));
        }
        uint64_t lam = fmul(num, finv(den));
        for (int e = 0; e < SA_ELEMS; e++)
            acc[e] = fadd(acc[e], fmul(lam, ys[(size_t)i * SA_ELEMS + e]));
    }
    int rc = decode(acc, secret);
    sodium_memzero(acc, sizeof acc);
    return rc;
}

void fedci_sa_share_put(unsigned char *p, const uint64_t *share)
{
    for (int j = 0; j < SA_ELEMS; j++)
        sa_put64(p + 8 * j, share[j]);
}

int fedci_sa_share_get(const unsigned char *p, uint64_t *share)
{
    for (int j = 0; j < SA_ELEMS; j++) {
        share[j] = sa_get64(p + 8 * j);
        if (share[j] >= SA_P) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ keys and masks */

int fedci_sa_pair_key(const char *purpose, uint32_t round, uint32_t u, uint32_t v,
                      const unsigned char my_sk[SA_KEY], const unsigned char their_pk[SA_KEY],
                      unsigned char key[SA_KEY])
{
    unsigned char shared[crypto_scalarmult_BYTES], ctx[12];
    if (crypto_scalarmult(shared, my_sk, their_pk) != 0) return -1;
    sa_put32(ctx, round);
    sa_put32(ctx + 4, u < v ? u : v);
    sa_put32(ctx + 8, u < v ? v : u);
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, SA_KEY);
    crypto_generichash_update(&st, (const unsigned char *)"fedc-secagg-v1-", 15);
    crypto_generichash_update(&st, (const unsigned char *)purpose, strlen(purpose) + 1);
    crypto_generichash_update(&st, ctx, sizeof ctx);
    crypto_generichash_update(&st, shared, sizeof shared);
    crypto_generichash_final(&st, key, SA_KEY);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(&st, sizeof st);
    return 0;
}

#define PRG_CHUNK 1024 /* words per keystream chunk: 4 KiB, a multiple of the 64-byte block */

void fedci_sa_prg_add(const unsigned char key[SA_KEY], uint64_t nonce, int sign, uint32_t *y,
                      size_t len)
{
    static const unsigned char zero[PRG_CHUNK * 4];
    unsigned char ks[PRG_CHUNK * 4], nb[8];
    sa_put64(nb, nonce);
    for (size_t off = 0; off < len; off += PRG_CHUNK) {
        size_t m = len - off < PRG_CHUNK ? len - off : PRG_CHUNK;
        crypto_stream_chacha20_xor_ic(ks, zero, m * 4, nb, off / 16, key);
        uint32_t *dst = y + off;
        if (sign > 0)
            for (size_t i = 0; i < m; i++)
                dst[i] += sa_get32(ks + 4 * i);
        else
            for (size_t i = 0; i < m; i++)
                dst[i] -= sa_get32(ks + 4 * i);
    }
    sodium_memzero(ks, sizeof ks);
}

void fedci_sa_commit_b(const unsigned char b[SA_KEY], unsigned char out[SA_KEY])
{
    crypto_generichash(out, SA_KEY, b, SA_KEY, (const unsigned char *)"fedc-secagg-b", 13);
}
