/* SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>

#include "rpc_internal.h"

/* The methods' params: each method's field table checked against the
 * OpenRPC document at start, requests validated against the document and
 * decoded by the table (as sd-varlink and sd_json_dispatch do). */

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
                .minimum = json_object_get(schema, "minimum"),
        };
        return 0;
}

static const char *field_schema_type(RpcFieldType t) {
        switch (t) {
        case RPC_FIELD_STRING:
        case RPC_FIELD_ENUM:
                return "string";
        case RPC_FIELD_BOOL:
                return "boolean";
        case RPC_FIELD_INT:
        case RPC_FIELD_FD:
                return "integer";
        case RPC_FIELD_JSON:
                return NULL;
        }
        return NULL;
}

/* The field's values are the document's enum, the same ones in the same order. */
static bool field_enum_matches(const RpcField *f, json_t *values) {
        size_t n = 0;

        if ((f->type == RPC_FIELD_ENUM) != json_is_array(values))
                return false;
        if (f->type != RPC_FIELD_ENUM)
                return true;
        for (; f->enum_names[n]; n++)
                if (!streq_ptr(json_string_value(json_array_get(values, n)), f->enum_names[n]))
                        return false;
        return n == json_array_size(values);
}

/* Pairs each declared param with the method's field of that name, and
 * refuses any difference either way. */
static int entry_bind_fields(MethodEntry *e, MsbError *err) {
        const RpcMethod *m = e->method;
        size_t n_fields = 0;

        for (const RpcField *f = m->fields; f && f->name; f++, n_fields++) {
                ParamSpec *spec = NULL;
                for (size_t i = 0; i < e->n_params; i++)
                        if (streq(e->params[i].name, f->name))
                                spec = &e->params[i];
                if (!spec)
                        return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                             "%s decodes a param %s that proto/ does not declare", m->name, f->name);
                if (!streq_ptr(spec->type, field_schema_type(f->type)) || spec->required != f->required ||
                    !field_enum_matches(f, spec->enum_values))
                        return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                             "%s decodes param %s otherwise than proto/ declares it (type, "
                                             "required or values)",
                                             m->name, f->name);
                if (spec->field)
                        return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                             "%s decodes param %s twice", m->name, f->name);
                spec->field = f;
        }
        if (n_fields != e->n_params)
                for (size_t i = 0; i < e->n_params; i++)
                        if (!e->params[i].field)
                                return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                                     "proto/ declares param %s of %s, which the daemon does not "
                                                     "decode",
                                                     e->params[i].name, m->name);
        return 0;
}

static const RpcMethod *method_named(const RpcMethod *methods, size_t n, const char *name, MsbError *err) {
        const RpcMethod *found = NULL;

        for (size_t k = 0; k < n; k++)
                if (name && streq(methods[k].name, name)) {
                        if (found) {
                                msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                              "the daemon implements %s twice", name);
                                return NULL;
                        }
                        found = &methods[k];
                }
        if (!found)
                msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                              "proto/ declares method %s, which the daemon does not implement", name ?: "(unnamed)");
        return found;
}

static int entry_load(MethodEntry *e, json_t *m, const RpcMethod *methods, size_t n_methods, MsbError *err) {
        const char *name = json_string_value(json_object_get(m, "name"));
        json_t *params = json_object_get(m, "params"), *p;
        size_t j;

        e->method = method_named(methods, n_methods, name, err);
        if (!e->method)
                return -EPROTO;
        if ((e->method->mode == RPC_WORKER) != !!e->method->on_worker ||
            (e->method->mode != RPC_WORKER) != !!e->method->on_loop)
                return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                     "%s has no handler for the thread its mode runs it on", name);
        e->params = calloc(json_array_size(params) + 1, sizeof(ParamSpec));
        if (!e->params)
                return -ENOMEM;
        json_array_foreach(params, j, p) {
                if (parse_param_spec(p, &e->params[j]) < 0)
                        return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                             "proto/ declares an invalid param %zu of %s", j, name);
                e->n_params++;
        }
        return entry_bind_fields(e, err);
}

int rpc_params_load(Rpc *rpc, const RpcMethod *methods, size_t n_methods, MsbError *err) {
        json_t *doc_methods = json_object_get(rpc->document, "methods"), *m;
        size_t i;
        int r;

        rpc->entries = calloc(json_array_size(doc_methods) + 1, sizeof(MethodEntry));
        if (!rpc->entries)
                return -ENOMEM;
        json_array_foreach(doc_methods, i, m) {
                r = entry_load(&rpc->entries[rpc->n_entries], m, methods, n_methods, err);
                rpc->n_entries++;
                if (r < 0)
                        return r;
        }
        for (size_t k = 0; k < n_methods; k++) {
                bool declared = false;
                for (size_t e = 0; e < rpc->n_entries; e++)
                        declared = declared || rpc->entries[e].method == &methods[k];
                if (!declared)
                        return msb_error_set(err, -EPROTO, PROTO_ERROR_INTERNAL_ERROR,
                                             "the daemon implements %s, which proto/ does not declare",
                                             methods[k].name);
        }
        return 0;
}

void rpc_params_free(Rpc *rpc) {
        for (size_t i = 0; i < rpc->n_entries; i++)
                free(rpc->entries[i].params);
        free(rpc->entries);
        rpc->entries = NULL;
        rpc->n_entries = 0;
}

const MethodEntry *rpc_find(const Rpc *rpc, const char *name) {
        for (size_t i = 0; i < rpc->n_entries; i++)
                if (streq(rpc->entries[i].method->name, name))
                        return &rpc->entries[i];
        return NULL;
}

/* ---- validation against the document ---- */

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

static int validate_value(const ParamSpec *spec, const char *key, json_t *v, MsbError *err) {
        if (!type_matches(spec->type, v))
                return msb_error_invalid_param(err, key, "parameter '%s' must be of type %s", key, spec->type);
        if (spec->enum_values) {
                bool found = false;
                size_t i;
                json_t *allowed;
                json_array_foreach(spec->enum_values, i, allowed)
                        found = found || json_equal(allowed, v);
                if (!found)
                        return msb_error_invalid_param(err, key, "parameter '%s' is not one of the allowed values", key);
        }
        if (json_is_integer(v) && json_is_integer(spec->minimum) &&
            json_integer_value(v) < json_integer_value(spec->minimum))
                return msb_error_invalid_param(err, key, "parameter '%s' is below its minimum", key);
        if (json_is_string(v)) {
                json_int_t len = utf8_length(json_string_value(v), json_string_length(v));
                if ((spec->min_length >= 0 && len < spec->min_length) ||
                    (spec->max_length >= 0 && len > spec->max_length))
                        return msb_error_invalid_param(err, key, "parameter '%s' has a length out of range", key);
        }
        return 0;
}

static int validate_params(const MethodEntry *e, json_t *params, MsbError *err) {
        const char *key;
        json_t *v;
        int r;

        if (params && !json_is_object(params)) {
                return msb_error_invalid_param(err, "params", "params must be an object: %s takes its params by name",
                                               e->method->name);
        }
        json_object_foreach(params, key, v) {
                const ParamSpec *spec = NULL;
                for (size_t i = 0; i < e->n_params; i++)
                        if (streq(e->params[i].name, key))
                                spec = &e->params[i];
                if (!spec)
                        return msb_error_invalid_param(err, key, "unknown parameter '%s'", key);
                r = validate_value(spec, key, v, err);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < e->n_params; i++)
                if (e->params[i].required && !json_object_get(params, e->params[i].name))
                        return msb_error_invalid_param(err, e->params[i].name, "missing required parameter '%s'",
                                                       e->params[i].name);
        return 0;
}

/* ---- decoding by the field tables ---- */

void rpc_fds_close(RpcFds *fds) {
        if (!fds)
                return;
        for (unsigned i = 0; i < fds->n; i++)
                fds->fds[i] = safe_close(fds->fds[i]);
}

/* Takes the descriptor that param (an index among the line's) names out
 * of fds. */
static int take_fd(const char *param, json_t *v, RpcFds *fds, int *ret, MsbError *err) {
        json_int_t i = json_integer_value(v);
        unsigned n = fds ? fds->n : 0;

        if (i < 0 || (uint64_t) i >= n) {
                return msb_error_invalid_param(err, param,
                                               "parameter '%s' names file descriptor %lld, but %u came with the "
                                               "request line (send them with SCM_RIGHTS together with the line's "
                                               "first bytes)",
                                               param, (long long) i, n);
        }
        if (fds->fds[i] < 0) {
                return msb_error_invalid_param(err, param,
                                               "parameter '%s': file descriptor %lld of the line was taken by "
                                               "another request",
                                               param, (long long) i);
        }
        *ret = TAKE_FD(fds->fds[i]);
        return 0;
}

static int decode_field(const RpcField *f, json_t *v, RpcFds *fds, uint8_t *out, MsbError *err) {
        void *slot = out + f->offset;

        switch (f->type) {
        case RPC_FIELD_STRING:
                *(const char **) slot = json_string_value(v);
                break;
        case RPC_FIELD_BOOL:
                *(bool *) slot = json_is_true(v);
                break;
        case RPC_FIELD_INT:
                *(int64_t *) slot = v ? (int64_t) json_integer_value(v) : RPC_FIELD_INT_ABSENT;
                break;
        case RPC_FIELD_JSON:
                *(json_t **) slot = v;
                break;
        case RPC_FIELD_ENUM:
                *(int *) slot = -1;
                for (int i = 0; v && f->enum_names[i]; i++)
                        if (streq(f->enum_names[i], json_string_value(v)))
                                *(int *) slot = i;
                break;
        case RPC_FIELD_FD:
                *(int *) slot = -EBADF;
                if (v)
                        return take_fd(f->name, v, fds, (int *) slot, err);
                break;
        }
        return 0;
}

void rpc_params_done(const MethodEntry *e, void *decoded) {
        if (!decoded)
                return;
        for (size_t i = 0; i < e->n_params; i++)
                if (e->params[i].field->type == RPC_FIELD_FD)
                        safe_close(*(int *) ((uint8_t *) decoded + e->params[i].field->offset));
        free(decoded);
}

int rpc_params_decode(const MethodEntry *e, json_t *params, RpcFds *fds, void **ret, MsbError *err) {
        uint8_t *out;
        int r;

        r = validate_params(e, params, err);
        if (r < 0)
                return r;
        out = calloc(1, e->method->params_size ?: 1);
        if (!out)
                return -ENOMEM;
        /* Descriptors first, all set, so that a failure part way closes
         * exactly those taken. */
        for (size_t i = 0; i < e->n_params; i++)
                if (e->params[i].field->type == RPC_FIELD_FD)
                        *(int *) (out + e->params[i].field->offset) = -EBADF;
        for (size_t i = 0; i < e->n_params; i++) {
                r = decode_field(e->params[i].field, json_object_get(params, e->params[i].name), fds, out, err);
                if (r < 0) {
                        rpc_params_done(e, out);
                        return r;
                }
        }
        *ret = out;
        return 0;
}

int rpc_decode_params(const Rpc *rpc, const char *name, json_t *params, RpcFds *fds, void **ret, MsbError *err) {
        const MethodEntry *e = rpc_find(rpc, name);
        if (!e)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_METHOD_NOT_FOUND, "no method %s", name);
        return rpc_params_decode(e, params, fds, ret, err);
}

void rpc_decoded_free(const Rpc *rpc, const char *name, void *decoded) {
        const MethodEntry *e = rpc_find(rpc, name);
        if (e)
                rpc_params_done(e, decoded);
        else
                free(decoded);
}
