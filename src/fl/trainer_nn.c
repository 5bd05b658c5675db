/*
 * The built-in trainer: local SGD (or Adam) on a client's shard with fedc's nn engine.
 * Per-worker state holds the workspaces, optimizer and batch buffers, reused across clients:
 * training a client allocates nothing but its batch order.
 *
 * DP-SGD (dp.sgd; Abadi et al. 2016; the blocks marked "DP"): each batch's gradient is the sum
 * of per-example gradients clipped to dp.sgd_clip (fedc_nn_train_batch_clipped), plus
 * N(0, (dp.sgd_noise_multiplier * dp.sgd_clip)^2) per coordinate, divided by the configured
 * batch size (the expected batch, also for a short last batch), then the optimizer's step.
 * The round engine accounts it per client (q = batch / examples, the steps reported).
 * SGD without clipping, DP or SCAFFOLD runs fused into the backward pass
 * (fedc_nn_train_step_sgd), with the same bits as the unfused train_batch + optim_step.
 */
#include <math.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/nn.h"
#include "fedc/optim.h"
#include "fedc/privacy.h"
#include "fedc/strategy.h"
#include "fedc/trainer_nn.h"

#define EVAL_BATCH 250

typedef struct nn_shared {
    fedc_trainer trainer;
    const fedc_config *cfg;
    const fedc_dataset *train, *test;
    const fedc_partition *partition;
    fedc_model *model;
    size_t dim;
    int batch;
    uint32_t *test_idx; /* 0..n_test-1, for evaluating the central test set */
    fedc_optim_config optim;
    int64_t epochs, steps;
    fedc_attack attack;
    uint32_t num_attackers;
    /* DP-SGD */
    int dp_sgd, dp_seeded;
    double dp_clip, dp_stddev;
} nn_shared;

/* Seeded DP-SGD noise uses its own key so that it never repeats the client's seeded local-DP
 * noise stream (both are test-only, NOT private). */
#define DP_SGD_SEED_TWEAK 0x9E3779B97F4A7C15ull

typedef struct nn_worker {
    fedc_nn_workspace *ws, *ws_eval;
    fedc_optim *opt;
    float *params;
    float *x, *xe;
    int32_t *y, *ye;
    fedc_dp_noise *noise; /* DP-SGD's noise source (secure: for the worker's life) */
} nn_worker;

static const fedc_layout *nn_layout(const void *shared)
{
    return fedc_model_layout(((const nn_shared *)shared)->model);
}

static fedc_status nn_init_params(const void *shared, uint64_t seed, float *params, fedc_err *err)
{
    (void)err;
    fedc_model_init_params(((const nn_shared *)shared)->model, params, seed);
    return FEDC_OK;
}

static void nn_worker_fini(void *worker)
{
    nn_worker *w = worker;
    fedc_nn_workspace_destroy(w->ws);
    fedc_nn_workspace_destroy(w->ws_eval);
    fedc_optim_destroy(w->opt);
    fedc_free(w->params);
    fedc_free(w->x);
    fedc_free(w->xe);
    fedc_free(w->y);
    fedc_free(w->ye);
    if (w->noise) fedc_dp_noise_fini(w->noise);
    fedc_free(w->noise);
    memset(w, 0, sizeof *w);
}

static fedc_status nn_worker_init(const void *shared, void *worker, fedc_err *err)
{
    const nn_shared *s = shared;
    nn_worker *w = worker;
    size_t P = fedc_model_param_count(s->model);
    FEDC_TRY(fedc_nn_workspace_create(s->model, s->batch, &w->ws, err));
    FEDC_TRY(fedc_nn_workspace_create(s->model, EVAL_BATCH, &w->ws_eval, err));
    FEDC_TRY(fedc_optim_create(&s->optim, P, &w->opt, err));
    w->params = fedc_malloc(P * sizeof(float));
    w->x = fedc_malloc((size_t)s->batch * s->dim * sizeof(float));
    w->y = fedc_malloc((size_t)s->batch * sizeof(int32_t));
    w->xe = fedc_malloc((size_t)EVAL_BATCH * s->dim * sizeof(float));
    w->ye = fedc_malloc((size_t)EVAL_BATCH * sizeof(int32_t));
    if (!w->params || !w->x || !w->y || !w->xe || !w->ye)
        return fedc_err_set(err, FEDC_ERR_NOMEM, "trainer: out of memory for a worker");
    if (s->dp_sgd) { /* DP */
        if (!(w->noise = fedc_calloc(1, sizeof *w->noise)))
            return fedc_err_set(err, FEDC_ERR_NOMEM, "trainer: out of memory for a worker");
        if (!s->dp_seeded) FEDC_TRY(fedc_dp_noise_init_secure(w->noise, err));
    }
    return FEDC_OK;
}

/* Mean loss and accuracy of params over samples idx[0..n-1] of ds. */
static fedc_status eval_indices(const nn_shared *s, nn_worker *w, const fedc_dataset *ds,
                                const float *params, const uint32_t *idx, size_t n,
                                fedc_eval_out *out, fedc_err *err)
{
    double loss_sum = 0;
    int64_t correct = 0;
    for (size_t i = 0; i < n; i += EVAL_BATCH) {
        int b = (int)(n - i < EVAL_BATCH ? n - i : EVAL_BATCH);
        fedc_data_gather(ds, idx + i, (size_t)b, w->xe, w->ye);
        double ls = 0;
        int64_t c = 0;
        fedc_status st = fedc_nn_eval_batch(w->ws_eval, params, w->xe, w->ye, b, &ls, &c);
        if (st != FEDC_OK)
            return fedc_err_set(err, st, "evaluation: %s", fedc_nn_workspace_errmsg(w->ws_eval));
        loss_sum += ls;
        correct += c;
    }
    (void)s;
    out->num_examples = n;
    out->loss = n ? loss_sum / (double)n : NAN;
    out->accuracy = n ? (double)correct / (double)n : NAN;
    return FEDC_OK;
}

static fedc_status nn_fit(const void *shared, void *worker, const fedc_fit_ins *ins,
                          fedc_fit_out *out, fedc_err *err)
{
    const nn_shared *s = shared;
    nn_worker *w = worker;
    size_t P = ins->num_params, n;
    const uint32_t *idx = fedc_partition_indices(s->partition, ins->client, FEDC_SPLIT_TRAIN, &n);
    if (n == 0) { /* an empty client (data.min_size = 0): 0 examples, which the engine skips */
        memset(out->update, 0, P * sizeof *out->update);
        if (out->control_delta) memset(out->control_delta, 0, P * sizeof *out->control_delta);
        out->num_examples = 0;
        out->steps = 0;
        out->train_loss = NAN;
        return FEDC_OK;
    }
    if (ins->want_loss_before) {
        fedc_eval_out before;
        FEDC_TRY(eval_indices(s, w, s->train, ins->global, idx, n, &before, err));
        out->loss_before = before.loss;
    }
    fedc_vec_copy(P, ins->global, w->params);
    fedc_optim_reset(w->opt);
    fedc_optim_set_lr(w->opt, ins->lr > 0 ? ins->lr : s->optim.lr);
    fedc_optim_set_prox_center(w->opt, ins->prox_mu > 0 ? ins->global : NULL);
    fedc_nn_workspace_set_rng(w->ws, ins->seed, ins->round, ins->client);

    fedc_batch_iter it;
    memset(&it, 0, sizeof it);
    FEDC_TRY(fedc_batch_iter_init(&it, idx, n, (size_t)s->batch, 0, err));
    fedc_rng shuffle;
    fedc_rng_init(&shuffle, ins->seed, ins->round, ins->client, FEDC_RNG_SHUFFLE);
    if (s->dp_sgd && s->dp_seeded) /* DP */
        fedc_dp_noise_init_seeded(w->noise, ins->seed + DP_SGD_SEED_TWEAK, ins->round, ins->client);
    uint64_t total_steps = s->epochs > 0 ? (uint64_t)s->epochs * fedc_batch_iter_num_batches(&it)
                                         : (uint64_t)s->steps;
    float *grad = fedc_nn_workspace_grad(w->ws);
    /* SGD without clipping, DP or SCAFFOLD (the FedAvg and FedProx default) runs fused into
     * the backward pass (fedc_nn_train_step_sgd): the same bits as train_batch + optim_step,
     * less memory traffic. */
    const int fused = !s->dp_sgd && !(ins->server_control && ins->client_control) &&
                      s->optim.kind == FEDC_OPTIM_SGD && !(s->optim.clip_norm > 0.0);
    double loss_sum = 0;
    fedc_status st = FEDC_OK;
    uint64_t step = 0;
    while (step < total_steps && st == FEDC_OK) {
        fedc_batch_iter_epoch(&it, &shuffle);
        const uint32_t *batch;
        size_t b;
        while (step < total_steps && (b = fedc_batch_iter_next(&it, &batch)) > 0) {
            fedc_data_gather(s->train, batch, b, w->x, w->y);
            float loss;
            fedc_sgd_step sgd;
            if (fused && fedc_optim_sgd_fuse(w->opt, &sgd)) {
                st = fedc_nn_train_step_sgd(w->ws, w->params, w->x, w->y, (int)b, &sgd, &loss);
                if (st != FEDC_OK) {
                    fedc_err_set(err, st, "client %u: %s", ins->client,
                                 fedc_nn_workspace_errmsg(w->ws));
                    break;
                }
                loss_sum += loss;
                step++;
                continue;
            }
            if (s->dp_sgd) /* DP: sum of clipped per-example gradients */
                st = fedc_nn_train_batch_clipped(w->ws, w->params, w->x, w->y, (int)b,
                                                 s->dp_clip, &loss, NULL);
            else
                st = fedc_nn_train_batch(w->ws, w->params, w->x, w->y, (int)b, &loss);
            if (st != FEDC_OK) {
                fedc_err_set(err, st, "client %u: %s", ins->client,
                             fedc_nn_workspace_errmsg(w->ws));
                break;
            }
            if (s->dp_sgd) { /* DP: noise on the sum, then the fixed denominator */
                st = fedc_dp_noise_add(w->noise, P, grad, s->dp_stddev, err);
                if (st != FEDC_OK) break;
                fedc_vec_scale(P, 1.0f / (float)s->batch, grad);
            }
            if (ins->server_control && ins->client_control) /* SCAFFOLD: g + c - c_i */
                for (size_t i = 0; i < P; i++)
                    grad[i] += ins->server_control[i] - ins->client_control[i];
            st = fedc_optim_step(w->opt, w->params, grad);
            if (st != FEDC_OK) {
                fedc_err_set(err, st, "client %u: %s", ins->client, fedc_optim_errmsg(w->opt));
                break;
            }
            loss_sum += loss;
            step++;
        }
    }
    fedc_batch_iter_fini(&it);
    if (st != FEDC_OK) return st;
    if (!isfinite(loss_sum))
        return fedc_err_set(err, FEDC_ERR_NONFINITE,
                            "client %u: training diverged (loss is not finite); lower train.lr",
                            ins->client);
    fedc_vec_sub(P, w->params, ins->global, out->update);
    if (ins->server_control && ins->client_control && out->control_delta) {
        /* SCAFFOLD option II (Karimireddy et al. 2020, eq. 4):
         * c_i+ = c_i - c + (x - y_i) / (K lr); delta = c_i+ - c_i = -c - update / (K lr). */
        double klr = (double)step * (ins->lr > 0 ? ins->lr : s->optim.lr);
        for (size_t i = 0; i < P; i++) {
            float delta = (float)(-(double)ins->server_control[i] - out->update[i] / klr);
            out->control_delta[i] = delta;
            ins->client_control[i] += delta;
        }
    }
    if (ins->client < s->num_attackers && s->attack.kind != FEDC_ATTACK_NONE) {
        fedc_rng arng;
        fedc_rng_init(&arng, ins->seed, ins->round, ins->client, FEDC_RNG_ATTACK);
        fedc_attack_apply(&s->attack, out->update, P, &arng);
    }
    out->num_examples = n;
    out->steps = step;
    out->train_loss = step ? loss_sum / (double)step : NAN;
    return FEDC_OK;
}

static fedc_status nn_evaluate(const void *shared, void *worker, const fedc_eval_ins *ins,
                               fedc_eval_out *out, fedc_err *err)
{
    const nn_shared *s = shared;
    nn_worker *w = worker;
    if (ins->client == FEDC_CLIENT_SERVER) {
        if (!s->test) return fedc_err_set(err, FEDC_ERR_NOTFOUND, "no central test set");
        size_t n = fedc_dataset_n(s->test), lo = 0, hi = n;
        if (ins->parts > 1) { /* slice `part`, cut at evaluation-batch boundaries */
            const size_t nb = (n + EVAL_BATCH - 1) / EVAL_BATCH;
            lo = nb * ins->part / ins->parts * EVAL_BATCH;
            hi = nb * (ins->part + 1) / ins->parts * EVAL_BATCH;
            if (hi > n) hi = n;
            if (lo > hi) lo = hi;
        }
        return eval_indices(s, w, s->test, ins->params, s->test_idx + lo, hi - lo, out, err);
    }
    size_t n;
    const uint32_t *idx = fedc_partition_indices(s->partition, ins->client, FEDC_SPLIT_TEST, &n);
    return eval_indices(s, w, s->train, ins->params, idx, n, out, err);
}

static uint64_t nn_num_examples(const void *shared, uint32_t client)
{
    const nn_shared *s = shared;
    return fedc_partition_size(s->partition, client, FEDC_SPLIT_TRAIN);
}

static const fedc_trainer_ops nn_ops = {
    .name = "nn",
    .worker_size = sizeof(nn_worker),
    .layout = nn_layout,
    .init_params = nn_init_params,
    .worker_init = nn_worker_init,
    .worker_fini = nn_worker_fini,
    .fit = nn_fit,
    .evaluate = nn_evaluate,
    .num_examples = nn_num_examples,
    .eval_parts = 1,
};

void fedc_trainer_nn_destroy(fedc_trainer *trainer)
{
    if (!trainer) return;
    nn_shared *s = trainer->shared;
    fedc_model_destroy(s->model);
    fedc_free(s->test_idx);
    fedc_free(s);
}

const struct fedc_model *fedc_trainer_nn_model(const fedc_trainer *trainer)
{
    return ((const nn_shared *)trainer->shared)->model;
}

fedc_status fedc_trainer_nn_create(const fedc_config *cfg, const fedc_dataset *train,
                                   const fedc_dataset *test, const fedc_partition *partition,
                                   fedc_trainer **out, fedc_err *err)
{
    *out = NULL;
    nn_shared *s = fedc_calloc(1, sizeof *s);
    if (!s) return fedc_err_set(err, FEDC_ERR_NOMEM, "trainer: out of memory");
    s->trainer.ops = &nn_ops;
    s->trainer.shared = s;
    s->cfg = cfg;
    s->train = train;
    s->test = test;
    s->partition = partition;
    s->dim = fedc_dataset_dim(train);
    s->batch = (int)fedc_config_int(cfg, "train.batch_size");
    s->epochs = fedc_config_int(cfg, "train.epochs");
    s->steps = fedc_config_int(cfg, "train.steps");
    fedc_optim_config_from(&s->optim, cfg);
    fedc_status st = FEDC_OK;
    if (s->epochs == 0 && s->steps == 0)
        st = fedc_err_set(err, FEDC_ERR_CONFIG,
                          "train.epochs and train.steps are both 0: clients would not train");
    int64_t shape[FEDC_DATA_MAX_DIMS];
    int ndim = fedc_dataset_shape(train, shape);
    if (st == FEDC_OK)
        st = fedc_model_create(fedc_config_str(cfg, "model.spec"), shape, ndim,
                               (int)fedc_dataset_num_classes(train), &s->model, err);
    if (st == FEDC_OK && fedc_partition_num_clients(partition) <
                             (uint64_t)fedc_config_int(cfg, "clients.count"))
        st = fedc_err_set(err, FEDC_ERR_SHAPE, "the partition has %u clients, clients.count is %lld",
                          fedc_partition_num_clients(partition),
                          (long long)fedc_config_int(cfg, "clients.count"));
    if (st == FEDC_OK && test) {
        size_t nt = fedc_dataset_n(test);
        s->test_idx = fedc_malloc((nt ? nt : 1) * sizeof(uint32_t));
        if (!s->test_idx) st = fedc_err_set(err, FEDC_ERR_NOMEM, "trainer: out of memory");
        for (size_t i = 0; st == FEDC_OK && i < nt; i++) s->test_idx[i] = (uint32_t)i;
    }
    if (st == FEDC_OK) st = fedc_attack_parse(fedc_config_str(cfg, "attack.kind"), &s->attack, err);
    /* DP */
    s->dp_sgd = fedc_config_bool(cfg, "dp.sgd");
    s->dp_seeded = fedc_config_bool(cfg, "dp.seeded_noise");
    s->dp_clip = fedc_config_double(cfg, "dp.sgd_clip");
    s->dp_stddev = fedc_config_double(cfg, "dp.sgd_noise_multiplier") * s->dp_clip;
    if (st == FEDC_OK) {
        double frac = fedc_config_double(cfg, "attack.fraction");
        s->num_attackers = (uint32_t)ceil(frac * (double)fedc_config_int(cfg, "clients.count"));
    }
    if (st != FEDC_OK) {
        fedc_trainer_nn_destroy(&s->trainer);
        return st;
    }
    *out = &s->trainer;
    return FEDC_OK;
}
