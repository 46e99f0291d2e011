/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the NDJSON LineBuffer (daemon/ipc/framing.c): lines arrive in any
 * split, a line at the limit passes, one byte more fails for good, and the
 * last line of a stream may lack its newline.
 */

#include <check.h>

#include "framing.h"

/* A small limit keeps most tests fast; the real 16 MiB limit is tested too. */
#define SMALL_MAX 64

static void line_buffer_donep(LineBuffer *b) {
        line_buffer_done(b);
}
#define _cleanup_line_buffer_ _cleanup_(line_buffer_donep)

/* Takes the next line and checks it equals want (len bytes). */
static void expect_line(LineBuffer *b, const char *want, size_t want_len) {
        char *line = NULL;
        size_t len = 12345;

        ck_assert_int_eq(line_buffer_next(b, &line, &len), 1);
        ck_assert_uint_eq(len, want_len);
        ck_assert_mem_eq(line, want, want_len);
        /* The line is NUL-terminated in place of its '\n'. */
        ck_assert_int_eq(line[len], '\0');
}

static void expect_no_line(LineBuffer *b) {
        char *line = (char *) "untouched";
        size_t len = 12345;

        ck_assert_int_eq(line_buffer_next(b, &line, &len), 0);
        ck_assert_str_eq(line, "untouched");
        ck_assert_uint_eq(len, 12345);
}

START_TEST(test_one_line) {
        _cleanup_line_buffer_ LineBuffer b;

        line_buffer_init(&b, SMALL_MAX);
        expect_no_line(&b);
        ck_assert_int_eq(line_buffer_append(&b, "{\"a\":1}\n", 8), 0);
        expect_line(&b, "{\"a\":1}", 7);
        expect_no_line(&b);
}
END_TEST

START_TEST(test_split_line) {
        _cleanup_line_buffer_ LineBuffer b;

        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "{\"meth", 6), 0);
        expect_no_line(&b);
        ck_assert_int_eq(line_buffer_append(&b, "od\":", 4), 0);
        expect_no_line(&b);
        ck_assert_int_eq(line_buffer_append(&b, "2}\n{\"x", 6), 0);
        expect_line(&b, "{\"method\":2}", 12);
        expect_no_line(&b);
        ck_assert_int_eq(line_buffer_append(&b, "\":3}\n", 5), 0);
        expect_line(&b, "{\"x\":3}", 7);
        expect_no_line(&b);
}
END_TEST

START_TEST(test_byte_by_byte) {
        static const char text[] = "first\n{\"jsonrpc\":\"2.0\"}\n\nlast line\n";
        static const char *const want[] = { "first", "{\"jsonrpc\":\"2.0\"}", "", "last line" };
        _cleanup_line_buffer_ LineBuffer b;
        size_t got = 0;

        line_buffer_init(&b, SMALL_MAX);
        for (size_t i = 0; i < sizeof(text) - 1; i++) {
                char *line;
                size_t len;
                int r;

                ck_assert_int_eq(line_buffer_append(&b, text + i, 1), 0);
                while ((r = line_buffer_next(&b, &line, &len)) > 0) {
                        ck_assert_uint_lt(got, ELEMENTSOF(want));
                        ck_assert_uint_eq(len, strlen(want[got]));
                        ck_assert_str_eq(line, want[got]);
                        got++;
                        /* A line is complete exactly when its '\n' arrives. */
                        ck_assert_int_eq(text[i], '\n');
                }
                ck_assert_int_eq(r, 0);
        }
        ck_assert_uint_eq(got, ELEMENTSOF(want));
}
END_TEST

START_TEST(test_many_lines_in_one_read) {
        _cleanup_line_buffer_ LineBuffer b;
        _cleanup_free_ char *text = NULL;
        size_t n = 0;
        const unsigned count = 5000;

        text = malloc(count * 32);
        ck_assert_ptr_nonnull(text);
        for (unsigned i = 0; i < count; i++)
                n += (size_t) sprintf(text + n, "{\"id\":%u}\n", i);

        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, text, n), 0);
        for (unsigned i = 0; i < count; i++) {
                char want[32];
                int len = snprintf(want, sizeof(want), "{\"id\":%u}", i);
                expect_line(&b, want, (size_t) len);
        }
        expect_no_line(&b);
}
END_TEST

/* Lines taken earlier may be compacted away by a later append; what matters
 * is that every line comes out whole and in order, across many reads of
 * uneven sizes interleaved with takes. */
START_TEST(test_random_splits) {
        _cleanup_line_buffer_ LineBuffer b;
        _cleanup_free_ char *text = NULL;
        size_t n = 0, pos = 0, got = 0;
        const unsigned count = 2000;
        unsigned seed = 12345;

        text = malloc(count * 48);
        ck_assert_ptr_nonnull(text);
        for (unsigned i = 0; i < count; i++)
                n += (size_t) sprintf(text + n, "line %u %.*s\n", i, (int) (i % 37), "abcdefghijklmnopqrstuvwxyz0123456789!");

        line_buffer_init(&b, SMALL_MAX);
        while (pos < n) {
                size_t chunk;
                char *line;
                size_t len;

                seed = seed * 1103515245 + 12345;
                chunk = 1 + (seed >> 16) % 300;
                if (chunk > n - pos)
                        chunk = n - pos;
                ck_assert_int_eq(line_buffer_append(&b, text + pos, chunk), 0);
                pos += chunk;

                /* Sometimes leave lines buffered across the next append. */
                if ((seed >> 8) % 3 == 0)
                        continue;
                while (line_buffer_next(&b, &line, &len) > 0) {
                        char want[64];
                        int wl = snprintf(want, sizeof(want), "line %zu %.*s", got, (int) (got % 37),
                                          "abcdefghijklmnopqrstuvwxyz0123456789!");
                        ck_assert_uint_eq(len, (size_t) wl);
                        ck_assert_str_eq(line, want);
                        got++;
                }
        }
        for (char *line; ; got++) {
                size_t len;
                if (line_buffer_next(&b, &line, &len) <= 0)
                        break;
                char want[64];
                snprintf(want, sizeof(want), "line %zu %.*s", got, (int) (got % 37),
                         "abcdefghijklmnopqrstuvwxyz0123456789!");
                ck_assert_str_eq(line, want);
        }
        ck_assert_uint_eq(got, count);
}
END_TEST

START_TEST(test_empty_lines) {
        _cleanup_line_buffer_ LineBuffer b;

        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "\n\n\r\n \n", 6), 0);
        expect_line(&b, "", 0);
        expect_line(&b, "", 0);
        /* Framing is by '\n' alone: a '\r' belongs to the line (the RPC layer
         * treats such blank lines as no request). */
        expect_line(&b, "\r", 1);
        expect_line(&b, " ", 1);
        expect_no_line(&b);

        /* An empty append changes nothing. */
        ck_assert_int_eq(line_buffer_append(&b, "", 0), 0);
        expect_no_line(&b);
}
END_TEST

START_TEST(test_embedded_nul) {
        _cleanup_line_buffer_ LineBuffer b;

        /* Bytes are bytes: a NUL inside a line is part of it and counted in
         * its length, so the JSON parser (not strlen) sees the whole line. */
        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "a\0b\n", 4), 0);
        expect_line(&b, "a\0b", 3);
}
END_TEST

START_TEST(test_line_at_limit) {
        _cleanup_line_buffer_ LineBuffer b;
        char buf[SMALL_MAX + 2];

        memset(buf, 'x', sizeof(buf));
        line_buffer_init(&b, SMALL_MAX);

        /* Exactly SMALL_MAX bytes plus the newline: accepted, in one piece. */
        buf[SMALL_MAX] = '\n';
        ck_assert_int_eq(line_buffer_append(&b, buf, SMALL_MAX + 1), 0);
        expect_line(&b, buf, SMALL_MAX);

        /* Again, byte by byte: the limit holds for a line in progress too. */
        for (size_t i = 0; i < SMALL_MAX; i++)
                ck_assert_int_eq(line_buffer_append(&b, "y", 1), 0);
        ck_assert_int_eq(line_buffer_append(&b, "\n", 1), 0);
        memset(buf, 'y', SMALL_MAX);
        expect_line(&b, buf, SMALL_MAX);
        expect_no_line(&b);
}
END_TEST

/* After an over-limit line the stream cannot be framed again: every later
 * call fails or yields nothing. */
static void expect_stays_failed(LineBuffer *b) {
        char *line = (char *) "untouched";
        size_t len = 7;

        ck_assert_int_eq(line_buffer_append(b, "\n{}\n", 4), -EMSGSIZE);
        ck_assert_int_eq(line_buffer_append(b, "", 0), -EMSGSIZE);
        int r = line_buffer_next(b, &line, &len);
        ck_assert_msg(r <= 0, "line_buffer_next() returned a line (%d, '%s') after an over-limit line", r,
                      r > 0 ? line : "");
        line = (char *) "untouched";
        len = 7;
        ck_assert_int_eq(line_buffer_take_rest(b, &line, &len), 0);
        ck_assert_str_eq(line, "untouched");
        ck_assert_uint_eq(len, 7);
}

START_TEST(test_line_over_limit_pending) {
        _cleanup_line_buffer_ LineBuffer b;
        char buf[SMALL_MAX];

        memset(buf, 'x', sizeof(buf));
        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "ok\n", 3), 0);
        expect_line(&b, "ok", 2);

        /* SMALL_MAX bytes without a newline are still fine; one more is not,
         * and it fails before the newline arrives. */
        ck_assert_int_eq(line_buffer_append(&b, buf, SMALL_MAX), 0);
        expect_no_line(&b);
        ck_assert_int_eq(line_buffer_append(&b, "x", 1), -EMSGSIZE);
        expect_stays_failed(&b);
}
END_TEST

START_TEST(test_line_over_limit_complete) {
        _cleanup_line_buffer_ LineBuffer b;
        char buf[SMALL_MAX + 1 + 4];
        char *line = NULL;
        size_t len = 0;

        /* The long line and its newline arrive together, with a short line
         * after it: the long one is refused when taken. */
        memset(buf, 'x', SMALL_MAX + 1);
        memcpy(buf + SMALL_MAX + 1, "\n{}\n", 4);
        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "{\"a\":1}\n", 8), 0);
        ck_assert_int_eq(line_buffer_append(&b, buf, sizeof(buf)), 0);
        expect_line(&b, "{\"a\":1}", 7);
        ck_assert_int_eq(line_buffer_next(&b, &line, &len), -EMSGSIZE);
        expect_stays_failed(&b);
}
END_TEST

START_TEST(test_real_limit) {
        _cleanup_line_buffer_ LineBuffer b;
        _cleanup_free_ char *chunk = NULL;
        const size_t chunk_size = 64 * KiB;
        size_t fed = 0;
        char *line = NULL;
        size_t len = 0;

        /* README "The protocol", limits: 16 MiB, newline excluded. */
        ck_assert_uint_eq(FRAMING_LINE_MAX_BYTES, 16 * MiB);

        chunk = malloc(chunk_size);
        ck_assert_ptr_nonnull(chunk);
        memset(chunk, ' ', chunk_size);

        /* A line of exactly the limit, fed in reads the size libuv uses. */
        line_buffer_init(&b, FRAMING_LINE_MAX_BYTES);
        while (fed < FRAMING_LINE_MAX_BYTES) {
                size_t n = FRAMING_LINE_MAX_BYTES - fed < chunk_size ? FRAMING_LINE_MAX_BYTES - fed : chunk_size;
                ck_assert_int_eq(line_buffer_append(&b, chunk, n), 0);
                fed += n;
        }
        ck_assert_int_eq(line_buffer_append(&b, "\n", 1), 0);
        ck_assert_int_eq(line_buffer_next(&b, &line, &len), 1);
        ck_assert_uint_eq(len, FRAMING_LINE_MAX_BYTES);
        ck_assert_int_eq(line[0], ' ');
        ck_assert_int_eq(line[len - 1], ' ');
        expect_no_line(&b);

        /* The same plus one byte fails at the byte that crosses the limit. */
        fed = 0;
        while (fed < FRAMING_LINE_MAX_BYTES) {
                ck_assert_int_eq(line_buffer_append(&b, chunk, chunk_size), 0);
                fed += chunk_size;
        }
        ck_assert_int_eq(line_buffer_append(&b, " ", 1), -EMSGSIZE);
        expect_stays_failed(&b);
}
END_TEST

START_TEST(test_take_rest) {
        _cleanup_line_buffer_ LineBuffer b;
        char *line = (char *) "untouched";
        size_t len = 7;

        /* Nothing buffered: nothing to take. */
        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_take_rest(&b, &line, &len), 0);
        ck_assert_str_eq(line, "untouched");
        ck_assert_uint_eq(len, 7);

        /* A request written without its newline is still a line at EOF. */
        ck_assert_int_eq(line_buffer_append(&b, "{\"a\":1}\n{\"b\"", 12), 0);
        ck_assert_int_eq(line_buffer_append(&b, ":2}", 3), 0);
        expect_line(&b, "{\"a\":1}", 7);
        expect_no_line(&b);
        ck_assert_int_eq(line_buffer_take_rest(&b, &line, &len), 1);
        ck_assert_uint_eq(len, 7);
        ck_assert_str_eq(line, "{\"b\":2}");

        /* It is taken once. */
        line = (char *) "untouched";
        ck_assert_int_eq(line_buffer_take_rest(&b, &line, &len), 0);
        ck_assert_str_eq(line, "untouched");
        expect_no_line(&b);
}
END_TEST

START_TEST(test_take_rest_after_complete_lines) {
        _cleanup_line_buffer_ LineBuffer b;
        char *line = (char *) "untouched";
        size_t len = 7;

        /* A stream that ends with '\n' has no rest. */
        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "a\nb\n", 4), 0);
        expect_line(&b, "a", 1);
        expect_line(&b, "b", 1);
        ck_assert_int_eq(line_buffer_take_rest(&b, &line, &len), 0);
        ck_assert_str_eq(line, "untouched");

        /* A rest exactly at the limit is taken; the buffer has room for its NUL
         * even when the allocation was sized by the append. */
        char buf[SMALL_MAX];
        memset(buf, 'r', sizeof(buf));
        ck_assert_int_eq(line_buffer_append(&b, buf, sizeof(buf)), 0);
        ck_assert_int_eq(line_buffer_take_rest(&b, &line, &len), 1);
        ck_assert_uint_eq(len, SMALL_MAX);
        ck_assert_mem_eq(line, buf, SMALL_MAX);
        ck_assert_int_eq(line[SMALL_MAX], '\0');
}
END_TEST

START_TEST(test_done_resets) {
        LineBuffer b;

        line_buffer_init(&b, SMALL_MAX);
        ck_assert_int_eq(line_buffer_append(&b, "abc", 3), 0);
        line_buffer_done(&b);
        ck_assert_ptr_null(b.data);
        ck_assert_uint_eq(b.size, 0);
        /* Done twice is harmless (a connection may be torn down twice over). */
        line_buffer_done(&b);
        ck_assert_ptr_null(b.data);
}
END_TEST

static Suite *framing_suite(void) {
        Suite *s = suite_create("framing");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_one_line);
        tcase_add_test(tc, test_split_line);
        tcase_add_test(tc, test_byte_by_byte);
        tcase_add_test(tc, test_many_lines_in_one_read);
        tcase_add_test(tc, test_random_splits);
        tcase_add_test(tc, test_empty_lines);
        tcase_add_test(tc, test_embedded_nul);
        tcase_add_test(tc, test_line_at_limit);
        tcase_add_test(tc, test_line_over_limit_pending);
        tcase_add_test(tc, test_line_over_limit_complete);
        tcase_add_test(tc, test_real_limit);
        tcase_add_test(tc, test_take_rest);
        tcase_add_test(tc, test_take_rest_after_complete_lines);
        tcase_add_test(tc, test_done_resets);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(framing_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
