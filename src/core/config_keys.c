/*
 * The configuration registry: every key libfedc knows, in the order `fedc help config` prints
 * them. One table for the whole library, so that a config file is checked against all of it.
 * Each module's keys live in a marked block; keep blocks sorted by section.
 */
#include "core/config_internal.h"

#define INT_KEY(sec, key, def, lo, hi, help) \
    {sec, key, FEDC_CFG_INT, def, lo, hi, FEDC_CFG_BOUNDED, NULL, help}
#define DBL_KEY(sec, key, def, lo, hi, flags, help) \
    {sec, key, FEDC_CFG_DOUBLE, def, lo, hi, FEDC_CFG_BOUNDED | (flags), NULL, help}
#define BOOL_KEY(sec, key, def, help) {sec, key, FEDC_CFG_BOOL, def, 0, 0, 0, NULL, help}
#define STR_KEY(sec, key, def, help) {sec, key, FEDC_CFG_STRING, def, 0, 0, 0, NULL, help}
#define CHOICE_KEY(sec, key, def, choices, help) \
    {sec, key, FEDC_CFG_CHOICE, def, 0, 0, 0, choices, help}

static const fedc_config_key keys[] = {
    /* --- run --- */
    INT_KEY("run", "seed", "42", 0, 9007199254740991.0, "seed of every random stream of the run"),
    INT_KEY("run", "rounds", "10", 1, 1000000, "number of federated rounds"),
    INT_KEY("run", "threads", "0", 0, 1024, "worker threads (0 = one per core)"),
    CHOICE_KEY("run", "log_level", "warn", "error|warn|info|debug|trace",
               "least severe log level shown"),

    /* --- clients --- */
    INT_KEY("clients", "count", "100", 1, 10000000, "number of clients in the federation"),
    INT_KEY("clients", "per_round", "10", 1, 10000000, "clients selected for training per round"),
    INT_KEY("clients", "min", "1", 1, 10000000,
            "minimum clients whose updates a round needs to succeed"),

    /* --- data --- */
    STR_KEY("data", "dataset", "fmnist",
            "dataset spec: fmnist, idx:DIR, csv:PATH?label=COL, leaf:TRAIN[,TEST], synthetic:A,B"),
    CHOICE_KEY("data", "partition", "iid", "iid|dirichlet|shards|natural|quantity",
               "how the training set is split among clients"),
    DBL_KEY("data", "alpha", "0.5", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "Dirichlet concentration (dirichlet partition); smaller = more skewed"),
    INT_KEY("data", "shards_per_client", "2", 1, 1000000, "shards per client (shards partition)"),
    DBL_KEY("data", "sigma", "1.0", 0, 10, FEDC_CFG_MIN_EXCL,
            "log-normal sigma of client sizes (quantity partition)"),
    INT_KEY("data", "min_size", "10", 0, 1000000, "minimum training samples per client"),
    DBL_KEY("data", "test_fraction", "0.1", 0, 1, FEDC_CFG_MAX_EXCL,
            "fraction of each client's samples kept for federated evaluation"),

    /* --- model --- */
    STR_KEY("model", "spec", "mlp",
            "model preset (logreg, mlp, cnn, femnist-cnn, shakespeare-lstm) or a layer spec"),

    /* --- train --- */
    INT_KEY("train", "epochs", "1", 0, 10000, "local epochs per round (0: use train.steps)"),
    INT_KEY("train", "steps", "0", 0, 100000000, "local steps per round when epochs = 0"),
    INT_KEY("train", "batch_size", "10", 1, 1000000, "local minibatch size"),
    CHOICE_KEY("train", "optimizer", "sgd", "sgd|adam|adamw", "client optimizer"),
    DBL_KEY("train", "lr", "0.05", 0, 1e6, FEDC_CFG_MIN_EXCL, "client learning rate"),
    DBL_KEY("train", "momentum", "0", 0, 1, FEDC_CFG_MAX_EXCL, "SGD momentum"),
    BOOL_KEY("train", "nesterov", "false", "Nesterov momentum (SGD)"),
    DBL_KEY("train", "weight_decay", "0", 0, 1e6, 0, "L2 weight decay (decoupled for adamw)"),
    DBL_KEY("train", "beta1", "0.9", 0, 1, FEDC_CFG_MAX_EXCL, "Adam beta1"),
    DBL_KEY("train", "beta2", "0.999", 0, 1, FEDC_CFG_MAX_EXCL, "Adam beta2"),
    DBL_KEY("train", "eps", "1e-8", 0, 1, FEDC_CFG_MIN_EXCL, "Adam epsilon"),
    DBL_KEY("train", "clip_grad_norm", "0", 0, 1e12, 0,
            "clip each step's gradient to this global L2 norm (0 = off)"),
    DBL_KEY("train", "prox_mu", "0", 0, 1e6, 0, "FedProx proximal term mu (0 = off)"),

    /* --- strategy: begin (owned by the strategy module) --- */
    /* --- strategy: end --- */

    /* --- eval --- */
    INT_KEY("eval", "every", "1", 0, 1000000,
            "centralized evaluation on the test set every N rounds (0 = only at the end)"),
    DBL_KEY("eval", "fraction", "0", 0, 1, 0,
            "fraction of clients sampled for federated evaluation (0 = off)"),

    /* --- dp: begin (owned by the privacy module) --- */
    /* --- dp: end --- */
};

size_t fedc_config_key_count(void)
{
    return sizeof keys / sizeof keys[0];
}

const fedc_config_key *fedc_config_key_at(size_t i)
{
    return i < fedc_config_key_count() ? &keys[i] : NULL;
}
