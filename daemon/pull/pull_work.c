/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The round trips of a pull to libuv's worker threads: everything that
 * blocks (the store, ingest, the EROFS converter) runs there, and its result
 * comes back on the loop (ARCHITECTURE.md "Threads").
 */
#include <assert.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "pull_internal.h"

/* Worker jobs. Each runs on a worker thread and touches only the store (its
 * own connections) and the op's Ingest, which no loop code touches while a
 * job holds the op (works_in_flight). */

/* A cache hit: mark the reference used, and answer with the handle as it
 * is now, last_used_at included. */
static void work_touch(PullWork *w) {
        json_t *fresh = NULL;

        w->r = store_image_touch(w->manager->store, w->path, &fresh);
        if (w->r >= 0) {
                json_decref(w->result);
                w->result = fresh;
        }
}

/* The ingest of the image, and which of its layers the store has. */
static void work_prepare(PullWork *w) {
        PullOp *op = w->op;

        w->r = ingest_new(w->manager->store, op->manifest_digest, op->manifest, op->manifest_size, op->config,
                          op->config_size, &op->ingest, &w->err);
        if (w->r < 0)
                return;
        ingest_set_event(op->ingest, STORE_EVENT_IMAGE_PULLED);
        ingest_set_started_at(op->ingest, op->started_at_ms);
        w->cached = calloc(ingest_n_layers(op->ingest) + 1, sizeof(bool));
        if (!w->cached) {
                w->r = -ENOMEM;
                return;
        }
        for (size_t i = 0; i < ingest_n_layers(op->ingest); i++)
                w->cached[i] = ingest_layer_cached(op->ingest, i);
}

/* Is a layer that an earlier pull converted still in the store? */
static void work_check(PullWork *w) {
        PullOp *op = w->op;

        w->r = ingest_layer_cached(op->ingest, w->layer) ? 0 : -ENOENT;
        if (w->r >= 0)
                (void) store_layer_lookup(w->manager->store, ingest_layer(op->ingest, w->layer)->diff_id,
                                          &w->size);
}

/* Converts a layer from its downloaded file, or from the pipe a stream
 * feeds. */
static void work_convert(PullWork *w) {
        _cleanup_close_ int fd = w->fd >= 0 ? TAKE_FD(w->fd) : open(w->path, O_RDONLY | O_CLOEXEC);
        PullOp *op = w->op;

        if (fd < 0) {
                w->r = msb_error_from_errno(&w->err, negative_errno(), "cannot open a downloaded layer");
                return;
        }
        /* The download hashed these bytes as they arrived and kept them
         * only when they matched; a stream it feeds ends short otherwise,
         * which the size check catches (pull_stream.c). */
        w->r = ingest_convert_layer(op->ingest, w->layer, fd, INGEST_BLOB_VERIFIED, &w->err);
        if (w->r >= 0)
                (void) store_layer_lookup(w->manager->store, ingest_layer(op->ingest, w->layer)->diff_id,
                                          &w->size);
}

/* Commits the image under its reference; the fsmeta size is for the
 * progress event. */
static void work_commit(PullWork *w) {
        _cleanup_free_ char *fsmeta = NULL;
        PullOp *op = w->op;
        struct stat st;

        w->r = ingest_commit(op->ingest, &op->ref->canonical, 1, &w->result, &w->err);
        if (w->r < 0)
                return;
        fsmeta = store_fsmeta_path(w->manager->store, op->manifest_digest);
        if (fsmeta && stat(fsmeta, &st) >= 0)
                w->size = (uint64_t) st.st_size;
}

static void work_cb(uv_work_t *req) {
        PullWork *w = req->data;

        switch (w->kind) {
        case WORK_LOAD_CURL:
                w->r = curl_lib_load(&w->err);
                return;
        case WORK_TOUCH:
                return work_touch(w);
        case WORK_PREPARE:
                return work_prepare(w);
        case WORK_CHECK:
                return work_check(w);
        case WORK_CONVERT:
                return work_convert(w);
        case WORK_COMMIT:
                return work_commit(w);
        case WORK_ABORT:
                return ingest_abort(w->op->ingest);
        }
}

/* Back on the loop. */

static PullWork *work_free(PullWork *w) {
        safe_close(w->fd);
        msb_error_clear(&w->err);
        json_decref(w->result);
        free(w->cached);
        free(w->path);
        free(w);
        return NULL;
}

/* A job of an op came back: its result moves the op on, unless the pull is
 * over, which it then finishes once no other job holds it. */
static void work_done_for_op(PullWork *w) {
        PullManager *m = w->manager;
        PullOp *op = w->op;

        op->works_in_flight--;
        if (op->failed || m->freeing) {
                /* Drop what a worker made for a pull that is over. */
                if (w->kind == WORK_CONVERT)
                        pull_layer_drop(op, w->layer);
                if (m->freeing && !op->failed)
                        op->failed = true;
                return pull_op_finish(op);
        }
        switch (w->kind) {
        case WORK_LOAD_CURL:
                return pull_op_library_loaded(op, w);
        case WORK_PREPARE:
                return pull_op_prepared(op, w);
        case WORK_CHECK:
                return pull_op_layer_checked(op, w);
        case WORK_CONVERT:
                return pull_op_layer_converted(op, w);
        case WORK_COMMIT:
                return pull_op_committed(op, w);
        default:
                assert(false);
        }
}

static void after_work_cb(uv_work_t *req, int status) {
        PullWork *w = req->data;
        PullManager *m = w->manager;

        m->works_in_flight--;
        if (w->streamed)
                m->n_streams--;
        m->busy++;
        if (status < 0 && w->r >= 0)
                w->r = status; /* cancelled */

        if (w->kind == WORK_TOUCH)
                pull_request_answer_from_cache(w->request, w);
        else
                work_done_for_op(w);

        work_free(w);
        m->busy--;
        pull_manager_maybe_release(m);
}

/* Queueing. */

static PullWork *work_new(PullManager *m, PullOp *op, PullWorkKind kind, size_t layer) {
        PullWork *w = calloc(1, sizeof(*w));

        if (!w)
                return NULL;
        *w = (PullWork) {
                .kind = kind,
                .manager = m,
                .op = op,
                .layer = layer,
                .fd = -EBADF,
        };
        w->req.data = w;
        return w;
}

/* Hands w to a worker; the loop gets it back in after_work_cb(). The
 * counts keep the op and the manager alive until then. */
static int work_submit(PullWork *w) {
        int r = uv_queue_work(w->manager->loop, &w->req, work_cb, after_work_cb);

        if (r < 0)
                return r;
        w->manager->works_in_flight++;
        if (w->op)
                w->op->works_in_flight++;
        return 0;
}

int pull_work_queue(PullManager *m, PullOp *op, PullWorkKind kind, size_t layer, const char *path,
                    PullRequest *request, json_t *handle) {
        PullWork *w = work_new(m, op, kind, layer);
        int r;

        if (!w) {
                json_decref(handle);
                return -ENOMEM;
        }
        w->request = request;
        w->result = handle;
        if (path && !(w->path = strdup(path))) {
                work_free(w);
                return -ENOMEM;
        }
        r = work_submit(w);
        if (r < 0)
                work_free(w);
        return r;
}

int pull_work_queue_fd(PullManager *m, PullOp *op, size_t layer, int fd) {
        PullWork *w = work_new(m, op, WORK_CONVERT, layer);
        int r;

        if (!w)
                return -ENOMEM;
        w->fd = fd;
        w->streamed = true;
        r = work_submit(w);
        if (r < 0) {
                /* fd stays the caller's when this fails. */
                w->fd = -EBADF;
                work_free(w);
                return r;
        }
        m->n_streams++;
        return r;
}
