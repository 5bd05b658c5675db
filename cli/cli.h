/*
 * The fedc command: shared pieces of the subcommands. The command is built on the public API
 * (include/fedc) only, like curl's tool on libcurl.
 *
 * Conventions of every subcommand:
 * - int cmd_NAME(int argc, char **argv): argv[0] is the subcommand's name; returns the exit
 *   code: 0 success, 1 failure at run time (message on stderr), 2 usage error.
 * - Options parsed with getopt_long, GNU style: options may come before or after operands
 *   (`fedc sim CONFIG --json`); set optind = 1 first. An unknown option or a missing operand
 *   prints "fedc NAME: ..." plus a hint to `fedc help NAME` and returns 2.
 * - --json: machine-readable lines on stdout (one JSON object per line, via cli_json_print),
 *   human text on stderr. Without --json, human text on stdout.
 */
#ifndef FEDC_CLI_H
#define FEDC_CLI_H

#include <stdio.h>

#include <jansson.h>

#include "fedc/fedc.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

typedef int (*cli_fn)(int argc, char **argv);

typedef struct cli_command {
    const char *name;
    cli_fn fn;
    const char *summary; /* one line, for `fedc --help` */
    const char *usage;   /* full help text, for `fedc help NAME` */
} cli_command;

/* The table of subcommands (cli/commands.c), ended by a {NULL} entry. */
extern const cli_command cli_commands[];
const cli_command *cli_find_command(const char *name);

/* Prints "fedc NAME: <message>\nTry 'fedc help NAME'.\n" on stderr and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "fedc NAME: <message>" on stderr and returns CLI_EXIT_FAIL. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes obj as one compact JSON line on stdout and flushes. Takes ownership of obj (decref). */
void cli_json_print(json_t *obj);

/* Where human text goes: stderr with --json, else stdout. */
FILE *cli_human(int json_mode);

/* Parses "1,28,28" or "784" into dims. Returns the count, or -1 on a malformed shape. */
int cli_parse_shape(const char *text, long long *dims, int max_dims);
/* A whole decimal number (no sign) / a finite number: 0, or -1 when text is not one. */
int cli_parse_u64(const char *text, uint64_t *out);
int cli_parse_double(const char *text, double *out);

/* Loads a config: file (may be NULL) then each --set assignment. On error prints the config's
 * message as "fedc CMD: ..." and returns NULL. */
fedc_config *cli_load_config(const char *cmd, const char *path, char **sets, int nsets);

/*
 * Progress display: on a terminal, one line redrawn in place (bar, count, rate, ETA, and a
 * caller's status text); otherwise one plain line per update at most every `plain_every`
 * updates (and at the end). Not thread-safe: drive it from one thread.
 */
typedef struct cli_progress {
    FILE *out;
    const char *label;
    long total;
    long done;
    int tty;
    int plain_every;
    double t_start;
    double t_last_draw;
    int width;
} cli_progress;

void cli_progress_start(cli_progress *p, FILE *out, const char *label, long total);
/* Sets done = `done` and redraws; `status` is a short text such as "acc 0.853" (may be NULL). */
void cli_progress_update(cli_progress *p, long done, const char *status);
/* Finishes the line (newline on a terminal). */
void cli_progress_finish(cli_progress *p, const char *status);

/* Monotonic seconds. */
double cli_now(void);
/* "1m23s", "4.2s", "350ms" into buf. */
const char *cli_format_duration(double seconds, char *buf, size_t size);
/* "1.5 MB", "320 kB" into buf (SI units). */
const char *cli_format_bytes(double bytes, char *buf, size_t size);

/* Subcommands: each in its own cli/cmd_NAME.c. */
int cmd_help(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_sim(int argc, char **argv);
/* `fedc bench sim` (cli/bench_sim.c), a case of `fedc bench`. */
int bench_sim(int argc, char **argv);
/* `fedc bench secagg` (cli/bench_secagg.c), a case of `fedc bench`. */
int bench_secagg(int argc, char **argv);
/* `fedc bench server` (cli/bench_server.c), a case of `fedc bench`. */
int bench_server(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_dp_budget(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_server(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_plot(int argc, char **argv);

#endif
