/* SPDX-License-Identifier: Apache-2.0 */
#include "load_internal.h"

/* The source of a load: opened once, every file of it read beneath its
 * root without blocking, archives unpacked into a bounded staging area. */

void load_source_done(LoadSource *src) {
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
int load_source_open(int dir_fd, const char *rel, int *ret_fd, MsbError *err) {
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
int load_source_read(int dir_fd, const char *rel, size_t max, char **ret, size_t *ret_size, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = load_source_open(dir_fd, rel, &fd, err);
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
bool load_source_has(int dir_fd, const char *rel) {
        _cleanup_close_ int fd = -EBADF;
        int r = open_beneath(dir_fd, rel, 0, &fd);
        return r != -ENOENT && r != -ENOTDIR;
}

int load_add_candidate(LoadSource *src, const char *digest, const char *name, bool local) {
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
bool load_member_path_is_safe(const char *p) {
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
int load_make_work_dir(LoadSource *src, MsbError *err) {
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
void load_emit(const LoadSource *src, json_t *event) {
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
        uint64_t reported_ms; /* monotonic; 0 before the first report */
        char buf[1 * MiB];
} ArchiveInput;

#define ARCHIVE_INPUT_POLL_MS 250

/* Reports the bytes read: every LOAD_PROGRESS_INTERVAL_MS, and the last
 * count once the archive is read (unless that was just said). */
static void archive_input_report(ArchiveInput *in, bool last) {
        uint64_t now = now_monotonic_ms();

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
        /* Monotonic: a step of the wall clock neither ends a load early nor
         * lets a silent pipe hold its worker longer. */
        uint64_t since = now_monotonic_ms();

        for (;;) {
                struct pollfd p = { .fd = in->fd, .events = POLLIN };
                int n = poll(&p, 1, ARCHIVE_INPUT_POLL_MS);
                if (n > 0)
                        return 0;
                if (n < 0 && errno != EINTR)
                        return negative_errno();
                if (store_cancelled(in->src->store))
                        return -ECANCELED;
                if (now_monotonic_ms() - since >= LOAD_PIPE_IDLE_MAX_MS)
                        return -ETIMEDOUT;
        }
}

static la_ssize_t archive_input_read(struct archive *a, void *userdata, const void **ret) {
        ArchiveInput *in = userdata;

        for (;;) {
                int r = in->pipe ? archive_input_wait(in) : 0;
                if (r < 0) {
                        sym_archive_set_error(a, -r, "%s",
                                          r == -ETIMEDOUT ? "the pipe brought no data for too long"
                                          : r == -ECANCELED ? "the daemon is shutting down"
                                                            : strerror(-r));
                        return -1;
                }
                ssize_t n = read(in->fd, in->buf, sizeof(in->buf));
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n < 0) {
                        sym_archive_set_error(a, errno, "cannot read the archive: %s", strerror(errno));
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
        if (sym_archive_errno(a) == ECANCELED)
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN,
                                     "the daemon is shutting down; the load was abandoned");
        if (sym_archive_errno(a) == ETIMEDOUT)
                return msb_error_limit(err, "load_pipe_idle_ms", LOAD_PIPE_IDLE_MAX_MS,
                                       "%s: the pipe brought no data for %" PRIu64 " s", path,
                                       (uint64_t) (LOAD_PIPE_IDLE_MAX_MS / MSEC_PER_SEC));
        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "%s: %s: %s", path, what,
                             sym_archive_error_string(a) ?: "broken data");
}

/* Counts bytes more to stage for this load; limit-exceeded past
 * LOAD_STAGED_MAX_BYTES, store-error when they would take the store's
 * filesystem below its floor (nothing counted then): a gzip bomb stops at
 * whichever comes first, before the member is unpacked. */
static int load_stage_bytes(LoadSource *src, uint64_t bytes, const char *path, MsbError *err) {
        uint64_t total;
        int r;

        if (add_overflow_u64(src->staged, bytes, &total) || total > LOAD_STAGED_MAX_BYTES)
                return msb_error_limit(err, "load_staged_bytes", LOAD_STAGED_MAX_BYTES,
                                       "%s: unpacking it takes more than %" PRIu64 " bytes", path,
                                       LOAD_STAGED_MAX_BYTES);
        r = store_space_check(src->store, bytes, path, NULL, err);
        if (r < 0)
                return r;
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
                int ar = sym_archive_read_data_block(a, &block, &size, &offset);
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
        uint64_t declared = sym_archive_entry_size_is_set(e) ? (uint64_t) sym_archive_entry_size(e) : 0;
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
        _cleanup_free_ ArchiveInput *in = NULL;
        struct archive *a;
        struct archive_entry *e;
        struct stat st;
        size_t members = 0;
        int r;

        r = archive_lib_load(err);
        if (r < 0)
                return r;
        in = calloc(1, sizeof(ArchiveInput));
        a = sym_archive_read_new();
        if (!a || !in) {
                sym_archive_read_free(a);
                return -ENOMEM;
        }
        *in = (ArchiveInput) { .src = src, .fd = fd, .pipe = pipe, .total_bytes = UINT64_MAX };
        if (!pipe && fstat(fd, &st) == 0)
                in->total_bytes = (uint64_t) st.st_size;
        sym_archive_read_support_filter_all(a);
        sym_archive_read_support_format_tar(a);
        sym_archive_read_support_format_gnutar(a);

        r = load_make_work_dir(src, err);
        if (r < 0)
                goto out;

        if (sym_archive_read_open(a, in, NULL, archive_input_read, NULL) != ARCHIVE_OK) {
                r = archive_read_failed(a, path, "not a readable archive", err);
                goto out;
        }
        for (;;) {
                int ar = sym_archive_read_next_header(a, &e);
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
                const char *name = sym_archive_entry_pathname(e);
                if (sym_archive_entry_filetype(e) != AE_IFREG || !name)
                        continue;
                while (name[0] == '.' && name[1] == '/')
                        name += 2;
                if (!load_member_path_is_safe(name))
                        continue;
                r = unpack_member(src, a, e, name, path, err);
                if (r < 0)
                        goto out;
        }
        archive_input_report(in, true);
        src->root_fd = open(src->unpacked, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        r = src->root_fd >= 0 ? 0 : msb_error_from_errno(err, negative_errno(), "cannot read the unpacked archive");
out:
        sym_archive_read_free(a);
        return r;
}
/* The archive the client passed: a regular file or a pipe (FIFO), opened
 * for reading. Anything else is invalid params, naming what it is. */
int load_source_open_passed_fd(LoadSource *src, int fd, MsbError *err) {
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
int load_source_open_path(LoadSource *src, const char *path, MsbError *err) {
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
