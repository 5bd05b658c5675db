/* Decoder refusals (include/fedc/codec.h): a message whose header fields, declared sizes,
 * segments, indices, mask, scales, levels, values, padding or zstd frame are inconsistent is
 * refused with FEDC_ERR_FORMAT and a message naming the field and its offset; one test per
 * field, each starting from a valid message and breaking exactly that field. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec_internal.h"
#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/rng.h"

#define HDR FEDC_CODEC_HEADER_SIZE

typedef struct msgbuf {
    uint8_t *p;
    size_t len;
    size_t n;
    fedc_codec_header h;
} msgbuf;

static float *values(size_t n)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    fedc_rng rng;
    fedc_rng_init(&rng, 5, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.1 * fedc_rng_normal(&rng));
    return x;
}

/* A valid message of n values (two tensors when tensors != 0). */
static msgbuf make_msg(const char *spec, size_t n, int tensors)
{
    fedc_codec *c = NULL;
    assert_int_equal(fedc_codec_create_str(spec, &c, NULL), FEDC_OK);
    float *x = values(n);
    fedc_layout *l = NULL;
    if (tensors) {
        l = fedc_layout_create();
        int64_t a[1] = {(int64_t)(n / 2)}, b[1] = {(int64_t)(n - n / 2)};
        assert_int_equal(fedc_layout_add(l, "w", 1, a, NULL), FEDC_OK);
        assert_int_equal(fedc_layout_add(l, "b", 1, b, NULL), FEDC_OK);
    }
    fedc_codec_ctx ctx = {1, 2, 3, l, 0};
    const uint8_t *m;
    size_t len;
    fedc_err err;
    if (fedc_codec_encode(c, x, n, &ctx, &m, &len, &err) != FEDC_OK) fail_msg("%s", err.msg);
    msgbuf mb = {malloc(len + 16), len, n, {0}};
    memcpy(mb.p, m, len);
    assert_int_equal(fedc_codec_peek(mb.p, len, &mb.h, NULL), FEDC_OK);
    /* it decodes as made */
    float *y = malloc(n * sizeof *y);
    assert_int_equal(fedc_codec_decode(c, mb.p, len, y, n, NULL), FEDC_OK);
    free(y);
    free(x);
    fedc_layout_destroy(l);
    fedc_codec_destroy(c);
    return mb;
}

/* Body offsets of the sections of a raw message. */
static size_t off_index(const fedc_codec_header *h)
{
    return h->groups == FEDC_GROUPS_TENSOR ? 8 * (size_t)h->group_param : 0;
}
static size_t off_scales(const fedc_codec_header *h)
{
    return off_index(h) + (size_t)h->index_bytes;
}
static size_t off_values(const fedc_codec_header *h)
{
    size_t ng = fedci_codec_group_count(h->groups, h->group_param, (size_t)h->k);
    return off_scales(h) + ng * fedci_codec_scale_bytes(h->values);
}

/* Decodes with the receiver's n and expects FEDC_ERR_FORMAT naming `what`. */
static void refused(const msgbuf *mb, size_t n, const char *what)
{
    fedc_codec *c = NULL;
    assert_int_equal(fedc_codec_create_str("none", &c, NULL), FEDC_OK);
    float *y = malloc((n ? n : 1) * sizeof *y);
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_codec_decode(c, mb->p, mb->len, y, n, &err);
    if (st != FEDC_ERR_FORMAT)
        fail_msg("expected a refusal naming \"%s\", got status %d: %s", what, st, err.msg);
    if (!strstr(err.msg, what)) fail_msg("message \"%s\" does not name \"%s\"", err.msg, what);
    free(y);
    fedc_codec_destroy(c);
}

static void set32(msgbuf *mb, size_t off, uint32_t v) { fedci_put32(mb->p + off, v); }
static void set64(msgbuf *mb, size_t off, uint64_t v) { fedci_put64(mb->p + off, v); }

/* Re-reads the header fields into mb->h after a valid edit. */
static void reread(msgbuf *mb)
{
    assert_int_equal(fedc_codec_peek(mb->p, mb->len, &mb->h, NULL), FEDC_OK);
}

/* Inserts `count` zero bytes at body offset `at`, growing every size field. */
static void insert_body(msgbuf *mb, size_t at, size_t count)
{
    uint8_t *p = malloc(mb->len + count + 16);
    memcpy(p, mb->p, HDR + at);
    memset(p + HDR + at, 0, count);
    memcpy(p + HDR + at + count, mb->p + HDR + at, mb->len - HDR - at);
    free(mb->p);
    mb->p = p;
    mb->len += count;
    set64(mb, 72, mb->h.body_bytes + count);
    set64(mb, 80, mb->h.stored_bytes + count);
}

/* ---- header fields ---- */

static void test_header_fields(void **state)
{
    (void)state;
    msgbuf mb = make_msg("q8", 100, 0);
    uint8_t keep[HDR];
    memcpy(keep, mb.p, HDR);
#define RESET() memcpy(mb.p, keep, HDR)
    size_t len = mb.len;
    mb.len = 40;
    refused(&mb, 100, "shorter than the 88-byte header");
    mb.len = len;
    mb.p[1] = 'X';
    refused(&mb, 100, "magic at offset 0");
    RESET();
    mb.p[4] = 2;
    refused(&mb, 100, "version at offset 4");
    RESET();
    mb.p[5] = 0x80;
    refused(&mb, 100, "flags at offset 5");
    RESET();
    mb.p[6] = 3;
    refused(&mb, 100, "sparsifier id at offset 6");
    RESET();
    mb.p[7] = 6;
    refused(&mb, 100, "value coding id at offset 7");
    RESET();
    mb.p[8] = 3;
    refused(&mb, 100, "groups id at offset 8");
    RESET();
    mb.p[9] = 1;
    refused(&mb, 100, "index format at offset 9");
    RESET();
    mb.p[10] = 254;
    refused(&mb, 100, "levels at offset 10");
    RESET();
    set32(&mb, 12, 5); /* whole-vector groups take no parameter */
    refused(&mb, 100, "group parameter at offset 12");
    RESET();
    set64(&mb, 16, 0);
    refused(&mb, 100, "element count n at offset 16");
    set64(&mb, 16, 1ull << 40);
    refused(&mb, 100, "element count n at offset 16");
    RESET();
    refused(&mb, 99, "element count n at offset 16: 100, the receiver expects 99");
    set64(&mb, 24, 99);
    refused(&mb, 100, "value count k at offset 24");
    RESET();
    set64(&mb, 32, 12345); /* a mask key without a mask */
    refused(&mb, 100, "mask fields at offset 32");
    RESET();
    set32(&mb, 44, 1);
    refused(&mb, 100, "reserved field at offset 44");
    RESET();
    set64(&mb, 56, 3); /* a base version without the delta flag */
    refused(&mb, 100, "base version at offset 56");
    RESET();
    set64(&mb, 64, 10); /* index bytes without top-k */
    refused(&mb, 100, "index bytes at offset 64");
    RESET();
    set64(&mb, 72, mb.h.body_bytes + 1);
    refused(&mb, 100, "body bytes at offset 72");
    RESET();
    set64(&mb, 80, mb.h.stored_bytes + 1);
    refused(&mb, 100, "stored bytes at offset 80");
    RESET();
    mb.len = len + 1; /* a trailing byte */
    refused(&mb, 100, "stored bytes at offset 80");
    mb.len = len - 1; /* a truncated body */
    refused(&mb, 100, "stored bytes at offset 80");
    mb.len = len;
    mb.p[5] = FEDC_CODEC_FLAG_ZSTD; /* zstd flag, stored size out of a frame's range */
    set64(&mb, 80, 0);
    refused(&mb, 100, "stored bytes at offset 80");
    RESET();
#undef RESET
    free(mb.p);

    /* levels and groups that do not fit the value coding */
    mb = make_msg("qsgd:s=5,b=16", 100, 0);
    mb.p[10] = 0;
    mb.p[11] = 0;
    refused(&mb, 100, "levels at offset 10");
    fedci_put32(mb.p + 10, 0); /* levels 0 and block 0 */
    mb.p[10] = 5;
    refused(&mb, 100, "block size at offset 12");
    free(mb.p);
    mb = make_msg("q4", 100, 1);
    set32(&mb, 12, 0);
    refused(&mb, 100, "tensor count at offset 12");
    set32(&mb, 12, 101);
    refused(&mb, 100, "tensor count at offset 12");
    free(mb.p);
    mb = make_msg("f16", 100, 0);
    mb.p[10] = 1;
    refused(&mb, 100, "levels at offset 10");
    mb.p[10] = 0;
    mb.p[8] = 1;
    refused(&mb, 100, "float values have no groups");
    free(mb.p);

    /* sparsifier fields */
    mb = make_msg("topk:10%", 100, 0);
    mb.p[9] = 0;
    refused(&mb, 100, "index format at offset 9");
    mb.p[9] = 3;
    refused(&mb, 100, "index format at offset 9");
    mb.p[9] = 1;
    set64(&mb, 24, 101);
    refused(&mb, 100, "value count k at offset 24");
    set64(&mb, 24, 10);
    set64(&mb, 64, 9); /* fewer bytes than one per index */
    refused(&mb, 100, "index bytes at offset 64");
    free(mb.p);
    mb = make_msg("topk:50%", 100, 0); /* bitmap */
    assert_int_equal(mb.h.index_format, 2);
    set64(&mb, 64, 12);
    refused(&mb, 100, "index bytes at offset 64");
    free(mb.p);
    mb = make_msg("mask:30%", 100, 0);
    set32(&mb, 40, 0);
    refused(&mb, 100, "mask threshold at offset 40");
    free(mb.p);
}

/* ---- body sections ---- */

static void test_segments(void **state)
{
    (void)state;
    msgbuf mb = make_msg("q8", 100, 1); /* tensors of 50 and 50 */
    assert_int_equal(mb.h.groups, FEDC_GROUPS_TENSOR);
    set64(&mb, HDR + 0, 0);
    refused(&mb, 100, "tensor 0 size at body offset 0: 0, must be >= 1");
    set64(&mb, HDR + 0, 50);
    set64(&mb, HDR + 8, 51);
    refused(&mb, 100, "tensor 1 size at body offset 8: 51, runs past n");
    set64(&mb, HDR + 8, 49);
    refused(&mb, 100, "tensor sizes at body offset 0: sum to 99");
    free(mb.p);
}

static void test_indices(void **state)
{
    (void)state;
    /* varint gaps */
    msgbuf mb = make_msg("topk:k=20", 1000, 0);
    assert_int_equal(mb.h.index_format, 1);
    size_t ix = HDR + off_index(&mb.h), nb = (size_t)mb.h.index_bytes;
    uint8_t *keep = malloc(mb.len);
    memcpy(keep, mb.p, mb.len);
    /* an index past n: declare a smaller vector (and decode with it) */
    uint32_t last = 0;
    {
        fedc_codec *c = NULL;
        assert_int_equal(fedc_codec_create_str("none", &c, NULL), FEDC_OK);
        float *y = malloc(1000 * sizeof *y);
        assert_int_equal(fedc_codec_decode(c, mb.p, mb.len, y, 1000, NULL), FEDC_OK);
        for (uint32_t i = 0; i < 1000; i++)
            if (y[i] != 0) last = i;
        free(y);
        fedc_codec_destroy(c);
    }
    set64(&mb, 16, last); /* n = last: index `last` is out of range */
    refused(&mb, last, "is >= n");
    memcpy(mb.p, keep, mb.len);
    /* the last varint continues past the section */
    mb.p[ix + nb - 1] |= 0x80;
    refused(&mb, 1000, "runs past the");
    memcpy(mb.p, keep, mb.len);
    /* an over-long varint */
    for (int i = 0; i < 6; i++) mb.p[ix + i] = 0x80;
    refused(&mb, 1000, "longer than 5 bytes");
    memcpy(mb.p, keep, mb.len);
    /* a byte left over after k indices */
    set64(&mb, 64, mb.h.index_bytes + 1);
    insert_body(&mb, off_index(&mb.h) + nb, 1);
    refused(&mb, 1000, "1 bytes left after 20 indices");
    free(keep);
    free(mb.p);

    /* bitmap: n not a multiple of 8 so the last byte has spare bits */
    mb = make_msg("topk:50%", 101, 0);
    assert_int_equal(mb.h.index_format, 2);
    ix = HDR + off_index(&mb.h);
    nb = (size_t)mb.h.index_bytes;
    mb.p[ix + nb - 1] |= 0x80; /* bit 103 */
    refused(&mb, 101, "bit 103 set, n = 101");
    mb.p[ix + nb - 1] &= 0x7f;
    /* one index too few */
    for (size_t b = 0; b < nb; b++)
        if (mb.p[ix + b]) {
            mb.p[ix + b] &= (uint8_t)(mb.p[ix + b] - 1);
            break;
        }
    refused(&mb, 101, "bits set, k = 51");
    free(mb.p);

    /* mask: another key derives another count */
    mb = make_msg("mask:30%", 1000, 0);
    set64(&mb, 32, mb.h.mask_key + 1);
    refused(&mb, 1000, "the mask (key at offset 32, threshold at offset 40) keeps");
    free(mb.p);
}

static void test_scales(void **state)
{
    (void)state;
    msgbuf mb = make_msg("q8:b=40", 100, 0);
    size_t sc = HDR + off_scales(&mb.h);
    uint8_t keep[64];
    memcpy(keep, mb.p + sc, 24);
    fedci_putf(mb.p + sc + 8, NAN); /* group 1 min */
    refused(&mb, 100, "scale of group 1 at body offset 8");
    memcpy(mb.p + sc, keep, 24);
    fedci_putf(mb.p + sc, 1.0f); /* group 0: min > max */
    fedci_putf(mb.p + sc + 4, 0.5f);
    refused(&mb, 100, "scale of group 0 at body offset 0");
    fedci_putf(mb.p + sc, -3e38f); /* finite ends, infinite range */
    fedci_putf(mb.p + sc + 4, 3e38f);
    refused(&mb, 100, "scale of group 0");
    fedci_putf(mb.p + sc + 20, INFINITY);
    memcpy(mb.p + sc, keep, 16);
    refused(&mb, 100, "scale of group 2 at body offset 16");
    free(mb.p);

    mb = make_msg("qsgd:s=7,b=50", 100, 0);
    sc = HDR + off_scales(&mb.h);
    fedci_putf(mb.p + sc + 4, -1.0f);
    refused(&mb, 100, "norm of group 1 at body offset 4");
    fedci_putf(mb.p + sc + 4, NAN);
    refused(&mb, 100, "norm of group 1");
    free(mb.p);
}

static void test_values(void **state)
{
    (void)state;
    msgbuf mb = make_msg("none", 100, 0);
    size_t v = HDR + off_values(&mb.h);
    fedci_put32(mb.p + v + 12, 0x7fc00000u);
    refused(&mb, 100, "value 3 at body offset 12: not finite");
    free(mb.p);

    mb = make_msg("topk:10%+f32", 100, 0); /* the same check on sparse values */
    v = HDR + off_values(&mb.h);
    fedci_put32(mb.p + v + 4, 0xff800000u);
    refused(&mb, 100, "value 1 at body offset");
    free(mb.p);

    mb = make_msg("f16", 100, 0);
    v = HDR + off_values(&mb.h);
    mb.p[v + 2 * 7 + 1] = 0x7c;
    mb.p[v + 2 * 7] = 0x00;
    refused(&mb, 100, "value 7 at body offset 14: float16 Inf/NaN (0x7c00)");
    free(mb.p);

    mb = make_msg("bf16", 100, 0);
    v = HDR + off_values(&mb.h);
    mb.p[v + 2 * 9 + 1] = 0x7f;
    mb.p[v + 2 * 9] = 0xc0;
    refused(&mb, 100, "value 9 at body offset 18: bfloat16 Inf/NaN (0x7fc0)");
    /* 0x7f7f is a finite bfloat16 (largest) and decodes */
    mb.p[v + 2 * 9] = 0x7f;
    {
        fedc_codec *c = NULL;
        assert_int_equal(fedc_codec_create_str("none", &c, NULL), FEDC_OK);
        float y[100];
        assert_int_equal(fedc_codec_decode(c, mb.p, mb.len, y, 100, NULL), FEDC_OK);
        assert_true(isfinite(y[9]) && y[9] > 3e38f);
        fedc_codec_destroy(c);
    }
    free(mb.p);

    /* qsgd, s = 5: 3 level bits + sign; level 7 is out of range */
    mb = make_msg("qsgd:s=5,whole", 100, 0);
    v = HDR + off_values(&mb.h);
    mb.p[v] = (uint8_t)((mb.p[v] & 0xf0) | 0x7);
    refused(&mb, 100, "value 0 at body offset 4: level 7 > s = 5");
    free(mb.p);

    /* padding bits: 101 4-bit codes leave the last byte's high nibble unused */
    mb = make_msg("q4:whole", 101, 0);
    mb.p[mb.len - 1] |= 0x10;
    refused(&mb, 101, "padding bits are not zero");
    free(mb.p);

    /* mask: a value that overflows when scaled by 1/p */
    mb = make_msg("mask:10%", 1000, 0);
    v = HDR + off_values(&mb.h);
    fedci_putf(mb.p + v, 3e38f);
    refused(&mb, 1000, "scaled by 1/p");
    free(mb.p);
}

static void test_zstd_body(void **state)
{
    (void)state;
    /* compressible: mostly zeros */
    fedc_codec *c = NULL;
    assert_int_equal(fedc_codec_create_str("q8:whole+zstd", &c, NULL), FEDC_OK);
    float x[400] = {0};
    x[17] = 1.0f;
    x[301] = -2.0f;
    const uint8_t *m;
    size_t len;
    assert_int_equal(fedc_codec_encode(c, x, 400, NULL, &m, &len, NULL), FEDC_OK);
    msgbuf mb = {malloc(len), len, 400, {0}};
    memcpy(mb.p, m, len);
    reread(&mb);
    assert_true(mb.h.flags & FEDC_CODEC_FLAG_ZSTD);
    uint8_t *keep = malloc(len);
    memcpy(keep, mb.p, len);
    /* garbage frame */
    memset(mb.p + HDR, 0xa5, len - HDR);
    refused(&mb, 400, "zstd body at offset 88");
    memcpy(mb.p, keep, len);
    /* a corrupted block inside a valid frame header */
    mb.p[len - 2] ^= 0xff;
    mb.p[len - 5] ^= 0x5a;
    refused(&mb, 400, "zstd body at offset 88");
    /* a well-formed frame of the wrong size */
    const uint8_t *z;
    size_t zl;
    uint8_t body[600] = {0};
    assert_int_equal(
        fedc_codec_zstd_compress(c, body, (size_t)mb.h.body_bytes - 1, 3, &z, &zl, NULL), FEDC_OK);
    uint8_t *p2 = malloc(HDR + zl);
    memcpy(p2, keep, HDR);
    memcpy(p2 + HDR, z, zl);
    fedci_put64(p2 + 80, zl);
    msgbuf mb2 = {p2, HDR + zl, 400, {0}};
    refused(&mb2, 400, "frame declares");
    free(p2);
    free(keep);
    free(mb.p);
    fedc_codec_destroy(c);
}

/* Every single-byte change of the header of a few messages is either refused cleanly or
 * decodes to finite values (no crash, no non-finite output). */
static void test_header_bytes_exhaustive(void **state)
{
    (void)state;
    static const char *const specs[] = {"q8", "topk:10%+q4:b=8", "mask:20%+qsgd:s=3,b=16",
                                        "bf16+zstd"};
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        msgbuf mb = make_msg(specs[s], 200, 1);
        fedc_codec *c = NULL;
        assert_int_equal(fedc_codec_create_str("none", &c, NULL), FEDC_OK);
        float *y = malloc(200 * sizeof *y);
        for (size_t off = 0; off < HDR; off++) {
            static const uint8_t vals[] = {0, 1, 2, 0x7f, 0x80, 0xff};
            uint8_t orig = mb.p[off];
            for (size_t v = 0; v < sizeof vals; v++) {
                if (vals[v] == orig) continue;
                mb.p[off] = vals[v];
                fedc_err err;
                fedc_status st = fedc_codec_decode(c, mb.p, mb.len, y, 200, &err);
                if (st == FEDC_OK) {
                    for (int i = 0; i < 200; i++) assert_true(isfinite(y[i]));
                } else if (st != FEDC_ERR_FORMAT && st != FEDC_ERR_STATE) {
                    fail_msg("%s, byte %zu = %u: status %d (%s)", specs[s], off, vals[v], st,
                             err.msg);
                }
            }
            mb.p[off] = orig;
        }
        free(y);
        free(mb.p);
        fedc_codec_destroy(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_indices),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_zstd_body),
        cmocka_unit_test(test_header_bytes_exhaustive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
