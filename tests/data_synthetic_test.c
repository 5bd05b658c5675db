/* FedProx Synthetic(alpha, beta) and its IID variant: the published structure (30 users,
 * 60 features, 10 classes, n_k >= 50, 90/10 split per user), the feature covariance
 * diag(j^-1.2), determinism by seed, label skew across users and the feature shift beta. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

static void load(const char *spec, fedc_dataset **tr, fedc_dataset **te)
{
    fedc_err err;
    fedc_err_clear(&err);
    if (fedc_data_load(spec, tr, te, &err) != FEDC_OK) fail_msg("%s: %s", spec, err.msg);
}

static void test_structure(void **state)
{
    (void)state;
    fedc_dataset *tr, *te;
    load("synthetic:1,1", &tr, &te);
    assert_string_equal(fedc_dataset_name(tr), "synthetic(1,1)");
    assert_int_equal(fedc_dataset_dim(tr), 60);
    assert_int_equal(fedc_dataset_num_classes(tr), 10);
    assert_int_equal(fedc_dataset_num_users(tr), 30);
    assert_int_equal(fedc_dataset_num_users(te), 30);
    assert_string_equal(fedc_dataset_user_name(tr, 7), "f_00007");
    size_t ntr[30] = {0}, nte[30] = {0};
    for (size_t i = 0; i < fedc_dataset_n(tr); i++) ntr[fedc_dataset_user_ids(tr)[i]]++;
    for (size_t i = 0; i < fedc_dataset_n(te); i++) nte[fedc_dataset_user_ids(te)[i]]++;
    for (int k = 0; k < 30; k++) {
        size_t n = ntr[k] + nte[k];
        assert_true(n >= 50);
        assert_int_equal(ntr[k], (size_t)(0.9 * (double)n)); /* int(0.9 n), as in FedProx */
    }
    /* user ids are grouped (user 0's samples first) */
    for (size_t i = 1; i < fedc_dataset_n(tr); i++)
        assert_true(fedc_dataset_user_ids(tr)[i] >= fedc_dataset_user_ids(tr)[i - 1]);
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);

    load("synthetic:0.5,0.5?users=40&seed=3", &tr, &te);
    assert_int_equal(fedc_dataset_num_users(tr), 40);
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);
}

/* Same seed: identical bytes. Other seed: different data. ",seed=" and "?seed=" agree. */
static void test_determinism(void **state)
{
    (void)state;
    const char *specs[4] = {"synthetic:1,1,seed=5", "synthetic:1,1?seed=5", "synthetic:1,1?seed=6",
                            "synthetic-iid:seed=5"};
    char hash[4][65];
    size_t n[4];
    for (int s = 0; s < 4; s++) {
        fedc_dataset *tr;
        load(specs[s], &tr, NULL);
        n[s] = fedc_dataset_n(tr);
        fedc_vec_sha256_hex(n[s] * 60, fedc_dataset_x(tr), hash[s]);
        fedc_dataset_destroy(tr);
    }
    assert_int_equal(n[0], n[1]);
    assert_string_equal(hash[0], hash[1]);
    assert_string_not_equal(hash[0], hash[2]);
    assert_string_not_equal(hash[0], hash[3]);
    /* the sizes come from the same stream in both variants */
    assert_int_equal(n[0], n[3]);
}

/* IID variant: x ~ N(0, diag(j^-1.2)), so feature j's variance is (j+1)^-1.2 and its mean 0. */
static void test_iid_covariance(void **state)
{
    (void)state;
    fedc_dataset *tr;
    load("synthetic-iid?seed=1", &tr, NULL);
    size_t n = fedc_dataset_n(tr);
    assert_true(n > 5000);
    const float *x = fedc_dataset_x(tr);
    int js[3] = {0, 9, 59};
    for (int t = 0; t < 3; t++) {
        int j = js[t];
        double m = 0, v = 0;
        for (size_t i = 0; i < n; i++) m += x[i * 60 + j];
        m /= (double)n;
        for (size_t i = 0; i < n; i++) v += pow(x[i * 60 + j] - m, 2);
        v /= (double)n;
        double want = pow(j + 1, -1.2);
        assert_close(v, want, 0.1, 0);       /* 10%: ~5 standard errors at n > 5000 */
        assert_close(m, 0.0, 0, 5 * sqrt(want / (double)n));
    }
    /* one labelling function for all: every class is used */
    size_t counts[10];
    fedc_dataset_label_counts(tr, counts);
    int used = 0;
    for (int c = 0; c < 10; c++) used += counts[c] > 0;
    assert_true(used >= 5);
    fedc_dataset_destroy(tr);
}

/* Label skew across users (natural partition), and the variance across users of a user's
 * mean feature value. */
static void user_stats(const char *spec, double *tv, double *mean_var)
{
    fedc_dataset *tr;
    load(spec, &tr, NULL);
    fedc_partition_opts po;
    fedc_partition_opts_init(&po);
    po.scheme = FEDC_PARTITION_NATURAL;
    po.num_clients = 0;
    fedc_partition *p = NULL;
    fedc_err err;
    assert_int_equal(fedc_partition_create(tr, &po, &p, &err), FEDC_OK);
    assert_int_equal(fedc_partition_num_clients(p), fedc_dataset_num_users(tr));
    fedc_partition_stats st;
    fedc_partition_get_stats(p, &st);
    fedc_partition_destroy(p);
    *tv = st.mean_tv;

    size_t nu = fedc_dataset_num_users(tr);
    double *sum = calloc(nu, sizeof *sum), *cnt = calloc(nu, sizeof *cnt);
    for (size_t i = 0; i < fedc_dataset_n(tr); i++) {
        int32_t u = fedc_dataset_user_ids(tr)[i];
        for (int j = 0; j < 60; j++) sum[u] += fedc_dataset_sample(tr, i)[j];
        cnt[u] += 60;
    }
    double m = 0, v = 0;
    for (size_t u = 0; u < nu; u++) m += (sum[u] /= cnt[u]);
    m /= (double)nu;
    for (size_t u = 0; u < nu; u++) v += (sum[u] - m) * (sum[u] - m);
    free(sum);
    free(cnt);
    fedc_dataset_destroy(tr);
    *mean_var = v / (double)(nu - 1);
}

/* With one W for everyone (IID variant) users' label mixes differ only by sampling noise; with
 * a W_k per user (even alpha = beta = 0) they differ a lot. A user's mean feature is
 * B_k + N(0, 1/60) with B_k ~ N(0, beta^2): its variance across users is beta^2 + 1/60
 * (0 for the IID variant). Seeds 0 and 1; bounds are several standard errors wide. */
static void test_heterogeneity(void **state)
{
    (void)state;
    for (int seed = 0; seed < 2; seed++) {
        char spec[64];
        double tv_iid, tv_00, tv_02, v_iid, v0, v2;
        snprintf(spec, sizeof spec, "synthetic-iid?seed=%d", seed);
        user_stats(spec, &tv_iid, &v_iid);
        snprintf(spec, sizeof spec, "synthetic:0,0?seed=%d", seed);
        user_stats(spec, &tv_00, &v0);
        snprintf(spec, sizeof spec, "synthetic:0,2?seed=%d&users=60", seed);
        user_stats(spec, &tv_02, &v2);
        assert_true(tv_iid < 0.2);
        assert_true(tv_00 > 0.5);
        assert_true(v_iid < 0.001);
        assert_true(v0 > 0.005 && v0 < 0.05);
        assert_true(v2 > 2.2 && v2 < 6.5);
    }
}

/* Each allocation of the load failing in turn: FEDC_ERR_NOMEM, nothing leaked. */
static void test_alloc_failures(void **state)
{
    (void)state;
    assert_true(tu_alloc_torture_load("synthetic:1,1?users=3") > 5);
    assert_true(tu_alloc_torture_load("synthetic-iid?users=2&limit=10") > 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_iid_covariance),
        cmocka_unit_test(test_heterogeneity),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
