/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "curl_glue.h"
#include "registry.h"

/* A place a repository can be fetched from: the origin or a mirror. The
 * ping result is cached here for the registry's lifetime. */
typedef struct Endpoint {
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
        struct Endpoint *next;
} Endpoint;

typedef struct Token {
        char *endpoint_key;
        char *repository;
        char *token;
        uint64_t expires_ms; /* monotonic */
        struct Token *next;
} Token;

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
        Endpoint *endpoints;
        Token *tokens;
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

        FetchStep step;
        bool holds_slot;
        Endpoint *endpoints[REGISTRY_MIRRORS_MAX + 1];
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

        /* The content. */
        Sha256 *hash;
        uint64_t offset;
        char *buf;
        size_t buf_size;
        size_t buf_alloc;
        size_t buf_max;
        char digest[DIGEST_STRING_MAX];
        char media_type[256];

        MsbError abort_err; /* why a write callback stopped the transfer */
        MsbError err;       /* the failure of the current endpoint */

        RegistryFetch *prev, *next;
};

static void fetch_advance(RegistryFetch *f);
static void fetch_request(RegistryFetch *f);

/* Endpoints and tokens. */

static Endpoint *endpoint_free(Endpoint *e) {
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

static Token *token_free(Token *t) {
        if (!t)
                return NULL;
        free(t->endpoint_key);
        free(t->repository);
        if (t->token) {
                explicit_bzero(t->token, strlen(t->token));
                free(t->token);
        }
        free(t);
        return NULL;
}

static Endpoint *registry_endpoint(Registry *r, const char *key, bool is_mirror) {
        Endpoint *e;

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

static const RegistryHostConfig *endpoint_config(const Registry *r, const Endpoint *e) {
        return registry_config_find(r->config, e->config_host);
}

static Token *token_find(Registry *r, const Endpoint *e, const char *repository) {
        uint64_t now = now_monotonic_ms();

        for (Token *t = r->tokens; t; t = t->next)
                if (streq(t->endpoint_key, e->key) && streq(t->repository, repository))
                        return t->expires_ms > now ? t : NULL;
        return NULL;
}

static void token_forget(Registry *r, const Endpoint *e, const char *repository) {
        for (Token **p = &r->tokens; *p; p = &(*p)->next)
                if (streq((*p)->endpoint_key, e->key) && streq((*p)->repository, repository)) {
                        Token *t = *p;
                        *p = t->next;
                        token_free(t);
                        return;
                }
}

static int token_store(Registry *r, const Endpoint *e, const char *repository, const char *token,
                       uint64_t lifetime_s) {
        Token *t;

        token_forget(r, e, repository);
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->endpoint_key = strdup(e->key);
        t->repository = strdup(repository);
        t->token = strdup(token);
        if (!t->endpoint_key || !t->repository || !t->token) {
                token_free(t);
                return -ENOMEM;
        }
        /* Renew a little early so a token does not expire in flight. */
        t->expires_ms = now_monotonic_ms() + lifetime_s * MSEC_PER_SEC;
        if (lifetime_s > 10)
                t->expires_ms -= 5 * MSEC_PER_SEC;
        t->next = r->tokens;
        r->tokens = t;
        return 0;
}

/*
 * Parses a WWW-Authenticate challenge (RFC 7235 section 4.1):
 * `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
 * Only the first challenge is read; unknown parameters are skipped.
 */
int registry_challenge_parse(const char *s, RegistryChallengeScheme *ret_scheme, char **ret_realm,
                             char **ret_service) {
        _cleanup_free_ char *realm = NULL, *service = NULL;
        RegistryChallengeScheme scheme;
        const char *p = s;

        while (*p == ' ')
                p++;
        if (strncasecmp(p, "bearer", 6) == 0 && (p[6] == ' ' || p[6] == '\0'))
                scheme = REGISTRY_CHALLENGE_BEARER, p += 6;
        else if (strncasecmp(p, "basic", 5) == 0 && (p[5] == ' ' || p[5] == '\0'))
                scheme = REGISTRY_CHALLENGE_BASIC, p += 5;
        else
                return -EOPNOTSUPP;

        for (;;) {
                char key[32], value[REGISTRY_HEADER_VALUE_MAX_BYTES];
                size_t k = 0, v = 0;

                while (*p == ' ' || *p == ',')
                        p++;
                if (*p == '\0')
                        break;
                while (*p && *p != '=' && *p != ' ' && *p != ',') {
                        if (k + 1 < sizeof(key))
                                key[k++] = *p;
                        p++;
                }
                key[k] = '\0';
                if (*p != '=')
                        break; /* The start of a second challenge. */
                p++;
                if (*p == '"') {
                        p++;
                        while (*p && *p != '"') {
                                if (*p == '\\' && p[1])
                                        p++;
                                if (v + 1 >= sizeof(value))
                                        return -EINVAL;
                                value[v++] = *p++;
                        }
                        if (*p != '"')
                                return -EINVAL;
                        p++;
                } else
                        while (*p && *p != ',' && *p != ' ') {
                                if (v + 1 >= sizeof(value))
                                        return -EINVAL;
                                value[v++] = *p++;
                        }
                value[v] = '\0';

                if (strcasecmp(key, "realm") == 0) {
                        free(realm);
                        realm = strdup(value);
                        if (!realm)
                                return -ENOMEM;
                } else if (strcasecmp(key, "service") == 0) {
                        free(service);
                        service = strdup(value);
                        if (!service)
                                return -ENOMEM;
                }
        }

        if (scheme == REGISTRY_CHALLENGE_BEARER && !realm)
                return -EINVAL;
        *ret_scheme = scheme;
        *ret_realm = TAKE_PTR(realm);
        *ret_service = TAKE_PTR(service);
        return 0;
}

static int endpoint_set_challenge(Endpoint *e, const char *header) {
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

/* Fetch bookkeeping. */

static void fetch_reset_response(RegistryFetch *f) {
        f->status = 0;
        f->body_seen = false;
        f->retry_after_ms = 0;
        free(f->www_authenticate);
        free(f->content_type);
        free(f->content_digest);
        free(f->content_range);
        f->www_authenticate = f->content_type = f->content_digest = f->content_range = NULL;
        msb_error_clear(&f->abort_err);
}

static void fetch_stop_transfer(RegistryFetch *f) {
        if (f->easy) {
                curl_glue_remove(f->registry->glue, f->easy);
                curl_easy_cleanup(f->easy);
                f->easy = NULL;
        }
        curl_slist_free_all(f->headers);
        f->headers = NULL;
}

static void registry_kick(Registry *r);

static void fetch_release_slot(RegistryFetch *f) {
        if (!f->holds_slot)
                return;
        f->holds_slot = false;
        assert(f->registry->active_blobs > 0);
        f->registry->active_blobs--;
        registry_kick(f->registry);
}

/* Reports the end of the fetch; f may be freed by the callback. */
static void fetch_finish(RegistryFetch *f, int r) {
        fetch_stop_transfer(f);
        fetch_release_slot(f);
        f->step = STEP_DONE;
        f->done(f, r, r < 0 ? &f->err : NULL, f->userdata);
}

static const char *fetch_object(const RegistryFetch *f) {
        return f->kind == REGISTRY_FETCH_BLOB ? f->expected_digest : f->reference;
}

static const char *fetch_kind_name(const RegistryFetch *f) {
        return f->kind == REGISTRY_FETCH_BLOB ? "blob" : "manifest";
}

/* The current endpoint failed with f->err set: try the next one, or report
 * the error when it was the last. */
static void fetch_endpoint_failed(RegistryFetch *f, int r) {
        if (f->endpoint_idx + 1 < f->n_endpoints) {
                msb_error_clear(&f->err);
                f->endpoint_idx++;
                f->scheme_idx = 0;
                f->attempts = 0;
                f->reauthorized = false;
                fetch_advance(f);
                return;
        }
        fetch_finish(f, r);
}

static void registry_timer_cb(uv_timer_t *t);

/* Schedules registry_timer_cb at the earliest due time of any fetch. */
static void registry_kick(Registry *r) {
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
                        fetch_advance(f);
                } else
                        fetch_request(f);
        }
        registry_kick(r);
}

/* curl callbacks. */

static char *header_value(const char *line, size_t n, const char *name) {
        size_t k = strlen(name);
        const char *v, *end = line + n;

        if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
                return NULL;
        v = line + k + 1;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
                end--;
        if ((size_t) (end - v) > REGISTRY_HEADER_VALUE_MAX_BYTES)
                return NULL;
        return strndup(v, (size_t) (end - v));
}

static void header_keep(char **slot, char *value) {
        if (!value)
                return;
        free(*slot);
        *slot = value;
}

static size_t fetch_header_cb(char *line, size_t size, size_t nmemb, void *userdata) {
        RegistryFetch *f = userdata;
        size_t n = size * nmemb;
        char *v;

        /* A new status line starts a new response (after a redirect or a
         * 100 Continue): forget the headers of the previous one. */
        if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
                free(f->www_authenticate);
                free(f->content_type);
                free(f->content_digest);
                free(f->content_range);
                f->www_authenticate = f->content_type = f->content_digest = f->content_range = NULL;
                f->retry_after_ms = 0;
                return n;
        }

        header_keep(&f->www_authenticate, header_value(line, n, "WWW-Authenticate"));
        header_keep(&f->content_type, header_value(line, n, "Content-Type"));
        header_keep(&f->content_digest, header_value(line, n, "Docker-Content-Digest"));
        header_keep(&f->content_range, header_value(line, n, "Content-Range"));
        v = header_value(line, n, "Retry-After");
        if (v) {
                char *e;
                unsigned long s = strtoul(v, &e, 10);

                if (e != v && *e == '\0')
                        f->retry_after_ms = s > REGISTRY_RETRY_AFTER_MAX_MS / MSEC_PER_SEC
                                                    ? REGISTRY_RETRY_AFTER_MAX_MS
                                                    : s * MSEC_PER_SEC;
                free(v);
        }
        return n;
}

static int buf_append(RegistryFetch *f, const void *p, size_t n) {
        if (f->buf_size + n + 1 > f->buf_alloc) {
                size_t a = f->buf_alloc * 2;
                char *b;

                if (a < f->buf_size + n + 1)
                        a = f->buf_size + n + 1;
                if (a < 4096)
                        a = 4096;
                b = realloc(f->buf, a);
                if (!b)
                        return -ENOMEM;
                f->buf = b;
                f->buf_alloc = a;
        }
        memcpy(f->buf + f->buf_size, p, n);
        f->buf_size += n;
        f->buf[f->buf_size] = '\0';
        return 0;
}

/* Parses "bytes START-END/TOTAL" and checks START. */
static bool content_range_starts_at(const char *s, uint64_t start) {
        unsigned long long a;

        if (!s || sscanf(s, "bytes %llu-", &a) != 1)
                return false;
        return a == start;
}

/* The first bytes of a response body: decide what they are. Returns false
 * to abort the transfer. */
static bool fetch_body_begin(RegistryFetch *f) {
        f->body_seen = true;
        curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &f->status);

        if (f->step != STEP_REQUEST || f->kind != REGISTRY_FETCH_BLOB)
                return true;

        if (f->status == 206) {
                if (f->range_start == 0 || !content_range_starts_at(f->content_range, f->range_start)) {
                        msb_error_set(&f->abort_err, -EBADMSG, PROTO_ERROR_REGISTRY_ERROR,
                                      "registry %s answered a range request for blob %s with the wrong range",
                                      f->domain, f->expected_digest);
                        return false;
                }
                return true;
        }
        if (f->status == 200 && f->offset > 0) {
                char discard[DIGEST_STRING_MAX];

                /* The server ignored our Range: start over. */
                f->buf_size = 0;
                if (f->fd >= 0 && ftruncate(f->fd, 0) < 0) {
                        msb_error_from_errno(&f->abort_err, negative_errno(), "truncating a download");
                        return false;
                }
                sha256_final_string(f->hash, discard);
                f->offset = 0;
        }
        return true;
}

static int pwrite_all(int fd, const void *p, size_t n, uint64_t offset) {
        const char *c = p;

        while (n > 0) {
                ssize_t k = pwrite(fd, c, n, (off_t) offset);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                c += k;
                n -= (size_t) k;
                offset += (uint64_t) k;
        }
        return 0;
}

static size_t fetch_write_cb(char *p, size_t size, size_t nmemb, void *userdata) {
        RegistryFetch *f = userdata;
        size_t n = size * nmemb;
        int r;

        if (!f->body_seen && !fetch_body_begin(f))
                return 0;

        /* Bodies of error answers are not needed: the status says it all. */
        if (f->status < 200 || f->status >= 300)
                return n;

        if (f->step == STEP_TOKEN || f->step == STEP_PING) {
                if (f->step == STEP_PING)
                        return n;
                if (f->buf_size + n > REGISTRY_TOKEN_RESPONSE_MAX_BYTES) {
                        msb_error_set(&f->abort_err, -EBADMSG, PROTO_ERROR_REGISTRY_ERROR,
                                      "the token server of %s sent more than %llu bytes", f->domain,
                                      (unsigned long long) REGISTRY_TOKEN_RESPONSE_MAX_BYTES);
                        return 0;
                }
                return buf_append(f, p, n) < 0 ? 0 : n;
        }

        if (f->kind == REGISTRY_FETCH_MANIFEST) {
                if (f->buf_size + n > f->max_size) {
                        msb_error_set(&f->abort_err, -EFBIG, PROTO_ERROR_LIMIT_EXCEEDED,
                                      "manifest %s of %s/%s is larger than %llu bytes", f->reference,
                                      f->domain, f->repository, (unsigned long long) f->max_size);
                        msb_error_add_data(&f->abort_err, "limit", json_string("manifest_bytes"));
                        msb_error_add_data(&f->abort_err, "max", json_integer((json_int_t) f->max_size));
                        return 0;
                }
                return buf_append(f, p, n) < 0 ? 0 : n;
        }

        /* Blobs: the descriptor's size is a promise; one byte more and the
         * content cannot match (image-spec descriptor.md "size"). */
        if (f->offset + n > f->expected_size) {
                msb_error_set(&f->abort_err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "blob %s from %s/%s is larger than its descriptor's %llu bytes",
                              f->expected_digest, f->domain, f->repository,
                              (unsigned long long) f->expected_size);
                msb_error_add_data(&f->abort_err, "expected", json_string(f->expected_digest));
                return 0;
        }
        if (f->fd < 0)
                r = buf_append(f, p, n);
        else
                r = pwrite_all(f->fd, p, n, f->offset);
        if (r < 0) {
                msb_error_from_errno(&f->abort_err, r, "writing a download");
                return 0;
        }
        sha256_update(f->hash, p, n);
        f->offset += n;
        f->made_progress = true;
        if (f->progress)
                f->progress(f, f->offset, f->userdata);
        return n;
}

/* Transfers. */

static int fetch_easy_new(RegistryFetch *f, const char *url, const Endpoint *e, CURL **ret) {
        const RegistryHostConfig *hc = endpoint_config(f->registry, e);
        bool plain = startswith(url, "http://");
        CURL *easy;

        easy = curl_easy_init();
        if (!easy)
                return -ENOMEM;

        if (curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK) {
                curl_easy_cleanup(easy);
                return -EINVAL;
        }
        curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
        /* A redirect (to blob storage) may not downgrade HTTPS to HTTP. */
        curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, plain ? "http,https" : "https");
        curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(easy, CURLOPT_MAXREDIRS, REGISTRY_MAX_REDIRECTS);
        curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) REGISTRY_CONNECT_TIMEOUT_MS);
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, REGISTRY_STALL_TIMEOUT_S);
        curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, (long) REGISTRY_RECEIVE_BUFFER_BYTES);
        curl_easy_setopt(easy, CURLOPT_USERAGENT, "msb-imaged/" MSB_VERSION);
        curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, fetch_header_cb);
        curl_easy_setopt(easy, CURLOPT_HEADERDATA, f);
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, fetch_write_cb);
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, f);
        if (hc && hc->ca_file) {
                /* The registry's CA in addition to the system's: with
                 * OpenSSL, curl loads both CAINFO and CAPATH. */
                curl_easy_setopt(easy, CURLOPT_CAINFO, hc->ca_file);
                curl_easy_setopt(easy, CURLOPT_CAPATH, "/etc/ssl/certs");
        }
        if (hc && hc->insecure) {
                curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
                curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        *ret = easy;
        return 0;
}

static void fetch_transfer_done(CurlGlue *g, CURL *easy, CURLcode result, void *userdata);

static int fetch_transfer_start(RegistryFetch *f, const char *url, FetchStep step) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        int r;

        fetch_stop_transfer(f);
        fetch_reset_response(f);
        f->step = step;
        r = fetch_easy_new(f, url, e, &f->easy);
        if (r < 0)
                return r;
        return 0;
}

static int fetch_transfer_go(RegistryFetch *f) {
        if (f->headers)
                curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->headers);
        return curl_glue_add(f->registry->glue, f->easy, fetch_transfer_done, f);
}

static bool endpoint_may_use_http(const Registry *r, const Endpoint *e) {
        const RegistryHostConfig *hc = endpoint_config(r, e);

        return (hc && hc->insecure) || registry_host_is_loopback(e->net_host);
}

static void fetch_fail_internal(RegistryFetch *f, int r, const char *what) {
        msb_error_set(&f->err, r, PROTO_ERROR_INTERNAL_ERROR, "%s: %s", what, strerror(-r));
        fetch_finish(f, r);
}

/* GET /v2/ (distribution-spec "Determining support"): 200 or 401 means a
 * registry answers there. HTTPS first; plain HTTP only where allowed. */
static void fetch_ping(RegistryFetch *f) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
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
                return fetch_fail_internal(f, -ENOMEM, "ping");
        r = fetch_transfer_start(f, url, STEP_PING);
        if (r >= 0)
                r = fetch_transfer_go(f);
        if (r < 0)
                return fetch_fail_internal(f, r, "ping");
        f->registry->stats.pings++;
}

static bool fetch_has_another_scheme(RegistryFetch *f) {
        Endpoint *e = f->endpoints[f->endpoint_idx];

        return !e->fixed_scheme && f->scheme_idx == 0 && endpoint_may_use_http(f->registry, e);
}

static void fetch_ping_done(RegistryFetch *f, CURLcode result) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        char *base = NULL;
        int r;

        if (result != CURLE_OK || (f->status != 200 && f->status != 401)) {
                if (fetch_has_another_scheme(f)) {
                        f->scheme_idx++;
                        fetch_ping(f);
                        return;
                }
                if (result != CURLE_OK) {
                        msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR,
                                      "cannot reach registry %s: %s", e->key, curl_easy_strerror(result));
                        return fetch_endpoint_failed(f, -EHOSTUNREACH);
                }
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "%s is not an OCI registry: GET /v2/ answered HTTP %ld", e->key, f->status);
                return fetch_endpoint_failed(f, -EPROTO);
        }

        r = endpoint_set_challenge(e, f->status == 401 ? f->www_authenticate : NULL);
        if (r < 0) {
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "registry %s sent an authentication challenge we cannot use", e->key);
                return fetch_endpoint_failed(f, -EPROTO);
        }

        {
                const char *url = NULL;
                curl_easy_getinfo(f->easy, CURLINFO_EFFECTIVE_URL, &url);
                /* Keep the scheme we reached it with, not a redirect target. */
                if (asprintf(&base, "%s://%s", startswith(url ? url : "", "http://") ? "http" : "https",
                             e->net_host) < 0)
                        return fetch_fail_internal(f, -ENOMEM, "ping");
        }
        free(e->base_url);
        e->base_url = base;
        e->pinged = true;
        fetch_advance(f);
}

static char *url_escape(const char *s) {
        char *e = curl_easy_escape(NULL, s, 0), *copy;

        if (!e)
                return NULL;
        copy = strdup(e);
        curl_free(e);
        return copy;
}

/* Distribution token auth: GET realm?service=...&scope=repository:NAME:pull,
 * with Basic credentials when we have them. */
static void fetch_token(RegistryFetch *f) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        const RegistryHostConfig *hc = endpoint_config(f->registry, e);
        _cleanup_free_ char *url = NULL, *scope = NULL, *escaped_scope = NULL, *escaped_service = NULL;
        int r;

        /* Credentials go to the realm, so it must not be plain HTTP unless
         * the registry itself is reached that way. */
        if (!startswith(e->realm, "https://") &&
            !(startswith(e->realm, "http://") && startswith(e->base_url, "http://"))) {
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "registry %s names a token realm that is not HTTPS", e->key);
                return fetch_endpoint_failed(f, -EPROTO);
        }

        if (asprintf(&scope, "repository:%s:pull", f->repository) < 0)
                return fetch_fail_internal(f, -ENOMEM, "token");
        escaped_scope = url_escape(scope);
        escaped_service = e->service ? url_escape(e->service) : strdup("");
        if (!escaped_scope || !escaped_service)
                return fetch_fail_internal(f, -ENOMEM, "token");
        if (asprintf(&url, "%s%sscope=%s%s%s", e->realm, strchr(e->realm, '?') ? "&" : "?", escaped_scope,
                     e->service ? "&service=" : "", escaped_service) < 0)
                return fetch_fail_internal(f, -ENOMEM, "token");

        r = fetch_transfer_start(f, url, STEP_TOKEN);
        if (r < 0)
                return fetch_fail_internal(f, r, "token");
        f->buf_size = 0;
        if (hc && hc->username) {
                curl_easy_setopt(f->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
                curl_easy_setopt(f->easy, CURLOPT_USERNAME, hc->username);
                curl_easy_setopt(f->easy, CURLOPT_PASSWORD, hc->password);
        }
        r = fetch_transfer_go(f);
        if (r < 0)
                return fetch_fail_internal(f, r, "token");
        f->registry->stats.tokens++;
}

static void fetch_unauthorized(RegistryFetch *f) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        const RegistryHostConfig *hc = endpoint_config(f->registry, e);

        msb_error_set(&f->err, -EACCES, PROTO_ERROR_UNAUTHORIZED, "registry %s refused access to %s%s", e->key,
                      f->repository, hc && hc->username ? " with the configured credentials" : " (no credentials)");
        msb_error_add_data(&f->err, "registry", json_string(f->domain));
        fetch_endpoint_failed(f, -EACCES);
}

static void fetch_token_done(RegistryFetch *f, CURLcode result) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        json_auto_t *j = NULL;
        const json_t *tok, *exp;
        json_int_t lifetime = REGISTRY_TOKEN_DEFAULT_LIFETIME_S;
        int r;

        if (f->abort_err.set) {
                msb_error_set(&f->err, -EBADMSG, f->abort_err.kind, "%s", f->abort_err.message);
                return fetch_endpoint_failed(f, -EBADMSG);
        }
        if (result != CURLE_OK) {
                msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR,
                              "cannot reach the token server of %s: %s", e->key, curl_easy_strerror(result));
                return fetch_endpoint_failed(f, -EHOSTUNREACH);
        }
        if (f->status == 401 || f->status == 403)
                return fetch_unauthorized(f);
        if (f->status != 200) {
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "the token server of %s answered HTTP %ld", e->key, f->status);
                return fetch_endpoint_failed(f, -EPROTO);
        }

        j = json_loadb(f->buf ? f->buf : "", f->buf_size, 0, NULL);
        if (f->buf)
                explicit_bzero(f->buf, f->buf_size);
        f->buf_size = 0;
        tok = json_object_get(j, "token");
        if (!json_is_string(tok) || json_string_length(tok) == 0)
                tok = json_object_get(j, "access_token");
        if (!json_is_string(tok) || json_string_length(tok) == 0 ||
            strpbrk(json_string_value(tok), "\r\n")) {
                msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_REGISTRY_ERROR,
                              "the token server of %s answered without a usable token", e->key);
                return fetch_endpoint_failed(f, -EBADMSG);
        }
        exp = json_object_get(j, "expires_in");
        if (json_is_integer(exp) && json_integer_value(exp) > 0)
                lifetime = json_integer_value(exp);
        if (lifetime > 24 * 3600)
                lifetime = 24 * 3600;

        r = token_store(f->registry, e, f->repository, json_string_value(tok), (uint64_t) lifetime);
        if (r < 0)
                return fetch_fail_internal(f, r, "token");
        fetch_request(f);
}

static int basic_header(const RegistryHostConfig *hc, char **ret) {
        _cleanup_free_ char *plain = NULL;
        _cleanup_free_ unsigned char *b64 = NULL;
        size_t n;
        int k;

        if (asprintf(&plain, "%s:%s", hc->username, hc->password) < 0)
                return -ENOMEM;
        n = strlen(plain);
        b64 = malloc((n + 2) / 3 * 4 + 1);
        if (!b64)
                return -ENOMEM;
        k = EVP_EncodeBlock(b64, (unsigned char *) plain, (int) n);
        explicit_bzero(plain, n);
        if (k < 0 || asprintf(ret, "Authorization: Basic %s", b64) < 0)
                return -ENOMEM;
        return 0;
}

/* The manifest or blob request itself, with whatever authorization the
 * endpoint's challenge asks for. */
static void fetch_request(RegistryFetch *f) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        const RegistryHostConfig *hc = endpoint_config(f->registry, e);
        _cleanup_free_ char *url = NULL, *auth = NULL, *range = NULL;
        Token *t = NULL;
        int r;

        if (e->challenge == REGISTRY_CHALLENGE_BEARER) {
                t = token_find(f->registry, e, f->repository);
                if (!t)
                        return fetch_token(f);
        }

        if (asprintf(&url, "%s/v2/%s/%s/%s", e->base_url, f->repository,
                     f->kind == REGISTRY_FETCH_BLOB ? "blobs" : "manifests", fetch_object(f)) < 0)
                return fetch_fail_internal(f, -ENOMEM, "request");

        r = fetch_transfer_start(f, url, STEP_REQUEST);
        if (r < 0)
                return fetch_fail_internal(f, r, "request");

        if (t)
                r = asprintf(&auth, "Authorization: Bearer %s", t->token) < 0 ? -ENOMEM : 0;
        else if (e->challenge == REGISTRY_CHALLENGE_BASIC && hc && hc->username)
                r = basic_header(hc, &auth);
        if (r < 0)
                return fetch_fail_internal(f, r, "request");
        if (auth) {
                f->headers = curl_slist_append(f->headers, auth);
                explicit_bzero(auth, strlen(auth));
        }

        if (f->kind == REGISTRY_FETCH_MANIFEST) {
                f->buf_size = 0;
                f->headers = curl_slist_append(f->headers, "Accept: " REGISTRY_MANIFEST_ACCEPT);
        } else {
                f->range_start = f->offset;
                if (f->offset > 0) {
                        if (asprintf(&range, "Range: bytes=%llu-", (unsigned long long) f->offset) < 0)
                                return fetch_fail_internal(f, -ENOMEM, "request");
                        f->headers = curl_slist_append(f->headers, range);
                        f->registry->stats.resumes++;
                }
        }
        if (!f->headers && (auth || range || f->kind == REGISTRY_FETCH_MANIFEST))
                return fetch_fail_internal(f, -ENOMEM, "request");

        f->made_progress = false;
        r = fetch_transfer_go(f);
        if (r < 0)
                return fetch_fail_internal(f, r, "request");
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
                return fetch_endpoint_failed(f, -EHOSTUNREACH);
        }

        delay = (uint64_t) REGISTRY_BACKOFF_BASE_MS << (f->attempts - 1);
        if (f->retry_after_ms > delay)
                delay = f->retry_after_ms;
        fetch_stop_transfer(f);
        f->step = STEP_BACKOFF;
        f->due_ms = now_monotonic_ms() + delay;
        r->stats.retries++;
        registry_kick(r);
}

static void fetch_request_succeeded(RegistryFetch *f) {
        if (f->kind == REGISTRY_FETCH_BLOB) {
                if (f->offset != f->expected_size) {
                        msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                                      "blob %s from %s/%s has %llu bytes, its descriptor says %llu",
                                      f->expected_digest, f->domain, f->repository,
                                      (unsigned long long) f->offset, (unsigned long long) f->expected_size);
                        msb_error_add_data(&f->err, "expected", json_string(f->expected_digest));
                        return fetch_endpoint_failed(f, -EBADMSG);
                }
                sha256_final_string(f->hash, f->digest);
        } else {
                const char *semi;
                int r = digest_buffer(f->buf ? f->buf : "", f->buf_size, f->digest);

                if (r < 0)
                        return fetch_fail_internal(f, r, "hashing a manifest");
                if (!f->buf && buf_append(f, "", 0) < 0)
                        return fetch_fail_internal(f, -ENOMEM, "manifest");
                snprintf(f->media_type, sizeof(f->media_type), "%s", f->content_type ? f->content_type : "");
                semi = strchr(f->media_type, ';');
                if (semi)
                        f->media_type[semi - f->media_type] = '\0';
                for (size_t i = strlen(f->media_type); i > 0 && f->media_type[i - 1] == ' '; i--)
                        f->media_type[i - 1] = '\0';

                /* A registry vouches for the content with this header
                 * (distribution-spec "Pulling manifests"). */
                if (f->content_digest && digest_is_valid(f->content_digest) &&
                    !streq(f->content_digest, f->digest)) {
                        msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                                      "manifest %s of %s/%s hashes to %s, the registry says %s", f->reference,
                                      f->domain, f->repository, f->digest, f->content_digest);
                        msb_error_add_data(&f->err, "expected", json_string(f->content_digest));
                        msb_error_add_data(&f->err, "actual", json_string(f->digest));
                        return fetch_endpoint_failed(f, -EBADMSG);
                }
        }

        if (f->expected_digest && !streq(f->expected_digest, f->digest)) {
                msb_error_set(&f->err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "%s %s from %s/%s hashes to %s", fetch_kind_name(f), f->expected_digest,
                              f->domain, f->repository, f->digest);
                msb_error_add_data(&f->err, "expected", json_string(f->expected_digest));
                msb_error_add_data(&f->err, "actual", json_string(f->digest));
                return fetch_endpoint_failed(f, -EBADMSG);
        }
        fetch_finish(f, 0);
}

static void fetch_request_done(RegistryFetch *f, CURLcode result) {
        Endpoint *e = f->endpoints[f->endpoint_idx];
        char why[64];
        int r;

        if (!f->body_seen)
                curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &f->status);

        if (f->abort_err.set) {
                /* Our own verdict on the content: final for this endpoint. */
                r = f->abort_err.kind == PROTO_ERROR_LIMIT_EXCEEDED ? -EFBIG : -EBADMSG;
                f->err = f->abort_err;
                f->abort_err = (MsbError) {};
                return fetch_endpoint_failed(f, r);
        }
        if (result != CURLE_OK) {
                if (curl_result_is_transient(result))
                        return fetch_retry(f, curl_easy_strerror(result));
                msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR, "fetching %s %s from %s: %s",
                              fetch_kind_name(f), fetch_object(f), e->key, curl_easy_strerror(result));
                return fetch_endpoint_failed(f, -EHOSTUNREACH);
        }

        switch (f->status) {
        case 200:
        case 206:
                return fetch_request_succeeded(f);
        case 401:
                /* The token expired, or the challenge changed (a registry
                 * that did not ask at ping time): authorize once more. */
                if (!f->reauthorized && f->www_authenticate) {
                        f->reauthorized = true;
                        token_forget(f->registry, e, f->repository);
                        if (endpoint_set_challenge(e, f->www_authenticate) >= 0 && e->challenge != REGISTRY_CHALLENGE_NONE)
                                return fetch_request(f);
                }
                return fetch_unauthorized(f);
        case 403:
                return fetch_unauthorized(f);
        case 404:
                msb_error_set(&f->err, -ENOENT, PROTO_ERROR_REMOTE_NOT_FOUND, "%s %s not found in %s/%s",
                              fetch_kind_name(f), fetch_object(f), f->domain, f->repository);
                msb_error_add_data(&f->err, "registry", json_string(f->domain));
                return fetch_endpoint_failed(f, -ENOENT);
        case 416:
                /* The server cannot serve the range we asked: start over. */
                if (f->offset > 0) {
                        char discard[DIGEST_STRING_MAX];

                        f->buf_size = 0;
                        if (f->fd >= 0 && ftruncate(f->fd, 0) < 0)
                                return fetch_fail_internal(f, negative_errno(), "truncating a download");
                        sha256_final_string(f->hash, discard);
                        f->offset = 0;
                        return fetch_retry(f, "range not satisfiable");
                }
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
        fetch_endpoint_failed(f, -EPROTO);
}

static void fetch_transfer_done(CurlGlue *g, CURL *easy, CURLcode result, void *userdata) {
        RegistryFetch *f = userdata;

        assert(f->easy == easy);
        if (f->status == 0 || !f->body_seen)
                curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &f->status);

        switch (f->step) {
        case STEP_PING:
                return fetch_ping_done(f, result);
        case STEP_TOKEN:
                return fetch_token_done(f, result);
        case STEP_REQUEST:
                return fetch_request_done(f, result);
        default:
                assert(false);
        }
}

/* Moves the fetch on from wherever it is on the current endpoint. */
static void fetch_advance(RegistryFetch *f) {
        Endpoint *e = f->endpoints[f->endpoint_idx];

        if (!e->pinged)
                return fetch_ping(f);
        fetch_request(f);
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
        k = curl_glue_new(loop, &r->glue);
        if (k < 0) {
                free(r);
                return k;
        }
        k = uv_timer_init(loop, &r->timer);
        if (k < 0) {
                curl_glue_free(r->glue);
                free(r);
                return k;
        }
        r->timer.data = r;
        *ret = r;
        return 0;
}

static void registry_timer_close_cb(uv_handle_t *h) {
        free(h->data);
}

Registry *registry_free(Registry *r) {
        if (!r)
                return NULL;
        assert(!r->fetches);
        r->freeing = true;
        while (r->endpoints) {
                Endpoint *e = r->endpoints;
                r->endpoints = e->next;
                endpoint_free(e);
        }
        while (r->tokens) {
                Token *t = r->tokens;
                r->tokens = t->next;
                token_free(t);
        }
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

int registry_fetch_start(Registry *r, const RegistryFetchParams *p, RegistryFetchProgressFn progress,
                         RegistryFetchDoneFn done, void *userdata, RegistryFetch **ret) {
        _cleanup_(registry_fetch_freep) RegistryFetch *f = NULL;
        const RegistryHostConfig *hc;
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

        hc = registry_config_find(r->config, p->domain);
        for (size_t i = 0; hc && i < hc->n_mirrors; i++) {
                Endpoint *e = registry_endpoint(r, hc->mirrors[i], true);
                if (!e)
                        return -ENOMEM;
                f->endpoints[f->n_endpoints++] = e;
        }
        f->endpoints[f->n_endpoints] = registry_endpoint(r, p->domain, false);
        if (!f->endpoints[f->n_endpoints])
                return -ENOMEM;
        f->n_endpoints++;

        registry_kick(r);
        *ret = TAKE_PTR(f);
        return 0;
}

RegistryFetch *registry_fetch_free(RegistryFetch *f) {
        Registry *r;

        if (!f)
                return NULL;
        r = f->registry;
        fetch_stop_transfer(f);
        if (f->prev)
                f->prev->next = f->next;
        else if (r->fetches == f)
                r->fetches = f->next;
        if (f->next)
                f->next->prev = f->prev;
        fetch_release_slot(f);
        fetch_reset_response(f);
        msb_error_clear(&f->err);
        sha256_free(f->hash);
        free(f->domain);
        free(f->repository);
        free(f->reference);
        free(f->expected_digest);
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
