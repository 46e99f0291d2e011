/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSBIMAGE_H
#define MSBIMAGE_H

/*
 * libmsbimage: a small blocking client of msb-imaged, the local OCI image
 * cache of the microsandbox runtime.
 *
 * The daemon speaks JSON-RPC 2.0 over a Unix stream socket, one JSON text
 * per line (see proto/openrpc.json, installed as
 * $datadir/msb-imaged/openrpc.json). This library sends one request at a
 * time and waits for its answer, so a connection is meant for one thread;
 * use one MsbClient per thread. The library keeps no global state, never
 * prints, never logs and never installs signal handlers (writes use
 * MSG_NOSIGNAL, so a dead daemon gives -EPIPE rather than SIGPIPE).
 *
 * Conventions:
 *   - Every function returns 0 (or a documented non-negative value) on
 *     success and a negative errno on failure. Outputs are `ret_*`
 *     parameters, written only on success.
 *   - -MSB_EREMOTE (i.e. -EREMOTEIO) means the daemon answered with a
 *     JSON-RPC error; msb_client_last_error() then describes it (code,
 *     name, message, raw data). Any other negative errno is a local or
 *     transport failure (-ECONNREFUSED, -ENOENT for a missing socket,
 *     -EPIPE / -ECONNRESET for a connection that broke, -EPROTO for an
 *     answer that is not valid JSON-RPC, -ENOMEM, ...). After a transport
 *     failure the connection is closed and every later call returns
 *     -ENOTCONN.
 *   - Results are plain structs owned by the caller and released with the
 *     matching *_free() function; every *_free(NULL) is a no-op that
 *     returns NULL. Strings inside a result belong to the result.
 *   - Fields the protocol allows to be null are NULL (strings, lists) or
 *     MSB_NULL_INT (-1) (integers and times).
 *   - Times are milliseconds since the epoch.
 *   - Every top-level result also carries `json`: the result exactly as the
 *     daemon sent it (a NUL-terminated JSON text), for callers that want
 *     fields this header does not model or want to print JSON (compact,
 *     members in the daemon's order).
 */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(MSBIMAGE_BUILDING)
#define MSB_PUBLIC __attribute__((visibility("default")))
#else
#define MSB_PUBLIC
#endif

/* The errno this library returns (negated) when the daemon answered a
 * request with a JSON-RPC error object. */
#define MSB_EREMOTE EREMOTEIO

/* The value of a nullable integer or time field that the daemon sent as null. */
#define MSB_NULL_INT ((int64_t) -1)

/* The longest answer line the library accepts from the daemon, in bytes,
 * newline excluded. A longer line fails the call with -EMSGSIZE and closes
 * the connection, so a runaway peer cannot make the client allocate without
 * bound. */
#define MSB_CLIENT_RESPONSE_MAX_BYTES ((size_t) 64 * 1024 * 1024)

/* File descriptors one request may send with it (x-limits request_fds). */
#define MSB_CLIENT_REQUEST_FDS_MAX 4

/* The longest socket path a Unix socket address holds, NUL excluded. */
#define MSB_CLIENT_SOCKET_PATH_MAX 107

/* ---- Library ---------------------------------------------------------- */

/* The library's version, e.g. "0.1.0". Static storage. */
MSB_PUBLIC const char *msb_version(void);

/*
 * The socket path the daemon listens on by default, found as the daemon
 * finds it: $MSB_IMAGED_SOCKET, else $XDG_RUNTIME_DIR/microsandbox/imaged.sock,
 * else /tmp/microsandbox-$UID/imaged.sock. *ret_path is a new string the
 * caller frees. -ENOMEM.
 */
MSB_PUBLIC int msb_socket_path_default(char **ret_path);

/* ---- Errors ------------------------------------------------------------ */

/* A JSON-RPC error object as the daemon sent it. */
typedef struct MsbClientError {
        int code;        /* e.g. 1001, or -32602 */
        char *name;      /* data.name, e.g. "image-not-found"; NULL when absent */
        char *message;   /* the daemon's message; never NULL */
        char *data_json; /* the whole data member as JSON text; NULL when absent */
} MsbClientError;

/* ---- Connection -------------------------------------------------------- */

typedef struct MsbClient MsbClient;

/*
 * Connects to the daemon at socket_path, or at msb_socket_path_default()
 * when socket_path is NULL. *ret_client is freed with msb_client_free().
 * -ENOENT: no socket there (the daemon is not running); -ECONNREFUSED: a
 * stale socket; -ENAMETOOLONG: the path does not fit a socket address;
 * -EINVAL: an empty path.
 */
MSB_PUBLIC int msb_client_connect(const char *socket_path, MsbClient **ret_client);

/* Closes the connection and frees the client. */
MSB_PUBLIC MsbClient *msb_client_free(MsbClient *c);

/* The socket path this client connected to. Owned by the client. */
MSB_PUBLIC const char *msb_client_socket_path(const MsbClient *c);

/*
 * Bounds how long one call may wait for the daemon, in milliseconds; 0 (the
 * default) waits for ever. A call that times out returns -ETIMEDOUT and
 * closes the connection, since its answer may still arrive later.
 */
MSB_PUBLIC void msb_client_set_timeout(MsbClient *c, uint64_t timeout_ms);

/* How long a cancelled call waits for the daemon's answer to it after
 * sending rpc.cancel, in milliseconds. The daemon answers at once; when the
 * answer is later than this the connection is closed instead. */
#define MSB_CLIENT_CANCEL_WAIT_MS 3000

/*
 * Lets a call in progress be cancelled from elsewhere: while a call waits
 * for its answer it also watches fd (borrowed; -1, the default, is none).
 * Once fd is readable, the library sends rpc.cancel for the call, waits up
 * to MSB_CLIENT_CANCEL_WAIT_MS for the call's answer (the connection stays
 * usable when it comes) and returns -ECANCELED. The daemon then stops a
 * pull that no other client waits for. The library never reads fd: a
 * SIGINT handler that writes a byte to a pipe whose read end is fd cancels
 * (the pipe stays readable, so drain it before the next call).
 */
MSB_PUBLIC void msb_client_set_cancel_fd(MsbClient *c, int fd);

/* False once a transport failure closed the connection. */
MSB_PUBLIC bool msb_client_is_connected(const MsbClient *c);

/*
 * The error the daemon sent when the last call returned -MSB_EREMOTE, or
 * NULL if the last call did not fail that way (every call starts by
 * forgetting the previous error). Owned by the client and valid until its
 * next call.
 */
MSB_PUBLIC const MsbClientError *msb_client_last_error(const MsbClient *c);

/*
 * Calls any method with params given as a JSON object text (NULL for no
 * params) and hands back the result as JSON text (*ret_result_json, which
 * the caller frees; "null" for a null result). Notifications that arrive
 * before the answer are skipped. -EINVAL when params_json is not a JSON
 * object.
 */
MSB_PUBLIC int msb_client_call(MsbClient *c, const char *method, const char *params_json,
                               char **ret_result_json);

/* rpc.discover: the daemon's OpenRPC document as JSON text (*ret_json is
 * the caller's to free). */
MSB_PUBLIC int msb_client_rpc_discover(MsbClient *c, char **ret_json);

/* ---- Images ------------------------------------------------------------ */

/* ImageHandle of proto/openrpc.json. */
typedef struct MsbImage {
        char *reference;       /* canonical, e.g. docker.io/library/alpine:latest */
        char *manifest_digest; /* may be NULL */
        char *architecture;    /* from the image config; may be NULL */
        char *os;              /* may be NULL */
        int64_t layer_count;
        int64_t size_bytes;    /* sum of compressed layer sizes, or MSB_NULL_INT */
        int64_t created_at;    /* ms since the epoch, or MSB_NULL_INT */
        int64_t last_used_at;  /* ms since the epoch, or MSB_NULL_INT */
        char *json;
} MsbImage;

MSB_PUBLIC MsbImage *msb_image_free(MsbImage *image);

typedef struct MsbImageList {
        size_t n_images;
        MsbImage *images; /* array of n_images, newest first; each with its json */
        char *json;
} MsbImageList;

MSB_PUBLIC MsbImageList *msb_image_list_free(MsbImageList *list);

/* ImageConfigDetail. String lists are NULL-terminated arrays. */
typedef struct MsbImageConfig {
        char *digest;
        char **env;        /* never NULL; may be empty */
        char **cmd;        /* NULL when the config has none */
        char **entrypoint; /* NULL when the config has none */
        char *working_dir; /* may be NULL */
        char *user;        /* may be NULL */
        char **labels;     /* key, value, key, value, ..., NULL; NULL when none.
                            * A value that is not a string is given as JSON text. */
        char *stop_signal; /* may be NULL */
} MsbImageConfig;

/* ImageLayerDetail. */
typedef struct MsbImageLayer {
        char *diff_id;
        char *blob_digest;
        char *media_type;              /* may be NULL */
        int64_t compressed_size_bytes; /* or MSB_NULL_INT */
        int64_t erofs_size_bytes;      /* or MSB_NULL_INT */
        int64_t position;              /* 0 is the bottom layer */
} MsbImageLayer;

/* ImageDetail. */
typedef struct MsbImageDetail {
        MsbImage handle;        /* handle.json is NULL; use json below */
        MsbImageConfig *config; /* NULL when the daemon has no parsed config */
        size_t n_layers;
        MsbImageLayer *layers;  /* bottom to top */
        char *json;
} MsbImageDetail;

MSB_PUBLIC MsbImageDetail *msb_image_detail_free(MsbImageDetail *detail);

/* ImagePruneReport. */
typedef struct MsbPruneReport {
        int64_t image_refs_removed;
        int64_t manifests_removed;
        int64_t layers_removed;
        int64_t fsmeta_removed;
        int64_t vmdk_removed;
        int64_t bytes_reclaimed; /* or MSB_NULL_INT when nothing was measured */
        char *json;
} MsbPruneReport;

MSB_PUBLIC MsbPruneReport *msb_prune_report_free(MsbPruneReport *report);

/* image.get: one cached image; -MSB_EREMOTE with image-not-found when absent. */
MSB_PUBLIC int msb_client_image_get(MsbClient *c, const char *reference, MsbImage **ret_image);

/* image.list: every cached image reference, newest first. */
MSB_PUBLIC int msb_client_image_list(MsbClient *c, MsbImageList **ret_list);

/* image.inspect: the handle, the parsed config and the layers. */
MSB_PUBLIC int msb_client_image_inspect(MsbClient *c, const char *reference, MsbImageDetail **ret_detail);

/* image.remove: without force, image-in-use while a pin holds the image. */
MSB_PUBLIC int msb_client_image_remove(MsbClient *c, const char *reference, bool force);

/* image.prune: everything no pin holds. */
MSB_PUBLIC int msb_client_image_prune(MsbClient *c, MsbPruneReport **ret_report);
/* image.prune {unused_for_ms}: only the references not used (pulled, loaded
 * or pinned through) for that many milliseconds; MSB_NULL_INT: all, as
 * msb_client_image_prune(). -EINVAL for another negative value. */
MSB_PUBLIC int msb_client_image_prune_unused(MsbClient *c, int64_t unused_for_ms, MsbPruneReport **ret_report);

/* image.load: images from an OCI layout, OCI archive or docker-save archive.
 * path must be absolute (the daemon reads it); tag may be NULL. */
MSB_PUBLIC int msb_client_image_load(MsbClient *c, const char *path, const char *tag, MsbImageList **ret_list);

typedef enum MsbLoadEvent {
        MSB_LOAD_READING,
        MSB_LOAD_RESOLVED,
        MSB_LOAD_LAYER_CACHED,
        MSB_LOAD_LAYER_CONVERTED,
        MSB_LOAD_COMPLETE,
        MSB_LOAD_UNKNOWN, /* an event this library does not know; see json */
} MsbLoadEvent;

/*
 * One image.load.progress notification (LoadProgress). Fields an event does
 * not carry are NULL or MSB_NULL_INT (total_bytes of a pipe, whose size is
 * not known). Owned by the library, valid only during the callback.
 */
typedef struct MsbLoadProgress {
        MsbLoadEvent event;
        const char *event_name;
        int64_t read_bytes;
        int64_t total_bytes;
        const char *manifest_digest;
        int64_t layer_count;
        int64_t position;
        const char *digest;
        const char *diff_id;
        int64_t erofs_size_bytes;
        int64_t images;
        const char *json; /* the params object */
} MsbLoadProgress;

/* Called for each progress notification of the load; a negative errno
 * abandons the call, as for a pull. */
typedef int (*MsbLoadProgressFn)(const MsbLoadProgress *progress, void *userdata);

/*
 * What to load: path (absolute, read by the daemon), or when path is NULL
 * the archive behind fd, a regular file or a pipe read from where it
 * stands, which is sent to the daemon with the request (so the daemon
 * needs no access to it; fd stays the caller's). image picks one image of
 * a source of several (a name or manifest digest), tag names it; both may
 * be NULL.
 */
typedef struct MsbLoadOptions {
        const char *path;
        int fd;
        const char *image;
        const char *tag;
} MsbLoadOptions;

/* image.load with options; progress may be NULL. */
MSB_PUBLIC int msb_client_image_load_with(MsbClient *c, const MsbLoadOptions *options, MsbLoadProgressFn progress,
                                          void *userdata, MsbImageList **ret_list);

/* ---- Pull -------------------------------------------------------------- */

typedef enum MsbPullEvent {
        MSB_PULL_RESOLVING,
        MSB_PULL_RESOLVED,
        MSB_PULL_LAYER_CACHED,
        MSB_PULL_LAYER_DOWNLOAD,
        MSB_PULL_LAYER_DOWNLOADED,
        MSB_PULL_LAYER_CONVERTED,
        MSB_PULL_FSMETA,
        MSB_PULL_VMDK,
        MSB_PULL_COMPLETE,
        MSB_PULL_UNKNOWN, /* an event this library does not know; see json */
} MsbPullEvent;

/*
 * One image.pull.progress notification (PullProgress). Fields an event does
 * not carry are NULL or MSB_NULL_INT. Everything is owned by the library and
 * valid only during the callback.
 */
typedef struct MsbPullProgress {
        MsbPullEvent event;
        const char *event_name;
        const char *reference;
        const char *manifest_digest;
        const char *digest;
        const char *diff_id;
        int64_t layer_count;
        int64_t position;
        int64_t total_bytes;
        int64_t downloaded_bytes;
        int64_t erofs_size_bytes;
        int64_t size_bytes;
        const char *json; /* the params object */
} MsbPullProgress;

/*
 * Called for each progress notification of the pull. Returning a negative
 * errno abandons the pull: the call returns that value and the connection
 * is closed, which the daemon takes as a cancellation (the pull stops
 * unless another client waits for it).
 */
typedef int (*MsbPullProgressFn)(const MsbPullProgress *progress, void *userdata);

typedef struct MsbPullOptions {
        const char *policy;   /* "if-missing" (NULL), "always" or "never" */
        const char *platform; /* "os/arch[/variant]"; NULL for the daemon's default */
} MsbPullOptions;

/* image.pull; options and progress may be NULL. */
MSB_PUBLIC int msb_client_image_pull(MsbClient *c, const char *reference, const MsbPullOptions *options,
                                     MsbPullProgressFn progress, void *userdata, MsbImage **ret_image);

/* ---- Pins -------------------------------------------------------------- */

typedef struct MsbRootfsLayer {
        char *diff_id;
        char *path;               /* absolute path of the layer's EROFS image */
        int64_t erofs_size_bytes; /* or MSB_NULL_INT */
} MsbRootfsLayer;

/* Rootfs: what a sandbox needs to boot. */
typedef struct MsbRootfs {
        char *manifest_digest;
        char *fsmeta_path; /* may be NULL */
        char *vmdk_path;   /* may be NULL */
        size_t n_layers;
        MsbRootfsLayer *layers;
        char *json;
} MsbRootfs;

MSB_PUBLIC MsbRootfs *msb_rootfs_free(MsbRootfs *rootfs);

typedef struct MsbPin {
        char *kind; /* "sandbox" or "snapshot" */
        char *name;
        char *reference;
        char *manifest_digest;
        int64_t created_at;
} MsbPin;

typedef struct MsbPinList {
        size_t n_pins;
        MsbPin *pins; /* oldest first */
        char *json;
} MsbPinList;

MSB_PUBLIC MsbPinList *msb_pin_list_free(MsbPinList *list);

/* pin.add: kind is "sandbox" or "snapshot"; replaces an earlier pin of that name. */
MSB_PUBLIC int msb_client_pin_add(MsbClient *c, const char *kind, const char *name, const char *reference,
                                  MsbRootfs **ret_rootfs);
/* pin.remove: -MSB_EREMOTE with pin-not-found when there is no such pin. */
MSB_PUBLIC int msb_client_pin_remove(MsbClient *c, const char *kind, const char *name);
/* pin.list: every pin, oldest first. */
MSB_PUBLIC int msb_client_pin_list(MsbClient *c, MsbPinList **ret_list);

/* ---- System ------------------------------------------------------------ */

typedef struct MsbSystemInfo {
        char *version;
        char *store_path;
        char *socket_path;
        int64_t pid;
        int64_t uptime_ms;
        int64_t started_at;
        char *json;
} MsbSystemInfo;

MSB_PUBLIC MsbSystemInfo *msb_system_info_free(MsbSystemInfo *info);

typedef struct MsbDiskUsage {
        int64_t count;
        int64_t bytes; /* allocated bytes (st_blocks * 512) */
} MsbDiskUsage;

typedef struct MsbSystemDf {
        int64_t image_refs;
        MsbDiskUsage manifests;
        MsbDiskUsage configs;
        MsbDiskUsage layers;
        MsbDiskUsage fsmeta;
        MsbDiskUsage vmdk;
        int64_t index_bytes;
        int64_t total_bytes;
        int64_t reclaimable_bytes;
        char *json;
        /* The disk budget (README "Configuration"): MSB_NULL_INT, all
         * three, when the daemon has none. remaining is max - total_bytes,
         * negative when the store is over its budget. After json, so that
         * the fields before keep their places. */
        int64_t budget_max_bytes;
        int64_t budget_low_bytes;
        int64_t budget_remaining_bytes;
} MsbSystemDf;

MSB_PUBLIC MsbSystemDf *msb_system_df_free(MsbSystemDf *df);

/* system.info: version, paths, pid and uptime of the daemon. */
MSB_PUBLIC int msb_client_system_info(MsbClient *c, MsbSystemInfo **ret_info);
/* system.df: bytes on disk by kind. */
MSB_PUBLIC int msb_client_system_df(MsbClient *c, MsbSystemDf **ret_df);

/* ---- Events ------------------------------------------------------------ */

/*
 * One notification of events.subscribe: an "event" (type "image.loaded",
 * "image.pulled", "image.removed", "image.pruned", "image.evicted",
 * "pin.added" or "pin.removed") or, as type "events.lost", the daemon
 * saying that this connection did not read fast enough and how many events
 * it missed (lost_count). Fields an event does not carry are NULL or
 * MSB_NULL_INT.
 */
typedef struct MsbEvent {
        char *type;
        char *reference;       /* canonical */
        char *manifest_digest;
        int64_t at;            /* ms since the epoch */
        char *kind;            /* pin events: "sandbox" or "snapshot" */
        char *name;            /* pin events: the pin's name */
        int64_t lost_count;    /* "events.lost" only */
        char *json;            /* the notification's params */
} MsbEvent;

MSB_PUBLIC MsbEvent *msb_event_free(MsbEvent *event);

/*
 * events.subscribe: from now on the daemon sends this connection an event
 * for each change of the cache; read them with msb_client_event_read().
 * Meant for a connection of its own: events that arrive while another call
 * on it waits for its answer are skipped.
 */
MSB_PUBLIC int msb_client_events_subscribe(MsbClient *c);
/* events.unsubscribe; events already on their way may still be read. */
MSB_PUBLIC int msb_client_events_unsubscribe(MsbClient *c);
/*
 * Waits for the next event (at most the client's timeout, when one is set:
 * -ETIMEDOUT then, and the connection stays usable). -ECONNRESET when the
 * daemon closed the connection.
 */
MSB_PUBLIC int msb_client_event_read(MsbClient *c, MsbEvent **ret_event);

#ifdef __cplusplus
}
#endif

#endif /* MSBIMAGE_H */
