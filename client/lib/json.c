/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Typed access to the members of a result object. The daemon promises the
 * shapes of proto/openrpc.json; an answer that breaks them is a protocol
 * error (-EPROTO), never a crash or a silently wrong struct.
 */

#include <math.h>

#include "client-internal.h"

const char *json_member_string(json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

int64_t json_member_int(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);
        return json_is_integer(v) ? (int64_t) json_integer_value(v) : MSB_NULL_INT;
}

int client_progress_params(json_t *msg, const char *method, uint64_t request_id, json_t **ret_params,
                           const char **ret_event) {
        json_t *params = json_object_get(msg, "params");
        json_t *id = json_object_get(params, "id");
        const char *event;

        if (!streq(json_member_string(msg, "method") ?: "", method))
                return 0;
        /* One request at a time, so progress for another id cannot be ours;
         * skip it rather than misreport. */
        if (!json_is_integer(id) || (uint64_t) json_integer_value(id) != request_id)
                return 0;
        event = json_member_string(params, "event");
        if (!event)
                return -EPROTO;
        *ret_params = params;
        *ret_event = event;
        return 1;
}

int client_event_from_string(const char *const *names, size_t n, const char *s, int unknown) {
        for (size_t i = 0; i < n; i++)
                if (names[i] && streq(names[i], s))
                        return (int) i;
        return unknown;
}

int json_get_string(json_t *o, const char *key, char **ret) {
        json_t *v = json_object_get(o, key);
        char *s;

        if (!json_is_string(v))
                return -EPROTO;
        s = strdup(json_string_value(v));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int json_get_string_nullable(json_t *o, const char *key, char **ret) {
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                *ret = NULL;
                return 0;
        }
        return json_get_string(o, key, ret);
}

int json_get_int(json_t *o, const char *key, int64_t *ret) {
        json_t *v = json_object_get(o, key);

        if (!json_is_integer(v))
                return -EPROTO;
        *ret = (int64_t) json_integer_value(v);
        return 0;
}

int json_get_int_nullable(json_t *o, const char *key, int64_t *ret) {
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                *ret = MSB_NULL_INT;
                return 0;
        }
        if (json_is_integer(v)) {
                *ret = (int64_t) json_integer_value(v);
                return 0;
        }
        if (json_is_real(v))
                return json_real_to_int(json_real_value(v), ret);
        return -EPROTO;
}

int json_real_to_int(double v, int64_t *ret) {
        /* Times are JSON numbers and may come as reals; whole milliseconds
         * are all a client needs. */
        if (!isfinite(v) || fabs(v) >= 9.0e18)
                return -EPROTO;
        *ret = (int64_t) v;
        return 0;
}

void strv_free(char **l) {
        if (!l)
                return;
        for (char **p = l; *p; p++)
                free(*p);
        free(l);
}

int json_get_strv(json_t *o, const char *key, bool nullable, char ***ret) {
        json_t *a = json_object_get(o, key), *v;
        char **l;
        size_t i;

        if (nullable && (!a || json_is_null(a))) {
                *ret = NULL;
                return 0;
        }
        if (!json_is_array(a))
                return -EPROTO;
        l = calloc(json_array_size(a) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        json_array_foreach(a, i, v) {
                if (!json_is_string(v)) {
                        strv_free(l);
                        return -EPROTO;
                }
                l[i] = strdup(json_string_value(v));
                if (!l[i]) {
                        strv_free(l);
                        return -ENOMEM;
                }
        }
        *ret = l;
        return 0;
}

/* A growing text for flat_object_text(); `failed` once out of memory. */
typedef struct FlatText {
        char *data;
        size_t len, allocated;
        bool failed;
} FlatText;

static void flat_append(FlatText *t, const char *s, size_t n) {
        if (t->failed)
                return;
        if (t->len + n + 1 > t->allocated) {
                size_t want = t->allocated ? t->allocated * 2 : 256;
                while (want < t->len + n + 1)
                        want *= 2;
                char *d = realloc(t->data, want);
                if (!d) {
                        t->failed = true;
                        return;
                }
                t->data = d;
                t->allocated = want;
        }
        memcpy(t->data + t->len, s, n);
        t->len += n;
}

/* A string the way json_dumps(JSON_COMPACT) writes it: UTF-8 as is, '"'
 * and '\\' escaped, the control characters as \b \f \n \r \t or \u00XX. */
static void flat_string(FlatText *t, const char *s, size_t n) {
        static const char hex[] = "0123456789ABCDEF";
        size_t run = 0;

        flat_append(t, "\"", 1);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                char esc[6] = { '\\', (char) c, '0', '0', hex[c >> 4], hex[c & 0xf] };
                size_t len = 2;

                if (c >= 0x20 && c != '"' && c != '\\')
                        continue;
                flat_append(t, s + run, i - run);
                run = i + 1;
                switch (c) {
                case '"': case '\\': break;
                case '\b': esc[1] = 'b'; break;
                case '\f': esc[1] = 'f'; break;
                case '\n': esc[1] = 'n'; break;
                case '\r': esc[1] = 'r'; break;
                case '\t': esc[1] = 't'; break;
                default: esc[1] = 'u'; len = 6;
                }
                flat_append(t, esc, len);
        }
        flat_append(t, s + run, n - run);
        flat_append(t, "\"", 1);
}

/* The compact text of an object whose members are all strings, integers,
 * booleans or null (an ImageHandle, each of a list of thousands), byte for
 * byte what json_dumps() writes: jansson's generic dumper cost a quarter of
 * `msb-image ls` (bench/list). 0 when the object has another kind of
 * member, for json_dumps() to write. */
static int flat_object_text(json_t *o, char **ret) {
        FlatText t = {};
        const char *key;
        json_t *v;
        bool first = true;

        flat_append(&t, "{", 1);
        json_object_foreach(o, key, v) {
                char num[24];
                int n;

                flat_append(&t, first ? "" : ",", first ? 0 : 1);
                first = false;
                flat_string(&t, key, strlen(key));
                flat_append(&t, ":", 1);
                switch (json_typeof(v)) {
                case JSON_STRING:
                        flat_string(&t, json_string_value(v), json_string_length(v));
                        break;
                case JSON_INTEGER:
                        n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                        flat_append(&t, num, (size_t) n);
                        break;
                case JSON_TRUE: flat_append(&t, "true", 4); break;
                case JSON_FALSE: flat_append(&t, "false", 5); break;
                case JSON_NULL: flat_append(&t, "null", 4); break;
                default:
                        free(t.data);
                        return 0;
                }
        }
        flat_append(&t, "}", 2);
        if (t.failed) {
                free(t.data);
                return -ENOMEM;
        }
        *ret = t.data;
        return 1;
}

int json_to_text(json_t *j, char **ret) {
        if (json_is_object(j)) {
                int r = flat_object_text(j, ret);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
