/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image ls: the cached images, newest first. */

#include "cli.h"

static int print_table(const MsbImageList *list) {
        static const char *const header[] = { "REFERENCE", "DIGEST", "SIZE", "CREATED", "LAST USED" };
        _cleanup_(cli_table_freep) CliTable *t = NULL;
        int64_t now = cli_now_ms();
        int r;

        r = cli_table_new(ELEMENTSOF(header), header, &t);
        if (r < 0)
                return r;
        for (size_t i = 0; i < list->n_images; i++) {
                const MsbImage *im = &list->images[i];
                char digest[CLI_SHORT_DIGEST_MAX], size[CLI_SIZE_MAX], created[CLI_TIME_MAX], used[CLI_TIME_MAX];

                cli_format_size(im->size_bytes, size, sizeof(size));
                cli_format_ago(im->created_at, now, created, sizeof(created));
                cli_format_ago(im->last_used_at, now, used, sizeof(used));
                const char *row[] = { im->reference, cli_short_digest(im->manifest_digest, digest, sizeof(digest)),
                                      size, created, used };
                r = cli_table_add(t, row);
                if (r < 0)
                        return r;
        }
        cli_table_print(t, stdout);
        return 0;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                { "quiet", no_argument, NULL, 'q' },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_list_freep) MsbImageList *list = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        bool quiet = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "hq", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_ls, c, globals))
                        continue;
                if (c == 'q')
                        quiet = true;
                else if (c == CLI_OPT_FORMAT && cli_parse_format(&cli_command_ls, optarg, &format) != 0)
                        return CLI_EXIT_USAGE;
        }
        if (optind < argc)
                return cli_usage_error(&cli_command_ls, "unexpected argument '%s'", argv[optind]);
        if (quiet && format == CLI_FORMAT_JSON)
                return cli_usage_error(&cli_command_ls, "-q and --format json exclude each other");

        if (cli_connect(globals, &client) < 0)
                return CLI_EXIT_FAILURE;
        r = msb_client_image_list(client, &list);
        if (r < 0)
                return cli_report(client, r, "cannot list images");

        if (format == CLI_FORMAT_JSON)
                r = cli_print_json(list->json);
        else if (quiet)
                for (size_t i = 0; i < list->n_images; i++)
                        puts(list->images[i].reference);
        else if (list->n_images == 0)
                puts("No images found.");
        else
                r = print_table(list);
        if (r < 0)
                return cli_report(client, r, "cannot print the images");
        return CLI_EXIT_OK;
}

const CliCommand cli_command_ls = {
        .name = "ls",
        .alias = "images",
        .summary = "list cached images",
        .usage = "Usage: " CLI_PROGRAM " ls [-q] [--format table|json]\n"
                 "\n"
                 "List the cached images, newest first: reference, manifest digest\n"
                 "(12 hex digits), size (sum of compressed layers, 1024-based), when the\n"
                 "reference was first stored and when it was last used.\n"
                 "\n"
                 "Options:\n"
                 "  -q, --quiet      print the references only, one a line\n"
                 "  --format FORMAT  table (default) or json (the daemon's ImageHandle list)\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
