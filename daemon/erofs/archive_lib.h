/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * libarchive, loaded at the first layer or archive read (base/dlopen.h says
 * why and who may call what). Code of the daemon calls libarchive only
 * through these pointers, sym_ and the function's name, after a successful
 * archive_lib_load(): layer_reader.c (layers) and, above this layer,
 * image/load_source.c (archives given to image.load).
 */

#include <archive.h>
#include <archive_entry.h>

#include "dlopen.h"

/* Every libarchive function the daemon calls. */
#define ARCHIVE_LIB_FUNCTIONS(X) \
        X(archive_entry_filetype) \
        X(archive_entry_gid) \
        X(archive_entry_hardlink) \
        X(archive_entry_mode) \
        X(archive_entry_mtime) \
        X(archive_entry_mtime_is_set) \
        X(archive_entry_mtime_nsec) \
        X(archive_entry_pathname) \
        X(archive_entry_rdevmajor) \
        X(archive_entry_rdevminor) \
        X(archive_entry_size) \
        X(archive_entry_size_is_set) \
        X(archive_entry_symlink) \
        X(archive_entry_uid) \
        X(archive_entry_xattr_next) \
        X(archive_entry_xattr_reset) \
        X(archive_errno) \
        X(archive_error_string) \
        X(archive_read_data) \
        X(archive_read_data_block) \
        X(archive_read_free) \
        X(archive_read_new) \
        X(archive_read_next_header) \
        X(archive_read_open) \
        X(archive_read_support_filter_all) \
        X(archive_read_support_filter_gzip) \
        X(archive_read_support_filter_zstd) \
        X(archive_read_support_format_empty) \
        X(archive_read_support_format_gnutar) \
        X(archive_read_support_format_raw) \
        X(archive_read_support_format_tar) \
        X(archive_set_error)

ARCHIVE_LIB_FUNCTIONS(DLOPEN_SYMBOL_DECLARE)

/* Loads libarchive once for the process; see dlopen_library_load(). */
int archive_lib_load(MsbError *err);
int archive_lib_loaded(MsbError *err);
