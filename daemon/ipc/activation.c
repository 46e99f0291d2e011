/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "activation.h"

/* The longest state we format; sd_notify messages are a few short assignments. */
#define ACTIVATION_NOTIFY_STATE_MAX 4096

typedef union SocketAddressUnix {
        struct sockaddr sa;
        struct sockaddr_un un;
} SocketAddressUnix;

/* Parses a whole decimal number in [min, max]; -EINVAL for anything else. */
static int parse_ulong_range(const char *s, unsigned long min, unsigned long max, unsigned long *ret) {
        unsigned long v;
        char *end;

        /* strtoul() accepts leading blanks and a sign, the protocol has neither. */
        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int getsockopt_int(int fd, int level, int optname, int *ret) {
        int v = 0;
        socklen_t len = sizeof(v);

        if (getsockopt(fd, level, optname, &v, &len) < 0)
                return negative_errno();
        if (len != sizeof(v))
                return -EIO;
        *ret = v;
        return 0;
}

/* The daemon accepts connections on the socket itself (Accept=no), so the
 * manager must pass a listening Unix stream socket, as the .socket unit's
 * ListenStream= path creates. */
static int activation_validate_listener(int fd) {
        struct stat st;
        int domain, type, listening, r;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISSOCK(st.st_mode))
                return -ENOTSOCK;

        r = getsockopt_int(fd, SOL_SOCKET, SO_DOMAIN, &domain);
        if (r < 0)
                return r;
        r = getsockopt_int(fd, SOL_SOCKET, SO_TYPE, &type);
        if (r < 0)
                return r;
        r = getsockopt_int(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening);
        if (r < 0)
                return r;
        if (domain != AF_UNIX || type != SOCK_STREAM || !listening)
                return -EINVAL;
        return 0;
}

static int fd_set_cloexec_nonblock(int fd) {
        int flags;

        flags = fcntl(fd, F_GETFD);
        if (flags < 0)
                return negative_errno();
        if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                return negative_errno();

        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return negative_errno();
        if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return negative_errno();
        return 0;
}

/* Reads the variables; 1 when a socket at fd 3 is ours to validate. */
static int activation_parse_environment(void) {
        unsigned long pid, n;
        const char *e;
        int r;

        e = getenv("LISTEN_PID");
        if (!e)
                return 0;
        r = parse_ulong_range(e, 1, INT_MAX, &pid);
        if (r < 0)
                return r;
        /* The variables are inherited across fork(); only the process the
         * manager exec'd is addressed (sd_listen_fds(3)). */
        if ((pid_t) pid != getpid())
                return 0;

        e = getenv("LISTEN_FDS");
        if (!e)
                return 0;
        r = parse_ulong_range(e, 0, INT_MAX - ACTIVATION_LISTEN_FDS_START, &n);
        if (r < 0)
                return r;
        if (n == 0)
                return 0;
        if (n > ACTIVATION_LISTEN_FDS_MAX)
                return -E2BIG;
        return 1;
}

int activation_listen_fd(int *ret_fd) {
        const int fd = ACTIVATION_LISTEN_FDS_START;
        int r;

        r = activation_parse_environment();
        if (r > 0) {
                r = activation_validate_listener(fd);
                if (r >= 0)
                        r = fd_set_cloexec_nonblock(fd);
                if (r >= 0)
                        r = 1;
        }

        /* Cleared whatever the outcome: a child process (or this one, asked
         * again) must never adopt fd 3 on the strength of stale variables. */
        (void) unsetenv("LISTEN_PID");
        (void) unsetenv("LISTEN_FDS");
        (void) unsetenv("LISTEN_FDNAMES");

        if (r > 0)
                *ret_fd = fd;
        return r;
}

/* NOTIFY_SOCKET is "/path" or "@abstract" (sd_notify(3)); the '@' becomes
 * the leading NUL byte of an abstract address and counts in its length. */
static int activation_notify_address(const char *e, SocketAddressUnix *ret_addr, socklen_t *ret_len) {
        SocketAddressUnix addr = { .un.sun_family = AF_UNIX };
        size_t len = strlen(e);

        if (e[0] != '/' && e[0] != '@')
                return -EAFNOSUPPORT;
        if (len < 2)
                return -EINVAL;
        /* A path needs its terminating NUL, an abstract name does not. */
        if (len > sizeof(addr.un.sun_path) - (e[0] == '/'))
                return -ENAMETOOLONG;

        memcpy(addr.un.sun_path, e, len);
        if (e[0] == '@')
                addr.un.sun_path[0] = '\0';

        *ret_addr = addr;
        *ret_len = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (e[0] == '/'));
        return 0;
}

int activation_notify(const char *state) {
        _cleanup_close_ int fd = -EBADF;
        SocketAddressUnix addr;
        const char *e;
        socklen_t addr_len;
        size_t len;
        ssize_t n;
        int r;

        if (!state || !*state)
                return -EINVAL;

        e = getenv("NOTIFY_SOCKET");
        if (!e || !*e)
                return 0;

        r = activation_notify_address(e, &addr, &addr_len);
        if (r < 0)
                return r;

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();

        /* The manager learns our pid from the kernel (SO_PASSCRED on its
         * side), so a plain datagram is the whole protocol. */
        len = strlen(state);
        do
                n = sendto(fd, state, len, MSG_NOSIGNAL, &addr.sa, addr_len);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        if ((size_t) n != len)
                return -EIO;
        return 1;
}

int activation_notifyf(const char *fmt, ...) {
        char state[ACTIVATION_NOTIFY_STATE_MAX];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(state, sizeof(state), fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if ((size_t) n >= sizeof(state))
                return -ENAMETOOLONG;
        return activation_notify(state);
}

int activation_socket_path(int fd, char **ret_path) {
        SocketAddressUnix addr = {};
        socklen_t len = sizeof(addr);
        size_t name_len;
        char *path;

        if (getsockname(fd, &addr.sa, &len) < 0)
                return negative_errno();
        if (addr.sa.sa_family != AF_UNIX)
                return -EAFNOSUPPORT;
        if (len <= offsetof(struct sockaddr_un, sun_path))
                return -EADDRNOTAVAIL;

        /* A path fills sun_path up to its NUL (which the kernel may omit
         * when it exactly fills the field); an abstract name is the bytes
         * after the leading NUL, shown with '@' as NOTIFY_SOCKET spells it. */
        name_len = len - offsetof(struct sockaddr_un, sun_path);
        /* Linux counts a NUL it adds after a path that fills sun_path, so
         * the length reported may exceed the buffer (unix(7), BUGS). */
        if (name_len > sizeof(addr.un.sun_path))
                name_len = sizeof(addr.un.sun_path);
        if (addr.un.sun_path[0] != '\0')
                name_len = strnlen(addr.un.sun_path, name_len);
        else if (name_len == 1)
                return -EADDRNOTAVAIL;

        path = malloc(name_len + 1);
        if (!path)
                return -ENOMEM;
        memcpy(path, addr.un.sun_path, name_len);
        path[name_len] = '\0';
        if (path[0] == '\0')
                path[0] = '@';

        *ret_path = path;
        return 0;
}
