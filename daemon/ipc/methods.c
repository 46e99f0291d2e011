/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The RPC handlers: each checks what only it can (a reference's syntax, an
 * absolute path), calls one module, and returns the result object. Params
 * arrive already validated against proto/openrpc.json.
 */

#include "daemon.h"
#include "load.h"
#include "log.h"
#include "oci.h"
#include "pull.h"
#include "reference.h"

static Daemon *daemon_of(RpcCall *call) {
        return rpc_call_userdata(call);
}

/* Parses params.reference (or another field) into a Reference; a reference
 * that does not parse is invalid params, never "not found". */
static int param_reference(json_t *params, const char *field, Reference **ret, MsbError *err) {
        const char *s = json_string_value(json_object_get(params, field));
        const char *reason = NULL;
        int r;

        r = reference_parse(s, ret, &reason);
        if (r < 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REFERENCE, "invalid reference '%s': %s", s,
                              reason ?: "it does not parse");
                msb_error_add_data(err, "parameter", json_string(field));
                return -EINVAL;
        }
        return 0;
}

/* Parses params.reference as what names a cached image: a reference, a
 * manifest digest or a unique prefix of its hex digits. */
static int param_image_spec(json_t *params, ImageSpec **ret, MsbError *err) {
        const char *s = json_string_value(json_object_get(params, "reference"));
        const char *reason = NULL;
        int r;

        r = image_spec_parse(s, ret, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_REFERENCE, "invalid reference '%s': %s", s,
                              reason ?: "it does not parse");
                msb_error_add_data(err, "parameter", json_string("reference"));
                return -EINVAL;
        }
        return 0;
}

static int method_image_get(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        int r = param_image_spec(params, &spec, err);
        if (r < 0)
                return r;
        return store_reader_image_get(daemon_of(call)->reader, spec, ret, err);
}

static int method_image_list(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        char *text = NULL;
        int r = store_reader_image_list_text(daemon_of(call)->reader, &text, err);
        if (r < 0)
                return r;
        rpc_call_set_raw_result(call, text);
        return 0;
}

static int method_image_inspect(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        _cleanup_(oci_config_freep) OciConfig *config = NULL;
        _cleanup_free_ char *path = NULL, *data = NULL;
        json_t *detail = NULL;
        size_t size;
        int r;

        r = param_image_spec(params, &spec, err);
        if (r < 0)
                return r;
        r = store_image_inspect(daemon_of(call)->store, spec, &detail, err);
        if (r < 0)
                return r;

        /* The config blob was verified when it entered the store. */
        const char *digest = json_string_value(json_object_get(detail, "config_digest"));
        path = store_blob_path(daemon_of(call)->store, digest);
        json_t *config_detail = json_null();
        if (path && read_file_bounded(path, OCI_CONFIG_MAX_BYTES, &data, &size) >= 0 &&
            oci_config_parse(data, size, &config, NULL) >= 0)
                config_detail = oci_config_detail(config, digest);
        json_object_set_new(detail, "config", config_detail);
        json_object_del(detail, "config_digest");
        *ret = detail;
        return 0;
}

static int method_image_remove(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        int r = param_image_spec(params, &spec, err);
        if (r < 0)
                return r;
        r = store_image_remove(daemon_of(call)->store, spec, json_is_true(json_object_get(params, "force")), err);
        if (r < 0)
                return r;
        log_info("removed %s", json_string_value(json_object_get(params, "reference")));
        *ret = json_null();
        return 0;
}

static int method_image_prune(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        int r = store_image_prune(daemon_of(call)->store, ret, err);
        if (r >= 0) {
                _cleanup_free_ char *report = json_dumps(*ret, JSON_COMPACT);
                log_info("pruned: %s", report ?: "");
        }
        return r;
}

static int method_image_load(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        const char *path = json_string_value(json_object_get(params, "path"));
        const char *tag = json_string_value(json_object_get(params, "tag"));
        _cleanup_(reference_freep) Reference *tag_ref = NULL;
        int r;

        if (path[0] != '/') {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS,
                              "path must be absolute: the daemon does not share the caller's working directory");
                msb_error_add_data(err, "parameter", json_string("path"));
                return -EINVAL;
        }
        if (tag) {
                r = param_reference(params, "tag", &tag_ref, err);
                if (r < 0)
                        return r;
        }
        r = load_images(daemon_of(call)->store, path, tag_ref ? tag_ref->canonical : NULL, ret, err);
        if (r >= 0)
                log_info("loaded %zu image(s) from %s", json_array_size(*ret), path);
        return r;
}

static int method_pin_add(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        int r = param_image_spec(params, &spec, err);
        if (r < 0)
                return r;
        return store_pin_add(daemon_of(call)->store, json_string_value(json_object_get(params, "kind")),
                             json_string_value(json_object_get(params, "name")), spec, ret, err);
}

static int method_pin_remove(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        int r = store_pin_remove(daemon_of(call)->store, json_string_value(json_object_get(params, "kind")),
                                 json_string_value(json_object_get(params, "name")), err);
        if (r < 0)
                return r;
        *ret = json_null();
        return 0;
}

static int method_pin_list(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        return store_reader_pin_list(daemon_of(call)->reader, ret, err);
}

static int method_system_info(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        Daemon *d = daemon_of(call);
        *ret = json_pack("{s:s, s:s, s:s?, s:i, s:I, s:I}", "version", MSB_VERSION, "store_path", d->store_path,
                         "socket_path", d->socket_path, "pid", (int) getpid(), "uptime_ms",
                         (json_int_t) (now_monotonic_ms() - d->started_monotonic_ms), "started_at",
                         (json_int_t) d->started_at_ms);
        return *ret ? 0 : -ENOMEM;
}

static int method_system_df(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        return store_df(daemon_of(call)->store, ret, err);
}

static int method_rpc_discover(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        /* The largest answer there is and the cheapest to ask for: every
         * call shares the one text serialised at start, rather than a tree
         * of its own. */
        rpc_call_set_shared_result(call, rpc_call_document_text(call));
        return 0;
}

static int method_image_pull(RpcCall *call, json_t *params, json_t **ret, MsbError *err);

const RpcMethod daemon_methods[] = {
        { "image.get", method_image_get, RPC_INLINE },
        { "image.list", method_image_list, RPC_INLINE },
        { "image.inspect", method_image_inspect, RPC_WORKER },
        { "image.remove", method_image_remove, RPC_WORKER },
        { "image.prune", method_image_prune, RPC_WORKER },
        { "image.pull", method_image_pull, RPC_DEFERRED },
        { "image.load", method_image_load, RPC_WORKER },
        { "pin.add", method_pin_add, RPC_WORKER },
        { "pin.remove", method_pin_remove, RPC_WORKER },
        { "pin.list", method_pin_list, RPC_INLINE },
        { "system.info", method_system_info, RPC_INLINE },
        { "system.df", method_system_df, RPC_WORKER },
        { "rpc.discover", method_rpc_discover, RPC_INLINE },
};
const size_t daemon_n_methods = ELEMENTSOF(daemon_methods);

/* image.pull: the pull module does the work on the loop and the work queue;
 * its progress goes to the caller as image.pull.progress notifications that
 * carry the request's id, and its end completes the call. */
static void pull_progress(json_t *event, void *userdata) {
        RpcCall *call = userdata;
        json_t *params = json_copy(event);

        if (!params)
                return;
        json_object_set(params, "id", rpc_call_id(call) ?: json_null());
        rpc_call_notify(call, "image.pull.progress", params);
}

static void pull_done(int r, const MsbError *err, json_t *handle, void *userdata) {
        RpcCall *call = userdata;

        if (r >= 0)
                log_info("pulled %s", json_string_value(json_object_get(handle, "reference")) ?: "an image");
        rpc_call_complete(call, r >= 0 ? json_incref(handle) : NULL, r < 0 ? err : NULL);
}

static int method_image_pull(RpcCall *call, json_t *params, json_t **ret, MsbError *err) {
        _cleanup_(reference_freep) Reference *ref = NULL;
        PullRequest *req;
        int r;

        r = param_reference(params, "reference", &ref, err);
        if (r < 0)
                return r;
        r = pull_start(daemon_of(call)->pull, ref, json_string_value(json_object_get(params, "policy")),
                       json_string_value(json_object_get(params, "platform")), pull_progress, pull_done, call, &req,
                       err);
        if (r < 0)
                return r;
        /* A caller that hangs up does not stop the pull: other callers may
         * wait for it, and the image still lands in the cache. */
        return RPC_PENDING;
}
