/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Docker credential helpers (the "credsStore" and "credHelpers" of
 * ~/.docker/config.json), run the way the Docker client runs them: the
 * program docker-credential-NAME, found through PATH, is started with the
 * argument "get", reads the server's address on its standard input and
 * writes {"ServerURL", "Username", "Secret"} as JSON on its standard output;
 * a helper without credentials for the server exits non-zero saying
 * "credentials not found".
 *
 * The process runs beside the event loop (libuv pipes and a timer), never
 * blocking it; it has CREDENTIAL_HELPER_TIMEOUT_MS to answer and at most
 * CREDENTIAL_HELPER_OUTPUT_MAX_BYTES to say it. Its output holds a secret:
 * nothing here logs it or puts it into a message, and the buffer is zeroed
 * once read.
 */

#include <uv.h>

#include "util.h"

/* How long a helper may take to answer, milliseconds. A keychain that asks
 * the user to unlock it waits for longer; a daemon cannot, so a pull goes
 * on without credentials then. */
#define CREDENTIAL_HELPER_TIMEOUT_MS (10 * MSEC_PER_SEC)
/* The most a helper may write to its standard output, bytes: its answer is
 * three short strings. */
#define CREDENTIAL_HELPER_OUTPUT_MAX_BYTES (64 * KiB)
/* The longest helper name (what follows "docker-credential-"), bytes. */
#define CREDENTIAL_HELPER_NAME_MAX 64U

typedef struct CredentialHelperRun CredentialHelperRun;

/*
 * The end of a run, on the loop: r == 0 with username and secret (borrowed:
 * zeroed and freed when this returns); -ENOENT when the helper has no
 * credentials for the server; another negative errno with why (a sentence
 * for the log, never anything the helper wrote) when it failed.
 */
typedef void (*CredentialHelperDoneFn)(int r, const char *username, const char *secret, const char *why,
                                       void *userdata);

/* A name a helper may have: letters, digits, '.', '_' and '-' (so never a
 * path), at most CREDENTIAL_HELPER_NAME_MAX bytes. */
bool credential_helper_name_is_valid(const char *name);

/* Starts docker-credential-<helper> get for server. done comes from the
 * loop, never from inside this call; a helper that cannot be started (not
 * on PATH: -ENOENT) fails here, with no callback. */
int credential_helper_run(uv_loop_t *loop, const char *helper, const char *server, CredentialHelperDoneFn done,
                          void *userdata, CredentialHelperRun **ret);

/* No callback any more: the process is killed, and the run's memory goes
 * once its handles have closed (run the loop). Returns NULL. */
CredentialHelperRun *credential_helper_cancel(CredentialHelperRun *run);
