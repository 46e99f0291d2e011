/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* What the RPC handlers share: the loop, the store, and the daemon's facts. */

#include <uv.h>

#include "rpc.h"
#include "store.h"

typedef struct PullManager PullManager;

typedef struct Daemon {
        uv_loop_t *loop;
        Store *store;
        StoreReader *reader; /* the loop thread's: only inline (RPC_INLINE) handlers use it */
        PullManager *pull;
        char *store_path;
        char *socket_path;
        int64_t started_at_ms;
        uint64_t started_monotonic_ms;
} Daemon;

/* The method table: every method of proto/openrpc.json, with its handler. */
extern const RpcMethod daemon_methods[];
extern const size_t daemon_n_methods;
