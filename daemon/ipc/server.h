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

/* README "Limits": at most this many connections at once; fewer when the
 * file descriptors the daemon may open cannot hold that many beside what
 * the store, loads and pulls need (main.c sizes it at start). */
#define SERVER_CONNECTIONS_MAX ((unsigned) PROTO_LIMIT_CONNECTIONS)
/*
 * README "Limits": the answer bytes the daemon holds for one connection (a
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
/*
 * README "Limits": file descriptors a connection may have received
 * (SCM_RIGHTS) and not yet handed to a request line, which happens once
 * the line is complete. A client sends one per image.load with the line
 * that names it (RPC_REQUEST_FDS_MAX at most per line); this leaves room
 * for a few such lines pipelined. One more is a limit-exceeded error and
 * the connection is closed: descriptors are the daemon's scarcest
 * resource (ARCHITECTURE.md "Fairness").
 */
#define SERVER_CONNECTION_FDS_MAX ((unsigned) PROTO_LIMIT_CONNECTION_PENDING_FDS)
#define SERVER_SOCKET_MODE 0600
#define SERVER_DIRECTORY_MODE 0700

typedef struct Server Server;

/* The answer limits a server holds its connections to: server_new() starts
 * with the protocol's (above); tests lower them to reach them cheaply.
 * Reading from a connection pauses once it holds half its limit, so a
 * client that reads its answers slowly is slowed down before it meets it. */
typedef struct ServerLimits {
        unsigned connections;
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
/* The most connections served at once (what server_set_limits() set). */
unsigned server_connections_max(const Server *s);
/* Called (with userdata) whenever the number of connections drops to zero. */
void server_set_idle_callback(Server *s, void (*cb)(void *userdata), void *userdata);
void server_set_limits(Server *s, const ServerLimits *limits);
/* Answer bytes all connections hold (see connection_answer_reserve). */
size_t server_answer_bytes(const Server *s);
