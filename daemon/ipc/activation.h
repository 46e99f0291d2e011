/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Socket activation (sd_listen_fds(3)): the service manager listens on the
 * socket, starts the daemon on the first connection and hands the listening
 * socket over as fd 3. libsystemd parses the protocol; this module decides
 * which passed sockets the daemon can serve. Readiness and status go to the
 * manager with sd_notify(3) straight from main.
 *
 * Library code: nothing here logs, the caller decides what an error means.
 */

#include "util.h"

/* The daemon serves exactly one socket; a manager passing more is misconfigured. */
#define ACTIVATION_LISTEN_FDS_MAX 1

/*
 * Adopts the socket passed by the service manager, if any. sd_listen_fds()
 * reads LISTEN_PID and LISTEN_FDS (variables meant for another process are
 * ignored; malformed ones or a passed fd that is not open are its negative
 * errno) and marks the fds O_CLOEXEC. More than ACTIVATION_LISTEN_FDS_MAX
 * fds: -E2BIG. The fd must be a listening AF_UNIX SOCK_STREAM socket (not a
 * socket: -ENOTSOCK; another family or type, or not listening: -EINVAL),
 * because the daemon accepts connections itself (Accept=no). LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES are unset in every case, so that no child
 * process mistakes them for its own.
 *
 * Returns 1 and *ret_fd when a socket was passed, 0 when none was (ret_fd
 * untouched), a negative errno on error (ret_fd untouched).
 */
int activation_listen_fd(int *ret_fd);

/*
 * The address a Unix socket is bound to, for reporting (system.info) the
 * path of a socket the daemon did not bind itself: the path, or "@name" for
 * an abstract socket. -EAFNOSUPPORT when fd is not AF_UNIX, -EADDRNOTAVAIL
 * when it is unnamed, -ENOMEM. *ret_path is a new string on success only.
 */
int activation_socket_path(int fd, char **ret_path);
