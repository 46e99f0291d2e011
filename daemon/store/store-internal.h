/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the store's own files share, and nothing outside daemon/store/ sees:
 * the Store object, the content kinds, and the two ways to reach SQLite.
 *
 * Every statement is prepared through a StoreQuery, which owns it and
 * finalizes it when the query's scope ends. A query runs either
 *  - in a StoreTx on the writer connection: the transaction object owns the
 *    writer lock and its statements, and store_tx_end() rolls back what is
 *    still open, finalizes every statement and only then releases the lock,
 *    all in one function, so no declaration order decides what is safe; or
 *  - on a StoreReader's read connection, which only the thread that created
 *    the reader may use (ARCHITECTURE.md "Threads").
 * Nothing else calls sqlite3_prepare.
 */

#include <assert.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "digest.h"
#include "store.h"

/* The store and every directory in it: only the daemon's user may enter. */
#define STORE_DIR_MODE 0700
/* How long a connection waits for another's lock before failing a call. */
#define STORE_BUSY_TIMEOUT_MS 10000
/* Distinct statements one query scope may hold; the largest uses 6. */
#define STORE_QUERY_STMTS_MAX 16

typedef struct Lease {
        char *key;
        unsigned count;
        struct Lease *next;
} Lease;

struct Store {
        char *path;
        char *tmp_dir;
        char *db_path;
        int lock_fd;

        /* The writer connection: reached only through a StoreTx, which holds
         * write_lock for its whole life. */
        sqlite3 *db;
        pthread_mutex_t write_lock;

        pthread_mutex_t lease_lock;
        Lease *leases;
        uint64_t tmp_counter;

        StoreSweepStats sweep;
        bool cancelled;

        StoreObserver observer; /* set before any worker runs; read by all */
        /* The budget, which a reload may change while rounds run. */
        pthread_mutex_t budget_lock;
        StoreBudget budget;
        /* Held for a whole eviction round: rounds never overlap. */
        pthread_mutex_t evict_lock;
};

typedef enum ContentKind {
        CONTENT_BLOB,
        CONTENT_LAYER,
        CONTENT_FSMETA,
        CONTENT_VMDK,
        _CONTENT_KIND_MAX,
} ContentKind;

extern const char *const content_kind_dir[_CONTENT_KIND_MAX];
extern const char *const content_kind_suffix[_CONTENT_KIND_MAX];

char *store_path_join(const char *a, const char *b);
char *store_content_path(const Store *s, ContentKind kind, const char *digest);
bool store_content_file_exists(const Store *s, ContentKind kind, const char *digest);
/* Turns a content file name back into its digest; false for names the store
 * never writes. */
bool store_content_name_to_digest(ContentKind kind, const char *name, char ret[DIGEST_STRING_MAX]);
bool store_lease_held(Store *s, const char *key);
/* True when at most one lease (the caller's own) protects key. The caller
 * holds s->lease_lock, so that nobody takes a lease between this check and
 * what it decides. */
bool store_lease_only_caller_locked(Store *s, const char *key);

/* ---- statements ---- */

typedef struct StoreQuery {
        sqlite3 *db;
        const char *sql[STORE_QUERY_STMTS_MAX];
        sqlite3_stmt *stmts[STORE_QUERY_STMTS_MAX];
        size_t n_stmts;
} StoreQuery;

/* The statement for sql in this scope, reset and with its bindings cleared:
 * prepared once per scope and reused while it is not being stepped through
 * elsewhere. Borrowed: the query finalizes it. */
int store_query_prepare(StoreQuery *q, const char *sql, sqlite3_stmt **ret);
/* Finalizes every statement of the scope. */
void store_query_finalize(StoreQuery *q);
/* Runs sql with ?1 bound to digest: 1 if it returned a row, 0 if not. */
int store_query_step_digest(StoreQuery *q, const char *sql, const char *digest);
int store_query_exec(StoreQuery *q, const char *sql);
/* A store-error naming what failed, with SQLite's message. */
int store_query_error(StoreQuery *q, int rc, MsbError *err, const char *what);
int store_sqlite_to_errno(int rc);
/* Opens a connection to the index (the writer FULLMUTEX, a thread-bound reader NOMUTEX; busy timeout, extended codes). */
int store_db_open(const char *path, bool read_only, sqlite3 **ret);

void store_bind_text_or_null(sqlite3_stmt *st, int i, const char *s);
json_t *store_column_string_or_null(sqlite3_stmt *st, int col);
json_t *store_column_int_or_null(sqlite3_stmt *st, int col);

/* ---- transactions on the writer connection (worker threads) ---- */

typedef enum StoreTxMode {
        STORE_TX_READ,  /* the writer's view, no transaction: reads that must see every commit */
        STORE_TX_WRITE, /* BEGIN IMMEDIATE: one writer at a time, committed or rolled back */
        /* STORE_TX_WRITE whose commit does not fsync the WAL (synchronous
         * NORMAL until store_tx_end() sets FULL again): for a change a power
         * cut may lose harmlessly (a use time). The WAL keeps the index
         * consistent either way, and the next FULL commit makes it durable. */
        STORE_TX_WRITE_UNSYNCED,
} StoreTxMode;

typedef struct StoreTx {
        StoreQuery q;
        pthread_mutex_t *lock; /* held while non-NULL */
        bool open;             /* a BEGIN not yet committed */
        bool unsynced;         /* STORE_TX_WRITE_UNSYNCED: synchronous is NORMAL until store_tx_end() */
} StoreTx;

/* Takes the writer lock (waiting for it) and, for the write modes, begins a
 * transaction. On failure nothing is held. */
int store_tx_begin(Store *s, StoreTxMode mode, StoreTx *tx, MsbError *err);
int store_tx_commit(StoreTx *tx, MsbError *err);
/* Rolls back an open transaction, finalizes the statements, releases the
 * lock. Idempotent; a StoreTx that never began is a no-op. */
void store_tx_end(StoreTx *tx);
#define _cleanup_tx_ _cleanup_(store_tx_end)

/* ---- reads on a StoreReader (its thread only) ---- */

struct StoreReader {
        Store *store;
        sqlite3 *db;
        pthread_t owner;
        sqlite3_stmt *list;         /* image.list's, prepared on first use */
        sqlite3_stmt *data_version; /* PRAGMA data_version, prepared on first use */
        /* image.list's last text in each form, and the data_version it was
         * read at: until a commit changes the database, the same list is
         * this text again. One per form, so that a CLI (objects) and an SDK
         * (rows) polling the same daemon do not evict each other. */
        struct {
                char *text;
                size_t len;
                int64_t version;
        } list_kept[_STORE_LIST_FORM_MAX];
};

/* Starts a query scope on the reader's connection; aborts if called from
 * another thread than the one that created the reader. */
void store_reader_query(StoreReader *rd, StoreQuery *ret);

/* ---- shared by the image, pin and gc files ---- */

/* The columns of an ImageHandle, in store_handle_from_row()'s order. */
#define STORE_HANDLE_COLUMNS                                                                             \
        "r.reference, r.manifest_digest, m.architecture, m.os, m.layer_count, m.size_bytes, r.created_at, " \
        "r.last_used_at FROM image_refs r JOIN manifests m ON m.digest = r.manifest_digest "

json_t *store_handle_from_row(sqlite3_stmt *st);

/* Candidates an ambiguous-reference error lists at most. */
#define STORE_AMBIGUOUS_SHOWN 10

/* What a lookup of an ImageSpec found. */
typedef struct StoreLookup {
        json_t *handle;                    /* the ImageHandle */
        char *row;                         /* the reference row a name matched; NULL by digest or pin only */
        bool by_id;                        /* found by manifest digest (or a prefix of it) */
        char digest[DIGEST_STRING_MAX];    /* the manifest */
} StoreLookup;

/* Finds the image spec names: image-not-found, ambiguous-reference (a
 * prefix of several manifests, data.candidates), or 0 with *ret filled. */
int store_lookup(StoreQuery *q, const ImageSpec *spec, StoreLookup *ret, MsbError *err);
void store_lookup_done(StoreLookup *l);
/* Layers of a manifest, bottom to top, as ImageLayerDetail objects, or with
 * rootfs as the Rootfs layer entries (with paths). */
int store_manifest_layers_json(Store *s, StoreQuery *q, const char *manifest_digest, bool rootfs, json_t **ret);

/* Tells the observer of a change; the caller holds the writer lock and has
 * committed. */
void store_emit(Store *s, const StoreEvent *ev);

/* ---- removal (store_gc.c): rows in one transaction, files after it ---- */

typedef struct Reclaim {
        unsigned removed[_CONTENT_KIND_MAX];
        unsigned tmp_removed;
        uint64_t bytes;
} Reclaim;

typedef struct Doomed {
        ContentKind kind;
        char *path;
} Doomed;

/* A reference a removal took out, for its event after the commit. */
typedef struct GcReference {
        char *reference;
        char digest[DIGEST_STRING_MAX];
} GcReference;

typedef struct Gc {
        Doomed *files;
        size_t n_files;
        uint64_t doomed_bytes; /* allocated bytes of the files, counted as they are doomed */
        GcReference *refs;
        size_t n_refs;
        unsigned refs_removed;
        unsigned manifests_removed;
} Gc;

void gc_done(Gc *gc);
/* Records a reference the transaction deleted. */
int gc_note_reference(Gc *gc, const char *reference, const char *digest);
/* Deletes the manifest digest's row when no reference, pin or lease holds
 * it, and the rows of its layers that no other manifest uses; dooms their
 * files. 1 when the manifest went, 0 when something holds it. */
int gc_collect_manifest(Store *s, StoreTx *tx, Gc *gc, const char *digest);
/* Unlinks the doomed files once their rows' removal committed. */
void gc_unlink(Gc *gc, Reclaim *rc);
/* One event of type per reference the removal took out, at `at`. */
void gc_emit(Store *s, const Gc *gc, StoreEventType type, int64_t at);

uint64_t store_stat_allocated(const struct stat *st);
/* Unlinks a content file, counting it and its blocks in rc (may be NULL). */
void store_reclaim_unlink(Reclaim *rc, ContentKind kind, const char *path);
/* The query that tells whether the index names a content file of a kind;
 * ?1 is its digest. */
const char *store_content_indexed_sql(ContentKind kind);
/* Removes files the index does not name and no lease protects, and every
 * unleased temp file. The caller holds tx. */
int store_sweep_files(Store *s, StoreTx *tx, Reclaim *rc);
/* Repairs the index and sweeps at open. */
int store_sweep(Store *s, MsbError *err);
/* Applies the schema migrations on the writer connection. */
int store_migrate(Store *s, MsbError *err);
