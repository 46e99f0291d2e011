/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of daemon/ipc/activation.c against real sockets: listeners placed at
 * fd 3 the way a service manager passes them (sd_listen_fds(3)), and a real
 * datagram listener receiving what activation_notify() sends (sd_notify(3)).
 * Every test runs in its own forked process, so environment changes do not
 * leak between tests.
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

#include "activation.h"

#define UNTOUCHED (-42)

static char tmpdir[] = "/tmp/msb-activation-XXXXXX";

static void setup(void) {
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
        ck_assert_int_eq(unsetenv("NOTIFY_SOCKET"), 0);
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
        bool nonblock;    /* O_NONBLOCK on fd 3 afterwards */
        bool env_cleared; /* LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES all unset */
} ListenResult;

/*
 * The check framework keeps its own report file at fd 3 of the test process,
 * so the scenario runs in a child process of its own: it places `sock` at
 * fd 3 (closes fd 3 when sock < 0) with no flags, as a manager passes it,
 * sets LISTEN_PID to `pid` ("self": its own pid; NULL: unset) and LISTEN_FDS
 * to `fds` (NULL: unset), and reports what it saw through a pipe.
 */
static ListenResult listen_in_child(int sock, const char *pid, const char *fds) {
        ListenResult res = {};
        int pipefd[2], status;
        pid_t child;

        ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
        child = fork();
        ck_assert_int_ge(child, 0);
        if (child == 0) {
                char own[32];
                int fd = UNTOUCHED;

                if (sock >= 0) {
                        if (dup2(sock, ACTIVATION_LISTEN_FDS_START) < 0 ||
                            fcntl(ACTIVATION_LISTEN_FDS_START, F_SETFD, 0) < 0 ||
                            fcntl(ACTIVATION_LISTEN_FDS_START, F_SETFL, O_RDWR) < 0)
                                _exit(EXIT_FAILURE);
                } else
                        close(ACTIVATION_LISTEN_FDS_START);

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
                res.cloexec = fcntl(ACTIVATION_LISTEN_FDS_START, F_GETFD) & FD_CLOEXEC;
                res.nonblock = fcntl(ACTIVATION_LISTEN_FDS_START, F_GETFL) & O_NONBLOCK;
                fd = UNTOUCHED;
                res.again = activation_listen_fd(&fd);
                if (fd != UNTOUCHED)
                        res.again = INT_MIN;
                _exit(write_all(pipefd[1], &res, sizeof(res)) < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
        }

        close(pipefd[1]);
        ck_assert_int_eq(read_full(pipefd[0], &res, sizeof(res)), (ssize_t) sizeof(res));
        close(pipefd[0]);
        ck_assert_int_eq(waitpid(child, &status, 0), child);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        return res;
}

/* A scenario that must leave the passed socket alone: r, no fd, fd 3 untouched. */
static void assert_not_adopted(ListenResult res, int r) {
        ck_assert_int_eq(res.r, r);
        ck_assert_int_eq(res.fd, UNTOUCHED);
        ck_assert(res.env_cleared);
        ck_assert_int_eq(res.again, 0);
        ck_assert(!res.cloexec);
        ck_assert(!res.nonblock);
}

START_TEST(test_listen_without_environment) {
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        assert_not_adopted(listen_in_child(sock, NULL, NULL), 0);
        assert_not_adopted(listen_in_child(sock, NULL, "1"), 0);
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
        ck_assert_int_eq(res.fd, ACTIVATION_LISTEN_FDS_START);
        ck_assert(res.env_cleared);
        ck_assert(res.cloexec);
        ck_assert(res.nonblock);
        /* The variables are gone, so a second call finds nothing. */
        ck_assert_int_eq(res.again, 0);

        /* O_NONBLOCK is a property of the shared open socket, so it shows
         * here too: nothing pending yet, then a real client is accepted. */
        ck_assert(fcntl(sock, F_GETFL) & O_NONBLOCK);
        ck_assert_int_lt(accept4(sock, NULL, NULL, SOCK_CLOEXEC), 0);
        ck_assert_int_eq(errno, EAGAIN);
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
        assert_not_adopted(listen_in_child(sock, parent, "1"), 0);
        assert_not_adopted(listen_in_child(sock, "1", "1"), 0);
        close(sock);
}
END_TEST

START_TEST(test_listen_zero_or_missing_fds) {
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        assert_not_adopted(listen_in_child(sock, "self", "0"), 0);
        assert_not_adopted(listen_in_child(sock, "self", NULL), 0);
        close(sock);
}
END_TEST

START_TEST(test_listen_too_many_fds) {
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        assert_not_adopted(listen_in_child(sock, "self", "2"), -E2BIG);
        assert_not_adopted(listen_in_child(sock, "self", "1000"), -E2BIG);
        close(sock);
}
END_TEST

START_TEST(test_listen_malformed_variables) {
        static const struct {
                const char *pid;
                const char *fds;
        } cases[] = {
                { "abc", "1" },   { " 1", "1" },   { "-1", "1" }, { "", "1" },
                { "0", "1" },     { "99999999999999999999", "1" },
                { "self", "1x" }, { "self", "+1" }, { "self", "" }, { "self", " 1" },
                { "self", "-1" }, { "self", "99999999999999999999" },
        };
        char path[108];
        int sock = unix_socket_at(SOCK_STREAM, true, path);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ListenResult res = listen_in_child(sock, cases[i].pid, cases[i].fds);

                ck_assert_msg(res.r == -EINVAL, "case %zu: LISTEN_PID='%s' LISTEN_FDS='%s' gave %d", i,
                              cases[i].pid, cases[i].fds, res.r);
                assert_not_adopted(res, -EINVAL);
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

/* A datagram listener like the service manager's, with SO_PASSCRED so the
 * sender's pid can be checked. */
static int notify_listener(const char *name) {
        struct sockaddr_un sa;
        socklen_t len = unix_address(name, &sa);
        int one = 1, fd;

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, len), 0);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
        return fd;
}

/* Receives one datagram (non-blocking: it must already be there) and its sender. */
static void notify_receive(int fd, char *buf, size_t size, pid_t *ret_pid) {
        union {
                struct cmsghdr cmsg;
                uint8_t buf[CMSG_SPACE(sizeof(struct ucred))];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = size - 1 };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof(control),
        };
        struct cmsghdr *c;
        ssize_t n;

        n = recvmsg(fd, &mh, MSG_DONTWAIT);
        ck_assert_int_ge(n, 0);
        ck_assert_int_eq(mh.msg_flags & MSG_TRUNC, 0);
        buf[n] = '\0';
        *ret_pid = 0;
        for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                        struct ucred cred;

                        memcpy(&cred, CMSG_DATA(c), sizeof(cred));
                        *ret_pid = cred.pid;
                }
}

START_TEST(test_notify_unset) {
        ck_assert_int_eq(activation_notify("READY=1"), 0);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", "", 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), 0);
}
END_TEST

START_TEST(test_notify_path) {
        char path[108], buf[256];
        pid_t pid;
        int fd;

        tmp_path(path, sizeof(path), "notify");
        fd = notify_listener(path);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);

        ck_assert_int_eq(activation_notify("READY=1"), 1);
        notify_receive(fd, buf, sizeof(buf), &pid);
        ck_assert_str_eq(buf, "READY=1");
        ck_assert_int_eq(pid, getpid());

        /* Several assignments travel in one datagram, unchanged. */
        ck_assert_int_eq(activation_notify("STATUS=Serving\nSTOPPING=1"), 1);
        notify_receive(fd, buf, sizeof(buf), &pid);
        ck_assert_str_eq(buf, "STATUS=Serving\nSTOPPING=1");

        ck_assert_int_eq(activation_notifyf("STATUS=%d images", 7), 1);
        notify_receive(fd, buf, sizeof(buf), &pid);
        ck_assert_str_eq(buf, "STATUS=7 images");

        /* NOTIFY_SOCKET stays set: readiness and stopping go to the same place. */
        ck_assert_str_eq(getenv("NOTIFY_SOCKET"), path);
        close(fd);
}
END_TEST

START_TEST(test_notify_abstract) {
        char name[64], buf[64];
        pid_t pid;
        int fd;

        snprintf(name, sizeof(name), "@msb-activation-test/%d", (int) getpid());
        fd = notify_listener(name);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);

        ck_assert_int_eq(activation_notify("STOPPING=1"), 1);
        notify_receive(fd, buf, sizeof(buf), &pid);
        ck_assert_str_eq(buf, "STOPPING=1");
        ck_assert_int_eq(pid, getpid());
        close(fd);
}
END_TEST

START_TEST(test_notify_longest_abstract_name) {
        char name[sizeof(((struct sockaddr_un *) NULL)->sun_path) + 1], buf[16];
        pid_t pid;
        int fd;

        /* '@' plus 107 bytes fills sun_path exactly (no NUL needed). */
        size_t prefix = (size_t) snprintf(name, sizeof(name), "@msb-activation-%d-", (int) getpid());
        memset(name + prefix, 'n', sizeof(name) - 1 - prefix);
        name[sizeof(name) - 1] = '\0';
        fd = notify_listener(name);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", name, 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), 1);
        notify_receive(fd, buf, sizeof(buf), &pid);
        ck_assert_str_eq(buf, "READY=1");
        close(fd);
}
END_TEST

START_TEST(test_notify_errors) {
        char longname[200], path[108];

        ck_assert_int_eq(activation_notify(NULL), -EINVAL);
        ck_assert_int_eq(activation_notify(""), -EINVAL);

        ck_assert_int_eq(setenv("NOTIFY_SOCKET", "relative/path", 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), -EAFNOSUPPORT);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), -EAFNOSUPPORT);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", "@", 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), -EINVAL);

        memset(longname, 'x', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        longname[0] = '/';
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", longname, 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), -ENAMETOOLONG);
        /* A path of exactly sizeof(sun_path) bytes leaves no room for its NUL. */
        longname[sizeof(((struct sockaddr_un *) NULL)->sun_path)] = '\0';
        ck_assert_int_eq(activation_notify("READY=1"), -ENAMETOOLONG);
        /* An abstract name may fill sun_path, but not one byte more. */
        longname[0] = '@';
        longname[sizeof(((struct sockaddr_un *) NULL)->sun_path)] = 'x';
        longname[sizeof(((struct sockaddr_un *) NULL)->sun_path) + 1] = '\0';
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", longname, 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), -ENAMETOOLONG);

        tmp_path(path, sizeof(path), "nobody-listens");
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
        ck_assert_int_eq(activation_notify("READY=1"), -ENOENT);
}
END_TEST

START_TEST(test_notifyf_too_long) {
        char path[108], big[5000];
        int fd;

        tmp_path(path, sizeof(path), "notify");
        fd = notify_listener(path);
        ck_assert_int_eq(setenv("NOTIFY_SOCKET", path, 1), 0);
        memset(big, 's', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_assert_int_eq(activation_notifyf("STATUS=%s", big), -ENAMETOOLONG);
        /* Nothing half-formatted was sent. */
        ck_assert_int_lt(recv(fd, big, sizeof(big), MSG_DONTWAIT), 0);
        ck_assert_int_eq(errno, EAGAIN);
        close(fd);
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
        TCase *listen = tcase_create("listen"), *notify = tcase_create("notify"), *path = tcase_create("path");

        tcase_set_timeout(listen, 30);
        tcase_add_checked_fixture(listen, setup, teardown);
        tcase_add_test(listen, test_listen_without_environment);
        tcase_add_test(listen, test_listen_adopts_listener);
        tcase_add_test(listen, test_listen_other_pid_is_ignored);
        tcase_add_test(listen, test_listen_zero_or_missing_fds);
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

        tcase_set_timeout(notify, 30);
        tcase_add_checked_fixture(notify, setup, teardown);
        tcase_add_test(notify, test_notify_unset);
        tcase_add_test(notify, test_notify_path);
        tcase_add_test(notify, test_notify_abstract);
        tcase_add_test(notify, test_notify_longest_abstract_name);
        tcase_add_test(notify, test_notify_errors);
        tcase_add_test(notify, test_notifyf_too_long);
        suite_add_tcase(s, notify);

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
