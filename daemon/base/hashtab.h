/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * One open-addressing hash table for every module that needs one: the EROFS
 * tree's entries by (directory, name), the writer's shared xattrs, the fsmeta
 * merge's layer nids.
 *
 * Elements are fixed-size records stored in the table itself (a pointer, or
 * a small struct of key and value), beside a parallel array of 32-bit hash
 * tags, 0 marking an empty slot. A probe compares tags before it calls the
 * caller's equality function, so a miss rarely touches an element, and
 * growing the table re-places elements by their tags without hashing again.
 * Linear probing at a load of at most 3/4; nothing is ever removed (no user
 * needs it, and without tombstones a lookup stops at the first empty slot).
 *
 * Why not a Debian library: uthash (uthash-dev) threads a 56-byte
 * UT_hash_handle through every element and GLib's GHashTable (libglib2.0)
 * keeps a pointer key and value per slot, takes a hash function without
 * user data (no per-table random key) and brings GLib into the daemon. At
 * the 1,000,000 entries a layer may hold, those costs are tens of MB per
 * conversion, which is what issue 14 asks the tree to shed; this table costs
 * 4 bytes plus the element per slot, a pointer's 12 bytes for the tree.
 *
 * Keys that come from an image (names in a tar, xattrs) are hashed with a
 * random key per table (hashtab_random_key()), so that names chosen to
 * collide cannot be prepared in advance and turn inserts quadratic. Nothing
 * a user of the table writes may depend on the key or on slot order.
 */

#include "util.h"

/* Whether the element `elem` (in the table) has the key `key` (the caller's). */
typedef bool (*HashTabEqualFn)(const void *elem, const void *key);

typedef struct HashTab {
        uint32_t *tags;          /* per slot: the hash's low 32 bits, 0 moved to 1; 0 = empty */
        uint8_t *elems;          /* per slot: elem_size bytes */
        size_t elem_size;
        size_t n_slots;          /* 0 or a power of two */
        size_t n_used;
} HashTab;

/* An empty table of elements of `type`: no memory until the first insert. */
#define HASHTAB_INIT(type) ((HashTab) { .elem_size = sizeof(type) })

/* Frees the table's memory (the elements are the caller's to release first)
 * and leaves it empty, ready for reuse. */
void hashtab_done(HashTab *t);

static inline size_t hashtab_size(const HashTab *t) {
        return t->n_used;
}

/* The element equal to key (whose hash is `hash`), or NULL. */
void *hashtab_get(const HashTab *t, uint64_t hash, HashTabEqualFn equal, const void *key);

/*
 * Finds the element equal to key or, when there is none, adds a zeroed one
 * for the caller to fill (it must then hold the key). Returns 1 with
 * *ret_elem a new element, 0 with the existing one, or -ENOMEM (-E2BIG past
 * 2^31 slots). The pointer is valid until the next insert.
 */
int hashtab_put(HashTab *t, uint64_t hash, HashTabEqualFn equal, const void *key, void **ret_elem);

/* Makes room for n elements in all, so that the next inserts do not grow
 * the table; 0 or -ENOMEM. */
int hashtab_reserve(HashTab *t, size_t n);

/* Iterates the elements in slot order: start with *iter = 0; NULL at the end. */
void *hashtab_next(const HashTab *t, size_t *iter);

/* A random key for a table whose keys come from outside; never 0 when the
 * kernel has no entropy yet (then it mixes the time and an address). */
uint64_t hashtab_random_key(void);

/* FNV-1a over data from a basis made of key, then a final avalanche so the
 * low bits a table indexes by depend on every byte. Continue a hash over a
 * second piece by passing the first result as the key of the next call. */
uint64_t hashtab_hash_bytes(uint64_t key, const void *data, size_t len);

/* An integer key, mixed with key (the splitmix64 finaliser). */
static inline uint64_t hashtab_hash_u64(uint64_t key, uint64_t x) {
        x ^= key;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
}
