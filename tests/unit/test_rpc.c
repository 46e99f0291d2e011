/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the JSON-RPC layer (daemon/ipc/rpc.c) against the protocol
 * document in proto/: the daemon's method table and proto/ agree name for
 * name, params are validated by the declared schemas (required, type, enum,
 * length, unknown fields, by-name only) with data.parameter naming the
 * field, and error responses carry the code, message and name of proto/.
 *
 * The expectations are derived from proto/openrpc.json itself, parsed here
 * independently of rpc.c, so adding a method or a param to the document is
 * covered without editing this file.
 */

#include <check.h>
#include <fcntl.h>
#include <stddef.h>

#include "daemon.h"
#include "rpc.h"

static json_t *proto_document(void) {
        json_error_t jerr;
        json_t *doc = json_loadb(proto_openrpc_json, proto_openrpc_json_len, 0, &jerr);
        ck_assert_msg(doc, "proto/openrpc.json does not parse: %s", jerr.text);
        return doc;
}

static json_t *proto_methods(json_t *doc) {
        json_t *methods = json_object_get(doc, "methods");
        ck_assert(json_is_array(methods));
        ck_assert_uint_gt(json_array_size(methods), 0);
        return methods;
}

static const char *method_name(json_t *m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        ck_assert_ptr_nonnull(name);
        return name;
}

static void rpc_new_daemon(Rpc **ret) {
        MsbError err = {};
        int r = rpc_new(NULL, daemon_methods, daemon_n_methods, NULL, NULL, ret, &err);
        ck_assert_msg(r == 0, "rpc_new(daemon_methods): %d %s", r, err.message);
        ck_assert(!err.set);
        msb_error_clear(&err);
}

/* A value the schema accepts. */
static json_t *valid_value(json_t *schema) {
        const char *type = json_string_value(json_object_get(schema, "type"));
        json_t *enum_values = json_object_get(schema, "enum");
        json_t *minl = json_object_get(schema, "minLength");

        if (json_is_array(enum_values))
                return json_incref(json_array_get(enum_values, 0));
        /* A schema without a type (rpc.cancel's id) takes any value. */
        if (!type)
                return json_integer(1);
        if (streq(type, "string")) {
                size_t n = json_is_integer(minl) && json_integer_value(minl) > 1 ? (size_t) json_integer_value(minl) : 1;
                char *s = malloc(n + 1);
                memset(s, 'v', n);
                s[n] = '\0';
                json_t *v = json_string(s);
                free(s);
                return v;
        }
        if (streq(type, "boolean"))
                return json_true();
        if (streq(type, "integer") || streq(type, "number"))
                return json_integer(1);
        if (streq(type, "object"))
                return json_object();
        if (streq(type, "array"))
                return json_array();
        ck_abort_msg("unexpected param type %s in proto/", type);
        return NULL;
}

/* A value of another JSON type than the schema's. */
static json_t *wrong_type_value(json_t *schema) {
        const char *type = json_string_value(json_object_get(schema, "type"));

        ck_assert_ptr_nonnull(type);
        if (streq(type, "string"))
                return json_integer(7);
        return json_string("7");
}

/* The params object with every required param (and, with all, every
 * optional one too) set to a valid value. */
static json_t *params_for(json_t *m, bool all) {
        json_t *params = json_object(), *p;
        size_t i;

        json_array_foreach(json_object_get(m, "params"), i, p)
                if (all || json_is_true(json_object_get(p, "required")))
                        json_object_set_new(params, json_string_value(json_object_get(p, "name")),
                                            valid_value(json_object_get(p, "schema")));
        return params;
}

/* Checks that err is an invalid-params error naming the field. */
static void expect_invalid_param(int r, MsbError *err, const char *field) {
        ck_assert_int_eq(r, -EINVAL);
        ck_assert(err->set);
        ck_assert_int_eq(err->kind, PROTO_ERROR_INVALID_PARAMS);
        ck_assert_ptr_nonnull(err->data);
        ck_assert_msg(json_is_string(json_object_get(err->data, "parameter")), "no data.parameter");
        ck_assert_str_eq(json_string_value(json_object_get(err->data, "parameter")), field);
        ck_assert_msg(strstr(err->message, field), "message '%s' does not name '%s'", err->message, field);
}

/* Descriptors as a request line may bring them: copies of /dev/null. */
static void fds_init(RpcFds *fds, unsigned n) {
        *fds = (RpcFds) { .n = n };
        for (unsigned i = 0; i < n; i++) {
                fds->fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
                ck_assert_int_ge(fds->fds[i], 0);
        }
}

/* Validates and decodes, as a request's params are before its handler
 * runs; the line brought descriptors enough for any fd param (whose valid
 * value, 1, is an index among them). */
static int check_params(const Rpc *rpc, const char *method, json_t *params, MsbError *err) {
        void *decoded = NULL;
        RpcFds fds;
        int r;

        fds_init(&fds, 2);
        r = rpc_decode_params(rpc, method, params, &fds, &decoded, err);
        rpc_decoded_free(rpc, method, decoded);
        rpc_fds_close(&fds);
        return r;
}

static int validate(Rpc *rpc, const char *method, const char *params_json, MsbError *err) {
        json_auto_t *params = NULL;

        if (params_json) {
                json_error_t jerr;
                params = json_loads(params_json, JSON_DECODE_ANY, &jerr);
                ck_assert_msg(params, "bad test JSON %s: %s", params_json, jerr.text);
        }
        _cleanup_free_ void *decoded = NULL;
        return rpc_decode_params(rpc, method, params, NULL, &decoded, err);
}

/* ---- the method table and proto/ ---- */

START_TEST(test_daemon_methods_match_proto) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *methods = proto_methods(doc), *m;
        size_t i;

        /* rpc_new() is what the daemon runs at start: it must accept the table. */
        rpc_new_daemon(&rpc);

        /* And independently of rpc.c: the same names, each once, each with a handler. */
        ck_assert_uint_eq(daemon_n_methods, json_array_size(methods));
        json_array_foreach(methods, i, m) {
                unsigned found = 0;
                for (size_t k = 0; k < daemon_n_methods; k++)
                        if (streq(daemon_methods[k].name, method_name(m))) {
                                found++;
                                ck_assert_ptr_nonnull(daemon_methods[k].mode == RPC_WORKER
                                                              ? (void *) daemon_methods[k].on_worker
                                                              : (void *) daemon_methods[k].on_loop);
                        }
                ck_assert_msg(found == 1, "proto/ method %s is implemented %u times", method_name(m), found);
        }
        for (size_t k = 0; k < daemon_n_methods; k++) {
                bool declared = false;
                json_array_foreach(methods, i, m)
                        declared = declared || streq(method_name(m), daemon_methods[k].name);
                ck_assert_msg(declared, "the daemon implements %s, which proto/ does not declare",
                              daemon_methods[k].name);
        }
}
END_TEST

START_TEST(test_rpc_new_rejects_missing_method) {
        _cleanup_free_ RpcMethod *table = calloc(daemon_n_methods, sizeof(RpcMethod));

        ck_assert_ptr_nonnull(table);
        for (size_t skip = 0; skip < daemon_n_methods; skip++) {
                Rpc *rpc = NULL;
                MsbError err = {};
                size_t n = 0;

                for (size_t k = 0; k < daemon_n_methods; k++)
                        if (k != skip)
                                table[n++] = daemon_methods[k];
                ck_assert_int_eq(rpc_new(NULL, table, n, NULL, NULL, &rpc, &err), -EPROTO);
                ck_assert_ptr_null(rpc);
                ck_assert(err.set);
                ck_assert_int_eq(err.kind, PROTO_ERROR_INTERNAL_ERROR);
                ck_assert_msg(strstr(err.message, daemon_methods[skip].name), "message '%s' does not name %s",
                              err.message, daemon_methods[skip].name);
                msb_error_clear(&err);
        }
}
END_TEST

static int handler_unused(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        ck_abort_msg("a handler ran in a validation test");
        return -EIO;
}

START_TEST(test_rpc_new_rejects_extra_method) {
        _cleanup_free_ RpcMethod *table = calloc(daemon_n_methods + 1, sizeof(RpcMethod));
        Rpc *rpc = NULL;
        MsbError err = {};

        ck_assert_ptr_nonnull(table);
        memcpy(table, daemon_methods, daemon_n_methods * sizeof(RpcMethod));
        table[daemon_n_methods] = (RpcMethod) { .name = "image.frobnicate", .mode = RPC_INLINE, .on_loop = handler_unused };
        ck_assert_int_eq(rpc_new(NULL, table, daemon_n_methods + 1, NULL, NULL, &rpc, &err), -EPROTO);
        ck_assert_ptr_null(rpc);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INTERNAL_ERROR);
        ck_assert_msg(strstr(err.message, "image.frobnicate"), "message '%s'", err.message);
        msb_error_clear(&err);

        /* The extra method first in the table makes no difference. */
        table[0] = (RpcMethod) { .name = "image.frobnicate", .mode = RPC_INLINE, .on_loop = handler_unused };
        memcpy(table + 1, daemon_methods, daemon_n_methods * sizeof(RpcMethod));
        ck_assert_int_eq(rpc_new(NULL, table, daemon_n_methods + 1, NULL, NULL, &rpc, &err), -EPROTO);
        ck_assert_ptr_null(rpc);
        ck_assert_msg(strstr(err.message, "image.frobnicate"), "message '%s'", err.message);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_rpc_new_rejects_duplicate_method) {
        _cleanup_free_ RpcMethod *table = calloc(daemon_n_methods + 1, sizeof(RpcMethod));
        Rpc *rpc = NULL;
        MsbError err = {};

        /* Every name of proto/ is there, but one twice: two handlers for one
         * method is a table error too. */
        ck_assert_ptr_nonnull(table);
        memcpy(table, daemon_methods, daemon_n_methods * sizeof(RpcMethod));
        table[daemon_n_methods] = daemon_methods[0];
        ck_assert_int_lt(rpc_new(NULL, table, daemon_n_methods + 1, NULL, NULL, &rpc, &err), 0);
        ck_assert_ptr_null(rpc);
        ck_assert(err.set);
        msb_error_clear(&err);
}
END_TEST

/* The decoded params are what the handler reads: strings, booleans and
 * enums by their index in the document's values. */
START_TEST(test_params_decoded_by_the_field_tables) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *pin = json_pack("{s:s, s:s, s:s}", "kind", "snapshot", "name", "s1", "reference", "alpine");
        json_auto_t *rm = json_pack("{s:s, s:b}", "reference", "alpine", "force", 1);
        json_auto_t *rm_default = json_pack("{s:s}", "reference", "alpine");
        _cleanup_free_ void *p1 = NULL, *p2 = NULL, *p3 = NULL;
        MsbError err = {};
        struct {
                int kind;
                const char *name, *reference;
        } *pinp;
        struct {
                const char *reference;
                bool force;
        } *rmp;

        rpc_new_daemon(&rpc);
        ck_assert_int_eq(rpc_decode_params(rpc, "pin.add", pin, NULL, &p1, &err), 0);
        pinp = p1;
        ck_assert_int_eq(pinp->kind, 1);
        ck_assert_str_eq(pinp->name, "s1");
        ck_assert_str_eq(pinp->reference, "alpine");
        ck_assert_int_eq(rpc_decode_params(rpc, "image.remove", rm, NULL, &p2, &err), 0);
        rmp = p2;
        ck_assert(rmp->force);
        ck_assert_int_eq(rpc_decode_params(rpc, "image.remove", rm_default, NULL, &p3, &err), 0);
        rmp = p3;
        ck_assert(!rmp->force);
        ck_assert_str_eq(rmp->reference, "alpine");
}
END_TEST

/* The first fields of image.load's params struct, as its handler reads them. */
typedef struct LoadParamsView {
        const char *path;
        int fd;
} LoadParamsView;

static bool fd_is_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

/* An fd param takes the descriptor its index names out of those of the
 * line: the call owns it (rpc_decoded_free() closes it), the line keeps the
 * others; an index past them, or one taken already, is invalid params. */
START_TEST(test_fd_params_take_the_lines_descriptors) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *second = json_pack("{s:i}", "fd", 1), *past = json_pack("{s:i}", "fd", 2);
        json_auto_t *negative = json_pack("{s:i}", "fd", -1);
        const LoadParamsView *load;
        void *decoded = NULL;
        MsbError err = {};
        RpcFds fds;
        int taken;

        rpc_new_daemon(&rpc);
        fds_init(&fds, 2);
        ck_assert_int_eq(rpc_decode_params(rpc, "image.load", second, &fds, &decoded, &err), 0);
        load = decoded;
        taken = load->fd;
        ck_assert(fd_is_open(taken));
        ck_assert_int_lt(fds.fds[1], 0);
        ck_assert_int_ge(fds.fds[0], 0);

        /* Taken once only: a second request of the same line gets none. */
        void *again = NULL;
        expect_invalid_param(rpc_decode_params(rpc, "image.load", second, &fds, &again, &err), &err, "fd");
        ck_assert_ptr_null(again);
        msb_error_clear(&err);
        expect_invalid_param(rpc_decode_params(rpc, "image.load", past, &fds, &again, &err), &err, "fd");
        msb_error_clear(&err);
        expect_invalid_param(rpc_decode_params(rpc, "image.load", negative, &fds, &again, &err), &err, "fd");
        msb_error_clear(&err);
        expect_invalid_param(rpc_decode_params(rpc, "image.load", second, NULL, &again, &err), &err, "fd");
        msb_error_clear(&err);

        rpc_decoded_free(rpc, "image.load", decoded);
        ck_assert(!fd_is_open(taken));
        ck_assert(fd_is_open(fds.fds[0]));
        rpc_fds_close(&fds);
        ck_assert_int_lt(fds.fds[0], 0);
}
END_TEST

/* An absent fd param decodes as no descriptor, never as descriptor 0. */
START_TEST(test_absent_fd_param_is_none) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *by_path = json_pack("{s:s}", "path", "/x");
        const LoadParamsView *load;
        void *decoded = NULL;
        MsbError err = {};

        rpc_new_daemon(&rpc);
        ck_assert_int_eq(rpc_decode_params(rpc, "image.load", by_path, NULL, &decoded, &err), 0);
        load = decoded;
        ck_assert_int_eq(load->fd, -EBADF);
        rpc_decoded_free(rpc, "image.load", decoded);
}
END_TEST

/* A field table that decodes a param otherwise than the document declares
 * it (type, required, enum values, a param missing or extra) stops rpc_new. */
static const char *const wrong_kinds[] = { "snapshot", "sandbox", NULL };
static const char *const right_kinds[] = { "sandbox", "snapshot", NULL };
typedef struct TestPin {
        int kind;
        const char *name;
        const char *reference;
        bool extra;
} TestPin;

START_TEST(test_rpc_new_rejects_field_table_drift) {
        static const RpcField swapped_enum[] = {
                { "kind", RPC_FIELD_ENUM, offsetof(TestPin, kind), true, wrong_kinds },
                { "name", RPC_FIELD_STRING, offsetof(TestPin, name), true, NULL },
                { "reference", RPC_FIELD_STRING, offsetof(TestPin, reference), true, NULL },
                {}
        };
        static const RpcField wrong_type[] = {
                { "kind", RPC_FIELD_STRING, offsetof(TestPin, kind), true, NULL },
                { "name", RPC_FIELD_STRING, offsetof(TestPin, name), true, NULL },
                { "reference", RPC_FIELD_STRING, offsetof(TestPin, reference), true, NULL },
                {}
        };
        static const RpcField optional[] = {
                { "kind", RPC_FIELD_ENUM, offsetof(TestPin, kind), true, right_kinds },
                { "name", RPC_FIELD_STRING, offsetof(TestPin, name), false, NULL },
                { "reference", RPC_FIELD_STRING, offsetof(TestPin, reference), true, NULL },
                {}
        };
        static const RpcField missing[] = {
                { "kind", RPC_FIELD_ENUM, offsetof(TestPin, kind), true, right_kinds },
                { "name", RPC_FIELD_STRING, offsetof(TestPin, name), true, NULL },
                {}
        };
        static const RpcField extra[] = {
                { "kind", RPC_FIELD_ENUM, offsetof(TestPin, kind), true, right_kinds },
                { "name", RPC_FIELD_STRING, offsetof(TestPin, name), true, NULL },
                { "reference", RPC_FIELD_STRING, offsetof(TestPin, reference), true, NULL },
                { "extra", RPC_FIELD_BOOL, offsetof(TestPin, extra), false, NULL },
                {}
        };
        const RpcField *const tables[] = { swapped_enum, wrong_type, optional, missing, extra };
        _cleanup_free_ RpcMethod *table = calloc(daemon_n_methods, sizeof(RpcMethod));
        size_t pin_add = daemon_n_methods;

        ck_assert_ptr_nonnull(table);
        memcpy(table, daemon_methods, daemon_n_methods * sizeof(RpcMethod));
        for (size_t k = 0; k < daemon_n_methods; k++)
                if (streq(table[k].name, "pin.add"))
                        pin_add = k;
        ck_assert_uint_lt(pin_add, daemon_n_methods);
        for (size_t t = 0; t < ELEMENTSOF(tables); t++) {
                Rpc *rpc = NULL;
                MsbError err = {};

                table[pin_add].fields = tables[t];
                table[pin_add].params_size = sizeof(TestPin);
                ck_assert_int_eq(rpc_new(NULL, table, daemon_n_methods, NULL, NULL, &rpc, &err), -EPROTO);
                ck_assert_ptr_null(rpc);
                ck_assert_msg(strstr(err.message, "pin.add"), "table %zu: '%s'", t, err.message);
                msb_error_clear(&err);
        }
}
END_TEST

START_TEST(test_rpc_free_null) {
        ck_assert_ptr_null(rpc_free(NULL));
}
END_TEST

/* ---- params validation, driven by the document ---- */

START_TEST(test_valid_params_every_method) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *m;
        size_t i;

        rpc_new_daemon(&rpc);
        json_array_foreach(proto_methods(doc), i, m) {
                json_auto_t *required = params_for(m, false), *all = params_for(m, true);
                MsbError err = {};
                int r;

                r = check_params(rpc, method_name(m), required, &err);
                ck_assert_msg(r == 0, "%s with its required params: %s", method_name(m), err.message);
                r = check_params(rpc, method_name(m), all, &err);
                ck_assert_msg(r == 0, "%s with all params: %s", method_name(m), err.message);
                ck_assert(!err.set);

                /* Omitted params are an empty object: fine exactly when nothing is required. */
                r = check_params(rpc, method_name(m), NULL, &err);
                if (json_object_size(required) == 0)
                        ck_assert_msg(r == 0, "%s without params: %s", method_name(m), err.message);
                else
                        ck_assert_int_eq(r, -EINVAL);
                msb_error_clear(&err);
        }
}
END_TEST

START_TEST(test_missing_required_param) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *m, *p;
        size_t i, j;
        unsigned checked = 0;

        rpc_new_daemon(&rpc);
        json_array_foreach(proto_methods(doc), i, m) {
                json_array_foreach(json_object_get(m, "params"), j, p) {
                        const char *name = json_string_value(json_object_get(p, "name"));
                        json_auto_t *params = params_for(m, true);
                        MsbError err = {};

                        if (!json_is_true(json_object_get(p, "required")))
                                continue;
                        json_object_del(params, name);
                        expect_invalid_param(check_params(rpc, method_name(m), params, &err), &err, name);
                        ck_assert(strstr(err.message, "missing"));
                        msb_error_clear(&err);
                        checked++;
                }
        }
        /* image.get, image.load, pin.add, ... have required params. */
        ck_assert_uint_ge(checked, 5);
}
END_TEST

START_TEST(test_wrong_type_param) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *m, *p;
        size_t i, j;
        unsigned checked = 0;

        rpc_new_daemon(&rpc);
        json_array_foreach(proto_methods(doc), i, m) {
                json_array_foreach(json_object_get(m, "params"), j, p) {
                        const char *name = json_string_value(json_object_get(p, "name"));
                        json_auto_t *params = params_for(m, true);
                        MsbError err = {};

                        /* A param of any type has no wrong one. */
                        if (!json_object_get(json_object_get(p, "schema"), "type"))
                                continue;
                        json_object_set_new(params, name, wrong_type_value(json_object_get(p, "schema")));
                        expect_invalid_param(check_params(rpc, method_name(m), params, &err), &err, name);
                        msb_error_clear(&err);

                        /* null is a type of its own, not "absent", for an optional param too. */
                        json_object_set_new(params, name, json_null());
                        expect_invalid_param(check_params(rpc, method_name(m), params, &err), &err, name);
                        msb_error_clear(&err);
                        checked++;
                }
        }
        ck_assert_uint_ge(checked, 10);
}
END_TEST

START_TEST(test_unknown_param) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *m;
        size_t i;

        rpc_new_daemon(&rpc);
        json_array_foreach(proto_methods(doc), i, m) {
                json_auto_t *params = params_for(m, true);
                MsbError err = {};

                json_object_set_new(params, "bogus_field", json_true());
                expect_invalid_param(check_params(rpc, method_name(m), params, &err), &err, "bogus_field");
                ck_assert(strstr(err.message, "unknown"));
                msb_error_clear(&err);
        }
}
END_TEST

START_TEST(test_param_names_are_exact) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        MsbError err = {};

        rpc_new_daemon(&rpc);
        /* Names are case-sensitive and not prefix-matched. */
        expect_invalid_param(validate(rpc, "image.get", "{\"Reference\": \"alpine\"}", &err), &err, "Reference");
        msb_error_clear(&err);
        expect_invalid_param(validate(rpc, "image.get", "{\"ref\": \"alpine\"}", &err), &err, "ref");
        msb_error_clear(&err);
        expect_invalid_param(validate(rpc, "image.remove", "{\"reference\": \"a\", \"forced\": true}", &err), &err,
                             "forced");
        msb_error_clear(&err);
        ck_assert_int_eq(validate(rpc, "image.remove", "{\"reference\": \"a\", \"force\": false}", &err), 0);
}
END_TEST

START_TEST(test_enum_params) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *m, *p, *allowed;
        size_t i, j, k;
        unsigned enums = 0;

        rpc_new_daemon(&rpc);
        json_array_foreach(proto_methods(doc), i, m)
                json_array_foreach(json_object_get(m, "params"), j, p) {
                        const char *name = json_string_value(json_object_get(p, "name"));
                        json_t *values = json_object_get(json_object_get(p, "schema"), "enum");
                        json_auto_t *params = params_for(m, true);
                        MsbError err = {};

                        if (!values)
                                continue;
                        enums++;
                        json_array_foreach(values, k, allowed) {
                                json_object_set(params, name, allowed);
                                ck_assert_msg(check_params(rpc, method_name(m), params, &err) == 0,
                                              "%s %s=%s: %s", method_name(m), name, json_string_value(allowed),
                                              err.message);
                        }

                        json_object_set_new(params, name, json_string("not-one-of-them"));
                        expect_invalid_param(check_params(rpc, method_name(m), params, &err), &err, name);
                        msb_error_clear(&err);

                        /* Matching is exact: no case folding. */
                        char upper[64];
                        snprintf(upper, sizeof(upper), "%s", json_string_value(json_array_get(values, 0)));
                        upper[0] = (char) (upper[0] - 'a' + 'A');
                        json_object_set_new(params, name, json_string(upper));
                        expect_invalid_param(check_params(rpc, method_name(m), params, &err), &err, name);
                        msb_error_clear(&err);
                }
        /* pin.add kind, image.pull policy. */
        ck_assert_uint_ge(enums, 2);

        MsbError err = {};
        ck_assert_int_eq(validate(rpc, "pin.add", "{\"kind\":\"snapshot\",\"name\":\"n\",\"reference\":\"a\"}", &err), 0);
        expect_invalid_param(validate(rpc, "pin.add", "{\"kind\":\"volume\",\"name\":\"n\",\"reference\":\"a\"}", &err),
                             &err, "kind");
        msb_error_clear(&err);
        expect_invalid_param(validate(rpc, "image.pull", "{\"reference\":\"a\",\"policy\":\"sometimes\"}", &err), &err,
                             "policy");
        msb_error_clear(&err);
}
END_TEST

static void set_pin_name(json_t *params, size_t len, const char *unit) {
        size_t ul = strlen(unit);
        char *s = malloc(len * ul + 1);

        ck_assert_ptr_nonnull(s);
        for (size_t i = 0; i < len; i++)
                memcpy(s + i * ul, unit, ul);
        s[len * ul] = '\0';
        json_object_set_new(params, "name", json_string(s));
        free(s);
}

START_TEST(test_length_limits) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *params = json_pack("{s:s, s:s, s:s}", "kind", "sandbox", "name", "", "reference", "alpine");
        MsbError err = {};

        rpc_new_daemon(&rpc);
        /* proto/: pin.add name has minLength 1 and maxLength 255. */
        expect_invalid_param(check_params(rpc, "pin.add", params, &err), &err, "name");
        msb_error_clear(&err);
        set_pin_name(params, 1, "n");
        ck_assert_int_eq(check_params(rpc, "pin.add", params, &err), 0);
        set_pin_name(params, 255, "n");
        ck_assert_int_eq(check_params(rpc, "pin.add", params, &err), 0);
        set_pin_name(params, 256, "n");
        expect_invalid_param(check_params(rpc, "pin.add", params, &err), &err, "name");
        msb_error_clear(&err);
        ck_assert_int_eq(validate(rpc, "pin.remove", "{\"kind\":\"sandbox\",\"name\":\"\"}", &err), -EINVAL);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_length_counts_characters) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *params = json_pack("{s:s, s:s, s:s}", "kind", "sandbox", "name", "", "reference", "alpine");
        MsbError err = {};
        int r;

        /* JSON Schema (validation, "maxLength") measures a string in
         * characters as RFC 8259 defines them, not in UTF-8 bytes: a name of
         * 255 two-byte characters is within maxLength 255, one of 256 is not. */
        rpc_new_daemon(&rpc);
        set_pin_name(params, 255, "\xc3\xa9");
        r = check_params(rpc, "pin.add", params, &err);
        ck_assert_msg(r == 0, "255 characters (510 bytes) refused: %s", err.message);
        set_pin_name(params, 256, "\xc3\xa9");
        expect_invalid_param(check_params(rpc, "pin.add", params, &err), &err, "name");
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_params_by_position) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *doc = proto_document();
        json_t *m;
        size_t i;
        MsbError err = {};

        rpc_new_daemon(&rpc);
        /* Every method of proto/ takes its params by name. */
        json_array_foreach(proto_methods(doc), i, m)
                ck_assert_str_eq(json_string_value(json_object_get(m, "paramStructure")), "by-name");

        expect_invalid_param(validate(rpc, "image.get", "[\"alpine\"]", &err), &err, "params");
        msb_error_clear(&err);
        expect_invalid_param(validate(rpc, "image.remove", "[\"alpine\", true]", &err), &err, "params");
        msb_error_clear(&err);
        expect_invalid_param(validate(rpc, "image.list", "[]", &err), &err, "params");
        msb_error_clear(&err);
        /* Neither are scalars params. */
        expect_invalid_param(validate(rpc, "image.list", "\"alpine\"", &err), &err, "params");
        msb_error_clear(&err);
        expect_invalid_param(validate(rpc, "system.info", "null", &err), &err, "params");
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_unknown_method) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        MsbError err = {};

        rpc_new_daemon(&rpc);
        ck_assert_int_eq(validate(rpc, "image.frobnicate", "{}", &err), -ENOENT);
        ck_assert(err.set);
        ck_assert_int_eq(err.kind, PROTO_ERROR_METHOD_NOT_FOUND);
        msb_error_clear(&err);
        /* Method names are exact too. */
        ck_assert_int_eq(validate(rpc, "Image.List", "{}", &err), -ENOENT);
        msb_error_clear(&err);
        ck_assert_int_eq(validate(rpc, "image.list ", "{}", &err), -ENOENT);
        msb_error_clear(&err);
        /* image.pull.progress is a notification the daemon sends, never a method. */
        ck_assert_int_eq(validate(rpc, "image.pull.progress", "{}", &err), -ENOENT);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_first_error_wins) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        MsbError err = {};

        /* Several problems at once: one error, naming one of the fields it
         * describes, and the message and data.parameter agree. */
        rpc_new_daemon(&rpc);
        ck_assert_int_eq(validate(rpc, "pin.add", "{\"kind\": 1, \"bogus\": 2}", &err), -EINVAL);
        const char *field = json_string_value(json_object_get(err.data, "parameter"));
        ck_assert_ptr_nonnull(field);
        ck_assert(streq(field, "kind") || streq(field, "bogus") || streq(field, "name") || streq(field, "reference"));
        ck_assert(strstr(err.message, field));
        msb_error_clear(&err);
}
END_TEST

/* ---- error responses ---- */

/* The entry of proto/'s components/errors with data.name == name. */
static json_t *proto_error(json_t *doc, const char *name) {
        json_t *errors = json_object_get(json_object_get(doc, "components"), "errors"), *e;
        const char *key;

        json_object_foreach(errors, key, e)
                if (streq_ptr(json_string_value(json_object_get(json_object_get(e, "data"), "name")), name))
                        return e;
        return NULL;
}

static void expect_response_shape(json_t *resp, json_t *id) {
        json_t *error = json_object_get(resp, "error");

        ck_assert(json_is_object(resp));
        ck_assert_uint_eq(json_object_size(resp), 3);
        ck_assert_str_eq(json_string_value(json_object_get(resp, "jsonrpc")), "2.0");
        ck_assert(json_equal(json_object_get(resp, "id"), id ?: json_null()));
        ck_assert_ptr_null(json_object_get(resp, "result"));
        ck_assert(json_is_object(error));
        ck_assert(json_is_integer(json_object_get(error, "code")));
        ck_assert(json_is_string(json_object_get(error, "message")));
        ck_assert(json_is_object(json_object_get(error, "data")));
        ck_assert(json_is_string(json_object_get(json_object_get(error, "data"), "name")));
}

START_TEST(test_error_response_every_kind) {
        json_auto_t *doc = proto_document();
        json_auto_t *id = json_integer(42);

        /* The generated table and the document list the same errors. */
        ck_assert_uint_eq(json_object_size(json_object_get(json_object_get(doc, "components"), "errors")),
                          _PROTO_ERROR_MAX);

        for (int k = 0; k < _PROTO_ERROR_MAX; k++) {
                MsbError err = {};
                json_t *e = proto_error(doc, proto_errors[k].name);
                json_auto_t *resp = NULL;

                ck_assert_msg(e, "error %s is not in proto/", proto_errors[k].name);
                msb_error_set(&err, -EIO, (ProtoError) k, "something about %d", k);
                resp = rpc_error_response(id, &err);
                expect_response_shape(resp, id);

                json_t *error = json_object_get(resp, "error");
                ck_assert_int_eq(json_integer_value(json_object_get(error, "code")),
                                 json_integer_value(json_object_get(e, "code")));
                ck_assert_int_eq(json_integer_value(json_object_get(error, "code")), proto_errors[k].code);
                char want[64];
                snprintf(want, sizeof(want), "something about %d", k);
                ck_assert_str_eq(json_string_value(json_object_get(error, "message")), want);
                ck_assert_str_eq(json_string_value(json_object_get(json_object_get(error, "data"), "name")),
                                 proto_errors[k].name);
                ck_assert_uint_eq(json_object_size(json_object_get(error, "data")), 1);
                msb_error_clear(&err);
        }
}
END_TEST

START_TEST(test_error_response_default_message) {
        json_auto_t *doc = proto_document();
        json_auto_t *resp = NULL, *id = json_string("req-1");
        MsbError err = { .kind = PROTO_ERROR_IMAGE_NOT_FOUND, .set = true };

        /* Without a message of its own, an error says proto/'s message. */
        resp = rpc_error_response(id, &err);
        ck_assert_str_eq(json_string_value(json_object_get(resp, "id")), "req-1");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(resp, "error"), "message")),
                         json_string_value(json_object_get(proto_error(doc, "image-not-found"), "message")));
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(resp, "error"), "code")), 1001);
}
END_TEST

START_TEST(test_error_response_unset_is_internal) {
        json_auto_t *a = NULL, *b = NULL;
        MsbError unset = {};

        /* A handler that failed without saying why is an internal error, and
         * a response to an unidentifiable request has id null. */
        a = rpc_error_response(NULL, NULL);
        b = rpc_error_response(NULL, &unset);
        expect_response_shape(a, NULL);
        expect_response_shape(b, NULL);
        ck_assert(json_is_null(json_object_get(a, "id")));
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(a, "error"), "code")), -32603);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(json_object_get(a, "error"), "data"),
                                                           "name")),
                         "internal-error");
        ck_assert(json_equal(a, b));
}
END_TEST

START_TEST(test_error_response_invalid_params_data) {
        _cleanup_(rpc_freep) Rpc *rpc = NULL;
        json_auto_t *id = json_string("abc"), *resp = NULL;
        MsbError err = {};

        rpc_new_daemon(&rpc);
        ck_assert_int_eq(validate(rpc, "image.get", "{}", &err), -EINVAL);
        resp = rpc_error_response(id, &err);
        expect_response_shape(resp, id);

        json_t *error = json_object_get(resp, "error"), *data = json_object_get(error, "data");
        ck_assert_int_eq(json_integer_value(json_object_get(error, "code")), -32602);
        ck_assert_str_eq(json_string_value(json_object_get(data, "name")), "invalid-params");
        ck_assert_str_eq(json_string_value(json_object_get(data, "parameter")), "reference");
        ck_assert_uint_eq(json_object_size(data), 2);

        /* The response has its own copy: the error is unchanged, and the id
         * still belongs to the caller. */
        ck_assert_ptr_null(json_object_get(err.data, "name"));
        ck_assert_uint_eq(json_object_size(err.data), 1);
        ck_assert_uint_eq(id->refcount, 2);
        json_decref(TAKE_PTR(resp));
        ck_assert_uint_eq(id->refcount, 1);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_error_response_extra_data) {
        json_auto_t *resp = NULL, *id = json_integer(1);
        MsbError err = {};

        /* Extra data fields (image-in-use holders, say) go through, and a
         * stray "name" in them cannot override the error's name. */
        msb_error_set(&err, -EBUSY, PROTO_ERROR_IMAGE_IN_USE, "in use");
        msb_error_add_data(&err, "holders", json_pack("[{s:s, s:s}]", "kind", "sandbox", "name", "s1"));
        msb_error_add_data(&err, "name", json_string("spoofed"));
        resp = rpc_error_response(id, &err);

        json_t *data = json_object_get(json_object_get(resp, "error"), "data");
        ck_assert_str_eq(json_string_value(json_object_get(data, "name")), "image-in-use");
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(resp, "error"), "code")), 1002);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(data, "holders"), 0),
                                                           "name")),
                         "s1");
        msb_error_clear(&err);
}
END_TEST

/* The limits of this layer are the document's (x-limits), and a limit error
 * sent as text names the limit and its value, with the first error set
 * winning as for any other. */
START_TEST(test_limit_error_response_text) {
        json_auto_t *doc = proto_document(), *resp = NULL;
        json_t *limits = json_object_get(doc, "x-limits");
        _cleanup_free_ char *text = NULL;
        json_error_t jerr;
        MsbError err = {};

        ck_assert_int_eq(json_integer_value(json_object_get(limits, "batch_members")), RPC_BATCH_MEMBERS_MAX);
        ck_assert_int_eq(msb_error_limit(&err, "batch_members", RPC_BATCH_MEMBERS_MAX, "a batch of %d", 1001), -E2BIG);
        ck_assert_int_eq(msb_error_limit(&err, "other", 1, "later"), -E2BIG);
        text = rpc_error_response_text(NULL, &err);
        ck_assert_ptr_nonnull(text);
        ck_assert_ptr_null(strchr(text, '\n'));
        resp = json_loads(text, 0, &jerr);
        ck_assert_msg(resp, "not JSON: %s", jerr.text);
        expect_response_shape(resp, NULL);

        json_t *error = json_object_get(resp, "error"), *data = json_object_get(error, "data");
        ck_assert_int_eq(json_integer_value(json_object_get(error, "code")), 1007);
        ck_assert_str_eq(json_string_value(json_object_get(error, "message")), "a batch of 1001");
        ck_assert_str_eq(json_string_value(json_object_get(data, "name")), "limit-exceeded");
        ck_assert_str_eq(json_string_value(json_object_get(data, "limit")), "batch_members");
        ck_assert_int_eq(json_integer_value(json_object_get(data, "max")), 1000);
        ck_assert_uint_eq(json_object_size(data), 3);
        msb_error_clear(&err);
}
END_TEST

static Suite *rpc_suite(void) {
        Suite *s = suite_create("rpc");
        TCase *tc = tcase_create("methods");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_daemon_methods_match_proto);
        tcase_add_test(tc, test_rpc_new_rejects_missing_method);
        tcase_add_test(tc, test_rpc_new_rejects_extra_method);
        tcase_add_test(tc, test_rpc_new_rejects_duplicate_method);
        tcase_add_test(tc, test_rpc_free_null);
        tcase_add_test(tc, test_params_decoded_by_the_field_tables);
        tcase_add_test(tc, test_fd_params_take_the_lines_descriptors);
        tcase_add_test(tc, test_absent_fd_param_is_none);
        tcase_add_test(tc, test_rpc_new_rejects_field_table_drift);
        suite_add_tcase(s, tc);

        tc = tcase_create("params");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_valid_params_every_method);
        tcase_add_test(tc, test_missing_required_param);
        tcase_add_test(tc, test_wrong_type_param);
        tcase_add_test(tc, test_unknown_param);
        tcase_add_test(tc, test_param_names_are_exact);
        tcase_add_test(tc, test_enum_params);
        tcase_add_test(tc, test_length_limits);
        tcase_add_test(tc, test_length_counts_characters);
        tcase_add_test(tc, test_params_by_position);
        tcase_add_test(tc, test_unknown_method);
        tcase_add_test(tc, test_first_error_wins);
        suite_add_tcase(s, tc);

        tc = tcase_create("errors");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_error_response_every_kind);
        tcase_add_test(tc, test_error_response_default_message);
        tcase_add_test(tc, test_error_response_unset_is_internal);
        tcase_add_test(tc, test_error_response_invalid_params_data);
        tcase_add_test(tc, test_error_response_extra_data);
        tcase_add_test(tc, test_limit_error_response_text);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(rpc_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
