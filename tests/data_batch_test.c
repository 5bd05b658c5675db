/* The dataset handle (create, validate, subset, users, standardize, gather) and the batch
 * iterator (every index once per epoch, fresh order per epoch, reproducible by stream,
 * drop_last, no allocation after init). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

static fedc_dataset *make(size_t n, size_t dim)
{
    int64_t shape[2] = {(int64_t)dim, 1};
    fedc_dataset *ds = NULL;
    fedc_err err;
    assert_int_equal(fedc_dataset_create(n, 2, shape, 3, "toy", &ds, &err), FEDC_OK);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < dim; j++) fedc_dataset_x_mut(ds)[i * dim + j] = (float)(i * 100 + j);
        fedc_dataset_y_mut(ds)[i] = (int32_t)(i % 3);
    }
    return ds;
}

static void test_dataset_api(void **state)
{
    (void)state;
    fedc_err err;
    fedc_dataset *ds = NULL;
    int64_t bad[2] = {3, 0};
    assert_int_equal(fedc_dataset_create(4, 2, bad, 2, NULL, &ds, &err), FEDC_ERR_INVALID);
    assert_null(ds);
    int64_t ok[1] = {3};
    assert_int_equal(fedc_dataset_create(4, 1, ok, 0, NULL, &ds, &err), FEDC_ERR_INVALID);
    assert_int_equal(fedc_dataset_create(4, 5, ok, 2, NULL, &ds, &err), FEDC_ERR_INVALID);

    ds = make(10, 4);
    assert_string_equal(fedc_dataset_name(ds), "toy");
    assert_int_equal(fedc_dataset_dim(ds), 4);
    assert_int_equal(fedc_dataset_bytes(ds), 10 * 4 * 4 + 10 * 4);
    assert_null(fedc_dataset_class_name(ds, 0));
    assert_int_equal(fedc_dataset_validate(ds, &err), FEDC_OK);
    size_t counts[3];
    fedc_dataset_label_counts(ds, counts);
    assert_int_equal(counts[0], 4);
    assert_int_equal(counts[1], 3);
    assert_int_equal(counts[2], 3);
    /* validation names the sample */
    fedc_dataset_y_mut(ds)[7] = 3;
    assert_int_equal(fedc_dataset_validate(ds, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "sample 7"));
    fedc_dataset_y_mut(ds)[7] = 1;
    fedc_dataset_x_mut(ds)[4 * 5 + 2] = NAN;
    assert_int_equal(fedc_dataset_validate(ds, &err), FEDC_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "sample 5, feature 2"));
    fedc_dataset_x_mut(ds)[4 * 5 + 2] = 502;

    /* users */
    int32_t ids[10] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 5};
    assert_int_equal(fedc_dataset_set_users(ds, 3, NULL, ids, &err), FEDC_ERR_RANGE);
    assert_null(fedc_dataset_user_ids(ds));
    ids[9] = 2;
    const char *names[3] = {"ann", "bob", "cy"};
    assert_int_equal(fedc_dataset_set_users(ds, 3, names, ids, &err), FEDC_OK);
    assert_int_equal(fedc_dataset_num_users(ds), 3);
    assert_string_equal(fedc_dataset_user_name(ds, 1), "bob");

    /* subset: a copy in the given order, users and names kept */
    const char *cn[3] = {"zero", "one", "two"};
    assert_int_equal(fedc_dataset_set_class_names(ds, cn, &err), FEDC_OK);
    uint32_t pick[3] = {9, 0, 4};
    fedc_dataset *sub = NULL;
    assert_int_equal(fedc_dataset_subset(ds, pick, 3, &sub, &err), FEDC_OK);
    assert_int_equal(fedc_dataset_n(sub), 3);
    assert_true(fedc_dataset_sample(sub, 0)[3] == 903.0f);
    assert_true(fedc_dataset_sample(sub, 2)[0] == 400.0f);
    assert_int_equal(fedc_dataset_y(sub)[0], 0);
    assert_int_equal(fedc_dataset_user_ids(sub)[2], 1);
    assert_string_equal(fedc_dataset_user_name(sub, 2), "cy");
    assert_string_equal(fedc_dataset_class_name(sub, 1), "one");
    fedc_dataset_destroy(sub);

    /* gather */
    float x[8];
    int32_t y[2];
    uint32_t g[2] = {3, 8};
    fedc_data_gather(ds, g, 2, x, y);
    assert_true(x[0] == 300.0f && x[7] == 803.0f);
    assert_int_equal(y[0], 0);
    assert_int_equal(y[1], 2);
    fedc_data_gather(ds, g, 2, NULL, y); /* labels only */

    /* standardize: fitted on ds only, applied to another */
    fedc_dataset *other = make(2, 4);
    assert_int_equal(fedc_dataset_standardize(ds, other, &err), FEDC_OK);
    /* column 0 of ds: 0, 100, ..., 900: mean 450, sd sqrt(82500) */
    assert_close(fedc_dataset_x(ds)[0], -450 / sqrt(82500.0), 1e-5, 0);
    assert_close(fedc_dataset_x(other)[4], (100 - 450) / sqrt(82500.0), 1e-5, 0);
    fedc_dataset *wrong = make(2, 3);
    assert_int_equal(fedc_dataset_standardize(ds, wrong, &err), FEDC_ERR_SHAPE);
    fedc_dataset_destroy(wrong);
    fedc_dataset_destroy(other);
    fedc_dataset_destroy(ds);
    fedc_dataset_destroy(NULL);
}

static void test_batches(void **state)
{
    (void)state;
    uint32_t idx[23];
    for (int i = 0; i < 23; i++) idx[i] = (uint32_t)(100 + 3 * i);
    fedc_batch_iter it;
    fedc_err err;
    assert_int_equal(fedc_batch_iter_init(&it, idx, 23, 5, 0, &err), FEDC_OK);
    assert_int_equal(fedc_batch_iter_num_batches(&it), 5);
    const uint32_t *b;
    assert_int_equal(fedc_batch_iter_next(&it, &b), 0); /* no epoch started */

    fedc_rng rng, rng2;
    fedc_rng_init(&rng, 7, 0, 3, FEDC_RNG_SHUFFLE);
    fedc_rng_init(&rng2, 7, 0, 3, FEDC_RNG_SHUFFLE);
    uint32_t order[3][23];
    for (int e = 0; e < 3; e++) {
        fedc_alloc_stats s0, s1;
        fedc_alloc_get_stats(&s0);
        fedc_batch_iter_epoch(&it, &rng);
        size_t got = 0, m, nb = 0;
        while ((m = fedc_batch_iter_next(&it, &b)) > 0) {
            assert_true(m == 5 || (m == 3 && got == 20));
            memcpy(order[e] + got, b, m * sizeof *b);
            got += m;
            nb++;
        }
        fedc_alloc_get_stats(&s1);
        assert_int_equal(s1.allocations, s0.allocations); /* nothing allocated per epoch */
        assert_int_equal(got, 23);
        assert_int_equal(nb, 5);
        /* a permutation of idx */
        int seen[23] = {0};
        for (int i = 0; i < 23; i++) {
            uint32_t v = order[e][i];
            assert_true(v >= 100 && (v - 100) % 3 == 0 && (v - 100) / 3 < 23);
            seen[(v - 100) / 3]++;
        }
        for (int i = 0; i < 23; i++) assert_int_equal(seen[i], 1);
    }
    assert_int_equal(fedc_batch_iter_epochs(&it), 3);
    /* a new epoch's order differs from the last */
    assert_memory_not_equal(order[0], order[1], sizeof order[0]);
    assert_memory_not_equal(order[1], order[2], sizeof order[0]);
    /* the same stream gives the same orders */
    fedc_batch_iter it2;
    assert_int_equal(fedc_batch_iter_init(&it2, idx, 23, 23, 0, &err), FEDC_OK);
    fedc_batch_iter_epoch(&it2, &rng2);
    assert_int_equal(fedc_batch_iter_next(&it2, &b), 23);
    assert_memory_equal(b, order[0], sizeof order[0]);
    /* rng NULL: idx's own order */
    fedc_batch_iter_epoch(&it2, NULL);
    assert_int_equal(fedc_batch_iter_next(&it2, &b), 23);
    assert_memory_equal(b, idx, sizeof idx);
    assert_int_equal(fedc_batch_iter_next(&it2, &b), 0);
    fedc_batch_iter_fini(&it2);
    fedc_batch_iter_fini(&it);
    fedc_batch_iter_fini(&it); /* twice is safe */

    /* drop_last */
    assert_int_equal(fedc_batch_iter_init(&it, idx, 23, 10, 1, &err), FEDC_OK);
    assert_int_equal(fedc_batch_iter_num_batches(&it), 2);
    fedc_batch_iter_epoch(&it, &rng);
    assert_int_equal(fedc_batch_iter_next(&it, &b), 10);
    assert_int_equal(fedc_batch_iter_next(&it, &b), 10);
    assert_int_equal(fedc_batch_iter_next(&it, &b), 0);
    assert_null(b);
    fedc_batch_iter_fini(&it);
    /* empty index array */
    assert_int_equal(fedc_batch_iter_init(&it, NULL, 0, 4, 0, &err), FEDC_OK);
    fedc_batch_iter_epoch(&it, &rng);
    assert_int_equal(fedc_batch_iter_next(&it, &b), 0);
    assert_int_equal(fedc_batch_iter_num_batches(&it), 0);
    fedc_batch_iter_fini(&it);
}

/* A client's batches through the whole chain: partition -> iterator -> gather. */
static void test_partition_batches_gather(void **state)
{
    (void)state;
    fedc_dataset *ds = make(200, 2);
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.num_clients = 4;
    fedc_partition *p = NULL;
    fedc_err err;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_OK);
    size_t n;
    const uint32_t *idx = fedc_partition_indices(p, 2, FEDC_SPLIT_TRAIN, &n);
    fedc_batch_iter it;
    assert_int_equal(fedc_batch_iter_init(&it, idx, n, 8, 0, &err), FEDC_OK);
    fedc_rng rng;
    fedc_rng_init(&rng, 1, 5, 2, FEDC_RNG_SHUFFLE);
    fedc_batch_iter_epoch(&it, &rng);
    const uint32_t *b;
    size_t m;
    float x[16];
    int32_t y[8];
    double sum = 0, want = 0;
    while ((m = fedc_batch_iter_next(&it, &b)) > 0) {
        fedc_data_gather(ds, b, m, x, y);
        for (size_t i = 0; i < m; i++) {
            assert_true(x[2 * i] == (float)(b[i] * 100));
            assert_int_equal(y[i], (int32_t)(b[i] % 3));
            sum += x[2 * i + 1];
        }
    }
    for (size_t i = 0; i < n; i++) want += idx[i] * 100 + 1;
    assert_close(sum, want, 1e-12, 0);
    fedc_batch_iter_fini(&it);
    fedc_partition_destroy(p);
    fedc_dataset_destroy(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dataset_api),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_partition_batches_gather),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
