/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * image.pull: the pull state machine on top of the registry client and the
 * common ingest path.
 *
 * A pull resolves the reference (manifest by tag or digest; an index is
 * narrowed to one platform), fetches the config, asks the store which layers
 * are already converted (by diff_id), downloads the others to temp files
 * (hashed as bytes arrive, a bounded number at a time) and hands each one to
 * the EROFS converter on a worker thread as soon as it is complete, while the
 * rest still download. When every layer is in, the image is committed.
 *
 * Sharing: two pulls of the same reference and platform are one pull with
 * two callers; two pulls whose images share a blob download it once; a layer
 * converted by one pull is reused by the next. A caller that goes away
 * (pull_request_detach, pull_request_cancel) does not disturb the others; a
 * pull that has no caller left stops: its transfers are removed, the
 * downloads no other pull shares are dropped with their temporary files,
 * and a conversion reading one of them ends at once (the file is cut to
 * nothing before it goes, so the converter reads its end).
 *
 * Credentials: a registry's come from the daemon config, else from the
 * Docker credential helper ~/.docker/config.json names for it (run at the
 * start of each pull that goes to the network), else from its "auths".
 * The Docker config is read again when it changed since it was last read
 * (looked at when a pull starts); pull_manager_reconfigure() takes a new
 * daemon config (SIGHUP) without disturbing the transfers in flight.
 *
 * The log: each pull is "pull#N" in every line about it (its start, the
 * callers that join or cancel it, each HTTP exchange at debug level, its
 * retries, its end); a failure is a warning that names the reference, the
 * registry and the failed exchange (URL without secrets, HTTP status or
 * curl error, retries).
 *
 * Policies: "if-missing" answers from the cache without network when the
 * reference is there; "always" re-resolves (and still reuses every layer
 * present); "never" answers from the cache or fails with image-not-found.
 *
 * Everything runs on the loop thread except the store and ingest calls,
 * which go to the uv work queue. The done callback comes from the loop,
 * never from inside pull_start(); the first progress event ("resolving") is
 * sent from inside it. A progress callback must not detach or free.
 */

#include <jansson.h>
#include <uv.h>

#include "error.h"
#include "reference.h"
#include "store.h"

/* A layer-download event is sent after this many new bytes ... */
#define PULL_PROGRESS_MIN_BYTES (1 * MiB)
/* ... or after this long since the previous one (milliseconds), whichever
 * comes first; the last one (all bytes) is always sent. */
#define PULL_PROGRESS_MIN_INTERVAL_MS 200U
/* Largest compressed layer we download, bytes (the uncompressed limit
 * bounds the compressed size too). */
#define PULL_LAYER_MAX_BYTES ((uint64_t) PROTO_LIMIT_LAYER_UNCOMPRESSED_BYTES)
/* How many diff_ids converted by earlier pulls the manager remembers, so
 * that a later pull converts them from the store instead of downloading. */
#define PULL_CONVERTED_MEMORY 1024U
/* A layer converts while it downloads through a pipe: the loop moves the
 * downloaded file into the pipe once this many new bytes are there (or the
 * download is complete), this many per splice (bytes). Large batches keep
 * the converter's reads large: small reads cost its tar and gzip layers
 * far more than the wait. */
#define PULL_STREAM_CHUNK_BYTES (1 * MiB)
/* ... into a pipe this large (bytes; F_SETPIPE_SZ, best effort: halved
 * down to PULL_STREAM_CHUNK_BYTES where the kernel refuses). The pipe's
 * pages are the page cache's, spliced, not copies. */
#define PULL_STREAM_PIPE_BYTES (8 * MiB)
/* At most this many conversions in the daemon read a pipe at once: each
 * holds a worker thread (of main.c's DAEMON_WORKER_THREADS, 16) while it
 * waits for bytes from the network, and the other workers stay free for
 * loads, commits and cache answers. A layer beyond it downloads to its
 * file and converts from there. */
#define PULL_STREAMS_MAX 4U

typedef struct PullManager PullManager;
typedef struct PullRequest PullRequest;

/* event: the params of an image.pull.progress notification without "id"
 * (borrowed: take a reference to keep it). */
typedef void (*PullProgressFn)(json_t *event, void *userdata);
/* Final: r == 0 with handle (borrowed) the ImageHandle, or r < 0 with err.
 * The PullRequest is freed when this returns. */
typedef void (*PullDoneFn)(int r, const MsbError *err, json_t *handle, void *userdata);

/* config: the daemon config object (its "registries" and download limits;
 * NULL for defaults); credentials of ~/.docker/config.json are added. An
 * invalid config is -EINVAL (registry_config_new() says which field). */
int pull_manager_new(uv_loop_t *loop, Store *store, const json_t *config, PullManager **ret);

/* A new daemon config (SIGHUP): new requests use its registries, with the
 * Docker config read again; transfers in flight go on. -EINVAL with err
 * (as pull_config_check) keeps the current one. */
int pull_manager_reconfigure(PullManager *m, const json_t *config, MsbError *err);

/* Checks the pull-related parts of a daemon config: 0, or -EINVAL with err
 * (invalid-params, data.parameter naming the field) saying what is wrong,
 * for main to print before it starts. */
int pull_config_check(const json_t *config, MsbError *err);

/* Abandons every pull without calling back and releases the manager once
 * the worker jobs in flight have returned: run the loop after this until it
 * has no more handles. Returns NULL. */
PullManager *pull_manager_free(PullManager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(PullManager *, pull_manager_free);

/* SIGTERM: every pull in flight fails with shutting-down (after its worker
 * jobs return, so the store stays consistent), and new pulls are refused. */
void pull_manager_shutdown(PullManager *m);

/* Pulls in flight (shared pulls count once). */
size_t pull_manager_n_pulls(const PullManager *m);

/*
 * Starts (or joins) a pull. policy: "if-missing" (NULL means this), "always"
 * or "never"; platform: "os/arch[/variant]" or NULL for linux and the host
 * architecture. Errors found at once (a bad platform, shutting down) return
 * negative with err set and no callback; otherwise exactly one done call
 * follows, unless the request is detached first.
 */
int pull_start(PullManager *m, const Reference *ref, const char *policy, const char *platform,
               PullProgressFn progress, PullDoneFn done, void *userdata, PullRequest **ret, MsbError *err);

/* The caller went away: no more callbacks; frees the request. */
void pull_request_detach(PullRequest *r);

/* The caller gave up (rpc.cancel, or it hung up): its done callback runs at
 * once, from inside this call, with -ECANCELED and a shutting-down error
 * (the pull was abandoned for it and took no effect for it: the same promise
 * as a call refused at shutdown), then the request is detached and freed.
 * The pull goes on for its other callers; without any, it stops (see
 * above). A pull already committing still lands in the store. */
void pull_request_cancel(PullRequest *r);

/* The tag of the request's pull in the log ("pull#12"). */
const char *pull_request_tag(const PullRequest *r);
