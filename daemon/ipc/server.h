/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The Unix socket server on the libuv loop: accepts connections (peer uid
 * checked with SO_PEERCRED), frames what they send into lines for the RPC
 * layer, writes responses, and applies the connection and line limits.
 *
 * Connections are reference counted: each call in flight holds one, so a
 * client that hangs up never frees memory a worker still uses. A connection
 * is freed in its close callback, never inside its own read callback.
 */

#include <jansson.h>
#include <uv.h>

#include "rpc.h"

/* DESIGN "Limits": at most this many connections at once. */
#define SERVER_CONNECTIONS_MAX ((unsigned) PROTO_LIMIT_CONNECTIONS)
/*
 * DESIGN "Limits": the answer bytes the daemon holds for one connection (a
 * batch's reply as it grows, and lines queued and not yet taken by the
 * kernel). 64 MiB holds the largest answers a real client gets (an
 * image.list of a hundred thousand images, an inspect of a 4 MiB config)
 * many times over, while a client that asks faster than it reads, or asks
 * for rpc.discover's document a thousand times in one line, meets it: past
 * it, an answer is replaced by a small limit-exceeded error.
 */
#define SERVER_CONNECTION_ANSWER_MAX_BYTES ((size_t) PROTO_LIMIT_CONNECTION_PENDING_ANSWER_BYTES)
/* The same for all connections together: 1024 connections at their limit
 * would hold 64 GiB, so the daemon as a whole holds at most 512 MiB of
 * answers, eight connections at their limit. */
#define SERVER_ANSWER_MAX_BYTES ((size_t) PROTO_LIMIT_PENDING_ANSWER_BYTES)
/* Connections the kernel queues before we accept them: a burst of as many
 * clients as we serve at once must not see EAGAIN on connect(). */
#define SERVER_LISTEN_BACKLOG ((int) SERVER_CONNECTIONS_MAX)
#define SERVER_SOCKET_MODE 0600
#define SERVER_DIRECTORY_MODE 0700

typedef struct Server Server;

/* The answer limits a server holds its connections to: server_new() starts
 * with the protocol's (above); tests lower them to reach them cheaply.
 * Reading from a connection pauses once it holds half its limit, so a
 * client that reads its answers slowly is slowed down before it meets it. */
typedef struct ServerLimits {
        size_t connection_answer_bytes;
        size_t answer_bytes;
} ServerLimits;

ServerLimits server_limits_default(void);

/* Creates and binds the socket at path (its directory created 0700, the
 * socket 0600, a stale socket replaced), or adopts listen_fd when >= 0. */
int server_new(uv_loop_t *loop, Rpc *rpc, const char *path, int listen_fd, Server **ret, MsbError *err);
/* Stops accepting; open connections keep being served. */
void server_stop_listening(Server *s);
/* Closes every connection; the loop then runs the close callbacks. */
void server_close_connections(Server *s);
Server *server_free(Server *s);
unsigned server_n_connections(const Server *s);
/* Called (with userdata) whenever the number of connections drops to zero. */
void server_set_idle_callback(Server *s, void (*cb)(void *userdata), void *userdata);
void server_set_limits(Server *s, const ServerLimits *limits);
/* Answer bytes all connections hold (see connection_answer_reserve). */
size_t server_answer_bytes(const Server *s);

Connection *connection_ref(Connection *c);
void connection_unref(Connection *c);
bool connection_is_open(const Connection *c);
/* A call (or batch) of the connection starts / ends: holds a reference, and
 * keeps a half-closed connection open until its answers are written. */
void connection_call_begin(Connection *c);
void connection_call_end(Connection *c);
/*
 * Answer bytes. Every byte the daemon holds for a connection's answers is
 * counted here, and only here: from the moment it is reserved (a batch's
 * reply reserves each member's bytes as the member completes) until the
 * kernel has taken the line, against the connection's limit and the limit
 * of all connections together.
 *
 * connection_answer_reserve() counts bytes more: 0; -E2BIG with err naming
 * the limit they would cross (nothing counted); -ENOTCONN when the
 * connection no longer takes answers. connection_answer_release() gives
 * back bytes that will not be sent after all.
 */
int connection_answer_reserve(Connection *c, size_t bytes, MsbError *err);
void connection_answer_release(Connection *c, size_t bytes);
/* Queues text (taken; one JSON text without its newline) as one line, whose
 * bytes, its newline included, were reserved as `reserved`. */
void connection_send_reserved(Connection *c, char *text, size_t reserved);
/* Queues text (taken) past the answer limits as the connection's last line:
 * it stops reading, drops every later answer and closes once the line is
 * written. For the one error that tells a client which limit it crossed. */
void connection_send_last(Connection *c, char *text);
/* Hangs up at once: for an answer the daemon could not build, which would
 * otherwise leave its caller waiting forever. */
void connection_abort(Connection *c);
/* Serialises a notification (borrowed) as one line and queues it within the
 * answer limits; past them, or when closed, it is dropped. */
void connection_send(Connection *c, json_t *msg);
