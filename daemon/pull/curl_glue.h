/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The one place where libcurl meets the event loop.
 *
 * libcurl's multi interface tells us which sockets it wants watched and when
 * it next needs a timeout (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION);
 * we watch them with uv_poll handles and one uv_timer and report readiness
 * back through curl_multi_socket_action(). Transfers therefore run on the
 * loop thread without a thread per download and without ever blocking the
 * loop on the network. Finished transfers are handed back, one callback per
 * easy handle, after curl has let go of them.
 *
 * Memory: the glue owns its uv handles; curl_glue_free() starts closing them
 * and the glue's memory is released in the last close callback, so the loop
 * must run once more after the free (libuv's rule: never free a handle that
 * is not closed).
 */

#include "curl_lib.h"
#include <uv.h>

#include "util.h"

typedef struct CurlGlue CurlGlue;

/* Called on the loop thread when a transfer finished (successfully or not).
 * The easy handle is no longer part of the multi handle: the callee may
 * free it, or reconfigure it and add it again. */
typedef void (*CurlGlueDoneFn)(CurlGlue *g, CURL *easy, CURLcode result, void *userdata);

int curl_glue_new(uv_loop_t *loop, CurlGlue **ret);

/* Aborts every transfer still running (without calling their callbacks)
 * and starts closing the handles. Returns NULL. */
CurlGlue *curl_glue_free(CurlGlue *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(CurlGlue *, curl_glue_free);

/* Starts a transfer. The easy handle's CURLOPT_PRIVATE is used by the glue. */
int curl_glue_add(CurlGlue *g, CURL *easy, CurlGlueDoneFn done, void *userdata);

/* Stops a transfer without calling its callback. A no-op for an easy
 * handle the glue does not run. */
void curl_glue_remove(CurlGlue *g, CURL *easy);

/* Number of transfers running. */
size_t curl_glue_n_running(const CurlGlue *g);

/* Sets a multi-handle option shared by every transfer (for example
 * CURLMOPT_MAX_HOST_CONNECTIONS). */
int curl_glue_set_max_host_connections(CurlGlue *g, long n);
