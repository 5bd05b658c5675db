/* Exact model deltas (fedc_codec_xdelta_*, src/codec/delta.c): round trips are bit-exact on
 * random bit patterns and on real-like consecutive models (where byte planes + zstd must beat
 * plain zstd of the XOR); malformed deltas (wrong base version or content, wrong length,
 * truncated, corrupt zstd, bad header fields) are refused with a clear error and leave the
 * cached model untouched. Also replays the delta decoder's fuzz target
 * (tests/fuzz/delta_decode_fuzz.c) over its seed corpus (tests/fuzz/delta_corpus/) and fixed
 * mutations. `codec_delta_test --write-corpus DIR` regenerates the corpus. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/rng.h"

#include "fuzz/delta_decode_fuzz.c"

static fedc_codec *mk(void)
{
    fedc_codec *c = NULL;
    assert_int_equal(fedc_codec_create_str("none", &c, NULL), FEDC_OK);
    return c;
}

/* n finite floats from arbitrary bit patterns (NaN/Inf exponents replaced) */
static void random_bits(fedc_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = fedc_rng_u32(r);
        if ((u >> 23 & 0xff) == 0xff) u &= ~(1u << 30);
        memcpy(&x[i], &u, 4);
    }
}

/* encodes base -> x, copies the message, applies it to a copy of base: must give x exactly */
static size_t roundtrip(const float *base, const float *x, size_t n, unsigned opt, int level)
{
    fedc_codec *c = mk();
    const uint8_t *m;
    size_t len;
    fedc_err err;
    assert_int_equal(
        fedc_codec_xdelta_encode(c, base, x, n, 5, 9, NULL, NULL, opt, level, &m, &len, &err),
        FEDC_OK);
    fedc_xdelta_header h;
    assert_int_equal(fedc_codec_xdelta_peek(m, len, &h, &err), FEDC_OK);
    assert_int_equal(h.n, n);
    assert_int_equal(h.base_version, 5);
    assert_int_equal(h.model_version, 9);
    assert_int_equal(h.shuffle, opt == FEDC_XDELTA_SHUFFLE);
    char want[65], got[65];
    fedc_vec_sha256_hex(n, x, want);
    assert_string_equal(h.sha256, want);
    uint8_t *msg = malloc(len);
    memcpy(msg, m, len);
    float *y = malloc(n * sizeof *y);
    memcpy(y, base, n * sizeof *y);
    assert_int_equal(fedc_codec_xdelta_apply(c, msg, len, y, n, 5, got, &err), FEDC_OK);
    assert_memory_equal(y, x, n * sizeof *y);
    assert_string_equal(got, want);
    free(y);
    free(msg);
    fedc_codec_destroy(c);
    return len;
}

static void test_roundtrip_random(void **state)
{
    (void)state;
    fedc_rng r;
    fedc_rng_init(&r, 1, 0, 0, FEDC_RNG_DATA);
    const size_t ns[] = {1, 2, 7, 1000, 65537};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        size_t n = ns[k];
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        random_bits(&r, a, n);
        random_bits(&r, b, n);
        if (n > 2) {
            a[0] = 0.0f;
            b[0] = -0.0f; /* differ only in the sign bit */
            a[1] = b[1] = 1e-40f; /* subnormal, equal */
        }
        for (unsigned opt = 0; opt <= FEDC_XDELTA_SHUFFLE; opt++)
            for (int level = 0; level <= 3; level += 3) {
                size_t len = roundtrip(a, b, n, opt, level);
                /* random bits do not compress: zstd is dropped, the body is 4n bytes */
                if (n >= 1000) assert_int_equal(len, FEDC_XDELTA_HEADER_SIZE + 4 * n);
            }
        free(a);
        free(b);
    }
}

/* consecutive models of a training run: x = base + a small step. The XOR's sign and exponent
 * planes are almost all zero, so byte planes + zstd beat zstd of the words, which beats zstd of
 * the model. */
static void test_roundtrip_reallike(void **state)
{
    (void)state;
    size_t n = 200000;
    fedc_rng r;
    fedc_rng_init(&r, 2, 0, 0, FEDC_RNG_DATA);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)(0.05 * fedc_rng_normal(&r));
        b[i] = a[i] + (float)(2e-4 * fedc_rng_normal(&r));
    }
    size_t plain = roundtrip(a, b, n, 0, 3), shuf = roundtrip(a, b, n, FEDC_XDELTA_SHUFFLE, 3);
    fedc_codec *c = mk();
    const uint8_t *z;
    size_t zlen;
    assert_int_equal(fedc_codec_zstd_compress(c, b, 4 * n, 3, &z, &zlen, NULL), FEDC_OK);
    print_message("# n %zu: float32 %zu, zstd %zu, xor+zstd %zu, xor+planes+zstd %zu bytes\n", n,
                  4 * n, zlen, plain, shuf);
    assert_true(shuf < plain);
    assert_true(plain < zlen);
    assert_true(shuf * 13 < 4 * n * 10); /* at least 1.3x below float32 */
    fedc_codec_destroy(c);
    free(a);
    free(b);
}

typedef struct fixture {
    size_t n, len;
    float *base, *x, *y;
    uint8_t *msg;
} fixture;

static void fx_make(fixture *f, size_t n, unsigned opt, int level)
{
    f->n = n;
    f->base = malloc(n * sizeof(float));
    f->x = malloc(n * sizeof(float));
    f->y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        f->base[i] = (float)i * 0.01f;
        f->x[i] = f->base[i] + (i % 5 == 0 ? 0.001f : 0.0f);
    }
    memcpy(f->y, f->base, n * sizeof(float));
    fedc_codec *c = mk();
    const uint8_t *m;
    assert_int_equal(fedc_codec_xdelta_encode(c, f->base, f->x, n, 2, 3, NULL, NULL, opt, level,
                                              &m, &f->len, NULL),
                     FEDC_OK);
    f->msg = malloc(f->len + 16);
    memcpy(f->msg, m, f->len);
    fedc_codec_destroy(c);
}

static void fx_free(fixture *f)
{
    free(f->base);
    free(f->x);
    free(f->y);
    free(f->msg);
}

/* applying (msg, len) to the cache y (version base_version, n floats) fails with code and a
 * message containing `what`, and leaves y as it was */
static void refused(fixture *f, const uint8_t *msg, size_t len, size_t n, uint64_t base_version,
                    fedc_status code, const char *what)
{
    fedc_codec *c = mk();
    fedc_err err;
    fedc_err_clear(&err);
    float *keep = malloc(f->n * sizeof(float));
    memcpy(keep, f->y, f->n * sizeof(float));
    fedc_status st = fedc_codec_xdelta_apply(c, msg, len, f->y, n, base_version, NULL, &err);
    if (st != code || !strstr(err.msg, what))
        fail_msg("expected %d with '%s', got %d: %s", code, what, st, err.msg);
    assert_memory_equal(f->y, keep, f->n * sizeof(float));
    free(keep);
    fedc_codec_destroy(c);
}

static void test_malformed(void **state)
{
    (void)state;
    fixture f;
    fx_make(&f, 3000, FEDC_XDELTA_SHUFFLE, 3);
    fedc_xdelta_header h;
    assert_int_equal(fedc_codec_xdelta_peek(f.msg, f.len, &h, NULL), FEDC_OK);
    assert_true(h.zstd);
    /* wrong base version; the right version with other content */
    refused(&f, f.msg, f.len, f.n, 1, FEDC_ERR_STATE, "against version 2, the cached model is "
                                                      "version 1");
    f.y[17] = 5.0f;
    refused(&f, f.msg, f.len, f.n, 2, FEDC_ERR_STATE, "SHA-256");
    f.y[17] = f.base[17];
    assert_memory_equal(f.y, f.base, f.n * sizeof(float));
    /* wrong length: the receiver's n, or the message cut or extended */
    refused(&f, f.msg, f.len, f.n - 1, 2, FEDC_ERR_FORMAT, "of 3000 elements, the cached model "
                                                           "has 2999");
    refused(&f, f.msg, f.len - 1, f.n, 2, FEDC_ERR_FORMAT, "stored bytes");
    refused(&f, f.msg, 50, f.n, 2, FEDC_ERR_FORMAT, "shorter than the 104-byte header");
    memset(f.msg + f.len, 0, 16);
    refused(&f, f.msg, f.len + 4, f.n, 2, FEDC_ERR_FORMAT, "stored bytes");
    /* corrupt zstd: every body byte flipped in turn (a sample) is refused or, if zstd does not
     * notice, caught by the result's hash */
    for (size_t i = FEDC_XDELTA_HEADER_SIZE; i < f.len; i += 7) {
        f.msg[i] ^= 0x5a;
        refused(&f, f.msg, f.len, f.n, 2, FEDC_ERR_FORMAT, "model delta: ");
        f.msg[i] ^= 0x5a;
    }
    f.msg[FEDC_XDELTA_HEADER_SIZE] ^= 0xff; /* the frame's magic */
    refused(&f, f.msg, f.len, f.n, 2, FEDC_ERR_FORMAT, "zstd");
    f.msg[FEDC_XDELTA_HEADER_SIZE] ^= 0xff;
    /* header fields */
    struct {
        size_t off;
        uint8_t val;
        const char *what;
    } fields[] = {
        {0, 'X', "magic"},          {4, 2, "format version 2"}, {5, 0x7, "unknown flags"},
        {6, 1, "reserved"},         {16, 3, "base version 3"},  {8, 0, "element count"},
        {40, 0, "SHA-256"}, /* the base's hash */
        {72, 0, "announces"},       /* the result's hash */
    };
    for (size_t k = 0; k < sizeof fields / sizeof *fields; k++) {
        uint8_t *m = malloc(f.len);
        memcpy(m, f.msg, f.len);
        if (fields[k].off == 8) memset(m + 8, 0, 8);
        else if (fields[k].off == 40 || fields[k].off == 72) m[fields[k].off] ^= 1;
        else m[fields[k].off] = fields[k].val;
        fedc_status want = fields[k].off == 40 ? FEDC_ERR_STATE : FEDC_ERR_FORMAT;
        refused(&f, m, f.len, f.n, 2, want, fields[k].what);
        free(m);
    }
    /* the intact message still applies */
    fedc_codec *c = mk();
    assert_int_equal(fedc_codec_xdelta_apply(c, f.msg, f.len, f.y, f.n, 2, NULL, NULL), FEDC_OK);
    assert_memory_equal(f.y, f.x, f.n * sizeof(float));
    fedc_codec_destroy(c);
    fx_free(&f);
    /* uncompressed body of the wrong size */
    fx_make(&f, 10, 0, 0);
    assert_int_equal(f.len, FEDC_XDELTA_HEADER_SIZE + 40);
    f.msg[8] = 11;
    refused(&f, f.msg, f.len, f.n, 2, FEDC_ERR_FORMAT, "uncompressed body of 40 bytes");
    fx_free(&f);
}

/* ---- corpus ---- */

static const struct {
    const char *name;
    size_t n;
    unsigned opt;
    int level;
} entries[] = {
    {"words", 37, 0, 0},
    {"planes", 64, FEDC_XDELTA_SHUFFLE, 0},
    {"words_zstd", 300, 0, 3},
    {"planes_zstd", 500, FEDC_XDELTA_SHUFFLE, 3},
};
#define NENTRIES (sizeof entries / sizeof *entries)

static void make_entry(size_t e, uint8_t **msg, size_t *len)
{
    size_t n = entries[e].n;
    float *base = malloc(n * sizeof *base), *x = malloc(n * sizeof *x);
    delta_fuzz_base(base, n);
    for (size_t i = 0; i < n; i++) x[i] = base[i] + (i % 3 == 0 ? 0.125f : 0.0f);
    fedc_codec *c = mk();
    const uint8_t *m;
    assert_int_equal(fedc_codec_xdelta_encode(c, base, x, n, DELTA_FUZZ_BASE_VERSION, 4, NULL,
                                              NULL, entries[e].opt, entries[e].level, &m, len,
                                              NULL),
                     FEDC_OK);
    *msg = malloc(*len);
    memcpy(*msg, m, *len);
    fedc_codec_destroy(c);
    free(base);
    free(x);
}

static int write_corpus(const char *dir)
{
    for (size_t e = 0; e < NENTRIES; e++) {
        uint8_t *m;
        size_t len;
        make_entry(e, &m, &len);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", dir, entries[e].name);
        tu_write_file(path, m, len);
        free(m);
    }
    return 0;
}

static char *read_entry(size_t e, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/fuzz/delta_corpus/%s.bin", tu_src_dir(),
             entries[e].name);
    char *d = tu_read_file(path, len);
    if (!d) fail_msg("%s is missing", path);
    return d;
}

/* every corpus file is what the encoder makes today (the format is pinned) and applies */
static void test_corpus(void **state)
{
    (void)state;
    for (size_t e = 0; e < NENTRIES; e++) {
        size_t flen, len;
        char *file = read_entry(e, &flen);
        uint8_t *m;
        make_entry(e, &m, &len);
        if (flen != len || memcmp(file, m, len) != 0)
            fail_msg("%s differs from the encoder's output: if the format changed on purpose, "
                     "regenerate with codec_delta_test --write-corpus tests/fuzz/delta_corpus",
                     entries[e].name);
        fedc_codec *c = mk();
        float *y = malloc(entries[e].n * sizeof *y);
        delta_fuzz_base(y, entries[e].n);
        assert_int_equal(fedc_codec_xdelta_apply(c, m, len, y, entries[e].n,
                                                 DELTA_FUZZ_BASE_VERSION, NULL, NULL),
                         FEDC_OK);
        LLVMFuzzerTestOneInput(m, len);
        free(y);
        fedc_codec_destroy(c);
        free(m);
        free(file);
    }
}

/* fixed mutations of every seed: bit flips, byte values, truncations, extensions */
static void test_mutations(void **state)
{
    (void)state;
    fedc_rng r;
    fedc_rng_init(&r, 99, 0, 0, FEDC_RNG_DATA);
    size_t runs = 0;
    for (size_t e = 0; e < NENTRIES; e++) {
        size_t len;
        char *file = read_entry(e, &len);
        uint8_t *buf = malloc(len + 64);
        for (int k = 0; k < 1500; k++) {
            memcpy(buf, file, len);
            size_t l = len;
            switch (k % 4) {
            case 0: buf[fedc_rng_below(&r, len)] ^= (uint8_t)(1u << fedc_rng_below(&r, 8)); break;
            case 1: buf[fedc_rng_below(&r, len)] = (uint8_t)fedc_rng_u32(&r); break;
            case 2: l = (size_t)fedc_rng_below(&r, len); break;
            default:
                l = len + 1 + (size_t)fedc_rng_below(&r, 63);
                for (size_t i = len; i < l; i++) buf[i] = (uint8_t)fedc_rng_u32(&r);
            }
            LLVMFuzzerTestOneInput(buf, l);
            runs++;
        }
        free(buf);
        free(file);
    }
    assert_true(runs == NENTRIES * 1500);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_random), cmocka_unit_test(test_roundtrip_reallike),
        cmocka_unit_test(test_malformed),        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
