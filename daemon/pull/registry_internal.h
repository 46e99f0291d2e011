/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the files of the registry client share; nothing outside them
 * includes this. A fetch is a state machine (FetchStep) of HTTP transfers
 * on one endpoint after another:
 *
 *   registry.c           the client: its fetches, the queue of blob
 *                        downloads and their slots, the backoff timer
 *   registry_fetch.c     the state machine of a fetch: the request, what
 *                        its answer means, retries, endpoint fallback, the
 *                        final verification
 *   registry_transfer.c  one HTTP transfer: the curl handle, response
 *                        headers, body bytes written and hashed as they
 *                        arrive
 *   registry_endpoint.c  mirrors and the origin, and the ping that learns
 *                        an endpoint's scheme and challenge
 *   registry_auth.c      Bearer tokens (requested and cached) and Basic
 *   registry_challenge.c the WWW-Authenticate parser
 *
 * Everything here runs on the loop thread.
 */

#include "curl_lib.h"

#include "curl_glue.h"
#include "registry.h"

/* A place a repository can be fetched from: the origin or a mirror. The
 * ping result is cached here for the registry's lifetime. */
typedef struct RegistryEndpoint {
        char *key;          /* origin domain, or the mirror URL */
        char *config_host;  /* key into RegistryConfig: credentials, CA, insecure */
        char *net_host;     /* host[:port] to connect to */
        char *fixed_scheme; /* mirrors: the scheme of their URL; origin: NULL */
        bool is_mirror;
        bool pinged;
        char *base_url;     /* scheme://net_host, once pinged */
        RegistryChallengeScheme challenge;
        char *realm;
        char *service;
        struct RegistryEndpoint *next;
} RegistryEndpoint;

/* A Bearer token of one repository on one endpoint. */
typedef struct RegistryToken {
        char *endpoint_key;
        char *repository;
        char *token;
        uint64_t expires_ms; /* monotonic */
        struct RegistryToken *next;
} RegistryToken;

/* Where a fetch is. PING, TOKEN and REQUEST each have a transfer in
 * flight; QUEUED and BACKOFF wait for the registry's timer. */
typedef enum FetchStep {
        STEP_QUEUED,
        STEP_BACKOFF,
        STEP_PING,
        STEP_TOKEN,
        STEP_REQUEST,
        STEP_DONE,
} FetchStep;

struct Registry {
        uv_loop_t *loop;
        const RegistryConfig *config;
        CurlGlue *glue;
        uv_timer_t timer; /* backoffs and the queue */
        RegistryEndpoint *endpoints;
        RegistryToken *tokens;
        RegistryFetch *fetches; /* all live fetches */
        unsigned active_blobs;
        RegistryStats stats;
        bool freeing;
};

struct RegistryFetch {
        Registry *registry;
        RegistryFetchKind kind;
        char *domain;
        char *repository;
        char *reference;
        char *expected_digest;
        uint64_t expected_size;
        uint64_t max_size;
        int fd;
        RegistryFetchProgressFn progress;
        RegistryFetchDoneFn done;
        void *userdata;
        char log_tag[REGISTRY_LOG_TAG_MAX];

        FetchStep step;
        bool holds_slot;
        RegistryEndpoint *endpoints[REGISTRY_MIRRORS_MAX + 1];
        size_t n_endpoints;
        size_t endpoint_idx;
        unsigned scheme_idx;
        unsigned attempts;
        bool reauthorized;
        uint64_t due_ms;

        /* The transfer in flight and what its response said so far. */
        CURL *easy;
        struct curl_slist *headers;
        long status;
        bool body_seen;
        char *www_authenticate;
        char *content_type;
        char *content_digest;
        char *content_range;
        uint64_t retry_after_ms;
        uint64_t range_start;
        bool made_progress;
        uint64_t transfer_started_ms;

        /* The last exchange, for the log: its URL (without secrets), what
         * came back, and the retries on the current endpoint. */
        char *last_url;
        long last_status;
        CURLcode last_result;
        unsigned endpoint_retries;

        /* The content. */
        Sha256 *hash;
        uint64_t offset;
        char *buf;
        size_t buf_size;
        size_t buf_alloc;
        char digest[DIGEST_STRING_MAX];
        char media_type[256];

        MsbError abort_err; /* why a write callback stopped the transfer */
        MsbError err;       /* the failure of the current endpoint */

        RegistryFetch *prev, *next;
};

/* registry.c */

/* Schedules the registry's timer at the earliest due time of any fetch. */
void registry_kick(Registry *r);
/* A blob fetch gives its download slot back (a no-op without one). */
void registry_fetch_release_slot(RegistryFetch *f);

/* registry_fetch.c */

/* Moves the fetch on from wherever it is on the current endpoint. */
void registry_fetch_advance(RegistryFetch *f);
/* The manifest or blob request, or first the token it needs. */
void registry_fetch_request(RegistryFetch *f);
/* Reports the end of the fetch; f may be freed by the callback. */
void registry_fetch_finish(RegistryFetch *f, int r);
/* The current endpoint failed with f->err set: try the next one, or report
 * the error when it was the last. */
void registry_fetch_endpoint_failed(RegistryFetch *f, int r);
/* Ends the fetch with an internal error about what. */
void registry_fetch_fail_internal(RegistryFetch *f, int r, const char *what);
/* curl_glue's callback for every transfer of a fetch. */
void registry_fetch_transfer_done(CurlGlue *g, CURL *easy, CURLcode result, void *userdata);

/* registry_transfer.c */

/* url without userinfo, query or fragment, for the log (NULL: out of memory
 * or not a URL). */
char *registry_url_for_log(const char *url);
/* Logs the exchange that just ended (debug) and keeps it for
 * registry_fetch_describe(). */
void registry_fetch_transfer_log(RegistryFetch *f, CURLcode result);

/* Sets up a transfer of url for step (not started yet: the caller may add
 * options and headers first). */
int registry_fetch_transfer_start(RegistryFetch *f, const char *url, FetchStep step);
/* Hands the transfer set up by registry_fetch_transfer_start() to curl. */
int registry_fetch_transfer_go(RegistryFetch *f);
void registry_fetch_stop_transfer(RegistryFetch *f);
/* Forgets what the previous response said. */
void registry_fetch_reset_response(RegistryFetch *f);
/* Appends to the in-memory body, which stays NUL-terminated. */
int registry_fetch_buf_append(RegistryFetch *f, const void *p, size_t n);
/* Throws away the content received so far, to receive it from the start. */
int registry_fetch_discard_content(RegistryFetch *f);

/* registry_endpoint.c */

/* The endpoint of key (a domain, or a mirror's URL), created on first use;
 * NULL when out of memory. */
RegistryEndpoint *registry_endpoint_get(Registry *r, const char *key, bool is_mirror);
void registry_endpoints_free(Registry *r);
const RegistryHostConfig *registry_endpoint_config(const Registry *r, const RegistryEndpoint *e);
/* Replaces the endpoint's challenge with the one of a WWW-Authenticate
 * header (NULL: none). */
int registry_endpoint_set_challenge(RegistryEndpoint *e, const char *header);
/* GET /v2/ on the current endpoint, and what its answer means. */
void registry_fetch_ping(RegistryFetch *f);
void registry_fetch_ping_done(RegistryFetch *f, CURLcode result);

/* registry_auth.c */

/* The unexpired token of the repository on e, or NULL. */
RegistryToken *registry_token_find(Registry *r, const RegistryEndpoint *e, const char *repository);
void registry_token_forget(Registry *r, const RegistryEndpoint *e, const char *repository);
void registry_tokens_free(Registry *r);
/* The "Authorization: ..." header line to send to e (*ret NULL: none). */
int registry_authorization(const Registry *r, const RegistryEndpoint *e, const RegistryToken *t, char **ret);
/* Asks the endpoint's token server for a token, and what its answer means. */
void registry_fetch_token(RegistryFetch *f);
void registry_fetch_token_done(RegistryFetch *f, CURLcode result);
/* Fails the current endpoint with unauthorized. */
void registry_fetch_unauthorized(RegistryFetch *f);
