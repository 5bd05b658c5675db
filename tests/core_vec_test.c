/* Flat vectors and layouts. */
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "fedc/fedc.h"

static void test_layout(void **state)
{
    (void)state;
    fedc_err err;
    fedc_layout *l = fedc_layout_create();
    int64_t w[2] = {200, 784}, b[1] = {200}, conv[4] = {32, 1, 5, 5};
    assert_int_equal(fedc_layout_add(l, "0.weight", 2, w, &err), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "0.bias", 1, b, &err), FEDC_OK);
    assert_int_equal(fedc_layout_add(l, "2.weight", 4, conv, &err), FEDC_OK);
    assert_int_equal(l->count, 3);
    assert_int_equal(l->total, 200 * 784 + 200 + 800);
    assert_int_equal(l->tensors[1].offset, 200 * 784);
    assert_int_equal(l->tensors[2].offset, 200 * 784 + 200);
    assert_int_equal(fedc_layout_find(l, "2.weight")->numel, 800);
    assert_null(fedc_layout_find(l, "nope"));
    /* bad input: duplicate, empty name, zero dim, too many dims */
    assert_int_equal(fedc_layout_add(l, "0.bias", 1, b, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "already"));
    assert_int_equal(fedc_layout_add(l, "", 1, b, &err), FEDC_ERR_INVALID);
    int64_t zero[2] = {3, 0};
    assert_int_equal(fedc_layout_add(l, "z", 2, zero, &err), FEDC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "dimension 1 is 0"));
    assert_int_equal(fedc_layout_add(l, "z", 7, w, &err), FEDC_ERR_INVALID);
    char longname[100];
    memset(longname, 'x', 99);
    longname[99] = 0;
    assert_int_equal(fedc_layout_add(l, longname, 1, b, &err), FEDC_ERR_INVALID);
    int64_t huge[2] = {INT64_MAX, INT64_MAX};
    assert_int_not_equal(fedc_layout_add(l, "huge", 2, huge, &err), FEDC_OK);
    assert_int_equal(l->count, 3); /* failures add nothing */

    fedc_layout *c = fedc_layout_copy(l);
    assert_true(fedc_layout_equal(l, c));
    c->tensors[2].shape[0] = 31;
    assert_false(fedc_layout_equal(l, c));
    fedc_layout_destroy(c);
    fedc_layout_destroy(l);
    fedc_layout_destroy(NULL);
}

static void test_vector_ops(void **state)
{
    (void)state;
    const size_t n = 10007; /* not a multiple of any block size */
    fedc_vec *x = fedc_vec_create(n), *y = fedc_vec_create(n);
    assert_int_equal((uintptr_t)x->data % FEDC_ALIGN, 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(x->data[i] == 0.0f);
        x->data[i] = (float)((double)i / n);
        y->data[i] = 1.0f;
    }
    /* dot and norm against closed forms: sum i/n = (n-1)/2, sum (i/n)^2 = (n-1)(2n-1)/(6n) */
    assert_close(fedc_vec_dot(n, x->data, y->data), (n - 1) / 2.0, 1e-9, 0);
    assert_close(fedc_vec_norm2(n, x->data), sqrt((n - 1) * (2.0 * n - 1) / (6.0 * n)), 1e-9, 0);
    fedc_vec_axpy(n, 2.0f, x->data, y->data); /* y = 1 + 2x */
    for (size_t i = 0; i < n; i += 997) assert_close(y->data[i], 1 + 2 * x->data[i], 1e-6, 0);
    fedc_vec_scale(n, 0.5f, y->data); /* y = 0.5 + x */
    fedc_vec *d = fedc_vec_create(n);
    fedc_vec_sub(n, y->data, x->data, d->data); /* 0.5 */
    for (size_t i = 0; i < n; i++) assert_close(d->data[i], 0.5, 1e-6, 0);
    fedc_vec_add(n, d->data, d->data, d->data);
    assert_close(fedc_vec_max_abs_diff(n, d->data, y->data) > 0, 1, 0, 0);
    fedc_vec_fill(n, 1.0f, y->data);
    assert_true(fedc_vec_max_abs_diff(n, d->data, y->data) < 1e-6f);
    fedc_vec *z = fedc_vec_dup(x);
    assert_int_equal(memcmp(z->data, x->data, n * sizeof(float)), 0);
    fedc_vec_zero(n, z->data);
    assert_close(fedc_vec_norm2(n, z->data), 0, 0, 0);
    /* large axpy (the BLAS path) agrees with the loop */
    const size_t big = 100000;
    fedc_vec *p = fedc_vec_create(big), *q = fedc_vec_create(big);
    for (size_t i = 0; i < big; i++) p->data[i] = (float)(i % 13) - 6.0f;
    fedc_vec_axpy(big, 0.25f, p->data, q->data);
    for (size_t i = 0; i < big; i += 1013) assert_true(q->data[i] == 0.25f * p->data[i]);
    fedc_vec_destroy(p);
    fedc_vec_destroy(q);
    fedc_vec_destroy(z);
    fedc_vec_destroy(d);
    fedc_vec_destroy(x);
    fedc_vec_destroy(y);
    fedc_vec_destroy(NULL);
}

static void test_nonfinite_and_hash(void **state)
{
    (void)state;
    float v[1000];
    for (int i = 0; i < 1000; i++) v[i] = (float)i - 500.0f;
    assert_int_equal(fedc_vec_find_nonfinite(1000, v), -1);
    v[777] = NAN;
    assert_int_equal(fedc_vec_find_nonfinite(1000, v), 777);
    v[300] = -INFINITY;
    assert_int_equal(fedc_vec_find_nonfinite(1000, v), 300);
    v[300] = 1e38f;
    v[777] = 3e38f; /* huge but finite */
    assert_int_equal(fedc_vec_find_nonfinite(1000, v), -1);
    assert_int_equal(fedc_vec_find_nonfinite(0, v), -1);
    /* every position of a block of 64 and of the tail (1000 = 15 x 64 + 40), every kind of
     * non-finite value; the largest finite and subnormal values are not */
    v[5] = FLT_MAX;
    v[6] = -FLT_MAX;
    v[7] = 1e-45f;
    v[8] = -0.0f;
    const float bad[4] = {INFINITY, -INFINITY, NAN, -NAN};
    for (int i = 0; i < 1000; i++) {
        float keep = v[i];
        v[i] = bad[i % 4];
        assert_int_equal(fedc_vec_find_nonfinite(1000, v), i);
        assert_int_equal(fedc_vec_find_nonfinite((size_t)i, v), -1);
        v[i] = keep;
    }
    assert_int_equal(fedc_vec_find_nonfinite(1000, v), -1);

    /* SHA-256 of the bytes: empty input and a known vector */
    char hex[65];
    fedc_vec_sha256_hex(0, v, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    float one = 1.0f; /* bytes 00 00 80 3f */
    fedc_vec_sha256_hex(1, &one, hex);
    /* python3: hashlib.sha256(struct.pack('<f', 1.0)).hexdigest() */
    assert_string_equal(hex, "e00e5eb9444182f352323374ef4e08ebcb784725fdd4fd612d7730540b3e0c8c");
    float one_again = 1.0f, other = nextafterf(1.0f, 2.0f);
    char hex2[65];
    fedc_vec_sha256_hex(1, &one_again, hex2);
    assert_string_equal(hex, hex2);
    fedc_vec_sha256_hex(1, &other, hex2);
    assert_string_not_equal(hex, hex2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_vector_ops),
        cmocka_unit_test(test_nonfinite_and_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
