/* Compression in the simulation (src/sim/sim.c with include/fedc/codec.h), end to end on
 * generated data: the record's bytes are the encoded messages' sizes next to the float32
 * ones, the aggregate is what the server decodes (the model changes, learning goes on), the
 * result is bit-identical whatever the thread count, and refused combinations stop the run
 * before it starts. */
#include "testutil.h"

#include <math.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/codec.h"
#include "fedc/run.h"

typedef struct result {
    char sha[65];
    double accuracy;
    uint32_t rounds;
    uint64_t up, up_raw, down, down_raw; /* summed over rounds */
    uint32_t rejected;
} result;

static int collect(void *user, const fedc_round_record *rec)
{
    result *r = user;
    r->rounds++;
    r->up += rec->bytes_up;
    r->up_raw += rec->bytes_up_raw;
    r->down += rec->bytes_down;
    r->down_raw += rec->bytes_down_raw;
    r->rejected += rec->rejected;
    if (rec->evaluated) r->accuracy = rec->test_accuracy;
    return 0;
}

static fedc_status run(const char *const *sets, int threads, result *r, fedc_err *err)
{
    static const char *const base[] = {
        "run.rounds=8",        "run.seed=5",          "clients.count=20",  "clients.per_round=6",
        "clients.min=2",       "data.dataset=synthetic-iid", "data.partition=iid",
        "model.spec=logreg",   "train.epochs=2",      "train.batch_size=10", "train.lr=1",
        "eval.every=8",        NULL};
    fedc_config *cfg = fedc_config_create();
    assert_non_null(cfg);
    for (int i = 0; base[i]; i++) assert_int_equal(fedc_config_set(cfg, base[i], "t"), FEDC_OK);
    for (int i = 0; sets && sets[i]; i++)
        if (fedc_config_set(cfg, sets[i], "t") != FEDC_OK)
            fail_msg("%s", fedc_config_errmsg(cfg));
    memset(r, 0, sizeof *r);
    fedc_run fr;
    fedc_status st = fedc_run_init(&fr, cfg, 0, err);
    if (st == FEDC_OK) {
        fedc_sim_opts opts = {threads, collect, r};
        st = fedc_sim_run(fr.engine, fr.trainer, cfg, &opts, err);
        if (st == FEDC_OK)
            fedc_vec_sha256_hex(fedc_engine_num_params(fr.engine), fedc_engine_global(fr.engine),
                                r->sha);
    }
    fedc_run_fini(&fr);
    fedc_config_destroy(cfg);
    return st;
}

static void run_ok(const char *const *sets, int threads, result *r)
{
    fedc_err err;
    if (run(sets, threads, r, &err) != FEDC_OK) fail_msg("%s", err.msg);
    assert_int_equal(r->rounds, 8);
    assert_int_equal(r->rejected, 0);
}

static void test_bytes_and_learning(void **state)
{
    (void)state;
    result plain, q8, topk, down;
    run_ok(NULL, 2, &plain);
    /* no encoding: the bytes are the float32 ones (logreg: 610 parameters, 6 clients) */
    assert_int_equal(plain.up, 8ull * 6 * 610 * 4);
    assert_int_equal(plain.up, plain.up_raw);
    assert_int_equal(plain.down, plain.down_raw);

    const char *s_q8[] = {"compress.upload=q8", NULL};
    run_ok(s_q8, 2, &q8);
    assert_int_equal(q8.up_raw, plain.up_raw);
    /* per message: header, 2 tensors (sizes + min/max), one byte per value */
    assert_int_equal(q8.up, 8ull * 6 * (88 + 2 * 8 + 2 * 8 + 610));
    assert_int_equal(q8.down, plain.down); /* downloads untouched */
    /* unbiased 8-bit updates: the model moves, the accuracy stays */
    assert_string_not_equal(q8.sha, plain.sha);
    assert_close(q8.accuracy, plain.accuracy, 0, 0.03);

    const char *s_topk[] = {"compress.upload=topk:10%+q8", NULL}; /* error feedback: auto */
    run_ok(s_topk, 2, &topk);
    assert_true(topk.up * 10 < topk.up_raw);
    assert_true(topk.accuracy > plain.accuracy - 0.1); /* measured: 0.819 vs 0.871 */

    const char *s_down[] = {"compress.download=q8:b=64", "compress.upload=f16", NULL};
    run_ok(s_down, 2, &down);
    assert_true(down.down * 3 < down.down_raw);
    assert_int_equal(down.up, 8ull * 6 * (88 + 610 * 2));
    assert_close(down.accuracy, plain.accuracy, 0, 0.03);
    fprintf(stderr, "accuracy: float32 %.4f, q8 %.4f, topk:10%%+q8 %.4f, q8 down + f16 up %.4f\n",
            plain.accuracy, q8.accuracy, topk.accuracy, down.accuracy);
}

/* Encoding is keyed by (seed, round, client): any thread count gives the same model. */
static void test_deterministic(void **state)
{
    (void)state;
    const char *sets[] = {"compress.upload=topk:20%+q4:b=16+zstd", "compress.download=q8",
                          NULL};
    result a, b, c;
    run_ok(sets, 1, &a);
    run_ok(sets, 2, &b);
    run_ok(sets, 5, &c);
    assert_string_equal(a.sha, b.sha);
    assert_string_equal(a.sha, c.sha);
    assert_int_equal(a.up, b.up);
    assert_int_equal(a.down, c.down);
}

static void test_refused(void **state)
{
    (void)state;
    result r;
    fedc_err err;
    const char *bad[] = {"compress.upload=q8+topk:1%", NULL};
    assert_int_equal(run(bad, 1, &r, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "compress.upload"));
    const char *dp[] = {"compress.upload=q8", "dp.mode=central", "dp.clip_on=client",
                        "dp.seeded_noise=true", NULL};
    assert_int_equal(run(dp, 1, &r, &err), FEDC_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "dp.clip_on"));
    /* the server clipping what it decodes is allowed */
    const char *dp_ok[] = {"compress.upload=q8", "dp.mode=central", "dp.clip_on=server",
                           "dp.seeded_noise=true", "dp.noise_multiplier=0.1", NULL};
    run_ok(dp_ok, 2, &r);
    assert_true(r.up * 3 < r.up_raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_and_learning),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
