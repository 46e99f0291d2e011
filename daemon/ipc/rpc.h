/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * JSON-RPC 2.0 over NDJSON: request validation, typed params, batches,
 * notifications, dispatch and the fair scheduling of blocking calls
 * (ARCHITECTURE.md "The path of a request").
 *
 * The interface is data: each method declares a table of its params
 * (name, type, offset in its params struct, required), which rpc_new()
 * checks against the OpenRPC document in proto/ both ways, so the table and
 * the protocol cannot drift apart. A request's params are validated against
 * the document and decoded into the method's struct before its handler runs.
 *
 * The transport is data too: rpc reaches a connection only through the
 * RpcPeerOps its server gives it, and never includes the server.
 */

#include <jansson.h>
#include <uv.h>

#include "error.h"

typedef struct Rpc Rpc;
typedef struct RpcCall RpcCall;
typedef struct RpcPeer RpcPeer;

/* What the daemon gives its handlers, by thread: the loop's (the store's
 * read connection, the pull manager, ...) only to the handlers that run on
 * the loop, the workers' (the store) only to those that run on a worker.
 * Defined by the daemon; opaque here. */
typedef struct RpcLoopContext RpcLoopContext;
typedef struct RpcWorkerContext RpcWorkerContext;

typedef enum RpcMode {
        RPC_INLINE,   /* quick: runs on the loop thread */
        RPC_WORKER,   /* blocking: runs on a worker thread, scheduled fairly between connections */
        RPC_DEFERRED, /* event-driven: starts on the loop, returns RPC_PENDING and completes
                       * later with rpc_call_complete() */
} RpcMode;

/* A handler's return value when it will complete the call later. */
#define RPC_PENDING 1

/* Handlers get their params decoded (const, borrowed for the call) and
 * return 0 with *ret the result (stolen), or a negative errno with err set
 * (an unset err becomes internal-error). */
typedef int (*RpcLoopHandler)(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err);
typedef int (*RpcWorkerHandler)(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                                MsbError *err);

typedef enum RpcFieldType {
        RPC_FIELD_STRING, /* const char *, NULL when absent */
        RPC_FIELD_BOOL,   /* bool, false when absent */
        RPC_FIELD_INT,    /* int64_t, RPC_FIELD_INT_ABSENT when absent */
        RPC_FIELD_ENUM,   /* int: the index of the value in enum_names; -1 when absent */
        RPC_FIELD_JSON,   /* json_t * (borrowed), NULL when absent: a schema without a type */
        RPC_FIELD_FD,     /* int: a file descriptor received with the request line, named by its
                           * index among them (an "integer" in proto/); -EBADF when absent. The
                           * call owns it and rpc closes it when the call ends. */
} RpcFieldType;

#define RPC_FIELD_INT_ABSENT INT64_MIN

/* README "Limits": file descriptors (SCM_RIGHTS) one request line may bring.
 * A load takes one; a few leave room for a batch of loads. */
#define RPC_REQUEST_FDS_MAX ((unsigned) PROTO_LIMIT_REQUEST_FDS)

/* The file descriptors that came with one request line, in the order
 * received. A request's RPC_FIELD_FD param takes one (its slot becomes
 * -EBADF); whoever handed the line to rpc closes what is left. */
typedef struct RpcFds {
        int fds[RPC_REQUEST_FDS_MAX];
        unsigned n;
} RpcFds;

/* Closes every descriptor still in fds. */
void rpc_fds_close(RpcFds *fds);

/* One param of a method: how it is decoded into the method's params struct. */
typedef struct RpcField {
        const char *name;
        RpcFieldType type;
        size_t offset;
        bool required;
        const char *const *enum_names; /* RPC_FIELD_ENUM: the document's values, in its order, NULL-terminated */
} RpcField;

typedef struct RpcMethod {
        const char *name;
        RpcMode mode;
        RpcLoopHandler on_loop;     /* RPC_INLINE, RPC_DEFERRED */
        RpcWorkerHandler on_worker; /* RPC_WORKER */
        const RpcField *fields;     /* terminated by an entry without name; NULL for none */
        size_t params_size;         /* of the struct fields decode into */
} RpcMethod;

/* JSON nesting deeper than this is refused with a parse error; it is the
 * depth jansson's parser itself stops at. */
#define RPC_JSON_DEPTH_MAX ((size_t) PROTO_LIMIT_JSON_NESTING_DEPTH)

/* README "Limits": requests in one batch. A real client batches a handful
 * of calls (the SDK and the CLI send none); a thousand is far past any of
 * them, and bounds what one line can set running (a 16 MiB line holds some
 * 300,000 tiny requests) and the members a batch's reply can have. A
 * larger batch is refused whole with one limit-exceeded error, id null. */
#define RPC_BATCH_MEMBERS_MAX ((size_t) PROTO_LIMIT_BATCH_MEMBERS)

/*
 * Fair scheduling of blocking calls (issue: one client's 300,000 queued
 * prunes delayed another's system.df by 70 s). Each connection queues its
 * worker calls; rpc keeps at most RPC_WORKER_SLOTS of them running on the
 * thread pool, taken round-robin from the connections that have some
 * waiting, at most RPC_PEER_RUNNING_MAX per connection. So another client's
 * call waits for at most one call of each busy connection ahead of it in
 * the round, never for a whole backlog. The pool's other threads are the
 * pulls' conversions.
 */
#define RPC_WORKER_SLOTS 12U
#define RPC_PEER_RUNNING_MAX 4U
/* Calls of one connection in flight (queued, running or deferred) at which
 * reading from it pauses until it drops below: a client that pipelines
 * faster than it is served waits in the kernel's socket buffer, not in our
 * memory. One line may go past it (a batch of up to 1,000). */
#define RPC_PEER_CALLS_MAX 64U

/*
 * How rpc reaches a connection (sd-varlink keeps its interface as data the
 * same way). The server embeds an RpcPeer in each connection and
 * implements these on it.
 */
typedef struct RpcPeerOps {
        /* Counts bytes more of answers held for the peer: 0; -E2BIG with err
         * naming the limit they would cross (nothing counted); -ENOTCONN
         * when the peer takes no more answers. */
        int (*answer_reserve)(RpcPeer *p, size_t bytes, MsbError *err);
        /* Gives back reserved bytes that will not be sent after all. */
        void (*answer_release)(RpcPeer *p, size_t bytes);
        /* Queues text (taken; one JSON text without its newline) as one
         * line whose bytes, its newline included, were reserved. */
        void (*send_reserved)(RpcPeer *p, char *text, size_t reserved);
        /* Queues text (taken) past the limits as the last line, then hangs up. */
        void (*send_last)(RpcPeer *p, char *text);
        /* Hangs up at once: for an answer that could not be built. */
        void (*abort)(RpcPeer *p);
        /* A call (or batch) of the peer starts / ends: holds the peer alive. */
        void (*hold)(RpcPeer *p);
        void (*release)(RpcPeer *p);
        bool (*is_open)(const RpcPeer *p);
        /* Reading from the peer pauses (true) or may resume (false). */
        void (*set_paused)(RpcPeer *p, bool paused);
        /* The answer bytes held for the peer: reserved and not yet taken
         * by the kernel. */
        size_t (*answer_bytes)(const RpcPeer *p);
} RpcPeerOps;

/* Someone to tell when a peer goes (an events subscription, say): embed it,
 * register it with rpc_peer_watch(); it is called once, on the loop, when
 * the peer closes, and is unregistered by then. */
typedef struct RpcPeerWatch RpcPeerWatch;
struct RpcPeerWatch {
        void (*closed)(RpcPeerWatch *w);
        RpcPeerWatch *next;
};

/* The part of a connection that rpc keeps. Loop thread only. */
struct RpcPeer {
        const RpcPeerOps *ops;
        RpcCall *deferred;                /* deferred calls in flight, for rpc.cancel and hang-ups */
        RpcPeerWatch *watches;
        RpcCall *queue_head, *queue_tail; /* worker calls not started yet, oldest first */
        unsigned n_queued;
        unsigned n_running;               /* worker calls running */
        unsigned n_calls;                 /* calls in flight: queued, running, deferred */
        bool paused;
        bool scheduled;                   /* in the round of peers with calls waiting */
        RpcPeer *round_prev, *round_next;
};

void rpc_peer_init(RpcPeer *p, const RpcPeerOps *ops);
/* The peer is gone: its calls not started yet are dropped unanswered, its
 * deferred calls are told they were cancelled, its watches are called. */
void rpc_peer_closed(Rpc *rpc, RpcPeer *p);
void rpc_peer_watch(RpcPeer *p, RpcPeerWatch *w);
void rpc_peer_unwatch(RpcPeer *p, RpcPeerWatch *w);
/* Sends a notification (params stolen) to the peer outside any call:
 * 0; -E2BIG when it would cross the peer's answer limits (it is dropped:
 * the caller counts what it lost); -ENOTCONN; -ENOMEM. Loop thread. */
int rpc_peer_notify(RpcPeer *p, const char *method, json_t *params);
/* The answer bytes held for the peer and not yet written to it: what a
 * subscriber that does not read has let pile up. Loop thread. */
size_t rpc_peer_answer_bytes(const RpcPeer *p);

int rpc_new(uv_loop_t *loop, const RpcMethod *methods, size_t n_methods, RpcLoopContext *loop_ctx,
            RpcWorkerContext *worker_ctx, Rpc **ret, MsbError *err);
/* Closes the loop handle rpc keeps (for notifications from workers); the
 * loop then runs its close callback. Before rpc_free(), at shutdown. */
void rpc_close(Rpc *rpc);
Rpc *rpc_free(Rpc *rpc);
DEFINE_TRIVIAL_CLEANUP_FUNC(Rpc *, rpc_free);

/* Handles one received line of the peer, with the descriptors that came
 * with it (NULL for none); the requests take those they name. */
void rpc_handle_line(Rpc *rpc, RpcPeer *peer, const char *line, size_t len, RpcFds *fds);

/* From now on, new calls of methods that are not inline are refused with
 * shutting-down, and so are, at once, the worker calls still waiting. */
void rpc_shutdown(Rpc *rpc);
/* Calls started and not yet completed. */
unsigned rpc_in_flight(const Rpc *rpc);

/* Answers the call with JSON text the handler wrote itself (taken over);
 * the handler then returns 0 with *ret left NULL. For large answers where a
 * jansson tree would cost more than the work. */
void rpc_call_set_raw_result(RpcCall *call, char *json_text);
/* The same with text that outlives the call (borrowed): an answer every
 * caller shares, built once. */
void rpc_call_set_shared_result(RpcCall *call, const char *json_text);
/* The OpenRPC document as compact JSON text, serialised once by rpc_new(). */
const char *rpc_call_document_text(const RpcCall *call);

/* Completes a deferred call: result (stolen) or err. Loop thread. */
void rpc_call_complete(RpcCall *call, json_t *result, const MsbError *err);
/* What a deferred call's handler does when its caller gives up on it, by
 * rpc.cancel or by hanging up: fn(userdata) runs once, on the loop, and the
 * handler must then complete the call (any answer; nobody may read it). A
 * call completed before that never sees it. */
void rpc_call_on_cancel(RpcCall *call, void (*fn)(void *userdata), void *userdata);
/* The connection a loop handler's call came on (for subscriptions). */
RpcPeer *rpc_call_peer(RpcCall *call);
/* rpc.cancel: the peer gives up on its deferred call with that id. 0, or
 * -ENOENT when it has none in flight. */
int rpc_peer_cancel(RpcPeer *peer, json_t *id);
/* Sends a notification (params stolen) to the caller, within its answer
 * limits. Loop thread. */
void rpc_call_notify(RpcCall *call, const char *method, json_t *params);
/* The same from the worker thread that runs the call (a RPC_WORKER
 * handler): the notification goes to the loop, which sends it in order and
 * before the call's answer. Thread-safe. */
void rpc_call_notify_from_worker(RpcCall *call, const char *method, json_t *params);
/* The request id as JSON (borrowed; NULL for a notification). */
json_t *rpc_call_id(const RpcCall *call);
/* True while the caller's connection is open. Loop thread. */
bool rpc_call_connected(const RpcCall *call);

/* Builds a JSON-RPC error response object (exposed for the tests). */
json_t *rpc_error_response(json_t *id, const MsbError *err);
/* The same as one line of JSON text, or NULL when out of memory. */
char *rpc_error_response_text(json_t *id, const MsbError *err);

/* Validates params against method name's declared params and decodes them
 * into *ret (a struct of the method's params_size, freed with
 * rpc_decoded_free()), taking the descriptors its fd params name out of fds
 * (NULL: none came). 0, or -EINVAL with err set to invalid-params naming
 * the field. Exposed for the tests and the fuzz target. */
int rpc_decode_params(const Rpc *rpc, const char *name, json_t *params, RpcFds *fds, void **ret, MsbError *err);
/* Frees what rpc_decode_params() decoded, closing the descriptors it took. */
void rpc_decoded_free(const Rpc *rpc, const char *name, void *decoded);
