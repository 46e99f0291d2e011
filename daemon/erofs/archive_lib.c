/* SPDX-License-Identifier: Apache-2.0 */
#include "archive_lib.h"
#include "dlopen.h"
#include "erofs-config.h"

DLOPEN_LIBRARY_DEFINE(archive_lib, LIBARCHIVE_SONAME, ARCHIVE_LIB_FUNCTIONS)
