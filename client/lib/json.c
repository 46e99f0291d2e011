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
        /* Times are JSON numbers and may come as reals; whole milliseconds
         * are all a client needs. */
        if (json_is_real(v) && isfinite(json_real_value(v)) && fabs(json_real_value(v)) < 9.0e18) {
                *ret = (int64_t) json_real_value(v);
                return 0;
        }
        return -EPROTO;
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

int json_to_text(json_t *j, char **ret) {
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}
