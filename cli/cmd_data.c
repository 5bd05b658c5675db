/*
 * fedc data: look at a dataset (inspect: counts, shapes, label distribution) and at how a
 * partition would split it among clients (partition: per-client sizes and label histograms,
 * summary statistics, an SVG heat map). `fedc data specs` prints the dataset spec grammar.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fedc/data.h"

#define CMD "data"

static int load(const char *spec, fedc_dataset **train, fedc_dataset **test, double *secs)
{
    fedc_err err;
    fedc_err_clear(&err);
    double t0 = cli_now();
    if (fedc_data_load(spec, train, test, &err) != FEDC_OK)
        return cli_fail(CMD, "%s", fedc_err_message(&err));
    *secs = cli_now() - t0;
    return CLI_EXIT_OK;
}

static const char *shape_text(const fedc_dataset *ds, char *buf, size_t size)
{
    int64_t shape[FEDC_DATA_MAX_DIMS];
    int nd = fedc_dataset_shape(ds, shape);
    size_t pos = 0;
    buf[0] = '\0';
    for (int i = 0; i < nd && pos < size; i++)
        pos += (size_t)snprintf(buf + pos, size - pos, i ? "x%lld" : "%lld", (long long)shape[i]);
    return buf;
}

typedef struct feat_stats {
    double min, max, mean, sd;
} feat_stats;

static void feature_stats(const fedc_dataset *ds, feat_stats *s)
{
    const float *x = fedc_dataset_x(ds);
    size_t total = fedc_dataset_n(ds) * fedc_dataset_dim(ds);
    double sum = 0, sum2 = 0, mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < total; i++) {
        double v = x[i];
        sum += v;
        sum2 += v * v;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    s->min = total ? mn : 0;
    s->max = total ? mx : 0;
    s->mean = total ? sum / (double)total : 0;
    double var = total ? sum2 / (double)total - s->mean * s->mean : 0;
    s->sd = var > 0 ? sqrt(var) : 0;
}

static json_t *split_json(const fedc_dataset *ds, const size_t *counts)
{
    json_t *o = json_object();
    int64_t shape[FEDC_DATA_MAX_DIMS];
    int nd = fedc_dataset_shape(ds, shape);
    json_t *sh = json_array();
    for (int i = 0; i < nd; i++) json_array_append_new(sh, json_integer(shape[i]));
    json_t *lc = json_array();
    for (int32_t c = 0; c < fedc_dataset_num_classes(ds); c++)
        json_array_append_new(lc, json_integer((json_int_t)counts[c]));
    feat_stats fs;
    feature_stats(ds, &fs);
    json_object_set_new(o, "n", json_integer((json_int_t)fedc_dataset_n(ds)));
    json_object_set_new(o, "shape", sh);
    json_object_set_new(o, "dim", json_integer((json_int_t)fedc_dataset_dim(ds)));
    json_object_set_new(o, "label_counts", lc);
    json_object_set_new(o, "users", json_integer((json_int_t)fedc_dataset_num_users(ds)));
    json_object_set_new(o, "bytes", json_integer((json_int_t)fedc_dataset_bytes(ds)));
    json_object_set_new(o, "feature_min", json_real(fs.min));
    json_object_set_new(o, "feature_max", json_real(fs.max));
    json_object_set_new(o, "feature_mean", json_real(fs.mean));
    json_object_set_new(o, "feature_sd", json_real(fs.sd));
    return o;
}

static void print_split(FILE *out, const char *label, const fedc_dataset *ds)
{
    char sh[64], bytes[32];
    feat_stats fs;
    feature_stats(ds, &fs);
    fprintf(out, "  %-6s %zu samples of %s (%zu features), %s", label, fedc_dataset_n(ds),
            shape_text(ds, sh, sizeof sh), fedc_dataset_dim(ds),
            cli_format_bytes((double)fedc_dataset_bytes(ds), bytes, sizeof bytes));
    if (fedc_dataset_num_users(ds)) fprintf(out, ", %zu users", fedc_dataset_num_users(ds));
    fprintf(out, "\n         features: min %.4g, max %.4g, mean %.4g, sd %.4g\n", fs.min, fs.max,
            fs.mean, fs.sd);
}

static int inspect(const char *spec, int json)
{
    fedc_dataset *train = NULL, *test = NULL;
    double secs = 0;
    int rc = load(spec, &train, &test, &secs);
    if (rc != CLI_EXIT_OK) return rc;
    int32_t nc = fedc_dataset_num_classes(train);
    size_t *ctr = calloc((size_t)nc, sizeof *ctr), *cte = calloc((size_t)nc, sizeof *cte);
    if (!ctr || !cte) {
        free(ctr);
        free(cte);
        fedc_dataset_destroy(train);
        fedc_dataset_destroy(test);
        return cli_fail(CMD, "out of memory");
    }
    fedc_dataset_label_counts(train, ctr);
    if (test) fedc_dataset_label_counts(test, cte);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "spec", json_string(spec));
        json_object_set_new(o, "name", json_string(fedc_dataset_name(train)));
        json_object_set_new(o, "num_classes", json_integer(nc));
        if (fedc_dataset_class_name(train, 0)) {
            json_t *names = json_array();
            for (int32_t c = 0; c < nc; c++)
                json_array_append_new(names, json_string(fedc_dataset_class_name(train, c)));
            json_object_set_new(o, "class_names", names);
        }
        json_object_set_new(o, "load_seconds", json_real(secs));
        json_object_set_new(o, "train", split_json(train, ctr));
        json_object_set_new(o, "test", test ? split_json(test, cte) : json_null());
        cli_json_print(o);
    } else {
        char dur[32];
        printf("%s: %ld classes, loaded in %s\n", fedc_dataset_name(train), (long)nc,
               cli_format_duration(secs, dur, sizeof dur));
        print_split(stdout, "train", train);
        if (test)
            print_split(stdout, "test", test);
        else
            printf("  test   none (the spec names no test set)\n");
        printf("\n  %-5s %-16s %9s %7s %9s %7s\n", "class", "name", "train", "%", "test", "%");
        for (int32_t c = 0; c < nc; c++) {
            const char *name = fedc_dataset_class_name(train, c);
            char nbuf[24] = "";
            if (name) snprintf(nbuf, sizeof nbuf, "%s", name);
            printf("  %-5ld %-16s %9zu %6.2f%%", (long)c, nbuf, ctr[c],
                   100.0 * (double)ctr[c] / (double)fedc_dataset_n(train));
            if (test && fedc_dataset_n(test))
                printf(" %9zu %6.2f%%", cte[c], 100.0 * (double)cte[c] / (double)fedc_dataset_n(test));
            printf("\n");
        }
    }
    free(ctr);
    free(cte);
    fedc_dataset_destroy(train);
    fedc_dataset_destroy(test);
    return CLI_EXIT_OK;
}

static void describe_scheme(const fedc_partition_opts *o, char *buf, size_t size)
{
    switch (o->scheme) {
    case FEDC_PARTITION_DIRICHLET:
        snprintf(buf, size, "dirichlet (alpha %g, min_size %zu)", o->alpha, o->min_size);
        break;
    case FEDC_PARTITION_SHARDS:
        snprintf(buf, size, "shards (%u per client)", o->shards_per_client);
        break;
    case FEDC_PARTITION_QUANTITY:
        snprintf(buf, size, "quantity (sigma %g, min_size %zu)", o->sigma, o->min_size);
        break;
    default: snprintf(buf, size, "%s", fedc_partition_scheme_name(o->scheme)); break;
    }
}

static json_t *counts_json(const uint32_t *c, int32_t nc)
{
    json_t *a = json_array();
    for (int32_t j = 0; j < nc; j++) json_array_append_new(a, json_integer(c[j]));
    return a;
}

static int partition(const char *spec, fedc_partition_opts *po, const char *svg, int json)
{
    fedc_dataset *train = NULL;
    double secs = 0;
    int rc = load(spec, &train, NULL, &secs);
    if (rc != CLI_EXIT_OK) return rc;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_partition *p = NULL;
    if (fedc_partition_create(train, po, &p, &err) != FEDC_OK) {
        fedc_dataset_destroy(train);
        return cli_fail(CMD, "%s", fedc_err_message(&err));
    }
    uint32_t k = fedc_partition_num_clients(p);
    int32_t nc = fedc_partition_num_classes(p);
    fedc_partition_stats st;
    fedc_partition_get_stats(p, &st);
    char scheme[128];
    describe_scheme(po, scheme, sizeof scheme);
    char title[320];
    snprintf(title, sizeof title, "%s: %s, %u clients, seed %llu", fedc_dataset_name(train), scheme,
             k, (unsigned long long)po->seed);
    rc = CLI_EXIT_OK;
    if (svg) {
        FILE *f = fopen(svg, "w");
        if (!f) {
            rc = cli_fail(CMD, "%s: %s", svg, strerror(errno));
        } else {
            fedc_status s = fedc_partition_write_svg(p, train, title, f, &err);
            if (fclose(f) != 0 && s == FEDC_OK)
                s = fedc_err_set(&err, FEDC_ERR_IO, "closing the file failed");
            if (s != FEDC_OK) rc = cli_fail(CMD, "%s: %s", svg, fedc_err_message(&err));
        }
    }
    if (rc == CLI_EXIT_OK && json) {
        json_t *o = json_object();
        json_object_set_new(o, "spec", json_string(spec));
        json_object_set_new(o, "dataset", json_string(fedc_dataset_name(train)));
        json_object_set_new(o, "scheme", json_string(fedc_partition_scheme_name(po->scheme)));
        json_object_set_new(o, "num_clients", json_integer(k));
        json_object_set_new(o, "num_classes", json_integer(nc));
        json_object_set_new(o, "seed", json_integer((json_int_t)po->seed));
        json_object_set_new(o, "test_fraction", json_real(po->test_fraction));
        if (po->scheme == FEDC_PARTITION_DIRICHLET) {
            json_object_set_new(o, "alpha", json_real(po->alpha));
            json_object_set_new(o, "min_size", json_integer((json_int_t)po->min_size));
        } else if (po->scheme == FEDC_PARTITION_SHARDS) {
            json_object_set_new(o, "shards_per_client", json_integer(po->shards_per_client));
        } else if (po->scheme == FEDC_PARTITION_QUANTITY) {
            json_object_set_new(o, "sigma", json_real(po->sigma));
            json_object_set_new(o, "min_size", json_integer((json_int_t)po->min_size));
        }
        json_t *s = json_object();
        json_object_set_new(s, "min_size", json_integer((json_int_t)st.min_size));
        json_object_set_new(s, "max_size", json_integer((json_int_t)st.max_size));
        json_object_set_new(s, "mean_size", json_real(st.mean_size));
        json_object_set_new(s, "std_size", json_real(st.std_size));
        json_object_set_new(s, "mean_classes", json_real(st.mean_classes));
        json_object_set_new(s, "mean_tv", json_real(st.mean_tv));
        json_object_set_new(o, "stats", s);
        json_t *cl = json_array();
        for (uint32_t c = 0; c < k; c++) {
            json_t *e = json_object();
            json_object_set_new(e, "client", json_integer(c));
            json_object_set_new(e, "train", json_integer((json_int_t)fedc_partition_size(p, c, FEDC_SPLIT_TRAIN)));
            json_object_set_new(e, "test", json_integer((json_int_t)fedc_partition_size(p, c, FEDC_SPLIT_TEST)));
            json_object_set_new(e, "label_counts",
                                counts_json(fedc_partition_label_counts(p, c, FEDC_SPLIT_TRAIN), nc));
            json_object_set_new(e, "test_label_counts",
                                counts_json(fedc_partition_label_counts(p, c, FEDC_SPLIT_TEST), nc));
            json_array_append_new(cl, e);
        }
        json_object_set_new(o, "clients", cl);
        if (svg) json_object_set_new(o, "svg", json_string(svg));
        cli_json_print(o);
    } else if (rc == CLI_EXIT_OK) {
        printf("%s\ntest fraction %g; label histograms count training and test samples\n\n", title,
               po->test_fraction);
        int table = nc <= 12;
        printf("%6s %7s %6s  ", "client", "train", "test");
        if (table) {
            for (int32_t j = 0; j < nc; j++) printf("%6ld", (long)j);
            printf("\n");
        } else {
            printf("class:count (classes with samples)\n");
        }
        for (uint32_t c = 0; c < k; c++) {
            const uint32_t *tr = fedc_partition_label_counts(p, c, FEDC_SPLIT_TRAIN);
            const uint32_t *te = fedc_partition_label_counts(p, c, FEDC_SPLIT_TEST);
            printf("%6u %7zu %6zu  ", c, fedc_partition_size(p, c, FEDC_SPLIT_TRAIN),
                   fedc_partition_size(p, c, FEDC_SPLIT_TEST));
            for (int32_t j = 0; j < nc; j++) {
                uint32_t m = tr[j] + te[j];
                if (table && m)
                    printf("%6u", m);
                else if (table)
                    printf("%6s", ".");
                else if (m)
                    printf(" %ld:%u", (long)j, m);
            }
            printf("\n");
        }
        printf("\nsamples per client: min %zu, max %zu, mean %.1f, sd %.1f\n", st.min_size,
               st.max_size, st.mean_size, st.std_size);
        printf("classes per client: mean %.2f of %ld\n", st.mean_classes, (long)nc);
        printf("label skew: mean total-variation distance to the overall label mix %.3f "
               "(0 = IID)\n",
               st.mean_tv);
        if (svg) printf("heat map written to %s\n", svg);
    }
    fedc_partition_destroy(p);
    fedc_dataset_destroy(train);
    return rc;
}

int cmd_data(int argc, char **argv)
{
    if (argc < 2) return cli_usage_error(CMD, "missing action: inspect, partition or specs");
    const char *action = argv[1];
    int is_inspect = strcmp(action, "inspect") == 0, is_part = strcmp(action, "partition") == 0;
    if (strcmp(action, "specs") == 0) {
        if (argc > 2) return cli_usage_error(CMD, "unexpected argument '%s'", argv[2]);
        fputs(fedc_data_spec_help(), stdout);
        return CLI_EXIT_OK;
    }
    if (!is_inspect && !is_part)
        return cli_usage_error(CMD, "unknown action '%s' (inspect, partition or specs)", action);

    enum { OPT_JSON = 256, OPT_ALPHA, OPT_MIN, OPT_SHARDS, OPT_SIGMA, OPT_TESTF, OPT_SVG,
           OPT_ATTEMPTS };
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"clients", required_argument, NULL, 'n'},
        {"scheme", required_argument, NULL, 's'},
        {"seed", required_argument, NULL, 'S'},
        {"alpha", required_argument, NULL, OPT_ALPHA},
        {"min-size", required_argument, NULL, OPT_MIN},
        {"max-attempts", required_argument, NULL, OPT_ATTEMPTS},
        {"shards-per-client", required_argument, NULL, OPT_SHARDS},
        {"sigma", required_argument, NULL, OPT_SIGMA},
        {"test-fraction", required_argument, NULL, OPT_TESTF},
        {"svg", required_argument, NULL, OPT_SVG},
        {NULL, 0, NULL, 0},
    };
    fedc_partition_opts po;
    fedc_partition_opts_init(&po);
    int json = 0, c, partition_opt = 0, clients_set = 0;
    const char *svg = NULL;
    uint64_t u;
    double d;
    opterr = 0;
    optind = 1;
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    while ((c = getopt_long(sub_argc, sub_argv, ":n:s:S:", opts, NULL)) != -1) {
        const char *opt = sub_argv[optind - 1];
        if (c != OPT_JSON && c != ':' && c != '?') partition_opt = 1;
        switch (c) {
        case OPT_JSON: json = 1; break;
        case 'n':
            if (cli_parse_u64(optarg, &u) || u == 0 || u > UINT32_MAX)
                return cli_usage_error(CMD, "--clients: '%s' is not a positive integer", optarg);
            po.num_clients = (uint32_t)u;
            clients_set = 1;
            break;
        case 's':
            if (fedc_partition_scheme_parse(optarg, &po.scheme) != 0)
                return cli_usage_error(CMD, "--scheme: '%s' is not iid, dirichlet, shards, natural "
                                       "or quantity", optarg);
            break;
        case 'S':
            if (cli_parse_u64(optarg, &po.seed))
                return cli_usage_error(CMD, "--seed: '%s' is not an integer >= 0", optarg);
            break;
        case OPT_ALPHA:
            if (cli_parse_double(optarg, &d) || !(d > 0))
                return cli_usage_error(CMD, "--alpha: '%s' is not a number > 0", optarg);
            po.alpha = d;
            break;
        case OPT_MIN:
            if (cli_parse_u64(optarg, &u)) return cli_usage_error(CMD, "--min-size: '%s' is not an integer >= 0", optarg);
            po.min_size = (size_t)u;
            break;
        case OPT_ATTEMPTS:
            if (cli_parse_u64(optarg, &u) || u == 0 || u > UINT32_MAX)
                return cli_usage_error(CMD, "--max-attempts: '%s' is not a positive integer", optarg);
            po.max_attempts = (uint32_t)u;
            break;
        case OPT_SHARDS:
            if (cli_parse_u64(optarg, &u) || u == 0 || u > UINT32_MAX)
                return cli_usage_error(CMD, "--shards-per-client: '%s' is not a positive integer", optarg);
            po.shards_per_client = (uint32_t)u;
            break;
        case OPT_SIGMA:
            if (cli_parse_double(optarg, &d) || d < 0)
                return cli_usage_error(CMD, "--sigma: '%s' is not a number >= 0", optarg);
            po.sigma = d;
            break;
        case OPT_TESTF:
            if (cli_parse_double(optarg, &d) || d < 0 || d >= 1)
                return cli_usage_error(CMD, "--test-fraction: '%s' is not in [0, 1)", optarg);
            po.test_fraction = d;
            break;
        case OPT_SVG: svg = optarg; break;
        case ':': return cli_usage_error(CMD, "option '%s' needs a value", opt);
        default: return cli_usage_error(CMD, "unknown option '%s'", opt);
        }
    }
    if (optind >= sub_argc) return cli_usage_error(CMD, "%s: missing the dataset SPEC", action);
    if (optind + 1 < sub_argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", sub_argv[optind + 1]);
    const char *spec = sub_argv[optind];
    if (is_inspect) {
        if (partition_opt) return cli_usage_error(CMD, "inspect takes only SPEC and --json");
        return inspect(spec, json);
    }
    if (po.scheme == FEDC_PARTITION_NATURAL && !clients_set) po.num_clients = 0;
    return partition(spec, &po, svg, json);
}
