/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "digest.h"
#include "jsontext.h"
#include "store.h"

#define STORE_DIR_MODE 0700
#define STORE_BUSY_TIMEOUT_MS 10000

typedef struct Lease {
        char *key;
        unsigned count;
        struct Lease *next;
} Lease;

struct Store {
        char *path;
        char *tmp_dir;
        int lock_fd;

        /* The writer connection, used by worker threads under write_lock. */
        sqlite3 *db;
        pthread_mutex_t write_lock;
        /* The reader connection, used only on the loop thread. */
        sqlite3 *db_read;

        pthread_mutex_t lease_lock;
        Lease *leases;
        uint64_t tmp_counter;

        StoreSweepStats sweep;
        bool cancelled;
};

static const char *const content_dirs[] = { "blobs/sha256", "layers/sha256", "fsmeta/sha256", "vmdk/sha256" };

/* Schema migrations, applied in order; PRAGMA user_version records how many ran. */
static const char *const store_migrations[] = {
        /* 1: the first schema. */
        "CREATE TABLE manifests ("
        "  digest TEXT PRIMARY KEY,"
        "  media_type TEXT NOT NULL,"
        "  size INTEGER NOT NULL,"
        "  config_digest TEXT NOT NULL,"
        "  config_size INTEGER NOT NULL,"
        "  architecture TEXT, os TEXT, variant TEXT,"
        "  layer_count INTEGER NOT NULL,"
        "  size_bytes INTEGER NOT NULL,"
        "  fsmeta_size INTEGER, vmdk_size INTEGER,"
        "  created_at INTEGER NOT NULL);"
        "CREATE TABLE layers ("
        "  diff_id TEXT PRIMARY KEY,"
        "  erofs_size INTEGER NOT NULL,"
        "  created_at INTEGER NOT NULL);"
        "CREATE TABLE manifest_layers ("
        "  manifest_digest TEXT NOT NULL REFERENCES manifests(digest) ON DELETE CASCADE,"
        "  position INTEGER NOT NULL,"
        "  blob_digest TEXT NOT NULL,"
        "  diff_id TEXT NOT NULL REFERENCES layers(diff_id),"
        "  media_type TEXT,"
        "  compressed_size INTEGER,"
        "  PRIMARY KEY (manifest_digest, position));"
        "CREATE INDEX manifest_layers_by_diff_id ON manifest_layers(diff_id);"
        "CREATE TABLE image_refs ("
        "  reference TEXT PRIMARY KEY,"
        "  repository TEXT NOT NULL,"
        "  manifest_digest TEXT NOT NULL REFERENCES manifests(digest),"
        "  created_at INTEGER NOT NULL,"
        "  last_used_at INTEGER NOT NULL);"
        "CREATE INDEX image_refs_by_manifest ON image_refs(manifest_digest);"
        "CREATE INDEX image_refs_by_created ON image_refs(created_at);"
        "CREATE TABLE pins ("
        "  kind TEXT NOT NULL,"
        "  name TEXT NOT NULL,"
        "  reference TEXT NOT NULL,"
        "  manifest_digest TEXT NOT NULL REFERENCES manifests(digest),"
        "  created_at INTEGER NOT NULL,"
        "  PRIMARY KEY (kind, name));"
        "CREATE INDEX pins_by_manifest ON pins(manifest_digest);",
};

/* ---- small helpers ---- */

static int sqlite_to_errno(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
        case SQLITE_PERM:
                return -EROFS;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EUCLEAN;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        default:
                return -EIO;
        }
}

static int db_error(sqlite3 *db, int rc, MsbError *err, const char *what) {
        return msb_error_set(err, sqlite_to_errno(rc) ?: -EIO, PROTO_ERROR_STORE_ERROR, "%s: %s", what,
                             sqlite3_errmsg(db));
}

static void stmt_finalizep(sqlite3_stmt **st) {
        if (*st)
                sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(stmt_finalizep)

static int db_exec(sqlite3 *db, const char *sql) {
        return sqlite_to_errno(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

static int db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret) {
        return sqlite_to_errno(sqlite3_prepare_v2(db, sql, -1, ret, NULL));
}

static json_t *column_string_or_null(sqlite3_stmt *st, int col) {
        const unsigned char *s = sqlite3_column_text(st, col);
        return s ? json_string((const char *) s) : json_null();
}

static json_t *column_int_or_null(sqlite3_stmt *st, int col) {
        return sqlite3_column_type(st, col) == SQLITE_NULL ? json_null()
                                                           : json_integer(sqlite3_column_int64(st, col));
}

static void write_unlock(pthread_mutex_t **m) {
        if (*m)
                pthread_mutex_unlock(*m);
}
/* Holds the writer connection until the end of the scope. */
#define STORE_WRITE_LOCKED(s)                                                   \
        _cleanup_(write_unlock) pthread_mutex_t *_wl_ = &(s)->write_lock;      \
        pthread_mutex_lock(_wl_)

/* Rolls back a transaction still open when the scope ends. */
static void rollbackp(sqlite3 **db) {
        if (*db && !sqlite3_get_autocommit(*db))
                sqlite3_exec(*db, "ROLLBACK", NULL, NULL, NULL);
}
#define _cleanup_rollback_ _cleanup_(rollbackp)

/* Holds the writer connection for the scope, with tx for a transaction that
 * is rolled back if still open. Declared in this order, the rollback runs
 * before the lock is released: never on a connection another thread holds. */
#define STORE_WRITE_TRANSACTION(s, tx) \
        STORE_WRITE_LOCKED(s);         \
        _cleanup_rollback_ sqlite3 *tx = NULL

static char *path_join(const char *a, const char *b) {
        char *p;
        if (asprintf(&p, "%s/%s", a, b) < 0)
                return NULL;
        return p;
}

static char *content_path(const Store *s, const char *dir, const char *digest, const char *suffix) {
        const char *hex = digest_hex(digest);
        char *p;

        if (!hex)
                return NULL;
        if (asprintf(&p, "%s/%s/%s%s", s->path, dir, hex, suffix) < 0)
                return NULL;
        return p;
}

char *store_blob_path(const Store *s, const char *digest) {
        return content_path(s, "blobs/sha256", digest, "");
}

char *store_layer_path(const Store *s, const char *diff_id) {
        return content_path(s, "layers/sha256", diff_id, ".erofs");
}

char *store_fsmeta_path(const Store *s, const char *manifest_digest) {
        return content_path(s, "fsmeta/sha256", manifest_digest, ".erofs");
}

char *store_vmdk_path(const Store *s, const char *manifest_digest) {
        return content_path(s, "vmdk/sha256", manifest_digest, ".vmdk");
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

/* ---- leases ---- */

static bool lease_held_locked(Store *s, const char *key) {
        for (Lease *l = s->leases; l; l = l->next)
                if (streq(l->key, key))
                        return true;
        return false;
}

static bool store_lease_held(Store *s, const char *key) {
        pthread_mutex_lock(&s->lease_lock);
        bool held = lease_held_locked(s, key);
        pthread_mutex_unlock(&s->lease_lock);
        return held;
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

        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
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
        int r;

        if (!dir)
                return -ENOMEM;
        if (fsync(fd) < 0)
                return negative_errno();
        if (rename(tmp_path, final_path) < 0)
                return negative_errno();
        store_lease_release(s, basename_of(tmp_path));

        *strrchr(dir, '/') = '\0';
        r = fsync_directory(dir);
        if (r < 0)
                return r;
        return 0;
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

/* ---- open, lock, migrate ---- */

static int store_lock(Store *s, MsbError *err) {
        _cleanup_free_ char *lock_path = path_join(s->path, "lock");
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

static int db_open(const char *path, sqlite3 **ret) {
        sqlite3 *db = NULL;
        int rc;

        /* FULLMUTEX: SQLite serialises each call on a connection itself. Our
         * write lock orders the transactions, but cleanup attributes can
         * finalize a statement after that lock is released (declared before
         * it); with NOMUTEX such a finalize raced another thread's use of the
         * writer connection and corrupted index.db under concurrent load. */
        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
        if (rc != SQLITE_OK) {
                sqlite3_close(db);
                return sqlite_to_errno(rc) ?: -EIO;
        }
        sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
        sqlite3_extended_result_codes(db, 1);
        *ret = db;
        return 0;
}

static int store_migrate(Store *s, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, version;

        /* FULL: a commit is on disk when it returns; the files it names were
         * fsynced before. */
        r = db_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot configure the index");

        r = db_prepare(s->db, "PRAGMA user_version", &st);
        if (r < 0 || sqlite3_step(st) != SQLITE_ROW)
                return db_error(s->db, SQLITE_ERROR, err, "cannot read the index's schema version");
        version = sqlite3_column_int(st, 0);

        if (version > (int) ELEMENTSOF(store_migrations))
                return msb_error_set(err, -EPROTONOSUPPORT, PROTO_ERROR_STORE_ERROR,
                                     "the index has schema version %d, newer than this daemon's %d", version,
                                     (int) ELEMENTSOF(store_migrations));

        for (int v = version; v < (int) ELEMENTSOF(store_migrations); v++) {
                _cleanup_free_ char *sql = NULL;
                if (asprintf(&sql, "BEGIN IMMEDIATE; %s PRAGMA user_version=%d; COMMIT;", store_migrations[v],
                             v + 1) < 0)
                        return -ENOMEM;
                r = db_exec(s->db, sql);
                if (r < 0) {
                        (void) db_exec(s->db, "ROLLBACK");
                        return db_error(s->db, SQLITE_ERROR, err, "cannot migrate the index");
                }
        }
        return 0;
}

static int store_sweep(Store *s, MsbError *err);

int store_open(const char *path, Store **ret, MsbError *err) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *db_path = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->lock_fd = -EBADF;
        pthread_mutex_init(&s->write_lock, NULL);
        pthread_mutex_init(&s->lease_lock, NULL);

        s->path = realpath(path, NULL);
        if (!s->path) {
                r = mkdir_p(path, STORE_DIR_MODE);
                if (r < 0)
                        return msb_error_from_errno(err, r, "cannot create the store directory");
                s->path = realpath(path, NULL);
                if (!s->path)
                        return msb_error_from_errno(err, negative_errno(), "cannot resolve the store path");
        }

        r = store_lock(s, err);
        if (r < 0)
                return r;

        s->tmp_dir = path_join(s->path, "tmp");
        if (!s->tmp_dir)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(content_dirs); i++) {
                _cleanup_free_ char *d = path_join(s->path, content_dirs[i]);
                if (!d)
                        return -ENOMEM;
                r = mkdir_p(d, STORE_DIR_MODE);
                if (r < 0)
                        return msb_error_from_errno(err, r, "cannot create the store's directories");
        }
        r = mkdir_p(s->tmp_dir, STORE_DIR_MODE);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot create the store's tmp directory");

        db_path = path_join(s->path, "index.db");
        if (!db_path)
                return -ENOMEM;
        r = db_open(db_path, &s->db);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot open the index");
        r = store_migrate(s, err);
        if (r < 0)
                return r;
        r = db_open(db_path, &s->db_read);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot open the index for reading");
        (void) db_exec(s->db_read, "PRAGMA foreign_keys=ON;");

        r = store_sweep(s, err);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        sqlite3_close(s->db_read);
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
        free(s->tmp_dir);
        free(s->path);
        free(s);
        return NULL;
}

/* ---- which files the index names ---- */

typedef enum ContentKind {
        CONTENT_BLOB,
        CONTENT_LAYER,
        CONTENT_FSMETA,
        CONTENT_VMDK,
        _CONTENT_KIND_MAX,
} ContentKind;

static const char *const content_kind_dir[_CONTENT_KIND_MAX] = {
        [CONTENT_BLOB] = "blobs/sha256",
        [CONTENT_LAYER] = "layers/sha256",
        [CONTENT_FSMETA] = "fsmeta/sha256",
        [CONTENT_VMDK] = "vmdk/sha256",
};

static const char *const content_kind_suffix[_CONTENT_KIND_MAX] = {
        [CONTENT_BLOB] = "",
        [CONTENT_LAYER] = ".erofs",
        [CONTENT_FSMETA] = ".erofs",
        [CONTENT_VMDK] = ".vmdk",
};

/* The query that tells whether the index names a content file of a kind;
 * ?1 is its digest. With pinned_only, whether a pin holds it. */
static const char *content_indexed_sql(ContentKind kind, bool pinned_only) {
        static const char *const any[_CONTENT_KIND_MAX] = {
                [CONTENT_BLOB] = "SELECT 1 FROM manifests WHERE digest = ?1 OR config_digest = ?1 LIMIT 1",
                [CONTENT_LAYER] = "SELECT 1 FROM layers WHERE diff_id = ?1",
                [CONTENT_FSMETA] = "SELECT 1 FROM manifests WHERE digest = ?1 AND fsmeta_size IS NOT NULL",
                [CONTENT_VMDK] = "SELECT 1 FROM manifests WHERE digest = ?1 AND vmdk_size IS NOT NULL",
        };
        static const char *const pinned[_CONTENT_KIND_MAX] = {
                [CONTENT_BLOB] = "SELECT 1 FROM manifests m JOIN pins p ON p.manifest_digest = m.digest "
                                 "WHERE m.digest = ?1 OR m.config_digest = ?1 LIMIT 1",
                [CONTENT_LAYER] = "SELECT 1 FROM manifest_layers ml JOIN pins p ON p.manifest_digest = "
                                  "ml.manifest_digest WHERE ml.diff_id = ?1 LIMIT 1",
                [CONTENT_FSMETA] = "SELECT 1 FROM pins WHERE manifest_digest = ?1 LIMIT 1",
                [CONTENT_VMDK] = "SELECT 1 FROM pins WHERE manifest_digest = ?1 LIMIT 1",
        };
        return pinned_only ? pinned[kind] : any[kind];
}

/* Turns a content file name back into its digest; false for names the store
 * never writes (which the sweep then removes). */
static bool content_name_to_digest(ContentKind kind, const char *name, char ret[DIGEST_STRING_MAX]) {
        const char *suffix = content_kind_suffix[kind];
        size_t len = strlen(name), slen = strlen(suffix);

        if (len != 64 + slen || !streq(name + 64, suffix))
                return false;
        snprintf(ret, DIGEST_STRING_MAX, "sha256:%.64s", name);
        return digest_is_valid(ret);
}

static uint64_t stat_allocated(const struct stat *st) {
        return (uint64_t) st->st_blocks * 512;
}

typedef struct Reclaim {
        unsigned removed[_CONTENT_KIND_MAX];
        unsigned tmp_removed;
        uint64_t bytes;
} Reclaim;

static void reclaim_unlink(Reclaim *rc, ContentKind kind, const char *path) {
        struct stat st;

        if (lstat(path, &st) < 0)
                return;
        if (unlink(path) < 0)
                return;
        if (rc) {
                if ((int) kind >= 0)
                        rc->removed[kind]++;
                rc->bytes += stat_allocated(&st);
        }
}

/* Removes files the index does not name (and no lease protects), and every
 * unleased temp file. Caller holds the write lock. */
static int store_sweep_files(Store *s, Reclaim *rc) {
        int r;

        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++) {
                _cleanup_free_ char *dir = path_join(s->path, content_kind_dir[k]);
                _cleanup_stmt_ sqlite3_stmt *st = NULL;
                DIR *d;

                if (!dir)
                        return -ENOMEM;
                r = db_prepare(s->db, content_indexed_sql(k, false), &st);
                if (r < 0)
                        return r;
                d = opendir(dir);
                if (!d)
                        return negative_errno();
                for (struct dirent *de; (de = readdir(d));) {
                        char digest[DIGEST_STRING_MAX];
                        bool keep = false;

                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        if (content_name_to_digest(k, de->d_name, digest)) {
                                if (store_lease_held(s, digest))
                                        continue;
                                sqlite3_reset(st);
                                sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
                                keep = sqlite3_step(st) == SQLITE_ROW;
                        }
                        if (!keep) {
                                _cleanup_free_ char *p = path_join(dir, de->d_name);
                                if (p)
                                        reclaim_unlink(rc, k, p);
                        }
                }
                closedir(d);
        }

        DIR *d = opendir(s->tmp_dir);
        if (!d)
                return negative_errno();
        for (struct dirent *de; (de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, "..") || store_lease_held(s, de->d_name))
                        continue;
                _cleanup_free_ char *p = path_join(s->tmp_dir, de->d_name);
                if (!p)
                        continue;
                /* A leftover directory (an archive being unpacked) goes with its contents. */
                uint64_t bytes = 0;
                if (rm_rf(p, &bytes) == 0 && rc) {
                        rc->bytes += bytes;
                        rc->tmp_removed++;
                }
        }
        closedir(d);
        return 0;
}

static bool content_file_exists(Store *s, ContentKind kind, const char *digest) {
        _cleanup_free_ char *p = content_path(s, content_kind_dir[kind], digest, content_kind_suffix[kind]);
        return p && access(p, F_OK) == 0;
}

static int db_step_digest(sqlite3 *db, const char *sql, const char *digest);

static void strings_free(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* Drops index rows that name missing files: a manifest missing any of its
 * files, or using a layer whose image is missing, goes with its references
 * and pins; then the rows of the missing layers go. Caller holds the write
 * lock inside a transaction. */
static int store_repair_rows(Store *s, unsigned *ret_dropped) {
        _cleanup_stmt_ sqlite3_stmt *layers = NULL, *manifests = NULL;
        char **missing = NULL;
        size_t n_missing = 0;
        unsigned dropped = 0;
        int r;

        r = db_prepare(s->db, "SELECT diff_id FROM layers", &layers);
        if (r < 0)
                return r;
        while (sqlite3_step(layers) == SQLITE_ROW) {
                const char *diff_id = (const char *) sqlite3_column_text(layers, 0);
                if (content_file_exists(s, CONTENT_LAYER, diff_id))
                        continue;
                char **n = realloc(missing, (n_missing + 1) * sizeof(char *));
                if (!n || !(n[n_missing] = strdup(diff_id))) {
                        strings_free(n ?: missing, n_missing);
                        return -ENOMEM;
                }
                missing = n;
                n_missing++;
                /* fsmeta_size = -1 marks the manifests that use it as broken. */
                r = db_step_digest(s->db,
                                   "UPDATE manifests SET fsmeta_size = -1 WHERE digest IN "
                                   "(SELECT manifest_digest FROM manifest_layers WHERE diff_id = ?1)",
                                   diff_id);
                if (r < 0)
                        goto out;
        }

        r = db_prepare(s->db, "SELECT digest, config_digest, fsmeta_size, vmdk_size FROM manifests", &manifests);
        if (r < 0)
                goto out;
        while (sqlite3_step(manifests) == SQLITE_ROW) {
                const char *digest = (const char *) sqlite3_column_text(manifests, 0);
                const char *config = (const char *) sqlite3_column_text(manifests, 1);
                bool has_fsmeta = sqlite3_column_type(manifests, 2) != SQLITE_NULL;
                bool has_vmdk = sqlite3_column_type(manifests, 3) != SQLITE_NULL;
                bool broken = sqlite3_column_int64(manifests, 2) == -1 ||
                              !content_file_exists(s, CONTENT_BLOB, digest) ||
                              !content_file_exists(s, CONTENT_BLOB, config) ||
                              (has_fsmeta && !content_file_exists(s, CONTENT_FSMETA, digest)) ||
                              (has_vmdk && !content_file_exists(s, CONTENT_VMDK, digest));
                if (!broken)
                        continue;

                static const char *const drop[] = {
                        "DELETE FROM pins WHERE manifest_digest = ?1",
                        "DELETE FROM image_refs WHERE manifest_digest = ?1",
                        "DELETE FROM manifests WHERE digest = ?1",
                };
                for (size_t i = 0; i < ELEMENTSOF(drop); i++) {
                        r = db_step_digest(s->db, drop[i], digest);
                        if (r < 0)
                                goto out;
                }
                dropped++;
        }

        /* No manifest uses them any more (foreign keys hold us to that order). */
        for (size_t i = 0; i < n_missing; i++) {
                r = db_step_digest(s->db, "DELETE FROM layers WHERE diff_id = ?1", missing[i]);
                if (r < 0)
                        goto out;
                dropped++;
        }

        *ret_dropped = dropped;
        r = 0;
out:
        strings_free(missing, n_missing);
        return r;
}

static int store_sweep(Store *s, MsbError *err) {
        Reclaim rc = {};
        unsigned dropped = 0;
        int r;

        STORE_WRITE_TRANSACTION(s, tx);
        r = db_exec(s->db, "BEGIN IMMEDIATE");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot begin the sweep");
        tx = s->db;
        r = store_repair_rows(s, &dropped);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot repair the index");
        r = db_exec(s->db, "COMMIT");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot commit the repaired index");
        tx = NULL;

        r = store_sweep_files(s, &rc);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot sweep the store");

        s->sweep.rows_dropped = dropped;
        s->sweep.tmp_removed = rc.tmp_removed;
        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++)
                s->sweep.files_removed += rc.removed[k];
        return 0;
}

/* The columns of an ImageHandle, in handle_from_row()'s order. */
#define HANDLE_COLUMNS                                                                                   \
        "r.reference, r.manifest_digest, m.architecture, m.os, m.layer_count, m.size_bytes, r.created_at, " \
        "r.last_used_at FROM image_refs r JOIN manifests m ON m.digest = r.manifest_digest "

/* ---- layers and commits (worker threads) ---- */

int store_layer_lookup(Store *s, const char *diff_id, uint64_t *ret_erofs_size) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        STORE_WRITE_LOCKED(s);
        r = db_prepare(s->db, "SELECT erofs_size FROM layers WHERE diff_id = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, diff_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW || !content_file_exists(s, CONTENT_LAYER, diff_id))
                return 0;
        if (ret_erofs_size)
                *ret_erofs_size = (uint64_t) sqlite3_column_int64(st, 0);
        return 1;
}

int store_layer_add(Store *s, const char *diff_id, uint64_t erofs_size) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        STORE_WRITE_LOCKED(s);
        r = db_prepare(s->db,
                       "INSERT INTO layers (diff_id, erofs_size, created_at) VALUES (?1, ?2, ?3) "
                       "ON CONFLICT (diff_id) DO UPDATE SET erofs_size = excluded.erofs_size",
                       &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, diff_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) erofs_size);
        sqlite3_bind_int64(st, 3, now_ms());
        return sqlite_to_errno(sqlite3_step(st));
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
        if (s)
                sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

/* Inserts the manifest's rows; a failure is described while the failing
 * statement still holds SQLite's message for it. */
static int commit_manifest_row(Store *s, const StoreManifest *m, int64_t now, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL, *ml = NULL;
        uint64_t size_bytes = 0;
        int r;

        for (size_t i = 0; i < m->n_layers; i++)
                size_bytes += m->layers[i].compressed_size;

        r = db_prepare(s->db,
                       "INSERT INTO manifests (digest, media_type, size, config_digest, config_size, architecture, "
                       "os, variant, layer_count, size_bytes, fsmeta_size, vmdk_size, created_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
                       "ON CONFLICT (digest) DO UPDATE SET fsmeta_size = excluded.fsmeta_size, "
                       "vmdk_size = excluded.vmdk_size",
                       &st);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot record the manifest");
        sqlite3_bind_text(st, 1, m->digest, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, m->media_type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) m->size);
        sqlite3_bind_text(st, 4, m->config_digest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64) m->config_size);
        bind_text_or_null(st, 6, m->architecture);
        bind_text_or_null(st, 7, m->os);
        bind_text_or_null(st, 8, m->variant);
        sqlite3_bind_int64(st, 9, (sqlite3_int64) m->n_layers);
        sqlite3_bind_int64(st, 10, (sqlite3_int64) size_bytes);
        /* NULL when not built: the index must never name a file that is not there. */
        if (m->fsmeta_size > 0)
                sqlite3_bind_int64(st, 11, (sqlite3_int64) m->fsmeta_size);
        if (m->vmdk_size > 0)
                sqlite3_bind_int64(st, 12, (sqlite3_int64) m->vmdk_size);
        sqlite3_bind_int64(st, 13, now);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return db_error(s->db, rc, err, "cannot record the manifest");

        r = db_prepare(s->db,
                       "INSERT OR REPLACE INTO manifest_layers (manifest_digest, position, blob_digest, diff_id, "
                       "media_type, compressed_size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                       &ml);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot record the manifest");
        for (size_t i = 0; i < m->n_layers; i++) {
                sqlite3_reset(ml);
                sqlite3_bind_text(ml, 1, m->digest, -1, SQLITE_STATIC);
                sqlite3_bind_int64(ml, 2, (sqlite3_int64) i);
                sqlite3_bind_text(ml, 3, m->layers[i].blob_digest, -1, SQLITE_STATIC);
                sqlite3_bind_text(ml, 4, m->layers[i].diff_id, -1, SQLITE_STATIC);
                bind_text_or_null(ml, 5, m->layers[i].media_type);
                sqlite3_bind_int64(ml, 6, (sqlite3_int64) m->layers[i].compressed_size);
                rc = sqlite3_step(ml);
                if (rc != SQLITE_DONE)
                        return db_error(s->db, rc, err, "cannot record the manifest's layers");
        }
        return 0;
}

static char *repository_of(const char *canonical) {
        const char *at = strchr(canonical, '@');
        const char *slash = strrchr(canonical, '/');
        const char *colon = strrchr(canonical, ':');

        if (at)
                return strndup(canonical, (size_t) (at - canonical));
        if (colon && (!slash || colon > slash))
                return strndup(canonical, (size_t) (colon - canonical));
        return strdup(canonical);
}

static json_t *handle_from_row(sqlite3_stmt *st);

int store_image_commit(Store *s, const StoreManifest *m, char *const *references, size_t n_references,
                       MsbError *err) {
        return store_image_commit_with_handles(s, m, references, n_references, NULL, err);
}

int store_image_commit_with_handles(Store *s, const StoreManifest *m, char *const *references,
                                    size_t n_references, json_t *handles, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *ref = NULL;
        int64_t now = now_ms();
        int r;

        STORE_WRITE_TRANSACTION(s, tx);
        r = db_exec(s->db, "BEGIN IMMEDIATE");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot begin the commit");
        tx = s->db;

        r = commit_manifest_row(s, m, now, err);
        if (r < 0)
                return r;

        /* created_at stays what it was when the reference was first stored. */
        r = db_prepare(s->db,
                       "INSERT INTO image_refs (reference, repository, manifest_digest, created_at, last_used_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (reference) DO UPDATE SET "
                       "manifest_digest = excluded.manifest_digest, last_used_at = excluded.last_used_at",
                       &ref);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot record the references");
        for (size_t i = 0; i < n_references; i++) {
                _cleanup_free_ char *repo = repository_of(references[i]);
                if (!repo)
                        return -ENOMEM;
                sqlite3_reset(ref);
                sqlite3_bind_text(ref, 1, references[i], -1, SQLITE_STATIC);
                sqlite3_bind_text(ref, 2, repo, -1, SQLITE_STATIC);
                sqlite3_bind_text(ref, 3, m->digest, -1, SQLITE_STATIC);
                sqlite3_bind_int64(ref, 4, now);
                if (sqlite3_step(ref) != SQLITE_DONE)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot record a reference");
        }

        if (handles) {
                _cleanup_stmt_ sqlite3_stmt *h = NULL;
                r = db_prepare(s->db, "SELECT " HANDLE_COLUMNS "WHERE r.reference = ?1", &h);
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot read the committed image");
                for (size_t i = 0; i < n_references; i++) {
                        sqlite3_reset(h);
                        sqlite3_bind_text(h, 1, references[i], -1, SQLITE_STATIC);
                        if (sqlite3_step(h) != SQLITE_ROW)
                                return db_error(s->db, SQLITE_ERROR, err, "cannot read the committed image");
                        if (json_array_append_new(handles, handle_from_row(h)) < 0)
                                return -ENOMEM;
                }
        }

        r = db_exec(s->db, "COMMIT");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot commit the image");
        tx = NULL;
        return 0;
}

int store_image_touch(Store *s, const char *canonical_reference) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        STORE_WRITE_LOCKED(s);
        r = db_prepare(s->db, "UPDATE image_refs SET last_used_at = ?2 WHERE reference = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, canonical_reference, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now_ms());
        return sqlite_to_errno(sqlite3_step(st));
}

/* ---- queries ---- */

static json_t *handle_from_row(sqlite3_stmt *st) {
        return json_pack("{s:o, s:o, s:o, s:o, s:I, s:o, s:o, s:o}",
                         "reference", column_string_or_null(st, 0),
                         "manifest_digest", column_string_or_null(st, 1),
                         "architecture", column_string_or_null(st, 2),
                         "os", column_string_or_null(st, 3),
                         "layer_count", (json_int_t) sqlite3_column_int64(st, 4),
                         "size_bytes", column_int_or_null(st, 5),
                         "created_at", column_int_or_null(st, 6),
                         "last_used_at", column_int_or_null(st, 7));
}

/*
 * Finds the image ref names: the reference row of its canonical form; for a
 * digest reference also a reference of the same repository that points at
 * that manifest, or else a manifest of that digest that a pin of the same
 * repository holds (its tags may have been force-removed). The handle shows
 * the reference as asked; *ret_row (may be NULL) gets the row's own
 * reference, NULL when only a pin holds the manifest.
 */
static int lookup_handle(sqlite3 *db, const Reference *ref, json_t **ret, char **ret_row, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, rc;

        r = db_prepare(db,
                       "SELECT * FROM (SELECT " HANDLE_COLUMNS "WHERE r.reference = ?1) "
                       "UNION ALL SELECT * FROM (SELECT " HANDLE_COLUMNS
                       "WHERE ?2 IS NOT NULL AND r.repository = ?3 AND r.manifest_digest = ?2 "
                       "ORDER BY r.created_at DESC LIMIT 1) "
                       "UNION ALL SELECT NULL, m.digest, m.architecture, m.os, m.layer_count, m.size_bytes, "
                       "m.created_at, NULL FROM manifests m WHERE ?2 IS NOT NULL AND m.digest = ?2 AND EXISTS "
                       "(SELECT 1 FROM pins p WHERE p.manifest_digest = m.digest AND "
                       "substr(p.reference, 1, length(?3) + 1) IN (?3 || ':', ?3 || '@')) "
                       "LIMIT 1",
                       &st);
        if (r < 0)
                return db_error(db, SQLITE_ERROR, err, "cannot look up the image");
        sqlite3_bind_text(st, 1, ref->canonical, -1, SQLITE_STATIC);
        bind_text_or_null(st, 2, ref->digest);
        sqlite3_bind_text(st, 3, ref->repository, -1, SQLITE_STATIC);

        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
                msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND, "no cached image %s", ref->canonical);
                msb_error_add_data(err, "reference", json_string(ref->canonical));
                return -ENOENT;
        }
        if (rc != SQLITE_ROW)
                return db_error(db, rc, err, "cannot look up the image");

        _cleanup_free_ char *row = NULL;
        if (ret_row && sqlite3_column_type(st, 0) != SQLITE_NULL &&
            !(row = strdup((const char *) sqlite3_column_text(st, 0))))
                return -ENOMEM;
        json_t *h = handle_from_row(st);
        if (!h || json_object_set_new(h, "reference", json_string(ref->canonical)) < 0) {
                json_decref(h);
                return -ENOMEM;
        }
        *ret = h;
        if (ret_row)
                *ret_row = TAKE_PTR(row);
        return 0;
}

int store_image_get(Store *s, const Reference *ref, bool from_loop, json_t **ret, MsbError *err) {
        if (from_loop)
                return lookup_handle(s->db_read, ref, ret, NULL, err);

        STORE_WRITE_LOCKED(s);
        return lookup_handle(s->db, ref, ret, NULL, err);
}

int store_image_list(Store *s, json_t **ret, MsbError *err) {
        _cleanup_free_ char *text = NULL;
        json_t *list;
        int r;

        /* One list query and one field layout: the text image.list sends. */
        r = store_image_list_text(s, &text, err);
        if (r < 0)
                return r;
        list = json_loads(text, 0, NULL);
        if (!list)
                return -ENOMEM;
        *ret = list;
        return 0;
}

static void text_string_column(JsonText *t, sqlite3_stmt *st, int col) {
        json_text_string(t, (const char *) sqlite3_column_text(st, col));
}

static void text_int_column(JsonText *t, sqlite3_stmt *st, int col) {
        if (sqlite3_column_type(st, col) == SQLITE_NULL)
                json_text_raw(t, "null");
        else
                json_text_int(t, sqlite3_column_int64(st, col));
}

int store_image_list_text(Store *s, char **ret, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_(json_text_done) JsonText t = {};
        bool first = true;
        int r, rc;

        r = db_prepare(s->db_read, "SELECT " HANDLE_COLUMNS "ORDER BY r.created_at DESC, r.rowid DESC", &st);
        if (r < 0)
                return db_error(s->db_read, SQLITE_ERROR, err, "cannot list images");

        /* The fields and their order are handle_from_row()'s. */
        json_text_raw(&t, "[");
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                json_text_reserve(&t, 512);
                json_text_raw(&t, first ? "{\"reference\":" : ",{\"reference\":");
                first = false;
                text_string_column(&t, st, 0);
                json_text_raw(&t, ",\"manifest_digest\":");
                text_string_column(&t, st, 1);
                json_text_raw(&t, ",\"architecture\":");
                text_string_column(&t, st, 2);
                json_text_raw(&t, ",\"os\":");
                text_string_column(&t, st, 3);
                json_text_raw(&t, ",\"layer_count\":");
                text_int_column(&t, st, 4);
                json_text_raw(&t, ",\"size_bytes\":");
                text_int_column(&t, st, 5);
                json_text_raw(&t, ",\"created_at\":");
                text_int_column(&t, st, 6);
                json_text_raw(&t, ",\"last_used_at\":");
                text_int_column(&t, st, 7);
                json_text_raw(&t, "}");
        }
        if (rc != SQLITE_DONE)
                return db_error(s->db_read, rc, err, "cannot list images");
        json_text_raw(&t, "]");

        char *text = json_text_steal(&t);
        if (!text)
                return -ENOMEM;
        *ret = text;
        return 0;
}

/* Layers of a manifest, bottom to top, as ImageLayerDetail objects (with
 * the layer file's path when with_paths, for a Rootfs). */
static int manifest_layers_json(Store *s, sqlite3 *db, const char *manifest_digest, bool rootfs, json_t **ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        json_t *layers;
        int r, rc;

        r = db_prepare(db,
                       "SELECT ml.diff_id, ml.blob_digest, ml.media_type, ml.compressed_size, l.erofs_size, "
                       "ml.position FROM manifest_layers ml LEFT JOIN layers l ON l.diff_id = ml.diff_id "
                       "WHERE ml.manifest_digest = ?1 ORDER BY ml.position",
                       &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, manifest_digest, -1, SQLITE_STATIC);

        layers = json_array();
        if (!layers)
                return -ENOMEM;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                json_t *l;
                if (rootfs) {
                        _cleanup_free_ char *path =
                                store_layer_path(s, (const char *) sqlite3_column_text(st, 0));
                        l = json_pack("{s:o, s:s?, s:o}", "diff_id", column_string_or_null(st, 0), "path", path,
                                      "erofs_size_bytes", column_int_or_null(st, 4));
                } else
                        l = json_pack("{s:o, s:o, s:o, s:o, s:o, s:I}",
                                      "diff_id", column_string_or_null(st, 0),
                                      "blob_digest", column_string_or_null(st, 1),
                                      "media_type", column_string_or_null(st, 2),
                                      "compressed_size_bytes", column_int_or_null(st, 3),
                                      "erofs_size_bytes", column_int_or_null(st, 4),
                                      "position", (json_int_t) sqlite3_column_int64(st, 5));
                if (json_array_append_new(layers, l) < 0) {
                        json_decref(layers);
                        return -ENOMEM;
                }
        }
        if (rc != SQLITE_DONE) {
                json_decref(layers);
                return -EIO;
        }
        *ret = layers;
        return 0;
}

int store_image_inspect(Store *s, const Reference *ref, json_t **ret, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        json_t *handle = NULL, *layers = NULL;
        int r;

        STORE_WRITE_LOCKED(s);
        r = lookup_handle(s->db, ref, &handle, NULL, err);
        if (r < 0)
                return r;

        const char *digest = json_string_value(json_object_get(handle, "manifest_digest"));
        r = manifest_layers_json(s, s->db, digest, false, &layers);
        if (r < 0) {
                json_decref(handle);
                return db_error(s->db, SQLITE_ERROR, err, "cannot read the layers");
        }

        r = db_prepare(s->db, "SELECT config_digest FROM manifests WHERE digest = ?1", &st);
        if (r < 0 || (sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC), sqlite3_step(st)) != SQLITE_ROW) {
                json_decref(handle);
                json_decref(layers);
                return db_error(s->db, SQLITE_ERROR, err, "cannot read the manifest");
        }

        /* config_digest is for the caller, which parses the config blob. */
        *ret = json_pack("{s:o, s:o, s:o}", "handle", handle, "layers", layers, "config_digest",
                         column_string_or_null(st, 0));
        return *ret ? 0 : -ENOMEM;
}

/* ---- removal and garbage collection (worker threads, write lock held) ---- */

typedef struct Doomed {
        ContentKind kind;
        char *path;
} Doomed;

typedef struct Gc {
        Doomed *files;
        size_t n_files;
        unsigned refs_removed;
        unsigned manifests_removed;
} Gc;

static void gc_done(Gc *gc) {
        for (size_t i = 0; i < gc->n_files; i++)
                free(gc->files[i].path);
        free(gc->files);
}

static int gc_doom(Store *s, Gc *gc, ContentKind kind, const char *digest) {
        char *path = content_path(s, content_kind_dir[kind], digest, content_kind_suffix[kind]);
        if (!path)
                return -ENOMEM;
        Doomed *n = realloc(gc->files, (gc->n_files + 1) * sizeof(Doomed));
        if (!n) {
                free(path);
                return -ENOMEM;
        }
        gc->files = n;
        gc->files[gc->n_files++] = (Doomed) { kind, path };
        return 0;
}

static int db_step_digest(sqlite3 *db, const char *sql, const char *digest) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r = db_prepare(db, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
        r = sqlite3_step(st);
        if (r == SQLITE_ROW)
                return 1;
        return r == SQLITE_DONE ? 0 : -EIO;
}

/* Deletes every manifest that no reference and no pin holds, and no lease
 * protects, then every layer no manifest uses; records their files. */
static int gc_collect(Store *s, Gc *gc) {
        _cleanup_stmt_ sqlite3_stmt *orphans = NULL, *layers = NULL;
        int r;

        r = db_prepare(s->db,
                       "SELECT digest, config_digest, fsmeta_size IS NOT NULL, vmdk_size IS NOT NULL FROM manifests m "
                       "WHERE NOT EXISTS (SELECT 1 FROM image_refs r WHERE r.manifest_digest = m.digest) "
                       "AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.manifest_digest = m.digest)",
                       &orphans);
        if (r < 0)
                return r;
        while (sqlite3_step(orphans) == SQLITE_ROW) {
                const char *digest = (const char *) sqlite3_column_text(orphans, 0);
                const char *config = (const char *) sqlite3_column_text(orphans, 1);
                if (store_lease_held(s, digest))
                        continue;

                r = db_step_digest(s->db, "DELETE FROM manifests WHERE digest = ?1", digest);
                if (r < 0)
                        return r;
                gc->manifests_removed++;
                if ((r = gc_doom(s, gc, CONTENT_BLOB, digest)) < 0)
                        return r;
                if (sqlite3_column_int(orphans, 2) && (r = gc_doom(s, gc, CONTENT_FSMETA, digest)) < 0)
                        return r;
                if (sqlite3_column_int(orphans, 3) && (r = gc_doom(s, gc, CONTENT_VMDK, digest)) < 0)
                        return r;
                r = db_step_digest(s->db, "SELECT 1 FROM manifests WHERE config_digest = ?1 OR digest = ?1", config);
                if (r < 0)
                        return r;
                if (r == 0 && !store_lease_held(s, config) && (r = gc_doom(s, gc, CONTENT_BLOB, config)) < 0)
                        return r;
        }

        r = db_prepare(s->db,
                       "SELECT diff_id FROM layers l WHERE NOT EXISTS "
                       "(SELECT 1 FROM manifest_layers ml WHERE ml.diff_id = l.diff_id)",
                       &layers);
        if (r < 0)
                return r;
        while (sqlite3_step(layers) == SQLITE_ROW) {
                const char *diff_id = (const char *) sqlite3_column_text(layers, 0);
                if (store_lease_held(s, diff_id))
                        continue;
                r = db_step_digest(s->db, "DELETE FROM layers WHERE diff_id = ?1", diff_id);
                if (r < 0)
                        return r;
                if ((r = gc_doom(s, gc, CONTENT_LAYER, diff_id)) < 0)
                        return r;
        }
        return 0;
}

/* Unlinks the collected files after the transaction that dropped their rows
 * committed: a crash in between leaves files without rows, which the next
 * sweep removes. */
static void gc_unlink(Gc *gc, Reclaim *rc) {
        for (size_t i = 0; i < gc->n_files; i++)
                reclaim_unlink(rc, gc->files[i].kind, gc->files[i].path);
}

static int holders_json(Store *s, const char *manifest_digest, json_t **ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        json_t *holders;
        int r;

        r = db_prepare(s->db, "SELECT kind, name FROM pins WHERE manifest_digest = ?1 ORDER BY kind, name", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, manifest_digest, -1, SQLITE_STATIC);
        holders = json_array();
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(holders, json_pack("{s:o, s:o}", "kind", column_string_or_null(st, 0), "name",
                                                         column_string_or_null(st, 1)));
        *ret = holders;
        return 0;
}

int store_image_remove(Store *s, const Reference *ref, bool force, MsbError *err) {
        _cleanup_(json_decrefp) json_t *handle = NULL, *holders = NULL;
        _cleanup_free_ char *row = NULL;
        _cleanup_(gc_done) Gc gc = {};
        int r;

        {
                STORE_WRITE_TRANSACTION(s, tx);
                r = db_exec(s->db, "BEGIN IMMEDIATE");
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot begin the removal");
                tx = s->db;

                r = lookup_handle(s->db, ref, &handle, &row, err);
                if (r < 0)
                        return r;
                const char *reference = json_string_value(json_object_get(handle, "reference"));
                const char *digest = json_string_value(json_object_get(handle, "manifest_digest"));
                if (!row) {
                        /* Only pins hold the manifest: no reference is left to remove. */
                        msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND,
                                      "no reference %s is cached; only pins hold %s", reference, digest);
                        msb_error_add_data(err, "reference", json_string(reference));
                        return -ENOENT;
                }

                r = holders_json(s, digest, &holders);
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot read the pins");
                if (json_array_size(holders) > 0 && !force) {
                        msb_error_set(err, -EBUSY, PROTO_ERROR_IMAGE_IN_USE,
                                      "%s is in use by %zu pin(s); remove them first or pass force", reference,
                                      json_array_size(holders));
                        msb_error_add_data(err, "reference", json_string(reference));
                        msb_error_add_data(err, "holders", json_incref(holders));
                        return -EBUSY;
                }

                r = db_step_digest(s->db, "DELETE FROM image_refs WHERE reference = ?1", row);
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot remove the reference");
                r = gc_collect(s, &gc);
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot collect unused content");
                r = db_exec(s->db, "COMMIT");
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot commit the removal");
                tx = NULL;

                /* Still under the lock: an import that finds a layer gone (it
                 * looks under the lock) re-creates it only after this unlink. */
                gc_unlink(&gc, NULL);
        }

        return 0;
}

int store_image_prune(Store *s, json_t **ret_report, MsbError *err) {
        _cleanup_(gc_done) Gc gc = {};
        Reclaim rc = {};
        int r;

        STORE_WRITE_TRANSACTION(s, tx);
        r = db_exec(s->db, "BEGIN IMMEDIATE");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot begin the prune");
        tx = s->db;

        /* References to pinned manifests stay (a pinned image remains listed),
         * and so do those a load or pull in flight is committing. */
        _cleanup_stmt_ sqlite3_stmt *refs = NULL;
        r = db_prepare(s->db,
                       "SELECT reference, manifest_digest FROM image_refs "
                       "WHERE manifest_digest NOT IN (SELECT manifest_digest FROM pins)",
                       &refs);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot list references");
        while (sqlite3_step(refs) == SQLITE_ROW) {
                if (store_lease_held(s, (const char *) sqlite3_column_text(refs, 1)))
                        continue;
                r = db_step_digest(s->db, "DELETE FROM image_refs WHERE reference = ?1",
                                   (const char *) sqlite3_column_text(refs, 0));
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot remove references");
                gc.refs_removed++;
        }

        r = gc_collect(s, &gc);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot collect unused content");
        r = db_exec(s->db, "COMMIT");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot commit the prune");
        tx = NULL;

        gc_unlink(&gc, &rc);
        r = store_sweep_files(s, &rc);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot sweep leftovers");

        *ret_report = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
                                "image_refs_removed", (json_int_t) gc.refs_removed,
                                "manifests_removed", (json_int_t) gc.manifests_removed,
                                "layers_removed", (json_int_t) rc.removed[CONTENT_LAYER],
                                "fsmeta_removed", (json_int_t) rc.removed[CONTENT_FSMETA],
                                "vmdk_removed", (json_int_t) rc.removed[CONTENT_VMDK],
                                "bytes_reclaimed", (json_int_t) rc.bytes);
        return *ret_report ? 0 : -ENOMEM;
}

/* ---- pins ---- */

static int rootfs_json(Store *s, const char *manifest_digest, json_t **ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_free_ char *fsmeta = NULL, *vmdk = NULL;
        json_t *layers = NULL;
        int r;

        r = db_prepare(s->db, "SELECT fsmeta_size IS NOT NULL, vmdk_size IS NOT NULL FROM manifests WHERE digest = ?1",
                       &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, manifest_digest, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return -ENOENT;
        if (sqlite3_column_int(st, 0) && !(fsmeta = store_fsmeta_path(s, manifest_digest)))
                return -ENOMEM;
        if (sqlite3_column_int(st, 1) && !(vmdk = store_vmdk_path(s, manifest_digest)))
                return -ENOMEM;

        r = manifest_layers_json(s, s->db, manifest_digest, true, &layers);
        if (r < 0)
                return r;
        *ret = json_pack("{s:s, s:s?, s:s?, s:o}", "manifest_digest", manifest_digest, "fsmeta_path", fsmeta,
                         "vmdk_path", vmdk, "layers", layers);
        return *ret ? 0 : -ENOMEM;
}

int store_pin_add(Store *s, const char *kind, const char *name, const Reference *ref, json_t **ret_rootfs,
                  MsbError *err) {
        _cleanup_(json_decrefp) json_t *handle = NULL;
        _cleanup_stmt_ sqlite3_stmt *st = NULL, *touch = NULL;
        _cleanup_free_ char *row = NULL;
        json_t *rootfs = NULL;
        int64_t now = now_ms();
        int r;

        STORE_WRITE_TRANSACTION(s, tx);
        r = db_exec(s->db, "BEGIN IMMEDIATE");
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot begin the pin");
        tx = s->db;

        r = lookup_handle(s->db, ref, &handle, &row, err);
        if (r < 0)
                return r;
        const char *reference = json_string_value(json_object_get(handle, "reference"));
        const char *digest = json_string_value(json_object_get(handle, "manifest_digest"));

        r = db_prepare(s->db,
                       "INSERT INTO pins (kind, name, reference, manifest_digest, created_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, name) DO UPDATE SET "
                       "reference = excluded.reference, manifest_digest = excluded.manifest_digest, "
                       "created_at = excluded.created_at",
                       &st);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot record the pin");
        sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, reference, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, digest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_error(s->db, SQLITE_ERROR, err, "cannot record the pin");

        r = db_prepare(s->db, "UPDATE image_refs SET last_used_at = ?2 WHERE reference = ?1", &touch);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot update the reference");
        bind_text_or_null(touch, 1, row);
        sqlite3_bind_int64(touch, 2, now);
        if (sqlite3_step(touch) != SQLITE_DONE)
                return db_error(s->db, SQLITE_ERROR, err, "cannot update the reference");

        r = rootfs_json(s, digest, &rootfs);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot describe the rootfs");

        r = db_exec(s->db, "COMMIT");
        if (r < 0) {
                json_decref(rootfs);
                return db_error(s->db, SQLITE_ERROR, err, "cannot commit the pin");
        }
        tx = NULL;
        *ret_rootfs = rootfs;
        return 0;
}

int store_pin_remove(Store *s, const char *kind, const char *name, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        STORE_WRITE_LOCKED(s);
        r = db_prepare(s->db, "DELETE FROM pins WHERE kind = ?1 AND name = ?2", &st);
        if (r < 0)
                return db_error(s->db, SQLITE_ERROR, err, "cannot remove the pin");
        sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_error(s->db, SQLITE_ERROR, err, "cannot remove the pin");
        if (sqlite3_changes(s->db) == 0)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_PIN_NOT_FOUND, "no %s pin named '%s'", kind, name);
        return 0;
}

int store_pin_list(Store *s, json_t **ret, MsbError *err) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        json_t *list;
        int r;

        r = db_prepare(s->db_read,
                       "SELECT kind, name, reference, manifest_digest, created_at FROM pins ORDER BY created_at, kind, name",
                       &st);
        if (r < 0)
                return db_error(s->db_read, SQLITE_ERROR, err, "cannot list pins");
        list = json_array();
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(list, json_pack("{s:o, s:o, s:o, s:o, s:o}",
                                                      "kind", column_string_or_null(st, 0),
                                                      "name", column_string_or_null(st, 1),
                                                      "reference", column_string_or_null(st, 2),
                                                      "manifest_digest", column_string_or_null(st, 3),
                                                      "created_at", column_int_or_null(st, 4)));
        *ret = list;
        return 0;
}

/* ---- disk usage ---- */

int store_df(Store *s, json_t **ret, MsbError *err) {
        static const char *const kind_names[_CONTENT_KIND_MAX] = {
                [CONTENT_BLOB] = "blobs", [CONTENT_LAYER] = "layers",
                [CONTENT_FSMETA] = "fsmeta", [CONTENT_VMDK] = "vmdk",
        };
        uint64_t count[_CONTENT_KIND_MAX] = {}, bytes[_CONTENT_KIND_MAX] = {};
        uint64_t manifest_count = 0, manifest_bytes = 0, reclaimable = 0, index_bytes = 0, total = 0;
        json_int_t refs = 0;
        int r;

        STORE_WRITE_LOCKED(s);
        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++) {
                _cleanup_free_ char *dir = path_join(s->path, content_kind_dir[k]);
                _cleanup_stmt_ sqlite3_stmt *pinned = NULL, *is_manifest = NULL;
                DIR *d;

                r = db_prepare(s->db, content_indexed_sql(k, true), &pinned);
                if (r >= 0)
                        r = db_prepare(s->db, "SELECT 1 FROM manifests WHERE digest = ?1", &is_manifest);
                if (r < 0)
                        return db_error(s->db, SQLITE_ERROR, err, "cannot measure the store");
                d = dir ? opendir(dir) : NULL;
                if (!d)
                        return msb_error_from_errno(err, negative_errno(), "cannot measure the store");
                for (struct dirent *de; (de = readdir(d));) {
                        char digest[DIGEST_STRING_MAX];
                        struct stat st;

                        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                                continue;
                        uint64_t b = stat_allocated(&st);
                        bool named = content_name_to_digest(k, de->d_name, digest);
                        bool kept = false;
                        if (named) {
                                sqlite3_reset(pinned);
                                sqlite3_bind_text(pinned, 1, digest, -1, SQLITE_TRANSIENT);
                                kept = sqlite3_step(pinned) == SQLITE_ROW || store_lease_held(s, digest);
                        }
                        if (!kept)
                                reclaimable += b;
                        total += b;
                        if (k == CONTENT_BLOB && named) {
                                sqlite3_reset(is_manifest);
                                sqlite3_bind_text(is_manifest, 1, digest, -1, SQLITE_TRANSIENT);
                                if (sqlite3_step(is_manifest) == SQLITE_ROW) {
                                        manifest_count++;
                                        manifest_bytes += b;
                                        continue;
                                }
                        }
                        count[k]++;
                        bytes[k] += b;
                }
                closedir(d);
        }

        static const char *const index_files[] = { "index.db", "index.db-wal", "index.db-shm" };
        for (size_t i = 0; i < ELEMENTSOF(index_files); i++) {
                _cleanup_free_ char *p = path_join(s->path, index_files[i]);
                struct stat st;
                if (p && stat(p, &st) == 0)
                        index_bytes += stat_allocated(&st);
        }
        total += index_bytes;

        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (db_prepare(s->db, "SELECT count(*) FROM image_refs", &st) >= 0 && sqlite3_step(st) == SQLITE_ROW)
                refs = sqlite3_column_int64(st, 0);

#define USAGE(c, b) json_pack("{s:I, s:I}", "count", (json_int_t) (c), "bytes", (json_int_t) (b))
        *ret = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I}",
                         "image_refs", refs,
                         "manifests", USAGE(manifest_count, manifest_bytes),
                         "configs", USAGE(count[CONTENT_BLOB], bytes[CONTENT_BLOB]),
                         kind_names[CONTENT_LAYER], USAGE(count[CONTENT_LAYER], bytes[CONTENT_LAYER]),
                         kind_names[CONTENT_FSMETA], USAGE(count[CONTENT_FSMETA], bytes[CONTENT_FSMETA]),
                         kind_names[CONTENT_VMDK], USAGE(count[CONTENT_VMDK], bytes[CONTENT_VMDK]),
                         "index_bytes", (json_int_t) index_bytes,
                         "total_bytes", (json_int_t) total,
                         "reclaimable_bytes", (json_int_t) reclaimable);
#undef USAGE
        return *ret ? 0 : -ENOMEM;
}
