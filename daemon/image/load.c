/* SPDX-License-Identifier: Apache-2.0 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include "ingest.h"
#include "layer_reader.h"
#include "load.h"
#include "oci.h"
#include "reference.h"

/* At most this many of the source's names are listed when `image` names none. */
#define LOAD_IMAGES_LISTED 10

/* One image found in the source: its manifest and the names it carries. */
typedef struct Candidate {
        char digest[DIGEST_STRING_MAX];
        char *name; /* a reference spelling from the source, or NULL */
        bool local; /* name is an OCI ref.name: without a '/' it is no Docker Hub name (localhost/) */
} Candidate;

/* A layer of a docker-save source: its blob's digest and its path in the source. */
typedef struct DockerLayer {
        char digest[DIGEST_STRING_MAX];
        char *path;
} DockerLayer;

/*
 * Every file of a source is opened beneath root_fd or blobs_fd (see
 * source_open()), never by a path string: a symlink inside the source
 * cannot lead the daemon to a file outside it.
 */
typedef struct LoadSource {
        Store *store;
        const LoadRequest *req;
        uint64_t staged;   /* bytes unpacked into the work directory (LOAD_STAGED_MAX_BYTES) */
        int root_fd;       /* the layout directory (maybe unpacked from an archive) */
        int blobs_fd;      /* where blobs/sha256/ is: root, or a staging directory for docker-save */
        char *unpacked;    /* the temp directory to remove, when unpacked or staged */
        DockerLayer *docker_layers; /* sorted by digest once the scan is done */
        size_t n_docker_layers;
        Candidate *candidates;
        size_t n_candidates;
} LoadSource;

static void load_source_done(LoadSource *src) {
        safe_close(src->root_fd);
        safe_close(src->blobs_fd);
        if (src->unpacked) {
                (void) rm_rf(src->unpacked, NULL);
                store_lease_release(src->store, strrchr(src->unpacked, '/') + 1);
        }
        for (size_t i = 0; i < src->n_docker_layers; i++)
                free(src->docker_layers[i].path);
        free(src->docker_layers);
        for (size_t i = 0; i < src->n_candidates; i++)
                free(src->candidates[i].name);
        free(src->candidates);
        free(src->unpacked);
}

static const char *file_type_name(mode_t mode) {
        switch (mode & S_IFMT) {
        case S_IFDIR:
                return "directory";
        case S_IFIFO:
                return "FIFO";
        case S_IFSOCK:
                return "socket";
        case S_IFCHR:
                return "character device";
        case S_IFBLK:
                return "block device";
        case S_IFLNK:
                return "symbolic link";
        default:
                return "file of unknown type";
        }
}

/*
 * Opens rel, a path inside the source, beneath dir_fd as a regular file
 * with blocking reads. Every failure is invalid-image with data.path = rel:
 * path-not-found is the error of the path the client named (its data.path
 * is that absolute path), while a file inside the source that is missing,
 * not a regular file or out of reach makes the source an invalid image.
 * The messages name rel only, never where a symlink leads nor anything
 * about its target (open_beneath() never looks outside the source).
 */
static int source_open(int dir_fd, const char *rel, int *ret_fd, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        bool was_set = err && err->set;
        struct stat st;
        int r;

        r = open_beneath(dir_fd, rel, 0, &fd);
        if (r == -ENOENT || r == -ENOTDIR)
                msb_error_set(err, r, PROTO_ERROR_INVALID_IMAGE, "%s is missing from the source", rel);
        else if (r == -EXDEV)
                msb_error_set(err, r, PROTO_ERROR_INVALID_IMAGE,
                              "%s is reached through a symbolic link that is absolute or leads outside the source", rel);
        else if (r == -ELOOP)
                msb_error_set(err, r, PROTO_ERROR_INVALID_IMAGE,
                              "%s cannot be resolved inside the source: its symbolic links loop or cannot be followed",
                              rel);
        else if (r < 0)
                msb_error_set(err, r, PROTO_ERROR_INVALID_IMAGE, "cannot open %s in the source: %s", rel, strerror(-r));
        else if (fstat(fd, &st) < 0)
                r = msb_error_from_errno(err, negative_errno(), "cannot read the source");
        else if (!S_ISREG(st.st_mode))
                r = msb_error_set(err, -EISDIR, PROTO_ERROR_INVALID_IMAGE, "%s is a %s, not a regular file", rel,
                                  file_type_name(st.st_mode));
        else if ((r = fd_set_blocking(fd)) < 0)
                msb_error_from_errno(err, r, "cannot read the source");
        if (r < 0) {
                if (err && !was_set && err->kind == PROTO_ERROR_INVALID_IMAGE)
                        msb_error_add_data(err, "path", json_string(rel));
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Reads rel, a small file of the source (at most max bytes), beneath dir_fd. */
static int source_read(int dir_fd, const char *rel, size_t max, char **ret, size_t *ret_size, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = source_open(dir_fd, rel, &fd, err);
        if (r < 0)
                return r;
        r = read_fd_bounded(fd, max, ret, ret_size);
        if (r == -EFBIG) {
                /* Everything read this way (index, manifests, configs,
                 * manifest.json) is held to the manifest limit. */
                msb_error_limit(err, "manifest_bytes", max, "%s is larger than %zu bytes", rel, max);
                return r;
        }
        if (r < 0)
                return msb_error_set(err, r, PROTO_ERROR_INVALID_IMAGE, "cannot read %s: %s", rel, strerror(-r));
        return 0;
}

/* True when the source has something (of any type, maybe out of reach) at rel. */
static bool source_has(int dir_fd, const char *rel) {
        _cleanup_close_ int fd = -EBADF;
        int r = open_beneath(dir_fd, rel, 0, &fd);
        return r != -ENOENT && r != -ENOTDIR;
}

static int add_candidate(LoadSource *src, const char *digest, const char *name, bool local) {
        Candidate *n = realloc(src->candidates, (src->n_candidates + 1) * sizeof(Candidate));
        if (!n)
                return -ENOMEM;
        src->candidates = n;
        Candidate *c = &src->candidates[src->n_candidates];
        *c = (Candidate) {};
        snprintf(c->digest, sizeof(c->digest), "%s", digest);
        c->local = local;
        if (name && !(c->name = strdup(name)))
                return -ENOMEM;
        src->n_candidates++;
        return 0;
}

/* A relative archive member path that stays inside the unpack directory. */
static bool member_path_is_safe(const char *p) {
        if (!*p || *p == '/')
                return false;
        for (const char *s = p; *s;) {
                size_t len = strcspn(s, "/");
                if ((len == 2 && s[0] == '.' && s[1] == '.'))
                        return false;
                s += len;
                while (*s == '/')
                        s++;
        }
        return strlen(p) < PROTO_LIMIT_PATH_BYTES;
}

/* Creates the leased temp directory an archive is unpacked (or a docker-save
 * directory staged) into; the source itself is only ever read. */
static int make_work_dir(LoadSource *src, MsbError *err) {
        static uint64_t counter;
        _cleanup_free_ char *dir = NULL;
        int r;

        if (asprintf(&dir, "%s/%d-%" PRIu64 "-load", store_tmp_dir(src->store), (int) getpid(),
                     __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED)) < 0)
                return -ENOMEM;
        r = store_lease_acquire(src->store, strrchr(dir, '/') + 1);
        if (r < 0)
                return r;
        if (mkdir(dir, 0700) < 0) {
                r = msb_error_from_errno(err, negative_errno(), "cannot create a temporary directory");
                store_lease_release(src->store, strrchr(dir, '/') + 1);
                return r;
        }
        src->unpacked = TAKE_PTR(dir);
        return 0;
}

/* Hands a progress event (taken) to the caller, when it listens. */
static void load_emit(const LoadSource *src, json_t *event) {
        if (event && src->req->progress)
                src->req->progress(event, src->req->userdata);
        else
                json_decref(event);
}

/*
 * The archive as libarchive reads it: from a regular file, or a pipe the
 * client passed. A pipe's description is shared with the client (its
 * O_NONBLOCK is not ours to change), so each read waits in poll() first,
 * in short slices that notice a shutdown, and a pipe that stays silent for
 * LOAD_PIPE_IDLE_MAX_MS ends the load.
 */
typedef struct ArchiveInput {
        LoadSource *src;
        int fd;
        bool pipe;
        uint64_t read_bytes;
        uint64_t total_bytes; /* UINT64_MAX: a pipe's size is not known */
        uint64_t reported_bytes;
        int64_t reported_ms;
        char buf[1 * MiB];
} ArchiveInput;

#define ARCHIVE_INPUT_POLL_MS 250

/* Reports the bytes read: every LOAD_PROGRESS_INTERVAL_MS, and the last
 * count once the archive is read (unless that was just said). */
static void archive_input_report(ArchiveInput *in, bool last) {
        int64_t now = now_ms();

        if (last ? in->reported_bytes == in->read_bytes && in->reported_ms > 0
                 : now - in->reported_ms < LOAD_PROGRESS_INTERVAL_MS)
                return;
        in->reported_ms = now;
        in->reported_bytes = in->read_bytes;
        json_t *e = json_pack("{s:s, s:I}", "event", "reading", "read_bytes", (json_int_t) in->read_bytes);
        if (e && in->total_bytes != UINT64_MAX)
                json_object_set_new(e, "total_bytes", json_integer((json_int_t) in->total_bytes));
        load_emit(in->src, e);
}

/* Waits until the pipe has bytes (or its end): 0, or -ECANCELED at
 * shutdown, -ETIMEDOUT after LOAD_PIPE_IDLE_MAX_MS of silence. */
static int archive_input_wait(ArchiveInput *in) {
        int64_t since = now_ms();

        for (;;) {
                struct pollfd p = { .fd = in->fd, .events = POLLIN };
                int n = poll(&p, 1, ARCHIVE_INPUT_POLL_MS);
                if (n > 0)
                        return 0;
                if (n < 0 && errno != EINTR)
                        return negative_errno();
                if (store_cancelled(in->src->store))
                        return -ECANCELED;
                if (now_ms() - since >= (int64_t) LOAD_PIPE_IDLE_MAX_MS)
                        return -ETIMEDOUT;
        }
}

static la_ssize_t archive_input_read(struct archive *a, void *userdata, const void **ret) {
        ArchiveInput *in = userdata;

        for (;;) {
                int r = in->pipe ? archive_input_wait(in) : 0;
                if (r < 0) {
                        archive_set_error(a, -r, "%s",
                                          r == -ETIMEDOUT ? "the pipe brought no data for too long"
                                          : r == -ECANCELED ? "the daemon is shutting down"
                                                            : strerror(-r));
                        return -1;
                }
                ssize_t n = read(in->fd, in->buf, sizeof(in->buf));
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n < 0) {
                        archive_set_error(a, errno, "cannot read the archive: %s", strerror(errno));
                        return -1;
                }
                in->read_bytes += (uint64_t) n;
                archive_input_report(in, false);
                *ret = in->buf;
                return n;
        }
}

/* A read libarchive gave up on: the daemon shutting down (as
 * archive_input_read() said), else what the archive broke with. */
static int archive_read_failed(struct archive *a, const char *path, const char *what, MsbError *err) {
        if (archive_errno(a) == ECANCELED)
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN,
                                     "the daemon is shutting down; the load was abandoned");
        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "%s: %s: %s", path, what,
                             archive_error_string(a) ?: "broken data");
}

/* Counts bytes more to stage for this load; limit-exceeded past
 * LOAD_STAGED_MAX_BYTES (nothing counted then). */
static int load_stage_bytes(LoadSource *src, uint64_t bytes, const char *path, MsbError *err) {
        uint64_t total;

        if (add_overflow_u64(src->staged, bytes, &total) || total > LOAD_STAGED_MAX_BYTES)
                return msb_error_limit(err, "load_staged_bytes", LOAD_STAGED_MAX_BYTES,
                                       "%s: unpacking it takes more than %" PRIu64 " bytes", path,
                                       LOAD_STAGED_MAX_BYTES);
        src->staged = total;
        return 0;
}

/* Copies the member's data into fd, sparse members with their holes. Its
 * declared size was staged: data past it is refused. */
static int unpack_member_data(struct archive *a, int fd, uint64_t declared, const char *path, const char *name,
                              MsbError *err) {
        int r;

        for (;;) {
                const void *block;
                size_t size;
                la_int64_t offset;
                int ar = archive_read_data_block(a, &block, &size, &offset);
                if (ar == ARCHIVE_EOF)
                        break;
                if (ar < ARCHIVE_WARN)
                        return archive_read_failed(a, path, "cannot read a member", err);
                if (offset < 0 || (uint64_t) offset + size > declared)
                        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                             "%s: member %s: its data runs past its declared size", path, name);
                r = pwrite_all(fd, block, size, (uint64_t) offset);
                if (r < 0)
                        return msb_error_from_errno(err, r, "cannot unpack the archive");
        }
        /* A sparse member may end in a hole. */
        if (ftruncate(fd, (off_t) declared) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot unpack the archive");
        return 0;
}

/* Unpacks one regular member, name (safe, relative), into the work directory. */
static int unpack_member(LoadSource *src, struct archive *a, struct archive_entry *e, const char *name,
                         const char *path, MsbError *err) {
        _cleanup_free_ char *dest = NULL;
        uint64_t declared = archive_entry_size_is_set(e) ? (uint64_t) archive_entry_size(e) : 0;
        int r;

        if (declared > LOAD_ARCHIVE_MEMBER_MAX_BYTES)
                return msb_error_limit(err, "layer_uncompressed_bytes", LOAD_ARCHIVE_MEMBER_MAX_BYTES,
                                       "%s: member %s is too large", path, name);
        /* Before a byte of it is written: a bomb stops with nothing more on disk. */
        r = load_stage_bytes(src, declared, path, err);
        if (r < 0)
                return r;

        if (asprintf(&dest, "%s/%s", src->unpacked, name) < 0)
                return -ENOMEM;
        char *slash = strrchr(dest, '/');
        *slash = '\0';
        r = mkdir_p(dest, 0700);
        *slash = '/';
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot unpack the archive");
        /* Only regular files are unpacked, so no symlink should be here;
         * O_NOFOLLOW refuses the member rather than write through one. */
        _cleanup_close_ int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot unpack the archive");
        return unpack_member_data(a, fd, declared, path, name, err);
}

/* Unpacks the regular files of an archive (tar, maybe compressed), read
 * from fd (a regular file, or a pipe when pipe), into a leased temp
 * directory; links, devices and paths escaping it are skipped. path names
 * the archive in errors. */
static int unpack_archive(LoadSource *src, int fd, bool pipe, const char *path, MsbError *err) {
        _cleanup_free_ ArchiveInput *in = calloc(1, sizeof(ArchiveInput));
        struct archive *a = archive_read_new();
        struct archive_entry *e;
        struct stat st;
        size_t members = 0;
        int r = 0;

        if (!a || !in) {
                archive_read_free(a);
                return -ENOMEM;
        }
        *in = (ArchiveInput) { .src = src, .fd = fd, .pipe = pipe, .total_bytes = UINT64_MAX };
        if (!pipe && fstat(fd, &st) == 0)
                in->total_bytes = (uint64_t) st.st_size;
        archive_read_support_filter_all(a);
        archive_read_support_format_tar(a);
        archive_read_support_format_gnutar(a);

        r = make_work_dir(src, err);
        if (r < 0)
                goto out;

        if (archive_read_open(a, in, NULL, archive_input_read, NULL) != ARCHIVE_OK) {
                r = archive_read_failed(a, path, "not a readable archive", err);
                goto out;
        }
        for (;;) {
                int ar = archive_read_next_header(a, &e);
                if (ar == ARCHIVE_EOF)
                        break;
                if (ar < ARCHIVE_WARN) {
                        r = archive_read_failed(a, path, "broken archive", err);
                        goto out;
                }
                if (++members > LOAD_ARCHIVE_MEMBERS_MAX) {
                        r = msb_error_limit(err, "archive_members", LOAD_ARCHIVE_MEMBERS_MAX, "%s has more than %llu members",
                                            path, LOAD_ARCHIVE_MEMBERS_MAX);
                        goto out;
                }
                const char *name = archive_entry_pathname(e);
                if (archive_entry_filetype(e) != AE_IFREG || !name)
                        continue;
                while (name[0] == '.' && name[1] == '/')
                        name += 2;
                if (!member_path_is_safe(name))
                        continue;
                r = unpack_member(src, a, e, name, path, err);
                if (r < 0)
                        goto out;
        }
        archive_input_report(in, true);
        src->root_fd = open(src->unpacked, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = src->root_fd >= 0 ? 0 : msb_error_from_errno(err, negative_errno(), "cannot read the unpacked archive");
out:
        archive_read_free(a);
        return r;
}

/* "blobs/sha256/<hex>": where a layout keeps the blob (OCI image-spec, image-layout.md "Blobs"). */
#define BLOB_REL_PATH_MAX (sizeof("blobs/sha256/") + DIGEST_HEX_LEN)
static const char *blob_rel_path(const char *digest, char buf[static BLOB_REL_PATH_MAX]) {
        snprintf(buf, BLOB_REL_PATH_MAX, "blobs/sha256/%s", digest_hex(digest));
        return buf;
}

/* Reads a small blob of the layout beneath dir_fd and checks it against its descriptor. */
static int read_verified_blob(int dir_fd, const char *digest, uint64_t size, size_t max, char **ret,
                              size_t *ret_size, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        char actual[DIGEST_STRING_MAX], rel[BLOB_REL_PATH_MAX];
        size_t n;
        int r;

        r = source_read(dir_fd, blob_rel_path(digest, rel), max, &data, &n, err);
        if (r < 0)
                return r;
        r = digest_buffer(data, n, actual);
        if (r < 0)
                return r;
        if (!streq(actual, digest) || (size != UINT64_MAX && n != size)) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "blob %s does not match its descriptor (got %s, %zu bytes)", digest, actual, n);
                msb_error_add_data(err, "expected", json_string(digest));
                msb_error_add_data(err, "actual", json_string(actual));
                return -EBADMSG;
        }
        *ret = TAKE_PTR(data);
        *ret_size = n;
        return 0;
}

/* The name an index entry gives its image: containerd's full name, else
 * the OCI ref.name (local: see Candidate), else what the outer entry gave. */
static const char *descriptor_name(const OciDescriptor *d, const char *outer, bool outer_local, bool *ret_local) {
        *ret_local = d->image_name ? false : d->ref_name ? true : outer_local;
        return d->image_name ?: d->ref_name ?: outer;
}

/* Walks an index (and nested indexes) to the manifest for this host. */
static int resolve_manifest(LoadSource *src, const OciDescriptor *d, const char *name, bool local, unsigned depth,
                            MsbError *err) {
        _cleanup_free_ char *data = NULL;
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        OciPlatform host;
        size_t n, pick;
        int r;

        if (d->media_type && oci_media_type_is_manifest(d->media_type))
                return add_candidate(src, d->digest, name, local);
        if (depth >= OCI_INDEX_DEPTH_MAX)
                return msb_error_set(err, -ELOOP, PROTO_ERROR_INVALID_IMAGE, "indexes nest deeper than %d",
                                     OCI_INDEX_DEPTH_MAX);

        r = read_verified_blob(src->blobs_fd, d->digest, d->size, OCI_MANIFEST_MAX_BYTES, &data, &n, err);
        if (r < 0)
                return r;
        const char *mt = oci_document_media_type(data, n);
        if (mt && oci_media_type_is_manifest(mt))
                return add_candidate(src, d->digest, name, local);
        if (!mt || !oci_media_type_is_index(mt)) {
                msb_error_set(err, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                              "%s is neither an image manifest nor an index", d->digest);
                msb_error_add_data(err, "media_type", d->media_type ? json_string(d->media_type) : json_null());
                return -EMEDIUMTYPE;
        }
        r = oci_index_parse(data, n, &idx, err);
        if (r < 0)
                return r;
        oci_host_platform(&host);
        r = oci_index_select(idx, &host, &pick);
        if (r >= 0)
                return resolve_manifest(src, &idx->manifests[pick], name, local, depth + 1, err);

        /* An index may hold indexes without platforms (nested indexes): look inside. */
        for (size_t i = 0; i < idx->n_manifests; i++) {
                const OciDescriptor *e = &idx->manifests[i];
                if (!e->media_type || !oci_media_type_is_index(e->media_type))
                        continue;
                size_t before = src->n_candidates;
                MsbError inner = {};
                bool inner_local;
                const char *inner_name = descriptor_name(e, name, local, &inner_local);
                r = resolve_manifest(src, e, inner_name, inner_local, depth + 1, &inner);
                bool found = r >= 0 && src->n_candidates > before;
                if (r < 0 && inner.kind != PROTO_ERROR_PLATFORM_NOT_FOUND) {
                        if (err && !err->set) {
                                *err = inner;
                                return r;
                        }
                }
                msb_error_clear(&inner);
                if (r < 0 && r != -ENOENT)
                        return r;
                if (found)
                        return 0;
        }
        msb_error_set(err, -ENOENT, PROTO_ERROR_PLATFORM_NOT_FOUND, "the index %s has no image for %s/%s", d->digest,
                      host.os, host.architecture);
        msb_error_add_data(err, "platform", json_sprintf("%s/%s", host.os, host.architecture));
        return -ENOENT;
}

static int scan_oci_layout(LoadSource *src, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        size_t n;
        int r;

        r = source_read(src->root_fd, "index.json", OCI_MANIFEST_MAX_BYTES, &data, &n, err);
        if (r < 0)
                return r;
        r = oci_index_parse(data, n, &idx, err);
        if (r < 0)
                return r;
        if (idx->n_manifests == 0)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_INVALID_IMAGE, "the layout's index.json lists no image");

        for (size_t i = 0; i < idx->n_manifests; i++) {
                const OciDescriptor *d = &idx->manifests[i];
                bool local;
                /* An attestation beside the images (buildkit writes one per
                 * platform) is no image to load, here as in nested indexes. */
                if (oci_descriptor_is_attestation(d))
                        continue;
                const char *name = descriptor_name(d, NULL, false, &local);
                r = resolve_manifest(src, d, name, local, 0, err);
                if (r < 0)
                        return r;
        }
        if (src->n_candidates == 0)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_INVALID_IMAGE,
                                     "the layout's index.json lists attestations only, no image");
        return 0;
}

static int docker_layer_cmp(const void *a, const void *b) {
        return strcmp(((const DockerLayer *) a)->digest, ((const DockerLayer *) b)->digest);
}

/* Records the docker-save layer at rel in the source: its descriptor (digest,
 * size, and the media type its first bytes show) goes into layer_descs, its
 * path into src->docker_layers, where source_open_blob() finds it. */
static int scan_docker_layer(LoadSource *src, const char *rel, json_t *layer_descs, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        char digest[DIGEST_STRING_MAX];
        uint8_t magic[LAYER_MAGIC_BYTES];
        ssize_t n_magic;
        uint64_t size;
        int r;

        r = source_open(src->root_fd, rel, &fd, err);
        if (r < 0)
                return r;
        r = digest_fd(fd, digest, &size);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot read a layer");
        n_magic = pread(fd, magic, sizeof(magic), 0);
        const char *mt = layer_compression_media_type(layer_compression_sniff(magic, n_magic > 0 ? (size_t) n_magic : 0));

        DockerLayer *n = realloc(src->docker_layers, (src->n_docker_layers + 1) * sizeof(DockerLayer));
        if (!n)
                return -ENOMEM;
        src->docker_layers = n;
        DockerLayer *dl = &n[src->n_docker_layers];
        snprintf(dl->digest, sizeof(dl->digest), "%s", digest);
        if (!(dl->path = strdup(rel)))
                return -ENOMEM;
        src->n_docker_layers++;
        json_t *desc = json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", digest, "size", (json_int_t) size);
        return json_array_append_new(layer_descs, desc) < 0 ? -ENOMEM : 0;
}

/* Writes data under its digest in the staging directory, as a layout holds it. */
static int stage_blob(LoadSource *src, const char *digest, const void *data, size_t size, MsbError *err) {
        char rel[BLOB_REL_PATH_MAX];

        (void) mkdirat(src->blobs_fd, "blobs", 0700);
        (void) mkdirat(src->blobs_fd, "blobs/sha256", 0700);
        _cleanup_close_ int fd = openat(src->blobs_fd, blob_rel_path(digest, rel),
                                        O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || write_all(fd, data, size) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot stage the manifest");
        return 0;
}

/* One entry of a docker-save manifest.json: stages the OCI manifest and the
 * config it describes, and adds a candidate per RepoTag. */
static int scan_docker_entry(LoadSource *src, size_t i, json_t *item, MsbError *err) {
        const char *config = json_string_value(json_object_get(item, "Config"));
        json_t *layers = json_object_get(item, "Layers"), *tags = json_object_get(item, "RepoTags"), *l;
        json_auto_t *manifest = NULL, *layer_descs = json_array();
        _cleanup_free_ char *cfg = NULL, *text = NULL;
        char cfg_digest[DIGEST_STRING_MAX], mdigest[DIGEST_STRING_MAX];
        size_t cfg_size, j;
        int r;

        if (!layer_descs)
                return -ENOMEM;
        if (!config || !member_path_is_safe(config) || !json_is_array(layers))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "entry %zu of manifest.json has no Config or Layers", i);
        if (json_array_size(layers) > OCI_LAYERS_MAX)
                return msb_error_limit(err, "layers_per_image", OCI_LAYERS_MAX, "entry %zu has more than %zu layers", i,
                                       OCI_LAYERS_MAX);
        r = source_read(src->root_fd, config, OCI_CONFIG_MAX_BYTES, &cfg, &cfg_size, err);
        if (r < 0)
                return r;
        r = digest_buffer(cfg, cfg_size, cfg_digest);
        if (r < 0)
                return r;

        json_array_foreach(layers, j, l) {
                const char *lp = json_string_value(l);
                if (!lp || !member_path_is_safe(lp))
                        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                             "layer %zu of entry %zu has an invalid path", j, i);
                r = scan_docker_layer(src, lp, layer_descs, err);
                if (r < 0)
                        return r;
        }

        manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:O}", "schemaVersion", 2, "mediaType",
                             OCI_MEDIA_TYPE_MANIFEST, "config", "mediaType", OCI_MEDIA_TYPE_CONFIG, "digest", cfg_digest,
                             "size", (json_int_t) cfg_size, "layers", layer_descs);
        text = manifest ? json_dumps(manifest, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (!text)
                return -ENOMEM;
        r = digest_buffer(text, strlen(text), mdigest);
        if (r < 0)
                return r;
        r = stage_blob(src, mdigest, text, strlen(text), err);
        if (r >= 0)
                r = stage_blob(src, cfg_digest, cfg, cfg_size, err);
        if (r < 0)
                return r;

        size_t n_tags = json_array_size(tags);
        if (n_tags == 0)
                return add_candidate(src, mdigest, NULL, false);
        /* RepoTags are Docker's names ("alpine:3" is Docker Hub's). */
        for (size_t t = 0; t < n_tags; t++) {
                r = add_candidate(src, mdigest, json_string_value(json_array_get(tags, t)), false);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* docker save (and skopeo's docker-archive): manifest.json lists Config,
 * RepoTags and Layers (uncompressed tars or compressed blobs). We write the
 * OCI manifest that describes the same content, deterministically, so the
 * same archive always gives the same manifest digest. */
static int scan_docker_archive(LoadSource *src, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        json_auto_t *root = NULL;
        json_t *item;
        size_t n, i;
        int r;

        /* The OCI manifests and configs written for these images go to a
         * staging directory: never into the caller's directory. An unpacked
         * archive is already ours. The layers stay where they are. */
        if (!src->unpacked) {
                r = make_work_dir(src, err);
                if (r < 0)
                        return r;
        }
        safe_close(src->blobs_fd);
        src->blobs_fd = open(src->unpacked, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (src->blobs_fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot open the staging directory");
        r = source_read(src->root_fd, "manifest.json", OCI_MANIFEST_MAX_BYTES, &data, &n, err);
        if (r < 0)
                return r;
        root = json_loadb(data, n, 0, NULL);
        if (!json_is_array(root) || json_array_size(root) == 0)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "the archive's manifest.json is not a non-empty array");

        json_array_foreach(root, i, item) {
                r = scan_docker_entry(src, i, item, err);
                if (r < 0)
                        return r;
        }
        /* Sorted, so each blob is found by digest in logarithmic time. */
        qsort(src->docker_layers, src->n_docker_layers, sizeof(DockerLayer), docker_layer_cmp);
        return 0;
}

/* Opens the blob named digest: a docker-save layer where the source keeps
 * it, any other blob under blobs/sha256/ in the layout (or staging). */
static int source_open_blob(const LoadSource *src, const char *digest, int *ret_fd, MsbError *err) {
        char rel[BLOB_REL_PATH_MAX];
        DockerLayer key = {};

        snprintf(key.digest, sizeof(key.digest), "%s", digest);
        const DockerLayer *dl = src->n_docker_layers == 0 ? NULL
                                : bsearch(&key, src->docker_layers, src->n_docker_layers, sizeof(DockerLayer),
                                          docker_layer_cmp);
        if (dl)
                return source_open(src->root_fd, dl->path, ret_fd, err);
        return source_open(src->blobs_fd, blob_rel_path(digest, rel), ret_fd, err);
}

/* One image of the source being loaded: its ingest (converted layers, not
 * yet committed) and the references to record. */
typedef struct LoadImage {
        Ingest *ingest;
        char **refs;
        size_t n_refs;
} LoadImage;

/* The images of one load; they commit together (ingest_commit_many()). */
typedef struct LoadBatch {
        LoadImage *images;
        size_t n;
} LoadBatch;

/* Takes back what uncommitted images published (a no-op for committed
 * ones), newest first: an image that found an older one's layer in the
 * store leases it, and that lease must be gone when the older one's abort
 * decides whether the layer is still needed. */
static void load_batch_done(LoadBatch *b) {
        for (size_t i = b->n; i-- > 0;) {
                LoadImage *img = &b->images[i];
                ingest_abort(img->ingest);
                ingest_free(img->ingest);
                for (size_t k = 0; k < img->n_refs; k++)
                        free(img->refs[k]);
                free(img->refs);
        }
        free(b->images);
}

static json_t *layer_event(const char *event, size_t position, const IngestLayer *l) {
        return json_pack("{s:s, s:I, s:s, s:s}", "event", event, "position", (json_int_t) position, "digest",
                         l->blob_digest, "diff_id", l->diff_id);
}

/* Opens layer i's blob and checks its size: even a layer the store has
 * already must match its descriptor, whose size is what the image reports. */
static int open_layer_blob(const LoadSource *src, const IngestLayer *l, int *ret_fd, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        r = source_open_blob(src, l->blob_digest, &fd, err);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot read a layer blob");
        if ((uint64_t) st.st_size != l->size) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "layer blob %s is %" PRIu64 " bytes, its descriptor says %" PRIu64, l->blob_digest,
                              (uint64_t) st.st_size, l->size);
                msb_error_add_data(err, "expected", json_string(l->blob_digest));
                return -EBADMSG;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Converts the layers of img's ingest that the store lacks, reporting each. */
static int load_layers(LoadSource *src, Ingest *in, MsbError *err) {
        uint64_t erofs_size = 0;
        int r;

        for (size_t i = 0; i < ingest_n_layers(in); i++) {
                const IngestLayer *l = ingest_layer(in, i);
                _cleanup_close_ int fd = -EBADF;
                r = open_layer_blob(src, l, &fd, err);
                if (r < 0)
                        return r;
                if (ingest_layer_cached(in, i)) {
                        load_emit(src, layer_event("layer-cached", i, l));
                        continue;
                }
                r = ingest_convert_layer(in, i, fd, err);
                if (r < 0)
                        return r;
                json_t *e = layer_event("layer-converted", i, l);
                if (e && store_layer_lookup(src->store, l->diff_id, &erofs_size) > 0)
                        json_object_set_new(e, "erofs_size_bytes", json_integer((json_int_t) erofs_size));
                load_emit(src, e);
        }
        return 0;
}

/* Verifies the manifest digest names and its config, and converts its
 * layers into the store; img->ingest then holds them until the commit. */
static int load_prepare_image(LoadSource *src, const char *digest, LoadImage *img, MsbError *err) {
        _cleanup_free_ char *manifest = NULL, *config = NULL;
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        uint64_t total = 0;
        size_t msize, csize;
        int r;

        r = read_verified_blob(src->blobs_fd, digest, UINT64_MAX, OCI_MANIFEST_MAX_BYTES, &manifest, &msize, err);
        if (r < 0)
                return r;
        r = oci_manifest_parse(manifest, msize, &m, err);
        if (r < 0)
                return r;
        r = read_verified_blob(src->blobs_fd, m->config.digest, m->config.size, OCI_CONFIG_MAX_BYTES, &config, &csize, err);
        if (r < 0)
                return r;
        r = ingest_new(src->store, digest, manifest, msize, config, csize, &img->ingest, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ingest_n_layers(img->ingest); i++)
                total += ingest_layer(img->ingest, i)->size;
        load_emit(src, json_pack("{s:s, s:s, s:I, s:I}", "event", "resolved", "manifest_digest", digest, "layer_count",
                                 (json_int_t) ingest_n_layers(img->ingest), "total_bytes", (json_int_t) total));
        return load_layers(src, img->ingest, err);
}

/* Commits every image of the batch in one transaction, appending the
 * handle of each reference, in the order the source names them. */
static int load_batch_commit(LoadBatch *b, json_t *handles, MsbError *err) {
        _cleanup_free_ IngestCommit *commits = calloc(b->n + 1, sizeof(IngestCommit));

        if (!commits)
                return -ENOMEM;
        for (size_t i = 0; i < b->n; i++)
                commits[i] = (IngestCommit) {
                        .ingest = b->images[i].ingest,
                        .references = b->images[i].refs,
                        .n_references = b->images[i].n_refs,
                };
        return ingest_commit_many(commits, b->n, handles, err);
}

typedef struct CandidateOrder {
        const char *digest;
        size_t index;
} CandidateOrder;

static int candidate_order_cmp(const void *a, const void *b) {
        const CandidateOrder *x = a, *y = b;
        int c = strcmp(x->digest, y->digest);
        return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* For each candidate, the index of the first candidate naming the same
 * manifest; and how many distinct manifests there are. */
static int group_candidates(const LoadSource *src, size_t **ret_leader, size_t *ret_distinct) {
        size_t n = src->n_candidates, distinct = 0;
        _cleanup_free_ CandidateOrder *order = calloc(n + 1, sizeof(CandidateOrder));
        size_t *leader = calloc(n + 1, sizeof(size_t));

        if (!order || !leader) {
                free(leader);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                order[i] = (CandidateOrder) { src->candidates[i].digest, i };
        qsort(order, n, sizeof(*order), candidate_order_cmp);
        for (size_t i = 0, first = 0; i < n; i++) {
                if (i == 0 || !streq(order[i].digest, order[i - 1].digest)) {
                        first = order[i].index;
                        distinct++;
                }
                leader[order[i].index] = first;
        }
        *ret_leader = leader;
        *ret_distinct = distinct;
        return 0;
}

/* Orders slots by their string, then by position, so that of equal strings
 * the earliest slot comes first. */
static int string_slot_cmp(const void *a, const void *b) {
        char **x = *(char **const *) a, **y = *(char **const *) b;
        int c = strcmp(*x, *y);
        return c ? c : (x > y) - (x < y);
}

/* Drops later duplicates from strs (freeing them), keeping the order of
 * first appearance; returns the new count. */
static size_t unique_strings(char **strs, size_t n) {
        _cleanup_free_ char ***sorted = calloc(n + 1, sizeof(char **));
        size_t out = 0;

        if (!sorted)
                return n;
        for (size_t i = 0; i < n; i++)
                sorted[i] = &strs[i];
        qsort(sorted, n, sizeof(*sorted), string_slot_cmp);
        for (size_t i = 1, keep = 0; i < n; i++) {
                if (!streq(*sorted[i], *sorted[keep])) {
                        keep = i;
                        continue;
                }
                free(*sorted[i]);
                *sorted[i] = NULL;
        }
        for (size_t i = 0; i < n; i++)
                if (strs[i])
                        strs[out++] = strs[i];
        return out;
}

/* The reference a name of the source records. An OCI ref.name is often a
 * tag alone ("v1") or a bare name: without a '/' it names no Docker Hub
 * image, so it goes under localhost/ (localhost/v1:latest). */
static int candidate_reference(const Candidate *c, char **ret, MsbError *err) {
        _cleanup_(reference_freep) Reference *ref = NULL;
        _cleanup_free_ char *local = NULL;
        const char *name = c->name, *reason = NULL;
        int r;

        if (c->local && !strchr(name, '/')) {
                if (asprintf(&local, "localhost/%s", name) < 0)
                        return -ENOMEM;
                name = local;
        }
        r = reference_parse(name, &ref, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_IMAGE,
                              "the source names the image '%s', which is not a valid reference: %s", c->name,
                              reason ?: "invalid");
                return -EINVAL;
        }
        *ret = strdup(ref->canonical);
        return *ret ? 0 : -ENOMEM;
}

/* Whether the client's `image` names candidate c: its name as the source
 * writes it or as recorded (image_canonical: the same parsed, or NULL), or
 * its manifest digest. */
static bool candidate_matches(const Candidate *c, const char *image, const char *image_canonical) {
        _cleanup_free_ char *recorded = NULL;

        if (streq(c->digest, image) || streq_ptr(c->name, image))
                return true;
        return c->name && image_canonical && candidate_reference(c, &recorded, NULL) >= 0 &&
               streq(recorded, image_canonical);
}

/* invalid-params for `image`, listing (some of) what the source holds. */
static int image_not_in_source(const LoadSource *src, const char *image, const char *why, MsbError *err) {
        json_t *held = json_array();

        for (size_t i = 0; i < src->n_candidates && json_array_size(held) < LOAD_IMAGES_LISTED; i++)
                json_array_append_new(held, json_string(src->candidates[i].name ?: src->candidates[i].digest));
        msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "image '%s' %s the source's images", image, why);
        msb_error_add_data(err, "parameter", json_string("image"));
        msb_error_add_data(err, "candidates", held);
        return -EINVAL;
}

/* The leader (see group_candidates()) of the one image `image` names. */
static int select_image(const LoadSource *src, const size_t *leader, const char *image, size_t *ret,
                        MsbError *err) {
        _cleanup_(reference_freep) Reference *ref = NULL;
        size_t found = SIZE_MAX;

        if (reference_parse(image, &ref, NULL) == -ENOMEM)
                return -ENOMEM;
        for (size_t i = 0; i < src->n_candidates; i++) {
                if (!candidate_matches(&src->candidates[i], image, ref ? ref->canonical : NULL))
                        continue;
                if (found != SIZE_MAX && found != leader[i])
                        return image_not_in_source(src, image, "names several of", err);
                found = leader[i];
        }
        if (found == SIZE_MAX)
                return image_not_in_source(src, image, "names none of", err);
        *ret = found;
        return 0;
}

/* The references to record for the image whose first candidate is `first`:
 * tag, then the names the source gives it, each once. */
static int load_image_refs(const LoadSource *src, const size_t *leader, size_t first, const char *tag,
                           LoadImage *img, MsbError *err) {
        int r = 0;

        /* A digest reference names one manifest: never record it for another. */
        const char *at = tag ? strchr(tag, '@') : NULL;
        if (at && !streq(at + 1, src->candidates[first].digest)) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "tag %s names manifest %s, but the source holds %s",
                              tag, at + 1, src->candidates[first].digest);
                msb_error_add_data(err, "parameter", json_string("tag"));
                return -EINVAL;
        }
        img->refs = calloc(src->n_candidates + 2, sizeof(char *));
        if (!img->refs)
                return -ENOMEM;
        if (tag && !(img->refs[img->n_refs++] = strdup(tag)))
                return -ENOMEM;
        for (size_t j = first; j < src->n_candidates; j++) {
                const char *name = src->candidates[j].name;
                if (!name || leader[j] != first)
                        continue;
                /* A bare ref.name ("latest", "v1") is a layout's tag, not a
                 * reference: with tag given, it adds nothing. */
                if (tag && !strpbrk(name, "/:@"))
                        continue;
                r = candidate_reference(&src->candidates[j], &img->refs[img->n_refs], err);
                if (r < 0)
                        return r;
                img->n_refs++;
        }
        img->n_refs = unique_strings(img->refs, img->n_refs);
        if (img->n_refs == 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "the image %s names no reference; pass tag",
                              src->candidates[first].digest);
                msb_error_add_data(err, "parameter", json_string("tag"));
                return -EINVAL;
        }
        return 0;
}

/* Adds the image whose first candidate is `first` to the batch: its
 * references, then its layers converted. */
static int load_batch_add(LoadBatch *b, LoadSource *src, const size_t *leader, size_t first, MsbError *err) {
        LoadImage *n = realloc(b->images, (b->n + 1) * sizeof(LoadImage));
        int r;

        if (!n)
                return -ENOMEM;
        b->images = n;
        LoadImage *img = &b->images[b->n++];
        *img = (LoadImage) {};
        r = load_image_refs(src, leader, first, src->req->tag, img, err);
        if (r < 0)
                return r;
        return load_prepare_image(src, src->candidates[first].digest, img, err);
}

/* The archive the client passed: a regular file or a pipe (FIFO), opened
 * for reading. Anything else is invalid params, naming what it is. */
static int source_open_passed_fd(LoadSource *src, int fd, MsbError *err) {
        struct stat st;
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fstat(fd, &st) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot use the file descriptor passed");
        if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS,
                              "the file descriptor passed is a %s: a load reads an archive from a regular file or a "
                              "pipe",
                              file_type_name(st.st_mode));
                msb_error_add_data(err, "parameter", json_string("fd"));
                return -EINVAL;
        }
        if ((flags & O_ACCMODE) == O_WRONLY) {
                msb_error_set(err, -EBADF, PROTO_ERROR_INVALID_PARAMS,
                              "the file descriptor passed is open for writing only");
                msb_error_add_data(err, "parameter", json_string("fd"));
                return -EBADF;
        }
        return unpack_archive(src, fd, S_ISFIFO(st.st_mode), "the archive passed", err);
}

/*
 * Opens the path the client named: a directory is the source root, a
 * regular file an archive unpacked into a temp directory that becomes the
 * root. The path itself may be a symlink (users keep layouts behind one);
 * it is resolved once, here, and everything after is opened beneath the
 * root. Opened without blocking, so a FIFO is refused at once rather than
 * waiting for a writer while it holds a worker thread.
 */
static int source_open_path(LoadSource *src, const char *path, MsbError *err) {
        _cleanup_close_ int fd = open(path, OPEN_UNTRUSTED_FLAGS);
        struct stat st;
        int r;

        if (fd < 0 || fstat(fd, &st) < 0) {
                r = negative_errno();
                msb_error_set(err, r, PROTO_ERROR_PATH_NOT_FOUND, "cannot load %s: %s", path, strerror(-r));
                msb_error_add_data(err, "path", json_string(path));
                return r;
        }
        if (S_ISDIR(st.st_mode)) {
                src->root_fd = TAKE_FD(fd);
                return 0;
        }
        if (!S_ISREG(st.st_mode)) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_IMAGE,
                              "%s is a %s: neither a directory nor an archive", path, file_type_name(st.st_mode));
                msb_error_add_data(err, "path", json_string(path));
                return -EINVAL;
        }
        r = fd_set_blocking(fd);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot read the archive");
        return unpack_archive(src, fd, false, path, err);
}

/* Opens the source and finds its images (src->candidates). */
static int source_scan(LoadSource *src, MsbError *err) {
        const LoadRequest *req = src->req;
        int r;

        r = req->path ? source_open_path(src, req->path, err) : source_open_passed_fd(src, req->fd, err);
        if (r < 0)
                return r;
        src->blobs_fd = fcntl(src->root_fd, F_DUPFD_CLOEXEC, 3);
        if (src->blobs_fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot read the source");
        if (source_has(src->root_fd, "oci-layout") && source_has(src->root_fd, "index.json"))
                return scan_oci_layout(src, err);
        if (source_has(src->root_fd, "manifest.json"))
                return scan_docker_archive(src, err);
        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                             "%s is not an OCI layout, OCI archive or docker-save archive",
                             req->path ?: "the archive passed");
}

int load_images(Store *store, const LoadRequest *req, json_t **ret, MsbError *err) {
        _cleanup_(load_source_done) LoadSource src = {
                .store = store, .req = req, .root_fd = -EBADF, .blobs_fd = -EBADF
        };
        _cleanup_(load_batch_done) LoadBatch batch = {};
        _cleanup_free_ size_t *leader = NULL;
        json_auto_t *handles = json_array();
        size_t distinct = 0, only = SIZE_MAX;
        int r;

        if (!handles)
                return -ENOMEM;
        r = source_scan(&src, err);
        if (r < 0)
                return r;

        /* Group the names by manifest: each distinct manifest loads once,
         * under all its names. Sorting keeps this linear-logarithmic for
         * sources naming thousands of references. */
        r = group_candidates(&src, &leader, &distinct);
        if (r < 0)
                return r;
        if (req->image) {
                r = select_image(&src, leader, req->image, &only, err);
                if (r < 0)
                        return r;
                distinct = 1;
        }
        if (req->tag && distinct > 1) {
                return msb_error_invalid_param(err, "tag",
                                               "the source holds %zu images; tag names only one: pick it with image",
                                               distinct);
        }

        for (size_t i = 0; i < src.n_candidates; i++) {
                if (leader[i] != i || (only != SIZE_MAX && i != only))
                        continue;
                r = load_batch_add(&batch, &src, leader, i, err);
                if (r < 0)
                        return r;
        }
        r = load_batch_commit(&batch, handles, err);
        if (r < 0)
                return r;
        load_emit(&src, json_pack("{s:s, s:I}", "event", "complete", "images", (json_int_t) batch.n));
        *ret = TAKE_PTR(handles);
        return 0;
}
