/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The store: one directory owned by one daemon (flock on STORE/lock), an
 * SQLite index in WAL mode (STORE/index.db) and content-addressed files:
 *
 *   blobs/sha256/<hex>            manifests and configs, as received
 *   layers/sha256/<hex>.erofs     one EROFS image per layer, keyed by diff_id
 *   fsmeta/sha256/<hex>.erofs     merged metadata image per manifest
 *   vmdk/sha256/<hex>.vmdk        VMDK descriptor per manifest
 *   tmp/                          files being written; swept at start
 *
 * A file becomes visible only complete (temp file, fsync, rename, fsync the
 * directory) and before the index row that names it commits, so the index
 * never names a missing file; the sweep at start (and prune) deletes files
 * without rows. Only this module touches SQLite.
 *
 * Threads (ARCHITECTURE.md "Threads"): a Store is shared by every thread;
 * each call that touches the index takes the writer connection for its
 * whole length, so calls on a Store are serialised (worker threads). The
 * loop thread reads through a StoreReader of its own instead (WAL readers
 * never wait for the writer): only the thread that created a reader may use
 * it, and the store_reader_* functions are the only ones that take one.
 */

#include <jansson.h>
#include <sys/types.h>

#include "error.h"
#include "reference.h"

typedef struct Store Store;
typedef struct StoreReader StoreReader;

#define STORE_SCHEMA_VERSION 1

typedef struct StoreLayer {
        char *blob_digest;
        char *diff_id;
        char *media_type;
        uint64_t compressed_size;
} StoreLayer;

/*
 * What changes in the store, as events.subscribe reports it (README
 * "Events"): one event per reference stored, removed, pruned or evicted,
 * and per pin added or removed.
 */
typedef enum StoreEventType {
        STORE_EVENT_IMAGE_LOADED,
        STORE_EVENT_IMAGE_PULLED,
        STORE_EVENT_IMAGE_REMOVED,
        STORE_EVENT_IMAGE_PRUNED,
        STORE_EVENT_IMAGE_EVICTED,
        STORE_EVENT_PIN_ADDED,
        STORE_EVENT_PIN_REMOVED,
        _STORE_EVENT_TYPE_MAX,
} StoreEventType;

/* "image.loaded", ...: the type as the protocol spells it. */
const char *store_event_type_name(StoreEventType type);

typedef struct StoreEvent {
        StoreEventType type;
        const char *reference;       /* canonical; NULL for a manifest no reference named any more */
        const char *manifest_digest;
        int64_t at;                  /* ms since the epoch */
        const char *pin_kind;        /* pin events: the pin's kind and name; NULL otherwise */
        const char *pin_name;
} StoreEvent;

/*
 * A disk budget (README "Configuration"): after a load or pull commits,
 * while the store's allocated bytes (system.df's total_bytes) exceed
 * max_bytes, unpinned images are evicted, least recently used first, until
 * at most low_bytes are left. max_bytes 0: no budget.
 */
typedef struct StoreBudget {
        uint64_t max_bytes;
        uint64_t low_bytes;
        /* The floor (README "Free space kept"): loads and pulls never take
         * the store's filesystem below this many free bytes; 0: no floor;
         * STORE_KEEP_FREE_DEFAULT: the default, resolved against the
         * filesystem's size when checked (store_keep_free_bytes). */
        uint64_t keep_free_bytes;
} StoreBudget;

/* low_bytes when the configuration gives none: this share of max_bytes, in percent. */
#define STORE_BUDGET_LOW_DEFAULT_PERCENT 90

/* keep_free_bytes when the configuration gives none: this share of the
 * filesystem's size, at most STORE_KEEP_FREE_DEFAULT_MAX_BYTES (the
 * defaults of journald's SystemKeepFree=, which guards the same disks). */
#define STORE_KEEP_FREE_DEFAULT UINT64_MAX
#define STORE_KEEP_FREE_DEFAULT_PERCENT 15
#define STORE_KEEP_FREE_DEFAULT_MAX_BYTES (4ULL << 30)

/* What one eviction round did, for the log. */
typedef struct StoreBudgetReport {
        StoreBudget budget;
        uint64_t bytes_before;  /* allocated when the round started */
        uint64_t bytes_after;   /* allocated when it ended */
        unsigned images_evicted; /* references */
        unsigned manifests_evicted;
        bool met;               /* bytes_after <= max_bytes */
} StoreBudgetReport;

/*
 * Who hears of changes (the daemon, which hands events to subscribers and
 * logs eviction rounds). event() is called on the thread that made the
 * change, after its transaction committed and before the store's writer
 * lock is released, so the calls come in the order the changes were made;
 * it must be quick and must not call into the store. budget() is called
 * after each eviction round that had something to do.
 */
typedef struct StoreObserver {
        void (*event)(const StoreEvent *ev, void *userdata);
        void (*budget)(const StoreBudgetReport *report, void *userdata);
        void *userdata;
} StoreObserver;

/* Everything the index records about a manifest being committed. */
typedef struct StoreManifest {
        char *digest;
        char *media_type;
        uint64_t size;
        char *config_digest;
        uint64_t config_size;
        char *architecture;
        char *os;
        char *variant;
        StoreLayer *layers;
        size_t n_layers;
        uint64_t fsmeta_size;
        uint64_t vmdk_size;
        /* What the commit announces for each reference: image.loaded (the
         * zero value) or image.pulled. */
        StoreEventType event;
} StoreManifest;

/* Opens (creating if needed) the store at path: takes the lock, opens and
 * migrates the index, sweeps what a crash left. -EBUSY with a message naming
 * the holder's pid when another process holds the store. */
int store_open(const char *path, Store **ret, MsbError *err);
Store *store_free(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_free);

/* A read connection for the calling thread (the loop); freed before the store. */
int store_reader_new(Store *s, StoreReader **ret);
StoreReader *store_reader_free(StoreReader *rd);
DEFINE_TRIVIAL_CLEANUP_FUNC(StoreReader *, store_reader_free);

const char *store_path(const Store *s);
const char *store_tmp_dir(const Store *s);

/* Absolute paths of content files; NULL on OOM. Caller frees. */
char *store_blob_path(const Store *s, const char *digest);
char *store_layer_path(const Store *s, const char *diff_id);
char *store_fsmeta_path(const Store *s, const char *manifest_digest);
char *store_vmdk_path(const Store *s, const char *manifest_digest);

/*
 * Leases protect content that work in flight is writing or about to commit
 * (digests, diff_ids, temp file names) from prune, remove and the sweep.
 * Counted: every acquire needs one release. Thread-safe.
 */
int store_lease_acquire(Store *s, const char *key);
void store_lease_release(Store *s, const char *key);

/* Creates an empty temp file under tmp/ (leased by its name). */
int store_tmpfile(Store *s, const char *purpose, int *ret_fd, char **ret_path);
/* Drops a temp file: unlinks it and releases its lease. */
void store_tmpfile_discard(Store *s, const char *tmp_path);
/* fsyncs fd, renames tmp_path to final_path, fsyncs the directory and
 * releases the temp file's lease. */
int store_tmpfile_publish(Store *s, int fd, const char *tmp_path, const char *final_path);

/* Writes data to a content file at final_path unless it already exists. */
int store_write_file(Store *s, const char *final_path, const void *data, size_t size);

/*
 * Layers. store_layer_lookup: 1 and the EROFS size when a converted layer is
 * indexed and its file present, 0 when not. store_layer_add: records a
 * converted layer whose file is already published. Worker threads.
 */
int store_layer_lookup(Store *s, const char *diff_id, uint64_t *ret_erofs_size);
int store_layer_add(Store *s, const char *diff_id, uint64_t erofs_size);

/* One image of a commit: a manifest whose files are all published, and the
 * canonical references to point at it. */
typedef struct StoreImageCommit {
        const StoreManifest *manifest;
        char *const *references;
        size_t n_references;
} StoreImageCommit;

/* Commits every image, in one transaction: all of them or none (a load of
 * a multi-image source fails whole). Appends to handles (when non-NULL) the
 * ImageHandle of each reference, in order. Worker thread. */
int store_images_commit(Store *s, const StoreImageCommit *images, size_t n_images, json_t *handles,
                        MsbError *err);

/*
 * What an import published and did not commit: for store_discard(), which
 * takes it back out so that a failed load or pull leaves the store as it
 * found it.
 */
typedef struct StoreDiscard {
        const char *blobs[2];      /* manifest and config blobs it wrote; NULL when not */
        const char *rootfs;        /* the manifest whose fsmeta and VMDK it wrote, or NULL */
        const char *const *layers; /* diff_ids of the layers it converted and indexed */
        size_t n_layers;
} StoreDiscard;

/* Removes each item of d (row and file) that no committed row uses and no
 * lease but the caller's own protects: another import in flight that
 * found it keeps it. Best effort: what stays is swept later. Worker thread. */
void store_discard(Store *s, const StoreDiscard *d);

/* Commits a manifest (whose files are all published) and points each
 * canonical reference at it, in one transaction. Worker thread. */
int store_image_commit(Store *s, const StoreManifest *m, char *const *references, size_t n_references,
                       MsbError *err);
/* The same, and appends to handles (when non-NULL) the ImageHandle of each
 * reference as committed, read inside the same transaction, so a removal on
 * another connection cannot come between the commit and its answer. */
int store_image_commit_with_handles(Store *s, const StoreManifest *m, char *const *references,
                                    size_t n_references, json_t *handles, MsbError *err);

/* A pull found canonical_reference cached: marks the reference it names
 * used now and announces image.pulled. *ret_handle (may be NULL) gets the
 * image's handle as the same transaction leaves it, last_used_at included.
 * Worker thread. */
int store_image_touch(Store *s, const char *canonical_reference, json_t **ret_handle);

/* The ImageHandle of a reference (any spelling already parsed). */
int store_image_get(Store *s, const ImageSpec *spec, json_t **ret, MsbError *err);
int store_reader_image_get(StoreReader *rd, const ImageSpec *spec, json_t **ret, MsbError *err);
int store_image_list(Store *s, json_t **ret, MsbError *err);
/* The same list as JSON text, written without a jansson tree: for 10,000
 * references several times faster. STORE_LIST_ROWS writes image.list's
 * {rows: true} form, {"columns": [names], "rows": [[values], ...]}: a
 * third fewer bytes, and a client decodes arrays faster than objects. */
typedef enum StoreListForm {
        STORE_LIST_OBJECTS,
        STORE_LIST_ROWS,
        _STORE_LIST_FORM_MAX,
} StoreListForm;
int store_reader_image_list_text(StoreReader *rd, StoreListForm form, char **ret, MsbError *err);
int store_image_inspect(Store *s, const ImageSpec *spec, json_t **ret, MsbError *err);
/* Removes the reference spec names; by digest, every reference of that
 * manifest (docker rmi <id>). image-in-use while pins hold it, unless force. */
int store_image_remove(Store *s, const ImageSpec *spec, bool force, MsbError *err);
/* image.prune. With unused_for_ms >= 0, only references whose last_used_at
 * is older than that are candidates; STORE_PRUNE_ALL: every reference. */
#define STORE_PRUNE_ALL INT64_C(-1)
int store_image_prune(Store *s, int64_t unused_for_ms, json_t **ret_report, MsbError *err);

int store_pin_add(Store *s, const char *kind, const char *name, const ImageSpec *spec, json_t **ret_rootfs,
                  MsbError *err);
int store_pin_remove(Store *s, const char *kind, const char *name, MsbError *err);
int store_pin_list(Store *s, json_t **ret, MsbError *err);
int store_reader_pin_list(StoreReader *rd, json_t **ret, MsbError *err);

int store_df(Store *s, json_t **ret, MsbError *err);

/* Tells the store who hears of its changes; NULL: nobody. Call it before
 * any worker uses the store. */
void store_set_observer(Store *s, const StoreObserver *o);

/* Reads the "store" section of the daemon's configuration ({"max_bytes",
 * "low_bytes", "keep_free_bytes"}); no section: no budget, the default
 * floor. -EINVAL with err naming the field that is wrong. */
int store_budget_parse(const json_t *config, StoreBudget *ret, MsbError *err);
/* Sets the budget the next eviction rounds enforce (at start, and when
 * SIGHUP re-reads the configuration). Thread-safe. */
void store_set_budget(Store *s, const StoreBudget *budget);
StoreBudget store_get_budget(Store *s);
/* The floor in bytes for the store's filesystem as it is now: the
 * configured keep_free_bytes, or the default resolved against the
 * filesystem's size. Thread-safe. */
int store_keep_free_bytes(Store *s, uint64_t *ret);
/* Before writing `bytes` more into the store (a download, an unpacked
 * archive member, a layer image as it grows: 0 then, only the floor):
 * -ENOSPC with err (store-error, data free_bytes and keep_free_bytes) when
 * the filesystem would be left with less than the floor free;
 * *ret_keep_free (may be NULL) gets the floor it checked against (0 when
 * unknown or off). One statvfs(2); thread-safe. */
int store_space_check(Store *s, uint64_t bytes, const char *what, uint64_t *ret_keep_free, MsbError *err);
/* The store's allocated bytes as system.df's total_bytes counts them. */
int store_allocated_bytes(Store *s, uint64_t *ret);
/*
 * The round that follows a commit: while the store is over its budget,
 * evicts unpinned images least recently used first, never one whose
 * manifest a lease holds (a load or pull in flight) and never one used at
 * or after protect_used_since_ms (the commit's own image and those of the
 * commits that ran beside it). Rounds run one at a time. Worker thread.
 */
int store_budget_enforce(Store *s, int64_t protect_used_since_ms);

/* Asks work in flight (loads, pulls) to abandon at its next step, for a
 * shutdown; what it wrote stays in tmp/ for the next sweep. Thread-safe. */
void store_cancel(Store *s);
bool store_cancelled(const Store *s);

/* What the sweep at open removed or repaired, for the log. */
typedef struct StoreSweepStats {
        unsigned tmp_removed;
        unsigned files_removed;
        unsigned rows_dropped;
} StoreSweepStats;
const StoreSweepStats *store_sweep_stats(const Store *s);
