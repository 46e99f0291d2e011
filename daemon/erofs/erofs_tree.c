/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/stat.h>

#include "erofs_fs.h"
#include "erofs_tree.h"
#include "hashtab.h"

/* Entries and symlink targets are carved out of chunks of this size. */
#define ARENA_CHUNK_BYTES (64 * 1024)
/* Inodes are allocated this many at a time (256 KiB). */
#define INODES_PER_SLAB 4096

typedef struct ArenaChunk {
        struct ArenaChunk *next;
        size_t used;
        size_t size;
        char data[];
} ArenaChunk;

struct ErofsTree {
        ErofsInode *root;

        /* Inodes in slabs: no allocator header each, no pointer array, and
         * the whole tree goes back in a few large frees. */
        ErofsInode **slabs;
        size_t n_inodes;

        /* Every entry ever linked (ErofsDentry *), by directory and name;
         * an entry stays once made, a removal only clears its inode. */
        HashTab entries;
        bool frozen;
        ArenaChunk *arena;

        /* A random key for the entry hash, so that names chosen to collide
         * cannot be prepared in advance; the output never depends on it. */
        uint64_t hash_key;
};

static void *arena_alloc(ErofsTree *t, size_t size) {
        ArenaChunk *c = t->arena;

        size = (size + 7) & ~(size_t) 7;
        if (!c || c->size - c->used < size) {
                size_t chunk = size > ARENA_CHUNK_BYTES / 4 ? size : ARENA_CHUNK_BYTES;

                c = malloc(sizeof(ArenaChunk) + chunk);
                if (!c)
                        return NULL;
                c->used = 0;
                c->size = chunk;
                /* A big one-off allocation goes behind the current chunk so
                 * the current chunk keeps serving small names. */
                if (chunk != ARENA_CHUNK_BYTES && t->arena) {
                        c->next = t->arena->next;
                        t->arena->next = c;
                } else {
                        c->next = t->arena;
                        t->arena = c;
                }
        }
        void *p = c->data + c->used;
        c->used += size;
        return p;
}

/* Gives back the arena's last allocation, of size bytes. */
static void arena_unalloc(ErofsTree *t, void *p, size_t size) {
        ArenaChunk *c = t->arena;

        size = (size + 7) & ~(size_t) 7;
        if (c && c->used >= size && (char *) p == c->data + c->used - size)
                c->used -= size;
}

int erofs_tree_strdup(ErofsTree *t, const char *s, size_t len, char **ret) {
        char *p = arena_alloc(t, len + 1);
        if (!p)
                return -ENOMEM;
        memcpy(p, s, len);
        p[len] = 0;
        *ret = p;
        return 0;
}

int erofs_tree_inode_new(ErofsTree *t, uint32_t mode, ErofsInode **ret) {
        size_t slab = t->n_inodes / INODES_PER_SLAB, k = t->n_inodes % INODES_PER_SLAB;

        if (t->n_inodes >= UINT32_MAX - 1)
                return -E2BIG;
        if (k == 0) {
                ErofsInode **s = realloc(t->slabs, (slab + 1) * sizeof(*s));
                if (!s)
                        return -ENOMEM;
                t->slabs = s;
                t->slabs[slab] = malloc(INODES_PER_SLAB * sizeof(ErofsInode));
                if (!t->slabs[slab])
                        return -ENOMEM;
        }
        ErofsInode *i = &t->slabs[slab][k];
        *i = (ErofsInode) {
                .id = (uint32_t) ++t->n_inodes,
                .mode = mode,
        };
        *ret = i;
        return 0;
}

int erofs_tree_new(ErofsTree **ret) {
        _cleanup_(erofs_tree_freep) ErofsTree *t = calloc(1, sizeof(*t));
        int r;

        if (!t)
                return -ENOMEM;
        t->hash_key = hashtab_random_key();
        t->entries = HASHTAB_INIT(ErofsDentry *);
        r = erofs_tree_inode_new(t, S_IFDIR | 0755, &t->root);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(t);
        return 0;
}

ErofsTree *erofs_tree_free(ErofsTree *t) {
        if (!t)
                return NULL;
        for (size_t n = 0; n < t->n_inodes; n++) {
                ErofsInode *i = &t->slabs[n / INODES_PER_SLAB][n % INODES_PER_SLAB];

                free(i->xattrs);
                if (S_ISREG(i->mode))
                        free(i->chunks);
        }
        for (size_t s = 0; s * INODES_PER_SLAB < t->n_inodes; s++)
                free(t->slabs[s]);
        free(t->slabs);
        hashtab_done(&t->entries);
        while (t->arena) {
                ArenaChunk *n = t->arena->next;
                free(t->arena);
                t->arena = n;
        }
        free(t);
        return NULL;
}

ErofsInode *erofs_tree_root(ErofsTree *t) {
        return t->root;
}

size_t erofs_tree_inode_count(ErofsTree *t) {
        return t->n_inodes;
}

void erofs_tree_freeze(ErofsTree *t) {
        hashtab_done(&t->entries);
        t->frozen = true;
}

typedef struct DentryKey {
        uint32_t dir_id;
        const char *name;
        size_t len;
} DentryKey;

static bool dentry_equal(const void *elem, const void *key) {
        const ErofsDentry *d = *(ErofsDentry *const *) elem;
        const DentryKey *k = key;

        return d->dir_id == k->dir_id && d->name_len == k->len && memcmp(d->name, k->name, k->len) == 0;
}

static uint64_t dentry_hash(const ErofsTree *t, const DentryKey *k) {
        return hashtab_hash_bytes(hashtab_hash_u64(t->hash_key, k->dir_id), k->name, k->len);
}

ErofsDentry *erofs_tree_lookup(ErofsTree *t, const ErofsInode *dir, const char *name, size_t len) {
        DentryKey k = { dir->id, name, len };
        ErofsDentry **d = hashtab_get(&t->entries, dentry_hash(t, &k), dentry_equal, &k);

        return d && (*d)->inode ? *d : NULL;
}

int erofs_tree_link(ErofsTree *t, ErofsInode *dir, const char *name, size_t len, ErofsInode *inode) {
        DentryKey k = { dir->id, name, len };
        ErofsDentry **slot, *d;
        int r;

        if (len == 0 || len > EROFS_NAME_LEN)
                return -ENAMETOOLONG;
        if (t->frozen)
                return -EBUSY;
        /* The entry is made before its slot, so that no slot ever holds
         * anything but a complete entry; the name was there already, it
         * goes back to the arena. */
        d = arena_alloc(t, offsetof(ErofsDentry, name) + len + 1);
        if (!d)
                return -ENOMEM;
        r = hashtab_put(&t->entries, dentry_hash(t, &k), dentry_equal, &k, (void **) &slot);
        if (r <= 0)
                arena_unalloc(t, d, offsetof(ErofsDentry, name) + len + 1);
        if (r < 0)
                return r;
        if (r == 0) {
                (*slot)->inode = inode;
                return 0;
        }
        d->next = dir->children;
        d->inode = inode;
        d->dir_id = dir->id;
        d->name_len = (uint16_t) len;
        memcpy(d->name, name, len);
        d->name[len] = 0;
        *slot = d;
        dir->children = d;
        return 0;
}

void erofs_tree_unlink(ErofsTree *t, ErofsInode *dir, const char *name, size_t len) {
        ErofsDentry *d = erofs_tree_lookup(t, dir, name, len);
        if (d)
                d->inode = NULL;
}

static const struct {
        uint8_t index;
        const char *prefix;
        bool whole; /* the prefix is the whole name */
} xattr_prefixes[] = {
        { EROFS_XATTR_INDEX_USER, "user.", false },
        { EROFS_XATTR_INDEX_POSIX_ACL_ACCESS, "system.posix_acl_access", true },
        { EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT, "system.posix_acl_default", true },
        { EROFS_XATTR_INDEX_TRUSTED, "trusted.", false },
        { EROFS_XATTR_INDEX_SECURITY, "security.", false },
};

bool erofs_xattr_name_split(const char *name, uint8_t *ret_index, const char **ret_suffix) {
        for (size_t i = 0; i < ELEMENTSOF(xattr_prefixes); i++) {
                if (xattr_prefixes[i].whole ? !streq(name, xattr_prefixes[i].prefix)
                                            : !startswith(name, xattr_prefixes[i].prefix))
                        continue;
                const char *suffix = name + strlen(xattr_prefixes[i].prefix);
                /* "user." alone names nothing. */
                if (!xattr_prefixes[i].whole && !*suffix)
                        return false;
                *ret_index = xattr_prefixes[i].index;
                *ret_suffix = suffix;
                return true;
        }
        return false;
}

const char *erofs_xattr_index_prefix(uint8_t index) {
        for (size_t i = 0; i < ELEMENTSOF(xattr_prefixes); i++)
                if (xattr_prefixes[i].index == index)
                        return xattr_prefixes[i].prefix;
        return NULL;
}

/* Orders entries by index, then name suffix bytes, then length. */
static int xattr_key_cmp(uint8_t ia, const char *sa, size_t la, uint8_t ib, const char *sb, size_t lb) {
        if (ia != ib)
                return ia < ib ? -1 : 1;
        int c = memcmp(sa, sb, la < lb ? la : lb);
        if (c != 0)
                return c;
        return la < lb ? -1 : la > lb ? 1 : 0;
}

/* Finds the entry with the key, or where it would go; returns its offset and
 * whether it matched. */
static uint32_t xattr_locate(const ErofsInode *inode, uint8_t index, const char *suffix, size_t len, bool *ret_found) {
        uint32_t off = 0;

        while (off < inode->xattrs_len) {
                const uint8_t *e = inode->xattrs + off;
                uint8_t nl = e[0], ix = e[1];
                uint16_t vl = erofs_get_le16(e + 2);
                int c = xattr_key_cmp(ix, (const char *) e + 4, nl, index, suffix, len);
                if (c == 0) {
                        *ret_found = true;
                        return off;
                }
                if (c > 0)
                        break;
                off += erofs_xattr_entry_size(nl, vl);
        }
        *ret_found = false;
        return off;
}

int erofs_inode_set_xattr(ErofsInode *inode, const char *name, const void *value, size_t value_len) {
        const char *suffix;
        uint8_t index;
        bool found;

        if (!erofs_xattr_name_split(name, &index, &suffix))
                return -EOPNOTSUPP;
        size_t len = strlen(suffix);
        if (len > UINT8_MAX || value_len > UINT16_MAX)
                return -E2BIG;

        erofs_inode_remove_xattr(inode, name);
        uint32_t at = xattr_locate(inode, index, suffix, len, &found);
        uint32_t add = erofs_xattr_entry_size((uint32_t) len, (uint32_t) value_len);
        if (inode->xattrs_len + (uint64_t) add > UINT16_MAX * 4ULL)
                return -E2BIG;

        uint8_t *n = realloc(inode->xattrs, inode->xattrs_len + add);
        if (!n)
                return -ENOMEM;
        memmove(n + at + add, n + at, inode->xattrs_len - at);
        memset(n + at, 0, add);
        n[at] = (uint8_t) len;
        n[at + 1] = index;
        erofs_put_le16(n + at + 2, (uint16_t) value_len);
        memcpy(n + at + 4, suffix, len);
        if (value_len > 0)
                memcpy(n + at + 4 + len, value, value_len);
        inode->xattrs = n;
        inode->xattrs_len += add;
        return 0;
}

void erofs_inode_remove_xattr(ErofsInode *inode, const char *name) {
        const char *suffix;
        uint8_t index;
        bool found;

        if (!erofs_xattr_name_split(name, &index, &suffix))
                return;
        uint32_t at = xattr_locate(inode, index, suffix, strlen(suffix), &found);
        if (!found)
                return;
        const uint8_t *e = inode->xattrs + at;
        uint32_t sz = erofs_xattr_entry_size(e[0], erofs_get_le16(e + 2));
        memmove(inode->xattrs + at, inode->xattrs + at + sz, inode->xattrs_len - at - sz);
        inode->xattrs_len -= sz;
        if (inode->xattrs_len == 0) {
                free(inode->xattrs);
                inode->xattrs = NULL;
        }
}

bool erofs_inode_get_xattr(const ErofsInode *inode, const char *name, const void **ret_value, size_t *ret_len) {
        const char *suffix;
        uint8_t index;
        bool found;

        if (!erofs_xattr_name_split(name, &index, &suffix))
                return false;
        size_t len = strlen(suffix);
        uint32_t at = xattr_locate(inode, index, suffix, len, &found);
        if (!found)
                return false;
        *ret_value = inode->xattrs + at + 4 + len;
        *ret_len = erofs_get_le16(inode->xattrs + at + 2);
        return true;
}

int erofs_inode_copy_xattrs(ErofsInode *to, const ErofsInode *from) {
        uint8_t *n = NULL;

        if (from->xattrs_len > 0) {
                n = malloc(from->xattrs_len);
                if (!n)
                        return -ENOMEM;
                memcpy(n, from->xattrs, from->xattrs_len);
        }
        free(to->xattrs);
        to->xattrs = n;
        to->xattrs_len = from->xattrs_len;
        return 0;
}
