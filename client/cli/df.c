/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image df: the cache's disk usage by kind. */

#include "cli.h"

/* The disk budget, and how far the store is from it. */
static void print_budget(const MsbSystemDf *df) {
        char max[CLI_SIZE_MAX], low[CLI_SIZE_MAX], remaining[CLI_SIZE_MAX];
        int64_t left = df->budget_remaining_bytes;

        if (df->budget_max_bytes == MSB_NULL_INT) {
                printf("Budget: none\n");
                return;
        }
        cli_format_size(df->budget_max_bytes, max, sizeof(max));
        cli_format_size(df->budget_low_bytes, low, sizeof(low));
        cli_format_size(left < 0 ? -left : left, remaining, sizeof(remaining));
        printf("Budget: %s (evicting down to %s), %s %s\n", max, low, remaining,
               left < 0 ? "over it: what is left is pinned or in use" : "left");
}

static int print_table(const MsbSystemDf *df) {
        static const char *const header[] = { "TYPE", "COUNT", "SIZE" };
        const struct {
                const char *name;
                const MsbDiskUsage *usage;
        } kinds[] = {
                { "Manifests", &df->manifests }, { "Configs", &df->configs }, { "Layers", &df->layers },
                { "Fsmeta", &df->fsmeta },       { "VMDK", &df->vmdk },
        };
        _cleanup_(cli_table_freep) CliTable *t = NULL;
        char count[24], size[CLI_SIZE_MAX];
        int r;

        r = cli_table_new(ELEMENTSOF(header), header, &t);
        if (r < 0)
                return r;
        snprintf(count, sizeof(count), "%lld", (long long) df->image_refs);
        r = cli_table_add(t, (const char *const[]) { "References", count, "" });
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(kinds); i++) {
                snprintf(count, sizeof(count), "%lld", (long long) kinds[i].usage->count);
                cli_format_size(kinds[i].usage->bytes, size, sizeof(size));
                r = cli_table_add(t, (const char *const[]) { kinds[i].name, count, size });
        }
        if (r >= 0) {
                cli_format_size(df->index_bytes, size, sizeof(size));
                r = cli_table_add(t, (const char *const[]) { "Index", "", size });
        }
        if (r < 0)
                return r;
        cli_table_print(t, stdout);
        cli_format_size(df->total_bytes, size, sizeof(size));
        printf("\nTotal: %s", size);
        cli_format_size(df->reclaimable_bytes, size, sizeof(size));
        printf(", reclaimable by prune: %s\n", size);
        print_budget(df);
        return 0;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_system_df_freep) MsbSystemDf *df = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        int r;

        if (!cli_format_command_connect(&cli_command_df, argc, argv, globals, &format, &client, &r))
                return r;
        r = msb_client_system_df(client, &df);
        if (r < 0)
                return cli_report(client, r, "cannot get the disk usage");
        r = format == CLI_FORMAT_JSON ? cli_print_json(df->json) : print_table(df);
        if (r < 0)
                return cli_report(client, r, "cannot print the disk usage");
        return CLI_EXIT_OK;
}

const CliCommand cli_command_df = {
        .name = "df",
        .summary = "show the cache's disk usage",
        .usage = "Usage: " CLI_PROGRAM " df [--format table|json]\n"
                 "\n"
                 "Show the bytes the cache allocates on disk by kind (manifests, configs,\n"
                 "layers, fsmeta, VMDK, the index), how much a prune would reclaim, and\n"
                 "the disk budget of the daemon's configuration with how much is left.\n"
                 "Sizes are 1024-based.\n"
                 "\n"
                 "Options:\n"
                 "  --format FORMAT  table (default) or json (the daemon's SystemDf)\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
