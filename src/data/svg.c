/*
 * A picture of a partition: an SVG heat map, clients down, classes across, each cell coloured
 * by the share of the client's samples in that class (ColorBrewer YlGnBu; white = none), each
 * client's size as a bar on the right (training and test parts), a colour legend, axis labels
 * and a title with summary statistics. Cells carry <title> tooltips when the map is not huge.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "data/data_internal.h"

#define SVG_MAX_ROWS 400
#define SVG_FONT "DejaVu Sans, Helvetica, Arial, sans-serif"

static void put_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, out);
            else fputs("\xe2\x90\xa3", out); /* control characters (LEAF's '\n') as a visible sign */
        }
    }
}

/* YlGnBu, 9 classes (ColorBrewer, Cynthia Brewer, colorbrewer2.org). */
static const unsigned char palette[9][3] = {
    {0xff, 0xff, 0xd9}, {0xed, 0xf8, 0xb1}, {0xc7, 0xe9, 0xb4}, {0x7f, 0xcd, 0xbb}, {0x41, 0xb6, 0xc4},
    {0x1d, 0x91, 0xc0}, {0x22, 0x5e, 0xa8}, {0x25, 0x34, 0x94}, {0x08, 0x1d, 0x58}};

static void colour(double t, char buf[8])
{
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i >= 8) i = 7;
    double f = x - i;
    int rgb[3];
    for (int c = 0; c < 3; c++)
        rgb[c] = (int)lround(palette[i][c] + f * (palette[i + 1][c] - palette[i][c]));
    snprintf(buf, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

/* A "nice" upper bound for the colour scale: the smallest of these >= the largest share. */
static double nice_max(double m)
{
    static const double steps[] = {0.05, 0.1, 0.2, 0.25, 0.4, 0.5, 0.6, 0.8, 1.0};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (m <= steps[i] + 1e-12) return steps[i];
    return 1.0;
}

/* A round tick step giving about `want` ticks up to max. */
static double tick_step(double max, int want)
{
    double raw = max / want, p = pow(10, floor(log10(raw > 0 ? raw : 1)));
    double r = raw / p;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * p;
}

static const char *class_label(const fedc_dataset *ds, int32_t c, char *buf, size_t size)
{
    const char *name = ds ? fedc_dataset_class_name(ds, c) : NULL;
    if (name) return name;
    snprintf(buf, size, "%ld", (long)c);
    return buf;
}

fedc_status fedc_partition_write_svg(const fedc_partition *p, const fedc_dataset *ds,
                                     const char *title, FILE *out, fedc_err *err)
{
    uint32_t k = fedc_partition_num_clients(p);
    int32_t nc = fedc_partition_num_classes(p);
    uint32_t rows = k < SVG_MAX_ROWS ? k : SVG_MAX_ROWS;
    int named = ds && fedc_dataset_class_name(ds, 0) != NULL;

    /* Geometry. */
    double cw = 560.0 / nc;
    if (cw > 44) cw = 44;
    if (cw < 5) cw = 5;
    double ch = 640.0 / rows;
    if (ch > 18) ch = 18;
    if (ch < 1.5) ch = 1.5;
    double map_w = cw * nc, map_h = ch * rows;
    double left = 78, top = 112 + (named ? 70 : 24);
    double bar_x = left + map_w + 24, bar_w = 170;
    double width = bar_x + bar_w + 40;
    double legend_y = top + map_h + 46;
    double height = legend_y + 70;
    if (width < 640) width = 640;

    /* Data ranges. */
    size_t max_size = 1;
    double max_share = 0;
    for (uint32_t c = 0; c < rows; c++) {
        const uint32_t *tr = fedc_partition_label_counts(p, c, FEDC_SPLIT_TRAIN);
        const uint32_t *te = fedc_partition_label_counts(p, c, FEDC_SPLIT_TEST);
        size_t size = fedc_partition_size(p, c, FEDC_SPLIT_TRAIN) + fedc_partition_size(p, c, FEDC_SPLIT_TEST);
        if (size > max_size) max_size = size;
        for (int32_t j = 0; j < nc && size; j++) {
            double s = (double)(tr[j] + te[j]) / (double)size;
            if (s > max_share) max_share = s;
        }
    }
    double smax = nice_max(max_share);
    fedc_partition_stats stats;
    fedc_partition_get_stats(p, &stats);
    int tooltips = (size_t)rows * (size_t)nc <= 40000;

    fprintf(out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"%s\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
            width, height, width, height, SVG_FONT);
    /* Title and summary. */
    fprintf(out, "<text x=\"%.1f\" y=\"30\" font-size=\"17\" font-weight=\"bold\" fill=\"#222\">",
            left);
    put_escaped(out, title && *title ? title : "Partition");
    fprintf(out, "</text>\n");
    fprintf(out,
            "<text x=\"%.1f\" y=\"52\" font-size=\"12\" fill=\"#555\">%u clients, %ld classes; "
            "samples per client %zu to %zu (mean %.1f, sd %.1f)</text>\n",
            left, k, (long)nc, stats.min_size, stats.max_size, stats.mean_size, stats.std_size);
    fprintf(out,
            "<text x=\"%.1f\" y=\"68\" font-size=\"12\" fill=\"#555\">classes per client %.2f; "
            "label skew (mean total-variation distance to the overall mix) %.3f</text>\n",
            left, stats.mean_classes, stats.mean_tv);
    if (rows < k)
        fprintf(out, "<text x=\"%.1f\" y=\"84\" font-size=\"12\" fill=\"#a33\">showing the first %u "
                     "of %u clients</text>\n",
                left, rows, k);

    /* Class labels across the top, the axis title above them. */
    /* Label every cstep-th class: rotated names need a line height, numbers their width. */
    int digits = nc > 1 ? (int)floor(log10((double)(nc - 1))) + 1 : 1;
    double need = named ? 12.0 : digits * 6.5 + 5;
    int cstep = 1;
    static const int class_steps[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};
    for (size_t i = 0; i < sizeof class_steps / sizeof class_steps[0]; i++) {
        cstep = class_steps[i];
        if (cstep * cw >= need) break;
    }
    fprintf(out, "<g font-size=\"11\" fill=\"#333\">\n");
    for (int32_t j = 0; j < nc; j += cstep) {
        char buf[32];
        double x = left + (j + 0.5) * cw;
        if (named)
            fprintf(out, "<text transform=\"translate(%.1f,%.1f) rotate(-45)\">", x + 3, top - 6);
        else
            fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x, top - 6);
        put_escaped(out, class_label(ds, j, buf, sizeof buf));
        fprintf(out, "</text>\n");
    }
    fprintf(out, "</g>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
                 "fill=\"#222\">class</text>\n",
            left + map_w / 2, named ? 106.0 : top - 22);

    /* Client labels down the left, the axis title rotated. */
    int rstep = (int)ceil(11.0 / ch);
    static const int nice_steps[] = {1, 2, 5, 10, 20, 25, 50, 100, 200, 500};
    for (size_t i = 0; i < sizeof nice_steps / sizeof nice_steps[0]; i++)
        if (nice_steps[i] >= rstep) {
            rstep = nice_steps[i];
            break;
        }
    fprintf(out, "<g font-size=\"10\" fill=\"#333\" text-anchor=\"end\">\n");
    for (uint32_t c = 0; c < rows; c += (uint32_t)rstep)
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" dominant-baseline=\"middle\">%u</text>\n",
                left - 6, top + (c + 0.5) * ch, c);
    fprintf(out, "</g>\n<text transform=\"translate(%.1f,%.1f) rotate(-90)\" font-size=\"13\" "
                 "text-anchor=\"middle\" fill=\"#222\">client</text>\n",
            left - 48, top + map_h / 2);

    /* The heat map. */
    fprintf(out, "<g shape-rendering=\"crispEdges\">\n");
    fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ffffff\"/>\n",
            left, top, map_w, map_h);
    for (uint32_t c = 0; c < rows; c++) {
        const uint32_t *tr = fedc_partition_label_counts(p, c, FEDC_SPLIT_TRAIN);
        const uint32_t *te = fedc_partition_label_counts(p, c, FEDC_SPLIT_TEST);
        size_t size = fedc_partition_size(p, c, FEDC_SPLIT_TRAIN) + fedc_partition_size(p, c, FEDC_SPLIT_TEST);
        for (int32_t j = 0; j < nc; j++) {
            uint32_t m = tr[j] + te[j];
            if (!m) continue;
            double share = (double)m / (double)size;
            char col[8], buf[32];
            colour(share / smax, col);
            fprintf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\">",
                    left + j * cw, top + c * ch, cw, ch, col);
            if (tooltips) {
                fprintf(out, "<title>client %u, class ", c);
                put_escaped(out, class_label(ds, j, buf, sizeof buf));
                fprintf(out, ": %u of %zu samples (%.1f%%)</title>", m, size, 100 * share);
            }
            fprintf(out, "</rect>\n");
        }
    }
    fprintf(out, "</g>\n");
    /* Faint grid between classes when cells are wide enough, and a frame. */
    if (cw >= 8) {
        fprintf(out, "<g stroke=\"#e4e4e4\" stroke-width=\"0.6\">\n");
        for (int32_t j = 1; j < nc; j++)
            fprintf(out, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\"/>\n", left + j * cw,
                    top, left + j * cw, top + map_h);
        fprintf(out, "</g>\n");
    }
    fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                 "stroke=\"#888\" stroke-width=\"1\"/>\n",
            left, top, map_w, map_h);

    /* Client sizes: train (dark) and test (light) bars. */
    double tstep = tick_step((double)max_size, 4);
    double axis_max = ceil((double)max_size / tstep) * tstep;
    double scale = bar_w / axis_max;
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
                 "fill=\"#222\">samples per client</text>\n",
            bar_x + bar_w / 2, top - 22);
    fprintf(out, "<g font-size=\"10\" fill=\"#555\" text-anchor=\"middle\">\n");
    for (double t = 0; t <= axis_max + 1e-9; t += tstep) {
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                bar_x + t * scale, top, bar_x + t * scale, top + map_h);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%.0f</text>\n", bar_x + t * scale, top - 6, t);
    }
    fprintf(out, "</g>\n<g shape-rendering=\"crispEdges\">\n");
    double gap = ch >= 4 ? 1 : 0;
    for (uint32_t c = 0; c < rows; c++) {
        size_t ntr = fedc_partition_size(p, c, FEDC_SPLIT_TRAIN);
        size_t nte = fedc_partition_size(p, c, FEDC_SPLIT_TEST);
        double y = top + c * ch + gap / 2, h = ch - gap;
        fprintf(out, "<rect x=\"%.1f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#225ea8\">",
                bar_x, y, ntr * scale, h);
        if (tooltips) fprintf(out, "<title>client %u: %zu train, %zu test</title>", c, ntr, nte);
        fprintf(out, "</rect>\n");
        if (nte)
            fprintf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                         "fill=\"#9ecae1\"/>\n",
                    bar_x + ntr * scale, y, nte * scale, h);
    }
    fprintf(out, "</g>\n");
    fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n", bar_x,
            top, bar_x, top + map_h);

    /* Legends: the colour scale, and the bar colours. */
    double lw = map_w < 240 ? 240 : (map_w > 360 ? 360 : map_w);
    fprintf(out, "<defs><linearGradient id=\"scale\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">\n");
    for (int i = 0; i <= 8; i++)
        fprintf(out, "<stop offset=\"%.3f\" stop-color=\"#%02x%02x%02x\"/>\n", i / 8.0,
                palette[i][0], palette[i][1], palette[i][2]);
    fprintf(out, "</linearGradient></defs>\n");
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#222\">share of the "
                 "client's samples in the class (white: none)</text>\n",
            left, legend_y - 8);
    fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"12\" fill=\"url(#scale)\" "
                 "stroke=\"#888\" stroke-width=\"0.6\"/>\n",
            left, legend_y, lw);
    fprintf(out, "<g font-size=\"10\" fill=\"#555\" text-anchor=\"middle\">\n");
    double lstep = tick_step(smax, 4);
    for (double t = 0; t <= smax + 1e-9; t += lstep) {
        double x = left + lw * t / smax;
        fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n", x,
                legend_y + 12, x, legend_y + 16);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%.0f%%</text>\n", x, legend_y + 28, 100 * t);
    }
    fprintf(out, "</g>\n");
    double bx = bar_x;
    fprintf(out,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#225ea8\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#333\">training</text>\n"
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"#9ecae1\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#333\">test (federated "
            "evaluation)</text>\n",
            bx, legend_y, bx + 17, legend_y + 10, bx, legend_y + 20, bx + 17, legend_y + 30);
    fprintf(out, "</svg>\n");
    if (fflush(out) != 0 || ferror(out))
        return fedc_err_set(err, FEDC_ERR_IO, "writing the SVG failed");
    return FEDC_OK;
}
