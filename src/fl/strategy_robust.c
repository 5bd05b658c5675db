/*
 * The robust strategies: they need every update of the round at once, so the framework holds
 * copies (at most fedc_strategy_max_held, bounded by config) and hands them over sorted by client
 * id. Each rule is translation invariant, so it is applied to the updates (client - global) and
 * the result added to the global model, which is what Flower computes on the client models.
 *
 *   fedmedian      coordinate-wise median                       (Yin et al. 2018)
 *   fedtrimmedavg  coordinate-wise mean after cutting beta*K at each end
 *   krum           the update with the smallest sum of squared distances to its K-f-2 nearest
 *   multikrum      the m best Krum scores, averaged weighted by examples (Blanchard et al. 2017)
 *   bulyan         theta = K-2f picks by iterated Krum, then per coordinate the mean of the
 *                  beta = theta-2f values closest to the median (El Mhamdi et al. 2018)
 *
 * Ties are broken by client id (lower first), and every sum runs in a fixed order (sorted values,
 * or client id), so results never depend on arrival order.
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fl/strategy_internal.h"

#define TILE 256 /* coordinates transposed at a time */

/* ---- per-coordinate helpers ---- */

static int float_cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void sort_floats(float *v, size_t k)
{
    if (k > 32) {
        qsort(v, k, sizeof *v, float_cmp);
        return;
    }
    for (size_t i = 1; i < k; i++) {
        float x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
}

/* np.median of sorted v[0..k-1]: the middle value, or the mean of the two middle ones. */
static double sorted_median(const float *v, size_t k)
{
    return k % 2 ? (double)v[k / 2] : ((double)v[k / 2 - 1] + (double)v[k / 2]) / 2;
}

/* The coordinate-wise rule, applied to `count` updates (rows) over all coordinates. */
typedef float (*coord_rule)(float *sorted, size_t count, const void *param);

/* For each coordinate, gathers the rows' values (transposed in tiles for locality), sorts them
 * and writes rule(sorted) to out. */
static fedc_status coordinatewise(size_t n, const float *const *rows, size_t count,
                                  coord_rule rule, const void *param, float *out, fedc_err *err)
{
    float *buf = fedc_malloc(TILE * count * sizeof(float));
    if (!buf) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory (%zu updates)", count);
    for (size_t i0 = 0; i0 < n; i0 += TILE) {
        size_t t_end = n - i0 < TILE ? n - i0 : TILE;
        for (size_t k = 0; k < count; k++) {
            const float *r = rows[k] + i0;
            for (size_t t = 0; t < t_end; t++) buf[t * count + k] = r[t];
        }
        for (size_t t = 0; t < t_end; t++) {
            float *col = buf + t * count;
            sort_floats(col, count);
            out[i0 + t] = rule(col, count, param);
        }
    }
    fedc_free(buf);
    return FEDC_OK;
}

/* Rows (held updates) of the round, in client-id order. */
static const float **round_rows(fedc_strategy *s, fedc_err *err)
{
    const float **rows = fedc_malloc(s->nrecs * sizeof *rows);
    if (!rows) {
        fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (size_t k = 0; k < s->nrecs; k++) rows[k] = s->recs[k].update;
    return rows;
}

/* ---- fedmedian ---- */

static float median_rule(float *v, size_t k, const void *param)
{
    (void)param;
    return (float)sorted_median(v, k);
}

static fedc_status fedmedian_aggregate(fedc_strategy *s, void *st, float *delta,
                                       fedc_round_agg *info, fedc_err *err)
{
    (void)st;
    (void)info;
    const float **rows = round_rows(s, err);
    if (!rows) return FEDC_ERR_NOMEM;
    fedc_status rc = coordinatewise(s->n, rows, s->nrecs, median_rule, NULL, delta, err);
    fedc_free(rows);
    return rc;
}

const fedci_strategy_ops fedci_strategy_fedmedian = {
    .name = "fedmedian",
    .aggregate = fedmedian_aggregate,
};

/* ---- fedtrimmedavg ---- */

typedef struct trimmed_state {
    double beta;
} trimmed_state;

static fedc_status trimmed_init(fedc_strategy *s, void *state, const fedc_config *cfg,
                                fedc_err *err)
{
    (void)s;
    (void)err;
    ((trimmed_state *)state)->beta = fedc_config_double(cfg, "strategy.trim_beta");
    return FEDC_OK;
}

static float trimmed_rule(float *v, size_t k, const void *param)
{
    size_t cut = *(const size_t *)param;
    double sum = 0;
    for (size_t i = cut; i < k - cut; i++) sum += v[i];
    return (float)(sum / (double)(k - 2 * cut));
}

static fedc_status trimmed_aggregate(fedc_strategy *s, void *state, float *delta,
                                     fedc_round_agg *info, fedc_err *err)
{
    trimmed_state *st = state;
    /* scipy.stats.trim_mean / Flower: int(beta * K) cut at each end; beta < 0.5 keeps >= 1. */
    size_t cut = (size_t)(st->beta * (double)s->nrecs);
    assert(2 * cut < s->nrecs);
    info->selected = s->nrecs - 2 * cut;
    const float **rows = round_rows(s, err);
    if (!rows) return FEDC_ERR_NOMEM;
    fedc_status rc = coordinatewise(s->n, rows, s->nrecs, trimmed_rule, &cut, delta, err);
    fedc_free(rows);
    return rc;
}

const fedci_strategy_ops fedci_strategy_fedtrimmedavg = {
    .name = "fedtrimmedavg",
    .state_size = sizeof(trimmed_state),
    .init = trimmed_init,
    .aggregate = trimmed_aggregate,
};

/* ---- krum, multikrum, bulyan ---- */

typedef struct krum_state {
    size_t f;     /* strategy.num_malicious */
    size_t m;     /* multikrum: strategy.multikrum_m (0 = K - f); krum: 1 */
    int multi;
    int bulyan;
} krum_state;

static fedc_status krum_init_common(fedc_strategy *s, krum_state *st, const fedc_config *cfg,
                                    fedc_err *err)
{
    st->f = (size_t)fedc_config_int(cfg, "strategy.num_malicious");
    const size_t K = s->max_held;
    if (st->bulyan) {
        if (K < 4 * st->f + 3)
            return fedc_err_set(err, FEDC_ERR_CONFIG,
                                "%s: [strategy] num_malicious: bulyan with f = %zu needs at "
                                "least 4f+3 = %zu updates per round, but a round holds at most "
                                "%zu (clients.per_round / strategy.max_updates)",
                                fedc_config_origin(cfg, "strategy.num_malicious"), st->f,
                                4 * st->f + 3, K);
        return FEDC_OK;
    }
    if (K < 2 * st->f + 3)
        fedc_log(FEDC_LOG_WARN, "strategy",
                 "%s with f = %zu: rounds of at most %zu updates are below 2f+3 = %zu; Krum's "
                 "guarantee needs more clients",
                 s->ops->name, st->f, K, 2 * st->f + 3);
    if (st->multi) {
        st->m = (size_t)fedc_config_int(cfg, "strategy.multikrum_m");
        if (st->m > K)
            return fedc_err_set(err, FEDC_ERR_CONFIG,
                                "%s: [strategy] multikrum_m = %zu exceeds the updates a round "
                                "holds (%zu)",
                                fedc_config_origin(cfg, "strategy.multikrum_m"), st->m, K);
    } else {
        st->m = 1;
    }
    return FEDC_OK;
}

static fedc_status krum_init(fedc_strategy *s, void *st, const fedc_config *cfg, fedc_err *err)
{
    return krum_init_common(s, st, cfg, err);
}

static fedc_status multikrum_init(fedc_strategy *s, void *st, const fedc_config *cfg,
                                  fedc_err *err)
{
    ((krum_state *)st)->multi = 1;
    return krum_init_common(s, st, cfg, err);
}

static fedc_status bulyan_init(fedc_strategy *s, void *st, const fedc_config *cfg, fedc_err *err)
{
    ((krum_state *)st)->bulyan = 1;
    return krum_init_common(s, st, cfg, err);
}

static int double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Krum scores of the rows in `active` (indices into the K x K squared-distance matrix D): for
 * each, the sum of its num_closest = max(1, |active| - f - 2) smallest distances to the other
 * active rows, summed in ascending order. tmp has K doubles. */
static void krum_scores(const double *D, size_t K, const size_t *active, size_t na, size_t f,
                        double *scores, double *tmp)
{
    size_t closest = na > f + 2 ? na - f - 2 : 1;
    if (closest > na - 1) closest = na - 1;
    for (size_t a = 0; a < na; a++) {
        size_t i = active[a], c = 0;
        for (size_t b = 0; b < na; b++)
            if (b != a) tmp[c++] = D[i * K + active[b]];
        qsort(tmp, c, sizeof *tmp, double_cmp);
        double sc = 0;
        for (size_t j = 0; j < closest; j++) sc += tmp[j];
        scores[a] = sc;
    }
}

/* The position in scores[0..na-1] of the smallest score, the first one on ties. */
static size_t argmin(const double *scores, size_t na)
{
    size_t best = 0;
    for (size_t a = 1; a < na; a++)
        if (scores[a] < scores[best]) best = a;
    return best;
}

typedef struct bulyan_param {
    size_t beta;
} bulyan_param;

/* The mean of the beta sorted values closest to the median (ties: the lower value first). */
static float bulyan_rule(float *v, size_t k, const void *param)
{
    size_t beta = ((const bulyan_param *)param)->beta;
    double med = sorted_median(v, k);
    size_t hi = 0;
    while (hi < k && (double)v[hi] < med) hi++;
    size_t lo = hi; /* window [lo, hi) grows around the median */
    for (size_t taken = 0; taken < beta; taken++) {
        if (hi >= k || (lo > 0 && med - (double)v[lo - 1] <= (double)v[hi] - med))
            lo--;
        else
            hi++;
    }
    double sum = 0;
    for (size_t i = lo; i < hi; i++) sum += v[i];
    return (float)(sum / (double)beta);
}

static fedc_status krum_aggregate(fedc_strategy *s, void *state, float *delta,
                                  fedc_round_agg *info, fedc_err *err)
{
    krum_state *st = state;
    const size_t K = s->nrecs, n = s->n, f = st->f;
    if (st->bulyan && K < 4 * f + 3)
        return fedc_err_set(err, FEDC_ERR_STATE,
                            "bulyan with f = %zu needs at least 4f+3 = %zu updates, the round "
                            "has %zu",
                            f, 4 * f + 3, K);
    if (!st->bulyan && K < 2 * f + 3)
        fedc_log(FEDC_LOG_WARN, "strategy",
                 "round %u: %s with f = %zu got %zu updates (< 2f+3): no robustness guarantee",
                 s->round, s->ops->name, f, K);

    fedc_status rc = FEDC_OK;
    double *D = fedc_malloc(K * K * sizeof *D);
    double *scores = fedc_malloc(K * sizeof *scores);
    double *tmp = fedc_malloc(K * sizeof *tmp);
    size_t *active = fedc_malloc(K * sizeof *active);
    const float **rows = fedc_malloc(K * sizeof *rows);
    if (!D || !scores || !tmp || !active || !rows) {
        rc = fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for %zu updates", K);
        goto done;
    }
    for (size_t i = 0; i < K; i++) {
        D[i * K + i] = 0;
        for (size_t j = i + 1; j < K; j++)
            D[i * K + j] = D[j * K + i] =
                fedci_sq_dist(n, s->recs[i].update, s->recs[j].update);
        active[i] = i;
    }

    if (st->bulyan) {
        /* theta rounds of Krum over the remaining updates, each removing its pick. */
        const size_t theta = K - 2 * f, beta = theta - 2 * f;
        size_t na = K;
        for (size_t t = 0; t < theta; t++) {
            krum_scores(D, K, active, na, f, scores, tmp);
            size_t best = argmin(scores, na);
            rows[t] = s->recs[active[best]].update;
            memmove(active + best, active + best + 1, (na - best - 1) * sizeof *active);
            na--;
        }
        /* Coordinate sums run over sorted values, so the pick order does not matter. */
        bulyan_param bp = {beta};
        rc = coordinatewise(n, rows, theta, bulyan_rule, &bp, delta, err);
        info->selected = theta;
        goto done;
    }

    krum_scores(D, K, active, K, f, scores, tmp);
    if (!st->multi) {
        size_t best = argmin(scores, K);
        memcpy(delta, s->recs[best].update, n * sizeof(float));
        info->selected = 1;
        info->krum_client = s->recs[best].client;
        goto done;
    }
    /* Multi-Krum: the m smallest scores (ties by client id), weighted by examples. */
    size_t m = st->m ? st->m : (K > f ? K - f : 1);
    if (m > K) m = K;
    size_t nsel = 0;
    double wsum = 0;
    for (size_t pick = 0; pick < m; pick++) {
        size_t best = argmin(scores, K);
        scores[best] = INFINITY;
        active[nsel++] = best;
    }
    /* Sum in client-id order. */
    for (size_t a = 1; a < nsel; a++) {
        size_t x = active[a], b = a;
        for (; b > 0 && active[b - 1] > x; b--) active[b] = active[b - 1];
        active[b] = x;
    }
    for (size_t a = 0; a < nsel; a++) wsum += s->recs[active[a]].weight;
    for (size_t i = 0; i < n; i++) {
        double acc = 0;
        for (size_t a = 0; a < nsel; a++)
            acc += s->recs[active[a]].weight * (double)s->recs[active[a]].update[i];
        delta[i] = (float)(acc / wsum);
    }
    info->selected = nsel;

done:
    fedc_free(D);
    fedc_free(scores);
    fedc_free(tmp);
    fedc_free(active);
    fedc_free(rows);
    return rc;
}

const fedci_strategy_ops fedci_strategy_krum = {
    .name = "krum",
    .state_size = sizeof(krum_state),
    .init = krum_init,
    .aggregate = krum_aggregate,
};

const fedci_strategy_ops fedci_strategy_multikrum = {
    .name = "multikrum",
    .state_size = sizeof(krum_state),
    .init = multikrum_init,
    .aggregate = krum_aggregate,
};

const fedci_strategy_ops fedci_strategy_bulyan = {
    .name = "bulyan",
    .state_size = sizeof(krum_state),
    .init = bulyan_init,
    .aggregate = krum_aggregate,
};
