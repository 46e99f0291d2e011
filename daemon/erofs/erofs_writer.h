/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A staged EROFS image writer: new, stream file data, fill the tree, finish.
 *
 * Regular-file data is streamed block-aligned straight after the head
 * (superblock and device table) as it arrives, each file starting on a fresh
 * 4 KiB block and padded with zeros, never tail-packed, so that an fsmeta
 * image can point at it through chunk indexes. Everything else (inodes,
 * xattrs, directories, symlink targets) is kept in the tree and laid out by
 * erofs_writer_finish() after the data:
 *
 *   [head: superblock, device table][file data][inodes + inline tails][directory blocks]
 *
 * Nothing in the output depends on the clock or on memory addresses, so the
 * same tree and data always give the same bytes.
 */

#include "erofs_tree.h"

/* One extra device of an fsmeta image: a layer image it points into. */
typedef struct ErofsWriterDevice {
        uint32_t blocks;          /* size of the layer image in blocks */
        char tag[64];             /* identifier stored in the slot (not NUL-terminated if 64 long) */
} ErofsWriterDevice;

typedef struct ErofsWriter ErofsWriter;

/* Starts an image on fd (an empty regular file) with room for n_devices slots. */
int erofs_writer_new(int fd, size_t n_devices, ErofsWriter **ret);
ErofsWriter *erofs_writer_free(ErofsWriter *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(ErofsWriter *, erofs_writer_free);

/* The tree the caller fills. */
ErofsTree *erofs_writer_tree(ErofsWriter *w);

/* Starts a file's data on a fresh block; *ret_blkaddr is its first block. */
int erofs_writer_data_begin(ErofsWriter *w, uint32_t *ret_blkaddr);
/* Appends bytes of the current file. */
int erofs_writer_data_append(ErofsWriter *w, const void *buf, size_t len);
/* Appends len zero bytes (a hole of a sparse file). */
int erofs_writer_data_zero(ErofsWriter *w, uint64_t len);
/* Ends the current file, padding to the block size; returns its byte length. */
int erofs_writer_data_end(ErofsWriter *w, uint64_t *ret_len);

typedef struct ErofsWriterOptions {
        uint8_t uuid[16];
        const ErofsWriterDevice *devices; /* n_devices given to erofs_writer_new() */
} ErofsWriterOptions;

/* Lays out and writes all metadata and the superblock; *ret_size is the image size in bytes. */
int erofs_writer_finish(ErofsWriter *w, const ErofsWriterOptions *opts, uint64_t *ret_size);

/* CRC32C as EROFS uses it: seed ~0, no final inversion (erofs.rst, superblock checksum). */
uint32_t erofs_crc32c(uint32_t crc, const void *buf, size_t len);

/* A UUID that depends only on a content digest (sha256 of label and digest),
 * so that the same content always gives the same image. */
int erofs_writer_uuid_from_digest(const char *label, const char *digest, uint8_t ret[16]);
