/* SPDX-License-Identifier: Apache-2.0 */
#include "log.h"
#include "rpc.h"
#include "server.h"

/* One declared param of a method, from the OpenRPC document. */
typedef struct ParamSpec {
        const char *name;
        bool required;
        const char *type;   /* JSON schema type: string, boolean, integer, ... */
        json_t *enum_values; /* borrowed from the document, or NULL */
        json_int_t min_length, max_length; /* -1 when not declared */
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
        void *userdata;
        unsigned in_flight;
        bool shutting_down;
};

/* The responses of a batch are sent together, as one array, once all of its
 * calls have completed (JSON-RPC 2.0 section 6). The array is built as text,
 * a member at a time as its call completes, and each member's bytes are
 * counted in the connection's answer bytes as it is added: a batch's reply
 * never holds more than the connection may. */
typedef struct Batch {
        Connection *conn;
        unsigned pending;
        char *text;      /* "[", then each member followed by ',' */
        size_t size, allocated;
        size_t reserved; /* answer bytes counted for text, its newline included */
        bool dropped;    /* no reply: the connection closed or crossed a limit */
} Batch;

struct RpcCall {
        Rpc *rpc;
        Connection *conn;
        Batch *batch;
        const MethodEntry *entry;
        json_t *id; /* NULL for a notification */
        json_t *params;
        json_t *result;
        const char *result_text; /* JSON text of the result, when the handler gave it as text */
        char *result_text_owned; /* result_text, when the call owns it */
        MsbError err;
        int r;
        uv_work_t work;
};

/* ---- the method table from the document ---- */

static int parse_param_spec(json_t *p, ParamSpec *ret) {
        json_t *schema = json_object_get(p, "schema");
        json_t *minl = json_object_get(schema, "minLength"), *maxl = json_object_get(schema, "maxLength");

        if (!json_is_string(json_object_get(p, "name")) || !json_is_object(schema))
                return -EINVAL;
        *ret = (ParamSpec) {
                .name = json_string_value(json_object_get(p, "name")),
                .required = json_is_true(json_object_get(p, "required")),
                .type = json_string_value(json_object_get(schema, "type")),
                .enum_values = json_object_get(schema, "enum"),
                .min_length = json_is_integer(minl) ? json_integer_value(minl) : -1,
                .max_length = json_is_integer(maxl) ? json_integer_value(maxl) : -1,
        };
        return 0;
}

int rpc_new(uv_loop_t *loop, const RpcMethod *methods, size_t n_methods, void *userdata, Rpc **ret,
            MsbError *err) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_error_t jerr;
        json_t *doc_methods, *m;
        size_t i;

        rpc = calloc(1, sizeof(*rpc));
        if (!rpc)
                return -ENOMEM;
        rpc->loop = loop;
        rpc->userdata = userdata;
        rpc->document = json_loadb(proto_openrpc_json, proto_openrpc_json_len, 0, &jerr);
        if (!rpc->document)
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR, "the embedded OpenRPC document is invalid: %s",
                                     jerr.text);
        rpc->document_text = json_dumps(rpc->document, JSON_COMPACT);
        if (!rpc->document_text)
                return -ENOMEM;

        doc_methods = json_object_get(rpc->document, "methods");
        rpc->entries = calloc(json_array_size(doc_methods) + 1, sizeof(MethodEntry));
        if (!rpc->entries)
                return -ENOMEM;

        json_array_foreach(doc_methods, i, m) {
                const char *name = json_string_value(json_object_get(m, "name"));
                json_t *params = json_object_get(m, "params"), *p;
                MethodEntry *e = &rpc->entries[rpc->n_entries];
                size_t j;

                for (size_t k = 0; k < n_methods; k++)
                        if (name && streq(methods[k].name, name))
                                e->method = &methods[k];
                if (!e->method)
                        return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                             "proto/ declares method %s, which the daemon does not implement",
                                             name ?: "(unnamed)");
                e->params = calloc(json_array_size(params) + 1, sizeof(ParamSpec));
                if (!e->params)
                        return -ENOMEM;
                json_array_foreach(params, j, p) {
                        if (parse_param_spec(p, &e->params[j]) < 0)
                                return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                                     "proto/ declares an invalid param %zu of %s", j, name);
                        e->n_params++;
                }
                rpc->n_entries++;
        }
        if (rpc->n_entries != n_methods)
                for (size_t k = 0; k < n_methods; k++) {
                        bool declared = false;
                        for (size_t e = 0; e < rpc->n_entries; e++)
                                declared = declared || rpc->entries[e].method == &methods[k];
                        if (!declared)
                                return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                                     "the daemon implements %s, which proto/ does not declare",
                                                     methods[k].name);
                }

        *ret = TAKE_PTR(rpc);
        return 0;
}

Rpc *rpc_free(Rpc *rpc) {
        if (!rpc)
                return NULL;
        for (size_t i = 0; i < rpc->n_entries; i++)
                free(rpc->entries[i].params);
        free(rpc->entries);
        json_decref(rpc->document);
        free(rpc->document_text);
        free(rpc);
        return NULL;
}

static const MethodEntry *rpc_find(const Rpc *rpc, const char *name) {
        for (size_t i = 0; i < rpc->n_entries; i++)
                if (streq(rpc->entries[i].method->name, name))
                        return &rpc->entries[i];
        return NULL;
}

/* ---- validation ---- */

static int invalid_param(MsbError *err, const char *param, const char *fmt, const char *detail) {
        msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, fmt, param, detail);
        msb_error_add_data(err, "parameter", json_string(param));
        return -EINVAL;
}

static bool type_matches(const char *type, json_t *v) {
        if (!type)
                return true;
        if (streq(type, "string"))
                return json_is_string(v);
        if (streq(type, "boolean"))
                return json_is_boolean(v);
        if (streq(type, "integer"))
                return json_is_integer(v);
        if (streq(type, "number"))
                return json_is_number(v);
        if (streq(type, "object"))
                return json_is_object(v);
        if (streq(type, "array"))
                return json_is_array(v);
        return false;
}

/* JSON Schema's minLength and maxLength count characters, not bytes;
 * jansson has already checked the UTF-8. */
static json_int_t utf8_length(const char *s, size_t bytes) {
        json_int_t n = 0;
        for (size_t i = 0; i < bytes; i++)
                n += ((unsigned char) s[i] & 0xC0) != 0x80;
        return n;
}

static int validate_params(const MethodEntry *e, json_t *params, MsbError *err) {
        const char *key;
        json_t *v;

        if (params && !json_is_object(params)) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS,
                              "params must be an object: %s takes its params by name", e->method->name);
                msb_error_add_data(err, "parameter", json_string("params"));
                return -EINVAL;
        }

        json_object_foreach(params, key, v) {
                const ParamSpec *spec = NULL;
                for (size_t i = 0; i < e->n_params; i++)
                        if (streq(e->params[i].name, key))
                                spec = &e->params[i];
                if (!spec)
                        return invalid_param(err, key, "unknown parameter '%s'%s", "");
                if (!type_matches(spec->type, v))
                        return invalid_param(err, key, "parameter '%s' must be of type %s", spec->type);
                if (spec->enum_values) {
                        bool found = false;
                        size_t i;
                        json_t *allowed;
                        json_array_foreach(spec->enum_values, i, allowed)
                                found = found || json_equal(allowed, v);
                        if (!found)
                                return invalid_param(err, key, "parameter '%s' is not one of the allowed values%s", "");
                }
                if (json_is_string(v)) {
                        json_int_t len = utf8_length(json_string_value(v), json_string_length(v));
                        if ((spec->min_length >= 0 && len < spec->min_length) ||
                            (spec->max_length >= 0 && len > spec->max_length))
                                return invalid_param(err, key, "parameter '%s' has a length out of range%s", "");
                }
        }
        for (size_t i = 0; i < e->n_params; i++)
                if (e->params[i].required && !json_object_get(params, e->params[i].name))
                        return invalid_param(err, e->params[i].name, "missing required parameter '%s'%s", "");
        return 0;
}

int rpc_validate_params(const Rpc *rpc, const char *name, json_t *params, MsbError *err) {
        const MethodEntry *e = rpc_find(rpc, name);
        if (!e)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_METHOD_NOT_FOUND, "no method %s", name);
        return validate_params(e, params, err);
}

/* ---- responses ---- */

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
static int answer_reserve(Connection *conn, json_t *id, size_t extra, char **text, size_t *ret_bytes, MsbError *err) {
        _cleanup_(msb_error_clear) MsbError over = {};
        size_t bytes;
        int r;

        if (!*text)
                return -ENOMEM;
        bytes = strlen(*text) + extra;
        r = connection_answer_reserve(conn, bytes, &over);
        if (r == -E2BIG) {
                free(*text);
                *text = rpc_error_response_text(id, &over);
                if (!*text)
                        return -ENOMEM;
                bytes = strlen(*text) + extra;
                r = connection_answer_reserve(conn, bytes, err);
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
static void answer_fail(Connection *conn, json_t *id, int r, const MsbError *err) {
        char *text;

        if (r == -ENOTCONN)
                return;
        text = r == -E2BIG ? rpc_error_response_text(id, err) : NULL;
        if (text)
                connection_send_last(conn, text);
        else
                connection_abort(conn);
}

/* Sends the answer (text taken) to a request outside a batch. */
static void answer_send(Connection *conn, json_t *id, char *text) {
        _cleanup_(msb_error_clear) MsbError err = {};
        size_t bytes;
        int r;

        /* The one extra byte is the line's newline. */
        r = answer_reserve(conn, id, 1, &text, &bytes, &err);
        if (r < 0)
                answer_fail(conn, id, r, &err);
        else
                connection_send_reserved(conn, text, bytes);
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
        connection_answer_release(b->conn, b->reserved);
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
        r = answer_reserve(b->conn, id, extra, &text, &bytes, &err);
        if (r >= 0 && batch_grow(b, bytes) < 0) {
                connection_answer_release(b->conn, bytes);
                free(text);
                r = -ENOMEM;
        }
        if (r < 0) {
                /* A batch is answered whole or not at all: its one error has a null id. */
                batch_drop(b);
                answer_fail(b->conn, NULL, r, &err);
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

/* A member of the batch is done; after the last, its reply is sent. */
static void batch_done(Batch *b) {
        if (--b->pending > 0)
                return;
        if (b->size > 0) {
                b->text[b->size - 1] = ']';
                b->text[b->size] = '\0';
                connection_send_reserved(b->conn, b->text, b->reserved);
                b->text = NULL;
        }
        free(b->text);
        connection_call_end(b->conn);
        free(b);
}

/* Sends the response (text taken; NULL when it could not be built) to the
 * request id, or adds it to the batch. */
static void deliver(Connection *conn, Batch *batch, json_t *id, char *text) {
        if (batch) {
                batch_append(batch, id, text);
                batch_done(batch);
                return;
        }
        answer_send(conn, id, text);
}

/* A notification, which gets no response, is done. */
static void deliver_none(Batch *batch) {
        if (batch)
                batch_done(batch);
}

/* Answers a request outside any batch with the error. */
static void deliver_error(Connection *conn, json_t *id, const MsbError *err) {
        deliver(conn, NULL, id, rpc_error_response_text(id, err));
}

static void call_free(RpcCall *call) {
        if (!call)
                return;
        json_decref(call->id);
        json_decref(call->params);
        json_decref(call->result);
        free(call->result_text_owned);
        msb_error_clear(&call->err);
        connection_call_end(call->conn);
        free(call);
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

/* The call's response as one JSON text, or NULL when it cannot be built. A
 * result the handler gave as text is spliced into the envelope, never
 * parsed back into a tree. */
static char *call_response_text(RpcCall *call) {
        _cleanup_free_ char *id = NULL;
        json_auto_t *resp = NULL;
        char *text;

        if (call->r < 0)
                return rpc_error_response_text(call->id, &call->err);
        if (call->result_text) {
                id = json_dumps(call->id, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!id || asprintf(&text, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s}", id, call->result_text) < 0)
                        return NULL;
                return text;
        }
        resp = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", call->id, "result",
                         call->result ? TAKE_PTR(call->result) : json_null());
        return resp ? json_dumps(resp, JSON_COMPACT) : NULL;
}

static void call_finish(RpcCall *call) {
        if (call->r < 0 && call->err.kind == PROTO_ERROR_INTERNAL_ERROR)
                log_error("%s failed: %s", call->entry->method->name, call->err.message);
        else if (call->r < 0)
                log_debug("%s: %s", call->entry->method->name, call->err.message);

        if (call->id)
                deliver(call->conn, call->batch, call->id, call_response_text(call));
        else
                deliver_none(call->batch);
        call->rpc->in_flight--;
        call_free(call);
}

static void call_run(RpcCall *call) {
        json_t *result = NULL;
        call->r = call->entry->method->handler(call, call->params, &result, &call->err);
        if (call->r < 0 && !call->err.set)
                msb_error_set(&call->err, call->r, PROTO_ERROR_INTERNAL_ERROR, "%s", strerror(-call->r));
        call->result = result;
}

static void work_cb(uv_work_t *w) {
        call_run(w->data);
}

static void after_work_cb(uv_work_t *w, int status) {
        RpcCall *call = w->data;
        if (status == UV_ECANCELED && call->r >= 0) {
                call->r = -ECANCELED;
                msb_error_set(&call->err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");
        }
        call_finish(call);
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
        call_finish(call);
}

void *rpc_call_userdata(const RpcCall *call) {
        return call->rpc->userdata;
}

json_t *rpc_call_id(const RpcCall *call) {
        return call->id;
}

bool rpc_call_connected(const RpcCall *call) {
        return connection_is_open(call->conn);
}

void rpc_call_notify(RpcCall *call, const char *method, json_t *params) {
        json_t *msg = json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", method, "params", params);
        if (!msg)
                return;
        connection_send(call->conn, msg);
        json_decref(msg);
}

/* ---- requests ---- */

static bool id_is_valid(json_t *id) {
        /* JSON-RPC 2.0 section 4: a String, Number, or Null. */
        return json_is_string(id) || json_is_number(id) || json_is_null(id);
}

/* Handles one request object; its response goes to the batch or the connection. */
static void handle_request(Rpc *rpc, Connection *conn, Batch *batch, json_t *req) {
        MsbError err = {};
        json_t *id = NULL, *method, *params, *version;
        const MethodEntry *e;
        bool notification = false;
        RpcCall *call;
        int r;

        if (!json_is_object(req)) {
                msb_error_set(&err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "a request must be a JSON object");
                goto fail;
        }
        id = json_object_get(req, "id");
        notification = id == NULL;
        if (id && !id_is_valid(id)) {
                id = NULL;
                notification = false;
                msb_error_set(&err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "id must be a string, a number or null");
                goto fail;
        }
        version = json_object_get(req, "jsonrpc");
        if (!json_is_string(version) || !streq(json_string_value(version), "2.0")) {
                msb_error_set(&err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
                goto fail;
        }
        method = json_object_get(req, "method");
        if (!json_is_string(method)) {
                msb_error_set(&err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "method must be a string");
                goto fail;
        }
        params = json_object_get(req, "params");
        if (params && !json_is_object(params) && !json_is_array(params)) {
                msb_error_set(&err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "params must be an object or an array");
                goto fail;
        }
        e = rpc_find(rpc, json_string_value(method));
        if (!e) {
                msb_error_set(&err, -ENOENT, PROTO_ERROR_METHOD_NOT_FOUND, "no method named '%s'",
                              json_string_value(method));
                goto fail;
        }
        r = validate_params(e, params, &err);
        if (r < 0)
                goto fail;
        if (rpc->shutting_down && e->method->mode != RPC_INLINE) {
                msb_error_set(&err, -ESHUTDOWN, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");
                goto fail;
        }

        call = calloc(1, sizeof(*call));
        if (!call) {
                msb_error_set(&err, -ENOMEM, PROTO_ERROR_INTERNAL_ERROR, "out of memory");
                goto fail;
        }
        *call = (RpcCall) {
                .rpc = rpc,
                .conn = conn,
                .batch = batch,
                .entry = e,
                .id = notification ? NULL : json_incref(id),
                .params = params ? json_incref(params) : json_object(),
        };
        call->work.data = call;
        connection_call_begin(conn);
        rpc->in_flight++;

        switch (e->method->mode) {
        case RPC_INLINE:
                call_run(call);
                call_finish(call);
                break;
        case RPC_DEFERRED:
                call_run(call);
                if (call->r != RPC_PENDING)
                        call_finish(call);
                break;
        case RPC_WORKER:
                r = uv_queue_work(rpc->loop, &call->work, work_cb, after_work_cb);
                if (r < 0) {
                        call->r = -EIO;
                        msb_error_set(&call->err, -EIO, PROTO_ERROR_INTERNAL_ERROR, "cannot queue work: %s",
                                      uv_strerror(r));
                        call_finish(call);
                }
                break;
        }
        return;

fail:
        /* A notification gets no reply, even for an error (JSON-RPC 2.0 section 4.1),
         * unless the request was too broken to tell. */
        if (!json_is_object(req) || !notification || err.kind == PROTO_ERROR_INVALID_REQUEST)
                deliver(conn, batch, id, rpc_error_response_text(id, &err));
        else
                deliver_none(batch);
        msb_error_clear(&err);
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

void rpc_handle_line(Rpc *rpc, Connection *conn, const char *line, size_t len) {
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
                deliver_error(conn, NULL, &err);
                return;
        }
        if (!json_is_array(msg)) {
                handle_request(rpc, conn, NULL, msg);
                return;
        }
        if (batch_check(msg, &err) < 0) {
                deliver_error(conn, NULL, &err);
                return;
        }

        b = calloc(1, sizeof(*b));
        if (!b) {
                connection_abort(conn);
                return;
        }
        b->conn = conn;
        connection_call_begin(conn);
        /* One extra count so the batch cannot complete while it is being dispatched. */
        b->pending = (unsigned) json_array_size(msg) + 1;
        json_array_foreach(msg, i, req)
                handle_request(rpc, conn, b, req);
        batch_done(b);
}

void rpc_shutdown(Rpc *rpc) {
        rpc->shutting_down = true;
}

unsigned rpc_in_flight(const Rpc *rpc) {
        return rpc->in_flight;
}
