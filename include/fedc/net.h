/*
 * Identities for real federations (docs/PROTOCOL.md): every client holds an Ed25519 key pair
 * and signs each request with it; the server admits the public keys on its allow-list.
 *
 * Secret keys live in libsodium's guarded memory (sodium_malloc: locked, guard pages) and are
 * wiped when destroyed. Key files are text:
 *     # fedc Ed25519 secret key: keep it private (mode 0600)
 *     fedc-ed25519-secret-v1 <64 hex digits: the 32-byte seed>
 *     public <64 hex digits>
 * A public key is written as 64 lowercase hex digits.
 *
 * Thread safety: a fedc_key is read-only after it is made; any thread may sign with it.
 */
#ifndef FEDC_NET_H
#define FEDC_NET_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_KEY_PUBLIC_BYTES 32
#define FEDC_KEY_PUBLIC_HEX 65 /* 64 hex digits + NUL */

typedef struct fedc_key fedc_key;

/* A new key pair from libsodium's CSPRNG. Errors: FEDC_ERR_NOMEM, FEDC_ERR_CRYPTO (libsodium
 * could not initialise). */
fedc_status fedc_key_generate(fedc_key **out, fedc_err *err);
/* Writes the secret key file, created with mode 0600; refuses to overwrite an existing file.
 * Errors: FEDC_ERR_IO (naming the path: exists, cannot create, short write). */
fedc_status fedc_key_write(const fedc_key *key, const char *path, fedc_err *err);
/* Reads a secret key file. Refuses a file that group or others may read (like ssh).
 * Errors: FEDC_ERR_IO, FEDC_ERR_FORMAT (naming the path and line), FEDC_ERR_AUTH (too open),
 * FEDC_ERR_CRYPTO (the "public" line does not match the secret), FEDC_ERR_NOMEM. */
fedc_status fedc_key_read(const char *path, fedc_key **out, fedc_err *err);
void fedc_key_destroy(fedc_key *key); /* wipes; NULL allowed */

void fedc_key_public(const fedc_key *key, uint8_t pk[FEDC_KEY_PUBLIC_BYTES]);
void fedc_key_public_hex(const fedc_key *key, char out[FEDC_KEY_PUBLIC_HEX]);
/* Parses 64 hex digits (surrounding white space allowed) into a public key that libsodium
 * accepts as an Ed25519 point. Errors: FEDC_ERR_FORMAT (naming the text). */
fedc_status fedc_key_public_parse(const char *text, uint8_t pk[FEDC_KEY_PUBLIC_BYTES],
                                  fedc_err *err);
void fedc_key_public_to_hex(const uint8_t pk[FEDC_KEY_PUBLIC_BYTES], char out[FEDC_KEY_PUBLIC_HEX]);

#ifdef __cplusplus
}
#endif
#endif
