/* Status codes: their descriptions, and the fedc_err message slot. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "fedc/status.h"

static const char *const status_text[FEDC_STATUS_COUNT_] = {
    [FEDC_OK] = "success",
    [FEDC_ERR_NOMEM] = "out of memory",
    [FEDC_ERR_INVALID] = "invalid argument",
    [FEDC_ERR_IO] = "input/output error",
    [FEDC_ERR_FORMAT] = "malformed input",
    [FEDC_ERR_RANGE] = "value out of range",
    [FEDC_ERR_SHAPE] = "shape mismatch",
    [FEDC_ERR_CONFIG] = "invalid configuration",
    [FEDC_ERR_NOTFOUND] = "not found",
    [FEDC_ERR_UNSUPPORTED] = "not supported",
    [FEDC_ERR_NONFINITE] = "non-finite value (NaN or Inf)",
    [FEDC_ERR_STATE] = "invalid state for this operation",
    [FEDC_ERR_CRYPTO] = "cryptographic check failed",
    [FEDC_ERR_NETWORK] = "network error",
    [FEDC_ERR_AUTH] = "authentication refused",
    [FEDC_ERR_TIMEOUT] = "deadline exceeded",
    [FEDC_ERR_BUDGET] = "privacy budget exceeded",
    [FEDC_ERR_ABORTED] = "aborted",
    [FEDC_ERR_INTERNAL] = "internal error",
};

const char *fedc_strerror(fedc_status status)
{
    if ((int)status < 0 || status >= FEDC_STATUS_COUNT_ || !status_text[status])
        return "unknown status";
    return status_text[status];
}

void fedc_err_clear(fedc_err *err)
{
    if (!err) return;
    err->code = FEDC_OK;
    err->msg[0] = '\0';
}

fedc_status fedc_err_set(fedc_err *err, fedc_status code, const char *fmt, ...)
{
    if (!err) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void fedc_err_prefix(fedc_err *err, const char *fmt, ...)
{
    if (!err) return;
    char prefix[FEDC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[FEDC_ERRMSG_MAX];
    memcpy(old, err->msg, sizeof old);
    const char *rest = old[0] ? old : fedc_strerror(err->code);
    /* prefix then as much of the old message as fits (both cut at the buffer's end) */
    size_t plen = strlen(prefix), rlen = strlen(rest), cap = sizeof err->msg - 1;
    if (plen > cap) plen = cap;
    if (rlen > cap - plen) rlen = cap - plen;
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, rest, rlen);
    err->msg[plen + rlen] = '\0';
}

const char *fedc_err_message(const fedc_err *err)
{
    if (!err) return "";
    return err->msg[0] ? err->msg : fedc_strerror(err->code);
}
