/* SPDX-License-Identifier: Apache-2.0 */
#include "log.h"
#include "rpc_internal.h"

/* Requests: parsing a line, checking a request, dispatching its call by the
 * method's mode, and the call's life until it is answered. */

int rpc_new(uv_loop_t *loop, const RpcMethod *methods, size_t n_methods, RpcLoopContext *loop_ctx,
            RpcWorkerContext *worker_ctx, Rpc **ret, MsbError *err) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_error_t jerr;
        int r;

        rpc = calloc(1, sizeof(*rpc));
        if (!rpc)
                return -ENOMEM;
        rpc->loop = loop;
        pthread_mutex_init(&rpc->notes_lock, NULL);
        rpc->loop_ctx = loop_ctx;
        rpc->worker_ctx = worker_ctx;
        rpc->document = json_loadb(proto_openrpc_json, proto_openrpc_json_len, 0, &jerr);
        if (!rpc->document)
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR, "the embedded OpenRPC document is invalid: %s",
                                     jerr.text);
        rpc->document_text = json_dumps(rpc->document, JSON_COMPACT);
        if (!rpc->document_text)
                return -ENOMEM;
        r = rpc_params_load(rpc, methods, n_methods, err);
        if (r < 0)
                return r;
        r = rpc_notes_open(rpc);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot set up notifications from workers");
        *ret = TAKE_PTR(rpc);
        return 0;
}

void rpc_close(Rpc *rpc) {
        if (rpc)
                rpc_notes_close(rpc);
}

Rpc *rpc_free(Rpc *rpc) {
        if (!rpc)
                return NULL;
        /* rpc_close() closed the handle and the loop has run since; notes
         * of workers abandoned at shutdown are dropped. */
        rpc_notes_flush(rpc);
        pthread_mutex_destroy(&rpc->notes_lock);
        rpc_params_free(rpc);
        json_decref(rpc->document);
        free(rpc->document_text);
        free(rpc);
        return NULL;
}

/* ---- calls ---- */

static void call_free(RpcCall *call) {
        RpcPeer *peer = call->peer;

        json_decref(call->id);
        json_decref(call->params);
        json_decref(call->result);
        rpc_params_done(call->entry, call->decoded);
        free(call->result_text_owned);
        msb_error_clear(&call->err);
        free(call);
        peer->n_calls--;
        rpc_peer_update_paused(peer);
        peer->ops->release(peer);
}

void rpc_call_set_raw_result(RpcCall *call, char *json_text) {
        free(call->result_text_owned);
        call->result_text = call->result_text_owned = json_text;
}

void rpc_call_set_shared_result(RpcCall *call, const char *json_text) {
        free(call->result_text_owned);
        call->result_text_owned = NULL;
        call->result_text = json_text;
}

const char *rpc_call_document_text(const RpcCall *call) {
        return call->rpc->document_text;
}

static void deferred_unlink(RpcCall *call) {
        RpcPeer *peer = call->peer;

        if (!call->pending)
                return;
        call->pending = false;
        if (call->deferred_prev)
                call->deferred_prev->deferred_next = call->deferred_next;
        else
                peer->deferred = call->deferred_next;
        if (call->deferred_next)
                call->deferred_next->deferred_prev = call->deferred_prev;
        call->deferred_prev = call->deferred_next = NULL;
}

static void deferred_link(RpcCall *call) {
        RpcPeer *peer = call->peer;

        call->pending = true;
        call->deferred_next = peer->deferred;
        if (peer->deferred)
                peer->deferred->deferred_prev = call;
        peer->deferred = call;
}

void rpc_call_on_cancel(RpcCall *call, void (*fn)(void *userdata), void *userdata) {
        call->on_cancel = fn;
        call->on_cancel_userdata = userdata;
}

RpcPeer *rpc_call_peer(RpcCall *call) {
        return call->peer;
}

/* The caller gave up on a deferred call: its handler is told once. */
static void call_cancel(RpcCall *call) {
        if (!call->pending || call->cancelled)
                return;
        call->cancelled = true;
        if (call->on_cancel)
                call->on_cancel(call->on_cancel_userdata);
}

int rpc_peer_cancel(RpcPeer *peer, json_t *id) {
        for (RpcCall *c = peer->deferred; c; c = c->deferred_next)
                if (c->id && json_equal(c->id, id)) {
                        call_cancel(c);
                        return 0;
                }
        return -ENOENT;
}

void rpc_peer_cancel_all(RpcPeer *peer) {
        /* A handler may complete its call (and so unlink it) from on_cancel. */
        for (RpcCall *c = peer->deferred, *next; c; c = next) {
                next = c->deferred_next;
                call_cancel(c);
        }
}

void rpc_call_finish(RpcCall *call) {
        deferred_unlink(call);
        if (call->r < 0 && call->err.kind == PROTO_ERROR_INTERNAL_ERROR)
                log_error("%s failed: %s", call->entry->method->name, call->err.message);
        else if (call->r < 0)
                log_debug("%s: %s", call->entry->method->name, call->err.message);

        if (call->id)
                rpc_deliver(call->peer, call->batch, call->id, rpc_call_response_text(call));
        else
                rpc_deliver_none(call->batch);
        call->rpc->in_flight--;
        call_free(call);
}

static void call_ran(RpcCall *call, int r, json_t *result) {
        call->r = r;
        call->result = result;
        if (r < 0 && !call->err.set)
                msb_error_set(&call->err, r, PROTO_ERROR_INTERNAL_ERROR, "%s", strerror(-r));
}

/* On a worker thread: the call touches only its own fields and the workers' context. */
void rpc_call_run_worker(RpcCall *call) {
        json_t *result = NULL;
        int r = call->entry->method->on_worker(call, call->rpc->worker_ctx, call->decoded, &result, &call->err);
        call_ran(call, r, result);
}

static void call_run_loop(RpcCall *call) {
        json_t *result = NULL;
        int r = call->entry->method->on_loop(call, call->rpc->loop_ctx, call->decoded, &result, &call->err);
        call_ran(call, r, result);
}

void rpc_call_complete(RpcCall *call, json_t *result, const MsbError *err) {
        if (err && err->set) {
                call->r = -EIO;
                call->err = *err;
                call->err.data = json_incref(err->data);
                json_decref(result);
        } else {
                call->r = 0;
                call->result = result;
        }
        rpc_call_finish(call);
}

json_t *rpc_call_id(const RpcCall *call) {
        return call->id;
}

bool rpc_call_connected(const RpcCall *call) {
        return call->peer->ops->is_open(call->peer);
}

/* ---- requests ---- */

static bool id_is_valid(json_t *id) {
        /* JSON-RPC 2.0 section 4: a String, Number, or Null. */
        return json_is_string(id) || json_is_number(id) || json_is_null(id);
}

/* The request's envelope (JSON-RPC 2.0 section 4): its method entry, or an
 * error. *ret_id is the id to answer (NULL for a notification). */
static int request_check(Rpc *rpc, json_t *req, json_t **ret_id, const MethodEntry **ret, MsbError *err) {
        json_t *id, *method, *params, *version;

        *ret_id = NULL;
        if (!json_is_object(req))
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "a request must be a JSON object");
        id = json_object_get(req, "id");
        if (id && !id_is_valid(id))
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "id must be a string, a number or null");
        *ret_id = id;
        version = json_object_get(req, "jsonrpc");
        if (!json_is_string(version) || !streq(json_string_value(version), "2.0"))
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
        method = json_object_get(req, "method");
        if (!json_is_string(method))
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "method must be a string");
        params = json_object_get(req, "params");
        if (params && !json_is_object(params) && !json_is_array(params))
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "params must be an object or an array");
        *ret = rpc_find(rpc, json_string_value(method));
        if (!*ret)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_METHOD_NOT_FOUND, "no method named '%s'",
                                     json_string_value(method));
        if (rpc->shutting_down && (*ret)->method->mode != RPC_INLINE)
                return msb_error_set(err, -ESHUTDOWN, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");
        return 0;
}

static int call_new(Rpc *rpc, RpcPeer *peer, Batch *batch, const MethodEntry *e, json_t *id, json_t *params,
                    RpcFds *fds, RpcCall **ret, MsbError *err) {
        void *decoded = NULL;
        RpcCall *call;
        int r;

        r = rpc_params_decode(e, params, fds, &decoded, err);
        if (r < 0)
                return r;
        call = calloc(1, sizeof(*call));
        if (!call) {
                rpc_params_done(e, decoded);
                return msb_error_set(err, -ENOMEM, PROTO_ERROR_INTERNAL_ERROR, "out of memory");
        }
        *call = (RpcCall) {
                .rpc = rpc,
                .peer = peer,
                .batch = batch,
                .entry = e,
                .id = json_incref(id),
                .params = params ? json_incref(params) : json_object(),
                .decoded = decoded,
        };
        peer->ops->hold(peer);
        peer->n_calls++;
        rpc_peer_update_paused(peer);
        rpc->in_flight++;
        *ret = call;
        return 0;
}

static void call_dispatch(Rpc *rpc, RpcCall *call) {
        switch (call->entry->method->mode) {
        case RPC_INLINE:
                call_run_loop(call);
                rpc_call_finish(call);
                break;
        case RPC_DEFERRED:
                call_run_loop(call);
                if (call->r != RPC_PENDING)
                        rpc_call_finish(call);
                else
                        deferred_link(call);
                break;
        case RPC_WORKER:
                rpc_sched_enqueue(rpc, call);
                break;
        }
}

/* Handles one request object; its response goes to the batch or the connection. */
static void handle_request(Rpc *rpc, RpcPeer *peer, Batch *batch, json_t *req, RpcFds *fds) {
        _cleanup_(msb_error_clear) MsbError err = {};
        const MethodEntry *e = NULL;
        json_t *id = NULL;
        RpcCall *call = NULL;
        int r;

        r = request_check(rpc, req, &id, &e, &err);
        if (r >= 0)
                r = call_new(rpc, peer, batch, e, id, json_object_get(req, "params"), fds, &call, &err);
        if (r >= 0) {
                call_dispatch(rpc, call);
                return;
        }
        /* A notification gets no reply, even for an error (JSON-RPC 2.0 section 4.1),
         * unless the request was too broken to tell. */
        if (id || err.kind == PROTO_ERROR_INVALID_REQUEST || !json_is_object(req) || json_object_get(req, "id"))
                rpc_deliver(peer, batch, id, rpc_error_response_text(id, &err));
        else
                rpc_deliver_none(batch);
}

/* A batch is refused whole, before any of its members runs, when it is
 * empty or over the limit (JSON-RPC 2.0 section 6: one error, id null). */
static int batch_check(json_t *msg, MsbError *err) {
        size_t n = json_array_size(msg);

        if (n == 0)
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "an empty batch is not a request");
        if (n > RPC_BATCH_MEMBERS_MAX)
                return msb_error_limit(err, "batch_members", RPC_BATCH_MEMBERS_MAX,
                                       "a batch of %zu requests is over the limit of %zu", n,
                                       RPC_BATCH_MEMBERS_MAX);
        return 0;
}

void rpc_handle_line(Rpc *rpc, RpcPeer *peer, const char *line, size_t len, RpcFds *fds) {
        _cleanup_(msb_error_clear) MsbError err = {};
        json_auto_t *msg = NULL;
        json_error_t jerr;
        json_t *req;
        Batch *b;
        size_t i;

        /* Blank lines (a trailing newline from a shell, say) carry no request. */
        if (len == strspn(line, " \t\r"))
                return;

        msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
        if (!msg) {
                msb_error_set(&err, -EBADMSG, PROTO_ERROR_PARSE_ERROR, "parse error: %s at byte %d", jerr.text,
                              jerr.position);
                rpc_deliver(peer, NULL, NULL, rpc_error_response_text(NULL, &err));
                return;
        }
        if (!json_is_array(msg)) {
                handle_request(rpc, peer, NULL, msg, fds);
                return;
        }
        if (batch_check(msg, &err) < 0) {
                rpc_deliver(peer, NULL, NULL, rpc_error_response_text(NULL, &err));
                return;
        }
        if (rpc_batch_new(peer, json_array_size(msg), &b) < 0) {
                peer->ops->abort(peer);
                return;
        }
        json_array_foreach(msg, i, req)
                handle_request(rpc, peer, b, req, fds);
        rpc_batch_done(b);
}

void rpc_shutdown(Rpc *rpc) {
        rpc->shutting_down = true;
        rpc_sched_refuse_waiting(rpc);
}

unsigned rpc_in_flight(const Rpc *rpc) {
        return rpc->in_flight;
}
