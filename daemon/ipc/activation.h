/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon's side of the service manager protocols, spoken directly (no
 * libsystemd needed):
 *
 *  - socket activation (sd_listen_fds(3)): the manager listens on the socket,
 *    starts the daemon on the first connection and hands the listening socket
 *    over as fd 3, announced by LISTEN_PID and LISTEN_FDS;
 *  - readiness and status notification (sd_notify(3)): newline-separated
 *    "KEY=VALUE" assignments sent as one datagram to the AF_UNIX socket named
 *    by NOTIFY_SOCKET.
 *
 * Library code: nothing here logs, the caller decides what an error means.
 */

#include "util.h"

/* The first passed file descriptor, fixed by the protocol (SD_LISTEN_FDS_START). */
#define ACTIVATION_LISTEN_FDS_START 3

/* The daemon serves exactly one socket; a manager passing more is misconfigured. */
#define ACTIVATION_LISTEN_FDS_MAX 1

/*
 * Adopts a socket passed by the service manager. Checks LISTEN_PID ==
 * getpid() (a mismatch means the variables were meant for another process,
 * e.g. a parent, and are ignored) and LISTEN_FDS == 1 (more: -E2BIG),
 * validates that fd 3 is a listening AF_UNIX SOCK_STREAM socket (not a
 * socket: -ENOTSOCK; another family, type or not listening: -EINVAL; not
 * open: -EBADF), and sets O_CLOEXEC|O_NONBLOCK on it. LISTEN_PID, LISTEN_FDS
 * and LISTEN_FDNAMES are unset in every case, so that no child process
 * mistakes them for its own.
 *
 * Returns 1 and *ret_fd when a socket was passed, 0 when none was (ret_fd
 * untouched), a negative errno on error (ret_fd untouched).
 */
int activation_listen_fd(int *ret_fd);

/*
 * Sends `state`, sd_notify-style ("READY=1", "STOPPING=1", "STATUS=...",
 * several separated by '\n'), to the socket named by NOTIFY_SOCKET: an
 * absolute path, or an abstract name written with a leading '@'.
 *
 * Returns 1 when sent, 0 when NOTIFY_SOCKET is unset or empty, a negative
 * errno on error (-EINVAL for an empty state, -EAFNOSUPPORT for an address
 * that is neither a path nor '@', -ENAMETOOLONG when it does not fit
 * sockaddr_un, or what socket(2)/sendto(2) report).
 */
int activation_notify(const char *state);

/* Formats the state with printf-style arguments, then as activation_notify(). */
int activation_notifyf(const char *fmt, ...) _printf_(1, 2);

/*
 * The address a Unix socket is bound to, for reporting (system.info) the
 * path of a socket the daemon did not bind itself: the path, or "@name" for
 * an abstract socket. -EAFNOSUPPORT when fd is not AF_UNIX, -EADDRNOTAVAIL
 * when it is unnamed, -ENOMEM. *ret_path is a new string on success only.
 */
int activation_socket_path(int fd, char **ret_path);
