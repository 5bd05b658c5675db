/*
 * Fuzz target: every protobuf message of the wire protocol (proto/fedc.proto) decoded with
 * protobuf-c on fedc's allocator (src/net/wire.c), as the server (CheckinRequest, ResultHeader,
 * Chunk, SecAggMessage) and the client (CheckinResponse, RunInfo, ModelHeader, Error,
 * ResultAck, SecAggTask, KeySignature) read them.
 * The first byte picks the message type. Properties: no crash or leak; what decodes
 * re-encodes; the zero-copy Chunk decoder (fedci_chunk_parse) accepts nothing protobuf-c
 * refuses, and decodes the same values.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"

#ifndef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

static const ProtobufCMessageDescriptor *const fuzz_message_types[] = {
    &fedc__v1__checkin_request__descriptor, &fedc__v1__checkin_response__descriptor,
    &fedc__v1__run_info__descriptor,        &fedc__v1__model_header__descriptor,
    &fedc__v1__chunk__descriptor,           &fedc__v1__result_header__descriptor,
    &fedc__v1__result_ack__descriptor,      &fedc__v1__error__descriptor,
    /* SecAgg+ (issue 8): appended, so that the older seeds keep their types */
    &fedc__v1__sec_agg_message__descriptor, &fedc__v1__sec_agg_task__descriptor,
    &fedc__v1__key_signature__descriptor,
};

int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size);
int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const ProtobufCMessageDescriptor *d =
        fuzz_message_types[data[0] % (sizeof fuzz_message_types / sizeof fuzz_message_types[0])];
    ProtobufCMessage *m = NULL;
    fedc_status st = fedci_unpack(d, data + 1, size - 1, "fuzz", &m, NULL);
    if (d == &fedc__v1__chunk__descriptor) {
        /* the zero-copy Chunk decoder accepts nothing protobuf-c refuses (it may refuse more:
         * protobuf-c takes an overlong tag of field 0) and agrees on the values */
        uint64_t off;
        const uint8_t *p;
        size_t n;
        int rc = fedci_chunk_parse(data + 1, size - 1, &off, &p, &n);
        if (rc == 0 && st != FEDC_OK) abort();
        if (rc == 0) {
            const Fedc__V1__Chunk *c = (const Fedc__V1__Chunk *)m;
            if (c->offset != off || c->data.len != n || (n && memcmp(c->data.data, p, n) != 0))
                abort();
        }
    }
    if (st != FEDC_OK) return 0;
    fedci_buf b = {0};
    /* re-encoding what was decoded must work (the server encodes the same structures); that it
     * decodes again is not required: protobuf-c keeps unknown fields as read, including
     * encodings it would refuse (an overlong varint tag of field 0) */
    if (fedci_pack(m, &b, NULL) != FEDC_OK) abort();
    fedci_buf_fini(&b);
    fedci_unpacked_free(m);
    return 0;
}
