/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What the rpc files share: the method entries, calls, batches. */

#include <pthread.h>

#include "rpc.h"

/* A notification a worker handler sent, on its way to the loop. */
typedef struct RpcWorkerNote {
        RpcCall *call;
        const char *method; /* static */
        json_t *params;
        struct RpcWorkerNote *next;
} RpcWorkerNote;

/* One declared param of a method, from the OpenRPC document. */
typedef struct ParamSpec {
        const char *name;
        bool required;
        const char *type;    /* JSON schema type: string, boolean, integer, ... */
        json_t *enum_values; /* borrowed from the document, or NULL */
        json_int_t min_length, max_length; /* -1 when not declared */
        json_t *minimum;     /* an integer's least value (borrowed), or NULL */
        const RpcField *field; /* the method's decoding of it */
} ParamSpec;

typedef struct MethodEntry {
        const RpcMethod *method;
        ParamSpec *params;
        size_t n_params;
} MethodEntry;

struct Rpc {
        uv_loop_t *loop;
        json_t *document;
        char *document_text; /* the document as compact JSON, for rpc.discover */
        MethodEntry *entries;
        size_t n_entries;
        RpcLoopContext *loop_ctx;
        RpcWorkerContext *worker_ctx;
        unsigned in_flight;
        unsigned running;    /* worker calls on the thread pool */
        RpcPeer *round;      /* peers with worker calls waiting, next to serve first */
        unsigned n_round;
        bool shutting_down;

        /* Notifications of worker handlers, oldest first, for the loop to
         * send (rpc_call_notify_from_worker()); notes_async wakes it. */
        uv_async_t notes_async;
        bool notes_open;
        pthread_mutex_t notes_lock;
        RpcWorkerNote *notes_head, *notes_tail;
};

/* The responses of a batch are sent together, as one array, once all of its
 * calls have completed (JSON-RPC 2.0 section 6). The array is built as text,
 * a member at a time as its call completes, and each member's bytes are
 * counted in the connection's answer bytes as it is added: a batch's reply
 * never holds more than the connection may. */
typedef struct Batch {
        RpcPeer *peer;
        unsigned pending;
        char *text;      /* "[", then each member followed by ',' */
        size_t size, allocated;
        size_t reserved; /* answer bytes counted for text, its newline included */
        bool dropped;    /* no reply: the connection closed or crossed a limit */
} Batch;

struct RpcCall {
        Rpc *rpc;
        RpcPeer *peer;
        Batch *batch;
        const MethodEntry *entry;
        json_t *id;      /* NULL for a notification */
        json_t *params;  /* the request's, kept for the strings decoded from it */
        void *decoded;   /* the method's params struct */
        json_t *result;
        const char *result_text; /* JSON text of the result, when the handler gave it as text */
        char *result_text_owned; /* result_text, when the call owns it */
        MsbError err;
        int r;
        uv_work_t work;
        RpcCall *queue_next; /* in its peer's queue while waiting for a worker */
        /* Deferred calls: in the peer's list while pending, and what to do
         * when the caller gives up. */
        RpcCall *deferred_prev, *deferred_next;
        bool pending;
        bool cancelled;
        void (*on_cancel)(void *userdata);
        void *on_cancel_userdata;
};

/* rpc_params.c */
int rpc_params_load(Rpc *rpc, const RpcMethod *methods, size_t n_methods, MsbError *err);
void rpc_params_free(Rpc *rpc);
const MethodEntry *rpc_find(const Rpc *rpc, const char *name);
/* Validates and decodes params; RPC_FIELD_FD params take their descriptor
 * out of fds (may be NULL: there are none). */
int rpc_params_decode(const MethodEntry *e, json_t *params, RpcFds *fds, void **ret, MsbError *err);
/* Frees a decoded params struct, closing the descriptors it holds. */
void rpc_params_done(const MethodEntry *e, void *decoded);

/* rpc_answer.c */
/* Sends the response (text taken; NULL when it could not be built) to the
 * request id, or adds it to the batch. */
void rpc_deliver(RpcPeer *peer, Batch *batch, json_t *id, char *text);
/* A notification, which gets no response, is done. */
void rpc_deliver_none(Batch *batch);
int rpc_batch_new(RpcPeer *peer, size_t members, Batch **ret);
/* A member of the batch is done; after the last, its reply is sent. */
void rpc_batch_done(Batch *b);
/* The call's response as one JSON text, or NULL when it cannot be built. */
char *rpc_call_response_text(RpcCall *call);

/* rpc.c */
/* Answers and frees a call that ended (loop thread). */
void rpc_call_finish(RpcCall *call);
void rpc_call_run_worker(RpcCall *call);

/* Cancels every deferred call of the peer (it hung up). */
void rpc_peer_cancel_all(RpcPeer *peer);

/* rpc_sched.c */
/* Queues a worker call on its peer and starts what the slots allow. */
void rpc_sched_enqueue(Rpc *rpc, RpcCall *call);
/* A worker call ended: its slot goes to the next peer in the round. */
void rpc_sched_done(Rpc *rpc, RpcCall *call);
/* Answers every waiting call shutting-down. */
void rpc_sched_refuse_waiting(Rpc *rpc);
/* The notes of worker handlers: set up with the loop, sent by the loop
 * (also right before a worker call's answer), closed at shutdown. */
int rpc_notes_open(Rpc *rpc);
void rpc_notes_flush(Rpc *rpc);
void rpc_notes_close(Rpc *rpc);
/* The peer's calls in flight changed: pause or resume its reading. */
void rpc_peer_update_paused(RpcPeer *p);
