/*
 * fedc plot: several runs' per-round records (the metrics.jsonl `fedc sim --out` writes, or
 * saved `fedc sim --json` output) drawn on one chart, written as a self-contained SVG;
 * optionally a Markdown table comparing the runs. x: round, cumulative upload bytes,
 * cumulative upload + download bytes, or cumulative wall time; y: central test accuracy or
 * loss, clients' training loss, or federated accuracy.
 *
 * Every record is checked: a line that is not a JSON object, a round that does not follow the
 * previous one, or a field the chosen axes need that is missing or not a number is an error
 * naming the file and line.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "report.h"

#define CMD "plot"
#define MAX_RUNS 64

typedef enum { X_ROUND, X_UP, X_BYTES, X_TIME } x_kind;

/* What --y names: the record field, its scale, the axis label. */
typedef struct y_kind {
    const char *name, *field;
    double scale;
    const char *label, *short_label;
} y_kind;

static const y_kind y_kinds[] = {
    {"accuracy", "test_accuracy", 100, "central test accuracy (%)", "test acc."},
    {"loss", "test_loss", 1, "central test loss (cross-entropy)", "test loss"},
    {"train-loss", "train_loss", 1, "clients' training loss", "train loss"},
    {"fed-accuracy", "fed_accuracy", 100, "clients' test accuracy (%)", "fed. acc."},
};

typedef struct run {
    char *file; /* the records file (path, or path/metrics.jsonl) */
    char *label;
    size_t n, cap;
    long long *round;
    double *x, *y;            /* y NaN: no value that round */
    double up, down, seconds; /* totals */
} run;

static void run_free(run *r)
{
    free(r->file);
    free(r->label);
    free(r->round);
    free(r->x);
    free(r->y);
}

/* The number at key in o: 1 and *v when present and a number, 0 when absent or null, -1 when
 * of another type. */
static int get_num(json_t *o, const char *key, double *v)
{
    json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j)) return 0;
    if (!json_is_number(j)) return -1;
    *v = json_number_value(j);
    return 1;
}

static int push(run *r, long long round, double x, double y)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        long long *nr = realloc(r->round, cap * sizeof *nr);
        if (nr) r->round = nr;
        double *nx = realloc(r->x, cap * sizeof *nx);
        if (nx) r->x = nx;
        double *ny = realloc(r->y, cap * sizeof *ny);
        if (ny) r->y = ny;
        if (!nr || !nx || !ny) return -1;
        r->cap = cap;
    }
    r->round[r->n] = round;
    r->x[r->n] = x;
    r->y[r->n] = y;
    r->n++;
    return 0;
}

/* Reads r->file's records. Returns 0, or prints the error and returns -1. */
static int load_run(run *r, x_kind xk, const y_kind *yk)
{
    FILE *f = fopen(r->file, "r");
    if (!f) return cli_fail(CMD, "cannot open %s: %s", r->file, strerror(errno)), -1;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t len;
    int rc = 0, have_y = 0;
    long long prev = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t sp = strspn(line, " \t\r\n");
        if ((size_t)len == sp) continue; /* blank */
        json_error_t je;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &je);
        if (!o || !json_is_object(o)) {
            rc = -1;
            cli_fail(CMD, "%s:%zu: not a round record (a JSON object per line): %s", r->file,
                     lineno, o ? "not an object" : je.text);
            json_decref(o);
            break;
        }
        if (json_is_true(json_object_get(o, "final"))) { /* `fedc sim --json`'s last line */
            json_decref(o);
            continue;
        }
        json_t *jr = json_object_get(o, "round");
        long long round = json_is_integer(jr) ? (long long)json_integer_value(jr) : -1;
        double up = NAN, down = NAN, secs = NAN, y = NAN;
        int ok_up = get_num(o, "bytes_up", &up) == 1 && up >= 0 && isfinite(up);
        int ok_down = get_num(o, "bytes_down", &down) == 1 && down >= 0 && isfinite(down);
        int ok_secs = get_num(o, "seconds", &secs) == 1 && secs >= 0 && isfinite(secs);
        const char *bad = NULL;
        if (round < 1)
            bad = "no \"round\" (a positive integer): not a fedc round record";
        else if (round <= prev)
            bad = "round does not follow the previous record's (two runs in one file?)";
        else if (xk != X_ROUND && xk != X_TIME && !ok_up)
            bad = "\"bytes_up\" is missing or not a byte count";
        else if (xk == X_BYTES && !ok_down)
            bad = "\"bytes_down\" is missing or not a byte count";
        else if (xk == X_TIME && !ok_secs)
            bad = "\"seconds\" is missing or not a duration";
        else if (get_num(o, yk->field, &y) < 0)
            bad = "the y field is not a number";
        if (bad) {
            rc = -1;
            if (round >= 1)
                cli_fail(CMD, "%s:%zu: round %lld: %s (--y %s reads \"%s\")", r->file, lineno,
                         round, bad, yk->name, yk->field);
            else
                cli_fail(CMD, "%s:%zu: %s", r->file, lineno, bad);
            json_decref(o);
            break;
        }
        r->up += ok_up ? up : 0; /* totals for the table; 0 where a record lacks them */
        r->down += ok_down ? down : 0;
        r->seconds += ok_secs ? secs : 0;
        double x = xk == X_ROUND   ? (double)round
                   : xk == X_UP    ? r->up
                   : xk == X_BYTES ? r->up + r->down
                                   : r->seconds;
        if (isfinite(y)) {
            y *= yk->scale;
            have_y = 1;
        } else {
            y = NAN;
        }
        if (push(r, round, x, y) != 0) {
            rc = -1;
            cli_fail(CMD, "out of memory reading %s", r->file);
        }
        prev = round;
        json_decref(o);
    }
    if (rc == 0 && ferror(f))
        rc = -1, cli_fail(CMD, "cannot read %s: %s", r->file, strerror(errno));
    free(line);
    fclose(f);
    if (rc == 0 && r->n == 0) rc = -1, cli_fail(CMD, "%s: no round records", r->file);
    if (rc == 0 && !have_y)
        rc = -1, cli_fail(CMD, "%s: no round has \"%s\" (--y %s; was the run evaluated?)", r->file,
                          yk->field, yk->name);
    return rc;
}

/* RUN or RUN=LABEL: the path is the longest prefix before an '=' that exists (paths may hold
 * '='), else everything before the first '='; a directory means DIR/metrics.jsonl. The default
 * label is the directory's name, or the file's without .jsonl. */
static int parse_run(const char *arg, run *r)
{
    memset(r, 0, sizeof *r);
    size_t len = strlen(arg), cut = len;
    struct stat sb;
    if (stat(arg, &sb) != 0) {
        cut = strcspn(arg, "=");
        for (size_t i = len; i-- > 0;) {
            if (arg[i] != '=') continue;
            char *p = strndup(arg, i);
            int ok = p && stat(p, &sb) == 0;
            free(p);
            if (ok) {
                cut = i;
                break;
            }
        }
    }
    char *path = strndup(arg, cut);
    if (!path) return -1;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t pl = strlen(path);
        while (pl > 1 && path[pl - 1] == '/') path[--pl] = '\0';
        r->file = malloc(pl + sizeof "/metrics.jsonl");
        if (r->file) sprintf(r->file, "%s/metrics.jsonl", path);
    } else {
        r->file = strdup(path);
    }
    if (cut < len) {
        r->label = strdup(arg + cut + 1);
    } else { /* .../NAME/metrics.jsonl -> NAME; .../NAME.jsonl -> NAME */
        const char *f = r->file ? r->file : "";
        const char *end = f + strlen(f), *base = strrchr(f, '/');
        base = base ? base + 1 : f;
        if (strcmp(base, "metrics.jsonl") == 0 && base > f + 1) {
            end = base - 1;
            const char *b = end;
            while (b > f && b[-1] != '/') b--;
            base = b;
        } else if (end - base > 6 && strcmp(end - 6, ".jsonl") == 0) {
            end -= 6;
        }
        r->label = strndup(base, (size_t)(end - base));
    }
    free(path);
    return r->file && r->label ? 0 : -1;
}

/* The Markdown comparison: bytes per round against the first run, y at chosen rounds. */
static void print_table(FILE *out, const run *runs, int nr, const y_kind *yk, const long long *at,
                        int nat)
{
    char b1[32], b2[32];
    fprintf(out,
            "| run | rounds | upload per round | fewer upload bytes than %s | download per round",
            runs[0].label);
    for (int a = 0; a < nat; a++) fprintf(out, " | %s round %lld", yk->short_label, at[a]);
    fprintf(out, " | %s, last round | best |\n|---|---|---|---|---", yk->short_label);
    for (int a = 0; a < nat; a++) fputs("|---", out);
    fputs("|---|---|\n", out);
    const char *unit = yk->scale == 100 ? "%" : "";
    int prec = yk->scale == 100 ? 2 : 4;
    double up0 = runs[0].up / (double)runs[0].n;
    for (int i = 0; i < nr; i++) {
        const run *r = &runs[i];
        double up = r->up / (double)r->n, down = r->down / (double)r->n;
        fprintf(out, "| %s | %zu | %s | ", r->label, r->n, cli_format_bytes(up, b1, sizeof b1));
        if (up > 0)
            fprintf(out, "%.1fx", up0 / up);
        else
            fputs("-", out);
        fprintf(out, " | %s", cli_format_bytes(down, b2, sizeof b2));
        for (int a = 0; a < nat; a++) {
            double v = NAN;
            for (size_t k = 0; k < r->n; k++)
                if (r->round[k] == at[a]) v = r->y[k];
            if (isfinite(v))
                fprintf(out, " | %.*f%s", prec, v, unit);
            else
                fputs(" | -", out);
        }
        double last = NAN, best = NAN;
        long long last_r = 0, best_r = 0;
        int lower_better = yk->scale != 100;
        for (size_t k = 0; k < r->n; k++) {
            double v = r->y[k];
            if (!isfinite(v)) continue;
            last = v;
            last_r = r->round[k];
            if (!isfinite(best) || (lower_better ? v < best : v > best)) {
                best = v;
                best_r = r->round[k];
            }
        }
        fprintf(out, " | %.*f%s (round %lld) | %.*f%s (round %lld) |\n", prec, last, unit, last_r,
                prec, best, unit, best_r);
    }
}

/* "10,30" into at[]: the count, or -1. */
static int parse_rounds(const char *s, long long *at, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 1 || n == max || (*end && *end != ',')) return -1;
        at[n++] = v;
        s = *end ? end + 1 : end;
    }
    return n;
}

int cmd_plot(int argc, char **argv)
{
    static const struct option opts[] = {
        {"x", required_argument, NULL, 'x'},      {"y", required_argument, NULL, 'y'},
        {"log-x", no_argument, NULL, 'l'},        {"title", required_argument, NULL, 'T'},
        {"out", required_argument, NULL, 'o'},    {"table", no_argument, NULL, 't'},
        {"at", required_argument, NULL, 'a'},     {"width", required_argument, NULL, 'W'},
        {"height", required_argument, NULL, 'H'}, {NULL, 0, NULL, 0},
    };
    x_kind xk = X_ROUND;
    const y_kind *yk = &y_kinds[0];
    int log_x = 0, table = 0, nat = 0, c;
    const char *title = NULL, *out = NULL;
    long long at[16];
    double width = 760, height = 440;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'x':
            if (strcmp(optarg, "round") == 0)
                xk = X_ROUND;
            else if (strcmp(optarg, "up") == 0)
                xk = X_UP;
            else if (strcmp(optarg, "bytes") == 0)
                xk = X_BYTES;
            else if (strcmp(optarg, "time") == 0)
                xk = X_TIME;
            else
                return cli_usage_error(CMD, "--x wants round, up, bytes or time, got '%s'", optarg);
            break;
        case 'y': {
            yk = NULL;
            for (size_t i = 0; i < sizeof y_kinds / sizeof *y_kinds; i++)
                if (strcmp(optarg, y_kinds[i].name) == 0) yk = &y_kinds[i];
            if (!yk)
                return cli_usage_error(CMD,
                                       "--y wants accuracy, loss, train-loss or "
                                       "fed-accuracy, got '%s'",
                                       optarg);
            break;
        }
        case 'l': log_x = 1; break;
        case 'T': title = optarg; break;
        case 'o': out = optarg; break;
        case 't': table = 1; break;
        case 'a':
            if ((nat = parse_rounds(optarg, at, 16)) < 0)
                return cli_usage_error(CMD, "--at wants up to 16 rounds like 10,30, got '%s'",
                                       optarg);
            break;
        case 'W':
        case 'H': {
            char *end;
            double v = strtod(optarg, &end);
            if (*end || !(v >= 200 && v <= 4000))
                return cli_usage_error(CMD, "--%s wants 200..4000, got '%s'",
                                       c == 'W' ? "width" : "height", optarg);
            *(c == 'W' ? &width : &height) = v;
            break;
        }
        default: return cli_usage_error(CMD, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    int nr = argc - optind;
    if (nr < 1)
        return cli_usage_error(CMD, "no RUN given (a metrics.jsonl file or a run directory)");
    if (nr > MAX_RUNS) return cli_usage_error(CMD, "at most %d runs, got %d", MAX_RUNS, nr);
    if (!out && !table)
        return cli_usage_error(CMD, "nothing to do: give --out FILE and/or --table");
    if (out && table && strcmp(out, "-") == 0)
        return cli_usage_error(CMD, "--out - and --table both write to stdout");

    run *runs = calloc((size_t)nr, sizeof *runs);
    report_series *ss = calloc((size_t)nr, sizeof *ss);
    int rc = CLI_EXIT_FAIL;
    if (!runs || !ss) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    for (int i = 0; i < nr; i++) {
        if (parse_run(argv[optind + i], &runs[i]) != 0) {
            cli_fail(CMD, "out of memory");
            goto done;
        }
        if (load_run(&runs[i], xk, yk) != 0) goto done;
        ss[i] = (report_series){runs[i].label, NULL, runs[i].x, runs[i].y, runs[i].n, 0};
    }
    if (out) {
        static const char *const xlabels[] = {"round", "cumulative upload bytes",
                                              "cumulative upload + download bytes",
                                              "cumulative wall time"};
        static const char *const xnames[] = {"round", "upload", "bytes", "time"};
        char deftitle[160];
        snprintf(deftitle, sizeof deftitle, "%s against %s", yk->short_label, xlabels[xk]);
        report_chart ch = {
            .title = title ? title : deftitle,
            .xlabel = xlabels[xk],
            .ylabel = yk->label,
            .point_name = xnames[xk],
            .width = width,
            .height = height,
            .log_x = log_x,
            .x_integer = xk == X_ROUND,
            .x_grid = 1,
            .legend_outside = 1,
            .x_unit = xk == X_ROUND  ? REPORT_AXIS_NUMBER
                      : xk == X_TIME ? REPORT_AXIS_SECONDS
                                     : REPORT_AXIS_BYTES,
        };
        if (report_write_svg(out, &ch, ss, nr) != 0) {
            cli_fail(CMD, "cannot write %s: %s", out, strerror(errno));
            goto done;
        }
    }
    if (table) print_table(stdout, runs, nr, yk, at, nat);
    rc = CLI_EXIT_OK;
done:
    for (int i = 0; runs && i < nr; i++) run_free(&runs[i]);
    free(runs);
    free(ss);
    return rc;
}
