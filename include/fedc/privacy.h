/*
 * Differential privacy: the RDP accountant of the sampled Gaussian mechanism, L2 clipping,
 * Gaussian noise from libsodium's CSPRNG, and adaptive clipping (Andrew et al. 2021).
 *
 * The accountant computes exactly what TensorFlow Privacy's rdp_accountant and Opacus's
 * accountants/analysis/rdp compute (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy
 * of the Sampled Gaussian Mechanism"): integer orders by the binomial expansion in log space,
 * fractional orders by the two-series computation with log-erfc, and the RDP-to-(eps, delta)
 * conversion both use today (Balle et al. 2020, Prop. 12; Canonne et al. 2020, Eq. 20):
 *
 *     eps = min over orders a of  RDP(a) + ln(1 - 1/a) - ln(delta * a) / (a - 1)
 *
 * with TF Privacy's two guards: an order whose RDP r satisfies delta^2 + expm1(-r) >= 0 gives
 * eps = 0 (the KL bound), and orders a <= 1.01 give +inf (numerically unstable); the result is
 * max(0, min). docs/PRIVACY.md explains the choices; tests/privacy_rdp_test.c pins TF Privacy's
 * and Opacus's published values.
 *
 * The round engine's DP (DP-FedAvg, local DP, DP-SGD accounting, budgets) is built from these
 * pieces in fedc_dp_run (below; docs/PRIVACY.md "DP in the round engine"), and a client's side
 * of it is fedc_dp_client_apply.
 *
 * Thread safety: the stateless functions (fedc_rdp_*, fedc_dp_epsilon, fedc_dp_noise_multiplier,
 * fedc_dp_clip_l2, fedc_dp_noise_split, fedc_dp_client_apply) are thread-safe. A handle or state
 * struct (fedc_accountant, fedc_dp_noise, fedc_adaptive_clip, fedc_dp_run) must be used by one
 * thread at a time, except fedc_dp_run_client_task and fedc_dp_run_prepare, which may run
 * concurrently with each other while a round is open.
 */
#ifndef FEDC_PRIVACY_H
#define FEDC_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/rng.h"
#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * RDP of the sampled Gaussian mechanism
 * ------------------------------------------------------------------------------------------- */

/* Orders are accepted in (1, FEDC_RDP_MAX_ORDER]; fedc_rdp_compute also accepts +inf. The cost of
 * an integer order a is a + 1 log-space terms. */
#define FEDC_RDP_MAX_ORDER 100000.0

/*
 * RDP of `steps` compositions of the sampled Gaussian mechanism with sampling rate q and noise
 * multiplier z (noise stddev / L2 sensitivity), at each of orders[0..count-1], into rdp[0..count-1]
 * (TF Privacy's compute_rdp). Special cases as in TF Privacy and Opacus: q = 0 gives 0 at every
 * order (also +inf); q = 1 gives steps * a / (2 z^2); an infinite order gives +inf when q > 0;
 * steps = 0 gives 0.
 * Errors (message in err, which may be NULL): FEDC_ERR_RANGE when q is outside [0, 1], z is not a
 * finite number > 0, or an order is NaN, <= 1 or above FEDC_RDP_MAX_ORDER (and finite);
 * FEDC_ERR_INTERNAL if the series fails numerically (not seen for any tested input).
 */
fedc_status fedc_rdp_compute(double q, double z, uint64_t steps, const double *orders,
                             size_t count, double *rdp, fedc_err *err);

/*
 * (eps, delta)-DP from RDP values: eps = max(0, min_a [rdp(a) + ln(1 - 1/a) - ln(delta a)/(a-1)])
 * with TF Privacy's guards (see the top of this file). *eps gets the minimum (+inf when every
 * order gives +inf) and *order the order that attains it (the first one on ties); order may be
 * NULL. Errors: FEDC_ERR_RANGE when delta is outside (0, 1), an order is not finite and > 1, or an
 * RDP value is negative or NaN; FEDC_ERR_INVALID when count is 0.
 */
fedc_status fedc_rdp_epsilon(const double *orders, const double *rdp, size_t count, double delta,
                             double *eps, double *order, fedc_err *err);

/* fedc_rdp_compute followed by fedc_rdp_epsilon: eps of `steps` steps at (q, z). Same errors;
 * also FEDC_ERR_NOMEM. */
fedc_status fedc_dp_epsilon(double q, double z, uint64_t steps, double delta,
                            const double *orders, size_t count, double *eps, double *order,
                            fedc_err *err);

/*
 * The inverse: the smallest noise multiplier z whose eps after `steps` steps at sampling rate q
 * is <= target_eps, by bisection (eps is non-increasing in z). Tolerance: the returned z satisfies
 * eps(z) <= target_eps, and eps(z * (1 - 1e-6)) > target_eps, i.e. z is at most 1e-6 (relative)
 * above the exact answer. *eps_at_z (may be NULL) gets eps(z), *order (may be NULL) its order.
 * Errors: FEDC_ERR_RANGE for q outside (0, 1], delta outside (0, 1), target_eps not finite > 0,
 * steps = 0 or bad orders; FEDC_ERR_RANGE too when no z <= 1e8 reaches the target.
 */
fedc_status fedc_dp_noise_multiplier(double q, uint64_t steps, double delta, double target_eps,
                                     const double *orders, size_t count, double *z,
                                     double *eps_at_z, double *order, fedc_err *err);

/*
 * Named order lists (static storage; *count gets the length):
 *   "tf":     TF Privacy compute_dp_sgd_privacy: 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5,
 *             5, 6, ..., 63, 128, 256, 512 (72 orders);
 *   "opacus": Opacus's DEFAULT_ALPHAS: 1 + x/10 for x = 1..99, then 12, 13, ..., 63 (151 orders).
 * Returns NULL (and *count = 0) for an unknown name.
 */
const double *fedc_rdp_orders_named(const char *name, size_t *count);

/* The default order list of libfedc (the engine's and `fedc dp-budget`'s): "tf". */
#define FEDC_RDP_ORDERS_DEFAULT "tf"

/*
 * Parses an order list: a name ("tf", "opacus") or a comma-separated list of numbers and
 * integer ranges "LO..HI" (inclusive), e.g. "1.5,2..32,64". On success *orders is a new array
 * (free with fedc_free) of *count orders in the written order. Errors: FEDC_ERR_CONFIG naming
 * the bad token (not a number, order <= 1, above FEDC_RDP_MAX_ORDER, empty list, a range with
 * LO > HI or non-integer ends, more than 100000 orders); FEDC_ERR_NOMEM.
 */
fedc_status fedc_rdp_orders_parse(const char *spec, double **orders, size_t *count,
                                  fedc_err *err);

/* ---------------------------------------------------------------------------------------------
 * The accountant: RDP composed over phases (q, z, steps), for per-round recording of eps spent.
 * ------------------------------------------------------------------------------------------- */

typedef struct fedc_accountant fedc_accountant;

/*
 * A new accountant over orders[0..count-1] (copied; every order finite, > 1 and
 * <= FEDC_RDP_MAX_ORDER), with nothing spent. Returns NULL on error with err set
 * (FEDC_ERR_RANGE, FEDC_ERR_INVALID for count 0, FEDC_ERR_NOMEM).
 */
fedc_accountant *fedc_accountant_create(const double *orders, size_t count, fedc_err *err);
void fedc_accountant_destroy(fedc_accountant *acc); /* NULL allowed */

/*
 * Records `steps` more steps of the sampled Gaussian mechanism at (q, z). Consecutive calls with
 * the same (q, z) merge into one phase, and the RDP of a (q, z) pair is computed once and
 * cached, so per-round calls cost O(orders). The accumulated RDP of a pair equals
 * fedc_rdp_compute over its total steps bit for bit, so a run that adds (q, z, 1) T times
 * reports exactly the eps of `fedc dp-budget` for T steps.
 * Errors (message: fedc_accountant_errmsg): FEDC_ERR_RANGE as fedc_rdp_compute, FEDC_ERR_NOMEM.
 * On error nothing is recorded.
 */
fedc_status fedc_accountant_add(fedc_accountant *acc, double q, double z, uint64_t steps);

/* eps spent so far at delta, and the order that attains it (order may be NULL); eps is 0 before
 * any step. Errors: as fedc_rdp_epsilon. */
fedc_status fedc_accountant_epsilon(fedc_accountant *acc, double delta, double *eps,
                                    double *order);

/* The eps that would be spent after also adding (q, z, steps), without recording them: for
 * refusing a round that would exceed a budget. Errors: as _add and _epsilon. */
fedc_status fedc_accountant_epsilon_if(fedc_accountant *acc, double q, double z, uint64_t steps,
                                       double delta, double *eps, double *order);

/* The message of the last error on acc ("" if none). Valid until the next call on acc. */
const char *fedc_accountant_errmsg(const fedc_accountant *acc);

/* The orders (count entries, owned by acc) and the composed RDP at each (a new array into rdp,
 * which must hold count doubles). */
size_t fedc_accountant_order_count(const fedc_accountant *acc);
const double *fedc_accountant_orders(const fedc_accountant *acc);
void fedc_accountant_rdp(const fedc_accountant *acc, double *rdp);
/* Total steps recorded, and the recorded phases (consecutive equal (q, z) merged). */
uint64_t fedc_accountant_steps(const fedc_accountant *acc);
size_t fedc_accountant_phase_count(const fedc_accountant *acc);
/* Phase i (< phase_count): its q, z and steps. */
void fedc_accountant_phase(const fedc_accountant *acc, size_t i, double *q, double *z,
                           uint64_t *steps);

/* ---------------------------------------------------------------------------------------------
 * Clipping
 * ------------------------------------------------------------------------------------------- */

/*
 * Clips x[0..n-1] to L2 norm <= clip: when its norm (accumulated in double) exceeds clip, x is
 * scaled by clip / norm, and the result's norm is guaranteed <= clip (recomputed; rescaled by a
 * hair if float rounding left it above). A vector within clip is left untouched, bit for bit.
 * *pre_norm (may be NULL) gets the norm before clipping.
 * Errors: FEDC_ERR_RANGE when clip is not finite and > 0; FEDC_ERR_NONFINITE when x holds a NaN
 * or Inf (the message names the index; x is left untouched).
 */
fedc_status fedc_dp_clip_l2(size_t n, float *x, double clip, double *pre_norm, fedc_err *err);

/* ---------------------------------------------------------------------------------------------
 * Gaussian noise
 * ------------------------------------------------------------------------------------------- */

/*
 * A source of N(0, 1) noise. Caller-owned storage: _init_secure or _init_seeded, then _fini.
 *
 * Secure mode draws uniform bits from a ChaCha20 stream keyed from libsodium's CSPRNG
 * (randombytes_buf: the OS generator), with fast key erasure: each 4 KiB refill also yields the
 * next key, and the key is drawn afresh from the OS every 1 MiB; used words are wiped, and
 * _fini wipes the key and the buffer. It turns them into normals by the
 * Box-Muller transform computed in double precision from 53-bit uniforms in (0, 1]. Noise is
 * added to a float vector in double and rounded to float once. docs/PRIVACY.md states the
 * floating-point weakness of this (Mironov 2012) and what the mitigation does and does not buy.
 *
 * Seeded mode draws from the fedc_rng stream (seed, round, client, FEDC_RNG_NOISE_TEST): it is
 * reproducible and NOT private, for tests only. _init_seeded logs a warning saying so (the
 * first time in the process; debug level after that), and
 * fedc_dp_noise_is_private returns 0 so that callers mark their metrics.
 */
typedef struct fedc_dp_noise {
    int secure;          /* 1: libsodium CSPRNG; 0: seeded test mode (not private) */
    fedc_rng rng;        /* seeded mode's stream */
    uint64_t pool[512];  /* secure mode: buffered CSPRNG words */
    size_t pool_pos;     /* next unused word of pool (512 = empty) */
    int has_spare;       /* the second normal of the last Box-Muller pair */
    double spare;
    unsigned char key[32]; /* secure mode: the ChaCha20 key of the next refill */
    uint32_t refills;    /* secure mode: refills since the key came from the OS */
} fedc_dp_noise;

/* Secure noise. Errors: FEDC_ERR_CRYPTO when libsodium cannot be initialised. */
fedc_status fedc_dp_noise_init_secure(fedc_dp_noise *noise, fedc_err *err);
/* Seeded, reproducible, NOT private noise (tests only). Logs a warning. */
void fedc_dp_noise_init_seeded(fedc_dp_noise *noise, uint64_t seed, uint32_t round,
                               uint32_t client);
/* Wipes the buffered randomness. NULL allowed. */
void fedc_dp_noise_fini(fedc_dp_noise *noise);
/* 1 for secure noise, 0 for seeded test noise. */
int fedc_dp_noise_is_private(const fedc_dp_noise *noise);
/* One N(0, 1) draw. */
double fedc_dp_noise_normal(fedc_dp_noise *noise);
/* x[i] = float(double(x[i]) + stddev * N(0, 1)) for i < n, independent draws.
 * Errors: FEDC_ERR_RANGE when stddev is not finite and >= 0 (stddev 0 leaves x untouched). */
fedc_status fedc_dp_noise_add(fedc_dp_noise *noise, size_t n, float *x, double stddev,
                              fedc_err *err);

/* ---------------------------------------------------------------------------------------------
 * Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021; TensorFlow Federated's
 * QuantileAdaptiveClipSumQuery)
 * ------------------------------------------------------------------------------------------- */

/* Parameters. fedc_adaptive_clip_defaults fills TFF's defaults. */
typedef struct fedc_adaptive_clip_params {
    double initial_clip;     /* C0, > 0 (TFF: 0.1) */
    double target_quantile;  /* gamma in [0, 1] (TFF: 0.5) */
    double learning_rate;    /* eta >= 0 (TFF: 0.2) */
    double count_stddev;     /* sigma_b >= 0 of the noise on the clipped count (TFF: m / 20) */
    double expected_clients; /* m > 0: the fixed denominator (expected clients per round) */
    int geometric;           /* 1: C <- C exp(-eta (b - gamma)) (TFF); 0: C - eta (b - gamma) */
} fedc_adaptive_clip_params;

/* TFF's defaults for m expected clients per round: C0 0.1, gamma 0.5, eta 0.2, sigma_b = m / 20,
 * geometric. */
void fedc_adaptive_clip_defaults(fedc_adaptive_clip_params *params, double expected_clients);

/*
 * The state, caller-owned (_init; nothing to _fini). One round:
 *   1. clip every client update to fedc_adaptive_clip_current() (the clip of this round);
 *   2. fedc_adaptive_clip_observe(norm) for each update's pre-clip norm (or _observe_bit with a
 *      client-computed bit b_i = [norm <= clip]);
 *   3. fedc_adaptive_clip_update(): b = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2, clamped
 *      to [0, 1]; C <- C exp(-eta (b - gamma)) (geometric) or max(0, C - eta (b - gamma)).
 * Counting b_i - 1/2 (TF Privacy's centring) makes one client change the noised sum by at most
 * 1/2, which is what the noise split below assumes; when exactly m clients report, b is the
 * plain (sum b_i + noise) / m.
 */
typedef struct fedc_adaptive_clip {
    fedc_adaptive_clip_params params;
    double clip;         /* current clip C */
    double centred_sum;  /* sum of (b_i - 1/2) this round */
    uint64_t observed;   /* records observed this round */
    uint64_t rounds;     /* updates done */
    double last_fraction; /* the noised unclipped fraction b of the last update */
} fedc_adaptive_clip;

/* Errors: FEDC_ERR_RANGE naming the parameter out of range (see fedc_adaptive_clip_params). */
fedc_status fedc_adaptive_clip_init(fedc_adaptive_clip *ac, const fedc_adaptive_clip_params *p,
                                    fedc_err *err);
double fedc_adaptive_clip_current(const fedc_adaptive_clip *ac);
/* Records one update's pre-clip L2 norm: b_i = [norm <= current clip]. */
void fedc_adaptive_clip_observe(fedc_adaptive_clip *ac, double norm);
/* Records one client-computed bit (nonzero: the update was not clipped). */
void fedc_adaptive_clip_observe_bit(fedc_adaptive_clip *ac, int unclipped);
/* Ends the round: noises the count with `noise` (NULL: no noise, NOT private; for tests),
 * updates the clip, clears the round's counts; *new_clip (may be NULL) gets the new clip. */
void fedc_adaptive_clip_update(fedc_adaptive_clip *ac, fedc_dp_noise *noise, double *new_clip);

/*
 * The noise multiplier left for the update when a total noise multiplier z is split between
 * the update sum and the clipped count (noise stddev count_stddev, sensitivity 1/2):
 * z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2). count_stddev = 0 gives z_delta = z.
 * Errors: FEDC_ERR_RANGE when z is not finite > 0, count_stddev < 0, or z >= 2 count_stddev
 * (the count would take all the privacy budget).
 */
fedc_status fedc_dp_noise_split(double z, double count_stddev, double *z_delta, fedc_err *err);

/* ---------------------------------------------------------------------------------------------
 * The client's side of user-level DP: what a client does to its update after training and
 * before the update leaves the device (DESIGN.md: update -> clip (DP) -> compress -> mask).
 * It is a step of the client pipeline, not of the trainer, so that every trainer (the built-in
 * one, a custom one, a deployed client) gets it: a transport's client half calls
 * fedc_dp_client_apply on the update that trainer->fit produced, with the task the round
 * engine gave it (fedc_engine_dp_task), and hands the report back with the update
 * (fedc_engine_submit_dp).
 * ------------------------------------------------------------------------------------------- */

/* What the server asks a client to do to its update. All zero: nothing. */
typedef struct fedc_dp_client_task {
    double clip;         /* clip the update to L2 norm <= clip; 0: do not clip */
    double noise_stddev; /* local DP: then add N(0, noise_stddev^2) to every coordinate; 0: none */
    int seeded_noise;    /* 1: the noise comes from the seeded stream (seed, round, client,
                            FEDC_RNG_NOISE_TEST): reproducible and NOT private (tests only) */
    uint64_t seed;
    uint32_t round, client;
} fedc_dp_client_task;

/* What the client reports besides its update. */
typedef struct fedc_dp_client_report {
    int unclipped; /* 1 when the update's norm was <= clip (adaptive clipping's bit b_i); 1 when
                      the task did not clip */
} fedc_dp_client_report;

/*
 * Applies task to update[0..n-1] in place: clip (fedc_dp_clip_l2), then local noise
 * (fedc_dp_noise_add, secure unless task->seeded_noise). report (may be NULL) gets the
 * clipped bit. Thread-safe (no shared state; the secure noise source lives on the stack and
 * is wiped). Errors: FEDC_ERR_NONFINITE (the update holds a NaN or Inf: it must not be sent),
 * FEDC_ERR_RANGE (a negative or non-finite clip or stddev), FEDC_ERR_CRYPTO (no secure noise
 * source). On error the update may be partly processed: do not send it.
 */
fedc_status fedc_dp_client_apply(const fedc_dp_client_task *task, size_t n, float *update,
                                 fedc_dp_client_report *report, fedc_err *err);

/* ---------------------------------------------------------------------------------------------
 * The DP state of a run, as the round engine keeps it (src/privacy/dp_run.c; docs/PRIVACY.md
 * "DP in the round engine"). One object holds the user-level mechanism's server side
 * (dp.mode = central: clipped updates folded into an exact sum, Gaussian noise on the sum,
 * division by the fixed denominator clients.per_round, adaptive clipping), the accountants
 * (user-level; example-level DP-SGD per client) and the budget. The engine calls it around the
 * strategy; other code rarely needs it directly.
 * ------------------------------------------------------------------------------------------- */

typedef enum fedc_dp_mode {
    FEDC_DP_OFF = 0,
    FEDC_DP_CENTRAL = 1, /* DP-FedAvg: clip, noised sum on the server (McMahan et al. 2018) */
    FEDC_DP_LOCAL = 2    /* each client clips and noises its own update */
} fedc_dp_mode;

/* The DP side of one round, for the round's record. Fields that do not apply are NAN. */
typedef struct fedc_dp_round_info {
    fedc_dp_mode mode;
    int sgd;                   /* example-level DP-SGD runs on the clients */
    int seeded;                /* seeded test noise: the numbers below are NOT a guarantee */
    int released;              /* central: a noised aggregate was released this round */
    double clip;               /* user-level clip C used this round */
    double next_clip;          /* the clip of the next round (adaptive clipping), else = clip */
    double noise_multiplier;   /* z the accountant is fed (user level) */
    double update_noise_multiplier; /* z on the update sum (z_delta with adaptive clipping) */
    double noise_stddev;       /* central: stddev of the noise on the mean update,
                                  z_delta C / clients.per_round; local: z C on each update */
    double unclipped_fraction; /* adaptive clipping: the noised fraction b of unclipped updates */
    double epsilon;            /* user-level eps spent so far at dp.delta (local: the largest
                                  over clients); NAN with dp.mode = off */
    double order;              /* the RDP order attaining it */
    double sgd_epsilon;        /* example-level eps of DP-SGD so far, the largest over clients */
    double sgd_order;
    uint64_t steps;            /* central: rounds released (accountant steps); local: the most
                                  participations of one client */
} fedc_dp_round_info;

typedef struct fedc_dp_run fedc_dp_run;

/* Number of training examples of a client (0 if unknown), for predicting DP-SGD's cost. */
typedef uint64_t (*fedc_dp_examples_fn)(const void *ctx, uint32_t client);

/*
 * The DP state for a run configured by cfg (which must outlive it) over models of num_params
 * floats. Checks the [dp] section first (fedc_dp_config_check). *out is NULL, with FEDC_OK,
 * when DP is off (dp.mode = off and dp.sgd = false). examples (may be NULL) tells DP-SGD's
 * budget check how many examples a client holds. Logs a warning when dp.seeded_noise is set.
 * Errors: those of fedc_dp_config_check, FEDC_ERR_CRYPTO, FEDC_ERR_NOMEM.
 */
fedc_status fedc_dp_run_create(const fedc_config *cfg, size_t num_params,
                               fedc_dp_examples_fn examples, const void *examples_ctx,
                               fedc_dp_run **out, fedc_err *err);
void fedc_dp_run_destroy(fedc_dp_run *dp); /* NULL allowed */

fedc_dp_mode fedc_dp_run_mode(const fedc_dp_run *dp);

/*
 * Would running `round` with these selected clients exceed dp.epsilon_budget? FEDC_OK when it
 * fits (or there is no budget), FEDC_ERR_BUDGET with a message naming the eps it would reach
 * otherwise. *eps_after (may be NULL) gets that eps (the user-level one; DP-SGD's when
 * dp.mode = off). The budget applies to the user-level guarantee when dp.mode is central or
 * local, else to DP-SGD's example-level one. Errors also: FEDC_ERR_NOMEM.
 */
fedc_status fedc_dp_run_check_round(fedc_dp_run *dp, const uint32_t *clients, size_t n,
                                    double *eps_after, fedc_err *err);

/* Starts a round (clears the round's sum and counts; seeds the test noise). */
void fedc_dp_run_round_begin(fedc_dp_run *dp, uint32_t round);

/* The number of clients actually selected this round, when a transport over-selects (more than
 * clients.per_round): central DP then accounts the round at q = selected / clients.count (a
 * client's chance to be in it), and later budget checks use the largest q seen. The
 * denominator stays clients.per_round. Call before fedc_dp_run_round_end. */
void fedc_dp_run_round_cohort(fedc_dp_run *dp, size_t selected);

/* The task of `client` in the open round (clip and local noise). Thread-safe. */
void fedc_dp_run_client_task(const fedc_dp_run *dp, uint32_t client, fedc_dp_client_task *task);

/*
 * Central DP, on arrival, from any thread (no shared state is written): makes update
 * (num_params floats, modified in place) a contribution of L2 norm <= C. With dp.clip_on =
 * server it is clipped here; with client it was clipped on the client and the clip here only
 * enforces the bound (a no-op for a correct client; a larger update is clipped and logged).
 * Then each coordinate below 2^-9 in magnitude is rounded toward zero to the exact sum's grid
 * (2^-32), so that the sum's own rounding cannot raise the norm above C. *unclipped gets the
 * client's bit for adaptive clipping: from report (required with clip_on = client and adaptive
 * clipping) or from the norm seen here. Errors: FEDC_ERR_NONFINITE (NaN/Inf, naming the
 * index), FEDC_ERR_INVALID (the bit is missing).
 */
fedc_status fedc_dp_run_prepare(const fedc_dp_run *dp, uint32_t client, float *update,
                                const fedc_dp_client_report *report, int *unclipped,
                                fedc_err *err);

/* Central DP: folds a prepared update (weight 1) into the round's exact sum and its bit into
 * the adaptive count. Not thread-safe (the engine holds its lock). Errors: FEDC_ERR_RANGE (the
 * exact sum's range), FEDC_ERR_NONFINITE. On error nothing is folded. */
fedc_status fedc_dp_run_fold(fedc_dp_run *dp, const float *update, int unclipped, fedc_err *err);

/* Records that `client` released an update this round (local DP: one participation; DP-SGD:
 * `steps` steps at q = min(1, train.batch_size / num_examples)). Call for every update a client
 * sent, accepted or not: it was released. Not thread-safe. Errors: FEDC_ERR_NOMEM. */
fedc_status fedc_dp_run_charge(fedc_dp_run *dp, uint32_t client, uint64_t num_examples,
                               uint64_t steps, fedc_err *err);

/*
 * Ends the round. With release (central DP and the round reached its quorum): mean_out
 * (num_params floats) gets (sum + N(0, (z_delta C)^2)) / clients.per_round, the accountant
 * records one step at (q, z), and the adaptive clip is updated from the noised count. Without
 * release nothing is spent and the clip stays. info gets the round's DP record (eps so far).
 * Errors: FEDC_ERR_STATE (release outside central mode), FEDC_ERR_RANGE / FEDC_ERR_NOMEM from
 * the accountant.
 */
fedc_status fedc_dp_run_round_end(fedc_dp_run *dp, int release, float *mean_out,
                                  fedc_dp_round_info *info, fedc_err *err);

/* The run continues after round `rounds` (a checkpoint restored, or a round retried): accounts
 * are never reduced. Central DP: an accountant holding fewer than `rounds` steps (a new
 * process) is charged the missing ones (an upper bound: exact when no round missed its
 * quorum), and its adaptive clip restarts from dp.clip; one holding as many or more (a retry
 * in the same process) is kept. Local DP and DP-SGD keep their per-client accounts; a new
 * process restoring rounds > 0 has none: FEDC_ERR_UNSUPPORTED (fedc_dp_run_state_load, from an
 * engine checkpoint, restores them). */
fedc_status fedc_dp_run_restore(fedc_dp_run *dp, uint32_t rounds, fedc_err *err);

/* ---- Checkpoints (fedc_engine_checkpoint_save / _load; owner: state) ----
 * The DP run's state across rounds, as text entries (key, value) that round-trip exactly
 * (doubles as %.17g): "max_q", "charged"; central: "accountant" (its phases "q:z:steps" joined
 * by ';'), with adaptive clipping "clip", "clip_rounds", "last_fraction"; local DP:
 * "participations" ("client:count" for every client that took part, ','-joined); DP-SGD: "sgd"
 * ("client:steps:q"), "sgd_eps", "sgd_order". Secure noise has no state to keep; seeded test
 * noise is re-seeded every round. */
typedef fedc_status (*fedc_dp_put_fn)(void *ctx, const char *key, const char *value,
                                      fedc_err *err);
typedef const char *(*fedc_dp_get_fn)(void *ctx, const char *key); /* NULL: no such key */
/* Calls put for every entry. Errors: put's, FEDC_ERR_NOMEM. */
fedc_status fedc_dp_run_state_save(const fedc_dp_run *dp, fedc_dp_put_fn put, void *ctx,
                                   fedc_err *err);
/* Replaces the state with the entries get returns, for a run continuing after round `rounds`
 * (a DP run of the same config). Everything is parsed and checked first (each entry present,
 * well-formed, finite and in range: client ids below clients.count, counts and accountant steps
 * at most `rounds`); on error nothing changes. Errors: FEDC_ERR_FORMAT (naming the entry),
 * FEDC_ERR_RANGE, FEDC_ERR_NOMEM. */
fedc_status fedc_dp_run_state_load(fedc_dp_run *dp, uint32_t rounds, fedc_dp_get_fn get,
                                   void *ctx, fedc_err *err);

/* ---- Scale-out (MPI: src/sim/mpi.c, docs/SCALING.md; owner: mpi) ----
 * One run over several processes, each with a fedc_dp_run of the same config, each folding its
 * share of the round's updates. Central DP's partial (the exact sum and the adaptive count) is
 * combined by integer addition in any order and grouping (MPI_Allreduce, MPI_INT64_T, MPI_SUM)
 * and installed in every process before fedc_dp_run_round_end, which then gives every process
 * the same bits as one process folding every update. The noise of a release is drawn once: in
 * the process whose release hook draws, and the hook hands its noised mean and adaptive clip
 * to the others. Per-client accounts (local DP, DP-SGD) are combined by replaying every
 * result's fedc_dp_run_charge in every process (the accounts do not depend on the order). */
/* Int64 words of the partial: central DP, P + FEDC_ACCUM_TRAILER + 2; otherwise 0. */
size_t fedc_dp_run_partial_len(const fedc_dp_run *dp);
/* Writes the open round's partial (fedc_dp_run_partial_len words) into out. */
void fedc_dp_run_partial(fedc_dp_run *dp, int64_t *out);
/* Replaces the open round's sum and count by a combined partial (the element-wise sum of every
 * process's). Errors: FEDC_ERR_RANGE (the combined sum out of the exact range), FEDC_ERR_FORMAT
 * (inconsistent counts); the round's sum is then empty. */
fedc_status fedc_dp_run_partial_set(fedc_dp_run *dp, const int64_t *in, fedc_err *err);
/* Shares a release: mean (n floats) and shared[0..1] (the adaptive clip's new clip and noised
 * unclipped fraction) must become the drawing process's values in every process (MPI_Bcast
 * from it). Errors end the round with that error. */
typedef fedc_status (*fedc_dp_release_fn)(void *user, float *mean, size_t n, double shared[2],
                                          fedc_err *err);
/* Installs the hook that fedc_dp_run_round_end calls on every release, after forming the noised
 * mean and updating the adaptive clip and before they are used. draws = 1: this process draws
 * the noise (one process only); draws = 0: it draws none and takes the hook's values. fn NULL
 * removes the hook. */
void fedc_dp_run_set_release_hook(fedc_dp_run *dp, fedc_dp_release_fn fn, void *user, int draws);

/* ---------------------------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------------------------- */

/*
 * Checks the [dp] section of cfg against the rest of the run's configuration, for the checks a
 * single key's bounds cannot express. When dp.mode is off and dp.sgd is false, nothing is
 * checked. Otherwise (q = clients.per_round / clients.count):
 *   - q must be in (0, 1] (clients.per_round <= clients.count);
 *   - dp.delta must be < 1 / clients.count (a larger delta allows releasing a client's data);
 *   - dp.orders must parse (fedc_rdp_orders_parse);
 *   - with dp.adaptive_clip, dp.noise_multiplier must be < 2 * sigma_b (fedc_dp_noise_split),
 *     sigma_b = dp.clipped_count_stddev, or clients.per_round / 20 when that is 0;
 *   - dp.adaptive_clip needs dp.mode = central (the noised count is a server-side mechanism);
 *   - dp.mode = local needs dp.clip_on = client (the noise is added on the client, after
 *     clipping);
 *   - with dp.epsilon_budget > 0, the first round must fit in the budget (the run would
 *     otherwise stop before it starts): central, one step at q; local, one participation
 *     (q = 1, noise multiplier z/2: see docs/PRIVACY.md); DP-SGD alone is checked per client by
 *     the round engine, which knows the clients' data sizes.
 * Errors: FEDC_ERR_CONFIG with a message naming the keys and values ("dp.delta = 0.02 must be
 * < 1/clients.count = 0.01"); FEDC_ERR_NOMEM.
 */
fedc_status fedc_dp_config_check(const fedc_config *cfg, fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
