/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the unit tests that work on a real store share (test_store.c,
 * test_ingest.c, test_load.c): a private directory under /tmp that goes
 * away with the test, the store opened inside it, and a count of what the
 * store holds on disk.
 */

#include "store.h"
#include "util.h"

typedef struct TestDir {
        char path[64];  /* the private directory, /tmp/msb-test-<name>-XXXXXX */
        char store[96]; /* <path>/store, not created: store_open makes it */
} TestDir;

/* Makes the directory; name says which test it belongs to. Aborts the test
 * on failure. */
void test_dir_init(TestDir *t, const char *name);

/* Removes the directory and everything below it. */
void test_dir_done(TestDir *t);
#define _cleanup_test_dir_ _cleanup_(test_dir_done)

/* store_open that must succeed. */
Store *test_store_open(const char *path);

/* The entries directly in store/<sub>, without "." and "..". */
unsigned test_store_count(const Store *s, const char *sub);
