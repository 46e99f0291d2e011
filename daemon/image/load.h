/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * image.load: imports images from an OCI image layout directory, an OCI
 * archive (a tar of a layout, optionally compressed) or a docker-save
 * archive. Every blob is verified against its descriptor before anything
 * is committed. Blocking: runs on a worker thread.
 */

#include <jansson.h>

#include "error.h"
#include "store.h"

/* An archive member larger than this is refused before it is unpacked. */
#define LOAD_ARCHIVE_MEMBER_MAX_BYTES ((uint64_t) PROTO_LIMIT_LAYER_UNCOMPRESSED_BYTES)
/* Members of an archive; layouts hold a few blobs per image. */
#define LOAD_ARCHIVE_MEMBERS_MAX PROTO_LIMIT_ARCHIVE_MEMBERS
/*
 * README "Limits": the bytes one load may unpack into the store's tmp/ (the
 * sizes its archive's members declare, counted before each is written). An
 * archive holds an image's blobs: compressed layers for an OCI archive, the
 * layers' tars for a docker-save one. The largest images in common use (the
 * CUDA and ML framework bases) are 10 to 25 GB as tars; 64 GiB holds such an
 * image, or a few smaller ones in one archive, with room to spare, while a
 * gzip bomb (a small .tar.gz whose members expand without end: each is
 * capped by LOAD_ARCHIVE_MEMBER_MAX_BYTES, their number by
 * LOAD_ARCHIVE_MEMBERS_MAX, their total only by this) stops here, with
 * everything it unpacked removed.
 */
#define LOAD_STAGED_MAX_BYTES ((uint64_t) PROTO_LIMIT_LOAD_STAGED_BYTES)
/* A pipe that brings no byte for this long (5 minutes) ends the load,
 * limit-exceeded: a client that passes a pipe and never writes it cannot
 * hold a worker thread for ever. Generous, since the writer (docker save,
 * skopeo) may think a while between layers. */
#define LOAD_PIPE_IDLE_MAX_MS ((uint64_t) PROTO_LIMIT_LOAD_PIPE_IDLE_MS)
/* How often a load reports the bytes it has read of an archive. */
#define LOAD_PROGRESS_INTERVAL_MS 200

/* Gets each progress event (the params of image.load.progress without its
 * id; taken) on the worker thread that runs the load. */
typedef void (*LoadProgressFn)(json_t *event, void *userdata);

typedef struct LoadRequest {
        const char *path;   /* absolute path of a layout directory or archive; or NULL and fd */
        int fd;             /* an archive (regular file or pipe) to read from where it stands, or -EBADF */
        const char *image;  /* loads only this image of the source: a name or manifest digest; or NULL */
        const char *tag;    /* a canonical reference naming the (single) image, or NULL */
        LoadProgressFn progress; /* may be NULL */
        void *userdata;
} LoadRequest;

/* Loads the source. All of its images commit together, or nothing does and
 * what the load published is taken back out. *ret gets the array of
 * ImageHandles. */
int load_images(Store *store, const LoadRequest *req, json_t **ret, MsbError *err);
