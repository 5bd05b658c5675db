/*
 * Request signing (docs/PROTOCOL.md, "Signing"): the Authorization header
 *
 *   Authorization: FEDC-Ed25519 key=<64 hex>, ts=<unix ms>, nonce=<32 hex>, body=<64 hex>,
 *                  sig=<128 hex>
 *
 * where body is BLAKE2b-256 of the request body and sig the Ed25519 signature of
 *
 *   "fedc-v1\n" METHOD "\n" PATH "\n" ts "\n" nonce "\n" body
 *
 * (PATH without query string; ts in decimal; nonce and body in lowercase hex as in the header),
 * or, in session mode (protocol revision 2), mac=<32 hex> instead of body=: a Poly1305 tag of
 * the body under a one-time key derived from the client's session key (X25519 between the
 * client's key, converted to Curve25519, and the server's per-run key from RunInfo) and the
 * nonce, and a signature over
 *
 *   "fedc-v1-mac\n" METHOD "\n" PATH "\n" ts "\n" nonce "\n" mac
 *
 * Internal to libfedc; built in the client-only configuration too.
 */
#ifndef FEDC_NET_SIGN_H
#define FEDC_NET_SIGN_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "fedc/net.h"
#include "fedc/status.h"

#define FEDCI_AUTH_SCHEME "FEDC-Ed25519"
#define FEDCI_NONCE_BYTES 16
#define FEDCI_HASH_BYTES 32
#define FEDCI_SIG_BYTES 64
#define FEDCI_MAC_BYTES 16     /* Poly1305 tag */
#define FEDCI_SESSION_BYTES 32 /* a client's session key (client -> server direction) */
#define FEDCI_KX_BYTES 32      /* X25519 keys */
/* Longest header value accepted (the real one is about 330 bytes). */
#define FEDCI_AUTH_MAX 512

/* How the body is bound to the signature. */
typedef enum fedci_auth_mode {
    FEDCI_AUTH_HASH = 0, /* body=: BLAKE2b-256 of the body */
    FEDCI_AUTH_MAC = 1   /* mac=: Poly1305 under a one-time key from (session key, nonce) */
} fedci_auth_mode;

typedef struct fedci_auth {
    uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
    uint64_t ts_ms;
    uint8_t nonce[FEDCI_NONCE_BYTES];
    fedci_auth_mode mode;
    uint8_t body_hash[FEDCI_HASH_BYTES]; /* FEDCI_AUTH_HASH */
    uint8_t mac[FEDCI_MAC_BYTES];        /* FEDCI_AUTH_MAC */
    uint8_t sig[FEDCI_SIG_BYTES];
} fedci_auth;

/* Parses a header value. Strict: the scheme, then exactly the five parameters (key, ts, nonce,
 * one of body or mac, sig), each once, in any order, separated by commas and optional spaces,
 * hex of the exact length. Errors: FEDC_ERR_FORMAT with what was wrong (for the server's log,
 * never for the wire). */
fedc_status fedci_auth_parse(const char *value, size_t len, fedci_auth *out, fedc_err *err);
/* Formats a header value into out (at least FEDCI_AUTH_MAX bytes). */
void fedci_auth_format(const fedci_auth *a, char *out, size_t size);

/* Signs a request in hash mode: fills a with the key, a fresh random nonce, ts_ms and the
 * signature. */
void fedci_auth_sign(const fedc_key *key, const char *method, const char *path,
                     const uint8_t body_hash[FEDCI_HASH_BYTES], uint64_t ts_ms, fedci_auth *a);
/* Session mode, in two steps: _begin fills the key, ts_ms and a fresh nonce (the MAC's one-time
 * key depends on it); the caller computes a->mac (fedci_mac_*) and _finish signs. */
void fedci_auth_begin(const fedc_key *key, uint64_t ts_ms, fedci_auth *a);
void fedci_auth_finish_mac(const fedc_key *key, const char *method, const char *path,
                           fedci_auth *a);
/* Checks a's signature for (method, path) in hash mode (a->mode and a->mac are not read, so a
 * fedci_auth filled field by field for a hash-mode signature needs only pk, ts_ms, nonce,
 * body_hash and sig). 0 when valid, -1 otherwise. */
int fedci_auth_verify(const fedci_auth *a, const char *method, const char *path);
/* The same in a's mode (as parsed from a header): what the server checks. */
int fedci_auth_verify_any(const fedci_auth *a, const char *method, const char *path);

/* ---- session keys and body MACs (protocol revision 2) ---- */
/* A fresh X25519 key pair for a server run (crypto_kx). */
void fedci_kx_keypair(uint8_t pk[FEDCI_KX_BYTES], uint8_t sk[FEDCI_KX_BYTES]);
/* The client's session key with the server whose kx public key is server_pk: crypto_kx client
 * keys of (the client's Ed25519 key converted to X25519, server_pk); the client->server one.
 * Errors: FEDC_ERR_CRYPTO (server_pk is not a usable X25519 key). */
fedc_status fedci_session_client(const fedc_key *key, const uint8_t server_pk[FEDCI_KX_BYTES],
                                 uint8_t session[FEDCI_SESSION_BYTES], fedc_err *err);
/* The same key on the server's side, from the client's Ed25519 public key. Errors:
 * FEDC_ERR_CRYPTO (the public key does not convert, or a low-order shared point). */
fedc_status fedci_session_server(const uint8_t server_pk[FEDCI_KX_BYTES],
                                 const uint8_t server_sk[FEDCI_KX_BYTES],
                                 const uint8_t client_pk[FEDC_KEY_PUBLIC_BYTES],
                                 uint8_t session[FEDCI_SESSION_BYTES], fedc_err *err);
/* Poly1305 of a body, keyed once per request: key = BLAKE2b-256(key = session,
 * "fedc-v1 body mac" || nonce). Streamed; one-shot = streamed. Computed with OpenSSL's
 * libcrypto (EVP_MAC "POLY1305", about 3x faster: AVX-512/AVX2 code) when libfedc is built with
 * it (FEDC_WITH_OPENSSL), else, or when its context cannot be allocated, with libsodium's
 * crypto_onetimeauth: the same tags either way. A state is zero-initialisable; _final releases
 * it, and a state abandoned after _init (never finalised) must be released with _free. */
typedef struct fedci_mac_state {
    void *ossl; /* EVP_MAC_CTX *, NULL on the libsodium path */
    int ossl_failed; /* an EVP call failed: _final gives a tag that matches nothing */
    crypto_onetimeauth_state sodium;
    /* OpenSSL path: input is passed on in multiples of 256 bytes (its vector Poly1305 runs a
     * third slower on the odd-sized pieces a network read delivers); the rest waits here */
    uint8_t carry[256];
    size_t ncarry;
} fedci_mac_state;
void fedci_mac_init(fedci_mac_state *st, const uint8_t session[FEDCI_SESSION_BYTES],
                    const uint8_t nonce[FEDCI_NONCE_BYTES]);
void fedci_mac_update(fedci_mac_state *st, const void *data, size_t n);
void fedci_mac_final(fedci_mac_state *st, uint8_t out[FEDCI_MAC_BYTES]);
/* Releases st (no-op on a zeroed or finalised state); st may be reused with _init after it. */
void fedci_mac_free(fedci_mac_state *st);
/* For tests and the benchmark: _init forced onto one implementation (use_openssl = 0: libsodium;
 * 1: libcrypto when built in, else libsodium), and the name of the implementation _init picks
 * ("openssl" or "libsodium"). */
void fedci_mac_init_with(fedci_mac_state *st, const uint8_t session[FEDCI_SESSION_BYTES],
                         const uint8_t nonce[FEDCI_NONCE_BYTES], int use_openssl);
const char *fedci_mac_impl(void);

/* BLAKE2b-256 of a body, in one call or streamed. */
void fedci_body_hash(const void *data, size_t n, uint8_t out[FEDCI_HASH_BYTES]);
typedef crypto_generichash_state fedci_hash_state;
void fedci_body_hash_init(fedci_hash_state *st);
void fedci_body_hash_update(fedci_hash_state *st, const void *data, size_t n);
void fedci_body_hash_final(fedci_hash_state *st, uint8_t out[FEDCI_HASH_BYTES]);

/* sodium_init once; 0 on success. */
int fedci_sodium_init(void);

#endif
