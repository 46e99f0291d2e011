/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#include "util.h"

int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t now_monotonic_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

int write_all(int fd, const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

int pwrite_all(int fd, const void *buf, size_t len, uint64_t offset) {
        const uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, (off_t) offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                p += n;
                len -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

ssize_t read_full(int fd, void *buf, size_t len) {
        uint8_t *p = buf;
        size_t done = 0;

        while (done < len) {
                ssize_t n = read(fd, p + done, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                done += (size_t) n;
        }
        return (ssize_t) done;
}

int fsync_directory(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);
        if (!p)
                return -ENOMEM;

        for (char *s = p + 1;; s++) {
                bool end = *s == '\0';
                if (*s == '/' || end) {
                        *s = '\0';
                        if (mkdir(p, mode) < 0 && errno != EEXIST)
                                return negative_errno();
                        if (end)
                                break;
                        *s = '/';
                }
        }
        return 0;
}

int fd_set_blocking(int fd) {
        int fl = fcntl(fd, F_GETFL);

        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
                return negative_errno();
        return 0;
}

/* openat2(2) answers EAGAIN when a rename elsewhere raced its check of a
 * ".." (only a symlink in the tree can bring one); each retry needs another
 * such race, so a few are plenty. */
#define OPEN_BENEATH_RETRIES 8

/*
 * ThreadSanitizer does not intercept raw syscall(2), so it never sees the
 * descriptor openat2 makes, nor libuv's closes (also raw syscalls): it still
 * holds the number's last accesses from whatever earlier descriptor had it
 * (a socket of the loop's, say) and reports closing ours as a race with the
 * loop. A dup (fcntl F_DUPFD) is not enough: TSan records a dup as a read
 * of the old state. Under TSan the file is opened again through
 * /proc/self/fd, an open(2) it intercepts as the birth of a descriptor.
 */
static int fd_seen_by_sanitizers(int fd, int flags) {
#if defined(__SANITIZE_THREAD__)
        char path[sizeof("/proc/self/fd/") + 12];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int copy = open(path, (OPEN_UNTRUSTED_FLAGS | flags) & ~O_NOFOLLOW);
        int saved = errno;

        (void) syscall(SYS_close, fd);
        errno = saved;
        return copy < 0 ? -saved : copy;
#else
        (void) flags;
        return fd;
#endif
}

/* Set once openat2(2) answered ENOSYS (a kernel before 5.6, or a seccomp
 * filter that does not know it): every later open takes the fallback. */
static bool openat2_missing;

int open_beneath(int dir_fd, const char *path, int flags, int *ret_fd) {
        struct open_how how = {
                .flags = (uint64_t) (OPEN_UNTRUSTED_FLAGS | flags),
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };

        for (unsigned i = 0; !__atomic_load_n(&openat2_missing, __ATOMIC_RELAXED); i++) {
                long fd = syscall(SYS_openat2, dir_fd, path, &how, sizeof(how));
                if (fd >= 0) {
                        *ret_fd = fd_seen_by_sanitizers((int) fd, flags);
                        return *ret_fd < 0 ? *ret_fd : 0;
                }
                if (errno == ENOSYS) {
                        __atomic_store_n(&openat2_missing, true, __ATOMIC_RELAXED);
                        break;
                }
                if ((errno != EAGAIN && errno != EINTR) || i >= OPEN_BENEATH_RETRIES)
                        return negative_errno();
        }
        return open_beneath_nofollow(dir_fd, path, flags, ret_fd);
}

/* Opens the directory name beneath at without following a symlink. */
static int open_directory_nofollow(int at, const char *name) {
        struct stat st;
        int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);

        /* O_DIRECTORY wins over O_NOFOLLOW: a symlink answers ENOTDIR. */
        if (fd < 0 && errno == ENOTDIR && fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                return -ELOOP;
        return fd >= 0 ? fd : negative_errno();
}

int open_beneath_nofollow(int dir_fd, const char *path, int flags, int *ret_fd) {
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int dir = -EBADF;
        char *save = NULL, *name, *next;

        if (!copy)
                return -ENOMEM;
        if (path[0] == '/')
                return -EXDEV;
        name = strtok_r(copy, "/", &save);
        if (!name)
                return -ENOENT;
        for (; name; name = next) {
                int at = dir >= 0 ? dir : dir_fd;
                next = strtok_r(NULL, "/", &save);
                if (streq(name, ".."))
                        return -EXDEV;
                if (next) {
                        int fd = open_directory_nofollow(at, name);
                        if (fd < 0)
                                return fd;
                        safe_close(dir);
                        dir = fd;
                        continue;
                }
                int fd = openat(at, name, OPEN_UNTRUSTED_FLAGS | O_NOFOLLOW | flags);
                if (fd < 0)
                        return negative_errno();
                *ret_fd = fd;
        }
        return 0;
}

int read_fd_bounded(int fd, size_t max, char **ret_data, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EISDIR;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        ssize_t n = read_full(fd, buf, (size_t) st.st_size);
        if (n < 0)
                return (int) n;
        if (n != st.st_size)
                return -EIO;
        buf[n] = '\0';

        *ret_data = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = (size_t) n;
        return 0;
}

int read_file_bounded(const char *path, size_t max, char **ret_data, size_t *ret_size) {
        _cleanup_close_ int fd = open(path, OPEN_UNTRUSTED_FLAGS);

        if (fd < 0)
                return negative_errno();
        return read_fd_bounded(fd, max, ret_data, ret_size);
}

#include <ftw.h>

static __thread uint64_t rm_rf_bytes;

static int rm_rf_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        rm_rf_bytes += (uint64_t) st->st_blocks * 512;
        if (type == FTW_DP)
                (void) rmdir(path);
        else
                (void) unlink(path);
        return 0;
}

int rm_rf(const char *path, uint64_t *bytes) {
        rm_rf_bytes = 0;
        if (nftw(path, rm_rf_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
                return negative_errno();
        if (bytes)
                *bytes += rm_rf_bytes;
        return 0;
}
