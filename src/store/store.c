/*
 * The run store: SQLite (WAL, synchronous = FULL) for the run, committed rounds, their metrics
 * and participation, and the allow-list; checkpoint files named per round. Contracts in
 * fedc/store.h. Every statement is prepared with bound parameters (no SQL built from data).
 */
#include "fedc/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fedc/alloc.h"

#define SCHEMA_VERSION "1"

struct fedc_store {
    char *dir;
    char *db_path;
    sqlite3 *db;
    char run_id[33];
};

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS clients(id INTEGER PRIMARY KEY, pubkey TEXT NOT NULL UNIQUE,"
    " label TEXT NOT NULL DEFAULT '', added INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS runs(id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
    " config TEXT NOT NULL, rounds INTEGER NOT NULL, started INTEGER NOT NULL,"
    " finished INTEGER, model_sha256 TEXT);"
    "CREATE TABLE IF NOT EXISTS rounds(run TEXT NOT NULL, round INTEGER NOT NULL,"
    " attempt INTEGER NOT NULL, committed INTEGER NOT NULL, model_sha256 TEXT NOT NULL,"
    " checkpoint TEXT NOT NULL, selected INTEGER NOT NULL, participants INTEGER NOT NULL,"
    " rejected INTEGER NOT NULL, seconds REAL, PRIMARY KEY(run, round));"
    "CREATE TABLE IF NOT EXISTS metrics(run TEXT NOT NULL, round INTEGER NOT NULL,"
    " name TEXT NOT NULL, value REAL, PRIMARY KEY(run, round, name));"
    "CREATE TABLE IF NOT EXISTS participation(run TEXT NOT NULL, round INTEGER NOT NULL,"
    " client INTEGER NOT NULL, status TEXT NOT NULL, num_examples INTEGER, train_loss REAL,"
    " fit_seconds REAL, bytes_up INTEGER, detail TEXT, PRIMARY KEY(run, round, client));";

static fedc_status db_error(fedc_store *st, fedc_err *err, const char *what)
{
    return fedc_err_set(err, FEDC_ERR_IO, "%s: %s: %s", st->db_path, what, sqlite3_errmsg(st->db));
}

static fedc_status exec(fedc_store *st, const char *sql, fedc_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fedc_status s = fedc_err_set(err, FEDC_ERR_IO, "%s: %s", st->db_path,
                                     msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return s;
    }
    return FEDC_OK;
}

static fedc_status prepare(fedc_store *st, const char *sql, sqlite3_stmt **out, fedc_err *err)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, out, NULL) != SQLITE_OK) {
        *out = NULL;
        return db_error(st, err, "prepare");
    }
    return FEDC_OK;
}

static char *join_path(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = fedc_malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return (mkdir(buf, mode) != 0 && errno != EEXIST) ? -1 : 0;
}

/* Removes temporaries a crash may have left in DIR/checkpoints (safetensors' "*.tmp-*"). */
static void remove_stale_temporaries(const char *cdir)
{
    DIR *d = opendir(cdir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strstr(e->d_name, ".tmp-")) continue;
        snprintf(path, sizeof path, "%s/%s", cdir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

void fedc_store_close(fedc_store *st)
{
    if (!st) return;
    if (st->db) sqlite3_close(st->db);
    fedc_free(st->dir);
    fedc_free(st->db_path);
    fedc_free(st);
}

const char *fedc_store_dir(const fedc_store *st) { return st->dir; }

fedc_status fedc_store_open(const char *dir, fedc_store **out, fedc_err *err)
{
    *out = NULL;
    if (mkdir_p(dir, 0700) != 0)
        return fedc_err_set(err, FEDC_ERR_IO, "cannot create state directory %s: %s", dir,
                            strerror(errno));
    fedc_store *st = fedc_calloc(1, sizeof *st);
    if (!st) return fedc_err_set(err, FEDC_ERR_NOMEM, "store: out of memory");
    st->dir = fedc_strdup(dir);
    st->db_path = join_path(dir, "fedc.db");
    char *cdir = join_path(dir, "checkpoints");
    fedc_status s = FEDC_OK;
    if (!st->dir || !st->db_path || !cdir)
        s = fedc_err_set(err, FEDC_ERR_NOMEM, "store: out of memory");
    if (s == FEDC_OK && mkdir(cdir, 0700) != 0 && errno != EEXIST)
        s = fedc_err_set(err, FEDC_ERR_IO, "cannot create %s: %s", cdir, strerror(errno));
    if (s == FEDC_OK) {
        fsync_dir(dir);
        remove_stale_temporaries(cdir);
        if (sqlite3_open_v2(st->db_path, &st->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                            NULL) != SQLITE_OK)
            s = fedc_err_set(err, FEDC_ERR_IO, "%s: cannot open: %s", st->db_path,
                             st->db ? sqlite3_errmsg(st->db) : "out of memory");
    }
    if (s == FEDC_OK) {
        sqlite3_busy_timeout(st->db, 5000);
        sqlite3_extended_result_codes(st->db, 1);
        s = exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err);
        if (s != FEDC_OK)
            s = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: not a fedc state database (%s)",
                             st->db_path, fedc_err_message(err));
    }
    if (s == FEDC_OK) s = exec(st, "BEGIN IMMEDIATE;", err);
    if (s == FEDC_OK) {
        s = exec(st, schema, err);
        sqlite3_stmt *q = NULL;
        if (s == FEDC_OK) s = prepare(st, "SELECT value FROM meta WHERE key='schema'", &q, err);
        if (s == FEDC_OK) {
            int rc = sqlite3_step(q);
            if (rc == SQLITE_ROW) {
                const char *v = (const char *)sqlite3_column_text(q, 0);
                if (!v || strcmp(v, SCHEMA_VERSION) != 0)
                    s = fedc_err_set(err, FEDC_ERR_FORMAT,
                                     "%s: schema version %s, this fedc knows %s", st->db_path,
                                     v ? v : "?", SCHEMA_VERSION);
            } else if (rc == SQLITE_DONE) {
                s = exec(st, "INSERT INTO meta(key, value) VALUES('schema', '" SCHEMA_VERSION "');",
                         err);
            } else {
                s = db_error(st, err, "reading the schema version");
            }
        }
        sqlite3_finalize(q);
        if (s == FEDC_OK)
            s = exec(st, "COMMIT;", err);
        else
            sqlite3_exec(st->db, "ROLLBACK;", NULL, NULL, NULL);
    }
    fedc_free(cdir);
    if (s != FEDC_OK) {
        fedc_store_close(st);
        return s;
    }
    *out = st;
    return FEDC_OK;
}

/* ---- allow-list ---- */

static fedc_status allow_one(fedc_store *st, const uint8_t pk[FEDC_KEY_PUBLIC_BYTES],
                             const char *label, uint32_t *id, int *added, fedc_err *err)
{
    char hex[FEDC_KEY_PUBLIC_HEX];
    fedc_key_public_to_hex(pk, hex);
    sqlite3_stmt *q = NULL;
    FEDC_TRY(prepare(st, "SELECT id FROM clients WHERE pubkey = ?1", &q, err));
    sqlite3_bind_text(q, 1, hex, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if (id) *id = (uint32_t)sqlite3_column_int64(q, 0);
        if (added) *added = 0;
        sqlite3_finalize(q);
        return FEDC_OK;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return db_error(st, err, "reading the allow-list");
    FEDC_TRY(prepare(st,
                     "INSERT INTO clients(id, pubkey, label, added) VALUES("
                     "(SELECT COALESCE(MAX(id) + 1, 0) FROM clients), ?1, ?2, ?3) RETURNING id",
                     &q, err));
    sqlite3_bind_text(q, 1, hex, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, label ? label : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)time(NULL));
    rc = sqlite3_step(q);
    fedc_status s = FEDC_OK;
    if (rc == SQLITE_ROW) {
        if (id) *id = (uint32_t)sqlite3_column_int64(q, 0);
        if (added) *added = 1;
    } else {
        s = db_error(st, err, "adding a key to the allow-list");
    }
    sqlite3_finalize(q);
    return s;
}

fedc_status fedc_store_allow(fedc_store *st, const uint8_t pk[FEDC_KEY_PUBLIC_BYTES],
                             const char *label, uint32_t *id, int *added, fedc_err *err)
{
    FEDC_TRY(exec(st, "BEGIN IMMEDIATE;", err));
    fedc_status s = allow_one(st, pk, label, id, added, err);
    if (s == FEDC_OK) s = exec(st, "COMMIT;", err);
    if (s != FEDC_OK) sqlite3_exec(st->db, "ROLLBACK;", NULL, NULL, NULL);
    return s;
}

fedc_status fedc_store_allow_file(fedc_store *st, const char *path, size_t *added, fedc_err *err)
{
    if (added) *added = 0;
    FILE *f = fopen(path, "r");
    if (!f) return fedc_err_set(err, FEDC_ERR_IO, "%s: %s", path, strerror(errno));
    fedc_status s = exec(st, "BEGIN IMMEDIATE;", err);
    char line[1024];
    int lineno = 0;
    size_t n = 0;
    while (s == FEDC_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0') continue;
        char *end = p;
        while (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') end++;
        char *label = end;
        if (*end) {
            *end = '\0';
            label = end + 1;
            while (*label == ' ' || *label == '\t') label++;
            size_t ll = strlen(label);
            while (ll && (label[ll - 1] == '\n' || label[ll - 1] == '\r' || label[ll - 1] == ' '))
                label[--ll] = '\0';
        }
        uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
        fedc_err perr;
        if (fedc_key_public_parse(p, pk, &perr) != FEDC_OK) {
            s = fedc_err_set(err, FEDC_ERR_FORMAT, "%s:%d: %s", path, lineno,
                             fedc_err_message(&perr));
            break;
        }
        int was_added = 0;
        s = allow_one(st, pk, label, NULL, &was_added, err);
        n += (size_t)was_added;
    }
    if (s == FEDC_OK && ferror(f)) s = fedc_err_set(err, FEDC_ERR_IO, "%s: read error", path);
    fclose(f);
    if (s == FEDC_OK) s = exec(st, "COMMIT;", err);
    if (s != FEDC_OK) {
        sqlite3_exec(st->db, "ROLLBACK;", NULL, NULL, NULL);
        return s;
    }
    if (added) *added = n;
    return FEDC_OK;
}

fedc_status fedc_store_clients(fedc_store *st, fedc_store_client **out, size_t *n, fedc_err *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *q = NULL;
    FEDC_TRY(prepare(st, "SELECT id, pubkey, label, added FROM clients ORDER BY id", &q, err));
    size_t cap = 0, cnt = 0;
    fedc_store_client *v = NULL;
    fedc_status s = FEDC_OK;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? 2 * cap : 64;
            fedc_store_client *nv = fedc_realloc(v, nc * sizeof *nv);
            if (!nv) {
                s = fedc_err_set(err, FEDC_ERR_NOMEM, "store: out of memory");
                break;
            }
            v = nv;
            cap = nc;
        }
        fedc_store_client *c = &v[cnt];
        memset(c, 0, sizeof *c);
        c->id = (uint32_t)sqlite3_column_int64(q, 0);
        const char *hex = (const char *)sqlite3_column_text(q, 1);
        size_t got = 0;
        if (!hex || sodium_hex2bin(c->pk, sizeof c->pk, hex, strlen(hex), NULL, &got, NULL) != 0 ||
            got != sizeof c->pk) {
            s = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: allow-list entry %u is corrupt",
                             st->db_path, c->id);
            break;
        }
        const char *label = (const char *)sqlite3_column_text(q, 2);
        snprintf(c->label, sizeof c->label, "%s", label ? label : "");
        c->added = sqlite3_column_int64(q, 3);
        cnt++;
    }
    if (s == FEDC_OK && rc != SQLITE_DONE) s = db_error(st, err, "reading the allow-list");
    sqlite3_finalize(q);
    if (s != FEDC_OK) {
        fedc_free(v);
        return s;
    }
    *out = v;
    *n = cnt;
    return FEDC_OK;
}

/* ---- the run ---- */

static fedc_status load_last_round(fedc_store *st, fedc_store_run *run, fedc_err *err)
{
    sqlite3_stmt *q = NULL;
    FEDC_TRY(prepare(st,
                     "SELECT round, model_sha256, checkpoint FROM rounds WHERE run = ?1 "
                     "ORDER BY round DESC LIMIT 1",
                     &q, err));
    sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    fedc_status s = FEDC_OK;
    if (rc == SQLITE_ROW) {
        run->last_round = (uint32_t)sqlite3_column_int64(q, 0);
        const char *sha = (const char *)sqlite3_column_text(q, 1);
        const char *ck = (const char *)sqlite3_column_text(q, 2);
        snprintf(run->model_sha256, sizeof run->model_sha256, "%s", sha ? sha : "");
        if (ck && *ck)
            snprintf(run->checkpoint, sizeof run->checkpoint, "%s/checkpoints/%s", st->dir, ck);
    } else if (rc != SQLITE_DONE) {
        s = db_error(st, err, "reading the last round");
    }
    sqlite3_finalize(q);
    return s;
}

fedc_status fedc_store_run_open(fedc_store *st, const char *config_text, const char *fingerprint,
                                uint32_t rounds, fedc_store_run *run, int *resumed, fedc_err *err)
{
    memset(run, 0, sizeof *run);
    *resumed = 0;
    sqlite3_stmt *q = NULL;
    FEDC_TRY(exec(st, "BEGIN IMMEDIATE;", err));
    fedc_status s = prepare(st,
                            "SELECT id, fingerprint, finished FROM runs ORDER BY started DESC, "
                            "rowid DESC LIMIT 1",
                            &q, err);
    int rc = s == FEDC_OK ? sqlite3_step(q) : SQLITE_ERROR;
    if (s == FEDC_OK && rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        const char *fp = (const char *)sqlite3_column_text(q, 1);
        if (!id || !fp || strcmp(fp, fingerprint) != 0) {
            s = fedc_err_set(err, FEDC_ERR_STATE,
                             "the state dir %s holds run %s of a different configuration; use a "
                             "new --state directory for a new run",
                             st->dir, id ? id : "?");
        } else {
            snprintf(st->run_id, sizeof st->run_id, "%s", id);
            run->finished = sqlite3_column_type(q, 2) != SQLITE_NULL;
            *resumed = 1;
        }
    } else if (s == FEDC_OK && rc == SQLITE_DONE) {
        uint8_t rnd[16];
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2hex(st->run_id, sizeof st->run_id, rnd, sizeof rnd);
        sqlite3_stmt *ins = NULL;
        s = prepare(st,
                    "INSERT INTO runs(id, fingerprint, config, rounds, started) "
                    "VALUES(?1, ?2, ?3, ?4, ?5)",
                    &ins, err);
        if (s == FEDC_OK) {
            sqlite3_bind_text(ins, 1, st->run_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 2, fingerprint, -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 3, config_text, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 4, rounds);
            sqlite3_bind_int64(ins, 5, (sqlite3_int64)time(NULL));
            if (sqlite3_step(ins) != SQLITE_DONE) s = db_error(st, err, "creating the run");
        }
        sqlite3_finalize(ins);
    } else if (s == FEDC_OK) {
        s = db_error(st, err, "reading the run");
    }
    sqlite3_finalize(q);
    if (s == FEDC_OK) s = load_last_round(st, run, err);
    if (s == FEDC_OK) s = exec(st, "COMMIT;", err);
    if (s != FEDC_OK) {
        sqlite3_exec(st->db, "ROLLBACK;", NULL, NULL, NULL);
        st->run_id[0] = '\0';
        return s;
    }
    snprintf(run->run_id, sizeof run->run_id, "%s", st->run_id);
    run->rounds = rounds;
    return FEDC_OK;
}

fedc_status fedc_store_run_get(fedc_store *st, fedc_store_run *run, fedc_err *err)
{
    memset(run, 0, sizeof *run);
    sqlite3_stmt *q = NULL;
    FEDC_TRY(prepare(st,
                     "SELECT id, rounds, finished FROM runs ORDER BY started DESC, rowid DESC "
                     "LIMIT 1",
                     &q, err));
    int rc = sqlite3_step(q);
    fedc_status s = FEDC_OK;
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(q, 0);
        snprintf(st->run_id, sizeof st->run_id, "%s", id ? id : "");
        run->rounds = (uint32_t)sqlite3_column_int64(q, 1);
        run->finished = sqlite3_column_type(q, 2) != SQLITE_NULL;
    } else if (rc == SQLITE_DONE) {
        s = fedc_err_set(err, FEDC_ERR_NOTFOUND, "%s holds no run yet", st->dir);
    } else {
        s = db_error(st, err, "reading the run");
    }
    sqlite3_finalize(q);
    if (s == FEDC_OK) s = load_last_round(st, run, err);
    if (s == FEDC_OK) snprintf(run->run_id, sizeof run->run_id, "%s", st->run_id);
    return s;
}

fedc_status fedc_store_run_finish(fedc_store *st, const char *model_sha256, fedc_err *err)
{
    sqlite3_stmt *q = NULL;
    FEDC_TRY(
        prepare(st, "UPDATE runs SET finished = ?1, model_sha256 = ?2 WHERE id = ?3", &q, err));
    sqlite3_bind_int64(q, 1, (sqlite3_int64)time(NULL));
    sqlite3_bind_text(q, 2, model_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, st->run_id, -1, SQLITE_STATIC);
    fedc_status s =
        sqlite3_step(q) == SQLITE_DONE ? FEDC_OK : db_error(st, err, "finishing the run");
    sqlite3_finalize(q);
    return s;
}

void fedc_store_checkpoint_path(const fedc_store *st, uint32_t round, char *buf, size_t size)
{
    snprintf(buf, size, "%s/checkpoints/round-%08u.safetensors", st->dir, round);
}

/* The record's fields kept as named metrics. */
#define REC_METRICS(X)                                                                             \
    X("examples", examples)                                                                        \
    X("train_loss", train_loss) X("test_loss", test_loss) X("test_accuracy", test_accuracy)        \
        X("fed_loss", fed_loss) X("fed_accuracy", fed_accuracy) X("fed_clients", fed_clients)      \
            X("bytes_down", bytes_down) X("bytes_up", bytes_up) X("fit_seconds", fit_seconds)      \
                X("update_norm", update_norm) X("evaluated", evaluated)                            \
                    X("fed_evaluated", fed_evaluated)

static fedc_status put_metric(fedc_store *st, sqlite3_stmt *q, uint32_t round, const char *name,
                              double v, fedc_err *err)
{
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, round);
    sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
    if (isfinite(v))
        sqlite3_bind_double(q, 4, v);
    else
        sqlite3_bind_null(q, 4);
    return sqlite3_step(q) == SQLITE_DONE ? FEDC_OK : db_error(st, err, "writing a metric");
}

fedc_status fedc_store_commit_round(fedc_store *st, const fedc_store_round *r,
                                    const fedc_store_participant *p, size_t np, fedc_err *err)
{
    const fedc_round_record *rec = &r->rec;
    FEDC_TRY(exec(st, "BEGIN IMMEDIATE;", err));
    sqlite3_stmt *q = NULL;
    fedc_status s =
        prepare(st, "SELECT COALESCE(MAX(round), 0) FROM rounds WHERE run = ?1", &q, err);
    if (s == FEDC_OK) {
        sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
        if (sqlite3_step(q) != SQLITE_ROW)
            s = db_error(st, err, "reading the last round");
        else if ((uint32_t)sqlite3_column_int64(q, 0) + 1 != rec->round)
            s = fedc_err_set(err, FEDC_ERR_STATE, "%s: committing round %u after round %lld",
                             st->db_path, rec->round, (long long)sqlite3_column_int64(q, 0));
    }
    sqlite3_finalize(q);
    q = NULL;
    if (s == FEDC_OK)
        s = prepare(st,
                    "INSERT INTO rounds(run, round, attempt, committed, model_sha256, checkpoint,"
                    " selected, participants, rejected, seconds) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    &q, err);
    if (s == FEDC_OK) {
        sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, rec->round);
        sqlite3_bind_int64(q, 3, r->attempt);
        sqlite3_bind_int64(q, 4, r->committed ? r->committed : (sqlite3_int64)time(NULL));
        sqlite3_bind_text(q, 5, r->model_sha256, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 6, r->checkpoint, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 7, rec->selected);
        sqlite3_bind_int64(q, 8, rec->participants);
        sqlite3_bind_int64(q, 9, rec->rejected);
        sqlite3_bind_double(q, 10, rec->seconds);
        if (sqlite3_step(q) != SQLITE_DONE) s = db_error(st, err, "committing the round");
    }
    sqlite3_finalize(q);
    q = NULL;
    if (s == FEDC_OK)
        s = prepare(st, "INSERT INTO metrics(run, round, name, value) VALUES(?1, ?2, ?3, ?4)", &q,
                    err);
#define PUT(name, field)                                                                           \
    if (s == FEDC_OK) s = put_metric(st, q, rec->round, name, (double)rec->field, err);
    REC_METRICS(PUT)
#undef PUT
    sqlite3_finalize(q);
    q = NULL;
    if (s == FEDC_OK)
        s = prepare(st,
                    "INSERT OR REPLACE INTO participation(run, round, client, status, num_examples,"
                    " train_loss, fit_seconds, bytes_up, detail) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    &q, err);
    for (size_t i = 0; s == FEDC_OK && i < np; i++) {
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, rec->round);
        sqlite3_bind_int64(q, 3, p[i].client);
        sqlite3_bind_text(q, 4, p[i].status ? p[i].status : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 5, (sqlite3_int64)p[i].num_examples);
        if (isfinite(p[i].train_loss))
            sqlite3_bind_double(q, 6, p[i].train_loss);
        else
            sqlite3_bind_null(q, 6);
        sqlite3_bind_double(q, 7, p[i].fit_seconds);
        sqlite3_bind_int64(q, 8, (sqlite3_int64)p[i].bytes_up);
        if (p[i].detail)
            sqlite3_bind_text(q, 9, p[i].detail, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(q, 9);
        if (sqlite3_step(q) != SQLITE_DONE) s = db_error(st, err, "writing participation");
    }
    sqlite3_finalize(q);
    if (s == FEDC_OK) s = exec(st, "COMMIT;", err);
    if (s != FEDC_OK) sqlite3_exec(st->db, "ROLLBACK;", NULL, NULL, NULL);
    return s;
}

static double col_double(sqlite3_stmt *q, int i)
{
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NAN : sqlite3_column_double(q, i);
}

fedc_status fedc_store_rounds(fedc_store *st, fedc_store_round_fn fn, void *user, fedc_err *err)
{
    sqlite3_stmt *q = NULL, *m = NULL;
    FEDC_TRY(prepare(st,
                     "SELECT round, attempt, committed, model_sha256, checkpoint, selected,"
                     " participants, rejected, seconds FROM rounds WHERE run = ?1 ORDER BY round",
                     &q, err));
    fedc_status s =
        prepare(st, "SELECT name, value FROM metrics WHERE run = ?1 AND round = ?2", &m, err);
    sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
    int rc = SQLITE_DONE;
    while (s == FEDC_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        fedc_store_round r;
        memset(&r, 0, sizeof r);
        fedc_round_record *rec = &r.rec;
        rec->round = (uint32_t)sqlite3_column_int64(q, 0);
        r.attempt = (uint32_t)sqlite3_column_int64(q, 1);
        r.committed = sqlite3_column_int64(q, 2);
        const char *sha = (const char *)sqlite3_column_text(q, 3);
        snprintf(r.model_sha256, sizeof r.model_sha256, "%s", sha ? sha : "");
        const char *ck = (const char *)sqlite3_column_text(q, 4);
        snprintf(r.checkpoint, sizeof r.checkpoint, "%s", ck ? ck : "");
        rec->selected = (uint32_t)sqlite3_column_int64(q, 5);
        rec->participants = (uint32_t)sqlite3_column_int64(q, 6);
        rec->rejected = (uint32_t)sqlite3_column_int64(q, 7);
        rec->seconds = col_double(q, 8);
        rec->train_loss = rec->test_loss = rec->test_accuracy = NAN;
        rec->fed_loss = rec->fed_accuracy = NAN;
        sqlite3_reset(m);
        sqlite3_bind_text(m, 1, st->run_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(m, 2, rec->round);
        while (sqlite3_step(m) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(m, 0);
            double v = col_double(m, 1);
            if (!name) continue;
            double c = isfinite(v) ? v : 0; /* counts are never NULL; losses may be */
            if (!strcmp(name, "examples"))
                rec->examples = (uint64_t)c;
            else if (!strcmp(name, "train_loss"))
                rec->train_loss = v;
            else if (!strcmp(name, "test_loss"))
                rec->test_loss = v;
            else if (!strcmp(name, "test_accuracy"))
                rec->test_accuracy = v;
            else if (!strcmp(name, "fed_loss"))
                rec->fed_loss = v;
            else if (!strcmp(name, "fed_accuracy"))
                rec->fed_accuracy = v;
            else if (!strcmp(name, "fed_clients"))
                rec->fed_clients = (uint32_t)c;
            else if (!strcmp(name, "bytes_down"))
                rec->bytes_down = (uint64_t)c;
            else if (!strcmp(name, "bytes_up"))
                rec->bytes_up = (uint64_t)c;
            else if (!strcmp(name, "fit_seconds"))
                rec->fit_seconds = c;
            else if (!strcmp(name, "update_norm"))
                rec->update_norm = c;
            else if (!strcmp(name, "evaluated"))
                rec->evaluated = (int)c;
            else if (!strcmp(name, "fed_evaluated"))
                rec->fed_evaluated = (int)c;
        }
        if (fn(user, &r)) break;
    }
    if (s == FEDC_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
        s = db_error(st, err, "reading rounds");
    sqlite3_finalize(q);
    sqlite3_finalize(m);
    return s;
}

fedc_status fedc_store_participants(fedc_store *st, uint32_t round, fedc_store_part_fn fn,
                                    void *user, fedc_err *err)
{
    sqlite3_stmt *q = NULL;
    FEDC_TRY(
        prepare(st,
                "SELECT client, status, num_examples, train_loss, fit_seconds, bytes_up, detail"
                " FROM participation WHERE run = ?1 AND round = ?2 ORDER BY client",
                &q, err));
    sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, round);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        fedc_store_participant p;
        p.client = (uint32_t)sqlite3_column_int64(q, 0);
        p.status = (const char *)sqlite3_column_text(q, 1);
        p.num_examples = (uint64_t)sqlite3_column_int64(q, 2);
        p.train_loss = col_double(q, 3);
        p.fit_seconds = col_double(q, 4);
        p.bytes_up = (uint64_t)sqlite3_column_int64(q, 5);
        p.detail = (const char *)sqlite3_column_text(q, 6);
        if (fn(user, &p)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    fedc_status s = rc == SQLITE_DONE ? FEDC_OK : db_error(st, err, "reading participation");
    sqlite3_finalize(q);
    return s;
}

fedc_status fedc_store_prune_checkpoints(fedc_store *st, uint32_t keep, fedc_err *err)
{
    if (keep == 0) return FEDC_OK;
    sqlite3_stmt *q = NULL;
    FEDC_TRY(prepare(st,
                     "SELECT checkpoint FROM rounds WHERE run = ?1 AND checkpoint != '' "
                     "ORDER BY round DESC LIMIT -1 OFFSET ?2",
                     &q, err));
    sqlite3_bind_text(q, 1, st->run_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, keep);
    char path[4096];
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *ck = (const char *)sqlite3_column_text(q, 0);
        if (!ck || strchr(ck, '/')) continue;
        snprintf(path, sizeof path, "%s/checkpoints/%s", st->dir, ck);
        unlink(path); /* already gone is fine */
    }
    fedc_status s = rc == SQLITE_DONE ? FEDC_OK : db_error(st, err, "listing checkpoints");
    sqlite3_finalize(q);
    return s;
}
