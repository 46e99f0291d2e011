/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image inspect: one image's handle, config and layers. */

#include "cli.h"

#define FIELD "%-13s "

static void print_strv(const char *label, char *const *l, bool pairs) {
        if (!l || !l[0]) {
                printf(FIELD "%s\n", label, l ? "(none)" : "-");
                return;
        }
        for (size_t i = 0; l[i]; i += pairs ? 2 : 1) {
                if (pairs)
                        printf(FIELD "%s=%s\n", i == 0 ? label : "", l[i], l[i + 1]);
                else
                        printf(FIELD "%s\n", i == 0 ? label : "", l[i]);
        }
}

/* cmd and entrypoint are argv lists; printed as one line, each word quoted
 * when it needs to be, so that nothing is ambiguous. */
static void print_argv(const char *label, char *const *l) {
        printf(FIELD, label);
        if (!l) {
                puts("-");
                return;
        }
        putchar('[');
        for (size_t i = 0; l[i]; i++) {
                printf("%s", i > 0 ? ", " : "");
                putchar('"');
                for (const char *p = l[i]; *p; p++) {
                        if (*p == '"' || *p == '\\')
                                putchar('\\');
                        putchar(*p);
                }
                putchar('"');
        }
        puts("]");
}

static int print_layers(const MsbImageDetail *d) {
        static const char *const header[] = { "POSITION", "DIFF ID", "BLOB", "MEDIA TYPE", "SIZE", "EROFS SIZE" };
        _cleanup_(cli_table_freep) CliTable *t = NULL;
        int r;

        r = cli_table_new(ELEMENTSOF(header), header, &t);
        if (r < 0)
                return r;
        for (size_t i = 0; i < d->n_layers; i++) {
                const MsbImageLayer *l = &d->layers[i];
                char pos[24], diff[CLI_SHORT_DIGEST_MAX], blob[CLI_SHORT_DIGEST_MAX], size[CLI_SIZE_MAX],
                        erofs[CLI_SIZE_MAX];

                snprintf(pos, sizeof(pos), "%lld", (long long) l->position);
                cli_format_size(l->compressed_size_bytes, size, sizeof(size));
                cli_format_size(l->erofs_size_bytes, erofs, sizeof(erofs));
                const char *row[] = { pos,
                                      cli_short_digest(l->diff_id, diff, sizeof(diff)),
                                      cli_short_digest(l->blob_digest, blob, sizeof(blob)),
                                      l->media_type ?: "-",
                                      size,
                                      erofs };
                r = cli_table_add(t, row);
                if (r < 0)
                        return r;
        }
        cli_table_print(t, stdout);
        return 0;
}

static int print_detail(const MsbImageDetail *d) {
        const MsbImage *h = &d->handle;
        const MsbImageConfig *cfg = d->config;
        char size[CLI_SIZE_MAX], created[CLI_TIME_MAX], used[CLI_TIME_MAX];

        cli_format_size(h->size_bytes, size, sizeof(size));
        cli_format_time(h->created_at, created, sizeof(created));
        cli_format_time(h->last_used_at, used, sizeof(used));
        printf(FIELD "%s\n", "Reference:", h->reference);
        printf(FIELD "%s\n", "Digest:", h->manifest_digest ?: "-");
        printf(FIELD "%s/%s\n", "Platform:", h->os ?: "-", h->architecture ?: "-");
        if (h->size_bytes == MSB_NULL_INT)
                printf(FIELD "-\n", "Size:");
        else
                printf(FIELD "%s (%lld bytes)\n", "Size:", size, (long long) h->size_bytes);
        printf(FIELD "%s\n", "Created:", created);
        printf(FIELD "%s\n", "Last used:", used);
        if (cfg) {
                printf(FIELD "%s\n", "Config:", cfg->digest);
                print_argv("Entrypoint:", cfg->entrypoint);
                print_argv("Cmd:", cfg->cmd);
                print_strv("Env:", cfg->env, false);
                printf(FIELD "%s\n", "Working dir:", cfg->working_dir ?: "-");
                printf(FIELD "%s\n", "User:", cfg->user ?: "-");
                printf(FIELD "%s\n", "Stop signal:", cfg->stop_signal ?: "-");
                print_strv("Labels:", cfg->labels, true);
        } else
                printf(FIELD "-\n", "Config:");
        printf(FIELD "%lld\n", "Layers:", (long long) h->layer_count);
        return d->n_layers > 0 ? print_layers(d) : 0;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_detail_freep) MsbImageDetail *detail = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_inspect, c, globals))
                        continue;
                if (c == CLI_OPT_FORMAT && cli_parse_format(&cli_command_inspect, optarg, &format) != 0)
                        return CLI_EXIT_USAGE;
        }
        if (optind >= argc)
                return cli_usage_error(&cli_command_inspect, "missing image reference");
        if (optind + 1 < argc)
                return cli_usage_error(&cli_command_inspect, "unexpected argument '%s'", argv[optind + 1]);

        if (cli_connect(globals, &client) < 0)
                return CLI_EXIT_FAILURE;
        r = msb_client_image_inspect(client, argv[optind], &detail);
        if (r < 0)
                return cli_report(client, r, "cannot inspect %s", argv[optind]);
        r = format == CLI_FORMAT_JSON ? cli_print_json(detail->json) : print_detail(detail);
        if (r < 0)
                return cli_report(client, r, "cannot print %s", argv[optind]);
        return CLI_EXIT_OK;
}

const CliCommand cli_command_inspect = {
        .name = "inspect",
        .summary = "show an image's metadata, config and layers",
        .usage = "Usage: " CLI_PROGRAM " inspect [--format table|json] REFERENCE\n"
                 "\n"
                 "Show what the cache knows about one image: its handle, the parsed OCI\n"
                 "config and its layers from the bottom up.\n"
                 "\n"
                 "Options:\n"
                 "  --format FORMAT  table (default) or json (the daemon's ImageDetail)\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
