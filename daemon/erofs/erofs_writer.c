/* SPDX-License-Identifier: Apache-2.0 */
#include <malloc.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "erofs_fs.h"
#include "erofs_writer.h"
#include "hashtab.h"

/* File data is gathered into writes of this size. */
#define WRITER_BUFFER_BYTES (1024 * 1024)

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

uint32_t erofs_crc32c(uint32_t crc, const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len--) {
                crc ^= *p++;
                for (unsigned k = 0; k < 8; k++)
                        crc = (crc >> 1) ^ (0x82F63B78U & (0U - (crc & 1)));
        }
        return crc;
}

static uint32_t head_blocks_for(size_t n_devices) {
        uint64_t bytes = EROFS_SUPER_OFFSET + sizeof(struct erofs_super_block) +
                         n_devices * sizeof(struct erofs_deviceslot);
        return (uint32_t) ((bytes + EROFS_BLKSZ - 1) / EROFS_BLKSZ);
}

int erofs_writer_new(int fd, size_t n_devices, ErofsWriter **ret) {
        _cleanup_(erofs_writer_freep) ErofsWriter *w = NULL;
        int r;

        if (fd < 0 || n_devices > UINT16_MAX)
                return -EINVAL;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->fd = fd;
        w->n_devices = n_devices;
        w->xattrs = HASHTAB_INIT(SharedXattr);
        w->xattr_key = hashtab_random_key();
        w->head_blocks = head_blocks_for(n_devices);
        w->pos = w->buf_off = (uint64_t) w->head_blocks * EROFS_BLKSZ;
        w->buf = malloc(WRITER_BUFFER_BYTES);
        w->chunk_map = malloc(EROFS_WRITER_FILE_CHUNKS_MAX * sizeof(*w->chunk_map));
        if (!w->buf || !w->chunk_map)
                return -ENOMEM;
        r = erofs_tree_new(&w->tree);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

ErofsWriter *erofs_writer_free(ErofsWriter *w) {
        if (!w)
                return NULL;
        erofs_tree_free(w->tree);
        free(w->buf);
        free(w->chunk_map);
        free(w->order);
        free(w->layout);
        free(w->shared_ids);
        free(w->meta);
        hashtab_done(&w->xattrs);
        free(w->xattr_area);
        free(w);
        /* A layer's tree is many small allocations on a worker thread's
         * malloc arena, which glibc keeps after they are freed; giving the
         * pages back keeps the daemon's resident size bounded by the layer
         * being converted now, not by the largest ever converted. */
        malloc_trim(0);
        return NULL;
}

ErofsTree *erofs_writer_tree(ErofsWriter *w) {
        return w->tree;
}

static int writer_flush(ErofsWriter *w) {
        int r;

        if (w->buf_len == 0)
                return 0;
        r = pwrite_all(w->fd, w->buf, w->buf_len, w->buf_off);
        if (r < 0)
                return r;
        w->buf_off += w->buf_len;
        w->buf_len = 0;
        return 0;
}

/* Appends bytes to the data area at w->pos, through the buffer. */
static int data_append(ErofsWriter *w, const void *buf, size_t len) {
        const uint8_t *p = buf;
        int r;

        /* Large pieces go straight to the file once the buffer is drained:
         * no reason to copy them. */
        if (len >= WRITER_BUFFER_BYTES) {
                r = writer_flush(w);
                if (r < 0)
                        return r;
                r = pwrite_all(w->fd, p, len, w->pos);
                if (r < 0)
                        return r;
                w->pos += len;
                w->buf_off = w->pos;
                return 0;
        }
        while (len > 0) {
                size_t n = WRITER_BUFFER_BYTES - w->buf_len;
                if (n > len)
                        n = len;
                memcpy(w->buf + w->buf_len, p, n);
                w->buf_len += n;
                w->pos += n;
                p += n;
                len -= n;
                if (w->buf_len == WRITER_BUFFER_BYTES) {
                        r = writer_flush(w);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int data_zero(ErofsWriter *w, uint64_t len) {
        static const uint8_t zeros[EROFS_BLKSZ];
        int r;

        while (len > 0) {
                size_t n = len > sizeof(zeros) ? sizeof(zeros) : (size_t) len;
                r = data_append(w, zeros, n);
                if (r < 0)
                        return r;
                len -= n;
        }
        return 0;
}

unsigned erofs_writer_chunk_bits(uint64_t size) {
        unsigned bits = 0;

        while (bits < EROFS_CHUNK_FORMAT_BLKBITS_MASK && erofs_chunk_count(size, bits) > EROFS_WRITER_FILE_CHUNKS_MAX)
                bits++;
        return bits;
}

int erofs_writer_file_begin(ErofsWriter *w, uint64_t size) {
        unsigned bits = erofs_writer_chunk_bits(size);

        if (w->in_file)
                return -EBUSY;
        if (erofs_chunk_count(size, bits) > EROFS_WRITER_FILE_CHUNKS_MAX)
                return -EFBIG;
        w->in_file = true;
        w->chunk_open = false;
        w->chunk_bits = (uint8_t) bits;
        w->file_size = size;
        w->file_next = 0;
        w->n_chunks = erofs_chunk_count(size, bits);
        for (uint64_t k = 0; k < w->n_chunks; k++)
                w->chunk_map[k] = EROFS_NULL_ADDR;
        return 0;
}

/* Zero-fills the open chunk up to its end (or the file's), so the next
 * chunk starts on a chunk-sized step from this one. */
static int chunk_close(ErofsWriter *w) {
        uint64_t end = (w->chunk + 1) << (EROFS_BLKSZBITS + w->chunk_bits);
        int r;

        if (!w->chunk_open)
                return 0;
        if (end > w->file_size)
                end = w->file_size;
        r = data_zero(w, end - w->file_next);
        if (r < 0)
                return r;
        w->file_next = end;
        w->chunk_open = false;
        return 0;
}

/* Makes chunk k the open one, starting it at the data area's next block. */
static int chunk_open(ErofsWriter *w, uint64_t k) {
        int r;

        r = chunk_close(w);
        if (r < 0)
                return r;
        if (w->pos % EROFS_BLKSZ != 0)
                return -EFAULT;
        if (w->pos / EROFS_BLKSZ >= EROFS_NULL_ADDR)
                return -EFBIG;
        w->chunk_map[k] = (uint32_t) (w->pos / EROFS_BLKSZ);
        w->chunk = k;
        w->chunk_open = true;
        w->file_next = k << (EROFS_BLKSZBITS + w->chunk_bits);
        return 0;
}

int erofs_writer_file_write(ErofsWriter *w, uint64_t offset, const void *buf, size_t len) {
        unsigned shift = EROFS_BLKSZBITS + w->chunk_bits;
        uint64_t k, last, first_blk;
        int r;

        if (!w->in_file)
                return -EINVAL;
        if (offset < w->file_next || offset > w->file_size || len > w->file_size - offset)
                return -ERANGE;
        if (len == 0)
                return 0;
        k = offset >> shift;
        last = (offset + len - 1) >> shift;
        if (!w->chunk_open || k != w->chunk) {
                r = chunk_open(w, k);
                if (r < 0)
                        return r;
        }
        /* The piece goes in with one append, whatever chunks it runs into:
         * each chunk after k starts a chunk's length after the one before. */
        first_blk = w->chunk_map[k];
        if (first_blk + ((last - k) << w->chunk_bits) >= EROFS_NULL_ADDR)
                return -EFBIG;
        for (uint64_t j = k + 1; j <= last; j++)
                w->chunk_map[j] = (uint32_t) (first_blk + ((j - k) << w->chunk_bits));
        r = data_zero(w, offset - w->file_next);
        if (r < 0)
                return r;
        r = data_append(w, buf, len);
        if (r < 0)
                return r;
        w->chunk = last;
        w->file_next = offset + len;
        return 0;
}

int erofs_writer_file_end(ErofsWriter *w, ErofsInode *inode) {
        uint64_t written = 0;
        uint32_t *map;
        int r;

        if (!w->in_file)
                return -EINVAL;
        r = chunk_close(w);
        if (r < 0)
                return r;
        if (w->pos % EROFS_BLKSZ != 0) {
                r = data_zero(w, EROFS_BLKSZ - w->pos % EROFS_BLKSZ);
                if (r < 0)
                        return r;
        }
        w->in_file = false;
        for (uint64_t k = 0; k < w->n_chunks; k++)
                written += w->chunk_map[k] != EROFS_NULL_ADDR;

        inode->size = w->file_size;
        if (written == w->n_chunks) {
                /* Every chunk was written, each right after the one before:
                 * the file is contiguous, stored flat as any other. */
                inode->blkaddr = w->n_chunks > 0 ? w->chunk_map[0] : 0;
                return 0;
        }
        map = malloc(w->n_chunks * sizeof(*map));
        if (!map)
                return -ENOMEM;
        memcpy(map, w->chunk_map, w->n_chunks * sizeof(*map));
        free(inode->chunks);
        inode->chunks = map;
        inode->chunk_bits = w->chunk_bits;
        inode->blkaddr = 0;
        return 0;
}

static InodeLayout *layout_of(const ErofsWriter *w, const ErofsInode *i) {
        return &w->layout[i->id];
}

uint64_t erofs_writer_nid(const ErofsWriter *w, const ErofsInode *inode) {
        return w->layout ? layout_of(w, inode)->nid : 0;
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
                InodeLayout *cl = layout_of(w, c);

                if (S_ISDIR(c->mode)) {
                        /* A directory has one name; a second is a cycle. */
                        if (cl->flags & LAYOUT_VISITED)
                                return -ELOOP;
                        layout_of(w, i)->nlink++;
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
static int layout_collect(ErofsWriter *w) {
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

        *layout_of(w, root) = (InodeLayout) { .parent = root->id, .nlink = 2, .flags = LAYOUT_VISITED };
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
static void layout_build_time(ErofsWriter *w) {
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
                .self_nid = layout_of(w, dir)->nid,
                .parent_nid = w->layout[layout_of(w, dir)->parent].nid,
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
                           layout_of(it->w, it->next->inode)->nid };
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
               layout_of(w, i)->nlink > UINT16_MAX || i->mtime != w->build_time ||
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
                InodeLayout *l = layout_of(w, i);

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
static int layout_xattrs(ErofsWriter *w) {
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
        InodeLayout *l = layout_of(w, i);

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
static int layout_place(ErofsWriter *w) {
        uint64_t pos = 0;

        for (size_t k = 0; k < w->n_order; k++) {
                ErofsInode *i = w->order[k];
                InodeLayout *l = layout_of(w, i);

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
        if (layout_of(w, w->order[0])->nid > UINT16_MAX)
                return -EFBIG;
        w->meta_bytes = pos;
        return 0;
}

/* The xattr area, then the metadata, then the directory and symlink blocks
 * that do not fit inline, in inode order, after the file data. */
static int layout_blocks(ErofsWriter *w) {
        uint64_t meta_blocks = (w->meta_bytes + EROFS_BLKSZ - 1) / EROFS_BLKSZ;
        uint64_t next;

        w->xattr_blkaddr = w->xattr_area_len > 0 ? (uint32_t) (w->pos / EROFS_BLKSZ) : 0;
        w->meta_blkaddr = (uint32_t) (w->pos / EROFS_BLKSZ + (w->xattr_area_len + EROFS_BLKSZ - 1) / EROFS_BLKSZ);
        next = (uint64_t) w->meta_blkaddr + meta_blocks;
        for (size_t k = 0; k < w->n_order; k++) {
                ErofsInode *i = w->order[k];
                uint64_t blocks = inode_full_blocks(i, layout_of(w, i));

                if (blocks == 0)
                        continue;
                if (next > UINT32_MAX)
                        return -EFBIG;
                layout_of(w, i)->data_blkaddr = (uint32_t) next;
                next += blocks;
        }
        if (next > UINT32_MAX)
                return -EFBIG;
        w->total_blocks = (uint32_t) next;
        return 0;
}

static void put_inode(ErofsWriter *w, const ErofsInode *i, uint32_t ino, uint8_t *p) {
        const InodeLayout *l = layout_of(w, i);
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
 * come in inode order, as layout_blocks() placed them, so they stream
 * through the data buffer), the last one inline when it fits there. */
static int write_dir(ErofsWriter *w, const ErofsInode *dir, uint8_t *tail) {
        const InodeLayout *l = layout_of(w, dir);
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
                r = data_append(w, block, sizeof(block));
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A symlink's target: inline when it fits, else one block of its own. */
static int write_symlink(ErofsWriter *w, const ErofsInode *i, uint8_t *tail) {
        uint8_t block[EROFS_BLKSZ] = {};

        if (layout_of(w, i)->flags & LAYOUT_INLINE) {
                memcpy(tail, i->symlink, i->size);
                return 0;
        }
        memcpy(block, i->symlink, i->size);
        return data_append(w, block, sizeof(block));
}

/* Writes every inode into the metadata window, with its inline tail or
 * chunk map, and its directory or symlink blocks. */
static int write_inodes(ErofsWriter *w) {
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
                const InodeLayout *l = layout_of(w, i);
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

static int write_head(ErofsWriter *w, const ErofsWriterOptions *opts) {
        size_t head_bytes = (size_t) w->head_blocks * EROFS_BLKSZ;
        _cleanup_free_ uint8_t *head = calloc(1, head_bytes);
        uint8_t *sb;
        uint64_t mapped = w->total_blocks;

        if (!head)
                return -ENOMEM;
        sb = head + EROFS_SUPER_OFFSET;

#define SB(field) (sb + EROFS_OFF(struct erofs_super_block, field))
        erofs_put_le32(SB(magic), EROFS_SUPER_MAGIC);
        erofs_put_le32(SB(feature_compat), EROFS_FEATURE_COMPAT_SB_CHKSUM);
        *SB(blkszbits) = EROFS_BLKSZBITS;
        erofs_put_le16(SB(root_nid), (uint16_t) layout_of(w, w->order[0])->nid);
        erofs_put_le64(SB(inos), w->n_order);
        erofs_put_le64(SB(build_time), (uint64_t) w->build_time);
        erofs_put_le32(SB(build_time_nsec), w->build_time_nsec);
        erofs_put_le32(SB(blocks), w->total_blocks);
        erofs_put_le32(SB(meta_blkaddr), w->meta_blkaddr);
        erofs_put_le32(SB(xattr_blkaddr), w->xattr_blkaddr);
        memcpy(SB(uuid), opts->uuid, 16);
        /* A layer image has chunk-based inodes only for files with holes:
         * ordinary layers keep a superblock without the feature. */
        if (w->has_chunked)
                erofs_put_le32(SB(feature_incompat), EROFS_FEATURE_INCOMPAT_CHUNKED_FILE);
        if (w->n_devices > 0) {
                uint64_t slotoff = (EROFS_SUPER_OFFSET + sizeof(struct erofs_super_block)) /
                                   sizeof(struct erofs_deviceslot);

                erofs_put_le32(SB(feature_incompat),
                               EROFS_FEATURE_INCOMPAT_CHUNKED_FILE | EROFS_FEATURE_INCOMPAT_DEVICE_TABLE);
                erofs_put_le16(SB(extra_devices), (uint16_t) w->n_devices);
                erofs_put_le16(SB(devt_slotoff), (uint16_t) slotoff);

                /* Each device starts where the previous one ends when the
                 * images are concatenated after this one (the VMDK's order). */
                for (size_t d = 0; d < w->n_devices; d++) {
                        uint8_t *s = head + slotoff * sizeof(struct erofs_deviceslot) +
                                     d * sizeof(struct erofs_deviceslot);
                        if (mapped > UINT32_MAX)
                                return -EFBIG;
                        memcpy(s + EROFS_OFF(struct erofs_deviceslot, tag), opts->devices[d].tag, 64);
                        erofs_put_le32(s + EROFS_OFF(struct erofs_deviceslot, blocks), opts->devices[d].blocks);
                        erofs_put_le32(s + EROFS_OFF(struct erofs_deviceslot, mapped_blkaddr), (uint32_t) mapped);
                        mapped += opts->devices[d].blocks;
                }
        }
        /* The checksum covers the rest of block 0 from the superblock on. */
        erofs_put_le32(SB(checksum), erofs_crc32c(~0U, sb, EROFS_BLKSZ - EROFS_SUPER_OFFSET));
#undef SB
        return pwrite_all(w->fd, head, head_bytes, 0);
}

int erofs_writer_finish(ErofsWriter *w, const ErofsWriterOptions *opts, uint64_t *ret_size) {
        int r;

        if (w->in_file)
                return -EBUSY;
        r = writer_flush(w);
        if (r < 0)
                return r;
        /* No name is looked up from here on: the index goes before the
         * layout's side array comes. */
        erofs_tree_freeze(w->tree);

        r = layout_collect(w);
        if (r < 0)
                return r;
        layout_build_time(w);
        r = layout_xattrs(w);
        if (r < 0)
                return r;
        r = layout_place(w);
        if (r < 0)
                return r;
        r = layout_blocks(w);
        if (r < 0)
                return r;

        r = write_inodes(w);
        if (r < 0)
                return r;
        if (w->xattr_area_len > 0) {
                r = pwrite_all(w->fd, w->xattr_area, (size_t) ((w->xattr_area_len + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1)),
                               (uint64_t) w->xattr_blkaddr * EROFS_BLKSZ);
                if (r < 0)
                        return r;
        }
        r = write_head(w, opts);
        if (r < 0)
                return r;
        if (ftruncate(w->fd, (off_t) w->total_blocks * EROFS_BLKSZ) < 0)
                return negative_errno();
        *ret_size = (uint64_t) w->total_blocks * EROFS_BLKSZ;
        return 0;
}

int erofs_writer_uuid_from_digest(const char *label, const char *digest, uint8_t ret[16]) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        int ok;

        if (!md)
                return -ENOMEM;
        ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(md, label, strlen(label)) == 1 &&
             EVP_DigestUpdate(md, digest, strlen(digest)) == 1 && EVP_DigestFinal_ex(md, d, &len) == 1;
        EVP_MD_CTX_free(md);
        if (!ok)
                return -EIO;
        /* Shaped as an RFC 9562 version 8 (custom) UUID. */
        memcpy(ret, d, 16);
        ret[6] = (uint8_t) ((ret[6] & 0x0f) | 0x80);
        ret[8] = (uint8_t) ((ret[8] & 0x3f) | 0x80);
        return 0;
}
