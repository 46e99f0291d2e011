/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The streaming image.list reader (client/lib/image_list.c) against the
 * generic one: jansson's tree of the line, judged the way connection.c
 * judges an answer, then image_list_from_json(). Whenever the streaming
 * reader takes a line, the generic reading must succeed with the same
 * images (the same fields, the same JSON values); when it declines, the
 * generic reader decides. It must take what the daemon writes, with each
 * item's json exactly its span of the line.
 *
 * Cases written out, then many mutations of them (a fixed seed, so that a
 * failure repeats): bytes replaced, inserted and deleted from an alphabet
 * of JSON's own characters.
 *
 * Links the static library, whose internal functions the shared one hides.
 */

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client-internal.h"

#define REQUEST_ID 7
#define MUTATIONS 20000
#define NOTIFICATION 1

/* The generic path of call_read_answer() and handle_response(). */
static int generic_read(const char *line, size_t len, MsbImageList **ret) {
        json_t *msg = json_loadb(line, len, 0, NULL);
        json_t *id, *result;
        int r;

        if (!json_is_object(msg)) {
                json_decref(msg);
                return -EPROTO;
        }
        id = json_object_get(msg, "id");
        result = json_object_get(msg, "result");
        if (!id)
                r = NOTIFICATION;
        else if (!json_is_null(id) && !(json_is_integer(id) && json_integer_value(id) == REQUEST_ID))
                r = -EPROTO;
        else if (!json_is_string(json_object_get(msg, "jsonrpc")) ||
                 strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0)
                r = -EPROTO;
        else if (json_object_get(msg, "error"))
                r = -MSB_EREMOTE;
        else if (!result)
                r = -EPROTO;
        else
                r = image_list_from_json(result, ret);
        json_decref(msg);
        return r;
}

static bool same_string(const char *a, const char *b) {
        return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_json(const char *a, const char *b) {
        json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
        bool same = ja && jb && json_equal(ja, jb);

        json_decref(ja);
        json_decref(jb);
        return same;
}

/* Returns what the streaming reader did with the line (1 took, 0 declined). */
static int check_line(const char *line, size_t len) {
        MsbImageList *fast = NULL, *slow = NULL;
        int r = image_list_read_answer(line, len, REQUEST_ID, &fast);

        ck_assert_int_ge(r, 0);
        if (r == 0) {
                ck_assert_ptr_null(fast);
                return 0;
        }
        int g = generic_read(line, len, &slow);
        if (g != 0)
                ck_abort_msg("the streaming reader took a line the generic one refuses (%d): %.*s", g, (int) len, line);
        ck_assert_uint_eq(fast->n_images, slow->n_images);
        ck_assert(same_json(fast->json, slow->json));
        for (size_t i = 0; i < fast->n_images; i++) {
                const MsbImage *a = &fast->images[i], *b = &slow->images[i];
                ck_assert(same_string(a->reference, b->reference));
                ck_assert(same_string(a->manifest_digest, b->manifest_digest));
                ck_assert(same_string(a->architecture, b->architecture));
                ck_assert(same_string(a->os, b->os));
                ck_assert_int_eq(a->layer_count, b->layer_count);
                ck_assert_int_eq(a->size_bytes, b->size_bytes);
                ck_assert_int_eq(a->created_at, b->created_at);
                ck_assert_int_eq(a->last_used_at, b->last_used_at);
                ck_assert(same_json(a->json, b->json));
        }
        msb_image_list_free(fast);
        msb_image_list_free(slow);
        return 1;
}

#define HANDLE(ref)                                                                                                \
        "{\"reference\":\"" ref "\",\"manifest_digest\":\"sha256:"                                                  \
        "ad75e04a6c04040f0669f54ab4271c68385656afa52283539a44b18f1abbc0cf\",\"architecture\":\"amd64\","           \
        "\"os\":\"linux\",\"layer_count\":2,\"size_bytes\":293,\"created_at\":1796597963200,"                        \
        "\"last_used_at\":1796597963201}"

/* Lines the streaming reader must take: what the daemon writes, and the
 * liberties the protocol allows (members in another order, unknown ones,
 * reals for times, nulls, absent nullables, whitespace). */
static const char *const taken[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[" HANDLE("example.com/a:1") "," HANDLE("docker.io/library/b:2") "]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[]}",
        "{\"result\":[" HANDLE("x") "],\"id\":7,\"jsonrpc\":\"2.0\",\"meta\":{\"a\":[1,{\"b\":null}]}}",
        " { \"jsonrpc\" : \"2.0\" , \"id\" : 7 , \"result\" : [ { \"reference\" : \"r\" , \"layer_count\" : 0 } ] } ",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1,\"created_at\":1.5e3,"
        "\"last_used_at\":-2.75,\"size_bytes\":null,\"os\":null,\"future\":[[[]]],\"more\":true}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"first\",\"reference\":\"\\u00e9\\/\\\"\","
        "\"layer_count\":3,\"layer_count\":-0}]}",
};

/* Lines it must leave to the generic reader. */
static const char *const declined[] = {
        "{\"jsonrpc\":\"2.0\",\"method\":\"image.pull.progress\",\"params\":{\"request_id\":7,\"event\":\"x\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32603,\"message\":\"boom\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"parse\"}}",
        "{\"jsonrpc\":\"2.0\",\"id\":8,\"result\":[]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7.0,\"result\":[]}",
        "{\"jsonrpc\":\"1.0\",\"id\":7,\"result\":[]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[1]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[],\"result\":[]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\"}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1.0}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":\"1\"}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":null,\"layer_count\":1}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1,\"os\":5}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1,"
        "\"size_bytes\":9223372036854775808}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1,\"created_at\":1e400}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\\u0000s\",\"layer_count\":1}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1,\"x\\u0000\":1}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"\xff\",\"layer_count\":1}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[]} {}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[]} \"",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[{\"reference\":\"r\",\"layer_count\":1,\"x\":1E3200}]}",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[],\"x\":[99999999999999999999]}",
        "[]",
        "",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[]",
};

START_TEST(test_taken) {
        for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
                ck_assert_msg(check_line(taken[i], strlen(taken[i])) == 1, "declined: %s", taken[i]);
        }
}
END_TEST

START_TEST(test_declined) {
        for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
                ck_assert_msg(check_line(declined[i], strlen(declined[i])) == 0, "taken: %s", declined[i]);
        }
}
END_TEST

START_TEST(test_json_is_the_span_sent) {
        static const char line[] = "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\": [ " HANDLE("a\\u0041\\/") " ,"
                                   "{\"layer_count\":1 ,\"reference\":\"b\",\"x\":{\"y\":[]}} ] }";
        MsbImageList *list = NULL;

        ck_assert_int_eq(image_list_read_answer(line, strlen(line), REQUEST_ID, &list), 1);
        ck_assert_uint_eq(list->n_images, 2);
        ck_assert_str_eq(list->images[0].reference, "aA/");
        ck_assert_str_eq(list->images[0].json, HANDLE("a\\u0041\\/"));
        ck_assert_str_eq(list->images[1].json, "{\"layer_count\":1 ,\"reference\":\"b\",\"x\":{\"y\":[]}}");
        ck_assert_str_eq(list->json, "[ " HANDLE("a\\u0041\\/") " ,{\"layer_count\":1 ,\"reference\":\"b\",\"x\":{\"y\":[]}} ]");
        msb_image_list_free(list);
}
END_TEST

START_TEST(test_nesting_limit) {
        /* jansson refuses nesting deeper than 2048; the reader declines it. */
        size_t depth = 3000, len = 0;
        char *line = malloc(64 + 2 * depth);

        ck_assert_ptr_nonnull(line);
        len += (size_t) sprintf(line, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[],\"x\":");
        for (size_t i = 0; i < depth; i++)
                line[len++] = '[';
        for (size_t i = 0; i < depth; i++)
                line[len++] = ']';
        line[len++] = '}';
        ck_assert_int_eq(check_line(line, len), 0);
        free(line);
}
END_TEST

START_TEST(test_mutations) {
        static const char alphabet[] = "{}[],:\"\\ 0123456789-+.eEaulntrfsx\x01\xc3\xa9";
        /* MSB_TEST_MUTATIONS and MSB_TEST_SEED run more, or others, by hand. */
        const char *env_n = getenv("MSB_TEST_MUTATIONS"), *env_seed = getenv("MSB_TEST_SEED");
        unsigned n_mutations = env_n ? (unsigned) strtoul(env_n, NULL, 10) : MUTATIONS;
        unsigned seed = env_seed ? (unsigned) strtoul(env_seed, NULL, 10) : 12;
        size_t n_taken = 0;

        for (unsigned m = 0; m < n_mutations; m++) {
                const char *base = taken[m % (sizeof(taken) / sizeof(taken[0]))];
                size_t len = strlen(base);
                char *line = malloc(len + 8);

                ck_assert_ptr_nonnull(line);
                memcpy(line, base, len);
                for (int k = 1 + (int) (rand_r(&seed) % 3); k > 0; k--) {
                        size_t at = (size_t) rand_r(&seed) % (len + 1);
                        char c = alphabet[(size_t) rand_r(&seed) % (sizeof(alphabet) - 1)];
                        switch (rand_r(&seed) % 3) {
                        case 0:
                                if (at < len)
                                        line[at] = c;
                                break;
                        case 1:
                                memmove(line + at + 1, line + at, len - at);
                                line[at] = c;
                                len++;
                                break;
                        default:
                                if (at < len) {
                                        memmove(line + at, line + at + 1, len - at - 1);
                                        len--;
                                }
                                break;
                        }
                }
                n_taken += (size_t) check_line(line, len);
                free(line);
        }
        /* Most mutations break the line; some must still be answers. */
        ck_assert_uint_gt(n_taken, n_mutations / 50);
}
END_TEST

static Suite *image_list_suite(void) {
        Suite *s = suite_create("image-list-reader");
        TCase *tc = tcase_create("reader");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_taken);
        tcase_add_test(tc, test_declined);
        tcase_add_test(tc, test_json_is_the_span_sent);
        tcase_add_test(tc, test_nesting_limit);
        tcase_add_test(tc, test_mutations);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(image_list_suite());
        srunner_run_all(sr, CK_NORMAL);
        int failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
