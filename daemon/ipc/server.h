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
/* Reading from a client pauses while this many response bytes wait to be
 * written to it, so a client that never reads cannot grow our memory. */
#define SERVER_WRITE_QUEUE_HIGH_BYTES ((size_t) (64 * MiB))
/* Connections the kernel queues before we accept them: a burst of as many
 * clients as we serve at once must not see EAGAIN on connect(). */
#define SERVER_LISTEN_BACKLOG ((int) SERVER_CONNECTIONS_MAX)
#define SERVER_SOCKET_MODE 0600
#define SERVER_DIRECTORY_MODE 0700

typedef struct Server Server;

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

Connection *connection_ref(Connection *c);
void connection_unref(Connection *c);
bool connection_is_open(const Connection *c);
/* A call (or batch) of the connection starts / ends: holds a reference, and
 * keeps a half-closed connection open until its answers are written. */
void connection_call_begin(Connection *c);
void connection_call_end(Connection *c);
/* Serialises msg (borrowed) as one line and queues it; dropped when closed. */
void connection_send(Connection *c, json_t *msg);
/* Queues text (taken over; one JSON text without its newline) as one line. */
void connection_send_text(Connection *c, char *text);
