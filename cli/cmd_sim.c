/*
 * fedc sim: a whole federation in one process. Loads the config and the data, splits the data
 * among virtual clients, runs the rounds on the simulation transport, and writes the run's
 * outputs (metrics.jsonl, metrics.csv, model.safetensors, report.html). With differential
 * privacy it prints the epsilon spent (blocks marked "DP") and says so when the run stopped
 * at its epsilon budget (exit 0).
 *
 * Checkpoints (blocks marked "CKPT"; docs/SCALING.md "Checkpoint and resume"): --checkpoint DIR
 * has the library write the run's state to DIR every run.checkpoint_every rounds; this command
 * adds DIR/records.bin, every round's record, so that --resume, which continues from the newest
 * checkpoint, writes outputs (metrics, report) holding every round of the run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "fedc/data.h"
#include "fedc/mpi.h"
#include "fedc/nn.h"
#include "fedc/run.h"
#include "fedc/safetensors.h"
#include "fedc/sim.h"
#include "fedc/trainer_nn.h"
#include "report.h"

typedef struct sim_ctx {
    int json;
    int quiet;
    FILE *human;
    const char *out_dir;
    FILE *jsonl, *csv;
    cli_progress progress;
    fedc_round_record *recs;
    size_t nrecs, cap;
    uint32_t rounds;
    int write_error;
    uint32_t stop_after;  /* --stop-after: stop (with a checkpoint) after this round; 0 = no */
    FILE *records;        /* CKPT: DIR/records.bin, appended every round */
    size_t nold;          /* CKPT: records of the rounds before the resumed checkpoint */
} sim_ctx;

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return (mkdir(buf, 0755) != 0 && errno != EEXIST) ? -1 : 0;
}

static FILE *open_out(const char *dir, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", dir, name);
    return fopen(path, "w");
}

static int on_round(void *user, const fedc_round_record *rec)
{
    sim_ctx *c = user;
    if (c->nrecs == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        fedc_round_record *r = realloc(c->recs, cap * sizeof *r);
        if (!r) return 1;
        c->recs = r;
        c->cap = cap;
    }
    c->recs[c->nrecs++] = *rec;
    char *js = report_record_json(rec);
    if (c->json && js) {
        fputs(js, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (c->jsonl && js) {
        fputs(js, c->jsonl);
        fputc('\n', c->jsonl);
        fflush(c->jsonl);
    }
    free(js);
    if (c->csv) {
        report_csv_row(c->csv, rec);
        fflush(c->csv);
    }
    if (c->records) { /* CKPT: before the library checkpoints this round */
        if (fwrite(rec, sizeof *rec, 1, c->records) != 1 || fflush(c->records) != 0 ||
            fsync(fileno(c->records)) != 0)
            c->write_error = 1;
        if (c->write_error) return 1; /* stop (with a checkpoint): the records are incomplete */
    }
    if (!c->quiet) {
        char status[160];
        if (rec->evaluated)
            snprintf(status, sizeof status, "test acc %.2f%%  loss %.4f  (%u clients)",
                     100 * rec->test_accuracy, rec->test_loss, rec->participants);
        else
            snprintf(status, sizeof status, "train loss %.4f  (%u clients)", rec->train_loss,
                     rec->participants);
        double eps = isfinite(rec->epsilon) ? rec->epsilon : rec->dp_sgd_epsilon; /* DP */
        if (isfinite(eps))
            snprintf(status + strlen(status), sizeof status - strlen(status), "  eps %.3g", eps);
        cli_progress_update(&c->progress, (long)rec->round, status);
    }
    return c->stop_after && rec->round >= c->stop_after;
}

/* ---- CKPT: the records of a checkpointed run (DIR/records.bin: a header, then the raw
 * fedc_round_record of every round in the order they ran; the same fedc build reads it) ---- */

#define RECORDS_MAGIC "FEDCRECS"

typedef struct records_header {
    char magic[8];
    uint32_t version;
    uint32_t record_size;
} records_header;

/* Loads the records of rounds 1..upto from path into c (the last copy of each round: a round
 * re-run after an earlier resume appears twice) and rewrites the file with them alone, ready
 * for appending. Returns 0, or -1 after printing why. */
static int records_open(sim_ctx *c, const char *dir, uint32_t upto)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/records.bin", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    records_header h;
    if (upto > 0) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            cli_fail("sim", "resume: cannot read %s (the rounds before the checkpoint): %s",
                     path, strerror(errno));
            return -1;
        }
        int ok = fread(&h, sizeof h, 1, f) == 1 && memcmp(h.magic, RECORDS_MAGIC, 8) == 0 &&
                 h.version == 1 && h.record_size == sizeof(fedc_round_record);
        fedc_round_record *byround = ok ? calloc(upto, sizeof *byround) : NULL;
        fedc_round_record r;
        while (byround && fread(&r, sizeof r, 1, f) == 1)
            if (r.round >= 1 && r.round <= upto) byround[r.round - 1] = r;
        fclose(f);
        for (uint32_t i = 0; byround && i < upto; i++)
            if (byround[i].round != i + 1) ok = 0;
        if (!ok) {
            free(byround);
            cli_fail("sim", "resume: %s is not the records of rounds 1 to %u written by this "
                     "fedc build (another version, or a damaged file)", path, upto);
            return -1;
        }
        c->recs = byround;
        c->nrecs = c->cap = c->nold = upto;
    }
    FILE *f = fopen(tmp, "wb");
    memcpy(h.magic, RECORDS_MAGIC, 8);
    h.version = 1;
    h.record_size = sizeof(fedc_round_record);
    int bad = !f || fwrite(&h, sizeof h, 1, f) != 1 ||
              (c->nold && fwrite(c->recs, sizeof *c->recs, c->nold, f) != c->nold) ||
              fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (f && fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0 || !(c->records = fopen(path, "ab"))) {
        cli_fail("sim", "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* DP: the epsilon to show for a record (user-level, else DP-SGD's), NAN without DP. */
static double shown_epsilon(const fedc_round_record *r)
{
    return isfinite(r->epsilon) ? r->epsilon : r->dp_sgd_epsilon;
}

static void print_summary(FILE *f, const sim_ctx *c, double seconds, const char *sha)
{
    size_t n = c->nrecs, nnew = c->nrecs - c->nold; /* CKPT: rounds run by this invocation */
    int dp = n && (c->recs[0].dp_mode != FEDC_DP_OFF || c->recs[0].dp_sgd);
    fprintf(f, "\n  round   clients   train loss   test loss   test acc    seconds%s\n",
            dp ? "    epsilon" : "");
    fprintf(f, "  -----   -------   ----------   ---------   --------   --------%s\n",
            dp ? "   --------" : "");
    /* at most ~12 rows: the evaluated rounds, evenly thinned, and always the last */
    size_t step = n > 12 ? (n + 11) / 12 : 1;
    for (size_t i = 0; i < n; i++) {
        if (i % step != step - 1 && i != n - 1) continue;
        const fedc_round_record *r = &c->recs[i];
        fprintf(f, "  %5u   %3u/%-3u   %10.4f", r->round, r->participants, r->selected,
                r->train_loss);
        if (r->evaluated)
            fprintf(f, "   %9.4f   %7.2f%%", r->test_loss, 100 * r->test_accuracy);
        else
            fprintf(f, "   %9s   %8s", "-", "-");
        fprintf(f, "   %8.2f", r->seconds);
        if (dp) fprintf(f, "   %8.4g", shown_epsilon(r));
        fputc('\n', f);
    }
    const fedc_round_record *last = NULL;
    for (size_t i = n; i > 0 && !last; i--)
        if (c->recs[i - 1].evaluated) last = &c->recs[i - 1];
    fprintf(f, "\n");
    if (last)
        fprintf(f, "Final test accuracy: %.2f%% (round %u)\n", 100 * last->test_accuracy,
                last->round);
    if (dp) { /* DP */
        const fedc_round_record *r = &c->recs[n - 1];
        if (isfinite(r->epsilon))
            fprintf(f, "Privacy: user-level (%s) epsilon %.6g at delta %g after %u rounds%s\n",
                    r->dp_mode == FEDC_DP_CENTRAL ? "central DP" : "local DP, largest over "
                                                                   "clients",
                    r->epsilon, r->dp_delta, r->round,
                    r->dp_seeded_noise ? " (seeded test noise: NOT private)" : "");
        if (isfinite(r->dp_sgd_epsilon))
            fprintf(f, "Privacy: example-level (DP-SGD) epsilon %.6g at delta %g, largest over "
                       "clients%s\n",
                    r->dp_sgd_epsilon, r->dp_delta,
                    r->dp_seeded_noise ? " (seeded test noise: NOT private)" : "");
    }
    if (c->nold) /* CKPT */
        fprintf(f, "Resumed after round %zu from its checkpoint\n", c->nold);
    fprintf(f, "%zu rounds in %.1f s (%.1f rounds/min)\nmodel_sha256: %s\n", nnew, seconds,
            seconds > 0 ? 60.0 * (double)nnew / seconds : 0, sha);
}

static char *config_text(const fedc_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) return NULL;
    fedc_config_write(cfg, m);
    fclose(m);
    return buf;
}

static void set_logging(const fedc_config *cfg)
{
    fedc_log_level lvl;
    if (fedc_log_level_parse(fedc_config_str(cfg, "run.log_level"), &lvl) == 0)
        fedc_log_set(fedc_log_stderr, NULL, lvl);
}

/* ---- MPI (`mpirun -np R fedc sim`, docs/SCALING.md): rank 0 prints and writes; the other
 * ranks are silent, their failures reported by rank 0 ---- */

/* mpirun ends the other ranks with SIGTERM when one dies: say so before going. */
static void mpi_on_signal(int sig)
{
    static const char msg[] = "fedc sim: rank 0 stopped by a signal: under mpirun this means "
                              "another rank ended or the run was interrupted (mpirun's message "
                              "names the rank)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Ranks other than 0: no output at all. Until the setup is agreed, stderr goes to a temporary
 * file, so that a setup error can be sent to rank 0; then to /dev/null. */
static FILE *mpi_setup_log;

static void mpi_silence(sim_ctx *c)
{
    c->quiet = 1;
    c->json = 0;
    c->out_dir = NULL;
    fflush(stdout);
    fflush(stderr);
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) return;
    dup2(fd, STDOUT_FILENO);
    mpi_setup_log = tmpfile();
    dup2(mpi_setup_log ? fileno(mpi_setup_log) : fd, STDERR_FILENO);
    close(fd);
}

/* The last "fedc sim: " message this rank printed during setup, into e. */
static void mpi_setup_message(fedc_err *e)
{
    if (!mpi_setup_log) return;
    fflush(stderr);
    rewind(mpi_setup_log);
    char line[FEDC_ERRMSG_MAX], found[FEDC_ERRMSG_MAX] = "";
    while (fgets(line, sizeof line, mpi_setup_log))
        if (strncmp(line, "fedc sim: ", 10) == 0) snprintf(found, sizeof found, "%s", line + 10);
    found[strcspn(found, "\n")] = '\0';
    if (found[0]) fedc_err_set(e, e->code != FEDC_OK ? e->code : FEDC_ERR_INVALID, "%s", found);
    int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    fclose(mpi_setup_log);
    mpi_setup_log = NULL;
}

/* Collective: every rank says whether its setup worked (ok; e its error, may be NULL). Returns
 * 1 when all did. Rank 0 prints the other ranks' failures (its own were printed already). */
static int mpi_setup_agree(int ok, const fedc_err *e)
{
    fedc_err local, all;
    fedc_err_clear(&local);
    fedc_err_clear(&all);
    if (!ok) {
        if (e && e->code != FEDC_OK)
            local = *e;
        else
            fedc_err_set(&local, FEDC_ERR_INVALID, "setup failed (configuration, data or output)");
    }
    mpi_setup_message(ok ? &all : &local); /* non-zero ranks: what they printed, then silence */
    fedc_err_clear(&all);
    fedc_status st = fedc_mpi_agree(ok ? FEDC_OK : local.code, &local, &all);
    if (st != FEDC_OK && ok && fedc_mpi_rank() == 0) cli_fail("sim", "%s", fedc_err_message(&all));
    return st == FEDC_OK;
}

static void print_mpi_stats(FILE *f, const fedc_mpi_stats *m)
{
    double per = m->rounds ? 1.0 / m->rounds : 0;
    double busy = m->mean_train_seconds + m->mean_wait_seconds + m->mean_comm_seconds;
    fprintf(f, "MPI: %d ranks x %d threads; per round, mean over ranks: training %.3f s, "
               "waiting for the slowest rank %.3f s, communication %.3f s (%.1f%%); load "
               "imbalance %.3f\n",
            m->ranks, m->threads, m->mean_train_seconds * per, m->mean_wait_seconds * per,
            m->mean_comm_seconds * per, busy > 0 ? 100 * m->mean_comm_seconds / busy : 0,
            m->imbalance);
}

int cmd_sim(int argc, char **argv)
{
    static const struct option opts[] = {
        {"set", required_argument, NULL, 's'}, {"out", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},      {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},     {"mpi", no_argument, NULL, 'M'},
        {"checkpoint", required_argument, NULL, 'C'}, {"resume", no_argument, NULL, 'R'},
        {"stop-after", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    char **sets = calloc((size_t)argc + 2, sizeof *sets);
    char ckpt_set[4200] = ""; /* CKPT: "run.checkpoint_dir=DIR" */
    int nsets = 0, threads = 0, c;
    sim_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    int mpi = 0, mpi_agreed = 0; /* MPI */
    fedc_mpi_stats mstats;
    memset(&mstats, 0, sizeof mstats);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:o:jt:q", opts, NULL)) != -1) {
        switch (c) {
        case 's': sets[nsets++] = optarg; break;
        case 'o': ctx.out_dir = optarg; break;
        case 'j': ctx.json = 1; break;
        case 'q': ctx.quiet = 1; break;
        case 'M': mpi = 1; break;
        case 'C': /* CKPT */
            if (!optarg[0] || strlen(optarg) > 4096) {
                free(sets);
                return cli_usage_error("sim", "--checkpoint wants a directory");
            }
            snprintf(ckpt_set, sizeof ckpt_set, "run.checkpoint_dir=%s", optarg);
            break;
        case 'R': sets[nsets++] = "run.resume=true"; break;
        case 'S': {
            char *end;
            long r = strtol(optarg, &end, 10);
            if (*end || r < 1 || r > 1000000) {
                free(sets);
                return cli_usage_error("sim", "--stop-after wants a round 1..1000000, got '%s'",
                                       optarg);
            }
            ctx.stop_after = (uint32_t)r;
            break;
        }
        case 't': {
            char *end;
            long t = strtol(optarg, &end, 10);
            if (*end || t < 1 || t > 1024) {
                free(sets);
                return cli_usage_error("sim", "--threads wants 1..1024, got '%s'", optarg);
            }
            threads = (int)t;
            break;
        }
        default:
            free(sets);
            return cli_usage_error("sim", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        free(sets);
        return cli_usage_error("sim", optind >= argc ? "missing CONFIG file"
                                                     : "one CONFIG file expected");
    }
    const char *config_path = argv[optind];
    if (ckpt_set[0]) sets[nsets++] = ckpt_set; /* CKPT */
    if (mpi || fedc_mpi_launched()) { /* MPI */
        fedc_err merr;
        fedc_err_clear(&merr);
        if (fedc_mpi_init(&merr) != FEDC_OK) {
            free(sets);
            return cli_fail("sim", "%s", fedc_err_message(&merr));
        }
        mpi = 1;
        if (fedc_mpi_rank() != 0) mpi_silence(&ctx);
        else {
            signal(SIGTERM, mpi_on_signal);
            signal(SIGHUP, mpi_on_signal);
        }
    }
    fedc_config *cfg = cli_load_config("sim", config_path, sets, nsets);
    free(sets);
    if (!cfg) {
        if (mpi) { /* MPI: the other ranks wait for this one's outcome */
            mpi_setup_agree(0, NULL);
            fedc_mpi_finalize();
        }
        return CLI_EXIT_FAIL;
    }
    set_logging(cfg);
    ctx.human = cli_human(ctx.json);

    int rc = CLI_EXIT_FAIL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_run run;
    memset(&run, 0, sizeof run);
    char *cfg_text = NULL;
    double t_start = cli_now();

    if (fedc_run_init(&run, cfg, 0, &err) != FEDC_OK) {
        cli_fail("sim", "%s", fedc_err_message(&err));
        goto done;
    }
    fedc_dataset *train = run.train, *test = run.test;
    fedc_trainer *trainer = run.trainer;
    fedc_engine *engine = run.engine;
    if (!threads) threads = (int)fedc_config_int(cfg, "run.threads");
    if (!threads) threads = mpi ? fedc_mpi_default_threads() : fedc_sim_default_threads();
    ctx.rounds = (uint32_t)fedc_config_int(cfg, "run.rounds");

    if (ctx.out_dir) {
        char path[4096];
        if (mkdir_p(ctx.out_dir) != 0) {
            cli_fail("sim", "cannot create output directory %s: %s", ctx.out_dir, strerror(errno));
            goto done;
        }
        ctx.jsonl = open_out(ctx.out_dir, "metrics.jsonl", path, sizeof path);
        ctx.csv = open_out(ctx.out_dir, "metrics.csv", path, sizeof path);
        if (!ctx.jsonl || !ctx.csv) {
            cli_fail("sim", "cannot write %s: %s", path, strerror(errno));
            goto done;
        }
        report_csv_header(ctx.csv);
    }
    const char *ckpt_dir = fedc_config_str(cfg, "run.checkpoint_dir"); /* CKPT */
    if (fedc_config_bool(cfg, "run.resume") && !ckpt_dir[0]) {
        cli_fail("sim", "--resume needs the checkpoint directory: --checkpoint DIR (or "
                        "run.checkpoint_dir)");
        goto done;
    }
    if (ckpt_dir[0] && (!mpi || fedc_mpi_rank() == 0)) { /* CKPT: rank 0 keeps the records */
        uint32_t latest = 0;
        if (fedc_sim_checkpoint_latest(ckpt_dir, &latest, &err) != FEDC_OK) {
            cli_fail("sim", "%s", fedc_err_message(&err));
            goto done;
        }
        if (latest && !fedc_config_bool(cfg, "run.resume")) {
            cli_fail("sim", "%s holds checkpoints of a run (the newest after round %u): add "
                            "--resume to continue it, or give another directory",
                     ckpt_dir, latest);
            goto done;
        }
        if (mkdir_p(ckpt_dir) != 0) {
            cli_fail("sim", "cannot create checkpoint directory %s: %s", ckpt_dir,
                     strerror(errno));
            goto done;
        }
        if (records_open(&ctx, ckpt_dir, latest) != 0) goto done;
        for (size_t i = 0; i < ctx.nold; i++) { /* the earlier rounds, in this run's outputs */
            char *js = report_record_json(&ctx.recs[i]);
            if (ctx.jsonl && js) fprintf(ctx.jsonl, "%s\n", js);
            free(js);
            if (ctx.csv) report_csv_row(ctx.csv, &ctx.recs[i]);
        }
    }

    const fedc_model *model = fedc_trainer_nn_model(trainer);
    if (!ctx.quiet) {
        int64_t shape[FEDC_DATA_MAX_DIMS];
        int nd = fedc_dataset_shape(train, shape);
        char shp[64] = "";
        for (int i = 0; i < nd; i++)
            snprintf(shp + strlen(shp), sizeof shp - strlen(shp), "%s%lld", i ? "x" : "",
                     (long long)shape[i]);
        fprintf(ctx.human, "fedc sim %s\n", config_path);
        fprintf(ctx.human, "  data      %s: %zu train / %zu test samples of %s, %d classes\n",
                fedc_dataset_name(train), fedc_dataset_n(train), test ? fedc_dataset_n(test) : 0,
                shp, (int)fedc_dataset_num_classes(train));
        fprintf(ctx.human, "  clients   %lld, %lld per round, %s partition\n",
                (long long)fedc_config_int(cfg, "clients.count"),
                (long long)fedc_config_int(cfg, "clients.per_round"),
                fedc_config_str(cfg, "data.partition"));
        fprintf(ctx.human, "  model     %s: %zu parameters\n", fedc_config_str(cfg, "model.spec"),
                fedc_model_param_count(model));
        fprintf(ctx.human, "  strategy  %s; local: %s lr %g, batch %lld, %lld epoch(s)\n",
                fedc_engine_strategy_name(engine), fedc_config_str(cfg, "train.optimizer"),
                fedc_config_double(cfg, "train.lr"),
                (long long)fedc_config_int(cfg, "train.batch_size"),
                (long long)fedc_config_int(cfg, "train.epochs"));
        const char *dp_mode = fedc_config_str(cfg, "dp.mode"); /* DP */
        if (strcmp(dp_mode, "off") != 0)
            fprintf(ctx.human, "  privacy   DP %s: noise multiplier %g, clip %g%s on the %s, "
                               "delta %g, budget %s%g%s\n",
                    dp_mode, fedc_config_double(cfg, "dp.noise_multiplier"),
                    fedc_config_double(cfg, "dp.clip"),
                    fedc_config_bool(cfg, "dp.adaptive_clip") ? " (adaptive)" : "",
                    fedc_config_str(cfg, "dp.clip_on"), fedc_config_double(cfg, "dp.delta"),
                    fedc_config_double(cfg, "dp.epsilon_budget") > 0 ? "epsilon " : "",
                    fedc_config_double(cfg, "dp.epsilon_budget"),
                    fedc_config_bool(cfg, "dp.seeded_noise") ? "; SEEDED TEST NOISE: NOT PRIVATE"
                                                             : "");
        if (fedc_config_bool(cfg, "dp.sgd"))
            fprintf(ctx.human, "  privacy   DP-SGD: noise multiplier %g, per-example clip %g\n",
                    fedc_config_double(cfg, "dp.sgd_noise_multiplier"),
                    fedc_config_double(cfg, "dp.sgd_clip"));
        if (mpi) /* MPI */
            fprintf(ctx.human, "  ranks     %d (MPI), %d threads each\n\n", fedc_mpi_size(),
                    threads);
        else
            fprintf(ctx.human, "  threads   %d\n\n", threads);
        cli_progress_start(&ctx.progress, ctx.human, "round", (long)ctx.rounds);
    }

    if (mpi) { /* MPI: every rank is ready, or none runs */
        mpi_agreed = 1;
        if (!mpi_setup_agree(1, NULL)) goto done;
    }
    fedc_sim_opts so = {threads, on_round, &ctx};
    fedc_status st = mpi ? fedc_mpi_run(engine, trainer, cfg, &so, &mstats, &err)
                         : fedc_sim_run(engine, trainer, cfg, &so, &err);
    if (!ctx.quiet) cli_progress_finish(&ctx.progress, NULL);
    if (st != FEDC_OK) {
        cli_fail("sim", "%s", fedc_err_message(&err));
        if (mpi && st == FEDC_ERR_NETWORK) fedc_mpi_abort(1); /* MPI: the others may be stuck */
        goto done;
    }
    if (ctx.write_error) { /* CKPT */
        cli_fail("sim", "cannot write %s/records.bin: %s; stopped after round %u, which a "
                        "--resume continues once the disk is writable",
                 fedc_config_str(cfg, "run.checkpoint_dir"), strerror(errno),
                 fedc_engine_last_round(engine));
        goto done;
    }
    double seconds = cli_now() - t_start;
    char sha[65];
    fedc_vec_sha256_hex(fedc_engine_num_params(engine), fedc_engine_global(engine), sha);
    cfg_text = config_text(cfg);

    if (ctx.out_dir) {
        char path[4096], rounds_s[32];
        snprintf(path, sizeof path, "%s/model.safetensors", ctx.out_dir);
        snprintf(rounds_s, sizeof rounds_s, "%u", fedc_engine_last_round(engine));
        fedc_st_meta meta[] = {
            {"format", "pt"},
            {"fedc_version", FEDC_VERSION},
            {"model_spec", fedc_config_str(cfg, "model.spec")},
            {"round", rounds_s},
            {"strategy", fedc_engine_strategy_name(engine)},
            {"model_sha256", sha},
        };
        if (fedc_safetensors_write(path, fedc_engine_layout(engine), fedc_engine_global(engine),
                                   meta, sizeof meta / sizeof meta[0], &err) != FEDC_OK) {
            cli_fail("sim", "%s", fedc_err_message(&err));
            goto done;
        }
        char *title_src = strdup(config_path);
        char *base = basename(title_src);
        char *dot = strrchr(base, '.');
        if (dot) *dot = '\0';
        report_info info = {
            .title = base,
            .dataset = fedc_dataset_name(train),
            .model = fedc_config_str(cfg, "model.spec"),
            .params = fedc_engine_num_params(engine),
            .strategy = fedc_engine_strategy_name(engine),
            .partition = fedc_config_str(cfg, "data.partition"),
            .clients = (long)fedc_config_int(cfg, "clients.count"),
            .per_round = (long)fedc_config_int(cfg, "clients.per_round"),
            .threads = threads,
            .total_seconds = seconds,
            .model_sha256 = sha,
            .config_text = cfg_text ? cfg_text : "",
        };
        snprintf(path, sizeof path, "%s/report.html", ctx.out_dir);
        int bad = report_write_html(path, &info, ctx.recs, ctx.nrecs);
        free(title_src);
        if (bad) {
            cli_fail("sim", "cannot write %s: %s", path, strerror(errno));
            goto done;
        }
    }
    if (!ctx.quiet) print_summary(ctx.human, &ctx, seconds, sha);
    if (mpi && !ctx.quiet) print_mpi_stats(ctx.human, &mstats); /* MPI */
    if (ctx.nrecs && ctx.recs[ctx.nrecs - 1].dp_budget_stop) { /* DP: even with --quiet */
        const fedc_round_record *r = &ctx.recs[ctx.nrecs - 1];
        fprintf(ctx.human, "Stopped after round %u of %u: round %u would spend epsilon %.6g, "
                           "more than dp.epsilon_budget = %g\n",
                r->round, ctx.rounds, r->round + 1, r->dp_next_epsilon,
                fedc_config_double(cfg, "dp.epsilon_budget"));
    }
    if (ctx.out_dir && !ctx.quiet)
        fprintf(ctx.human, "Results in %s/: report.html, metrics.jsonl, metrics.csv, "
                           "model.safetensors\n",
                ctx.out_dir);
    if (ctx.json) {
        json_t *o = json_object();
        json_object_set_new(o, "final", json_true());
        json_object_set_new(o, "rounds", json_integer(fedc_engine_last_round(engine)));
        json_object_set_new(o, "model_sha256", json_string(sha));
        json_object_set_new(o, "params", json_integer((json_int_t)fedc_engine_num_params(engine)));
        json_object_set_new(o, "seconds", json_real(seconds));
        if (mpi) { /* MPI: per-rank means over the run */
            json_object_set_new(o, "ranks", json_integer(mstats.ranks));
            json_object_set_new(o, "threads", json_integer(mstats.threads));
            json_object_set_new(o, "train_seconds", json_real(mstats.mean_train_seconds));
            json_object_set_new(o, "wait_seconds", json_real(mstats.mean_wait_seconds));
            json_object_set_new(o, "comm_seconds", json_real(mstats.mean_comm_seconds));
            json_object_set_new(o, "server_seconds", json_real(mstats.server_seconds));
            json_object_set_new(o, "eval_seconds", json_real(mstats.eval_seconds));
            json_object_set_new(o, "imbalance", json_real(mstats.imbalance));
        }
        if (ctx.nrecs) { /* DP */
            const fedc_round_record *r = &ctx.recs[ctx.nrecs - 1];
            if (isfinite(r->epsilon)) json_object_set_new(o, "epsilon", json_real(r->epsilon));
            if (isfinite(r->dp_sgd_epsilon))
                json_object_set_new(o, "dp_sgd_epsilon", json_real(r->dp_sgd_epsilon));
            if (r->dp_budget_stop) json_object_set_new(o, "dp_budget_stop", json_true());
        }
        for (size_t i = ctx.nrecs; i > 0; i--) {
            if (ctx.recs[i - 1].evaluated) {
                json_object_set_new(o, "test_accuracy", json_real(ctx.recs[i - 1].test_accuracy));
                json_object_set_new(o, "test_loss", json_real(ctx.recs[i - 1].test_loss));
                break;
            }
        }
        cli_json_print(o);
    }
    rc = CLI_EXIT_OK;
done:
    if (mpi && !mpi_agreed) mpi_setup_agree(0, &err); /* MPI: a setup step failed here */
    if (ctx.jsonl) fclose(ctx.jsonl);
    if (ctx.csv) fclose(ctx.csv);
    if (ctx.records) fclose(ctx.records); /* CKPT */
    free(ctx.recs);
    free(cfg_text);
    fedc_run_fini(&run);
    fedc_config_destroy(cfg);
    if (mpi) fedc_mpi_finalize();
    return rc;
}
