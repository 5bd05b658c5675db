/*
 * The RDP accountant of the sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019), computed
 * as TensorFlow Privacy's rdp_accountant and Opacus's accountants/analysis/rdp compute it, so
 * that fedc's eps equals theirs: integer orders by the binomial expansion of A_alpha in log
 * space, fractional orders by the two series with log-erfc, eps by the improved RDP-to-DP
 * conversion. Also the named order lists, the inverse (noise multiplier for a target eps) and
 * the accountant handle that composes phases for the round engine.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/privacy.h"

/* ---------------------------------------------------------------------------------------------
 * Log-space arithmetic
 * ------------------------------------------------------------------------------------------- */

/* log(exp(x) + exp(y)). */
static double log_add(double x, double y)
{
    double a = x < y ? x : y, b = x < y ? y : x;
    if (a == -INFINITY) return b;
    return log1p(exp(a - b)) + b;
}

/* log(exp(x) - exp(y)) into *out; -1 when the result would be negative (x < y). */
static int log_sub(double x, double y, double *out)
{
    if (x < y) return -1;
    if (y == -INFINITY) {
        *out = x;
    } else if (x == y) {
        *out = -INFINITY;
    } else {
        double d = x - y;
        /* expm1 overflows past ~709.78; log(expm1(d)) == d in double long before that. */
        *out = d > 700.0 ? x : log(expm1(d)) + y;
    }
    return 0;
}

/* log(erfc(x)), accurate where erfc(x) underflows: for x >= 25 the asymptotic expansion
 * erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6) + 105/(16x^8)),
 * whose log is the series below (TF Privacy's fallback); its error there is below 1e-14. */
static double log_erfc(double x)
{
    if (x < 25.0) return log(erfc(x));
    double x2 = x * x, r = 1.0 / x2;
    return -0.5 * log(M_PI) - log(x) - x2 - 0.5 * r + 0.625 * r * r -
           (37.0 / 24.0) * r * r * r + (353.0 / 64.0) * r * r * r * r;
}

/* ---------------------------------------------------------------------------------------------
 * log A_alpha
 * ------------------------------------------------------------------------------------------- */

/* Integer alpha: A = sum_{i=0}^{alpha} C(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 z^2)).
 * log C(alpha, i) is built incrementally (log C(a, i) = log C(a, i-1) + log(a-i+1) - log i):
 * exact enough (accumulated error < 1e-11 at alpha = 1e4) and thread-safe, unlike lgamma. */
static double log_a_int(double q, double z, uint64_t alpha)
{
    double lq = log(q), l1q = log1p(-q), two_z2 = 2.0 * z * z;
    double log_a = -INFINITY, log_coef = 0.0;
    for (uint64_t i = 0; i <= alpha; i++) {
        if (i > 0) log_coef += log((double)(alpha - i + 1)) - log((double)i);
        double di = (double)i;
        double s = log_coef + di * lq + (double)(alpha - i) * l1q + (di * di - di) / two_z2;
        log_a = log_add(log_a, s);
    }
    return log_a;
}

#define FRAC_MAX_TERMS 10000000

/* Fractional alpha: the two series of Mironov et al. 2019, Sec. 3.3, with the generalized
 * binomial coefficient C(alpha, i) (its sign alternates once i > alpha + 1). Stops when both
 * terms fall below exp(-30), as TF Privacy does, but not before i > alpha (see below).
 * Returns -1 on numerical failure. */
static int log_a_frac(double q, double z, double alpha, double *out)
{
    double lq = log(q), l1q = log1p(-q), two_z2 = 2.0 * z * z;
    double z0 = z * z * log(1.0 / q - 1.0) + 0.5;
    double sqrt2z = sqrt(2.0) * z, log_half = log(0.5);
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    double log_coef = 0.0; /* log |C(alpha, i)| */
    int sign = 1;          /* sign of C(alpha, i) */
    for (long i = 0;; i++) {
        if (i >= FRAC_MAX_TERMS) return -1;
        double di = (double)i;
        if (i > 0) {
            double f = alpha - di + 1.0; /* never 0: alpha is not an integer */
            log_coef += log(fabs(f)) - log(di);
            if (f < 0) sign = -sign;
        }
        double j = alpha - di;
        double log_t0 = log_coef + di * lq + j * l1q;
        double log_t1 = log_coef + j * lq + di * l1q;
        double log_e0 = log_half + log_erfc((di - z0) / sqrt2z);
        double log_e1 = log_half + log_erfc((z0 - j) / sqrt2z);
        double log_s0 = log_t0 + (di * di - di) / two_z2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / two_z2 + log_e1;
        if (sign > 0) {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            if (log_sub(log_a0, log_s0, &log_a0) != 0) return -1;
            if (log_sub(log_a1, log_s1, &log_a1) != 0) return -1;
        }
        if (isnan(log_s0) || isnan(log_s1)) return -1;
        /* TF Privacy stops at the first i whose terms are below exp(-30); with a large
         * alpha the first terms can be that small while the bulk lies near i = alpha q, so we
         * stop only past i = alpha, where both series are in their decreasing tails. */
        if (di > alpha && (log_s0 > log_s1 ? log_s0 : log_s1) < -30.0) break;
    }
    *out = log_add(log_a0, log_a1);
    return 0;
}

/* RDP of one step at one order; -1 on numerical failure. Arguments already validated. */
static int rdp_step(double q, double z, double alpha, double *out)
{
    if (q == 0.0) {
        *out = 0.0;
    } else if (q == 1.0) {
        *out = alpha / (2.0 * z * z);
    } else if (isinf(alpha)) {
        *out = INFINITY;
    } else if (alpha == floor(alpha)) {
        *out = log_a_int(q, z, (uint64_t)alpha) / (alpha - 1.0);
    } else {
        double log_a;
        if (log_a_frac(q, z, alpha, &log_a) != 0) return -1;
        *out = log_a / (alpha - 1.0);
    }
    /* RDP is >= 0; log-space rounding can leave a true value of ~1e-22 a hair below 0. */
    if (*out < 0.0) *out = 0.0;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------------------------- */

static fedc_status check_orders(const double *orders, size_t count, int allow_inf,
                                fedc_err *err)
{
    if (count == 0) return fedc_err_set(err, FEDC_ERR_INVALID, "the order list is empty");
    assert(orders);
    for (size_t k = 0; k < count; k++) {
        double a = orders[k];
        if (allow_inf && a == INFINITY) continue;
        if (!(a > 1.0) || !(a <= FEDC_RDP_MAX_ORDER))
            return fedc_err_set(err, FEDC_ERR_RANGE,
                                "RDP order #%zu is %g: orders must be > 1 and <= %g%s", k + 1, a,
                                FEDC_RDP_MAX_ORDER, allow_inf ? " (or inf)" : "");
    }
    return FEDC_OK;
}

static fedc_status check_qz(double q, double z, fedc_err *err)
{
    if (!(q >= 0.0 && q <= 1.0))
        return fedc_err_set(err, FEDC_ERR_RANGE, "sampling rate q = %g is outside [0, 1]", q);
    if (!(z > 0.0) || !isfinite(z))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "noise multiplier z = %g must be a finite number > 0", z);
    return FEDC_OK;
}

static fedc_status check_delta(double delta, fedc_err *err)
{
    if (!(delta > 0.0 && delta < 1.0))
        return fedc_err_set(err, FEDC_ERR_RANGE, "delta = %g is outside (0, 1)", delta);
    return FEDC_OK;
}

/* RDP of one step at every order, no validation. */
static fedc_status rdp_steps_unchecked(double q, double z, const double *orders, size_t count,
                                       double *rdp1, fedc_err *err)
{
    for (size_t k = 0; k < count; k++) {
        if (rdp_step(q, z, orders[k], &rdp1[k]) != 0)
            return fedc_err_set(err, FEDC_ERR_INTERNAL,
                                "RDP series failed numerically at q = %g, z = %g, order %g", q,
                                z, orders[k]);
    }
    return FEDC_OK;
}

/* r * steps, with 0 steps giving 0 even for an infinite r. */
static double times_steps(double r, uint64_t steps)
{
    return steps == 0 ? 0.0 : r * (double)steps;
}

/* ---------------------------------------------------------------------------------------------
 * Stateless API
 * ------------------------------------------------------------------------------------------- */

fedc_status fedc_rdp_compute(double q, double z, uint64_t steps, const double *orders,
                             size_t count, double *rdp, fedc_err *err)
{
    FEDC_TRY(check_qz(q, z, err));
    FEDC_TRY(check_orders(orders, count, 1, err));
    assert(rdp);
    FEDC_TRY(rdp_steps_unchecked(q, z, orders, count, rdp, err));
    for (size_t k = 0; k < count; k++) rdp[k] = times_steps(rdp[k], steps);
    return FEDC_OK;
}

/* The conversion itself, arguments validated. */
static void epsilon_unchecked(const double *orders, const double *rdp, size_t count,
                              double delta, double *eps, double *order)
{
    double best = INFINITY;
    size_t best_k = 0;
    for (size_t k = 0; k < count; k++) {
        double a = orders[k], r = rdp[k], e;
        if (delta * delta + expm1(-r) >= 0.0)
            e = 0.0; /* KL bound: delta <= sqrt(1 - exp(-KL)) and KL <= RDP(a) */
        else if (a > 1.01)
            e = r + log1p(-1.0 / a) - log(delta * a) / (a - 1.0);
        else
            e = INFINITY; /* the bound is unstable as a -> 1 (and useless there) */
        if (k == 0 || e < best) {
            best = e;
            best_k = k;
        }
    }
    *eps = best > 0.0 ? best : 0.0;
    if (order) *order = orders[best_k];
}

fedc_status fedc_rdp_epsilon(const double *orders, const double *rdp, size_t count, double delta,
                             double *eps, double *order, fedc_err *err)
{
    FEDC_TRY(check_delta(delta, err));
    FEDC_TRY(check_orders(orders, count, 0, err));
    assert(rdp && eps);
    for (size_t k = 0; k < count; k++)
        if (!(rdp[k] >= 0.0))
            return fedc_err_set(err, FEDC_ERR_RANGE, "RDP at order %g is %g: must be >= 0",
                                orders[k], rdp[k]);
    epsilon_unchecked(orders, rdp, count, delta, eps, order);
    return FEDC_OK;
}

fedc_status fedc_dp_epsilon(double q, double z, uint64_t steps, double delta,
                            const double *orders, size_t count, double *eps, double *order,
                            fedc_err *err)
{
    FEDC_TRY(check_delta(delta, err));
    FEDC_TRY(check_qz(q, z, err));
    FEDC_TRY(check_orders(orders, count, 0, err));
    double *rdp = fedc_malloc(count * sizeof *rdp);
    if (!rdp) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for %zu RDP orders", count);
    fedc_status st = fedc_rdp_compute(q, z, steps, orders, count, rdp, err);
    if (st == FEDC_OK) epsilon_unchecked(orders, rdp, count, delta, eps, order);
    fedc_free(rdp);
    return st;
}

/* eps(z) for the bisection: orders and the work array are the caller's. */
static fedc_status eps_at(double q, double z, uint64_t steps, double delta, const double *orders,
                          size_t count, double *work, double *eps, double *order, fedc_err *err)
{
    FEDC_TRY(rdp_steps_unchecked(q, z, orders, count, work, err));
    for (size_t k = 0; k < count; k++) work[k] = times_steps(work[k], steps);
    epsilon_unchecked(orders, work, count, delta, eps, order);
    return FEDC_OK;
}

#define NM_REL_TOL 1e-6
#define NM_Z_MAX 1e8
#define NM_Z_MIN 1e-6

fedc_status fedc_dp_noise_multiplier(double q, uint64_t steps, double delta, double target_eps,
                                     const double *orders, size_t count, double *z,
                                     double *eps_at_z, double *order, fedc_err *err)
{
    if (!(q > 0.0 && q <= 1.0))
        return fedc_err_set(err, FEDC_ERR_RANGE, "sampling rate q = %g is outside (0, 1]", q);
    FEDC_TRY(check_delta(delta, err));
    if (!(target_eps > 0.0) || !isfinite(target_eps))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "target epsilon %g must be a finite number > 0", target_eps);
    if (steps == 0)
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "steps must be >= 1 to look for a noise multiplier");
    FEDC_TRY(check_orders(orders, count, 0, err));
    assert(z);
    double *work = fedc_malloc(count * sizeof *work);
    if (!work) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for %zu orders", count);

    /* Invariant once bracketed: eps(lo) > target >= eps(hi); eps is non-increasing in z. */
    fedc_status st;
    double lo = 0.0, hi = 1.0, e = 0.0, e_hi = 0.0, o_hi = 0.0, o = 0.0;
    if ((st = eps_at(q, hi, steps, delta, orders, count, work, &e, &o, err)) != FEDC_OK) goto out;
    if (e <= target_eps) {
        e_hi = e, o_hi = o;
        for (lo = 0.5;; lo *= 0.5) {
            if (lo < NM_Z_MIN) {
                st = fedc_err_set(err, FEDC_ERR_RANGE,
                                  "target epsilon %g is met by every noise multiplier >= %g",
                                  target_eps, NM_Z_MIN);
                goto out;
            }
            if ((st = eps_at(q, lo, steps, delta, orders, count, work, &e, &o, err)) != FEDC_OK)
                goto out;
            if (e > target_eps) break;
            hi = lo, e_hi = e, o_hi = o;
        }
    } else {
        for (;;) {
            lo = hi;
            hi *= 2.0;
            if (hi > NM_Z_MAX) {
                st = fedc_err_set(err, FEDC_ERR_RANGE,
                                  "no noise multiplier <= %g reaches epsilon %g (q = %g, "
                                  "%llu steps, delta = %g)",
                                  NM_Z_MAX, target_eps, q, (unsigned long long)steps, delta);
                goto out;
            }
            if ((st = eps_at(q, hi, steps, delta, orders, count, work, &e, &o, err)) != FEDC_OK)
                goto out;
            if (e <= target_eps) {
                e_hi = e, o_hi = o;
                break;
            }
        }
    }
    while (hi - lo > NM_REL_TOL * hi) {
        double mid = 0.5 * (lo + hi);
        if ((st = eps_at(q, mid, steps, delta, orders, count, work, &e, &o, err)) != FEDC_OK)
            goto out;
        if (e <= target_eps)
            hi = mid, e_hi = e, o_hi = o;
        else
            lo = mid;
    }
    *z = hi;
    if (eps_at_z) *eps_at_z = e_hi;
    if (order) *order = o_hi;
out:
    fedc_free(work);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Order lists
 * ------------------------------------------------------------------------------------------- */

static const double orders_tf[] = {
    1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54,
    55, 56, 57, 58, 59, 60, 61, 62, 63, 128, 256, 512,
};

/* 1 + x / 10 computed in double, as Python computes Opacus's list (bit-identical orders). */
#define OP(x) (1.0 + (double)(x) / 10.0)
#define OP10(t) OP(t + 0), OP(t + 1), OP(t + 2), OP(t + 3), OP(t + 4), OP(t + 5), OP(t + 6), \
    OP(t + 7), OP(t + 8), OP(t + 9)
static const double orders_opacus[] = {
    OP(1), OP(2), OP(3), OP(4), OP(5), OP(6), OP(7), OP(8), OP(9),
    OP10(10), OP10(20), OP10(30), OP10(40), OP10(50), OP10(60), OP10(70), OP10(80), OP10(90),
    12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63,
};
#undef OP10
#undef OP

_Static_assert(sizeof orders_tf / sizeof orders_tf[0] == 72, "TF Privacy's list has 72 orders");
_Static_assert(sizeof orders_opacus / sizeof orders_opacus[0] == 151,
               "Opacus's DEFAULT_ALPHAS has 151 orders");

const double *fedc_rdp_orders_named(const char *name, size_t *count)
{
    assert(name && count);
    if (strcmp(name, "tf") == 0) {
        *count = sizeof orders_tf / sizeof orders_tf[0];
        return orders_tf;
    }
    if (strcmp(name, "opacus") == 0) {
        *count = sizeof orders_opacus / sizeof orders_opacus[0];
        return orders_opacus;
    }
    *count = 0;
    return NULL;
}

#define ORDERS_MAX_COUNT 100000

/* Parses one number of an order list: the whole token, finite. */
static int parse_number(const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end != '\0' || errno != 0 || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static fedc_status orders_push(double **arr, size_t *n, size_t *cap, double v, fedc_err *err)
{
    if (*n == ORDERS_MAX_COUNT)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "order list: more than %d orders",
                            ORDERS_MAX_COUNT);
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        double *p = fedc_realloc(*arr, nc * sizeof *p);
        if (!p) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the order list");
        *arr = p;
        *cap = nc;
    }
    (*arr)[(*n)++] = v;
    return FEDC_OK;
}

static fedc_status check_one_order(double v, const char *tok, size_t len, fedc_err *err)
{
    if (!(v > 1.0) || v > FEDC_RDP_MAX_ORDER)
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "order list: '%.*s': orders must be > 1 and <= %g", (int)len, tok,
                            FEDC_RDP_MAX_ORDER);
    return FEDC_OK;
}

fedc_status fedc_rdp_orders_parse(const char *spec, double **orders, size_t *count,
                                  fedc_err *err)
{
    assert(spec && orders && count);
    *orders = NULL;
    *count = 0;
    size_t nn;
    const double *named = fedc_rdp_orders_named(spec, &nn);
    if (named) {
        double *copy = fedc_malloc(nn * sizeof *copy);
        if (!copy) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for the order list");
        memcpy(copy, named, nn * sizeof *copy);
        *orders = copy;
        *count = nn;
        return FEDC_OK;
    }
    double *arr = NULL;
    size_t n = 0, cap = 0;
    fedc_status st = FEDC_OK;
    const char *p = spec;
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *tok = p, *tend = comma ? comma : p + strlen(p);
        while (tok < tend && isspace((unsigned char)*tok)) tok++;
        while (tend > tok && isspace((unsigned char)tend[-1])) tend--;
        size_t len = (size_t)(tend - tok);
        if (len == 0) {
            st = fedc_err_set(err, FEDC_ERR_CONFIG,
                              "order list '%s': empty entry (expected tf, opacus, or numbers "
                              "and ranges like 1.5,2..32,64)",
                              spec);
            goto fail;
        }
        const char *dots = NULL;
        for (const char *c = tok; c + 1 < tend; c++)
            if (c[0] == '.' && c[1] == '.') {
                dots = c;
                break;
            }
        if (dots) {
            double lo, hi;
            if (parse_number(tok, (size_t)(dots - tok), &lo) != 0 ||
                parse_number(dots + 2, (size_t)(tend - dots - 2), &hi) != 0 ||
                lo != floor(lo) || hi != floor(hi) || lo > hi) {
                st = fedc_err_set(err, FEDC_ERR_CONFIG,
                                  "order list: bad range '%.*s' (expected LO..HI with integers "
                                  "LO <= HI)",
                                  (int)len, tok);
                goto fail;
            }
            if ((st = check_one_order(lo, tok, len, err)) != FEDC_OK) goto fail;
            if ((st = check_one_order(hi, tok, len, err)) != FEDC_OK) goto fail;
            for (double v = lo; v <= hi; v += 1.0)
                if ((st = orders_push(&arr, &n, &cap, v, err)) != FEDC_OK) goto fail;
        } else {
            double v;
            if (parse_number(tok, len, &v) != 0) {
                st = fedc_err_set(err, FEDC_ERR_CONFIG,
                                  "order list: '%.*s' is not a number (expected tf, opacus, or "
                                  "numbers and ranges like 1.5,2..32,64)",
                                  (int)len, tok);
                goto fail;
            }
            if ((st = check_one_order(v, tok, len, err)) != FEDC_OK) goto fail;
            if ((st = orders_push(&arr, &n, &cap, v, err)) != FEDC_OK) goto fail;
        }
        if (!comma) break;
        p = comma + 1;
    }
    *orders = arr;
    *count = n;
    return FEDC_OK;
fail:
    fedc_free(arr);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * The accountant
 * ------------------------------------------------------------------------------------------- */

/* Distinct (q, z) pairs kept with their one-step RDP; older pairs fold into `base`. */
#define ACC_MAX_PAIRS 16

typedef struct acc_pair {
    double q, z;
    uint64_t steps;
    double *rdp1; /* RDP of one step at each order */
} acc_pair;

typedef struct acc_phase {
    double q, z;
    uint64_t steps;
} acc_phase;

struct fedc_accountant {
    size_t n;
    double *orders;
    double *base; /* composed RDP of pairs evicted from the cache */
    acc_pair pairs[ACC_MAX_PAIRS];
    size_t npairs;
    acc_phase *phases;
    size_t nphases, phases_cap;
    uint64_t total_steps;
    fedc_err err;
};

fedc_accountant *fedc_accountant_create(const double *orders, size_t count, fedc_err *err)
{
    if (check_orders(orders, count, 0, err) != FEDC_OK) return NULL;
    fedc_accountant *acc = fedc_calloc(1, sizeof *acc);
    if (!acc) goto nomem;
    acc->n = count;
    acc->orders = fedc_malloc(count * sizeof *acc->orders);
    acc->base = fedc_calloc(count, sizeof *acc->base);
    if (!acc->orders || !acc->base) goto nomem;
    memcpy(acc->orders, orders, count * sizeof *acc->orders);
    return acc;
nomem:
    fedc_accountant_destroy(acc);
    fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for an accountant over %zu orders", count);
    return NULL;
}

void fedc_accountant_destroy(fedc_accountant *acc)
{
    if (!acc) return;
    for (size_t i = 0; i < acc->npairs; i++) fedc_free(acc->pairs[i].rdp1);
    fedc_free(acc->phases);
    fedc_free(acc->base);
    fedc_free(acc->orders);
    fedc_free(acc);
}

const char *fedc_accountant_errmsg(const fedc_accountant *acc)
{
    assert(acc);
    return acc->err.msg;
}

static acc_pair *find_pair(fedc_accountant *acc, double q, double z)
{
    for (size_t i = 0; i < acc->npairs; i++)
        if (acc->pairs[i].q == q && acc->pairs[i].z == z) return &acc->pairs[i];
    return NULL;
}

/* The composed RDP into out, plus `extra_steps` at (q, z) (extra_rdp1: its one-step RDP, or
 * NULL when extra_steps is 0 or (q, z) is a cached pair, whose steps are then increased). */
static void compose(const fedc_accountant *acc, double q, double z, uint64_t extra_steps,
                    const double *extra_rdp1, double *out)
{
    for (size_t k = 0; k < acc->n; k++) out[k] = acc->base[k];
    int merged = 0;
    for (size_t i = 0; i < acc->npairs; i++) {
        const acc_pair *p = &acc->pairs[i];
        uint64_t s = p->steps;
        if (extra_steps && !extra_rdp1 && p->q == q && p->z == z) {
            s += extra_steps;
            merged = 1;
        }
        for (size_t k = 0; k < acc->n; k++) out[k] += times_steps(p->rdp1[k], s);
    }
    if (extra_steps && extra_rdp1)
        for (size_t k = 0; k < acc->n; k++) out[k] += times_steps(extra_rdp1[k], extra_steps);
    assert(!extra_steps || extra_rdp1 || merged);
    (void)merged;
}

fedc_status fedc_accountant_add(fedc_accountant *acc, double q, double z, uint64_t steps)
{
    assert(acc);
    fedc_err_clear(&acc->err);
    FEDC_TRY(check_qz(q, z, &acc->err));
    if (steps == 0) return FEDC_OK;

    /* Room for the phase first, so that a failure records nothing. */
    int merge_phase = acc->nphases > 0 && acc->phases[acc->nphases - 1].q == q &&
                      acc->phases[acc->nphases - 1].z == z;
    if (!merge_phase && acc->nphases == acc->phases_cap) {
        size_t nc = acc->phases_cap ? acc->phases_cap * 2 : 8;
        acc_phase *ph = fedc_realloc(acc->phases, nc * sizeof *ph);
        if (!ph) return fedc_err_set(&acc->err, FEDC_ERR_NOMEM, "out of memory for phases");
        acc->phases = ph;
        acc->phases_cap = nc;
    }
    acc_pair *p = find_pair(acc, q, z);
    if (!p) {
        double *rdp1 = fedc_malloc(acc->n * sizeof *rdp1);
        if (!rdp1) return fedc_err_set(&acc->err, FEDC_ERR_NOMEM, "out of memory for RDP");
        fedc_status st = rdp_steps_unchecked(q, z, acc->orders, acc->n, rdp1, &acc->err);
        if (st != FEDC_OK) {
            fedc_free(rdp1);
            return st;
        }
        if (acc->npairs == ACC_MAX_PAIRS) {
            /* Fold the oldest pair into base. */
            acc_pair *old = &acc->pairs[0];
            for (size_t k = 0; k < acc->n; k++)
                acc->base[k] += times_steps(old->rdp1[k], old->steps);
            fedc_free(old->rdp1);
            memmove(&acc->pairs[0], &acc->pairs[1], (ACC_MAX_PAIRS - 1) * sizeof acc->pairs[0]);
            acc->npairs--;
        }
        p = &acc->pairs[acc->npairs++];
        p->q = q;
        p->z = z;
        p->steps = 0;
        p->rdp1 = rdp1;
    }
    p->steps += steps;
    if (merge_phase) {
        acc->phases[acc->nphases - 1].steps += steps;
    } else {
        acc->phases[acc->nphases++] = (acc_phase){q, z, steps};
    }
    acc->total_steps += steps;
    return FEDC_OK;
}

fedc_status fedc_accountant_epsilon(fedc_accountant *acc, double delta, double *eps,
                                    double *order)
{
    return fedc_accountant_epsilon_if(acc, 0.0, 1.0, 0, delta, eps, order);
}

fedc_status fedc_accountant_epsilon_if(fedc_accountant *acc, double q, double z, uint64_t steps,
                                       double delta, double *eps, double *order)
{
    assert(acc && eps);
    fedc_err_clear(&acc->err);
    FEDC_TRY(check_delta(delta, &acc->err));
    FEDC_TRY(check_qz(q, z, &acc->err));
    double *rdp = fedc_malloc(2 * acc->n * sizeof *rdp);
    if (!rdp) return fedc_err_set(&acc->err, FEDC_ERR_NOMEM, "out of memory for RDP");
    double *extra = NULL;
    fedc_status st = FEDC_OK;
    if (steps > 0 && !find_pair(acc, q, z)) {
        extra = rdp + acc->n;
        st = rdp_steps_unchecked(q, z, acc->orders, acc->n, extra, &acc->err);
    }
    if (st == FEDC_OK) {
        compose(acc, q, z, steps, extra, rdp);
        epsilon_unchecked(acc->orders, rdp, acc->n, delta, eps, order);
    }
    fedc_free(rdp);
    return st;
}

size_t fedc_accountant_order_count(const fedc_accountant *acc)
{
    assert(acc);
    return acc->n;
}

const double *fedc_accountant_orders(const fedc_accountant *acc)
{
    assert(acc);
    return acc->orders;
}

void fedc_accountant_rdp(const fedc_accountant *acc, double *rdp)
{
    assert(acc && rdp);
    compose(acc, 0.0, 1.0, 0, NULL, rdp);
}

uint64_t fedc_accountant_steps(const fedc_accountant *acc)
{
    assert(acc);
    return acc->total_steps;
}

size_t fedc_accountant_phase_count(const fedc_accountant *acc)
{
    assert(acc);
    return acc->nphases;
}

void fedc_accountant_phase(const fedc_accountant *acc, size_t i, double *q, double *z,
                           uint64_t *steps)
{
    assert(acc && i < acc->nphases);
    if (q) *q = acc->phases[i].q;
    if (z) *z = acc->phases[i].z;
    if (steps) *steps = acc->phases[i].steps;
}
