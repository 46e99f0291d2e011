/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One HTTP transfer of a fetch: the curl easy handle and its options, the
 * response headers we keep, and the body: bytes written to the caller's file
 * (or kept in memory) and hashed as they arrive, with the size promised by
 * the descriptor enforced byte by byte.
 */
#include "log.h"
#include "registry_internal.h"

static void response_forget_headers(RegistryFetch *f) {
        free(f->www_authenticate);
        free(f->content_type);
        free(f->content_digest);
        free(f->content_range);
        f->www_authenticate = f->content_type = f->content_digest = f->content_range = NULL;
        f->retry_after_ms = 0;
}

void registry_fetch_reset_response(RegistryFetch *f) {
        f->status = 0;
        f->body_seen = false;
        response_forget_headers(f);
        msb_error_clear(&f->abort_err);
}

void registry_fetch_stop_transfer(RegistryFetch *f) {
        if (f->easy) {
                curl_glue_remove(f->registry->glue, f->easy);
                sym_curl_easy_cleanup(f->easy);
                f->easy = NULL;
        }
        /* A fetch that never started a transfer has no headers, and
         * libcurl may not be loaded at all (curl_lib.h). */
        if (f->headers) {
                sym_curl_slist_free_all(f->headers);
                f->headers = NULL;
        }
}

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
                response_forget_headers(f);
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

int registry_fetch_buf_append(RegistryFetch *f, const void *p, size_t n) {
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

int registry_fetch_discard_content(RegistryFetch *f) {
        char discard[DIGEST_STRING_MAX];

        f->buf_size = 0;
        if (f->fd >= 0 && ftruncate(f->fd, 0) < 0)
                return negative_errno();
        /* Finishing the hash is what starts it afresh. */
        sha256_final_string(f->hash, discard);
        f->offset = 0;
        return 0;
}

/* Parses "bytes START-END/TOTAL" (RFC 9110 section 14.4) and checks START. */
static bool content_range_starts_at(const char *s, uint64_t start) {
        unsigned long long a;

        if (!s || sscanf(s, "bytes %llu-", &a) != 1)
                return false;
        return a == start;
}

/* The first bytes of a response body: decide what they are. A blob request
 * that asked for a Range (distribution-spec "Pulling blobs") gets either
 * 206 with the range asked for, or 200 with the whole blob. Returns false
 * to abort the transfer. */
static bool fetch_body_begin(RegistryFetch *f) {
        int r;

        f->body_seen = true;
        sym_curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &f->status);

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
                /* The server ignored our Range: start over. */
                r = registry_fetch_discard_content(f);
                if (r < 0) {
                        msb_error_from_errno(&f->abort_err, r, "truncating a download");
                        return false;
                }
        }
        return true;
}

/* The body of a token answer or a manifest, kept in memory up to a bound. */
static size_t fetch_write_document(RegistryFetch *f, const char *p, size_t n) {
        if (f->step == STEP_TOKEN && f->buf_size + n > REGISTRY_TOKEN_RESPONSE_MAX_BYTES) {
                msb_error_set(&f->abort_err, -EBADMSG, PROTO_ERROR_REGISTRY_ERROR,
                              "the token server of %s sent more than %llu bytes", f->domain,
                              (unsigned long long) REGISTRY_TOKEN_RESPONSE_MAX_BYTES);
                return 0;
        }
        if (f->step != STEP_TOKEN && f->buf_size + n > f->max_size) {
                msb_error_limit(&f->abort_err, "manifest_bytes", f->max_size, "manifest %s of %s/%s is larger than %llu bytes",
                                f->reference, f->domain, f->repository, (unsigned long long) f->max_size);
                return 0;
        }
        return registry_fetch_buf_append(f, p, n) < 0 ? 0 : n;
}

/* Blob bytes: to the file (or memory), into the hash, then progress. */
static size_t fetch_write_blob(RegistryFetch *f, const char *p, size_t n) {
        int r;

        /* The descriptor's size is a promise; one byte more and the content
         * cannot match (image-spec descriptor.md "size"). */
        if (f->offset + n > f->expected_size) {
                msb_error_set(&f->abort_err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "blob %s from %s/%s is larger than its descriptor's %llu bytes",
                              f->expected_digest, f->domain, f->repository,
                              (unsigned long long) f->expected_size);
                msb_error_add_data(&f->abort_err, "expected", json_string(f->expected_digest));
                return 0;
        }
        if (f->fd < 0)
                r = registry_fetch_buf_append(f, p, n);
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

static size_t fetch_write_cb(char *p, size_t size, size_t nmemb, void *userdata) {
        RegistryFetch *f = userdata;
        size_t n = size * nmemb;

        if (!f->body_seen && !fetch_body_begin(f))
                return 0;

        /* Bodies of error answers are not needed: the status says it all;
         * nor is the body of a ping. */
        if (f->status < 200 || f->status >= 300 || f->step == STEP_PING)
                return n;
        if (f->step == STEP_TOKEN || f->kind == REGISTRY_FETCH_MANIFEST)
                return fetch_write_document(f, p, n);
        return fetch_write_blob(f, p, n);
}

/* The options of every transfer. Redirects are followed (blobs are often
 * served from storage elsewhere) but never from HTTPS down to HTTP. */
static int fetch_easy_new(RegistryFetch *f, const char *url, const RegistryEndpoint *e, CURL **ret) {
        const RegistryHostConfig *hc = registry_endpoint_config(f->registry, e);
        bool plain = startswith(url, "http://");
        CURL *easy;

        easy = sym_curl_easy_init();
        if (!easy)
                return -ENOMEM;

        if (sym_curl_easy_setopt(easy, CURLOPT_URL, url) != CURLE_OK) {
                sym_curl_easy_cleanup(easy);
                return -EINVAL;
        }
        sym_curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
        /* A redirect (to blob storage) may not downgrade HTTPS to HTTP. */
        sym_curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, plain ? "http,https" : "https");
        sym_curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
        sym_curl_easy_setopt(easy, CURLOPT_MAXREDIRS, REGISTRY_MAX_REDIRECTS);
        sym_curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
        sym_curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
        sym_curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) REGISTRY_CONNECT_TIMEOUT_MS);
        sym_curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        sym_curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, REGISTRY_STALL_TIMEOUT_S);
        sym_curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, (long) REGISTRY_RECEIVE_BUFFER_BYTES);
        sym_curl_easy_setopt(easy, CURLOPT_USERAGENT, "msb-imaged/" MSB_VERSION);
        sym_curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, fetch_header_cb);
        sym_curl_easy_setopt(easy, CURLOPT_HEADERDATA, f);
        sym_curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, fetch_write_cb);
        sym_curl_easy_setopt(easy, CURLOPT_WRITEDATA, f);
        if (hc && hc->ca_file) {
                /* The registry's CA in addition to the system's: with
                 * OpenSSL, curl loads both CAINFO and CAPATH. */
                sym_curl_easy_setopt(easy, CURLOPT_CAINFO, hc->ca_file);
                sym_curl_easy_setopt(easy, CURLOPT_CAPATH, "/etc/ssl/certs");
        } else {
                /* The system's CAs through libcurl's default directory
                 * (CAPATH, hashed names) alone: OpenSSL then reads only
                 * the certificates a handshake needs, where the bundle,
                 * libcurl's other default (CAINFO), is parsed whole at
                 * each new TLS context: about 140 certificates, 30-75 ms
                 * on the loop thread, even when the peer turns out to
                 * speak plain HTTP (a registry's ping tries HTTPS first).
                 * The same certificates, from the same ca-certificates
                 * run. A libcurl without a default directory keeps its
                 * bundle. */
                char *capath = NULL;
                if (sym_curl_easy_getinfo(easy, CURLINFO_CAPATH, &capath) == CURLE_OK && capath)
                        sym_curl_easy_setopt(easy, CURLOPT_CAINFO, NULL);
        }
        if (hc && hc->insecure) {
                sym_curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
                sym_curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        *ret = easy;
        return 0;
}

int registry_fetch_transfer_start(RegistryFetch *f, const char *url, FetchStep step) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        int r;

        /* A pull had a worker load it before its first transfer and failed
         * with the load's error when it could not (pull_op_new(),
         * WORK_LOAD_CURL); this is for every other way to a transfer. */
        r = curl_lib_load(NULL);
        if (r < 0)
                return r;
        registry_fetch_stop_transfer(f);
        registry_fetch_reset_response(f);
        f->step = step;
        r = fetch_easy_new(f, url, e, &f->easy);
        if (r < 0)
                return r;
        return 0;
}

int registry_fetch_transfer_go(RegistryFetch *f) {
        if (f->headers)
                sym_curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, f->headers);
        f->transfer_started_ms = now_monotonic_ms();
        if (!f->registry->glue) {
                int r = curl_glue_new(f->registry->loop, &f->registry->glue);
                if (r < 0)
                        return r;
        }
        return curl_glue_add(f->registry->glue, f->easy, registry_fetch_transfer_done, f);
}

char *registry_url_for_log(const char *url) {
        CURLU *u;
        char *clean = NULL, *copy = NULL;

        /* NULL, like any failure here: the caller logs "(no URL)". */
        if (curl_lib_load(NULL) < 0)
                return NULL;
        u = sym_curl_url();
        if (!u)
                return NULL;
        /* Credentials in the URL (a mirror written user:password@host) and
         * the query (a token request's, a presigned redirect's signature)
         * never reach the log. */
        if (sym_curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            sym_curl_url_set(u, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
            sym_curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
            sym_curl_url_set(u, CURLUPART_OPTIONS, NULL, 0) == CURLUE_OK &&
            sym_curl_url_set(u, CURLUPART_QUERY, NULL, 0) == CURLUE_OK &&
            sym_curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OK &&
            sym_curl_url_get(u, CURLUPART_URL, &clean, 0) == CURLUE_OK)
                copy = strdup(clean);
        sym_curl_free(clean);
        sym_curl_url_cleanup(u);
        return copy;
}

void registry_fetch_transfer_log(RegistryFetch *f, CURLcode result) {
        const char *url = NULL;
        curl_off_t bytes = 0;
        uint64_t ms = now_monotonic_ms() - f->transfer_started_ms;

        /* The URL the transfer ended at: after a redirect, the storage's. */
        sym_curl_easy_getinfo(f->easy, CURLINFO_EFFECTIVE_URL, &url);
        sym_curl_easy_getinfo(f->easy, CURLINFO_SIZE_DOWNLOAD_T, &bytes);
        free(f->last_url);
        f->last_url = registry_url_for_log(url ?: "");
        f->last_status = f->status;
        f->last_result = result;

        if (result != CURLE_OK)
                log_debug("%s GET %s -> %s (curl error %d), %" PRId64 " bytes, %" PRIu64 " ms", f->log_tag,
                          f->last_url ?: "(no URL)", sym_curl_easy_strerror(result), (int) result, (int64_t) bytes, ms);
        else
                log_debug("%s GET %s -> HTTP %ld, %" PRId64 " bytes, %" PRIu64 " ms", f->log_tag,
                          f->last_url ?: "(no URL)", f->status, (int64_t) bytes, ms);
}
