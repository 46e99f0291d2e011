/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Parsing of OCI (and Docker schema 2) indexes, manifests and configs
 * (OCI image-spec: image-index.md, manifest.md, config.md), with the checks
 * that keep a hostile document from reaching the store: media types, digest
 * syntax, sizes, the layer count limit, diff_ids matching the layers.
 */

#include <jansson.h>

#include "digest.h"
#include "error.h"

/* A manifest or index document larger than this is refused (README "The protocol", limits). */
#define OCI_MANIFEST_MAX_BYTES ((size_t) PROTO_LIMIT_MANIFEST_BYTES)
/* A config blob larger than this is refused; configs carry history and env,
 * never data, so the manifest limit is generous for them as well. */
#define OCI_CONFIG_MAX_BYTES ((size_t) PROTO_LIMIT_MANIFEST_BYTES)
#define OCI_LAYERS_MAX ((size_t) PROTO_LIMIT_LAYERS_PER_IMAGE)
/* Indexes may nest (an index of indexes); deeper than this is refused. */
#define OCI_INDEX_DEPTH_MAX 4

#define OCI_MEDIA_TYPE_INDEX "application/vnd.oci.image.index.v1+json"
#define OCI_MEDIA_TYPE_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OCI_MEDIA_TYPE_CONFIG "application/vnd.oci.image.config.v1+json"
#define OCI_MEDIA_TYPE_LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
#define OCI_MEDIA_TYPE_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define OCI_MEDIA_TYPE_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define DOCKER_MEDIA_TYPE_MANIFEST_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define DOCKER_MEDIA_TYPE_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define DOCKER_MEDIA_TYPE_CONFIG "application/vnd.docker.container.image.v1+json"
#define DOCKER_MEDIA_TYPE_LAYER_GZIP "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define DOCKER_MEDIA_TYPE_LAYER_TAR "application/vnd.docker.image.rootfs.diff.tar"

typedef struct OciPlatform {
        char *os;
        char *architecture;
        char *variant;
} OciPlatform;

typedef struct OciDescriptor {
        char *media_type;
        char digest[DIGEST_STRING_MAX];
        uint64_t size;
        char *ref_name; /* org.opencontainers.image.ref.name, or NULL */
        char *image_name; /* io.containerd.image.name, or NULL */
        bool attestation; /* a buildkit attestation manifest: never a platform image */
        OciPlatform platform;
} OciDescriptor;

typedef struct OciIndex {
        OciDescriptor *manifests;
        size_t n_manifests;
} OciIndex;

typedef struct OciManifest {
        char *media_type;
        OciDescriptor config;
        OciDescriptor *layers;
        size_t n_layers;
} OciManifest;

typedef struct OciConfig {
        json_t *root;
        OciPlatform platform;
        char **diff_ids;
        size_t n_diff_ids;
} OciConfig;

bool oci_media_type_is_index(const char *media_type);
bool oci_media_type_is_manifest(const char *media_type);
bool oci_media_type_is_layer(const char *media_type);

/* What kind of document data is: its mediaType, or (where the spec lets it
 * be omitted) the shape. Returns a static media type string or NULL. */
const char *oci_document_media_type(const void *data, size_t size);

int oci_index_parse(const void *data, size_t size, OciIndex **ret, MsbError *err);
OciIndex *oci_index_free(OciIndex *idx);
DEFINE_TRIVIAL_CLEANUP_FUNC(OciIndex *, oci_index_free);

int oci_manifest_parse(const void *data, size_t size, OciManifest **ret, MsbError *err);
OciManifest *oci_manifest_free(OciManifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(OciManifest *, oci_manifest_free);

int oci_config_parse(const void *data, size_t size, OciConfig **ret, MsbError *err);
OciConfig *oci_config_free(OciConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(OciConfig *, oci_config_free);

/* The ImageConfigDetail of the reference page for a parsed config. */
json_t *oci_config_detail(const OciConfig *c, const char *digest);

/* The platform this daemon runs images for: linux and the host's CPU in
 * GOARCH spelling (amd64, arm64, ...). Static strings. */
void oci_host_platform(OciPlatform *ret);

/* Parses "os/architecture[/variant]"; -EINVAL when malformed. Strings are
 * allocated; free with oci_platform_done(). */
int oci_platform_parse(const char *s, OciPlatform *ret);
void oci_platform_done(OciPlatform *p);

/* True for an attestation manifest beside the images of an index: marked
 * so by buildkit (vnd.docker.reference.type), or of platform unknown/unknown
 * as buildkit gives them. Never an image to run. */
bool oci_descriptor_is_attestation(const OciDescriptor *d);

/* The index entry that best matches want: os and architecture equal, variant
 * equal when want names one (else the entry without variant or the first).
 * Attestation manifests are never chosen. -ENOENT when none matches. */
int oci_index_select(const OciIndex *idx, const OciPlatform *want, size_t *ret);
