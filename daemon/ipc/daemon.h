/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the RPC handlers get, by the thread they run on (ARCHITECTURE.md
 * "Threads"): handlers on the loop get the loop's context, handlers on a
 * worker the workers'. A worker handler has no way to the store's read
 * connection or the pull manager, which only the loop may touch.
 */

#include <uv.h>

#include "rpc.h"
#include "store.h"

typedef struct EventHub EventHub;
typedef struct PullManager PullManager;
typedef struct Server Server;

/* The loop thread's. */
struct RpcLoopContext {
        StoreReader *reader; /* the loop's read connection to the index */
        PullManager *pull;
        EventHub *events;    /* events.subscribe's subscribers */
        Server *server;      /* for system.info's connection counts; NULL until it exists */
        const char *store_path;
        const char *socket_path;
        int64_t started_at_ms;
        uint64_t started_monotonic_ms;
};

/* The worker threads'. Everything in it is safe to use from any thread. */
struct RpcWorkerContext {
        Store *store;
};

/* The method table: every method of proto/openrpc.json, with its handler. */
extern const RpcMethod daemon_methods[];
extern const size_t daemon_n_methods;
