/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * image.load: imports images from an OCI image layout directory, an OCI
 * archive (a tar of a layout, optionally compressed) or a docker-save
 * archive. Every blob is verified against its descriptor before anything
 * is committed. Blocking: runs on a worker thread.
 */

#include <jansson.h>

#include "error.h"
#include "store.h"

/* An archive member larger than this is refused before it is unpacked. */
#define LOAD_ARCHIVE_MEMBER_MAX_BYTES ((uint64_t) PROTO_LIMIT_LAYER_UNCOMPRESSED_BYTES)
/* Members of an archive; layouts hold a few blobs per image. */
#define LOAD_ARCHIVE_MEMBERS_MAX PROTO_LIMIT_ARCHIVE_MEMBERS

/* Loads path (absolute). tag, when non-NULL, is a canonical reference that
 * names the (single) image. *ret gets the array of ImageHandles. */
int load_images(Store *store, const char *path, const char *tag, json_t **ret, MsbError *err);
