/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>

#include "error.h"

int msb_error_set(MsbError *err, int r, ProtoError kind, const char *fmt, ...) {
        va_list ap;

        if (!err || err->set)
                return r;

        err->kind = kind;
        err->set = true;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        return r;
}

void msb_error_add_data(MsbError *err, const char *key, json_t *value) {
        if (!err || !value) {
                json_decref(value);
                return;
        }
        if (!err->data)
                err->data = json_object();
        if (json_object_set_new(err->data, key, value) < 0)
                return;
}

void msb_error_clear(MsbError *err) {
        if (!err)
                return;
        json_decref(err->data);
        *err = (MsbError) {};
}

int msb_error_from_errno(MsbError *err, int r, const char *what) {
        if (r == -ENOSPC)
                return msb_error_set(err, r, PROTO_ERROR_STORE_ERROR, "%s: no space left on the store's filesystem", what);
        return msb_error_set(err, r, PROTO_ERROR_STORE_ERROR, "%s: %s", what, strerror(-r));
}
