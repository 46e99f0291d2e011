/* SPDX-License-Identifier: Apache-2.0 */

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "digest.h"

/* FIPS 180-2 appendix B and the NIST example vectors for SHA-256. */
static const struct {
        const char *input;
        const char *digest;
} vectors[] = {
        { "", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
        { "abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
        { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
          "sha256:248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
        { "The quick brown fox jumps over the lazy dog",
          "sha256:d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592" },
};

#define MILLION_A_DIGEST "sha256:cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"

START_TEST(test_buffer_vectors) {
        char d[DIGEST_STRING_MAX];

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                ck_assert_int_eq(digest_buffer(vectors[i].input, strlen(vectors[i].input), d), 0);
                ck_assert_str_eq(d, vectors[i].digest);
                ck_assert(digest_is_valid(d));
        }
}
END_TEST

START_TEST(test_streaming_million_a) {
        _cleanup_(sha256_freep) Sha256 *h = NULL;
        char chunk[1000], d[DIGEST_STRING_MAX];

        memset(chunk, 'a', sizeof(chunk));
        ck_assert_int_eq(sha256_new(&h), 0);
        for (int i = 0; i < 1000; i++)
                sha256_update(h, chunk, sizeof(chunk));
        sha256_final_string(h, d);
        ck_assert_str_eq(d, MILLION_A_DIGEST);

        /* After final the object starts over: uneven splits give the same result. */
        sha256_update(h, "a", 1);
        sha256_update(h, NULL, 0);
        sha256_update(h, "bc", 2);
        sha256_final_string(h, d);
        ck_assert_str_eq(d, vectors[1].digest);

        sha256_final_string(h, d);
        ck_assert_str_eq(d, vectors[0].digest);
}
END_TEST

START_TEST(test_is_valid) {
        static const char *const valid[] = {
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        };
        static const char *const invalid[] = {
                "",
                "sha256:",
                "sha256",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ",
                "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                " sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        };

        for (size_t i = 0; i < ELEMENTSOF(valid); i++) {
                ck_assert_msg(digest_is_valid(valid[i]), "%s", valid[i]);
                ck_assert_ptr_eq(digest_hex(valid[i]), valid[i] + 7);
        }
        for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
                ck_assert_msg(!digest_is_valid(invalid[i]), "%s", invalid[i]);
                ck_assert_ptr_null(digest_hex(invalid[i]));
        }
        ck_assert(!digest_is_valid(NULL));
        ck_assert_ptr_null(digest_hex(NULL));
}
END_TEST

/* Writes n bytes of a non-repeating pattern to a fresh temporary file. */
static int make_file(size_t n, char path[static 64]) {
        _cleanup_free_ unsigned char *buf = NULL;
        int fd;

        strcpy(path, "/tmp/test-digest-XXXXXX");
        fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);

        buf = malloc(n ? n : 1);
        ck_assert_ptr_nonnull(buf);
        for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char) ((i * 2654435761u) >> 13);
        ck_assert_int_eq(write_all(fd, buf, n), 0);
        return fd;
}

/* The digest of a file as coreutils' sha256sum computes it, an independent check. */
static void sha256sum_file(const char *path, char ret[DIGEST_STRING_MAX]) {
        char cmd[128], out[128];
        FILE *p;

        snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
        p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        ck_assert_ptr_nonnull(fgets(out, sizeof(out), p));
        ck_assert_int_eq(pclose(p), 0);
        ck_assert_int_ge(strlen(out), 64);
        snprintf(ret, DIGEST_STRING_MAX, "sha256:%.64s", out);
}

START_TEST(test_fd_sizes) {
        /* Empty, small, exactly one read buffer, and several buffers plus a tail. */
        const size_t sizes[] = { 0, 1, 4095, DIGEST_READ_BUFFER_BYTES, 3 * DIGEST_READ_BUFFER_BYTES + 17 };

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                char path[64], d[DIGEST_STRING_MAX], expected[DIGEST_STRING_MAX];
                _cleanup_close_ int fd = -EBADF;
                uint64_t size = UINT64_MAX;

                fd = make_file(sizes[i], path);
                sha256sum_file(path, expected);

                /* The file offset is at the end after writing; pread ignores it and leaves it. */
                ck_assert_int_eq(digest_fd(fd, d, &size), 0);
                ck_assert_str_eq(d, expected);
                ck_assert_uint_eq(size, sizes[i]);
                ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), (off_t) sizes[i]);

                ck_assert_int_eq(digest_fd(fd, d, NULL), 0);
                ck_assert_str_eq(d, expected);
                unlink(path);
        }
}
END_TEST

START_TEST(test_fd_errors) {
        char d[DIGEST_STRING_MAX] = "untouched";
        uint64_t size = 42;
        int pipefd[2];

        ck_assert_int_eq(digest_fd(-1, d, &size), -EBADF);
        ck_assert_str_eq(d, "untouched");
        ck_assert_uint_eq(size, 42);

        /* A pipe cannot be read at an offset. */
        ck_assert_int_eq(pipe(pipefd), 0);
        ck_assert_int_eq(digest_fd(pipefd[0], d, &size), -ESPIPE);
        ck_assert_str_eq(d, "untouched");
        ck_assert_uint_eq(size, 42);
        close(pipefd[0]);
        close(pipefd[1]);

        /* A write-only descriptor cannot be read. */
        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(digest_fd(fd, d, &size), -EBADF);
        close(fd);
}
END_TEST

START_TEST(test_free_null) {
        ck_assert_ptr_null(sha256_free(NULL));
}
END_TEST

static Suite *digest_suite(void) {
        Suite *s = suite_create("digest");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_buffer_vectors);
        tcase_add_test(tc, test_streaming_million_a);
        tcase_add_test(tc, test_is_valid);
        tcase_add_test(tc, test_fd_sizes);
        tcase_add_test(tc, test_fd_errors);
        tcase_add_test(tc, test_free_null);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(digest_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
