/* LEAF JSON loading: FEMNIST-style number arrays and Shakespeare-style strings, users kept
 * across train and test files, directories of files, the natural partition, and malformed
 * files refused with the file name, user and sample. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

static char *dir;

static const char *train_json =
    "{\"users\": [\"u1\", \"u2\"], \"num_samples\": [2, 1], \"user_data\": {"
    "\"u1\": {\"x\": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]], \"y\": [3, 1]},"
    "\"u2\": {\"x\": [[5, 6, 7, 8]], \"y\": [0]}}}";
static const char *test_json =
    "{\"users\": [\"u2\", \"u3\"], \"num_samples\": [1, 1], \"user_data\": {"
    "\"u2\": {\"x\": [[9, 9, 9, 9]], \"y\": [2]},"
    "\"u3\": {\"x\": [[1, 1, 1, 1]], \"y\": [1]}}}";

static void test_numbers(void **state)
{
    (void)state;
    char *a = tu_put_file(dir, "train.json", train_json),
         *b = tu_put_file(dir, "test.json", test_json);
    char spec[1024];
    snprintf(spec, sizeof spec, "leaf:%s,%s?shape=2,2", a, b);
    fedc_dataset *tr = NULL, *te = NULL;
    fedc_err err;
    assert_int_equal(fedc_data_load(spec, &tr, &te, &err), FEDC_OK);
    assert_int_equal(fedc_dataset_n(tr), 3);
    assert_int_equal(fedc_dataset_n(te), 2);
    int64_t shape[FEDC_DATA_MAX_DIMS];
    assert_int_equal(fedc_dataset_shape(tr, shape), 2);
    assert_int_equal(shape[0], 2);
    assert_int_equal(fedc_dataset_num_classes(tr), 4);
    assert_int_equal(fedc_dataset_num_classes(te), 4);
    assert_true(fedc_dataset_x(tr)[1] == 0.2f);
    assert_true(fedc_dataset_x(tr)[11] == 8.0f);
    assert_int_equal(fedc_dataset_y(tr)[0], 3);
    assert_int_equal(fedc_dataset_y(te)[0], 2);
    /* one user table for both: u1 = 0, u2 = 1, u3 = 2 */
    assert_int_equal(fedc_dataset_num_users(tr), 3);
    assert_int_equal(fedc_dataset_num_users(te), 3);
    const int32_t *u = fedc_dataset_user_ids(tr);
    assert_int_equal(u[0], 0);
    assert_int_equal(u[1], 0);
    assert_int_equal(u[2], 1);
    assert_int_equal(fedc_dataset_user_ids(te)[0], 1);
    assert_int_equal(fedc_dataset_user_ids(te)[1], 2);
    assert_string_equal(fedc_dataset_user_name(tr, 1), "u2");
    assert_string_equal(fedc_dataset_user_name(te, 2), "u3");

    /* natural partition: the two users with training samples */
    fedc_partition_opts po;
    fedc_partition_opts_init(&po);
    po.scheme = FEDC_PARTITION_NATURAL;
    po.num_clients = 0;
    po.test_fraction = 0;
    fedc_partition *p = NULL;
    assert_int_equal(fedc_partition_create(tr, &po, &p, &err), FEDC_OK);
    assert_int_equal(fedc_partition_num_clients(p), 2);
    size_t n;
    const uint32_t *idx = fedc_partition_indices(p, 0, FEDC_SPLIT_TRAIN, &n);
    assert_int_equal(n, 2);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    idx = fedc_partition_indices(p, 1, FEDC_SPLIT_TRAIN, &n);
    assert_int_equal(n, 1);
    assert_int_equal(idx[0], 2);
    fedc_partition_destroy(p);
    /* 3 clients: more than the users with samples */
    po.num_clients = 3;
    assert_int_equal(fedc_partition_create(tr, &po, &p, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "2 users"));
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);

    /* 784 values: FEMNIST images, shape 1x28x28 without being told */
    char *big = malloc(40000);
    assert_non_null(big);
    size_t pos = (size_t)sprintf(big, "{\"users\": [\"w\"], \"user_data\": {\"w\": {\"x\": [[");
    for (int i = 0; i < 784; i++) pos += (size_t)sprintf(big + pos, i ? ",%d" : "%d", i % 2);
    sprintf(big + pos, "]], \"y\": [61]}}}");
    char *c = tu_put_file(dir, "femnist.json", big);
    free(big);
    snprintf(spec, sizeof spec, "leaf:%s?classes=62", c);
    assert_int_equal(fedc_data_load(spec, &tr, &te, &err), FEDC_OK);
    assert_null(te);
    assert_int_equal(fedc_dataset_shape(tr, shape), 3);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], 28);
    assert_int_equal(shape[2], 28);
    assert_int_equal(fedc_dataset_num_classes(tr), 62);
    assert_true(fedc_dataset_x(tr)[783] == 1.0f);
    fedc_dataset_destroy(tr);
    free(a);
    free(b);
    free(c);
}

static void test_text_and_directory(void **state)
{
    (void)state;
    char *sub = malloc(strlen(dir) + 8);
    sprintf(sub, "%s/shak", dir);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", sub);
    assert_int_equal(system(cmd), 0);
    char name[1024];
    snprintf(name, sizeof name, "shak/b.json");
    char *f2 = tu_put_file(dir, name,
                           "{\"users\": [\"B\"], \"num_samples\": [1], \"user_data\": "
                           "{\"B\": {\"x\": [\"ab c}\"], \"y\": [\"\\n\"]}}}");
    snprintf(name, sizeof name, "shak/a.json");
    char *f1 = tu_put_file(dir, name,
                           "{\"users\": [\"A\"], \"num_samples\": [2], \"user_data\": "
                           "{\"A\": {\"x\": [\"To be\", \"or no\"], \"y\": [\"t\", \"}\"]}}}");
    snprintf(name, sizeof name, "shak/notes.txt");
    char *f3 = tu_put_file(dir, name, "ignored");
    char spec[1024];
    snprintf(spec, sizeof spec, "leaf:%s", sub);
    fedc_dataset *tr = NULL;
    fedc_err err;
    assert_int_equal(fedc_data_load(spec, &tr, NULL, &err), FEDC_OK);
    assert_int_equal(fedc_dataset_n(tr), 3);
    assert_int_equal(fedc_dataset_dim(tr), 5);
    assert_int_equal(fedc_dataset_num_classes(tr), 80);
    assert_int_equal(fedc_dataset_num_users(tr), 2);
    /* a.json comes first (name order) */
    assert_string_equal(fedc_dataset_user_name(tr, 0), "A");
    const char *vocab = FEDC_LEAF_VOCAB;
    assert_int_equal(strlen(vocab), 80);
    const float *x = fedc_dataset_x(tr);
    const char *first = "To be";
    for (int i = 0; i < 5; i++) assert_true(x[i] == (float)(strchr(vocab, first[i]) - vocab));
    /* pinned indices of LEAF's vocabulary: 'a' 53, ' ' 1, 'c' 55, '}' 79, '\n' 0 */
    assert_true(x[10] == 53.0f && x[12] == 1.0f && x[13] == 55.0f && x[14] == 79.0f);
    assert_int_equal(fedc_dataset_y(tr)[1], 79);
    assert_int_equal(fedc_dataset_y(tr)[2], 0);
    assert_int_equal(fedc_dataset_user_ids(tr)[2], 1);
    fedc_dataset_destroy(tr);

    /* a character outside the vocabulary: refused, or mapped with oov= */
    char *f4 = tu_put_file(dir, "oov.json",
                           "{\"users\": [\"C\"], \"user_data\": "
                           "{\"C\": {\"x\": [\"ab|cd\"], \"y\": [\"a\"]}}}");
    snprintf(spec, sizeof spec, "leaf:%s", f4);
    tu_expect_load_fail(spec, FEDC_ERR_RANGE, "oov.json: user 'C' sample 0", "0x7c");
    snprintf(spec, sizeof spec, "leaf:%s?oov=1", f4);
    assert_int_equal(fedc_data_load(spec, &tr, NULL, &err), FEDC_OK);
    assert_true(fedc_dataset_x(tr)[2] == 1.0f);
    fedc_dataset_destroy(tr);
    free(f1);
    free(f2);
    free(f3);
    free(f4);
    free(sub);
}

static void test_malformed(void **state)
{
    (void)state;
    struct {
        const char *text, *opts;
        fedc_status code;
        const char *n1, *n2;
    } cases[] = {
        {"{\"users\": [\"a\"],\n \"user_data\": {\"a\": {\"x\": [[1]], \"y\": [0]}}", "",
         FEDC_ERR_FORMAT, ":2:", "invalid JSON"},
        {"[1, 2]", "", FEDC_ERR_FORMAT, "not an object", NULL},
        {"{\"user_data\": {}}", "", FEDC_ERR_FORMAT, "not a LEAF file", NULL},
        {"{\"users\": [\"a\"], \"num_samples\": [1, 2], \"user_data\": {}}", "", FEDC_ERR_SHAPE,
         "\"num_samples\" has 2", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {}}", "", FEDC_ERR_FORMAT, "user 'a'", "no user_data"},
        {"{\"users\": [7], \"user_data\": {}}", "", FEDC_ERR_FORMAT, "users[0]", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1], [2]], \"y\": [0]}}}", "",
         FEDC_ERR_SHAPE, "user 'a'", "2 x values but 1 y"},
        {"{\"users\": [\"a\"], \"num_samples\": [3], \"user_data\": {\"a\": {\"x\": [[1]], "
         "\"y\": [0]}}}",
         "", FEDC_ERR_SHAPE, "num_samples[0] says 3", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2], [3, 4, 5]], \"y\": [0, 1]}}}",
         "", FEDC_ERR_SHAPE, "user 'a' sample 1", "3 values, expected 2"},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, \"z\"]], \"y\": [0]}}}", "",
         FEDC_ERR_FORMAT, "sample 0", "x[1] is not a number"},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1], [2]], \"y\": [0, 3]}}}",
         "?classes=3", FEDC_ERR_RANGE, "sample 1", "label 3"},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1]], \"y\": [-1]}}}", "",
         FEDC_ERR_RANGE, "label -1", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1]], \"y\": [0.5]}}}", "",
         FEDC_ERR_RANGE, "label 0.5", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1], \"b\"], \"y\": [0, 1]}}}", "",
         FEDC_ERR_FORMAT, "sample 1", "another kind"},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [\"ab\"], \"y\": [\"cd\"]}}}", "",
         FEDC_ERR_FORMAT, "sample 0", "2 characters, expected 1"},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [{\"k\": 1}], \"y\": [0]}}}", "",
         FEDC_ERR_UNSUPPORTED, "sample 0", "number array or a string"},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[]], \"y\": [0]}}}", "",
         FEDC_ERR_SHAPE, "x is empty", NULL},
        {"{\"users\": [], \"user_data\": {}}", "", FEDC_ERR_FORMAT, "no samples", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1e39]], \"y\": [0]}}}", "",
         FEDC_ERR_NONFINITE, "x[0]", NULL},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2]], \"y\": [0]}}}", "?shape=3",
         FEDC_ERR_SHAPE, "shape=3", NULL},
    };
    char spec[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.json", i);
        char *p = tu_put_file(dir, name, cases[i].text);
        snprintf(spec, sizeof spec, "leaf:%s%s", p, cases[i].opts);
        tu_expect_load_fail(spec, cases[i].code, cases[i].n1, cases[i].n2);
        /* every message names the file */
        fedc_dataset *tr = NULL;
        fedc_err err;
        fedc_err_clear(&err);
        fedc_data_load(spec, &tr, NULL, &err);
        if (cases[i].opts[0] != '?' && !strstr(err.msg, name)) fail_msg("'%s' lacks %s", err.msg, name);
        free(p);
    }
    /* train and test of different sizes */
    char *a = tu_put_file(dir, "tr.json", train_json);
    char *b = tu_put_file(dir, "te.json",
                          "{\"users\": [\"u1\"], \"user_data\": {\"u1\": {\"x\": [[1, 2]], "
                          "\"y\": [0]}}}");
    snprintf(spec, sizeof spec, "leaf:%s,%s", a, b);
    tu_expect_load_fail(spec, FEDC_ERR_SHAPE, "te.json: user 'u1' sample 0",
                        "2 values, expected 4");
    snprintf(spec, sizeof spec, "leaf:%s/none.json", dir);
    tu_expect_load_fail(spec, FEDC_ERR_NOTFOUND, "none.json", NULL);
    free(a);
    free(b);
}

/* Each allocation of the load failing in turn: FEDC_ERR_NOMEM, nothing leaked. */
static void test_alloc_failures(void **state)
{
    (void)state;
    char *a = tu_put_file(dir, "ta.json", train_json), *b = tu_put_file(dir, "tb.json", test_json);
    char spec[1024];
    snprintf(spec, sizeof spec, "leaf:%s,%s", a, b);
    assert_true(tu_alloc_torture_load(spec) > 8);
    free(a);
    free(b);
}

static int setup(void **state)
{
    (void)state;
    dir = tu_tempdir("leaf");
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
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_text_and_directory),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
