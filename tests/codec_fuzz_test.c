/* The plain driver of the codec decoder's fuzz target (tests/fuzz/codec_decode_fuzz.c): replays
 * the seed corpus (tests/fuzz/codec_corpus/, one message per encoding) and a fixed set of
 * mutations of it (bit flips, byte values, truncations, extensions), so every test run covers
 * what the fuzzer starts from, without a fuzzer.
 *
 * `codec_fuzz_test --write-corpus DIR` regenerates the corpus. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/rng.h"
#include "fuzz/codec_decode_fuzz.c"

/* Corpus entries: name, spec, n, tensors, delta. Small n keeps files and replays small. */
static const struct {
    const char *name, *spec;
    size_t n;
    int tensors, delta;
} entries[] = {
    {"none", "none", 37, 0, 0},
    {"f16", "f16", 37, 0, 0},
    {"bf16", "bf16", 37, 0, 0},
    {"q8_tensor", "q8", 64, 1, 0},
    {"q8_block", "q8:b=16,nearest", 70, 0, 0},
    {"q4_tensor", "q4", 65, 1, 0},
    {"qsgd", "qsgd:s=5,b=8", 40, 0, 0},
    {"topk_varint", "topk:k=6", 300, 0, 0},
    {"topk_bitmap", "topk:50%+q8", 90, 1, 0},
    {"topk_q4_zstd", "topk:20%+q4:b=4+zstd", 400, 1, 0},
    {"mask_f32", "mask:25%", 80, 0, 0},
    {"mask_qsgd", "mask:40%+qsgd:s=3,tensor", 80, 1, 0},
    {"zstd_f32", "f32+zstd", 256, 0, 0},
    {"delta_q8", "q8:whole", 50, 0, 1},
    {"delta_zstd", "f16+zstd", 128, 0, 1},
};

static void make_entry(size_t e, uint8_t **msg, size_t *len)
{
    size_t n = entries[e].n;
    float *x = malloc(n * sizeof *x), *base = malloc(n * sizeof *base);
    fedc_rng rng;
    fedc_rng_init(&rng, 1000 + e, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < n; i++) {
        base[i] = (float)fedc_rng_normal(&rng);
        /* zeros and repeats give zstd something to find */
        x[i] = i % 3 == 0 ? 0.0f : (float)(0.1 * fedc_rng_normal(&rng));
        if (strstr(entries[e].spec, "zstd") && i % 2) x[i] = 0.5f;
    }
    if (entries[e].delta) /* a model near base: the delta is x */
        for (size_t i = 0; i < n; i++) x[i] += base[i];
    fedc_layout *l = NULL;
    if (entries[e].tensors) {
        l = fedc_layout_create();
        int64_t a[2] = {(int64_t)(n / 4), 2}, b[1] = {(int64_t)(n - 2 * (n / 4))};
        assert_int_equal(fedc_layout_add(l, "0.weight", 2, a, NULL), FEDC_OK);
        assert_int_equal(fedc_layout_add(l, "0.bias", 1, b, NULL), FEDC_OK);
    }
    fedc_codec *c = NULL;
    assert_int_equal(fedc_codec_create_str(entries[e].spec, &c, NULL), FEDC_OK);
    fedc_codec_ctx ctx = {7, 1, (uint32_t)e, l, 0};
    const uint8_t *m;
    fedc_err err;
    fedc_status st = entries[e].delta
                         ? fedc_codec_encode_delta(c, x, base, 3, n, &ctx, &m, len, &err)
                         : fedc_codec_encode(c, x, n, &ctx, &m, len, &err);
    if (st != FEDC_OK) fail_msg("%s: %s", entries[e].name, err.msg);
    *msg = malloc(*len);
    memcpy(*msg, m, *len);
    fedc_codec_destroy(c);
    fedc_layout_destroy(l);
    free(x);
    free(base);
}

static int write_corpus(const char *dir)
{
    for (size_t e = 0; e < sizeof entries / sizeof *entries; e++) {
        uint8_t *msg;
        size_t len;
        make_entry(e, &msg, &len);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", dir, entries[e].name);
        tu_write_file(path, msg, len);
        free(msg);
    }
    return 0;
}

typedef struct corpus {
    char **data;
    size_t *len;
    size_t count;
} corpus;

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static corpus load_corpus(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/codec_corpus", tu_src_dir());
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open the corpus %s", dir);
    char *names[256];
    size_t count = 0;
    struct dirent *de;
    while ((de = readdir(d)) && count < 256)
        if (de->d_name[0] != '.') names[count++] = strdup(de->d_name);
    closedir(d);
    qsort(names, count, sizeof *names, cmp_str);
    corpus c = {malloc(count * sizeof(char *)), malloc(count * sizeof(size_t)), count};
    for (size_t i = 0; i < count; i++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        c.data[i] = tu_read_file(path, &c.len[i]);
        assert_non_null(c.data[i]);
        free(names[i]);
    }
    return c;
}

static void free_corpus(corpus *c)
{
    for (size_t i = 0; i < c->count; i++) free(c->data[i]);
    free(c->data);
    free(c->len);
}

/* Every corpus file is a valid message that decodes, and is what the current encoder makes
 * (the format is pinned: an encoder change that alters bytes shows up here). */
static void test_corpus(void **state)
{
    (void)state;
    corpus c = load_corpus();
    assert_int_equal(c.count, sizeof entries / sizeof *entries);
    for (size_t i = 0; i < c.count; i++) {
        fedc_codec_header h;
        fedc_err err;
        if (fedc_codec_peek((const uint8_t *)c.data[i], c.len[i], &h, &err) != FEDC_OK)
            fail_msg("corpus file %zu: %s", i, err.msg);
        LLVMFuzzerTestOneInput((const uint8_t *)c.data[i], c.len[i]);
    }
    free_corpus(&c);
    for (size_t e = 0; e < sizeof entries / sizeof *entries; e++) {
        uint8_t *msg;
        size_t len, flen;
        make_entry(e, &msg, &len);
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/fuzz/codec_corpus/%s.bin", tu_src_dir(),
                 entries[e].name);
        char *file = tu_read_file(path, &flen);
        if (!file) fail_msg("%s is missing", path);
        if (flen != len || memcmp(file, msg, len) != 0)
            fail_msg("%s differs from the encoder's output: if the format changed on purpose, "
                     "regenerate with codec_fuzz_test --write-corpus tests/fuzz/codec_corpus",
                     path);
        free(file);
        free(msg);
    }
}

/* Deterministic mutations of every corpus file through the fuzz target. */
static void test_mutations(void **state)
{
    (void)state;
    corpus c = load_corpus();
    fedc_rng rng;
    fedc_rng_init(&rng, 4242, 0, 0, FEDC_RNG_DATA);
    uint8_t *buf = malloc(1 << 16);
    size_t runs = 0;
    for (size_t f = 0; f < c.count; f++) {
        for (int m = 0; m < 400; m++) {
            size_t len = c.len[f];
            memcpy(buf, c.data[f], len);
            int kind = (int)fedc_rng_below(&rng, 5);
            int edits = 1 + (int)fedc_rng_below(&rng, 3);
            for (int e = 0; e < edits; e++) {
                /* half the edits hit the header, where the sizes are */
                size_t at = fedc_rng_below(&rng, 2) ? fedc_rng_below(&rng, FEDC_CODEC_HEADER_SIZE)
                                                    : fedc_rng_below(&rng, len);
                if (kind == 0)
                    buf[at] ^= (uint8_t)(1u << fedc_rng_below(&rng, 8));
                else if (kind == 1)
                    buf[at] = (uint8_t)fedc_rng_u32(&rng);
                else if (kind == 2)
                    buf[at] = (uint8_t)(fedc_rng_below(&rng, 2) ? 0 : 0xff);
            }
            if (kind == 3) len = fedc_rng_below(&rng, len); /* truncated */
            if (kind == 4 && len + 8 < (1u << 16)) {        /* extended */
                for (int e = 0; e < 8; e++) buf[len + e] = (uint8_t)fedc_rng_u32(&rng);
                len += 1 + fedc_rng_below(&rng, 8);
            }
            LLVMFuzzerTestOneInput(buf, len);
            runs++;
        }
    }
    assert_true(runs >= 400 * 10);
    free(buf);
    free_corpus(&c);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
