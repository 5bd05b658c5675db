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
 * (PATH without query string; ts in decimal; nonce and body in lowercase hex as in the header).
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
/* Longest header value accepted (the real one is about 330 bytes). */
#define FEDCI_AUTH_MAX 512

typedef struct fedci_auth {
    uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
    uint64_t ts_ms;
    uint8_t nonce[FEDCI_NONCE_BYTES];
    uint8_t body_hash[FEDCI_HASH_BYTES];
    uint8_t sig[FEDCI_SIG_BYTES];
} fedci_auth;

/* Parses a header value. Strict: the scheme, then exactly the five parameters, each once, in
 * any order, separated by commas and optional spaces, hex of the exact length. Errors:
 * FEDC_ERR_FORMAT with what was wrong (for the server's log, never for the wire). */
fedc_status fedci_auth_parse(const char *value, size_t len, fedci_auth *out, fedc_err *err);
/* Formats a header value into out (at least FEDCI_AUTH_MAX bytes). */
void fedci_auth_format(const fedci_auth *a, char *out, size_t size);

/* Signs a request: fills a with the key, a fresh random nonce, ts_ms and the signature. */
void fedci_auth_sign(const fedc_key *key, const char *method, const char *path,
                     const uint8_t body_hash[FEDCI_HASH_BYTES], uint64_t ts_ms, fedci_auth *a);
/* Checks a's signature for (method, path). 0 when valid, -1 otherwise. */
int fedci_auth_verify(const fedci_auth *a, const char *method, const char *path);

/* BLAKE2b-256 of a body, in one call or streamed. */
void fedci_body_hash(const void *data, size_t n, uint8_t out[FEDCI_HASH_BYTES]);
typedef crypto_generichash_state fedci_hash_state;
void fedci_body_hash_init(fedci_hash_state *st);
void fedci_body_hash_update(fedci_hash_state *st, const void *data, size_t n);
void fedci_body_hash_final(fedci_hash_state *st, uint8_t out[FEDCI_HASH_BYTES]);

/* sodium_init once; 0 on success. */
int fedci_sodium_init(void);

#endif
