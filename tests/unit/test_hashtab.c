/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of daemon/base/hashtab.c, the one hash table of the daemon:
 * what is put is found, growth keeps every element, keys whose hashes all
 * collide still work (only slower), iteration sees each element once, and
 * the keyed byte hash depends on its key.
 */

#include <check.h>

#include "hashtab.h"

typedef struct Pair {
        uint64_t key;
        uint64_t value;
} Pair;

static bool pair_equal(const void *elem, const void *key) {
        return ((const Pair *) elem)->key == *(const uint64_t *) key;
}

static int put_pair(HashTab *t, uint64_t hash, uint64_t key, uint64_t value) {
        Pair *p;
        int r = hashtab_put(t, hash, pair_equal, &key, (void **) &p);

        if (r > 0)
                *p = (Pair) { key, value };
        return r;
}

START_TEST(test_put_get_grow) {
        HashTab t = HASHTAB_INIT(Pair);
        const uint64_t key = 12345;
        const size_t n = 100000;

        ck_assert_ptr_null(hashtab_get(&t, 1, pair_equal, &key));
        for (uint64_t k = 0; k < n; k++)
                ck_assert_int_eq(put_pair(&t, hashtab_hash_u64(key, k), k, k * 3), 1);
        ck_assert_uint_eq(hashtab_size(&t), n);
        /* At most 3/4 full, and a power of two. */
        ck_assert_uint_ge(t.n_slots / 4 * 3, n);
        ck_assert_uint_eq(t.n_slots & (t.n_slots - 1), 0);

        for (uint64_t k = 0; k < n; k++) {
                Pair *p = hashtab_get(&t, hashtab_hash_u64(key, k), pair_equal, &k);
                ck_assert_ptr_nonnull(p);
                ck_assert_uint_eq(p->value, k * 3);
        }
        uint64_t missing = n + 1;
        ck_assert_ptr_null(hashtab_get(&t, hashtab_hash_u64(key, missing), pair_equal, &missing));

        /* A second put of a key finds the first element. */
        ck_assert_int_eq(put_pair(&t, hashtab_hash_u64(key, 7), 7, 999), 0);
        ck_assert_uint_eq(((Pair *) hashtab_get(&t, hashtab_hash_u64(key, 7), pair_equal, &(uint64_t) { 7 }))->value,
                          21);
        ck_assert_uint_eq(hashtab_size(&t), n);

        hashtab_done(&t);
        ck_assert_uint_eq(hashtab_size(&t), 0);
        ck_assert_ptr_null(hashtab_get(&t, 1, pair_equal, &key));
        /* Reusable after done. */
        ck_assert_int_eq(put_pair(&t, 1, 1, 1), 1);
        hashtab_done(&t);
}
END_TEST

/* Every key with one hash (and hash 0, whose tag is moved): each is still
 * found by its own key, across growth. */
START_TEST(test_all_collide) {
        HashTab t = HASHTAB_INIT(Pair);

        for (uint64_t k = 0; k < 1000; k++)
                ck_assert_int_eq(put_pair(&t, 0, k, k + 1), 1);
        for (uint64_t k = 0; k < 1000; k++) {
                Pair *p = hashtab_get(&t, 0, pair_equal, &k);
                ck_assert_ptr_nonnull(p);
                ck_assert_uint_eq(p->value, k + 1);
        }
        hashtab_done(&t);
}
END_TEST

START_TEST(test_iterate_and_reserve) {
        HashTab t = HASHTAB_INIT(Pair);
        bool seen[500] = {};
        size_t count = 0;
        Pair *p;

        ck_assert_int_eq(hashtab_reserve(&t, 500), 0);
        size_t slots = t.n_slots;
        for (uint64_t k = 0; k < 500; k++)
                ck_assert_int_eq(put_pair(&t, hashtab_hash_u64(1, k), k, k), 1);
        /* Reserved room: no growth. */
        ck_assert_uint_eq(t.n_slots, slots);
        for (size_t it = 0; (p = hashtab_next(&t, &it));) {
                ck_assert_uint_lt(p->key, 500);
                ck_assert(!seen[p->key]);
                seen[p->key] = true;
                count++;
        }
        ck_assert_uint_eq(count, 500);
        hashtab_done(&t);
}
END_TEST

START_TEST(test_hash_bytes) {
        const char a[] = "usr/lib/file", b[] = "usr/lib/filf";

        ck_assert_uint_eq(hashtab_hash_bytes(1, a, sizeof(a)), hashtab_hash_bytes(1, a, sizeof(a)));
        ck_assert_uint_ne(hashtab_hash_bytes(1, a, sizeof(a)), hashtab_hash_bytes(2, a, sizeof(a)));
        ck_assert_uint_ne(hashtab_hash_bytes(1, a, sizeof(a)), hashtab_hash_bytes(1, b, sizeof(b)));
        ck_assert_uint_ne(hashtab_hash_u64(1, 5), hashtab_hash_u64(2, 5));
        /* Two keys drawn for two tables differ (a 2^-64 chance to fail). */
        ck_assert_uint_ne(hashtab_random_key(), hashtab_random_key());
}
END_TEST

static Suite *hashtab_suite(void) {
        Suite *s = suite_create("hashtab");
        TCase *tc = tcase_create("hashtab");

        /* 100,000 puts and gets under ASan or TSan, while the other suites
         * share the machine's two cores, outlast check's default 4 s. */
        tcase_set_timeout(tc, 120);

        tcase_add_test(tc, test_put_get_grow);
        tcase_add_test(tc, test_all_collide);
        tcase_add_test(tc, test_iterate_and_reserve);
        tcase_add_test(tc, test_hash_bytes);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(hashtab_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
