/* Helpers shared by the C tests (cmocka). */
#ifndef FEDC_TESTUTIL_H
#define FEDC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* A fresh empty directory under $TMPDIR (or /tmp) for this test; removed by tu_rmtree. */
char *tu_tempdir(const char *tag);
/* rm -rf path (and frees nothing). */
void tu_rmtree(const char *path);
/* Writes n bytes to path; fails the test on error. */
void tu_write_file(const char *path, const void *data, size_t n);
/* Reads a whole file; *n gets its size. Caller frees with free(). NULL if missing. */
char *tu_read_file(const char *path, size_t *n);
/* $FEDC_SRC or "." */
const char *tu_src_dir(void);

/* Asserts |a - b| <= atol + rtol * |b|, printing both on failure. */
#define assert_close(a, b, rtol, atol)                                                         \
    do {                                                                                       \
        double tu_a_ = (double)(a), tu_b_ = (double)(b);                                       \
        double tu_tol_ = (atol) + (rtol) * (tu_b_ < 0 ? -tu_b_ : tu_b_);                       \
        double tu_d_ = tu_a_ - tu_b_;                                                          \
        if (tu_d_ < 0) tu_d_ = -tu_d_;                                                         \
        if (!(tu_d_ <= tu_tol_))                                                               \
            fail_msg("%s = %.10g, expected %.10g (tolerance %.3g)", #a, tu_a_, tu_b_, tu_tol_); \
    } while (0)

#endif
