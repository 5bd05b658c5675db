/* IDX loading (plain and gzip): values, shapes, directory lookup, and every malformed case the
 * loader must refuse with the file name and offset. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fedc/fedc.h"
#include "fedc/data.h"

/* An IDX image file: n images of r x c bytes, pixel (i, k) = (i * 7 + k) % 256. */
static size_t make_images(unsigned char *buf, uint32_t n, uint32_t r, uint32_t c)
{
    unsigned char *p = buf;
    *p++ = 0;
    *p++ = 0;
    *p++ = 0x08;
    *p++ = 3;
    uint32_t dims[3] = {n, r, c};
    for (int i = 0; i < 3; i++) {
        *p++ = (unsigned char)(dims[i] >> 24);
        *p++ = (unsigned char)(dims[i] >> 16);
        *p++ = (unsigned char)(dims[i] >> 8);
        *p++ = (unsigned char)dims[i];
    }
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < r * c; k++) *p++ = (unsigned char)((i * 7 + k) % 256);
    return (size_t)(p - buf);
}

/* An IDX label file: label i = i % classes. */
static size_t make_labels(unsigned char *buf, uint32_t n, uint32_t classes)
{
    unsigned char *p = buf;
    *p++ = 0;
    *p++ = 0;
    *p++ = 0x08;
    *p++ = 1;
    *p++ = (unsigned char)(n >> 24);
    *p++ = (unsigned char)(n >> 16);
    *p++ = (unsigned char)(n >> 8);
    *p++ = (unsigned char)n;
    for (uint32_t i = 0; i < n; i++) *p++ = (unsigned char)(i % classes);
    return (size_t)(p - buf);
}

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
    assert_int_equal(gzclose(f), Z_OK);
}

static char *join(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    assert_non_null(p);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* The standard 4-file set in dir (gz or plain), 20 train / 8 test images of 4x3, 5 classes. */
static void write_set(const char *dir, int gz)
{
    unsigned char buf[4096];
    size_t n;
    const char *names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    for (int i = 0; i < 4; i++) {
        n = i == 0 ? make_images(buf, 20, 4, 3)
            : i == 1 ? make_labels(buf, 20, 5)
            : i == 2 ? make_images(buf, 8, 4, 3)
                     : make_labels(buf, 8, 5);
        char name[128];
        snprintf(name, sizeof name, "%s%s", names[i], gz ? ".gz" : "");
        char *path = join(dir, name);
        if (gz)
            write_gz(path, buf, n);
        else
            tu_write_file(path, buf, n);
        free(path);
    }
}

static void check_set(fedc_dataset *tr, fedc_dataset *te)
{
    assert_int_equal(fedc_dataset_n(tr), 20);
    assert_int_equal(fedc_dataset_n(te), 8);
    int64_t shape[FEDC_DATA_MAX_DIMS];
    assert_int_equal(fedc_dataset_shape(tr, shape), 3);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], 4);
    assert_int_equal(shape[2], 3);
    assert_int_equal(fedc_dataset_dim(tr), 12);
    assert_int_equal(fedc_dataset_num_classes(tr), 5); /* max label + 1 */
    assert_int_equal(fedc_dataset_num_classes(te), 5);
    for (uint32_t i = 0; i < 20; i++) {
        assert_int_equal(fedc_dataset_y(tr)[i], (int32_t)(i % 5));
        for (uint32_t k = 0; k < 12; k++)
            assert_true(fedc_dataset_sample(tr, i)[k] == (float)((i * 7 + k) % 256) / 255.0f);
    }
    assert_true(fedc_dataset_sample(te, 7)[11] == (float)((7 * 7 + 11) % 256) / 255.0f);
    assert_null(fedc_dataset_user_ids(tr));
    assert_int_equal(fedc_dataset_num_users(tr), 0);
}

static void test_plain_and_gz_dir(void **state)
{
    (void)state;
    for (int gz = 0; gz < 2; gz++) {
        char *dir = tu_tempdir("idx");
        write_set(dir, gz);
        char spec[512];
        snprintf(spec, sizeof spec, "idx:%s", dir);
        fedc_dataset *tr = NULL, *te = NULL;
        fedc_err err;
        fedc_err_clear(&err);
        assert_int_equal(fedc_data_load(spec, &tr, &te, &err), FEDC_OK);
        check_set(tr, te);
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        /* explicit files, and test set not wanted */
        snprintf(spec, sizeof spec, "idx:%s/train-images-idx3-ubyte%s,%s/train-labels-idx1-ubyte%s",
                 dir, gz ? ".gz" : "", dir, gz ? ".gz" : "");
        assert_int_equal(fedc_data_load(spec, &tr, &te, &err), FEDC_OK);
        assert_null(te);
        assert_int_equal(fedc_dataset_n(tr), 20);
        fedc_dataset_destroy(tr);
        /* classes= raises the class count; limit keeps the first samples */
        snprintf(spec, sizeof spec, "idx:%s?classes=7&limit=6&test_limit=3", dir);
        assert_int_equal(fedc_data_load(spec, &tr, NULL, &err), FEDC_OK);
        assert_int_equal(fedc_dataset_num_classes(tr), 7);
        assert_int_equal(fedc_dataset_n(tr), 6);
        fedc_dataset_destroy(tr);
        tu_rmtree(dir);
        free(dir);
    }
}

/* Writes images/labels pair files (bytes given) and expects the load to fail. */
static void check_bad_pair(const char *dir, const unsigned char *img, size_t ni,
                           const unsigned char *lbl, size_t nl, int gz, fedc_status code,
                           const char *n1, const char *n2)
{
    char *ip = join(dir, gz ? "bad-img.gz" : "bad-img"), *lp = join(dir, gz ? "bad-lbl.gz" : "bad-lbl");
    if (gz) {
        write_gz(ip, img, ni);
        write_gz(lp, lbl, nl);
    } else {
        tu_write_file(ip, img, ni);
        tu_write_file(lp, lbl, nl);
    }
    char spec[1024];
    snprintf(spec, sizeof spec, "idx:%s,%s?classes=5", ip, lp);
    tu_expect_load_fail(spec, code, n1, n2);
    remove(ip);
    remove(lp);
    free(ip);
    free(lp);
}

static void test_malformed(void **state)
{
    (void)state;
    char *dir = tu_tempdir("idxbad");
    unsigned char img[4096], lbl[256], tmp[4096];
    size_t ni = make_images(img, 6, 2, 2), nl = make_labels(lbl, 6, 5);
    for (int gz = 0; gz < 2; gz++) {
        /* sanity: the good pair loads */
        char *ip = join(dir, "ok-img"), *lp = join(dir, "ok-lbl");
        tu_write_file(ip, img, ni);
        tu_write_file(lp, lbl, nl);
        char spec[1024];
        snprintf(spec, sizeof spec, "idx:%s,%s", ip, lp);
        fedc_dataset *tr = NULL;
        fedc_err err;
        assert_int_equal(fedc_data_load(spec, &tr, NULL, &err), FEDC_OK);
        fedc_dataset_destroy(tr);
        free(ip);
        free(lp);

        /* bad magic */
        memcpy(tmp, img, ni);
        tmp[0] = 0x1f;
        check_bad_pair(dir, tmp, ni, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img", "bad magic");
        /* unknown data type */
        memcpy(tmp, img, ni);
        tmp[2] = 0x07;
        check_bad_pair(dir, tmp, ni, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img", "offset 2");
        /* a label file with 2 dimensions */
        memcpy(tmp, lbl, nl);
        tmp[3] = 2;
        check_bad_pair(dir, img, ni, tmp, nl, gz, FEDC_ERR_FORMAT, "bad-lbl", "offset 3");
        /* a zero dimension */
        memcpy(tmp, img, ni);
        memset(tmp + 8, 0, 4);
        check_bad_pair(dir, tmp, ni, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img", "dimension 1 is 0");
        /* truncated header */
        check_bad_pair(dir, img, 2, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img", "truncated");
        check_bad_pair(dir, img, 10, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img", "offset 10");
        /* truncated data: 6 images of 4 bytes after a 16-byte header; cut 3 bytes */
        check_bad_pair(dir, img, ni - 3, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img",
                       "ends at offset 37");
        check_bad_pair(dir, img, ni, lbl, nl - 1, gz, FEDC_ERR_FORMAT, "bad-lbl", "offset 13");
        /* trailing bytes */
        memcpy(tmp, img, ni);
        tmp[ni] = 1;
        check_bad_pair(dir, tmp, ni + 1, lbl, nl, gz, FEDC_ERR_FORMAT, "bad-img",
                       "after offset 40");
        /* wrong count: 5 labels for 6 images */
        size_t nl5 = make_labels(tmp, 5, 5);
        check_bad_pair(dir, img, ni, tmp, nl5, gz, FEDC_ERR_SHAPE, "5 labels", "6 samples");
        /* label out of range (classes=5): label 9 at item 4 -> offset 12 */
        memcpy(tmp, lbl, nl);
        tmp[8 + 4] = 9;
        check_bad_pair(dir, img, ni, tmp, nl, gz, FEDC_ERR_RANGE, "bad-lbl", "offset 12");
        /* float labels */
        memcpy(tmp, lbl, nl);
        tmp[2] = 0x0D;
        check_bad_pair(dir, img, ni, tmp, nl, gz, FEDC_ERR_FORMAT, "bad-lbl", "integers");
    }

    /* A gzip stream cut in the middle: corrupt or truncated, never silently short. */
    {
        unsigned char big[20000];
        size_t nb = make_images(big, 100, 14, 14);
        char *gp = join(dir, "cut-img.gz"), *lp = join(dir, "cut-lbl");
        write_gz(gp, big, nb);
        size_t glen;
        char *gdata = tu_read_file(gp, &glen);
        assert_non_null(gdata);
        tu_write_file(gp, gdata, glen / 2);
        free(gdata);
        size_t n100 = make_labels(tmp, 100, 5);
        tu_write_file(lp, tmp, n100);
        char spec[1024];
        snprintf(spec, sizeof spec, "idx:%s,%s", gp, lp);
        tu_expect_load_fail(spec, FEDC_ERR_FORMAT, "cut-img.gz", "decompressed");
        /* a flipped byte inside the deflate data: CRC or data error */
        write_gz(gp, big, nb);
        gdata = tu_read_file(gp, &glen);
        gdata[glen - 6] ^= 0x55; /* inside the CRC32 trailer */
        tu_write_file(gp, gdata, glen);
        free(gdata);
        tu_expect_load_fail(spec, FEDC_ERR_FORMAT, "cut-img.gz", "corrupt");
        free(gp);
        free(lp);
    }

    /* missing file; train/test shape mismatch */
    {
        char spec[1024];
        snprintf(spec, sizeof spec, "idx:%s/nope,%s/nope2", dir, dir);
        tu_expect_load_fail(spec, FEDC_ERR_NOTFOUND, "nope", NULL);
        char *a = join(dir, "a-img"), *b = join(dir, "a-lbl"), *c = join(dir, "b-img"), *d = join(dir, "b-lbl");
        tu_write_file(a, img, ni);
        tu_write_file(b, lbl, nl);
        size_t n3 = make_images(tmp, 6, 3, 3);
        tu_write_file(c, tmp, n3);
        tu_write_file(d, lbl, nl);
        snprintf(spec, sizeof spec, "idx:%s,%s,%s,%s", a, b, c, d);
        tu_expect_load_fail(spec, FEDC_ERR_SHAPE, "b-img", "9 values");
        free(a);
        free(b);
        free(c);
        free(d);
    }
    tu_rmtree(dir);
    free(dir);
}

/* Big-endian float32 IDX with 2 dimensions: features as they are, shape {d}; NaN refused. */
static void test_float_samples(void **state)
{
    (void)state;
    char *dir = tu_tempdir("idxf");
    unsigned char img[64] = {0, 0, 0x0D, 2, 0, 0, 0, 2, 0, 0, 0, 3};
    float vals[6] = {1.5f, -2.0f, 0.25f, 1e30f, 0.0f, -7.0f};
    for (int i = 0; i < 6; i++) {
        uint32_t u;
        memcpy(&u, &vals[i], 4);
        img[12 + 4 * i] = (unsigned char)(u >> 24);
        img[13 + 4 * i] = (unsigned char)(u >> 16);
        img[14 + 4 * i] = (unsigned char)(u >> 8);
        img[15 + 4 * i] = (unsigned char)u;
    }
    unsigned char lbl[16];
    size_t nl = make_labels(lbl, 2, 2);
    char *ip = join(dir, "f-img"), *lp = join(dir, "f-lbl");
    tu_write_file(ip, img, 36);
    tu_write_file(lp, lbl, nl);
    char spec[1024];
    snprintf(spec, sizeof spec, "idx:%s,%s", ip, lp);
    fedc_dataset *tr = NULL;
    fedc_err err;
    assert_int_equal(fedc_data_load(spec, &tr, NULL, &err), FEDC_OK);
    int64_t shape[FEDC_DATA_MAX_DIMS];
    assert_int_equal(fedc_dataset_shape(tr, shape), 1);
    assert_int_equal(shape[0], 3);
    assert_memory_equal(fedc_dataset_x(tr), vals, sizeof vals);
    assert_int_equal(fedc_dataset_num_classes(tr), 2);
    fedc_dataset_destroy(tr);
    /* the fourth value becomes NaN: offset 12 + 3 * 4 = 24 */
    img[24] = 0x7f;
    img[25] = 0xc0;
    tu_write_file(ip, img, 36);
    tu_expect_load_fail(spec, FEDC_ERR_NONFINITE, "f-img", "offset 24");
    free(ip);
    free(lp);
    tu_rmtree(dir);
    free(dir);
}

static void test_dir_lookup(void **state)
{
    (void)state;
    char *dir = tu_tempdir("idxdir");
    char spec[512];
    /* empty directory */
    snprintf(spec, sizeof spec, "idx:%s", dir);
    tu_expect_load_fail(spec, FEDC_ERR_NOTFOUND, dir, "train-images");
    /* two sets (EMNIST style): ambiguous until a prefix picks one */
    unsigned char buf[4096];
    const char *pre[2] = {"emnist-a-", "emnist-b-"};
    for (int s = 0; s < 2; s++) {
        const char *roles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                "test-images-idx3-ubyte", "test-labels-idx1-ubyte"};
        for (int i = 0; i < 4; i++) {
            size_t n = i == 0 ? make_images(buf, 10 + (uint32_t)s, 2, 2)
                       : i == 1 ? make_labels(buf, 10 + (uint32_t)s, 3)
                       : i == 2 ? make_images(buf, 4, 2, 2)
                                : make_labels(buf, 4, 3);
            char name[128];
            snprintf(name, sizeof name, "%s%s", pre[s], roles[i]);
            char *p = join(dir, name);
            tu_write_file(p, buf, n);
            free(p);
        }
    }
    tu_expect_load_fail(spec, FEDC_ERR_INVALID, "several", "prefix");
    snprintf(spec, sizeof spec, "idx:%s?prefix=emnist-b-", dir);
    fedc_dataset *tr = NULL, *te = NULL;
    fedc_err err;
    assert_int_equal(fedc_data_load(spec, &tr, &te, &err), FEDC_OK);
    assert_int_equal(fedc_dataset_n(tr), 11);
    assert_int_equal(fedc_dataset_n(te), 4);
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);
    /* a directory with only a test-images file and no labels for it */
    tu_rmtree(dir);
    free(dir);
    dir = tu_tempdir("idxdir2");
    write_set(dir, 0);
    char *p = join(dir, "t10k-labels-idx1-ubyte");
    remove(p);
    free(p);
    snprintf(spec, sizeof spec, "idx:%s", dir);
    tu_expect_load_fail(spec, FEDC_ERR_NOTFOUND, "t10k-images", "t10k-labels");
    tu_rmtree(dir);
    free(dir);
}

/* Each allocation of the load failing in turn: FEDC_ERR_NOMEM, nothing leaked. */
static void test_alloc_failures(void **state)
{
    (void)state;
    char *dir = tu_tempdir("idxalloc");
    write_set(dir, 1);
    char spec[512];
    snprintf(spec, sizeof spec, "idx:%s?standardize=1", dir);
    assert_true(tu_alloc_torture_load(spec) > 8);
    tu_rmtree(dir);
    free(dir);
}

static void test_bad_specs(void **state)
{
    (void)state;
    tu_expect_load_fail("nonsense", FEDC_ERR_INVALID, "nonsense", "expected");
    tu_expect_load_fail("idx:", FEDC_ERR_INVALID, NULL, NULL);
    tu_expect_load_fail("idx:a,b,c", FEDC_ERR_INVALID, "idx", NULL);
    tu_expect_load_fail("idx:/nonexistent-dir-fedc", FEDC_ERR_NOTFOUND, "nonexistent-dir-fedc",
                        NULL);
    tu_expect_load_fail("synthetic-iid?bogus=1", FEDC_ERR_INVALID, "unknown option 'bogus'", NULL);
    tu_expect_load_fail("synthetic-iid?seed=x", FEDC_ERR_INVALID, "seed=x", NULL);
    tu_expect_load_fail("synthetic-iid?seed=1&seed=2", FEDC_ERR_INVALID, "twice", NULL);
    tu_expect_load_fail("synthetic:1", FEDC_ERR_INVALID, "ALPHA,BETA", NULL);
    tu_expect_load_fail("synthetic:a,1", FEDC_ERR_INVALID, "alpha", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_gz_dir),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_float_samples),
        cmocka_unit_test(test_dir_lookup),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
