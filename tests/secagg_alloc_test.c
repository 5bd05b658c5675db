/*
 * Allocation-failure torture for the SecAgg+ module (issue 8): a whole protocol round (clients,
 * server, every stage, dropouts at each stage, reconstruction of dropped clients' masks) and
 * the simulation's hook are run with the Nth fedc allocation failing, for N = 1, 2, ... until
 * one succeeds. Each failing run must end with FEDC_ERR_NOMEM, no crash and no leaked byte;
 * the successful one must produce the exact sum. (Secrets live in sodium_malloc memory, which
 * fedc cannot fail on purpose: only fedc_malloc allocations are injected.)
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/secagg.h"

typedef struct round_ctx {
    fedc_secagg_params p;
    uint32_t **xs;
    uint32_t *sum;
    unsigned char *surv;
    double dropout;
    int ok_runs;
    uint32_t survivors;
} round_ctx;

static fedc_status run_round(void *ctx, fedc_err *err)
{
    round_ctx *c = ctx;
    fedc_secagg_sim_opts o = {{c->dropout, c->dropout, c->dropout}, 77, NULL};
    memset(c->sum, 0, c->p.len * sizeof *c->sum);
    fedc_status st =
        fedc_secagg_simulate(&c->p, (const uint32_t *const *)c->xs, &o, c->sum, c->surv, NULL, err);
    if (st == FEDC_OK) {
        /* the exact sum of the survivors' inputs, mod 2^bits */
        uint32_t mask = c->p.bits == 32 ? 0xffffffffu : (1u << c->p.bits) - 1;
        for (size_t i = 0; i < c->p.len; i++) {
            uint32_t want = 0;
            for (uint32_t u = 0; u < c->p.n; u++)
                if (c->surv[u]) want += c->xs[u][i];
            assert_int_equal(c->sum[i], want & mask);
        }
        c->survivors = 0;
        for (uint32_t u = 0; u < c->p.n; u++) c->survivors += c->surv[u];
        c->ok_runs++;
    }
    return st;
}

static void torture(uint32_t n, uint32_t k, uint32_t t, double dropout, uint32_t bits)
{
    round_ctx c;
    memset(&c, 0, sizeof c);
    c.p.n = n;
    c.p.k = k;
    c.p.t = t;
    c.p.bits = bits;
    c.p.len = 37;
    c.p.round = 5;
    for (int i = 0; i < FEDC_SECAGG_SEED_BYTES; i++) c.p.seed[i] = (unsigned char)(i * 7 + 1);
    c.dropout = dropout;
    c.xs = calloc(n, sizeof *c.xs);
    c.sum = calloc(c.p.len, sizeof *c.sum);
    c.surv = calloc(n, 1);
    uint32_t mask = bits == 32 ? 0xffffffffu : (1u << bits) - 1;
    for (uint32_t u = 0; u < n; u++) {
        c.xs[u] = calloc(c.p.len, sizeof **c.xs);
        for (size_t i = 0; i < c.p.len; i++)
            c.xs[u][i] = (uint32_t)(u * 1000003u + i * 7919u) & mask;
    }
    int failures = tu_alloc_torture(run_round, &c, 100000);
    assert_true(failures > 10); /* the round allocates: the injection did reach it */
    assert_int_equal(c.ok_runs, 1); /* exactly one run (the first that could allocate) succeeds */
    if (dropout > 0) assert_true(c.survivors < n); /* and masks of dropped clients were removed */
    for (uint32_t u = 0; u < n; u++) free(c.xs[u]);
    free(c.xs);
    free(c.sum);
    free(c.surv);
}

static void test_round_no_dropout(void **state)
{
    (void)state;
    torture(5, 4, 0, 0, 32);
}

static void test_round_with_dropouts(void **state)
{
    (void)state;
    /* floor(0.25 * alive) clients vanish before each of stages 2, 3 and 4: a dropped client's
     * pairwise masks are reconstructed from shares */
    torture(9, 6, 2, 0.25, 20);
}

typedef struct api_ctx {
    fedc_secagg_params p;
} api_ctx;

/* Each call of the API on its own: create, advertise, a server that takes the message. */
static fedc_status api_calls(void *ctx, fedc_err *err)
{
    api_ctx *a = ctx;
    fedc_secagg_client *cl = NULL;
    fedc_secagg_server *srv = NULL;
    unsigned char *msg = NULL;
    size_t len = 0;
    fedc_status st = fedc_secagg_client_create(&a->p, 1, &cl, err);
    if (st == FEDC_OK) st = fedc_secagg_server_create(&a->p, &srv, err);
    if (st == FEDC_OK) st = fedc_secagg_client_advertise(cl, &msg, &len, err);
    if (st == FEDC_OK) st = fedc_secagg_server_recv(srv, 1, msg, len, err);
    fedc_free(msg);
    fedc_secagg_client_destroy(cl);
    fedc_secagg_server_destroy(srv);
    return st;
}

static void test_api_calls(void **state)
{
    (void)state;
    api_ctx a;
    memset(&a, 0, sizeof a);
    a.p.n = 4;
    a.p.bits = 32;
    a.p.len = 10;
    assert_int_equal(fedc_secagg_params_check(&a.p, NULL), FEDC_OK);
    assert_true(tu_alloc_torture(api_calls, &a, 10000) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_no_dropout),
        cmocka_unit_test(test_round_with_dropouts),
        cmocka_unit_test(test_api_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
