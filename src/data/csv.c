/*
 * CSV datasets: one sample per row, numeric features, one integer label column (chosen by
 * index, by header name, or a column named "label"), header row detected or declared, plain or
 * gzip. Blank lines and lines starting with '#' are skipped. Every problem is reported as
 * "file:line: column C (NAME): what".
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"

#define CSV_MAX_BYTES ((size_t)1 << 36)
#define CSV_MAX_COLS 1000000

typedef struct csv_cfg {
    char sep;
    int header; /* -1 auto, 0 no, 1 yes */
    const char *label; /* option text or NULL */
    int32_t classes;   /* 0: from the data */
} csv_cfg;

/* A parsed file: rows of NUL-terminated fields inside the (modified) buffer. */
typedef struct csv_file {
    const char *path;
    char *buf;
    size_t len;
    char *cur;      /* parse position */
    size_t line;    /* line number of the current row */
    char **fields;  /* current row's fields */
    size_t nfields;
    size_t cap;
} csv_file;

static void csv_fini(csv_file *f)
{
    fedc_free(f->buf);
    fedc_free(f->fields);
    memset(f, 0, sizeof *f);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s[n - 1] = '\0';
        s++;
    }
    return s;
}

static int blank_or_comment(const char *s, const char *end)
{
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\r')) s++;
    return s == end || *s == '#';
}

/* Next non-blank row into f->fields; *got = 1, or 0 at the end of the file. */
static fedc_status next_row(csv_file *f, char sep, int *got, fedc_err *err)
{
    *got = 0;
    char *end_buf = f->buf + f->len;
    while (f->cur < end_buf) {
        char *s = f->cur;
        char *nl = memchr(s, '\n', (size_t)(end_buf - s));
        char *e = nl ? nl : end_buf;
        f->cur = nl ? nl + 1 : end_buf;
        f->line++;
        if (blank_or_comment(s, e)) continue;
        if (e > s && e[-1] == '\r') e--;
        *e = '\0';
        if (memchr(s, '\0', (size_t)(e - s)))
            return fedc_err_set(err, FEDC_ERR_FORMAT, "%s:%zu: NUL byte in a text file", f->path,
                                f->line);
        f->nfields = 0;
        char *p = s;
        for (;;) {
            if (f->nfields == f->cap) {
                size_t ncap = f->cap ? 2 * f->cap : 64;
                if (ncap > CSV_MAX_COLS)
                    return fedc_err_set(err, FEDC_ERR_FORMAT, "%s:%zu: more than %d columns",
                                        f->path, f->line, CSV_MAX_COLS);
                char **nf = fedc_realloc(f->fields, ncap * sizeof *nf);
                if (!nf) return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory", f->path);
                f->fields = nf;
                f->cap = ncap;
            }
            char *q = p;
            if (*q == '"') { /* quoted field: up to the closing quote */
                char *close = strchr(q + 1, '"');
                if (close) q = close;
            }
            char *c = strchr(q, sep);
            if (c) *c = '\0';
            f->fields[f->nfields++] = trim(p);
            if (!c) break;
            p = c + 1;
        }
        *got = 1;
        return FEDC_OK;
    }
    return FEDC_OK;
}

/* Parses a number; 1 ok, 0 not a number, -1 not finite. */
static int parse_num(const char *s, double *out)
{
    if (!*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end) return 0;
    if (!isfinite(v)) return -1;
    *out = v;
    return 1;
}

static int row_is_numeric(const csv_file *f)
{
    for (size_t i = 0; i < f->nfields; i++) {
        double v;
        if (parse_num(f->fields[i], &v) == 0) return 0;
    }
    return 1;
}

/* Opens a file and reads its first row; decides whether it is a header. */
static fedc_status csv_open(csv_file *f, const char *path, const csv_cfg *cfg, int *has_header,
                            fedc_err *err)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    FEDC_TRY(fedci_read_file(path, CSV_MAX_BYTES, &f->buf, &f->len, err));
    f->cur = f->buf;
    int r = 0;
    FEDC_TRY(next_row(f, cfg->sep, &r, err));
    if (r == 0) return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: no rows", path);
    if (f->nfields < 2)
        return fedc_err_set(err, FEDC_ERR_FORMAT,
                            "%s:%zu: 1 column; a dataset needs a label and at least one feature "
                            "(separator '%c'; set ?sep=)",
                            path, f->line, cfg->sep);
    *has_header = cfg->header >= 0 ? cfg->header : !row_is_numeric(f);
    return FEDC_OK;
}

/* The label column from the option, the header (may be NULL) and the column count. */
static fedc_status label_column(const csv_cfg *cfg, const csv_file *f, int has_header,
                                size_t ncol, size_t *col, fedc_err *err)
{
    if (!cfg->label) {
        *col = 0;
        if (has_header)
            for (size_t i = 0; i < ncol; i++)
                if (strcasecmp(f->fields[i], "label") == 0) *col = i;
        return FEDC_OK;
    }
    char *end;
    long v = strtol(cfg->label, &end, 10);
    if (end != cfg->label && !*end) {
        if (v < 0) v += (long)ncol;
        if (v < 0 || (size_t)v >= ncol)
            return fedc_err_set(err, FEDC_ERR_INVALID, "%s: label=%s, but the file has %zu columns",
                                f->path, cfg->label, ncol);
        *col = (size_t)v;
        return FEDC_OK;
    }
    if (!has_header)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "%s: label=%s names a column, but the file has no header row", f->path,
                            cfg->label);
    for (size_t i = 0; i < ncol; i++)
        if (strcmp(f->fields[i], cfg->label) == 0) {
            *col = i;
            return FEDC_OK;
        }
    return fedc_err_set(err, FEDC_ERR_INVALID, "%s:%zu: no column named '%s' in the header",
                        f->path, f->line, cfg->label);
}

/* Reads every data row of an opened file (positioned after its first row) into a dataset. */
static fedc_status csv_read(csv_file *f, int has_header, size_t ncol, size_t label_col,
                            const csv_cfg *cfg, char **header, size_t header_line,
                            int32_t *max_label, fedc_dataset **out, fedc_err *err)
{
    size_t rows = 1;
    for (const char *p = f->cur; (p = memchr(p, '\n', (size_t)(f->buf + f->len - p))) != NULL; p++)
        rows++;
    int64_t shape[1] = {(int64_t)(ncol - 1)};
    fedc_dataset *ds = NULL;
    FEDC_TRY(fedc_dataset_create(rows, 1, shape, 1, fedci_basename(f->path), &ds, err));
    size_t n = 0;
    int r = 1; /* without a header, the first row (already read) is data */
    fedc_status st = has_header ? next_row(f, cfg->sep, &r, err) : FEDC_OK;
    while (st == FEDC_OK && r == 1) {
        if (f->nfields != ncol) {
            st = fedc_err_set(err, FEDC_ERR_SHAPE, "%s:%zu: %zu fields, expected %zu (as on line %zu)",
                              f->path, f->line, f->nfields, ncol, header_line);
            break;
        }
        float *x = ds->x + n * ds->dim;
        size_t j = 0;
        for (size_t c = 0; c < ncol && st == FEDC_OK; c++) {
            double v;
            int ok = parse_num(f->fields[c], &v);
            const char *cname = header ? header[c] : NULL;
            if (ok <= 0) {
                st = fedc_err_set(err, ok < 0 ? FEDC_ERR_NONFINITE : FEDC_ERR_FORMAT,
                                  "%s:%zu: column %zu%s%s%s: '%.40s' is %s", f->path, f->line, c,
                                  cname ? " (" : "", cname ? cname : "", cname ? ")" : "",
                                  f->fields[c], ok < 0 ? "not finite" : "not a number");
            } else if (c == label_col) {
                int32_t lim = cfg->classes > 0 ? cfg->classes : FEDC_DATA_MAX_CLASSES;
                if (v != floor(v) || v < 0 || v >= lim)
                    st = fedc_err_set(err, FEDC_ERR_RANGE,
                                      "%s:%zu: label '%.40s' (column %zu) is not an integer in [0, %ld)",
                                      f->path, f->line, f->fields[c], c, (long)lim);
                else {
                    ds->y[n] = (int32_t)v;
                    if (ds->y[n] > *max_label) *max_label = ds->y[n];
                }
            } else if (fabs(v) > FLT_MAX) {
                st = fedc_err_set(err, FEDC_ERR_RANGE, "%s:%zu: column %zu: %.40s overflows float32",
                                  f->path, f->line, c, f->fields[c]);
            } else {
                x[j++] = (float)v;
            }
        }
        if (st != FEDC_OK) break;
        n++;
        st = next_row(f, cfg->sep, &r, err);
    }
    if (st == FEDC_OK && n == 0) st = fedc_err_set(err, FEDC_ERR_FORMAT, "%s: no data rows", f->path);
    if (st != FEDC_OK) {
        fedc_dataset_destroy(ds);
        return st;
    }
    fedci_dataset_truncate(ds, n);
    *out = ds;
    return FEDC_OK;
}

static fedc_status load_one(const char *path, const csv_cfg *cfg, size_t want_cols,
                            size_t *ncol_out, size_t *label_col, int32_t *max_label,
                            fedc_dataset **out, fedc_err *err)
{
    csv_file f;
    int has_header = 0;
    fedc_status st = csv_open(&f, path, cfg, &has_header, err);
    size_t ncol = f.nfields, header_line = f.line;
    char **header = NULL;
    if (st == FEDC_OK && want_cols && ncol != want_cols)
        st = fedc_err_set(err, FEDC_ERR_SHAPE, "%s:%zu: %zu columns, but the training file has %zu",
                          path, f.line, ncol, want_cols);
    if (st == FEDC_OK && !want_cols) st = label_column(cfg, &f, has_header, ncol, label_col, err);
    if (st == FEDC_OK && has_header) {
        header = fedc_malloc(ncol * sizeof *header);
        if (!header) st = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
        else memcpy(header, f.fields, ncol * sizeof *header);
    }
    if (st == FEDC_OK)
        st = csv_read(&f, has_header, ncol, *label_col, cfg, header, header_line, max_label, out,
                      err);
    fedc_free(header);
    csv_fini(&f);
    *ncol_out = ncol;
    return st;
}

fedc_status fedci_load_csv(const char *train_path, const char *test_path, fedci_opts *o,
                           fedc_dataset **train, fedc_dataset **test, fedc_err *err)
{
    csv_cfg cfg = {',', -1, NULL, 0};
    const char *sep = fedci_opt_str(o, "sep");
    if (sep) {
        if (strcmp(sep, "tab") == 0 || strcmp(sep, "\\t") == 0) cfg.sep = '\t';
        else if (strcmp(sep, "space") == 0) cfg.sep = ' ';
        else if (strlen(sep) == 1 && sep[0] != '"' && sep[0] != '\n') cfg.sep = sep[0];
        else
            return fedc_err_set(err, FEDC_ERR_INVALID,
                                "dataset spec '%s': sep=%s: one character, 'tab' or 'space'",
                                o->spec, sep);
    }
    const char *header = fedci_opt_str(o, "header");
    if (header && strcmp(header, "auto") != 0) {
        int h;
        FEDC_TRY(fedci_opt_bool(o, "header", 0, &h, err));
        cfg.header = h;
    }
    cfg.label = fedci_opt_str(o, "label");
    long long classes;
    FEDC_TRY(fedci_opt_int(o, "classes", 0, 0, FEDC_DATA_MAX_CLASSES, &classes, err));
    cfg.classes = (int32_t)classes;

    fedc_dataset *tr = NULL, *te = NULL;
    size_t ncol = 0, ncol_test = 0, label_col = 0;
    int32_t mx = -1;
    fedc_status st = load_one(train_path, &cfg, 0, &ncol, &label_col, &mx, &tr, err);
    if (st == FEDC_OK && test_path)
        st = load_one(test_path, &cfg, ncol, &ncol_test, &label_col, &mx, &te, err);
    if (st != FEDC_OK) {
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        return st;
    }
    tr->num_classes = cfg.classes > 0 ? cfg.classes : mx + 1;
    if (te) te->num_classes = tr->num_classes;
    *train = tr;
    *test = te;
    return FEDC_OK;
}
