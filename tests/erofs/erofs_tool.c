/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small front end to the daemon's EROFS module for the tests and the
 * benchmark, so they can drive exactly the code the daemon runs:
 *
 *   erofs-tool convert BLOB MEDIATYPE OUT [--diff-id D] [--blob-digest D] [--blob-size N]
 *                      [--max-entries N] [--max-image-entries N] [--max-uncompressed N]
 *   erofs-tool fsmeta [--max-entries N] OUT MANIFEST_DIGEST LAYER...
 *   erofs-tool vmdk OUT FSMETA LAYER...
 *   erofs-tool file IMAGE PATH [LAYER...]
 *
 * `file` reads one regular file back through the module's own reader (a
 * layer image, or fsmeta with its layer images as devices 1, 2, ...) and
 * prints its size, layout, chunk map summary and sha256: erofs-utils 1.5
 * cannot extract files with holes (fsck.erofs --extract drops them), and a
 * kernel mount is not always allowed.
 *
 * It prints a JSON line with the result, or the error (code, name, message,
 * data) and exits 1.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "erofs_fs.h"
#include "erofs_layer.h"
#include "vmdk.h"
#include "erofs_reader.h"

static int fail(MsbError *err, int r) {
        json_t *o = json_object();

        json_object_set_new(o, "errno", json_integer(-r));
        if (err->set) {
                json_object_set_new(o, "code", json_integer(proto_errors[err->kind].code));
                json_object_set_new(o, "name", json_string(proto_errors[err->kind].name));
                json_object_set_new(o, "message", json_string(err->message));
                if (err->data)
                        json_object_set(o, "data", err->data);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        msb_error_clear(err);
        return 1;
}

static int cmd_convert(int argc, char **argv) {
        const char *diff_id = NULL, *blob_digest = NULL;
        uint64_t blob_size = UINT64_MAX;
        ErofsLayerLimits limits = erofs_layer_limits_default();
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in, out, r;

        if (argc < 5)
                return 2;
        for (int k = 5; k + 1 < argc; k += 2) {
                if (streq(argv[k], "--diff-id"))
                        diff_id = argv[k + 1];
                else if (streq(argv[k], "--blob-digest"))
                        blob_digest = argv[k + 1];
                else if (streq(argv[k], "--blob-size"))
                        blob_size = strtoull(argv[k + 1], NULL, 10);
                else if (streq(argv[k], "--max-entries"))
                        limits.entries = strtoull(argv[k + 1], NULL, 10);
                else if (streq(argv[k], "--max-image-entries"))
                        limits.image_entries = strtoull(argv[k + 1], NULL, 10);
                else if (streq(argv[k], "--max-uncompressed"))
                        limits.uncompressed_bytes = strtoull(argv[k + 1], NULL, 10);
                else
                        return 2;
        }
        in = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (in < 0) {
                perror(argv[2]);
                return 1;
        }
        out = open(argv[4], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
                perror(argv[4]);
                return 1;
        }
        r = erofs_layer_convert_with_limits(in, streq(argv[3], "-") ? NULL : argv[3], blob_digest, blob_size,
                                            diff_id, &limits, out, &info, &err);
        close(in);
        close(out);
        if (r < 0)
                return fail(&err, r);
        printf("{\"diff_id\":\"%s\",\"uncompressed_bytes\":%" PRIu64 ",\"erofs_bytes\":%" PRIu64
               ",\"entries\":%" PRIu64 "}\n",
               info.diff_id, info.uncompressed_bytes, info.erofs_bytes, info.entries);
        return 0;
}

static int cmd_fsmeta(int argc, char **argv) {
        uint64_t size, max_entries = PROTO_LIMIT_IMAGE_ENTRIES;
        MsbError err = {};
        int out, r;

        if (argc >= 4 && streq(argv[2], "--max-entries")) {
                max_entries = strtoull(argv[3], NULL, 10);
                argv += 2;
                argc -= 2;
        }
        if (argc < 5)
                return 2;
        out = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
                perror(argv[2]);
                return 1;
        }
        r = erofs_fsmeta_build_with_limits((const char *const *) argv + 4, (size_t) (argc - 4), argv[3], max_entries, out,
                                           &size, &err);
        close(out);
        if (r < 0)
                return fail(&err, r);
        printf("{\"size\":%" PRIu64 "}\n", size);
        return 0;
}

static int cmd_vmdk(int argc, char **argv) {
        size_t n = (size_t) (argc - 4);
        _cleanup_free_ uint64_t *sizes = calloc(n + 1, sizeof(uint64_t));
        uint64_t fsmeta_size;
        struct stat st;
        MsbError err = {};
        int out, r;

        if (argc < 4)
                return 2;
        if (!sizes)
                return 1;
        if (stat(argv[3], &st) < 0) {
                perror(argv[3]);
                return 1;
        }
        fsmeta_size = (uint64_t) st.st_size;
        for (size_t k = 0; k < n; k++) {
                if (stat(argv[4 + k], &st) < 0) {
                        perror(argv[4 + k]);
                        return 1;
                }
                sizes[k] = (uint64_t) st.st_size;
        }
        out = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
                perror(argv[2]);
                return 1;
        }
        r = vmdk_write(out, argv[3], fsmeta_size, (const char *const *) argv + 4, sizes, n, &err);
        close(out);
        if (r < 0)
                return fail(&err, r);
        printf("{}\n");
        return 0;
}

typedef struct Lookup {
        const char *name;
        size_t len;
        uint64_t nid;
        bool found;
} Lookup;

static int lookup_cb(const char *name, size_t len, uint64_t nid, uint8_t type, void *userdata) {
        Lookup *l = userdata;

        if (len == l->len && memcmp(name, l->name, len) == 0) {
                l->nid = nid;
                l->found = true;
        }
        return 0;
}

/* The inode at an absolute or relative path, through directory lookups. */
static int resolve(const ErofsImage *img, const char *path, ErofsInodeView *ret) {
        ErofsInodeView v;
        int r = erofs_image_inode(img, erofs_image_root_nid(img), &v);

        while (r >= 0 && *path) {
                size_t n = strcspn(path, "/");
                Lookup l = { .name = path, .len = n };

                if (n > 0) {
                        r = erofs_image_readdir(img, &v, lookup_cb, &l);
                        if (r < 0)
                                return r;
                        if (!l.found)
                                return -ENOENT;
                        r = erofs_image_inode(img, l.nid, &v);
                }
                path += n + (path[n] == '/');
        }
        if (r >= 0)
                *ret = v;
        return r;
}

/* Bytes [off, off + len) of a file, from its image or, for a chunk of
 * fsmeta, from the layer image its index names. */
static int read_piece(const ErofsImage *img, const ErofsInodeView *v, int *layer_fds, size_t n_layers,
                      uint64_t off, uint8_t *buf, size_t len) {
        uint64_t shift = EROFS_BLKSZBITS + v->chunk_bits, k = off >> shift;
        uint32_t blkaddr;
        uint16_t device;
        int r;

        if (v->datalayout != EROFS_INODE_CHUNK_BASED)
                return erofs_image_read(img, v, off, buf, len);
        r = erofs_image_chunk(img, v, k, &blkaddr, &device);
        if (r < 0)
                return r;
        if (device == 0)
                return erofs_image_read(img, v, off, buf, len);
        if (device > n_layers)
                return -ENODEV;
        off = (uint64_t) blkaddr * EROFS_BLKSZ + (off - (k << shift));
        return pread(layer_fds[device - 1], buf, len, (off_t) off) == (ssize_t) len ? 0 : -EIO;
}

static int cmd_file(int argc, char **argv) {
        _cleanup_(erofs_image_closep) ErofsImage *img = NULL;
        size_t n_layers = (size_t) (argc - 4);
        _cleanup_free_ int *fds = calloc(n_layers + 1, sizeof(int));
        _cleanup_free_ uint8_t *buf = malloc(EROFS_BLKSZ);
        uint64_t holes = 0, piece;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        ErofsInodeView v;
        EVP_MD_CTX *ctx;
        int r;

        if (argc < 4)
                return 2;
        if (!fds || !buf)
                return 1;
        for (size_t k = 0; k < n_layers; k++)
                fds[k] = -EBADF;
        r = erofs_image_open(argv[2], &img);
        if (r >= 0)
                r = resolve(img, argv[3], &v);
        if (r >= 0 && !S_ISREG(v.mode))
                r = -EINVAL;
        for (size_t k = 0; r >= 0 && k < n_layers; k++)
                if ((fds[k] = open(argv[4 + k], O_RDONLY | O_CLOEXEC)) < 0)
                        r = -errno;
        for (uint64_t k = 0; r >= 0 && v.datalayout == EROFS_INODE_CHUNK_BASED && k < v.chunk_count; k++) {
                uint32_t blkaddr;
                uint16_t device;
                r = erofs_image_chunk(img, &v, k, &blkaddr, &device);
                holes += r >= 0 && blkaddr == EROFS_NULL_ADDR;
        }
        ctx = EVP_MD_CTX_new();
        if (r >= 0 && (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1))
                r = -EIO;
        /* Block by block: a piece never spans two chunks. */
        for (uint64_t off = 0; r >= 0 && off < v.size; off += piece) {
                piece = v.size - off < EROFS_BLKSZ ? v.size - off : EROFS_BLKSZ;
                r = read_piece(img, &v, fds, n_layers, off, buf, (size_t) piece);
                if (r >= 0 && EVP_DigestUpdate(ctx, buf, (size_t) piece) != 1)
                        r = -EIO;
        }
        if (r >= 0 && EVP_DigestFinal_ex(ctx, md, &md_len) != 1)
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        for (size_t k = 0; k < n_layers; k++)
                if (fds[k] >= 0)
                        close(fds[k]);
        if (r < 0) {
                printf("{\"errno\":%d}\n", -r);
                return 1;
        }
        for (unsigned k = 0; k < md_len; k++)
                sprintf(hex + 2 * k, "%02x", md[k]);
        printf("{\"size\":%" PRIu64 ",\"layout\":%u,\"chunk_bits\":%u,\"chunks\":%" PRIu64
               ",\"hole_chunks\":%" PRIu64 ",\"sha256\":\"%s\"}\n",
               v.size, v.datalayout, v.chunk_bits, v.chunk_count, holes, hex);
        return 0;
}

int main(int argc, char **argv) {
        int r = 2;

        if (argc >= 2 && streq(argv[1], "convert"))
                r = cmd_convert(argc, argv);
        else if (argc >= 2 && streq(argv[1], "fsmeta"))
                r = cmd_fsmeta(argc, argv);
        else if (argc >= 2 && streq(argv[1], "vmdk"))
                r = cmd_vmdk(argc, argv);
        else if (argc >= 2 && streq(argv[1], "file"))
                r = cmd_file(argc, argv);
        if (r == 2)
                fprintf(stderr,
                        "usage: %s convert BLOB MEDIATYPE|- OUT [--diff-id D] [--blob-digest D] [--blob-size N]\n"
                        "       %s fsmeta OUT MANIFEST_DIGEST LAYER...\n"
                        "       %s vmdk OUT FSMETA LAYER...\n"
                        "       %s file IMAGE PATH [LAYER...]\n",
                        argv[0], argv[0], argv[0], argv[0]);
        return r;
}
