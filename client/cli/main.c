/* SPDX-License-Identifier: Apache-2.0 */

/*
 * msb-image: the command table and the global options. Everything a command
 * does lives in its own file.
 */

#include "cli.h"

static const CliCommand *const commands[] = {
        &cli_command_ls,   &cli_command_inspect, &cli_command_exists, &cli_command_rm,
        &cli_command_prune, &cli_command_pull,   &cli_command_load,   &cli_command_pin,
        &cli_command_df,   &cli_command_info,    &cli_command_events,
};

static void help(void) {
        printf("Usage: " CLI_PROGRAM " [--socket PATH] COMMAND [ARGS...]\n"
               "\n"
               "Manage the local OCI image cache of microsandbox through msb-imaged.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                char name[64];
                if (commands[i]->alias)
                        snprintf(name, sizeof(name), "%s, %s", commands[i]->name, commands[i]->alias);
                else
                        snprintf(name, sizeof(name), "%s", commands[i]->name);
                printf("  %-14s %s\n", name, commands[i]->summary);
        }
        printf("\n"
               "Options:\n"
               "  --socket PATH  the daemon's socket (default: $MSB_IMAGED_SOCKET, else\n"
               "                 $XDG_RUNTIME_DIR/microsandbox/imaged.sock, else\n"
               "                 /tmp/microsandbox-$UID/imaged.sock)\n"
               "  -h, --help     show this help\n"
               "  --version      show the version\n"
               "\n"
               "Run '" CLI_PROGRAM " COMMAND --help' for the options of a command.\n"
               "Exit status: 0 success, 1 the daemon refused or another failure, 2 usage\n"
               "error, 3 not found, 4 the daemon is unreachable (see msb-image(1)).\n");
}

static const CliCommand *command_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i]->name, name) || (commands[i]->alias && streq(commands[i]->alias, name)))
                        return commands[i];
        return NULL;
}

enum {
        OPT_VERSION = 0x200,
};

/* Output that could not be written (a full disk, a closed pipe reader with
 * SIGPIPE ignored) is a failure, not a silent success. */
static int finish_output(int ret) {
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, CLI_PROGRAM ": cannot write the output: %s\n", strerror(errno));
                return ret == CLI_EXIT_OK ? CLI_EXIT_FAILURE : ret;
        }
        return ret;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                { "socket", required_argument, NULL, CLI_OPT_SOCKET },
                {},
        };
        CliGlobals globals = {};
        const CliCommand *cmd;
        int c;

        /* '+': stop at the command name, whose options are its own. */
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return finish_output(CLI_EXIT_OK);
                case OPT_VERSION:
                        printf(CLI_PROGRAM " %s\n", msb_version());
                        return finish_output(CLI_EXIT_OK);
                case CLI_OPT_SOCKET:
                        globals.socket_path = optarg;
                        break;
                default:
                        fputs("Try '" CLI_PROGRAM " --help'.\n", stderr);
                        return CLI_EXIT_USAGE;
                }

        if (optind >= argc)
                return cli_usage_error(NULL, "missing command");
        cmd = command_find(argv[optind]);
        if (!cmd)
                return cli_usage_error(NULL, "unknown command '%s'", argv[optind]);

        /* The command parses its own argv, its name being argv[0]. */
        argc -= optind;
        argv += optind;
        optind = 0;
        return finish_output(cmd->run(argc, argv, &globals));
}
