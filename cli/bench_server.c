/*
 * fedc bench server: what the federation protocol costs (issue 6), measured on loopback.
 *
 * - Upload throughput: K concurrent clients (threads of this process, each a real fedc_client
 *   with a trainer that returns a fixed update at once) run R rounds against a `fedc server`
 *   process holding the `cnn` model (6.65 MB of float32). Each round's "training" ends for all
 *   clients together (a barrier, once every client has its task and the model), so that the
 *   uploads run alone: from then to the last accepted result is the upload phase, and
 *   throughput is the update bytes over those phases. Against it, in the same run: plain HTTP
 *   POSTs of the same bytes, K at a time, each sender from its own copy (as each client sends
 *   its own update buffer), to a libmicrohttpd server that only counts them (no signing, no
 *   protobuf, no validation, no aggregation); and the same from one buffer shared by all K
 *   senders (which stays in cache for all of them; reported as plain_shared).
 * - Round latency added by the protocol: the rounds' wall time with clients that do not train
 *   (check-in, model download, upload, validation, aggregation, checkpoint, commit, publish).
 * - Server memory: its peak RSS in the upload test, and its RSS with N clients connected and
 *   long-polling (held check-ins), against the same server with none.
 *
 * The server runs as a child process (`fedc bench server --child-server DIR`) so that its
 * memory is its own. Plain HTTP on 127.0.0.1 for both sides (TLS costs the same for both).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fedc/config_build.h"

#if FEDC_CLIENT_ONLY

int bench_server(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("bench", "server: this fedc is a client-only build");
}

#else

#include <curl/curl.h>
#include <microhttpd.h>

#include "fedc/client.h"
#include "fedc/server.h"

/* ---- a trainer that does not train ---- */

typedef struct dummy {
    fedc_model *model;
    float *update;         /* a fixed update (small values) */
    volatile int *release; /* NULL: fit returns at once; else fit waits until *release */
    /* barrier: with barrier > 0, a round's fits return together once `barrier` clients have
     * downloaded the model and started, so that the uploads that follow are measured alone */
    int barrier;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint32_t round;
    int arrived;
} dummy;

static const fedc_layout *d_layout(const void *shared)
{
    return fedc_model_layout(((const dummy *)shared)->model);
}

static fedc_status d_init(const void *shared, uint64_t seed, float *params, fedc_err *err)
{
    (void)seed;
    (void)err;
    fedc_vec_zero(fedc_model_param_count(((const dummy *)shared)->model), params);
    return FEDC_OK;
}

static fedc_status d_fit(const void *shared, void *worker, const fedc_fit_ins *ins,
                         fedc_fit_out *out, fedc_err *err)
{
    (void)worker;
    (void)err;
    dummy *d = (dummy *)shared;
    while (d->release && !*d->release) usleep(20000);
    /* the "training" (writing the update) is done before the barrier: after it, only the
     * uploads run (each client's 6.65 MB copy used to overlap the other clients' uploads) */
    fedc_vec_copy(ins->num_params, d->update, out->update);
    if (d->barrier > 0) {
        pthread_mutex_lock(&d->lock);
        if (ins->round != d->round) {
            d->round = ins->round;
            d->arrived = 0;
        }
        if (++d->arrived >= d->barrier) pthread_cond_broadcast(&d->cond);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20;
        while (d->round == ins->round && d->arrived < d->barrier)
            if (pthread_cond_timedwait(&d->cond, &d->lock, &until) != 0) break;
        pthread_mutex_unlock(&d->lock);
    }
    out->num_examples = 100;
    out->train_loss = 0.5;
    out->steps = 1;
    return FEDC_OK;
}

static fedc_status d_eval(const void *shared, void *worker, const fedc_eval_ins *ins,
                          fedc_eval_out *out, fedc_err *err)
{
    (void)shared;
    (void)worker;
    (void)ins;
    (void)out;
    return fedc_err_set(err, FEDC_ERR_NOTFOUND, "no test set");
}

static const fedc_trainer_ops dummy_ops = {
    .name = "bench",
    .layout = d_layout,
    .init_params = d_init,
    .fit = d_fit,
    .evaluate = d_eval,
};

static int dummy_init(dummy *d, volatile int *release)
{
    memset(d, 0, sizeof *d);
    const int64_t shape[3] = {1, 28, 28};
    fedc_err err;
    if (fedc_model_create("cnn", shape, 3, 10, &d->model, &err) != FEDC_OK) return -1;
    size_t n = fedc_model_param_count(d->model);
    d->update = fedc_malloc(n * sizeof(float));
    if (!d->update) return -1;
    for (size_t i = 0; i < n; i++) d->update[i] = (float)((int)(i % 17) - 8) * 1e-4f;
    d->release = release;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    return 0;
}

static void dummy_fini(dummy *d)
{
    fedc_model_destroy(d->model);
    fedc_free(d->update);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
}

/* ---- the server child ---- */

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') v = strtol(line + n + 1, NULL, 10);
    fclose(f);
    return v;
}

static fedc_server *volatile child_server;
static void child_on_signal(int sig)
{
    (void)sig;
    if (child_server) fedc_server_stop(child_server);
}

static int child_main(const char *dir)
{
    char path[4096], tmp[4096];
    snprintf(path, sizeof path, "%s/run.ini", dir);
    fedc_config *cfg = cli_load_config("bench", path, NULL, 0);
    if (!cfg) return 1;
    /* --set KEY=VALUE of the bench command, one per line */
    snprintf(path, sizeof path, "%s/sets.txt", dir);
    FILE *sf = fopen(path, "r");
    char line[1024];
    while (sf && fgets(line, sizeof line, sf)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] && fedc_config_set(cfg, line, "--set") != FEDC_OK) {
            fprintf(stderr, "bench server: %s\n", fedc_config_errmsg(cfg));
            fclose(sf);
            return 1;
        }
    }
    if (sf) fclose(sf);
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    dummy d;
    if (dummy_init(&d, NULL) != 0) return 1;
    fedc_trainer tr = {&dummy_ops, &d};
    char state[4096], allow[4096];
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(allow, sizeof allow, "%s/allow.txt", dir);
    fedc_server_opts so;
    memset(&so, 0, sizeof so);
    so.listen = "127.0.0.1:0";
    so.state_dir = state;
    so.allow_file = allow;
    snprintf(path, sizeof path, "%s/serve_on", dir);
    so.serve_on = access(path, F_OK) == 0; /* the idle case: until SIGTERM */
    fedc_server *s;
    fedc_err err;
    if (fedc_server_create(cfg, &tr, &so, &s, &err) != FEDC_OK) {
        fprintf(stderr, "bench server: %s\n", fedc_err_message(&err));
        return 1;
    }
    child_server = s;
    signal(SIGTERM, child_on_signal);
    snprintf(tmp, sizeof tmp, "%s/port.tmp", dir);
    snprintf(path, sizeof path, "%s/port", dir);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%u\n", fedc_server_port(s));
        fclose(f);
        rename(tmp, path);
    }
    fedc_status st = fedc_server_run(s, &err);
    snprintf(path, sizeof path, "%s/stats", dir);
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "%ld %ld\n", proc_kb(getpid(), "VmHWM"), proc_kb(getpid(), "VmRSS"));
        fclose(f);
    }
    fedc_server_destroy(s);
    dummy_fini(&d);
    fedc_config_destroy(cfg);
    return st == FEDC_OK || st == FEDC_ERR_ABORTED ? 0 : 1;
}

/* Starts `fedc bench server --child-server dir`; returns its pid and port. */
static pid_t spawn_child(const char *dir, int *port)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execl("/proc/self/exe", "fedc", "bench", "server", "--child-server", dir, (char *)NULL);
        _exit(127);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/port", dir);
    for (int i = 0; i < 600; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            int ok = fscanf(f, "%d", port) == 1;
            fclose(f);
            if (ok) return pid;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) return -1;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* ---- clients ---- */

typedef struct span {
    uint32_t round;
    double trained, accepted;
} span;

typedef struct client_job {
    const char *url;
    fedc_key *key;
    const fedc_config *cfg;
    const fedc_trainer *trainer;
    fedc_client *client;
    fedc_status st;
    span spans[64];
    int nspans;
    double t_task[64];
} client_job;

static void on_event(void *user, const fedc_client_event *ev)
{
    client_job *j = user;
    double t = cli_now();
    if (ev->kind == FEDC_CLIENT_TRAINED && j->nspans < 64) {
        j->spans[j->nspans].round = ev->round;
        j->spans[j->nspans].trained = t;
        j->spans[j->nspans].accepted = 0;
    } else if (ev->kind == FEDC_CLIENT_ACCEPTED && j->nspans < 64) {
        j->spans[j->nspans].accepted = t;
        j->nspans++;
    }
}

static void *client_thread(void *p)
{
    client_job *j = p;
    fedc_err err;
    j->st = fedc_client_run(j->client, j->trainer, j->cfg, NULL, &err);
    return NULL;
}

static int start_clients(client_job *jobs, int n, const char *url, fedc_key **keys,
                         const fedc_config *cfg, const fedc_trainer *tr, pthread_t *tid,
                         size_t stack)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack) pthread_attr_setstacksize(&attr, stack);
    for (int i = 0; i < n; i++) {
        client_job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->url = url;
        j->key = keys[i];
        j->cfg = cfg;
        j->trainer = tr;
        fedc_client_opts o = {url, keys[i], NULL, 0, cfg, on_event, j, 0};
        fedc_err err;
        if (fedc_client_create(&o, &j->client, &err) != FEDC_OK ||
            pthread_create(&tid[i], &attr, client_thread, j) != 0) {
            pthread_attr_destroy(&attr);
            return i;
        }
    }
    pthread_attr_destroy(&attr);
    return n;
}

/* ---- the plain transfer ---- */

typedef struct plain_srv {
    uint64_t bytes;
    pthread_mutex_t lock;
} plain_srv;

static enum MHD_Result plain_handler(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version, const char *data,
                                     size_t *size, void **ctx)
{
    (void)url;
    (void)method;
    (void)version;
    (void)data;
    plain_srv *ps = cls;
    if (!*ctx) {
        *ctx = ps;
        return MHD_YES;
    }
    if (*size) {
        pthread_mutex_lock(&ps->lock);
        ps->bytes += *size;
        pthread_mutex_unlock(&ps->lock);
        *size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return rc;
}

typedef struct plain_job {
    const char *url;
    const void *body;
    size_t len;
    int reps;
    int ok;
} plain_job;

static size_t sink_write(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

static void *plain_thread(void *p)
{
    plain_job *j = p;
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    for (int r = 0; r < j->reps; r++) {
        curl_easy_setopt(c, CURLOPT_URL, j->url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->len);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        if (curl_easy_perform(c) == CURLE_OK) j->ok++;
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* MB/s of K concurrent plain uploads of the len bytes at body, reps times: over all reps
 * (returned), and the best single rep (*best; each rep is K uploads at once, like one round of
 * the protocol test). The body is real memory (the update itself), not calloc's shared zero
 * page, which would make the sender's copy into the socket read one cached 4 KB page over and
 * over. distinct: each sender sends its own copy of it, as each protocol client sends its own
 * update buffer (K x 6.65 MB, not one buffer that stays in cache for all); 0: one shared
 * buffer (reported too, as plain_shared). Returns -1 when out of memory. */
static double plain_transfer(int K, int reps, const void *body, size_t len, int threads,
                             int distinct, double *best)
{
    void **own = NULL;
    if (distinct) {
        if (!(own = calloc((size_t)K, sizeof *own))) return -1;
        for (int i = 0; i < K; i++) {
            if (!(own[i] = malloc(len))) {
                for (int j = 0; j < i; j++) free(own[j]);
                free(own);
                return -1;
            }
            memcpy(own[i], body, len);
        }
    }
    plain_srv ps = {0, PTHREAD_MUTEX_INITIALIZER};
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                         plain_handler, &ps, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_END);
    if (!d) return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/plain", di ? di->port : 0);
    plain_job *jobs = calloc((size_t)K, sizeof *jobs);
    pthread_t *tid = calloc((size_t)K, sizeof *tid);
    double dt = 0;
    *best = 0;
    for (int r = 0; r < reps; r++) {
        pthread_mutex_lock(&ps.lock);
        uint64_t before = ps.bytes;
        pthread_mutex_unlock(&ps.lock);
        double t0 = cli_now();
        for (int i = 0; i < K; i++) {
            jobs[i] = (plain_job){url, own ? own[i] : body, len, 1, 0};
            pthread_create(&tid[i], NULL, plain_thread, &jobs[i]);
        }
        for (int i = 0; i < K; i++) pthread_join(tid[i], NULL);
        double t = cli_now() - t0;
        dt += t;
        pthread_mutex_lock(&ps.lock);
        double rate = (double)(ps.bytes - before) / t / 1e6;
        pthread_mutex_unlock(&ps.lock);
        if (rate > *best) *best = rate;
    }
    MHD_stop_daemon(d);
    free(jobs);
    free(tid);
    for (int i = 0; own && i < K; i++) free(own[i]);
    free(own);
    return (double)ps.bytes / dt / 1e6;
}

/* ---- the cases ---- */

static int write_files(const char *dir, const char *ini, fedc_key **keys, int nkeys,
                       char **sets, int nsets)
{
    char path[4096];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
    snprintf(path, sizeof path, "%s/run.ini", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(ini, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/sets.txt", dir);
    f = fopen(path, "w");
    if (!f) return -1;
    for (int i = 0; i < nsets; i++) fprintf(f, "%s\n", sets[i]);
    fclose(f);
    snprintf(path, sizeof path, "%s/allow.txt", dir);
    f = fopen(path, "w");
    if (!f) return -1;
    for (int i = 0; i < nkeys; i++) {
        char hex[FEDC_KEY_PUBLIC_HEX];
        fedc_key_public_hex(keys[i], hex);
        fprintf(f, "%s\n", hex);
    }
    fclose(f);
    return 0;
}

static long waiting_checkins(int port)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/status", port);
    CURL *c = curl_easy_init();
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, m);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    fclose(m);
    long v = -1;
    char *p = rc == CURLE_OK && buf ? strstr(buf, "\"waiting_checkins\":") : NULL;
    if (p) v = strtol(p + 19, NULL, 10);
    free(buf);
    return v;
}

int bench_server(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"clients", required_argument, NULL, 'k'},
        {"rounds", required_argument, NULL, 'r'},
        {"idle", required_argument, NULL, 'i'},
        {"uploads", required_argument, NULL, 'u'},
        {"child-server", required_argument, NULL, 'C'},
        {"set", required_argument, NULL, 's'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, K = 16, R = 5, N = 1000, M = 8, c, nsets = 0;
    char *sets[16];
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "jk:r:i:u:C:s:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'k': K = atoi(optarg); break;
        case 'r': R = atoi(optarg); break;
        case 'i': N = atoi(optarg); break;
        case 'u': M = atoi(optarg); break;
        case 'C': return child_main(optarg);
        case 's':
            if (nsets == 16 || !strchr(optarg, '='))
                return cli_usage_error("bench", "server: --set KEY=VALUE, at most 16");
            sets[nsets++] = optarg;
            break;
        default: return cli_usage_error("bench", "server: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (K < 1 || K > 256 || R < 1 || R > 60 || N < 0 || N > 20000 || M < 1 || M > 256)
        return cli_usage_error("bench", "server: --clients 1..256, --rounds 1..60, --idle "
                                        "0..20000, --uploads 1..256");
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    FILE *human = cli_human(json);
    char base[] = "/tmp/fedc-bench-server-XXXXXX";
    if (!mkdtemp(base)) return cli_fail("bench", "server: cannot create a temporary directory");
    int nkeys = K > N + 1 ? K : N + 1;
    fedc_key **keys = calloc((size_t)nkeys, sizeof *keys);
    for (int i = 0; i < nkeys; i++)
        if (fedc_key_generate(&keys[i], NULL) != FEDC_OK) return cli_fail("bench", "keygen failed");
    fedc_config *ccfg = fedc_config_create();
    fedc_config_set(ccfg, "client.retry_initial=0.02", "bench");
    fedc_config_set(ccfg, "client.retry_max=0.2", "bench");
    fedc_config_set(ccfg, "client.wait=60", "bench");
    int rc = CLI_EXIT_FAIL;
    dummy d;
    if (dummy_init(&d, NULL) != 0) return cli_fail("bench", "server: cannot build the cnn model");
    size_t P = fedc_model_param_count(d.model);
    double model_mb = (double)P * 4 / 1e6;
    d.barrier = K;
    fedc_trainer tr = {&dummy_ops, &d};

    /* 1. uploads */
    char dir1[4200], ini[1024], url[64];
    snprintf(dir1, sizeof dir1, "%s/uploads", base);
    snprintf(ini, sizeof ini,
             "[run]\nseed = 1\nrounds = %d\nlog_level = error\n[clients]\ncount = %d\n"
             "per_round = %d\nmin = %d\n[model]\nspec = cnn\n[eval]\nevery = 0\n"
             "[round]\ndeadline = 600\n[server]\nmax_uploads = %d\nlinger = 1\n"
             "keep_checkpoints = 2\n",
             R, K, K, K, M);
    if (write_files(dir1, ini, keys, K, sets, nsets) != 0)
        return cli_fail("bench", "server: cannot write %s", dir1);
    int port = 0;
    pid_t child = spawn_child(dir1, &port);
    if (child < 0) return cli_fail("bench", "server: the server did not start");
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    client_job *jobs = calloc((size_t)(N > K ? N : K), sizeof *jobs);
    pthread_t *tid = calloc((size_t)(N > K ? N : K), sizeof *tid);
    double t0 = cli_now();
    int started = start_clients(jobs, K, url, keys, ccfg, &tr, tid, 0);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    double total = cli_now() - t0;
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(child, &status, 0, &ru); /* the server's CPU time over the whole upload test */
    double server_cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
                        (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    long hwm1 = -1, rss1 = -1;
    char path[4300];
    snprintf(path, sizeof path, "%s/stats", dir1);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &hwm1, &rss1) != 2) hwm1 = -1;
        fclose(f);
    }
    /* per round: first end of training to last acceptance */
    double spans = 0, bytes = 0, best_upload_mbs = 0;
    int accepted = 0, ok = started == K;
    json_t *per_round = json ? json_array() : NULL;
    for (int r = 1; r <= R; r++) {
        double lo = INFINITY, hi = 0, round_bytes = 0;
        for (int i = 0; i < K; i++)
            for (int s = 0; s < jobs[i].nspans; s++)
                if (jobs[i].spans[s].round == (uint32_t)r) {
                    if (jobs[i].spans[s].trained < lo) lo = jobs[i].spans[s].trained;
                    if (jobs[i].spans[s].accepted > hi) hi = jobs[i].spans[s].accepted;
                    round_bytes += (double)P * 4;
                    accepted++;
                }
        bytes += round_bytes;
        if (per_round)
            json_array_append_new(per_round,
                                  json_real(hi > lo ? round_bytes / (hi - lo) / 1e6 : 0));
        if (hi > lo) {
            spans += hi - lo;
            if (round_bytes / (hi - lo) / 1e6 > best_upload_mbs)
                best_upload_mbs = round_bytes / (hi - lo) / 1e6;
        }
    }
    for (int i = 0; i < started; i++) {
        if (jobs[i].st != FEDC_OK) ok = 0;
        fedc_client_destroy(jobs[i].client);
    }
    double upload_mbs = spans > 0 ? bytes / spans / 1e6 : 0;
    double round_s = total / R;

    /* 2. idle clients long-polling */
    long rss_idle0 = -1, rss_idleN = -1, held = -1;
    if (N > 0) {
        volatile int release = 0;
        dummy dblock;
        dummy_init(&dblock, &release);
        fedc_trainer trb = {&dummy_ops, &dblock};
        char dir2[4200];
        snprintf(dir2, sizeof dir2, "%s/idle", base);
        snprintf(ini, sizeof ini,
                 "[run]\nseed = 1\nrounds = 1\nlog_level = error\n[clients]\ncount = %d\n"
                 "per_round = 1\nmin = 1\n[model]\nspec = cnn\n[eval]\nevery = 0\n"
                 "[round]\ndeadline = 3600\n[server]\nmax_connections = %d\nlong_poll = 120\n",
                 N + 1, N + 100);
        if (write_files(dir2, ini, keys, N + 1, sets, nsets) != 0)
            return cli_fail("bench", "server: cannot write %s", dir2);
        snprintf(path, sizeof path, "%s/serve_on", dir2);
        f = fopen(path, "w");
        if (f) fclose(f);
        pid_t child2 = spawn_child(dir2, &port);
        if (child2 < 0) return cli_fail("bench", "server: the idle server did not start");
        snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
        usleep(300000);
        rss_idle0 = proc_kb(child2, "VmRSS");
        int n2 = start_clients(jobs, N, url, keys, ccfg, &trb, tid, 256 * 1024);
        for (int t = 0; t < 600; t++) {
            held = waiting_checkins(port);
            if (held >= N - 1) break;
            usleep(100000);
        }
        usleep(500000);
        rss_idleN = proc_kb(child2, "VmRSS");
        kill(child2, SIGKILL);
        waitpid(child2, NULL, 0);
        release = 1;
        for (int i = 0; i < n2; i++) fedc_client_stop(jobs[i].client);
        for (int i = 0; i < n2; i++) {
            pthread_join(tid[i], NULL);
            fedc_client_destroy(jobs[i].client);
        }
        dummy_fini(&dblock);
        if (n2 != N) ok = 0;
    }

    /* 3. the plain transfer, same size and concurrency */
    double best_plain_mbs = 0, best_shared_mbs = 0;
    const int sthreads = (int)fedc_config_int(ccfg, "server.threads");
    double plain_mbs = plain_transfer(K, R, d.update, P * 4, sthreads, 1, &best_plain_mbs);
    double shared_mbs = plain_transfer(K, R, d.update, P * 4, sthreads, 0, &best_shared_mbs);
    if (plain_mbs < 0 || shared_mbs < 0) ok = 0;

    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "case", json_string("server"));
        json_object_set_new(o, "model", json_string("cnn"));
        json_object_set_new(o, "update_mb", json_real(model_mb));
        json_object_set_new(o, "clients", json_integer(K));
        json_object_set_new(o, "rounds", json_integer(R));
        json_object_set_new(o, "max_uploads", json_integer(M));
        json_object_set_new(o, "results_accepted", json_integer(accepted));
        json_object_set_new(o, "upload_mb_per_s", json_real(upload_mbs));
        json_object_set_new(o, "upload_mb_per_s_by_round", per_round);
        json_object_set_new(o, "plain_mb_per_s", json_real(plain_mbs));
        json_object_set_new(o, "upload_vs_plain",
                            json_real(plain_mbs > 0 ? upload_mbs / plain_mbs : 0));
        /* the best round against the best plain rep: less sensitive to other load */
        json_object_set_new(o, "best_upload_mb_per_s", json_real(best_upload_mbs));
        json_object_set_new(o, "best_plain_mb_per_s", json_real(best_plain_mbs));
        json_object_set_new(o, "best_upload_vs_plain",
                            json_real(best_plain_mbs > 0 ? best_upload_mbs / best_plain_mbs : 0));
        /* the same plain POSTs all from one buffer, which stays in cache for every sender */
        json_object_set_new(o, "plain_shared_mb_per_s", json_real(shared_mbs));
        json_object_set_new(o, "upload_vs_plain_shared",
                            json_real(shared_mbs > 0 ? upload_mbs / shared_mbs : 0));
        json_object_set_new(o, "round_seconds", json_real(round_s));
        json_object_set_new(o, "server_cpu_ms_per_result",
                            json_real(accepted > 0 ? 1e3 * server_cpu / accepted : 0));
        json_object_set_new(o, "server_peak_mb", json_real(hwm1 / 1e3));
        json_object_set_new(o, "idle_clients", json_integer(N));
        json_object_set_new(o, "idle_held", json_integer(held));
        json_object_set_new(o, "server_rss_mb_no_clients", json_real(rss_idle0 / 1e3));
        json_object_set_new(o, "server_rss_mb_idle_clients", json_real(rss_idleN / 1e3));
        json_object_set_new(o, "kb_per_idle_client",
                            json_real(N > 0 ? (double)(rss_idleN - rss_idle0) / N : 0));
        json_object_set_new(o, "ok", json_boolean(ok));
        cli_json_print(o);
    }
    fprintf(
        human,
        "fedc bench server (loopback, plain HTTP, cnn update %.2f MB)\n"
        "  uploads     %d clients x %d rounds, %d result buffers: %d results accepted\n"
        "              %.0f MB/s through the protocol vs %.0f MB/s plain HTTP POST (%.0f%%)\n"
        "              best round %.0f MB/s vs best plain round %.0f MB/s (%.0f%%)\n"
        "              (plain POSTs all sent from one shared buffer: %.0f MB/s, %.0f%%)\n"
        "  rounds      %.3f s per round with clients that do not train (check-in, download and\n"
        "              verify, upload, validate, aggregate, checkpoint, commit, publish)\n"
        "  memory      server peak %.0f MB in the upload test (%.1f models)\n",
        model_mb, K, R, M, accepted, upload_mbs, plain_mbs,
        plain_mbs > 0 ? 100 * upload_mbs / plain_mbs : 0, best_upload_mbs, best_plain_mbs,
        best_plain_mbs > 0 ? 100 * best_upload_mbs / best_plain_mbs : 0, shared_mbs,
        shared_mbs > 0 ? 100 * upload_mbs / shared_mbs : 0, round_s, hwm1 / 1e3,
        hwm1 * 1e3 / ((double)P * 4));
    if (N > 0)
        fprintf(
            human,
            "              %ld KB with no client, %ld KB with %d clients long-polling (%ld held):"
            " %.1f KB per client\n",
            rss_idle0, rss_idleN, N, held, (double)(rss_idleN - rss_idle0) / N);
    rc = ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    if (!ok) fprintf(stderr, "fedc bench: server: some clients failed\n");
    for (int i = 0; i < nkeys; i++) fedc_key_destroy(keys[i]);
    free(keys);
    free(jobs);
    free(tid);
    dummy_fini(&d);
    fedc_config_destroy(ccfg);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "fedc bench: could not remove %s\n", base);
    curl_global_cleanup();
    return rc;
}

#endif
