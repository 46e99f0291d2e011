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

void json_text_reserve(JsonText *t, size_t more);
void json_text_append(JsonText *t, const char *s, size_t n);
/* A literal piece of JSON syntax (a key with its quotes, a brace, ...). */
void json_text_raw(JsonText *t, const char *s);
/* s as a JSON string (escaped as RFC 8259 section 7 requires), or null when s is NULL. */
void json_text_string(JsonText *t, const char *s);
void json_text_int(JsonText *t, int64_t v);
/* Hands over the NUL-terminated text; NULL (and everything freed) after an OOM. */
char *json_text_steal(JsonText *t);
void json_text_done(JsonText *t);
