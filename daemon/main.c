/* SPDX-License-Identifier: Apache-2.0 */

/*
 * msb-imaged: owns the image store and serves it over JSON-RPC on a Unix
 * socket. This file is the edge: command line, configuration, signals,
 * start-up and shutdown; everything else is in the modules.
 */

#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "activation.h"
#include "daemon.h"
#include "log.h"
#include "pull.h"
#include "server.h"

/* Worker threads for blocking calls (loads, prunes, inspects). A handful of
 * slow loads must never take every thread from the quick calls. */
#define DAEMON_WORKER_THREADS "16"
/* How long a shutdown waits for work in flight before it abandons it. */
#define DAEMON_SHUTDOWN_GRACE_MS 30000
#define DAEMON_CONFIG_MAX_BYTES ((size_t) (1 * MiB))

typedef struct Options {
        char *store;
        char *socket;
        char *config;
        bool config_explicit;
        LogLevel log_level;
        unsigned exit_idle_sec;
} Options;

static void options_done(Options *o) {
        free(o->store);
        free(o->socket);
        free(o->config);
        *o = (Options) {};
}

static Daemon daemon_ctx;
static Server *server;
static Rpc *rpc;
static uv_signal_t sig_term, sig_int, sig_pipe;
static uv_timer_t shutdown_timer, idle_timer;
static bool shutting_down, socket_activated;
static unsigned exit_idle_sec;

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

static int parse_options(int argc, char **argv, Options *o) {
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
                        if (!*optarg || *end || v == 0 || v > 86400 * 365) {
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
static int load_config(const Options *o, json_t **ret) {
        _cleanup_free_ char *data = NULL;
        json_error_t jerr;
        size_t size;
        int r;

        if (!o->config) {
                *ret = json_object();
                return 0;
        }
        r = read_file_bounded(o->config, DAEMON_CONFIG_MAX_BYTES, &data, &size);
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

static void close_walk_cb(uv_handle_t *h, void *arg) {
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

/* Ends the loop once no call is in flight (or the grace period is over). */
static void shutdown_check(uv_timer_t *t) {
        if (rpc_in_flight(rpc) > 0 && now_monotonic_ms() - (uint64_t) (uintptr_t) t->data < DAEMON_SHUTDOWN_GRACE_MS)
                return;
        if (rpc_in_flight(rpc) > 0)
                log_warning("abandoning %u call(s) still in flight", rpc_in_flight(rpc));
        server_close_connections(server);
        if (daemon_ctx.pull)
                pull_manager_shutdown(daemon_ctx.pull);
        uv_stop(t->loop);
}

static void begin_shutdown(const char *why) {
        if (shutting_down)
                return;
        shutting_down = true;
        log_info("%s: shutting down", why);
        (void) sd_notify(0, "STOPPING=1");
        rpc_shutdown(rpc);
        store_cancel(daemon_ctx.store);
        server_stop_listening(server);
        if (daemon_ctx.pull)
                pull_manager_shutdown(daemon_ctx.pull);
        shutdown_timer.data = (void *) (uintptr_t) now_monotonic_ms();
        uv_timer_start(&shutdown_timer, shutdown_check, 0, 50);
}

static void on_signal(uv_signal_t *h, int signum) {
        if (signum == SIGPIPE)
                return;
        begin_shutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_idle_timeout(uv_timer_t *t) {
        if (server_n_connections(server) == 0 && rpc_in_flight(rpc) == 0)
                begin_shutdown("idle");
}

static void on_server_idle(void *userdata) {
        if (socket_activated && exit_idle_sec > 0 && !shutting_down)
                uv_timer_start(&idle_timer, on_idle_timeout, (uint64_t) exit_idle_sec * 1000, 0);
}

int main(int argc, char **argv) {
        _cleanup_(store_freep) Store *store = NULL;
        json_auto_t *config = NULL;
        _cleanup_(msb_error_clear) MsbError err = {};
        _cleanup_(options_done) Options o = {};
        int listen_fd = -EBADF, r;
        uv_loop_t *loop;

        log_setup();
        if (parse_options(argc, argv, &o) < 0)
                return 2;
        log_set_max_level(o.log_level);
        exit_idle_sec = o.exit_idle_sec;

        if (!getenv("UV_THREADPOOL_SIZE"))
                setenv("UV_THREADPOOL_SIZE", DAEMON_WORKER_THREADS, 0);
        signal(SIGPIPE, SIG_IGN);

        /* The passed socket first: a broken activation never opens the store,
         * and fd 3 is adopted before any file of ours could take its number. */
        r = activation_listen_fd(&listen_fd);
        if (r < 0) {
                log_error("cannot use the socket passed by the service manager: %s", strerror(-r));
                return EXIT_FAILURE;
        }
        socket_activated = r > 0;
        if (socket_activated) {
                free(o.socket);
                o.socket = NULL;
                (void) activation_socket_path(listen_fd, &o.socket);
        }

        if (load_config(&o, &config) < 0)
                return EXIT_FAILURE;
        /* A configuration that names a field wrongly is refused before the store is touched. */
        r = pull_config_check(config, &err);
        if (r < 0) {
                log_error("%s", err.message);
                fprintf(stderr, "msb-imaged: %s\n", err.message);
                return EXIT_FAILURE;
        }

        r = store_open(o.store, &store, &err);
        if (r < 0) {
                log_error("cannot open the store %s: %s", o.store, err.message);
                fprintf(stderr, "msb-imaged: %s\n", err.message);
                return EXIT_FAILURE;
        }
        const StoreSweepStats *sweep = store_sweep_stats(store);
        if (sweep->tmp_removed || sweep->files_removed || sweep->rows_dropped)
                log_notice("swept the store: %u temporary file(s), %u file(s) without index rows, %u broken row(s)",
                           sweep->tmp_removed, sweep->files_removed, sweep->rows_dropped);


        loop = uv_default_loop();
        daemon_ctx = (Daemon) {
                .loop = loop,
                .store = store,
                .store_path = (char *) store_path(store),
                .socket_path = o.socket,
                .started_at_ms = now_ms(),
                .started_monotonic_ms = now_monotonic_ms(),
        };

        r = pull_manager_new(loop, store, config, &daemon_ctx.pull);
        if (r < 0) {
                log_error("cannot set up registry pulls: %s", strerror(-r));
                return EXIT_FAILURE;
        }

        r = rpc_new(loop, daemon_methods, daemon_n_methods, &daemon_ctx, &rpc, &err);
        if (r < 0) {
                log_error("%s", err.message);
                return EXIT_FAILURE;
        }
        r = server_new(loop, rpc, socket_activated ? NULL : o.socket, socket_activated ? listen_fd : -1, &server, &err);
        if (r < 0) {
                log_error("%s", err.message);
                fprintf(stderr, "msb-imaged: %s\n", err.message);
                return EXIT_FAILURE;
        }
        server_set_idle_callback(server, on_server_idle, NULL);

        uv_signal_init(loop, &sig_term);
        uv_signal_init(loop, &sig_int);
        uv_signal_init(loop, &sig_pipe);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        uv_signal_start(&sig_pipe, on_signal, SIGPIPE);
        uv_timer_init(loop, &shutdown_timer);
        uv_timer_init(loop, &idle_timer);
        on_server_idle(NULL);

        log_info("msb-imaged %s serving store %s on %s%s", MSB_VERSION, store_path(store), o.socket ?: "(passed socket)",
                 socket_activated ? " (socket-activated)" : "");
        (void) sd_notifyf(0, "READY=1\nSTATUS=Serving %s", store_path(store));

        uv_run(loop, UV_RUN_DEFAULT);

        /* Close every handle and let the loop run their close callbacks, so
         * the loop itself closes clean. */
        daemon_ctx.pull = pull_manager_free(daemon_ctx.pull);
        uv_walk(loop, close_walk_cb, NULL);
        /* We are on our way out: a further SIGTERM (a service manager's
         * second ask) must not kill us while work in flight ends and the
         * store closes. Closing libuv's signal handles (just now, in
         * uv_close) restored the default action, so ignore them from here. */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        uv_run(loop, UV_RUN_DEFAULT);
        r = uv_loop_close(loop);
        if (r < 0)
                log_warning("the event loop did not close clean: %s", uv_strerror(r));

        rpc = rpc_free(rpc);
        server = server_free(server);
        log_info("stopped");
        return EXIT_SUCCESS;
}
