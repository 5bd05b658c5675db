/*
 * LEAF JSON datasets (Caldas et al. 2018): {"users": [...], "num_samples": [...],
 * "user_data": {USER: {"x": [...], "y": [...]}}}. A sample's x is a number array (FEMNIST:
 * 784 pixels) or a string (Shakespeare: 80 characters, stored as indices into the 80-character
 * vocabulary FEDC_LEAF_VOCAB); y is an integer class or a one-character string. Users become the
 * dataset's user ids, so the natural partition gives one client per writer or speaker.
 * A path may be a directory: its *.json files are read in name order (LEAF writes several).
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"

#define LEAF_MAX_BYTES ((size_t)1 << 36)

enum { KIND_NONE = 0, KIND_NUMBERS = 1, KIND_TEXT = 2 };

typedef struct leaf_doc {
    char *path;
    json_t *root;
} leaf_doc;

typedef struct leaf_set {
    leaf_doc *docs;
    size_t ndocs;
    size_t n; /* samples */
} leaf_set;

typedef struct leaf_fmt {
    int x_kind, y_kind;
    size_t dim;
    const char *dim_from; /* "path, user U" where dim was set, for messages */
    long oov;             /* index for unknown characters, -1: error */
    int32_t classes;      /* option, 0: from the data */
    int32_t max_label;
    json_t *user_map;     /* name -> user id */
    size_t num_users;
} leaf_fmt;

static void set_fini(leaf_set *s)
{
    for (size_t i = 0; i < s->ndocs; i++) {
        fedc_free(s->docs[i].path);
        json_decref(s->docs[i].root);
    }
    fedc_free(s->docs);
    memset(s, 0, sizeof *s);
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static int is_json(const char *name, const void *ctx)
{
    (void)ctx;
    return has_suffix(name, ".json") || has_suffix(name, ".json.gz");
}

/* The files a path names: itself, or a directory's *.json[.gz] in name order. */
static fedc_status list_files(const char *path, char ***out, size_t *count, fedc_err *err)
{
    struct stat sb;
    *out = NULL;
    *count = 0;
    if (stat(path, &sb) != 0)
        return fedc_err_set(err, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO, "%s: %s", path,
                            strerror(errno));
    char **names = NULL;
    size_t n = 0;
    if (!S_ISDIR(sb.st_mode)) {
        names = fedc_malloc(sizeof *names);
        if (!names || !(names[0] = fedc_strdup(path))) {
            fedc_free(names);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
        }
        *out = names;
        *count = 1;
        return FEDC_OK;
    }
    FEDC_TRY(fedci_list_dir(path, is_json, NULL, 1, &names, &n, err));
    if (n == 0) return fedc_err_set(err, FEDC_ERR_NOTFOUND, "%s: no *.json files", path);
    *out = names;
    *count = n;
    return FEDC_OK;
}

/* Parses one file and checks its structure; adds its sample count to s->n. */
static fedc_status load_doc(const char *path, leaf_doc *doc, size_t *samples, fedc_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FEDC_TRY(fedci_read_file(path, LEAF_MAX_BYTES, &buf, &len, err));
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je);
    fedc_free(buf);
    if (!root)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", path, je.line,
                            je.column, je.text);
    doc->root = root;
    if (!json_is_object(root))
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: the top level is not an object", path);
    json_t *users = json_object_get(root, "users");
    json_t *num = json_object_get(root, "num_samples");
    json_t *data = json_object_get(root, "user_data");
    if (!json_is_array(users) || !json_is_object(data))
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: not a LEAF file (needs \"users\" array and \"user_data\" object)",
                            path);
    if (num && (!json_is_array(num) || json_array_size(num) != json_array_size(users)))
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: \"num_samples\" has %zu entries, \"users\" has %zu", path,
                            json_is_array(num) ? json_array_size(num) : 0, json_array_size(users));
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u) {
        if (!json_is_string(u))
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: users[%zu] is not a string", path, i);
        const char *name = json_string_value(u);
        json_t *ud = json_object_get(data, name);
        json_t *x = ud ? json_object_get(ud, "x") : NULL;
        json_t *y = ud ? json_object_get(ud, "y") : NULL;
        if (!ud)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: user '%s' is listed but has no user_data",
                                path, name);
        if (!json_is_array(x) || !json_is_array(y))
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "%s: user '%s': user_data needs \"x\" and \"y\" arrays", path, name);
        if (json_array_size(x) != json_array_size(y))
            return fedc_err_set(err, FEDC_ERR_SHAPE, "%s: user '%s': %zu x values but %zu y values",
                                path, name, json_array_size(x), json_array_size(y));
        if (num) {
            json_t *k = json_array_get(num, i);
            if (!json_is_integer(k) || (size_t)json_integer_value(k) != json_array_size(x) ||
                json_integer_value(k) < 0)
                return fedc_err_set(err, FEDC_ERR_SHAPE,
                                    "%s: user '%s': num_samples[%zu] says %lld, user_data has %zu",
                                    path, name, i,
                                    json_is_integer(k) ? (long long)json_integer_value(k) : -1LL,
                                    json_array_size(x));
        }
        *samples += json_array_size(x);
        if (*samples > FEDC_DATA_MAX_SAMPLES)
            return fedc_err_set(err, FEDC_ERR_RANGE, "%s: more than %u samples", path,
                                FEDC_DATA_MAX_SAMPLES);
    }
    return FEDC_OK;
}

static fedc_status load_set(const char *path, leaf_set *s, fedc_err *err)
{
    char **files = NULL;
    size_t nf = 0;
    memset(s, 0, sizeof *s);
    FEDC_TRY(list_files(path, &files, &nf, err));
    fedc_status st = FEDC_OK;
    s->docs = fedc_calloc(nf, sizeof *s->docs);
    if (!s->docs) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nf; i++) {
        if (st == FEDC_OK) {
            s->docs[i].path = files[i];
            s->ndocs = i + 1;
            st = load_doc(files[i], &s->docs[i], &s->n, err);
        } else {
            fedc_free(files[i]);
        }
    }
    fedc_free(files); /* the names now belong to s->docs, or were freed above */
    if (st != FEDC_OK) set_fini(s);
    return st;
}

/* The x and y kinds and x's size, from the first sample seen; later samples must agree. */
static fedc_status sample_format(leaf_fmt *f, const char *path, const char *user, size_t j,
                                 json_t *x, json_t *y, fedc_err *err)
{
    int xk = json_is_array(x) ? KIND_NUMBERS : json_is_string(x) ? KIND_TEXT : KIND_NONE;
    size_t dim = xk == KIND_NUMBERS ? json_array_size(x) : xk == KIND_TEXT ? json_string_length(x) : 0;
    int yk = json_is_number(y) ? KIND_NUMBERS : json_is_string(y) ? KIND_TEXT : KIND_NONE;
    if (xk == KIND_NONE)
        return fedc_err_set(err, FEDC_ERR_UNSUPPORTED,
                            "%s: user '%s' sample %zu: x must be a number array or a string "
                            "(FEMNIST, Shakespeare style)",
                            path, user, j);
    if (yk == KIND_NONE)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: user '%s' sample %zu: y must be an integer or a character", path,
                            user, j);
    if (dim == 0)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "%s: user '%s' sample %zu: x is empty", path, user,
                            j);
    if (f->x_kind == KIND_NONE) {
        f->x_kind = xk;
        f->y_kind = yk;
        f->dim = dim;
        return FEDC_OK;
    }
    if (xk != f->x_kind || yk != f->y_kind)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: user '%s' sample %zu: x or y is of another kind than the first "
                            "sample's",
                            path, user, j);
    if (dim != f->dim)
        return fedc_err_set(err, FEDC_ERR_SHAPE,
                            "%s: user '%s' sample %zu: x has %zu %s, expected %zu as in the first "
                            "sample",
                            path, user, j, dim, xk == KIND_TEXT ? "characters" : "values", f->dim);
    return FEDC_OK;
}

static fedc_status char_index(const leaf_fmt *f, const char *path, const char *user, size_t j,
                              unsigned char c, float *out, fedc_err *err)
{
    static const char vocab[] = FEDC_LEAF_VOCAB;
    const char *p = c ? memchr(vocab, c, FEDC_LEAF_VOCAB_SIZE) : NULL;
    if (p) {
        *out = (float)(p - vocab);
        return FEDC_OK;
    }
    if (f->oov >= 0) {
        *out = (float)f->oov;
        return FEDC_OK;
    }
    return fedc_err_set(err, FEDC_ERR_RANGE,
                        "%s: user '%s' sample %zu: character 0x%02x is not in LEAF's 80-character "
                        "vocabulary (map such characters with ?oov=INDEX)",
                        path, user, j, c);
}

/* Copies a set's samples into ds (sized s->n). */
static fedc_status fill(leaf_fmt *f, const leaf_set *s, fedc_dataset *ds, fedc_err *err)
{
    size_t n = 0;
    for (size_t d = 0; d < s->ndocs; d++) {
        const char *path = s->docs[d].path;
        json_t *users = json_object_get(s->docs[d].root, "users");
        json_t *data = json_object_get(s->docs[d].root, "user_data");
        size_t i;
        json_t *u;
        json_array_foreach(users, i, u) {
            const char *name = json_string_value(u);
            json_t *id = json_object_get(f->user_map, name);
            if (!id) {
                if (f->num_users >= INT32_MAX)
                    return fedc_err_set(err, FEDC_ERR_RANGE, "%s: too many users", path);
                id = json_integer((json_int_t)f->num_users++);
                if (!id || json_object_set_new(f->user_map, name, id) != 0)
                    return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
            }
            int32_t uid = (int32_t)json_integer_value(id);
            json_t *ud = json_object_get(data, name);
            json_t *xs = json_object_get(ud, "x"), *ys = json_object_get(ud, "y");
            size_t j;
            json_t *x;
            json_array_foreach(xs, j, x) {
                json_t *y = json_array_get(ys, j);
                FEDC_TRY(sample_format(f, path, name, j, x, y, err));
                if (ds->dim != f->dim)
                    return fedc_err_set(err, FEDC_ERR_SHAPE,
                                        "%s: user '%s' sample %zu: x has %zu values, the training "
                                        "set's have %zu",
                                        path, name, j, f->dim, ds->dim);
                float *row = ds->x + n * ds->dim;
                if (f->x_kind == KIND_NUMBERS) {
                    size_t k;
                    json_t *v;
                    json_array_foreach(x, k, v) {
                        double val = json_is_number(v) ? json_number_value(v) : NAN;
                        if (!json_is_number(v))
                            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                                "%s: user '%s' sample %zu: x[%zu] is not a number",
                                                path, name, j, k);
                        if (!(fabs(val) <= FLT_MAX))
                            return fedc_err_set(err, FEDC_ERR_NONFINITE,
                                                "%s: user '%s' sample %zu: x[%zu] is not a finite "
                                                "float32",
                                                path, name, j, k);
                        row[k] = (float)val;
                    }
                } else {
                    const unsigned char *t = (const unsigned char *)json_string_value(x);
                    for (size_t k = 0; k < f->dim; k++)
                        FEDC_TRY(char_index(f, path, name, j, t[k], &row[k], err));
                }
                int32_t label;
                if (f->y_kind == KIND_TEXT) {
                    if (json_string_length(y) != 1)
                        return fedc_err_set(err, FEDC_ERR_FORMAT,
                                            "%s: user '%s' sample %zu: y is a string of %zu "
                                            "characters, expected 1",
                                            path, name, j, json_string_length(y));
                    float li;
                    FEDC_TRY(char_index(f, path, name, j,
                                        (unsigned char)json_string_value(y)[0], &li, err));
                    label = (int32_t)li;
                } else {
                    double v = json_number_value(y);
                    int32_t lim = f->classes > 0 ? f->classes : FEDC_DATA_MAX_CLASSES;
                    if (v != floor(v) || v < 0 || v >= lim)
                        return fedc_err_set(err, FEDC_ERR_RANGE,
                                            "%s: user '%s' sample %zu: label %g is not an integer "
                                            "in [0, %ld)",
                                            path, name, j, v, (long)lim);
                    label = (int32_t)v;
                }
                if (label > f->max_label) f->max_label = label;
                ds->y[n] = label;
                ds->user_ids[n] = uid;
                n++;
            }
        }
    }
    return FEDC_OK;
}

/* The shape for dim values: the shape= option, else images of 784 -> 1x28x28, else {dim}. */
static fedc_status leaf_shape(fedci_opts *o, const leaf_fmt *f, int64_t *shape, int *ndim,
                              fedc_err *err)
{
    const char *s = fedci_opt_str(o, "shape");
    if (!s) {
        if (f->x_kind == KIND_NUMBERS && f->dim == 784) {
            shape[0] = 1;
            shape[1] = 28;
            shape[2] = 28;
            *ndim = 3;
        } else {
            shape[0] = (int64_t)f->dim;
            *ndim = 1;
        }
        return FEDC_OK;
    }
    int nd = 0;
    uint64_t prod = 1;
    const char *p = s;
    for (;;) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0 || nd == FEDC_DATA_MAX_DIMS || (*end && *end != ',' && *end != 'x'))
            return fedc_err_set(err, FEDC_ERR_INVALID, "dataset spec '%s': shape=%s is not like 1,28,28",
                                o->spec, s);
        shape[nd++] = v;
        prod *= (uint64_t)v;
        if (!*end) break;
        p = end + 1;
    }
    if (prod != f->dim)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "dataset spec '%s': shape=%s has %llu values, "
                            "samples have %zu", o->spec, s, (unsigned long long)prod, f->dim);
    *ndim = nd;
    return FEDC_OK;
}

/* Makes a dataset for a set; the format comes from its first sample. */
static fedc_status build(leaf_fmt *f, fedci_opts *o, const leaf_set *s, const char *name,
                         fedc_dataset **out, fedc_err *err)
{
    /* Find the format from the first sample if not known yet. */
    if (f->x_kind == KIND_NONE) {
        for (size_t d = 0; d < s->ndocs && f->x_kind == KIND_NONE; d++) {
            json_t *users = json_object_get(s->docs[d].root, "users");
            json_t *data = json_object_get(s->docs[d].root, "user_data");
            size_t i;
            json_t *u;
            json_array_foreach(users, i, u) {
                json_t *ud = json_object_get(data, json_string_value(u));
                json_t *xs = json_object_get(ud, "x");
                if (json_array_size(xs) == 0) continue;
                FEDC_TRY(sample_format(f, s->docs[d].path, json_string_value(u), 0,
                                       json_array_get(xs, 0),
                                       json_array_get(json_object_get(ud, "y"), 0), err));
                break;
            }
        }
        if (f->x_kind == KIND_NONE)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: no samples", s->docs[0].path);
    }
    int64_t shape[FEDC_DATA_MAX_DIMS];
    int ndim = 1;
    FEDC_TRY(leaf_shape(o, f, shape, &ndim, err));
    fedc_dataset *ds = NULL;
    FEDC_TRY(fedc_dataset_create(s->n, ndim, shape, 1, name, &ds, err));
    ds->user_ids = fedc_malloc((s->n ? s->n : 1) * sizeof(int32_t));
    fedc_status st = ds->user_ids ? fill(f, s, ds, err)
                                  : fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    if (st != FEDC_OK) {
        fedc_dataset_destroy(ds);
        return st;
    }
    *out = ds;
    return FEDC_OK;
}

/* Gives ds the user table (names in id order); ids beyond ds's own users are fine. */
static fedc_status set_user_names(fedc_dataset *ds, const leaf_fmt *f, fedc_err *err)
{
    const char **names = fedc_calloc(f->num_users ? f->num_users : 1, sizeof *names);
    if (!names) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *v;
    json_object_foreach(f->user_map, key, v) names[json_integer_value(v)] = key;
    int32_t *ids = ds->user_ids;
    ds->user_ids = NULL; /* set_users copies them back */
    fedc_status st = fedc_dataset_set_users(ds, f->num_users, names, ids, err);
    fedc_free(ids);
    fedc_free(names);
    return st;
}

fedc_status fedci_load_leaf(const char *train_path, const char *test_path, fedci_opts *o,
                            fedc_dataset **train, fedc_dataset **test, fedc_err *err)
{
    leaf_fmt f;
    memset(&f, 0, sizeof f);
    f.max_label = -1;
    long long classes, oov;
    FEDC_TRY(fedci_opt_int(o, "classes", 0, 0, FEDC_DATA_MAX_CLASSES, &classes, err));
    FEDC_TRY(fedci_opt_int(o, "oov", -1, -1, FEDC_LEAF_VOCAB_SIZE - 1, &oov, err));
    f.classes = (int32_t)classes;
    f.oov = (long)oov;
    f.user_map = json_object();
    if (!f.user_map) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
    leaf_set s = {0};
    fedc_dataset *tr = NULL, *te = NULL;
    fedc_status st = load_set(train_path, &s, err);
    if (st == FEDC_OK) st = build(&f, o, &s, fedci_basename(train_path), &tr, err);
    set_fini(&s);
    if (st == FEDC_OK && test_path) {
        st = load_set(test_path, &s, err);
        if (st == FEDC_OK) st = build(&f, o, &s, fedci_basename(train_path), &te, err);
        set_fini(&s);
    }
    if (st == FEDC_OK) st = set_user_names(tr, &f, err);
    if (st == FEDC_OK && te) st = set_user_names(te, &f, err);
    if (st == FEDC_OK && f.y_kind == KIND_TEXT) {
        /* Classes are characters: name them so that histograms read "e", "t", "space". */
        static const char vocab[] = FEDC_LEAF_VOCAB;
        char store[FEDC_LEAF_VOCAB_SIZE][8];
        const char *names[FEDC_LEAF_VOCAB_SIZE];
        for (int i = 0; i < FEDC_LEAF_VOCAB_SIZE; i++) {
            if (vocab[i] == '\n') snprintf(store[i], sizeof store[i], "\\n");
            else if (vocab[i] == ' ') snprintf(store[i], sizeof store[i], "space");
            else snprintf(store[i], sizeof store[i], "%c", vocab[i]);
            names[i] = store[i];
        }
        tr->num_classes = FEDC_LEAF_VOCAB_SIZE;
        st = fedc_dataset_set_class_names(tr, names, err);
        if (st == FEDC_OK && te) {
            te->num_classes = FEDC_LEAF_VOCAB_SIZE;
            st = fedc_dataset_set_class_names(te, names, err);
        }
    }
    if (st == FEDC_OK) {
        int32_t nc = f.y_kind == KIND_TEXT ? FEDC_LEAF_VOCAB_SIZE
                     : f.classes > 0       ? f.classes
                                           : f.max_label + 1;
        tr->num_classes = nc;
        if (te) te->num_classes = nc;
    }
    json_decref(f.user_map);
    if (st != FEDC_OK) {
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        return st;
    }
    *train = tr;
    *test = te;
    return FEDC_OK;
}
