/* SPDX-License-Identifier: Apache-2.0 */
#include "store-internal.h"

/* SQLite's connections, statements and transactions; the rules are in
 * store-internal.h and ARCHITECTURE.md "The store's write protocol". */

int store_sqlite_to_errno(int rc) {
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

int store_query_error(StoreQuery *q, int rc, MsbError *err, const char *what) {
        return msb_error_set(err, store_sqlite_to_errno(rc) ?: -EIO, PROTO_ERROR_STORE_ERROR, "%s: %s", what,
                             sqlite3_errmsg(q->db));
}

int store_query_prepare(StoreQuery *q, const char *sql, sqlite3_stmt **ret) {
        /* A statement still being stepped through (an outer loop) is not
         * handed out again: the same SQL then gets a statement of its own. */
        for (size_t i = 0; i < q->n_stmts; i++)
                if (q->sql[i] == sql && !sqlite3_stmt_busy(q->stmts[i])) {
                        sqlite3_reset(q->stmts[i]);
                        sqlite3_clear_bindings(q->stmts[i]);
                        *ret = q->stmts[i];
                        return 0;
                }
        if (q->n_stmts >= STORE_QUERY_STMTS_MAX)
                return -E2BIG;

        sqlite3_stmt *st = NULL;
        int r = store_sqlite_to_errno(sqlite3_prepare_v2(q->db, sql, -1, &st, NULL));
        if (r < 0)
                return r;
        q->sql[q->n_stmts] = sql;
        q->stmts[q->n_stmts++] = st;
        *ret = st;
        return 0;
}

void store_query_finalize(StoreQuery *q) {
        for (size_t i = 0; i < q->n_stmts; i++)
                sqlite3_finalize(q->stmts[i]);
        q->n_stmts = 0;
}

int store_query_exec(StoreQuery *q, const char *sql) {
        return store_sqlite_to_errno(sqlite3_exec(q->db, sql, NULL, NULL, NULL));
}

int store_query_step_digest(StoreQuery *q, const char *sql, const char *digest) {
        sqlite3_stmt *st;
        int r = store_query_prepare(q, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, digest, -1, SQLITE_STATIC);
        r = sqlite3_step(st);
        sqlite3_reset(st);
        if (r == SQLITE_ROW)
                return 1;
        return r == SQLITE_DONE ? 0 : store_sqlite_to_errno(r) ?: -EIO;
}

void store_bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
        if (s)
                sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

json_t *store_column_string_or_null(sqlite3_stmt *st, int col) {
        const unsigned char *s = sqlite3_column_text(st, col);
        return s ? json_string((const char *) s) : json_null();
}

json_t *store_column_int_or_null(sqlite3_stmt *st, int col) {
        return sqlite3_column_type(st, col) == SQLITE_NULL ? json_null()
                                                           : json_integer(sqlite3_column_int64(st, col));
}

/* ---- the writer ---- */

int store_tx_begin(Store *s, StoreTxMode mode, StoreTx *tx, MsbError *err) {
        int r;

        pthread_mutex_lock(&s->write_lock);
        *tx = (StoreTx) { .q.db = s->db, .lock = &s->write_lock };
        if (mode == STORE_TX_WRITE_UNSYNCED) {
                tx->unsynced = true;
                r = store_query_exec(&tx->q, "PRAGMA synchronous=NORMAL");
                if (r < 0) {
                        store_query_error(&tx->q, SQLITE_ERROR, err, "cannot begin a transaction");
                        store_tx_end(tx);
                        return r;
                }
        }
        if (mode != STORE_TX_READ) {
                r = store_query_exec(&tx->q, "BEGIN IMMEDIATE");
                if (r < 0) {
                        store_query_error(&tx->q, SQLITE_ERROR, err, "cannot begin a transaction");
                        store_tx_end(tx);
                        return r;
                }
                tx->open = true;
        }
        return 0;
}

int store_tx_commit(StoreTx *tx, MsbError *err) {
        int r;

        assert(tx->lock && tx->open);
        /* Statements are reset first: one still holding a row would keep
         * its read transaction and fail the commit. */
        for (size_t i = 0; i < tx->q.n_stmts; i++)
                sqlite3_reset(tx->q.stmts[i]);
        r = store_query_exec(&tx->q, "COMMIT");
        if (r < 0)
                return store_query_error(&tx->q, SQLITE_ERROR, err, "cannot commit");
        tx->open = false;
        return 0;
}

void store_tx_end(StoreTx *tx) {
        if (!tx->lock)
                return;
        for (size_t i = 0; i < tx->q.n_stmts; i++)
                sqlite3_reset(tx->q.stmts[i]);
        if (tx->open && !sqlite3_get_autocommit(tx->q.db))
                (void) store_query_exec(&tx->q, "ROLLBACK");
        tx->open = false;
        /* Every other transaction's commit is durable again. Setting the
         * flag outside a transaction touches neither disk nor memory, so it
         * does not fail; if it did, every later commit would silently skip
         * its fsync: stop, and let the next start repair, rather than that. */
        if (tx->unsynced && store_query_exec(&tx->q, "PRAGMA synchronous=FULL") < 0)
                abort();
        tx->unsynced = false;
        store_query_finalize(&tx->q);
        pthread_mutex_unlock(TAKE_PTR(tx->lock));
}

/* ---- readers ---- */

int store_db_open(const char *path, bool read_only, sqlite3 **ret) {
        sqlite3 *db = NULL;
        int rc;

        /* The writer connection is FULLMUTEX as a second guard: a StoreTx
         * already serialises it, but SQLite then also refuses to run two
         * calls on one connection at once should a future change break that
         * rule. The read-only connection is a StoreReader's, whose
         * store_reader_query() aborts on any other thread than its owner's:
         * it is NOMUTEX, since a lock and unlock around every
         * sqlite3_column_*() call were 9% of image.list of 5,000 rows
         * (bench/list). */
        rc = sqlite3_open_v2(path, &db,
                             read_only ? SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
                                       : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                             NULL);
        if (rc != SQLITE_OK) {
                sqlite3_close(db);
                return store_sqlite_to_errno(rc) ?: -EIO;
        }
        sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
        sqlite3_extended_result_codes(db, 1);
        *ret = db;
        return 0;
}

int store_reader_new(Store *s, StoreReader **ret) {
        _cleanup_free_ StoreReader *rd = calloc(1, sizeof(*rd));
        int r;

        if (!rd)
                return -ENOMEM;
        r = store_db_open(s->db_path, true, &rd->db);
        if (r < 0)
                return r;
        rd->store = s;
        rd->owner = pthread_self();
        *ret = TAKE_PTR(rd);
        return 0;
}

StoreReader *store_reader_free(StoreReader *rd) {
        if (!rd)
                return NULL;
        sqlite3_finalize(rd->list);
        sqlite3_finalize(rd->data_version);
        for (size_t i = 0; i < ELEMENTSOF(rd->list_kept); i++)
                free(rd->list_kept[i].text);
        sqlite3_close(rd->db);
        free(rd);
        return NULL;
}

void store_reader_query(StoreReader *rd, StoreQuery *ret) {
        /* The read connection is the owner thread's alone. */
        if (!pthread_equal(pthread_self(), rd->owner))
                abort();
        *ret = (StoreQuery) { .db = rd->db };
}
