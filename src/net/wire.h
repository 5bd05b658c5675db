/*
 * Wire messages of the fedc protocol (proto/fedc.proto, docs/PROTOCOL.md): protobuf-c glue
 * with fedc's allocator, length-delimited framing, and the two streams that carry flat float
 * vectors (model downloads and result uploads) as a header message plus bounded Chunks.
 *
 * Everything here reads untrusted bytes: every length is checked against a limit before it is
 * used, every error is FEDC_ERR_FORMAT (or _RANGE for a limit) with a message that names the
 * byte offset in the stream. Internal to libfedc (fedci_ names); shared by client and server,
 * and built in the client-only configuration.
 */
#ifndef FEDC_NET_WIRE_H
#define FEDC_NET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "fedc_pb/fedc.pb-c.h"
#include "fedc/config.h"
#include "fedc/net.h"
#include "fedc/status.h"
#include "fedc/vec.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fedc's wire format is little-endian float32; add byte swapping for this host"
#endif

#define FEDCI_CT_MESSAGE "application/x-protobuf"
#define FEDCI_CT_STREAM "application/x-protobuf; delimited=true"
/* The protocol's revision within v1 (RunInfo.protocol_revision): 2 adds session MACs and
 * encoded update and model bodies (docs/PROTOCOL.md). */
#define FEDCI_PROTOCOL_REVISION 2

/* protobuf-c's allocator on fedc_malloc/fedc_free (counted, fault-injectable). */
extern ProtobufCAllocator fedci_pb_allocator;

/* ---- growable byte buffer ---- */
typedef struct fedci_buf {
    uint8_t *data;
    size_t len, cap;
} fedci_buf;

void fedci_buf_fini(fedci_buf *b); /* frees; b may be zeroed */
/* Room for `extra` more bytes. FEDC_ERR_NOMEM. */
fedc_status fedci_buf_reserve(fedci_buf *b, size_t extra, fedc_err *err);
fedc_status fedci_buf_append(fedci_buf *b, const void *data, size_t n, fedc_err *err);

/* ---- messages ---- */
/* Appends msg's encoding to b (no framing). */
fedc_status fedci_pack(const ProtobufCMessage *msg, fedci_buf *b, fedc_err *err);
/* Decodes one message of type `desc`; `what` names it in messages ("check-in request").
 * *out is freed with fedci_unpacked_free. Errors: FEDC_ERR_FORMAT, FEDC_ERR_NOMEM. */
fedc_status fedci_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                         const char *what, ProtobufCMessage **out, fedc_err *err);
void fedci_unpacked_free(ProtobufCMessage *msg); /* NULL allowed */

/* ---- length-delimited framing ---- */
size_t fedci_varint_size(uint64_t v);
size_t fedci_varint_put(uint8_t *out, uint64_t v); /* out has room for 10 bytes */
/* Appends varint(len(msg)) + msg to b. */
fedc_status fedci_frame_append(const ProtobufCMessage *msg, fedci_buf *b, fedc_err *err);

/* Called with each complete frame's bytes (valid during the call only). */
typedef fedc_status (*fedci_frame_fn)(void *user, const uint8_t *msg, size_t len,
                                      uint64_t stream_offset, fedc_err *err);

/* Splits bytes arriving in arbitrary pieces into frames of at most max_frame bytes. Frames that
 * arrive whole in one piece are passed without a copy; others are assembled in a buffer of at
 * most max_frame bytes. */
typedef struct fedci_framer {
    size_t max_frame;
    uint64_t consumed;    /* stream bytes consumed so far */
    uint64_t frame_start; /* stream offset of the current frame's length prefix */
    uint64_t want;        /* bytes of the current frame's body (when in_body) */
    int in_body;
    int varint_bytes; /* bytes of the length prefix read so far */
    uint8_t *buf;     /* partial body */
    size_t have;
} fedci_framer;

void fedci_framer_init(fedci_framer *f, size_t max_frame);
void fedci_framer_fini(fedci_framer *f);
/* Feeds n bytes; calls fn for every frame completed. Stops at the first error (fn's or a
 * framing error: a length prefix longer than 5 bytes or above max_frame: FEDC_ERR_FORMAT). */
fedc_status fedci_framer_feed(fedci_framer *f, const uint8_t *data, size_t n, fedci_frame_fn fn,
                              void *user, fedc_err *err);
/* 1 when the stream ended on a frame boundary. */
int fedci_framer_at_boundary(const fedci_framer *f);

/* ---- vector streams: header message + Chunks of a float32 vector ---- */
typedef enum fedci_vs_kind {
    FEDCI_VS_MODEL = 0, /* ModelHeader, then num_params floats */
    FEDCI_VS_RESULT = 1 /* ResultHeader, then num_params floats (none for STAGE_EVALUATE) */
} fedci_vs_kind;

/* Called once the header is decoded: checks it, and gives where the vector goes (*dest, of
 * *num_floats floats; the number the header announces must be checked by the callback). A
 * non-OK return stops the stream with that status. The callback may set the stream's unit to
 * 1 (fedci_vstream.unit) to receive a byte string instead. */
typedef fedc_status (*fedci_header_fn)(void *user, const ProtobufCMessage *header, float **dest,
                                       uint64_t *num_floats, fedc_err *err);

typedef struct fedci_vstream {
    fedci_framer framer;
    fedci_vs_kind kind;
    size_t max_header;
    uint32_t max_chunk;
    ProtobufCMessage *header; /* decoded header, owned */
    uint8_t *dest;
    uint64_t dest_bytes, filled;
    fedci_header_fn on_header;
    void *user;
    /* set scan_finite after init to have each chunk checked for NaN/Inf as it is copied (while
     * it is in cache): nonfinite_at is then the index of the first non-finite float, or
     * UINT64_MAX (the stream is not refused for it: the caller decides). A caller that checks
     * the floats itself may turn it off while the stream runs, raise `scanned` (bytes of dest
     * known to be finite, from 0) over what it checked, and turn it on again with
     * fedci_vstream_scan_resume, which scans what came since. */
    int scan_finite;
    uint64_t nonfinite_at, scanned;
    /* 4: a float32 vector (chunks carry multiples of 4 bytes); the header callback may set 1:
     * a byte string (an encoded message), *num_floats then counts bytes */
    uint32_t unit;
    uint64_t direct_left; /* bytes of the current Chunk still to copy straight to dest */
} fedci_vstream;

/* max_header: largest header frame; max_chunk: largest Chunk.data. */
void fedci_vstream_init(fedci_vstream *vs, fedci_vs_kind kind, size_t max_header,
                        uint32_t max_chunk, fedci_header_fn on_header, void *user);
void fedci_vstream_fini(fedci_vstream *vs);
fedc_status fedci_vstream_feed(fedci_vstream *vs, const uint8_t *data, size_t n, fedc_err *err);
/* scan_finite on again: scans the floats received since `scanned` (see fedci_vstream). */
void fedci_vstream_scan_resume(fedci_vstream *vs);
/* At the end of the body: the header came, the vector is complete, no partial frame. */
fedc_status fedci_vstream_finish(fedci_vstream *vs, fedc_err *err);

/* Decodes a Chunk message in place, without copying its data (the one message that carries
 * bulk bytes): *data points into msg. Accepts what protobuf decoders accept (fields in any
 * order, the last of a repeated field wins, unknown fields skipped), nothing protobuf-c
 * refuses, with the same values (net_message_fuzz checks both). 0, or -1 when malformed. */
int fedci_chunk_parse(const uint8_t *msg, size_t len, uint64_t *offset, const uint8_t **data,
                      size_t *dlen);

/* Appends header + the Chunks of x[0..n-1] (chunk_bytes per chunk, a multiple of 4). */
fedc_status fedci_vstream_encode(const ProtobufCMessage *header, const float *x, size_t n,
                                 uint32_t chunk_bytes, fedci_buf *b, fedc_err *err);
/* The same for a byte string (an encoded message: the stream's unit is 1), total bytes. */
fedc_status fedci_vstream_encode_bytes(const ProtobufCMessage *header, const void *x, size_t total,
                                       uint32_t chunk_bytes, fedci_buf *b, fedc_err *err);

/* ---- settings: the run's training keys sent to clients ---- */
/* 1 when the server sends key "section.name" to clients (train.*, model.*, dp.*, attack.*,
 * run.seed, clients.count). */
int fedci_setting_is_sent(const char *section, const char *name);
/* The value of key i of the registry as text (as it would be written in a file). */
void fedci_config_value_text(const fedc_config *cfg, const fedc_config_key *k, char *buf,
                             size_t size);

/* ---- SecAgg+ over HTTP (client_secagg.c, server_secagg.c; docs/SECAGG.md "Deployment") ---- */
/* What a client signs for its stage-1 keys (as a request signature with METHOD "SECAGG" and
 * PATH "/v1/secagg/keys"): BLAKE2b-256("fedc-secagg-keys-v1" || seed || round || id || c_pk ||
 * s_pk), round and id little-endian, keys 32 bytes each. */
void fedci_sa_key_digest(const uint8_t seed[32], uint32_t round, uint32_t id, const uint8_t *c_pk,
                         const uint8_t *s_pk, uint8_t out[32]);

/* Parses the body of POST /v1/tasks/{task_id}/secagg (client_secagg.c): a length-delimited
 * SecAggMessage (at most max_message bytes), then, for STAGE_SECAGG_MASKED only, Chunks (each
 * a positive multiple of 4 bytes, at most max_chunk, in order from offset 0) that fill the
 * ring vector: *vec (vec_bytes = the 16-byte header + 4 * len, fedc_free) gets the whole
 * protocol message. *msg: fedci_unpacked_free. Errors: FEDC_ERR_FORMAT naming the byte
 * offset, FEDC_ERR_NOMEM; on error nothing is returned. */
fedc_status fedci_secagg_parse_post(const uint8_t *body, size_t len, size_t max_message,
                                    uint32_t max_chunk, size_t vec_bytes,
                                    Fedc__V1__SecAggMessage **msg, uint8_t **vec, fedc_err *err);

/* How client_secagg.c talks to the server (client.c implements it: signed requests, retries
 * of network failures and 5xx as for results). post: FEDC_OK on 200. get: FEDC_OK on 200, the
 * answer in *resp (*len bytes, valid until the next call). Refusals: FEDC_ERR_STATE (409),
 * FEDC_ERR_INVALID (other 4xx), and the transport's errors. sleep: -1 when stopped. */
typedef struct fedci_sa_io {
    void *ctx;
    fedc_status (*post)(void *ctx, const char *path, const uint8_t *body, size_t len,
                        fedc_err *err);
    fedc_status (*get)(void *ctx, const char *path, const uint8_t **resp, size_t *len,
                       fedc_err *err);
    int (*sleep)(void *ctx, double seconds);
} fedci_sa_io;

/* Takes part in the SecAgg+ round of `task` (task->secagg set) with the trained update
 * (num_params floats, already clipped with central DP) of num_examples examples: quantizes it,
 * then advertises signed keys, checks the neighbours' signatures, shares, sends the masked
 * input (as Chunks of chunk_bytes), unmasks. FEDC_OK when the round ended for this client
 * (*completed = 1: it sent all four messages; 0: abandoned because the server or a neighbour misbehaved or the round moved
 * on: logged). Errors (fatal): FEDC_ERR_NOMEM, FEDC_ERR_ABORTED (stopped), FEDC_ERR_TIMEOUT,
 * FEDC_ERR_CRYPTO (libsodium unusable). TEST ONLY: with FEDC_TEST_SECAGG_HANG = share, masked
 * or unmask in the environment the client stops before sending that stage's message and
 * waits until stopped (tests kill it there: a client dying mid-protocol). */
fedc_status fedci_client_secagg_task(const fedci_sa_io *io, const fedc_key *key,
                                     const Fedc__V1__Task *task, const float *update,
                                     size_t num_params, uint64_t num_examples, int *completed,
                                     fedc_err *err);

/* ---- misc ---- */
/* Parses a decimal uint64 that fills the whole string. Returns 0 or -1. */
int fedci_parse_u64(const char *s, uint64_t *out);
/* Wall-clock milliseconds since the epoch. */
uint64_t fedci_now_ms(void);
/* Monotonic seconds. */
double fedci_mono(void);

#endif
