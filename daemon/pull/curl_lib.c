/* SPDX-License-Identifier: Apache-2.0 */
#include "curl_lib.h"
#include "dlopen.h"
#include "pull-config.h"

DLOPEN_LIBRARY_DEFINE(curl_lib, LIBCURL_SONAME, CURL_LIB_FUNCTIONS)
