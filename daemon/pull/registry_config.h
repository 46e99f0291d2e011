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

typedef struct RegistryHostConfig {
        char *host;
        bool insecure;
        char *ca_file;
        char *username;
        char *password;
        char **mirrors; /* base URLs, "scheme://host[:port]", no trailing slash */
        size_t n_mirrors;
} RegistryHostConfig;

typedef struct RegistryConfig {
        RegistryHostConfig *hosts;
        size_t n_hosts;
        unsigned max_downloads;
        unsigned max_downloads_per_pull;
} RegistryConfig;

/* Parses the daemon config object (NULL: all defaults). -EINVAL with a
 * message in err (kind invalid-params, naming the field) on a bad schema. */
int registry_config_new(const json_t *config, RegistryConfig **ret, MsbError *err);
RegistryConfig *registry_config_free(RegistryConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(RegistryConfig *, registry_config_free);

/*
 * Adds credentials from a Docker client config file ("auths": {host:
 * {"auth": base64("user:password")}}) for hosts the daemon config gives none.
 * path NULL: $DOCKER_CONFIG/config.json, else ~/.docker/config.json. A
 * missing file is not an error (0).
 */
int registry_config_load_docker_auths(RegistryConfig *c, const char *path);

/* The entry of host, or NULL. */
const RegistryHostConfig *registry_config_find(const RegistryConfig *c, const char *host);

/* Maps the ways Docker spells its hub ("index.docker.io",
 * "https://index.docker.io/v1/", "registry-1.docker.io") and a URL-style key
 * ("https://host:port/path") to the domain of a reference. Caller frees. */
char *registry_config_normalize_host(const char *key);

/* True for localhost, 127.0.0.0/8 and ::1 (with or without a port): hosts
 * where plain HTTP is allowed without configuration, as Docker does. */
bool registry_host_is_loopback(const char *host);
