/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image inspect: one image's handle, config and layers. */

#include "cli.h"

#define FIELD "%-13s "

/* The fields of --format templates: docker image inspect's names where it
 * has one (Id, Architecture, Os, Size in bytes, Config.Env, ...), then
 * ours. Id is the manifest digest, the image's identity here. */
static const CliField fields[] = {
        { "Id", "ID" },
        { "Reference", "REFERENCE" },
        { "Repository", "REPOSITORY" },
        { "Tag", "TAG" },
        { "Digest", "DIGEST" },
        { "Architecture", "ARCHITECTURE" },
        { "Os", "OS" },
        { "Size", "SIZE" },
        { "CreatedAt", "CREATED AT" },
        { "LastUsedAt", "LAST USED AT" },
        { "LayerCount", "LAYER COUNT" },
        { "Config", "CONFIG" },
        { "Config.Digest", "CONFIG DIGEST" },
        { "Config.Env", "ENV" },
        { "Config.Cmd", "CMD" },
        { "Config.Entrypoint", "ENTRYPOINT" },
        { "Config.WorkingDir", "WORKING DIR" },
        { "Config.User", "USER" },
        { "Config.Labels", "LABELS" },
        { "Config.StopSignal", "STOP SIGNAL" },
        { "Layers", "LAYERS" },
};

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

static json_t *config_view(json_t *c) {
        if (!json_is_object(c))
                return json_null();
        return json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?}",
                         "Digest", json_object_get(c, "digest"),
                         "Env", json_object_get(c, "env"),
                         "Cmd", json_object_get(c, "cmd"),
                         "Entrypoint", json_object_get(c, "entrypoint"),
                         "WorkingDir", json_object_get(c, "working_dir"),
                         "User", json_object_get(c, "user"),
                         "Labels", json_object_get(c, "labels"),
                         "StopSignal", json_object_get(c, "stop_signal"));
}

static json_t *layers_view(json_t *layers) {
        _cleanup_json_ json_t *a = json_array();
        json_t *l;
        size_t i;

        if (!a)
                return NULL;
        json_array_foreach(layers, i, l) {
                json_t *v = json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?}",
                                      "Position", json_object_get(l, "position"),
                                      "DiffID", json_object_get(l, "diff_id"),
                                      "BlobDigest", json_object_get(l, "blob_digest"),
                                      "MediaType", json_object_get(l, "media_type"),
                                      "Size", json_object_get(l, "compressed_size_bytes"),
                                      "ErofsSize", json_object_get(l, "erofs_size_bytes"));
                if (json_array_append_new(a, v) < 0)
                        return NULL;
        }
        return TAKE_PTR(a);
}

/* The object a template reads: built from the daemon's ImageDetail, so
 * that config and layers come through as the daemon sent them. */
static json_t *detail_view(const MsbImageDetail *d) {
        _cleanup_json_ json_t *wire = json_loads(d->json, 0, NULL);
        const MsbImage *h = &d->handle;
        char created[CLI_TIME_MAX], used[CLI_TIME_MAX];
        CliReferenceParts p;

        if (!wire)
                return NULL;
        cli_reference_parts(h->reference, &p);
        cli_format_time(h->created_at, created, sizeof(created));
        cli_format_time(h->last_used_at, used, sizeof(used));
        return json_pack("{s:s?, s:s, s:s%, s:s%, s:s, s:s?, s:s?, s:O?, s:s, s:s, s:I, s:o, s:o}",
                         "Id", h->manifest_digest,
                         "Reference", h->reference,
                         "Repository", h->reference + p.familiar, p.name_len - p.familiar,
                         "Tag", p.tag ?: "<none>", p.tag ? p.tag_len : strlen("<none>"),
                         "Digest", h->manifest_digest ?: "<none>",
                         "Architecture", h->architecture,
                         "Os", h->os,
                         "Size", json_object_get(json_object_get(wire, "handle"), "size_bytes"),
                         "CreatedAt", created,
                         "LastUsedAt", used,
                         "LayerCount", (json_int_t) h->layer_count,
                         "Config", config_view(json_object_get(wire, "config")),
                         "Layers", layers_view(json_object_get(wire, "layers")));
}

static int print_template(const CliOutput *out, const MsbImageDetail *d) {
        _cleanup_json_ json_t *views = json_array();
        json_t *view = detail_view(d);

        if (!views || json_array_append_new(views, view) < 0)
                return -ENOMEM;
        return cli_output_print(out, views);
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_detail_freep) MsbImageDetail *detail = NULL;
        _cleanup_(cli_output_done) CliOutput out = {};
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_inspect, c, globals))
                        continue;
                if (c == CLI_OPT_FORMAT) {
                        cli_output_done(&out);
                        r = cli_parse_output(&cli_command_inspect, optarg, fields, ELEMENTSOF(fields), &out);
                        if (r != 0)
                                return r;
                }
        }
        if (optind >= argc)
                return cli_usage_error(&cli_command_inspect, "missing image reference");
        if (optind + 1 < argc)
                return cli_usage_error(&cli_command_inspect, "unexpected argument '%s'", argv[optind + 1]);

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        r = msb_client_image_inspect(client, argv[optind], &detail);
        if (r < 0)
                return cli_report(client, r, "cannot inspect %s", argv[optind]);
        r = out.format == CLI_FORMAT_JSON       ? cli_print_json(detail->json)
            : out.format == CLI_FORMAT_TEMPLATE ? print_template(&out, detail)
                                                : print_detail(detail);
        if (r < 0)
                return cli_report(client, r, "cannot print %s", argv[optind]);
        return CLI_EXIT_OK;
}

const CliCommand cli_command_inspect = {
        .name = "inspect",
        .summary = "show an image's metadata, config and layers",
        .usage = "Usage: " CLI_PROGRAM " inspect [--format FORMAT] REFERENCE\n"
                 "\n"
                 "Show what the cache knows about one image: its handle, the parsed OCI\n"
                 "config and its layers from the bottom up. REFERENCE is any spelling of\n"
                 "a reference, or a manifest digest.\n"
                 "\n"
                 "Options:\n"
                 "  --format FORMAT  table (default), json (the daemon's ImageDetail), or a\n"
                 "                   template such as '{{.Id}} {{json .Config.Env}}'. Fields:\n"
                 "                   .Id .Reference .Repository .Tag .Digest .Architecture\n"
                 "                   .Os .Size (bytes) .CreatedAt .LastUsedAt .LayerCount\n"
                 "                   .Config (.Config.Digest .Env .Cmd .Entrypoint\n"
                 "                   .WorkingDir .User .Labels .StopSignal) .Layers;\n"
                 "                   {{json .}} prints them all\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
