/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of the store (daemon/store/store.c) on a temporary directory: the
 * layout and the lock, temp files, commits and queries, remove with and
 * without pins, prune's exact counts, leases, the sweep at open that
 * repairs what a crash (or a hand) left behind, the disk budget's
 * evictions, prune by age, and the events the store reports.
 *
 * Images are made here from real bytes: layer files, a config and a manifest
 * whose digests are computed, written through the store's own file path
 * helpers, then committed as ingest would.
 */

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "digest.h"
#include "oci.h"
#include "store-internal.h"
#include "store.h"
#include "testdir.h"

#define TEST_LAYERS_MAX 4

typedef struct TestImage {
        char manifest_digest[DIGEST_STRING_MAX];
        char config_digest[DIGEST_STRING_MAX];
        size_t n_layers;
        char diff_ids[TEST_LAYERS_MAX][DIGEST_STRING_MAX];
        char blob_digests[TEST_LAYERS_MAX][DIGEST_STRING_MAX];
        uint64_t compressed_sizes[TEST_LAYERS_MAX];
        bool with_fsmeta;
} TestImage;

/* What a client names an image by: a reference, a digest or a prefix of one. */
static ImageSpec *spec(const char *s) {
        ImageSpec *r = NULL;
        ck_assert_int_eq(image_spec_parse(s, &r, NULL), 0);
        return r;
}

static char *path_in(const char *dir, const char *name) {
        char *p;
        ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
        return p;
}

static bool exists(const char *path) {
        return access(path, F_OK) == 0;
}

static uint64_t allocated(const char *path) {
        struct stat st;
        ck_assert_msg(lstat(path, &st) == 0, "%s: %m", path);
        return (uint64_t) st.st_blocks * 512;
}

static unsigned count_content_files(const Store *s) {
        return test_store_count(s, "blobs/sha256") + test_store_count(s, "layers/sha256") +
               test_store_count(s, "fsmeta/sha256") + test_store_count(s, "vmdk/sha256");
}

static void write_content(Store *s, char *path, const char *data) {
        _cleanup_free_ char *p = path;
        ck_assert_ptr_nonnull(p);
        ck_assert_int_eq(store_write_file(s, p, data, strlen(data)), 0);
        ck_assert(exists(p));
}

/* A layer whose "EROFS file" holds content; its diff_id is the content's digest. */
static void make_layer(Store *s, const char *content, char diff_id[DIGEST_STRING_MAX]) {
        ck_assert_int_eq(digest_buffer(content, strlen(content), diff_id), 0);
        write_content(s, store_layer_path(s, diff_id), content);
        ck_assert_int_eq(store_layer_add(s, diff_id, strlen(content)), 0);
}

/*
 * Makes and commits an image whose layers have the given contents (equal
 * contents are shared layers), under n_refs canonical references.
 */
static void make_image(Store *s, const char *name, const char *const *layers, size_t n_layers, bool with_fsmeta,
                       char *const *refs, size_t n_refs, TestImage *ret) {
        _cleanup_free_ char *config = NULL, *manifest = NULL, *diff_ids = NULL, *descs = NULL;
        StoreLayer sl[TEST_LAYERS_MAX] = {};
        TestImage img = { .n_layers = n_layers, .with_fsmeta = with_fsmeta };
        MsbError err = {};
        int r;

        ck_assert_uint_le(n_layers, TEST_LAYERS_MAX);
        diff_ids = strdup("");
        descs = strdup("");
        for (size_t i = 0; i < n_layers; i++) {
                _cleanup_free_ char *blob = NULL;
                char *t;

                make_layer(s, layers[i], img.diff_ids[i]);
                /* The compressed blob is not kept (only its EROFS image is);
                 * its digest and size are what the manifest says. */
                ck_assert_int_ge(asprintf(&blob, "gzip(%s)", layers[i]), 0);
                ck_assert_int_eq(digest_buffer(blob, strlen(blob), img.blob_digests[i]), 0);
                img.compressed_sizes[i] = strlen(blob) * 10 + i;

                ck_assert_int_ge(asprintf(&t, "%s%s\"%s\"", diff_ids, i ? "," : "", img.diff_ids[i]), 0);
                free(diff_ids);
                diff_ids = t;
                ck_assert_int_ge(asprintf(&t,
                                          "%s%s{\"mediaType\":\"" OCI_MEDIA_TYPE_LAYER_GZIP "\",\"digest\":\"%s\","
                                          "\"size\":%" PRIu64 "}",
                                          descs, i ? "," : "", img.blob_digests[i], img.compressed_sizes[i]),
                                 0);
                free(descs);
                descs = t;
                sl[i] = (StoreLayer) { img.blob_digests[i], img.diff_ids[i], (char *) OCI_MEDIA_TYPE_LAYER_GZIP,
                                       img.compressed_sizes[i] };
        }

        ck_assert_int_ge(asprintf(&config,
                                  "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"NAME=%s\"]},"
                                  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[%s]}}",
                                  name, diff_ids),
                         0);
        ck_assert_int_eq(digest_buffer(config, strlen(config), img.config_digest), 0);
        write_content(s, store_blob_path(s, img.config_digest), config);

        ck_assert_int_ge(asprintf(&manifest,
                                  "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                                  "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                                  "\"digest\":\"%s\",\"size\":%zu},\"layers\":[%s]}",
                                  img.config_digest, strlen(config), descs),
                         0);
        ck_assert_int_eq(digest_buffer(manifest, strlen(manifest), img.manifest_digest), 0);
        write_content(s, store_blob_path(s, img.manifest_digest), manifest);

        StoreManifest m = {
                .digest = img.manifest_digest,
                .media_type = (char *) "application/vnd.oci.image.manifest.v1+json",
                .size = strlen(manifest),
                .config_digest = img.config_digest,
                .config_size = strlen(config),
                .architecture = (char *) "amd64",
                .os = (char *) "linux",
                .layers = sl,
                .n_layers = n_layers,
        };
        if (with_fsmeta) {
                _cleanup_free_ char *fsmeta = NULL, *vmdk = NULL;
                ck_assert_int_ge(asprintf(&fsmeta, "fsmeta of %s", name), 0);
                ck_assert_int_ge(asprintf(&vmdk, "# Disk DescriptorFile of %s\n", name), 0);
                write_content(s, store_fsmeta_path(s, img.manifest_digest), fsmeta);
                write_content(s, store_vmdk_path(s, img.manifest_digest), vmdk);
                m.fsmeta_size = strlen(fsmeta);
                m.vmdk_size = strlen(vmdk);
        }

        r = store_image_commit(s, &m, refs, n_refs, &err);
        ck_assert_msg(r == 0, "store_image_commit(%s): %d %s", name, r, err.message);
        msb_error_clear(&err);
        if (ret)
                *ret = img;
}

/* Every file an image's manifest names, as absolute paths (NULL-terminated). */
static char **image_files(Store *s, const TestImage *img) {
        char **v = calloc(2 * TEST_LAYERS_MAX + 8, sizeof(char *));
        size_t n = 0;

        ck_assert_ptr_nonnull(v);
        v[n++] = store_blob_path(s, img->manifest_digest);
        v[n++] = store_blob_path(s, img->config_digest);
        if (img->with_fsmeta) {
                v[n++] = store_fsmeta_path(s, img->manifest_digest);
                v[n++] = store_vmdk_path(s, img->manifest_digest);
        }
        for (size_t i = 0; i < img->n_layers; i++)
                v[n++] = store_layer_path(s, img->diff_ids[i]);
        return v;
}

static void strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void strv_freep(char ***v) {
        strv_free(*v);
}
#define _cleanup_strv_ _cleanup_(strv_freep)

static void expect_files(char **v, bool present) {
        for (size_t i = 0; v[i]; i++)
                ck_assert_msg(exists(v[i]) == present, "%s should %s", v[i], present ? "exist" : "be gone");
}

/* Looks up through a reader, as the loop thread does. */
static json_t *get(Store *s, const char *reference, MsbError *err) {
        _cleanup_(image_spec_freep) ImageSpec *r = spec(reference);
        _cleanup_(store_reader_freep) StoreReader *rd = NULL;
        json_t *h = NULL;

        ck_assert_int_eq(store_reader_new(s, &rd), 0);
        if (store_reader_image_get(rd, r, &h, err) < 0)
                return NULL;
        ck_assert_ptr_nonnull(h);
        return h;
}

static void expect_not_found(Store *s, const char *reference) {
        MsbError err = {};
        json_auto_t *h = get(s, reference, &err);

        ck_assert_msg(!h, "%s is still there", reference);
        ck_assert(err.set);
        ck_assert_int_eq(err.kind, PROTO_ERROR_IMAGE_NOT_FOUND);
        msb_error_clear(&err);
}

static int remove_image(Store *s, const char *reference, bool force, MsbError *err) {
        _cleanup_(image_spec_freep) ImageSpec *r = spec(reference);
        return store_image_remove(s, r, force, err);
}

static json_t *prune(Store *s) {
        MsbError err = {};
        json_t *report = NULL;
        int r = store_image_prune(s, STORE_PRUNE_ALL, &report, &err);

        ck_assert_msg(r == 0, "prune: %d %s", r, err.message);
        ck_assert_ptr_nonnull(report);
        return report;
}

static json_int_t report_int(json_t *report, const char *key) {
        json_t *v = json_object_get(report, key);
        ck_assert_msg(json_is_integer(v), "report has no integer %s", key);
        return json_integer_value(v);
}

static void expect_report(json_t *report, json_int_t refs, json_int_t manifests, json_int_t layers,
                          json_int_t fsmeta, json_int_t vmdk) {
        ck_assert_int_eq(report_int(report, "image_refs_removed"), refs);
        ck_assert_int_eq(report_int(report, "manifests_removed"), manifests);
        ck_assert_int_eq(report_int(report, "layers_removed"), layers);
        ck_assert_int_eq(report_int(report, "fsmeta_removed"), fsmeta);
        ck_assert_int_eq(report_int(report, "vmdk_removed"), vmdk);
        ck_assert_uint_eq(json_object_size(report), 6);
}

static void pin(Store *s, const char *kind, const char *name, const char *reference, json_t **ret_rootfs) {
        _cleanup_(image_spec_freep) ImageSpec *r = spec(reference);
        json_t *rootfs = NULL;
        MsbError err = {};
        int ret = store_pin_add(s, kind, name, r, &rootfs, &err);

        ck_assert_msg(ret == 0, "pin.add %s/%s: %d %s", kind, name, ret, err.message);
        ck_assert_ptr_nonnull(rootfs);
        if (ret_rootfs)
                *ret_rootfs = rootfs;
        else
                json_decref(rootfs);
}

static void write_content_raw(const char *path) {
        FILE *f = fopen(path, "w");
        ck_assert_msg(f, "%s: %m", path);
        fputs("not a directory", f);
        ck_assert_int_eq(fclose(f), 0);
}

/* ---- open and lock ---- */

START_TEST(test_open_creates_layout) {
        _cleanup_test_dir_ TestDir t;
        static const char *const dirs[] = { "blobs/sha256", "layers/sha256", "fsmeta/sha256", "vmdk/sha256", "tmp" };
        struct stat st;
        char pid[32];

        test_dir_init(&t, "store");
        Store *s = test_store_open(t.store);

        ck_assert_str_eq(store_path(s), t.store);
        ck_assert_int_eq(stat(t.store, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0700);
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_free_ char *p = path_in(t.store, dirs[i]);
                ck_assert_msg(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s missing", dirs[i]);
                ck_assert_int_eq(st.st_mode & 07777, 0700);
                ck_assert_uint_eq(test_store_count(s, dirs[i]), 0);
        }
        _cleanup_free_ char *tmp = path_in(t.store, "tmp");
        ck_assert_str_eq(store_tmp_dir(s), tmp);

        /* The lock file names the holder. */
        _cleanup_free_ char *lock = path_in(t.store, "lock"), *data = NULL;
        size_t size;
        ck_assert_int_eq(read_file_bounded(lock, 64, &data, &size), 0);
        snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
        ck_assert_str_eq(data, pid);

        /* The index is SQLite in WAL mode at the current schema version. */
        _cleanup_free_ char *db_path = path_in(t.store, "index.db");
        sqlite3 *db = NULL;
        sqlite3_stmt *q = NULL;
        ck_assert_int_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        ck_assert_int_eq(sqlite3_column_int(q, 0), STORE_SCHEMA_VERSION);
        sqlite3_finalize(q);
        ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        ck_assert_str_eq((const char *) sqlite3_column_text(q, 0), "wal");
        sqlite3_finalize(q);
        sqlite3_close(db);

        /* A fresh store has nothing to sweep. */
        ck_assert_uint_eq(store_sweep_stats(s)->tmp_removed, 0);
        ck_assert_uint_eq(store_sweep_stats(s)->files_removed, 0);
        ck_assert_uint_eq(store_sweep_stats(s)->rows_dropped, 0);

        /* Closing releases the lock: the store opens again. */
        store_free(s);
        s = test_store_open(t.store);
        store_free(s);
        ck_assert_ptr_null(store_free(NULL));
}
END_TEST

START_TEST(test_open_twice_in_one_process) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        Store *again = NULL;
        MsbError err = {};
        char want[64];

        /* flock() belongs to the open file description, so a second open in
         * the same process conflicts like another daemon would. */
        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        ck_assert_int_eq(store_open(t.store, &again, &err), -EBUSY);
        ck_assert_ptr_null(again);
        ck_assert(err.set);
        ck_assert_int_eq(err.kind, PROTO_ERROR_STORE_ERROR);
        snprintf(want, sizeof(want), "pid %d", (int) getpid());
        ck_assert_msg(strstr(err.message, want), "message '%s' does not name %s", err.message, want);
        msb_error_clear(&err);

        /* The failed attempt neither broke the holder's lock nor its pid record. */
        ck_assert_int_eq(store_open(t.store, &again, &err), -EBUSY);
        ck_assert(strstr(err.message, want));
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_open_held_by_another_process) {
        _cleanup_test_dir_ TestDir t;
        int ready[2], release[2];
        Store *s = NULL;
        MsbError err = {};
        char want[64], c;
        pid_t child;
        int status;

        test_dir_init(&t, "store");
        ck_assert_int_eq(pipe(ready), 0);
        ck_assert_int_eq(pipe(release), 0);
        child = fork();
        ck_assert_int_ge(child, 0);
        if (child == 0) {
                Store *held = NULL;
                close(ready[0]);
                close(release[1]);
                if (store_open(t.store, &held, NULL) < 0)
                        _exit(1);
                if (write(ready[1], "r", 1) != 1)
                        _exit(2);
                /* Hold the store until the parent closes its end. */
                if (read(release[0], &c, 1) < 0)
                        _exit(3);
                store_free(held);
                _exit(0);
        }
        close(ready[1]);
        close(release[0]);
        ck_assert_int_eq(read(ready[0], &c, 1), 1);

        ck_assert_int_eq(store_open(t.store, &s, &err), -EBUSY);
        ck_assert_ptr_null(s);
        snprintf(want, sizeof(want), "pid %d", (int) child);
        ck_assert_msg(strstr(err.message, want), "message '%s' does not name %s", err.message, want);
        msb_error_clear(&err);

        close(release[1]);
        ck_assert_int_eq(waitpid(child, &status, 0), child);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(ready[0]);

        /* Once the holder is gone the store is ours, and says so. */
        s = test_store_open(t.store);
        _cleanup_free_ char *lock = path_in(t.store, "lock"), *data = NULL;
        size_t size;
        ck_assert_int_eq(read_file_bounded(lock, 64, &data, &size), 0);
        snprintf(want, sizeof(want), "%d\n", (int) getpid());
        ck_assert_str_eq(data, want);
        store_free(s);
}
END_TEST

START_TEST(test_open_newer_schema_refused) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_free_ char *db_path = NULL;
        Store *s = NULL;
        MsbError err = {};
        sqlite3 *db = NULL;

        test_dir_init(&t, "store");
        store_free(test_store_open(t.store));

        /* An index written by a newer daemon is not touched by this one. */
        db_path = path_in(t.store, "index.db");
        ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);

        ck_assert_int_lt(store_open(t.store, &s, &err), 0);
        ck_assert_ptr_null(s);
        ck_assert_int_eq(err.kind, PROTO_ERROR_STORE_ERROR);
        ck_assert_msg(strstr(err.message, "99"), "message '%s'", err.message);
        msb_error_clear(&err);
}
END_TEST

/* ---- temp files ---- */

START_TEST(test_tmpfile_publish_and_discard) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *tmp = NULL, *tmp2 = NULL, *final = NULL, *data = NULL;
        char digest[DIGEST_STRING_MAX];
        struct stat st;
        size_t size;
        int fd;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);

        ck_assert_int_eq(store_tmpfile(s, "blob", &fd, &tmp), 0);
        ck_assert_int_ge(fd, 0);
        ck_assert(startswith(tmp, store_tmp_dir(s)));
        ck_assert(strstr(tmp, "blob"));
        ck_assert_int_eq(stat(tmp, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0600);
        ck_assert_int_eq(st.st_size, 0);

        ck_assert_int_eq(write_all(fd, "hello", 5), 0);
        ck_assert_int_eq(digest_buffer("hello", 5, digest), 0);
        final = store_blob_path(s, digest);
        ck_assert_ptr_nonnull(final);
        /* Not visible under its final name before it is published. */
        ck_assert(!exists(final));
        ck_assert_int_eq(store_tmpfile_publish(s, fd, tmp, final), 0);
        close(fd);
        ck_assert(!exists(tmp));
        ck_assert_int_eq(read_file_bounded(final, 64, &data, &size), 0);
        ck_assert_str_eq(data, "hello");
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);

        /* Two temp files never share a name; a discarded one is gone. */
        ck_assert_int_eq(store_tmpfile(s, "blob", &fd, &tmp2), 0);
        ck_assert_str_ne(tmp, tmp2);
        ck_assert(exists(tmp2));
        store_tmpfile_discard(s, tmp2);
        close(fd);
        ck_assert(!exists(tmp2));
        store_tmpfile_discard(s, NULL);
}
END_TEST

START_TEST(test_write_file_keeps_existing) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *path = NULL, *data = NULL;
        char digest[DIGEST_STRING_MAX];
        size_t size;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        ck_assert_int_eq(digest_buffer("one", 3, digest), 0);
        path = store_blob_path(s, digest);
        ck_assert_int_eq(store_write_file(s, path, "one", 3), 0);
        /* Content-addressed: a file that exists is already right; it is not rewritten. */
        ck_assert_int_eq(store_write_file(s, path, "two", 3), 0);
        ck_assert_int_eq(read_file_bounded(path, 64, &data, &size), 0);
        ck_assert_str_eq(data, "one");
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);

        /* Paths come only from valid digests. */
        ck_assert_ptr_null(store_blob_path(s, "sha256:abc"));
        ck_assert_ptr_null(store_layer_path(s, "../../etc/passwd"));
        ck_assert_ptr_null(store_fsmeta_path(s, "md5:d41d8cd98f00b204e9800998ecf8427e"));
}
END_TEST

/* ---- commit and queries ---- */

START_TEST(test_commit_get_inspect) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const layers[] = { "base layer", "app layer" };
        char *refs[] = { (char *) "docker.io/library/alpine:latest", (char *) "docker.io/library/alpine:3.20" };
        json_auto_t *h = NULL, *detail = NULL;
        _cleanup_strv_ char **files = NULL;
        TestImage img;
        MsbError err = {};
        int64_t before = now_ms();

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "alpine", layers, 2, true, refs, 2, &img);
        files = image_files(s, &img);
        expect_files(files, true);

        h = get(s, "alpine", &err);
        ck_assert_msg(h, "get alpine: %s", err.message);
        ck_assert_str_eq(json_string_value(json_object_get(h, "reference")), "docker.io/library/alpine:latest");
        ck_assert_str_eq(json_string_value(json_object_get(h, "manifest_digest")), img.manifest_digest);
        ck_assert_str_eq(json_string_value(json_object_get(h, "architecture")), "amd64");
        ck_assert_str_eq(json_string_value(json_object_get(h, "os")), "linux");
        ck_assert_int_eq(json_integer_value(json_object_get(h, "layer_count")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(h, "size_bytes")),
                         (json_int_t) (img.compressed_sizes[0] + img.compressed_sizes[1]));
        json_int_t created = json_integer_value(json_object_get(h, "created_at"));
        ck_assert_int_ge(created, before);
        ck_assert_int_le(created, now_ms());
        ck_assert_int_eq(json_integer_value(json_object_get(h, "last_used_at")), created);
        ck_assert_uint_eq(json_object_size(h), 8);

        /* The same image by its other tag, and from a worker thread's connection. */
        _cleanup_(image_spec_freep) ImageSpec *r320 = spec("alpine:3.20");
        json_auto_t *h2 = NULL;
        ck_assert_int_eq(store_image_get(s, r320, &h2, NULL), 0);
        ck_assert_str_eq(json_string_value(json_object_get(h2, "reference")), "docker.io/library/alpine:3.20");
        ck_assert_str_eq(json_string_value(json_object_get(h2, "manifest_digest")), img.manifest_digest);

        /* Inspect: layers bottom to top with their sizes, and the config digest. */
        _cleanup_(image_spec_freep) ImageSpec *r = spec("docker.io/library/alpine");
        ck_assert_int_eq(store_image_inspect(s, r, &detail, &err), 0);
        ck_assert(json_equal(json_object_get(detail, "handle"), h));
        ck_assert_str_eq(json_string_value(json_object_get(detail, "config_digest")), img.config_digest);
        json_t *ls = json_object_get(detail, "layers");
        ck_assert_uint_eq(json_array_size(ls), 2);
        for (size_t i = 0; i < 2; i++) {
                json_t *l = json_array_get(ls, i);
                ck_assert_int_eq(json_integer_value(json_object_get(l, "position")), (json_int_t) i);
                ck_assert_str_eq(json_string_value(json_object_get(l, "diff_id")), img.diff_ids[i]);
                ck_assert_str_eq(json_string_value(json_object_get(l, "blob_digest")), img.blob_digests[i]);
                ck_assert_str_eq(json_string_value(json_object_get(l, "media_type")), OCI_MEDIA_TYPE_LAYER_GZIP);
                ck_assert_int_eq(json_integer_value(json_object_get(l, "compressed_size_bytes")),
                                 (json_int_t) img.compressed_sizes[i]);
                ck_assert_int_eq(json_integer_value(json_object_get(l, "erofs_size_bytes")),
                                 (json_int_t) strlen(layers[i]));
        }

        /* store_layer_lookup sees converted layers and their sizes. */
        uint64_t size = 0;
        ck_assert_int_eq(store_layer_lookup(s, img.diff_ids[1], &size), 1);
        ck_assert_uint_eq(size, strlen(layers[1]));
        char unknown[DIGEST_STRING_MAX];
        ck_assert_int_eq(digest_buffer("nope", 4, unknown), 0);
        ck_assert_int_eq(store_layer_lookup(s, unknown, &size), 0);
}
END_TEST

/* Commits a second manifest under a digest that shares all but the last hex
 * digit of img's (the same content under another name: the store does not
 * hash what it indexes), to make a prefix that names two images. */
static void make_twin(Store *s, const TestImage *img, char *ref, char twin[DIGEST_STRING_MAX]) {
        _cleanup_free_ char *from = store_blob_path(s, img->manifest_digest), *to = NULL, *data = NULL;
        StoreLayer sl = { (char *) img->blob_digests[0], (char *) img->diff_ids[0], (char *) OCI_MEDIA_TYPE_LAYER_GZIP,
                          img->compressed_sizes[0] };
        MsbError err = {};
        size_t size;

        snprintf(twin, DIGEST_STRING_MAX, "%s", img->manifest_digest);
        twin[strlen(twin) - 1] = twin[strlen(twin) - 1] == '0' ? '1' : '0';
        ck_assert_int_eq(read_file_bounded(from, 1 * MiB, &data, &size), 0);
        to = store_blob_path(s, twin);
        write_content(s, TAKE_PTR(to), data);
        StoreManifest m = {
                .digest = twin, .media_type = (char *) "application/vnd.oci.image.manifest.v1+json", .size = size,
                .config_digest = (char *) img->config_digest, .config_size = 1, .layers = &sl, .n_layers = 1,
        };
        ck_assert_int_eq(store_image_commit(s, &m, &ref, 1, &err), 0);
}

/* A manifest digest, or a unique prefix of its hex digits, names an image;
 * a prefix of several is ambiguous-reference listing them. */
START_TEST(test_get_by_digest_and_prefix) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const layers[] = { "busybox layer" };
        char *refs[] = { (char *) "docker.io/library/busybox:latest", (char *) "example.com/tools/busybox:1" };
        char twin[DIGEST_STRING_MAX], spelled[128];
        _cleanup_(msb_error_clear) MsbError err = {};
        TestImage img;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "busybox", layers, 1, false, refs, 2, &img);
        const char *hex = img.manifest_digest + strlen("sha256:");

        /* Full digest, bare ID, sha256: prefix and bare prefix: the newest reference. */
        snprintf(spelled, sizeof(spelled), "%.19s", img.manifest_digest);
        const char *spellings[] = { img.manifest_digest, hex, spelled, spelled + strlen("sha256:") };
        for (size_t i = 0; i < ELEMENTSOF(spellings); i++) {
                json_auto_t *h = get(s, spellings[i], &err);
                ck_assert_msg(h, "%s: %s", spellings[i], err.message);
                ck_assert_str_eq(json_string_value(json_object_get(h, "manifest_digest")), img.manifest_digest);
                ck_assert_str_eq(json_string_value(json_object_get(h, "reference")), refs[1]);
        }

        /* A twin sharing 63 digits: a short prefix is ambiguous, the full digest is not. */
        make_twin(s, &img, (char *) "docker.io/library/twin:1", twin);
        json_auto_t *none = get(s, spelled, &err);
        ck_assert_ptr_null(none);
        ck_assert_int_eq(err.kind, PROTO_ERROR_AMBIGUOUS_REFERENCE);
        json_t *candidates = json_object_get(err.data, "candidates");
        ck_assert_uint_eq(json_array_size(candidates), 2);
        ck_assert_str_eq(json_string_value(json_array_get(candidates, 0)), strcmp(twin, img.manifest_digest) < 0 ? twin : img.manifest_digest);
        msb_error_clear(&err);
        json_auto_t *h_twin = get(s, twin, &err);
        ck_assert_ptr_nonnull(h_twin);
        ck_assert_str_eq(json_string_value(json_object_get(h_twin, "reference")), "docker.io/library/twin:1");

        /* A name made of hex digits is a name first. */
        char hexname[64];
        snprintf(hexname, sizeof(hexname), "docker.io/library/%.12s:latest", hex);
        char *hexrefs[] = { hexname };
        static const char *const other_layers[] = { "other layer" };
        TestImage other;
        make_image(s, "other", other_layers, 1, false, hexrefs, 1, &other);
        snprintf(spelled, sizeof(spelled), "%.12s", hex);
        json_auto_t *h_named = get(s, spelled, &err);
        ck_assert_ptr_nonnull(h_named);
        ck_assert_str_eq(json_string_value(json_object_get(h_named, "manifest_digest")), other.manifest_digest);

        /* Removing by digest takes every reference of the image. */
        ck_assert_int_eq(remove_image(s, img.manifest_digest, false, &err), 0);
        expect_not_found(s, refs[0]);
        expect_not_found(s, refs[1]);
        json_auto_t *still = get(s, twin, &err);
        ck_assert_ptr_nonnull(still);
}
END_TEST

START_TEST(test_get_by_any_spelling) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const layers[] = { "busybox layer" };
        char *refs[] = { (char *) "docker.io/library/busybox:latest" };
        TestImage img, other;
        MsbError err = {};
        char spelled[256];

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "busybox", layers, 1, false, refs, 1, &img);

        static const char *const spellings[] = {
                "busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox:latest",
                "index.docker.io/library/busybox",
        };
        for (size_t i = 0; i < ELEMENTSOF(spellings); i++) {
                json_auto_t *h = get(s, spellings[i], &err);
                ck_assert_msg(h, "%s: %s", spellings[i], err.message);
                ck_assert_str_eq(json_string_value(json_object_get(h, "reference")), refs[0]);
        }

        /* A digest reference finds the tag of the same repository that points at it. */
        snprintf(spelled, sizeof(spelled), "busybox@%s", img.manifest_digest);
        json_auto_t *h = get(s, spelled, &err);
        ck_assert_msg(h, "%s: %s", spelled, err.message);
        ck_assert_str_eq(json_string_value(json_object_get(h, "manifest_digest")), img.manifest_digest);

        /* Not: another tag, another repository, another digest. */
        expect_not_found(s, "busybox:1.36");
        expect_not_found(s, "quay.io/library/busybox");
        snprintf(spelled, sizeof(spelled), "alpine@%s", img.manifest_digest);
        expect_not_found(s, spelled);
        static const char *const other_layers[] = { "other layer" };
        char *other_refs[] = { (char *) "docker.io/library/other:latest" };
        make_image(s, "other", other_layers, 1, false, other_refs, 1, &other);
        snprintf(spelled, sizeof(spelled), "busybox@%s", other.manifest_digest);
        expect_not_found(s, spelled);

        /* image-not-found names the canonical reference. */
        json_auto_t *none = get(s, "nope:1", &err);
        ck_assert_ptr_null(none);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "reference")), "docker.io/library/nope:1");
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_commit_under_digest_reference) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const layers[] = { "pulled by digest" };
        char digest_ref[256];
        char *refs[] = { digest_ref };
        TestImage img;
        MsbError err = {};

        /* An image pulled by digest has no tag: its reference is repo@digest,
         * and the repository is what comes before the '@'. */
        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "bydigest", layers, 1, false, NULL, 0, &img);
        snprintf(digest_ref, sizeof(digest_ref), "127.0.0.1:5000/team/app@%s", img.manifest_digest);
        make_image(s, "bydigest", layers, 1, false, refs, 1, NULL);

        json_auto_t *h = get(s, digest_ref, &err);
        ck_assert_msg(h, "%s: %s", digest_ref, err.message);
        ck_assert_str_eq(json_string_value(json_object_get(h, "reference")), digest_ref);
        /* The tag spelling of that repository is another reference. */
        expect_not_found(s, "127.0.0.1:5000/team/app:latest");
}
END_TEST

static json_t *list(Store *s) {
        MsbError err = {};
        json_t *l = NULL;

        ck_assert_int_eq(store_image_list(s, &l, &err), 0);
        ck_assert(json_is_array(l));
        return l;
}

static void expect_list(Store *s, const char *const *want, size_t n) {
        json_auto_t *l = list(s);

        ck_assert_uint_eq(json_array_size(l), n);
        for (size_t i = 0; i < n; i++)
                ck_assert_str_eq(json_string_value(json_object_get(json_array_get(l, i), "reference")), want[i]);
}

START_TEST(test_list_newest_first) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "a" }, *const lb[] = { "b" }, *const lc[] = { "c" };
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" },
             *rc[] = { (char *) "docker.io/library/c:1" };
        static const char *const order[] = { "docker.io/library/c:1", "docker.io/library/b:1", "docker.io/library/a:1" };
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        expect_list(s, NULL, 0);

        /* Committed within the same millisecond or not, the newest comes first. */
        make_image(s, "a", la, 1, false, ra, 1, NULL);
        make_image(s, "b", lb, 1, false, rb, 1, NULL);
        make_image(s, "c", lc, 1, false, rc, 1, NULL);
        expect_list(s, order, 3);

        /* created_at is when a reference was first stored: storing a again
         * (a reload) moves its last_used_at, not its place. */
        json_auto_t *before = get(s, "a:1", &err);
        usleep(5000);
        make_image(s, "a", la, 1, false, ra, 1, NULL);
        expect_list(s, order, 3);
        json_auto_t *after = get(s, "a:1", &err);
        ck_assert_int_eq(json_integer_value(json_object_get(after, "created_at")),
                         json_integer_value(json_object_get(before, "created_at")));
        ck_assert_int_gt(json_integer_value(json_object_get(after, "last_used_at")),
                         json_integer_value(json_object_get(before, "last_used_at")));

        /* touch moves last_used_at too. */
        usleep(5000);
        ck_assert_int_eq(store_image_touch(s, "docker.io/library/b:1", NULL), 0);
        json_auto_t *b = get(s, "b:1", &err);
        ck_assert_int_gt(json_integer_value(json_object_get(b, "last_used_at")),
                         json_integer_value(json_object_get(b, "created_at")));
        /* The touch commits without an fsync, and leaves every later commit
         * of the writer durable again (synchronous=FULL is 2). */
        {
                _cleanup_tx_ StoreTx tx = {};
                sqlite3_stmt *st;
                ck_assert_int_eq(store_tx_begin(s, STORE_TX_READ, &tx, &err), 0);
                ck_assert_int_eq(store_query_prepare(&tx.q, "PRAGMA synchronous", &st), 0);
                ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
                ck_assert_int_eq(sqlite3_column_int(st, 0), 2);
        }

        /* A re-tag that points a reference at another manifest keeps its place too. */
        usleep(5000);
        make_image(s, "b-new", lc, 1, false, rb, 1, NULL);
        expect_list(s, order, 3);
        json_auto_t *b2 = get(s, "b:1", &err);
        json_auto_t *c = get(s, "c:1", &err);
        ck_assert(json_equal(json_object_get(b2, "manifest_digest"), json_object_get(c, "manifest_digest")) == false);
        ck_assert(!json_equal(json_object_get(b2, "manifest_digest"), json_object_get(b, "manifest_digest")));

        /* The order survives a restart. */
        store_free(TAKE_PTR(s));
        s = test_store_open(t.store);
        expect_list(s, order, 3);
}
END_TEST

/* ---- remove ---- */

START_TEST(test_remove_unpinned) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "shared base", "only in a" }, *const lb[] = { "shared base", "only in b" };
        char *ra[] = { (char *) "docker.io/library/a:1", (char *) "docker.io/library/a:2" };
        char *rb[] = { (char *) "docker.io/library/b:1" };
        _cleanup_strv_ char **fa = NULL, **fb = NULL;
        _cleanup_free_ char *shared = NULL, *only_a = NULL;
        TestImage a, b;
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 2, true, ra, 2, &a);
        make_image(s, "b", lb, 2, true, rb, 1, &b);
        fa = image_files(s, &a);
        fb = image_files(s, &b);
        ck_assert_str_eq(a.diff_ids[0], b.diff_ids[0]);
        shared = store_layer_path(s, a.diff_ids[0]);
        only_a = store_layer_path(s, a.diff_ids[1]);

        /* Not the last reference of a: nothing but the reference goes. */
        ck_assert_int_eq(remove_image(s, "a:1", false, &err), 0);
        expect_not_found(s, "a:1");
        json_auto_t *h = get(s, "a:2", &err);
        ck_assert_ptr_nonnull(h);
        expect_files(fa, true);

        /* The last one: a's manifest, config, fsmeta, VMDK and its own layer
         * go; the layer b shares stays, and so does b. */
        ck_assert_int_eq(remove_image(s, "docker.io/library/a:2", false, &err), 0);
        expect_not_found(s, "a:2");
        ck_assert(exists(shared));
        ck_assert(!exists(only_a));
        for (size_t i = 0; i < 4; i++)
                ck_assert_msg(!exists(fa[i]), "%s should be gone", fa[i]);
        expect_files(fb, true);
        json_auto_t *hb = get(s, "b:1", &err);
        ck_assert_ptr_nonnull(hb);

        /* Removing what is not there. */
        ck_assert_int_eq(remove_image(s, "a:2", false, &err), -ENOENT);
        ck_assert_int_eq(err.kind, PROTO_ERROR_IMAGE_NOT_FOUND);
        msb_error_clear(&err);

        ck_assert_int_eq(remove_image(s, "b:1", true, &err), 0);
        ck_assert_uint_eq(count_content_files(s), 0);
        expect_list(s, NULL, 0);
}
END_TEST

START_TEST(test_remove_pinned) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "pinned base", "pinned app" };
        char *ra[] = { (char *) "docker.io/library/a:1" };
        _cleanup_strv_ char **fa = NULL;
        json_auto_t *rootfs = NULL, *pins = NULL;
        TestImage a;
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 2, true, ra, 1, &a);
        fa = image_files(s, &a);
        pin(s, "sandbox", "sb-1", "a:1", &rootfs);
        pin(s, "snapshot", "snap-1", "a:1", NULL);

        /* The Rootfs names the files a VM boots from, which all exist. */
        ck_assert_str_eq(json_string_value(json_object_get(rootfs, "manifest_digest")), a.manifest_digest);
        _cleanup_free_ char *fsmeta = store_fsmeta_path(s, a.manifest_digest), *vmdk = store_vmdk_path(s, a.manifest_digest);
        ck_assert_str_eq(json_string_value(json_object_get(rootfs, "fsmeta_path")), fsmeta);
        ck_assert_str_eq(json_string_value(json_object_get(rootfs, "vmdk_path")), vmdk);
        ck_assert_uint_eq(json_array_size(json_object_get(rootfs, "layers")), 2);
        for (size_t i = 0; i < 2; i++) {
                json_t *l = json_array_get(json_object_get(rootfs, "layers"), i);
                _cleanup_free_ char *p = store_layer_path(s, a.diff_ids[i]);
                ck_assert_str_eq(json_string_value(json_object_get(l, "diff_id")), a.diff_ids[i]);
                ck_assert_str_eq(json_string_value(json_object_get(l, "path")), p);
                ck_assert(exists(p));
        }

        /* Without force: image-in-use naming every holder, and nothing changes. */
        ck_assert_int_eq(remove_image(s, "a:1", false, &err), -EBUSY);
        ck_assert_int_eq(err.kind, PROTO_ERROR_IMAGE_IN_USE);
        json_t *holders = json_object_get(err.data, "holders");
        ck_assert_uint_eq(json_array_size(holders), 2);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(holders, 0), "kind")), "sandbox");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(holders, 0), "name")), "sb-1");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(holders, 1), "kind")), "snapshot");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(holders, 1), "name")), "snap-1");
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "reference")), "docker.io/library/a:1");
        msb_error_clear(&err);
        json_auto_t *h = get(s, "a:1", &err);
        ck_assert_ptr_nonnull(h);
        expect_files(fa, true);

        /* With force the reference goes, but pinned data stays on disk, even through a prune. */
        ck_assert_int_eq(remove_image(s, "a:1", true, &err), 0);
        expect_not_found(s, "a:1");
        expect_files(fa, true);
        json_auto_t *report = prune(s);
        expect_report(report, 0, 0, 0, 0, 0);
        expect_files(fa, true);
        ck_assert_int_eq(store_pin_list(s, &pins, &err), 0);
        ck_assert_uint_eq(json_array_size(pins), 2);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(pins, 0), "manifest_digest")),
                         a.manifest_digest);

        /* One pin gone: the other still holds everything. */
        ck_assert_int_eq(store_pin_remove(s, "sandbox", "sb-1", &err), 0);
        json_auto_t *report2 = prune(s);
        expect_report(report2, 0, 0, 0, 0, 0);
        expect_files(fa, true);

        /* The last pin gone, a prune removes it all. */
        ck_assert_int_eq(store_pin_remove(s, "snapshot", "snap-1", &err), 0);
        json_auto_t *report3 = prune(s);
        expect_report(report3, 0, 1, 2, 1, 1);
        expect_files(fa, false);
        ck_assert_uint_eq(count_content_files(s), 0);

        /* Removing a pin that is not there. */
        ck_assert_int_eq(store_pin_remove(s, "snapshot", "snap-1", &err), -ENOENT);
        ck_assert_int_eq(err.kind, PROTO_ERROR_PIN_NOT_FOUND);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_pin_replace_and_list) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "pa" }, *const lb[] = { "pb" };
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" };
        json_auto_t *pins = NULL;
        TestImage a, b;
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 1, false, ra, 1, &a);
        make_image(s, "b", lb, 1, false, rb, 1, &b);

        json_auto_t *before = get(s, "a:1", &err);
        usleep(5000);
        pin(s, "sandbox", "sb", "a:1", NULL);
        /* pin.add counts as a use of the reference. */
        json_auto_t *after = get(s, "a:1", &err);
        ck_assert_int_gt(json_integer_value(json_object_get(after, "last_used_at")),
                         json_integer_value(json_object_get(before, "last_used_at")));

        /* The same {kind, name} again replaces the pin. */
        pin(s, "sandbox", "sb", "b:1", NULL);
        ck_assert_int_eq(store_pin_list(s, &pins, &err), 0);
        ck_assert_uint_eq(json_array_size(pins), 1);
        json_t *p = json_array_get(pins, 0);
        ck_assert_str_eq(json_string_value(json_object_get(p, "kind")), "sandbox");
        ck_assert_str_eq(json_string_value(json_object_get(p, "name")), "sb");
        ck_assert_str_eq(json_string_value(json_object_get(p, "reference")), "docker.io/library/b:1");
        ck_assert_str_eq(json_string_value(json_object_get(p, "manifest_digest")), b.manifest_digest);
        ck_assert(json_is_integer(json_object_get(p, "created_at")));

        /* a is free again, b is not. */
        ck_assert_int_eq(remove_image(s, "a:1", false, &err), 0);
        ck_assert_int_eq(remove_image(s, "b:1", false, &err), -EBUSY);
        msb_error_clear(&err);

        /* Pinning what is not cached is image-not-found. */
        _cleanup_(image_spec_freep) ImageSpec *missing = spec("missing:1");
        json_t *rootfs = NULL;
        ck_assert_int_eq(store_pin_add(s, "sandbox", "x", missing, &rootfs, &err), -ENOENT);
        ck_assert_ptr_null(rootfs);
        ck_assert_int_eq(err.kind, PROTO_ERROR_IMAGE_NOT_FOUND);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_pin_survives_retag) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const old_layers[] = { "v1 layer" }, *const new_layers[] = { "v2 layer" };
        char *refs[] = { (char *) "docker.io/library/app:latest" };
        _cleanup_strv_ char **f1 = NULL, **f2 = NULL;
        TestImage v1, v2;
        MsbError err = {};

        /* A sandbox runs app:latest; then a newer app:latest is loaded and
         * the old one removed and pruned. The sandbox's data must stay. */
        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "v1", old_layers, 1, true, refs, 1, &v1);
        pin(s, "sandbox", "running", "app:latest", NULL);
        make_image(s, "v2", new_layers, 1, true, refs, 1, &v2);
        f1 = image_files(s, &v1);
        f2 = image_files(s, &v2);

        json_auto_t *h = get(s, "app", &err);
        ck_assert_str_eq(json_string_value(json_object_get(h, "manifest_digest")), v2.manifest_digest);
        /* The reference now names v2, which no pin holds. */
        ck_assert_int_eq(remove_image(s, "app", false, &err), 0);
        expect_files(f1, true);
        expect_files(f2, false);
        json_auto_t *report = prune(s);
        expect_report(report, 0, 0, 0, 0, 0);
        expect_files(f1, true);

        json_auto_t *pins = NULL;
        ck_assert_int_eq(store_pin_list(s, &pins, &err), 0);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(pins, 0), "manifest_digest")),
                         v1.manifest_digest);
}
END_TEST

START_TEST(test_open_relative_and_bad_paths) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_free_ char *cwd = get_current_dir_name(), *file = NULL;
        Store *s = NULL;
        MsbError err = {};

        test_dir_init(&t, "store");
        ck_assert_int_eq(chdir(t.path), 0);
        /* A relative path is resolved once: the store's paths are absolute. */
        s = test_store_open("store");
        ck_assert_str_eq(store_path(s), t.store);
        store_free(s);
        s = NULL;
        ck_assert_int_eq(chdir(cwd), 0);

        /* A regular file where the store should be is a store error, not a crash. */
        file = path_in(t.path, "a-file");
        write_content_raw(file);
        ck_assert_int_lt(store_open(file, &s, &err), 0);
        ck_assert_ptr_null(s);
        ck_assert(err.set);
        ck_assert_int_eq(err.kind, PROTO_ERROR_STORE_ERROR);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_commit_error_names_cause) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        char layer_id[DIGEST_STRING_MAX], manifest_digest[DIGEST_STRING_MAX], config_digest[DIGEST_STRING_MAX];
        char *refs[] = { (char *) "docker.io/library/broken:1" };
        MsbError err = {};

        /* A manifest whose layer was never recorded cannot be committed; the
         * error must say why (it reaches the client and the log), and the
         * failed transaction leaves nothing behind. */
        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        ck_assert_int_eq(digest_buffer("unrecorded", 10, layer_id), 0);
        ck_assert_int_eq(digest_buffer("manifest", 8, manifest_digest), 0);
        ck_assert_int_eq(digest_buffer("config", 6, config_digest), 0);
        StoreLayer sl = { layer_id, layer_id, (char *) OCI_MEDIA_TYPE_LAYER_TAR, 10 };
        StoreManifest m = {
                .digest = manifest_digest, .media_type = (char *) OCI_MEDIA_TYPE_MANIFEST, .size = 8,
                .config_digest = config_digest, .config_size = 6, .layers = &sl, .n_layers = 1,
        };
        ck_assert_int_lt(store_image_commit(s, &m, refs, 1, &err), 0);
        ck_assert(err.set);
        ck_assert_int_eq(err.kind, PROTO_ERROR_STORE_ERROR);
        ck_assert_msg(!strstr(err.message, "not an error"), "the cause is lost: '%s'", err.message);
        ck_assert_msg(strstr(err.message, "constraint"), "the cause is not named: '%s'", err.message);
        msb_error_clear(&err);
        expect_not_found(s, "broken:1");
        expect_list(s, NULL, 0);
}
END_TEST

/* ---- prune ---- */

START_TEST(test_prune_counts) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "common", "a-own" }, *const lb[] = { "common", "b-own" },
                                 *const lc[] = { "c-own", "common" };
        char *ra[] = { (char *) "docker.io/library/a:1", (char *) "docker.io/library/a:2" };
        char *rb[] = { (char *) "docker.io/library/b:1" }, *rc[] = { (char *) "docker.io/library/c:1" };
        _cleanup_strv_ char **fa = NULL, **fb = NULL, **fc = NULL;
        TestImage a, b, c;
        uint64_t want_bytes = 0;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 2, true, ra, 2, &a);
        make_image(s, "b", lb, 2, false, rb, 1, &b);
        make_image(s, "c", lc, 2, true, rc, 1, &c);
        pin(s, "sandbox", "keep-c", "c:1", NULL);
        fa = image_files(s, &a);
        fb = image_files(s, &b);
        fc = image_files(s, &c);

        /* What must go: a's and b's files except the layer c uses. */
        for (size_t i = 0; fa[i]; i++)
                if (!strstr(fa[i], digest_hex(c.diff_ids[1])))
                        want_bytes += allocated(fa[i]);
        for (size_t i = 0; fb[i]; i++)
                if (!strstr(fb[i], digest_hex(c.diff_ids[1])))
                        want_bytes += allocated(fb[i]);
        ck_assert_uint_gt(want_bytes, 0);

        json_auto_t *report = prune(s);
        /* refs a:1 a:2 b:1; manifests a b; layers a-own b-own; a's fsmeta and VMDK. */
        expect_report(report, 3, 2, 2, 1, 1);
        ck_assert_int_eq(report_int(report, "bytes_reclaimed"), (json_int_t) want_bytes);

        expect_files(fc, true);
        for (size_t i = 0; fa[i]; i++)
                if (!strstr(fa[i], digest_hex(c.diff_ids[1])))
                        ck_assert_msg(!exists(fa[i]), "%s should be gone", fa[i]);
        for (size_t i = 0; fb[i]; i++)
                if (!strstr(fb[i], digest_hex(c.diff_ids[1])))
                        ck_assert_msg(!exists(fb[i]), "%s should be gone", fb[i]);
        /* Left: c's manifest, config, fsmeta, VMDK and its two layers. */
        ck_assert_uint_eq(count_content_files(s), 6);
        static const char *const left[] = { "docker.io/library/c:1" };
        expect_list(s, left, 1);

        /* Nothing left to remove: zeros, and zero bytes measured (not null). */
        json_auto_t *again = prune(s);
        expect_report(again, 0, 0, 0, 0, 0);
        ck_assert_int_eq(report_int(again, "bytes_reclaimed"), 0);

        /* df agrees: nothing is reclaimable while c is pinned. */
        json_auto_t *df = NULL;
        MsbError err = {};
        ck_assert_int_eq(store_df(s, &df, &err), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(df, "reclaimable_bytes")), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(df, "image_refs")), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(df, "layers"), "count")), 2);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(df, "manifests"), "count")), 1);
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(df, "configs"), "count")), 1);
}
END_TEST

START_TEST(test_prune_leaves_no_image_files) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "x1", "x2", "x3" }, *const lb[] = { "x3", "y1" };
        char *ra[] = { (char *) "docker.io/library/x:1" }, *rb[] = { (char *) "docker.io/library/y:1" };
        _cleanup_free_ char *stray_layer = NULL, *stray_blob = NULL, *stray_tmp = NULL;
        char d[DIGEST_STRING_MAX];

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "x", la, 3, true, ra, 1, NULL);
        make_image(s, "y", lb, 2, true, rb, 1, NULL);

        /* Leftovers no row names: a layer file, a blob, an unleased temp file. */
        ck_assert_int_eq(digest_buffer("stray", 5, d), 0);
        stray_layer = store_layer_path(s, d);
        stray_blob = store_blob_path(s, d);
        stray_tmp = path_in(store_tmp_dir(s), "123-4-blob");
        write_content(s, strdup(stray_layer), "stray");
        write_content(s, strdup(stray_blob), "stray");
        FILE *f = fopen(stray_tmp, "w");
        ck_assert_ptr_nonnull(f);
        fputs("partial", f);
        fclose(f);

        json_auto_t *report = prune(s);
        /* Counts are what was removed: four indexed layers plus the stray one. */
        expect_report(report, 2, 2, 5, 2, 2);
        ck_assert_int_gt(report_int(report, "bytes_reclaimed"), 0);
        ck_assert_uint_eq(count_content_files(s), 0);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
        expect_list(s, NULL, 0);
}
END_TEST

/* ---- leases ---- */

START_TEST(test_leases_protect_from_prune) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "leased layer" };
        _cleanup_strv_ char **fa = NULL;
        _cleanup_free_ char *tmp = NULL, *loose = NULL, *loose_layer = NULL;
        char loose_digest[DIGEST_STRING_MAX], layer_id[DIGEST_STRING_MAX];
        TestImage a;
        int fd;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);

        /* A manifest committed without references (an ingest not finished
         * with it yet), a layer recorded but used by no manifest, a blob
         * written but not indexed, a temp file in flight. */
        make_image(s, "a", la, 1, true, NULL, 0, &a);
        fa = image_files(s, &a);
        make_layer(s, "converted, not committed", layer_id);
        loose_layer = store_layer_path(s, layer_id);
        ck_assert_int_eq(digest_buffer("loose", 5, loose_digest), 0);
        loose = store_blob_path(s, loose_digest);
        write_content(s, strdup(loose), "loose");
        ck_assert_int_eq(store_tmpfile(s, "layer", &fd, &tmp), 0);

        ck_assert_int_eq(store_lease_acquire(s, a.manifest_digest), 0);
        ck_assert_int_eq(store_lease_acquire(s, layer_id), 0);
        ck_assert_int_eq(store_lease_acquire(s, loose_digest), 0);
        /* Counted: two acquires need two releases. */
        ck_assert_int_eq(store_lease_acquire(s, loose_digest), 0);

        json_auto_t *r1 = prune(s);
        expect_report(r1, 0, 0, 0, 0, 0);
        expect_files(fa, true);
        ck_assert(exists(loose_layer));
        ck_assert(exists(loose));
        ck_assert(exists(tmp));

        store_lease_release(s, loose_digest);
        json_auto_t *r2 = prune(s);
        expect_report(r2, 0, 0, 0, 0, 0);
        ck_assert(exists(loose));

        /* Released, all of it goes, except the temp file still being written. */
        store_lease_release(s, loose_digest);
        store_lease_release(s, layer_id);
        store_lease_release(s, a.manifest_digest);
        /* Releasing what is not held is harmless. */
        store_lease_release(s, "sha256:never-held");
        json_auto_t *r3 = prune(s);
        expect_report(r3, 0, 1, 2, 1, 1);
        expect_files(fa, false);
        ck_assert(!exists(loose_layer));
        ck_assert(!exists(loose));
        ck_assert(exists(tmp));

        /* The temp file's lease ends with its discard. */
        store_tmpfile_discard(s, tmp);
        close(fd);
        ck_assert(!exists(tmp));
        ck_assert_uint_eq(count_content_files(s), 0);
}
END_TEST

START_TEST(test_lease_protects_layer_of_removed_image) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "reused by an ingest" };
        char *ra[] = { (char *) "docker.io/library/a:1" };
        _cleanup_free_ char *layer = NULL;
        TestImage a;
        MsbError err = {};

        /* An ingest found the layer cached and leased it; a concurrent
         * remove of the only image using it must leave it for the ingest. */
        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 1, false, ra, 1, &a);
        layer = store_layer_path(s, a.diff_ids[0]);
        ck_assert_int_eq(store_lease_acquire(s, a.diff_ids[0]), 0);
        ck_assert_int_eq(remove_image(s, "a:1", false, &err), 0);
        ck_assert(exists(layer));
        uint64_t size;
        ck_assert_int_eq(store_layer_lookup(s, a.diff_ids[0], &size), 1);

        store_lease_release(s, a.diff_ids[0]);
        json_auto_t *report = prune(s);
        expect_report(report, 0, 0, 1, 0, 0);
        ck_assert(!exists(layer));
}
END_TEST

START_TEST(test_lease_keeps_references_of_a_commit_in_flight) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "just loaded" };
        char *ra[] = { (char *) "docker.io/library/fresh:1" };
        _cleanup_strv_ char **fa = NULL;
        TestImage a;
        MsbError err = {};

        /* A load has committed its image but still holds the manifest's
         * lease (it is about to answer with the handle): a prune now must
         * not take the reference from under it. */
        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "fresh", la, 1, true, ra, 1, &a);
        fa = image_files(s, &a);
        ck_assert_int_eq(store_lease_acquire(s, a.manifest_digest), 0);
        json_auto_t *r1 = prune(s);
        expect_report(r1, 0, 0, 0, 0, 0);
        json_auto_t *h = get(s, "fresh:1", &err);
        ck_assert_ptr_nonnull(h);
        expect_files(fa, true);

        store_lease_release(s, a.manifest_digest);
        json_auto_t *r2 = prune(s);
        expect_report(r2, 1, 1, 1, 1, 1);
        expect_not_found(s, "fresh:1");
        expect_files(fa, false);
}
END_TEST

/* An ingest holds leases on what it writes until its commit; a prune that
 * runs meanwhile must neither delete those files nor the layer rows the
 * commit's manifest_layers point at. */
typedef struct Race {
        Store *store;
        bool done; /* atomic: set by the ingest thread, read by the pruner */
        unsigned commits, commit_failures, missing_files, prunes, prune_failures;
        char failure[MSB_ERROR_MESSAGE_MAX + 64];
} Race;

#define RACE_IMAGES 25

static void *race_ingest(void *userdata) {
        Race *race = userdata;
        Store *s = race->store;

        for (unsigned i = 0; i < RACE_IMAGES; i++) {
                char layer[64], config[128], diff_id[DIGEST_STRING_MAX], config_digest[DIGEST_STRING_MAX];
                char manifest_digest[DIGEST_STRING_MAX], manifest[512], reference[64];
                char *refs[] = { reference };
                MsbError err = {};

                snprintf(layer, sizeof(layer), "race layer %u", i);
                snprintf(config, sizeof(config), "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},\"n\":%u}", i);
                snprintf(reference, sizeof(reference), "docker.io/library/race:%u", i);
                if (digest_buffer(layer, strlen(layer), diff_id) < 0 ||
                    digest_buffer(config, strlen(config), config_digest) < 0)
                        abort();
                snprintf(manifest, sizeof(manifest), "{\"config\":\"%s\",\"layer\":\"%s\"}", config_digest, diff_id);
                if (digest_buffer(manifest, strlen(manifest), manifest_digest) < 0)
                        abort();

                /* As ingest does: lease, write, record the layer, commit, release. */
                store_lease_acquire(s, diff_id);
                store_lease_acquire(s, config_digest);
                store_lease_acquire(s, manifest_digest);
                _cleanup_free_ char *lp = store_layer_path(s, diff_id), *cp = store_blob_path(s, config_digest),
                                    *mp = store_blob_path(s, manifest_digest);
                int r = store_write_file(s, lp, layer, strlen(layer));
                if (r >= 0)
                        r = store_layer_add(s, diff_id, strlen(layer));
                if (r >= 0)
                        r = store_write_file(s, cp, config, strlen(config));
                if (r >= 0)
                        r = store_write_file(s, mp, manifest, strlen(manifest));
                /* Give a prune the chance to run between the writes and the commit. */
                usleep(500);
                if (r >= 0) {
                        StoreLayer sl = { (char *) diff_id, (char *) diff_id, (char *) OCI_MEDIA_TYPE_LAYER_TAR, 10 };
                        StoreManifest m = {
                                .digest = manifest_digest, .media_type = (char *) OCI_MEDIA_TYPE_MANIFEST,
                                .size = strlen(manifest), .config_digest = config_digest,
                                .config_size = strlen(config), .layers = &sl, .n_layers = 1,
                        };
                        r = store_image_commit(s, &m, refs, 1, &err);
                }
                if (r < 0) {
                        race->commit_failures++;
                        snprintf(race->failure, sizeof(race->failure), "image %u: %d %s", i, r, err.message);
                } else
                        race->commits++;
                if (!exists(lp) || !exists(cp) || !exists(mp))
                        race->missing_files++;
                msb_error_clear(&err);
                store_lease_release(s, manifest_digest);
                store_lease_release(s, config_digest);
                store_lease_release(s, diff_id);
        }
        __atomic_store_n(&race->done, true, __ATOMIC_RELEASE);
        return NULL;
}

static void *race_prune(void *userdata) {
        Race *race = userdata;

        while (!__atomic_load_n(&race->done, __ATOMIC_ACQUIRE)) {
                json_t *report = NULL;
                MsbError err = {};
                if (store_image_prune(race->store, STORE_PRUNE_ALL, &report, &err) < 0)
                        race->prune_failures++;
                else
                        race->prunes++;
                json_decref(report);
                msb_error_clear(&err);
        }
        return NULL;
}

START_TEST(test_prune_races_ingest) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        pthread_t ingest, pruner;
        Race race = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        race.store = s;
        ck_assert_int_eq(pthread_create(&pruner, NULL, race_prune, &race), 0);
        ck_assert_int_eq(pthread_create(&ingest, NULL, race_ingest, &race), 0);
        ck_assert_int_eq(pthread_join(ingest, NULL), 0);
        ck_assert_int_eq(pthread_join(pruner, NULL), 0);

        ck_assert_msg(race.commit_failures == 0, "%u commits failed, last: %s", race.commit_failures, race.failure);
        ck_assert_uint_eq(race.commits, RACE_IMAGES);
        ck_assert_uint_eq(race.missing_files, 0);
        ck_assert_uint_eq(race.prune_failures, 0);
        ck_assert_uint_gt(race.prunes, 0);

        /* Without leases, the last prune takes everything. */
        json_auto_t *report = prune(s);
        ck_assert_int_le(report_int(report, "manifests_removed"), RACE_IMAGES);
        ck_assert_uint_eq(count_content_files(s), 0);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

/* ---- the sweep at open ---- */

static void write_raw(const char *path, const char *data) {
        FILE *f = fopen(path, "w");
        ck_assert_msg(f, "%s: %m", path);
        fputs(data, f);
        ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_sweep_at_reopen) {
        _cleanup_test_dir_ TestDir t;
        Store *s = NULL;
        static const char *const la[] = { "a-first", "a-second" }, *const lb[] = { "b-only" };
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" };
        _cleanup_strv_ char **fa = NULL, **fb = NULL;
        TestImage a, b;
        char d1[DIGEST_STRING_MAX], d2[DIGEST_STRING_MAX], d3[DIGEST_STRING_MAX];
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 2, true, ra, 1, &a);
        make_image(s, "b", lb, 1, true, rb, 1, &b);
        pin(s, "sandbox", "on-a", "a:1", NULL);
        fa = image_files(s, &a);
        fb = image_files(s, &b);

        /* Files without rows, in every content directory, named or not as the store names them. */
        ck_assert_int_eq(digest_buffer("orphan 1", 8, d1), 0);
        ck_assert_int_eq(digest_buffer("orphan 2", 8, d2), 0);
        ck_assert_int_eq(digest_buffer("orphan 3", 8, d3), 0);
        _cleanup_free_ char *o1 = store_blob_path(s, d1), *o2 = store_layer_path(s, d2),
                            *o3 = store_fsmeta_path(s, d3), *o4 = store_vmdk_path(s, d1),
                            *o5 = path_in(store_path(s), "blobs/sha256/not-a-digest"),
                            *o6 = path_in(store_path(s), "layers/sha256/0123"),
                            *t1 = path_in(store_tmp_dir(s), "999-1-blob"),
                            *t2 = path_in(store_tmp_dir(s), "999-2-unpack"),
                            *a_first = store_layer_path(s, a.diff_ids[0]);
        store_free(TAKE_PTR(s));

        const char *orphans[] = { o1, o2, o3, o4, o5, o6 };
        for (size_t i = 0; i < ELEMENTSOF(orphans); i++)
                write_raw(orphans[i], "left behind");
        write_raw(t1, "half a blob");
        ck_assert_int_eq(mkdir(t2, 0700), 0);
        _cleanup_free_ char *t2sub = path_in(t2, "etc");
        ck_assert_int_eq(mkdir(t2sub, 0700), 0);
        _cleanup_free_ char *t2file = path_in(t2sub, "passwd");
        write_raw(t2file, "root:x:0:0::/root:/bin/sh\n");

        /* A row whose file is gone: a's first layer. */
        ck_assert_int_eq(unlink(a_first), 0);

        s = test_store_open(t.store);
        const StoreSweepStats *st = store_sweep_stats(s);
        ck_assert_uint_eq(st->tmp_removed, 2);
        /* The six orphans, and a's manifest, config, fsmeta and VMDK, which
         * no row names once a is dropped. */
        ck_assert_uint_eq(st->files_removed, 6 + 4);
        ck_assert_uint_ge(st->rows_dropped, 1);

        for (size_t i = 0; i < ELEMENTSOF(orphans); i++)
                ck_assert_msg(!exists(orphans[i]), "%s survived the sweep", orphans[i]);
        ck_assert(!exists(t1));
        ck_assert(!exists(t2));
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);

        /* a cannot be served without its layer: it is gone, with its pin;
         * b is untouched. */
        expect_not_found(s, "a:1");
        json_auto_t *pins = NULL;
        ck_assert_int_eq(store_pin_list(s, &pins, &err), 0);
        ck_assert_uint_eq(json_array_size(pins), 0);
        json_auto_t *hb = get(s, "b:1", &err);
        ck_assert_ptr_nonnull(hb);
        expect_files(fb, true);
        for (size_t i = 0; i < 4; i++)
                ck_assert_msg(!exists(fa[i]), "%s survived the sweep", fa[i]);
        uint64_t size;
        ck_assert_int_eq(store_layer_lookup(s, a.diff_ids[0], &size), 0);

        /* A second open finds nothing more to do. */
        store_free(TAKE_PTR(s));
        s = test_store_open(t.store);
        ck_assert_uint_eq(store_sweep_stats(s)->tmp_removed, 0);
        ck_assert_uint_eq(store_sweep_stats(s)->files_removed, 0);
        ck_assert_uint_eq(store_sweep_stats(s)->rows_dropped, 0);

        /* What is left of a (its second layer) goes with the next prune, and b with it. */
        json_auto_t *report = prune(s);
        expect_report(report, 1, 1, 2, 1, 1);
        ck_assert_uint_eq(count_content_files(s), 0);
        store_free(s);
}
END_TEST

START_TEST(test_sweep_drops_manifest_missing_blob) {
        _cleanup_test_dir_ TestDir t;
        Store *s = NULL;
        static const char *const la[] = { "shared" }, *const lb[] = { "shared", "b-own" };
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" },
             *rc[] = { (char *) "docker.io/library/c:1" };
        static const char *const lc[] = { "c-own" };
        _cleanup_strv_ char **fa = NULL;
        _cleanup_free_ char *b_config = NULL, *c_vmdk = NULL;
        TestImage a, b, c;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 1, false, ra, 1, &a);
        make_image(s, "b", lb, 2, false, rb, 1, &b);
        make_image(s, "c", lc, 1, true, rc, 1, &c);
        fa = image_files(s, &a);
        b_config = store_blob_path(s, b.config_digest);
        c_vmdk = store_vmdk_path(s, c.manifest_digest);
        store_free(TAKE_PTR(s));

        /* b lost its config, c its VMDK: both are dropped; a (sharing a layer with b) stays. */
        ck_assert_int_eq(unlink(b_config), 0);
        ck_assert_int_eq(unlink(c_vmdk), 0);
        s = test_store_open(t.store);
        ck_assert_uint_ge(store_sweep_stats(s)->rows_dropped, 2);
        expect_not_found(s, "b:1");
        expect_not_found(s, "c:1");
        MsbError err = {};
        json_auto_t *ha = get(s, "a:1", &err);
        ck_assert_ptr_nonnull(ha);
        expect_files(fa, true);
        static const char *const left[] = { "docker.io/library/a:1" };
        expect_list(s, left, 1);
        store_free(s);
}
END_TEST

START_TEST(test_persists_across_reopen) {
        _cleanup_test_dir_ TestDir t;
        Store *s = NULL;
        static const char *const la[] = { "persist" };
        char *ra[] = { (char *) "docker.io/library/p:1" };
        TestImage a;
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "p", la, 1, true, ra, 1, &a);
        pin(s, "snapshot", "snap", "p:1", NULL);
        json_auto_t *before = get(s, "p:1", &err);
        store_free(s);

        s = test_store_open(t.store);
        ck_assert_uint_eq(store_sweep_stats(s)->files_removed, 0);
        ck_assert_uint_eq(store_sweep_stats(s)->rows_dropped, 0);
        json_auto_t *after = get(s, "p:1", &err);
        ck_assert(json_equal(before, after));
        json_auto_t *pins = NULL;
        ck_assert_int_eq(store_pin_list(s, &pins, &err), 0);
        ck_assert_uint_eq(json_array_size(pins), 1);
        store_free(s);
}
END_TEST

/* The loop's read connection belongs to the thread that made the reader:
 * another thread's use is stopped at once, not left to chance. */
static void *reader_from_other_thread(void *arg) {
        StoreReader *rd = arg;
        json_t *list = NULL;

        (void) store_reader_pin_list(rd, &list, NULL);
        json_decref(list);
        return NULL;
}

START_TEST(test_reader_refuses_other_threads) {
        _cleanup_test_dir_ TestDir t = {};
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(store_reader_freep) StoreReader *rd = NULL;
        json_auto_t *list = NULL;
        pthread_t th;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        ck_assert_int_eq(store_reader_new(s, &rd), 0);
        ck_assert_int_eq(store_reader_pin_list(rd, &list, NULL), 0);
        ck_assert_int_eq(pthread_create(&th, NULL, reader_from_other_thread, rd), 0);
        pthread_join(th, NULL);
}
END_TEST

static mode_t mode_of(const char *path) {
        struct stat st;
        ck_assert_msg(lstat(path, &st) == 0, "%s: %m", path);
        return st.st_mode & 07777;
}

/* A store directory open to others is closed at open; so are its
 * subdirectories and the index files, whatever the umask. */
START_TEST(test_open_makes_directories_private) {
        static const char *const subdirs[] = { "", "/blobs", "/blobs/sha256", "/layers/sha256", "/fsmeta/sha256",
                                               "/vmdk/sha256", "/tmp" };
        _cleanup_test_dir_ TestDir t = {};
        MsbError err = {};
        Store *s = NULL;

        test_dir_init(&t, "store");
        ck_assert_int_eq(mkdir(t.store, 0777), 0);
        ck_assert_int_eq(chmod(t.store, 0777), 0);
        _cleanup_free_ char *tmp = path_in(t.store, "tmp");
        ck_assert_int_eq(mkdir(tmp, 0777), 0);
        ck_assert_int_eq(chmod(tmp, 0777), 0);
        mode_t old = umask(0);
        ck_assert_int_eq(store_open(t.store, &s, &err), 0);
        umask(old);
        for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
                _cleanup_free_ char *d = NULL;
                ck_assert_int_ge(asprintf(&d, "%s%s", t.store, subdirs[i]), 0);
                ck_assert_msg(mode_of(d) == 0700, "%s is %04o", d, (unsigned) mode_of(d));
        }
        store_free(s);
        static const char *const index_files[] = { "index.db", "index.db-wal", "index.db-shm" };
        for (size_t i = 0; i < ELEMENTSOF(index_files); i++) {
                _cleanup_free_ char *f = path_in(t.store, index_files[i]);
                if (exists(f))
                        ck_assert_msg(mode_of(f) == 0600, "%s is %04o", f, (unsigned) mode_of(f));
        }
        /* An index left 0644 by an earlier version is made private too. */
        _cleanup_free_ char *db = path_in(t.store, "index.db");
        ck_assert_int_eq(chmod(db, 0644), 0);
        s = test_store_open(t.store);
        ck_assert_uint_eq(mode_of(db), 0600);
        store_free(s);
}
END_TEST

/* A subdirectory replaced by a symlink (somebody else's directory, say) is
 * refused, and the message says what it is. */
START_TEST(test_open_refuses_symlinked_subdirectory) {
        _cleanup_test_dir_ TestDir t = {};
        _cleanup_(msb_error_clear) MsbError err = {};
        Store *s = NULL;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        store_free(s);
        _cleanup_free_ char *tmp = path_in(t.store, "tmp");
        _cleanup_free_ char *elsewhere = path_in(t.path, "elsewhere");
        ck_assert_int_eq(mkdir(elsewhere, 0777), 0);
        ck_assert_int_eq(rm_rf(tmp, NULL), 0);
        ck_assert_int_eq(chmod(elsewhere, 0755), 0);
        ck_assert_int_eq(symlink(elsewhere, tmp), 0);
        ck_assert_int_lt(store_open(t.store, &s, &err), 0);
        ck_assert_ptr_nonnull(strstr(err.message, "symlink"));
        /* What the link points at is left alone. */
        ck_assert_uint_eq(mode_of(elsewhere), 0755);
}
END_TEST

/* A store directory that belongs to another user is refused, naming owner
 * and mode (needs root to make one). */
START_TEST(test_open_refuses_foreign_directory) {
        _cleanup_test_dir_ TestDir t = {};
        _cleanup_(msb_error_clear) MsbError err = {};
        Store *s = NULL;

        if (geteuid() != 0)
                return;
        test_dir_init(&t, "store");
        ck_assert_int_eq(mkdir(t.store, 0755), 0);
        ck_assert_int_eq(chown(t.store, 65534, 65534), 0);
        ck_assert_int_eq(store_open(t.store, &s, &err), -EPERM);
        ck_assert_ptr_nonnull(strstr(err.message, "uid 65534"));
        ck_assert_ptr_nonnull(strstr(err.message, "0755"));
        /* Refused before anything was written in it. */
        _cleanup_free_ char *lock = path_in(t.store, "lock");
        ck_assert(!exists(lock));
}
END_TEST

/* ---- disk budget, prune by age, events ---- */

START_TEST(test_budget_parse) {
        static const struct {
                const char *json;
                int r;
                uint64_t max, low;
                const char *parameter;
        } cases[] = {
                { "{}", 0, 0, 0, NULL },
                { "{\"registries\":{}}", 0, 0, 0, NULL },
                { "{\"store\":{}}", 0, 0, 0, NULL },
                { "{\"store\":{\"max_bytes\":1000}}", 0, 1000, 900, NULL },
                { "{\"store\":{\"max_bytes\":1001}}", 0, 1001, 900, NULL },
                { "{\"store\":{\"max_bytes\":1000,\"low_bytes\":10}}", 0, 1000, 10, NULL },
                { "{\"store\":{\"max_bytes\":1000,\"low_bytes\":1000}}", 0, 1000, 1000, NULL },
                { "{\"store\":{\"max_bytes\":1000,\"low_bytes\":0}}", 0, 1000, 0, NULL },
                { "{\"store\":{\"max_bytes\":9223372036854775807}}", 0, INT64_MAX, INT64_MAX / 100 * 90 + 6, NULL },
                { "{\"store\":[]}", -EINVAL, 0, 0, "store" },
                { "{\"store\":{\"max_byte\":5}}", -EINVAL, 0, 0, "store" },
                { "{\"store\":{\"max_bytes\":0}}", -EINVAL, 0, 0, "store.max_bytes" },
                { "{\"store\":{\"max_bytes\":-1}}", -EINVAL, 0, 0, "store.max_bytes" },
                { "{\"store\":{\"max_bytes\":1.5}}", -EINVAL, 0, 0, "store.max_bytes" },
                { "{\"store\":{\"max_bytes\":\"10G\"}}", -EINVAL, 0, 0, "store.max_bytes" },
                { "{\"store\":{\"low_bytes\":5}}", -EINVAL, 0, 0, "store.low_bytes" },
                { "{\"store\":{\"max_bytes\":10,\"low_bytes\":11}}", -EINVAL, 0, 0, "store.low_bytes" },
                { "{\"store\":{\"max_bytes\":10,\"low_bytes\":null}}", -EINVAL, 0, 0, "store.low_bytes" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_auto_t *config = json_loads(cases[i].json, 0, NULL);
                StoreBudget b = { 77, 77 };
                MsbError err = {};
                int r;

                ck_assert_ptr_nonnull(config);
                r = store_budget_parse(config, &b, &err);
                ck_assert_msg(r == cases[i].r, "%s: %d", cases[i].json, r);
                if (r == 0) {
                        ck_assert_msg(b.max_bytes == cases[i].max && b.low_bytes == cases[i].low,
                                      "%s: %" PRIu64 "/%" PRIu64, cases[i].json, b.max_bytes, b.low_bytes);
                        ck_assert(!err.set);
                } else {
                        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
                        ck_assert_str_eq(json_string_value(json_object_get(err.data, "parameter")),
                                         cases[i].parameter);
                        /* Nothing is set on failure. */
                        ck_assert_uint_eq(b.max_bytes, 77);
                }
                msb_error_clear(&err);
        }
}
END_TEST

/* What the observer heard: "type reference" lines, and the last round. */
typedef struct Heard {
        char lines[64][160];
        size_t n;
        StoreBudgetReport report;
        unsigned rounds;
} Heard;

static void heard_event(const StoreEvent *ev, void *userdata) {
        Heard *h = userdata;

        ck_assert_uint_lt(h->n, ELEMENTSOF(h->lines));
        ck_assert_ptr_nonnull(ev->manifest_digest);
        ck_assert_int_gt(ev->at, 0);
        snprintf(h->lines[h->n++], sizeof(h->lines[0]), "%s %s%s%s", store_event_type_name(ev->type),
                 ev->reference ?: "-", ev->pin_name ? " " : "", ev->pin_name ?: "");
}

static void heard_budget(const StoreBudgetReport *report, void *userdata) {
        Heard *h = userdata;

        h->report = *report;
        h->rounds++;
}

static void expect_heard(Heard *h, const char *const *want, size_t n) {
        for (size_t i = 0; i < n && i < h->n; i++)
                ck_assert_str_eq(h->lines[i], want[i]);
        ck_assert_uint_eq(h->n, n);
        h->n = 0;
}

/* The bytes only this image's files take (its layers but the shared one). */
static uint64_t exclusive_bytes(Store *s, const TestImage *img, const char *shared_diff_id) {
        _cleanup_strv_ char **files = image_files(s, img);
        uint64_t bytes = 0;

        for (size_t i = 0; files[i]; i++)
                if (!shared_diff_id || !strstr(files[i], digest_hex(shared_diff_id)))
                        bytes += allocated(files[i]);
        return bytes;
}

static void enforce(Store *s, uint64_t max, uint64_t low, int64_t protect_since) {
        store_set_budget(s, &(StoreBudget) { max, low });
        ck_assert_int_eq(store_budget_enforce(s, protect_since), 0);
}

/* A layer's content of n bytes, all `fill`: large enough that the files
 * outweigh what a transaction adds to the index. */
static char *big_content(char fill, size_t n) {
        char *p = malloc(n + 1);

        ck_assert_ptr_nonnull(p);
        memset(p, fill, n);
        p[n] = '\0';
        return p;
}

#define TEST_BIG_LAYER_BYTES ((size_t) 1024 * 1024)

START_TEST(test_budget_evicts_least_recently_used) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *own_a = big_content('a', TEST_BIG_LAYER_BYTES), *own_b = big_content('b', TEST_BIG_LAYER_BYTES),
                            *own_c = big_content('c', TEST_BIG_LAYER_BYTES), *own_d = big_content('d', TEST_BIG_LAYER_BYTES);
        const char *const la[] = { "base", own_a }, *const lb[] = { "base", own_b }, *const lc[] = { "base", own_c },
                          *const ld[] = { "base", own_d };
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" };
        char *rc[] = { (char *) "docker.io/library/c:1" }, *rd[] = { (char *) "docker.io/library/d:1" };
        _cleanup_strv_ char **fb = NULL, **fc = NULL;
        Heard h = {};
        TestImage b, c, d;
        uint64_t total, after;

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        store_set_observer(s, &(StoreObserver) { heard_event, heard_budget, &h });
        /* Apart in time, so that last_used_at orders them: b, d, a. */
        make_image(s, "a", la, 2, true, ra, 1, NULL);
        usleep(3000);
        make_image(s, "b", lb, 2, true, rb, 1, &b);
        usleep(3000);
        make_image(s, "c", lc, 2, true, rc, 1, &c);
        usleep(3000);
        make_image(s, "d", ld, 2, true, rd, 1, &d);
        usleep(3000);
        pin(s, "sandbox", "keep-c", "c:1", NULL);
        ck_assert_int_eq(store_image_touch(s, "docker.io/library/a:1", NULL), 0);
        h.n = 0;
        fb = image_files(s, &b);
        fc = image_files(s, &c);

        /* No budget, or within it: nothing happens, not even a report. */
        ck_assert_int_eq(store_budget_enforce(s, now_ms()), 0);
        ck_assert_int_eq(store_allocated_bytes(s, &total), 0);
        enforce(s, total, 0, now_ms());
        ck_assert_uint_eq(h.rounds, 0);
        ck_assert_uint_eq(h.n, 0);

        /* Over by a byte, with room for all but b's own files and half of
         * the next one's (what the round's transaction adds to the index
         * fits in that half): b alone goes, the least recently used. */
        uint64_t low = total - exclusive_bytes(s, &b, b.diff_ids[0]) + TEST_BIG_LAYER_BYTES / 2;
        enforce(s, total - 1, low, now_ms());
        static const char *const first[] = { "image.evicted docker.io/library/b:1" };
        expect_heard(&h, first, 1);
        for (size_t i = 0; fb[i]; i++)
                ck_assert_msg(exists(fb[i]) == !!strstr(fb[i], digest_hex(b.diff_ids[0])), "%s", fb[i]);
        ck_assert_uint_eq(h.rounds, 1);
        ck_assert_uint_eq(h.report.images_evicted, 1);
        ck_assert_uint_eq(h.report.manifests_evicted, 1);
        ck_assert_uint_eq(h.report.bytes_before, total);
        ck_assert(h.report.met);
        ck_assert_int_eq(store_allocated_bytes(s, &after), 0);
        ck_assert_uint_eq(h.report.bytes_after, after);
        ck_assert_uint_le(after, low);

        /* A lease (a load or pull in flight) holds d; a budget nothing can
         * meet takes a only: c is pinned, and the shared layer stays. */
        ck_assert_int_eq(store_lease_acquire(s, d.manifest_digest), 0);
        enforce(s, 1, 0, now_ms());
        static const char *const second[] = { "image.evicted docker.io/library/a:1" };
        expect_heard(&h, second, 1);
        ck_assert(!h.report.met);
        expect_files(fc, true);
        static const char *const left[] = { "docker.io/library/d:1", "docker.io/library/c:1" };
        expect_list(s, left, 2);
        store_lease_release(s, d.manifest_digest);

        /* What was used since the protection time stays: d was, by a
         * pull's cache hit. */
        usleep(3000);
        int64_t since = now_ms();
        usleep(3000);
        ck_assert_int_eq(store_image_touch(s, "docker.io/library/d:1", NULL), 0);
        h.n = 0;
        enforce(s, 1, 0, since);
        ck_assert_uint_eq(h.n, 0);
        expect_list(s, left, 2);
        enforce(s, 1, 0, now_ms() + 1);
        static const char *const third[] = { "image.evicted docker.io/library/d:1" };
        expect_heard(&h, third, 1);
        /* Nothing but c's files is left, and no file without a row. */
        ck_assert_uint_eq(count_content_files(s), 6);
}
END_TEST

START_TEST(test_prune_unused_for) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "a" }, *const lb[] = { "b" };
        char *ra[] = { (char *) "docker.io/library/a:1" }, *rb[] = { (char *) "docker.io/library/b:1" };
        json_t *report = NULL;
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        make_image(s, "a", la, 1, true, ra, 1, NULL);
        usleep(200 * 1000);
        make_image(s, "b", lb, 1, true, rb, 1, NULL);

        /* Unused for an hour: nothing is that old. */
        ck_assert_int_eq(store_image_prune(s, 3600 * 1000, &report, &err), 0);
        expect_report(report, 0, 0, 0, 0, 0);
        json_decref(report);
        /* Unused for 100 ms: a only. */
        ck_assert_int_eq(store_image_prune(s, 100, &report, &err), 0);
        expect_report(report, 1, 1, 1, 1, 1);
        json_decref(report);
        static const char *const left[] = { "docker.io/library/b:1" };
        expect_list(s, left, 1);
        /* Longer than the epoch is old, then 0: every unpinned image. */
        ck_assert_int_eq(store_image_prune(s, INT64_MAX, &report, &err), 0);
        expect_report(report, 0, 0, 0, 0, 0);
        json_decref(report);
        ck_assert_int_eq(store_image_prune(s, 0, &report, &err), 0);
        expect_report(report, 1, 1, 1, 1, 1);
        json_decref(report);
}
END_TEST

START_TEST(test_events_in_order) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        static const char *const la[] = { "a" }, *const lb[] = { "b" };
        char *ra[] = { (char *) "docker.io/library/a:1", (char *) "docker.io/library/a:2" };
        char *rb[] = { (char *) "docker.io/library/b:1" };
        Heard h = {};
        TestImage a;
        MsbError err = {};

        test_dir_init(&t, "store");
        s = test_store_open(t.store);
        store_set_observer(s, &(StoreObserver) { heard_event, heard_budget, &h });
        make_image(s, "a", la, 1, true, ra, 2, &a);
        make_image(s, "b", lb, 1, true, rb, 1, NULL);
        /* A pull's cache hit, by a digest reference of the repository. */
        _cleanup_free_ char *by_digest = NULL;
        ck_assert_int_ge(asprintf(&by_digest, "docker.io/library/a@%s", a.manifest_digest), 0);
        ck_assert_int_eq(store_image_touch(s, by_digest, NULL), 0);
        pin(s, "snapshot", "snap", "a:2", NULL);
        ck_assert_int_eq(store_pin_remove(s, "snapshot", "snap", &err), 0);
        ck_assert_int_eq(store_pin_remove(s, "snapshot", "snap", &err), -ENOENT);
        msb_error_clear(&err);
        ck_assert_int_eq(remove_image(s, a.manifest_digest, false, &err), 0);
        json_decref(prune(s));

        const char *const want[] = {
                "image.loaded docker.io/library/a:1",
                "image.loaded docker.io/library/a:2",
                "image.loaded docker.io/library/b:1",
                by_digest,
                "pin.added docker.io/library/a:2 snap",
                "pin.removed docker.io/library/a:2 snap",
                "image.removed docker.io/library/a:1",
                "image.removed docker.io/library/a:2",
                "image.pruned docker.io/library/b:1",
        };
        _cleanup_free_ char *pulled = NULL;
        ck_assert_int_ge(asprintf(&pulled, "image.pulled %s", by_digest), 0);
        const char *const want_all[] = { want[0], want[1], want[2], pulled, want[4], want[5], want[6], want[7], want[8] };
        expect_heard(&h, want_all, ELEMENTSOF(want_all));
        ck_assert_uint_eq(h.rounds, 0);
}
END_TEST

static Suite *store_suite(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("open");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_open_creates_layout);
        tcase_add_test(tc, test_open_twice_in_one_process);
        tcase_add_test(tc, test_open_held_by_another_process);
        tcase_add_test(tc, test_open_newer_schema_refused);
        tcase_add_test(tc, test_open_relative_and_bad_paths);
        tcase_add_test(tc, test_tmpfile_publish_and_discard);
        tcase_add_test(tc, test_write_file_keeps_existing);
        tcase_add_test(tc, test_open_makes_directories_private);
        tcase_add_test(tc, test_open_refuses_symlinked_subdirectory);
        tcase_add_test(tc, test_open_refuses_foreign_directory);
        tcase_add_test_raise_signal(tc, test_reader_refuses_other_threads, SIGABRT);
        suite_add_tcase(s, tc);

        tc = tcase_create("images");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_commit_get_inspect);
        tcase_add_test(tc, test_get_by_any_spelling);
        tcase_add_test(tc, test_get_by_digest_and_prefix);
        tcase_add_test(tc, test_commit_under_digest_reference);
        tcase_add_test(tc, test_list_newest_first);
        tcase_add_test(tc, test_remove_unpinned);
        tcase_add_test(tc, test_remove_pinned);
        tcase_add_test(tc, test_pin_replace_and_list);
        tcase_add_test(tc, test_persists_across_reopen);
        tcase_add_test(tc, test_pin_survives_retag);
        tcase_add_test(tc, test_commit_error_names_cause);
        suite_add_tcase(s, tc);

        tc = tcase_create("gc");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_prune_counts);
        tcase_add_test(tc, test_prune_leaves_no_image_files);
        tcase_add_test(tc, test_leases_protect_from_prune);
        tcase_add_test(tc, test_lease_protects_layer_of_removed_image);
        tcase_add_test(tc, test_prune_races_ingest);
        tcase_add_test(tc, test_lease_keeps_references_of_a_commit_in_flight);
        tcase_add_test(tc, test_sweep_at_reopen);
        tcase_add_test(tc, test_sweep_drops_manifest_missing_blob);
        suite_add_tcase(s, tc);

        tc = tcase_create("budget");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_budget_parse);
        tcase_add_test(tc, test_budget_evicts_least_recently_used);
        tcase_add_test(tc, test_prune_unused_for);
        tcase_add_test(tc, test_events_in_order);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(store_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
