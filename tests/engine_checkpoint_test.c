/*
 * Engine checkpoints (fedc_engine_checkpoint_save / _load, fedc_strategy_state_get / _set):
 *   - exact resume: K rounds, save, load into a fresh engine, the remaining rounds: the final
 *     global model is bit-identical to an uninterrupted run, for every stateful strategy
 *     (fedavgm, fedadam, fedyogi, fedadagrad, qfedavg, scaffold), central DP with adaptive
 *     clipping (the clip and epsilon follow too), local DP and DP-SGD (their per-client
 *     accounts); and a model-only resume (fedc_engine_restore) of the same strategies is NOT
 *     identical, so the state really is what makes the difference;
 *   - refusals, each leaving the engine unchanged: a truncated file, a flipped byte in the model
 *     or the state, a NaN in a state tensor, another config, another model layout, a model-only
 *     file, a missing state tensor, a corrupt DP entry, an open round;
 *   - fedc_strategy_state_set's own checks (unknown, repeated, missing items; wrong kind or
 *     length; NaN; qfedavg's range);
 *   - every allocation of a save and of a load failing in turn: clean errors, no leaks, the
 *     engine unchanged.
 * The engine is driven here as a transport drives it (round_begin, fit_ins, the client's DP
 * step, submit_dp, round_end), with a small deterministic in-process trainer; SCAFFOLD's client
 * control variates are the transport's state and are kept by the test across the restart.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fedc/fedc.h"
#include "fedc/safetensors.h"

#define MAX_CLIENTS 16

/* ---- a small trainer: each client pulls the model toward its own target, plus noise from its
 * (seed, round, client) stream; SCAFFOLD's corrected step when asked ---- */

typedef struct toy {
    fedc_layout *layout;
} toy;

static const fedc_layout *toy_layout(const void *s)
{
    return ((const toy *)s)->layout;
}

static fedc_status toy_init(const void *s, uint64_t seed, float *p, fedc_err *e)
{
    (void)e;
    fedc_rng rng;
    fedc_rng_init(&rng, seed, 0, FEDC_RNG_ANY, FEDC_RNG_INIT);
    for (size_t i = 0; i < ((const toy *)s)->layout->total; i++)
        p[i] = (float)(0.1 * fedc_rng_normal(&rng));
    return FEDC_OK;
}

static double toy_target(uint32_t client, size_t i)
{
    return sin(0.7 * (double)client + 0.3 * (double)i);
}

static fedc_status toy_fit(const void *s, void *w, const fedc_fit_ins *ins, fedc_fit_out *out,
                           fedc_err *e)
{
    (void)s;
    (void)w;
    (void)e;
    const double lr = ins->lr > 0 ? ins->lr : 0.3;
    fedc_rng rng;
    fedc_rng_init(&rng, ins->seed, ins->round, ins->client, FEDC_RNG_SHUFFLE);
    double loss = 0;
    for (size_t i = 0; i < ins->num_params; i++) {
        double g = (double)ins->global[i] - toy_target(ins->client, i);
        loss += g * g;
        double corr = ins->server_control && ins->client_control
                          ? (double)ins->server_control[i] - (double)ins->client_control[i]
                          : 0.0;
        double u = -lr * (g + corr) + 0.02 * fedc_rng_normal(&rng);
        out->update[i] = (float)u;
        if (ins->client_control) { /* option II of Karimireddy et al.: c_i+ = c_i - c - u/lr */
            float cnew = (float)((double)ins->client_control[i] - (double)ins->server_control[i] -
                                 u / lr);
            out->control_delta[i] = cnew - ins->client_control[i];
            ins->client_control[i] = cnew;
        }
    }
    out->num_examples = 10 + ins->client % 7;
    out->train_loss = loss / (double)ins->num_params;
    out->loss_before = out->train_loss;
    out->steps = 3;
    return FEDC_OK;
}

static uint64_t toy_examples(const void *s, uint32_t client)
{
    (void)s;
    return 10 + client % 7;
}

static const fedc_trainer_ops toy_ops = {
    .name = "toy", .worker_size = 8, .layout = toy_layout, .init_params = toy_init,
    .fit = toy_fit, .evaluate = tu_eval_nothing, .num_examples = toy_examples,
};

/* A trainer over a model with tensors "0.weight" [rows, 5] and "0.bias" [rows]. */
static fedc_trainer make_toy(toy *t, int rows)
{
    t->layout = fedc_layout_create();
    assert_non_null(t->layout);
    int64_t w[2] = {rows, 5}, b[1] = {rows};
    assert_int_equal(fedc_layout_add(t->layout, "0.weight", 2, w, NULL), FEDC_OK);
    assert_int_equal(fedc_layout_add(t->layout, "0.bias", 1, b, NULL), FEDC_OK);
    return (fedc_trainer){&toy_ops, t};
}

static fedc_config *make_config(const char *const *sets)
{
    static const char *const base[] = {
        "run.seed=11", "run.rounds=6", "clients.count=12", "clients.per_round=5",
        "clients.min=1", "eval.every=0", NULL};
    return tu_config(base, sets);
}

/* The transport's own state: SCAFFOLD's client control variates. */
typedef struct transport {
    float *cc; /* MAX_CLIENTS * P */
    fedc_round_record last;
} transport;

/* Runs rounds until last_round == until, as a transport would. */
static void run_rounds(fedc_engine *e, const fedc_trainer *tr, transport *t, uint32_t until)
{
    const size_t P = fedc_engine_num_params(e);
    float *update = malloc(P * sizeof(float)), *delta = malloc(P * sizeof(float));
    assert_non_null(update);
    assert_non_null(delta);
    fedc_err err;
    while (fedc_engine_last_round(e) < until) {
        const uint32_t *ids;
        size_t n;
        if (fedc_engine_round_begin(e, &ids, &n, &err) != FEDC_OK) fail_msg("%s", err.msg);
        for (size_t k = 0; k < n; k++) {
            fedc_fit_ins ins;
            fedc_engine_fit_ins(e, ids[k], &ins);
            if (ins.server_control) ins.client_control = t->cc + (size_t)ids[k] * P;
            fedc_fit_out out = {.update = update, .control_delta = ins.server_control ? delta
                                                                                     : NULL};
            if (tr->ops->fit(tr->shared, NULL, &ins, &out, &err) != FEDC_OK)
                fail_msg("%s", err.msg);
            fedc_dp_client_task task;
            fedc_engine_dp_task(e, ids[k], &task);
            fedc_dp_client_report rep = {1};
            if (fedc_dp_client_apply(&task, P, update, &rep, &err) != FEDC_OK)
                fail_msg("%s", err.msg);
            if (fedc_engine_submit_dp(e, ids[k], &out, &rep, 0.0, &err) != FEDC_OK)
                fail_msg("round %u: %s", ins.round, err.msg);
        }
        if (fedc_engine_round_end(e, &t->last, &err) != FEDC_OK) fail_msg("%s", err.msg);
    }
    free(update);
    free(delta);
}

static fedc_engine *new_engine(const fedc_config *cfg, const fedc_trainer *tr)
{
    fedc_engine *e = NULL;
    fedc_err err;
    if (fedc_engine_create(cfg, tr, &e, &err) != FEDC_OK) fail_msg("%s", err.msg);
    return e;
}

static char *tmp_dir;

static int setup(void **state)
{
    (void)state;
    fedc_log_set(NULL, NULL, FEDC_LOG_ERROR);
    tmp_dir = tu_tempdir("engine_ckpt");
    return tmp_dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tu_rmtree(tmp_dir);
    free(tmp_dir);
    return 0;
}

static void tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmp_dir, name);
}

/* The final model of an uninterrupted run, of a run checkpointed after round k and resumed in
 * a fresh engine, and (model_only) of a run resumed from the model alone. Returns 1 when the
 * resumed model equals the uninterrupted one bit for bit; the records' epsilon and clip are
 * compared too. */
static int resume_matches(const char *const *sets, uint32_t k, int model_only)
{
    fedc_config *cfg = make_config(sets);
    toy t;
    fedc_trainer tr = make_toy(&t, 4);
    const uint32_t R = (uint32_t)fedc_config_int(cfg, "run.rounds");
    const size_t P = t.layout->total;
    transport ta = {calloc(MAX_CLIENTS * P, sizeof(float)), {0}};
    transport tb = {calloc(MAX_CLIENTS * P, sizeof(float)), {0}};

    fedc_engine *a = new_engine(cfg, &tr);
    run_rounds(a, &tr, &ta, R);

    char path[512];
    tmp_path(path, sizeof path, "resume.safetensors");
    fedc_err err;
    fedc_engine *b = new_engine(cfg, &tr);
    run_rounds(b, &tr, &tb, k);
    float *saved = malloc(P * sizeof(float));
    memcpy(saved, fedc_engine_global(b), P * sizeof(float));
    if (fedc_engine_checkpoint_save(b, path, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_engine_destroy(b);

    fedc_engine *c = new_engine(cfg, &tr);
    if (model_only) {
        if (fedc_engine_restore(c, k, saved, &err) != FEDC_OK) fail_msg("%s", err.msg);
    } else {
        if (fedc_engine_checkpoint_load(c, path, &err) != FEDC_OK) fail_msg("%s", err.msg);
        assert_int_equal(fedc_engine_last_round(c), k);
        assert_memory_equal(fedc_engine_global(c), saved, P * sizeof(float));
    }
    run_rounds(c, &tr, &tb, R);
    assert_int_equal(fedc_engine_last_round(c), R);
    int same = memcmp(fedc_engine_global(a), fedc_engine_global(c), P * sizeof(float)) == 0;
    if (same && !model_only && ta.last.dp_mode != FEDC_DP_OFF) {
        /* the DP side continued exactly too: epsilon, clip, adaptive fraction */
        assert_memory_equal(&ta.last.epsilon, &tb.last.epsilon, sizeof(double));
        assert_memory_equal(&ta.last.dp_clip, &tb.last.dp_clip, sizeof(double));
        assert_memory_equal(&ta.last.dp_sgd_epsilon, &tb.last.dp_sgd_epsilon, sizeof(double));
        assert_true(ta.last.epsilon > 0 || ta.last.dp_sgd_epsilon > 0);
    }
    free(saved);
    fedc_engine_destroy(a);
    fedc_engine_destroy(c);
    free(ta.cc);
    free(tb.cc);
    fedc_layout_destroy(t.layout);
    fedc_config_destroy(cfg);
    return same;
}

static void check_strategy(const char *const *sets)
{
    assert_true(resume_matches(sets, 3, 0));
    assert_true(resume_matches(sets, 1, 0));
    /* without its state the resumed run drifts: the test above can fail */
    assert_false(resume_matches(sets, 3, 1));
}

static void test_fedavgm(void **state)
{
    (void)state;
    static const char *const s[] = {"strategy.name=fedavgm", "strategy.server_momentum=0.9",
                                    NULL};
    check_strategy(s);
}

static void test_fedadam(void **state)
{
    (void)state;
    static const char *const s[] = {"strategy.name=fedadam", "strategy.eta=0.05", NULL};
    check_strategy(s);
}

static void test_fedyogi(void **state)
{
    (void)state;
    static const char *const s[] = {"strategy.name=fedyogi", NULL};
    check_strategy(s);
}

static void test_fedadagrad(void **state)
{
    (void)state;
    static const char *const s[] = {"strategy.name=fedadagrad", NULL};
    check_strategy(s);
}

static void test_qfedavg(void **state)
{
    (void)state;
    /* f_ref scales both sums of a round, so the model-only resume may well agree too: only the
     * fixed-point rounding of the scaled sums depends on it */
    static const char *const s[] = {"strategy.name=qfedavg", "strategy.q=2", NULL};
    assert_true(resume_matches(s, 3, 0));
    assert_true(resume_matches(s, 1, 0));
}

static void test_scaffold(void **state)
{
    (void)state;
    static const char *const s[] = {"strategy.name=scaffold", NULL};
    check_strategy(s);
}

static void test_stateless(void **state)
{
    (void)state;
    static const char *const avg[] = {"strategy.name=fedavg", NULL};
    static const char *const med[] = {"strategy.name=fedmedian", NULL};
    assert_true(resume_matches(avg, 3, 0));
    assert_true(resume_matches(avg, 3, 1)); /* nothing besides the model */
    assert_true(resume_matches(med, 2, 0));
}

/* Central DP with adaptive clipping (seeded test noise, so that runs can be compared): the
 * model, the clip and epsilon continue exactly. */
static void test_dp_central_adaptive(void **state)
{
    (void)state;
    static const char *const s[] = {
        "strategy.name=fedadam", "strategy.eta=0.05", "dp.mode=central", "dp.clip=0.5",
        "dp.noise_multiplier=0.8", "dp.adaptive_clip=true", "dp.clipped_count_stddev=2",
        "dp.seeded_noise=true", "dp.delta=1e-3", NULL};
    check_strategy(s);
}

static void test_dp_local_and_sgd(void **state)
{
    (void)state;
    static const char *const local[] = {
        "strategy.name=fedavgm", "strategy.server_momentum=0.5", "dp.mode=local",
        "dp.clip=1", "dp.noise_multiplier=1", "dp.seeded_noise=true", "dp.delta=1e-3", NULL};
    assert_true(resume_matches(local, 3, 0));
    static const char *const sgd[] = {"strategy.name=fedavg", "dp.sgd=true", "dp.delta=1e-3",
                                      NULL};
    assert_true(resume_matches(sgd, 2, 0));
}

/* ---- refusals ---- */

/* A reference engine after 2 rounds of fedadam, its checkpoint at `path`. */
typedef struct fixture {
    fedc_config *cfg;
    toy t;
    fedc_trainer tr;
    transport tp;
    fedc_engine *e;
    char path[512];
} fixture;

static void fixture_make(fixture *f, const char *const *sets)
{
    memset(f, 0, sizeof *f);
    f->cfg = make_config(sets);
    f->tr = make_toy(&f->t, 4);
    f->tp.cc = calloc(MAX_CLIENTS * f->t.layout->total, sizeof(float));
    f->e = new_engine(f->cfg, &f->tr);
    run_rounds(f->e, &f->tr, &f->tp, 2);
    tmp_path(f->path, sizeof f->path, "ref.safetensors");
    fedc_err err;
    if (fedc_engine_checkpoint_save(f->e, f->path, &err) != FEDC_OK) fail_msg("%s", err.msg);
}

static void fixture_free(fixture *f)
{
    fedc_engine_destroy(f->e);
    fedc_layout_destroy(f->t.layout);
    fedc_config_destroy(f->cfg);
    free(f->tp.cc);
}

/* The engine's observable state, to check that a refused load changed nothing. */
typedef struct snap {
    uint32_t round;
    float *global;
    float *tensors[FEDC_STRATEGY_STATE_MAX];
    size_t n;
} snap;

static void snap_take(fedc_engine *e, snap *s)
{
    size_t P = fedc_engine_num_params(e);
    s->round = fedc_engine_last_round(e);
    s->global = malloc(P * sizeof(float));
    memcpy(s->global, fedc_engine_global(e), P * sizeof(float));
    fedc_state_item it[FEDC_STRATEGY_STATE_MAX];
    s->n = fedc_strategy_state_get(fedc_engine_strategy(e), it);
    for (size_t i = 0; i < s->n; i++) {
        s->tensors[i] = malloc(P * sizeof(float));
        memcpy(s->tensors[i], it[i].data, P * sizeof(float));
    }
}

static void snap_check_free(fedc_engine *e, snap *s)
{
    size_t P = fedc_engine_num_params(e);
    assert_int_equal(fedc_engine_last_round(e), s->round);
    assert_memory_equal(fedc_engine_global(e), s->global, P * sizeof(float));
    fedc_state_item it[FEDC_STRATEGY_STATE_MAX];
    assert_int_equal(fedc_strategy_state_get(fedc_engine_strategy(e), it), s->n);
    for (size_t i = 0; i < s->n; i++) {
        assert_memory_equal(it[i].data, s->tensors[i], P * sizeof(float));
        free(s->tensors[i]);
    }
    free(s->global);
}

/* Loads `path` into a fresh engine of f's config (or of cfg/tr when given) that has run one
 * round; expects `code` and `needle` in the message, and the engine unchanged. */
static void expect_refusal(fixture *f, const fedc_config *cfg, const fedc_trainer *tr,
                           const char *path, fedc_status code, const char *needle)
{
    if (!cfg) cfg = f->cfg;
    if (!tr) tr = &f->tr;
    fedc_engine *e = new_engine(cfg, tr);
    transport tp = {calloc(MAX_CLIENTS * fedc_engine_num_params(e), sizeof(float)), {0}};
    run_rounds(e, tr, &tp, 1);
    snap s;
    snap_take(e, &s);
    fedc_err err;
    fedc_err_clear(&err);
    fedc_status st = fedc_engine_checkpoint_load(e, path, &err);
    if (st != code || !strstr(err.msg, needle))
        fail_msg("expected %s with '%s', got %s: %s", fedc_strerror(code), needle,
                 fedc_strerror(st), err.msg);
    snap_check_free(e, &s);
    free(tp.cc);
    fedc_engine_destroy(e);
}

static const char *const adam[] = {"strategy.name=fedadam", "strategy.eta=0.05",
                                   "dp.mode=central", "dp.clip=0.5", "dp.noise_multiplier=0.8",
                                   "dp.adaptive_clip=true", "dp.clipped_count_stddev=2",
                                   "dp.seeded_noise=true", "dp.delta=1e-3", NULL};

/* The byte offset of float `index` of tensor `name` in the file at path. */
static size_t data_byte(const char *path, const char *name, size_t index)
{
    size_t len;
    unsigned char *b = (unsigned char *)tu_read_file(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    free(b);
    fedc_safetensors *st;
    fedc_err err;
    if (fedc_safetensors_read(path, FEDC_ST_ALLOW_NONFINITE, &st, &err) != FEDC_OK)
        fail_msg("%s", err.msg);
    const fedc_tensor_info *t = fedc_layout_find(st->layout, name);
    assert_non_null(t);
    size_t at = 8 + (size_t)hlen + (t->offset + index) * 4;
    fedc_safetensors_destroy(st);
    return at;
}

/* Writes a copy of src to dst with bytes [at, at+n) replaced (or truncated to `at` when bytes
 * is NULL). */
static void patch_copy(const char *src, const char *dst, size_t at, const void *bytes, size_t n)
{
    size_t len;
    char *b = tu_read_file(src, &len);
    assert_true(at + n <= len);
    if (bytes)
        memcpy(b + at, bytes, n);
    else
        len = at;
    tu_write_file(dst, b, len);
    free(b);
}

/* Rewrites src into dst: the metadata entry `key` set to `value` (NULL: dropped), and the
 * tensors from `drop` on left out (NULL: all kept). */
static void rewrite(const char *src, const char *dst, const char *key, const char *value,
                    const char *drop)
{
    fedc_safetensors *st;
    fedc_err err;
    if (fedc_safetensors_read(src, 0, &st, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_layout *l = fedc_layout_create();
    for (size_t i = 0; i < st->layout->count; i++) {
        const fedc_tensor_info *t = &st->layout->tensors[i];
        if (drop && strcmp(t->name, drop) == 0) break;
        assert_int_equal(fedc_layout_add(l, t->name, t->ndim, t->shape, NULL), FEDC_OK);
    }
    fedc_st_meta meta[64];
    size_t n = 0;
    for (size_t i = 0; i < st->nmeta && n < 64; i++) {
        if (key && strcmp(st->meta[i].key, key) == 0) {
            if (value) meta[n++] = (fedc_st_meta){key, value};
        } else {
            meta[n++] = st->meta[i];
        }
    }
    if (fedc_safetensors_write(dst, l, st->data, meta, n, &err) != FEDC_OK)
        fail_msg("%s", err.msg);
    fedc_layout_destroy(l);
    fedc_safetensors_destroy(st);
}

static void test_refusals(void **state)
{
    (void)state;
    fixture f;
    fixture_make(&f, adam);
    char bad[512];
    tmp_path(bad, sizeof bad, "bad.safetensors");
    size_t len;
    free(tu_read_file(f.path, &len));

    /* sanity: the reference file loads */
    fedc_engine *ok = new_engine(f.cfg, &f.tr);
    fedc_err err;
    if (fedc_engine_checkpoint_load(ok, f.path, &err) != FEDC_OK) fail_msg("%s", err.msg);
    assert_int_equal(fedc_engine_last_round(ok), 2);
    fedc_engine_destroy(ok);

    /* truncated, at several places */
    size_t cuts[] = {4, 100, len / 2, len - 1};
    for (size_t i = 0; i < 4; i++) {
        patch_copy(f.path, bad, cuts[i], NULL, 0);
        expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "bad.safetensors");
    }
    /* a flipped bit in the model, then in a state tensor: the hashes catch it */
    size_t at = data_byte(f.path, "0.bias", 1);
    unsigned char byte;
    char *b = tu_read_file(f.path, &len);
    byte = (unsigned char)(b[at] ^ 1);
    free(b);
    patch_copy(f.path, bad, at, &byte, 1);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "model_sha256 mismatch");
    at = data_byte(f.path, "__fedc__.strategy.v", 3);
    b = tu_read_file(f.path, &len);
    byte = (unsigned char)(b[at] ^ 1);
    free(b);
    patch_copy(f.path, bad, at, &byte, 1);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "state_sha256 mismatch");
    /* a NaN in a state tensor: named */
    float nan = NAN;
    patch_copy(f.path, bad, data_byte(f.path, "__fedc__.strategy.m", 5), &nan, 4);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_NONFINITE, "__fedc__.strategy.m");

    /* another config: a different server learning rate, another strategy */
    static const char *const other[] = {"strategy.name=fedadam", "strategy.eta=0.06",
                                        "dp.mode=central", "dp.clip=0.5",
                                        "dp.noise_multiplier=0.8", "dp.adaptive_clip=true",
                                        "dp.clipped_count_stddev=2", "dp.seeded_noise=true",
                                        "dp.delta=1e-3", NULL};
    fedc_config *c2 = make_config(other);
    expect_refusal(&f, c2, NULL, f.path, FEDC_ERR_CONFIG, "another configuration");
    fedc_config_destroy(c2);
    static const char *const yogi[] = {"strategy.name=fedyogi", NULL};
    c2 = make_config(yogi);
    expect_refusal(&f, c2, NULL, f.path, FEDC_ERR_CONFIG, "strategy fedadam, this run's fedyogi");
    fedc_config_destroy(c2);
    /* an operational key may differ: more rounds, another eval schedule */
    static const char *const longer[] = {"strategy.name=fedadam", "strategy.eta=0.05",
                                         "dp.mode=central", "dp.clip=0.5",
                                         "dp.noise_multiplier=0.8", "dp.adaptive_clip=true",
                                         "dp.clipped_count_stddev=2", "dp.seeded_noise=true",
                                         "dp.delta=1e-3", "run.rounds=9", "eval.every=2", NULL};
    c2 = make_config(longer);
    ok = new_engine(c2, &f.tr);
    if (fedc_engine_checkpoint_load(ok, f.path, &err) != FEDC_OK) fail_msg("%s", err.msg);
    fedc_engine_destroy(ok);
    fedc_config_destroy(c2);

    /* another model layout under the same config */
    toy t6;
    fedc_trainer tr6 = make_toy(&t6, 6);
    expect_refusal(&f, NULL, &tr6, f.path, FEDC_ERR_SHAPE, "model tensor 0");
    fedc_layout_destroy(t6.layout);

    /* a model-only file */
    fedc_st_meta m[] = {{"format", "pt"}};
    if (fedc_safetensors_write(bad, f.t.layout, fedc_engine_global(f.e), m, 1, &err) != FEDC_OK)
        fail_msg("%s", err.msg);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "not a fedc engine checkpoint");

    /* a state tensor missing (hash of the rest fixed up), a corrupt DP entry, a bad round */
    char shorter[512];
    tmp_path(shorter, sizeof shorter, "short.safetensors");
    rewrite(f.path, shorter, NULL, NULL, "__fedc__.strategy.v");
    {
        fedc_safetensors *st;
        if (fedc_safetensors_read(shorter, 0, &st, &err) != FEDC_OK) fail_msg("%s", err.msg);
        char sha[65];
        size_t P = f.t.layout->total;
        fedc_vec_sha256_hex(st->layout->total - P, st->data + P, sha);
        fedc_safetensors_destroy(st);
        rewrite(shorter, bad, "__fedc__.state_sha256", sha, NULL);
    }
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "'v' is missing");
    rewrite(f.path, bad, "__fedc__.dp.accountant", "0.41666:0.8:x", NULL);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "accountant");
    rewrite(f.path, bad, "__fedc__.dp.accountant", "0.41666666666666669:0.8:7", NULL);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_RANGE, "more than the 2 rounds");
    /* steps that would wrap the accountant's 64-bit total back below the rounds done */
    rewrite(f.path, bad, "__fedc__.dp.accountant",
            "0.41666666666666669:0.8:18446744073709551600;0.41666666666666669:0.8:17", NULL);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_RANGE, "more than the 2 rounds");
    rewrite(f.path, bad, "__fedc__.dp.clip", NULL, NULL);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "'clip' is missing");
    rewrite(f.path, bad, "round", "2x", NULL);
    expect_refusal(&f, NULL, NULL, bad, FEDC_ERR_FORMAT, "not a round number");
    expect_refusal(&f, NULL, NULL, "/nonexistent/ckpt.safetensors", FEDC_ERR_IO, "nonexistent");

    /* not while a round is open, either way */
    const uint32_t *ids;
    size_t n;
    assert_int_equal(fedc_engine_round_begin(f.e, &ids, &n, &err), FEDC_OK);
    assert_int_equal(fedc_engine_checkpoint_save(f.e, bad, &err), FEDC_ERR_STATE);
    assert_int_equal(fedc_engine_checkpoint_load(f.e, f.path, &err), FEDC_ERR_STATE);
    fixture_free(&f);
}

/* The checkpoint file itself: PyTorch names first, state tensors after, scalars in the
 * metadata; the model hash covers the model tensors only. */
static void test_file_layout(void **state)
{
    (void)state;
    fixture f;
    fixture_make(&f, adam);
    fedc_safetensors *st;
    fedc_err err;
    if (fedc_safetensors_read(f.path, 0, &st, &err) != FEDC_OK) fail_msg("%s", err.msg);
    const size_t P = f.t.layout->total;
    assert_int_equal(st->layout->count, 4);
    assert_string_equal(st->layout->tensors[0].name, "0.weight");
    assert_string_equal(st->layout->tensors[1].name, "0.bias");
    assert_string_equal(st->layout->tensors[2].name, "__fedc__.strategy.m");
    assert_string_equal(st->layout->tensors[3].name, "__fedc__.strategy.v");
    assert_int_equal(st->layout->total, 3 * P);
    assert_memory_equal(st->data, fedc_engine_global(f.e), P * sizeof(float));
    fedc_state_item it[FEDC_STRATEGY_STATE_MAX];
    assert_int_equal(fedc_strategy_state_get(fedc_engine_strategy(f.e), it), 2);
    assert_memory_equal(st->data + P, it[0].data, P * sizeof(float));
    assert_memory_equal(st->data + 2 * P, it[1].data, P * sizeof(float));
    char sha[65];
    fedc_vec_sha256_hex(P, fedc_engine_global(f.e), sha);
    assert_string_equal(fedc_safetensors_meta(st, "model_sha256"), sha);
    assert_string_equal(fedc_safetensors_meta(st, "round"), "2");
    assert_string_equal(fedc_safetensors_meta(st, "strategy"), "fedadam");
    assert_non_null(fedc_safetensors_meta(st, "__fedc__.config_sha256"));
    /* the DP run: two released rounds in the accountant, the adaptive clip moved from 0.5 */
    const char *acc = fedc_safetensors_meta(st, "__fedc__.dp.accountant");
    assert_non_null(acc);
    assert_non_null(strstr(acc, ":0.80000000000000004:2"));
    double clip = strtod(fedc_safetensors_meta(st, "__fedc__.dp.clip"), NULL);
    assert_true(clip > 0 && clip != 0.5);
    assert_string_equal(fedc_safetensors_meta(st, "__fedc__.dp.clip_rounds"), "2");
    fedc_safetensors_destroy(st);
    fixture_free(&f);
}

/* fedc_strategy_state_set's checks, each leaving the strategy unchanged. */
static void test_strategy_state_set(void **state)
{
    (void)state;
    static const char *const s[] = {"strategy.name=fedadam", NULL};
    fedc_config *cfg = make_config(s);
    const size_t P = 8;
    fedc_strategy *st;
    fedc_err err;
    assert_int_equal(fedc_strategy_create(cfg, P, NULL, &st, &err), FEDC_OK);
    float m[8] = {1, 2, 3, 4, 5, 6, 7, 8}, v[8] = {1, 1, 1, 1, 2, 2, 2, 2}, shortv[7] = {0};
    fedc_state_item good[2] = {{.name = "v", .kind = FEDC_STATE_TENSOR, .data = v, .len = P},
                               {.name = "m", .kind = FEDC_STATE_TENSOR, .data = m, .len = P}};
    assert_int_equal(fedc_strategy_state_set(st, good, 2, &err), FEDC_OK);
    fedc_state_item it[FEDC_STRATEGY_STATE_MAX];
    assert_int_equal(fedc_strategy_state_get(st, it), 2);
    assert_string_equal(it[0].name, "m");
    assert_memory_equal(it[0].data, m, sizeof m);
    assert_memory_equal(it[1].data, v, sizeof v);

    float nanv[8] = {0, 0, 0, NAN, 0, 0, 0, 0};
    struct {
        fedc_state_item items[2];
        size_t n;
        fedc_status code;
        const char *needle;
    } cases[] = {
        {{good[1]}, 1, FEDC_ERR_FORMAT, "'v' is missing"},
        {{good[1], good[1]}, 2, FEDC_ERR_FORMAT, "given twice"},
        {{good[1], {.name = "w", .kind = FEDC_STATE_TENSOR, .data = v, .len = P}}, 2,
         FEDC_ERR_FORMAT, "unknown server state item 'w'"},
        {{good[1], {.name = "v", .kind = FEDC_STATE_REAL, .real = 1}}, 2, FEDC_ERR_FORMAT,
         "is a real, expected a tensor"},
        {{good[1], {.name = "v", .kind = FEDC_STATE_TENSOR, .data = shortv, .len = 7}}, 2,
         FEDC_ERR_SHAPE, "has 7 values"},
        {{good[1], {.name = "v", .kind = FEDC_STATE_TENSOR, .data = nanv, .len = P}}, 2,
         FEDC_ERR_NONFINITE, "element 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fedc_err_clear(&err);
        fedc_status rc = fedc_strategy_state_set(st, cases[i].items, cases[i].n, &err);
        if (rc != cases[i].code || !strstr(err.msg, cases[i].needle))
            fail_msg("case %zu: got %s: %s", i, fedc_strerror(rc), err.msg);
        assert_int_equal(fedc_strategy_state_get(st, it), 2);
        assert_memory_equal(it[0].data, m, sizeof m);
        assert_memory_equal(it[1].data, v, sizeof v);
    }
    fedc_strategy_destroy(st);
    fedc_config_destroy(cfg);

    /* qfedavg: a real in range; a stateless strategy takes nothing */
    static const char *const q[] = {"strategy.name=qfedavg", NULL};
    cfg = make_config(q);
    assert_int_equal(fedc_strategy_create(cfg, P, NULL, &st, &err), FEDC_OK);
    fedc_state_item f_ref = {.name = "f_ref", .kind = FEDC_STATE_REAL, .real = -1};
    assert_int_equal(fedc_strategy_state_set(st, &f_ref, 1, &err), FEDC_ERR_RANGE);
    f_ref.real = INFINITY;
    assert_int_equal(fedc_strategy_state_set(st, &f_ref, 1, &err), FEDC_ERR_NONFINITE);
    f_ref.real = 0.25;
    assert_int_equal(fedc_strategy_state_set(st, &f_ref, 1, &err), FEDC_OK);
    assert_int_equal(fedc_strategy_state_get(st, it), 1);
    assert_true(it[0].real == 0.25);
    fedc_strategy_destroy(st);
    fedc_config_destroy(cfg);
    static const char *const krum[] = {"strategy.name=krum", "clients.per_round=8", NULL};
    cfg = make_config(krum);
    assert_int_equal(fedc_strategy_create(cfg, P, NULL, &st, &err), FEDC_OK);
    assert_int_equal(fedc_strategy_state_get(st, it), 0);
    assert_int_equal(fedc_strategy_state_set(st, NULL, 0, &err), FEDC_OK);
    assert_int_equal(fedc_strategy_state_set(st, good, 1, &err), FEDC_ERR_FORMAT);
    fedc_strategy_destroy(st);
    fedc_config_destroy(cfg);
}

/* Every allocation of a save and of a load failing in turn: a clean error, no leak, and a load
 * that fails leaves the engine as it was; with no failure both succeed. */
static void test_alloc_failures(void **state)
{
    (void)state;
    static const char *const local[] = {
        "strategy.name=fedyogi", "dp.mode=local", "dp.clip=1", "dp.noise_multiplier=1",
        "dp.seeded_noise=true", "dp.delta=1e-3", "dp.sgd=true", NULL};
    const char *const *configs[] = {adam, local};
    for (int c = 0; c < 2; c++) {
        fixture f;
        fixture_make(&f, configs[c]);
        char out[512];
        tmp_path(out, sizeof out, "torture.safetensors");
        fedc_err err;
        fedc_alloc_stats a, b;
        uint64_t n;
        for (n = 1; n < 10000; n++) {
            fedc_alloc_get_stats(&a);
            fedc_alloc_fail_after(n, 0);
            fedc_status st = fedc_engine_checkpoint_save(f.e, out, &err);
            fedc_alloc_fail_after(0, 0);
            fedc_alloc_get_stats(&b);
            assert_int_equal(a.current_bytes, b.current_bytes);
            if (st == FEDC_OK) break;
            if (st != FEDC_ERR_NOMEM) fail_msg("save, allocation %llu: %s", (unsigned long long)n,
                                               err.msg);
        }
        assert_true(n > 3 && n < 10000);
        fedc_engine *e = new_engine(f.cfg, &f.tr);
        transport tp = {calloc(MAX_CLIENTS * f.t.layout->total, sizeof(float)), {0}};
        run_rounds(e, &f.tr, &tp, 1);
        for (n = 1; n < 10000; n++) {
            snap s;
            snap_take(e, &s);
            fedc_alloc_get_stats(&a);
            fedc_alloc_fail_after(n, 0);
            fedc_status st = fedc_engine_checkpoint_load(e, out, &err);
            fedc_alloc_fail_after(0, 0);
            fedc_alloc_get_stats(&b);
            if (st == FEDC_OK) {
                for (size_t i = 0; i < s.n; i++) free(s.tensors[i]);
                free(s.global);
                break;
            }
            if (st != FEDC_ERR_NOMEM)
                fail_msg("load, allocation %llu: %s", (unsigned long long)n, err.msg);
            assert_int_equal(a.current_bytes, b.current_bytes);
            snap_check_free(e, &s);
        }
        assert_true(n > 3 && n < 10000);
        assert_int_equal(fedc_engine_last_round(e), 2);
        assert_memory_equal(fedc_engine_global(e), fedc_engine_global(f.e),
                            f.t.layout->total * sizeof(float));
        free(tp.cc);
        fedc_engine_destroy(e);
        fixture_free(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fedavgm),
        cmocka_unit_test(test_fedadam),
        cmocka_unit_test(test_fedyogi),
        cmocka_unit_test(test_fedadagrad),
        cmocka_unit_test(test_qfedavg),
        cmocka_unit_test(test_scaffold),
        cmocka_unit_test(test_stateless),
        cmocka_unit_test(test_dp_central_adaptive),
        cmocka_unit_test(test_dp_local_and_sgd),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_file_layout),
        cmocka_unit_test(test_strategy_state_set),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
