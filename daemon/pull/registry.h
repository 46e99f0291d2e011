/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A client of OCI registries (OCI distribution-spec v1.1, "Pulling"), run
 * on the event loop through curl_glue.
 *
 * A fetch is one manifest or one blob of one repository. It walks the
 * endpoints of the registry: each configured mirror in order, then the
 * origin (docker.io is served by registry-1.docker.io). For each endpoint
 * it pings `GET /v2/` once per daemon lifetime to learn the scheme (HTTPS;
 * plain HTTP only for insecure or loopback registries) and the auth
 * challenge, gets a Bearer token (cached per endpoint and repository until it
 * expires) or uses Basic credentials, and sends the request. Transient
 * failures (connection errors, 429, 5xx) are retried with exponential
 * backoff; a blob that was cut mid-body resumes with a Range request. Blob
 * bytes are written to the caller's file and hashed as they arrive; a blob
 * longer than its descriptor is aborted at once, a wrong digest fails the
 * fetch with digest-mismatch. Not-found and failures on a mirror fall back to
 * the next endpoint.
 *
 * Every error is an MsbError of a protocol kind (unauthorized,
 * remote-not-found, digest-mismatch, limit-exceeded, network-error,
 * registry-error). Messages name the registry and the object, never a
 * credential or a token.
 *
 * The log: every HTTP exchange at debug level (method, URL, status or curl
 * error, bytes, milliseconds), each retry and each fallback to the next
 * endpoint at info level, all prefixed with the fetch's log tag (the pull
 * it serves, "pull#12"). URLs are logged without userinfo, query or
 * fragment: a redirect to blob storage carries its signature in the query.
 */

#include <uv.h>

#include "digest.h"
#include "error.h"
#include "registry_config.h"

/* Attempts of one request on one endpoint before falling back. An attempt
 * that made progress on a blob does not count, so a flaky link that keeps
 * delivering bytes finishes the download. */
#define REGISTRY_ATTEMPTS_MAX 4U
/* Backoff before retry n (1-based): BASE << (n - 1), milliseconds. */
#define REGISTRY_BACKOFF_BASE_MS 200U
/* Longest Retry-After we honour on 429/503, milliseconds. */
#define REGISTRY_RETRY_AFTER_MAX_MS (10 * MSEC_PER_SEC)
#define REGISTRY_CONNECT_TIMEOUT_MS (15 * MSEC_PER_SEC)
/* A transfer slower than 1 byte/s for this long is a network failure. */
#define REGISTRY_STALL_TIMEOUT_S 30L
#define REGISTRY_MAX_REDIRECTS 5L
/* The longest log tag of a fetch ("pull#12"), bytes with the NUL. */
#define REGISTRY_LOG_TAG_MAX 32U
/* A token server response larger than this is garbage, bytes. */
#define REGISTRY_TOKEN_RESPONSE_MAX_BYTES (256 * KiB)
/* Lifetime of a token whose response gives none (distribution-spec token
 * auth: "expires_in ... defaults to 60 seconds"), seconds. */
#define REGISTRY_TOKEN_DEFAULT_LIFETIME_S 60U
/* The client_id of an identity token's OAuth2 request, which token servers
 * may log or require. */
#define REGISTRY_OAUTH_CLIENT_ID "msb-imaged"
/* Longest header value we keep (WWW-Authenticate, Content-Type, ...), bytes. */
#define REGISTRY_HEADER_VALUE_MAX_BYTES (8 * KiB)
/* curl's receive buffer, bytes: fewer write callbacks per blob. */
#define REGISTRY_RECEIVE_BUFFER_BYTES (512 * KiB)

/* The Accept list of manifest requests: both OCI and Docker schema2 indexes
 * and manifests (image-spec media-types.md). */
#define REGISTRY_MANIFEST_ACCEPT                                    \
        "application/vnd.oci.image.index.v1+json, "                 \
        "application/vnd.oci.image.manifest.v1+json, "              \
        "application/vnd.docker.distribution.manifest.list.v2+json, " \
        "application/vnd.docker.distribution.manifest.v2+json"

typedef struct Registry Registry;
typedef struct RegistryFetch RegistryFetch;

typedef enum RegistryFetchKind {
        REGISTRY_FETCH_MANIFEST,
        REGISTRY_FETCH_BLOB,
} RegistryFetchKind;

typedef struct RegistryFetchParams {
        RegistryFetchKind kind;
        const char *domain;          /* of the reference: "docker.io", "127.0.0.1:5000" */
        const char *repository;      /* "library/alpine" */
        const char *reference;       /* manifests: tag or digest; blobs: NULL (the digest is used) */
        const char *digest;          /* blobs, and manifests by digest: the expected digest */
        uint64_t size;               /* blobs: the descriptor's size */
        uint64_t max_size;           /* manifests: largest accepted body */
        int fd;                      /* blobs: an empty file to write to (not owned), or
                                      * -1 to collect a small blob (a config) in memory */
        const char *log_tag;         /* prefix of the fetch's log lines ("pull#12"), or NULL */
} RegistryFetchParams;

/* Bytes of the blob written so far (after a restart, it can go down). */
typedef void (*RegistryFetchProgressFn)(RegistryFetch *f, uint64_t bytes, void *userdata);
/* Final: r is 0 or a negative errno with err set. The callee may free f. */
typedef void (*RegistryFetchDoneFn)(RegistryFetch *f, int r, const MsbError *err, void *userdata);

/* Counters for tests and the log. */
typedef struct RegistryStats {
        uint64_t pings;
        uint64_t tokens;
        uint64_t requests;
        uint64_t retries;
        uint64_t resumes;
} RegistryStats;

typedef enum RegistryChallengeScheme {
        REGISTRY_CHALLENGE_NONE,
        REGISTRY_CHALLENGE_BASIC,
        REGISTRY_CHALLENGE_BEARER,
} RegistryChallengeScheme;

/*
 * Parses a WWW-Authenticate header (RFC 7235 section 4.1; distribution
 * token auth): `Bearer realm="...",service="...",scope="..."` or `Basic
 * realm="..."`. Only the first challenge counts. *ret_realm and
 * *ret_service (either may be NULL on success; Bearer always has a realm)
 * are allocated. -EOPNOTSUPP for another scheme, -EINVAL when malformed or
 * a value exceeds REGISTRY_HEADER_VALUE_MAX_BYTES.
 */
int registry_challenge_parse(const char *s, RegistryChallengeScheme *ret_scheme, char **ret_realm,
                             char **ret_service);

/* config is borrowed: it must outlive the registry, or be replaced first
 * with registry_set_config(). */
int registry_new(uv_loop_t *loop, const RegistryConfig *config, Registry **ret);
/*
 * Replaces the config (borrowed as in registry_new()); the old one may be
 * freed as soon as this returns. Fetches in flight go on: nothing of a
 * config is kept across loop callbacks (curl copies the strings it is
 * given), so each request reads the config that is current when it is
 * sent. Tokens and what the pings learnt are forgotten: credentials, CAs
 * or "insecure" may have changed.
 */
void registry_set_config(Registry *r, const RegistryConfig *config);
/* Every fetch must have been freed. The memory goes in a close callback:
 * run the loop once more. Returns NULL. */
Registry *registry_free(Registry *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Registry *, registry_free);

const RegistryStats *registry_stats(const Registry *r);

/* Starts a fetch; callbacks come from the loop, never from inside this call.
 * Blob fetches beyond the configured concurrency wait in a queue. */
int registry_fetch_start(Registry *r, const RegistryFetchParams *p, RegistryFetchProgressFn progress,
                         RegistryFetchDoneFn done, void *userdata, RegistryFetch **ret);
/* Cancels a fetch still running (no callback) and frees it. Returns NULL. */
RegistryFetch *registry_fetch_free(RegistryFetch *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(RegistryFetch *, registry_fetch_free);

/* Results of a successful fetch. The digest is the one computed from the
 * bytes received (verified against the expected one when there was one). */
const char *registry_fetch_digest(const RegistryFetch *f);
uint64_t registry_fetch_size(const RegistryFetch *f);
/* Manifests and in-memory blobs: the body (NUL-terminated). Manifests: the
 * Content-Type without parameters ("" when absent). */
const char *registry_fetch_body(const RegistryFetch *f, size_t *ret_size);
const char *registry_fetch_media_type(const RegistryFetch *f);

/* For the log line of a failed fetch: its last exchange and the retries on
 * its last endpoint, as "GET URL: HTTP 502, 3 retries" or "GET URL:
 * Couldn't connect to server, 0 retries" (the URL without userinfo or
 * query). NULL when it made none, or out of memory. Caller frees. */
char *registry_fetch_describe(const RegistryFetch *f);
