/*
 * Tests of safetensors model files (src/codec/safetensors.c): bit-exact round trip, the exact
 * bytes Python's safetensors writes for the same tensors, an independent hand parse of the
 * format, every malformed case the reader must refuse, atomic replacement, allocation
 * failures, and `fedc inspect`.
 */
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

#include "testutil.h"

#include "fedc/alloc.h"
#include "fedc/safetensors.h"
#include "fedc/vec.h"

static fedc_layout *make_layout(void)
{
    fedc_layout *L = fedc_layout_create();
    assert_non_null(L);
    const int64_t w0[2] = {3, 4}, b0[1] = {3}, w2[4] = {2, 3, 1, 1};
    assert_int_equal(fedc_layout_add(L, "0.weight", 2, w0, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(L, "0.bias", 1, b0, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(L, "2.weight", 4, w2, NULL), FEDC_OK);
    return L;
}

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)i * 0.37 - 3.1);
    /* Values whose bits a careless writer would lose. */
    x[0] = -0.0f;
    x[1] = FLT_MIN / 4; /* subnormal */
    x[2] = FLT_MAX;
    x[3] = -FLT_MAX;
    x[4] = 1.0f / 3.0f;
}

/* A file's bytes: 8-byte LE length, header, data. free() the result. */
static unsigned char *make_bytes(const char *header, const void *data, size_t dlen, size_t *len)
{
    size_t h = strlen(header);
    unsigned char *b = malloc(8 + h + dlen + 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (dlen) memcpy(b + 8 + h, data, dlen);
    *len = 8 + h + dlen;
    return b;
}

/* Decoding header + dlen bytes of data fails with `code` and a message containing `what`. */
static void expect_bad(const char *header, size_t dlen, fedc_status code, const char *what)
{
    float data[64] = {0};
    assert_true(dlen <= sizeof data);
    size_t len;
    unsigned char *b = make_bytes(header, data, dlen, &len);
    fedc_safetensors *st = (fedc_safetensors *)1;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status s = fedc_safetensors_decode(b, len, "bad.safetensors", 0, &st, &err);
    if (s != code || !strstr(err.msg, what) || !strstr(err.msg, "bad.safetensors"))
        fail_msg("header %s: got status %d '%s', want %d with '%s'", header, s, err.msg, code,
                 what);
    assert_null(st);
    free(b);
}

static void test_round_trip(void **state)
{
    (void)state;
    char *dir = tu_tempdir("st");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fedc_layout *L = make_layout();
    float *x = fedc_malloc(L->total * sizeof *x);
    assert_non_null(x);
    fill(x, L->total);
    char sha[65];
    fedc_vec_sha256_hex(L->total, x, sha);
    fedc_st_meta meta[3] = {{"fedc_version", "0.1.0"}, {"round", "17"}, {"model_sha256", sha}};
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_safetensors_write(path, L, x, meta, 3, &err), FEDC_OK);

    fedc_safetensors *st = NULL;
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_OK);
    assert_true(fedc_layout_equal(L, st->layout));
    assert_memory_equal(x, st->data, L->total * sizeof *x); /* bit for bit */
    assert_int_equal(st->nmeta, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(st->meta[i].key, meta[i].key);
        assert_string_equal(st->meta[i].value, meta[i].value);
    }
    assert_string_equal(fedc_safetensors_meta(st, "round"), "17");
    fedc_safetensors_destroy(st);
    assert_int_equal(fedc_safetensors_read(path, FEDC_ST_VERIFY_SHA256, &st, &err), FEDC_OK);
    assert_null(fedc_safetensors_meta(st, "epoch"));
    fedc_safetensors_destroy(st);

    /* No metadata, and overwrite the existing file (atomic replace). */
    x[5] = 42.0f;
    assert_int_equal(fedc_safetensors_write(path, L, x, NULL, 0, &err), FEDC_OK);
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_OK);
    assert_int_equal(st->nmeta, 0);
    assert_true(st->data[5] == 42.0f);
    fedc_safetensors_destroy(st);

    /* No temporary file is left behind. */
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            files++;
            assert_string_equal(de->d_name, "model.safetensors");
        }
    closedir(d);
    assert_int_equal(files, 1);
    fedc_safetensors_destroy(NULL);
    fedc_free(x);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

/* The exact bytes Python's safetensors (save_file({"a": ..., "b": ...}, metadata={"k": "v"}))
 * writes: compact JSON with "__metadata__" first, tensors with dtype, shape, data_offsets,
 * header padded with spaces to a multiple of 8, then little-endian float32. */
static void test_golden_bytes(void **state)
{
    (void)state;
    fedc_layout *L = fedc_layout_create();
    assert_non_null(L);
    const int64_t sa[1] = {2}, sb[2] = {1, 2};
    assert_int_equal(fedc_layout_add(L, "a", 1, sa, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(L, "b", 2, sb, NULL), FEDC_OK);
    const float x[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    fedc_st_meta meta[1] = {{"k", "v"}};
    char *dir = tu_tempdir("stg");
    char path[4096];
    snprintf(path, sizeof path, "%s/g.safetensors", dir);
    assert_int_equal(fedc_safetensors_write(path, L, x, meta, 1, NULL), FEDC_OK);

    const char *json = "{\"__metadata__\":{\"k\":\"v\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[8,16]}}";
    size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
    unsigned char want[512];
    memset(want, 0, sizeof want);
    for (int i = 0; i < 8; i++) want[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(want + 8, json, jl);
    memset(want + 8 + jl, ' ', hl - jl);
    const unsigned char le[16] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0,
                                  0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x40};
    memcpy(want + 8 + hl, le, 16);
    size_t n;
    char *got = tu_read_file(path, &n);
    assert_non_null(got);
    assert_int_equal(n, 8 + hl + 16);
    assert_memory_equal(got, want, n);
    free(got);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

/* An independent parse of a written file with the reference implementation's rules, without
 * libfedc's reader: the file is one Python's safetensors would load. */
static void test_hand_parse(void **state)
{
    (void)state;
    char *dir = tu_tempdir("sth");
    char path[4096];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    fedc_layout *L = make_layout();
    float *x = fedc_malloc(L->total * sizeof *x);
    assert_non_null(x);
    fill(x, L->total);
    fedc_st_meta meta[2] = {{"model_spec", "dense(4)"}, {"note", "unicode \xc3\xa9"}};
    assert_int_equal(fedc_safetensors_write(path, L, x, meta, 2, NULL), FEDC_OK);
    size_t n;
    unsigned char *b = (unsigned char *)tu_read_file(path, &n);
    assert_non_null(b);
    assert_true(n >= 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    assert_true(8 + hl <= n);
    assert_int_equal((8 + hl) % 8, 0);      /* data section 8-byte aligned */
    assert_int_equal(b[8], '{');            /* header starts with '{' */
    size_t end = 8 + hl;                    /* trailing padding: spaces only */
    while (end > 8 && b[end - 1] == ' ') end--;
    assert_int_equal(b[end - 1], '}');
    assert_true(8 + hl - end < 8);
    json_error_t je;
    json_t *root = json_loadb((const char *)b + 8, end - 8, JSON_REJECT_DUPLICATES, &je);
    assert_non_null(root);
    json_t *m = json_object_get(root, "__metadata__");
    assert_string_equal(json_string_value(json_object_get(m, "model_spec")), "dense(4)");
    assert_string_equal(json_string_value(json_object_get(m, "note")), "unicode \xc3\xa9");
    /* Tensors: layout order, contiguous offsets covering the data exactly, F32, shapes. */
    uint64_t at = 0;
    for (size_t t = 0; t < L->count; t++) {
        json_t *e = json_object_get(root, L->tensors[t].name);
        assert_non_null(e);
        assert_string_equal(json_string_value(json_object_get(e, "dtype")), "F32");
        json_t *shape = json_object_get(e, "shape"), *offs = json_object_get(e, "data_offsets");
        assert_int_equal(json_array_size(shape), L->tensors[t].ndim);
        uint64_t numel = 1;
        for (int d = 0; d < L->tensors[t].ndim; d++) {
            assert_int_equal(json_integer_value(json_array_get(shape, d)), L->tensors[t].shape[d]);
            numel *= (uint64_t)json_integer_value(json_array_get(shape, d));
        }
        uint64_t b0 = (uint64_t)json_integer_value(json_array_get(offs, 0));
        uint64_t b1 = (uint64_t)json_integer_value(json_array_get(offs, 1));
        assert_int_equal(b0, at);
        assert_int_equal(b1 - b0, numel * 4);
        /* The bytes are the little-endian floats. */
        for (uint64_t i = 0; i < numel; i++) {
            const unsigned char *p = b + 8 + hl + b0 + 4 * i;
            uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                         (uint32_t)p[3] << 24;
            uint32_t w;
            memcpy(&w, &x[L->tensors[t].offset + i], 4);
            assert_int_equal(u, w);
        }
        at = b1;
    }
    assert_int_equal(8 + hl + at, n);
    assert_int_equal(json_object_size(root), L->count + 1);
    json_decref(root);
    free(b);
    fedc_free(x);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

static void test_foreign_order(void **state)
{
    (void)state;
    /* A file whose JSON lists tensors out of data order (Python sorts by dtype and name): the
     * layout follows the data order. */
    const char *h = "{\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"data_offsets\":[4,12],\"shape\":[2],\"dtype\":\"F32\"}}";
    const float data[3] = {1, 2, 3};
    size_t len;
    unsigned char *b = make_bytes(h, data, sizeof data, &len);
    fedc_safetensors *st = NULL;
    assert_int_equal(fedc_safetensors_decode(b, len, "f", 0, &st, NULL), FEDC_OK);
    assert_int_equal(st->layout->count, 2);
    assert_string_equal(st->layout->tensors[0].name, "z");
    assert_string_equal(st->layout->tensors[1].name, "a");
    assert_true(st->data[0] == 1 && st->data[2] == 3);
    fedc_safetensors_destroy(st);
    free(b);
    /* Listed in reverse of data order. */
    h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
        "\"z\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    b = make_bytes(h, data, sizeof data, &len);
    assert_int_equal(fedc_safetensors_decode(b, len, "f", 0, &st, NULL), FEDC_OK);
    assert_string_equal(st->layout->tensors[0].name, "z");
    fedc_safetensors_destroy(st);
    free(b);
    /* Empty file set: {} and no data. */
    b = make_bytes("{}      ", NULL, 0, &len);
    assert_int_equal(fedc_safetensors_decode(b, len, "f", 0, &st, NULL), FEDC_OK);
    assert_int_equal(st->layout->count, 0);
    fedc_safetensors_destroy(st);
    free(b);
}

#define T1(shape, offs) "{\"t\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static void test_malformed(void **state)
{
    (void)state;
    /* Too short for the length field. */
    fedc_safetensors *st = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    unsigned char tiny[5] = {1, 0, 0, 0, 0};
    assert_int_equal(fedc_safetensors_decode(tiny, 5, "bad.safetensors", 0, &st, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "too short"));
    /* Header length beyond the file, and beyond the limit. */
    unsigned char hdr[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_int_equal(fedc_safetensors_decode(hdr, 10, "bad.safetensors", 0, &st, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "header length 100 exceeds"));
    unsigned char huge[16] = {0, 0, 0, 0, 0, 1, 0, 0};
    assert_int_equal(fedc_safetensors_decode(huge, 16, "bad.safetensors", 0, &st, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "limit"));

    expect_bad("not json", 0, FEDC_ERR_FORMAT, "does not start with '{'");
    expect_bad("[1,2]", 0, FEDC_ERR_FORMAT, "does not start with '{'");
    expect_bad("{\"t\":", 0, FEDC_ERR_FORMAT, "not valid JSON");
    expect_bad("{\"t\":{}} x", 0, FEDC_ERR_FORMAT, "not valid JSON");
    expect_bad("{\"t\xff\":1}", 0, FEDC_ERR_FORMAT, "not valid JSON"); /* bad UTF-8 */
    expect_bad("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, FEDC_ERR_FORMAT, "duplicate");
    expect_bad("{\"t\":[1]}", 0, FEDC_ERR_FORMAT, "tensor 't' is not an object");
    expect_bad("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, FEDC_ERR_FORMAT, "dtype");
    expect_bad("{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, FEDC_ERR_FORMAT, "shape");
    expect_bad("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, FEDC_ERR_FORMAT, "data_offsets");
    expect_bad(T1("[1]", "[0]"), 4, FEDC_ERR_FORMAT, "data_offsets");
    expect_bad(T1("[1]", "[-4,0]"), 4, FEDC_ERR_FORMAT, "data_offsets");
    expect_bad(T1("[1.5]", "[0,4]"), 4, FEDC_ERR_FORMAT, "shape entry 0");
    expect_bad(T1("[-1]", "[0,4]"), 4, FEDC_ERR_FORMAT, "shape entry 0");
    expect_bad("{\"t\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
               FEDC_ERR_UNSUPPORTED, "dtype F16");
    expect_bad("{\"t\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
               FEDC_ERR_UNSUPPORTED, "only F32");
    expect_bad(T1("[]", "[0,4]"), 4, FEDC_ERR_UNSUPPORTED, "scalar");
    expect_bad(T1("[2,0]", "[0,0]"), 0, FEDC_ERR_UNSUPPORTED, "dimension 1 is 0");
    expect_bad(T1("[1,1,1,1,1,1,1]", "[0,4]"), 4, FEDC_ERR_UNSUPPORTED, "7 dimensions");
    expect_bad("{\"a234567890123456789012345678901234567890123456789012345678901234\":"
               "{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, FEDC_ERR_UNSUPPORTED, "longer than 63");
    expect_bad(T1("[2,3]", "[0,20]"), 20, FEDC_ERR_FORMAT, "needs 24 bytes");
    expect_bad(T1("[1]", "[8,4]"), 8, FEDC_ERR_FORMAT, "end before they begin");
    expect_bad(T1("[4294967296,4294967296,4294967296]", "[0,4]"), 4, FEDC_ERR_FORMAT,
               "too large");
    /* Offsets: gap, overlap, not from 0, truncated, trailing bytes. */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               12, FEDC_ERR_FORMAT, "4 unused data bytes (4..8) before tensor 'b'");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, FEDC_ERR_FORMAT, "overlaps tensor 'a'");
    expect_bad(T1("[1]", "[4,8]"), 8, FEDC_ERR_FORMAT, "unused data bytes (0..4)");
    expect_bad(T1("[4]", "[0,16]"), 12, FEDC_ERR_FORMAT, "file truncated: tensor 't'");
    expect_bad(T1("[1]", "[0,4]"), 12, FEDC_ERR_FORMAT, "8 trailing bytes");
    expect_bad("{}", 4, FEDC_ERR_FORMAT, "4 trailing bytes");
    /* Metadata must be a map of strings. */
    expect_bad("{\"__metadata__\":{\"round\":3}}", 0, FEDC_ERR_FORMAT, "'round' is not a string");
    expect_bad("{\"__metadata__\":[\"x\"]}", 0, FEDC_ERR_FORMAT, "object of strings");
}

static void test_nonfinite(void **state)
{
    (void)state;
    const float data[3] = {1, NAN, INFINITY};
    size_t len;
    unsigned char *b = make_bytes(T1("[3]", "[0,12]"), data, sizeof data, &len);
    fedc_safetensors *st = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_safetensors_decode(b, len, "n.safetensors", 0, &st, &err),
                     FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "tensor 't' element 1 is NaN"));
    assert_int_equal(fedc_safetensors_decode(b, len, "n", FEDC_ST_ALLOW_NONFINITE, &st, &err),
                     FEDC_OK);
    assert_true(isnan(st->data[1]) && isinf(st->data[2]));
    fedc_safetensors_destroy(st);
    free(b);

    /* Writing NaN is refused and leaves the existing file alone. */
    char *dir = tu_tempdir("stn");
    char path[4096];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    fedc_layout *L = make_layout();
    float *x = fedc_calloc(L->total, sizeof *x);
    assert_non_null(x);
    assert_int_equal(fedc_safetensors_write(path, L, x, NULL, 0, &err), FEDC_OK);
    x[L->tensors[1].offset + 2] = NAN;
    assert_int_equal(fedc_safetensors_write(path, L, x, NULL, 0, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "tensor '0.bias' element 2 is NaN"));
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_OK);
    assert_true(st->data[L->tensors[1].offset + 2] == 0.0f);
    fedc_safetensors_destroy(st);
    fedc_free(x);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

static void test_file_errors(void **state)
{
    (void)state;
    char *dir = tu_tempdir("ste");
    char path[4096], missing[4096];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    snprintf(missing, sizeof missing, "%s/no/such/dir/m.safetensors", dir);
    fedc_layout *L = make_layout();
    float *x = fedc_calloc(L->total, sizeof *x);
    assert_non_null(x);
    fedc_err err;
    fedc_err_clear(&err);
    fedc_safetensors *st = NULL;
    assert_int_equal(fedc_safetensors_read(missing, 0, &st, &err), FEDC_ERR_IO);
    assert_non_null(strstr(err.msg, missing));
    assert_int_equal(fedc_safetensors_write(missing, L, x, NULL, 0, &err), FEDC_ERR_IO);
    assert_non_null(strstr(err.msg, "m.safetensors"));
    fedc_st_meta dup[2] = {{"a", "1"}, {"a", "2"}};
    assert_int_equal(fedc_safetensors_write(path, L, x, dup, 2, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "duplicate metadata key 'a'"));
    fedc_st_meta badutf[1] = {{"a", "\xff"}};
    assert_int_equal(fedc_safetensors_write(path, L, x, badutf, 1, &err), FEDC_ERR_INVALID);

    /* A file cut short on disk: truncated. */
    assert_int_equal(fedc_safetensors_write(path, L, x, NULL, 0, &err), FEDC_OK);
    size_t n;
    char *b = tu_read_file(path, &n);
    assert_non_null(b);
    tu_write_file(path, b, n - 4);
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "file truncated"));
    assert_non_null(strstr(err.msg, path));
    tu_write_file(path, b, 20); /* cut inside the header */
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "exceeds"));
    tu_write_file(path, b, 3);
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "too short"));
    assert_int_equal(fedc_safetensors_read(dir, 0, &st, &err), FEDC_ERR_IO); /* a directory */
    assert_null(st);
    free(b);
    fedc_free(x);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    /* Every allocation failure in write and read ends in a clean error and no leak. */
    char *dir = tu_tempdir("sta");
    char path[4096];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    fedc_layout *L = make_layout();
    float *x = fedc_calloc(L->total, sizeof *x);
    assert_non_null(x);
    fedc_st_meta meta[2] = {{"a", "1"}, {"b", "2"}};
    assert_int_equal(fedc_safetensors_write(path, L, x, meta, 2, NULL), FEDC_OK);
    fedc_alloc_stats before, after;
    fedc_alloc_get_stats(&before);
    int failed_read = 0, failed_write = 0;
    for (uint64_t k = 1; k < 30; k++) {
        fedc_err err;
        fedc_err_clear(&err);
        fedc_safetensors *st = NULL;
        fedc_alloc_fail_after(k, 0);
        fedc_status s = fedc_safetensors_read(path, 0, &st, &err);
        fedc_alloc_fail_after(0, 0);
        if (s != FEDC_OK) {
            assert_int_equal(s, FEDC_ERR_NOMEM);
            assert_null(st);
            failed_read++;
        }
        fedc_safetensors_destroy(st);
        fedc_alloc_fail_after(k, 0);
        s = fedc_safetensors_write(path, L, x, meta, 2, &err);
        fedc_alloc_fail_after(0, 0);
        if (s != FEDC_OK) {
            assert_int_equal(s, FEDC_ERR_NOMEM);
            failed_write++;
        }
    }
    assert_true(failed_read >= 5 && failed_write >= 2);
    fedc_alloc_get_stats(&after);
    assert_int_equal(after.current_bytes, before.current_bytes);
    fedc_free(x);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

/* --- fedc inspect ---------------------------------------------------------------------------- */

/* Runs a shell command; returns its exit code and its stdout (free()) in *out. */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t r;
    while ((r = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += r;
    buf[n] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_inspect(void **state)
{
    (void)state;
    const char *fedc = getenv("FEDC");
    if (!fedc || !*fedc) fail_msg("FEDC (the fedc binary) is not set");
    char *dir = tu_tempdir("sti");
    char path[4096], cmd[8192];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    fedc_layout *L = make_layout();
    float *x = fedc_malloc(L->total * sizeof *x);
    assert_non_null(x);
    fill(x, L->total);
    char sha[65];
    fedc_vec_sha256_hex(L->total, x, sha);
    fedc_st_meta meta[2] = {{"round", "3"}, {"model_sha256", sha}};
    assert_int_equal(fedc_safetensors_write(path, L, x, meta, 2, NULL), FEDC_OK);

    char *out;
    snprintf(cmd, sizeof cmd, "'%s' inspect --json '%s'", fedc, path);
    assert_int_equal(run(cmd, &out), 0);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    if (!o) fail_msg("not JSON: %s", out);
    assert_string_equal(json_string_value(json_object_get(o, "model_sha256")), sha);
    assert_true(json_is_true(json_object_get(o, "model_sha256_matches")));
    json_t *ts = json_object_get(o, "tensors");
    assert_int_equal(json_array_size(ts), 3);
    json_t *t2 = json_array_get(ts, 2);
    assert_string_equal(json_string_value(json_object_get(t2, "name")), "2.weight");
    assert_string_equal(json_string_value(json_object_get(t2, "dtype")), "F32");
    assert_int_equal(json_array_size(json_object_get(t2, "shape")), 4);
    assert_int_equal(json_integer_value(json_object_get(t2, "numel")), 6);
    assert_int_equal(json_integer_value(json_object_get(o, "parameters")), L->total);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "metadata"), "round")), "3");
    json_decref(o);
    free(out);

    snprintf(cmd, sizeof cmd, "'%s' inspect '%s'", fedc, path);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "0.weight"));
    assert_non_null(strstr(out, "[3, 4]"));
    assert_non_null(strstr(out, sha));
    free(out);

    /* A metadata hash that does not match the parameters: refused with VERIFY_SHA256, and
     * `fedc inspect` exits 1. */
    meta[1].value = "0000";
    assert_int_equal(fedc_safetensors_write(path, L, x, meta, 2, NULL), FEDC_OK);
    fedc_safetensors *st = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_safetensors_read(path, FEDC_ST_VERIFY_SHA256, &st, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "model_sha256 mismatch"));
    assert_int_equal(fedc_safetensors_read(path, 0, &st, &err), FEDC_OK);
    fedc_safetensors_destroy(st);
    snprintf(cmd, sizeof cmd, "'%s' inspect --json '%s' 2>/dev/null", fedc, path);
    assert_int_equal(run(cmd, &out), 1);
    assert_non_null(strstr(out, "\"model_sha256_matches\":false"));
    free(out);
    /* Bad file: exit 1 with the reader's message; usage errors: exit 2. */
    tu_write_file(path, "garbage!garbage!", 16);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' 2>&1", fedc, path);
    assert_int_equal(run(cmd, &out), 1);
    assert_non_null(strstr(out, "fedc inspect:"));
    assert_non_null(strstr(out, "header length"));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect 2>&1", fedc);
    assert_int_equal(run(cmd, &out), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' inspect --bogus '%s' 2>&1", fedc, path);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "--bogus"));
    free(out);
    fedc_free(x);
    fedc_layout_destroy(L);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_golden_bytes),
        cmocka_unit_test(test_hand_parse),   cmocka_unit_test(test_foreign_order),
        cmocka_unit_test(test_malformed),    cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_file_errors),  cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_cli_inspect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
