/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image ls: the cached images, newest first, filtered and formatted
 * the way docker image ls does it. */

#include <fnmatch.h>

#include "cli.h"

/* The fields of --format templates, named as docker image ls names them
 * where it has one (Repository, Tag, Digest, ID, Size, CreatedAt,
 * CreatedSince), then ours. */
static const CliField fields[] = {
        { "Reference", "REFERENCE" },       { "Repository", "REPOSITORY" },
        { "Tag", "TAG" },                   { "Digest", "DIGEST" },
        { "ID", "IMAGE ID" },               { "Size", "SIZE" },
        { "SizeBytes", "SIZE BYTES" },      { "CreatedAt", "CREATED AT" },
        { "CreatedSince", "CREATED" },      { "LastUsedAt", "LAST USED AT" },
        { "LastUsedSince", "LAST USED" },   { "Architecture", "ARCHITECTURE" },
        { "Os", "OS" },                     { "Layers", "LAYERS" },
};

/* --filter: images match every key given; a key given several times
 * matches like docker's: any of the reference patterns, every bound. */
typedef struct LsFilter {
        const char **references; /* fnmatch patterns */
        size_t n_references;
        const char **before; /* references whose created_at bounds from above */
        size_t n_before;
        const char **since; /* ... from below */
        size_t n_since;
        int64_t before_ms; /* resolved: created_at < before_ms */
        int64_t since_ms;  /* and created_at > since_ms */
} LsFilter;

static int filter_parse(LsFilter *f, const char *arg) {
        const char *eq = strchr(arg, '='), *value = eq ? eq + 1 : NULL;
        size_t key_len = eq ? (size_t) (eq - arg) : strlen(arg);

        if (!value || !*value)
                return cli_usage_error(&cli_command_ls, "--filter needs KEY=VALUE, not '%s'", arg);
        if (key_len == 9 && strncmp(arg, "reference", 9) == 0)
                f->references[f->n_references++] = value;
        else if (key_len == 6 && strncmp(arg, "before", 6) == 0)
                f->before[f->n_before++] = value;
        else if (key_len == 5 && strncmp(arg, "since", 5) == 0)
                f->since[f->n_since++] = value;
        else
                return cli_usage_error(&cli_command_ls, "unknown filter '%.*s' (use reference, before or since)",
                                       (int) key_len, arg);
        return 0;
}

/* The created_at of the image a before= or since= value names. */
static int filter_time(MsbClient *client, const char *key, const char *reference, int64_t *ret) {
        _cleanup_(msb_image_freep) MsbImage *image = NULL;
        int r;

        r = msb_client_image_get(client, reference, &image);
        if (r < 0)
                return cli_report(client, r, "cannot filter %s=%s", key, reference);
        if (image->created_at == MSB_NULL_INT) {
                fprintf(stderr, CLI_PROGRAM ": cannot filter %s=%s: the daemon has no creation time for it\n",
                        key, reference);
                return CLI_EXIT_FAILURE;
        }
        *ret = image->created_at;
        return 0;
}

/* Turns before= and since= references into times; returns 0 or the exit
 * status (reported). */
static int filter_resolve(LsFilter *f, MsbClient *client) {
        int64_t t;
        int r;

        f->before_ms = INT64_MAX;
        f->since_ms = INT64_MIN;
        for (size_t i = 0; i < f->n_before; i++) {
                r = filter_time(client, "before", f->before[i], &t);
                if (r != 0)
                        return r;
                if (t < f->before_ms)
                        f->before_ms = t;
        }
        for (size_t i = 0; i < f->n_since; i++) {
                r = filter_time(client, "since", f->since[i], &t);
                if (r != 0)
                        return r;
                if (t > f->since_ms)
                        f->since_ms = t;
        }
        return 0;
}

/* A pattern matches the reference as docker's reference filter does: the
 * whole reference or its name without tag, canonical
 * (docker.io/library/alpine:3.19) or familiar (alpine:3.19); '*' stops at
 * '/'. */
static bool reference_matches(const char *pattern, const char *reference) {
        _cleanup_free_ char *name = NULL;
        CliReferenceParts p;

        cli_reference_parts(reference, &p);
        if (fnmatch(pattern, reference, FNM_PATHNAME) == 0 ||
            fnmatch(pattern, reference + p.familiar, FNM_PATHNAME) == 0)
                return true;
        name = strndup(reference, p.name_len);
        return name && (fnmatch(pattern, name, FNM_PATHNAME) == 0 ||
                        fnmatch(pattern, name + p.familiar, FNM_PATHNAME) == 0);
}

static bool filter_matches(const LsFilter *f, const MsbImage *im) {
        bool any = f->n_references == 0;

        for (size_t i = 0; !any && i < f->n_references; i++)
                any = reference_matches(f->references[i], im->reference);
        if (!any)
                return false;
        if (f->n_before == 0 && f->n_since == 0)
                return true;
        return im->created_at != MSB_NULL_INT && im->created_at < f->before_ms && im->created_at > f->since_ms;
}

static json_t *int_or_null(int64_t v) {
        return v == MSB_NULL_INT ? json_null() : json_integer(v);
}

/* The object a template reads for one image. */
static json_t *image_view(const MsbImage *im, bool no_trunc, int64_t now) {
        char digest[CLI_SHORT_DIGEST_MAX], size[CLI_SIZE_MAX], created[CLI_TIME_MAX], created_since[CLI_TIME_MAX],
                used[CLI_TIME_MAX], used_since[CLI_TIME_MAX];
        CliReferenceParts p;

        cli_reference_parts(im->reference, &p);
        cli_format_size(im->size_bytes, size, sizeof(size));
        cli_format_time(im->created_at, created, sizeof(created));
        cli_format_ago(im->created_at, now, created_since, sizeof(created_since));
        cli_format_time(im->last_used_at, used, sizeof(used));
        cli_format_ago(im->last_used_at, now, used_since, sizeof(used_since));
        return json_pack("{s:s, s:s%, s:s%, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:s?, s:s?, s:I}",
                         "Reference", im->reference,
                         "Repository", im->reference + p.familiar, p.name_len - p.familiar,
                         "Tag", p.tag ?: "<none>", p.tag ? p.tag_len : strlen("<none>"),
                         "Digest", im->manifest_digest ?: "<none>",
                         "ID", no_trunc ? im->manifest_digest ?: "<none>"
                                        : cli_short_digest(im->manifest_digest, digest, sizeof(digest)),
                         "Size", size,
                         "SizeBytes", int_or_null(im->size_bytes),
                         "CreatedAt", created,
                         "CreatedSince", created_since,
                         "LastUsedAt", used,
                         "LastUsedSince", used_since,
                         "Architecture", im->architecture,
                         "Os", im->os,
                         "Layers", (json_int_t) im->layer_count);
}

static int print_table(MsbImage *const *images, size_t n, bool no_trunc) {
        static const char *const header[] = { "REFERENCE", "DIGEST", "SIZE", "CREATED", "LAST USED" };
        _cleanup_(cli_table_freep) CliTable *t = NULL;
        int64_t now = cli_now_ms();
        int r;

        r = cli_table_new(ELEMENTSOF(header), header, &t);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const MsbImage *im = images[i];
                char digest[CLI_SHORT_DIGEST_MAX], size[CLI_SIZE_MAX], created[CLI_TIME_MAX], used[CLI_TIME_MAX];

                cli_format_size(im->size_bytes, size, sizeof(size));
                cli_format_ago(im->created_at, now, created, sizeof(created));
                cli_format_ago(im->last_used_at, now, used, sizeof(used));
                const char *row[] = { im->reference,
                                      no_trunc ? im->manifest_digest ?: "<none>"
                                               : cli_short_digest(im->manifest_digest, digest, sizeof(digest)),
                                      size, created, used };
                r = cli_table_add(t, row);
                if (r < 0)
                        return r;
        }
        cli_table_print(t, stdout);
        return 0;
}

/* Prints the images that passed the filter as the output asks. */
static int print_images(const CliOutput *out, MsbImage *const *images, size_t n, bool quiet, bool no_trunc) {
        _cleanup_json_ json_t *all = json_array();
        int64_t now = cli_now_ms();

        if (!all)
                return -ENOMEM;
        if (quiet) {
                for (size_t i = 0; i < n; i++)
                        puts(images[i]->reference);
                return 0;
        }
        if (out->format == CLI_FORMAT_TABLE) {
                if (n == 0)
                        puts("No images found.");
                return n == 0 ? 0 : print_table(images, n, no_trunc);
        }
        for (size_t i = 0; i < n; i++) {
                json_t *j = out->format == CLI_FORMAT_JSON ? json_loads(images[i]->json, 0, NULL)
                                                           : image_view(images[i], no_trunc, now);
                if (json_array_append_new(all, j) < 0)
                        return -ENOMEM;
        }
        return out->format == CLI_FORMAT_JSON ? cli_print_json_value(all) : cli_output_print(out, all);
}

/* Returns -1 when the command goes on, else the status to exit with (0
 * after --help). */
static int parse_options(int argc, char *argv[], CliGlobals *globals, LsFilter *filter, CliOutput *out,
                         bool *quiet, bool *no_trunc) {
        enum { OPT_NO_TRUNC = 0x300 };
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                { "quiet", no_argument, NULL, 'q' },
                { "filter", required_argument, NULL, 'f' },
                { "no-trunc", no_argument, NULL, OPT_NO_TRUNC },
                {},
        };
        int c, r, status;

        while ((c = getopt_long(argc, argv, "hqf:", options, NULL)) >= 0) {
                r = cli_common_option(&cli_command_ls, c, globals, &status);
                if (r == 0)
                        return status;
                if (r > 0)
                        continue;
                if (c == 'q')
                        *quiet = true;
                else if (c == OPT_NO_TRUNC)
                        *no_trunc = true;
                else if (c == 'f' && (r = filter_parse(filter, optarg)) != 0)
                        return r;
                else if (c == CLI_OPT_FORMAT) {
                        cli_output_done(out);
                        r = cli_parse_output(&cli_command_ls, optarg, fields, ELEMENTSOF(fields), out);
                        if (r != 0)
                                return r;
                }
        }
        if (optind < argc)
                return cli_usage_error(&cli_command_ls, "unexpected argument '%s'", argv[optind]);
        if (*quiet && out->format != CLI_FORMAT_TABLE)
                return cli_usage_error(&cli_command_ls, "-q and --format %s exclude each other",
                                       out->format == CLI_FORMAT_JSON ? "json" : "TEMPLATE");
        return -1;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_list_freep) MsbImageList *list = NULL;
        _cleanup_(cli_output_done) CliOutput out = {};
        _cleanup_free_ const char **filter_values = calloc(3 * (size_t) argc, sizeof(char *));
        _cleanup_free_ MsbImage **matched = NULL;
        LsFilter filter = {};
        bool quiet = false, no_trunc = false;
        size_t n = 0;
        int r;

        if (!filter_values)
                return CLI_EXIT_FAILURE;
        /* No option appears more often than argc, so each list fits. */
        filter.references = filter_values;
        filter.before = filter_values + argc;
        filter.since = filter_values + 2 * (size_t) argc;
        r = parse_options(argc, argv, globals, &filter, &out, &quiet, &no_trunc);
        if (r >= 0)
                return r;

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        r = filter_resolve(&filter, client);
        if (r != 0)
                return r;
        r = msb_client_image_list(client, &list);
        if (r < 0)
                return cli_report(client, r, "cannot list images");
        matched = calloc(list->n_images ?: 1, sizeof(MsbImage *));
        if (!matched)
                return cli_report(client, -ENOMEM, "cannot list images");
        for (size_t i = 0; i < list->n_images; i++)
                if (filter_matches(&filter, &list->images[i]))
                        matched[n++] = &list->images[i];

        r = print_images(&out, matched, n, quiet, no_trunc);
        if (r < 0)
                return cli_report(client, r, "cannot print the images");
        return CLI_EXIT_OK;
}

const CliCommand cli_command_ls = {
        .name = "ls",
        .alias = "images",
        .summary = "list cached images",
        .usage = "Usage: " CLI_PROGRAM " ls [-q] [--no-trunc] [--filter KEY=VALUE]... [--format FORMAT]\n"
                 "\n"
                 "List the cached images, newest first: reference, manifest digest\n"
                 "(12 hex digits), size (sum of compressed layers, 1024-based), when the\n"
                 "reference was first stored and when it was last used.\n"
                 "\n"
                 "Options:\n"
                 "  -q, --quiet             print the references only, one a line\n"
                 "  -f, --filter KEY=VALUE  only the images that match (several filters: all\n"
                 "                          keys must match, a repeated reference= any value):\n"
                 "                            reference=PATTERN  the reference or its name,\n"
                 "                              canonical or familiar (alpine:3.19), matches the\n"
                 "                              shell pattern; '*' does not cross '/'\n"
                 "                            before=REFERENCE   stored before that image\n"
                 "                            since=REFERENCE    stored after that image\n"
                 "  --no-trunc              full manifest digests\n"
                 "  --format FORMAT         table (default), json (the daemon's ImageHandle\n"
                 "                          list), a template such as '{{.Repository}}:{{.Tag}}'\n"
                 "                          printed for each image, or 'table TEMPLATE' for\n"
                 "                          columns split at \\t. Fields: .Reference .Repository\n"
                 "                          .Tag .Digest .ID .Size .SizeBytes .CreatedAt\n"
                 "                          .CreatedSince .LastUsedAt .LastUsedSince\n"
                 "                          .Architecture .Os .Layers; {{json .}} prints them all\n"
                 "  --socket PATH           the daemon's socket\n"
                 "  -h, --help              show this help\n",
        .run = run,
};
