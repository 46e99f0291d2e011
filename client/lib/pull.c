/* SPDX-License-Identifier: Apache-2.0 */

/*
 * image.pull with its progress: the daemon sends image.pull.progress
 * notifications (PullProgress in proto/openrpc.json) on the caller's
 * connection before the pull's answer, each naming the request id.
 */

#include "client-internal.h"

static const char *const pull_event_names[] = {
        [MSB_PULL_RESOLVING] = "resolving",
        [MSB_PULL_RESOLVED] = "resolved",
        [MSB_PULL_LAYER_CACHED] = "layer-cached",
        [MSB_PULL_LAYER_DOWNLOAD] = "layer-download",
        [MSB_PULL_LAYER_DOWNLOADED] = "layer-downloaded",
        [MSB_PULL_LAYER_CONVERTED] = "layer-converted",
        [MSB_PULL_FSMETA] = "fsmeta",
        [MSB_PULL_VMDK] = "vmdk",
        [MSB_PULL_COMPLETE] = "complete",
};

static MsbPullEvent pull_event_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(pull_event_names); i++)
                if (pull_event_names[i] && streq(pull_event_names[i], s))
                        return (MsbPullEvent) i;
        return MSB_PULL_UNKNOWN;
}

typedef struct PullState {
        MsbPullProgressFn progress;
        void *userdata;
} PullState;

static const char *member_string(json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}

static int64_t member_int(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);
        return json_is_integer(v) ? (int64_t) json_integer_value(v) : MSB_NULL_INT;
}

static int pull_notify(MsbClient *c, uint64_t request_id, json_t *msg, void *userdata) {
        PullState *state = userdata;
        json_t *params = json_object_get(msg, "params");
        json_t *id = json_object_get(params, "id");
        _cleanup_free_ char *text = NULL;
        const char *event;

        if (!streq(member_string(msg, "method") ?: "", "image.pull.progress"))
                return 0;
        /* One request at a time, so progress for another id cannot be ours;
         * skip it rather than misreport. */
        if (!json_is_integer(id) || (uint64_t) json_integer_value(id) != request_id)
                return 0;
        event = member_string(params, "event");
        if (!event)
                return -EPROTO;
        if (!state->progress)
                return 0;
        text = json_dumps(params, JSON_COMPACT);
        if (!text)
                return -ENOMEM;

        MsbPullProgress p = {
                .event = pull_event_from_string(event),
                .event_name = event,
                .reference = member_string(params, "reference"),
                .manifest_digest = member_string(params, "manifest_digest"),
                .digest = member_string(params, "digest"),
                .diff_id = member_string(params, "diff_id"),
                .layer_count = member_int(params, "layer_count"),
                .position = member_int(params, "position"),
                .total_bytes = member_int(params, "total_bytes"),
                .downloaded_bytes = member_int(params, "downloaded_bytes"),
                .erofs_size_bytes = member_int(params, "erofs_size_bytes"),
                .size_bytes = member_int(params, "size_bytes"),
                .json = text,
        };
        int r = state->progress(&p, state->userdata);
        return r < 0 ? r : 0;
}

int msb_client_image_pull(MsbClient *c, const char *reference, const MsbPullOptions *options,
                          MsbPullProgressFn progress, void *userdata, MsbImage **ret_image) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        _cleanup_(msb_image_freep) MsbImage *image = NULL;
        PullState state = { .progress = progress, .userdata = userdata };
        int r;

        client_reset_error(c);
        if (!reference || !ret_image)
                return -EINVAL;
        params = json_pack("{s:s}", "reference", reference);
        if (!params)
                return -EINVAL;
        if (options && options->policy && json_object_set_new(params, "policy", json_string(options->policy)) < 0)
                return -EINVAL;
        if (options && options->platform &&
            json_object_set_new(params, "platform", json_string(options->platform)) < 0)
                return -EINVAL;

        r = client_call(c, "image.pull", params, pull_notify, &state, &result);
        if (r < 0)
                return r;
        image = calloc(1, sizeof(*image));
        if (!image)
                return -ENOMEM;
        r = image_from_json(result, image);
        if (r < 0)
                return r;
        r = json_to_text(result, &image->json);
        if (r < 0)
                return r;
        *ret_image = TAKE_PTR(image);
        return 0;
}
