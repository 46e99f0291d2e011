/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The real daemon and real images for the C tests of libmsbimage.
 *
 * The daemon binary comes from $MSB_TEST_DAEMON and the image builder
 * (tests/client/mkimage.py, which uses the shared msbtest image kit) from
 * $MSB_TEST_MKIMAGE; tests/client/meson.build sets both.
 */

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct TestDaemon {
        char dir[256];         /* private directory: store, socket, log */
        char socket_path[300];
        char store_path[300];
        char log_path[300];
        pid_t pid;             /* 0 once reaped */
} TestDaemon;

/* Makes a private directory under /tmp (socket paths are short) and starts
 * msb-imaged there with a NOTIFY_SOCKET of the harness; returns once the
 * daemon sent READY=1 (it then listens), the way tests/lib/msbtest/ready.py
 * waits. Aborts the test on failure. */
void test_daemon_start(TestDaemon *d);

/* SIGTERM and wait: returns the exit status (or 128 + signal). */
int test_daemon_stop(TestDaemon *d);

/* SIGKILL and reap. */
void test_daemon_kill(TestDaemon *d);

/* True when the daemon's log holds a sanitizer report. */
bool test_daemon_log_has_sanitizer_report(const TestDaemon *d);

/* Removes the daemon's directory. */
void test_daemon_cleanup(TestDaemon *d);

/* Runs mkimage.py into a new directory and returns its truth object (see
 * mkimage.py); *ret_dir is the directory to remove at the end. */
json_t *test_images_build(char **ret_dir);

/* rm -rf */
void test_rm_rf(const char *path);
