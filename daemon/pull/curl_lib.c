/* SPDX-License-Identifier: Apache-2.0 */
#include "curl_lib.h"
#include "dlopen.h"
#include "pull-config.h"

#define CURL_LIB_DEFINE(name) typeof(name) *sym_##name;
CURL_LIB_FUNCTIONS(CURL_LIB_DEFINE)
#undef CURL_LIB_DEFINE

static const DlopenSymbol curl_symbols[] = {
#define CURL_LIB_SYMBOL(name) DLOPEN_SYMBOL(name),
        CURL_LIB_FUNCTIONS(CURL_LIB_SYMBOL)
#undef CURL_LIB_SYMBOL
};

static DlopenLibrary curl_library = DLOPEN_LIBRARY_INIT(LIBCURL_SONAME, curl_symbols);

int curl_lib_load(MsbError *err) {
        return dlopen_library_load(&curl_library, err);
}
