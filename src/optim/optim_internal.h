/*
 * Internal to libfedc: the SGD update kernel, shared by fedc_optim_step (src/optim/optim.c) and
 * the nn engine's fused step (fedc_nn_train_step_sgd, src/nn/engine.c), so that both give the
 * same bits by construction.
 */
#ifndef FEDC_OPTIM_INTERNAL_H
#define FEDC_OPTIM_INTERNAL_H

#include <stddef.h>

#include "fedc/optim.h"

/* w[i] -= lr * d_i for i < n, with d_i from g[i] * scale, st's FedProx term (c: the centre's
 * matching slice), weight decay and momentum/Nesterov (buf: the momentum buffer's matching
 * slice, updated). scale is the clipping factor (1: none). buf and c may be NULL when st does
 * not use them. No argument aliases another. */
void fedci_sgd_update(const fedc_sgd_step *st, float *w, const float *g, float *buf,
                      const float *c, size_t n, float scale);

#endif
