/* Helpers shared by the C tests (cmocka). */
#ifndef FEDC_TESTUTIL_H
#define FEDC_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fedc/nn.h"
#include "fedc/status.h"
#include "fedc/trainer.h"

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

/* Writes text to dir/name; returns the path (free()). */
char *tu_put_file(const char *dir, const char *name, const char *text);
/* fedc_data_load(spec) must fail with `code`, a message containing each needle (NULL: any),
 * and both datasets NULL. */
void tu_expect_load_fail(const char *spec, fedc_status code, const char *n1, const char *n2);

/* Allocation-failure torture (curl's torture test): runs op(ctx, &err) with its k-th fedc
 * allocation failing, for k = 1, 2, ... until a run in which no allocation failed (k is past
 * the last one) or k = max_k. A run that fails must return FEDC_ERR_NOMEM (the test fails
 * with op's message otherwise), and no run may change fedc's allocated bytes: op frees what it
 * built when it succeeds, and checks its outputs are NULL when it fails. Returns the number of
 * runs that failed (callers assert it is more than a few: the loop reached the allocations). */
typedef fedc_status (*tu_alloc_op)(void *ctx, fedc_err *err);
int tu_alloc_torture(tu_alloc_op op, void *ctx, uint64_t max_k);
/* tu_alloc_torture over fedc_data_load(spec): on failure both datasets are NULL. */
int tu_alloc_torture_load(const char *spec);

/* fedc_model_create(spec, shape, ndim, outputs); fails the test with the message on error. */
fedc_model *tu_model(const char *spec, const int64_t *shape, int ndim, int outputs);
/* A config: the assignments in base, then those in sets (each NULL-terminated, may be NULL);
 * fails the test on a rejected one. */
fedc_config *tu_config(const char *const *base, const char *const *sets);
/* A fedc_trainer_ops.evaluate that evaluates nothing: loss 0, accuracy NaN, 1 example. */
fedc_status tu_eval_nothing(const void *s, void *w, const fedc_eval_ins *ins, fedc_eval_out *out,
                            fedc_err *e);

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
