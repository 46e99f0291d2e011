/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for the OCI document parsers (daemon/image/oci.c), which read
 * manifests, indexes and configs from archives and registries. The same
 * bytes go to every parser. Besides memory errors it checks their promises:
 * a refusal is a negative errno with a protocol error set and the result
 * untouched; what is accepted obeys the limits and carries only valid
 * digests, and platform selection only picks matching, non-attestation
 * entries.
 */

#include "fuzz.h"
#include "oci.h"

/* Platform strings longer than this are not worth feeding to the parser. */
#define FUZZ_OCI_PLATFORM_MAX 256

static void check_refusal(int r, const MsbError *err) {
        FUZZ_CHECK(r < 0);
        FUZZ_CHECK(err->set);
        FUZZ_CHECK(err->kind == PROTO_ERROR_INVALID_IMAGE || err->kind == PROTO_ERROR_LIMIT_EXCEEDED ||
                   err->kind == PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE);
        FUZZ_CHECK(err->message[0] != '\0');
}

static void check_descriptor(const OciDescriptor *d) {
        FUZZ_CHECK(digest_is_valid(d->digest));
        FUZZ_CHECK(d->size <= (uint64_t) INT64_MAX);
}

static void fuzz_manifest(const uint8_t *data, size_t size) {
        OciManifest *m = NULL;
        MsbError err = {};
        int r = oci_manifest_parse(data, size, &m, &err);

        if (r < 0) {
                check_refusal(r, &err);
                FUZZ_CHECK(!m);
                msb_error_clear(&err);
                return;
        }
        FUZZ_CHECK(!err.set);
        FUZZ_CHECK(oci_media_type_is_manifest(m->media_type));
        check_descriptor(&m->config);
        FUZZ_CHECK(m->config.size <= OCI_CONFIG_MAX_BYTES);
        FUZZ_CHECK(m->n_layers <= OCI_LAYERS_MAX);
        for (size_t i = 0; i < m->n_layers; i++) {
                check_descriptor(&m->layers[i]);
                FUZZ_CHECK(!m->layers[i].media_type || oci_media_type_is_layer(m->layers[i].media_type));
        }
        oci_manifest_free(m);
}

static void fuzz_index(const uint8_t *data, size_t size) {
        static const char *const platforms[] = { "linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v7" };
        OciIndex *idx = NULL;
        MsbError err = {};
        int r = oci_index_parse(data, size, &idx, &err);

        if (r < 0) {
                check_refusal(r, &err);
                FUZZ_CHECK(!idx);
                msb_error_clear(&err);
                return;
        }
        for (size_t i = 0; i < idx->n_manifests; i++)
                check_descriptor(&idx->manifests[i]);

        for (size_t k = 0; k <= ELEMENTSOF(platforms); k++) {
                OciPlatform want = {};
                size_t chosen = SIZE_MAX;

                if (k < ELEMENTSOF(platforms))
                        FUZZ_CHECK(oci_platform_parse(platforms[k], &want) == 0);
                else {
                        oci_host_platform(&want);
                        want.os = strdup(want.os);
                        want.architecture = strdup(want.architecture);
                        want.variant = want.variant ? strdup(want.variant) : NULL;
                }
                r = oci_index_select(idx, &want, &chosen);
                if (r == 0) {
                        const OciDescriptor *d;
                        FUZZ_CHECK(chosen < idx->n_manifests);
                        d = &idx->manifests[chosen];
                        FUZZ_CHECK(!d->attestation);
                        FUZZ_CHECK(streq_ptr(d->platform.os, want.os));
                        FUZZ_CHECK(streq_ptr(d->platform.architecture, want.architecture));
                        /* A wanted variant is matched exactly, or by an entry naming none. */
                        if (want.variant && d->platform.variant)
                                FUZZ_CHECK(streq(d->platform.variant, want.variant));
                } else {
                        FUZZ_CHECK(r == -ENOENT);
                        FUZZ_CHECK(chosen == SIZE_MAX);
                        /* No entry may have matched exactly. */
                        for (size_t i = 0; i < idx->n_manifests; i++) {
                                const OciDescriptor *d = &idx->manifests[i];
                                FUZZ_CHECK(d->attestation || !streq_ptr(d->platform.os, want.os) ||
                                           !streq_ptr(d->platform.architecture, want.architecture) ||
                                           !streq_ptr(d->platform.variant, want.variant));
                        }
                }
                oci_platform_done(&want);
        }
        oci_index_free(idx);
}

static void fuzz_config(const uint8_t *data, size_t size) {
        OciConfig *c = NULL;
        MsbError err = {};
        int r = oci_config_parse(data, size, &c, &err);

        if (r < 0) {
                check_refusal(r, &err);
                FUZZ_CHECK(!c);
                msb_error_clear(&err);
                return;
        }
        FUZZ_CHECK(c->n_diff_ids <= OCI_LAYERS_MAX);
        for (size_t i = 0; i < c->n_diff_ids; i++)
                FUZZ_CHECK(digest_is_valid(c->diff_ids[i]));

        json_t *detail = oci_config_detail(c, "sha256:0000000000000000000000000000000000000000000000000000000000000000");
        FUZZ_CHECK(detail);
        FUZZ_CHECK(json_is_array(json_object_get(detail, "env")));
        json_decref(detail);
        oci_config_free(c);
}

static void fuzz_platform(const uint8_t *data, size_t size) {
        char s[FUZZ_OCI_PLATFORM_MAX + 1];
        OciPlatform p = {};

        if (size > FUZZ_OCI_PLATFORM_MAX)
                size = FUZZ_OCI_PLATFORM_MAX;
        memcpy(s, data, size);
        s[size] = '\0';
        if (oci_platform_parse(s, &p) < 0) {
                FUZZ_CHECK(!p.os && !p.architecture && !p.variant);
                return;
        }
        FUZZ_CHECK(p.os && p.architecture);
        FUZZ_CHECK(p.os[0] && p.architecture[0] && (!p.variant || p.variant[0]));
        FUZZ_CHECK(!strchr(p.os, '/') && !strchr(p.architecture, '/') && (!p.variant || !strchr(p.variant, '/')));
        oci_platform_done(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *mt;

        fuzz_manifest(data, size);
        fuzz_index(data, size);
        fuzz_config(data, size);
        fuzz_platform(data, size);

        mt = oci_document_media_type(data, size);
        FUZZ_CHECK(!mt || oci_media_type_is_index(mt) || oci_media_type_is_manifest(mt));
        return 0;
}
