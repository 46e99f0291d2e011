/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Authorization on an endpoint: what its challenge asks for. Bearer tokens
 * (the distribution project's "Token Authentication Specification", which
 * OCI registries follow) are requested from the realm the challenge names,
 * with the configured credentials if any, and cached per endpoint and
 * repository until they expire; Basic sends the credentials themselves.
 */
#include <openssl/evp.h>

#include "registry_internal.h"

/* A token server may promise any lifetime; past a day we ask again anyway,
 * seconds. */
#define TOKEN_LIFETIME_MAX_S (24 * 3600)

static RegistryToken *token_free(RegistryToken *t) {
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

void registry_tokens_free(Registry *r) {
        while (r->tokens) {
                RegistryToken *t = r->tokens;
                r->tokens = t->next;
                token_free(t);
        }
}

RegistryToken *registry_token_find(Registry *r, const RegistryEndpoint *e, const char *repository) {
        uint64_t now = now_monotonic_ms();

        for (RegistryToken *t = r->tokens; t; t = t->next)
                if (streq(t->endpoint_key, e->key) && streq(t->repository, repository))
                        return t->expires_ms > now ? t : NULL;
        return NULL;
}

void registry_token_forget(Registry *r, const RegistryEndpoint *e, const char *repository) {
        for (RegistryToken **p = &r->tokens; *p; p = &(*p)->next)
                if (streq((*p)->endpoint_key, e->key) && streq((*p)->repository, repository)) {
                        RegistryToken *t = *p;
                        *p = t->next;
                        token_free(t);
                        return;
                }
}

static int token_store(Registry *r, const RegistryEndpoint *e, const char *repository, const char *token,
                       uint64_t lifetime_s) {
        RegistryToken *t;

        registry_token_forget(r, e, repository);
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

static char *url_escape(const char *s) {
        char *e = sym_curl_easy_escape(NULL, s, 0), *copy;

        if (!e)
                return NULL;
        copy = strdup(e);
        sym_curl_free(e);
        return copy;
}

/* The OAuth2 form of the token request, for an identity token: POST realm
 * with grant_type=refresh_token (distribution's "OAuth2 Token"
 * specification, what Docker sends when it holds an identitytoken). The
 * form carries the token, so it is wiped once curl has its copy. */
static int token_request_oauth(RegistryFetch *f, const RegistryEndpoint *e, const char *escaped_scope,
                               const char *escaped_service, const RegistryHostConfig *hc) {
        _cleanup_free_ char *escaped_token = url_escape(hc->password);
        char *form = NULL;
        int r, n;

        if (!escaped_token)
                return -ENOMEM;
        n = asprintf(&form, "grant_type=refresh_token&client_id=%s&refresh_token=%s&scope=%s%s%s",
                     REGISTRY_OAUTH_CLIENT_ID, escaped_token, escaped_scope, e->service ? "&service=" : "",
                     escaped_service);
        explicit_bzero(escaped_token, strlen(escaped_token));
        if (n < 0)
                return -ENOMEM;
        r = registry_fetch_transfer_start(f, e->realm, STEP_TOKEN);
        if (r >= 0 && sym_curl_easy_setopt(f->easy, CURLOPT_COPYPOSTFIELDS, form) != CURLE_OK)
                r = -ENOMEM;
        explicit_bzero(form, (size_t) n);
        free(form);
        return r;
}

/* Distribution token auth: GET realm?service=...&scope=repository:NAME:pull,
 * with Basic credentials when we have them; with an identity token, the
 * OAuth2 POST instead. */
void registry_fetch_token(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        const RegistryHostConfig *hc = registry_endpoint_config(f->registry, e);
        _cleanup_free_ char *url = NULL, *scope = NULL, *escaped_scope = NULL, *escaped_service = NULL;
        int r;

        /* Credentials go to the realm, so it must not be plain HTTP unless
         * the registry itself is reached that way. */
        if (!startswith(e->realm, "https://") &&
            !(startswith(e->realm, "http://") && startswith(e->base_url, "http://"))) {
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "registry %s names a token realm that is not HTTPS", e->key);
                return registry_fetch_endpoint_failed(f, -EPROTO);
        }

        if (asprintf(&scope, "repository:%s:pull", f->repository) < 0)
                return registry_fetch_fail_internal(f, -ENOMEM, "token");
        escaped_scope = url_escape(scope);
        escaped_service = e->service ? url_escape(e->service) : strdup("");
        if (!escaped_scope || !escaped_service)
                return registry_fetch_fail_internal(f, -ENOMEM, "token");
        if (registry_host_has_identity_token(hc))
                r = token_request_oauth(f, e, escaped_scope, escaped_service, hc);
        else if (asprintf(&url, "%s%sscope=%s%s%s", e->realm, strchr(e->realm, '?') ? "&" : "?", escaped_scope,
                          e->service ? "&service=" : "", escaped_service) < 0)
                r = -ENOMEM;
        else
                r = registry_fetch_transfer_start(f, url, STEP_TOKEN);
        if (r < 0)
                return registry_fetch_fail_internal(f, r, "token");
        f->buf_size = 0;
        if (hc && hc->username && !registry_host_has_identity_token(hc)) {
                sym_curl_easy_setopt(f->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
                sym_curl_easy_setopt(f->easy, CURLOPT_USERNAME, hc->username);
                sym_curl_easy_setopt(f->easy, CURLOPT_PASSWORD, hc->password);
        }
        r = registry_fetch_transfer_go(f);
        if (r < 0)
                return registry_fetch_fail_internal(f, r, "token");
        f->registry->stats.tokens++;
}

/* Where the credentials sent came from, for an error that must help the
 * user find which ones are wrong (never the credentials themselves). */
static const char *credentials_origin(const Registry *r, const RegistryHostConfig *hc, char *buf, size_t size) {
        switch (hc && hc->username ? hc->source : REGISTRY_CREDENTIALS_NONE) {
        case REGISTRY_CREDENTIALS_DAEMON:
                return " with the credentials of the daemon's configuration";
        case REGISTRY_CREDENTIALS_DOCKER_AUTHS:
                return " with the credentials of the Docker config's \"auths\"";
        case REGISTRY_CREDENTIALS_HELPER:
                snprintf(buf, size, " with the credentials of docker-credential-%s",
                         hc->cred_helper ?: r->config->creds_store ?: "?");
                return buf;
        case REGISTRY_CREDENTIALS_NONE:
        default:
                return " (no credentials)";
        }
}

void registry_fetch_unauthorized(RegistryFetch *f) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        const RegistryHostConfig *hc = registry_endpoint_config(f->registry, e);
        char origin[128];

        msb_error_set(&f->err, -EACCES, PROTO_ERROR_UNAUTHORIZED, "registry %s refused access to %s%s", e->key,
                      f->repository, credentials_origin(f->registry, hc, origin, sizeof(origin)));
        msb_error_add_data(&f->err, "registry", json_string(f->domain));
        registry_fetch_endpoint_failed(f, -EACCES);
}

void registry_fetch_token_done(RegistryFetch *f, CURLcode result) {
        RegistryEndpoint *e = f->endpoints[f->endpoint_idx];
        json_auto_t *j = NULL;
        const json_t *tok, *exp;
        json_int_t lifetime = REGISTRY_TOKEN_DEFAULT_LIFETIME_S;
        int r;

        if (f->abort_err.set) {
                msb_error_set(&f->err, -EBADMSG, f->abort_err.kind, "%s", f->abort_err.message);
                return registry_fetch_endpoint_failed(f, -EBADMSG);
        }
        if (result != CURLE_OK) {
                msb_error_set(&f->err, -EHOSTUNREACH, PROTO_ERROR_NETWORK_ERROR,
                              "cannot reach the token server of %s: %s", e->key, sym_curl_easy_strerror(result));
                return registry_fetch_endpoint_failed(f, -EHOSTUNREACH);
        }
        if (f->status == 401 || f->status == 403)
                return registry_fetch_unauthorized(f);
        if (f->status != 200) {
                msb_error_set(&f->err, -EPROTO, PROTO_ERROR_REGISTRY_ERROR,
                              "the token server of %s answered HTTP %ld", e->key, f->status);
                return registry_fetch_endpoint_failed(f, -EPROTO);
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
                return registry_fetch_endpoint_failed(f, -EBADMSG);
        }
        exp = json_object_get(j, "expires_in");
        if (json_is_integer(exp) && json_integer_value(exp) > 0)
                lifetime = json_integer_value(exp);
        if (lifetime > TOKEN_LIFETIME_MAX_S)
                lifetime = TOKEN_LIFETIME_MAX_S;

        r = token_store(f->registry, e, f->repository, json_string_value(tok), (uint64_t) lifetime);
        if (r < 0)
                return registry_fetch_fail_internal(f, r, "token");
        registry_fetch_request(f);
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

int registry_authorization(const Registry *r, const RegistryEndpoint *e, const RegistryToken *t, char **ret) {
        const RegistryHostConfig *hc = registry_endpoint_config(r, e);

        *ret = NULL;
        if (t)
                return asprintf(ret, "Authorization: Bearer %s", t->token) < 0 ? -ENOMEM : 0;
        if (e->challenge == REGISTRY_CHALLENGE_BASIC && hc && hc->username)
                return basic_header(hc, ret);
        return 0;
}
