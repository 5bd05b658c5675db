/*
 * Tests of `fedc dp-budget` (cli/cmd_dp_budget.c): the published values through the command,
 * the inverse, JSON output, and the exit code 2 with a clear message for every bad value.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

#include "testutil.h"

/* Runs `fedc ARGS 2>&1`; returns the exit code, output in *out (free()). */
static int fedc_run(const char *args, char **out)
{
    const char *fedc = getenv("FEDC");
    if (!fedc || !*fedc) fail_msg("FEDC (the fedc binary) is not set");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", fedc, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while ((r = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += r;
    buf[n] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *run_json(const char *args)
{
    char *out;
    int code = fedc_run(args, &out);
    if (code != 0) fail_msg("fedc %s: exit %d: %s", args, code, out);
    json_error_t je;
    json_t *o = json_loads(out, 0, &je);
    if (!o) fail_msg("fedc %s: not one JSON object: %s", args, out);
    free(out);
    return o;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) fail_msg("no number '%s'", key);
    return json_number_value(v);
}

static void test_tf_values(void **state)
{
    (void)state;
    /* TF compute_dp_sgd_privacy: n 60000, batch 150, sigma 1.3, 15 epochs, delta 1e-5. */
    json_t *o = run_json("dp-budget --sample-rate 0.0025 --noise-multiplier 1.3 --steps 6000 "
                         "--delta 1e-5 --json");
    assert_close(num(o, "epsilon"), 0.7242234026109595, 1e-9, 0);
    assert_true(num(o, "order") == 19);
    assert_true(num(o, "steps") == 6000);
    assert_string_equal(json_string_value(json_object_get(o, "orders")), "tf");
    json_decref(o);
    o = run_json("dp-budget -q 0.001 -z 1.0 -t 30000 -d 1e-7 --orders tf --json");
    assert_close(num(o, "epsilon"), 1.4154988495444842, 1e-9, 0);
    assert_true(num(o, "order") == 13);
    json_decref(o);
}

static void test_opacus_value(void **state)
{
    (void)state;
    json_t *o = run_json("dp-budget --sample-rate 0.04 --noise-multiplier 1.5 --steps 2250 "
                         "--delta 1e-5 --orders opacus --json");
    assert_close(num(o, "epsilon"), 7.32911117143, 1e-10, 0);
    assert_true(num(o, "order_count") == 151);
    json_decref(o);
    /* A custom list: the same value as long as it holds Opacus's best order. */
    o = run_json("dp-budget -q 0.04 -z 1.5 -t 2250 -d 1e-5 --orders 1.5,3.9,2..63 --json");
    assert_close(num(o, "epsilon"), 7.32911117143, 1e-10, 0);
    assert_true(num(o, "order") == 3.9);
    assert_true(num(o, "order_count") == 64);
    json_decref(o);
}

static void test_target_epsilon(void **state)
{
    (void)state;
    json_t *o = run_json("dp-budget --sample-rate 0.0025 --steps 6000 --delta 1e-5 "
                         "--target-epsilon 0.7242234026109595 --json");
    assert_close(num(o, "noise_multiplier"), 1.3, 2e-6, 0);
    assert_true(num(o, "epsilon") <= 0.7242234026109595);
    assert_close(num(o, "target_epsilon"), 0.7242234026109595, 1e-9, 0); /* 10 digits */
    json_decref(o);
    char *out;
    assert_int_equal(fedc_run("dp-budget -q 0.01 -t 500 -d 1e-5 --target-epsilon 3", &out), 0);
    assert_non_null(strstr(out, "noise multiplier"));
    free(out);
}

static void test_human_output(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(fedc_run("dp-budget -q 0.0025 -z 1.3 -t 6000 -d 1e-5", &out), 0);
    assert_non_null(strstr(out, "epsilon 0.724223"));
    assert_non_null(strstr(out, "order 19"));
    free(out);
}

static void test_bad_values(void **state)
{
    (void)state;
    struct {
        const char *args, *msg;
    } bad[] = {
        {"-q 0.01 -z 0 -t 10 -d 1e-5", "--noise-multiplier '0'"},
        {"-q 0.01 -z -1 -t 10 -d 1e-5", "--noise-multiplier '-1'"},
        {"-q 0 -z 1 -t 10 -d 1e-5", "--sample-rate '0'"},
        {"-q 1.5 -z 1 -t 10 -d 1e-5", "(0, 1]"},
        {"-q abc -z 1 -t 10 -d 1e-5", "--sample-rate 'abc'"},
        {"-q 0.01 -z 1 -t 10 -d 1", "--delta '1'"},
        {"-q 0.01 -z 1 -t 10 -d 0", "(0, 1)"},
        {"-q 0.01 -z 1 -t 0 -d 1e-5", "--steps '0'"},
        {"-q 0.01 -z 1 -t -5 -d 1e-5", "--steps '-5'"},
        {"-q 0.01 -z 1 -t 2.5 -d 1e-5", "--steps '2.5'"},
        {"-q 0.01 -z 1 -d 1e-5", "missing --steps"},
        {"-z 1 -t 10 -d 1e-5", "missing --sample-rate"},
        {"-q 0.01 -z 1 -t 10", "missing --delta"},
        {"-q 0.01 -t 10 -d 1e-5", "missing --noise-multiplier"},
        {"-q 0.01 -z 1 -t 10 -d 1e-5 --target-epsilon 1", "exclude each other"},
        {"-q 0.01 -t 10 -d 1e-5 --target-epsilon -1", "--target-epsilon '-1'"},
        {"-q 0.01 -z 1 -t 10 -d 1e-5 --orders 0.5,2", "order list"},
        {"-q 0.01 -z 1 -t 10 -d 1e-5 --orders xyz", "'xyz' is not a number"},
        {"-q 0.01 -z 1 -t 10 -d 1e-5 --bogus", "unknown option '--bogus'"},
        {"-q 0.01 -z 1 -t 10 -d", "needs a value"},
        {"-q 0.01 -z 1 -t 10 -d 1e-5 extra", "unexpected argument 'extra'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[512], *out;
        snprintf(args, sizeof args, "dp-budget %s", bad[i].args);
        int code = fedc_run(args, &out);
        if (code != 2 || !strstr(out, bad[i].msg) || !strstr(out, "fedc dp-budget:"))
            fail_msg("fedc %s: exit %d, output '%s' (want 2 and '%s')", args, code, out,
                     bad[i].msg);
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tf_values),      cmocka_unit_test(test_opacus_value),
        cmocka_unit_test(test_target_epsilon), cmocka_unit_test(test_human_output),
        cmocka_unit_test(test_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
