/*
 * The library API of real federations, in one process: a fedc_server and three clients, each
 * a fedc_client_run thread with a trainer written here (not the built-in one: any C program
 * can be a client, DESIGN.md rule 5), over loopback HTTP. The federation's model equals
 * fedc_sim_run's with the same trainer and config, bit for bit; a client given a trainer of
 * another shape is refused cleanly; the store lists the rounds. Under the sanitizer build this
 * is also the leak check of the server and client objects.
 */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config_build.h"
#include "fedc/fedc.h"

#if !FEDC_CLIENT_ONLY

#include "fedc/client.h"
#include "fedc/server.h"
#include "fedc/store.h"

/* A trainer without data: client k's update pulls the model towards a point of its own,
 * target_k[i] = sin(k + 0.1 i), by a fraction lr of the distance. Deterministic. */
typedef struct toy {
    fedc_layout *layout;
    size_t n;
} toy;

static const fedc_layout *toy_layout(const void *shared) { return ((const toy *)shared)->layout; }

static fedc_status toy_init(const void *shared, uint64_t seed, float *p, fedc_err *err)
{
    (void)err;
    const toy *t = shared;
    for (size_t i = 0; i < t->n; i++) p[i] = (float)((double)(seed % 7) * 0.01 * cos((double)i));
    return FEDC_OK;
}

static fedc_status toy_fit(const void *shared, void *worker, const fedc_fit_ins *ins,
                           fedc_fit_out *out, fedc_err *err)
{
    (void)worker;
    (void)err;
    const toy *t = shared;
    double lr = ins->lr > 0 ? ins->lr : 0.5;
    for (size_t i = 0; i < t->n; i++) {
        double target = sin((double)ins->client + 0.1 * (double)i);
        out->update[i] = (float)(lr * (target - ins->global[i]));
    }
    out->num_examples = 10 + ins->client;
    out->train_loss = 1.0 / ins->round;
    out->steps = 1;
    return FEDC_OK;
}

static fedc_status toy_eval(const void *shared, void *worker, const fedc_eval_ins *ins,
                            fedc_eval_out *out, fedc_err *err)
{
    (void)shared;
    (void)worker;
    (void)ins;
    (void)out;
    return fedc_err_set(err, FEDC_ERR_NOTFOUND, "no test set");
}

static const fedc_trainer_ops toy_ops = {
    .name = "toy",
    .layout = toy_layout,
    .init_params = toy_init,
    .fit = toy_fit,
    .evaluate = toy_eval,
};

static void toy_make(toy *t, size_t n)
{
    t->n = n;
    t->layout = fedc_layout_create();
    int64_t a[2] = {(int64_t)(n / 4), 2}, b[1] = {(int64_t)(n - 2 * (n / 4))};
    assert_int_equal(fedc_layout_add(t->layout, "0.weight", 2, a, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(t->layout, "0.bias", 1, b, NULL), FEDC_OK);
}

static fedc_config *make_config(void)
{
    static const char *const sets[] = {"run.rounds=4",
                                       "run.seed=21",
                                       "clients.count=3",
                                       "clients.per_round=3",
                                       "clients.min=3",
                                       "eval.every=0",
                                       "round.deadline=60",
                                       "server.linger=1",
                                       "client.retry_initial=0.05",
                                       "client.retry_max=0.2",
                                       NULL};
    fedc_config *cfg = fedc_config_create();
    for (int i = 0; sets[i]; i++) assert_int_equal(fedc_config_set(cfg, sets[i], "test"), FEDC_OK);
    return cfg;
}

typedef struct job {
    fedc_client *client;
    const fedc_trainer *trainer;
    const fedc_config *cfg;
    fedc_status st;
    fedc_client_summary sum;
    fedc_err err;
} job;

static void *client_main(void *p)
{
    job *j = p;
    j->st = fedc_client_run(j->client, j->trainer, j->cfg, &j->sum, &j->err);
    return NULL;
}

typedef struct srv {
    fedc_server *s;
    fedc_status st;
    fedc_err err;
} srv;

static void *server_main(void *p)
{
    srv *v = p;
    v->st = fedc_server_run(v->s, &v->err);
    return NULL;
}

static int count_rounds(void *user, const fedc_store_round *r)
{
    int *n = user;
    (*n)++;
    assert_int_equal(r->rec.participants, 3);
    return 0;
}

static void test_library_federation(void **state)
{
    (void)state;
    toy t, other;
    toy_make(&t, 1001);
    toy_make(&other, 1002);
    fedc_trainer tr = {&toy_ops, &t}, tr_other = {&toy_ops, &other};
    fedc_config *cfg = make_config();
    fedc_err err;

    /* the simulation's model */
    fedc_engine *e;
    assert_int_equal(fedc_engine_create(cfg, &tr, &e, &err), FEDC_OK);
    fedc_sim_opts so = {1, NULL, NULL};
    assert_int_equal(fedc_sim_run(e, &tr, cfg, &so, &err), FEDC_OK);
    char sim_sha[65];
    fedc_vec_sha256_hex(fedc_engine_num_params(e), fedc_engine_global(e), sim_sha);
    fedc_engine_destroy(e);

    /* keys, allow-list, server */
    char *dir = tu_tempdir("netapi");
    char state_dir[4096];
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    fedc_key *keys[4];
    fedc_store *st;
    assert_int_equal(fedc_store_open(state_dir, &st, &err), FEDC_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fedc_key_generate(&keys[i], &err), FEDC_OK);
        uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
        fedc_key_public(keys[i], pk);
        uint32_t id;
        assert_int_equal(fedc_store_allow(st, pk, NULL, &id, NULL, &err), FEDC_OK);
        assert_int_equal(id, (uint32_t)i);
    }
    fedc_store_close(st);
    fedc_server_opts o;
    memset(&o, 0, sizeof o);
    o.listen = "127.0.0.1:0";
    o.state_dir = state_dir;
    srv v;
    memset(&v, 0, sizeof v);
    if (fedc_server_create(cfg, &tr, &o, &v.s, &err) != FEDC_OK) fail_msg("%s", err.msg);
    assert_int_equal(strlen(fedc_server_run_id(v.s)), 32);
    assert_int_equal(fedc_server_resumed_round(v.s), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", fedc_server_port(v.s));
    pthread_t stid;
    assert_int_equal(pthread_create(&stid, NULL, server_main, &v), 0);

    /* hello: the run as a client sees it (key 3 is allowed but not in this run's 3 clients) */
    fedc_client_opts co = {url, keys[3], NULL, 0, cfg, NULL, NULL, 0};
    fedc_client *bad;
    assert_int_equal(fedc_client_create(&co, &bad, &err), FEDC_OK);
    fedc_client_run_info info;
    assert_int_equal(fedc_client_hello(bad, &info, &err), FEDC_OK);
    assert_int_equal(info.client_id, 3);
    assert_int_equal(info.num_params, 1001);
    assert_int_equal(info.rounds, 4);
    assert_string_equal(info.strategy, "fedavg");
    fedc_client_destroy(bad);

    /* three clients with the right trainer */
    job jobs[3];
    pthread_t tid[3];
    for (int i = 0; i < 3; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        fedc_client_opts c = {url, keys[i], NULL, 0, cfg, NULL, NULL, 0};
        assert_int_equal(fedc_client_create(&c, &jobs[i].client, &err), FEDC_OK);
        jobs[i].trainer = &tr;
        jobs[i].cfg = cfg;
        assert_int_equal(pthread_create(&tid[i], NULL, client_main, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(tid[i], NULL);
        if (jobs[i].st != FEDC_OK) fail_msg("client %d: %s", i, jobs[i].err.msg);
        assert_int_equal(jobs[i].sum.tasks, 4);
        assert_int_equal(jobs[i].sum.accepted, 4);
        assert_int_equal(jobs[i].sum.rounds, 4);
        assert_string_equal(jobs[i].sum.model_sha256, sim_sha);
    }
    pthread_join(stid, NULL);
    if (v.st != FEDC_OK) fail_msg("server: %s", v.err.msg);
    const fedc_engine *se = fedc_server_engine(v.s);
    char fed_sha[65];
    fedc_vec_sha256_hex(fedc_engine_num_params(se), fedc_engine_global(se), fed_sha);
    assert_string_equal(fed_sha, sim_sha);

    /* the same directory again: the finished run is found (operational keys may change) */
    fedc_server_destroy(v.s);
    memset(&v, 0, sizeof v);
    assert_int_equal(fedc_config_set(cfg, "server.threads=2", "test"), FEDC_OK);
    assert_int_equal(fedc_server_create(cfg, &tr, &o, &v.s, &err), FEDC_OK);
    assert_int_equal(fedc_server_resumed_round(v.s), 4); /* the finished run, found again */
    fedc_server_destroy(v.s);

    fedc_store *st2;
    assert_int_equal(fedc_store_open(state_dir, &st2, &err), FEDC_OK);
    fedc_store_run run;
    assert_int_equal(fedc_store_run_get(st2, &run, &err), FEDC_OK);
    assert_int_equal(run.finished, 1);
    assert_string_equal(run.model_sha256, sim_sha);
    int n = 0;
    assert_int_equal(fedc_store_rounds(st2, count_rounds, &n, &err), FEDC_OK);
    assert_int_equal(n, 4);
    fedc_store_close(st2);

    /* a trainer of another shape against a live server */
    fedc_config_set(cfg, "run.rounds=5", "test"); /* another run: another directory */
    snprintf(state_dir, sizeof state_dir, "%s/state2", dir);
    memset(&v, 0, sizeof v);
    assert_int_equal(fedc_store_open(state_dir, &st, &err), FEDC_OK);
    uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
    fedc_key_public(keys[0], pk);
    assert_int_equal(fedc_store_allow(st, pk, NULL, NULL, NULL, &err), FEDC_OK);
    fedc_store_close(st);
    assert_int_equal(fedc_server_create(cfg, &tr, &o, &v.s, &err), FEDC_OK);
    snprintf(url, sizeof url, "http://127.0.0.1:%u", fedc_server_port(v.s));
    assert_int_equal(pthread_create(&stid, NULL, server_main, &v), 0);
    fedc_client_opts c0 = {url, keys[0], NULL, 0, cfg, NULL, NULL, 0};
    assert_int_equal(fedc_client_create(&c0, &bad, &err), FEDC_OK);
    fedc_client_summary sum;
    assert_int_equal(fedc_client_run(bad, &tr_other, cfg, &sum, &err), FEDC_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "1001"));
    fedc_client_destroy(bad);
    fedc_server_stop(v.s);
    pthread_join(stid, NULL);
    assert_int_equal(v.st, FEDC_ERR_ABORTED);
    fedc_server_destroy(v.s);

    for (int i = 0; i < 4; i++) fedc_key_destroy(keys[i]);
    for (int i = 0; i < 3; i++) fedc_client_destroy(jobs[i].client);
    fedc_layout_destroy(t.layout);
    fedc_layout_destroy(other.layout);
    fedc_config_destroy(cfg);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_library_federation)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#else

static void test_client_only(void **state)
{
    (void)state;
    skip(); /* no server in a client-only build */
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_client_only)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

#endif
