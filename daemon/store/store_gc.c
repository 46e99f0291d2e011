/* SPDX-License-Identifier: Apache-2.0 */
#include "store-internal.h"

/* image.remove, image.prune and the eviction of store_budget.c: rows go in
 * one transaction, their files after it commits (ARCHITECTURE.md "The
 * store's write protocol"). */

/* The condition on a manifests row `m` that no reference and no pin holds it. */
#define GC_MANIFEST_UNHELD                                                              \
        "NOT EXISTS (SELECT 1 FROM image_refs r WHERE r.manifest_digest = m.digest) "  \
        "AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.manifest_digest = m.digest)"

void gc_done(Gc *gc) {
        for (size_t i = 0; i < gc->n_files; i++)
                free(gc->files[i].path);
        free(gc->files);
        for (size_t i = 0; i < gc->n_refs; i++)
                free(gc->refs[i].reference);
        free(gc->refs);
        *gc = (Gc) {};
}

static int gc_doom(Store *s, Gc *gc, ContentKind kind, const char *digest) {
        char *path = store_content_path(s, kind, digest);
        struct stat st;

        if (!path)
                return -ENOMEM;
        Doomed *n = realloc(gc->files, (gc->n_files + 1) * sizeof(Doomed));
        if (!n) {
                free(path);
                return -ENOMEM;
        }
        gc->files = n;
        gc->files[gc->n_files++] = (Doomed) { kind, path };
        /* What unlinking it will free, for an eviction that stops once
         * enough is doomed. */
        if (lstat(path, &st) == 0)
                gc->doomed_bytes += store_stat_allocated(&st);
        return 0;
}

int gc_note_reference(Gc *gc, const char *reference, const char *digest) {
        GcReference *n = realloc(gc->refs, (gc->n_refs + 1) * sizeof(GcReference));

        if (!n)
                return -ENOMEM;
        gc->refs = n;
        gc->refs[gc->n_refs] = (GcReference) { .reference = strdup(reference) };
        if (!gc->refs[gc->n_refs].reference)
                return -ENOMEM;
        snprintf(gc->refs[gc->n_refs].digest, DIGEST_STRING_MAX, "%s", digest);
        gc->n_refs++;
        gc->refs_removed++;
        return 0;
}

/* Steps a DELETE ... RETURNING reference, manifest_digest with ?1 bound to
 * key, noting every reference it deleted. */
static int gc_delete_references(StoreTx *tx, Gc *gc, const char *sql, const char *key) {
        sqlite3_stmt *st;
        int r, rc;

        r = store_query_prepare(&tx->q, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                r = gc_note_reference(gc, (const char *) sqlite3_column_text(st, 0),
                                      (const char *) sqlite3_column_text(st, 1));
                if (r < 0)
                        return r;
        }
        return rc == SQLITE_DONE ? 0 : store_sqlite_to_errno(rc) ?: -EIO;
}

void gc_emit(Store *s, const Gc *gc, StoreEventType type, int64_t at) {
        for (size_t i = 0; i < gc->n_refs; i++)
                store_emit(s, &(StoreEvent) {
                                      .type = type,
                                      .reference = gc->refs[i].reference,
                                      .manifest_digest = gc->refs[i].digest,
                                      .at = at,
                              });
}

/* Deletes one unreferenced, unpinned, unleased manifest's row (its
 * manifest_layers rows go with it) and dooms its files; its config blob too
 * when no other manifest names it. */
static int gc_manifest(Store *s, StoreTx *tx, Gc *gc, const char *digest, const char *config, bool fsmeta,
                       bool vmdk) {
        int r;

        r = store_query_step_digest(&tx->q, "DELETE FROM manifests WHERE digest = ?1", digest);
        if (r < 0)
                return r;
        gc->manifests_removed++;
        if ((r = gc_doom(s, gc, CONTENT_BLOB, digest)) < 0)
                return r;
        if (fsmeta && (r = gc_doom(s, gc, CONTENT_FSMETA, digest)) < 0)
                return r;
        if (vmdk && (r = gc_doom(s, gc, CONTENT_VMDK, digest)) < 0)
                return r;
        r = store_query_step_digest(&tx->q, "SELECT 1 FROM manifests WHERE config_digest = ?1 OR digest = ?1",
                                    config);
        if (r < 0)
                return r;
        if (r == 0 && !store_lease_held(s, config))
                return gc_doom(s, gc, CONTENT_BLOB, config);
        return 0;
}

/* Deletes the layer's row and dooms its file when no manifest uses it and
 * no lease holds it. */
static int gc_layer(Store *s, StoreTx *tx, Gc *gc, const char *diff_id) {
        int r;

        if (store_lease_held(s, diff_id))
                return 0;
        r = store_query_step_digest(&tx->q,
                                    "SELECT 1 FROM layers l WHERE diff_id = ?1 AND NOT EXISTS "
                                    "(SELECT 1 FROM manifest_layers ml WHERE ml.diff_id = l.diff_id)",
                                    diff_id);
        if (r <= 0)
                return r;
        r = store_query_step_digest(&tx->q, "DELETE FROM layers WHERE diff_id = ?1", diff_id);
        if (r < 0)
                return r;
        return gc_doom(s, gc, CONTENT_LAYER, diff_id);
}

/* Deletes every manifest that no reference and no pin holds, and no lease
 * protects, then every layer no manifest uses; records their files. */
static int gc_collect(Store *s, StoreTx *tx, Gc *gc) {
        sqlite3_stmt *orphans, *layers;
        int r;

        r = store_query_prepare(&tx->q,
                                "SELECT digest, config_digest, fsmeta_size IS NOT NULL, vmdk_size IS NOT NULL "
                                "FROM manifests m WHERE " GC_MANIFEST_UNHELD,
                                &orphans);
        if (r < 0)
                return r;
        while (sqlite3_step(orphans) == SQLITE_ROW) {
                const char *digest = (const char *) sqlite3_column_text(orphans, 0);
                if (store_lease_held(s, digest))
                        continue;
                r = gc_manifest(s, tx, gc, digest, (const char *) sqlite3_column_text(orphans, 1),
                                sqlite3_column_int(orphans, 2), sqlite3_column_int(orphans, 3));
                if (r < 0)
                        return r;
        }

        r = store_query_prepare(&tx->q,
                                "SELECT diff_id FROM layers l WHERE NOT EXISTS "
                                "(SELECT 1 FROM manifest_layers ml WHERE ml.diff_id = l.diff_id)",
                                &layers);
        if (r < 0)
                return r;
        while (sqlite3_step(layers) == SQLITE_ROW) {
                r = gc_layer(s, tx, gc, (const char *) sqlite3_column_text(layers, 0));
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The distinct layers of a manifest, read before its rows go. */
typedef struct DiffIds {
        char **ids;
        size_t n;
} DiffIds;

static void diff_ids_done(DiffIds *d) {
        for (size_t i = 0; i < d->n; i++)
                free(d->ids[i]);
        free(d->ids);
        *d = (DiffIds) {};
}

static int manifest_diff_ids(StoreTx *tx, const char *digest, DiffIds *ret) {
        sqlite3_stmt *st;
        int r, rc;

        r = store_query_prepare(&tx->q, "SELECT DISTINCT diff_id FROM manifest_layers WHERE manifest_digest = ?1",
                                &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                char **grown = realloc(ret->ids, (ret->n + 1) * sizeof(char *));
                if (!grown)
                        return -ENOMEM;
                ret->ids = grown;
                ret->ids[ret->n] = strdup((const char *) sqlite3_column_text(st, 0));
                if (!ret->ids[ret->n])
                        return -ENOMEM;
                ret->n++;
        }
        return rc == SQLITE_DONE ? 0 : store_sqlite_to_errno(rc) ?: -EIO;
}

int gc_collect_manifest(Store *s, StoreTx *tx, Gc *gc, const char *digest) {
        _cleanup_(diff_ids_done) DiffIds layers = {};
        _cleanup_free_ char *config = NULL;
        sqlite3_stmt *st;
        bool fsmeta, vmdk;
        int r;

        if (store_lease_held(s, digest))
                return 0;
        r = store_query_prepare(&tx->q,
                                "SELECT config_digest, fsmeta_size IS NOT NULL, vmdk_size IS NOT NULL FROM manifests m "
                                "WHERE digest = ?1 AND " GC_MANIFEST_UNHELD,
                                &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return 0;
        config = strdup((const char *) sqlite3_column_text(st, 0));
        fsmeta = sqlite3_column_int(st, 1);
        vmdk = sqlite3_column_int(st, 2);
        sqlite3_reset(st);
        if (!config)
                return -ENOMEM;

        r = manifest_diff_ids(tx, digest, &layers);
        if (r < 0)
                return r;
        r = gc_manifest(s, tx, gc, digest, config, fsmeta, vmdk);
        if (r < 0)
                return r;
        for (size_t i = 0; i < layers.n; i++) {
                r = gc_layer(s, tx, gc, layers.ids[i]);
                if (r < 0)
                        return r;
        }
        return 1;
}

/* Unlinks the collected files after the transaction that dropped their rows
 * committed: a crash in between leaves files without rows, which the next
 * sweep removes. */
void gc_unlink(Gc *gc, Reclaim *rc) {
        for (size_t i = 0; i < gc->n_files; i++)
                store_reclaim_unlink(rc, gc->files[i].kind, gc->files[i].path);
}

static int holders_json(StoreTx *tx, const char *manifest_digest, json_t **ret) {
        sqlite3_stmt *st;
        json_t *holders;
        int r;

        r = store_query_prepare(&tx->q, "SELECT kind, name FROM pins WHERE manifest_digest = ?1 ORDER BY kind, name",
                                &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, manifest_digest, -1, SQLITE_STATIC);
        holders = json_array();
        if (!holders)
                return -ENOMEM;
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(holders, json_pack("{s:o, s:o}", "kind", store_column_string_or_null(st, 0),
                                                         "name", store_column_string_or_null(st, 1)));
        *ret = holders;
        return 0;
}

/* image-in-use unless forced, or image-not-found when only pins hold the
 * manifest and no reference is left to remove. */
static int remove_check(StoreTx *tx, const StoreLookup *l, bool force, MsbError *err) {
        _cleanup_(json_decrefp) json_t *holders = NULL;
        const char *reference = json_string_value(json_object_get(l->handle, "reference"));
        const char *digest = l->digest;
        int r;

        if (!l->row && !l->by_id) {
                msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND,
                              "no reference %s is cached; only pins hold %s", reference, digest);
                msb_error_add_data(err, "reference", json_string(reference));
                return -ENOENT;
        }
        r = holders_json(tx, digest, &holders);
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot read the pins");
        if (json_array_size(holders) > 0 && !force) {
                msb_error_set(err, -EBUSY, PROTO_ERROR_IMAGE_IN_USE,
                              "%s is in use by %zu pin(s); remove them first or pass force", reference,
                              json_array_size(holders));
                msb_error_add_data(err, "reference", json_string(reference));
                msb_error_add_data(err, "holders", TAKE_PTR(holders));
                return -EBUSY;
        }
        return 0;
}

int store_image_remove(Store *s, const ImageSpec *spec, bool force, MsbError *err) {
        _cleanup_(store_lookup_done) StoreLookup l = {};
        _cleanup_(gc_done) Gc gc = {};
        _cleanup_tx_ StoreTx tx = {};
        int r;

        r = store_tx_begin(s, STORE_TX_WRITE, &tx, err);
        if (r < 0)
                return r;
        r = store_lookup(&tx.q, spec, &l, err);
        if (r < 0)
                return r;
        r = remove_check(&tx, &l, force, err);
        if (r < 0)
                return r;
        /* By digest, the image goes with all its names, as docker rmi <id>. */
        if (l.by_id)
                r = gc_delete_references(&tx, &gc,
                                         "DELETE FROM image_refs WHERE manifest_digest = ?1 "
                                         "RETURNING reference, manifest_digest",
                                         l.digest);
        else
                r = gc_delete_references(&tx, &gc,
                                         "DELETE FROM image_refs WHERE reference = ?1 "
                                         "RETURNING reference, manifest_digest",
                                         l.row);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot remove the reference");
        r = gc_collect(s, &tx, &gc);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot collect unused content");
        r = store_tx_commit(&tx, err);
        if (r < 0)
                return r;
        gc_emit(s, &gc, STORE_EVENT_IMAGE_REMOVED, now_ms());

        /* Still under the lock: an import that finds a layer gone (it looks
         * under the lock) re-creates it only after this unlink. */
        gc_unlink(&gc, NULL);
        return 0;
}

/* Deletes the references no pin holds and not used since used_before (ms
 * since the epoch), but those a load or pull in flight is committing
 * (their manifest is leased). */
static int prune_references(Store *s, StoreTx *tx, Gc *gc, int64_t used_before) {
        sqlite3_stmt *refs, *del;
        int r;

        r = store_query_prepare(&tx->q,
                                "SELECT reference, manifest_digest FROM image_refs "
                                "WHERE manifest_digest NOT IN (SELECT manifest_digest FROM pins) "
                                "AND last_used_at < ?1",
                                &refs);
        if (r < 0)
                return r;
        sqlite3_bind_int64(refs, 1, used_before);
        r = store_query_prepare(&tx->q, "DELETE FROM image_refs WHERE reference = ?1", &del);
        if (r < 0)
                return r;
        while (sqlite3_step(refs) == SQLITE_ROW) {
                const char *reference = (const char *) sqlite3_column_text(refs, 0);
                const char *digest = (const char *) sqlite3_column_text(refs, 1);
                if (store_lease_held(s, digest))
                        continue;
                sqlite3_reset(del);
                sqlite3_bind_text(del, 1, reference, -1, SQLITE_STATIC);
                if (sqlite3_step(del) != SQLITE_DONE)
                        return -EIO;
                r = gc_note_reference(gc, reference, digest);
                if (r < 0)
                        return r;
        }
        return 0;
}

int store_image_prune(Store *s, int64_t unused_for_ms, json_t **ret_report, MsbError *err) {
        _cleanup_(gc_done) Gc gc = {};
        _cleanup_tx_ StoreTx tx = {};
        int64_t now = now_ms();
        Reclaim rc = {};
        int r;

        r = store_tx_begin(s, STORE_TX_WRITE, &tx, err);
        if (r < 0)
                return r;
        /* References to pinned manifests stay: a pinned image remains listed. */
        /* 0 is every reference, also one used within this millisecond. */
        r = prune_references(s, &tx, &gc,
                             unused_for_ms <= 0 ? INT64_MAX
                             : unused_for_ms > now ? INT64_MIN
                                                   : now - unused_for_ms);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot remove references");
        r = gc_collect(s, &tx, &gc);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot collect unused content");
        r = store_tx_commit(&tx, err);
        if (r < 0)
                return r;
        gc_emit(s, &gc, STORE_EVENT_IMAGE_PRUNED, now);

        gc_unlink(&gc, &rc);
        r = store_sweep_files(s, &tx, &rc);
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
