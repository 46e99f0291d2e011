/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/file.h>

#include "digest.h"
#include "store-internal.h"

/* The store object: its directories, lock, index connection, paths, leases
 * and temp files. Queries live in store_image.c, store_pin.c, store_gc.c
 * and store_df.c; connections and transactions in store_db.c. */

static const char *const content_dirs[] = { "blobs", "blobs/sha256", "layers", "layers/sha256",
                                            "fsmeta", "fsmeta/sha256", "vmdk", "vmdk/sha256", "tmp" };

const char *const content_kind_dir[_CONTENT_KIND_MAX] = {
        [CONTENT_BLOB] = "blobs/sha256",
        [CONTENT_LAYER] = "layers/sha256",
        [CONTENT_FSMETA] = "fsmeta/sha256",
        [CONTENT_VMDK] = "vmdk/sha256",
};

const char *const content_kind_suffix[_CONTENT_KIND_MAX] = {
        [CONTENT_BLOB] = "",
        [CONTENT_LAYER] = ".erofs",
        [CONTENT_FSMETA] = ".erofs",
        [CONTENT_VMDK] = ".vmdk",
};

char *store_path_join(const char *a, const char *b) {
        char *p;
        if (asprintf(&p, "%s/%s", a, b) < 0)
                return NULL;
        return p;
}

char *store_content_path(const Store *s, ContentKind kind, const char *digest) {
        const char *hex = digest_hex(digest);
        char *p;

        if (!hex)
                return NULL;
        if (asprintf(&p, "%s/%s/%s%s", s->path, content_kind_dir[kind], hex, content_kind_suffix[kind]) < 0)
                return NULL;
        return p;
}

bool store_content_file_exists(const Store *s, ContentKind kind, const char *digest) {
        _cleanup_free_ char *p = store_content_path(s, kind, digest);
        return p && access(p, F_OK) == 0;
}

bool store_content_name_to_digest(ContentKind kind, const char *name, char ret[DIGEST_STRING_MAX]) {
        const char *suffix = content_kind_suffix[kind];
        size_t len = strlen(name), slen = strlen(suffix);

        if (len != 64 + slen || !streq(name + 64, suffix))
                return false;
        snprintf(ret, DIGEST_STRING_MAX, "sha256:%.64s", name);
        return digest_is_valid(ret);
}

char *store_blob_path(const Store *s, const char *digest) {
        return store_content_path(s, CONTENT_BLOB, digest);
}

char *store_layer_path(const Store *s, const char *diff_id) {
        return store_content_path(s, CONTENT_LAYER, diff_id);
}

char *store_fsmeta_path(const Store *s, const char *manifest_digest) {
        return store_content_path(s, CONTENT_FSMETA, manifest_digest);
}

char *store_vmdk_path(const Store *s, const char *manifest_digest) {
        return store_content_path(s, CONTENT_VMDK, manifest_digest);
}

const char *store_path(const Store *s) {
        return s->path;
}

const char *store_tmp_dir(const Store *s) {
        return s->tmp_dir;
}

void store_cancel(Store *s) {
        __atomic_store_n(&s->cancelled, true, __ATOMIC_RELEASE);
}

bool store_cancelled(const Store *s) {
        return __atomic_load_n(&s->cancelled, __ATOMIC_ACQUIRE);
}

const StoreSweepStats *store_sweep_stats(const Store *s) {
        return &s->sweep;
}

/* ---- who hears of changes ---- */

const char *store_event_type_name(StoreEventType type) {
        static const char *const names[_STORE_EVENT_TYPE_MAX] = {
                [STORE_EVENT_IMAGE_LOADED] = "image.loaded",   [STORE_EVENT_IMAGE_PULLED] = "image.pulled",
                [STORE_EVENT_IMAGE_REMOVED] = "image.removed", [STORE_EVENT_IMAGE_PRUNED] = "image.pruned",
                [STORE_EVENT_IMAGE_EVICTED] = "image.evicted", [STORE_EVENT_PIN_ADDED] = "pin.added",
                [STORE_EVENT_PIN_REMOVED] = "pin.removed",
        };
        return type < _STORE_EVENT_TYPE_MAX ? names[type] : NULL;
}

void store_set_observer(Store *s, const StoreObserver *o) {
        s->observer = o ? *o : (StoreObserver) {};
}

void store_emit(Store *s, const StoreEvent *ev) {
        if (s->observer.event)
                s->observer.event(ev, s->observer.userdata);
}

/* ---- leases ---- */

static bool lease_held_locked(Store *s, const char *key) {
        for (Lease *l = s->leases; l; l = l->next)
                if (streq(l->key, key))
                        return true;
        return false;
}

bool store_lease_held(Store *s, const char *key) {
        pthread_mutex_lock(&s->lease_lock);
        bool held = lease_held_locked(s, key);
        pthread_mutex_unlock(&s->lease_lock);
        return held;
}

bool store_lease_only_caller_locked(Store *s, const char *key) {
        for (Lease *l = s->leases; l; l = l->next)
                if (streq(l->key, key))
                        return l->count <= 1;
        return true;
}

int store_lease_acquire(Store *s, const char *key) {
        int r = 0;

        pthread_mutex_lock(&s->lease_lock);
        for (Lease *l = s->leases; l; l = l->next)
                if (streq(l->key, key)) {
                        l->count++;
                        goto out;
                }

        Lease *l = calloc(1, sizeof(*l));
        if (!l || !(l->key = strdup(key))) {
                free(l);
                r = -ENOMEM;
                goto out;
        }
        l->count = 1;
        l->next = s->leases;
        s->leases = l;
out:
        pthread_mutex_unlock(&s->lease_lock);
        return r;
}

void store_lease_release(Store *s, const char *key) {
        pthread_mutex_lock(&s->lease_lock);
        for (Lease **p = &s->leases; *p; p = &(*p)->next)
                if (streq((*p)->key, key)) {
                        Lease *l = *p;
                        if (--l->count == 0) {
                                *p = l->next;
                                free(l->key);
                                free(l);
                        }
                        break;
                }
        pthread_mutex_unlock(&s->lease_lock);
}

/* ---- temp files ---- */

static const char *basename_of(const char *path) {
        const char *b = strrchr(path, '/');
        return b ? b + 1 : path;
}

int store_tmpfile(Store *s, const char *purpose, int *ret_fd, char **ret_path) {
        _cleanup_free_ char *path = NULL;
        uint64_t n;
        int r;

        pthread_mutex_lock(&s->lease_lock);
        n = ++s->tmp_counter;
        pthread_mutex_unlock(&s->lease_lock);

        if (asprintf(&path, "%s/%d-%" PRIu64 "-%s", s->tmp_dir, (int) getpid(), n, purpose) < 0)
                return -ENOMEM;
        r = store_lease_acquire(s, basename_of(path));
        if (r < 0)
                return r;

        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = negative_errno();
                store_lease_release(s, basename_of(path));
                return r;
        }

        *ret_fd = fd;
        *ret_path = TAKE_PTR(path);
        return 0;
}

void store_tmpfile_discard(Store *s, const char *tmp_path) {
        if (!tmp_path)
                return;
        (void) unlink(tmp_path);
        store_lease_release(s, basename_of(tmp_path));
}

int store_tmpfile_publish(Store *s, int fd, const char *tmp_path, const char *final_path) {
        _cleanup_free_ char *dir = strdup(final_path);

        if (!dir)
                return -ENOMEM;
        if (fsync(fd) < 0)
                return negative_errno();
        if (rename(tmp_path, final_path) < 0)
                return negative_errno();
        store_lease_release(s, basename_of(tmp_path));

        *strrchr(dir, '/') = '\0';
        return fsync_directory(dir);
}

int store_write_file(Store *s, const char *final_path, const void *data, size_t size) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (access(final_path, F_OK) == 0)
                return 0;

        r = store_tmpfile(s, "blob", &fd, &tmp);
        if (r < 0)
                return r;
        r = write_all(fd, data, size);
        if (r >= 0)
                r = store_tmpfile_publish(s, fd, tmp, final_path);
        if (r < 0)
                store_tmpfile_discard(s, tmp);
        return r;
}

/* ---- open: directories, lock, index ---- */

/* A directory of the store must be the daemon's user's own and closed to
 * others: anyone who can write in it could plant or swap files that a
 * sandbox then boots. One we own is made STORE_DIR_MODE; one we do not own
 * (or a symlink in place of a subdirectory) is refused, naming what it is. */
static int store_secure_dir(const char *path, MsbError *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;

        if (fd < 0) {
                int r = negative_errno();
                bool link = lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
                return msb_error_set(err, r, PROTO_ERROR_STORE_ERROR, "cannot open the store directory %s: %s",
                                     path, link ? "it is a symlink" : strerror(-r));
        }
        if (fstat(fd, &st) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot stat the store directory");
        if (st.st_uid != geteuid())
                return msb_error_set(err, -EPERM, PROTO_ERROR_STORE_ERROR,
                                     "the store directory %s belongs to uid %u (mode %04o), not to this daemon's "
                                     "uid %u: refusing to use it",
                                     path, (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777), (unsigned) geteuid());
        if ((st.st_mode & 07777) != STORE_DIR_MODE && fchmod(fd, STORE_DIR_MODE) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot make the store directory private");
        return 0;
}

static int store_make_dirs(Store *s, MsbError *err) {
        int r;

        r = store_secure_dir(s->path, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(content_dirs); i++) {
                _cleanup_free_ char *d = store_path_join(s->path, content_dirs[i]);
                if (!d)
                        return -ENOMEM;
                if (mkdir(d, STORE_DIR_MODE) < 0 && errno != EEXIST)
                        return msb_error_from_errno(err, negative_errno(), "cannot create the store's directories");
                r = store_secure_dir(d, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int store_lock(Store *s, MsbError *err) {
        _cleanup_free_ char *lock_path = store_path_join(s->path, "lock");
        char buf[32];
        int r;

        if (!lock_path)
                return -ENOMEM;

        s->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (s->lock_fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot open the store's lock file");

        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
                r = negative_errno();
                if (r != -EWOULDBLOCK)
                        return msb_error_from_errno(err, r, "cannot lock the store");

                ssize_t n = pread(s->lock_fd, buf, sizeof(buf) - 1, 0);
                buf[n > 0 ? n : 0] = '\0';
                buf[strcspn(buf, "\n")] = '\0';
                return msb_error_set(err, -EBUSY, PROTO_ERROR_STORE_ERROR,
                                     "the store %s is in use by another msb-imaged (pid %s)", s->path,
                                     buf[0] ? buf : "unknown");
        }

        int len = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());
        if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, buf, (size_t) len, 0) != len)
                return msb_error_from_errno(err, negative_errno(), "cannot record the pid in the lock file");
        return 0;
}

/* SQLite creates index.db-wal and -shm with the mode of index.db, so the
 * index file made (or made again) 0600 first keeps all three private. */
static int store_secure_index_file(const char *db_path, MsbError *err) {
        _cleanup_close_ int fd = open(db_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);

        if (fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot open the index");
        if (fchmod(fd, 0600) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot make the index private");
        static const char *const companions[] = { "-wal", "-shm" };
        for (size_t i = 0; i < ELEMENTSOF(companions); i++) {
                _cleanup_free_ char *p = NULL;
                if (asprintf(&p, "%s%s", db_path, companions[i]) < 0)
                        return -ENOMEM;
                if (chmod(p, 0600) < 0 && errno != ENOENT)
                        return msb_error_from_errno(err, negative_errno(), "cannot make the index private");
        }
        return 0;
}

int store_open(const char *path, Store **ret, MsbError *err) {
        _cleanup_(store_freep) Store *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->lock_fd = -EBADF;
        pthread_mutex_init(&s->write_lock, NULL);
        pthread_mutex_init(&s->lease_lock, NULL);
        pthread_mutex_init(&s->budget_lock, NULL);
        pthread_mutex_init(&s->evict_lock, NULL);

        s->path = realpath(path, NULL);
        if (!s->path) {
                r = mkdir_p(path, STORE_DIR_MODE);
                if (r < 0)
                        return msb_error_from_errno(err, r, "cannot create the store directory");
                s->path = realpath(path, NULL);
                if (!s->path)
                        return msb_error_from_errno(err, negative_errno(), "cannot resolve the store path");
        }
        /* Whose the directory is comes before anything is written in it. */
        r = store_secure_dir(s->path, err);
        if (r < 0)
                return r;
        r = store_lock(s, err);
        if (r < 0)
                return r;
        r = store_make_dirs(s, err);
        if (r < 0)
                return r;

        s->tmp_dir = store_path_join(s->path, "tmp");
        s->db_path = store_path_join(s->path, "index.db");
        if (!s->tmp_dir || !s->db_path)
                return -ENOMEM;
        r = store_secure_index_file(s->db_path, err);
        if (r < 0)
                return r;
        r = store_db_open(s->db_path, false, &s->db);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot open the index");
        r = store_migrate(s, err);
        if (r < 0)
                return r;
        r = store_sweep(s, err);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        sqlite3_close(s->db);
        while (s->leases) {
                Lease *l = s->leases;
                s->leases = l->next;
                free(l->key);
                free(l);
        }
        safe_close(s->lock_fd);
        pthread_mutex_destroy(&s->write_lock);
        pthread_mutex_destroy(&s->lease_lock);
        pthread_mutex_destroy(&s->budget_lock);
        pthread_mutex_destroy(&s->evict_lock);
        free(s->db_path);
        free(s->tmp_dir);
        free(s->path);
        free(s);
        return NULL;
}
