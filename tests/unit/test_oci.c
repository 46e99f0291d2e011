/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the OCI document parsers (daemon/image/oci.c): manifests, indexes
 * and configs in OCI and Docker schema 2 form (image-spec manifest.md,
 * image-index.md, config.md), every way a hostile document is refused with
 * the right protocol error, the limits, and platform selection.
 */

#include <check.h>
#include <sys/utsname.h>

#include "oci.h"

#define DIGEST_A "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DIGEST_B "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define DIGEST_C "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define DIGEST_D "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
#define DIGEST_E "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

/* ---- building documents ---- */

static json_t *descriptor(const char *media_type, const char *digest, json_int_t size) {
        json_t *d = json_pack("{s:s, s:I}", "digest", digest, "size", size);
        if (media_type)
                json_object_set_new(d, "mediaType", json_string(media_type));
        return d;
}

static json_t *oci_manifest(size_t n_layers) {
        json_t *layers = json_array();

        for (size_t i = 0; i < n_layers; i++)
                json_array_append_new(layers, descriptor(i % 2 ? OCI_MEDIA_TYPE_LAYER_ZSTD : OCI_MEDIA_TYPE_LAYER_GZIP,
                                                         i % 2 ? DIGEST_C : DIGEST_B, (json_int_t) (1000 + i)));
        return json_pack("{s:i, s:s, s:o, s:o}", "schemaVersion", 2, "mediaType", OCI_MEDIA_TYPE_MANIFEST, "config",
                         descriptor(OCI_MEDIA_TYPE_CONFIG, DIGEST_A, 321), "layers", layers);
}

static char *dump(json_t *doc) {
        char *s = json_dumps(doc, JSON_COMPACT);
        ck_assert_ptr_nonnull(s);
        return s;
}

/* Parses doc (stolen) as a manifest; the result or the error in err. */
static int parse_manifest_json(json_t *doc, OciManifest **ret, MsbError *err) {
        _cleanup_free_ char *s = dump(doc);
        json_decref(doc);
        return oci_manifest_parse(s, strlen(s), ret, err);
}

static void expect_error(int r, MsbError *err, int want_r, ProtoError kind) {
        ck_assert_int_eq(r, want_r);
        ck_assert(err->set);
        ck_assert_int_eq(err->kind, kind);
        ck_assert_str_ne(err->message, "");
}

/* A limit-exceeded error naming limit and max; cleared. */
static void expect_limit(MsbError *err, const char *limit, uint64_t max) {
        ck_assert(err->set);
        ck_assert_int_eq(err->kind, PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_str_eq(json_string_value(json_object_get(err->data, "limit")), limit);
        ck_assert_int_eq(json_integer_value(json_object_get(err->data, "max")), (json_int_t) max);
        msb_error_clear(err);
}

/* Parses a manifest that must be refused; checks the result is untouched. */
static void expect_manifest_refused(json_t *doc, int want_r, ProtoError kind) {
        OciManifest *m = (OciManifest *) 0x1;
        MsbError err = {};

        expect_error(parse_manifest_json(doc, &m, &err), &err, want_r, kind);
        ck_assert_ptr_eq(m, (OciManifest *) 0x1);
        msb_error_clear(&err);
}

/* ---- manifests ---- */

START_TEST(test_manifest_oci) {
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        MsbError err = {};

        ck_assert_int_eq(parse_manifest_json(oci_manifest(3), &m, &err), 0);
        ck_assert(!err.set);
        ck_assert_str_eq(m->media_type, OCI_MEDIA_TYPE_MANIFEST);
        ck_assert_str_eq(m->config.media_type, OCI_MEDIA_TYPE_CONFIG);
        ck_assert_str_eq(m->config.digest, DIGEST_A);
        ck_assert_uint_eq(m->config.size, 321);
        ck_assert_uint_eq(m->n_layers, 3);
        for (size_t i = 0; i < 3; i++) {
                ck_assert_str_eq(m->layers[i].digest, i % 2 ? DIGEST_C : DIGEST_B);
                ck_assert_uint_eq(m->layers[i].size, 1000 + i);
                ck_assert_str_eq(m->layers[i].media_type, i % 2 ? OCI_MEDIA_TYPE_LAYER_ZSTD : OCI_MEDIA_TYPE_LAYER_GZIP);
        }
}
END_TEST

START_TEST(test_manifest_docker_schema2) {
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        static const char doc[] =
                "{\"schemaVersion\": 2,"
                " \"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\","
                " \"config\": {\"mediaType\": \"application/vnd.docker.container.image.v1+json\","
                "   \"size\": 1469, \"digest\": \"" DIGEST_A "\"},"
                " \"layers\": [{\"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar.gzip\","
                "   \"size\": 3623807, \"digest\": \"" DIGEST_B "\"},"
                "  {\"mediaType\": \"application/vnd.docker.image.rootfs.diff.tar\","
                "   \"size\": 10240, \"digest\": \"" DIGEST_C "\"}]}";
        MsbError err = {};

        ck_assert_int_eq(oci_manifest_parse(doc, strlen(doc), &m, &err), 0);
        ck_assert_str_eq(m->media_type, DOCKER_MEDIA_TYPE_MANIFEST);
        ck_assert_str_eq(m->config.media_type, DOCKER_MEDIA_TYPE_CONFIG);
        ck_assert_uint_eq(m->config.size, 1469);
        ck_assert_uint_eq(m->n_layers, 2);
        ck_assert_str_eq(m->layers[0].media_type, DOCKER_MEDIA_TYPE_LAYER_GZIP);
        ck_assert_uint_eq(m->layers[0].size, 3623807);
        ck_assert_str_eq(m->layers[1].digest, DIGEST_C);
}
END_TEST

START_TEST(test_manifest_media_type_omitted) {
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        json_t *doc = oci_manifest(1);
        MsbError err = {};

        /* manifest.md: mediaType is reserved and SHOULD be set, but older
         * writers omit it; such a document is an OCI manifest. */
        json_object_del(doc, "mediaType");
        ck_assert_int_eq(parse_manifest_json(doc, &m, &err), 0);
        ck_assert_str_eq(m->media_type, OCI_MEDIA_TYPE_MANIFEST);
}
END_TEST

START_TEST(test_manifest_schema_version) {
        json_t *doc;

        doc = oci_manifest(1);
        json_object_del(doc, "schemaVersion");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        /* Schema 1 (signed manifests) is not supported. */
        doc = oci_manifest(1);
        json_object_set_new(doc, "schemaVersion", json_integer(1));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_set_new(doc, "schemaVersion", json_string("2"));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);
}
END_TEST

START_TEST(test_manifest_wrong_media_types) {
        OciManifest *m = NULL;
        MsbError err = {};
        json_t *doc;

        /* An index is not a manifest. */
        doc = oci_manifest(1);
        json_object_set_new(doc, "mediaType", json_string(OCI_MEDIA_TYPE_INDEX));
        ck_assert_int_eq(parse_manifest_json(doc, &m, &err), -EMEDIUMTYPE);
        ck_assert_int_eq(err.kind, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "media_type")), OCI_MEDIA_TYPE_INDEX);
        msb_error_clear(&err);

        /* An artifact (a Helm chart, say) has a config that is no image config. */
        doc = oci_manifest(1);
        json_object_set_new(json_object_get(doc, "config"), "mediaType",
                            json_string("application/vnd.cncf.helm.config.v1+json"));
        expect_manifest_refused(doc, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE);

        /* A layer that is no filesystem tarball. */
        doc = oci_manifest(2);
        json_object_set_new(json_array_get(json_object_get(doc, "layers"), 1), "mediaType",
                            json_string("application/vnd.oci.image.layer.v1.tar+bzip2"));
        ck_assert_int_eq(parse_manifest_json(doc, &m, &err), -EMEDIUMTYPE);
        ck_assert_int_eq(err.kind, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE);
        ck_assert_msg(strstr(err.message, "layer 1"), "message '%s'", err.message);
        msb_error_clear(&err);

        /* A mediaType of the wrong JSON type is not "omitted" (manifest.md:
         * mediaType is a string): the document is malformed. */
        doc = oci_manifest(1);
        json_object_set_new(doc, "mediaType", json_integer(5));
        int r = parse_manifest_json(doc, &m, &err);
        oci_manifest_free(m);
        ck_assert_msg(r < 0, "a manifest with \"mediaType\": 5 was accepted");
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_manifest_missing_fields) {
        json_t *doc;

        doc = oci_manifest(1);
        json_object_del(doc, "config");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_del(doc, "layers");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_del(json_object_get(doc, "config"), "digest");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_del(json_object_get(doc, "config"), "size");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(2);
        json_object_del(json_array_get(json_object_get(doc, "layers"), 1), "digest");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(2);
        json_object_del(json_array_get(json_object_get(doc, "layers"), 0), "size");
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);
}
END_TEST

START_TEST(test_manifest_wrong_types) {
        json_t *doc;

        doc = oci_manifest(1);
        json_object_set_new(doc, "layers", json_object());
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_set_new(doc, "config", json_string(DIGEST_A));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_array_append_new(json_object_get(doc, "layers"), json_string(DIGEST_B));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_set_new(json_object_get(doc, "config"), "size", json_string("321"));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_set_new(json_object_get(doc, "config"), "size", json_real(321.0));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_set_new(json_array_get(json_object_get(doc, "layers"), 0), "size", json_integer(-1));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_manifest(1);
        json_object_set_new(json_object_get(doc, "config"), "digest", json_integer(1));
        expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);
}
END_TEST

START_TEST(test_manifest_bad_digests) {
        static const char *const bad[] = {
                "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "sha256:aaaa",
                "sha512:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "sha256:../../../../etc/passwd",
                "",
        };

        /* A digest becomes a file name in the store: anything but sha256 hex is refused. */
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_t *doc = oci_manifest(1);
                json_object_set_new(json_object_get(doc, "config"), "digest", json_string(bad[i]));
                expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

                doc = oci_manifest(1);
                json_object_set_new(json_array_get(json_object_get(doc, "layers"), 0), "digest", json_string(bad[i]));
                expect_manifest_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);
        }
}
END_TEST

START_TEST(test_manifest_not_json) {
        static const char *const bad[] = {
                "", "{", "[]", "null", "\"manifest\"", "{\"schemaVersion\": 2,}", "{\"a\":\"\xff\xfe\"}",
                /* Duplicate keys make a document mean two things. */
                "{\"schemaVersion\": 2, \"schemaVersion\": 2, \"config\": {}, \"layers\": []}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                OciManifest *m = NULL;
                MsbError err = {};
                expect_error(oci_manifest_parse(bad[i], strlen(bad[i]), &m, &err), &err, -EBADMSG,
                             PROTO_ERROR_INVALID_IMAGE);
                ck_assert_ptr_null(m);
                msb_error_clear(&err);
        }
}
END_TEST

START_TEST(test_manifest_layer_limit) {
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        MsbError err = {};

        /* README "The protocol", limits: 256 layers per image. */
        ck_assert_uint_eq(OCI_LAYERS_MAX, 256);
        ck_assert_int_eq(parse_manifest_json(oci_manifest(OCI_LAYERS_MAX), &m, &err), 0);
        ck_assert_uint_eq(m->n_layers, OCI_LAYERS_MAX);

        OciManifest *m2 = NULL;
        ck_assert_int_eq(parse_manifest_json(oci_manifest(OCI_LAYERS_MAX + 1), &m2, &err), -E2BIG);
        ck_assert_ptr_null(m2);
        expect_limit(&err, "layers_per_image", OCI_LAYERS_MAX);
}
END_TEST

START_TEST(test_manifest_size_limit) {
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        _cleanup_free_ char *doc = NULL, *buf = NULL;
        MsbError err = {};
        size_t n;

        /* README "The protocol", limits: a manifest is at most 4 MiB; whitespace counts.
         * What reaches the client is the error kind and its data. */
        ck_assert_uint_eq(OCI_MANIFEST_MAX_BYTES, 4 * MiB);
        json_auto_t *small = oci_manifest(2);
        doc = dump(small);
        n = strlen(doc);
        buf = malloc(OCI_MANIFEST_MAX_BYTES + 1);
        ck_assert_ptr_nonnull(buf);
        memcpy(buf, doc, n);
        memset(buf + n, ' ', OCI_MANIFEST_MAX_BYTES + 1 - n);

        ck_assert_int_eq(oci_manifest_parse(buf, OCI_MANIFEST_MAX_BYTES, &m, &err), 0);
        ck_assert_uint_eq(m->n_layers, 2);

        OciManifest *m2 = NULL;
        ck_assert_int_lt(oci_manifest_parse(buf, OCI_MANIFEST_MAX_BYTES + 1, &m2, &err), 0);
        ck_assert_ptr_null(m2);
        expect_limit(&err, "manifest_bytes", OCI_MANIFEST_MAX_BYTES);

        /* A config the manifest says is larger than the limit is refused before it is fetched. */
        json_t *big = oci_manifest(1);
        json_object_set_new(json_object_get(big, "config"), "size", json_integer(OCI_CONFIG_MAX_BYTES + 1));
        expect_manifest_refused(big, -EFBIG, PROTO_ERROR_LIMIT_EXCEEDED);
}
END_TEST

START_TEST(test_manifest_free_null) {
        ck_assert_ptr_null(oci_manifest_free(NULL));
        ck_assert_ptr_null(oci_index_free(NULL));
        ck_assert_ptr_null(oci_config_free(NULL));
}
END_TEST

/* ---- indexes ---- */

static json_t *index_entry(const char *digest, const char *os, const char *arch, const char *variant) {
        json_t *e = descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, 500);
        json_t *p = json_pack("{s:s, s:s}", "os", os, "architecture", arch);
        if (variant)
                json_object_set_new(p, "variant", json_string(variant));
        json_object_set_new(e, "platform", p);
        return e;
}

static json_t *attestation_entry(const char *digest, const char *os, const char *arch, const char *of) {
        json_t *e = index_entry(digest, os, arch, NULL);
        json_object_set_new(e, "annotations",
                            json_pack("{s:s, s:s}", "vnd.docker.reference.type", "attestation-manifest",
                                      "vnd.docker.reference.digest", of));
        return e;
}

static OciIndex *parse_index_json(json_t *doc) {
        _cleanup_free_ char *s = dump(doc);
        OciIndex *idx = NULL;
        MsbError err = {};
        int r;

        json_decref(doc);
        r = oci_index_parse(s, strlen(s), &idx, &err);
        ck_assert_msg(r == 0, "index: %d %s", r, err.message);
        return idx;
}

static OciIndex *index_of(json_t *entries) {
        return parse_index_json(
                json_pack("{s:i, s:s, s:o}", "schemaVersion", 2, "mediaType", OCI_MEDIA_TYPE_INDEX, "manifests", entries));
}

START_TEST(test_index_parse) {
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        json_t *entries = json_pack("[o, o, o]", index_entry(DIGEST_A, "linux", "amd64", NULL),
                                    index_entry(DIGEST_B, "linux", "arm64", "v8"),
                                    attestation_entry(DIGEST_C, "unknown", "unknown", DIGEST_A));

        json_object_set_new(json_array_get(entries, 0), "annotations",
                            json_pack("{s:s, s:s}", "org.opencontainers.image.ref.name", "3.20",
                                      "io.containerd.image.name", "docker.io/library/alpine:3.20"));
        idx = index_of(entries);
        ck_assert_uint_eq(idx->n_manifests, 3);
        ck_assert_str_eq(idx->manifests[0].digest, DIGEST_A);
        ck_assert_str_eq(idx->manifests[0].media_type, OCI_MEDIA_TYPE_MANIFEST);
        ck_assert_uint_eq(idx->manifests[0].size, 500);
        ck_assert_str_eq(idx->manifests[0].platform.os, "linux");
        ck_assert_str_eq(idx->manifests[0].platform.architecture, "amd64");
        ck_assert_ptr_null(idx->manifests[0].platform.variant);
        ck_assert_str_eq(idx->manifests[0].ref_name, "3.20");
        ck_assert_str_eq(idx->manifests[0].image_name, "docker.io/library/alpine:3.20");
        ck_assert(!idx->manifests[0].attestation);
        ck_assert_str_eq(idx->manifests[1].platform.variant, "v8");
        ck_assert_ptr_null(idx->manifests[1].ref_name);
        ck_assert(idx->manifests[2].attestation);
}
END_TEST

START_TEST(test_index_docker_manifest_list) {
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        static const char doc[] =
                "{\"schemaVersion\": 2,"
                " \"mediaType\": \"application/vnd.docker.distribution.manifest.list.v2+json\","
                " \"manifests\": [{\"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\","
                "   \"size\": 528, \"digest\": \"" DIGEST_D "\","
                "   \"platform\": {\"architecture\": \"arm\", \"os\": \"linux\", \"variant\": \"v7\"}}]}";
        MsbError err = {};

        ck_assert_int_eq(oci_index_parse(doc, strlen(doc), &idx, &err), 0);
        ck_assert_uint_eq(idx->n_manifests, 1);
        ck_assert_str_eq(idx->manifests[0].media_type, DOCKER_MEDIA_TYPE_MANIFEST);
        ck_assert_str_eq(idx->manifests[0].platform.architecture, "arm");
        ck_assert_str_eq(idx->manifests[0].platform.variant, "v7");
}
END_TEST

START_TEST(test_index_refused) {
        static const char *const bad[] = {
                "{\"schemaVersion\": 2}",
                "{\"schemaVersion\": 2, \"manifests\": {}}",
                "{\"schemaVersion\": 2, \"manifests\": [\"" DIGEST_A "\"]}",
                "{\"schemaVersion\": 2, \"manifests\": [{\"digest\": \"sha256:00\", \"size\": 1}]}",
                "{\"schemaVersion\": 2, \"manifests\": [{\"digest\": \"" DIGEST_A "\"}]}",
                "{\"schemaVersion\": 2, \"manifests\": [{\"digest\": \"" DIGEST_A "\", \"size\": -5}]}",
                "[]",
                "not json",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                OciIndex *idx = NULL;
                MsbError err = {};
                int r = oci_index_parse(bad[i], strlen(bad[i]), &idx, &err);
                ck_assert_msg(r == -EBADMSG, "%s: %d", bad[i], r);
                ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_IMAGE);
                ck_assert_ptr_null(idx);
                msb_error_clear(&err);
        }

        /* The size limit holds for indexes too. */
        _cleanup_free_ char *big = malloc(OCI_MANIFEST_MAX_BYTES + 1);
        OciIndex *idx = NULL;
        MsbError err = {};
        ck_assert_ptr_nonnull(big);
        memset(big, ' ', OCI_MANIFEST_MAX_BYTES + 1);
        ck_assert_int_lt(oci_index_parse(big, OCI_MANIFEST_MAX_BYTES + 1, &idx, &err), 0);
        expect_limit(&err, "manifest_bytes", OCI_MANIFEST_MAX_BYTES);
        ck_assert_ptr_null(idx);
}
END_TEST

static void expect_select(const OciIndex *idx, const char *platform, int want) {
        OciPlatform p = {};
        size_t got = 99;

        ck_assert_int_eq(oci_platform_parse(platform, &p), 0);
        if (want < 0) {
                ck_assert_int_eq(oci_index_select(idx, &p, &got), -ENOENT);
                ck_assert_uint_eq(got, 99);
        } else {
                ck_assert_int_eq(oci_index_select(idx, &p, &got), 0);
                ck_assert_msg(got == (size_t) want, "%s: entry %zu chosen, not %d", platform, got, want);
        }
        oci_platform_done(&p);
}

START_TEST(test_select_amd64) {
        _cleanup_(oci_index_freep) OciIndex *idx = index_of(json_pack(
                "[o, o, o, o, o]", index_entry(DIGEST_A, "windows", "amd64", NULL),
                attestation_entry(DIGEST_B, "unknown", "unknown", DIGEST_C), index_entry(DIGEST_C, "linux", "amd64", NULL),
                index_entry(DIGEST_D, "linux", "arm64", "v8"), index_entry(DIGEST_E, "linux", "arm", "v7")));

        expect_select(idx, "linux/amd64", 2);
        expect_select(idx, "windows/amd64", 0);
        expect_select(idx, "linux/arm64", 3);
        expect_select(idx, "linux/arm/v7", 4);
        expect_select(idx, "linux/s390x", -1);
        expect_select(idx, "linux/arm/v6", -1);
        /* The attestation's own platform never matches anything. */
        expect_select(idx, "unknown/unknown", -1);
}
END_TEST

START_TEST(test_select_arm64_variants) {
        /* Without a wanted variant, an entry that names none is preferred,
         * wherever it is in the index. */
        _cleanup_(oci_index_freep) OciIndex *both = index_of(json_pack(
                "[o, o, o]", index_entry(DIGEST_A, "linux", "amd64", NULL), index_entry(DIGEST_B, "linux", "arm64", "v8"),
                index_entry(DIGEST_C, "linux", "arm64", NULL)));
        expect_select(both, "linux/arm64", 2);
        /* With one, the entry that names it. */
        expect_select(both, "linux/arm64/v8", 1);
        /* A variant no entry names falls back to the entry without one. */
        expect_select(both, "linux/arm64/v9", 2);

        _cleanup_(oci_index_freep) OciIndex *plain = index_of(
                json_pack("[o]", index_entry(DIGEST_C, "linux", "arm64", NULL)));
        expect_select(plain, "linux/arm64/v8", 0);
        expect_select(plain, "linux/arm64", 0);

        _cleanup_(oci_index_freep) OciIndex *v8 = index_of(json_pack("[o]", index_entry(DIGEST_B, "linux", "arm64", "v8")));
        expect_select(v8, "linux/arm64", 0);
        expect_select(v8, "linux/arm64/v8", 0);
        /* Another variant is another CPU: no fallback to it. */
        expect_select(v8, "linux/arm64/v9", -1);

        /* arm v6 and v7 are different binaries. */
        _cleanup_(oci_index_freep) OciIndex *arm = index_of(json_pack(
                "[o, o]", index_entry(DIGEST_D, "linux", "arm", "v7"), index_entry(DIGEST_E, "linux", "arm", "v6")));
        expect_select(arm, "linux/arm/v6", 1);
        expect_select(arm, "linux/arm/v7", 0);
}
END_TEST

START_TEST(test_select_skips_attestations) {
        /* Attestations that claim a real platform, listed first, still lose. */
        _cleanup_(oci_index_freep) OciIndex *idx = index_of(
                json_pack("[o, o, o]", attestation_entry(DIGEST_A, "linux", "amd64", DIGEST_B),
                          attestation_entry(DIGEST_C, "linux", "arm64", DIGEST_D),
                          index_entry(DIGEST_B, "linux", "amd64", NULL)));
        expect_select(idx, "linux/amd64", 2);
        expect_select(idx, "linux/arm64", -1);

        _cleanup_(oci_index_freep) OciIndex *empty = index_of(json_array());
        expect_select(empty, "linux/amd64", -1);
}
END_TEST

START_TEST(test_select_entry_without_platform) {
        /* An index entry without a platform (a single-image layout) matches no platform. */
        json_t *e = descriptor(OCI_MEDIA_TYPE_MANIFEST, DIGEST_A, 10);
        _cleanup_(oci_index_freep) OciIndex *idx = index_of(json_pack("[o]", e));
        ck_assert_ptr_null(idx->manifests[0].platform.os);
        expect_select(idx, "linux/amd64", -1);
}
END_TEST

/* ---- platforms ---- */

START_TEST(test_platform_parse) {
        OciPlatform p = {};

        ck_assert_int_eq(oci_platform_parse("linux/amd64", &p), 0);
        ck_assert_str_eq(p.os, "linux");
        ck_assert_str_eq(p.architecture, "amd64");
        ck_assert_ptr_null(p.variant);
        oci_platform_done(&p);
        ck_assert_ptr_null(p.os);

        ck_assert_int_eq(oci_platform_parse("linux/arm64/v8", &p), 0);
        ck_assert_str_eq(p.os, "linux");
        ck_assert_str_eq(p.architecture, "arm64");
        ck_assert_str_eq(p.variant, "v8");
        oci_platform_done(&p);

        char longest[3 * 64 + 3];
        memset(longest, 'a', sizeof(longest));
        longest[64] = longest[129] = '/';
        longest[194] = '\0';
        ck_assert_int_eq(oci_platform_parse(longest, &p), 0);
        ck_assert_uint_eq(strlen(p.variant), 64);
        oci_platform_done(&p);
}
END_TEST

START_TEST(test_platform_parse_invalid) {
        char too_long[80];
        static const char *const bad[] = {
                "", "linux", "linux/", "/amd64", "/", "//", "linux//v8", "linux/arm64/v8/extra", "linux/arm64/v8/",
                "linux/amd64/",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                OciPlatform p = { (char *) "untouched", NULL, NULL };
                ck_assert_msg(oci_platform_parse(bad[i], &p) == -EINVAL, "'%s' parsed", bad[i]);
                ck_assert_str_eq(p.os, "untouched");
        }

        /* A component longer than 64 bytes is no platform name. */
        memset(too_long, 'a', sizeof(too_long));
        memcpy(too_long, "linux/", 6);
        too_long[6 + 65] = '\0';
        OciPlatform p = {};
        ck_assert_int_eq(oci_platform_parse(too_long, &p), -EINVAL);
}
END_TEST

START_TEST(test_host_platform) {
        OciPlatform p = {};
        struct utsname u;

        oci_host_platform(&p);
        ck_assert_str_eq(p.os, "linux");
        ck_assert_ptr_nonnull(p.architecture);
        ck_assert_int_eq(uname(&u), 0);
        /* GOARCH spelling, as image indexes use. */
        if (streq(u.machine, "x86_64")) {
                ck_assert_str_eq(p.architecture, "amd64");
                ck_assert_ptr_null(p.variant);
        } else if (streq(u.machine, "aarch64"))
                ck_assert_str_eq(p.architecture, "arm64");
}
END_TEST

/* ---- document kinds ---- */

START_TEST(test_document_media_type) {
        static const struct {
                const char *doc;
                const char *want;
        } cases[] = {
                { "{\"mediaType\":\"" OCI_MEDIA_TYPE_INDEX "\",\"manifests\":[]}", OCI_MEDIA_TYPE_INDEX },
                { "{\"mediaType\":\"" DOCKER_MEDIA_TYPE_MANIFEST_LIST "\",\"manifests\":[]}",
                  DOCKER_MEDIA_TYPE_MANIFEST_LIST },
                { "{\"mediaType\":\"" OCI_MEDIA_TYPE_MANIFEST "\",\"config\":{}}", OCI_MEDIA_TYPE_MANIFEST },
                { "{\"mediaType\":\"" DOCKER_MEDIA_TYPE_MANIFEST "\"}", DOCKER_MEDIA_TYPE_MANIFEST },
                /* Omitted: the shape tells (image-spec image-index.md and manifest.md). */
                { "{\"schemaVersion\":2,\"manifests\":[]}", OCI_MEDIA_TYPE_INDEX },
                { "{\"schemaVersion\":2,\"config\":{},\"layers\":[]}", OCI_MEDIA_TYPE_MANIFEST },
                /* A declared type wins over the shape, and unknown ones are not guessed. */
                { "{\"mediaType\":\"application/vnd.oci.artifact.manifest.v1+json\",\"config\":{}}", NULL },
                { "{\"schemaVersion\":2}", NULL },
                { "[]", NULL },
                { "not json", NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *got = oci_document_media_type(cases[i].doc, strlen(cases[i].doc));
                ck_assert_msg(streq_ptr(got, cases[i].want), "%s: %s", cases[i].doc, got ?: "NULL");
        }

        ck_assert(oci_media_type_is_index(OCI_MEDIA_TYPE_INDEX));
        ck_assert(oci_media_type_is_index(DOCKER_MEDIA_TYPE_MANIFEST_LIST));
        ck_assert(!oci_media_type_is_index(OCI_MEDIA_TYPE_MANIFEST));
        ck_assert(!oci_media_type_is_index(NULL));
        ck_assert(oci_media_type_is_manifest(DOCKER_MEDIA_TYPE_MANIFEST));
        ck_assert(!oci_media_type_is_manifest(OCI_MEDIA_TYPE_CONFIG));
        ck_assert(oci_media_type_is_layer(OCI_MEDIA_TYPE_LAYER_TAR));
        ck_assert(oci_media_type_is_layer(DOCKER_MEDIA_TYPE_LAYER_GZIP));
        /* A layer is what the converter reads: its list is the one list. */
        ck_assert(oci_media_type_is_layer("application/vnd.docker.image.rootfs.diff.tar.zstd"));
        ck_assert(!oci_media_type_is_layer(NULL));
        ck_assert(!oci_media_type_is_layer(OCI_MEDIA_TYPE_CONFIG));
        ck_assert(!oci_media_type_is_layer("application/vnd.oci.image.layer.v1.tar+gzip "));
}
END_TEST

/* ---- configs ---- */

static json_t *oci_config(size_t n_diff_ids) {
        json_t *diff_ids = json_array();
        static const char *const ids[] = { DIGEST_A, DIGEST_B, DIGEST_C };

        for (size_t i = 0; i < n_diff_ids; i++)
                json_array_append_new(diff_ids, json_string(ids[i % 3]));
        return json_pack("{s:s, s:s, s:s, s:{s:[s, s], s:[s], s:n, s:s, s:s, s:{s:s}, s:s}, s:{s:s, s:o}}",
                         "architecture", "arm64", "os", "linux", "variant", "v8",
                         "config", "Env", "PATH=/usr/bin", "LANG=C", "Cmd", "/bin/sh", "Entrypoint", "WorkingDir",
                         "/srv", "User", "1000:1000", "Labels", "org.example", "yes", "StopSignal", "SIGTERM",
                         "rootfs", "type", "layers", "diff_ids", diff_ids);
}

static int parse_config_json(json_t *doc, OciConfig **ret, MsbError *err) {
        _cleanup_free_ char *s = dump(doc);
        json_decref(doc);
        return oci_config_parse(s, strlen(s), ret, err);
}

static void expect_config_refused(json_t *doc, int want_r, ProtoError kind) {
        OciConfig *c = NULL;
        MsbError err = {};

        expect_error(parse_config_json(doc, &c, &err), &err, want_r, kind);
        ck_assert_ptr_null(c);
        msb_error_clear(&err);
}

START_TEST(test_config_parse) {
        _cleanup_(oci_config_freep) OciConfig *c = NULL;
        json_auto_t *detail = NULL;
        MsbError err = {};

        ck_assert_int_eq(parse_config_json(oci_config(3), &c, &err), 0);
        ck_assert_str_eq(c->platform.os, "linux");
        ck_assert_str_eq(c->platform.architecture, "arm64");
        ck_assert_str_eq(c->platform.variant, "v8");
        ck_assert_uint_eq(c->n_diff_ids, 3);
        ck_assert_str_eq(c->diff_ids[0], DIGEST_A);
        ck_assert_str_eq(c->diff_ids[1], DIGEST_B);
        ck_assert_str_eq(c->diff_ids[2], DIGEST_C);

        detail = oci_config_detail(c, DIGEST_E);
        ck_assert_ptr_nonnull(detail);
        ck_assert_str_eq(json_string_value(json_object_get(detail, "digest")), DIGEST_E);
        ck_assert_uint_eq(json_array_size(json_object_get(detail, "env")), 2);
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(detail, "env"), 1)), "LANG=C");
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(detail, "cmd"), 0)), "/bin/sh");
        ck_assert(json_is_null(json_object_get(detail, "entrypoint")));
        ck_assert_str_eq(json_string_value(json_object_get(detail, "working_dir")), "/srv");
        ck_assert_str_eq(json_string_value(json_object_get(detail, "user")), "1000:1000");
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(detail, "labels"), "org.example")), "yes");
        ck_assert_str_eq(json_string_value(json_object_get(detail, "stop_signal")), "SIGTERM");
        ck_assert_uint_eq(json_object_size(detail), 8);
}
END_TEST

START_TEST(test_config_minimal) {
        _cleanup_(oci_config_freep) OciConfig *c = NULL;
        json_auto_t *detail = NULL;
        static const char doc[] = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},\"config\":{\"WorkingDir\":\"\"}}";
        MsbError err = {};

        /* Nothing but the rootfs: no platform, no layers (FROM scratch with
         * nothing added), and a detail of nulls with an empty env. */
        ck_assert_int_eq(oci_config_parse(doc, strlen(doc), &c, &err), 0);
        ck_assert_ptr_null(c->platform.os);
        ck_assert_ptr_null(c->platform.architecture);
        ck_assert_uint_eq(c->n_diff_ids, 0);
        detail = oci_config_detail(c, DIGEST_A);
        ck_assert(json_is_array(json_object_get(detail, "env")));
        ck_assert_uint_eq(json_array_size(json_object_get(detail, "env")), 0);
        ck_assert(json_is_null(json_object_get(detail, "cmd")));
        ck_assert(json_is_null(json_object_get(detail, "working_dir")));
        ck_assert(json_is_null(json_object_get(detail, "user")));
        ck_assert(json_is_null(json_object_get(detail, "labels")));
        ck_assert(json_is_null(json_object_get(detail, "stop_signal")));
}
END_TEST

START_TEST(test_config_refused) {
        json_t *doc;

        doc = oci_config(1);
        json_object_del(doc, "rootfs");
        expect_config_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_config(1);
        json_object_set_new(json_object_get(doc, "rootfs"), "type", json_string("squashfs"));
        expect_config_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_config(1);
        json_object_del(json_object_get(doc, "rootfs"), "diff_ids");
        expect_config_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_config(1);
        json_object_set_new(json_object_get(doc, "rootfs"), "diff_ids", json_string(DIGEST_A));
        expect_config_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_config(2);
        json_array_set_new(json_object_get(json_object_get(doc, "rootfs"), "diff_ids"), 1, json_string("sha256:xyz"));
        expect_config_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        doc = oci_config(2);
        json_array_set_new(json_object_get(json_object_get(doc, "rootfs"), "diff_ids"), 0, json_integer(3));
        expect_config_refused(doc, -EBADMSG, PROTO_ERROR_INVALID_IMAGE);

        static const char *const not_json[] = { "", "[]", "{\"rootfs\":", "{\"a\":1,\"a\":2}" };
        for (size_t i = 0; i < ELEMENTSOF(not_json); i++) {
                OciConfig *c = NULL;
                MsbError err = {};
                expect_error(oci_config_parse(not_json[i], strlen(not_json[i]), &c, &err), &err, -EBADMSG,
                             PROTO_ERROR_INVALID_IMAGE);
                ck_assert_ptr_null(c);
                msb_error_clear(&err);
        }
}
END_TEST

START_TEST(test_config_limits) {
        _cleanup_(oci_config_freep) OciConfig *c = NULL;
        MsbError err = {};

        ck_assert_int_eq(parse_config_json(oci_config(OCI_LAYERS_MAX), &c, &err), 0);
        ck_assert_uint_eq(c->n_diff_ids, OCI_LAYERS_MAX);
        OciConfig *c1 = NULL;
        ck_assert_int_eq(parse_config_json(oci_config(OCI_LAYERS_MAX + 1), &c1, &err), -E2BIG);
        ck_assert_ptr_null(c1);
        expect_limit(&err, "layers_per_image", OCI_LAYERS_MAX);

        _cleanup_free_ char *big = malloc(OCI_CONFIG_MAX_BYTES + 1);
        OciConfig *c2 = NULL;
        ck_assert_ptr_nonnull(big);
        memset(big, ' ', OCI_CONFIG_MAX_BYTES + 1);
        ck_assert_int_lt(oci_config_parse(big, OCI_CONFIG_MAX_BYTES + 1, &c2, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_LIMIT_EXCEEDED);
        ck_assert_ptr_null(c2);
        msb_error_clear(&err);
}
END_TEST

static Suite *oci_suite(void) {
        Suite *s = suite_create("oci");
        TCase *tc = tcase_create("manifest");

        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_manifest_oci);
        tcase_add_test(tc, test_manifest_docker_schema2);
        tcase_add_test(tc, test_manifest_media_type_omitted);
        tcase_add_test(tc, test_manifest_schema_version);
        tcase_add_test(tc, test_manifest_wrong_media_types);
        tcase_add_test(tc, test_manifest_missing_fields);
        tcase_add_test(tc, test_manifest_wrong_types);
        tcase_add_test(tc, test_manifest_bad_digests);
        tcase_add_test(tc, test_manifest_not_json);
        tcase_add_test(tc, test_manifest_layer_limit);
        tcase_add_test(tc, test_manifest_size_limit);
        tcase_add_test(tc, test_manifest_free_null);
        suite_add_tcase(s, tc);

        tc = tcase_create("index");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_index_parse);
        tcase_add_test(tc, test_index_docker_manifest_list);
        tcase_add_test(tc, test_index_refused);
        tcase_add_test(tc, test_select_amd64);
        tcase_add_test(tc, test_select_arm64_variants);
        tcase_add_test(tc, test_select_skips_attestations);
        tcase_add_test(tc, test_select_entry_without_platform);
        tcase_add_test(tc, test_platform_parse);
        tcase_add_test(tc, test_platform_parse_invalid);
        tcase_add_test(tc, test_host_platform);
        tcase_add_test(tc, test_document_media_type);
        suite_add_tcase(s, tc);

        tc = tcase_create("config");
        tcase_set_timeout(tc, 30);
        tcase_add_test(tc, test_config_parse);
        tcase_add_test(tc, test_config_minimal);
        tcase_add_test(tc, test_config_refused);
        tcase_add_test(tc, test_config_limits);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(oci_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
