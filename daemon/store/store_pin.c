/* SPDX-License-Identifier: Apache-2.0 */
#include "store-internal.h"

/* Pins: a sandbox's or snapshot's hold on a manifest, and the Rootfs that
 * pin.add answers with. */

static int rootfs_json(Store *s, StoreTx *tx, const char *manifest_digest, json_t **ret) {
        _cleanup_free_ char *fsmeta = NULL, *vmdk = NULL;
        json_t *layers = NULL;
        sqlite3_stmt *st;
        int r;

        r = store_query_prepare(&tx->q,
                                "SELECT fsmeta_size IS NOT NULL, vmdk_size IS NOT NULL FROM manifests WHERE digest = ?1",
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
        sqlite3_reset(st);

        r = store_manifest_layers_json(s, &tx->q, manifest_digest, true, &layers);
        if (r < 0)
                return r;
        *ret = json_pack("{s:s, s:s?, s:s?, s:o}", "manifest_digest", manifest_digest, "fsmeta_path", fsmeta,
                         "vmdk_path", vmdk, "layers", layers);
        return *ret ? 0 : -ENOMEM;
}

static int pin_record(StoreTx *tx, const char *kind, const char *name, const char *reference, const char *digest,
                      int64_t now, MsbError *err) {
        sqlite3_stmt *st;
        int r;

        r = store_query_prepare(&tx->q,
                                "INSERT INTO pins (kind, name, reference, manifest_digest, created_at) "
                                "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, name) DO UPDATE SET "
                                "reference = excluded.reference, manifest_digest = excluded.manifest_digest, "
                                "created_at = excluded.created_at",
                                &st);
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot record the pin");
        sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, reference, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, digest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot record the pin");
        return 0;
}

int store_pin_add(Store *s, const char *kind, const char *name, const ImageSpec *spec, json_t **ret_rootfs,
                  MsbError *err) {
        _cleanup_(store_lookup_done) StoreLookup l = {};
        _cleanup_(json_decrefp) json_t *rootfs = NULL;
        _cleanup_tx_ StoreTx tx = {};
        int64_t now = now_ms();
        sqlite3_stmt *touch;
        int r;

        r = store_tx_begin(s, STORE_TX_WRITE, &tx, err);
        if (r < 0)
                return r;
        r = store_lookup(&tx.q, spec, &l, err);
        if (r < 0)
                return r;
        const char *reference = json_string_value(json_object_get(l.handle, "reference"));
        const char *digest = l.digest;

        r = pin_record(&tx, kind, name, reference, digest, now, err);
        if (r < 0)
                return r;

        r = store_query_prepare(&tx.q, "UPDATE image_refs SET last_used_at = ?2 WHERE reference = ?1", &touch);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot update the reference");
        /* Found by digest, the reference the handle shows is the one used. */
        store_bind_text_or_null(touch, 1, l.row ?: (l.by_id ? reference : NULL));
        sqlite3_bind_int64(touch, 2, now);
        if (sqlite3_step(touch) != SQLITE_DONE)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot update the reference");

        r = rootfs_json(s, &tx, digest, &rootfs);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot describe the rootfs");
        r = store_tx_commit(&tx, err);
        if (r < 0)
                return r;
        store_emit(s, &(StoreEvent) {
                              .type = STORE_EVENT_PIN_ADDED,
                              .reference = reference,
                              .manifest_digest = digest,
                              .at = now,
                              .pin_kind = kind,
                              .pin_name = name,
                      });
        *ret_rootfs = TAKE_PTR(rootfs);
        return 0;
}

int store_pin_remove(Store *s, const char *kind, const char *name, MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        sqlite3_stmt *st;
        int r, rc;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        r = store_query_prepare(&tx.q,
                                "DELETE FROM pins WHERE kind = ?1 AND name = ?2 RETURNING reference, manifest_digest",
                                &st);
        if (r < 0)
                return store_query_error(&tx.q, SQLITE_ERROR, err, "cannot remove the pin");
        sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_PIN_NOT_FOUND, "no %s pin named '%s'", kind, name);
        if (rc != SQLITE_ROW)
                return store_query_error(&tx.q, rc, err, "cannot remove the pin");
        /* SQLite deletes at the first step and commits (autocommit) when
         * the statement has run to its end; the row it returned stays
         * readable until then. */
        _cleanup_free_ char *reference = strdup((const char *) sqlite3_column_text(st, 0));
        _cleanup_free_ char *digest = strdup((const char *) sqlite3_column_text(st, 1));
        if (!reference || !digest)
                return -ENOMEM;
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                return store_query_error(&tx.q, rc, err, "cannot remove the pin");
        store_emit(s, &(StoreEvent) {
                              .type = STORE_EVENT_PIN_REMOVED,
                              .reference = reference,
                              .manifest_digest = digest,
                              .at = now_ms(),
                              .pin_kind = kind,
                              .pin_name = name,
                      });
        return 0;
}

static int pin_list(StoreQuery *q, json_t **ret, MsbError *err) {
        sqlite3_stmt *st;
        json_t *list;
        int r;

        r = store_query_prepare(q,
                                "SELECT kind, name, reference, manifest_digest, created_at FROM pins "
                                "ORDER BY created_at, kind, name",
                                &st);
        if (r < 0)
                return store_query_error(q, SQLITE_ERROR, err, "cannot list pins");
        list = json_array();
        if (!list)
                return -ENOMEM;
        while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(list, json_pack("{s:o, s:o, s:o, s:o, s:o}",
                                                      "kind", store_column_string_or_null(st, 0),
                                                      "name", store_column_string_or_null(st, 1),
                                                      "reference", store_column_string_or_null(st, 2),
                                                      "manifest_digest", store_column_string_or_null(st, 3),
                                                      "created_at", store_column_int_or_null(st, 4)));
        *ret = list;
        return 0;
}

int store_pin_list(Store *s, json_t **ret, MsbError *err) {
        _cleanup_tx_ StoreTx tx = {};
        int r;

        r = store_tx_begin(s, STORE_TX_READ, &tx, err);
        if (r < 0)
                return r;
        return pin_list(&tx.q, ret, err);
}

int store_reader_pin_list(StoreReader *rd, json_t **ret, MsbError *err) {
        _cleanup_(store_query_finalize) StoreQuery q = {};

        store_reader_query(rd, &q);
        return pin_list(&q, ret, err);
}
