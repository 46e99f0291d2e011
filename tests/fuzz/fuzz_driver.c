/* SPDX-License-Identifier: Apache-2.0 */

/*
 * A main() for fuzz targets when libFuzzer is not available: feeds every
 * regular file of the directories (or files) named on the command line to
 * LLVMFuzzerTestOneInput(). A crash or an abort() in the target fails the
 * test, as it would in the fuzzer. An empty corpus fails too, so a wrong
 * path cannot make the test pass vacuously.
 */

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Larger inputs are not useful for these parsers and would only slow the run. */
#define FUZZ_DRIVER_INPUT_MAX (1 * MiB)

static int fuzz_driver_run_file(int dirfd, const char *name) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        ssize_t n;

        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();

        buf = malloc(FUZZ_DRIVER_INPUT_MAX);
        if (!buf)
                return -ENOMEM;

        n = read_full(fd, buf, FUZZ_DRIVER_INPUT_MAX);
        if (n < 0)
                return (int) n;

        LLVMFuzzerTestOneInput(buf, (size_t) n);
        return 0;
}

static int fuzz_driver_run_path(const char *path, unsigned *count) {
        DIR *d;
        struct dirent *de;
        struct stat st;
        int r = 0;

        if (stat(path, &st) < 0)
                return negative_errno();
        if (!S_ISDIR(st.st_mode)) {
                r = fuzz_driver_run_file(AT_FDCWD, path);
                if (r == 0)
                        (*count)++;
                return r;
        }

        d = opendir(path);
        if (!d)
                return negative_errno();
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode))
                        continue;
                r = fuzz_driver_run_file(dirfd(d), de->d_name);
                if (r < 0)
                        break;
                (*count)++;
        }
        closedir(d);
        return r;
}

int main(int argc, char *argv[]) {
        unsigned count = 0;

        if (argc < 2) {
                fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
                return EXIT_FAILURE;
        }

        for (int i = 1; i < argc; i++) {
                int r = fuzz_driver_run_path(argv[i], &count);
                if (r < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(-r));
                        return EXIT_FAILURE;
                }
        }

        if (count == 0) {
                fprintf(stderr, "no inputs found\n");
                return EXIT_FAILURE;
        }
        printf("%u inputs ran\n", count);
        return EXIT_SUCCESS;
}
