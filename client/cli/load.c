/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image load: import images from an OCI layout or archive. */

#include <limits.h>

#include "cli.h"

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "tag", required_argument, NULL, CLI_OPT_TAG },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_list_freep) MsbImageList *list = NULL;
        _cleanup_free_ char *path = NULL;
        const char *tag = NULL;
        int c, r;

        while ((c = getopt_long(argc, argv, "ht:", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_load, c, globals))
                        continue;
                if (c == CLI_OPT_TAG || c == 't')
                        tag = optarg;
        }
        if (optind >= argc)
                return cli_usage_error(&cli_command_load, "missing path");
        if (optind + 1 < argc)
                return cli_usage_error(&cli_command_load, "unexpected argument '%s'", argv[optind + 1]);

        /* The daemon reads the path itself and does not share our working
         * directory, so it gets an absolute one. */
        path = realpath(argv[optind], NULL);
        if (!path) {
                r = errno;
                fprintf(stderr, CLI_PROGRAM ": cannot load %s: %s\n", argv[optind], strerror(r));
                return r == ENOENT ? CLI_EXIT_NOT_FOUND : CLI_EXIT_FAILURE;
        }

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        r = msb_client_image_load(client, path, tag, &list);
        if (r < 0)
                return cli_report(client, r, "cannot load %s", argv[optind]);
        for (size_t i = 0; i < list->n_images; i++)
                printf("Loaded %s (%s)\n", list->images[i].reference,
                       list->images[i].manifest_digest ?: "no digest");
        return CLI_EXIT_OK;
}

const CliCommand cli_command_load = {
        .name = "load",
        .summary = "import images from an OCI layout or archive",
        .usage = "Usage: " CLI_PROGRAM " load [--tag REFERENCE] PATH\n"
                 "\n"
                 "Import the images of an OCI image layout directory, an OCI archive or a\n"
                 "docker-save archive. Every blob is verified against its digest. The\n"
                 "daemon reads PATH, so it must be readable by the daemon's user.\n"
                 "\n"
                 "Options:\n"
                 "  -t, --tag REFERENCE  the reference to record (required when the source\n"
                 "                       names none)\n"
                 "  --socket PATH        the daemon's socket\n"
                 "  -h, --help           show this help\n",
        .run = run,
};
