/*
 * FedProx's Synthetic(alpha, beta) data (Li et al. 2020, "Federated Optimization in
 * Heterogeneous Networks"; ../shared/REFERENCES.md), generated in memory from a seed:
 * users k = 0..U-1 with n_k = int(LogNormal(4, 2)) + 50 samples (capped at 10^6),
 * u_k ~ N(0, alpha^2), B_k ~ N(0, beta^2), v_k ~ N(B_k, 1)^60, W_k ~ N(u_k, 1)^{60x10},
 * b_k ~ N(u_k, 1)^10, x ~ N(v_k, diag(j^-1.2)), y = argmax(x W_k + b_k). alpha and beta are
 * standard deviations, as in the original script (np.random.normal(0, alpha)).
 * IID variant: v_k = 0 and one W, b ~ N(0, 1) for all users.
 * Each user's first 90% (int(0.9 n_k)) go to the training set, the rest to the test set (the
 * samples are i.i.d. within a user, so this equals the original shuffle-then-split).
 * Streams: FEDC_RNG_DATA keyed (seed, ANY, ANY) for the user-level draws, (seed, ANY, k) for
 * user k's parameters and samples: a user's data does not depend on how many users there are.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"
#include "fedc/alloc.h"

#define SYN_DIM 60
#define SYN_CLASSES 10
#define SYN_MAX_PER_USER 1000000

typedef struct syn_user {
    size_t n, n_train;
    double u, b;
} syn_user;

fedc_status fedci_load_synthetic(double alpha, double beta, int iid, fedci_opts *o,
                                 fedc_dataset **train, fedc_dataset **test, fedc_err *err)
{
    long long users, seed;
    FEDC_TRY(fedci_opt_int(o, "users", 30, 1, 1000000, &users, err));
    FEDC_TRY(fedci_opt_int(o, "seed", 0, 0, INT64_MAX, &seed, err));
    size_t nu = (size_t)users;
    syn_user *us = fedc_calloc(nu, sizeof *us);
    if (!us) return fedc_err_set(err, FEDC_ERR_NOMEM, "synthetic: out of memory");

    fedc_rng g;
    fedc_rng_init(&g, (uint64_t)seed, FEDC_RNG_ANY, FEDC_RNG_ANY, FEDC_RNG_DATA);
    size_t n_train = 0, n_test = 0;
    for (size_t k = 0; k < nu; k++) {
        double s = fedc_rng_lognormal(&g, 4.0, 2.0);
        us[k].n = (s >= SYN_MAX_PER_USER - 50 ? SYN_MAX_PER_USER - 50 : (size_t)s) + 50;
        us[k].n_train = (size_t)(0.9 * (double)us[k].n);
        n_train += us[k].n_train;
        n_test += us[k].n - us[k].n_train;
    }
    for (size_t k = 0; k < nu; k++) us[k].u = alpha * fedc_rng_normal(&g);
    for (size_t k = 0; k < nu; k++) us[k].b = beta * fedc_rng_normal(&g);
    double wg[SYN_DIM * SYN_CLASSES], bg[SYN_CLASSES];
    for (size_t i = 0; i < SYN_DIM * SYN_CLASSES; i++) wg[i] = fedc_rng_normal(&g);
    for (size_t i = 0; i < SYN_CLASSES; i++) bg[i] = fedc_rng_normal(&g);

    char name[64];
    if (iid)
        snprintf(name, sizeof name, "synthetic-iid");
    else
        snprintf(name, sizeof name, "synthetic(%g,%g)", alpha, beta);
    int64_t shape[1] = {SYN_DIM};
    fedc_dataset *tr = NULL, *te = NULL;
    int32_t *tr_ids = NULL, *te_ids = NULL;
    fedc_status st = fedci_dataset_alloc(n_train, 1, shape, SYN_CLASSES, name, 0, &tr, err);
    if (st == FEDC_OK) st = fedci_dataset_alloc(n_test, 1, shape, SYN_CLASSES, name, 0, &te, err);
    if (st == FEDC_OK) {
        tr_ids = fedc_malloc((n_train + 1) * sizeof *tr_ids);
        te_ids = fedc_malloc((n_test + 1) * sizeof *te_ids);
        if (!tr_ids || !te_ids) st = fedc_err_set(err, FEDC_ERR_NOMEM, "synthetic: out of memory");
    }
    if (st == FEDC_OK) {
        double sd[SYN_DIM];
        for (int j = 0; j < SYN_DIM; j++) sd[j] = sqrt(pow((double)(j + 1), -1.2));
        size_t itr = 0, ite = 0;
        for (size_t k = 0; k < nu; k++) {
            fedc_rng r;
            fedc_rng_init(&r, (uint64_t)seed, FEDC_RNG_ANY, (uint32_t)k, FEDC_RNG_DATA);
            double v[SYN_DIM], w[SYN_DIM * SYN_CLASSES], b[SYN_CLASSES];
            for (int j = 0; j < SYN_DIM; j++) v[j] = iid ? 0.0 : us[k].b + fedc_rng_normal(&r);
            for (int j = 0; j < SYN_DIM * SYN_CLASSES; j++)
                w[j] = iid ? wg[j] : us[k].u + fedc_rng_normal(&r);
            for (int c = 0; c < SYN_CLASSES; c++) b[c] = iid ? bg[c] : us[k].u + fedc_rng_normal(&r);
            for (size_t i = 0; i < us[k].n; i++) {
                int is_train = i < us[k].n_train;
                fedc_dataset *ds = is_train ? tr : te;
                size_t row = is_train ? itr++ : ite++;
                float *x = ds->x + row * SYN_DIM;
                double xd[SYN_DIM];
                for (int j = 0; j < SYN_DIM; j++) {
                    xd[j] = v[j] + sd[j] * fedc_rng_normal(&r);
                    x[j] = (float)xd[j];
                }
                /* argmax of softmax = argmax of the logits */
                int best = 0;
                double best_z = -INFINITY;
                for (int c = 0; c < SYN_CLASSES; c++) {
                    double z = b[c];
                    for (int j = 0; j < SYN_DIM; j++) z += xd[j] * w[j * SYN_CLASSES + c];
                    if (z > best_z) {
                        best_z = z;
                        best = c;
                    }
                }
                ds->y[row] = best;
                (is_train ? tr_ids : te_ids)[row] = (int32_t)k;
            }
        }
    }
    if (st == FEDC_OK) {
        const char **names = fedc_calloc(nu, sizeof *names);
        char *store = fedc_malloc(nu * 16);
        if (!names || !store) {
            st = fedc_err_set(err, FEDC_ERR_NOMEM, "synthetic: out of memory");
        } else {
            for (size_t k = 0; k < nu; k++) {
                snprintf(store + 16 * k, 16, "f_%05u", (unsigned)k);
                names[k] = store + 16 * k;
            }
            st = fedc_dataset_set_users(tr, nu, names, tr_ids, err);
            if (st == FEDC_OK) st = fedc_dataset_set_users(te, nu, names, te_ids, err);
        }
        fedc_free(names);
        fedc_free(store);
    }
    fedc_free(tr_ids);
    fedc_free(te_ids);
    fedc_free(us);
    if (st != FEDC_OK) {
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        return st;
    }
    *train = tr;
    *test = te;
    return FEDC_OK;
}
