/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * JSON-RPC 2.0 over NDJSON: request validation, batches, notifications and
 * dispatch. The methods and the shape of their params come from the OpenRPC
 * document in proto/ (embedded at build time): params are validated against
 * it before a handler runs, and rpc_new() refuses a method table that does
 * not match it, name for name.
 */

#include <jansson.h>
#include <uv.h>

#include "error.h"

typedef struct Rpc Rpc;
typedef struct RpcCall RpcCall;
typedef struct Connection Connection;

typedef enum RpcMode {
        RPC_INLINE,   /* quick: runs on the loop thread */
        RPC_WORKER,   /* blocking: runs in the uv work queue */
        RPC_DEFERRED, /* event-driven: the handler returns RPC_PENDING and
                       * completes the call later with rpc_call_complete() */
} RpcMode;

/* A handler's return value when it will complete the call later. */
#define RPC_PENDING 1

/* 0 with *ret the result (stolen), or negative errno with err set (an unset
 * err becomes internal-error). */
typedef int (*RpcHandler)(RpcCall *call, json_t *params, json_t **ret, MsbError *err);

typedef struct RpcMethod {
        const char *name;
        RpcHandler handler;
        RpcMode mode;
} RpcMethod;

/* JSON nesting deeper than this is refused with a parse error; it is the
 * depth jansson's parser itself stops at. */
#define RPC_JSON_DEPTH_MAX ((size_t) PROTO_LIMIT_JSON_NESTING_DEPTH)

/* DESIGN "Limits": requests in one batch. A real client batches a handful
 * of calls (the SDK and the CLI send none); a thousand is far past any of
 * them, and bounds what one line can set running (a 16 MiB line holds some
 * 300,000 tiny requests) and the members a batch's reply can have. A
 * larger batch is refused whole with one limit-exceeded error, id null. */
#define RPC_BATCH_MEMBERS_MAX ((size_t) PROTO_LIMIT_BATCH_MEMBERS)

int rpc_new(uv_loop_t *loop, const RpcMethod *methods, size_t n_methods, void *userdata, Rpc **ret,
            MsbError *err);
Rpc *rpc_free(Rpc *rpc);
DEFINE_TRIVIAL_CLEANUP_FUNC(Rpc *, rpc_free);

/* Handles one received line of conn. */
void rpc_handle_line(Rpc *rpc, Connection *conn, const char *line, size_t len);

/* From now on, new calls of methods that write are refused with shutting-down. */
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

void *rpc_call_userdata(const RpcCall *call);
/* Completes a deferred call: result (stolen) or err. */
void rpc_call_complete(RpcCall *call, json_t *result, const MsbError *err);
/* Sends a notification to the caller's connection, if it is still open. */
void rpc_call_notify(RpcCall *call, const char *method, json_t *params);
/* The request id as JSON (borrowed; NULL for a notification). */
json_t *rpc_call_id(const RpcCall *call);
/* True while the caller's connection is open. */
bool rpc_call_connected(const RpcCall *call);

/* Builds a JSON-RPC error response object (exposed for the tests and the
 * server's limit errors). */
json_t *rpc_error_response(json_t *id, const MsbError *err);
/* The same as one line of JSON text, or NULL when out of memory. */
char *rpc_error_response_text(json_t *id, const MsbError *err);

/* Validates params against method `name`'s declared params (exposed for
 * unit tests). 0, or -EINVAL with err set to invalid-params naming the field. */
int rpc_validate_params(const Rpc *rpc, const char *name, json_t *params, MsbError *err);
