/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image pin add|rm|ls: the pins that keep images from being pruned. */

#include "cli.h"

static const CliCommand *const self = &cli_command_pin;

static bool kind_valid(const char *kind) {
        return streq(kind, "sandbox") || streq(kind, "snapshot");
}

static int pin_add(MsbClient *client, char *argv[], CliFormat format) {
        _cleanup_(msb_rootfs_freep) MsbRootfs *rootfs = NULL;
        int r;

        r = msb_client_pin_add(client, argv[0], argv[1], argv[2], &rootfs);
        if (r < 0)
                return cli_report(client, r, "cannot pin %s as %s %s", argv[2], argv[0], argv[1]);
        if (format == CLI_FORMAT_JSON) {
                if (cli_print_json(rootfs->json) < 0)
                        return cli_report(client, -EPROTO, "cannot print the rootfs");
                return CLI_EXIT_OK;
        }
        printf("%-9s %s\n", "Manifest:", rootfs->manifest_digest);
        printf("%-9s %s\n", "Fsmeta:", rootfs->fsmeta_path ?: "-");
        printf("%-9s %s\n", "VMDK:", rootfs->vmdk_path ?: "-");
        for (size_t i = 0; i < rootfs->n_layers; i++)
                printf("%-9s %s\n", i == 0 ? "Layers:" : "", rootfs->layers[i].path);
        return CLI_EXIT_OK;
}

static int pin_rm(MsbClient *client, char *argv[]) {
        int r = msb_client_pin_remove(client, argv[0], argv[1]);
        if (r < 0)
                return cli_report(client, r, "cannot remove pin %s %s", argv[0], argv[1]);
        printf("Removed pin %s %s\n", argv[0], argv[1]);
        return CLI_EXIT_OK;
}

static int pin_ls(MsbClient *client, CliFormat format) {
        static const char *const header[] = { "KIND", "NAME", "REFERENCE", "DIGEST", "CREATED" };
        _cleanup_(msb_pin_list_freep) MsbPinList *list = NULL;
        _cleanup_(cli_table_freep) CliTable *t = NULL;
        int64_t now = cli_now_ms();
        int r;

        r = msb_client_pin_list(client, &list);
        if (r < 0)
                return cli_report(client, r, "cannot list pins");
        if (format == CLI_FORMAT_JSON) {
                if (cli_print_json(list->json) < 0)
                        return cli_report(client, -EPROTO, "cannot print the pins");
                return CLI_EXIT_OK;
        }
        if (list->n_pins == 0) {
                puts("No pins found.");
                return CLI_EXIT_OK;
        }
        r = cli_table_new(ELEMENTSOF(header), header, &t);
        for (size_t i = 0; r >= 0 && i < list->n_pins; i++) {
                const MsbPin *p = &list->pins[i];
                char digest[CLI_SHORT_DIGEST_MAX], created[CLI_TIME_MAX];

                cli_format_ago(p->created_at, now, created, sizeof(created));
                const char *row[] = { p->kind, p->name, p->reference,
                                      cli_short_digest(p->manifest_digest, digest, sizeof(digest)), created };
                r = cli_table_add(t, row);
        }
        if (r < 0)
                return cli_report(client, r, "cannot print the pins");
        cli_table_print(t, stdout);
        return CLI_EXIT_OK;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                {},
        };
        static const struct {
                const char *name;
                int n_args;
                const char *synopsis;
        } verbs[] = {
                { "add", 3, "add KIND NAME REFERENCE" },
                { "rm", 2, "rm KIND NAME" },
                { "ls", 0, "ls" },
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        size_t v;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(self, c, globals))
                        continue;
                if (c == CLI_OPT_FORMAT && cli_parse_format(self, optarg, &format) != 0)
                        return CLI_EXIT_USAGE;
        }
        if (optind >= argc)
                return cli_usage_error(self, "missing subcommand (add, rm or ls)");
        for (v = 0; v < ELEMENTSOF(verbs); v++)
                if (streq(argv[optind], verbs[v].name) || (v == 1 && streq(argv[optind], "remove")) ||
                    (v == 2 && streq(argv[optind], "list")))
                        break;
        if (v == ELEMENTSOF(verbs))
                return cli_usage_error(self, "unknown subcommand '%s' (use add, rm or ls)", argv[optind]);
        if (argc - optind - 1 != verbs[v].n_args)
                return cli_usage_error(self, "usage: " CLI_PROGRAM " pin %s", verbs[v].synopsis);
        argv += optind + 1;
        if (verbs[v].n_args > 0 && !kind_valid(argv[0]))
                return cli_usage_error(self, "unknown pin kind '%s' (use sandbox or snapshot)", argv[0]);
        if (v == 1 && format == CLI_FORMAT_JSON)
                return cli_usage_error(self, "pin rm has no output to format");

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        switch (v) {
        case 0:
                return pin_add(client, argv, format);
        case 1:
                return pin_rm(client, argv);
        default:
                return pin_ls(client, format);
        }
}

const CliCommand cli_command_pin = {
        .name = "pin",
        .summary = "add, remove or list the pins of sandboxes and snapshots",
        .usage = "Usage: " CLI_PROGRAM " pin add [--format table|json] KIND NAME REFERENCE\n"
                 "       " CLI_PROGRAM " pin rm KIND NAME\n"
                 "       " CLI_PROGRAM " pin ls [--format table|json]\n"
                 "\n"
                 "A pin records that a sandbox or an indexed snapshot (KIND is sandbox or\n"
                 "snapshot) named NAME uses an image: pinned images are never pruned, and\n"
                 "removing them needs --force. 'pin add' replaces an earlier pin of the\n"
                 "same name and prints what the sandbox boots from (fsmeta, VMDK, layers).\n"
                 "\n"
                 "Options:\n"
                 "  --format FORMAT  table (default) or json (the daemon's Rootfs or Pin list)\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
