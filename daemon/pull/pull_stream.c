/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A layer converted while it downloads (see PullStream in pull_internal.h):
 * when to start, the pipe, and the feed from the temp file into it.
 */
#include <fcntl.h>

#include "pull_internal.h"

static void stream_close_cb(uv_handle_t *h) {
        free(h->data);
}

/* Ends the feed: EOF for the converter (after everything, or early, which
 * it reports as a truncated layer). */
void pull_stream_close(PullLayer *l) {
        PullStream *st = l->stream;

        if (!st)
                return;
        l->stream = NULL;
        st->fd = safe_close(st->fd);
        uv_close((uv_handle_t *) &st->poll, stream_close_cb);
}

static void stream_poll_cb(uv_poll_t *h, int status, int events) {
        PullStream *st = h->data;

        uv_poll_stop(h);
        pull_stream_feed(st->op, st->layer);
}

/* Copies what the download has written so far from the temp file into the
 * pipe, until the pipe is full (then waits to be told it is writable). */
void pull_stream_feed(PullOp *op, size_t i) {
        PullLayer *l = &op->layers[i];
        PullStream *st = l->stream;
        PullBlob *j = l->job;
        char *buf = op->manager->stream_buf;

        if (!st || !j)
                return;
        if (j->downloaded < st->fed) {
                /* The download started over: what was fed is void. */
                pull_stream_close(l);
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
                        pull_stream_close(l);
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
                        pull_stream_close(l);
                        return;
                }
                st->fed += (uint64_t) k;
                if (k < n) {
                        uv_poll_start(&st->poll, UV_WRITABLE, stream_poll_cb);
                        return;
                }
        }
        if (j->complete && st->fed == j->size)
                pull_stream_close(l);
}

/* Starts converting layer i from a pipe fed while it downloads; returns
 * the read end for the worker. ingest_convert_layer() must not insist on
 * lseek(2) succeeding on it (ESPIPE); where it does, the streaming attempt
 * fails at once and the layer is converted from the file after all. */
static int stream_open(PullOp *op, size_t i, int *ret_fd) {
        PullLayer *l = &op->layers[i];
        PullStream *st;
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
void pull_op_maybe_stream(PullOp *op) {
        if (op->failed || op->converting || op->step != OP_LAYERS)
                return;
        for (size_t i = 0; i < op->n_layers; i++) {
                PullLayer *l = &op->layers[i];
                int fd = -EBADF;

                if (!layer_worth_streaming(op, i))
                        continue;
                if (stream_open(op, i, &fd) < 0)
                        return;
                if (pull_work_queue_fd(op->manager, op, i, fd) < 0) {
                        safe_close(fd);
                        pull_stream_close(l);
                        return;
                }
                l->streaming = true;
                op->converting = true;
                pull_stream_feed(op, i);
                return;
        }
}
