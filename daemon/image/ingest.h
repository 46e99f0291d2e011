/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The common path by which an image enters the store, for image.load and
 * image.pull alike: a verified manifest and config, then each layer blob
 * converted to EROFS once (shared by every image that uses it), then fsmeta
 * and the VMDK, then one index transaction. Everything here blocks: call it
 * on a worker thread.
 *
 * While an Ingest lives it holds leases on everything it wrote or reuses, so
 * a concurrent prune or remove never deletes them before the commit.
 */

#include <jansson.h>

#include "error.h"
#include "oci.h"
#include "store.h"

typedef struct Ingest Ingest;

typedef struct IngestLayer {
        const char *blob_digest;
        const char *diff_id;
        const char *media_type;
        uint64_t size;
} IngestLayer;

/*
 * Starts importing the manifest whose bytes (already verified against
 * manifest_digest by the caller) and config bytes are given. Checks the
 * config's digest and size against the manifest, that the config names one
 * diff_id per layer, and the limits.
 */
int ingest_new(Store *store, const char *manifest_digest, const void *manifest, size_t manifest_size,
               const void *config, size_t config_size, Ingest **ret, MsbError *err);
Ingest *ingest_free(Ingest *in);
DEFINE_TRIVIAL_CLEANUP_FUNC(Ingest *, ingest_free);

/* What the commit announces to events subscribers: image.loaded (the
 * default) or image.pulled. */
void ingest_set_event(Ingest *in, StoreEventType event);

/* When the import began, if before ingest_new() (a pull resolves its
 * manifest first): images used since are spared by the eviction after its
 * commit, so imports that ran side by side never evict each other. */
void ingest_set_started_at(Ingest *in, int64_t started_at_ms);

/* The manifest's config descriptor (its digest and size), for callers that fetch it. */
size_t ingest_n_layers(const Ingest *in);
const IngestLayer *ingest_layer(const Ingest *in, size_t i);

/* True when layer i is already converted in the store (and now leased). */
bool ingest_layer_cached(Ingest *in, size_t i);

/* Who has checked a layer blob's digest before its conversion reads it. */
typedef enum IngestBlobCheck {
        INGEST_BLOB_UNCHECKED, /* the conversion hashes the blob and compares (a load) */
        INGEST_BLOB_VERIFIED,  /* the caller did, on the same bytes (a pull, as they arrived; a
                                * stream it feeds ends short unless they matched) */
} IngestBlobCheck;

/*
 * Converts layer i from blob_fd (positioned anywhere; read from offset 0),
 * checking the blob's size and the diff_id as bytes pass, and the blob's
 * digest unless INGEST_BLOB_VERIFIED. When another ingest converts the same
 * diff_id at the same time, waits for it and reuses its result.
 */
int ingest_convert_layer(Ingest *in, size_t i, int blob_fd, IngestBlobCheck check, MsbError *err);

/* Writes the manifest and config blobs, fsmeta and the VMDK, and commits
 * the image under the canonical references. On failure what it published
 * stays until ingest_abort(). *ret_handle (may be NULL) gets the
 * ImageHandle of the first reference. Then, while the store is over its
 * disk budget, evicts images used before this ingest started
 * (store_budget_enforce), never this one. */
int ingest_commit(Ingest *in, char *const *references, size_t n_references, json_t **ret_handle, MsbError *err);
/* The same, appending to handles the ImageHandle of every reference, as
 * committed. */
int ingest_commit_handles(Ingest *in, char *const *references, size_t n_references, json_t *handles,
                          MsbError *err);

/* One image of ingest_commit_many(). */
typedef struct IngestCommit {
        Ingest *ingest;
        char *const *references;
        size_t n_references;
} IngestCommit;

/* Commits several images in one index transaction, all or none, appending
 * the ImageHandle of every reference, in order, to handles. */
int ingest_commit_many(const IngestCommit *images, size_t n_images, json_t *handles, MsbError *err);

/*
 * Takes back what the ingest published and did not commit: the layers it
 * converted (rows and files), the blobs, fsmeta and VMDK it wrote, each
 * unless a committed image or another import in flight uses it. So a load
 * or pull that fails leaves the store as it found it. Blocking (the
 * store): a worker thread, before ingest_free(). A no-op after a commit.
 */
void ingest_abort(Ingest *in);
