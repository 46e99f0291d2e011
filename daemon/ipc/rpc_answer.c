/* SPDX-License-Identifier: Apache-2.0 */
#include "rpc_internal.h"

/* Answers: every byte counted against the connection's answer limits
 * through its RpcPeerOps before it is held, batches built as text. */

json_t *rpc_error_response(json_t *id, const MsbError *err) {
        MsbError internal = {};
        const ProtoErrorInfo *info;
        json_t *data;

        if (!err || !err->set) {
                msb_error_set(&internal, -EIO, PROTO_ERROR_INTERNAL_ERROR, "internal error");
                err = &internal;
        }
        info = &proto_errors[err->kind];
        data = err->data ? json_deep_copy(err->data) : json_object();
        json_object_set_new(data, "name", json_string(info->name));
        return json_pack("{s:s, s:O, s:{s:i, s:s, s:o}}", "jsonrpc", "2.0", "id", id ?: json_null(), "error", "code",
                         info->code, "message", err->message[0] ? err->message : info->message, "data", data);
}

char *rpc_error_response_text(json_t *id, const MsbError *err) {
        json_auto_t *resp = rpc_error_response(id, err);
        return resp ? json_dumps(resp, JSON_COMPACT) : NULL;
}

/*
 * Counts an answer (*text, taken; NULL when it could not be built) to id,
 * plus `extra` bytes, in the connection's answer bytes. An answer that does
 * not fit is dropped before it is copied anywhere and a small
 * limit-exceeded error for id takes its place. 0 with *text the answer to
 * send and *ret_bytes what was counted; -E2BIG with err naming the limit
 * when not even the error fits; -ENOTCONN; -ENOMEM. *text is freed on
 * failure.
 */
static int answer_reserve(RpcPeer *peer, json_t *id, size_t extra, char **text, size_t *ret_bytes, MsbError *err) {
        _cleanup_(msb_error_clear) MsbError over = {};
        size_t bytes;
        int r;

        if (!*text)
                return -ENOMEM;
        bytes = strlen(*text) + extra;
        r = peer->ops->answer_reserve(peer, bytes, &over);
        if (r == -E2BIG) {
                free(*text);
                *text = rpc_error_response_text(id, &over);
                if (!*text)
                        return -ENOMEM;
                bytes = strlen(*text) + extra;
                r = peer->ops->answer_reserve(peer, bytes, err);
        }
        if (r < 0) {
                free(*text);
                *text = NULL;
                return r;
        }
        *ret_bytes = bytes;
        return 0;
}

/* Ends the answers of a connection that crossed a limit with one error
 * saying so; one that could not build an answer is hung up on. */
static void answer_fail(RpcPeer *peer, json_t *id, int r, const MsbError *err) {
        char *text;

        if (r == -ENOTCONN)
                return;
        text = r == -E2BIG ? rpc_error_response_text(id, err) : NULL;
        if (text)
                peer->ops->send_last(peer, text);
        else
                peer->ops->abort(peer);
}

/* Sends the answer (text taken) to a request outside a batch. */
static void answer_send(RpcPeer *peer, json_t *id, char *text) {
        _cleanup_(msb_error_clear) MsbError err = {};
        size_t bytes;
        int r;

        /* The one extra byte is the line's newline. */
        r = answer_reserve(peer, id, 1, &text, &bytes, &err);
        if (r < 0)
                answer_fail(peer, id, r, &err);
        else
                peer->ops->send_reserved(peer, text, bytes);
}

int rpc_peer_notify(RpcPeer *peer, const char *method, json_t *params) {
        json_auto_t *msg = json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params);
        char *text;
        size_t bytes;
        int r;

        if (!msg)
                return -ENOMEM;
        text = json_dumps(msg, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        bytes = strlen(text) + 1;
        /* A notification past the answer limits is dropped, never queued. */
        r = peer->ops->answer_reserve(peer, bytes, NULL);
        if (r < 0) {
                free(text);
                return r;
        }
        peer->ops->send_reserved(peer, text, bytes);
        return 0;
}

size_t rpc_peer_answer_bytes(const RpcPeer *peer) {
        return peer->ops->answer_bytes ? peer->ops->answer_bytes(peer) : 0;
}

void rpc_call_notify(RpcCall *call, const char *method, json_t *params) {
        (void) rpc_peer_notify(call->peer, method, params);
}

/* Makes room in the batch's text for `bytes` more, and for the NUL and the
 * newline that end it. */
static int batch_grow(Batch *b, size_t bytes) {
        size_t need = b->size + bytes + 2, want = b->allocated * 2;
        char *t;

        if (need <= b->allocated)
                return 0;
        t = realloc(b->text, want > need ? want : need);
        if (!t)
                return -ENOMEM;
        b->text = t;
        b->allocated = want > need ? want : need;
        return 0;
}

/* Gives the batch's reply up; the connection then gets no reply to it. */
static void batch_drop(Batch *b) {
        free(b->text);
        b->text = NULL;
        b->size = b->allocated = 0;
        b->peer->ops->answer_release(b->peer, b->reserved);
        b->reserved = 0;
        b->dropped = true;
}

/* Adds the answer (text taken) of a member to the batch's reply. */
static void batch_append(Batch *b, json_t *id, char *text) {
        _cleanup_(msb_error_clear) MsbError err = {};
        /* The ',' that follows the member (the last one's becomes the ']');
         * with the first, the '[' and the line's newline too. */
        size_t extra = b->size == 0 ? 3 : 1, bytes, len;
        int r;

        if (b->dropped) {
                free(text);
                return;
        }
        r = answer_reserve(b->peer, id, extra, &text, &bytes, &err);
        if (r >= 0 && batch_grow(b, bytes) < 0) {
                b->peer->ops->answer_release(b->peer, bytes);
                free(text);
                r = -ENOMEM;
        }
        if (r < 0) {
                /* A batch is answered whole or not at all: its one error has a null id. */
                batch_drop(b);
                answer_fail(b->peer, NULL, r, &err);
                return;
        }
        if (b->size == 0)
                b->text[b->size++] = '[';
        len = strlen(text);
        memcpy(b->text + b->size, text, len);
        b->size += len;
        b->text[b->size++] = ',';
        b->reserved += bytes;
        free(text);
}

int rpc_batch_new(RpcPeer *peer, size_t members, Batch **ret) {
        Batch *b = calloc(1, sizeof(*b));

        if (!b)
                return -ENOMEM;
        b->peer = peer;
        peer->ops->hold(peer);
        /* One extra count so the batch cannot complete while it is being dispatched. */
        b->pending = (unsigned) members + 1;
        *ret = b;
        return 0;
}

void rpc_batch_done(Batch *b) {
        if (--b->pending > 0)
                return;
        if (b->size > 0) {
                b->text[b->size - 1] = ']';
                b->text[b->size] = '\0';
                b->peer->ops->send_reserved(b->peer, b->text, b->reserved);
                b->text = NULL;
        }
        free(b->text);
        b->peer->ops->release(b->peer);
        free(b);
}

void rpc_deliver(RpcPeer *peer, Batch *batch, json_t *id, char *text) {
        if (batch) {
                batch_append(batch, id, text);
                rpc_batch_done(batch);
                return;
        }
        answer_send(peer, id, text);
}

void rpc_deliver_none(Batch *batch) {
        if (batch)
                rpc_batch_done(batch);
}

/* A result the handler gave as text is spliced into the envelope, never
 * parsed back into a tree. */
char *rpc_call_response_text(RpcCall *call) {
        _cleanup_free_ char *id = NULL;
        json_auto_t *resp = NULL;
        char *text;

        if (call->r < 0)
                return rpc_error_response_text(call->id, &call->err);
        if (call->result_text) {
                /* Copied with memcpy(), not asprintf(): stdio's %s went
                 * through a megabyte-long list at a fraction of the speed
                 * (bench/list). */
                static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":", mid[] = ",\"result\":";
                size_t id_len, result_len;

                id = json_dumps(call->id, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!id)
                        return NULL;
                id_len = strlen(id);
                result_len = strlen(call->result_text);
                text = malloc(sizeof(head) - 1 + id_len + sizeof(mid) - 1 + result_len + 2);
                if (!text)
                        return NULL;
                char *p = mempcpy(text, head, sizeof(head) - 1);
                p = mempcpy(p, id, id_len);
                p = mempcpy(p, mid, sizeof(mid) - 1);
                p = mempcpy(p, call->result_text, result_len);
                memcpy(p, "}", 2);
                return text;
        }
        resp = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", call->id, "result",
                         call->result ? TAKE_PTR(call->result) : json_null());
        return resp ? json_dumps(resp, JSON_COMPACT) : NULL;
}
