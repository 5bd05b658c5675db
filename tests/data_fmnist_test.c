/* The real Fashion-MNIST (Debian package dataset-fashion-mnist), when installed: 60,000 and
 * 10,000 images of 1x28x28 in [0, 1], 6,000 and 1,000 per class, and the FedAvg paper's
 * pathological split on it (100 clients, 200 shards of 300, 2 per client). Skipped when the
 * files are absent. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static fedc_dataset *train, *test;

static int setup(void **state)
{
    (void)state;
    if (access(FMNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0 && !getenv("FEDC_DATASETS"))
        return 0;
    fedc_err err;
    fedc_err_clear(&err);
    if (fedc_data_load("fmnist", &train, &test, &err) != FEDC_OK) {
        fprintf(stderr, "fmnist: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fedc_dataset_destroy(train);
    fedc_dataset_destroy(test);
    return 0;
}

static void test_shapes_and_counts(void **state)
{
    (void)state;
    if (!train) skip();
    assert_string_equal(fedc_dataset_name(train), "fashion-mnist");
    assert_int_equal(fedc_dataset_n(train), 60000);
    assert_int_equal(fedc_dataset_n(test), 10000);
    int64_t shape[FEDC_DATA_MAX_DIMS];
    assert_int_equal(fedc_dataset_shape(train, shape), 3);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], 28);
    assert_int_equal(shape[2], 28);
    assert_int_equal(fedc_dataset_num_classes(train), 10);
    size_t c[10];
    fedc_dataset_label_counts(train, c);
    for (int k = 0; k < 10; k++) assert_int_equal(c[k], 6000);
    fedc_dataset_label_counts(test, c);
    for (int k = 0; k < 10; k++) assert_int_equal(c[k], 1000);
    assert_string_equal(fedc_dataset_class_name(train, 9), "Ankle boot");
    /* The first image of each set is an ankle boot (label 9). */
    assert_int_equal(fedc_dataset_y(train)[0], 9);
    assert_int_equal(fedc_dataset_y(test)[0], 9);
    /* pixels in [0, 1], both ends used, mean near the published 0.286 */
    const float *x = fedc_dataset_x(train);
    double sum = 0;
    float mn = 1, mx = 0;
    for (size_t i = 0; i < 60000u * 784u; i++) {
        sum += x[i];
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
    }
    assert_true(mn == 0.0f && mx == 1.0f);
    assert_close(sum / (60000.0 * 784.0), 0.2860, 0, 5e-4);
    /* one copy in memory: 60,000 x 784 floats + labels */
    assert_int_equal(fedc_dataset_bytes(train), 60000u * 784u * 4u + 60000u * 4u);
}

static void test_fedavg_shards(void **state)
{
    (void)state;
    if (!train) skip();
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_SHARDS;
    o.num_clients = 100;
    o.shards_per_client = 2;
    o.test_fraction = 0;
    o.seed = 42;
    fedc_partition *p = NULL;
    fedc_err err;
    assert_int_equal(fedc_partition_create(train, &o, &p, &err), FEDC_OK);
    for (uint32_t k = 0; k < 100; k++) {
        assert_int_equal(fedc_partition_size(p, k, FEDC_SPLIT_TRAIN), 600);
        const uint32_t *h = fedc_partition_label_counts(p, k, FEDC_SPLIT_TRAIN);
        int classes = 0;
        for (int c = 0; c < 10; c++) classes += h[c] > 0;
        assert_true(classes >= 1 && classes <= 2);
    }
    fedc_partition_destroy(p);
    /* IID, 100 clients: 600 each, ~60 per class */
    o.scheme = FEDC_PARTITION_IID;
    assert_int_equal(fedc_partition_create(train, &o, &p, &err), FEDC_OK);
    fedc_partition_stats st;
    fedc_partition_get_stats(p, &st);
    assert_int_equal(st.min_size, 600);
    assert_int_equal(st.max_size, 600);
    assert_true(st.mean_tv < 0.12);
    fedc_partition_destroy(p);
}

static void test_limit_option(void **state)
{
    (void)state;
    if (!train) skip();
    fedc_dataset *tr = NULL, *te = NULL;
    fedc_err err;
    assert_int_equal(fedc_data_load("fmnist?limit=1000&test_limit=200", &tr, &te, &err), FEDC_OK);
    assert_int_equal(fedc_dataset_n(tr), 1000);
    assert_int_equal(fedc_dataset_n(te), 200);
    assert_memory_equal(fedc_dataset_x(tr), fedc_dataset_x(train), 1000 * 784 * sizeof(float));
    assert_string_equal(fedc_dataset_class_name(te, 0), "T-shirt/top");
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_and_counts),
        cmocka_unit_test(test_fedavg_shards),
        cmocka_unit_test(test_limit_option),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
