/*
 * fedc bench sim: the simulation's own cost, against limits measured in the same run.
 *
 * - Framework overhead: rounds of the demo's federation (Fashion-MNIST, mlp, 100 clients,
 *   10 per round) with evaluation off; per round, wall time against the sum of the clients'
 *   pure local-training time. With one worker the difference is everything that is not
 *   training (sampling, copies, validation, aggregation); with T workers, efficiency is
 *   sum(fit) / (T x wall).
 *   Under mpirun (docs/SCALING.md) the rounds run over the R ranks with one thread each
 *   (fedc_mpi_run), efficiency is sum(fit) / (R x wall), and rank 0 alone prints.
 * - Aggregation throughput: folding client updates into the exact fixed-point sum, in GB/s of
 *   update bytes, against memcpy of the same bytes (and a large streaming copy: the memory
 *   bandwidth).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <unistd.h>

#include "cli.h"
#include "fedc/mpi.h"
#include "fedc/run.h"

typedef struct overhead {
    double wall, fit;
    uint32_t rounds;
} overhead;

static int collect(void *user, const fedc_round_record *rec)
{
    overhead *o = user;
    if (rec->evaluated) return 0; /* the last round evaluates: not framework time */
    o->wall += rec->seconds;
    o->fit += rec->fit_seconds;
    o->rounds++;
    return 0;
}

static int measure_overhead(const char *config, int threads, int rounds, char **sets, int nsets,
                            int mpi, overhead *out, double *rounds_per_min)
{
    fedc_config *cfg = cli_load_config("bench", config, sets, nsets);
    if (!cfg) return -1;
    char r[64];
    snprintf(r, sizeof r, "run.rounds=%d", rounds);
    fedc_config_set(cfg, r, "bench");
    fedc_config_set(cfg, "eval.every=0", "bench");
    fedc_run run;
    fedc_err err;
    memset(out, 0, sizeof *out);
    if (fedc_run_init(&run, cfg, 0, &err) != FEDC_OK) {
        cli_fail("bench", "%s", fedc_err_message(&err));
        fedc_config_destroy(cfg);
        return -1;
    }
    fedc_sim_opts opts = {threads, collect, out};
    double t0 = cli_now();
    fedc_status st = mpi ? fedc_mpi_run(run.engine, run.trainer, cfg, &opts, NULL, &err)
                         : fedc_sim_run(run.engine, run.trainer, cfg, &opts, &err);
    double secs = cli_now() - t0;
    *rounds_per_min = 60.0 * rounds / secs;
    fedc_run_fini(&run);
    fedc_config_destroy(cfg);
    if (st != FEDC_OK) return cli_fail("bench", "%s", fedc_err_message(&err)), -1;
    return 0;
}

/* A streaming copy of a buffer far larger than the caches: the machine's memory bandwidth. */
static double stream_copy_gbps(void)
{
    const size_t n = 64u << 20; /* 64 MiB each way */
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = cli_now();
        memcpy(b, a, n);
        double dt = cli_now() - t0;
        if (dt > 0 && n / dt / 1e9 > best) best = n / dt / 1e9;
        char *t = a;
        a = b;
        b = t;
    }
    free(a);
    free(b);
    return best;
}

int bench_sim(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                          {"rounds", required_argument, NULL, 'r'},
                                          {"config", required_argument, NULL, 'c'},
                                          {NULL, 0, NULL, 0}};
    int json = 0, rounds = 4, c;
    const char *config = NULL;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "jr:c:", opts, NULL)) != -1) {
        if (c == 'j')
            json = 1;
        else if (c == 'r')
            rounds = atoi(optarg);
        else if (c == 'c')
            config = optarg;
        else
            return cli_usage_error("bench", "sim: unknown option '%s'", argv[optind - 1]);
    }
    if (rounds < 2) return cli_usage_error("bench", "sim: --rounds must be at least 2");
    FILE *h = cli_human(json);
    /* The demo's federation, one local epoch so that a run takes seconds. */
    char *sets[] = {"run.seed=1", "clients.count=100", "clients.per_round=10",
                    "data.dataset=fmnist", "data.partition=iid", "model.spec=mlp",
                    "train.epochs=1", "train.batch_size=10", "train.lr=0.05",
                    "strategy.name=fedavg"};
    int nsets = config ? 0 : (int)(sizeof sets / sizeof sets[0]);
    int nthreads = fedc_sim_default_threads();
    int mpi = fedc_mpi_launched(), ranks = 1; /* MPI: rounds over the ranks, 1 thread each */
    if (mpi) {
        fedc_err merr;
        if (fedc_mpi_init(&merr) != FEDC_OK)
            return cli_fail("bench", "%s", fedc_err_message(&merr));
        ranks = fedc_mpi_size();
        nthreads = 1;
        if (fedc_mpi_rank() != 0) { /* rank 0 alone prints */
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0) {
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                close(fd);
            }
        }
    }
    fprintf(h, "fedc bench sim: %s, %d rounds (+1 evaluated, not counted)\n",
            config ? config : "fmnist mlp, 100 clients, 10 per round, E=1, B=10", rounds);
    for (int t = 1; t <= nthreads && t <= 2; t++) {
        overhead o;
        double rpm;
        if (measure_overhead(config, t, rounds + 1, config ? NULL : sets, nsets, mpi, &o, &rpm) !=
            0) {
            if (mpi) fedc_mpi_finalize();
            return CLI_EXIT_FAIL;
        }
        double eff = o.wall > 0 ? o.fit / (ranks * t * o.wall) : 0;
        double over = 1 - eff;
        if (mpi)
            fprintf(h, "  ranks %d x threads %d: %.2f s/round, training %.2f s/round summed over "
                       "clients; efficiency %.1f%%, overhead %.1f%%; %.1f rounds/min\n",
                    ranks, t, o.wall / o.rounds, o.fit / o.rounds, 100 * eff, 100 * over, rpm);
        else
            fprintf(h, "  threads %d: %.2f s/round, training %.2f s/round summed over clients; "
                       "efficiency %.1f%%, overhead %.1f%%; %.1f rounds/min\n",
                    t, o.wall / o.rounds, o.fit / o.rounds, 100 * eff, 100 * over, rpm);
        if (json) {
            json_t *j = json_object();
            json_object_set_new(j, "case", json_string("sim_round"));
            if (mpi) json_object_set_new(j, "ranks", json_integer(ranks));
            json_object_set_new(j, "threads", json_integer(t));
            json_object_set_new(j, "round_s", json_real(o.wall / o.rounds));
            json_object_set_new(j, "fit_s", json_real(o.fit / o.rounds));
            json_object_set_new(j, "efficiency", json_real(eff));
            json_object_set_new(j, "overhead", json_real(over));
            json_object_set_new(j, "rounds_per_min", json_real(rpm));
            cli_json_print(j);
        }
    }
    if (mpi) { /* the aggregation figures are one process's: measured without mpirun */
        fedc_mpi_finalize();
        return CLI_EXIT_OK;
    }
    double bw = stream_copy_gbps();
    fprintf(h, "  memory bandwidth (64 MiB memcpy): %.1f GB/s\n", bw);
    size_t sizes[2] = {199210, 1663370};
    const char *names[2] = {"mlp", "cnn"};
    for (int i = 0; i < 2; i++) {
        fedc_accum_bench_result r;
        fedc_err err;
        if (fedc_accum_bench(sizes[i], 10, 0.5, &r, &err) != FEDC_OK)
            return cli_fail("bench", "%s", fedc_err_message(&err));
        fprintf(h, "  aggregation, %s update (%zu floats): fold %.1f GB/s one at a time, "
                   "%.1f GB/s 10 at a time; memcpy of the same bytes %.1f GB/s "
                   "(%.0f%% / %.0f%% of it; %.0f%% of memory bandwidth)\n",
                names[i], sizes[i], r.fold_gbps, r.fold_many_gbps, r.copy_gbps,
                100 * r.fold_gbps / r.copy_gbps, 100 * r.fold_many_gbps / r.copy_gbps,
                100 * r.fold_many_gbps / bw);
        if (json) {
            json_t *j = json_object();
            json_object_set_new(j, "case", json_string("aggregate"));
            json_object_set_new(j, "model", json_string(names[i]));
            json_object_set_new(j, "params", json_integer((json_int_t)sizes[i]));
            json_object_set_new(j, "fold_gbps", json_real(r.fold_gbps));
            json_object_set_new(j, "fold_many_gbps", json_real(r.fold_many_gbps));
            json_object_set_new(j, "copy_gbps", json_real(r.copy_gbps));
            json_object_set_new(j, "memory_gbps", json_real(bw));
            cli_json_print(j);
        }
    }
    return CLI_EXIT_OK;
}
