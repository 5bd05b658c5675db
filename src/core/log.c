/* Logging: one process-wide callback, silent by default (the library never prints). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "fedc/log.h"

static fedc_log_fn log_fn;
static void *log_user;
static atomic_int log_max = FEDC_LOG_ERROR;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void fedc_log_set(fedc_log_fn fn, void *user, fedc_log_level max_level)
{
    log_fn = fn;
    log_user = user;
    atomic_store(&log_max, (int)max_level);
}

int fedc_log_enabled(fedc_log_level level)
{
    return log_fn != NULL && (int)level <= atomic_load(&log_max);
}

void fedc_log(fedc_log_level level, const char *subsys, const char *fmt, ...)
{
    if (!fedc_log_enabled(level)) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fn(log_user, level, subsys ? subsys : "fedc", msg);
}

void fedc_log_stderr(void *user, fedc_log_level level, const char *subsys, const char *msg)
{
    (void)user;
    /* One fprintf per line so concurrent lines do not interleave (stdio locks the stream). */
    fprintf(stderr, "fedc[%s] %s: %s\n", subsys, fedc_log_level_name(level), msg);
}

const char *fedc_log_level_name(fedc_log_level level)
{
    if ((int)level < 0 || (int)level > FEDC_LOG_TRACE) return "?";
    return level_names[level];
}

int fedc_log_level_parse(const char *name, fedc_log_level *out)
{
    for (int i = 0; i <= FEDC_LOG_TRACE; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (fedc_log_level)i;
            return 0;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *out = FEDC_LOG_WARN;
        return 0;
    }
    return -1;
}
