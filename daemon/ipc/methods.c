/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The RPC handlers: each gets its params decoded by its field table (which
 * rpc_new() checks against proto/openrpc.json), checks what only it can (a
 * reference's syntax, an absolute path), calls one module, and returns the
 * result. Loop handlers get the loop's context, worker handlers the
 * workers' (daemon.h).
 */

#include <stddef.h>

#include "daemon.h"
#include "events.h"
#include "load.h"
#include "log.h"
#include "oci.h"
#include "pull.h"
#include "reference.h"
#include "server.h"

/* The values of the enums of proto/openrpc.json, in its order. */
static const char *const pin_kind_names[] = { "sandbox", "snapshot", NULL };
static const char *const pull_policy_names[] = { "if-missing", "always", "never", NULL };

typedef struct ReferenceParams {
        const char *reference;
} ReferenceParams;

static const RpcField reference_fields[] = {
        { "reference", RPC_FIELD_STRING, offsetof(ReferenceParams, reference), true, NULL },
        {}
};

/* Parses what names a cached image: a reference, a manifest digest or a
 * unique prefix of its hex digits. One that does not parse is invalid
 * params, never "not found". */
static int invalid_reference(MsbError *err, const char *field, const char *s, const char *reason) {
        msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REFERENCE, "invalid reference '%s': %s", s,
                      reason ?: "it does not parse");
        msb_error_add_data(err, "parameter", json_string(field));
        return -EINVAL;
}

static int param_image_spec(const char *s, ImageSpec **ret, MsbError *err) {
        const char *reason = NULL;
        int r;

        r = image_spec_parse(s, ret, &reason);
        if (r < 0 && r != -ENOMEM)
                return invalid_reference(err, "reference", s, reason);
        return r;
}

/* The same for a name only (a pull's, a load's tag). */
static int param_reference(const char *s, const char *field, Reference **ret, MsbError *err) {
        const char *reason = NULL;
        int r;

        r = reference_parse(s, ret, &reason);
        if (r < 0 && r != -ENOMEM)
                return invalid_reference(err, field, s, reason);
        return r;
}

/* ---- images ---- */

static int method_image_get(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const ReferenceParams *p = params;
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        int r = param_image_spec(p->reference, &spec, err);
        if (r < 0)
                return r;
        return store_reader_image_get(ctx->reader, spec, ret, err);
}

typedef struct ListParams {
        bool rows;
} ListParams;

static const RpcField list_fields[] = {
        { "rows", RPC_FIELD_BOOL, offsetof(ListParams, rows), false, NULL },
        {}
};

static int method_image_list(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const ListParams *p = params;
        char *text = NULL;
        int r = store_reader_image_list_text(ctx->reader, p->rows ? STORE_LIST_ROWS : STORE_LIST_OBJECTS, &text, err);
        if (r < 0)
                return r;
        rpc_call_set_raw_result(call, text);
        return 0;
}

static int method_image_inspect(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                                MsbError *err) {
        const ReferenceParams *p = params;
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        _cleanup_(oci_config_freep) OciConfig *config = NULL;
        _cleanup_free_ char *path = NULL, *data = NULL;
        json_t *detail = NULL;
        size_t size;
        int r;

        r = param_image_spec(p->reference, &spec, err);
        if (r < 0)
                return r;
        r = store_image_inspect(ctx->store, spec, &detail, err);
        if (r < 0)
                return r;

        /* The config blob was verified when it entered the store. */
        const char *digest = json_string_value(json_object_get(detail, "config_digest"));
        path = store_blob_path(ctx->store, digest);
        json_t *config_detail = json_null();
        if (path && read_file_bounded(path, OCI_CONFIG_MAX_BYTES, &data, &size) >= 0 &&
            oci_config_parse(data, size, &config, NULL) >= 0)
                config_detail = oci_config_detail(config, digest);
        json_object_set_new(detail, "config", config_detail);
        json_object_del(detail, "config_digest");
        *ret = detail;
        return 0;
}

typedef struct RemoveParams {
        const char *reference;
        bool force;
} RemoveParams;

static const RpcField remove_fields[] = {
        { "reference", RPC_FIELD_STRING, offsetof(RemoveParams, reference), true, NULL },
        { "force", RPC_FIELD_BOOL, offsetof(RemoveParams, force), false, NULL },
        {}
};

static int method_image_remove(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                               MsbError *err) {
        const RemoveParams *p = params;
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        int r = param_image_spec(p->reference, &spec, err);
        if (r < 0)
                return r;
        r = store_image_remove(ctx->store, spec, p->force, err);
        if (r < 0)
                return r;
        log_info("removed %s", p->reference);
        *ret = json_null();
        return 0;
}

typedef struct PruneParams {
        int64_t unused_for_ms; /* RPC_FIELD_INT_ABSENT: every image is a candidate */
} PruneParams;

static const RpcField prune_fields[] = {
        { "unused_for_ms", RPC_FIELD_INT, offsetof(PruneParams, unused_for_ms), false, NULL },
        {}
};

static int method_image_prune(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                              MsbError *err) {
        const PruneParams *p = params;
        bool filtered = p->unused_for_ms != RPC_FIELD_INT_ABSENT;
        int r = store_image_prune(ctx->store, filtered ? p->unused_for_ms : STORE_PRUNE_ALL, ret, err);
        if (r >= 0) {
                _cleanup_free_ char *report = json_dumps(*ret, JSON_COMPACT);
                if (filtered)
                        log_info("pruned images unused for %" PRId64 " ms: %s", p->unused_for_ms, report ?: "");
                else
                        log_info("pruned: %s", report ?: "");
        }
        return r;
}

typedef struct LoadParams {
        const char *path;
        int fd; /* received with the request line; closed by rpc when the call ends */
        const char *image;
        const char *tag;
} LoadParams;

static const RpcField load_fields[] = {
        { "path", RPC_FIELD_STRING, offsetof(LoadParams, path), false, NULL },
        { "fd", RPC_FIELD_FD, offsetof(LoadParams, fd), false, NULL },
        { "image", RPC_FIELD_STRING, offsetof(LoadParams, image), false, NULL },
        { "tag", RPC_FIELD_STRING, offsetof(LoadParams, tag), false, NULL },
        {}
};

/* A load's progress goes to its caller as image.load.progress
 * notifications carrying the request's id, through the loop. Runs on the
 * load's worker thread. */
static void load_progress(json_t *event, void *userdata) {
        RpcCall *call = userdata;
        json_t *id = rpc_call_id(call);

        /* A copy: the id's reference count belongs to the loop. */
        json_object_set_new(event, "id", id ? json_deep_copy(id) : json_null());
        rpc_call_notify_from_worker(call, "image.load.progress", event);
}

static int load_params_check(const LoadParams *p, MsbError *err) {
        const char *bad = NULL, *why = NULL;

        if (!p->path == (p->fd < 0)) {
                bad = "path";
                why = "give either path (on the daemon's filesystem) or fd (an archive passed with the request), "
                      "one of them";
        } else if (p->path && p->path[0] != '/') {
                bad = "path";
                why = "path must be absolute: the daemon does not share the caller's working directory";
        } else if (p->image && !p->image[0]) {
                bad = "image";
                why = "image must name an image of the source";
        }
        if (!bad)
                return 0;
        return msb_error_invalid_param(err, bad, "%s", why);
}

static int method_image_load(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                             MsbError *err) {
        const LoadParams *p = params;
        _cleanup_(reference_freep) Reference *tag = NULL;
        int r;

        r = load_params_check(p, err);
        if (r < 0)
                return r;
        if (p->tag) {
                r = param_reference(p->tag, "tag", &tag, err);
                if (r < 0)
                        return r;
        }
        LoadRequest req = {
                .path = p->path,
                .fd = p->fd,
                .image = p->image,
                .tag = tag ? tag->canonical : NULL,
                .progress = rpc_call_id(call) ? load_progress : NULL,
                .userdata = call,
        };
        r = load_images(ctx->store, &req, ret, err);
        if (r >= 0)
                log_info("loaded %zu image(s) from %s", json_array_size(*ret), p->path ?: "an archive passed by fd");
        return r;
}

/* ---- pins ---- */

typedef struct PinParams {
        int kind; /* index in pin_kind_names */
        const char *name;
        const char *reference;
} PinParams;

static const RpcField pin_add_fields[] = {
        { "kind", RPC_FIELD_ENUM, offsetof(PinParams, kind), true, pin_kind_names },
        { "name", RPC_FIELD_STRING, offsetof(PinParams, name), true, NULL },
        { "reference", RPC_FIELD_STRING, offsetof(PinParams, reference), true, NULL },
        {}
};

static const RpcField pin_remove_fields[] = {
        { "kind", RPC_FIELD_ENUM, offsetof(PinParams, kind), true, pin_kind_names },
        { "name", RPC_FIELD_STRING, offsetof(PinParams, name), true, NULL },
        {}
};

static int method_pin_add(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const PinParams *p = params;
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        int r = param_image_spec(p->reference, &spec, err);
        if (r < 0)
                return r;
        return store_pin_add(ctx->store, pin_kind_names[p->kind], p->name, spec, ret, err);
}

static int method_pin_remove(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                             MsbError *err) {
        const PinParams *p = params;
        int r = store_pin_remove(ctx->store, pin_kind_names[p->kind], p->name, err);
        if (r < 0)
                return r;
        *ret = json_null();
        return 0;
}

static int method_pin_list(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        return store_reader_pin_list(ctx->reader, ret, err);
}

/* ---- system ---- */

static int method_system_info(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret,
                              MsbError *err) {
        *ret = json_pack("{s:s, s:s, s:s?, s:i, s:I, s:I, s:I, s:I}", "version", MSB_VERSION, "store_path",
                         ctx->store_path, "socket_path", ctx->socket_path, "pid", (int) getpid(), "uptime_ms",
                         (json_int_t) (now_monotonic_ms() - ctx->started_monotonic_ms), "started_at",
                         (json_int_t) ctx->started_at_ms, "connections",
                         (json_int_t) (ctx->server ? server_n_connections(ctx->server) : 0), "connections_max",
                         (json_int_t) (ctx->server ? server_connections_max(ctx->server) : 0));
        return *ret ? 0 : -ENOMEM;
}

static int method_system_df(RpcCall *call, RpcWorkerContext *ctx, const void *params, json_t **ret,
                            MsbError *err) {
        return store_df(ctx->store, ret, err);
}

static int method_rpc_discover(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret,
                               MsbError *err) {
        /* One text for every caller, serialised once: a batch of a thousand
         * discovers costs a thousand references, not a thousand documents. */
        rpc_call_set_shared_result(call, rpc_call_document_text(call));
        return 0;
}

typedef struct CancelParams {
        json_t *id;
} CancelParams;

static const RpcField cancel_fields[] = {
        { "id", RPC_FIELD_JSON, offsetof(CancelParams, id), true, NULL },
        {}
};

static int method_rpc_cancel(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const CancelParams *p = params;

        /* An id of no call in flight (answered already, say) is no error:
         * cancelling races the answer by nature. */
        (void) rpc_peer_cancel(rpc_call_peer(call), p->id);
        *ret = json_null();
        return 0;
}

/* ---- events ---- */

static int method_events_subscribe(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret,
                                   MsbError *err) {
        /* Outside a batch the answer is queued before any event: events go
         * out from the hub's own turn of the loop, after this one. */
        int r = event_hub_subscribe(ctx->events, rpc_call_peer(call));
        if (r < 0)
                return r;
        *ret = json_null();
        return 0;
}

static int method_events_unsubscribe(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret,
                                     MsbError *err) {
        event_hub_unsubscribe(ctx->events, rpc_call_peer(call));
        *ret = json_null();
        return 0;
}

/* ---- image.pull ---- */

typedef struct PullParams {
        const char *reference;
        int policy; /* index in pull_policy_names, -1 when absent */
        const char *platform;
} PullParams;

static const RpcField pull_fields[] = {
        { "reference", RPC_FIELD_STRING, offsetof(PullParams, reference), true, NULL },
        { "policy", RPC_FIELD_ENUM, offsetof(PullParams, policy), false, pull_policy_names },
        { "platform", RPC_FIELD_STRING, offsetof(PullParams, platform), false, NULL },
        {}
};

/* The pull module does the work on the loop and the work queue; its
 * progress goes to the caller as image.pull.progress notifications that
 * carry the request's id, and its end completes the call. */
static void pull_progress(json_t *event, void *userdata) {
        RpcCall *call = userdata;
        json_t *params = json_copy(event);

        if (!params)
                return;
        json_object_set(params, "id", rpc_call_id(call) ?: json_null());
        rpc_call_notify(call, "image.pull.progress", params);
}

/* The pull module logs the pull's end, under its tag. */
static void pull_done(int r, const MsbError *err, json_t *handle, void *userdata) {
        RpcCall *call = userdata;

        rpc_call_complete(call, r >= 0 ? json_incref(handle) : NULL, r < 0 ? err : NULL);
}

/* The caller sent rpc.cancel for the call, or hung up: the pull module
 * answers it at once (through pull_done) and stops the pull when nobody
 * else waits for it. */
static void pull_cancelled(void *userdata) {
        pull_request_cancel(userdata);
}

static int method_image_pull(RpcCall *call, RpcLoopContext *ctx, const void *params, json_t **ret, MsbError *err) {
        const PullParams *p = params;
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        _cleanup_(reference_freep) Reference *ref = NULL;
        PullRequest *req;
        int r;

        /* What names an image is parsed as every method parses it, so that
         * "sha256:..." is a digest here too: a digest alone names no
         * repository to pull from. */
        r = param_image_spec(p->reference, &spec, err);
        if (r < 0)
                return r;
        if (!spec->ref)
                return invalid_reference(err, "reference", p->reference,
                                         "a digest alone names no repository to pull from; write name@sha256:<hex>");
        ref = TAKE_PTR(spec->ref);
        r = pull_start(ctx->pull, ref, p->policy >= 0 ? pull_policy_names[p->policy] : NULL, p->platform,
                       pull_progress, pull_done, call, &req, err);
        if (r < 0)
                return r;
        /* The request lives until its done callback has run, and the call
         * until it is completed: whichever comes first, cancellation or the
         * end, the other never follows. */
        rpc_call_on_cancel(call, pull_cancelled, req);
        if (log_get_max_level() >= LOG_LEVEL_DEBUG) {
                _cleanup_free_ char *id = json_dumps(rpc_call_id(call) ?: json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
                log_debug("%s: image.pull %s for call id %s", pull_request_tag(req), p->reference, id ?: "?");
        }
        return RPC_PENDING;
}

#define LOOP(n, h, m, f, t) { .name = n, .mode = m, .on_loop = h, .fields = f, .params_size = sizeof(t) }
#define WORKER(n, h, f, t) { .name = n, .mode = RPC_WORKER, .on_worker = h, .fields = f, .params_size = sizeof(t) }

typedef struct NoParams {
        char unused;
} NoParams;

const RpcMethod daemon_methods[] = {
        LOOP("image.get", method_image_get, RPC_INLINE, reference_fields, ReferenceParams),
        LOOP("image.list", method_image_list, RPC_INLINE, list_fields, ListParams),
        WORKER("image.inspect", method_image_inspect, reference_fields, ReferenceParams),
        WORKER("image.remove", method_image_remove, remove_fields, RemoveParams),
        WORKER("image.prune", method_image_prune, prune_fields, PruneParams),
        LOOP("image.pull", method_image_pull, RPC_DEFERRED, pull_fields, PullParams),
        WORKER("image.load", method_image_load, load_fields, LoadParams),
        WORKER("pin.add", method_pin_add, pin_add_fields, PinParams),
        WORKER("pin.remove", method_pin_remove, pin_remove_fields, PinParams),
        LOOP("pin.list", method_pin_list, RPC_INLINE, NULL, NoParams),
        LOOP("system.info", method_system_info, RPC_INLINE, NULL, NoParams),
        WORKER("system.df", method_system_df, NULL, NoParams),
        LOOP("rpc.discover", method_rpc_discover, RPC_INLINE, NULL, NoParams),
        LOOP("rpc.cancel", method_rpc_cancel, RPC_INLINE, cancel_fields, CancelParams),
        LOOP("events.subscribe", method_events_subscribe, RPC_INLINE, NULL, NoParams),
        LOOP("events.unsubscribe", method_events_unsubscribe, RPC_INLINE, NULL, NoParams),
};
const size_t daemon_n_methods = ELEMENTSOF(daemon_methods);
