/*
 * Hostile input against a real `fedc server` process on loopback (issue 6): unsigned, badly
 * signed, replayed, stale and unknown-key requests, bodies that do not match their signed
 * hash, oversized, truncated and garbage protobuf, results for the wrong round, of the wrong
 * size, with NaN, for another client's task, and late; in session mode (body MACs), bodies
 * that do not match their MAC, stale or borrowed session keys; encoded results (the server
 * has compress.upload = q8) that are corrupt, of another codec or size. Each is refused with
 * its status; the server keeps serving; and the aggregate is untouched: afterwards two honest `fedc client`
 * processes run the federation to the end and its model is bit-identical to `fedc sim`'s.
 *
 * The test speaks HTTP itself over a plain socket so that it can send exactly the bytes it
 * wants; it signs with the library's request signing (src/net/sign.h) and builds messages with
 * the generated protobuf code (src/net/wire.h).
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fedc/fedc.h"
#include "fedc/net.h"
#include "net/sign.h"
#include "net/wire.h"

static char *dir;
static const char *fedc_bin;
static pid_t server_pid = -1;
static FILE *server_out;
static int port;
static fedc_key *key_a, *key_b, *key_c; /* a, b allowed (ids 0, 1); c not */
static char cfg_path[4096];
static size_t num_params;
static char task_id[96];
static char task_encoding[64]; /* the task's upload_encoding: compress.upload, canonical */
static uint32_t task_round;
static uint64_t model_version;

/* ---- a minimal HTTP/1.1 client over a socket ---- */

static const char *find(const void *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp((const char *)hay + i, needle, m) == 0) return (const char *)hay + i;
    return NULL;
}

typedef struct resp {
    int status;
    char *body; /* malloc'd */
    size_t len;
} resp;

static void resp_free(resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Sends raw request bytes, reads the answer until the server closes. */
static void exchange(const void *req, size_t len, resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *p = req;
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, p + off, len - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may answer and close before reading it all */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 20000) <= 0) break;
        if (n == cap) buf = realloc(buf, cap *= 2);
        ssize_t rd = recv(fd, buf + n, cap - n, 0);
        if (rd <= 0) break;
        n += (size_t)rd;
    }
    close(fd);
    if (n >= 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0) r->status = atoi(buf + 9);
    const char *hdr_end = find(buf, n, "\r\n\r\n");
    if (hdr_end) {
        size_t start = (size_t)(hdr_end + 4 - buf);
        r->len = n - start;
        r->body = malloc(r->len + 1);
        memcpy(r->body, buf + start, r->len);
        r->body[r->len] = '\0';
    }
    free(buf);
}

/* A request with an optional Authorization value, body and extra header lines. */
static void request(const char *method, const char *path, const void *body, size_t len,
                    const char *auth, const char *extra, resp *r)
{
    size_t cap = len + 2048;
    char *req = malloc(cap);
    int h = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method,
                     path);
    if (auth) h += snprintf(req + h, cap - (size_t)h, "Authorization: %s\r\n", auth);
    if (body)
        h += snprintf(req + h, cap - (size_t)h,
                      "Content-Type: application/x-protobuf\r\nContent-Length: %zu\r\n", len);
    if (extra) h += snprintf(req + h, cap - (size_t)h, "%s", extra);
    h += snprintf(req + h, cap - (size_t)h, "\r\n");
    if (body && len) memcpy(req + h, body, len);
    exchange(req, (size_t)h + (body ? len : 0), r);
    free(req);
}

/* The Authorization value for (method, path, body) signed by k at ts_ms (0 = now). */
static void sign(const fedc_key *k, const char *method, const char *path, const void *body,
                 size_t len, uint64_t ts_ms, char out[FEDCI_AUTH_MAX])
{
    uint8_t h[FEDCI_HASH_BYTES];
    fedci_body_hash(body ? body : "", body ? len : 0, h);
    fedci_auth a;
    fedci_auth_sign(k, method, path, h, ts_ms ? ts_ms : fedci_now_ms(), &a);
    fedci_auth_format(&a, out, FEDCI_AUTH_MAX);
}

static void signed_request(const fedc_key *k, const char *method, const char *path,
                           const void *body, size_t len, resp *r)
{
    char auth[FEDCI_AUTH_MAX];
    sign(k, method, path, body, len, 0, auth);
    request(method, path, body, len, auth, NULL, r);
}

static void pack_checkin(fedci_buf *b, uint32_t wait_ms)
{
    Fedc__V1__CheckinRequest rq = FEDC__V1__CHECKIN_REQUEST__INIT;
    Fedc__V1__ClientInfo info = FEDC__V1__CLIENT_INFO__INIT;
    info.software = "hostile-test";
    info.num_examples = 7;
    rq.info = &info;
    rq.wait_ms = wait_ms;
    b->len = 0;
    assert_int_equal(fedci_pack(&rq.base, b, NULL), FEDC_OK);
}

/* A result stream for task `tid`: header (num_params as given) + nfloats values. */
static void pack_result(fedci_buf *b, const char *tid, uint32_t round, uint64_t header_params,
                        const float *x, size_t nfloats)
{
    Fedc__V1__ResultHeader h = FEDC__V1__RESULT_HEADER__INIT;
    h.task_id = (char *)tid;
    h.round = round;
    h.stage = FEDC__V1__STAGE__STAGE_FIT;
    h.num_params = header_params;
    h.num_examples = 100;
    h.train_loss = 0.5;
    h.loss_before = NAN;
    b->len = 0;
    assert_int_equal(fedci_vstream_encode(&h.base, x, nfloats, 4096, b, NULL), FEDC_OK);
}

/* ---- the server process ---- */

static void write_text(const char *path, const char *text)
{
    tu_write_file(path, text, strlen(text));
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    fedc_bin = getenv("FEDC");
    if (!fedc_bin) {
        fprintf(stderr, "FEDC must name the fedc binary\n");
        return -1;
    }
    dir = tu_tempdir("hostile");
    char path[4096], allow[512];
    fedc_err err;
    fedc_key **keys[3] = {&key_a, &key_b, &key_c};
    allow[0] = '\0';
    for (int i = 0; i < 3; i++) {
        if (fedc_key_generate(keys[i], &err) != FEDC_OK) return -1;
        snprintf(path, sizeof path, "%s/k%d.key", dir, i);
        if (fedc_key_write(*keys[i], path, &err) != FEDC_OK) return -1;
        char hex[FEDC_KEY_PUBLIC_HEX];
        fedc_key_public_hex(*keys[i], hex);
        if (i < 2) {
            strcat(allow, hex);
            strcat(allow, i == 0 ? " alice\n" : " bob\n");
        }
    }
    snprintf(path, sizeof path, "%s/allow.txt", dir);
    write_text(path, allow);
    snprintf(cfg_path, sizeof cfg_path, "%s/run.ini", dir);
    write_text(cfg_path,
               "[run]\nseed = 9\nrounds = 2\n[clients]\ncount = 2\nper_round = 2\nmin = 2\n"
               "[data]\ndataset = synthetic-iid\n[model]\nspec = logreg\n"
               "[train]\nepochs = 1\nlr = 0.5\n[eval]\nevery = 1\n"
               "[round]\ndeadline = 120\n[server]\nmax_message = 4096\nlinger = 4\n"
               "chunk_bytes = 4096\n[client]\nretry_initial = 0.05\nretry_max = 0.2\n"
               "[compress]\nupload = q8\n");
    int fds[2];
    if (pipe(fds) != 0) return -1;
    char state_dir[4096], errf[4096];
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(errf, sizeof errf, "%s/server.err", dir);
    server_pid = fork();
    if (server_pid == 0) {
        dup2(fds[1], 1);
        int e = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (e >= 0) dup2(e, 2);
        close(fds[0]);
        execl(fedc_bin, "fedc", "server", cfg_path, "--listen", "127.0.0.1:0", "--state", state_dir,
              "--allow-file", path, "--json", NULL);
        _exit(127);
    }
    close(fds[1]);
    server_out = fdopen(fds[0], "r");
    char line[1024];
    struct pollfd pf = {fds[0], POLLIN, 0};
    while (poll(&pf, 1, 20000) > 0 && fgets(line, sizeof line, server_out)) {
        char *p = strstr(line, "\"port\":");
        if (p) {
            port = atoi(p + 7);
            break;
        }
    }
    if (port <= 0) {
        fprintf(stderr, "the server did not start (see %s)\n", errf);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
    }
    if (server_out) fclose(server_out);
    fedc_key_destroy(key_a);
    fedc_key_destroy(key_b);
    fedc_key_destroy(key_c);
    tu_rmtree(dir);
    free(dir);
    return 0;
}

static void assert_serving(void)
{
    resp r;
    request("GET", "/v1/status", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"run_id\""));
    resp_free(&r);
}

/* ---- the tests, in order ---- */

static void test_status_is_open(void **state)
{
    (void)state;
    assert_serving();
    resp r;
    request("GET", "/metrics", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "fedc_rounds_target 2"));
    resp_free(&r);
    request("GET", "/v1/nothing", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

static void test_authentication(void **state)
{
    (void)state;
    fedci_buf body = {0};
    pack_checkin(&body, 0);
    resp r;
    char auth[FEDCI_AUTH_MAX];

    /* unsigned */
    request("POST", "/v1/checkin", body.data, body.len, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(find(r.body, r.len, "unauthorized")); /* terse */
    assert_null(find(r.body, r.len, "signature"));
    resp_free(&r);
    request("GET", "/v1/models/0", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* garbage header */
    request("POST", "/v1/checkin", body.data, body.len, "FEDC-Ed25519 key=zz, ts=1", NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* badly signed: one hex digit of the signature changed */
    sign(key_a, "POST", "/v1/checkin", body.data, body.len, 0, auth);
    char *sig = strstr(auth, "sig=") + 4;
    sig[10] = sig[10] == '0' ? '1' : '0';
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* signed for another path */
    sign(key_a, "POST", "/v1/run", body.data, body.len, 0, auth);
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* unknown key, properly signed */
    signed_request(key_c, "POST", "/v1/checkin", body.data, body.len, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* stale: an hour old; and from the future */
    sign(key_a, "POST", "/v1/checkin", body.data, body.len, fedci_now_ms() - 3600 * 1000, auth);
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    sign(key_a, "POST", "/v1/checkin", body.data, body.len, fedci_now_ms() + 3600 * 1000, auth);
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* replayed: the same signed request twice */
    sign(key_a, "GET", "/v1/run", NULL, 0, 0, auth);
    request("GET", "/v1/run", NULL, 0, auth, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    request("GET", "/v1/run", NULL, 0, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* a body other than the one signed */
    sign(key_a, "POST", "/v1/checkin", body.data, body.len, 0, auth);
    uint8_t other[8] = {0x10, 0x05};
    request("POST", "/v1/checkin", other, 2, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    fedci_buf_fini(&body);
    assert_serving();
}

static void test_bad_messages(void **state)
{
    (void)state;
    resp r;
    /* garbage protobuf, signed */
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    signed_request(key_a, "POST", "/v1/checkin", garbage, sizeof garbage, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    /* a valid check-in cut short by one byte, signed as cut */
    fedci_buf body = {0};
    pack_checkin(&body, 0);
    signed_request(key_a, "POST", "/v1/checkin", body.data, body.len - 1, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    /* oversized: more than server.max_message = 4096 bytes, announced */
    char auth[FEDCI_AUTH_MAX];
    sign(key_a, "POST", "/v1/checkin", NULL, 0, 0, auth);
    request("POST", "/v1/checkin", NULL, 0, auth, "Content-Length: 100000000\r\n", &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    /* oversized, sent */
    size_t big = 8192;
    uint8_t *blob = calloc(big, 1);
    signed_request(key_a, "POST", "/v1/checkin", blob, big, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    free(blob);
    fedci_buf_fini(&body);
    assert_serving();
}

static void test_task_and_model(void **state)
{
    (void)state;
    fedci_buf body = {0};
    pack_checkin(&body, 20000);
    resp r;
    signed_request(key_a, "POST", "/v1/checkin", body.data, body.len, &r);
    assert_int_equal(r.status, 200);
    ProtobufCMessage *m;
    assert_int_equal(fedci_unpack(&fedc__v1__checkin_response__descriptor, (uint8_t *)r.body, r.len,
                                  "answer", &m, NULL),
                     FEDC_OK);
    Fedc__V1__CheckinResponse *cr = (Fedc__V1__CheckinResponse *)m;
    assert_int_equal(cr->reply_case, FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK);
    assert_int_equal(cr->task->round, 1);
    assert_int_equal(cr->task->client_id, 0); /* the first key allowed */
    snprintf(task_id, sizeof task_id, "%s", cr->task->task_id);
    snprintf(task_encoding, sizeof task_encoding, "%s", cr->task->upload_encoding);
    assert_true(strncmp(task_encoding, "q8", 2) == 0);
    task_round = cr->task->round;
    num_params = cr->task->model->num_params;
    model_version = cr->task->model->version;
    char sha[65];
    snprintf(sha, sizeof sha, "%s", cr->task->model->sha256);
    fedci_unpacked_free(m);
    resp_free(&r);
    assert_int_equal(num_params, 610); /* logreg on 60 features, 10 classes */

    /* the model: a stream that decodes to parameters with the announced hash */
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%llu", (unsigned long long)model_version);
    signed_request(key_a, "GET", path, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    float *params = malloc(num_params * sizeof(float));
    /* decode it by hand, as another implementation would: frames of header, then chunks */
    size_t off = 0;
    int frames = 0;
    size_t filled = 0;
    while (off < r.len) {
        uint64_t len = 0;
        int shift = 0;
        while (r.body[off] & 0x80) {
            len |= (uint64_t)(r.body[off++] & 0x7f) << shift;
            shift += 7;
        }
        len |= (uint64_t)(uint8_t)r.body[off++] << shift;
        if (frames == 0) {
            assert_int_equal(fedci_unpack(&fedc__v1__model_header__descriptor,
                                          (uint8_t *)r.body + off, len, "header", &m, NULL),
                             FEDC_OK);
            Fedc__V1__ModelHeader *h = (Fedc__V1__ModelHeader *)m;
            assert_string_equal(h->model->sha256, sha);
            assert_int_equal(h->n_tensors, 2);
            fedci_unpacked_free(m);
        } else {
            assert_int_equal(fedci_unpack(&fedc__v1__chunk__descriptor, (uint8_t *)r.body + off,
                                          len, "chunk", &m, NULL),
                             FEDC_OK);
            Fedc__V1__Chunk *c = (Fedc__V1__Chunk *)m;
            assert_int_equal(c->offset, filled * 4);
            memcpy(params + filled, c->data.data, c->data.len);
            filled += c->data.len / 4;
            fedci_unpacked_free(m);
        }
        off += len;
        frames++;
    }
    assert_int_equal(filled, num_params);
    char got[65];
    fedc_vec_sha256_hex(num_params, params, got);
    assert_string_equal(got, sha);
    free(params);
    resp_free(&r);
    /* the same version again with its ETag: 304 */
    char etag[96];
    snprintf(etag, sizeof etag, "If-None-Match: \"%s\"\r\n", sha);
    char auth[FEDCI_AUTH_MAX];
    sign(key_a, "GET", path, NULL, 0, 0, auth);
    request("GET", path, NULL, 0, auth, etag, &r);
    assert_int_equal(r.status, 304);
    resp_free(&r);
    /* a version that is not served */
    signed_request(key_a, "GET", "/v1/models/77", NULL, 0, &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);
    fedci_buf_fini(&body);
}

static void test_bad_results(void **state)
{
    (void)state;
    float *x = calloc(num_params + 8, sizeof(float));
    fedci_buf b = {0};
    resp r;
    char path[256], other[128];
    snprintf(path, sizeof path, "/v1/tasks/%s/result", task_id);

    /* wrong round: a task id of round 2 (not open) */
    snprintf(other, sizeof other, "%s", task_id);
    char *dash = strchr(other, '-');
    snprintf(dash, sizeof other - (size_t)(dash - other), "-2-0-0");
    char opath[256];
    snprintf(opath, sizeof opath, "/v1/tasks/%s/result", other);
    pack_result(&b, other, 2, num_params, x, num_params);
    signed_request(key_a, "POST", opath, b.data, b.len, &r);
    assert_int_equal(r.status, 409);
    resp_free(&r);
    /* the right task, but the header says another round */
    pack_result(&b, task_id, task_round + 1, num_params, x, num_params);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 409);
    resp_free(&r);
    /* another client's task (b's), signed by a */
    snprintf(dash, sizeof other - (size_t)(dash - other), "-1-0-1");
    snprintf(opath, sizeof opath, "/v1/tasks/%s/result", other);
    pack_result(&b, other, 1, num_params, x, num_params);
    signed_request(key_a, "POST", opath, b.data, b.len, &r);
    assert_int_equal(r.status, 409);
    resp_free(&r);
    /* wrong size: one float too many, announced and sent */
    pack_result(&b, task_id, task_round, num_params + 1, x, num_params + 1);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* wrong size: the header is right but the stream ends 1 float short */
    pack_result(&b, task_id, task_round, num_params, x, num_params);
    fedci_buf shorter = {0};
    {
        /* re-encode with the last chunk one float shorter */
        Fedc__V1__ResultHeader hh = FEDC__V1__RESULT_HEADER__INIT;
        hh.task_id = task_id;
        hh.round = task_round;
        hh.stage = FEDC__V1__STAGE__STAGE_FIT;
        hh.num_params = num_params;
        hh.num_examples = 100;
        assert_int_equal(fedci_vstream_encode(&hh.base, x, num_params - 1, 4096, &shorter, NULL),
                         FEDC_OK);
    }
    signed_request(key_a, "POST", path, shorter.data, shorter.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* truncated stream: cut inside a chunk */
    signed_request(key_a, "POST", path, b.data, b.len - 7, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    /* garbage body */
    static const uint8_t garbage[] = {0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
    signed_request(key_a, "POST", path, garbage, sizeof garbage, &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);
    /* NaN in the update */
    x[123] = NAN;
    pack_result(&b, task_id, task_round, num_params, x, num_params);
    char auth[FEDCI_AUTH_MAX];
    sign(key_a, "POST", path, b.data, b.len, 0, auth);
    request("POST", path, b.data, b.len, auth, NULL, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* ... replayed */
    request("POST", path, b.data, b.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* infinite */
    x[123] = INFINITY;
    pack_result(&b, task_id, task_round, num_params, x, num_params);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    x[123] = 0;
    /* num_examples 0 */
    {
        Fedc__V1__ResultHeader hh = FEDC__V1__RESULT_HEADER__INIT;
        hh.task_id = task_id;
        hh.round = task_round;
        hh.stage = FEDC__V1__STAGE__STAGE_FIT;
        hh.num_params = num_params;
        hh.num_examples = 0;
        b.len = 0;
        assert_int_equal(fedci_vstream_encode(&hh.base, x, num_params, 4096, &b, NULL), FEDC_OK);
    }
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* oversized, announced */
    sign(key_a, "POST", path, NULL, 0, 0, auth);
    request("POST", path, NULL, 0, auth, "Content-Length: 900000000\r\n", &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    fedci_buf_fini(&b);
    fedci_buf_fini(&shorter);
    free(x);
    assert_serving();
    /* the round is still waiting: nothing was accepted */
    request("GET", "/v1/status", NULL, 0, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "\"accepted\":0"));
    resp_free(&r);
    request("GET", "/metrics", NULL, 0, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "fedc_results_total{outcome=\"accepted\"} 0"));
    assert_non_null(strstr(r.body, "fedc_auth_failures_total{reason=\"replay\"} 2"));
    assert_non_null(strstr(r.body, "fedc_auth_failures_total{reason=\"unknown_key\"} 1"));
    assert_non_null(strstr(r.body, "fedc_auth_failures_total{reason=\"body_mismatch\"} 1"));
    assert_non_null(strstr(r.body, "fedc_http_responses_total{code=\"503\"} 0"));
    assert_non_null(strstr(r.body, "fedc_http_responses_total{code=\"422\"} 5"));
    resp_free(&r);
}

/* Session mode (protocol revision 2): the Authorization value for (method, path, body) with
 * the body MACed under `session` and signed by k. */
static void sign_mac(const fedc_key *k, const uint8_t session[FEDCI_SESSION_BYTES],
                     const char *method, const char *path, const void *body, size_t len,
                     char out[FEDCI_AUTH_MAX])
{
    fedci_auth a;
    fedci_mac_state ms;
    fedci_auth_begin(k, fedci_now_ms(), &a);
    fedci_mac_init(&ms, session, a.nonce);
    fedci_mac_update(&ms, body ? body : "", body ? len : 0);
    fedci_mac_final(&ms, a.mac);
    fedci_auth_finish_mac(k, method, path, &a);
    fedci_auth_format(&a, out, FEDCI_AUTH_MAX);
}

static void test_session_mode(void **state)
{
    (void)state;
    resp r;
    /* RunInfo carries the server's per-run key */
    signed_request(key_a, "GET", "/v1/run", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    ProtobufCMessage *m;
    assert_int_equal(fedci_unpack(&fedc__v1__run_info__descriptor, (uint8_t *)r.body, r.len,
                                  "run", &m, NULL),
                     FEDC_OK);
    Fedc__V1__RunInfo *ri = (Fedc__V1__RunInfo *)m;
    assert_int_equal(ri->protocol_revision, 2);
    assert_int_equal(ri->session_key.len, FEDCI_KX_BYTES);
    uint8_t sa[32], sb[32], stale[32], fake_pk[32], fake_sk[32];
    assert_int_equal(fedci_session_client(key_a, ri->session_key.data, sa, NULL), FEDC_OK);
    assert_int_equal(fedci_session_client(key_b, ri->session_key.data, sb, NULL), FEDC_OK);
    fedci_kx_keypair(fake_pk, fake_sk); /* another server run's key */
    assert_int_equal(fedci_session_client(key_a, fake_pk, stale, NULL), FEDC_OK);
    fedci_unpacked_free(m);
    resp_free(&r);

    fedci_buf body = {0};
    pack_checkin(&body, 0);
    char auth[FEDCI_AUTH_MAX];
    /* a good session-mode request */
    sign_mac(key_a, sa, "POST", "/v1/checkin", body.data, body.len, auth);
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    /* ... replayed */
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* a body other than the one MACed (same length, one bit) */
    sign_mac(key_a, sa, "POST", "/v1/checkin", body.data, body.len, auth);
    body.data[body.len - 1] ^= 1;
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    body.data[body.len - 1] ^= 1;
    /* MACed under a stale session (another server run) */
    sign_mac(key_a, stale, "POST", "/v1/checkin", body.data, body.len, auth);
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* b's session, signed by a (a key cannot borrow another client's MAC key) */
    sign_mac(key_a, sb, "POST", "/v1/checkin", body.data, body.len, auth);
    request("POST", "/v1/checkin", body.data, body.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    /* a result upload whose update was changed after the MAC: refused before it is used */
    float *x = calloc(num_params, sizeof(float));
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/result", task_id);
    fedci_buf b = {0};
    pack_result(&b, task_id, task_round, num_params, x, num_params);
    sign_mac(key_a, sa, "POST", path, b.data, b.len, auth);
    b.data[b.len - 2] ^= 0x40; /* a float of the last chunk */
    request("POST", path, b.data, b.len, auth, NULL, &r);
    assert_int_equal(r.status, 401);
    resp_free(&r);
    free(x);
    fedci_buf_fini(&b);
    fedci_buf_fini(&body);
    assert_serving();
    request("GET", "/v1/status", NULL, 0, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "\"accepted\":0"));
    resp_free(&r);
    request("GET", "/metrics", NULL, 0, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "fedc_auth_failures_total{reason=\"body_mismatch\"} 5"));
    assert_non_null(strstr(r.body, "fedc_auth_failures_total{reason=\"replay\"} 3"));
    resp_free(&r);
}

/* A result stream carrying a codec message (ResultHeader.encoding). */
static void pack_encoded(fedci_buf *b, const char *tid, uint32_t round, const char *encoding,
                         const uint8_t *msg, size_t len)
{
    Fedc__V1__ResultHeader h = FEDC__V1__RESULT_HEADER__INIT;
    h.task_id = (char *)tid;
    h.round = round;
    h.stage = FEDC__V1__STAGE__STAGE_FIT;
    h.num_params = num_params;
    h.num_examples = 100;
    h.train_loss = 0.5;
    h.loss_before = NAN;
    h.encoding = (char *)encoding;
    h.encoded_bytes = len;
    b->len = 0;
    assert_int_equal(fedci_vstream_encode_bytes(&h.base, msg, len, 4096, b, NULL), FEDC_OK);
}

/* compress.upload = q8 on this server: encoded results that are malformed, of another codec or
 * of another size are refused 422, with the reason in the server's log; nothing is aggregated. */
static void test_encoded_results(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof path, "/v1/tasks/%s/result", task_id);
    float *x = calloc(num_params, sizeof(float));
    for (size_t i = 0; i < num_params; i++) x[i] = (float)((int)(i % 7) - 3) * 0.01f;
    fedc_codec *q8, *q4;
    assert_int_equal(fedc_codec_create_str("q8", &q8, NULL), FEDC_OK);
    assert_int_equal(fedc_codec_create_str("q4", &q4, NULL), FEDC_OK);
    const uint8_t *m;
    size_t len;
    assert_int_equal(fedc_codec_encode(q8, x, num_params, NULL, &m, &len, NULL), FEDC_OK);
    uint8_t *good = malloc(len), *bad = malloc(len);
    memcpy(good, m, len);
    size_t good_len = len;
    fedci_buf b = {0};
    resp r;
    /* 1. named as another encoding than the task's */
    pack_encoded(&b, task_id, task_round, "q4", good, good_len);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* 2. a corrupt message: its magic, then a declared size that does not add up */
    memcpy(bad, good, len);
    bad[0] ^= 0xff;
    pack_encoded(&b, task_id, task_round, task_encoding, bad, len);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    memcpy(bad, good, len);
    bad[72] ^= 0x01; /* body bytes */
    pack_encoded(&b, task_id, task_round, task_encoding, bad, len);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* 3. a q4 message labelled q8 */
    assert_int_equal(fedc_codec_encode(q4, x, num_params, NULL, &m, &len, NULL), FEDC_OK);
    pack_encoded(&b, task_id, task_round, task_encoding, m, len);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* 4. a well-formed q8 message of one value fewer than the model */
    assert_int_equal(fedc_codec_encode(q8, x, num_params - 1, NULL, &m, &len, NULL), FEDC_OK);
    pack_encoded(&b, task_id, task_round, task_encoding, m, len);
    signed_request(key_a, "POST", path, b.data, b.len, &r);
    assert_int_equal(r.status, 422);
    resp_free(&r);
    /* 5. an encoded size over the limit */
    pack_encoded(&b, task_id, task_round, task_encoding, good, good_len);
    /* (patched after encoding would break the frame: announce it through a fresh header) */
    {
        Fedc__V1__ResultHeader h = FEDC__V1__RESULT_HEADER__INIT;
        h.task_id = task_id;
        h.round = task_round;
        h.stage = FEDC__V1__STAGE__STAGE_FIT;
        h.num_params = num_params;
        h.num_examples = 100;
        h.encoding = task_encoding;
        h.encoded_bytes = 1ull << 40;
        b.len = 0;
        assert_int_equal(fedci_frame_append(&h.base, &b, NULL), FEDC_OK);
        signed_request(key_a, "POST", path, b.data, b.len, &r);
        assert_int_equal(r.status, 413);
        resp_free(&r);
    }
    fedci_buf_fini(&b);
    free(good);
    free(bad);
    free(x);
    fedc_codec_destroy(q8);
    fedc_codec_destroy(q4);
    assert_serving();
    request("GET", "/v1/status", NULL, 0, NULL, NULL, &r);
    assert_non_null(strstr(r.body, "\"accepted\":0"));
    resp_free(&r);
    char errf[4200];
    snprintf(errf, sizeof errf, "%s/server.err", dir);
    size_t n;
    char *log = tu_read_file(errf, &n);
    assert_non_null(log);
    char want[200];
    snprintf(want, sizeof want, "malformed encoded update (%s): codec message", task_encoding);
    assert_non_null(strstr(log, want));
    snprintf(want, sizeof want, "update encoded as 'q4', the task asks for '%s'", task_encoding);
    assert_non_null(strstr(log, want));
    free(log);
}

static pid_t spawn_client(int i)
{
    char url[64], key[4096];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(key, sizeof key, "%s/k%d.key", dir, i);
    pid_t p = fork();
    if (p == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(fedc_bin, "fedc", "client", "--server", url, "--key", key, "--config", cfg_path,
              "--quiet", NULL);
        _exit(127);
    }
    return p;
}

static void last_sha(const char *text, char out[65])
{
    const char *p = NULL, *q = text;
    while ((q = strstr(q, "\"model_sha256\":\"")) != NULL) p = q++;
    assert_non_null(p);
    memcpy(out, p + 16, 64);
    out[64] = '\0';
}

static void test_aggregate_untouched(void **state)
{
    (void)state;
    /* honest clients now: the federation must end exactly as the simulation does */
    pid_t ca = spawn_client(0), cb = spawn_client(1);
    char line[4096], last[4096] = "";
    while (fgets(line, sizeof line, server_out))
        if (strstr(line, "\"round\":2,")) {
            snprintf(last, sizeof last, "%s", line);
            break;
        }
    assert_true(last[0] != '\0');
    assert_non_null(strstr(last, "\"participants\":2")); /* the two honest results only */
    char fed[65], sim[65];
    last_sha(last, fed);
    /* a late result for round 1, after the last round: refused */
    {
        float *x = calloc(num_params, sizeof(float));
        fedci_buf b = {0};
        char path[256];
        snprintf(path, sizeof path, "/v1/tasks/%s/result", task_id);
        pack_result(&b, task_id, task_round, num_params, x, num_params);
        resp r;
        signed_request(key_a, "POST", path, b.data, b.len, &r);
        assert_int_equal(r.status, 409);
        resp_free(&r);
        fedci_buf_fini(&b);
        free(x);
    }
    int st;
    waitpid(ca, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    waitpid(cb, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    waitpid(server_pid, &st, 0);
    server_pid = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' sim '%s' --json --threads 1 2>/dev/null | tail -1", fedc_bin,
             cfg_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[4096] = "";
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    last_sha(out, sim);
    assert_string_equal(fed, sim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_is_open), cmocka_unit_test(test_authentication),
        cmocka_unit_test(test_bad_messages),   cmocka_unit_test(test_task_and_model),
        cmocka_unit_test(test_bad_results),    cmocka_unit_test(test_session_mode),
        cmocka_unit_test(test_encoded_results), cmocka_unit_test(test_aggregate_untouched),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
