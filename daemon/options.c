/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdarg.h>

#include "options.h"

void options_done(Options *o) {
        free(o->store);
        free(o->socket);
        free(o->config);
        *o = (Options) {};
}

static char *path_from_env_or(const char *env, const char *xdg, const char *xdg_suffix, const char *home_suffix) {
        const char *e = getenv(env), *x = xdg ? getenv(xdg) : NULL, *home = getenv("HOME");
        char *p = NULL;

        if (e && *e)
                return strdup(e);
        if (x && *x && x[0] == '/') {
                if (asprintf(&p, "%s/%s", x, xdg_suffix) < 0)
                        return NULL;
                return p;
        }
        if (home_suffix && home && *home) {
                if (asprintf(&p, "%s/%s", home, home_suffix) < 0)
                        return NULL;
                return p;
        }
        return NULL;
}

static char *default_socket_path(void) {
        char *p = path_from_env_or("MSB_IMAGED_SOCKET", "XDG_RUNTIME_DIR", "microsandbox/imaged.sock", NULL);
        if (!p && asprintf(&p, "/tmp/microsandbox-%u/imaged.sock", (unsigned) getuid()) < 0)
                return NULL;
        return p;
}

static void usage(FILE *f) {
        fprintf(f,
                "Usage: msb-imaged [OPTIONS]\n"
                "\n"
                "Owns the local OCI image cache of microsandbox and serves it as JSON-RPC 2.0\n"
                "on a Unix socket.\n"
                "\n"
                "  --store DIR        image store (env MSB_IMAGED_STORE;\n"
                "                     default $XDG_DATA_HOME/microsandbox/images)\n"
                "  --socket PATH      socket to listen on (env MSB_IMAGED_SOCKET;\n"
                "                     default $XDG_RUNTIME_DIR/microsandbox/imaged.sock)\n"
                "  --config FILE      JSON configuration (env MSB_IMAGED_CONFIG;\n"
                "                     default $XDG_CONFIG_HOME/microsandbox/imaged.json)\n"
                "  --log-level LEVEL  error, warning, notice, info (default) or debug\n"
                "  --exit-idle SECS   when socket-activated, exit after SECS without clients\n"
                "  -h, --help         show this help\n"
                "  --version          show the version\n");
}

int options_parse(int argc, char **argv, Options *o) {
        enum { OPT_STORE = 256, OPT_SOCKET, OPT_CONFIG, OPT_LOG_LEVEL, OPT_EXIT_IDLE, OPT_VERSION };
        static const struct option longopts[] = {
                { "store", required_argument, NULL, OPT_STORE },
                { "socket", required_argument, NULL, OPT_SOCKET },
                { "config", required_argument, NULL, OPT_CONFIG },
                { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
                { "exit-idle", required_argument, NULL, OPT_EXIT_IDLE },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, OPT_VERSION },
                {},
        };
        int c;

        *o = (Options) { .log_level = LOG_LEVEL_INFO };
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0)
                switch (c) {
                case OPT_STORE:
                        free(o->store);
                        o->store = strdup(optarg);
                        break;
                case OPT_SOCKET:
                        free(o->socket);
                        o->socket = strdup(optarg);
                        break;
                case OPT_CONFIG:
                        free(o->config);
                        o->config = strdup(optarg);
                        o->config_explicit = true;
                        break;
                case OPT_LOG_LEVEL:
                        if (log_level_from_string(optarg, &o->log_level) < 0) {
                                fprintf(stderr, "msb-imaged: unknown log level '%s'\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case OPT_EXIT_IDLE: {
                        char *end;
                        unsigned long v = strtoul(optarg, &end, 10);
                        if (!*optarg || *end || v == 0 || v > OPTIONS_EXIT_IDLE_MAX_SEC) {
                                fprintf(stderr, "msb-imaged: --exit-idle takes a number of seconds\n");
                                return -EINVAL;
                        }
                        o->exit_idle_sec = (unsigned) v;
                        break;
                }
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case OPT_VERSION:
                        printf("msb-imaged %s\n", MSB_VERSION);
                        exit(EXIT_SUCCESS);
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "msb-imaged: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }

        if (!o->store)
                o->store = path_from_env_or("MSB_IMAGED_STORE", "XDG_DATA_HOME", "microsandbox/images",
                                            ".local/share/microsandbox/images");
        if (!o->socket)
                o->socket = default_socket_path();
        if (!o->config) {
                const char *env = getenv("MSB_IMAGED_CONFIG");
                o->config_explicit = env && *env;
                o->config = path_from_env_or("MSB_IMAGED_CONFIG", "XDG_CONFIG_HOME", "microsandbox/imaged.json",
                                             ".config/microsandbox/imaged.json");
        }
        if (!o->store) {
                fprintf(stderr, "msb-imaged: no store: set --store, MSB_IMAGED_STORE, XDG_DATA_HOME or HOME\n");
                return -EINVAL;
        }
        return 0;
}

/* The configuration: absent is fine unless named explicitly; broken never is. */
int options_load_config(const Options *o, json_t **ret, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        json_error_t jerr;
        json_t *config;
        size_t size;
        int r;

        if (!o->config) {
                *ret = json_object();
                return *ret ? 0 : -ENOMEM;
        }
        r = read_file_bounded(o->config, OPTIONS_CONFIG_MAX_BYTES, &data, &size);
        if (r == -ENOENT && !o->config_explicit) {
                *ret = json_object();
                return *ret ? 0 : -ENOMEM;
        }
        if (r == -EFBIG)
                return msb_error_set(err, r, PROTO_ERROR_INVALID_PARAMS,
                                     "cannot read the configuration %s: it is larger than %zu bytes", o->config,
                                     OPTIONS_CONFIG_MAX_BYTES);
        if (r < 0)
                return msb_error_set(err, r, PROTO_ERROR_INVALID_PARAMS, "cannot read the configuration %s: %s",
                                     o->config, strerror(-r));
        config = json_loadb(data, size, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(config)) {
                json_decref(config);
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS,
                                     "%s:%d:%d: the configuration is not a JSON object: %s", o->config, jerr.line,
                                     jerr.column, config ? "it is another JSON value" : jerr.text);
        }
        *ret = config;
        return 0;
}

/* Appends sep (unless *s is empty) and a formatted piece to *s. */
static int changes_add(char **s, const char *sep, const char *fmt, ...) _printf_(3, 4);
static int changes_add(char **s, const char *sep, const char *fmt, ...) {
        _cleanup_free_ char *piece = NULL;
        char *joined;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&piece, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        if (asprintf(&joined, "%s%s%s", *s ?: "", *s ? sep : "", piece) < 0)
                return -ENOMEM;
        free(*s);
        *s = joined;
        return 0;
}

/* The hosts of "registries" added, removed or changed, by name. */
static int registries_changes(const json_t *old, const json_t *new, char **ret) {
        _cleanup_free_ char *list = NULL;
        const char *host;
        json_t *v;
        int r = 0;

        json_object_foreach((json_t *) new, host, v) {
                const json_t *was = json_object_get(old, host);

                if (!was)
                        r = changes_add(&list, ", ", "%s added", host);
                else if (!json_equal((json_t *) was, v))
                        r = changes_add(&list, ", ", "%s changed", host);
                if (r < 0)
                        return r;
        }
        json_object_foreach((json_t *) old, host, v)
                if (!json_object_get(new, host) && (r = changes_add(&list, ", ", "%s removed", host)) < 0)
                        return r;
        *ret = TAKE_PTR(list);
        return 0;
}

static int key_changes(const char *key, const json_t *was, const json_t *now, char **s) {
        _cleanup_free_ char *hosts = NULL;
        int r;

        if (was && now && json_equal((json_t *) was, (json_t *) now))
                return 0;
        if (streq(key, "registries") && (!was || json_is_object(was)) && (!now || json_is_object(now))) {
                r = registries_changes(was, now, &hosts);
                return r < 0 ? r : changes_add(s, "; ", "registries: %s", hosts ?: "changed");
        }
        if (json_is_integer(was) && json_is_integer(now))
                return changes_add(s, "; ", "%s: %" JSON_INTEGER_FORMAT " -> %" JSON_INTEGER_FORMAT, key,
                                   json_integer_value(was), json_integer_value(now));
        return changes_add(s, "; ", "%s: %s", key, !was ? "added" : !now ? "removed" : "changed");
}

int options_config_changes(const json_t *old, const json_t *new, char **ret) {
        _cleanup_free_ char *s = NULL;
        const char *key;
        json_t *v;
        int r;

        json_object_foreach((json_t *) new, key, v) {
                r = key_changes(key, json_object_get(old, key), v, &s);
                if (r < 0)
                        return r;
        }
        json_object_foreach((json_t *) old, key, v)
                if (!json_object_get(new, key)) {
                        r = key_changes(key, v, NULL, &s);
                        if (r < 0)
                                return r;
                }
        *ret = TAKE_PTR(s);
        return 0;
}
