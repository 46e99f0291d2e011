/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The connection: socket discovery, connect, and one blocking JSON-RPC call
 * at a time over NDJSON framing (README "The protocol": each request and each
 * response is one JSON text terminated by '\n').
 */

#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "client-internal.h"

const char *msb_version(void) {
        return MSB_VERSION;
}

int msb_socket_path_default(char **ret_path) {
        const char *env;
        char *p;

        /* The same order as the daemon (README "Running the daemon": the
         * defaults), so both agree without configuration. */
        env = getenv("MSB_IMAGED_SOCKET");
        if (env && env[0])
                p = strdup(env);
        else if ((env = getenv("XDG_RUNTIME_DIR")) && env[0] == '/') {
                if (asprintf(&p, "%s/microsandbox/imaged.sock", env) < 0)
                        p = NULL;
        } else if (asprintf(&p, "/tmp/microsandbox-%u/imaged.sock", (unsigned) getuid()) < 0)
                p = NULL;
        if (!p)
                return -ENOMEM;
        *ret_path = p;
        return 0;
}

static void client_error_free(MsbClientError *e) {
        if (!e)
                return;
        free(e->name);
        free(e->message);
        free(e->data_json);
        free(e);
}

void client_reset_error(MsbClient *c) {
        if (!c)
                return;
        client_error_free(c->error);
        c->error = NULL;
}

static void client_close(MsbClient *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -EBADF;
        free(c->buf);
        c->buf = NULL;
        c->buf_start = c->buf_size = c->buf_allocated = 0;
}

int msb_client_connect(const char *socket_path, MsbClient **ret_client) {
        _cleanup_free_ char *path = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        MsbClient *c;
        int fd, r;

        if (!ret_client)
                return -EINVAL;
        if (socket_path)
                path = strdup(socket_path);
        else {
                r = msb_socket_path_default(&path);
                if (r < 0)
                        return r;
        }
        if (!path)
                return -ENOMEM;
        if (path[0] == '\0')
                return -EINVAL;
        if (strlen(path) > MSB_CLIENT_SOCKET_PATH_MAX)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path));

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = -errno;
                close(fd);
                return r;
        }

        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->fd = fd;
        c->cancel_fd = -1;
        c->socket_path = TAKE_PTR(path);
        c->next_id = 1;
        *ret_client = c;
        return 0;
}

MsbClient *msb_client_free(MsbClient *c) {
        if (!c)
                return NULL;
        client_close(c);
        client_error_free(c->error);
        free(c->socket_path);
        free(c);
        return NULL;
}

const char *msb_client_socket_path(const MsbClient *c) {
        return c ? c->socket_path : NULL;
}

void msb_client_set_timeout(MsbClient *c, uint64_t timeout_ms) {
        if (c)
                c->timeout_ms = timeout_ms;
}

void msb_client_set_cancel_fd(MsbClient *c, int fd) {
        if (c)
                c->cancel_fd = fd < 0 ? -1 : fd;
}

bool msb_client_is_connected(const MsbClient *c) {
        return c && c->fd >= 0;
}

const MsbClientError *msb_client_last_error(const MsbClient *c) {
        return c ? c->error : NULL;
}

static uint64_t monotonic_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline (0: none) passes;
 * -ECANCELED as soon as cancel_fd (-1: none) is readable. */
static int wait_fd(int fd, short events, int cancel_fd, uint64_t deadline_ms) {
        for (;;) {
                struct pollfd p[2] = {
                        { .fd = fd, .events = events },
                        { .fd = cancel_fd, .events = POLLIN },
                };
                int timeout = -1;

                if (deadline_ms > 0) {
                        uint64_t now = monotonic_ms();
                        if (now >= deadline_ms)
                                return -ETIMEDOUT;
                        timeout = deadline_ms - now > INT_MAX ? INT_MAX : (int) (deadline_ms - now);
                }
                int n = poll(p, cancel_fd >= 0 ? 2 : 1, timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (cancel_fd >= 0 && p[1].revents != 0)
                        return -ECANCELED;
                if (n > 0)
                        return 0;
        }
}

static int send_all(MsbClient *c, const char *data, size_t len, uint64_t deadline_ms) {
        while (len > 0) {
                int r = wait_fd(c->fd, POLLOUT, -1, deadline_ms);
                if (r < 0)
                        return r;
                /* MSG_NOSIGNAL: a library must not kill its caller with
                 * SIGPIPE when the daemon has gone away. */
                ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                data += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Sends data whose first bytes carry fds (SCM_RIGHTS): the daemon hands
 * them to the request line those bytes begin. Then the rest as usual. */
static int send_with_fds(MsbClient *c, const char *data, size_t len, const int *fds, size_t n_fds,
                         uint64_t deadline_ms) {
        union {
                char buf[CMSG_SPACE(sizeof(int) * MSB_CLIENT_REQUEST_FDS_MAX)];
                struct cmsghdr align;
        } control = {};
        struct iovec iov = { .iov_base = (void *) data, .iov_len = len };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        if (n_fds == 0)
                return send_all(c, data, len, deadline_ms);
        if (n_fds > MSB_CLIENT_REQUEST_FDS_MAX || len == 0)
                return -EINVAL;
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
        for (;;) {
                int r = wait_fd(c->fd, POLLOUT, -1, deadline_ms);
                if (r < 0)
                        return r;
                n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n >= 0)
                        break;
                if (errno != EINTR && errno != EAGAIN)
                        return -errno;
        }
        return send_all(c, data + n, len - (size_t) n, deadline_ms);
}

/*
 * Reads the next line into *ret_line (NUL-terminated in place of '\n',
 * valid until the next read). -ECONNRESET when the daemon closes the
 * connection, -EMSGSIZE past MSB_CLIENT_RESPONSE_MAX_BYTES, -ECANCELED
 * when cancel_fd (-1: none) became readable first.
 */
static int read_line(MsbClient *c, uint64_t deadline_ms, int cancel_fd, char **ret_line, size_t *ret_len) {
        size_t scanned;

        /* The previous line has been used by now; drop a large buffer that
         * holds nothing more. */
        if (c->buf_start == c->buf_size && c->buf_allocated > CLIENT_BUFFER_KEEP_BYTES) {
                free(c->buf);
                c->buf = NULL;
                c->buf_start = c->buf_size = c->buf_allocated = 0;
        }
        scanned = c->buf_start;

        for (;;) {
                char *nl = c->buf_size > scanned ? memchr(c->buf + scanned, '\n', c->buf_size - scanned) : NULL;
                if (nl) {
                        *nl = '\0';
                        *ret_line = c->buf + c->buf_start;
                        *ret_len = (size_t) (nl - (c->buf + c->buf_start));
                        c->buf_start = (size_t) (nl - c->buf) + 1;
                        return 0;
                }
                scanned = c->buf_size;
                if (c->buf_size - c->buf_start > MSB_CLIENT_RESPONSE_MAX_BYTES)
                        return -EMSGSIZE;

                /* Drop consumed bytes before growing, so the buffer holds at
                 * most one line plus one read. */
                if (c->buf_start > 0) {
                        memmove(c->buf, c->buf + c->buf_start, c->buf_size - c->buf_start);
                        c->buf_size -= c->buf_start;
                        scanned -= c->buf_start;
                        c->buf_start = 0;
                }
                if (c->buf_allocated - c->buf_size < CLIENT_READ_CHUNK_BYTES) {
                        size_t n = c->buf_allocated ? c->buf_allocated * 2 : CLIENT_READ_CHUNK_BYTES;
                        while (n - c->buf_size < CLIENT_READ_CHUNK_BYTES)
                                n *= 2;
                        char *b = realloc(c->buf, n);
                        if (!b)
                                return -ENOMEM;
                        c->buf = b;
                        c->buf_allocated = n;
                }

                int r = wait_fd(c->fd, POLLIN, cancel_fd, deadline_ms);
                if (r == -ECANCELED)
                        c->cancelled = true;
                if (r < 0)
                        return r;
                ssize_t n = recv(c->fd, c->buf + c->buf_size, c->buf_allocated - c->buf_size, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                c->buf_size += (size_t) n;
        }
}

static int error_from_json(json_t *e, MsbClientError **ret) {
        json_t *code = json_object_get(e, "code"), *message = json_object_get(e, "message");
        json_t *data = json_object_get(e, "data");
        MsbClientError *err;

        if (!json_is_integer(code) || !json_is_string(message))
                return -EPROTO;
        err = calloc(1, sizeof(*err));
        if (!err)
                return -ENOMEM;
        err->code = (int) json_integer_value(code);
        err->message = strdup(json_string_value(message));
        if (json_is_string(json_object_get(data, "name")))
                err->name = strdup(json_string_value(json_object_get(data, "name")));
        if (data)
                err->data_json = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!err->message || (json_is_string(json_object_get(data, "name")) && !err->name) ||
            (data && !err->data_json)) {
                client_error_free(err);
                return -ENOMEM;
        }
        *ret = err;
        return 0;
}

/* Handles one answer to request `id`: 1 with the result, or the error. */
static int handle_response(MsbClient *c, json_t *msg, json_t **ret_result) {
        json_t *result = json_object_get(msg, "result"), *error = json_object_get(msg, "error");
        int r;

        if (!streq(json_string_value(json_object_get(msg, "jsonrpc")) ?: "", "2.0"))
                return -EPROTO;
        if (error) {
                r = error_from_json(error, &c->error);
                return r < 0 ? r : -MSB_EREMOTE;
        }
        if (!result)
                return -EPROTO;
        *ret_result = json_incref(result);
        return 0;
}

/* What a call does with the lines that arrive before its answer. */
typedef struct CallHooks {
        ClientNotifyFn notify; /* notifications; NULL: skipped */
        void *notify_data;
        ClientAnswerFn answer; /* tried on each line before jansson; NULL: none */
        void *answer_data;
} CallHooks;

/* Reads messages until the answer to request id: 0 with *ret_result, or
 * the call's error. Notifications go to notify. */
static int call_read_answer(MsbClient *c, uint64_t id, uint64_t deadline, int cancel_fd, const CallHooks *hooks,
                            json_t **ret_result) {
        for (;;) {
                _cleanup_json_ json_t *msg = NULL;
                json_error_t jerr;
                char *line = NULL;
                size_t line_len = 0;
                int r;

                r = read_line(c, deadline, cancel_fd, &line, &line_len);
                if (r < 0)
                        return r;
                if (hooks->answer) {
                        r = hooks->answer(line, line_len, id, hooks->answer_data);
                        if (r != 0) {
                                *ret_result = NULL;
                                return r < 0 ? r : 0;
                        }
                }
                msg = json_loadb(line, line_len, 0, &jerr);
                if (!json_is_object(msg))
                        return -EPROTO;

                json_t *jid = json_object_get(msg, "id");
                if (!jid) {
                        /* A notification; the daemon only sends them about a
                         * request of ours, and only pull and load ask to hear them. */
                        if (hooks->notify) {
                                r = hooks->notify(c, id, msg, hooks->notify_data);
                                if (r < 0)
                                        return r;
                        }
                        continue;
                }
                /* Requests go one at a time, so the answer must carry our id;
                 * a null id is the daemon saying it could not read the
                 * request at all (parse error), which answers it too. */
                if (json_is_null(jid) ||
                    (json_is_integer(jid) && (uint64_t) json_integer_value(jid) == id))
                        return handle_response(c, msg, ret_result);
                return -EPROTO;
        }
}

/* The caller gave up on request id: rpc.cancel (a notification), then the
 * daemon's answer to the call, which keeps the stream in step; whatever it
 * says, the call was cancelled. */
static int call_cancel(MsbClient *c, uint64_t id) {
        _cleanup_json_ json_t *result = NULL;
        uint64_t deadline = monotonic_ms() + MSB_CLIENT_CANCEL_WAIT_MS;
        char text[96];
        int n, r;

        n = snprintf(text, sizeof(text), "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.cancel\",\"params\":{\"id\":%" PRIu64 "}}\n",
                     id);
        r = send_all(c, text, (size_t) n, deadline);
        if (r >= 0)
                r = call_read_answer(c, id, deadline, -1, &(const CallHooks) {}, &result);
        client_reset_error(c);
        if (r < 0 && r != -MSB_EREMOTE)
                client_close(c);
        return -ECANCELED;
}

static int call_exchange(MsbClient *c, uint64_t id, const char *text, size_t len, const int *fds, size_t n_fds,
                         const CallHooks *hooks, json_t **ret_result) {
        uint64_t deadline = c->timeout_ms > 0 ? monotonic_ms() + c->timeout_ms : 0;
        int r;

        r = send_with_fds(c, text, len, fds, n_fds, deadline);
        if (r < 0)
                return r;
        c->cancelled = false;
        r = call_read_answer(c, id, deadline, c->cancel_fd, hooks, ret_result);
        if (c->cancelled)
                return call_cancel(c, id);
        return r;
}

int client_read_message(MsbClient *c, json_t **ret_message) {
        uint64_t deadline = c->timeout_ms > 0 ? monotonic_ms() + c->timeout_ms : 0;
        json_error_t jerr;
        json_t *msg;
        char *line;
        size_t len;
        int r;

        if (c->fd < 0)
                return -ENOTCONN;
        r = read_line(c, deadline, -1, &line, &len);
        if (r == -ETIMEDOUT)
                /* Nothing is owed to us: a partial line stays buffered and
                 * the next read goes on from it. */
                return r;
        if (r < 0) {
                client_close(c);
                return r;
        }
        msg = json_loadb(line, len, 0, &jerr);
        if (!json_is_object(msg)) {
                json_decref(msg);
                client_close(c);
                return -EPROTO;
        }
        *ret_message = msg;
        return 0;
}

int client_call(MsbClient *c, const char *method, json_t *params, ClientNotifyFn notify, void *userdata,
                json_t **ret_result) {
        return client_call_fds(c, method, params, NULL, 0, notify, userdata, ret_result);
}

static int call_full(MsbClient *c, const char *method, json_t *params, const int *fds, size_t n_fds,
                     const CallHooks *hooks, json_t **ret_result) {
        _cleanup_json_ json_t *req = NULL, *result = NULL;
        _cleanup_free_ char *text = NULL;
        uint64_t id;
        int r;

        if (!c || !method || !ret_result)
                return -EINVAL;
        client_reset_error(c);
        if (c->fd < 0)
                return -ENOTCONN;

        id = c->next_id++;
        req = json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", (json_int_t) id, "method", method);
        if (!req)
                return -ENOMEM;
        if (params && json_object_set(req, "params", params) < 0)
                return -ENOMEM;
        text = json_dumps(req, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        /* json_dumps never emits a raw newline (it escapes them in strings),
         * so appending one frames the request. */
        size_t len = strlen(text);
        char *framed = realloc(text, len + 2);
        if (!framed)
                return -ENOMEM;
        text = framed;
        memcpy(text + len, "\n", 2);

        r = call_exchange(c, id, text, len + 1, fds, n_fds, hooks, &result);
        if (r < 0) {
                /* Only a JSON-RPC error, or a call cancelled through the
                 * cancel fd (whose answer call_cancel() waited for, or it
                 * closed the connection), leaves the stream in step; after
                 * anything else an answer may still be on its way, so the
                 * connection cannot be reused. */
                if (r != -MSB_EREMOTE && !(r == -ECANCELED && c->cancelled))
                        client_close(c);
                return r;
        }
        *ret_result = TAKE_PTR(result);
        return 0;
}

int client_call_fds(MsbClient *c, const char *method, json_t *params, const int *fds, size_t n_fds,
                    ClientNotifyFn notify, void *userdata, json_t **ret_result) {
        return call_full(c, method, params, fds, n_fds, &(const CallHooks) { .notify = notify, .notify_data = userdata },
                         ret_result);
}

int client_call_read(MsbClient *c, const char *method, json_t *params, ClientAnswerFn answer, void *userdata,
                     json_t **ret_result) {
        if (!answer)
                return -EINVAL;
        return call_full(c, method, params, NULL, 0, &(const CallHooks) { .answer = answer, .answer_data = userdata },
                         ret_result);
}

int msb_client_call(MsbClient *c, const char *method, const char *params_json, char **ret_result_json) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        json_error_t jerr;
        int r;

        client_reset_error(c);
        if (!c || !method || !ret_result_json)
                return -EINVAL;
        if (params_json) {
                params = json_loads(params_json, 0, &jerr);
                if (!json_is_object(params))
                        return -EINVAL;
        }
        r = client_call(c, method, params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return json_to_text(result, ret_result_json);
}

int msb_client_rpc_discover(MsbClient *c, char **ret_json) {
        _cleanup_json_ json_t *result = NULL;
        int r;

        client_reset_error(c);
        if (!ret_json)
                return -EINVAL;
        r = client_call(c, "rpc.discover", NULL, NULL, NULL, &result);
        if (r < 0)
                return r;
        if (!json_is_object(result))
                return -EPROTO;
        return json_to_text(result, ret_json);
}
