/*
 * Tests of fedc_dp_config_check (src/privacy/config_check.c): the [dp] keys' bounds from the
 * registry, and the cross-key checks, each refused with a message naming the keys.
 */
#include <string.h>

#include "testutil.h"

#include "fedc/config.h"
#include "fedc/privacy.h"

/* A config with the given "section.key=value" assignments (NULL-terminated). */
static fedc_config *make(const char *const *sets)
{
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (; *sets; sets++)
        if (fedc_config_set(cfg, *sets, "test") != FEDC_OK)
            fail_msg("%s: %s", *sets, fedc_config_errmsg(cfg));
    return cfg;
}

static void expect(const char *const *sets, fedc_status code, const char *what)
{
    fedc_config *cfg = make(sets);
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_dp_config_check(cfg, &err);
    if (st != code || (what && !strstr(err.msg, what)))
        fail_msg("%s...: got %d '%s', want %d '%s'", sets[0] ? sets[0] : "(defaults)", st,
                 err.msg, code, what ? what : "");
    fedc_config_destroy(cfg);
}

static void test_off_checks_nothing(void **state)
{
    (void)state;
    const char *s[] = {"clients.count=10", "dp.delta=0.5", NULL};
    expect(s, FEDC_OK, NULL);
}

static void test_central_defaults_ok(void **state)
{
    (void)state;
    const char *s[] = {"dp.mode=central", NULL};
    expect(s, FEDC_OK, NULL);
    const char *s2[] = {"dp.mode=local", "dp.orders=opacus", NULL};
    expect(s2, FEDC_OK, NULL);
    const char *s3[] = {"dp.mode=central", "dp.adaptive_clip=true", "clients.per_round=100",
                        "clients.count=1000", NULL};
    expect(s3, FEDC_OK, NULL);
}

static void test_key_bounds(void **state)
{
    (void)state;
    /* Per-key bounds live in the registry: z <= 0, C <= 0, delta outside (0, 1). */
    const char *bad[] = {"dp.noise_multiplier=0", "dp.noise_multiplier=-1", "dp.clip=0",
                         "dp.delta=0", "dp.delta=1", "dp.mode=maybe", "dp.sgd_clip=0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fedc_config *cfg = fedc_config_create();
        assert_non_null(cfg);
        assert_int_equal(fedc_config_set(cfg, bad[i], "test"), FEDC_ERR_CONFIG);
        fedc_config_destroy(cfg);
    }
}

static void test_cross_key(void **state)
{
    (void)state;
    const char *d[] = {"dp.mode=central", "clients.count=100", "dp.delta=0.02", NULL};
    expect(d, FEDC_ERR_CONFIG, "dp.delta = 0.02 must be < 1/clients.count = 0.01");
    const char *d2[] = {"dp.sgd=true", "clients.count=100", "dp.delta=0.01", NULL};
    expect(d2, FEDC_ERR_CONFIG, "dp.delta");
    const char *q[] = {"dp.mode=central", "clients.count=100", "clients.per_round=200", NULL};
    expect(q, FEDC_ERR_CONFIG, "outside (0, 1]");
    const char *o[] = {"dp.mode=central", "dp.orders=2,abc", NULL};
    expect(o, FEDC_ERR_CONFIG, "dp.orders: order list: 'abc' is not a number");
    /* Adaptive clipping with 10 clients per round: sigma_b = 0.5, so z must be < 1. */
    const char *a[] = {"dp.mode=central", "dp.adaptive_clip=true", "clients.per_round=10",
                       "dp.noise_multiplier=1.0", NULL};
    expect(a, FEDC_ERR_CONFIG, "2 * clipped-count stddev = 1");
    const char *a2[] = {"dp.mode=central", "dp.adaptive_clip=true", "clients.per_round=10",
                        "dp.noise_multiplier=1.0", "dp.clipped_count_stddev=2", NULL};
    expect(a2, FEDC_OK, NULL);
    const char *b[] = {"dp.mode=central", "dp.epsilon_budget=0.01", NULL};
    expect(b, FEDC_ERR_CONFIG, "dp.epsilon_budget = 0.01 is spent by the first round");
    const char *b2[] = {"dp.mode=central", "dp.epsilon_budget=10", NULL};
    expect(b2, FEDC_OK, NULL);
}

/* Local DP: clipped and noised on the client; one participation is q = 1 at z / 2. */
static void test_local_mode(void **state)
{
    (void)state;
    const char *s[] = {"dp.mode=local", "dp.clip_on=server", NULL};
    expect(s, FEDC_ERR_CONFIG, "dp.clip_on = server with dp.mode = local");
    const char *a[] = {"dp.mode=local", "dp.adaptive_clip=true", NULL};
    expect(a, FEDC_ERR_CONFIG, "dp.adaptive_clip needs dp.mode = central (dp.mode = local)");
    const char *a2[] = {"dp.sgd=true", "dp.adaptive_clip=true", NULL};
    expect(a2, FEDC_ERR_CONFIG, "dp.adaptive_clip needs dp.mode = central (dp.mode = off)");
    /* z = 4: one participation at q = 1, z = 2 spends 2.168 at delta 1e-5 (orders tf) */
    const char *b[] = {"dp.mode=local", "dp.noise_multiplier=4", "dp.epsilon_budget=2", NULL};
    expect(b, FEDC_ERR_CONFIG, "is spent by the first round alone (epsilon 2.168");
    const char *b2[] = {"dp.mode=local", "dp.noise_multiplier=4", "dp.epsilon_budget=2.2", NULL};
    expect(b2, FEDC_OK, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_checks_nothing),
        cmocka_unit_test(test_central_defaults_ok),
        cmocka_unit_test(test_key_bounds),
        cmocka_unit_test(test_cross_key),
        cmocka_unit_test(test_local_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
