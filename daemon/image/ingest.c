/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "ingest.h"

#include "erofs_layer.h"
#include "vmdk.h"

struct Ingest {
        Store *store;
        char *manifest_digest;
        void *manifest;
        size_t manifest_size;
        void *config;
        size_t config_size;
        OciManifest *parsed;
        OciConfig *parsed_config;
        IngestLayer *layers;
        uint64_t *erofs_sizes;
        bool *layer_ready;
        StoreEventType event;  /* what the commit announces */
        int64_t started_at_ms; /* images used since are spared by the eviction after the commit */

        /* Layers of one image may convert in parallel on several workers. */
        pthread_mutex_t lease_lock;
        char **leases;
        size_t n_leases;
};

/*
 * Conversions in flight, by diff_id, so that two ingests sharing a layer
 * convert it once: the second waits on the condition variable for the first
 * to finish and then finds the layer in the store.
 */
static pthread_mutex_t converting_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t converting_done = PTHREAD_COND_INITIALIZER;
typedef struct Converting {
        char diff_id[DIGEST_STRING_MAX];
        struct Converting *next;
} Converting;
static Converting *converting;

static bool converting_claim(const char *diff_id) {
        bool claimed = false;

        pthread_mutex_lock(&converting_lock);
        for (;;) {
                Converting *c;
                for (c = converting; c; c = c->next)
                        if (streq(c->diff_id, diff_id))
                                break;
                if (!c)
                        break;
                pthread_cond_wait(&converting_done, &converting_lock);
        }
        Converting *c = calloc(1, sizeof(*c));
        if (c) {
                snprintf(c->diff_id, sizeof(c->diff_id), "%s", diff_id);
                c->next = converting;
                converting = c;
                claimed = true;
        }
        pthread_mutex_unlock(&converting_lock);
        return claimed;
}

static void converting_release(const char *diff_id) {
        pthread_mutex_lock(&converting_lock);
        for (Converting **p = &converting; *p; p = &(*p)->next)
                if (streq((*p)->diff_id, diff_id)) {
                        Converting *c = *p;
                        *p = c->next;
                        free(c);
                        break;
                }
        pthread_cond_broadcast(&converting_done);
        pthread_mutex_unlock(&converting_lock);
}

static int ingest_lease(Ingest *in, const char *key) {
        int r = 0;

        pthread_mutex_lock(&in->lease_lock);
        char **n = realloc(in->leases, (in->n_leases + 1) * sizeof(char *));
        if (!n) {
                r = -ENOMEM;
                goto out;
        }
        in->leases = n;
        in->leases[in->n_leases] = strdup(key);
        if (!in->leases[in->n_leases]) {
                r = -ENOMEM;
                goto out;
        }
        r = store_lease_acquire(in->store, key);
        if (r < 0) {
                free(in->leases[in->n_leases]);
                goto out;
        }
        in->n_leases++;
out:
        pthread_mutex_unlock(&in->lease_lock);
        return r;
}

static void *memdup(const void *p, size_t n) {
        void *q = malloc(n ? n : 1);
        if (q && n)
                memcpy(q, p, n);
        return q;
}

int ingest_new(Store *store, const char *manifest_digest, const void *manifest, size_t manifest_size,
               const void *config, size_t config_size, Ingest **ret, MsbError *err) {
        _cleanup_(ingest_freep) Ingest *in = NULL;
        char config_digest[DIGEST_STRING_MAX];
        int r;

        in = calloc(1, sizeof(*in));
        if (!in)
                return -ENOMEM;
        in->store = store;
        in->started_at_ms = now_ms();
        pthread_mutex_init(&in->lease_lock, NULL);
        in->manifest_digest = strdup(manifest_digest);
        in->manifest = memdup(manifest, manifest_size);
        in->manifest_size = manifest_size;
        in->config = memdup(config, config_size);
        in->config_size = config_size;
        if (!in->manifest_digest || !in->manifest || !in->config)
                return -ENOMEM;

        r = oci_manifest_parse(manifest, manifest_size, &in->parsed, err);
        if (r < 0)
                return r;

        r = digest_buffer(config, config_size, config_digest);
        if (r < 0)
                return r;
        if (!streq(config_digest, in->parsed->config.digest) || config_size != in->parsed->config.size) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "the config does not match its descriptor: expected %s (%" PRIu64 " bytes), got %s (%zu bytes)",
                              in->parsed->config.digest, in->parsed->config.size, config_digest, config_size);
                msb_error_add_data(err, "expected", json_string(in->parsed->config.digest));
                msb_error_add_data(err, "actual", json_string(config_digest));
                return -EBADMSG;
        }

        r = oci_config_parse(config, config_size, &in->parsed_config, err);
        if (r < 0)
                return r;
        if (in->parsed_config->n_diff_ids != in->parsed->n_layers)
                return msb_error_set(err, -EBADMSG, PROTO_ERROR_INVALID_IMAGE,
                                     "the config lists %zu diff_ids for %zu layers", in->parsed_config->n_diff_ids,
                                     in->parsed->n_layers);

        size_t n = in->parsed->n_layers;
        in->layers = calloc(n + 1, sizeof(IngestLayer));
        in->erofs_sizes = calloc(n + 1, sizeof(uint64_t));
        in->layer_ready = calloc(n + 1, sizeof(bool));
        if (!in->layers || !in->erofs_sizes || !in->layer_ready)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                in->layers[i] = (IngestLayer) {
                        .blob_digest = in->parsed->layers[i].digest,
                        .diff_id = in->parsed_config->diff_ids[i],
                        .media_type = in->parsed->layers[i].media_type,
                        .size = in->parsed->layers[i].size,
                };

        r = ingest_lease(in, manifest_digest);
        if (r >= 0)
                r = ingest_lease(in, config_digest);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(in);
        return 0;
}

Ingest *ingest_free(Ingest *in) {
        if (!in)
                return NULL;
        for (size_t i = 0; i < in->n_leases; i++) {
                store_lease_release(in->store, in->leases[i]);
                free(in->leases[i]);
        }
        free(in->leases);
        pthread_mutex_destroy(&in->lease_lock);
        oci_manifest_free(in->parsed);
        oci_config_free(in->parsed_config);
        free(in->layers);
        free(in->erofs_sizes);
        free(in->layer_ready);
        free(in->manifest_digest);
        free(in->manifest);
        free(in->config);
        free(in);
        return NULL;
}

void ingest_set_event(Ingest *in, StoreEventType event) {
        in->event = event;
}

size_t ingest_n_layers(const Ingest *in) {
        return in->parsed->n_layers;
}

const IngestLayer *ingest_layer(const Ingest *in, size_t i) {
        return i < in->parsed->n_layers ? &in->layers[i] : NULL;
}

bool ingest_layer_cached(Ingest *in, size_t i) {
        uint64_t size;

        if (in->layer_ready[i])
                return true;
        if (ingest_lease(in, in->layers[i].diff_id) < 0)
                return false;
        if (store_layer_lookup(in->store, in->layers[i].diff_id, &size) <= 0)
                return false;
        in->erofs_sizes[i] = size;
        in->layer_ready[i] = true;
        return true;
}

static int convert_into_store(Ingest *in, size_t i, int blob_fd, MsbError *err) {
        const IngestLayer *l = &in->layers[i];
        _cleanup_free_ char *tmp = NULL, *final = NULL;
        _cleanup_close_ int fd = -EBADF;
        ErofsLayerInfo info = {};
        int r;

        final = store_layer_path(in->store, l->diff_id);
        if (!final)
                return -ENOMEM;
        r = store_tmpfile(in->store, "layer", &fd, &tmp);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot create a temporary layer file");

        /* A pipe (a layer converted while it downloads) starts at its start. */
        if (lseek(blob_fd, 0, SEEK_SET) < 0 && errno != ESPIPE) {
                r = msb_error_from_errno(err, negative_errno(), "cannot read the layer blob");
                goto fail;
        }
        r = erofs_layer_convert(blob_fd, l->media_type, l->blob_digest, l->size, l->diff_id, fd, &info, err);
        if (r < 0) {
                char what[64];
                snprintf(what, sizeof(what), "layer %zu (%s)", i, l->blob_digest);
                msb_error_add_data(err, "layer", json_string(l->blob_digest));
                msb_error_from_errno(err, r, what);
                goto fail;
        }
        r = store_tmpfile_publish(in->store, fd, tmp, final);
        if (r < 0) {
                msb_error_from_errno(err, r, "cannot publish the layer image");
                goto fail;
        }
        r = store_layer_add(in->store, l->diff_id, info.erofs_bytes);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot index the layer");
        in->erofs_sizes[i] = info.erofs_bytes;
        return 0;

fail:
        store_tmpfile_discard(in->store, tmp);
        return r;
}

int ingest_convert_layer(Ingest *in, size_t i, int blob_fd, MsbError *err) {
        const IngestLayer *l;
        int r;

        if (i >= in->parsed->n_layers)
                return -EINVAL;
        if (store_cancelled(in->store))
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN,
                                     "the daemon is shutting down; the import was abandoned");
        l = &in->layers[i];
        if (ingest_layer_cached(in, i))
                return 0;

        if (!converting_claim(l->diff_id))
                return -ENOMEM;
        /* Another ingest may have finished this layer while we waited. */
        if (ingest_layer_cached(in, i))
                r = 0;
        else {
                r = convert_into_store(in, i, blob_fd, err);
                if (r >= 0)
                        in->layer_ready[i] = true;
        }
        converting_release(l->diff_id);
        return r;
}

static int write_blob(Store *s, const char *digest, const void *data, size_t size) {
        _cleanup_free_ char *path = store_blob_path(s, digest);
        if (!path)
                return -ENOMEM;
        return store_write_file(s, path, data, size);
}

/* Builds the fsmeta image and the VMDK descriptor of the manifest. */
static int build_rootfs(Ingest *in, uint64_t *ret_fsmeta, uint64_t *ret_vmdk, MsbError *err) {
        size_t n = in->parsed->n_layers;
        _cleanup_free_ char **paths = calloc(n + 1, sizeof(char *));
        _cleanup_free_ char *fsmeta = NULL, *vmdk = NULL, *tmp = NULL, *tmp_vmdk = NULL;
        _cleanup_close_ int fd = -EBADF, vfd = -EBADF;
        uint64_t fsmeta_size = 0;
        struct stat st;
        int r;

        if (!paths)
                return -ENOMEM;
        fsmeta = store_fsmeta_path(in->store, in->manifest_digest);
        vmdk = store_vmdk_path(in->store, in->manifest_digest);
        if (!fsmeta || !vmdk) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                if (!(paths[i] = store_layer_path(in->store, in->layers[i].diff_id))) {
                        r = -ENOMEM;
                        goto out;
                }

        /* An image without layers (legal in OCI) has no filesystem to boot:
         * it is indexed with no fsmeta and no VMDK. */
        if (n == 0) {
                *ret_fsmeta = *ret_vmdk = 0;
                r = 0;
                goto out;
        }

        if (stat(fsmeta, &st) == 0 && access(vmdk, F_OK) == 0) {
                /* Already built for this manifest (a second reference to it). */
                *ret_fsmeta = (uint64_t) st.st_size;
                stat(vmdk, &st);
                *ret_vmdk = (uint64_t) st.st_size;
                r = 0;
                goto out;
        }

        r = store_tmpfile(in->store, "fsmeta", &fd, &tmp);
        if (r < 0)
                goto out;
        r = erofs_fsmeta_build((const char *const *) paths, n, in->manifest_digest, fd, &fsmeta_size, err);
        if (r < 0)
                goto out_discard;
        r = store_tmpfile_publish(in->store, fd, tmp, fsmeta);
        if (r < 0)
                goto out_discard;

        r = store_tmpfile(in->store, "vmdk", &vfd, &tmp_vmdk);
        if (r < 0)
                goto out;
        r = vmdk_write(vfd, fsmeta, fsmeta_size, (const char *const *) paths, in->erofs_sizes, n, err);
        if (r >= 0 && fstat(vfd, &st) < 0)
                r = negative_errno();
        if (r >= 0)
                r = store_tmpfile_publish(in->store, vfd, tmp_vmdk, vmdk);
        if (r < 0) {
                store_tmpfile_discard(in->store, tmp_vmdk);
                goto out;
        }
        *ret_fsmeta = fsmeta_size;
        *ret_vmdk = (uint64_t) st.st_size;
        r = 0;
        goto out;

out_discard:
        store_tmpfile_discard(in->store, tmp);
out:
        for (size_t i = 0; i < n; i++)
                free(paths[i]);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot build the rootfs (fsmeta and VMDK)");
        return r;
}

int ingest_commit(Ingest *in, char *const *references, size_t n_references, json_t **ret_handle, MsbError *err) {
        json_auto_t *handles = json_array();
        int r;

        if (!handles)
                return -ENOMEM;
        r = ingest_commit_handles(in, references, n_references, handles, err);
        if (r < 0)
                return r;
        if (ret_handle && json_array_size(handles) > 0)
                *ret_handle = json_incref(json_array_get(handles, 0));
        return 0;
}

int ingest_commit_handles(Ingest *in, char *const *references, size_t n_references, json_t *handles,
                          MsbError *err) {
        _cleanup_free_ StoreLayer *layers = NULL;
        StoreManifest m;
        int r;

        if (store_cancelled(in->store))
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN,
                                     "the daemon is shutting down; the import was abandoned");
        for (size_t i = 0; i < in->parsed->n_layers; i++)
                if (!in->layer_ready[i])
                        return msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR,
                                             "layer %zu was not converted before the commit", i);

        r = write_blob(in->store, in->manifest_digest, in->manifest, in->manifest_size);
        if (r >= 0)
                r = write_blob(in->store, in->parsed->config.digest, in->config, in->config_size);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot write the manifest and config");

        m = (StoreManifest) {
                .digest = in->manifest_digest,
                .media_type = in->parsed->media_type,
                .size = in->manifest_size,
                .config_digest = in->parsed->config.digest,
                .config_size = in->config_size,
                .architecture = in->parsed_config->platform.architecture,
                .os = in->parsed_config->platform.os,
                .variant = in->parsed_config->platform.variant,
                .n_layers = in->parsed->n_layers,
                .event = in->event,
        };
        layers = calloc(m.n_layers + 1, sizeof(StoreLayer));
        if (!layers)
                return -ENOMEM;
        for (size_t i = 0; i < m.n_layers; i++)
                layers[i] = (StoreLayer) {
                        .blob_digest = (char *) in->layers[i].blob_digest,
                        .diff_id = (char *) in->layers[i].diff_id,
                        .media_type = (char *) in->layers[i].media_type,
                        .compressed_size = in->layers[i].size,
                };
        m.layers = layers;

        r = build_rootfs(in, &m.fsmeta_size, &m.vmdk_size, err);
        if (r < 0)
                return r;

        r = store_image_commit_with_handles(in->store, &m, references, n_references, handles, err);
        if (r < 0)
                return r;
        /* The image is stored; a budget that cannot be met is the log's
         * business, not a failure of this commit. The leases this ingest
         * still holds keep its own image, and the protection time those of
         * the commits that ran beside it, from the round. */
        (void) store_budget_enforce(in->store, in->started_at_ms);
        return 0;
}
