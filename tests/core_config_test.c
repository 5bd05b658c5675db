/* The config registry: defaults, INI files, --set assignments, and every kind of bad input. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = tu_tempdir("config");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmtree(dir);
    free(dir);
    return 0;
}

static char *write_ini(const char *name, const char *text)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tu_write_file(path, text, strlen(text));
    return path;
}

static void test_registry_and_defaults(void **state)
{
    (void)state;
    assert_true(fedc_config_key_count() > 20);
    /* every key: non-empty help, unique section.key, default valid (create asserts it) */
    for (size_t i = 0; i < fedc_config_key_count(); i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        assert_true(strlen(k->help) > 5);
        for (size_t j = 0; j < i; j++) {
            const fedc_config_key *o = fedc_config_key_at(j);
            assert_false(strcmp(k->section, o->section) == 0 && strcmp(k->name, o->name) == 0);
        }
    }
    assert_null(fedc_config_key_at(fedc_config_key_count()));
    assert_non_null(fedc_config_key_find("train.lr"));
    assert_null(fedc_config_key_find("train.nope"));
    assert_null(fedc_config_key_find("nodot"));
    fedc_config *cfg = fedc_config_create();
    assert_int_equal(fedc_config_int(cfg, "run.seed"), 42);
    assert_close(fedc_config_double(cfg, "train.lr"), 0.05, 0, 0);
    assert_string_equal(fedc_config_str(cfg, "data.partition"), "iid");
    assert_false(fedc_config_bool(cfg, "train.nesterov"));
    assert_string_equal(fedc_config_origin(cfg, "train.lr"), "default");
    assert_false(fedc_config_is_set(cfg, "train.lr"));
    fedc_config_destroy(cfg);
}

static void test_file_and_set(void **state)
{
    (void)state;
    const char *path = write_ini("good.ini",
                                 "; a comment\n"
                                 "# another\n"
                                 "[run]\n"
                                 "seed = 7\n"
                                 "rounds=30\n"
                                 "\n"
                                 "[train]\n"
                                 "lr = 1e-2   ; inline comment\n"
                                 "nesterov = yes\n"
                                 "[data]\n"
                                 "partition = dirichlet\n"
                                 "dataset = csv:/tmp/x.csv?label=3\n");
    fedc_config *cfg = fedc_config_create();
    assert_int_equal(fedc_config_load_file(cfg, path), FEDC_OK);
    assert_int_equal(fedc_config_int(cfg, "run.seed"), 7);
    assert_int_equal(fedc_config_int(cfg, "run.rounds"), 30);
    assert_close(fedc_config_double(cfg, "train.lr"), 0.01, 0, 0);
    assert_true(fedc_config_bool(cfg, "train.nesterov"));
    assert_string_equal(fedc_config_str(cfg, "data.partition"), "dirichlet");
    assert_string_equal(fedc_config_str(cfg, "data.dataset"), "csv:/tmp/x.csv?label=3");
    char expect_origin[1100];
    snprintf(expect_origin, sizeof expect_origin, "%s:8", path);
    assert_string_equal(fedc_config_origin(cfg, "train.lr"), expect_origin);
    assert_true(fedc_config_is_set(cfg, "train.lr"));
    /* --set overrides the file */
    assert_int_equal(fedc_config_set(cfg, "train.lr=0.5", "--set"), FEDC_OK);
    assert_close(fedc_config_double(cfg, "train.lr"), 0.5, 0, 0);
    assert_string_equal(fedc_config_origin(cfg, "train.lr"), "--set");
    /* write, read back: same values */
    char out_path[1024];
    snprintf(out_path, sizeof out_path, "%s/written.ini", dir);
    FILE *f = fopen(out_path, "w");
    assert_int_equal(fedc_config_write(cfg, f), FEDC_OK);
    fclose(f);
    fedc_config *again = fedc_config_create();
    assert_int_equal(fedc_config_load_file(again, out_path), FEDC_OK);
    assert_close(fedc_config_double(again, "train.lr"), 0.5, 0, 0);
    assert_int_equal(fedc_config_int(again, "run.seed"), 7);
    assert_string_equal(fedc_config_str(again, "data.dataset"), "csv:/tmp/x.csv?label=3");
    fedc_config_destroy(again);
    fedc_config_destroy(cfg);
}

/* Each bad file: the load fails with the expected code, the message names the file, the line
 * and the key, and nothing from that file is kept. */
static void test_bad_files(void **state)
{
    (void)state;
    struct {
        const char *text;
        fedc_status code;
        const char *expect[3]; /* substrings of the message */
    } cases[] = {
        {"[run]\nseed = 1\n[train]\nlearning_rate = 0.1\n", FEDC_ERR_CONFIG,
         {":4:", "unknown key 'learning_rate'", "[train]"}},
        {"[trian]\nlr = 0.1\n", FEDC_ERR_CONFIG, {":2:", "unknown section [trian]", NULL}},
        {"[run]\nrounds = ten\n", FEDC_ERR_CONFIG, {":2:", "rounds", "not an integer"}},
        {"[run]\nrounds = 3.5\n", FEDC_ERR_CONFIG, {":2:", "not an integer", NULL}},
        {"[run]\nrounds = 0\n", FEDC_ERR_CONFIG, {":2:", "out of range", "rounds"}},
        {"[run]\nrounds = 99999999999999999999999\n", FEDC_ERR_CONFIG, {"not an integer", NULL}},
        {"[train]\nlr = 0\n", FEDC_ERR_CONFIG, {"lr", "out of range (0", NULL}},
        {"[train]\nlr = -1\n", FEDC_ERR_CONFIG, {"out of range", NULL}},
        {"[train]\nlr = nan\n", FEDC_ERR_CONFIG, {"not a finite number", NULL}},
        {"[train]\nlr = inf\n", FEDC_ERR_CONFIG, {"not a finite number", NULL}},
        {"[train]\nlr = 0.1x\n", FEDC_ERR_CONFIG, {"not a finite number", NULL}},
        {"[train]\nlr =\n", FEDC_ERR_CONFIG, {"not a finite number", NULL}},
        {"[train]\nnesterov = maybe\n", FEDC_ERR_CONFIG, {"not a boolean", NULL}},
        {"[data]\npartition = random\n", FEDC_ERR_CONFIG, {"not one of iid|dirichlet", NULL}},
        {"[data]\ntest_fraction = 1\n", FEDC_ERR_CONFIG, {"out of range", NULL}},
        {"seed = 3\n", FEDC_ERR_CONFIG, {":1:", "before any [section]", NULL}},
        {"[run]\nseed = 1\nseed = 2\n", FEDC_ERR_CONFIG, {":3:", "set twice", NULL}},
        {"[run]\nthis line has no equals sign\n", FEDC_ERR_CONFIG, {":2:", "syntax error", NULL}},
        {"[run\nseed = 1\n", FEDC_ERR_CONFIG, {":1:", "syntax error", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.ini", i);
        const char *path = write_ini(name, cases[i].text);
        fedc_config *cfg = fedc_config_create();
        fedc_status st = fedc_config_load_file(cfg, path);
        const char *msg = fedc_config_errmsg(cfg);
        if (st != cases[i].code) fail_msg("case %zu: status %d, message: %s", i, st, msg);
        assert_non_null(strstr(msg, path));
        for (int k = 0; k < 3 && cases[i].expect[k]; k++)
            if (!strstr(msg, cases[i].expect[k]))
                fail_msg("case %zu: message '%s' lacks '%s'", i, msg, cases[i].expect[k]);
        /* nothing from the failed file was kept (seed = 1 appears before some errors) */
        assert_int_equal(fedc_config_int(cfg, "run.seed"), 42);
        assert_false(fedc_config_is_set(cfg, "run.seed"));
        fedc_config_destroy(cfg);
    }
    fedc_config *cfg = fedc_config_create();
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/missing.ini", dir);
    assert_int_equal(fedc_config_load_file(cfg, missing), FEDC_ERR_IO);
    assert_non_null(strstr(fedc_config_errmsg(cfg), "missing.ini: cannot open"));
    fedc_config_destroy(cfg);
}

static void test_bad_assignments(void **state)
{
    (void)state;
    fedc_config *cfg = fedc_config_create();
    const char *bad[] = {"train.lr", "lr=0.1", ".lr=1", "train.=1", "train.lr0.1",
                         "train.momentum=1", "clients.count=-5", "nosuch.key=1",
                         "train.nosuch=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fedc_config_set(cfg, bad[i], "--set"), FEDC_ERR_CONFIG);
        assert_non_null(strstr(fedc_config_errmsg(cfg), "--set"));
    }
    assert_close(fedc_config_double(cfg, "train.lr"), 0.05, 0, 0);
    assert_int_equal(fedc_config_set(cfg, "train.momentum=0.9", "--set"), FEDC_OK);
    assert_close(fedc_config_double(cfg, "train.momentum"), 0.9, 0, 0);
    assert_int_equal(fedc_config_set(cfg, "run.log_level=debug", "--set"), FEDC_OK);
    assert_int_equal(fedc_config_set(cfg, "data.dataset=a=b", "--set"), FEDC_OK);
    assert_string_equal(fedc_config_str(cfg, "data.dataset"), "a=b");
    fedc_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_and_defaults),
        cmocka_unit_test(test_file_and_set),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_assignments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
