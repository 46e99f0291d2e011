/* SPDX-License-Identifier: Apache-2.0 */

/*
 * image.load with its progress: a path the daemon reads, or an archive the
 * caller passes as a file descriptor with the request (SCM_RIGHTS, see
 * client_call_fds()); image.load.progress notifications (LoadProgress in
 * proto/openrpc.json) come before the answer, each naming the request id.
 */

#include "client-internal.h"

static const char *const load_event_names[] = {
        [MSB_LOAD_READING] = "reading",
        [MSB_LOAD_RESOLVED] = "resolved",
        [MSB_LOAD_LAYER_CACHED] = "layer-cached",
        [MSB_LOAD_LAYER_CONVERTED] = "layer-converted",
        [MSB_LOAD_COMPLETE] = "complete",
};

typedef struct LoadState {
        MsbLoadProgressFn progress;
        void *userdata;
} LoadState;

static int load_notify(MsbClient *c, uint64_t request_id, json_t *msg, void *userdata) {
        LoadState *state = userdata;
        _cleanup_free_ char *text = NULL;
        const char *event;
        json_t *params;
        int r;

        r = client_progress_params(msg, "image.load.progress", request_id, &params, &event);
        if (r <= 0 || !state->progress)
                return r;
        text = json_dumps(params, JSON_COMPACT);
        if (!text)
                return -ENOMEM;

        MsbLoadProgress p = {
                .event = (MsbLoadEvent) client_event_from_string(load_event_names, ELEMENTSOF(load_event_names),
                                                                  event, MSB_LOAD_UNKNOWN),
                .event_name = event,
                .read_bytes = json_member_int(params, "read_bytes"),
                .total_bytes = json_member_int(params, "total_bytes"),
                .manifest_digest = json_member_string(params, "manifest_digest"),
                .layer_count = json_member_int(params, "layer_count"),
                .position = json_member_int(params, "position"),
                .digest = json_member_string(params, "digest"),
                .diff_id = json_member_string(params, "diff_id"),
                .erofs_size_bytes = json_member_int(params, "erofs_size_bytes"),
                .images = json_member_int(params, "images"),
                .json = text,
        };
        r = state->progress(&p, state->userdata);
        return r < 0 ? r : 0;
}

/* Sets key to the string s, when s is given. */
static int set_optional(json_t *params, const char *key, const char *s) {
        return !s || json_object_set_new(params, key, json_string(s)) >= 0 ? 0 : -EINVAL;
}

int msb_client_image_load_with(MsbClient *c, const MsbLoadOptions *o, MsbLoadProgressFn progress, void *userdata,
                               MsbImageList **ret_list) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        LoadState state = { .progress = progress, .userdata = userdata };
        int r;

        client_reset_error(c);
        if (!o || !ret_list || (!o->path && o->fd < 0))
                return -EINVAL;
        /* The descriptor goes with the line; the request names it as the
         * first (and only) one that came with it. */
        params = o->path ? json_pack("{s:s}", "path", o->path) : json_pack("{s:i}", "fd", 0);
        if (!params)
                return -EINVAL;
        if ((r = set_optional(params, "image", o->image)) < 0 || (r = set_optional(params, "tag", o->tag)) < 0)
                return r;
        r = client_call_fds(c, "image.load", params, o->path ? NULL : &o->fd, o->path ? 0 : 1, load_notify, &state,
                            &result);
        if (r < 0)
                return r;
        return image_list_from_json(result, ret_list);
}

int msb_client_image_load(MsbClient *c, const char *path, const char *tag, MsbImageList **ret_list) {
        MsbLoadOptions o = { .path = path, .fd = -1, .tag = tag };

        client_reset_error(c);
        if (!path)
                return -EINVAL;
        return msb_client_image_load_with(c, &o, NULL, NULL, ret_list);
}
