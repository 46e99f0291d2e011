/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state machine of one pull (OpStep): resolving, config, preparing on a
 * worker, layers (downloads and conversions, pumped as each one moves),
 * committing, finished. A failure at any step stops what is on the network
 * and, once no worker holds the op, answers every caller.
 */
#include <assert.h>

#include "pull_internal.h"

/* Lifetime. */

static void op_unlink(PullOp *op) {
        for (PullOp **p = &op->manager->ops; *p; p = &(*p)->next)
                if (*p == op) {
                        *p = op->next;
                        break;
                }
}

int pull_op_new(PullManager *m, const Reference *ref, char **key, OciPlatform *want, PullOp **ret,
                MsbError *err) {
        PullOp *op = calloc(1, sizeof(*op));
        int r;

        if (!op)
                return -ENOMEM;
        op->manager = m;
        pull_manager_new_tag(m, op->tag);
        op->started_ms = now_monotonic_ms();
        op->started_at_ms = now_ms();
        op->key = TAKE_PTR(*key);
        op->want = *want;
        *want = (OciPlatform) {};
        op->expected_size = UINT64_MAX;
        op->next = m->ops;
        m->ops = op;

        r = reference_parse(ref->canonical, &op->ref, NULL);
        if (r < 0) {
                pull_op_free(op);
                return msb_error_set(err, r, PROTO_ERROR_INVALID_REFERENCE, "invalid reference %s", ref->canonical);
        }
        log_info("%s %s: pulling for %s/%s%s%s", op->tag, op->ref->canonical, op->want.os, op->want.architecture,
                 op->want.variant ? "/" : "", op->want.variant ?: "");
        r = curl_lib_loaded(err);
        if (r < 0) {
                pull_op_free(op);
                return r;
        }
        if (r == 0) {
                /* The daemon's first pull: libcurl is mapped on a worker. */
                op->step = OP_LIBRARY;
                r = pull_work_queue(m, op, WORK_LOAD_CURL, 0, NULL, NULL, NULL);
        } else
                r = pull_op_start(op);
        if (r < 0) {
                pull_op_free(op);
                return msb_error_set(err, r, r == -EINVAL ? PROTO_ERROR_INVALID_REFERENCE : PROTO_ERROR_INTERNAL_ERROR,
                                     "cannot pull %s: %s", ref->canonical, strerror(-r));
        }
        *ret = op;
        return 0;
}

void pull_op_library_loaded(PullOp *op, PullWork *w) {
        int r;

        if (w->r < 0)
                return pull_op_fail(op, w->r, &w->err);
        r = pull_op_start(op);
        if (r < 0)
                pull_op_fail_errno(op, r, "manifest");
}

void pull_layer_drop(PullOp *op, size_t i) {
        PullLayer *l = &op->layers[i];
        PullBlob *j = l->job;

        pull_stream_close(l);
        l->job = NULL;
        if (j)
                pull_blob_release(j, op, i);
}

void pull_op_drop_transfers(PullOp *op) {
        op->helper = credential_helper_cancel(op->helper);
        op->fetch = registry_fetch_free(op->fetch);
        for (size_t i = 0; i < op->n_layers; i++)
                pull_layer_drop(op, i);
}

void pull_op_free(PullOp *op) {
        op_unlink(op);
        pull_op_drop_transfers(op);
        while (op->requests) {
                PullRequest *q = op->requests;
                op->requests = q->next;
                pull_request_free(q);
        }
        ingest_free(op->ingest);
        oci_manifest_free(op->parsed);
        oci_platform_done(&op->want);
        reference_free(op->ref);
        msb_error_clear(&op->err);
        free(op->fail_context);
        json_decref(op->handle);
        free(op->layers);
        free(op->manifest);
        free(op->config);
        free(op->key);
        free(op);
}

void pull_op_finish(PullOp *op) {
        PullManager *m = op->manager;
        PullRequest *q;

        /* A worker job still holds the op, or pull_op_pump() runs further
         * up the stack and reads it after this returns: they finish it. */
        if (op->works_in_flight > 0 || op->pumping)
                return;
        /* A failed pull first takes back, on a worker, the layers and files
         * its ingest published, so that its callers hear of the failure
         * with the store as it was. Not at shutdown: the sweep at the next
         * start and prune see to what stays then. */
        if (op->failed && op->ingest && !op->ingest_aborted && !m->freeing) {
                op->ingest_aborted = true;
                if (pull_work_queue(m, op, WORK_ABORT, 0, NULL, NULL, NULL) >= 0)
                        return;
        }
        op->step = OP_FINISHED;
        /* Unlink first so a caller's callback cannot reach this op. */
        op_unlink(op);
        op->next = NULL;

        while ((q = op->requests)) {
                op->requests = q->next;
                if (!m->freeing) {
                        if (op->failed)
                                q->done(op->error, &op->err, NULL, q->userdata);
                        else
                                q->done(0, NULL, op->handle, q->userdata);
                }
                pull_request_free(q);
        }
        /* pull_op_free unlinks again harmlessly: it is no longer in the list. */
        pull_op_free(op);
        pull_manager_maybe_release(m);
}

/* One line a user can debug with: what was pulled, from where, and what
 * went wrong; a pull stopped by its callers or by the shutdown is no
 * failure of the registry's or ours. */
static void op_log_failure(const PullOp *op) {
        uint64_t ms = now_monotonic_ms() - op->started_ms;

        if (op->cancelled) {
                log_info("%s %s: cancelled after %" PRIu64 " ms: nobody waits for it any more; its transfers stop "
                         "and its temporary files go",
                         op->tag, op->ref->canonical, ms);
                return;
        }
        if (op->err.kind == PROTO_ERROR_SHUTTING_DOWN) {
                log_info("%s %s: abandoned: %s", op->tag, op->ref->canonical, op->err.message);
                return;
        }
        log_warning("%s %s: failed after %" PRIu64 " ms, registry %s: %s%s%s%s", op->tag, op->ref->canonical, ms,
                    op->ref->domain, op->err.message, op->fail_context ? " (last exchange: " : "",
                    op->fail_context ?: "", op->fail_context ? ")" : "");
}

void pull_op_fail(PullOp *op, int r, const MsbError *err) {
        if (op->failed || op->step == OP_FINISHED)
                return;
        op->failed = true;
        op->error = r < 0 ? r : -EIO;
        if (err && err->set) {
                op->err = *err;
                op->err.data = json_incref(err->data);
        } else
                msb_error_set(&op->err, op->error, PROTO_ERROR_INTERNAL_ERROR, "pull of %s failed: %s",
                              op->ref->canonical, strerror(-op->error));

        op_log_failure(op);

        /* Stop everything that is on the network; workers finish on their
         * own (a streaming converter sees EOF, one reading a dropped
         * download's file its end). */
        pull_op_drop_transfers(op);
        pull_op_finish(op);
}

void pull_op_fail_fetch(PullOp *op, const char *context, int r, const MsbError *err) {
        if (op->failed || op->step == OP_FINISHED)
                return;
        free(op->fail_context);
        op->fail_context = context ? strdup(context) : NULL;
        pull_op_fail(op, r, err);
}

void pull_op_fail_fetch_of(PullOp *op, const RegistryFetch *f, int r, const MsbError *err) {
        _cleanup_free_ char *context = registry_fetch_describe(f);

        pull_op_fail_fetch(op, context, r, err);
}

void pull_op_fail_errno(PullOp *op, int r, const char *what) {
        MsbError err = {};

        msb_error_set(&err, r, PROTO_ERROR_INTERNAL_ERROR, "%s: %s", what, strerror(-r));
        pull_op_fail(op, r, &err);
        msb_error_clear(&err);
}

/* Layers. */

/* The last layer-download event of layer i (all bytes): its download no
 * longer counts against the per-pull bound. */
static void layer_download_complete(PullOp *op, size_t i) {
        pull_op_emit_layer_download(op, i, ingest_layer(op->ingest, i)->size, true);
        op->n_downloading--;
        op->layers[i].download_reported = true;
}

void pull_layer_downloaded(PullOp *op, size_t i) {
        PullLayer *l = &op->layers[i];

        if (l->step != LAYER_DOWNLOADING || l->download_reported)
                return;
        pull_stream_feed(op, i);
        layer_download_complete(op, i);
        /* A streaming conversion already has the bytes. */
        l->step = l->streaming ? LAYER_CONVERTING : LAYER_DOWNLOADED;
        pull_op_emit(op, pull_event_layer_downloaded(op, i));
        pull_op_pump(op);
}

/* Starts the download of layer i, or joins one in flight. */
static int layer_start_download(PullOp *op, size_t i) {
        PullManager *m = op->manager;
        PullLayer *l = &op->layers[i];
        const IngestLayer *il = ingest_layer(op->ingest, i);
        PullBlob *j = pull_blob_find(m, il->blob_digest);
        MsbError err = {};
        int r;

        if (il->size > PULL_LAYER_MAX_BYTES) {
                msb_error_limit(&err, "layer_uncompressed_bytes", PULL_LAYER_MAX_BYTES,
                                "layer %zu (%s) is larger than %" PRIu64 " bytes", i, il->blob_digest,
                                PULL_LAYER_MAX_BYTES);
                pull_op_fail(op, -EFBIG, &err);
                msb_error_clear(&err);
                return -EFBIG;
        }
        if (j && j->size != il->size) {
                /* The same digest with another size: one descriptor lies;
                 * do not share (the download with the wrong size fails). */
                j = NULL;
        }
        if (!j) {
                r = pull_blob_new(m, op, il, &j, &err);
                if (r < 0) {
                        pull_op_fail(op, r, &err);
                        msb_error_clear(&err);
                        return r;
                }
        }
        r = pull_blob_add_waiter(j, op, i);
        if (r < 0) {
                if (j->n_waiters == 0)
                        pull_blob_free(j);
                pull_op_fail_errno(op, r, "download");
                return r;
        }
        l->job = j;
        l->step = LAYER_DOWNLOADING;
        l->download_started_ms = now_monotonic_ms();
        op->n_downloading++;
        pull_op_emit_layer_download(op, i, j->downloaded, true);
        if (j->complete)
                pull_layer_downloaded(op, i);
        return 0;
}

/* Every layer is in: the image is committed on a worker. */
static void op_commit(PullOp *op) {
        int r;

        op->step = OP_COMMITTING;
        r = pull_work_queue(op->manager, op, WORK_COMMIT, 0, NULL, NULL, NULL);
        if (r < 0)
                pull_op_fail_errno(op, r, "commit");
}

static void op_pump_once(PullOp *op);

void pull_op_pump(PullOp *op) {
        /* Starting a download can complete a layer at once (a blob another
         * pull already has), which pumps again: loop instead of recursing. */
        if (op->pumping) {
                op->repump = true;
                return;
        }
        op->pumping = true;
        do {
                op->repump = false;
                op_pump_once(op);
        } while (op->repump && !op->failed);
        op->pumping = false;
        /* A layer that failed in the pump (a descriptor over the size
         * limit, a download that could not start) failed the pull, whose
         * end waited for the pump. */
        if (op->failed)
                pull_op_finish(op);
}

/* Starts downloads up to the per-pull bound. A layer an earlier pull
 * converted is first looked for in the store. */
static void op_start_downloads(PullOp *op) {
        PullManager *m = op->manager;

        for (size_t i = 0; i < op->n_layers && !op->failed; i++) {
                PullLayer *l = &op->layers[i];

                if (l->step != LAYER_PENDING)
                        continue;
                if (pull_manager_converted(m, ingest_layer(op->ingest, i)->diff_id)) {
                        l->step = LAYER_CHECKING;
                        if (pull_work_queue(m, op, WORK_CHECK, i, NULL, NULL, NULL) < 0)
                                l->step = LAYER_PENDING;
                        else
                                continue;
                }
                if (op->n_downloading >= m->config->max_downloads_per_pull)
                        continue;
                (void) layer_start_download(op, i);
        }
}

/* Hands the first downloaded layer to the converter. Conversions of one
 * image run one at a time: ingest's bookkeeping of one Ingest is not shared
 * between threads; other images convert in parallel, and downloads
 * continue meanwhile. */
static int op_start_conversion(PullOp *op) {
        if (op->converting)
                return 0;
        for (size_t i = 0; i < op->n_layers; i++) {
                PullLayer *l = &op->layers[i];

                if (l->step != LAYER_DOWNLOADED)
                        continue;
                if (pull_work_queue(op->manager, op, WORK_CONVERT, i, l->job->tmp_path, NULL, NULL) < 0) {
                        /* The op may be gone after this: touch it no more. */
                        pull_op_fail_errno(op, -ENOMEM, "convert");
                        return -ENOMEM;
                }
                l->step = LAYER_CONVERTING;
                op->converting = true;
                return 0;
        }
        return 0;
}

/* Moves layers on: starts downloads, hands a downloaded layer to the
 * converter (or else a download, as it arrives), commits when all are in. */
static void op_pump_once(PullOp *op) {
        bool all_done = true;

        if (op->failed || op->step != OP_LAYERS)
                return;
        op_start_downloads(op);
        if (op->failed)
                return;
        if (op_start_conversion(op) < 0)
                return;
        pull_op_maybe_stream(op);

        for (size_t i = 0; i < op->n_layers; i++)
                all_done = all_done && op->layers[i].step == LAYER_DONE;
        if (all_done && op->step == OP_LAYERS)
                op_commit(op);
}

/* Worker results. */

/* The ingest is ready and knows which layers the store has: those are
 * done, the others start. */
void pull_op_prepared(PullOp *op, PullWork *w) {
        if (w->r < 0)
                return pull_op_fail(op, w->r, &w->err);

        op->n_layers = ingest_n_layers(op->ingest);
        op->layers = calloc(op->n_layers + 1, sizeof(PullLayer));
        if (!op->layers)
                return pull_op_fail_errno(op, -ENOMEM, "layers");
        pull_op_emit(op, pull_event_resolved(op));
        for (size_t i = 0; i < op->n_layers; i++) {
                if (!w->cached[i])
                        continue;
                op->layers[i].step = LAYER_DONE;
                op->layers[i].cached = true;
                pull_op_emit(op, pull_event_layer_cached(op, i));
        }
        op->step = OP_LAYERS;
        pull_op_pump(op);
}

/* A layer converted by an earlier pull: is it still in the store? */
void pull_op_layer_checked(PullOp *op, PullWork *w) {
        PullLayer *l = &op->layers[w->layer];
        const IngestLayer *il = ingest_layer(op->ingest, w->layer);

        if (w->r < 0) {
                /* Gone since (pruned): download it after all. */
                l->step = LAYER_PENDING;
                pull_manager_forget_converted(op->manager, il->diff_id);
        } else {
                l->step = LAYER_DONE;
                l->cached = true;
                pull_op_emit(op, pull_event_layer_cached(op, w->layer));
        }
        pull_op_pump(op);
}

/* A conversion ended. One that read a pipe may fail for reasons of the
 * stream alone; the layer is then converted again from the file. */
void pull_op_layer_converted(PullOp *op, PullWork *w) {
        PullLayer *l = &op->layers[w->layer];
        bool streamed = l->streaming;

        op->converting = false;
        l->streaming = false;
        pull_stream_close(l);

        if (w->r < 0 && streamed) {
                /* Convert from the complete file instead; if the layer is
                 * really bad, that says so with the download's verdict. */
                l->stream_failed = true;
                log_debug("%s layer %zu: its conversion on the way failed (%s); converting it from the "
                          "complete download instead",
                          op->tag, w->layer, w->err.set ? w->err.message : strerror(-w->r));
                if (l->step == LAYER_CONVERTING)
                        l->step = LAYER_DOWNLOADED;
                pull_op_pump(op);
                return;
        }
        if (w->r >= 0 && l->step == LAYER_DOWNLOADING) {
                /* The layer is in the store before its download is done:
                 * another pull converted it while this one's converter
                 * waited for it (ingest_convert_layer), without reading
                 * the pipe. The download counts as complete here. */
                layer_download_complete(op, w->layer);
                pull_op_emit(op, pull_event_layer_downloaded(op, w->layer));
        }

        pull_layer_drop(op, w->layer);
        if (w->r < 0)
                return pull_op_fail(op, w->r, &w->err);

        l->step = LAYER_DONE;
        l->erofs_size = w->size;
        pull_manager_remember_converted(op->manager, ingest_layer(op->ingest, w->layer)->diff_id);
        pull_op_emit(op, pull_event_layer_converted(op, w->layer));
        pull_op_pump(op);
}

void pull_op_committed(PullOp *op, PullWork *w) {
        if (w->r < 0)
                return pull_op_fail(op, w->r, &w->err);
        op->handle = TAKE_PTR(w->result);
        log_info("%s %s: pulled %s in %" PRIu64 " ms", op->tag, op->ref->canonical, op->manifest_digest,
                 now_monotonic_ms() - op->started_ms);
        pull_op_emit(op, json_pack("{s:s, s:I}", "event", "fsmeta", "size_bytes", (json_int_t) w->size));
        pull_op_emit(op, json_pack("{s:s}", "event", "vmdk"));
        pull_op_emit(op, json_pack("{s:s, s:s}", "event", "complete", "manifest_digest", op->manifest_digest));
        pull_op_finish(op);
}
