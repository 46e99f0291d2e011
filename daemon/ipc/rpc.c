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
        MethodEntry *entries;
        size_t n_entries;
        void *userdata;
        unsigned in_flight;
        bool shutting_down;
};

/* The responses of a batch are sent together, as one array, once all of its
 * calls have completed (JSON-RPC 2.0 section 6). */
typedef struct Batch {
        json_t *responses;
        unsigned pending;
        Connection *conn;
} Batch;

struct RpcCall {
        Rpc *rpc;
        Connection *conn;
        Batch *batch;
        const MethodEntry *entry;
        json_t *id; /* NULL for a notification */
        json_t *params;
        json_t *result;
        char *raw_result; /* JSON text of the result, when the handler wrote it */
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

static json_t *rpc_result_response(json_t *id, json_t *result) {
        return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result ?: json_null());
}

static void batch_add(Batch *b, json_t *response) {
        if (response)
                json_array_append_new(b->responses, response);
        if (--b->pending > 0)
                return;
        if (json_array_size(b->responses) > 0)
                connection_send(b->conn, b->responses);
        json_decref(b->responses);
        connection_call_end(b->conn);
        free(b);
}

/* Sends (or adds to the batch) a response; notifications get none. */
static void deliver(Connection *conn, Batch *batch, json_t *response) {
        if (batch) {
                batch_add(batch, response);
                return;
        }
        if (response) {
                connection_send(conn, response);
                json_decref(response);
        }
}

static void call_free(RpcCall *call) {
        if (!call)
                return;
        json_decref(call->id);
        json_decref(call->params);
        json_decref(call->result);
        free(call->raw_result);
        msb_error_clear(&call->err);
        connection_call_end(call->conn);
        free(call);
}

void rpc_call_set_raw_result(RpcCall *call, char *json_text) {
        free(call->raw_result);
        call->raw_result = json_text;
}

/* Sends a raw result as one line, splicing the text into the envelope. */
static bool deliver_raw(RpcCall *call) {
        _cleanup_free_ char *id = NULL;
        char *line;

        if (call->batch || !call->id || call->r < 0 || !call->raw_result)
                return false;
        id = json_dumps(call->id, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!id || asprintf(&line, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s}", id, call->raw_result) < 0)
                return false;
        connection_send_text(call->conn, line);
        return true;
}

static void call_finish(RpcCall *call) {
        json_t *response = NULL;

        if (call->raw_result) {
                if (deliver_raw(call)) {
                        call->rpc->in_flight--;
                        call_free(call);
                        return;
                }
                /* Inside a batch, the raw text joins the batch's array as a tree. */
                if (call->r >= 0 && !call->result) {
                        call->result = json_loads(call->raw_result, JSON_DECODE_ANY, NULL);
                        if (!call->result) {
                                call->r = -ENOMEM;
                                msb_error_set(&call->err, -ENOMEM, PROTO_ERROR_INTERNAL_ERROR,
                                              "cannot build the result");
                        }
                }
        }

        if (call->id) {
                if (call->r < 0)
                        response = rpc_error_response(call->id, &call->err);
                else
                        response = rpc_result_response(call->id, TAKE_PTR(call->result));
        }
        if (call->r < 0 && call->err.kind == PROTO_ERROR_INTERNAL_ERROR)
                log_error("%s failed: %s", call->entry->method->name, call->err.message);
        else if (call->r < 0)
                log_debug("%s: %s", call->entry->method->name, call->err.message);

        deliver(call->conn, call->batch, response);
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
                deliver(conn, batch, rpc_error_response(id, &err));
        else
                deliver(conn, batch, NULL);
        msb_error_clear(&err);
}

void rpc_handle_line(Rpc *rpc, Connection *conn, const char *line, size_t len) {
        json_error_t jerr;
        json_t *msg;
        size_t i;

        /* Blank lines (a trailing newline from a shell, say) carry no request. */
        if (len == strspn(line, " \t\r"))
                return;

        msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
        if (!msg) {
                MsbError err = {};
                msb_error_set(&err, -EBADMSG, PROTO_ERROR_PARSE_ERROR, "parse error: %s at byte %d", jerr.text,
                              jerr.position);
                deliver(conn, NULL, rpc_error_response(NULL, &err));
                msb_error_clear(&err);
                return;
        }

        if (!json_is_array(msg)) {
                handle_request(rpc, conn, NULL, msg);
                json_decref(msg);
                return;
        }
        if (json_array_size(msg) == 0) {
                MsbError err = {};
                msb_error_set(&err, -EINVAL, PROTO_ERROR_INVALID_REQUEST, "an empty batch is not a request");
                deliver(conn, NULL, rpc_error_response(NULL, &err));
                msb_error_clear(&err);
                json_decref(msg);
                return;
        }

        Batch *b = calloc(1, sizeof(*b));
        if (!b) {
                json_decref(msg);
                return;
        }
        b->responses = json_array();
        b->conn = conn;
        connection_call_begin(conn);
        /* One extra count so the batch cannot complete while it is being dispatched. */
        b->pending = (unsigned) json_array_size(msg) + 1;
        json_t *req;
        json_array_foreach(msg, i, req)
                handle_request(rpc, conn, b, req);
        batch_add(b, NULL);
        json_decref(msg);
}

void rpc_shutdown(Rpc *rpc) {
        rpc->shutting_down = true;
}

unsigned rpc_in_flight(const Rpc *rpc) {
        return rpc->in_flight;
}
