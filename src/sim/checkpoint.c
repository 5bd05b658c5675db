/*
 * Checkpoints of `fedc sim` (src/sim/checkpoint.h): where they live, how one is committed
 * atomically and old ones pruned, and the sidecar file of the simulated clients' own state
 * (SCAFFOLD's c_i, error feedback's residuals), which the engine's checkpoint does not hold
 * because it lives with the clients, not the server.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fedc/alloc.h"
#include "fedc/safetensors.h"
#include "fedc/sim.h"
#include "sim/checkpoint.h"

#define MANIFEST_MAGIC "fedc-sim-checkpoint 1"
#define PATH_MAX_LEN 4096

static const char *const kind_prefix[2] = {"scaffold.c.", "residual."};

void fedci_ckpt_path(char *buf, size_t size, const char *dir, uint32_t round, int tmp,
                     const char *file)
{
    snprintf(buf, size, "%s/round-%08" PRIu32 "%s%s%s", dir, round, tmp ? ".tmp" : "",
             file[0] ? "/" : "", file);
}

static fedc_status io_error(fedc_err *err, const char *what, const char *path)
{
    return fedc_err_set(err, FEDC_ERR_IO, "checkpoint: cannot %s %s: %s", what, path,
                        strerror(errno));
}

static fedc_status mkdir_p(const char *path, fedc_err *err)
{
    char buf[PATH_MAX_LEN];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return fedc_err_set(err, FEDC_ERR_IO, "checkpoint: path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return io_error(err, "create", buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return io_error(err, "create", buf);
    return FEDC_OK;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Removes a checkpoint directory: the files fedc writes there (and stale temporaries of the
 * safetensors writer), then the directory; anything else is left, and so is the directory. */
static void remove_ckpt_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    char f[PATH_MAX_LEN];
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (strcmp(n, "engine.safetensors") == 0 || strcmp(n, "clients.safetensors") == 0 ||
            strcmp(n, "MANIFEST") == 0 || strstr(n, ".tmp-")) {
            snprintf(f, sizeof f, "%s/%s", path, n);
            unlink(f);
        }
    }
    closedir(d);
    rmdir(path);
}

/* "round-NNNNNNNN" (exactly 8 digits) -> round; 0 when the name is not one. */
static uint32_t round_of_name(const char *name)
{
    if (strncmp(name, "round-", 6) != 0 || strlen(name) != 14) return 0;
    uint32_t r = 0;
    for (int i = 6; i < 14; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        r = r * 10 + (uint32_t)(name[i] - '0');
    }
    return r;
}

/* The complete checkpoints in dir (round-N with a MANIFEST), ascending, into *rounds (freed by
 * the caller). */
static fedc_status list_rounds(const char *dir, uint32_t **rounds, size_t *n, fedc_err *err)
{
    *rounds = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return FEDC_OK;
        return io_error(err, "read", dir);
    }
    size_t cap = 0;
    struct dirent *de;
    fedc_status st = FEDC_OK;
    while ((de = readdir(d))) {
        uint32_t r = round_of_name(de->d_name);
        if (r == 0) continue;
        char m[PATH_MAX_LEN];
        struct stat sb;
        fedci_ckpt_path(m, sizeof m, dir, r, 0, "MANIFEST");
        if (stat(m, &sb) != 0) continue; /* not complete */
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            uint32_t *nr = fedc_realloc(*rounds, cap * sizeof *nr);
            if (!nr) {
                st = fedc_err_set(err, FEDC_ERR_NOMEM, "checkpoint: out of memory");
                break;
            }
            *rounds = nr;
        }
        (*rounds)[(*n)++] = r;
    }
    closedir(d);
    if (st != FEDC_OK) {
        fedc_free(*rounds);
        *rounds = NULL;
        *n = 0;
        return st;
    }
    /* insertion sort: a directory holds a handful */
    for (size_t i = 1; i < *n; i++)
        for (size_t j = i; j > 0 && (*rounds)[j - 1] > (*rounds)[j]; j--) {
            uint32_t t = (*rounds)[j];
            (*rounds)[j] = (*rounds)[j - 1];
            (*rounds)[j - 1] = t;
        }
    return FEDC_OK;
}

fedc_status fedc_sim_checkpoint_latest(const char *dir, uint32_t *round, fedc_err *err)
{
    *round = 0;
    uint32_t *r;
    size_t n;
    FEDC_TRY(list_rounds(dir, &r, &n, err));
    if (n) *round = r[n - 1];
    fedc_free(r);
    return FEDC_OK;
}

fedc_status fedci_ckpt_begin(const char *dir, uint32_t round, fedc_err *err)
{
    FEDC_TRY(mkdir_p(dir, err));
    char tmp[PATH_MAX_LEN];
    fedci_ckpt_path(tmp, sizeof tmp, dir, round, 1, "");
    remove_ckpt_dir(tmp); /* a stale one from a crash */
    if (mkdir(tmp, 0755) != 0) return io_error(err, "create", tmp);
    return FEDC_OK;
}

fedc_status fedci_ckpt_commit(const char *dir, uint32_t round, size_t client_tensors, int keep,
                              fedc_err *err)
{
    char tmp[PATH_MAX_LEN], fin[PATH_MAX_LEN], m[PATH_MAX_LEN];
    fedci_ckpt_path(m, sizeof m, dir, round, 1, "MANIFEST");
    FILE *f = fopen(m, "w");
    if (!f) return io_error(err, "write", m);
    fprintf(f, "%s\nround %" PRIu32 "\nclient_tensors %zu\n", MANIFEST_MAGIC, round,
            client_tensors);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0) bad = 1;
    if (bad) return io_error(err, "write", m);
    fedci_ckpt_path(tmp, sizeof tmp, dir, round, 1, "");
    fedci_ckpt_path(fin, sizeof fin, dir, round, 0, "");
    fsync_dir(tmp);
    remove_ckpt_dir(fin); /* an older copy of this round (a run resumed before it) */
    if (rename(tmp, fin) != 0) return io_error(err, "rename to", fin);
    fsync_dir(dir);
    if (keep <= 0) return FEDC_OK;
    uint32_t *r;
    size_t n;
    if (list_rounds(dir, &r, &n, NULL) != FEDC_OK) return FEDC_OK; /* pruning is best effort */
    for (size_t i = 0; i + (size_t)keep < n; i++) {
        fedci_ckpt_path(fin, sizeof fin, dir, r[i], 0, "");
        remove_ckpt_dir(fin);
    }
    fedc_free(r);
    fsync_dir(dir);
    return FEDC_OK;
}

fedc_status fedci_ckpt_manifest(const char *dir, uint32_t round, size_t *client_tensors,
                                fedc_err *err)
{
    char m[PATH_MAX_LEN], line[128];
    fedci_ckpt_path(m, sizeof m, dir, round, 0, "MANIFEST");
    FILE *f = fopen(m, "r");
    if (!f) return io_error(err, "read", m);
    uint32_t r = 0;
    int ok = fgets(line, sizeof line, f) && strncmp(line, MANIFEST_MAGIC "\n", sizeof line) == 0 &&
             fscanf(f, "round %" SCNu32 " client_tensors %zu", &r, client_tensors) == 2 &&
             r == round;
    fclose(f);
    if (!ok)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: not a fedc sim checkpoint manifest of round %" PRIu32, m, round);
    return FEDC_OK;
}

/* ---- per-client state ---- */

size_t fedci_pool_state_count(const fedci_pool *p)
{
    size_t n = 0;
    for (uint32_t c = 0; c < p->num_clients; c++) {
        if (p->client_control && p->client_control[c]) n++;
        if (p->residual && p->residual[c]) n++;
    }
    return n;
}

void fedci_pool_state_pack(const fedci_pool *p, uint32_t *ids, float *data)
{
    float *const *tables[2] = {p->client_control, p->residual};
    size_t k = 0;
    for (int kind = 0; kind < 2; kind++) {
        if (!tables[kind]) continue;
        for (uint32_t c = 0; c < p->num_clients; c++) {
            if (!tables[kind][c]) continue;
            ids[2 * k] = (uint32_t)kind;
            ids[2 * k + 1] = c;
            memcpy(data + k * p->num_params, tables[kind][c], p->num_params * sizeof(float));
            k++;
        }
    }
}

fedc_status fedci_ckpt_write_clients(const char *path, size_t num_params, size_t n,
                                     const uint32_t *ids, const float *data, uint32_t round,
                                     fedc_err *err)
{
    fedc_layout *layout = fedc_layout_create();
    if (!layout) return fedc_err_set(err, FEDC_ERR_NOMEM, "checkpoint: out of memory");
    fedc_status st = FEDC_OK;
    int64_t shape[1] = {(int64_t)num_params};
    for (size_t i = 0; i < n && st == FEDC_OK; i++) {
        char name[FEDC_TENSOR_NAME_MAX];
        snprintf(name, sizeof name, "%s%" PRIu32, kind_prefix[ids[2 * i] & 1], ids[2 * i + 1]);
        st = fedc_layout_add(layout, name, 1, shape, err);
    }
    char rs[32];
    snprintf(rs, sizeof rs, "%" PRIu32, round);
    fedc_st_meta meta[] = {{"fedc_sim_clients", "1"}, {"round", rs}};
    if (st == FEDC_OK) st = fedc_safetensors_write(path, layout, data, meta, 2, err);
    fedc_layout_destroy(layout);
    return st;
}

fedc_status fedci_pool_state_load(fedci_pool *p, const char *path, size_t expect,
                                  const int *home, int rank, fedc_err *err)
{
    fedc_safetensors *st = NULL;
    FEDC_TRY(fedc_safetensors_read(path, 0, &st, err));
    fedc_status s = FEDC_OK;
    const char *magic = fedc_safetensors_meta(st, "fedc_sim_clients");
    if (!magic || strcmp(magic, "1") != 0)
        s = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: not a fedc sim client-state file", path);
    else if (st->layout->count != expect)
        s = fedc_err_set(err, FEDC_ERR_FORMAT,
                         "%s: %zu client-state tensors, the manifest says %zu", path,
                         st->layout->count, expect);
    float **tables[2] = {p->client_control, p->residual};
    for (size_t i = 0; i < st->layout->count && s == FEDC_OK; i++) {
        const fedc_tensor_info *t = &st->layout->tensors[i];
        int kind = -1;
        const char *num = NULL;
        for (int k = 0; k < 2 && kind < 0; k++)
            if (strncmp(t->name, kind_prefix[k], strlen(kind_prefix[k])) == 0) {
                kind = k;
                num = t->name + strlen(kind_prefix[k]);
            }
        char *end = NULL;
        unsigned long c = num && *num >= '0' && *num <= '9' ? strtoul(num, &end, 10) : 0;
        if (kind < 0 || !end || *end || c >= p->num_clients ||
            (num[0] == '0' && num[1])) { /* one spelling per client: no "01" */
            s = fedc_err_set(err, FEDC_ERR_FORMAT,
                             "%s: tensor '%s' is not scaffold.c.<client> or residual.<client> "
                             "with a client below clients.count = %u",
                             path, t->name, p->num_clients);
        } else if (!tables[kind]) {
            s = fedc_err_set(err, FEDC_ERR_CONFIG,
                             "%s: holds %s state (tensor '%s') that this run's configuration "
                             "does not keep (%s)",
                             path, kind == 0 ? "SCAFFOLD" : "error-feedback", t->name,
                             kind == 0 ? "strategy.name is not scaffold"
                                       : "no compress.upload with error feedback");
        } else if (t->numel != p->num_params) {
            s = fedc_err_set(err, FEDC_ERR_SHAPE, "%s: tensor '%s' has %zu values, the model %zu",
                             path, t->name, t->numel, p->num_params);
        } else if (!home || home[c] == rank) {
            if (!tables[kind][c] &&
                !(tables[kind][c] = fedc_malloc(p->num_params * sizeof(float))))
                s = fedc_err_set(err, FEDC_ERR_NOMEM, "checkpoint: out of memory");
            else
                memcpy(tables[kind][c], st->data + t->offset, p->num_params * sizeof(float));
        }
    }
    fedc_safetensors_destroy(st);
    return s;
}
