/* Helpers for the C tests that talk to a real `fedc server` process (see nettest.h). */
#include "nettest.h"

#include "testutil.h"
#include "net/wire.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int nt_port; /* the port of the server nt_server_start started */
static const char *nt_bin; /* the fedc binary it ran */

const char *nt_find(const void *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp((const char *)hay + i, needle, m) == 0) return (const char *)hay + i;
    return NULL;
}

void nt_resp_free(nt_resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

int nt_server_start(const char *fedc_bin, const char *dir, const char *cfg_path,
                    const char *allow_path, pid_t *pid, FILE **out)
{
    nt_bin = fedc_bin;
    nt_port = 0;
    int fds[2];
    if (pipe(fds) != 0) return -1;
    char state_dir[4096], errf[4096];
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(errf, sizeof errf, "%s/server.err", dir);
    *pid = fork();
    if (*pid == 0) {
        dup2(fds[1], 1);
        int e = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (e >= 0) dup2(e, 2);
        close(fds[0]);
        execl(fedc_bin, "fedc", "server", cfg_path, "--listen", "127.0.0.1:0", "--state", state_dir,
              "--allow-file", allow_path, "--json", NULL);
        _exit(127);
    }
    close(fds[1]);
    *out = fdopen(fds[0], "r");
    char line[1024];
    struct pollfd pf = {fds[0], POLLIN, 0};
    while (poll(&pf, 1, 20000) > 0 && fgets(line, sizeof line, *out)) {
        char *p = strstr(line, "\"port\":");
        if (p) {
            nt_port = atoi(p + 7);
            break;
        }
    }
    if (nt_port <= 0) {
        fprintf(stderr, "the server did not start (see %s)\n", errf);
        return -1;
    }
    return 0;
}

int nt_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)nt_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

void nt_server_stop(pid_t *pid, FILE **out)
{
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
    }
    *pid = 0;
    if (*out) fclose(*out);
    *out = NULL;
}

int nt_keys(const char *dir, int n, fedc_key **keys, int allowed, const char *const *names,
            char *allow_path, size_t cap)
{
    size_t len = 0, size = 1;
    char *allow = malloc(size);
    if (!allow) return -1;
    allow[0] = '\0';
    for (int i = 0; i < n; i++) {
        char path[4096], hex[FEDC_KEY_PUBLIC_HEX], line[FEDC_KEY_PUBLIC_HEX + 80];
        if (fedc_key_generate(&keys[i], NULL) != FEDC_OK) goto fail;
        snprintf(path, sizeof path, "%s/k%d.key", dir, i);
        if (fedc_key_write(keys[i], path, NULL) != FEDC_OK) goto fail;
        if (i >= allowed) continue;
        fedc_key_public_hex(keys[i], hex);
        int m = snprintf(line, sizeof line, "%s%s%s\n", hex, names ? " " : "",
                         names ? names[i] : "");
        char *grown = realloc(allow, size + (size_t)m);
        if (!grown) goto fail;
        allow = grown;
        memcpy(allow + len, line, (size_t)m + 1);
        len += (size_t)m;
        size += (size_t)m;
    }
    snprintf(allow_path, cap, "%s/allow.txt", dir);
    tu_write_file(allow_path, allow, len);
    free(allow);
    return 0;
fail:
    free(allow);
    return -1;
}

pid_t nt_spawn_client(const char *dir, int i, const char *cfg_path)
{
    char url[64], key[4096];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", nt_port);
    snprintf(key, sizeof key, "%s/k%d.key", dir, i);
    pid_t p = fork();
    if (p == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(nt_bin, "fedc", "client", "--server", url, "--key", key, "--config", cfg_path,
              "--quiet", NULL);
        _exit(127);
    }
    return p;
}

void nt_exchange(const void *req, size_t len, nt_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = nt_connect();
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
    const char *hdr_end = nt_find(buf, n, "\r\n\r\n");
    if (hdr_end) {
        size_t start = (size_t)(hdr_end + 4 - buf);
        r->len = n - start;
        r->body = malloc(r->len + 1);
        memcpy(r->body, buf + start, r->len);
        r->body[r->len] = '\0';
    }
    free(buf);
}

void nt_request(const char *method, const char *path, const void *body, size_t len,
                const char *auth, const char *extra, nt_resp *r)
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
    nt_exchange(req, (size_t)h + (body ? len : 0), r);
    free(req);
}

void nt_sign(const fedc_key *k, const char *method, const char *path, const void *body,
             size_t len, uint64_t ts_ms, char out[FEDCI_AUTH_MAX])
{
    uint8_t h[FEDCI_HASH_BYTES];
    fedci_body_hash(body ? body : "", body ? len : 0, h);
    fedci_auth a;
    fedci_auth_sign(k, method, path, h, ts_ms ? ts_ms : fedci_now_ms(), &a);
    fedci_auth_format(&a, out, FEDCI_AUTH_MAX);
}

void nt_sign_mac(const fedc_key *k, const uint8_t session[FEDCI_SESSION_BYTES],
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

void nt_signed_request(const fedc_key *k, const char *method, const char *path, const void *body,
                       size_t len, nt_resp *r)
{
    char auth[FEDCI_AUTH_MAX];
    nt_sign(k, method, path, body, len, 0, auth);
    nt_request(method, path, body, len, auth, NULL, r);
}

void nt_assert_serving(void)
{
    nt_resp r;
    nt_request("GET", "/v1/status", NULL, 0, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"run_id\""));
    nt_resp_free(&r);
}

void nt_last_sha(const char *text, char out[65])
{
    const char *p = NULL, *q = text;
    while ((q = strstr(q, "\"model_sha256\":\"")) != NULL) p = q++;
    assert_non_null(p);
    memcpy(out, p + 16, 64);
    out[64] = '\0';
}

void nt_sim_sha(const char *env, const char *cfg_path, char out[65])
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s '%s' sim '%s' --json --threads 1 2>/dev/null | tail -1", env,
             nt_bin, cfg_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[4096] = "";
    assert_non_null(fgets(line, sizeof line, p));
    pclose(p);
    nt_last_sha(line, out);
}
