/* Helpers shared by the C tests that talk to a real `fedc server` process over loopback
 * (net_hostile_test.c, secagg_net_test.c): start the server, speak HTTP/1.1 over a plain socket
 * so a test can send exactly the bytes it wants, and sign requests with the library's request
 * signing (src/net/sign.h). Server-only: linked only into those tests (tests/CMakeLists.txt). */
#ifndef FEDC_NETTEST_H
#define FEDC_NETTEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "fedc/net.h"
#include "net/sign.h"

/* An HTTP answer: the status (0 if none) and the body (malloc'd, NUL-terminated). */
typedef struct nt_resp {
    int status;
    char *body;
    size_t len;
} nt_resp;

/* The first occurrence of needle in hay[0..n), or NULL. */
const char *nt_find(const void *hay, size_t n, const char *needle);
void nt_resp_free(nt_resp *r);

/* Starts `fedc_bin server cfg_path --listen 127.0.0.1:0 --state dir/state --allow-file
 * allow_path --json` with stderr in dir/server.err and waits (20 s) for the port it prints.
 * *pid and *out (the server's stdout, JSON lines) get the process; the helpers below talk to
 * the port it listens on. Returns 0, or -1 (with a message on stderr) if it did not start. */
int nt_server_start(const char *fedc_bin, const char *dir, const char *cfg_path,
                    const char *allow_path, pid_t *pid, FILE **out);
/* A socket connected to the server nt_server_start started (fails the test if it cannot). */
int nt_connect(void);
/* Kills the server (SIGKILL, waited for) and closes its output; *pid and *out are reset. */
void nt_server_stop(pid_t *pid, FILE **out);
/* n new client keys, written to dir/k<i>.key, the first `allowed` of them on the allow-list
 * dir/allow.txt (with names[i] after the key when names is not NULL), whose path goes to
 * allow_path (cap bytes). Returns 0, or -1 when a key cannot be made or written. */
int nt_keys(const char *dir, int n, fedc_key **keys, int allowed, const char *const *names,
            char *allow_path, size_t cap);
/* Starts `fedc client` with key dir/k<i>.key and config cfg_path against the server, output
 * to /dev/null. */
pid_t nt_spawn_client(const char *dir, int i, const char *cfg_path);

/* Sends raw request bytes to the server, reads the answer until the server closes. */
void nt_exchange(const void *req, size_t len, nt_resp *r);
/* A request with an optional Authorization value, body and extra header lines. */
void nt_request(const char *method, const char *path, const void *body, size_t len,
                const char *auth, const char *extra, nt_resp *r);
/* The Authorization value for (method, path, body) signed by k at ts_ms (0 = now). */
void nt_sign(const fedc_key *k, const char *method, const char *path, const void *body,
             size_t len, uint64_t ts_ms, char out[FEDCI_AUTH_MAX]);
/* Session mode (protocol revision 2): the Authorization value for (method, path, body) with
 * the body MACed under `session` and signed by k. */
void nt_sign_mac(const fedc_key *k, const uint8_t session[FEDCI_SESSION_BYTES],
                 const char *method, const char *path, const void *body, size_t len,
                 char out[FEDCI_AUTH_MAX]);
/* A request signed by k now (the whole body hashed). */
void nt_signed_request(const fedc_key *k, const char *method, const char *path, const void *body,
                       size_t len, nt_resp *r);
/* GET /v1/status answers 200 with a run id. */
void nt_assert_serving(void);
/* The last "model_sha256" value in text (a round line or `fedc sim --json` output). */
void nt_last_sha(const char *text, char out[65]);
/* The final model's SHA-256 of `fedc sim cfg_path --json --threads 1` (the fedc binary the
 * server runs), with env ("NAME=value ...", or "") set for it. */
void nt_sim_sha(const char *env, const char *cfg_path, char out[65]);

#endif
