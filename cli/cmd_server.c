/*
 * fedc server: runs a real federation (docs/DEPLOY.md). The round engine is the simulation's;
 * the clients are processes that reach this server over HTTPS (fedc/server.h).
 *
 *   fedc server CONFIG --listen HOST:PORT --state DIR [--tls-cert F --tls-key F] ...
 *   fedc server allow PUBKEY [LABEL] --state DIR      add a client key to the allow-list
 *   fedc server clients --state DIR [--json]          list the allow-list
 *   fedc server rounds --state DIR [--json]           list the committed rounds
 *
 * The server loads the same data as `fedc sim` (for the model's shape and the central test
 * set) and writes DIR/model.safetensors at the end. Not in client-only builds.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "fedc/config_build.h"

#if FEDC_CLIENT_ONLY

int cmd_server(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("server", "this fedc is a client-only build (FEDC_CLIENT_ONLY): no server");
}

#else

#include "fedc/server.h"
#include "fedc/store.h"
#include "report.h"

static fedc_server *volatile the_server;

static void on_signal(int sig)
{
    (void)sig;
    fedc_server *s = the_server;
    if (s) fedc_server_stop(s);
}

typedef struct server_ctx {
    int json, quiet;
    FILE *human;
} server_ctx;

static void on_round(void *user, const fedc_round_record *rec, uint32_t attempt, const char *sha)
{
    server_ctx *c = user;
    if (c->json) {
        char *js = report_record_json(rec);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        free(js);
        if (!o) o = json_object();
        json_object_set_new(o, "attempt", json_integer(attempt));
        json_object_set_new(o, "model_sha256", json_string(sha));
        cli_json_print(o);
    }
    if (!c->quiet) {
        fprintf(c->human, "round %4u  %u/%u results  train loss %.4f", rec->round,
                rec->participants, rec->selected, rec->train_loss);
        if (rec->evaluated)
            fprintf(c->human, "  test acc %.2f%%  loss %.4f", 100 * rec->test_accuracy,
                    rec->test_loss);
        fprintf(c->human, "  %.2fs\n", rec->seconds);
        fflush(c->human);
    }
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The state directory's store, for the admin actions. */
static fedc_store *open_store(const char *cmd, const char *dir)
{
    if (!dir) {
        cli_usage_error(cmd, "--state DIR is required");
        return NULL;
    }
    fedc_store *st = NULL;
    fedc_err err;
    if (fedc_store_open(dir, &st, &err) != FEDC_OK) {
        cli_fail(cmd, "%s", fedc_err_message(&err));
        return NULL;
    }
    return st;
}

static int round_row(void *user, const fedc_store_round *r)
{
    server_ctx *c = user;
    if (c->json) {
        char *js = report_record_json(&r->rec);
        json_t *o = js ? json_loads(js, 0, NULL) : NULL;
        free(js);
        if (!o) o = json_object();
        json_object_set_new(o, "attempt", json_integer(r->attempt));
        json_object_set_new(o, "model_sha256", json_string(r->model_sha256));
        json_object_set_new(o, "checkpoint", json_string(r->checkpoint));
        json_object_set_new(o, "committed", json_integer(r->committed));
        cli_json_print(o);
    } else {
        printf("%5u  %3u/%-3u  %10.4f  %s\n", r->rec.round, r->rec.participants, r->rec.selected,
               r->rec.train_loss, r->model_sha256);
    }
    return 0;
}

static int admin(const char *action, int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    server_ctx ctx = {0, 0, stdout};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "S:j", opts, NULL)) != -1) {
        switch (c) {
        case 'S': dir = optarg; break;
        case 'j': ctx.json = 1; break;
        default:
            return cli_usage_error("server", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    char **ops = argv + optind;
    int nops = argc - optind;
    fedc_err err;
    if (strcmp(action, "allow") == 0) {
        if (nops < 1 || nops > 2)
            return cli_usage_error("server", "usage: fedc server allow PUBKEY [LABEL] --state DIR");
        uint8_t pk[FEDC_KEY_PUBLIC_BYTES];
        if (fedc_key_public_parse(ops[0], pk, &err) != FEDC_OK)
            return cli_fail("server", "%s", fedc_err_message(&err));
        fedc_store *st = open_store("server", dir);
        if (!st) return dir ? CLI_EXIT_FAIL : CLI_EXIT_USAGE;
        uint32_t id = 0;
        int added = 0;
        fedc_status s = fedc_store_allow(st, pk, nops > 1 ? ops[1] : "", &id, &added, &err);
        fedc_store_close(st);
        if (s != FEDC_OK) return cli_fail("server", "%s", fedc_err_message(&err));
        if (ctx.json) {
            json_t *o = json_object();
            json_object_set_new(o, "client_id", json_integer(id));
            json_object_set_new(o, "added", json_boolean(added));
            cli_json_print(o);
        } else {
            printf("client %u%s\n", id, added ? "" : " (already allowed)");
        }
        return CLI_EXIT_OK;
    }
    if (nops != 0) return cli_usage_error("server", "unexpected argument '%s'", ops[0]);
    fedc_store *st = open_store("server", dir);
    if (!st) return dir ? CLI_EXIT_FAIL : CLI_EXIT_USAGE;
    fedc_status s = FEDC_OK;
    if (strcmp(action, "clients") == 0) {
        fedc_store_client *cl;
        size_t n;
        s = fedc_store_clients(st, &cl, &n, &err);
        for (size_t i = 0; s == FEDC_OK && i < n; i++) {
            char hex[FEDC_KEY_PUBLIC_HEX];
            fedc_key_public_to_hex(cl[i].pk, hex);
            if (ctx.json) {
                json_t *o = json_object();
                json_object_set_new(o, "client_id", json_integer(cl[i].id));
                json_object_set_new(o, "public_key", json_string(hex));
                json_object_set_new(o, "label", json_string(cl[i].label));
                json_object_set_new(o, "added", json_integer(cl[i].added));
                cli_json_print(o);
            } else {
                printf("%5u  %s  %s\n", cl[i].id, hex, cl[i].label);
            }
        }
        if (s == FEDC_OK) fedc_free(cl);
    } else {
        fedc_store_run run;
        s = fedc_store_run_get(st, &run, &err);
        if (s == FEDC_OK) s = fedc_store_rounds(st, round_row, &ctx, &err);
    }
    fedc_store_close(st);
    if (s != FEDC_OK) return cli_fail("server", "%s", fedc_err_message(&err));
    return CLI_EXIT_OK;
}

static void set_logging(const fedc_config *cfg)
{
    fedc_log_level lvl;
    if (fedc_log_level_parse(fedc_config_str(cfg, "run.log_level"), &lvl) != 0) lvl = FEDC_LOG_WARN;
    fedc_log_set(fedc_log_stderr, NULL, lvl);
}

int cmd_server(int argc, char **argv)
{
    if (argc >= 2 &&
        (!strcmp(argv[1], "allow") || !strcmp(argv[1], "clients") || !strcmp(argv[1], "rounds")))
        return admin(argv[1], argc - 1, argv + 1);
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"state", required_argument, NULL, 'S'},
        {"tls-cert", required_argument, NULL, 'c'},
        {"tls-key", required_argument, NULL, 'k'},
        {"allow-file", required_argument, NULL, 'a'},
        {"set", required_argument, NULL, 's'},
        {"serve-on", no_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {NULL, 0, NULL, 0},
    };
    char **sets = calloc((size_t)argc, sizeof *sets);
    int nsets = 0, c;
    fedc_server_opts so;
    memset(&so, 0, sizeof so);
    server_ctx ctx = {0, 0, stdout};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "l:S:c:k:a:s:ojq", opts, NULL)) != -1) {
        switch (c) {
        case 'l': so.listen = optarg; break;
        case 'S': so.state_dir = optarg; break;
        case 'c': so.tls_cert = optarg; break;
        case 'k': so.tls_key = optarg; break;
        case 'a': so.allow_file = optarg; break;
        case 's': sets[nsets++] = optarg; break;
        case 'o': so.serve_on = 1; break;
        case 'j': ctx.json = 1; break;
        case 'q': ctx.quiet = 1; break;
        default:
            free(sets);
            return cli_usage_error("server", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        free(sets);
        return cli_usage_error("server",
                               optind >= argc ? "missing CONFIG file" : "one CONFIG file expected");
    }
    if (!so.listen || !so.state_dir) {
        free(sets);
        return cli_usage_error("server", "--listen HOST:PORT and --state DIR are required");
    }
    if (!so.tls_cert != !so.tls_key) {
        free(sets);
        return cli_usage_error("server", "--tls-cert and --tls-key go together");
    }
    const char *config_path = argv[optind];
    fedc_config *cfg = cli_load_config("server", config_path, sets, nsets);
    free(sets);
    if (!cfg) return CLI_EXIT_FAIL;
    set_logging(cfg);
    ctx.human = cli_human(ctx.json);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    int rc = CLI_EXIT_FAIL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_dataset *train = NULL, *test = NULL;
    fedc_partition *part = NULL;
    fedc_trainer *trainer = NULL;
    fedc_server *server = NULL;
    const char *spec = fedc_config_str(cfg, "data.dataset");
    fedc_partition_opts popts;
    fedc_partition_opts_init(&popts);
    if (fedc_data_load(spec, &train, &test, &err) != FEDC_OK) {
        cli_fail("server", "data.dataset = %s: %s", spec, fedc_err_message(&err));
        goto done;
    }
    if (fedc_partition_scheme_parse(fedc_config_str(cfg, "data.partition"), &popts.scheme) != 0) {
        cli_fail("server", "data.partition: unknown scheme");
        goto done;
    }
    popts.num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    popts.seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    popts.test_fraction = fedc_config_double(cfg, "data.test_fraction");
    popts.alpha = fedc_config_double(cfg, "data.alpha");
    popts.min_size = (size_t)fedc_config_int(cfg, "data.min_size");
    popts.shards_per_client = (uint32_t)fedc_config_int(cfg, "data.shards_per_client");
    popts.sigma = fedc_config_double(cfg, "data.sigma");
    if (fedc_partition_create(train, &popts, &part, &err) != FEDC_OK) {
        cli_fail("server", "partition: %s", fedc_err_message(&err));
        goto done;
    }
    if (fedc_trainer_nn_create(cfg, train, test, part, &trainer, &err) != FEDC_OK) {
        cli_fail("server", "%s", fedc_err_message(&err));
        goto done;
    }
    so.on_round = on_round;
    so.user = &ctx;
    if (fedc_server_create(cfg, trainer, &so, &server, &err) != FEDC_OK) {
        cli_fail("server", "%s", fedc_err_message(&err));
        goto done;
    }
    the_server = server;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    {
        char url[512];
        const char *colon = strrchr(so.listen, ':');
        snprintf(url, sizeof url, "%s://%.*s:%u", so.tls_cert ? "https" : "http",
                 (int)(colon - so.listen), so.listen, fedc_server_port(server));
        uint32_t resumed = fedc_server_resumed_round(server);
        if (ctx.json) {
            json_t *o = json_object();
            json_object_set_new(o, "listening", json_string(url));
            json_object_set_new(o, "port", json_integer(fedc_server_port(server)));
            json_object_set_new(o, "run_id", json_string(fedc_server_run_id(server)));
            json_object_set_new(o, "resumed_round", json_integer(resumed));
            cli_json_print(o);
        }
        if (!ctx.quiet) {
            fprintf(ctx.human, "fedc server %s\n  run       %s%s\n  listening %s\n", config_path,
                    fedc_server_run_id(server), resumed ? " (resumed)" : "", url);
            if (resumed) fprintf(ctx.human, "  resumed   after round %u\n", resumed);
            if (!so.tls_cert)
                fprintf(ctx.human, "  warning   no TLS: use --tls-cert/--tls-key beyond tests\n");
            fflush(ctx.human);
        }
    }
    if (fedc_server_run(server, &err) != FEDC_OK) {
        cli_fail("server", "%s", fedc_err_message(&err));
        goto done;
    }
    {
        const fedc_engine *e = fedc_server_engine(server);
        char sha[65];
        fedc_vec_sha256_hex(fedc_engine_num_params(e), fedc_engine_global(e), sha);
        if (ctx.json) {
            json_t *o = json_object();
            json_object_set_new(o, "final", json_true());
            json_object_set_new(o, "rounds", json_integer(fedc_engine_last_round(e)));
            json_object_set_new(o, "model_sha256", json_string(sha));
            json_object_set_new(o, "model", json_string("model.safetensors"));
            cli_json_print(o);
        }
        if (!ctx.quiet)
            fprintf(ctx.human, "%u rounds; model_sha256: %s\nmodel in %s/model.safetensors\n",
                    fedc_engine_last_round(e), sha, so.state_dir);
    }
    rc = CLI_EXIT_OK;
done:
    the_server = NULL;
    fedc_server_destroy(server);
    fedc_trainer_nn_destroy(trainer);
    fedc_partition_destroy(part);
    fedc_dataset_destroy(train);
    fedc_dataset_destroy(test);
    fedc_config_destroy(cfg);
    return rc;
}

#endif
