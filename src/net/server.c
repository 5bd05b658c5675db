/*
 * The federation server's round driver: creates the engine and the run store, resumes from the
 * last committed checkpoint, and runs the rounds -- select (with over-selection), open the
 * round to the HTTP side, wait for clients.per_round accepted results or the deadline, close,
 * aggregate, evaluate, checkpoint, commit -- re-running a round that misses its quorum.
 * The HTTP side is server_http.c; the contract is in fedc/server.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/log.h"
#include "fedc/safetensors.h"
#include "fedc/strategy.h"
#include "fedc/version.h"
#include "net/server_internal.h"

/* The engine keeps state besides the model (the strategy's momentum or moments, DP accounts):
 * a model-only checkpoint (written by fedc before engine checkpoints) cannot restore it. */
static int engine_is_stateful(fedc_server *s)
{
    fedc_state_item items[FEDC_STRATEGY_STATE_MAX];
    return fedc_strategy_state_get(fedc_engine_strategy(s->engine), items) > 0 ||
           strcmp(fedc_config_str(s->cfg, "dp.mode"), "off") != 0 ||
           fedc_config_bool(s->cfg, "dp.sgd");
}

/* Keys that may change across a restart without changing the run. */
static int key_is_operational(const fedc_config_key *k)
{
    if (!strcmp(k->section, "server") || !strcmp(k->section, "client") ||
        !strcmp(k->section, "round"))
        return 1;
    if (!strcmp(k->section, "run") &&
        (!strcmp(k->name, "threads") || !strcmp(k->name, "log_level")))
        return 1;
    if (!strcmp(k->section, "eval")) return 1;
    return 0;
}

/* The config as INI text and the fingerprint of its run-defining keys. */
static fedc_status config_identity(const fedc_config *cfg, fedci_buf *text, char fp[65],
                                   fedc_err *err)
{
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    const char *section = "";
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        char val[1024], line[1300];
        fedci_config_value_text(cfg, k, val, sizeof val);
        if (strcmp(section, k->section) != 0) {
            int n = snprintf(line, sizeof line, "%s[%s]\n", i ? "\n" : "", k->section);
            FEDC_TRY(fedci_buf_append(text, line, (size_t)n, err));
            section = k->section;
        }
        int n = snprintf(line, sizeof line, "%s = %s\n", k->name, val);
        FEDC_TRY(fedci_buf_append(text, line, (size_t)n, err));
        if (!key_is_operational(k)) {
            n = snprintf(line, sizeof line, "%s.%s=%s\n", k->section, k->name, val);
            crypto_hash_sha256_update(&h, (const unsigned char *)line, (size_t)n);
        }
    }
    FEDC_TRY(fedci_buf_append(text, "", 1, err));
    uint8_t d[32];
    crypto_hash_sha256_final(&h, d);
    sodium_bin2hex(fp, 65, d, sizeof d);
    return FEDC_OK;
}

static fedc_status read_text_file(const char *path, const char *what, char **out, fedc_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return fedc_err_set(err, FEDC_ERR_CONFIG, "%s %s: %s", what, path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    fedc_status st = FEDC_OK;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 8192;
            if (cap > (16u << 20)) {
                st = fedc_err_set(err, FEDC_ERR_CONFIG, "%s %s: too large", what, path);
                break;
            }
            char *nb = fedc_realloc(buf, cap);
            if (!nb) {
                st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096) break;
    }
    if (st == FEDC_OK && ferror(f))
        st = fedc_err_set(err, FEDC_ERR_CONFIG, "%s %s: read error", what, path);
    fclose(f);
    if (st != FEDC_OK) {
        if (buf) sodium_memzero(buf, cap);
        fedc_free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf;
    return FEDC_OK;
}

/* Reloads the allow-list from the store (it may grow while the server runs). */
static fedc_status load_allow(fedc_server *s, fedc_err *err)
{
    fedc_store_client *c;
    size_t n;
    FEDC_TRY(fedc_store_clients(s->store, &c, &n, err));
    allow_entry *a = fedc_calloc(n ? n : 1, sizeof *a);
    uint32_t max_id = 0;
    for (size_t i = 0; i < n; i++)
        if (c[i].id + 1 > max_id) max_id = c[i].id + 1;
    uint64_t *seen = NULL;
    if (a && max_id > s->nseen_cap) seen = fedc_calloc(max_id, sizeof *seen);
    if (!a || (max_id > s->nseen_cap && !seen)) {
        fedc_free(a);
        fedc_free(c);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the allow-list");
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(a[i].pk, c[i].pk, sizeof a[i].pk);
        a[i].id = c[i].id;
    }
    fedc_free(c);
    pthread_mutex_lock(&s->lock);
    allow_entry *old = s->allow;
    s->allow = a;
    s->nallow = n;
    fedci_server_sort_allow(s);
    uint64_t *old_seen = NULL;
    if (seen) {
        if (s->last_seen_ms) memcpy(seen, s->last_seen_ms, s->nseen_cap * sizeof *seen);
        old_seen = s->last_seen_ms;
        s->last_seen_ms = seen;
        s->nseen_cap = max_id;
    }
    pthread_mutex_unlock(&s->lock);
    fedc_free(old);
    fedc_free(old_seen);
    return FEDC_OK;
}

static fedc_status build_settings(fedc_server *s, fedc_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (fedci_setting_is_sent(k->section, k->name)) n++;
    }
    s->setting_keys = fedc_calloc(n ? n : 1, sizeof(char *));
    s->setting_values = fedc_calloc(n ? n : 1, sizeof(char *));
    if (!s->setting_keys || !s->setting_values)
        return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (!fedci_setting_is_sent(k->section, k->name)) continue;
        char key[128], val[1024];
        snprintf(key, sizeof key, "%s.%s", k->section, k->name);
        fedci_config_value_text(s->cfg, k, val, sizeof val);
        s->setting_keys[s->nsettings] = fedc_strdup(key);
        s->setting_values[s->nsettings] = fedc_strdup(val);
        if (!s->setting_keys[s->nsettings] || !s->setting_values[s->nsettings]) {
            fedc_free(s->setting_keys[s->nsettings]);
            fedc_free(s->setting_values[s->nsettings]);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
        }
        s->nsettings++;
    }
    return FEDC_OK;
}

/* Restores the engine from the run's last committed checkpoint: its complete state
 * (fedc_engine_checkpoint_load), or the model alone from a model-only checkpoint of an older
 * fedc (then stateful strategies restart their server state from zero: a warning). Either way
 * the model must be the committed round's and the checkpoint's round the committed one. */
static fedc_status restore_checkpoint(fedc_server *s, const fedc_store_run *run, fedc_err *err)
{
    fedc_safetensors *st = NULL;
    FEDC_TRY(fedc_safetensors_read(run->checkpoint, 0, &st, err));
    fedc_status rc = FEDC_OK;
    const char *sha = fedc_safetensors_meta(st, "model_sha256");
    const char *round = fedc_safetensors_meta(st, "round");
    char want_round[24];
    snprintf(want_round, sizeof want_round, "%u", run->last_round);
    if (!sha || strcmp(sha, run->model_sha256) != 0)
        rc = fedc_err_set(err, FEDC_ERR_FORMAT,
                          "%s: model_sha256 %s differs from the committed round's %s",
                          run->checkpoint, sha ? sha : "(none)", run->model_sha256);
    else if (!round || strcmp(round, want_round) != 0)
        rc = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: holds round %s, the last committed is %u",
                          run->checkpoint, round ? round : "(none)", run->last_round);
    int engine_file = fedc_safetensors_meta(st, "__fedc__.checkpoint") != NULL;
    if (rc == FEDC_OK && engine_file) {
        /* it checks the config digest, the layout and the model's hash against model_sha256 */
        rc = fedc_engine_checkpoint_load(s->engine, run->checkpoint, err);
    } else if (rc == FEDC_OK) {
        char got[65];
        fedc_vec_sha256_hex(st->layout->total, st->data, got);
        if (!fedc_layout_equal(st->layout, fedc_engine_layout(s->engine)))
            rc = fedc_err_set(err, FEDC_ERR_FORMAT,
                              "%s: its tensors do not match the model of the config",
                              run->checkpoint);
        else if (strcmp(got, sha) != 0)
            rc = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: model_sha256 mismatch (corrupt file)",
                              run->checkpoint);
        if (rc == FEDC_OK) rc = fedc_engine_restore(s->engine, run->last_round, st->data, err);
        if (rc == FEDC_OK && engine_is_stateful(s))
            fedc_log(FEDC_LOG_WARN, "server",
                     "%s is a model-only checkpoint (an older fedc): strategy %s restarts its "
                     "server state (and DP its adaptive clip) from zero, so this resumed run is "
                     "not bit-identical to an uninterrupted one",
                     run->checkpoint, fedc_engine_strategy_name(s->engine));
    }
    fedc_safetensors_destroy(st);
    return rc;
}

static fedc_status write_model(fedc_server *s, const char *path, uint32_t round, const char *sha,
                               fedc_err *err)
{
    char round_s[24];
    snprintf(round_s, sizeof round_s, "%u", round);
    fedc_st_meta meta[] = {
        {"format", "pt"},
        {"fedc_version", FEDC_VERSION},
        {"model_spec", fedc_config_str(s->cfg, "model.spec")},
        {"round", round_s},
        {"strategy", fedc_engine_strategy_name(s->engine)},
        {"run_id", s->run_id},
        {"model_sha256", sha},
    };
    return fedc_safetensors_write(path, fedc_engine_layout(s->engine),
                                  fedc_engine_global(s->engine), meta, sizeof meta / sizeof meta[0],
                                  err);
}

fedc_status fedc_server_create(const fedc_config *cfg, const fedc_trainer *trainer,
                               const fedc_server_opts *opts, fedc_server **out, fedc_err *err)
{
    *out = NULL;
    if (fedci_sodium_init() != 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO, "libsodium could not initialise");
    /* Compression: encoded results and model downloads, and exact deltas against a client's
     * cached version, are carried (docs/COMPRESSION.md); encodings under SecAgg are not. */
    fedc_codec_spec up_spec, down_spec;
    FEDC_TRY(fedc_codec_parse(fedc_config_str(cfg, "compress.upload"), &up_spec, err));
    FEDC_TRY(fedc_codec_parse(fedc_config_str(cfg, "compress.download"), &down_spec, err));
    fedc_server *s = fedc_calloc(1, sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->fold_lock, NULL);
    pthread_cond_init(&s->fold_cond, NULL);
    for (int i = 0; i < FEDCI_FOLD_STRIPES; i++) pthread_mutex_init(&s->fold_stripes[i], NULL);
    s->listen_fd = s->accept_wake[0] = s->accept_wake[1] = -1;
    pthread_cond_init(&s->cond, NULL);
    fedci_nonce_cache_init(&s->nonces, 4u << 20);
    if (strcmp(fedc_config_str(cfg, "compress.upload"), "none") != 0) {
        fedc_codec_format(&up_spec, s->up_codec, sizeof s->up_codec);
        s->up_ef = fedc_codec_config_error_feedback(cfg);
    }
    if (strcmp(fedc_config_str(cfg, "compress.download"), "none") != 0)
        fedc_codec_format(&down_spec, s->down_codec, sizeof s->down_codec);
    if (fedc_config_bool(cfg, "compress.download_delta"))
        s->delta_keep = (size_t)fedc_config_int(cfg, "compress.delta_versions");
    s->kx_sk = sodium_malloc(FEDCI_KX_BYTES);
    if (!s->kx_sk) {
        fedc_server_destroy(s);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of secure memory");
    }
    fedci_kx_keypair(s->kx_pk, s->kx_sk); /* per run process: session MACs */
    s->cfg = cfg;
    s->trainer = trainer;
    s->opts = *opts;
    s->max_message = (size_t)fedc_config_int(cfg, "server.max_message");
    s->chunk_bytes = (uint32_t)fedc_config_int(cfg, "server.chunk_bytes") & ~3u;
    s->max_uploads = (uint32_t)fedc_config_int(cfg, "server.max_uploads");
    s->long_poll = fedc_config_double(cfg, "server.long_poll");
    s->retry_after = fedc_config_double(cfg, "server.retry_after");
    s->clock_skew = fedc_config_double(cfg, "server.clock_skew");
    s->linger = fedc_config_double(cfg, "server.linger");
    s->deadline = fedc_config_double(cfg, "round.deadline");
    s->retry_delay = fedc_config_double(cfg, "round.retry_delay");
    s->max_norm = fedc_config_double(cfg, "round.max_norm");
    s->rounds = (uint32_t)fedc_config_int(cfg, "run.rounds");
    uint32_t count = (uint32_t)fedc_config_int(cfg, "clients.count");
    s->target = (uint32_t)fedc_config_int(cfg, "clients.per_round");
    s->min_clients = (uint32_t)fedc_config_int(cfg, "clients.min");
    double sel =
        ceil((double)s->target * (1.0 + fedc_config_double(cfg, "round.overselect")) - 1e-9);
    s->select = sel > count ? count : (uint32_t)sel;
    if (s->select < s->target) s->select = s->target;
    fedci_buf cfg_text = {0};
    char fp[65];
    fedc_store_run run;
    int resumed = 0;
    fedc_status st = FEDC_OK;

    if (!opts->listen || !opts->state_dir)
        st =
            fedc_err_set(err, FEDC_ERR_CONFIG, "the server needs a listen address and a state dir");
    if (st == FEDC_OK && (!opts->tls_cert) != (!opts->tls_key))
        st = fedc_err_set(err, FEDC_ERR_CONFIG, "TLS needs both a certificate and a key file");
    if (st == FEDC_OK && opts->tls_cert) {
        st = read_text_file(opts->tls_cert, "TLS certificate", &s->cert_pem, err);
        if (st == FEDC_OK) st = read_text_file(opts->tls_key, "TLS key", &s->key_pem, err);
    }
    if (st == FEDC_OK) st = fedc_engine_create(cfg, trainer, &s->engine, err);
    if (st == FEDC_OK && fedc_engine_needs_control(s->engine))
        st = fedc_err_set(err, FEDC_ERR_CONFIG,
                          "strategy %s needs per-client control variates, which the HTTP transport "
                          "does not carry yet (docs/DEPLOY.md, \"Resume\", says why); run it "
                          "with `fedc sim`",
                          fedc_engine_strategy_name(s->engine));
    if (st == FEDC_OK) {
        s->num_params = fedc_engine_num_params(s->engine);
        uint64_t chunks = ((uint64_t)s->num_params * 4 + s->chunk_bytes - 1) / s->chunk_bytes;
        s->max_upload = (uint64_t)s->num_params * 4 + chunks * 32 + s->max_message + 64;
    }
    if (st == FEDC_OK) st = fedci_secagg_create(s, err); /* [secagg]: server_secagg.c */
    if (st == FEDC_OK) st = fedc_store_open(opts->state_dir, &s->store, err);
    if (st == FEDC_OK && opts->allow_file) {
        size_t added = 0;
        st = fedc_store_allow_file(s->store, opts->allow_file, &added, err);
        if (st == FEDC_OK && added)
            fedc_log(FEDC_LOG_INFO, "server", "%zu key(s) from %s added to the allow-list", added,
                     opts->allow_file);
    }
    if (st == FEDC_OK) st = load_allow(s, err);
    if (st == FEDC_OK) st = config_identity(cfg, &cfg_text, fp, err);
    if (st == FEDC_OK)
        st = fedc_store_run_open(s->store, (const char *)cfg_text.data, fp, s->rounds, &run,
                                 &resumed, err);
    if (st == FEDC_OK) {
        memcpy(s->run_id, run.run_id, sizeof s->run_id);
        if (run.last_round > 0) {
            st = restore_checkpoint(s, &run, err);
            if (st == FEDC_OK) {
                s->resumed_round = run.last_round;
                fedc_log(FEDC_LOG_INFO, "server", "run %s resumed after round %u (model %s)",
                         s->run_id, run.last_round, run.model_sha256);
            }
        }
    }
    if (st == FEDC_OK && fedc_config_double(cfg, "eval.fraction") > 0)
        fedc_log(FEDC_LOG_WARN, "server",
                 "eval.fraction = %g: federated evaluation does not run over HTTP yet (no "
                 "evaluate stage); the rounds report the central evaluation only",
                 fedc_config_double(cfg, "eval.fraction"));
    if (st == FEDC_OK) st = build_settings(s, err);
    if (st == FEDC_OK) {
        s->start_ms = fedci_now_ms();
        s->round = fedc_engine_last_round(s->engine) + 1;
        st = fedci_server_publish_model(s, fedc_engine_last_round(s->engine), NULL, err);
    }
    if (st == FEDC_OK) st = fedci_server_http_start(s, err);
    fedci_buf_fini(&cfg_text);
    if (st != FEDC_OK) {
        fedc_server_destroy(s);
        return st;
    }
    fedc_log(FEDC_LOG_INFO, "server", "run %s: listening on port %u (%s), %zu allowed client(s)",
             s->run_id, s->port, s->cert_pem ? "https" : "http, no TLS", s->nallow);
    *out = s;
    return FEDC_OK;
}

void fedc_server_destroy(fedc_server *s)
{
    if (!s) return;
    fedci_server_http_stop(s);
    if (s->worker_ready && s->trainer->ops->worker_fini) s->trainer->ops->worker_fini(s->worker);
    fedc_free(s->worker);
    fedci_secagg_destroy(s);
    fedc_engine_destroy(s->engine);
    fedc_store_close(s->store);
    if (s->key_pem) sodium_memzero(s->key_pem, strlen(s->key_pem));
    fedc_free(s->key_pem);
    fedc_free(s->cert_pem);
    for (size_t i = 0; i < s->nsettings; i++) {
        fedc_free(s->setting_keys[i]);
        fedc_free(s->setting_values[i]);
    }
    fedc_free(s->setting_keys);
    fedc_free(s->setting_values);
    fedc_free(s->allow);
    fedc_free(s->last_seen_ms);
    fedc_free(s->selected);
    fedc_free(s->parts);
    fedci_nonce_cache_fini(&s->nonces);
    if (s->kx_sk) sodium_free(s->kx_sk);
    if (s->sessions) sodium_free(s->sessions);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->fold_lock);
    pthread_cond_destroy(&s->fold_cond);
    for (int i = 0; i < FEDCI_FOLD_STRIPES; i++) pthread_mutex_destroy(&s->fold_stripes[i]);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->lock);
    fedc_free(s);
}

uint16_t fedc_server_port(const fedc_server *s) { return s->port; }
const char *fedc_server_run_id(const fedc_server *s) { return s->run_id; }
uint32_t fedc_server_resumed_round(const fedc_server *s) { return s->resumed_round; }
const fedc_engine *fedc_server_engine(const fedc_server *s) { return s->engine; }

void fedc_server_stop(fedc_server *s) { s->stop = 1; }

static void sleep_s(double seconds)
{
    if (seconds <= 0) return;
    struct timespec ts = {(time_t)seconds, (long)((seconds - floor(seconds)) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Waits on the condition for at most `seconds` (lock held). */
static void cond_wait_s(fedc_server *s, double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_nsec * 1e-9 + seconds;
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - floor(t)) * 1e9);
    pthread_cond_timedwait(&s->cond, &s->lock, &ts);
}

/* Central evaluation after a round (as the simulation does). */
static fedc_status evaluate(fedc_server *s, fedc_round_record *rec, fedc_err *err)
{
    if (!fedc_engine_eval_due(s->engine, rec->round)) return FEDC_OK;
    const fedc_trainer_ops *ops = s->trainer->ops;
    if (!s->worker) {
        s->worker = fedc_calloc(1, ops->worker_size ? ops->worker_size : 1);
        if (!s->worker) return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
        if (ops->worker_init) FEDC_TRY(ops->worker_init(s->trainer->shared, s->worker, err));
        s->worker_ready = 1;
    }
    /* in the simulation's slices (fedc_eval_combine), so that the metrics match it too */
    const uint32_t parts = ops->eval_parts ? FEDC_EVAL_PARTS : 1;
    fedc_eval_out out, outs[FEDC_EVAL_PARTS];
    fedc_status st = FEDC_OK;
    for (uint32_t i = 0; i < parts && st == FEDC_OK; i++) {
        fedc_eval_ins ins = {rec->round, FEDC_CLIENT_SERVER, fedc_engine_global(s->engine),
                             s->num_params, s->cfg, i, parts};
        st = ops->evaluate(s->trainer->shared, s->worker, &ins, &outs[i], err);
    }
    if (st == FEDC_OK) fedc_eval_combine(outs, parts, &out);
    if (st == FEDC_OK) {
        rec->evaluated = 1;
        rec->test_loss = out.loss;
        rec->test_accuracy = out.accuracy;
    } else if (st != FEDC_ERR_NOTFOUND) {
        return st;
    }
    return FEDC_OK;
}

/* Checkpoint, then commit: the round counts only once the engine's state after it (model,
 * strategy state, DP accounts: fedc_engine_checkpoint_save) is durable. */
static fedc_status commit_round(fedc_server *s, fedc_round_record *rec, const char *sha,
                                fedc_err *err)
{
    char path[4096];
    fedc_store_checkpoint_path(s->store, rec->round, path, sizeof path);
    FEDC_TRY(fedc_engine_checkpoint_save(s->engine, path, err));
    fedc_store_round r;
    memset(&r, 0, sizeof r);
    r.rec = *rec;
    r.attempt = s->attempt;
    snprintf(r.model_sha256, sizeof r.model_sha256, "%s", sha);
    const char *base = strrchr(path, '/');
    snprintf(r.checkpoint, sizeof r.checkpoint, "%s", base ? base + 1 : path);
    fedc_store_participant *p = fedc_calloc(s->nselected ? s->nselected : 1, sizeof *p);
    if (!p) return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
    for (size_t i = 0; i < s->nselected; i++) {
        part_info *pi = &s->parts[i];
        p[i].client = s->selected[i];
        p[i].status = pi->status[0]              ? pi->status
                      : pi->state == TASK_ISSUED ? "no_result"
                                                 : "absent";
        p[i].num_examples = pi->num_examples;
        p[i].train_loss = pi->state == TASK_ACCEPTED ? pi->train_loss : NAN;
        p[i].fit_seconds = pi->fit_seconds;
        p[i].bytes_up = pi->bytes_up;
        p[i].detail = pi->detail[0] ? pi->detail : NULL;
    }
    fedc_status st = fedc_store_commit_round(s->store, &r, p, s->nselected, err);
    fedc_free(p);
    if (st != FEDC_OK) return st;
    uint32_t keep = (uint32_t)fedc_config_int(s->cfg, "server.keep_checkpoints");
    fedc_err perr;
    if (fedc_store_prune_checkpoints(s->store, keep, &perr) != FEDC_OK)
        fedc_log(FEDC_LOG_WARN, "server", "%s", fedc_err_message(&perr));
    return FEDC_OK;
}

/* One attempt at round last_round + 1. *aborted = 1 when it missed its quorum. */
static fedc_status run_round(fedc_server *s, uint32_t attempt, int *aborted, fedc_err *err)
{
    *aborted = 0;
    double t0 = fedci_mono();
    const uint32_t *ids;
    size_t n;
    FEDC_TRY(fedc_engine_round_begin_select(s->engine, s->select, attempt, &ids, &n, err));
    uint32_t *sel = fedc_malloc((n ? n : 1) * sizeof *sel);
    part_info *parts = fedc_calloc(n ? n : 1, sizeof *parts);
    if (!sel || !parts) {
        fedc_free(sel);
        fedc_free(parts);
        fedc_round_record rec;
        fedc_engine_round_end(s->engine, &rec, NULL);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
    }
    memcpy(sel, ids, n * sizeof *sel);
    fedc_fit_ins ins;
    fedc_engine_fit_ins(s->engine, n ? ids[0] : 0, &ins);

    pthread_mutex_lock(&s->lock);
    fedc_free(s->selected);
    fedc_free(s->parts);
    s->selected = sel;
    s->parts = parts;
    s->nselected = n;
    s->round = ins.round;
    s->attempt = attempt;
    s->accepted = 0;
    s->refused = 0;
    s->prox_mu = ins.prox_mu;
    s->lr = ins.lr;
    s->want_loss_before = ins.want_loss_before;
    s->round_t0 = t0;
    s->round_deadline = t0 + s->deadline;
    s->deadline_wall_ms = fedci_now_ms() + (uint64_t)(s->deadline * 1000);
    s->phase = PHASE_FIT;
    atomic_store(&s->round_bytes_up, 0);
    atomic_store(&s->round_bytes_down, 0);
    atomic_store(&s->round_bytes_down_full, 0);
    if (s->secagg) fedci_secagg_open(s);
    fedci_server_fold_open(s, ins.round, attempt);
    fedci_server_wake(s, 1);
    fedc_log(FEDC_LOG_INFO, "server", "round %u%s: %zu client(s) selected, %u result(s) wanted",
             s->round, attempt ? " (re-run)" : "", n, s->target);
    double last_reload = fedci_mono();
    while (!s->stop && (s->secagg ? !fedci_secagg_tick(s) /* its own deadlines */
                                  : s->accepted < s->target && fedci_mono() < s->round_deadline)) {
        cond_wait_s(s, 0.05);
        fedci_server_wake(s, 0);
        if (fedci_mono() - last_reload > 2) {
            pthread_mutex_unlock(&s->lock);
            fedc_err aerr;
            if (load_allow(s, &aerr) != FEDC_OK)
                fedc_log(FEDC_LOG_WARN, "server", "%s", fedc_err_message(&aerr));
            last_reload = fedci_mono();
            pthread_mutex_lock(&s->lock);
        }
    }
    s->phase = PHASE_IDLE; /* from here on, results are late */
    while (s->submitting > 0) cond_wait_s(s, 0.05); /* results being folded right now */
    fedci_server_fold_close(s); /* results still arriving: their chunks out of the sums */
    uint32_t accepted = s->accepted, refused = s->refused;
    pthread_mutex_unlock(&s->lock);
    double t_wait = fedci_mono();

    if (s->stop) {
        fedc_round_record rec;
        fedc_engine_round_end(s->engine, &rec, NULL);
        return fedc_err_set(err, FEDC_ERR_ABORTED,
                            "stopped during round %u; restart with the same state directory to "
                            "resume after round %u",
                            ins.round, ins.round - 1);
    }
    if (s->secagg) FEDC_TRY(fedci_secagg_finish(s, err)); /* the unmasked sum, if any */
    for (size_t i = 0; !s->secagg && i < n; i++)
        if (parts[i].state == TASK_ISSUED && accepted < s->target)
            fedc_engine_report_failure(s->engine, sel[i], "no result before the deadline");
    fedc_round_record rec;
    fedc_err rerr;
    fedc_status st = fedc_engine_round_end(s->engine, &rec, &rerr);
    if (st == FEDC_ERR_ABORTED) {
        atomic_fetch_add(&s->stats.rounds_aborted, 1);
        /* the global model did not change: rewind the engine to the previous round */
        float *copy = fedc_malloc(s->num_params * sizeof(float));
        if (!copy) return fedc_err_set(err, FEDC_ERR_NOMEM, "server: out of memory");
        fedc_vec_copy(s->num_params, fedc_engine_global(s->engine), copy);
        fedc_err xerr;
        st = fedc_engine_restore(s->engine, ins.round - 1, copy, &xerr);
        fedc_free(copy);
        if (st == FEDC_OK) {
            fedc_log(FEDC_LOG_WARN, "server", "%s; the round is re-run", fedc_err_message(&rerr));
            *aborted = 1;
            return FEDC_OK;
        }
        if (st != FEDC_ERR_UNSUPPORTED) {
            if (err) *err = xerr;
            return st;
        }
        /* the engine cannot rewind (local DP: the updates sent were charged to the clients'
         * privacy accounts): the round counts as done, unchanged, as in the simulation */
        fedc_log(FEDC_LOG_WARN, "server", "%s; it counts as done (%s)", fedc_err_message(&rerr),
                 fedc_err_message(&xerr));
        st = FEDC_OK;
    }
    if (st != FEDC_OK) {
        if (err) *err = rerr;
        return st;
    }
    rec.rejected += refused;
    /* the round's wire bytes, encoded or not: the bodies of the accepted results and of the
     * model downloads served while it was open (the engine counted float32 sizes) */
    rec.bytes_up = atomic_exchange(&s->round_bytes_up, 0);
    rec.bytes_down = atomic_exchange(&s->round_bytes_down, 0);
    rec.bytes_down_full = atomic_exchange(&s->round_bytes_down_full, 0);
    if (s->secagg) fedci_secagg_record(s, &rec);
    double t_end = fedci_mono();
    FEDC_TRY(evaluate(s, &rec, err));
    double t_eval = fedci_mono();
    rec.seconds = t_eval - t0;
    char sha[65];
    fedc_vec_sha256_hex(s->num_params, fedc_engine_global(s->engine), sha);
    FEDC_TRY(commit_round(s, &rec, sha, err));
    double t_commit = fedci_mono();
    FEDC_TRY(fedci_server_publish_model(s, rec.round, sha, err));
    fedc_log(FEDC_LOG_DEBUG, "server",
             "round %u: results %.3f s, aggregate %.3f s, evaluate %.3f s, checkpoint + commit "
             "%.3f s, publish %.3f s",
             rec.round, t_wait - t0, t_end - t_wait, t_eval - t_end, t_commit - t_eval,
             fedci_mono() - t_commit);
    fedc_log(FEDC_LOG_INFO, "server", "round %u committed: %u/%u results, train loss %.4f%s",
             rec.round, rec.participants, rec.selected, rec.train_loss, rec.evaluated ? "" : "");
    if (s->opts.on_round) s->opts.on_round(s->opts.user, &rec, s->attempt, sha);
    return FEDC_OK;
}

fedc_status fedc_server_run(fedc_server *s, fedc_err *err)
{
    fedc_status st = FEDC_OK;
    uint32_t attempt = 0;
    while (!s->stop && fedc_engine_last_round(s->engine) < s->rounds) {
        int aborted = 0;
        st = run_round(s, attempt, &aborted, err);
        if (st != FEDC_OK) break;
        if (aborted) {
            attempt++;
            sleep_s(s->retry_delay);
        } else {
            attempt = 0;
        }
    }
    if (st == FEDC_OK && s->stop)
        st = fedc_err_set(err, FEDC_ERR_ABORTED,
                          "stopped after round %u; restart with the same "
                          "state directory to resume",
                          fedc_engine_last_round(s->engine));
    if (st != FEDC_OK) return st;

    /* the end: the final model, then 'done' for the clients */
    char sha[65], path[4096];
    fedc_vec_sha256_hex(s->num_params, fedc_engine_global(s->engine), sha);
    snprintf(path, sizeof path, "%s/model.safetensors", fedc_store_dir(s->store));
    FEDC_TRY(write_model(s, path, fedc_engine_last_round(s->engine), sha, err));
    FEDC_TRY(fedc_store_run_finish(s->store, sha, err));
    pthread_mutex_lock(&s->lock);
    s->phase = PHASE_DONE;
    s->final_rounds = fedc_engine_last_round(s->engine);
    memcpy(s->final_sha, sha, sizeof sha);
    fedci_server_wake(s, 1);
    pthread_mutex_unlock(&s->lock);
    fedc_log(FEDC_LOG_INFO, "server", "run %s finished after %u rounds: model %s", s->run_id,
             s->final_rounds, sha);
    double until = fedci_mono() + s->linger;
    while (!s->stop && (s->opts.serve_on || fedci_mono() < until)) sleep_s(0.05);
    return FEDC_OK;
}
