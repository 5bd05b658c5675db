/*
 * Status codes and error messages.
 *
 * Every fallible libfedc function returns a fedc_status. FEDC_OK is 0; the numbers of the other
 * codes are part of the ABI and are never reused or renumbered: add new codes at the end.
 * The specific message ("layer 3: expected 784 inputs, got 783") lives on the handle the
 * function worked on (fedc_<module>_errmsg) or, for functions without a handle, in a
 * caller-supplied fedc_err.
 */
#ifndef FEDC_STATUS_H
#define FEDC_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fedc_status {
    FEDC_OK = 0,
    FEDC_ERR_NOMEM = 1,       /* an allocation failed */
    FEDC_ERR_INVALID = 2,     /* an argument or value is invalid */
    FEDC_ERR_IO = 3,          /* a file could not be opened, read or written */
    FEDC_ERR_FORMAT = 4,      /* input bytes are malformed (file or message) */
    FEDC_ERR_RANGE = 5,       /* a value is outside its allowed range */
    FEDC_ERR_SHAPE = 6,       /* shapes or sizes do not match */
    FEDC_ERR_CONFIG = 7,      /* configuration is invalid (unknown key, bad value) */
    FEDC_ERR_NOTFOUND = 8,    /* a named thing does not exist */
    FEDC_ERR_UNSUPPORTED = 9, /* not available in this build or not implemented for this case */
    FEDC_ERR_NONFINITE = 10,  /* a NaN or Inf was found where finite numbers are required */
    FEDC_ERR_STATE = 11,      /* the call is not valid in the object's current state */
    FEDC_ERR_CRYPTO = 12,     /* a cryptographic check failed */
    FEDC_ERR_NETWORK = 13,    /* a network operation failed */
    FEDC_ERR_AUTH = 14,       /* authentication was refused */
    FEDC_ERR_TIMEOUT = 15,    /* a deadline passed */
    FEDC_ERR_BUDGET = 16,     /* a privacy budget would be exceeded */
    FEDC_ERR_ABORTED = 17,    /* the operation was cancelled or a round was aborted */
    FEDC_ERR_INTERNAL = 18,   /* a bug in libfedc: please report it */
    FEDC_STATUS_COUNT_        /* not a status: one past the last code */
} fedc_status;

/* A short, static description of a status code ("out of memory"). Never NULL. */
const char *fedc_strerror(fedc_status status);

/* Room for one error: the code and its specific message. Caller-owned storage. */
#define FEDC_ERRMSG_MAX 512
typedef struct fedc_err {
    fedc_status code;
    char msg[FEDC_ERRMSG_MAX];
} fedc_err;

/* Clears err (code FEDC_OK, empty message). err may be NULL. */
void fedc_err_clear(fedc_err *err);

/* Records code and a printf-style message in err (which may be NULL) and returns code, so that
 * `return fedc_err_set(err, FEDC_ERR_FORMAT, "%s: bad magic", path);` is one line. */
fedc_status fedc_err_set(fedc_err *err, fedc_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes err's message with a printf-style context ("file.ini: " + old message). */
void fedc_err_prefix(fedc_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* err's message, or fedc_strerror(err->code) when no message was set. */
const char *fedc_err_message(const fedc_err *err);

/* Propagates a failure: evaluates expr once and returns its status if it is not FEDC_OK. */
#define FEDC_TRY(expr)                                                                         \
    do {                                                                                       \
        fedc_status fedc_try_status_ = (expr);                                                 \
        if (fedc_try_status_ != FEDC_OK) return fedc_try_status_;                              \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
