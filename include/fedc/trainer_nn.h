/*
 * The built-in trainer: fedc's neural-network engine (fedc/nn.h) training on a dataset split
 * among clients (fedc/data.h). One of possibly many trainers (fedc/trainer.h).
 */
#ifndef FEDC_TRAINER_NN_H
#define FEDC_TRAINER_NN_H

#include "fedc/config.h"
#include "fedc/data.h"
#include "fedc/trainer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A trainer for the model cfg's model.spec names, over `train` split by `partition` (client k
 * trains on partition's train indices of k and evaluates on its test indices), with `test` as
 * the central test set (may be NULL: no centralized evaluation). Uses the [train] keys
 * (epochs or steps, batch_size, optimizer, lr, ...) and [attack] for simulated malicious
 * clients. The datasets, partition and cfg must outlive the trainer; nothing is copied.
 * Errors: the model's (bad spec: FEDC_ERR_INVALID naming the token), FEDC_ERR_SHAPE
 * (partition and dataset disagree), FEDC_ERR_CONFIG, FEDC_ERR_NOMEM. */
fedc_status fedc_trainer_nn_create(const fedc_config *cfg, const fedc_dataset *train,
                                   const fedc_dataset *test, const fedc_partition *partition,
                                   fedc_trainer **out, fedc_err *err);
void fedc_trainer_nn_destroy(fedc_trainer *trainer); /* NULL allowed */

/* The trainer's model (for printing its summary). */
const struct fedc_model *fedc_trainer_nn_model(const fedc_trainer *trainer);

#ifdef __cplusplus
}
#endif
#endif
