/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The in-memory tree that an EROFS image is built from: directory entries
 * (names) pointing at inodes (metadata), so that hard links are simply two
 * entries sharing one inode. Both the layer converter (from a tar stream) and
 * the fsmeta merge (from layer images) fill one, then erofs_writer lays it
 * out. Only metadata lives here; file data is already on disk, referenced by
 * block address, so memory is bounded by the number of entries, never by
 * file sizes.
 *
 * Entries are found by a hash of (directory inode id, name), so that a
 * directory of 100,000 files costs no more per insert than one of ten.
 * Replacing or removing an entry never frees memory: the tree owns every
 * inode and name until erofs_tree_free(), which keeps pointers simple and the
 * total still bounded by the entries read.
 */

#include <sys/types.h>

#include "util.h"

typedef struct ErofsInode ErofsInode;

typedef struct ErofsDentry {
        const char *name;        /* owned by the tree's arena, NUL-terminated */
        uint16_t name_len;
        ErofsInode *inode;       /* NULL once removed (a whiteout applied in a merge) */
        uint64_t dir_id;         /* id of the directory inode this entry belongs to */
} ErofsDentry;

struct ErofsInode {
        /* Ordered by field size so that a tree of a million entries wastes
         * no padding. */
        uint64_t id;             /* unique within the tree; keys the entry hash */
        int64_t mtime;
        uint64_t size;           /* regular file size, symlink target length */
        char *symlink;           /* symlink target (arena), size bytes */

        /* xattrs in on-disk entry form (struct erofs_xattr_entry + name + value,
         * each padded to 4 bytes), sorted by (index, name); malloc'ed. */
        uint8_t *xattrs;

        /* Regular files with holes: the chunk map, one block address per
         * chunk of EROFS_BLKSZ << chunk_bits bytes, EROFS_NULL_ADDR for a
         * chunk that is all hole (erofs_chunk_count() entries); malloc'ed.
         * NULL for a file stored flat. */
        uint32_t *chunks;

        /* Directories: their entries, in insertion order (sorted at layout). */
        ErofsDentry **children;
        size_t n_children;
        size_t children_alloc;

        uint32_t mode;           /* S_IF* type and permission bits */
        uint32_t uid;
        uint32_t gid;
        uint32_t mtime_nsec;
        uint32_t rdev;           /* EROFS-encoded device number (erofs_encode_dev) */
        uint32_t blkaddr;        /* regular files: first data block */
        uint32_t xattrs_len;
        uint16_t device_id;      /* 0 = the image itself; fsmeta: 1 + layer index */
        uint8_t chunk_bits;      /* with chunks: log2 of the chunk size in blocks */

        /* Filled by the writer's layout pass. */
        uint8_t layout_flags;
        uint8_t layout_n_shared;
        uint64_t nid;
        ErofsInode *layout_parent;
        uint32_t *layout_shared;  /* shared xattr ids */
        uint32_t nlink;
        uint32_t layout_meta_size;
        uint32_t layout_tail;
        uint32_t layout_full_blocks;
        uint32_t layout_data_blkaddr;
        uint32_t layout_ino;
        uint32_t layout_xattr_inline; /* bytes of xattr entries kept inline */
        bool visited;
};

typedef struct ErofsTree ErofsTree;

int erofs_tree_new(ErofsTree **ret);
ErofsTree *erofs_tree_free(ErofsTree *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(ErofsTree *, erofs_tree_free);

/* The root directory; it always exists (mode 0755, root-owned, mtime 0 until set). */
ErofsInode *erofs_tree_root(ErofsTree *t);

/* Number of inodes ever created (live or replaced). */
size_t erofs_tree_inode_count(ErofsTree *t);

/* A new inode owned by the tree with the given mode and everything else zero. */
int erofs_tree_inode_new(ErofsTree *t, uint32_t mode, ErofsInode **ret);

/* Copies a string into the tree's arena (NUL-terminated). */
int erofs_tree_strdup(ErofsTree *t, const char *s, size_t len, char **ret);

/* The live entry `name` of directory `dir`, or NULL. */
ErofsDentry *erofs_tree_lookup(ErofsTree *t, const ErofsInode *dir, const char *name, size_t len);

/* Points entry `name` of `dir` at `inode`, creating or replacing it. */
int erofs_tree_link(ErofsTree *t, ErofsInode *dir, const char *name, size_t len, ErofsInode *inode);

/* Removes entry `name` of `dir` if present. */
void erofs_tree_unlink(ErofsTree *t, ErofsInode *dir, const char *name, size_t len);

/* Sets (adds or replaces) one xattr given by its full name ("user.foo").
 * -EOPNOTSUPP for a namespace EROFS cannot store, -E2BIG for a name or value
 * too long for an entry. */
int erofs_inode_set_xattr(ErofsInode *inode, const char *name, const void *value, size_t value_len);

/* Removes an xattr by its full name, if present. */
void erofs_inode_remove_xattr(ErofsInode *inode, const char *name);

/* Finds an xattr; returns a pointer into the inode's storage. */
bool erofs_inode_get_xattr(const ErofsInode *inode, const char *name, const void **ret_value, size_t *ret_len);

/* Copies all xattrs of `from` onto `to`, replacing those of `to`. */
int erofs_inode_copy_xattrs(ErofsInode *to, const ErofsInode *from);

/* Maps a full xattr name to its EROFS name index and the suffix after the
 * index's prefix; false for names EROFS has no index for. */
bool erofs_xattr_name_split(const char *name, uint8_t *ret_index, const char **ret_suffix);
/* The prefix string of an index ("user.", ...), or NULL. */
const char *erofs_xattr_index_prefix(uint8_t index);
