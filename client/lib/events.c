/* SPDX-License-Identifier: Apache-2.0 */

/*
 * events.subscribe and the notifications that follow it: "event" (Event in
 * proto/openrpc.json) and "events.lost" (EventsLost), one per line.
 */

#include "client-internal.h"

MsbEvent *msb_event_free(MsbEvent *event) {
        if (!event)
                return NULL;
        free(event->type);
        free(event->reference);
        free(event->manifest_digest);
        free(event->kind);
        free(event->name);
        free(event->json);
        free(event);
        return NULL;
}

static int events_call(MsbClient *c, const char *method) {
        _cleanup_json_ json_t *result = NULL;

        client_reset_error(c);
        return client_call(c, method, NULL, NULL, NULL, &result);
}

int msb_client_events_subscribe(MsbClient *c) {
        return events_call(c, "events.subscribe");
}

int msb_client_events_unsubscribe(MsbClient *c) {
        return events_call(c, "events.unsubscribe");
}

static int event_from_params(const char *method, json_t *params, MsbEvent **ret) {
        _cleanup_(msb_event_freep) MsbEvent *e = calloc(1, sizeof(*e));
        int r;

        if (!e)
                return -ENOMEM;
        if (!json_is_object(params))
                return -EPROTO;
        e->lost_count = MSB_NULL_INT;
        if (streq(method, "events.lost")) {
                e->type = strdup("events.lost");
                if (!e->type)
                        return -ENOMEM;
                if ((r = json_get_int(params, "count", &e->lost_count)) < 0 ||
                    (r = json_get_int_nullable(params, "at", &e->at)) < 0)
                        return r;
        } else if ((r = json_get_string(params, "type", &e->type)) < 0 ||
                   (r = json_get_string_nullable(params, "reference", &e->reference)) < 0 ||
                   (r = json_get_string_nullable(params, "manifest_digest", &e->manifest_digest)) < 0 ||
                   (r = json_get_int_nullable(params, "at", &e->at)) < 0 ||
                   (r = json_get_string_nullable(params, "kind", &e->kind)) < 0 ||
                   (r = json_get_string_nullable(params, "name", &e->name)) < 0)
                return r;
        r = json_to_text(params, &e->json);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(e);
        return 0;
}

int msb_client_event_read(MsbClient *c, MsbEvent **ret_event) {
        int r;

        client_reset_error(c);
        if (!c || !ret_event)
                return -EINVAL;
        for (;;) {
                _cleanup_json_ json_t *msg = NULL;
                const char *method;

                r = client_read_message(c, &msg);
                if (r < 0)
                        return r;
                method = json_string_value(json_object_get(msg, "method"));
                /* An answer to nothing we asked, or another notification
                 * (a pull's progress on a shared connection): not ours. */
                if (json_object_get(msg, "id") || !method ||
                    (!streq(method, "event") && !streq(method, "events.lost")))
                        continue;
                return event_from_params(method, json_object_get(msg, "params"), ret_event);
        }
}
