/*
 * Client optimizers over flat vectors (include/fedc/optim.h): SGD with momentum, Nesterov and
 * weight decay; Adam and AdamW; global-norm clipping and the FedProx proximal term, fused in
 * one pass over the parameters after one read-only pass that measures the gradient's norm
 * (and refuses NaN/Inf before anything is modified).
 */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fedc/alloc.h"
#include "fedc/optim.h"
#include "fedc/vec.h"
#include "optim/optim_internal.h"

/* The update loops are written for the vectorizer; -O2's cost model would leave them scalar. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__) && !defined(__OPTIMIZE_SIZE__)
#pragma GCC optimize("O3")
#endif

/* Hot loops get an AVX-512 and an AVX2 version next to the baseline one, picked at load time
 * (GCC function multiversioning; needs glibc's ifunc; not under ThreadSanitizer, whose
 * instrumented ifunc resolvers run before its runtime is set up and crash at load). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) &&   \
    !defined(__SANITIZE_THREAD__)
#define OPTIM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OPTIM_CLONES
#endif

struct fedc_optim {
    fedc_optim_config cfg;
    size_t n;
    float *m;             /* momentum buffer (SGD) or first moment (Adam) */
    float *v;             /* second moment (Adam) */
    const float *center;  /* FedProx w_global, caller-owned */
    uint64_t t;           /* steps since creation or reset */
    double last_norm;
    size_t state_bytes;
    char errmsg[FEDC_ERRMSG_MAX];
};

void fedc_optim_config_default(fedc_optim_config *cfg, fedc_optim_kind kind)
{
    assert(cfg);
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->lr = kind == FEDC_OPTIM_SGD ? 0.01 : 0.001;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->weight_decay = kind == FEDC_OPTIM_ADAMW ? 0.01 : 0.0;
}

int fedc_optim_kind_parse(const char *name, fedc_optim_kind *out)
{
    static const char *const names[] = {"sgd", "adam", "adamw"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (fedc_optim_kind)i;
            return 0;
        }
    return -1;
}

const char *fedc_optim_kind_name(fedc_optim_kind kind)
{
    switch (kind) {
    case FEDC_OPTIM_SGD: return "sgd";
    case FEDC_OPTIM_ADAM: return "adam";
    case FEDC_OPTIM_ADAMW: return "adamw";
    }
    return "?";
}

void fedc_optim_config_from(fedc_optim_config *cfg, const fedc_config *conf)
{
    assert(cfg && conf);
    fedc_optim_kind kind = FEDC_OPTIM_SGD;
    (void)fedc_optim_kind_parse(fedc_config_str(conf, "train.optimizer"), &kind);
    fedc_optim_config_default(cfg, kind);
    cfg->lr = fedc_config_double(conf, "train.lr");
    cfg->momentum = fedc_config_double(conf, "train.momentum");
    cfg->nesterov = fedc_config_bool(conf, "train.nesterov");
    cfg->weight_decay = fedc_config_double(conf, "train.weight_decay");
    cfg->beta1 = fedc_config_double(conf, "train.beta1");
    cfg->beta2 = fedc_config_double(conf, "train.beta2");
    cfg->eps = fedc_config_double(conf, "train.eps");
    cfg->clip_norm = fedc_config_double(conf, "train.clip_grad_norm");
    cfg->prox_mu = fedc_config_double(conf, "train.prox_mu");
}

static fedc_status check_config(const fedc_optim_config *c, size_t n, fedc_err *err)
{
#define BAD(...) fedc_err_set(err, FEDC_ERR_INVALID, __VA_ARGS__)
    if (c->kind != FEDC_OPTIM_SGD && c->kind != FEDC_OPTIM_ADAM && c->kind != FEDC_OPTIM_ADAMW)
        return BAD("optimizer: unknown kind %d", (int)c->kind);
    if (n == 0) return BAD("optimizer: no parameters");
    if (!(c->lr > 0.0) || !isfinite(c->lr)) return BAD("optimizer: lr %g is not > 0", c->lr);
    if (!(c->momentum >= 0.0 && c->momentum < 1.0))
        return BAD("optimizer: momentum %g is outside [0, 1)", c->momentum);
    if (c->nesterov && c->kind == FEDC_OPTIM_SGD && c->momentum == 0.0)
        return BAD("optimizer: Nesterov needs momentum > 0");
    if (!(c->weight_decay >= 0.0) || !isfinite(c->weight_decay))
        return BAD("optimizer: weight decay %g is not >= 0", c->weight_decay);
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0) || !(c->beta2 >= 0.0 && c->beta2 < 1.0))
        return BAD("optimizer: betas (%g, %g) are outside [0, 1)", c->beta1, c->beta2);
    if (!(c->eps > 0.0) || !isfinite(c->eps)) return BAD("optimizer: eps %g is not > 0", c->eps);
    if (!(c->clip_norm >= 0.0) || !isfinite(c->clip_norm))
        return BAD("optimizer: clipping norm %g is not >= 0", c->clip_norm);
    if (!(c->prox_mu >= 0.0) || !isfinite(c->prox_mu))
        return BAD("optimizer: proximal mu %g is not >= 0", c->prox_mu);
#undef BAD
    return FEDC_OK;
}

fedc_status fedc_optim_create(const fedc_optim_config *cfg, size_t nparams, fedc_optim **out,
                              fedc_err *err)
{
    assert(cfg && out);
    *out = NULL;
    FEDC_TRY(check_config(cfg, nparams, err));
    fedc_optim *o = fedc_calloc(1, sizeof *o);
    if (!o) return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory creating an optimizer");
    o->cfg = *cfg;
    o->n = nparams;
    int need_m = cfg->kind != FEDC_OPTIM_SGD || cfg->momentum > 0.0;
    int need_v = cfg->kind != FEDC_OPTIM_SGD;
    if (need_m) o->m = fedc_calloc(nparams, sizeof *o->m);
    if (need_v) o->v = fedc_calloc(nparams, sizeof *o->v);
    if ((need_m && !o->m) || (need_v && !o->v)) {
        fedc_optim_destroy(o);
        return fedc_err_set(err, FEDC_ERR_NOMEM, "out of memory for optimizer state (%zu params)",
                            nparams);
    }
    o->state_bytes = (size_t)(need_m + need_v) * nparams * sizeof(float);
    *out = o;
    return FEDC_OK;
}

void fedc_optim_destroy(fedc_optim *opt)
{
    if (!opt) return;
    fedc_free(opt->m);
    fedc_free(opt->v);
    fedc_free(opt);
}

const fedc_optim_config *fedc_optim_get_config(const fedc_optim *opt)
{
    assert(opt);
    return &opt->cfg;
}

void fedc_optim_set_lr(fedc_optim *opt, double lr)
{
    assert(opt && lr > 0.0);
    opt->cfg.lr = lr;
}

void fedc_optim_set_prox_center(fedc_optim *opt, const float *w_global)
{
    assert(opt);
    opt->center = w_global;
}

void fedc_optim_reset(fedc_optim *opt)
{
    assert(opt);
    if (opt->m) memset(opt->m, 0, opt->n * sizeof *opt->m);
    if (opt->v) memset(opt->v, 0, opt->n * sizeof *opt->v);
    opt->t = 0;
    opt->last_norm = 0.0;
}

/* The SGD step's parameters for the next step of opt. */
static void sgd_params(const fedc_optim *opt, fedc_sgd_step *step)
{
    const fedc_optim_config *c = &opt->cfg;
    memset(step, 0, sizeof *step);
    step->lr = (float)c->lr;
    step->momentum = (float)c->momentum;
    step->weight_decay = (float)c->weight_decay;
    step->prox_mu = opt->center ? (float)c->prox_mu : 0.0f;
    step->nesterov = c->nesterov;
    step->first = opt->t == 0;
    step->momentum_buf = opt->m;
    step->center = opt->center;
}

int fedc_optim_sgd_fuse(fedc_optim *opt, fedc_sgd_step *step)
{
    assert(opt && step);
    const fedc_optim_config *c = &opt->cfg;
    if (c->kind != FEDC_OPTIM_SGD || c->clip_norm > 0.0) return 0;
    sgd_params(opt, step); /* what fedc_optim_step would use, with scale 1 (no clipping) */
    opt->t++;
    return 1;
}

uint64_t fedc_optim_step_count(const fedc_optim *opt)
{
    assert(opt);
    return opt->t;
}

double fedc_optim_last_grad_norm(const fedc_optim *opt)
{
    assert(opt);
    return opt->last_norm;
}

size_t fedc_optim_state_bytes(const fedc_optim *opt)
{
    assert(opt);
    return opt->state_bytes;
}

const char *fedc_optim_errmsg(const fedc_optim *opt)
{
    assert(opt);
    return opt->errmsg;
}

/* Sum of squares in float lanes per block of 4096, blocks added in double. A fixed order:
 * deterministic for a given n (the lanes are the same 16 whatever the vector width). NaN or
 * Inf anywhere make it non-finite. */
#if defined(__GNUC__)
typedef float optim_v16 __attribute__((vector_size(64)));

OPTIM_CLONES static double sum_squares(const float *x, size_t n)
{
    double total = 0.0;
    for (size_t s = 0; s < n; s += 4096) {
        size_t e = s + 4096 < n ? s + 4096 : n, i = s;
        optim_v16 a0 = {0}, a1 = a0;
        for (; i + 32 <= e; i += 32) {
            optim_v16 v0, v1;
            memcpy(&v0, x + i, sizeof v0);
            memcpy(&v1, x + i + 16, sizeof v1);
            a0 += v0 * v0;
            a1 += v1 * v1;
        }
        a0 += a1;
        float lanes[16];
        memcpy(lanes, &a0, sizeof lanes);
        float part = 0.0f;
        for (int k = 0; k < 16; k++) part += lanes[k];
        for (; i < e; i++) part += x[i] * x[i];
        total += part;
    }
    return total;
}
#else
static double sum_squares(const float *x, size_t n)
{
    double total = 0.0;
    for (size_t s = 0; s < n; s += 4096) {
        size_t e = s + 4096 < n ? s + 4096 : n;
        float part = 0.0f;
        for (size_t i = s; i < e; i++) part += x[i] * x[i];
        total += part;
    }
    return total;
}
#endif

double fedc_clip_by_global_norm(float *grads, size_t n, double max_norm)
{
    assert(grads || n == 0);
    assert(max_norm > 0.0);
    double norm = sqrt(sum_squares(grads, n));
    if (norm > max_norm) {
        float s = (float)(max_norm / norm);
        for (size_t i = 0; i < n; i++) grads[i] *= s;
    }
    return norm;
}

OPTIM_CLONES void fedci_sgd_update(const fedc_sgd_step *st, float *restrict w,
                                   const float *restrict g, float *restrict buf,
                                   const float *restrict c, size_t n, float scale)
{
    const float lr = st->lr, wd = st->weight_decay, mu = st->prox_mu, mom = st->momentum;
    if (mom == 0.0f && wd == 0.0f && mu == 0.0f) {
        /* Plain SGD, the FL default: one fused multiply-add per parameter. */
        const float a = lr * scale;
        for (size_t i = 0; i < n; i++) w[i] -= a * g[i];
        return;
    }
    const int first = st->first, nest = st->nesterov;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * scale;
        if (mu != 0.0f) gi += mu * (w[i] - c[i]);
        if (wd != 0.0f) gi += wd * w[i];
        float d = gi;
        if (mom != 0.0f) {
            float b = first ? gi : mom * buf[i] + gi;
            buf[i] = b;
            d = nest ? gi + mom * b : b;
        }
        w[i] -= lr * d;
    }
}

OPTIM_CLONES static void adam_step(fedc_optim *o, float *w, const float *g, float scale)
{
    const size_t n = o->n;
    const int decoupled = o->cfg.kind == FEDC_OPTIM_ADAMW;
    const double t = (double)o->t + 1.0;
    const float b1 = (float)o->cfg.beta1, b2 = (float)o->cfg.beta2;
    const float lr = (float)o->cfg.lr, eps = (float)o->cfg.eps;
    const float wd = (float)o->cfg.weight_decay;
    const float mu = o->center ? (float)o->cfg.prox_mu : 0.0f;
    const float step = (float)(o->cfg.lr / (1.0 - pow(o->cfg.beta1, t)));
    const float rbc2 = (float)(1.0 / sqrt(1.0 - pow(o->cfg.beta2, t)));
    const float shrink = decoupled ? 1.0f - lr * wd : 1.0f;
    const float *c = o->center;
    float *m = o->m, *v = o->v;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * scale;
        if (mu != 0.0f) gi += mu * (w[i] - c[i]);
        if (!decoupled && wd != 0.0f) gi += wd * w[i];
        float wi = w[i] * shrink;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] = wi - step * m[i] / (sqrtf(v[i]) * rbc2 + eps);
    }
}

fedc_status fedc_optim_step(fedc_optim *opt, float *params, const float *grads)
{
    assert(opt && params && grads);
    double sq = sum_squares(grads, opt->n);
    if (!isfinite(sq)) {
        ptrdiff_t bad = fedc_vec_find_nonfinite(opt->n, grads);
        if (bad >= 0)
            snprintf(opt->errmsg, sizeof opt->errmsg,
                     "gradient element %td is %g: step refused, parameters unchanged", bad,
                     (double)grads[bad]);
        else
            snprintf(opt->errmsg, sizeof opt->errmsg,
                     "gradient norm overflows: step refused, parameters unchanged");
        return FEDC_ERR_NONFINITE;
    }
    double norm = sqrt(sq);
    opt->last_norm = norm;
    float scale = 1.0f;
    if (opt->cfg.clip_norm > 0.0 && norm > opt->cfg.clip_norm)
        scale = (float)(opt->cfg.clip_norm / norm);
    if (opt->cfg.kind == FEDC_OPTIM_SGD) {
        fedc_sgd_step st;
        sgd_params(opt, &st);
        fedci_sgd_update(&st, params, grads, st.momentum_buf, st.center, opt->n, scale);
    } else
        adam_step(opt, params, grads, scale);
    opt->t++;
    return FEDC_OK;
}
