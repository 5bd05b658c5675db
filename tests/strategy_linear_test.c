/* Tests of the linear strategies and the strategy framework: FedAvg weights by hand, the
 * weight cap, FedAvgM, FedAdam/FedYogi/FedAdagrad against the one-step values of
 * ../shared/REFERENCES.md (Reddi et al. 2021 with Flower's semantics), FedProx, QFedAvg and
 * SCAFFOLD by hand, arrival-order independence, refused updates (NaN, Inf, wrong size,
 * duplicates) counted while the round goes on, empty rounds, unknown names. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/config.h"
#include "fedc/rng.h"
#include "fedc/strategy.h"

/* A config with the given "section.key=value" assignments (NULL-terminated). */
static fedc_config *config(const char *const *sets)
{
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (; *sets; sets++)
        if (fedc_config_set(cfg, *sets, "test") != FEDC_OK)
            fail_msg("%s: %s", *sets, fedc_config_errmsg(cfg));
    return cfg;
}

static fedc_strategy *make(const char *const *sets, size_t n)
{
    fedc_config *cfg = config(sets);
    fedc_strategy *s = NULL;
    fedc_err err;
    if (fedc_strategy_create(cfg, n, NULL, &s, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_config_destroy(cfg);
    return s;
}

static fedc_fit_result result(uint32_t client, uint64_t n_ex, const float *u, size_t len)
{
    fedc_fit_result r;
    memset(&r, 0, sizeof r);
    r.client = client;
    r.num_examples = n_ex;
    r.update = u;
    r.update_len = len;
    r.train_loss = 1.0;
    return r;
}

static void add_ok(fedc_strategy *s, const fedc_fit_result *r)
{
    fedc_err err;
    if (fedc_strategy_add(s, r, &err) != FEDC_OK) fail_msg("add: %s", err.msg);
}

static void finish_ok(fedc_strategy *s, float *global, fedc_round_agg *info)
{
    fedc_err err;
    if (fedc_strategy_finish_round(s, global, info, &err) != FEDC_OK)
        fail_msg("finish: %s", err.msg);
}

/* One round of clients (update, examples) on a fresh model; returns the new global. */
static void fedavg_round(fedc_strategy *s, float *global, fedc_round_agg *info)
{
    static const float u5[3] = {1, 2, 3}, u2[3] = {-1, 0, 1}, u9[3] = {0.5f, 0.5f, -0.5f};
    fedc_strategy_begin_round(s, 1);
    fedc_fit_result r = result(5, 10, u5, 3);
    r.train_loss = 2.0;
    add_ok(s, &r);
    r = result(2, 30, u2, 3);
    r.train_loss = 1.0;
    add_ok(s, &r);
    r = result(9, 60, u9, 3);
    r.train_loss = 0.5;
    add_ok(s, &r);
    finish_ok(s, global, info);
}

/* FedAvg: w += sum_k n_k u_k / sum_k n_k (McMahan et al. 2017). By hand:
 * (10*[1,2,3] + 30*[-1,0,1] + 60*[.5,.5,-.5]) / 100 = [0.1, 0.5, 0.3]. */
static void test_fedavg_by_hand(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedavg", NULL};
    fedc_strategy *s = make(sets, 3);
    assert_string_equal(fedc_strategy_name(s), "fedavg");
    assert_int_equal(fedc_strategy_is_streaming(s), 1);
    assert_int_equal(fedc_strategy_max_held(s), 0);
    assert_int_equal(fedc_strategy_update_len(s), 3);
    float g[3] = {1, 1, 1};
    fedc_round_agg info;
    fedavg_round(s, g, &info);
    assert_true(g[0] == 1.0f + 0.1f && g[1] == 1.5f && g[2] == 1.0f + 0.3f);
    assert_int_equal(info.round, 1);
    assert_int_equal(info.accepted, 3);
    assert_int_equal(info.rejected, 0);
    assert_int_equal(info.examples, 100);
    assert_close(info.train_loss, (10 * 2.0 + 30 * 1.0 + 60 * 0.5) / 100, 1e-12, 0);
    assert_close(info.step_norm, sqrt(0.01 + 0.25 + 0.09), 1e-6, 0);
    fedc_strategy_destroy(s);

    /* The weight cap: weights 10, 20, 20 -> ([10,20,30] + [-20,0,20] + [10,10,-10]) / 50. */
    const char *capped[] = {"strategy.name=fedavg", "strategy.max_weight=20", NULL};
    s = make(capped, 3);
    float h[3] = {0, 0, 0};
    fedavg_round(s, h, &info);
    assert_true(h[0] == 0.0f && h[1] == 0.6f && h[2] == 0.8f);
    assert_int_equal(info.examples, 100); /* the record keeps the reported counts */
    fedc_strategy_destroy(s);
}

/* FedProx: clients get mu; the server is FedAvg; mu = 0 is a configuration error. */
static void test_fedprox(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedprox", "train.prox_mu=0.01", NULL};
    fedc_strategy *s = make(sets, 3);
    fedc_fit_config fc;
    fedc_strategy_configure_fit(s, 4, &fc);
    assert_int_equal(fc.round, 4);
    assert_close(fc.prox_mu, 0.01, 0, 0);
    assert_null(fc.control);
    assert_int_equal(fc.want_loss_before, 0);
    float g[3] = {1, 1, 1};
    fedavg_round(s, g, NULL);
    assert_true(g[0] == 1.0f + 0.1f && g[1] == 1.5f && g[2] == 1.0f + 0.3f);
    fedc_strategy_destroy(s);

    const char *nomu[] = {"strategy.name=fedprox", NULL};
    fedc_config *cfg = config(nomu);
    fedc_err err;
    s = (fedc_strategy *)1;
    assert_int_equal(fedc_strategy_create(cfg, 3, NULL, &s, &err), FEDC_ERR_CONFIG);
    assert_null(s);
    assert_non_null(strstr(err.msg, "prox_mu"));
    fedc_config_destroy(cfg);
}

/* One client, one parameter: the round's Delta is exactly that update. */
static float one_step(fedc_strategy *s, uint32_t round, float global, float update)
{
    fedc_strategy_begin_round(s, round);
    fedc_fit_result r = result(1, 1, &update, 1);
    add_ok(s, &r);
    finish_ok(s, &global, NULL);
    return global;
}

/* REFERENCES.md, "Server optimizers": FedAdam Delta=0.1, eta=0.1, beta=(0.9, 0.99), tau=1e-9,
 * x0=0 -> x1=0.09999999; then Delta=-0.05 -> x2=0.1359210472. Defaults are Flower's. */
static void test_fedadam_reference(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedadam", NULL};
    fedc_strategy *s = make(sets, 1);
    float x1 = one_step(s, 1, 0.0f, 0.1f);
    assert_close(x1, 0.09999999, 2e-7, 0);
    float x2 = one_step(s, 2, x1, -0.05f);
    assert_close(x2, 0.1359210472, 2e-7, 0);
    fedc_fit_config fc;
    fedc_strategy_configure_fit(s, 3, &fc);
    assert_true(fc.lr == 0); /* eta_l unset: clients keep train.lr */
    fedc_strategy_destroy(s);

    const char *explicit_[] = {"strategy.name=fedadam", "strategy.eta=0.1", "strategy.tau=1e-9",
                               "strategy.beta1=0.9", "strategy.beta2=0.99",
                               "strategy.eta_l=0.05", NULL};
    s = make(explicit_, 1);
    assert_close(one_step(s, 1, 0.0f, 0.1f), 0.09999999, 2e-7, 0);
    fedc_strategy_configure_fit(s, 2, &fc);
    assert_close(fc.lr, 0.05, 0, 0);
    fedc_strategy_destroy(s);
}

/* FedYogi Delta=0.1, eta=0.01, tau=1e-3 -> v=1e-4, x1=0.0090909091 (Flower's defaults). */
static void test_fedyogi_reference(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedyogi", NULL};
    fedc_strategy *s = make(sets, 1);
    assert_close(one_step(s, 1, 0.0f, 0.1f), 0.0090909091, 2e-7, 0);
    /* Second step by hand: m = 0.9*0.01 + 0.1*(-0.05) = 0.004; v = 1e-4 - 0.01*0.0025 *
     * sign(1e-4 - 0.0025) = 1.25e-4; x2 = x1 + 0.01 * 0.004 / (sqrt(1.25e-4) + 1e-3). */
    float x1 = 0.0090909091f;
    double want = (double)x1 + 0.01 * 0.004 / (sqrt(1.25e-4) + 1e-3);
    assert_close(one_step(s, 2, x1, -0.05f), want, 1e-6, 0);
    fedc_strategy_destroy(s);
}

/* FedAdagrad Delta=0.1, eta=0.1, tau=1e-9 (beta1 = 0) -> m=0.1, v=0.01, x1=0.099999999. */
static void test_fedadagrad_reference(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedadagrad", "strategy.beta1=0.5", NULL};
    fedc_strategy *s = make(sets, 1); /* beta1 is ignored: Flower's FedAdagrad has m = Delta */
    float x1 = one_step(s, 1, 0.0f, 0.1f);
    assert_close(x1, 0.099999999, 2e-7, 0);
    /* v accumulates: v = 0.01 + 0.04; x2 = x1 + 0.1 * 0.2 / sqrt(0.05) */
    assert_close(one_step(s, 2, x1, 0.2f), 0.099999999 + 0.1 * 0.2 / sqrt(0.05), 1e-6, 0);
    fedc_strategy_destroy(s);
}

/* FedAvgM (Flower): m = mu m + Delta (m starts at Delta), x += lr m. By hand with lr 0.5,
 * mu 0.9: x1 = 0.5*[0.1,-0.2]; m2 = 0.9*[0.1,-0.2] + [0.05,0.1] = [0.14,-0.08];
 * x2 = x1 + 0.5 m2. */
static void test_fedavgm_by_hand(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedavgm", "strategy.server_lr=0.5",
                          "strategy.server_momentum=0.9", NULL};
    fedc_strategy *s = make(sets, 2);
    float g[2] = {0, 0};
    const float d1[2] = {0.1f, -0.2f}, d2[2] = {0.05f, 0.1f};
    fedc_strategy_begin_round(s, 1);
    fedc_fit_result r = result(3, 7, d1, 2);
    add_ok(s, &r);
    finish_ok(s, g, NULL);
    assert_close(g[0], 0.05, 1e-6, 0);
    assert_close(g[1], -0.1, 1e-6, 0);
    fedc_strategy_begin_round(s, 2);
    r = result(3, 7, d2, 2);
    add_ok(s, &r);
    finish_ok(s, g, NULL);
    assert_close(g[0], 0.05 + 0.5 * 0.14, 1e-6, 0);
    assert_close(g[1], -0.1 + 0.5 * -0.08, 1e-6, 0);
    fedc_strategy_destroy(s);

    /* lr 1, mu 0 is FedAvg. */
    const char *plain[] = {"strategy.name=fedavgm", NULL};
    s = make(plain, 3);
    float h[3] = {1, 1, 1};
    fedavg_round(s, h, NULL);
    assert_true(h[0] == 1.0f + 0.1f && h[1] == 1.5f && h[2] == 1.0f + 0.3f);
    fedc_strategy_destroy(s);
}

/* q-FFL, Li et al. 2020 Algorithm 2, by the formula:
 * x += sum_k F_k^q L u_k / sum_k (q F_k^(q-1) L^2 |u_k|^2 + L F_k^q). */
static void qffl_expect(double q, double L, const float u[][2], const double *F, int K,
                        double out[2])
{
    double H = 0, num[2] = {0, 0};
    for (int k = 0; k < K; k++) {
        double sq = (double)u[k][0] * u[k][0] + (double)u[k][1] * u[k][1];
        double f = F[k] + 1e-10;
        H += q * pow(f, q - 1) * L * L * sq + L * pow(f, q);
        for (int i = 0; i < 2; i++) num[i] += pow(f, q) * L * u[k][i];
    }
    out[0] = num[0] / H;
    out[1] = num[1] / H;
}

static void test_qfedavg_by_hand(void **state)
{
    (void)state;
    /* q = 1, L = 10: h1 = 100*0.05 + 10*0.5 = 10, h2 = 100*0.09 + 10*1.5 = 24;
     * numerator = 0.5*10*[0.1,-0.2] + 1.5*10*[0.3,0] = [5,-1]; step = [5,-1]/34. */
    const float u[2][2] = {{0.1f, -0.2f}, {0.3f, 0.0f}};
    const double F[2] = {0.5, 1.5};
    const char *sets[] = {"strategy.name=qfedavg", "strategy.q=1", "strategy.qffl_lr=0.1", NULL};
    fedc_strategy *s = make(sets, 2);
    fedc_fit_config fc;
    fedc_strategy_configure_fit(s, 1, &fc);
    assert_int_equal(fc.want_loss_before, 1);
    float g[2] = {0, 0};
    fedc_strategy_begin_round(s, 1);
    for (int k = 0; k < 2; k++) {
        fedc_fit_result r = result((uint32_t)(k + 1), 100, u[k], 2);
        r.loss_before = F[k];
        add_ok(s, &r);
    }
    /* A result without a usable loss_before is refused. */
    fedc_fit_result bad = result(9, 100, u[0], 2);
    bad.loss_before = NAN;
    fedc_err err;
    assert_int_equal(fedc_strategy_add(s, &bad, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "loss_before"));
    finish_ok(s, g, NULL);
    assert_close(g[0], 5.0 / 34, 1e-6, 0);
    assert_close(g[1], -1.0 / 34, 1e-6, 0);
    fedc_strategy_destroy(s);

    /* q = 2 over two rounds (the second with a different internal scale): the formula. */
    const char *q2[] = {"strategy.name=qfedavg", "strategy.q=2", "strategy.qffl_lr=0.05", NULL};
    s = make(q2, 2);
    const double F2[2][2] = {{0.3, 2.0}, {0.9, 0.05}};
    float x[2] = {0, 0};
    for (uint32_t round = 1; round <= 2; round++) {
        double want[2];
        qffl_expect(2, 20, u, F2[round - 1], 2, want);
        want[0] += x[0];
        want[1] += x[1];
        fedc_strategy_begin_round(s, round);
        for (int k = 1; k >= 0; k--) {
            fedc_fit_result r = result((uint32_t)(k + 1), 10, u[k], 2);
            r.loss_before = F2[round - 1][k];
            add_ok(s, &r);
        }
        finish_ok(s, x, NULL);
        assert_close(x[0], want[0], 1e-6, 1e-9);
        assert_close(x[1], want[1], 1e-6, 1e-9);
    }
    fedc_strategy_destroy(s);
}

/* SCAFFOLD server (Karimireddy et al. 2020): x += eta_g Delta (example-weighted), c += (1/N)
 * sum Delta c. By hand, N = 10, eta_g = 0.5: Delta = (10*[0.2,0.4] + 30*[0.6,0]) / 40 =
 * [0.5, 0.1], x1 = [0.25, 0.05]; c1 = ([1,-1] + [3,1]) / 10 = [0.4, 0]. */
static void test_scaffold_by_hand(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=scaffold", "strategy.eta_g=0.5", "clients.count=10",
                          NULL};
    fedc_strategy *s = make(sets, 2);
    fedc_fit_config fc;
    fedc_strategy_configure_fit(s, 1, &fc);
    assert_non_null(fc.control);
    assert_int_equal(fc.control_len, 2);
    assert_true(fc.control[0] == 0 && fc.control[1] == 0);
    const float u1[2] = {0.2f, 0.4f}, c1[2] = {1, -1}, u2[2] = {0.6f, 0}, c2[2] = {3, 1};
    const float cnan[2] = {0, NAN};
    float x[2] = {0, 0};
    fedc_strategy_begin_round(s, 1);
    fedc_fit_result r = result(1, 10, u1, 2);
    r.control_delta = c1;
    r.control_delta_len = 2;
    add_ok(s, &r);
    r = result(2, 30, u2, 2);
    r.control_delta = c2;
    r.control_delta_len = 2;
    add_ok(s, &r);
    fedc_err err;
    r = result(3, 30, u2, 2); /* no control delta */
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_SHAPE);
    r.control_delta = cnan; /* a NaN in the control delta: the update must not stay folded */
    r.control_delta_len = 2;
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "control delta"));
    fedc_round_agg info;
    finish_ok(s, x, &info);
    assert_int_equal(info.accepted, 2);
    assert_int_equal(info.rejected, 2);
    assert_close(x[0], 0.25, 1e-6, 0);
    assert_close(x[1], 0.05, 1e-6, 0);
    fedc_strategy_configure_fit(s, 2, &fc);
    assert_close(fc.control[0], 0.4, 1e-6, 0);
    assert_close(fc.control[1], 0.0, 0, 1e-7);
    fedc_strategy_destroy(s);
}

/* NaN, Inf, wrong-size, zero-example and duplicate results are refused and counted; the round
 * goes on and its result is that of the accepted ones. */
static void test_refused_updates(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedavg", NULL};
    fedc_strategy *s = make(sets, 3);
    static const float u5[3] = {1, 2, 3}, u2[3] = {-1, 0, 1}, u9[3] = {0.5f, 0.5f, -0.5f};
    const float unan[3] = {0, NAN, 0}, uinf[3] = {INFINITY, 0, 0}, ulong[4] = {0, 0, 0, 0};
    fedc_err err;
    float g[3] = {1, 1, 1};
    fedc_strategy_begin_round(s, 7);
    fedc_fit_result r = result(5, 10, u5, 3);
    add_ok(s, &r);
    r = result(11, 10, unan, 3);
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "client 11"));
    assert_non_null(strstr(err.msg, "element 1"));
    assert_non_null(strstr(err.msg, "round 7"));
    r = result(2, 30, u2, 3);
    add_ok(s, &r);
    r = result(12, 10, uinf, 3);
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_NONFINITE);
    r = result(13, 10, ulong, 4);
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "4 values"));
    r = result(14, 10, NULL, 3);
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_SHAPE);
    r = result(15, 0, u5, 3);
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_INVALID);
    r = result(5, 10, u9, 3); /* client 5 again */
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_INVALID);
    r = result(9, 60, u9, 3);
    add_ok(s, &r);
    fedc_round_agg info;
    finish_ok(s, g, &info);
    assert_true(g[0] == 1.0f + 0.1f && g[1] == 1.5f && g[2] == 1.0f + 0.3f);
    assert_int_equal(info.accepted, 3);
    assert_int_equal(info.rejected, 6);
    assert_int_equal(info.rejected_nonfinite, 2);
    assert_int_equal(info.rejected_shape, 2);
    fedc_strategy_destroy(s);
}

/* A round with nothing accepted is an error and leaves the model alone. */
static void test_empty_round(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedadam", NULL};
    fedc_strategy *s = make(sets, 3);
    float g[3] = {1, 2, 3};
    fedc_err err;
    fedc_round_agg info;
    fedc_strategy_begin_round(s, 1);
    assert_int_equal(fedc_strategy_finish_round(s, g, &info, &err), FEDC_ERR_STATE);
    assert_non_null(strstr(err.msg, "no accepted update"));
    assert_true(g[0] == 1 && g[1] == 2 && g[2] == 3);
    fedc_strategy_begin_round(s, 2);
    const float unan[3] = {NAN, 0, 0};
    fedc_fit_result r = result(1, 5, unan, 3);
    assert_int_equal(fedc_strategy_add(s, &r, &err), FEDC_ERR_NONFINITE);
    assert_int_equal(fedc_strategy_finish_round(s, g, &info, &err), FEDC_ERR_STATE);
    assert_int_equal(info.rejected, 1);
    assert_true(g[0] == 1 && g[1] == 2 && g[2] == 3);
    fedc_strategy_destroy(s);
}

static void test_unknown_and_bad_config(void **state)
{
    (void)state;
    const char *sets[] = {"strategy.name=fedavgx", NULL};
    fedc_config *cfg = config(sets);
    fedc_strategy *s = NULL;
    fedc_err err;
    assert_int_equal(fedc_strategy_create(cfg, 10, NULL, &s, &err), FEDC_ERR_NOTFOUND);
    assert_null(s);
    assert_non_null(strstr(err.msg, "'fedavgx'"));
    assert_non_null(strstr(err.msg, "known: fedavg, fedavgm"));
    assert_non_null(strstr(err.msg, "test")); /* where the name came from */
    fedc_config_destroy(cfg);

    /* Every listed name creates. */
    const char *const *names = fedc_strategy_names();
    size_t count = 0;
    for (; names[count]; count++) {
        cfg = fedc_config_create();
        fedc_config_set_value(cfg, "strategy", "name", names[count], "test");
        fedc_config_set_value(cfg, "train", "prox_mu", "0.1", "test");
        if (fedc_strategy_create(cfg, 10, NULL, &s, &err) != FEDC_OK)
            fail_msg("%s: %s", names[count], err.msg);
        assert_string_equal(fedc_strategy_name(s), names[count]);
        fedc_strategy_destroy(s);
        fedc_config_destroy(cfg);
    }
    assert_int_equal(count, 13);

    /* A NaN in the initial model. */
    const char *ok[] = {"strategy.name=fedavg", NULL};
    cfg = config(ok);
    float init[4] = {0, 1, INFINITY, 0};
    assert_int_equal(fedc_strategy_create(cfg, 4, init, &s, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "parameter 2"));
    /* Out-of-range parameters are refused by the config registry. */
    assert_int_equal(fedc_config_set(cfg, "strategy.server_momentum=1.0", "test"),
                     FEDC_ERR_CONFIG);
    assert_int_equal(fedc_config_set(cfg, "strategy.trim_beta=0.5", "test"), FEDC_ERR_CONFIG);
    fedc_config_destroy(cfg);
    fedc_strategy_destroy(NULL);
}

/* The new global model is bit-identical whatever the order the results arrive in. */
static void test_order_independent(void **state)
{
    (void)state;
    enum { K = 16, P = 1000 };
    static float u[K][P];
    static float c[K][P];
    uint64_t ex[K];
    fedc_rng rng;
    fedc_rng_init(&rng, 5, 0, 0, FEDC_RNG_DATA);
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < P; i++) {
            u[k][i] = (float)(fedc_rng_normal(&rng) * 0.01);
            c[k][i] = (float)(fedc_rng_normal(&rng) * 0.1);
        }
        ex[k] = 1 + fedc_rng_below(&rng, 1000);
    }
    const char *const strategies[] = {"fedavg", "fedavgm", "fedadam", "fedyogi", "qfedavg",
                                      "scaffold"};
    for (size_t t = 0; t < sizeof strategies / sizeof *strategies; t++) {
        float ref[P];
        for (int order = 0; order < 3; order++) {
            fedc_config *cfg = fedc_config_create();
            fedc_config_set_value(cfg, "strategy", "name", strategies[t], "test");
            fedc_config_set_value(cfg, "strategy", "server_momentum", "0.9", "test");
            fedc_strategy *s = NULL;
            fedc_err err;
            assert_int_equal(fedc_strategy_create(cfg, P, NULL, &s, &err), FEDC_OK);
            float g[P];
            for (int i = 0; i < P; i++) g[i] = 0.5f;
            uint32_t perm[K];
            fedc_rng prng;
            fedc_rng_init(&prng, 99, (uint32_t)order, 0, FEDC_RNG_SHUFFLE);
            for (uint32_t round = 1; round <= 2; round++) {
                fedc_rng_permutation(&prng, perm, K);
                fedc_strategy_begin_round(s, round);
                for (int j = 0; j < K; j++) {
                    int k = order == 0 ? j : (int)perm[j];
                    fedc_fit_result r = result((uint32_t)k, ex[k], u[k], P);
                    r.loss_before = 0.1 * (k + 1);
                    r.control_delta = c[k];
                    r.control_delta_len = P;
                    add_ok(s, &r);
                }
                finish_ok(s, g, NULL);
            }
            if (order == 0)
                memcpy(ref, g, sizeof ref);
            else if (memcmp(ref, g, sizeof ref) != 0)
                fail_msg("%s: the result depends on arrival order", strategies[t]);
            fedc_strategy_destroy(s);
            fedc_config_destroy(cfg);
        }
    }
}

/* add_batch: the same model and counts as one add per result, refusals included. */
static void test_add_batch(void **state)
{
    (void)state;
    enum { K = 21, P = 777 };
    static float u[K][P], c[K][P];
    fedc_rng rng;
    fedc_rng_init(&rng, 8, 0, 0, FEDC_RNG_DATA);
    for (int k = 0; k < K; k++)
        for (int i = 0; i < P; i++) {
            u[k][i] = (float)(fedc_rng_normal(&rng) * 0.05);
            c[k][i] = (float)fedc_rng_normal(&rng);
        }
    u[4][700] = NAN;
    c[9][3] = INFINITY;
    fedc_fit_result res[K];
    for (int k = 0; k < K; k++) {
        res[k] = result((uint32_t)(k * 5 % K), (uint64_t)(10 + k), u[k], P);
        res[k].loss_before = 0.5 + 0.1 * k;
        res[k].control_delta = c[k];
        res[k].control_delta_len = P;
    }
    res[7].update_len = P - 1;
    res[12].client = res[11].client; /* a duplicate */
    const char *const strategies[] = {"fedavg", "scaffold", "qfedavg", "fedmedian"};
    for (size_t t = 0; t < sizeof strategies / sizeof *strategies; t++) {
        float g1[P], g2[P];
        fedc_round_agg i1, i2;
        for (int mode = 0; mode < 2; mode++) {
            fedc_config *cfg = fedc_config_create();
            fedc_config_set_value(cfg, "strategy", "name", strategies[t], "test");
            fedc_config_set_value(cfg, "clients", "per_round", "30", "test");
            fedc_strategy *s = NULL;
            fedc_err err;
            assert_int_equal(fedc_strategy_create(cfg, P, NULL, &s, &err), FEDC_OK);
            float *g = mode ? g2 : g1;
            for (int i = 0; i < P; i++) g[i] = 0;
            fedc_strategy_begin_round(s, 1);
            if (mode == 0) {
                for (int k = 0; k < K; k++) fedc_strategy_add(s, &res[k], NULL);
            } else {
                fedc_status st[K];
                assert_int_not_equal(fedc_strategy_add_batch(s, K, res, st, &err), FEDC_OK);
                /* The first refusal by index is res[4], client 20. */
                if (!strstr(err.msg, "client 20")) fail_msg("%s: %s", strategies[t], err.msg);
                assert_int_equal(st[4], FEDC_ERR_NONFINITE);
                assert_int_equal(st[7], FEDC_ERR_SHAPE);
                assert_int_equal(st[12], FEDC_ERR_INVALID);
                assert_int_equal(st[0], FEDC_OK);
            }
            assert_int_equal(fedc_strategy_finish_round(s, g, mode ? &i2 : &i1, &err), FEDC_OK);
            fedc_strategy_destroy(s);
            fedc_config_destroy(cfg);
        }
        if (memcmp(g1, g2, sizeof g1) != 0) fail_msg("%s: batch differs", strategies[t]);
        assert_int_equal(i1.accepted, i2.accepted);
        assert_int_equal(i1.rejected, i2.rejected);
        assert_int_equal(i1.rejected_nonfinite, i2.rejected_nonfinite);
        assert_int_equal(i1.rejected_shape, i2.rejected_shape);
        assert_int_equal(i1.rejected, strcmp(strategies[t], "scaffold") == 0 ? 4 : 3);
    }
}

/* curl-style torture: every allocation of create, add and finish fails in turn; each failure is
 * a clean error (no crash, no leak under ASan), and the model is untouched unless finish
 * succeeded. */
static void test_alloc_torture(void **state)
{
    (void)state;
    const char *const *names = fedc_strategy_names();
    const float u[4] = {0.5f, -1, 2, 0}, c[4] = {1, 1, 1, 1};
    for (size_t t = 0; names[t]; t++) {
        fedc_config *cfg = fedc_config_create();
        fedc_config_set_value(cfg, "strategy", "name", names[t], "test");
        fedc_config_set_value(cfg, "train", "prox_mu", "0.1", "test");
        int completed = 0;
        for (uint64_t n = 1; n < 200 && !completed; n++) {
            fedc_strategy *s = NULL;
            fedc_err err;
            float g[4] = {1, 1, 1, 1};
            fedc_alloc_fail_after(n, 0);
            fedc_status st = fedc_strategy_create(cfg, 4, NULL, &s, &err);
            if (st != FEDC_OK) {
                fedc_alloc_fail_after(0, 0);
                assert_int_equal(st, FEDC_ERR_NOMEM);
                assert_null(s);
                continue;
            }
            fedc_strategy_begin_round(s, 1);
            int added = 0;
            for (uint32_t k = 0; k < 3; k++) {
                fedc_fit_result r = result(k, 10, u, 4);
                r.loss_before = 1;
                r.control_delta = c;
                r.control_delta_len = 4;
                st = fedc_strategy_add(s, &r, &err);
                assert_true(st == FEDC_OK || st == FEDC_ERR_NOMEM);
                added += st == FEDC_OK;
            }
            st = fedc_strategy_finish_round(s, g, NULL, &err);
            fedc_alloc_fail_after(0, 0);
            if (st == FEDC_OK && added == 3) {
                completed = 1;
                assert_true(g[0] != 1.0f); /* the round moved the model */
            } else if (st != FEDC_OK) {
                assert_true(st == FEDC_ERR_NOMEM || st == FEDC_ERR_STATE);
                assert_true(g[0] == 1 && g[1] == 1 && g[2] == 1 && g[3] == 1);
            }
            fedc_strategy_destroy(s);
        }
        assert_true(completed);
        fedc_config_destroy(cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fedavg_by_hand),
        cmocka_unit_test(test_fedprox),
        cmocka_unit_test(test_fedadam_reference),
        cmocka_unit_test(test_fedyogi_reference),
        cmocka_unit_test(test_fedadagrad_reference),
        cmocka_unit_test(test_fedavgm_by_hand),
        cmocka_unit_test(test_qfedavg_by_hand),
        cmocka_unit_test(test_scaffold_by_hand),
        cmocka_unit_test(test_refused_updates),
        cmocka_unit_test(test_empty_round),
        cmocka_unit_test(test_unknown_and_bad_config),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_add_batch),
        cmocka_unit_test(test_alloc_torture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
