/* SPDX-License-Identifier: Apache-2.0 */
#include "framing.h"

void line_buffer_init(LineBuffer *b, size_t max_line) {
        *b = (LineBuffer) { .max_line = max_line };
}

void line_buffer_done(LineBuffer *b) {
        free(b->data);
        *b = (LineBuffer) {};
}

int line_buffer_append(LineBuffer *b, const void *p, size_t n) {
        if (b->overflow)
                return -EMSGSIZE;

        /* Consumed lines are dropped here, once per read, rather than once
         * per line, so a burst of small pipelined requests stays linear. */
        if (b->start > 0) {
                memmove(b->data, b->data + b->start, b->size - b->start);
                b->size -= b->start;
                b->start = 0;
        }

        /* Room for the bytes plus a NUL after the last line. */
        if (b->size + n + 1 > b->allocated) {
                size_t want = b->allocated ? b->allocated : 4096;
                while (want < b->size + n + 1)
                        want *= 2;
                char *d = realloc(b->data, want);
                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->allocated = want;
        }
        memcpy(b->data + b->size, p, n);
        b->size += n;

        /* The line in progress (after the last '\n') must stay within the limit. */
        const char *nl = memrchr(b->data, '\n', b->size);
        size_t pending = nl ? b->size - (size_t) (nl - b->data) - 1 : b->size;
        if (pending > b->max_line) {
                b->overflow = true;
                return -EMSGSIZE;
        }
        return 0;
}

int line_buffer_next(LineBuffer *b, char **ret_line, size_t *ret_len) {
        /* After an over-long line nothing that follows can be trusted to be framed. */
        if (b->overflow)
                return -EMSGSIZE;

        char *line = b->data + b->start;
        char *nl = b->size > b->start ? memchr(line, '\n', b->size - b->start) : NULL;

        if (!nl)
                return 0;

        size_t len = (size_t) (nl - line);
        *nl = '\0';
        b->start += len + 1;
        if (len > b->max_line) {
                b->overflow = true;
                return -EMSGSIZE;
        }
        *ret_line = line;
        *ret_len = len;
        return 1;
}

int line_buffer_take_rest(LineBuffer *b, char **ret_line, size_t *ret_len) {
        if (b->overflow || b->start >= b->size)
                return 0;
        /* append() always leaves room for this NUL. */
        b->data[b->size] = '\0';
        *ret_line = b->data + b->start;
        *ret_len = b->size - b->start;
        b->start = b->size;
        return 1;
}
