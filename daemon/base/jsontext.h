/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Writing JSON text directly, for the few answers that are large and flat
 * (image.list of thousands of references): building a jansson tree of them
 * and serialising it costs several times more, mostly in malloc.
 */

#include "util.h"

typedef struct JsonText {
        char *data;
        size_t len;
        size_t allocated;
        bool oom; /* an allocation failed: the text is incomplete */
} JsonText;

/* Room for more bytes (and the final NUL) without another allocation. */
void json_text_grow(JsonText *t, size_t more);

static inline void json_text_reserve(JsonText *t, size_t more) {
        if (t->len + more + 1 > t->allocated)
                json_text_grow(t, more);
}

/* Inline, and the NUL written only by json_text_steal(): a list of 10,000
 * images is some 300,000 appends, most of one to twenty bytes. */
static inline void json_text_append(JsonText *t, const char *s, size_t n) {
        json_text_reserve(t, n);
        if (t->oom)
                return;
        memcpy(t->data + t->len, s, n);
        t->len += n;
}

/* A literal piece of JSON syntax (a key with its quotes, a brace, ...);
 * inline so that the compiler knows a literal's length. */
static inline void json_text_raw(JsonText *t, const char *s) {
        json_text_append(t, s, strlen(s));
}
/* s as a JSON string (escaped as RFC 8259 section 7 requires), or null when s is NULL. */
void json_text_string(JsonText *t, const char *s);
void json_text_int(JsonText *t, int64_t v);
/* Hands over the NUL-terminated text; NULL (and everything freed) after an OOM. */
char *json_text_steal(JsonText *t);
void json_text_done(JsonText *t);
