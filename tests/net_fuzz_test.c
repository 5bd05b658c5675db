/* The plain driver of the network parsers' fuzz targets (tests/fuzz/net_auth_fuzz.c,
 * net_message_fuzz.c, net_stream_fuzz.c): replays their seed corpora (tests/fuzz/net_corpus/)
 * and a fixed set of mutations of every seed (bit flips, byte values, truncations, insertions,
 * repeats), so every test run covers what the fuzzer starts from, without a fuzzer. The
 * targets abort on a broken property; the sanitizer build catches memory errors and leaks.
 *
 * `net_fuzz_test --write-corpus DIR` regenerates the corpus (DIR/auth, DIR/message,
 * DIR/stream, DIR/secagg). Also the SecAgg+ parsers (tests/fuzz/secagg_fuzz.c). */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fedc/rng.h"

#define FEDC_FUZZ_ENTRY net_fuzz_auth
#include "fuzz/net_auth_fuzz.c"
#undef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY net_fuzz_message
#include "fuzz/net_message_fuzz.c"
#undef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY net_fuzz_stream
#include "fuzz/net_stream_fuzz.c"
#undef FEDC_FUZZ_ENTRY
#define FEDC_FUZZ_ENTRY net_fuzz_secagg
#include "fuzz/secagg_fuzz.c"
#undef FEDC_FUZZ_ENTRY

typedef int (*fuzz_fn)(const uint8_t *, size_t);

static const struct {
    const char *name;
    fuzz_fn fn;
    int mutations; /* per seed */
} targets[] = {
    {"auth", net_fuzz_auth, 3000},
    {"message", net_fuzz_message, 3000},
    {"stream", net_fuzz_stream, 3000},
    {"secagg", net_fuzz_secagg, 150}, /* each input runs a protocol round: fewer */
};

/* ---- the seeds ---- */

static void put(const char *dir, const char *name, const void *data, size_t n)
{
    char path[8192];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        fail_msg("path too long");
    tu_write_file(path, data, n);
}

static void write_auth(const char *dir)
{
    fedc_key *k;
    assert_int_equal(fedc_key_generate(&k, NULL), FEDC_OK);
    uint8_t h[FEDCI_HASH_BYTES];
    fedci_body_hash("", 0, h);
    fedci_auth a;
    fedci_auth_sign(k, "POST", "/v1/checkin", h, 1700000000000ull, &a);
    char txt[FEDCI_AUTH_MAX];
    fedci_auth_format(&a, txt, sizeof txt);
    put(dir, "valid", txt, strlen(txt));
    /* session mode: mac= instead of body= */
    fedci_auth am;
    fedci_auth_begin(k, 1700000000000ull, &am);
    memset(am.mac, 0xa5, sizeof am.mac);
    fedci_auth_finish_mac(k, "POST", "/v1/checkin", &am);
    char mtxt[FEDCI_AUTH_MAX];
    fedci_auth_format(&am, mtxt, sizeof mtxt);
    put(dir, "valid_mac", mtxt, strlen(mtxt));
    char alt[FEDCI_AUTH_MAX + 32];
    char *ts = strstr(txt, ", ts="), *key = strstr(txt, "key=");
    snprintf(alt, sizeof alt, "fedc-ed25519 %s,%.*s", ts + 2, (int)(ts - key), key);
    put(dir, "reordered", alt, strlen(alt));
    snprintf(alt, sizeof alt, "%s, ts=1", txt);
    put(dir, "duplicate", alt, strlen(alt));
    put(dir, "scheme_only", "FEDC-Ed25519 ", 13);
    fedc_key_destroy(k);
}

static void write_message(const char *dir)
{
    fedci_buf b = {0};
    char name[32];
    /* one populated message of each type, prefixed by its selector byte */
    Fedc__V1__ClientInfo info = FEDC__V1__CLIENT_INFO__INIT;
    char *caps[] = {"fit", "evaluate"};
    info.num_examples = 3136;
    info.n_capabilities = 2;
    info.capabilities = caps;
    info.software = "fedc/0.1.0";
    Fedc__V1__CheckinRequest cr = FEDC__V1__CHECKIN_REQUEST__INIT;
    cr.info = &info;
    cr.wait_ms = 30000;
    Fedc__V1__ModelRef ref = FEDC__V1__MODEL_REF__INIT;
    ref.version = 3;
    ref.sha256 = "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8";
    ref.num_params = 610;
    ref.size_bytes = 2500;
    Fedc__V1__TaskConfig__SettingsEntry e1 = FEDC__V1__TASK_CONFIG__SETTINGS_ENTRY__INIT;
    e1.key = "train.lr";
    e1.value = "0.05";
    Fedc__V1__TaskConfig__SettingsEntry *ep[] = {&e1};
    Fedc__V1__DpTask dp = FEDC__V1__DP_TASK__INIT;
    dp.clip = 1.5;
    dp.noise_stddev = 0.25;
    Fedc__V1__TaskConfig tc = FEDC__V1__TASK_CONFIG__INIT;
    tc.dp = &dp;
    tc.seed = 42;
    tc.lr = 0.1;
    tc.n_settings = 1;
    tc.settings = ep;
    Fedc__V1__Task task = FEDC__V1__TASK__INIT;
    task.task_id = "0123abcd-3-0-1";
    task.run_id = "0123abcd0123abcd0123abcd0123abcd";
    task.round = 3;
    task.stage = FEDC__V1__STAGE__STAGE_FIT;
    task.client_id = 1;
    task.model = &ref;
    task.config = &tc;
    task.deadline_ms = 600000;
    task.max_upload_bytes = 1 << 20;
    task.chunk_bytes = 1 << 20;
    Fedc__V1__CheckinResponse resp = FEDC__V1__CHECKIN_RESPONSE__INIT;
    resp.reply_case = FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK;
    resp.task = &task;
    Fedc__V1__RunInfo__SettingsEntry r1 = FEDC__V1__RUN_INFO__SETTINGS_ENTRY__INIT;
    r1.key = "model.spec";
    r1.value = "logreg";
    Fedc__V1__RunInfo__SettingsEntry *rp[] = {&r1};
    Fedc__V1__RunInfo ri = FEDC__V1__RUN_INFO__INIT;
    ri.run_id = task.run_id;
    ri.rounds = 10;
    ri.strategy = "fedavg";
    ri.num_params = 610;
    ri.n_settings = 1;
    ri.settings = rp;
    int64_t shape[2] = {10, 60};
    Fedc__V1__TensorInfo ti = FEDC__V1__TENSOR_INFO__INIT;
    ti.name = "0.weight";
    ti.n_shape = 2;
    ti.shape = shape;
    Fedc__V1__TensorInfo *tp[] = {&ti};
    Fedc__V1__ModelHeader mh = FEDC__V1__MODEL_HEADER__INIT;
    mh.model = &ref;
    mh.n_tensors = 1;
    mh.tensors = tp;
    mh.chunk_bytes = 4096;
    float vals[8] = {1, -2, 3.5f, 0, 1e-3f, 7, 8, 9};
    Fedc__V1__Chunk ch = FEDC__V1__CHUNK__INIT;
    ch.offset = 32;
    ch.data.len = sizeof vals;
    ch.data.data = (uint8_t *)vals;
    Fedc__V1__ResultHeader__MetricsEntry me = FEDC__V1__RESULT_HEADER__METRICS_ENTRY__INIT;
    me.key = "accuracy";
    me.value = 0.75;
    Fedc__V1__ResultHeader__MetricsEntry *mp[] = {&me};
    Fedc__V1__ResultHeader rh = FEDC__V1__RESULT_HEADER__INIT;
    rh.task_id = task.task_id;
    rh.round = 3;
    rh.stage = FEDC__V1__STAGE__STAGE_FIT;
    rh.num_params = 610;
    rh.num_examples = 3136;
    rh.train_loss = 0.5;
    rh.n_metrics = 1;
    rh.metrics = mp;
    Fedc__V1__DpReport drep = FEDC__V1__DP_REPORT__INIT;
    drep.unclipped = 1;
    rh.dp = &drep;
    Fedc__V1__ResultAck ack = FEDC__V1__RESULT_ACK__INIT;
    ack.accepted = 1;
    Fedc__V1__Error er = FEDC__V1__ERROR__INIT;
    er.message = "busy";
    er.retry_after_ms = 1000;
    uint8_t seed32[32] = {1, 2, 3}, pk[2][32] = {{4}, {5}}, sig[64] = {6}, nonce[16] = {7};
    ProtobufCBinaryData keys[2] = {{32, pk[0]}, {32, pk[1]}};
    Fedc__V1__KeySignature ks = FEDC__V1__KEY_SIGNATURE__INIT;
    ks.ts = 1700000000000ull;
    ks.nonce.data = nonce;
    ks.nonce.len = sizeof nonce;
    ks.signature.data = sig;
    ks.signature.len = sizeof sig;
    Fedc__V1__KeySignature *ksp[] = {&ks};
    Fedc__V1__SecAggMessage sam = FEDC__V1__SEC_AGG_MESSAGE__INIT;
    sam.stage = FEDC__V1__STAGE__STAGE_SECAGG_SHARE;
    sam.body.data = seed32;
    sam.body.len = sizeof seed32;
    sam.n_signatures = 1;
    sam.signatures = ksp;
    Fedc__V1__SecAggTask sat = FEDC__V1__SEC_AGG_TASK__INIT;
    sat.n = 2;
    sat.k = 1;
    sat.t = 1;
    sat.bits = 32;
    sat.len = 611;
    sat.seed.data = seed32;
    sat.seed.len = sizeof seed32;
    sat.secagg_id = 1;
    sat.clip = 1;
    sat.levels = 1000;
    sat.max_weight = 100;
    sat.n_client_keys = 2;
    sat.client_keys = keys;
    sat.secagg_round = 3;
    sat.stage_ms = 30000;
    const ProtobufCMessage *msgs[] = {&cr.base,  &resp.base, &ri.base,  &mh.base,
                                      &ch.base,  &rh.base,   &ack.base, &er.base,
                                      &sam.base, &sat.base,  &ks.base};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        b.len = 0;
        uint8_t sel = (uint8_t)i;
        assert_int_equal(fedci_buf_append(&b, &sel, 1, NULL), FEDC_OK);
        assert_int_equal(fedci_pack(msgs[i], &b, NULL), FEDC_OK);
        snprintf(name, sizeof name, "%s", msgs[i]->descriptor->short_name);
        put(dir, name, b.data, b.len);
    }
    /* other replies of the check-in */
    Fedc__V1__Retry rt = FEDC__V1__RETRY__INIT;
    rt.after_ms = 1000;
    rt.reason = "not selected";
    resp.reply_case = FEDC__V1__CHECKIN_RESPONSE__REPLY_RETRY;
    resp.retry = &rt;
    b.len = 0;
    uint8_t sel = 1;
    fedci_buf_append(&b, &sel, 1, NULL);
    fedci_pack(&resp.base, &b, NULL);
    put(dir, "CheckinResponse_retry", b.data, b.len);
    fedci_buf_fini(&b);
}

static void write_stream(const char *dir)
{
    float x[300];
    for (int i = 0; i < 300; i++) x[i] = (float)i * 0.5f - 3;
    fedci_buf b = {0};
    Fedc__V1__ModelRef ref = FEDC__V1__MODEL_REF__INIT;
    ref.version = 1;
    ref.sha256 = "abc";
    ref.num_params = 300;
    Fedc__V1__ModelHeader mh = FEDC__V1__MODEL_HEADER__INIT;
    mh.model = &ref;
    mh.chunk_bytes = 512;
    Fedc__V1__ResultHeader rh = FEDC__V1__RESULT_HEADER__INIT;
    rh.task_id = "t";
    rh.round = 1;
    rh.stage = FEDC__V1__STAGE__STAGE_FIT;
    rh.num_params = 300;
    rh.num_examples = 9;
    const struct {
        const char *name;
        uint8_t kind, piece;
        const ProtobufCMessage *h;
    } seeds[] = {
        {"model_whole", 0, 255, &mh.base}, {"model_bytes", 0, 0, &mh.base},
        {"model_7", 0, 6, &mh.base},       {"result_whole", 1, 255, &rh.base},
        {"result_13", 1, 12, &rh.base},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        b.len = 0;
        uint8_t pre[2] = {seeds[i].kind, seeds[i].piece};
        fedci_buf_append(&b, pre, 2, NULL);
        assert_int_equal(fedci_vstream_encode(seeds[i].h, x, 300, 512, &b, NULL), FEDC_OK);
        put(dir, seeds[i].name, b.data, b.len);
    }
    fedci_buf_fini(&b);
}

/* SecAgg+ seeds: for each selector of secagg_fuzz.c, a message that parses. */
static void write_secagg(const char *dir)
{
    fedci_buf b = {0};
    uint8_t pre[2];
    /* 0: POST bodies (keys; a masked input with its vector in two Chunks) */
    Fedc__V1__SecAggMessage m = FEDC__V1__SEC_AGG_MESSAGE__INIT;
    uint8_t hdr[16] = {'F', 'S', 'A', '1', 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0};
    m.stage = FEDC__V1__STAGE__STAGE_SECAGG_MASKED;
    m.body.data = hdr;
    m.body.len = sizeof hdr;
    pre[0] = 0;
    pre[1] = 1;
    fedci_buf_append(&b, pre, 2, NULL);
    assert_int_equal(fedci_frame_append(&m.base, &b, NULL), FEDC_OK);
    uint8_t v[4 * SAF_LEN] = {1, 0, 0, 0, 2, 0, 0, 0};
    for (int c = 0; c < 2; c++) {
        Fedc__V1__Chunk ch = FEDC__V1__CHUNK__INIT;
        ch.offset = (uint64_t)c * 12;
        ch.data.data = v + c * 12;
        ch.data.len = 12;
        assert_int_equal(fedci_frame_append(&ch.base, &b, NULL), FEDC_OK);
    }
    put(dir, "post_masked", b.data, b.len);
    /* 1..4 and 5..7: the honest messages of a round */
    saf_round r;
    assert_int_equal(saf_setup(&r, 1), 0);
    saf_free(&r);
    for (int stage = 1; stage <= 4; stage++) {
        /* what client 1 sends in `stage` (setup up to it, then client 1 answers) */
        assert_int_equal(saf_setup(&r, stage), 0);
        unsigned char *in = NULL, *out = NULL;
        size_t il = 0, ol = 0;
        uint32_t x[SAF_LEN] = {9, 8, 7, 6, 5, 4};
        if (stage == 1) {
            fedc_secagg_client_destroy(r.cl[1]);
            fedc_secagg_params p;
            saf_params(&p);
            assert_int_equal(fedc_secagg_client_create(&p, 1, &r.cl[1], NULL), FEDC_OK);
            assert_int_equal(fedc_secagg_client_advertise(r.cl[1], &out, &ol, NULL), FEDC_OK);
        } else {
            assert_int_equal(fedc_secagg_server_message(r.srv, 1, &in, &il, NULL), FEDC_OK);
            /* the server's message is also the seed of the client-side selector 3 + stage */
            b.len = 0;
            pre[0] = (uint8_t)(3 + stage);
            fedci_buf_append(&b, pre, 1, NULL);
            fedci_buf_append(&b, in, il, NULL);
            char name[32];
            snprintf(name, sizeof name, "client_stage%d", stage - 1);
            put(dir, name, b.data, b.len);
            fedc_status st =
                stage == 2   ? fedc_secagg_client_share(r.cl[1], in, il, &out, &ol, NULL)
                : stage == 3 ? fedc_secagg_client_masked(r.cl[1], in, il, x, &out, &ol, NULL)
                             : fedc_secagg_client_unmask(r.cl[1], in, il, &out, &ol, NULL);
            assert_int_equal(st, FEDC_OK);
        }
        b.len = 0;
        pre[0] = (uint8_t)stage;
        pre[1] = 1; /* from client 1 */
        fedci_buf_append(&b, pre, 2, NULL);
        fedci_buf_append(&b, out, ol, NULL);
        char name[32];
        snprintf(name, sizeof name, "server_stage%d", stage);
        put(dir, name, b.data, b.len);
        fedc_free(in);
        fedc_free(out);
        saf_free(&r);
    }
    fedci_buf_fini(&b);
}

/* ---- replay ---- */

typedef struct blob {
    uint8_t *data;
    size_t n;
} blob;

static size_t load_dir(const char *dir, blob *out, size_t max)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t k = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && k < max) {
        if (e->d_name[0] == '.') continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        out[k].data = (uint8_t *)tu_read_file(path, &out[k].n);
        if (out[k].data) k++;
    }
    closedir(d);
    return k;
}

static void mutate_and_run(fuzz_fn fn, const blob *seed, uint64_t stream, int count)
{
    fedc_rng rng;
    fedc_rng_init(&rng, 77, 0, (uint32_t)stream, FEDC_RNG_DATA);
    size_t cap = seed->n + 64;
    uint8_t *m = malloc(cap);
    for (int t = 0; t < count; t++) {
        size_t n = seed->n;
        memcpy(m, seed->data, n);
        int edits = 1 + (int)fedc_rng_below(&rng, 4);
        for (int e = 0; e < edits && n > 0; e++) {
            size_t at = (size_t)fedc_rng_below(&rng, n);
            switch (fedc_rng_below(&rng, 6)) {
            case 0: m[at] ^= (uint8_t)(1u << fedc_rng_below(&rng, 8)); break;
            case 1: m[at] = (uint8_t)fedc_rng_u32(&rng); break;
            case 2: m[at] = (uint8_t[]){0, 0x7f, 0x80, 0xff}[fedc_rng_below(&rng, 4)]; break;
            case 3: n = at; break; /* truncate */
            case 4:                /* insert a byte */
                if (n < cap) {
                    memmove(m + at + 1, m + at, n - at);
                    m[at] = (uint8_t)fedc_rng_u32(&rng);
                    n++;
                }
                break;
            default: { /* repeat a short run */
                size_t len = 1 + (size_t)fedc_rng_below(&rng, 8);
                if (at + len <= n && n + len <= cap) {
                    memmove(m + at + len, m + at, n - at);
                    n += len;
                }
            }
            }
        }
        fn(m, n);
    }
    free(m);
}

static void test_corpus(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/net_corpus/%s", tu_src_dir(), targets[t].name);
        blob seeds[64];
        size_t n = load_dir(dir, seeds, 64);
        if (n == 0) fail_msg("no seeds in %s (regenerate with net_fuzz_test --write-corpus)", dir);
        for (size_t i = 0; i < n; i++) {
            targets[t].fn(seeds[i].data, seeds[i].n);
            /* every truncation, then random edits */
            for (size_t cut = 0; cut < seeds[i].n && cut < 512;
                 cut += targets[t].mutations < 3000 ? 1 + seeds[i].n / 64 : 1)
                targets[t].fn(seeds[i].data, cut);
            mutate_and_run(targets[t].fn, &seeds[i], t * 100 + i, targets[t].mutations);
            free(seeds[i].data);
        }
    }
}

/* The seeds still decode as they did when written: the corpus is not stale. */
static void test_seeds_are_valid(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/net_corpus/message", tu_src_dir());
    blob seeds[64];
    size_t n = load_dir(dir, seeds, 64);
    assert_true(n >= 12);
    for (size_t i = 0; i < n; i++) {
        ProtobufCMessage *m = NULL;
        const ProtobufCMessageDescriptor *d =
            fuzz_message_types[seeds[i].data[0] %
                               (sizeof fuzz_message_types / sizeof fuzz_message_types[0])];
        assert_int_equal(fedci_unpack(d, seeds[i].data + 1, seeds[i].n - 1, "seed", &m, NULL),
                         FEDC_OK);
        fedci_unpacked_free(m);
        free(seeds[i].data);
    }
    /* the SecAgg seeds: the POST body parses; each server-stage message is taken */
    snprintf(dir, sizeof dir, "%s/tests/fuzz/net_corpus/secagg", tu_src_dir());
    n = load_dir(dir, seeds, 64);
    assert_true(n >= 8);
    int server_seeds = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d = seeds[i].data;
        if (d[0] == 0) {
            Fedc__V1__SecAggMessage *m = NULL;
            uint8_t *vec = NULL;
            assert_int_equal(fedci_secagg_parse_post(d + 2, seeds[i].n - 2, 4096, 16,
                                                     16 + 4 * SAF_LEN, &m, &vec, NULL),
                             FEDC_OK);
            assert_non_null(vec);
            fedci_unpacked_free(&m->base);
            fedc_free(vec);
        } else if (d[0] >= 1 && d[0] <= 4) {
            saf_round r;
            assert_int_equal(saf_setup(&r, d[0]), 0);
            assert_int_equal(fedc_secagg_server_recv(r.srv, d[1] % SAF_N, d + 2, seeds[i].n - 2,
                                                     NULL),
                             FEDC_OK);
            saf_free(&r);
            server_seeds++;
        }
        free(seeds[i].data);
    }
    assert_int_equal(server_seeds, 4);
    snprintf(dir, sizeof dir, "%s/tests/fuzz/net_corpus/auth/valid", tu_src_dir());
    size_t len;
    char *txt = tu_read_file(dir, &len);
    assert_non_null(txt);
    fedci_auth a;
    assert_int_equal(fedci_auth_parse(txt, len, &a, NULL), FEDC_OK);
    assert_int_equal(fedci_auth_verify(&a, "POST", "/v1/checkin"), 0);
    free(txt);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) {
        char d[8192];
        const char *sub[] = {"auth", "message", "stream", "secagg"};
        for (int i = 0; i < 4; i++) {
            snprintf(d, sizeof d, "%s/%s", argv[2], sub[i]);
            mkdir(argv[2], 0755);
            mkdir(d, 0755);
            if (i == 0) write_auth(d);
            if (i == 1) write_message(d);
            if (i == 2) write_stream(d);
            if (i == 3) write_secagg(d);
        }
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_seeds_are_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
