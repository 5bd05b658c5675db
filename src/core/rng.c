/*
 * Counter-based random streams: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3", SC 2011). The key is the run seed; the counter is
 * (block, round, client, purpose), so every stream is addressed, never advanced from another.
 */
#include <assert.h>
#include <math.h>

#include "fedc/rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void fedc_philox4x32_10(const uint32_t key[2], const uint32_t ctr[4], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void fedc_rng_init(fedc_rng *rng, uint64_t seed, uint32_t round, uint32_t client,
                   fedc_rng_purpose purpose)
{
    rng->key[0] = (uint32_t)seed;
    rng->key[1] = (uint32_t)(seed >> 32);
    rng->ctr[0] = 0;
    rng->ctr[1] = round;
    rng->ctr[2] = client;
    rng->ctr[3] = (uint32_t)purpose;
    rng->pos = 4;
    rng->has_spare = 0;
    rng->spare = 0;
}

uint32_t fedc_rng_u32(fedc_rng *rng)
{
    if (rng->pos >= 4) {
        fedc_philox4x32_10(rng->key, rng->ctr, rng->buf);
        rng->ctr[0]++;
        /* 2^32 blocks = 2^34 words per stream; wrapping would repeat the stream. */
        assert(rng->ctr[0] != 0 && "rng stream exhausted");
        rng->pos = 0;
    }
    return rng->buf[rng->pos++];
}

uint64_t fedc_rng_u64(fedc_rng *rng)
{
    uint64_t hi = fedc_rng_u32(rng);
    return (hi << 32) | fedc_rng_u32(rng);
}

double fedc_rng_uniform(fedc_rng *rng)
{
    return (double)(fedc_rng_u64(rng) >> 11) * 0x1.0p-53;
}

float fedc_rng_uniformf(fedc_rng *rng)
{
    return (float)(fedc_rng_u32(rng) >> 8) * 0x1.0p-24f;
}

uint64_t fedc_rng_below(fedc_rng *rng, uint64_t n)
{
    assert(n > 0);
    if (n <= UINT32_MAX) {
        /* Lemire, "Fast random integer generation in an interval" (2019). */
        uint32_t n32 = (uint32_t)n;
        uint64_t m = (uint64_t)fedc_rng_u32(rng) * n32;
        uint32_t l = (uint32_t)m;
        if (l < n32) {
            uint32_t t = (uint32_t)(-n32) % n32;
            while (l < t) {
                m = (uint64_t)fedc_rng_u32(rng) * n32;
                l = (uint32_t)m;
            }
        }
        return m >> 32;
    }
    /* Rejection on the top bits for large n. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = fedc_rng_u64(rng);
    } while (x >= limit);
    return x % n;
}

double fedc_rng_normal(fedc_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    double u1 = 1.0 - fedc_rng_uniform(rng); /* (0, 1]: log is finite */
    double u2 = fedc_rng_uniform(rng);
    double r = sqrt(-2.0 * log(u1));
    double theta = 2.0 * M_PI * u2;
    rng->spare = r * sin(theta);
    rng->has_spare = 1;
    return r * cos(theta);
}

int fedc_rng_bernoulli(fedc_rng *rng, double p)
{
    if (p <= 0) return 0;
    if (p >= 1) return 1;
    return fedc_rng_uniform(rng) < p;
}

double fedc_rng_gamma(fedc_rng *rng, double shape)
{
    assert(shape > 0);
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a + 1) * U^(1/a) */
        double g = fedc_rng_gamma(rng, shape + 1.0);
        double u = 1.0 - fedc_rng_uniform(rng);
        return g * pow(u, 1.0 / shape);
    }
    /* Marsaglia and Tsang, "A simple method for generating gamma variables" (2000). */
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = fedc_rng_normal(rng);
            v = 1.0 + c * x;
        } while (v <= 0);
        v = v * v * v;
        double u = fedc_rng_uniform(rng);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

void fedc_rng_dirichlet(fedc_rng *rng, const double *alpha, size_t k, double *out)
{
    double sum = 0;
    for (size_t i = 0; i < k; i++) {
        out[i] = fedc_rng_gamma(rng, alpha[i]);
        sum += out[i];
    }
    if (sum > 0) {
        for (size_t i = 0; i < k; i++) out[i] /= sum;
        return;
    }
    /* Every draw underflowed (tiny alphas): the limit is a vertex of the simplex. */
    size_t pick = (size_t)fedc_rng_below(rng, k);
    for (size_t i = 0; i < k; i++) out[i] = i == pick ? 1.0 : 0.0;
}

void fedc_rng_shuffle_u32(fedc_rng *rng, uint32_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fedc_rng_below(rng, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

void fedc_rng_permutation(fedc_rng *rng, uint32_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = (uint32_t)i;
    fedc_rng_shuffle_u32(rng, out, n);
}

double fedc_rng_lognormal(fedc_rng *rng, double mu, double sigma)
{
    return exp(mu + sigma * fedc_rng_normal(rng));
}
