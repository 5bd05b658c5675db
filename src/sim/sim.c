/*
 * The in-process simulation transport: a pool of worker threads trains the round's selected
 * clients and hands each result to the round engine as it is ready.
 *
 * Work distribution: a shared atomic cursor over the round's (sorted) client list; any
 * worker may train any client, since training is a pure function of (seed, round, client,
 * global model). Per-worker buffers (trainer state, update and control-delta vectors) are
 * allocated once per run.
 *
 * Each simulated client runs the client pipeline of a real one: trainer->fit, then the DP
 * task the engine gives it (fedc_dp_client_apply: clip, local noise), then submit. A record
 * with dp_budget_stop ends the run (FEDC_OK) before the round that would exceed the budget.
 *
 * Compression (docs/COMPRESSION.md): the global model goes down encoded with
 * compress.download and clients train from what they decode; each update goes up encoded with
 * compress.upload (after the DP task, with error feedback when configured) and the engine
 * aggregates what the server decodes. The record's bytes are the messages' sizes.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fedc/alloc.h"
#include "fedc/codec.h"
#include "fedc/log.h"
#include "fedc/privacy.h"
#include "fedc/sim.h"
#include "sim/sim_secagg.h"

typedef struct sim_worker {
    void *state;         /* trainer's per-worker state */
    int state_ready;
    float *update;       /* num_params */
    float *control_delta; /* num_params, SCAFFOLD only */
    fedc_status fatal;   /* an error that stops the run (out of memory, trainer bug) */
    fedc_err err;
    fedc_codec *up;      /* compression: compress.upload, NULL when none */
} sim_worker;

typedef struct sim_run {
    fedc_engine *engine;
    const fedc_trainer *trainer;
    const fedc_config *cfg;
    size_t num_params;
    int nworkers;
    sim_worker *workers;
    /* SCAFFOLD: each client's control variate, allocated on first participation */
    float **client_control;
    uint32_t num_clients;
    /* the current job */
    const uint32_t *clients;
    size_t nclients;
    atomic_size_t cursor;
    int job; /* JOB_FIT or JOB_EVAL */
    uint32_t round;
    /* federated evaluation results, per position in `clients` */
    fedc_eval_out *eval_out;
    fedc_status *eval_status;
    /* compression: the downloaded model, the uploads' bytes this round, error feedback's
     * residual per client (allocated on first participation) */
    fedc_codec *down;
    float *down_global;
    uint64_t down_bytes;
    atomic_uint_fast64_t up_bytes;
    float **residual;
    fedci_sim_secagg *secagg; /* [secagg] enabled: updates go through SecAgg+ (sim_secagg.c) */
} sim_run;

enum { JOB_FIT, JOB_EVAL };

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int fedc_sim_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Compression: encodes the client's update (with error feedback when configured) and its
 * SCAFFOLD control delta, and replaces them by what the server decodes. */
static fedc_status upload(sim_run *run, sim_worker *w, uint32_t client, const fedc_fit_ins *ins,
                          fedc_fit_out *out, fedc_err *err)
{
    fedc_codec_ctx ctx = {ins->seed, ins->round, client, fedc_engine_layout(run->engine), 0};
    const uint8_t *msg;
    size_t len;
    if (run->residual) {
        /* only this worker touches this client in this round, and rounds are sequential */
        if (!run->residual[client] &&
            !(run->residual[client] = fedc_calloc(run->num_params, sizeof(float))))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "client %u: error-feedback residual",
                                client);
        FEDC_TRY(fedc_codec_encode_ef(w->up, out->update, run->residual[client],
                                      run->num_params, &ctx, &msg, &len, err));
    } else {
        FEDC_TRY(fedc_codec_encode(w->up, out->update, run->num_params, &ctx, &msg, &len, err));
    }
    FEDC_TRY(fedc_codec_decode(w->up, msg, len, out->update, run->num_params, err));
    uint64_t bytes = len;
    if (out->control_delta) {
        FEDC_TRY(fedc_codec_encode(w->up, out->control_delta, run->num_params, &ctx, &msg, &len,
                                   err));
        FEDC_TRY(fedc_codec_decode(w->up, msg, len, out->control_delta, run->num_params, err));
        bytes += len;
    }
    atomic_fetch_add(&run->up_bytes, bytes);
    return FEDC_OK;
}

/* Compression: the global model as the clients decode it, for the round about to start. */
static fedc_status download(sim_run *run, fedc_err *err)
{
    uint32_t round = fedc_engine_last_round(run->engine) + 1;
    fedc_codec_ctx ctx = {(uint64_t)fedc_config_int(run->cfg, "run.seed"), round, FEDC_RNG_ANY,
                          fedc_engine_layout(run->engine), round - 1};
    const uint8_t *msg;
    size_t len;
    FEDC_TRY(fedc_codec_encode(run->down, fedc_engine_global(run->engine), run->num_params, &ctx,
                               &msg, &len, err));
    FEDC_TRY(fedc_codec_decode(run->down, msg, len, run->down_global, run->num_params, err));
    run->down_bytes = len;
    return FEDC_OK;
}

static fedc_status fit_one(sim_run *run, sim_worker *w, uint32_t client)
{
    fedc_fit_ins ins;
    fedc_engine_fit_ins(run->engine, client, &ins);
    if (run->down_global) ins.global = run->down_global; /* compression: what the client got */
    if (run->client_control) {
        /* lazily created, zero: SCAFFOLD's c_i starts at 0. Only this worker touches this
         * client in this round, and rounds are sequential. */
        if (!run->client_control[client]) {
            run->client_control[client] = fedc_calloc(run->num_params, sizeof(float));
            if (!run->client_control[client])
                return fedc_err_set(&w->err, FEDC_ERR_NOMEM, "client %u: control variate",
                                    client);
        }
        ins.client_control = run->client_control[client];
    }
    fedc_fit_out out;
    memset(&out, 0, sizeof out);
    out.update = w->update;
    out.control_delta = run->client_control ? w->control_delta : NULL;
    out.loss_before = NAN;
    double t0 = now_seconds();
    fedc_err ferr;
    fedc_err_clear(&ferr);
    fedc_status st = run->trainer->ops->fit(run->trainer->shared, w->state, &ins, &out, &ferr);
    double dt = now_seconds() - t0;
    if (st == FEDC_ERR_NOMEM || st == FEDC_ERR_INTERNAL) {
        w->err = ferr;
        return st;
    }
    if (st != FEDC_OK) {
        fedc_engine_report_failure(run->engine, client, fedc_err_message(&ferr));
        return FEDC_OK;
    }
    /* DP: the client's side (clip, local noise) before the update "leaves the device" */
    fedc_dp_client_task task;
    fedc_dp_client_report report = {1};
    fedc_engine_dp_task(run->engine, client, &task);
    if (task.clip > 0 || task.noise_stddev > 0) {
        st = fedc_dp_client_apply(&task, run->num_params, out.update, &report, &ferr);
        if (st == FEDC_ERR_CRYPTO) { /* no secure noise source: nothing private can run */
            w->err = ferr;
            return st;
        }
        if (st != FEDC_OK) {
            fedc_engine_report_failure(run->engine, client, fedc_err_message(&ferr));
            return FEDC_OK;
        }
    }
    if (w->up) { /* compression: what the server receives is what it decodes */
        st = upload(run, w, client, &ins, &out, &ferr);
        if (st == FEDC_ERR_NOMEM) {
            w->err = ferr;
            return st;
        }
        if (st != FEDC_OK) {
            fedc_engine_report_failure(run->engine, client, fedc_err_message(&ferr));
            return FEDC_OK;
        }
    }
    if (run->secagg) { /* secure aggregation: quantized now, submitted as one masked sum */
        fedci_sim_secagg_stash(run->secagg, client, &out, dt);
        return FEDC_OK;
    }
    fedc_err serr;
    fedc_err_clear(&serr);
    fedc_engine_submit_dp(run->engine, client, &out, &report, dt, &serr); /* refusals counted */
    return FEDC_OK;
}

static fedc_status eval_one(sim_run *run, sim_worker *w, size_t pos)
{
    fedc_eval_ins ins = {run->round, run->clients[pos], fedc_engine_global(run->engine),
                         run->num_params, run->cfg};
    fedc_err eerr;
    fedc_err_clear(&eerr);
    fedc_status st = run->trainer->ops->evaluate(run->trainer->shared, w->state, &ins,
                                                 &run->eval_out[pos], &eerr);
    run->eval_status[pos] = st;
    if (st == FEDC_ERR_NOMEM || st == FEDC_ERR_INTERNAL) {
        w->err = eerr;
        return st;
    }
    return FEDC_OK;
}

typedef struct worker_arg {
    sim_run *run;
    sim_worker *w;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg *a = p;
    sim_run *run = a->run;
    for (;;) {
        size_t i = atomic_fetch_add(&run->cursor, 1);
        if (i >= run->nclients) break;
        fedc_status st = run->job == JOB_FIT ? fit_one(run, a->w, run->clients[i])
                                              : eval_one(run, a->w, i);
        if (st != FEDC_OK) {
            a->w->fatal = st;
            atomic_store(&run->cursor, run->nclients); /* stop the others early */
            break;
        }
    }
    return NULL;
}

/* Runs the current job over run->clients with all workers; the calling thread is worker 0. */
static fedc_status run_job(sim_run *run, fedc_err *err)
{
    atomic_store(&run->cursor, 0);
    int nthreads = run->nworkers;
    if ((size_t)nthreads > run->nclients) nthreads = run->nclients ? (int)run->nclients : 1;
    pthread_t tid[nthreads];
    worker_arg args[nthreads];
    int started = 1;
    for (int t = 0; t < nthreads; t++) args[t] = (worker_arg){run, &run->workers[t]};
    for (int t = 1; t < nthreads; t++) {
        if (pthread_create(&tid[t], NULL, worker_main, &args[t]) != 0) break;
        started++;
    }
    worker_main(&args[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    for (int t = 0; t < nthreads; t++) {
        if (run->workers[t].fatal != FEDC_OK) {
            if (err) *err = run->workers[t].err;
            return run->workers[t].fatal;
        }
    }
    return FEDC_OK;
}

static void run_fini(sim_run *run)
{
    if (run->workers) {
        for (int t = 0; t < run->nworkers; t++) {
            sim_worker *w = &run->workers[t];
            if (w->state_ready && run->trainer->ops->worker_fini) run->trainer->ops->worker_fini(w->state);
            fedc_free(w->state);
            fedc_free(w->update);
            fedc_free(w->control_delta);
            fedc_codec_destroy(w->up);
        }
        fedc_free(run->workers);
    }
    if (run->client_control) {
        for (uint32_t c = 0; c < run->num_clients; c++) fedc_free(run->client_control[c]);
        fedc_free(run->client_control);
    }
    fedc_free(run->eval_out);
    fedc_free(run->eval_status);
    if (run->residual) {
        for (uint32_t c = 0; c < run->num_clients; c++) fedc_free(run->residual[c]);
        fedc_free(run->residual);
    }
    fedc_codec_destroy(run->down);
    fedc_free(run->down_global);
    fedci_sim_secagg_destroy(run->secagg);
}

static fedc_status run_init(sim_run *run, int nworkers, fedc_err *err)
{
    const fedc_trainer_ops *ops = run->trainer->ops;
    run->nworkers = nworkers;
    run->workers = fedc_calloc((size_t)nworkers, sizeof *run->workers);
    if (!run->workers) return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    int scaffold = fedc_engine_needs_control(run->engine);
    for (int t = 0; t < nworkers; t++) {
        sim_worker *w = &run->workers[t];
        w->state = fedc_calloc(1, ops->worker_size ? ops->worker_size : 1);
        w->update = fedc_malloc(run->num_params * sizeof(float));
        w->control_delta = scaffold ? fedc_malloc(run->num_params * sizeof(float)) : NULL;
        if (!w->state || !w->update || (scaffold && !w->control_delta))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory for worker %d",
                                t);
        if (ops->worker_init) FEDC_TRY(ops->worker_init(run->trainer->shared, w->state, err));
        w->state_ready = 1;
    }
    if (scaffold) {
        run->client_control = fedc_calloc(run->num_clients, sizeof(float *));
        if (!run->client_control)
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    }
    /* compression ("none" costs nothing: no codec) */
    const char *up = fedc_config_str(run->cfg, "compress.upload");
    const char *down = fedc_config_str(run->cfg, "compress.download");
    if (strcmp(up, "none") != 0) {
        for (int t = 0; t < nworkers; t++)
            FEDC_TRY(fedc_codec_create_str(up, &run->workers[t].up, err));
        if (fedc_codec_config_error_feedback(run->cfg) &&
            !(run->residual = fedc_calloc(run->num_clients, sizeof(float *))))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    }
    if (strcmp(down, "none") != 0) {
        FEDC_TRY(fedc_codec_create_str(down, &run->down, err));
        if (!(run->down_global = fedc_malloc(run->num_params * sizeof(float))))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    }
    return fedci_sim_secagg_create(run->cfg, run->engine, &run->secagg, err);
}

/* Centralized and federated evaluation after a round, into rec. */
static fedc_status evaluate(sim_run *run, fedc_round_record *rec, fedc_err *err)
{
    const fedc_trainer_ops *ops = run->trainer->ops;
    /* DP: a run stopped by its budget ends here: evaluate its last model too */
    if (fedc_engine_eval_due(run->engine, rec->round) || rec->dp_budget_stop) {
        fedc_eval_ins ins = {rec->round, FEDC_CLIENT_SERVER, fedc_engine_global(run->engine),
                             run->num_params, run->cfg};
        fedc_eval_out out;
        fedc_status st = ops->evaluate(run->trainer->shared, run->workers[0].state, &ins, &out,
                                       err);
        if (st == FEDC_OK) {
            rec->evaluated = 1;
            rec->test_loss = out.loss;
            rec->test_accuracy = out.accuracy;
        } else if (st != FEDC_ERR_NOTFOUND) { /* NOTFOUND: no central test set */
            return st;
        }
    }
    const uint32_t *ids;
    size_t n;
    fedc_engine_eval_clients(run->engine, rec->round, &ids, &n);
    if (n == 0) return FEDC_OK;
    fedc_eval_out *o = fedc_realloc(run->eval_out, n * sizeof *o);
    if (!o) return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    run->eval_out = o;
    fedc_status *s = fedc_realloc(run->eval_status, n * sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "simulation: out of memory");
    run->eval_status = s;
    run->job = JOB_EVAL;
    run->clients = ids;
    run->nclients = n;
    run->round = rec->round;
    FEDC_TRY(run_job(run, err));
    /* weighted by examples, summed in client order: deterministic */
    double loss = 0, acc = 0;
    uint64_t total = 0;
    uint32_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != FEDC_OK || o[i].num_examples == 0) continue;
        loss += o[i].loss * (double)o[i].num_examples;
        acc += o[i].accuracy * (double)o[i].num_examples;
        total += o[i].num_examples;
        used++;
    }
    if (total > 0) {
        rec->fed_evaluated = 1;
        rec->fed_clients = used;
        rec->fed_loss = loss / (double)total;
        rec->fed_accuracy = acc / (double)total;
    }
    return FEDC_OK;
}

fedc_status fedc_sim_run(fedc_engine *engine, const fedc_trainer *trainer,
                         const fedc_config *cfg, const fedc_sim_opts *opts, fedc_err *err)
{
    sim_run run;
    memset(&run, 0, sizeof run);
    run.engine = engine;
    run.trainer = trainer;
    run.cfg = cfg;
    run.num_params = fedc_engine_num_params(engine);
    run.num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    int threads = opts && opts->threads > 0 ? opts->threads : (int)fedc_config_int(cfg, "run.threads");
    if (threads <= 0) threads = fedc_sim_default_threads();
    fedc_status st = run_init(&run, threads, err);
    uint32_t rounds = (uint32_t)fedc_config_int(cfg, "run.rounds");
    while (st == FEDC_OK && fedc_engine_last_round(engine) < rounds) {
        double t0 = now_seconds();
        const uint32_t *clients;
        size_t n;
        st = fedc_engine_round_begin(engine, &clients, &n, err);
        if (st != FEDC_OK) break;
        atomic_store(&run.up_bytes, 0);
        if (run.down && (st = download(&run, err)) != FEDC_OK) break;
        run.job = JOB_FIT;
        run.clients = clients;
        run.nclients = n;
        if (run.secagg && (st = fedci_sim_secagg_begin(run.secagg, fedc_engine_last_round(engine) + 1,
                                                       clients, n, err)) != FEDC_OK)
            break;
        st = run_job(&run, err);
        if (st == FEDC_OK && run.secagg) st = fedci_sim_secagg_finish(run.secagg, engine, err);
        if (st != FEDC_OK) break;
        fedc_round_record rec;
        fedc_err rerr;
        fedc_err_clear(&rerr);
        st = fedc_engine_round_end(engine, &rec, &rerr);
        if (run.down) rec.bytes_down = (uint64_t)rec.selected * run.down_bytes; /* as encoded */
        if (run.workers[0].up) rec.bytes_up = atomic_load(&run.up_bytes);
        if (run.secagg) fedci_sim_secagg_record(run.secagg, &rec);
        if (st == FEDC_ERR_ABORTED) {
            fedc_log(FEDC_LOG_WARN, "sim", "round %u: %s", rec.round, fedc_err_message(&rerr));
            st = FEDC_OK;
        } else if (st != FEDC_OK) {
            if (err) *err = rerr;
            break;
        }
        st = evaluate(&run, &rec, err);
        if (st != FEDC_OK) break;
        rec.seconds = now_seconds() - t0;
        if (opts && opts->on_round && opts->on_round(opts->user, &rec)) break;
        if (rec.dp_budget_stop) { /* DP: the next round would exceed dp.epsilon_budget */
            fedc_log(FEDC_LOG_INFO, "sim",
                     "round %u: stopping: the next round would spend epsilon %g, more than "
                     "dp.epsilon_budget",
                     rec.round, rec.dp_next_epsilon);
            break;
        }
    }
    run_fini(&run);
    return st;
}
