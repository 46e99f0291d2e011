/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The callers of a pull. Several clients pulling the same reference and
 * platform share one PullOp; each is a PullRequest that hears every
 * progress event and the result. A caller that joins late first hears
 * what it has missed, condensed; one that goes away disturbs nobody, and
 * the last one out abandons the pull.
 *
 * The events are the params of image.pull.progress (proto/openrpc.json);
 * they are built here only, for the callers of a pull and for a replay.
 */
#include "pull_internal.h"

/* Events. */

json_t *pull_event_resolving(const PullOp *op) {
        return json_pack("{s:s, s:s}", "event", "resolving", "reference", op->ref->canonical);
}

json_t *pull_event_resolved(const PullOp *op) {
        uint64_t total = 0;

        for (size_t i = 0; i < op->n_layers; i++)
                total += ingest_layer(op->ingest, i)->size;
        return json_pack("{s:s, s:s, s:I, s:I}", "event", "resolved", "manifest_digest", op->manifest_digest,
                         "layer_count", (json_int_t) op->n_layers, "total_bytes", (json_int_t) total);
}

json_t *pull_event_layer_cached(const PullOp *op, size_t i) {
        const IngestLayer *il = ingest_layer(op->ingest, i);

        return json_pack("{s:s, s:I, s:s, s:s}", "event", "layer-cached", "position", (json_int_t) i, "digest",
                         il->blob_digest, "diff_id", il->diff_id);
}

json_t *pull_event_layer_download(const PullOp *op, size_t i, uint64_t bytes) {
        const IngestLayer *il = ingest_layer(op->ingest, i);

        return json_pack("{s:s, s:I, s:s, s:I, s:I}", "event", "layer-download", "position", (json_int_t) i,
                         "digest", il->blob_digest, "downloaded_bytes", (json_int_t) bytes, "total_bytes",
                         (json_int_t) il->size);
}

json_t *pull_event_layer_downloaded(const PullOp *op, size_t i) {
        const IngestLayer *il = ingest_layer(op->ingest, i);

        return json_pack("{s:s, s:I, s:s}", "event", "layer-downloaded", "position", (json_int_t) i, "digest",
                         il->blob_digest);
}

json_t *pull_event_layer_converted(const PullOp *op, size_t i) {
        const IngestLayer *il = ingest_layer(op->ingest, i);

        return json_pack("{s:s, s:I, s:s, s:s, s:I}", "event", "layer-converted", "position", (json_int_t) i,
                         "digest", il->blob_digest, "diff_id", il->diff_id, "erofs_size_bytes",
                         (json_int_t) op->layers[i].erofs_size);
}

/* Fan-out. */

void pull_op_emit(PullOp *op, json_t *event) {
        if (!event)
                return;
        for (PullRequest *q = op->requests, *next; q; q = next) {
                next = q->next;
                if (q->progress)
                        q->progress(event, q->userdata);
        }
        json_decref(event);
}

void pull_op_emit_layer_download(PullOp *op, size_t i, uint64_t bytes, bool force) {
        PullLayer *l = &op->layers[i];
        uint64_t now = now_monotonic_ms();

        if (!force && bytes < l->reported_bytes + PULL_PROGRESS_MIN_BYTES &&
            now < l->reported_ms + PULL_PROGRESS_MIN_INTERVAL_MS)
                return;
        if (force && bytes == l->reported_bytes && bytes != 0)
                return;
        l->reported_bytes = bytes;
        l->reported_ms = now;
        pull_op_emit(op, pull_event_layer_download(op, i, bytes));
}

static void request_send(PullRequest *q, json_t *event) {
        if (event && q->progress)
                q->progress(event, q->userdata);
        json_decref(event);
}

/* The events a caller that joins a pull in flight has missed, condensed:
 * each layer's state as of now, in the order the events would have come. */
static void request_replay(PullOp *op, PullRequest *q) {
        request_send(q, pull_event_resolving(op));
        if (!op->layers)
                return;
        request_send(q, pull_event_resolved(op));
        for (size_t i = 0; i < op->n_layers; i++) {
                const PullLayer *l = &op->layers[i];
                bool downloaded = l->download_reported || l->step == LAYER_DONE;

                if (l->cached) {
                        request_send(q, pull_event_layer_cached(op, i));
                        continue;
                }
                if (l->step == LAYER_PENDING || l->step == LAYER_CHECKING)
                        continue;
                request_send(q, pull_event_layer_download(op, i,
                                                          downloaded ? ingest_layer(op->ingest, i)->size
                                                                     : l->reported_bytes));
                if (downloaded)
                        request_send(q, pull_event_layer_downloaded(op, i));
                if (l->step == LAYER_DONE)
                        request_send(q, pull_event_layer_converted(op, i));
        }
}

/* Requests. */

int pull_request_new(PullManager *m, PullProgressFn progress, PullDoneFn done, void *userdata,
                     PullRequest **ret) {
        PullRequest *q = calloc(1, sizeof(*q));

        if (!q)
                return -ENOMEM;
        *q = (PullRequest) {
                .manager = m,
                .progress = progress,
                .done = done,
                .userdata = userdata,
        };
        *ret = q;
        return 0;
}

PullRequest *pull_request_free(PullRequest *q) {
        free(q);
        return NULL;
}

void pull_request_join(PullOp *op, PullRequest *q) {
        q->op = op;
        snprintf(q->tag, sizeof(q->tag), "%s", op->tag);
        q->next = op->requests;
        op->requests = q;
        /* For a pull that has just started, that is "resolving" alone. */
        request_replay(op, q);
}

void pull_request_answer_from_cache(PullRequest *q, PullWork *w) {
        json_t *handle = w->result;

        if (!q->detached && !q->manager->freeing) {
                request_send(q, json_pack("{s:s, s:s}", "event", "resolving", "reference",
                                          json_string_value(json_object_get(handle, "reference")) ?: ""));
                request_send(q, json_pack("{s:s, s:s}", "event", "complete", "manifest_digest",
                                          json_string_value(json_object_get(handle, "manifest_digest")) ?: ""));
                if (json_is_object(handle))
                        q->done(0, NULL, handle, q->userdata);
                else
                        q->done(w->r < 0 ? w->r : -ENOENT, &w->err, NULL, q->userdata);
        }
        pull_request_free(q);
}

void pull_request_detach(PullRequest *q) {
        PullOp *op;

        if (!q)
                return;
        op = q->op;
        if (!op) {
                /* A cache answer on its way: the work item frees it. */
                q->detached = true;
                return;
        }
        for (PullRequest **p = &op->requests; *p; p = &(*p)->next)
                if (*p == q) {
                        *p = q->next;
                        break;
                }
        pull_request_free(q);

        /* Nobody waits any more: stop the pull. */
        if (!op->requests && !op->failed) {
                MsbError err = {};

                op->cancelled = true;
                msb_error_set(&err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN,
                              "the pull of %s was cancelled: every caller gave up on it", op->ref->canonical);
                pull_op_fail(op, -ECANCELED, &err);
                msb_error_clear(&err);
        }
}

void pull_request_cancel(PullRequest *q) {
        PullDoneFn done;
        void *userdata;
        MsbError err = {};
        bool others;

        if (!q || q->detached)
                return;
        done = q->done;
        userdata = q->userdata;
        others = q->op && (q->op->requests != q || q->next);
        log_info("%s: a caller cancelled%s", q->tag,
                 !q->op ? " (its answer from the cache is dropped)"
                 : others ? "; the pull goes on for its other callers" : "");
        /* Detached first: the pull may stop in there, and must not answer
         * this caller a second time. */
        pull_request_detach(q);
        msb_error_set(&err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the pull was cancelled by its caller");
        done(-ECANCELED, &err, NULL, userdata);
        msb_error_clear(&err);
}
