/* Run outputs of `fedc sim` (and later `fedc server`): metrics files and the HTML report. */
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
/* Writes the self-contained HTML report (inline SVG plots, no network). Returns 0 or -1. */
int report_write_html(const char *path, const report_info *info, const fedc_round_record *recs,
                      size_t n);

#endif
