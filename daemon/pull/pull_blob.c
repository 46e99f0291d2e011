/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A blob download shared by every layer, of any pull, with that digest: one
 * temp file, one registry fetch (hashed as bytes arrive), a list of waiting
 * layers that each hear its progress and its end.
 */
#include "pull_internal.h"

void pull_blob_free(PullBlob *j) {
        PullManager *m = j->manager;

        for (PullBlob **p = &m->blobs; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        break;
                }
        registry_fetch_free(j->fetch);
        /* A conversion may still read this file, from a pull that stopped
         * (cancelled, failed, shutting down): cut it to nothing, and the
         * converter reads its end at once instead of converting a layer
         * nobody wants. No layer waits for the blob any more, so nothing
         * else reads it. */
        if (j->fd >= 0 && ftruncate(j->fd, 0) < 0)
                log_debug("cannot cut the download of %s short: %s", j->digest, strerror(errno));
        safe_close(j->fd);
        if (j->tmp_path) {
                store_tmpfile_discard(m->store, j->tmp_path);
                free(j->tmp_path);
        }
        free(j->waiters);
        free(j);
}

static bool blob_has_waiter(const PullBlob *j, const PullOp *op, size_t layer) {
        for (size_t i = 0; i < j->n_waiters; i++)
                if (j->waiters[i].op == op && j->waiters[i].layer == layer)
                        return true;
        return false;
}

void pull_blob_release(PullBlob *j, const PullOp *op, size_t layer) {
        for (size_t i = 0; i < j->n_waiters; i++)
                if (j->waiters[i].op == op && j->waiters[i].layer == layer) {
                        j->waiters[i] = j->waiters[--j->n_waiters];
                        break;
                }
        if (j->n_waiters == 0)
                pull_blob_free(j);
}

/* Bytes arrived: every waiting layer reports them and may start (or feed)
 * a conversion of what has arrived. */
static void blob_progress(RegistryFetch *f, uint64_t bytes, void *userdata) {
        PullBlob *j = userdata;

        j->downloaded = bytes;
        for (size_t k = 0; k < j->n_waiters; k++) {
                pull_op_emit_layer_download(j->waiters[k].op, j->waiters[k].layer, bytes, false);
                pull_op_maybe_stream(j->waiters[k].op);
                pull_stream_feed(j->waiters[k].op, j->waiters[k].layer);
        }
}

/* Copies the waiters first: a failing pull releases its layers, which
 * changes the list (and may free the job). */
static PullBlobWaiter *blob_snapshot(PullBlob *j, size_t *ret_n) {
        PullBlobWaiter *w = calloc(j->n_waiters + 1, sizeof(PullBlobWaiter));

        if (w)
                memcpy(w, j->waiters, j->n_waiters * sizeof(PullBlobWaiter));
        *ret_n = w ? j->n_waiters : 0;
        return w;
}

static bool blob_is_live(const PullManager *m, const PullBlob *j) {
        for (PullBlob *b = m->blobs; b; b = b->next)
                if (b == j)
                        return true;
        return false;
}

/* The download ended: every layer waiting for it is downloaded, or its
 * pull fails with the download's error. */
static void blob_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        PullBlob *j = userdata;
        PullManager *m = j->manager;
        _cleanup_free_ PullBlobWaiter *w = NULL;
        _cleanup_free_ char *context = NULL;
        MsbError copy = {};
        size_t n;

        /* err lives in f: copy it (and what the log says of its last
         * exchange) before letting f go. */
        if (r >= 0) {
                j->complete = true;
                j->downloaded = j->size;
        } else {
                copy = *err;
                copy.data = json_incref(err->data);
                context = registry_fetch_describe(f);
        }
        j->fetch = registry_fetch_free(f);

        /* Hold the job while we call out: a waiter that fails and releases
         * must not free it under us. */
        w = blob_snapshot(j, &n);
        if (!w) {
                msb_error_clear(&copy);
                return;
        }
        for (size_t k = 0; k < n; k++) {
                if (!pull_manager_has_op(m, w[k].op) || !blob_has_waiter(j, w[k].op, w[k].layer))
                        continue;
                if (r >= 0)
                        pull_layer_downloaded(w[k].op, w[k].layer);
                else
                        pull_op_fail_fetch(w[k].op, context, r, &copy);
                /* The last waiter may have released and freed the job. */
                if (!blob_is_live(m, j))
                        break;
        }
        msb_error_clear(&copy);
}

PullBlob *pull_blob_find(PullManager *m, const char *digest) {
        for (PullBlob *j = m->blobs; j; j = j->next)
                if (streq(j->digest, digest))
                        return j;
        return NULL;
}

int pull_blob_add_waiter(PullBlob *j, PullOp *op, size_t layer) {
        PullBlobWaiter *w = realloc(j->waiters, (j->n_waiters + 1) * sizeof(PullBlobWaiter));

        if (!w)
                return -ENOMEM;
        j->waiters = w;
        w[j->n_waiters++] = (PullBlobWaiter) { .op = op, .layer = layer };
        return 0;
}

int pull_blob_new(PullManager *m, PullOp *op, const IngestLayer *il, PullBlob **ret, MsbError *err) {
        PullBlob *j;
        RegistryFetchParams p;
        char what[16 + DIGEST_STRING_MAX];
        int r;

        /* A blob that would take the store's filesystem below its floor is
         * not downloaded at all. */
        snprintf(what, sizeof(what), "downloading %s", il->blob_digest);
        r = store_space_check(m->store, il->size, what, NULL, err);
        if (r < 0)
                return r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->manager = m;
        j->fd = -EBADF;
        j->size = il->size;
        snprintf(j->digest, sizeof(j->digest), "%s", il->blob_digest);
        j->next = m->blobs;
        m->blobs = j;

        r = store_tmpfile(m->store, "blob", &j->fd, &j->tmp_path);
        if (r < 0) {
                pull_blob_free(j);
                return msb_error_from_errno(err, r, "cannot create a temporary file for a download");
        }
        p = (RegistryFetchParams) {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .digest = il->blob_digest,
                .size = il->size,
                .fd = j->fd,
                .log_tag = op->tag,
        };
        r = registry_fetch_start(m->registry, &p, blob_progress, blob_done, j, &j->fetch);
        if (r < 0) {
                pull_blob_free(j);
                return msb_error_set(err, r, PROTO_ERROR_INTERNAL_ERROR, "cannot start downloading %s: %s",
                                     il->blob_digest, strerror(-r));
        }
        *ret = j;
        return 0;
}
