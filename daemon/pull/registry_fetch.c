/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state machine of one fetch (distribution-spec "Pulling manifests",
 * "Pulling blobs"): on each endpoint, ping it if not yet done, get a token
 * if its challenge asks for one, send the request and read what the answer
 * means: success (verified), retry with backoff, authorize once more, or
 * fall back to the next endpoint.
 */
#include <assert.h>

#include "log.h"
#include "registry_internal.h"

void registry_fetch_finish(RegistryFetch *f, int r) {
        registry_fetch_stop_transfer(f);
        registry_fetch_release_slot(f);
        f->step = STEP_DONE;
        f->done(f, r, r < 0 ? &f->err : NULL, f->userdata);
}

static const char *fetch_object(const RegistryFetch *f) {
        return f->kind == REGISTRY_FETCH_BLOB ? f->expected_digest : f->reference;
}

static const char *fetch_kind_name(const RegistryFetch *f) {
        return f->kind == REGISTRY_FETCH_BLOB ? "blob" : "manifest";
}

void registry_fetch_endpoint_failed(RegistryFetch *f, int r) {
        if (f->endpoint_idx + 1 < f->n_endpoints) {
                /* A mirror that fails is worth a line: the pull goes on,
                 * slower, and the mirror may need fixing. */
                log_info("%s %s: %s; trying %s next", f->log_tag, f->endpoints[f->endpoint_idx]->key,
                         f->err.message, f->endpoints[f->endpoint_idx + 1]->key);
                msb_error_clear(&f->err);
                f->endpoint_retries = 0;
                f->endpoint_idx++;
                f->scheme_idx = 0;
                f->attempts = 0;
                f->reauthorized = false;
                registry_fetch_advance(f);
                return;
        }
        registry_fetch_finish(f, r);
}

void registry_fetch_fail_internal(RegistryFetch *f, int r, const char *what) {
        msb_error_set(&f->err, r, PROTO_ERROR_INTERNAL_ERROR, "%s: %s", what, strerror(-r));
        registry_fetch_finish(f, r);
}

/* The headers of a request: the authorization the endpoint's challenge
 * asks for, and the Accept list of a manifest (distribution-spec "Pulling
 * manifests") or the Range that resumes a blob ("Pulling blobs"). */
static int fetch_request_headers(RegistryFetch *f, const RegistryToken *t) {
        _cleanup_free_ char *auth = NULL, *range = NULL;
        int r;

        r = registry_authorization(f->registry, f->endpoints[f->endpoint_idx], t, &auth);
        if (r < 0)
                return r;
        if (auth) {
                f->headers = sym_curl_slist_append(f->headers, auth);
                explicit_bzero(auth, strlen(auth));
        }

        if (f->kind == REGISTRY_FETCH_MANIFEST) {
                f->buf_size = 0;
                f->headers = sym_curl_slist_append(f->headers, "Accept: " REGISTRY_MANIFEST_ACCEPT);
        } else {
                f->range_start = f->offset;
                if (f->offset > 0) {
                        if (asprintf(&range, "Range: bytes=%llu-", (unsigned long long) f->offset) < 0)
                                return -ENOMEM;
                        f->headers = sym_curl_slist_append(f->headers, range);
                        f->registry->stats.resumes++;
                }
        }
        if (!f->headers && (auth || range || f->kind == REGISTRY_FETCH_MANIFEST))
                return -ENOMEM;
        return 0;
}

void registry_fetch_request(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        _cleanup_free_ char *url = NULL;
        RegistryToken *t = NULL;
        int r;

        if (e->challenge == REGISTRY_CHALLENGE_BEARER) {
                t = registry_token_find(f->registry, e, f->repository);
                if (!t)
                        return registry_fetch_token(f);
        }

        if (asprintf(&url, "%s/v2/%s/%s/%s", e->base_url, f->repository,
                     f->kind == REGISTRY_FETCH_BLOB ? "blobs" : "manifests", fetch_object(f)) < 0)
                return registry_fetch_fail_internal(f, -ENOMEM, "request");

        r = registry_fetch_transfer_start(f, url, STEP_REQUEST);
        if (r >= 0)
                r = fetch_request_headers(f, t);
        if (r < 0)
                return registry_fetch_fail_internal(f, r, "request");

        f->made_progress = false;
        r = registry_fetch_transfer_go(f);
        if (r < 0)
                return registry_fetch_fail_internal(f, r, "request");
        f->registry->stats.requests++;
}

static bool curl_result_is_transient(CURLcode c) {
        switch (c) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_PARTIAL_FILE:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_SSL_CONNECT_ERROR:
                return true;
        default:
                return false;
        }
}

/* A transient failure: back off and try again, or give up on this endpoint. */
static void fetch_retry(RegistryFetch *f, const char *why) {
        Registry *r = f->registry;
        uint64_t delay;

        if (f->made_progress)
                f->attempts = 0;
        f->attempts++;
        if (f->attempts >= REGISTRY_ATTEMPTS_MAX) {
                msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR,
                              "fetching %s %s from %s failed after %u attempts: %s", fetch_kind_name(f),
                              fetch_object(f), f->endpoints[f->endpoint_idx]->key, f->attempts, why);
                return registry_fetch_endpoint_failed(f, -EHOSTUNREACH);
        }

        delay = (uint64_t) REGISTRY_BACKOFF_BASE_MS << (f->attempts - 1);
        if (f->retry_after_ms > delay)
                delay = f->retry_after_ms;
        f->endpoint_retries++;
        log_info("%s GET %s: %s; retrying in %" PRIu64 " ms (attempt %u of %u)", f->log_tag,
                 f->last_url ?: f->endpoints[f->endpoint_idx]->key, why, delay, f->attempts + 1,
                 REGISTRY_ATTEMPTS_MAX);
        registry_fetch_stop_transfer(f);
        f->step = STEP_BACKOFF;
        f->due_ms = now_monotonic_ms() + delay;
        r->stats.retries++;
        registry_kick(r);
}

/* The media type of a manifest: the Content-Type without parameters. */
static void fetch_set_media_type(RegistryFetch *f) {
        const char *semi;

        snprintf(f->media_type, sizeof(f->media_type), "%s", f->content_type ? f->content_type : "");
        semi = strchr(f->media_type, ';');
        if (semi)
                f->media_type[semi - f->media_type] = '\0';
        for (size_t i = strlen(f->media_type); i > 0 && f->media_type[i - 1] == ' '; i--)
                f->media_type[i - 1] = '\0';
}

/* A complete answer: its size and digest decide whether it is the content
 * asked for. */
static void fetch_request_succeeded(RegistryFetch *f) {
        if (f->kind == REGISTRY_FETCH_BLOB) {
                if (f->offset != f->expected_size) {
                        msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                                      "blob %s from %s/%s has %llu bytes, its descriptor says %llu",
                                      f->expected_digest, f->domain, f->repository,
                                      (unsigned long long) f->offset, (unsigned long long) f->expected_size);
                        msb_error_add_data(&f->err, "expected", json_string(f->expected_digest));
                        return registry_fetch_endpoint_failed(f, -EBADMSG);
                }
                sha256_final_string(f->hash, f->digest);
        } else {
                int r = digest_buffer(f->buf ? f->buf : "", f->buf_size, f->digest);

                if (r < 0)
                        return registry_fetch_fail_internal(f, r, "hashing a manifest");
                if (!f->buf && registry_fetch_buf_append(f, "", 0) < 0)
                        return registry_fetch_fail_internal(f, -ENOMEM, "manifest");
                fetch_set_media_type(f);

                /* A registry vouches for the content with this header
                 * (distribution-spec "Pulling manifests"). */
                if (f->content_digest && digest_is_valid(f->content_digest) &&
                    !streq(f->content_digest, f->digest)) {
                        msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                                      "manifest %s of %s/%s hashes to %s, the registry says %s", f->reference,
                                      f->domain, f->repository, f->digest, f->content_digest);
                        msb_error_add_data(&f->err, "expected", json_string(f->content_digest));
                        msb_error_add_data(&f->err, "actual", json_string(f->digest));
                        return registry_fetch_endpoint_failed(f, -EBADMSG);
                }
        }

        if (f->expected_digest && !streq(f->expected_digest, f->digest)) {
                msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "%s %s from %s/%s hashes to %s", fetch_kind_name(f), f->expected_digest,
                              f->domain, f->repository, f->digest);
                msb_error_add_data(&f->err, "expected", json_string(f->expected_digest));
                msb_error_add_data(&f->err, "actual", json_string(f->digest));
                return registry_fetch_endpoint_failed(f, -EBADMSG);
        }
        registry_fetch_finish(f, 0);
}

/* 401 on a request: the token expired, or the challenge changed (a registry
 * that did not ask at ping time). Authorize once more, then give up. */
static void fetch_reauthorize(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];

        if (!f->reauthorized && f->www_authenticate) {
                f->reauthorized = true;
                registry_token_forget(f->registry, e, f->repository);
                if (registry_endpoint_set_challenge(e, f->www_authenticate) >= 0 &&
                    e->challenge != REGISTRY_CHALLENGE_NONE)
                        return registry_fetch_request(f);
        }
        registry_fetch_unauthorized(f);
}

/* 416: the server cannot serve the range we asked for: start over. */
static void fetch_range_not_satisfiable(RegistryFetch *f) {
        int r = registry_fetch_discard_content(f);

        if (r < 0)
                return registry_fetch_fail_internal(f, r, "truncating a download");
        fetch_retry(f, "range not satisfiable");
}

/* The answer to a manifest or blob request (distribution-spec "Pulling
 * manifests", "Pulling blobs", and its error codes). */
static void fetch_request_done(RegistryFetch *f, CURLcode result) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        char why[64];
        int r;

        if (!f->body_seen)
                sym_curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &f->status);

        if (f->abort_err.set) {
                /* Our own verdict on the content: final for this endpoint. */
                r = f->abort_err.kind == PROTO_ERROR_LIMIT_EXCEEDED ? -EFBIG : -EBADMSG;
                f->err = f->abort_err;
                f->abort_err = (MsbError) {};
                return registry_fetch_endpoint_failed(f, r);
        }
        if (result != CURLE_OK) {
                if (curl_result_is_transient(result))
                        return fetch_retry(f, sym_curl_easy_strerror(result));
                msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR, "fetching %s %s from %s: %s",
                              fetch_kind_name(f), fetch_object(f), e->key, sym_curl_easy_strerror(result));
                return registry_fetch_endpoint_failed(f, -EHOSTUNREACH);
        }

        switch (f->status) {
        case 200:
        case 206:
                return fetch_request_succeeded(f);
        case 401:
                return fetch_reauthorize(f);
        case 403:
                return registry_fetch_unauthorized(f);
        case 404:
                msb_error_set(&f->err, -ENOENT, PROTO_ERROR_REMOTE_NOT_FOUND, "%s %s not found in %s/%s",
                              fetch_kind_name(f), fetch_object(f), f->domain, f->repository);
                msb_error_add_data(&f->err, "registry", json_string(f->domain));
                return registry_fetch_endpoint_failed(f, -ENOENT);
        case 416:
                if (f->offset > 0)
                        return fetch_range_not_satisfiable(f);
                break;
        case 408:
        case 429:
        case 500:
        case 502:
        case 503:
        case 504:
                snprintf(why, sizeof(why), "HTTP %ld", f->status);
                return fetch_retry(f, why);
        default:
                if (f->status >= 500)
                        return fetch_retry(f, "server error");
                break;
        }
        msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR, "fetching %s %s from %s: unexpected HTTP %ld",
                      fetch_kind_name(f), fetch_object(f), e->key, f->status);
        registry_fetch_endpoint_failed(f, -EPROTO);
}

void registry_fetch_transfer_done(CurlGlue *g, CURL *easy, CURLcode result, void *userdata) {
        RegistryFetch *f = userdata;

        assert(f->easy == easy);
        if (f->status == 0 || !f->body_seen)
                sym_curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &f->status);
        registry_fetch_transfer_log(f, result);

        switch (f->step) {
        case STEP_PING:
                return registry_fetch_ping_done(f, result);
        case STEP_TOKEN:
                return registry_fetch_token_done(f, result);
        case STEP_REQUEST:
                return fetch_request_done(f, result);
        default:
                assert(false);
        }
}

void registry_fetch_advance(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];

        if (!e->pinged)
                return registry_fetch_ping(f);
        registry_fetch_request(f);
}
