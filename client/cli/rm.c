/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image rm: remove image references, reporting each failure. */

#include <jansson.h>

#include "cli.h"

/*
 * An image pins hold: name the holders (the error's data.holders, each
 * {kind, name}) and the way out, rather than only the daemon's count.
 * Returns false when the error carries no holders to name.
 */
static bool report_in_use(const MsbClientError *e, const char *reference) {
        _cleanup_json_ json_t *data = NULL;
        json_t *holders, *h;
        size_t i;

        if (!e->data_json)
                return false;
        data = json_loads(e->data_json, 0, NULL);
        holders = json_object_get(data, "holders");
        if (json_array_size(holders) == 0)
                return false;
        fprintf(stderr, CLI_PROGRAM ": cannot remove %s: pinned by ", reference);
        json_array_foreach(holders, i, h)
                fprintf(stderr, "%s%s '%s'", i > 0 ? ", " : "",
                        json_string_value(json_object_get(h, "kind")) ?: "?",
                        json_string_value(json_object_get(h, "name")) ?: "?");
        fprintf(stderr, "; use '" CLI_PROGRAM " rm -f %s' to remove the reference anyway "
                        "(the pinned data stays until its pins are removed)\n", reference);
        return true;
}

static int remove_one(MsbClient *client, const char *reference, bool force) {
        const MsbClientError *e;
        int r;

        r = msb_client_image_remove(client, reference, force);
        if (r >= 0) {
                printf("Removed %s\n", reference);
                return CLI_EXIT_OK;
        }
        e = msb_client_last_error(client);
        if (r == -MSB_EREMOTE && e && e->name && streq(e->name, "image-in-use") && report_in_use(e, reference))
                return cli_exit_status(client, r);
        return cli_report(client, r, "cannot remove %s", reference);
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "force", no_argument, NULL, 'f' },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        bool force = false, not_found = false, failed = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "hf", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_rm, c, globals))
                        continue;
                if (c == 'f')
                        force = true;
        }
        if (optind >= argc)
                return cli_usage_error(&cli_command_rm, "missing image reference");

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        /* Each reference on its own: one that fails does not stop the
         * others. The exit status is 3 when every failure was a reference
         * not found, 1 when another failure happened, and 4 as soon as the
         * daemon is gone (the rest cannot be tried). */
        for (int i = optind; i < argc; i++) {
                r = remove_one(client, argv[i], force);
                if (r == CLI_EXIT_UNREACHABLE)
                        return r;
                if (r == CLI_EXIT_NOT_FOUND)
                        not_found = true;
                else if (r != CLI_EXIT_OK)
                        failed = true;
        }
        return failed ? CLI_EXIT_FAILURE : not_found ? CLI_EXIT_NOT_FOUND : CLI_EXIT_OK;
}

const CliCommand cli_command_rm = {
        .name = "rm",
        .alias = "rmi",
        .summary = "remove cached images",
        .usage = "Usage: " CLI_PROGRAM " rm [-f] REFERENCE...\n"
                 "\n"
                 "Remove image references from the cache. Removing the last reference of\n"
                 "an image deletes its data unless a sandbox or snapshot pins it; a pinned\n"
                 "image is refused, naming its pins. Every reference is tried; the exit\n"
                 "status is 3 if the only failures were references not found, 1 if\n"
                 "another failure happened.\n"
                 "\n"
                 "Options:\n"
                 "  -f, --force    remove the reference even while pins hold the image (the\n"
                 "                 pinned data stays until the pins go and a prune runs)\n"
                 "  --socket PATH  the daemon's socket\n"
                 "  -h, --help     show this help\n",
        .run = run,
};
