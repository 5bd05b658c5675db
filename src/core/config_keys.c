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
    /* checkpoints of `fedc sim` (owner: mpi; docs/SCALING.md "Checkpoint and resume") */
    STR_KEY("run", "checkpoint_dir", "",
            "fedc sim: directory of the run's checkpoints (--checkpoint DIR); empty = none"),
    INT_KEY("run", "checkpoint_every", "1", 1, 1000000,
            "fedc sim: write a checkpoint every N rounds (and after the last round)"),
    INT_KEY("run", "keep_checkpoints", "2", 0, 1000000,
            "fedc sim: newest checkpoints kept in checkpoint_dir (0 = all)"),
    BOOL_KEY("run", "resume", "false",
             "fedc sim: continue from the newest checkpoint in checkpoint_dir (--resume)"),

    /* --- clients --- */
    INT_KEY("clients", "count", "100", 1, 10000000, "number of clients in the federation"),
    INT_KEY("clients", "per_round", "10", 1, 10000000, "clients selected for training per round"),
    INT_KEY("clients", "min", "1", 1, 10000000,
            "minimum clients whose updates a round needs to succeed"),

    /* --- data --- */
    STR_KEY("data", "dataset", "fmnist",
            "dataset spec: fmnist, mnist, idx:DIR, csv:PATH?label=COL, leaf:TRAIN[,TEST], "
            "synthetic:A,B, synthetic-iid (docs/DATA.md)"),
    CHOICE_KEY("data", "partition", "iid", "iid|dirichlet|shards|natural|quantity",
               "how the training set is split among clients"),
    DBL_KEY("data", "alpha", "0.5", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "Dirichlet concentration (dirichlet partition); smaller = more skewed"),
    INT_KEY("data", "shards_per_client", "2", 1, 1000000, "shards per client (shards partition)"),
    DBL_KEY("data", "sigma", "1.0", 0, 10, FEDC_CFG_MIN_EXCL,
            "log-normal sigma of client sizes (quantity partition)"),
    INT_KEY("data", "min_size", "10", 0, 1000000,
            "minimum training samples per client (dirichlet and quantity partitions)"),
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
    STR_KEY("strategy", "name", "fedavg",
            "aggregation strategy: fedavg, fedavgm, fedprox, fedadagrad, fedadam, fedyogi, "
            "fedmedian, fedtrimmedavg, krum, multikrum, bulyan, qfedavg, scaffold "
            "(docs/STRATEGIES.md)"),
    INT_KEY("strategy", "max_weight", "0", 0, 1073741823.0,
            "cap on a client's aggregation weight (its num_examples); 0 = no cap"),
    INT_KEY("strategy", "max_updates", "0", 0, 1000000,
            "robust strategies: most updates held in memory per round (0 = clients.per_round)"),
    DBL_KEY("strategy", "server_lr", "1.0", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "fedavgm: server learning rate"),
    DBL_KEY("strategy", "server_momentum", "0", 0, 1, FEDC_CFG_MAX_EXCL,
            "fedavgm: server momentum (0 = none)"),
    DBL_KEY("strategy", "eta", "0", 0, 1e6, 0,
            "fedadagrad/fedadam/fedyogi: server learning rate (0 = 0.1; fedyogi 0.01)"),
    DBL_KEY("strategy", "eta_l", "0", 0, 1e6, 0,
            "fedadagrad/fedadam/fedyogi: client learning rate sent to clients (0 = train.lr)"),
    DBL_KEY("strategy", "beta1", "0.9", 0, 1, FEDC_CFG_MAX_EXCL,
            "fedadam/fedyogi: first-moment decay"),
    DBL_KEY("strategy", "beta2", "0.99", 0, 1, FEDC_CFG_MAX_EXCL,
            "fedadam/fedyogi: second-moment decay"),
    DBL_KEY("strategy", "tau", "0", 0, 1e6, 0,
            "fedadagrad/fedadam/fedyogi: adaptivity tau (0 = 1e-9; fedyogi 1e-3)"),
    DBL_KEY("strategy", "trim_beta", "0.2", 0, 0.5, FEDC_CFG_MAX_EXCL,
            "fedtrimmedavg: fraction of values cut at each end, per coordinate"),
    INT_KEY("strategy", "num_malicious", "0", 0, 1000000,
            "krum/multikrum/bulyan: number f of malicious clients to tolerate"),
    INT_KEY("strategy", "multikrum_m", "0", 0, 1000000,
            "multikrum: updates kept and averaged (0 = n - f)"),
    DBL_KEY("strategy", "q", "0.2", 0, 1e6, 0, "qfedavg: fairness exponent q (0 = plain average)"),
    DBL_KEY("strategy", "qffl_lr", "0.1", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "qfedavg: learning rate defining the Lipschitz estimate L = 1/qffl_lr"),
    DBL_KEY("strategy", "eta_g", "1.0", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "scaffold: server learning rate"),
    /* --- strategy: end --- */

    /* --- eval --- */
    INT_KEY("eval", "every", "1", 0, 1000000,
            "centralized evaluation on the test set every N rounds (0 = only at the end)"),
    DBL_KEY("eval", "fraction", "0", 0, 1, 0,
            "fraction of clients sampled for federated evaluation (0 = off)"),

    /* --- attack (robustness tests: simulated malicious clients) --- */
    DBL_KEY("attack", "fraction", "0", 0, 1, 0,
            "fraction of clients that are malicious (ids below fraction * clients.count)"),
    STR_KEY("attack", "kind", "none",
            "what malicious clients send: none, scale:F, signflip[:F], gaussian:SIGMA"),

    /* --- dp: begin (owned by the privacy module) --- */
    CHOICE_KEY("dp", "mode", "off", "off|central|local",
               "user-level DP: off, central (DP-FedAvg: clipped updates, noised sum on the "
               "server) or local (each client clips and noises its own update)"),
    DBL_KEY("dp", "noise_multiplier", "1.0", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "noise multiplier z: noise stddev = z * clip"),
    DBL_KEY("dp", "clip", "1.0", 0, 1e12, FEDC_CFG_MIN_EXCL,
            "L2 clip norm C of each update (the initial clip with dp.adaptive_clip)"),
    CHOICE_KEY("dp", "clip_on", "client", "client|server",
               "where updates are clipped (server: when clients are trusted less)"),
    DBL_KEY("dp", "delta", "1e-5", 0, 1, FEDC_CFG_MIN_EXCL | FEDC_CFG_MAX_EXCL,
            "delta of the (epsilon, delta) guarantee; must be < 1 / clients.count"),
    DBL_KEY("dp", "epsilon_budget", "0", 0, 1e6, 0,
            "stop, or refuse to start, when epsilon would exceed this (0 = no budget)"),
    STR_KEY("dp", "orders", "tf",
            "RDP orders of the accountant: tf, opacus, or a list such as 1.5,2..32,64"),
    BOOL_KEY("dp", "adaptive_clip", "false",
             "adapt the clip to a quantile of update norms (Andrew et al. 2021)"),
    DBL_KEY("dp", "target_quantile", "0.5", 0, 1, 0,
            "adaptive clipping: target fraction of unclipped updates"),
    DBL_KEY("dp", "clip_lr", "0.2", 0, 1e6, 0, "adaptive clipping: geometric learning rate"),
    DBL_KEY("dp", "clipped_count_stddev", "0", 0, 1e12, 0,
            "adaptive clipping: noise stddev of the unclipped count (0 = clients.per_round / 20)"),
    BOOL_KEY("dp", "sgd", "false", "example-level DP-SGD in local training (Abadi et al. 2016)"),
    DBL_KEY("dp", "sgd_noise_multiplier", "1.0", 0, 1e6, FEDC_CFG_MIN_EXCL,
            "DP-SGD noise multiplier"),
    DBL_KEY("dp", "sgd_clip", "1.0", 0, 1e12, FEDC_CFG_MIN_EXCL, "DP-SGD per-example clip norm"),
    BOOL_KEY("dp", "seeded_noise", "false",
             "TESTS ONLY: DP noise from the run seed (reproducible, NOT private)"),
    /* --- dp: end --- */

    /* --- compress: begin (owned by the codec module; docs/COMPRESSION.md) --- */
    STR_KEY("compress", "upload", "none",
            "encoding of client updates: none, f16, bf16, q8, q4, qsgd, topk:F, mask:P, zstd, "
            "composed with + in that order (e.g. topk:1%+q8+zstd)"),
    STR_KEY("compress", "download", "none",
            "encoding of the global model sent to clients (same grammar as compress.upload)"),
    BOOL_KEY("compress", "download_delta", "false",
             "fedc server: send the model as an exact delta (XOR, byte planes, zstd) against "
             "the version the client has cached, when smaller"),
    INT_KEY("compress", "delta_versions", "4", 1, 64,
            "fedc server with download_delta: recent model versions kept as delta bases "
            "(each costs 4 bytes per parameter)"),
    CHOICE_KEY("compress", "error_feedback", "auto", "auto|on|off",
               "carry what a lossy upload dropped into the client's next update "
               "(auto: on for topk)"),
    /* --- compress: end --- */

    /* --- secagg: begin (owned by the secagg module; docs/SECAGG.md) --- */
    BOOL_KEY("secagg", "enabled", "false",
             "aggregate each round's updates with SecAgg+ (linear strategies only)"),
    INT_KEY("secagg", "neighbors", "0", 0, 1000000,
            "neighbours per client, even or n-1 (0 = 2*ceil(log2 n); n-1 = original SecAgg)"),
    INT_KEY("secagg", "threshold", "0", 0, 1000000,
            "Shamir threshold t: shares needed to reconstruct a secret (0 = neighbors/2 + 1)"),
    INT_KEY("secagg", "bits", "32", 1, 32, "ring Z_2^bits of the masked sums"),
    DBL_KEY("secagg", "clip", "1.0", 0, 1e9, FEDC_CFG_MIN_EXCL,
            "clipping range c: update values are clipped to [-c, c] before quantization"),
    INT_KEY("secagg", "levels", "0", 0, 4294967295.0,
            "quantization levels over [-c, c] (0 = the most that cannot overflow)"),
    INT_KEY("secagg", "max_weight", "1000", 1, 4294967295.0,
            "cap on a client's example count used as its integer weight"),
    DBL_KEY("secagg", "dropout", "0", 0, 1, FEDC_CFG_MAX_EXCL,
            "simulation: fraction of clients vanishing before each of stages 2, 3 and 4"),
    DBL_KEY("secagg", "stage_timeout", "30", 0, 86400, FEDC_CFG_MIN_EXCL,
            "server: seconds each SecAgg stage after the first stays open for late clients"),
    /* --- secagg: end --- */

    /* --- round, server, client: begin (owned by the net module; docs/DEPLOY.md) --- */
    DBL_KEY("round", "overselect", "0", 0, 10, 0,
            "server: select ceil(clients.per_round * (1 + overselect)) clients; the round "
            "closes once clients.per_round results are accepted (e.g. 0.3)"),
    DBL_KEY("round", "deadline", "600", 0, 1e7, FEDC_CFG_MIN_EXCL,
            "server: seconds a round waits for results; then it closes with what it has "
            "(>= clients.min) or is re-run"),
    DBL_KEY("round", "retry_delay", "1", 0, 3600, 0,
            "server: seconds before re-running a round that missed clients.min"),
    DBL_KEY("round", "max_norm", "0", 0, 1e12, 0,
            "server: refuse updates whose L2 norm exceeds this (0 = no limit)"),
    INT_KEY("server", "threads", "4", 1, 256, "HTTP worker threads"),
    INT_KEY("server", "max_connections", "4096", 16, 1000000, "open connections at most"),
    DBL_KEY("server", "long_poll", "30", 0, 3600, 0,
            "seconds a check-in is held waiting for a task before the answer 'retry'"),
    DBL_KEY("server", "retry_after", "1", 0, 3600, 0,
            "seconds a client told 'retry' waits before checking in again (jittered)"),
    INT_KEY("server", "max_message", "1048576", 1024, 1073741824.0,
            "bytes of the largest protobuf message accepted (other than model chunks)"),
    INT_KEY("server", "chunk_bytes", "1048576", 4096, 67108864.0,
            "bytes of model data per chunk message (downloads and uploads)"),
    INT_KEY("server", "max_uploads", "8", 1, 4096,
            "results received at once; each holds one update buffer (memory bound)"),
    BOOL_KEY("server", "fold_early", "true",
             "fold float32 results into the aggregate chunk by chunk as they arrive (taken "
             "out again if refused); only for linear strategies without DP, max_norm, SecAgg or "
             "compress.upload"),
    DBL_KEY("server", "clock_skew", "300", 1, 86400, 0,
            "seconds a request's signed timestamp may differ from the server's clock"),
    DBL_KEY("server", "linger", "3", 0, 86400, 0,
            "seconds the server keeps answering 'done' after the run ends"),
    INT_KEY("server", "keep_checkpoints", "3", 0, 1000000,
            "checkpoints kept in the state dir (0 = all)"),
    INT_KEY("server", "connection_timeout", "120", 1, 86400,
            "seconds an idle connection is kept open"),
    DBL_KEY("client", "connect_timeout", "10", 0, 3600, FEDC_CFG_MIN_EXCL,
            "seconds to establish a connection to the server"),
    DBL_KEY("client", "timeout", "300", 0, 86400, FEDC_CFG_MIN_EXCL,
            "seconds a model download or a result upload may take"),
    DBL_KEY("client", "wait", "30", 0, 3600, 0,
            "seconds the client asks the server to hold a check-in (long poll)"),
    DBL_KEY("client", "retry_initial", "0.5", 0, 3600, FEDC_CFG_MIN_EXCL,
            "first back-off after a failed request, doubled each failure (with jitter)"),
    DBL_KEY("client", "retry_max", "30", 0, 86400, FEDC_CFG_MIN_EXCL,
            "longest back-off between retries"),
    DBL_KEY("client", "give_up", "0", 0, 1e7, 0,
            "seconds without reaching the server before the client stops (0 = never)"),
    /* --- round, server, client: end --- */
};

size_t fedc_config_key_count(void)
{
    return sizeof keys / sizeof keys[0];
}

const fedc_config_key *fedc_config_key_at(size_t i)
{
    return i < fedc_config_key_count() ? &keys[i] : NULL;
}
