/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of daemon/ipc/activation.c against real sockets placed at fd 3
 * the way a service manager passes them (sd_listen_fds(3)): which passed
 * socket the daemon serves and which it refuses. libsystemd parses the
 * variables; these tests pin what the daemon does with its answers. That
 * readiness and stopping reach NOTIFY_SOCKET is tested on the real daemon
 * (test_socket_activation.py). Every test runs in its own forked process,
 * so environment changes do not leak between tests.
 */

#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>

#include "activation.h"

#define UNTOUCHED (-42)
/* Where the child keeps its own fds, clear of the passed ones at 3, 4, ... */
#define CHILD_PRIVATE_FD 64

static char tmpdir[] = "/tmp/msb-activation-XXXXXX";

static void setup(void) {
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void) {
        char cmd[sizeof(tmpdir) + 16];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        ck_assert_int_eq(system(cmd), 0);
}

static socklen_t unix_address(const char *name, struct sockaddr_un *ret) {
        size_t len = strlen(name);

        memset(ret, 0, sizeof(*ret));
        ret->sun_family = AF_UNIX;
        ck_assert_uint_le(len, sizeof(ret->sun_path));
        memcpy(ret->sun_path, name, len);
        if (name[0] == '@')
                ret->sun_path[0] = '\0';
        return (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len + (name[0] != '@' && len < sizeof(ret->sun_path)));
}

static void tmp_path(char *buf, size_t size, const char *name) {
        ck_assert_int_lt(snprintf(buf, size, "%s/%s", tmpdir, name), (int) size);
}

/* A bound Unix socket of `type`, listening when asked; its path in ret_path. */
static int unix_socket_at(int type, bool listening, char ret_path[static 108]) {
        struct sockaddr_un sa;
        socklen_t len;
        int fd;

        tmp_path(ret_path, 108, "sock");
        fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        len = unix_address(ret_path, &sa);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, len), 0);
        if (listening)
                ck_assert_int_eq(listen(fd, 16), 0);
        return fd;
}

/* What a process that was handed fd 3 observed; filled in a grandchild. */
typedef struct ListenResult {
        int r;            /* activation_listen_fd() */
        int fd;           /* its *ret_fd, UNTOUCHED when not set */
        int again;        /* a second call, after the variables are gone */
        bool cloexec;     /* FD_CLOEXEC on fd 3 afterwards */
        bool env_cleared; /* LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES all unset */
} ListenResult;

/*
 * The check framework keeps its own report file at fd 3 of the test process,
 * so the scenario runs in a child process of its own: it places `sock` at
 * fds 3 .. 3 + n_passed - 1 (closes fd 3 when sock < 0) with no flags, as a
 * manager passes it, sets LISTEN_PID to `pid` ("self": its own pid; NULL:
 * unset) and LISTEN_FDS to `fds` (NULL: unset), and reports what it saw
 * through a pipe.
 */
static ListenResult listen_in_child_n(int sock, int n_passed, const char *pid, const char *fds) {
        ListenResult res = {};
        int pipefd[2], status;
        pid_t child;

        ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
        child = fork();
        ck_assert_int_ge(child, 0);
        if (child == 0) {
                char own[32];
                int fd = UNTOUCHED, out;

                /* Neither the pipe nor the socket may sit where a passed fd goes. */
                out = fcntl(pipefd[1], F_DUPFD_CLOEXEC, CHILD_PRIVATE_FD);
                if (out < 0)
                        _exit(EXIT_FAILURE);
                if (sock >= 0) {
                        sock = fcntl(sock, F_DUPFD_CLOEXEC, CHILD_PRIVATE_FD + 1);
                        for (int i = 0; i < n_passed; i++)
                                if (sock < 0 || dup2(sock, SD_LISTEN_FDS_START + i) < 0 ||
                                    fcntl(SD_LISTEN_FDS_START + i, F_SETFD, 0) < 0)
                                        _exit(EXIT_FAILURE);
                } else
                        close(SD_LISTEN_FDS_START);

                snprintf(own, sizeof(own), "%d", (int) getpid());
                if (pid && setenv("LISTEN_PID", streq(pid, "self") ? own : pid, 1) < 0)
                        _exit(EXIT_FAILURE);
                if (fds && setenv("LISTEN_FDS", fds, 1) < 0)
                        _exit(EXIT_FAILURE);
                if (setenv("LISTEN_FDNAMES", "msb-imaged.socket", 1) < 0)
                        _exit(EXIT_FAILURE);

                res.r = activation_listen_fd(&fd);
                res.fd = fd;
                res.env_cleared = !getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES");
                res.cloexec = fcntl(SD_LISTEN_FDS_START, F_GETFD) & FD_CLOEXEC;
                fd = UNTOUCHED;
                res.again = activation_listen_fd(&fd);
                if (fd != UNTOUCHED)
                        res.again = INT_MIN;
                _exit(write_all(out, &res, sizeof(res)) < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
        }

        close(pipefd[1]);
        ck_assert_int_eq(read_full(pipefd[0], &res, sizeof(res)), (ssize_t) sizeof(res));
        close(pipefd[0]);
        ck_assert_int_eq(waitpid(child, &status, 0), child);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return res;
}

static ListenResult listen_in_child(int sock, const char *pid, const char *fds) {
        return listen_in_child_n(sock, 1, pid, fds);
}

/* A passed socket refused: r, no fd, and the variables gone all the same. */
static void assert_not_adopted(ListenResult res, int r) {
        ck_assert_int_eq(res.r, r);
        ck_assert_int_eq(res.fd, UNTOUCHED);
        ck_assert(res.env_cleared);
        ck_assert_int_eq(res.again, 0);
}

/* Variables that do not address this process: not activated (0), and fd 3
 * left exactly as it was. */
static void assert_ignored(ListenResult res) {
        assert_not_adopted(res, 0);
        ck_assert(!res.cloexec);
}

START_TEST(test_listen_without_environment) {
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        assert_ignored(listen_in_child(sock, NULL, NULL));
        assert_ignored(listen_in_child(sock, NULL, "1"));
        close(sock);
}
END_TEST

START_TEST(test_listen_adopts_listener) {
        char path[108];
        struct sockaddr_un sa;
        ListenResult res;
        int sock, client, conn;

        sock = unix_socket_at(SOCK_STREAM, true, path);
        res = listen_in_child(sock, "self", "1");
        ck_assert_int_eq(res.r, 1);
        ck_assert_int_eq(res.fd, SD_LISTEN_FDS_START);
        ck_assert(res.env_cleared);
        /* No process the daemon starts inherits the listener. */
        ck_assert(res.cloexec);
        /* The variables are gone, so a second call finds nothing. */
        ck_assert_int_eq(res.again, 0);

        /* The socket adopted is the one passed: a client of its path is
         * queued on it. */
        client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(connect(client, (struct sockaddr *) &sa, unix_address(path, &sa)), 0);
        conn = accept4(sock, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(conn, 0);
        close(conn);
        close(client);
        close(sock);
}
END_TEST

START_TEST(test_listen_other_pid_is_ignored) {
        char path[108], parent[32];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        /* As if the variables had been inherited from our parent, which is
         * the process the manager meant. */
        snprintf(parent, sizeof(parent), "%d", (int) getpid());
        assert_ignored(listen_in_child(sock, parent, "1"));
        assert_ignored(listen_in_child(sock, "1", "1"));
        close(sock);
}
END_TEST

START_TEST(test_listen_missing_fds) {
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        assert_ignored(listen_in_child(sock, "self", NULL));
        close(sock);
}
END_TEST

START_TEST(test_listen_too_many_fds) {
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        /* Two good listeners: the daemon serves one socket, it does not
         * pick one of several. */
        assert_not_adopted(listen_in_child_n(sock, 2, "self", "2"), -E2BIG);
        /* More announced than passed: the fds past the first are not open. */
        assert_not_adopted(listen_in_child(sock, "self", "1000"), -EBADF);
        close(sock);
}
END_TEST

/* Variables that are not numbers (or not sensible ones) are refused:
 * the manager that set them is broken, and the daemon says so instead of
 * binding a socket of its own. */
START_TEST(test_listen_malformed_variables) {
        static const struct {
                const char *pid;
                const char *fds;
        } cases[] = {
                { "abc", "1" },   { "-1", "1" },   { "", "1" },     { "0", "1" },
                { "99999999999999999999", "1" },
                { "self", "1x" }, { "self", "" }, { "self", "-1" }, { "self", "0" },
                { "self", "99999999999999999999" },
        };
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ListenResult res = listen_in_child(sock, cases[i].pid, cases[i].fds);

                ck_assert_msg(res.r < 0, "case %zu: LISTEN_PID='%s' LISTEN_FDS='%s' gave %d", i, cases[i].pid,
                              cases[i].fds, res.r);
                assert_not_adopted(res, res.r);
        }
        close(sock);
}
END_TEST

START_TEST(test_listen_not_a_socket) {
        int fds[2];

        ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
        assert_not_adopted(listen_in_child(fds[0], "self", "1"), -ENOTSOCK);
        close(fds[0]);
        close(fds[1]);
}
END_TEST

START_TEST(test_listen_fd_not_open) {
        ListenResult res = listen_in_child(-1, "self", "1");

        ck_assert_int_eq(res.r, -EBADF);
        ck_assert_int_eq(res.fd, UNTOUCHED);
        ck_assert(res.env_cleared);
}
END_TEST

/* Sockets the daemon cannot serve JSON-RPC on: -EINVAL, fd 3 untouched. */
static void assert_rejected(int sock) {
        assert_not_adopted(listen_in_child(sock, "self", "1"), -EINVAL);
        close(sock);
}

START_TEST(test_listen_rejects_datagram) {
        char path[108];

        assert_rejected(unix_socket_at(SOCK_DGRAM, false, path));
}
END_TEST

START_TEST(test_listen_rejects_seqpacket) {
        char path[108];

        assert_rejected(unix_socket_at(SOCK_SEQPACKET, true, path));
}
END_TEST

START_TEST(test_listen_rejects_not_listening) {
        char path[108];

        assert_rejected(unix_socket_at(SOCK_STREAM, false, path));
}
END_TEST

START_TEST(test_listen_rejects_connected_pair) {
        int pair[2];

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        assert_rejected(pair[0]);
        close(pair[1]);
}
END_TEST

START_TEST(test_listen_rejects_inet) {
        struct sockaddr_in sin = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
        ck_assert_int_eq(listen(fd, 4), 0);
        assert_rejected(fd);
}
END_TEST

START_TEST(test_socket_path) {
        _cleanup_free_ char *got = NULL, *got_abstract = NULL;
        char path[108], name[64];
        struct sockaddr_un sa;
        int fd, afd;

        fd = unix_socket_at(SOCK_STREAM, true, path);
        ck_assert_int_eq(activation_socket_path(fd, &got), 0);
        ck_assert_str_eq(got, path);
        close(fd);

        snprintf(name, sizeof(name), "@msb-activation-path/%d", (int) getpid());
        afd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(bind(afd, (struct sockaddr *) &sa, unix_address(name, &sa)), 0);
        ck_assert_int_eq(activation_socket_path(afd, &got_abstract), 0);
        ck_assert_str_eq(got_abstract, name);
        close(afd);
}
END_TEST

START_TEST(test_socket_path_fills_sun_path) {
        _cleanup_free_ char *got = NULL;
        char name[sizeof(((struct sockaddr_un *) NULL)->sun_path) + 1];
        struct sockaddr_un sa;
        int fd;

        /* A relative name of exactly sizeof(sun_path) bytes has no NUL in
         * the address the kernel returns; the result must still end there. */
        ck_assert_int_eq(chdir(tmpdir), 0);
        memset(name, 'p', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, unix_address(name, &sa)), 0);
        ck_assert_int_eq(activation_socket_path(fd, &got), 0);
        ck_assert_str_eq(got, name);
        close(fd);
}
END_TEST

START_TEST(test_socket_path_errors) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        char *got = (char *) "untouched";
        int pair[2], fd;

        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        ck_assert_int_eq(activation_socket_path(pair[0], &got), -EADDRNOTAVAIL);
        close(pair[0]);
        close(pair[1]);

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
        ck_assert_int_eq(activation_socket_path(fd, &got), -EAFNOSUPPORT);
        close(fd);

        ck_assert_int_eq(activation_socket_path(-1, &got), -EBADF);
        ck_assert_str_eq(got, "untouched");
}
END_TEST

static Suite *activation_suite(void) {
        Suite *s = suite_create("activation");
        TCase *listen = tcase_create("listen"), *path = tcase_create("path");

        tcase_set_timeout(listen, 30);
        tcase_add_checked_fixture(listen, setup, teardown);
        tcase_add_test(listen, test_listen_without_environment);
        tcase_add_test(listen, test_listen_adopts_listener);
        tcase_add_test(listen, test_listen_other_pid_is_ignored);
        tcase_add_test(listen, test_listen_missing_fds);
        tcase_add_test(listen, test_listen_too_many_fds);
        tcase_add_test(listen, test_listen_malformed_variables);
        tcase_add_test(listen, test_listen_not_a_socket);
        tcase_add_test(listen, test_listen_fd_not_open);
        tcase_add_test(listen, test_listen_rejects_datagram);
        tcase_add_test(listen, test_listen_rejects_seqpacket);
        tcase_add_test(listen, test_listen_rejects_not_listening);
        tcase_add_test(listen, test_listen_rejects_connected_pair);
        tcase_add_test(listen, test_listen_rejects_inet);
        suite_add_tcase(s, listen);

        tcase_set_timeout(path, 30);
        tcase_add_checked_fixture(path, setup, teardown);
        tcase_add_test(path, test_socket_path);
        tcase_add_test(path, test_socket_path_fills_sun_path);
        tcase_add_test(path, test_socket_path_errors);
        suite_add_tcase(s, path);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(activation_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
