/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image prune: remove everything no sandbox or snapshot pins. */

#include "cli.h"

#define PRUNE_QUESTION "Remove all cached images not used by sandboxes or snapshots? [y/N] "
#define PRUNE_QUESTION_UNTIL \
        "Remove the cached images not used by sandboxes or snapshots, and not used since %s? [y/N] "

/* The longest answer read at the prompt; the rest of a longer line is
 * read and ignored, and such an answer counts as no. */
#define PRUNE_ANSWER_MAX 16

/* Asks on the terminal; true only for an explicit yes. until_ms is the
 * filter's time, or MSB_NULL_INT. */
static bool confirm(int64_t until_ms) {
        char answer[PRUNE_ANSWER_MAX], when[CLI_TIME_MAX];
        int ch;

        if (until_ms == MSB_NULL_INT)
                fputs(PRUNE_QUESTION, stderr);
        else {
                cli_format_time(until_ms, when, sizeof(when));
                fprintf(stderr, PRUNE_QUESTION_UNTIL, when);
        }
        fflush(stderr);
        if (!fgets(answer, sizeof(answer), stdin))
                return false;
        if (!strchr(answer, '\n')) {
                while ((ch = getchar()) != EOF && ch != '\n')
                        ;
                return false;
        }
        answer[strcspn(answer, "\n")] = '\0';
        return streq(answer, "y") || streq(answer, "Y") || streq(answer, "yes") || streq(answer, "YES") ||
               streq(answer, "Yes");
}

/*
 * The report counts what went; the references are named by comparing the
 * list before the prune with the list after it: what was there and is no
 * longer. (A reference another client removes meanwhile is named too; one
 * loaded meanwhile is not, since it was not there before.)
 */
static int print_removed(const MsbImageList *before, const MsbImageList *after) {
        /* Sorted, so that a cache of thousands of pinned images is not
         * compared pair by pair. */
        _cleanup_free_ const char **kept = calloc(after->n_images ?: 1, sizeof(char *));

        if (!kept)
                return -ENOMEM;
        for (size_t i = 0; i < after->n_images; i++)
                kept[i] = after->images[i].reference;
        qsort(kept, after->n_images, sizeof(char *), cli_compare_strings);
        for (size_t i = 0; i < before->n_images; i++) {
                const char *ref = before->images[i].reference;
                if (!bsearch(&ref, kept, after->n_images, sizeof(char *), cli_compare_strings))
                        printf("Removed %s\n", ref);
        }
        return 0;
}

static void print_report(const MsbPruneReport *p) {
        char size[CLI_SIZE_MAX];

        printf("%-20s %lld\n", "References removed:", (long long) p->image_refs_removed);
        printf("%-20s %lld\n", "Manifests removed:", (long long) p->manifests_removed);
        printf("%-20s %lld\n", "Layers removed:", (long long) p->layers_removed);
        printf("%-20s %lld\n", "Fsmeta removed:", (long long) p->fsmeta_removed);
        printf("%-20s %lld\n", "VMDK removed:", (long long) p->vmdk_removed);
        cli_format_size(p->bytes_reclaimed, size, sizeof(size));
        if (p->bytes_reclaimed == MSB_NULL_INT || p->bytes_reclaimed < 1024)
                printf("%-20s %s\n", "Space reclaimed:", size);
        else
                printf("%-20s %s (%lld bytes)\n", "Space reclaimed:", size, (long long) p->bytes_reclaimed);
}

/* --filter KEY=VALUE: until=TIME only, as docker image prune's filter of
 * that name (its label filters have nothing to match here). The images
 * used since that time stay. */
static int parse_filter(const char *arg, int64_t now_ms, int64_t *until_ms) {
        const char *value = strncmp(arg, "until=", strlen("until=")) == 0 ? arg + strlen("until=") : NULL;

        if (!value)
                return cli_usage_error(&cli_command_prune, "unknown filter '%s' (prune takes until=TIME)", arg);
        if (*until_ms != MSB_NULL_INT)
                return cli_usage_error(&cli_command_prune, "until= may be given once");
        if (cli_parse_until(value, now_ms, until_ms) < 0)
                return cli_usage_error(&cli_command_prune,
                                       "until=%s is neither a duration (24h, 30m, 10s), a Unix timestamp nor a date "
                                       "and time (2024-01-31T12:00:00Z)",
                                       value);
        return 0;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "yes", no_argument, NULL, 'y' },
                { "force", no_argument, NULL, 'f' },
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                { "filter", required_argument, NULL, CLI_OPT_FILTER },
                {},
        };
        int64_t now = cli_now_ms(), until = MSB_NULL_INT;
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_prune_report_freep) MsbPruneReport *report = NULL;
        _cleanup_(msb_image_list_freep) MsbImageList *before = NULL, *after = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        bool yes = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "hyf", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_prune, c, globals))
                        continue;
                if (c == 'y' || c == 'f')
                        yes = true;
                else if (c == CLI_OPT_FORMAT && cli_parse_format(&cli_command_prune, optarg, &format) != 0)
                        return CLI_EXIT_USAGE;
                else if (c == CLI_OPT_FILTER && parse_filter(optarg, now, &until) != 0)
                        return CLI_EXIT_USAGE;
        }
        if (optind < argc)
                return cli_usage_error(&cli_command_prune, "unexpected argument '%s'", argv[optind]);

        if (!yes) {
                /* Without a terminal there is nobody to ask: a script must
                 * say -y, so that a prune never happens by accident. */
                if (!isatty(STDIN_FILENO))
                        return cli_usage_error(&cli_command_prune,
                                               "prune needs confirmation: stdin is not a terminal, pass -y");
                if (!confirm(until)) {
                        fputs("Nothing removed.\n", stderr);
                        return CLI_EXIT_FAILURE;
                }
        }

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        /* JSON is the daemon's report as it is; only the table names the
         * references, so only it pays for the two lists. */
        if (format == CLI_FORMAT_TABLE && (r = msb_client_image_list(client, &before)) < 0)
                return cli_report(client, r, "cannot list the images before pruning");
        /* A time in the future leaves no image out: 0 ms unused. */
        r = msb_client_image_prune_unused(client, until == MSB_NULL_INT ? MSB_NULL_INT
                                                  : until >= now              ? 0
                                                                              : now - until,
                                          &report);
        if (r < 0)
                return cli_report(client, r, "cannot prune");
        if (format == CLI_FORMAT_JSON) {
                r = cli_print_json(report->json);
                if (r < 0)
                        return cli_report(client, r, "cannot print the report");
                return CLI_EXIT_OK;
        }
        r = msb_client_image_list(client, &after);
        if (r < 0)
                return cli_report(client, r, "pruned, but cannot list the images left");
        r = print_removed(before, after);
        if (r < 0)
                return cli_report(client, r, "cannot print the report");
        print_report(report);
        return CLI_EXIT_OK;
}

const CliCommand cli_command_prune = {
        .name = "prune",
        .summary = "remove every image no sandbox or snapshot uses",
        .usage = "Usage: " CLI_PROGRAM " prune [-y] [--filter until=TIME] [--format table|json]\n"
                 "\n"
                 "Remove every cached reference, manifest, layer, fsmeta and VMDK that no\n"
                 "sandbox or snapshot pins, and sweep leftovers. Asks first on a terminal;\n"
                 "without a terminal it refuses unless -y is given. Prints the references\n"
                 "removed, the counts of what went and the space reclaimed.\n"
                 "\n"
                 "With --filter until=TIME only the references not used (pulled, loaded or\n"
                 "pinned through) since TIME go: a duration before now (24h, 30m, 10s,\n"
                 "1h30m), a Unix timestamp, or a date and time (2024-01-31,\n"
                 "2024-01-31T12:00:00Z; local time without a zone).\n"
                 "\n"
                 "Options:\n"
                 "  -y, --yes        do not ask\n"
                 "  -f, --force      the same as -y\n"
                 "  --filter until=TIME  only images unused since TIME\n"
                 "  --format FORMAT  table (default) or json (the daemon's ImagePruneReport)\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
