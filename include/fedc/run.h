/*
 * A federation described by a config, set up in one call: the dataset (data.dataset), its split
 * among clients (data.partition ...), the built-in trainer (model.spec, [train]) and the round
 * engine ([strategy], [clients]). What `fedc sim`, `fedc bench sim` and a deployment's server
 * and clients all start from.
 */
#ifndef FEDC_RUN_H
#define FEDC_RUN_H

#include "fedc/config.h"
#include "fedc/data.h"
#include "fedc/engine.h"
#include "fedc/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_run {
    fedc_dataset *train;     /* the training set (split among clients) */
    fedc_dataset *test;      /* the central test set, or NULL */
    fedc_partition *partition;
    fedc_trainer *trainer;   /* the built-in nn trainer */
    fedc_engine *engine;     /* NULL when created with FEDC_RUN_NO_ENGINE */
} fedc_run;

enum {
    FEDC_RUN_NO_ENGINE = 1u << 0 /* a client: data, partition and trainer only */
};

/* Fills run from cfg (which must outlive run). On failure everything built so far is freed,
 * run is zeroed, and err says which step failed ("data.dataset = x: ...", "partition: ...").
 * Errors: those of fedc_data_load, fedc_partition_create, fedc_trainer_nn_create and
 * fedc_engine_create. */
fedc_status fedc_run_init(fedc_run *run, const fedc_config *cfg, unsigned flags, fedc_err *err);
/* Frees what fedc_run_init built; safe on a zeroed run. */
void fedc_run_fini(fedc_run *run);

/* Partition options from the [data] and [clients] keys and run.seed. */
fedc_status fedc_run_partition_opts(const fedc_config *cfg, fedc_partition_opts *opts,
                                    fedc_err *err);

#ifdef __cplusplus
}
#endif
#endif
