/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the writer's files share: the writer object and the layout's side
 * array. erofs_writer.c streams file data and writes the head;
 * erofs_writer_layout.c lays out and writes the metadata at finish.
 */

#include "erofs_fs.h"
#include "erofs_writer.h"
#include "hashtab.h"

/* File data is gathered into writes of this size. */
#define WRITER_BUFFER_BYTES (1024 * 1024)
/* Each time this much more of the data area is written, the kernel is told
 * to start writing it back (sync_file_range(SYNC_FILE_RANGE_WRITE)): whoever
 * makes the image durable (the store fsyncs every layer before publishing
 * it) then waits only for the tail, not for the whole image, which would
 * otherwise all be dirty in the page cache at the fsync. */
#define WRITER_WRITEBACK_BYTES (8 * 1024 * 1024)

/* An xattr entry found on at least this many inodes is stored once, in the
 * shared xattr area, and referenced by id (erofs.rst "Extended attributes"). */
#define SHARED_XATTR_MIN_USERS 2
/* Larger entries stay inline: the shared area never lets an entry cross a
 * block, and big values are rarely repeated. */
#define SHARED_XATTR_MAX_BYTES 512
/* h_shared_count is 8 bits. */
#define SHARED_XATTR_MAX_PER_INODE 255

/* Metadata is written through a window of this size, block by block as
 * the layout places inodes in order, never held whole: at a million inodes
 * it would be tens of MB. One inode with its xattrs and chunk map is far
 * smaller (at most about 300 KiB). */
#define META_WINDOW_BYTES (1024 * 1024)

/* InodeLayout.flags bits. */
#define LAYOUT_EXTENDED 0x01
#define LAYOUT_INLINE 0x02
#define LAYOUT_CHUNKED 0x04
#define LAYOUT_VISITED 0x08

/*
 * What the layout decides for one inode. The tree's inodes carry only what
 * an image says; this side array, indexed by inode id, exists from
 * erofs_writer_finish() on, so that the tree's cost while it is filled is
 * not raised by fields only the layout uses.
 */
typedef struct InodeLayout {
        uint32_t nid;            /* place in the metadata area, in EROFS_ISLOTSIZE units */
        uint32_t parent;         /* directories: id of the directory holding it, for ".." */
        uint32_t nlink;
        uint32_t data_blkaddr;   /* directories, symlinks: first block of content outside the inode */
        uint32_t xattr_inline;   /* bytes of xattr entries kept inline */
        uint32_t shared_at;      /* its shared xattr ids: shared_ids[shared_at], n_shared of them */
        uint8_t flags;           /* LAYOUT_* */
        uint8_t n_shared;
} InodeLayout;
static_assert(sizeof(InodeLayout) == 28, "the layout of an inode is 28 bytes");

struct ErofsWriter {
        int fd;
        size_t n_devices;
        uint32_t head_blocks;
        ErofsTree *tree;

        uint64_t pos;            /* file offset of the next data byte */
        uint8_t *buf;
        size_t buf_len;
        uint64_t buf_off;        /* file offset of buf[0] */
        uint64_t writeback_from; /* data before this offset was handed to writeback */
        bool writeback_off;      /* the fd refused sync_file_range(): no more hints */
        uint64_t keep_free;      /* the floor (erofs_writer_set_keep_free); 0: none */

        /* The regular file being written (erofs_writer_file_*). */
        bool in_file;
        bool chunk_open;         /* chunk `chunk` is being written */
        uint8_t chunk_bits;
        uint64_t file_size;
        uint64_t file_next;      /* offset in the file up to which it is written */
        uint64_t n_chunks;
        uint64_t chunk;
        uint32_t *chunk_map;     /* EROFS_WRITER_FILE_CHUNKS_MAX entries */

        bool has_chunked;        /* a chunk-based inode exists (layout) */

        /* Shared xattrs: every distinct entry (SharedXattr) by content,
         * hashed with a random key since xattrs come from the layer. */
        HashTab xattrs;
        uint64_t xattr_key;
        uint8_t *xattr_area;
        uint64_t xattr_area_len;
        uint32_t xattr_blkaddr;

        /* Layout results. */
        InodeLayout *layout;     /* by inode id, erofs_tree_inode_count() + 1 entries */
        uint32_t *shared_ids;    /* the InodeLayout.shared_at slices */
        ErofsInode **order;      /* live inodes in nid order */
        size_t n_order;
        uint8_t *meta;           /* META_WINDOW_BYTES of the metadata area ... */
        uint64_t meta_base;      /* ... from this offset in it */
        int64_t build_time;
        uint32_t build_time_nsec;
        uint32_t meta_blkaddr;
        uint64_t meta_bytes;
        uint32_t total_blocks;
};

typedef struct SharedXattr {
        const uint8_t *entry;    /* on-disk form, in some inode's xattrs */
        uint32_t size;
        uint32_t users;
        uint32_t id;             /* offset in the shared area / 4 */
        bool shared;
} SharedXattr;

/* erofs_writer.c */
/* Writes the gathered data out. */
int writer_flush(ErofsWriter *w);
/* Appends bytes at the data position, through the gather buffer. */
int writer_data_append(ErofsWriter *w, const void *buf, size_t len);

/* erofs_writer_layout.c: the passes of erofs_writer_finish(), in order. */
InodeLayout *writer_layout_of(const ErofsWriter *w, const ErofsInode *i);
int writer_layout_collect(ErofsWriter *w);
void writer_layout_build_time(ErofsWriter *w);
int writer_layout_xattrs(ErofsWriter *w);
int writer_layout_place(ErofsWriter *w);
int writer_layout_blocks(ErofsWriter *w);
int writer_write_inodes(ErofsWriter *w);
