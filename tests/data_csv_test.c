/* CSV loading: label column choice, header detection, separators, gzip, standardization fitted
 * on the training set only, and every malformed case refused with file:line. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

static char *dir;

static fedc_dataset *load_ok(const char *spec, fedc_dataset **test)
{
    fedc_dataset *tr = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_data_load(spec, &tr, test, &err);
    if (st != FEDC_OK) fail_msg("spec %s: %s", spec, err.msg);
    return tr;
}

static void test_header_and_label(void **state)
{
    (void)state;
    char spec[1024];
    /* header detected, column named "label" in the middle */
    char *a =
        tu_put_file(dir, "a.csv", "f1,label,f2\n1.5,2,-3\n\n# a comment\n4,0,5e-1\r\n7,1,8\n");
    snprintf(spec, sizeof spec, "csv:%s", a);
    fedc_dataset *tr = load_ok(spec, NULL);
    assert_int_equal(fedc_dataset_n(tr), 3);
    assert_int_equal(fedc_dataset_dim(tr), 2);
    assert_int_equal(fedc_dataset_num_classes(tr), 3);
    const float *x = fedc_dataset_x(tr);
    const int32_t *y = fedc_dataset_y(tr);
    float want_x[6] = {1.5f, -3, 4, 0.5f, 7, 8};
    int32_t want_y[3] = {2, 0, 1};
    for (int i = 0; i < 6; i++) assert_true(x[i] == want_x[i]);
    for (int i = 0; i < 3; i++) assert_int_equal(y[i], want_y[i]);
    assert_string_equal(fedc_dataset_name(tr), "a.csv");
    fedc_dataset_destroy(tr);

    /* label by name, by index, and negative index (last column) */
    snprintf(spec, sizeof spec, "csv:%s?label=f2&classes=9", a);
    /* f2 holds -3: not a label */
    tu_expect_load_fail(spec, FEDC_ERR_RANGE, "a.csv:2", "-3");
    char *b = tu_put_file(dir, "b.csv", "3,0.25,1\n0,0.5,2\n");
    snprintf(spec, sizeof spec, "csv:%s?label=-1", b);
    tr = load_ok(spec, NULL);
    assert_int_equal(fedc_dataset_y(tr)[0], 1);
    assert_int_equal(fedc_dataset_y(tr)[1], 2);
    assert_true(fedc_dataset_x(tr)[0] == 3.0f && fedc_dataset_x(tr)[1] == 0.25f);
    fedc_dataset_destroy(tr);
    /* no header: default label column 0 */
    snprintf(spec, sizeof spec, "csv:%s", b);
    tr = load_ok(spec, NULL);
    assert_int_equal(fedc_dataset_y(tr)[0], 3);
    assert_int_equal(fedc_dataset_num_classes(tr), 4);
    fedc_dataset_destroy(tr);
    /* header=yes makes the first row a header even though numeric */
    snprintf(spec, sizeof spec, "csv:%s?header=yes&label=0", b);
    tr = load_ok(spec, NULL);
    assert_int_equal(fedc_dataset_n(tr), 1);
    fedc_dataset_destroy(tr);
    /* separators: semicolon and tab, quoted header */
    char *c = tu_put_file(dir, "c.csv", "\"x\";\"y\";\"label\"\n1;2;0\n3;4;1\n");
    snprintf(spec, sizeof spec, "csv:%s?sep=;", c);
    tr = load_ok(spec, NULL);
    assert_int_equal(fedc_dataset_n(tr), 2);
    assert_int_equal(fedc_dataset_y(tr)[1], 1);
    assert_true(fedc_dataset_x(tr)[3] == 4.0f);
    fedc_dataset_destroy(tr);
    char *t = tu_put_file(dir, "t.tsv", "label\tv\n1\t2.5\n");
    snprintf(spec, sizeof spec, "csv:%s?sep=tab", t);
    tr = load_ok(spec, NULL);
    assert_true(fedc_dataset_x(tr)[0] == 2.5f);
    fedc_dataset_destroy(tr);
    free(a);
    free(b);
    free(c);
    free(t);
}

static void test_gzip_and_test_file(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/g.csv.gz", dir);
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    gzprintf(f, "label,a,b\n");
    for (int i = 0; i < 100; i++) gzprintf(f, "%d,%d,%d\n", i % 4, i, 2 * i);
    gzclose(f);
    char *te_path = tu_put_file(dir, "te.csv", "label,a,b\n3,1000,0\n0,0,0\n");
    char spec[2048];
    snprintf(spec, sizeof spec, "csv:%s,%s", path, te_path);
    fedc_dataset *te = NULL;
    fedc_dataset *tr = load_ok(spec, &te);
    assert_non_null(te);
    assert_int_equal(fedc_dataset_n(tr), 100);
    assert_int_equal(fedc_dataset_n(te), 2);
    assert_int_equal(fedc_dataset_num_classes(te), 4);
    assert_true(fedc_dataset_x(tr)[2 * 99] == 99.0f);
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);

    /* standardize: fitted on train only. Column a = 0..99: mean 49.5, population sd
     * sqrt((100^2 - 1) / 12) = 28.866; the test value 1000 maps to (1000 - 49.5) / 28.866. */
    snprintf(spec, sizeof spec, "csv:%s,%s?standardize=1", path, te_path);
    tr = load_ok(spec, &te);
    double mean = 0, var = 0;
    for (int i = 0; i < 100; i++) mean += fedc_dataset_x(tr)[2 * i];
    mean /= 100;
    for (int i = 0; i < 100; i++) var += pow(fedc_dataset_x(tr)[2 * i] - mean, 2);
    var /= 100;
    assert_close(mean, 0.0, 0, 1e-5);
    assert_close(var, 1.0, 1e-5, 0);
    assert_close(fedc_dataset_x(te)[0], (1000 - 49.5) / sqrt((100.0 * 100 - 1) / 12), 1e-5, 0);
    assert_close(fedc_dataset_x(te)[1], (0 - 99.0) / sqrt(4 * (100.0 * 100 - 1) / 12), 1e-5, 0);
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);
    free(te_path);
}

static void test_malformed(void **state)
{
    (void)state;
    char spec[1024];
    struct {
        const char *name, *text, *opts;
        fedc_status code;
        const char *n1, *n2;
    } cases[] = {
        /* non-numeric feature: file, line, column name and the text */
        {"nn.csv", "label,a,b\n0,1,2\n1,x7,3\n", "", FEDC_ERR_FORMAT, "nn.csv:3", "(a): 'x7'"},
        /* an empty field */
        {"em.csv", "0,1,2\n1,,3\n", "", FEDC_ERR_FORMAT, "em.csv:2", "not a number"},
        /* ragged rows: too few and too many fields */
        {"r1.csv", "label,a,b\n0,1,2\n1,2\n", "", FEDC_ERR_SHAPE, "r1.csv:3", "2 fields, expected 3"},
        {"r2.csv", "0,1,2\n\n1,2,3,4\n", "", FEDC_ERR_SHAPE, "r2.csv:3", "4 fields"},
        /* labels out of range, negative, fractional */
        {"l1.csv", "0,1\n5,1\n", "?classes=5", FEDC_ERR_RANGE, "l1.csv:2", "[0, 5)"},
        {"l2.csv", "0,1\n-1,1\n", "", FEDC_ERR_RANGE, "l2.csv:2", "'-1'"},
        {"l3.csv", "0,1\n1.5,1\n", "", FEDC_ERR_RANGE, "l3.csv:2", "not an integer"},
        /* non-finite values */
        {"nf.csv", "0,1\n1,nan\n", "", FEDC_ERR_NONFINITE, "nf.csv:2", "not finite"},
        {"in.csv", "0,inf\n", "", FEDC_ERR_NONFINITE, "in.csv:1", "not finite"},
        {"ov.csv", "0,1e39\n", "", FEDC_ERR_RANGE, "ov.csv:1", "float32"},
        /* empty, header only, one column */
        {"e.csv", "\n\n", "", FEDC_ERR_FORMAT, "e.csv", "no rows"},
        {"h.csv", "label,a\n", "", FEDC_ERR_FORMAT, "h.csv", "no data rows"},
        {"one.csv", "1\n2\n", "", FEDC_ERR_FORMAT, "one.csv:1", "1 column"},
        /* label column by an unknown name, by name without header, index out of range */
        {"ln.csv", "a,b\n0,1\n", "?label=c", FEDC_ERR_INVALID, "ln.csv:1", "'c'"},
        {"lh.csv", "0,1\n", "?label=c", FEDC_ERR_INVALID, "lh.csv", "no header"},
        {"li.csv", "0,1\n", "?label=5", FEDC_ERR_INVALID, "li.csv", "2 columns"},
        /* bad options */
        {"op.csv", "0,1\n", "?sep=ab", FEDC_ERR_INVALID, "sep=ab", NULL},
        {"oq.csv", "0,1\n", "?header=maybe", FEDC_ERR_INVALID, "header=maybe", NULL},
        {"or.csv", "0,1\n", "?lable=0", FEDC_ERR_INVALID, "lable", NULL},
        /* a NUL byte in text */
        {"nul.csv", "0,1\n1,2\n", "", FEDC_OK, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = tu_put_file(dir, cases[i].name, cases[i].text);
        snprintf(spec, sizeof spec, "csv:%s%s", p, cases[i].opts);
        if (cases[i].code == FEDC_OK) {
            /* overwrite with an embedded NUL */
            tu_write_file(p, "0,1\n1\0002\n", 8);
            tu_expect_load_fail(spec, FEDC_ERR_FORMAT, "nul.csv:2", "NUL");
        } else {
            tu_expect_load_fail(spec, cases[i].code, cases[i].n1, cases[i].n2);
        }
        free(p);
    }
    /* the test file must have the training file's columns */
    char *tr = tu_put_file(dir, "cols_tr.csv", "0,1,2\n"),
         *te = tu_put_file(dir, "cols_te.csv", "0,1\n");
    snprintf(spec, sizeof spec, "csv:%s,%s", tr, te);
    tu_expect_load_fail(spec, FEDC_ERR_SHAPE, "cols_te.csv:1", "2 columns");
    free(tr);
    free(te);
    snprintf(spec, sizeof spec, "csv:%s/missing.csv", dir);
    tu_expect_load_fail(spec, FEDC_ERR_NOTFOUND, "missing.csv", NULL);
    tu_expect_load_fail("csv:", FEDC_ERR_INVALID, NULL, NULL);
    tu_expect_load_fail("csv:a,b,c", FEDC_ERR_INVALID, "TRAIN[,TEST]", NULL);
}

/* Every allocation failure while loading ends in FEDC_ERR_NOMEM and frees everything. */
static void test_alloc_failures(void **state)
{
    (void)state;
    char *p = tu_put_file(dir, "af.csv", "label,a,b\n0,1,2\n1,3,4\n2,5,6\n");
    char spec[1024];
    snprintf(spec, sizeof spec, "csv:%s,%s?standardize=1", p, p);
    assert_true(tu_alloc_torture_load(spec) > 5);
    free(p);
}

static int setup(void **state)
{
    (void)state;
    dir = tu_tempdir("csv");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmtree(dir);
    free(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_label),
        cmocka_unit_test(test_gzip_and_test_file),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
