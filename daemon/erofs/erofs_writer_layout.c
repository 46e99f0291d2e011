/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/stat.h>

#include "erofs_writer_internal.h"

/* The layout at finish: inodes in nid order, directories, shared xattrs,
 * blocks, and the metadata written through a window (erofs.rst "On-disk
 * details"). */

InodeLayout *writer_layout_of(const ErofsWriter *w, const ErofsInode *i) {
        return &w->layout[i->id];
}

uint64_t erofs_writer_nid(const ErofsWriter *w, const ErofsInode *inode) {
        return w->layout ? writer_layout_of(w, inode)->nid : 0;
}

/* A directory item in EROFS order: bytewise, a shorter name before its extensions. */
typedef struct DirItem {
        const char *name;
        uint16_t len;
        uint8_t type;
        uint64_t nid;
} DirItem;

static int name_cmp(const char *a, size_t la, const char *b, size_t lb) {
        int c = memcmp(a, b, la < lb ? la : lb);
        if (c != 0)
                return c;
        return la < lb ? -1 : la > lb ? 1 : 0;
}

static int dentry_ptr_cmp(const void *a, const void *b) {
        const ErofsDentry *x = *(ErofsDentry *const *) a, *y = *(ErofsDentry *const *) b;
        return name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static uint8_t file_type_of(uint32_t mode) {
        switch (mode & S_IFMT) {
        case S_IFREG:
                return EROFS_FT_REG_FILE;
        case S_IFDIR:
                return EROFS_FT_DIR;
        case S_IFCHR:
                return EROFS_FT_CHRDEV;
        case S_IFBLK:
                return EROFS_FT_BLKDEV;
        case S_IFIFO:
                return EROFS_FT_FIFO;
        case S_IFSOCK:
                return EROFS_FT_SOCK;
        case S_IFLNK:
                return EROFS_FT_SYMLINK;
        default:
                return EROFS_FT_UNKNOWN;
        }
}

/* Drops removed entries and sorts the rest by name, relinking the list, so
 * every later pass sees the final, ordered directory. *ret gets them as an
 * array (the caller frees it), *ret_n their count. */
static int dir_compact_sort(ErofsInode *dir, ErofsDentry ***ret, size_t *ret_n) {
        _cleanup_free_ ErofsDentry **a = NULL;
        size_t n = 0, alloc = 0;

        for (ErofsDentry *d = dir->children; d; d = d->next) {
                if (!d->inode)
                        continue;
                if (n == alloc) {
                        alloc = alloc ? alloc * 2 : 16;
                        ErofsDentry **g = realloc(a, alloc * sizeof(*a));
                        if (!g)
                                return -ENOMEM;
                        a = g;
                }
                a[n++] = d;
        }
        /* The list is newest first: sort what came in insertion order. */
        for (size_t k = 0; k < n / 2; k++) {
                ErofsDentry *x = a[k];
                a[k] = a[n - 1 - k];
                a[n - 1 - k] = x;
        }
        if (n > 0)
                qsort(a, n, sizeof(*a), dentry_ptr_cmp);
        dir->children = NULL;
        for (size_t k = n; k > 0; k--) {
                a[k - 1]->next = dir->children;
                dir->children = a[k - 1];
        }
        *ret = TAKE_PTR(a);
        *ret_n = n;
        return 0;
}

/* Sorts a directory and pushes its children not seen yet, counting links.
 * Pushed in reverse so that the first name is visited first. */
static int layout_push_children(ErofsWriter *w, ErofsInode *i, ErofsInode **stack, size_t *depth, size_t max) {
        _cleanup_free_ ErofsDentry **children = NULL;
        size_t n;
        int r;

        r = dir_compact_sort(i, &children, &n);
        if (r < 0)
                return r;
        for (size_t k = n; k > 0; k--) {
                ErofsInode *c = children[k - 1]->inode;
                InodeLayout *cl = writer_layout_of(w, c);

                if (S_ISDIR(c->mode)) {
                        /* A directory has one name; a second is a cycle. */
                        if (cl->flags & LAYOUT_VISITED)
                                return -ELOOP;
                        writer_layout_of(w, i)->nlink++;
                        cl->nlink = 2;
                } else {
                        cl->nlink++;
                        if (cl->flags & LAYOUT_VISITED)
                                continue;
                }
                cl->flags |= LAYOUT_VISITED;
                cl->parent = i->id;
                if (*depth >= max)
                        return -EFAULT;
                stack[(*depth)++] = c;
        }
        return 0;
}

/* Visits every live inode once, depth first in name order, so the layout is
 * a pure function of the tree's content. */
int writer_layout_collect(ErofsWriter *w) {
        ErofsInode *root = erofs_tree_root(w->tree);
        size_t n_all = erofs_tree_inode_count(w->tree);
        _cleanup_free_ ErofsInode **stack = NULL;
        size_t depth = 0;
        int r;

        w->layout = calloc(n_all + 1, sizeof(*w->layout));
        w->order = calloc(n_all, sizeof(*w->order));
        stack = calloc(n_all, sizeof(*stack));
        if (!w->layout || !w->order || !stack)
                return -ENOMEM;

        *writer_layout_of(w, root) = (InodeLayout) { .parent = root->id, .nlink = 2, .flags = LAYOUT_VISITED };
        stack[depth++] = root;
        while (depth > 0) {
                ErofsInode *i = stack[--depth];

                w->order[w->n_order++] = i;
                if (!S_ISDIR(i->mode))
                        continue;
                r = layout_push_children(w, i, stack, &depth, n_all);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The most common mtime becomes the superblock's build time, which every
 * compact inode inherits; a majority vote finds it when there is one and
 * otherwise still picks deterministically. */
void writer_layout_build_time(ErofsWriter *w) {
        int64_t cand = 0;
        uint32_t cand_ns = 0;
        size_t count = 0;

        for (size_t k = 0; k < w->n_order; k++) {
                const ErofsInode *i = w->order[k];
                if (count == 0) {
                        cand = i->mtime;
                        cand_ns = i->mtime_nsec;
                        count = 1;
                } else if (i->mtime == cand && i->mtime_nsec == cand_ns)
                        count++;
                else
                        count--;
        }
        w->build_time = cand;
        w->build_time_nsec = cand_ns;
}

/*
 * A directory's items in EROFS order, "." and ".." merged into its sorted
 * entries as they fall, without an array: a directory of a million names
 * costs no more to write than one of ten. Copy the struct to look ahead.
 */
typedef struct DirIter {
        const ErofsWriter *w;
        const ErofsDentry *next;  /* the next entry */
        uint8_t dots;             /* how many of ".", ".." have come */
        uint64_t self_nid;
        uint64_t parent_nid;
} DirIter;

static DirIter dir_iter(const ErofsWriter *w, const ErofsInode *dir) {
        return (DirIter) {
                .w = w,
                .next = dir->children,
                .self_nid = writer_layout_of(w, dir)->nid,
                .parent_nid = w->layout[writer_layout_of(w, dir)->parent].nid,
        };
}

static bool dir_iter_next(DirIter *it, DirItem *ret) {
        if (it->dots < 2) {
                const char *dot = it->dots == 0 ? "." : "..";
                size_t len = it->dots + 1u;

                if (!it->next || name_cmp(dot, len, it->next->name, it->next->name_len) < 0) {
                        *ret = (DirItem) { dot, (uint16_t) len, EROFS_FT_DIR, it->dots == 0 ? it->self_nid : it->parent_nid };
                        it->dots++;
                        return true;
                }
        }
        if (!it->next)
                return false;
        *ret = (DirItem) { it->next->name, it->next->name_len, file_type_of(it->next->inode->mode),
                           writer_layout_of(it->w, it->next->inode)->nid };
        it->next = it->next->next;
        return true;
}

/* Packs the next block of a directory: dirents, then names, an entry never
 * straddling blocks (erofs.rst, directories). With out == NULL only sizes
 * it. Returns the bytes used; *ret_more tells whether items remain. */
static size_t dir_block(DirIter *it, uint8_t *out, bool *ret_more) {
        DirIter start = *it, peek = *it;
        size_t used = 0, count = 0, nameoff;
        DirItem item;

        while (dir_iter_next(&peek, &item) && used + sizeof(struct erofs_dirent) + item.len <= EROFS_BLKSZ) {
                used += sizeof(struct erofs_dirent) + item.len;
                count++;
                *it = peek;
        }
        peek = *it;
        *ret_more = dir_iter_next(&peek, &item);
        if (!out)
                return used;

        nameoff = count * sizeof(struct erofs_dirent);
        for (size_t j = 0; j < count && dir_iter_next(&start, &item); j++) {
                uint8_t *d = out + j * sizeof(struct erofs_dirent);
                erofs_put_le64(d + EROFS_OFF(struct erofs_dirent, nid), item.nid);
                erofs_put_le16(d + EROFS_OFF(struct erofs_dirent, nameoff), (uint16_t) nameoff);
                d[EROFS_OFF(struct erofs_dirent, file_type)] = item.type;
                d[EROFS_OFF(struct erofs_dirent, reserved)] = 0;
                memcpy(out + nameoff, item.name, item.len);
                nameoff += item.len;
        }
        return used;
}

/* A directory's size: whole blocks, then what the last one uses. */
static uint64_t dir_size(const ErofsWriter *w, const ErofsInode *dir) {
        DirIter it = dir_iter(w, dir);
        uint64_t size = 0;
        bool more = true;

        while (more) {
                size_t used = dir_block(&it, NULL, &more);
                size += more ? EROFS_BLKSZ : used;
        }
        return size;
}

static uint32_t chunk_bits_for(uint64_t size) {
        uint64_t blocks = (size + EROFS_BLKSZ - 1) / EROFS_BLKSZ;
        uint32_t bits = 0;

        while ((1ULL << bits) < blocks)
                bits++;
        return bits;
}

/* A regular file whose data is described by a chunk map: one with holes
 * (its own map), or any non-empty file of fsmeta (on a layer's device). */
static bool inode_is_chunked(const ErofsInode *i) {
        return S_ISREG(i->mode) && (i->chunks || (i->device_id > 0 && i->size > 0));
}

/* Entries of the map: a file of fsmeta without holes has one chunk
 * covering it whole. */
static uint64_t chunk_map_count(const ErofsInode *i) {
        return i->chunks ? erofs_chunk_count(i->size, i->chunk_bits) : 1;
}

/* A layer image's maps are 4-byte block addresses on the image itself;
 * fsmeta's name a device too, in 8-byte chunk indexes. */
static uint32_t chunk_unit(const ErofsInode *i) {
        return i->device_id > 0 ? sizeof(struct erofs_inode_chunk_index) : EROFS_BLOCK_MAP_ENTRY_SIZE;
}

static uint32_t chunk_format(const ErofsInode *i) {
        uint32_t bits = i->chunks ? i->chunk_bits : chunk_bits_for(i->size);

        return bits | (i->device_id > 0 ? EROFS_CHUNK_FORMAT_INDEXES : 0);
}

static bool inode_needs_extended(const ErofsWriter *w, const ErofsInode *i) {
        return i->uid > UINT16_MAX || i->gid > UINT16_MAX || i->size > UINT32_MAX ||
               writer_layout_of(w, i)->nlink > UINT16_MAX || i->mtime != w->build_time ||
               i->mtime_nsec != w->build_time_nsec;
}

/* The inode record with its xattrs, up to where an inline tail or a chunk
 * map starts (which, for a map, is aligned to its entry size: erofs.rst
 * "Chunk-based files"; nids are 32-byte aligned, so aligning within the
 * inode is the same). */
static uint32_t inode_meta_size(const ErofsInode *i, const InodeLayout *l) {
        uint32_t meta = (l->flags & LAYOUT_EXTENDED) ? sizeof(struct erofs_inode_extended)
                                                     : sizeof(struct erofs_inode_compact);

        if (i->xattrs_len > 0)
                meta += sizeof(struct erofs_xattr_ibody_header) + 4U * l->n_shared + l->xattr_inline;
        if (l->flags & LAYOUT_CHUNKED)
                meta = (meta + chunk_unit(i) - 1) & ~(chunk_unit(i) - 1);
        return meta;
}

/* What follows the record in the metadata area: the inline tail of a
 * directory or symlink, or a chunk map. */
static uint64_t inode_tail_size(const ErofsInode *i, const InodeLayout *l) {
        if (l->flags & LAYOUT_INLINE)
                return i->size % EROFS_BLKSZ;
        if (l->flags & LAYOUT_CHUNKED)
                return chunk_map_count(i) * chunk_unit(i);
        return 0;
}

/* Blocks of a directory's or symlink's content outside the metadata area. */
static uint64_t inode_full_blocks(const ErofsInode *i, const InodeLayout *l) {
        if (!S_ISDIR(i->mode) && !S_ISLNK(i->mode))
                return 0;
        if (l->flags & LAYOUT_INLINE)
                return i->size / EROFS_BLKSZ;
        return (i->size + EROFS_BLKSZ - 1) / EROFS_BLKSZ;
}

static bool xattr_equal(const void *elem, const void *key) {
        const SharedXattr *x = elem, *k = key;
        return x->size == k->size && memcmp(x->entry, k->entry, k->size) == 0;
}

/* The record of an entry's content, made on first sight. */
static int xattr_record(ErofsWriter *w, const uint8_t *e, uint32_t size, SharedXattr **ret) {
        SharedXattr key = { .entry = e, .size = size }, *x;
        int r;

        r = hashtab_put(&w->xattrs, hashtab_hash_bytes(w->xattr_key, e, size), xattr_equal, &key, (void **) &x);
        if (r < 0)
                return r;
        if (r > 0)
                *x = key;
        *ret = x;
        return 0;
}

static SharedXattr *xattr_find(const ErofsWriter *w, const uint8_t *e, uint32_t size) {
        SharedXattr key = { .entry = e, .size = size };
        return hashtab_get(&w->xattrs, hashtab_hash_bytes(w->xattr_key, e, size), xattr_equal, &key);
}

/* Calls fn for each xattr entry of an inode. */
#define FOREACH_XATTR(i, e, size)                                                                   \
        for (uint32_t _off = 0, size = 0; _off < (i)->xattrs_len &&                                 \
             ((e) = (i)->xattrs + _off,                                                             \
              size = erofs_xattr_entry_size((e)[0], erofs_get_le16((e) + 2)), true);                \
             _off += size)

/* Gives each inode the ids of its shared entries (into w->shared_ids) and
 * the bytes of those that stay inline. */
static int layout_xattr_ids(ErofsWriter *w, size_t n_entries) {
        const uint8_t *e;
        size_t used = 0;

        if (w->xattr_area_len > 0) {
                w->shared_ids = malloc(n_entries * sizeof(*w->shared_ids));
                if (!w->shared_ids)
                        return -ENOMEM;
        }
        for (size_t k = 0; k < w->n_order; k++) {
                ErofsInode *i = w->order[k];
                InodeLayout *l = writer_layout_of(w, i);

                l->shared_at = (uint32_t) used;
                FOREACH_XATTR(i, e, size) {
                        SharedXattr *x = xattr_find(w, e, size);
                        if (x->shared && l->n_shared < SHARED_XATTR_MAX_PER_INODE) {
                                w->shared_ids[used++] = x->id;
                                l->n_shared++;
                        } else
                                l->xattr_inline += size;
                }
        }
        return 0;
}

/* Finds the entries that several inodes carry and gives each an id in the
 * shared area, in the order of first use, so the area is deterministic. */
int writer_layout_xattrs(ErofsWriter *w) {
        const uint8_t *e;
        SharedXattr *x;
        size_t n_entries = 0;
        int r;

        for (size_t k = 0; k < w->n_order; k++)
                FOREACH_XATTR(w->order[k], e, size) {
                        r = xattr_record(w, e, size, &x);
                        if (r < 0)
                                return r;
                        x->users++;
                        n_entries++;
                }
        if (n_entries == 0)
                return 0;

        /* Ids in order of first use; an entry never straddles a block. */
        for (size_t k = 0; k < w->n_order; k++)
                FOREACH_XATTR(w->order[k], e, size) {
                        x = xattr_find(w, e, size);
                        if (x->shared || x->users < SHARED_XATTR_MIN_USERS || size > SHARED_XATTR_MAX_BYTES)
                                continue;
                        if (w->xattr_area_len % EROFS_BLKSZ + size > EROFS_BLKSZ)
                                w->xattr_area_len = (w->xattr_area_len + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1);
                        x->shared = true;
                        x->id = (uint32_t) (w->xattr_area_len / 4);
                        w->xattr_area_len += size;
                }
        if (w->xattr_area_len > 0) {
                uint64_t bytes = (w->xattr_area_len + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1);
                w->xattr_area = calloc(1, (size_t) bytes);
                if (!w->xattr_area)
                        return -ENOMEM;
                for (size_t it = 0; (x = hashtab_next(&w->xattrs, &it));)
                        if (x->shared)
                                memcpy(w->xattr_area + 4ULL * x->id, x->entry, x->size);
        }
        return layout_xattr_ids(w, n_entries);
}

/* Whether an inode's entry went to the shared area (and is listed by id). */
static bool xattr_is_shared(const ErofsWriter *w, const InodeLayout *l, const uint8_t *e, uint32_t size) {
        SharedXattr *x = xattr_find(w, e, size);
        if (!x || !x->shared)
                return false;
        for (unsigned k = 0; k < l->n_shared; k++)
                if (w->shared_ids[l->shared_at + k] == x->id)
                        return true;
        return false;
}

/* Chooses an inode's form (compact or extended, inline tail or chunk map)
 * and, for a directory, computes its size. */
static void layout_shape(ErofsWriter *w, ErofsInode *i) {
        InodeLayout *l = writer_layout_of(w, i);

        l->flags = (l->flags & LAYOUT_VISITED) | (inode_needs_extended(w, i) ? LAYOUT_EXTENDED : 0);
        if (S_ISDIR(i->mode))
                /* Sizes only: nids are not known yet and do not matter here. */
                i->size = dir_size(w, i);
        if (S_ISDIR(i->mode) || S_ISLNK(i->mode)) {
                uint64_t tail = i->size % EROFS_BLKSZ;
                if (tail > 0 && inode_meta_size(i, l) + tail <= EROFS_BLKSZ)
                        l->flags |= LAYOUT_INLINE;
        } else if (inode_is_chunked(i)) {
                l->flags |= LAYOUT_CHUNKED;
                w->has_chunked = true;
        }
}

/* Sizes each inode and gives it a nid. An inode, its xattrs and its inline
 * tail stay inside one block, because the kernel refuses inline data that
 * crosses a block boundary (fs/erofs/data.c, erofs_map_blocks). */
int writer_layout_place(ErofsWriter *w) {
        uint64_t pos = 0;

        for (size_t k = 0; k < w->n_order; k++) {
                ErofsInode *i = w->order[k];
                InodeLayout *l = writer_layout_of(w, i);

                layout_shape(w, i);
                uint32_t meta = inode_meta_size(i, l);
                uint64_t total = meta + inode_tail_size(i, l);

                if (pos % EROFS_BLKSZ + total > EROFS_BLKSZ && total <= EROFS_BLKSZ)
                        pos = (pos + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1);
                /* A chunk map longer than a block may cross blocks (each
                 * entry is read on its own and never straddles one), but
                 * the inode and its xattrs stay in one block. */
                else if ((l->flags & LAYOUT_CHUNKED) && pos % EROFS_BLKSZ + meta > EROFS_BLKSZ)
                        pos = (pos + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1);
                if (pos / EROFS_ISLOTSIZE > UINT32_MAX || total > META_WINDOW_BYTES - EROFS_BLKSZ)
                        return -EFBIG;
                l->nid = (uint32_t) (pos / EROFS_ISLOTSIZE);
                pos = (pos + total + EROFS_ISLOTSIZE - 1) & ~(uint64_t) (EROFS_ISLOTSIZE - 1);
        }
        /* The root's nid is a 16-bit field of the superblock. */
        if (writer_layout_of(w, w->order[0])->nid > UINT16_MAX)
                return -EFBIG;
        w->meta_bytes = pos;
        return 0;
}

/* The xattr area, then the metadata, then the directory and symlink blocks
 * that do not fit inline, in inode order, after the file data. */
int writer_layout_blocks(ErofsWriter *w) {
        uint64_t meta_blocks = (w->meta_bytes + EROFS_BLKSZ - 1) / EROFS_BLKSZ;
        uint64_t next;

        w->xattr_blkaddr = w->xattr_area_len > 0 ? (uint32_t) (w->pos / EROFS_BLKSZ) : 0;
        w->meta_blkaddr = (uint32_t) (w->pos / EROFS_BLKSZ + (w->xattr_area_len + EROFS_BLKSZ - 1) / EROFS_BLKSZ);
        next = (uint64_t) w->meta_blkaddr + meta_blocks;
        for (size_t k = 0; k < w->n_order; k++) {
                ErofsInode *i = w->order[k];
                uint64_t blocks = inode_full_blocks(i, writer_layout_of(w, i));

                if (blocks == 0)
                        continue;
                if (next > UINT32_MAX)
                        return -EFBIG;
                writer_layout_of(w, i)->data_blkaddr = (uint32_t) next;
                next += blocks;
        }
        if (next > UINT32_MAX)
                return -EFBIG;
        w->total_blocks = (uint32_t) next;
        return 0;
}

static void put_inode(ErofsWriter *w, const ErofsInode *i, uint32_t ino, uint8_t *p) {
        const InodeLayout *l = writer_layout_of(w, i);
        uint16_t icount = 0;
        uint32_t datalayout, iu = 0;

        if (l->flags & LAYOUT_CHUNKED)
                datalayout = EROFS_INODE_CHUNK_BASED;
        else if (l->flags & LAYOUT_INLINE)
                datalayout = EROFS_INODE_FLAT_INLINE;
        else
                datalayout = EROFS_INODE_FLAT_PLAIN;

        switch (i->mode & S_IFMT) {
        case S_IFREG:
                if (l->flags & LAYOUT_CHUNKED)
                        iu = chunk_format(i);
                else
                        iu = i->size > 0 ? i->blkaddr : 0;
                break;
        case S_IFDIR:
        case S_IFLNK:
                iu = inode_full_blocks(i, l) > 0 ? l->data_blkaddr : 0;
                break;
        case S_IFCHR:
        case S_IFBLK:
                iu = i->rdev;
                break;
        default:
                break;
        }
        if (i->xattrs_len > 0)
                icount = (uint16_t) (l->n_shared + l->xattr_inline / 4 + 1);

        if (l->flags & LAYOUT_EXTENDED) {
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_extended, i_format),
                               (uint16_t) (EROFS_INODE_LAYOUT_EXTENDED | (datalayout << EROFS_I_DATALAYOUT_BIT)));
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_extended, i_xattr_icount), icount);
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_extended, i_mode), (uint16_t) i->mode);
                erofs_put_le64(p + EROFS_OFF(struct erofs_inode_extended, i_size), i->size);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_extended, i_u), iu);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_extended, i_ino), ino);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_extended, i_uid), i->uid);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_extended, i_gid), i->gid);
                erofs_put_le64(p + EROFS_OFF(struct erofs_inode_extended, i_mtime), (uint64_t) i->mtime);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_extended, i_mtime_nsec), i->mtime_nsec);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_extended, i_nlink), l->nlink);
                p += sizeof(struct erofs_inode_extended);
        } else {
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_compact, i_format),
                               (uint16_t) (EROFS_INODE_LAYOUT_COMPACT | (datalayout << EROFS_I_DATALAYOUT_BIT)));
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_compact, i_xattr_icount), icount);
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_compact, i_mode), (uint16_t) i->mode);
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_compact, i_nlink), (uint16_t) l->nlink);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_compact, i_size), (uint32_t) i->size);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_compact, i_u), iu);
                erofs_put_le32(p + EROFS_OFF(struct erofs_inode_compact, i_ino), ino);
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_compact, i_uid), (uint16_t) i->uid);
                erofs_put_le16(p + EROFS_OFF(struct erofs_inode_compact, i_gid), (uint16_t) i->gid);
                p += sizeof(struct erofs_inode_compact);
        }

        if (i->xattrs_len > 0) {
                const uint8_t *e;

                /* Header (no name filter), the shared ids, the inline entries. */
                memset(p, 0, sizeof(struct erofs_xattr_ibody_header));
                p[EROFS_OFF(struct erofs_xattr_ibody_header, h_shared_count)] = l->n_shared;
                p += sizeof(struct erofs_xattr_ibody_header);
                for (unsigned k = 0; k < l->n_shared; k++, p += 4)
                        erofs_put_le32(p, w->shared_ids[l->shared_at + k]);
                FOREACH_XATTR(i, e, size) {
                        if (xattr_is_shared(w, l, e, size))
                                continue;
                        memcpy(p, e, size);
                        p += size;
                }
        }
}

/* The chunk map after the inode: block addresses (layer images) or chunk
 * indexes on the inode's device (fsmeta); a hole stays EROFS_NULL_ADDR,
 * which reads as zeros whatever the device. */
static void put_chunk_map(const ErofsInode *i, uint8_t *c) {
        uint64_t n = chunk_map_count(i);

        for (uint64_t k = 0; k < n; k++) {
                uint32_t blkaddr = i->chunks ? i->chunks[k] : i->blkaddr;

                if (i->device_id == 0) {
                        erofs_put_le32(c + k * EROFS_BLOCK_MAP_ENTRY_SIZE, blkaddr);
                        continue;
                }
                uint8_t *x = c + k * sizeof(struct erofs_inode_chunk_index);
                erofs_put_le16(x + EROFS_OFF(struct erofs_inode_chunk_index, advise), 0);
                erofs_put_le16(x + EROFS_OFF(struct erofs_inode_chunk_index, device_id),
                               blkaddr == EROFS_NULL_ADDR ? 0 : i->device_id);
                erofs_put_le32(x + EROFS_OFF(struct erofs_inode_chunk_index, blkaddr), blkaddr);
        }
}

/* Makes bytes [pos, pos + len) of the metadata area writable in the
 * window: positions only grow, so the blocks before pos's are complete and
 * go to the file. */
static int meta_window(ErofsWriter *w, uint64_t pos, uint64_t len, uint8_t **ret) {
        int r;

        if (pos < w->meta_base)
                return -EFAULT;
        if (pos + len > w->meta_base + META_WINDOW_BYTES) {
                uint64_t keep = pos & ~(uint64_t) (EROFS_BLKSZ - 1), done = keep - w->meta_base;

                r = pwrite_all(w->fd, w->meta, (size_t) done, (uint64_t) w->meta_blkaddr * EROFS_BLKSZ + w->meta_base);
                if (r < 0)
                        return r;
                memmove(w->meta, w->meta + done, META_WINDOW_BYTES - done);
                memset(w->meta + META_WINDOW_BYTES - done, 0, done);
                w->meta_base = keep;
                if (pos + len > w->meta_base + META_WINDOW_BYTES)
                        return -EFBIG;
        }
        *ret = w->meta + (pos - w->meta_base);
        return 0;
}

/* A directory's blocks: whole ones to its blocks after the metadata (they
 * come in inode order, as writer_layout_blocks() placed them, so they stream
 * through the data buffer), the last one inline when it fits there. */
static int write_dir(ErofsWriter *w, const ErofsInode *dir, uint8_t *tail) {
        const InodeLayout *l = writer_layout_of(w, dir);
        DirIter it = dir_iter(w, dir);
        uint8_t block[EROFS_BLKSZ];
        bool more = true;
        int r;

        while (more) {
                memset(block, 0, sizeof(block));
                size_t used = dir_block(&it, block, &more);
                if (!more && (l->flags & LAYOUT_INLINE)) {
                        memcpy(tail, block, used);
                        break;
                }
                r = writer_data_append(w, block, sizeof(block));
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A symlink's target: inline when it fits, else one block of its own. */
static int write_symlink(ErofsWriter *w, const ErofsInode *i, uint8_t *tail) {
        uint8_t block[EROFS_BLKSZ] = {};

        if (writer_layout_of(w, i)->flags & LAYOUT_INLINE) {
                memcpy(tail, i->symlink, i->size);
                return 0;
        }
        memcpy(block, i->symlink, i->size);
        return writer_data_append(w, block, sizeof(block));
}

/* Writes every inode into the metadata window, with its inline tail or
 * chunk map, and its directory or symlink blocks. */
int writer_write_inodes(ErofsWriter *w) {
        uint64_t meta_end = (w->meta_bytes + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1);
        int r;

        w->meta = calloc(1, META_WINDOW_BYTES);
        if (!w->meta)
                return -ENOMEM;
        w->meta_base = 0;
        /* Directory and symlink blocks follow the metadata. */
        w->pos = w->buf_off = (uint64_t) w->meta_blkaddr * EROFS_BLKSZ + meta_end;
        w->buf_len = 0;

        for (size_t k = 0; k < w->n_order; k++) {
                const ErofsInode *i = w->order[k];
                const InodeLayout *l = writer_layout_of(w, i);
                uint32_t meta = inode_meta_size(i, l);
                uint8_t *p;

                r = meta_window(w, (uint64_t) l->nid * EROFS_ISLOTSIZE, meta + inode_tail_size(i, l), &p);
                if (r < 0)
                        return r;
                put_inode(w, i, (uint32_t) (k + 1), p);
                if (S_ISDIR(i->mode))
                        r = write_dir(w, i, p + meta);
                else if (S_ISLNK(i->mode))
                        r = write_symlink(w, i, p + meta);
                else if (l->flags & LAYOUT_CHUNKED)
                        put_chunk_map(i, p + meta);
                if (r < 0)
                        return r;
        }
        r = writer_flush(w);
        if (r < 0)
                return r;
        if (w->pos != (uint64_t) w->total_blocks * EROFS_BLKSZ)
                return -EFAULT;
        return pwrite_all(w->fd, w->meta, (size_t) (meta_end - w->meta_base),
                          (uint64_t) w->meta_blkaddr * EROFS_BLKSZ + w->meta_base);
}

