/*
 * The linear strategies: each client's update is folded into an exact running sum as it arrives
 * (memory O(P) whatever the number of clients), then a server step turns the round's weighted
 * mean update Delta into the new global model x.
 *
 *   fedavg      x += Delta                                     (McMahan et al. 2017)
 *   fedprox     fedavg on the server; clients get mu            (Li et al. 2020)
 *   fedavgm     m = mu m + Delta; x += lr m                     (Hsu et al. 2019; Flower FedAvgM)
 *   fedadagrad  v += Delta^2; x += eta Delta / (sqrt(v) + tau)  (Reddi et al. 2021, Flower
 *   fedadam     Adam moments, no bias correction                 semantics: m0 = v0 = 0)
 *   fedyogi     Yogi second moment
 *   qfedavg     q-FFL weights by client loss                    (Li et al. 2020, Algorithm 2)
 *   scaffold    x += eta_g Delta; c += (1/N) sum(Delta c)       (Karimireddy et al. 2020)
 *
 * Server math runs in double per element; stored state (momenta, control variate) is float32.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/vec.h"
#include "fl/strategy_internal.h"

/* ---- fedavg, fedprox ---- */

const fedci_strategy_ops fedci_strategy_fedavg = {
    .name = "fedavg",
    .streaming = 1,
};

static fedc_status fedprox_init(fedc_strategy *s, void *st, const fedc_config *cfg, fedc_err *err)
{
    (void)st;
    if (!(s->prox_mu > 0))
        return fedc_err_set(err, FEDC_ERR_CONFIG,
                            "%s: [train] prox_mu: fedprox needs a proximal term mu > 0 (with "
                            "mu = 0 it is fedavg); Li et al. tune mu in {0.001, 0.01, 0.1, 1}",
                            fedc_config_origin(cfg, "train.prox_mu"));
    return FEDC_OK;
}

const fedci_strategy_ops fedci_strategy_fedprox = {
    .name = "fedprox",
    .streaming = 1,
    .init = fedprox_init,
};

/* ---- fedavgm ---- */

typedef struct fedavgm_state {
    double lr, mu;
    float *m; /* NULL when mu = 0 */
} fedavgm_state;

static fedc_status fedavgm_init(fedc_strategy *s, void *state, const fedc_config *cfg,
                                fedc_err *err)
{
    fedavgm_state *st = state;
    st->lr = fedc_config_double(cfg, "strategy.server_lr");
    st->mu = fedc_config_double(cfg, "strategy.server_momentum");
    if (st->mu > 0 && !(st->m = fedc_calloc(s->n, sizeof(float))))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "fedavgm: out of memory for the momentum");
    return FEDC_OK;
}

static void fedavgm_fini(fedc_strategy *s, void *state)
{
    (void)s;
    fedc_free(((fedavgm_state *)state)->m);
}

static void fedavgm_apply(fedc_strategy *s, void *state, const float *x, const float *d,
                          float *next)
{
    fedavgm_state *st = state;
    const double lr = st->lr, mu = st->mu;
    if (!st->m) {
        for (size_t i = 0; i < s->n; i++) next[i] = (float)((double)x[i] + lr * d[i]);
        return;
    }
    /* Flower: the first round's momentum is the pseudo-gradient itself, which m0 = 0 gives. */
    float *m = st->m;
    for (size_t i = 0; i < s->n; i++) {
        m[i] = (float)(mu * m[i] + d[i]);
        next[i] = (float)((double)x[i] + lr * m[i]);
    }
}

/* Checkpoints: the momentum (none with mu = 0). */
static size_t fedavgm_state_get(const fedc_strategy *s, const void *state, fedc_state_item *out)
{
    const fedavgm_state *st = state;
    if (!st->m) return 0;
    out[0] = (fedc_state_item){.name = "momentum", .kind = FEDC_STATE_TENSOR, .data = st->m,
                               .len = s->n};
    return 1;
}

const fedci_strategy_ops fedci_strategy_fedavgm = {
    .name = "fedavgm",
    .state_size = sizeof(fedavgm_state),
    .streaming = 1,
    .init = fedavgm_init,
    .fini = fedavgm_fini,
    .apply = fedavgm_apply,
    .state_get = fedavgm_state_get,
};

/* ---- fedadagrad, fedadam, fedyogi ---- */

typedef enum fedopt_kind { FEDOPT_ADAGRAD, FEDOPT_ADAM, FEDOPT_YOGI } fedopt_kind;

typedef struct fedopt_state {
    double eta, eta_l, beta1, beta2, tau;
    float *m, *v;
} fedopt_state;

static fedc_status fedopt_init_kind(fedc_strategy *s, fedopt_state *st, const fedc_config *cfg,
                                    fedopt_kind kind, fedc_err *err)
{
    /* Flower's defaults per strategy when strategy.eta / strategy.tau are 0 (unset). */
    st->eta = fedc_config_double(cfg, "strategy.eta");
    if (st->eta == 0) st->eta = kind == FEDOPT_YOGI ? 1e-2 : 1e-1;
    st->tau = fedc_config_double(cfg, "strategy.tau");
    if (st->tau == 0) st->tau = kind == FEDOPT_YOGI ? 1e-3 : 1e-9;
    st->eta_l = fedc_config_double(cfg, "strategy.eta_l");
    if (kind == FEDOPT_ADAGRAD) {
        st->beta1 = 0; /* Flower's FedAdagrad: m = Delta */
        st->beta2 = 0;
    } else {
        st->beta1 = fedc_config_double(cfg, "strategy.beta1");
        st->beta2 = fedc_config_double(cfg, "strategy.beta2");
    }
    if (!(st->m = fedc_calloc(s->n, sizeof(float))) || !(st->v = fedc_calloc(s->n, sizeof(float))))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "%s: out of memory for the server moments",
                            s->ops->name);
    return FEDC_OK;
}

static fedc_status fedadagrad_init(fedc_strategy *s, void *st, const fedc_config *cfg,
                                   fedc_err *err)
{
    return fedopt_init_kind(s, st, cfg, FEDOPT_ADAGRAD, err);
}

static fedc_status fedadam_init(fedc_strategy *s, void *st, const fedc_config *cfg, fedc_err *err)
{
    return fedopt_init_kind(s, st, cfg, FEDOPT_ADAM, err);
}

static fedc_status fedyogi_init(fedc_strategy *s, void *st, const fedc_config *cfg, fedc_err *err)
{
    return fedopt_init_kind(s, st, cfg, FEDOPT_YOGI, err);
}

static void fedopt_fini(fedc_strategy *s, void *state)
{
    (void)s;
    fedopt_state *st = state;
    fedc_free(st->m);
    fedc_free(st->v);
}

static void fedopt_configure_fit(const fedc_strategy *s, const void *state, fedc_fit_config *out)
{
    (void)s;
    const fedopt_state *st = state;
    if (st->eta_l > 0) out->lr = st->eta_l;
}

/* x += eta m / (sqrt(v) + tau) with m, v as stored (float32, like Flower's arrays). */
static void fedopt_apply_kind(fedc_strategy *s, fedopt_state *st, const float *x, const float *d,
                              float *next, fedopt_kind kind)
{
    const double b1 = st->beta1, b2 = st->beta2, eta = st->eta, tau = st->tau;
    float *m = st->m, *v = st->v;
    for (size_t i = 0; i < s->n; i++) {
        const double di = d[i], d2 = di * di;
        m[i] = (float)(b1 * m[i] + (1 - b1) * di);
        double vi = v[i];
        switch (kind) {
        case FEDOPT_ADAGRAD: vi = vi + d2; break;
        case FEDOPT_ADAM: vi = b2 * vi + (1 - b2) * d2; break;
        case FEDOPT_YOGI: {
            double sg = vi - d2 > 0 ? 1.0 : (vi - d2 < 0 ? -1.0 : 0.0);
            vi = vi - (1 - b2) * d2 * sg;
            break;
        }
        }
        v[i] = (float)vi;
        next[i] = (float)((double)x[i] + eta * (double)m[i] / (sqrt((double)v[i]) + tau));
    }
}

static void fedadagrad_apply(fedc_strategy *s, void *st, const float *x, const float *d,
                             float *next)
{
    fedopt_apply_kind(s, st, x, d, next, FEDOPT_ADAGRAD);
}

static void fedadam_apply(fedc_strategy *s, void *st, const float *x, const float *d, float *next)
{
    fedopt_apply_kind(s, st, x, d, next, FEDOPT_ADAM);
}

static void fedyogi_apply(fedc_strategy *s, void *st, const float *x, const float *d, float *next)
{
    fedopt_apply_kind(s, st, x, d, next, FEDOPT_YOGI);
}

/* Checkpoints: the two moments. */
static size_t fedopt_state_get(const fedc_strategy *s, const void *state, fedc_state_item *out)
{
    const fedopt_state *st = state;
    out[0] = (fedc_state_item){.name = "m", .kind = FEDC_STATE_TENSOR, .data = st->m, .len = s->n};
    out[1] = (fedc_state_item){.name = "v", .kind = FEDC_STATE_TENSOR, .data = st->v, .len = s->n};
    return 2;
}

#define FEDOPT_OPS(NAME)                                                                       \
    const fedci_strategy_ops fedci_strategy_##NAME = {                                         \
        .name = #NAME,                                                                         \
        .state_size = sizeof(fedopt_state),                                                    \
        .streaming = 1,                                                                        \
        .init = NAME##_init,                                                                   \
        .fini = fedopt_fini,                                                                   \
        .configure_fit = fedopt_configure_fit,                                                 \
        .apply = NAME##_apply,                                                                 \
        .state_get = fedopt_state_get,                                                         \
    }

FEDOPT_OPS(fedadagrad);
FEDOPT_OPS(fedadam);
FEDOPT_OPS(fedyogi);

/* ---- qfedavg ---- */

/*
 * q-FFL (Li et al. 2020, "Fair Resource Allocation in Federated Learning", Algorithm 2), with
 * u_k = client - global, L = 1/qffl_lr and F_k the client's loss on the global model:
 *   Delta_k = F_k^q L u_k,  h_k = q F_k^(q-1) L^2 |u_k|^2 + L F_k^q,
 *   x += sum_k Delta_k / sum_k h_k.
 * (F_k + 1e-10 in the powers, as Flower's QFedAvg.) Unlike Flower, which uses the server's own
 * loss for every client, F_k is each client's loss_before, as in the paper.
 * Both sums are scaled by one per-round constant s = L * (F_ref + 1e-10)^q, with F_ref the mean
 * loss_before of the previous round (1 in the first): the quotient is unchanged, but the weights
 * stay near 1, where the fixed-point sum is most precise, even for large q.
 */
typedef struct qfedavg_state {
    double q, L;
    double f_ref, scale;
} qfedavg_state;

static fedc_status qfedavg_init(fedc_strategy *s, void *state, const fedc_config *cfg,
                                fedc_err *err)
{
    (void)s;
    (void)err;
    qfedavg_state *st = state;
    st->q = fedc_config_double(cfg, "strategy.q");
    st->L = 1.0 / fedc_config_double(cfg, "strategy.qffl_lr");
    st->f_ref = 1.0;
    return FEDC_OK;
}

static void qfedavg_begin_round(fedc_strategy *s, void *state)
{
    (void)s;
    qfedavg_state *st = state;
    st->scale = st->L * pow(st->f_ref + 1e-10, st->q);
    if (!(st->scale > 0) || !isfinite(st->scale)) st->scale = st->L;
}

static fedc_status qfedavg_weigh(fedc_strategy *s, void *state, const fedc_fit_result *res,
                                 fedci_client_rec *rec, double *weight, fedc_err *err)
{
    qfedavg_state *st = state;
    const double F = res->loss_before;
    if (!isfinite(F) || F < 0)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "qfedavg needs loss_before (the global model's loss on the client's "
                            "data) finite and >= 0, got %g",
                            F);
    const double sq = fedci_sq_norm(s->n, res->update);
    if (!isfinite(sq)) {
        ptrdiff_t bad = fedc_vec_find_nonfinite(s->n, res->update);
        if (bad >= 0)
            return fedc_err_set(err, FEDC_ERR_NONFINITE, "update element %td is %g", bad,
                                (double)res->update[bad]);
        return fedc_err_set(err, FEDC_ERR_RANGE, "update norm overflows");
    }
    const double fq = pow(F + 1e-10, st->q);
    const double h = st->q * pow(F + 1e-10, st->q - 1) * st->L * st->L * sq + st->L * fq;
    const double w = st->L * fq / st->scale;
    if (!isfinite(h) || !isfinite(w))
        return fedc_err_set(err, FEDC_ERR_RANGE, "q-FFL weight overflows (loss %g, q %g)", F,
                            st->q);
    rec->aux = h / st->scale;
    *weight = w;
    return FEDC_OK;
}

static fedc_status qfedavg_aggregate(fedc_strategy *s, void *state, float *delta,
                                     fedc_round_agg *info, fedc_err *err)
{
    (void)state;
    (void)info;
    double H = 0;
    for (size_t i = 0; i < s->nrecs; i++) H += s->recs[i].aux;
    if (!(H > 0) || !isfinite(H))
        return fedc_err_set(err, FEDC_ERR_RANGE, "sum of h_k is %g", H);
    fedc_accum_sum(s->acc, 1.0 / H, delta);
    return FEDC_OK;
}

static void qfedavg_commit(fedc_strategy *s, void *state)
{
    qfedavg_state *st = state;
    double sum = 0;
    for (size_t i = 0; i < s->nrecs; i++) sum += s->recs[i].loss_before;
    st->f_ref = sum / (double)s->nrecs;
}

/* Checkpoints: the reference loss that scales the next round's weights. */
static size_t qfedavg_state_get(const fedc_strategy *s, const void *state, fedc_state_item *out)
{
    (void)s;
    out[0] = (fedc_state_item){.name = "f_ref", .kind = FEDC_STATE_REAL,
                               .real = ((const qfedavg_state *)state)->f_ref};
    return 1;
}

static fedc_status qfedavg_state_set(fedc_strategy *s, void *state, const fedc_state_item *items,
                                     fedc_err *err)
{
    (void)s;
    if (!(items[0].real >= 0)) /* a mean of losses >= 0 */
        return fedc_err_set(err, FEDC_ERR_RANGE, "strategy qfedavg: state value 'f_ref' is %g, "
                            "a mean loss must be >= 0", items[0].real);
    ((qfedavg_state *)state)->f_ref = items[0].real;
    return FEDC_OK;
}

const fedci_strategy_ops fedci_strategy_qfedavg = {
    .name = "qfedavg",
    .state_size = sizeof(qfedavg_state),
    .streaming = 1,
    .needs_loss_before = 1,
    .init = qfedavg_init,
    .begin_round = qfedavg_begin_round,
    .weigh = qfedavg_weigh,
    .aggregate = qfedavg_aggregate,
    .commit = qfedavg_commit,
    .state_get = qfedavg_state_get,
    .state_set = qfedavg_state_set,
};

/* ---- scaffold ---- */

/*
 * SCAFFOLD's server (Karimireddy et al. 2020, Algorithm 1, lines 16-17):
 *   x += eta_g * Delta,   c += (|S|/N) * mean(Delta c) = (1/N) * sum(Delta c)
 * with N = clients.count. Delta is the example-weighted mean update (the paper's plain mean when
 * clients hold equal data); the control sum is unweighted, so c stays the mean of the clients'
 * c_i. Clients receive c in fedc_fit_config.control and return Delta c_i = c_i+ - c_i.
 */
typedef struct scaffold_state {
    double eta_g;
    double N;
    float *c;
    fedc_accum *csum;
} scaffold_state;

static fedc_status scaffold_init(fedc_strategy *s, void *state, const fedc_config *cfg,
                                 fedc_err *err)
{
    scaffold_state *st = state;
    st->eta_g = fedc_config_double(cfg, "strategy.eta_g");
    st->N = (double)fedc_config_int(cfg, "clients.count");
    if (!(st->c = fedc_calloc(s->n, sizeof(float))))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "scaffold: out of memory for the control");
    return fedc_accum_create(s->n, &st->csum, err);
}

static void scaffold_fini(fedc_strategy *s, void *state)
{
    (void)s;
    scaffold_state *st = state;
    fedc_free(st->c);
    fedc_accum_destroy(st->csum);
}

static void scaffold_configure_fit(const fedc_strategy *s, const void *state,
                                   fedc_fit_config *out)
{
    const scaffold_state *st = state;
    out->control = st->c;
    out->control_len = s->n;
}

static void scaffold_begin_round(fedc_strategy *s, void *state)
{
    (void)s;
    fedc_accum_reset(((scaffold_state *)state)->csum);
}

static fedc_status scaffold_add_extra(fedc_strategy *s, void *state, const fedc_fit_result *res,
                                      fedc_err *err)
{
    (void)s;
    scaffold_state *st = state;
    fedc_status rc = fedc_accum_add(st->csum, 1.0, res->control_delta, err);
    if (rc != FEDC_OK) fedc_err_prefix(err, "control delta ");
    return rc;
}

static void scaffold_apply(fedc_strategy *s, void *state, const float *x, const float *d,
                           float *next)
{
    const double eta = ((scaffold_state *)state)->eta_g;
    for (size_t i = 0; i < s->n; i++) next[i] = (float)((double)x[i] + eta * d[i]);
}

static void scaffold_commit(fedc_strategy *s, void *state)
{
    scaffold_state *st = state;
    size_t len;
    const int64_t *sum = fedc_accum_raw(st->csum, &len);
    const double f = ldexp(1.0, -FEDC_ACCUM_FRAC_BITS) / st->N; /* fixed point -> value, / N */
    for (size_t i = 0; i < s->n; i++) st->c[i] = (float)((double)st->c[i] + (double)sum[i] * f);
}

static fedc_accum *scaffold_partial_accum(const fedc_strategy *s, void *state)
{
    (void)s;
    return ((scaffold_state *)state)->csum;
}

/* Checkpoints: the server control variate (the round's control sum is not state). */
static size_t scaffold_state_get(const fedc_strategy *s, const void *state, fedc_state_item *out)
{
    out[0] = (fedc_state_item){.name = "control", .kind = FEDC_STATE_TENSOR,
                               .data = ((const scaffold_state *)state)->c, .len = s->n};
    return 1;
}

const fedci_strategy_ops fedci_strategy_scaffold = {
    .name = "scaffold",
    .state_size = sizeof(scaffold_state),
    .streaming = 1,
    .needs_control = 1,
    .init = scaffold_init,
    .fini = scaffold_fini,
    .configure_fit = scaffold_configure_fit,
    .begin_round = scaffold_begin_round,
    .add_extra = scaffold_add_extra,
    .apply = scaffold_apply,
    .commit = scaffold_commit,
    .partial_accum = scaffold_partial_accum,
    .state_get = scaffold_state_get,
};
