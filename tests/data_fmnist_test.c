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

/* 10,000 clients, Dirichlet alpha 0.3 (6 samples per client on average): some clients get no
 * sample at all, which data.min_size = 0 allows; any min_size >= 1 is out of reach. */
static void test_dirichlet_10k_clients(void **state)
{
    (void)state;
    if (!train) skip();
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_DIRICHLET;
    o.num_clients = 10000;
    o.alpha = 0.3;
    o.seed = 42;
    o.min_size = 0;
    fedc_partition *p = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    if (fedc_partition_create(train, &o, &p, &err) != FEDC_OK) fail_msg("%s", err.msg);
    assert_int_equal(fedc_partition_num_clients(p), 10000);
    /* every sample exactly once, over train and test splits */
    unsigned char *seen = calloc(60000, 1);
    assert_non_null(seen);
    size_t empty = 0, empty_train = 0, total = 0;
    for (uint32_t k = 0; k < 10000; k++) {
        size_t ntr, nte;
        const uint32_t *tr = fedc_partition_indices(p, k, FEDC_SPLIT_TRAIN, &ntr);
        const uint32_t *te = fedc_partition_indices(p, k, FEDC_SPLIT_TEST, &nte);
        for (size_t i = 0; i < ntr; i++) assert_int_equal(seen[tr[i]]++, 0);
        for (size_t i = 0; i < nte; i++) assert_int_equal(seen[te[i]]++, 0);
        if (ntr + nte == 0) empty++;
        if (ntr == 0) empty_train++;
        if (ntr + nte > 0) assert_true(ntr >= 1); /* at most size - 1 test samples */
        total += ntr + nte;
    }
    assert_int_equal(total, 60000);
    free(seen);
    /* A client's share of a class is ~ Beta(0.3, 2999.7): it often gets none of the class's
     * 6,000 samples, and about 1% of clients get none of any (seed 42: 132 empty clients, the
     * largest has 26 samples). */
    assert_true(empty >= 50 && empty <= 400);
    assert_int_equal(empty_train, empty);
    fedc_partition_stats st;
    fedc_partition_get_stats(p, &st);
    assert_int_equal(st.min_size, 0);
    assert_close(st.mean_size, 6.0, 1e-12, 0);
    fedc_partition_destroy(p);
    /* min_size 1 cannot be met: a clear error after max_attempts draws */
    o.min_size = 1;
    o.max_attempts = 3;
    assert_int_equal(fedc_partition_create(train, &o, &p, &err), FEDC_ERR_RANGE);
    assert_null(p);
    assert_non_null(strstr(err.msg, "min_size"));
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
        cmocka_unit_test(test_dirichlet_10k_clients),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
