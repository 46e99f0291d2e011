/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <openssl/evp.h>

#include "credential_helper.h"
#include "registry_config.h"

static void host_credentials_clear(RegistryHostConfig *h) {
        free(h->username);
        if (h->password) {
                explicit_bzero(h->password, strlen(h->password));
                free(h->password);
        }
        h->username = h->password = NULL;
        h->source = REGISTRY_CREDENTIALS_NONE;
}

static void host_config_done(RegistryHostConfig *h) {
        free(h->host);
        free(h->ca_file);
        free(h->cred_helper);
        host_credentials_clear(h);
        for (size_t i = 0; i < h->n_mirrors; i++)
                free(h->mirrors[i]);
        free(h->mirrors);
        *h = (RegistryHostConfig) {};
}

RegistryConfig *registry_config_free(RegistryConfig *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_hosts; i++)
                host_config_done(&c->hosts[i]);
        free(c->hosts);
        free(c->creds_store);
        free(c);
        return NULL;
}

char *registry_config_normalize_host(const char *key) {
        const char *s = key, *e;
        char *host;

        if (startswith(s, "https://"))
                s += 8;
        else if (startswith(s, "http://"))
                s += 7;
        e = strchr(s, '/');
        host = e ? strndup(s, (size_t) (e - s)) : strdup(s);
        if (!host)
                return NULL;
        for (char *p = host; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char) (*p - 'A' + 'a');

        if (streq(host, "index.docker.io") || streq(host, "registry-1.docker.io") ||
            streq(host, "registry.hub.docker.com")) {
                free(host);
                return strdup("docker.io");
        }
        return host;
}

bool registry_host_is_loopback(const char *host) {
        char buf[64];
        const char *h = host, *colon;
        size_t n;
        struct in_addr a4;
        struct in6_addr a6;

        if (host[0] == '[') {
                const char *close = strchr(host, ']');
                if (!close)
                        return false;
                h = host + 1;
                n = (size_t) (close - h);
        } else {
                colon = strchr(host, ':');
                n = colon ? (size_t) (colon - host) : strlen(host);
        }
        if (n == 0 || n >= sizeof(buf))
                return false;
        memcpy(buf, h, n);
        buf[n] = '\0';

        if (streq(buf, "localhost"))
                return true;
        if (inet_pton(AF_INET, buf, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, buf, &a6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&a6);
        return false;
}

static int config_error(MsbError *err, const char *field, const char *why) {
        return msb_error_invalid_param(err, field, "config: %s: %s", field, why);
}

static int strdup_field(const json_t *o, const char *key, char **ret) {
        const json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v))
                return -EINVAL;
        *ret = strdup(json_string_value(v));
        return *ret ? 0 : -ENOMEM;
}

/* True when the authority of a URL (or a bare host) holds "user@". */
static bool url_has_userinfo(const char *s) {
        const char *sep = strstr(s, "://"), *authority = sep ? sep + 3 : s;
        size_t n = strcspn(authority, "/?#");

        return memchr(authority, '@', n) != NULL;
}

/* A mirror is "scheme://host[:port]" or a bare "host[:port]", which means
 * https except on loopback. */
static char *mirror_url_normalize(const char *s) {
        size_t n = strlen(s);
        char *url;

        while (n > 0 && s[n - 1] == '/')
                n--;
        if (n == 0)
                return NULL;
        if (startswith(s, "http://") || startswith(s, "https://"))
                return strndup(s, n);
        if (asprintf(&url, "%s://%.*s", registry_host_is_loopback(s) ? "http" : "https", (int) n, s) < 0)
                return NULL;
        return url;
}

static int host_config_parse(const char *key, const json_t *o, RegistryHostConfig *h, MsbError *err) {
        const json_t *v, *m;
        size_t i;
        char field[256];

        snprintf(field, sizeof(field), "registries.%s", key);
        if (!json_is_object(o))
                return config_error(err, field, "must be an object");

        h->host = registry_config_normalize_host(key);
        if (!h->host)
                return -ENOMEM;

        v = json_object_get(o, "insecure");
        if (v && !json_is_boolean(v))
                return config_error(err, field, "\"insecure\" must be a boolean");
        h->insecure = v && json_is_true(v);

        if (strdup_field(o, "ca_file", &h->ca_file) < 0 || strdup_field(o, "username", &h->username) < 0 ||
            strdup_field(o, "password", &h->password) < 0)
                return config_error(err, field, "\"ca_file\", \"username\" and \"password\" must be strings");
        if (!h->username != !h->password)
                return config_error(err, field, "\"username\" and \"password\" go together");
        if (h->username)
                h->source = REGISTRY_CREDENTIALS_DAEMON;

        v = json_object_get(o, "mirrors");
        if (!v)
                return 0;
        if (!json_is_array(v) || json_array_size(v) > REGISTRY_MIRRORS_MAX)
                return config_error(err, field, "\"mirrors\" must be an array of at most 16 URLs");
        h->mirrors = calloc(json_array_size(v) + 1, sizeof(char *));
        if (!h->mirrors)
                return -ENOMEM;
        json_array_foreach(v, i, m) {
                if (!json_is_string(m))
                        return config_error(err, field, "\"mirrors\" must hold strings");
                /* A URL is printed in errors and logs; credentials belong in
                 * the mirror's own entry, where nothing prints them. */
                if (url_has_userinfo(json_string_value(m)))
                        return config_error(err, field,
                                            "a mirror URL may not hold credentials (user:password@): give them in "
                                            "the mirror's own entry under \"registries\"");
                h->mirrors[h->n_mirrors] = mirror_url_normalize(json_string_value(m));
                if (!h->mirrors[h->n_mirrors])
                        return config_error(err, field, "a mirror URL is empty");
                h->n_mirrors++;
        }
        return 0;
}

static int downloads_parse(const json_t *config, const char *key, unsigned def, unsigned *ret, MsbError *err) {
        const json_t *v = json_object_get(config, key);

        if (!v) {
                *ret = def;
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > REGISTRY_DOWNLOADS_MAX)
                return config_error(err, key, "must be an integer from 1 to 64");
        *ret = (unsigned) json_integer_value(v);
        return 0;
}

int registry_config_new(const json_t *config, RegistryConfig **ret, MsbError *err) {
        _cleanup_(registry_config_freep) RegistryConfig *c = NULL;
        const json_t *registries;
        const char *key;
        json_t *v;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->max_downloads = REGISTRY_DOWNLOADS_DEFAULT;
        c->max_downloads_per_pull = REGISTRY_DOWNLOADS_PER_PULL_DEFAULT;

        if (config && !json_is_object(config))
                return config_error(err, "config", "must be a JSON object");

        if (config) {
                r = downloads_parse(config, "max_concurrent_downloads", REGISTRY_DOWNLOADS_DEFAULT,
                                    &c->max_downloads, err);
                if (r < 0)
                        return r;
                r = downloads_parse(config, "max_concurrent_downloads_per_pull",
                                    REGISTRY_DOWNLOADS_PER_PULL_DEFAULT, &c->max_downloads_per_pull, err);
                if (r < 0)
                        return r;
        }

        registries = config ? json_object_get(config, "registries") : NULL;
        if (!registries) {
                *ret = TAKE_PTR(c);
                return 0;
        }
        if (!json_is_object(registries))
                return config_error(err, "registries", "must be an object keyed by registry host");

        c->hosts = calloc(json_object_size(registries) + 1, sizeof(RegistryHostConfig));
        if (!c->hosts)
                return -ENOMEM;
        json_object_foreach((json_t *) registries, key, v) {
                r = host_config_parse(key, v, &c->hosts[c->n_hosts], err);
                c->n_hosts++;
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

const RegistryHostConfig *registry_config_find(const RegistryConfig *c, const char *host) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_hosts; i++)
                if (streq(c->hosts[i].host, host))
                        return &c->hosts[i];
        return NULL;
}

/* Decodes base64("user:password"); -EINVAL when it is not that. */
static int docker_auth_decode(const char *b64, char **ret_user, char **ret_password) {
        size_t n = strlen(b64), len;
        _cleanup_free_ unsigned char *buf = NULL;
        char *colon;
        int k;

        if (n == 0 || n % 4 != 0 || n > 64 * KiB)
                return -EINVAL;
        buf = malloc(n / 4 * 3 + 1);
        if (!buf)
                return -ENOMEM;
        k = EVP_DecodeBlock(buf, (const unsigned char *) b64, (int) n);
        if (k < 0)
                return -EINVAL;
        /* EVP_DecodeBlock counts the padding as zero bytes. */
        len = (size_t) k;
        for (size_t i = n; i > 0 && b64[i - 1] == '='; i--)
                len--;
        buf[len] = '\0';
        if (memchr(buf, '\0', len))
                return -EINVAL;

        colon = strchr((char *) buf, ':');
        if (!colon || colon == (char *) buf)
                return -EINVAL;
        *ret_user = strndup((char *) buf, (size_t) (colon - (char *) buf));
        *ret_password = strdup(colon + 1);
        explicit_bzero(buf, len);
        if (!*ret_user || !*ret_password) {
                free(*ret_user);
                free(*ret_password);
                return -ENOMEM;
        }
        return 0;
}

static RegistryHostConfig *config_get_or_add(RegistryConfig *c, const char *host) {
        RegistryHostConfig *hosts;

        for (size_t i = 0; i < c->n_hosts; i++)
                if (streq(c->hosts[i].host, host))
                        return &c->hosts[i];

        hosts = realloc(c->hosts, (c->n_hosts + 1) * sizeof(*hosts));
        if (!hosts)
                return NULL;
        c->hosts = hosts;
        hosts[c->n_hosts] = (RegistryHostConfig) { .host = strdup(host) };
        if (!hosts[c->n_hosts].host)
                return NULL;
        return &hosts[c->n_hosts++];
}

int registry_docker_config_path(char **ret) {
        const char *dir = getenv("DOCKER_CONFIG"), *home = getenv("HOME");
        int r;

        *ret = NULL;
        if (dir && dir[0])
                r = asprintf(ret, "%s/config.json", dir);
        else if (home && home[0])
                r = asprintf(ret, "%s/.docker/config.json", home);
        else
                return 0;
        if (r < 0) {
                /* asprintf() leaves *ret undefined when it fails. */
                *ret = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* The "auths" object of a Docker config: {host: {"auth": base64("user:password")}},
 * or {"identitytoken": TOKEN} (with an "auth" or without), which Docker
 * stores when the registry's token server gave it a refresh token and then
 * uses instead of the password. Entries without either are skipped. */
static int docker_auths_add(RegistryConfig *c, const json_t *auths) {
        const char *key;
        json_t *v;

        json_object_foreach((json_t *) auths, key, v) {
                _cleanup_free_ char *host = NULL, *user = NULL, *password = NULL;
                const json_t *auth = json_object_get(v, "auth");
                const char *identity = json_string_value(json_object_get(v, "identitytoken"));
                RegistryHostConfig *h;

                if (identity && identity[0]) {
                        user = strdup(REGISTRY_IDENTITY_TOKEN_USER);
                        password = strdup(identity);
                        if (!user || !password)
                                return -ENOMEM;
                } else if (!json_is_string(auth) ||
                           docker_auth_decode(json_string_value(auth), &user, &password) < 0)
                        continue;
                host = registry_config_normalize_host(key);
                if (!host)
                        return -ENOMEM;

                h = config_get_or_add(c, host);
                if (!h)
                        return -ENOMEM;
                /* The daemon's own config wins over the Docker client's. */
                if (h->username)
                        continue;
                h->username = TAKE_PTR(user);
                h->password = TAKE_PTR(password);
                h->source = REGISTRY_CREDENTIALS_DOCKER_AUTHS;
        }
        return 0;
}

/* "credsStore": NAME and "credHelpers": {host: NAME}. A name that is not a
 * plain word (a path, say) is ignored: it becomes part of a program name. */
static int docker_helpers_add(RegistryConfig *c, const json_t *root) {
        const char *store = json_string_value(json_object_get(root, "credsStore"));
        const json_t *helpers = json_object_get(root, "credHelpers");
        const char *key;
        json_t *v;

        if (store && credential_helper_name_is_valid(store) && !(c->creds_store = strdup(store)))
                return -ENOMEM;
        if (!json_is_object(helpers))
                return 0;
        json_object_foreach((json_t *) helpers, key, v) {
                _cleanup_free_ char *host = NULL;
                RegistryHostConfig *h;

                if (!credential_helper_name_is_valid(json_string_value(v)))
                        continue;
                host = registry_config_normalize_host(key);
                if (!host)
                        return -ENOMEM;
                h = config_get_or_add(c, host);
                if (!h)
                        return -ENOMEM;
                free(h->cred_helper);
                h->cred_helper = strdup(json_string_value(v));
                if (!h->cred_helper)
                        return -ENOMEM;
        }
        return 0;
}

int registry_config_load_docker(RegistryConfig *c, const char *path) {
        _cleanup_free_ char *default_path = NULL, *data = NULL;
        _cleanup_(json_decrefp) json_t *root = NULL;
        const json_t *auths;
        size_t size;
        int r;

        if (!path) {
                r = registry_docker_config_path(&default_path);
                if (r < 0 || !default_path)
                        return r;
                path = default_path;
        }

        r = read_file_bounded(path, REGISTRY_DOCKER_CONFIG_MAX_BYTES, &data, &size);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;

        root = json_loadb(data, size, 0, NULL);
        explicit_bzero(data, size);
        if (!root || !json_is_object(root))
                return -EINVAL;
        r = docker_helpers_add(c, root);
        if (r < 0)
                return r;
        auths = json_object_get(root, "auths");
        if (!auths)
                return 0;
        if (!json_is_object(auths))
                return -EINVAL;
        return docker_auths_add(c, auths);
}

const char *registry_config_helper(const RegistryConfig *c, const char *host) {
        const RegistryHostConfig *h = registry_config_find(c, host);

        if (h && h->source == REGISTRY_CREDENTIALS_DAEMON)
                return NULL;
        if (h && h->cred_helper)
                return h->cred_helper;
        return c ? c->creds_store : NULL;
}

int registry_config_set_helper_credentials(RegistryConfig *c, const char *host, const char *username,
                                           const char *password) {
        RegistryHostConfig *h = config_get_or_add(c, host);
        char *u, *p;

        if (!h)
                return -ENOMEM;
        if (h->source == REGISTRY_CREDENTIALS_DAEMON)
                return 0;
        u = strdup(username);
        p = strdup(password);
        if (!u || !p) {
                free(u);
                if (p)
                        explicit_bzero(p, strlen(p));
                free(p);
                return -ENOMEM;
        }
        host_credentials_clear(h);
        h->username = u;
        h->password = p;
        h->source = REGISTRY_CREDENTIALS_HELPER;
        return 0;
}
