/* SPDX-License-Identifier: Apache-2.0 */
#include "load_internal.h"

/* The images a source holds: OCI layouts (index.json, nested indexes,
 * ref.name annotations) and docker-save archives (manifest.json). */

/* "blobs/sha256/<hex>": where a layout keeps the blob (OCI image-spec, image-layout.md "Blobs"). */
#define BLOB_REL_PATH_MAX (sizeof("blobs/sha256/") + DIGEST_HEX_LEN)
static const char *blob_rel_path(const char *digest, char buf[static BLOB_REL_PATH_MAX]) {
        snprintf(buf, BLOB_REL_PATH_MAX, "blobs/sha256/%s", digest_hex(digest));
        return buf;
}

/* Reads a small blob of the layout beneath dir_fd and checks it against its descriptor. */
int load_read_verified_blob(int dir_fd, const char *digest, uint64_t size, size_t max, char **ret,
                              size_t *ret_size, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        char actual[DIGEST_STRING_MAX], rel[BLOB_REL_PATH_MAX];
        size_t n;
        int r;

        r = load_source_read(dir_fd, blob_rel_path(digest, rel), max, &data, &n, err);
        if (r < 0)
                return r;
        r = digest_buffer(data, n, actual);
        if (r < 0)
                return r;
        if (!streq(actual, digest) || (size != UINT64_MAX && n != size)) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "blob %s does not match its descriptor (got %s, %zu bytes)", digest, actual, n);
                msb_error_add_data(err, "expected", json_string(digest));
                msb_error_add_data(err, "actual", json_string(actual));
                return -EBADMSG;
        }
        *ret = TAKE_PTR(data);
        *ret_size = n;
        return 0;
}

/* The name an index entry gives its image: containerd's full name, else
 * the OCI ref.name (local: see Candidate), else what the outer entry gave. */
static const char *descriptor_name(const OciDescriptor *d, const char *outer, bool outer_local, bool *ret_local) {
        *ret_local = d->image_name ? false : d->ref_name ? true : outer_local;
        return d->image_name ?: d->ref_name ?: outer;
}

/* Walks an index (and nested indexes) to the manifest for this host. */
static int resolve_manifest(LoadSource *src, const OciDescriptor *d, const char *name, bool local, unsigned depth,
                            MsbError *err) {
        _cleanup_free_ char *data = NULL;
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        OciPlatform host;
        size_t n, pick;
        int r;

        if (d->media_type && oci_media_type_is_manifest(d->media_type))
                return load_add_candidate(src, d->digest, name, local);
        if (depth >= OCI_INDEX_DEPTH_MAX)
                return msb_error_set(err, -ELOOP, PROTO_ERROR_INVALID_IMAGE, "indexes nest deeper than %d",
                                     OCI_INDEX_DEPTH_MAX);

        r = load_read_verified_blob(src->blobs_fd, d->digest, d->size, OCI_MANIFEST_MAX_BYTES, &data, &n, err);
        if (r < 0)
                return r;
        const char *mt = oci_document_media_type(data, n);
        if (mt && oci_media_type_is_manifest(mt))
                return load_add_candidate(src, d->digest, name, local);
        if (!mt || !oci_media_type_is_index(mt)) {
                msb_error_set(err, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                              "%s is neither an image manifest nor an index", d->digest);
                msb_error_add_data(err, "media_type", d->media_type ? json_string(d->media_type) : json_null());
                return -EMEDIUMTYPE;
        }
        r = oci_index_parse(data, n, &idx, err);
        if (r < 0)
                return r;
        oci_host_platform(&host);
        r = oci_index_select(idx, &host, &pick);
        if (r >= 0)
                return resolve_manifest(src, &idx->manifests[pick], name, local, depth + 1, err);

        /* An index may hold indexes without platforms (nested indexes): look inside. */
        for (size_t i = 0; i < idx->n_manifests; i++) {
                const OciDescriptor *e = &idx->manifests[i];
                if (!e->media_type || !oci_media_type_is_index(e->media_type))
                        continue;
                size_t before = src->n_candidates;
                MsbError inner = {};
                bool inner_local;
                const char *inner_name = descriptor_name(e, name, local, &inner_local);
                r = resolve_manifest(src, e, inner_name, inner_local, depth + 1, &inner);
                bool found = r >= 0 && src->n_candidates > before;
                if (r < 0 && inner.kind != PROTO_ERROR_PLATFORM_NOT_FOUND) {
                        if (err && !err->set) {
                                *err = inner;
                                return r;
                        }
                }
                msb_error_clear(&inner);
                if (r < 0 && r != -ENOENT)
                        return r;
                if (found)
                        return 0;
        }
        msb_error_set(err, -ENOENT, PROTO_ERROR_PLATFORM_NOT_FOUND, "the index %s has no image for %s/%s", d->digest,
                      host.os, host.architecture);
        msb_error_add_data(err, "platform", json_sprintf("%s/%s", host.os, host.architecture));
        return -ENOENT;
}

static int scan_oci_layout(LoadSource *src, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        size_t n;
        int r;

        r = load_source_read(src->root_fd, "index.json", OCI_MANIFEST_MAX_BYTES, &data, &n, err);
        if (r < 0)
                return r;
        r = oci_index_parse(data, n, &idx, err);
        if (r < 0)
                return r;
        if (idx->n_manifests == 0)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_INVALID_IMAGE, "the layout's index.json lists no image");

        for (size_t i = 0; i < idx->n_manifests; i++) {
                const OciDescriptor *d = &idx->manifests[i];
                bool local;
                /* An attestation beside the images (buildkit writes one per
                 * platform) is no image to load, here as in nested indexes. */
                if (oci_descriptor_is_attestation(d))
                        continue;
                const char *name = descriptor_name(d, NULL, false, &local);
                r = resolve_manifest(src, d, name, local, 0, err);
                if (r < 0)
                        return r;
        }
        if (src->n_candidates == 0)
                return msb_error_set(err, -ENOENT, PROTO_ERROR_INVALID_IMAGE,
                                     "the layout's index.json lists attestations only, no image");
        return 0;
}

static int docker_layer_cmp(const void *a, const void *b) {
        return strcmp(((const DockerLayer *) a)->digest, ((const DockerLayer *) b)->digest);
}

/* Records the docker-save layer at rel in the source: its descriptor (digest,
 * size, and the media type its first bytes show) goes into layer_descs, its
 * path into src->docker_layers, where load_source_open_blob() finds it. */
static int scan_docker_layer(LoadSource *src, const char *rel, json_t *layer_descs, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        char digest[DIGEST_STRING_MAX];
        uint8_t magic[LAYER_MAGIC_BYTES];
        ssize_t n_magic;
        uint64_t size;
        int r;

        r = load_source_open(src->root_fd, rel, &fd, err);
        if (r < 0)
                return r;
        r = digest_fd(fd, digest, &size);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot read a layer");
        n_magic = pread(fd, magic, sizeof(magic), 0);
        const char *mt = layer_compression_media_type(layer_compression_sniff(magic, n_magic > 0 ? (size_t) n_magic : 0));

        DockerLayer *n = realloc(src->docker_layers, (src->n_docker_layers + 1) * sizeof(DockerLayer));
        if (!n)
                return -ENOMEM;
        src->docker_layers = n;
        DockerLayer *dl = &n[src->n_docker_layers];
        snprintf(dl->digest, sizeof(dl->digest), "%s", digest);
        if (!(dl->path = strdup(rel)))
                return -ENOMEM;
        src->n_docker_layers++;
        json_t *desc = json_pack("{s:s, s:s, s:I}", "mediaType", mt, "digest", digest, "size", (json_int_t) size);
        return json_array_append_new(layer_descs, desc) < 0 ? -ENOMEM : 0;
}

/* Writes data under its digest in the staging directory, as a layout holds it. */
static int stage_blob(LoadSource *src, const char *digest, const void *data, size_t size, MsbError *err) {
        char rel[BLOB_REL_PATH_MAX];

        (void) mkdirat(src->blobs_fd, "blobs", 0700);
        (void) mkdirat(src->blobs_fd, "blobs/sha256", 0700);
        _cleanup_close_ int fd = openat(src->blobs_fd, blob_rel_path(digest, rel),
                                        O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 || write_all(fd, data, size) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot stage the manifest");
        return 0;
}

/* One entry of a docker-save manifest.json: stages the OCI manifest and the
 * config it describes, and adds a candidate per RepoTag. */
static int scan_docker_entry(LoadSource *src, size_t i, json_t *item, MsbError *err) {
        const char *config = json_string_value(json_object_get(item, "Config"));
        json_t *layers = json_object_get(item, "Layers"), *tags = json_object_get(item, "RepoTags"), *l;
        json_auto_t *manifest = NULL, *layer_descs = json_array();
        _cleanup_free_ char *cfg = NULL, *text = NULL;
        char cfg_digest[DIGEST_STRING_MAX], mdigest[DIGEST_STRING_MAX];
        size_t cfg_size, j;
        int r;

        if (!layer_descs)
                return -ENOMEM;
        if (!config || !load_member_path_is_safe(config) || !json_is_array(layers))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "entry %zu of manifest.json has no Config or Layers", i);
        if (json_array_size(layers) > OCI_LAYERS_MAX)
                return msb_error_limit(err, "layers_per_image", OCI_LAYERS_MAX, "entry %zu has more than %zu layers", i,
                                       OCI_LAYERS_MAX);
        r = load_source_read(src->root_fd, config, OCI_CONFIG_MAX_BYTES, &cfg, &cfg_size, err);
        if (r < 0)
                return r;
        r = digest_buffer(cfg, cfg_size, cfg_digest);
        if (r < 0)
                return r;

        json_array_foreach(layers, j, l) {
                const char *lp = json_string_value(l);
                if (!lp || !load_member_path_is_safe(lp))
                        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                             "layer %zu of entry %zu has an invalid path", j, i);
                r = scan_docker_layer(src, lp, layer_descs, err);
                if (r < 0)
                        return r;
        }

        manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:O}", "schemaVersion", 2, "mediaType",
                             OCI_MEDIA_TYPE_MANIFEST, "config", "mediaType", OCI_MEDIA_TYPE_CONFIG, "digest", cfg_digest,
                             "size", (json_int_t) cfg_size, "layers", layer_descs);
        text = manifest ? json_dumps(manifest, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (!text)
                return -ENOMEM;
        r = digest_buffer(text, strlen(text), mdigest);
        if (r < 0)
                return r;
        r = stage_blob(src, mdigest, text, strlen(text), err);
        if (r >= 0)
                r = stage_blob(src, cfg_digest, cfg, cfg_size, err);
        if (r < 0)
                return r;

        size_t n_tags = json_array_size(tags);
        if (n_tags == 0)
                return load_add_candidate(src, mdigest, NULL, false);
        /* RepoTags are Docker's names ("alpine:3" is Docker Hub's). */
        for (size_t t = 0; t < n_tags; t++) {
                r = load_add_candidate(src, mdigest, json_string_value(json_array_get(tags, t)), false);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* docker save (and skopeo's docker-archive): manifest.json lists Config,
 * RepoTags and Layers (uncompressed tars or compressed blobs). We write the
 * OCI manifest that describes the same content, deterministically, so the
 * same archive always gives the same manifest digest. */
static int scan_docker_archive(LoadSource *src, MsbError *err) {
        _cleanup_free_ char *data = NULL;
        json_auto_t *root = NULL;
        json_t *item;
        size_t n, i;
        int r;

        /* The OCI manifests and configs written for these images go to a
         * staging directory: never into the caller's directory. An unpacked
         * archive is already ours. The layers stay where they are. */
        if (!src->unpacked) {
                r = load_make_work_dir(src, err);
                if (r < 0)
                        return r;
        }
        safe_close(src->blobs_fd);
        src->blobs_fd = open(src->unpacked, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (src->blobs_fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot open the staging directory");
        r = load_source_read(src->root_fd, "manifest.json", OCI_MANIFEST_MAX_BYTES, &data, &n, err);
        if (r < 0)
                return r;
        root = json_loadb(data, n, 0, NULL);
        if (!json_is_array(root) || json_array_size(root) == 0)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "the archive's manifest.json is not a non-empty array");

        json_array_foreach(root, i, item) {
                r = scan_docker_entry(src, i, item, err);
                if (r < 0)
                        return r;
        }
        /* Sorted, so each blob is found by digest in logarithmic time. */
        qsort(src->docker_layers, src->n_docker_layers, sizeof(DockerLayer), docker_layer_cmp);
        return 0;
}

/* Opens the blob named digest: a docker-save layer where the source keeps
 * it, any other blob under blobs/sha256/ in the layout (or staging). */
int load_source_open_blob(const LoadSource *src, const char *digest, int *ret_fd, MsbError *err) {
        char rel[BLOB_REL_PATH_MAX];
        DockerLayer key = {};

        snprintf(key.digest, sizeof(key.digest), "%s", digest);
        const DockerLayer *dl = src->n_docker_layers == 0 ? NULL
                                : bsearch(&key, src->docker_layers, src->n_docker_layers, sizeof(DockerLayer),
                                          docker_layer_cmp);
        if (dl)
                return load_source_open(src->root_fd, dl->path, ret_fd, err);
        return load_source_open(src->blobs_fd, blob_rel_path(digest, rel), ret_fd, err);
}
/* Opens the source and finds its images (src->candidates). */
int load_source_scan(LoadSource *src, MsbError *err) {
        const LoadRequest *req = src->req;
        int r;

        r = req->path ? load_source_open_path(src, req->path, err) : load_source_open_passed_fd(src, req->fd, err);
        if (r < 0)
                return r;
        src->blobs_fd = fcntl(src->root_fd, F_DUPFD_CLOEXEC, 3);
        if (src->blobs_fd < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot read the source");
        if (load_source_has(src->root_fd, "oci-layout") && load_source_has(src->root_fd, "index.json"))
                return scan_oci_layout(src, err);
        if (load_source_has(src->root_fd, "manifest.json"))
                return scan_docker_archive(src, err);
        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                             "%s is not an OCI layout, OCI archive or docker-save archive",
                             req->path ?: "the archive passed");
}
