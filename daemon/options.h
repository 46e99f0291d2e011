/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The command line of msb-imaged, its defaults from the environment, and
 * the JSON configuration file the options name.
 */

#include <jansson.h>

#include "error.h"
#include "log.h"

/* The configuration file is read whole; a larger one is refused (bytes). */
#define OPTIONS_CONFIG_MAX_BYTES ((size_t) (1 * MiB))
/* The longest --exit-idle period, seconds (a year). */
#define OPTIONS_EXIT_IDLE_MAX_SEC (86400UL * 365)

typedef struct Options {
        char *store;
        char *socket;
        char *config;
        bool config_explicit; /* named by --config or MSB_IMAGED_CONFIG: it must exist */
        LogLevel log_level;
        unsigned exit_idle_sec;
} Options;

/* Parses argv, and fills what it leaves out from the environment. --help
 * and --version print and exit(0); anything wrong is printed to stderr and
 * returned as -EINVAL. */
int options_parse(int argc, char **argv, Options *ret);
void options_done(Options *o);

/* The configuration object: an empty one when the default file is absent;
 * -errno with err saying why (naming the file) when a named file is absent,
 * or a file is unreadable, larger than OPTIONS_CONFIG_MAX_BYTES or not a
 * JSON object. Read at start, and again at SIGHUP. */
int options_load_config(const Options *o, json_t **ret, MsbError *err);

/* What differs between two configurations, for the log: "registries:
 * ghcr.io added, 127.0.0.1:5000 changed; max_concurrent_downloads: 6 -> 2;
 * store: changed". Names and numbers only: a registry's entry may hold a
 * password, so what changed in it is never said. *ret NULL: nothing. */
int options_config_changes(const json_t *old, const json_t *new, char **ret);
