/*
 * Client optimizers over flat parameter vectors: SGD (momentum, Nesterov, weight decay),
 * Adam and AdamW, with gradient clipping by global norm and the FedProx proximal term.
 *
 * One step, in this order (the gradient buffer itself is never modified):
 *   1. g = grads * min(1, clip_norm / ||grads||)        when clip_norm > 0 (data gradient only,
 *                                                        so the proximal pull is never clipped)
 *   2. g += prox_mu * (w - w_global)                     when prox_mu > 0 and a centre is set
 *   3. SGD:   g += weight_decay * w; b = momentum * b + g (b = g on the first step);
 *             d = nesterov ? g + momentum * b : b (plain g without momentum); w -= lr * d
 *      Adam:  g += weight_decay * w (coupled L2, as PyTorch Adam)
 *      AdamW: w *= 1 - lr * weight_decay (decoupled, as PyTorch AdamW)
 *      Adam/AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *                  w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * These are PyTorch's torch.optim.SGD / Adam / AdamW semantics (dampening 0, amsgrad off).
 *
 * Thread safety: an optimizer is used by one thread at a time; different optimizers are
 * independent.
 */
#ifndef FEDC_OPTIM_H
#define FEDC_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fedc_optim_kind {
    FEDC_OPTIM_SGD = 0,
    FEDC_OPTIM_ADAM = 1,
    FEDC_OPTIM_ADAMW = 2
} fedc_optim_kind;

typedef struct fedc_optim_config {
    fedc_optim_kind kind;
    double lr;           /* > 0 */
    double momentum;     /* SGD, in [0, 1) */
    int nesterov;        /* SGD; needs momentum > 0 */
    double weight_decay; /* >= 0; coupled (SGD, Adam) or decoupled (AdamW) */
    double beta1, beta2; /* Adam/AdamW, in [0, 1) */
    double eps;          /* Adam/AdamW, > 0 */
    double clip_norm;    /* global-norm clipping of the gradient; 0 = off */
    double prox_mu;      /* FedProx mu; 0 = off */
} fedc_optim_config;

typedef struct fedc_optim fedc_optim;

/* Defaults of kind: lr 0.01 (SGD) or 0.001 (Adam/AdamW), momentum 0, beta (0.9, 0.999),
 * eps 1e-8, weight decay 0 (0.01 for AdamW, as PyTorch), no clipping, no proximal term. */
void fedc_optim_config_default(fedc_optim_config *cfg, fedc_optim_kind kind);

/* Reads the [train] keys (optimizer, lr, momentum, nesterov, weight_decay, beta1, beta2, eps,
 * clip_grad_norm, prox_mu) of a config into *cfg. */
void fedc_optim_config_from(fedc_optim_config *cfg, const fedc_config *conf);

/* Parses "sgd", "adam", "adamw". Returns 0, or -1 when unknown. */
int fedc_optim_kind_parse(const char *name, fedc_optim_kind *out);
const char *fedc_optim_kind_name(fedc_optim_kind kind);

/*
 * An optimizer for nparams parameters; its state (momentum buffer or Adam moments) is
 * allocated here, once, and zeroed. The config is copied.
 * Errors: FEDC_ERR_INVALID (a value out of range, nesterov without momentum, nparams 0),
 * FEDC_ERR_NOMEM.
 */
fedc_status fedc_optim_create(const fedc_optim_config *cfg, size_t nparams, fedc_optim **out,
                              fedc_err *err);
void fedc_optim_destroy(fedc_optim *opt); /* NULL allowed */

/* The copy of the config the optimizer uses. */
const fedc_optim_config *fedc_optim_get_config(const fedc_optim *opt);
/* Changes the learning rate (schedules); lr > 0. */
void fedc_optim_set_lr(fedc_optim *opt, double lr);

/* FedProx: the global model of the current round. The pointer is kept, not copied: the
 * caller keeps w_global[0..nparams-1] alive and unchanged while steps run. NULL turns the
 * proximal term off. */
void fedc_optim_set_prox_center(fedc_optim *opt, const float *w_global);

/* Forgets all state (momentum, moments, step count), e.g. between rounds. Keeps the config
 * and the proximal centre. */
void fedc_optim_reset(fedc_optim *opt);

/*
 * One step: params -= update(grads) as described at the top. grads is read only.
 * Errors (message on opt): FEDC_ERR_NONFINITE when grads hold a NaN or Inf; params and state
 * are then left unchanged.
 */
fedc_status fedc_optim_step(fedc_optim *opt, float *params, const float *grads);

/*
 * The element-wise update of one SGD step (item 2 and 3 above, without clipping), for a
 * caller that applies it itself, fused into the backward pass (fedc_nn_train_step_sgd):
 *   g += prox_mu (w - center); g += weight_decay w; with momentum: b = first ? g :
 *   momentum b + g, d = nesterov ? g + momentum b : b (else d = g); w -= lr d,
 * in float, with the very expressions of fedc_optim_step: the same bits.
 */
typedef struct fedc_sgd_step {
    float lr, momentum, weight_decay, prox_mu; /* prox_mu is 0 when no centre is set */
    int nesterov;
    int first;                                 /* b = g (the first step since a reset) */
    float *momentum_buf;                       /* nparams floats when momentum > 0 */
    const float *center;                       /* nparams floats when prox_mu > 0 */
} fedc_sgd_step;

/* When opt is SGD without clipping (clipping needs the whole gradient's norm first; Adam is
 * not offered), fills *step for the next step, counts that step (fedc_optim_step_count;
 * momentum then continues from the buffer) and returns 1: the caller must apply it (or
 * fedc_optim_reset). Returns 0 and changes nothing otherwise. A fused step does not measure
 * the gradient norm (fedc_optim_last_grad_norm keeps its value). */
int fedc_optim_sgd_fuse(fedc_optim *opt, fedc_sgd_step *step);

/* Steps taken since creation or the last reset. */
uint64_t fedc_optim_step_count(const fedc_optim *opt);
/* The global L2 norm of the gradient the last step received (before clipping). */
double fedc_optim_last_grad_norm(const fedc_optim *opt);
/* Bytes of optimizer state. */
size_t fedc_optim_state_bytes(const fedc_optim *opt);
/* The last error's message on opt. */
const char *fedc_optim_errmsg(const fedc_optim *opt);

/* Scales grads[0..n-1] in place to global L2 norm at most max_norm (> 0). Returns the norm
 * before clipping (accumulated in double). */
double fedc_clip_by_global_norm(float *grads, size_t n, double max_norm);

#ifdef __cplusplus
}
#endif
#endif
