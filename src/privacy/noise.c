/*
 * Gaussian noise for differential privacy.
 *
 * Secure mode: uniform bits from a ChaCha20 stream (libsodium's crypto_stream_chacha20_ietf)
 * whose 256-bit key comes from libsodium's CSPRNG (randombytes_buf, the OS generator via
 * getrandom on Linux), 4 KiB at a time with fast key erasure (each refill's first 32 bytes are
 * the next refill's key, so a captured state does not reveal earlier noise), the key redrawn
 * from the OS every 256 refills (1 MiB). One getrandom call per 4 KiB cost more than the rest
 * of the sampler together (80 ms for the 1.66 M normals of one CNN-sized vector); this is
 * how the kernel's own generator and libsodium's internal one expand a seed. Never the
 * training rng. Seeded mode: the fedc_rng
 * stream (seed, round, client, FEDC_RNG_NOISE_TEST), reproducible and NOT private, for tests.
 * Both feed the same sampler, so tests of the seeded sampler test the secure one too.
 *
 * Sampler: Box-Muller in double precision from 53-bit uniforms, u1 in (0, 1] (no log 0) and
 * u2 in [0, 1); both outputs of a pair are used. Its largest output is sqrt(-2 ln 2^-53) = 8.57,
 * a truncation with probability below 1e-17 per draw. Noise is added to each float in double and
 * the sum rounded to float once. Why this and what it does not fix (Mironov 2012's attack on
 * floating-point noise): docs/PRIVACY.md.
 */
#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include <sodium.h>

#include "fedc/log.h"
#include "fedc/privacy.h"

static atomic_int seeded_warned;

#define POOL_WORDS (sizeof ((fedc_dp_noise *)0)->pool / sizeof(uint64_t))

fedc_status fedc_dp_noise_init_secure(fedc_dp_noise *noise, fedc_err *err)
{
    assert(noise);
    if (sodium_init() < 0)
        return fedc_err_set(err, FEDC_ERR_CRYPTO,
                            "libsodium could not be initialised: no secure noise source");
    sodium_memzero(noise, sizeof *noise);
    noise->secure = 1;
    noise->pool_pos = POOL_WORDS;
    return FEDC_OK;
}

void fedc_dp_noise_init_seeded(fedc_dp_noise *noise, uint64_t seed, uint32_t round,
                               uint32_t client)
{
    assert(noise);
    sodium_memzero(noise, sizeof *noise);
    noise->secure = 0;
    noise->pool_pos = POOL_WORDS;
    fedc_rng_init(&noise->rng, seed, round, client, FEDC_RNG_NOISE_TEST);
    /* A warning the first time in the process (a simulation makes one source per client and
     * round), then debug messages. */
    int first = !atomic_exchange(&seeded_warned, 1);
    fedc_log(first ? FEDC_LOG_WARN : FEDC_LOG_DEBUG, "dp",
             "seeded DP noise (seed %llu, round %u, client %u): reproducible, for tests only, "
             "NOT private",
             (unsigned long long)seed, (unsigned)round, (unsigned)client);
}

void fedc_dp_noise_fini(fedc_dp_noise *noise)
{
    if (!noise) return;
    sodium_memzero(noise, sizeof *noise);
}

int fedc_dp_noise_is_private(const fedc_dp_noise *noise)
{
    assert(noise);
    return noise->secure;
}

/* Secure mode: 4 KiB more words from ChaCha20 under the current key, which is replaced by the
 * stream's first 32 bytes (fast key erasure); a fresh key from the OS every 256 refills. The
 * nonce can stay zero: no key is used twice. */
#define RESEED_REFILLS 256u

static void refill(fedc_dp_noise *noise)
{
    if (noise->refills % RESEED_REFILLS == 0) randombytes_buf(noise->key, sizeof noise->key);
    unsigned char block[sizeof noise->key + sizeof noise->pool];
    static const unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    crypto_stream_chacha20_ietf(block, sizeof block, nonce, noise->key);
    memcpy(noise->key, block, sizeof noise->key);
    memcpy(noise->pool, block + sizeof noise->key, sizeof noise->pool);
    sodium_memzero(block, sizeof block);
    noise->refills++;
    noise->pool_pos = 0;
}

static uint64_t next_u64(fedc_dp_noise *noise)
{
    if (!noise->secure) return fedc_rng_u64(&noise->rng);
    if (noise->pool_pos >= POOL_WORDS) refill(noise);
    uint64_t u = noise->pool[noise->pool_pos];
    noise->pool[noise->pool_pos++] = 0; /* used randomness does not linger */
    return u;
}

double fedc_dp_noise_normal(fedc_dp_noise *noise)
{
    assert(noise);
    if (noise->has_spare) {
        noise->has_spare = 0;
        double s = noise->spare;
        noise->spare = 0.0;
        return s;
    }
    double u1 = (double)((next_u64(noise) >> 11) + 1) * 0x1p-53; /* (0, 1] */
    double u2 = (double)(next_u64(noise) >> 11) * 0x1p-53;       /* [0, 1) */
    double r = sqrt(-2.0 * log(u1));
    double t = 2.0 * M_PI * u2;
    noise->spare = r * sin(t);
    noise->has_spare = 1;
    return r * cos(t);
}

fedc_status fedc_dp_noise_add(fedc_dp_noise *noise, size_t n, float *x, double stddev,
                              fedc_err *err)
{
    assert(noise && (x || n == 0));
    if (!(stddev >= 0.0) || !isfinite(stddev))
        return fedc_err_set(err, FEDC_ERR_RANGE,
                            "noise stddev %g must be a finite number >= 0", stddev);
    if (stddev == 0.0) return FEDC_OK;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((double)x[i] + stddev * fedc_dp_noise_normal(noise));
    return FEDC_OK;
}
