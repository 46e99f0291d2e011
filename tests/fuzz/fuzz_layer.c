/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for the layer converter (daemon/erofs/erofs_layer.c): the
 * tar streams of image layers are the bytes an attacker controls most
 * directly. The first input byte picks how the rest is declared (plain tar,
 * gzip, zstd); the converter runs with small limits. A refusal must be one
 * of the protocol's errors; an accepted layer must be an EROFS image of the
 * size reported that this module's own reader walks without complaint, to
 * every file's last byte.
 */

#include <sys/mman.h>
#include <sys/stat.h>

#include "erofs_layer.h"
#include "erofs_reader.h"
#include "fuzz.h"
#include "oci.h"

/* Limits small enough that the fuzzer reaches them, and a walk stays quick. */
#define FUZZ_LAYER_ENTRIES 512
#define FUZZ_LAYER_PATH_BYTES 1024
#define FUZZ_LAYER_PATH_DEPTH 32
#define FUZZ_LAYER_UNCOMPRESSED_BYTES (8 * MiB)
#define FUZZ_LAYER_BLOCK 4096

typedef struct Walk {
        const ErofsImage *img;
        unsigned inodes;
        unsigned depth;
} Walk;

static int walk_inode(Walk *w, uint64_t nid);

static int walk_dirent(const char *name, size_t len, uint64_t nid, uint8_t type, void *userdata) {
        Walk *w = userdata;

        FUZZ_CHECK(len > 0);
        FUZZ_CHECK(memchr(name, '/', len) == NULL);
        FUZZ_CHECK(!(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.'));
        return walk_inode(w, nid);
}

static int walk_inode(Walk *w, uint64_t nid) {
        ErofsInodeView v;
        char buf[4096];

        /* Every inode reached once per path; a tree never loops. */
        FUZZ_CHECK(++w->inodes <= 4 * FUZZ_LAYER_ENTRIES + 64);
        FUZZ_CHECK(erofs_image_inode(w->img, nid, &v) == 0);
        if (S_ISDIR(v.mode)) {
                FUZZ_CHECK(w->depth <= FUZZ_LAYER_PATH_DEPTH + 1);
                w->depth++;
                FUZZ_CHECK(erofs_image_readdir(w->img, &v, walk_dirent, w) == 0);
                w->depth--;
        } else if (S_ISREG(v.mode) && v.size > 0) {
                /* The first and the last bytes of the data are inside the image. */
                size_t n = v.size < sizeof(buf) ? (size_t) v.size : sizeof(buf);
                FUZZ_CHECK(erofs_image_read(w->img, &v, 0, buf, n) == 0);
                FUZZ_CHECK(erofs_image_read(w->img, &v, v.size - n, buf, n) == 0);
        }
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const media_types[] = {
                OCI_MEDIA_TYPE_LAYER_TAR,
                OCI_MEDIA_TYPE_LAYER_GZIP,
                OCI_MEDIA_TYPE_LAYER_ZSTD,
                DOCKER_MEDIA_TYPE_LAYER_GZIP,
        };
        const ErofsLayerLimits limits = {
                .entries = FUZZ_LAYER_ENTRIES,
                .path_bytes = FUZZ_LAYER_PATH_BYTES,
                .path_depth = FUZZ_LAYER_PATH_DEPTH,
                .uncompressed_bytes = FUZZ_LAYER_UNCOMPRESSED_BYTES,
        };
        _cleanup_close_ int in = -EBADF, out = -EBADF;
        ErofsLayerInfo info = {};
        MsbError err = {};
        struct stat st;
        int r;

        if (size < 1)
                return 0;
        in = memfd_create("fuzz-layer-in", MFD_CLOEXEC);
        out = memfd_create("fuzz-layer-out", MFD_CLOEXEC);
        FUZZ_CHECK(in >= 0 && out >= 0);
        FUZZ_CHECK(write_all(in, data + 1, size - 1) == 0);
        FUZZ_CHECK(lseek(in, 0, SEEK_SET) == 0);

        r = erofs_layer_convert_with_limits(in, media_types[data[0] % ELEMENTSOF(media_types)], NULL, UINT64_MAX,
                                            NULL, &limits, out, &info, &err);
        if (r < 0) {
                FUZZ_CHECK(err.set);
                FUZZ_CHECK(err.kind == PROTO_ERROR_LAYER_REJECTED || err.kind == PROTO_ERROR_LIMIT_EXCEEDED ||
                           err.kind == PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE || err.kind == PROTO_ERROR_INVALID_IMAGE ||
                           err.kind == PROTO_ERROR_DIGEST_MISMATCH);
                FUZZ_CHECK(err.message[0] != '\0');
                msb_error_clear(&err);
                return 0;
        }

        FUZZ_CHECK(!err.set);
        FUZZ_CHECK(digest_is_valid(info.diff_id));
        FUZZ_CHECK(info.uncompressed_bytes <= FUZZ_LAYER_UNCOMPRESSED_BYTES);
        FUZZ_CHECK(info.entries <= FUZZ_LAYER_ENTRIES);
        FUZZ_CHECK(fstat(out, &st) == 0);
        FUZZ_CHECK((uint64_t) st.st_size == info.erofs_bytes);
        FUZZ_CHECK(info.erofs_bytes > 0 && info.erofs_bytes % FUZZ_LAYER_BLOCK == 0);

        /* The image reads back. */
        char path[64];
        _cleanup_(erofs_image_closep) ErofsImage *img = NULL;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", out);
        FUZZ_CHECK(erofs_image_open(path, &img) == 0);
        FUZZ_CHECK((uint64_t) erofs_image_blocks(img) * FUZZ_LAYER_BLOCK == info.erofs_bytes);
        Walk w = { .img = img };
        FUZZ_CHECK(walk_inode(&w, erofs_image_root_nid(img)) == 0);
        return 0;
}
