/*
 * Fuzz target for the exact model-delta decoder (fedc_codec_xdelta_peek / _apply,
 * include/fedc/codec.h): any bytes are refused with a clean error and leave the cached model
 * exactly as it was, or apply to give the announced model; no crash, leak, overread or
 * undefined behaviour. libFuzzer entry point; tests/codec_delta_test.c replays the seed corpus
 * (tests/fuzz/delta_corpus/) and mutations of it in every test run.
 *
 * The cached model the input is applied to is fixed: element i = (i % 7) * 0.25 - 0.5, at
 * version 3 (the corpus' deltas are made against it, so they reach the body checks).
 *
 * libFuzzer build (clang), from the source tree with a build in build/:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Ibuild/include \
 *     tests/fuzz/delta_decode_fuzz.c build/libfedc.a $(pkg-config --libs libzstd libsodium \
 *     jansson inih zlib openblas) -lm -lpthread -o delta_fuzz
 *   ./delta_fuzz -max_len=65536 tests/fuzz/delta_corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"

#define DELTA_FUZZ_MAX_N (1u << 20)
#define DELTA_FUZZ_BASE_VERSION 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void delta_fuzz_base(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 7) * 0.25f - 0.5f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fedc_xdelta_header h;
    fedc_err err;
    if (fedc_codec_xdelta_peek(data, size, &h, &err) != FEDC_OK) {
        if (err.code != FEDC_ERR_FORMAT) abort();
        return 0;
    }
    if (h.n > DELTA_FUZZ_MAX_N) return 0;
    size_t n = (size_t)h.n;
    fedc_codec *c = NULL;
    if (fedc_codec_create_str("none", &c, NULL) != FEDC_OK) abort();
    float *model = fedc_malloc(n * sizeof *model), *keep = fedc_malloc(n * sizeof *keep);
    if (!model || !keep) abort();
    delta_fuzz_base(model, n);
    memcpy(keep, model, n * sizeof *model);
    char sha[65];
    fedc_status st =
        fedc_codec_xdelta_apply(c, data, size, model, n, DELTA_FUZZ_BASE_VERSION, sha, &err);
    if (st == FEDC_OK) {
        char again[65];
        fedc_vec_sha256_hex(n, model, again);
        if (strcmp(again, sha) != 0 || strcmp(sha, h.sha256) != 0) abort();
        for (size_t i = 0; i < n; i++)
            if (!(model[i] - model[i] == 0.0f)) abort(); /* NaN or Inf */
    } else {
        if (st != FEDC_ERR_FORMAT && st != FEDC_ERR_STATE && st != FEDC_ERR_NOMEM) abort();
        if (memcmp(model, keep, n * sizeof *model) != 0) abort(); /* the cache is untouched */
    }
    /* a receiver of another size, or holding another version, refuses it */
    if (n > 1 && fedc_codec_xdelta_apply(c, data, size, keep, n - 1, DELTA_FUZZ_BASE_VERSION,
                                         NULL, &err) == FEDC_OK)
        abort();
    fedc_free(model);
    fedc_free(keep);
    fedc_codec_destroy(c);
    return 0;
}
