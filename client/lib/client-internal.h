/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Private to libmsbimage: the connection object, the call machinery that
 * every method file uses, and the small ownership helpers (the client does
 * not link daemon code, so it keeps its own copies of the few it needs).
 */

#include <jansson.h>

#include "msbimage.h"

#include "macro.h"

/* The first bytes of a response buffer; it doubles as it fills, up to
 * MSB_CLIENT_RESPONSE_MAX_BYTES. */
#define CLIENT_READ_CHUNK_BYTES ((size_t) 64 * 1024)

/* A buffer grown past this for one large answer is released once it has
 * been consumed, so that an idle client does not keep it. */
#define CLIENT_BUFFER_KEEP_BYTES ((size_t) 1024 * 1024)

struct MsbClient {
        int fd;                /* -EBADF once closed */
        char *socket_path;
        uint64_t next_id;      /* ids of our requests: 1, 2, ... */
        uint64_t timeout_ms;   /* 0: none */
        int cancel_fd;         /* readable: cancel the call in progress; -1: none */
        bool cancelled;        /* the call in progress saw cancel_fd readable */
        char *buf;             /* bytes received, not yet consumed */
        size_t buf_start;      /* offset of the first unconsumed byte */
        size_t buf_size;       /* bytes held, consumed ones included */
        size_t buf_allocated;
        MsbClientError *error; /* of the last call, when it was a JSON-RPC error */
};

/* Forgets the error of the previous call. Every public call starts with it,
 * so that msb_client_last_error() always describes the latest call, also
 * one refused before it reached the daemon. */
void client_reset_error(MsbClient *c);

/*
 * Called for a notification (a message without "id") that arrives while a
 * call waits for its answer. The object is borrowed. Returning a negative
 * errno abandons the call.
 */
typedef int (*ClientNotifyFn)(MsbClient *c, uint64_t request_id, json_t *notification, void *userdata);

/*
 * Sends {method, params} (params borrowed; NULL sends none) and waits for
 * the answer with the same id. On success *ret_result is the result (new
 * reference, json null included). A JSON-RPC error is stored in the client
 * and gives -MSB_EREMOTE; a transport failure closes the connection.
 */
int client_call(MsbClient *c, const char *method, json_t *params, ClientNotifyFn notify, void *userdata,
                json_t **ret_result);
/* The same, sending fds (at most MSB_CLIENT_REQUEST_FDS_MAX) with the
 * request line's first bytes, where the daemon looks for them (x-limits
 * request_fds). They stay the caller's. */
int client_call_fds(MsbClient *c, const char *method, json_t *params, const int *fds, size_t n_fds,
                    ClientNotifyFn notify, void *userdata, json_t **ret_result);

/*
 * Reads an answer line's text directly, for results too large to be worth
 * a jansson tree (image.list). Tried on every line the call receives: 1
 * when it took the line as the successful answer to request_id (the caller
 * then gets a NULL result and what the reader kept), 0 when it leaves the
 * line to the generic reader (a notification, an error, anything it does
 * not expect: jansson then decides, so the answers a fast reader declines
 * are judged exactly as before), -ENOMEM on failure.
 */
typedef int (*ClientAnswerFn)(const char *line, size_t len, uint64_t request_id, void *userdata);
/* client_call() with such a reader; *ret_result is NULL when it took the answer. */
int client_call_read(MsbClient *c, const char *method, json_t *params, ClientAnswerFn answer, void *userdata,
                     json_t **ret_result);

/* Reads the next message the daemon sends (a notification, for an events
 * subscriber), within the client's timeout. -ETIMEDOUT leaves the
 * connection usable; any other failure closes it. */
int client_read_message(MsbClient *c, json_t **ret_message);

/* JSON helpers shared by the method files. A helper fails with -EPROTO
 * when the daemon's answer does not have the type the protocol promises. */

/* A member's string, or NULL (borrowed): for notifications, whose fields
 * depend on their event. */
const char *json_member_string(json_t *o, const char *key);
/* A member's integer, or MSB_NULL_INT. */
int64_t json_member_int(json_t *o, const char *key);
/* A progress notification (msg) of method about request request_id: 1 with
 * its params and event name (borrowed from msg); 0 when msg is another
 * method's or another request's; -EPROTO when it names no event. */
int client_progress_params(json_t *msg, const char *method, uint64_t request_id, json_t **ret_params,
                           const char **ret_event);
/* The index of s in names (n entries, some NULL), or unknown. */
int client_event_from_string(const char *const *names, size_t n, const char *s, int unknown);
/* A required string member, duplicated. */
int json_get_string(json_t *o, const char *key, char **ret);
/* A string-or-null member, duplicated or NULL. */
int json_get_string_nullable(json_t *o, const char *key, char **ret);
/* A required integer member (a number with no fraction). */
int json_get_int(json_t *o, const char *key, int64_t *ret);
/* An integer-or-null member (also a real, truncated: times are numbers);
 * MSB_NULL_INT for null or absent. */
int json_get_int_nullable(json_t *o, const char *key, int64_t *ret);
/* A real as such an integer: truncated; -EPROTO when not finite or beyond int64. */
int json_real_to_int(double v, int64_t *ret);
/* An array of strings as a NULL-terminated array; NULL for null when
 * nullable, else -EPROTO. */
int json_get_strv(json_t *o, const char *key, bool nullable, char ***ret);
void strv_free(char **l);
/* The compact text of a JSON value (any type). */
int json_to_text(json_t *j, char **ret);

/* Parsers of result objects, shared by the method files. */
/* ImageHandle's members as MsbImage holds them: image_from_json() and the
 * streaming image.list reader (image_list.c) both read through this table,
 * so that they accept the same answers. */
typedef enum ImageFieldKind {
        IMAGE_FIELD_STRING,          /* char *, required */
        IMAGE_FIELD_STRING_NULLABLE, /* char *, NULL when null or absent */
        IMAGE_FIELD_INT,             /* int64_t, required, an integer */
        IMAGE_FIELD_INT_NULLABLE,    /* int64_t, MSB_NULL_INT when null or absent; a real is truncated */
} ImageFieldKind;
typedef struct ImageField {
        const char *name;
        ImageFieldKind kind;
        size_t offset; /* in MsbImage */
} ImageField;
#define IMAGE_FIELDS 8
extern const ImageField image_fields[IMAGE_FIELDS];

int image_from_json(json_t *o, MsbImage *ret);
/* The ClientAnswerFn of image.list: on success *(MsbImageList **) userdata. */
int image_list_read_answer(const char *line, size_t len, uint64_t request_id, void *userdata);
void image_done(MsbImage *image);
int image_list_from_json(json_t *a, MsbImageList **ret);
