/*
 * Deterministic random streams (DESIGN.md rule 3).
 *
 * A stream is Philox4x32-10 (Salmon et al. 2011, the generator of JAX, cuRAND and NumPy's
 * Philox), keyed by the run seed and counted over (round, client, purpose, block). Two streams
 * with any field different are independent; a stream's output does not depend on what any
 * other stream drew, on thread count or on timing. The state is a small value type: copy it to
 * fork, put it on the stack, no allocation.
 *
 * Not for secrets: DP noise and SecAgg keys come from libsodium's CSPRNG.
 */
#ifndef FEDC_RNG_H
#define FEDC_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a stream is used for. Numbers are pinned (they key the streams): append only. */
typedef enum fedc_rng_purpose {
    FEDC_RNG_INIT = 1,      /* model parameter initialisation */
    FEDC_RNG_SAMPLE = 2,    /* client selection per round */
    FEDC_RNG_PARTITION = 3, /* splitting a dataset among clients */
    FEDC_RNG_SHUFFLE = 4,   /* per-epoch batch order on a client */
    FEDC_RNG_DROPOUT = 5,   /* dropout masks */
    FEDC_RNG_DATA = 6,      /* synthetic data generation */
    FEDC_RNG_SPLIT = 7,     /* train/test split of a client's data */
    FEDC_RNG_ATTACK = 8,    /* simulated attacks (robustness tests) */
    FEDC_RNG_QUANTIZE = 9,  /* stochastic rounding in codecs */
    FEDC_RNG_EVAL = 10,     /* sampling clients for federated evaluation */
    FEDC_RNG_NOISE_TEST = 11, /* seeded DP noise: tests only, NOT private */
    FEDC_RNG_FAILURE = 12   /* simulated client failures */
} fedc_rng_purpose;

typedef struct fedc_rng {
    uint32_t key[2];
    uint32_t ctr[4];  /* ctr[0] block index, ctr[1] round, ctr[2] client, ctr[3] purpose */
    uint32_t buf[4];  /* output of the current block */
    unsigned pos;     /* next unused word of buf (4 = empty) */
    int has_spare;    /* a second normal from the last Box-Muller pair */
    double spare;
} fedc_rng;

/* The stream for (seed, round, client, purpose). Client ids and rounds are caller-defined;
 * use FEDC_RNG_ANY (0xffffffff) for "not tied to a client/round" (e.g. server-side). */
#define FEDC_RNG_ANY 0xffffffffu
void fedc_rng_init(fedc_rng *rng, uint64_t seed, uint32_t round, uint32_t client,
                   fedc_rng_purpose purpose);

/* One Philox4x32-10 block: out = philox(key, ctr). Exposed for known-answer tests. */
void fedc_philox4x32_10(const uint32_t key[2], const uint32_t ctr[4], uint32_t out[4]);

uint32_t fedc_rng_u32(fedc_rng *rng);
uint64_t fedc_rng_u64(fedc_rng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
double fedc_rng_uniform(fedc_rng *rng);
/* Uniform float in [0, 1) with 24 random bits. */
float fedc_rng_uniformf(fedc_rng *rng);
/* Uniform integer in [0, n), unbiased (Lemire's method). n must be > 0. */
uint64_t fedc_rng_below(fedc_rng *rng, uint64_t n);
/* Standard normal N(0, 1) (Box-Muller; the pair's second value is kept for the next call). */
double fedc_rng_normal(fedc_rng *rng);
/* 1 with probability p, else 0. p is clamped to [0, 1]. */
int fedc_rng_bernoulli(fedc_rng *rng, double p);
/* Gamma(shape, 1), shape > 0 (Marsaglia-Tsang; shape < 1 by the boost x * U^(1/shape)). */
double fedc_rng_gamma(fedc_rng *rng, double shape);
/* Dirichlet(alpha[0..k-1]) into out[0..k-1]; every alpha > 0. */
void fedc_rng_dirichlet(fedc_rng *rng, const double *alpha, size_t k, double *out);
/* out[0..n-1] = a uniformly random permutation of 0..n-1 (Fisher-Yates). */
void fedc_rng_permutation(fedc_rng *rng, uint32_t *out, size_t n);
/* Shuffles idx[0..n-1] in place (Fisher-Yates). */
void fedc_rng_shuffle_u32(fedc_rng *rng, uint32_t *idx, size_t n);
/* Log-normal: exp(mu + sigma * N(0,1)). */
double fedc_rng_lognormal(fedc_rng *rng, double mu, double sigma);

#ifdef __cplusplus
}
#endif
#endif
