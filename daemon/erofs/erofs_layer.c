/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <sys/stat.h>

#include "erofs_fs.h"
#include "erofs_layer.h"
#include "erofs_writer.h"
#include "layer_reader.h"

/* OCI image-spec layer.md "Whiteouts": a name with this prefix deletes the
 * rest of the name from the layers below; in the overlay filesystem
 * convention a whiteout is a 0/0 character device. */
#define WHITEOUT_PREFIX ".wh."
/* The opaque marker: the directory hides everything below it. */
#define WHITEOUT_OPAQUE ".wh..wh..opq"
/* Other ".wh..wh." names are AUFS bookkeeping that carries no content. */
#define WHITEOUT_META_PREFIX ".wh..wh."
#define OVERLAY_OPAQUE_XATTR "trusted.overlay.opaque"

ErofsLayerLimits erofs_layer_limits_default(void) {
        return (ErofsLayerLimits) {
                .entries = PROTO_LIMIT_LAYER_ENTRIES,
                .image_entries = PROTO_LIMIT_IMAGE_ENTRIES,
                .path_bytes = PROTO_LIMIT_PATH_BYTES,
                .path_depth = PROTO_LIMIT_PATH_DEPTH,
                .uncompressed_bytes = PROTO_LIMIT_LAYER_UNCOMPRESSED_BYTES,
        };
}

typedef struct Converter {
        ErofsWriter *writer;
        ErofsTree *tree;
        LayerReader *reader;
        const ErofsLayerLimits *limits;
        uint64_t entries;
        uint64_t image_added;     /* entries added to limits->image_entries_used */
        bool kept;                /* the conversion succeeded: its entries stay counted */
        uint64_t file_bytes;      /* apparent sizes of the regular files so far */
        char *scratch;            /* a normalised hard link target */
        size_t scratch_alloc;
} Converter;

static void converter_done(Converter *c) {
        free(c->scratch);
        /* A conversion that failed leaves nothing in the image, nor in its count. */
        if (!c->kept && c->image_added > 0)
                __atomic_sub_fetch(c->limits->image_entries_used, c->image_added, __ATOMIC_RELAXED);
}

static int limit_exceeded(MsbError *err, const char *limit, uint64_t max, const char *raw) {
        if (err && !err->set) {
                msb_error_limit(err, limit, max, "tar entry \"%.300s\" exceeds the %s limit of %" PRIu64, raw, limit, max);
                msb_error_add_data(err, "entry", json_string(raw));
        }
        return -E2BIG;
}

/* Counts one entry of the tree, a tar entry or a directory made for one
 * (raw names it), against the layer's limit and the image's. Each costs
 * the tree an inode and a name, so these bound a conversion's memory, and
 * with the merge's count (fsmeta.c) an image's. */
static int count_entry(Converter *c, const char *raw, MsbError *err) {
        uint64_t image;

        if (++c->entries > c->limits->entries)
                return limit_exceeded(err, "layer_entries", c->limits->entries, raw);
        image = c->entries;
        if (c->limits->image_entries_used) {
                image = __atomic_add_fetch(c->limits->image_entries_used, 1, __ATOMIC_RELAXED);
                c->image_added++;
        }
        if (image > c->limits->image_entries)
                return limit_exceeded(err, "image_entries", c->limits->image_entries, raw);
        return 0;
}

static int reject(MsbError *err, int e, const char *raw, const char *why) {
        if (err && !err->set) {
                msb_error_set(err, e, PROTO_ERROR_LAYER_REJECTED, "tar entry \"%.300s\" %s", raw, why);
                msb_error_add_data(err, "entry", json_string(raw));
        }
        return e;
}

/* Finds (or, with create, makes) the directory holding the last component
 * of path; missing parents become 0755 root-owned directories, as tar
 * extraction makes them, each counted as an entry of the tar entry raw: a
 * deep path must not make a hundred inodes for the price of one entry. */
static int resolve_parent(Converter *c, const char *path, size_t len, bool create, const char *raw,
                          ErofsInode **ret_dir, const char **ret_name, size_t *ret_name_len, MsbError *err) {
        ErofsInode *dir = erofs_tree_root(c->tree);
        const char *p = path, *end = path + len;
        int r;

        for (;;) {
                const char *slash = memchr(p, '/', (size_t) (end - p));
                if (!slash)
                        break;

                size_t n = (size_t) (slash - p);
                ErofsDentry *d = erofs_tree_lookup(c->tree, dir, p, n);
                if (d && S_ISDIR(d->inode->mode))
                        dir = d->inode;
                else if (!create)
                        return -ENOENT;
                else {
                        ErofsInode *nd;
                        r = count_entry(c, raw, err);
                        if (r < 0)
                                return r;
                        r = erofs_tree_inode_new(c->tree, S_IFDIR | 0755, &nd);
                        if (r < 0)
                                return r;
                        r = erofs_inode_set_xattr(nd, EROFS_IMPLICIT_DIR_XATTR, "y", 1);
                        if (r < 0)
                                return r;
                        r = erofs_tree_link(c->tree, dir, p, n, nd);
                        if (r < 0)
                                return r;
                        dir = nd;
                }
                p = slash + 1;
        }
        *ret_dir = dir;
        *ret_name = p;
        *ret_name_len = (size_t) (end - p);
        return 0;
}

static void apply_metadata(ErofsInode *i, const LayerEntry *e) {
        i->mode = (i->mode & S_IFMT) | (e->mode & 07777);
        i->uid = e->uid;
        i->gid = e->gid;
        i->mtime = e->mtime;
        i->mtime_nsec = e->mtime_nsec;
}

static int apply_xattrs(Converter *c, ErofsInode *i, const LayerEntry *e, MsbError *err) {
        const char *name;
        const void *value;
        size_t len;
        int r;

        while (layer_reader_xattr_next(c->reader, &name, &value, &len) > 0) {
                r = erofs_inode_set_xattr(i, name, value, len);
                /* EROFS has no name index for other namespaces (e.g.
                 * "system.nfs4_acl"); the kernel could not show them either. */
                if (r == -EOPNOTSUPP)
                        continue;
                if (r == -E2BIG)
                        return reject(err, r, e->raw_path, "has an xattr too large for EROFS");
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Streams a regular file's data into the image. Sparse entries skip their
 * holes; the writer leaves out the chunks they cover, which read back as
 * zeros. */
static int copy_data(Converter *c, ErofsInode *i, const LayerEntry *e, MsbError *err) {
        uint64_t next = 0, off;
        const void *buf;
        size_t n;
        int r;

        r = erofs_writer_file_begin(c->writer, e->size);
        if (r < 0)
                return r;
        for (;;) {
                r = layer_reader_data(c->reader, &buf, &n, &off, err);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (off < next || off > e->size || n > e->size - off)
                        return reject(err, -EBADMSG, e->raw_path, "has data outside its size");
                r = erofs_writer_file_write(c->writer, off, buf, n);
                if (r < 0)
                        return r;
                next = off + n;
        }
        return erofs_writer_file_end(c->writer, i);
}

static int add_hardlink(Converter *c, ErofsInode *dir, const char *name, size_t name_len, const LayerEntry *e,
                        MsbError *err) {
        size_t need = strlen(e->hardlink) + 1, len, depth, tname_len;
        ErofsInode *tdir;
        const char *tname;
        ErofsDentry *d;
        int r;

        if (need > c->scratch_alloc) {
                char *p = realloc(c->scratch, need);
                if (!p)
                        return -ENOMEM;
                c->scratch = p;
                c->scratch_alloc = need;
        }
        r = layer_path_normalize(e->hardlink, c->scratch, c->scratch_alloc, &len, &depth);
        if (r == -EINVAL || r == -ENAMETOOLONG || (r == 0 && len == 0))
                return reject(err, -EBADMSG, e->raw_path, "is a hard link to an invalid path");
        if (r < 0)
                return r;
        r = resolve_parent(c, c->scratch, len, false, e->raw_path, &tdir, &tname, &tname_len, err);
        d = r == 0 ? erofs_tree_lookup(c->tree, tdir, tname, tname_len) : NULL;
        if (!d)
                return reject(err, -ENOENT, e->raw_path, "is a hard link to an entry not in the layer before it");
        if (S_ISDIR(d->inode->mode))
                return reject(err, -EPERM, e->raw_path, "is a hard link to a directory");
        return erofs_tree_link(c->tree, dir, name, name_len, d->inode);
}

/* A whiteout of `name` in dir: a 0/0 character device in its place. */
static int add_whiteout(Converter *c, ErofsInode *dir, const char *name, size_t name_len, const LayerEntry *e,
                        MsbError *err) {
        ErofsInode *i;
        int r;

        if (name_len == 0)
                return reject(err, -EBADMSG, e->raw_path, "is a whiteout of nothing");
        r = erofs_tree_inode_new(c->tree, S_IFCHR, &i);
        if (r < 0)
                return r;
        i->uid = e->uid;
        i->gid = e->gid;
        i->mtime = e->mtime;
        i->mtime_nsec = e->mtime_nsec;
        i->rdev = erofs_encode_dev(0, 0);
        return erofs_tree_link(c->tree, dir, name, name_len, i);
}

/* A new inode of one of the types a layer holds, with its content: a
 * regular file's data, a symlink's target, a device's number. */
static int add_node(Converter *c, ErofsInode *dir, const char *name, size_t name_len, uint32_t type,
                    const LayerEntry *e, MsbError *err) {
        ErofsInode *i;
        int r;

        /* What a layer costs is what it means, not what its tar costs: a
         * sparse member of a few bytes can stand for terabytes. The
         * apparent sizes count against the same limit as the tar stream,
         * before a byte of the file is written. */
        if (type == S_IFREG) {
                if (e->size > c->limits->uncompressed_bytes - c->file_bytes)
                        return limit_exceeded(err, "layer_uncompressed_bytes", c->limits->uncompressed_bytes,
                                              e->raw_path);
                c->file_bytes += e->size;
        }

        r = erofs_tree_inode_new(c->tree, type, &i);
        if (r < 0)
                return r;
        apply_metadata(i, e);
        r = apply_xattrs(c, i, e, err);
        if (r < 0)
                return r;

        switch (type) {
        case S_IFREG:
                r = copy_data(c, i, e, err);
                break;
        case S_IFLNK: {
                size_t n = e->symlink ? strlen(e->symlink) : 0;
                if (n == 0)
                        return reject(err, -EBADMSG, e->raw_path, "is a symlink without a target");
                if (n > c->limits->path_bytes)
                        return limit_exceeded(err, "path_bytes", c->limits->path_bytes, e->raw_path);
                /* Linux reads at most PATH_MAX - 1 bytes of a link target. */
                if (n >= EROFS_BLKSZ)
                        return reject(err, -ENAMETOOLONG, e->raw_path, "is a symlink whose target is longer than 4095 bytes");
                r = erofs_tree_strdup(c->tree, e->symlink, n, &i->symlink);
                i->size = n;
                break;
        }
        case S_IFCHR:
        case S_IFBLK:
                i->rdev = erofs_encode_dev(e->rdev_major, e->rdev_minor);
                r = 0;
                break;
        default:
                r = 0;
        }
        if (r < 0)
                return r;
        return erofs_tree_link(c->tree, dir, name, name_len, i);
}

static int add_entry(Converter *c, const LayerEntry *e, MsbError *err) {
        uint32_t type = e->mode & S_IFMT;
        ErofsInode *dir, *i;
        const char *name;
        size_t name_len;
        ErofsDentry *d;
        int r;

        r = count_entry(c, e->raw_path, err);
        if (r < 0)
                return r;
        if (e->path_len > c->limits->path_bytes)
                return limit_exceeded(err, "path_bytes", c->limits->path_bytes, e->raw_path);
        if (e->depth > c->limits->path_depth)
                return limit_exceeded(err, "path_depth", c->limits->path_depth, e->raw_path);

        if (e->path_len == 0) {
                /* "./": the root directory's own metadata. */
                if (e->hardlink || type != S_IFDIR)
                        return reject(err, -EBADMSG, e->raw_path, "names the root but is not a directory");
                i = erofs_tree_root(c->tree);
                erofs_inode_remove_xattr(i, EROFS_IMPLICIT_DIR_XATTR);
                apply_metadata(i, e);
                return apply_xattrs(c, i, e, err);
        }

        r = resolve_parent(c, e->path, e->path_len, true, e->raw_path, &dir, &name, &name_len, err);
        if (r < 0)
                return r;

        if (name_len == strlen(WHITEOUT_OPAQUE) && memcmp(name, WHITEOUT_OPAQUE, name_len) == 0)
                return erofs_inode_set_xattr(dir, OVERLAY_OPAQUE_XATTR, "y", 1);
        if (name_len >= strlen(WHITEOUT_META_PREFIX) &&
            memcmp(name, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0)
                return 0;
        if (name_len >= strlen(WHITEOUT_PREFIX) && memcmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0)
                return add_whiteout(c, dir, name + strlen(WHITEOUT_PREFIX), name_len - strlen(WHITEOUT_PREFIX), e,
                                    err);

        if (e->hardlink)
                return add_hardlink(c, dir, name, name_len, e, err);

        if (type == S_IFDIR) {
                /* Extracting a directory over an existing one keeps its
                 * contents and updates its metadata (tar semantics). */
                d = erofs_tree_lookup(c->tree, dir, name, name_len);
                if (d && S_ISDIR(d->inode->mode)) {
                        erofs_inode_remove_xattr(d->inode, EROFS_IMPLICIT_DIR_XATTR);
                        apply_metadata(d->inode, e);
                        return apply_xattrs(c, d->inode, e, err);
                }
        } else if (type != S_IFREG && type != S_IFLNK && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO)
                return reject(err, -EBADMSG, e->raw_path, "has a type that a layer cannot hold");

        return add_node(c, dir, name, name_len, type, e, err);
}

static int digest_mismatch(MsbError *err, const char *what, const char *expected, const char *actual) {
        if (err && !err->set) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH, "%s is %s, expected %s", what, actual,
                              expected);
                msb_error_add_data(err, "expected", json_string(expected));
                msb_error_add_data(err, "actual", json_string(actual));
        }
        return -EBADMSG;
}

static bool digest_is_sha256(const char *d) {
        return startswith(d, "sha256:");
}

/* Turns every tar entry into the tree and the data area. */
static int convert_entries(Converter *c, const char *expected_blob_digest, MsbError *err) {
        char blob_digest[72];
        LayerEntry e;
        int r;

        for (;;) {
                r = layer_reader_next(c->reader, &e, err);
                if (r == 0)
                        return 0;
                if (r > 0)
                        r = add_entry(c, &e, err);
                if (r >= 0)
                        continue;
                /* A stream that breaks off is most often a corrupt download:
                 * if the blob's digest is known and wrong, say that rather
                 * than what the damage looked like. */
                if (expected_blob_digest && err && err->set && err->kind == PROTO_ERROR_LAYER_REJECTED &&
                    layer_reader_blob_digest(c->reader, blob_digest) == 0 &&
                    !streq(blob_digest, expected_blob_digest)) {
                        MsbError better = {};
                        digest_mismatch(&better, "layer blob digest", expected_blob_digest, blob_digest);
                        msb_error_clear(err);
                        *err = better;
                }
                if (err && !err->set)
                        msb_error_from_errno(err, r, "writing the layer image");
                return r;
        }
}

int erofs_layer_convert_with_limits(int blob_fd, const char *media_type,
                                    const char *expected_blob_digest, uint64_t expected_blob_size,
                                    const char *expected_diff_id, const ErofsLayerLimits *limits,
                                    int out_fd, ErofsLayerInfo *ret, MsbError *err) {
        _cleanup_(layer_reader_freep) LayerReader *reader = NULL;
        _cleanup_(erofs_writer_freep) ErofsWriter *writer = NULL;
        char blob_digest[72], diff_id[72];
        uint64_t blob_bytes, tar_bytes, size;
        ErofsWriterOptions opts = {};
        LayerReaderLimits rlimits = { .uncompressed_bytes = limits->uncompressed_bytes };
        _cleanup_(converter_done) Converter c = { .limits = limits };
        int r;

        if (expected_blob_digest && !digest_is_sha256(expected_blob_digest))
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_INVALID_IMAGE,
                                     "unsupported digest algorithm in %s", expected_blob_digest);
        if (expected_diff_id && !digest_is_sha256(expected_diff_id))
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_INVALID_IMAGE,
                                     "unsupported digest algorithm in diff_id %s", expected_diff_id);

        r = layer_reader_new(blob_fd, media_type, expected_blob_size, expected_blob_digest != NULL, &rlimits, &reader,
                             err);
        if (r < 0)
                return r;
        r = erofs_writer_new(out_fd, 0, &writer);
        if (r < 0)
                return msb_error_from_errno(err, r, "creating the layer image");
        erofs_writer_set_keep_free(writer, limits->keep_free_bytes);
        c.writer = writer;
        c.tree = erofs_writer_tree(writer);
        c.reader = reader;
        /* Until a "./" entry says otherwise, the root is implicit too. */
        r = erofs_inode_set_xattr(erofs_tree_root(c.tree), EROFS_IMPLICIT_DIR_XATTR, "y", 1);
        if (r < 0)
                return r;

        r = convert_entries(&c, expected_blob_digest, err);
        if (r < 0)
                return r;
        r = layer_reader_finish(reader, blob_digest, &blob_bytes, diff_id, &tar_bytes, err);
        if (r < 0)
                return r;
        if (expected_blob_digest && !streq(blob_digest, expected_blob_digest))
                return digest_mismatch(err, "layer blob digest", expected_blob_digest, blob_digest);
        if (expected_diff_id && !streq(diff_id, expected_diff_id))
                return digest_mismatch(err, "layer diff_id", expected_diff_id, diff_id);

        r = erofs_writer_uuid_from_digest("msb-imaged layer ", diff_id, opts.uuid);
        if (r < 0)
                return msb_error_set(err, r, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        r = erofs_writer_finish(writer, &opts, &size);
        if (r == -EFBIG)
                return msb_error_set(err, r, PROTO_ERROR_LAYER_REJECTED, "layer is too large for a 4 KiB-block EROFS image");
        if (r < 0)
                return msb_error_from_errno(err, r, "writing the layer image");

        c.kept = true;
        memcpy(ret->diff_id, diff_id, sizeof(ret->diff_id));
        ret->uncompressed_bytes = tar_bytes;
        ret->erofs_bytes = size;
        ret->entries = c.entries;
        return 0;
}

int erofs_layer_convert(int blob_fd, const char *media_type,
                        const char *expected_blob_digest, uint64_t expected_blob_size,
                        const char *expected_diff_id,
                        int out_fd, ErofsLayerInfo *ret, MsbError *err) {
        ErofsLayerLimits limits = erofs_layer_limits_default();

        return erofs_layer_convert_with_limits(blob_fd, media_type, expected_blob_digest, expected_blob_size,
                                               expected_diff_id, &limits, out_fd, ret, err);
}
