/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * events.subscribe: the store's changes as "event" notifications to the
 * connections that asked for them (README "Events").
 *
 * The store reports each change on the thread that made it (a worker, for
 * commits, removals, prunes, evictions and pins), in the order the changes
 * were made: it calls event_hub_publish() with its writer lock held. The
 * hub queues the event under its own mutex (bounded) and wakes the loop
 * with a uv_async_t; on the loop, the queue is taken whole and each event
 * goes to every subscriber in order. Only the loop touches subscribers and
 * connections (ARCHITECTURE.md "Threads").
 *
 * A subscriber that does not read costs a bounded amount: once the answer
 * bytes held for its connection reach EVENTS_SUBSCRIBER_PENDING_BYTES, its
 * events are counted instead of sent, and when it has read enough that
 * they are below half that, it gets one "events.lost" notification with the
 * count, then the events that follow. Nothing it does slows the daemon or
 * another client.
 */

#include <uv.h>

#include "rpc.h"
#include "store.h"

/* README "Limits": the bytes of notifications held for one subscriber and
 * not yet taken by its socket, past which its events are counted as lost.
 * 64 KiB holds some 250 events beside what the kernel buffers (about as
 * many again), plenty for a client that reads as events come. */
#define EVENTS_SUBSCRIBER_PENDING_BYTES ((size_t) PROTO_LIMIT_EVENT_SUBSCRIBER_PENDING_BYTES)
/* Events published and not yet taken by the loop, past which they are
 * dropped (and counted as lost for every subscriber): the loop takes them
 * as fast as the workers make them, so only a loop held up for long gets
 * near it. Each holds its strings, a few hundred bytes. */
#define EVENTS_QUEUE_MAX ((size_t) 65536)
/* While a subscriber has lost events, how often the loop looks whether it
 * has read enough to be told how many (ms). */
#define EVENTS_LOST_POLL_MS 50

typedef struct EventHub EventHub;

int event_hub_new(uv_loop_t *loop, EventHub **ret);
/* Closes the hub's libuv handles (before the loop closes); events published
 * afterwards are dropped. */
void event_hub_close(EventHub *h);
/* Frees the hub: after the store that publishes to it is gone. */
EventHub *event_hub_free(EventHub *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(EventHub *, event_hub_free);

/* Queues a change for the subscribers; a no-op while there are none. Any
 * thread; quick (one allocation and a mutex). */
void event_hub_publish(EventHub *h, const StoreEvent *ev);

/* The peer receives the events that happen from now on; subscribing again
 * is a no-op. 0 or -ENOMEM. Loop thread. */
int event_hub_subscribe(EventHub *h, RpcPeer *peer);
/* The peer receives no more events; a no-op when it had not subscribed.
 * Loop thread. */
void event_hub_unsubscribe(EventHub *h, RpcPeer *peer);
unsigned event_hub_n_subscribers(const EventHub *h);
