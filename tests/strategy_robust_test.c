/* Tests of the robust strategies (median, trimmed mean, Krum, Multi-Krum, Bulyan) by hand and
 * under attack, their bounded memory, their independence from arrival order, and the attack
 * helper used to test them. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config.h"
#include "fedc/rng.h"
#include "fedc/strategy.h"

static fedc_strategy *make(const char *const *sets, size_t n)
{
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (; *sets; sets++)
        if (fedc_config_set(cfg, *sets, "test") != FEDC_OK)
            fail_msg("%s: %s", *sets, fedc_config_errmsg(cfg));
    fedc_strategy *s = NULL;
    fedc_err err;
    if (fedc_strategy_create(cfg, n, NULL, &s, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_config_destroy(cfg);
    return s;
}

static fedc_status add(fedc_strategy *s, uint32_t client, uint64_t examples, const float *u,
                       size_t n, fedc_err *err)
{
    fedc_fit_result r;
    memset(&r, 0, sizeof r);
    r.client = client;
    r.num_examples = examples;
    r.update = u;
    r.update_len = n;
    r.train_loss = NAN;
    return fedc_strategy_add(s, &r, err);
}

/* Runs one round with rows u[k] (n floats each) from clients ids[k]; returns the new global
 * (starting from zeros) in out. */
static void round_of(fedc_strategy *s, size_t K, const uint32_t *ids, const uint64_t *ex,
                     const float *u, size_t n, float *out, fedc_round_agg *info)
{
    fedc_err err;
    memset(out, 0, n * sizeof *out);
    fedc_strategy_begin_round(s, 1);
    for (size_t k = 0; k < K; k++)
        if (add(s, ids[k], ex ? ex[k] : 1, u + k * n, n, &err) != FEDC_OK)
            fail_msg("add: %s", err.msg);
    if (fedc_strategy_finish_round(s, out, info, &err) != FEDC_OK) fail_msg("%s", err.msg);
}

/* Coordinate-wise median (np.median): odd K the middle value, even K the mean of the two. */
static void test_median_by_hand(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedmedian", NULL};
    fedc_strategy *s = make(sets, 2);
    assert_int_equal(fedc_strategy_is_streaming(s), 0);
    assert_int_equal(fedc_strategy_max_held(s), 10); /* clients.per_round */
    const uint32_t ids[5] = {4, 1, 3, 0, 2};
    const float u[5][2] = {{3, 0.5f}, {1, -1}, {2, 4}, {10, 8}, {-5, 100}};
    float g[2];
    round_of(s, 5, ids, NULL, &u[0][0], 2, g, NULL);
    assert_true(g[0] == 2.0f && g[1] == 4.0f); /* sorted: [-5,1,2,3,10], [-1,.5,4,8,100] */
    round_of(s, 4, ids, NULL, &u[0][0], 2, g, NULL);
    assert_true(g[0] == 2.5f && g[1] == 2.25f); /* [1,2,3,10] -> 2.5; [-1,.5,4,8] -> 2.25 */
    fedc_strategy_destroy(s);
}

/* Trimmed mean: int(beta K) cut at each end. K = 5, beta 0.2 -> cut 1. */
static void test_trimmed_by_hand(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedtrimmedavg", NULL}; /* beta 0.2, Flower's default */
    fedc_strategy *s = make(sets, 2);
    const uint32_t ids[5] = {4, 1, 3, 0, 2};
    const float u[5][2] = {{3, 0.5f}, {1, -1}, {2, 4}, {10, 8}, {-5, 100}};
    float g[2];
    fedc_round_agg info;
    round_of(s, 5, ids, NULL, &u[0][0], 2, g, &info);
    assert_close(g[0], 2.0, 1e-7, 0);              /* mean(1, 2, 3) */
    assert_close(g[1], (0.5 + 4 + 8) / 3, 1e-7, 0); /* mean(.5, 4, 8) */
    assert_int_equal(info.selected, 3);
    fedc_strategy_destroy(s);

    const char *wide[] = {"strategy.name=fedtrimmedavg", "strategy.trim_beta=0.4", NULL};
    s = make(wide, 2); /* cut 2 of 5: the median */
    round_of(s, 5, ids, NULL, &u[0][0], 2, g, NULL);
    assert_true(g[0] == 2.0f && g[1] == 4.0f);
    const char *none[] = {"strategy.name=fedtrimmedavg", "strategy.trim_beta=0.1", NULL};
    fedc_strategy_destroy(s);
    s = make(none, 2); /* int(0.5) = 0: the plain mean */
    round_of(s, 5, ids, NULL, &u[0][0], 2, g, NULL);
    assert_close(g[0], 11.0 / 5, 1e-7, 0);
    fedc_strategy_destroy(s);
}

/* Krum and Multi-Krum by hand, f = 1, K = 5, n-f-2 = 2 nearest:
 *   A(0,0) id 4, B(1,0) id 2, C(0,2) id 7, D(1,1) id 3, E(10,10) id 1 (the attacker).
 * Squared distances: AB 1, AC 4, AD 2, AE 200, BC 5, BD 1, BE 181, CD 2, CE 164, DE 162.
 * Scores: A 1+2=3, B 1+1=2, C 2+4=6, D 1+2=3, E 162+164=326. Krum picks B.
 * Multi-Krum m=3 keeps B, A, D: (10*A + 20*B + 30*D) / 60 = (50, 30) / 60. */
static void test_krum_by_hand(void **state)
{
    (void)state;
    const uint32_t ids[5] = {4, 2, 7, 3, 1};
    const uint64_t ex[5] = {10, 20, 40, 30, 1000};
    const float u[5][2] = {{0, 0}, {1, 0}, {0, 2}, {1, 1}, {10, 10}};
    float g[2];
    fedc_round_agg info;
    const char *krum[] = {"strategy.name=krum", "strategy.num_malicious=1", NULL};
    fedc_strategy *s = make(krum, 2);
    round_of(s, 5, ids, ex, &u[0][0], 2, g, &info);
    assert_true(g[0] == 1.0f && g[1] == 0.0f);
    assert_int_equal(info.krum_client, 2);
    assert_int_equal(info.selected, 1);
    fedc_strategy_destroy(s);

    const char *multi[] = {"strategy.name=multikrum", "strategy.num_malicious=1",
                           "strategy.multikrum_m=3", NULL};
    s = make(multi, 2);
    round_of(s, 5, ids, ex, &u[0][0], 2, g, &info);
    assert_close(g[0], 50.0 / 60, 1e-7, 0);
    assert_close(g[1], 30.0 / 60, 1e-7, 0);
    assert_int_equal(info.selected, 3);
    assert_int_equal(info.krum_client, -1);
    fedc_strategy_destroy(s);

    /* m = 0: keep n - f = 4 (all but E): (10A + 20B + 40C + 30D) / 100 = (50, 110) / 100. */
    const char *multi0[] = {"strategy.name=multikrum", "strategy.num_malicious=1", NULL};
    s = make(multi0, 2);
    round_of(s, 5, ids, ex, &u[0][0], 2, g, &info);
    assert_close(g[0], 0.5, 1e-7, 0);
    assert_close(g[1], 1.1, 1e-7, 0);
    assert_int_equal(info.selected, 4);
    fedc_strategy_destroy(s);
}

/* Bulyan by hand (1 parameter), f = 1, K = 7: values 0,1,2,4,7,9,100 from ids 1..7.
 * theta = 5 iterated Krum picks (nearest na-3): 2 (score 34), 4 (34), 1 (37), 7 (4, tie with 9:
 * lower id), 0 (81, tie with 9: lower id). Sorted picks [0,1,2,4,7], median 2; beta = 3 values
 * closest to it: 2, then 1, then 0 (tie |0-2| = |4-2|: the lower one): mean 1. */
static void test_bulyan_by_hand(void **state)
{
    (void)state;
    const uint32_t ids[7] = {1, 2, 3, 4, 5, 6, 7};
    const float u[7] = {0, 1, 2, 4, 7, 9, 100};
    float g[1];
    fedc_round_agg info;
    const char *sets[] = {"strategy.name=bulyan", "strategy.num_malicious=1", NULL};
    fedc_strategy *s = make(sets, 1);
    round_of(s, 7, ids, NULL, u, 1, g, &info);
    assert_true(g[0] == 1.0f);
    assert_int_equal(info.selected, 5);
    /* With fewer than 4f+3 updates the round fails and the model is untouched. */
    fedc_err err;
    float h[1] = {42};
    fedc_strategy_begin_round(s, 2);
    for (uint32_t k = 0; k < 6; k++) assert_int_equal(add(s, k, 1, &u[k], 1, &err), FEDC_OK);
    assert_int_equal(fedc_strategy_finish_round(s, h, NULL, &err), FEDC_ERR_STATE);
    assert_non_null(strstr(err.msg, "4f+3"));
    assert_true(h[0] == 42);
    fedc_strategy_destroy(s);

    /* f too large for the clients per round: a configuration error at creation. */
    fedc_config *cfg = fedc_config_create();
    fedc_config_set(cfg, "strategy.name=bulyan", "test");
    fedc_config_set(cfg, "strategy.num_malicious=2", "test");
    fedc_strategy *b = NULL;
    assert_int_equal(fedc_strategy_create(cfg, 4, NULL, &b, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "num_malicious"));
    fedc_config_destroy(cfg);
}

/* Honest clients send base + small noise; f attackers send scaled, sign-flipped or Gaussian
 * updates (fedc_attack). Krum, Multi-Krum and Bulyan stay in the honest cluster; FedAvg does
 * not. */
static void test_attack_resistance(void **state)
{
    (void)state;
    enum { P = 200, K = 11, F = 2 };
    static float u[K][P];
    uint32_t ids[K];
    uint64_t ex[K];
    fedc_rng rng;
    fedc_rng_init(&rng, 3, 0, 0, FEDC_RNG_DATA);
    float lo[P], hi[P];
    for (int i = 0; i < P; i++) {
        lo[i] = INFINITY;
        hi[i] = -INFINITY;
    }
    for (int k = 0; k < K; k++) {
        ids[k] = (uint32_t)(100 + k * 7 % K);
        ex[k] = 50 + (uint64_t)k;
        for (int i = 0; i < P; i++) u[k][i] = (float)(0.1 * sin(i) + 0.01 * fedc_rng_normal(&rng));
    }
    /* Attackers: ids of the lowest and highest honest-looking positions. */
    fedc_attack a;
    fedc_err err;
    assert_int_equal(fedc_attack_parse("signflip:10", &a, &err), FEDC_OK);
    fedc_attack_apply(&a, u[0], P, NULL);
    assert_int_equal(fedc_attack_parse("gaussian:1", &a, &err), FEDC_OK);
    fedc_rng arng;
    fedc_rng_init(&arng, 3, 1, ids[5], FEDC_RNG_ATTACK);
    fedc_attack_apply(&a, u[5], P, &arng);
    uint32_t attackers[2] = {ids[0], ids[5]};
    for (int k = 0; k < K; k++) {
        if (k == 0 || k == 5) continue;
        for (int i = 0; i < P; i++) {
            if (u[k][i] < lo[i]) lo[i] = u[k][i];
            if (u[k][i] > hi[i]) hi[i] = u[k][i];
        }
    }
    float g[P];
    fedc_round_agg info;
    const char *const names[] = {"krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg"};
    for (size_t t = 0; t < sizeof names / sizeof *names; t++) {
        fedc_config *cfg = fedc_config_create();
        fedc_config_set_value(cfg, "strategy", "name", names[t], "test");
        fedc_config_set_value(cfg, "strategy", "num_malicious", "2", "test");
        fedc_config_set_value(cfg, "clients", "per_round", "11", "test");
        fedc_strategy *s = NULL;
        assert_int_equal(fedc_strategy_create(cfg, P, NULL, &s, &err), FEDC_OK);
        round_of(s, K, ids, ex, &u[0][0], P, g, &info);
        for (int i = 0; i < P; i++)
            if (g[i] < lo[i] - 1e-6f || g[i] > hi[i] + 1e-6f)
                fail_msg("%s: coordinate %d = %g outside the honest range [%g, %g]", names[t],
                         i, (double)g[i], (double)lo[i], (double)hi[i]);
        if (strcmp(names[t], "krum") == 0)
            assert_true(info.krum_client != attackers[0] && info.krum_client != attackers[1]);
        fedc_strategy_destroy(s);
        fedc_config_destroy(cfg);
    }
    /* FedAvg is dragged out of the honest range by the attackers. */
    const char *avg[] = {"strategy.name=fedavg", NULL};
    fedc_strategy *s = make(avg, P);
    round_of(s, K, ids, ex, &u[0][0], P, g, NULL);
    int outside = 0;
    for (int i = 0; i < P; i++) outside += g[i] < lo[i] || g[i] > hi[i];
    assert_true(outside > P / 2);
    fedc_strategy_destroy(s);
}

/* Robust strategies hold at most max_updates results; the extra one is refused and counted. */
static void test_bounded_memory(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedmedian", "strategy.max_updates=3", NULL};
    fedc_strategy *s = make(sets, 2);
    assert_int_equal(fedc_strategy_max_held(s), 3);
    const float u[2] = {1, 2}, unan[2] = {NAN, 0}, ushort[1] = {0};
    fedc_err err;
    float g[2] = {0, 0};
    fedc_strategy_begin_round(s, 1);
    assert_int_equal(add(s, 1, 1, unan, 2, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "element 0"));
    assert_int_equal(add(s, 1, 1, ushort, 1, &err), FEDC_ERR_SHAPE);
    for (uint32_t k = 0; k < 3; k++) assert_int_equal(add(s, k, 1, u, 2, &err), FEDC_OK);
    assert_int_equal(add(s, 9, 1, u, 2, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "at most 3"));
    fedc_round_agg info;
    assert_int_equal(fedc_strategy_finish_round(s, g, &info, &err), FEDC_OK);
    assert_true(g[0] == 1 && g[1] == 2);
    assert_int_equal(info.accepted, 3);
    assert_int_equal(info.rejected, 3);
    assert_int_equal(info.rejected_nonfinite, 1);
    assert_int_equal(info.rejected_shape, 1);
    /* The next round starts empty again. */
    fedc_strategy_begin_round(s, 2);
    assert_int_equal(fedc_strategy_finish_round(s, g, &info, &err), FEDC_ERR_STATE);
    fedc_strategy_destroy(s);
}

/* Results arriving in any order give the same bits. */
static void test_order_independent(void **state)
{
    (void)state;
    enum { P = 300, K = 9 }; /* P is not a multiple of the transposition tile */
    static float u[K][P], shuffled[K][P];
    uint32_t ids[K], sids[K];
    uint64_t ex[K], sex[K];
    fedc_rng rng;
    fedc_rng_init(&rng, 11, 0, 0, FEDC_RNG_DATA);
    for (int k = 0; k < K; k++) {
        ids[k] = (uint32_t)(k * 13 + 5);
        ex[k] = 1 + fedc_rng_below(&rng, 100);
        for (int i = 0; i < P; i++) u[k][i] = (float)fedc_rng_normal(&rng);
    }
    const char *const names[] = {"fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"};
    for (size_t t = 0; t < sizeof names / sizeof *names; t++) {
        float ref[P], g[P];
        for (int order = 0; order < 3; order++) {
            uint32_t perm[K];
            fedc_rng prng;
            fedc_rng_init(&prng, 1, (uint32_t)order, 0, FEDC_RNG_SHUFFLE);
            fedc_rng_permutation(&prng, perm, K);
            for (int j = 0; j < K; j++) {
                int k = order == 0 ? j : (int)perm[j];
                memcpy(shuffled[j], u[k], sizeof u[k]);
                sids[j] = ids[k];
                sex[j] = ex[k];
            }
            fedc_config *cfg = fedc_config_create();
            fedc_config_set_value(cfg, "strategy", "name", names[t], "test");
            fedc_config_set_value(cfg, "strategy", "num_malicious", "1", "test");
            fedc_strategy *s = NULL;
            fedc_err err;
            assert_int_equal(fedc_strategy_create(cfg, P, NULL, &s, &err), FEDC_OK);
            round_of(s, K, sids, sex, &shuffled[0][0], P, g, NULL);
            if (order == 0)
                memcpy(ref, g, sizeof ref);
            else if (memcmp(ref, g, sizeof ref) != 0)
                fail_msg("%s: the result depends on arrival order", names[t]);
            fedc_strategy_destroy(s);
            fedc_config_destroy(cfg);
        }
    }
}

static void test_attack_helper(void **state)
{
    (void)state;
    fedc_attack a;
    fedc_err err;
    float v[4] = {1, -2, 0.5f, 0};
    assert_int_equal(fedc_attack_parse("scale:3", &a, &err), FEDC_OK);
    fedc_attack_apply(&a, v, 4, NULL);
    assert_true(v[0] == 3 && v[1] == -6 && v[2] == 1.5f && v[3] == 0);
    assert_int_equal(fedc_attack_parse("signflip", &a, &err), FEDC_OK);
    fedc_attack_apply(&a, v, 4, NULL);
    assert_true(v[0] == -3 && v[1] == 6 && v[2] == -1.5f);
    assert_int_equal(fedc_attack_parse("signflip:2", &a, &err), FEDC_OK);
    fedc_attack_apply(&a, v, 4, NULL);
    assert_true(v[0] == 6 && v[1] == -12);
    assert_int_equal(fedc_attack_parse("scale:1e300", &a, &err), FEDC_OK);
    fedc_attack_apply(&a, v, 4, NULL); /* overflows to Inf, which strategies then refuse */
    assert_true(isinf(v[0]) && v[0] > 0 && isinf(v[1]) && v[1] < 0);
    assert_int_equal(fedc_attack_parse("none", &a, &err), FEDC_OK);
    assert_int_equal(a.kind, FEDC_ATTACK_NONE);
    assert_int_equal(fedc_attack_parse("", &a, &err), FEDC_OK);
    assert_int_equal(a.kind, FEDC_ATTACK_NONE);

    assert_int_equal(fedc_attack_parse("scale:", &a, &err), FEDC_ERR_INVALID);
    assert_int_equal(fedc_attack_parse("scale:2x", &a, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "scale:2x"));
    assert_int_equal(fedc_attack_parse("gaussian:-1", &a, &err), FEDC_ERR_INVALID);
    assert_int_equal(fedc_attack_parse("flip", &a, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "known:"));

    /* Gaussian: deterministic per stream, N(0, sigma^2). */
    enum { M = 20000 };
    static float x[M], y[M];
    assert_int_equal(fedc_attack_parse("gaussian:0.5", &a, &err), FEDC_OK);
    fedc_rng r1, r2;
    fedc_rng_init(&r1, 9, 2, 4, FEDC_RNG_ATTACK);
    fedc_rng_init(&r2, 9, 2, 4, FEDC_RNG_ATTACK);
    fedc_attack_apply(&a, x, M, &r1);
    fedc_attack_apply(&a, y, M, &r2);
    assert_memory_equal(x, y, sizeof x);
    double mean = 0, var = 0;
    for (int i = 0; i < M; i++) mean += x[i];
    mean /= M;
    for (int i = 0; i < M; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= M - 1;
    assert_close(mean, 0.0, 0, 0.02);  /* 5 standard errors: 0.5 / sqrt(20000) = 0.0035 */
    assert_close(var, 0.25, 0.05, 0); /* 5 standard errors of the variance: 0.0125 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median_by_hand),
        cmocka_unit_test(test_trimmed_by_hand),
        cmocka_unit_test(test_krum_by_hand),
        cmocka_unit_test(test_bulyan_by_hand),
        cmocka_unit_test(test_attack_resistance),
        cmocka_unit_test(test_bounded_memory),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_attack_helper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
