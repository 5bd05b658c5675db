/*
 * Tests of the RDP accountant (src/privacy/rdp.c): every published value in REFERENCES.md's DP
 * section (TF Privacy's rdp_accountant_test and compute_dp_sgd_privacy, Opacus's RDP tests),
 * the special cases, the two series against each other, the accountant's composition, the
 * inverse and the order lists.
 */
#include <math.h>
#include <string.h>

#include "testutil.h"

#include "fedc/alloc.h"
#include "fedc/privacy.h"

static double rdp1(double q, double z, uint64_t steps, double order)
{
    double r = -1;
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_rdp_compute(q, z, steps, &order, 1, &r, &err), FEDC_OK);
    return r;
}

static const double *named(const char *name, size_t *n)
{
    const double *o = fedc_rdp_orders_named(name, n);
    assert_non_null(o);
    return o;
}

/* --- compute_rdp: TF Privacy rdp_accountant_test values (REFERENCES.md) --------------------- */

static void test_rdp_special_cases(void **state)
{
    (void)state;
    assert_true(rdp1(0.0, 10.0, 1, 20) == 0.0);      /* q = 0: nothing is used */
    assert_close(rdp1(1.0, 10.0, 1, 20), 0.1, 1e-15, 0); /* q = 1: alpha / (2 sigma^2) */
    assert_close(rdp1(1.0, 10.0, 7, 20), 0.7, 1e-15, 0);
    assert_true(rdp1(0.0, 1.0, 5, INFINITY) == 0.0);
    assert_true(isinf(rdp1(0.01, 1.0, 1, INFINITY)));
    assert_true(rdp1(0.5, 1.0, 0, INFINITY) == 0.0); /* zero steps: zero, even at infinity */
    assert_true(rdp1(0.5, 1.0, 0, 3.5) == 0.0);
}

static void test_rdp_q01_z2(void **state)
{
    (void)state;
    /* compute_rdp(q=0.1, sigma=2, steps=10, alpha=5) = 0.07737 (5 places). */
    assert_close(rdp1(0.1, 2.0, 10, 5), 0.07737, 0, 5e-6);
}

static void test_rdp_order_list(void **state)
{
    (void)state;
    /* compute_rdp(0.01, 2.5, 50, [1.5, 2.5, 5, 50, 100, inf]): fractional and integer orders,
     * the infinite order; rtol 1e-4. */
    const double orders[6] = {1.5, 2.5, 5, 50, 100, INFINITY};
    const double want[5] = {6.5007e-4, 1.0854e-3, 2.1808e-3, 2.3846e-2, 167.42};
    double got[6];
    assert_int_equal(fedc_rdp_compute(0.01, 2.5, 50, orders, 6, got, NULL), FEDC_OK);
    for (int i = 0; i < 5; i++) assert_close(got[i], want[i], 1e-4, 0);
    assert_true(isinf(got[5]) && got[5] > 0);
}

static void test_rdp_alpha2_closed_form(void **state)
{
    (void)state;
    /* RDP(2) = ln(1 + q^2 (e^{1/sigma^2} - 1)); q = 0.01, sigma = 1 -> 1.7181342207e-4. */
    assert_close(rdp1(0.01, 1.0, 1, 2), 1.7181342207e-4, 1e-9, 0);
    const double qs[3] = {0.001, 0.1, 0.7}, zs[3] = {0.5, 1.3, 4.0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double q = qs[i], z = zs[j];
            double exact = log1p(q * q * expm1(1.0 / (z * z)));
            assert_close(rdp1(q, z, 1, 2), exact, 1e-12, 1e-15); /* log-space sum: abs error */
        }
}

/* The fractional series and the integer sum are different code: at alpha = k +- 1e-7 the
 * fractional one must agree with the integer one at k to first order. */
static void test_rdp_fractional_matches_integer(void **state)
{
    (void)state;
    const double qs[4] = {1e-4, 0.01, 0.1, 0.5}, zs[4] = {0.7, 1.0, 2.5, 8.0};
    const int ks[4] = {2, 3, 8, 32};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 4; k++) {
                double a = ks[k], r = rdp1(qs[i], zs[j], 1, a);
                double lo = rdp1(qs[i], zs[j], 1, a - 1e-7), hi = rdp1(qs[i], zs[j], 1, a + 1e-7);
                /* RDP grows with a. Both computations add terms in log space, so log A has an
                 * absolute error of a few 1e-16: hence the atol for RDP values near 1e-10. */
                assert_true(lo <= r * (1 + 1e-6) + 1e-14 && r <= hi * (1 + 1e-6) + 1e-14);
                assert_close(lo, r, 1e-5, 1e-14);
                assert_close(hi, r, 1e-5, 1e-14);
            }
}

/* Large fractional orders: TF Privacy's series stops at the first term below exp(-30), which
 * for a large order can be the very first while the bulk of the sum lies near i = alpha q (it
 * then returns a negative "RDP"). Ours must sit between the neighbouring integer orders. */
static void test_rdp_large_fractional_order(void **state)
{
    (void)state;
    const double cases[4][3] = {{0.3, 50, 511.5}, {0.01, 50, 5000.5}, {0.9, 1000, 63.5},
                                {0.3, 1000, 5000.5}};
    for (int i = 0; i < 4; i++) {
        double q = cases[i][0], z = cases[i][1], a = cases[i][2];
        double lo = rdp1(q, z, 1, floor(a)), mid = rdp1(q, z, 1, a), hi = rdp1(q, z, 1, ceil(a));
        if (!(lo <= mid * (1 + 1e-9) && mid <= hi * (1 + 1e-9)))
            fail_msg("q %g z %g: RDP(%g) = %g, RDP(%g) = %g, RDP(%g) = %g", q, z, floor(a), lo, a,
                     mid, ceil(a), hi);
    }
    /* A true value of ~1e-22 is not returned negative. */
    assert_true(rdp1(1e-8, 1000, 1, 1.01) >= 0.0);
}

static void test_rdp_monotone(void **state)
{
    (void)state;
    size_t n;
    const double *o = named("opacus", &n);
    double prev = 0;
    for (size_t k = 0; k < n; k++) { /* non-decreasing in the order (orders are increasing) */
        double r = rdp1(0.02, 1.1, 1, o[k]);
        assert_true(r >= prev * (1 - 1e-12));
        prev = r;
    }
    double pz = INFINITY;
    for (double z = 0.3; z < 20; z *= 1.3) { /* decreasing in the noise */
        double r = rdp1(0.02, z, 1, 7.5);
        assert_true(r < pz);
        pz = r;
    }
}

/* --- eps from RDP --------------------------------------------------------------------------- */

static void test_eps_constant_rdp(void **state)
{
    (void)state;
    /* get_privacy_spent(orders 2..32, RDP = 1.1 at every order, delta 1e-5) -> 1.32783806176 at
     * order 32. */
    double orders[31], rdp[31], eps, order;
    for (int i = 0; i < 31; i++) orders[i] = 2 + i, rdp[i] = 1.1;
    assert_int_equal(fedc_rdp_epsilon(orders, rdp, 31, 1e-5, &eps, &order, NULL), FEDC_OK);
    assert_close(eps, 1.32783806176, 1e-10, 0);
    assert_true(order == 32);
}

static void test_eps_guards(void **state)
{
    (void)state;
    double orders[3] = {1.005, 2, 3}, rdp[3] = {0, 0, 0}, eps = -1, order = 0;
    /* RDP 0 -> the KL bound gives eps 0 (at the first order). */
    assert_int_equal(fedc_rdp_epsilon(orders, rdp, 3, 1e-5, &eps, &order, NULL), FEDC_OK);
    assert_true(eps == 0.0 && order == 1.005);
    /* Orders <= 1.01 are skipped (inf), and infinite RDP gives inf. */
    double r2[3] = {5, INFINITY, INFINITY};
    assert_int_equal(fedc_rdp_epsilon(orders, r2, 3, 1e-5, &eps, &order, NULL), FEDC_OK);
    assert_true(isinf(eps) && order == 1.005);
    double r3[3] = {5, 5, 1};
    assert_int_equal(fedc_rdp_epsilon(orders, r3, 3, 1e-5, &eps, &order, NULL), FEDC_OK);
    assert_close(eps, 1 + log1p(-1.0 / 3) - log(1e-5 * 3) / 2, 1e-14, 0);
    assert_true(order == 3);

    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_rdp_epsilon(orders, r3, 3, 0.0, &eps, &order, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "delta"));
    assert_int_equal(fedc_rdp_epsilon(orders, r3, 3, 1.0, &eps, &order, &err), FEDC_ERR_RANGE);
    double rneg[3] = {1, -0.5, 1};
    assert_int_equal(fedc_rdp_epsilon(orders, rneg, 3, 1e-5, &eps, &order, &err), FEDC_ERR_RANGE);
    double bad_orders[3] = {1.0, 2, 3};
    assert_int_equal(fedc_rdp_epsilon(bad_orders, r3, 3, 1e-5, &eps, &order, &err),
                     FEDC_ERR_RANGE);
    assert_int_equal(fedc_rdp_epsilon(orders, r3, 0, 1e-5, &eps, &order, &err), FEDC_ERR_INVALID);
}

static void test_eps_opacus(void **state)
{
    (void)state;
    /* Opacus RDPAccountant: sigma 1.5, q 0.04, 2250 steps, delta 1e-5, DEFAULT_ALPHAS. */
    size_t n;
    const double *o = named("opacus", &n);
    double eps, order;
    assert_int_equal(fedc_dp_epsilon(0.04, 1.5, 2250, 1e-5, o, n, &eps, &order, NULL), FEDC_OK);
    assert_close(eps, 7.32911117143, 1e-10, 0);
}

static void test_eps_opacus_composition(void **state)
{
    (void)state;
    /* (q 1e-5, sigma 1, 10 steps) + (q 1e-4, sigma 3, 4 steps), orders 2..32, delta 1e-5
     * -> (0.336, order 23). */
    double orders[31];
    for (int i = 0; i < 31; i++) orders[i] = 2 + i;
    fedc_err err;
    fedc_accountant *acc = fedc_accountant_create(orders, 31, &err);
    assert_non_null(acc);
    assert_int_equal(fedc_accountant_add(acc, 1e-5, 1.0, 10), FEDC_OK);
    assert_int_equal(fedc_accountant_add(acc, 1e-4, 3.0, 4), FEDC_OK);
    double eps, order;
    assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &eps, &order), FEDC_OK);
    assert_close(eps, 0.336, 0, 5e-4);
    assert_true(order == 23);
    /* The same by hand: RDP adds up over phases. */
    double r1[31], r2[31], sum[31], e2, o2;
    assert_int_equal(fedc_rdp_compute(1e-5, 1.0, 10, orders, 31, r1, NULL), FEDC_OK);
    assert_int_equal(fedc_rdp_compute(1e-4, 3.0, 4, orders, 31, r2, NULL), FEDC_OK);
    for (int i = 0; i < 31; i++) sum[i] = r1[i] + r2[i];
    assert_int_equal(fedc_rdp_epsilon(orders, sum, 31, 1e-5, &e2, &o2, NULL), FEDC_OK);
    assert_close(eps, e2, 1e-14, 0);
    assert_int_equal(fedc_accountant_phase_count(acc), 2);
    assert_int_equal(fedc_accountant_steps(acc), 14);
    fedc_accountant_destroy(acc);
}

static void test_eps_tf_dp_sgd(void **state)
{
    (void)state;
    /* TF compute_dp_sgd_privacy: q = batch / n, steps = ceil(epochs n / batch), TF's orders. */
    size_t n;
    const double *o = named("tf", &n);
    double eps, order;
    uint64_t steps = (uint64_t)ceil(15.0 * 60000 / 150);
    assert_int_equal(steps, 6000);
    assert_int_equal(fedc_dp_epsilon(150.0 / 60000, 1.3, steps, 1e-5, o, n, &eps, &order, NULL),
                     FEDC_OK);
    assert_close(eps, 0.7242234026109595, 1e-9, 0);
    assert_true(order == 19);
    steps = (uint64_t)ceil(30.0 * 100000 / 100);
    assert_int_equal(fedc_dp_epsilon(100.0 / 100000, 1.0, steps, 1e-7, o, n, &eps, &order, NULL),
                     FEDC_OK);
    assert_close(eps, 1.4154988495444842, 1e-9, 0);
    assert_true(order == 13);
}

/* --- the accountant ------------------------------------------------------------------------- */

static void test_accountant_per_round_equals_batch(void **state)
{
    (void)state;
    /* 2250 calls of add(q, z, 1) report exactly (bit for bit) what one 2250-step query does:
     * the round engine's eps equals `fedc dp-budget`'s. */
    size_t n;
    const double *o = named("opacus", &n);
    fedc_accountant *acc = fedc_accountant_create(o, n, NULL);
    assert_non_null(acc);
    double eps = -1, order;
    assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &eps, &order), FEDC_OK);
    assert_true(eps == 0.0); /* nothing spent yet */
    double prev = 0;
    for (int t = 0; t < 2250; t++) {
        assert_int_equal(fedc_accountant_add(acc, 0.04, 1.5, 1), FEDC_OK);
        if (t % 250 == 0) { /* eps grows round after round */
            assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &eps, &order), FEDC_OK);
            assert_true(eps > prev);
            prev = eps;
        }
    }
    double want, want_order;
    assert_int_equal(fedc_dp_epsilon(0.04, 1.5, 2250, 1e-5, o, n, &want, &want_order, NULL),
                     FEDC_OK);
    assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &eps, &order), FEDC_OK);
    assert_true(eps == want && order == want_order);
    assert_int_equal(fedc_accountant_phase_count(acc), 1);
    assert_int_equal(fedc_accountant_steps(acc), 2250);
    double q, z;
    uint64_t steps;
    fedc_accountant_phase(acc, 0, &q, &z, &steps);
    assert_true(q == 0.04 && z == 1.5 && steps == 2250);
    fedc_accountant_destroy(acc);
}

static void test_accountant_many_pairs(void **state)
{
    (void)state;
    /* More distinct (q, z) pairs than the cache holds, interleaved: the composed RDP equals
     * the sum of the phases' RDP computed directly. */
    double orders[6] = {1.5, 2, 3.5, 8, 32, 128};
    fedc_accountant *acc = fedc_accountant_create(orders, 6, NULL);
    assert_non_null(acc);
    double want[6] = {0};
    for (int t = 0; t < 60; t++) {
        double q = 0.001 * (1 + t % 23), z = 0.8 + 0.1 * (t % 7);
        uint64_t s = 1 + (uint64_t)(t % 5);
        assert_int_equal(fedc_accountant_add(acc, q, z, s), FEDC_OK);
        double r[6];
        assert_int_equal(fedc_rdp_compute(q, z, s, orders, 6, r, NULL), FEDC_OK);
        for (int k = 0; k < 6; k++) want[k] += r[k];
    }
    double got[6];
    fedc_accountant_rdp(acc, got);
    for (int k = 0; k < 6; k++) assert_close(got[k], want[k], 1e-12, 0);
    assert_int_equal(fedc_accountant_phase_count(acc), 60);
    fedc_accountant_destroy(acc);
}

static void test_accountant_epsilon_if(void **state)
{
    (void)state;
    size_t n;
    const double *o = named("tf", &n);
    fedc_accountant *acc = fedc_accountant_create(o, n, NULL);
    assert_non_null(acc);
    assert_int_equal(fedc_accountant_add(acc, 0.01, 1.1, 100), FEDC_OK);
    double e_if, o_if, e_now, e_after, o_after;
    /* Same pair (cached) and a new pair: the prediction equals the eps after adding. */
    assert_int_equal(fedc_accountant_epsilon_if(acc, 0.01, 1.1, 50, 1e-5, &e_if, &o_if), FEDC_OK);
    assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &e_now, NULL), FEDC_OK);
    assert_true(e_if > e_now);
    assert_int_equal(fedc_accountant_steps(acc), 100); /* nothing recorded */
    assert_int_equal(fedc_accountant_add(acc, 0.01, 1.1, 50), FEDC_OK);
    assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &e_after, &o_after), FEDC_OK);
    assert_true(e_if == e_after && o_if == o_after);
    assert_int_equal(fedc_accountant_epsilon_if(acc, 0.02, 0.9, 30, 1e-5, &e_if, &o_if), FEDC_OK);
    assert_int_equal(fedc_accountant_add(acc, 0.02, 0.9, 30), FEDC_OK);
    assert_int_equal(fedc_accountant_epsilon(acc, 1e-5, &e_after, &o_after), FEDC_OK);
    assert_close(e_if, e_after, 1e-14, 0);
    assert_int_equal(fedc_accountant_phase_count(acc), 2);
    fedc_accountant_destroy(acc);
}

static void test_accountant_errors(void **state)
{
    (void)state;
    fedc_err err;
    fedc_err_clear(&err);
    double bad[2] = {2, 0.5};
    assert_null(fedc_accountant_create(bad, 2, &err));
    assert_int_equal(err.code, FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "order #2"));
    double inf_order[1] = {INFINITY};
    assert_null(fedc_accountant_create(inf_order, 1, &err));
    assert_null(fedc_accountant_create(bad, 0, &err));
    assert_int_equal(err.code, FEDC_ERR_INVALID);

    double orders[2] = {2, 4};
    fedc_accountant *acc = fedc_accountant_create(orders, 2, &err);
    assert_non_null(acc);
    assert_int_equal(fedc_accountant_add(acc, 1.5, 1.0, 1), FEDC_ERR_RANGE);
    assert_non_null(strstr(fedc_accountant_errmsg(acc), "q = 1.5"));
    assert_int_equal(fedc_accountant_add(acc, 0.1, 0.0, 1), FEDC_ERR_RANGE);
    assert_non_null(strstr(fedc_accountant_errmsg(acc), "noise multiplier"));
    assert_int_equal(fedc_accountant_add(acc, 0.1, NAN, 1), FEDC_ERR_RANGE);
    assert_int_equal(fedc_accountant_steps(acc), 0); /* nothing recorded on error */
    double eps;
    assert_int_equal(fedc_accountant_epsilon(acc, 2.0, &eps, NULL), FEDC_ERR_RANGE);
    assert_non_null(strstr(fedc_accountant_errmsg(acc), "delta"));
    fedc_accountant_destroy(acc);
    fedc_accountant_destroy(NULL);

    double r;
    assert_int_equal(fedc_rdp_compute(-0.1, 1, 1, orders, 1, &r, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_rdp_compute(0.1, -1, 1, orders, 1, &r, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedc_rdp_compute(0.1, INFINITY, 1, orders, 1, &r, &err), FEDC_ERR_RANGE);
    double one = 1.0;
    assert_int_equal(fedc_rdp_compute(0.1, 1, 1, &one, 1, &r, &err), FEDC_ERR_RANGE);
}

static void test_accountant_alloc_failures(void **state)
{
    (void)state;
    /* Every allocation failure ends in a clean error and no leak. */
    size_t n;
    const double *o = named("tf", &n);
    fedc_alloc_stats before, after;
    fedc_alloc_get_stats(&before);
    int failures_seen = 0;
    for (uint64_t k = 1; k < 40; k++) {
        fedc_alloc_fail_after(k, 0);
        fedc_err err;
        fedc_err_clear(&err);
        fedc_accountant *acc = fedc_accountant_create(o, n, &err);
        fedc_status st = FEDC_OK;
        if (!acc) {
            assert_int_equal(err.code, FEDC_ERR_NOMEM);
            failures_seen++;
        } else {
            for (int t = 0; t < 20 && st == FEDC_OK; t++)
                st = fedc_accountant_add(acc, 0.01 * (1 + t % 3), 1.0, 1);
            double eps;
            if (st == FEDC_OK) st = fedc_accountant_epsilon(acc, 1e-5, &eps, NULL);
            if (st != FEDC_OK) {
                assert_int_equal(st, FEDC_ERR_NOMEM);
                failures_seen++;
            }
            fedc_accountant_destroy(acc);
        }
        fedc_alloc_fail_after(0, 0);
    }
    assert_true(failures_seen > 5);
    fedc_alloc_get_stats(&after);
    assert_int_equal(after.current_bytes, before.current_bytes);
}

/* --- the inverse ---------------------------------------------------------------------------- */

static void test_noise_multiplier_inverse(void **state)
{
    (void)state;
    size_t n;
    const double *o = named("tf", &n);
    /* The TF case backwards: eps 0.72422... after 6000 steps at q = 0.0025 needs z = 1.3. */
    double z, e, order;
    assert_int_equal(fedc_dp_noise_multiplier(0.0025, 6000, 1e-5, 0.7242234026109595, o, n, &z,
                                              &e, &order, NULL),
                     FEDC_OK);
    assert_close(z, 1.3, 2e-6, 0);
    assert_true(e <= 0.7242234026109595);
    /* Documented tolerance: eps(z) <= target < eps(z (1 - 1e-6)). */
    const double targets[4] = {0.5, 1.0, 3.0, 8.0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(
            fedc_dp_noise_multiplier(0.01, 500, 1e-5, targets[i], o, n, &z, &e, &order, NULL),
            FEDC_OK);
        double e_z, e_lo;
        assert_int_equal(fedc_dp_epsilon(0.01, z, 500, 1e-5, o, n, &e_z, NULL, NULL), FEDC_OK);
        assert_int_equal(fedc_dp_epsilon(0.01, z * (1 - 1e-6), 500, 1e-5, o, n, &e_lo, NULL, NULL),
                         FEDC_OK);
        assert_true(e_z == e && e_z <= targets[i] && e_lo > targets[i]);
    }
    /* q = 1 (full participation) has the closed form RDP = T a / (2 z^2). */
    assert_int_equal(fedc_dp_noise_multiplier(1.0, 10, 1e-5, 2.0, o, n, &z, &e, NULL, NULL),
                     FEDC_OK);
    assert_true(e <= 2.0 && e > 1.99);

    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_dp_noise_multiplier(0, 10, 1e-5, 1, o, n, &z, NULL, NULL, &err),
                     FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_noise_multiplier(0.1, 10, 1e-5, 0, o, n, &z, NULL, NULL, &err),
                     FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_noise_multiplier(0.1, 0, 1e-5, 1, o, n, &z, NULL, NULL, &err),
                     FEDC_ERR_RANGE);
    assert_int_equal(fedc_dp_noise_multiplier(0.1, 10, 1.5, 1, o, n, &z, NULL, NULL, &err),
                     FEDC_ERR_RANGE);
}

/* --- order lists ---------------------------------------------------------------------------- */

static void test_orders_named(void **state)
{
    (void)state;
    size_t n;
    const double *tf = named("tf", &n);
    assert_int_equal(n, 72);
    assert_true(tf[0] == 1.25 && tf[9] == 4.5 && tf[10] == 5 && tf[68] == 63 && tf[69] == 128 &&
                tf[71] == 512);
    const double *op = named("opacus", &n);
    assert_int_equal(n, 151);
    for (int x = 1; x <= 99; x++) assert_true(op[x - 1] == 1.0 + x / 10.0);
    for (int a = 12; a <= 63; a++) assert_true(op[99 + a - 12] == a);
    assert_null(fedc_rdp_orders_named("pld", &n));
    assert_int_equal(n, 0);
}

static void test_orders_parse(void **state)
{
    (void)state;
    double *o = NULL;
    size_t n = 0;
    fedc_err err;
    fedc_err_clear(&err);
    assert_int_equal(fedc_rdp_orders_parse("1.5, 2..5,64", &o, &n, &err), FEDC_OK);
    assert_int_equal(n, 6);
    const double want[6] = {1.5, 2, 3, 4, 5, 64};
    for (int i = 0; i < 6; i++) assert_true(o[i] == want[i]);
    fedc_free(o);
    assert_int_equal(fedc_rdp_orders_parse("opacus", &o, &n, &err), FEDC_OK);
    assert_int_equal(n, 151);
    fedc_free(o);

    const char *bad[] = {"", "2,,3", "abc", "1", "0.5,2", "5..2", "2.5..4", "2..x", "nan",
                         "inf", "2,200000", "1e999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = (double *)1;
        fedc_err_clear(&err);
        assert_int_equal(fedc_rdp_orders_parse(bad[i], &o, &n, &err), FEDC_ERR_CONFIG);
        assert_null(o);
        assert_non_null(strstr(err.msg, "order list"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rdp_special_cases),
        cmocka_unit_test(test_rdp_q01_z2),
        cmocka_unit_test(test_rdp_order_list),
        cmocka_unit_test(test_rdp_alpha2_closed_form),
        cmocka_unit_test(test_rdp_fractional_matches_integer),
        cmocka_unit_test(test_rdp_large_fractional_order),
        cmocka_unit_test(test_rdp_monotone),
        cmocka_unit_test(test_eps_constant_rdp),
        cmocka_unit_test(test_eps_guards),
        cmocka_unit_test(test_eps_opacus),
        cmocka_unit_test(test_eps_opacus_composition),
        cmocka_unit_test(test_eps_tf_dp_sgd),
        cmocka_unit_test(test_accountant_per_round_equals_batch),
        cmocka_unit_test(test_accountant_many_pairs),
        cmocka_unit_test(test_accountant_epsilon_if),
        cmocka_unit_test(test_accountant_errors),
        cmocka_unit_test(test_accountant_alloc_failures),
        cmocka_unit_test(test_noise_multiplier_inverse),
        cmocka_unit_test(test_orders_named),
        cmocka_unit_test(test_orders_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
