/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the ingest path (daemon/image/ingest.c), by which load and pull
 * put an image into a temporary store: the config must match its
 * descriptor and list one diff_id per layer, each layer is checked and
 * converted once (shared layers are found cached), the commit writes the
 * manifest, config, fsmeta and VMDK, and until then leases keep a prune
 * from taking anything.
 *
 * Layers are real tar streams made here with libarchive, plain and gzip.
 */

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "digest.h"
#include "ingest.h"
#include "store.h"
#include "testdir.h"

#define LAYER_BUFFER_BYTES (256 * KiB)

typedef struct Layer {
        const char *media_type;
        char *blob;
        size_t blob_size;
        char blob_digest[DIGEST_STRING_MAX];
        char diff_id[DIGEST_STRING_MAX];
} Layer;

static void layer_done(Layer *l) {
        free(l->blob);
}

/* A tar of one directory and one file holding content; gzip-compressed
 * when gzip. */
static void make_tar(const char *content, bool gzip, char **ret, size_t *ret_size) {
        struct archive *a = archive_write_new();
        struct archive_entry *e;
        char *buf = malloc(LAYER_BUFFER_BYTES);
        size_t used = 0;

        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        if (gzip)
                ck_assert_int_eq(archive_write_add_filter_gzip(a), ARCHIVE_OK);
        else
                ck_assert_int_eq(archive_write_add_filter_none(a), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_memory(a, buf, LAYER_BUFFER_BYTES, &used), ARCHIVE_OK);

        e = archive_entry_new();
        archive_entry_set_pathname(e, "etc");
        archive_entry_set_filetype(e, AE_IFDIR);
        archive_entry_set_perm(e, 0755);
        archive_entry_set_mtime(e, 1700000000, 0);
        ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        archive_entry_clear(e);
        archive_entry_set_pathname(e, "etc/content");
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t) strlen(content));
        archive_entry_set_mtime(e, 1700000000, 0);
        ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_data(a, content, strlen(content)), (la_ssize_t) strlen(content));
        archive_entry_free(e);
        ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);

        *ret = buf;
        *ret_size = used;
}

static void make_layer(const char *content, bool gzip, Layer *ret) {
        _cleanup_free_ char *tar = NULL;
        size_t tar_size;

        *ret = (Layer) { .media_type = gzip ? OCI_MEDIA_TYPE_LAYER_GZIP : OCI_MEDIA_TYPE_LAYER_TAR };
        make_tar(content, false, &tar, &tar_size);
        ck_assert_int_eq(digest_buffer(tar, tar_size, ret->diff_id), 0);
        if (gzip)
                make_tar(content, true, &ret->blob, &ret->blob_size);
        else {
                ret->blob = TAKE_PTR(tar);
                ret->blob_size = tar_size;
        }
        ck_assert_int_eq(digest_buffer(ret->blob, ret->blob_size, ret->blob_digest), 0);
}

typedef struct Image {
        char *config;
        char *manifest;
        char config_digest[DIGEST_STRING_MAX];
        char manifest_digest[DIGEST_STRING_MAX];
} Image;

static void image_done(Image *img) {
        free(img->config);
        free(img->manifest);
}

/* The config lists diff_ids (n_diff_ids of them, the layers' own when NULL);
 * the manifest describes the layers and config_descriptor_digest (the
 * config's own when NULL). */
static void make_image(const Layer *layers, size_t n, const char *const *diff_ids, size_t n_diff_ids,
                       const char *config_descriptor_digest, Image *ret) {
        json_auto_t *config = NULL, *manifest = NULL, *ids = json_array(), *descs = json_array();

        *ret = (Image) {};
        for (size_t i = 0; i < (diff_ids ? n_diff_ids : n); i++)
                json_array_append_new(ids, json_string(diff_ids ? diff_ids[i] : layers[i].diff_id));
        for (size_t i = 0; i < n; i++)
                json_array_append_new(descs, json_pack("{s:s, s:s, s:I}", "mediaType", layers[i].media_type, "digest",
                                                       layers[i].blob_digest, "size", (json_int_t) layers[i].blob_size));
        config = json_pack("{s:s, s:s, s:{s:[s]}, s:{s:s, s:O}}", "architecture", "arm64", "os", "linux", "config",
                           "Env", "A=1", "rootfs", "type", "layers", "diff_ids", ids);
        ret->config = json_dumps(config, JSON_COMPACT);
        ck_assert_int_eq(digest_buffer(ret->config, strlen(ret->config), ret->config_digest), 0);
        manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:O}", "schemaVersion", 2, "mediaType",
                             OCI_MEDIA_TYPE_MANIFEST, "config", "mediaType", OCI_MEDIA_TYPE_CONFIG, "digest",
                             config_descriptor_digest ?: ret->config_digest, "size",
                             (json_int_t) strlen(ret->config), "layers", descs);
        ret->manifest = json_dumps(manifest, JSON_COMPACT);
        ck_assert_int_eq(digest_buffer(ret->manifest, strlen(ret->manifest), ret->manifest_digest), 0);
}

static int new_ingest(Store *s, const Image *img, Ingest **ret, MsbError *err) {
        return ingest_new(s, img->manifest_digest, img->manifest, strlen(img->manifest), img->config,
                          strlen(img->config), ret, err);
}

/* The blob as a file, as load and pull hand it over. */
static int blob_fd(const TestDir *t, const Layer *l) {
        char path[128];
        int fd;

        snprintf(path, sizeof(path), "%s/blob-XXXXXX", t->path);
        fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(write_all(fd, l->blob, l->blob_size), 0);
        /* Left at the end on purpose: the converter reads from offset 0. */
        return fd;
}

static void convert(const TestDir *t, Ingest *in, size_t i, const Layer *l) {
        _cleanup_close_ int fd = blob_fd(t, l);
        MsbError err = {};
        int r = ingest_convert_layer(in, i, fd, INGEST_BLOB_UNCHECKED, &err);
        ck_assert_msg(r == 0, "layer %zu: %d %s", i, r, err.message);
}

static json_t *prune(Store *s) {
        json_t *report = NULL;
        MsbError err = {};
        ck_assert_int_eq(store_image_prune(s, STORE_PRUNE_ALL, &report, &err), 0);
        return report;
}

START_TEST(test_ingest_commit) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(ingest_freep) Ingest *in = NULL;
        _cleanup_(layer_done) Layer l0 = {}, l1 = {};
        _cleanup_(image_done) Image img = {};
        char *refs[] = { (char *) "docker.io/library/ingested:1", (char *) "docker.io/library/ingested:2" };
        json_auto_t *handle = NULL;
        MsbError err = {};

        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_layer("plain tar layer\n", false, &l0);
        make_layer("gzip layer\n", true, &l1);
        ck_assert_str_eq(l0.blob_digest, l0.diff_id);
        ck_assert_str_ne(l1.blob_digest, l1.diff_id);
        Layer layers[] = { l0, l1 };
        make_image(layers, 2, NULL, 0, NULL, &img);

        ck_assert_int_eq(new_ingest(s, &img, &in, &err), 0);
        ck_assert_uint_eq(ingest_n_layers(in), 2);
        ck_assert_str_eq(ingest_layer(in, 1)->diff_id, l1.diff_id);
        ck_assert_str_eq(ingest_layer(in, 1)->blob_digest, l1.blob_digest);
        ck_assert_str_eq(ingest_layer(in, 1)->media_type, OCI_MEDIA_TYPE_LAYER_GZIP);
        ck_assert_uint_eq(ingest_layer(in, 1)->size, l1.blob_size);
        ck_assert_ptr_null(ingest_layer(in, 2));
        ck_assert(!ingest_layer_cached(in, 0));

        /* Committing before the layers are converted is a bug of the caller. */
        ck_assert_int_lt(ingest_commit(in, refs, 2, &handle, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INTERNAL_ERROR);
        msb_error_clear(&err);

        convert(&t, in, 0, &l0);
        convert(&t, in, 1, &l1);
        ck_assert(ingest_layer_cached(in, 1));
        ck_assert_int_eq(ingest_commit(in, refs, 2, &handle, &err), 0);
        ck_assert_str_eq(json_string_value(json_object_get(handle, "reference")), refs[0]);
        ck_assert_str_eq(json_string_value(json_object_get(handle, "manifest_digest")), img.manifest_digest);
        ck_assert_str_eq(json_string_value(json_object_get(handle, "architecture")), "arm64");
        ck_assert_int_eq(json_integer_value(json_object_get(handle, "layer_count")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(handle, "size_bytes")),
                         (json_int_t) (l0.blob_size + l1.blob_size));

        /* The manifest and config are stored as received. */
        _cleanup_free_ char *mpath = store_blob_path(s, img.manifest_digest), *cpath = store_blob_path(s, img.config_digest);
        _cleanup_free_ char *mdata = NULL, *cdata = NULL;
        size_t size;
        ck_assert_int_eq(read_file_bounded(mpath, 1 * MiB, &mdata, &size), 0);
        ck_assert_str_eq(mdata, img.manifest);
        ck_assert_int_eq(read_file_bounded(cpath, 1 * MiB, &cdata, &size), 0);
        ck_assert_str_eq(cdata, img.config);

        /* Each layer is an EROFS image whose size the index records; fsmeta and VMDK exist. */
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        ck_assert_int_eq(image_spec_parse("ingested:2", &spec, NULL), 0);
        json_auto_t *detail = NULL;
        ck_assert_int_eq(store_image_inspect(s, spec, &detail, &err), 0);
        for (size_t i = 0; i < 2; i++) {
                json_t *l = json_array_get(json_object_get(detail, "layers"), i);
                _cleanup_free_ char *lp = store_layer_path(s, layers[i].diff_id);
                struct stat st;
                ck_assert_int_eq(stat(lp, &st), 0);
                ck_assert_int_gt(st.st_size, 0);
                ck_assert_int_eq(st.st_size % 4096, 0);
                ck_assert_int_eq(json_integer_value(json_object_get(l, "erofs_size_bytes")), st.st_size);
                ck_assert_str_eq(json_string_value(json_object_get(l, "diff_id")), layers[i].diff_id);
        }
        _cleanup_free_ char *fsmeta = store_fsmeta_path(s, img.manifest_digest),
                            *vmdk = store_vmdk_path(s, img.manifest_digest);
        ck_assert(access(fsmeta, F_OK) == 0);
        ck_assert(access(vmdk, F_OK) == 0);
        /* Nothing is left in tmp/. */
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

START_TEST(test_ingest_shared_layer_is_cached) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(layer_done) Layer base = {}, top = {};
        _cleanup_(image_done) Image a = {}, b = {};
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" };
        MsbError err = {};

        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_layer("shared base\n", true, &base);
        make_layer("b's top\n", true, &top);
        Layer la[] = { base }, lb[] = { base, top };
        make_image(la, 1, NULL, 0, NULL, &a);
        make_image(lb, 2, NULL, 0, NULL, &b);

        Ingest *in = NULL;
        ck_assert_int_eq(new_ingest(s, &a, &in, &err), 0);
        convert(&t, in, 0, &base);
        ck_assert_int_eq(ingest_commit(in, ra, 1, NULL, &err), 0);
        in = ingest_free(in);

        /* b finds the base converted: no blob needed for it. */
        ck_assert_int_eq(new_ingest(s, &b, &in, &err), 0);
        ck_assert(ingest_layer_cached(in, 0));
        ck_assert(!ingest_layer_cached(in, 1));
        convert(&t, in, 1, &top);
        ck_assert_int_eq(ingest_commit(in, rb, 1, NULL, &err), 0);
        in = ingest_free(in);

        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 2);
        ck_assert_uint_eq(test_store_count(s, "fsmeta/sha256"), 2);
}
END_TEST

START_TEST(test_ingest_config_must_match) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(layer_done) Layer l = {};
        _cleanup_(image_done) Image img = {};
        Ingest *in = NULL;
        MsbError err = {};

        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_layer("x\n", false, &l);

        /* The manifest names another config digest. */
        make_image(&l, 1, NULL, 0, "sha256:0000000000000000000000000000000000000000000000000000000000000000", &img);
        ck_assert_int_eq(new_ingest(s, &img, &in, &err), -EBADMSG);
        ck_assert_ptr_null(in);
        ck_assert_int_eq(err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "actual")), img.config_digest);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "expected")),
                         "sha256:0000000000000000000000000000000000000000000000000000000000000000");
        msb_error_clear(&err);
        image_done(&img);

        /* The right digest, but one byte more than the descriptor says. */
        make_image(&l, 1, NULL, 0, NULL, &img);
        _cleanup_free_ char *longer = NULL;
        ck_assert_int_ge(asprintf(&longer, "%s ", img.config), 0);
        ck_assert_int_lt(ingest_new(s, img.manifest_digest, img.manifest, strlen(img.manifest), longer, strlen(longer),
                                    &in, &err),
                         0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        msb_error_clear(&err);

        /* A manifest that does not parse never gets that far. */
        ck_assert_int_lt(ingest_new(s, img.manifest_digest, "{}", 2, img.config, strlen(img.config), &in, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_IMAGE);
        ck_assert_ptr_null(in);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_ingest_diff_ids_match_layers) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(layer_done) Layer l = {};
        Ingest *in = NULL;
        MsbError err = {};

        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_layer("y\n", false, &l);

        /* One layer, two diff_ids; one layer, none. */
        const char *two[] = { l.diff_id, l.diff_id };
        for (size_t n = 0; n <= 2; n += 2) {
                _cleanup_(image_done) Image img = {};
                make_image(&l, 1, two, n, NULL, &img);
                ck_assert_int_eq(new_ingest(s, &img, &in, &err), -EBADMSG);
                ck_assert_ptr_null(in);
                ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_IMAGE);
                ck_assert_msg(strstr(err.message, "diff_id"), "message '%s'", err.message);
                msb_error_clear(&err);
        }
}
END_TEST

/* Converts the first layer of in from l's blob, which must fail with
 * digest-mismatch (the blob's digest or the diff_id). */
static void assert_convert_mismatch(const TestDir *t, Ingest *in, const Layer *l, IngestBlobCheck check) {
        MsbError err = {};
        int fd = blob_fd(t, l);

        ck_assert_int_lt(ingest_convert_layer(in, 0, fd, check, &err), 0);
        close(fd);
        ck_assert_int_eq(err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        msb_error_clear(&err);
}

START_TEST(test_ingest_layer_verified) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(layer_done) Layer l = {}, other = {}, plain = {};
        _cleanup_(image_done) Image wrong_diff = {}, wrong_blob = {}, wrong_plain = {}, right_plain = {};
        _cleanup_(ingest_freep) Ingest *in = NULL, *in2 = NULL, *in3 = NULL, *in4 = NULL;
        MsbError err = {};
        int fd;

        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_layer("the real layer\n", true, &l);
        make_layer("another layer\n", true, &other);

        /* The config claims another diff_id than the blob decompresses to. */
        const char *ids[] = { other.diff_id };
        make_image(&l, 1, ids, 1, NULL, &wrong_diff);
        ck_assert_int_eq(new_ingest(s, &wrong_diff, &in, &err), 0);
        assert_convert_mismatch(&t, in, &l, INGEST_BLOB_UNCHECKED);
        /* A blob its caller verified (a pull) is not hashed again, but its
         * diff_id is still checked: compressed, and a plain tar, whose blob
         * digest is its diff_id. */
        assert_convert_mismatch(&t, in, &l, INGEST_BLOB_VERIFIED);
        make_layer("a plain tar layer\n", false, &plain);
        make_image(&plain, 1, ids, 1, NULL, &wrong_plain);
        ck_assert_int_eq(new_ingest(s, &wrong_plain, &in3, &err), 0);
        assert_convert_mismatch(&t, in3, &plain, INGEST_BLOB_VERIFIED);
        make_image(&plain, 1, NULL, 0, NULL, &right_plain);
        ck_assert_int_eq(new_ingest(s, &right_plain, &in4, &err), 0);
        fd = blob_fd(&t, &plain);
        ck_assert_int_eq(ingest_convert_layer(in4, 0, fd, INGEST_BLOB_VERIFIED, &err), 0);
        close(fd);
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 1);
        ingest_abort(in4);
        /* Nothing of it all stays: no layer image, no temp file. */
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 0);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
        char *refs[] = { (char *) "docker.io/library/never:1" };
        ck_assert_int_lt(ingest_commit(in, refs, 1, NULL, &err), 0);
        msb_error_clear(&err);

        /* The manifest describes the blob with a digest the bytes do not have. */
        Layer swapped = l;
        memcpy(swapped.blob_digest, other.blob_digest, sizeof(swapped.blob_digest));
        make_image(&swapped, 1, NULL, 0, NULL, &wrong_blob);
        ck_assert_int_eq(new_ingest(s, &wrong_blob, &in2, &err), 0);
        assert_convert_mismatch(&t, in2, &l, INGEST_BLOB_UNCHECKED);
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 0);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);

        /* A layer index past the end is refused. */
        fd = blob_fd(&t, &l);
        ck_assert_int_lt(ingest_convert_layer(in2, 1, fd, INGEST_BLOB_UNCHECKED, &err), 0);
        close(fd);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_ingest_leases_hold_until_free) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(layer_done) Layer l = {};
        _cleanup_(image_done) Image img = {};
        Ingest *in = NULL;
        MsbError err = {};

        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_layer("leased while in flight\n", true, &l);
        make_image(&l, 1, NULL, 0, NULL, &img);
        ck_assert_int_eq(new_ingest(s, &img, &in, &err), 0);
        convert(&t, in, 0, &l);
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 1);

        /* A prune while the ingest lives (converted, not committed) keeps the layer. */
        json_auto_t *r1 = prune(s);
        ck_assert_int_eq(json_integer_value(json_object_get(r1, "layers_removed")), 0);
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 1);

        /* Abandoned: the next prune takes it. */
        in = ingest_free(in);
        json_auto_t *r2 = prune(s);
        ck_assert_int_eq(json_integer_value(json_object_get(r2, "layers_removed")), 1);
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 0);
}
END_TEST

START_TEST(test_ingest_without_layers) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(image_done) Image img = {};
        _cleanup_(ingest_freep) Ingest *in = NULL;
        char *refs[] = { (char *) "docker.io/library/empty:1" };
        json_auto_t *handle = NULL;
        MsbError err = {};

        /* Legal in OCI; indexed without fsmeta or VMDK. */
        test_dir_init(&t, "ingest");
        s = test_store_open(t.store);
        make_image(NULL, 0, NULL, 0, NULL, &img);
        ck_assert_int_eq(new_ingest(s, &img, &in, &err), 0);
        ck_assert_uint_eq(ingest_n_layers(in), 0);
        ck_assert_int_eq(ingest_commit(in, refs, 1, &handle, &err), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(handle, "layer_count")), 0);
        ck_assert_uint_eq(test_store_count(s, "fsmeta/sha256"), 0);
        ck_assert_uint_eq(test_store_count(s, "vmdk/sha256"), 0);
        ck_assert_uint_eq(test_store_count(s, "blobs/sha256"), 2);
}
END_TEST

static Suite *ingest_suite(void) {
        Suite *s = suite_create("ingest");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_ingest_commit);
        tcase_add_test(tc, test_ingest_shared_layer_is_cached);
        tcase_add_test(tc, test_ingest_config_must_match);
        tcase_add_test(tc, test_ingest_diff_ids_match_layers);
        tcase_add_test(tc, test_ingest_layer_verified);
        tcase_add_test(tc, test_ingest_leases_hold_until_free);
        tcase_add_test(tc, test_ingest_without_layers);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(ingest_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
