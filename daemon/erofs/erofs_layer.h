/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the daemon calls to turn layers into a bootable root filesystem
 * (the top README, "The store"; daemon/erofs/README.md): one EROFS image per layer, one merged
 * metadata-only fsmeta image per manifest, and a VMDK descriptor that
 * concatenates them. All three are blocking, use no globals and may run on
 * worker threads concurrently.
 */

#include "error.h"

typedef struct ErofsLayerInfo {
        char diff_id[7 + 64 + 1];     /* "sha256:<hex>" of the uncompressed tar */
        uint64_t uncompressed_bytes;
        uint64_t erofs_bytes;          /* size of the written EROFS file */
        uint64_t entries;              /* as the layer_entries limit counts them */
} ErofsLayerInfo;

/* The limits a layer is held to; erofs_layer_limits_default() gives the
 * protocol's (proto/openrpc.json "x-limits"). */
typedef struct ErofsLayerLimits {
        uint64_t entries;             /* entries per layer: tar entries and the directories
                                         they imply without naming them */
        uint64_t image_entries;       /* the same for all the layers of one image together */
        uint64_t *image_entries_used; /* the count of the image's conversions so far, shared
                                         (atomically) by all of them; NULL: this layer alone */
        uint64_t path_bytes;          /* bytes of a normalised path, and of a symlink target */
        uint64_t path_depth;          /* components of a path */
        uint64_t uncompressed_bytes;  /* bytes of the tar stream; also the sum of the regular
                                         files' apparent sizes (holes included) */
        uint64_t keep_free_bytes;     /* the output's filesystem keeps this many bytes free:
                                         the conversion stops with -ENOSPC (a store-error,
                                         "no space") below it; 0: no floor */
} ErofsLayerLimits;

ErofsLayerLimits erofs_layer_limits_default(void);

/* A directory that a layer's tar never named, made only because entries
 * below it needed a parent, carries this xattr in the layer image: the
 * fsmeta merge then keeps the metadata the layers below gave it, as tar
 * extraction onto an existing tree would. fsmeta itself never carries it. */
#define EROFS_IMPLICIT_DIR_XATTR "trusted.msb-imaged.implicit-dir"

/*
 * Converts one layer blob (fd positioned at 0) of OCI/Docker layer media type
 * (tar, tar+gzip, tar+zstd; checked by magic too) into an EROFS image written
 * to out_fd (an empty regular file; the caller fsyncs and renames).
 *
 * expected_blob_digest (may be NULL) and expected_blob_size (UINT64_MAX =
 * unknown) are checked on the compressed bytes in the same single pass:
 * mismatch -> PROTO_ERROR_DIGEST_MISMATCH with data "expected"/"actual".
 * Without an expected_blob_digest a compressed blob is not hashed at all
 * (a caller that verified the bytes itself). If
 * expected_diff_id is non-NULL the uncompressed stream's sha256 must equal
 * it, else the same error. Bad entries -> PROTO_ERROR_LAYER_REJECTED with
 * data "entry"; limits -> PROTO_ERROR_LIMIT_EXCEEDED with data "limit" and
 * "max"; an unknown media type -> PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE. On
 * failure out_fd holds garbage the caller must delete.
 *
 * The UUID is derived from the diff_id; the output is byte-identical for the
 * same input.
 */
int erofs_layer_convert(int blob_fd, const char *media_type,
                        const char *expected_blob_digest, uint64_t expected_blob_size,
                        const char *expected_diff_id,
                        int out_fd, ErofsLayerInfo *ret, MsbError *err);

/* The same with explicit limits: tests use small ones, and an ingest
 * shares one image_entries_used among its image's layers. */
int erofs_layer_convert_with_limits(int blob_fd, const char *media_type,
                                    const char *expected_blob_digest, uint64_t expected_blob_size,
                                    const char *expected_diff_id, const ErofsLayerLimits *limits,
                                    int out_fd, ErofsLayerInfo *ret, MsbError *err);

/* Builds the fsmeta image for a manifest from its layer images (bottom to
 * top), writing to out_fd; UUID derived from manifest_digest. The names the
 * layers hold together may not pass the image_entries limit
 * (PROTO_ERROR_LIMIT_EXCEEDED), which bounds the merged tree's memory. */
int erofs_fsmeta_build(const char *const *layer_paths, size_t n_layers,
                       const char *manifest_digest, int out_fd,
                       uint64_t *ret_size, MsbError *err);

/* The same with an explicit bound on the names merged (tests use small ones). */
int erofs_fsmeta_build_with_limits(const char *const *layer_paths, size_t n_layers,
                                   const char *manifest_digest, uint64_t max_entries, int out_fd,
                                   uint64_t *ret_size, MsbError *err);
