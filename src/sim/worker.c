/*
 * The simulation's worker pool and per-client step (src/sim/worker.h), used by the in-process
 * transport (sim.c) and by the MPI ranks (mpi.c): one implementation of what a simulated
 * client does, so that every feature of a client (DP's client step, compression with error
 * feedback, SCAFFOLD's control variate, SecAgg's stash) runs the same way under both.
 *
 * Work distribution: a shared atomic cursor over the job's client list; per-worker buffers
 * (trainer state, update and control-delta vectors, upload codec) are allocated once per run.
 * Per-client tables are written only by the worker training that client in the open round,
 * and rounds are sequential, so they need no lock.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "fedc/alloc.h"
#include "fedc/privacy.h"
#include "sim/worker.h"

enum { JOB_FIT, JOB_EVAL };

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int fedci_pool_clients_have_state(const fedci_pool *p)
{
    return p->client_control != NULL || p->residual != NULL;
}

/* Compression: encodes the client's update (with error feedback when configured) and its
 * SCAFFOLD control delta, and replaces them by what the server decodes. */
static fedc_status upload(fedci_pool *p, fedci_worker *w, uint32_t client,
                          const fedc_fit_ins *ins, fedc_fit_out *out, fedc_err *err)
{
    fedc_codec_ctx ctx = {ins->seed, ins->round, client, fedc_engine_layout(p->engine), 0};
    const uint8_t *msg;
    size_t len;
    if (p->residual) {
        if (!p->residual[client] &&
            !(p->residual[client] = fedc_calloc(p->num_params, sizeof(float))))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "client %u: error-feedback residual",
                                client);
        FEDC_TRY(fedc_codec_encode_ef(w->up, out->update, p->residual[client], p->num_params,
                                      &ctx, &msg, &len, err));
    } else {
        FEDC_TRY(fedc_codec_encode(w->up, out->update, p->num_params, &ctx, &msg, &len, err));
    }
    FEDC_TRY(fedc_codec_decode(w->up, msg, len, out->update, p->num_params, err));
    uint64_t bytes = len;
    if (out->control_delta) {
        FEDC_TRY(fedc_codec_encode(w->up, out->control_delta, p->num_params, &ctx, &msg, &len,
                                   err));
        FEDC_TRY(fedc_codec_decode(w->up, msg, len, out->control_delta, p->num_params, err));
        bytes += len;
    }
    atomic_fetch_add(&p->up_bytes, bytes);
    return FEDC_OK;
}

fedc_status fedci_pool_download(fedci_pool *p, fedc_err *err)
{
    if (!p->down) return FEDC_OK;
    uint32_t round = fedc_engine_last_round(p->engine) + 1;
    fedc_codec_ctx ctx = {(uint64_t)fedc_config_int(p->cfg, "run.seed"), round, FEDC_RNG_ANY,
                          fedc_engine_layout(p->engine), round - 1};
    const uint8_t *msg;
    size_t len;
    FEDC_TRY(fedc_codec_encode(p->down, fedc_engine_global(p->engine), p->num_params, &ctx, &msg,
                               &len, err));
    FEDC_TRY(fedc_codec_decode(p->down, msg, len, p->down_global, p->num_params, err));
    p->down_bytes = len;
    return FEDC_OK;
}

/* One simulated client of the open round, from training to submission. Returns only fatal
 * errors (with the message in w->err); the client's own failures are reported to the engine. */
static fedc_status fit_one(fedci_pool *p, fedci_worker *w, uint32_t client)
{
    fedc_fit_ins ins;
    fedc_engine_fit_ins(p->engine, client, &ins);
    if (p->down_global) ins.global = p->down_global; /* compression: what the client got */
    if (p->client_control) {
        /* SCAFFOLD's c_i starts at 0 */
        if (!p->client_control[client] &&
            !(p->client_control[client] = fedc_calloc(p->num_params, sizeof(float))))
            return fedc_err_set(&w->err, FEDC_ERR_NOMEM, "client %u: control variate", client);
        ins.client_control = p->client_control[client];
    }
    fedc_fit_out out;
    memset(&out, 0, sizeof out);
    out.update = w->update;
    out.control_delta = p->client_control ? w->control_delta : NULL;
    out.loss_before = NAN;
    double t0 = now_seconds();
    fedc_err ferr;
    fedc_err_clear(&ferr);
    fedc_status st = p->trainer->ops->fit(p->trainer->shared, w->state, &ins, &out, &ferr);
    double dt = now_seconds() - t0;
    if (st == FEDC_ERR_NOMEM || st == FEDC_ERR_INTERNAL) {
        w->err = ferr;
        return st;
    }
    if (st != FEDC_OK) {
        fedc_engine_report_failure(p->engine, client, fedc_err_message(&ferr));
        return FEDC_OK;
    }
    /* DP: the client's side (clip, local noise) before the update "leaves the device" */
    fedc_dp_client_task task;
    fedc_dp_client_report report = {1};
    fedc_engine_dp_task(p->engine, client, &task);
    if (task.clip > 0 || task.noise_stddev > 0) {
        st = fedc_dp_client_apply(&task, p->num_params, out.update, &report, &ferr);
        if (st == FEDC_ERR_CRYPTO) { /* no secure noise source: nothing private can run */
            w->err = ferr;
            return st;
        }
        if (st != FEDC_OK) {
            fedc_engine_report_failure(p->engine, client, fedc_err_message(&ferr));
            return FEDC_OK;
        }
    }
    if (w->up) { /* compression: what the server receives is what it decodes */
        st = upload(p, w, client, &ins, &out, &ferr);
        if (st == FEDC_ERR_NOMEM) {
            w->err = ferr;
            return st;
        }
        if (st != FEDC_OK) {
            fedc_engine_report_failure(p->engine, client, fedc_err_message(&ferr));
            return FEDC_OK;
        }
    }
    if (p->secagg) { /* secure aggregation: quantized now, submitted as one masked sum */
        fedci_sim_secagg_stash(p->secagg, client, &out, dt);
        return FEDC_OK;
    }
    if (p->log_submissions) {
        size_t i = atomic_fetch_add(&p->nsubs, 1);
        if (i >= p->subs_cap)
            return fedc_err_set(&w->err, FEDC_ERR_INTERNAL,
                                "client %u: more results than the %zu of a round", client,
                                p->subs_cap);
        p->subs[i] = (fedci_submission){client, 0, out.num_examples, out.steps};
    }
    fedc_err serr;
    fedc_err_clear(&serr);
    fedc_engine_submit_dp(p->engine, client, &out, &report, dt, &serr); /* refusals counted */
    return FEDC_OK;
}

static fedc_status eval_one(fedci_pool *p, fedci_worker *w, size_t j)
{
    size_t at = p->eval_pos ? p->eval_pos[j] : j;
    fedc_eval_ins ins = {p->round, p->items[j], fedc_engine_global(p->engine), p->num_params,
                         p->cfg, 0, 0};
    if (p->eval_parts) { /* the slices of the central test set */
        ins.part = (uint32_t)j;
        ins.parts = (uint32_t)p->nitems;
    }
    fedc_err eerr;
    fedc_err_clear(&eerr);
    fedc_status st = p->trainer->ops->evaluate(p->trainer->shared, w->state, &ins,
                                               &p->eval_out[at], &eerr);
    p->eval_status[at] = st;
    if (p->eval_errs) p->eval_errs[at] = eerr;
    if (st == FEDC_ERR_NOMEM || st == FEDC_ERR_INTERNAL) {
        w->err = eerr;
        return st;
    }
    return FEDC_OK;
}

typedef struct worker_arg {
    fedci_pool *p;
    fedci_worker *w;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg *a = arg;
    fedci_pool *p = a->p;
    for (;;) {
        size_t i = atomic_fetch_add(&p->cursor, 1);
        if (i >= p->nitems) break;
        fedc_status st = p->job == JOB_FIT ? fit_one(p, a->w, p->items[i]) : eval_one(p, a->w, i);
        if (st != FEDC_OK) {
            a->w->fatal = st;
            atomic_store(&p->cursor, p->nitems); /* stop the others early */
            break;
        }
    }
    return NULL;
}

/* Runs the current job over p->items with all workers; the calling thread is worker 0. */
static fedc_status run_job(fedci_pool *p, fedc_err *err)
{
    if (p->nitems == 0) return FEDC_OK;
    atomic_store(&p->cursor, 0);
    int nthreads = p->nworkers;
    if ((size_t)nthreads > p->nitems) nthreads = (int)p->nitems;
    pthread_t tid[nthreads];
    worker_arg args[nthreads];
    int started = 1;
    for (int t = 0; t < nthreads; t++) args[t] = (worker_arg){p, &p->workers[t]};
    for (int t = 1; t < nthreads; t++) {
        if (pthread_create(&tid[t], NULL, worker_main, &args[t]) != 0) break;
        started++;
    }
    worker_main(&args[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    for (int t = 0; t < nthreads; t++) {
        if (p->workers[t].fatal != FEDC_OK) {
            fedc_status st = p->workers[t].fatal;
            if (err) *err = p->workers[t].err;
            p->workers[t].fatal = FEDC_OK;
            return st;
        }
    }
    return FEDC_OK;
}

fedc_status fedci_pool_fit(fedci_pool *p, const uint32_t *clients, size_t n, fedc_err *err)
{
    p->job = JOB_FIT;
    p->items = clients;
    p->nitems = n;
    p->round = fedc_engine_last_round(p->engine) + 1;
    atomic_store(&p->up_bytes, 0);
    atomic_store(&p->nsubs, 0);
    return run_job(p, err);
}

fedc_status fedci_pool_eval(fedci_pool *p, uint32_t round, const uint32_t *clients, size_t n,
                            const size_t *pos, fedc_eval_out *out, fedc_status *status,
                            fedc_err *err)
{
    p->job = JOB_EVAL;
    p->items = clients;
    p->nitems = n;
    p->round = round;
    p->eval_pos = pos;
    p->eval_out = out;
    p->eval_status = status;
    return run_job(p, err);
}

fedc_status fedci_pool_eval_central(fedci_pool *p, fedc_round_record *rec, int force,
                                    fedc_err *err)
{
    if (!force && !fedc_engine_eval_due(p->engine, rec->round)) return FEDC_OK;
    fedc_eval_out out;
    fedc_status st;
    if (p->trainer->ops->eval_parts) {
        /* FEDC_EVAL_PARTS slices over every worker, combined in slice order: the same result
         * for any number of workers */
        uint32_t ids[FEDC_EVAL_PARTS];
        fedc_eval_out outs[FEDC_EVAL_PARTS];
        fedc_status sts[FEDC_EVAL_PARTS];
        fedc_err errs[FEDC_EVAL_PARTS];
        for (size_t i = 0; i < FEDC_EVAL_PARTS; i++) ids[i] = FEDC_CLIENT_SERVER;
        p->eval_errs = errs;
        p->eval_parts = 1;
        st = fedci_pool_eval(p, rec->round, ids, FEDC_EVAL_PARTS, NULL, outs, sts, err);
        p->eval_parts = 0;
        p->eval_errs = NULL;
        if (st != FEDC_OK) return st;
        size_t bad = 0;
        while (bad < FEDC_EVAL_PARTS && sts[bad] == FEDC_OK) bad++;
        st = bad < FEDC_EVAL_PARTS ? sts[bad] : FEDC_OK;
        if (st == FEDC_OK)
            fedc_eval_combine(outs, FEDC_EVAL_PARTS, &out);
        else if (st != FEDC_ERR_NOTFOUND) { /* the trainer's own message, where it was */
            if (err) {
                *err = errs[bad];
                fedc_err_prefix(err, "central evaluation: ");
            }
            return st;
        }
    } else {
        fedc_eval_ins ins = {rec->round, FEDC_CLIENT_SERVER, fedc_engine_global(p->engine),
                             p->num_params, p->cfg, 0, 0};
        st = p->trainer->ops->evaluate(p->trainer->shared, p->workers[0].state, &ins, &out,
                                       err);
    }
    if (st == FEDC_OK) {
        rec->evaluated = 1;
        rec->test_loss = out.loss;
        rec->test_accuracy = out.accuracy;
    } else if (st != FEDC_ERR_NOTFOUND) { /* NOTFOUND: no central test set */
        return st;
    }
    return FEDC_OK;
}

fedc_status fedci_pool_log_submissions(fedci_pool *p, size_t cap, fedc_err *err)
{
    fedc_free(p->subs);
    p->subs = fedc_malloc((cap ? cap : 1) * sizeof *p->subs);
    if (!p->subs) return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    p->subs_cap = cap;
    p->log_submissions = 1;
    atomic_store(&p->nsubs, 0);
    return FEDC_OK;
}

void fedci_pool_fini(fedci_pool *p)
{
    if (p->workers) {
        for (int t = 0; t < p->nworkers; t++) {
            fedci_worker *w = &p->workers[t];
            if (w->state_ready && p->trainer->ops->worker_fini)
                p->trainer->ops->worker_fini(w->state);
            fedc_free(w->state);
            fedc_free(w->update);
            fedc_free(w->control_delta);
            fedc_codec_destroy(w->up);
        }
        fedc_free(p->workers);
    }
    if (p->client_control) {
        for (uint32_t c = 0; c < p->num_clients; c++) fedc_free(p->client_control[c]);
        fedc_free(p->client_control);
    }
    if (p->residual) {
        for (uint32_t c = 0; c < p->num_clients; c++) fedc_free(p->residual[c]);
        fedc_free(p->residual);
    }
    fedc_codec_destroy(p->down);
    fedc_free(p->down_global);
    fedc_free(p->subs);
    memset(p, 0, sizeof *p);
}

fedc_status fedci_pool_init(fedci_pool *p, fedc_engine *engine, const fedc_trainer *trainer,
                            const fedc_config *cfg, int nworkers, fedc_err *err)
{
    memset(p, 0, sizeof *p);
    p->engine = engine;
    p->trainer = trainer;
    p->cfg = cfg;
    p->num_params = fedc_engine_num_params(engine);
    p->num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    const fedc_trainer_ops *ops = trainer->ops;
    p->workers = fedc_calloc((size_t)nworkers, sizeof *p->workers);
    if (!p->workers) return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    p->nworkers = nworkers;
    int scaffold = fedc_engine_needs_control(engine);
    for (int t = 0; t < nworkers; t++) {
        fedci_worker *w = &p->workers[t];
        w->state = fedc_calloc(1, ops->worker_size ? ops->worker_size : 1);
        w->update = fedc_malloc(p->num_params * sizeof(float));
        w->control_delta = scaffold ? fedc_malloc(p->num_params * sizeof(float)) : NULL;
        if (!w->state || !w->update || (scaffold && !w->control_delta))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory for worker %d",
                                t);
        if (ops->worker_init) FEDC_TRY(ops->worker_init(trainer->shared, w->state, err));
        w->state_ready = 1;
    }
    if (scaffold && !(p->client_control = fedc_calloc(p->num_clients, sizeof(float *))))
        return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    /* compression ("none" costs nothing: no codec) */
    const char *up = fedc_config_str(cfg, "compress.upload");
    const char *down = fedc_config_str(cfg, "compress.download");
    if (strcmp(up, "none") != 0) {
        for (int t = 0; t < nworkers; t++)
            FEDC_TRY(fedc_codec_create_str(up, &p->workers[t].up, err));
        if (fedc_codec_config_error_feedback(cfg) &&
            !(p->residual = fedc_calloc(p->num_clients, sizeof(float *))))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    }
    if (strcmp(down, "none") != 0) {
        FEDC_TRY(fedc_codec_create_str(down, &p->down, err));
        if (!(p->down_global = fedc_malloc(p->num_params * sizeof(float))))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    }
    return FEDC_OK;
}
