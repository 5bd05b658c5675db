/*
 * fedc client: takes part in a real federation (docs/DEPLOY.md) with the built-in trainer.
 *
 *   fedc client --server URL --key F [--ca F | --insecure] [--config CONFIG] [--data SPEC]
 *
 * The client asks the server for its run (its client id and the training settings), loads the
 * data CONFIG names, derives its own shard from its id (the partition of data.partition over
 * clients.count, seeded by run.seed, as `fedc sim` splits it), and trains each task it is
 * given until the server says the run is done. Network failures are retried with back-off.
 */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fedc/client.h"

static fedc_client *volatile the_client;

static void on_signal(int sig)
{
    (void)sig;
    fedc_client *c = the_client;
    if (c) fedc_client_stop(c);
}

typedef struct client_ctx {
    int json, quiet;
    FILE *human;
} client_ctx;

static void on_event(void *user, const fedc_client_event *ev)
{
    client_ctx *c = user;
    static const char *const names[] = {"connected", "task",  "trained", "accepted",
                                        "refused",   "retry", "done"};
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "event", json_string(names[ev->kind]));
        if (ev->kind != FEDC_CLIENT_CONNECTED && ev->kind != FEDC_CLIENT_RETRY)
            json_object_set_new(o, "round", json_integer(ev->round));
        if (ev->kind == FEDC_CLIENT_TRAINED) {
            json_object_set_new(o, "seconds", json_real(ev->seconds));
            json_object_set_new(o, "loss", json_real(ev->loss));
        }
        if (ev->kind == FEDC_CLIENT_RETRY)
            json_object_set_new(o, "in_seconds", json_real(ev->seconds));
        if (ev->http_status) json_object_set_new(o, "http_status", json_integer(ev->http_status));
        if (ev->message) json_object_set_new(o, "message", json_string(ev->message));
        if (ev->model_sha256) json_object_set_new(o, "model_sha256", json_string(ev->model_sha256));
        cli_json_print(o);
    }
    if (c->quiet) return;
    switch (ev->kind) {
    case FEDC_CLIENT_TRAINED:
        fprintf(c->human, "round %4u  trained in %.2fs, loss %.4f\n", ev->round, ev->seconds,
                ev->loss);
        break;
    case FEDC_CLIENT_REFUSED:
        fprintf(c->human, "round %4u  result refused: %s\n", ev->round,
                ev->message ? ev->message : "");
        break;
    case FEDC_CLIENT_RETRY:
        fprintf(c->human, "  %s; retrying in %.1fs\n", ev->message ? ev->message : "failed",
                ev->seconds);
        break;
    case FEDC_CLIENT_CONNECTED: fprintf(c->human, "  the server answers again\n"); break;
    default: break;
    }
    fflush(c->human);
}

static void set_logging(const fedc_config *cfg)
{
    fedc_log_level lvl;
    if (fedc_log_level_parse(fedc_config_str(cfg, "run.log_level"), &lvl) != 0) lvl = FEDC_LOG_WARN;
    fedc_log_set(fedc_log_stderr, NULL, lvl);
}

int cmd_client(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 'u'},
        {"key", required_argument, NULL, 'k'},
        {"ca", required_argument, NULL, 'C'},
        {"insecure", no_argument, NULL, 'I'},
        {"config", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"set", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"tasks", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    char *data_set = NULL;
    int nsets = 0, c;
    const char *url = NULL, *key_file = NULL, *ca = NULL, *config_path = NULL;
    int insecure = 0;
    unsigned long max_tasks = 0;
    client_ctx ctx = {0, 0, stdout};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "u:k:C:Ic:d:s:jqt:", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url = optarg; break;
        case 'k': key_file = optarg; break;
        case 'C': ca = optarg; break;
        case 'I': insecure = 1; break;
        case 'c': config_path = optarg; break;
        case 'd':
            free(data_set);
            data_set = malloc(strlen(optarg) + 16);
            if (data_set) sprintf(data_set, "data.dataset=%s", optarg);
            break;
        case 's': sets[nsets++] = optarg; break;
        case 'j': ctx.json = 1; break;
        case 'q': ctx.quiet = 1; break;
        case 't': {
            char *end;
            max_tasks = strtoul(optarg, &end, 10);
            if (*end || max_tasks < 1 || max_tasks > 100000000) {
                free(sets);
                free(data_set);
                return cli_usage_error("client", "--tasks wants a count >= 1, got '%s'", optarg);
            }
            break;
        }
        default:
            free(sets);
            free(data_set);
            return cli_usage_error("client", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc) {
        free(sets);
        free(data_set);
        return cli_usage_error("client", "unexpected argument '%s'", argv[optind]);
    }
    if (!url || !key_file) {
        free(sets);
        free(data_set);
        return cli_usage_error("client", "--server URL and --key FILE are required");
    }
    if (data_set) sets[nsets++] = data_set;
    fedc_config *cfg = cli_load_config("client", config_path, sets, nsets);
    free(sets);
    free(data_set);
    if (!cfg) return CLI_EXIT_FAIL;
    set_logging(cfg);
    ctx.human = cli_human(ctx.json);
    signal(SIGPIPE, SIG_IGN);

    int rc = CLI_EXIT_FAIL;
    fedc_err err;
    fedc_err_clear(&err);
    fedc_key *key = NULL;
    fedc_client *client = NULL;
    fedc_dataset *train = NULL, *test = NULL;
    fedc_partition *part = NULL;
    fedc_trainer *trainer = NULL;
    if (fedc_key_read(key_file, &key, &err) != FEDC_OK) {
        cli_fail("client", "%s", fedc_err_message(&err));
        goto done;
    }
    if (insecure)
        fprintf(stderr, "fedc client: warning: --insecure: the server's certificate is "
                        "not verified (loopback tests only)\n");
    fedc_client_opts co = {url, key, ca, insecure, cfg, on_event, &ctx, (uint32_t)max_tasks};
    if (fedc_client_create(&co, &client, &err) != FEDC_OK) {
        cli_fail("client", "%s", fedc_err_message(&err));
        goto done;
    }
    the_client = client;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fedc_client_run_info info;
    if (fedc_client_hello(client, &info, &err) != FEDC_OK ||
        fedc_client_apply_settings(client, cfg, &err) != FEDC_OK) {
        cli_fail("client", "%s", fedc_err_message(&err));
        goto done;
    }
    const char *spec = fedc_config_str(cfg, "data.dataset");
    if (fedc_data_load(spec, &train, &test, &err) != FEDC_OK) {
        cli_fail("client", "data.dataset = %s: %s", spec, fedc_err_message(&err));
        goto done;
    }
    fedc_partition_opts popts;
    fedc_partition_opts_init(&popts);
    if (fedc_partition_scheme_parse(fedc_config_str(cfg, "data.partition"), &popts.scheme) != 0) {
        cli_fail("client", "data.partition: unknown scheme");
        goto done;
    }
    popts.num_clients = (uint32_t)fedc_config_int(cfg, "clients.count");
    popts.seed = (uint64_t)fedc_config_int(cfg, "run.seed");
    popts.test_fraction = fedc_config_double(cfg, "data.test_fraction");
    popts.alpha = fedc_config_double(cfg, "data.alpha");
    popts.min_size = (size_t)fedc_config_int(cfg, "data.min_size");
    popts.shards_per_client = (uint32_t)fedc_config_int(cfg, "data.shards_per_client");
    popts.sigma = fedc_config_double(cfg, "data.sigma");
    if (info.client_id >= popts.num_clients) {
        cli_fail("client",
                 "this key is client %u, but the run has clients.count = %u: its data "
                 "shard does not exist",
                 info.client_id, popts.num_clients);
        goto done;
    }
    if (fedc_partition_create(train, &popts, &part, &err) != FEDC_OK) {
        cli_fail("client", "partition: %s", fedc_err_message(&err));
        goto done;
    }
    if (fedc_trainer_nn_create(cfg, train, NULL, part, &trainer, &err) != FEDC_OK) {
        cli_fail("client", "%s", fedc_err_message(&err));
        goto done;
    }
    if (!ctx.quiet) {
        fprintf(ctx.human,
                "fedc client: run %s at %s\n  client    %u (%zu training samples)\n"
                "  model     %s: %zu parameters; %u rounds, %s\n",
                info.run_id, url, info.client_id,
                fedc_partition_size(part, info.client_id, FEDC_SPLIT_TRAIN),
                fedc_config_str(cfg, "model.spec"),
                fedc_model_param_count(fedc_trainer_nn_model(trainer)), info.rounds, info.strategy);
        fflush(ctx.human);
    }
    if (ctx.json) {
        json_t *o = json_object();
        json_object_set_new(o, "event", json_string("hello"));
        json_object_set_new(o, "run_id", json_string(info.run_id));
        json_object_set_new(o, "client_id", json_integer(info.client_id));
        cli_json_print(o);
    }
    fedc_client_summary sum;
    if (fedc_client_run(client, trainer, cfg, &sum, &err) != FEDC_OK) {
        cli_fail("client", "%s", fedc_err_message(&err));
        goto done;
    }
    if (ctx.json) {
        json_t *o = json_object();
        json_object_set_new(o, "final", json_true());
        json_object_set_new(o, "client_id", json_integer(info.client_id));
        json_object_set_new(o, "tasks", json_integer(sum.tasks));
        json_object_set_new(o, "accepted", json_integer(sum.accepted));
        json_object_set_new(o, "rounds", json_integer(sum.rounds));
        json_object_set_new(o, "model_sha256", json_string(sum.model_sha256));
        cli_json_print(o);
    }
    if (!ctx.quiet && sum.rounds)
        fprintf(ctx.human,
                "run over after %u rounds: %u task(s) trained, %u accepted\n"
                "model_sha256: %s\n",
                sum.rounds, sum.tasks, sum.accepted, sum.model_sha256);
    else if (!ctx.quiet)
        fprintf(ctx.human, "%u task(s) trained, %u accepted (--tasks %lu)\n", sum.tasks,
                sum.accepted, max_tasks);
    rc = CLI_EXIT_OK;
done:
    the_client = NULL;
    fedc_client_destroy(client);
    fedc_key_destroy(key);
    fedc_trainer_nn_destroy(trainer);
    fedc_partition_destroy(part);
    fedc_dataset_destroy(train);
    fedc_dataset_destroy(test);
    fedc_config_destroy(cfg);
    return rc;
}
