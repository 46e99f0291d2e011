/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for the NDJSON LineBuffer (daemon/ipc/framing.c). The input is
 * two control bytes (the line limit, and the largest read, which also seeds
 * the read sizes) and a byte stream. The stream is fed in reads of pseudo-random sizes, as a
 * socket would deliver it, and what comes out is compared with a plain split
 * on '\n': the same lines in the same order, and -EMSGSIZE exactly when a
 * line is over the limit, after which nothing more comes out.
 */

#include "framing.h"
#include "fuzz.h"

/* Small limits make over-limit lines common in short inputs. */
#define FUZZ_FRAMING_MAX_LINE_MAX 128

typedef struct Expected {
        const uint8_t *data;
        size_t size;
        size_t max_line;
        size_t n_lines;    /* complete lines within the limit before the first bad one */
        bool bad;          /* some line (complete or the rest) is over the limit */
        size_t rest_start; /* where the unterminated rest begins when !bad */
} Expected;

static void expected_init(Expected *e, const uint8_t *data, size_t size, size_t max_line) {
        size_t start = 0;

        *e = (Expected) { .data = data, .size = size, .max_line = max_line };
        for (size_t i = 0; i < size; i++) {
                if (data[i] != '\n')
                        continue;
                if (i - start > max_line) {
                        e->bad = true;
                        return;
                }
                e->n_lines++;
                start = i + 1;
        }
        e->rest_start = start;
        if (size - start > max_line)
                e->bad = true;
}

/* The k-th line of the stream (k < n_lines). */
static void expected_line(const Expected *e, size_t k, const uint8_t **ret, size_t *ret_len) {
        size_t start = 0;

        for (size_t i = 0; i < e->size; i++)
                if (e->data[i] == '\n') {
                        if (k-- == 0) {
                                *ret = e->data + start;
                                *ret_len = i - start;
                                return;
                        }
                        start = i + 1;
                }
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        LineBuffer b;
        Expected e;
        size_t max_line, read_max, pos = 0, got = 0;
        unsigned seed;
        bool failed = false;
        char *line;
        size_t len;
        int r;

        if (size < 2)
                return 0;
        max_line = 1 + data[0] % FUZZ_FRAMING_MAX_LINE_MAX;
        /* 1 to 256 bytes per read: 1 is the byte-by-byte worst case. */
        read_max = 1 + (size_t) data[1];
        seed = data[1];
        data += 2;
        size -= 2;

        expected_init(&e, data, size, max_line);
        line_buffer_init(&b, max_line);

        while (pos < size && !failed) {
                size_t chunk;

                seed = seed * 1103515245u + 12345u;
                chunk = 1 + (seed >> 16) % read_max;
                if (chunk > size - pos)
                        chunk = size - pos;
                r = line_buffer_append(&b, data + pos, chunk);
                pos += chunk;
                if (r < 0) {
                        FUZZ_CHECK(r == -EMSGSIZE);
                        failed = true;
                        break;
                }
                while ((r = line_buffer_next(&b, &line, &len)) > 0) {
                        const uint8_t *want;
                        size_t want_len;

                        FUZZ_CHECK(got < e.n_lines);
                        expected_line(&e, got, &want, &want_len);
                        FUZZ_CHECK(len == want_len);
                        FUZZ_CHECK(memcmp(line, want, len) == 0);
                        FUZZ_CHECK(line[len] == '\0');
                        got++;
                }
                if (r < 0) {
                        FUZZ_CHECK(r == -EMSGSIZE);
                        failed = true;
                }
        }

        if (failed) {
                /* Only an over-limit line fails the stream, and for good. */
                FUZZ_CHECK(e.bad);
                FUZZ_CHECK(got <= e.n_lines);
                FUZZ_CHECK(line_buffer_append(&b, "\n", 1) == -EMSGSIZE);
                FUZZ_CHECK(line_buffer_take_rest(&b, &line, &len) == 0);
        } else {
                /* Every line came out; the rest, if any, is the last line. */
                FUZZ_CHECK(got == e.n_lines);
                r = line_buffer_take_rest(&b, &line, &len);
                if (e.rest_start < size) {
                        /* A rest over the limit would have failed an append. */
                        FUZZ_CHECK(!e.bad);
                        FUZZ_CHECK(r == 1);
                        FUZZ_CHECK(len == size - e.rest_start);
                        FUZZ_CHECK(memcmp(line, data + e.rest_start, len) == 0);
                } else {
                        FUZZ_CHECK(!e.bad);
                        FUZZ_CHECK(r == 0);
                }
                FUZZ_CHECK(line_buffer_take_rest(&b, &line, &len) == 0);
        }

        line_buffer_done(&b);
        return 0;
}
