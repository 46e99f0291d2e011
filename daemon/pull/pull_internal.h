/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the files of image.pull share; nothing outside them includes this.
 *
 *   pull.c          the manager, the public API, pull_start: policies,
 *                   the cache, joining a pull in flight
 *   pull_op.c       the state machine of one pull (PullOp): its steps,
 *                   layers, failure and the end that answers every caller
 *   pull_resolve.c  its first steps: credentials from a Docker credential
 *                   helper, the manifest or index, then the config
 *   pull_blob.c     a blob download shared by every layer (of any pull)
 *                   with that digest
 *   pull_stream.c   a layer converted while it downloads, through a pipe
 *   pull_request.c  the callers of a pull: progress fan-out, the replay
 *                   for a caller that joins late, cache answers, detach
 *   pull_work.c     the round trips to worker threads (store, ingest)
 *
 * Everything here runs on the loop thread, except pull_work.c's work
 * callback, which touches only the store and the op's Ingest.
 */

#include <sys/stat.h>

#include "credential_helper.h"
#include "curl_lib.h"
#include "ingest.h"
#include "log.h"
#include "oci.h"
#include "pull.h"
#include "registry.h"
#include "registry_config.h"

typedef struct PullOp PullOp;
typedef struct PullBlob PullBlob;

typedef enum LayerStep {
        LAYER_PENDING,     /* not started */
        LAYER_CHECKING,    /* converted by an earlier pull: checking the store */
        LAYER_DOWNLOADING, /* waiting on a PullBlob */
        LAYER_DOWNLOADED,  /* blob complete, waiting for the converter */
        LAYER_CONVERTING,
        LAYER_DONE,        /* cached or converted */
} LayerStep;

/*
 * A layer converted while it downloads: the converter reads a pipe on a
 * worker thread, and the loop feeds the pipe from the download's temp file
 * (splice(2)) as bytes arrive there (never blocking: a full pipe waits for
 * a uv_poll); the last byte only once the download's digest was verified.
 * The temp file stays the truth: when the stream breaks (the download had
 * to restart, the converter stopped early), the layer is converted again
 * from the complete file.
 */
typedef struct PullStream {
        uv_poll_t poll;
        int fd;       /* the pipe's write end */
        uint64_t fed; /* bytes of the blob written to the pipe */
        bool no_splice; /* the temp file's file system cannot splice(2): copy */
        PullOp *op;
        size_t layer;
} PullStream;

typedef struct PullLayer {
        LayerStep step;
        PullBlob *job; /* held from DOWNLOADING until converted */
        uint64_t reported_bytes;
        uint64_t reported_ms;
        uint64_t erofs_size;  /* once converted */
        bool cached;          /* found in the store, not converted here */
        PullStream *stream;   /* while feeding a streaming conversion */
        bool streaming;       /* a streaming conversion runs (stream may be closed already) */
        bool stream_failed;   /* it failed: convert from the file instead */
        bool download_reported;
        uint64_t download_started_ms;
} PullLayer;

/* The tag of a pull in log lines ("pull#12"), bytes with the NUL. */
#define PULL_TAG_MAX REGISTRY_LOG_TAG_MAX

typedef enum OpStep {
        OP_LIBRARY,   /* a worker loads libcurl (the daemon's first pull) */
        OP_CREDENTIALS, /* a Docker credential helper runs */
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
        char tag[PULL_TAG_MAX];     /* its pull's, or its own for an answer from the cache */
        PullRequest *next;          /* in op->requests */
};

struct PullOp {
        PullManager *manager;
        char tag[PULL_TAG_MAX];  /* "pull#12": every log line about this pull carries it */
        uint64_t started_ms;
        int64_t started_at_ms;   /* the same on the wall clock, for the disk budget (ingest_set_started_at) */
        char *key;
        Reference *ref;
        OciPlatform want;
        PullRequest *requests;
        OpStep step;
        CredentialHelperRun *helper;
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
        bool ingest_aborted; /* WORK_ABORT ran (or was queued) for a failed pull */
        PullLayer *layers;
        size_t n_layers;
        unsigned n_downloading;
        bool converting;
        unsigned works_in_flight;
        bool pumping;
        bool repump;

        bool failed;
        bool cancelled;       /* every caller gave up on it */
        int error;
        MsbError err;
        char *fail_context;   /* the failed fetch's last exchange, for the log */
        json_t *handle;
        PullOp *next;
};

/* A layer (of one pull) that waits for a PullBlob. */
typedef struct PullBlobWaiter {
        PullOp *op;
        size_t layer;
} PullBlobWaiter;

/* A blob download shared by every layer (of any pull) with that digest. */
struct PullBlob {
        PullManager *manager;
        char digest[DIGEST_STRING_MAX];
        uint64_t size;
        int fd;
        char *tmp_path;
        RegistryFetch *fetch;
        bool complete;
        uint64_t downloaded;
        PullBlobWaiter *waiters;
        size_t n_waiters;
        PullBlob *next;
};

/* What the Docker config file looked like when it was read: a pull looks
 * again before it goes to the network, and reads it again if it changed. */
typedef struct PullDockerStamp {
        bool exists;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
} PullDockerStamp;

struct PullManager {
        uv_loop_t *loop;
        Store *store;
        StoreReader *reader; /* the loop thread's read connection, for cache hits */
        RegistryConfig *config;
        json_t *config_json;    /* the daemon config it came from (our copy) */
        char *docker_path;      /* of the Docker config, NULL when there is none */
        PullDockerStamp docker_stamp;
        unsigned next_tag;      /* the number of the next pull#N */
        Registry *registry;
        PullOp *ops;
        PullBlob *blobs;
        char *converted[PULL_CONVERTED_MEMORY];
        size_t converted_next;
        unsigned works_in_flight;
        bool shutting_down;
        bool freeing;
        unsigned busy; /* frames that still use the manager: no release under them */
        unsigned n_streams; /* conversions reading a pipe (PULL_STREAMS_MAX) */
        char *stream_buf; /* PULL_STREAM_CHUNK_BYTES, for feeding pipes on the loop where splice(2) fails */
};

typedef enum PullWorkKind {
        WORK_LOAD_CURL, /* curl_lib_load(), for the daemon's first pull */
        WORK_TOUCH,   /* a cache hit: mark the reference used */
        WORK_PREPARE, /* ingest_new and which layers are cached */
        WORK_CHECK,   /* is a layer converted by an earlier pull still there? */
        WORK_CONVERT,
        WORK_COMMIT,
        WORK_ABORT,   /* a failed pull takes back what its ingest published */
} PullWorkKind;

typedef struct PullWork {
        uv_work_t req;
        PullWorkKind kind;
        PullManager *manager;
        PullOp *op;
        PullRequest *request; /* WORK_TOUCH */
        size_t layer;
        char *path;           /* WORK_CONVERT: the blob; WORK_TOUCH: the reference */
        int fd;               /* WORK_CONVERT: the pipe to read instead of path, or -1 */
        bool streamed;        /* WORK_CONVERT: it reads a pipe (counted in n_streams) */
        bool *cached;         /* WORK_PREPARE */
        uint64_t size;
        int r;
        MsbError err;
        json_t *result;
} PullWork;

/* pull.c */

/* Frees the manager once pull_manager_free() was called and nothing uses
 * it any more (no op, no worker job, no frame on the stack). */
void pull_manager_maybe_release(PullManager *m);
/* Reads the Docker config again when it changed since it was read. */
void pull_manager_refresh_docker_config(PullManager *m, const char *tag);
/* A new "pull#N" tag. */
void pull_manager_new_tag(PullManager *m, char tag[static PULL_TAG_MAX]);
/* True while op is one of the manager's pulls (not yet finished). */
bool pull_manager_has_op(const PullManager *m, const PullOp *op);
/* The memory of layers converted by earlier pulls, by diff_id. */
bool pull_manager_converted(const PullManager *m, const char *diff_id);
void pull_manager_remember_converted(PullManager *m, const char *diff_id);
void pull_manager_forget_converted(PullManager *m, const char *diff_id);

/* pull_op.c */

/* A new pull of ref for want under key, linked into the manager and
 * resolving. Takes *key and *want over (clearing them) unless it fails for
 * memory at once. */
int pull_op_new(PullManager *m, const Reference *ref, char **key, OciPlatform *want, PullOp **ret,
                MsbError *err);
void pull_op_free(PullOp *op);
/* Calls every caller back and frees the op, once no worker touches it. */
void pull_op_finish(PullOp *op);
/* Fails the pull (err NULL: a generic message); a no-op once it failed. */
void pull_op_fail(PullOp *op, int r, const MsbError *err);
void pull_op_fail_errno(PullOp *op, int r, const char *what);
/* The same for a failed fetch: the log line names its last exchange,
 * context (registry_fetch_describe(), may be NULL), or that of f. */
void pull_op_fail_fetch(PullOp *op, const char *context, int r, const MsbError *err);
void pull_op_fail_fetch_of(PullOp *op, const RegistryFetch *f, int r, const MsbError *err);
/* Moves layers on: downloads, conversions, the commit. */
void pull_op_pump(PullOp *op);
/* Stops what the op has on the network: its fetch, its layers' feeds and
 * downloads. Worker jobs finish on their own. */
void pull_op_drop_transfers(PullOp *op);
/* Lets go of layer i's feed and download. */
void pull_layer_drop(PullOp *op, size_t i);
/* Layer i's blob is complete. */
void pull_layer_downloaded(PullOp *op, size_t i);
/* What the worker jobs of the op came back with. */
void pull_op_prepared(PullOp *op, PullWork *w);
void pull_op_layer_checked(PullOp *op, PullWork *w);
void pull_op_layer_converted(PullOp *op, PullWork *w);
void pull_op_committed(PullOp *op, PullWork *w);

/* pull_resolve.c */

/* The first step of a new pull: the credentials of a Docker credential
 * helper when one is configured for the registry, then the manifest or
 * index the op's reference names, and on from there to the config and the
 * worker that prepares the ingest. */
int pull_op_start(PullOp *op);
/* The worker's curl_lib_load() came back: the pull starts or fails. */
void pull_op_library_loaded(PullOp *op, PullWork *w);

/* pull_blob.c */

/* The download of digest in flight, or NULL. */
PullBlob *pull_blob_find(PullManager *m, const char *digest);
/* Starts downloading the blob of il into a temp file. */
int pull_blob_new(PullManager *m, PullOp *op, const IngestLayer *il, PullBlob **ret, MsbError *err);
void pull_blob_free(PullBlob *j);
int pull_blob_add_waiter(PullBlob *j, PullOp *op, size_t layer);
/* A layer lets go of its download; the last one out drops it. */
void pull_blob_release(PullBlob *j, const PullOp *op, size_t layer);

/* pull_stream.c */

/* Copies what the download of layer i has written so far into its pipe. */
void pull_stream_feed(PullOp *op, size_t i);
/* Ends the feed: EOF for the converter. */
void pull_stream_close(PullLayer *l);
/* Starts converting a slow download while it arrives, when nothing
 * complete waits for the converter. */
void pull_op_maybe_stream(PullOp *op);

/* pull_request.c */

int pull_request_new(PullManager *m, PullProgressFn progress, PullDoneFn done, void *userdata,
                     PullRequest **ret);
PullRequest *pull_request_free(PullRequest *q);
DEFINE_TRIVIAL_CLEANUP_FUNC(PullRequest *, pull_request_free);
/* Adds caller q to op; q first hears what the pull has done so far. */
void pull_request_join(PullOp *op, PullRequest *q);
/* The progress events (taken over by pull_op_emit()). */
json_t *pull_event_resolving(const PullOp *op);
json_t *pull_event_resolved(const PullOp *op);
json_t *pull_event_layer_cached(const PullOp *op, size_t i);
json_t *pull_event_layer_download(const PullOp *op, size_t i, uint64_t bytes);
json_t *pull_event_layer_downloaded(const PullOp *op, size_t i);
/* With the layer's erofs_size. */
json_t *pull_event_layer_converted(const PullOp *op, size_t i);
/* Sends event (taken over) to every caller of op. */
void pull_op_emit(PullOp *op, json_t *event);
/* A layer-download event, rate-limited unless force. */
void pull_op_emit_layer_download(PullOp *op, size_t i, uint64_t bytes, bool force);
/* Answers q with the image a WORK_TOUCH job found, and frees q. */
void pull_request_answer_from_cache(PullRequest *q, PullWork *w);

/* pull_work.c */

/* Queues work for a worker; handle (may be NULL) is taken over, never
 * shared: the worker may replace and free it while the loop goes on, and a
 * jansson value is not for two threads. */
int pull_work_queue(PullManager *m, PullOp *op, PullWorkKind kind, size_t layer, const char *path,
                    PullRequest *request, json_t *handle);
/* A conversion reading from fd (a pipe, handed over to the worker). */
int pull_work_queue_fd(PullManager *m, PullOp *op, size_t layer, int fd);
