/*
 * fedc bench [CASE]: benchmarks, one table entry per case (modules add theirs to `cases`);
 * without a case, every case runs with the options given (they must suit every case).
 *
 * train: training speed of the nn engine per (model, batch) against the single-core sgemm
 * peak measured in the same run. FLOPs follow the usual convention: 2 x the forward
 * multiply-adds of the matrix products, x 3 for forward plus backward. A step is what a
 * client does per minibatch with plain SGD: fedc_nn_train_step_sgd (the update fused into the
 * backward pass); the unfused step (fedc_nn_train_batch then fedc_optim_step) is timed too.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct bench_case {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} bench_case;

static int bench_train(int argc, char **argv);
static int bench_codec(int argc, char **argv);

static const bench_case cases[] = {
    {"train", bench_train, "nn engine training speed vs the sgemm peak (mlp, cnn; batch 10, 50)"},
    {"sim", bench_sim, "simulation overhead per round and aggregation throughput"},
    {"secagg", bench_secagg, "SecAgg+ round cost: server/client time, expansion, by dropout"},
    {"server", bench_server, "federation protocol: upload MB/s vs plain HTTP, round latency, memory"},
    {"codec", bench_codec, "update encodings: encode/decode GB/s vs memcpy, bytes, error"},
    {NULL, NULL, NULL},
};

/* ---- train ---- */

typedef struct train_result {
    double step_s, fwd_bwd_s;   /* seconds per step: full, and train_batch alone */
    double unfused_s;           /* train_batch + fedc_optim_step (the step a client runs with
                                 * clipping, Adam, DP-SGD or SCAFFOLD) */
    int fused;                  /* step_s is the fused SGD step */
    double flops_step;          /* 3 x forward FLOPs x batch */
    size_t params, param_bytes, workspace_bytes, optim_bytes;
    double bytes_step;          /* memory a step must touch (see touched_bytes) */
} train_result;

/* Bytes a training step must move at least: the forward reads the weights; unfused, the
 * backward reads them again (except the first layer's, whose input gradient is not needed)
 * and writes the gradient, the optimizer reads it for its norm, then reads the weights and
 * the gradient and writes the weights (7 P - first floats); fused, the backward reads each
 * weight once for both the input gradient and the update, and writes it (3 P); activations
 * are written and read forward and backward. */
static double touched_bytes(const fedc_model *m, int batch, int fused)
{
    double P = (double)fedc_model_param_count(m), first = 0, acts = 0;
    for (size_t i = 0; i < fedc_model_layer_count(m); i++) {
        fedc_layer_info li;
        fedc_model_layer_info(m, i, &li);
        if (first == 0 && li.params) first = (double)li.params;
        acts += (double)(li.out_shape[0] * li.out_shape[1] * li.out_shape[2]);
    }
    double in = (double)fedc_model_input_size(m);
    return 4.0 * (fused ? 3.0 * P : 7.0 * P - first) + 4.0 * batch * (2.0 * in + 4.0 * acts);
}

static int time_model(const char *spec, int batch, double seconds, train_result *r,
                      char *errbuf, size_t errsize)
{
    memset(r, 0, sizeof *r);
    const int64_t shape[3] = {1, 28, 28};
    fedc_model *m = NULL;
    fedc_nn_workspace *ws = NULL;
    fedc_optim *opt = NULL;
    fedc_err err;
    fedc_err_clear(&err);
    float *w = NULL, *x = NULL;
    int32_t *y = NULL;
    int rc = -1;
    enum { POOL = 4 };
    if (fedc_model_create(spec, shape, 3, 10, &m, &err) != FEDC_OK) goto out;
    if (fedc_nn_workspace_create(m, batch, &ws, &err) != FEDC_OK) goto out;
    r->params = fedc_model_param_count(m);
    fedc_optim_config oc;
    fedc_optim_config_default(&oc, FEDC_OPTIM_SGD);
    if (fedc_optim_create(&oc, r->params, &opt, &err) != FEDC_OK) goto out;
    const size_t in = fedc_model_input_size(m);
    w = malloc(r->params * sizeof *w);
    x = malloc((size_t)POOL * batch * in * sizeof *x);
    y = malloc((size_t)POOL * batch * sizeof *y);
    if (!w || !x || !y) {
        fedc_err_set(&err, FEDC_ERR_NOMEM, "out of memory");
        goto out;
    }
    fedc_model_init_params(m, w, 1);
    fedc_rng rng;
    fedc_rng_init(&rng, 1, 0, 0, FEDC_RNG_DATA);
    for (size_t i = 0; i < (size_t)POOL * batch * in; i++) x[i] = fedc_rng_uniformf(&rng);
    for (int i = 0; i < POOL * batch; i++) y[i] = (int32_t)fedc_rng_below(&rng, 10);
    float loss;
    fedc_sgd_step sgd;
    r->fused = fedc_optim_sgd_fuse(opt, &sgd);
    for (int phase = 0; phase < 3; phase++) {
        /* Phase 0: full steps as a client runs them (plain SGD: fused into the backward
         * pass); 1: forward + backward only; 2: full steps, unfused. The time per step is the
         * best of windows of >= 0.1 s (and >= 3 steps): the machine may be shared, and a
         * window in which another process took the core or the memory bus says nothing
         * about the engine. */
        double best = 0, t_phase = cli_now(), t0 = 0;
        long in_window = 0;
        for (long i = 0;; i++) {
            if (i == 3) t0 = cli_now(); /* three warm-up steps */
            const float *xb = x + (size_t)(i % POOL) * batch * in;
            const int32_t *yb = y + (i % POOL) * batch;
            fedc_status st = phase == 0 && r->fused && fedc_optim_sgd_fuse(opt, &sgd)
                                 ? fedc_nn_train_step_sgd(ws, w, xb, yb, batch, &sgd, &loss)
                                 : fedc_nn_train_batch(ws, w, xb, yb, batch, &loss);
            if (st != FEDC_OK) {
                fedc_err_set(&err, FEDC_ERR_INTERNAL, "%s", fedc_nn_workspace_errmsg(ws));
                goto out;
            }
            if (((phase == 0 && !r->fused) || phase == 2) &&
                fedc_optim_step(opt, w, fedc_nn_workspace_grad(ws)) != FEDC_OK) {
                fedc_err_set(&err, FEDC_ERR_INTERNAL, "%s", fedc_optim_errmsg(opt));
                goto out;
            }
            if (i < 3) continue;
            in_window++;
            double now = cli_now();
            if (in_window >= 3 && now - t0 >= 0.1) {
                double per = (now - t0) / (double)in_window;
                if (best == 0 || per < best) best = per;
                in_window = 0;
                t0 = now;
                if (now - t_phase >= seconds / 3) break;
            }
        }
        if (phase == 0)
            r->step_s = best;
        else if (phase == 1)
            r->fwd_bwd_s = best;
        else
            r->unfused_s = best;
    }
    r->flops_step = 3.0 * fedc_model_forward_flops(m) * batch;
    r->param_bytes = r->params * sizeof(float);
    r->workspace_bytes = fedc_nn_workspace_bytes(ws);
    r->optim_bytes = fedc_optim_state_bytes(opt);
    r->bytes_step = touched_bytes(m, batch, r->fused);
    rc = 0;
out:
    if (rc) snprintf(errbuf, errsize, "%s: %s", spec, fedc_err_message(&err));
    free(w);
    free(x);
    free(y);
    fedc_optim_destroy(opt);
    fedc_nn_workspace_destroy(ws);
    fedc_model_destroy(m);
    return rc;
}

/* Bandwidth of the optimizer's access pattern (y += a x over n floats: two reads, one
 * write) at the size of a model's parameters, in GB/s. */
static double axpy_gbs(size_t n, double seconds)
{
    float *a = calloc(n, sizeof *a), *b = calloc(n, sizeof *b);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    fedc_vec_axpy(n, 1e-3f, a, b);
    long it = 0;
    double t0 = cli_now();
    do {
        fedc_vec_axpy(n, 1e-3f, a, b);
        it++;
    } while (cli_now() - t0 < seconds);
    double gbs = 12.0 * (double)n * (double)it / (cli_now() - t0) / 1e9;
    free(a);
    free(b);
    return gbs;
}

/* Splits a comma-separated list in place into at most max items. */
static int split_list(char *s, char **items, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ",")) items[n++] = tok;
    return n;
}

static int bench_train(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"models", required_argument, NULL, 'm'},
                                         {"batches", required_argument, NULL, 'b'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    int json = 0, c;
    char models_buf[256] = "mlp,cnn", batches_buf[128] = "10,50";
    double seconds = 6.0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+jm:b:s:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'm': snprintf(models_buf, sizeof models_buf, "%s", optarg); break;
        case 'b': snprintf(batches_buf, sizeof batches_buf, "%s", optarg); break;
        case 's': {
            char *end;
            seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(seconds > 0 && seconds <= 3600))
                return cli_usage_error("bench", "--seconds wants a time in (0, 3600], got '%s'",
                                       optarg);
            break;
        }
        default: return cli_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    char *models[16], *bl[16];
    int nm = split_list(models_buf, models, 16), nb = split_list(batches_buf, bl, 16);
    int batches[16];
    for (int i = 0; i < nb; i++) {
        char *end;
        long b = strtol(bl[i], &end, 10);
        if (end == bl[i] || *end || b < 1 || b > 100000)
            return cli_usage_error("bench", "--batches wants sizes such as 10,50, got '%s'", bl[i]);
        batches[i] = (int)b;
    }
    if (nm == 0 || nb == 0) return cli_usage_error("bench", "no models or batch sizes");
    FILE *out = cli_human(json);

    /* The reference: the best single-thread sgemm rate on large square products. */
    double peak = 0, g;
    static const int sizes[] = {1024, 2048};
    for (size_t i = 0; i < 2; i++)
        if (fedc_nn_bench_gemm(sizes[i], sizes[i], sizes[i], seconds / 4, &g) == FEDC_OK &&
            g > peak)
            peak = g;
    if (peak <= 0) return cli_fail("bench", "could not measure the sgemm peak");
    const char *core = fedc_nn_blas_core();
    fprintf(out, "fedc bench train: BLAS kernels %s, 1 thread; sgemm peak %.1f GFLOP/s "
                 "(best of 1024^3 and 2048^3); convolutions: %s\n",
            core, peak, fedc_nn_conv_kernels());
    fprintf(out, "%-6s %5s %10s %9s %8s %7s %9s %7s %9s %9s %10s\n", "model", "batch",
            "samples/s", "ms/step", "GFLOP/s", "of peak", "fwd+bwd", "of peak", "params",
            "workspace", "touched");
    int rc = CLI_EXIT_OK;
    for (int mi = 0; mi < nm; mi++)
        for (int bi = 0; bi < nb; bi++) {
            train_result r;
            char errbuf[600];
            if (time_model(models[mi], batches[bi], seconds, &r, errbuf, sizeof errbuf) != 0) {
                rc = cli_fail("bench", "%s", errbuf);
                continue;
            }
            double gf = r.flops_step / r.step_s / 1e9, gf_fb = r.flops_step / r.fwd_bwd_s / 1e9;
            double gbs = r.bytes_step / r.step_s / 1e9;
            double axpy = axpy_gbs(r.params, seconds / 10);
            char pb[32], wb[32], tb[32];
            cli_format_bytes((double)r.param_bytes, pb, sizeof pb);
            cli_format_bytes((double)r.workspace_bytes, wb, sizeof wb);
            cli_format_bytes(r.bytes_step, tb, sizeof tb);
            fprintf(out, "%-6s %5d %10.0f %9.3f %8.1f %6.1f%% %9.1f %6.1f%% %9s %9s %10s\n",
                    models[mi], batches[bi], batches[bi] / r.step_s, r.step_s * 1e3, gf,
                    100.0 * gf / peak, gf_fb, 100.0 * gf_fb / peak, pb, wb, tb);
            fprintf(out, "       memory: %.1f GB/s over the %s a step touches; the optimizer's "
                         "axpy pattern runs at %.1f GB/s at this size\n",
                    gbs, tb, axpy);
            if (r.fused)
                fprintf(out, "       plain SGD fused into the backward pass; unfused "
                             "(train_batch + optim_step): %.3f ms/step, %.1f%% of peak\n",
                        r.unfused_s * 1e3, 100.0 * r.flops_step / r.unfused_s / 1e9 / peak);
            if (json) {
                json_t *o = json_object();
                json_object_set_new(o, "case", json_string("train"));
                json_object_set_new(o, "model", json_string(models[mi]));
                json_object_set_new(o, "batch", json_integer(batches[bi]));
                json_object_set_new(o, "samples_per_s", json_real(batches[bi] / r.step_s));
                json_object_set_new(o, "ms_per_step", json_real(r.step_s * 1e3));
                json_object_set_new(o, "gflops", json_real(gf));
                json_object_set_new(o, "peak_gflops", json_real(peak));
                json_object_set_new(o, "ratio", json_real(gf / peak));
                json_object_set_new(o, "fused_sgd", json_boolean(r.fused));
                json_object_set_new(o, "unfused_ms_per_step", json_real(r.unfused_s * 1e3));
                json_object_set_new(o, "unfused_ratio",
                                    json_real(r.flops_step / r.unfused_s / 1e9 / peak));
                json_object_set_new(o, "fwd_bwd_ms", json_real(r.fwd_bwd_s * 1e3));
                json_object_set_new(o, "fwd_bwd_gflops", json_real(gf_fb));
                json_object_set_new(o, "fwd_bwd_ratio", json_real(gf_fb / peak));
                json_object_set_new(o, "flops_per_step", json_real(r.flops_step));
                json_object_set_new(o, "params", json_integer((json_int_t)r.params));
                json_object_set_new(o, "param_bytes", json_integer((json_int_t)r.param_bytes));
                json_object_set_new(o, "workspace_bytes",
                                    json_integer((json_int_t)r.workspace_bytes));
                json_object_set_new(o, "optimizer_bytes", json_integer((json_int_t)r.optim_bytes));
                json_object_set_new(o, "bytes_per_step", json_real(r.bytes_step));
                json_object_set_new(o, "gbytes_per_s", json_real(gbs));
                json_object_set_new(o, "axpy_gbytes_per_s", json_real(axpy));
                json_object_set_new(o, "blas_core", json_string(core));
                json_object_set_new(o, "conv_kernels", json_string(fedc_nn_conv_kernels()));
                cli_json_print(o);
            }
        }
    return rc;
}

/* ---- codec ---- */

/* fedc bench codec: fedc_codec_bench (src/codec/codec_bench.c) per encoding on a vector of the
 * cnn model's size and layout: encode and decode GB/s of float32 input against memcpy of the
 * same bytes, measured in the same run, each phase a third of --seconds. */
static int bench_codec(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"spec", required_argument, NULL, 'e'},
                                         {"params", required_argument, NULL, 'p'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    static const char *const defaults[] = {"none", "zstd", "f16", "bf16", "q8", "q8+zstd",
                                           "q4", "qsgd", "topk:1%", "topk:1%+q8", "mask:10%+q8"};
    const char *specs[32];
    int nspecs = 0, json = 0, c;
    double seconds = 1.0;
    uint64_t params = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+je:p:s:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'e':
            if (nspecs == 32) return cli_usage_error("bench", "at most 32 --spec");
            specs[nspecs++] = optarg;
            break;
        case 'p':
            if (cli_parse_u64(optarg, &params) || params < 1 || params > 1000000000)
                return cli_usage_error("bench", "--params wants 1..1e9, got '%s'", optarg);
            break;
        case 's':
            if (cli_parse_double(optarg, &seconds) || !(seconds > 0 && seconds <= 3600))
                return cli_usage_error("bench", "--seconds wants a time in (0, 3600], got '%s'",
                                       optarg);
            break;
        default: return cli_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    if (nspecs == 0)
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
            specs[nspecs++] = defaults[i];
    fedc_err err;
    fedc_err_clear(&err);
    fedc_model *model = NULL;
    const fedc_layout *layout = NULL;
    size_t n = (size_t)params;
    if (!params) { /* the cnn model's update: its size and its tensors (per-tensor groups) */
        const int64_t shape[3] = {1, 28, 28};
        if (fedc_model_create("cnn", shape, 3, 10, &model, &err) != FEDC_OK)
            return cli_fail("bench", "%s", fedc_err_message(&err));
        layout = fedc_model_layout(model);
        n = fedc_model_param_count(model);
    }
    FILE *out = cli_human(json);
    char nb[32];
    fprintf(out, "fedc bench codec: %zu float32 values (%s, %s), normal(0, 0.01); GB/s of "
                 "float32 input, 1 thread, %.2g s per phase\n",
            n, cli_format_bytes(4.0 * (double)n, nb, sizeof nb),
            layout ? "the cnn model's layout" : "one tensor", seconds / 3);
    fprintf(out, "%-16s %11s %7s %7s %7s %7s %8s %8s %9s\n", "encoding", "bytes", "ratio",
            "memcpy", "encode", "decode", "enc/cpy", "dec/cpy", "rel.err");
    int rc = CLI_EXIT_OK;
    for (int i = 0; i < nspecs; i++) {
        fedc_codec_bench_result r;
        if (fedc_codec_bench(specs[i], n, layout, seconds / 3, &r, &err) != FEDC_OK) {
            rc = cli_fail("bench", "codec %s: %s", specs[i], fedc_err_message(&err));
            continue;
        }
        fprintf(out, "%-16s %11zu %6.1fx %7.2f %7.2f %7.2f %8.2f %8.2f %9.2g\n", specs[i], r.bytes,
                r.ratio, r.copy_gbps, r.encode_gbps, r.decode_gbps, r.encode_gbps / r.copy_gbps,
                r.decode_gbps / r.copy_gbps, r.rel_error);
        if (json) {
            json_t *o = json_object();
            json_object_set_new(o, "case", json_string("codec"));
            json_object_set_new(o, "encoding", json_string(specs[i]));
            json_object_set_new(o, "n", json_integer((json_int_t)r.n));
            json_object_set_new(o, "bytes", json_integer((json_int_t)r.bytes));
            json_object_set_new(o, "ratio", json_real(r.ratio));
            json_object_set_new(o, "memcpy_gbps", json_real(r.copy_gbps));
            json_object_set_new(o, "encode_gbps", json_real(r.encode_gbps));
            json_object_set_new(o, "decode_gbps", json_real(r.decode_gbps));
            json_object_set_new(o, "encode_vs_memcpy", json_real(r.encode_gbps / r.copy_gbps));
            json_object_set_new(o, "decode_vs_memcpy", json_real(r.decode_gbps / r.copy_gbps));
            json_object_set_new(o, "rel_error", json_real(r.rel_error));
            json_object_set_new(o, "layout", json_string(layout ? "cnn" : "none"));
            cli_json_print(o);
        }
    }
    fedc_model_destroy(model);
    return rc;
}

/* ---- dispatch ---- */

int cmd_bench(int argc, char **argv)
{
    /* A known case (or none: all), then the right BLAS kernels, then the run. */
    int named = 0;
    for (int i = 1; i < argc && !named; i++) {
        if (argv[i][0] == '-') break;
        named = 1;
        const bench_case *c = cases;
        while (c->name && strcmp(c->name, argv[i]) != 0) c++;
        if (!c->name) {
            fprintf(stderr, "fedc bench: unknown case '%s'; cases:\n", argv[i]);
            for (c = cases; c->name; c++) fprintf(stderr, "  %-8s %s\n", c->name, c->summary);
            fprintf(stderr, "Try 'fedc help bench'.\n");
            return CLI_EXIT_USAGE;
        }
    }
    char **args = argv;
    int n = argc;
    int rc = CLI_EXIT_OK;
    if (n < 2 || args[1][0] == '-') {
        /* `fedc bench [options]` runs every case with those options (`make bench`). */
        for (const bench_case *c = cases; c->name; c++) {
            int r = c->run(n, args); /* args[0] stands in for the case's name */
            if (r != CLI_EXIT_OK) rc = r;
            if (r == CLI_EXIT_USAGE) break;
        }
    } else {
        const bench_case *c = cases;
        while (c->name && strcmp(c->name, args[1]) != 0) c++;
        rc = c->run(n - 1, args + 1); /* known: checked above */
    }
    return rc;
}
