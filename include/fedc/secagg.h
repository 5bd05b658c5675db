/*
 * Secure aggregation: SecAgg+ (Bell et al. 2020) over the four stages of Bonawitz et al. 2017.
 * The server learns the sum of the clients' quantized vectors and nothing about any single one,
 * and survives clients dropping out at any stage. docs/SECAGG.md has the protocol, the message
 * formats, the threat model and the deployment over HTTP (src/net/server_secagg.c,
 * client_secagg.c).
 *
 * The protocol is two message-passing state machines; a transport (the in-process simulation,
 * or HTTP) only carries byte buffers between them and decides when a stage closes (all
 * expected messages in, or its deadline passed):
 *
 *   stage                  client -> server                     server -> each client
 *   1 advertise keys       fedc_secagg_client_advertise         (closes stage 1) keys of the
 *                                                               client's neighbours
 *   2 share keys           fedc_secagg_client_share(keys)       (closes stage 2) the encrypted
 *                                                               shares addressed to the client
 *   3 masked input         fedc_secagg_client_masked(shares, x) (closes stage 3) the surviving
 *                                                               neighbours
 *   4 unmasking            fedc_secagg_client_unmask(survivors) (closes stage 4) the sum
 *
 * The server side: fedc_secagg_server_recv(msg) for each message as it arrives, then
 * fedc_secagg_server_close_stage() when the stage ends, then fedc_secagg_server_message(client)
 * for what each still-alive client gets next. After stage 4 closes, fedc_secagg_server_sum
 * gives the sum of the surviving clients' inputs mod 2^bits.
 *
 * Clients are numbered 0..n-1 within a round (the transport maps them to real identities and
 * must authenticate the sender; over HTTP: the request signing keys of the deployment, which
 * also sign each client's stage-1 keys).
 * Secrets (key pairs, self-mask seeds, received shares) live in sodium_malloc memory and are
 * wiped on destroy. Randomness for secrets comes from libsodium's CSPRNG; only the neighbour
 * graph is derived from the round's public seed.
 *
 * Thread safety: a handle is not synchronised; distinct handles are independent.
 */
#ifndef FEDC_SECAGG_H
#define FEDC_SECAGG_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/rng.h"
#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Stage numbers, as carried in every message header. */
typedef enum fedc_secagg_stage {
    FEDC_SECAGG_ADVERTISE = 1,
    FEDC_SECAGG_SHARE = 2,
    FEDC_SECAGG_MASKED = 3,
    FEDC_SECAGG_UNMASK = 4,
    FEDC_SECAGG_DONE = 5,
    FEDC_SECAGG_ABORTED = 6
} fedc_secagg_stage;

#define FEDC_SECAGG_MAX_CLIENTS 1000000u
#define FEDC_SECAGG_SEED_BYTES 32

/* A round's public parameters: every client and the server must hold the same values. */
typedef struct fedc_secagg_params {
    uint32_t n;          /* clients in the round (ids 0..n-1), 2..FEDC_SECAGG_MAX_CLIENTS */
    uint32_t k;          /* neighbours per client: even, <= n-1; or n-1 (complete graph =
                            original SecAgg). 0 = fedc_secagg_default_k(n) */
    uint32_t t;          /* Shamir threshold: 1..k shares reconstruct a secret.
                            0 = fedc_secagg_default_t(k) */
    uint32_t bits;       /* ring Z_{2^bits}, 1..32 */
    size_t len;          /* vector length (ring elements) */
    uint32_t round;      /* bound into every message and key derivation */
    unsigned char seed[FEDC_SECAGG_SEED_BYTES]; /* the round's public seed (neighbour graph) */
} fedc_secagg_params;

/* k = min(n-1, 2*ceil(log2 n)) rounded to even (SecAgg+'s logarithmic degree). */
uint32_t fedc_secagg_default_k(uint32_t n);
/* t = floor(k/2) + 1 (a majority of the neighbours), at least 1. */
uint32_t fedc_secagg_default_t(uint32_t k);

/* Fills in k and t when 0 and checks the parameters. Errors: FEDC_ERR_INVALID naming the
 * field. */
fedc_status fedc_secagg_params_check(fedc_secagg_params *p, fedc_err *err);

/* The neighbours of client u under p (random k-regular Harary graph, relabelled by a
 * permutation drawn from p->seed), sorted ascending, into out[0..k-1]. p must be checked.
 * Allocates O(n) temporary memory; out of memory is treated as a fatal misuse (assert). */
void fedc_secagg_neighbors(const fedc_secagg_params *p, uint32_t u, uint32_t *out);

/* ---------------------------------------------------------------- client */

typedef struct fedc_secagg_client fedc_secagg_client;

/* A client `id` (< p->n) for one round. Draws its two X25519 key pairs and its self-mask seed.
 * Errors: FEDC_ERR_INVALID (params or id), FEDC_ERR_CRYPTO (libsodium unusable),
 * FEDC_ERR_NOMEM. */
fedc_status fedc_secagg_client_create(const fedc_secagg_params *p, uint32_t id,
                                      fedc_secagg_client **out, fedc_err *err);
void fedc_secagg_client_destroy(fedc_secagg_client *c); /* NULL allowed; wipes secrets */

/* Every client call below produces one message in *msg (*msg_len bytes), owned by the caller
 * and freed with fedc_free. A call out of order is refused with FEDC_ERR_STATE. Bad input from
 * the server is refused with FEDC_ERR_FORMAT (malformed, wrong round, stage or recipient),
 * FEDC_ERR_CRYPTO (a share fails authentication) or FEDC_ERR_ABORTED (too few neighbours left
 * to be safe); after any error the client is aborted and answers nothing more. */

/* Stage 1: the client's two public keys. */
fedc_status fedc_secagg_client_advertise(fedc_secagg_client *c, unsigned char **msg,
                                         size_t *msg_len, fedc_err *err);
/* Stage 2: consumes the server's stage-1 message (the neighbours' public keys); produces the
 * Shamir shares of the self-mask seed and of the mask secret key, encrypted for each
 * neighbour. */
fedc_status fedc_secagg_client_share(fedc_secagg_client *c, const unsigned char *in,
                                     size_t in_len, unsigned char **msg, size_t *msg_len,
                                     fedc_err *err);
/* Stage 3: consumes the server's stage-2 message (shares addressed to this client) and the
 * input x (p->len ring elements, each < 2^bits); produces y = x + PRG(b) + sum +-PRG(s_uv). */
fedc_status fedc_secagg_client_masked(fedc_secagg_client *c, const unsigned char *in,
                                      size_t in_len, const uint32_t *x, unsigned char **msg,
                                      size_t *msg_len, fedc_err *err);
/* Stage 4: consumes the server's stage-3 message (which neighbours survived); produces the
 * self-mask-seed shares of survivors and the mask-key shares of dropped neighbours, never
 * both for one neighbour. Answers once. */
fedc_status fedc_secagg_client_unmask(fedc_secagg_client *c, const unsigned char *in,
                                      size_t in_len, unsigned char **msg, size_t *msg_len,
                                      fedc_err *err);

/* ---------------------------------------------------------------- server */

typedef struct fedc_secagg_server fedc_secagg_server;

/* Errors: FEDC_ERR_INVALID (params), FEDC_ERR_NOMEM. */
fedc_status fedc_secagg_server_create(const fedc_secagg_params *p, fedc_secagg_server **out,
                                      fedc_err *err);
void fedc_secagg_server_destroy(fedc_secagg_server *s); /* NULL allowed */

/* The stage the server is collecting (FEDC_SECAGG_ADVERTISE..UNMASK), or DONE / ABORTED. */
fedc_secagg_stage fedc_secagg_server_stage(const fedc_secagg_server *s);

/* Takes one client message of the current stage from client `from` (as authenticated by the
 * transport). Nothing is retained from msg. A refused message changes nothing and the round
 * goes on: FEDC_ERR_FORMAT (malformed, wrong round, header sender not `from`, a share
 * addressed to a non-neighbour), FEDC_ERR_STATE (wrong stage, a client not alive in this
 * stage, a duplicate submission), FEDC_ERR_RANGE (a masked element >= 2^bits),
 * FEDC_ERR_INVALID (an unmasking share of the wrong kind: the server never reveals both kinds
 * for the same client). */
fedc_status fedc_secagg_server_recv(fedc_secagg_server *s, uint32_t from,
                                    const unsigned char *msg, size_t len, fedc_err *err);

/* Ends the current stage with the clients heard so far (the transport calls it when everyone
 * answered or the stage's deadline passed). Closing stage 4 reconstructs the secrets and
 * computes the sum. When fewer than t clients remain, or (stage 4) fewer than t shares arrived
 * for a needed secret, the round is aborted: FEDC_ERR_ABORTED, stage ABORTED, no output is
 * ever produced. Other errors: FEDC_ERR_NOMEM, FEDC_ERR_CRYPTO (a reconstructed key is
 * inconsistent with the advertised one: FEDC_ERR_ABORTED too, the round aborts). */
fedc_status fedc_secagg_server_close_stage(fedc_secagg_server *s, fedc_err *err);

/* 1 when client `id` is alive for the stage being collected (it answered every stage so far). */
int fedc_secagg_server_alive(const fedc_secagg_server *s, uint32_t id);
/* Number of clients alive for the stage being collected (after DONE: whose inputs are in the
 * sum). */
uint32_t fedc_secagg_server_alive_count(const fedc_secagg_server *s);

/* The message client `id` gets after the last closed stage (stages 1..3), in *msg (*msg_len
 * bytes, caller frees with fedc_free). Errors: FEDC_ERR_STATE (no such message: the client is
 * not alive, or the server is not between stages 2..4 collecting), FEDC_ERR_NOMEM. */
fedc_status fedc_secagg_server_message(fedc_secagg_server *s, uint32_t id, unsigned char **msg,
                                       size_t *msg_len, fedc_err *err);

/* After DONE: the sum mod 2^bits of the surviving clients' inputs (p->len elements; owned by
 * the server, valid until destroy). NULL in any other stage. */
const uint32_t *fedc_secagg_server_sum(const fedc_secagg_server *s);

/* Bytes the server received from / sent to clients so far (for expansion measurements). */
uint64_t fedc_secagg_server_bytes_in(const fedc_secagg_server *s);
uint64_t fedc_secagg_server_bytes_out(const fedc_secagg_server *s);

/* ---------------------------------------------------------------- quantization */

/* How float updates map to Z_{2^bits} (Flower's scheme): q = floor((clip(x,+-c)+c) *
 * (levels-1)/(2c) + U), U uniform in [0,1) (stochastic rounding: E[q] is the unclipped
 * value's exact image), times the client's integer weight min(num_examples, max_weight). The
 * protocol's vector is the update's len ring elements followed by the weight itself, so the
 * server learns only the sum of the weights. */
typedef struct fedc_secagg_quant {
    double clip;         /* c > 0 */
    uint32_t levels;     /* >= 2 */
    uint32_t max_weight; /* >= 1 */
    uint32_t bits;
} fedc_secagg_quant;

/* Checks that n clients' sums cannot overflow: n * max_weight * (levels - 1) < 2^bits and
 * n * max_weight < 2^bits. levels = 0 picks the largest that fits (capped at 2^24).
 * Errors: FEDC_ERR_CONFIG naming the bound. */
fedc_status fedc_secagg_quant_check(fedc_secagg_quant *q, uint32_t n, fedc_err *err);

/* out[0..n-1] = weight * q(x[i]); out[n] = weight (weight = min(num_examples, max_weight),
 * num_examples >= 1). rng draws the rounding (stream (seed, round, client, QUANTIZE)). Non-finite
 * x -> FEDC_ERR_NONFINITE naming the index. */
fedc_status fedc_secagg_quantize(const fedc_secagg_quant *q, const float *x, size_t n,
                                 uint64_t num_examples, fedc_rng *rng, uint32_t *out,
                                 fedc_err *err);

/* Dequantizes a sum of quantized vectors (n + 1 elements, the last the weight sum) into the
 * weighted mean out[0..n-1]; *weight_sum (may be NULL) gets the weight sum. Errors:
 * FEDC_ERR_STATE (weight sum 0). */
fedc_status fedc_secagg_dequantize(const fedc_secagg_quant *q, const uint32_t *sum, size_t n,
                                   float *out, uint64_t *weight_sum, fedc_err *err);

/* ---------------------------------------------------------------- simulation */

/* Simulated dropouts: at each of stages 2, 3 and 4 (before the clients answer), a fraction of
 * the clients still alive vanish (floor(frac * alive), chosen from the stream
 * (seed, round, FEDC_RNG_ANY, FEDC_RNG_FAILURE)). */
typedef struct fedc_secagg_sim_opts {
    double dropout[3]; /* fraction dropping before stage 2, 3, 4 */
    uint64_t seed;
    /* NULL, or n entries: client u also vanishes before stage drop_before[u] (2, 3 or 4;
     * 0 = never), as a real client that dies there (tests compare against a deployment) */
    const unsigned char *drop_before;
} fedc_secagg_sim_opts;

typedef struct fedc_secagg_sim_stats {
    uint32_t survivors;        /* clients whose inputs are in the sum */
    double client_seconds;     /* mean wall time of a client that ran all four stages */
    double server_seconds;     /* server wall time (recv + close + messages) */
    uint64_t client_bytes_up;  /* mean bytes sent by a client that ran all four stages */
    double expansion;          /* client_bytes_up / (4 * len): against a plain float32 update */
} fedc_secagg_sim_stats;

/* Runs one round in-process: clients 0..n-1 with inputs xs[i] (p->len ring elements each),
 * simulated dropouts, and writes the sum of the survivors' inputs to sum (p->len elements);
 * survived (n entries, may be NULL) gets 1 for the clients whose input is in the sum. Errors:
 * FEDC_ERR_ABORTED (the round aborted: sum untouched), and the protocol's. */
fedc_status fedc_secagg_simulate(const fedc_secagg_params *p, const uint32_t *const *xs,
                                 const fedc_secagg_sim_opts *opts, uint32_t *sum,
                                 unsigned char *survived, fedc_secagg_sim_stats *stats,
                                 fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
