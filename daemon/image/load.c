/* SPDX-License-Identifier: Apache-2.0 */
#include "load_internal.h"

/* At most this many of the source's names are listed when `image` names none. */
#define LOAD_IMAGES_LISTED 10

/* One image of the source being loaded: its ingest (converted layers, not
 * yet committed) and the references to record. */
typedef struct LoadImage {
        Ingest *ingest;
        char **refs;
        size_t n_refs;
} LoadImage;

/* The images of one load; they commit together (ingest_commit_many()). */
typedef struct LoadBatch {
        LoadImage *images;
        size_t n;
} LoadBatch;

/* Takes back what uncommitted images published (a no-op for committed
 * ones), newest first: an image that found an older one's layer in the
 * store leases it, and that lease must be gone when the older one's abort
 * decides whether the layer is still needed. */
static void load_batch_done(LoadBatch *b) {
        for (size_t i = b->n; i-- > 0;) {
                LoadImage *img = &b->images[i];
                ingest_abort(img->ingest);
                ingest_free(img->ingest);
                for (size_t k = 0; k < img->n_refs; k++)
                        free(img->refs[k]);
                free(img->refs);
        }
        free(b->images);
}

static json_t *layer_event(const char *event, size_t position, const IngestLayer *l) {
        return json_pack("{s:s, s:I, s:s, s:s}", "event", event, "position", (json_int_t) position, "digest",
                         l->blob_digest, "diff_id", l->diff_id);
}

/* Opens layer i's blob and checks its size: even a layer the store has
 * already must match its descriptor, whose size is what the image reports. */
static int open_layer_blob(const LoadSource *src, const IngestLayer *l, int *ret_fd, MsbError *err) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        r = load_source_open_blob(src, l->blob_digest, &fd, err);
        if (r < 0)
                return r;
        if (fstat(fd, &st) < 0)
                return msb_error_from_errno(err, negative_errno(), "cannot read a layer blob");
        if ((uint64_t) st.st_size != l->size) {
                msb_error_set(err, -EBADMSG, PROTO_ERROR_DIGEST_MISMATCH,
                              "layer blob %s is %" PRIu64 " bytes, its descriptor says %" PRIu64, l->blob_digest,
                              (uint64_t) st.st_size, l->size);
                msb_error_add_data(err, "expected", json_string(l->blob_digest));
                return -EBADMSG;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Converts the layers of img's ingest that the store lacks, reporting each. */
static int load_layers(LoadSource *src, Ingest *in, MsbError *err) {
        uint64_t erofs_size = 0;
        int r;

        for (size_t i = 0; i < ingest_n_layers(in); i++) {
                const IngestLayer *l = ingest_layer(in, i);
                _cleanup_close_ int fd = -EBADF;
                r = open_layer_blob(src, l, &fd, err);
                if (r < 0)
                        return r;
                if (ingest_layer_cached(in, i)) {
                        load_emit(src, layer_event("layer-cached", i, l));
                        continue;
                }
                r = ingest_convert_layer(in, i, fd, INGEST_BLOB_UNCHECKED, err);
                if (r < 0)
                        return r;
                json_t *e = layer_event("layer-converted", i, l);
                if (e && store_layer_lookup(src->store, l->diff_id, &erofs_size) > 0)
                        json_object_set_new(e, "erofs_size_bytes", json_integer((json_int_t) erofs_size));
                load_emit(src, e);
        }
        return 0;
}

/* Verifies the manifest digest names and its config, and converts its
 * layers into the store; img->ingest then holds them until the commit. */
static int load_prepare_image(LoadSource *src, const char *digest, LoadImage *img, MsbError *err) {
        _cleanup_free_ char *manifest = NULL, *config = NULL;
        _cleanup_(oci_manifest_freep) OciManifest *m = NULL;
        uint64_t total = 0;
        size_t msize, csize;
        int r;

        r = load_read_verified_blob(src->blobs_fd, digest, UINT64_MAX, OCI_MANIFEST_MAX_BYTES, &manifest, &msize, err);
        if (r < 0)
                return r;
        r = oci_manifest_parse(manifest, msize, &m, err);
        if (r < 0)
                return r;
        r = load_read_verified_blob(src->blobs_fd, m->config.digest, m->config.size, OCI_CONFIG_MAX_BYTES, &config, &csize, err);
        if (r < 0)
                return r;
        r = ingest_new(src->store, digest, manifest, msize, config, csize, &img->ingest, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ingest_n_layers(img->ingest); i++)
                total += ingest_layer(img->ingest, i)->size;
        load_emit(src, json_pack("{s:s, s:s, s:I, s:I}", "event", "resolved", "manifest_digest", digest, "layer_count",
                                 (json_int_t) ingest_n_layers(img->ingest), "total_bytes", (json_int_t) total));
        return load_layers(src, img->ingest, err);
}

/* Commits every image of the batch in one transaction, appending the
 * handle of each reference, in the order the source names them. */
static int load_batch_commit(LoadBatch *b, json_t *handles, MsbError *err) {
        _cleanup_free_ IngestCommit *commits = calloc(b->n + 1, sizeof(IngestCommit));

        if (!commits)
                return -ENOMEM;
        for (size_t i = 0; i < b->n; i++)
                commits[i] = (IngestCommit) {
                        .ingest = b->images[i].ingest,
                        .references = b->images[i].refs,
                        .n_references = b->images[i].n_refs,
                };
        return ingest_commit_many(commits, b->n, handles, err);
}

typedef struct CandidateOrder {
        const char *digest;
        size_t index;
} CandidateOrder;

static int candidate_order_cmp(const void *a, const void *b) {
        const CandidateOrder *x = a, *y = b;
        int c = strcmp(x->digest, y->digest);
        return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* For each candidate, the index of the first candidate naming the same
 * manifest; and how many distinct manifests there are. */
static int group_candidates(const LoadSource *src, size_t **ret_leader, size_t *ret_distinct) {
        size_t n = src->n_candidates, distinct = 0;
        _cleanup_free_ CandidateOrder *order = calloc(n + 1, sizeof(CandidateOrder));
        size_t *leader = calloc(n + 1, sizeof(size_t));

        if (!order || !leader) {
                free(leader);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                order[i] = (CandidateOrder) { src->candidates[i].digest, i };
        qsort(order, n, sizeof(*order), candidate_order_cmp);
        for (size_t i = 0, first = 0; i < n; i++) {
                if (i == 0 || !streq(order[i].digest, order[i - 1].digest)) {
                        first = order[i].index;
                        distinct++;
                }
                leader[order[i].index] = first;
        }
        *ret_leader = leader;
        *ret_distinct = distinct;
        return 0;
}

/* Orders slots by their string, then by position, so that of equal strings
 * the earliest slot comes first. */
static int string_slot_cmp(const void *a, const void *b) {
        char **x = *(char **const *) a, **y = *(char **const *) b;
        int c = strcmp(*x, *y);
        return c ? c : (x > y) - (x < y);
}

/* Drops later duplicates from strs (freeing them), keeping the order of
 * first appearance; returns the new count. */
static size_t unique_strings(char **strs, size_t n) {
        _cleanup_free_ char ***sorted = calloc(n + 1, sizeof(char **));
        size_t out = 0;

        if (!sorted)
                return n;
        for (size_t i = 0; i < n; i++)
                sorted[i] = &strs[i];
        qsort(sorted, n, sizeof(*sorted), string_slot_cmp);
        for (size_t i = 1, keep = 0; i < n; i++) {
                if (!streq(*sorted[i], *sorted[keep])) {
                        keep = i;
                        continue;
                }
                free(*sorted[i]);
                *sorted[i] = NULL;
        }
        for (size_t i = 0; i < n; i++)
                if (strs[i])
                        strs[out++] = strs[i];
        return out;
}

/* The reference a name of the source records. An OCI ref.name is often a
 * tag alone ("v1") or a bare name: without a '/' it names no Docker Hub
 * image, so it goes under localhost/ (localhost/v1:latest). */
static int candidate_reference(const Candidate *c, char **ret, MsbError *err) {
        _cleanup_(reference_freep) Reference *ref = NULL;
        _cleanup_free_ char *local = NULL;
        const char *name = c->name, *reason = NULL;
        int r;

        if (c->local && !strchr(name, '/')) {
                if (asprintf(&local, "localhost/%s", name) < 0)
                        return -ENOMEM;
                name = local;
        }
        r = reference_parse(name, &ref, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_IMAGE,
                              "the source names the image '%s', which is not a valid reference: %s", c->name,
                              reason ?: "invalid");
                return -EINVAL;
        }
        *ret = strdup(ref->canonical);
        return *ret ? 0 : -ENOMEM;
}

/* Whether the client's `image` names candidate c: its name as the source
 * writes it or as recorded (image_canonical: the same parsed, or NULL), or
 * its manifest digest. */
static bool candidate_matches(const Candidate *c, const char *image, const char *image_canonical) {
        _cleanup_free_ char *recorded = NULL;

        if (streq(c->digest, image) || streq_ptr(c->name, image))
                return true;
        return c->name && image_canonical && candidate_reference(c, &recorded, NULL) >= 0 &&
               streq(recorded, image_canonical);
}

/* invalid-params for `image`, listing (some of) what the source holds. */
static int image_not_in_source(const LoadSource *src, const char *image, const char *why, MsbError *err) {
        json_t *held = json_array();

        for (size_t i = 0; i < src->n_candidates && json_array_size(held) < LOAD_IMAGES_LISTED; i++)
                json_array_append_new(held, json_string(src->candidates[i].name ?: src->candidates[i].digest));
        msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "image '%s' %s the source's images", image, why);
        msb_error_add_data(err, "parameter", json_string("image"));
        msb_error_add_data(err, "candidates", held);
        return -EINVAL;
}

/* The leader (see group_candidates()) of the one image `image` names. */
static int select_image(const LoadSource *src, const size_t *leader, const char *image, size_t *ret,
                        MsbError *err) {
        _cleanup_(reference_freep) Reference *ref = NULL;
        size_t found = SIZE_MAX;

        if (reference_parse(image, &ref, NULL) == -ENOMEM)
                return -ENOMEM;
        for (size_t i = 0; i < src->n_candidates; i++) {
                if (!candidate_matches(&src->candidates[i], image, ref ? ref->canonical : NULL))
                        continue;
                if (found != SIZE_MAX && found != leader[i])
                        return image_not_in_source(src, image, "names several of", err);
                found = leader[i];
        }
        if (found == SIZE_MAX)
                return image_not_in_source(src, image, "names none of", err);
        *ret = found;
        return 0;
}

/* The references to record for the image whose first candidate is `first`:
 * tag, then the names the source gives it, each once. */
static int load_image_refs(const LoadSource *src, const size_t *leader, size_t first, const char *tag,
                           LoadImage *img, MsbError *err) {
        int r = 0;

        /* A digest reference names one manifest: never record it for another. */
        const char *at = tag ? strchr(tag, '@') : NULL;
        if (at && !streq(at + 1, src->candidates[first].digest)) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "tag %s names manifest %s, but the source holds %s",
                              tag, at + 1, src->candidates[first].digest);
                msb_error_add_data(err, "parameter", json_string("tag"));
                return -EINVAL;
        }
        img->refs = calloc(src->n_candidates + 2, sizeof(char *));
        if (!img->refs)
                return -ENOMEM;
        if (tag && !(img->refs[img->n_refs++] = strdup(tag)))
                return -ENOMEM;
        for (size_t j = first; j < src->n_candidates; j++) {
                const char *name = src->candidates[j].name;
                if (!name || leader[j] != first)
                        continue;
                /* A bare ref.name ("latest", "v1") is a layout's tag, not a
                 * reference: with tag given, it adds nothing. */
                if (tag && !strpbrk(name, "/:@"))
                        continue;
                r = candidate_reference(&src->candidates[j], &img->refs[img->n_refs], err);
                if (r < 0)
                        return r;
                img->n_refs++;
        }
        img->n_refs = unique_strings(img->refs, img->n_refs);
        if (img->n_refs == 0) {
                msb_error_set(err, -EINVAL, PROTO_ERROR_INVALID_PARAMS, "the image %s names no reference; pass tag",
                              src->candidates[first].digest);
                msb_error_add_data(err, "parameter", json_string("tag"));
                return -EINVAL;
        }
        return 0;
}

/* Adds the image whose first candidate is `first` to the batch: its
 * references, then its layers converted. */
static int load_batch_add(LoadBatch *b, LoadSource *src, const size_t *leader, size_t first, MsbError *err) {
        LoadImage *n = realloc(b->images, (b->n + 1) * sizeof(LoadImage));
        int r;

        if (!n)
                return -ENOMEM;
        b->images = n;
        LoadImage *img = &b->images[b->n++];
        *img = (LoadImage) {};
        r = load_image_refs(src, leader, first, src->req->tag, img, err);
        if (r < 0)
                return r;
        return load_prepare_image(src, src->candidates[first].digest, img, err);
}

int load_images(Store *store, const LoadRequest *req, json_t **ret, MsbError *err) {
        _cleanup_(load_source_done) LoadSource src = {
                .store = store, .req = req, .root_fd = -EBADF, .blobs_fd = -EBADF
        };
        _cleanup_(load_batch_done) LoadBatch batch = {};
        _cleanup_free_ size_t *leader = NULL;
        json_auto_t *handles = json_array();
        size_t distinct = 0, only = SIZE_MAX;
        int r;

        if (!handles)
                return -ENOMEM;
        r = load_source_scan(&src, err);
        if (r < 0)
                return r;

        /* Group the names by manifest: each distinct manifest loads once,
         * under all its names. Sorting keeps this linear-logarithmic for
         * sources naming thousands of references. */
        r = group_candidates(&src, &leader, &distinct);
        if (r < 0)
                return r;
        if (req->image) {
                r = select_image(&src, leader, req->image, &only, err);
                if (r < 0)
                        return r;
                distinct = 1;
        }
        if (req->tag && distinct > 1) {
                return msb_error_invalid_param(err, "tag",
                                               "the source holds %zu images; tag names only one: pick it with image",
                                               distinct);
        }

        for (size_t i = 0; i < src.n_candidates; i++) {
                if (leader[i] != i || (only != SIZE_MAX && i != only))
                        continue;
                r = load_batch_add(&batch, &src, leader, i, err);
                if (r < 0)
                        return r;
        }
        r = load_batch_commit(&batch, handles, err);
        if (r < 0)
                return r;
        load_emit(&src, json_pack("{s:s, s:I}", "event", "complete", "images", (json_int_t) batch.n));
        *ret = TAKE_PTR(handles);
        return 0;
}
