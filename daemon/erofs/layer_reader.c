/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "erofs_fs.h"
#include "layer_reader.h"

/* Blob bytes are read from the fd in pieces of this size. */
#define LAYER_READ_CHUNK_BYTES (1024 * 1024)

struct LayerReader {
        int fd;
        LayerCompression compression;
        uint64_t expected_blob_size;
        LayerReaderLimits limits;

        EVP_MD_CTX *blob_md;
        EVP_MD_CTX *tar_md;
        uint64_t blob_bytes;
        uint64_t tar_bytes;

        uint8_t *inbuf;
        size_t pending_len;
        bool pending;
        bool fd_eof;

        struct archive *outer;   /* decompressor: libarchive "raw" format with one filter */
        bool outer_eof;
        struct archive *inner;   /* the tar parser */
        struct archive_entry *entry;

        char *path;
        size_t path_alloc;

        /* A failure inside a libarchive callback, reported once libarchive returns. */
        int cb_error;
        MsbError cb_err;
};

static const struct {
        const char *media_type;
        LayerCompression compression;
} media_types[] = {
        /* OCI image-spec layer.md, "Distributable Format" and the deprecated non-distributable ones. */
        { "application/vnd.oci.image.layer.v1.tar", LAYER_COMPRESSION_NONE },
        { "application/vnd.oci.image.layer.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
        { "application/vnd.oci.image.layer.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
        { "application/vnd.oci.image.layer.nondistributable.v1.tar", LAYER_COMPRESSION_NONE },
        { "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", LAYER_COMPRESSION_GZIP },
        { "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", LAYER_COMPRESSION_ZSTD },
        /* Docker image manifest v2 schema 2. */
        { "application/vnd.docker.image.rootfs.diff.tar", LAYER_COMPRESSION_NONE },
        { "application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
        { "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", LAYER_COMPRESSION_GZIP },
        { "application/vnd.docker.image.rootfs.diff.tar.zstd", LAYER_COMPRESSION_ZSTD },
};

static const char *compression_name(LayerCompression c) {
        switch (c) {
        case LAYER_COMPRESSION_GZIP:
                return "gzip";
        case LAYER_COMPRESSION_ZSTD:
                return "zstd";
        default:
                return "tar";
        }
}

int layer_media_type_compression(const char *media_type, LayerCompression *ret, bool *ret_any) {
        if (!media_type) {
                *ret = LAYER_COMPRESSION_NONE;
                *ret_any = true;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(media_types); i++)
                if (streq(media_type, media_types[i].media_type)) {
                        *ret = media_types[i].compression;
                        *ret_any = false;
                        return 0;
                }
        return -EOPNOTSUPP;
}

int layer_path_normalize(const char *in, char *out, size_t out_size, size_t *ret_len, size_t *ret_depth) {
        size_t len = 0, depth = 0;
        const char *p = in;

        while (*p) {
                const char *c = p;
                size_t n;

                while (*p && *p != '/')
                        p++;
                n = (size_t) (p - c);
                while (*p == '/')
                        p++;
                if (n == 0 || (n == 1 && c[0] == '.'))
                        continue;
                if (n == 2 && c[0] == '.' && c[1] == '.')
                        return -EINVAL;
                if (n > EROFS_NAME_LEN)
                        return -ENAMETOOLONG;
                if (len + (len > 0) + n + 1 > out_size)
                        return -E2BIG;
                if (len > 0)
                        out[len++] = '/';
                memcpy(out + len, c, n);
                len += n;
                depth++;
        }
        if (out_size == 0)
                return -E2BIG;
        out[len] = 0;
        *ret_len = len;
        *ret_depth = depth;
        return 0;
}

static int reader_fail(LayerReader *r, int e, ProtoError kind, const char *msg) {
        if (r->cb_error == 0) {
                r->cb_error = e;
                msb_error_set(&r->cb_err, e, kind, "%s", msg);
        }
        return e;
}

/* Reads the next piece of the blob, hashing and counting it. */
static ssize_t read_blob(LayerReader *r, const void **ret_buf) {
        char msg[256];
        ssize_t n;

        if (r->pending) {
                r->pending = false;
                *ret_buf = r->inbuf;
                return (ssize_t) r->pending_len;
        }
        if (r->fd_eof)
                return 0;
        for (;;) {
                n = read(r->fd, r->inbuf, LAYER_READ_CHUNK_BYTES);
                if (n >= 0 || errno != EINTR)
                        break;
        }
        if (n < 0) {
                int e = negative_errno();
                snprintf(msg, sizeof(msg), "reading the layer blob at byte %" PRIu64 ": %s", r->blob_bytes,
                         strerror(-e));
                return reader_fail(r, e, PROTO_ERROR_STORE_ERROR, msg);
        }
        if (n == 0) {
                r->fd_eof = true;
                return 0;
        }
        if (EVP_DigestUpdate(r->blob_md, r->inbuf, (size_t) n) != 1)
                return reader_fail(r, -EIO, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        r->blob_bytes += (uint64_t) n;
        if (r->expected_blob_size != UINT64_MAX && r->blob_bytes > r->expected_blob_size) {
                snprintf(msg, sizeof(msg), "layer blob is longer than its descriptor's size %" PRIu64,
                         r->expected_blob_size);
                reader_fail(r, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH, msg);
                msb_error_add_data(&r->cb_err, "expected", json_integer((json_int_t) r->expected_blob_size));
                msb_error_add_data(&r->cb_err, "actual", json_integer((json_int_t) r->blob_bytes));
                return -EBADMSG;
        }
        *ret_buf = r->inbuf;
        return n;
}

static la_ssize_t outer_read_cb(struct archive *a, void *userdata, const void **ret_buf) {
        LayerReader *r = userdata;
        ssize_t n = read_blob(r, ret_buf);

        if (n < 0) {
                archive_set_error(a, EIO, "layer blob read failed");
                return -1;
        }
        return n;
}

/* The next piece of the uncompressed tar stream, hashed and counted. */
static ssize_t read_tar(LayerReader *r, const void **ret_buf) {
        char msg[512];
        size_t len;

        if (r->compression == LAYER_COMPRESSION_NONE) {
                ssize_t n = read_blob(r, ret_buf);
                if (n <= 0)
                        return n;
                len = (size_t) n;
        } else {
                la_int64_t off;
                int k;

                if (r->outer_eof)
                        return 0;
                k = archive_read_data_block(r->outer, ret_buf, &len, &off);
                if (k == ARCHIVE_EOF) {
                        r->outer_eof = true;
                        return 0;
                }
                if (k != ARCHIVE_OK) {
                        if (r->cb_error < 0)
                                return r->cb_error;
                        snprintf(msg, sizeof(msg), "%s stream is corrupt or truncated near compressed byte %" PRIu64 ": %s",
                                 compression_name(r->compression), r->blob_bytes,
                                 archive_error_string(r->outer) ?: "unknown error");
                        return reader_fail(r, -EBADMSG, PROTO_ERROR_LAYER_REJECTED, msg);
                }
                if (EVP_DigestUpdate(r->tar_md, *ret_buf, len) != 1)
                        return reader_fail(r, -EIO, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        }
        r->tar_bytes += len;
        if (r->tar_bytes > r->limits.uncompressed_bytes) {
                snprintf(msg, sizeof(msg), "the layer's tar stream exceeds %" PRIu64 " bytes",
                         r->limits.uncompressed_bytes);
                reader_fail(r, -EFBIG, PROTO_ERROR_LIMIT_EXCEEDED, msg);
                msb_error_add_data(&r->cb_err, "limit", json_string("layer_uncompressed_bytes"));
                msb_error_add_data(&r->cb_err, "max", json_integer((json_int_t) r->limits.uncompressed_bytes));
                return -EFBIG;
        }
        return (ssize_t) len;
}

static la_ssize_t inner_read_cb(struct archive *a, void *userdata, const void **ret_buf) {
        LayerReader *r = userdata;
        ssize_t n = read_tar(r, ret_buf);

        if (n < 0) {
                archive_set_error(a, EIO, "layer stream failed");
                return -1;
        }
        return n;
}

/* Hands the error stored by a callback to the caller. */
static int take_cb_error(LayerReader *r, MsbError *err) {
        int e = r->cb_error;

        if (err && !err->set) {
                *err = r->cb_err;
                r->cb_err = (MsbError) {};
        }
        return e;
}

static LayerCompression sniff(const uint8_t *b, size_t n) {
        if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
                return LAYER_COMPRESSION_GZIP;
        if (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
                return LAYER_COMPRESSION_ZSTD;
        return LAYER_COMPRESSION_NONE;
}

static int open_outer(LayerReader *r, MsbError *err) {
        struct archive_entry *ae;
        int k;

        r->outer = archive_read_new();
        if (!r->outer)
                return -ENOMEM;
        if (r->compression == LAYER_COMPRESSION_GZIP)
                k = archive_read_support_filter_gzip(r->outer);
        else
                k = archive_read_support_filter_zstd(r->outer);
        if (k != ARCHIVE_OK || archive_read_support_format_raw(r->outer) != ARCHIVE_OK)
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_INTERNAL_ERROR,
                                     "libarchive lacks %s support", compression_name(r->compression));
        k = archive_read_open(r->outer, r, NULL, outer_read_cb, NULL);
        if (k == ARCHIVE_OK)
                k = archive_read_next_header(r->outer, &ae);
        if (k == ARCHIVE_EOF) {
                /* An empty stream: an empty tar. */
                r->outer_eof = true;
                return 0;
        }
        if (k != ARCHIVE_OK) {
                if (r->cb_error < 0)
                        return take_cb_error(r, err);
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED, "%s stream: %s",
                                     compression_name(r->compression),
                                     archive_error_string(r->outer) ?: "unreadable");
        }
        return 0;
}

int layer_reader_new(int blob_fd, const char *media_type, uint64_t expected_blob_size,
                     const LayerReaderLimits *limits, LayerReader **ret, MsbError *err) {
        _cleanup_(layer_reader_freep) LayerReader *r = NULL;
        LayerCompression declared, actual;
        const void *first;
        bool any;
        ssize_t n;

        if (layer_media_type_compression(media_type, &declared, &any) < 0)
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                                     "unsupported layer media type %s", media_type);

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->fd = blob_fd;
        r->expected_blob_size = expected_blob_size;
        r->limits = *limits;
        r->blob_md = EVP_MD_CTX_new();
        r->tar_md = EVP_MD_CTX_new();
        r->inbuf = malloc(LAYER_READ_CHUNK_BYTES);
        if (!r->blob_md || !r->tar_md || !r->inbuf)
                return -ENOMEM;
        if (EVP_DigestInit_ex(r->blob_md, EVP_sha256(), NULL) != 1 ||
            EVP_DigestInit_ex(r->tar_md, EVP_sha256(), NULL) != 1)
                return msb_error_set(err, -EIO, PROTO_ERROR_INTERNAL_ERROR, "sha256 unavailable");

        /* The magic decides how to decode; the media type must agree, except
         * that a layer declared as plain tar may be compressed, as docker save
         * archives and some registries serve them. */
        n = read_blob(r, &first);
        if (n < 0)
                return take_cb_error(r, err);
        r->pending = true;
        r->pending_len = (size_t) n;
        actual = sniff(first, (size_t) n);
        if (!any && declared != LAYER_COMPRESSION_NONE && declared != actual)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED,
                                     "media type %s declares %s, but the blob is %s", media_type,
                                     compression_name(declared), compression_name(actual));
        r->compression = actual;
        *ret = TAKE_PTR(r);
        return 0;
}

/* Starts decompression and tar parsing. Done at the first entry rather than
 * in layer_reader_new(), so that every stream error, even one in the first
 * bytes, comes from layer_reader_next() with the reader still there to
 * finish hashing the blob. */
static int reader_open(LayerReader *r, MsbError *err) {
        int k;

        if (r->compression != LAYER_COMPRESSION_NONE) {
                k = open_outer(r, err);
                if (k < 0)
                        return k;
        }
        r->inner = archive_read_new();
        if (!r->inner)
                return -ENOMEM;
        if (archive_read_support_format_tar(r->inner) != ARCHIVE_OK ||
            archive_read_support_format_empty(r->inner) != ARCHIVE_OK)
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_INTERNAL_ERROR, "libarchive lacks tar support");
        k = archive_read_open(r->inner, r, NULL, inner_read_cb, NULL);
        if (k != ARCHIVE_OK) {
                if (r->cb_error < 0)
                        return take_cb_error(r, err);
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED, "layer is not a tar archive: %s",
                                     archive_error_string(r->inner) ?: "unreadable");
        }
        return 0;
}

LayerReader *layer_reader_free(LayerReader *r) {
        if (!r)
                return NULL;
        if (r->inner)
                archive_read_free(r->inner);
        if (r->outer)
                archive_read_free(r->outer);
        EVP_MD_CTX_free(r->blob_md);
        EVP_MD_CTX_free(r->tar_md);
        free(r->inbuf);
        free(r->path);
        msb_error_clear(&r->cb_err);
        free(r);
        return NULL;
}

static int entry_reject(MsbError *err, int e, const char *raw, const char *why) {
        if (err && !err->set) {
                msb_error_set(err, e, PROTO_ERROR_LAYER_REJECTED, "tar entry \"%.300s\": %s", raw, why);
                msb_error_add_data(err, "entry", json_string(raw));
        }
        return e;
}

int layer_reader_next(LayerReader *r, LayerEntry *ret, MsbError *err) {
        struct archive_entry *ae;
        const char *raw;
        size_t need;
        int64_t id;
        int k;

        if (!r->inner) {
                k = reader_open(r, err);
                if (k < 0)
                        return k;
        }
        k = archive_read_next_header(r->inner, &ae);
        if (k == ARCHIVE_EOF)
                return 0;
        if (k != ARCHIVE_OK && k != ARCHIVE_WARN) {
                if (r->cb_error < 0)
                        return take_cb_error(r, err);
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED,
                                     "tar stream is corrupt near byte %" PRIu64 ": %s", r->tar_bytes,
                                     archive_error_string(r->inner) ?: "unreadable header");
        }
        r->entry = ae;

        raw = archive_entry_pathname(ae);
        if (!raw || !*raw)
                return entry_reject(err, -EBADMSG, raw ?: "", "has no path");

        need = strlen(raw) + 1;
        if (need > r->path_alloc) {
                char *p = realloc(r->path, need);
                if (!p)
                        return -ENOMEM;
                r->path = p;
                r->path_alloc = need;
        }
        *ret = (LayerEntry) { .raw_path = raw, .ae = ae };
        k = layer_path_normalize(raw, r->path, r->path_alloc, &ret->path_len, &ret->depth);
        if (k == -EINVAL)
                return entry_reject(err, k, raw, "has a \"..\" component that could escape the root");
        if (k == -ENAMETOOLONG)
                return entry_reject(err, k, raw, "has a name longer than 255 bytes");
        if (k < 0)
                return k;
        ret->path = r->path;

        ret->mode = (uint32_t) archive_entry_mode(ae);
        id = archive_entry_uid(ae);
        if (id < 0 || id > UINT32_MAX)
                return entry_reject(err, -ERANGE, raw, "has a uid out of range");
        ret->uid = (uint32_t) id;
        id = archive_entry_gid(ae);
        if (id < 0 || id > UINT32_MAX)
                return entry_reject(err, -ERANGE, raw, "has a gid out of range");
        ret->gid = (uint32_t) id;
        ret->mtime = archive_entry_mtime(ae);
        ret->mtime_nsec = archive_entry_mtime_is_set(ae) ? (uint32_t) archive_entry_mtime_nsec(ae) : 0;
        if (ret->mtime_nsec >= 1000000000U)
                ret->mtime_nsec = 0;
        ret->size = archive_entry_size(ae) > 0 ? (uint64_t) archive_entry_size(ae) : 0;
        ret->rdev_major = (uint32_t) archive_entry_rdevmajor(ae);
        ret->rdev_minor = (uint32_t) archive_entry_rdevminor(ae);
        ret->symlink = archive_entry_symlink(ae);
        ret->hardlink = archive_entry_hardlink(ae);
        archive_entry_xattr_reset(ae);
        return 1;
}

int layer_reader_data(LayerReader *r, const void **ret_buf, size_t *ret_len, uint64_t *ret_offset, MsbError *err) {
        la_int64_t off;
        int k;

        k = archive_read_data_block(r->inner, ret_buf, ret_len, &off);
        if (k == ARCHIVE_EOF)
                return 0;
        if (k != ARCHIVE_OK && k != ARCHIVE_WARN) {
                if (r->cb_error < 0)
                        return take_cb_error(r, err);
                return entry_reject(err, -EBADMSG, archive_entry_pathname(r->entry) ?: "",
                                    archive_error_string(r->inner) ?: "data is truncated");
        }
        if (off < 0)
                return entry_reject(err, -EBADMSG, archive_entry_pathname(r->entry) ?: "", "has a negative data offset");
        *ret_offset = (uint64_t) off;
        return 1;
}

int layer_reader_xattr_next(LayerReader *r, const char **ret_name, const void **ret_value, size_t *ret_len) {
        if (archive_entry_xattr_next(r->entry, ret_name, ret_value, ret_len) != ARCHIVE_OK)
                return 0;
        return 1;
}

static int digest_hex(EVP_MD_CTX *md, char out[static 72]) {
        static const char hex[] = "0123456789abcdef";
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        if (EVP_DigestFinal_ex(md, d, &len) != 1 || len != 32)
                return -EIO;
        memcpy(out, "sha256:", 7);
        for (unsigned i = 0; i < 32; i++) {
                out[7 + 2 * i] = hex[d[i] >> 4];
                out[7 + 2 * i + 1] = hex[d[i] & 15];
        }
        out[71] = 0;
        return 0;
}

int layer_reader_finish(LayerReader *r, char ret_blob_digest[static 72], uint64_t *ret_blob_bytes,
                        char ret_diff_id[static 72], uint64_t *ret_tar_bytes, MsbError *err) {
        const void *buf;
        ssize_t n;

        /* The diff_id covers the whole uncompressed stream, including the
         * end-of-archive blocks and any padding libarchive did not need. */
        do
                n = read_tar(r, &buf);
        while (n > 0);
        if (n < 0)
                return take_cb_error(r, err);
        /* The blob digest covers every byte of the blob, also any after the
         * compressed stream's end. */
        do
                n = read_blob(r, &buf);
        while (n > 0);
        if (n < 0)
                return take_cb_error(r, err);

        if (r->expected_blob_size != UINT64_MAX && r->blob_bytes != r->expected_blob_size) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "layer blob has %" PRIu64 " bytes, its descriptor says %" PRIu64, r->blob_bytes,
                              r->expected_blob_size);
                msb_error_add_data(err, "expected", json_integer((json_int_t) r->expected_blob_size));
                msb_error_add_data(err, "actual", json_integer((json_int_t) r->blob_bytes));
                return -EBADMSG;
        }
        if (digest_hex(r->blob_md, ret_blob_digest) < 0)
                return msb_error_set(err, -EIO, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        if (r->compression == LAYER_COMPRESSION_NONE)
                memcpy(ret_diff_id, ret_blob_digest, 72);
        else if (digest_hex(r->tar_md, ret_diff_id) < 0)
                return msb_error_set(err, -EIO, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        *ret_blob_bytes = r->blob_bytes;
        *ret_tar_bytes = r->compression == LAYER_COMPRESSION_NONE ? r->blob_bytes : r->tar_bytes;
        return 0;
}

int layer_reader_blob_digest(LayerReader *r, char ret_blob_digest[static 72]) {
        const void *buf;
        ssize_t n;

        r->pending = false;
        do
                n = read_blob(r, &buf);
        while (n > 0);
        if (n < 0)
                return (int) n;
        return digest_hex(r->blob_md, ret_blob_digest);
}
