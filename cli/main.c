/*
 * fedc: the command. Dispatches to a subcommand (cli/commands.c); owns the exit codes and all
 * output (the library never prints).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void print_overview(FILE *out)
{
    fprintf(out,
            "fedc - federated learning in C\n"
            "\n"
            "usage: fedc [--version] [--help] <subcommand> [args]\n"
            "\n"
            "subcommands:\n");
    for (const cli_command *c = cli_commands; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "\n`fedc help <subcommand>` shows a subcommand's options; "
                 "`fedc help config` lists the config keys.\n");
}

int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        print_overview(stdout);
        return CLI_EXIT_OK;
    }
    if (argc > 2) return cli_usage_error("help", "too many arguments");
    if (strcmp(argv[1], "config") == 0) {
        printf("Configuration keys (INI file sections, or --set section.key=value):\n\n");
        fedc_config_print_help(stdout);
        return CLI_EXIT_OK;
    }
    const cli_command *c = cli_find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "fedc help: unknown subcommand '%s'\nTry 'fedc --help'.\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    fputs(c->usage, stdout);
    return CLI_EXIT_OK;
}

/* OpenBLAS chooses its kernels when it loads; on a CPU model it does not know it falls back to
 * generic SSE3 kernels, several times slower than the CPU allows. The choice can only be made
 * through the environment before the library loads, so re-run this program once with
 * OPENBLAS_CORETYPE set to the family the CPU supports. */
static void tune_blas(char **argv)
{
    if (getenv("FEDC_NO_RETUNE")) return;
    const char *core = fedc_nn_blas_suggest_coretype(); /* NULL: nothing better to pick */
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: go on with the kernels as loaded */
}

int cmd_version(int argc, char **argv)
{
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else
            return cli_usage_error("version", "unknown argument '%s'", argv[i]);
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "version", json_string(FEDC_VERSION));
        json_object_set_new(o, "build", json_string(fedc_version_string()));
        json_object_set_new(o, "blas_core", json_string(fedc_nn_blas_core()));
        json_object_set_new(o, "conv_kernels", json_string(fedc_nn_conv_kernels()));
        cli_json_print(o);
    } else {
        printf("%s\nOpenBLAS kernels: %s\nConvolutions: %s\n", fedc_version_string(),
               fedc_nn_blas_core(), fedc_nn_conv_kernels());
    }
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_overview(stderr);
        return CLI_EXIT_USAGE;
    }
    tune_blas(argv);
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        print_overview(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "--version") == 0 || strcmp(sub, "-V") == 0) {
        printf("%s\n", fedc_version_string());
        return CLI_EXIT_OK;
    }
    if (sub[0] == '-') {
        fprintf(stderr, "fedc: unknown option '%s'\nTry 'fedc --help'.\n", sub);
        return CLI_EXIT_USAGE;
    }
    const cli_command *c = cli_find_command(sub);
    if (!c) {
        fprintf(stderr, "fedc: unknown subcommand '%s'\nTry 'fedc --help'.\n", sub);
        return CLI_EXIT_USAGE;
    }
    /* `fedc X --help` prints X's usage, whatever X's own parser does. */
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(c->usage, stdout);
            return CLI_EXIT_OK;
        }
    }
    return c->fn(argc - 1, argv + 1);
}
