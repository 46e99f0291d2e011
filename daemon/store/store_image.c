/* SPDX-License-Identifier: Apache-2.0 */
#include "jsontext.h"
#include "store-internal.h"

/* Layers, image commits and the queries that answer image.get, image.list
 * and image.inspect. */

/* ---- layers and commits (worker threads) ---- */

int store_layer_lookup(Store *s, const char *diff_id, uint64_t *ret_erofs_size) {
        _cleanup_tx_ StoreTx tx = {};
        sqlite3_stmt *st;
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, NULL);
        if (r < 0)
                return r;
        r = store_query_prepare(&tx.q, "SELECT erofs_size FROM layers WHERE diff_id = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, diff_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW || !store_content_file_exists(s, CONTENT_LAYER, diff_id))
                return 0;
        if (ret_erofs_size)
                *ret_erofs_size = (uint64_t) sqlite3_column_int64(st, 0);
        return 1;
}

int store_layer_add(Store *s, const char *diff_id, uint64_t erofs_size) {
        _cleanup_tx_ StoreTx tx = {};
        sqlite3_stmt *st;
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, NULL);
        if (r < 0)
                return r;
        r = store_query_prepare(&tx.q,
                                "INSERT INTO layers (diff_id, erofs_size, created_at) VALUES (?1, ?2, ?3) "
                                "ON CONFLICT (diff_id) DO UPDATE SET erofs_size = excluded.erofs_size",
                                &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, diff_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) erofs_size);
        sqlite3_bind_int64(st, 3, now_ms());
        return store_sqlite_to_errno(sqlite3_step(st));
}

static int commit_manifest_layers(StoreTx *tx, const StoreManifest *m, MsbError *err) {
        sqlite3_stmt *ml;
        int r;

        r = store_query_prepare(&tx->q,
                                "INSERT OR REPLACE INTO manifest_layers (manifest_digest, position, blob_digest, "
                                "diff_id, media_type, compressed_size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                &ml);
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot record the manifest");
        for (size_t i = 0; i < m->n_layers; i++) {
                sqlite3_reset(ml);
                sqlite3_bind_text(ml, 1, m->digest, -1, SQLITE_STATIC);
                sqlite3_bind_int64(ml, 2, (sqlite3_int64) i);
                sqlite3_bind_text(ml, 3, m->layers[i].blob_digest, -1, SQLITE_STATIC);
                sqlite3_bind_text(ml, 4, m->layers[i].diff_id, -1, SQLITE_STATIC);
                store_bind_text_or_null(ml, 5, m->layers[i].media_type);
                sqlite3_bind_int64(ml, 6, (sqlite3_int64) m->layers[i].compressed_size);
                int rc = sqlite3_step(ml);
                if (rc != SQLITE_DONE)
                        return store_query_error(&tx->q, rc, err, "cannot record the manifest's layers");
        }
        return 0;
}

/* Inserts the manifest's rows; a failure is described while the failing
 * statement still holds SQLite's message for it. */
static int commit_manifest_row(StoreTx *tx, const StoreManifest *m, int64_t now, MsbError *err) {
        uint64_t size_bytes = 0;
        sqlite3_stmt *st;
        int r;

        for (size_t i = 0; i < m->n_layers; i++)
                size_bytes += m->layers[i].compressed_size;

        r = store_query_prepare(&tx->q,
                                "INSERT INTO manifests (digest, media_type, size, config_digest, config_size, "
                                "architecture, os, variant, layer_count, size_bytes, fsmeta_size, vmdk_size, "
                                "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
                                "ON CONFLICT (digest) DO UPDATE SET fsmeta_size = excluded.fsmeta_size, "
                                "vmdk_size = excluded.vmdk_size",
                                &st);
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot record the manifest");
        sqlite3_bind_text(st, 1, m->digest, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, m->media_type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) m->size);
        sqlite3_bind_text(st, 4, m->config_digest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64) m->config_size);
        store_bind_text_or_null(st, 6, m->architecture);
        store_bind_text_or_null(st, 7, m->os);
        store_bind_text_or_null(st, 8, m->variant);
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
                return store_query_error(&tx->q, rc, err, "cannot record the manifest");
        return commit_manifest_layers(tx, m, err);
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

static int commit_references(StoreTx *tx, const char *manifest_digest, char *const *references,
                             size_t n_references, int64_t now, MsbError *err) {
        sqlite3_stmt *ref;
        int r;

        /* created_at stays what it was when the reference was first stored. */
        r = store_query_prepare(&tx->q,
                                "INSERT INTO image_refs (reference, repository, manifest_digest, created_at, "
                                "last_used_at) VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (reference) DO UPDATE SET "
                                "manifest_digest = excluded.manifest_digest, last_used_at = excluded.last_used_at",
                                &ref);
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot record the references");
        for (size_t i = 0; i < n_references; i++) {
                _cleanup_free_ char *repo = repository_of(references[i]);
                if (!repo)
                        return -ENOMEM;
                sqlite3_reset(ref);
                sqlite3_bind_text(ref, 1, references[i], -1, SQLITE_STATIC);
                sqlite3_bind_text(ref, 2, repo, -1, SQLITE_STATIC);
                sqlite3_bind_text(ref, 3, manifest_digest, -1, SQLITE_STATIC);
                sqlite3_bind_int64(ref, 4, now);
                if (sqlite3_step(ref) != SQLITE_DONE)
                        return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot record a reference");
        }
        return 0;
}

static int committed_handles(StoreTx *tx, char *const *references, size_t n_references, json_t *handles,
                             MsbError *err) {
        sqlite3_stmt *h;
        int r;

        r = store_query_prepare(&tx->q, "SELECT " STORE_HANDLE_COLUMNS "WHERE r.reference = ?1", &h);
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot read the committed image");
        for (size_t i = 0; i < n_references; i++) {
                sqlite3_reset(h);
                sqlite3_bind_text(h, 1, references[i], -1, SQLITE_STATIC);
                if (sqlite3_step(h) != SQLITE_ROW)
                        return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot read the committed image");
                if (json_array_append_new(handles, store_handle_from_row(h)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int store_image_commit(Store *s, const StoreManifest *m, char *const *references, size_t n_references,
                       MsbError *err) {
        return store_image_commit_with_handles(s, m, references, n_references, NULL, err);
}

int store_image_commit_with_handles(Store *s, const StoreManifest *m, char *const *references,
                                    size_t n_references, json_t *handles, MsbError *err) {
        StoreImageCommit one = { .manifest = m, .references = references, .n_references = n_references };
        return store_images_commit(s, &one, 1, handles, err);
}

int store_images_commit(Store *s, const StoreImageCommit *images, size_t n_images, json_t *handles,
                        MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        int64_t now = now_ms();
        int r;

        r = store_tx_begin(s, STORE_TX_WRITE, &tx, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_images; i++) {
                const StoreImageCommit *c = &images[i];
                r = commit_manifest_row(&tx, c->manifest, now, err);
                if (r < 0)
                        return r;
                r = commit_references(&tx, c->manifest->digest, c->references, c->n_references, now, err);
                if (r < 0)
                        return r;
                if (handles) {
                        r = committed_handles(&tx, c->references, c->n_references, handles, err);
                        if (r < 0)
                                return r;
                }
        }
        r = store_tx_commit(&tx, err);
        if (r < 0)
                return r;
        /* Still under the writer lock: events go out in commit order. */
        for (size_t i = 0; i < n_images; i++)
                for (size_t j = 0; j < images[i].n_references; j++)
                        store_emit(s, &(StoreEvent) {
                                              .type = images[i].manifest->event,
                                              .reference = images[i].references[j],
                                              .manifest_digest = images[i].manifest->digest,
                                              .at = now,
                                      });
        return 0;
}

/* ---- taking back what a failed import published (worker threads) ---- */

/* Unlinks the content file of kind for digest when no committed row names
 * it and no lease but the caller's protects it. The lease table stays
 * locked from the check to the unlink, so an import that leases it at that
 * moment either stops us or finds it gone and writes it again. */
static void discard_file(Store *s, StoreTx *tx, ContentKind kind, const char *digest) {
        _cleanup_free_ char *path = store_content_path(s, kind, digest);

        if (!path || store_query_step_digest(&tx->q, store_content_indexed_sql(kind), digest) != 0)
                return;
        pthread_mutex_lock(&s->lease_lock);
        if (store_lease_only_caller_locked(s, digest))
                (void) unlink(path);
        pthread_mutex_unlock(&s->lease_lock);
}

/* Removes the layers that no manifest uses and only the caller leases: the
 * file first, then its row. The space the file frees is what the index may
 * need to delete the row when the store is full; should that still fail,
 * the row names a missing file, which store_layer_lookup() treats as
 * absent and the sweep at start drops. Nobody looks a layer up between the
 * two: the caller holds the writer lock. */
static int discard_layers(Store *s, StoreTx *tx, const StoreDiscard *d) {
        int r;

        for (size_t i = 0; i < d->n_layers; i++) {
                _cleanup_free_ char *path = store_layer_path(s, d->layers[i]);
                bool ours;

                r = store_query_step_digest(&tx->q, "SELECT 1 FROM manifest_layers WHERE diff_id = ?1 LIMIT 1",
                                            d->layers[i]);
                if (r < 0)
                        return r;
                if (r > 0 || !path)
                        continue;
                pthread_mutex_lock(&s->lease_lock);
                ours = store_lease_only_caller_locked(s, d->layers[i]);
                if (ours)
                        (void) unlink(path);
                pthread_mutex_unlock(&s->lease_lock);
                if (ours && (r = store_query_step_digest(&tx->q, "DELETE FROM layers WHERE diff_id = ?1",
                                                         d->layers[i])) < 0)
                        return r;
        }
        return 0;
}

void store_discard(Store *s, const StoreDiscard *d) {
        _cleanup_tx_ StoreTx tx = {};

        if (store_tx_begin(s, STORE_TX_WRITE, &tx, NULL) < 0)
                return;
        /* Holding the writer lock, no commit can start using a file between
         * its check and its unlink. */
        if (d->rootfs) {
                discard_file(s, &tx, CONTENT_FSMETA, d->rootfs);
                discard_file(s, &tx, CONTENT_VMDK, d->rootfs);
        }
        for (size_t i = 0; i < ELEMENTSOF(d->blobs); i++)
                if (d->blobs[i])
                        discard_file(s, &tx, CONTENT_BLOB, d->blobs[i]);
        if (discard_layers(s, &tx, d) >= 0)
                (void) store_tx_commit(&tx, NULL);
}

int store_image_touch(Store *s, const char *canonical_reference, json_t **ret_handle) {
        _cleanup_(store_lookup_done) StoreLookup l = {};
        _cleanup_(reference_freep) Reference *ref = NULL;
        _cleanup_tx_ StoreTx tx = {};
        int64_t now = now_ms();
        sqlite3_stmt *st;
        int r;

        r = reference_parse(canonical_reference, &ref, NULL);
        if (r < 0)
                return r;
        /* A use time a power cut loses is harmless, and the WAL's fsync was
         * most of a cached pull (0.5-1 ms). */
        r = store_tx_begin(s, STORE_TX_WRITE_UNSYNCED, &tx, NULL);
        if (r < 0)
                return r;
        /* The row the pull's lookup found: a digest reference is cached
         * under a tag of its repository as often as under its own name. */
        ImageSpec spec = image_spec_borrow(ref);
        r = store_lookup(&tx.q, &spec, &l, NULL);
        if (r < 0)
                return r;
        if (l.row) {
                r = store_query_prepare(&tx.q, "UPDATE image_refs SET last_used_at = ?2 WHERE reference = ?1", &st);
                if (r < 0)
                        return r;
                sqlite3_bind_text(st, 1, l.row, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, now);
                r = store_sqlite_to_errno(sqlite3_step(st));
                if (r < 0)
                        return r;
                /* The handle came from that row before the update. */
                if (json_object_set_new(l.handle, "last_used_at", json_integer(now)) < 0)
                        return -ENOMEM;
        }
        r = store_tx_commit(&tx, NULL);
        if (r < 0)
                return r;
        store_emit(s, &(StoreEvent) {
                              .type = STORE_EVENT_IMAGE_PULLED,
                              .reference = ref->canonical,
                              .manifest_digest = l.digest,
                              .at = now,
                      });
        if (ret_handle)
                *ret_handle = TAKE_PTR(l.handle);
        return 0;
}

/* ---- queries ---- */

/* The ImageHandle members STORE_HANDLE_COLUMNS selects, in its order: the
 * first HANDLE_STRING_COLUMNS strings, the others integers. Both the
 * handle as a tree and image.list's text are written from it. */
static const char *const handle_columns[] = {
        "reference", "manifest_digest", "architecture", "os",
        "layer_count", "size_bytes", "created_at", "last_used_at",
};
#define HANDLE_STRING_COLUMNS 4

json_t *store_handle_from_row(sqlite3_stmt *st) {
        json_t *o = json_object();

        for (int c = 0; o && c < (int) ELEMENTSOF(handle_columns); c++) {
                json_t *v = c < HANDLE_STRING_COLUMNS ? store_column_string_or_null(st, c)
                                                      : store_column_int_or_null(st, c);
                if (json_object_set_new(o, handle_columns[c], v) < 0) {
                        json_decref(o);
                        return NULL;
                }
        }
        return o;
}

/*
 * Finds the image a reference names: the reference row of its canonical
 * form; for a digest reference also a reference of the same repository that
 * points at that manifest, or else a manifest of that digest that a pin of
 * the same repository holds (its tags may have been force-removed). The
 * handle shows the reference as asked. 0 found, -ENOENT not.
 */
static int lookup_by_reference(StoreQuery *q, const Reference *ref, StoreLookup *ret, MsbError *err) {
        sqlite3_stmt *st;
        int r, rc;

        r = store_query_prepare(q,
                                "SELECT * FROM (SELECT " STORE_HANDLE_COLUMNS "WHERE r.reference = ?1) "
                                "UNION ALL SELECT * FROM (SELECT " STORE_HANDLE_COLUMNS
                                "WHERE ?2 IS NOT NULL AND r.repository = ?3 AND r.manifest_digest = ?2 "
                                "ORDER BY r.created_at DESC LIMIT 1) "
                                "UNION ALL SELECT NULL, m.digest, m.architecture, m.os, m.layer_count, "
                                "m.size_bytes, m.created_at, NULL FROM manifests m WHERE ?2 IS NOT NULL AND "
                                "m.digest = ?2 AND EXISTS (SELECT 1 FROM pins p WHERE p.manifest_digest = m.digest "
                                "AND substr(p.reference, 1, length(?3) + 1) IN (?3 || ':', ?3 || '@')) "
                                "LIMIT 1",
                                &st);
        if (r < 0)
                return store_query_error(q, SQLITE_ERROR, err, "cannot look up the image");
        sqlite3_bind_text(st, 1, ref->canonical, -1, SQLITE_STATIC);
        store_bind_text_or_null(st, 2, ref->digest);
        sqlite3_bind_text(st, 3, ref->repository, -1, SQLITE_STATIC);

        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return store_query_error(q, rc, err, "cannot look up the image");
        if (sqlite3_column_type(st, 0) != SQLITE_NULL &&
            !(ret->row = strdup((const char *) sqlite3_column_text(st, 0))))
                return -ENOMEM;
        ret->handle = store_handle_from_row(st);
        sqlite3_reset(st);
        if (!ret->handle || json_object_set_new(ret->handle, "reference", json_string(ref->canonical)) < 0)
                return -ENOMEM;
        return 0;
}

/* The manifest whose digest starts with prefix and that a reference or a
 * pin holds; -ENOTUNIQ when several do, with *ret_candidates listing up to
 * STORE_AMBIGUOUS_SHOWN of them. */
static int lookup_id_prefix(StoreQuery *q, const char *prefix, char ret_digest[DIGEST_STRING_MAX],
                            json_t **ret_candidates, MsbError *err) {
        _cleanup_(json_decrefp) json_t *candidates = json_array();
        _cleanup_free_ char *pattern = NULL;
        sqlite3_stmt *st;
        int r, rc;

        if (!candidates || asprintf(&pattern, "%s*", prefix) < 0)
                return -ENOMEM;
        /* GLOB with a bound pattern of plain hex digits is a range scan of
         * the primary key. */
        r = store_query_prepare(q,
                                "SELECT digest FROM manifests m WHERE digest GLOB ?1 AND ("
                                "EXISTS (SELECT 1 FROM image_refs r WHERE r.manifest_digest = m.digest) OR "
                                "EXISTS (SELECT 1 FROM pins p WHERE p.manifest_digest = m.digest)) "
                                "ORDER BY digest LIMIT ?2",
                                &st);
        if (r < 0)
                return store_query_error(q, SQLITE_ERROR, err, "cannot look up the image");
        sqlite3_bind_text(st, 1, pattern, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, STORE_AMBIGUOUS_SHOWN);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if (json_array_append_new(candidates, json_string((const char *) sqlite3_column_text(st, 0))) < 0)
                        return -ENOMEM;
        if (rc != SQLITE_DONE)
                return store_query_error(q, rc, err, "cannot look up the image");
        if (json_array_size(candidates) == 0)
                return -ENOENT;
        snprintf(ret_digest, DIGEST_STRING_MAX, "%s", json_string_value(json_array_get(candidates, 0)));
        if (json_array_size(candidates) > 1) {
                *ret_candidates = TAKE_PTR(candidates);
                return -ENOTUNIQ;
        }
        return 0;
}

/* The handle of a manifest found by digest: its newest reference, else the
 * newest pin's (a pinned image whose references were force-removed). */
static int lookup_manifest_handle(StoreQuery *q, const char *digest, StoreLookup *ret, MsbError *err) {
        sqlite3_stmt *st;
        int r;

        r = store_query_prepare(q,
                                "SELECT * FROM (SELECT " STORE_HANDLE_COLUMNS "WHERE r.manifest_digest = ?1 "
                                "ORDER BY r.created_at DESC, r.rowid DESC LIMIT 1) "
                                "UNION ALL SELECT * FROM (SELECT p.reference, m.digest, m.architecture, m.os, "
                                "m.layer_count, m.size_bytes, m.created_at, NULL FROM manifests m JOIN pins p ON "
                                "p.manifest_digest = m.digest WHERE m.digest = ?1 ORDER BY p.created_at DESC LIMIT 1) "
                                "LIMIT 1",
                                &st);
        if (r < 0)
                return store_query_error(q, SQLITE_ERROR, err, "cannot look up the image");
        sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return store_query_error(q, SQLITE_ERROR, err, "cannot look up the image");
        ret->handle = store_handle_from_row(st);
        sqlite3_reset(st);
        if (!ret->handle)
                return -ENOMEM;
        ret->by_id = true;
        snprintf(ret->digest, sizeof(ret->digest), "%s", digest);
        return 0;
}

void store_lookup_done(StoreLookup *l) {
        json_decref(l->handle);
        free(l->row);
        *l = (StoreLookup) {};
}

int store_lookup(StoreQuery *q, const ImageSpec *spec, StoreLookup *ret, MsbError *err) {
        _cleanup_(json_decrefp) json_t *candidates = NULL;
        _cleanup_(store_lookup_done) StoreLookup l = {};
        char digest[DIGEST_STRING_MAX];
        const char *name = spec->ref ? spec->ref->canonical : spec->id_prefix;
        int r = -ENOENT;

        /* A name first, as docker looks up "abcdef123456": a repository of
         * that name wins over an image ID starting so. */
        if (spec->ref)
                r = lookup_by_reference(q, spec->ref, &l, err);
        if (r == -ENOENT && spec->id_prefix) {
                store_lookup_done(&l);
                r = lookup_id_prefix(q, spec->id_prefix, digest, &candidates, err);
                if (r == 0)
                        r = lookup_manifest_handle(q, digest, &l, err);
        }
        if (r == -ENOTUNIQ) {
                msb_error_set(err, -ENOTUNIQ, PROTO_ERROR_AMBIGUOUS_REFERENCE, "%s matches %s%zu images; give more digits",
                              name, json_array_size(candidates) >= STORE_AMBIGUOUS_SHOWN ? "at least " : "",
                              json_array_size(candidates));
                msb_error_add_data(err, "reference", json_string(name));
                msb_error_add_data(err, "candidates", TAKE_PTR(candidates));
                return r;
        }
        if (r == -ENOENT) {
                msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND, "no cached image %s", name);
                msb_error_add_data(err, "reference", json_string(name));
                return r;
        }
        if (r < 0)
                return r;
        if (!l.by_id)
                snprintf(l.digest, sizeof(l.digest), "%s",
                         json_string_value(json_object_get(l.handle, "manifest_digest")));
        *ret = l;
        l = (StoreLookup) {};
        return 0;
}

int store_image_get(Store *s, const ImageSpec *spec, json_t **ret, MsbError *err) {
        _cleanup_(store_lookup_done) StoreLookup l = {};
        _cleanup_tx_ StoreTx tx = {};
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        r = store_lookup(&tx.q, spec, &l, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l.handle);
        return 0;
}

int store_reader_image_get(StoreReader *rd, const ImageSpec *spec, json_t **ret, MsbError *err) {
        _cleanup_(store_lookup_done) StoreLookup l = {};
        _cleanup_(store_query_finalize) StoreQuery q = {};
        int r;

        store_reader_query(rd, &q);
        r = store_lookup(&q, spec, &l, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l.handle);
        return 0;
}

/* The list as JSON text, written without a jansson tree: for 10,000
 * references several times faster. The fields and their order are
 * store_handle_from_row()'s (handle_columns). */
#define IMAGE_LIST_SQL "SELECT " STORE_HANDLE_COLUMNS "ORDER BY r.created_at DESC, r.rowid DESC"

static int image_list_text(StoreQuery *q, sqlite3_stmt *st, StoreListForm form, size_t size_hint, char **ret,
                           size_t *ret_len, MsbError *err) {
        _cleanup_(json_text_done) JsonText t = {};
        bool first = true;
        int rc;

        /* The last list's size: the text is written once, without the
         * copies of growing it by doubling. */
        json_text_reserve(&t, size_hint);
        if (form == STORE_LIST_ROWS) {
                json_text_raw(&t, "{\"columns\":[");
                for (size_t c = 0; c < ELEMENTSOF(handle_columns); c++) {
                        json_text_raw(&t, c ? "," : "");
                        json_text_string(&t, handle_columns[c]);
                }
                json_text_raw(&t, "],\"rows\":[");
        } else
                json_text_raw(&t, "[");
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                json_text_reserve(&t, 512);
                json_text_raw(&t, first ? "" : ",");
                first = false;
                for (int c = 0; c < (int) ELEMENTSOF(handle_columns); c++) {
                        if (form == STORE_LIST_ROWS)
                                json_text_raw(&t, c ? "," : "[");
                        else {
                                /* The names need no escaping. */
                                json_text_raw(&t, c ? ",\"" : "{\"");
                                json_text_raw(&t, handle_columns[c]);
                                json_text_raw(&t, "\":");
                        }
                        if (c < HANDLE_STRING_COLUMNS)
                                json_text_string(&t, (const char *) sqlite3_column_text(st, c));
                        else if (sqlite3_column_type(st, c) == SQLITE_NULL)
                                json_text_raw(&t, "null");
                        else
                                json_text_int(&t, sqlite3_column_int64(st, c));
                }
                json_text_raw(&t, form == STORE_LIST_ROWS ? "]" : "}");
        }
        if (rc != SQLITE_DONE)
                return store_query_error(q, rc, err, "cannot list images");
        json_text_raw(&t, form == STORE_LIST_ROWS ? "]}" : "]");

        size_t len = t.len;
        char *text = json_text_steal(&t);
        if (!text)
                return -ENOMEM;
        *ret = text;
        if (ret_len)
                *ret_len = len;
        return 0;
}

/* PRAGMA data_version of the reader's connection: it changes whenever
 * another connection (the writer) commits, and only then. */
static int reader_data_version(StoreReader *rd, StoreQuery *q, int64_t *ret, MsbError *err) {
        int rc;

        if (!rd->data_version) {
                rc = sqlite3_prepare_v3(rd->db, "PRAGMA data_version", -1, SQLITE_PREPARE_PERSISTENT,
                                        &rd->data_version, NULL);
                if (rc != SQLITE_OK)
                        return store_query_error(q, rc, err, "cannot list images");
        }
        rc = sqlite3_step(rd->data_version);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(rd->data_version);
                return store_query_error(q, rc, err, "cannot list images");
        }
        *ret = sqlite3_column_int64(rd->data_version, 0);
        sqlite3_reset(rd->data_version);
        return 0;
}

/* The reader keeps its list statement prepared across calls, and the last
 * list's text while nothing commits: image.list is the call a polling
 * client repeats, and the same 10,000 rows are then a copy instead of a
 * query and a JSON text of 15 ms (bench/list). The version is read before
 * the query, so a commit in between can only make the text newer than its
 * version says, and the next call reads the list again. */
int store_reader_image_list_text(StoreReader *rd, StoreListForm form, char **ret, MsbError *err) {
        _cleanup_(store_query_finalize) StoreQuery q = {};
        _cleanup_free_ char *text = NULL;
        int64_t version = -1;
        size_t len = 0;
        int r;

        store_reader_query(rd, &q);
        r = reader_data_version(rd, &q, &version, err);
        if (r < 0)
                return r;
        assert(form < ELEMENTSOF(rd->list_kept));
        typeof(rd->list_kept[0]) *kept = &rd->list_kept[form];
        if (!kept->text || kept->version != version) {
                if (!rd->list) {
                        r = sqlite3_prepare_v3(rd->db, IMAGE_LIST_SQL, -1, SQLITE_PREPARE_PERSISTENT, &rd->list, NULL);
                        if (r != SQLITE_OK)
                                return store_query_error(&q, r, err, "cannot list images");
                }
                r = image_list_text(&q, rd->list, form, kept->len + 1, &text, &len, err);
                sqlite3_reset(rd->list);
                if (r < 0)
                        return r;
                free(kept->text);
                kept->text = TAKE_PTR(text);
                kept->len = len;
                kept->version = version;
        }
        text = malloc(kept->len + 1);
        if (!text)
                return -ENOMEM;
        memcpy(text, kept->text, kept->len + 1);
        *ret = TAKE_PTR(text);
        return 0;
}

int store_image_list(Store *s, json_t **ret, MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        _cleanup_free_ char *text = NULL;
        sqlite3_stmt *st;
        json_t *list;
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        /* One list query and one field layout: the text image.list sends. */
        r = store_query_prepare(&tx.q, IMAGE_LIST_SQL, &st);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot list images");
        r = image_list_text(&tx.q, st, STORE_LIST_OBJECTS, 0, &text, NULL, err);
        if (r < 0)
                return r;
        list = json_loads(text, 0, NULL);
        if (!list)
                return -ENOMEM;
        *ret = list;
        return 0;
}

int store_manifest_layers_json(Store *s, StoreQuery *q, const char *manifest_digest, bool rootfs, json_t **ret) {
        _cleanup_(json_decrefp) json_t *layers = NULL;
        sqlite3_stmt *st;
        int r, rc;

        r = store_query_prepare(q,
                                "SELECT ml.diff_id, ml.blob_digest, ml.media_type, ml.compressed_size, "
                                "l.erofs_size, ml.position FROM manifest_layers ml LEFT JOIN layers l ON "
                                "l.diff_id = ml.diff_id WHERE ml.manifest_digest = ?1 ORDER BY ml.position",
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
                        l = json_pack("{s:o, s:s?, s:o}", "diff_id", store_column_string_or_null(st, 0), "path",
                                      path, "erofs_size_bytes", store_column_int_or_null(st, 4));
                } else
                        l = json_pack("{s:o, s:o, s:o, s:o, s:o, s:I}",
                                      "diff_id", store_column_string_or_null(st, 0),
                                      "blob_digest", store_column_string_or_null(st, 1),
                                      "media_type", store_column_string_or_null(st, 2),
                                      "compressed_size_bytes", store_column_int_or_null(st, 3),
                                      "erofs_size_bytes", store_column_int_or_null(st, 4),
                                      "position", (json_int_t) sqlite3_column_int64(st, 5));
                if (json_array_append_new(layers, l) < 0)
                        return -ENOMEM;
        }
        if (rc != SQLITE_DONE)
                return -EIO;
        *ret = TAKE_PTR(layers);
        return 0;
}

int store_image_inspect(Store *s, const ImageSpec *spec, json_t **ret, MsbError *err) {
        _cleanup_(store_lookup_done) StoreLookup l = {};
        _cleanup_(json_decrefp) json_t *layers = NULL;
        _cleanup_tx_ StoreTx tx = {};
        sqlite3_stmt *st;
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        r = store_lookup(&tx.q, spec, &l, err);
        if (r < 0)
                return r;

        const char *digest = l.digest;
        r = store_manifest_layers_json(s, &tx.q, digest, false, &layers);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot read the layers");

        r = store_query_prepare(&tx.q, "SELECT config_digest FROM manifests WHERE digest = ?1", &st);
        if (r < 0 || (sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC), sqlite3_step(st)) != SQLITE_ROW)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot read the manifest");

        /* config_digest is for the caller, which parses the config blob. */
        *ret = json_pack("{s:O, s:O, s:o}", "handle", l.handle, "layers", layers, "config_digest",
                         store_column_string_or_null(st, 0));
        return *ret ? 0 : -ENOMEM;
}
