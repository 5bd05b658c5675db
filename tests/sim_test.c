/*
 * The round engine and the simulation transport, end to end on generated data: the federation
 * learns, the same seed gives the bit-identical model whatever the thread count, bad configs
 * are refused, and bad client results are rejected while the round goes on.
 */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/data.h"
#include "fedc/engine.h"
#include "fedc/sim.h"
#include "fedc/trainer_nn.h"

static fedc_dataset *train, *test;

static int setup(void **state)
{
    (void)state;
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

static fedc_config *make_config(const char *const *sets)
{
    static const char *const base[] = {
        "run.rounds=8",          "run.seed=5",         "clients.count=20",
        "clients.per_round=6",   "clients.min=2",      "data.partition=iid",
        "model.spec=logreg",     "train.epochs=2",     "train.batch_size=10",
        "train.lr=1",            "eval.every=1",       NULL};
    fedc_config *cfg = fedc_config_create();
    for (int i = 0; base[i]; i++) assert_int_equal(fedc_config_set(cfg, base[i], "test"), FEDC_OK);
    for (int i = 0; sets && sets[i]; i++)
        if (fedc_config_set(cfg, sets[i], "test") != FEDC_OK)
            fail_msg("%s", fedc_config_errmsg(cfg));
    return cfg;
}

static fedc_partition *make_partition(const fedc_config *cfg)
{
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    assert_int_equal(fedc_partition_scheme_parse(fedc_config_str(cfg, "data.partition"), &o.scheme), 0);
    o.num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    o.seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    o.alpha = fedc_config_double(cfg, "data.alpha");
    fedc_partition *p = NULL;
    fedc_err err;
    if (fedc_partition_create(train, &o, &p, &err) != FEDC_OK) fail_msg("%s", err.msg);
    return p;
}

typedef struct run_result {
    fedc_status status; /* wrap mode 4: the run's error */
    char errmsg[512];
    char sha[65];
    double accuracy;
    fedc_round_record last;
    uint32_t rounds_seen;
    uint32_t rejected_total;
    uint32_t aborted_rounds;
} run_result;

static int collect(void *user, const fedc_round_record *rec)
{
    run_result *r = user;
    r->last = *rec;
    r->rounds_seen++;
    r->rejected_total += rec->rejected;
    if (rec->participants == 0) r->aborted_rounds++;
    if (rec->evaluated) r->accuracy = rec->test_accuracy;
    return 0;
}

/* A trainer wrapped around the built-in one, to misbehave on purpose. */
typedef struct wrap {
    const fedc_trainer *inner;
    int mode; /* 1: NaN update from clients with id % 3 == 0; 2: every fit fails */
} wrap;
static wrap the_wrap;

static const fedc_layout *w_layout(const void *s)
{
    const wrap *w = s;
    return w->inner->ops->layout(w->inner->shared);
}
static fedc_status w_init_params(const void *s, uint64_t seed, float *p, fedc_err *e)
{
    const wrap *w = s;
    return w->inner->ops->init_params(w->inner->shared, seed, p, e);
}
static fedc_status w_worker_init(const void *s, void *st, fedc_err *e)
{
    const wrap *w = s;
    return w->inner->ops->worker_init(w->inner->shared, st, e);
}
static void w_worker_fini(void *st)
{
    the_wrap.inner->ops->worker_fini(st);
}
static fedc_status w_fit(const void *s, void *st, const fedc_fit_ins *ins, fedc_fit_out *out,
                         fedc_err *e)
{
    const wrap *w = s;
    if (w->mode == 2) return fedc_err_set(e, FEDC_ERR_NETWORK, "client %u vanished", ins->client);
    fedc_status r = w->inner->ops->fit(w->inner->shared, st, ins, out, e);
    if (r == FEDC_OK && w->mode == 1 && ins->client % 3 == 0) out->update[7] = NAN;
    return r;
}
static fedc_status w_eval(const void *s, void *st, const fedc_eval_ins *ins, fedc_eval_out *out,
                          fedc_err *e)
{
    const wrap *w = s;
    if (w->mode == 4 && ins->client == FEDC_CLIENT_SERVER && ins->part == 5)
        return fedc_err_set(e, FEDC_ERR_INVALID, "test label 99 out of range in slice %u",
                            ins->part);
    return w->inner->ops->evaluate(w->inner->shared, st, ins, out, e);
}

static fedc_trainer_ops wrap_ops;

static void run_sim(const fedc_config *cfg, int threads, int wrap_mode, run_result *res)
{
    memset(res, 0, sizeof *res);
    fedc_partition *part = make_partition(cfg);
    fedc_trainer *trainer = NULL;
    fedc_err err;
    if (fedc_trainer_nn_create(cfg, train, test, part, &trainer, &err) != FEDC_OK)
        fail_msg("%s", err.msg);
    fedc_trainer wrapped = *trainer;
    if (wrap_mode) {
        the_wrap.inner = trainer;
        the_wrap.mode = wrap_mode;
        wrap_ops = *trainer->ops;
        wrap_ops.layout = w_layout;
        wrap_ops.init_params = w_init_params;
        wrap_ops.worker_init = w_worker_init;
        wrap_ops.worker_fini = w_worker_fini;
        wrap_ops.fit = w_fit;
        wrap_ops.evaluate = w_eval;
        if (wrap_mode == 3) wrap_ops.eval_parts = 0; /* the central set whole, on one thread */
        wrapped.ops = &wrap_ops;
        wrapped.shared = &the_wrap;
    }
    fedc_engine *engine = NULL;
    if (fedc_engine_create(cfg, &wrapped, &engine, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_sim_opts opts = {threads, collect, res};
    res->status = fedc_sim_run(engine, &wrapped, cfg, &opts, &err);
    if (wrap_mode == 4) { /* expected to fail: the caller checks the message */
        snprintf(res->errmsg, sizeof res->errmsg, "%s", fedc_err_message(&err));
        fedc_engine_destroy(engine);
        fedc_trainer_nn_destroy(trainer);
        fedc_partition_destroy(part);
        return;
    }
    if (res->status != FEDC_OK) fail_msg("%s", err.msg);
    assert_int_equal(fedc_engine_last_round(engine), fedc_config_int(cfg, "run.rounds"));
    assert_int_equal(fedc_vec_find_nonfinite(fedc_engine_num_params(engine),
                                             fedc_engine_global(engine)),
                     -1);
    fedc_vec_sha256_hex(fedc_engine_num_params(engine), fedc_engine_global(engine), res->sha);
    fedc_engine_destroy(engine);
    fedc_trainer_nn_destroy(trainer);
    fedc_partition_destroy(part);
}

/* FedProx Synthetic IID is close to linearly separable: logistic regression gets most of
 * it. Chance is ~30% (the largest class); the measured accuracy after 8 rounds is 0.87. */
static void test_learns_and_is_deterministic(void **state)
{
    (void)state;
    fedc_config *cfg = make_config(NULL);
    run_result r1, r2, r2b;
    run_sim(cfg, 1, 0, &r1);
    run_sim(cfg, 2, 0, &r2);
    run_sim(cfg, 2, 0, &r2b);
    assert_true(r1.accuracy > 0.80);
    assert_int_equal(r1.rounds_seen, 8);
    assert_int_equal(r1.last.participants, 6);
    assert_int_equal(r1.last.selected, 6);
    assert_int_equal(r1.last.rejected, 0);
    assert_true(r1.last.examples > 6 * 500);
    assert_int_equal(r1.last.bytes_up, 6ull * 610 * 4); /* logreg: 60*10 + 10 params */
    assert_string_equal(r1.sha, r2.sha);
    assert_string_equal(r2.sha, r2b.sha);
    /* The central evaluation runs in FEDC_EVAL_PARTS slices over the workers: the same metric
     * bits for 1, 2 and 3 threads, and the same as evaluating the set whole (accuracy exactly,
     * the mean loss to rounding). */
    run_result r3t, whole;
    run_sim(cfg, 3, 0, &r3t);
    run_sim(cfg, 2, 3, &whole);
    assert_true(r1.last.evaluated && r2.last.evaluated && r3t.last.evaluated);
    assert_memory_equal(&r1.last.test_loss, &r2.last.test_loss, sizeof(double));
    assert_memory_equal(&r1.last.test_loss, &r3t.last.test_loss, sizeof(double));
    assert_memory_equal(&r1.last.test_accuracy, &r3t.last.test_accuracy, sizeof(double));
    assert_string_equal(whole.sha, r1.sha);
    assert_true(whole.last.test_accuracy == r1.last.test_accuracy);
    assert_close(r1.last.test_loss, whole.last.test_loss, 1e-12, 0);
    /* a slice's failure reaches the caller with the trainer's own message */
    run_result bad;
    run_sim(cfg, 2, 4, &bad);
    assert_int_equal(bad.status, FEDC_ERR_INVALID);
    if (!strstr(bad.errmsg, "central evaluation: ") ||
        !strstr(bad.errmsg, "test label 99 out of range in slice 5"))
        fail_msg("message: %s", bad.errmsg);
    fedc_config_destroy(cfg);
    /* another seed: another model */
    const char *const other[] = {"run.seed=6", NULL};
    cfg = make_config(other);
    run_result r3;
    run_sim(cfg, 2, 0, &r3);
    assert_string_not_equal(r1.sha, r3.sha);
    fedc_config_destroy(cfg);
}

/* Combining slice results: examples weight the losses, accuracy comes from exact counts,
 * empty slices count for nothing, NAN accuracy propagates, one slice is copied. */
static void test_eval_combine(void **state)
{
    (void)state;
    fedc_eval_out parts[4] = {{0.5, 3.0 / 7.0, 7}, {NAN, NAN, 0}, {1.5, 1.0, 3}, {0.25, 0.1, 10}};
    fedc_eval_out out;
    fedc_eval_combine(parts, 4, &out);
    assert_int_equal(out.num_examples, 20);
    assert_close(out.loss, (0.5 * 7 + 1.5 * 3 + 0.25 * 10) / 20, 1e-15, 0);
    assert_true(out.accuracy == 7.0 / 20.0); /* (3 + 3 + 1) / 20, exactly */
    parts[3].accuracy = NAN;
    fedc_eval_combine(parts, 4, &out);
    assert_true(isnan(out.accuracy));
    fedc_eval_combine(parts + 1, 1, &out); /* one slice: as it is */
    assert_true(isnan(out.loss) && out.num_examples == 0);
    fedc_eval_combine(parts, 0, &out);
    assert_true(isnan(out.loss) && isnan(out.accuracy) && out.num_examples == 0);
}

/* Thread-count independence for a server optimizer, a robust strategy and SCAFFOLD. */
static void test_strategies_deterministic(void **state)
{
    (void)state;
    const char *names[] = {"strategy.name=fedadam", "strategy.name=fedmedian",
                           "strategy.name=krum", "strategy.name=scaffold",
                           "strategy.name=fedavgm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *const sets[] = {names[i], "run.rounds=4", "strategy.num_malicious=1", NULL};
        fedc_config *cfg = make_config(sets);
        run_result a, b;
        run_sim(cfg, 1, 0, &a);
        run_sim(cfg, 2, 0, &b);
        if (strcmp(a.sha, b.sha) != 0) fail_msg("%s: threads change the model", names[i]);
        if (!(a.accuracy > 0.5)) fail_msg("%s: accuracy %.3f", names[i], a.accuracy);
        fedc_config_destroy(cfg);
    }
}

static void test_bad_results_rejected(void **state)
{
    (void)state;
    fedc_config *cfg = make_config(NULL);
    run_result r;
    run_sim(cfg, 2, 1, &r);
    /* clients 0, 3, 6, ... send a NaN: refused and counted; the others carry the rounds */
    assert_true(r.rejected_total > 0);
    assert_int_equal(r.aborted_rounds, 0);
    assert_true(r.accuracy > 0.75);
    assert_int_equal(r.last.participants + r.last.rejected, r.last.selected);
    /* every client failing: every round aborted, the model stays the initial one */
    run_result f, init;
    run_sim(cfg, 2, 2, &f);
    assert_int_equal(f.aborted_rounds, 8);
    assert_int_equal(f.last.rejected, 6);
    const char *const zero[] = {"run.rounds=1", "train.lr=1e-30", NULL};
    fedc_config *cfg0 = make_config(zero);
    run_sim(cfg0, 1, 2, &init);
    assert_string_equal(f.sha, init.sha);
    fedc_config_destroy(cfg0);
    fedc_config_destroy(cfg);
}

static void expect_engine_error(const char *const *sets, fedc_status code, const char *needle)
{
    fedc_config *cfg = make_config(sets);
    fedc_partition *part = make_partition(cfg);
    fedc_trainer *trainer = NULL;
    fedc_engine *engine = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_trainer_nn_create(cfg, train, test, part, &trainer, &err);
    if (st == FEDC_OK) st = fedc_engine_create(cfg, trainer, &engine, &err);
    if (st != code) fail_msg("status %d (want %d): %s", st, code, err.msg);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
    assert_null(engine);
    fedc_trainer_nn_destroy(trainer);
    fedc_partition_destroy(part);
    fedc_config_destroy(cfg);
}

static void test_bad_config(void **state)
{
    (void)state;
    const char *const too_many[] = {"clients.per_round=21", NULL};
    expect_engine_error(too_many, FEDC_ERR_CONFIG, "clients.per_round = 21 is more than clients.count = 20");
    const char *const min[] = {"clients.min=7", NULL};
    expect_engine_error(min, FEDC_ERR_CONFIG, "clients.min = 7");
    const char *const strat[] = {"strategy.name=fedbogus", NULL};
    expect_engine_error(strat, FEDC_ERR_NOTFOUND, "fedbogus");
    const char *const spec[] = {"model.spec=dense(10) wobble", NULL};
    expect_engine_error(spec, FEDC_ERR_INVALID, "wobble");
    const char *const none[] = {"train.epochs=0", "train.steps=0", NULL};
    expect_engine_error(none, FEDC_ERR_CONFIG, "train.epochs");
    const char *const attack[] = {"attack.kind=explode", NULL};
    expect_engine_error(attack, FEDC_ERR_INVALID, "explode");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_and_is_deterministic),
        cmocka_unit_test(test_strategies_deterministic),
        cmocka_unit_test(test_eval_combine),
        cmocka_unit_test(test_bad_results_rejected),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
