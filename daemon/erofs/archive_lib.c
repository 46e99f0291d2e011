/* SPDX-License-Identifier: Apache-2.0 */
#include "archive_lib.h"
#include "dlopen.h"
#include "erofs-config.h"

#define ARCHIVE_LIB_DEFINE(name) typeof(name) *sym_##name;
ARCHIVE_LIB_FUNCTIONS(ARCHIVE_LIB_DEFINE)
#undef ARCHIVE_LIB_DEFINE

static const DlopenSymbol archive_symbols[] = {
#define ARCHIVE_LIB_SYMBOL(name) DLOPEN_SYMBOL(name),
        ARCHIVE_LIB_FUNCTIONS(ARCHIVE_LIB_SYMBOL)
#undef ARCHIVE_LIB_SYMBOL
};

static DlopenLibrary archive_library = DLOPEN_LIBRARY_INIT(LIBARCHIVE_SONAME, archive_symbols);

int archive_lib_load(MsbError *err) {
        return dlopen_library_load(&archive_library, err);
}
