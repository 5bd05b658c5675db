/* Partitions: every sample assigned exactly once, sizes as asked, per-client train/test splits,
 * Dirichlet skew growing as alpha shrinks, the FedAvg shard split, quantity skew, natural
 * partitions, determinism by seed, histograms, the SVG picture, and refused options. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

/* n samples, label i % classes (balanced), feature = i, users: i % users (0: none). */
static fedc_dataset *make(size_t n, int32_t classes, size_t users)
{
    int64_t shape[1] = {1};
    fedc_dataset *ds = NULL;
    fedc_err err;
    assert_int_equal(fedc_dataset_create(n, 1, shape, classes, "toy", &ds, &err), FEDC_OK);
    for (size_t i = 0; i < n; i++) {
        fedc_dataset_x_mut(ds)[i] = (float)i;
        fedc_dataset_y_mut(ds)[i] = (int32_t)(i % (size_t)classes);
    }
    if (users) {
        int32_t *ids = malloc(n * sizeof *ids);
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(i % users);
        assert_int_equal(fedc_dataset_set_users(ds, users, NULL, ids, &err), FEDC_OK);
        free(ids);
    }
    return ds;
}

static fedc_partition *part(const fedc_dataset *ds, const fedc_partition_opts *o)
{
    fedc_partition *p = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    if (fedc_partition_create(ds, o, &p, &err) != FEDC_OK)
        fail_msg("%s partition: %s", fedc_partition_scheme_name(o->scheme), err.msg);
    return p;
}

/* Every sample exactly once; lists sorted; histograms match the labels; test sizes as the
 * rounding rule says. */
static void check_invariants(const fedc_dataset *ds, const fedc_partition *p, double test_fraction)
{
    size_t n = fedc_dataset_n(ds);
    int32_t nc = fedc_dataset_num_classes(ds);
    unsigned char *seen = calloc(n, 1);
    uint32_t *hist = calloc((size_t)nc, sizeof *hist);
    for (uint32_t k = 0; k < fedc_partition_num_clients(p); k++) {
        size_t total = fedc_partition_size(p, k, FEDC_SPLIT_TRAIN) + fedc_partition_size(p, k, FEDC_SPLIT_TEST);
        assert_true(total > 0);
        size_t want_test = (size_t)floor(test_fraction * (double)total + 0.5);
        if (want_test > total - 1) want_test = total - 1;
        assert_int_equal(fedc_partition_size(p, k, FEDC_SPLIT_TEST), want_test);
        for (int s = 0; s < 2; s++) {
            size_t m;
            const uint32_t *idx = fedc_partition_indices(p, k, (fedc_split)s, &m);
            memset(hist, 0, (size_t)nc * sizeof *hist);
            for (size_t i = 0; i < m; i++) {
                assert_true(idx[i] < n);
                assert_int_equal(seen[idx[i]], 0);
                seen[idx[i]] = 1;
                if (i) assert_true(idx[i] > idx[i - 1]);
                hist[fedc_dataset_y(ds)[idx[i]]]++;
            }
            assert_memory_equal(hist, fedc_partition_label_counts(p, k, (fedc_split)s),
                                (size_t)nc * sizeof *hist);
        }
    }
    for (size_t i = 0; i < n; i++) assert_int_equal(seen[i], 1);
    free(seen);
    free(hist);
}

static void test_iid(void **state)
{
    (void)state;
    fedc_dataset *ds = make(1003, 10, 0);
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.num_clients = 10;
    fedc_partition *p = part(ds, &o);
    check_invariants(ds, p, 0.1);
    for (uint32_t k = 0; k < 10; k++) {
        size_t total = fedc_partition_size(p, k, FEDC_SPLIT_TRAIN) + fedc_partition_size(p, k, FEDC_SPLIT_TEST);
        assert_true(total == 100 || total == 101);
        assert_int_equal(fedc_partition_size(p, k, FEDC_SPLIT_TEST), 10);
    }
    fedc_partition_stats st;
    fedc_partition_get_stats(p, &st);
    assert_int_equal(st.min_size, 100);
    assert_int_equal(st.max_size, 101);
    assert_true(st.mean_tv < 0.15);
    assert_true(st.mean_classes > 9.5);
    fedc_partition_destroy(p);
    /* test_fraction 0: no test sets */
    o.test_fraction = 0;
    p = part(ds, &o);
    check_invariants(ds, p, 0);
    assert_int_equal(fedc_partition_size(p, 3, FEDC_SPLIT_TEST), 0);
    fedc_partition_destroy(p);
    fedc_dataset_destroy(ds);
}

static int same_partition(const fedc_partition *a, const fedc_partition *b)
{
    if (fedc_partition_num_clients(a) != fedc_partition_num_clients(b)) return 0;
    for (uint32_t k = 0; k < fedc_partition_num_clients(a); k++)
        for (int s = 0; s < 2; s++) {
            size_t na, nb;
            const uint32_t *ia = fedc_partition_indices(a, k, (fedc_split)s, &na);
            const uint32_t *ib = fedc_partition_indices(b, k, (fedc_split)s, &nb);
            if (na != nb || memcmp(ia, ib, na * sizeof *ia) != 0) return 0;
        }
    return 1;
}

static void test_determinism(void **state)
{
    (void)state;
    fedc_dataset *ds = make(2000, 10, 40);
    for (int s = 0; s < FEDC_PARTITION_SCHEME_COUNT_; s++) {
        fedc_partition_opts o;
        fedc_partition_opts_init(&o);
        o.scheme = (fedc_partition_scheme)s;
        o.num_clients = 20;
        o.seed = 11;
        fedc_partition *a = part(ds, &o), *b = part(ds, &o);
        check_invariants(ds, a, 0.1);
        assert_true(same_partition(a, b));
        o.seed = 12;
        fedc_partition *c = part(ds, &o);
        assert_false(same_partition(a, c));
        fedc_partition_destroy(a);
        fedc_partition_destroy(b);
        fedc_partition_destroy(c);
    }
    fedc_dataset_destroy(ds);
}

/* Hsu et al.'s Dirichlet split: the smaller alpha, the more skewed (mean TV distance to the
 * global label mix up, classes per client down); min_size holds. */
static void test_dirichlet(void **state)
{
    (void)state;
    fedc_dataset *ds = make(6000, 10, 0);
    double alphas[4] = {1000, 1.0, 0.3, 0.05};
    double tv[4], classes[4];
    for (int i = 0; i < 4; i++) {
        double sum_tv = 0, sum_cl = 0;
        for (uint64_t seed = 0; seed < 3; seed++) {
            fedc_partition_opts o;
            fedc_partition_opts_init(&o);
            o.scheme = FEDC_PARTITION_DIRICHLET;
            o.num_clients = 20;
            o.alpha = alphas[i];
            o.min_size = 20;
            o.seed = seed;
            fedc_partition *p = part(ds, &o);
            check_invariants(ds, p, 0.1);
            for (uint32_t k = 0; k < 20; k++) assert_true(fedc_partition_size(p, k, FEDC_SPLIT_TRAIN) >= 20);
            fedc_partition_stats st;
            fedc_partition_get_stats(p, &st);
            sum_tv += st.mean_tv;
            sum_cl += st.mean_classes;
            fedc_partition_destroy(p);
        }
        tv[i] = sum_tv / 3;
        classes[i] = sum_cl / 3;
    }
    for (int i = 1; i < 4; i++) {
        assert_true(tv[i] > tv[i - 1]);
        assert_true(classes[i] <= classes[i - 1]);
    }
    assert_true(tv[0] < 0.05);  /* alpha 1000: nearly IID */
    assert_true(tv[3] > 0.6);   /* alpha 0.05: a few classes per client */
    assert_true(classes[3] < 5);

    /* An unreachable minimum is an error naming min_size, not a hang. */
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_DIRICHLET;
    o.num_clients = 100;
    o.alpha = 0.001;
    o.min_size = 50;
    o.max_attempts = 5;
    fedc_partition *p = NULL;
    fedc_err err;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_RANGE);
    assert_null(p);
    assert_non_null(strstr(err.msg, "min_size"));
    o.min_size = 100; /* 100 clients x 100+ samples > 6000 */
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_RANGE);
    fedc_dataset_destroy(ds);
}

/* McMahan et al.: sort by label, 200 shards of 30 here (300 on MNIST), 2 per client: each
 * client has exactly 60 samples of at most 2 classes. */
static void test_shards(void **state)
{
    (void)state;
    fedc_dataset *ds = make(6000, 10, 0);
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_SHARDS;
    o.num_clients = 100;
    o.shards_per_client = 2;
    o.test_fraction = 0;
    fedc_partition *p = part(ds, &o);
    check_invariants(ds, p, 0);
    int two = 0;
    for (uint32_t k = 0; k < 100; k++) {
        assert_int_equal(fedc_partition_size(p, k, FEDC_SPLIT_TRAIN), 60);
        const uint32_t *h = fedc_partition_label_counts(p, k, FEDC_SPLIT_TRAIN);
        int cls = 0;
        for (int c = 0; c < 10; c++) {
            cls += h[c] > 0;
            assert_true(h[c] == 0 || h[c] == 30 || h[c] == 60);
        }
        assert_true(cls >= 1 && cls <= 2);
        two += cls == 2;
    }
    assert_true(two > 50); /* most clients get two different classes */
    fedc_partition_destroy(p);
    /* sizes that do not divide: shards differ by at most one sample, all assigned */
    fedc_dataset *odd = make(1001, 7, 0);
    o.num_clients = 13;
    o.shards_per_client = 3;
    o.test_fraction = 0.2;
    p = part(odd, &o);
    check_invariants(odd, p, 0.2);
    fedc_partition_stats st;
    fedc_partition_get_stats(p, &st);
    assert_true(st.max_size - st.min_size <= 3);
    fedc_partition_destroy(p);
    /* more shards than samples */
    o.num_clients = 600;
    o.shards_per_client = 2;
    fedc_err err;
    assert_int_equal(fedc_partition_create(odd, &o, &p, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "shards"));
    fedc_dataset_destroy(odd);
    fedc_dataset_destroy(ds);
}

static void test_quantity(void **state)
{
    (void)state;
    fedc_dataset *ds = make(5000, 10, 0);
    double sd_prev = -1;
    double sigmas[3] = {0, 0.5, 2.0};
    for (int i = 0; i < 3; i++) {
        fedc_partition_opts o;
        fedc_partition_opts_init(&o);
        o.scheme = FEDC_PARTITION_QUANTITY;
        o.num_clients = 25;
        o.sigma = sigmas[i];
        o.min_size = 30;
        fedc_partition *p = part(ds, &o);
        check_invariants(ds, p, 0.1);
        fedc_partition_stats st;
        fedc_partition_get_stats(p, &st);
        for (uint32_t k = 0; k < 25; k++) assert_true(fedc_partition_size(p, k, FEDC_SPLIT_TRAIN) >= 30);
        assert_true(st.std_size > sd_prev);
        if (i == 0) assert_true(st.max_size - st.min_size <= 1); /* sigma 0: equal sizes */
        if (i == 2) assert_true(st.max_size > 4 * st.min_size);
        assert_true(st.mean_tv < 0.3); /* labels stay IID */
        sd_prev = st.std_size;
        fedc_partition_destroy(p);
    }
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_QUANTITY;
    o.num_clients = 100;
    o.min_size = 60;
    fedc_partition *p = NULL;
    fedc_err err;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "min_size"));
    fedc_dataset_destroy(ds);
}

static void test_natural(void **state)
{
    (void)state;
    fedc_dataset *ds = make(1000, 10, 40);
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_NATURAL;
    o.num_clients = 0;
    fedc_partition *p = part(ds, &o);
    assert_int_equal(fedc_partition_num_clients(p), 40);
    check_invariants(ds, p, 0.1);
    for (uint32_t k = 0; k < 40; k++) {
        for (int s = 0; s < 2; s++) {
            size_t m;
            const uint32_t *idx = fedc_partition_indices(p, k, (fedc_split)s, &m);
            for (size_t i = 0; i < m; i++) assert_int_equal(fedc_dataset_user_ids(ds)[idx[i]], (int32_t)k);
        }
        assert_int_equal(fedc_partition_size(p, k, FEDC_SPLIT_TRAIN) + fedc_partition_size(p, k, FEDC_SPLIT_TEST), 25);
    }
    fedc_partition_destroy(p);
    /* 7 clients from 40 users: users are not split; 5 or 6 users (125..150 samples) each */
    o.num_clients = 7;
    p = part(ds, &o);
    check_invariants(ds, p, 0.1);
    for (uint32_t k = 0; k < 7; k++) {
        size_t total = fedc_partition_size(p, k, FEDC_SPLIT_TRAIN) + fedc_partition_size(p, k, FEDC_SPLIT_TEST);
        assert_true(total == 125 || total == 150);
    }
    fedc_partition_destroy(p);
    fedc_err err;
    o.num_clients = 41;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_INVALID);
    fedc_dataset *nouser = make(100, 2, 0);
    o.num_clients = 2;
    assert_int_equal(fedc_partition_create(nouser, &o, &p, &err), FEDC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "user ids"));
    fedc_dataset_destroy(nouser);
    fedc_dataset_destroy(ds);
}

static void test_bad_options(void **state)
{
    (void)state;
    fedc_dataset *ds = make(50, 5, 0);
    fedc_partition_opts o;
    fedc_partition *p = NULL;
    fedc_err err;
    fedc_partition_opts_init(&o);
    o.num_clients = 0;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_INVALID);
    o.num_clients = 51;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "51 clients"));
    o.num_clients = 5;
    o.test_fraction = 1.0;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_INVALID);
    o.test_fraction = NAN;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_INVALID);
    o.test_fraction = 0.1;
    o.scheme = FEDC_PARTITION_DIRICHLET;
    o.alpha = 0;
    assert_int_equal(fedc_partition_create(ds, &o, &p, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "alpha"));
    assert_null(p);
    /* names */
    fedc_partition_scheme s;
    assert_int_equal(fedc_partition_scheme_parse("dirichlet", &s), 0);
    assert_int_equal(s, FEDC_PARTITION_DIRICHLET);
    assert_int_equal(fedc_partition_scheme_parse("pathological", &s), -1);
    assert_string_equal(fedc_partition_scheme_name(FEDC_PARTITION_SHARDS), "shards");
    fedc_dataset_destroy(ds);
}

/* The SVG is a complete document with one row per client and the legend. */
static void test_svg(void **state)
{
    (void)state;
    fedc_dataset *ds = make(600, 6, 0);
    const char *names[6] = {"a&b", "b", "c", "d", "e", "f"};
    fedc_err err;
    assert_int_equal(fedc_dataset_set_class_names(ds, names, &err), FEDC_OK);
    fedc_partition_opts o;
    fedc_partition_opts_init(&o);
    o.scheme = FEDC_PARTITION_SHARDS;
    o.num_clients = 12;
    fedc_partition *p = part(ds, &o);
    char *dir = tu_tempdir("svg");
    char path[1024];
    snprintf(path, sizeof path, "%s/p.svg", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fedc_partition_write_svg(p, ds, "toy <shards>", f, &err), FEDC_OK);
    fclose(f);
    size_t n;
    char *svg = tu_read_file(path, &n);
    assert_non_null(svg);
    assert_non_null(strstr(svg, "<svg"));
    assert_non_null(strstr(svg, "</svg>"));
    assert_non_null(strstr(svg, "toy &lt;shards&gt;"));
    assert_non_null(strstr(svg, "a&amp;b"));
    assert_null(strstr(svg, "a&b"));
    assert_non_null(strstr(svg, ">class<"));
    assert_non_null(strstr(svg, ">client<"));
    /* one training bar per client, with its tooltip */
    int bars = 0;
    for (const char *q = svg; (q = strstr(q, "<title>client ")) != NULL; q++)
        if (strstr(q, " train, ") && strstr(q, " train, ") < strchr(q, '\n')) bars++;
    assert_int_equal(bars, 12);
    /* balanced tags */
    int open = 0, close = 0;
    for (const char *q = svg; (q = strstr(q, "<rect")) != NULL; q++) open++;
    for (const char *q = svg; (q = strstr(q, "</rect>")) != NULL; q++) close++;
    for (const char *q = svg; (q = strstr(q, "/>")) != NULL; q++) close++;
    assert_true(open > 12 && close >= open);
    free(svg);
    tu_rmtree(dir);
    free(dir);
    fedc_partition_destroy(p);
    fedc_dataset_destroy(ds);
}

typedef struct partition_case {
    const fedc_dataset *ds;
    fedc_partition_opts opts;
} partition_case;

static fedc_status partition_op(void *ctx, fedc_err *err)
{
    const partition_case *pc = ctx;
    fedc_partition *p = NULL;
    fedc_status st = fedc_partition_create(pc->ds, &pc->opts, &p, err);
    if (st != FEDC_OK) assert_null(p);
    fedc_partition_destroy(p);
    return st;
}

/* Each allocation of fedc_partition_create failing in turn: NOMEM, nothing leaked. */
static void test_alloc_failures(void **state)
{
    (void)state;
    fedc_dataset *ds = make(300, 5, 12);
    for (int scheme = 0; scheme < FEDC_PARTITION_SCHEME_COUNT_; scheme++) {
        partition_case pc = {ds, {0}};
        fedc_partition_opts_init(&pc.opts);
        pc.opts.scheme = (fedc_partition_scheme)scheme;
        pc.opts.num_clients = 6;
        pc.opts.min_size = 5;
        assert_true(tu_alloc_torture(partition_op, &pc, 100) >= 4);
    }
    fedc_dataset_destroy(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iid),          cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_dirichlet),    cmocka_unit_test(test_shards),
        cmocka_unit_test(test_quantity),     cmocka_unit_test(test_natural),
        cmocka_unit_test(test_bad_options),  cmocka_unit_test(test_svg),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
