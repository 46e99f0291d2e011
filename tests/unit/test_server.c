/* SPDX-License-Identifier: Apache-2.0 */

/*
 * In-process tests of the server and the JSON-RPC dispatch (daemon/ipc/server.c,
 * daemon/ipc/rpc.c): a real libuv loop on a thread serving a real Unix socket,
 * with a method table of proto/'s names whose handlers run in all three
 * modes (inline, worker, deferred). A client in the test writes raw bytes
 * and reads NDJSON. Running here, under the sanitizers, the connection and
 * call lifetimes (batches, notifications, deferred completion, hang-ups)
 * are checked for memory errors as well as for their answers.
 */

#include <check.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "daemon.h"
#include "framing.h"
#include "rpc.h"
#include "server.h"

#define READ_TIMEOUT_MS 10000
/* How long the slow worker method takes: long enough to be sure an inline
 * call sent after it is answered first. */
#define SLOW_CALL_MS 1000

/* ---- the method table ---- */

/* Calls of system.info run so far (on the loop thread; read by the test's). */
static unsigned system_info_calls;
/* The loop the server runs on, for the deferred method's timer. */
static uv_loop_t *test_loop;

/* The reference param, first in every params struct that has one. */
typedef struct RefParams {
        const char *reference;
} RefParams;

static int m_system_info(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        __atomic_add_fetch(&system_info_calls, 1, __ATOMIC_SEQ_CST);
        *ret = json_pack("{s:i}", "pid", (int) getpid());
        return 0;
}

static int m_image_get(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const RefParams *p = params;
        *ret = json_pack("{s:s}", "reference", p->reference);
        return 0;
}

static int m_image_inspect(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const RefParams *p = params;
        /* Blocking work: runs on a worker thread. */
        usleep(SLOW_CALL_MS * 1000);
        *ret = json_pack("{s:b, s:s}", "slow", 1, "reference", p->reference);
        return 0;
}

static int m_image_remove(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const RefParams *p = params;
        msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND, "no cached image %s", p->reference);
        msb_error_add_data(err, "reference", json_string(p->reference));
        return -ENOENT;
}

static int m_failing(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret, MsbError *err) {
        /* Fails without saying why: the client still gets an internal error. */
        return -EIO;
}

typedef struct Deferred {
        uv_timer_t timer;
        RpcCall *call;
} Deferred;

static void deferred_close_cb(uv_handle_t *h) {
        free(h->data);
}

static void deferred_fire(uv_timer_t *t) {
        Deferred *d = t->data;
        json_t *id = rpc_call_id(d->call);

        /* Progress first, then the result, as image.pull does. */
        if (id)
                rpc_call_notify(d->call, "image.pull.progress",
                                json_pack("{s:O, s:s}", "id", id, "event", "resolving"));
        rpc_call_complete(d->call, json_pack("{s:s}", "status", "done"), NULL);
        uv_close((uv_handle_t *) &d->timer, deferred_close_cb);
}

static int m_image_pull(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        Deferred *d = calloc(1, sizeof(*d));

        /* Event-driven: completes from a timer on the loop, as a pull does
         * from its transfers. */
        if (!d)
                return -ENOMEM;
        d->call = call;
        d->timer.data = d;
        uv_timer_init(test_loop, &d->timer);
        uv_timer_start(&d->timer, deferred_fire, 20, 0);
        return RPC_PENDING;
}

static int m_null(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        *ret = json_null();
        return 0;
}

/* Every method of proto/ with the daemon's param tables: the interesting
 * ones above, the rest answer null on the loop. */
static RpcMethod *test_methods(size_t *ret_n) {
        RpcMethod *table = calloc(daemon_n_methods, sizeof(RpcMethod));

        ck_assert_ptr_nonnull(table);
        for (size_t i = 0; i < daemon_n_methods; i++) {
                RpcMethod e = daemon_methods[i];
                const char *name = e.name;

                e.mode = RPC_INLINE;
                e.on_loop = m_null;
                e.on_worker = NULL;
                if (streq(name, "system.info"))
                        e.on_loop = m_system_info;
                else if (streq(name, "image.get"))
                        e.on_loop = m_image_get;
                else if (streq(name, "image.inspect"))
                        e = (RpcMethod) { name, RPC_WORKER, NULL, m_image_inspect, e.fields, e.params_size };
                else if (streq(name, "image.remove"))
                        e = (RpcMethod) { name, RPC_WORKER, NULL, m_image_remove, e.fields, e.params_size };
                else if (streq(name, "image.prune"))
                        e = (RpcMethod) { name, RPC_WORKER, NULL, m_failing, e.fields, e.params_size };
                else if (streq(name, "image.pull"))
                        e = (RpcMethod) { name, RPC_DEFERRED, m_image_pull, NULL, e.fields, e.params_size };
                table[i] = e;
        }
        *ret_n = daemon_n_methods;
        return table;
}

/* ---- the server on its thread ---- */

typedef struct TestServer {
        char dir[64];
        char socket[128];
        uv_loop_t loop;
        uv_async_t stop;
        uv_async_t shutdown;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool shut_down;
        Rpc *rpc;
        Server *server;
        RpcMethod *methods;
        size_t n_methods;
        pthread_t thread;
} TestServer;

static void close_walk_cb(uv_handle_t *h, void *arg) {
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

static void on_stop(uv_async_t *a) {
        TestServer *ts = a->data;
        server_stop_listening(ts->server);
        server_close_connections(ts->server);
        uv_stop(&ts->loop);
}

static void on_shutdown(uv_async_t *a) {
        TestServer *ts = a->data;
        rpc_shutdown(ts->rpc);
        pthread_mutex_lock(&ts->lock);
        ts->shut_down = true;
        pthread_cond_broadcast(&ts->cond);
        pthread_mutex_unlock(&ts->lock);
}

/* What SIGTERM starts in the daemon, on the loop thread; returns once done. */
static void test_server_shutdown(TestServer *ts) {
        ck_assert_int_eq(uv_async_send(&ts->shutdown), 0);
        pthread_mutex_lock(&ts->lock);
        while (!ts->shut_down)
                pthread_cond_wait(&ts->cond, &ts->lock);
        pthread_mutex_unlock(&ts->lock);
}

static void *server_thread(void *userdata) {
        TestServer *ts = userdata;
        uv_run(&ts->loop, UV_RUN_DEFAULT);
        return NULL;
}

/* Starts the server with the protocol's limits, or lower answer limits. */
static void test_server_start_limits(TestServer *ts, const ServerLimits *limits) {
        MsbError err = {};
        int r;

        *ts = (TestServer) {};
        snprintf(ts->dir, sizeof(ts->dir), "/tmp/msb-test-server-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(ts->dir));
        snprintf(ts->socket, sizeof(ts->socket), "%s/run/imaged.sock", ts->dir);
        ck_assert_int_eq(uv_loop_init(&ts->loop), 0);
        ts->methods = test_methods(&ts->n_methods);
        test_loop = &ts->loop;
        r = rpc_new(&ts->loop, ts->methods, ts->n_methods, NULL, NULL, &ts->rpc, &err);
        ck_assert_msg(r == 0, "rpc_new: %s", err.message);
        r = server_new(&ts->loop, ts->rpc, ts->socket, -1, &ts->server, &err);
        ck_assert_msg(r == 0, "server_new: %s", err.message);
        if (limits)
                server_set_limits(ts->server, limits);
        ck_assert_int_eq(uv_async_init(&ts->loop, &ts->stop, on_stop), 0);
        ts->stop.data = ts;
        ck_assert_int_eq(uv_async_init(&ts->loop, &ts->shutdown, on_shutdown), 0);
        ts->shutdown.data = ts;
        pthread_mutex_init(&ts->lock, NULL);
        pthread_cond_init(&ts->cond, NULL);
        ck_assert_int_eq(pthread_create(&ts->thread, NULL, server_thread, ts), 0);
}

static void test_server_start(TestServer *ts) {
        test_server_start_limits(ts, NULL);
}

static void test_server_stop(TestServer *ts) {
        ck_assert_int_eq(uv_async_send(&ts->stop), 0);
        ck_assert_int_eq(pthread_join(ts->thread, NULL), 0);
        /* As main.c does: close every handle, let the callbacks run, and the
         * loop closes clean. */
        uv_walk(&ts->loop, close_walk_cb, NULL);
        uv_run(&ts->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&ts->loop), 0);
        ck_assert_uint_eq(server_answer_bytes(ts->server), 0);
        ts->rpc = rpc_free(ts->rpc);
        ts->server = server_free(ts->server);
        free(ts->methods);
        pthread_mutex_destroy(&ts->lock);
        pthread_cond_destroy(&ts->cond);
        (void) rm_rf(ts->dir, NULL);
}

/* ---- the client ---- */

typedef struct Client {
        int fd;
        LineBuffer in;
} Client;

static void client_connect(const TestServer *ts, Client *c) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        ck_assert_uint_lt(strlen(ts->socket), sizeof(sa.sun_path));
        memcpy(sa.sun_path, ts->socket, strlen(ts->socket) + 1);
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(c->fd, 0);
        ck_assert_int_eq(connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        line_buffer_init(&c->in, 64 * MiB);
}

static void client_close(Client *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        line_buffer_done(&c->in);
}
#define _cleanup_client_ _cleanup_(client_close)

static void client_send(Client *c, const char *text) {
        ck_assert_int_eq(write_all(c->fd, text, strlen(text)), 0);
}

/* The next line from the server as JSON, or NULL at EOF or timeout. */
static json_t *client_read(Client *c, int timeout_ms) {
        for (;;) {
                char *line, buf[65536];
                size_t len;
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                ssize_t n;

                if (line_buffer_next(&c->in, &line, &len) > 0) {
                        json_error_t jerr;
                        json_t *msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
                        ck_assert_msg(msg, "the server sent invalid JSON: %s", jerr.text);
                        return msg;
                }
                if (poll(&p, 1, timeout_ms) <= 0)
                        return NULL;
                n = read(c->fd, buf, sizeof(buf));
                if (n <= 0)
                        return NULL;
                ck_assert_int_eq(line_buffer_append(&c->in, buf, (size_t) n), 0);
        }
}

static json_t *client_expect(Client *c) {
        json_t *msg = client_read(c, READ_TIMEOUT_MS);
        ck_assert_msg(msg, "no answer from the server");
        return msg;
}

/* True when the server closed the connection (EOF with nothing more). */
static bool client_eof(Client *c, int timeout_ms) {
        json_t *msg = client_read(c, timeout_ms);
        if (msg) {
                json_decref(msg);
                return false;
        }
        char b;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        return poll(&p, 1, 0) == 1 && read(c->fd, &b, 1) == 0;
}

static json_int_t error_code(json_t *resp) {
        json_t *e = json_object_get(resp, "error");
        ck_assert_msg(json_is_object(e), "not an error response");
        return json_integer_value(json_object_get(e, "code"));
}

static const char *error_name(json_t *resp) {
        return json_string_value(json_object_get(json_object_get(json_object_get(resp, "error"), "data"), "name"));
}

/* Checks that resp is the limit-exceeded error naming limit and max. */
static void expect_limit_error(json_t *resp, const char *limit, size_t max) {
        json_t *data = json_object_get(json_object_get(resp, "error"), "data");

        ck_assert_int_eq(error_code(resp), 1007);
        ck_assert_str_eq(error_name(resp), "limit-exceeded");
        ck_assert_str_eq(json_string_value(json_object_get(data, "limit")), limit);
        ck_assert_int_eq(json_integer_value(json_object_get(data, "max")), (json_int_t) max);
}

/* Checks that the connection's last line is the limit-exceeded error, id
 * null, naming limit and max, and that the server then hangs up. */
static void expect_last_limit_error(Client *c, const char *limit, size_t max) {
        json_auto_t *r = client_expect(c);

        ck_assert(json_is_object(r));
        ck_assert(json_is_null(json_object_get(r, "id")));
        expect_limit_error(r, limit, max);
        ck_assert(client_eof(c, READ_TIMEOUT_MS));
}

static json_int_t id_of(json_t *resp) {
        ck_assert(json_is_integer(json_object_get(resp, "id")));
        return json_integer_value(json_object_get(resp, "id"));
}

#define REQ(id, method, params) \
        "{\"jsonrpc\":\"2.0\",\"id\":" #id ",\"method\":\"" method "\",\"params\":" params "}"

/* ---- tests ---- */

START_TEST(test_request_response) {
        TestServer ts;
        _cleanup_client_ Client c = {};
        struct stat st;

        test_server_start(&ts);
        /* README "The store" (security): the socket is 0600 in a 0700 directory. */
        ck_assert_int_eq(stat(ts.socket, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_int_eq(st.st_mode & 0777, 0600);
        char dir[160];
        snprintf(dir, sizeof(dir), "%s/run", ts.dir);
        ck_assert_int_eq(stat(dir, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0700);

        client_connect(&ts, &c);
        client_send(&c, REQ(1, "system.info", "{}") "\n");
        json_auto_t *r = client_expect(&c);
        ck_assert_str_eq(json_string_value(json_object_get(r, "jsonrpc")), "2.0");
        ck_assert_int_eq(id_of(r), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r, "result"), "pid")), getpid());
        ck_assert_ptr_null(json_object_get(r, "error"));

        /* String ids come back as they were sent, params may be omitted. */
        client_send(&c, "{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"image.list\"}\n");
        json_auto_t *r2 = client_expect(&c);
        ck_assert_str_eq(json_string_value(json_object_get(r2, "id")), "abc");
        ck_assert(json_is_null(json_object_get(r2, "result")));
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_errors_keep_the_connection) {
        TestServer ts;
        _cleanup_client_ Client c = {};
        static const struct {
                const char *line;
                json_int_t code;
                const char *name;
        } cases[] = {
                { "{", -32700, "parse-error" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"image.get\",\"params\":{\"reference\":\"\xff\"}}", -32700,
                  "parse-error" },
                { "[]", -32600, "invalid-request" },
                { "42", -32600, "invalid-request" },
                { "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"image.list\"}", -32600, "invalid-request" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}", -32600, "invalid-request" },
                { "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"image.list\"}", -32600, "invalid-request" },
                { "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"image.list\",\"params\":5}", -32600, "invalid-request" },
                { REQ(1, "image.frobnicate", "{}"), -32601, "method-not-found" },
                { REQ(1, "image.get", "{}"), -32602, "invalid-params" },
                { REQ(1, "image.get", "[\"alpine\"]"), -32602, "invalid-params" },
                { REQ(1, "image.remove", "{\"reference\":\"alpine\"}"), 1001, "image-not-found" },
                { REQ(1, "image.prune", "{}"), -32603, "internal-error" },
        };

        test_server_start(&ts);
        client_connect(&ts, &c);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                client_send(&c, cases[i].line);
                client_send(&c, "\n");
                json_auto_t *r = client_expect(&c);
                ck_assert_msg(error_code(r) == cases[i].code, "%s: code %" JSON_INTEGER_FORMAT, cases[i].line,
                              error_code(r));
                ck_assert_str_eq(error_name(r), cases[i].name);
                ck_assert_str_eq(json_string_value(json_object_get(r, "jsonrpc")), "2.0");
                ck_assert_ptr_nonnull(json_object_get(r, "id"));

                /* The connection serves on. */
                client_send(&c, REQ(99, "image.list", "{}") "\n");
                json_auto_t *ok = client_expect(&c);
                ck_assert_int_eq(id_of(ok), 99);
        }

        /* data.parameter names the field; a handler's data comes through. */
        client_send(&c, REQ(5, "image.get", "{\"reference\":1}") "\n");
        json_auto_t *ip = client_expect(&c);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(ip, "error"), "data"),
                                                           "parameter")),
                         "reference");
        ck_assert_int_eq(id_of(ip), 5);
        client_send(&c, REQ(6, "image.remove", "{\"reference\":\"x\"}") "\n");
        json_auto_t *nf = client_expect(&c);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(nf, "error"), "data"),
                                                           "reference")),
                         "x");
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_notifications_and_blank_lines) {
        TestServer ts;
        _cleanup_client_ Client c = {};

        test_server_start(&ts);
        client_connect(&ts, &c);
        /* No answer to notifications, even failing ones, nor to blank lines;
         * the first answer is the request's. */
        client_send(&c, "{\"jsonrpc\":\"2.0\",\"method\":\"image.list\"}\n"
                        "{\"jsonrpc\":\"2.0\",\"method\":\"image.frobnicate\"}\n"
                        "{\"jsonrpc\":\"2.0\",\"method\":\"image.get\",\"params\":{}}\n"
                        "{\"jsonrpc\":\"2.0\",\"method\":\"image.inspect\",\"params\":{\"reference\":\"a\"}}\n"
                        "\n \r\n\t\n" REQ(7, "image.list", "{}") "\n");
        json_auto_t *r = client_expect(&c);
        ck_assert_int_eq(id_of(r), 7);
        /* Nothing else arrives, the worker notification included. */
        json_auto_t *none = client_read(&c, SLOW_CALL_MS * 2);
        ck_assert_ptr_null(none);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_batch) {
        TestServer ts;
        _cleanup_client_ Client c = {};

        test_server_start(&ts);
        client_connect(&ts, &c);
        /* JSON-RPC 2.0 section 6: one array of the responses, none for the
         * notification, invalid members answered in place; a worker call in
         * the batch delays the whole array. */
        client_send(&c, "[" REQ(1, "image.list", "{}") ","
                        "{\"jsonrpc\":\"2.0\",\"method\":\"image.list\"},"
                        REQ(2, "image.inspect", "{\"reference\":\"slow\"}") ","
                        "17,"
                        REQ(3, "image.get", "{\"reference\":\"fast\"}") "]\n");
        json_auto_t *r = client_expect(&c);
        ck_assert(json_is_array(r));
        ck_assert_uint_eq(json_array_size(r), 4);
        bool seen[4] = {};
        size_t i;
        json_t *item;
        json_array_foreach(r, i, item) {
                json_t *id = json_object_get(item, "id");
                if (json_is_null(id)) {
                        ck_assert_int_eq(error_code(item), -32600);
                        seen[0] = true;
                } else {
                        json_int_t n = json_integer_value(id);
                        ck_assert(n >= 1 && n <= 3 && !seen[n]);
                        seen[n] = true;
                }
        }
        ck_assert(seen[0] && seen[1] && seen[2] && seen[3]);

        /* A batch of notifications only has no answer at all. */
        client_send(&c, "[{\"jsonrpc\":\"2.0\",\"method\":\"image.list\"},"
                        "{\"jsonrpc\":\"2.0\",\"method\":\"image.inspect\",\"params\":{\"reference\":\"a\"}}]\n" REQ(
                                8, "image.list", "{}") "\n");
        json_auto_t *next = client_expect(&c);
        ck_assert(json_is_object(next));
        ck_assert_int_eq(id_of(next), 8);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_worker_does_not_block) {
        TestServer ts;
        _cleanup_client_ Client c = {}, other = {};
        uint64_t start;

        test_server_start(&ts);
        client_connect(&ts, &c);
        client_connect(&ts, &other);
        /* Pipelined on one connection: the slow worker call is answered
         * after the inline one sent behind it. */
        start = now_monotonic_ms();
        client_send(&c, REQ(1, "image.inspect", "{\"reference\":\"slow\"}") "\n" REQ(2, "image.list", "{}") "\n");
        json_auto_t *first = client_expect(&c);
        ck_assert_int_eq(id_of(first), 2);
        ck_assert_uint_lt(now_monotonic_ms() - start, SLOW_CALL_MS);

        /* Another connection is served meanwhile too. */
        client_send(&other, REQ(3, "system.info", "{}") "\n");
        json_auto_t *o = client_expect(&other);
        ck_assert_int_eq(id_of(o), 3);

        json_auto_t *second = client_expect(&c);
        ck_assert_int_eq(id_of(second), 1);
        ck_assert(json_is_true(json_object_get(json_object_get(second, "result"), "slow")));
        ck_assert_uint_ge(now_monotonic_ms() - start, SLOW_CALL_MS);
        client_close(&c);
        client_close(&other);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_deferred_with_progress) {
        TestServer ts;
        _cleanup_client_ Client c = {};

        test_server_start(&ts);
        client_connect(&ts, &c);
        client_send(&c, REQ(11, "image.pull", "{\"reference\":\"alpine\"}") "\n");
        json_auto_t *progress = client_expect(&c);
        ck_assert_str_eq(json_string_value(json_object_get(progress, "method")), "image.pull.progress");
        ck_assert_ptr_null(json_object_get(progress, "id"));
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(progress, "params"), "id")), 11);
        json_auto_t *result = client_expect(&c);
        ck_assert_int_eq(id_of(result), 11);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(result, "result"), "status")), "done");

        /* In a batch, the array waits for the deferred call. */
        client_send(&c, "[" REQ(12, "image.pull", "{\"reference\":\"alpine\"}") "," REQ(13, "image.list", "{}") "]\n");
        json_auto_t *p2 = client_expect(&c);
        ck_assert_str_eq(json_string_value(json_object_get(p2, "method")), "image.pull.progress");
        json_auto_t *batch = client_expect(&c);
        ck_assert_uint_eq(json_array_size(batch), 2);

        /* The caller hangs up before the deferred and the worker calls end:
         * they complete into the void, and the server serves on. */
        client_send(&c, REQ(14, "image.pull", "{\"reference\":\"alpine\"}") "\n" REQ(
                                15, "image.inspect", "{\"reference\":\"slow\"}") "\n");
        client_close(&c);
        /* The same inside a batch. */
        client_connect(&ts, &c);
        client_send(&c, "[" REQ(17, "image.pull", "{\"reference\":\"alpine\"}") "," REQ(
                                18, "image.inspect", "{\"reference\":\"slow\"}") "," REQ(19, "image.list", "{}") "]\n");
        client_close(&c);
        usleep(SLOW_CALL_MS * 1000 * 2);
        client_connect(&ts, &c);
        client_send(&c, REQ(16, "image.list", "{}") "\n");
        json_auto_t *after = client_expect(&c);
        ck_assert_int_eq(id_of(after), 16);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_line_limit) {
        TestServer ts;
        _cleanup_client_ Client c = {};
        _cleanup_free_ char *big = NULL;
        const size_t chunk = 1 * MiB;

        test_server_start(&ts);
        client_connect(&ts, &c);
        /* A request before the long line is answered as usual. */
        client_send(&c, REQ(1, "image.list", "{}") "\n");
        json_auto_t *ok = client_expect(&c);
        ck_assert_int_eq(id_of(ok), 1);

        /* 16 MiB and one byte without a newline: limit-exceeded naming the
         * limit, then the server hangs up. */
        big = malloc(chunk);
        ck_assert_ptr_nonnull(big);
        memset(big, ' ', chunk);
        big[0] = '[';
        for (size_t sent = 0; sent <= FRAMING_LINE_MAX_BYTES; sent += chunk) {
                size_t n = FRAMING_LINE_MAX_BYTES + 1 - sent < chunk ? FRAMING_LINE_MAX_BYTES + 1 - sent : chunk;
                if (write_all(c.fd, big, n) < 0)
                        break;
        }
        expect_last_limit_error(&c, "request_line_bytes", FRAMING_LINE_MAX_BYTES);
        client_close(&c);

        /* Other connections are unaffected. */
        client_connect(&ts, &c);
        client_send(&c, REQ(2, "image.list", "{}") "\n");
        json_auto_t *again = client_expect(&c);
        ck_assert_int_eq(id_of(again), 2);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_deep_nesting) {
        TestServer ts;
        _cleanup_client_ Client c = {};
        const size_t depth = 100000;
        _cleanup_free_ char *deep = malloc(depth + 2);

        test_server_start(&ts);
        client_connect(&ts, &c);
        ck_assert_ptr_nonnull(deep);
        memset(deep, '[', depth);
        deep[depth] = '\n';
        deep[depth + 1] = '\0';
        client_send(&c, deep);
        json_auto_t *r = client_expect(&c);
        ck_assert_int_eq(error_code(r), -32700);
        client_send(&c, REQ(3, "image.list", "{}") "\n");
        json_auto_t *ok = client_expect(&c);
        ck_assert_int_eq(id_of(ok), 3);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_half_close) {
        TestServer ts;
        _cleanup_client_ Client c = {};

        test_server_start(&ts);
        client_connect(&ts, &c);
        /* The last request without its newline, then EOF from the client:
         * both requests are answered (the slow one too), then the server closes. */
        client_send(&c, REQ(1, "image.inspect", "{\"reference\":\"slow\"}") "\n" REQ(2, "image.list", "{}"));
        ck_assert_int_eq(shutdown(c.fd, SHUT_WR), 0);
        json_auto_t *a = client_expect(&c), *b = client_expect(&c);
        ck_assert_int_eq(id_of(a) + id_of(b), 3);
        ck_assert(client_eof(&c, READ_TIMEOUT_MS));
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

/* A batch line of n system.info requests, ids 0 to n - 1. */
static char *system_info_batch(size_t n) {
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);

        ck_assert_ptr_nonnull(f);
        fputc('[', f);
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%s{\"jsonrpc\":\"2.0\",\"id\":%zu,\"method\":\"system.info\"}", i ? "," : "", i);
        fputs("]\n", f);
        ck_assert_int_eq(fclose(f), 0);
        return text;
}

/* An image.get request whose answer is about `bytes` long (it echoes the
 * reference). */
static char *image_get_line(int id, size_t bytes) {
        _cleanup_free_ char *ref = malloc(bytes + 1);
        char *line;

        ck_assert_ptr_nonnull(ref);
        memset(ref, 'r', bytes);
        ref[bytes] = '\0';
        ck_assert_int_ge(asprintf(&line, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"image.get\",\"params\":"
                                         "{\"reference\":\"%s\"}}",
                                  id, ref),
                         0);
        return line;
}

/* A batch line of n image.get requests (ids 1 to n) with answers of about
 * `bytes` each. */
static char *image_get_batch(int n, size_t bytes) {
        char *batch = NULL;

        for (int i = 1; i <= n; i++) {
                _cleanup_free_ char *get = image_get_line(i, bytes);
                char *next;
                ck_assert_int_ge(asprintf(&next, "%s%s%s%s", batch ?: "[", i > 1 ? "," : "", get, i == n ? "]\n" : ""),
                                 0);
                free(batch);
                batch = next;
        }
        return batch;
}

START_TEST(test_batch_member_limit) {
        TestServer ts;
        _cleanup_client_ Client c = {};
        _cleanup_free_ char *over = system_info_batch(RPC_BATCH_MEMBERS_MAX + 1);
        _cleanup_free_ char *at = system_info_batch(RPC_BATCH_MEMBERS_MAX);

        ck_assert_uint_eq(RPC_BATCH_MEMBERS_MAX, 1000);
        test_server_start(&ts);
        client_connect(&ts, &c);

        /* One member too many: one error, id null, and no member runs. */
        client_send(&c, over);
        json_auto_t *refused = client_expect(&c);
        ck_assert(json_is_object(refused));
        ck_assert(json_is_null(json_object_get(refused, "id")));
        expect_limit_error(refused, "batch_members", RPC_BATCH_MEMBERS_MAX);
        ck_assert_uint_eq(__atomic_load_n(&system_info_calls, __ATOMIC_SEQ_CST), 0);

        /* At the limit, every member runs and is answered, on the same connection. */
        client_send(&c, at);
        json_auto_t *all = client_expect(&c);
        ck_assert(json_is_array(all));
        ck_assert_uint_eq(json_array_size(all), RPC_BATCH_MEMBERS_MAX);
        ck_assert_uint_eq(__atomic_load_n(&system_info_calls, __ATOMIC_SEQ_CST), RPC_BATCH_MEMBERS_MAX);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

/* With a 4 KiB answer limit per connection: an answer over it is replaced by
 * an error for its id, and the connection goes on. */
START_TEST(test_answer_limit_replaces_an_answer) {
        const ServerLimits limits = { .connections = SERVER_CONNECTIONS_MAX, .connection_answer_bytes = 4 * KiB, .answer_bytes = 1 * MiB };
        _cleanup_free_ char *big = image_get_line(1, 5000), *small = image_get_line(2, 100);
        TestServer ts;
        _cleanup_client_ Client c = {};

        test_server_start_limits(&ts, &limits);
        client_connect(&ts, &c);
        client_send(&c, big);
        client_send(&c, "\n");
        json_auto_t *refused = client_expect(&c);
        ck_assert_int_eq(id_of(refused), 1);
        expect_limit_error(refused, "connection_pending_answer_bytes", 4 * KiB);

        client_send(&c, small);
        client_send(&c, "\n");
        json_auto_t *ok = client_expect(&c);
        ck_assert_int_eq(id_of(ok), 2);
        ck_assert_uint_eq(json_string_length(json_object_get(json_object_get(ok, "result"), "reference")), 100);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

/* A batch's reply is counted as it grows: members past the limit are
 * errors for their ids, and once not even an error fits, the batch gets
 * one error line, id null, and the connection is closed. */
START_TEST(test_answer_limit_in_a_batch) {
        const ServerLimits limits = { .connections = SERVER_CONNECTIONS_MAX, .connection_answer_bytes = 4 * KiB, .answer_bytes = 1 * MiB };
        TestServer ts;
        _cleanup_client_ Client c = {};
        _cleanup_free_ char *batch = NULL, *line = NULL;
        size_t size = 0, i;
        json_t *item;
        bool seen_error = false;

        test_server_start_limits(&ts, &limits);
        client_connect(&ts, &c);
        batch = image_get_batch(5, 1000);
        client_send(&c, batch);
        json_auto_t *r = client_expect(&c);
        ck_assert(json_is_array(r));
        ck_assert_uint_eq(json_array_size(r), 5);
        line = json_dumps(r, JSON_COMPACT);
        size = strlen(line);
        ck_assert_uint_le(size + 1, 4 * KiB);
        /* Inline calls complete in order: answers, then errors in their place. */
        json_array_foreach(r, i, item) {
                ck_assert_int_eq(id_of(item), (json_int_t) i + 1);
                if (json_object_get(item, "error")) {
                        expect_limit_error(item, "connection_pending_answer_bytes", 4 * KiB);
                        seen_error = true;
                } else
                        ck_assert(!seen_error);
        }
        ck_assert(seen_error);
        ck_assert(json_object_get(json_array_get(r, 0), "result"));

        /* Forty members of 1000 bytes: not even their errors fit. */
        free(batch);
        batch = image_get_batch(40, 1000);
        client_send(&c, batch);
        expect_last_limit_error(&c, "connection_pending_answer_bytes", 4 * KiB);
        client_close(&c);

        /* Other connections are unaffected. */
        client_connect(&ts, &c);
        client_send(&c, REQ(3, "system.info", "{}") "\n");
        json_auto_t *other = client_expect(&c);
        ck_assert_int_eq(id_of(other), 3);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

/* A batch waiting for a slow member holds its finished members' bytes:
 * they count against its connection's limit and against the limit of all
 * connections together, until the reply is written. */
START_TEST(test_answer_limit_held_by_a_batch) {
        const ServerLimits limits = { .connections = SERVER_CONNECTIONS_MAX, .connection_answer_bytes = 4 * KiB, .answer_bytes = 6 * KiB };
        _cleanup_free_ char *a = image_get_line(1, 1500), *b = image_get_line(2, 1500);
        _cleanup_free_ char *single = image_get_line(4, 1500), *other_get = image_get_line(5, 3000);
        _cleanup_free_ char *lines = NULL;
        TestServer ts;
        _cleanup_client_ Client c = {}, o = {};

        test_server_start_limits(&ts, &limits);
        client_connect(&ts, &c);
        client_connect(&ts, &o);
        /* One write, so the server reads both lines at once. */
        ck_assert_int_ge(asprintf(&lines, "[%s,%s," REQ(3, "image.inspect", "{\"reference\":\"slow\"}") "]\n%s\n", a,
                                  b, single),
                         0);
        client_send(&c, lines);
        json_auto_t *refused = client_expect(&c);
        ck_assert_int_eq(id_of(refused), 4);
        expect_limit_error(refused, "connection_pending_answer_bytes", 4 * KiB);

        /* The batch still holds some 3 KiB: 3 KiB more for another
         * connection would cross the 6 KiB of all connections. */
        client_send(&o, other_get);
        client_send(&o, "\n");
        json_auto_t *refused_other = client_expect(&o);
        ck_assert_int_eq(id_of(refused_other), 5);
        expect_limit_error(refused_other, "pending_answer_bytes", 6 * KiB);

        /* Once the batch's reply is written and read, there is room again. */
        json_auto_t *reply = client_expect(&c);
        ck_assert(json_is_array(reply));
        ck_assert_uint_eq(json_array_size(reply), 3);
        for (size_t i = 0; i < 3; i++)
                ck_assert(json_object_get(json_array_get(reply, i), "result"));
        client_send(&o, other_get);
        client_send(&o, "\n");
        json_auto_t *ok = client_expect(&o);
        ck_assert_int_eq(id_of(ok), 5);
        ck_assert(json_object_get(ok, "result"));
        client_close(&o);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

typedef struct Burst {
        const TestServer *ts;
        unsigned index;
        bool ok;
} Burst;

static void *burst_client(void *userdata) {
        Burst *b = userdata;
        Client c = {};
        char req[128];

        client_connect(b->ts, &c);
        for (unsigned i = 0; i < 20; i++) {
                snprintf(req, sizeof(req), "{\"jsonrpc\":\"2.0\",\"id\":%u,\"method\":\"image.get\","
                         "\"params\":{\"reference\":\"r%u\"}}\n", b->index * 100 + i, b->index);
                client_send(&c, req);
        }
        b->ok = true;
        for (unsigned i = 0; i < 20; i++) {
                json_t *r = client_read(&c, READ_TIMEOUT_MS);
                if (!r || json_integer_value(json_object_get(r, "id")) != (json_int_t) (b->index * 100 + i))
                        b->ok = false;
                json_decref(r);
        }
        client_close(&c);
        return NULL;
}

START_TEST(test_many_connections) {
        TestServer ts;
        enum { N = 64 };
        pthread_t threads[N];
        Burst bursts[N];

        test_server_start(&ts);
        for (unsigned i = 0; i < N; i++) {
                bursts[i] = (Burst) { &ts, i, false };
                ck_assert_int_eq(pthread_create(&threads[i], NULL, burst_client, &bursts[i]), 0);
        }
        for (unsigned i = 0; i < N; i++) {
                ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
                /* Inline calls of one connection are answered in order. */
                ck_assert_msg(bursts[i].ok, "client %u", i);
        }
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_connection_limit) {
        TestServer ts;
        _cleanup_free_ Client *clients = calloc(SERVER_CONNECTIONS_MAX, sizeof(Client));
        _cleanup_client_ Client extra = {};
        struct rlimit rl;

        /* Both ends of every connection live in this process. */
        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < 2 * SERVER_CONNECTIONS_MAX + 64) {
                rl.rlim_cur = 2 * SERVER_CONNECTIONS_MAX + 64;
                ck_assert_msg(setrlimit(RLIMIT_NOFILE, &rl) == 0, "cannot raise RLIMIT_NOFILE to %ju: %m",
                              (uintmax_t) rl.rlim_cur);
        }

        /* README "The protocol", limits: 1024 connections in all. */
        ck_assert_uint_eq(SERVER_CONNECTIONS_MAX, 1024);
        ck_assert_ptr_nonnull(clients);
        test_server_start(&ts);
        for (unsigned i = 0; i < SERVER_CONNECTIONS_MAX; i++)
                client_connect(&ts, &clients[i]);
        /* The last of them is served, so all of them were accepted. */
        client_send(&clients[SERVER_CONNECTIONS_MAX - 1], REQ(1, "image.list", "{}") "\n");
        json_auto_t *ok = client_expect(&clients[SERVER_CONNECTIONS_MAX - 1]);
        ck_assert_int_eq(id_of(ok), 1);

        /* One more: limit-exceeded naming the limit, then hung up. */
        client_connect(&ts, &extra);
        json_auto_t *refused = client_expect(&extra);
        expect_limit_error(refused, "connections", SERVER_CONNECTIONS_MAX);
        ck_assert(client_eof(&extra, READ_TIMEOUT_MS));
        client_close(&extra);

        /* A connection that goes makes room for a new one. */
        client_close(&clients[0]);
        bool served = false;
        for (unsigned attempt = 0; attempt < 100 && !served; attempt++) {
                client_connect(&ts, &extra);
                client_send(&extra, REQ(2, "image.list", "{}") "\n");
                json_auto_t *r = client_expect(&extra);
                served = json_object_get(r, "result") != NULL;
                client_close(&extra);
                if (!served)
                        usleep(50 * 1000);
        }
        ck_assert(served);

        for (unsigned i = 1; i < SERVER_CONNECTIONS_MAX; i++)
                client_close(&clients[i]);
        test_server_stop(&ts);
}
END_TEST

START_TEST(test_shutting_down) {
        TestServer ts;
        _cleanup_client_ Client c = {};

        test_server_start(&ts);
        client_connect(&ts, &c);
        /* A worker call under way when the shutdown begins still completes. */
        client_send(&c, REQ(1, "image.inspect", "{\"reference\":\"slow\"}") "\n");
        usleep(100 * 1000);
        test_server_shutdown(&ts);

        /* New calls that write (worker and deferred methods) are refused;
         * quick read-only ones are still answered. */
        client_send(&c, REQ(2, "image.remove", "{\"reference\":\"a\"}") "\n" REQ(3, "image.pull", "{\"reference\":\"a\"}") "\n"
                        REQ(4, "image.list", "{}") "\n");
        json_int_t seen = 0;
        for (int i = 0; i < 4; i++) {
                json_auto_t *r = client_expect(&c);
                json_int_t id = id_of(r);
                seen |= 1 << id;
                if (id == 1)
                        ck_assert(json_is_true(json_object_get(json_object_get(r, "result"), "slow")));
                else if (id == 4)
                        ck_assert_ptr_nonnull(json_object_get(r, "result"));
                else {
                        ck_assert_int_eq(error_code(r), 1016);
                        ck_assert_str_eq(error_name(r), "shutting-down");
                }
        }
        ck_assert_int_eq(seen, 0x1e);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

/* A batch of n slow worker calls, ids 1..n. */
static char *slow_batch(int n) {
        char *text = strdup("["), *t;

        for (int i = 1; i <= n; i++) {
                ck_assert_int_ge(asprintf(&t, "%s%s" REQ(%d, "image.inspect", "{\"reference\":\"slow\"}"), text,
                                          i > 1 ? "," : "", i),
                                 0);
                free(text);
                text = t;
        }
        ck_assert_int_ge(asprintf(&t, "%s]\n", text), 0);
        free(text);
        return t;
}

/* One connection's backlog of slow worker calls does not hold up another
 * connection's worker call: each connection runs at most
 * RPC_PEER_RUNNING_MAX at once, and the slots go round the connections. */
START_TEST(test_worker_calls_are_fair) {
        _cleanup_free_ char *backlog = slow_batch(3 * RPC_WORKER_SLOTS);
        TestServer ts;
        _cleanup_client_ Client busy = {}, other = {};
        uint64_t start;

        test_server_start(&ts);
        client_connect(&ts, &busy);
        client_connect(&ts, &other);
        client_send(&busy, backlog);
        usleep(100 * 1000);
        start = now_monotonic_ms();
        client_send(&other, REQ(7, "image.remove", "{\"reference\":\"x\"}") "\n");
        json_auto_t *r = client_expect(&other);
        ck_assert_int_eq(id_of(r), 7);
        ck_assert_str_eq(error_name(r), "image-not-found");
        /* Not behind the backlog (36 seconds of work at four at a time): no
         * more than one slow call of the busy connection's. */
        ck_assert_uint_lt(now_monotonic_ms() - start, SLOW_CALL_MS / 2);
        client_close(&busy);
        client_close(&other);
        test_server_stop(&ts);
}
END_TEST

/* At shutdown the worker calls that have not started are answered
 * shutting-down at once; those running finish. */
START_TEST(test_shutdown_refuses_waiting_calls) {
        const int n = 2 * RPC_PEER_RUNNING_MAX;
        _cleanup_free_ char *backlog = slow_batch(n);
        TestServer ts;
        _cleanup_client_ Client c = {};
        unsigned done = 0, refused = 0;

        test_server_start(&ts);
        client_connect(&ts, &c);
        client_send(&c, backlog);
        usleep(100 * 1000);
        test_server_shutdown(&ts);
        json_auto_t *r = client_expect(&c);
        ck_assert(json_is_array(r));
        ck_assert_uint_eq(json_array_size(r), (size_t) n);
        for (size_t i = 0; i < json_array_size(r); i++) {
                json_t *m = json_array_get(r, i);
                if (json_object_get(m, "result"))
                        done++;
                else {
                        ck_assert_str_eq(error_name(m), "shutting-down");
                        refused++;
                }
        }
        ck_assert_uint_eq(done, RPC_PEER_RUNNING_MAX);
        ck_assert_uint_eq(refused, (unsigned) n - RPC_PEER_RUNNING_MAX);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

/* A connection with RPC_PEER_CALLS_MAX calls in flight is not read from
 * until some end: its later lines wait in the socket, not in our memory. */
START_TEST(test_reading_pauses_at_the_calls_cap) {
        TestServer ts;
        _cleanup_client_ Client c = {};
        _cleanup_free_ char *lines = strdup("");
        uint64_t start;

        test_server_start(&ts);
        client_connect(&ts, &c);
        /* Deferred calls stay in flight for a while (20 ms each). */
        for (unsigned i = 1; i <= RPC_PEER_CALLS_MAX + 8; i++) {
                char *t;
                ck_assert_int_ge(asprintf(&t, "%s" REQ(%u, "image.pull", "{\"reference\":\"a\"}") "\n", lines, i), 0);
                free(lines);
                lines = t;
        }
        start = now_monotonic_ms();
        client_send(&c, lines);
        /* Every call is answered in the end, progress before each result. */
        unsigned results = 0;
        while (results < RPC_PEER_CALLS_MAX + 8) {
                json_auto_t *m = client_expect(&c);
                if (json_object_get(m, "result"))
                        results++;
        }
        ck_assert_uint_lt(now_monotonic_ms() - start, 10000);
        client_close(&c);
        test_server_stop(&ts);
}
END_TEST

static Suite *server_suite(void) {
        Suite *s = suite_create("server");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_request_response);
        tcase_add_test(tc, test_errors_keep_the_connection);
        tcase_add_test(tc, test_notifications_and_blank_lines);
        tcase_add_test(tc, test_batch);
        tcase_add_test(tc, test_worker_does_not_block);
        tcase_add_test(tc, test_deferred_with_progress);
        tcase_add_test(tc, test_line_limit);
        tcase_add_test(tc, test_deep_nesting);
        tcase_add_test(tc, test_half_close);
        tcase_add_test(tc, test_batch_member_limit);
        tcase_add_test(tc, test_answer_limit_replaces_an_answer);
        tcase_add_test(tc, test_answer_limit_in_a_batch);
        tcase_add_test(tc, test_answer_limit_held_by_a_batch);
        tcase_add_test(tc, test_many_connections);
        tcase_add_test(tc, test_connection_limit);
        tcase_add_test(tc, test_shutting_down);
        tcase_add_test(tc, test_worker_calls_are_fair);
        tcase_add_test(tc, test_shutdown_refuses_waiting_calls);
        tcase_add_test(tc, test_reading_pauses_at_the_calls_cap);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(server_suite());
        int failed;

        /* As the daemon does: a client that hangs up is an EPIPE, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        /* As the daemon does: enough threads for every worker slot. */
        setenv("UV_THREADPOOL_SIZE", "16", 0);

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
