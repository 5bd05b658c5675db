/* The table of fedc's subcommands. Add a subcommand here and in cli.h. */
#include <string.h>

#include "cli.h"

const cli_command cli_commands[] = {
    {"help", cmd_help, "show help for fedc, a subcommand or the config keys",
     "usage: fedc help [SUBCOMMAND | config]\n"
     "\n"
     "Without an argument, lists the subcommands. With a subcommand's name, prints its usage.\n"
     "`fedc help config` prints every configuration key: section, type, default, bounds, help.\n"},
    {"version", cmd_version, "print the version and build features",
     "usage: fedc version [--json]\n"},
    {NULL, NULL, NULL, NULL},
};

const cli_command *cli_find_command(const char *name)
{
    for (const cli_command *c = cli_commands; c->name; c++)
        if (strcmp(c->name, name) == 0) return c;
    return NULL;
}
