/*
 * Configuration values checked against the registry (config_keys.c): INI files through libinih
 * and "section.key=value" assignments.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "core/config_internal.h"
#include "fedc/alloc.h"

#define ORIGIN_MAX 256

typedef struct config_value {
    char *text; /* normalised text of the value (fedc_malloc) */
    int64_t i;
    double d;
    int set;
    char origin[ORIGIN_MAX];
} config_value;

struct fedc_config {
    size_t n;
    config_value *v;
    char errmsg[FEDC_ERRMSG_MAX];
};

static fedc_status set_error(fedc_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static fedc_status set_error(fedc_config *cfg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cfg->errmsg, sizeof cfg->errmsg, fmt, ap);
    va_end(ap);
    return FEDC_ERR_CONFIG;
}

static ptrdiff_t key_index(const char *section, const char *name)
{
    size_t n = fedc_config_key_count();
    for (size_t i = 0; i < n; i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (strcmp(k->section, section) == 0 && strcmp(k->name, name) == 0) return (ptrdiff_t)i;
    }
    return -1;
}

static int section_exists(const char *section)
{
    size_t n = fedc_config_key_count();
    for (size_t i = 0; i < n; i++)
        if (strcmp(fedc_config_key_at(i)->section, section) == 0) return 1;
    return 0;
}

static ptrdiff_t dotted_index(const char *dotted)
{
    const char *dot = strchr(dotted, '.');
    if (!dot || (size_t)(dot - dotted) >= 64) return -1;
    char section[64];
    memcpy(section, dotted, (size_t)(dot - dotted));
    section[dot - dotted] = '\0';
    return key_index(section, dot + 1);
}

const fedc_config_key *fedc_config_key_find(const char *dotted)
{
    ptrdiff_t i = dotted_index(dotted);
    return i < 0 ? NULL : fedc_config_key_at((size_t)i);
}

static int choice_matches(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncmp(p, value, len) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

/* Checks `value` against key k; on success fills v (text replaced). Error text into msg. */
static int parse_value(const fedc_config_key *k, const char *value, config_value *v, char *msg,
                       size_t msg_size)
{
    int64_t iv = 0;
    double dv = 0;
    switch (k->type) {
    case FEDC_CFG_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(value, &end, 10);
        if (end == value || *end != '\0' || errno == ERANGE) {
            snprintf(msg, msg_size, "'%s' is not an integer", value);
            return -1;
        }
        iv = x;
        dv = (double)x;
        break;
    }
    case FEDC_CFG_DOUBLE: {
        char *end;
        errno = 0;
        double x = strtod(value, &end);
        if (end == value || *end != '\0' || errno == ERANGE || !isfinite(x)) {
            snprintf(msg, msg_size, "'%s' is not a finite number", value);
            return -1;
        }
        dv = x;
        break;
    }
    case FEDC_CFG_BOOL: {
        int b;
        if (parse_bool(value, &b) != 0) {
            snprintf(msg, msg_size, "'%s' is not a boolean (true/false, yes/no, on/off, 1/0)",
                     value);
            return -1;
        }
        iv = b;
        dv = b;
        value = b ? "true" : "false";
        break;
    }
    case FEDC_CFG_STRING:
        break;
    case FEDC_CFG_CHOICE:
        if (!choice_matches(k->choices, value)) {
            snprintf(msg, msg_size, "'%s' is not one of %s", value, k->choices);
            return -1;
        }
        break;
    }
    if ((k->type == FEDC_CFG_INT || k->type == FEDC_CFG_DOUBLE) && (k->flags & FEDC_CFG_BOUNDED)) {
        int lo_ok = (k->flags & FEDC_CFG_MIN_EXCL) ? dv > k->min : dv >= k->min;
        int hi_ok = (k->flags & FEDC_CFG_MAX_EXCL) ? dv < k->max : dv <= k->max;
        if (!lo_ok || !hi_ok) {
            snprintf(msg, msg_size, "%s is out of range %c%.17g, %.17g%c", value,
                     (k->flags & FEDC_CFG_MIN_EXCL) ? '(' : '[', k->min, k->max,
                     (k->flags & FEDC_CFG_MAX_EXCL) ? ')' : ']');
            return -1;
        }
    }
    char *text = fedc_strdup(value);
    if (!text) {
        snprintf(msg, msg_size, "out of memory");
        return -2;
    }
    fedc_free(v->text);
    v->text = text;
    v->i = iv;
    v->d = dv;
    return 0;
}

fedc_config *fedc_config_create(void)
{
    fedc_config *cfg = fedc_calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    cfg->n = fedc_config_key_count();
    cfg->v = fedc_calloc(cfg->n, sizeof *cfg->v);
    if (!cfg->v) {
        fedc_free(cfg);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n; i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        char msg[256];
        int rc = parse_value(k, k->def, &cfg->v[i], msg, sizeof msg);
        /* A default that fails its own key's checks is a bug in the registry. */
        assert(rc != -1 && "registry default out of its own bounds");
        if (rc != 0) {
            fedc_config_destroy(cfg);
            return NULL;
        }
        strcpy(cfg->v[i].origin, "default");
    }
    return cfg;
}

void fedc_config_destroy(fedc_config *cfg)
{
    if (!cfg) return;
    if (cfg->v)
        for (size_t i = 0; i < cfg->n; i++) fedc_free(cfg->v[i].text);
    fedc_free(cfg->v);
    fedc_free(cfg);
}

fedc_config *fedc_config_dup(const fedc_config *src)
{
    fedc_config *cfg = fedc_calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    cfg->n = src->n;
    cfg->v = fedc_calloc(cfg->n, sizeof *cfg->v);
    if (!cfg->v) {
        fedc_free(cfg);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n; i++) {
        cfg->v[i] = src->v[i];
        cfg->v[i].text = fedc_strdup(src->v[i].text);
        if (!cfg->v[i].text) {
            fedc_config_destroy(cfg);
            return NULL;
        }
    }
    return cfg;
}

/* Moves src's values into dst (both from the same registry) and destroys src. */
static void config_take(fedc_config *dst, fedc_config *src)
{
    for (size_t i = 0; i < dst->n; i++) fedc_free(dst->v[i].text);
    fedc_free(dst->v);
    dst->v = src->v;
    src->v = NULL;
    fedc_config_destroy(src);
}

fedc_status fedc_config_set_value(fedc_config *cfg, const char *section, const char *key,
                                  const char *value, const char *origin)
{
    ptrdiff_t i = key_index(section, key);
    if (i < 0) {
        if (!section_exists(section))
            return set_error(cfg, "%s: unknown section [%s] (see `fedc help config`)", origin,
                             section);
        return set_error(cfg, "%s: [%s] unknown key '%s' (see `fedc help config`)", origin,
                         section, key);
    }
    const fedc_config_key *k = fedc_config_key_at((size_t)i);
    char msg[384];
    int rc = parse_value(k, value, &cfg->v[i], msg, sizeof msg);
    if (rc == -2) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: out of memory", origin);
        return FEDC_ERR_NOMEM;
    }
    if (rc != 0) return set_error(cfg, "%s: [%s] %s: %s", origin, section, key, msg);
    cfg->v[i].set = 1;
    snprintf(cfg->v[i].origin, ORIGIN_MAX, "%s", origin);
    return FEDC_OK;
}

fedc_status fedc_config_set(fedc_config *cfg, const char *assignment, const char *origin)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq || dot == assignment || dot + 1 == eq)
        return set_error(cfg, "%s: '%s' is not of the form section.key=value", origin,
                         assignment);
    char section[64], key[64];
    size_t slen = (size_t)(dot - assignment), klen = (size_t)(eq - dot - 1);
    if (slen >= sizeof section || klen >= sizeof key)
        return set_error(cfg, "%s: '%s': section or key name too long", origin, assignment);
    memcpy(section, assignment, slen);
    section[slen] = '\0';
    memcpy(key, dot + 1, klen);
    key[klen] = '\0';
    return fedc_config_set_value(cfg, section, key, eq + 1, origin);
}

typedef struct ini_ctx {
    fedc_config *cfg;
    const char *path;
    int line;     /* counted by the reader below */
    char *seen;   /* keys set by this file, to refuse duplicates */
    fedc_status status;
    int error_line; /* line of the first error the handler found */
} ini_ctx;

static int on_ini_value(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx *c = user;
    if (c->status != FEDC_OK) return 1; /* keep only the first error */
    char origin[ORIGIN_MAX];
    snprintf(origin, sizeof origin, "%s:%d", c->path, c->line);
    if (!section[0]) {
        c->status = set_error(c->cfg, "%s: key '%s' appears before any [section]", origin, name);
        c->error_line = c->line;
        return 1;
    }
    ptrdiff_t i = key_index(section, name);
    if (i >= 0 && c->seen[i]) {
        c->status = set_error(c->cfg, "%s: [%s] %s is set twice in this file", origin, section,
                              name);
        c->error_line = c->line;
        return 1;
    }
    c->status = fedc_config_set_value(c->cfg, section, name, value, origin);
    if (i >= 0 && c->status == FEDC_OK) c->seen[i] = 1;
    if (c->status != FEDC_OK) c->error_line = c->line;
    return 1;
}

/* A line reader for ini_parse_stream that counts lines, so messages can name them. */
typedef struct line_reader {
    FILE *f;
    ini_ctx *ctx;
} line_reader;

static char *read_line(char *str, int num, void *stream)
{
    line_reader *r = stream;
    char *s = fgets(str, num, r->f);
    if (s) r->ctx->line++;
    return s;
}

fedc_status fedc_config_load_file(fedc_config *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: cannot open: %s", path, strerror(errno));
        return FEDC_ERR_IO;
    }
    fedc_config *tmp = fedc_config_dup(cfg);
    char *seen = fedc_calloc(cfg->n ? cfg->n : 1, 1);
    if (!tmp || !seen) {
        fclose(f);
        fedc_config_destroy(tmp);
        fedc_free(seen);
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: out of memory", path);
        return FEDC_ERR_NOMEM;
    }
    ini_ctx ctx = {tmp, path, 0, seen, FEDC_OK, 0};
    line_reader reader = {f, &ctx};
    int rc = ini_parse_stream(read_line, &reader, on_ini_value, &ctx);
    int read_error = ferror(f);
    fclose(f);
    fedc_free(seen);
    fedc_status st = ctx.status;
    if (rc > 0 && (st == FEDC_OK || rc < ctx.error_line)) {
        /* inih's syntax error comes first in the file: report it */
        snprintf(cfg->errmsg, sizeof cfg->errmsg,
                 "%s:%d: syntax error (expected [section], key = value, or a ; comment)", path,
                 rc);
        st = FEDC_ERR_CONFIG;
    } else if (st != FEDC_OK) {
        memcpy(cfg->errmsg, tmp->errmsg, sizeof cfg->errmsg);
    } else if (read_error) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: read error", path);
        st = FEDC_ERR_IO;
    } else if (rc < 0) {
        snprintf(cfg->errmsg, sizeof cfg->errmsg, "%s: cannot parse (error %d)", path, rc);
        st = FEDC_ERR_CONFIG;
    }
    if (st != FEDC_OK) {
        fedc_config_destroy(tmp);
        return st;
    }
    config_take(cfg, tmp);
    return FEDC_OK;
}

const char *fedc_config_errmsg(const fedc_config *cfg)
{
    return cfg->errmsg;
}

static const config_value *lookup(const fedc_config *cfg, const char *dotted,
                                  fedc_config_type want)
{
    ptrdiff_t i = dotted_index(dotted);
    assert(i >= 0 && "unknown config key");
    const fedc_config_key *k = fedc_config_key_at((size_t)i);
    (void)k;
    (void)want;
    assert((k->type == want ||
            (want == FEDC_CFG_STRING && k->type == FEDC_CFG_CHOICE)) &&
           "config key read with the wrong type");
    return &cfg->v[i];
}

int64_t fedc_config_int(const fedc_config *cfg, const char *dotted)
{
    return lookup(cfg, dotted, FEDC_CFG_INT)->i;
}

double fedc_config_double(const fedc_config *cfg, const char *dotted)
{
    return lookup(cfg, dotted, FEDC_CFG_DOUBLE)->d;
}

int fedc_config_bool(const fedc_config *cfg, const char *dotted)
{
    return (int)lookup(cfg, dotted, FEDC_CFG_BOOL)->i;
}

const char *fedc_config_str(const fedc_config *cfg, const char *dotted)
{
    return lookup(cfg, dotted, FEDC_CFG_STRING)->text;
}

const char *fedc_config_origin(const fedc_config *cfg, const char *dotted)
{
    ptrdiff_t i = dotted_index(dotted);
    assert(i >= 0 && "unknown config key");
    return cfg->v[i].origin;
}

int fedc_config_is_set(const fedc_config *cfg, const char *dotted)
{
    ptrdiff_t i = dotted_index(dotted);
    assert(i >= 0 && "unknown config key");
    return cfg->v[i].set;
}

fedc_status fedc_config_write(const fedc_config *cfg, FILE *out)
{
    const char *section = NULL;
    for (size_t i = 0; i < cfg->n; i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(out, "%s = %s\n", k->name, cfg->v[i].text);
    }
    return ferror(out) ? FEDC_ERR_IO : FEDC_OK;
}

static const char *type_name(const fedc_config_key *k)
{
    switch (k->type) {
    case FEDC_CFG_INT: return "int";
    case FEDC_CFG_DOUBLE: return "number";
    case FEDC_CFG_BOOL: return "bool";
    case FEDC_CFG_STRING: return "string";
    case FEDC_CFG_CHOICE: return "choice";
    }
    return "?";
}

void fedc_config_print_help(FILE *out)
{
    const char *section = NULL;
    size_t n = fedc_config_key_count();
    for (size_t i = 0; i < n; i++) {
        const fedc_config_key *k = fedc_config_key_at(i);
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        char bounds[128] = "";
        if (k->type == FEDC_CFG_CHOICE)
            snprintf(bounds, sizeof bounds, " {%s}", k->choices);
        else if ((k->type == FEDC_CFG_INT || k->type == FEDC_CFG_DOUBLE) &&
                 (k->flags & FEDC_CFG_BOUNDED))
            snprintf(bounds, sizeof bounds, " %c%.6g, %.6g%c",
                     (k->flags & FEDC_CFG_MIN_EXCL) ? '(' : '[', k->min, k->max,
                     (k->flags & FEDC_CFG_MAX_EXCL) ? ')' : ']');
        fprintf(out, "  %-20s %-6s default %-10s%s\n      %s\n", k->name, type_name(k), k->def,
                bounds, k->help);
    }
}
