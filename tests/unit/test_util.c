/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the file helpers in daemon/util.c that image.load relies on
 * to read a source safely: open_beneath() (openat2 RESOLVE_BENEATH), its
 * fallback open_beneath_nofollow(), and read_file_bounded() on a FIFO; also
 * pwrite_all() and the error helpers every layer builds its errors with.
 *
 * The tree under test, beneath root/:
 *   a/file            a regular file
 *   in                -> a/file        (a relative symlink inside)
 *   dirlink           -> a             (a directory symlink inside)
 *   out               -> ../outside    (leaves the root)
 *   abs               -> <abs path of outside>
 *   hop               -> out           (inside, then out)
 *   loop1 <-> loop2
 *   fifo              a FIFO nobody writes to
 * and outside/ next to root, holding secret.
 */

#include <check.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "error.h"
#include "util.h"

typedef struct Tree {
        char path[64];
        char root[96];
        int root_fd;
} Tree;

static void at(const Tree *t, const char *rel, char *buf, size_t size) {
        snprintf(buf, size, "%s/%s", t->path, rel);
}

static void tree_init(Tree *t) {
        char p[160], target[160];

        snprintf(t->path, sizeof(t->path), "/tmp/msb-test-util-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(t->path));
        snprintf(t->root, sizeof(t->root), "%s/root", t->path);
        at(t, "root/a", p, sizeof(p));
        ck_assert_int_eq(mkdir_p(p, 0755), 0);
        at(t, "outside", p, sizeof(p));
        ck_assert_int_eq(mkdir_p(p, 0755), 0);
        at(t, "outside/secret", p, sizeof(p));
        _cleanup_close_ int s = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ck_assert_int_ge(s, 0);
        ck_assert_int_eq(write_all(s, "secret", 6), 0);
        at(t, "root/a/file", p, sizeof(p));
        _cleanup_close_ int f = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        ck_assert_int_ge(f, 0);
        ck_assert_int_eq(write_all(f, "inside", 6), 0);

        static const struct {
                const char *name, *target;
        } links[] = { { "in", "a/file" }, { "dirlink", "a" },      { "out", "../outside/secret" },
                      { "hop", "out" },   { "loop1", "loop2" },     { "loop2", "loop1" } };
        for (size_t i = 0; i < ELEMENTSOF(links); i++) {
                snprintf(p, sizeof(p), "%s/%s", t->root, links[i].name);
                ck_assert_int_eq(symlink(links[i].target, p), 0);
        }
        snprintf(p, sizeof(p), "%s/abs", t->root);
        at(t, "outside/secret", target, sizeof(target));
        ck_assert_int_eq(symlink(target, p), 0);
        snprintf(p, sizeof(p), "%s/fifo", t->root);
        ck_assert_int_eq(mkfifo(p, 0644), 0);

        t->root_fd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ck_assert_int_ge(t->root_fd, 0);
}

static void tree_done(Tree *t) {
        safe_close(t->root_fd);
        (void) rm_rf(t->path, NULL);
}
#define _cleanup_tree_ _cleanup_(tree_done)

typedef int (*OpenFn)(int dir_fd, const char *path, int flags, int *ret_fd);

/* Opens rel with fn: the errno, or 0 with the first bytes of the file in buf. */
static int try_open(OpenFn fn, const Tree *t, const char *rel, char buf[8]) {
        _cleanup_close_ int fd = -EBADF;
        int r = fn(t->root_fd, rel, 0, &fd);

        memset(buf, 0, 8);
        if (r < 0)
                return r;
        ck_assert_int_ge(fd, 0);
        struct stat st;
        ck_assert_int_eq(fstat(fd, &st), 0);
        if (S_ISREG(st.st_mode))
                ck_assert_int_ge(read(fd, buf, 7), 0);
        /* Opened without blocking, and never becoming a controlling terminal. */
        ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
        return 0;
}

/* What opening a path of the tree gives: an errno, or 0 and the file's first bytes. */
typedef struct Expect {
        const char *path;
        int r;
        const char *content;
} Expect;

static void check_opens(OpenFn fn, const Expect *cases, size_t n) {
        _cleanup_tree_ Tree t;
        char buf[8];

        tree_init(&t);
        for (size_t i = 0; i < n; i++) {
                int r = try_open(fn, &t, cases[i].path, buf);
                ck_assert_msg(r == cases[i].r, "%s: %d, want %d", cases[i].path, r, cases[i].r);
                ck_assert_str_eq(buf, cases[i].content);
        }
}

START_TEST(test_open_beneath_follows_links_inside_only) {
        static const Expect cases[] = {
                { "a/file", 0, "inside" },
                /* Links that stay inside are followed, as OCI layouts use them. */
                { "in", 0, "inside" },
                { "dirlink/file", 0, "inside" },
                { "a/../in", 0, "inside" },
                /* Out of the root: by "..", by a relative or absolute link, or via a hop. */
                { "../outside/secret", -EXDEV, "" },
                { "out", -EXDEV, "" },
                { "abs", -EXDEV, "" },
                { "hop", -EXDEV, "" },
                { "loop1", -ELOOP, "" },
                { "missing", -ENOENT, "" },
        };
        check_opens(open_beneath, cases, ELEMENTSOF(cases));
}
END_TEST

START_TEST(test_nofollow_fallback_refuses_every_link) {
        static const Expect cases[] = {
                { "a/file", 0, "inside" },
                { "a//./file", 0, "inside" },
                /* Stricter than openat2: even links inside are refused. */
                { "in", -ELOOP, "" },
                { "dirlink/file", -ELOOP, "" },
                { "out", -ELOOP, "" },
                { "abs", -ELOOP, "" },
                { "a/../a/file", -EXDEV, "" },
                { "/etc/hostname", -EXDEV, "" },
                { "missing", -ENOENT, "" },
                { "", -ENOENT, "" },
        };
        check_opens(open_beneath_nofollow, cases, ELEMENTSOF(cases));
}
END_TEST

START_TEST(test_fifo_never_blocks) {
        _cleanup_tree_ Tree t;
        _cleanup_free_ char *data = NULL;
        char p[160], buf[8];
        size_t size;
        struct timespec t0, t1;

        /* Without O_NONBLOCK each of these would wait for a writer forever
         * (until the test's timeout). */
        tree_init(&t);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ck_assert_int_eq(try_open(open_beneath, &t, "fifo", buf), 0);
        ck_assert_int_eq(try_open(open_beneath_nofollow, &t, "fifo", buf), 0);
        snprintf(p, sizeof(p), "%s/fifo", t.root);
        ck_assert_int_eq(read_file_bounded(p, 64, &data, &size), -EISDIR);
        ck_assert_ptr_null(data);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ck_assert_int_lt(t1.tv_sec - t0.tv_sec, 2);

        /* fd_set_blocking() clears what OPEN_UNTRUSTED_FLAGS set. */
        _cleanup_close_ int fd = -EBADF;
        ck_assert_int_eq(open_beneath(t.root_fd, "a/file", 0, &fd), 0);
        ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
        ck_assert_int_eq(fd_set_blocking(fd), 0);
        ck_assert(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
}
END_TEST

/* pwrite_all() writes at its offset, past the end too, and says why it
 * cannot write. */
START_TEST(test_pwrite_all) {
        char path[] = "/tmp/msb-test-pwrite-XXXXXX", buf[16] = {};
        _cleanup_close_ int fd = mkstemp(path);
        _cleanup_close_ int ro = -EBADF;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(pwrite_all(fd, "world", 5, 6), 0);
        ck_assert_int_eq(pwrite_all(fd, "hello ", 6, 0), 0);
        ck_assert_int_eq(pread(fd, buf, sizeof(buf), 0), 11);
        ck_assert_str_eq(buf, "hello world");
        ro = open(path, O_RDONLY | O_CLOEXEC);
        ck_assert_int_eq(pwrite_all(ro, "x", 1, 0), -EBADF);
        unlink(path);
}
END_TEST

/* The error helpers: the data each names, and the first error winning. */
START_TEST(test_error_helpers) {
        MsbError err = {};

        ck_assert_int_eq(msb_error_invalid_param(&err, "tag", "tag %s is bad", "x"), -EINVAL);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
        ck_assert_str_eq(err.message, "tag x is bad");
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "parameter")), "tag");
        /* Set already: neither the message nor the data changes. */
        ck_assert_int_eq(msb_error_limit(&err, "layer_entries", 10, "later"), -E2BIG);
        ck_assert_int_eq(msb_error_invalid_param(&err, "path", "later"), -EINVAL);
        ck_assert_str_eq(err.message, "tag x is bad");
        ck_assert_uint_eq(json_object_size(err.data), 1);
        msb_error_clear(&err);

        ck_assert_int_eq(msb_error_limit(&err, "image_entries", 7, "%d entries", 8), -E2BIG);
        ck_assert_int_eq(err.kind, PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "image_entries");
        ck_assert_int_eq(json_integer_value(json_object_get(err.data, "max")), 7);
        msb_error_clear(&err);

        ck_assert_int_eq(msb_error_invalid_param(NULL, "tag", "nothing"), -EINVAL);
}
END_TEST

static Suite *util_suite(void) {
        Suite *s = suite_create("util");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_open_beneath_follows_links_inside_only);
        tcase_add_test(tc, test_nofollow_fallback_refuses_every_link);
        tcase_add_test(tc, test_fifo_never_blocks);
        tcase_add_test(tc, test_pwrite_all);
        tcase_add_test(tc, test_error_helpers);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(util_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
