/* SPDX-License-Identifier: Apache-2.0 */

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "testdir.h"

void test_dir_init(TestDir *t, const char *name) {
        int n = snprintf(t->path, sizeof(t->path), "/tmp/msb-test-%s-XXXXXX", name);

        ck_assert_msg(n > 0 && (size_t) n < sizeof(t->path), "test directory name too long: %s", name);
        ck_assert_msg(mkdtemp(t->path), "mkdtemp %s: %m", t->path);
        snprintf(t->store, sizeof(t->store), "%s/store", t->path);
}

void test_dir_done(TestDir *t) {
        (void) rm_rf(t->path, NULL);
}

Store *test_store_open(const char *path) {
        Store *s = NULL;
        MsbError err = {};
        int r = store_open(path, &s, &err);

        ck_assert_msg(r == 0, "store_open(%s): %d %s", path, r, err.message);
        ck_assert_ptr_nonnull(s);
        msb_error_clear(&err);
        return s;
}

unsigned test_store_count(const Store *s, const char *sub) {
        _cleanup_free_ char *dir = NULL;
        unsigned n = 0;
        DIR *d;

        ck_assert_int_ge(asprintf(&dir, "%s/%s", store_path(s), sub), 0);
        d = opendir(dir);
        ck_assert_msg(d, "%s: %m", dir);
        for (struct dirent *de; (de = readdir(d));)
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}
