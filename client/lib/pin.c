/* SPDX-License-Identifier: Apache-2.0 */

/*
 * pin.add, pin.remove and pin.list, and the Rootfs and Pin results of
 * proto/openrpc.json.
 */

#include "client-internal.h"

MsbRootfs *msb_rootfs_free(MsbRootfs *rootfs) {
        if (!rootfs)
                return NULL;
        free(rootfs->manifest_digest);
        free(rootfs->fsmeta_path);
        free(rootfs->vmdk_path);
        for (size_t i = 0; i < rootfs->n_layers; i++) {
                free(rootfs->layers[i].diff_id);
                free(rootfs->layers[i].path);
        }
        free(rootfs->layers);
        free(rootfs->json);
        free(rootfs);
        return NULL;
}

static int rootfs_from_json(json_t *o, MsbRootfs **ret) {
        _cleanup_(msb_rootfs_freep) MsbRootfs *rootfs = NULL;
        json_t *layers = json_object_get(o, "layers"), *v;
        size_t i;
        int r;

        if (!json_is_object(o) || !json_is_array(layers))
                return -EPROTO;
        rootfs = calloc(1, sizeof(*rootfs));
        if (!rootfs)
                return -ENOMEM;
        if ((r = json_get_string(o, "manifest_digest", &rootfs->manifest_digest)) < 0 ||
            (r = json_get_string_nullable(o, "fsmeta_path", &rootfs->fsmeta_path)) < 0 ||
            (r = json_get_string_nullable(o, "vmdk_path", &rootfs->vmdk_path)) < 0)
                return r;
        rootfs->layers = calloc(json_array_size(layers) ?: 1, sizeof(MsbRootfsLayer));
        if (!rootfs->layers)
                return -ENOMEM;
        json_array_foreach(layers, i, v) {
                MsbRootfsLayer *l = &rootfs->layers[i];

                if (!json_is_object(v))
                        return -EPROTO;
                /* Counted first, so that msb_rootfs_free() releases what a
                 * failure half-way through leaves. */
                rootfs->n_layers++;
                if ((r = json_get_string(v, "diff_id", &l->diff_id)) < 0 ||
                    (r = json_get_string(v, "path", &l->path)) < 0 ||
                    (r = json_get_int_nullable(v, "erofs_size_bytes", &l->erofs_size_bytes)) < 0)
                        return r;
        }
        r = json_to_text(o, &rootfs->json);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(rootfs);
        return 0;
}

MsbPinList *msb_pin_list_free(MsbPinList *list) {
        if (!list)
                return NULL;
        for (size_t i = 0; i < list->n_pins; i++) {
                free(list->pins[i].kind);
                free(list->pins[i].name);
                free(list->pins[i].reference);
                free(list->pins[i].manifest_digest);
        }
        free(list->pins);
        free(list->json);
        free(list);
        return NULL;
}

static int pin_list_from_json(json_t *a, MsbPinList **ret) {
        _cleanup_(msb_pin_list_freep) MsbPinList *list = NULL;
        json_t *v;
        size_t i;
        int r;

        if (!json_is_array(a))
                return -EPROTO;
        list = calloc(1, sizeof(*list));
        if (!list)
                return -ENOMEM;
        list->pins = calloc(json_array_size(a) ?: 1, sizeof(MsbPin));
        if (!list->pins)
                return -ENOMEM;
        json_array_foreach(a, i, v) {
                MsbPin *p = &list->pins[i];

                if (!json_is_object(v))
                        return -EPROTO;
                list->n_pins++;
                if ((r = json_get_string(v, "kind", &p->kind)) < 0 ||
                    (r = json_get_string(v, "name", &p->name)) < 0 ||
                    (r = json_get_string(v, "reference", &p->reference)) < 0 ||
                    (r = json_get_string(v, "manifest_digest", &p->manifest_digest)) < 0 ||
                    (r = json_get_int_nullable(v, "created_at", &p->created_at)) < 0)
                        return r;
        }
        r = json_to_text(a, &list->json);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(list);
        return 0;
}

int msb_client_pin_add(MsbClient *c, const char *kind, const char *name, const char *reference,
                       MsbRootfs **ret_rootfs) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        int r;

        client_reset_error(c);
        if (!kind || !name || !reference || !ret_rootfs)
                return -EINVAL;
        params = json_pack("{s:s, s:s, s:s}", "kind", kind, "name", name, "reference", reference);
        if (!params)
                return -EINVAL;
        r = client_call(c, "pin.add", params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return rootfs_from_json(result, ret_rootfs);
}

int msb_client_pin_remove(MsbClient *c, const char *kind, const char *name) {
        _cleanup_json_ json_t *params = NULL, *result = NULL;
        int r;

        client_reset_error(c);
        if (!kind || !name)
                return -EINVAL;
        params = json_pack("{s:s, s:s}", "kind", kind, "name", name);
        if (!params)
                return -EINVAL;
        r = client_call(c, "pin.remove", params, NULL, NULL, &result);
        if (r < 0)
                return r;
        return json_is_null(result) ? 0 : -EPROTO;
}

int msb_client_pin_list(MsbClient *c, MsbPinList **ret_list) {
        _cleanup_json_ json_t *result = NULL;
        int r;

        client_reset_error(c);
        if (!ret_list)
                return -EINVAL;
        r = client_call(c, "pin.list", NULL, NULL, NULL, &result);
        if (r < 0)
                return r;
        return pin_list_from_json(result, ret_list);
}
