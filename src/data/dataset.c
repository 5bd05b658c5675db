/*
 * The dataset handle: one contiguous float32 feature array and int32 labels, optional user ids
 * and class names; accessors, validation, subsets, standardization and batch gathering.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"

fedc_status fedci_dataset_alloc(size_t n, int ndim, const int64_t *shape, int32_t num_classes,
                                const char *name, int zero, fedc_dataset **out, fedc_err *err)
{
    assert(out && (shape || ndim == 0));
    *out = NULL;
    if (ndim < 1 || ndim > FEDC_DATA_MAX_DIMS)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset: %d dimensions per sample, expected 1..%d",
                            ndim, FEDC_DATA_MAX_DIMS);
    size_t dim = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || (uint64_t)shape[i] > SIZE_MAX / dim / sizeof(float))
            return fedc_err_set(err, FEDC_ERR_INVALID, "dataset: dimension %d of the shape is %lld",
                                i, (long long)shape[i]);
        dim *= (size_t)shape[i];
    }
    if (num_classes < 1 || num_classes > FEDC_DATA_MAX_CLASSES)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset: %ld classes, expected 1..%d",
                            (long)num_classes, FEDC_DATA_MAX_CLASSES);
    if (n > FEDC_DATA_MAX_SAMPLES)
        return fedc_err_set(err, FEDC_ERR_INVALID, "dataset: %zu samples, at most %u supported", n,
                            FEDC_DATA_MAX_SAMPLES);
    if (n != 0 && dim > SIZE_MAX / sizeof(float) / n)
        return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: %zu x %zu floats do not fit in memory",
                            n, dim);
    fedc_dataset *ds = fedc_calloc(1, sizeof *ds);
    if (!ds) return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory");
    ds->n = n;
    ds->dim = dim;
    ds->ndim = ndim;
    for (int i = 0; i < ndim; i++) ds->shape[i] = shape[i];
    ds->num_classes = num_classes;
    ds->name = fedc_strdup(name ? name : "dataset");
    /* Loaders that overwrite every value skip the zeroing: for a 200 MB dataset, touching the
     * memory twice costs as much as decompressing it. */
    ds->x = zero ? fedc_calloc(n * dim, sizeof(float)) : fedc_malloc(n * dim * sizeof(float));
    ds->y = zero ? fedc_calloc(n, sizeof(int32_t)) : fedc_malloc(n * sizeof(int32_t));
    if (!ds->name || !ds->x || !ds->y) {
        fedc_dataset_destroy(ds);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory for %zu x %zu floats", n,
                            dim);
    }
    *out = ds;
    return FEDC_OK;
}

fedc_status fedc_dataset_create(size_t n, int ndim, const int64_t *shape, int32_t num_classes,
                                const char *name, fedc_dataset **out, fedc_err *err)
{
    return fedci_dataset_alloc(n, ndim, shape, num_classes, name, 1, out, err);
}

static void free_names(char **names, size_t n)
{
    if (!names) return;
    for (size_t i = 0; i < n; i++) fedc_free(names[i]);
    fedc_free(names);
}

void fedc_dataset_destroy(fedc_dataset *ds)
{
    if (!ds) return;
    fedc_free(ds->name);
    fedc_free(ds->x);
    fedc_free(ds->y);
    fedc_free(ds->user_ids);
    free_names(ds->user_names, ds->num_users);
    free_names(ds->class_names, (size_t)ds->num_classes);
    fedc_free(ds);
}

size_t fedc_dataset_n(const fedc_dataset *ds) { return ds->n; }
size_t fedc_dataset_dim(const fedc_dataset *ds) { return ds->dim; }
int32_t fedc_dataset_num_classes(const fedc_dataset *ds) { return ds->num_classes; }
const char *fedc_dataset_name(const fedc_dataset *ds) { return ds->name; }
const float *fedc_dataset_x(const fedc_dataset *ds) { return ds->x; }
const int32_t *fedc_dataset_y(const fedc_dataset *ds) { return ds->y; }
float *fedc_dataset_x_mut(fedc_dataset *ds) { return ds->x; }
int32_t *fedc_dataset_y_mut(fedc_dataset *ds) { return ds->y; }
size_t fedc_dataset_num_users(const fedc_dataset *ds) { return ds->num_users; }
const int32_t *fedc_dataset_user_ids(const fedc_dataset *ds) { return ds->user_ids; }

int fedc_dataset_shape(const fedc_dataset *ds, int64_t shape[FEDC_DATA_MAX_DIMS])
{
    if (shape)
        for (int i = 0; i < ds->ndim; i++) shape[i] = ds->shape[i];
    return ds->ndim;
}

const float *fedc_dataset_sample(const fedc_dataset *ds, size_t i)
{
    assert(i < ds->n);
    return ds->x + i * ds->dim;
}

size_t fedc_dataset_bytes(const fedc_dataset *ds)
{
    return ds->n * ds->dim * sizeof(float) + ds->n * sizeof(int32_t) +
           (ds->user_ids ? ds->n * sizeof(int32_t) : 0);
}

const char *fedc_dataset_user_name(const fedc_dataset *ds, size_t user)
{
    assert(user < ds->num_users);
    return ds->user_names[user];
}

static fedc_status copy_names(char ***dst, const char *const *names, size_t n, fedc_err *err)
{
    char **out = fedc_calloc(n ? n : 1, sizeof *out);
    if (!out) return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory for names");
    for (size_t i = 0; i < n; i++) {
        char num[32];
        const char *s = names ? names[i] : NULL;
        if (!s) {
            snprintf(num, sizeof num, "%zu", i);
            s = num;
        }
        out[i] = fedc_strdup(s);
        if (!out[i]) {
            free_names(out, n);
            return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory for names");
        }
    }
    *dst = out;
    return FEDC_OK;
}

fedc_status fedc_dataset_set_users(fedc_dataset *ds, size_t num_users,
                                   const char *const *names, const int32_t *user_ids,
                                   fedc_err *err)
{
    assert(ds && (user_ids || ds->n == 0));
    if (num_users == 0 || num_users > INT32_MAX)
        return fedc_err_set(err, FEDC_ERR_RANGE, "dataset %s: %zu users", ds->name, num_users);
    for (size_t i = 0; i < ds->n; i++)
        if (user_ids[i] < 0 || (size_t)user_ids[i] >= num_users)
            return fedc_err_set(err, FEDC_ERR_RANGE,
                                "dataset %s: sample %zu: user id %ld not in [0, %zu)", ds->name, i,
                                (long)user_ids[i], num_users);
    char **nm = NULL;
    FEDC_TRY(copy_names(&nm, names, num_users, err));
    int32_t *ids = fedc_malloc((ds->n ? ds->n : 1) * sizeof *ids);
    if (!ids) {
        free_names(nm, num_users);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory for user ids");
    }
    if (ds->n) memcpy(ids, user_ids, ds->n * sizeof *ids);
    fedc_free(ds->user_ids);
    free_names(ds->user_names, ds->num_users);
    ds->user_ids = ids;
    ds->user_names = nm;
    ds->num_users = num_users;
    return FEDC_OK;
}

const char *fedc_dataset_class_name(const fedc_dataset *ds, int32_t cls)
{
    if (!ds->class_names || cls < 0 || cls >= ds->num_classes) return NULL;
    return ds->class_names[cls];
}

fedc_status fedc_dataset_set_class_names(fedc_dataset *ds, const char *const *names,
                                         fedc_err *err)
{
    char **nm = NULL;
    FEDC_TRY(copy_names(&nm, names, (size_t)ds->num_classes, err));
    free_names(ds->class_names, (size_t)ds->num_classes);
    ds->class_names = nm;
    return FEDC_OK;
}

fedc_status fedci_dataset_set_name(fedc_dataset *ds, const char *name, fedc_err *err)
{
    char *s = fedc_strdup(name);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory");
    fedc_free(ds->name);
    ds->name = s;
    return FEDC_OK;
}

void fedc_dataset_label_counts(const fedc_dataset *ds, size_t *counts)
{
    memset(counts, 0, (size_t)ds->num_classes * sizeof *counts);
    for (size_t i = 0; i < ds->n; i++) {
        int32_t c = ds->y[i];
        if (c >= 0 && c < ds->num_classes) counts[c]++;
    }
}

fedc_status fedc_dataset_validate(const fedc_dataset *ds, fedc_err *err)
{
    for (size_t i = 0; i < ds->n; i++)
        if (ds->y[i] < 0 || ds->y[i] >= ds->num_classes)
            return fedc_err_set(err, FEDC_ERR_RANGE, "%s: sample %zu: label %ld not in [0, %ld)",
                                ds->name, i, (long)ds->y[i], (long)ds->num_classes);
    if (ds->user_ids)
        for (size_t i = 0; i < ds->n; i++)
            if (ds->user_ids[i] < 0 || (size_t)ds->user_ids[i] >= ds->num_users)
                return fedc_err_set(err, FEDC_ERR_RANGE, "%s: sample %zu: user id %ld not in [0, %zu)",
                                    ds->name, i, (long)ds->user_ids[i], ds->num_users);
    size_t total = ds->n * ds->dim;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(ds->x[i]))
            return fedc_err_set(err, FEDC_ERR_NONFINITE, "%s: sample %zu, feature %zu is %g",
                                ds->name, i / ds->dim, i % ds->dim, (double)ds->x[i]);
    return FEDC_OK;
}

fedc_status fedc_dataset_subset(const fedc_dataset *ds, const uint32_t *idx, size_t n,
                                fedc_dataset **out, fedc_err *err)
{
    fedc_dataset *sub = NULL;
    FEDC_TRY(fedc_dataset_create(n, ds->ndim, ds->shape, ds->num_classes, ds->name, &sub, err));
    fedc_data_gather(ds, idx, n, sub->x, sub->y);
    fedc_status st = FEDC_OK;
    if (ds->class_names)
        st = fedc_dataset_set_class_names(sub, (const char *const *)ds->class_names, err);
    if (st == FEDC_OK && ds->user_ids) {
        int32_t *ids = fedc_malloc((n ? n : 1) * sizeof *ids);
        if (!ids) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "dataset: out of memory");
        } else {
            for (size_t i = 0; i < n; i++) ids[i] = ds->user_ids[idx[i]];
            st = fedc_dataset_set_users(sub, ds->num_users, (const char *const *)ds->user_names,
                                        ids, err);
            fedc_free(ids);
        }
    }
    if (st != FEDC_OK) {
        fedc_dataset_destroy(sub);
        return st;
    }
    *out = sub;
    return FEDC_OK;
}

void fedci_dataset_truncate(fedc_dataset *ds, size_t n)
{
    assert(n <= ds->n);
    if (n == ds->n) return;
    ds->n = n;
    /* Shrinking never fails in practice; if it does, the larger blocks stay valid. */
    float *x = fedc_realloc(ds->x, (n ? n * ds->dim : 1) * sizeof(float));
    if (x) ds->x = x;
    int32_t *y = fedc_realloc(ds->y, (n ? n : 1) * sizeof(int32_t));
    if (y) ds->y = y;
    if (ds->user_ids) {
        int32_t *u = fedc_realloc(ds->user_ids, (n ? n : 1) * sizeof(int32_t));
        if (u) ds->user_ids = u;
    }
}

fedc_status fedc_dataset_standardize(fedc_dataset *fit, fedc_dataset *other, fedc_err *err)
{
    size_t d = fit->dim;
    if (other && other->dim != d)
        return fedc_err_set(err, FEDC_ERR_SHAPE, "standardize: %s has %zu features, %s has %zu",
                            fit->name, d, other->name, other->dim);
    double *mean = fedc_calloc(2 * (d ? d : 1), sizeof(double));
    if (!mean) return fedc_err_set(err, FEDC_ERR_NOMEM, "standardize: out of memory");
    double *m2 = mean + d;
    /* Welford's update per feature, sample by sample (rows are contiguous). */
    for (size_t i = 0; i < fit->n; i++) {
        const float *row = fit->x + i * d;
        double k = (double)(i + 1);
        for (size_t j = 0; j < d; j++) {
            double delta = row[j] - mean[j];
            mean[j] += delta / k;
            m2[j] += delta * (row[j] - mean[j]);
        }
    }
    for (size_t j = 0; j < d; j++) {
        double var = fit->n > 0 ? m2[j] / (double)fit->n : 0;
        m2[j] = var > 1e-24 ? 1.0 / sqrt(var) : 1.0; /* m2 now holds 1 / std */
    }
    fedc_dataset *sets[2] = {fit, other};
    for (int s = 0; s < 2; s++) {
        fedc_dataset *ds = sets[s];
        if (!ds) continue;
        for (size_t i = 0; i < ds->n; i++) {
            float *row = ds->x + i * d;
            for (size_t j = 0; j < d; j++) row[j] = (float)((row[j] - mean[j]) * m2[j]);
        }
    }
    fedc_free(mean);
    return FEDC_OK;
}

void fedc_data_gather(const fedc_dataset *ds, const uint32_t *idx, size_t n, float *x,
                      int32_t *y)
{
    size_t d = ds->dim;
    for (size_t i = 0; i < n; i++) {
        uint32_t j = idx[i];
        assert(j < ds->n);
        if (x) memcpy(x + i * d, ds->x + (size_t)j * d, d * sizeof(float));
        if (y) y[i] = ds->y[j];
    }
}

const char *fedci_basename(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}
