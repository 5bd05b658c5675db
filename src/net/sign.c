/*
 * Ed25519 identities and request signing (libsodium): key generation and key files, the
 * Authorization header's format and strict parser, signatures over method, path, timestamp,
 * nonce and body hash; session keys and Poly1305 body MACs (OpenSSL's libcrypto when built
 * with FEDC_WITH_OPENSSL, else libsodium; same tags). Contracts in fedc/net.h and sign.h.
 */
#include "net/sign.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/wire.h"

#if FEDC_HAVE_LIBCRYPTO
#include <openssl/evp.h>
#endif

struct fedc_key {
    uint8_t sk[crypto_sign_SECRETKEYBYTES]; /* seed || public key */
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
};

#define KEY_TAG "fedc-ed25519-secret-v1"
#define KEY_FILE_MAX 4096

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ok = -1;

static void do_sodium_init(void) { sodium_ok = sodium_init() < 0 ? -1 : 0; }

int fedci_sodium_init(void)
{
    pthread_once(&sodium_once, do_sodium_init);
    return sodium_ok;
}

static fedc_status key_alloc(fedc_key **out, fedc_err *err)
{
    *out = NULL;
    if (fedci_sodium_init() != 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "libsodium could not initialise");
    fedc_key *k = sodium_malloc(sizeof *k);
    if (!k) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of secure memory for a key");
    *out = k;
    return FEDC_OK;
}

fedc_status fedc_key_generate(fedc_key **out, fedc_err *err)
{
    FEDC_TRY(key_alloc(out, err));
    crypto_sign_keypair((*out)->pk, (*out)->sk);
    return FEDC_OK;
}

void fedc_key_destroy(fedc_key *key)
{
    if (key) sodium_free(key); /* sodium_free wipes */
}

void fedc_key_public(const fedc_key *key, uint8_t pk[FEDC_KEY_PUBLIC_BYTES])
{
    memcpy(pk, key->pk, FEDC_KEY_PUBLIC_BYTES);
}

void fedc_key_public_to_hex(const uint8_t pk[FEDC_KEY_PUBLIC_BYTES], char out[FEDC_KEY_PUBLIC_HEX])
{
    sodium_bin2hex(out, FEDC_KEY_PUBLIC_HEX, pk, FEDC_KEY_PUBLIC_BYTES);
}

void fedc_key_public_hex(const fedc_key *key, char out[FEDC_KEY_PUBLIC_HEX])
{
    fedc_key_public_to_hex(key->pk, out);
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return 0;
    }
    return 1;
}

/* Exactly 2*n hex digits at s into out[n]. 0 or -1. */
static int hex_exact(const char *s, size_t len, uint8_t *out, size_t n)
{
    if (len != 2 * n || !is_hex(s, len)) return -1;
    size_t got = 0;
    if (sodium_hex2bin(out, n, s, len, NULL, &got, NULL) != 0 || got != n) return -1;
    return 0;
}

fedc_status fedc_key_public_parse(const char *text, uint8_t pk[FEDC_KEY_PUBLIC_BYTES],
                                  fedc_err *err)
{
    if (fedci_sodium_init() != 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "libsodium could not initialise");
    const char *s = text;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    if (hex_exact(s, n, pk, FEDC_KEY_PUBLIC_BYTES) != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "'%.80s' is not a public key (64 hex digits expected)", text);
    if (!crypto_core_ed25519_is_valid_point(pk))
        return fedc_err_set(err, FEDC_ERR_FORMAT, "'%.80s' is not a valid Ed25519 public key",
                            text);
    return FEDC_OK;
}

fedc_status fedc_key_write(const fedc_key *key, const char *path, fedc_err *err)
{
    char seed_hex[2 * crypto_sign_SEEDBYTES + 1], pk_hex[FEDC_KEY_PUBLIC_HEX];
    char *text = sodium_malloc(KEY_FILE_MAX);
    if (!text) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of secure memory");
    sodium_bin2hex(seed_hex, sizeof seed_hex, key->sk, crypto_sign_SEEDBYTES);
    fedc_key_public_hex(key, pk_hex);
    int len = snprintf(text, KEY_FILE_MAX,
                       "# fedc Ed25519 secret key: keep it private (mode 0600)\n%s %s\npublic %s\n",
                       KEY_TAG, seed_hex, pk_hex);
    sodium_memzero(seed_hex, sizeof seed_hex);
    fedc_status st = FEDC_OK;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        st = fedc_err_set(err, FEDC_ERR_IO, "%s: %s%s", path, strerror(errno),
                          errno == EEXIST ? " (a key file is never overwritten)" : "");
    } else {
        ssize_t w = write(fd, text, (size_t)len);
        if (w != len || fsync(fd) != 0) {
            st = fedc_err_set(err, FEDC_ERR_IO, "%s: write failed: %s", path,
                              w < 0 ? strerror(errno) : "short write");
            unlink(path);
        }
        close(fd);
    }
    sodium_free(text);
    return st;
}

fedc_status fedc_key_read(const char *path, fedc_key **out, fedc_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fedc_err_set(err, FEDC_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fedc_err_set(err, FEDC_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_mode & 077) {
        close(fd);
        return fedc_err_set(err, FEDC_ERR_AUTH,
                            "%s: permissions %04o are too open: a secret key file must be "
                            "readable by its owner only (chmod 600)",
                            path, (unsigned)(sb.st_mode & 07777));
    }
    fedc_key *k = NULL;
    fedc_status st = key_alloc(&k, err);
    char *text = st == FEDC_OK ? sodium_malloc(KEY_FILE_MAX + 1) : NULL;
    if (st == FEDC_OK && !text) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of secure memory");
    ssize_t n = 0;
    if (st == FEDC_OK) {
        n = read(fd, text, KEY_FILE_MAX + 1);
        if (n < 0)
            st = fedc_err_set(err, FEDC_ERR_IO, "%s: %s", path, strerror(errno));
        else if (n > KEY_FILE_MAX)
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: too large for a key file", path);
    }
    close(fd);
    int have_seed = 0, have_pk = 0;
    uint8_t pk_line[FEDC_KEY_PUBLIC_BYTES];
    if (st == FEDC_OK) {
        text[n] = '\0';
        int line = 0;
        char *save = NULL;
        for (char *l = strtok_r(text, "\n", &save); l && st == FEDC_OK;
             l = strtok_r(NULL, "\n", &save)) {
            line++;
            size_t len = strlen(l);
            if (len && l[len - 1] == '\r') l[--len] = '\0';
            if (len == 0 || l[0] == '#') continue;
            if (strncmp(l, KEY_TAG " ", sizeof KEY_TAG) == 0) {
                uint8_t seed[crypto_sign_SEEDBYTES];
                const char *h = l + sizeof KEY_TAG;
                if (hex_exact(h, strlen(h), seed, sizeof seed) != 0)
                    st = fedc_err_set(err, FEDC_ERR_FORMAT,
                                      "%s:%d: the secret must be 64 hex digits", path, line);
                else
                    crypto_sign_seed_keypair(k->pk, k->sk, seed);
                sodium_memzero(seed, sizeof seed);
                have_seed = 1;
            } else if (strncmp(l, "public ", 7) == 0) {
                if (hex_exact(l + 7, strlen(l + 7), pk_line, sizeof pk_line) != 0)
                    st = fedc_err_set(err, FEDC_ERR_FORMAT,
                                      "%s:%d: the public key must be 64 hex digits", path, line);
                have_pk = 1;
            } else {
                st = fedc_err_set(err, FEDC_ERR_FORMAT,
                                  "%s:%d: not a fedc key file line (expected '%s ...')", path, line,
                                  KEY_TAG);
            }
        }
    }
    if (st == FEDC_OK && !have_seed)
        st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: no '%s' line: not a fedc secret key file",
                          path, KEY_TAG);
    if (st == FEDC_OK && have_pk && sodium_memcmp(pk_line, k->pk, sizeof pk_line) != 0)
        st = fedc_err_set(err, FEDC_ERR_CRYPTO,
                          "%s: the 'public' line does not match the secret key", path);
    if (text) sodium_free(text);
    if (st != FEDC_OK) {
        fedc_key_destroy(k);
        return st;
    }
    *out = k;
    return FEDC_OK;
}

/* ---- the Authorization header ---- */

/* The signed text: hash mode binds the body's hash, session mode its MAC tag (a different
 * prefix, so that a signature of one mode never verifies in the other). */
static size_t auth_message(const fedci_auth *a, const char *method, const char *path, char *out,
                           size_t size)
{
    char nh[2 * FEDCI_NONCE_BYTES + 1], bh[2 * FEDCI_HASH_BYTES + 1];
    sodium_bin2hex(nh, sizeof nh, a->nonce, FEDCI_NONCE_BYTES);
    if (a->mode == FEDCI_AUTH_MAC)
        sodium_bin2hex(bh, sizeof bh, a->mac, FEDCI_MAC_BYTES);
    else
        sodium_bin2hex(bh, sizeof bh, a->body_hash, FEDCI_HASH_BYTES);
    int n = snprintf(out, size, "%s\n%s\n%s\n%" PRIu64 "\n%s\n%s",
                     a->mode == FEDCI_AUTH_MAC ? "fedc-v1-mac" : "fedc-v1", method, path, a->ts_ms,
                     nh, bh);
    if (n < 0) return 0;
    return (size_t)n < size ? (size_t)n : size - 1;
}

void fedci_auth_begin(const fedc_key *key, uint64_t ts_ms, fedci_auth *a)
{
    memset(a, 0, sizeof *a);
    memcpy(a->pk, key->pk, sizeof a->pk);
    a->ts_ms = ts_ms;
    randombytes_buf(a->nonce, sizeof a->nonce);
}

static void auth_finish(const fedc_key *key, const char *method, const char *path, fedci_auth *a)
{
    char msg[2048];
    size_t n = auth_message(a, method, path, msg, sizeof msg);
    crypto_sign_detached(a->sig, NULL, (const unsigned char *)msg, n, key->sk);
}

void fedci_auth_sign(const fedc_key *key, const char *method, const char *path,
                     const uint8_t body_hash[FEDCI_HASH_BYTES], uint64_t ts_ms, fedci_auth *a)
{
    fedci_auth_begin(key, ts_ms, a);
    a->mode = FEDCI_AUTH_HASH;
    memcpy(a->body_hash, body_hash, FEDCI_HASH_BYTES);
    auth_finish(key, method, path, a);
}

void fedci_auth_finish_mac(const fedc_key *key, const char *method, const char *path,
                           fedci_auth *a)
{
    a->mode = FEDCI_AUTH_MAC;
    auth_finish(key, method, path, a);
}

static int verify_mode(const fedci_auth *a, fedci_auth_mode mode, const char *method,
                       const char *path)
{
    char msg[2048];
    if (strlen(path) > 1024 || strlen(method) > 16) return -1;
    fedci_auth x = *a;
    x.mode = mode;
    size_t n = auth_message(&x, method, path, msg, sizeof msg);
    return crypto_sign_verify_detached(a->sig, (const unsigned char *)msg, n, a->pk) == 0 ? 0 : -1;
}

int fedci_auth_verify(const fedci_auth *a, const char *method, const char *path)
{
    return verify_mode(a, FEDCI_AUTH_HASH, method, path);
}

int fedci_auth_verify_any(const fedci_auth *a, const char *method, const char *path)
{
    return verify_mode(a, a->mode == FEDCI_AUTH_MAC ? FEDCI_AUTH_MAC : FEDCI_AUTH_HASH, method,
                       path);
}

void fedci_auth_format(const fedci_auth *a, char *out, size_t size)
{
    char pk[2 * FEDC_KEY_PUBLIC_BYTES + 1], nh[2 * FEDCI_NONCE_BYTES + 1],
        bh[2 * FEDCI_HASH_BYTES + 1], sg[2 * FEDCI_SIG_BYTES + 1];
    sodium_bin2hex(pk, sizeof pk, a->pk, sizeof a->pk);
    sodium_bin2hex(nh, sizeof nh, a->nonce, sizeof a->nonce);
    if (a->mode == FEDCI_AUTH_MAC)
        sodium_bin2hex(bh, sizeof bh, a->mac, sizeof a->mac);
    else
        sodium_bin2hex(bh, sizeof bh, a->body_hash, sizeof a->body_hash);
    sodium_bin2hex(sg, sizeof sg, a->sig, sizeof a->sig);
    snprintf(out, size, FEDCI_AUTH_SCHEME " key=%s, ts=%" PRIu64 ", nonce=%s, %s=%s, sig=%s", pk,
             a->ts_ms, nh, a->mode == FEDCI_AUTH_MAC ? "mac" : "body", bh, sg);
}

fedc_status fedci_auth_parse(const char *value, size_t len, fedci_auth *out, fedc_err *err)
{
    memset(out, 0, sizeof *out);
    if (!value) return fedc_err_set(err, FEDC_ERR_FORMAT, "no Authorization header");
    if (len > FEDCI_AUTH_MAX)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization header of %zu bytes is too long",
                            len);
    char buf[FEDCI_AUTH_MAX + 1];
    memcpy(buf, value, len);
    buf[len] = '\0';
    if (strlen(buf) != len)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization header contains a NUL byte");
    const size_t slen = sizeof FEDCI_AUTH_SCHEME - 1;
    if (len <= slen || strncasecmp(buf, FEDCI_AUTH_SCHEME, slen) != 0 || buf[slen] != ' ')
        return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization scheme is not " FEDCI_AUTH_SCHEME);
    static const char *const names[6] = {"key", "ts", "nonce", "body", "sig", "mac"};
    int seen[6] = {0};
    const char *p = buf + slen;
    for (;;) {
        while (*p == ' ') p++;
        const char *name = p;
        while (*p >= 'a' && *p <= 'z') p++;
        size_t nlen = (size_t)(p - name);
        if (*p != '=')
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "Authorization: expected name=value at column %zu",
                                (size_t)(name - buf));
        p++;
        const char *val = p;
        while (*p && *p != ',' && *p != ' ') p++;
        size_t vlen = (size_t)(p - val);
        int which = -1;
        for (int i = 0; i < 6; i++)
            if (nlen == strlen(names[i]) && strncmp(name, names[i], nlen) == 0) which = i;
        if (which < 0)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization: unknown parameter '%.*s'",
                                (int)(nlen < 32 ? nlen : 32), name);
        if (seen[which])
            return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization: parameter '%s' given twice",
                                names[which]);
        seen[which] = 1;
        int bad = 0;
        switch (which) {
        case 0: bad = hex_exact(val, vlen, out->pk, sizeof out->pk); break;
        case 1: {
            char num[24];
            if (vlen == 0 || vlen > 20) {
                bad = 1;
                break;
            }
            memcpy(num, val, vlen);
            num[vlen] = '\0';
            bad = fedci_parse_u64(num, &out->ts_ms);
            break;
        }
        case 2: bad = hex_exact(val, vlen, out->nonce, sizeof out->nonce); break;
        case 3: bad = hex_exact(val, vlen, out->body_hash, sizeof out->body_hash); break;
        case 4: bad = hex_exact(val, vlen, out->sig, sizeof out->sig); break;
        default: bad = hex_exact(val, vlen, out->mac, sizeof out->mac); break;
        }
        if (bad)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization: malformed '%s' value",
                                names[which]);
        while (*p == ' ') p++;
        if (*p == '\0') break;
        if (*p != ',')
            return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization: expected ',' at column %zu",
                                (size_t)(p - buf));
        p++;
    }
    if (seen[3] && seen[5])
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "Authorization: both 'body' and 'mac' (one of the two is expected)");
    if (!seen[3] && !seen[5])
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "Authorization: parameter 'body' (or 'mac') is missing");
    out->mode = seen[5] ? FEDCI_AUTH_MAC : FEDCI_AUTH_HASH;
    for (int i = 0; i < 5; i++)
        if (i != 3 && !seen[i])
            return fedc_err_set(err, FEDC_ERR_FORMAT, "Authorization: parameter '%s' is missing",
                                names[i]);
    return FEDC_OK;
}

/* ---- body hashes ---- */

void fedci_body_hash(const void *data, size_t n, uint8_t out[FEDCI_HASH_BYTES])
{
    crypto_generichash(out, FEDCI_HASH_BYTES, data, n, NULL, 0);
}

void fedci_body_hash_init(fedci_hash_state *st)
{
    crypto_generichash_init(st, NULL, 0, FEDCI_HASH_BYTES);
}

void fedci_body_hash_update(fedci_hash_state *st, const void *data, size_t n)
{
    crypto_generichash_update(st, data, n);
}

void fedci_body_hash_final(fedci_hash_state *st, uint8_t out[FEDCI_HASH_BYTES])
{
    crypto_generichash_final(st, out, FEDCI_HASH_BYTES);
}

/* ---- session keys and body MACs ---- */

void fedci_kx_keypair(uint8_t pk[FEDCI_KX_BYTES], uint8_t sk[FEDCI_KX_BYTES])
{
    crypto_kx_keypair(pk, sk);
}

fedc_status fedci_session_client(const fedc_key *key, const uint8_t server_pk[FEDCI_KX_BYTES],
                                 uint8_t session[FEDCI_SESSION_BYTES], fedc_err *err)
{
    uint8_t xsk[crypto_scalarmult_curve25519_BYTES], xpk[crypto_scalarmult_curve25519_BYTES];
    uint8_t rx[crypto_kx_SESSIONKEYBYTES];
    fedc_status st = FEDC_OK;
    if (crypto_sign_ed25519_sk_to_curve25519(xsk, key->sk) != 0 ||
        crypto_scalarmult_curve25519_base(xpk, xsk) != 0 ||
        crypto_kx_client_session_keys(rx, session, xpk, xsk, server_pk) != 0)
        st = fedc_err_set(err, FEDC_ERR_CRYPTO,
                          "the server's session key is not a usable X25519 public key");
    sodium_memzero(xsk, sizeof xsk);
    sodium_memzero(rx, sizeof rx);
    return st;
}

fedc_status fedci_session_server(const uint8_t server_pk[FEDCI_KX_BYTES],
                                 const uint8_t server_sk[FEDCI_KX_BYTES],
                                 const uint8_t client_pk[FEDC_KEY_PUBLIC_BYTES],
                                 uint8_t session[FEDCI_SESSION_BYTES], fedc_err *err)
{
    uint8_t xpk[crypto_scalarmult_curve25519_BYTES], tx[crypto_kx_SESSIONKEYBYTES];
    fedc_status st = FEDC_OK;
    if (crypto_sign_ed25519_pk_to_curve25519(xpk, client_pk) != 0 ||
        crypto_kx_server_session_keys(session, tx, server_pk, server_sk, xpk) != 0)
        st = fedc_err_set(err, FEDC_ERR_CRYPTO,
                          "no session key with this client key (not a usable Curve25519 point)");
    sodium_memzero(tx, sizeof tx);
    return st;
}

#define MAC_CONTEXT "fedc-v1 body mac"

/* OpenSSL's Poly1305, fetched once per process (NULL when libfedc is built without libcrypto
 * or the provider has none: the libsodium path). */
#if FEDC_HAVE_LIBCRYPTO
static pthread_once_t ossl_once = PTHREAD_ONCE_INIT;
static EVP_MAC *ossl_poly1305;
static void do_ossl_fetch(void) { ossl_poly1305 = EVP_MAC_fetch(NULL, "POLY1305", NULL); }
static EVP_MAC *ossl_mac(void)
{
    pthread_once(&ossl_once, do_ossl_fetch);
    return ossl_poly1305;
}
#endif

const char *fedci_mac_impl(void)
{
#if FEDC_HAVE_LIBCRYPTO
    if (ossl_mac()) return "openssl";
#endif
    return "libsodium";
}

void fedci_mac_init_with(fedci_mac_state *st, const uint8_t session[FEDCI_SESSION_BYTES],
                         const uint8_t nonce[FEDCI_NONCE_BYTES], int use_openssl)
{
    uint8_t in[sizeof MAC_CONTEXT - 1 + FEDCI_NONCE_BYTES];
    uint8_t otk[crypto_onetimeauth_KEYBYTES];
    memcpy(in, MAC_CONTEXT, sizeof MAC_CONTEXT - 1);
    memcpy(in + sizeof MAC_CONTEXT - 1, nonce, FEDCI_NONCE_BYTES);
    crypto_generichash(otk, sizeof otk, in, sizeof in, session, FEDCI_SESSION_BYTES);
    st->ossl = NULL;
    st->ossl_failed = 0;
    st->ncarry = 0;
#if FEDC_HAVE_LIBCRYPTO
    EVP_MAC *mac = use_openssl ? ossl_mac() : NULL;
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    if (ctx && EVP_MAC_init(ctx, otk, sizeof otk, NULL) == 1)
        st->ossl = ctx;
    else
        EVP_MAC_CTX_free(ctx); /* NULL-safe; fall back to libsodium */
#else
    (void)use_openssl;
#endif
    if (!st->ossl) crypto_onetimeauth_init(&st->sodium, otk);
    sodium_memzero(otk, sizeof otk);
}

void fedci_mac_init(fedci_mac_state *st, const uint8_t session[FEDCI_SESSION_BYTES],
                    const uint8_t nonce[FEDCI_NONCE_BYTES])
{
    fedci_mac_init_with(st, session, nonce, 1);
}

void fedci_mac_update(fedci_mac_state *st, const void *data, size_t n)
{
#if FEDC_HAVE_LIBCRYPTO
    if (st->ossl) { /* the same tag for any split of the message: Poly1305 streams */
        const size_t feed = sizeof st->carry;
        const uint8_t *p = data;
        if (st->ncarry) {
            const size_t t = feed - st->ncarry < n ? feed - st->ncarry : n;
            memcpy(st->carry + st->ncarry, p, t);
            st->ncarry += t;
            p += t;
            n -= t;
            if (st->ncarry < feed) return;
            if (EVP_MAC_update(st->ossl, st->carry, feed) != 1) st->ossl_failed = 1;
            st->ncarry = 0;
        }
        const size_t full = n / feed * feed;
        if (full && EVP_MAC_update(st->ossl, p, full) != 1) st->ossl_failed = 1;
        if (n > full) memcpy(st->carry, p + full, n - full);
        st->ncarry = n - full;
        return;
    }
#endif
    crypto_onetimeauth_update(&st->sodium, data, n);
}

void fedci_mac_final(fedci_mac_state *st, uint8_t out[FEDCI_MAC_BYTES])
{
#if FEDC_HAVE_LIBCRYPTO
    if (st->ossl) {
        size_t len = 0;
        if (st->ncarry && EVP_MAC_update(st->ossl, st->carry, st->ncarry) != 1)
            st->ossl_failed = 1;
        if (EVP_MAC_final(st->ossl, out, &len, FEDCI_MAC_BYTES) != 1 || len != FEDCI_MAC_BYTES ||
            st->ossl_failed)
            randombytes_buf(out, FEDCI_MAC_BYTES); /* cannot happen; never a valid tag */
        fedci_mac_free(st);
        return;
    }
#endif
    crypto_onetimeauth_final(&st->sodium, out);
    sodium_memzero(&st->sodium, sizeof st->sodium);
}

void fedci_mac_free(fedci_mac_state *st)
{
#if FEDC_HAVE_LIBCRYPTO
    EVP_MAC_CTX_free(st->ossl); /* clears the key (OPENSSL_clear_free) */
#endif
    st->ossl = NULL;
    st->ossl_failed = 0;
    sodium_memzero(&st->sodium, sizeof st->sodium);
    sodium_memzero(st->carry, sizeof st->carry);
    st->ncarry = 0;
}
