/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>

#include "events.h"

/* One change, as published: its strings live in data. */
typedef struct QueuedEvent {
        struct QueuedEvent *next;
        uint64_t seq;
        StoreEventType type;
        int64_t at;
        const char *reference, *manifest_digest, *pin_kind, *pin_name;
        char data[];
} QueuedEvent;

typedef struct Subscriber {
        RpcPeerWatch watch; /* told when the connection closes */
        EventHub *hub;
        RpcPeer *peer;
        uint64_t after_seq; /* the events it receives come after this one */
        uint64_t lost;      /* counted since it last heard of its losses */
        bool gone;          /* its connection closed while the hub was sending */
        struct Subscriber *prev, *next;
} Subscriber;

struct EventHub {
        uv_loop_t *loop;
        uv_async_t wake;
        uv_timer_t lost_timer;
        bool handles_open;
        Subscriber *subscribers; /* the loop's */
        /* While the hub sends, a connection that a send makes close is only
         * marked gone, and freed once the walk over the subscribers ends. */
        bool sending;

        /* Shared with the publishing threads. */
        pthread_mutex_t lock;
        QueuedEvent *head, *tail;
        size_t n_queued;
        uint64_t seq;          /* of the last event published */
        uint64_t dropped;      /* published past EVENTS_QUEUE_MAX since the loop last took the queue */
        unsigned n_subscribers;
        bool closed;
};

static void queued_free_all(QueuedEvent *e) {
        while (e) {
                QueuedEvent *next = e->next;
                free(e);
                e = next;
        }
}

/* Copies the event and its strings into one allocation. */
static QueuedEvent *queued_new(const StoreEvent *ev) {
        const char *strings[] = { ev->reference, ev->manifest_digest, ev->pin_kind, ev->pin_name };
        size_t size = 0;
        QueuedEvent *e;
        char *p;

        for (size_t i = 0; i < ELEMENTSOF(strings); i++)
                size += strings[i] ? strlen(strings[i]) + 1 : 0;
        e = malloc(sizeof(*e) + size);
        if (!e)
                return NULL;
        *e = (QueuedEvent) { .type = ev->type, .at = ev->at };
        p = e->data;
        const char **slots[] = { &e->reference, &e->manifest_digest, &e->pin_kind, &e->pin_name };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                if (!strings[i])
                        continue;
                size_t n = strlen(strings[i]) + 1;
                memcpy(p, strings[i], n);
                *slots[i] = p;
                p += n;
        }
        return e;
}

void event_hub_publish(EventHub *h, const StoreEvent *ev) {
        QueuedEvent *e = NULL;
        bool wake = false;

        pthread_mutex_lock(&h->lock);
        h->seq++;
        if (h->closed || h->n_subscribers == 0)
                goto out;
        if (h->n_queued >= EVENTS_QUEUE_MAX || !(e = queued_new(ev))) {
                h->dropped++;
                wake = true;
                goto out;
        }
        e->seq = h->seq;
        if (h->tail)
                h->tail->next = e;
        else
                h->head = e;
        h->tail = e;
        h->n_queued++;
        wake = true;
out:
        /* uv_async_send is the one libuv call made from another thread;
         * under the lock, so that a close cannot come between. */
        if (wake)
                uv_async_send(&h->wake);
        pthread_mutex_unlock(&h->lock);
}

/* ---- the loop ---- */

/* The params of an "event" notification: a reference or digest that is
 * not known is null; pin events add the pin's kind and name. */
static json_t *event_params(const QueuedEvent *e) {
        json_t *params = json_pack("{s:s, s:s?, s:s?, s:I}", "type", store_event_type_name(e->type), "reference",
                                   e->reference, "manifest_digest", e->manifest_digest, "at", (json_int_t) e->at);

        if (params && e->pin_kind &&
            (json_object_set_new(params, "kind", json_string(e->pin_kind)) < 0 ||
             json_object_set_new(params, "name", json_string(e->pin_name ?: "")) < 0)) {
                json_decref(params);
                return NULL;
        }
        return params;
}

static bool subscriber_backlogged(const Subscriber *s) {
        return rpc_peer_answer_bytes(s->peer) >= EVENTS_SUBSCRIBER_PENDING_BYTES;
}

/* Sends the event, or counts it lost: while the subscriber's backlog is
 * full, and after a loss until it has been told of it, so that what it
 * receives stays in order with the notice between. */
static void subscriber_deliver(Subscriber *s, const QueuedEvent *e, json_t *params) {
        int r;

        if (s->gone || e->seq <= s->after_seq)
                return;
        if (s->lost > 0 || !params || subscriber_backlogged(s)) {
                s->lost++;
                return;
        }
        r = rpc_peer_notify(s->peer, "event", json_incref(params));
        if (r == -E2BIG || r == -ENOMEM)
                s->lost++;
}

/* Tells a subscriber that has read its backlog down to half the limit how
 * many events it lost. */
static void subscriber_flush_lost(Subscriber *s) {
        json_t *params;

        if (s->gone || s->lost == 0 || rpc_peer_answer_bytes(s->peer) > EVENTS_SUBSCRIBER_PENDING_BYTES / 2)
                return;
        params = json_pack("{s:I, s:I}", "count", (json_int_t) s->lost, "at", (json_int_t) now_ms());
        if (params && rpc_peer_notify(s->peer, "events.lost", params) >= 0)
                s->lost = 0;
}

static void on_lost_timer(uv_timer_t *t);
static void subscriber_remove(Subscriber *s);

/* Frees the subscribers whose connections closed during a send. */
static void hub_end_sending(EventHub *h) {
        h->sending = false;
        for (Subscriber *s = h->subscribers, *next; s; s = next) {
                next = s->next;
                if (s->gone)
                        subscriber_remove(s);
        }
}

/* Flushes every notice that can go, and keeps the timer running while
 * some subscriber still has losses to hear of. */
static void hub_flush_lost(EventHub *h) {
        bool pending = false;

        h->sending = true;
        for (Subscriber *s = h->subscribers; s; s = s->next) {
                subscriber_flush_lost(s);
                pending = pending || (!s->gone && s->lost > 0);
        }
        hub_end_sending(h);
        if (!h->handles_open)
                return;
        if (pending && !uv_is_active((uv_handle_t *) &h->lost_timer))
                uv_timer_start(&h->lost_timer, on_lost_timer, EVENTS_LOST_POLL_MS, EVENTS_LOST_POLL_MS);
        else if (!pending)
                uv_timer_stop(&h->lost_timer);
}

static void on_lost_timer(uv_timer_t *t) {
        hub_flush_lost(t->data);
}

static void on_wake(uv_async_t *a) {
        EventHub *h = a->data;
        QueuedEvent *events;
        uint64_t dropped;

        pthread_mutex_lock(&h->lock);
        events = h->head;
        dropped = h->dropped;
        h->head = h->tail = NULL;
        h->n_queued = 0;
        h->dropped = 0;
        pthread_mutex_unlock(&h->lock);

        h->sending = true;
        for (QueuedEvent *e = events; e; e = e->next) {
                json_t *params = event_params(e);
                for (Subscriber *s = h->subscribers; s; s = s->next)
                        subscriber_deliver(s, e, params);
                json_decref(params);
        }
        hub_end_sending(h);
        queued_free_all(events);
        /* The dropped ones came after everything that was queued. */
        for (Subscriber *s = h->subscribers; s && dropped > 0; s = s->next)
                s->lost += dropped;
        hub_flush_lost(h);
}

static void subscriber_remove(Subscriber *s) {
        EventHub *h = s->hub;

        if (s->prev)
                s->prev->next = s->next;
        else
                h->subscribers = s->next;
        if (s->next)
                s->next->prev = s->prev;
        pthread_mutex_lock(&h->lock);
        h->n_subscribers--;
        pthread_mutex_unlock(&h->lock);
        free(s);
}

/* The connection closed: rpc has unregistered the watch already. A send
 * of the hub's own may be what closed it (a write that failed at once):
 * then the walk that made it still holds the subscriber. */
static void on_peer_closed(RpcPeerWatch *w) {
        Subscriber *s = (Subscriber *) ((char *) w - offsetof(Subscriber, watch));

        if (s->hub->sending)
                s->gone = true;
        else
                subscriber_remove(s);
}

static Subscriber *subscriber_find(EventHub *h, RpcPeer *peer) {
        for (Subscriber *s = h->subscribers; s; s = s->next)
                if (s->peer == peer && !s->gone)
                        return s;
        return NULL;
}

int event_hub_subscribe(EventHub *h, RpcPeer *peer) {
        Subscriber *s;

        if (subscriber_find(h, peer))
                return 0;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->hub = h;
        s->peer = peer;
        s->watch.closed = on_peer_closed;
        pthread_mutex_lock(&h->lock);
        s->after_seq = h->seq;
        h->n_subscribers++;
        pthread_mutex_unlock(&h->lock);
        s->next = h->subscribers;
        if (s->next)
                s->next->prev = s;
        h->subscribers = s;
        rpc_peer_watch(peer, &s->watch);
        return 0;
}

void event_hub_unsubscribe(EventHub *h, RpcPeer *peer) {
        Subscriber *s = subscriber_find(h, peer);

        if (!s)
                return;
        rpc_peer_unwatch(peer, &s->watch);
        subscriber_remove(s);
}

unsigned event_hub_n_subscribers(const EventHub *h) {
        unsigned n = 0;

        for (const Subscriber *s = h->subscribers; s; s = s->next)
                n++;
        return n;
}

/* ---- life cycle ---- */

int event_hub_new(uv_loop_t *loop, EventHub **ret) {
        EventHub *h = calloc(1, sizeof(*h));
        int r;

        if (!h)
                return -ENOMEM;
        h->loop = loop;
        pthread_mutex_init(&h->lock, NULL);
        r = uv_async_init(loop, &h->wake, on_wake);
        if (r < 0) {
                pthread_mutex_destroy(&h->lock);
                free(h);
                return r;
        }
        uv_timer_init(loop, &h->lost_timer);
        h->wake.data = h->lost_timer.data = h;
        h->handles_open = true;
        *ret = h;
        return 0;
}

void event_hub_close(EventHub *h) {
        if (!h || !h->handles_open)
                return;
        pthread_mutex_lock(&h->lock);
        h->closed = true;
        queued_free_all(h->head);
        h->head = h->tail = NULL;
        h->n_queued = 0;
        uv_close((uv_handle_t *) &h->wake, NULL);
        pthread_mutex_unlock(&h->lock);
        uv_close((uv_handle_t *) &h->lost_timer, NULL);
        h->handles_open = false;
}

EventHub *event_hub_free(EventHub *h) {
        if (!h)
                return NULL;
        event_hub_close(h);
        /* Connections close before the hub is freed; a subscriber left is
         * one whose peer outlived the server, which rpc never lets happen. */
        while (h->subscribers)
                subscriber_remove(h->subscribers);
        queued_free_all(h->head);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
}
