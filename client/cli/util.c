/* SPDX-License-Identifier: Apache-2.0 */

/* What the commands share: errors, option handling and output formatting. */

#include <jansson.h>
#include <stdarg.h>
#include <time.h>

#include "cli.h"

int cli_usage_error(const CliCommand *cmd, const char *fmt, ...) {
        va_list ap;

        fputs(CLI_PROGRAM ": ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (cmd)
                fprintf(stderr, "\nTry '" CLI_PROGRAM " %s --help'.\n", cmd->name);
        else
                fputs("\nTry '" CLI_PROGRAM " --help'.\n", stderr);
        return CLI_EXIT_USAGE;
}

int cli_common_option(const CliCommand *cmd, int opt, CliGlobals *globals, int *ret_exit) {
        switch (opt) {
        case CLI_OPT_HELP:
                fputs(cmd->usage, stdout);
                *ret_exit = CLI_EXIT_OK;
                return 0;
        case CLI_OPT_SOCKET:
                globals->socket_path = optarg;
                return 1;
        case '?':
                /* getopt has already said what is wrong. */
                fprintf(stderr, "Try '" CLI_PROGRAM " %s --help'.\n", cmd->name);
                *ret_exit = CLI_EXIT_USAGE;
                return 0;
        default:
                return -1;
        }
}

int cli_parse_format(const CliCommand *cmd, const char *arg, CliFormat *ret) {
        if (streq(arg, "json"))
                *ret = CLI_FORMAT_JSON;
        else if (streq(arg, "table"))
                *ret = CLI_FORMAT_TABLE;
        else
                return cli_usage_error(cmd, "unknown format '%s' (use table or json)", arg);
        return 0;
}

int cli_connect(const CliGlobals *globals, MsbClient **ret_client) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (globals->socket_path)
                path = strdup(globals->socket_path);
        else if (msb_socket_path_default(&path) < 0)
                path = NULL;
        if (!path) {
                fputs(CLI_PROGRAM ": out of memory\n", stderr);
                return CLI_EXIT_FAILURE;
        }

        r = msb_client_connect(path, ret_client);
        if (r >= 0)
                return 0;
        fprintf(stderr, CLI_PROGRAM ": cannot connect to msb-imaged at %s: %s\n", path, strerror(-r));
        if (r == -ENOENT || r == -ECONNREFUSED)
                fputs("Is the daemon running? Start it with 'msb-imaged', or with\n"
                      "'systemctl --user start msb-imaged.socket' to have systemd start it on demand.\n",
                      stderr);
        return r == -ENOMEM ? CLI_EXIT_FAILURE : CLI_EXIT_UNREACHABLE;
}

bool cli_format_command_connect(const CliCommand *cmd, int argc, char *argv[], CliGlobals *globals,
                                CliFormat *ret_format, MsbClient **ret_client, int *ret_exit) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "format", required_argument, NULL, CLI_OPT_FORMAT },
                {},
        };
        int c, r;

        *ret_exit = CLI_EXIT_OK;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                r = cli_common_option(cmd, c, globals, ret_exit);
                if (r == 0)
                        return false;
                if (r > 0)
                        continue;
                if (c == CLI_OPT_FORMAT && cli_parse_format(cmd, optarg, ret_format) != 0) {
                        *ret_exit = CLI_EXIT_USAGE;
                        return false;
                }
        }
        if (optind < argc) {
                *ret_exit = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
                return false;
        }
        *ret_exit = cli_connect(globals, ret_client);
        return *ret_exit == 0;
}

/* Errors the daemon names when the thing a command names does not exist:
 * a cached image, a pin, an image in its registry, a file to load. */
static const char *const not_found_names[] = {
        "image-not-found",
        "pin-not-found",
        "remote-not-found",
        "path-not-found",
};

int cli_exit_status(MsbClient *c, int r) {
        const MsbClientError *e = msb_client_last_error(c);

        if (r == -MSB_EREMOTE && e && e->name) {
                for (size_t i = 0; i < ELEMENTSOF(not_found_names); i++)
                        if (streq(e->name, not_found_names[i]))
                                return CLI_EXIT_NOT_FOUND;
                /* A daemon on its way out is as good as gone: try again once
                 * it (or its successor) serves. */
                if (streq(e->name, "shutting-down"))
                        return CLI_EXIT_UNREACHABLE;
                return CLI_EXIT_FAILURE;
        }
        if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
                return CLI_EXIT_UNREACHABLE;
        return CLI_EXIT_FAILURE;
}

int cli_report(MsbClient *c, int r, const char *fmt, ...) {
        const MsbClientError *e = msb_client_last_error(c);
        va_list ap;

        fputs(CLI_PROGRAM ": ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (r == -MSB_EREMOTE && e)
                fprintf(stderr, ": %s\n", e->message);
        else if (r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN)
                fprintf(stderr, ": the connection to msb-imaged was lost (%s)\n", strerror(-r));
        else if (r == -EPROTO)
                fputs(": msb-imaged sent an answer this client does not understand\n", stderr);
        else
                fprintf(stderr, ": %s\n", strerror(-r));
        return cli_exit_status(c, r);
}

int cli_print_json(const char *json_text) {
        _cleanup_json_ json_t *j = NULL;
        json_error_t err;

        j = json_loads(json_text, JSON_DECODE_ANY, &err);
        if (!j)
                return -EINVAL;
        return cli_print_json_value(j);
}

int cli_print_json_value(json_t *j) {
        _cleanup_free_ char *out = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);

        if (!out)
                return -ENOMEM;
        puts(out);
        return 0;
}

void cli_format_bar(int64_t done, int64_t total, char bar[static CLI_BAR_WIDTH + 1]) {
        size_t filled = 0;

        if (total > 0 && done > 0)
                filled = (size_t) ((double) CLI_BAR_WIDTH * (double) done / (double) total);
        if (filled > CLI_BAR_WIDTH)
                filled = CLI_BAR_WIDTH;
        for (size_t i = 0; i < CLI_BAR_WIDTH; i++)
                bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
        bar[CLI_BAR_WIDTH] = '\0';
}

void cli_format_size(int64_t bytes, char *buf, size_t size) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        double v = (double) bytes;
        size_t u = 0;

        if (bytes == MSB_NULL_INT) {
                snprintf(buf, size, "-");
                return;
        }
        if (bytes < 1024) {
                snprintf(buf, size, "%lld B", (long long) bytes);
                return;
        }
        while (v >= 1024.0 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024.0;
                u++;
        }
        /* One decimal below 10 units ("3.4 MiB"), none above ("341 MiB"),
         * like du -h. */
        if (v < 10.0)
                snprintf(buf, size, "%.1f %s", v, units[u]);
        else
                snprintf(buf, size, "%.0f %s", v, units[u]);
}

int cli_compare_strings(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

int64_t cli_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_format_ago(int64_t ms, int64_t now_ms, char *buf, size_t size) {
        static const struct {
                int64_t seconds;
                const char *unit;
        } steps[] = {
                { 365 * 24 * 3600, "year" }, { 30 * 24 * 3600, "month" }, { 7 * 24 * 3600, "week" },
                { 24 * 3600, "day" },        { 3600, "hour" },            { 60, "minute" },
                { 1, "second" },
        };
        int64_t delta;

        if (ms == MSB_NULL_INT) {
                snprintf(buf, size, "-");
                return;
        }
        delta = (now_ms - ms) / 1000;
        if (delta < 1) {
                snprintf(buf, size, "just now");
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(steps); i++)
                if (delta >= steps[i].seconds) {
                        int64_t n = delta / steps[i].seconds;
                        snprintf(buf, size, "%lld %s%s ago", (long long) n, steps[i].unit, n == 1 ? "" : "s");
                        return;
                }
}

void cli_format_time(int64_t ms, char *buf, size_t size) {
        struct tm tm;
        time_t t;

        if (ms == MSB_NULL_INT) {
                snprintf(buf, size, "-");
                return;
        }
        t = (time_t) (ms / 1000);
        if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
                snprintf(buf, size, "%lld", (long long) ms);
}

void cli_reference_parts(const char *reference, CliReferenceParts *ret) {
        const char *at = strchr(reference, '@'), *end = at ?: reference + strlen(reference);
        const char *slash = NULL, *colon;
        CliReferenceParts parts = { .digest = at ? at + 1 : NULL };

        for (const char *p = reference; p < end; p++)
                if (*p == '/')
                        slash = p;
        /* A colon before the last slash belongs to the registry's port
         * (localhost:5000/app), not to a tag. */
        colon = memchr(slash ? slash : reference, ':', (size_t) (end - (slash ? slash : reference)));
        parts.name_len = (size_t) ((colon ?: end) - reference);
        if (colon) {
                parts.tag = colon + 1;
                parts.tag_len = (size_t) (end - colon - 1);
        }
        /* Docker's familiar form drops its default registry and, for
         * official images (one path component), the library/ namespace. */
        if (strncmp(reference, "docker.io/", 10) == 0 && parts.name_len > 10) {
                parts.familiar = 10;
                if (parts.name_len > 18 && strncmp(reference + 10, "library/", 8) == 0 &&
                    !memchr(reference + 18, '/', parts.name_len - 18))
                        parts.familiar = 18;
        }
        *ret = parts;
}

const char *cli_short_digest(const char *digest, char *buf, size_t size) {
        const char *hex;

        if (!digest)
                return "<none>";
        hex = strchr(digest, ':');
        hex = hex ? hex + 1 : digest;
        snprintf(buf, size, "%.12s", hex);
        return buf;
}

int cli_table_new(size_t n_columns, const char *const *header, CliTable **ret) {
        CliTable *t = calloc(1, sizeof(*t));
        int r;

        if (!t)
                return -ENOMEM;
        t->n_columns = n_columns;
        r = cli_table_add(t, header);
        if (r < 0) {
                cli_table_free(t);
                return r;
        }
        *ret = t;
        return 0;
}

int cli_table_add(CliTable *t, const char *const *cells) {
        char **c = realloc(t->cells, (t->n_rows + 1) * t->n_columns * sizeof(char *));

        if (!c)
                return -ENOMEM;
        t->cells = c;
        c += t->n_rows * t->n_columns;
        for (size_t i = 0; i < t->n_columns; i++)
                c[i] = NULL;
        t->n_rows++;
        for (size_t i = 0; i < t->n_columns; i++) {
                c[i] = strdup(cells[i] ?: "");
                if (!c[i])
                        return -ENOMEM;
        }
        return 0;
}

void cli_table_print(const CliTable *t, FILE *f) {
        _cleanup_free_ size_t *width = calloc(t->n_columns ?: 1, sizeof(size_t));

        if (!width)
                return;
        for (size_t col = 0; col < t->n_columns; col++) {
                width[col] = 0;
                for (size_t row = 0; row < t->n_rows; row++) {
                        size_t w = strlen(t->cells[row * t->n_columns + col]);
                        if (w > width[col])
                                width[col] = w;
                }
        }
        /* fputs() and runs of spaces rather than fprintf("%-*s"): the
         * format interpreter was 14% of `msb-image ls` of 5,000 images. */
        static const char spaces[] = "                                                               ";
        for (size_t row = 0; row < t->n_rows; row++) {
                for (size_t col = 0; col < t->n_columns; col++) {
                        const char *cell = t->cells[row * t->n_columns + col];
                        fputs(cell, f);
                        if (col + 1 == t->n_columns) {
                                putc('\n', f);
                                continue;
                        }
                        for (size_t pad = width[col] - strlen(cell) + 2; pad > 0;) {
                                size_t n = pad < sizeof(spaces) - 1 ? pad : sizeof(spaces) - 1;
                                fwrite(spaces, 1, n, f);
                                pad -= n;
                        }
                }
        }
}

CliTable *cli_table_free(CliTable *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}
