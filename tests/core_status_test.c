/* Status codes, messages and the logging callback. */
#include "testutil.h"

#include <string.h>

#include "fedc/fedc.h"

static void test_codes_are_pinned(void **state)
{
    (void)state;
    /* The numbers are ABI: a change here breaks every program linked against libfedc. */
    assert_int_equal(FEDC_OK, 0);
    assert_int_equal(FEDC_ERR_NOMEM, 1);
    assert_int_equal(FEDC_ERR_INVALID, 2);
    assert_int_equal(FEDC_ERR_IO, 3);
    assert_int_equal(FEDC_ERR_FORMAT, 4);
    assert_int_equal(FEDC_ERR_CONFIG, 7);
    assert_int_equal(FEDC_ERR_NONFINITE, 10);
    assert_int_equal(FEDC_ERR_AUTH, 14);
    assert_int_equal(FEDC_ERR_BUDGET, 16);
    assert_int_equal(FEDC_ERR_INTERNAL, 18);
}

static void test_strerror_every_code(void **state)
{
    (void)state;
    assert_string_equal(fedc_strerror(FEDC_OK), "success");
    assert_string_equal(fedc_strerror(FEDC_ERR_NOMEM), "out of memory");
    for (int c = 1; c < FEDC_STATUS_COUNT_; c++) {
        const char *s = fedc_strerror((fedc_status)c);
        assert_non_null(s);
        assert_true(strlen(s) > 3);
        assert_string_not_equal(s, "unknown status");
        for (int d = 0; d < c; d++) assert_string_not_equal(s, fedc_strerror((fedc_status)d));
    }
    assert_string_equal(fedc_strerror((fedc_status)999), "unknown status");
    assert_string_equal(fedc_strerror((fedc_status)-1), "unknown status");
}

static fedc_status failing_step(fedc_err *err, int fail)
{
    if (fail) return fedc_err_set(err, FEDC_ERR_SHAPE, "layer %d: expected %d inputs, got %d", 3,
                                  784, 783);
    return FEDC_OK;
}

static fedc_status two_steps(fedc_err *err, int fail)
{
    FEDC_TRY(failing_step(err, 0));
    FEDC_TRY(failing_step(err, fail));
    return fedc_err_set(err, FEDC_ERR_INTERNAL, "not reached when the second step fails");
}

static void test_err_message_and_try(void **state)
{
    (void)state;
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(err.code, FEDC_OK);
    assert_string_equal(fedc_err_message(&err), "success");
    assert_int_equal(two_steps(&err, 1), FEDC_ERR_SHAPE);
    assert_string_equal(fedc_err_message(&err), "layer 3: expected 784 inputs, got 783");
    fedc_err_prefix(&err, "model '%s': ", "cnn");
    assert_string_equal(err.msg, "model 'cnn': layer 3: expected 784 inputs, got 783");
    assert_int_equal(two_steps(&err, 0), FEDC_ERR_INTERNAL);
    /* NULL err is allowed everywhere */
    assert_int_equal(fedc_err_set(NULL, FEDC_ERR_IO, "x"), FEDC_ERR_IO);
    fedc_err_prefix(NULL, "y");
    fedc_err_clear(NULL);
    /* over-long messages are cut, never overflow */
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    fedc_err_set(&err, FEDC_ERR_FORMAT, "%s", big);
    assert_int_equal(strlen(err.msg), FEDC_ERRMSG_MAX - 1);
}

typedef struct captured {
    int calls;
    fedc_log_level level;
    char subsys[32];
    char msg[256];
} captured;

static void capture(void *user, fedc_log_level level, const char *subsys, const char *msg)
{
    captured *c = user;
    c->calls++;
    c->level = level;
    snprintf(c->subsys, sizeof c->subsys, "%s", subsys);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
}

static void test_logging(void **state)
{
    (void)state;
    captured c = {0};
    /* silent by default */
    assert_false(fedc_log_enabled(FEDC_LOG_ERROR));
    fedc_log(FEDC_LOG_ERROR, "test", "dropped");
    fedc_log_set(capture, &c, FEDC_LOG_INFO);
    fedc_log(FEDC_LOG_DEBUG, "nn", "too verbose");
    assert_int_equal(c.calls, 0);
    fedc_log(FEDC_LOG_WARN, "round", "client %d late", 7);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.level, FEDC_LOG_WARN);
    assert_string_equal(c.subsys, "round");
    assert_string_equal(c.msg, "client 7 late");
    fedc_log_set(NULL, NULL, FEDC_LOG_TRACE);
    fedc_log(FEDC_LOG_ERROR, "round", "dropped");
    assert_int_equal(c.calls, 1);
    fedc_log_level l;
    assert_int_equal(fedc_log_level_parse("debug", &l), 0);
    assert_int_equal(l, FEDC_LOG_DEBUG);
    assert_int_equal(fedc_log_level_parse("loud", &l), -1);
    assert_string_equal(fedc_log_level_name(FEDC_LOG_TRACE), "trace");
}

static void test_version(void **state)
{
    (void)state;
    assert_int_equal(fedc_version_number(), FEDC_VERSION_NUMBER);
    assert_non_null(strstr(fedc_version_string(), FEDC_VERSION));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_pinned), cmocka_unit_test(test_strerror_every_code),
        cmocka_unit_test(test_err_message_and_try), cmocka_unit_test(test_logging),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
