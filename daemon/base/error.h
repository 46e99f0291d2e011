/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A protocol-level error that library code hands up to the RPC layer.
 *
 * Functions still return 0 or a negative errno; those that can fail in a way
 * a client must be told about also take an `MsbError *` (which may be NULL)
 * and fill it with the error kind from proto/ (its code and name come from
 * there), a human message and optional extra `data` fields. The RPC layer
 * turns it into a JSON-RPC error object; nothing below it logs.
 */

#include <jansson.h>

#include "proto-gen.h"
#include "util.h"

#define MSB_ERROR_MESSAGE_MAX 1024

typedef struct MsbError {
        ProtoError kind;
        bool set;
        char message[MSB_ERROR_MESSAGE_MAX];
        json_t *data; /* owned; extra fields of error.data besides "name" */
} MsbError;

/*
 * Records an error of `kind` with a printf-style message and returns `r`, so
 * callers can write `return msb_error_set(err, -EINVAL, PROTO_ERROR_..., ...)`.
 * The first error set wins: a later call does not overwrite a set error, so
 * the innermost, most precise cause reaches the client. `err` may be NULL.
 */
int msb_error_set(MsbError *err, int r, ProtoError kind, const char *fmt, ...) _printf_(4, 5);

/* Adds data[key] = value (the reference to value is stolen) to a set error. */
void msb_error_add_data(MsbError *err, const char *key, json_t *value);

/* Records a limit-exceeded error (as msb_error_set) naming the limit, a key
 * of proto/ "x-limits", in data.limit and its value in data.max; returns
 * -E2BIG. */
int msb_error_limit(MsbError *err, const char *limit, uint64_t max, const char *fmt, ...) _printf_(4, 5);

/* Records an invalid-params error (as msb_error_set) naming the offending
 * parameter, or field of a configuration, in data.parameter; returns -EINVAL. */
int msb_error_invalid_param(MsbError *err, const char *parameter, const char *fmt, ...) _printf_(3, 4);

/* Releases data and resets err to unset. */
void msb_error_clear(MsbError *err);

/* Maps an errno from the store or the filesystem to a store-error, keeping a set error. */
int msb_error_from_errno(MsbError *err, int r, const char *what);
