/*
 * A client trainer written from scratch: federated least-squares regression, a model fedc's
 * nn engine does not know. This is the whole contract of a trainer (fedc/trainer.h): a layout,
 * initial parameters, fit and evaluate over flat float vectors. Everything else (client
 * selection, aggregation, the run) is fedc's.
 *
 * Each of 50 clients holds its own data: y = <w*, x> + b* + noise with x drawn around a
 * client-specific centre (non-IID features). FedAvg recovers w* and b*.
 *
 * Build (after `make install`):
 *   cc custom_trainer.c $(pkg-config --cflags --libs fedc) -o custom_trainer
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fedc/fedc.h>
#include <fedc/engine.h>
#include <fedc/sim.h>

#define DIM 8
#define CLIENTS 50
#define PER_CLIENT 40
#define LOCAL_STEPS 20

typedef struct regression {
    fedc_layout *layout;         /* "weight" [1, DIM], "bias" [1] */
    float x[CLIENTS][PER_CLIENT][DIM];
    float y[CLIENTS][PER_CLIENT];
    float true_w[DIM], true_b;
} regression;

static const fedc_layout *reg_layout(const void *shared)
{
    return ((const regression *)shared)->layout;
}

static fedc_status reg_init(const void *shared, uint64_t seed, float *params, fedc_err *err)
{
    (void)shared, (void)seed, (void)err;
    memset(params, 0, (DIM + 1) * sizeof(float));
    return FEDC_OK;
}

/* Mean squared error over a client's data, and its gradient (may be NULL). */
static double mse(const regression *r, uint32_t c, const float *p, float *grad)
{
    double loss = 0;
    if (grad) memset(grad, 0, (DIM + 1) * sizeof(float));
    for (int i = 0; i < PER_CLIENT; i++) {
        double pred = p[DIM];
        for (int d = 0; d < DIM; d++) pred += (double)p[d] * r->x[c][i][d];
        double e = pred - r->y[c][i];
        loss += e * e / PER_CLIENT;
        if (grad) {
            for (int d = 0; d < DIM; d++) grad[d] += (float)(2 * e * r->x[c][i][d] / PER_CLIENT);
            grad[DIM] += (float)(2 * e / PER_CLIENT);
        }
    }
    return loss;
}

static fedc_status reg_fit(const void *shared, void *worker, const fedc_fit_ins *ins,
                           fedc_fit_out *out, fedc_err *err)
{
    (void)worker, (void)err;
    const regression *r = shared;
    float w[DIM + 1], g[DIM + 1];
    memcpy(w, ins->global, sizeof w);
    double loss = 0;
    for (int s = 0; s < LOCAL_STEPS; s++) {
        loss += mse(r, ins->client, w, g) / LOCAL_STEPS;
        for (int d = 0; d <= DIM; d++) w[d] -= 0.02f * g[d];
    }
    for (int d = 0; d <= DIM; d++) out->update[d] = w[d] - ins->global[d];
    out->num_examples = PER_CLIENT;
    out->train_loss = loss;
    out->steps = LOCAL_STEPS;
    return FEDC_OK;
}

static fedc_status reg_evaluate(const void *shared, void *worker, const fedc_eval_ins *ins,
                                fedc_eval_out *out, fedc_err *err)
{
    (void)worker, (void)err;
    const regression *r = shared;
    double loss = 0;
    if (ins->client == FEDC_CLIENT_SERVER) { /* the server's view: all clients' data */
        for (uint32_t c = 0; c < CLIENTS; c++) loss += mse(r, c, ins->params, NULL) / CLIENTS;
    } else {
        loss = mse(r, ins->client, ins->params, NULL);
    }
    out->loss = loss;
    out->accuracy = NAN; /* regression: no accuracy */
    out->num_examples = PER_CLIENT;
    return FEDC_OK;
}

static const fedc_trainer_ops regression_ops = {
    .name = "least-squares",
    .worker_size = 0,
    .layout = reg_layout,
    .init_params = reg_init,
    .fit = reg_fit,
    .evaluate = reg_evaluate,
};

static int print_round(void *user, const fedc_round_record *rec)
{
    (void)user;
    if (rec->evaluated)
        printf("round %3u: %u clients, train mse %.5f, test mse %.5f\n", rec->round,
               rec->participants, rec->train_loss, rec->test_loss);
    return 0;
}

int main(void)
{
    static regression r; /* big arrays: not on the stack */
    fedc_rng rng;
    fedc_rng_init(&rng, 1, FEDC_RNG_ANY, FEDC_RNG_ANY, FEDC_RNG_DATA);
    for (int d = 0; d < DIM; d++) r.true_w[d] = (float)fedc_rng_normal(&rng);
    r.true_b = 0.5f;
    for (int c = 0; c < CLIENTS; c++) {
        double centre = 0.5 * fedc_rng_normal(&rng);
        for (int i = 0; i < PER_CLIENT; i++) {
            double y = r.true_b + 0.01 * fedc_rng_normal(&rng);
            for (int d = 0; d < DIM; d++) {
                r.x[c][i][d] = (float)(centre + fedc_rng_normal(&rng));
                y += r.true_w[d] * r.x[c][i][d];
            }
            r.y[c][i] = (float)y;
        }
    }
    fedc_err err;
    r.layout = fedc_layout_create();
    int64_t wshape[2] = {1, DIM}, bshape[1] = {1};
    if (!r.layout || fedc_layout_add(r.layout, "weight", 2, wshape, &err) != FEDC_OK ||
        fedc_layout_add(r.layout, "bias", 1, bshape, &err) != FEDC_OK) {
        fprintf(stderr, "layout: %s\n", fedc_err_message(&err));
        return 1;
    }

    fedc_config *cfg = fedc_config_create();
    const char *sets[] = {"run.rounds=60", "clients.count=50", "clients.per_round=10",
                          "strategy.name=fedavg", "eval.every=10"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (fedc_config_set(cfg, sets[i], "custom_trainer") != FEDC_OK) {
            fprintf(stderr, "%s\n", fedc_config_errmsg(cfg));
            return 1;
        }

    fedc_trainer trainer = {&regression_ops, &r};
    fedc_engine *engine = NULL;
    if (fedc_engine_create(cfg, &trainer, &engine, &err) != FEDC_OK) {
        fprintf(stderr, "engine: %s\n", fedc_err_message(&err));
        return 1;
    }
    fedc_sim_opts opts = {0, print_round, NULL};
    if (fedc_sim_run(engine, &trainer, cfg, &opts, &err) != FEDC_OK) {
        fprintf(stderr, "run: %s\n", fedc_err_message(&err));
        return 1;
    }
    const float *w = fedc_engine_global(engine);
    double dist = (w[DIM] - r.true_b) * (w[DIM] - r.true_b);
    for (int d = 0; d < DIM; d++) dist += (w[d] - r.true_w[d]) * (w[d] - r.true_w[d]);
    printf("distance to the true parameters: %.6f\n", sqrt(dist));
    fedc_engine_destroy(engine);
    fedc_config_destroy(cfg);
    fedc_layout_destroy(r.layout);
    return sqrt(dist) < 0.05 ? 0 : 1;
}
