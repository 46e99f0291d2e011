/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the EROFS module: the pieces one at a time (paths, media
 * types, CRC32C, the tree, writer and reader round trips, the VMDK text,
 * limits), and the converter on tars written here with libarchive.
 */

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "erofs_fs.h"
#include "erofs_layer.h"
#include "erofs_reader.h"
#include "erofs_tree.h"
#include "erofs_writer.h"
#include "layer_reader.h"
#include "vmdk.h"

static int memfd(void) {
        int fd = memfd_create("erofs-test", MFD_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        return fd;
}

static char *fd_path(int fd) {
        char *p = NULL;
        ck_assert_int_ge(asprintf(&p, "/proc/self/fd/%d", fd), 0);
        return p;
}

START_TEST(test_crc32c) {
        /* The CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720
         * appendix B.4); EROFS keeps the register without the final
         * inversion. */
        ck_assert_uint_eq(erofs_crc32c(~0U, "123456789", 9), ~0xE3069283U);
        ck_assert_uint_eq(erofs_crc32c(~0U, "", 0), ~0U);
}
END_TEST

START_TEST(test_path_normalize) {
        static const struct {
                const char *in, *out;
                size_t depth;
                int r;
        } cases[] = {
                { "a", "a", 1, 0 },
                { "./a", "a", 1, 0 },
                { "/a/b/", "a/b", 2, 0 },
                { "a//b///c", "a/b/c", 3, 0 },
                { "./", "", 0, 0 },
                { ".", "", 0, 0 },
                { "/", "", 0, 0 },
                { "a/./b", "a/b", 2, 0 },
                { "..", NULL, 0, -EINVAL },
                { "a/../b", NULL, 0, -EINVAL },
                { "a/..", NULL, 0, -EINVAL },
                { "...", "...", 1, 0 },
                { "..a", "..a", 1, 0 },
        };
        char out[64];
        size_t len, depth;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int r = layer_path_normalize(cases[i].in, out, sizeof(out), &len, &depth);
                ck_assert_msg(r == cases[i].r, "%s: %d", cases[i].in, r);
                if (r == 0) {
                        ck_assert_str_eq(out, cases[i].out);
                        ck_assert_uint_eq(len, strlen(cases[i].out));
                        ck_assert_uint_eq(depth, cases[i].depth);
                }
        }

        char name[300];
        memset(name, 'n', 256);
        name[256] = 0;
        char big[600];
        ck_assert_int_eq(layer_path_normalize(name, big, sizeof(big), &len, &depth), -ENAMETOOLONG);
        name[255] = 0;
        ck_assert_int_eq(layer_path_normalize(name, big, sizeof(big), &len, &depth), 0);
        ck_assert_int_eq(layer_path_normalize("abcdef", out, 4, &len, &depth), -E2BIG);
}
END_TEST

START_TEST(test_media_types) {
        LayerCompression c;
        bool any;

        ck_assert_int_eq(layer_media_type_compression("application/vnd.oci.image.layer.v1.tar", &c, &any), 0);
        ck_assert(c == LAYER_COMPRESSION_NONE && !any);
        ck_assert_int_eq(layer_media_type_compression("application/vnd.oci.image.layer.v1.tar+gzip", &c, &any), 0);
        ck_assert(c == LAYER_COMPRESSION_GZIP);
        ck_assert_int_eq(layer_media_type_compression("application/vnd.oci.image.layer.v1.tar+zstd", &c, &any), 0);
        ck_assert(c == LAYER_COMPRESSION_ZSTD);
        ck_assert_int_eq(layer_media_type_compression("application/vnd.docker.image.rootfs.diff.tar.gzip", &c, &any), 0);
        ck_assert(c == LAYER_COMPRESSION_GZIP);
        ck_assert_int_eq(layer_media_type_compression(NULL, &c, &any), 0);
        ck_assert(any);
        ck_assert_int_eq(layer_media_type_compression("application/vnd.oci.image.layer.v1.tar+bzip2", &c, &any),
                         -EOPNOTSUPP);

        /* The magic, and the OCI type a blob with it is described by. */
        static const uint8_t gz[] = { 0x1f, 0x8b, 0x08 }, zst[] = { 0x28, 0xb5, 0x2f, 0xfd }, tar[] = "etc/";
        ck_assert(layer_compression_sniff(gz, sizeof(gz)) == LAYER_COMPRESSION_GZIP);
        ck_assert(layer_compression_sniff(zst, sizeof(zst)) == LAYER_COMPRESSION_ZSTD);
        ck_assert(layer_compression_sniff(zst, 3) == LAYER_COMPRESSION_NONE);
        ck_assert(layer_compression_sniff(tar, sizeof(tar)) == LAYER_COMPRESSION_NONE);
        ck_assert(layer_compression_sniff(gz, 0) == LAYER_COMPRESSION_NONE);
        ck_assert_str_eq(layer_compression_media_type(LAYER_COMPRESSION_GZIP), "application/vnd.oci.image.layer.v1.tar+gzip");
        ck_assert_str_eq(layer_compression_media_type(LAYER_COMPRESSION_ZSTD), "application/vnd.oci.image.layer.v1.tar+zstd");
        ck_assert_str_eq(layer_compression_media_type(LAYER_COMPRESSION_NONE), "application/vnd.oci.image.layer.v1.tar");
}
END_TEST

START_TEST(test_limits_are_the_protocol_limits) {
        ErofsLayerLimits l = erofs_layer_limits_default();

        /* The values the README and proto/openrpc.json fix, through the constants
         * generated from proto/openrpc.json. */
        ck_assert_uint_eq(l.entries, PROTO_LIMIT_LAYER_ENTRIES);
        ck_assert_uint_eq(l.entries, 1000000);
        ck_assert_uint_eq(l.path_bytes, PROTO_LIMIT_PATH_BYTES);
        ck_assert_uint_eq(l.path_bytes, 4096);
        ck_assert_uint_eq(l.path_depth, PROTO_LIMIT_PATH_DEPTH);
        ck_assert_uint_eq(l.path_depth, 128);
        ck_assert_uint_eq(l.uncompressed_bytes, PROTO_LIMIT_LAYER_UNCOMPRESSED_BYTES);
        ck_assert_uint_eq(l.uncompressed_bytes, 10 * GiB);
}
END_TEST

START_TEST(test_dev_encoding) {
        uint32_t ma, mi;

        erofs_decode_dev(erofs_encode_dev(1, 3), &ma, &mi);
        ck_assert_uint_eq(ma, 1);
        ck_assert_uint_eq(mi, 3);
        erofs_decode_dev(erofs_encode_dev(250, 70000), &ma, &mi);
        ck_assert_uint_eq(ma, 250);
        ck_assert_uint_eq(mi, 70000);
}
END_TEST

START_TEST(test_tree_links_and_xattrs) {
        _cleanup_(erofs_tree_freep) ErofsTree *t = NULL;
        ErofsInode *root, *a, *b;
        const void *v;
        size_t vl;

        ck_assert_int_eq(erofs_tree_new(&t), 0);
        root = erofs_tree_root(t);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0644, &a), 0);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0644, &b), 0);
        ck_assert_int_eq(erofs_tree_link(t, root, "x", 1, a), 0);
        ck_assert_ptr_eq(erofs_tree_lookup(t, root, "x", 1)->inode, a);
        ck_assert_int_eq(erofs_tree_link(t, root, "x", 1, b), 0);
        ck_assert_ptr_eq(erofs_tree_lookup(t, root, "x", 1)->inode, b);
        /* One name, replaced: one entry in the directory's list. */
        ck_assert_ptr_nonnull(root->children);
        ck_assert_ptr_null(root->children->next);
        erofs_tree_unlink(t, root, "x", 1);
        ck_assert_ptr_null(erofs_tree_lookup(t, root, "x", 1));
        ck_assert_int_eq(erofs_tree_link(t, root, "", 0, a), -ENAMETOOLONG);

        /* Many names: the hash grows and still finds every one. */
        for (int i = 0; i < 5000; i++) {
                char n[16];
                snprintf(n, sizeof(n), "f%d", i);
                ck_assert_int_eq(erofs_tree_link(t, root, n, strlen(n), a), 0);
        }
        ck_assert_ptr_eq(erofs_tree_lookup(t, root, "f4999", 5)->inode, a);

        ck_assert_int_eq(erofs_inode_set_xattr(a, "user.b", "2", 1), 0);
        ck_assert_int_eq(erofs_inode_set_xattr(a, "user.a", "1", 1), 0);
        ck_assert_int_eq(erofs_inode_set_xattr(a, "security.capability", "cap", 3), 0);
        ck_assert_int_eq(erofs_inode_set_xattr(a, "user.a", "111", 3), 0);
        ck_assert(erofs_inode_get_xattr(a, "user.a", &v, &vl));
        ck_assert_uint_eq(vl, 3);
        ck_assert(memcmp(v, "111", 3) == 0);
        /* Sorted by index, then name: user.a, user.b, security.capability. */
        ck_assert_uint_eq(a->xattrs[1], EROFS_XATTR_INDEX_USER);
        ck_assert_uint_eq(a->xattrs[4], 'a');
        erofs_inode_remove_xattr(a, "user.a");
        ck_assert(!erofs_inode_get_xattr(a, "user.a", &v, &vl));
        ck_assert_int_eq(erofs_inode_set_xattr(a, "system.nfs4_acl", "x", 1), -EOPNOTSUPP);
        ck_assert_int_eq(erofs_inode_set_xattr(a, "user.", "x", 1), -EOPNOTSUPP);
}
END_TEST

typedef struct Names {
        char names[600][64];
        size_t n;
} Names;

static int collect_cb(const char *name, size_t len, uint64_t nid, uint8_t type, void *userdata) {
        Names *n = userdata;
        ck_assert_uint_lt(n->n, 600);
        memcpy(n->names[n->n], name, len);
        n->names[n->n][len] = 0;
        n->n++;
        return 0;
}

START_TEST(test_writer_reader_round_trip) {
        _cleanup_(erofs_writer_freep) ErofsWriter *w = NULL;
        _cleanup_(erofs_image_closep) ErofsImage *img = NULL;
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ Names *names = calloc(1, sizeof(Names));
        ErofsWriterOptions opts = {};
        ErofsInode *dir, *f, *l;
        ErofsInodeView v, fv;
        uint64_t size;
        char target[4096], buf[4096];
        int fd = memfd();
        ErofsTree *t;

        ck_assert_int_eq(erofs_writer_new(fd, 0, &w), 0);
        t = erofs_writer_tree(w);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFDIR | 0750, &dir), 0);
        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "dir", 3, dir), 0);

        /* 500 entries with 40-byte names need several directory blocks. */
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0600, &f), 0);
        f->uid = 70000;
        f->mtime = 1234;
        ck_assert_int_eq(erofs_writer_file_begin(w, 10), 0);
        ck_assert_int_eq(erofs_writer_file_write(w, 0, "0123456789", 10), 0);
        ck_assert_int_eq(erofs_writer_file_end(w, f), 0);
        ck_assert_uint_eq(f->size, 10);
        ck_assert_ptr_null(f->chunks);
        for (int i = 499; i >= 0; i--) {
                char n[64];
                snprintf(n, sizeof(n), "%04d-a-name-long-enough-to-fill-blocks---", i);
                ck_assert_int_eq(erofs_tree_link(t, dir, n, strlen(n), f), 0);
        }

        /* A symlink target of 4095 bytes cannot be inline. */
        memset(target, 't', 4095);
        target[4095] = 0;
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFLNK | 0777, &l), 0);
        ck_assert_int_eq(erofs_tree_strdup(t, target, 4095, &l->symlink), 0);
        l->size = 4095;
        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "link", 4, l), 0);
        ck_assert_int_eq(erofs_inode_set_xattr(dir, "trusted.x", "y", 1), 0);

        ck_assert_int_eq(erofs_writer_finish(w, &opts, &size), 0);
        ck_assert_uint_eq(size % EROFS_BLKSZ, 0);
        ck_assert_int_eq(lseek(fd, 0, SEEK_END), (off_t) size);

        path = fd_path(fd);
        ck_assert_int_eq(erofs_image_open(path, &img), 0);
        ck_assert_int_eq(erofs_image_inode(img, erofs_image_root_nid(img), &v), 0);
        ck_assert(S_ISDIR(v.mode));
        ck_assert_int_eq(erofs_image_readdir(img, &v, collect_cb, names), 0);
        ck_assert_uint_eq(names->n, 2);
        ck_assert_str_eq(names->names[0], "dir");
        ck_assert_str_eq(names->names[1], "link");

        /* Find dir's nid through the layout the writer made; its tree
         * looks no name up once finished. */
        ck_assert_ptr_null(erofs_tree_lookup(t, erofs_tree_root(t), "dir", 3));
        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "late", 4, dir), -EBUSY);
        ck_assert_int_eq(erofs_image_inode(img, erofs_writer_nid(w, dir), &v), 0);
        ck_assert_uint_eq(v.mode, S_IFDIR | 0750);
        ck_assert_uint_gt(v.size, EROFS_BLKSZ);
        names->n = 0;
        ck_assert_int_eq(erofs_image_readdir(img, &v, collect_cb, names), 0);
        ck_assert_uint_eq(names->n, 500);
        for (size_t i = 1; i < names->n; i++)
                ck_assert_int_lt(strcmp(names->names[i - 1], names->names[i]), 0);

        ck_assert_int_eq(erofs_image_inode(img, erofs_writer_nid(w, f), &fv), 0);
        ck_assert_uint_eq(fv.uid, 70000);
        ck_assert_uint_eq(fv.nlink, 500);
        ck_assert_uint_eq(fv.size, 10);
        ck_assert_int_eq(fv.mtime, 1234);
        ck_assert_int_eq(erofs_image_read(img, &fv, 0, buf, 10), 0);
        ck_assert(memcmp(buf, "0123456789", 10) == 0);

        ck_assert_int_eq(erofs_image_inode(img, erofs_writer_nid(w, l), &v), 0);
        ck_assert_uint_eq(v.size, 4095);
        ck_assert_int_eq(erofs_image_read(img, &v, 0, buf, 4095), 0);
        ck_assert(memcmp(buf, target, 4095) == 0);
        img = erofs_image_close(img);

        /* One flipped byte in the superblock's block is caught by its checksum. */
        ck_assert_int_eq(pwrite(fd, "X", 1, 3000), 1);
        ck_assert_int_eq(erofs_image_open(path, &img), -EUCLEAN);
        close(fd);
}
END_TEST

/* A piece of a file: offset and length. */
typedef struct Extent {
        uint64_t offset, length;
} Extent;

static uint8_t pattern_byte(uint64_t off) {
        return (uint8_t) (off * 131 + (off >> 12) + 1) | 1;
}

START_TEST(test_chunk_bits_bound_the_map) {
        static const uint64_t sizes[] = { 0, 1, 16 * MiB, 16 * MiB + 1, 300 * 1000 * 1000ULL, 10 * GiB,
                                          1ULL << 50, 1ULL << 55 };

        ck_assert_uint_eq(erofs_writer_chunk_bits(0), 0);
        ck_assert_uint_eq(erofs_writer_chunk_bits(16 * MiB), 0);   /* 4096 chunks of 4 KiB */
        ck_assert_uint_eq(erofs_writer_chunk_bits(16 * MiB + 1), 1);
        ck_assert_uint_eq(erofs_writer_chunk_bits(10 * GiB), 10);  /* 2560 chunks of 4 MiB */
        for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
                unsigned bits = erofs_writer_chunk_bits(sizes[k]);
                ck_assert_uint_le(erofs_chunk_count(sizes[k], bits), EROFS_WRITER_FILE_CHUNKS_MAX);
                /* The smallest chunk size that does it. */
                if (bits > 0)
                        ck_assert_uint_gt(erofs_chunk_count(sizes[k], bits - 1), EROFS_WRITER_FILE_CHUNKS_MAX);
        }
}
END_TEST

/* Writes `size` bytes of pattern_byte() in the given pieces, each piece
 * (offset, length) and the rest a hole; fills `expect` to match. */
static void write_pieces(ErofsWriter *w, ErofsInode *i, uint64_t size, const Extent *pieces, uint8_t *expect) {
        uint8_t buf[8192];

        memset(expect, 0, size);
        ck_assert_int_eq(erofs_writer_file_begin(w, size), 0);
        for (const Extent *x = pieces; x->length > 0; x++) {
                ck_assert_uint_le(x->length, sizeof(buf));
                for (uint64_t k = 0; k < x->length; k++)
                        expect[x->offset + k] = buf[k] = pattern_byte(x->offset + k);
                ck_assert_int_eq(erofs_writer_file_write(w, x->offset, buf, x->length), 0);
        }
        ck_assert_int_eq(erofs_writer_file_end(w, i), 0);
        ck_assert_uint_eq(i->size, size);
}

static void assert_reads_back(const ErofsImage *img, uint64_t nid, const uint8_t *expect, uint64_t size) {
        _cleanup_free_ uint8_t *got = malloc(size ? size : 1);
        ErofsInodeView v;

        ck_assert_int_eq(erofs_image_inode(img, nid, &v), 0);
        ck_assert_uint_eq(v.size, size);
        ck_assert_int_eq(erofs_image_read(img, &v, 0, got, size), 0);
        ck_assert(memcmp(got, expect, size) == 0);
        /* A read that starts inside a hole and ends inside data. */
        if (size > 5000)
                ck_assert_int_eq(erofs_image_read(img, &v, size - 5000, got, 5000), 0);
}

static uint64_t count_holes(const ErofsImage *img, const ErofsInodeView *v) {
        uint64_t holes = 0;
        uint32_t blkaddr;
        uint16_t device;

        for (uint64_t k = 0; k < v->chunk_count; k++) {
                ck_assert_int_eq(erofs_image_chunk(img, v, k, &blkaddr, &device), 0);
                holes += blkaddr == EROFS_NULL_ADDR;
        }
        return holes;
}

START_TEST(test_writer_sparse_round_trip) {
        static const Extent sparse[] = { { 5, 3 }, { 9 * MiB + 1, 5000 }, { 20 * MiB - 1, 1 }, {} };
        static const Extent dense[] = { { 0, 100 }, { 200, 8000 }, { 9000, 1000 }, {} };
        static const Extent none[] = { {} };
        _cleanup_(erofs_writer_freep) ErofsWriter *w = NULL;
        _cleanup_(erofs_image_closep) ErofsImage *img = NULL;
        _cleanup_free_ uint8_t *expect_a = malloc(20 * MiB), *expect_b = malloc(10000), *expect_c = malloc(MiB);
        _cleanup_free_ char *path = NULL;
        ErofsWriterOptions opts = {};
        ErofsInode *a, *b, *c, *d;
        ErofsInodeView v;
        uint64_t size;
        uint8_t sb[128];
        int fd = memfd();
        ErofsTree *t;

        ck_assert_int_eq(erofs_writer_new(fd, 0, &w), 0);
        t = erofs_writer_tree(w);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0644, &a), 0);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0644, &b), 0);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0644, &c), 0);
        ck_assert_int_eq(erofs_tree_inode_new(t, S_IFREG | 0644, &d), 0);

        /* 20 MiB with three small pieces: 8 KiB chunks, three of them written. */
        write_pieces(w, a, 20 * MiB, sparse, expect_a);
        ck_assert_ptr_nonnull(a->chunks);
        ck_assert_uint_eq(a->chunk_bits, 1);
        /* Holes smaller than a chunk: every chunk has data, so it stays flat. */
        write_pieces(w, b, 10000, dense, expect_b);
        ck_assert_ptr_null(b->chunks);
        /* All hole: a map of nothing but holes. */
        write_pieces(w, c, MiB, none, expect_c);
        ck_assert_ptr_nonnull(c->chunks);

        /* Pieces go forward and stay inside the file. */
        ck_assert_int_eq(erofs_writer_file_begin(w, 100), 0);
        ck_assert_int_eq(erofs_writer_file_write(w, 50, "x", 1), 0);
        ck_assert_int_eq(erofs_writer_file_write(w, 10, "x", 1), -ERANGE);
        ck_assert_int_eq(erofs_writer_file_write(w, 99, "xy", 2), -ERANGE);
        ck_assert_int_eq(erofs_writer_file_begin(w, 100), -EBUSY);
        ck_assert_int_eq(erofs_writer_file_end(w, d), 0);
        ck_assert_ptr_null(d->chunks);  /* its one chunk has data */
        /* A file so large that no chunk size keeps its map bounded. */
        ck_assert_int_eq(erofs_writer_file_begin(w, 1ULL << 56), -EFBIG);

        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "a", 1, a), 0);
        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "b", 1, b), 0);
        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "c", 1, c), 0);
        ck_assert_int_eq(erofs_tree_link(t, erofs_tree_root(t), "d", 1, d), 0);
        ck_assert_int_eq(erofs_writer_finish(w, &opts, &size), 0);
        /* 20 MiB and 1 MiB of apparent size cost a few chunks. */
        ck_assert_uint_lt(size, 64 * 1024);
        ck_assert_int_eq(pread(fd, sb, sizeof(sb), EROFS_SUPER_OFFSET), (ssize_t) sizeof(sb));
        ck_assert_uint_eq(erofs_get_le32(sb + EROFS_OFF(struct erofs_super_block, feature_incompat)),
                          EROFS_FEATURE_INCOMPAT_CHUNKED_FILE);

        path = fd_path(fd);
        ck_assert_int_eq(erofs_image_open(path, &img), 0);
        ck_assert_int_eq(erofs_image_inode(img, erofs_writer_nid(w, a), &v), 0);
        ck_assert_uint_eq(v.datalayout, EROFS_INODE_CHUNK_BASED);
        ck_assert_uint_eq(v.chunk_format, 1);  /* a block map, 8 KiB chunks */
        ck_assert_uint_eq(v.chunk_count, 20 * MiB / 8192);
        ck_assert_uint_eq(count_holes(img, &v), v.chunk_count - 3);
        assert_reads_back(img, erofs_writer_nid(w, a), expect_a, 20 * MiB);
        ck_assert_int_eq(erofs_image_inode(img, erofs_writer_nid(w, c), &v), 0);
        ck_assert_uint_eq(count_holes(img, &v), v.chunk_count);
        assert_reads_back(img, erofs_writer_nid(w, c), expect_c, MiB);
        ck_assert_int_eq(erofs_image_inode(img, erofs_writer_nid(w, b), &v), 0);
        ck_assert_uint_eq(v.datalayout, EROFS_INODE_FLAT_PLAIN);
        assert_reads_back(img, erofs_writer_nid(w, b), expect_b, 10000);
        close(fd);
}
END_TEST

START_TEST(test_vmdk) {
        const char *layers[] = { "/store/layers/a.erofs", "/store/layers/b.erofs" };
        const uint64_t sizes[] = { 8192, 3 * GiB };
        MsbError err = {};
        char text[4096];
        int fd = memfd();
        ssize_t n;

        ck_assert_int_eq(vmdk_write(fd, "/store/fsmeta.erofs", 4096, layers, sizes, 2, &err), 0);
        n = pread(fd, text, sizeof(text) - 1, 0);
        ck_assert_int_gt(n, 0);
        text[n] = 0;
        ck_assert_ptr_nonnull(strstr(text, "createType=\"twoGbMaxExtentFlat\""));
        const char *e1 = strstr(text, "RW 8 FLAT \"/store/fsmeta.erofs\" 0\n");
        const char *e2 = strstr(text, "RW 16 FLAT \"/store/layers/a.erofs\" 0\n");
        const char *e3 = strstr(text, "RW 4194304 FLAT \"/store/layers/b.erofs\" 0\n");
        const char *e4 = strstr(text, "RW 2097152 FLAT \"/store/layers/b.erofs\" 4194304\n");
        ck_assert(e1 && e2 && e3 && e4);
        ck_assert(e1 < e2 && e2 < e3 && e3 < e4);
        close(fd);

        fd = memfd();
        ck_assert_int_eq(vmdk_write(fd, "relative.erofs", 4096, NULL, NULL, 0, &err), -EINVAL);
        ck_assert(err.set);
        msb_error_clear(&err);
        ck_assert_int_eq(vmdk_write(fd, "/a\"b", 4096, NULL, NULL, 0, &err), -EINVAL);
        msb_error_clear(&err);
        ck_assert_int_eq(vmdk_write(fd, "/odd", 1000, NULL, NULL, 0, &err), -EINVAL);
        msb_error_clear(&err);
        close(fd);
}
END_TEST

START_TEST(test_fsmeta_layer_count_limit) {
        const char *one = "/nonexistent";
        MsbError err = {};
        uint64_t size;
        int fd = memfd();

        ck_assert_int_eq(erofs_fsmeta_build(&one, 0, "sha256:x", fd, &size, &err), -E2BIG);
        ck_assert(err.set && err.kind == PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "layers_per_image");
        ck_assert_int_eq(json_integer_value(json_object_get(err.data, "max")), PROTO_LIMIT_LAYERS_PER_IMAGE);
        msb_error_clear(&err);
        ck_assert_int_eq(erofs_fsmeta_build(&one, PROTO_LIMIT_LAYERS_PER_IMAGE + 1, "sha256:x", fd, &size, &err),
                         -E2BIG);
        msb_error_clear(&err);
        /* A missing layer image is a store error, not a crash. */
        ck_assert_int_lt(erofs_fsmeta_build(&one, 1, "sha256:x", fd, &size, &err), 0);
        ck_assert(err.set && err.kind == PROTO_ERROR_STORE_ERROR);
        msb_error_clear(&err);
        close(fd);
}
END_TEST

/* Writes a ustar archive with libarchive: entries "name=content" or "name/" for directories. */
static int tar_memfd(const char *const *entries) {
        struct archive *a = archive_write_new();
        int fd = memfd();

        ck_assert_int_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_fd(a, fd), ARCHIVE_OK);
        for (size_t i = 0; entries[i]; i++) {
                struct archive_entry *e = archive_entry_new();
                const char *eq = strchr(entries[i], '=');
                char name[512];
                size_t n = eq ? (size_t) (eq - entries[i]) : strlen(entries[i]);

                memcpy(name, entries[i], n);
                name[n] = 0;
                archive_entry_set_pathname(e, name);
                if (eq) {
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_size(e, (la_int64_t) strlen(eq + 1));
                } else {
                        archive_entry_set_filetype(e, AE_IFDIR);
                        archive_entry_set_perm(e, 0755);
                }
                archive_entry_set_mtime(e, 1600000000, 0);
                ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
                if (eq)
                        ck_assert_int_eq(archive_write_data(a, eq + 1, strlen(eq + 1)), (la_ssize_t) strlen(eq + 1));
                archive_entry_free(e);
        }
        ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
        ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
        return fd;
}

START_TEST(test_convert_deterministic) {
        static const char *const entries[] = { "etc/", "etc/a=alpha", "etc/b=beta", "z=zed", NULL };
        ErofsLayerInfo i1 = {}, i2 = {};
        MsbError err = {};
        int in = tar_memfd(entries), o1 = memfd(), o2 = memfd();
        char b1[65536], b2[65536];

        ck_assert_int_eq(erofs_layer_convert(in, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX, NULL,
                                             o1, &i1, &err), 0);
        ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
        ck_assert_int_eq(erofs_layer_convert(in, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX,
                                             i1.diff_id, o2, &i2, &err), 0);
        ck_assert_uint_eq(i1.entries, 4);
        ck_assert_uint_eq(i1.erofs_bytes, i2.erofs_bytes);
        ck_assert_uint_le(i1.erofs_bytes, sizeof(b1));
        ck_assert_int_eq(pread(o1, b1, i1.erofs_bytes, 0), (ssize_t) i1.erofs_bytes);
        ck_assert_int_eq(pread(o2, b2, i2.erofs_bytes, 0), (ssize_t) i2.erofs_bytes);
        ck_assert(memcmp(b1, b2, i1.erofs_bytes) == 0);
        close(in);
        close(o1);
        close(o2);
}
END_TEST

START_TEST(test_convert_rejects_dotdot) {
        static const char *const entries[] = { "ok=1", "a/../../evil=2", NULL };
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in = tar_memfd(entries), out = memfd();

        ck_assert_int_lt(erofs_layer_convert(in, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX, NULL,
                                             out, &info, &err), 0);
        ck_assert(err.set && err.kind == PROTO_ERROR_LAYER_REJECTED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "entry")), "a/../../evil");
        msb_error_clear(&err);
        close(in);
        close(out);
}
END_TEST

START_TEST(test_convert_limits) {
        static const char *const entries[] = { "a=1", "b=2", "c=3", NULL };
        ErofsLayerLimits limits = erofs_layer_limits_default();
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in = tar_memfd(entries), out = memfd();

        limits.entries = 2;
        ck_assert_int_lt(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL,
                                                         UINT64_MAX, NULL, &limits, out, &info, &err), 0);
        ck_assert(err.set && err.kind == PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "layer_entries");
        ck_assert_int_eq(json_integer_value(json_object_get(err.data, "max")), 2);
        msb_error_clear(&err);

        limits = erofs_layer_limits_default();
        limits.path_depth = 0;
        ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
        ck_assert_int_lt(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL,
                                                         UINT64_MAX, NULL, &limits, out, &info, &err), 0);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "path_depth");
        msb_error_clear(&err);

        limits = erofs_layer_limits_default();
        limits.uncompressed_bytes = 1024;
        ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
        ck_assert_int_lt(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL,
                                                         UINT64_MAX, NULL, &limits, out, &info, &err), 0);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "layer_uncompressed_bytes");
        msb_error_clear(&err);
        close(in);
        close(out);
}
END_TEST

/* The directories a path implies count as entries, and the layers of one
 * image share one count: past it a conversion fails naming image_entries,
 * and takes back what it had added, so a failed layer costs the image
 * nothing. */
START_TEST(test_convert_image_entries) {
        static const char *const deep[] = { "a/b/c/f=1", NULL }, *const flat[] = { "x=1", "y=2", "z=3", NULL };
        ErofsLayerLimits limits = erofs_layer_limits_default();
        ErofsLayerInfo info = {};
        MsbError err = {};
        uint64_t used = 0;
        int in = tar_memfd(deep), in2 = tar_memfd(flat), out = memfd();

        limits.entries = 3;
        ck_assert_int_eq(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX,
                                                         NULL, &limits, out, &info, &err), -E2BIG);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "layer_entries");
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "entry")), "a/b/c/f");
        msb_error_clear(&err);

        limits = erofs_layer_limits_default();
        limits.image_entries = 6;
        limits.image_entries_used = &used;
        ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
        ck_assert_int_eq(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX,
                                                         NULL, &limits, out, &info, &err), 0);
        ck_assert_uint_eq(info.entries, 4);
        ck_assert_uint_eq(used, 4);
        /* 4 + 3 > 6: the third entry of the second layer is one too many. */
        ck_assert_int_eq(ftruncate(out, 0), 0);
        ck_assert_int_eq(erofs_layer_convert_with_limits(in2, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX,
                                                         NULL, &limits, out, &info, &err), -E2BIG);
        ck_assert_int_eq(err.kind, PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "image_entries");
        ck_assert_int_eq(json_integer_value(json_object_get(err.data, "max")), 6);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "entry")), "z");
        ck_assert_uint_eq(used, 4);
        msb_error_clear(&err);

        /* Alone, a layer is held to the image limit too. */
        limits.image_entries_used = NULL;
        limits.image_entries = 2;
        ck_assert_int_eq(lseek(in2, 0, SEEK_SET), 0);
        ck_assert_int_eq(ftruncate(out, 0), 0);
        ck_assert_int_eq(erofs_layer_convert_with_limits(in2, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX,
                                                         NULL, &limits, out, &info, &err), -E2BIG);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "image_entries");
        msb_error_clear(&err);
        close(in);
        close(in2);
        close(out);
}
END_TEST

/* The merge counts every name of every layer, whatever it does to the
 * tree (a replaced or whited-out name counts as much), against the image's
 * limit: at it the image builds, one past it is refused by name. */
START_TEST(test_fsmeta_image_entries) {
        static const char *const deep[] = { "a/b/c/f=1", NULL }, *const upper[] = { "a/b/c/f=2", ".wh.x=", NULL };
        const char *paths[2];
        ErofsLayerInfo info = {};
        MsbError err = {};
        uint64_t size;
        int in1 = tar_memfd(deep), in2 = tar_memfd(upper), l1 = memfd(), l2 = memfd(), out = memfd();
        _cleanup_free_ char *p1 = fd_path(l1), *p2 = fd_path(l2);

        ck_assert_int_eq(erofs_layer_convert(in1, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX, NULL, l1,
                                             &info, &err), 0);
        ck_assert_int_eq(erofs_layer_convert(in2, "application/vnd.oci.image.layer.v1.tar", NULL, UINT64_MAX, NULL, l2,
                                             &info, &err), 0);
        paths[0] = p1;
        paths[1] = p2;
        /* 4 names below, 5 above (a, a/b, a/b/c, a/b/c/f and the whiteout x). */
        ck_assert_int_eq(erofs_fsmeta_build_with_limits(paths, 2, "sha256:x", 9, out, &size, &err), 0);
        ck_assert_int_eq(ftruncate(out, 0), 0);
        ck_assert_int_eq(erofs_fsmeta_build_with_limits(paths, 2, "sha256:x", 8, out, &size, &err), -E2BIG);
        ck_assert(err.set && err.kind == PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "image_entries");
        ck_assert_int_eq(json_integer_value(json_object_get(err.data, "max")), 8);
        msb_error_clear(&err);
        close(in1);
        close(in2);
        close(l1);
        close(l2);
        close(out);
}
END_TEST

/* A PAX tar (GNU sparse 1.0 members, as libarchive writes them) holding
 * one regular file of `size` bytes whose data is only in the given extents
 * (offset, length pairs, ending with a zero length), each filled with a
 * byte pattern that depends on its offset; the expected content is
 * returned in *ret_content (malloc'ed) when asked for. */
static int sparse_tar_memfd(const char *name, uint64_t size, const Extent *extents, uint8_t **ret_content) {
        struct archive *a = archive_write_new();
        struct archive_entry *e = archive_entry_new();
        _cleanup_free_ uint8_t *content = calloc(1, size ? size : 1);
        int fd = memfd();

        ck_assert_ptr_nonnull(content);
        ck_assert_int_eq(archive_write_set_format_pax(a), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_fd(a, fd), ARCHIVE_OK);
        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t) size);
        archive_entry_set_mtime(e, 1600000000, 0);
        for (const Extent *x = extents; x->length > 0; x++) {
                archive_entry_sparse_add_entry(e, (la_int64_t) x->offset, (la_int64_t) x->length);
                for (uint64_t k = x->offset; k < x->offset + x->length; k++)
                        content[k] = pattern_byte(k);
        }
        ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        /* libarchive takes the whole content and stores only the extents. */
        ck_assert_int_eq(archive_write_data(a, content, size), (la_ssize_t) size);
        archive_entry_free(e);
        ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
        ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
        if (ret_content)
                *ret_content = TAKE_PTR(content);
        return fd;
}

START_TEST(test_convert_counts_apparent_sizes) {
        static const Extent extents[] = { { 0, 100 }, { 900 * 1024, 10 }, {} };
        ErofsLayerLimits limits = erofs_layer_limits_default();
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in = sparse_tar_memfd("sparse", 1024 * 1024, extents, NULL), out = memfd();
        off_t tar_size = lseek(in, 0, SEEK_END);
        struct stat st;

        /* The tar is a few blocks; the file it holds is 1 MiB. */
        ck_assert_int_lt(tar_size, 16 * 1024);
        ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
        limits.uncompressed_bytes = 512 * 1024;
        ck_assert_int_lt(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL,
                                                         UINT64_MAX, NULL, &limits, out, &info, &err), 0);
        ck_assert(err.set && err.kind == PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "limit")), "layer_uncompressed_bytes");
        ck_assert_int_eq(json_integer_value(json_object_get(err.data, "max")), 512 * 1024);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "entry")), "sparse");
        msb_error_clear(&err);
        /* Refused before a byte of the file was written. */
        ck_assert_int_eq(fstat(out, &st), 0);
        ck_assert_int_eq(st.st_size, 0);

        /* At the file's size exactly, it is accepted. */
        limits.uncompressed_bytes = 1024 * 1024;
        ck_assert_int_eq(lseek(in, 0, SEEK_SET), 0);
        ck_assert_int_eq(erofs_layer_convert_with_limits(in, "application/vnd.oci.image.layer.v1.tar", NULL,
                                                         UINT64_MAX, NULL, &limits, out, &info, &err), 0);
        ck_assert(!err.set);
        close(in);
        close(out);
}
END_TEST

static int find_cb(const char *name, size_t len, uint64_t nid, uint8_t type, void *userdata) {
        uint64_t *ret = userdata;

        if (len == 6 && memcmp(name, "sparse", 6) == 0)
                *ret = nid;
        return 0;
}

/* The inode of /sparse in an image. */
static void find_sparse(const ErofsImage *img, ErofsInodeView *ret) {
        uint64_t nid = UINT64_MAX;
        ErofsInodeView root;

        ck_assert_int_eq(erofs_image_inode(img, erofs_image_root_nid(img), &root), 0);
        ck_assert_int_eq(erofs_image_readdir(img, &root, find_cb, &nid), 0);
        ck_assert_uint_ne(nid, UINT64_MAX);
        ck_assert_int_eq(erofs_image_inode(img, nid, ret), 0);
}

/* A sparse tar through the converter, then fsmeta: the layer keeps the
 * holes as null chunks, fsmeta carries the same map over with the data
 * chunks on the layer's device. */
START_TEST(test_fsmeta_keeps_holes) {
        static const Extent extents[] = { { 4096 * 3 + 7, 9000 }, { 30 * MiB, 4096 }, {} };
        _cleanup_(erofs_image_closep) ErofsImage *limg = NULL, *fimg = NULL;
        _cleanup_free_ uint8_t *expect = NULL, *got = malloc(40 * MiB);
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in = sparse_tar_memfd("sparse", 40 * MiB, extents, &expect), layer = memfd(), fsmeta = memfd();
        _cleanup_free_ char *lpath = fd_path(layer), *fpath = fd_path(fsmeta);
        const char *layers[] = { lpath };
        ErofsInodeView lv, fv;
        uint64_t size;

        ck_assert_int_eq(erofs_layer_convert(in, NULL, NULL, UINT64_MAX, NULL, layer, &info, &err), 0);
        ck_assert_uint_lt(info.erofs_bytes, 128 * 1024);
        ck_assert_int_eq(erofs_fsmeta_build(layers, 1, "sha256:x", fsmeta, &size, &err), 0);

        ck_assert_int_eq(erofs_image_open(lpath, &limg), 0);
        ck_assert_int_eq(erofs_image_open(fpath, &fimg), 0);
        find_sparse(limg, &lv);
        find_sparse(fimg, &fv);
        ck_assert_uint_eq(lv.datalayout, EROFS_INODE_CHUNK_BASED);
        ck_assert_uint_eq(fv.datalayout, EROFS_INODE_CHUNK_BASED);
        ck_assert_uint_eq(lv.chunk_format & EROFS_CHUNK_FORMAT_INDEXES, 0);
        ck_assert_uint_eq(fv.chunk_format, lv.chunk_format | EROFS_CHUNK_FORMAT_INDEXES);
        ck_assert_uint_eq(fv.chunk_count, lv.chunk_count);
        ck_assert_uint_eq(fv.size, 40 * MiB);
        /* 40 MiB in 16 KiB chunks; data in chunks 0 and 1 and at 30 MiB. */
        ck_assert_uint_eq(lv.chunk_bits, 2);
        ck_assert_uint_eq(count_holes(limg, &lv), lv.chunk_count - 3);
        for (uint64_t k = 0; k < lv.chunk_count; k++) {
                uint32_t lb, fb;
                uint16_t ld, fd;
                ck_assert_int_eq(erofs_image_chunk(limg, &lv, k, &lb, &ld), 0);
                ck_assert_int_eq(erofs_image_chunk(fimg, &fv, k, &fb, &fd), 0);
                ck_assert_uint_eq(fb, lb);
                ck_assert_uint_eq(ld, 0);
                ck_assert_uint_eq(fd, lb == EROFS_NULL_ADDR ? 0 : 1);
        }
        ck_assert_int_eq(erofs_image_read(limg, &lv, 0, got, 40 * MiB), 0);
        ck_assert(memcmp(got, expect, 40 * MiB) == 0);
        /* fsmeta's data is on the layer: its own reader cannot follow it there. */
        ck_assert_int_eq(erofs_image_read(fimg, &fv, 3 * 4096, got, 10), -EOPNOTSUPP);
        ck_assert_int_eq(erofs_image_read(fimg, &fv, MiB, got, 10), 0);
        ck_assert(memcmp(got, expect + MiB, 10) == 0);
        close(in);
        close(layer);
        close(fsmeta);
}
END_TEST

/* A layer image's chunk map is read defensively: unknown format bits, a
 * map that runs past the image and a chunk outside it are all -EUCLEAN,
 * and fsmeta refuses the layer. */
START_TEST(test_reader_checks_chunk_maps) {
        static const Extent extents[] = { { 100, 10 }, { 5 * MiB, 10 }, {} };
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in = sparse_tar_memfd("sparse", 8 * MiB, extents, NULL), layer = memfd();
        _cleanup_free_ char *lpath = fd_path(layer);
        const char *layers[] = { lpath };
        uint8_t sb[128], iu[4], orig[4];
        uint64_t nid, ioff, map_off, size;
        ErofsInodeView v;
        ErofsImage *img = NULL;
        uint32_t blkaddr;
        uint16_t device;

        ck_assert_int_eq(erofs_layer_convert(in, NULL, NULL, UINT64_MAX, NULL, layer, &info, &err), 0);
        ck_assert_int_eq(erofs_image_open(lpath, &img), 0);
        find_sparse(img, &v);
        nid = v.nid;
        map_off = v.chunk_off;
        img = erofs_image_close(img);
        ck_assert_int_eq(pread(layer, sb, sizeof(sb), EROFS_SUPER_OFFSET), (ssize_t) sizeof(sb));
        ioff = (uint64_t) erofs_get_le32(sb + EROFS_OFF(struct erofs_super_block, meta_blkaddr)) * EROFS_BLKSZ +
               nid * EROFS_ISLOTSIZE + EROFS_OFF(struct erofs_inode_extended, i_u);
        ck_assert_int_eq(pread(layer, orig, 4, (off_t) ioff), 4);

        static const uint16_t bad_formats[] = { 0x0040, 0x8000 };
        for (size_t k = 0; k < ELEMENTSOF(bad_formats); k++) {
                erofs_put_le32(iu, bad_formats[k]);
                ck_assert_int_eq(pwrite(layer, iu, 4, (off_t) ioff), 4);
                ck_assert_int_eq(erofs_image_open(lpath, &img), 0);
                ck_assert_int_eq(erofs_image_inode(img, nid, &v), -EUCLEAN);
                img = erofs_image_close(img);
        }
        ck_assert_int_eq(pwrite(layer, orig, 4, (off_t) ioff), 4);

        /* A size of almost 4 GiB in 4 KiB chunks: a map of a million
         * entries, far past the image's end. i_size is at byte 8 of both
         * inode forms (the low half of the extended one's). */
        ck_assert_int_eq(pread(layer, orig, 4, (off_t) (ioff - 8)), 4);
        erofs_put_le32(iu, 0xFFFFF000U);
        ck_assert_int_eq(pwrite(layer, iu, 4, (off_t) (ioff - 8)), 4);
        ck_assert_int_eq(erofs_image_open(lpath, &img), 0);
        ck_assert_int_eq(erofs_image_inode(img, nid, &v), -EUCLEAN);
        img = erofs_image_close(img);
        ck_assert_int_eq(pwrite(layer, orig, 4, (off_t) (ioff - 8)), 4);

        /* The first chunk pointing past the image. */
        erofs_put_le32(iu, 1000000);
        ck_assert_int_eq(pwrite(layer, iu, 4, (off_t) map_off), 4);
        ck_assert_int_eq(erofs_image_open(lpath, &img), 0);
        ck_assert_int_eq(erofs_image_inode(img, nid, &v), 0);
        ck_assert_int_eq(erofs_image_chunk(img, &v, 0, &blkaddr, &device), -EUCLEAN);
        ck_assert_int_eq(erofs_image_chunk(img, &v, v.chunk_count, &blkaddr, &device), -EINVAL);
        ck_assert_int_eq(erofs_image_read(img, &v, 0, iu, 4), -EUCLEAN);
        img = erofs_image_close(img);
        int out = memfd();
        ck_assert_int_lt(erofs_fsmeta_build(layers, 1, "sha256:x", out, &size, &err), 0);
        ck_assert(err.set && err.kind == PROTO_ERROR_STORE_ERROR);
        msb_error_clear(&err);
        close(out);
        close(in);
        close(layer);
}
END_TEST

static uint64_t xorshift(uint64_t *state) {
        uint64_t x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return *state = x;
}

/* A small deterministic fuzzer: damaged tars must give a clean error or an
 * image fsck would accept, never a crash (run under ASan by scripts/test.sh). */
START_TEST(test_convert_survives_damaged_tars) {
        static const char *const entries[] = { "etc/", "etc/a=alpha", "etc/b=beta beta beta", "d/e/f=deep",
                                               "z=zed", NULL };
        int in = tar_memfd(entries);
        off_t size = lseek(in, 0, SEEK_END);
        _cleanup_free_ uint8_t *orig = malloc((size_t) size), *buf = malloc((size_t) size);
        uint64_t state = 0x9E3779B97F4A7C15ULL;
        unsigned ok = 0, rejected = 0;

        ck_assert_int_eq(pread(in, orig, (size_t) size, 0), size);
        close(in);
        for (int round = 0; round < 400; round++) {
                ErofsLayerInfo info = {};
                MsbError err = {};
                int fd = memfd(), out = memfd(), r;
                off_t len = size;

                memcpy(buf, orig, (size_t) size);
                /* Flip a few bytes, mostly in the headers, sometimes cut the end. */
                for (int k = 0; k < 1 + (int) (xorshift(&state) % 4); k++) {
                        size_t at = (size_t) (xorshift(&state) % (uint64_t) (round % 2 ? size : 1536));
                        buf[at] ^= (uint8_t) (1 + xorshift(&state) % 255);
                }
                if (round % 7 == 0)
                        len = (off_t) (xorshift(&state) % (uint64_t) size);
                ck_assert_int_eq(pwrite(fd, buf, (size_t) len, 0), len);
                r = erofs_layer_convert(fd, NULL, NULL, UINT64_MAX, NULL, out, &info, &err);
                if (r == 0)
                        ok++;
                else {
                        ck_assert_msg(err.set, "round %d: error %d without a protocol error", round, r);
                        rejected++;
                }
                msb_error_clear(&err);
                close(fd);
                close(out);
        }
        ck_assert_uint_gt(ok, 0);
        ck_assert_uint_gt(rejected, 0);
}
END_TEST

/* Damaged layer images (the store's own files) make fsmeta fail cleanly. */
START_TEST(test_fsmeta_survives_damaged_layer_images) {
        static const char *const entries[] = { "etc/", "etc/a=alpha", "etc/b=beta", "z=zed", NULL };
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in = tar_memfd(entries), img = memfd();
        uint64_t state = 42, size;
        _cleanup_free_ char *path = fd_path(img);
        _cleanup_free_ uint8_t *orig = NULL;

        ck_assert_int_eq(erofs_layer_convert(in, NULL, NULL, UINT64_MAX, NULL, img, &info, &err), 0);
        close(in);
        orig = malloc(info.erofs_bytes);
        ck_assert_int_eq(pread(img, orig, info.erofs_bytes, 0), (ssize_t) info.erofs_bytes);
        for (int round = 0; round < 300; round++) {
                const char *layers[] = { path };
                int out = memfd();

                ck_assert_int_eq(pwrite(img, orig, info.erofs_bytes, 0), (ssize_t) info.erofs_bytes);
                /* Damage the metadata (after the superblock block, which has a checksum). */
                for (int k = 0; k < 1 + (int) (xorshift(&state) % 3); k++) {
                        size_t at = EROFS_BLKSZ + (size_t) (xorshift(&state) % (info.erofs_bytes - EROFS_BLKSZ));
                        uint8_t v = (uint8_t) xorshift(&state);
                        ck_assert_int_eq(pwrite(img, &v, 1, (off_t) at), 1);
                }
                if (erofs_fsmeta_build(layers, 1, "sha256:x", out, &size, &err) < 0)
                        ck_assert(err.set);
                msb_error_clear(&err);
                close(out);
        }
        close(img);
}
END_TEST

static Suite *erofs_suite(void) {
        Suite *s = suite_create("erofs");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_crc32c);
        tcase_add_test(tc, test_path_normalize);
        tcase_add_test(tc, test_media_types);
        tcase_add_test(tc, test_limits_are_the_protocol_limits);
        tcase_add_test(tc, test_dev_encoding);
        tcase_add_test(tc, test_tree_links_and_xattrs);
        tcase_add_test(tc, test_writer_reader_round_trip);
        tcase_add_test(tc, test_chunk_bits_bound_the_map);
        tcase_add_test(tc, test_writer_sparse_round_trip);
        tcase_add_test(tc, test_vmdk);
        tcase_add_test(tc, test_fsmeta_layer_count_limit);
        tcase_add_test(tc, test_convert_deterministic);
        tcase_add_test(tc, test_convert_rejects_dotdot);
        tcase_add_test(tc, test_convert_limits);
        tcase_add_test(tc, test_convert_image_entries);
        tcase_add_test(tc, test_fsmeta_image_entries);
        tcase_add_test(tc, test_convert_counts_apparent_sizes);
        tcase_add_test(tc, test_fsmeta_keeps_holes);
        tcase_add_test(tc, test_reader_checks_chunk_maps);
        tcase_add_test(tc, test_convert_survives_damaged_tars);
        tcase_add_test(tc, test_fsmeta_survives_damaged_layer_images);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(erofs_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
