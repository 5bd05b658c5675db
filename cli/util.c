/* Shared pieces of the subcommands: error printing, JSON lines, shapes, progress display. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fedc %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'fedc help %s'.\n", cmd);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fedc %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

void cli_json_print(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    fflush(stdout);
    json_decref(obj);
}

FILE *cli_human(int json_mode)
{
    return json_mode ? stderr : stdout;
}

int cli_parse_shape(const char *text, long long *dims, int max_dims)
{
    int n = 0;
    const char *p = text;
    for (;;) {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p || d <= 0 || n == max_dims) return -1;
        dims[n++] = d;
        if (*end == '\0') return n;
        if (*end != ',' && *end != 'x') return -1;
        p = end + 1;
    }
}

int cli_parse_u64(const char *text, uint64_t *out)
{
    if (!text[0] || text[0] == '-' || text[0] == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end != '\0' || errno != 0) return -1;
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_double(const char *text, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

fedc_config *cli_load_config(const char *cmd, const char *path, char **sets, int nsets)
{
    fedc_config *cfg = fedc_config_create();
    if (!cfg) {
        cli_fail(cmd, "out of memory");
        return NULL;
    }
    if (path && fedc_config_load_file(cfg, path) != FEDC_OK) {
        cli_fail(cmd, "%s", fedc_config_errmsg(cfg));
        fedc_config_destroy(cfg);
        return NULL;
    }
    for (int i = 0; i < nsets; i++) {
        if (fedc_config_set(cfg, sets[i], "--set") != FEDC_OK) {
            cli_fail(cmd, "%s", fedc_config_errmsg(cfg));
            fedc_config_destroy(cfg);
            return NULL;
        }
    }
    return cfg;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *cli_format_duration(double s, char *buf, size_t size)
{
    if (!(s >= 0) || s > 1e9)
        snprintf(buf, size, "--");
    else if (s < 1)
        snprintf(buf, size, "%.0fms", s * 1000);
    else if (s < 60)
        snprintf(buf, size, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, size, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, size, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
    return buf;
}

const char *cli_format_bytes(double b, char *buf, size_t size)
{
    static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) {
        b /= 1000;
        u++;
    }
    snprintf(buf, size, u == 0 ? "%.0f %s" : "%.1f %s", b, unit[u]);
    return buf;
}

void cli_progress_start(cli_progress *p, FILE *out, const char *label, long total)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->label = label;
    p->total = total > 0 ? total : 1;
    p->tty = isatty(fileno(out)) && getenv("TERM") && strcmp(getenv("TERM"), "dumb") != 0;
    p->plain_every = 1;
    p->t_start = cli_now();
    p->width = 24;
}

static void draw(cli_progress *p, const char *status, int final)
{
    double now = cli_now();
    double elapsed = now - p->t_start;
    double frac = (double)p->done / (double)p->total;
    if (frac > 1) frac = 1;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : -1;
    char tbuf[32], ebuf[32];
    cli_format_duration(elapsed, tbuf, sizeof tbuf);
    cli_format_duration(eta, ebuf, sizeof ebuf);
    if (p->tty) {
        int filled = (int)lround(frac * p->width);
        char bar[128];
        int i = 0;
        for (; i < filled && i < p->width; i++) bar[i] = '#';
        for (; i < p->width; i++) bar[i] = '.';
        bar[i] = '\0';
        fprintf(p->out, "\r\033[2K%s [%s] %ld/%ld  %.2f/s  %s %s  %s", p->label, bar, p->done,
                p->total, rate, final ? "took" : "eta", final ? tbuf : ebuf,
                status ? status : "");
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s %ld/%ld  %.2f/s  elapsed %s  eta %s  %s\n", p->label, p->done,
                p->total, rate, tbuf, final ? "0ms" : ebuf, status ? status : "");
    }
    fflush(p->out);
    p->t_last_draw = now;
}

void cli_progress_update(cli_progress *p, long done, const char *status)
{
    p->done = done;
    if (!p->tty && p->plain_every > 1 && done % p->plain_every != 0 && done != p->total) return;
    draw(p, status, 0);
}

void cli_progress_finish(cli_progress *p, const char *status)
{
    if (p->tty) {
        draw(p, status, 1);
    } else if (status) {
        fprintf(p->out, "%s done in %.1fs  %s\n", p->label, cli_now() - p->t_start, status);
        fflush(p->out);
    }
}
