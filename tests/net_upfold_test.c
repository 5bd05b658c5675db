/*
 * Early folds (server.fold_early, src/net/server_http.c) against a real `fedc server` process
 * on loopback: a float32 result is folded into the round's exact sums chunk by chunk as it
 * arrives, before its MAC or hash is checked and before it is whole. Results refused after
 * some of their chunks were folded -- a body altered after its MAC (401), NaN in the last chunk
 * (422), a body cut inside a chunk (400), a chunk past the end of the vector (422), a chunked
 * body over the upload limit (413), a result still arriving when its round closes (409) --
 * must leave the aggregate bit-identical: afterwards four honest `fedc client` processes (whose
 * results are themselves folded early, concurrently) run the federation to the end and its
 * model must be
 * the one `fedc sim` computes. The server's counters must show every one of those results
 * folded early and taken out again, and the honest ones accepted that way (so that this test
 * fails if the early fold is not there, or not exercised).
 *
 * Each hostile result is sent in two parts over a raw socket, with a pause between them, so
 * that its first chunks are in the server's sums before the rest arrives.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fedc/fedc.h"
#include "fedc/net.h"
#include "net/sign.h"
#include "net/wire.h"

#include "nettest.h"

#define CHUNK_FLOATS 1024 /* server.chunk_bytes = 4096: one accumulator block per chunk */

static char *dir;
static const char *fedc_bin;
static pid_t server_pid = -1;
static FILE *server_out;
#define NCLIENTS 4
static fedc_key *keys[NCLIENTS], *key_a; /* key_a = keys[0] sends the hostile results */
static char cfg_path[4096];
static size_t num_params;
static char task_id[96];
static uint32_t task_round;
static uint8_t session_a[FEDCI_SESSION_BYTES];
static int undone_expected; /* hostile results folded in part, then refused */

/* ---- a client that sends its request in parts ---- */

/* Connects and sends the request line and headers (extra: more header lines, each ending in
 * CRLF). Returns the socket. */
static int part_open(const char *path, const char *auth, const char *extra)
{
    int fd = nt_connect();
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Authorization: %s\r\nContent-Type: application/x-protobuf\r\n%s\r\n",
                     path, auth, extra);
    assert_int_equal(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
    return fd;
}

static void part_send(int fd, const void *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, (const char *)p + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may answer and close before reading it all */
        off += (size_t)w;
    }
}

/* Reads the answer until the server closes; returns its status. */
static int part_finish(int fd)
{
    char buf[4096];
    size_t n = 0;
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 20000) <= 0) break;
        ssize_t rd = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (rd <= 0) break;
        n += (size_t)rd;
        if (n == sizeof buf - 1) break;
    }
    close(fd);
    buf[n] = '\0';
    return n >= 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : 0;
}

/* Sends body (len bytes, Content-Length) in two parts: the first `first` bytes, a pause in
 * which the server folds the chunks they complete, then the rest. Returns the status. */
static int post_in_two(const char *path, const char *auth, const uint8_t *body, size_t len,
                       size_t first)
{
    char extra[64];
    snprintf(extra, sizeof extra, "Content-Length: %zu\r\n", len);
    int fd = part_open(path, auth, extra);
    part_send(fd, body, first);
    usleep(300000);
    part_send(fd, body + first, len - first);
    return part_finish(fd);
}

/* ---- messages ---- */

static void pack_checkin(fedci_buf *b)
{
    Fedc__V1__CheckinRequest rq = FEDC__V1__CHECKIN_REQUEST__INIT;
    Fedc__V1__ClientInfo info = FEDC__V1__CLIENT_INFO__INIT;
    info.software = "upfold-test";
    info.num_examples = 7;
    rq.info = &info;
    rq.wait_ms = 20000;
    b->len = 0;
    assert_int_equal(fedci_pack(&rq.base, b, NULL), FEDC_OK);
}

/* The result stream of task_id: header (num_params) + nfloats values of x, 4096-byte chunks. */
static void pack_result(fedci_buf *b, const float *x, size_t nfloats)
{
    Fedc__V1__ResultHeader h = FEDC__V1__RESULT_HEADER__INIT;
    h.task_id = task_id;
    h.round = task_round;
    h.stage = FEDC__V1__STAGE__STAGE_FIT;
    h.num_params = num_params;
    h.num_examples = 100;
    h.train_loss = 0.5;
    h.loss_before = NAN;
    b->len = 0;
    assert_int_equal(fedci_vstream_encode(&h.base, x, nfloats, CHUNK_FLOATS * 4, b, NULL),
                     FEDC_OK);
}

/* Where the chunk holding float i starts in a stream packed by pack_result. */
static size_t chunk_start(const fedci_buf *b, size_t i)
{
    size_t off = 0, frame = 0, target = i / CHUNK_FLOATS + 1; /* frame 0 is the header */
    while (frame < target) {
        uint64_t len = 0;
        int shift = 0;
        while (b->data[off] & 0x80) {
            len |= (uint64_t)(b->data[off++] & 0x7f) << shift;
            shift += 7;
        }
        len |= (uint64_t)b->data[off++] << shift;
        off += len;
        frame++;
    }
    return off;
}

/* A plausible update: small values of both signs. */
static float *update_values(size_t n)
{
    float *x = malloc((n + 2 * CHUNK_FLOATS) * sizeof(float));
    for (size_t i = 0; i < n + 2 * CHUNK_FLOATS; i++)
        x[i] = (float)((int)(i % 13) - 6) * 1e-3f;
    return x;
}

/* The value of a /metrics counter line (its full name with labels), or -1. */
static long metric(const char *name)
{
    nt_resp r;
    nt_request("GET", "/metrics", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    const char *p = strstr(r.body, name);
    long v = p ? strtol(p + strlen(name), NULL, 10) : -1;
    nt_resp_free(&r);
    return v;
}

/* ---- the server process ---- */

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    fedc_bin = getenv("FEDC");
    if (!fedc_bin) {
        fprintf(stderr, "FEDC must name the fedc binary\n");
        return -1;
    }
    dir = tu_tempdir("upfold");
    char path[4096];
    if (nt_keys(dir, NCLIENTS, keys, NCLIENTS, NULL, path, sizeof path) != 0) return -1;
    key_a = keys[0];
    snprintf(cfg_path, sizeof cfg_path, "%s/run.ini", dir);
    const char *ini =
        "[run]\nseed = 5\nrounds = 2\n[clients]\ncount = 4\nper_round = 4\nmin = 4\n"
        "[data]\ndataset = synthetic-iid\n[model]\nspec = dense(64) relu dense(10)\n"
        "[train]\nepochs = 1\nlr = 0.1\n[eval]\nevery = 1\n"
        "[round]\ndeadline = 120\n[server]\nthreads = 2\nlinger = 4\nchunk_bytes = 4096\n"
        "[client]\nretry_initial = 0.05\nretry_max = 0.2\n";
    tu_write_file(cfg_path, ini, strlen(ini));
    if (nt_server_start(fedc_bin, dir, cfg_path, path, &server_pid, &server_out) != 0) return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    nt_server_stop(&server_pid, &server_out);
    for (int i = 0; i < NCLIENTS; i++) fedc_key_destroy(keys[i]);
    tu_rmtree(dir);
    free(dir);
    return 0;
}

/* ---- the tests, in order ---- */

static void test_task(void **state)
{
    (void)state;
    fedci_buf body = {0};
    pack_checkin(&body);
    nt_resp r;
    nt_signed_request(key_a, "POST", "/v1/checkin", body.data, body.len, &r);
    assert_int_equal(r.status, 200);
    ProtobufCMessage *m;
    assert_int_equal(fedci_unpack(&fedc__v1__checkin_response__descriptor, (uint8_t *)r.body, r.len,
                                  "answer", &m, NULL),
                     FEDC_OK);
    Fedc__V1__CheckinResponse *cr = (Fedc__V1__CheckinResponse *)m;
    assert_int_equal(cr->reply_case, FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK);
    snprintf(task_id, sizeof task_id, "%s", cr->task->task_id);
    task_round = cr->task->round;
    num_params = cr->task->model->num_params;
    assert_int_equal(cr->task->chunk_bytes, CHUNK_FLOATS * 4);
    fedci_unpacked_free(m);
    nt_resp_free(&r);
    fedci_buf_fini(&body);
    assert_int_equal(num_params, 4554); /* 60 * 64 + 64 + 64 * 10 + 10: five blocks */

    nt_signed_request(key_a, "GET", "/v1/run", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(fedci_unpack(&fedc__v1__run_info__descriptor, (uint8_t *)r.body, r.len, "run",
                                  &m, NULL),
                     FEDC_OK);
    Fedc__V1__RunInfo *ri = (Fedc__V1__RunInfo *)m;
    assert_int_equal(fedci_session_client(key_a, ri->session_key.data, session_a, NULL), FEDC_OK);
    fedci_unpacked_free(m);
    nt_resp_free(&r);
    assert_int_equal(metric("fedc_early_folds_total{outcome=\"undone\"} "), 0);
}

static void test_refused_after_folding(void **state)
{
    (void)state;
    float *x = update_values(num_params);
    fedci_buf b = {0};
    char path[256], auth[FEDCI_AUTH_MAX];
    snprintf(path, sizeof path, "/v1/tasks/%s/result", task_id);
    size_t half = 0;

    /* a body altered after its MAC, in its last chunk: 401 once it has all arrived */
    pack_result(&b, x, num_params);
    nt_sign_mac(key_a, session_a, "POST", path, b.data, b.len, auth);
    b.data[b.len - 2] ^= 0x40;
    half = chunk_start(&b, 3 * CHUNK_FLOATS);
    assert_int_equal(post_in_two(path, auth, b.data, b.len, half), 401);
    undone_expected++;

    /* NaN in the last chunk: 422, and the log names the value */
    x[num_params - 1] = NAN;
    pack_result(&b, x, num_params);
    x[num_params - 1] = 1e-3f;
    nt_sign(key_a, "POST", path, b.data, b.len, 0, auth);
    assert_int_equal(post_in_two(path, auth, b.data, b.len, chunk_start(&b, 3 * CHUNK_FLOATS)),
                     422);
    undone_expected++;

    /* cut inside the fifth chunk (a whole body of that length, signed as such): 400 */
    pack_result(&b, x, num_params);
    size_t cut = chunk_start(&b, 4 * CHUNK_FLOATS) + 100;
    nt_sign(key_a, "POST", path, b.data, cut, 0, auth);
    assert_int_equal(post_in_two(path, auth, b.data, cut, chunk_start(&b, 3 * CHUNK_FLOATS)), 400);
    undone_expected++;

    /* a chunk past the end of the vector: 422 as it arrives */
    pack_result(&b, x, num_params + CHUNK_FLOATS); /* header still says num_params */
    nt_sign(key_a, "POST", path, b.data, b.len, 0, auth);
    assert_int_equal(post_in_two(path, auth, b.data, b.len, chunk_start(&b, 3 * CHUNK_FLOATS)),
                     422);
    undone_expected++;

    /* after three chunks, one over chunk_bytes (twice the size): 413 as it arrives */
    pack_result(&b, x, num_params);
    b.len = chunk_start(&b, 3 * CHUNK_FLOATS);
    Fedc__V1__Chunk big = FEDC__V1__CHUNK__INIT;
    big.offset = 3 * CHUNK_FLOATS * 4;
    big.data.data = (uint8_t *)(x + 3 * CHUNK_FLOATS);
    big.data.len = 2 * CHUNK_FLOATS * 4;
    assert_int_equal(fedci_frame_append(&big.base, &b, NULL), FEDC_OK);
    nt_sign(key_a, "POST", path, b.data, b.len, 0, auth);
    assert_int_equal(post_in_two(path, auth, b.data, b.len, chunk_start(&b, 3 * CHUNK_FLOATS)),
                     413);
    undone_expected++;

    /* nothing of these is in the round: nothing accepted, each folded in part and taken out */
    nt_assert_serving();
    nt_resp r;
    nt_request("GET", "/v1/status", NULL, 0, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "\"accepted\":0"));
    nt_resp_free(&r);
    assert_int_equal(metric("fedc_early_folds_total{outcome=\"undone\"} "), undone_expected);
    assert_int_equal(metric("fedc_early_folds_total{outcome=\"accepted\"} "), 0);
    char errf[4096];
    snprintf(errf, sizeof errf, "%s/server.err", dir);
    size_t n;
    char *log = tu_read_file(errf, &n);
    char want[64];
    snprintf(want, sizeof want, "update value %zu is NaN", num_params - 1);
    assert_non_null(strstr(log, want));
    free(log);
    free(x);
    fedci_buf_fini(&b);
}

static void test_honest_run_is_exact(void **state)
{
    (void)state;
    /* a result of round 1 still arriving when the round closes: its folded chunks come out
     * when it closes, and it is refused as late when it ends */
    float *x = update_values(num_params);
    fedci_buf b = {0};
    char path[256], auth[FEDCI_AUTH_MAX], extra[64];
    snprintf(path, sizeof path, "/v1/tasks/%s/result", task_id);
    pack_result(&b, x, num_params);
    nt_sign(key_a, "POST", path, b.data, b.len, 0, auth);
    snprintf(extra, sizeof extra, "Content-Length: %zu\r\n", b.len);
    int late = part_open(path, auth, extra);
    size_t half = chunk_start(&b, 3 * CHUNK_FLOATS);
    part_send(late, b.data, half);
    usleep(300000);

    pid_t cl[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) cl[i] = nt_spawn_client(dir, i, cfg_path);
    char line[4096], last[4096] = "";
    int round1 = 0;
    long undone = -1, early = -1;
    while (fgets(line, sizeof line, server_out)) {
        if (!round1 && strstr(line, "\"round\":1,")) {
            round1 = 1;
            part_send(late, b.data + half, b.len - half);
            assert_int_equal(part_finish(late), 409);
            undone_expected++;
        }
        if (strstr(line, "\"round\":2,")) {
            snprintf(last, sizeof last, "%s", line);
            /* the counters, while the server lingers */
            undone = metric("fedc_early_folds_total{outcome=\"undone\"} ");
            early = metric("fedc_early_folds_total{outcome=\"accepted\"} ");
            break;
        }
    }
    assert_true(round1);
    assert_true(last[0] != '\0');
    assert_non_null(strstr(last, "\"participants\":4"));
    assert_int_equal(undone, undone_expected);
    assert_int_equal(early, 2 * NCLIENTS); /* every honest result, folded as it came */
    char fed[65], sim[65];
    nt_last_sha(last, fed);
    int st;
    for (int i = 0; i < NCLIENTS; i++) {
        waitpid(cl[i], &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    waitpid(server_pid, &st, 0);
    server_pid = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    nt_sim_sha("", cfg_path, sim);
    assert_string_equal(fed, sim);
    free(x);
    fedci_buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task),
        cmocka_unit_test(test_refused_after_folding),
        cmocka_unit_test(test_honest_run_is_exact),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
