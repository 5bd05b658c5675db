/*
 * Folding a vector into the exact accumulator by range, as a server folds an upload chunk by
 * chunk (fedci_accum_fold_range / _unfold_range / _expect_prefolded, src/fl/accum.c): the sums
 * and trailer must be bit-identical to a whole-vector fedc_accum_add, whatever the pieces; an
 * unfold must restore the accumulator exactly; an add that refuses a prefolded vector (the
 * range bound, another weight) must touch nothing, so that unfolding it leaves what an ordinary
 * refused add leaves.
 */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/accum.h"
#include "fl/strategy_internal.h"

#define N 2500 /* two whole blocks of 1024 and a tail */

static void fill(float *x, size_t n, uint32_t seed, float scale)
{
    uint32_t h = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        x[i] = ((float)(h >> 8) * 0x1p-24f - 0.5f) * scale;
    }
}

static void assert_same(fedc_accum *a, fedc_accum *b)
{
    size_t la, lb;
    const int64_t *ra = fedc_accum_raw(a, &la), *rb = fedc_accum_raw(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ra, rb, la * sizeof *ra);
}

/* Folds x in the given pieces (block-aligned starts), then announces it. */
static void fold_pieces(fedc_accum *acc, double w, const float *x, const size_t *cuts, size_t k,
                        double *mx)
{
    size_t blk = fedci_accum_range_block();
    *mx = 0;
    size_t off = 0;
    for (size_t i = 0; i <= k; i++) {
        size_t end = i < k ? cuts[i] : N;
        assert_true(off % blk == 0);
        assert_int_equal(fedci_accum_fold_range(acc, w, off, x + off, end - off, mx, NULL),
                         FEDC_OK);
        off = end;
    }
}

static void test_ranges_equal_whole_add(void **state)
{
    (void)state;
    assert_int_equal(fedci_accum_range_block(), 1024);
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    fill(x, N, 1, 0.02f);
    fill(y, N, 2, 3.0f);
    fedc_accum *whole, *ranged;
    assert_int_equal(fedc_accum_create(N, &whole, NULL), FEDC_OK);
    assert_int_equal(fedc_accum_create(N, &ranged, NULL), FEDC_OK);
    const size_t cut_sets[3][2] = {{1024, 2048}, {2048, 2048}, {0, 1024}};
    for (int c = 0; c < 3; c++) {
        fedc_accum_reset(whole);
        fedc_accum_reset(ranged);
        assert_int_equal(fedc_accum_add(whole, 7, y, NULL), FEDC_OK);
        assert_int_equal(fedc_accum_add(ranged, 7, y, NULL), FEDC_OK);
        assert_int_equal(fedc_accum_add(whole, 123, x, NULL), FEDC_OK);
        double mx;
        fold_pieces(ranged, 123, x, cut_sets[c], 2, &mx);
        fedci_accum_expect_prefolded(ranged, x, 123, mx);
        assert_int_equal(fedc_accum_add(ranged, 123, x, NULL), FEDC_OK); /* records only */
        assert_int_equal(fedci_accum_prefolded_taken(), 1);
        assert_same(whole, ranged);
        assert_int_equal(fedc_accum_count(ranged), 2);
        /* the announcement is spent: the next add of the same vector folds it again */
        assert_int_equal(fedc_accum_add(whole, 123, x, NULL), FEDC_OK);
        assert_int_equal(fedc_accum_add(ranged, 123, x, NULL), FEDC_OK);
        assert_int_equal(fedci_accum_prefolded_taken(), 0);
        assert_same(whole, ranged);
    }
    /* announced with one weight, added with another: refused, nothing touched, not taken */
    fedc_accum_reset(whole);
    fedc_accum_reset(ranged);
    double mx;
    const size_t cuts[1] = {1024};
    fold_pieces(ranged, 123, x, cuts, 1, &mx);
    fedci_accum_expect_prefolded(ranged, x, 123, mx);
    fedc_err err;
    assert_int_equal(fedc_accum_add(ranged, 50, x, &err), FEDC_ERR_INTERNAL);
    assert_non_null(strstr(fedc_err_message(&err), "weight"));
    assert_int_equal(fedci_accum_prefolded_taken(), 0);
    fedci_accum_unfold_range(ranged, 123, 0, x, N); /* the caller takes its terms out */
    assert_same(whole, ranged);
    assert_int_equal(fedc_accum_count(ranged), 0);
    fedc_accum_destroy(whole);
    fedc_accum_destroy(ranged);
    free(x);
    free(y);
}

static void test_unfold_restores(void **state)
{
    (void)state;
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    fill(x, N, 3, 0.5f);
    fill(y, N, 4, 0.5f);
    fedc_accum *ref, *acc;
    assert_int_equal(fedc_accum_create(N, &ref, NULL), FEDC_OK);
    assert_int_equal(fedc_accum_create(N, &acc, NULL), FEDC_OK);
    assert_int_equal(fedc_accum_add(ref, 3, y, NULL), FEDC_OK);
    assert_int_equal(fedc_accum_add(acc, 3, y, NULL), FEDC_OK);
    double mx = 0;
    assert_int_equal(fedci_accum_fold_range(acc, 9, 0, x, 2048, &mx, NULL), FEDC_OK);
    assert_true(mx > 0);
    size_t len;
    int64_t *raw = fedc_accum_raw(acc, &len);
    int64_t *refraw = fedc_accum_raw(ref, &len);
    assert_true(memcmp(raw, refraw, 2048 * sizeof *raw) != 0); /* the terms are in */
    assert_memory_equal(raw + N, refraw + N, FEDC_ACCUM_TRAILER * sizeof *raw); /* no add yet */
    fedci_accum_unfold_range(acc, 9, 0, x, 2048);
    assert_same(ref, acc);
    /* not announced, or announced and not added: not taken, the caller unfolds */
    assert_int_equal(fedci_accum_prefolded_taken(), 0);
    mx = 0;
    assert_int_equal(fedci_accum_fold_range(acc, 9, 0, x, N, &mx, NULL), FEDC_OK);
    fedci_accum_expect_prefolded(acc, x, 9, mx);
    assert_int_equal(fedci_accum_prefolded_taken(), 0);
    fedci_accum_unfold_range(acc, 9, 0, x, N);
    assert_same(ref, acc);
    fedc_accum_destroy(ref);
    fedc_accum_destroy(acc);
    free(x);
    free(y);
}

static void test_refusals_leave_nothing(void **state)
{
    (void)state;
    float *x = malloc(N * sizeof *x);
    fill(x, N, 5, 1.0f);
    fedc_accum *ref, *acc;
    assert_int_equal(fedc_accum_create(N, &ref, NULL), FEDC_OK);
    assert_int_equal(fedc_accum_create(N, &acc, NULL), FEDC_OK);
    /* NaN in the second block: that range is left as it was, the message names the index */
    x[1500] = NAN;
    double mx = 0;
    fedc_err err;
    assert_int_equal(fedci_accum_fold_range(acc, 2, 0, x, 1024, &mx, NULL), FEDC_OK);
    assert_int_equal(fedci_accum_fold_range(acc, 2, 1024, x + 1024, N - 1024, &mx, &err),
                     FEDC_ERR_NONFINITE);
    assert_non_null(strstr(fedc_err_message(&err), "element 476")); /* within the range */
    fedci_accum_unfold_range(acc, 2, 0, x, 1024);
    assert_same(ref, acc);
    x[1500] = 0.25f;
    /* the range bound: three adds of weight 2^29 (|x| <= 0.5) fit, a fourth would not */
    const double w = 0x1p29;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fedc_accum_add(ref, w, x, NULL), FEDC_OK);
        assert_int_equal(fedc_accum_add(acc, w, x, NULL), FEDC_OK);
    }
    assert_int_equal(fedc_accum_add(ref, w, x, NULL), FEDC_ERR_RANGE);
    mx = 0;
    assert_int_equal(fedci_accum_fold_range(acc, w, 0, x, N, &mx, NULL), FEDC_OK);
    fedci_accum_expect_prefolded(acc, x, w, mx);
    assert_int_equal(fedc_accum_add(acc, w, x, &err), FEDC_ERR_RANGE);
    assert_int_equal(fedci_accum_prefolded_taken(), 0); /* refused: the terms are still in */
    fedci_accum_unfold_range(acc, w, 0, x, N);
    assert_same(ref, acc);
    fedc_accum_destroy(ref);
    fedc_accum_destroy(acc);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges_equal_whole_add),
        cmocka_unit_test(test_unfold_restores),
        cmocka_unit_test(test_refusals_leave_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
