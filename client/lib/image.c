/* SPDX-License-Identifier: Apache-2.0 */

/*
 * image.get, image.list, image.inspect, image.remove and image.prune,
 * and the result structs of proto/openrpc.json
 * (components/schemas ImageHandle, ImageDetail, ImagePruneReport).
 */

#include "client-internal.h"

void image_done(MsbImage *image) {
        free(image->reference);
        free(image->manifest_digest);
        free(image->architecture);
        free(image->os);
        free(image->json);
        memset(image, 0, sizeof(*image));
}

MsbImage *msb_image_free(MsbImage *image) {
        if (!image)
                return NULL;
        image_done(image);
        free(image);
        return NULL;
}

const ImageField image_fields[IMAGE_FIELDS] = {
        { "reference", IMAGE_FIELD_STRING, offsetof(MsbImage, reference) },
        { "manifest_digest", IMAGE_FIELD_STRING_NULLABLE, offsetof(MsbImage, manifest_digest) },
        { "architecture", IMAGE_FIELD_STRING_NULLABLE, offsetof(MsbImage, architecture) },
        { "os", IMAGE_FIELD_STRING_NULLABLE, offsetof(MsbImage, os) },
        { "layer_count", IMAGE_FIELD_INT, offsetof(MsbImage, layer_count) },
        { "size_bytes", IMAGE_FIELD_INT_NULLABLE, offsetof(MsbImage, size_bytes) },
        { "created_at", IMAGE_FIELD_INT_NULLABLE, offsetof(MsbImage, created_at) },
        { "last_used_at", IMAGE_FIELD_INT_NULLABLE, offsetof(MsbImage, last_used_at) },
};

int image_from_json(json_t *o, MsbImage *ret) {
        MsbImage image = {};
        int r = 0;

        if (!json_is_object(o))
                return -EPROTO;
        for (size_t i = 0; i < IMAGE_FIELDS && r >= 0; i++) {
                const ImageField *f = &image_fields[i];
                void *p = (char *) &image + f->offset;

                switch (f->kind) {
                case IMAGE_FIELD_STRING:
                        r = json_get_string(o, f->name, p);
                        break;
                case IMAGE_FIELD_STRING_NULLABLE:
                        r = json_get_string_nullable(o, f->name, p);
                        break;
                case IMAGE_FIELD_INT:
                        r = json_get_int(o, f->name, p);
                        break;
                case IMAGE_FIELD_INT_NULLABLE:
                        r = json_get_int_nullable(o, f->name, p);
                        break;
                }
        }
        if (r < 0) {
                image_done(&image);
                return r;
        }
        *ret = image;
        return 0;
}

static int image_new_from_json(json_t *o, MsbImage **ret) {
        MsbImage *image = calloc(1, sizeof(*image));
        int r;

        if (!image)
                return -ENOMEM;
        r = image_from_json(o, image);
        if (r >= 0)
                r = json_to_text(o, &image->json);
        if (r < 0) {
                image_done(image);
                free(image);
                return r;
        }
        *ret = image;
        return 0;
}

MsbImageList *msb_image_list_free(MsbImageList *list) {
        if (!list)
                return NULL;
        for (size_t i = 0; i < list->n_images; i++)
                image_done(&list->images[i]);
        free(list->images);
        free(list->json);
        free(list);
        return NULL;
}

/* The compact text of an array is "[", its items' compact texts joined
 * by ",", and "]": built from the texts already dumped per image, which
 * halves what a list of 5,000 costs in json_dumps() (bench/list). */
static int image_list_join_json(const MsbImageList *list, char **ret) {
        size_t len = 2, off = 0;
        char *text;

        for (size_t i = 0; i < list->n_images; i++)
                len += strlen(list->images[i].json) + 1;
        text = malloc(len + 1);
        if (!text)
                return -ENOMEM;
        text[off++] = '[';
        for (size_t i = 0; i < list->n_images; i++) {
                size_t n = strlen(list->images[i].json);

                if (i > 0)
                        text[off++] = ',';
                memcpy(text + off, list->images[i].json, n);
                off += n;
        }
        text[off++] = ']';
        text[off] = '\0';
        *ret = text;
        return 0;
}

int image_list_from_json(json_t *a, MsbImageList **ret) {
        _cleanup_(msb_image_list_freep) MsbImageList *list = NULL;
        json_t *v;
        size_t i;
        int r;

        if (!json_is_array(a))
                return -EPROTO;
        list = calloc(1, sizeof(*list));
        if (!list)
                return -ENOMEM;
        list->images = calloc(json_array_size(a) ?: 1, sizeof(MsbImage));
        if (!list->images)
                return -ENOMEM;
        json_array_foreach(a, i, v) {
                r = image_from_json(v, &list->images[i]);
                if (r < 0)
                        return r;
                list->n_images++;
                r = json_to_text(v, &list->images[i].json);
                if (r < 0)
                        return r;
        }
        r = image_list_join_json(list, &list->json);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(list);
        return 0;
}

static void image_config_free(MsbImageConfig *config) {
        if (!config)
                return;
        free(config->digest);
        strv_free(config->env);
        strv_free(config->cmd);
        strv_free(config->entrypoint);
        free(config->working_dir);
        free(config->user);
        strv_free(config->labels);
        free(config->stop_signal);
        free(config);
}

/* Labels are an object; a value that is not a string is kept as JSON text
 * rather than dropped, so nothing the image says is lost. */
static int labels_from_json(json_t *o, char ***ret) {
        const char *key;
        json_t *v;
        char **l;
        size_t i = 0;

        if (!o || json_is_null(o)) {
                *ret = NULL;
                return 0;
        }
        if (!json_is_object(o))
                return -EPROTO;
        l = calloc(2 * json_object_size(o) + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        json_object_foreach(o, key, v) {
                char *k = strdup(key);
                char *val = json_is_string(v) ? strdup(json_string_value(v))
                                              : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!k || !val) {
                        free(k);
                        free(val);
                        strv_free(l);
                        return -ENOMEM;
                }
                l[i++] = k;
                l[i++] = val;
        }
        *ret = l;
        return 0;
}

static int image_config_from_json(json_t *o, MsbImageConfig **ret) {
        MsbImageConfig *config;
        int r;

        if (json_is_null(o) || !o) {
                *ret = NULL;
                return 0;
        }
        if (!json_is_object(o))
                return -EPROTO;
        config = calloc(1, sizeof(*config));
        if (!config)
                return -ENOMEM;
        if ((r = json_get_string(o, "digest", &config->digest)) < 0 ||
            (r = json_get_strv(o, "env", false, &config->env)) < 0 ||
            (r = json_get_strv(o, "cmd", true, &config->cmd)) < 0 ||
            (r = json_get_strv(o, "entrypoint", true, &config->entrypoint)) < 0 ||
            (r = json_get_string_nullable(o, "working_dir", &config->working_dir)) < 0 ||
            (r = json_get_string_nullable(o, "user", &config->user)) < 0 ||
            (r = labels_from_json(json_object_get(o, "labels"), &config->labels)) < 0 ||
            (r = json_get_string_nullable(o, "stop_signal", &config->stop_signal)) < 0) {
                image_config_free(config);
                return r;
        }
        *ret = config;
        return 0;
}

static void image_layer_done(MsbImageLayer *layer) {
        free(layer->diff_id);
        free(layer->blob_digest);
        free(layer->media_type);
}

MsbImageDetail *msb_image_detail_free(MsbImageDetail *detail) {
        if (!detail)
                return NULL;
        image_done(&detail->handle);
        image_config_free(detail->config);
        for (size_t i = 0; i < detail->n_layers; i++)
                image_layer_done(&detail->layers[i]);
        free(detail->layers);
        free(detail->json);
        free(detail);
        return NULL;
}

static int image_layer_from_json(json_t *o, MsbImageLayer *ret) {
        MsbImageLayer layer = {};
        int r;

        if (!json_is_object(o))
                return -EPROTO;
        if ((r = json_get_string(o, "diff_id", &layer.diff_id)) < 0 ||
            (r = json_get_string(o, "blob_digest", &layer.blob_digest)) < 0 ||
            (r = json_get_string_nullable(o, "media_type", &layer.media_type)) < 0 ||
            (r = json_get_int_nullable(o, "compressed_size_bytes", &layer.compressed_size_bytes)) < 0 ||
            (r = json_get_int_nullable(o, "erofs_size_bytes", &layer.erofs_size_bytes)) < 0 ||
            (r = json_get_int(o, "position", &layer.position)) < 0) {
                image_layer_done(&layer);
                return r;
        }
        *ret = layer;
        return 0;
}

static int image_detail_from_json(json_t *o, MsbImageDetail **ret) {
        _cleanup_(msb_image_detail_freep) MsbImageDetail *detail = NULL;
        json_t *layers = json_object_get(o, "layers"), *v;
        size_t i;
        int r;

        if (!json_is_object(o) || !json_is_array(layers))
                return -EPROTO;
        detail = calloc(1, sizeof(*detail));
        if (!detail)
                return -ENOMEM;
        r = image_from_json(json_object_get(o, "handle"), &detail->handle);
        if (r < 0)
                return r;
        r = image_config_from_json(json_object_get(o, "config"), &detail->config);
        if (r < 0)
                return r;
        detail->layers = calloc(json_array_size(layers) ?: 1, sizeof(MsbImageLayer));
        if (!detail->layers)
                return -ENOMEM;
        json_array_foreach(layers, i, v) {
                r = image_layer_from_json(v, &detail->layers[i]);
                if (r < 0)
                        return r;
                detail->n_layers++;
        }
        r = json_to_text(o, &detail->json);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(detail);
        return 0;
}

MsbPruneReport *msb_prune_report_free(MsbPruneReport *report) {
        if (!report)
                return NULL;
        free(report->json);
        free(report);
        return NULL;
}

static int prune_report_from_json(json_t *o, MsbPruneReport **ret) {
        _cleanup_(msb_prune_report_freep) MsbPruneReport *report = NULL;
        int r;

        if (!json_is_object(o))
                return -EPROTO;
        report = calloc(1, sizeof(*report));
        if (!report)
                return -ENOMEM;
        if ((r = json_get_int(o, "image_refs_removed", &report->image_refs_removed)) < 0 ||
            (r = json_get_int(o, "manifests_removed", &report->manifests_removed)) < 0 ||
            (r = json_get_int(o, "layers_removed", &report->layers_removed)) < 0 ||
            (r = json_get_int(o, "fsmeta_removed", &report->fsmeta_removed)) < 0 ||
            (r = json_get_int(o, "vmdk_removed", &report->vmdk_removed)) < 0 ||
            (r = json_get_int_nullable(o, "bytes_reclaimed", &report->bytes_reclaimed)) < 0 ||
            (r = json_to_text(o, &report->json)) < 0)
                return r;
        *ret = TAKE_PTR(report);
        return 0;
}

static int reference_params(const char *reference, json_t **ret) {
        json_t *params;

        if (!reference)
                return -EINVAL;
        params = json_pack("{s:s}", "reference", reference);
        if (!params)
                return -EINVAL; /* not UTF-8 */
        *ret = params;
        return 0;
}

int msb_client_image_get(MsbClient *c, const char *reference, MsbImage **ret_image) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        int r;

        client_reset_error(c);
        if (!ret_image)
                return -EINVAL;
        r = reference_params(reference, &params);
        if (r < 0)
                return r;
        r = client_call(c, "image.get", params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return image_new_from_json(result, ret_image);
}

int msb_client_image_list(MsbClient *c, MsbImageList **ret_list) {
        _cleanup_json_ json_t *result = NULL;
        int r;

        client_reset_error(c);
        if (!ret_list)
                return -EINVAL;
        r = client_call_read(c, "image.list", NULL, image_list_read_answer, ret_list, &result);
        if (r < 0 || !result)
                return r; /* !result: the streaming reader took the answer into *ret_list */
        return image_list_from_json(result, ret_list);
}

int msb_client_image_inspect(MsbClient *c, const char *reference, MsbImageDetail **ret_detail) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        int r;

        client_reset_error(c);
        if (!ret_detail)
                return -EINVAL;
        r = reference_params(reference, &params);
        if (r < 0)
                return r;
        r = client_call(c, "image.inspect", params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return image_detail_from_json(result, ret_detail);
}

int msb_client_image_remove(MsbClient *c, const char *reference, bool force) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        int r;

        client_reset_error(c);
        r = reference_params(reference, &params);
        if (r < 0)
                return r;
        if (force && json_object_set_new(params, "force", json_true()) < 0)
                return -ENOMEM;
        r = client_call(c, "image.remove", params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return json_is_null(result) ? 0 : -EPROTO;
}

int msb_client_image_prune(MsbClient *c, MsbPruneReport **ret_report) {
        return msb_client_image_prune_unused(c, MSB_NULL_INT, ret_report);
}

int msb_client_image_prune_unused(MsbClient *c, int64_t unused_for_ms, MsbPruneReport **ret_report) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        int r;

        client_reset_error(c);
        if (!ret_report || (unused_for_ms < 0 && unused_for_ms != MSB_NULL_INT))
                return -EINVAL;
        if (unused_for_ms >= 0 && !(params = json_pack("{s:I}", "unused_for_ms", (json_int_t) unused_for_ms)))
                return -ENOMEM;
        r = client_call(c, "image.prune", params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return prune_report_from_json(result, ret_report);
}
