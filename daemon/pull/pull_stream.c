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
        /* The poll leaves epoll first (uv_close() takes the descriptor out
         * at once): closed first, its number could already be another
         * thread's file or the loop's socket when libuv deletes it. */
        uv_close((uv_handle_t *) &st->poll, stream_close_cb);
        st->fd = safe_close(st->fd);
}

static void stream_poll_cb(uv_poll_t *h, int status, int events) {
        PullStream *st = h->data;

        uv_poll_stop(h);
        pull_stream_feed(st->op, st->layer);
}

/* Moves up to want bytes of the blob at st->fed into the pipe: splice(2)
 * hands the page cache's pages to the pipe without copying them (the
 * bytes cross memory once more, into the converter, as when it reads the
 * file); where the file system cannot splice, a copy through a buffer.
 * Returns the bytes moved, -EAGAIN when the pipe is full, another negative
 * errno when the stream cannot go on. */
static ssize_t stream_move(PullManager *m, PullStream *st, int blob_fd, size_t want) {
        loff_t off = (loff_t) st->fed;
        ssize_t n, k;

        for (;;) {
                if (!st->no_splice) {
                        n = splice(blob_fd, &off, st->fd, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                        if (n > 0)
                                return n;
                        if (n == 0)
                                return -ENODATA; /* the file is shorter than the download said: cut */
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return -EAGAIN;
                        if (errno != EINVAL && errno != ENOSYS)
                                return negative_errno();
                        st->no_splice = true;
                }
                if (!m->stream_buf && !(m->stream_buf = malloc(PULL_STREAM_CHUNK_BYTES)))
                        return -ENOMEM;
                n = pread(blob_fd, m->stream_buf, want, (off_t) st->fed);
                if (n <= 0)
                        return n == 0 ? -ENODATA : negative_errno();
                k = write(st->fd, m->stream_buf, (size_t) n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                /* What the pipe did not take is read again next time. */
                return k;
        }
}

/* Moves what the download has written so far from the temp file into the
 * pipe, until the pipe is full (then waits to be told it is writable). The
 * last byte waits for the download's verdict: the converter sees the whole
 * blob only once its digest was verified, and a download that fails ends
 * the stream short (pull_stream_close), which the converter rejects. */
void pull_stream_feed(PullOp *op, size_t i) {
        PullLayer *l = &op->layers[i];
        PullStream *st = l->stream;
        PullBlob *j = l->job;
        uint64_t avail;

        if (!st || !j)
                return;
        if (j->downloaded < st->fed) {
                /* The download started over: what was fed is void. */
                pull_stream_close(l);
                return;
        }
        if (uv_is_active((uv_handle_t *) &st->poll))
                return; /* The pipe is full; the poll resumes the feed. */
        avail = j->complete ? j->size : MIN(j->downloaded, j->size > 0 ? j->size - 1 : 0);
        if (!j->complete && avail - st->fed < PULL_STREAM_CHUNK_BYTES)
                return;
        while (st->fed < avail) {
                size_t want = (size_t) MIN(avail - st->fed, (uint64_t) PULL_STREAM_CHUNK_BYTES);
                ssize_t n;

                if (want < PULL_STREAM_CHUNK_BYTES && !j->complete)
                        break; /* Wait for a full batch. */
                n = stream_move(op->manager, st, j->fd, want);
                if (n == -EAGAIN) {
                        uv_poll_start(&st->poll, UV_WRITABLE, stream_poll_cb);
                        return;
                }
                if (n < 0) {
                        /* EPIPE: the converter stopped reading; or the
                         * file went short (the download was dropped). */
                        pull_stream_close(l);
                        return;
                }
                st->fed += (uint64_t) n;
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

        st = calloc(1, sizeof(*st));
        if (!st)
                return -ENOMEM;
        if (pipe2(p, O_CLOEXEC) < 0) {
                free(st);
                return negative_errno();
        }
        /* The converter reads PULL_STREAM_CHUNK_BYTES at a time: a pipe
         * that holds several such reads keeps it busy while the loop
         * thread waits for a CPU to refill it. Beyond
         * /proc/sys/fs/pipe-max-size (1 MiB by default) only a process
         * with CAP_SYS_RESOURCE may go: halve until the kernel agrees. */
        for (size_t size = PULL_STREAM_PIPE_BYTES; size >= PULL_STREAM_CHUNK_BYTES; size /= 2)
                if (fcntl(p[1], F_SETPIPE_SZ, (int) size) >= 0)
                        break;
        r = fcntl(p[1], F_SETFL, O_NONBLOCK) < 0 ? negative_errno() : uv_poll_init(op->manager->loop, &st->poll, p[1]);
        if (r < 0) {
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

/* The one layer of op that is still to download, or SIZE_MAX when there
 * are several (or none): pending, checked in the store, or downloading. */
static size_t op_last_download(const PullOp *op) {
        size_t last = SIZE_MAX;

        for (size_t i = 0; i < op->n_layers; i++) {
                LayerStep step = op->layers[i].step;

                if (step != LAYER_PENDING && step != LAYER_CHECKING && step != LAYER_DOWNLOADING)
                        continue;
                if (last != SIZE_MAX)
                        return SIZE_MAX;
                last = i;
        }
        return last;
}

/* True when layer i downloads and its first bytes are in: its transfer is
 * live (not queued behind the bound on downloads), so a converter reading
 * it will not wait long for bytes. */
static bool layer_worth_streaming(const PullOp *op, size_t i) {
        const PullLayer *l = &op->layers[i];

        return l->step == LAYER_DOWNLOADING && !l->stream_failed && l->job && !l->job->complete &&
               l->job->downloaded > 0;
}

/* Nothing complete to convert: convert the last download of the pull as
 * it arrives, so that it and its conversion overlap, on a fast link as on
 * a slow one (the receive, its sha256 and the write to the temp file on
 * the loop thread; inflate, the diff_id and the EROFS write on the
 * converter's). Only the last: the layers of a pull convert one at a time,
 * and one that streams holds the converter until its download ends, while
 * a smaller layer that completes meanwhile would wait for it; until then
 * each layer converts from its file as soon as it is complete, while the
 * others download. Safe from a curl write callback (starts no transfer). */
void pull_op_maybe_stream(PullOp *op) {
        size_t i;
        PullLayer *l;
        int fd = -EBADF;

        if (op->failed || op->converting || op->step != OP_LAYERS)
                return;
        if (op->manager->n_streams >= PULL_STREAMS_MAX)
                return;
        i = op_last_download(op);
        if (i == SIZE_MAX || !layer_worth_streaming(op, i))
                return;
        l = &op->layers[i];
        if (stream_open(op, i, &fd) < 0)
                return;
        if (pull_work_queue_fd(op->manager, op, i, fd) < 0) {
                safe_close(fd);
                pull_stream_close(l);
                return;
        }
        l->streaming = true;
        op->converting = true;
        log_debug("%s layer %zu (%s): converting while it downloads, %" PRIu64 " of %" PRIu64 " bytes in", op->tag,
                  i, l->job->digest, l->job->downloaded, l->job->size);
        pull_stream_feed(op, i);
}
