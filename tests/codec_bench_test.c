/* fedc_codec_bench: in the test suite, a short run that checks the measurement is sane (rates
 * positive, the size is the encoder's, the error that of the encoding). With
 * FEDC_CODEC_BENCH=SECONDS it is the benchmark: every encoding at the cnn model's size
 * (P = 1,663,370, McMahan et al. 2017, its real layout) for SECONDS each phase, as a table:
 *   FEDC_CODEC_BENCH=1 ./tests/codec_bench_test
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/codec.h"

static const char *const specs[] = {
    "none",        "zstd",    "f16",  "bf16",    "q8",         "q8:b=256",        "q8+zstd",
    "q4",          "q4:b=64", "qsgd", "topk:1%", "topk:1%+q8", "topk:1%+q8+zstd", "mask:10%",
    "mask:10%+q8",
};

/* The cnn preset's layout: conv5x5(32) conv5x5(64) dense 3136-512 dense 512-10. */
static fedc_layout *cnn_layout(void)
{
    fedc_layout *l = fedc_layout_create();
    assert_non_null(l);
    const int64_t w0[4] = {32, 1, 5, 5}, b0[1] = {32}, w1[4] = {64, 32, 5, 5}, b1[1] = {64},
                  w2[2] = {512, 3136}, b2[1] = {512}, w3[2] = {10, 512}, b3[1] = {10};
    assert_int_equal(fedc_layout_add(l, "0.weight", 4, w0, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "0.bias", 1, b0, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "3.weight", 4, w1, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "3.bias", 1, b1, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "7.weight", 2, w2, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "7.bias", 1, b2, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "9.weight", 2, w3, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "9.bias", 1, b3, NULL), FEDC_OK);
    assert_int_equal(l->total, 1663370);
    return l;
}

static void test_bench_sane(void **state)
{
    (void)state;
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        fedc_codec_bench_result r;
        fedc_err err;
        if (fedc_codec_bench(specs[s], 5000, NULL, 0.002, &r, &err) != FEDC_OK)
            fail_msg("%s: %s", specs[s], err.msg);
        assert_true(r.copy_gbps > 0 && r.encode_gbps > 0 && r.decode_gbps > 0);
        assert_int_equal(r.n, 5000);
        assert_close(r.ratio, 20000.0 / (double)r.bytes, 1e-12, 0);
        if (strcmp(specs[s], "none") == 0 || strcmp(specs[s], "zstd") == 0)
            assert_true(r.rel_error == 0.0);
        else if (strncmp(specs[s], "f16", 3) == 0)
            assert_true(r.rel_error > 0 && r.rel_error < 1e-3);
        else
            assert_true(r.rel_error > 0);
    }
    fedc_codec_bench_result r;
    fedc_err err;
    assert_int_equal(fedc_codec_bench("q9", 10, NULL, 0.001, &r, &err), FEDC_ERR_CONFIG);
}

static int run_benchmark(double seconds)
{
    fedc_layout *l = cnn_layout();
    printf("codec speed, P = %zu floats (%.2f MB float32), %.1f s per phase\n", l->total,
           4e-6 * (double)l->total, seconds);
    printf("%-18s %10s %8s %8s %8s %8s %8s %8s\n", "encoding", "bytes", "ratio", "memcpy", "encode",
           "decode", "enc/cpy", "rel_err");
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        fedc_codec_bench_result r;
        fedc_err err;
        if (fedc_codec_bench(specs[s], l->total, l, seconds, &r, &err) != FEDC_OK) {
            fprintf(stderr, "%s: %s\n", specs[s], err.msg);
            fedc_layout_destroy(l);
            return 1;
        }
        printf("%-18s %10zu %8.1f %8.2f %8.3f %8.3f %8.3f %8.4f\n", specs[s], r.bytes, r.ratio,
               r.copy_gbps, r.encode_gbps, r.decode_gbps, r.encode_gbps / r.copy_gbps, r.rel_error);
    }
    printf("(GB/s of float32 input, 1e9 bytes; memcpy measured in the same run before each "
           "encoding)\n");
    fedc_layout_destroy(l);
    return 0;
}

int main(void)
{
    const char *b = getenv("FEDC_CODEC_BENCH");
    if (b && *b) return run_benchmark(atof(b) > 0 ? atof(b) : 1.0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bench_sane),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
