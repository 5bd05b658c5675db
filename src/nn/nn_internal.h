/*
 * Internals of the training engine shared by the files of src/nn: the layer record, the layer
 * operations table (one entry per kind, like nng's protocol ops), the gemm adapter, the losses
 * and the model/workspace structs.
 *
 * Activation layout: every tensor is [batch x sample] with the sample in row-major order
 * (NCHW for images, [T, F] for sequences), the layout PyTorch uses. Convolutions lower to
 * GEMMs per chunk of samples (see conv.c), or run direct kernels that transpose one sample at
 * a time to HWC in scratch (conv_direct.c); activations stay NCHW between layers.
 */
#ifndef FEDC_NN_INTERNAL_H
#define FEDC_NN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config_build.h"
#include "fedc/nn.h"
#include "fedc/optim.h"
#include "fedc/rng.h"
#include "fedc/vec.h"

/* The engine's loops are written for the vectorizer (contiguous, branch-free, independent
 * iterations), but the project builds with -O2, whose cost model vectorizes almost none of
 * them. Files of the engine include this header first and get GCC's -O3 code generation in
 * optimised builds (debug builds keep -O0). Clang vectorizes at -O2 already. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__) && !defined(__OPTIMIZE_SIZE__)
#pragma GCC optimize("O3")
#endif

/* Layer kinds. Numbers index fedci_layer_ops_table; FEDCI_LAYER_KIND_COUNT ends the list. */
typedef enum fedci_layer_kind {
    FEDCI_DENSE = 0,
    FEDCI_CONV,
    FEDCI_MAXPOOL,
    FEDCI_AVGPOOL,
    FEDCI_RELU,
    FEDCI_TANH,
    FEDCI_SIGMOID,
    FEDCI_DROPOUT,
    FEDCI_FLATTEN,
    FEDCI_EMBED,
    FEDCI_LSTM,
    FEDCI_GROUPNORM,
    FEDCI_LAYER_KIND_COUNT
} fedci_layer_kind;

/* How a parameter tensor is initialised (fedc_model_init_params). */
typedef enum fedci_init {
    FEDCI_INIT_ZERO = 0,
    FEDCI_INIT_ONE,
    FEDCI_INIT_GLOROT,   /* U(+-sqrt(6 / (fan_in + fan_out))) */
    FEDCI_INIT_HE,       /* U(+-sqrt(6 / fan_in)) */
    FEDCI_INIT_LSTM_BIAS /* 0, except 1 for the forget gate (second quarter) */
} fedci_init;

#define FEDCI_MAX_TENSORS 3

typedef struct fedci_layer {
    fedci_layer_kind kind;
    int index;                    /* position in the model (names its tensors) */
    int in_ndim, out_ndim;
    int in[3], out[3];            /* per-sample shapes; unused trailing dims are 1 */
    size_t in_n, out_n;           /* floats per sample */

    /* Hyper-parameters (meaning depends on kind). */
    int units;                    /* dense outputs, conv filters, LSTM hidden, embed dims, groups */
    int k, stride;                /* conv and pool window and stride */
    int same;                     /* conv: 1 = "same" padding */
    int pad_t, pad_l;             /* conv: top/left padding (bottom/right follow from out) */
    int seq;                      /* lstm: 1 = output every step */
    int vocab;                    /* embed */
    float p;                      /* dropout probability */
    int chunk;                    /* conv: samples per GEMM */
    int relu_after;               /* followed by relu (He initialisation) */

    /* Parameter tensors, registered in the model's layout in this order. */
    int nt;
    const char *tname[FEDCI_MAX_TENSORS];
    int tndim[FEDCI_MAX_TENSORS];
    int64_t tshape[FEDCI_MAX_TENSORS][4];
    fedci_init tinit[FEDCI_MAX_TENSORS];
    double fan_in[FEDCI_MAX_TENSORS], fan_out[FEDCI_MAX_TENSORS];
    size_t toff[FEDCI_MAX_TENSORS]; /* offsets in the flat buffer (set by the model) */
    size_t nparams;

    /* Workspace needs, in floats. */
    size_t save_ps;               /* saved by forward for backward, per sample */
    size_t scratch_ps, scratch_c; /* temporary, per sample and constant */
    double macs_ps;               /* forward multiply-adds of matrix products, per sample */
} fedci_layer;

/* What a pass gives the layer kernels besides their tensors. */
typedef struct fedci_exec {
    float *scratch;               /* at least the layer's scratch need for this batch */
    fedc_rng *rng;                /* dropout stream */
    int train;                    /* 1: training pass (dropout on) */
    /* Fused SGD (fedc_nn_train_step_sgd), for kinds with fused_sgd = 1: when upd is not
     * NULL, backward computes dx first (from the old weights), then applies the update *sgd
     * (fedci_sgd_apply) instead of storing the gradient: dP is only scratch at the layer's
     * offsets. upd is the params (P points into it). A non-finite gradient
     * element stops the update; its flat index + 1 goes to *bad (0: none). */
    float *upd;
    const fedc_sgd_step *sgd;
    size_t *bad;
} fedci_exec;

/*
 * One layer kind. setup() checks the layer against its input shape (L->in*, already set) and
 * fills the output shape, tensors and workspace needs; errors name the layer via `where`.
 * forward(): y = f(x) for B samples, saving what backward needs in `save`.
 * backward(): given dy, writes dx (skipped when NULL: nothing before needs it), the layer's
 * parameter gradients into dP at the layer's offsets (overwritten; skipped when dP is NULL),
 * and, when pe_sq is not NULL, ADDS each example's squared gradient norm of this layer's
 * parameters into pe_sq[0..B-1] (only kinds with ghost = 1 support it).
 */
typedef struct fedci_layer_ops {
    const char *name;
    int ghost;
    fedc_status (*setup)(fedci_layer *L, const char *where, fedc_err *err);
    void (*forward)(const fedci_layer *L, const fedci_exec *e, const float *P, const float *x,
                    float *y, float *save, int B);
    void (*backward)(const fedci_layer *L, const fedci_exec *e, const float *P, const float *x,
                     const float *y, const float *save, const float *dy, float *dx, float *dP,
                     double *pe_sq, int B);
    int fused_sgd; /* backward honours fedci_exec.upd (otherwise the engine applies the step) */
} fedci_layer_ops;

const fedci_layer_ops *fedci_layer_ops_get(fedci_layer_kind kind);

extern const fedci_layer_ops fedci_dense_ops;
extern const fedci_layer_ops fedci_conv_ops;
extern const fedci_layer_ops fedci_maxpool_ops;
extern const fedci_layer_ops fedci_avgpool_ops;
extern const fedci_layer_ops fedci_relu_ops;
extern const fedci_layer_ops fedci_tanh_ops;
extern const fedci_layer_ops fedci_sigmoid_ops;
extern const fedci_layer_ops fedci_dropout_ops;
extern const fedci_layer_ops fedci_flatten_ops;
extern const fedci_layer_ops fedci_embed_ops;
extern const fedci_layer_ops fedci_lstm_ops;
extern const fedci_layer_ops fedci_groupnorm_ops;

/* Engine limits: every GEMM dimension fits an int with room to spare. */
#define FEDCI_MAX_DIM (1 << 24)         /* units, channels, spatial sizes, sequence length */
#define FEDCI_MAX_SAMPLE ((size_t)1 << 28) /* floats per sample in any activation */
#define FEDCI_MAX_PARAMS ((size_t)1 << 31) /* floats in the parameter buffer */

/*
 * The gemm adapter: C[M,N] = alpha * op(A) * op(B) + beta * C, row-major, op = transpose
 * when ta/tb. Every matrix product of the engine goes through here. With beta == 0, C is
 * not read (NaN in C does not propagate).
 */
void fedci_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc);
/* Rows [m0, m0 + mb) of C = op(A) op(B) (alpha 1, beta 0; C points at row m0) for an M-row
 * product, computed on the path fedci_gemm takes for the whole product: every element gets
 * the same bits as in one fedci_gemm call. Lets a caller consume a large C block by block
 * while the block is in cache. */
void fedci_gemm_rows(int ta, int tb, int M, int m0, int mb, int N, int K, const float *A,
                     int lda, const float *B, int ldb, float *C, int ldc);
/* The skinny path (gemm_skinny.h): products with a small batch side (M <= FEDCI_SKINNY_MAX
 * for nt and nn, K <= FEDCI_SKINNY_MAX for tn) on CPUs with AVX2 or AVX-512. Returns 1 when
 * it computed C, 0 when the shape or the CPU is not covered (C untouched). */
#define FEDCI_SKINNY_MAX 16
/* The nn kernel (dx = dy W) sums over K in blocks of this many rows of B, adding each block's
 * sum into C: calling it once per block of rows of W, with beta 1 after the first, gives
 * the bits of one call (the fused SGD step of dense layers relies on it). */
#define FEDCI_SKINNY_NN_KB 64
int fedci_gemm_skinny(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);
/* Tests: caps the instruction set of the skinny path (0 none, 1 AVX2, 2 AVX-512; -1 = the
 * CPU's best), so that every variant can be checked on one machine. */
void fedci_gemm_cap_isa(int level);
/* Tests: 0 makes convolutions use im2col + GEMM with plain-C row loops, 1 im2col + GEMM with
 * the AVX-512 row loops, 2 the direct kernels of conv_direct.c in their AVX2 version, -1 (or 3)
 * the CPU's best (the AVX-512 direct kernels where they apply), so that every path can be
 * compared on one machine. */
void fedci_conv_cap_isa(int level);
/* 1 when the engine's hand-written AVX-512 loops (max pool) may run: the CPU has AVX-512 and
 * fedci_conv_cap_isa did not set 0 or 2. */
int fedci_nn_avx512(void);
/* The direct stride-1 kernels (conv_direct.c). isa: 3 AVX-512, 2 AVX2 + FMA (the caller checks
 * the CPU). fits: the layer's shape is covered (need_dx: also the input gradient). scratch:
 * floats they need. forward: y for B samples (+ bias). backward: dW (overwritten; skipped when
 * NULL) and dx (skipped when NULL), and when pe_sq is not NULL adds each example's squared
 * weight-gradient norm to pe_sq[b]; the bias gradient (and its part of the norms) is the
 * caller's. */
int fedci_conv_direct_fits(const fedci_layer *L, int need_dx);
size_t fedci_conv_direct_scratch(const fedci_layer *L);
void fedci_conv_direct_forward(int isa, const fedci_layer *L, const float *W, const float *bias,
                               const float *x, float *y, int B, float *scratch);
void fedci_conv_direct_backward(int isa, const fedci_layer *L, const float *W, const float *x,
                                const float *dy, float *dx, float *dW, double *pe_sq, int B,
                                float *scratch);
/* The plain-C kernel: the fallback without BLAS and the tests' oracle. */
void fedci_gemm_plain(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* The BLAS path only (falls back to plain without BLAS), for tests comparing the two. */
void fedci_gemm_blas(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* Applies the default BLAS threading once per process (1 thread unless set). */
void fedci_blas_threads_default(void);

/*
 * Losses over logits z[B x O]. Adds each sample's loss to the returned sum (and to
 * per_ex[i] when not NULL, overwriting it); when dz is not NULL writes d(loss_i)/dz * gscale.
 * When correct is not NULL adds the number of correct predictions. Labels must be valid
 * (checked by the caller).
 */
double fedci_loss(fedc_loss_kind kind, const float *z, const int32_t *y, int B, int O,
                  float gscale, float *dz, double *per_ex, int64_t *correct);
const char *fedci_loss_name(fedc_loss_kind kind);

struct fedc_model {
    size_t nlayers;
    fedci_layer *layers;
    int in_ndim;
    int64_t in_shape[3];
    size_t in_n;
    int out_n;
    fedc_loss_kind loss;
    int tokens;                   /* first layer is embed: x holds token indices */
    int vocab;
    int ghost;                    /* every layer with parameters supports per-example norms */
    size_t first_param_layer;     /* backward stops there (nlayers when there are none) */
    fedc_layout *layout;
    char *spec;
    double flops;
};

/* The SGD update st to parameters [off, off + n) of params, from their gradient g[0..n-1],
 * with the exact expressions of fedc_optim_step (so fused and unfused steps give the same
 * bits), unless g holds a NaN or Inf: then nothing is written and the index in g of the
 * first one is returned; -1 when applied. */
ptrdiff_t fedci_sgd_apply(const fedc_sgd_step *st, float *params, size_t off, const float *g,
                          size_t n);

/* Per-layer activation sizing helpers (model.c). */
size_t fedci_layer_scratch(const fedci_layer *L, int B);

#endif
