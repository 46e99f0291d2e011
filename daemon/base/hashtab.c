/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/random.h>
#include <time.h>

#include "hashtab.h"

/* The first allocation, in slots. */
#define HASHTAB_MIN_SLOTS 64
/* Tags are 32 bits and index the table, so it never grows past this. */
#define HASHTAB_MAX_SLOTS ((size_t) 1 << 31)

static uint32_t tag_of(uint64_t hash) {
        uint32_t tag = (uint32_t) hash;
        return tag ? tag : 1;
}

void hashtab_done(HashTab *t) {
        free(t->tags);
        free(t->elems);
        *t = (HashTab) { .elem_size = t->elem_size };
}

static size_t slot_find(const HashTab *t, uint32_t tag, HashTabEqualFn equal, const void *key) {
        size_t mask = t->n_slots - 1;

        for (size_t i = tag & mask;; i = (i + 1) & mask)
                if (t->tags[i] == 0 || (t->tags[i] == tag && equal(t->elems + i * t->elem_size, key)))
                        return i;
}

void *hashtab_get(const HashTab *t, uint64_t hash, HashTabEqualFn equal, const void *key) {
        if (t->n_slots == 0)
                return NULL;
        size_t i = slot_find(t, tag_of(hash), equal, key);
        return t->tags[i] ? t->elems + i * t->elem_size : NULL;
}

/* Re-places every element into a table of n slots, by its tag alone: no
 * two elements are equal, so no key needs comparing. */
static int rehash(HashTab *t, size_t n) {
        uint32_t *tags = calloc(n, sizeof(*tags));
        uint8_t *elems = malloc(n * t->elem_size);

        if (!tags || !elems) {
                free(tags);
                free(elems);
                return -ENOMEM;
        }
        for (size_t s = 0; s < t->n_slots; s++) {
                if (!t->tags[s])
                        continue;
                size_t i = t->tags[s] & (n - 1);
                while (tags[i])
                        i = (i + 1) & (n - 1);
                tags[i] = t->tags[s];
                memcpy(elems + i * t->elem_size, t->elems + s * t->elem_size, t->elem_size);
        }
        free(t->tags);
        free(t->elems);
        t->tags = tags;
        t->elems = elems;
        t->n_slots = n;
        return 0;
}

int hashtab_reserve(HashTab *t, size_t n) {
        size_t slots = t->n_slots ? t->n_slots : HASHTAB_MIN_SLOTS;

        /* At most 3/4 full. */
        while (n > slots / 4 * 3) {
                if (slots >= HASHTAB_MAX_SLOTS)
                        return -E2BIG;
                slots *= 2;
        }
        return slots == t->n_slots ? 0 : rehash(t, slots);
}

int hashtab_put(HashTab *t, uint64_t hash, HashTabEqualFn equal, const void *key, void **ret_elem) {
        uint32_t tag = tag_of(hash);
        size_t i = 0;
        int r;

        if (t->n_slots > 0) {
                i = slot_find(t, tag, equal, key);
                if (t->tags[i]) {
                        *ret_elem = t->elems + i * t->elem_size;
                        return 0;
                }
        }
        if (t->n_slots == 0 || t->n_used + 1 > t->n_slots / 4 * 3) {
                r = hashtab_reserve(t, t->n_used + 1);
                if (r < 0)
                        return r;
                /* A grown table moved every element: find the free slot again. */
                i = slot_find(t, tag, equal, key);
        }
        t->tags[i] = tag;
        memset(t->elems + i * t->elem_size, 0, t->elem_size);
        t->n_used++;
        *ret_elem = t->elems + i * t->elem_size;
        return 1;
}

void *hashtab_next(const HashTab *t, size_t *iter) {
        while (*iter < t->n_slots) {
                size_t s = (*iter)++;
                if (t->tags[s])
                        return t->elems + s * t->elem_size;
        }
        return NULL;
}

uint64_t hashtab_random_key(void) {
        uint64_t key = 0;

        if (getrandom(&key, sizeof(key), GRND_NONBLOCK) != sizeof(key) || key == 0) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                key = hashtab_hash_u64((uint64_t) (uintptr_t) &key, (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30));
        }
        return key;
}

uint64_t hashtab_hash_bytes(uint64_t key, const void *data, size_t len) {
        const uint8_t *p = data;
        uint64_t h = 0xcbf29ce484222325ULL ^ key;

        for (size_t i = 0; i < len; i++) {
                h ^= p[i];
                h *= 0x100000001b3ULL;
        }
        h ^= h >> 29;
        h *= 0xbf58476d1ce4e5b9ULL;
        return h ^ (h >> 32);
}
