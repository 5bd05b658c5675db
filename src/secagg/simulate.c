/*
 * One SecAgg+ round in-process (fedc_secagg_simulate): n client state machines and the server,
 * the messages carried as byte buffers exactly as a transport would, and clients vanishing
 * before stages 2, 3 and 4 as configured (deterministic by seed). Used by the tests, by
 * `fedc sim` with [secagg] enabled and by `fedc bench secagg`.
 */
#include <assert.h>
#include <math.h>
#include <time.h>

#include "secagg/secagg_internal.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

fedc_status fedc_secagg_simulate(const fedc_secagg_params *params, const uint32_t *const *xs,
                                 const fedc_secagg_sim_opts *opts, uint32_t *sum,
                                 unsigned char *survived, fedc_secagg_sim_stats *stats,
                                 fedc_err *err)
{
    assert(params && xs && opts && sum);
    fedc_secagg_params p = *params;
    FEDC_TRY(fedc_secagg_params_check(&p, err));
    for (int i = 0; i < 3; i++)
        if (!(opts->dropout[i] >= 0 && opts->dropout[i] < 1))
            return fedc_err_set(err, FEDC_ERR_INVALID, "secagg sim: dropout %g outside [0, 1)",
                                opts->dropout[i]);
    fedc_secagg_server *srv = NULL;
    fedc_secagg_client **cl = fedc_calloc(p.n, sizeof *cl);
    unsigned char *up = fedc_calloc(p.n, 1); /* client still running */
    uint64_t *sent = fedc_calloc(p.n, sizeof *sent);
    uint32_t *order = fedc_malloc((size_t)p.n * sizeof *order);
    double *t_cl = fedc_calloc(p.n, sizeof *t_cl); /* each client's own time */
    double t_server = 0;
    fedc_status st = FEDC_OK;
    if (!cl || !up || !sent || !order || !t_cl) {
        st = fedc_err_set(err, FEDC_ERR_NOMEM, "secagg sim: out of memory");
        goto done;
    }
    double t0 = now();
    st = fedc_secagg_server_create(&p, &srv, err);
    t_server += now() - t0;
    if (st) goto done;
    for (uint32_t u = 0; u < p.n && st == FEDC_OK; u++) {
        unsigned char *m = NULL;
        size_t ml = 0;
        t0 = now();
        st = fedc_secagg_client_create(&p, u, &cl[u], err);
        if (st == FEDC_OK) st = fedc_secagg_client_advertise(cl[u], &m, &ml, err);
        double t1 = now();
        t_cl[u] += t1 - t0;
        if (st) break;
        sent[u] += ml;
        up[u] = 1;
        fedc_status rs = fedc_secagg_server_recv(srv, u, m, ml, err);
        t_server += now() - t1;
        fedc_free(m);
        if (rs) st = rs;
    }
    if (st) goto done;
    fedc_rng rng;
    fedc_rng_init(&rng, opts->seed, p.round, FEDC_RNG_ANY, FEDC_RNG_FAILURE);
    for (int stage = FEDC_SECAGG_ADVERTISE; stage <= FEDC_SECAGG_UNMASK; stage++) {
        t0 = now();
        st = fedc_secagg_server_close_stage(srv, err);
        t_server += now() - t0;
        if (st || stage == FEDC_SECAGG_UNMASK) break;
        /* clients vanish before answering the next stage */
        uint32_t alive = 0;
        for (uint32_t u = 0; u < p.n; u++)
            if (up[u]) order[alive++] = u;
        uint32_t drop = (uint32_t)floor(opts->dropout[stage - 1] * alive);
        fedc_rng_shuffle_u32(&rng, order, alive);
        for (uint32_t i = 0; i < drop; i++)
            up[order[i]] = 0;
        if (opts->drop_before)
            for (uint32_t u = 0; u < p.n; u++)
                if (opts->drop_before[u] == stage + 1) up[u] = 0;
        for (uint32_t u = 0; u < p.n && st == FEDC_OK; u++) {
            if (!up[u]) continue;
            unsigned char *in = NULL, *m = NULL;
            size_t il = 0, ml = 0;
            t0 = now();
            st = fedc_secagg_server_message(srv, u, &in, &il, err);
            double t1 = now();
            t_server += t1 - t0;
            if (st) break;
            if (stage == FEDC_SECAGG_ADVERTISE)
                st = fedc_secagg_client_share(cl[u], in, il, &m, &ml, err);
            else if (stage == FEDC_SECAGG_SHARE)
                st = fedc_secagg_client_masked(cl[u], in, il, xs[u], &m, &ml, err);
            else
                st = fedc_secagg_client_unmask(cl[u], in, il, &m, &ml, err);
            double t2 = now();
            t_cl[u] += t2 - t1;
            fedc_free(in);
            if (st) break;
            sent[u] += ml;
            st = fedc_secagg_server_recv(srv, u, m, ml, err);
            t_server += now() - t2;
            fedc_free(m);
        }
        if (st) break;
    }
    if (st) goto done;
    memcpy(sum, fedc_secagg_server_sum(srv), p.len * sizeof *sum);
    if (survived)
        for (uint32_t u = 0; u < p.n; u++)
            survived[u] = (unsigned char)fedc_secagg_server_alive(srv, u);
    if (stats) {
        uint64_t bytes = 0;
        uint32_t full = 0;
        double t_client = 0;
        for (uint32_t u = 0; u < p.n; u++)
            if (up[u]) {
                bytes += sent[u];
                t_client += t_cl[u];
                full++;
            }
        stats->survivors = fedc_secagg_server_alive_count(srv);
        stats->client_seconds = full ? t_client / full : 0;
        stats->server_seconds = t_server;
        stats->client_bytes_up = full ? bytes / full : 0;
        stats->expansion = (double)stats->client_bytes_up / (4.0 * (double)p.len);
    }
done:
    if (cl)
        for (uint32_t u = 0; u < p.n; u++)
            fedc_secagg_client_destroy(cl[u]);
    fedc_free(cl);
    fedc_free(up);
    fedc_free(sent);
    fedc_free(order);
    fedc_free(t_cl);
    fedc_secagg_server_destroy(srv);
    return st;
}
