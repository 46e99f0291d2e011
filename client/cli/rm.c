/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image rm: remove image references, reporting each failure. */

#include "cli.h"

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "force", no_argument, NULL, 'f' },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        bool force = false, failed = false;
        int c;

        while ((c = getopt_long(argc, argv, "hf", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_rm, c, globals))
                        continue;
                if (c == 'f')
                        force = true;
        }
        if (optind >= argc)
                return cli_usage_error(&cli_command_rm, "missing image reference");

        if (cli_connect(globals, &client) < 0)
                return CLI_EXIT_FAILURE;
        /* Each reference on its own: one that fails does not stop the
         * others, and the exit status says whether any failed. */
        for (int i = optind; i < argc; i++) {
                int r = msb_client_image_remove(client, argv[i], force);
                if (r < 0) {
                        cli_report(client, r, "cannot remove %s", argv[i]);
                        failed = true;
                } else
                        printf("Removed %s\n", argv[i]);
        }
        return failed ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
}

const CliCommand cli_command_rm = {
        .name = "rm",
        .alias = "rmi",
        .summary = "remove cached images",
        .usage = "Usage: " CLI_PROGRAM " rm [-f] REFERENCE...\n"
                 "\n"
                 "Remove image references from the cache. Removing the last reference of\n"
                 "an image deletes its data unless a sandbox or snapshot pins it. Every\n"
                 "reference is tried; the exit status is 1 if any failed.\n"
                 "\n"
                 "Options:\n"
                 "  -f, --force    remove the reference even while pins hold the image (the\n"
                 "                 pinned data stays until the pins go and a prune runs)\n"
                 "  --socket PATH  the daemon's socket\n"
                 "  -h, --help     show this help\n",
        .run = run,
};
