/*
 * The training engine: models built from a one-line spec or a preset, their flat parameter
 * layout, and forward/backward passes over minibatches in a per-thread workspace.
 *
 * Shape of the API:
 * - fedc_model: immutable after fedc_model_create. It holds the layers, the parameter layout
 *   (DESIGN.md rule 1: ONE contiguous float32 buffer) and no parameter values: parameters are
 *   a caller-owned float array of fedc_model_param_count() floats, so one model serves every
 *   client. Safe to share read-only across threads.
 * - fedc_nn_workspace: everything a forward/backward pass writes (activations, saved state,
 *   scratch, the gradient buffer), sized once for (model, max batch). One per thread. No
 *   allocation happens per batch.
 *
 * Data conventions: x is [batch x sample] contiguous float32, a sample being the input shape
 * in row-major order (images C,H,W; sequences are token indices stored as floats). y holds one
 * int32 label per sample (the class; for a sequence model, the next token).
 *
 * Spec grammar (tokens separated by spaces; arguments in parentheses, comma-separated):
 *   dense(N)                    fully connected; flattens its input (PyTorch Linear)
 *   conv(C,K[,same|valid][,S])  2-D convolution, C filters of KxK, stride S (default 1, valid)
 *   maxpool(K[,S]) avgpool(K[,S])  2-D pooling, window K, stride S (default K), no padding
 *   relu tanh sigmoid           activations
 *   dropout(P)                  drops with probability P while training (inverted dropout)
 *   flatten                     explicit flatten (dense layers flatten on their own)
 *   embed(V,D)                  embedding of V tokens into D dims (first layer only)
 *   lstm(H[,last|seq])          LSTM with H units; outputs the last step (default) or all
 *   groupnorm(G)                group normalization over G channel groups (learned scale/shift)
 *   loss(ce|bce|mse)            the loss, last token only (default ce: softmax cross-entropy)
 * Presets: logreg, mlp, cnn, femnist-cnn, shakespeare-lstm (see docs/NN.md); they take the
 * number of outputs (and for shakespeare-lstm the vocabulary) from num_outputs.
 *
 * Thread safety: models are read-only after creation; a workspace must be used by one thread
 * at a time. fedc_nn_set_blas_threads is process-wide.
 */
#ifndef FEDC_NN_H
#define FEDC_NN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fedc/optim.h"
#include "fedc/status.h"
#include "fedc/vec.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_model fedc_model;
typedef struct fedc_nn_workspace fedc_nn_workspace;

/* Longest accepted spec (characters) and most layers in a model. */
#define FEDC_NN_SPEC_MAX 4096
#define FEDC_NN_MAX_LAYERS 256

typedef enum fedc_loss_kind {
    FEDC_LOSS_CE = 0,  /* softmax cross-entropy over the outputs (labels in [0, outputs)) */
    FEDC_LOSS_BCE = 1, /* binary cross-entropy with logits, per output; target one-hot(y), or
                          y itself in {0,1} when there is one output */
    FEDC_LOSS_MSE = 2  /* mean squared error over the outputs; target one-hot(y), or (float)y
                          when there is one output */
} fedc_loss_kind;

/*
 * Builds a model from a preset name or a spec (grammar above) for samples of shape
 * input_shape[0..ndim-1] (1 <= ndim <= 3: {C,H,W}, {H,W} = one channel, {T} or {D}).
 * num_outputs: classes of the dataset; presets need it (> 0); for a spec, 0 means "whatever
 * the spec produces" and a positive value must equal the spec's output size.
 * On success *out is a new model (free with fedc_model_destroy).
 * Errors (message in err naming the token and its position): FEDC_ERR_INVALID (unknown layer,
 * bad argument, empty spec), FEDC_ERR_SHAPE (a layer does not fit its input, outputs differ
 * from num_outputs), FEDC_ERR_RANGE (sizes beyond the engine's limits), FEDC_ERR_NOMEM.
 */
fedc_status fedc_model_create(const char *spec, const int64_t *input_shape, int ndim,
                              int num_outputs, fedc_model **out, fedc_err *err);
void fedc_model_destroy(fedc_model *model); /* NULL allowed */

/* The parameter layout (tensor names follow PyTorch nn.Sequential: "<layer index>.weight").
 * Owned by the model; valid while the model lives. */
const fedc_layout *fedc_model_layout(const fedc_model *model);
/* Number of float32 parameters (= layout total). */
size_t fedc_model_param_count(const fedc_model *model);
/* Floats per input sample, and the per-sample input shape given at creation. */
size_t fedc_model_input_size(const fedc_model *model);
int fedc_model_input_shape(const fedc_model *model, int64_t shape[3]); /* returns ndim */
/* Values per sample the model outputs (logits), and its loss. */
int fedc_model_output_size(const fedc_model *model);
fedc_loss_kind fedc_model_loss(const fedc_model *model);
/* 1 when inputs are token indices (the model starts with embed), else 0. */
int fedc_model_takes_tokens(const fedc_model *model);
/* The canonical spec (presets expanded), e.g. "dense(200) relu dense(200) relu dense(10)".
 * Owned by the model. */
const char *fedc_model_spec(const fedc_model *model);
/* Forward FLOPs per sample by the usual convention: 2 x the multiply-adds of the matrix
 * products (dense, conv, LSTM); a training step costs about 3x this per sample. */
double fedc_model_forward_flops(const fedc_model *model);

/* Read-only view of one layer, for summaries. */
typedef struct fedc_layer_info {
    const char *kind;        /* "dense", "conv", "relu", ... (static) */
    char desc[96];           /* the layer as a canonical spec token, "conv(32,5,same)" */
    int out_ndim;
    int64_t out_shape[3];    /* per-sample output shape */
    size_t params;           /* parameters of this layer */
    double flops;            /* forward FLOPs per sample (2 x multiply-adds) */
} fedc_layer_info;

size_t fedc_model_layer_count(const fedc_model *model);
/* Fills *info for layer i (i < fedc_model_layer_count). */
void fedc_model_layer_info(const fedc_model *model, size_t i, fedc_layer_info *info);

/* Writes the summary (a table of layers, output shapes and parameters, then the totals) into
 * buf like snprintf: returns the length it needs, writes at most size bytes (NUL-terminated
 * when size > 0). */
size_t fedc_model_summary(const fedc_model *model, char *buf, size_t size);
/* Prints the same summary to out. Returns FEDC_ERR_IO on a write error. */
fedc_status fedc_model_print(const fedc_model *model, FILE *out);

/*
 * Deterministic initialisation of params[0..param_count-1]: weights Glorot-uniform, or
 * He-uniform when the layer is followed by relu; biases 0 (an LSTM's forget gate bias 1);
 * group-norm scale 1, shift 0. Tensor t draws from the stream (seed, FEDC_RNG_ANY, t,
 * FEDC_RNG_INIT), so adding a layer at the end does not change earlier tensors.
 */
void fedc_model_init_params(const fedc_model *model, float *params, uint64_t seed);

/*
 * A workspace for passes of up to max_batch samples through model (which must outlive it).
 * Allocates everything once. Also applies the default BLAS threading (one thread) unless
 * fedc_nn_set_blas_threads was called before.
 * Errors: FEDC_ERR_INVALID (max_batch < 1 or too large), FEDC_ERR_NOMEM.
 */
fedc_status fedc_nn_workspace_create(const fedc_model *model, int max_batch,
                                     fedc_nn_workspace **out, fedc_err *err);
void fedc_nn_workspace_destroy(fedc_nn_workspace *ws); /* NULL allowed */

/* The gradient buffer: param_count floats, same layout as the params, written by
 * fedc_nn_train_batch (fedc_nn_train_step_sgd leaves scratch in it). Owned by ws; valid while
 * ws lives. */
float *fedc_nn_workspace_grad(fedc_nn_workspace *ws);
/* Bytes allocated by the workspace (activations, saved state, scratch, gradient). */
size_t fedc_nn_workspace_bytes(const fedc_nn_workspace *ws);
int fedc_nn_workspace_max_batch(const fedc_nn_workspace *ws);
/* The last error's message on ws (valid until the next call on ws). */
const char *fedc_nn_workspace_errmsg(const fedc_nn_workspace *ws);
/* Keys the dropout stream: (seed, round, client, FEDC_RNG_DROPOUT). Default: (0, ANY, ANY).
 * Masks are drawn in call order from that stream. */
void fedc_nn_workspace_set_rng(fedc_nn_workspace *ws, uint64_t seed, uint32_t round,
                               uint32_t client);

/*
 * One training pass: forward (dropout active), the mean loss over the batch into *loss, and
 * the gradient of that mean loss w.r.t. params into the workspace's gradient buffer
 * (overwritten). 1 <= batch <= max_batch.
 * Errors (message on ws): FEDC_ERR_INVALID (batch out of range), FEDC_ERR_RANGE (a label
 * outside the outputs, a token outside the vocabulary), FEDC_ERR_NONFINITE (NaN/Inf in x, or
 * the loss is not finite: the gradient is then unspecified).
 */
fedc_status fedc_nn_train_batch(fedc_nn_workspace *ws, const float *params, const float *x,
                                const int32_t *y, int batch, float *loss);

/*
 * A training step with the SGD update fused into the backward pass: the same forward and
 * loss as fedc_nn_train_batch, then the element-wise update `step` describes (from
 * fedc_optim_sgd_fuse: momentum, Nesterov, weight decay, FedProx), each layer's parameters
 * updated as soon as its gradient is known (dense layers block by block while the block is
 * in cache), so the gradient is never stored whole and read back. Parameters and momentum
 * come out with the same bits as fedc_nn_train_batch followed by fedc_optim_step (tests pin
 * it). Afterwards the workspace's gradient buffer holds scratch, not the gradient.
 * Errors: as fedc_nn_train_batch (params then unchanged), FEDC_ERR_INVALID for a learning
 * rate that is not > 0, and FEDC_ERR_NONFINITE when a gradient element is NaN or Inf: the
 * step stops there and params (and momentum) are left PARTIALLY updated (the layers after
 * the tensor the message names have taken their step), unlike fedc_optim_step, which refuses
 * the whole step (and also a gradient whose norm overflows); the caller discards them (as the
 * nn trainer discards the client's update).
 */
fedc_status fedc_nn_train_step_sgd(fedc_nn_workspace *ws, float *params, const float *x,
                                   const int32_t *y, int batch, const fedc_sgd_step *step,
                                   float *loss);

/*
 * Evaluation pass (no dropout, no gradient): adds the summed loss of the batch to *loss_sum
 * and the number of correct predictions (argmax, or threshold for one output) to *correct.
 * Errors as fedc_nn_train_batch.
 */
fedc_status fedc_nn_eval_batch(fedc_nn_workspace *ws, const float *params, const float *x,
                               const int32_t *y, int batch, double *loss_sum, int64_t *correct);

/* Forward only: *logits points to [batch x output_size] floats in ws (valid until the next
 * call on ws). Errors as above (no labels involved). */
fedc_status fedc_nn_forward(fedc_nn_workspace *ws, const float *params, const float *x,
                            int batch, const float **logits);

/*
 * For DP-SGD: the SUM over the batch of per-example gradients, each clipped to L2 norm
 * clip_norm (g_i * min(1, clip_norm / ||g_i||)), into the gradient buffer. Per-example losses
 * are not divided by the batch size. norms (may be NULL) receives each example's unclipped
 * gradient norm; *loss (may be NULL) the mean loss. clip_norm > 0.
 * Dense, conv, embed and groupnorm layers give per-example norms from the batched pass
 * (one forward, two backward passes: "ghost clipping"); models with other parameterised layers
 * (LSTM) fall back to one pass per example, which allocates a per-example gradient buffer once
 * on first use. Errors as fedc_nn_train_batch, and FEDC_ERR_NOMEM.
 */
fedc_status fedc_nn_train_batch_clipped(fedc_nn_workspace *ws, const float *params,
                                        const float *x, const int32_t *y, int batch,
                                        double clip_norm, float *loss, float *norms);

/* BLAS threads for matrix products (process-wide). The engine is single-threaded by default,
 * since a simulation runs one client per core; a lone client may ask for more. n >= 1.
 * No effect in builds without BLAS. */
void fedc_nn_set_blas_threads(int n);

/* Benchmark helper: times the engine's gemm adapter on [m x k] x [k x n] float32 products
 * for at least min_seconds (in the calling thread's BLAS threading) and stores the best rate
 * seen in *gflops. Allocates its matrices. Errors: FEDC_ERR_INVALID, FEDC_ERR_NOMEM. */
fedc_status fedc_nn_bench_gemm(int m, int n, int k, double min_seconds, double *gflops);

/* The BLAS kernel family in use ("SkylakeX", "Haswell", ...; "none" without BLAS). Static. */
const char *fedc_nn_blas_core(void);
/* The kernels stride-1 convolutions with a multiple of 16 filters run on this CPU: "direct
 * AVX-512", "direct AVX2" or "im2col + GEMM" (other convolutions always take the last). Static. */
const char *fedc_nn_conv_kernels(void);
/* When OpenBLAS picked a generic kernel on a CPU it did not recognise although the CPU has
 * AVX-512 or AVX2, the OPENBLAS_CORETYPE value that would use them ("SkylakeX", "Haswell");
 * NULL when the choice is fine, OPENBLAS_CORETYPE is already set, or without BLAS. OpenBLAS
 * reads that variable when it loads, so only a new process can act on it. */
const char *fedc_nn_blas_suggest_coretype(void);

#ifdef __cplusplus
}
#endif
#endif
