/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What image.load's files share: load_source.c opens the source (a
 * directory, an archive unpacked into the store's tmp/, a descriptor the
 * client passed) and reads files beneath it, load_scan.c finds the images
 * in it (OCI layouts and indexes, docker-save), load.c picks, names,
 * converts and commits them.
 */

#include "archive_lib.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include "ingest.h"
#include "layer_reader.h"
#include "load.h"
#include "oci.h"
#include "reference.h"

/* One image found in the source: its manifest and the names it carries. */
typedef struct Candidate {
        char digest[DIGEST_STRING_MAX];
        char *name; /* a reference spelling from the source, or NULL */
        bool local; /* name is an OCI ref.name: without a '/' it is no Docker Hub name (localhost/) */
} Candidate;

/* A layer of a docker-save source: its blob's digest and its path in the source. */
typedef struct DockerLayer {
        char digest[DIGEST_STRING_MAX];
        char *path;
} DockerLayer;

/*
 * Every file of a source is opened beneath root_fd or blobs_fd (see
 * source_open()), never by a path string: a symlink inside the source
 * cannot lead the daemon to a file outside it.
 */
typedef struct LoadSource {
        Store *store;
        const LoadRequest *req;
        uint64_t staged;   /* bytes unpacked into the work directory (LOAD_STAGED_MAX_BYTES) */
        int root_fd;       /* the layout directory (maybe unpacked from an archive) */
        int blobs_fd;      /* where blobs/sha256/ is: root, or a staging directory for docker-save */
        char *unpacked;    /* the temp directory to remove, when unpacked or staged */
        DockerLayer *docker_layers; /* sorted by digest once the scan is done */
        size_t n_docker_layers;
        Candidate *candidates;
        size_t n_candidates;
} LoadSource;

/* load_source.c */
void load_source_done(LoadSource *src);
int load_source_open(int dir_fd, const char *rel, int *ret_fd, MsbError *err);
int load_source_read(int dir_fd, const char *rel, size_t max, char **ret, size_t *ret_size, MsbError *err);
bool load_source_has(int dir_fd, const char *rel);
int load_add_candidate(LoadSource *src, const char *digest, const char *name, bool local);
bool load_member_path_is_safe(const char *p);
int load_make_work_dir(LoadSource *src, MsbError *err);
void load_emit(const LoadSource *src, json_t *event);
int load_source_open_passed_fd(LoadSource *src, int fd, MsbError *err);
int load_source_open_path(LoadSource *src, const char *path, MsbError *err);

/* load_scan.c */
int load_read_verified_blob(int dir_fd, const char *digest, uint64_t size, size_t max, char **ret, size_t *ret_size, MsbError *err);
int load_source_open_blob(const LoadSource *src, const char *digest, int *ret_fd, MsbError *err);
int load_source_scan(LoadSource *src, MsbError *err);
