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
        /* Entries of the layers this ingest converted, against the
         * image_entries limit; the layers convert on several workers at
         * once, each adding atomically (erofs_layer.h). Layers already in
         * the store are counted by the fsmeta merge, which counts all. */
        uint64_t entries;

        /* What this ingest published, for ingest_abort() to take back. */
        bool *layer_published;
        const char *blob_written[2]; /* the manifest and config digests, once written here */
        bool rootfs_written;
        bool committed;
        StoreManifest row; /* what ingest_prepare() made ready for the index */
        StoreLayer *row_layers;
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

/* Leases key for this ingest, once: ingest_abort() relies on holding no
 * more than one lease of its own on anything (store_discard()). */
static int ingest_lease(Ingest *in, const char *key) {
        int r = 0;

        pthread_mutex_lock(&in->lease_lock);
        for (size_t i = 0; i < in->n_leases; i++)
                if (streq(in->leases[i], key))
                        goto out;
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
        in->layer_published = calloc(n + 1, sizeof(bool));
        if (!in->layers || !in->erofs_sizes || !in->layer_ready || !in->layer_published)
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
        free(in->layer_published);
        free(in->row_layers);
        free(in->manifest_digest);
        free(in->manifest);
        free(in->config);
        free(in);
        return NULL;
}

void ingest_set_event(Ingest *in, StoreEventType event) {
        in->event = event;
}

void ingest_set_started_at(Ingest *in, int64_t started_at_ms) {
        if (started_at_ms < in->started_at_ms)
                in->started_at_ms = started_at_ms;
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

static int convert_into_store(Ingest *in, size_t i, int blob_fd, IngestBlobCheck check, MsbError *err) {
        const IngestLayer *l = &in->layers[i];
        _cleanup_free_ char *tmp = NULL, *final = NULL;
        _cleanup_close_ int fd = -EBADF;
        ErofsLayerLimits limits = erofs_layer_limits_default();
        ErofsLayerInfo info = {};
        char what[32 + DIGEST_STRING_MAX];
        int r;

        limits.image_entries_used = &in->entries;
        /* Below the floor already: not even a small layer goes in; the
         * writer looks again at that floor every few MiB of a large one. */
        snprintf(what, sizeof(what), "layer %zu (%s)", i, l->blob_digest);
        r = store_space_check(in->store, 0, what, &limits.keep_free_bytes, err);
        if (r < 0) {
                msb_error_add_data(err, "layer", json_string(l->blob_digest));
                return r;
        }
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
        r = erofs_layer_convert_with_limits(blob_fd, l->media_type,
                                            check == INGEST_BLOB_VERIFIED ? NULL : l->blob_digest, l->size,
                                            l->diff_id, &limits, fd, &info, err);
        if (r < 0) {
                if (r == -ENOSPC) {
                        /* Say so when it is the floor that stopped the
                         * conversion, not a full disk. */
                        MsbError floor = {};
                        if (store_space_check(in->store, 0, what, NULL, &floor) < 0) {
                                msb_error_clear(err);
                                *err = floor;
                        }
                }
                msb_error_add_data(err, "layer", json_string(l->blob_digest));
                msb_error_from_errno(err, r, what);
                goto fail;
        }
        r = store_tmpfile_publish(in->store, fd, tmp, final);
        if (r < 0) {
                msb_error_from_errno(err, r, "cannot publish the layer image");
                goto fail;
        }
        /* Published: from here on an abort takes it back out, row or not. */
        in->layer_published[i] = true;
        r = store_layer_add(in->store, l->diff_id, info.erofs_bytes);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot index the layer");
        in->erofs_sizes[i] = info.erofs_bytes;
        return 0;

fail:
        store_tmpfile_discard(in->store, tmp);
        return r;
}

int ingest_convert_layer(Ingest *in, size_t i, int blob_fd, IngestBlobCheck check, MsbError *err) {
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
                r = convert_into_store(in, i, blob_fd, check, err);
                if (r >= 0)
                        in->layer_ready[i] = true;
        }
        converting_release(l->diff_id);
        return r;
}

/* Writes a manifest or config blob (slot 0 or 1) unless the store has it,
 * and remembers when this ingest was the one that wrote it. */
static int write_blob(Ingest *in, size_t slot, const char *digest, const void *data, size_t size) {
        _cleanup_free_ char *path = store_blob_path(in->store, digest);
        int r;

        if (!path)
                return -ENOMEM;
        if (access(path, F_OK) == 0)
                return 0;
        r = store_write_file(in->store, path, data, size);
        if (r >= 0)
                in->blob_written[slot] = digest;
        return r;
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
        in->rootfs_written = true;

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

/* Everything but the index transaction: the layers are all converted, the
 * manifest and config blobs are written, fsmeta and the VMDK built, and
 * in->row describes the manifest for the index. */
static int ingest_prepare(Ingest *in, MsbError *err) {
        size_t n = in->parsed->n_layers;
        int r;

        if (store_cancelled(in->store))
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN,
                                     "the daemon is shutting down; the import was abandoned");
        for (size_t i = 0; i < n; i++)
                if (!in->layer_ready[i])
                        return msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR,
                                             "layer %zu was not converted before the commit", i);

        r = write_blob(in, 0, in->manifest_digest, in->manifest, in->manifest_size);
        if (r >= 0)
                r = write_blob(in, 1, in->parsed->config.digest, in->config, in->config_size);
        if (r < 0)
                return msb_error_from_errno(err, r, "cannot write the manifest and config");

        in->row = (StoreManifest) {
                .digest = in->manifest_digest,
                .media_type = in->parsed->media_type,
                .size = in->manifest_size,
                .config_digest = in->parsed->config.digest,
                .config_size = in->config_size,
                .architecture = in->parsed_config->platform.architecture,
                .os = in->parsed_config->platform.os,
                .variant = in->parsed_config->platform.variant,
                .n_layers = n,
                .event = in->event,
        };
        free(in->row_layers);
        in->row_layers = calloc(n + 1, sizeof(StoreLayer));
        if (!in->row_layers)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                in->row_layers[i] = (StoreLayer) {
                        .blob_digest = (char *) in->layers[i].blob_digest,
                        .diff_id = (char *) in->layers[i].diff_id,
                        .media_type = (char *) in->layers[i].media_type,
                        .compressed_size = in->layers[i].size,
                };
        in->row.layers = in->row_layers;
        return build_rootfs(in, &in->row.fsmeta_size, &in->row.vmdk_size, err);
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
        IngestCommit one = { .ingest = in, .references = references, .n_references = n_references };
        return ingest_commit_many(&one, 1, handles, err);
}

int ingest_commit_many(const IngestCommit *images, size_t n_images, json_t *handles, MsbError *err) {
        _cleanup_free_ StoreImageCommit *rows = calloc(n_images + 1, sizeof(StoreImageCommit));
        int r;

        if (!rows)
                return -ENOMEM;
        for (size_t i = 0; i < n_images; i++) {
                Ingest *in = images[i].ingest;
                r = ingest_prepare(in, err);
                if (r < 0)
                        return r;
                rows[i] = (StoreImageCommit) {
                        .manifest = &in->row,
                        .references = images[i].references,
                        .n_references = images[i].n_references,
                };
        }
        if (n_images > 0) {
                Store *store = images[0].ingest->store;
                int64_t started_at_ms = images[0].ingest->started_at_ms;

                r = store_images_commit(store, rows, n_images, handles, err);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n_images; i++) {
                        images[i].ingest->committed = true;
                        if (images[i].ingest->started_at_ms < started_at_ms)
                                started_at_ms = images[i].ingest->started_at_ms;
                }
                /* The images are stored; a budget that cannot be met is the
                 * log's business, not a failure of this commit. The leases
                 * the ingests still hold keep their own images, and the
                 * protection time those of the commits that ran beside
                 * them, from the round. */
                (void) store_budget_enforce(store, started_at_ms);
        }
        return 0;
}

void ingest_abort(Ingest *in) {
        _cleanup_free_ const char **layers = NULL;
        StoreDiscard d = {};

        if (!in || in->committed)
                return;
        layers = calloc(in->parsed->n_layers + 1, sizeof(char *));
        if (!layers)
                return;
        for (size_t i = 0; i < in->parsed->n_layers; i++)
                if (in->layer_published[i])
                        layers[d.n_layers++] = in->layers[i].diff_id;
        d.layers = layers;
        d.blobs[0] = in->blob_written[0];
        d.blobs[1] = in->blob_written[1];
        d.rootfs = in->rootfs_written ? in->manifest_digest : NULL;
        store_discard(in->store, &d);
        /* Nothing of it is ours any more: a second abort has nothing to do. */
        memset(in->layer_published, 0, in->parsed->n_layers * sizeof(bool));
        in->blob_written[0] = in->blob_written[1] = NULL;
        in->rootfs_written = false;
}
