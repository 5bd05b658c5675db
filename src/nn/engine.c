/*
 * The engine: workspaces and the passes over a model. A workspace owns, sized once for
 * (model, max batch): each layer's output and saved state, one scratch area shared by the
 * layers (the largest need), two ping-pong buffers for activation gradients, the logits'
 * gradient and the parameter gradient. Passes validate their inputs, then run the layers'
 * kernels with no allocation.
 */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/rng.h"
#include "fedc/vec.h"
#include "nn/nn_internal.h"
#include "optim/optim_internal.h"

struct fedc_nn_workspace {
    const fedc_model *m;
    int max_batch;
    float **act;          /* [nlayers] outputs (NULL for flatten: it aliases its input) */
    float **save;         /* [nlayers] state saved by forward */
    const float **io;     /* [nlayers + 1] per pass: io[i] = input of layer i */
    float *scratch;
    float *g[2];          /* activation gradients, ping-pong */
    float *dlogits;
    float *grad;          /* parameter gradient, layout of the params */
    double *pe_sq;        /* per-example squared gradient norms */
    float *pe_grad;       /* one example's gradient (fallback DP path), allocated on first use */
    fedc_rng rng;         /* dropout stream */
    size_t bytes;
    char errmsg[FEDC_ERRMSG_MAX];
};

static fedc_status ws_err(fedc_nn_workspace *ws, fedc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static fedc_status ws_err(fedc_nn_workspace *ws, fedc_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ws->errmsg, sizeof ws->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

static void *ws_alloc(fedc_nn_workspace *ws, size_t count, size_t size, int *failed)
{
    if (count == 0) return NULL;
    void *p = fedc_calloc(count, size);
    if (!p)
        *failed = 1;
    else
        ws->bytes += count * size;
    return p;
}

void fedc_nn_workspace_destroy(fedc_nn_workspace *ws)
{
    if (!ws) return;
    if (ws->act)
        for (size_t i = 0; i < ws->m->nlayers; i++) fedc_free(ws->act[i]);
    if (ws->save)
        for (size_t i = 0; i < ws->m->nlayers; i++) fedc_free(ws->save[i]);
    fedc_free(ws->act);
    fedc_free(ws->save);
    fedc_free(ws->io);
    fedc_free(ws->scratch);
    fedc_free(ws->g[0]);
    fedc_free(ws->g[1]);
    fedc_free(ws->dlogits);
    fedc_free(ws->grad);
    fedc_free(ws->pe_sq);
    fedc_free(ws->pe_grad);
    fedc_free(ws);
}

fedc_status fedc_nn_workspace_create(const fedc_model *model, int max_batch,
                                     fedc_nn_workspace **out, fedc_err *err)
{
    assert(model && out);
    *out = NULL;
    const fedc_model *m = model;
    /* Every [batch x sample] tensor must stay addressable with int GEMM dimensions. */
    size_t widest = m->in_n;
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].out_n > widest) widest = m->layers[i].out_n;
    if (max_batch < 1 || (double)max_batch * (double)widest > 2147483647.0)
        return fedc_err_set(err, FEDC_ERR_INVALID,
                            "workspace batch size %d is outside [1, %.0f] for this model",
                            max_batch, 2147483647.0 / (double)widest);
    fedci_blas_threads_default();
    fedc_nn_workspace *ws = fedc_calloc(1, sizeof *ws);
    if (!ws) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a workspace");
    ws->m = m;
    ws->max_batch = max_batch;
    fedc_rng_init(&ws->rng, 0, FEDC_RNG_ANY, FEDC_RNG_ANY, FEDC_RNG_DROPOUT);
    const size_t B = (size_t)max_batch, n = m->nlayers;
    int failed = 0;
    ws->act = ws_alloc(ws, n, sizeof *ws->act, &failed);
    ws->save = ws_alloc(ws, n, sizeof *ws->save, &failed);
    ws->io = ws_alloc(ws, n + 1, sizeof *ws->io, &failed);
    size_t scratch = 0, gmax = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        const fedci_layer *L = &m->layers[i];
        if (L->kind != FEDCI_FLATTEN)
            ws->act[i] = ws_alloc(ws, B * L->out_n, sizeof(float), &failed);
        ws->save[i] = ws_alloc(ws, B * L->save_ps, sizeof(float), &failed);
        size_t s = fedci_layer_scratch(L, max_batch);
        if (s > scratch) scratch = s;
        if (L->in_n > gmax) gmax = L->in_n;
        if (L->out_n > gmax) gmax = L->out_n;
    }
    if (!failed) {
        ws->scratch = ws_alloc(ws, scratch, sizeof(float), &failed);
        ws->g[0] = ws_alloc(ws, B * gmax, sizeof(float), &failed);
        ws->g[1] = ws_alloc(ws, B * gmax, sizeof(float), &failed);
        ws->dlogits = ws_alloc(ws, B * (size_t)m->out_n, sizeof(float), &failed);
        ws->grad = ws_alloc(ws, fedc_model_param_count(m) + 1, sizeof(float), &failed);
        ws->pe_sq = ws_alloc(ws, B, sizeof(double), &failed);
    }
    if (failed) {
        fedc_nn_workspace_destroy(ws);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating a workspace for batch %d",
                            max_batch);
    }
    *out = ws;
    return FEDC_OK;
}

float *fedc_nn_workspace_grad(fedc_nn_workspace *ws)
{
    assert(ws);
    return ws->grad;
}

size_t fedc_nn_workspace_bytes(const fedc_nn_workspace *ws)
{
    assert(ws);
    return ws->bytes;
}

int fedc_nn_workspace_max_batch(const fedc_nn_workspace *ws)
{
    assert(ws);
    return ws->max_batch;
}

const char *fedc_nn_workspace_errmsg(const fedc_nn_workspace *ws)
{
    assert(ws);
    return ws->errmsg;
}

void fedc_nn_workspace_set_rng(fedc_nn_workspace *ws, uint64_t seed, uint32_t round,
                               uint32_t client)
{
    assert(ws);
    fedc_rng_init(&ws->rng, seed, round, client, FEDC_RNG_DROPOUT);
}

/* ---- validation ---- */

static fedc_status check_x(fedc_nn_workspace *ws, const float *x, int B)
{
    const fedc_model *m = ws->m;
    if (B < 1 || B > ws->max_batch)
        return ws_err(ws, FEDC_ERR_INVALID, "batch of %d samples is outside [1, %d]", B,
                      ws->max_batch);
    assert(x);
    const size_t n = (size_t)B * m->in_n;
    if (m->tokens) {
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            if (!(v >= 0.0f && v < (float)m->vocab && v == floorf(v)))
                return ws_err(ws, FEDC_ERR_RANGE,
                              "sample %zu, position %zu: token %g is not an integer in [0, %d)",
                              i / m->in_n, i % m->in_n, (double)v, m->vocab);
        }
        return FEDC_OK;
    }
    ptrdiff_t bad = fedc_vec_find_nonfinite(n, x);
    if (bad >= 0)
        return ws_err(ws, FEDC_ERR_NONFINITE, "sample %zu, feature %zu is %g",
                      (size_t)bad / m->in_n, (size_t)bad % m->in_n, (double)x[bad]);
    return FEDC_OK;
}

static fedc_status check_y(fedc_nn_workspace *ws, const int32_t *y, int B)
{
    const fedc_model *m = ws->m;
    assert(y);
    const int O = m->out_n;
    for (int b = 0; b < B; b++) {
        if (O == 1) {
            if (m->loss == FEDC_LOSS_BCE && y[b] != 0 && y[b] != 1)
                return ws_err(ws, FEDC_ERR_RANGE, "sample %d: label %d is not 0 or 1", b, y[b]);
        } else if (y[b] < 0 || y[b] >= O) {
            return ws_err(ws, FEDC_ERR_RANGE, "sample %d: label %d is outside [0, %d)", b, y[b],
                          O);
        }
    }
    return FEDC_OK;
}

/* ---- passes ---- */

static const float *run_forward(fedc_nn_workspace *ws, const float *P, const float *x, int B,
                                int train)
{
    const fedc_model *m = ws->m;
    fedci_exec e = {ws->scratch, &ws->rng, train, NULL, NULL, NULL};
    const float *cur = x;
    ws->io[0] = x;
    for (size_t i = 0; i < m->nlayers; i++) {
        const fedci_layer *L = &m->layers[i];
        if (L->kind != FEDCI_FLATTEN) {
            fedci_layer_ops_get(L->kind)->forward(L, &e, P, cur, ws->act[i], ws->save[i], B);
            cur = ws->act[i];
        }
        ws->io[i + 1] = cur;
    }
    return cur;
}

/* Backward from the logits' gradient. dP: parameter gradient (NULL: skip); pe_sq: per-example
 * squared norms to add into (NULL: skip). */
static void run_backward(fedc_nn_workspace *ws, const float *P, int B, const float *dlogits,
                         float *dP, double *pe_sq)
{
    const fedc_model *m = ws->m;
    fedci_exec e = {ws->scratch, &ws->rng, 1, NULL, NULL, NULL};
    const float *dy = dlogits;
    for (size_t i = m->nlayers; i-- > m->first_param_layer;) {
        const fedci_layer *L = &m->layers[i];
        if (L->kind == FEDCI_FLATTEN) continue; /* the gradient passes through */
        float *dx = NULL;
        if (i > m->first_param_layer) dx = dy == ws->g[0] ? ws->g[1] : ws->g[0];
        fedci_layer_ops_get(L->kind)->backward(L, &e, P, ws->io[i], ws->io[i + 1], ws->save[i],
                                               dy, dx, dP, pe_sq, B);
        dy = dx;
    }
}

/* A training pass's forward and loss: checks the batch, leaves d(mean loss)/d(logits) in
 * ws->dlogits and the summed loss in *sum; a non-finite loss is an error. */
static fedc_status forward_loss(fedc_nn_workspace *ws, const float *params, const float *x,
                                const int32_t *y, int batch, double *sum)
{
    FEDC_TRY(check_x(ws, x, batch));
    FEDC_TRY(check_y(ws, y, batch));
    const fedc_model *m = ws->m;
    const float *z = run_forward(ws, params, x, batch, 1);
    *sum = fedci_loss(m->loss, z, y, batch, m->out_n, 1.0f / (float)batch, ws->dlogits, NULL,
                      NULL);
    if (!isfinite(*sum))
        return ws_err(ws, FEDC_ERR_NONFINITE,
                      "training loss is %g: the model diverged (lower the learning rate?)", *sum);
    return FEDC_OK;
}

fedc_status fedc_nn_train_batch(fedc_nn_workspace *ws, const float *params, const float *x,
                                const int32_t *y, int batch, float *loss)
{
    assert(ws && params && loss);
    double sum;
    FEDC_TRY(forward_loss(ws, params, x, y, batch, &sum));
    run_backward(ws, params, batch, ws->dlogits, ws->grad, NULL);
    *loss = (float)(sum / batch);
    return FEDC_OK;
}

ptrdiff_t fedci_sgd_apply(const fedc_sgd_step *st, float *params, size_t off, const float *g,
                          size_t n)
{
    ptrdiff_t bad = fedc_vec_find_nonfinite(n, g);
    if (bad >= 0) return bad;
    /* fedc_optim_step's own kernel (scale 1: no clipping), hence its bits */
    fedci_sgd_update(st, params + off, g, st->momentum_buf ? st->momentum_buf + off : NULL,
                     st->center ? st->center + off : NULL, n, 1.0f);
    return -1;
}

/* Backward with the SGD step fused in: each parameterised layer is updated as soon as its
 * gradient is known (after its input gradient, which needs the old weights, is computed).
 * Kinds with fused_sgd apply it inside their backward, block by block; for the others the
 * layer's gradient goes to ws->grad at its offsets, then is applied. Returns the flat index
 * + 1 of a non-finite gradient element (the step then stopped there), 0 when complete. */
static size_t run_backward_sgd(fedc_nn_workspace *ws, float *P, int B, const fedc_sgd_step *st)
{
    const fedc_model *m = ws->m;
    size_t bad = 0;
    fedci_exec plain = {ws->scratch, &ws->rng, 1, NULL, NULL, NULL};
    fedci_exec fused = {ws->scratch, &ws->rng, 1, P, st, &bad};
    const float *dy = ws->dlogits;
    for (size_t i = m->nlayers; i-- > m->first_param_layer;) {
        const fedci_layer *L = &m->layers[i];
        if (L->kind == FEDCI_FLATTEN) continue;
        const fedci_layer_ops *ops = fedci_layer_ops_get(L->kind);
        float *dx = NULL;
        if (i > m->first_param_layer) dx = dy == ws->g[0] ? ws->g[1] : ws->g[0];
        ops->backward(L, ops->fused_sgd ? &fused : &plain, P, ws->io[i], ws->io[i + 1],
                      ws->save[i], dy, dx, ws->grad, NULL, B);
        if (bad) return bad;
        if (L->nparams > 0 && !ops->fused_sgd) {
            /* A layer's tensors are contiguous in the layout, starting at toff[0]. */
            ptrdiff_t b = fedci_sgd_apply(st, P, L->toff[0], ws->grad + L->toff[0], L->nparams);
            if (b >= 0) return L->toff[0] + (size_t)b + 1;
        }
        dy = dx;
    }
    return 0;
}

fedc_status fedc_nn_train_step_sgd(fedc_nn_workspace *ws, float *params, const float *x,
                                   const int32_t *y, int batch, const fedc_sgd_step *step,
                                   float *loss)
{
    assert(ws && params && step && loss);
    assert(step->momentum == 0.0f || step->momentum_buf);
    assert(step->prox_mu == 0.0f || step->center);
    if (!(step->lr > 0.0f) || !isfinite(step->lr))
        return ws_err(ws, FEDC_ERR_INVALID, "SGD learning rate %g is not a positive number",
                      (double)step->lr);
    double sum;
    FEDC_TRY(forward_loss(ws, params, x, y, batch, &sum));
    size_t bad = run_backward_sgd(ws, params, batch, step);
    if (bad) {
        const fedc_layout *lay = ws->m->layout;
        size_t t = 0;
        while (t + 1 < lay->count && lay->tensors[t + 1].offset <= bad - 1) t++;
        return ws_err(ws, FEDC_ERR_NONFINITE,
                      "gradient element %zu (%s[%zu]) is not finite: step stopped, the "
                      "parameters are partially updated",
                      bad - 1, lay->tensors[t].name, bad - 1 - lay->tensors[t].offset);
    }
    *loss = (float)(sum / batch);
    return FEDC_OK;
}

fedc_status fedc_nn_eval_batch(fedc_nn_workspace *ws, const float *params, const float *x,
                               const int32_t *y, int batch, double *loss_sum, int64_t *correct)
{
    assert(ws && params && loss_sum && correct);
    FEDC_TRY(check_x(ws, x, batch));
    FEDC_TRY(check_y(ws, y, batch));
    const fedc_model *m = ws->m;
    const float *z = run_forward(ws, params, x, batch, 0);
    int64_t hits = 0;
    double sum = fedci_loss(m->loss, z, y, batch, m->out_n, 1.0f, NULL, NULL, &hits);
    if (!isfinite(sum))
        return ws_err(ws, FEDC_ERR_NONFINITE, "evaluation loss is %g (non-finite outputs)", sum);
    *loss_sum += sum;
    *correct += hits;
    return FEDC_OK;
}

fedc_status fedc_nn_forward(fedc_nn_workspace *ws, const float *params, const float *x,
                            int batch, const float **logits)
{
    assert(ws && params && logits);
    FEDC_TRY(check_x(ws, x, batch));
    *logits = run_forward(ws, params, x, batch, 0);
    return FEDC_OK;
}

/* Clipped sum of per-example gradients from one batched forward and two backward passes:
 * the first only collects each example's squared norm, the second runs with every example's
 * output gradient scaled by its clipping factor, which scales its whole gradient. */
static fedc_status clipped_ghost(fedc_nn_workspace *ws, const float *params, const float *x,
                                 const int32_t *y, int B, double clip, double *sum, float *norms)
{
    const fedc_model *m = ws->m;
    const int O = m->out_n;
    const float *z = run_forward(ws, params, x, B, 1);
    *sum = fedci_loss(m->loss, z, y, B, O, 1.0f, ws->dlogits, NULL, NULL);
    if (!isfinite(*sum))
        return ws_err(ws, FEDC_ERR_NONFINITE, "training loss is %g: the model diverged", *sum);
    memset(ws->pe_sq, 0, (size_t)B * sizeof *ws->pe_sq);
    run_backward(ws, params, B, ws->dlogits, NULL, ws->pe_sq);
    for (int b = 0; b < B; b++) {
        double norm = sqrt(ws->pe_sq[b]);
        float s = norm > clip ? (float)(clip / norm) : 1.0f;
        float *d = ws->dlogits + (size_t)b * O;
        for (int j = 0; j < O; j++) d[j] *= s;
        if (norms) norms[b] = (float)norm;
    }
    run_backward(ws, params, B, ws->dlogits, ws->grad, NULL);
    return FEDC_OK;
}

/* The same, one example at a time (any layer). */
static fedc_status clipped_loop(fedc_nn_workspace *ws, const float *params, const float *x,
                                const int32_t *y, int B, double clip, double *sum, float *norms)
{
    const fedc_model *m = ws->m;
    const size_t P = fedc_model_param_count(m);
    if (!ws->pe_grad) {
        ws->pe_grad = fedc_malloc((P + 1) * sizeof *ws->pe_grad);
        if (!ws->pe_grad)
            return ws_err(ws, FEDC_ERR_NOMEM, "out of memory for a per-example gradient");
        ws->bytes += (P + 1) * sizeof *ws->pe_grad;
    }
    memset(ws->grad, 0, P * sizeof *ws->grad);
    *sum = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = run_forward(ws, params, x + (size_t)b * m->in_n, 1, 1);
        double l = fedci_loss(m->loss, z, y + b, 1, m->out_n, 1.0f, ws->dlogits, NULL, NULL);
        if (!isfinite(l))
            return ws_err(ws, FEDC_ERR_NONFINITE, "sample %d: training loss is %g", b, l);
        *sum += l;
        run_backward(ws, params, 1, ws->dlogits, ws->pe_grad, NULL);
        double norm = fedc_vec_norm2(P, ws->pe_grad);
        float s = norm > clip ? (float)(clip / norm) : 1.0f;
        fedc_vec_axpy(P, s, ws->pe_grad, ws->grad);
        if (norms) norms[b] = (float)norm;
    }
    return FEDC_OK;
}

fedc_status fedc_nn_train_batch_clipped(fedc_nn_workspace *ws, const float *params,
                                        const float *x, const int32_t *y, int batch,
                                        double clip_norm, float *loss, float *norms)
{
    assert(ws && params);
    if (!(clip_norm > 0.0) || !isfinite(clip_norm))
        return ws_err(ws, FEDC_ERR_INVALID, "clipping norm %g is not a positive number",
                      clip_norm);
    FEDC_TRY(check_x(ws, x, batch));
    FEDC_TRY(check_y(ws, y, batch));
    double sum = 0.0;
    if (ws->m->ghost)
        FEDC_TRY(clipped_ghost(ws, params, x, y, batch, clip_norm, &sum, norms));
    else
        FEDC_TRY(clipped_loop(ws, params, x, y, batch, clip_norm, &sum, norms));
    if (loss) *loss = (float)(sum / batch);
    return FEDC_OK;
}
