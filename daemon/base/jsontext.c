/* SPDX-License-Identifier: Apache-2.0 */
#include "jsontext.h"

void json_text_grow(JsonText *t, size_t more) {
        if (t->oom || t->len + more + 1 <= t->allocated)
                return;
        size_t want = t->allocated ? t->allocated : 4096;
        while (want < t->len + more + 1)
                want *= 2;
        char *d = realloc(t->data, want);
        if (!d) {
                t->oom = true;
                return;
        }
        t->data = d;
        t->allocated = want;
}

static bool byte_needs_escape(unsigned char c) {
        return c < 0x20 || c == '"' || c == '\\';
}

/* Whether any of the 8 bytes of x is a control character, '"' or '\\',
 * with the bit tricks of "Bit Twiddling Hacks" (determine if a word has a
 * byte less than n, or equal to n): a list's strings are references and
 * digests that need no escape, and testing them a word at a time instead
 * of a byte at a time writes the five strings of 10,000 list rows in 2-3.6
 * ms instead of 4.6 (a micro-benchmark; a cold image.list of 10,000 takes
 * 14-18 ms, and the difference is within that benchmark's noise). */
static bool word_needs_escape(uint64_t x) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');

        return (((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)) & highs;
}

/* The length of the longest prefix of s (n bytes) that needs no escape. */
static size_t plain_run(const char *s, size_t n) {
        size_t i = 0;

        for (; n - i >= sizeof(uint64_t); i += sizeof(uint64_t)) {
                uint64_t x;
                memcpy(&x, s + i, sizeof(x));
                if (word_needs_escape(x))
                        break;
        }
        while (i < n && !byte_needs_escape((unsigned char) s[i]))
                i++;
        return i;
}

void json_text_string(JsonText *t, const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        const char *end;

        if (!s) {
                json_text_raw(t, "null");
                return;
        }
        end = s + strlen(s);
        json_text_append(t, "\"", 1);
        for (const char *run = s;;) {
                /* Copy the longest run that needs no escape in one go. */
                const char *p = run + plain_run(run, (size_t) (end - run));
                json_text_append(t, run, (size_t) (p - run));
                if (p == end)
                        break;
                char esc[6] = { '\\', *p, 0, 0, 0, 0 };
                size_t n = 2;
                switch (*p) {
                case '"': case '\\': break;
                case '\b': esc[1] = 'b'; break;
                case '\f': esc[1] = 'f'; break;
                case '\n': esc[1] = 'n'; break;
                case '\r': esc[1] = 'r'; break;
                case '\t': esc[1] = 't'; break;
                default:
                        esc[1] = 'u';
                        esc[2] = '0';
                        esc[3] = '0';
                        esc[4] = hex[((unsigned char) *p) >> 4];
                        esc[5] = hex[((unsigned char) *p) & 0xf];
                        n = 6;
                }
                json_text_append(t, esc, n);
                run = p + 1;
        }
        json_text_append(t, "\"", 1);
}

/* Digits by hand rather than snprintf(): the format machinery was a tenth
 * of image.list's time, four integers per row (bench/list). */
void json_text_int(JsonText *t, int64_t v) {
        char buf[24];
        char *p = buf + sizeof(buf);
        /* The magnitude as unsigned, so that INT64_MIN does not overflow. */
        uint64_t u = v < 0 ? -(uint64_t) v : (uint64_t) v;

        do {
                *--p = (char) ('0' + u % 10);
                u /= 10;
        } while (u);
        if (v < 0)
                *--p = '-';
        json_text_append(t, p, (size_t) (buf + sizeof(buf) - p));
}

char *json_text_steal(JsonText *t) {
        json_text_reserve(t, 0);
        char *d = t->oom ? NULL : t->data;
        if (t->oom)
                free(t->data);
        else
                d[t->len] = '\0';
        *t = (JsonText) {};
        return d;
}

void json_text_done(JsonText *t) {
        free(t->data);
        *t = (JsonText) {};
}
