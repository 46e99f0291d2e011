/* SPDX-License-Identifier: Apache-2.0 */
#include "rpc_internal.h"

/* Fair scheduling of worker calls between connections (rpc.h,
 * RPC_WORKER_SLOTS): a queue per peer, a round of the peers that have calls
 * waiting, and at most RPC_WORKER_SLOTS calls on the thread pool. */

void rpc_peer_init(RpcPeer *p, const RpcPeerOps *ops) {
        *p = (RpcPeer) { .ops = ops };
}

void rpc_peer_update_paused(RpcPeer *p) {
        bool paused = p->n_calls >= RPC_PEER_CALLS_MAX;

        if (paused == p->paused)
                return;
        p->paused = paused;
        p->ops->set_paused(p, paused);
}

static void round_add(Rpc *rpc, RpcPeer *p) {
        if (p->scheduled)
                return;
        p->scheduled = true;
        rpc->n_round++;
        if (!rpc->round) {
                p->round_prev = p->round_next = p;
                rpc->round = p;
                return;
        }
        /* At the end of the round: the peer before the current first. */
        p->round_next = rpc->round;
        p->round_prev = rpc->round->round_prev;
        p->round_prev->round_next = p;
        rpc->round->round_prev = p;
}

static void round_remove(Rpc *rpc, RpcPeer *p) {
        if (!p->scheduled)
                return;
        p->scheduled = false;
        rpc->n_round--;
        if (p->round_next == p)
                rpc->round = NULL;
        else {
                p->round_prev->round_next = p->round_next;
                p->round_next->round_prev = p->round_prev;
                if (rpc->round == p)
                        rpc->round = p->round_next;
        }
        p->round_prev = p->round_next = NULL;
}

static RpcCall *peer_pop(RpcPeer *p) {
        RpcCall *call = p->queue_head;

        p->queue_head = call->queue_next;
        if (!p->queue_head)
                p->queue_tail = NULL;
        call->queue_next = NULL;
        p->n_queued--;
        return call;
}

static void work_cb(uv_work_t *w) {
        rpc_call_run_worker(w->data);
}

static void after_work_cb(uv_work_t *w, int status) {
        RpcCall *call = w->data;

        /* What the handler sent while it ran goes before its answer. */
        rpc_notes_flush(call->rpc);
        if (status == UV_ECANCELED && call->r >= 0) {
                call->r = -ECANCELED;
                msb_error_set(&call->err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");
        }
        rpc_sched_done(call->rpc, call);
}

static void start_call(Rpc *rpc, RpcCall *call) {
        int r;

        rpc->running++;
        call->peer->n_running++;
        call->work.data = call;
        r = uv_queue_work(rpc->loop, &call->work, work_cb, after_work_cb);
        if (r < 0) {
                call->r = -EIO;
                msb_error_set(&call->err, -EIO, PROTO_ERROR_INTERNAL_ERROR, "cannot queue work: %s", uv_strerror(r));
                rpc_sched_done(rpc, call);
        }
}

/* Fills free slots from the round: one call of each peer in turn, skipping
 * peers at their own cap, until the slots are full or nobody can run. */
static void pump(Rpc *rpc) {
        /* Peers passed over in a row because they run their most already. */
        unsigned skipped = 0;

        while (rpc->running < RPC_WORKER_SLOTS && rpc->round && skipped < rpc->n_round) {
                RpcPeer *p = rpc->round;

                rpc->round = p->round_next;
                if (p->n_running >= RPC_PEER_RUNNING_MAX) {
                        skipped++;
                        continue;
                }
                skipped = 0;
                RpcCall *call = peer_pop(p);
                if (!p->queue_head)
                        round_remove(rpc, p);
                start_call(rpc, call);
        }
}

void rpc_sched_enqueue(Rpc *rpc, RpcCall *call) {
        RpcPeer *p = call->peer;

        if (p->queue_tail)
                p->queue_tail->queue_next = call;
        else
                p->queue_head = call;
        p->queue_tail = call;
        p->n_queued++;
        round_add(rpc, p);
        pump(rpc);
}

void rpc_sched_done(Rpc *rpc, RpcCall *call) {
        rpc->running--;
        call->peer->n_running--;
        rpc_call_finish(call);
        pump(rpc);
}

static void refuse(RpcCall *call) {
        call->r = -ESHUTDOWN;
        msb_error_set(&call->err, -ESHUTDOWN, PROTO_ERROR_SHUTTING_DOWN,
                      "the daemon is shutting down: the call had not started");
        rpc_call_finish(call);
}

void rpc_sched_refuse_waiting(Rpc *rpc) {
        while (rpc->round) {
                RpcPeer *p = rpc->round;
                round_remove(rpc, p);
                while (p->queue_head)
                        refuse(peer_pop(p));
        }
}

void rpc_peer_closed(Rpc *rpc, RpcPeer *p) {
        /* Nobody is there to read their answers: they never start. */
        round_remove(rpc, p);
        while (p->queue_head)
                refuse(peer_pop(p));
        rpc_peer_cancel_all(p);
        while (p->watches) {
                RpcPeerWatch *w = p->watches;
                p->watches = w->next;
                w->next = NULL;
                w->closed(w);
        }
}

void rpc_peer_watch(RpcPeer *p, RpcPeerWatch *w) {
        w->next = p->watches;
        p->watches = w;
}

void rpc_peer_unwatch(RpcPeer *p, RpcPeerWatch *w) {
        for (RpcPeerWatch **q = &p->watches; *q; q = &(*q)->next)
                if (*q == w) {
                        *q = w->next;
                        w->next = NULL;
                        return;
                }
}

/* ---- notifications from worker handlers ---- */

void rpc_call_notify_from_worker(RpcCall *call, const char *method, json_t *params) {
        Rpc *rpc = call->rpc;
        RpcWorkerNote *n = calloc(1, sizeof(*n));

        if (!n) {
                json_decref(params);
                return;
        }
        *n = (RpcWorkerNote) { .call = call, .method = method, .params = params };
        pthread_mutex_lock(&rpc->notes_lock);
        /* After rpc_close() the handle is gone: nobody would send it. */
        if (!rpc->notes_open) {
                pthread_mutex_unlock(&rpc->notes_lock);
                json_decref(params);
                free(n);
                return;
        }
        if (rpc->notes_tail)
                rpc->notes_tail->next = n;
        else
                rpc->notes_head = n;
        rpc->notes_tail = n;
        (void) uv_async_send(&rpc->notes_async);
        pthread_mutex_unlock(&rpc->notes_lock);
}

/* On the loop: every call a note names is still running (its answer waits
 * for this flush), so sending to it is safe. */
void rpc_notes_flush(Rpc *rpc) {
        RpcWorkerNote *n;
        bool open;

        pthread_mutex_lock(&rpc->notes_lock);
        n = rpc->notes_head;
        rpc->notes_head = rpc->notes_tail = NULL;
        open = rpc->notes_open;
        pthread_mutex_unlock(&rpc->notes_lock);
        while (n) {
                RpcWorkerNote *next = n->next;
                if (open)
                        rpc_call_notify(n->call, n->method, n->params);
                else
                        json_decref(n->params);
                free(n);
                n = next;
        }
}

static void notes_async_cb(uv_async_t *a) {
        rpc_notes_flush(a->data);
}

int rpc_notes_open(Rpc *rpc) {
        int r;

        if (!rpc->loop)
                return 0;
        r = uv_async_init(rpc->loop, &rpc->notes_async, notes_async_cb);
        if (r < 0)
                return r;
        rpc->notes_async.data = rpc;
        /* Waiting for notes never keeps the loop running. */
        uv_unref((uv_handle_t *) &rpc->notes_async);
        rpc->notes_open = true;
        return 0;
}

void rpc_notes_close(Rpc *rpc) {
        bool open;

        rpc_notes_flush(rpc);
        pthread_mutex_lock(&rpc->notes_lock);
        open = rpc->notes_open;
        rpc->notes_open = false;
        pthread_mutex_unlock(&rpc->notes_lock);
        if (open)
                uv_close((uv_handle_t *) &rpc->notes_async, NULL);
}
