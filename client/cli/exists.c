/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image exists: whether the cache holds an image, as an exit status. */

#include "cli.h"

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_freep) MsbImage *image = NULL;
        const MsbClientError *e;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                (void) CLI_COMMON_OPTION(&cli_command_exists, c, globals);
        if (optind >= argc)
                return cli_usage_error(&cli_command_exists, "missing image reference");
        if (optind + 1 < argc)
                return cli_usage_error(&cli_command_exists, "unexpected argument '%s'", argv[optind + 1]);

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        r = msb_client_image_get(client, argv[optind], &image);
        if (r >= 0)
                return CLI_EXIT_OK;
        /* "Not cached" is the answer, not a failure: nothing is printed,
         * as with test -e. */
        e = msb_client_last_error(client);
        if (r == -MSB_EREMOTE && e && e->name && streq(e->name, "image-not-found"))
                return CLI_EXIT_FAILURE;
        r = cli_report(client, r, "cannot tell whether %s is cached", argv[optind]);
        return r == CLI_EXIT_UNREACHABLE ? r : CLI_EXIT_EXISTS_ERROR;
}

const CliCommand cli_command_exists = {
        .name = "exists",
        .summary = "tell by the exit status whether an image is cached",
        .usage = "Usage: " CLI_PROGRAM " exists REFERENCE\n"
                 "\n"
                 "Exit with status 0 when the cache holds REFERENCE (any spelling, or a\n"
                 "manifest digest), 1 when it does not, printing nothing either way. Any\n"
                 "other failure is reported: 2 bad usage, 4 no daemon to ask, 5 the daemon\n"
                 "reported another error (an invalid reference, for example).\n"
                 "\n"
                 "Options:\n"
                 "  --socket PATH  the daemon's socket\n"
                 "  -h, --help     show this help\n",
        .run = run,
};
