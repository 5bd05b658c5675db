/*
 * Logging: libfedc never prints. Messages go to one process-wide callback, with a level and a
 * subsystem tag ("nn", "data", "round", ...). Silent until a callback is set.
 */
#ifndef FEDC_LOG_H
#define FEDC_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fedc_log_level {
    FEDC_LOG_ERROR = 0,
    FEDC_LOG_WARN = 1,
    FEDC_LOG_INFO = 2,
    FEDC_LOG_DEBUG = 3,
    FEDC_LOG_TRACE = 4
} fedc_log_level;

typedef void (*fedc_log_fn)(void *user, fedc_log_level level, const char *subsys, const char *msg);

/* Sends messages at level <= max_level to fn(user, ...). fn = NULL silences the library.
 * fn may be called from any thread at once; it must be thread-safe. Set it before starting
 * threads that log (the setting itself is not synchronised with concurrent logging). */
void fedc_log_set(fedc_log_fn fn, void *user, fedc_log_level max_level);

/* A ready-made callback: "fedc[subsys] level: msg" on stderr, one line per call. */
void fedc_log_stderr(void *user, fedc_log_level level, const char *subsys, const char *msg);

/* Parses "error", "warn", "info", "debug", "trace". Returns 0 on success, -1 if unknown. */
int fedc_log_level_parse(const char *name, fedc_log_level *out);
const char *fedc_log_level_name(fedc_log_level level);

/* Logs a printf-style message (used by libfedc itself; available to trainers and plug-ins). */
void fedc_log(fedc_log_level level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* True when a message at this level would reach the callback (skip expensive formatting). */
int fedc_log_enabled(fedc_log_level level);

#ifdef __cplusplus
}
#endif
#endif
