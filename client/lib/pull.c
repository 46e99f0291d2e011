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

typedef struct PullState {
        MsbPullProgressFn progress;
        void *userdata;
} PullState;

static int pull_notify(MsbClient *c, uint64_t request_id, json_t *msg, void *userdata) {
        PullState *state = userdata;
        _cleanup_free_ char *text = NULL;
        const char *event;
        json_t *params;
        int r;

        r = client_progress_params(msg, "image.pull.progress", request_id, &params, &event);
        if (r <= 0 || !state->progress)
                return r;
        text = json_dumps(params, JSON_COMPACT);
        if (!text)
                return -ENOMEM;

        MsbPullProgress p = {
                .event = (MsbPullEvent) client_event_from_string(pull_event_names, ELEMENTSOF(pull_event_names),
                                                                  event, MSB_PULL_UNKNOWN),
                .event_name = event,
                .reference = json_member_string(params, "reference"),
                .manifest_digest = json_member_string(params, "manifest_digest"),
                .digest = json_member_string(params, "digest"),
                .diff_id = json_member_string(params, "diff_id"),
                .layer_count = json_member_int(params, "layer_count"),
                .position = json_member_int(params, "position"),
                .total_bytes = json_member_int(params, "total_bytes"),
                .downloaded_bytes = json_member_int(params, "downloaded_bytes"),
                .erofs_size_bytes = json_member_int(params, "erofs_size_bytes"),
                .size_bytes = json_member_int(params, "size_bytes"),
                .json = text,
        };
        r = state->progress(&p, state->userdata);
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
