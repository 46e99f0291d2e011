/* SPDX-License-Identifier: Apache-2.0 */

/*
 * msb-imaged: owns the image store and serves it over JSON-RPC on a Unix
 * socket. This file is the edge: the daemon object that owns the loop and
 * the modules on it, signals, start-up and shutdown. The command line and
 * the configuration file are options.c; everything else is in the layers.
 */

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include "activation.h"
#include "daemon.h"
#include "events.h"
#include "log.h"
#include "options.h"
#include "pull.h"
#include "server.h"

/* Worker threads for blocking calls (loads, prunes, inspects). A handful of
 * slow loads must never take every thread from the quick calls. */
#define DAEMON_WORKER_THREADS "16"
/* malloc arenas: the loop thread's and one the workers share. glibc gives
 * each thread that allocates at once an arena of its own (up to 8 per core)
 * and keeps the pages a freed layer tree leaves in each: 100 cycles of
 * load, remove and prune of a 20 MB image grew the daemon's anonymous
 * memory from 7 to 21 MiB with the default, and held it at 8 MiB with two
 * (bench/memory). The workers spend their time in decompression and I/O,
 * not in malloc, so sharing one arena costs them no measurable time.
 * MALLOC_ARENA_MAX in the environment still decides when set. */
#define DAEMON_MALLOC_ARENAS 2
/* File descriptors kept free of connections: the store's index (two
 * connections of three files each, the lock), the listener and the loop's
 * own, RPC_WORKER_SLOTS loads of a dozen each (source, blobs, temp files,
 * pipes) and the pulls' sockets, pipes and temp files, with room to spare. */
#define DAEMON_FD_RESERVE 256U
/* Connections served however low the open-file limit is. */
#define DAEMON_CONNECTIONS_MIN 16U
/* How long a shutdown waits for work in flight before it abandons it. */
#define DAEMON_SHUTDOWN_GRACE_MS 30000
/* How often a shutdown looks whether the calls in flight have ended (ms). */
#define DAEMON_SHUTDOWN_POLL_MS 50

/* The signals the loop handles. SIGPIPE is ignored for the whole process
 * instead: a client that hung up is an error on our write to it, and no
 * handle of ours has to outlive the loop to keep it ignored. */
static const int msb_daemon_signals[] = { SIGTERM, SIGINT, SIGHUP };

/*
 * The daemon: its loop and everything on it. Each module closes the libuv
 * handles it owns: the server its listener and connections, the pull
 * manager its curl glue, pipes and helper processes, and this object its
 * signals and timers.
 * So the loop closes at exit without anybody closing handles blindly.
 */
typedef struct MsbDaemon {
        uv_loop_t loop;
        bool loop_open;
        const Options *options; /* main's: the configuration file to read again at SIGHUP */
        Store *store;
        StoreReader *reader;   /* the loop thread's read connection (this thread runs the loop) */
        json_t *config;        /* the configuration in force */
        char *socket_path;     /* the socket served, as system.info reports it */
        RpcLoopContext ctx;    /* what the loop's handlers see; ctx.pull is owned here */
        RpcWorkerContext worker_ctx; /* what the workers' handlers see */
        unsigned connections_max;    /* sized from RLIMIT_NOFILE at start */
        Rpc *rpc;
        Server *server;
        EventHub *events;      /* ctx.events; freed after the store that publishes to it */
        uv_signal_t signals[ELEMENTSOF(msb_daemon_signals)];
        size_t n_signals;      /* initialised, in the order of msb_daemon_signals */
        uv_timer_t shutdown_timer, idle_timer;
        bool timers_open;
        uint64_t shutdown_started_ms;
        unsigned exit_idle_sec;
        bool socket_activated;
        bool shutting_down;
} MsbDaemon;

/* Ends the loop once no call is in flight (or the grace period is over). */
static void msb_daemon_shutdown_check(uv_timer_t *t) {
        MsbDaemon *d = t->data;
        unsigned in_flight = rpc_in_flight(d->rpc);

        if (in_flight > 0 && now_monotonic_ms() - d->shutdown_started_ms < DAEMON_SHUTDOWN_GRACE_MS)
                return;
        if (in_flight > 0)
                log_warning("abandoning %u call(s) still in flight", in_flight);
        server_close_connections(d->server);
        pull_manager_shutdown(d->ctx.pull);
        uv_stop(t->loop);
}

static void msb_daemon_begin_shutdown(MsbDaemon *d, const char *why) {
        if (d->shutting_down)
                return;
        d->shutting_down = true;
        log_info("%s: shutting down", why);
        (void) sd_notifyf(0, "STOPPING=1\nSTATUS=Stopping (%s)", why);
        rpc_shutdown(d->rpc);
        store_cancel(d->store);
        server_stop_listening(d->server);
        pull_manager_shutdown(d->ctx.pull);
        d->shutdown_started_ms = now_monotonic_ms();
        uv_timer_start(&d->shutdown_timer, msb_daemon_shutdown_check, 0, DAEMON_SHUTDOWN_POLL_MS);
}

static int msb_daemon_apply_store_config(MsbDaemon *d, const json_t *config, MsbError *err);

/*
 * SIGHUP: the configuration file is read again. The registries (and the
 * Docker config's credentials) apply to every request sent from now on,
 * transfers in flight go on; the store's disk budget applies from the next
 * commit on. A file that cannot be read or does not check (either section)
 * keeps the configuration in force, and the log says why.
 */
static void msb_daemon_reload(MsbDaemon *d) {
        _cleanup_(msb_error_clear) MsbError err = {};
        _cleanup_(json_decrefp) json_t *config = NULL;
        _cleanup_free_ char *changes = NULL;
        int r;

        if (d->shutting_down) {
                log_notice("SIGHUP: shutting down; the configuration is not read again");
                return;
        }
        /* The service manager's reload (ExecReload= sends SIGHUP) waits for READY=1. */
        (void) sd_notify(0, "RELOADING=1");
        StoreBudget budget;
        r = options_load_config(d->options, &config, &err);
        /* Both sections are checked before either applies. */
        if (r >= 0)
                r = store_budget_parse(config, &budget, &err);
        if (r >= 0)
                r = pull_manager_reconfigure(d->ctx.pull, config, &err);
        if (r >= 0)
                r = msb_daemon_apply_store_config(d, config, &err);
        (void) sd_notify(0, "READY=1");
        if (r < 0) {
                log_warning("SIGHUP: keeping the configuration in force: %s", err.set ? err.message : strerror(-r));
                return;
        }
        if (options_config_changes(d->config, config, &changes) < 0)
                changes = strdup("(out of memory while comparing)");
        log_notice("SIGHUP: read the configuration %s again: %s", d->options->config ?: "(none)",
                   changes ?: "nothing changed");
        json_decref(d->config);
        d->config = TAKE_PTR(config);
}

static void msb_daemon_on_signal(uv_signal_t *h, int signum) {
        MsbDaemon *d = h->data;

        /* SIGHUP must never end the daemon, as its default action would. */
        if (signum == SIGHUP)
                return msb_daemon_reload(d);
        msb_daemon_begin_shutdown(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void msb_daemon_on_idle_timeout(uv_timer_t *t) {
        MsbDaemon *d = t->data;

        if (server_n_connections(d->server) == 0 && rpc_in_flight(d->rpc) == 0)
                msb_daemon_begin_shutdown(d, "idle");
}

/* The server's last connection closed: --exit-idle counts from here. */
static void msb_daemon_on_server_idle(void *userdata) {
        MsbDaemon *d = userdata;

        if (d->socket_activated && d->exit_idle_sec > 0 && !d->shutting_down)
                uv_timer_start(&d->idle_timer, msb_daemon_on_idle_timeout, (uint64_t) d->exit_idle_sec * 1000, 0);
}

static int msb_daemon_open_handles(MsbDaemon *d) {
        int r;

        uv_timer_init(&d->loop, &d->shutdown_timer);
        uv_timer_init(&d->loop, &d->idle_timer);
        d->shutdown_timer.data = d->idle_timer.data = d;
        d->timers_open = true;

        for (size_t i = 0; i < ELEMENTSOF(msb_daemon_signals); i++) {
                r = uv_signal_init(&d->loop, &d->signals[i]);
                if (r < 0)
                        return r;
                d->n_signals++;
                d->signals[i].data = d;
                r = uv_signal_start(&d->signals[i], msb_daemon_on_signal, msb_daemon_signals[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void msb_daemon_close_handles(MsbDaemon *d) {
        for (size_t i = 0; i < d->n_signals; i++)
                uv_close((uv_handle_t *) &d->signals[i], NULL);
        d->n_signals = 0;
        /* We are on our way out: a further SIGTERM (a service manager's
         * second ask) must not kill us while work in flight ends and the
         * store closes. Closing libuv's signal handles (just now, in
         * uv_close) restored the default actions, so ignore them from here. */
        for (size_t i = 0; i < ELEMENTSOF(msb_daemon_signals); i++)
                signal(msb_daemon_signals[i], SIG_IGN);

        if (d->timers_open) {
                uv_close((uv_handle_t *) &d->shutdown_timer, NULL);
                uv_close((uv_handle_t *) &d->idle_timer, NULL);
                d->timers_open = false;
        }
}

static void msb_daemon_log_open_handle(uv_handle_t *h, void *arg) {
        log_error("a %s handle is still open at exit%s", uv_handle_type_name(uv_handle_get_type(h)),
                  uv_is_closing(h) ? " (closing)" : "");
}

/* Stops everything and releases it; on the way out of a daemon that ran
 * and of one that failed to start alike. */
static void msb_daemon_done(MsbDaemon *d) {
        int r;

        if (d->loop_open) {
                if (d->server) {
                        server_set_idle_callback(d->server, NULL, NULL);
                        server_stop_listening(d->server);
                        server_close_connections(d->server);
                }
                d->ctx.pull = pull_manager_free(d->ctx.pull);
                event_hub_close(d->events);
                rpc_close(d->rpc);
                msb_daemon_close_handles(d);
                /* Runs the close callbacks, and the worker jobs of abandoned
                 * calls to their end. */
                uv_run(&d->loop, UV_RUN_DEFAULT);
                r = uv_loop_close(&d->loop);
                if (r < 0) {
                        /* A module left a handle open: name it, to find whose. */
                        uv_walk(&d->loop, msb_daemon_log_open_handle, NULL);
                        log_error("the event loop did not close clean: %s", uv_strerror(r));
                }
                d->loop_open = false;
        }
        d->rpc = rpc_free(d->rpc);
        d->server = server_free(d->server);
        d->reader = store_reader_free(d->reader);
        d->store = store_free(d->store);
        d->events = event_hub_free(d->events);
        json_decref(d->config);
        d->config = NULL;
        free(d->socket_path);
        d->socket_path = NULL;
}

/* The socket passed by a service manager, if any: taken before any file of
 * ours is opened, so that fd 3 is still the one passed, and before the store
 * is touched, so that a broken activation never opens it. */
static int msb_daemon_take_passed_socket(MsbDaemon *d, int *ret_fd) {
        int fd = -EBADF, r;

        r = activation_listen_fd(&fd);
        if (r < 0) {
                log_error("cannot use the socket passed by the service manager: %s", strerror(-r));
                return r;
        }
        d->socket_activated = r > 0;
        if (d->socket_activated)
                (void) activation_socket_path(fd, &d->socket_path);
        *ret_fd = fd;
        return 0;
}

/* The "store" section of a configuration: its disk budget, applied to the
 * open store (a reload of the configuration can call this too). A section
 * that is wrong changes nothing. */
static int msb_daemon_apply_store_config(MsbDaemon *d, const json_t *config, MsbError *err) {
        StoreBudget budget;
        uint64_t keep_free;
        int r;

        r = store_budget_parse(config, &budget, err);
        if (r < 0)
                return r;
        store_set_budget(d->store, &budget);
        if (budget.max_bytes > 0)
                log_info("disk budget: %" PRIu64 " bytes, evicting down to %" PRIu64, budget.max_bytes,
                         budget.low_bytes);
        if (store_keep_free_bytes(d->store, &keep_free) >= 0)
                log_info("loads and pulls keep %" PRIu64 " bytes free on the store's filesystem%s", keep_free,
                         budget.keep_free_bytes == STORE_KEEP_FREE_DEFAULT ? " (the default: 15% of it, at most 4 GiB)"
                                                                           : " (store.keep_free_bytes)");
        return 0;
}

static int msb_daemon_open_store(MsbDaemon *d, const Options *o) {
        _cleanup_(msb_error_clear) MsbError err = {};
        const StoreSweepStats *sweep;
        StoreBudget budget;
        int r;

        /* A configuration that names a field wrongly is refused before the store is touched. */
        r = options_load_config(o, &d->config, &err);
        if (r < 0) {
                log_error("%s", err.message);
                return r;
        }
        r = pull_config_check(d->config, &err);
        if (r >= 0)
                r = store_budget_parse(d->config, &budget, &err);
        if (r < 0) {
                log_error("%s", err.message);
                fprintf(stderr, "msb-imaged: %s\n", err.message);
                return r;
        }

        r = store_open(o->store, &d->store, &err);
        if (r < 0) {
                log_error("cannot open the store %s: %s", o->store, err.message);
                fprintf(stderr, "msb-imaged: %s\n", err.message);
                return r;
        }
        /* This thread runs the loop: the reader is its own. */
        r = store_reader_new(d->store, &d->reader);
        if (r < 0) {
                log_error("cannot open the store's index for reading: %s", strerror(-r));
                return r;
        }
        r = msb_daemon_apply_store_config(d, d->config, &err);
        if (r < 0)
                return r;
        sweep = store_sweep_stats(d->store);
        if (sweep->tmp_removed || sweep->files_removed || sweep->rows_dropped)
                log_notice("swept the store: %u temporary file(s), %u file(s) without index rows, %u broken row(s)",
                           sweep->tmp_removed, sweep->files_removed, sweep->rows_dropped);
        return 0;
}

/* A change of the store, on the thread that made it: for the subscribers. */
static void msb_daemon_on_store_event(const StoreEvent *ev, void *userdata) {
        MsbDaemon *d = userdata;

        if (ev->type == STORE_EVENT_IMAGE_EVICTED)
                log_info("evicted %s (%s) to keep the store within its budget", ev->reference ?: "(no reference)",
                         ev->manifest_digest ?: "?");
        event_hub_publish(d->events, ev);
}

static void msb_daemon_on_budget(const StoreBudgetReport *rep, void *userdata) {
        log_info("the store took %" PRIu64 " bytes, over its budget of %" PRIu64 ": evicted %u reference(s) and %u "
                 "manifest(s), %" PRIu64 " bytes left",
                 rep->bytes_before, rep->budget.max_bytes, rep->images_evicted, rep->manifests_evicted,
                 rep->bytes_after);
        if (!rep->met)
                log_warning("the disk budget cannot be met: the store takes %" PRIu64 " bytes, more than its budget of "
                            "%" PRIu64 ", and what is left is pinned, held by loads or pulls in flight, or was stored "
                            "just now",
                            rep->bytes_after, rep->budget.max_bytes);
}

/* The modules on the loop, bottom up: events, pulls, the RPC layer, the server. */
static int msb_daemon_start_modules(MsbDaemon *d, int listen_fd) {
        _cleanup_(msb_error_clear) MsbError err = {};
        int r;

        r = event_hub_new(&d->loop, &d->events);
        if (r < 0) {
                log_error("cannot set up events: %s", strerror(-r));
                return r;
        }
        d->ctx.events = d->events;
        store_set_observer(d->store, &(StoreObserver) {
                                             .event = msb_daemon_on_store_event,
                                             .budget = msb_daemon_on_budget,
                                             .userdata = d,
                                     });

        r = pull_manager_new(&d->loop, d->store, d->config, &d->ctx.pull);
        if (r < 0) {
                log_error("cannot set up registry pulls: %s", strerror(-r));
                return r;
        }
        r = rpc_new(&d->loop, daemon_methods, daemon_n_methods, &d->ctx, &d->worker_ctx, &d->rpc, &err);
        if (r < 0) {
                log_error("%s", err.message);
                return r;
        }
        r = server_new(&d->loop, d->rpc, d->socket_activated ? NULL : d->socket_path,
                       d->socket_activated ? listen_fd : -1, &d->server, &err);
        if (r < 0) {
                log_error("%s", err.message);
                fprintf(stderr, "msb-imaged: %s\n", err.message);
                return r;
        }
        ServerLimits limits = server_limits_default();
        limits.connections = d->connections_max;
        server_set_limits(d->server, &limits);
        d->ctx.server = d->server;
        server_set_idle_callback(d->server, msb_daemon_on_server_idle, d);
        return 0;
}

/*
 * Raises the soft limit on open files to the hard one (Debian's default soft
 * limit of 1024 would let 1,010 idle clients starve the store of file
 * descriptors), then serves as many connections as the limit leaves room for
 * beside DAEMON_FD_RESERVE, at most the protocol's 1024: an accepted
 * connection can always reach the store.
 */
static unsigned msb_daemon_size_connections(void) {
        struct rlimit rl;
        uint64_t room;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return SERVER_CONNECTIONS_MAX;
        if (rl.rlim_cur < rl.rlim_max) {
                struct rlimit raised = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
                if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
                        rl = raised;
        }
        room = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t) rl.rlim_cur;
        room = room > DAEMON_FD_RESERVE + DAEMON_CONNECTIONS_MIN ? room - DAEMON_FD_RESERVE : DAEMON_CONNECTIONS_MIN;
        if (room < SERVER_CONNECTIONS_MAX)
                log_warning("open files are limited to %" PRIu64 " (RLIMIT_NOFILE): serving at most %" PRIu64
                            " connections instead of %u",
                            (uint64_t) rl.rlim_cur, room, SERVER_CONNECTIONS_MAX);
        return room < SERVER_CONNECTIONS_MAX ? (unsigned) room : SERVER_CONNECTIONS_MAX;
}

static int msb_daemon_start(MsbDaemon *d, const Options *o) {
        int listen_fd = -EBADF, r;

        r = msb_daemon_take_passed_socket(d, &listen_fd);
        if (r < 0)
                return r;
        if (!d->socket_activated) {
                d->socket_path = o->socket ? strdup(o->socket) : NULL;
                if (!d->socket_path) {
                        log_error("no socket path: out of memory");
                        return -ENOMEM;
                }
        }
        d->options = o;
        d->exit_idle_sec = o->exit_idle_sec;
        d->connections_max = msb_daemon_size_connections();

        r = msb_daemon_open_store(d, o);
        if (r < 0)
                return r;

        r = uv_loop_init(&d->loop);
        if (r < 0) {
                log_error("cannot set up the event loop: %s", uv_strerror(r));
                return r;
        }
        d->loop_open = true;
        d->ctx = (RpcLoopContext) {
                .reader = d->reader,
                .store_path = store_path(d->store),
                .socket_path = d->socket_path,
                .started_at_ms = now_ms(),
                .started_monotonic_ms = now_monotonic_ms(),
        };
        d->worker_ctx = (RpcWorkerContext) { .store = d->store };

        r = msb_daemon_start_modules(d, listen_fd);
        if (r < 0)
                return r;
        r = msb_daemon_open_handles(d);
        if (r < 0) {
                log_error("cannot handle signals: %s", uv_strerror(r));
                return r;
        }
        msb_daemon_on_server_idle(d);

        log_info("msb-imaged %s serving store %s on %s%s", MSB_VERSION, store_path(d->store),
                 d->socket_path ?: "(passed socket)", d->socket_activated ? " (socket-activated)" : "");
        (void) sd_notifyf(0, "READY=1\nSTATUS=Serving %s", store_path(d->store));
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(options_done) Options o = {};
        _cleanup_(msb_daemon_done) MsbDaemon d = {};

        log_setup();
        if (options_parse(argc, argv, &o) < 0)
                return 2;
        log_set_max_level(o.log_level);

        if (!getenv("UV_THREADPOOL_SIZE"))
                setenv("UV_THREADPOOL_SIZE", DAEMON_WORKER_THREADS, 0);
        if (!getenv("MALLOC_ARENA_MAX"))
                (void) mallopt(M_ARENA_MAX, DAEMON_MALLOC_ARENAS);
        signal(SIGPIPE, SIG_IGN);

        if (msb_daemon_start(&d, &o) < 0)
                return EXIT_FAILURE;
        uv_run(&d.loop, UV_RUN_DEFAULT);

        msb_daemon_done(&d);
        log_info("stopped");
        return EXIT_SUCCESS;
}
