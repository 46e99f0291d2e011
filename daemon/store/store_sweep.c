/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>

#include "digest.h"
#include "store-internal.h"

/* The schema and its migrations, and the repair at start: the index never
 * names a missing file, and no file stays without a row (README "The
 * store"). */

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

int store_migrate(Store *s, MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        sqlite3_stmt *st;
        int r, version;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        /* FULL: a commit is on disk when it returns; the files it names were
         * fsynced before. */
        r = store_query_exec(&tx.q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot configure the index");

        r = store_query_prepare(&tx.q, "PRAGMA user_version", &st);
        if (r < 0 || sqlite3_step(st) != SQLITE_ROW)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot read the index's schema version");
        version = sqlite3_column_int(st, 0);
        sqlite3_reset(st);

        if (version > (int) ELEMENTSOF(store_migrations))
                return msb_error_set(err, -EPROTONOSUPPORT, PROTO_ERROR_STORE_ERROR,
                                     "the index has schema version %d, newer than this daemon's %d", version,
                                     (int) ELEMENTSOF(store_migrations));

        for (int v = version; v < (int) ELEMENTSOF(store_migrations); v++) {
                _cleanup_free_ char *sql = NULL;
                if (asprintf(&sql, "BEGIN IMMEDIATE; %s PRAGMA user_version=%d; COMMIT;", store_migrations[v],
                             v + 1) < 0)
                        return -ENOMEM;
                r = store_query_exec(&tx.q, sql);
                if (r < 0) {
                        r = store_query_error(&tx.q, SQLITE_ERROR, err, "cannot migrate the index");
                        (void) store_query_exec(&tx.q, "ROLLBACK");
                        return r;
                }
        }
        return 0;
}

const char *store_content_indexed_sql(ContentKind kind) {
        static const char *const sql[_CONTENT_KIND_MAX] = {
                [CONTENT_BLOB] = "SELECT 1 FROM manifests WHERE digest = ?1 OR config_digest = ?1 LIMIT 1",
                [CONTENT_LAYER] = "SELECT 1 FROM layers WHERE diff_id = ?1",
                [CONTENT_FSMETA] = "SELECT 1 FROM manifests WHERE digest = ?1 AND fsmeta_size IS NOT NULL",
                [CONTENT_VMDK] = "SELECT 1 FROM manifests WHERE digest = ?1 AND vmdk_size IS NOT NULL",
        };
        return sql[kind];
}

uint64_t store_stat_allocated(const struct stat *st) {
        return (uint64_t) st->st_blocks * 512;
}

void store_reclaim_unlink(Reclaim *rc, ContentKind kind, const char *path) {
        struct stat st;

        if (lstat(path, &st) < 0 || unlink(path) < 0)
                return;
        if (rc) {
                rc->removed[kind]++;
                rc->bytes += store_stat_allocated(&st);
        }
}

static int sweep_content_dir(Store *s, StoreTx *tx, ContentKind k, Reclaim *rc) {
        _cleanup_free_ char *dir = store_path_join(s->path, content_kind_dir[k]);
        DIR *d;
        int r;

        if (!dir)
                return -ENOMEM;
        d = opendir(dir);
        if (!d)
                return negative_errno();
        for (struct dirent *de; (de = readdir(d));) {
                char digest[DIGEST_STRING_MAX];

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (store_content_name_to_digest(k, de->d_name, digest)) {
                        if (store_lease_held(s, digest))
                                continue;
                        r = store_query_step_digest(&tx->q, store_content_indexed_sql(k), digest);
                        if (r < 0) {
                                closedir(d);
                                return r;
                        }
                        if (r > 0)
                                continue;
                }
                _cleanup_free_ char *p = store_path_join(dir, de->d_name);
                if (p)
                        store_reclaim_unlink(rc, k, p);
        }
        closedir(d);
        return 0;
}

int store_sweep_files(Store *s, StoreTx *tx, Reclaim *rc) {
        int r;

        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++) {
                r = sweep_content_dir(s, tx, k, rc);
                if (r < 0)
                        return r;
        }

        DIR *d = opendir(s->tmp_dir);
        if (!d)
                return negative_errno();
        for (struct dirent *de; (de = readdir(d));) {
                if (streq(de->d_name, ".") || streq(de->d_name, "..") || store_lease_held(s, de->d_name))
                        continue;
                _cleanup_free_ char *p = store_path_join(s->tmp_dir, de->d_name);
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

static void strings_free(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* Marks (fsmeta_size = -1) every manifest using a layer whose image is
 * missing, and returns those layers' diff_ids. */
static int repair_mark_missing_layers(Store *s, StoreTx *tx, char ***ret, size_t *ret_n) {
        char **missing = NULL;
        size_t n_missing = 0;
        sqlite3_stmt *layers;
        int r;

        r = store_query_prepare(&tx->q, "SELECT diff_id FROM layers", &layers);
        if (r < 0)
                return r;
        while (sqlite3_step(layers) == SQLITE_ROW) {
                const char *diff_id = (const char *) sqlite3_column_text(layers, 0);
                if (store_content_file_exists(s, CONTENT_LAYER, diff_id))
                        continue;
                char **n = realloc(missing, (n_missing + 1) * sizeof(char *));
                if (!n || !(n[n_missing] = strdup(diff_id))) {
                        strings_free(n ?: missing, n_missing);
                        return -ENOMEM;
                }
                missing = n;
                n_missing++;
                r = store_query_step_digest(&tx->q,
                                            "UPDATE manifests SET fsmeta_size = -1 WHERE digest IN "
                                            "(SELECT manifest_digest FROM manifest_layers WHERE diff_id = ?1)",
                                            diff_id);
                if (r < 0) {
                        strings_free(missing, n_missing);
                        return r;
                }
        }
        *ret = missing;
        *ret_n = n_missing;
        return 0;
}

/* Drops the manifests (with their references and pins) that miss a file or
 * were marked for a missing layer. */
static int repair_drop_broken_manifests(Store *s, StoreTx *tx, unsigned *dropped) {
        static const char *const drop[] = {
                "DELETE FROM pins WHERE manifest_digest = ?1",
                "DELETE FROM image_refs WHERE manifest_digest = ?1",
                "DELETE FROM manifests WHERE digest = ?1",
        };
        sqlite3_stmt *manifests;
        int r;

        r = store_query_prepare(&tx->q, "SELECT digest, config_digest, fsmeta_size, vmdk_size FROM manifests",
                                &manifests);
        if (r < 0)
                return r;
        while (sqlite3_step(manifests) == SQLITE_ROW) {
                const char *digest = (const char *) sqlite3_column_text(manifests, 0);
                const char *config = (const char *) sqlite3_column_text(manifests, 1);
                bool has_fsmeta = sqlite3_column_type(manifests, 2) != SQLITE_NULL;
                bool has_vmdk = sqlite3_column_type(manifests, 3) != SQLITE_NULL;
                bool broken = sqlite3_column_int64(manifests, 2) == -1 ||
                              !store_content_file_exists(s, CONTENT_BLOB, digest) ||
                              !store_content_file_exists(s, CONTENT_BLOB, config) ||
                              (has_fsmeta && !store_content_file_exists(s, CONTENT_FSMETA, digest)) ||
                              (has_vmdk && !store_content_file_exists(s, CONTENT_VMDK, digest));
                if (!broken)
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(drop); i++) {
                        r = store_query_step_digest(&tx->q, drop[i], digest);
                        if (r < 0)
                                return r;
                }
                (*dropped)++;
        }
        return 0;
}

/* Drops index rows that name missing files: a manifest missing any of its
 * files, or using a layer whose image is missing, goes with its references
 * and pins; then the rows of the missing layers go. */
static int store_repair_rows(Store *s, StoreTx *tx, unsigned *ret_dropped) {
        char **missing = NULL;
        size_t n_missing = 0;
        unsigned dropped = 0;
        int r;

        r = repair_mark_missing_layers(s, tx, &missing, &n_missing);
        if (r < 0)
                return r;
        r = repair_drop_broken_manifests(s, tx, &dropped);
        /* No manifest uses them any more (foreign keys hold us to that order). */
        for (size_t i = 0; r >= 0 && i < n_missing; i++) {
                r = store_query_step_digest(&tx->q, "DELETE FROM layers WHERE diff_id = ?1", missing[i]);
                dropped++;
        }
        strings_free(missing, n_missing);
        if (r < 0)
                return r;
        *ret_dropped = dropped;
        return 0;
}

int store_sweep(Store *s, MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        Reclaim rc = {};
        unsigned dropped = 0;
        int r;

        r = store_tx_begin(s, STORE_TX_WRITE, &tx, err);
        if (r < 0)
                return r;
        r = store_repair_rows(s, &tx, &dropped);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot repair the index");
        r = store_tx_commit(&tx, err);
        if (r < 0)
                return r;

        r = store_sweep_files(s, &tx, &rc);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot sweep the store");

        s->sweep.rows_dropped = dropped;
        s->sweep.tmp_removed = rc.tmp_removed;
        for (ContentKind k = 0; k < _CONTENT_KIND_MAX; k++)
                s->sweep.files_removed += rc.removed[k];
        return 0;
}
