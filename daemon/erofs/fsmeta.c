/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <sys/stat.h>

#include "erofs_fs.h"
#include "erofs_layer.h"
#include "erofs_reader.h"
#include "erofs_writer.h"
#include "hashtab.h"

/*
 * fsmeta: the merged tree of an image as one metadata-only EROFS image.
 *
 * Layers are applied bottom to top with the OCI image-spec's rules
 * (layer.md "Applying Changesets"): a later entry replaces an earlier one, a
 * whiteout (in a layer image: a 0/0 character device) removes the name, an
 * opaque directory (trusted.overlay.opaque=y) hides what the layers below
 * had in it. Regular files become chunk-based inodes whose single chunk
 * points at the file's blocks in its layer image through the device table
 * (erofs.rst "Multiple devices"), so no file data is copied; a file with
 * holes keeps its layer's chunk map, data chunks pointing into the layer
 * and holes staying EROFS_NULL_ADDR. Hard links inside a layer stay hard
 * links.
 */

#define OVERLAY_OPAQUE_SUFFIX "overlay.opaque"
#define IMPLICIT_DIR_SUFFIX (EROFS_IMPLICIT_DIR_XATTR + strlen("trusted."))

/* Maps a layer inode (by nid) to the merged inode made for it, for hard
 * links, and records the directories merged, to refuse cycles. */
typedef struct NidMap {
        HashTab nids;            /* NidEntry */
        uint64_t key;
} NidMap;

typedef struct NidEntry {
        uint64_t nid;
        ErofsInode *inode;
} NidEntry;

static void nid_map_init(NidMap *m) {
        m->nids = HASHTAB_INIT(NidEntry);
        /* Nids follow from what the layer's tar held. */
        m->key = hashtab_random_key();
}

static void nid_map_done(NidMap *m) {
        hashtab_done(&m->nids);
}

static bool nid_equal(const void *elem, const void *key) {
        return ((const NidEntry *) elem)->nid == *(const uint64_t *) key;
}

static int nid_map_put(NidMap *m, uint64_t nid, ErofsInode *inode) {
        NidEntry *e;
        int r;

        r = hashtab_put(&m->nids, hashtab_hash_u64(m->key, nid), nid_equal, &nid, (void **) &e);
        if (r < 0)
                return r;
        *e = (NidEntry) { nid, inode };
        return 0;
}

static ErofsInode *nid_map_get(const NidMap *m, uint64_t nid) {
        NidEntry *e = hashtab_get(&m->nids, hashtab_hash_u64(m->key, nid), nid_equal, &nid);
        return e ? e->inode : NULL;
}

typedef struct Merge {
        ErofsTree *tree;
        const ErofsImage *img;
        uint16_t device_id;
        NidMap links;
        NidMap dirs;             /* directories merged from this layer, to refuse cycles */
        size_t depth;
        uint64_t *entries;       /* names read from all the layers so far */
        uint64_t max_entries;
        MsbError *err;
} Merge;

static void merge_done(Merge *m) {
        nid_map_done(&m->links);
        nid_map_done(&m->dirs);
}

typedef struct XattrCopy {
        ErofsInode *to;           /* NULL: only look for the markers */
        bool opaque;
        bool implicit;
} XattrCopy;

static bool is_trusted(uint8_t index, const char *suffix, size_t len, const char *name) {
        return index == EROFS_XATTR_INDEX_TRUSTED && len == strlen(name) && memcmp(suffix, name, len) == 0;
}

static int copy_xattr_cb(uint8_t index, const char *suffix, size_t suffix_len, const void *value, size_t value_len,
                         void *userdata) {
        XattrCopy *x = userdata;
        const char *prefix = erofs_xattr_index_prefix(index);
        char name[256 + 32];
        int r;

        if (!prefix)
                return 0;
        /* The opaque and implicit markers are how a layer speaks to the
         * merge; the merged tree has nothing left to hide, so it carries
         * neither. */
        if (is_trusted(index, suffix, suffix_len, OVERLAY_OPAQUE_SUFFIX)) {
                x->opaque = value_len == 1 && *(const char *) value == 'y';
                return 0;
        }
        if (is_trusted(index, suffix, suffix_len, IMPLICIT_DIR_SUFFIX)) {
                x->implicit = true;
                return 0;
        }
        if (!x->to)
                return 0;
        snprintf(name, sizeof(name), "%s%.*s", prefix, (int) suffix_len, suffix);
        r = erofs_inode_set_xattr(x->to, name, value, value_len);
        return r == -EOPNOTSUPP ? 0 : r;
}

/* Replaces the inode's xattrs by those of v. */
static int copy_xattrs(Merge *m, ErofsInode *to, const ErofsInodeView *v) {
        XattrCopy x = { .to = to };

        free(to->xattrs);
        to->xattrs = NULL;
        to->xattrs_len = 0;
        return erofs_image_xattrs(m->img, v, copy_xattr_cb, &x);
}

static void copy_metadata(ErofsInode *to, const ErofsInodeView *v) {
        to->mode = v->mode;
        to->uid = v->uid;
        to->gid = v->gid;
        to->mtime = v->mtime;
        to->mtime_nsec = v->mtime_nsec;
}

static int merge_dir(Merge *m, ErofsInode *dir, const ErofsInodeView *v, bool fresh);

/* A layer file with holes: the merged inode gets the same chunk size and
 * map, each data chunk on the layer's device, each hole still a hole. */
static int copy_chunk_map(Merge *m, const ErofsInodeView *cv, ErofsInode *to) {
        _cleanup_free_ uint32_t *map = NULL;

        /* The converter writes block maps no longer than its bound. */
        if ((cv->chunk_format & EROFS_CHUNK_FORMAT_INDEXES) || cv->chunk_count == 0 ||
            cv->chunk_count > EROFS_WRITER_FILE_CHUNKS_MAX)
                return -EUCLEAN;
        map = malloc(cv->chunk_count * sizeof(*map));
        if (!map)
                return -ENOMEM;
        for (uint64_t k = 0; k < cv->chunk_count; k++) {
                uint16_t device;
                int r = erofs_image_chunk(m->img, cv, k, &map[k], &device);
                if (r < 0)
                        return r;
        }
        free(to->chunks);
        to->chunks = TAKE_PTR(map);
        to->chunk_bits = cv->chunk_bits;
        return 0;
}

static int make_leaf(Merge *m, const ErofsInodeView *cv, ErofsInode **ret) {
        ErofsInode *i;
        int r;

        r = erofs_tree_inode_new(m->tree, cv->mode & S_IFMT, &i);
        if (r < 0)
                return r;
        copy_metadata(i, cv);
        r = copy_xattrs(m, i, cv);
        if (r < 0)
                return r;
        switch (cv->mode & S_IFMT) {
        case S_IFREG:
                /* Layer images store files flat and block-aligned, which is
                 * what lets one chunk cover a whole file, or, with holes,
                 * chunk-based with a block map, carried over as it is. */
                if (cv->datalayout == EROFS_INODE_CHUNK_BASED) {
                        r = copy_chunk_map(m, cv, i);
                        if (r < 0)
                                return r;
                } else if (cv->size > 0 && cv->datalayout != EROFS_INODE_FLAT_PLAIN)
                        return -EUCLEAN;
                i->size = cv->size;
                i->blkaddr = i->chunks ? 0 : cv->raw_blkaddr;
                i->device_id = cv->size > 0 ? m->device_id : 0;
                break;
        case S_IFLNK:
                if (cv->size == 0 || cv->size > EROFS_BLKSZ)
                        return -EUCLEAN;
                i->symlink = NULL;
                {
                        char buf[EROFS_BLKSZ];
                        r = erofs_image_read(m->img, cv, 0, buf, (size_t) cv->size);
                        if (r < 0)
                                return r;
                        r = erofs_tree_strdup(m->tree, buf, (size_t) cv->size, &i->symlink);
                        if (r < 0)
                                return r;
                }
                i->size = cv->size;
                break;
        case S_IFCHR:
        case S_IFBLK:
                i->rdev = cv->rdev;
                break;
        case S_IFIFO:
        case S_IFSOCK:
                break;
        default:
                return -EUCLEAN;
        }
        *ret = i;
        return 0;
}

typedef struct DirWalk {
        Merge *m;
        ErofsInode *dir;
} DirWalk;

static int merge_entry_cb(const char *name, size_t len, uint64_t nid, uint8_t type, void *userdata) {
        DirWalk *w = userdata;
        Merge *m = w->m;
        ErofsInodeView cv;
        ErofsDentry *existing;
        ErofsInode *i;
        int r;

        /* Every name of every layer counts, whatever it does to the tree:
         * the tree keeps what each made, so this bounds its memory. */
        if (++*m->entries > m->max_entries)
                return msb_error_limit(m->err, "image_entries", m->max_entries,
                                       "the image's layers hold more than %" PRIu64 " entries", m->max_entries);

        r = erofs_image_inode(m->img, nid, &cv);
        if (r < 0)
                return r;

        if (S_ISCHR(cv.mode) && cv.rdev == 0) {
                erofs_tree_unlink(m->tree, w->dir, name, len);
                return 0;
        }

        existing = erofs_tree_lookup(m->tree, w->dir, name, len);
        if (S_ISDIR(cv.mode)) {
                bool fresh = !existing || !S_ISDIR(existing->inode->mode);
                if (!fresh)
                        i = existing->inode;
                else {
                        r = erofs_tree_inode_new(m->tree, S_IFDIR, &i);
                        if (r < 0)
                                return r;
                        r = erofs_tree_link(m->tree, w->dir, name, len, i);
                        if (r < 0)
                                return r;
                }
                return merge_dir(m, i, &cv, fresh);
        }

        i = (cv.nlink > 1) ? nid_map_get(&m->links, nid) : NULL;
        if (!i) {
                r = make_leaf(m, &cv, &i);
                if (r < 0)
                        return r;
                if (cv.nlink > 1) {
                        r = nid_map_put(&m->links, nid, i);
                        if (r < 0)
                                return r;
                }
        }
        return erofs_tree_link(m->tree, w->dir, name, len, i);
}

static int merge_dir(Merge *m, ErofsInode *dir, const ErofsInodeView *v, bool fresh) {
        DirWalk w = { .m = m, .dir = dir };
        XattrCopy markers = {};
        int r;

        /* Layer images come from this module, whose depth limit bounds this
         * recursion; a damaged image still cannot recurse without end. */
        if (m->depth > PROTO_LIMIT_PATH_DEPTH + 1)
                return -EUCLEAN;
        /* A directory has one name; one seen twice means a damaged image
         * whose walk might never end. */
        if (nid_map_get(&m->dirs, v->nid))
                return -EUCLEAN;
        r = nid_map_put(&m->dirs, v->nid, dir);
        if (r < 0)
                return r;
        r = erofs_image_xattrs(m->img, v, copy_xattr_cb, &markers);
        if (r < 0)
                return r;
        /* A directory the layer only implied keeps what the layers below
         * gave it; one it names takes its metadata from this layer. */
        if (fresh || !markers.implicit) {
                copy_metadata(dir, v);
                r = copy_xattrs(m, dir, v);
                if (r < 0)
                        return r;
        }
        if (markers.opaque)
                for (ErofsDentry *d = dir->children; d; d = d->next)
                        d->inode = NULL;
        m->depth++;
        r = erofs_image_readdir(m->img, v, merge_entry_cb, &w);
        m->depth--;
        return r;
}

/* The device tag: the layer file's name without ".erofs" (its diff_id hex
 * in the store's layout), for humans and tools that list devices. */
static void device_tag(const char *path, char tag[64]) {
        const char *base = strrchr(path, '/');
        size_t n;

        base = base ? base + 1 : path;
        n = strlen(base);
        if (n > 6 && streq(base + n - 6, ".erofs"))
                n -= 6;
        memset(tag, 0, 64);
        memcpy(tag, base, n < 64 ? n : 64);
}

int erofs_fsmeta_build(const char *const *layer_paths, size_t n_layers,
                       const char *manifest_digest, int out_fd,
                       uint64_t *ret_size, MsbError *err) {
        return erofs_fsmeta_build_with_limits(layer_paths, n_layers, manifest_digest, PROTO_LIMIT_IMAGE_ENTRIES, out_fd,
                                              ret_size, err);
}

int erofs_fsmeta_build_with_limits(const char *const *layer_paths, size_t n_layers,
                                   const char *manifest_digest, uint64_t max_entries, int out_fd,
                                   uint64_t *ret_size, MsbError *err) {
        _cleanup_(erofs_writer_freep) ErofsWriter *writer = NULL;
        _cleanup_free_ ErofsWriterDevice *devices = NULL;
        ErofsWriterOptions opts = {};
        uint64_t size, entries = 0;
        int r;

        if (n_layers == 0 || n_layers > PROTO_LIMIT_LAYERS_PER_IMAGE)
                return msb_error_limit(err, "layers_per_image", PROTO_LIMIT_LAYERS_PER_IMAGE,
                                       "an image must have 1 to %llu layers, not %zu", PROTO_LIMIT_LAYERS_PER_IMAGE,
                                       n_layers);
        devices = calloc(n_layers, sizeof(*devices));
        if (!devices)
                return -ENOMEM;
        r = erofs_writer_new(out_fd, n_layers, &writer);
        if (r < 0)
                return msb_error_from_errno(err, r, "creating the fsmeta image");

        for (size_t l = 0; l < n_layers; l++) {
                _cleanup_(erofs_image_closep) ErofsImage *img = NULL;
                _cleanup_(merge_done) Merge m = {
                        .tree = erofs_writer_tree(writer),
                        .device_id = (uint16_t) (l + 1),
                        .entries = &entries,
                        .max_entries = max_entries,
                        .err = err,
                };
                ErofsInodeView root;

                nid_map_init(&m.links);
                nid_map_init(&m.dirs);
                r = erofs_image_open(layer_paths[l], &img);
                if (r >= 0) {
                        m.img = img;
                        r = erofs_image_inode(img, erofs_image_root_nid(img), &root);
                }
                if (r >= 0)
                        r = S_ISDIR(root.mode) ? merge_dir(&m, erofs_tree_root(m.tree), &root, l == 0) : -EUCLEAN;
                if (r == -E2BIG && err && err->set)
                        return r;
                if (r == -EUCLEAN)
                        return msb_error_set(err, r, PROTO_ERROR_STORE_ERROR, "layer image %s is damaged",
                                             layer_paths[l]);
                if (r < 0)
                        return msb_error_from_errno(err, r, layer_paths[l]);
                devices[l].blocks = erofs_image_blocks(img);
                device_tag(layer_paths[l], devices[l].tag);
        }

        r = erofs_writer_uuid_from_digest("msb-imaged fsmeta ", manifest_digest ?: "", opts.uuid);
        if (r < 0)
                return msb_error_set(err, r, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        opts.devices = devices;
        r = erofs_writer_finish(writer, &opts, &size);
        if (r == -EFBIG)
                return msb_error_set(err, r, PROTO_ERROR_INVALID_IMAGE,
                                     "the image's layers exceed what one EROFS disk can address");
        if (r < 0)
                return msb_error_from_errno(err, r, "writing the fsmeta image");
        *ret_size = size;
        return 0;
}
