/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * NDJSON framing: each request is one JSON text terminated by '\n'. A
 * LineBuffer collects bytes as they arrive (in any split) and hands out
 * complete lines. A line longer than its limit is refused as soon as the
 * limit is crossed, without buffering the rest of it.
 */

#include "util.h"
#include "proto-gen.h"

/* README "The protocol", limits: a request line may be at most 16 MiB, newline excluded. */
#define FRAMING_LINE_MAX_BYTES ((size_t) PROTO_LIMIT_REQUEST_LINE_BYTES)

typedef struct LineBuffer {
        char *data;
        size_t start;     /* where the next line begins; bytes before it are consumed */
        size_t size;      /* bytes held, consumed ones included */
        size_t allocated;
        size_t max_line;
        bool overflow;    /* a line crossed max_line: the stream is unusable */
} LineBuffer;

void line_buffer_init(LineBuffer *b, size_t max_line);
void line_buffer_done(LineBuffer *b);

/* Appends bytes. -EMSGSIZE once the current line exceeds max_line (and
 * from then on); -ENOMEM. */
int line_buffer_append(LineBuffer *b, const void *p, size_t n);

/*
 * Takes the next complete line: 1 with *ret_line pointing into the buffer
 * (NUL-terminated in place of the '\n', valid until the next call) and
 * *ret_len its length; 0 when no complete line is buffered.
 */
int line_buffer_next(LineBuffer *b, char **ret_line, size_t *ret_len);

/* At end of stream: takes what follows the last '\n' as a final line, so a
 * request written without its newline is still answered. 1, or 0 if none. */
int line_buffer_take_rest(LineBuffer *b, char **ret_line, size_t *ret_len);
