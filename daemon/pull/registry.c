/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry client: its fetches, the queue that bounds how many blobs
 * download at once, the timer that starts queued fetches and ends
 * backoffs, and the public API (registry.h).
 */
#include <assert.h>

#include "registry_internal.h"

/* The queue: a blob fetch takes one of config->max_downloads slots before
 * its first transfer and holds it until it ends, so that many pulls at once
 * do not open a connection per layer. Manifest and config fetches are small
 * and never wait. */

void registry_fetch_release_slot(RegistryFetch *f) {
        if (!f->holds_slot)
                return;
        f->holds_slot = false;
        assert(f->registry->active_blobs > 0);
        f->registry->active_blobs--;
        registry_kick(f->registry);
}

static void registry_timer_cb(uv_timer_t *t);

void registry_kick(Registry *r) {
        uint64_t now = now_monotonic_ms(), due = UINT64_MAX;

        if (r->freeing)
                return;
        for (RegistryFetch *f = r->fetches; f; f = f->next) {
                if (f->step == STEP_BACKOFF && f->due_ms < due)
                        due = f->due_ms;
                if (f->step == STEP_QUEUED && (f->kind != REGISTRY_FETCH_BLOB ||
                                               r->active_blobs < r->config->max_downloads))
                        due = now;
        }
        if (due == UINT64_MAX)
                uv_timer_stop(&r->timer);
        else
                uv_timer_start(&r->timer, registry_timer_cb, due > now ? due - now : 0, 0);
}

static void registry_timer_cb(uv_timer_t *t) {
        Registry *r = t->data;
        uint64_t now = now_monotonic_ms();
        RegistryFetch *f;

        /* Starting a fetch can finish it and free it (and others), so rescan
         * from the head after each one. */
        for (;;) {
                for (f = r->fetches; f; f = f->next) {
                        if (f->step == STEP_BACKOFF && f->due_ms <= now)
                                break;
                        if (f->step == STEP_QUEUED && (f->kind != REGISTRY_FETCH_BLOB ||
                                                       r->active_blobs < r->config->max_downloads))
                                break;
                }
                if (!f)
                        break;
                if (f->step == STEP_QUEUED) {
                        if (f->kind == REGISTRY_FETCH_BLOB) {
                                f->holds_slot = true;
                                r->active_blobs++;
                        }
                        registry_fetch_advance(f);
                } else
                        registry_fetch_request(f);
        }
        registry_kick(r);
}

/* Public API. */

int registry_new(uv_loop_t *loop, const RegistryConfig *config, Registry **ret) {
        Registry *r;
        int k;

        if (!loop || !config || !ret)
                return -EINVAL;
        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->loop = loop;
        r->config = config;
        /* The curl multi handle (and with it libcurl's and OpenSSL's global
         * set-up, 2.5 MiB of touched library pages) waits for the first
         * transfer: a daemon that only serves its cache never needs it. */
        k = uv_timer_init(loop, &r->timer);
        if (k < 0) {
                free(r);
                return k;
        }
        r->timer.data = r;
        *ret = r;
        return 0;
}

void registry_set_config(Registry *r, const RegistryConfig *config) {
        if (!r || !config)
                return;
        r->config = config;
        /* A token was granted for the old credentials, and a ping chose a
         * scheme under the old "insecure": both are asked again. Fetches in
         * flight hold endpoints, so these are kept, only marked. */
        registry_tokens_free(r);
        for (RegistryEndpoint *e = r->endpoints; e; e = e->next)
                e->pinged = false;
        /* max_concurrent_downloads may have grown. */
        registry_kick(r);
}

static void registry_timer_close_cb(uv_handle_t *h) {
        free(h->data);
}

Registry *registry_free(Registry *r) {
        if (!r)
                return NULL;
        assert(!r->fetches);
        r->freeing = true;
        registry_endpoints_free(r);
        registry_tokens_free(r);
        r->glue = curl_glue_free(r->glue);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *) &r->timer, registry_timer_close_cb);
        return NULL;
}

const RegistryStats *registry_stats(const Registry *r) {
        return &r->stats;
}

static bool is_lower_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* distribution-spec "name": components of [a-z0-9]+ joined by [._-]
 * separators, separated by '/'. The reference parser checks the exact
 * grammar; this keeps a URL path safe whoever calls us (no "..", no empty
 * component). */
static bool repository_is_valid(const char *s) {
        if (!s || !s[0] || strlen(s) > 255)
                return false;
        for (const char *p = s; *p; p++) {
                bool start = p == s || p[-1] == '/', end = p[1] == '\0' || p[1] == '/';

                if (is_lower_alnum(*p))
                        continue;
                if (start || end || !strchr("._-/", *p))
                        return false;
        }
        return true;
}

static bool tag_or_digest_is_valid(const char *s) {
        if (digest_is_valid(s))
                return true;
        if (!s || !s[0] || strlen(s) > 128)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("._-", *p)))
                        return false;
        return true;
}

/* The endpoints a fetch walks: each mirror of its domain in order, then
 * the origin. */
static int fetch_add_endpoints(RegistryFetch *f) {
        Registry *r = f->registry;
        const RegistryHostConfig *hc = registry_config_find(r->config, f->domain);

        for (size_t i = 0; hc && i < hc->n_mirrors; i++) {
                RegistryEndpoint *e = registry_endpoint_get(r, hc->mirrors[i], true);
                if (!e)
                        return -ENOMEM;
                f->endpoints[f->n_endpoints++] = e;
        }
        f->endpoints[f->n_endpoints] = registry_endpoint_get(r, f->domain, false);
        if (!f->endpoints[f->n_endpoints])
                return -ENOMEM;
        f->n_endpoints++;
        return 0;
}

int registry_fetch_start(Registry *r, const RegistryFetchParams *p, RegistryFetchProgressFn progress,
                         RegistryFetchDoneFn done, void *userdata, RegistryFetch **ret) {
        _cleanup_(registry_fetch_freep) RegistryFetch *f = NULL;
        int k;

        if (!r || !p || !done || !ret || !p->domain || !repository_is_valid(p->repository))
                return -EINVAL;
        if (p->kind == REGISTRY_FETCH_BLOB && !digest_is_valid(p->digest))
                return -EINVAL;
        if (p->kind == REGISTRY_FETCH_MANIFEST &&
            (!tag_or_digest_is_valid(p->reference) || (p->digest && !digest_is_valid(p->digest))))
                return -EINVAL;

        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->registry = r;
        f->kind = p->kind;
        f->fd = p->kind == REGISTRY_FETCH_BLOB && p->fd >= 0 ? p->fd : -EBADF;
        f->expected_size = p->size;
        f->max_size = p->max_size;
        f->progress = progress;
        f->done = done;
        f->userdata = userdata;
        f->step = STEP_QUEUED;
        snprintf(f->log_tag, sizeof(f->log_tag), "%s", p->log_tag ?: "registry");
        f->domain = strdup(p->domain);
        f->repository = strdup(p->repository);
        f->reference = p->reference ? strdup(p->reference) : NULL;
        f->expected_digest = p->digest ? strdup(p->digest) : NULL;
        if (!f->domain || !f->repository || (p->reference && !f->reference) || (p->digest && !f->expected_digest))
                return -ENOMEM;
        k = sha256_new(&f->hash);
        if (k < 0)
                return k;

        /* Link first so that registry_fetch_free() unlinks on failure. */
        f->next = r->fetches;
        if (r->fetches)
                r->fetches->prev = f;
        r->fetches = f;

        k = fetch_add_endpoints(f);
        if (k < 0)
                return k;

        registry_kick(r);
        *ret = TAKE_PTR(f);
        return 0;
}

RegistryFetch *registry_fetch_free(RegistryFetch *f) {
        Registry *r;

        if (!f)
                return NULL;
        r = f->registry;
        registry_fetch_stop_transfer(f);
        if (f->prev)
                f->prev->next = f->next;
        else if (r->fetches == f)
                r->fetches = f->next;
        if (f->next)
                f->next->prev = f->prev;
        registry_fetch_release_slot(f);
        registry_fetch_reset_response(f);
        msb_error_clear(&f->err);
        sha256_free(f->hash);
        free(f->domain);
        free(f->repository);
        free(f->reference);
        free(f->expected_digest);
        free(f->last_url);
        free(f->buf);
        free(f);
        return NULL;
}

const char *registry_fetch_digest(const RegistryFetch *f) {
        return f->digest;
}

uint64_t registry_fetch_size(const RegistryFetch *f) {
        return f->kind == REGISTRY_FETCH_BLOB ? f->offset : f->buf_size;
}

const char *registry_fetch_body(const RegistryFetch *f, size_t *ret_size) {
        if (ret_size)
                *ret_size = f->buf_size;
        return f->buf ? f->buf : "";
}

const char *registry_fetch_media_type(const RegistryFetch *f) {
        return f->media_type;
}

char *registry_fetch_describe(const RegistryFetch *f) {
        char status[32], *s = NULL;

        if (!f || !f->last_url)
                return NULL;
        snprintf(status, sizeof(status), "HTTP %ld", f->last_status);
        if (asprintf(&s, "GET %s: %s, %u retr%s", f->last_url,
                     f->last_result != CURLE_OK ? sym_curl_easy_strerror(f->last_result) : status, f->endpoint_retries,
                     f->endpoint_retries == 1 ? "y" : "ies") < 0)
                return NULL;
        return s;
}
