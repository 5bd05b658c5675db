/*
 * Client optimizers against hand-computed steps (PyTorch's SGD/Adam/AdamW formulas, worked
 * out in double by hand or with a few lines of Python; the values are in the comments),
 * clipping by global norm, the FedProx term, weight decay, reset and refusal of NaN.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "testutil.h"

static fedc_optim *make(const fedc_optim_config *c, size_t n)
{
    fedc_optim *o = NULL;
    fedc_err err;
    if (fedc_optim_create(c, n, &o, &err) != FEDC_OK) fail_msg("create: %s", err.msg);
    return o;
}

static void step(fedc_optim *o, float *w, const float *g)
{
    if (fedc_optim_step(o, w, g) != FEDC_OK) fail_msg("step: %s", fedc_optim_errmsg(o));
}

static void test_sgd(void **state)
{
    (void)state;
    fedc_optim_config c;
    fedc_optim_config_default(&c, FEDC_OPTIM_SGD);
    c.lr = 0.1;
    fedc_optim *o = make(&c, 2);
    float w[2] = {1, 2}, g[2] = {0.5f, -1};
    step(o, w, g); /* w - 0.1 g */
    assert_close(w[0], 0.95, 1e-7, 0);
    assert_close(w[1], 2.1, 1e-7, 0);
    assert_int_equal(fedc_optim_step_count(o), 1);
    assert_close(fedc_optim_last_grad_norm(o), sqrt(1.25), 1e-7, 0);
    assert_int_equal(fedc_optim_state_bytes(o), 0);
    /* g itself is not modified. */
    assert_true(g[0] == 0.5f && g[1] == -1.0f);
    fedc_optim_destroy(o);

    /* Weight decay (coupled): g + 0.1 w = 0.6; w = 1 - 0.1 * 0.6 = 0.94. */
    c.weight_decay = 0.1;
    o = make(&c, 1);
    float w1 = 1, g1 = 0.5f;
    step(o, &w1, &g1);
    assert_close(w1, 0.94, 1e-7, 0);
    fedc_optim_destroy(o);
}

static void test_momentum_nesterov_reset(void **state)
{
    (void)state;
    fedc_optim_config c;
    fedc_optim_config_default(&c, FEDC_OPTIM_SGD);
    c.lr = 0.1;
    c.momentum = 0.9;
    fedc_optim *o = make(&c, 1);
    assert_int_equal(fedc_optim_state_bytes(o), sizeof(float));
    float w = 1, g = 1;
    step(o, &w, &g); /* b = 1, w = 0.9 */
    assert_close(w, 0.9, 1e-7, 0);
    step(o, &w, &g); /* b = 1.9, w = 0.71 */
    assert_close(w, 0.71, 1e-6, 0);
    fedc_optim_reset(o); /* the next step is a first step again: b = g */
    assert_int_equal(fedc_optim_step_count(o), 0);
    step(o, &w, &g);
    assert_close(w, 0.61, 1e-6, 0);
    fedc_optim_destroy(o);

    c.nesterov = 1;
    o = make(&c, 1);
    w = 1;
    step(o, &w, &g); /* b = 1, d = 1 + 0.9 = 1.9, w = 0.81 */
    assert_close(w, 0.81, 1e-6, 0);
    step(o, &w, &g); /* b = 1.9, d = 1 + 1.71 = 2.71, w = 0.539 */
    assert_close(w, 0.539, 1e-6, 0);
    fedc_optim_destroy(o);
}

static void test_adam_adamw(void **state)
{
    (void)state;
    const float gs[3] = {0.5f, -1.0f, 0.25f};
    /* lr 0.1, betas (0.9, 0.999), eps 1e-8, from w = 1. */
    const double adam[3] = {0.900000002, 0.9366103542405654, 0.9502794203389762};
    const double adam_wd[3] = {0.9000000016666666, 0.9252635194456061, 0.9247305742687093};
    const double adamw[3] = {0.890000002, 0.9177103542205653, 0.9222023167767704};
    const struct {
        fedc_optim_kind kind;
        double wd;
        const double *want;
    } cases[] = {{FEDC_OPTIM_ADAM, 0.0, adam},
                 {FEDC_OPTIM_ADAM, 0.1, adam_wd},
                 {FEDC_OPTIM_ADAMW, 0.1, adamw}};
    for (size_t k = 0; k < 3; k++) {
        fedc_optim_config c;
        fedc_optim_config_default(&c, cases[k].kind);
        c.lr = 0.1;
        c.weight_decay = cases[k].wd;
        fedc_optim *o = make(&c, 1);
        assert_int_equal(fedc_optim_state_bytes(o), 2 * sizeof(float));
        float w = 1;
        for (int t = 0; t < 3; t++) {
            step(o, &w, &gs[t]);
            assert_close(w, cases[k].want[t], 2e-6, 0);
        }
        fedc_optim_destroy(o);
    }
}

static void test_clip_and_prox(void **state)
{
    (void)state;
    fedc_optim_config c;
    fedc_optim_config_default(&c, FEDC_OPTIM_SGD);
    c.lr = 1.0;
    c.clip_norm = 1.0;
    fedc_optim *o = make(&c, 2);
    float w[2] = {1, 1}, g[2] = {3, 4};
    step(o, w, g); /* |g| = 5 -> (0.6, 0.8) */
    assert_close(w[0], 0.4, 1e-6, 0);
    assert_close(w[1], 0.2, 1e-6, 0);
    assert_close(fedc_optim_last_grad_norm(o), 5.0, 1e-7, 0);
    float small[2] = {0.3f, 0.4f}; /* |g| = 0.5 < 1: unchanged */
    step(o, w, small);
    assert_close(w[0], 0.1, 1e-5, 0);
    assert_close(w[1], -0.2, 1e-5, 0);
    fedc_optim_destroy(o);

    /* FedProx: g + mu (w - w_global); clipping applies to g only. */
    c.lr = 0.1;
    c.prox_mu = 0.5;
    o = make(&c, 2);
    const float center[2] = {0, 1};
    float w2[2] = {1, 2}, zero[2] = {0, 0};
    step(o, w2, zero); /* no centre yet: nothing happens */
    assert_true(w2[0] == 1.0f && w2[1] == 2.0f);
    fedc_optim_set_prox_center(o, center);
    step(o, w2, zero); /* 0.5 * (1, 1) -> w = (0.95, 1.95) */
    assert_close(w2[0], 0.95, 1e-6, 0);
    assert_close(w2[1], 1.95, 1e-6, 0);
    float big[2] = {30, 40}; /* clipped to (0.6, 0.8), plus 0.5 * (0.95, 0.95) */
    step(o, w2, big);
    assert_close(w2[0], 0.95 - 0.1 * (0.6 + 0.475), 1e-6, 0);
    assert_close(w2[1], 1.95 - 0.1 * (0.8 + 0.475), 1e-6, 0);
    fedc_optim_set_prox_center(o, NULL);
    float w3 = 1;
    fedc_optim_destroy(o);

    /* Prox with momentum goes through the same path. */
    c.clip_norm = 0;
    c.momentum = 0.5;
    o = make(&c, 1);
    fedc_optim_set_prox_center(o, center);
    float g0 = 0;
    step(o, &w3, &g0); /* g = 0.5 * 1 = 0.5, b = 0.5, w = 0.95 */
    step(o, &w3, &g0); /* g = 0.475, b = 0.25 + 0.475 = 0.725, w = 0.8775 */
    assert_close(w3, 0.8775, 1e-6, 0);
    fedc_optim_destroy(o);
}

static void test_nonfinite_refused(void **state)
{
    (void)state;
    fedc_optim_config c;
    fedc_optim_config_default(&c, FEDC_OPTIM_ADAM);
    fedc_optim *o = make(&c, 3);
    float w[3] = {1, 2, 3}, g[3] = {1, NAN, 1};
    assert_int_equal(fedc_optim_step(o, w, g), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(fedc_optim_errmsg(o), "element 1"));
    assert_true(w[0] == 1 && w[1] == 2 && w[2] == 3);
    assert_int_equal(fedc_optim_step_count(o), 0);
    g[1] = INFINITY;
    assert_int_equal(fedc_optim_step(o, w, g), FEDC_ERR_NONFINITE);
    g[1] = 1;
    assert_int_equal(fedc_optim_step(o, w, g), FEDC_OK);
    fedc_optim_destroy(o);
}

static void test_bad_configs(void **state)
{
    (void)state;
    fedc_optim_config c;
    fedc_optim *o = NULL;
    fedc_err err;
    fedc_optim_config_default(&c, FEDC_OPTIM_SGD);
    c.lr = 0;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "lr"));
    fedc_optim_config_default(&c, FEDC_OPTIM_SGD);
    c.nesterov = 1;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "Nesterov"));
    c.nesterov = 0;
    c.momentum = 1.0;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    fedc_optim_config_default(&c, FEDC_OPTIM_ADAM);
    c.beta2 = 1.0;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    fedc_optim_config_default(&c, FEDC_OPTIM_ADAM);
    c.eps = 0;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    fedc_optim_config_default(&c, FEDC_OPTIM_ADAM);
    c.clip_norm = -1;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    fedc_optim_config_default(&c, FEDC_OPTIM_ADAM);
    c.prox_mu = NAN;
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_INVALID);
    fedc_optim_config_default(&c, FEDC_OPTIM_ADAM);
    assert_int_equal(fedc_optim_create(&c, 0, &o, &err), FEDC_ERR_INVALID);
    assert_null(o);
    /* Out of memory ends cleanly. */
    fedc_alloc_fail_after(2, 0);
    assert_int_equal(fedc_optim_create(&c, 4, &o, &err), FEDC_ERR_NOMEM);
    fedc_alloc_fail_after(0, 0);
    assert_null(o);
}

static void test_from_config_and_names(void **state)
{
    (void)state;
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    assert_int_equal(fedc_config_set(cfg, "train.optimizer=adamw", "test"), FEDC_OK);
    assert_int_equal(fedc_config_set(cfg, "train.lr=0.003", "test"), FEDC_OK);
    assert_int_equal(fedc_config_set(cfg, "train.prox_mu=0.01", "test"), FEDC_OK);
    assert_int_equal(fedc_config_set(cfg, "train.clip_grad_norm=5", "test"), FEDC_OK);
    fedc_optim_config c;
    fedc_optim_config_from(&c, cfg);
    assert_int_equal(c.kind, FEDC_OPTIM_ADAMW);
    assert_close(c.lr, 0.003, 1e-12, 0);
    assert_close(c.prox_mu, 0.01, 1e-12, 0);
    assert_close(c.clip_norm, 5, 1e-12, 0);
    assert_close(c.beta2, 0.999, 1e-12, 0);
    fedc_config_destroy(cfg);
    fedc_optim_kind k;
    assert_int_equal(fedc_optim_kind_parse("adam", &k), 0);
    assert_int_equal(k, FEDC_OPTIM_ADAM);
    assert_int_equal(fedc_optim_kind_parse("rmsprop", &k), -1);
    assert_string_equal(fedc_optim_kind_name(FEDC_OPTIM_SGD), "sgd");
}

/* Long vectors: the blocked norm agrees with a double sum, and clipping scales exactly. */
static void test_clip_long(void **state)
{
    (void)state;
    const size_t n = 10007;
    float *g = malloc(n * sizeof *g);
    double want = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)((double)(i % 101) / 50.0 - 1.0);
        want += (double)g[i] * g[i];
    }
    want = sqrt(want);
    float keep = g[12];
    assert_close(fedc_clip_by_global_norm(g, n, want * 2), want, 1e-6, 0);
    assert_true(g[12] == keep);
    assert_close(fedc_clip_by_global_norm(g, n, want / 4), want, 1e-6, 0);
    assert_close(g[12], keep / 4, 1e-6, 0);
    assert_close(fedc_vec_norm2(n, g), want / 4, 1e-6, 0);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_momentum_nesterov_reset),
        cmocka_unit_test(test_adam_adamw),
        cmocka_unit_test(test_clip_and_prox),
        cmocka_unit_test(test_nonfinite_refused),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_from_config_and_names),
        cmocka_unit_test(test_clip_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
