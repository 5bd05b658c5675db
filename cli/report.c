/*
 * Run outputs: metrics.jsonl and metrics.csv (one line per round), and report.html, a
 * self-contained page with the run's plots drawn as inline SVG, readable with no network.
 * Runs with differential privacy add their DP fields (epsilon spent, clip, noise; the blocks
 * marked "DP") and an epsilon-per-round chart. The SVG chart code (report_chart_svg) also
 * draws `fedc plot`'s standalone charts (cli/cmd_plot.c).
 */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "report.h"

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

char *report_record_json(const fedc_round_record *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "round", json_integer(r->round));
    json_object_set_new(o, "selected", json_integer(r->selected));
    json_object_set_new(o, "participants", json_integer(r->participants));
    json_object_set_new(o, "rejected", json_integer(r->rejected));
    json_object_set_new(o, "examples", json_integer((json_int_t)r->examples));
    json_object_set_new(o, "train_loss", num_or_null(r->train_loss));
    if (r->evaluated) {
        json_object_set_new(o, "test_loss", num_or_null(r->test_loss));
        json_object_set_new(o, "test_accuracy", num_or_null(r->test_accuracy));
    }
    if (r->fed_evaluated) {
        json_object_set_new(o, "fed_loss", num_or_null(r->fed_loss));
        json_object_set_new(o, "fed_accuracy", num_or_null(r->fed_accuracy));
        json_object_set_new(o, "fed_clients", json_integer(r->fed_clients));
    }
    json_object_set_new(o, "bytes_up", json_integer((json_int_t)r->bytes_up));
    json_object_set_new(o, "bytes_down", json_integer((json_int_t)r->bytes_down));
    json_object_set_new(o, "bytes_up_raw", json_integer((json_int_t)r->bytes_up_raw));
    json_object_set_new(o, "bytes_down_raw", json_integer((json_int_t)r->bytes_down_raw));
    if (r->bytes_down_full)
        json_object_set_new(o, "bytes_down_full", json_integer((json_int_t)r->bytes_down_full));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "fit_seconds", json_real(r->fit_seconds));
    json_object_set_new(o, "update_norm", num_or_null(r->update_norm));
    if (r->dp_mode != FEDC_DP_OFF || r->dp_sgd) { /* DP */
        static const char *const modes[] = {"off", "central", "local"};
        json_object_set_new(o, "dp_mode", json_string(modes[r->dp_mode % 3]));
        if (r->dp_mode != FEDC_DP_OFF) {
            json_object_set_new(o, "epsilon", num_or_null(r->epsilon));
            json_object_set_new(o, "dp_order", num_or_null(r->dp_order));
            json_object_set_new(o, "dp_clip", num_or_null(r->dp_clip));
            json_object_set_new(o, "dp_noise_stddev", num_or_null(r->dp_noise_stddev));
            if (isfinite(r->dp_unclipped_fraction))
                json_object_set_new(o, "dp_unclipped_fraction",
                                    json_real(r->dp_unclipped_fraction));
        }
        if (r->dp_sgd) json_object_set_new(o, "dp_sgd_epsilon", num_or_null(r->dp_sgd_epsilon));
        json_object_set_new(o, "dp_delta", num_or_null(r->dp_delta));
        /* seeded test noise: the numbers above are not a privacy guarantee */
        json_object_set_new(o, "dp_private", json_boolean(!r->dp_seeded_noise));
        if (r->dp_budget_stop) {
            json_object_set_new(o, "dp_budget_stop", json_true());
            json_object_set_new(o, "dp_next_epsilon", num_or_null(r->dp_next_epsilon));
        }
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return s;
}

void report_csv_header(FILE *out)
{
    fprintf(out, "round,selected,participants,rejected,examples,train_loss,test_loss,"
                 "test_accuracy,fed_loss,fed_accuracy,bytes_up,bytes_down,bytes_up_raw,"
                 "bytes_down_raw,seconds,fit_seconds,"
                 "update_norm,epsilon,dp_clip,dp_noise_stddev,dp_unclipped_fraction,"
                 "dp_sgd_epsilon,dp_private\n");
}

static void csv_num(FILE *out, int have, double v)
{
    if (have && isfinite(v))
        fprintf(out, ",%.8g", v);
    else
        fputc(',', out);
}

void report_csv_row(FILE *out, const fedc_round_record *r)
{
    fprintf(out, "%u,%u,%u,%u,%llu", r->round, r->selected, r->participants, r->rejected,
            (unsigned long long)r->examples);
    csv_num(out, 1, r->train_loss);
    csv_num(out, r->evaluated, r->test_loss);
    csv_num(out, r->evaluated, r->test_accuracy);
    csv_num(out, r->fed_evaluated, r->fed_loss);
    csv_num(out, r->fed_evaluated, r->fed_accuracy);
    fprintf(out, ",%llu,%llu,%llu,%llu,%.4f,%.4f", (unsigned long long)r->bytes_up,
            (unsigned long long)r->bytes_down, (unsigned long long)r->bytes_up_raw,
            (unsigned long long)r->bytes_down_raw, r->seconds, r->fit_seconds);
    csv_num(out, 1, r->update_norm);
    /* DP: empty cells when DP is off */
    csv_num(out, 1, r->epsilon);
    csv_num(out, 1, r->dp_clip);
    csv_num(out, 1, r->dp_noise_stddev);
    csv_num(out, 1, r->dp_unclipped_fraction);
    csv_num(out, 1, r->dp_sgd_epsilon);
    if (r->dp_mode != FEDC_DP_OFF || r->dp_sgd)
        fputs(r->dp_seeded_noise ? ",0" : ",1", out);
    else
        fputc(',', out);
    fputc('\n', out);
}

/* ---- HTML ---- */

static void html_escape(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, f); /* XML: no controls */
        }
    }
}

/* A "nice" step for axis ticks covering span with about n ticks. */
static double nice_step(double span, int n)
{
    double raw = span / n, mag = pow(10, floor(log10(raw))), r = raw / mag;
    double step = r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10;
    return step * mag;
}

/* ---- charts (SVG), shared by report.html and `fedc plot` ---- */

/* The CSS of the chart classes; report.html has it in its page style, a standalone SVG
 * inline. */
#define CHART_CSS                                                                                  \
    ".ctitle{font-weight:600;font-size:14px;fill:#1d2330}"                                         \
    ".grid{stroke:#e6e8ec}.ytick{font-size:11px;fill:#667085;text-anchor:end}"                     \
    ".xtick{font-size:11px;fill:#667085;text-anchor:middle}"                                       \
    ".xlabel,.ylabel{font-size:12px;fill:#475467;text-anchor:middle}"                              \
    ".legend{font-size:12px;fill:#344054}.empty{fill:#98a2b3}"

const char *report_palette(int i)
{
    static const char *const colors[] = {"#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6",
                                         "#0ea5e9", "#ec4899", "#84cc16", "#64748b", "#a16207"};
    int n = (int)(sizeof colors / sizeof *colors);
    return colors[((i % n) + n) % n];
}

/* An axis value as tick text: bytes in SI units ("200 MB"), seconds with "s". */
static void format_tick(char *buf, size_t size, double v, report_axis_unit unit)
{
    if (unit == REPORT_AXIS_BYTES && v != 0) {
        static const char *const u[] = {"B", "kB", "MB", "GB", "TB", "PB"};
        int k = 0;
        while (fabs(v) >= 1000 - 1e-9 && k < 5) {
            v /= 1000;
            k++;
        }
        snprintf(buf, size, "%.3g %s", v, u[k]);
    } else if (unit == REPORT_AXIS_SECONDS && v != 0) {
        snprintf(buf, size, "%g s", v);
    } else {
        snprintf(buf, size, "%g", v);
    }
}

/* Tick positions of a log10 axis over [lo, hi] (lo > 0): the decades, plus 2 and 5 times
 * them when the range spans at most 2.5 decades. Returns the count (at most max). */
static int log_ticks(double lo, double hi, double *t, int max)
{
    int n = 0, d0 = (int)floor(log10(lo) + 1e-9), d1 = (int)ceil(log10(hi) - 1e-9);
    int fine = log10(hi / lo) <= 2.5;
    for (int d = d0; d <= d1 && n < max; d++)
        for (int m = 1; m <= 5 && n < max; m += (fine ? (m == 1 ? 1 : 3) : 10)) {
            double v = (double)m * pow(10, d);
            if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t[n++] = v;
        }
    return n;
}

static int point_ok(const report_chart *c, double x, double y)
{
    return isfinite(x) && isfinite(y) && (!c->log_x || x > 0);
}

/* A series is in the legend when it has a point to draw. */
static int series_shown(const report_chart *c, const report_series *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (point_ok(c, s->x[i], s->y[i])) return 1;
    return 0;
}

void report_chart_svg(FILE *f, const report_chart *c, const report_series *ss, int ns)
{
    const double W = c->width > 0 ? c->width : 460, H = c->height > 0 ? c->height : 260;
    const double L = 56, T = 34, B = 40;
    double R = 14;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    size_t maxn = 0;
    size_t namelen = 0;
    for (int s = 0; s < ns; s++) {
        int any = 0;
        for (size_t i = 0; i < ss[s].n; i++) {
            double x = ss[s].x[i], y = ss[s].y[i];
            if (!point_ok(c, x, 0)) continue;
            if (x < xmin) xmin = x; /* the x range covers records without a y value too */
            if (x > xmax) xmax = x;
            if (!isfinite(y)) continue;
            any = 1;
            if (y < ymin) ymin = y;
            if (y > ymax) ymax = y;
        }
        if (ss[s].n > maxn) maxn = ss[s].n;
        if (any && ss[s].name && strlen(ss[s].name) > namelen) namelen = strlen(ss[s].name);
    }
    if (c->legend_outside) R = 34 + 7.0 * (double)(namelen < 60 ? namelen : 60);
    /* the namespace only in a file of its own: report.html stays free of URLs */
    fprintf(f, "<svg%s viewBox='0 0 %.0f %.0f' class='chart' role='img'",
            c->standalone ? " xmlns='http://www.w3.org/2000/svg'" : "", W, H);
    if (c->standalone)
        fprintf(f,
                " width='%.0f' height='%.0f'><style>text{font-family:system-ui,-apple-system,"
                "'Segoe UI',sans-serif}" CHART_CSS "</style>"
                "<rect width='100%%' height='100%%' fill='#fff'/>",
                W, H);
    else
        fputc('>', f);
    fprintf(f, "<text x='%.0f' y='20' class='ctitle'>", L);
    html_escape(f, c->title);
    fputs("</text>", f);
    if (!(ymin <= ymax)) {
        fprintf(f, "<text x='%.0f' y='%.0f' class='empty'>no data</text></svg>", W / 2 - 25, H / 2);
        return;
    }
    if (c->y_from_zero && ymin > 0) ymin = 0;
    if (ymax - ymin < 1e-9) {
        ymax += fabs(ymax) * 0.05 + 1e-3;
        ymin -= fabs(ymin) * 0.05 + 1e-3;
    }
    double ystep = nice_step(ymax - ymin, 5);
    ymin = floor(ymin / ystep) * ystep;
    ymax = ceil(ymax / ystep) * ystep;
    double x0 = xmin, x1 = xmax;
    if (c->log_x) { /* a margin of 5% of the span (at least a factor 1.2) each side */
        double pad = pow(10, fmax(0.05 * log10(x1 / x0), log10(1.2)));
        x0 /= pad;
        x1 *= pad;
    } else if (x1 <= x0) {
        x1 = x0 + 1;
    }
    int any_bars = 0;
    for (int s = 0; s < ns; s++) any_bars |= ss[s].bars;
    if (any_bars && !c->log_x) { /* half a bar slot each side: bars stay inside the plot */
        double slot = (x1 - x0) / (double)(maxn > 1 ? maxn - 1 : 1);
        x0 -= slot / 2;
        x1 += slot / 2;
    }
    double pw = W - L - R, ph = H - T - B;
    double lx0 = c->log_x ? log10(x0) : x0, lx1 = c->log_x ? log10(x1) : x1;
#define PX(x) (L + ((c->log_x ? log10(x) : (x)) - lx0) / (lx1 - lx0) * pw)
#define PY(y) (T + (1 - ((y)-ymin) / (ymax - ymin)) * ph)
    for (double y = ymin; y <= ymax + ystep / 2; y += ystep) {
        fprintf(f, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='grid'/>", L, W - R, PY(y),
                PY(y));
        fprintf(f, "<text x='%.1f' y='%.1f' class='ytick'>%g</text>", L - 6, PY(y) + 4,
                fabs(y) < ystep / 1e6 ? 0 : y);
    }
    double ticks[64];
    int nt = 0;
    if (c->log_x) {
        nt = log_ticks(x0, x1, ticks, 64);
    } else {
        double xstep = nice_step(x1 - x0, 6);
        if (c->x_integer && xstep < 1) xstep = 1;
        for (double x = ceil(x0 / xstep) * xstep; x <= x1 + xstep * 1e-9 && nt < 64; x += xstep)
            ticks[nt++] = fabs(x) < xstep * 1e-9 ? 0 : x;
    }
    for (int i = 0; i < nt; i++) {
        char tb[32];
        format_tick(tb, sizeof tb, ticks[i], c->x_unit);
        if (c->x_grid)
            fprintf(f, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='grid'/>", PX(ticks[i]),
                    PX(ticks[i]), T, T + ph);
        fprintf(f, "<text x='%.1f' y='%.1f' class='xtick'>%s</text>", PX(ticks[i]), H - B + 16, tb);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' class='xlabel'>", L + pw / 2, H - 6);
    html_escape(f, c->xlabel);
    fprintf(f, "</text><text transform='translate(14,%.1f) rotate(-90)' class='ylabel'>",
            T + ph / 2);
    html_escape(f, c->ylabel);
    fputs("</text>", f);
    const char *xname = c->point_name ? c->point_name : c->xlabel;
    double bw = pw / (double)(maxn > 1 ? maxn : 1) * 0.7 / ns;
    for (int s = 0; s < ns; s++) {
        const char *color = ss[s].color ? ss[s].color : report_palette(s);
        char tb[32];
        if (ss[s].bars) {
            for (size_t i = 0; i < ss[s].n; i++) {
                double xv = ss[s].x[i], v = ss[s].y[i];
                if (!point_ok(c, xv, v)) continue;
                double x = PX(xv) - bw * ns / 2 + bw * s;
                format_tick(tb, sizeof tb, xv, c->x_unit);
                fprintf(f,
                        "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s'>"
                        "<title>",
                        x, PY(v), bw, PY(ymin) - PY(v), color);
                html_escape(f, xname);
                fprintf(f, " %s: %g</title></rect>", tb, v);
            }
            continue;
        }
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2'%s points='", color,
                s >= 10 ? " stroke-dasharray='6 3'" : "");
        size_t shown = 0;
        for (size_t i = 0; i < ss[s].n; i++)
            if (point_ok(c, ss[s].x[i], ss[s].y[i])) {
                fprintf(f, "%.1f,%.1f ", PX(ss[s].x[i]), PY(ss[s].y[i]));
                shown++;
            }
        fputs("'/>", f);
        for (size_t i = 0; i < ss[s].n && shown <= 60; i++) {
            double xv = ss[s].x[i], v = ss[s].y[i];
            if (!point_ok(c, xv, v)) continue;
            format_tick(tb, sizeof tb, xv, c->x_unit);
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s'><title>", PX(xv), PY(v),
                    color);
            if (c->legend_outside) {
                html_escape(f, ss[s].name);
                fputs(", ", f);
            }
            html_escape(f, xname);
            fprintf(f, " %s: %.4g</title></circle>", tb, v);
        }
    }
    /* legend: only the series that have data; outside the plot a column on the right, inside
     * one line in the title row, right-aligned (a column there would run into the plot) */
    double line_w = 0; /* entries in one line: swatch, name (~6.5 px a character), gap */
    for (int s = 0; s < ns; s++)
        if (series_shown(c, &ss[s])) line_w += 14 + 6.5 * (double)strlen(ss[s].name) + 14;
    double lx = c->legend_outside ? W - R + 14 : W - R - line_w + 14;
    double ly = c->legend_outside ? T : 8;
    int shown = 0;
    for (int s = 0; s < ns; s++) {
        if (!series_shown(c, &ss[s])) continue;
        fprintf(f, "<rect x='%.0f' y='%.0f' width='10' height='10' fill='%s'/>", lx,
                c->legend_outside ? ly + 16.0 * shown : ly,
                ss[s].color ? ss[s].color : report_palette(s));
        fprintf(f, "<text x='%.0f' y='%.0f' class='legend'>", lx + 14,
                c->legend_outside ? ly + 9.0 + 16 * shown : ly + 9.0);
        html_escape(f, ss[s].name);
        fputs("</text>", f);
        if (!c->legend_outside) lx += 14 + 6.5 * (double)strlen(ss[s].name) + 14;
        shown++;
    }
#undef PX
#undef PY
    fputs("</svg>", f);
}

int report_write_svg(const char *path, const report_chart *c, const report_series *s, int ns)
{
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (!f) return -1;
    report_chart sc = *c;
    sc.standalone = 1;
    fputs("<?xml version='1.0' encoding='UTF-8'?>\n", f);
    report_chart_svg(f, &sc, s, ns);
    fputc('\n', f);
    int bad = ferror(f);
    if (f == stdout) return (fflush(f) != 0 || bad) ? -1 : 0;
    return (fclose(f) != 0 || bad) ? -1 : 0;
}

/* ---- report.html ---- */

typedef struct rec_series {
    const char *name;
    const char *color;
    double (*get)(const fedc_round_record *r, int *have);
    int bars;
} rec_series;

static double get_acc(const fedc_round_record *r, int *have)
{
    *have = r->evaluated && isfinite(r->test_accuracy);
    return 100 * r->test_accuracy;
}
static double get_fed_acc(const fedc_round_record *r, int *have)
{
    *have = r->fed_evaluated && isfinite(r->fed_accuracy);
    return 100 * r->fed_accuracy;
}
static double get_test_loss(const fedc_round_record *r, int *have)
{
    *have = r->evaluated && isfinite(r->test_loss);
    return r->test_loss;
}
static double get_train_loss(const fedc_round_record *r, int *have)
{
    *have = isfinite(r->train_loss) && r->participants > 0;
    return r->train_loss;
}
static double get_participants(const fedc_round_record *r, int *have)
{
    *have = 1;
    return r->participants;
}
static double get_rejected(const fedc_round_record *r, int *have)
{
    *have = r->rejected > 0;
    return r->rejected;
}
static double get_mb(const fedc_round_record *r, int *have)
{
    *have = 1;
    return (double)(r->bytes_up + r->bytes_down) / 1e6;
}
static double get_seconds(const fedc_round_record *r, int *have)
{
    *have = 1;
    return r->seconds;
}
/* DP */
static double get_epsilon(const fedc_round_record *r, int *have)
{
    *have = isfinite(r->epsilon);
    return r->epsilon;
}
static double get_sgd_epsilon(const fedc_round_record *r, int *have)
{
    *have = isfinite(r->dp_sgd_epsilon);
    return r->dp_sgd_epsilon;
}
static double get_dp_clip(const fedc_round_record *r, int *have)
{
    *have = isfinite(r->dp_clip);
    return r->dp_clip;
}
static int any_dp(const fedc_round_record *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (recs[i].dp_mode != FEDC_DP_OFF || recs[i].dp_sgd) return 1;
    return 0;
}

/* One chart of the report: x = round, y = each series' value (NaN where a record has none). */
static void chart(FILE *f, const char *title, const char *ylabel, const rec_series *rs, int ns,
                  const fedc_round_record *recs, size_t n, int y_from_zero)
{
    enum { MAX_SERIES = 4 };
    assert(ns <= MAX_SERIES);
    report_series ss[MAX_SERIES];
    double *buf = malloc((n ? n : 1) * (size_t)(ns + 1) * sizeof *buf);
    if (!buf) return; /* out of memory: the chart is left out */
    double *x = buf;
    for (size_t i = 0; i < n; i++) x[i] = recs[i].round;
    for (int s = 0; s < ns; s++) {
        double *y = buf + (size_t)(s + 1) * n;
        for (size_t i = 0; i < n; i++) {
            int have;
            double v = rs[s].get(&recs[i], &have);
            y[i] = have ? v : NAN;
        }
        ss[s] = (report_series){rs[s].name, rs[s].color, x, y, n, rs[s].bars};
    }
    report_chart c = {.title = title,
                      .xlabel = "round",
                      .ylabel = ylabel,
                      .y_from_zero = y_from_zero,
                      .x_integer = 1};
    report_chart_svg(f, &c, ss, ns);
    free(buf);
}

static const fedc_round_record *best_eval(const fedc_round_record *recs, size_t n)
{
    const fedc_round_record *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (recs[i].evaluated && (!best || recs[i].test_accuracy > best->test_accuracy))
            best = &recs[i];
    return best;
}

static const fedc_round_record *last_eval(const fedc_round_record *recs, size_t n)
{
    for (size_t i = n; i > 0; i--)
        if (recs[i - 1].evaluated) return &recs[i - 1];
    return NULL;
}

int report_write_html(const char *path, const report_info *info, const fedc_round_record *recs,
                      size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    const fedc_round_record *last = last_eval(recs, n), *best = best_eval(recs, n);
    double bytes = 0, fit = 0, wall = 0;
    for (size_t i = 0; i < n; i++) {
        bytes += (double)(recs[i].bytes_up + recs[i].bytes_down);
        fit += recs[i].fit_seconds;
        wall += recs[i].seconds;
    }
    fputs("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
          "<meta name='viewport' content='width=device-width, initial-scale=1'><title>fedc: ",
          f);
    html_escape(f, info->title);
    fputs("</title><style>"
          "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;"
          "background:#f6f7f9;color:#1d2330}"
          "header{background:#1d2330;color:#fff;padding:22px 32px}"
          "header h1{margin:0;font-size:22px;font-weight:600}"
          "header p{margin:4px 0 0;color:#aab3c5}"
          "main{max-width:1000px;margin:0 auto;padding:20px 24px 40px}"
          ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;"
          "margin:6px 0 20px}"
          ".card{background:#fff;border-radius:10px;padding:14px 16px;"
          "box-shadow:0 1px 3px rgba(0,0,0,.08)}"
          ".card .v{font-size:26px;font-weight:650}.card .k{color:#667085;font-size:13px}"
          ".charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:14px}"
          ".chart{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);"
          "width:100%;height:auto}" CHART_CSS
          "table{border-collapse:collapse;width:100%;background:#fff;border-radius:10px;"
          "overflow:hidden;box-shadow:0 1px 3px rgba(0,0,0,.08);font-size:13px}"
          "th,td{padding:6px 10px;text-align:right;border-bottom:1px solid #eef0f3}"
          "th{background:#f0f2f5;font-weight:600}td:first-child,th:first-child{text-align:left}"
          "h2{font-size:17px;margin:28px 0 10px}"
          "pre{background:#fff;padding:12px 16px;border-radius:10px;overflow:auto;"
          "box-shadow:0 1px 3px rgba(0,0,0,.08);font-size:12.5px}"
          "dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}"
          "dt{color:#667085}dd{margin:0;font-family:ui-monospace,monospace;word-break:break-all}"
          ".warn{background:#fef2f2;color:#991b1b;border-radius:10px;padding:10px 14px}"
          "</style></head><body><header><h1>",
          f);
    html_escape(f, info->title);
    fputs("</h1><p>", f);
    fprintf(f, "%s on ", info->strategy);
    html_escape(f, info->dataset);
    fprintf(f, " &middot; model <b>");
    html_escape(f, info->model);
    fprintf(f, "</b> (%zu parameters) &middot; %ld clients, %ld per round, %s partition</p>"
               "</header><main><div class='cards'>",
            info->params, info->clients, info->per_round, info->partition);
    if (last)
        fprintf(f, "<div class='card'><div class='v'>%.2f%%</div><div class='k'>final test "
                   "accuracy (round %u)</div></div>",
                100 * last->test_accuracy, last->round);
    if (best)
        fprintf(f, "<div class='card'><div class='v'>%.2f%%</div><div class='k'>best test "
                   "accuracy (round %u)</div></div>",
                100 * best->test_accuracy, best->round);
    fprintf(f, "<div class='card'><div class='v'>%zu</div><div class='k'>rounds in %.1f s "
               "(%.1f rounds/min)</div></div>",
            n, info->total_seconds, info->total_seconds > 0 ? 60.0 * n / info->total_seconds : 0);
    fprintf(f, "<div class='card'><div class='v'>%.1f MB</div><div class='k'>sent and received"
               "</div></div>",
            bytes / 1e6);
    fprintf(f, "<div class='card'><div class='v'>%.1f%%</div><div class='k'>of round time in "
               "local training (%d threads)</div></div>",
            wall > 0 ? 100 * fit / (wall * info->threads) : 0, info->threads);

    const fedc_round_record *lastr = n ? &recs[n - 1] : NULL;
    int dp = any_dp(recs, n);
    if (dp && lastr) { /* DP: what the run spent, and whether it is a guarantee */
        static const char *const modes[] = {"off", "central", "local"};
        if (isfinite(lastr->epsilon))
            fprintf(f, "<div class='card'><div class='v'>&epsilon; = %.4g</div><div class='k'>"
                       "user-level DP (%s), &delta; = %g, after round %u</div></div>",
                    lastr->epsilon, modes[lastr->dp_mode % 3], lastr->dp_delta, lastr->round);
        if (isfinite(lastr->dp_sgd_epsilon))
            fprintf(f, "<div class='card'><div class='v'>&epsilon; = %.4g</div><div class='k'>"
                       "example-level DP-SGD (largest over clients), &delta; = %g</div></div>",
                    lastr->dp_sgd_epsilon, lastr->dp_delta);
        fputs("</div>", f);
        if (lastr->dp_seeded_noise)
            fputs("<p class='warn'><b>NOT PRIVATE:</b> this run used seeded test noise "
                  "(dp.seeded_noise); its &epsilon; values describe the mechanism, not a "
                  "guarantee.</p>",
                  f);
        if (lastr->dp_budget_stop)
            fprintf(f, "<p class='warn'>Stopped after round %u: round %u would have spent "
                       "&epsilon; = %.4g, more than dp.epsilon_budget.</p>",
                    lastr->round, lastr->round + 1, lastr->dp_next_epsilon);
        fputs("<div class='cards'>", f);
    }
    fputs("</div><div class='charts'>", f);
    rec_series acc[] = {{"central test", "#2563eb", get_acc, 0},
                        {"federated (clients' test)", "#f59e0b", get_fed_acc, 0}};
    chart(f, "Test accuracy", "accuracy (%)", acc, 2, recs, n, 0);
    rec_series loss[] = {{"train (clients)", "#10b981", get_train_loss, 0},
                         {"central test", "#2563eb", get_test_loss, 0}};
    chart(f, "Loss", "cross-entropy", loss, 2, recs, n, 0);
    rec_series part[] = {{"accepted", "#6366f1", get_participants, 1},
                         {"rejected or failed", "#ef4444", get_rejected, 1}};
    chart(f, "Participation", "clients", part, 2, recs, n, 1);
    rec_series comm[] = {{"MB up + down", "#8b5cf6", get_mb, 1}};
    chart(f, "Communication per round", "MB", comm, 1, recs, n, 1);
    rec_series secs[] = {{"wall seconds", "#0ea5e9", get_seconds, 1}};
    chart(f, "Round time", "seconds", secs, 1, recs, n, 1);
    if (dp) { /* DP */
        rec_series eps[] = {{"user-level", "#dc2626", get_epsilon, 0},
                            {"example-level (DP-SGD)", "#7c3aed", get_sgd_epsilon, 0}};
        chart(f, "Privacy spent (epsilon per round)", "epsilon", eps, 2, recs, n, 1);
        rec_series clip[] = {{"clip C", "#0891b2", get_dp_clip, 0}};
        chart(f, "DP clip", "L2 clip", clip, 1, recs, n, 1);
    }
    fputs("</div><h2>Rounds</h2><table><tr><th>round</th><th>clients</th><th>examples</th>"
          "<th>train loss</th><th>test loss</th><th>test acc.</th><th>MB</th><th>seconds</th>",
          f);
    if (dp) fputs("<th>&epsilon;</th>", f); /* DP */
    fputs("</tr>", f);
    for (size_t i = 0; i < n; i++) {
        const fedc_round_record *r = &recs[i];
        fprintf(f, "<tr><td>%u</td><td>%u/%u</td><td>%llu</td><td>%.4f</td>", r->round,
                r->participants, r->selected, (unsigned long long)r->examples, r->train_loss);
        if (r->evaluated)
            fprintf(f, "<td>%.4f</td><td>%.2f%%</td>", r->test_loss, 100 * r->test_accuracy);
        else
            fputs("<td>&ndash;</td><td>&ndash;</td>", f);
        fprintf(f, "<td>%.2f</td><td>%.2f</td>", (double)(r->bytes_up + r->bytes_down) / 1e6,
                r->seconds);
        if (dp) { /* DP */
            double e = isfinite(r->epsilon) ? r->epsilon : r->dp_sgd_epsilon;
            if (isfinite(e))
                fprintf(f, "<td>%.4g</td>", e);
            else
                fputs("<td>&ndash;</td>", f);
        }
        fputs("</tr>", f);
    }
    fputs("</table><h2>Run</h2><div class='card'><dl>", f);
    fputs("<dt>model_sha256</dt><dd>", f);
    html_escape(f, info->model_sha256);
    fprintf(f, "</dd><dt>threads</dt><dd>%d</dd><dt>wall time</dt><dd>%.2f s</dd>"
               "<dt>local training</dt><dd>%.2f s (summed over clients)</dd></dl></div>",
            info->threads, info->total_seconds, fit);
    fputs("<h2>Configuration</h2><pre>", f);
    html_escape(f, info->config_text);
    fputs("</pre></main></body></html>\n", f);
    int bad = ferror(f);
    return (fclose(f) != 0 || bad) ? -1 : 0;
}
