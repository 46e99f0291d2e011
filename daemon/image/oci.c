/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/utsname.h>

#include "layer_reader.h"
#include "oci.h"

static const char *const index_types[] = { OCI_MEDIA_TYPE_INDEX, DOCKER_MEDIA_TYPE_MANIFEST_LIST };
static const char *const manifest_types[] = { OCI_MEDIA_TYPE_MANIFEST, DOCKER_MEDIA_TYPE_MANIFEST };

static bool in_list(const char *s, const char *const *list, size_t n) {
        if (!s)
                return false;
        for (size_t i = 0; i < n; i++)
                if (streq(s, list[i]))
                        return true;
        return false;
}

bool oci_media_type_is_index(const char *media_type) {
        return in_list(media_type, index_types, ELEMENTSOF(index_types));
}

bool oci_media_type_is_manifest(const char *media_type) {
        return in_list(media_type, manifest_types, ELEMENTSOF(manifest_types));
}

bool oci_media_type_is_layer(const char *media_type) {
        LayerCompression c;
        bool any;

        /* The converter owns the list of layer media types: a layer is what it can read. */
        return media_type && layer_media_type_compression(media_type, &c, &any) >= 0;
}

static json_t *parse_document(const void *data, size_t size, size_t max, const char *what, MsbError *err) {
        json_error_t jerr;
        json_t *root;

        if (size > max) {
                msb_error_limit(err, "manifest_bytes", max, "the %s is %zu bytes, more than the limit of %zu", what, size,
                                max);
                return NULL;
        }
        root = json_loadb(data, size, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "the %s is not valid JSON: %s (at byte %d)", what,
                              jerr.text, jerr.position);
                return NULL;
        }
        if (!json_is_object(root)) {
                json_decref(root);
                msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "the %s is not a JSON object", what);
                return NULL;
        }
        return root;
}

const char *oci_document_media_type(const void *data, size_t size) {
        json_auto_t *root = NULL;
        const char *mt;

        if (size > OCI_MANIFEST_MAX_BYTES)
                return NULL;
        root = json_loadb(data, size, 0, NULL);
        if (!json_is_object(root))
                return NULL;
        mt = json_string_value(json_object_get(root, "mediaType"));
        for (size_t i = 0; i < ELEMENTSOF(index_types); i++)
                if (mt && streq(mt, index_types[i]))
                        return index_types[i];
        for (size_t i = 0; i < ELEMENTSOF(manifest_types); i++)
                if (mt && streq(mt, manifest_types[i]))
                        return manifest_types[i];
        if (mt)
                return NULL;
        /* image-spec lets mediaType be omitted; the shape tells. */
        if (json_is_array(json_object_get(root, "manifests")))
                return OCI_MEDIA_TYPE_INDEX;
        if (json_is_object(json_object_get(root, "config")))
                return OCI_MEDIA_TYPE_MANIFEST;
        return NULL;
}

static char *dup_string(json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));
        return s ? strdup(s) : NULL;
}

static void descriptor_done(OciDescriptor *d) {
        free(d->media_type);
        free(d->ref_name);
        free(d->image_name);
        oci_platform_done(&d->platform);
}

/* Parses a descriptor (image-spec descriptor.md): mediaType, digest, size. */
static int descriptor_parse(json_t *o, const char *what, OciDescriptor *ret, MsbError *err) {
        json_t *digest, *size, *annotations, *platform;
        OciDescriptor d = {};

        if (!json_is_object(o))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "%s is not a descriptor object", what);
        digest = json_object_get(o, "digest");
        size = json_object_get(o, "size");
        if (!json_is_string(digest) || !digest_is_valid(json_string_value(digest)))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "%s has no valid sha256 digest", what);
        if (!json_is_integer(size) || json_integer_value(size) < 0)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "%s has no valid size", what);

        snprintf(d.digest, sizeof(d.digest), "%s", json_string_value(digest));
        d.size = (uint64_t) json_integer_value(size);
        d.media_type = dup_string(o, "mediaType");

        annotations = json_object_get(o, "annotations");
        if (json_is_object(annotations)) {
                d.ref_name = dup_string(annotations, "org.opencontainers.image.ref.name");
                d.image_name = dup_string(annotations, "io.containerd.image.name");
                const char *type = json_string_value(json_object_get(annotations, "vnd.docker.reference.type"));
                d.attestation = type && streq(type, "attestation-manifest");
        }
        platform = json_object_get(o, "platform");
        if (json_is_object(platform)) {
                d.platform.os = dup_string(platform, "os");
                d.platform.architecture = dup_string(platform, "architecture");
                d.platform.variant = dup_string(platform, "variant");
        }
        *ret = d;
        return 0;
}

int oci_index_parse(const void *data, size_t size, OciIndex **ret, MsbError *err) {
        json_auto_t *root = parse_document(data, size, OCI_MANIFEST_MAX_BYTES, "index", err);
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        json_t *manifests, *item;
        size_t i;
        int r;

        if (!root)
                return -EBADMSG;
        manifests = json_object_get(root, "manifests");
        if (!json_is_array(manifests))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "the index has no manifests array");

        idx = calloc(1, sizeof(*idx));
        if (!idx)
                return -ENOMEM;
        idx->manifests = calloc(json_array_size(manifests) + 1, sizeof(OciDescriptor));
        if (!idx->manifests)
                return -ENOMEM;
        json_array_foreach(manifests, i, item) {
                char what[64];
                snprintf(what, sizeof(what), "index entry %zu", i);
                r = descriptor_parse(item, what, &idx->manifests[i], err);
                if (r < 0)
                        return r;
                idx->n_manifests++;
        }
        *ret = TAKE_PTR(idx);
        return 0;
}

OciIndex *oci_index_free(OciIndex *idx) {
        if (!idx)
                return NULL;
        for (size_t i = 0; i < idx->n_manifests; i++)
                descriptor_done(&idx->manifests[i]);
        free(idx->manifests);
        free(idx);
        return NULL;
}

int oci_manifest_parse(const void *data, size_t size, OciManifest **ret, MsbError *err) {
        json_auto_t *root = parse_document(data, size, OCI_MANIFEST_MAX_BYTES, "manifest", err);
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        json_t *layers, *item, *version;
        const char *mt;
        size_t i;
        int r;

        if (!root)
                return -EBADMSG;

        version = json_object_get(root, "schemaVersion");
        if (!json_is_integer(version) || json_integer_value(version) != 2)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "the manifest's schemaVersion is not 2");

        json_t *mtv = json_object_get(root, "mediaType");
        if (mtv && !json_is_string(mtv))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "the manifest's mediaType is not a string");
        mt = json_string_value(mtv);
        if (mt && !oci_media_type_is_manifest(mt)) {
                msb_error_set(err, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                              "unsupported manifest media type %s", mt);
                msb_error_add_data(err, "media_type", json_string(mt));
                return -EMEDIUMTYPE;
        }

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->media_type = strdup(mt ?: OCI_MEDIA_TYPE_MANIFEST);

        r = descriptor_parse(json_object_get(root, "config"), "the manifest's config", &m->config, err);
        if (r < 0)
                return r;
        if (m->config.media_type && !streq(m->config.media_type, OCI_MEDIA_TYPE_CONFIG) &&
            !streq(m->config.media_type, DOCKER_MEDIA_TYPE_CONFIG)) {
                msb_error_set(err, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                              "the manifest's config has media type %s, which is not an image config (an artifact?)",
                              m->config.media_type);
                msb_error_add_data(err, "media_type", json_string(m->config.media_type));
                return -EMEDIUMTYPE;
        }
        if (m->config.size > OCI_CONFIG_MAX_BYTES) {
                msb_error_limit(err, "manifest_bytes", OCI_CONFIG_MAX_BYTES, "the config is %" PRIu64 " bytes, more than %zu",
                                m->config.size, OCI_CONFIG_MAX_BYTES);
                return -EFBIG;
        }

        layers = json_object_get(root, "layers");
        if (!json_is_array(layers))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE, "the manifest has no layers array");
        if (json_array_size(layers) > OCI_LAYERS_MAX) {
                return msb_error_limit(err, "layers_per_image", OCI_LAYERS_MAX,
                                       "the image has %zu layers, more than the limit of %zu", json_array_size(layers),
                                       OCI_LAYERS_MAX);
        }
        m->layers = calloc(json_array_size(layers) + 1, sizeof(OciDescriptor));
        if (!m->layers)
                return -ENOMEM;
        json_array_foreach(layers, i, item) {
                char what[64];
                snprintf(what, sizeof(what), "layer %zu", i);
                r = descriptor_parse(item, what, &m->layers[i], err);
                if (r < 0)
                        return r;
                m->n_layers++;
                if (m->layers[i].media_type && !oci_media_type_is_layer(m->layers[i].media_type)) {
                        msb_error_set(err, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                                      "layer %zu has unsupported media type %s", i, m->layers[i].media_type);
                        msb_error_add_data(err, "media_type", json_string(m->layers[i].media_type));
                        return -EMEDIUMTYPE;
                }
        }
        *ret = TAKE_PTR(m);
        return 0;
}

OciManifest *oci_manifest_free(OciManifest *m) {
        if (!m)
                return NULL;
        descriptor_done(&m->config);
        for (size_t i = 0; i < m->n_layers; i++)
                descriptor_done(&m->layers[i]);
        free(m->layers);
        free(m->media_type);
        free(m);
        return NULL;
}

int oci_config_parse(const void *data, size_t size, OciConfig **ret, MsbError *err) {
        _cleanup_(oci_config_freep) OciConfig *c = NULL;
        json_t *diff_ids, *item, *rootfs;
        size_t i;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->root = parse_document(data, size, OCI_CONFIG_MAX_BYTES, "config", err);
        if (!c->root)
                return -EBADMSG;

        c->platform.os = dup_string(c->root, "os");
        c->platform.architecture = dup_string(c->root, "architecture");
        c->platform.variant = dup_string(c->root, "variant");

        /* config.md: rootfs.type must be "layers", diff_ids in layer order. */
        rootfs = json_object_get(c->root, "rootfs");
        diff_ids = json_object_get(rootfs, "diff_ids");
        const char *type = json_string_value(json_object_get(rootfs, "type"));
        if (!type || !streq(type, "layers") || !json_is_array(diff_ids))
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "the config has no rootfs of type \"layers\" with diff_ids");
        if (json_array_size(diff_ids) > OCI_LAYERS_MAX)
                return msb_error_limit(err, "layers_per_image", OCI_LAYERS_MAX, "the config lists %zu diff_ids, more than %zu",
                                       json_array_size(diff_ids), OCI_LAYERS_MAX);
        c->diff_ids = calloc(json_array_size(diff_ids) + 1, sizeof(char *));
        if (!c->diff_ids)
                return -ENOMEM;
        json_array_foreach(diff_ids, i, item) {
                const char *d = json_string_value(item);
                if (!d || !digest_is_valid(d))
                        return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                             "diff_id %zu of the config is not a sha256 digest", i);
                c->diff_ids[i] = strdup(d);
                if (!c->diff_ids[i])
                        return -ENOMEM;
                c->n_diff_ids++;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

OciConfig *oci_config_free(OciConfig *c) {
        if (!c)
                return NULL;
        json_decref(c->root);
        oci_platform_done(&c->platform);
        for (size_t i = 0; i < c->n_diff_ids; i++)
                free(c->diff_ids[i]);
        free(c->diff_ids);
        free(c);
        return NULL;
}

static json_t *string_array_or_null(json_t *v) {
        json_t *out, *item;
        size_t i;

        if (!json_is_array(v))
                return json_null();
        out = json_array();
        json_array_foreach(v, i, item)
                if (json_is_string(item))
                        json_array_append(out, item);
        return out;
}

static json_t *nonempty_string_or_null(json_t *v) {
        const char *s = json_string_value(v);
        return s && *s ? json_string(s) : json_null();
}

json_t *oci_config_detail(const OciConfig *c, const char *digest) {
        json_t *cfg = json_object_get(c->root, "config");
        json_t *env = string_array_or_null(json_object_get(cfg, "Env"));
        json_t *labels = json_object_get(cfg, "Labels");

        if (json_is_null(env)) {
                json_decref(env);
                env = json_array();
        }
        return json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:O, s:o}",
                         "digest", digest,
                         "env", env,
                         "cmd", string_array_or_null(json_object_get(cfg, "Cmd")),
                         "entrypoint", string_array_or_null(json_object_get(cfg, "Entrypoint")),
                         "working_dir", nonempty_string_or_null(json_object_get(cfg, "WorkingDir")),
                         "user", nonempty_string_or_null(json_object_get(cfg, "User")),
                         "labels", json_is_object(labels) ? labels : json_null(),
                         "stop_signal", nonempty_string_or_null(json_object_get(cfg, "StopSignal")));
}

void oci_host_platform(OciPlatform *ret) {
        static const struct {
                const char *machine, *arch, *variant;
        } map[] = {
                { "x86_64", "amd64", NULL },   { "aarch64", "arm64", NULL }, { "armv7l", "arm", "v7" },
                { "armv6l", "arm", "v6" },     { "i686", "386", NULL },      { "i386", "386", NULL },
                { "ppc64le", "ppc64le", NULL }, { "s390x", "s390x", NULL },  { "riscv64", "riscv64", NULL },
        };
        static struct utsname u;
        const char *arch = NULL, *variant = NULL;

        if (uname(&u) == 0)
                for (size_t i = 0; i < ELEMENTSOF(map); i++)
                        if (streq(u.machine, map[i].machine)) {
                                arch = map[i].arch;
                                variant = map[i].variant;
                        }
        *ret = (OciPlatform) { (char *) "linux", (char *) (arch ?: u.machine), (char *) variant };
}

int oci_platform_parse(const char *s, OciPlatform *ret) {
        char *parts[3] = {};
        size_t n = 0;
        const char *p = s;

        while (n < 3) {
                size_t len = strcspn(p, "/");
                if (len == 0 || len > 64)
                        break;
                parts[n++] = strndup(p, len);
                p += len;
                if (*p != '/')
                        break;
                p++;
        }
        if (n < 2 || *p != '\0' || p[-1] == '/') {
                for (size_t i = 0; i < n; i++)
                        free(parts[i]);
                return -EINVAL;
        }
        *ret = (OciPlatform) { parts[0], parts[1], parts[2] };
        return 0;
}

void oci_platform_done(OciPlatform *p) {
        free(p->os);
        free(p->architecture);
        free(p->variant);
        *p = (OciPlatform) {};
}

bool oci_descriptor_is_attestation(const OciDescriptor *d) {
        return d->attestation || (streq_ptr(d->platform.os, "unknown") && streq_ptr(d->platform.architecture, "unknown"));
}

int oci_index_select(const OciIndex *idx, const OciPlatform *want, size_t *ret) {
        ssize_t best = -1;

        for (size_t i = 0; i < idx->n_manifests; i++) {
                const OciDescriptor *d = &idx->manifests[i];
                if (oci_descriptor_is_attestation(d) || !streq_ptr(d->platform.os, want->os) ||
                    !streq_ptr(d->platform.architecture, want->architecture))
                        continue;
                if (want->variant) {
                        /* arm64's variant v8 is implied when an entry names none. */
                        if (streq_ptr(d->platform.variant, want->variant)) {
                                best = (ssize_t) i;
                                break;
                        }
                        if (!d->platform.variant && best < 0)
                                best = (ssize_t) i;
                        continue;
                }
                /* Without a wanted variant, prefer an entry that names none. */
                if (best < 0 || (idx->manifests[best].platform.variant && !d->platform.variant))
                        best = (ssize_t) i;
        }
        if (best < 0)
                return -ENOENT;
        *ret = (size_t) best;
        return 0;
}
