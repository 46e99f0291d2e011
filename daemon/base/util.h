/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Small helpers shared by every module of the daemon: ownership macros in the
 * style of systemd (a `_cleanup_(fn)` local is released when it leaves scope,
 * `TAKE_PTR` hands it over explicitly), and a few arithmetic helpers.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Moves ownership out of a cleanup variable: returns the value, leaves NULL. */
#define TAKE_PTR(p)                          \
        ({                                   \
                __typeof__(p) _p_ = (p);     \
                (p) = NULL;                  \
                _p_;                         \
        })

/* The same for file descriptors: returns the fd, leaves -EBADF. */
#define TAKE_FD(fd)                          \
        ({                                   \
                int _fd_ = (fd);             \
                (fd) = -EBADF;               \
                _fd_;                        \
        })

/* Defines `name##p(type **p)` that calls `func(*p)` when *p is non-NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)          \
        static inline void func##p(type *p) {            \
                if (*p)                                  \
                        func(*p);                        \
        }

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes fd if it is valid, keeping errno, and returns -EBADF. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -EBADF;
}

static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

static inline bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Returns -errno of the last failing libc call, never 0 (EIO if errno was 0). */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/* Overflow-checked size arithmetic: true on overflow. */
static inline bool add_overflow_u64(uint64_t a, uint64_t b, uint64_t *ret) {
        return __builtin_add_overflow(a, b, ret);
}

#define KiB ((uint64_t) 1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

#define MSEC_PER_SEC 1000ULL
#define USEC_PER_MSEC 1000ULL
#define NSEC_PER_MSEC 1000000ULL

/* Milliseconds since the epoch (wall clock), as the protocol reports times. */
int64_t now_ms(void);
/* Monotonic milliseconds, for durations and timeouts. */
uint64_t now_monotonic_ms(void);

/* write(2) until all is written or an error; 0 or -errno. */
int write_all(int fd, const void *buf, size_t len);
/* pwrite(2) at offset until all is written or an error; 0 or -errno (-EIO
 * for a write that makes no progress). */
int pwrite_all(int fd, const void *buf, size_t len, uint64_t offset);
/* read(2) until len bytes or EOF; returns bytes read (short only at EOF) or -errno. */
ssize_t read_full(int fd, void *buf, size_t len);
/* fsync a directory by path; 0 or -errno. */
int fsync_directory(const char *path);
/* mkdir -p with mode for each created component; 0 or -errno. */
int mkdir_p(const char *path, mode_t mode);
/*
 * How a file whose type is not known yet is opened for reading: open(2)
 * must never block or act on the file. O_NONBLOCK makes a FIFO open at once
 * instead of waiting for a writer (forever, if none comes), and O_NOCTTY
 * keeps a terminal from becoming the daemon's controlling terminal. The
 * caller checks the type with fstat(2) before it reads.
 */
#define OPEN_UNTRUSTED_FLAGS (O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)

/* Clears O_NONBLOCK on fd (once its type is checked), for reads that must
 * block; 0 or -errno. */
int fd_set_blocking(int fd);

/*
 * Opens path, relative, beneath the directory dir_fd with
 * OPEN_UNTRUSTED_FLAGS | flags, never resolving anything outside dir_fd's
 * tree: a symlink or ".." may move within it, but one that leads out (an
 * absolute symlink, ".." above dir_fd) fails with -EXDEV, a /proc magic
 * link or a symlink loop with -ELOOP. The answer depends only on what lies
 * beneath dir_fd, never on what is outside it. Uses openat2(2)
 * RESOLVE_BENEATH; where the kernel lacks it, open_beneath_nofollow().
 */
int open_beneath(int dir_fd, const char *path, int flags, int *ret_fd);
/* The fallback of open_beneath(): walks path one component at a time with
 * O_NOFOLLOW, refusing every symlink (-ELOOP) and every ".." (-EXDEV).
 * Stricter than openat2(2), never looser; public for its unit test. */
int open_beneath_nofollow(int dir_fd, const char *path, int flags, int *ret_fd);

/* Reads the whole of fd, a regular file (else -EISDIR) of at most max bytes
 * (else -EFBIG), into a NUL-terminated buffer. */
int read_fd_bounded(int fd, size_t max, char **ret_data, size_t *ret_size);
/* The same for a path, opened with OPEN_UNTRUSTED_FLAGS (a FIFO never blocks it). */
int read_file_bounded(const char *path, size_t max, char **ret_data, size_t *ret_size);
/* Removes path and, for a directory, everything below it (no symlinks
 * followed); adds the allocated bytes removed to *bytes when non-NULL. */
int rm_rf(const char *path, uint64_t *bytes);
