/*
 * The in-process simulation transport: a pool of worker threads (src/sim/worker.c, shared
 * with the MPI ranks) trains the round's selected clients and hands each result to the round
 * engine as it is ready.
 *
 * Each simulated client runs the client pipeline of a real one (worker.c): trainer->fit, then
 * the DP task the engine gives it (fedc_dp_client_apply: clip, local noise), then submit. A record
 * with dp_budget_stop ends the run (FEDC_OK) before the round that would exceed the budget.
 *
 * Compression (docs/COMPRESSION.md): the global model goes down encoded with
 * compress.download and clients train from what they decode; each update goes up encoded with
 * compress.upload (after the DP task, with error feedback when configured) and the engine
 * aggregates what the server decodes. The record's bytes are the messages' sizes.
 *
 * Checkpoints (fedc/sim.h, src/sim/checkpoint.c): after a round, when due, the engine's state
 * and the clients' own (the pool's c_i and residuals); run.resume loads the newest first.
 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fedc/alloc.h"
#include "fedc/log.h"
#include "fedc/sim.h"
#include "sim/checkpoint.h"
#include "sim/sim_secagg.h"
#include "sim/worker.h"

typedef struct sim_run {
    fedci_pool pool;          /* workers, per-client state, codecs (src/sim/worker.c) */
    fedc_engine *engine;
    const fedc_config *cfg;
    /* federated evaluation results, per position in the round's evaluation list */
    fedc_eval_out *eval_out;
    fedc_status *eval_status;
    fedci_sim_secagg *secagg; /* [secagg] enabled: updates go through SecAgg+ (sim_secagg.c) */
} sim_run;

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

static void run_fini(sim_run *run)
{
    fedci_pool_fini(&run->pool);
    fedc_free(run->eval_out);
    fedc_free(run->eval_status);
    fedci_sim_secagg_destroy(run->secagg);
}

static fedc_status run_init(sim_run *run, const fedc_trainer *trainer, int nworkers,
                            fedc_err *err)
{
    FEDC_TRY(fedci_pool_init(&run->pool, run->engine, trainer, run->cfg, nworkers, err));
    FEDC_TRY(fedci_sim_secagg_create(run->cfg, run->engine, &run->secagg, err));
    run->pool.secagg = run->secagg;
    return FEDC_OK;
}

/* Checkpoints (fedc/sim.h): the engine's state and the clients' own, committed at once. */
static fedc_status checkpoint(sim_run *run, const char *dir, fedc_err *err)
{
    uint32_t round = fedc_engine_last_round(run->engine);
    char path[4096];
    FEDC_TRY(fedci_ckpt_begin(dir, round, err));
    fedci_ckpt_path(path, sizeof path, dir, round, 1, "engine.safetensors");
    FEDC_TRY(fedc_engine_checkpoint_save(run->engine, path, err));
    size_t n = fedci_pool_state_count(&run->pool), P = run->pool.num_params;
    if (n) {
        uint32_t *ids = fedc_malloc(2 * n * sizeof *ids);
        float *data = fedc_malloc(n * P * sizeof *data);
        fedc_status st = ids && data ? FEDC_OK
                                     : fedc_err_set(err, FEDC_ERR_NOMEM,
                                                    "checkpoint: out of memory for the state of "
                                                    "%zu clients",
                                                    n);
        if (st == FEDC_OK) {
            fedci_pool_state_pack(&run->pool, ids, data);
            fedci_ckpt_path(path, sizeof path, dir, round, 1, "clients.safetensors");
            st = fedci_ckpt_write_clients(path, P, n, ids, data, round, err);
        }
        fedc_free(ids);
        fedc_free(data);
        FEDC_TRY(st);
    }
    int keep = (int)fedc_config_int(run->cfg, "run.keep_checkpoints");
    return fedci_ckpt_commit(dir, round, n, keep, err);
}

/* Resume: the newest checkpoint in dir, if any, into the engine and the pool. */
static fedc_status resume(sim_run *run, const char *dir, fedc_err *err)
{
    uint32_t round;
    FEDC_TRY(fedc_sim_checkpoint_latest(dir, &round, err));
    if (round == 0) {
        fedc_log(FEDC_LOG_INFO, "sim", "resume: no checkpoint in %s: starting at round 1", dir);
        return FEDC_OK;
    }
    char path[4096];
    size_t n;
    FEDC_TRY(fedci_ckpt_manifest(dir, round, &n, err));
    fedci_ckpt_path(path, sizeof path, dir, round, 0, "engine.safetensors");
    FEDC_TRY(fedc_engine_checkpoint_load(run->engine, path, err));
    if (n) {
        fedci_ckpt_path(path, sizeof path, dir, round, 0, "clients.safetensors");
        FEDC_TRY(fedci_pool_state_load(&run->pool, path, n, NULL, 0, err));
    }
    fedc_log(FEDC_LOG_INFO, "sim", "resumed from %s/round-%08u", dir, round);
    return FEDC_OK;
}

/* Centralized and federated evaluation after a round, into rec. */
static fedc_status evaluate(sim_run *run, fedc_round_record *rec, fedc_err *err)
{
    /* DP: a run stopped by its budget ends here: evaluate its last model too */
    FEDC_TRY(fedci_pool_eval_central(&run->pool, rec, rec->dp_budget_stop, err));
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
    FEDC_TRY(fedci_pool_eval(&run->pool, rec->round, ids, n, NULL, o, s, err));
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
    run.cfg = cfg;
    int threads = opts && opts->threads > 0 ? opts->threads : (int)fedc_config_int(cfg, "run.threads");
    if (threads <= 0) threads = fedc_sim_default_threads();
    fedc_status st = run_init(&run, trainer, threads, err);
    const char *ckpt = fedc_config_str(cfg, "run.checkpoint_dir");
    if (!ckpt[0]) ckpt = NULL;
    if (st == FEDC_OK && fedc_config_bool(cfg, "run.resume")) {
        st = ckpt ? resume(&run, ckpt, err)
                  : fedc_err_set(err, FEDC_ERR_CONFIG,
                                 "resume: no checkpoint directory (run.checkpoint_dir)");
    }
    uint32_t rounds = (uint32_t)fedc_config_int(cfg, "run.rounds");
    uint32_t every = (uint32_t)fedc_config_int(cfg, "run.checkpoint_every");
    while (st == FEDC_OK && fedc_engine_last_round(engine) < rounds) {
        double t0 = now_seconds();
        const uint32_t *clients;
        size_t n;
        st = fedc_engine_round_begin(engine, &clients, &n, err);
        if (st != FEDC_OK) break;
        if ((st = fedci_pool_download(&run.pool, err)) != FEDC_OK) break;
        if (run.secagg && (st = fedci_sim_secagg_begin(run.secagg, fedc_engine_last_round(engine) + 1,
                                                       clients, n, err)) != FEDC_OK)
            break;
        st = fedci_pool_fit(&run.pool, clients, n, err);
        if (st == FEDC_OK && run.secagg) st = fedci_sim_secagg_finish(run.secagg, engine, err);
        if (st != FEDC_OK) break;
        fedc_round_record rec;
        fedc_err rerr;
        fedc_err_clear(&rerr);
        st = fedc_engine_round_end(engine, &rec, &rerr);
        if (run.pool.down) /* compression: as encoded */
            rec.bytes_down = (uint64_t)rec.selected * run.pool.down_bytes;
        if (run.pool.workers[0].up) rec.bytes_up = atomic_load(&run.pool.up_bytes);
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
        int stop = opts && opts->on_round && opts->on_round(opts->user, &rec);
        if (ckpt && (stop || rec.dp_budget_stop || rec.round % every == 0 || rec.round >= rounds) &&
            (st = checkpoint(&run, ckpt, err)) != FEDC_OK)
            break;
        if (stop) break;
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
