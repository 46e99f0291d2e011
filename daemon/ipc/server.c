/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "framing.h"
#include "log.h"
#include "server.h"

#define SERVER_READ_BUFFER_BYTES ((size_t) (256 * KiB))

typedef struct Connection Connection;

/* A descriptor received on a connection and not yet handed to a line: pos
 * is the stream offset of the last byte of the read it came with, which
 * lies in the line it belongs to (see connection_take_fds()). */
typedef struct PendingFd {
        int fd;
        uint64_t pos;
} PendingFd;

struct Server {
        uv_loop_t *loop;
        Rpc *rpc;
        uv_pipe_t listener;
        bool listening;
        char *path;
        unsigned n_connections;
        Connection *connections;
        void (*idle_cb)(void *userdata);
        void *idle_userdata;
        ServerLimits limits;
        size_t answer_bytes; /* held by all open connections */
};

/* A client's connection. What rpc keeps of it is the peer, which rpc reaches
 * through server_peer_ops only. */
struct Connection {
        RpcPeer peer;
        uv_pipe_t pipe;
        Server *server;
        unsigned refs;
        bool open;
        bool reading;
        bool paused;            /* rpc asked: as many calls in flight as a connection may have */
        bool close_after_write; /* hang up once queued responses are written */
        bool eof;               /* the client half-closed: finish its calls, then close */
        unsigned calls;         /* calls and batches of this connection in flight */
        size_t answer_bytes;    /* reserved for its answers and not yet written */
        LineBuffer in;
        uint64_t received;      /* bytes read from the client */
        uint64_t line_start;    /* stream offset of the next line's first byte */
        PendingFd fds[SERVER_CONNECTION_FDS_MAX];
        unsigned n_fds;
        uint64_t number;
        Connection *prev, *next;
};

typedef struct WriteRequest {
        uv_write_t req;
        Connection *conn;
        char *data;
        size_t reserved; /* answer bytes released once written */
} WriteRequest;

static uint64_t connection_counter;

static Connection *connection_of(RpcPeer *p) {
        return (Connection *) ((char *) p - offsetof(Connection, peer));
}

static Connection *connection_ref(Connection *c) {
        c->refs++;
        return c;
}

static void connection_free(Connection *c) {
        /* Every write is done and every batch ended: all answer bytes are back. */
        assert(c->answer_bytes == 0);
        for (unsigned i = 0; i < c->n_fds; i++)
                safe_close(c->fds[i].fd);
        line_buffer_done(&c->in);
        free(c);
}

static void connection_unref(Connection *c) {
        if (!c)
                return;
        if (--c->refs == 0)
                connection_free(c);
}

static bool connection_is_open(const Connection *c) {
        return c->open;
}

static void connection_close(Connection *c);

/* After the client's EOF, the connection stays until every answer is written. */
static void connection_maybe_finish(Connection *c) {
        if (c->open && c->eof && c->calls == 0 && uv_stream_get_write_queue_size((uv_stream_t *) &c->pipe) == 0)
                connection_close(c);
}

static void connection_call_begin(Connection *c) {
        connection_ref(c);
        c->calls++;
}

static void connection_call_end(Connection *c) {
        c->calls--;
        connection_maybe_finish(c);
        connection_unref(c);
}

static void on_close(uv_handle_t *h) {
        connection_unref(h->data);
}

static void connection_close(Connection *c) {
        Server *s = c->server;

        if (!c->open)
                return;
        c->open = false;
        if (c->prev)
                c->prev->next = c->next;
        else
                s->connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_connections--;
        /* What the connection still holds is freed as its writes are
         * cancelled and its batches end; it no longer counts against others. */
        s->answer_bytes -= c->answer_bytes;
        log_debug("connection %" PRIu64 " closed", c->number);
        rpc_peer_closed(s->rpc, &c->peer);
        uv_close((uv_handle_t *) &c->pipe, on_close);
        if (s->n_connections == 0 && s->idle_cb)
                s->idle_cb(s->idle_userdata);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        static __thread char chunk[SERVER_READ_BUFFER_BYTES];
        *buf = uv_buf_init(chunk, sizeof(chunk));
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);

static void connection_update_reading(Connection *c) {
        bool want = c->open && !c->close_after_write && !c->eof && !c->paused &&
                    c->answer_bytes < c->server->limits.connection_answer_bytes / 2;
        if (want == c->reading)
                return;
        if (want)
                uv_read_start((uv_stream_t *) &c->pipe, on_alloc, on_read);
        else
                uv_read_stop((uv_stream_t *) &c->pipe);
        c->reading = want;
}

static int connection_answer_reserve(Connection *c, size_t bytes, MsbError *err) {
        Server *s = c->server;

        if (!c->open || c->close_after_write)
                return -ENOTCONN;
        if (c->answer_bytes + bytes > s->limits.connection_answer_bytes)
                return msb_error_limit(err, "connection_pending_answer_bytes", s->limits.connection_answer_bytes,
                                       "the answers waiting for this connection would exceed %zu bytes: read "
                                       "them before asking for more",
                                       s->limits.connection_answer_bytes);
        if (s->answer_bytes + bytes > s->limits.answer_bytes)
                return msb_error_limit(err, "pending_answer_bytes", s->limits.answer_bytes,
                                       "the answers waiting for all connections would exceed %zu bytes",
                                       s->limits.answer_bytes);
        c->answer_bytes += bytes;
        s->answer_bytes += bytes;
        return 0;
}

static void connection_answer_release(Connection *c, size_t bytes) {
        assert(c->answer_bytes >= bytes);
        c->answer_bytes -= bytes;
        /* A closed connection's bytes left the server's count when it closed. */
        if (c->open)
                c->server->answer_bytes -= bytes;
        connection_update_reading(c);
}

static void on_write(uv_write_t *req, int status) {
        WriteRequest *w = (WriteRequest *) req;
        Connection *c = w->conn;

        free(w->data);
        connection_answer_release(c, w->reserved);
        free(w);
        if (c->open && (status < 0 || (c->close_after_write &&
                                       uv_stream_get_write_queue_size((uv_stream_t *) &c->pipe) == 0)))
                connection_close(c);
        else
                connection_maybe_finish(c);
        connection_unref(c);
}

/* Queues one line of reserved bytes (text is taken, and has room for a
 * byte after its NUL: the NUL becomes the '\n'). */
static void connection_write_line(Connection *c, char *text, size_t reserved) {
        size_t len = strlen(text);
        WriteRequest *w = calloc(1, sizeof(*w));

        if (!w) {
                free(text);
                connection_answer_release(c, reserved);
                connection_close(c);
                return;
        }
        text[len] = '\n';
        w->conn = connection_ref(c);
        w->data = text;
        w->reserved = reserved;
        uv_buf_t b = uv_buf_init(text, (unsigned) len + 1);
        if (uv_write(&w->req, (uv_stream_t *) &c->pipe, &b, 1, on_write) < 0) {
                free(w->data);
                free(w);
                connection_answer_release(c, reserved);
                connection_unref(c);
                connection_close(c);
                return;
        }
        connection_update_reading(c);
}

/* Queues text as one line of reserved bytes, even after the last line. */
static void connection_queue_line(Connection *c, char *text, size_t reserved) {
        size_t size = strlen(text);
        char *line;

        /* The newline's byte (a batch's text already has it: no copy then). */
        line = realloc(text, size + 2);
        if (!line) {
                free(text);
                connection_answer_release(c, reserved);
                connection_close(c);
                return;
        }
        line[size + 1] = '\0';
        connection_write_line(c, line, reserved);
}

static void connection_send_reserved(Connection *c, char *text, size_t reserved) {
        if (!c->open || c->close_after_write) {
                free(text);
                connection_answer_release(c, reserved);
                return;
        }
        connection_queue_line(c, text, reserved);
}

static void connection_send_last(Connection *c, char *text) {
        size_t bytes = strlen(text) + 1;

        if (!c->open || c->close_after_write) {
                free(text);
                return;
        }
        /* One small line past the limits, then nothing more. */
        c->answer_bytes += bytes;
        c->server->answer_bytes += bytes;
        c->close_after_write = true;
        connection_queue_line(c, text, bytes);
}

static void connection_abort(Connection *c) {
        log_error("connection %" PRIu64 ": cannot build an answer, closing", c->number);
        connection_close(c);
}

/* ---- the peer as rpc sees it ---- */

static int peer_answer_reserve(RpcPeer *p, size_t bytes, MsbError *err) {
        return connection_answer_reserve(connection_of(p), bytes, err);
}

static void peer_answer_release(RpcPeer *p, size_t bytes) {
        connection_answer_release(connection_of(p), bytes);
}

static void peer_send_reserved(RpcPeer *p, char *text, size_t reserved) {
        connection_send_reserved(connection_of(p), text, reserved);
}

static void peer_send_last(RpcPeer *p, char *text) {
        connection_send_last(connection_of(p), text);
}

static void peer_abort(RpcPeer *p) {
        connection_abort(connection_of(p));
}

static void peer_hold(RpcPeer *p) {
        connection_call_begin(connection_of(p));
}

static void peer_release(RpcPeer *p) {
        connection_call_end(connection_of(p));
}

static bool peer_is_open(const RpcPeer *p) {
        return connection_is_open(connection_of((RpcPeer *) p));
}

static void peer_set_paused(RpcPeer *p, bool paused) {
        Connection *c = connection_of(p);

        c->paused = paused;
        connection_update_reading(c);
}

static size_t peer_answer_bytes(const RpcPeer *p) {
        return connection_of((RpcPeer *) p)->answer_bytes;
}

static const RpcPeerOps server_peer_ops = {
        .answer_reserve = peer_answer_reserve,
        .answer_release = peer_answer_release,
        .send_reserved = peer_send_reserved,
        .send_last = peer_send_last,
        .abort = peer_abort,
        .hold = peer_hold,
        .release = peer_release,
        .is_open = peer_is_open,
        .set_paused = peer_set_paused,
        .answer_bytes = peer_answer_bytes,
};

/* Sends the limit-exceeded error and closes once it is written. */
static void send_limit_error(Connection *c, const char *limit, uint64_t max, const char *message) {
        _cleanup_(msb_error_clear) MsbError err = {};
        char *text;

        msb_error_limit(&err, limit, max, "%s", message);
        text = rpc_error_response_text(NULL, &err);
        if (!text) {
                connection_abort(c);
                return;
        }
        connection_send_last(c, text);
}

static void on_accepted_fd_closed(uv_handle_t *h) {
        free(h);
}

/* Takes one descriptor libuv received on the connection: accepted into a
 * handle of our own (libuv 1.44 hands out SCM_RIGHTS descriptors only
 * through uv_accept(), and only into a stream handle; it opens a pipe
 * handle on any descriptor without touching its flags, which the client's
 * file description shares), duplicated, and the handle closed. */
static int connection_accept_fd(Connection *c, int *ret) {
        uv_pipe_t *h = malloc(sizeof(*h));
        uv_os_fd_t fd = -1;
        int r;

        if (!h)
                return -ENOMEM;
        uv_pipe_init(c->server->loop, h, 0);
        r = uv_accept((uv_stream_t *) &c->pipe, (uv_stream_t *) h);
        if (r >= 0)
                r = uv_fileno((uv_handle_t *) h, &fd);
        if (r >= 0 && (*ret = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
                r = negative_errno();
        uv_close((uv_handle_t *) h, on_accepted_fd_closed);
        return r < 0 ? r : 0;
}

/*
 * Takes the descriptors that came with the read just done. The kernel
 * hands descriptors out with the first bytes of the write that carried
 * them and ends a read there (a read never joins bytes sent after them),
 * so they belong to the line that holds the read's last byte: a client
 * sends them with the first bytes of the request line that names them.
 * -EMFILE past SERVER_CONNECTION_FDS_MAX: the extra ones are closed.
 */
static int connection_take_fds(Connection *c) {
        int r = 0;

        while (uv_pipe_pending_count(&c->pipe) > 0) {
                int fd = -EBADF;
                int k = connection_accept_fd(c, &fd);
                if (k < 0) {
                        r = r ?: k;
                        continue;
                }
                if (c->n_fds >= SERVER_CONNECTION_FDS_MAX) {
                        safe_close(fd);
                        r = -EMFILE;
                        continue;
                }
                c->fds[c->n_fds++] = (PendingFd) { .fd = fd, .pos = c->received - 1 };
        }
        return r;
}

/* Moves the pending descriptors that belong to a line ending at stream
 * offset end into fds, in the order received. -E2BIG when the line brought
 * more than a line may (they are closed). */
static int connection_line_fds(Connection *c, uint64_t end, RpcFds *fds) {
        unsigned taken = 0;
        int r = 0;

        *fds = (RpcFds) {};
        while (taken < c->n_fds && c->fds[taken].pos <= end) {
                int fd = c->fds[taken++].fd;
                if (fds->n < RPC_REQUEST_FDS_MAX)
                        fds->fds[fds->n++] = fd;
                else {
                        safe_close(fd);
                        r = -E2BIG;
                }
        }
        memmove(c->fds, c->fds + taken, (c->n_fds - taken) * sizeof(PendingFd));
        c->n_fds -= taken;
        if (r < 0)
                rpc_fds_close(fds);
        return r;
}

/* Hands a complete line of len bytes to rpc with its descriptors; closes
 * those no request took. */
static void connection_handle_line(Connection *c, char *line, size_t len) {
        uint64_t end = c->line_start + len; /* its newline (or last byte, at EOF) */
        RpcFds fds;

        c->line_start = end + 1;
        if (connection_line_fds(c, end, &fds) < 0) {
                log_warning("connection %" PRIu64 ": more than %u file descriptors with one line, closing it",
                            c->number, RPC_REQUEST_FDS_MAX);
                send_limit_error(c, "request_fds", RPC_REQUEST_FDS_MAX,
                                 "a request line brought more file descriptors than the limit");
                return;
        }
        rpc_handle_line(c->server->rpc, &c->peer, line, len, &fds);
        rpc_fds_close(&fds);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
        Connection *c = stream->data;
        char *line;
        size_t len;
        int r;

        if (n == UV_EOF) {
                connection_ref(c);
                if (line_buffer_take_rest(&c->in, &line, &len) > 0)
                        connection_handle_line(c, line, len);
                c->eof = true;
                connection_unref(c);
                connection_update_reading(c);
                connection_maybe_finish(c);
                return;
        }
        if (n < 0) {
                connection_close(c);
                return;
        }
        if (n == 0)
                return;

        c->received += (uint64_t) n;
        if (connection_take_fds(c) == -EMFILE && c->open && !c->close_after_write) {
                log_warning("connection %" PRIu64 ": more than %u file descriptors pending, closing it", c->number,
                            SERVER_CONNECTION_FDS_MAX);
                send_limit_error(c, "connection_pending_fds", SERVER_CONNECTION_FDS_MAX,
                                 "the connection sent more file descriptors than its requests have taken");
                return;
        }
        r = line_buffer_append(&c->in, buf->base, (size_t) n);
        /* Hold a reference: a handler may close the connection. */
        connection_ref(c);
        while (r >= 0 && c->open && !c->close_after_write && (r = line_buffer_next(&c->in, &line, &len)) > 0)
                connection_handle_line(c, line, len);
        if (r == -EMSGSIZE && c->open) {
                /* The rest of an over-long line cannot be framed: answer and hang up. */
                log_warning("connection %" PRIu64 ": request line over %zu bytes, closing it", c->number,
                            FRAMING_LINE_MAX_BYTES);
                send_limit_error(c, "request_line_bytes", FRAMING_LINE_MAX_BYTES,
                                 "the request line is longer than the limit of 16 MiB");
        } else if (r == -ENOMEM)
                connection_close(c);
        connection_unref(c);
}

static bool peer_allowed(uv_pipe_t *pipe, uint64_t number) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        uv_os_fd_t fd;

        if (uv_fileno((uv_handle_t *) pipe, &fd) < 0)
                return false;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return false;
        if (cred.uid == geteuid() || cred.uid == 0)
                return true;
        log_warning("connection %" PRIu64 ": refused: peer uid %u (pid %d) is not ours", number, (unsigned) cred.uid,
                    (int) cred.pid);
        return false;
}

static void on_connection(uv_stream_t *listener, int status) {
        Server *s = listener->data;
        Connection *c;

        if (status < 0) {
                log_warning("accept failed: %s", uv_strerror(status));
                return;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return;
        rpc_peer_init(&c->peer, &server_peer_ops);
        /* An IPC pipe: its reads take the descriptors a client sends. */
        uv_pipe_init(s->loop, &c->pipe, 1);
        c->pipe.data = c;
        c->server = s;
        c->refs = 1;
        c->number = ++connection_counter;
        line_buffer_init(&c->in, FRAMING_LINE_MAX_BYTES);
        if (uv_accept(listener, (uv_stream_t *) &c->pipe) < 0) {
                uv_close((uv_handle_t *) &c->pipe, on_close);
                return;
        }
        if (!peer_allowed(&c->pipe, c->number)) {
                uv_close((uv_handle_t *) &c->pipe, on_close);
                return;
        }

        c->open = true;
        c->next = s->connections;
        if (s->connections)
                s->connections->prev = c;
        s->connections = c;
        s->n_connections++;

        if (s->n_connections > s->limits.connections) {
                log_warning("connection %" PRIu64 ": refused: %u connections is the limit", c->number,
                            s->limits.connections);
                send_limit_error(c, "connections", s->limits.connections, "too many connections to msb-imaged");
                return;
        }
        log_debug("connection %" PRIu64 " accepted", c->number);
        connection_update_reading(c);
}

static bool socket_is_live(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return false;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        return connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
}

/* The socket's directory: ours, not a symlink (one planted by another user
 * would have us chmod whatever it points at), and made 0700 so that only
 * our user may even reach the socket. */
static int socket_secure_dir(const char *dir, MsbError *err) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;

        if (fd < 0) {
                int r = negative_errno();
                bool link = lstat(dir, &st) == 0 && S_ISLNK(st.st_mode);
                return msb_error_set(err, r, PROTO_ERROR_INTERNAL_ERROR, "cannot use the socket directory %s: %s", dir,
                                     link ? "it is a symlink" : strerror(-r));
        }
        if (fstat(fd, &st) < 0)
                return msb_error_set(err, negative_errno(), PROTO_ERROR_INTERNAL_ERROR, "cannot stat %s", dir);
        if (st.st_uid != geteuid())
                return msb_error_set(err, -EPERM, PROTO_ERROR_INTERNAL_ERROR,
                                     "the socket directory %s belongs to uid %u, not to this daemon's uid %u", dir,
                                     (unsigned) st.st_uid, (unsigned) geteuid());
        if ((st.st_mode & 07777) != SERVER_DIRECTORY_MODE && fchmod(fd, SERVER_DIRECTORY_MODE) < 0)
                return msb_error_set(err, negative_errno(), PROTO_ERROR_INTERNAL_ERROR, "cannot chmod %s", dir);
        return 0;
}

static int socket_prepare_path(const char *path, MsbError *err) {
        _cleanup_free_ char *dir = strdup(path);
        struct stat st;
        char *slash;
        int r;

        if (!dir)
                return -ENOMEM;
        if (strlen(path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return msb_error_set(err, -ENAMETOOLONG, PROTO_ERROR_INTERNAL_ERROR, "socket path %s is too long", path);
        slash = strrchr(dir, '/');
        if (slash && slash != dir) {
                *slash = '\0';
                r = mkdir_p(dir, SERVER_DIRECTORY_MODE);
                if (r < 0)
                        return msb_error_set(err, r, PROTO_ERROR_INTERNAL_ERROR, "cannot create %s: %s", dir,
                                             strerror(-r));
                r = socket_secure_dir(dir, err);
                if (r < 0)
                        return r;
        }

        /* A socket left by a daemon that died is replaced; one that still
         * accepts connections belongs to a live daemon (perhaps on another
         * store) and is not ours to take. Anything else is not ours either. */
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return msb_error_set(err, -EEXIST, PROTO_ERROR_INTERNAL_ERROR,
                                             "%s exists and is not a socket", path);
                if (socket_is_live(path))
                        return msb_error_set(err, -EADDRINUSE, PROTO_ERROR_INTERNAL_ERROR,
                                             "%s is in use by another running daemon", path);
                if (unlink(path) < 0)
                        return msb_error_set(err, negative_errno(), PROTO_ERROR_INTERNAL_ERROR,
                                             "cannot remove the stale socket %s", path);
        }
        return 0;
}

int server_new(uv_loop_t *loop, Rpc *rpc, const char *path, int listen_fd, Server **ret, MsbError *err) {
        Server *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->loop = loop;
        s->rpc = rpc;
        s->limits = server_limits_default();
        s->path = path ? strdup(path) : NULL;
        uv_pipe_init(loop, &s->listener, 0);
        s->listener.data = s;

        if (listen_fd >= 0) {
                r = uv_pipe_open(&s->listener, listen_fd);
                if (r < 0) {
                        msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR, "cannot adopt the passed socket: %s",
                                      uv_strerror(r));
                        goto fail;
                }
        } else {
                r = socket_prepare_path(path, err);
                if (r < 0)
                        goto fail;
                /* The socket is created with mode 0600 from the start: no window
                 * in which another user could connect. */
                mode_t old = umask(0177);
                r = uv_pipe_bind(&s->listener, path);
                umask(old);
                if (r < 0) {
                        msb_error_set(err, -EADDRINUSE, PROTO_ERROR_INTERNAL_ERROR, "cannot bind %s: %s", path,
                                      uv_strerror(r));
                        goto fail;
                }
                (void) chmod(path, SERVER_SOCKET_MODE);
        }
        r = uv_listen((uv_stream_t *) &s->listener, SERVER_LISTEN_BACKLOG, on_connection);
        if (r < 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR, "cannot listen on %s: %s", path ?: "the socket",
                              uv_strerror(r));
                goto fail;
        }
        s->listening = true;
        *ret = s;
        return 0;

fail:
        uv_close((uv_handle_t *) &s->listener, NULL);
        /* The listener is part of s: free it only after the loop ran the close. */
        uv_run(loop, UV_RUN_NOWAIT);
        free(s->path);
        free(s);
        return -EINVAL;
}

void server_stop_listening(Server *s) {
        if (!s->listening)
                return;
        s->listening = false;
        uv_close((uv_handle_t *) &s->listener, NULL);
        if (s->path)
                (void) unlink(s->path);
}

void server_close_connections(Server *s) {
        while (s->connections)
                connection_close(s->connections);
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        free(s->path);
        free(s);
        return NULL;
}

unsigned server_n_connections(const Server *s) {
        return s->n_connections;
}

unsigned server_connections_max(const Server *s) {
        return s->limits.connections;
}

ServerLimits server_limits_default(void) {
        return (ServerLimits) {
                .connections = SERVER_CONNECTIONS_MAX,
                .connection_answer_bytes = SERVER_CONNECTION_ANSWER_MAX_BYTES,
                .answer_bytes = SERVER_ANSWER_MAX_BYTES,
        };
}

void server_set_limits(Server *s, const ServerLimits *limits) {
        s->limits = *limits;
}

size_t server_answer_bytes(const Server *s) {
        return s->answer_bytes;
}

void server_set_idle_callback(Server *s, void (*cb)(void *userdata), void *userdata) {
        s->idle_cb = cb;
        s->idle_userdata = userdata;
}
