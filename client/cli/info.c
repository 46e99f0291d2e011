/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image info: which daemon answers, and where its store is. */

#include "cli.h"

static void print_info(const MsbSystemInfo *info) {
        char started[CLI_TIME_MAX];

        cli_format_time(info->started_at, started, sizeof(started));
        printf("%-15s %s\n", "Client version:", msb_version());
        printf("%-15s %s\n", "Daemon version:", info->version);
        printf("%-15s %lld\n", "Daemon pid:", (long long) info->pid);
        printf("%-15s %s\n", "Store:", info->store_path);
        printf("%-15s %s\n", "Socket:", info->socket_path);
        printf("%-15s %s\n", "Started:", started);
        printf("%-15s %lld s\n", "Uptime:", (long long) (info->uptime_ms / 1000));
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_system_info_freep) MsbSystemInfo *info = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        int r;

        if (!cli_format_command_connect(&cli_command_info, argc, argv, globals, &format, &client, &r))
                return r;
        r = msb_client_system_info(client, &info);
        if (r < 0)
                return cli_report(client, r, "cannot get the daemon's info");
        if (format == CLI_FORMAT_JSON) {
                if (cli_print_json(info->json) < 0)
                        return cli_report(client, -EPROTO, "cannot print the daemon's info");
        } else
                print_info(info);
        return CLI_EXIT_OK;
}

const CliCommand cli_command_info = {
        .name = "info",
        .summary = "show the daemon's version, store, socket and uptime",
        .usage = "Usage: " CLI_PROGRAM " info [--format table|json]\n"
                 "\n"
                 "Show the versions of this client and of the daemon, the daemon's pid,\n"
                 "store directory, socket and uptime.\n"
                 "\n"
                 "Options:\n"
                 "  --format FORMAT  table (default) or json (the daemon's SystemInfo)\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
