/*
 * Fuzz target for the codec decoder (include/fedc/codec.h): any bytes are either refused with
 * a clean error or decode to finite values, with no crash, leak, overread or undefined
 * behaviour. libFuzzer entry point; tests/codec_fuzz_test.c is the plain driver that replays
 * the seed corpus (tests/fuzz/codec_corpus/) and mutations of it in every test run.
 *
 * libFuzzer build (clang), from the source tree with a build in build/:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ibuild/include \
 *     tests/fuzz/codec_decode_fuzz.c build/libfedc.a $(pkg-config --libs libzstd libsodium \
 *     jansson inih zlib openblas) -lm -lpthread -o codec_fuzz
 *   ./codec_fuzz -max_len=65536 tests/fuzz/codec_corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"

/* The largest vector the target decodes (bounds memory per input). */
#define CODEC_FUZZ_MAX_N (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fedc_codec_header h;
    fedc_err err;
    if (fedc_codec_peek(data, size, &h, &err) != FEDC_OK) {
        if (err.code != FEDC_ERR_FORMAT) abort();
        return 0;
    }
    if (h.n > CODEC_FUZZ_MAX_N) return 0;
    fedc_codec *c = NULL;
    if (fedc_codec_create_str("none", &c, NULL) != FEDC_OK) abort();
    size_t n = (size_t)h.n;
    float *out = fedc_malloc(n * sizeof *out);
    float *base = fedc_calloc(n, sizeof *base);
    if (!out || !base) abort();
    fedc_status st;
    if (h.flags & FEDC_CODEC_FLAG_DELTA) {
        /* in place over a cached model of the right version */
        st = fedc_codec_decode_model(c, data, size, base, h.base_version, base, n, &err);
        if (st == FEDC_OK)
            memcpy(out, base, n * sizeof *out);
        else
            for (size_t i = 0; i < n; i++)
                if (base[i] != 0.0f) abort(); /* a refused delta leaves the cache untouched */
    } else {
        st = fedc_codec_decode(c, data, size, out, n, &err);
    }
    if (st == FEDC_OK) {
        for (size_t i = 0; i < n; i++)
            if (!(out[i] - out[i] == 0.0f)) abort(); /* NaN or Inf */
    } else if (st != FEDC_ERR_FORMAT && st != FEDC_ERR_NONFINITE && st != FEDC_ERR_NOMEM) {
        abort();
    }
    /* a receiver expecting another size refuses the message */
    if (n > 1 && fedc_codec_decode_model(c, data, size, NULL, 0, out, n - 1, &err) == FEDC_OK)
        abort();
    fedc_free(out);
    fedc_free(base);
    fedc_codec_destroy(c);
    return 0;
}
