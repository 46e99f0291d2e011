/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * libcurl, loaded when the first pull needs the network (base/dlopen.h says
 * why and who may call what). Only the pull module talks to curl, and only
 * through these pointers, sym_ and the function's name, after a successful
 * curl_lib_load(): a pull that finds it not loaded yet has a worker load it
 * (WORK_LOAD_CURL: the dlopen() of libcurl and its dependencies takes 10-20
 * ms, which the loop does not wait for) before its first transfer, and
 * fails with the load's error when it cannot be; every transfer's start
 * (registry_fetch_transfer_start(), where the registry's tests begin)
 * checks again.
 *
 * The calls lose curl's compile-time checks of sym_curl_easy_setopt()
 * arguments (curl/typecheck-gcc.h wraps the function's name, not a pointer):
 * each option's value has the type curl.h documents for it.
 */

#include <curl/curl.h>

#include "dlopen.h"

/* Every libcurl function the daemon calls. */
#define CURL_LIB_FUNCTIONS(X) \
        X(curl_easy_cleanup) \
        X(curl_easy_escape) \
        X(curl_easy_getinfo) \
        X(curl_easy_init) \
        X(curl_easy_setopt) \
        X(curl_easy_strerror) \
        X(curl_free) \
        X(curl_multi_add_handle) \
        X(curl_multi_assign) \
        X(curl_multi_cleanup) \
        X(curl_multi_info_read) \
        X(curl_multi_init) \
        X(curl_multi_remove_handle) \
        X(curl_multi_setopt) \
        X(curl_multi_socket_action) \
        X(curl_slist_append) \
        X(curl_slist_free_all) \
        X(curl_url) \
        X(curl_url_cleanup) \
        X(curl_url_get) \
        X(curl_url_set)

CURL_LIB_FUNCTIONS(DLOPEN_SYMBOL_DECLARE)

/* Loads libcurl once for the process; see dlopen_library_load(). */
int curl_lib_load(MsbError *err);
/* Without blocking: 1 loaded, 0 not yet, or the failed load's error. */
int curl_lib_loaded(MsbError *err);
