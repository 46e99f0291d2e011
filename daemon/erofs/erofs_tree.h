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
 * What an entry costs is what bounds a load's memory (a layer may hold
 * 1,000,000 entries, an image as many), so both records are kept small: an
 * inode is 64 bytes, allocated in slabs; an entry is its name with two
 * pointers, carved from an arena; a directory's entries are a list threaded
 * through them. What only the writer's layout needs (nids, link counts,
 * placement) lives in a side array the writer allocates when it finishes.
 *
 * Entries are found by a hash of (directory inode id, name), so that a
 * directory of 100,000 files costs no more per insert than one of ten.
 * Replacing or removing an entry never frees memory: the tree owns every
 * inode and name until erofs_tree_free(), which keeps pointers simple and the
 * total still bounded by the entries read.
 */

#include <assert.h>
#include <sys/types.h>

#include "util.h"

typedef struct ErofsInode ErofsInode;

typedef struct ErofsDentry ErofsDentry;
struct ErofsDentry {
        ErofsDentry *next;       /* the next entry of the same directory */
        ErofsInode *inode;       /* NULL once removed (a whiteout applied in a merge) */
        uint32_t dir_id;         /* id of the directory inode this entry belongs to */
        uint16_t name_len;
        char name[];             /* name_len bytes and a NUL */
};

struct ErofsInode {
        int64_t mtime;
        uint64_t size;           /* regular file size, symlink target length; a directory's
                                    is computed by the writer's layout */
        /* By type, which never changes once the inode is made. */
        union {
                /* Regular files with holes: the chunk map, one block address
                 * per chunk of EROFS_BLKSZ << chunk_bits bytes,
                 * EROFS_NULL_ADDR for a chunk that is all hole
                 * (erofs_chunk_count() entries); malloc'ed. NULL for a file
                 * stored flat. */
                uint32_t *chunks;
                char *symlink;           /* symlinks: the target (arena), size bytes */
                /* Directories: their entries, newest first until the
                 * writer's layout sorts them by name (and drops those
                 * removed); for (d = dir->children; d; d = d->next). */
                ErofsDentry *children;
        };
        /* xattrs in on-disk entry form (struct erofs_xattr_entry + name + value,
         * each padded to 4 bytes), sorted by (index, name); malloc'ed. */
        uint8_t *xattrs;

        uint32_t id;             /* 1, 2, ... in creation order; keys the entry hash and
                                    the writer's side array */
        uint32_t mode;           /* S_IF* type and permission bits */
        uint32_t uid;
        uint32_t gid;
        uint32_t mtime_nsec;
        union {
                uint32_t rdev;           /* devices: EROFS-encoded number (erofs_encode_dev) */
                uint32_t blkaddr;        /* regular files stored flat: first data block */
        };
        uint32_t xattrs_len;
        uint16_t device_id;      /* 0 = the image itself; fsmeta: 1 + layer index */
        uint8_t chunk_bits;      /* with chunks: log2 of the chunk size in blocks */
};
static_assert(sizeof(ErofsInode) == 64, "an inode is one cache line: a million of them are 64 MB");

typedef struct ErofsTree ErofsTree;

int erofs_tree_new(ErofsTree **ret);
ErofsTree *erofs_tree_free(ErofsTree *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(ErofsTree *, erofs_tree_free);

/* The root directory; it always exists (mode 0755, root-owned, mtime 0 until set). */
ErofsInode *erofs_tree_root(ErofsTree *t);

/* Number of inodes ever created (live or replaced); ids run from 1 to it. */
size_t erofs_tree_inode_count(ErofsTree *t);

/* Drops the index of names once the tree is complete (the writer's layout
 * walks directories, never looks a name up), freeing its memory before the
 * layout needs its own. Lookups and links are refused after it. */
void erofs_tree_freeze(ErofsTree *t);

/* A new inode owned by the tree with the given mode and everything else
 * zero; -E2BIG once ids would pass 32 bits. */
int erofs_tree_inode_new(ErofsTree *t, uint32_t mode, ErofsInode **ret);

/* Copies a string into the tree's arena (NUL-terminated). */
int erofs_tree_strdup(ErofsTree *t, const char *s, size_t len, char **ret);

/* The live entry `name` of directory `dir`, or NULL. */
ErofsDentry *erofs_tree_lookup(ErofsTree *t, const ErofsInode *dir, const char *name, size_t len);

/* Points entry `name` of `dir` at `inode`, creating or replacing it; -EBUSY
 * once frozen. */
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
