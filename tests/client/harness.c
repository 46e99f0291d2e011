/* SPDX-License-Identifier: Apache-2.0 */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* An ASan build starts slowly; a daemon that needs longer to bind its
 * socket (or to exit after SIGTERM) is broken. */
#define TEST_DAEMON_START_TIMEOUT_MS 20000
#define TEST_DAEMON_STOP_TIMEOUT_MS 20000
/* How often the start looks whether the daemon exited while it waits for
 * READY=1. */
#define NOTIFY_POLL_MS 50
/* sd_notify messages are short lines; the daemon's longest names its store. */
#define NOTIFY_MESSAGE_MAX 4096

static const char *env_required(const char *name) {
        const char *v = getenv(name);
        ck_assert_msg(v && v[0], "$%s is not set: run this test through meson test", name);
        return v;
}

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* The service manager's end of sd_notify(3) at path: a datagram socket that
 * is told each sender's pid (SO_PASSCRED). */
static int notify_listen(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, one = 1;

        ck_assert_msg(strlen(path) < sizeof(sa.sun_path), "%s: path too long for a socket", path);
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_msg(fd >= 0, "socket: %m");
        ck_assert_msg(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0, "bind %s: %m", path);
        ck_assert_msg(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0, "SO_PASSCRED: %m");
        return fd;
}

/* Reads one notification, if one is there; true when it is READY=1 from
 * pid. */
static bool notify_says_ready(int fd, pid_t pid) {
        char text[NOTIFY_MESSAGE_MAX + 1], control[CMSG_SPACE(sizeof(struct ucred))];
        struct iovec iov = { .iov_base = text, .iov_len = NOTIFY_MESSAGE_MAX };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                              .msg_controllen = sizeof(control) };
        pid_t sender = 0;
        ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

        if (n < 0)
                return false;
        text[n] = '\0';
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
                        sender = ((struct ucred *) (void *) CMSG_DATA(c))->pid;
        if (sender != pid)
                return false;
        /* The message is lines of KEY=VALUE (sd_notify(3)). */
        for (char *line = text, *next; line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (strcmp(line, "READY=1") == 0)
                        return true;
        }
        return false;
}

void test_daemon_start(TestDaemon *d) {
        const char *binary = env_required("MSB_TEST_DAEMON");
        char notify_path[320];
        uint64_t deadline;
        int notify_fd;
        pid_t pid;

        memset(d, 0, sizeof(*d));
        snprintf(d->dir, sizeof(d->dir), "/tmp/msbc-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(d->dir));
        snprintf(d->socket_path, sizeof(d->socket_path), "%s/run/imaged.sock", d->dir);
        snprintf(d->store_path, sizeof(d->store_path), "%s/store", d->dir);
        snprintf(d->log_path, sizeof(d->log_path), "%s/daemon.log", d->dir);
        snprintf(notify_path, sizeof(notify_path), "%s/notify.sock", d->dir);
        notify_fd = notify_listen(notify_path);

        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int fd = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0)
                        _exit(127);
                dup2(fd, STDOUT_FILENO);
                dup2(fd, STDERR_FILENO);
                unsetenv("MSB_IMAGED_STORE");
                unsetenv("MSB_IMAGED_SOCKET");
                unsetenv("MSB_IMAGED_CONFIG");
                unsetenv("LISTEN_FDS");
                setenv("NOTIFY_SOCKET", notify_path, 1);
                execl(binary, binary, "--store", d->store_path, "--socket", d->socket_path, "--log-level",
                      "debug", (char *) NULL);
                _exit(127);
        }
        d->pid = pid;

        /* Ready is READY=1 from the daemon, as msbtest.ready waits for it:
         * no probe connection is left for the daemon to count. */
        deadline = now_ms() + TEST_DAEMON_START_TIMEOUT_MS;
        for (;;) {
                struct pollfd pfd = { .fd = notify_fd, .events = POLLIN };
                int status;

                if (poll(&pfd, 1, NOTIFY_POLL_MS) > 0 && notify_says_ready(notify_fd, pid))
                        break;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        d->pid = 0;
                        ck_abort_msg("msb-imaged exited with status %d before it was ready (log: %s)",
                                     WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                                     d->log_path);
                }
                ck_assert_msg(now_ms() < deadline, "msb-imaged not ready after %d ms (log: %s)",
                              TEST_DAEMON_START_TIMEOUT_MS, d->log_path);
        }
        close(notify_fd);
        unlink(notify_path);
}

int test_daemon_stop(TestDaemon *d) {
        uint64_t deadline = now_ms() + TEST_DAEMON_STOP_TIMEOUT_MS;
        int status;

        if (d->pid <= 0)
                return -1;
        kill(d->pid, SIGTERM);
        while (waitpid(d->pid, &status, WNOHANG) != d->pid) {
                if (now_ms() > deadline) {
                        test_daemon_kill(d);
                        return 128 + SIGKILL;
                }
                usleep(10 * 1000);
        }
        d->pid = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void test_daemon_kill(TestDaemon *d) {
        if (d->pid <= 0)
                return;
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
}

bool test_daemon_log_has_sanitizer_report(const TestDaemon *d) {
        static const char *const markers[] = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" };
        char line[4096];
        bool found = false;
        FILE *f = fopen(d->log_path, "re");

        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f))
                for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]); i++)
                        if (strstr(line, markers[i]))
                                found = true;
        fclose(f);
        return found;
}

void test_rm_rf(const char *path) {
        pid_t pid = fork();
        if (pid == 0) {
                execlp("rm", "rm", "-rf", "--", path, (char *) NULL);
                _exit(127);
        }
        if (pid > 0)
                waitpid(pid, NULL, 0);
}

void test_daemon_cleanup(TestDaemon *d) {
        test_daemon_kill(d);
        if (d->dir[0] && !getenv("MSB_TEST_KEEP"))
                test_rm_rf(d->dir);
}

json_t *test_images_build(char **ret_dir) {
        const char *script = env_required("MSB_TEST_MKIMAGE");
        char dir[] = "/tmp/msbc-img-XXXXXX", *cmd = NULL;
        json_error_t jerr;
        json_t *truth;
        FILE *p;
        int status;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        ck_assert_int_ge(asprintf(&cmd, "/usr/bin/python3 '%s' '%s'", script, dir), 0);
        p = popen(cmd, "re");
        ck_assert_ptr_nonnull(p);
        truth = json_loadf(p, 0, &jerr);
        status = pclose(p);
        free(cmd);
        ck_assert_msg(status == 0 && truth, "mkimage.py failed (status %d): %s", status, jerr.text);
        *ret_dir = strdup(dir);
        return truth;
}
