/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The endpoints of a registry: its mirrors, tried first in order, and the
 * origin. An endpoint is pinged once per daemon lifetime to learn how to
 * reach it (the scheme) and what it asks for (the challenge).
 */
#include <assert.h>

#include "registry_internal.h"

static RegistryEndpoint *endpoint_free(RegistryEndpoint *e) {
        if (!e)
                return NULL;
        free(e->key);
        free(e->config_host);
        free(e->net_host);
        free(e->fixed_scheme);
        free(e->base_url);
        free(e->realm);
        free(e->service);
        free(e);
        return NULL;
}

void registry_endpoints_free(Registry *r) {
        while (r->endpoints) {
                RegistryEndpoint *e = r->endpoints;
                r->endpoints = e->next;
                endpoint_free(e);
        }
}

RegistryEndpoint *registry_endpoint_get(Registry *r, const char *key, bool is_mirror) {
        RegistryEndpoint *e;

        for (e = r->endpoints; e; e = e->next)
                if (streq(e->key, key))
                        return e;

        e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        e->is_mirror = is_mirror;
        e->key = strdup(key);
        if (!e->key)
                return endpoint_free(e);
        if (is_mirror) {
                const char *sep = strstr(key, "://");

                if (!sep)
                        return endpoint_free(e);
                e->fixed_scheme = strndup(key, (size_t) (sep - key));
                e->net_host = strdup(sep + 3);
                e->config_host = registry_config_normalize_host(key);
        } else {
                /* Docker Hub's API is not served at docker.io itself. */
                e->net_host = strdup(streq(key, "docker.io") ? "registry-1.docker.io" : key);
                e->config_host = strdup(key);
        }
        if (!e->net_host || !e->config_host || (is_mirror && !e->fixed_scheme))
                return endpoint_free(e);

        e->next = r->endpoints;
        r->endpoints = e;
        return e;
}

const RegistryHostConfig *registry_endpoint_config(const Registry *r, const RegistryEndpoint *e) {
        return registry_config_find(r->config, e->config_host);
}

int registry_endpoint_set_challenge(RegistryEndpoint *e, const char *header) {
        char *realm = NULL, *service = NULL;
        RegistryChallengeScheme scheme = REGISTRY_CHALLENGE_NONE;
        int r;

        if (header) {
                r = registry_challenge_parse(header, &scheme, &realm, &service);
                if (r < 0)
                        return r;
        }
        free(e->realm);
        free(e->service);
        e->challenge = scheme;
        e->realm = realm;
        e->service = service;
        return 0;
}

static bool endpoint_may_use_http(const Registry *r, const RegistryEndpoint *e) {
        const RegistryHostConfig *hc = registry_endpoint_config(r, e);

        return (hc && hc->insecure) || registry_host_is_loopback(e->net_host);
}

/* GET /v2/ (distribution-spec "Determining support"): 200 or 401 means a
 * registry answers there. HTTPS first; plain HTTP only where allowed. */
void registry_fetch_ping(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        _cleanup_free_ char *url = NULL;
        const char *scheme;
        int r;

        if (e->fixed_scheme)
                scheme = f->scheme_idx == 0 ? e->fixed_scheme : NULL;
        else if (f->scheme_idx == 0)
                scheme = "https";
        else if (f->scheme_idx == 1 && endpoint_may_use_http(f->registry, e))
                scheme = "http";
        else
                scheme = NULL;
        assert(scheme);

        if (asprintf(&url, "%s://%s/v2/", scheme, e->net_host) < 0)
                return registry_fetch_fail_internal(f, -ENOMEM, "ping");
        r = registry_fetch_transfer_start(f, url, STEP_PING);
        if (r >= 0)
                r = registry_fetch_transfer_go(f);
        if (r < 0)
                return registry_fetch_fail_internal(f, r, "ping");
        f->registry->stats.pings++;
}

static bool fetch_has_another_scheme(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];

        return !e->fixed_scheme && f->scheme_idx == 0 && endpoint_may_use_http(f->registry, e);
}

void registry_fetch_ping_done(RegistryFetch *f, CURLcode result) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        char *base = NULL;
        int r;

        if (result != CURLE_OK || (f->status != 200 && f->status != 401)) {
                if (fetch_has_another_scheme(f)) {
                        f->scheme_idx++;
                        registry_fetch_ping(f);
                        return;
                }
                if (result != CURLE_OK) {
                        msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR,
                                      "cannot reach registry %s: %s", e->key, sym_curl_easy_strerror(result));
                        return registry_fetch_endpoint_failed(f, -EHOSTUNREACH);
                }
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "%s is not an OCI registry: GET /v2/ answered HTTP %ld", e->key, f->status);
                return registry_fetch_endpoint_failed(f, -EPROTO);
        }

        r = registry_endpoint_set_challenge(e, f->status == 401 ? f->www_authenticate : NULL);
        if (r < 0) {
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "registry %s sent an authentication challenge we cannot use", e->key);
                return registry_fetch_endpoint_failed(f, -EPROTO);
        }

        {
                const char *url = NULL;
                sym_curl_easy_getinfo(f->easy, CURLINFO_EFFECTIVE_URL, &url);
                /* Keep the scheme we reached it with, not a redirect target. */
                if (asprintf(&base, "%s://%s", startswith(url ? url : "", "http://") ? "http" : "https",
                             e->net_host) < 0)
                        return registry_fetch_fail_internal(f, -ENOMEM, "ping");
        }
        free(e->base_url);
        e->base_url = base;
        e->pinged = true;
        registry_fetch_advance(f);
}
