/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A small reader for the EROFS images this module writes (4 KiB blocks,
 * uncompressed; flat plain, flat inline and chunk-based inodes), used by the
 * fsmeta merge to read the layer images back and by the tests. The image is
 * mapped read-only; every offset taken from the image is bounds-checked, so
 * a damaged file gives -EUCLEAN, never a wild read.
 */

#include "util.h"

typedef struct ErofsImage ErofsImage;

typedef struct ErofsInodeView {
        uint64_t nid;
        uint32_t mode;
        uint32_t uid;
        uint32_t gid;
        uint32_t nlink;
        uint32_t rdev;            /* EROFS-encoded, for device nodes */
        int64_t mtime;
        uint32_t mtime_nsec;
        uint64_t size;
        uint8_t datalayout;       /* EROFS_INODE_* */
        uint32_t raw_blkaddr;     /* flat inodes: first data block */
        uint16_t chunk_format;    /* chunk-based inodes: EROFS_CHUNK_FORMAT_* */
        uint8_t chunk_bits;       /* chunk-based: log2 of the chunk size in blocks */
        uint64_t chunk_count;     /* chunk-based: entries of the chunk map */
        uint64_t chunk_off;       /* chunk-based: image offset of the chunk map, checked to be inside */
        uint64_t xattr_off;       /* image offset of the inline xattr area, 0 if none */
        uint32_t xattr_size;
        uint64_t tail_off;        /* image offset right after the inode and its xattrs */
} ErofsInodeView;

int erofs_image_open(const char *path, ErofsImage **ret);
ErofsImage *erofs_image_close(ErofsImage *img);
DEFINE_TRIVIAL_CLEANUP_FUNC(ErofsImage *, erofs_image_close);

uint64_t erofs_image_root_nid(const ErofsImage *img);
/* Size of the image in blocks, from the superblock. */
uint32_t erofs_image_blocks(const ErofsImage *img);

int erofs_image_inode(const ErofsImage *img, uint64_t nid, ErofsInodeView *ret);

/* Copies len bytes of an inode's data from offset: flat (plain or inline)
 * inodes, and chunk-based ones whose chunks are holes or on this image;
 * -EOPNOTSUPP for data on another device. */
int erofs_image_read(const ErofsImage *img, const ErofsInodeView *v, uint64_t offset, void *buf, size_t len);

/* Entry k of a chunk-based inode's map: the chunk's first block and its
 * device (0 = this image). A hole gives EROFS_NULL_ADDR on device 0. A chunk
 * on this image must lie inside it (-EUCLEAN otherwise). */
int erofs_image_chunk(const ErofsImage *img, const ErofsInodeView *v, uint64_t k, uint32_t *ret_blkaddr,
                      uint16_t *ret_device);

typedef int (*erofs_dirent_cb)(const char *name, size_t len, uint64_t nid, uint8_t type, void *userdata);
/* Calls cb for each entry of a directory, "." and ".." excluded; stops at a negative return. */
int erofs_image_readdir(const ErofsImage *img, const ErofsInodeView *v, erofs_dirent_cb cb, void *userdata);

typedef int (*erofs_xattr_cb)(uint8_t index, const char *suffix, size_t suffix_len, const void *value,
                              size_t value_len, void *userdata);
/* Calls cb for each xattr (shared ones first, then inline ones). */
int erofs_image_xattrs(const ErofsImage *img, const ErofsInodeView *v, erofs_xattr_cb cb, void *userdata);
