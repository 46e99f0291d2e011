/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for params validation and decoding (rpc_decode_params() in
 * daemon/ipc/rpc_params.c)
 * with the daemon's real method table. The first input byte picks a method
 * of proto/openrpc.json, the rest is JSON for its params. The verdict is
 * compared with a model written here from the OpenRPC document as JSON
 * Schema reads it (type, required, enum, minLength/maxLength in
 * characters, no other fields, by name only): both must agree, a refusal
 * must be invalid-params naming a field in data.parameter, and its error
 * response must have the protocol's shape; an acceptance must decode every
 * value sent, as the method's field table says, into the handler's struct.
 */

#include "daemon.h"
#include "fuzz.h"
#include "rpc.h"

static Rpc *fuzz_rpc;
static json_t *fuzz_methods;

static void fuzz_rpc_init(void) {
        json_t *doc;

        if (fuzz_rpc)
                return;
        FUZZ_CHECK(rpc_new(NULL, daemon_methods, daemon_n_methods, NULL, NULL, &fuzz_rpc, NULL) == 0);
        doc = json_loadb(proto_openrpc_json, proto_openrpc_json_len, 0, NULL);
        FUZZ_CHECK(doc);
        fuzz_methods = json_incref(json_object_get(doc, "methods"));
        json_decref(doc);
        FUZZ_CHECK(json_array_size(fuzz_methods) > 0);
}

static bool model_type(const char *type, json_t *v) {
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

/* JSON Schema counts a string's length in characters (code points). */
static size_t utf8_length(const char *s, size_t bytes) {
        size_t n = 0;
        for (size_t i = 0; i < bytes; i++)
                if (((unsigned char) s[i] & 0xc0) != 0x80)
                        n++;
        return n;
}

static json_t *model_param(json_t *method, const char *name) {
        json_t *p;
        size_t i;

        json_array_foreach(json_object_get(method, "params"), i, p)
                if (streq(json_string_value(json_object_get(p, "name")), name))
                        return p;
        return NULL;
}

static const RpcMethod *table_method(const char *name) {
        for (size_t k = 0; k < daemon_n_methods; k++)
                if (streq(daemon_methods[k].name, name))
                        return &daemon_methods[k];
        return NULL;
}

/* Whether a param of the method takes a file descriptor that came with the
 * request line: rpc_decode_params() passes none, so any value is refused. */
static bool model_takes_fd(json_t *method, const char *key) {
        const RpcMethod *m = table_method(json_string_value(json_object_get(method, "name")));

        for (const RpcField *f = m ? m->fields : NULL; f && f->name; f++)
                if (streq(f->name, key))
                        return f->type == RPC_FIELD_FD;
        return false;
}

/* Whether params are valid for method by the document alone (and the
 * descriptors, of which there are none). */
static bool model_valid(json_t *method, json_t *params) {
        const char *key;
        json_t *v, *p;
        size_t i;

        if (params && !json_is_object(params))
                return false;
        json_object_foreach(params, key, v) {
                json_t *spec = model_param(method, key), *schema, *values, *minl, *maxl;
                if (!spec || model_takes_fd(method, key))
                        return false;
                schema = json_object_get(spec, "schema");
                if (!model_type(json_string_value(json_object_get(schema, "type")), v))
                        return false;
                values = json_object_get(schema, "enum");
                if (values) {
                        bool found = false;
                        json_t *allowed;
                        size_t k;
                        json_array_foreach(values, k, allowed)
                                found = found || json_equal(allowed, v);
                        if (!found)
                                return false;
                }
                if (json_is_string(v)) {
                        json_int_t len = (json_int_t) utf8_length(json_string_value(v), json_string_length(v));
                        minl = json_object_get(schema, "minLength");
                        maxl = json_object_get(schema, "maxLength");
                        if ((json_is_integer(minl) && len < json_integer_value(minl)) ||
                            (json_is_integer(maxl) && len > json_integer_value(maxl)))
                                return false;
                }
        }
        json_array_foreach(json_object_get(method, "params"), i, p)
                if (json_is_true(json_object_get(p, "required")) &&
                    !json_object_get(params, json_string_value(json_object_get(p, "name"))))
                        return false;
        return true;
}

/* What the handler reads is what was sent: each field of the method's
 * table holds the value of its key, or the absent value. */
static void check_decoded(const char *name, json_t *params, const uint8_t *decoded) {
        const RpcMethod *m = table_method(name);

        FUZZ_CHECK(m);
        for (const RpcField *f = m->fields; f && f->name; f++) {
                json_t *v = json_object_get(params, f->name);
                const void *slot = decoded + f->offset;

                switch (f->type) {
                case RPC_FIELD_STRING:
                        FUZZ_CHECK(v ? streq_ptr(*(const char *const *) slot, json_string_value(v))
                                     : !*(const char *const *) slot);
                        break;
                case RPC_FIELD_BOOL:
                        FUZZ_CHECK(*(const bool *) slot == json_is_true(v));
                        break;
                case RPC_FIELD_INT:
                        FUZZ_CHECK(*(const int64_t *) slot == (v ? json_integer_value(v) : RPC_FIELD_INT_ABSENT));
                        break;
                case RPC_FIELD_JSON:
                        FUZZ_CHECK(*(json_t *const *) slot == v);
                        break;
                case RPC_FIELD_FD:
                        FUZZ_CHECK(!v && *(const int *) slot == -EBADF);
                        break;
                case RPC_FIELD_ENUM: {
                        int i = *(const int *) slot;
                        FUZZ_CHECK(v ? i >= 0 && streq(f->enum_names[i], json_string_value(v)) : i == -1);
                        break;
                }
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        void *decoded = NULL;
        json_t *method, *params = NULL;
        const char *name;
        MsbError err = {};
        bool valid;
        int r;

        fuzz_rpc_init();
        if (size < 1)
                return 0;
        method = json_array_get(fuzz_methods, data[0] % json_array_size(fuzz_methods));
        name = json_string_value(json_object_get(method, "name"));
        FUZZ_CHECK(name);

        /* Empty params stand for omitted ones; other bytes must be JSON. */
        if (size > 1) {
                params = json_loadb((const char *) data + 1, size - 1, JSON_DECODE_ANY, NULL);
                if (!params)
                        return 0;
        }

        valid = model_valid(method, params);
        r = rpc_decode_params(fuzz_rpc, name, params, NULL, &decoded, &err);
        if (r == 0) {
                FUZZ_CHECK(!err.set);
                FUZZ_CHECK(valid);
                check_decoded(name, params, decoded);
                rpc_decoded_free(fuzz_rpc, name, decoded);
        } else {
                json_t *resp, *e, *field, *id;

                FUZZ_CHECK(r == -EINVAL);
                FUZZ_CHECK(!valid);
                FUZZ_CHECK(err.set && err.kind == PROTO_ERROR_INVALID_PARAMS);
                field = json_object_get(err.data, "parameter");
                FUZZ_CHECK(json_is_string(field));
                /* The field named is the params as a whole, a declared param, or a key sent. */
                FUZZ_CHECK(streq(json_string_value(field), "params") ||
                           model_param(method, json_string_value(field)) ||
                           json_object_get(params, json_string_value(field)));

                id = json_integer(1);
                resp = rpc_error_response(id, &err);
                json_decref(id);
                FUZZ_CHECK(resp);
                e = json_object_get(resp, "error");
                FUZZ_CHECK(json_integer_value(json_object_get(e, "code")) == -32602);
                FUZZ_CHECK(streq_ptr(json_string_value(json_object_get(json_object_get(e, "data"), "name")),
                                     "invalid-params"));
                FUZZ_CHECK(json_equal(json_object_get(json_object_get(e, "data"), "parameter"), field));
                json_decref(resp);
                msb_error_clear(&err);
        }
        json_decref(params);
        return 0;
}
