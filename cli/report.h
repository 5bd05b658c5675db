/* Run outputs of `fedc sim` (and `fedc server`): metrics files, the HTML report, and the SVG
 * charts they share with `fedc plot`. */
#ifndef FEDC_CLI_REPORT_H
#define FEDC_CLI_REPORT_H

#include <stdio.h>

#include "fedc/engine.h"

/* What the report says about the run besides its rounds. */
typedef struct report_info {
    const char *title;        /* "fmnist-fedavg" */
    const char *dataset;      /* dataset description */
    const char *model;        /* model spec */
    size_t params;
    const char *strategy;
    const char *partition;
    long clients, per_round;
    int threads;
    double total_seconds;
    const char *model_sha256;
    const char *config_text; /* the effective config as INI text */
} report_info;

/* One JSON object (no newline) describing rec, into a malloc'd string (free()). */
char *report_record_json(const fedc_round_record *rec);
/* The CSV header line and one row. */
void report_csv_header(FILE *out);
void report_csv_row(FILE *out, const fedc_round_record *rec);
/* ---- charts: inline SVG, in report.html and standalone (`fedc plot`) ---- */

/* One line (or set of bars) of a chart: n points (x[i], y[i]); a NaN y is a record without a
 * value (no point, the x range still covers it). The arrays are the caller's. */
typedef struct report_series {
    const char *name;  /* legend text */
    const char *color; /* CSS colour; NULL: report_palette(index of the series) */
    const double *x, *y;
    size_t n;
    int bars; /* bars at each x instead of a line */
} report_series;

typedef enum report_axis_unit {
    REPORT_AXIS_NUMBER,
    REPORT_AXIS_BYTES,   /* tick text in SI units: "200 MB" */
    REPORT_AXIS_SECONDS, /* "30 s" */
} report_axis_unit;

typedef struct report_chart {
    const char *title, *xlabel, *ylabel;
    const char *point_name; /* the x quantity in point tooltips (NULL: xlabel) */
    double width, height;   /* viewBox size; 0: 460 x 260 */
    int log_x;              /* log10 x axis; points with x <= 0 are left out */
    int x_integer;          /* x ticks at whole numbers (rounds) */
    int x_grid;             /* vertical grid lines at the x ticks */
    int y_from_zero;        /* the y axis starts at 0 when all values are positive */
    int legend_outside;     /* legend right of the plot area (many or long names) */
    int standalone;         /* a file of its own: size, inline CSS, white background */
    report_axis_unit x_unit;
} report_chart;

/* A colour per series index: ten distinct colours, then again (lines from the eleventh on are
 * dashed). */
const char *report_palette(int i);
/* Writes c as one <svg> element with ns series; "no data" when no series has a point. Text is
 * escaped. */
void report_chart_svg(FILE *f, const report_chart *c, const report_series *s, int ns);
/* Writes a self-contained SVG file (path "-": stdout). Returns 0, or -1 with errno set. */
int report_write_svg(const char *path, const report_chart *c, const report_series *s, int ns);

/* Writes the self-contained HTML report (inline SVG plots, no network). Returns 0 or -1. */
int report_write_html(const char *path, const report_info *info, const fedc_round_record *recs,
                      size_t n);

#endif
