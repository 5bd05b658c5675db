/* The allocation path: alignment, byte counting, and injected failures with no leaks. */
#include "testutil.h"

#include <string.h>

#include "fedc/fedc.h"

static void test_alignment_and_counting(void **state)
{
    (void)state;
    fedc_alloc_stats s0, s1, s2;
    fedc_alloc_reset_stats();
    fedc_alloc_get_stats(&s0);
    void *a = fedc_malloc(100), *b = fedc_calloc(10, 1000), *z = fedc_malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(z);
    assert_ptr_not_equal(a, z);
    assert_int_equal((uintptr_t)a % FEDC_ALIGN, 0);
    assert_int_equal((uintptr_t)b % FEDC_ALIGN, 0);
    for (int i = 0; i < 10000; i++) assert_int_equal(((unsigned char *)b)[i], 0);
    fedc_alloc_get_stats(&s1);
    assert_int_equal(s1.current_bytes - s0.current_bytes, 100 + 10000);
    assert_int_equal(s1.allocations - s0.allocations, 3);
    a = fedc_realloc(a, 5000);
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % FEDC_ALIGN, 0);
    fedc_alloc_get_stats(&s2);
    assert_int_equal(s2.current_bytes - s0.current_bytes, 5000 + 10000);
    fedc_free(a);
    fedc_free(b);
    fedc_free(z);
    fedc_free(NULL);
    fedc_alloc_get_stats(&s2);
    assert_int_equal(s2.current_bytes, s0.current_bytes);
    assert_true(s2.peak_bytes >= s0.current_bytes + 15000);
    /* overflow of count * size is refused, not wrapped */
    assert_null(fedc_calloc(SIZE_MAX / 2, 4));
    char *s = fedc_strdup("federated");
    assert_string_equal(s, "federated");
    fedc_free(s);
}

static void test_injected_failure(void **state)
{
    (void)state;
    fedc_alloc_fail_after(2, 0);
    void *a = fedc_malloc(8);
    void *b = fedc_malloc(8); /* the 2nd: fails */
    void *c = fedc_malloc(8); /* not sticky: works again */
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    fedc_free(a);
    fedc_free(c);
    fedc_alloc_fail_after(1, 1);
    assert_null(fedc_malloc(8));
    assert_null(fedc_malloc(8));
    fedc_alloc_fail_after(0, 0);
    a = fedc_malloc(8);
    assert_non_null(a);
    fedc_free(a);
}

/* Builds objects with several allocations each and fails every allocation in turn (curl's
 * torture test): each failure must surface as a clean error and leak nothing. */
static int build_config_layout(void)
{
    fedc_config *cfg = fedc_config_create();
    if (!cfg) return FEDC_ERR_NOMEM;
    fedc_status st = fedc_config_set(cfg, "train.lr=0.1", "--set");
    fedc_layout *l = fedc_layout_create();
    if (st == FEDC_OK && !l) st = FEDC_ERR_NOMEM;
    for (int i = 0; st == FEDC_OK && i < 20; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d.weight", i);
        int64_t shape[2] = {3, 4};
        st = fedc_layout_add(l, name, 2, shape, NULL);
    }
    fedc_layout *copy = st == FEDC_OK ? fedc_layout_copy(l) : NULL;
    if (st == FEDC_OK && !copy) st = FEDC_ERR_NOMEM;
    fedc_vec *v = st == FEDC_OK ? fedc_vec_create(1000) : NULL;
    if (st == FEDC_OK && !v) st = FEDC_ERR_NOMEM;
    fedc_config *dup = st == FEDC_OK ? fedc_config_dup(cfg) : NULL;
    if (st == FEDC_OK && !dup) st = FEDC_ERR_NOMEM;
    fedc_config_destroy(dup);
    fedc_vec_destroy(v);
    fedc_layout_destroy(copy);
    fedc_layout_destroy(l);
    fedc_config_destroy(cfg);
    return st;
}

static void test_torture(void **state)
{
    (void)state;
    fedc_alloc_stats before, after;
    fedc_alloc_get_stats(&before);
    assert_int_equal(build_config_layout(), FEDC_OK);
    fedc_alloc_reset_stats();
    assert_int_equal(build_config_layout(), FEDC_OK);
    fedc_alloc_get_stats(&after);
    uint64_t total = after.allocations;
    assert_true(total > 10);
    for (uint64_t n = 1; n <= total; n++) {
        fedc_alloc_fail_after(n, 0);
        int st = build_config_layout();
        fedc_alloc_fail_after(0, 0);
        assert_int_equal(st, FEDC_ERR_NOMEM);
        fedc_alloc_get_stats(&after);
        assert_int_equal(after.current_bytes, before.current_bytes);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_counting),
        cmocka_unit_test(test_injected_failure),
        cmocka_unit_test(test_torture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
