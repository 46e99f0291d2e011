/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/param.h>
#include <sys/statvfs.h>

#include "store-internal.h"

/* The disk budget: its configuration, and the eviction round that follows
 * each commit (README "Configuration"). An eviction is a removal like
 * image.remove's: rows in one transaction, files after it commits
 * (store_gc.c), so a crash in the middle leaves what the sweep at the next
 * start repairs. */

/* Passes of one round at most: each is one transaction, and a pass frees
 * at least what it aimed at but for the index's growth, so a second is
 * rare and a third rarer still. */
#define STORE_BUDGET_PASSES_MAX 8U

static int budget_error(MsbError *err, const char *field, const char *why) {
        msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "config: %s: %s", field, why);
        msb_error_add_data(err, "parameter", json_string(field));
        return -EINVAL;
}

/* A byte count of the section: absent (0, *ret untouched) or a
 * non-negative integer. */
static int budget_bytes(const json_t *section, const char *key, const char *field, uint64_t *ret, MsbError *err) {
        json_t *v = json_object_get(section, key);

        if (!v)
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return budget_error(err, field, "must be a number of bytes (a non-negative integer)");
        *ret = (uint64_t) json_integer_value(v);
        return 1;
}

int store_budget_parse(const json_t *config, StoreBudget *ret, MsbError *err) {
        json_t *section = config ? json_object_get(config, "store") : NULL;
        StoreBudget b = { .keep_free_bytes = STORE_KEEP_FREE_DEFAULT };
        const char *key;
        json_t *v;
        int has_max, has_low, r;

        if (!section) {
                *ret = b;
                return 0;
        }
        if (!json_is_object(section))
                return budget_error(err, "store", "must be an object");
        /* A misspelt field would leave the cache without the budget its
         * owner meant to give it: refused, not ignored. */
        json_object_foreach(section, key, v)
                if (!streq(key, "max_bytes") && !streq(key, "low_bytes") && !streq(key, "keep_free_bytes"))
                        return budget_error(err, "store",
                                            "knows only \"max_bytes\", \"low_bytes\" and \"keep_free_bytes\"");
        /* A JSON integer is at most INT64_MAX: never the default's mark. */
        r = budget_bytes(section, "keep_free_bytes", "store.keep_free_bytes", &b.keep_free_bytes, err);
        if (r < 0)
                return r;
        has_max = budget_bytes(section, "max_bytes", "store.max_bytes", &b.max_bytes, err);
        if (has_max < 0)
                return has_max;
        has_low = budget_bytes(section, "low_bytes", "store.low_bytes", &b.low_bytes, err);
        if (has_low < 0)
                return has_low;
        if (has_max && b.max_bytes == 0)
                return budget_error(err, "store.max_bytes", "must be positive (leave it out for no budget)");
        if (has_low && !has_max)
                return budget_error(err, "store.low_bytes", "needs \"max_bytes\"");
        if (has_low && b.low_bytes > b.max_bytes)
                return budget_error(err, "store.low_bytes", "must not be larger than \"max_bytes\"");
        if (!has_low)
                b.low_bytes = b.max_bytes / 100 * STORE_BUDGET_LOW_DEFAULT_PERCENT +
                              b.max_bytes % 100 * STORE_BUDGET_LOW_DEFAULT_PERCENT / 100;
        *ret = b;
        return 0;
}

void store_set_budget(Store *s, const StoreBudget *budget) {
        pthread_mutex_lock(&s->budget_lock);
        s->budget = budget ? *budget : (StoreBudget) {};
        pthread_mutex_unlock(&s->budget_lock);
}

/* The free bytes of the filesystem of the store's tmp/ (where everything
 * is written first) and the floor resolved against its size: one
 * statvfs(2), none when the floor is off (*ret_free is then UINT64_MAX). */
static int space_now(Store *s, uint64_t *ret_free, uint64_t *ret_keep_free) {
        uint64_t configured = store_get_budget(s).keep_free_bytes, size;
        struct statvfs st;

        if (configured == 0) {
                *ret_free = UINT64_MAX;
                *ret_keep_free = 0;
                return 0;
        }
        if (statvfs(s->tmp_dir, &st) < 0)
                return negative_errno();
        /* f_bavail: what an unprivileged writer may still take (the
         * blocks reserved for root are not the store's). */
        *ret_free = (uint64_t) st.f_bavail * st.f_frsize;
        size = (uint64_t) st.f_blocks * st.f_frsize;
        *ret_keep_free = configured != STORE_KEEP_FREE_DEFAULT
                                 ? configured
                                 : MIN(size / 100 * STORE_KEEP_FREE_DEFAULT_PERCENT, STORE_KEEP_FREE_DEFAULT_MAX_BYTES);
        return 0;
}

int store_keep_free_bytes(Store *s, uint64_t *ret) {
        uint64_t free_bytes;

        return space_now(s, &free_bytes, ret);
}

static int space_error(uint64_t free_bytes, uint64_t keep_free, uint64_t bytes, const char *what, MsbError *err) {
        if (bytes > 0)
                msb_error_set(err, -ENOSPC, PROTO_ERROR_STORE_ERROR,
                              "%s: no space: it takes %" PRIu64 " bytes, and the store's filesystem has %" PRIu64
                              " free, of which %" PRIu64 " are kept free for other uses (store.keep_free_bytes)",
                              what, bytes, free_bytes, keep_free);
        else
                msb_error_set(err, -ENOSPC, PROTO_ERROR_STORE_ERROR,
                              "%s: no space: the store's filesystem is down to %" PRIu64
                              " free bytes, and %" PRIu64 " are kept free for other uses (store.keep_free_bytes)",
                              what, free_bytes, keep_free);
        msb_error_add_data(err, "free_bytes", json_integer((json_int_t) MIN(free_bytes, (uint64_t) INT64_MAX)));
        msb_error_add_data(err, "keep_free_bytes", json_integer((json_int_t) MIN(keep_free, (uint64_t) INT64_MAX)));
        return -ENOSPC;
}

int store_space_check(Store *s, uint64_t bytes, const char *what, uint64_t *ret_keep_free, MsbError *err) {
        uint64_t free_bytes, keep_free;

        /* Not knowing is no reason to refuse: the write itself will tell. */
        if (space_now(s, &free_bytes, &keep_free) < 0) {
                free_bytes = UINT64_MAX;
                keep_free = 0;
        }
        if (ret_keep_free)
                *ret_keep_free = keep_free;
        if (free_bytes >= keep_free && free_bytes - keep_free >= bytes)
                return 0;
        return space_error(free_bytes, keep_free, bytes, what, err);
}

StoreBudget store_get_budget(Store *s) {
        pthread_mutex_lock(&s->budget_lock);
        StoreBudget b = s->budget;
        pthread_mutex_unlock(&s->budget_lock);
        return b;
}

/* Manifests no pin holds and none of whose references was used at or after
 * protect_used_since_ms, least recently used first; those no reference
 * names any more (force-removed, then unpinned) before all others. */
typedef struct Candidates {
        char (*digests)[DIGEST_STRING_MAX];
        size_t n;
} Candidates;

static void candidates_done(Candidates *c) {
        free(c->digests);
        *c = (Candidates) {};
}

/* Read whole before anything is deleted, so that the deletes never run
 * under a statement that still walks the tables. */
static int eviction_candidates(StoreTx *tx, int64_t protect_used_since_ms, Candidates *ret) {
        sqlite3_stmt *st;
        int r, rc;

        r = store_query_prepare(&tx->q,
                                "SELECT m.digest, max(r.last_used_at) AS used FROM manifests m "
                                "LEFT JOIN image_refs r ON r.manifest_digest = m.digest "
                                "WHERE NOT EXISTS (SELECT 1 FROM pins p WHERE p.manifest_digest = m.digest) "
                                "GROUP BY m.digest HAVING used IS NULL OR used < ?1 "
                                "ORDER BY used IS NOT NULL, used, m.created_at, m.digest",
                                &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, protect_used_since_ms);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                char(*grown)[DIGEST_STRING_MAX] = realloc(ret->digests, (ret->n + 1) * DIGEST_STRING_MAX);
                if (!grown)
                        return -ENOMEM;
                ret->digests = grown;
                snprintf(ret->digests[ret->n++], DIGEST_STRING_MAX, "%s", (const char *) sqlite3_column_text(st, 0));
        }
        return rc == SQLITE_DONE ? 0 : store_sqlite_to_errno(rc) ?: -EIO;
}

/* Takes the candidates' references and rows out, in order, until the
 * files doomed add up to `need` bytes or none is left. */
static int evict_until(Store *s, StoreTx *tx, Gc *gc, uint64_t need, int64_t protect_used_since_ms) {
        _cleanup_(candidates_done) Candidates c = {};
        sqlite3_stmt *refs;
        int r, rc;

        r = eviction_candidates(tx, protect_used_since_ms, &c);
        if (r < 0)
                return r;
        r = store_query_prepare(&tx->q,
                                "DELETE FROM image_refs WHERE manifest_digest = ?1 RETURNING reference, manifest_digest",
                                &refs);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c.n && gc->doomed_bytes < need; i++) {
                /* A load or pull in flight commits this manifest, or holds
                 * it as the image it has just stored. */
                if (store_lease_held(s, c.digests[i]))
                        continue;
                sqlite3_reset(refs);
                sqlite3_bind_text(refs, 1, c.digests[i], -1, SQLITE_STATIC);
                while ((rc = sqlite3_step(refs)) == SQLITE_ROW) {
                        r = gc_note_reference(gc, (const char *) sqlite3_column_text(refs, 0), c.digests[i]);
                        if (r < 0)
                                return r;
                }
                if (rc != SQLITE_DONE)
                        return store_sqlite_to_errno(rc) ?: -EIO;
                r = gc_collect_manifest(s, tx, gc, c.digests[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Evicts, in one transaction, what the candidates' files add up to
 * beyond low_bytes of total, and unlinks the files; adds what went to
 * *report. The number of manifests evicted, or -errno. */
static int budget_pass(Store *s, uint64_t total, uint64_t low_bytes, int64_t protect_used_since_ms,
                       StoreBudgetReport *report) {
        _cleanup_(gc_done) Gc gc = {};
        _cleanup_tx_ StoreTx tx = {};
        int r;

        r = store_tx_begin(s, STORE_TX_WRITE, &tx, NULL);
        if (r < 0)
                return r;
        r = evict_until(s, &tx, &gc, total - low_bytes, protect_used_since_ms);
        if (r < 0)
                return r;
        r = store_tx_commit(&tx, NULL);
        if (r < 0)
                return r;
        gc_emit(s, &gc, STORE_EVENT_IMAGE_EVICTED, now_ms());
        /* Under the writer lock, as image.remove unlinks: an import that
         * finds a layer gone re-creates it only after this. */
        gc_unlink(&gc, NULL);
        report->images_evicted += gc.refs_removed;
        report->manifests_evicted += gc.manifests_removed;
        return (int) gc.manifests_removed;
}

/* One round: measures, and while the store is over its budget evicts what
 * brings it to its low mark. What a pass frees is known to the byte, but
 * the index grows by the pass's own transaction (its write-ahead log), so
 * the store is measured again after each pass and another one follows
 * while it is still above the mark. 1 with *report when there was
 * something to do, 0 when the store was within its budget. */
static int budget_round(Store *s, const StoreBudget *b, int64_t protect_used_since_ms, StoreBudgetReport *report) {
        uint64_t total;
        int r;

        r = store_allocated_bytes(s, &total);
        if (r < 0)
                return r;
        *report = (StoreBudgetReport) { .budget = *b, .bytes_before = total };
        if (total <= b->max_bytes)
                return 0;
        for (unsigned pass = 0; pass < STORE_BUDGET_PASSES_MAX && total > b->low_bytes; pass++) {
                r = budget_pass(s, total, b->low_bytes, protect_used_since_ms, report);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = store_allocated_bytes(s, &total);
                if (r < 0)
                        return r;
        }
        report->bytes_after = total;
        report->met = total <= b->max_bytes;
        return 1;
}

int store_budget_enforce(Store *s, int64_t protect_used_since_ms) {
        StoreBudget b = store_get_budget(s);
        StoreBudgetReport report;
        int r;

        if (b.max_bytes == 0)
                return 0;
        pthread_mutex_lock(&s->evict_lock);
        r = budget_round(s, &b, protect_used_since_ms, &report);
        pthread_mutex_unlock(&s->evict_lock);
        if (r > 0 && s->observer.budget)
                s->observer.budget(&report, s->observer.userdata);
        return r < 0 ? r : 0;
}
