/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>

#include "store-internal.h"

/* system.df: what the store's files take on disk (allocated blocks), by
 * kind, and how much of it a prune would free. */

typedef struct DfUsage {
        uint64_t count[_CONTENT_KIND_MAX], bytes[_CONTENT_KIND_MAX];
        uint64_t manifest_count, manifest_bytes, reclaimable, total;
} DfUsage;

/* Whether a pin holds a content file of a kind; ?1 is its digest. */
static const char *content_pinned_sql(ContentKind kind) {
        static const char *const sql[_CONTENT_KIND_MAX] = {
                [CONTENT_BLOB] = "SELECT 1 FROM manifests m JOIN pins p ON p.manifest_digest = m.digest "
                                 "WHERE m.digest = ?1 OR m.config_digest = ?1 LIMIT 1",
                [CONTENT_LAYER] = "SELECT 1 FROM manifest_layers ml JOIN pins p ON p.manifest_digest = "
                                  "ml.manifest_digest WHERE ml.diff_id = ?1 LIMIT 1",
                [CONTENT_FSMETA] = "SELECT 1 FROM pins WHERE manifest_digest = ?1 LIMIT 1",
                [CONTENT_VMDK] = "SELECT 1 FROM pins WHERE manifest_digest = ?1 LIMIT 1",
        };
        return sql[kind];
}

static int df_file(Store *s, StoreTx *tx, ContentKind k, const char *name, const struct stat *st, DfUsage *u) {
        char digest[DIGEST_STRING_MAX];
        uint64_t b = store_stat_allocated(st);
        bool named = store_content_name_to_digest(k, name, digest);
        int r;

        u->total += b;
        if (named) {
                r = store_query_step_digest(&tx->q, content_pinned_sql(k), digest);
                if (r < 0)
                        return r;
                if (r == 0 && !store_lease_held(s, digest))
                        u->reclaimable += b;
        } else
                u->reclaimable += b;
        if (k == CONTENT_BLOB && named) {
                r = store_query_step_digest(&tx->q, "SELECT 1 FROM manifests WHERE digest = ?1", digest);
                if (r < 0)
                        return r;
                if (r > 0) {
                        u->manifest_count++;
                        u->manifest_bytes += b;
                        return 0;
                }
        }
        u->count[k]++;
        u->bytes[k] += b;
        return 0;
}

static int df_dir(Store *s, StoreTx *tx, ContentKind k, DfUsage *u) {
        _cleanup_free_ char *dir = store_path_join(s->path, content_kind_dir[k]);
        DIR *d = dir ? opendir(dir) : NULL;
        int r = 0;

        if (!d)
                return negative_errno();
        for (struct dirent *de; r >= 0 && (de = readdir(d));) {
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                r = df_file(s, tx, k, de->d_name, &st, u);
        }
        closedir(d);
        return r;
}

/* The index's files: the database, its write-ahead log and shared memory. */
static uint64_t index_allocated(Store *s) {
        static const char *const index_files[] = { "index.db", "index.db-wal", "index.db-shm" };
        uint64_t bytes = 0;

        for (size_t i = 0; i < ELEMENTSOF(index_files); i++) {
                _cleanup_free_ char *p = store_path_join(s->path, index_files[i]);
                struct stat st;
                if (p && stat(p, &st) == 0)
                        bytes += store_stat_allocated(&st);
        }
        return bytes;
}

/* What a directory's regular files allocate, without asking the index. */
static int dir_allocated(Store *s, ContentKind k, uint64_t *bytes) {
        _cleanup_free_ char *dir = store_path_join(s->path, content_kind_dir[k]);
        DIR *d = dir ? opendir(dir) : NULL;

        if (!d)
                return dir ? negative_errno() : -ENOMEM;
        for (struct dirent *de; (de = readdir(d));) {
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
                        *bytes += store_stat_allocated(&st);
        }
        closedir(d);
        return 0;
}

int store_allocated_bytes(Store *s, uint64_t *ret) {
        uint64_t bytes = index_allocated(s);
        int r;

        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++) {
                r = dir_allocated(s, k, &bytes);
                if (r < 0)
                        return r;
        }
        *ret = bytes;
        return 0;
}

/* The budget and how far the store is from it; null without one. */
static json_t *df_budget(Store *s, uint64_t total) {
        StoreBudget b = store_get_budget(s);

        if (b.max_bytes == 0)
                return json_null();
        return json_pack("{s:I, s:I, s:I}", "max_bytes", (json_int_t) b.max_bytes, "low_bytes",
                         (json_int_t) b.low_bytes, "remaining_bytes", (json_int_t) b.max_bytes - (json_int_t) total);
}

int store_df(Store *s, json_t **ret, MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        DfUsage u = {};
        uint64_t index_bytes;
        json_int_t refs = 0;
        sqlite3_stmt *st;
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++) {
                r = df_dir(s, &tx, k, &u);
                if (r < 0)
                        return msb_error_from_errno(err, r, "cannot measure the store");
        }
        index_bytes = index_allocated(s);
        u.total += index_bytes;

        if (store_query_prepare(&tx.q, "SELECT count(*) FROM image_refs", &st) >= 0 && sqlite3_step(st) == SQLITE_ROW)
                refs = sqlite3_column_int64(st, 0);

#define USAGE(c, b) json_pack("{s:I, s:I}", "count", (json_int_t) (c), "bytes", (json_int_t) (b))
        *ret = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:o}",
                         "image_refs", refs,
                         "manifests", USAGE(u.manifest_count, u.manifest_bytes),
                         "configs", USAGE(u.count[CONTENT_BLOB], u.bytes[CONTENT_BLOB]),
                         "layers", USAGE(u.count[CONTENT_LAYER], u.bytes[CONTENT_LAYER]),
                         "fsmeta", USAGE(u.count[CONTENT_FSMETA], u.bytes[CONTENT_FSMETA]),
                         "vmdk", USAGE(u.count[CONTENT_VMDK], u.bytes[CONTENT_VMDK]),
                         "index_bytes", (json_int_t) index_bytes,
                         "total_bytes", (json_int_t) u.total,
                         "reclaimable_bytes", (json_int_t) u.reclaimable,
                         "budget", df_budget(s, u.total));
#undef USAGE
        return *ret ? 0 : -ENOMEM;
}
