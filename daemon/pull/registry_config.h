/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the daemon knows about registries: the "registries" section of its
 * config file plus the credentials in ~/.docker/config.json ("auths"). The
 * schema is documented in daemon/pull/README.md:
 *
 *   {
 *     "registries": {
 *       "127.0.0.1:5000": {
 *         "insecure": true,                  plain HTTP / unverified TLS allowed
 *         "ca_file": "/etc/msb/ca.pem",      trusted besides the system CAs
 *         "username": "u", "password": "p",  Basic, or for the token server
 *         "mirrors": ["http://127.0.0.1:5001"]  tried first, in order
 *       }
 *     },
 *     "max_concurrent_downloads": 6,
 *     "max_concurrent_downloads_per_pull": 3
 *   }
 *
 * Hosts are keyed by the registry domain of a reference ("docker.io",
 * "ghcr.io", "127.0.0.1:5000"). Secrets are kept here only; nothing that
 * formats an error or a log line reads them.
 *
 * Credentials of a host come, first found first: from the daemon config;
 * from the Docker credential helper the Docker config names for the host
 * ("credHelpers", else "credsStore"), run at pull time by the pull module
 * (credential_helper.h), which then records them here; from the Docker
 * config's "auths".
 */

#include <jansson.h>

#include "error.h"
#include "util.h"

/* Defaults and bounds of the download concurrency knobs (transfers). */
#define REGISTRY_DOWNLOADS_DEFAULT 6U
#define REGISTRY_DOWNLOADS_PER_PULL_DEFAULT 3U
#define REGISTRY_DOWNLOADS_MAX 64U
/* Mirrors per registry host. */
#define REGISTRY_MIRRORS_MAX 16U
/* Size of ~/.docker/config.json we are willing to read, bytes. */
#define REGISTRY_DOCKER_CONFIG_MAX_BYTES (1 * MiB)

/* Where a host's username and password come from, weakest first. */
typedef enum RegistryCredentialSource {
        REGISTRY_CREDENTIALS_NONE,
        REGISTRY_CREDENTIALS_DOCKER_AUTHS, /* ~/.docker/config.json "auths" */
        REGISTRY_CREDENTIALS_HELPER,       /* a docker-credential-* helper */
        REGISTRY_CREDENTIALS_DAEMON,       /* the daemon config's "registries" */
} RegistryCredentialSource;

/* The user name that says the password is an identity token (an OAuth2
 * refresh token), as Docker's credential helpers say it; the Docker
 * config's "identitytoken" is held the same way. Such credentials go to the
 * token server as a refresh_token grant (registry_fetch_token()). */
#define REGISTRY_IDENTITY_TOKEN_USER "<token>"

typedef struct RegistryHostConfig {
        char *host;
        bool insecure;
        char *ca_file;
        char *username;
        char *password;
        RegistryCredentialSource source;
        char *cred_helper; /* the Docker config's credHelpers entry for the host */
        char **mirrors; /* base URLs, "scheme://host[:port]", no trailing slash */
        size_t n_mirrors;
} RegistryHostConfig;

typedef struct RegistryConfig {
        RegistryHostConfig *hosts;
        size_t n_hosts;
        unsigned max_downloads;
        unsigned max_downloads_per_pull;
        char *creds_store; /* the Docker config's credsStore: the helper of every other host */
} RegistryConfig;

/* Parses the daemon config object (NULL: all defaults). -EINVAL with a
 * message in err (kind invalid-params, naming the field) on a bad schema. */
int registry_config_new(const json_t *config, RegistryConfig **ret, MsbError *err);

/* The host's credentials are an identity token (REGISTRY_IDENTITY_TOKEN_USER). */
static inline bool registry_host_has_identity_token(const RegistryHostConfig *hc) {
        return hc && hc->username && hc->password && streq(hc->username, REGISTRY_IDENTITY_TOKEN_USER);
}
RegistryConfig *registry_config_free(RegistryConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(RegistryConfig *, registry_config_free);

/*
 * Adds what a Docker client config file says about credentials: "auths"
 * ({host: {"auth": base64("user:password")}}) for hosts the daemon config
 * gives none, and the credential helpers ("credsStore", "credHelpers":
 * {host: NAME}; a name that is not a plain word is ignored). path NULL:
 * registry_docker_config_path(). A missing file is not an error (0).
 */
int registry_config_load_docker(RegistryConfig *c, const char *path);

/* Where the Docker client keeps its config: $DOCKER_CONFIG/config.json,
 * else ~/.docker/config.json. *ret NULL: neither variable is set. */
int registry_docker_config_path(char **ret);

/* The credential helper to ask for host's credentials (its credHelpers
 * entry, else credsStore), or NULL: none, or the daemon config gives the
 * host credentials of its own, which win. */
const char *registry_config_helper(const RegistryConfig *c, const char *host);

/* Records what host's credential helper answered (copied), replacing
 * credentials from "auths" or an earlier answer, never the daemon config's. */
int registry_config_set_helper_credentials(RegistryConfig *c, const char *host, const char *username,
                                           const char *password);

/* The entry of host, or NULL. */
const RegistryHostConfig *registry_config_find(const RegistryConfig *c, const char *host);

/* Maps the ways Docker spells its hub ("index.docker.io",
 * "https://index.docker.io/v1/", "registry-1.docker.io") and a URL-style key
 * ("https://host:port/path") to the domain of a reference. Caller frees. */
char *registry_config_normalize_host(const char *key);

/* True for localhost, 127.0.0.0/8 and ::1 (with or without a port): hosts
 * where plain HTTP is allowed without configuration, as Docker does. */
bool registry_host_is_loopback(const char *host);
