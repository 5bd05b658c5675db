/*
 * Hostile SecAgg+ messages against a real `fedc server` process on loopback (issue 8). Four
 * clients take part in a SecAgg round: three honest `fedc client` processes and this test, which
 * speaks the protocol itself (the library's SecAgg client over its own signed HTTP requests)
 * and first tries, at each stage: a message of the wrong stage, a plain result, garbage, keys
 * signed by another client's key (forged advert) or by no key, keys claiming another id, a
 * message on another client's task, duplicates, shares with a misrouted header, addressed to a
 * non-neighbour or truncated, a masked vector with bad chunk offsets or an element outside
 * the ring, and an unmasking message after dropping out. Each is refused with its HTTP status
 * (400 malformed or misrouted, 409 wrong stage / duplicate / not open, 422 bad signature or out
 * of range) and the server keeps serving. The test client then drops before its masked input;
 * the round completes with exactly the honest clients' sum: the model equals `fedc sim` with
 * that client dropped at the same stage (FEDC_TEST_SECAGG_DROP).
 */
#include "testutil.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fedc/fedc.h"
#include "fedc/net.h"
#include "fedc/secagg.h"
#include "net/sign.h"
#include "net/wire.h"
#include "secagg/secagg_internal.h"

#include "nettest.h"

static char *dir;
static const char *fedc_bin;
static pid_t server_pid = -1, client_pid[3] = {-1, -1, -1};
static FILE *server_out;
static fedc_key *keys[4]; /* ids 0, 1, 2: honest processes; 3: this test */
static char cfg_path[4096];

/* ---- SecAgg messages ---- */

static char task_path[200], other_path[200];
static fedc_secagg_params params;
static fedc_secagg_client *me;

/* POSTs a SecAggMessage stream (stage, body, optional signature, optional Chunks) as key k to
 * path; returns the HTTP status. */
static int post_msg(const fedc_key *k, const char *path, int stage, const uint8_t *body,
                    size_t blen, const Fedc__V1__KeySignature *sig, const uint8_t *vec,
                    size_t vlen, uint64_t first_offset)
{
    Fedc__V1__SecAggMessage m = FEDC__V1__SEC_AGG_MESSAGE__INIT;
    Fedc__V1__KeySignature *sp[1] = {(Fedc__V1__KeySignature *)sig};
    m.stage = (Fedc__V1__Stage)stage;
    m.body.data = (uint8_t *)body;
    m.body.len = blen;
    if (sig) {
        m.n_signatures = 1;
        m.signatures = sp;
    }
    fedci_buf b = {0};
    assert_int_equal(fedci_frame_append(&m.base, &b, NULL), FEDC_OK);
    if (vec) {
        Fedc__V1__Chunk c = FEDC__V1__CHUNK__INIT;
        c.offset = first_offset;
        c.data.data = (uint8_t *)vec;
        c.data.len = vlen;
        assert_int_equal(fedci_frame_append(&c.base, &b, NULL), FEDC_OK);
    }
    nt_resp r;
    nt_signed_request(k, "POST", path, b.data, b.len, &r);
    fedci_buf_fini(&b);
    int st = r.status;
    nt_resp_free(&r);
    return st;
}

/* GETs until the server's message for `stage` arrives (or `status` is not 200). */
static int poll_stage(int stage, ProtobufCMessage **out)
{
    for (int i = 0; i < 600; i++) {
        nt_resp r;
        nt_signed_request(keys[3], "GET", task_path, NULL, 0, &r);
        if (r.status != 200) {
            int st = r.status;
            nt_resp_free(&r);
            return st;
        }
        ProtobufCMessage *m;
        assert_int_equal(fedci_unpack(&fedc__v1__sec_agg_message__descriptor, (uint8_t *)r.body,
                                      r.len, "secagg", &m, NULL),
                         FEDC_OK);
        nt_resp_free(&r);
        Fedc__V1__SecAggMessage *sm = (Fedc__V1__SecAggMessage *)m;
        if ((int)sm->stage == stage) {
            *out = m;
            return 200;
        }
        /* not yet: "wait", or the previous stage's message again (it is still open) */
        assert_true((int)sm->stage < stage);
        if (sm->stage == FEDC__V1__STAGE__STAGE_UNSPECIFIED) assert_true(sm->wait_ms > 0);
        fedci_unpacked_free(m);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("no stage %d message within 30 s", stage);
    return 0;
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    dir = tu_tempdir("secagg-net");
    char path[4096];
    if (nt_keys(dir, 4, keys, 4, NULL, path, sizeof path) != 0) return -1;
    snprintf(cfg_path, sizeof cfg_path, "%s/run.ini", dir);
    const char *cfg = "[run]\nseed = 21\nrounds = 1\nlog_level = info\n"
                      "[clients]\ncount = 4\nper_round = 4\nmin = 2\n"
                      "[data]\ndataset = synthetic-iid\n[model]\nspec = logreg\n"
                      "[train]\nepochs = 1\nlr = 0.5\n[eval]\nevery = 0\n"
                      "[round]\ndeadline = 120\n[server]\nchunk_bytes = 4096\nlinger = 2\n"
                      "[secagg]\nenabled = true\nbits = 20\nstage_timeout = 3\n"
                      "[client]\nretry_initial = 0.05\nretry_max = 0.2\n";
    tu_write_file(cfg_path, cfg, strlen(cfg));
    return nt_server_start(fedc_bin, dir, cfg_path, path, &server_pid, &server_out);
}

static int group_teardown(void **state)
{
    (void)state;
    pid_t *ps[4] = {&server_pid, &client_pid[0], &client_pid[1], &client_pid[2]};
    for (int i = 0; i < 4; i++)
        if (*ps[i] > 0) {
            kill(*ps[i], SIGKILL);
            waitpid(*ps[i], NULL, 0);
        }
    if (server_out) fclose(server_out);
    fedc_secagg_client_destroy(me);
    for (int i = 0; i < 4; i++) fedc_key_destroy(keys[i]);
    tu_rmtree(dir);
    free(dir);
    return 0;
}

/* ---- the tests, in order ---- */

static void test_task(void **state)
{
    (void)state;
    Fedc__V1__CheckinRequest rq = FEDC__V1__CHECKIN_REQUEST__INIT;
    rq.wait_ms = 20000;
    fedci_buf b = {0};
    assert_int_equal(fedci_pack(&rq.base, &b, NULL), FEDC_OK);
    nt_resp r;
    nt_signed_request(keys[3], "POST", "/v1/checkin", b.data, b.len, &r);
    fedci_buf_fini(&b);
    assert_int_equal(r.status, 200);
    ProtobufCMessage *m;
    assert_int_equal(fedci_unpack(&fedc__v1__checkin_response__descriptor, (uint8_t *)r.body, r.len,
                                  "answer", &m, NULL),
                     FEDC_OK);
    nt_resp_free(&r);
    Fedc__V1__CheckinResponse *cr = (Fedc__V1__CheckinResponse *)m;
    assert_int_equal(cr->reply_case, FEDC__V1__CHECKIN_RESPONSE__REPLY_TASK);
    const Fedc__V1__SecAggTask *t = cr->task->secagg;
    assert_non_null(t);
    assert_int_equal(t->n, 4);
    assert_int_equal(t->secagg_id, 3);
    assert_int_equal(t->n_client_keys, 4);
    assert_int_equal(t->len, 611); /* logreg's 610 parameters + the weight */
    assert_int_equal(t->bits, 20);
    for (int i = 0; i < 4; i++) {
        uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
        fedc_key_public(keys[i], pk);
        assert_memory_equal(t->client_keys[i].data, pk, sizeof pk);
    }
    memset(&params, 0, sizeof params);
    params.n = t->n;
    params.k = t->k;
    params.t = t->t;
    params.bits = t->bits;
    params.len = t->len;
    params.round = t->secagg_round;
    memcpy(params.seed, t->seed.data, sizeof params.seed);
    assert_int_equal(fedc_secagg_params_check(&params, NULL), FEDC_OK);
    snprintf(task_path, sizeof task_path, "/v1/tasks/%s/secagg", cr->task->task_id);
    /* client 0's task id: same round, another client */
    char other[96];
    snprintf(other, sizeof other, "%s", cr->task->task_id);
    char *dash = strrchr(other, '-');
    snprintf(dash + 1, sizeof other - (size_t)(dash + 1 - other), "0");
    snprintf(other_path, sizeof other_path, "/v1/tasks/%s/secagg", other);
    fedci_unpacked_free(m);
    assert_int_equal(fedc_secagg_client_create(&params, 3, &me, NULL), FEDC_OK);
    /* the honest clients start now (stage 1 waits for all four) */
    for (int i = 0; i < 3; i++) client_pid[i] = nt_spawn_client(dir, i, cfg_path);
}

static void sign_keys(const fedc_key *k, uint32_t id, const uint8_t *msg,
                      Fedc__V1__KeySignature *ks, fedci_auth *a)
{
    uint8_t d[32];
    fedci_sa_key_digest(params.seed, params.round, id, msg + SA_HDR, msg + SA_HDR + SA_KEY, d);
    fedci_auth_sign(k, "SECAGG", "/v1/secagg/keys", d, fedci_now_ms(), a);
    Fedc__V1__KeySignature init = FEDC__V1__KEY_SIGNATURE__INIT;
    *ks = init;
    ks->ts = a->ts_ms;
    ks->nonce.data = a->nonce;
    ks->nonce.len = FEDCI_NONCE_BYTES;
    ks->signature.data = a->sig;
    ks->signature.len = FEDCI_SIG_BYTES;
}

static void test_advertise(void **state)
{
    (void)state;
    unsigned char *msg;
    size_t len;
    assert_int_equal(fedc_secagg_client_advertise(me, &msg, &len, NULL), FEDC_OK);
    Fedc__V1__KeySignature ks;
    fedci_auth a;
    /* a message of a later stage while stage 1 is open */
    sign_keys(keys[3], 3, msg, &ks, &a);
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_SHARE, msg, len,
                              NULL, NULL, 0, 0),
                     409);
    /* a plain result in a SecAgg round */
    {
        char p[200];
        snprintf(p, sizeof p, "%.*s/result", (int)(strlen(task_path) - 7), task_path);
        nt_resp r;
        nt_signed_request(keys[3], "POST", p, "\x0a\x00", 2, &r);
        assert_int_equal(r.status, 409);
        nt_resp_free(&r);
    }
    /* garbage */
    {
        nt_resp r;
        nt_signed_request(keys[3], "POST", task_path, "\x05\xff\xff\xff\xff\xff", 6, &r);
        assert_int_equal(r.status, 400);
        nt_resp_free(&r);
    }
    /* forged advert: the keys signed by client 0's key */
    Fedc__V1__KeySignature forged;
    fedci_auth fa;
    sign_keys(keys[0], 3, msg, &forged, &fa);
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, &forged, NULL, 0, 0),
                     422);
    /* unsigned keys */
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, NULL, NULL, 0, 0),
                     422);
    /* a signature over other keys (one key byte changed after signing) */
    msg[SA_HDR] ^= 1;
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, &ks, NULL, 0, 0),
                     422);
    msg[SA_HDR] ^= 1;
    /* misrouted: the header names client 0 (the signature is fine) */
    msg[12] = 0;
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, &ks, NULL, 0, 0),
                     400);
    msg[12] = 3;
    /* on client 0's task */
    assert_int_equal(post_msg(keys[3], other_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, &ks, NULL, 0, 0),
                     409);
    nt_assert_serving();
    /* the honest advert, then the same again */
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, &ks, NULL, 0, 0),
                     200);
    sign_keys(keys[3], 3, msg, &ks, &a);
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_ADVERTISE, msg,
                              len, &ks, NULL, 0, 0),
                     409);
    fedc_free(msg);
}

static void test_share(void **state)
{
    (void)state;
    ProtobufCMessage *m = NULL;
    assert_int_equal(poll_stage(FEDC__V1__STAGE__STAGE_SECAGG_SHARE, &m), 200);
    Fedc__V1__SecAggMessage *sm = (Fedc__V1__SecAggMessage *)m;
    /* the neighbours' keys come with their owners' signatures, which verify */
    uint32_t count = sa_get32(sm->body.data + SA_HDR);
    assert_int_equal(count, 3); /* k = 3: the complete graph */
    assert_int_equal(sm->n_signatures, count);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = sm->body.data + SA_HDR + 4 + i * (4 + 2 * SA_KEY);
        uint32_t v = sa_get32(e);
        fedci_auth a;
        memset(&a, 0, sizeof a); /* hash mode; every field set */
        fedc_key_public(keys[v], a.pk);
        a.ts_ms = sm->signatures[i]->ts;
        memcpy(a.nonce, sm->signatures[i]->nonce.data, FEDCI_NONCE_BYTES);
        memcpy(a.sig, sm->signatures[i]->signature.data, FEDCI_SIG_BYTES);
        fedci_sa_key_digest(params.seed, params.round, v, e + 4, e + 4 + SA_KEY, a.body_hash);
        assert_int_equal(fedci_auth_verify(&a, "SECAGG", "/v1/secagg/keys"), 0);
        a.body_hash[0] ^= 1; /* and a substituted key would not */
        assert_int_not_equal(fedci_auth_verify(&a, "SECAGG", "/v1/secagg/keys"), 0);
    }
    unsigned char *msg;
    size_t len;
    assert_int_equal(fedc_secagg_client_share(me, sm->body.data, sm->body.len, &msg, &len, NULL),
                     FEDC_OK);
    fedci_unpacked_free(m);
    const int S = FEDC__V1__STAGE__STAGE_SECAGG_SHARE;
    /* misrouted: header id of client 1 */
    msg[12] = 1;
    assert_int_equal(post_msg(keys[3], task_path, S, msg, len, NULL, NULL, 0, 0), 400);
    msg[12] = 3;
    /* a share addressed to a non-neighbour (the sender itself) */
    unsigned char save[4];
    memcpy(save, msg + SA_HDR + 4, 4);
    sa_put32(msg + SA_HDR + 4, 3);
    assert_int_equal(post_msg(keys[3], task_path, S, msg, len, NULL, NULL, 0, 0), 400);
    memcpy(msg + SA_HDR + 4, save, 4);
    /* truncated */
    assert_int_equal(post_msg(keys[3], task_path, S, msg, len - 1, NULL, NULL, 0, 0), 400);
    /* wrong stage */
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_UNMASK, msg, len,
                              NULL, NULL, 0, 0),
                     409);
    nt_assert_serving();
    /* honest, then duplicated */
    assert_int_equal(post_msg(keys[3], task_path, S, msg, len, NULL, NULL, 0, 0), 200);
    assert_int_equal(post_msg(keys[3], task_path, S, msg, len, NULL, NULL, 0, 0), 409);
    fedc_free(msg);
}

static void test_masked_then_drop(void **state)
{
    (void)state;
    ProtobufCMessage *m = NULL;
    assert_int_equal(poll_stage(FEDC__V1__STAGE__STAGE_SECAGG_MASKED, &m), 200);
    Fedc__V1__SecAggMessage *sm = (Fedc__V1__SecAggMessage *)m;
    uint32_t *x = calloc(params.len, sizeof *x);
    for (size_t i = 0; i < params.len; i++) x[i] = (uint32_t)(i * 37) & 0xfffff;
    unsigned char *msg;
    size_t len;
    assert_int_equal(
        fedc_secagg_client_masked(me, sm->body.data, sm->body.len, x, &msg, &len, NULL), FEDC_OK);
    fedci_unpacked_free(m);
    const int S = FEDC__V1__STAGE__STAGE_SECAGG_MASKED;
    size_t vlen = len - SA_HDR;
    /* the vector at the wrong offset; cut short; the whole message in the body */
    const uint8_t *vec = msg + SA_HDR;
    assert_int_equal(post_msg(keys[3], task_path, S, msg, SA_HDR, NULL, vec, vlen, 4), 400);
    assert_int_equal(post_msg(keys[3], task_path, S, msg, SA_HDR, NULL, msg + SA_HDR, vlen - 4, 0),
                     400);
    assert_int_equal(post_msg(keys[3], task_path, S, msg, len, NULL, NULL, 0, 0), 400);
    /* an element outside Z_{2^20} */
    unsigned char keep[4];
    memcpy(keep, msg + SA_HDR, 4);
    sa_put32(msg + SA_HDR, 1u << 20);
    assert_int_equal(post_msg(keys[3], task_path, S, msg, SA_HDR, NULL, vec, vlen, 0), 422);
    memcpy(msg + SA_HDR, keep, 4);
    nt_assert_serving();
    free(x);
    fedc_free(msg);
    /* this client now drops out: its masked input never comes. The stage closes at its
     * deadline; afterwards it is refused everything */
    ProtobufCMessage *u = NULL;
    assert_int_equal(poll_stage(FEDC__V1__STAGE__STAGE_SECAGG_UNMASK, &u), 409);
    assert_int_equal(post_msg(keys[3], task_path, FEDC__V1__STAGE__STAGE_SECAGG_UNMASK,
                              (const uint8_t *)"x", 1, NULL, NULL, 0, 0),
                     409);
}

static void test_sum_untouched(void **state)
{
    (void)state;
    char line[4096], last[4096] = "";
    struct pollfd pf = {fileno(server_out), POLLIN, 0};
    while (poll(&pf, 1, 60000) > 0 && fgets(line, sizeof line, server_out))
        if (strstr(line, "\"round\":1,")) {
            snprintf(last, sizeof last, "%s", line);
            break;
        }
    if (!strstr(last, "\"selected\":4,\"participants\":3")) {
        char ef[4200];
        snprintf(ef, sizeof ef, "%s/server.err", dir);
        size_t n = 0;
        char *log = tu_read_file(ef, &n);
        fprintf(stderr, "server log:\n%s\n", log ? log : "(none)");
        free(log);
        fail_msg("round 1 did not end with 3 participants: '%s'", last);
    }
    char fed[65], sim[65];
    nt_last_sha(last, fed);
    int st;
    for (int i = 0; i < 3; i++) {
        waitpid(client_pid[i], &st, 0);
        client_pid[i] = -1;
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    waitpid(server_pid, &st, 0);
    server_pid = -1;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    nt_sim_sha("FEDC_TEST_SECAGG_DROP=3:masked", cfg_path, sim);
    assert_string_equal(fed, sim);
}

int main(void)
{
    fedc_bin = getenv("FEDC");
    if (!fedc_bin) {
        fprintf(stderr, "FEDC must name the fedc binary\n");
        return 1;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "'%s' server 2>&1", fedc_bin);
    FILE *p = popen(cmd, "r");
    char out[512] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p) pclose(p);
    if (strstr(out, "client-only")) {
        printf("skipped: this fedc is a client-only build\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task),
        cmocka_unit_test(test_advertise),
        cmocka_unit_test(test_share),
        cmocka_unit_test(test_masked_then_drop),
        cmocka_unit_test(test_sum_untouched),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
