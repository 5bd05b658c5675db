/* SecAgg+ under the simulation ([secagg] enabled): the round's model matches plain FedAvg
 * within the quantization step, dropouts show in the record, runs are reproducible whatever
 * the thread count, and configurations secure aggregation cannot serve are refused. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/run.h"
#include "fedc/secagg.h"

static fedc_config *make_cfg(const char *const *extra)
{
    static const char *base[] = {
        "run.seed=5",           "run.rounds=1",          "clients.count=12",
        "clients.per_round=6",  "data.dataset=synthetic-iid", "data.partition=iid",
        "model.spec=logreg",    "train.epochs=1",        "train.lr=0.05",
        "strategy.name=fedavg", "strategy.max_weight=1000", "eval.every=0",
        NULL};
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (int i = 0; base[i]; i++)
        assert_int_equal(fedc_config_set(cfg, base[i], "test"), FEDC_OK);
    for (int i = 0; extra && extra[i]; i++)
        assert_int_equal(fedc_config_set(cfg, extra[i], "test"), FEDC_OK);
    return cfg;
}

typedef struct outcome {
    fedc_status st;
    fedc_err err;
    fedc_round_record rec;
    float *global;
    size_t n;
} outcome;

static int on_round(void *user, const fedc_round_record *rec)
{
    ((outcome *)user)->rec = *rec;
    return 0;
}

static void run_sim(const char *const *extra, int threads, outcome *o)
{
    memset(o, 0, sizeof *o);
    fedc_config *cfg = make_cfg(extra);
    fedc_run run;
    o->st = fedc_run_init(&run, cfg, 0, &o->err); /* some refusals come from the engine */
    if (o->st != FEDC_OK) {
        fedc_config_destroy(cfg);
        return;
    }
    fedc_sim_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.threads = threads;
    opts.on_round = on_round;
    opts.user = o;
    o->st = fedc_sim_run(run.engine, run.trainer, cfg, &opts, &o->err);
    o->n = fedc_engine_num_params(run.engine);
    o->global = malloc(o->n * sizeof(float));
    memcpy(o->global, fedc_engine_global(run.engine), o->n * sizeof(float));
    fedc_run_fini(&run);
    fedc_config_destroy(cfg);
}

static void test_matches_fedavg(void **state)
{
    (void)state;
    outcome plain, sa;
    run_sim(NULL, 1, &plain);
    static const char *on[] = {"secagg.enabled=true", "secagg.clip=4", NULL};
    run_sim(on, 1, &sa);
    assert_int_equal(plain.st, FEDC_OK);
    if (sa.st != FEDC_OK) fail_msg("%s", sa.err.msg);
    assert_int_equal(sa.rec.participants, 6);
    assert_int_equal(sa.rec.examples, plain.rec.examples);
    /* the updates of lr 0.05 over one epoch stay inside the clip range 4; the mean's error
     * is below one quantization step: 2 * 4 / (levels - 1), levels = 2^32 / (6 * 1000) */
    fedc_secagg_quant q = {4, 0, 1000, 32};
    assert_int_equal(fedc_secagg_quant_check(&q, 6, NULL), FEDC_OK);
    double step = 8.0 / (q.levels - 1.0);
    float d = fedc_vec_max_abs_diff(plain.n, plain.global, sa.global);
    if (!(d <= step * 1.01 + 1e-6)) fail_msg("secagg model differs by %g (step %g)", d, step);
    assert_true(d > 0); /* quantized: not bit-identical to the float path */
    free(plain.global);
    free(sa.global);
}

static void test_dropout_and_determinism(void **state)
{
    (void)state;
    static const char *on[] = {"secagg.enabled=true", "secagg.dropout=0.2",
                               "secagg.threshold=2", "run.rounds=2", NULL};
    outcome a, b;
    run_sim(on, 1, &a);
    run_sim(on, 2, &b);
    if (a.st != FEDC_OK) fail_msg("%s", a.err.msg);
    assert_int_equal(b.st, FEDC_OK);
    /* 6 -> 5 (before sharing) -> 4 (before the masked input) */
    assert_int_equal(a.rec.participants, 4);
    assert_int_equal(a.rec.rejected, 2);
    assert_true(a.rec.bytes_up > 4 * 4 * a.n);
    assert_memory_equal(a.global, b.global, a.n * sizeof(float));
    free(a.global);
    free(b.global);
}

static void expect_refused(const char *setting, const char *needle)
{
    const char *extra[] = {"secagg.enabled=true", setting, NULL};
    outcome o;
    run_sim(extra, 1, &o);
    assert_int_equal(o.st, FEDC_ERR_CONFIG);
    if (!strstr(o.err.msg, needle)) fail_msg("'%s': message '%s' lacks '%s'", setting, o.err.msg,
                                             needle);
    free(o.global);
}

/* SecAgg + central DP: the clients clip, the protocol sums (weights 1), the engine adds the
 * noise once to the unmasked sum: the model is the plain central-DP one within the
 * quantization error, with the same epsilon; dp.clip_on = server and adaptive clipping (which
 * need each update, or each client's clipped bit) are refused. */
static void test_central_dp(void **state)
{
    (void)state;
    static const char *dp[] = {"dp.mode=central", "dp.seeded_noise=true", "dp.clip=0.5",
                               "dp.noise_multiplier=0.3", "dp.delta=1e-3", NULL};
    static const char *sa[] = {"dp.mode=central",         "dp.seeded_noise=true", "dp.clip=0.5",
                               "dp.noise_multiplier=0.3", "dp.delta=1e-3",
                               "secagg.enabled=true",     "secagg.clip=0.5", NULL};
    outcome plain, sec;
    run_sim(dp, 1, &plain);
    run_sim(sa, 1, &sec);
    if (plain.st != FEDC_OK) fail_msg("%s", plain.err.msg);
    if (sec.st != FEDC_OK) fail_msg("%s", sec.err.msg);
    assert_int_equal(sec.rec.participants, 6);
    assert_true(isfinite(sec.rec.epsilon) && sec.rec.epsilon > 0);
    assert_true(sec.rec.epsilon == plain.rec.epsilon);
    assert_true(sec.rec.dp_noise_stddev == plain.rec.dp_noise_stddev);
    /* weights 1: levels = 2^24 (the cap); the sum of 6 quantized values is off by < 6 steps
     * of 2 * 0.5 / (2^24 - 1), then divided by per_round */
    float d = fedc_vec_max_abs_diff(plain.n, plain.global, sec.global);
    if (!(d <= 6.0 / (1 << 24) + 1e-6)) fail_msg("secagg + DP model differs by %g", d);
    /* and the noise is there: without it the model is another one */
    static const char *quiet[] = {"dp.mode=central",          "dp.seeded_noise=true",
                                  "dp.clip=0.5",              "dp.noise_multiplier=0.001",
                                  "dp.delta=1e-3",            "secagg.enabled=true",
                                  "secagg.clip=0.5", NULL};
    outcome q;
    run_sim(quiet, 1, &q);
    assert_int_equal(q.st, FEDC_OK);
    assert_true(fedc_vec_max_abs_diff(q.n, q.global, sec.global) > 1e-3);
    free(plain.global);
    free(sec.global);
    free(q.global);
    static const char *srv[] = {"secagg.enabled=true", "dp.mode=central", "dp.clip_on=server",
                                NULL};
    static const char *ada[] = {"secagg.enabled=true", "dp.mode=central",
                                "dp.adaptive_clip=true", NULL};
    const char *const *bad[] = {srv, ada};
    const char *needle[] = {"dp.clip_on = client", "adaptive"};
    for (int i = 0; i < 2; i++) {
        outcome o;
        run_sim(bad[i], 1, &o);
        assert_int_equal(o.st, FEDC_ERR_CONFIG);
        if (!strstr(o.err.msg, needle[i])) fail_msg("'%s' lacks '%s'", o.err.msg, needle[i]);
        free(o.global);
    }
}

static void test_refused_configs(void **state)
{
    (void)state;
    expect_refused("strategy.name=fedmedian", "linear strategy");
    expect_refused("strategy.name=scaffold", "linear strategy");
    expect_refused("dp.mode=local", "dp.mode");
    expect_refused("dp.sgd=true", "dp.sgd");
    expect_refused("compress.upload=q8", "compress.upload");
    expect_refused("secagg.max_weight=1000000000", "overflow");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_fedavg),
        cmocka_unit_test(test_dropout_and_determinism),
        cmocka_unit_test(test_central_dp),
        cmocka_unit_test(test_refused_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
