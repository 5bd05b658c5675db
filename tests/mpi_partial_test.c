/* Tests of scale-out without MPI: the strategies' partial aggregates (fedc_strategy_partial_*)
 * split over 2 and 3 handles and combined as the MPI backend combines them give bit-identical
 * models and round records to one handle, for every strategy over several rounds (server
 * state, SCAFFOLD controls, QFedAvg losses, refused results included); malformed or
 * inconsistent partials are refused with clear errors; the assignment of clients to ranks is
 * deterministic and balanced; a build without MPI says how to install it. DP: central DP (with
 * adaptive clipping and DP-SGD accounting) split over 2 engines, combined as the MPI backend
 * combines it (the DP run's partial summed, charges replayed, statistics concatenated, the
 * noise drawn by one engine and shared by the release hook) gives the one engine's model,
 * clip and epsilons, bit for bit. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/accum.h"
#include "fedc/config.h"
#include "fedc/mpi.h"
#include "fedc/engine.h"
#include "fedc/rng.h"
#include "fedc/run.h"
#include "fedc/strategy.h"

#define P 37      /* parameters: odd, not a multiple of any vector width */
#define K 8       /* results per round */
#define CLIENTS 20
#define ROUNDS 3
#define MAXR 3

/* What MPI_SUM does to int64 words: two's-complement addition (the exact sums wrap by design;
 * the range bound says whether the result is valid). */
static int64_t wrap_add(int64_t a, int64_t b)
{
    return (int64_t)((uint64_t)a + (uint64_t)b);
}

static fedc_strategy *make(const char *name)
{
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    char buf[64];
    snprintf(buf, sizeof buf, "strategy.name=%s", name);
    const char *sets[] = {buf, "clients.count=20", "clients.per_round=8", "train.prox_mu=0.01",
                          "strategy.num_malicious=1", "strategy.server_momentum=0.9", NULL};
    for (const char *const *s = sets; *s; s++)
        if (fedc_config_set(cfg, *s, "test") != FEDC_OK)
            fail_msg("%s: %s", *s, fedc_config_errmsg(cfg));
    fedc_strategy *s = NULL;
    fedc_err err;
    if (fedc_strategy_create(cfg, P, NULL, &s, &err) != FEDC_OK) fail_msg("%s: %s", name, err.msg);
    fedc_config_destroy(cfg);
    return s;
}

/* The round's results: K distinct clients with random updates, control deltas, losses; the
 * result at position `bad` (if < K) has a NaN (refused and counted). */
typedef struct round_data {
    uint32_t client[K];
    uint64_t examples[K];
    float update[K][P], control[K][P];
    double loss[K], before[K];
} round_data;

static void make_round(uint32_t round, round_data *d)
{
    fedc_rng rng;
    fedc_rng_init(&rng, 7, round, FEDC_RNG_ANY, FEDC_RNG_DATA);
    uint32_t used = 0;
    for (int k = 0; k < K; k++) {
        uint32_t c;
        do c = (uint32_t)fedc_rng_below(&rng, CLIENTS);
        while (used & (1u << c));
        used |= 1u << c;
        d->client[k] = c;
        d->examples[k] = 1 + fedc_rng_below(&rng, 100);
        for (int i = 0; i < P; i++) {
            d->update[k][i] = (float)(fedc_rng_uniform(&rng) - 0.5) * (k == 3 ? 5.0f : 1.0f);
            d->control[k][i] = (float)(fedc_rng_uniform(&rng) - 0.5) * 0.1f;
        }
        d->loss[k] = 0.1 + fedc_rng_uniform(&rng);
        d->before[k] = 0.2 + fedc_rng_uniform(&rng);
    }
    d->update[5][11] = NAN; /* refused: counted on whichever handle gets it */
}

static fedc_fit_result result(const round_data *d, int k)
{
    fedc_fit_result r;
    memset(&r, 0, sizeof r);
    r.client = d->client[k];
    r.num_examples = d->examples[k];
    r.update = d->update[k];
    r.update_len = P;
    r.train_loss = d->loss[k];
    r.loss_before = d->before[k];
    r.control_delta = d->control[k];
    r.control_delta_len = P;
    return r;
}

static void assert_same_bits(const float *a, const float *b, const char *what, uint32_t round)
{
    if (memcmp(a, b, P * sizeof(float)) != 0) {
        for (int i = 0; i < P; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                fail_msg("%s, round %u: parameter %d is %.9g, expected %.9g", what, round, i,
                         (double)a[i], (double)b[i]);
    }
}

static void assert_same_info(const fedc_round_agg *a, const fedc_round_agg *b, const char *what)
{
    if (a->accepted != b->accepted || a->rejected != b->rejected ||
        a->rejected_nonfinite != b->rejected_nonfinite || a->examples != b->examples ||
        a->selected != b->selected || a->krum_client != b->krum_client ||
        memcmp(&a->train_loss, &b->train_loss, sizeof a->train_loss) != 0 ||
        memcmp(&a->step_norm, &b->step_norm, sizeof a->step_norm) != 0)
        fail_msg("%s: round record differs: accepted %zu/%zu rejected %zu/%zu examples "
                 "%llu/%llu train_loss %.17g/%.17g krum %lld/%lld",
                 what, a->accepted, b->accepted, a->rejected, b->rejected,
                 (unsigned long long)a->examples, (unsigned long long)b->examples, a->train_loss,
                 b->train_loss, (long long)a->krum_client, (long long)b->krum_client);
}

/* One strategy over ROUNDS rounds: a reference handle gets every result (in reverse order);
 * R handles get the shares of fedc_mpi_assign and are combined like the MPI backend does. */
static void check_split(const char *name, int R)
{
    fedc_strategy *ref = make(name);
    fedc_strategy *h[MAXR];
    for (int r = 0; r < R; r++) h[r] = make(name);
    const int linear = fedc_strategy_is_streaming(ref);
    float gref[P], g[MAXR][P];
    for (int i = 0; i < P; i++) gref[i] = 0.01f * (float)i;
    for (int r = 0; r < R; r++) memcpy(g[r], gref, sizeof gref);
    const size_t L = fedc_strategy_partial_sums_len(ref);
    int64_t *sums = calloc(L, sizeof *sums), *part = calloc(L, sizeof *part);
    unsigned char recs[K * FEDC_STRATEGY_RECORD_BYTES];
    assert_non_null(sums);
    assert_non_null(part);
    round_data d;
    char what[64];
    snprintf(what, sizeof what, "%s over %d handles", name, R);
    for (uint32_t round = 1; round <= ROUNDS; round++) {
        make_round(round, &d);
        fedc_strategy_begin_round(ref, round);
        for (int k = K - 1; k >= 0; k--) {
            fedc_fit_result res = result(&d, k);
            fedc_strategy_add(ref, &res, NULL);
        }
        fedc_round_agg iref, info;
        fedc_err err;
        if (fedc_strategy_finish_round(ref, gref, &iref, &err) != FEDC_OK)
            fail_msg("%s reference: %s", name, err.msg);

        uint64_t cost[K];
        int owner[K];
        for (int k = 0; k < K; k++) cost[k] = d.examples[k];
        assert_int_equal(fedc_mpi_assign(K, cost, R, owner, NULL, NULL), FEDC_OK);
        for (int r = 0; r < R; r++) {
            fedc_strategy_begin_round(h[r], round);
            for (int k = 0; k < K; k++) {
                if (owner[k] != r) continue;
                fedc_fit_result res = result(&d, k);
                fedc_strategy_add(h[r], &res, NULL);
            }
        }
        /* The collectives: sums added, records concatenated in rank order. */
        memset(sums, 0, L * sizeof *sums);
        size_t total = 0;
        for (int r = 0; r < R; r++) {
            fedc_strategy_partial_sums(h[r], part);
            for (size_t i = 0; i < L; i++) sums[i] = wrap_add(sums[i], part[i]);
            fedc_strategy_partial_records(h[r], recs + total * FEDC_STRATEGY_RECORD_BYTES);
            total += fedc_strategy_partial_count(h[r]);
        }
        assert_int_equal(total, K - 1); /* one NaN refused */
        if (linear) {
            assert_null(fedc_strategy_partial_held(h[0]));
            for (int r = 0; r < R; r++) {
                if (fedc_strategy_partial_set(h[r], sums, recs, total, NULL, &err) != FEDC_OK)
                    fail_msg("%s: partial_set: %s", what, err.msg);
                if (fedc_strategy_finish_round(h[r], g[r], &info, &err) != FEDC_OK)
                    fail_msg("%s: finish: %s", what, err.msg);
                assert_same_bits(g[r], gref, what, round);
                assert_same_info(&info, &iref, what);
                /* what clients get next (SCAFFOLD's control variate c) is the same too */
                fedc_fit_config fa, fb;
                fedc_strategy_configure_fit(h[r], round + 1, &fa);
                fedc_strategy_configure_fit(ref, round + 1, &fb);
                assert_true((fa.control == NULL) == (fb.control == NULL));
                if (fa.control) assert_same_bits(fa.control, fb.control, what, round);
            }
        } else {
            /* Rank 0 receives the others' held updates after its own, in place. */
            size_t own = fedc_strategy_partial_count(h[0]), at = own;
            float *area = fedc_strategy_partial_held_reserve(h[0], total, &err);
            if (!area) fail_msg("%s: reserve: %s", what, err.msg);
            for (int r = 1; r < R; r++) {
                size_t c = fedc_strategy_partial_count(h[r]);
                memcpy(area + at * P, fedc_strategy_partial_held(h[r]), c * P * sizeof(float));
                at += c;
            }
            if (fedc_strategy_partial_set(h[0], sums, recs, total, area, &err) != FEDC_OK)
                fail_msg("%s: partial_set: %s", what, err.msg);
            if (fedc_strategy_finish_round(h[0], g[0], &info, &err) != FEDC_OK)
                fail_msg("%s: finish: %s", what, err.msg);
            assert_same_bits(g[0], gref, what, round);
            assert_same_info(&info, &iref, what);
            for (int r = 1; r < R; r++) memcpy(g[r], g[0], sizeof g[0]); /* the broadcast */
        }
    }
    free(sums);
    free(part);
    fedc_strategy_destroy(ref);
    for (int r = 0; r < R; r++) fedc_strategy_destroy(h[r]);
}

static void test_every_strategy_splits_exactly(void **state)
{
    (void)state;
    const char *const *names = fedc_strategy_names();
    int count = 0;
    for (; names[count]; count++) {
        check_split(names[count], 2);
        check_split(names[count], 3);
    }
    assert_int_equal(count, 13);
}

/* A handle with the given results (client ids, examples) added to round 1, update all `v`. */
static fedc_strategy *with(const char *name, const uint32_t *ids, int n, float v)
{
    fedc_strategy *s = make(name);
    fedc_strategy_begin_round(s, 1);
    float u[P], c[P];
    for (int i = 0; i < P; i++) u[i] = v, c[i] = 0;
    for (int k = 0; k < n; k++) {
        fedc_fit_result r;
        memset(&r, 0, sizeof r);
        r.client = ids[k];
        r.num_examples = 10;
        r.update = u;
        r.update_len = P;
        r.control_delta = c;
        r.control_delta_len = P;
        r.loss_before = 1;
        fedc_err err;
        if (fedc_strategy_add(s, &r, &err) != FEDC_OK) fail_msg("add: %s", err.msg);
    }
    return s;
}

static void test_bad_partials_refused(void **state)
{
    (void)state;
    fedc_err err;
    float g[P] = {0};
    static const uint32_t a[] = {1, 2}, b[] = {2, 3};
    fedc_strategy *s = with("fedavg", a, 2, 1.0f), *t = with("fedavg", b, 2, 1.0f);
    const size_t L = fedc_strategy_partial_sums_len(s);
    int64_t *x = calloc(L, sizeof *x), *y = calloc(L, sizeof *y);
    unsigned char recs[4 * FEDC_STRATEGY_RECORD_BYTES];
    fedc_strategy_partial_sums(s, x);
    fedc_strategy_partial_sums(t, y);
    for (size_t i = 0; i < L; i++) x[i] = wrap_add(x[i], y[i]);
    fedc_strategy_partial_records(s, recs);
    fedc_strategy_partial_records(t, recs + 2 * FEDC_STRATEGY_RECORD_BYTES);

    /* client 2 on both handles */
    assert_int_equal(fedc_strategy_partial_set(s, x, recs, 4, NULL, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "client 2 appears twice"));
    /* record count disagreeing with the sums */
    fedc_strategy_begin_round(s, 1);
    assert_int_equal(fedc_strategy_partial_set(s, x, recs, 3, NULL, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "3 records, but the sums count 4"));
    /* a corrupted record: reserved bytes, zero examples, a NaN weight */
    unsigned char bad[FEDC_STRATEGY_RECORD_BYTES];
    int64_t one[L];
    memset(one, 0, sizeof one);
    one[L - 4] = 1; /* the record counter */
    memcpy(bad, recs, sizeof bad);
    bad[5] = 1;
    assert_int_equal(fedc_strategy_partial_set(s, one, bad, 1, NULL, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "record 0 (client 1): reserved bytes are not 0"));
    memcpy(bad, recs, sizeof bad);
    memset(bad + 8, 0, 8);
    assert_int_equal(fedc_strategy_partial_set(s, one, bad, 1, NULL, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "0 examples"));
    memcpy(bad, recs, sizeof bad);
    memset(bad + 16, 0xff, 8);
    assert_int_equal(fedc_strategy_partial_set(s, one, bad, 1, NULL, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "weight"));
    one[L - 4] = -1;
    assert_int_equal(fedc_strategy_partial_set(s, one, recs, 0, NULL, &err), FEDC_ERR_FORMAT);
    /* after a refusal the round is restarted and works */
    fedc_strategy_destroy(s);
    fedc_strategy_destroy(t);
    free(x);
    free(y);

    /* The combined exact sums out of range: 3 x (weight 1e9 * 1) > 2^31 in bound units. */
    fedc_strategy *hs[3];
    const size_t L2 = fedc_strategy_partial_sums_len(hs[0] = make("fedavg"));
    hs[1] = make("fedavg");
    hs[2] = make("fedavg");
    int64_t *sum = calloc(L2, sizeof *sum), *p = calloc(L2, sizeof *p);
    float u[P];
    for (int i = 0; i < P; i++) u[i] = 1;
    for (int r = 0; r < 3; r++) {
        fedc_strategy_begin_round(hs[r], 1);
        fedc_fit_result res = {.client = (uint32_t)r, .num_examples = 1000000000, .update = u,
                               .update_len = P};
        assert_int_equal(fedc_strategy_add(hs[r], &res, &err), FEDC_OK);
        fedc_strategy_partial_sums(hs[r], p);
        for (size_t i = 0; i < L2; i++) sum[i] = wrap_add(sum[i], p[i]);
        fedc_strategy_partial_records(hs[r], recs + (size_t)r * FEDC_STRATEGY_RECORD_BYTES);
    }
    assert_int_equal(fedc_strategy_partial_set(hs[0], sum, recs, 3, NULL, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "partial aggregate"));
    for (int r = 0; r < 3; r++) fedc_strategy_destroy(hs[r]);
    free(sum);
    free(p);

    /* Robust: more held updates than max_held (clients.per_round = 8), a NaN in a held one,
     * and the held area of a linear strategy. */
    static const uint32_t ids[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    fedc_strategy *m = with("fedmedian", ids, 8, 0.5f);
    assert_null(fedc_strategy_partial_held_reserve(m, 9, &err));
    assert_int_equal(err.code, FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "holds at most 8"));
    const size_t Lm = fedc_strategy_partial_sums_len(m);
    assert_int_equal(Lm, 4); /* robust: only the counters */
    int64_t cm[4];
    unsigned char rm[8 * FEDC_STRATEGY_RECORD_BYTES];
    fedc_strategy_partial_sums(m, cm);
    fedc_strategy_partial_records(m, rm);
    float held[8 * P];
    memcpy(held, fedc_strategy_partial_held(m), sizeof held);
    held[3 * P + 4] = INFINITY;
    assert_int_equal(fedc_strategy_partial_set(m, cm, rm, 8, held, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "held update 3 element 4"));
    /* a clean copy passed from outside works */
    fedc_strategy_begin_round(m, 1);
    held[3 * P + 4] = 0.5f;
    assert_int_equal(fedc_strategy_partial_set(m, cm, rm, 8, held, &err), FEDC_OK);
    assert_int_equal(fedc_strategy_finish_round(m, g, NULL, &err), FEDC_OK);
    for (int i = 0; i < P; i++) assert_true(g[i] == 0.5f);
    fedc_strategy_destroy(m);
    fedc_strategy *lin = with("fedavg", ids, 1, 0.5f);
    assert_null(fedc_strategy_partial_held_reserve(lin, 1, &err));
    assert_int_equal(err.code, FEDC_ERR_STATE);
    fedc_strategy_destroy(lin);
}

static void test_assign_balanced_and_deterministic(void **state)
{
    (void)state;
    enum { N = 1000 };
    uint64_t cost[N], load[7], load2[7];
    int owner[N], owner2[N];
    fedc_rng rng;
    fedc_rng_init(&rng, 1, 0, 0, FEDC_RNG_DATA);
    uint64_t total = 0, max = 0;
    for (int i = 0; i < N; i++) {
        cost[i] = 1 + fedc_rng_below(&rng, 600); /* like Dirichlet-skewed client sizes */
        total += cost[i];
        if (cost[i] > max) max = cost[i];
    }
    for (int R = 1; R <= 7; R++) {
        assert_int_equal(fedc_mpi_assign(N, cost, R, owner, load, NULL), FEDC_OK);
        assert_int_equal(fedc_mpi_assign(N, cost, R, owner2, load2, NULL), FEDC_OK);
        assert_memory_equal(owner, owner2, sizeof owner);
        uint64_t check[7] = {0}, sum = 0;
        for (int i = 0; i < N; i++) {
            assert_true(owner[i] >= 0 && owner[i] < R);
            check[owner[i]] += cost[i];
        }
        for (int r = 0; r < R; r++) {
            assert_int_equal(check[r], load[r]);
            sum += load[r];
            /* LPT: at most the mean plus the largest cost; here far better */
            assert_true(load[r] * R <= total + (uint64_t)R * max);
            assert_true(load[r] * R * 100 <= total * 101 + 100 * (uint64_t)R); /* within 1% */
        }
        assert_int_equal(sum, total);
    }
    /* equal costs: round robin by index (ties go to the lowest rank) */
    uint64_t ones[5] = {1, 1, 1, 1, 1};
    assert_int_equal(fedc_mpi_assign(5, ones, 2, owner, NULL, NULL), FEDC_OK);
    int expect[5] = {0, 1, 0, 1, 0};
    assert_memory_equal(owner, expect, sizeof expect);
    /* one big item and small ones: the big one alone */
    uint64_t skew[4] = {1, 100, 1, 1};
    assert_int_equal(fedc_mpi_assign(4, skew, 2, owner, load, NULL), FEDC_OK);
    assert_int_equal(owner[1], 0);
    assert_true(owner[0] == 1 && owner[2] == 1 && owner[3] == 1);
    assert_int_equal(fedc_mpi_assign(0, NULL, 3, NULL, NULL, NULL), FEDC_OK);
}

static void test_without_mpi_or_before_init(void **state)
{
    (void)state;
    /* before fedc_mpi_init (or without MPI): one process */
    assert_int_equal(fedc_mpi_rank(), 0);
    assert_int_equal(fedc_mpi_size(), 1);
    assert_true(fedc_mpi_default_threads() >= 1);
    fedc_err local, err;
    fedc_err_set(&local, FEDC_ERR_IO, "disk on fire");
    assert_int_equal(fedc_mpi_agree(FEDC_ERR_IO, &local, &err), FEDC_ERR_IO);
    assert_string_equal(err.msg, "disk on fire");
    assert_int_equal(fedc_mpi_agree(FEDC_OK, NULL, &err), FEDC_OK);
    /* the launcher's environment */
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMI_SIZE");
    unsetenv("PMIX_RANK");
    assert_int_equal(fedc_mpi_launched(), 0);
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    assert_int_equal(fedc_mpi_launched(), 1);
    unsetenv("OMPI_COMM_WORLD_SIZE");
    assert_non_null(strstr(fedc_mpi_install_hint(), "libopenmpi-dev"));
    if (!fedc_mpi_available()) {
        assert_int_equal(fedc_mpi_init(&err), FEDC_ERR_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "apt-get install libopenmpi-dev openmpi-bin"));
        fedc_mpi_stats st;
        assert_int_equal(fedc_mpi_run(NULL, NULL, NULL, NULL, &st, &err), FEDC_ERR_UNSUPPORTED);
        assert_int_equal(st.ranks, 0);
        fedc_mpi_finalize(); /* harmless */
    } else {
        /* fedc_mpi_run before fedc_mpi_init is a state error, not a crash */
        fedc_config *cfg = fedc_config_create();
        assert_int_equal(fedc_mpi_run((fedc_engine *)1, (const fedc_trainer *)1, cfg, NULL, NULL,
                                      &err),
                         FEDC_ERR_STATE);
        fedc_config_destroy(cfg);
    }
}

/* ---- DP split over two engines ---- */

static float g_mean[4096];
static double g_shared[2];
static int g_shared_ready;

/* The drawing engine's hook: keeps what it drew. */
static fedc_status hook_draw(void *user, float *mean, size_t n, double shared[2], fedc_err *err)
{
    (void)user;
    (void)err;
    assert_true(n <= 4096);
    memcpy(g_mean, mean, n * sizeof *mean);
    memcpy(g_shared, shared, sizeof g_shared);
    g_shared_ready = 1;
    return FEDC_OK;
}

/* The other engine's hook: takes it (a broadcast). */
static fedc_status hook_take(void *user, float *mean, size_t n, double shared[2], fedc_err *err)
{
    (void)user;
    (void)err;
    assert_true(g_shared_ready);
    memcpy(mean, g_mean, n * sizeof *mean);
    memcpy(shared, g_shared, sizeof g_shared);
    g_shared_ready = 0;
    return FEDC_OK;
}

static void test_dp_splits_exactly(void **state)
{
    (void)state;
    const char *sets[] = {"data.dataset=synthetic-iid", "clients.count=16", "clients.per_round=6",
                          "model.spec=logreg", "strategy.name=fedadam", "dp.mode=central",
                          "dp.seeded_noise=true", "dp.noise_multiplier=0.5", "dp.clip=0.5",
                          "dp.delta=0.01", "dp.adaptive_clip=true", "dp.clip_on=server",
                          "dp.sgd=true", "run.rounds=4", NULL};
    fedc_config *cfg = fedc_config_create();
    for (const char *const *s = sets; *s; s++)
        if (fedc_config_set(cfg, *s, "test") != FEDC_OK)
            fail_msg("%s: %s", *s, fedc_config_errmsg(cfg));
    fedc_run one, part[2];
    fedc_err err;
    if (fedc_run_init(&one, cfg, 0, &err) != FEDC_OK) fail_msg("%s", err.msg);
    for (int r = 0; r < 2; r++)
        if (fedc_run_init(&part[r], cfg, 0, &err) != FEDC_OK) fail_msg("%s", err.msg);
    size_t n = fedc_engine_num_params(one.engine);
    fedc_dp_run *dp[2] = {fedc_engine_dp(part[0].engine), fedc_engine_dp(part[1].engine)};
    assert_non_null(dp[0]);
    fedc_dp_run_set_release_hook(dp[0], hook_draw, NULL, 1);
    fedc_dp_run_set_release_hook(dp[1], hook_take, NULL, 0);
    size_t len = fedc_dp_run_partial_len(dp[0]);
    assert_int_equal(len, n + FEDC_ACCUM_TRAILER + 2);
    int64_t *sum = malloc(len * sizeof *sum), *mine = malloc(len * sizeof *mine);
    float *u = malloc(n * sizeof *u);
    unsigned char stats[2][16 * FEDC_ENGINE_DP_STAT_BYTES], all[16 * FEDC_ENGINE_DP_STAT_BYTES];
    for (uint32_t round = 1; round <= 4; round++) {
        const uint32_t *ids, *ids0, *ids1;
        size_t k, k0, k1;
        assert_int_equal(fedc_engine_round_begin(one.engine, &ids, &k, &err), FEDC_OK);
        assert_int_equal(fedc_engine_round_begin(part[0].engine, &ids0, &k0, &err), FEDC_OK);
        assert_int_equal(fedc_engine_round_begin(part[1].engine, &ids1, &k1, &err), FEDC_OK);
        assert_int_equal(k, 6);
        /* client j goes to engine j % 2; its update is random, some above the clip */
        for (size_t j = 0; j < k; j++) {
            fedc_rng rng;
            fedc_rng_init(&rng, 9, round, ids[j], FEDC_RNG_SHUFFLE);
            double scale = j % 3 == 0 ? 0.5 : 0.02;
            for (size_t i = 0; i < n; i++) u[i] = (float)(scale * (fedc_rng_uniform(&rng) - 0.5));
            fedc_fit_out out = {u, NULL, 50 + ids[j], 1.5 + 0.1 * (double)j, NAN, 5 + j};
            fedc_dp_client_report rep = {1};
            float *copy = malloc(n * sizeof *copy);
            memcpy(copy, u, n * sizeof *u);
            assert_int_equal(fedc_engine_submit_dp(one.engine, ids[j], &out, &rep, 0.0, &err),
                             FEDC_OK);
            out.update = copy;
            assert_int_equal(fedc_engine_submit_dp(part[j % 2].engine, ids[j], &out, &rep, 0.0,
                                                   &err),
                             FEDC_OK);
            /* the other engine replays the charge */
            assert_int_equal(fedc_dp_run_charge(dp[1 - j % 2], ids[j], out.num_examples,
                                                out.steps, &err),
                             FEDC_OK);
            free(copy);
        }
        /* combine: the DP partials summed, the counters summed, the statistics concatenated */
        memset(sum, 0, len * sizeof *sum);
        int64_t c0[FEDC_ENGINE_COUNTERS], c1[FEDC_ENGINE_COUNTERS];
        fedc_engine_round_counters(part[0].engine, c0);
        fedc_engine_round_counters(part[1].engine, c1);
        for (int i = 0; i < FEDC_ENGINE_COUNTERS; i++) c0[i] += c1[i];
        size_t ns = 0;
        for (int r = 0; r < 2; r++) {
            fedc_dp_run_partial(dp[r], mine);
            for (size_t i = 0; i < len; i++) sum[i] = wrap_add(sum[i], mine[i]);
            size_t c = fedc_engine_dp_stats_count(part[r].engine);
            fedc_engine_dp_stats(part[r].engine, stats[r]);
            memcpy(all + ns * FEDC_ENGINE_DP_STAT_BYTES, stats[r], c * FEDC_ENGINE_DP_STAT_BYTES);
            ns += c;
        }
        assert_int_equal(ns, 6);
        fedc_round_record ra, rb[2];
        assert_int_equal(fedc_engine_round_end(one.engine, &ra, &err), FEDC_OK);
        for (int r = 0; r < 2; r++) {
            fedc_engine_set_round_counters(part[r].engine, c0);
            assert_int_equal(fedc_dp_run_partial_set(dp[r], sum, &err), FEDC_OK);
            assert_int_equal(fedc_engine_dp_stats_set(part[r].engine, all, ns, &err), FEDC_OK);
            if (fedc_engine_round_end(part[r].engine, &rb[r], &err) != FEDC_OK)
                fail_msg("round %u, engine %d: %s", round, r, err.msg);
            if (memcmp(fedc_engine_global(one.engine), fedc_engine_global(part[r].engine),
                       n * sizeof(float)) != 0)
                fail_msg("round %u: engine %d's model differs from one engine's", round, r);
            assert_int_equal(rb[r].participants, ra.participants);
            assert_int_equal(rb[r].examples, ra.examples);
            assert_true(rb[r].train_loss == ra.train_loss);
            assert_true(rb[r].epsilon == ra.epsilon);
            assert_true(rb[r].dp_clip == ra.dp_clip);
            assert_true(rb[r].dp_unclipped_fraction == ra.dp_unclipped_fraction);
            assert_true(rb[r].dp_sgd_epsilon == ra.dp_sgd_epsilon);
        }
        assert_true(isfinite(ra.epsilon) && ra.epsilon > 0);
        assert_true(isfinite(ra.dp_sgd_epsilon) && ra.dp_sgd_epsilon > 0);
    }
    /* inconsistent counts are refused */
    sum[n + FEDC_ACCUM_TRAILER] = 1;
    sum[n + FEDC_ACCUM_TRAILER + 1] = 2;
    assert_int_equal(fedc_dp_run_partial_set(dp[0], sum, &err), FEDC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "2 unclipped of 1 observed"));
    fedc_dp_run_set_release_hook(dp[0], NULL, NULL, 1);
    fedc_dp_run_set_release_hook(dp[1], NULL, NULL, 1);
    free(sum);
    free(mine);
    free(u);
    fedc_run_fini(&one);
    fedc_run_fini(&part[0]);
    fedc_run_fini(&part[1]);
    fedc_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_strategy_splits_exactly),
        cmocka_unit_test(test_bad_partials_refused),
        cmocka_unit_test(test_assign_balanced_and_deterministic),
        cmocka_unit_test(test_without_mpi_or_before_init),
        cmocka_unit_test(test_dp_splits_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
