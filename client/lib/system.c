/* SPDX-License-Identifier: Apache-2.0 */

/* system.info and system.df (SystemInfo, SystemDf of proto/openrpc.json). */

#include "client-internal.h"

MsbSystemInfo *msb_system_info_free(MsbSystemInfo *info) {
        if (!info)
                return NULL;
        free(info->version);
        free(info->store_path);
        free(info->socket_path);
        free(info->json);
        free(info);
        return NULL;
}

int msb_client_system_info(MsbClient *c, MsbSystemInfo **ret_info) {
        _cleanup_json_ json_t *result = NULL;
        _cleanup_(msb_system_info_freep) MsbSystemInfo *info = NULL;
        int r;

        client_reset_error(c);
        if (!ret_info)
                return -EINVAL;
        r = client_call(c, "system.info", NULL, NULL, NULL, &result);
        if (r < 0)
                return r;
        if (!json_is_object(result))
                return -EPROTO;
        info = calloc(1, sizeof(*info));
        if (!info)
                return -ENOMEM;
        if ((r = json_get_string(result, "version", &info->version)) < 0 ||
            (r = json_get_string(result, "store_path", &info->store_path)) < 0 ||
            (r = json_get_string(result, "socket_path", &info->socket_path)) < 0 ||
            (r = json_get_int(result, "pid", &info->pid)) < 0 ||
            (r = json_get_int(result, "uptime_ms", &info->uptime_ms)) < 0 ||
            (r = json_get_int_nullable(result, "started_at", &info->started_at)) < 0 ||
            (r = json_to_text(result, &info->json)) < 0)
                return r;
        *ret_info = TAKE_PTR(info);
        return 0;
}

MsbSystemDf *msb_system_df_free(MsbSystemDf *df) {
        if (!df)
                return NULL;
        free(df->json);
        free(df);
        return NULL;
}

static int disk_usage_from_json(json_t *o, MsbDiskUsage *ret) {
        MsbDiskUsage u;
        int r;

        if (!json_is_object(o))
                return -EPROTO;
        if ((r = json_get_int(o, "count", &u.count)) < 0 || (r = json_get_int(o, "bytes", &u.bytes)) < 0)
                return r;
        *ret = u;
        return 0;
}

/* The budget object, or null (or absent, from a daemon older than it). */
static int budget_from_json(json_t *o, MsbSystemDf *df) {
        int r;

        df->budget_max_bytes = df->budget_low_bytes = df->budget_remaining_bytes = MSB_NULL_INT;
        if (!o || json_is_null(o))
                return 0;
        if (!json_is_object(o))
                return -EPROTO;
        if ((r = json_get_int(o, "max_bytes", &df->budget_max_bytes)) < 0 ||
            (r = json_get_int(o, "low_bytes", &df->budget_low_bytes)) < 0 ||
            (r = json_get_int(o, "remaining_bytes", &df->budget_remaining_bytes)) < 0)
                return r;
        return 0;
}

int msb_client_system_df(MsbClient *c, MsbSystemDf **ret_df) {
        _cleanup_json_ json_t *result = NULL;
        _cleanup_(msb_system_df_freep) MsbSystemDf *df = NULL;
        int r;

        client_reset_error(c);
        if (!ret_df)
                return -EINVAL;
        r = client_call(c, "system.df", NULL, NULL, NULL, &result);
        if (r < 0)
                return r;
        if (!json_is_object(result))
                return -EPROTO;
        df = calloc(1, sizeof(*df));
        if (!df)
                return -ENOMEM;
        if ((r = json_get_int(result, "image_refs", &df->image_refs)) < 0 ||
            (r = disk_usage_from_json(json_object_get(result, "manifests"), &df->manifests)) < 0 ||
            (r = disk_usage_from_json(json_object_get(result, "configs"), &df->configs)) < 0 ||
            (r = disk_usage_from_json(json_object_get(result, "layers"), &df->layers)) < 0 ||
            (r = disk_usage_from_json(json_object_get(result, "fsmeta"), &df->fsmeta)) < 0 ||
            (r = disk_usage_from_json(json_object_get(result, "vmdk"), &df->vmdk)) < 0 ||
            (r = json_get_int(result, "index_bytes", &df->index_bytes)) < 0 ||
            (r = json_get_int(result, "total_bytes", &df->total_bytes)) < 0 ||
            (r = json_get_int(result, "reclaimable_bytes", &df->reclaimable_bytes)) < 0 ||
            (r = budget_from_json(json_object_get(result, "budget"), df)) < 0 ||
            (r = json_to_text(result, &df->json)) < 0)
                return r;
        *ret_df = TAKE_PTR(df);
        return 0;
}
