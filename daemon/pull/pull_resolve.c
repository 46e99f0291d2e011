/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The first steps of a pull: credentials from the Docker credential helper
 * configured for the registry, if any; the manifest the reference names
 * (through nested indexes narrowed to one platform), then its config; then
 * the worker that prepares the ingest (OCI distribution-spec "Pulling
 * manifests", image-spec image-index.md and manifest.md).
 */
#include "pull_internal.h"

static void op_document_done(RegistryFetch *f, int r, const MsbError *err, void *userdata);

/* GET /v2/NAME/manifests/REFERENCE (distribution-spec "Pulling manifests"),
 * by tag or by digest. */
static int op_fetch_manifest(PullOp *op, const char *reference, const char *expected_digest) {
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .reference = reference,
                .digest = expected_digest,
                .max_size = OCI_MANIFEST_MAX_BYTES,
                .log_tag = op->tag,
        };

        return registry_fetch_start(op->manager->registry, &p, NULL, op_document_done, op, &op->fetch);
}

static int op_resolve(PullOp *op) {
        op->step = OP_RESOLVING;
        return op_fetch_manifest(op, op->ref->digest ?: op->ref->tag, op->ref->digest);
}

/* The address a helper knows a registry by: Docker Hub's is the URL the
 * Docker client has always stored it under, any other is its host[:port]. */
static const char *helper_server(const char *domain) {
        return streq(domain, "docker.io") ? "https://index.docker.io/v1/" : domain;
}

/* The helper answered: its credentials are the registry's from now on (in
 * the config of the moment), and the pull goes on with or without them. */
static void op_helper_done(int r, const char *username, const char *secret, const char *why, void *userdata) {
        PullOp *op = userdata;
        PullManager *m = op->manager;
        const char *helper = registry_config_helper(m->config, op->ref->domain);

        op->helper = NULL;
        if (r >= 0)
                r = registry_config_set_helper_credentials(m->config, op->ref->domain, username, secret);
        if (r >= 0)
                log_debug("%s %s: credentials from docker-credential-%s", op->tag, op->ref->domain, helper ?: "?");
        else if (r == -ENOENT)
                log_info("%s %s: docker-credential-%s has no credentials for it; pulling without", op->tag,
                         op->ref->domain, helper ?: "?");
        else
                log_warning("%s %s: %s; pulling without its credentials", op->tag, op->ref->domain,
                            r == -ENOMEM ? "out of memory" : why);
        r = op_resolve(op);
        if (r < 0)
                pull_op_fail_errno(op, r, "manifest");
}

int pull_op_start(PullOp *op) {
        PullManager *m = op->manager;
        const char *helper;
        int r;

        pull_manager_refresh_docker_config(m, op->tag);
        helper = registry_config_helper(m->config, op->ref->domain);
        if (!helper)
                return op_resolve(op);
        op->step = OP_CREDENTIALS;
        r = credential_helper_run(m->loop, helper, helper_server(op->ref->domain), op_helper_done, op, &op->helper);
        if (r >= 0)
                return 0;
        log_warning("%s %s: cannot run docker-credential-%s: %s; pulling without its credentials", op->tag,
                    op->ref->domain, helper, r == -ENOENT ? "it is not on PATH" : strerror(-r));
        return op_resolve(op);
}

/* The manifest an index entry names: its descriptor gives the digest and
 * the size the document must have. */
static void op_fetch_document(PullOp *op, const char *digest, uint64_t size) {
        int r;

        op->expected_size = size;
        r = op_fetch_manifest(op, digest, digest);
        if (r < 0)
                pull_op_fail_errno(op, r, "manifest");
}

/* Keeps a NUL-terminated copy of the document the op's fetch received (body
 * lives in the fetch), then lets the fetch go. */
static int op_keep_document(PullOp *op, const char *body, size_t n, char **ret, size_t *ret_size) {
        char *copy = malloc(n + 1);

        if (!copy)
                return -ENOMEM;
        memcpy(copy, body, n);
        copy[n] = '\0';
        *ret = copy;
        *ret_size = n;
        op->fetch = registry_fetch_free(op->fetch);
        return 0;
}

/* The config blob is in: the worker prepares the ingest (which parses the
 * manifest and config once more, against the store). */
static void op_config_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        PullOp *op = userdata;
        const char *body;
        size_t n;

        if (r < 0) {
                pull_op_fail_fetch_of(op, f, r, err);
                return;
        }
        body = registry_fetch_body(f, &n);
        if (op_keep_document(op, body, n, &op->config, &op->config_size) < 0)
                return pull_op_fail_errno(op, -ENOMEM, "config");

        op->step = OP_PREPARING;
        r = pull_work_queue(op->manager, op, WORK_PREPARE, 0, NULL, NULL, NULL);
        if (r < 0)
                pull_op_fail_errno(op, r, "prepare");
}

/* An image manifest (image-spec manifest.md): keep it, then fetch its
 * config (distribution-spec "Pulling blobs") into memory. */
static void op_got_manifest(PullOp *op, const char *body, size_t n, const char *digest) {
        MsbError err = {};
        RegistryFetchParams p;
        int r;

        r = oci_manifest_parse(body, n, &op->parsed, &err);
        if (r < 0) {
                pull_op_fail(op, r, &err);
                msb_error_clear(&err);
                return;
        }
        snprintf(op->manifest_digest, sizeof(op->manifest_digest), "%s", digest);
        if (op_keep_document(op, body, n, &op->manifest, &op->manifest_size) < 0)
                return pull_op_fail_errno(op, -ENOMEM, "manifest");

        if (op->parsed->config.size > OCI_CONFIG_MAX_BYTES) {
                msb_error_limit(&err, "manifest_bytes", OCI_CONFIG_MAX_BYTES, "the config of %s is larger than %zu bytes",
                                op->ref->canonical, OCI_CONFIG_MAX_BYTES);
                pull_op_fail(op, -EFBIG, &err);
                msb_error_clear(&err);
                return;
        }

        op->step = OP_CONFIG;
        p = (RegistryFetchParams) {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = op->ref->domain,
                .repository = op->ref->path,
                .digest = op->parsed->config.digest,
                .size = op->parsed->config.size,
                .fd = -1,
                .log_tag = op->tag,
        };
        r = registry_fetch_start(op->manager->registry, &p, NULL, op_config_done, op, &op->fetch);
        if (r < 0)
                pull_op_fail_errno(op, r, "config");
}

/* An index (image-spec image-index.md): pick the manifest of the wanted
 * platform and fetch it, through at most OCI_INDEX_DEPTH_MAX levels. */
static void op_got_index(PullOp *op, const char *body, size_t n) {
        _cleanup_(oci_index_freep) OciIndex *idx = NULL;
        MsbError err = {};
        size_t pick;
        int r;

        if (op->index_depth >= OCI_INDEX_DEPTH_MAX) {
                msb_error_set(&err, -ELOOP, PROTO_ERROR_INVALID_IMAGE, "indexes of %s nest deeper than %d",
                              op->ref->canonical, OCI_INDEX_DEPTH_MAX);
                goto fail;
        }
        r = oci_index_parse(body, n, &idx, &err);
        if (r < 0)
                goto fail;
        r = oci_index_select(idx, &op->want, &pick);
        if (r < 0) {
                msb_error_set(&err, -ENOENT, PROTO_ERROR_PLATFORM_NOT_FOUND, "%s has no image for %s/%s%s%s",
                              op->ref->canonical, op->want.os, op->want.architecture, op->want.variant ? "/" : "",
                              op->want.variant ?: "");
                msb_error_add_data(&err, "platform",
                                   json_sprintf("%s/%s%s%s", op->want.os, op->want.architecture,
                                                op->want.variant ? "/" : "", op->want.variant ?: ""));
                goto fail;
        }
        op->index_depth++;
        op->fetch = registry_fetch_free(op->fetch);
        char digest[DIGEST_STRING_MAX];
        snprintf(digest, sizeof(digest), "%s", idx->manifests[pick].digest);
        op_fetch_document(op, digest, idx->manifests[pick].size);
        return;

fail:
        pull_op_fail(op, err.set ? -EBADMSG : -ENOMEM, &err);
        msb_error_clear(&err);
}

/* A document that cannot be what was asked for: the wrong size for its
 * descriptor (image-spec descriptor.md "size"), or not JSON at all. */
static int op_document_check(PullOp *op, RegistryFetch *f, const char *body, size_t n, MsbError *e) {
        json_t *j;

        if (op->expected_size != UINT64_MAX && n != op->expected_size)
                return msb_error_set(e, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                                     "manifest %s has %zu bytes, its descriptor says %" PRIu64,
                                     registry_fetch_digest(f), n, op->expected_size);
        j = json_loadb(body, n, 0, NULL);
        if (!j)
                return msb_error_set(e, -EBADMSG, PROTO_ERROR_REGISTRY_ERROR,
                                     "the registry answered %s with something that is not JSON", op->ref->canonical);
        json_decref(j);
        return 0;
}

/* A manifest fetch ended: an index or an image manifest. */
static void op_document_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        PullOp *op = userdata;
        const char *body, *mt;
        size_t n;
        MsbError e = {};

        if (r < 0) {
                pull_op_fail_fetch_of(op, f, r, err);
                return;
        }
        body = registry_fetch_body(f, &n);
        r = op_document_check(op, f, body, n, &e);
        if (r < 0) {
                pull_op_fail(op, r, &e);
                msb_error_clear(&e);
                return;
        }

        /* The document's own mediaType decides (the spec lets OCI indexes
         * omit it; then the shape does), else the Content-Type. */
        mt = oci_document_media_type(body, n);
        if (!mt)
                mt = registry_fetch_media_type(f);
        if (mt && oci_media_type_is_index(mt))
                return op_got_index(op, body, n);
        if (mt && oci_media_type_is_manifest(mt)) {
                char digest[DIGEST_STRING_MAX];
                snprintf(digest, sizeof(digest), "%s", registry_fetch_digest(f));
                return op_got_manifest(op, body, n, digest);
        }
        msb_error_set(&e, -EMEDIUMTYPE, PROTO_ERROR_UNSUPPORTED_MEDIA_TYPE,
                      "%s is neither an image manifest nor an index (%s)", op->ref->canonical,
                      mt && mt[0] ? mt : "no media type");
        pull_op_fail(op, -EMEDIUMTYPE, &e);
        msb_error_clear(&e);
}
