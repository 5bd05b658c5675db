/*
 * Differential privacy in the round engine (docs/PRIVACY.md, "DP in the round engine"), end to
 * end on the simulation transport:
 *   - central DP (DP-FedAvg): every record's epsilon is the accountant's for (q, z, rounds) bit
 *     for bit; the noise on the mean has stddev zC/m (a statistical test); updates are clipped
 *     to C and the sum is divided by the fixed denominator clients.per_round; clipping on the
 *     client or on the server gives the same model (seeded noise); adaptive clipping follows
 *     its geometric rule and tracks the target quantile; a DP-FedAvg run on generated data
 *     reaches a pinned accuracy at a stated (epsilon, delta) with secure noise;
 *   - local DP: each client's noise, per-client accounting (q = 1, z / 2);
 *   - DP-SGD: the example-level epsilon is the largest of the clients' own accountants;
 *   - budgets: a run stops before the round that would exceed dp.epsilon_budget, and a budget
 *     the first round exceeds is refused; strategies that cannot run under DP are refused;
 *   - the engine's checks of DP results (not selected, twice, NaN, missing clipped bit).
 * Statistical checks use bounds with a false-alarm probability <= 1e-6 each.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"

static fedc_dataset *train, *test;

static int setup(void **state)
{
    (void)state;
    fedc_log_set(NULL, NULL, FEDC_LOG_ERROR);
    fedc_err err;
    if (fedc_data_load("synthetic-iid", &train, &test, &err) != FEDC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fedc_dataset_destroy(train);
    fedc_dataset_destroy(test);
    return 0;
}

/* Epsilon of `steps` steps at (q, z), delta 1e-5, the default ("tf") orders: what
 * `fedc dp-budget` prints. */
static double budget_eps(double q, double z, uint64_t steps)
{
    size_t n;
    const double *orders = fedc_rdp_orders_named("tf", &n);
    double eps = 0, order = 0;
    fedc_err err;
    if (fedc_dp_epsilon(q, z, steps, 1e-5, orders, n, &eps, &order, &err) != FEDC_OK)
        fail_msg("%s", err.msg);
    return eps;
}

/* ---- a probe trainer: updates of known shape, to check the server's arithmetic ---- */

enum { PROBE_ZERO, PROBE_ONES, PROBE_NORM };

typedef struct probe {
    fedc_layout *layout;
    int kind;            /* ZERO: 0; ONES: every coordinate = scale; NORM: norm client + 1 */
    double scale;
    uint32_t fail_below; /* clients below this id fail their fit */
} probe;

static const fedc_layout *probe_layout(const void *s)
{
    return ((const probe *)s)->layout;
}
static fedc_status probe_init(const void *s, uint64_t seed, float *p, fedc_err *e)
{
    (void)seed;
    (void)e;
    fedc_vec_zero(((const probe *)s)->layout->total, p);
    return FEDC_OK;
}
static fedc_status probe_fit(const void *s, void *w, const fedc_fit_ins *ins, fedc_fit_out *out,
                             fedc_err *e)
{
    (void)w;
    const probe *p = s;
    if (ins->client < p->fail_below)
        return fedc_err_set(e, FEDC_ERR_NETWORK, "client %u vanished", ins->client);
    size_t n = ins->num_params;
    double v = p->kind == PROBE_ONES ? p->scale
               : p->kind == PROBE_NORM ? (double)(ins->client + 1) / sqrt((double)n)
                                       : 0.0;
    for (size_t i = 0; i < n; i++) out->update[i] = (float)v;
    out->num_examples = 10;
    out->train_loss = 1.0;
    out->steps = 1;
    return FEDC_OK;
}
static const fedc_trainer_ops probe_ops = {
    .name = "probe", .worker_size = 8, .layout = probe_layout, .init_params = probe_init,
    .fit = probe_fit, .evaluate = tu_eval_nothing,
};

static void probe_make(probe *p, size_t n, int kind, double scale, uint32_t fail_below)
{
    memset(p, 0, sizeof *p);
    p->layout = fedc_layout_create();
    int64_t shape[1] = {(int64_t)n};
    assert_int_equal(fedc_layout_add(p->layout, "w", 1, shape, NULL), FEDC_OK);
    p->kind = kind;
    p->scale = scale;
    p->fail_below = fail_below;
}

static const char *const probe_base[] = {
    "run.seed=7", "run.rounds=1", "clients.count=10", "clients.per_round=10", "clients.min=1",
    "eval.every=0", "strategy.name=fedavg", "dp.mode=central", "dp.delta=1e-5", NULL};

/* Records of a run (up to 64 rounds). */
typedef struct run_log {
    fedc_round_record recs[64];
    uint32_t n;
} run_log;

static int log_round(void *user, const fedc_round_record *rec)
{
    run_log *l = user;
    if (l->n < 64) l->recs[l->n++] = *rec;
    return 0;
}

/* Runs the engine on trainer; global (may be NULL) receives the final model (num_params
 * floats, malloc'd); returns the engine's last round. */
static uint32_t run_engine(const fedc_config *cfg, const fedc_trainer *trainer, int threads,
                           run_log *log, float **global, char sha[65])
{
    memset(log, 0, sizeof *log);
    fedc_engine *e = NULL;
    fedc_err err;
    if (fedc_engine_create(cfg, trainer, &e, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_sim_opts opts = {threads, log_round, log};
    if (fedc_sim_run(e, trainer, cfg, &opts, &err) != FEDC_OK) fail_msg("%s", err.msg);
    size_t P = fedc_engine_num_params(e);
    if (global) {
        *global = malloc(P * sizeof(float));
        memcpy(*global, fedc_engine_global(e), P * sizeof(float));
    }
    if (sha) fedc_vec_sha256_hex(P, fedc_engine_global(e), sha);
    uint32_t last = fedc_engine_last_round(e);
    fedc_engine_destroy(e);
    return last;
}

/* |s^2 / sigma^2 - 1| <= 4.89 sqrt(2 / (n - 1)) and |mean| <= 4.89 sigma / sqrt(n): each
 * fails with probability <= 1e-6 for n i.i.d. N(0, sigma^2) draws (normal approximation). */
static void assert_gaussian(const float *x, size_t n, double sigma)
{
    double mean = 0, ss = 0;
    for (size_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    double var = ss / (double)(n - 1);
    if (!(fabs(mean) <= 4.89 * sigma / sqrt((double)n)))
        fail_msg("noise mean %g, sigma %g, n %zu", mean, sigma, n);
    if (!(fabs(var / (sigma * sigma) - 1) <= 4.89 * sqrt(2.0 / (double)(n - 1))))
        fail_msg("noise stddev %g, expected %g (n %zu)", sqrt(var), sigma, n);
}

/* Zero updates: the new model is the noise alone, N(0, (zC/m)^2) per coordinate, from
 * libsodium (secure mode). */
static void test_central_noise_level(void **state)
{
    (void)state;
    const size_t P = 50000;
    probe p;
    probe_make(&p, P, PROBE_ZERO, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"dp.noise_multiplier=2", "dp.clip=1.5", NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    run_log log;
    float *g = NULL;
    run_engine(cfg, &t, 1, &log, &g, NULL);
    assert_int_equal(log.n, 1);
    assert_close(log.recs[0].dp_noise_stddev, 2 * 1.5 / 10, 1e-15, 0);
    assert_int_equal(log.recs[0].dp_seeded_noise, 0);
    assert_gaussian(g, P, 0.3);
    free(g);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

/* Updates far above C are clipped to C; 4 of 10 clients fail, and the sum of the 6 clipped
 * updates is still divided by m = 10 (the fixed denominator): every coordinate is
 * 0.6 C / sqrt(P) plus noise of stddev zC/m = 1e-5. */
static void test_central_clip_and_fixed_denominator(void **state)
{
    (void)state;
    const size_t P = 20000;
    probe p;
    probe_make(&p, P, PROBE_ONES, 3.0, 4);
    fedc_trainer t = {&probe_ops, &p};
    const char *const clip_on[] = {"dp.clip_on=client", "dp.clip_on=server"};
    for (int k = 0; k < 2; k++) {
        const char *const sets[] = {"dp.noise_multiplier=1e-4", "dp.clip=1", clip_on[k], NULL};
        fedc_config *cfg = tu_config(probe_base, sets);
        run_log log;
        float *g = NULL;
        run_engine(cfg, &t, 2, &log, &g, NULL);
        assert_int_equal(log.recs[0].participants, 6);
        assert_int_equal(log.recs[0].rejected, 4);
        double want = 0.6 / sqrt((double)P), worst = 0;
        for (size_t i = 0; i < P; i++) worst = fmax(worst, fabs(g[i] - want));
        /* 10 noise stddevs: never reached by chance */
        if (!(worst < 1e-4)) fail_msg("%s: coordinate off by %g from %g", clip_on[k], worst, want);
        free(g);
        fedc_config_destroy(cfg);
    }
    fedc_layout_destroy(p.layout);
}

/* Epsilon in every record = the accountant for (q, z, r): the same number `fedc dp-budget`
 * prints, bit for bit. */
static void test_central_epsilon_per_round(void **state)
{
    (void)state;
    probe p;
    probe_make(&p, 100, PROBE_NORM, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"run.rounds=12", "clients.count=40", "clients.per_round=10",
                                "dp.noise_multiplier=1.1", "dp.seeded_noise=true", NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    run_log log;
    run_engine(cfg, &t, 1, &log, NULL, NULL);
    assert_int_equal(log.n, 12);
    for (uint32_t r = 0; r < 12; r++) {
        const fedc_round_record *rec = &log.recs[r];
        assert_int_equal(rec->dp_mode, FEDC_DP_CENTRAL);
        assert_int_equal(rec->dp_seeded_noise, 1);
        double want = budget_eps(0.25, 1.1, r + 1);
        if (rec->epsilon != want)
            fail_msg("round %u: epsilon %.17g, dp-budget %.17g", r + 1, rec->epsilon, want);
        assert_true(rec->dp_order > 1);
        assert_close(rec->dp_delta, 1e-5, 0, 0);
        assert_close(rec->dp_clip, 1.0, 0, 0);
        assert_int_equal(rec->dp_budget_stop, 0);
    }
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

/* The nn trainer on generated data, seeded noise: clipping on the client or on arrival gives
 * the bit-identical model, whatever the thread count; without clipping (C huge) it differs, so
 * the clip was active. */
static const char *const nn_base[] = {
    "run.seed=5", "run.rounds=5", "clients.count=40", "clients.per_round=8", "clients.min=2",
    "data.partition=iid", "model.spec=logreg", "train.epochs=1", "train.batch_size=10",
    "train.lr=1", "eval.every=5", "dp.mode=central", "dp.delta=1e-5", NULL};

static void run_nn(const fedc_config *cfg, int threads, run_log *log, char sha[65])
{
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    assert_int_equal(fedc_partition_scheme_parse(fedc_config_str(cfg, "data.partition"),
                                                 &o.scheme),
                     0);
    o.num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    o.seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    fedc_partition *part = NULL;
    fedc_trainer *trainer = NULL;
    fedc_err err;
    if (fedc_partition_create(train, &o, &part, &err) != FEDC_OK) fail_msg("%s", err.msg);
    if (fedc_trainer_nn_create(cfg, train, test, part, &trainer, &err) != FEDC_OK)
        fail_msg("%s", err.msg);
    run_engine(cfg, trainer, threads, log, NULL, sha);
    fedc_trainer_nn_destroy(trainer);
    fedc_partition_destroy(part);
}

/* Counts the engine's "update above its clip" warnings: with clip_on = client the clients
 * must have clipped already, so the server's check never fires. */
static int over_clip;
static void count_over_clip(void *user, fedc_log_level level, const char *subsys,
                            const char *msg)
{
    (void)user;
    (void)level;
    if (strcmp(subsys, "dp") == 0 && strstr(msg, "above its clip")) over_clip++;
}

static void test_clip_client_equals_server(void **state)
{
    (void)state;
    char sha[4][65];
    const char *const where[] = {"dp.clip_on=client", "dp.clip_on=server"};
    run_log log;
    fedc_log_set(count_over_clip, NULL, FEDC_LOG_WARN);
    for (int k = 0; k < 4; k++) {
        const char *const sets[] = {where[k % 2], "dp.clip=0.2", "dp.seeded_noise=true",
                                    "dp.noise_multiplier=0.8", NULL};
        fedc_config *cfg = tu_config(nn_base, sets);
        over_clip = 0;
        run_nn(cfg, 1 + k / 2, &log, sha[k]);
        assert_int_equal(over_clip, 0);
        fedc_config_destroy(cfg);
    }
    fedc_log_set(NULL, NULL, FEDC_LOG_ERROR);
    assert_string_equal(sha[0], sha[1]);
    assert_string_equal(sha[0], sha[2]);
    assert_string_equal(sha[0], sha[3]);
    const char *const loose[] = {"dp.clip=1e6", "dp.seeded_noise=true", "dp.noise_multiplier=0.8",
                                 NULL};
    fedc_config *cfg = tu_config(nn_base, loose);
    char other[65];
    run_nn(cfg, 1, &log, other);
    assert_string_not_equal(sha[0], other);
    fedc_config_destroy(cfg);
    /* adaptive clipping, client bits vs server norms: the same too */
    char ad[2][65];
    for (int k = 0; k < 2; k++) {
        const char *const sets[] = {where[k], "dp.clip=0.2", "dp.seeded_noise=true",
                                    "dp.noise_multiplier=0.8", "dp.adaptive_clip=true",
                                    "dp.clipped_count_stddev=1", NULL};
        cfg = tu_config(nn_base, sets);
        run_nn(cfg, 2, &log, ad[k]);
        fedc_config_destroy(cfg);
    }
    assert_string_equal(ad[0], ad[1]);
}

/* DP-FedAvg on FedProx Synthetic IID with secure noise: 100 clients, 20 per round, 20 rounds,
 * z = 1, C = 2: epsilon 7.56 at delta 1e-5. Measured test accuracy over 12 runs: 0.724 to
 * 0.752 (0.777 without DP; chance ~0.3). Pinned at >= 0.65. */
static void test_dp_fedavg_accuracy(void **state)
{
    (void)state;
    const char *const sets[] = {"run.seed=3", "run.rounds=20", "clients.count=100",
                                "clients.per_round=20", "eval.every=20",
                                "dp.noise_multiplier=1", "dp.clip=2", NULL};
    fedc_config *cfg = tu_config(nn_base, sets);
    run_log log;
    run_nn(cfg, 2, &log, NULL);
    const fedc_round_record *last = &log.recs[log.n - 1];
    assert_int_equal(log.n, 20);
    assert_true(last->evaluated);
    assert_close(last->epsilon, 7.56010913, 1e-8, 0);
    assert_int_equal(last->dp_seeded_noise, 0);
    if (!(last->test_accuracy >= 0.65)) fail_msg("accuracy %.4f", last->test_accuracy);
    fedc_config_destroy(cfg);
}

/* Adaptive clipping: norms 1..10, target median. Each record's next clip follows
 * C <- C exp(-eta (b - gamma)) from its noised fraction b, the update noise uses z_delta, and
 * the clip settles between the 5th and 6th norm. */
static void test_adaptive_clip_tracks_quantile(void **state)
{
    (void)state;
    probe p;
    probe_make(&p, 64, PROBE_NORM, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"run.rounds=60",          "dp.noise_multiplier=0.05",
                                "dp.clip=0.5",            "dp.adaptive_clip=true",
                                "dp.clipped_count_stddev=0.1", "dp.clip_lr=0.2",
                                "dp.target_quantile=0.5", "dp.clip_on=server",
                                "dp.seeded_noise=true",   NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    run_log log;
    run_engine(cfg, &t, 2, &log, NULL, NULL);
    assert_int_equal(log.n, 60);
    double zd = 0;
    assert_int_equal(fedc_dp_noise_split(0.05, 0.1, &zd, NULL), FEDC_OK);
    for (uint32_t r = 0; r + 1 < log.n; r++) {
        const fedc_round_record *a = &log.recs[r], *b = &log.recs[r + 1];
        assert_true(a->dp_unclipped_fraction >= 0 && a->dp_unclipped_fraction <= 1);
        assert_close(b->dp_clip, a->dp_clip * exp(-0.2 * (a->dp_unclipped_fraction - 0.5)),
                     1e-12, 0);
        assert_close(a->dp_noise_stddev, zd * a->dp_clip / 10, 1e-12, 0);
        /* the accountant is fed z, not z_delta */
        if (a->epsilon != budget_eps(1.0, 0.05, r + 1)) fail_msg("round %u epsilon", r + 1);
    }
    double c = log.recs[log.n - 1].dp_clip;
    if (!(c > 4.0 && c < 7.0)) fail_msg("clip %g after 60 rounds; norms are 1..10", c);
    /* and it started far below: it moved */
    assert_close(log.recs[0].dp_clip, 0.5, 0, 0);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

/* Local DP: each client's update gets N(0, (zC)^2); equal weights average m of them; epsilon
 * per client is q = 1 at z / 2, composed over its participations. */
static void test_local_dp(void **state)
{
    (void)state;
    const size_t P = 40000;
    probe p;
    probe_make(&p, P, PROBE_ZERO, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"dp.mode=local", "dp.noise_multiplier=4", "dp.clip=0.5",
                                "run.rounds=3", NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    run_log log;
    float *g = NULL;
    run_engine(cfg, &t, 2, &log, &g, NULL);
    assert_int_equal(log.n, 3);
    for (uint32_t r = 0; r < 3; r++) {
        assert_int_equal(log.recs[r].dp_mode, FEDC_DP_LOCAL);
        assert_close(log.recs[r].dp_noise_stddev, 2.0, 1e-15, 0);
        if (log.recs[r].epsilon != budget_eps(1.0, 2.0, r + 1)) fail_msg("round %u", r + 1);
    }
    /* three rounds of means of 10 noises: stddev 2 sqrt(3 / 10) */
    assert_gaussian(g, P, 2.0 * sqrt(0.3));
    free(g);
    fedc_config_destroy(cfg);
    /* robust strategies are post-processing of noised updates: allowed */
    const char *const robust[] = {"dp.mode=local", "strategy.name=fedmedian", NULL};
    cfg = tu_config(probe_base, robust);
    run_engine(cfg, &t, 1, &log, NULL, NULL);
    assert_int_equal(log.n, 1);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

/* DP-SGD: every client trains every round (per_round = count), so client k has taken
 * rounds * epochs * ceil(n_k / B) steps at q = B / n_k; the record's example-level epsilon is
 * the largest of those. The model still learns. */
static void test_dp_sgd(void **state)
{
    (void)state;
    const char *const sets[] = {"dp.mode=off", "dp.sgd=true", "dp.sgd_noise_multiplier=1.1",
                                "dp.sgd_clip=1", "clients.count=10", "clients.per_round=10",
                                "run.rounds=4", "eval.every=4", "train.lr=0.5", NULL};
    fedc_config *cfg = tu_config(nn_base, sets);
    run_log log;
    run_nn(cfg, 2, &log, NULL);
    assert_int_equal(log.n, 4);
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.num_clients = 10;
    o.seed = 5;
    fedc_partition *part = NULL;
    assert_int_equal(fedc_partition_create(train, &o, &part, NULL), FEDC_OK);
    for (uint32_t r = 0; r < 4; r++) {
        double want = 0;
        for (uint32_t k = 0; k < 10; k++) {
            uint64_t n = fedc_partition_size(part, k, FEDC_SPLIT_TRAIN);
            double q = n > 10 ? 10.0 / (double)n : 1.0;
            size_t orders_n;
            const double *orders = fedc_rdp_orders_named("tf", &orders_n);
            double e = 0;
            assert_int_equal(fedc_dp_epsilon(q, 1.1, (r + 1) * ((n + 9) / 10), 1e-5, orders,
                                             orders_n, &e, NULL, NULL),
                             FEDC_OK);
            want = fmax(want, e);
        }
        const fedc_round_record *rec = &log.recs[r];
        assert_true(isnan(rec->epsilon));
        assert_int_equal(rec->dp_sgd, 1);
        if (rec->dp_sgd_epsilon != want)
            fail_msg("round %u: DP-SGD epsilon %.17g, expected %.17g", r + 1,
                     rec->dp_sgd_epsilon, want);
    }
    /* measured 0.59 with secure noise (chance ~0.3) */
    if (!(log.recs[3].test_accuracy > 0.45)) fail_msg("accuracy %.3f", log.recs[3].test_accuracy);
    fedc_partition_destroy(part);
    fedc_config_destroy(cfg);
}

/* Budgets: the run stops after the last round that fits, saying so in that round's record;
 * the engine then refuses to begin another round. */
static void test_budget_stop(void **state)
{
    (void)state;
    probe p;
    probe_make(&p, 100, PROBE_NORM, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    double e3 = budget_eps(0.25, 1.0, 3), e4 = budget_eps(0.25, 1.0, 4);
    char budget[64];
    snprintf(budget, sizeof budget, "dp.epsilon_budget=%.17g", (e3 + e4) / 2);
    const char *const sets[] = {"run.rounds=10", "clients.count=40", budget, NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    fedc_engine *e = NULL;
    fedc_err err;
    assert_int_equal(fedc_engine_create(cfg, &t, &e, &err), FEDC_OK);
    run_log log;
    memset(&log, 0, sizeof log);
    fedc_sim_opts opts = {1, log_round, &log};
    assert_int_equal(fedc_sim_run(e, &t, cfg, &opts, &err), FEDC_OK);
    assert_int_equal(log.n, 3);
    assert_int_equal(fedc_engine_last_round(e), 3);
    assert_int_equal(log.recs[1].dp_budget_stop, 0);
    assert_int_equal(log.recs[2].dp_budget_stop, 1);
    assert_true(log.recs[2].epsilon == e3);
    assert_true(log.recs[2].dp_next_epsilon == e4);
    const uint32_t *ids;
    size_t n;
    assert_int_equal(fedc_engine_round_begin(e, &ids, &n, &err), FEDC_ERR_BUDGET);
    assert_non_null(strstr(err.msg, "dp.epsilon_budget"));
    fedc_engine_destroy(e);
    fedc_config_destroy(cfg);

    /* local DP: per participation (q = 1, z / 2) */
    double l2 = budget_eps(1.0, 2.0, 2), l3 = budget_eps(1.0, 2.0, 3);
    snprintf(budget, sizeof budget, "dp.epsilon_budget=%.17g", (l2 + l3) / 2);
    const char *const local[] = {"run.rounds=10", "dp.mode=local", "dp.noise_multiplier=4",
                                 budget, NULL};
    cfg = tu_config(probe_base, local);
    assert_int_equal(run_engine(cfg, &t, 1, &log, NULL, NULL), 2);
    assert_int_equal(log.recs[1].dp_budget_stop, 1);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

static void expect_create(const char *const *sets, fedc_status code, const char *needle)
{
    probe p;
    probe_make(&p, 10, PROBE_ZERO, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    fedc_config *cfg = tu_config(probe_base, sets);
    fedc_engine *e = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_engine_create(cfg, &t, &e, &err);
    if (st != code || (needle && !strstr(err.msg, needle)))
        fail_msg("%s: status %d '%s' (want %d '%s')", sets[0], st, err.msg, code,
                 needle ? needle : "");
    fedc_engine_destroy(e);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

static void test_refused_configs(void **state)
{
    (void)state;
    const char *robust[] = {"fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"};
    for (size_t i = 0; i < sizeof robust / sizeof robust[0]; i++) {
        char s[64];
        snprintf(s, sizeof s, "strategy.name=%s", robust[i]);
        const char *const sets[] = {s, "strategy.num_malicious=1", NULL};
        expect_create(sets, FEDC_ERR_CONFIG, "cannot run with dp.mode = central: DP-FedAvg");
    }
    const char *const q[] = {"strategy.name=qfedavg", NULL};
    expect_create(q, FEDC_ERR_CONFIG, "qfedavg's loss before training");
    const char *const sc[] = {"strategy.name=scaffold", "dp.mode=local", NULL};
    expect_create(sc, FEDC_ERR_CONFIG, "SCAFFOLD's control delta");
    const char *const ok[] = {"strategy.name=fedadam", NULL};
    expect_create(ok, FEDC_OK, NULL);
    const char *const first[] = {"dp.epsilon_budget=0.5", NULL};
    expect_create(first, FEDC_ERR_CONFIG, "spent by the first round alone");
    const char *const first_local[] = {"dp.mode=local", "dp.epsilon_budget=3", NULL};
    expect_create(first_local, FEDC_ERR_CONFIG, "spent by the first round alone");
    const char *const ad_local[] = {"dp.mode=local", "dp.adaptive_clip=true", NULL};
    expect_create(ad_local, FEDC_ERR_CONFIG, "dp.adaptive_clip needs dp.mode = central");
    const char *const delta[] = {"dp.delta=0.2", NULL};
    expect_create(delta, FEDC_ERR_CONFIG, "dp.delta = 0.2 must be < 1/clients.count");
}

/* The engine's checks of results under central DP, driven by hand like a server would. */
static void test_submit_checks(void **state)
{
    (void)state;
    const size_t P = 16;
    probe p;
    probe_make(&p, P, PROBE_ZERO, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"clients.count=20", "clients.per_round=5", "dp.clip=1",
                                "dp.adaptive_clip=true", "dp.noise_multiplier=0.1",
                                "dp.seeded_noise=true", NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    fedc_engine *e = NULL;
    fedc_err err;
    assert_int_equal(fedc_engine_create(cfg, &t, &e, &err), FEDC_OK);
    const uint32_t *ids;
    size_t n;
    assert_int_equal(fedc_engine_round_begin(e, &ids, &n, &err), FEDC_OK);
    assert_int_equal(n, 5);
    uint32_t outsider = 0;
    while (outsider < 20) {
        int sel = 0;
        for (size_t i = 0; i < n; i++) sel |= ids[i] == outsider;
        if (!sel) break;
        outsider++;
    }
    float upd[16];
    for (size_t i = 0; i < P; i++) upd[i] = 0.5f;
    fedc_fit_out out = {.update = upd, .num_examples = 3, .train_loss = 0.5, .steps = 1};
    fedc_dp_client_task task;
    fedc_engine_dp_task(e, ids[0], &task);
    assert_close(task.clip, 1.0, 0, 0); /* clip_on = client by default */
    assert_close(task.noise_stddev, 0, 0, 0);
    fedc_dp_client_report rep;
    assert_int_equal(fedc_dp_client_apply(&task, P, upd, &rep, &err), FEDC_OK);
    assert_int_equal(rep.unclipped, 0); /* norm 2 > 1 */
    assert_close(fedc_vec_norm2(P, upd), 1.0, 1e-6, 0);
    assert_int_equal(fedc_engine_submit_dp(e, ids[0], &out, &rep, 0, &err), FEDC_OK);
    assert_int_equal(fedc_engine_submit_dp(e, ids[0], &out, &rep, 0, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "a second result"));
    assert_int_equal(fedc_engine_submit_dp(e, outsider, &out, &rep, 0, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "was not selected"));
    /* adaptive clipping with clip_on = client needs the client's bit */
    assert_int_equal(fedc_engine_submit(e, ids[1], &out, 0, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "clipped bit"));
    upd[3] = NAN;
    assert_int_equal(fedc_engine_submit_dp(e, ids[2], &out, &rep, 0, &err), FEDC_ERR_NONFINITE);
    fedc_round_record rec;
    assert_int_equal(fedc_engine_round_end(e, &rec, &err), FEDC_OK);
    assert_int_equal(rec.participants, 1);
    assert_int_equal(rec.rejected, 4); /* twice, outsider, no bit, NaN */
    assert_true(rec.epsilon > 0);
    /* central DP restores by charging every round (an upper bound) */
    float zero[16] = {0};
    assert_int_equal(fedc_engine_restore(e, 7, zero, &err), FEDC_OK);
    assert_int_equal(fedc_engine_round_begin(e, &ids, &n, &err), FEDC_OK);
    assert_int_equal(fedc_engine_round_end(e, &rec, &err), FEDC_ERR_ABORTED);
    assert_true(rec.epsilon == budget_eps(0.25, 0.1, 7));
    fedc_engine_destroy(e);
    fedc_config_destroy(cfg);
    /* local DP's per-client accounts are not in the model: a model-only restore is refused
     * (engine checkpoints hold them: engine_checkpoint_test) */
    const char *const local[] = {"dp.mode=local", NULL};
    cfg = tu_config(probe_base, local);
    assert_int_equal(fedc_engine_create(cfg, &t, &e, &err), FEDC_OK);
    assert_int_equal(fedc_engine_restore(e, 3, zero, &err), FEDC_ERR_UNSUPPORTED);
    fedc_engine_destroy(e);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

/* A pre-aggregated sum (SecAgg + central DP) naming a client twice is refused as a whole, and
 * leaves every client it named free to report on its own. */
static void test_submit_sum_refused(void **state)
{
    (void)state;
    const size_t P = 8;
    probe p;
    probe_make(&p, P, PROBE_ZERO, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"clients.count=20", "clients.per_round=5", "dp.clip=1",
                                "dp.noise_multiplier=1e-3", "dp.seeded_noise=true", NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    fedc_engine *e = NULL;
    fedc_err err;
    assert_int_equal(fedc_engine_create(cfg, &t, &e, &err), FEDC_OK);
    const uint32_t *ids;
    size_t n;
    assert_int_equal(fedc_engine_round_begin(e, &ids, &n, &err), FEDC_OK);
    assert_int_equal(n, 5);
    float sum[8] = {0};
    const uint32_t twice[] = {ids[0], ids[1], ids[0]};
    assert_int_equal(fedc_engine_submit_sum(e, twice, 3, sum, 0, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "a second result"));
    float upd[8];
    for (size_t i = 0; i < P; i++) upd[i] = 0.25f;
    fedc_fit_out out = {.update = upd, .num_examples = 3, .train_loss = 0.5, .steps = 1};
    for (size_t k = 0; k < 2; k++)
        assert_int_equal(fedc_engine_submit_dp(e, ids[k], &out, NULL, 0, &err), FEDC_OK);
    fedc_round_record rec;
    assert_int_equal(fedc_engine_round_end(e, &rec, &err), FEDC_OK);
    assert_int_equal(rec.participants, 2);
    fedc_engine_destroy(e);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

/* A transport that over-selects (fedc_engine_round_begin_select, the HTTP server's): every
 * selected client may report, the sum is still divided by clients.per_round, and the round is
 * accounted at q = selected / count. A retry after an aborted round (restore to the previous
 * round, in the same process) keeps the accounts. */
static void test_over_selection(void **state)
{
    (void)state;
    const size_t P = 8;
    probe p;
    probe_make(&p, P, PROBE_ZERO, 0, 0);
    fedc_trainer t = {&probe_ops, &p};
    const char *const sets[] = {"clients.count=20", "clients.per_round=5", "dp.clip=1",
                                "dp.noise_multiplier=1e-3", "dp.seeded_noise=true",
                                "run.rounds=5", NULL};
    fedc_config *cfg = tu_config(probe_base, sets);
    fedc_engine *e = NULL;
    fedc_err err;
    assert_int_equal(fedc_engine_create(cfg, &t, &e, &err), FEDC_OK);
    const uint32_t *ids;
    size_t n;
    assert_int_equal(fedc_engine_round_begin_select(e, 15, 0, &ids, &n, &err), FEDC_OK);
    assert_int_equal(n, 15);
    float upd[8];
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < P; i++) upd[i] = 1.0f; /* norm sqrt(8): clipped to 1 */
        fedc_fit_out out = {.update = upd, .num_examples = 3, .train_loss = 0.5, .steps = 1};
        assert_int_equal(fedc_engine_submit_dp(e, ids[k], &out, NULL, 0, &err), FEDC_OK);
    }
    fedc_round_record rec;
    assert_int_equal(fedc_engine_round_end(e, &rec, &err), FEDC_OK);
    assert_int_equal(rec.participants, 15);
    assert_true(rec.epsilon == budget_eps(0.75, 1e-3, 1));
    /* 15 clipped updates over the fixed denominator 5: each coordinate 3 / sqrt(8) */
    const float *g = fedc_engine_global(e);
    for (size_t i = 0; i < P; i++) assert_close(g[i], 3.0 / sqrt(8.0), 0, 1e-3);
    /* round 2 aborted (nobody reports), then retried from round 1: nothing is refunded */
    assert_int_equal(fedc_engine_round_begin(e, &ids, &n, &err), FEDC_OK);
    assert_int_equal(fedc_engine_round_end(e, &rec, &err), FEDC_ERR_ABORTED);
    assert_true(rec.epsilon == budget_eps(0.75, 1e-3, 1));
    assert_int_equal(fedc_engine_restore(e, 1, g, &err), FEDC_OK);
    assert_int_equal(fedc_engine_round_begin_select(e, 5, 1, &ids, &n, &err), FEDC_OK);
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < P; i++) upd[i] = 0.0f;
        fedc_fit_out out = {.update = upd, .num_examples = 3, .train_loss = 0.5, .steps = 1};
        assert_int_equal(fedc_engine_submit_dp(e, ids[k], &out, NULL, 0, &err), FEDC_OK);
    }
    assert_int_equal(fedc_engine_round_end(e, &rec, &err), FEDC_OK);
    assert_int_equal(rec.round, 2);
    /* one step at 0.75 and one at 0.25: the accountant composes the two phases */
    size_t no;
    const double *orders = fedc_rdp_orders_named("tf", &no);
    double r1[72], r2[72], eps = 0;
    assert_int_equal(no, 72);
    assert_int_equal(fedc_rdp_compute(0.75, 1e-3, 1, orders, no, r1, NULL), FEDC_OK);
    assert_int_equal(fedc_rdp_compute(0.25, 1e-3, 1, orders, no, r2, NULL), FEDC_OK);
    for (size_t i = 0; i < no; i++) r1[i] += r2[i];
    assert_int_equal(fedc_rdp_epsilon(orders, r1, no, 1e-5, &eps, NULL, NULL), FEDC_OK);
    assert_close(rec.epsilon, eps, 1e-12, 0);
    fedc_engine_destroy(e);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(p.layout);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_central_noise_level),
        cmocka_unit_test(test_central_clip_and_fixed_denominator),
        cmocka_unit_test(test_central_epsilon_per_round),
        cmocka_unit_test(test_clip_client_equals_server),
        cmocka_unit_test(test_dp_fedavg_accuracy),
        cmocka_unit_test(test_adaptive_clip_tracks_quantile),
        cmocka_unit_test(test_local_dp),
        cmocka_unit_test(test_dp_sgd),
        cmocka_unit_test(test_budget_stop),
        cmocka_unit_test(test_refused_configs),
        cmocka_unit_test(test_submit_checks),
        cmocka_unit_test(test_submit_sum_refused),
        cmocka_unit_test(test_over_selection),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
