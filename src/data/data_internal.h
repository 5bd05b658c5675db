/*
 * Internals of src/data shared between its files: the dataset struct, the spec option list,
 * the whole-file reader and the loaders behind fedc_data_load.
 */
#ifndef FEDC_DATA_INTERNAL_H
#define FEDC_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/data.h"

struct fedc_dataset {
    char *name;
    size_t n;
    size_t dim;
    int ndim;
    int64_t shape[FEDC_DATA_MAX_DIMS];
    int32_t num_classes;
    float *x;          /* n * dim */
    int32_t *y;        /* n */
    size_t num_users;  /* 0: no users */
    char **user_names; /* num_users */
    int32_t *user_ids; /* n, or NULL */
    char **class_names; /* num_classes, or NULL */
};

/* fedc_dataset_create, with x and y left uninitialised unless `zero`. */
fedc_status fedci_dataset_alloc(size_t n, int ndim, const int64_t *shape, int32_t num_classes,
                                const char *name, int zero, fedc_dataset **out, fedc_err *err);
/* Shrinks ds to its first n samples (n <= ds->n), releasing the memory. */
void fedci_dataset_truncate(fedc_dataset *ds, size_t n);
/* Replaces the name. Errors: FEDC_ERR_NOMEM. */
fedc_status fedci_dataset_set_name(fedc_dataset *ds, const char *name, fedc_err *err);

/* Reads a whole file, plain or gzip-compressed (detected by content), into a NUL-terminated
 * fedc_malloc'd buffer. Files over max_bytes (after decompression) are refused.
 * Errors name the path: FEDC_ERR_IO, FEDC_ERR_FORMAT (corrupt gzip), FEDC_ERR_RANGE (size),
 * FEDC_ERR_NOMEM. */
fedc_status fedci_read_file(const char *path, size_t max_bytes, char **buf, size_t *len,
                            fedc_err *err);
/* The entries of directory dir that keep(name, ctx) accepts (names starting with '.' are
 * skipped), sorted by strcmp, as fedc_malloc'd strings: "dir/name" with with_dir, else the bare
 * name. *names is NULL when none. Free with fedci_free_names. Errors name dir:
 * FEDC_ERR_NOTFOUND (no such directory), FEDC_ERR_IO, FEDC_ERR_NOMEM. */
fedc_status fedci_list_dir(const char *dir, int (*keep)(const char *name, const void *ctx),
                           const void *ctx, int with_dir, char ***names, size_t *n,
                           fedc_err *err);
void fedci_free_names(char **names, size_t n);

/* The `?key=value&...` options of a spec. Every getter marks its key used; fedci_opts_check
 * then reports keys nobody asked for (typos). */
#define FEDCI_OPTS_MAX 24
typedef struct fedci_opts {
    const char *spec; /* for messages */
    size_t count;
    char *key[FEDCI_OPTS_MAX];
    char *val[FEDCI_OPTS_MAX];
    int used[FEDCI_OPTS_MAX];
} fedci_opts;

/* Parses "k=v&k=v" (text may be NULL or empty). Errors: FEDC_ERR_INVALID, FEDC_ERR_NOMEM. */
fedc_status fedci_opts_parse(fedci_opts *o, const char *spec, const char *text, fedc_err *err);
void fedci_opts_fini(fedci_opts *o);
/* Adds one "k=v" (synthetic's ",seed=S" form). */
fedc_status fedci_opts_add(fedci_opts *o, const char *kv, size_t len, fedc_err *err);
/* The value of key, or NULL when absent. */
const char *fedci_opt_str(fedci_opts *o, const char *key);
/* Typed getters: *out = def when absent. Errors (FEDC_ERR_INVALID) name the spec and key. */
fedc_status fedci_opt_int(fedci_opts *o, const char *key, long long def, long long lo,
                          long long hi, long long *out, fedc_err *err);
fedc_status fedci_opt_double(fedci_opts *o, const char *key, double def, double *out,
                             fedc_err *err);
fedc_status fedci_opt_bool(fedci_opts *o, const char *key, int def, int *out, fedc_err *err);
/* FEDC_ERR_INVALID naming the first unused key, or FEDC_OK. */
fedc_status fedci_opts_check(const fedci_opts *o, fedc_err *err);

/* Loaders (src/data/idx.c, csv.c, leaf.c, synthetic.c). test_* may be NULL: no test set.
 * *test is set to NULL when there is none. On failure nothing is left allocated. */
fedc_status fedci_load_idx(const char *train_img, const char *train_lbl, const char *test_img,
                           const char *test_lbl, fedci_opts *o, int32_t classes,
                           const char *name, fedc_dataset **train, fedc_dataset **test,
                           fedc_err *err);
/* Finds the four IDX files in dir (prefix may be NULL); test paths NULL when absent.
 * Paths are fedc_malloc'd. */
fedc_status fedci_find_idx_files(const char *dir, const char *prefix, char *paths[4],
                                 fedc_err *err);
fedc_status fedci_load_csv(const char *train_path, const char *test_path, fedci_opts *o,
                           fedc_dataset **train, fedc_dataset **test, fedc_err *err);
fedc_status fedci_load_leaf(const char *train_path, const char *test_path, fedci_opts *o,
                            fedc_dataset **train, fedc_dataset **test, fedc_err *err);
fedc_status fedci_load_synthetic(double alpha, double beta, int iid, fedci_opts *o,
                                 fedc_dataset **train, fedc_dataset **test, fedc_err *err);

/* The last component of a path ("a/b/c.csv" -> "c.csv"). */
const char *fedci_basename(const char *path);

#endif
