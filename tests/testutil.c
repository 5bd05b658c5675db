/* Helpers shared by the C tests. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/data.h"

char *tu_tempdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *path = malloc(strlen(base) + strlen(tag) + 32);
    assert_non_null(path);
    sprintf(path, "%s/fedc-%s-XXXXXX", base, tag);
    assert_non_null(mkdtemp(path));
    return path;
}

void tu_rmtree(const char *path)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

void tu_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

char *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    *n = fread(buf, 1, (size_t)size, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

const char *tu_src_dir(void)
{
    const char *s = getenv("FEDC_SRC");
    return s && *s ? s : ".";
}

char *tu_put_file(const char *dir, const char *name, const char *text)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    assert_non_null(p);
    sprintf(p, "%s/%s", dir, name);
    tu_write_file(p, text, strlen(text));
    return p;
}

void tu_expect_load_fail(const char *spec, fedc_status code, const char *n1, const char *n2)
{
    fedc_dataset *tr = (fedc_dataset *)1, *te = (fedc_dataset *)1;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_data_load(spec, &tr, &te, &err);
    if (st != code || (n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
        fail_msg("spec %s: status %d (want %d), message '%s' (want '%s', '%s')", spec, st, code,
                 err.msg, n1 ? n1 : "", n2 ? n2 : "");
    assert_null(tr);
    assert_null(te);
}

int tu_alloc_torture(tu_alloc_op op, void *ctx, uint64_t max_k)
{
    int failures = 0;
    for (uint64_t k = 1; k < max_k; k++) {
        fedc_alloc_stats s0, s1;
        fedc_alloc_get_stats(&s0);
        fedc_alloc_fail_after(k, 0);
        fedc_err err;
        fedc_err_clear(&err);
        fedc_status st = op(ctx, &err);
        fedc_alloc_fail_after(0, 0);
        fedc_alloc_get_stats(&s1);
        int injected = s1.failures > s0.failures;
        if (st != FEDC_OK) {
            failures++;
            if (st != FEDC_ERR_NOMEM)
                fail_msg("allocation %llu failing: status %d, not FEDC_ERR_NOMEM: %s",
                         (unsigned long long)k, (int)st, err.msg);
        }
        if (s1.current_bytes != s0.current_bytes)
            fail_msg("allocation %llu failing: status %d (%s), %lld bytes leaked",
                     (unsigned long long)k, (int)st, err.msg,
                     (long long)(s1.current_bytes - s0.current_bytes));
        if (!injected) break; /* k is past the last allocation */
    }
    return failures;
}

static fedc_status load_op(void *ctx, fedc_err *err)
{
    fedc_dataset *tr = NULL, *te = NULL;
    fedc_status st = fedc_data_load(ctx, &tr, &te, err);
    if (st == FEDC_OK) {
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
    } else {
        assert_null(tr);
        assert_null(te);
    }
    return st;
}

int tu_alloc_torture_load(const char *spec)
{
    return tu_alloc_torture(load_op, (void *)spec, 2000);
}

fedc_model *tu_model(const char *spec, const int64_t *shape, int ndim, int outputs)
{
    fedc_model *m = NULL;
    fedc_err err;
    if (fedc_model_create(spec, shape, ndim, outputs, &m, &err) != FEDC_OK)
        fail_msg("'%s': %s", spec, err.msg);
    return m;
}

fedc_status tu_eval_nothing(const void *s, void *w, const fedc_eval_ins *ins, fedc_eval_out *out,
                            fedc_err *e)
{
    (void)s;
    (void)w;
    (void)ins;
    (void)e;
    out->loss = 0;
    out->accuracy = NAN;
    out->num_examples = 1;
    return FEDC_OK;
}

fedc_config *tu_config(const char *const *base, const char *const *sets)
{
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (int i = 0; base && base[i]; i++)
        if (fedc_config_set(cfg, base[i], "test") != FEDC_OK)
            fail_msg("%s: %s", base[i], fedc_config_errmsg(cfg));
    for (int i = 0; sets && sets[i]; i++)
        if (fedc_config_set(cfg, sets[i], "test") != FEDC_OK)
            fail_msg("%s: %s", sets[i], fedc_config_errmsg(cfg));
    return cfg;
}
