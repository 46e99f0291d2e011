/* SPDX-License-Identifier: Apache-2.0 */
/* jsontext: the text it writes must be what jansson would write for the
 * same values, byte for byte, since image.list answers with it. */
#include <check.h>
#include <jansson.h>

#include "jsontext.h"

static char *jansson_string(const char *s) {
        json_t *v = json_string(s);
        ck_assert_ptr_nonnull(v);
        char *out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        json_decref(v);
        return out;
}

START_TEST(test_strings_match_jansson) {
        static const char *const cases[] = {
                "", "plain", "docker.io/library/alpine:latest", "quote\"in", "back\\slash", "new\nline",
                "tab\tcr\rff\fbs\b", "\x01\x1f ctrl", "slash/ stays", "utf-8: é 😀 ☃", "\x7f del",
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                JsonText t = {};
                json_text_string(&t, cases[i]);
                _cleanup_free_ char *got = json_text_steal(&t);
                _cleanup_free_ char *want = jansson_string(cases[i]);
                ck_assert_ptr_nonnull(got);
                ck_assert_msg(streq(got, want), "case %zu: got %s, want %s", i, got, want);
        }
}
END_TEST

/* Every byte that needs an escape, and its neighbours that do not, at
 * every position of strings up to three words long: the writer tests eight
 * bytes at a time, and a word's boundary must not hide or invent one. */
START_TEST(test_escapes_at_every_position) {
        static const unsigned char specials[] = { 0x01, 0x1f, 0x20, 0x21, '"', 0x23, '[', '\\', ']', 0x7f, 0xc3,
                                                  '\n', 'a' };
        char buf[32];

        for (size_t len = 1; len <= 24; len++)
                for (size_t at = 0; at < len; at++)
                        for (size_t k = 0; k < sizeof(specials); k++) {
                                memset(buf, 'x', len);
                                buf[len] = '\0';
                                buf[at] = (char) specials[k];
                                /* 0xc3 starts a two-byte character: keep it valid UTF-8 for jansson. */
                                if (specials[k] == 0xc3) {
                                        if (at + 1 == len)
                                                continue;
                                        buf[at + 1] = (char) 0xa9;
                                }
                                JsonText t = {};
                                json_text_string(&t, buf);
                                _cleanup_free_ char *got = json_text_steal(&t);
                                _cleanup_free_ char *want = jansson_string(buf);
                                ck_assert_ptr_nonnull(got);
                                ck_assert_ptr_nonnull(want);
                                ck_assert_msg(streq(got, want), "len %zu, byte 0x%02x at %zu: got %s, want %s", len,
                                              specials[k], at, got, want);
                        }
}
END_TEST

START_TEST(test_null_and_numbers) {
        JsonText t = {};
        json_text_raw(&t, "[");
        json_text_string(&t, NULL);
        json_text_raw(&t, ",");
        json_text_int(&t, INT64_MIN);
        json_text_raw(&t, ",");
        json_text_int(&t, 1795765155953);
        static const int64_t edges[] = { 0, -1, 9, 10, INT64_MAX };
        for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
                json_text_raw(&t, ",");
                json_text_int(&t, edges[i]);
        }
        json_text_raw(&t, "]");
        _cleanup_free_ char *got = json_text_steal(&t);
        ck_assert_str_eq(got, "[null,-9223372036854775808,1795765155953,0,-1,9,10,9223372036854775807]");
        json_t *parsed = json_loads(got, 0, NULL);
        ck_assert_ptr_nonnull(parsed);
        json_decref(parsed);
}
END_TEST

START_TEST(test_grows_past_many_pages) {
        JsonText t = {};
        json_text_raw(&t, "[");
        for (int i = 0; i < 100000; i++) {
                if (i)
                        json_text_raw(&t, ",");
                json_text_string(&t, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        }
        json_text_raw(&t, "]");
        _cleanup_free_ char *got = json_text_steal(&t);
        json_t *parsed = json_loads(got, 0, NULL);
        ck_assert_ptr_nonnull(parsed);
        ck_assert_uint_eq(json_array_size(parsed), 100000);
        json_decref(parsed);
}
END_TEST

START_TEST(test_steal_leaves_empty) {
        JsonText t = {};
        json_text_raw(&t, "{}");
        char *a = json_text_steal(&t);
        ck_assert_str_eq(a, "{}");
        ck_assert_ptr_null(t.data);
        ck_assert_uint_eq(t.len, 0);
        free(a);
        json_text_done(&t);
}
END_TEST

int main(void) {
        Suite *s = suite_create("jsontext");
        TCase *tc = tcase_create("core");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_strings_match_jansson);
        tcase_add_test(tc, test_escapes_at_every_position);
        tcase_add_test(tc, test_null_and_numbers);
        tcase_add_test(tc, test_grows_past_many_pages);
        tcase_add_test(tc, test_steal_leaves_empty);
        suite_add_tcase(s, tc);
        SRunner *sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
