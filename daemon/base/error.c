/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>

#include "error.h"

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if it is not one. */
static size_t utf8_sequence(const unsigned char *p) {
        size_t n;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xC2 && p[0] <= 0xDF)
                n = 2;
        else if (p[0] >= 0xE0 && p[0] <= 0xEF)
                n = 3;
        else if (p[0] >= 0xF0 && p[0] <= 0xF4)
                n = 4;
        else
                return 0;
        for (size_t i = 1; i < n; i++)
                if ((p[i] & 0xC0) != 0x80)
                        return 0;
        /* Overlong forms, surrogates and code points past U+10FFFF. */
        if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F) || (p[0] == 0xF0 && p[1] < 0x90) ||
            (p[0] == 0xF4 && p[1] > 0x8F))
                return 0;
        return n;
}

/*
 * Messages quote what clients and archives send (paths, names) and are cut
 * at MSB_ERROR_MESSAGE_MAX, perhaps inside a character. A JSON string must
 * be valid UTF-8, so a sequence cut at the end is dropped and any invalid
 * byte becomes '?': the error always reaches the client.
 */
static void utf8_sanitize(char *s) {
        unsigned char *p = (unsigned char *) s;

        while (*p) {
                size_t n = utf8_sequence(p);
                if (n > 0) {
                        p += n;
                        continue;
                }
                /* A truncated final sequence: drop it. */
                size_t rest = strlen((char *) p);
                if (rest < 4 && p[0] >= 0xC2 && p[0] <= 0xF4) {
                        bool tail = true;
                        for (size_t i = 1; i < rest; i++)
                                tail = tail && (p[i] & 0xC0) == 0x80;
                        if (tail) {
                                *p = '\0';
                                return;
                        }
                }
                *p++ = '?';
        }
}

/* Sets an error of kind from a format and its arguments; false when err
 * was NULL or already set, so that the caller adds no data to it. */
static bool error_setv(MsbError *err, ProtoError kind, const char *fmt, va_list ap) {
        if (!err || err->set)
                return false;
        err->kind = kind;
        err->set = true;
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        utf8_sanitize(err->message);
        return true;
}

int msb_error_set(MsbError *err, int r, ProtoError kind, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        error_setv(err, kind, fmt, ap);
        va_end(ap);
        return r;
}

int msb_error_limit(MsbError *err, const char *limit, uint64_t max, const char *fmt, ...) {
        va_list ap;
        bool set;

        va_start(ap, fmt);
        set = error_setv(err, PROTO_ERROR_LIMIT_EXCEEDED, fmt, ap);
        va_end(ap);
        if (set) {
                msb_error_add_data(err, "limit", json_string(limit));
                msb_error_add_data(err, "max", json_integer((json_int_t) max));
        }
        return -E2BIG;
}

int msb_error_invalid_param(MsbError *err, const char *parameter, const char *fmt, ...) {
        va_list ap;
        bool set;

        va_start(ap, fmt);
        set = error_setv(err, PROTO_ERROR_INVALID_PARAMS, fmt, ap);
        va_end(ap);
        if (set)
                msb_error_add_data(err, "parameter", json_string(parameter));
        return -EINVAL;
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
