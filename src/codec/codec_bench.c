/*
 * fedc_codec_bench: encode and decode speed of an encoding against memcpy measured in the
 * same run (a benchmark, not a test).
 */
#include <assert.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "codec/codec_internal.h"
#include "fedc/alloc.h"
#include "fedc/rng.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

fedc_status fedc_codec_bench(const char *spec, size_t n, const fedc_layout *layout,
                             double min_seconds, fedc_codec_bench_result *out, fedc_err *err)
{
    assert(spec && out && n > 0);
    memset(out, 0, sizeof *out);
    out->n = n;
    fedc_codec *c = NULL;
    fedc_status st = fedc_codec_create_str(spec, &c, err);
    if (st != FEDC_OK) return st;
    float *x = fedc_malloc(n * sizeof *x);
    float *y = fedc_malloc(n * sizeof *y);
    if (!x || !y) {
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "codec bench: out of memory");
        goto done;
    }
    fedc_rng rng;
    fedc_rng_init(&rng, 1, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.01 * fedc_rng_normal(&rng));
    const double bytes = 4.0 * (double)n;
    fedc_codec_ctx ctx = {1, 1, 0, layout, 0};
    const uint8_t *msg = NULL;
    size_t len = 0;

    size_t reps = 0;
    double t0 = now_seconds(), t = t0;
    while (t - t0 < min_seconds || reps == 0) {
        memcpy(y, x, n * sizeof *x);
        reps++;
        t = now_seconds();
    }
    out->copy_gbps = bytes * (double)reps / (t - t0) / 1e9;

    reps = 0;
    t0 = t = now_seconds();
    while (t - t0 < min_seconds || reps == 0) {
        ctx.round = (uint32_t)reps + 1; /* fresh randomness each time, like real rounds */
        if ((st = fedc_codec_encode(c, x, n, &ctx, &msg, &len, err)) != FEDC_OK) goto done;
        reps++;
        t = now_seconds();
    }
    out->encode_gbps = bytes * (double)reps / (t - t0) / 1e9;
    out->bytes = len;
    out->ratio = bytes / (double)len;

    reps = 0;
    t0 = t = now_seconds();
    while (t - t0 < min_seconds || reps == 0) {
        if ((st = fedc_codec_decode(c, msg, len, y, n, err)) != FEDC_OK) goto done;
        reps++;
        t = now_seconds();
    }
    out->decode_gbps = bytes * (double)reps / (t - t0) / 1e9;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)y[i] - x[i];
        num += d * d;
        den += (double)x[i] * x[i];
    }
    out->rel_error = den > 0 ? sqrt(num / den) : 0;
done:
    fedc_free(x);
    fedc_free(y);
    fedc_codec_destroy(c);
    return st;
}
