/* SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "activation.h"

typedef union SocketAddressUnix {
        struct sockaddr sa;
        struct sockaddr_un un;
} SocketAddressUnix;

/* The daemon accepts connections on the socket itself (Accept=no), so the
 * manager must pass a listening Unix stream socket, as the .socket unit's
 * ListenStream= path creates. */
static int activation_validate_listener(int fd) {
        int r;

        r = sd_is_socket(fd, AF_UNSPEC, 0, -1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOTSOCK;
        r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
        if (r < 0)
                return r;
        if (r == 0)
                return -EINVAL;
        return 0;
}

int activation_listen_fd(int *ret_fd) {
        int n, r;

        /* Unsets the variables whatever the outcome: a child process (or
         * this one, asked again) must never adopt fd 3 on the strength of
         * stale variables. */
        n = sd_listen_fds(1);
        if (n <= 0)
                return n;
        if (n > ACTIVATION_LISTEN_FDS_MAX)
                return -E2BIG;

        r = activation_validate_listener(SD_LISTEN_FDS_START);
        if (r < 0)
                return r;
        /* libuv makes the fd non-blocking when the server adopts it (uv_pipe_open). */
        *ret_fd = SD_LISTEN_FDS_START;
        return 1;
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
