/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A staged EROFS image writer: new, stream file data, fill the tree, finish.
 *
 * Regular-file data is streamed block-aligned straight after the head
 * (superblock and device table) as it arrives, each file starting on a fresh
 * 4 KiB block and padded with zeros, never tail-packed, so that an fsmeta
 * image can point at it through chunk indexes; chunks of a file that are
 * all hole are left out (see erofs_writer_file_begin() below). Everything
 * else (inodes, xattrs, directories, symlink targets) is kept in the tree
 * and laid out by erofs_writer_finish() after the data:
 *
 *   [head: superblock, device table][file data][inodes + inline tails + chunk maps][directory blocks]
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

/* A floor for the image's filesystem: the writer looks at its free space
 * every WRITER_WRITEBACK_BYTES it writes and stops with -ENOSPC once fewer
 * than keep_free bytes are left, as if the disk were full there (a layer
 * that expands without end stops before it fills the disk). 0: none. */
void erofs_writer_set_keep_free(ErofsWriter *w, uint64_t keep_free);

/*
 * Regular-file data, streamed. A file is cut into chunks of
 * EROFS_BLKSZ << erofs_writer_chunk_bits(size) bytes. A chunk that some
 * piece of data falls in is written whole, in file order, right after the
 * chunk written before it (the rest of it zero-filled); a chunk that no piece
 * falls in (all hole) is not written at all. A file whose chunks all hold
 * data thus lies exactly as a flat file does (data, zeros for small holes,
 * padded to a block) and is stored flat; a file with a chunk that is all
 * hole becomes a chunk-based inode whose map says EROFS_NULL_ADDR there, so
 * a sparse file costs its data, not its size.
 */

/* The most chunks one file's map may have: a file's chunk size grows (by
 * powers of two from one block) until its chunk count is at most this, so a
 * map costs at most 16 KiB in a layer image (4-byte entries) and 32 KiB in
 * fsmeta (8-byte indexes) whatever the file's size. */
#define EROFS_WRITER_FILE_CHUNKS_MAX 4096U

/* log2 of the chunk size, in blocks, for a file of `size` bytes. */
unsigned erofs_writer_chunk_bits(uint64_t size);

/* Starts a regular file of `size` bytes (its apparent size: holes included). */
int erofs_writer_file_begin(ErofsWriter *w, uint64_t size);
/* Writes len bytes at offset; offsets only grow from one call to the next,
 * and a gap between two pieces is a hole. -ERANGE for a piece before the end
 * of the previous one or past the file's size. */
int erofs_writer_file_write(ErofsWriter *w, uint64_t offset, const void *buf, size_t len);
/* Ends the file: sets inode's size and either its first block (flat) or
 * its chunk map (chunks, chunk_bits). */
int erofs_writer_file_end(ErofsWriter *w, ErofsInode *inode);

typedef struct ErofsWriterOptions {
        uint8_t uuid[16];
        const ErofsWriterDevice *devices; /* n_devices given to erofs_writer_new() */
} ErofsWriterOptions;

/* Lays out and writes all metadata and the superblock; *ret_size is the
 * image size in bytes. The tree is frozen (erofs_tree_freeze()) from here
 * on. */
int erofs_writer_finish(ErofsWriter *w, const ErofsWriterOptions *opts, uint64_t *ret_size);

/* The nid an inode got, once erofs_writer_finish() has laid it out (for
 * tests that read the image back). */
uint64_t erofs_writer_nid(const ErofsWriter *w, const ErofsInode *inode);

/* CRC32C as EROFS uses it: seed ~0, no final inversion (erofs.rst, superblock checksum). */
uint32_t erofs_crc32c(uint32_t crc, const void *buf, size_t len);

/* A UUID that depends only on a content digest (sha256 of label and digest),
 * so that the same content always gives the same image. */
int erofs_writer_uuid_from_digest(const char *label, const char *digest, uint8_t ret[16]);
