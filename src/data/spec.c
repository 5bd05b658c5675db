/*
 * fedc_data_load: parses a dataset spec ("csv:train.csv,test.csv?label=-1&standardize=1"),
 * dispatches to a loader and applies the options every kind shares (limit, test_limit,
 * standardize). Also the spec's option list, the whole-file reader the text loaders use and
 * the directory lister of the IDX and LEAF loaders.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"
#include "fedc/log.h"

/* ---- options ---------------------------------------------------------------------------- */

fedc_status fedci_opts_add(fedci_opts *o, const char *kv, size_t len, fedc_err *err)
{
    const char *eq = memchr(kv, '=', len);
    if (!eq || eq == kv)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': option '%.*s' is not key=value",
                            o->spec, (int)len, kv);
    size_t klen = (size_t)(eq - kv);
    for (size_t i = 0; i < o->count; i++)
        if (strlen(o->key[i]) == klen && memcmp(o->key[i], kv, klen) == 0)
            return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': option '%.*s' given twice",
                                o->spec, (int)klen, kv);
    if (o->count == FEDCI_OPTS_MAX)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': more than %d options",
                            o->spec, FEDCI_OPTS_MAX);
    char *k = fedc_malloc(klen + 1), *v = fedc_malloc(len - klen);
    if (!k || !v) {
        fedc_free(k);
        fedc_free(v);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset spec: out of memory");
    }
    memcpy(k, kv, klen);
    k[klen] = '\0';
    memcpy(v, eq + 1, len - klen - 1);
    v[len - klen - 1] = '\0';
    o->key[o->count] = k;
    o->val[o->count] = v;
    o->used[o->count] = 0;
    o->count++;
    return FEDC_OK;
}

fedc_status fedci_opts_parse(fedci_opts *o, const char *spec, const char *text, fedc_err *err)
{
    memset(o, 0, sizeof *o);
    o->spec = spec;
    if (!text) return FEDC_OK;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) FEDC_TRY(fedci_opts_add(o, p, len, err));
        if (!end) break;
        p = end + 1;
    }
    return FEDC_OK;
}

void fedci_opts_fini(fedci_opts *o)
{
    for (size_t i = 0; i < o->count; i++) {
        fedc_free(o->key[i]);
        fedc_free(o->val[i]);
    }
    o->count = 0;
}

const char *fedci_opt_str(fedci_opts *o, const char *key)
{
    for (size_t i = 0; i < o->count; i++)
        if (strcmp(o->key[i], key) == 0) {
            o->used[i] = 1;
            return o->val[i];
        }
    return NULL;
}

fedc_status fedci_opt_int(fedci_opts *o, const char *key, long long def, long long lo,
                          long long hi, long long *out, fedc_err *err)
{
    const char *v = fedci_opt_str(o, key);
    if (!v) {
        *out = def;
        return FEDC_OK;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': %s=%s is not an integer",
                            o->spec, key, v);
    if (x < lo || x > hi)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': %s=%s not in [%lld, %lld]",
                            o->spec, key, v, lo, hi);
    *out = x;
    return FEDC_OK;
}

fedc_status fedci_opt_double(fedci_opts *o, const char *key, double def, double *out,
                             fedc_err *err)
{
    const char *v = fedci_opt_str(o, key);
    if (!v) {
        *out = def;
        return FEDC_OK;
    }
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x == x) || x > 1e300 || x < -1e300)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': %s=%s is not a finite number",
                            o->spec, key, v);
    *out = x;
    return FEDC_OK;
}

fedc_status fedci_opt_bool(fedci_opts *o, const char *key, int def, int *out, fedc_err *err)
{
    const char *v = fedci_opt_str(o, key);
    if (!v) {
        *out = def;
        return FEDC_OK;
    }
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return FEDC_OK;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return FEDC_OK;
        }
    }
    return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': %s=%s is not a boolean (1/0)",
                        o->spec, key, v);
}

fedc_status fedci_opts_check(const fedci_opts *o, fedc_err *err)
{
    for (size_t i = 0; i < o->count; i++)
        if (!o->used[i])
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "dataset spec '%s': unknown option '%s' for this kind of dataset "
                                "(see `fedc help data`)",
                                o->spec, o->key[i]);
    return FEDC_OK;
}

/* ---- files ------------------------------------------------------------------------------ */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void fedci_free_names(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++) fedc_free(names[i]);
    fedc_free(names);
}

fedc_status fedci_list_dir(const char *dir, int (*keep)(const char *name, const void *ctx),
                           const void *ctx, int with_dir, char ***names, size_t *count,
                           fedc_err *err)
{
    *names = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return fedc_err_set(err, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO, "%s: %s", dir,
                            strerror(errno));
    char **v = NULL;
    size_t n = 0, cap = 0;
    fedc_status st = FEDC_OK;
    struct dirent *e;
    while (st == FEDC_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !keep(e->d_name, ctx)) continue;
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            char **nv = fedc_realloc(v, ncap * sizeof *nv);
            if (!nv) {
                st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory listing %s", dir);
                break;
            }
            v = nv;
            cap = ncap;
        }
        size_t len = (with_dir ? strlen(dir) + 1 : 0) + strlen(e->d_name) + 1;
        if (!(v[n] = fedc_malloc(len))) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory listing %s", dir);
            break;
        }
        snprintf(v[n++], len, "%s%s%s", with_dir ? dir : "", with_dir ? "/" : "", e->d_name);
    }
    closedir(d);
    if (st != FEDC_OK) {
        fedci_free_names(v, n);
        return st;
    }
    if (n) qsort(v, n, sizeof *v, cmp_names);
    *names = v;
    *count = n;
    return FEDC_OK;
}

fedc_status fedci_read_file(const char *path, size_t max_bytes, char **buf, size_t *len,
                            fedc_err *err)
{
    *buf = NULL;
    *len = 0;
    struct stat stbuf;
    if (stat(path, &stbuf) != 0)
        return fedc_err_set(err, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO, "%s: %s", path,
                            strerror(errno));
    if (S_ISDIR(stbuf.st_mode))
        return fedc_err_set(err, FEDC_ERR_IO, "%s: is a directory", path);
    gzFile f = gzopen(path, "rb");
    if (!f) return fedc_err_set(err, FEDC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(f, 1u << 17);
    size_t cap = (size_t)stbuf.st_size + 1, n = 0;
    if (cap < 4096) cap = 4096;
    char *b = fedc_malloc(cap);
    fedc_status st = FEDC_OK;
    if (!b) st = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", path);
    while (st == FEDC_OK) {
        if (cap - n < 2) {
            if (cap > max_bytes) {
                st = fedc_err_set(err, FEDC_ERR_RANGE, "%s: larger than the %zu-byte limit", path,
                                  max_bytes);
                break;
            }
            size_t ncap = cap * 2;
            char *nb = fedc_realloc(b, ncap);
            if (!nb) {
                st = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            b = nb;
            cap = ncap;
        }
        size_t want = cap - n - 1;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(f, b + n, (unsigned)want);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: corrupt gzip data after byte %zu: %s",
                              path, n, msg);
            break;
        }
        if (got == 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            if (zerr != Z_OK)
                st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: truncated gzip data after byte %zu: %s",
                                  path, n, msg);
            break;
        }
        n += (size_t)got;
        if (n > max_bytes) {
            st = fedc_err_set(err, FEDC_ERR_RANGE, "%s: larger than the %zu-byte limit", path,
                              max_bytes);
            break;
        }
    }
    gzclose(f);
    if (st != FEDC_OK) {
        fedc_free(b);
        return st;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return FEDC_OK;
}

/* ---- specs ------------------------------------------------------------------------------ */

/* Splits "a,b,c" into at most max fedc_malloc'd strings. Returns the count, max + 1 when there
 * are more (the first max are kept), or -1 on NOMEM (nothing kept). */
static int split_list(const char *s, char **out, int max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (n == max) return max + 1;
        out[n] = fedc_malloc(len + 1);
        if (!out[n]) {
            while (n > 0) fedc_free(out[--n]);
            return -1;
        }
        memcpy(out[n], p, len);
        out[n][len] = '\0';
        n++;
        if (!end) return n;
        p = end + 1;
    }
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++) fedc_free(l[i]);
}

static const char *const fmnist_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                               "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                               "Bag",         "Ankle boot"};

/* Finds a built-in IDX dataset's directory: $FEDC_DATASETS/sub, then the Debian location. */
static fedc_status builtin_idx(const char *sub, const char *display, fedci_opts *o,
                               fedc_dataset **train, fedc_dataset **test, fedc_err *err)
{
    char dirs[3][PATH_MAX];
    int nd = 0;
    const char *env = getenv("FEDC_DATASETS");
    if (env && *env) snprintf(dirs[nd++], PATH_MAX, "%s/%s", env, sub);
    snprintf(dirs[nd++], PATH_MAX, "/usr/share/datasets/%s", sub);
    snprintf(dirs[nd++], PATH_MAX, "/usr/local/share/datasets/%s", sub);
    char *paths[4] = {0};
    fedc_status st = FEDC_ERR_NOTFOUND;
    int d;
    for (d = 0; d < nd; d++) {
        struct stat sb;
        if (stat(dirs[d], &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        st = fedci_find_idx_files(dirs[d], NULL, paths, err);
        break;
    }
    if (d == nd)
        return fedc_err_set(err, FEDC_ERR_NOTFOUND,
                            "%s: not found in %s%s/usr/share/datasets/%s (install the Debian "
                            "package dataset-%s, or use idx:DIR)",
                            display, env && *env ? dirs[0] : "", env && *env ? " or " : "", sub, sub);
    if (st == FEDC_OK && (!paths[2] || !paths[3]))
        st = fedc_err_set(err, FEDC_ERR_NOTFOUND, "%s: %s has no t10k (test) files", display,
                          dirs[d]);
    if (st == FEDC_OK) {
        int is_fmnist = strcmp(sub, "fashion-mnist") == 0;
        st = fedci_load_idx(paths[0], paths[1], paths[2], paths[3], o, 10, display, train, test,
                            err);
        if (st == FEDC_OK && is_fmnist) {
            st = fedc_dataset_set_class_names(*train, fmnist_classes, err);
            if (st == FEDC_OK) st = fedc_dataset_set_class_names(*test, fmnist_classes, err);
            if (st != FEDC_OK) {
                fedc_dataset_destroy(*train);
                fedc_dataset_destroy(*test);
                *train = *test = NULL;
            }
        }
    }
    for (int i = 0; i < 4; i++) fedc_free(paths[i]);
    return st;
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static fedc_status load_idx_spec(const char *args, fedci_opts *o, fedc_dataset **train,
                                 fedc_dataset **test, fedc_err *err)
{
    char *list[5] = {0};
    int n = split_list(args, list, 4);
    fedc_status st = FEDC_OK;
    long long classes = 0;
    if (n < 0) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    else if (n != 1 && n != 2 && n != 4)
        st = fedc_err_set(err, FEDC_ERR_INVALID,
                          "dataset spec '%s': idx: expects DIR, IMAGES,LABELS or "
                          "TRAIN_IMAGES,TRAIN_LABELS,TEST_IMAGES,TEST_LABELS",
                          o->spec);
    if (st == FEDC_OK) st = fedci_opt_int(o, "classes", 0, 0, FEDC_DATA_MAX_CLASSES, &classes, err);
    if (st == FEDC_OK && n == 1) {
        const char *prefix = fedci_opt_str(o, "prefix");
        if (!is_dir(list[0])) {
            st = fedc_err_set(err, FEDC_ERR_NOTFOUND, "%s: not a directory (idx: takes a directory "
                              "or comma-separated files)", list[0]);
        } else {
            char *paths[4] = {0};
            st = fedci_find_idx_files(list[0], prefix, paths, err);
            if (st == FEDC_OK)
                st = fedci_load_idx(paths[0], paths[1], paths[2], paths[3], o, (int32_t)classes,
                                    fedci_basename(list[0]), train, test, err);
            for (int i = 0; i < 4; i++) fedc_free(paths[i]);
        }
    } else if (st == FEDC_OK) {
        st = fedci_load_idx(list[0], list[1], n == 4 ? list[2] : NULL, n == 4 ? list[3] : NULL, o,
                            (int32_t)classes, fedci_basename(list[0]), train, test, err);
    }
    free_list(list, n > 4 ? 4 : (n < 0 ? 0 : n));
    return st;
}

static fedc_status load_two_files(const char *kind, const char *args, fedci_opts *o,
                                  fedc_dataset **train, fedc_dataset **test, fedc_err *err)
{
    char *list[3] = {0};
    int n = split_list(args, list, 2);
    fedc_status st = FEDC_OK;
    if (n < 0) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    else if (n > 2 || list[0][0] == '\0' || (n == 2 && list[1][0] == '\0'))
        st = fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': %s: expects TRAIN[,TEST]",
                          o->spec, kind);
    else if (strcmp(kind, "csv") == 0)
        st = fedci_load_csv(list[0], n == 2 ? list[1] : NULL, o, train, test, err);
    else
        st = fedci_load_leaf(list[0], n == 2 ? list[1] : NULL, o, train, test, err);
    free_list(list, n > 2 ? 2 : (n < 0 ? 0 : n));
    return st;
}

static fedc_status parse_number(const char *spec, const char *what, const char *s, size_t len,
                                double *out, fedc_err *err)
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': %s missing or too long", spec,
                            what);
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end;
    double x = strtod(tmp, &end);
    if (end == tmp || *end || !(x >= 0) || x > 1e6)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "dataset spec '%s': %s '%s' is not a number >= 0", spec, what, tmp);
    *out = x;
    return FEDC_OK;
}

/* "ALPHA,BETA[,k=v...]" */
static fedc_status load_synthetic_spec(const char *args, int iid, fedci_opts *o,
                                       fedc_dataset **train, fedc_dataset **test, fedc_err *err)
{
    double ab[2] = {0, 0};
    const char *p = args;
    int nums = 0;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (memchr(p, '=', len)) {
            FEDC_TRY(fedci_opts_add(o, p, len, err));
        } else if (!iid && nums < 2) {
            FEDC_TRY(parse_number(o->spec, nums == 0 ? "alpha" : "beta", p, len, &ab[nums], err));
            nums++;
        } else {
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "dataset spec '%s': unexpected '%.*s' (synthetic:ALPHA,BETA[,seed=S] "
                                "or synthetic-iid[:seed=S])",
                                o->spec, (int)len, p);
        }
        p = end ? end + 1 : NULL;
    }
    if (!iid && nums != 2)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "dataset spec '%s': synthetic needs ALPHA,BETA (e.g. synthetic:1,1)",
                            o->spec);
    return fedci_load_synthetic(ab[0], ab[1], iid, o, train, test, err);
}

/* limit, test_limit, standardize, then validation. */
static fedc_status postprocess(fedci_opts *o, fedc_dataset *tr, fedc_dataset *te, fedc_err *err)
{
    long long limit, test_limit;
    int standardize;
    FEDC_TRY(fedci_opt_int(o, "limit", 0, 0, FEDC_DATA_MAX_SAMPLES, &limit, err));
    FEDC_TRY(fedci_opt_int(o, "test_limit", 0, 0, FEDC_DATA_MAX_SAMPLES, &test_limit, err));
    FEDC_TRY(fedci_opt_bool(o, "standardize", 0, &standardize, err));
    FEDC_TRY(fedci_opts_check(o, err));
    if (limit > 0 && (size_t)limit < tr->n) fedci_dataset_truncate(tr, (size_t)limit);
    if (te && test_limit > 0 && (size_t)test_limit < te->n)
        fedci_dataset_truncate(te, (size_t)test_limit);
    if (tr->n == 0) return fedc_err_set(err, FEDC_ERR_SHAPE, "%s: no training samples", tr->name);
    FEDC_TRY(fedc_dataset_validate(tr, err));
    if (te) FEDC_TRY(fedc_dataset_validate(te, err));
    if (standardize) FEDC_TRY(fedc_dataset_standardize(tr, te, err));
    return FEDC_OK;
}

fedc_status fedc_data_load(const char *spec, fedc_dataset **train, fedc_dataset **test,
                           fedc_err *err)
{
    assert(spec && train);
    *train = NULL;
    if (test) *test = NULL;
    size_t len = strlen(spec);
    char *body = fedc_malloc(len + 1);
    if (!body) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    memcpy(body, spec, len + 1);
    char *q = strchr(body, '?');
    if (q) *q++ = '\0';
    fedci_opts o;
    fedc_status st = fedci_opts_parse(&o, spec, q, err);
    char *colon = strchr(body, ':');
    const char *kind = body, *args = NULL;
    if (colon) {
        *colon = '\0';
        args = colon + 1;
    }
    fedc_dataset *tr = NULL, *te = NULL;
    if (st != FEDC_OK) {
        /* reported */
    } else if ((strcmp(kind, "fmnist") == 0 || strcmp(kind, "fashion-mnist") == 0) && !args) {
        st = builtin_idx("fashion-mnist", "fashion-mnist", &o, &tr, &te, err);
    } else if (strcmp(kind, "mnist") == 0 && !args) {
        st = builtin_idx("mnist", "mnist", &o, &tr, &te, err);
    } else if (strcmp(kind, "idx") == 0 && args && *args) {
        st = load_idx_spec(args, &o, &tr, &te, err);
    } else if ((strcmp(kind, "csv") == 0 || strcmp(kind, "leaf") == 0) && args && *args) {
        st = load_two_files(kind, args, &o, &tr, &te, err);
    } else if (strcmp(kind, "synthetic") == 0 && args) {
        st = load_synthetic_spec(args, 0, &o, &tr, &te, err);
    } else if (strcmp(kind, "synthetic-iid") == 0) {
        st = load_synthetic_spec(args, 1, &o, &tr, &te, err);
    } else {
        st = fedc_err_set(err, FEDC_ERR_INVALID,
                          "dataset spec '%s': expected fmnist, mnist, idx:DIR, csv:PATH, "
                          "leaf:TRAIN_JSON[,TEST_JSON], synthetic:ALPHA,BETA or synthetic-iid",
                          spec);
    }
    if (st == FEDC_OK) st = postprocess(&o, tr, te, err);
    fedci_opts_fini(&o);
    fedc_free(body);
    if (st != FEDC_OK) {
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        return st;
    }
    fedc_log(FEDC_LOG_INFO, "data", "%s: %zu training samples, %zu test samples, %ld classes",
             tr->name, tr->n, te ? te->n : 0, (long)tr->num_classes);
    *train = tr;
    if (test)
        *test = te;
    else
        fedc_dataset_destroy(te);
    return FEDC_OK;
}

const char *fedc_data_spec_help(void)
{
    return "Dataset specs (KIND[:ARGS][?key=value&key=value...]):\n"
           "  fmnist                    Fashion-MNIST (Debian package dataset-fashion-mnist, or\n"
           "                            $FEDC_DATASETS/fashion-mnist); `mnist` likewise\n"
           "  idx:DIR                   IDX files in DIR (*train-images-idx3-ubyte[.gz],\n"
           "                            *train-labels-idx1-ubyte, t10k-/test- likewise); ?prefix=\n"
           "                            picks one set when several are there (EMNIST)\n"
           "  idx:IMG,LBL[,TIMG,TLBL]   explicit IDX files, plain or gzip\n"
           "  csv:TRAIN[,TEST]          numeric CSV, plain or gzip. ?label=COL (index, negative\n"
           "                            from the end, or header name; default: a column named\n"
           "                            label, else 0) &header=auto|yes|no &sep=, &classes=N\n"
           "  leaf:TRAIN[,TEST]         LEAF JSON file or directory of *.json; users kept.\n"
           "                            ?classes=N &shape=1,28,28 &oov=N (unknown characters)\n"
           "  synthetic:A,B[,seed=S]    FedProx Synthetic(alpha, beta); ?users=30 &seed=0\n"
           "  synthetic-iid[:seed=S]    its IID variant\n"
           "Every kind: ?limit=N &test_limit=N (first N samples) &standardize=1 (fitted on the\n"
           "training set only).\n";
}
