/*
 * IDX files (LeCun's MNIST format; also Fashion-MNIST and EMNIST), plain or gzip-compressed:
 * magic 00 00 TYPE NDIM, NDIM big-endian uint32 dimensions, then the data, big-endian.
 * Images of unsigned bytes are scaled to [0, 1]; other types are read as they are. Reading
 * streams through zlib into the dataset's float array: no second copy of the file in memory.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"

#define IDX_MAX_ELEMENTS (1ull << 34) /* 64 GiB of floats: a sanity bound, not a limit in use */

typedef struct idx_reader {
    gzFile f;
    const char *path;
    size_t off; /* bytes consumed (decompressed) */
    int gz;     /* compressed: offsets are in the decompressed stream */
} idx_reader;

typedef struct idx_header {
    int type;
    int ndim;
    uint32_t dims[1 + FEDC_DATA_MAX_DIMS];
    size_t items;     /* dims[0] */
    size_t per_item;  /* product of dims[1..] */
    size_t elem_size; /* bytes per element */
} idx_header;

static size_t type_size(int type)
{
    switch (type) {
    case 0x08: return 1; /* unsigned byte */
    case 0x09: return 1; /* signed byte */
    case 0x0B: return 2; /* short */
    case 0x0C: return 4; /* int */
    case 0x0D: return 4; /* float */
    case 0x0E: return 8; /* double */
    default: return 0;
    }
}

static const char *where(const idx_reader *r)
{
    return r->gz ? " (decompressed)" : "";
}

/* Reads exactly n bytes; `what` names the part being read for a truncation message. */
static fedc_status rd(idx_reader *r, void *buf, size_t n, const char *what, fedc_err *err)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(r->f, (char *)buf + done, (unsigned)want);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(r->f, &zerr);
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: corrupt gzip data near offset %zu%s: %s",
                                r->path, r->off + done, where(r), msg);
        }
        if (got == 0) {
            int zerr;
            const char *msg = gzerror(r->f, &zerr);
            if (zerr != Z_OK && zerr != Z_BUF_ERROR)
                return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: corrupt gzip data near offset %zu%s: %s",
                                    r->path, r->off + done, where(r), msg);
            return fedc_err_set(err, FEDC_ERR_FORMAT,
                                "%s: truncated: the file ends at offset %zu%s, inside %s "
                                "(%zu more bytes expected)",
                                r->path, r->off + done, where(r), what, n - done);
        }
        done += (size_t)got;
    }
    r->off += n;
    return FEDC_OK;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static fedc_status idx_open(idx_reader *r, idx_header *h, const char *path, int labels,
                            fedc_err *err)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return fedc_err_set(err, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO, "%s: %s", path,
                            strerror(errno));
    if (S_ISDIR(sb.st_mode)) return fedc_err_set(err, FEDC_ERR_IO, "%s: is a directory", path);
    r->f = gzopen(path, "rb");
    if (!r->f) return fedc_err_set(err, FEDC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    gzbuffer(r->f, 1u << 18);
    unsigned char m[4];
    FEDC_TRY(rd(r, m, 4, "the IDX header", err));
    r->gz = !gzdirect(r->f);
    if (m[0] != 0 || m[1] != 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: bad magic %02x %02x %02x %02x at offset 0%s (an IDX file starts "
                            "with 00 00 TYPE NDIM)",
                            path, m[0], m[1], m[2], m[3], where(r));
    h->type = m[2];
    h->elem_size = type_size(h->type);
    if (!h->elem_size)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: unknown IDX data type 0x%02x at offset 2%s",
                            path, h->type, where(r));
    h->ndim = m[3];
    if (labels && h->ndim != 1)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: %d dimensions at offset 3%s; a label file has 1", path, h->ndim,
                            where(r));
    if (!labels && (h->ndim < 2 || h->ndim > 1 + FEDC_DATA_MAX_DIMS))
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: %d dimensions at offset 3%s; a sample file has 2 to %d", path,
                            h->ndim, where(r), 1 + FEDC_DATA_MAX_DIMS);
    unsigned char d[4 * (1 + FEDC_DATA_MAX_DIMS)];
    FEDC_TRY(rd(r, d, 4 * (size_t)h->ndim, "the IDX dimensions", err));
    uint64_t per_item = 1;
    for (int i = 0; i < h->ndim; i++) {
        h->dims[i] = be32(d + 4 * i);
        if (h->dims[i] == 0)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: dimension %d is 0 (offset %d%s)", path, i,
                                4 + 4 * i, where(r));
        if (i > 0) per_item *= h->dims[i];
        if (per_item > IDX_MAX_ELEMENTS)
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: samples of %llu elements are too large",
                                path, (unsigned long long)per_item);
    }
    h->items = h->dims[0];
    h->per_item = (size_t)per_item;
    if (h->items > FEDC_DATA_MAX_SAMPLES || (uint64_t)h->items * per_item > IDX_MAX_ELEMENTS)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: %zu items of %zu elements are too many", path,
                            h->items, h->per_item);
    return FEDC_OK;
}

/* After the data: the file must end here. */
static fedc_status idx_expect_end(idx_reader *r, fedc_err *err)
{
    char c;
    int got = gzread(r->f, &c, 1);
    if (got > 0)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s: unexpected data after offset %zu%s (the header announces %zu "
                            "bytes)",
                            r->path, r->off, where(r), r->off);
    if (got < 0) {
        int zerr;
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: corrupt gzip data near offset %zu%s: %s",
                            r->path, r->off, where(r), gzerror(r->f, &zerr));
    }
    int zerr;
    const char *msg = gzerror(r->f, &zerr);
    if (zerr != Z_OK && zerr != Z_BUF_ERROR)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: corrupt gzip data near offset %zu%s: %s",
                            r->path, r->off, where(r), msg);
    if (zerr == Z_BUF_ERROR)
        return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: truncated gzip stream after offset %zu%s: %s",
                            r->path, r->off, where(r), msg);
    return FEDC_OK;
}

static void idx_close(idx_reader *r)
{
    if (r->f) gzclose(r->f);
    r->f = NULL;
}

static double decode(int type, const unsigned char *p)
{
    switch (type) {
    case 0x08: return p[0];
    case 0x09: return (signed char)p[0];
    case 0x0B: return (int16_t)(uint16_t)(p[0] << 8 | p[1]);
    case 0x0C: return (int32_t)be32(p);
    case 0x0D: {
        uint32_t u = be32(p);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    default: {
        uint64_t u = (uint64_t)be32(p) << 32 | be32(p + 4);
        double x;
        memcpy(&x, &u, 8);
        return x;
    }
    }
}

#define CHUNK (1u << 20)

/* Reads the first min(items, limit) samples (limit 0: all) into a new dataset; *items gets
 * the file's count. A limited read does not look at the rest of the file. */
static fedc_status read_samples(const char *path, const char *name, size_t limit,
                                size_t *items, fedc_dataset **out, fedc_err *err)
{
    idx_reader r;
    idx_header h;
    fedc_dataset *ds = NULL;
    unsigned char *buf = NULL;
    fedc_status st = idx_open(&r, &h, path, 0, err);
    if (st == FEDC_OK) {
        int64_t shape[FEDC_DATA_MAX_DIMS];
        int nd = 0;
        if (h.ndim == 3) shape[nd++] = 1; /* images: one channel */
        for (int i = 1; i < h.ndim; i++) shape[nd++] = h.dims[i];
        *items = h.items;
        st = fedci_dataset_alloc(limit && limit < h.items ? limit : h.items, nd, shape, 1, name, 0,
                                 &ds, err);
    }
    if (st == FEDC_OK) {
        buf = fedc_malloc(CHUNK);
        if (!buf) st = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", path);
    }
    if (st == FEDC_OK) {
        float lut[256];
        for (int i = 0; i < 256; i++) lut[i] = (float)i / 255.0f;
        size_t total = ds->n * h.per_item, done = 0;
        size_t per_chunk = CHUNK / h.elem_size;
        while (st == FEDC_OK && done < total) {
            size_t k = total - done < per_chunk ? total - done : per_chunk;
            st = rd(&r, buf, k * h.elem_size, "the sample data", err);
            if (st != FEDC_OK) break;
            float *x = ds->x + done;
            if (h.type == 0x08) {
                for (size_t i = 0; i < k; i++) x[i] = lut[buf[i]];
            } else {
                for (size_t i = 0; i < k; i++) {
                    double v = decode(h.type, buf + i * h.elem_size);
                    if (!(fabs(v) <= FLT_MAX)) { /* NaN, Inf, or beyond float32 */
                        st = fedc_err_set(err, FEDC_ERR_NONFINITE,
                                          "%s: non-finite or out-of-range value at offset %zu%s",
                                          path, r.off - (k - i) * h.elem_size, where(&r));
                        break;
                    }
                    x[i] = (float)v;
                }
            }
            done += k;
        }
    }
    if (st == FEDC_OK && ds->n == h.items) st = idx_expect_end(&r, err);
    idx_close(&r);
    fedc_free(buf);
    if (st != FEDC_OK) {
        fedc_dataset_destroy(ds);
        return st;
    }
    *out = ds;
    return FEDC_OK;
}

/* Reads the first ds->n labels into ds->y; the file must hold `items` labels (the sample
 * file's count). *max_label gets the largest. classes > 0: labels must be below. */
static fedc_status read_labels(const char *path, fedc_dataset *ds, size_t items,
                               const char *samples_path, int32_t classes, int32_t *max_label,
                               fedc_err *err)
{
    idx_reader r;
    idx_header h;
    unsigned char *buf = NULL;
    fedc_status st = idx_open(&r, &h, path, 1, err);
    if (st == FEDC_OK && (h.type == 0x0D || h.type == 0x0E))
        st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: labels of type 0x%02x (floating point) at "
                          "offset 2%s; labels must be integers", path, h.type, where(&r));
    if (st == FEDC_OK && h.items != items)
        st = fedc_err_set(err, FEDC_ERR_SHAPE, "%s: %zu labels, but %s has %zu samples", path,
                          h.items, samples_path, items);
    if (st == FEDC_OK) {
        buf = fedc_malloc(CHUNK);
        if (!buf) st = fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", path);
    }
    int32_t mx = -1;
    size_t done = 0, per_chunk = CHUNK / (h.elem_size ? h.elem_size : 1);
    while (st == FEDC_OK && done < ds->n) {
        size_t k = ds->n - done < per_chunk ? ds->n - done : per_chunk;
        size_t base = r.off;
        st = rd(&r, buf, k * h.elem_size, "the labels", err);
        for (size_t i = 0; st == FEDC_OK && i < k; i++) {
            double v = decode(h.type, buf + i * h.elem_size);
            size_t at = base + i * h.elem_size;
            if (v < 0 || v >= (classes > 0 ? classes : FEDC_DATA_MAX_CLASSES)) {
                if (classes > 0)
                    st = fedc_err_set(err, FEDC_ERR_RANGE,
                                      "%s: label %.0f of item %zu (offset %zu%s) not in [0, %ld)",
                                      path, v, done + i, at, where(&r), (long)classes);
                else
                    st = fedc_err_set(err, FEDC_ERR_RANGE,
                                      "%s: label %.0f of item %zu (offset %zu%s) not in [0, %d)",
                                      path, v, done + i, at, where(&r), FEDC_DATA_MAX_CLASSES);
                break;
            }
            ds->y[done + i] = (int32_t)v;
            if ((int32_t)v > mx) mx = (int32_t)v;
        }
        done += k;
    }
    if (st == FEDC_OK && ds->n == items) st = idx_expect_end(&r, err);
    idx_close(&r);
    fedc_free(buf);
    if (st == FEDC_OK && mx > *max_label) *max_label = mx;
    return st;
}

fedc_status fedci_load_idx(const char *train_img, const char *train_lbl, const char *test_img,
                           const char *test_lbl, fedci_opts *o, int32_t classes,
                           const char *name, fedc_dataset **train, fedc_dataset **test,
                           fedc_err *err)
{
    fedc_dataset *tr = NULL, *te = NULL;
    int32_t mx = -1;
    long long limit = 0, test_limit = 0;
    size_t items = 0;
    /* limit= and test_limit= (also applied by fedc_data_load) are used here to read less. */
    fedc_status st = fedci_opt_int(o, "limit", 0, 0, FEDC_DATA_MAX_SAMPLES, &limit, err);
    if (st == FEDC_OK)
        st = fedci_opt_int(o, "test_limit", 0, 0, FEDC_DATA_MAX_SAMPLES, &test_limit, err);
    if (st == FEDC_OK) st = read_samples(train_img, name, (size_t)limit, &items, &tr, err);
    if (st == FEDC_OK) st = read_labels(train_lbl, tr, items, train_img, classes, &mx, err);
    if (st == FEDC_OK && test_img) {
        st = read_samples(test_img, name, (size_t)test_limit, &items, &te, err);
        if (st == FEDC_OK) {
            int same = te->ndim == tr->ndim;
            for (int i = 0; same && i < tr->ndim; i++) same = te->shape[i] == tr->shape[i];
            if (!same)
                st = fedc_err_set(err, FEDC_ERR_SHAPE,
                                  "%s: samples of %zu values, but the training samples (%s) have %zu "
                                  "(or another shape)",
                                  test_img, te->dim, train_img, tr->dim);
        }
        if (st == FEDC_OK) st = read_labels(test_lbl, te, items, test_img, classes, &mx, err);
    }
    if (st != FEDC_OK) {
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        return st;
    }
    tr->num_classes = classes > 0 ? classes : mx + 1;
    if (te) te->num_classes = tr->num_classes;
    *train = tr;
    *test = te;
    return FEDC_OK;
}

/* ---- finding the files in a directory ---------------------------------------------------- */

/* The role of a file name: 0 train images, 1 train labels, 2 test images, 3 test labels. */
static int role_of(const char *name)
{
    if (!strstr(name, "idx")) return -1;
    if (strstr(name, "train-images")) return 0;
    if (strstr(name, "train-labels")) return 1;
    if (strstr(name, "t10k-images") || strstr(name, "test-images")) return 2;
    if (strstr(name, "t10k-labels") || strstr(name, "test-labels")) return 3;
    return -1;
}

/* An IDX file of some role, starting with the prefix (may be NULL). */
static int idx_name_ok(const char *name, const void *prefix)
{
    return role_of(name) >= 0 && (!prefix || strncmp(name, prefix, strlen(prefix)) == 0);
}

static int same_stem(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 3 && strcmp(a + la - 3, ".gz") == 0) la -= 3;
    if (lb > 3 && strcmp(b + lb - 3, ".gz") == 0) lb -= 3;
    return la == lb && memcmp(a, b, la) == 0;
}

fedc_status fedci_find_idx_files(const char *dir, const char *prefix, char *paths[4],
                                 fedc_err *err)
{
    static const char *const role_name[4] = {"train-images", "train-labels", "t10k-images",
                                             "t10k-labels"};
    for (int i = 0; i < 4; i++) paths[i] = NULL;
    char **names = NULL;
    size_t n = 0;
    FEDC_TRY(fedci_list_dir(dir, idx_name_ok, prefix, 0, &names, &n, err));
    fedc_status st = FEDC_OK;
    const char *pick[4] = {0};
    for (size_t i = 0; st == FEDC_OK && i < n; i++) {
        int role = role_of(names[i]);
        if (!pick[role]) {
            pick[role] = names[i];
        } else if (same_stem(pick[role], names[i])) {
            /* x and x.gz: the sorted order puts x first; keep the uncompressed one. */
        } else {
            st = fedc_err_set(err, FEDC_ERR_INVALID,
                              "%s: several %s files (%s, %s); choose one set with ?prefix=", dir,
                              role_name[role], pick[role], names[i]);
        }
    }
    if (st == FEDC_OK && (!pick[0] || !pick[1]))
        st = fedc_err_set(err, FEDC_ERR_NOTFOUND, "%s: no %s file%s (*%s-idx?-ubyte[.gz])", dir,
                          role_name[pick[0] ? 1 : 0], prefix ? " with that prefix" : "",
                          role_name[pick[0] ? 1 : 0]);
    if (st == FEDC_OK && (!pick[2] != !pick[3]))
        st = fedc_err_set(err, FEDC_ERR_NOTFOUND, "%s: a %s file without its %s file", dir,
                          role_name[pick[2] ? 2 : 3], role_name[pick[2] ? 3 : 2]);
    for (int i = 0; st == FEDC_OK && i < 4; i++) {
        if (!pick[i]) continue;
        size_t len = strlen(dir) + strlen(pick[i]) + 2;
        paths[i] = fedc_malloc(len);
        if (!paths[i]) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(paths[i], len, "%s/%s", dir, pick[i]);
    }
    if (st != FEDC_OK)
        for (int i = 0; i < 4; i++) {
            fedc_free(paths[i]);
            paths[i] = NULL;
        }
    fedci_free_names(names, n);
    return st;
}
