/* `fedc data inspect` and `fedc data partition`, run as a user would ($FEDC): JSON fields,
 * counts that add up, determinism by seed, the SVG file, and exit codes on bad input. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

static char *dir;
static const char *fedc;

/* Runs `$FEDC args`, stdout to out.txt, stderr to err.txt; returns the exit code. */
static int run(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s >'%s/out.txt' 2>'%s/err.txt'", fedc, args, dir, dir);
    int rc = system(cmd);
    assert_true(rc != -1 && WIFEXITED(rc));
    return WEXITSTATUS(rc);
}

static char *slurp(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t n;
    char *s = tu_read_file(path, &n);
    assert_non_null(s);
    return s;
}

static json_t *run_json(const char *args)
{
    int rc = run(args);
    char *out = slurp("out.txt");
    if (rc != 0) {
        char *e = slurp("err.txt");
        fail_msg("fedc %s: exit %d: %s", args, rc, e);
    }
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    if (!o) fail_msg("fedc %s: not JSON (%s): %.200s", args, je.text, out);
    free(out);
    return o;
}

static json_int_t sum_array(json_t *a)
{
    json_int_t s = 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) s += json_integer_value(v);
    return s;
}

static void test_inspect(void **state)
{
    (void)state;
    if (!fedc) skip();
    json_t *o = run_json("data inspect 'synthetic-iid?users=10' --json");
    json_t *tr = json_object_get(o, "train"), *te = json_object_get(o, "test");
    assert_non_null(tr);
    assert_non_null(te);
    assert_int_equal(json_integer_value(json_object_get(o, "num_classes")), 10);
    json_int_t n = json_integer_value(json_object_get(tr, "n"));
    assert_true(n > 1000);
    assert_int_equal(sum_array(json_object_get(tr, "label_counts")), n);
    assert_int_equal(json_array_size(json_object_get(tr, "label_counts")), 10);
    assert_int_equal(sum_array(json_object_get(te, "label_counts")),
                     json_integer_value(json_object_get(te, "n")));
    json_t *shape = json_object_get(tr, "shape");
    assert_int_equal(json_array_size(shape), 1);
    assert_int_equal(json_integer_value(json_array_get(shape, 0)), 60);
    assert_int_equal(json_integer_value(json_object_get(tr, "users")), 10);
    json_decref(o);

    /* a CSV without a test file: "test" is null; human output lists the classes */
    char path[1024], args[1200];
    snprintf(path, sizeof path, "%s/d.csv", dir);
    tu_write_file(path, "label,a\n0,1\n1,2\n1,3\n", 20);
    snprintf(args, sizeof args, "data inspect csv:%s --json", path);
    o = run_json(args);
    assert_true(json_is_null(json_object_get(o, "test")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "train"), "n")), 3);
    json_decref(o);
    snprintf(args, sizeof args, "data inspect csv:%s", path);
    assert_int_equal(run(args), 0);
    char *out = slurp("out.txt");
    assert_non_null(strstr(out, "3 samples"));
    assert_non_null(strstr(out, "66.67%"));
    free(out);
}

static void test_partition(void **state)
{
    (void)state;
    if (!fedc) skip();
    json_t *ins = run_json("data inspect 'synthetic:1,1?users=12' --json");
    json_int_t n = json_integer_value(json_object_get(json_object_get(ins, "train"), "n"));
    json_decref(ins);

    json_t *o = run_json("data partition 'synthetic:1,1?users=12' --scheme natural --json");
    assert_int_equal(json_integer_value(json_object_get(o, "num_clients")), 12);
    json_t *clients = json_object_get(o, "clients");
    assert_int_equal(json_array_size(clients), 12);
    json_int_t total = 0;
    size_t i;
    json_t *c;
    json_array_foreach(clients, i, c) {
        json_int_t tr = json_integer_value(json_object_get(c, "train"));
        json_int_t te = json_integer_value(json_object_get(c, "test"));
        assert_int_equal(sum_array(json_object_get(c, "label_counts")), tr);
        assert_int_equal(sum_array(json_object_get(c, "test_label_counts")), te);
        total += tr + te;
    }
    assert_int_equal(total, n);
    json_decref(o);

    /* Dirichlet with an SVG; same seed twice: identical output */
    char args[1200];
    snprintf(args, sizeof args,
             "data partition 'synthetic-iid?users=10' --clients 10 --scheme dirichlet --alpha 0.1 --seed 3 "
             "--min-size 5 --svg '%s/p.svg' --json",
             dir);
    assert_int_equal(run(args), 0);
    char *a = slurp("out.txt");
    assert_int_equal(run(args), 0);
    char *b = slurp("out.txt");
    assert_string_equal(a, b);
    assert_non_null(strstr(a, "\"alpha\":0.1"));
    free(a);
    free(b);
    char *svg = slurp("p.svg");
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "dirichlet (alpha 0.1"));
    free(svg);
    snprintf(args, sizeof args,
             "data partition 'synthetic-iid?users=10' --clients 10 --scheme dirichlet --alpha 0.1 --seed 4 "
             "--min-size 5 --json");
    assert_int_equal(run(args), 0);
    a = slurp("out.txt");
    assert_null(strstr(a, "\"svg\""));
    free(a);

    /* human output: one row per client and the summary */
    assert_int_equal(run("data partition 'synthetic-iid?users=5' --clients 4 --scheme shards"), 0);
    char *out = slurp("out.txt");
    assert_non_null(strstr(out, "shards (2 per client)"));
    assert_non_null(strstr(out, "label skew"));
    free(out);
}

static void test_errors(void **state)
{
    (void)state;
    if (!fedc) skip();
    assert_int_equal(run("data"), 2);
    assert_int_equal(run("data frobnicate x"), 2);
    assert_int_equal(run("data inspect"), 2);
    assert_int_equal(run("data inspect synthetic-iid --clients 3"), 2);
    assert_int_equal(run("data partition synthetic-iid --scheme bogus"), 2);
    assert_int_equal(run("data partition synthetic-iid --alpha -1"), 2);
    assert_int_equal(run("data partition synthetic-iid --clients"), 2);
    char *e = slurp("err.txt");
    assert_non_null(strstr(e, "fedc data:"));
    free(e);
    /* run-time failures: exit 1 with the library's message */
    assert_int_equal(run("data inspect csv:/nonexistent-fedc.csv"), 1);
    e = slurp("err.txt");
    assert_non_null(strstr(e, "/nonexistent-fedc.csv"));
    free(e);
    assert_int_equal(run("data partition 'synthetic-iid?users=3' --clients 100000"), 1);
    e = slurp("err.txt");
    assert_non_null(strstr(e, "100000 clients"));
    free(e);
    assert_int_equal(run("data specs"), 0);
    char *o = slurp("out.txt");
    assert_non_null(strstr(o, "leaf:TRAIN[,TEST]"));
    free(o);
    assert_int_equal(run("help data"), 0);
    o = slurp("out.txt");
    assert_non_null(strstr(o, "fedc data partition SPEC"));
    free(o);
}

static int setup(void **state)
{
    (void)state;
    fedc = getenv("FEDC");
    if (fedc && !*fedc) fedc = NULL;
    dir = tu_tempdir("datacli");
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
        cmocka_unit_test(test_inspect),
        cmocka_unit_test(test_partition),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
