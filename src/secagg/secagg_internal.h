/*
 * Internals shared by the SecAgg+ files: message framing, Shamir sharing over GF(2^61 - 1),
 * key derivation and mask expansion (libsodium), the neighbour graph. Not installed.
 */
#ifndef FEDC_SECAGG_INTERNAL_H
#define FEDC_SECAGG_INTERNAL_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/secagg.h"

/* Message header: "FSA1", stage (1 byte), 3 zero bytes, round (u32), client id (u32: the sender
 * of a client message, the recipient of a server message). All integers little-endian. */
#define SA_MAGIC "FSA1"
#define SA_HDR 16
#define SA_KEY 32 /* X25519 keys, self-mask seeds, derived keys */

/* A 32-byte secret as field elements: 4 elements of 7 bytes and one of 4 (56 and 32 bits). */
#define SA_ELEMS 5
#define SA_SHARE_BYTES (SA_ELEMS * 8)
/* Encrypted share: nonce (24) || AEAD(from u32, to u32, b share, s share) || tag (16). */
#define SA_PLAIN (8 + 2 * SA_SHARE_BYTES)
#define SA_CT (crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + SA_PLAIN + \
               crypto_aead_xchacha20poly1305_ietf_ABYTES)
/* Unmasking entry: about u32, kind u8, 3 zero bytes, share. */
#define SA_UNMASK_ENTRY (8 + SA_SHARE_BYTES)
#define SA_KIND_B 1 /* self-mask seed share: the owner survived */
#define SA_KIND_S 2 /* mask-key share: the owner dropped */

static inline void sa_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline uint32_t sa_get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void sa_put64(unsigned char *p, uint64_t v)
{
    sa_put32(p, (uint32_t)v);
    sa_put32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t sa_get64(const unsigned char *p)
{
    return (uint64_t)sa_get32(p) | (uint64_t)sa_get32(p + 4) << 32;
}

/* The round's permutation of 0..n-1 (perm) and its inverse, from p->seed. */
void fedci_sa_perm(const fedc_secagg_params *p, uint32_t *perm, uint32_t *inv);
/* fedc_secagg_neighbors with the permutation precomputed. */
void fedci_sa_neighbors_from(const fedc_secagg_params *p, const uint32_t *perm,
                             const uint32_t *inv, uint32_t u, uint32_t *out);
/* Initialises libsodium once (thread-safe); -1 when it is unusable. */
int fedci_sa_sodium(void);

/* Writes a header. */
void fedci_sa_header(unsigned char *p, int stage, uint32_t round, uint32_t id);
/* Checks a header against (stage, round, id). FEDC_ERR_FORMAT (short, bad magic, wrong round
 * or id) or FEDC_ERR_STATE (another stage), with `who` in the message. */
fedc_status fedci_sa_check_header(const unsigned char *msg, size_t len, int stage,
                                  uint32_t round, uint32_t id, const char *who, fedc_err *err);

/* ---- Shamir over GF(p), p = 2^61 - 1 ---- */
#define SA_P ((UINT64_C(1) << 61) - 1)

/* Splits secret (32 bytes) into shares for holders xs[0..m-1] (distinct, nonzero, < p), t of
 * which reconstruct it: out[i*SA_ELEMS + j]. Coefficients from the CSPRNG. */
void fedci_sa_split(const unsigned char secret[SA_KEY], uint32_t t, const uint64_t *xs, size_t m,
                    uint64_t *out);
/* Reconstructs from exactly t shares (xs distinct nonzero, ys[i*SA_ELEMS + j]). -1 when the
 * result is not a valid encoding (inconsistent shares), else 0. */
int fedci_sa_combine(uint32_t t, const uint64_t *xs, const uint64_t *ys,
                     unsigned char secret[SA_KEY]);
void fedci_sa_share_put(unsigned char *p, const uint64_t *share);
/* -1 when an element is not < p. */
int fedci_sa_share_get(const unsigned char *p, uint64_t *share);

/* ---- keys and masks ---- */

/* Key of the pair (u, v) for `purpose` ("enc" or "mask"): BLAKE2b over a label, the round, the
 * ordered pair and the X25519 shared secret of my_sk and their_pk. -1 when the peer's key is
 * degenerate (libsodium refuses it). */
int fedci_sa_pair_key(const char *purpose, uint32_t round, uint32_t u, uint32_t v,
                      const unsigned char my_sk[SA_KEY], const unsigned char their_pk[SA_KEY],
                      unsigned char key[SA_KEY]);

/* The commitment to a self-mask seed sent with the keys (keyed BLAKE2b): lets the server
 * verify the seed it reconstructs. */
void fedci_sa_commit_b(const unsigned char b[SA_KEY], unsigned char out[SA_KEY]);

/* y[0..len-1] += sign * PRG(key, nonce) (mod 2^32), the PRG being ChaCha20's keystream read
 * as little-endian uint32 words. sign is +1 or -1. */
void fedci_sa_prg_add(const unsigned char key[SA_KEY], uint64_t nonce, int sign, uint32_t *y,
                      size_t len);
#define SA_NONCE_PAIR 0
#define SA_NONCE_SELF 1

#endif
