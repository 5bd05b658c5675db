/*
 * Run outputs: metrics.jsonl and metrics.csv (one line per round), and report.html, a
 * self-contained page with the run's plots drawn as inline SVG, readable with no network.
 * Runs with differential privacy add their DP fields (epsilon spent, clip, noise; the blocks
 * marked "DP") and an epsilon-per-round chart.
 */
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
        default: fputc(*s, f);
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

typedef struct series {
    const char *name;
    const char *color;
    double (*get)(const fedc_round_record *r, int *have);
    int bars;
} series;

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

/* One SVG chart: x = round, y = the series. */
static void chart(FILE *f, const char *title, const char *ylabel, const series *ss, int ns,
                  const fedc_round_record *recs, size_t n, int y_from_zero)
{
    const double W = 460, H = 260, L = 56, R = 14, T = 34, B = 40;
    double ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < ns; s++)
        for (size_t i = 0; i < n; i++) {
            int have;
            double v = ss[s].get(&recs[i], &have);
            if (!have) continue;
            if (v < ymin) ymin = v;
            if (v > ymax) ymax = v;
        }
    fprintf(f, "<svg viewBox='0 0 %.0f %.0f' class='chart' role='img'>", W, H);
    fprintf(f, "<text x='%.0f' y='20' class='ctitle'>", L);
    html_escape(f, title);
    fputs("</text>", f);
    if (!(ymin <= ymax) || n == 0) {
        fprintf(f, "<text x='%.0f' y='%.0f' class='empty'>no data</text></svg>", W / 2 - 25, H / 2);
        return;
    }
    if (y_from_zero && ymin > 0) ymin = 0;
    if (ymax - ymin < 1e-9) {
        ymax += fabs(ymax) * 0.05 + 1e-3;
        ymin -= fabs(ymin) * 0.05 + 1e-3;
    }
    double ystep = nice_step(ymax - ymin, 5);
    ymin = floor(ymin / ystep) * ystep;
    ymax = ceil(ymax / ystep) * ystep;
    double x0 = recs[0].round, x1 = recs[n - 1].round;
    if (x1 <= x0) x1 = x0 + 1;
    double pw = W - L - R, ph = H - T - B;
#define PX(x) (L + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (T + (1 - ((y) - ymin) / (ymax - ymin)) * ph)
    for (double y = ymin; y <= ymax + ystep / 2; y += ystep) {
        fprintf(f, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='grid'/>", L, W - R, PY(y),
                PY(y));
        fprintf(f, "<text x='%.1f' y='%.1f' class='ytick'>%g</text>", L - 6, PY(y) + 4,
                fabs(y) < ystep / 1e6 ? 0 : y);
    }
    double xstep = nice_step(x1 - x0, 6);
    if (xstep < 1) xstep = 1;
    for (double x = ceil(x0 / xstep) * xstep; x <= x1 + 1e-9; x += xstep)
        fprintf(f, "<text x='%.1f' y='%.1f' class='xtick'>%g</text>", PX(x), H - B + 16, x);
    fprintf(f, "<text x='%.1f' y='%.1f' class='xlabel'>round</text>", L + pw / 2, H - 6);
    fprintf(f, "<text transform='translate(14,%.1f) rotate(-90)' class='ylabel'>", T + ph / 2);
    html_escape(f, ylabel);
    fputs("</text>", f);
    double bw = pw / (double)(n > 1 ? n : 1) * 0.7 / ns;
    for (int s = 0; s < ns; s++) {
        if (ss[s].bars) {
            for (size_t i = 0; i < n; i++) {
                int have;
                double v = ss[s].get(&recs[i], &have);
                if (!have) continue;
                double x = PX(recs[i].round) - bw * ns / 2 + bw * s;
                fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s'>"
                           "<title>round %u: %g</title></rect>",
                        x, PY(v), bw, PY(ymin) - PY(v), ss[s].color, recs[i].round, v);
            }
            continue;
        }
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", ss[s].color);
        for (size_t i = 0; i < n; i++) {
            int have;
            double v = ss[s].get(&recs[i], &have);
            if (have) fprintf(f, "%.1f,%.1f ", PX(recs[i].round), PY(v));
        }
        fputs("'/>", f);
        for (size_t i = 0; i < n; i++) {
            int have;
            double v = ss[s].get(&recs[i], &have);
            if (have && n <= 60)
                fprintf(f, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s'><title>round %u: %.4g"
                           "</title></circle>",
                        PX(recs[i].round), PY(v), ss[s].color, recs[i].round, v);
        }
    }
    /* legend: only the series that have data */
    double lx = W - R - 150;
    int shown = 0;
    for (int s = 0; s < ns; s++) {
        int any = 0;
        for (size_t i = 0; i < n && !any; i++) ss[s].get(&recs[i], &any);
        if (!any) continue;
        fprintf(f, "<rect x='%.0f' y='%.0f' width='10' height='10' fill='%s'/>", lx,
                8.0 + 14 * shown, ss[s].color);
        fprintf(f, "<text x='%.0f' y='%.0f' class='legend'>", lx + 14, 17.0 + 14 * shown);
        html_escape(f, ss[s].name);
        fputs("</text>", f);
        shown++;
    }
#undef PX
#undef PY
    fputs("</svg>", f);
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
          "width:100%;height:auto}"
          ".ctitle{font-weight:600;font-size:14px;fill:#1d2330}"
          ".grid{stroke:#e6e8ec}.ytick{font-size:11px;fill:#667085;text-anchor:end}"
          ".xtick{font-size:11px;fill:#667085;text-anchor:middle}"
          ".xlabel,.ylabel{font-size:12px;fill:#475467;text-anchor:middle}"
          ".legend{font-size:12px;fill:#344054}.empty{fill:#98a2b3}"
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
    series acc[] = {{"central test", "#2563eb", get_acc, 0},
                    {"federated (clients' test)", "#f59e0b", get_fed_acc, 0}};
    chart(f, "Test accuracy", "accuracy (%)", acc, 2, recs, n, 0);
    series loss[] = {{"train (clients)", "#10b981", get_train_loss, 0},
                     {"central test", "#2563eb", get_test_loss, 0}};
    chart(f, "Loss", "cross-entropy", loss, 2, recs, n, 0);
    series part[] = {{"accepted", "#6366f1", get_participants, 1},
                     {"rejected or failed", "#ef4444", get_rejected, 1}};
    chart(f, "Participation", "clients", part, 2, recs, n, 1);
    series comm[] = {{"MB up + down", "#8b5cf6", get_mb, 1}};
    chart(f, "Communication per round", "MB", comm, 1, recs, n, 1);
    series secs[] = {{"wall seconds", "#0ea5e9", get_seconds, 1}};
    chart(f, "Round time", "seconds", secs, 1, recs, n, 1);
    if (dp) { /* DP */
        series eps[] = {{"user-level", "#dc2626", get_epsilon, 0},
                        {"example-level (DP-SGD)", "#7c3aed", get_sgd_epsilon, 0}};
        chart(f, "Privacy spent (epsilon per round)", "epsilon", eps, 2, recs, n, 1);
        series clip[] = {{"clip C", "#0891b2", get_dp_clip, 0}};
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
