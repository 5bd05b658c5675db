/*
 * Fuzz target: the streams that carry vectors (src/net/wire.c): length-delimited framing, the
 * header message, and Chunks checked for order, size and bounds -- a model download as the
 * client reads it, or a result upload as the server reads it. Byte 0 picks the kind, byte 1
 * the size of the pieces the body arrives in (as the network splits it). Properties: no crash,
 * no write outside the vector, no leak; a stream accepted by finish filled the vector exactly;
 * and the split does not matter (the reader's fast path for whole Chunks and its framer give
 * the same verdict and the same vector as one piece does).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"

#ifndef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

#define FUZZ_STREAM_MAX_FLOATS 65536

static float fuzz_stream_buf[2][FUZZ_STREAM_MAX_FLOATS];
static int fuzz_stream_which;

static fedc_status fuzz_stream_header(void *user, const ProtobufCMessage *m, float **dest,
                                      uint64_t *n, fedc_err *err)
{
    uint64_t want;
    if (*(const int *)user == FEDCI_VS_MODEL) {
        const Fedc__V1__ModelHeader *h = (const Fedc__V1__ModelHeader *)m;
        if (!h->model) return fedc_err_set(err, FEDC_ERR_FORMAT, "no model");
        want = h->model->num_params;
    } else {
        want = ((const Fedc__V1__ResultHeader *)m)->num_params;
    }
    if (want > FUZZ_STREAM_MAX_FLOATS) return fedc_err_set(err, FEDC_ERR_RANGE, "too many");
    *dest = fuzz_stream_buf[fuzz_stream_which];
    *n = want;
    return FEDC_OK;
}

int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size);
int FEDC_FUZZ_ENTRY(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int kind = data[0] & 1 ? FEDCI_VS_RESULT : FEDCI_VS_MODEL;
    size_t piece = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    fedc_status verdict[2];
    uint64_t filled[2];
    for (int pass = 0; pass < 2; pass++) {
        size_t step = pass == 0 ? piece : (size ? size : 1);
        fuzz_stream_which = pass;
        fedci_vstream vs;
        fedci_vstream_init(&vs, (fedci_vs_kind)kind, 4096, 4096, fuzz_stream_header, &kind);
        vs.scan_finite = 1;
        fedc_status st = FEDC_OK;
        for (size_t off = 0; off < size && st == FEDC_OK; off += step)
            st = fedci_vstream_feed(&vs, data + off, size - off < step ? size - off : step, NULL);
        if (st == FEDC_OK) st = fedci_vstream_finish(&vs, NULL);
        if (st == FEDC_OK && vs.filled != vs.dest_bytes) abort();
        if (st == FEDC_OK && vs.nonfinite_at != UINT64_MAX &&
            isfinite(fuzz_stream_buf[pass][vs.nonfinite_at]))
            abort();
        verdict[pass] = st;
        filled[pass] = vs.filled;
        fedci_vstream_fini(&vs);
    }
    if (verdict[0] != verdict[1]) abort();
    if (verdict[0] == FEDC_OK &&
        (filled[0] != filled[1] ||
         memcmp(fuzz_stream_buf[0], fuzz_stream_buf[1], (size_t)filled[0]) != 0))
        abort();
    return 0;
}
