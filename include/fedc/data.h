/*
 * Datasets, federated partitions and minibatches (src/data; docs/DATA.md).
 *
 * A dataset is n samples of one shape ({1,28,28} for images, {80} for text), stored as ONE
 * contiguous float32 array [n x dim] plus int32 labels in [0, num_classes), optionally with a
 * user id per sample (the natural partition of LEAF and FedProx Synthetic). It is loaded once
 * and shared read-only: clients never copy samples, they hold index arrays into it (a
 * partition), and a batch iterator walks a permutation of those indices.
 *
 * Loaders take a spec string (fedc_data_load): `fmnist`, `idx:DIR`, `csv:PATH?label=COL`,
 * `leaf:TRAIN_JSON[,TEST_JSON]`, `synthetic:ALPHA,BETA[,seed=S]`, `synthetic-iid`. Every loader
 * checks what it reads and fails with a message naming the file and the offset or line.
 *
 * Thread safety: a loaded dataset and a partition are immutable; any number of threads may
 * read them at once. A batch iterator belongs to one thread. Loading and partitioning are
 * reentrant (no global state).
 */
#ifndef FEDC_DATA_H
#define FEDC_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fedc/rng.h"
#include "fedc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_DATA_MAX_DIMS 4          /* dimensions of one sample's shape */
#define FEDC_DATA_MAX_CLASSES 65536   /* labels are < this */
#define FEDC_DATA_MAX_SAMPLES 0xfffffffeu /* sample indices are uint32 */

/* The 80-character vocabulary of LEAF's Shakespeare task (models/utils/language_utils.py):
 * a text sample's features and its label are indices into this string. */
#define FEDC_LEAF_VOCAB                                                                        \
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
#define FEDC_LEAF_VOCAB_SIZE 80

/* ------------------------------------------------------------------------------------------ */
/* Datasets                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct fedc_dataset fedc_dataset;

/* A new dataset of n zeroed samples of the given shape (ndim in 1..FEDC_DATA_MAX_DIMS, every
 * dimension > 0), all labels 0, no users, for callers that fill x and y themselves (through
 * fedc_dataset_x_mut / _y_mut; then check with fedc_dataset_validate). num_classes in
 * 1..FEDC_DATA_MAX_CLASSES; name may be NULL ("dataset"). On success *out owns the dataset.
 * Errors: FEDC_ERR_INVALID (shape, class count, n > FEDC_DATA_MAX_SAMPLES), FEDC_ERR_NOMEM. */
fedc_status fedc_dataset_create(size_t n, int ndim, const int64_t *shape, int32_t num_classes,
                                const char *name, fedc_dataset **out, fedc_err *err);
/* Frees the dataset and everything it owns. NULL allowed. Index arrays into it (partitions)
 * must not be used afterwards. */
void fedc_dataset_destroy(fedc_dataset *ds);

size_t fedc_dataset_n(const fedc_dataset *ds);
/* Floats per sample (the product of the shape). */
size_t fedc_dataset_dim(const fedc_dataset *ds);
/* Copies the shape into shape[0..ndim-1] (shape may be NULL) and returns ndim. */
int fedc_dataset_shape(const fedc_dataset *ds, int64_t shape[FEDC_DATA_MAX_DIMS]);
int32_t fedc_dataset_num_classes(const fedc_dataset *ds);
/* "fashion-mnist", "synthetic(1,1)", a file's base name... Lives as long as ds. */
const char *fedc_dataset_name(const fedc_dataset *ds);
/* The features [n x dim], row-major, and the labels [n]. Live as long as ds. */
const float *fedc_dataset_x(const fedc_dataset *ds);
const int32_t *fedc_dataset_y(const fedc_dataset *ds);
float *fedc_dataset_x_mut(fedc_dataset *ds);
int32_t *fedc_dataset_y_mut(fedc_dataset *ds);
/* Sample i's features (dim floats). i < n. */
const float *fedc_dataset_sample(const fedc_dataset *ds, size_t i);
/* Bytes held by the dataset (features, labels, user ids). */
size_t fedc_dataset_bytes(const fedc_dataset *ds);

/* Users: the natural owner of each sample (LEAF's writers and speakers, Synthetic's users).
 * fedc_dataset_num_users is 0 and fedc_dataset_user_ids NULL when the dataset has none.
 * user_ids[i] is in [0, num_users); fedc_dataset_user_name(ds, u) is the source's name for u
 * ("f0001_41"), live as long as ds. */
size_t fedc_dataset_num_users(const fedc_dataset *ds);
const int32_t *fedc_dataset_user_ids(const fedc_dataset *ds);
const char *fedc_dataset_user_name(const fedc_dataset *ds, size_t user);
/* Gives ds users: copies user_ids[0..n-1] (each in [0, num_users)) and the names (names may
 * be NULL: "0", "1", ...). Replaces any previous users. Errors: FEDC_ERR_RANGE, _NOMEM. */
fedc_status fedc_dataset_set_users(fedc_dataset *ds, size_t num_users,
                                   const char *const *names, const int32_t *user_ids,
                                   fedc_err *err);

/* A class's display name ("Trouser" for Fashion-MNIST class 1), or NULL when the dataset has
 * no names. Lives as long as ds. */
const char *fedc_dataset_class_name(const fedc_dataset *ds, int32_t cls);
/* Copies names[0..num_classes-1]. Errors: FEDC_ERR_NOMEM. */
fedc_status fedc_dataset_set_class_names(fedc_dataset *ds, const char *const *names,
                                         fedc_err *err);

/* counts[0..num_classes-1] = number of samples of each class. */
void fedc_dataset_label_counts(const fedc_dataset *ds, size_t *counts);

/* Checks every label is in [0, num_classes), every feature finite, every user id in range.
 * Errors (naming the sample): FEDC_ERR_RANGE, FEDC_ERR_NONFINITE. */
fedc_status fedc_dataset_validate(const fedc_dataset *ds, fedc_err *err);

/* A new dataset made of samples idx[0..n-1] of ds (a copy, in that order; users and class
 * names kept). Every idx[i] must be < fedc_dataset_n(ds). Errors: FEDC_ERR_NOMEM. */
fedc_status fedc_dataset_subset(const fedc_dataset *ds, const uint32_t *idx, size_t n,
                                fedc_dataset **out, fedc_err *err);

/* Standardizes every feature to mean 0 and standard deviation 1 using statistics of `fit`
 * only, applied to fit and to `other` (may be NULL; same dim): the test set is never looked
 * at. Features with zero variance are only centred. Errors: FEDC_ERR_SHAPE, FEDC_ERR_NOMEM. */
fedc_status fedc_dataset_standardize(fedc_dataset *fit, fedc_dataset *other, fedc_err *err);

/* Gathers samples idx[0..n-1] into caller buffers: x[n x dim] and y[n] (either may be NULL).
 * Every idx[i] must be < fedc_dataset_n(ds) (asserted). No allocation. */
void fedc_data_gather(const fedc_dataset *ds, const uint32_t *idx, size_t n, float *x,
                      int32_t *y);

/* ------------------------------------------------------------------------------------------ */
/* Loading                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/*
 * Loads the dataset a spec names (grammar in docs/DATA.md and fedc_data_spec_help()):
 *
 *   fmnist | fashion-mnist    Fashion-MNIST from $FEDC_DATASETS/fashion-mnist or
 *                             /usr/share/datasets/fashion-mnist (Debian dataset-fashion-mnist)
 *   mnist                     MNIST from $FEDC_DATASETS/mnist or /usr/share/datasets/mnist
 *   idx:DIR                   *train-images-idx3-ubyte[.gz] etc. found in DIR
 *   idx:TRAIN_IMG,TRAIN_LBL[,TEST_IMG,TEST_LBL]   explicit IDX files, plain or .gz
 *   csv:TRAIN[,TEST]          numeric CSV (plain or .gz), one label column
 *   leaf:TRAIN[,TEST]         LEAF JSON files (or directories of them), users kept
 *   synthetic:ALPHA,BETA      FedProx Synthetic(alpha, beta), 30 users, natural user ids
 *   synthetic-iid             its IID variant
 *
 * followed by options `?key=value&key=value` (synthetic also takes `,seed=S`): for every kind
 * limit=N, test_limit=N (keep the first N samples), standardize=1; per kind label=, header=,
 * sep=, classes=, prefix=, oov=, shape=, seed=, users= (see docs/DATA.md).
 *
 * On success *train owns the training set and, when test is not NULL, *test owns the test set
 * or is NULL when the spec has none (a CSV or LEAF spec with one file). The two share
 * num_classes and shape. On failure nothing is allocated and err names the file and the
 * offset (binary files; decompressed offset for .gz) or line (text files) of the problem.
 * Errors: FEDC_ERR_INVALID (bad spec), FEDC_ERR_NOTFOUND, FEDC_ERR_IO, FEDC_ERR_FORMAT,
 * FEDC_ERR_RANGE (labels), FEDC_ERR_SHAPE (counts, ragged rows, train/test mismatch),
 * FEDC_ERR_NONFINITE, FEDC_ERR_NOMEM.
 */
fedc_status fedc_data_load(const char *spec, fedc_dataset **train, fedc_dataset **test,
                           fedc_err *err);

/* The spec grammar as text for --help output. Static. */
const char *fedc_data_spec_help(void);

/* ------------------------------------------------------------------------------------------ */
/* Partitions                                                                                  */
/* ------------------------------------------------------------------------------------------ */

typedef enum fedc_partition_scheme {
    FEDC_PARTITION_IID = 0,       /* uniform shuffle, equal sizes (+-1) */
    FEDC_PARTITION_DIRICHLET = 1, /* per class, shares ~ Dirichlet(alpha) over clients */
    FEDC_PARTITION_SHARDS = 2,    /* sort by label, cut in shards, shards_per_client each */
    FEDC_PARTITION_NATURAL = 3,   /* by the dataset's user ids */
    FEDC_PARTITION_QUANTITY = 4,  /* IID labels, log-normal sizes */
    FEDC_PARTITION_SCHEME_COUNT_
} fedc_partition_scheme;

/* "iid", "dirichlet", "shards", "natural", "quantity". */
const char *fedc_partition_scheme_name(fedc_partition_scheme scheme);
/* The scheme of that name. Returns 0, or -1 when the name is unknown. */
int fedc_partition_scheme_parse(const char *name, fedc_partition_scheme *out);

typedef struct fedc_partition_opts {
    fedc_partition_scheme scheme;
    uint32_t num_clients;       /* > 0; NATURAL: 0 = one client per user having samples */
    uint64_t seed;              /* run seed: streams FEDC_RNG_PARTITION and FEDC_RNG_SPLIT */
    double test_fraction;       /* [0, 1): share of each client's samples held out (0.1) */
    double alpha;               /* DIRICHLET: concentration > 0 (0.5) */
    size_t min_size;            /* DIRICHLET, QUANTITY: minimum TRAINING samples per client (10);
                                 * 0 allows empty clients (the engine skips them: docs/DATA.md) */
    uint32_t max_attempts;      /* DIRICHLET: draws before giving up on min_size (100) */
    uint32_t shards_per_client; /* SHARDS: (2) */
    double sigma;               /* QUANTITY: sizes ~ LogNormal(0, sigma) (1.0) */
} fedc_partition_opts;

/* The defaults above: IID, 100 clients, seed 0. */
void fedc_partition_opts_init(fedc_partition_opts *opts);

typedef struct fedc_partition fedc_partition;

/* Which of a client's two index arrays. */
typedef enum fedc_split {
    FEDC_SPLIT_TRAIN = 0,
    FEDC_SPLIT_TEST = 1
} fedc_split;

/*
 * Splits ds's samples among clients. Every sample goes to exactly one client; each client's
 * samples are then split (stream FEDC_RNG_SPLIT, seed, client) into train and test, with
 * round(test_fraction * size) test samples (at most size - 1). Index arrays are sorted.
 * Deterministic: the same ds, opts and seed give the same partition on any machine.
 * The partition keeps no pointer to ds (it holds indices only), but they are only meaningful
 * for ds. On success *out owns the partition.
 * Errors: FEDC_ERR_INVALID (options: zero clients, alpha <= 0, test_fraction outside [0, 1),
 * more clients than samples, shards or users), FEDC_ERR_UNSUPPORTED (NATURAL on a dataset
 * without users), FEDC_ERR_RANGE (min_size unreachable: too few samples, or Dirichlet draws
 * kept leaving a client short), FEDC_ERR_NOMEM.
 */
fedc_status fedc_partition_create(const fedc_dataset *ds, const fedc_partition_opts *opts,
                                  fedc_partition **out, fedc_err *err);
void fedc_partition_destroy(fedc_partition *p); /* NULL allowed */

uint32_t fedc_partition_num_clients(const fedc_partition *p);
int32_t fedc_partition_num_classes(const fedc_partition *p);
/* Client k's sorted sample indices (into the partitioned dataset) for a split; *n gets the
 * count (n may be NULL). Lives as long as p. k < num_clients. */
const uint32_t *fedc_partition_indices(const fedc_partition *p, uint32_t k, fedc_split split,
                                       size_t *n);
size_t fedc_partition_size(const fedc_partition *p, uint32_t k, fedc_split split);
/* Client k's label histogram for a split: num_classes counts. Lives as long as p. */
const uint32_t *fedc_partition_label_counts(const fedc_partition *p, uint32_t k,
                                            fedc_split split);

/* Summary of a partition, over train + test of each client. */
typedef struct fedc_partition_stats {
    size_t min_size, max_size; /* samples per client */
    double mean_size, std_size;
    double mean_classes;       /* classes present per client, mean */
    double mean_tv;            /* total-variation distance between a client's label
                                  distribution and the whole dataset's, mean over clients:
                                  0 = IID, near 1 = each client has classes others lack */
} fedc_partition_stats;
void fedc_partition_get_stats(const fedc_partition *p, fedc_partition_stats *out);

/* Writes an SVG heat map of the partition: one row per client, one column per class, colour =
 * share of the client's samples in that class, a bar of each client's size beside it, axis
 * labels, colour legend and `title` (may be NULL). ds (may be NULL) supplies class names.
 * Large federations are shown by their first 400 clients. Errors: FEDC_ERR_IO. */
fedc_status fedc_partition_write_svg(const fedc_partition *p, const fedc_dataset *ds,
                                     const char *title, FILE *out, fedc_err *err);

/* ------------------------------------------------------------------------------------------ */
/* Minibatches                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Walks an index array in batches, in a fresh random order each epoch. Caller-owned storage
 * (_init/_fini); fields are private. The index array is not copied and must outlive the
 * iterator; samples are never copied (batches are slices of a permutation of indices). */
typedef struct fedc_batch_iter {
    const uint32_t *idx_;
    size_t n_;
    size_t batch_size_;
    int drop_last_;
    uint32_t *perm_;
    size_t pos_;
    uint64_t epoch_;
} fedc_batch_iter;

/* Prepares an iterator over idx[0..n-1] in batches of batch_size (> 0); with drop_last, a
 * last batch smaller than batch_size is skipped. Allocates one permutation buffer of n indices
 * (the only allocation; none per epoch or batch). Call fedc_batch_iter_epoch before
 * fedc_batch_iter_next. Errors: FEDC_ERR_NOMEM. */
fedc_status fedc_batch_iter_init(fedc_batch_iter *it, const uint32_t *idx, size_t n,
                                 size_t batch_size, int drop_last, fedc_err *err);
void fedc_batch_iter_fini(fedc_batch_iter *it); /* safe on a zeroed or finished iterator */
/* Starts an epoch: the order is idx shuffled by rng (Fisher-Yates; pass the client's
 * FEDC_RNG_SHUFFLE stream and keep it across epochs so each epoch's order differs), or idx's
 * own order when rng is NULL. */
void fedc_batch_iter_epoch(fedc_batch_iter *it, fedc_rng *rng);
/* The next batch of the epoch: *batch points at its indices (valid until the next _epoch);
 * returns its size, or 0 when the epoch is over. */
size_t fedc_batch_iter_next(fedc_batch_iter *it, const uint32_t **batch);
/* Batches per epoch (with drop_last: full batches only). */
size_t fedc_batch_iter_num_batches(const fedc_batch_iter *it);
/* Epochs started so far. */
uint64_t fedc_batch_iter_epochs(const fedc_batch_iter *it);

#ifdef __cplusplus
}
#endif
#endif
