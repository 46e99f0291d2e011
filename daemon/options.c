/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>

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
int options_load_config(const Options *o, json_t **ret) {
        _cleanup_free_ char *data = NULL;
        json_error_t jerr;
        size_t size;
        int r;

        if (!o->config) {
                *ret = json_object();
                return 0;
        }
        r = read_file_bounded(o->config, OPTIONS_CONFIG_MAX_BYTES, &data, &size);
        if (r == -ENOENT && !o->config_explicit) {
                *ret = json_object();
                return 0;
        }
        if (r < 0) {
                log_error("cannot read the configuration %s: %s", o->config, strerror(-r));
                return r;
        }
        *ret = json_loadb(data, size, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(*ret)) {
                log_error("%s:%d:%d: the configuration is not a JSON object: %s", o->config, jerr.line, jerr.column,
                          jerr.text);
                json_decref(*ret);
                return -EINVAL;
        }
        return 0;
}
