/* A federation from a config: dataset, partition, built-in trainer and engine in one call. */
#include <string.h>

#include "fedc/run.h"
#include "fedc/trainer_nn.h"

fedc_status fedc_run_partition_opts(const fedc_config *cfg, fedc_partition_opts *o,
                                    fedc_err *err)
{
    fedc_partition_opts_init(o);
    const char *scheme = fedc_config_str(cfg, "data.partition");
    if (fedc_partition_scheme_parse(scheme, &o->scheme) != 0)
        return fedc_err_set(err, FEDC_ERR_CONFIG, "data.partition: unknown scheme '%s'", scheme);
    o->num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    o->seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    o->test_fraction = fedc_config_double(cfg, "data.test_fraction");
    o->alpha = fedc_config_double(cfg, "data.alpha");
    o->min_size = (size_t)fedc_config_int(cfg, "data.min_size");
    o->shards_per_client = (uint32_t)fedc_config_int(cfg, "data.shards_per_client");
    o->sigma = fedc_config_double(cfg, "data.sigma");
    return FEDC_OK;
}

void fedc_run_fini(fedc_run *run)
{
    fedc_engine_destroy(run->engine);
    fedc_trainer_nn_destroy(run->trainer);
    fedc_partition_destroy(run->partition);
    fedc_dataset_destroy(run->train);
    fedc_dataset_destroy(run->test);
    memset(run, 0, sizeof *run);
}

fedc_status fedc_run_init(fedc_run *run, const fedc_config *cfg, unsigned flags, fedc_err *err)
{
    memset(run, 0, sizeof *run);
    const char *spec = fedc_config_str(cfg, "data.dataset");
    fedc_status st = fedc_data_load(spec, &run->train, &run->test, err);
    if (st != FEDC_OK) {
        fedc_err_prefix(err, "data.dataset = %s: ", spec);
        goto fail;
    }
    fedc_partition_opts popts;
    st = fedc_run_partition_opts(cfg, &popts, err);
    if (st == FEDC_OK) st = fedc_partition_create(run->train, &popts, &run->partition, err);
    if (st != FEDC_OK) {
        fedc_err_prefix(err, "partition: ");
        goto fail;
    }
    st = fedc_trainer_nn_create(cfg, run->train, run->test, run->partition, &run->trainer, err);
    if (st != FEDC_OK) goto fail;
    if (!(flags & FEDC_RUN_NO_ENGINE)) {
        st = fedc_engine_create(cfg, run->trainer, &run->engine, err);
        if (st != FEDC_OK) goto fail;
    }
    return FEDC_OK;
fail:
    fedc_run_fini(run);
    return st;
}
