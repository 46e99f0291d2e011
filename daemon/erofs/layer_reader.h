/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Reads one OCI/Docker layer blob in a single pass: the compressed bytes are
 * hashed (and counted) as they are read, decompressed, the uncompressed tar
 * stream is hashed (its sha256 is the layer's diff_id, OCI image-spec
 * config.md "rootfs") and parsed by libarchive (tar formats only: ustar,
 * GNU, PAX). Entries come out with normalised paths. Nothing is extracted.
 */

#include "error.h"

typedef enum LayerCompression {
        LAYER_COMPRESSION_NONE,
        LAYER_COMPRESSION_GZIP,
        LAYER_COMPRESSION_ZSTD,
        _LAYER_COMPRESSION_INVALID = -EINVAL,
} LayerCompression;

/* What a media type says about compression; -EOPNOTSUPP for an unknown one.
 * NULL means "unknown, detect by magic" and gives LAYER_COMPRESSION_NONE
 * with *ret_any = true. */
int layer_media_type_compression(const char *media_type, LayerCompression *ret, bool *ret_any);

/* The most leading bytes of a blob that layer_compression_sniff() reads. */
#define LAYER_MAGIC_BYTES 4

/* The compression a blob's first bytes show: the gzip member header
 * (RFC 1952 "ID1 ID2"), the zstd frame magic (RFC 8878), else none. */
LayerCompression layer_compression_sniff(const void *buf, size_t len);

/* The OCI layer media type of a tar with that compression (OCI image-spec
 * layer.md), for a blob whose descriptor the daemon writes itself. */
const char *layer_compression_media_type(LayerCompression c);

/* Normalises a tar path: drops leading "/" and "./", empty and "." components
 * and a trailing "/". Writes the result (without a leading or trailing slash,
 * "" for the root) to out and its component count to *ret_depth.
 * -EINVAL for a ".." component, -ENAMETOOLONG for a component over 255 bytes,
 * -E2BIG when the result does not fit out_size. */
int layer_path_normalize(const char *in, char *out, size_t out_size, size_t *ret_len, size_t *ret_depth);

typedef struct LayerReaderLimits {
        uint64_t uncompressed_bytes;  /* the tar stream may not be longer */
} LayerReaderLimits;

typedef struct LayerEntry {
        char *path;                  /* normalised, "" = root */
        size_t path_len;
        size_t depth;
        const char *raw_path;        /* as in the archive, for error messages */
        uint32_t mode;               /* S_IF* | permissions incl. setuid/setgid/sticky */
        uint32_t uid;
        uint32_t gid;
        int64_t mtime;
        uint32_t mtime_nsec;
        uint64_t size;               /* regular file data length */
        uint32_t rdev_major;
        uint32_t rdev_minor;
        const char *symlink;         /* symlink target, as stored */
        const char *hardlink;        /* hard link target path, raw; NULL if none */
        struct archive_entry *ae;    /* for xattrs */
} LayerEntry;

typedef struct LayerReader LayerReader;

/* blob_fd positioned at 0; expected_blob_size UINT64_MAX = unknown.
 * Without want_blob_digest a compressed blob is not hashed (the caller
 * verified its bytes) and layer_reader_finish() reports its digest as "";
 * a plain tar's is always computed, being its diff_id. */
int layer_reader_new(int blob_fd, const char *media_type, uint64_t expected_blob_size, bool want_blob_digest,
                     const LayerReaderLimits *limits, LayerReader **ret, MsbError *err);
LayerReader *layer_reader_free(LayerReader *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(LayerReader *, layer_reader_free);

/* Next entry: 1 with *ret filled (valid until the next call), 0 at the end. */
int layer_reader_next(LayerReader *r, LayerEntry *ret, MsbError *err);

/* Next piece of the current entry's data: 1 with buf/len/offset, 0 at its end. */
int layer_reader_data(LayerReader *r, const void **ret_buf, size_t *ret_len, uint64_t *ret_offset, MsbError *err);

/* Iterates the current entry's xattrs (PAX SCHILY.xattr.* and LIBARCHIVE.xattr.*):
 * 1 with name/value, 0 at the end. */
int layer_reader_xattr_next(LayerReader *r, const char **ret_name, const void **ret_value, size_t *ret_len);

/* Reads and hashes whatever follows the end of the archive, checks the blob
 * size, and returns the digests ("sha256:<hex>") and byte counts. */
int layer_reader_finish(LayerReader *r, char ret_blob_digest[static 72], uint64_t *ret_blob_bytes,
                        char ret_diff_id[static 72], uint64_t *ret_tar_bytes, MsbError *err);

/* After a failure: reads the rest of the blob and returns its digest, so a
 * caller can tell a corrupt download (digest mismatch) from a bad layer. */
int layer_reader_blob_digest(LayerReader *r, char ret_blob_digest[static 72]);
