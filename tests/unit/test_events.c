/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the events hub (daemon/ipc/events.c) on a real libuv loop,
 * with peers that record what they are sent: events published by several
 * threads at once reach a subscriber in the order they were published; a
 * subscriber whose backlog is full loses events and is told how many once
 * it has read; past EVENTS_QUEUE_MAX events waiting for the loop, the rest
 * are counted lost too; a peer that closes or unsubscribes hears no more,
 * also one whose connection closes while the hub is sending to it.
 */

#include <check.h>
#include <pthread.h>

#include "daemon.h"
#include "events.h"

/* A connection that keeps the lines it is sent. While `reading`, each line
 * is taken at once (its bytes are released); otherwise they pile up, as
 * for a client that does not read. */
typedef struct FakePeer {
        RpcPeer peer;
        json_t *lines; /* the messages, parsed */
        size_t held;   /* answer bytes not taken */
        bool reading;
        bool open;
        Rpc *close_on_send; /* when set, a send closes the connection at once, as a failed write does */
} FakePeer;

static FakePeer *fake_of(RpcPeer *p) {
        return (FakePeer *) ((char *) p - offsetof(FakePeer, peer));
}

static int fake_reserve(RpcPeer *p, size_t bytes, MsbError *err) {
        FakePeer *f = fake_of(p);

        if (!f->open)
                return -ENOTCONN;
        f->held += bytes;
        return 0;
}

static void fake_release(RpcPeer *p, size_t bytes) {
        fake_of(p)->held -= bytes;
}

static void fake_send(RpcPeer *p, char *text, size_t reserved) {
        FakePeer *f = fake_of(p);

        ck_assert_int_eq(json_array_append_new(f->lines, json_loads(text, 0, NULL)), 0);
        free(text);
        if (f->reading)
                f->held -= reserved;
        if (f->close_on_send) {
                f->open = false;
                rpc_peer_closed(TAKE_PTR(f->close_on_send), p);
        }
}

static void fake_send_last(RpcPeer *p, char *text) {
        free(text);
}

static void fake_nothing(RpcPeer *p) {
}

static bool fake_is_open(const RpcPeer *p) {
        return fake_of((RpcPeer *) p)->open;
}

static void fake_set_paused(RpcPeer *p, bool paused) {
}

static size_t fake_answer_bytes(const RpcPeer *p) {
        return fake_of((RpcPeer *) p)->held;
}

static const RpcPeerOps fake_ops = {
        .answer_reserve = fake_reserve,
        .answer_release = fake_release,
        .send_reserved = fake_send,
        .send_last = fake_send_last,
        .abort = fake_nothing,
        .hold = fake_nothing,
        .release = fake_nothing,
        .is_open = fake_is_open,
        .set_paused = fake_set_paused,
        .answer_bytes = fake_answer_bytes,
};

static void fake_init(FakePeer *f, bool reading) {
        *f = (FakePeer) { .lines = json_array(), .reading = reading, .open = true };
        rpc_peer_init(&f->peer, &fake_ops);
}

static void fake_done(FakePeer *f) {
        json_decref(f->lines);
}

typedef struct Hub {
        uv_loop_t loop;
        EventHub *hub;
} Hub;

static void hub_init(Hub *h) {
        ck_assert_int_eq(uv_loop_init(&h->loop), 0);
        ck_assert_int_eq(event_hub_new(&h->loop, &h->hub), 0);
}

static void hub_done(Hub *h) {
        event_hub_close(h->hub);
        ck_assert_int_eq(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&h->loop), 0);
        h->hub = event_hub_free(h->hub);
}

static void publish(EventHub *hub, unsigned n) {
        char reference[64];

        snprintf(reference, sizeof(reference), "example.com/e:%u", n);
        event_hub_publish(hub, &(StoreEvent) {
                                       .type = STORE_EVENT_IMAGE_LOADED,
                                       .reference = reference,
                                       .manifest_digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                                       .at = n,
                               });
}

/* The n of "example.com/e:<n>" in line i, which must be an event. */
static unsigned event_number(FakePeer *f, size_t i) {
        json_t *m = json_array_get(f->lines, i);

        ck_assert_str_eq(json_string_value(json_object_get(m, "method")), "event");
        const char *ref = json_string_value(json_object_get(json_object_get(m, "params"), "reference"));
        ck_assert_ptr_nonnull(ref);
        return (unsigned) strtoul(strchr(ref, ':') + 1, NULL, 10);
}

/* Runs the loop until the peer holds n lines (or fails after 10 s). */
static void run_until_lines(Hub *h, FakePeer *f, size_t n) {
        for (int i = 0; i < 10000 && json_array_size(f->lines) < n; i++) {
                uv_run(&h->loop, UV_RUN_NOWAIT);
                usleep(1000);
        }
        ck_assert_uint_eq(json_array_size(f->lines), n);
}

/* As the store does: one change at a time, published under its lock. */
#define ORDER_THREADS 4
#define ORDER_EVENTS_PER_THREAD 2000

typedef struct Publisher {
        EventHub *hub;
        pthread_mutex_t *lock;
        unsigned *next;
} Publisher;

static void *publisher_run(void *userdata) {
        Publisher *p = userdata;

        for (unsigned i = 0; i < ORDER_EVENTS_PER_THREAD; i++) {
                pthread_mutex_lock(p->lock);
                publish(p->hub, ++*p->next);
                pthread_mutex_unlock(p->lock);
        }
        return NULL;
}

START_TEST(test_order_across_threads) {
        pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        pthread_t threads[ORDER_THREADS];
        FakePeer a, b;
        unsigned next = 0;
        Hub h;

        hub_init(&h);
        fake_init(&a, true);
        fake_init(&b, true);
        /* Nobody listens yet: this one is not queued, nor sent later. */
        publish(h.hub, 0);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &a.peer), 0);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &b.peer), 0);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &a.peer), 0);
        ck_assert_uint_eq(event_hub_n_subscribers(h.hub), 2);

        Publisher p = { h.hub, &lock, &next };
        for (size_t i = 0; i < ORDER_THREADS; i++)
                ck_assert_int_eq(pthread_create(&threads[i], NULL, publisher_run, &p), 0);
        /* The loop takes events while they are being published. */
        run_until_lines(&h, &a, ORDER_THREADS * ORDER_EVENTS_PER_THREAD);
        for (size_t i = 0; i < ORDER_THREADS; i++)
                ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
        run_until_lines(&h, &b, ORDER_THREADS * ORDER_EVENTS_PER_THREAD);
        for (size_t i = 0; i < ORDER_THREADS * ORDER_EVENTS_PER_THREAD; i++) {
                ck_assert_uint_eq(event_number(&a, i), i + 1);
                ck_assert_uint_eq(event_number(&b, i), i + 1);
        }

        /* Unsubscribed, a hears nothing more; b does. */
        event_hub_unsubscribe(h.hub, &a.peer);
        event_hub_unsubscribe(h.hub, &a.peer);
        publish(h.hub, 9);
        run_until_lines(&h, &b, ORDER_THREADS * ORDER_EVENTS_PER_THREAD + 1);
        ck_assert_uint_eq(json_array_size(a.lines), ORDER_THREADS * ORDER_EVENTS_PER_THREAD);
        ck_assert_uint_eq(event_hub_n_subscribers(h.hub), 1);
        event_hub_unsubscribe(h.hub, &b.peer);
        hub_done(&h);
        fake_done(&a);
        fake_done(&b);
}
END_TEST

START_TEST(test_backlog_loses_and_tells) {
        FakePeer slow, fast;
        Hub h;
        size_t got;

        hub_init(&h);
        fake_init(&slow, false);
        fake_init(&fast, true);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &slow.peer), 0);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &fast.peer), 0);
        for (unsigned i = 1; i <= 1000; i++)
                publish(h.hub, i);
        run_until_lines(&h, &fast, 1000);

        /* The slow one got what fits its backlog, in order, and no notice
         * while it does not read. */
        got = json_array_size(slow.lines);
        ck_assert_uint_gt(got, 0);
        ck_assert_uint_lt(got, 1000);
        ck_assert_uint_ge(slow.held, EVENTS_SUBSCRIBER_PENDING_BYTES);
        ck_assert_uint_lt(slow.held, EVENTS_SUBSCRIBER_PENDING_BYTES + 1024);
        for (size_t i = 0; i < got; i++)
                ck_assert_uint_eq(event_number(&slow, i), i + 1);
        usleep(3 * EVENTS_LOST_POLL_MS * 1000);
        uv_run(&h.loop, UV_RUN_NOWAIT);
        ck_assert_uint_eq(json_array_size(slow.lines), got);

        /* It reads: one events.lost with the count, without another event
         * to carry it. */
        slow.held = 0;
        slow.reading = true;
        run_until_lines(&h, &slow, got + 1);
        json_t *lost = json_array_get(slow.lines, got);
        ck_assert_str_eq(json_string_value(json_object_get(lost, "method")), "events.lost");
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(lost, "params"), "count")),
                         (json_int_t) (1000 - got));
        ck_assert(json_is_integer(json_object_get(json_object_get(lost, "params"), "at")));

        /* Then the events that follow, as they come. */
        publish(h.hub, 1001);
        run_until_lines(&h, &slow, got + 2);
        ck_assert_uint_eq(event_number(&slow, got + 1), 1001);

        /* A peer that closes is dropped from the hub by rpc's watch. */
        Rpc *rpc = NULL;
        MsbError err = {};
        ck_assert_int_eq(rpc_new(NULL, daemon_methods, daemon_n_methods, NULL, NULL, &rpc, &err), 0);
        slow.open = false;
        rpc_peer_closed(rpc, &slow.peer);
        ck_assert_uint_eq(event_hub_n_subscribers(h.hub), 1);
        fast.open = false;
        rpc_peer_closed(rpc, &fast.peer);
        ck_assert_uint_eq(event_hub_n_subscribers(h.hub), 0);
        rpc_free(rpc);
        hub_done(&h);
        fake_done(&slow);
        fake_done(&fast);
}
END_TEST

START_TEST(test_queue_bound) {
        FakePeer f;
        Hub h;

        hub_init(&h);
        fake_init(&f, true);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &f.peer), 0);
        /* The loop does not run while they are published. */
        for (unsigned i = 1; i <= EVENTS_QUEUE_MAX + 10; i++)
                publish(h.hub, i);
        run_until_lines(&h, &f, EVENTS_QUEUE_MAX + 1);
        for (size_t i = 0; i < EVENTS_QUEUE_MAX; i += 4099)
                ck_assert_uint_eq(event_number(&f, i), i + 1);
        json_t *lost = json_array_get(f.lines, EVENTS_QUEUE_MAX);
        ck_assert_str_eq(json_string_value(json_object_get(lost, "method")), "events.lost");
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(lost, "params"), "count")), 10);

        /* Closed, the hub takes no more. */
        event_hub_unsubscribe(h.hub, &f.peer);
        hub_done(&h);
        fake_done(&f);
}
END_TEST

START_TEST(test_a_send_that_closes_the_connection) {
        FakePeer a, b;
        Rpc *rpc = NULL;
        MsbError err = {};
        Hub h;

        hub_init(&h);
        ck_assert_int_eq(rpc_new(NULL, daemon_methods, daemon_n_methods, NULL, NULL, &rpc, &err), 0);
        fake_init(&a, true);
        fake_init(&b, true);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &a.peer), 0);
        ck_assert_int_eq(event_hub_subscribe(h.hub, &b.peer), 0);
        /* a's connection goes while the hub sends it its first event. */
        a.close_on_send = rpc;
        for (unsigned i = 1; i <= 3; i++)
                publish(h.hub, i);
        run_until_lines(&h, &b, 3);
        ck_assert_uint_eq(json_array_size(a.lines), 1);
        ck_assert_uint_eq(event_hub_n_subscribers(h.hub), 1);
        publish(h.hub, 4);
        run_until_lines(&h, &b, 4);
        ck_assert_uint_eq(json_array_size(a.lines), 1);
        event_hub_unsubscribe(h.hub, &b.peer);
        rpc_free(rpc);
        hub_done(&h);
        fake_done(&a);
        fake_done(&b);
}
END_TEST

static Suite *events_suite(void) {
        Suite *s = suite_create("events");
        TCase *tc = tcase_create("hub");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_order_across_threads);
        tcase_add_test(tc, test_backlog_loses_and_tells);
        tcase_add_test(tc, test_queue_bound);
        tcase_add_test(tc, test_a_send_that_closes_the_connection);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(events_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
