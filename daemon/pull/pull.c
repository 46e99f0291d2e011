/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "ingest.h"
#include "oci.h"
#include "pull.h"
#include "registry.h"
#include "registry_config.h"

typedef struct PullOp PullOp;
typedef struct BlobJob BlobJob;

typedef enum LayerStep {
        LAYER_PENDING,     /* not started */
        LAYER_CHECKING,    /* converted by an earlier pull: checking the store */
        LAYER_DOWNLOADING, /* waiting on a BlobJob */
        LAYER_DOWNLOADED,  /* blob complete, waiting for the converter */
        LAYER_CONVERTING,
        LAYER_DONE,        /* cached or converted */
} LayerStep;

/*
 * A layer converted while it downloads: the converter reads a pipe on a
 * worker thread, and the loop feeds the pipe from the download's temp file
 * as bytes arrive there (never blocking: a full pipe waits for a uv_poll).
 * The temp file stays the truth: when the stream breaks (the download had
 * to restart, the converter stopped early), the layer is converted again
 * from the complete file.
 */
typedef struct LayerStream {
        uv_poll_t poll;
        int fd;       /* the pipe's write end */
        uint64_t fed; /* bytes of the blob written to the pipe */
        PullOp *op;
        size_t layer;
} LayerStream;

typedef struct PullLayer {
        LayerStep step;
        BlobJob *job; /* held from DOWNLOADING until converted */
        uint64_t reported_bytes;
        uint64_t reported_ms;
        uint64_t erofs_size;  /* once converted */
        bool cached;          /* found in the store, not converted here */
        LayerStream *stream;  /* while feeding a streaming conversion */
        bool streaming;       /* a streaming conversion runs (stream may be closed already) */
        bool stream_failed;   /* it failed: convert from the file instead */
        bool download_reported;
        uint64_t download_started_ms;
} PullLayer;

typedef enum OpStep {
        OP_RESOLVING, /* manifest or index fetches */
        OP_CONFIG,    /* config fetch */
        OP_PREPARING, /* ingest_new and the cache lookups, on a worker */
        OP_LAYERS,    /* downloads and conversions */
        OP_COMMITTING,
        OP_FINISHED,
} OpStep;

struct PullRequest {
        PullManager *manager;
        PullOp *op;                 /* NULL for answers from the cache */
        PullProgressFn progress;
        PullDoneFn done;
        void *userdata;
        bool detached;
        PullRequest *next;          /* in op->requests */
};

struct PullOp {
        PullManager *manager;
        char *key;
        Reference *ref;
        OciPlatform want;
        PullRequest *requests;
        OpStep step;
        RegistryFetch *fetch;
        unsigned index_depth;
        uint64_t expected_size; /* of the document being fetched, when a descriptor gave it */

        char manifest_digest[DIGEST_STRING_MAX];
        char *manifest;
        size_t manifest_size;
        OciManifest *parsed;
        char *config;
        size_t config_size;

        Ingest *ingest;
        PullLayer *layers;
        size_t n_layers;
        unsigned n_downloading;
        bool converting;
        unsigned works_in_flight;
        bool pumping;
        bool repump;

        bool failed;
        int error;
        MsbError err;
        json_t *handle;
        PullOp *next;
};

/* A blob download shared by every layer (of any pull) with that digest. */
typedef struct BlobWaiter {
        PullOp *op;
        size_t layer;
} BlobWaiter;

struct BlobJob {
        PullManager *manager;
        char digest[DIGEST_STRING_MAX];
        uint64_t size;
        int fd;
        char *tmp_path;
        RegistryFetch *fetch;
        bool complete;
        uint64_t downloaded;
        BlobWaiter *waiters;
        size_t n_waiters;
        BlobJob *next;
};

struct PullManager {
        uv_loop_t *loop;
        Store *store;
        StoreReader *reader; /* the loop thread's read connection, for cache hits */
        RegistryConfig *config;
        Registry *registry;
        PullOp *ops;
        BlobJob *blobs;
        char *converted[PULL_CONVERTED_MEMORY];
        size_t converted_next;
        unsigned works_in_flight;
        bool shutting_down;
        bool freeing;
        unsigned busy; /* frames that still use the manager: no release under them */
        char *stream_buf; /* PULL_STREAM_CHUNK_BYTES, for feeding pipes on the loop */
};

typedef enum WorkKind {
        WORK_TOUCH,   /* a cache hit: mark the reference used */
        WORK_PREPARE, /* ingest_new and which layers are cached */
        WORK_CHECK,   /* is a layer converted by an earlier pull still there? */
        WORK_CONVERT,
        WORK_COMMIT,
} WorkKind;

typedef struct Work {
        uv_work_t req;
        WorkKind kind;
        PullManager *manager;
        PullOp *op;
        PullRequest *request; /* WORK_TOUCH */
        size_t layer;
        char *path;           /* WORK_CONVERT: the blob; WORK_TOUCH: the reference */
        int fd;               /* WORK_CONVERT: the pipe to read instead of path, or -1 */
        bool *cached;         /* WORK_PREPARE */
        uint64_t size;
        int r;
        MsbError err;
        json_t *result;
} Work;

static void op_fail(PullOp *op, int r, const MsbError *err);
static void op_pump(PullOp *op);
static void op_maybe_stream(PullOp *op);
static void manager_maybe_release(PullManager *m);

/* Events. */

static void op_emit(PullOp *op, json_t *event) {
        if (!event)
                return;
        for (PullRequest *q = op->requests, *next; q; q = next) {
                next = q->next;
                if (q->progress)
                        q->progress(event, q->userdata);
        }
        json_decref(event);
}

static void op_emit_layer_download(PullOp *op, size_t i, uint64_t bytes, bool force) {
        PullLayer *l = &op->layers[i];
        const IngestLayer *il = ingest_layer(op->ingest, i);
        uint64_t now = now_monotonic_ms();

        if (!force && bytes < l->reported_bytes + PULL_PROGRESS_MIN_BYTES &&
            now < l->reported_ms + PULL_PROGRESS_MIN_INTERVAL_MS)
                return;
        if (force && bytes == l->reported_bytes && bytes != 0)
                return;
        l->reported_bytes = bytes;
        l->reported_ms = now;
        op_emit(op, json_pack("{s:s, s:I, s:s, s:I, s:I}", "event", "layer-download", "position", (json_int_t) i,
                              "digest", il->blob_digest, "downloaded_bytes", (json_int_t) bytes, "total_bytes",
                              (json_int_t) il->size));
}

/* Streams. */

static void stream_close_cb(uv_handle_t *h) {
        free(h->data);
}

/* Ends the feed: EOF for the converter (after everything, or early, which
 * it reports as a truncated layer). */
static void layer_stream_close(PullLayer *l) {
        LayerStream *st = l->stream;

        if (!st)
                return;
        l->stream = NULL;
        st->fd = safe_close(st->fd);
        uv_close((uv_handle_t *) &st->poll, stream_close_cb);
}

static void layer_stream_feed(PullOp *op, size_t i);

static void stream_poll_cb(uv_poll_t *h, int status, int events) {
        LayerStream *st = h->data;

        uv_poll_stop(h);
        layer_stream_feed(st->op, st->layer);
}

/* Copies what the download has written so far from the temp file into the
 * pipe, until the pipe is full (then waits to be told it is writable). */
static void layer_stream_feed(PullOp *op, size_t i) {
        PullLayer *l = &op->layers[i];
        LayerStream *st = l->stream;
        BlobJob *j = l->job;
        char *buf = op->manager->stream_buf;

        if (!st || !j)
                return;
        if (j->downloaded < st->fed) {
                /* The download started over: what was fed is void. */
                layer_stream_close(l);
                return;
        }
        if (uv_is_active((uv_handle_t *) &st->poll))
                return; /* The pipe is full; the poll resumes the feed. */
        if (!j->complete && j->downloaded - st->fed < PULL_STREAM_CHUNK_BYTES)
                return;
        while (st->fed < j->downloaded) {
                size_t want = (size_t) (j->downloaded - st->fed);
                ssize_t n, k;

                if (want > PULL_STREAM_CHUNK_BYTES)
                        want = PULL_STREAM_CHUNK_BYTES;
                else if (want < PULL_STREAM_CHUNK_BYTES && !j->complete)
                        break; /* Wait for a full batch. */
                n = pread(j->fd, buf, want, (off_t) st->fed);
                if (n <= 0) {
                        layer_stream_close(l);
                        return;
                }
                k = write(st->fd, buf, (size_t) n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN) {
                        uv_poll_start(&st->poll, UV_WRITABLE, stream_poll_cb);
                        return;
                }
                if (k <= 0) {
                        /* EPIPE: the converter stopped reading. */
                        layer_stream_close(l);
                        return;
                }
                st->fed += (uint64_t) k;
                if (k < n) {
                        uv_poll_start(&st->poll, UV_WRITABLE, stream_poll_cb);
                        return;
                }
        }
        if (j->complete && st->fed == j->size)
                layer_stream_close(l);
}

/* Starts converting layer i from a pipe fed while it downloads; returns
 * the read end for the worker. ingest_convert_layer() must not insist on
 * lseek(2) succeeding on it (ESPIPE); where it does, the streaming attempt
 * fails at once and the layer is converted from the file after all. */
static int layer_stream_open(PullOp *op, size_t i, int *ret_fd) {
        PullLayer *l = &op->layers[i];
        LayerStream *st;
        int p[2], r;

        if (!op->manager->stream_buf) {
                op->manager->stream_buf = malloc(PULL_STREAM_CHUNK_BYTES);
                if (!op->manager->stream_buf)
                        return -ENOMEM;
        }
        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        if (pipe2(p, O_CLOEXEC) < 0) {
                free(st);
                return negative_errno();
        }
        (void) fcntl(p[1], F_SETPIPE_SZ, (int) PULL_STREAM_PIPE_BYTES);
        if (fcntl(p[1], F_SETFL, O_NONBLOCK) < 0 ||
            (r = uv_poll_init(op->manager->loop, &st->poll, p[1])) < 0) {
                r = negative_errno();
                safe_close(p[0]);
                safe_close(p[1]);
                free(st);
                return r;
        }
        st->poll.data = st;
        st->fd = p[1];
        st->op = op;
        st->layer = i;
        l->stream = st;
        *ret_fd = p[0];
        return 0;
}

/* Blob jobs. */

static void blob_job_free(BlobJob *j) {
        PullManager *m = j->manager;

        for (BlobJob **p = &m->blobs; *p; p = &(*p)->next)
                if (*p == j) {
                        *p = j->next;
                        break;
                }
        registry_fetch_free(j->fetch);
        safe_close(j->fd);
        if (j->tmp_path) {
                store_tmpfile_discard(m->store, j->tmp_path);
                free(j->tmp_path);
        }
        free(j->waiters);
        free(j);
}

static bool blob_job_has_waiter(const BlobJob *j, const PullOp *op, size_t layer) {
        for (size_t i = 0; i < j->n_waiters; i++)
                if (j->waiters[i].op == op && j->waiters[i].layer == layer)
                        return true;
        return false;
}

/* A layer lets go of its job; the last one out drops the download. */
static void blob_job_release(BlobJob *j, const PullOp *op, size_t layer) {
        for (size_t i = 0; i < j->n_waiters; i++)
                if (j->waiters[i].op == op && j->waiters[i].layer == layer) {
                        j->waiters[i] = j->waiters[--j->n_waiters];
                        break;
                }
        if (j->n_waiters == 0)
                blob_job_free(j);
}

static void layer_downloaded(PullOp *op, size_t i);

static void blob_progress(RegistryFetch *f, uint64_t bytes, void *userdata) {
        BlobJob *j = userdata;

        j->downloaded = bytes;
        for (size_t k = 0; k < j->n_waiters; k++) {
                op_emit_layer_download(j->waiters[k].op, j->waiters[k].layer, bytes, false);
                op_maybe_stream(j->waiters[k].op);
                layer_stream_feed(j->waiters[k].op, j->waiters[k].layer);
        }
}

/* Copies the waiters first: a failing pull releases its layers, which
 * changes the list (and may free the job). */
static BlobWaiter *blob_job_snapshot(BlobJob *j, size_t *ret_n) {
        BlobWaiter *w = calloc(j->n_waiters + 1, sizeof(BlobWaiter));

        if (w)
                memcpy(w, j->waiters, j->n_waiters * sizeof(BlobWaiter));
        *ret_n = w ? j->n_waiters : 0;
        return w;
}

static bool op_is_live(PullManager *m, const PullOp *op) {
        for (PullOp *o = m->ops; o; o = o->next)
                if (o == op)
                        return true;
        return false;
}

static void blob_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        BlobJob *j = userdata;
        PullManager *m = j->manager;
        _cleanup_free_ BlobWaiter *w = NULL;
        MsbError copy = {};
        size_t n;

        /* err lives in f: copy it before letting f go. */
        if (r >= 0) {
                j->complete = true;
                j->downloaded = j->size;
        } else {
                copy = *err;
                copy.data = json_incref(err->data);
        }
        j->fetch = registry_fetch_free(f);

        /* Hold the job while we call out: a waiter that fails and releases
         * must not free it under us. */
        w = blob_job_snapshot(j, &n);
        if (!w) {
                msb_error_clear(&copy);
                return;
        }
        for (size_t k = 0; k < n; k++) {
                if (!op_is_live(m, w[k].op) || !blob_job_has_waiter(j, w[k].op, w[k].layer))
                        continue;
                if (r >= 0)
                        layer_downloaded(w[k].op, w[k].layer);
                else
                        op_fail(w[k].op, r, &copy);
                /* The last waiter may have released and freed the job. */
                bool alive = false;
                for (BlobJob *b = m->blobs; b; b = b->next)
                        alive = alive || b == j;
                if (!alive)
                        break;
        }
        msb_error_clear(&copy);
}

static BlobJob *manager_find_blob(PullManager *m, const char *digest) {
        for (BlobJob *j = m->blobs; j; j = j->next)
                if (streq(j->digest, digest))
                        return j;
        return NULL;
}

static int blob_job_add_waiter(BlobJob *j, PullOp *op, size_t layer) {
        BlobWaiter *w = realloc(j->waiters, (j->n_waiters + 1) * sizeof(BlobWaiter));

        if (!w)
                return -ENOMEM;
        j->waiters = w;
        w[j->n_waiters++] = (BlobWaiter) { .op = op, .layer = layer };
        return 0;
}

static int blob_job_new(PullManager *m, PullOp *op, const IngestLayer *il, BlobJob **ret, MsbError *err) {
        BlobJob *j;
        RegistryFetchParams p;
        int r;

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
                blob_job_free(j);
                return msb_error_from_errno(err, r, "cannot create a temporary file for a download");
        }
        p = (RegistryFetchParams) {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .digest = il->blob_digest,
                .size = il->size,
                .fd = j->fd,
        };
        r = registry_fetch_start(m->registry, &p, blob_progress, blob_done, j, &j->fetch);
        if (r < 0) {
                blob_job_free(j);
                return msb_error_set(err, r, PROTO_ERROR_INTERNAL_ERROR, "cannot start downloading %s: %s",
                                     il->blob_digest, strerror(-r));
        }
        *ret = j;
        return 0;
}

/* Work queue. */

static void work_cb(uv_work_t *req) {
        Work *w = req->data;
        PullManager *m = w->manager;
        PullOp *op = w->op;

        switch (w->kind) {
        case WORK_TOUCH: {
                _cleanup_(reference_freep) Reference *ref = NULL;
                json_t *fresh = NULL;

                w->r = store_image_touch(m->store, w->path);
                /* Answer with the handle as it is now, last_used_at included. */
                if (w->r >= 0 && reference_parse(w->path, &ref, NULL) >= 0 &&
                    store_image_get(m->store, &(ImageSpec) { .ref = ref }, &fresh, NULL) >= 0) {
                        json_decref(w->result);
                        w->result = fresh;
                }
                break;
        }
        case WORK_PREPARE:
                w->r = ingest_new(m->store, op->manifest_digest, op->manifest, op->manifest_size, op->config,
                                  op->config_size, &op->ingest, &w->err);
                if (w->r < 0)
                        break;
                w->cached = calloc(ingest_n_layers(op->ingest) + 1, sizeof(bool));
                if (!w->cached) {
                        w->r = -ENOMEM;
                        break;
                }
                for (size_t i = 0; i < ingest_n_layers(op->ingest); i++)
                        w->cached[i] = ingest_layer_cached(op->ingest, i);
                break;
        case WORK_CHECK:
                w->r = ingest_layer_cached(op->ingest, w->layer) ? 0 : -ENOENT;
                if (w->r >= 0)
                        (void) store_layer_lookup(m->store, ingest_layer(op->ingest, w->layer)->diff_id, &w->size);
                break;
        case WORK_CONVERT: {
                _cleanup_close_ int fd = w->fd >= 0 ? TAKE_FD(w->fd) : open(w->path, O_RDONLY | O_CLOEXEC);

                if (fd < 0) {
                        w->r = msb_error_from_errno(&w->err, negative_errno(), "cannot open a downloaded layer");
                        break;
                }
                w->r = ingest_convert_layer(op->ingest, w->layer, fd, &w->err);
                if (w->r >= 0)
                        (void) store_layer_lookup(m->store, ingest_layer(op->ingest, w->layer)->diff_id, &w->size);
                break;
        }
        case WORK_COMMIT: {
                _cleanup_free_ char *fsmeta = NULL;
                struct stat st;

                w->r = ingest_commit(op->ingest, &op->ref->canonical, 1, &w->result, &w->err);
                if (w->r < 0)
                        break;
                fsmeta = store_fsmeta_path(m->store, op->manifest_digest);
                if (fsmeta && stat(fsmeta, &st) >= 0)
                        w->size = (uint64_t) st.st_size;
                break;
        }
        }
}

static void after_work_cb(uv_work_t *req, int status);

/* Queues work for a worker thread; handle (may be NULL) is taken over. */
static int work_queue(PullManager *m, PullOp *op, WorkKind kind, size_t layer, const char *path,
                      PullRequest *request, json_t *handle) {
        Work *w = calloc(1, sizeof(*w));
        int r;

        if (!w) {
                json_decref(handle);
                return -ENOMEM;
        }
        *w = (Work) {
                .kind = kind,
                .manager = m,
                .op = op,
                .request = request,
                .layer = layer,
                .fd = -EBADF,
        };
        w->req.data = w;
        /* Taken over, never shared: the worker may replace and free it while
         * the loop goes on, and a jansson value is not for two threads. */
        w->result = handle;
        if (path && !(w->path = strdup(path))) {
                json_decref(w->result);
                free(w);
                return -ENOMEM;
        }
        r = uv_queue_work(m->loop, &w->req, work_cb, after_work_cb);
        if (r < 0) {
                json_decref(w->result);
                free(w->path);
                free(w);
                return r;
        }
        m->works_in_flight++;
        if (op)
                op->works_in_flight++;
        return 0;
}

/* A conversion reading from fd (a pipe, handed over to the worker). */
static int work_queue_fd(PullManager *m, PullOp *op, size_t layer, int fd) {
        Work *w = calloc(1, sizeof(*w));
        int r;

        if (!w)
                return -ENOMEM;
        *w = (Work) {
                .kind = WORK_CONVERT,
                .manager = m,
                .op = op,
                .layer = layer,
                .fd = fd,
        };
        w->req.data = w;
        r = uv_queue_work(m->loop, &w->req, work_cb, after_work_cb);
        if (r < 0) {
                free(w);
                return r;
        }
        m->works_in_flight++;
        op->works_in_flight++;
        return 0;
}

/* Finishing. */

static void request_free(PullRequest *q) {
        free(q);
}

static void op_free(PullOp *op) {
        PullManager *m = op->manager;

        for (PullOp **p = &m->ops; *p; p = &(*p)->next)
                if (*p == op) {
                        *p = op->next;
                        break;
                }
        registry_fetch_free(op->fetch);
        for (size_t i = 0; i < op->n_layers; i++) {
                layer_stream_close(&op->layers[i]);
                if (op->layers[i].job)
                        blob_job_release(op->layers[i].job, op, i);
        }
        while (op->requests) {
                PullRequest *q = op->requests;
                op->requests = q->next;
                request_free(q);
        }
        ingest_free(op->ingest);
        oci_manifest_free(op->parsed);
        oci_platform_done(&op->want);
        reference_free(op->ref);
        msb_error_clear(&op->err);
        json_decref(op->handle);
        free(op->layers);
        free(op->manifest);
        free(op->config);
        free(op->key);
        free(op);
}

/* Calls every caller back and frees the op, once no worker touches it. */
static void op_finish(PullOp *op) {
        PullManager *m = op->manager;
        PullRequest *q;

        if (op->works_in_flight > 0)
                return;
        op->step = OP_FINISHED;
        /* Unlink first so a caller's callback cannot reach this op. */
        for (PullOp **p = &m->ops; *p; p = &(*p)->next)
                if (*p == op) {
                        *p = op->next;
                        break;
                }
        op->next = NULL;

        while ((q = op->requests)) {
                op->requests = q->next;
                if (!m->freeing) {
                        if (op->failed)
                                q->done(op->error, &op->err, NULL, q->userdata);
                        else
                                q->done(0, NULL, op->handle, q->userdata);
                }
                request_free(q);
        }
        /* op_free unlinks again harmlessly: it is no longer in the list. */
        op_free(op);
        manager_maybe_release(m);
}

static void op_fail(PullOp *op, int r, const MsbError *err) {
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

        /* Stop everything that is on the network; workers finish on their
         * own (a streaming converter sees EOF). */
        op->fetch = registry_fetch_free(op->fetch);
        for (size_t i = 0; i < op->n_layers; i++)
                layer_stream_close(&op->layers[i]);
        for (size_t i = 0; i < op->n_layers; i++)
                if (op->layers[i].job) {
                        BlobJob *j = op->layers[i].job;
                        op->layers[i].job = NULL;
                        blob_job_release(j, op, i);
                }
        op_finish(op);
}

static void op_fail_errno(PullOp *op, int r, const char *what) {
        MsbError err = {};

        msb_error_set(&err, r, PROTO_ERROR_INTERNAL_ERROR, "%s: %s", what, strerror(-r));
        op_fail(op, r, &err);
        msb_error_clear(&err);
}

/* Layers. */

static bool manager_converted(const PullManager *m, const char *diff_id) {
        for (size_t i = 0; i < PULL_CONVERTED_MEMORY; i++)
                if (m->converted[i] && streq(m->converted[i], diff_id))
                        return true;
        return false;
}

static void manager_remember_converted(PullManager *m, const char *diff_id) {
        char *copy;

        if (manager_converted(m, diff_id) || !(copy = strdup(diff_id)))
                return;
        free(m->converted[m->converted_next]);
        m->converted[m->converted_next] = copy;
        m->converted_next = (m->converted_next + 1) % PULL_CONVERTED_MEMORY;
}

static void layer_downloaded(PullOp *op, size_t i) {
        PullLayer *l = &op->layers[i];
        const IngestLayer *il = ingest_layer(op->ingest, i);

        if (l->step != LAYER_DOWNLOADING || l->download_reported)
                return;
        layer_stream_feed(op, i);
        op_emit_layer_download(op, i, il->size, true);
        op->n_downloading--;
        l->download_reported = true;
        /* A streaming conversion already has the bytes. */
        l->step = l->streaming ? LAYER_CONVERTING : LAYER_DOWNLOADED;
        op_emit(op, json_pack("{s:s, s:I, s:s}", "event", "layer-downloaded", "position", (json_int_t) i, "digest",
                              il->blob_digest));
        op_pump(op);
}

/* Starts the download of layer i, or joins one in flight. */
static int layer_start_download(PullOp *op, size_t i) {
        PullManager *m = op->manager;
        PullLayer *l = &op->layers[i];
        const IngestLayer *il = ingest_layer(op->ingest, i);
        BlobJob *j = manager_find_blob(m, il->blob_digest);
        MsbError err = {};
        int r;

        if (il->size > PULL_LAYER_MAX_BYTES) {
                msb_error_set(&err, -EFBIG, PROTO_ERROR_LIMIT_EXCEEDED, "layer %zu (%s) is larger than %" PRIu64 " bytes",
                              i, il->blob_digest, PULL_LAYER_MAX_BYTES);
                msb_error_add_data(&err, "limit", json_string("layer_uncompressed_bytes"));
                msb_error_add_data(&err, "max", json_integer((json_int_t) PULL_LAYER_MAX_BYTES));
                op_fail(op, -EFBIG, &err);
                msb_error_clear(&err);
                return -EFBIG;
        }
        if (j && j->size != il->size) {
                /* The same digest with another size: one descriptor lies;
                 * do not share (the download with the wrong size fails). */
                j = NULL;
        }
        if (!j) {
                r = blob_job_new(m, op, il, &j, &err);
                if (r < 0) {
                        op_fail(op, r, &err);
                        msb_error_clear(&err);
                        return r;
                }
        }
        r = blob_job_add_waiter(j, op, i);
        if (r < 0) {
                if (j->n_waiters == 0)
                        blob_job_free(j);
                op_fail_errno(op, r, "download");
                return r;
        }
        l->job = j;
        l->step = LAYER_DOWNLOADING;
        l->download_started_ms = now_monotonic_ms();
        op->n_downloading++;
        op_emit_layer_download(op, i, j->downloaded, true);
        if (j->complete)
                layer_downloaded(op, i);
        return 0;
}

static void op_commit(PullOp *op) {
        int r;

        op->step = OP_COMMITTING;
        r = work_queue(op->manager, op, WORK_COMMIT, 0, NULL, NULL, NULL);
        if (r < 0)
                op_fail_errno(op, r, "commit");
}

/* True when layer i downloads slowly enough that converting it on the way
 * wins: it has run PULL_STREAM_AFTER_MS and is not half done. On a fast
 * link the download finishes long before the converter would and the
 * conversion reads the complete file, which costs it less than a pipe. */
static bool layer_worth_streaming(const PullOp *op, size_t i) {
        const PullLayer *l = &op->layers[i];

        if (l->step != LAYER_DOWNLOADING || l->stream_failed || !l->job || l->job->complete)
                return false;
        return now_monotonic_ms() >= l->download_started_ms + PULL_STREAM_AFTER_MS &&
               l->job->downloaded < l->job->size / 2;
}

/* Nothing complete to convert: convert a slow download as it arrives. Safe
 * from a curl write callback (starts no transfer). */
static void op_maybe_stream(PullOp *op) {
        if (op->failed || op->converting || op->step != OP_LAYERS)
                return;
        for (size_t i = 0; i < op->n_layers; i++) {
                PullLayer *l = &op->layers[i];
                int fd = -EBADF;

                if (!layer_worth_streaming(op, i))
                        continue;
                if (layer_stream_open(op, i, &fd) < 0)
                        return;
                if (work_queue_fd(op->manager, op, i, fd) < 0) {
                        safe_close(fd);
                        layer_stream_close(l);
                        return;
                }
                l->streaming = true;
                op->converting = true;
                layer_stream_feed(op, i);
                return;
        }
}

/* Moves layers on: starts downloads up to the per-pull bound, hands the
 * first downloaded layer to the converter, commits when all are in. */
static void op_pump_once(PullOp *op);

static void op_pump(PullOp *op) {
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
}

static void op_pump_once(PullOp *op) {
        PullManager *m = op->manager;
        bool all_done = true;

        if (op->failed || op->step != OP_LAYERS)
                return;

        for (size_t i = 0; i < op->n_layers && !op->failed; i++) {
                PullLayer *l = &op->layers[i];

                if (l->step != LAYER_PENDING)
                        continue;
                if (manager_converted(m, ingest_layer(op->ingest, i)->diff_id)) {
                        l->step = LAYER_CHECKING;
                        if (work_queue(m, op, WORK_CHECK, i, NULL, NULL, NULL) < 0)
                                l->step = LAYER_PENDING;
                        else
                                continue;
                }
                if (op->n_downloading >= m->config->max_downloads_per_pull)
                        continue;
                (void) layer_start_download(op, i);
        }
        if (op->failed)
                return;

        /* Conversions of one image run one at a time: ingest's bookkeeping
         * of one Ingest is not shared between threads; other images convert
         * in parallel, and downloads continue meanwhile. */
        if (!op->converting)
                for (size_t i = 0; i < op->n_layers; i++) {
                        PullLayer *l = &op->layers[i];

                        if (l->step != LAYER_DOWNLOADED)
                                continue;
                        if (work_queue(m, op, WORK_CONVERT, i, l->job->tmp_path, NULL, NULL) < 0)
                                return op_fail_errno(op, -ENOMEM, "convert");
                        l->step = LAYER_CONVERTING;
                        op->converting = true;
                        break;
                }
        op_maybe_stream(op);

        for (size_t i = 0; i < op->n_layers; i++)
                all_done = all_done && op->layers[i].step == LAYER_DONE;
        if (all_done && op->step == OP_LAYERS)
                op_commit(op);
}

/* Resolution: manifests, indexes and the config. */

static void op_fetch_document(PullOp *op, const char *reference, const char *expected_digest, uint64_t size);

static void op_config_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        PullOp *op = userdata;
        const char *body;
        size_t n;

        if (r < 0) {
                op_fail(op, r, err);
                return;
        }
        body = registry_fetch_body(f, &n);
        op->config = malloc(n + 1);
        if (!op->config)
                return op_fail_errno(op, -ENOMEM, "config");
        memcpy(op->config, body, n);
        op->config[n] = '\0';
        op->config_size = n;
        op->fetch = registry_fetch_free(op->fetch);

        op->step = OP_PREPARING;
        r = work_queue(op->manager, op, WORK_PREPARE, 0, NULL, NULL, NULL);
        if (r < 0)
                op_fail_errno(op, r, "prepare");
}

static void op_got_manifest(PullOp *op, const char *body, size_t n, const char *digest) {
        MsbError err = {};
        RegistryFetchParams p;
        int r;

        r = oci_manifest_parse(body, n, &op->parsed, &err);
        if (r < 0) {
                op_fail(op, r, &err);
                msb_error_clear(&err);
                return;
        }
        snprintf(op->manifest_digest, sizeof(op->manifest_digest), "%s", digest);
        op->manifest = malloc(n + 1);
        if (!op->manifest)
                return op_fail_errno(op, -ENOMEM, "manifest");
        memcpy(op->manifest, body, n);
        op->manifest[n] = '\0';
        op->manifest_size = n;
        op->fetch = registry_fetch_free(op->fetch);

        if (op->parsed->config.size > OCI_CONFIG_MAX_BYTES) {
                msb_error_set(&err, -EFBIG, PROTO_ERROR_LIMIT_EXCEEDED, "the config of %s is larger than %zu bytes",
                              op->ref->canonical, OCI_CONFIG_MAX_BYTES);
                msb_error_add_data(&err, "limit", json_string("manifest_bytes"));
                msb_error_add_data(&err, "max", json_integer((json_int_t) OCI_CONFIG_MAX_BYTES));
                op_fail(op, -EFBIG, &err);
                msb_error_clear(&err);
                return;
        }

        op->step = OP_CONFIG;
        p = (RegistryFetchParams) {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .digest = op->parsed->config.digest,
                .size = op->parsed->config.size,
                .fd = -1,
        };
        r = registry_fetch_start(op->manager->registry, &p, NULL, op_config_done, op, &op->fetch);
        if (r < 0)
                op_fail_errno(op, r, "config");
}

static void op_got_index(PullOp *op, const char *body, size_t n) {
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        MsbError err = {};
        size_t pick;
        int r;

        if (op->index_depth >= OCI_INDEX_DEPTH_MAX) {
                msb_error_set(&err, -ELOOP, PROTO_ERROR_INVALID_IMAGE, "indexes of %s nest deeper than %d",
                              op->ref->canonical, OCI_INDEX_DEPTH_MAX);
                goto fail;
        }
        r = oci_index_parse(body, n, &idx, &err);
        if (r < 0)
                goto fail;
        r = oci_index_select(idx, &op->want, &pick);
        if (r < 0) {
                msb_error_set(&err, -ENOENT, PROTO_ERROR_PLATFORM_NOT_FOUND, "%s has no image for %s/%s%s%s",
                              op->ref->canonical, op->want.os, op->want.architecture, op->want.variant ? "/" : "",
                              op->want.variant ?: "");
                msb_error_add_data(&err, "platform",
                                   json_sprintf("%s/%s%s%s", op->want.os, op->want.architecture,
                                                op->want.variant ? "/" : "", op->want.variant ?: ""));
                goto fail;
        }
        op->index_depth++;
        op->fetch = registry_fetch_free(op->fetch);
        char digest[DIGEST_STRING_MAX];
        snprintf(digest, sizeof(digest), "%s", idx->manifests[pick].digest);
        op_fetch_document(op, digest, digest, idx->manifests[pick].size);
        return;

fail:
        op_fail(op, err.set ? -EBADMSG : -ENOMEM, &err);
        msb_error_clear(&err);
}

static void op_document_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        PullOp *op = userdata;
        const char *body, *mt;
        size_t n;
        MsbError e = {};

        if (r < 0) {
                op_fail(op, r, err);
                return;
        }
        body = registry_fetch_body(f, &n);
        if (op->expected_size != UINT64_MAX && n != op->expected_size) {
                msb_error_set(&e, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "manifest %s has %zu bytes, its descriptor says %" PRIu64, registry_fetch_digest(f), n,
                              op->expected_size);
                op_fail(op, -EBADMSG, &e);
                msb_error_clear(&e);
                return;
        }

        /* Not JSON at all: the registry answered garbage. */
        json_t *j = json_loadb(body, n, 0, NULL);
        if (!j) {
                msb_error_set(&e, -EBADMSG, PROTO_ERROR_REGISTRY_ERROR,
                              "the registry answered %s with something that is not JSON", op->ref->canonical);
                op_fail(op, -EBADMSG, &e);
                msb_error_clear(&e);
                return;
        }
        json_decref(j);

        /* The document's own mediaType decides (the spec lets OCI indexes
         * omit it; then the shape does), else the Content-Type. */
        mt = oci_document_media_type(body, n);
        if (!mt)
                mt = registry_fetch_media_type(f);
        if (mt && oci_media_type_is_index(mt))
                return op_got_index(op, body, n);
        if (mt && oci_media_type_is_manifest(mt)) {
                char digest[DIGEST_STRING_MAX];
                snprintf(digest, sizeof(digest), "%s", registry_fetch_digest(f));
                return op_got_manifest(op, body, n, digest);
        }
        msb_error_set(&e, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                      "%s is neither an image manifest nor an index (%s)", op->ref->canonical,
                      mt && mt[0] ? mt : "no media type");
        op_fail(op, -EMEDIUMTYPE, &e);
        msb_error_clear(&e);
}

static void op_fetch_document(PullOp *op, const char *reference, const char *expected_digest, uint64_t size) {
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .reference = reference,
                .digest = expected_digest,
                .max_size = OCI_MANIFEST_MAX_BYTES,
        };
        int r;

        op->expected_size = size;
        r = registry_fetch_start(op->manager->registry, &p, NULL, op_document_done, op, &op->fetch);
        if (r < 0)
                op_fail_errno(op, r, "manifest");
}

/* Worker results. */

static void op_prepared(PullOp *op, Work *w) {
        uint64_t total = 0;

        if (w->r < 0)
                return op_fail(op, w->r, &w->err);

        op->n_layers = ingest_n_layers(op->ingest);
        op->layers = calloc(op->n_layers + 1, sizeof(PullLayer));
        if (!op->layers)
                return op_fail_errno(op, -ENOMEM, "layers");
        for (size_t i = 0; i < op->n_layers; i++)
                total += ingest_layer(op->ingest, i)->size;
        op_emit(op, json_pack("{s:s, s:s, s:I, s:I}", "event", "resolved", "manifest_digest", op->manifest_digest,
                              "layer_count", (json_int_t) op->n_layers, "total_bytes", (json_int_t) total));
        for (size_t i = 0; i < op->n_layers; i++) {
                const IngestLayer *il = ingest_layer(op->ingest, i);

                if (!w->cached[i])
                        continue;
                op->layers[i].step = LAYER_DONE;
                op->layers[i].cached = true;
                op_emit(op, json_pack("{s:s, s:I, s:s, s:s}", "event", "layer-cached", "position", (json_int_t) i,
                                      "digest", il->blob_digest, "diff_id", il->diff_id));
        }
        op->step = OP_LAYERS;
        op_pump(op);
}

static void op_layer_checked(PullOp *op, Work *w) {
        PullLayer *l = &op->layers[w->layer];
        const IngestLayer *il = ingest_layer(op->ingest, w->layer);

        if (w->r < 0) {
                /* Gone since (pruned): download it after all. */
                l->step = LAYER_PENDING;
                for (size_t i = 0; i < PULL_CONVERTED_MEMORY; i++)
                        if (op->manager->converted[i] && streq(op->manager->converted[i], il->diff_id))
                                op->manager->converted[i] = (free(op->manager->converted[i]), NULL);
        } else {
                l->step = LAYER_DONE;
                l->cached = true;
                op_emit(op, json_pack("{s:s, s:I, s:s, s:s}", "event", "layer-cached", "position",
                                      (json_int_t) w->layer, "digest", il->blob_digest, "diff_id", il->diff_id));
        }
        op_pump(op);
}

static void op_layer_converted(PullOp *op, Work *w) {
        PullLayer *l = &op->layers[w->layer];
        const IngestLayer *il = ingest_layer(op->ingest, w->layer);
        BlobJob *j = l->job;
        bool streamed = l->streaming;

        op->converting = false;
        l->streaming = false;
        layer_stream_close(l);

        if (w->r < 0 && streamed) {
                /* Convert from the complete file instead; if the layer is
                 * really bad, that says so with the download's verdict. */
                l->stream_failed = true;
                if (l->step == LAYER_CONVERTING)
                        l->step = LAYER_DOWNLOADED;
                op_pump(op);
                return;
        }
        if (w->r >= 0 && l->step == LAYER_DOWNLOADING) {
                /* The converter verified every byte before curl said done. */
                op_emit_layer_download(op, w->layer, il->size, true);
                op->n_downloading--;
                l->download_reported = true;
                op_emit(op, json_pack("{s:s, s:I, s:s}", "event", "layer-downloaded", "position",
                                      (json_int_t) w->layer, "digest", il->blob_digest));
        }

        l->job = NULL;
        if (j)
                blob_job_release(j, op, w->layer);
        if (w->r < 0)
                return op_fail(op, w->r, &w->err);

        l->step = LAYER_DONE;
        l->erofs_size = w->size;
        manager_remember_converted(op->manager, il->diff_id);
        op_emit(op, json_pack("{s:s, s:I, s:s, s:s, s:I}", "event", "layer-converted", "position",
                              (json_int_t) w->layer, "digest", il->blob_digest, "diff_id", il->diff_id,
                              "erofs_size_bytes", (json_int_t) w->size));
        op_pump(op);
}

static void op_committed(PullOp *op, Work *w) {
        if (w->r < 0)
                return op_fail(op, w->r, &w->err);
        op->handle = TAKE_PTR(w->result);
        op_emit(op, json_pack("{s:s, s:I}", "event", "fsmeta", "size_bytes", (json_int_t) w->size));
        op_emit(op, json_pack("{s:s}", "event", "vmdk"));
        op_emit(op, json_pack("{s:s, s:s}", "event", "complete", "manifest_digest", op->manifest_digest));
        op_finish(op);
}

static void request_answer_from_cache(PullRequest *q, Work *w);

static void after_work_cb(uv_work_t *req, int status) {
        Work *w = req->data;
        PullManager *m = w->manager;
        PullOp *op = w->op;

        m->works_in_flight--;
        m->busy++;
        if (status < 0 && w->r >= 0)
                w->r = status; /* cancelled */

        if (w->kind == WORK_TOUCH)
                request_answer_from_cache(w->request, w);
        else {
                op->works_in_flight--;
                if (op->failed || m->freeing) {
                        /* Drop what a worker made for a pull that is over. */
                        if (w->kind == WORK_CONVERT)
                                layer_stream_close(&op->layers[w->layer]);
                        if (w->kind == WORK_CONVERT && op->layers[w->layer].job) {
                                BlobJob *j = op->layers[w->layer].job;
                                op->layers[w->layer].job = NULL;
                                blob_job_release(j, op, w->layer);
                        }
                        if (m->freeing && !op->failed)
                                op->failed = true;
                        op_finish(op);
                } else
                        switch (w->kind) {
                        case WORK_PREPARE:
                                op_prepared(op, w);
                                break;
                        case WORK_CHECK:
                                op_layer_checked(op, w);
                                break;
                        case WORK_CONVERT:
                                op_layer_converted(op, w);
                                break;
                        case WORK_COMMIT:
                                op_committed(op, w);
                                break;
                        default:
                                assert(false);
                        }
        }

        safe_close(w->fd);
        msb_error_clear(&w->err);
        json_decref(w->result);
        free(w->cached);
        free(w->path);
        free(w);
        m->busy--;
        manager_maybe_release(m);
}

/* Cache answers. */

static void request_answer_from_cache(PullRequest *q, Work *w) {
        json_t *handle = w->result;

        if (!q->detached && !q->manager->freeing) {
                json_t *ev = json_pack("{s:s, s:s}", "event", "resolving", "reference",
                                       json_string_value(json_object_get(handle, "reference")) ?: "");
                if (ev && q->progress)
                        q->progress(ev, q->userdata);
                json_decref(ev);
                ev = json_pack("{s:s, s:s}", "event", "complete", "manifest_digest",
                               json_string_value(json_object_get(handle, "manifest_digest")) ?: "");
                if (ev && q->progress)
                        q->progress(ev, q->userdata);
                json_decref(ev);
                if (json_is_object(handle))
                        q->done(0, NULL, handle, q->userdata);
                else {
                        q->done(w->r < 0 ? w->r : -ENOENT, &w->err, NULL, q->userdata);
                }
        }
        request_free(q);
}

/* Public API. */

int pull_manager_new(uv_loop_t *loop, Store *store, const json_t *config, PullManager **ret) {
        PullManager *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->store = store;
        /* Created here, on the loop thread, which is the only one to use it. */
        r = store_reader_new(store, &m->reader);
        if (r < 0) {
                free(m);
                return r;
        }
        r = registry_config_new(config, &m->config, NULL);
        if (r < 0) {
                store_reader_free(m->reader);
                free(m);
                return r;
        }
        /* A broken Docker config only costs its credentials. */
        (void) registry_config_load_docker_auths(m->config, NULL);
        r = registry_new(loop, m->config, &m->registry);
        if (r < 0) {
                registry_config_free(m->config);
                store_reader_free(m->reader);
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int pull_config_check(const json_t *config, MsbError *err) {
        _cleanup_(registry_config_freep) RegistryConfig *c = NULL;

        return registry_config_new(config, &c, err);
}

static void manager_maybe_release(PullManager *m) {
        if (!m->freeing || m->busy > 0 || m->ops || m->works_in_flight > 0)
                return;
        for (size_t i = 0; i < PULL_CONVERTED_MEMORY; i++)
                free(m->converted[i]);
        registry_config_free(m->config);
        store_reader_free(m->reader);
        free(m->stream_buf);
        free(m);
}

PullManager *pull_manager_free(PullManager *m) {
        if (!m)
                return NULL;
        m->freeing = true;
        m->shutting_down = true;
        m->busy++;
        /* Network first: every fetch must be gone before the registry. */
        for (PullOp *op = m->ops; op; op = op->next) {
                op->fetch = registry_fetch_free(op->fetch);
                op->failed = true;
                for (size_t i = 0; i < op->n_layers; i++)
                        layer_stream_close(&op->layers[i]);
                for (size_t i = 0; i < op->n_layers; i++)
                        if (op->layers[i].job) {
                                BlobJob *j = op->layers[i].job;
                                op->layers[i].job = NULL;
                                blob_job_release(j, op, i);
                        }
        }
        while (m->blobs)
                blob_job_free(m->blobs);
        m->registry = registry_free(m->registry);
        for (PullOp *op = m->ops, *next; op; op = next) {
                next = op->next;
                op_finish(op); /* frees it unless a worker still has it */
        }
        m->busy--;
        manager_maybe_release(m);
        return NULL;
}

void pull_manager_shutdown(PullManager *m) {
        _cleanup_free_ PullOp **ops = NULL;
        MsbError err = {};
        size_t n = 0;

        if (!m || m->shutting_down)
                return;
        m->shutting_down = true;
        msb_error_set(&err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");

        /* op_fail may free the op (and call back): work on a snapshot. */
        n = pull_manager_n_pulls(m);
        ops = calloc(n + 1, sizeof(PullOp *));
        if (ops) {
                size_t k = 0;
                for (PullOp *op = m->ops; op; op = op->next)
                        ops[k++] = op;
                for (size_t i = 0; i < n; i++)
                        if (op_is_live(m, ops[i]))
                                op_fail(ops[i], -ECANCELED, &err);
        }
        msb_error_clear(&err);
}

size_t pull_manager_n_pulls(const PullManager *m) {
        size_t n = 0;

        for (PullOp *op = m ? m->ops : NULL; op; op = op->next)
                n++;
        return n;
}

static int request_new(PullManager *m, PullProgressFn progress, PullDoneFn done, void *userdata,
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

static void request_send(PullRequest *q, json_t *event) {
        if (event && q->progress)
                q->progress(event, q->userdata);
        json_decref(event);
}

/* The events a caller that joins a pull in flight has missed, condensed:
 * each layer's state as of now, in the order the events would have come. */
static void request_replay(PullOp *op, PullRequest *q) {
        uint64_t total = 0;

        request_send(q, json_pack("{s:s, s:s}", "event", "resolving", "reference", op->ref->canonical));
        if (!op->layers)
                return;
        for (size_t i = 0; i < op->n_layers; i++)
                total += ingest_layer(op->ingest, i)->size;
        request_send(q, json_pack("{s:s, s:s, s:I, s:I}", "event", "resolved", "manifest_digest", op->manifest_digest,
                                  "layer_count", (json_int_t) op->n_layers, "total_bytes", (json_int_t) total));
        for (size_t i = 0; i < op->n_layers; i++) {
                const PullLayer *l = &op->layers[i];
                const IngestLayer *il = ingest_layer(op->ingest, i);

                if (l->cached) {
                        request_send(q, json_pack("{s:s, s:I, s:s, s:s}", "event", "layer-cached", "position",
                                                  (json_int_t) i, "digest", il->blob_digest, "diff_id", il->diff_id));
                        continue;
                }
                if (l->step == LAYER_PENDING || l->step == LAYER_CHECKING)
                        continue;
                request_send(q, json_pack("{s:s, s:I, s:s, s:I, s:I}", "event", "layer-download", "position",
                                          (json_int_t) i, "digest", il->blob_digest, "downloaded_bytes",
                                          (json_int_t) (l->download_reported || l->step == LAYER_DONE
                                                                ? il->size
                                                                : l->reported_bytes),
                                          "total_bytes", (json_int_t) il->size));
                if (l->download_reported || l->step == LAYER_DONE)
                        request_send(q, json_pack("{s:s, s:I, s:s}", "event", "layer-downloaded", "position",
                                                  (json_int_t) i, "digest", il->blob_digest));
                if (l->step == LAYER_DONE)
                        request_send(q, json_pack("{s:s, s:I, s:s, s:s, s:I}", "event", "layer-converted",
                                                  "position", (json_int_t) i, "digest", il->blob_digest, "diff_id",
                                                  il->diff_id, "erofs_size_bytes", (json_int_t) l->erofs_size));
        }
}

static bool platform_matches(const json_t *handle, const OciPlatform *want) {
        return streq_ptr(json_string_value(json_object_get(handle, "os")), want->os) &&
               streq_ptr(json_string_value(json_object_get(handle, "architecture")), want->architecture);
}

/* Answers from the cache, after marking the reference used on a worker. */
static int pull_from_cache(PullManager *m, json_t *handle, PullRequest *q) {
        return work_queue(m, NULL, WORK_TOUCH, 0, json_string_value(json_object_get(handle, "reference")), q, handle);
}

int pull_start(PullManager *m, const Reference *ref, const char *policy, const char *platform,
               PullProgressFn progress, PullDoneFn done, void *userdata, PullRequest **ret, MsbError *err) {
        _cleanup_free_ char *key = NULL;
        json_auto_t *cached = NULL;
        OciPlatform want = {};
        PullRequest *q = NULL;
        PullOp *op;
        MsbError lookup_err = {};
        int r;

        if (!m || !ref || !done || !ret)
                return -EINVAL;
        if (m->shutting_down)
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");
        if (!policy)
                policy = "if-missing";
        if (!streq(policy, "if-missing") && !streq(policy, "always") && !streq(policy, "never")) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "unknown pull policy \"%s\"", policy);
                msb_error_add_data(err, "parameter", json_string("policy"));
                return -EINVAL;
        }
        if (platform) {
                r = oci_platform_parse(platform, &want);
                if (r < 0) {
                        msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS,
                                      "platform \"%s\" is not os/architecture[/variant]", platform);
                        msb_error_add_data(err, "parameter", json_string("platform"));
                        return -EINVAL;
                }
        } else {
                OciPlatform host;

                oci_host_platform(&host);
                want.os = strdup(host.os);
                want.architecture = strdup(host.architecture);
                if (!want.os || !want.architecture) {
                        oci_platform_done(&want);
                        return -ENOMEM;
                }
        }

        r = request_new(m, progress, done, userdata, &q);
        if (r < 0) {
                oci_platform_done(&want);
                return r;
        }

        /* The cache first, on the loop's read connection: a hit costs no
         * network and no worker round trip beyond marking it used. */
        if (!streq(policy, "always")) {
                /* By name only: pulling "abcdef123456" names a repository. */
                ImageSpec by_name = image_spec_borrow(ref);
                r = store_reader_image_get(m->reader, &by_name, &cached, &lookup_err);
                msb_error_clear(&lookup_err);
                if (r >= 0 && (!platform || platform_matches(cached, &want))) {
                        oci_platform_done(&want);
                        r = pull_from_cache(m, TAKE_PTR(cached), q);
                        if (r < 0) {
                                request_free(q);
                                return r;
                        }
                        /* The handle travels with the request's work item. */
                        *ret = q;
                        return 0;
                }
                if (streq(policy, "never")) {
                        oci_platform_done(&want);
                        request_free(q);
                        msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND, "no cached image %s",
                                      ref->canonical);
                        msb_error_add_data(err, "reference", json_string(ref->canonical));
                        return -ENOENT;
                }
        }

        if (asprintf(&key, "%s|%s/%s/%s", ref->canonical, want.os, want.architecture, want.variant ?: "") < 0) {
                oci_platform_done(&want);
                request_free(q);
                return -ENOMEM;
        }

        for (op = m->ops; op; op = op->next)
                if (!op->failed && streq(op->key, key))
                        break;
        if (op) {
                /* Join: the new caller first hears what happened so far. */
                oci_platform_done(&want);
                q->op = op;
                q->next = op->requests;
                op->requests = q;
                request_replay(op, q);
                *ret = q;
                return 0;
        }

        op = calloc(1, sizeof(*op));
        if (!op) {
                oci_platform_done(&want);
                request_free(q);
                return -ENOMEM;
        }
        op->manager = m;
        op->key = TAKE_PTR(key);
        op->want = want;
        op->expected_size = UINT64_MAX;
        r = reference_parse(ref->canonical, &op->ref, NULL);
        if (r < 0) {
                op->next = m->ops;
                m->ops = op;
                op_free(op);
                request_free(q);
                return msb_error_set(err, r, PROTO_ERROR_INVALID_REFERENCE, "invalid reference %s", ref->canonical);
        }
        op->next = m->ops;
        m->ops = op;

        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .reference = op->ref->digest ?: op->ref->tag,
                .digest = op->ref->digest,
                .max_size = OCI_MANIFEST_MAX_BYTES,
        };
        r = registry_fetch_start(m->registry, &p, NULL, op_document_done, op, &op->fetch);
        if (r < 0) {
                op_free(op);
                request_free(q);
                return msb_error_set(err, r, r == -EINVAL ? PROTO_ERROR_INVALID_REFERENCE : PROTO_ERROR_INTERNAL_ERROR,
                                     "cannot pull %s: %s", ref->canonical, strerror(-r));
        }
        q->op = op;
        op->requests = q;
        op_emit(op, json_pack("{s:s, s:s}", "event", "resolving", "reference", op->ref->canonical));
        *ret = q;
        return 0;
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
        request_free(q);

        /* Nobody waits any more: abandon the pull. */
        if (!op->requests && !op->failed) {
                MsbError err = {};

                msb_error_set(&err, -ECANCELED, PROTO_ERROR_INTERNAL_ERROR, "every caller went away");
                op_fail(op, -ECANCELED, &err);
                msb_error_clear(&err);
        }
}
