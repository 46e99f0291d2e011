/* SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/stat.h>

#include "archive_lib.h"
#include "erofs-config.h"
#include "erofs_fs.h"
#include "layer_reader.h"

#if HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif
#if HAVE_ZSTD
#include <zstd.h>
#endif

/* Blob bytes are read from the fd in pieces of this size. */
#define LAYER_READ_CHUNK_BYTES (1024 * 1024)
/* The pipeline between decompression and parsing: this many buffers of
 * this size (4 MiB in all) keep both threads busy without growing memory. */
#define LAYER_PIPE_BUFFERS 4
#define LAYER_PIPE_BUFFER_BYTES (1024 * 1024)

struct LayerReader {
        int fd;
        LayerCompression compression;
        uint64_t expected_blob_size;
        LayerReaderLimits limits;

        EVP_MD_CTX *blob_md;
        /* Whether blob_md is kept: always for a plain tar (the blob digest is
         * its diff_id); for a compressed blob only when the caller wants its
         * digest, not when it verified the bytes itself (a pull, as they
         * arrived): then a sha256 of the whole blob less, on the thread
         * that also inflates. */
        bool hash_blob;
        EVP_MD_CTX *tar_md;
        uint64_t blob_bytes;
        uint64_t tar_bytes;

        uint8_t *inbuf;
        size_t pending_len;
        bool pending;
        bool fd_eof;

        /* The decompressor: ISA-L for gzip and libzstd for zstd where the
         * build has them (several times faster than zlib), else libarchive's
         * "raw" format with one filter. */
#if HAVE_ISAL
        struct inflate_state *isal;
#endif
#if HAVE_ZSTD
        ZSTD_DCtx *zstd;
        size_t zstd_last;        /* last ZSTD_decompressStream() result: 0 = at a frame end */
#endif
        const uint8_t *in_next;  /* unconsumed compressed input in inbuf */
        size_t in_avail;
        struct archive *outer;
        bool outer_eof;
        struct archive *inner;   /* the tar parser */
        struct archive_entry *entry;

        char *path;
        size_t path_alloc;

        /* The decompression pipeline: a producer thread reads, hashes and
         * decompresses the blob into a ring of buffers while this thread
         * hashes and parses the tar in them, so two cores share the work. */
        pthread_t producer;
        bool producer_started;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint8_t *ring[LAYER_PIPE_BUFFERS];
        size_t ring_len[LAYER_PIPE_BUFFERS];
        uint64_t ring_head;      /* next buffer the consumer takes */
        uint64_t ring_tail;      /* next buffer the producer fills */
        bool holding;            /* the consumer still uses ring[head] */
        bool producer_done;
        bool stop;
        int producer_error;

        /* Errors of the consumer side (this thread's read_tar) while the
         * producer may still write cb_err. */
        int cons_error;
        MsbError cons_err;

        /* A failure of reading or decompressing the blob: written by the
         * producer while it runs, by this thread before and after; reported
         * once the libarchive call that ran into it returns. */
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

LayerCompression layer_compression_sniff(const void *buf, size_t n) {
        const uint8_t *b = buf;

        if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
                return LAYER_COMPRESSION_GZIP;
        if (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
                return LAYER_COMPRESSION_ZSTD;
        return LAYER_COMPRESSION_NONE;
}

const char *layer_compression_media_type(LayerCompression c) {
        /* The table lists the OCI type of each compression first. */
        for (size_t i = 0; i < ELEMENTSOF(media_types); i++)
                if (media_types[i].compression == c)
                        return media_types[i].media_type;
        return NULL;
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

/* Reads the next piece of the blob into dst, hashing and counting it. */
static ssize_t read_blob_into(LayerReader *r, uint8_t *dst, size_t cap) {
        char msg[256];
        ssize_t n;

        if (r->pending) {
                /* The first piece, already read and hashed to sniff the magic. */
                r->pending = false;
                if (dst != r->inbuf)
                        memcpy(dst, r->inbuf, r->pending_len);
                return (ssize_t) r->pending_len;
        }
        if (r->fd_eof)
                return 0;
        for (;;) {
                n = read(r->fd, dst, cap);
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
        if (r->hash_blob && EVP_DigestUpdate(r->blob_md, dst, (size_t) n) != 1)
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
        return n;
}

static ssize_t read_blob(LayerReader *r, const void **ret_buf) {
        *ret_buf = r->inbuf;
        return read_blob_into(r, r->inbuf, LAYER_READ_CHUNK_BYTES);
}

static la_ssize_t outer_read_cb(struct archive *a, void *userdata, const void **ret_buf) {
        LayerReader *r = userdata;
        ssize_t n = read_blob(r, ret_buf);

        if (n < 0) {
                sym_archive_set_error(a, EIO, "layer blob read failed");
                return -1;
        }
        return n;
}

/* Reads and hashes the rest of the blob after the compressed stream ended:
 * it is still part of the blob and its digest. */
static ssize_t drain_blob(LayerReader *r) {
        const void *rest;
        ssize_t k;

        r->outer_eof = true;
        r->in_avail = 0;
        do
                k = read_blob(r, &rest);
        while (k > 0);
        return k;
}

static ssize_t corrupt(LayerReader *r, const char *detail) {
        char msg[512];

        snprintf(msg, sizeof(msg), "%s stream is corrupt or truncated near compressed byte %" PRIu64 ": %s",
                 compression_name(r->compression), r->blob_bytes, detail);
        return reader_fail(r, -EBADMSG, PROTO_ERROR_LAYER_REJECTED, msg);
}

#if HAVE_ISAL || HAVE_ZSTD
/* Makes compressed input available; 0 at the end of the blob. */
static ssize_t fill_input(LayerReader *r) {
        const void *p;
        ssize_t n;

        if (r->in_avail > 0)
                return (ssize_t) r->in_avail;
        n = read_blob(r, &p);
        if (n <= 0)
                return n;
        r->in_next = p;
        r->in_avail = (size_t) n;
        return n;
}
#endif

#if HAVE_ISAL
/* gzip (RFC 1952) with ISA-L; members follow each other until the blob ends
 * or something that is not a gzip member starts, which is ignored as gzip(1)
 * ignores trailing garbage. */
static ssize_t produce_isal(LayerReader *r, uint8_t *buf, size_t cap) {
        struct inflate_state *st = r->isal;
        size_t len = 0;
        ssize_t n;

        while (len < cap && !r->outer_eof) {
                if (st->block_state == ISAL_BLOCK_FINISH) {
                        /* A member ended: another one, or the end. */
                        n = fill_input(r);
                        if (n < 0)
                                return n;
                        if (n == 0) {
                                r->outer_eof = true;
                                break;
                        }
                        if (r->in_next[0] != 0x1f || (r->in_avail > 1 && r->in_next[1] != 0x8b)) {
                                n = drain_blob(r);
                                if (n < 0)
                                        return n;
                                break;
                        }
                        isal_inflate_reset(st);
                        st->crc_flag = ISAL_GZIP;
                }
                n = fill_input(r);
                if (n < 0)
                        return n;
                if (n == 0)
                        return corrupt(r, "the gzip stream ends early");
                st->next_in = (uint8_t *) r->in_next;
                st->avail_in = (uint32_t) r->in_avail;
                st->next_out = buf + len;
                st->avail_out = (uint32_t) (cap - len);
                int k = isal_inflate(st);
                if (k < 0)
                        return corrupt(r, k == ISAL_INCORRECT_CHECKSUM ? "gzip checksum mismatch" : "invalid deflate data");
                len = (size_t) (st->next_out - buf);
                r->in_next = st->next_in;
                r->in_avail = st->avail_in;
        }
        return (ssize_t) len;
}
#endif

#if HAVE_ZSTD
/* zstd (RFC 8878) with libzstd; concatenated and skippable frames are
 * handled by the library. */
static ssize_t produce_zstd(LayerReader *r, uint8_t *buf, size_t cap) {
        ZSTD_outBuffer out = { buf, cap, 0 };
        ssize_t n;

        while (out.pos < out.size && !r->outer_eof) {
                n = fill_input(r);
                if (n < 0)
                        return n;
                if (n == 0) {
                        if (r->zstd_last != 0)
                                return corrupt(r, "the zstd stream ends early");
                        r->outer_eof = true;
                        break;
                }
                ZSTD_inBuffer in = { r->in_next, r->in_avail, 0 };
                size_t k = ZSTD_decompressStream(r->zstd, &out, &in);
                if (ZSTD_isError(k))
                        return corrupt(r, ZSTD_getErrorName(k));
                r->zstd_last = k;
                r->in_next += in.pos;
                r->in_avail -= in.pos;
        }
        return (ssize_t) out.pos;
}
#endif

/* Producer side: fills buf with the next bytes of the uncompressed tar
 * stream; 0 at its end. Runs on the producer thread, whose errors land in
 * cb_err until the thread ends. */
static ssize_t produce(LayerReader *r, uint8_t *buf, size_t cap) {
        size_t len = 0;

        if (r->compression == LAYER_COMPRESSION_NONE)
                return read_blob_into(r, buf, cap);
#if HAVE_ISAL
        if (r->isal)
                return produce_isal(r, buf, cap);
#endif
#if HAVE_ZSTD
        if (r->zstd)
                return produce_zstd(r, buf, cap);
#endif

        while (len < cap && !r->outer_eof) {
                la_ssize_t n = sym_archive_read_data(r->outer, buf + len, cap - len);
                if (n == 0) {
                        ssize_t k = drain_blob(r);
                        if (k < 0)
                                return k;
                        break;
                }
                if (n < 0) {
                        if (r->cb_error < 0)
                                return r->cb_error;
                        return corrupt(r, sym_archive_error_string(r->outer) ?: "unknown error");
                }
                len += (size_t) n;
        }
        return (ssize_t) len;
}

static void *producer_main(void *userdata) {
        LayerReader *r = userdata;

        for (;;) {
                uint8_t *buf;
                ssize_t n;

                pthread_mutex_lock(&r->lock);
                while (r->ring_tail - r->ring_head >= LAYER_PIPE_BUFFERS && !r->stop)
                        pthread_cond_wait(&r->cond, &r->lock);
                if (r->stop) {
                        pthread_mutex_unlock(&r->lock);
                        return NULL;
                }
                buf = r->ring[r->ring_tail % LAYER_PIPE_BUFFERS];
                pthread_mutex_unlock(&r->lock);

                n = produce(r, buf, LAYER_PIPE_BUFFER_BYTES);

                pthread_mutex_lock(&r->lock);
                if (n > 0) {
                        r->ring_len[r->ring_tail % LAYER_PIPE_BUFFERS] = (size_t) n;
                        r->ring_tail++;
                } else {
                        r->producer_done = true;
                        r->producer_error = (int) n;
                }
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
                if (n <= 0)
                        return NULL;
        }
}

static int producer_start(LayerReader *r) {
        for (size_t k = 0; k < LAYER_PIPE_BUFFERS; k++) {
                r->ring[k] = malloc(LAYER_PIPE_BUFFER_BYTES);
                if (!r->ring[k])
                        return -ENOMEM;
        }
        if (pthread_create(&r->producer, NULL, producer_main, r) != 0)
                return -EAGAIN;
        r->producer_started = true;
        return 0;
}

/* Stops the producer (if it still runs) and waits for it; afterwards this
 * thread may read the blob itself. */
static void producer_stop(LayerReader *r) {
        if (!r->producer_started)
                return;
        pthread_mutex_lock(&r->lock);
        r->stop = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->producer, NULL);
        r->producer_started = false;
        if (r->producer_error < 0 && r->cb_error == 0)
                r->cb_error = r->producer_error;
}

static int consumer_fail(LayerReader *r, int e, ProtoError kind, const char *msg) {
        if (r->cons_error == 0) {
                r->cons_error = e;
                msb_error_set(&r->cons_err, e, kind, "%s", msg);
        }
        return e;
}

/* The error behind a failed libarchive call, if one of our callbacks caused
 * it; the producer's slot is only read once the producer has ended. */
static int reader_error(LayerReader *r) {
        if (r->cons_error < 0)
                return r->cons_error;
        return r->producer_started ? 0 : r->cb_error;
}

/* Consumer side: the next piece of the uncompressed tar stream, hashed and
 * counted. The piece stays valid until the next call. */
static ssize_t read_tar(LayerReader *r, const void **ret_buf) {
        size_t len;

        pthread_mutex_lock(&r->lock);
        if (r->holding) {
                r->ring_head++;
                r->holding = false;
                pthread_cond_broadcast(&r->cond);
        }
        while (r->ring_tail == r->ring_head && !r->producer_done)
                pthread_cond_wait(&r->cond, &r->lock);
        if (r->ring_tail == r->ring_head) {
                int e = r->producer_error;
                pthread_mutex_unlock(&r->lock);
                if (e < 0) {
                        producer_stop(r);
                        return r->cb_error < 0 ? r->cb_error : e;
                }
                return 0;
        }
        *ret_buf = r->ring[r->ring_head % LAYER_PIPE_BUFFERS];
        len = r->ring_len[r->ring_head % LAYER_PIPE_BUFFERS];
        r->holding = true;
        pthread_mutex_unlock(&r->lock);

        /* The diff_id is hashed on this side: inflating and hashing the
         * blob keep the producer busier than parsing keeps this thread
         * (measured with perf on a rootfs layer). A plain tar is the blob,
         * whose digest is the diff_id already. */
        if (r->compression != LAYER_COMPRESSION_NONE && EVP_DigestUpdate(r->tar_md, *ret_buf, len) != 1)
                return consumer_fail(r, -EIO, PROTO_ERROR_INTERNAL_ERROR, "sha256 failed");
        r->tar_bytes += len;
        if (r->tar_bytes > r->limits.uncompressed_bytes) {
                if (r->cons_error == 0) {
                        r->cons_error = -EFBIG;
                        msb_error_limit(&r->cons_err, "layer_uncompressed_bytes", r->limits.uncompressed_bytes,
                                        "the layer's tar stream exceeds %" PRIu64 " bytes", r->limits.uncompressed_bytes);
                }
                return -EFBIG;
        }
        return (ssize_t) len;
}

static la_ssize_t inner_read_cb(struct archive *a, void *userdata, const void **ret_buf) {
        LayerReader *r = userdata;
        ssize_t n = read_tar(r, ret_buf);

        if (n < 0) {
                sym_archive_set_error(a, EIO, "layer stream failed");
                return -1;
        }
        return n;
}

/* Hands the error stored by a callback to the caller. */
static int take_cb_error(LayerReader *r, MsbError *err) {
        MsbError *from;
        int e;

        if (r->cons_error < 0) {
                e = r->cons_error;
                from = &r->cons_err;
        } else {
                producer_stop(r);
                e = r->cb_error;
                from = &r->cb_err;
        }
        if (err && !err->set) {
                *err = *from;
                *from = (MsbError) {};
        }
        return e;
}

static int open_outer(LayerReader *r, MsbError *err) {
        struct archive_entry *ae;
        int k;

        r->outer = sym_archive_read_new();
        if (!r->outer)
                return -ENOMEM;
        if (r->compression == LAYER_COMPRESSION_GZIP)
                k = sym_archive_read_support_filter_gzip(r->outer);
        else
                k = sym_archive_read_support_filter_zstd(r->outer);
        if (k != ARCHIVE_OK || sym_archive_read_support_format_raw(r->outer) != ARCHIVE_OK)
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_INTERNAL_ERROR,
                                     "libarchive lacks %s support", compression_name(r->compression));
        k = sym_archive_read_open(r->outer, r, NULL, outer_read_cb, NULL);
        if (k == ARCHIVE_OK)
                k = sym_archive_read_next_header(r->outer, &ae);
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
                                     sym_archive_error_string(r->outer) ?: "unreadable");
        }
        return 0;
}

int layer_reader_new(int blob_fd, const char *media_type, uint64_t expected_blob_size, bool want_blob_digest,
                     const LayerReaderLimits *limits, LayerReader **ret, MsbError *err) {
        _cleanup_(layer_reader_freep) LayerReader *r = NULL;
        LayerCompression declared, actual;
        const void *first;
        bool any;
        ssize_t n;
        int k;

        if (layer_media_type_compression(media_type, &declared, &any) < 0)
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                                     "unsupported layer media type %s", media_type);
        k = archive_lib_load(err);
        if (k < 0)
                return k;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->fd = blob_fd;
        r->expected_blob_size = expected_blob_size;
        r->hash_blob = true; /* until the first bytes tell the compression */
        r->limits = *limits;
        r->blob_md = EVP_MD_CTX_new();
        r->tar_md = EVP_MD_CTX_new();
        r->inbuf = malloc(LAYER_READ_CHUNK_BYTES);
        if (!r->blob_md || !r->tar_md || !r->inbuf)
                return -ENOMEM;
        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->cond, NULL);
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
        actual = layer_compression_sniff(first, (size_t) n);
        if (!any && declared != LAYER_COMPRESSION_NONE && declared != actual)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED,
                                     "media type %s declares %s, but the blob is %s", media_type,
                                     compression_name(declared), compression_name(actual));
        r->compression = actual;
        r->hash_blob = want_blob_digest || actual == LAYER_COMPRESSION_NONE;
        *ret = TAKE_PTR(r);
        return 0;
}

static bool native_decoder(LayerReader *r) {
#if HAVE_ISAL
        if (r->isal)
                return true;
#endif
#if HAVE_ZSTD
        if (r->zstd)
                return true;
#endif
        return false;
}

/* Starts decompression and tar parsing. Done at the first entry rather than
 * in layer_reader_new(), so that every stream error, even one in the first
 * bytes, comes from layer_reader_next() with the reader still there to
 * finish hashing the blob. */
static int reader_open(LayerReader *r, MsbError *err) {
        int k;

#if HAVE_ISAL
        if (r->compression == LAYER_COMPRESSION_GZIP) {
                r->isal = calloc(1, sizeof(*r->isal));
                if (!r->isal)
                        return -ENOMEM;
                isal_inflate_init(r->isal);
                r->isal->crc_flag = ISAL_GZIP;
        }
#endif
#if HAVE_ZSTD
        if (r->compression == LAYER_COMPRESSION_ZSTD) {
                r->zstd = ZSTD_createDCtx();
                if (!r->zstd)
                        return -ENOMEM;
        }
#endif
        if (r->compression != LAYER_COMPRESSION_NONE && !native_decoder(r)) {
                k = open_outer(r, err);
                if (k < 0)
                        return k;
        }
        k = producer_start(r);
        if (k < 0)
                return msb_error_set(err, k, PROTO_ERROR_INTERNAL_ERROR, "cannot start the decompression thread");
        r->inner = sym_archive_read_new();
        if (!r->inner)
                return -ENOMEM;
        if (sym_archive_read_support_format_tar(r->inner) != ARCHIVE_OK ||
            sym_archive_read_support_format_empty(r->inner) != ARCHIVE_OK)
                return msb_error_set(err, -EOPNOTSUPP, PROTO_ERROR_INTERNAL_ERROR, "libarchive lacks tar support");
        k = sym_archive_read_open(r->inner, r, NULL, inner_read_cb, NULL);
        if (k != ARCHIVE_OK) {
                if (reader_error(r) < 0)
                        return take_cb_error(r, err);
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED, "layer is not a tar archive: %s",
                                     sym_archive_error_string(r->inner) ?: "unreadable");
        }
        return 0;
}

LayerReader *layer_reader_free(LayerReader *r) {
        if (!r)
                return NULL;
        producer_stop(r);
        if (r->inner)
                sym_archive_read_free(r->inner);
        if (r->outer)
                sym_archive_read_free(r->outer);
#if HAVE_ISAL
        free(r->isal);
#endif
#if HAVE_ZSTD
        ZSTD_freeDCtx(r->zstd);
#endif
        EVP_MD_CTX_free(r->blob_md);
        EVP_MD_CTX_free(r->tar_md);
        free(r->inbuf);
        free(r->path);
        for (size_t k = 0; k < LAYER_PIPE_BUFFERS; k++)
                free(r->ring[k]);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
        msb_error_clear(&r->cb_err);
        msb_error_clear(&r->cons_err);
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
        k = sym_archive_read_next_header(r->inner, &ae);
        if (k == ARCHIVE_EOF)
                return 0;
        if (k != ARCHIVE_OK && k != ARCHIVE_WARN) {
                if (reader_error(r) < 0)
                        return take_cb_error(r, err);
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_LAYER_REJECTED,
                                     "tar stream is corrupt near byte %" PRIu64 ": %s", r->tar_bytes,
                                     sym_archive_error_string(r->inner) ?: "unreadable header");
        }
        r->entry = ae;

        raw = sym_archive_entry_pathname(ae);
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

        ret->mode = (uint32_t) sym_archive_entry_mode(ae);
        id = sym_archive_entry_uid(ae);
        if (id < 0 || id > UINT32_MAX)
                return entry_reject(err, -ERANGE, raw, "has a uid out of range");
        ret->uid = (uint32_t) id;
        id = sym_archive_entry_gid(ae);
        if (id < 0 || id > UINT32_MAX)
                return entry_reject(err, -ERANGE, raw, "has a gid out of range");
        ret->gid = (uint32_t) id;
        ret->mtime = sym_archive_entry_mtime(ae);
        ret->mtime_nsec = sym_archive_entry_mtime_is_set(ae) ? (uint32_t) sym_archive_entry_mtime_nsec(ae) : 0;
        if (ret->mtime_nsec >= 1000000000U)
                ret->mtime_nsec = 0;
        ret->size = sym_archive_entry_size(ae) > 0 ? (uint64_t) sym_archive_entry_size(ae) : 0;
        ret->rdev_major = (uint32_t) sym_archive_entry_rdevmajor(ae);
        ret->rdev_minor = (uint32_t) sym_archive_entry_rdevminor(ae);
        ret->symlink = sym_archive_entry_symlink(ae);
        ret->hardlink = sym_archive_entry_hardlink(ae);
        sym_archive_entry_xattr_reset(ae);
        return 1;
}

int layer_reader_data(LayerReader *r, const void **ret_buf, size_t *ret_len, uint64_t *ret_offset, MsbError *err) {
        la_int64_t off;
        int k;

        k = sym_archive_read_data_block(r->inner, ret_buf, ret_len, &off);
        if (k == ARCHIVE_EOF)
                return 0;
        if (k != ARCHIVE_OK && k != ARCHIVE_WARN) {
                if (reader_error(r) < 0)
                        return take_cb_error(r, err);
                return entry_reject(err, -EBADMSG, sym_archive_entry_pathname(r->entry) ?: "",
                                    sym_archive_error_string(r->inner) ?: "data is truncated");
        }
        if (off < 0)
                return entry_reject(err, -EBADMSG, sym_archive_entry_pathname(r->entry) ?: "", "has a negative data offset");
        *ret_offset = (uint64_t) off;
        return 1;
}

int layer_reader_xattr_next(LayerReader *r, const char **ret_name, const void **ret_value, size_t *ret_len) {
        if (sym_archive_entry_xattr_next(r->entry, ret_name, ret_value, ret_len) != ARCHIVE_OK)
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
        producer_stop(r);
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
        if (!r->hash_blob)
                ret_blob_digest[0] = '\0';
        else if (digest_hex(r->blob_md, ret_blob_digest) < 0)
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

        if (!r->hash_blob)
                return -ENODATA;
        producer_stop(r);
        r->pending = false;
        do
                n = read_blob(r, &buf);
        while (n > 0);
        if (n < 0)
                return (int) n;
        return digest_hex(r->blob_md, ret_blob_digest);
}
