/*
 * Wire messages (src/net/wire.c): length-delimited framing fed in every possible split,
 * the vector streams (encode, decode, limits, truncation, offsets), and the settings sent to
 * clients.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "net/wire.h"

typedef struct frames {
    int count;
    size_t lens[64];
    uint64_t at[64];
    uint8_t first[64];
} frames;

static fedc_status on_frame(void *user, const uint8_t *msg, size_t len, uint64_t at, fedc_err *err)
{
    (void)err;
    frames *f = user;
    if (f->count < 64) {
        f->lens[f->count] = len;
        f->at[f->count] = at;
        f->first[f->count] = len ? msg[0] : 0;
    }
    f->count++;
    return FEDC_OK;
}

static void test_varint(void **state)
{
    (void)state;
    uint8_t b[10];
    assert_int_equal(fedci_varint_put(b, 0), 1);
    assert_int_equal(fedci_varint_put(b, 127), 1);
    assert_int_equal(fedci_varint_put(b, 128), 2);
    assert_int_equal(b[0], 0x80);
    assert_int_equal(b[1], 0x01);
    assert_int_equal(fedci_varint_put(b, 300), 2);
    assert_int_equal(b[0], 0xac);
    assert_int_equal(b[1], 0x02);
    assert_int_equal(fedci_varint_size(UINT64_MAX), 10);
    assert_int_equal(fedci_varint_put(b, UINT64_MAX), 10);
}

/* Three frames (0, 5 and 300 bytes) fed in every split into two pieces, and byte by byte. */
static void test_framer_splits(void **state)
{
    (void)state;
    uint8_t s[400];
    size_t n = 0;
    s[n++] = 0;
    s[n++] = 5;
    for (int i = 0; i < 5; i++) s[n++] = (uint8_t)(10 + i);
    n += fedci_varint_put(s + n, 300);
    for (int i = 0; i < 300; i++) s[n++] = (uint8_t)(i & 0xff);
    for (size_t cut = 0; cut <= n; cut++) {
        fedci_framer fr;
        fedci_framer_init(&fr, 1000);
        frames f = {0};
        assert_int_equal(fedci_framer_feed(&fr, s, cut, on_frame, &f, NULL), FEDC_OK);
        assert_int_equal(fedci_framer_feed(&fr, s + cut, n - cut, on_frame, &f, NULL), FEDC_OK);
        assert_int_equal(f.count, 3);
        assert_int_equal(f.lens[0], 0);
        assert_int_equal(f.lens[1], 5);
        assert_int_equal(f.first[1], 10);
        assert_int_equal(f.lens[2], 300);
        assert_int_equal(f.at[2], 7);
        assert_int_equal(f.first[2], 0);
        assert_true(fedci_framer_at_boundary(&fr));
        fedci_framer_fini(&fr);
    }
    fedci_framer fr;
    fedci_framer_init(&fr, 1000);
    frames f = {0};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(fedci_framer_feed(&fr, s + i, 1, on_frame, &f, NULL), FEDC_OK);
        if (i == n - 2) assert_false(fedci_framer_at_boundary(&fr));
    }
    assert_int_equal(f.count, 3);
    fedci_framer_fini(&fr);
}

static void test_framer_limits(void **state)
{
    (void)state;
    fedci_framer fr;
    fedc_err err;
    frames f = {0};
    uint8_t big[8];
    size_t n = fedci_varint_put(big, 1001);
    fedci_framer_init(&fr, 1000);
    assert_int_equal(fedci_framer_feed(&fr, big, n, on_frame, &f, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "exceeds the limit of 1000"));
    fedci_framer_fini(&fr);
    static const uint8_t endless[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    fedci_framer_init(&fr, 1000);
    assert_int_equal(fedci_framer_feed(&fr, endless, sizeof endless, on_frame, &f, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "length prefix is too long"));
    fedci_framer_fini(&fr);
    assert_int_equal(f.count, 0);
}

typedef struct sink {
    float *dst;
    uint64_t n;
    int headers;
    uint64_t version;
} sink;

static fedc_status on_model_header(void *user, const ProtobufCMessage *m, float **dest,
                                   uint64_t *num_floats, fedc_err *err)
{
    sink *s = user;
    const Fedc__V1__ModelHeader *h = (const Fedc__V1__ModelHeader *)m;
    s->headers++;
    if (!h->model) return fedc_err_set(err, FEDC_ERR_FORMAT, "no model");
    s->version = h->model->version;
    if (h->model->num_params != s->n) return fedc_err_set(err, FEDC_ERR_SHAPE, "size");
    *dest = s->dst;
    *num_floats = s->n;
    return FEDC_OK;
}

static void encode_model(fedci_buf *b, const float *x, size_t n, uint64_t announced, uint32_t chunk)
{
    Fedc__V1__ModelRef ref = FEDC__V1__MODEL_REF__INIT;
    ref.version = 7;
    ref.num_params = announced;
    ref.sha256 = "x";
    Fedc__V1__ModelHeader h = FEDC__V1__MODEL_HEADER__INIT;
    h.model = &ref;
    h.chunk_bytes = chunk;
    b->len = 0;
    assert_int_equal(fedci_vstream_encode(&h.base, x, n, chunk, b, NULL), FEDC_OK);
}

static void test_vstream_roundtrip(void **state)
{
    (void)state;
    size_t n = 10007; /* not a multiple of the chunk */
    float *x = malloc(n * sizeof *x), *y = calloc(n, sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = (float)i * 0.25f - 17.0f;
    fedci_buf b = {0};
    encode_model(&b, x, n, n, 4096);
    assert_true(b.len > n * 4 && b.len < n * 4 + 400);
    /* whole, and in pieces of 1, 3, 4095 and 65536 bytes */
    size_t pieces[] = {b.len, 1, 3, 4095, 65536};
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        memset(y, 0, n * sizeof *y);
        sink s = {y, n, 0, 0};
        fedci_vstream vs;
        fedci_vstream_init(&vs, FEDCI_VS_MODEL, 1 << 16, 4096, on_model_header, &s);
        for (size_t off = 0; off < b.len; off += pieces[k]) {
            size_t len = b.len - off < pieces[k] ? b.len - off : pieces[k];
            assert_int_equal(fedci_vstream_feed(&vs, b.data + off, len, NULL), FEDC_OK);
        }
        assert_int_equal(fedci_vstream_finish(&vs, NULL), FEDC_OK);
        fedci_vstream_fini(&vs);
        assert_int_equal(s.headers, 1);
        assert_int_equal(s.version, 7);
        assert_memory_equal(x, y, n * sizeof *x);
    }
    /* scan_finite: the first NaN/Inf is found as the chunks arrive, whatever the split (also
     * when a float straddles two pieces) */
    x[5003] = INFINITY;
    x[9000] = NAN;
    b.len = 0;
    encode_model(&b, x, n, n, 4096);
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        sink s = {y, n, 0, 0};
        fedci_vstream vs;
        fedci_vstream_init(&vs, FEDCI_VS_MODEL, 1 << 16, 4096, on_model_header, &s);
        vs.scan_finite = 1;
        for (size_t off = 0; off < b.len; off += pieces[k]) {
            size_t len = b.len - off < pieces[k] ? b.len - off : pieces[k];
            assert_int_equal(fedci_vstream_feed(&vs, b.data + off, len, NULL), FEDC_OK);
        }
        assert_int_equal(fedci_vstream_finish(&vs, NULL), FEDC_OK);
        assert_int_equal(vs.nonfinite_at, 5003);
        fedci_vstream_fini(&vs);
    }
    fedci_buf_fini(&b);
    free(x);
    free(y);
}

/* Decodes b fully; returns the status of feed or finish. */
static fedc_status decode(const fedci_buf *b, size_t len, float *y, size_t n, uint32_t max_chunk,
                          fedc_err *err)
{
    sink s = {y, n, 0, 0};
    fedci_vstream vs;
    fedci_vstream_init(&vs, FEDCI_VS_MODEL, 1 << 16, max_chunk, on_model_header, &s);
    fedc_status st = fedci_vstream_feed(&vs, b->data, len, err);
    if (st == FEDC_OK) st = fedci_vstream_finish(&vs, err);
    fedci_vstream_fini(&vs);
    return st;
}

static void test_vstream_refusals(void **state)
{
    (void)state;
    size_t n = 3000;
    float *x = calloc(n + 10, sizeof *x), *y = calloc(n + 10, sizeof *y);
    fedci_buf b = {0};
    fedc_err err;
    /* truncated anywhere: an error, never a crash or a success */
    encode_model(&b, x, n, n, 4096);
    for (size_t cut = 0; cut < b.len; cut += 97)
        assert_int_not_equal(decode(&b, cut, y, n, 4096, &err), FEDC_OK);
    assert_int_equal(decode(&b, b.len, y, n, 4096, &err), FEDC_OK);
    /* the stream ends at a frame boundary but the vector is short */
    encode_model(&b, x, n - 1, n, 4096);
    assert_int_equal(decode(&b, b.len, y, n, 4096, &err), FEDC_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "2999 of 3000 floats"));
    /* more data than the header announced */
    encode_model(&b, x, n + 1, n, 4096);
    assert_int_equal(decode(&b, b.len, y, n, 4096, &err), FEDC_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "runs past the end"));
    /* chunks larger than the reader's limit */
    encode_model(&b, x, n, n, 8192);
    assert_int_equal(decode(&b, b.len, y, n, 4096, &err), FEDC_ERR_RANGE);
    /* a header the callback refuses */
    encode_model(&b, x, n, n + 5, 4096);
    assert_int_equal(decode(&b, b.len, y, n, 4096, &err), FEDC_ERR_SHAPE);
    /* an empty body */
    assert_int_equal(decode(&b, 0, y, n, 4096, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "no header"));
    /* chunks out of order: the second chunk's frame first */
    for (size_t i = 0; i < 2048; i++) x[i] = (float)i;
    encode_model(&b, x, 2048, 2048, 4096); /* header, chunk @0, chunk @4096 */
    size_t hlen = (size_t)b.data[0] + 1;
    size_t off1 = hlen;
    /* frame lengths: read the varints */
    size_t l1 = 0, p = off1, sh = 0;
    while (b.data[p] & 0x80) l1 |= (size_t)(b.data[p++] & 0x7f) << sh, sh += 7;
    l1 |= (size_t)b.data[p++] << sh;
    size_t f1 = p - off1 + l1; /* whole first chunk frame */
    fedci_buf sw = {0};
    assert_int_equal(fedci_buf_append(&sw, b.data, hlen, NULL), FEDC_OK);
    assert_int_equal(fedci_buf_append(&sw, b.data + hlen + f1, b.len - hlen - f1, NULL), FEDC_OK);
    assert_int_equal(fedci_buf_append(&sw, b.data + hlen, f1, NULL), FEDC_OK);
    assert_int_equal(decode(&sw, sw.len, y, 2048, 4096, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "chunk offset 4096, expected 0"));
    fedci_buf_fini(&sw);
    /* garbage where a chunk should be */
    encode_model(&b, x, 16, 16, 4096);
    hlen = (size_t)b.data[0] + 1;
    assert_int_equal(decode(&b, b.len, y, 16, 4096, &err), FEDC_OK);
    b.data[hlen + 1] = 0xff; /* the chunk's first tag: an invalid wire type */
    assert_int_equal(decode(&b, b.len, y, 16, 4096, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not a valid Chunk message"));
    fedci_buf_fini(&b);
    free(x);
    free(y);
}

static void test_messages(void **state)
{
    (void)state;
    Fedc__V1__Task t = FEDC__V1__TASK__INIT;
    Fedc__V1__ModelRef ref = FEDC__V1__MODEL_REF__INIT;
    Fedc__V1__TaskConfig cfg = FEDC__V1__TASK_CONFIG__INIT;
    Fedc__V1__TaskConfig__SettingsEntry e = FEDC__V1__TASK_CONFIG__SETTINGS_ENTRY__INIT;
    Fedc__V1__TaskConfig__SettingsEntry *ep = &e;
    e.key = "train.lr";
    e.value = "0.05";
    cfg.n_settings = 1;
    cfg.settings = &ep;
    cfg.seed = 42;
    ref.version = 3;
    ref.sha256 = "abc";
    t.task_id = "id";
    t.round = 4;
    t.stage = FEDC__V1__STAGE__STAGE_FIT;
    t.model = &ref;
    t.config = &cfg;
    Fedc__V1__CheckinResponse r = FEDC__V1__CHECKIN_RESPONSE__INIT;
    r.reply_case = FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK;
    r.task = &t;
    fedci_buf b = {0};
    assert_int_equal(fedci_pack(&r.base, &b, NULL), FEDC_OK);
    ProtobufCMessage *m;
    assert_int_equal(
        fedci_unpack(&fedc__v1__checkin_response__descriptor, b.data, b.len, "x", &m, NULL),
        FEDC_OK);
    Fedc__V1__CheckinResponse *d = (Fedc__V1__CheckinResponse *)m;
    assert_int_equal(d->reply_case, FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK);
    assert_int_equal(d->task->round, 4);
    assert_int_equal(d->task->config->seed, 42);
    assert_string_equal(d->task->config->settings[0]->value, "0.05");
    fedci_unpacked_free(m);
    /* garbage refused with the type's name; every truncation refused or harmless */
    fedc_err err;
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0x01};
    assert_int_equal(fedci_unpack(&fedc__v1__checkin_response__descriptor, junk, sizeof junk,
                                  "check-in answer", &m, &err),
                     FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "check-in answer"));
    for (size_t cut = 1; cut < b.len; cut++) {
        if (fedci_unpack(&fedc__v1__checkin_response__descriptor, b.data, cut, "x", &m, NULL) ==
            FEDC_OK)
            fedci_unpacked_free(m);
    }
    fedci_buf_fini(&b);
}

static void test_settings(void **state)
{
    (void)state;
    assert_true(fedci_setting_is_sent("train", "lr"));
    assert_true(fedci_setting_is_sent("model", "spec"));
    assert_true(fedci_setting_is_sent("run", "seed"));
    assert_true(fedci_setting_is_sent("clients", "count"));
    assert_false(fedci_setting_is_sent("data", "dataset")); /* where data is: the client's */
    assert_false(fedci_setting_is_sent("server", "threads"));
    assert_false(fedci_setting_is_sent("run", "rounds"));
    fedc_config *cfg = fedc_config_create();
    assert_int_equal(fedc_config_set(cfg, "train.lr=0.125", "t"), FEDC_OK);
    char buf[64];
    fedci_config_value_text(cfg, fedc_config_key_find("train.lr"), buf, sizeof buf);
    assert_string_equal(buf, "0.125");
    fedci_config_value_text(cfg, fedc_config_key_find("train.nesterov"), buf, sizeof buf);
    assert_string_equal(buf, "false");
    fedci_config_value_text(cfg, fedc_config_key_find("run.seed"), buf, sizeof buf);
    assert_string_equal(buf, "42");
    /* every value round-trips through its text */
    fedc_config *copy = fedc_config_create();
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        char v[1024];
        fedci_config_value_text(cfg, k, v, sizeof v);
        assert_int_equal(fedc_config_set_value(copy, k->section, k->name, v, "t"), FEDC_OK);
        char w[1024];
        fedci_config_value_text(copy, k, w, sizeof w);
        assert_string_equal(v, w);
    }
    fedc_config_destroy(copy);
    fedc_config_destroy(cfg);
    uint64_t u;
    assert_int_equal(fedci_parse_u64("18446744073709551615", &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(fedci_parse_u64("18446744073709551616", &u), -1);
    assert_int_equal(fedci_parse_u64("", &u), -1);
    assert_int_equal(fedci_parse_u64("12a", &u), -1);
    assert_int_equal(fedci_parse_u64("-1", &u), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint),           cmocka_unit_test(test_framer_splits),
        cmocka_unit_test(test_framer_limits),    cmocka_unit_test(test_vstream_roundtrip),
        cmocka_unit_test(test_vstream_refusals), cmocka_unit_test(test_messages),
        cmocka_unit_test(test_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
