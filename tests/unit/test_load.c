/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Unit tests of image.load (daemon/image/load.c) against hostile and edge-case
 * sources that the tools in the integration tests never produce: archive
 * members that try to leave the unpack directory, symlinked blobs, indexes
 * nested past the limit, archives with too many or too large members, and
 * the promise that a source directory is only read.
 *
 * Sources are built here with libarchive: real layer tars, configs,
 * manifests and indexes with computed digests.
 */

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "digest.h"
#include "load.h"
#include "oci.h"
#include "store.h"
#include "testdir.h"

#define BUFFER_BYTES (1 * MiB)

/* ---- sources: a list of members, written as a directory or a tar ---- */

typedef struct Member {
        char *name;
        char *data;
        size_t size;
        char *symlink; /* a symlink to this target instead of data */
        bool directory;
} Member;

typedef struct Source {
        Member members[64];
        size_t n;
} Source;

static void source_done(Source *src) {
        for (size_t i = 0; i < src->n; i++) {
                free(src->members[i].name);
                free(src->members[i].data);
                free(src->members[i].symlink);
        }
        src->n = 0;
}

static void source_add(Source *src, const char *name, const void *data, size_t size) {
        ck_assert_uint_lt(src->n, ELEMENTSOF(src->members));
        Member *m = &src->members[src->n++];
        *m = (Member) { .name = strdup(name), .data = malloc(size + 1), .size = size };
        memcpy(m->data, data, size);
}

static void source_add_symlink(Source *src, const char *name, const char *target) {
        ck_assert_uint_lt(src->n, ELEMENTSOF(src->members));
        src->members[src->n++] = (Member) { .name = strdup(name), .symlink = strdup(target) };
}

/* Adds data as blobs/sha256/<hex>; returns its digest in ret. */
static void source_add_blob(Source *src, const void *data, size_t size, char ret[DIGEST_STRING_MAX]) {
        char name[128];

        ck_assert_int_eq(digest_buffer(data, size, ret), 0);
        snprintf(name, sizeof(name), "blobs/sha256/%s", digest_hex(ret));
        source_add(src, name, data, size);
}

static void source_add_json(Source *src, const char *name, json_t *doc) {
        _cleanup_free_ char *s = json_dumps(doc, JSON_COMPACT);
        ck_assert_ptr_nonnull(s);
        source_add(src, name, s, strlen(s));
}

static void source_add_json_blob(Source *src, json_t *doc, char ret[DIGEST_STRING_MAX], size_t *ret_size) {
        _cleanup_free_ char *s = json_dumps(doc, JSON_COMPACT);
        ck_assert_ptr_nonnull(s);
        source_add_blob(src, s, strlen(s), ret);
        if (ret_size)
                *ret_size = strlen(s);
}

static void write_archive(const Source *src, const char *path) {
        struct archive *a = archive_write_new();
        struct archive_entry *e = archive_entry_new();

        ck_assert_int_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_filename(a, path), ARCHIVE_OK);
        for (size_t i = 0; i < src->n; i++) {
                const Member *m = &src->members[i];
                archive_entry_clear(e);
                archive_entry_set_pathname(e, m->name);
                archive_entry_set_mtime(e, 1700000000, 0);
                if (m->symlink) {
                        archive_entry_set_filetype(e, AE_IFLNK);
                        archive_entry_set_perm(e, 0777);
                        archive_entry_set_symlink(e, m->symlink);
                } else if (m->directory) {
                        archive_entry_set_filetype(e, AE_IFDIR);
                        archive_entry_set_perm(e, 0755);
                } else {
                        archive_entry_set_filetype(e, AE_IFREG);
                        archive_entry_set_perm(e, 0644);
                        archive_entry_set_size(e, (la_int64_t) m->size);
                }
                ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
                if (!m->symlink && !m->directory)
                        ck_assert_int_eq(archive_write_data(a, m->data, m->size), (la_ssize_t) m->size);
        }
        archive_entry_free(e);
        ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
}

static void write_directory(const Source *src, const char *dir) {
        ck_assert_int_eq(mkdir_p(dir, 0755), 0);
        for (size_t i = 0; i < src->n; i++) {
                const Member *m = &src->members[i];
                _cleanup_free_ char *p = NULL;
                ck_assert_int_ge(asprintf(&p, "%s/%s", dir, m->name), 0);
                char *slash = strrchr(p, '/');
                *slash = '\0';
                ck_assert_int_eq(mkdir_p(p, 0755), 0);
                *slash = '/';
                if (m->symlink)
                        ck_assert_int_eq(symlink(m->symlink, p), 0);
                else {
                        _cleanup_close_ int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                        ck_assert_int_ge(fd, 0);
                        ck_assert_int_eq(write_all(fd, m->data, m->size), 0);
                }
        }
}

/* A real layer tar holding one file. */
static void make_layer_tar(const char *content, char **ret, size_t *ret_size) {
        struct archive *a = archive_write_new();
        struct archive_entry *e = archive_entry_new();
        char *buf = malloc(BUFFER_BYTES);
        size_t used = 0;

        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_memory(a, buf, BUFFER_BYTES, &used), ARCHIVE_OK);
        archive_entry_set_pathname(e, "hello.txt");
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

/* Adds one image (layer, config, manifest blobs); the manifest's digest and size in ret. */
static void add_image(Source *src, const char *content, char manifest_digest[DIGEST_STRING_MAX],
                      size_t *ret_manifest_size) {
        _cleanup_free_ char *tar = NULL;
        char layer_digest[DIGEST_STRING_MAX], config_digest[DIGEST_STRING_MAX];
        size_t tar_size, config_size;

        make_layer_tar(content, &tar, &tar_size);
        source_add_blob(src, tar, tar_size, layer_digest);
        json_auto_t *config = json_pack("{s:s, s:s, s:{s:s, s:[s]}}", "architecture", "amd64", "os", "linux", "rootfs",
                                        "type", "layers", "diff_ids", layer_digest);
        /* The image is for the host, wherever the test runs. */
        OciPlatform host;
        oci_host_platform(&host);
        json_object_set_new(config, "architecture", json_string(host.architecture));
        source_add_json_blob(src, config, config_digest, &config_size);
        json_auto_t *manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:[{s:s, s:s, s:I}]}", "schemaVersion", 2,
                                          "mediaType", OCI_MEDIA_TYPE_MANIFEST, "config", "mediaType",
                                          OCI_MEDIA_TYPE_CONFIG, "digest", config_digest, "size",
                                          (json_int_t) config_size, "layers", "mediaType", OCI_MEDIA_TYPE_LAYER_TAR,
                                          "digest", layer_digest, "size", (json_int_t) tar_size);
        source_add_json_blob(src, manifest, manifest_digest, ret_manifest_size);
}

/* A docker-save image: config.json, and manifest.json naming it ref and
 * listing its one layer at layer_path; the layer tar (holding content) is
 * for the caller to place, in *ret_tar. */
static void add_docker_manifest(Source *src, const char *content, const char *layer_path, const char *ref,
                                char **ret_tar, size_t *ret_tar_size) {
        char config_digest[DIGEST_STRING_MAX], layer_digest[DIGEST_STRING_MAX];

        make_layer_tar(content, ret_tar, ret_tar_size);
        ck_assert_int_eq(digest_buffer(*ret_tar, *ret_tar_size, layer_digest), 0);
        json_auto_t *config = json_pack("{s:s, s:{s:s, s:[s]}}", "os", "linux", "rootfs", "type", "layers", "diff_ids",
                                        layer_digest);
        _cleanup_free_ char *config_text = json_dumps(config, JSON_COMPACT);
        ck_assert_int_eq(digest_buffer(config_text, strlen(config_text), config_digest), 0);
        source_add(src, "config.json", config_text, strlen(config_text));
        json_auto_t *manifest = json_pack("[{s:s, s:[s], s:[s]}]", "Config", "config.json", "RepoTags", ref, "Layers",
                                          layer_path);
        source_add_json(src, "manifest.json", manifest);
}

static json_t *descriptor(const char *media_type, const char *digest, size_t size, const char *ref_name) {
        json_t *d = json_pack("{s:s, s:s, s:I}", "mediaType", media_type, "digest", digest, "size", (json_int_t) size);
        if (ref_name)
                json_object_set_new(d, "annotations",
                                    json_pack("{s:s}", "org.opencontainers.image.ref.name", ref_name));
        return d;
}

/* oci-layout and an index.json listing one descriptor. */
static void add_layout_index(Source *src, json_t *entry) {
        json_auto_t *index = json_pack("{s:i, s:s, s:[o]}", "schemaVersion", 2, "mediaType", OCI_MEDIA_TYPE_INDEX,
                                       "manifests", entry);
        static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
        source_add(src, "oci-layout", layout, strlen(layout));
        source_add_json(src, "index.json", index);
}

/* Every path below dir with its size, one per line, sorted: a fingerprint. */
static char *tree_listing(const char *dir) {
        _cleanup_free_ char *cmd = NULL;
        char *out = NULL;
        size_t size = 0;
        FILE *f, *mem = open_memstream(&out, &size);

        ck_assert_int_ge(asprintf(&cmd, "cd '%s' && find . -printf '%%p %%y %%s %%T@\\n' | LC_ALL=C sort", dir), 0);
        f = popen(cmd, "r");
        ck_assert_ptr_nonnull(f);
        for (int c; (c = fgetc(f)) != EOF;)
                fputc(c, mem);
        ck_assert_int_eq(pclose(f), 0);
        fclose(mem);
        return out;
}

static int load(Store *s, const char *path, const char *tag, json_t **ret, MsbError *err) {
        LoadRequest req = { .path = path, .fd = -EBADF, .tag = tag };
        *ret = NULL;
        return load_images(s, &req, ret, err);
}

/* ---- tests ---- */

START_TEST(test_load_archive) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source src = {};
        _cleanup_free_ char *archive = NULL;
        char digest[DIGEST_STRING_MAX];
        size_t size;
        json_auto_t *handles = NULL;
        MsbError err = {};
        int r;

        /* The baseline the hostile variants below start from. */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        add_image(&src, "hello\n", digest, &size);
        add_layout_index(&src, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/base:1"));
        ck_assert_int_ge(asprintf(&archive, "%s/image.tar", t.path), 0);
        write_archive(&src, archive);

        r = load(s, archive, NULL, &handles, &err);
        ck_assert_msg(r == 0, "load: %s", err.message);
        ck_assert_uint_eq(json_array_size(handles), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(handles, 0), "reference")),
                         "docker.io/library/base:1");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(handles, 0), "manifest_digest")), digest);
        /* The unpacked copy is gone. */
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

START_TEST(test_members_cannot_escape) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source src = {};
        _cleanup_free_ char *archive = NULL, *abs_target = NULL, *rel_target = NULL, *deep_target = NULL,
                            *via_link = NULL;
        char digest[DIGEST_STRING_MAX], name[256];
        size_t size;
        json_auto_t *handles = NULL;
        MsbError err = {};
        int r;

        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        add_image(&src, "escape attempts\n", digest, &size);
        add_layout_index(&src, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/esc:1"));

        /* Unpacked under STORE/tmp/<n>-load/: "../../x" is STORE/x. */
        ck_assert_int_ge(asprintf(&rel_target, "%s/escaped-relative", t.store), 0);
        source_add(&src, "../../escaped-relative", "x", 1);
        ck_assert_int_ge(asprintf(&deep_target, "%s/escaped-deep", t.path), 0);
        source_add(&src, "blobs/../../../../escaped-deep", "x", 1);
        ck_assert_int_ge(asprintf(&abs_target, "%s/escaped-absolute", t.path), 0);
        source_add(&src, abs_target, "x", 1);
        /* A symlink out, then a file through it. */
        snprintf(name, sizeof(name), "%s", t.path);
        source_add_symlink(&src, "out", name);
        source_add(&src, "out/escaped-via-link", "x", 1);
        ck_assert_int_ge(asprintf(&via_link, "%s/escaped-via-link", t.path), 0);

        ck_assert_int_ge(asprintf(&archive, "%s/image.tar", t.path), 0);
        write_archive(&src, archive);
        r = load(s, archive, NULL, &handles, &err);
        ck_assert_msg(r == 0, "load: %s", err.message);

        ck_assert_msg(access(rel_target, F_OK) < 0, "%s was written", rel_target);
        ck_assert_msg(access(deep_target, F_OK) < 0, "%s was written", deep_target);
        ck_assert_msg(access(abs_target, F_OK) < 0, "%s was written", abs_target);
        ck_assert_msg(access(via_link, F_OK) < 0, "%s was written", via_link);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

START_TEST(test_symlinked_blob_is_not_followed) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source src = {}, outside = {};
        _cleanup_free_ char *archive = NULL, *secret = NULL, *blob = NULL;
        char digest[DIGEST_STRING_MAX];
        size_t size;
        json_auto_t *handles = NULL;
        MsbError err = {};

        /* The manifest's bytes sit outside the archive; the archive only
         * has a symlink to them under the manifest's blob name. Following
         * it would load the image from a file the archive does not hold. */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        add_image(&outside, "outside\n", digest, &size);
        ck_assert_int_ge(asprintf(&secret, "%s/outside", t.path), 0);
        write_directory(&outside, secret);

        for (size_t i = 0; i < outside.n; i++)
                if (!strstr(outside.members[i].name, digest_hex(digest)))
                        source_add(&src, outside.members[i].name, outside.members[i].data, outside.members[i].size);
        ck_assert_int_ge(asprintf(&blob, "%s/blobs/sha256/%s", secret, digest_hex(digest)), 0);
        char name[128];
        snprintf(name, sizeof(name), "blobs/sha256/%s", digest_hex(digest));
        source_add_symlink(&src, name, blob);
        add_layout_index(&src, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/link:1"));
        ck_assert_int_ge(asprintf(&archive, "%s/image.tar", t.path), 0);
        write_archive(&src, archive);

        ck_assert_int_lt(load(s, archive, NULL, &handles, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_IMAGE);
        msb_error_clear(&err);
        ck_assert_uint_eq(test_store_count(s, "blobs/sha256"), 0);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

/* index.json -> depth nested indexes -> the manifest. */
static void add_nested(Source *src, unsigned depth, const char *content) {
        char digest[DIGEST_STRING_MAX];
        size_t size;

        add_image(src, content, digest, &size);
        json_t *entry = descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, NULL);
        OciPlatform host;
        oci_host_platform(&host);
        json_object_set_new(entry, "platform", json_pack("{s:s, s:s}", "os", "linux", "architecture", host.architecture));
        for (unsigned i = 0; i < depth; i++) {
                json_auto_t *index = json_pack("{s:i, s:s, s:[o]}", "schemaVersion", 2, "mediaType",
                                               OCI_MEDIA_TYPE_INDEX, "manifests", entry);
                source_add_json_blob(src, index, digest, &size);
                entry = descriptor(OCI_MEDIA_TYPE_INDEX, digest, size, NULL);
        }
        json_object_set_new(entry, "annotations",
                            json_pack("{s:s}", "org.opencontainers.image.ref.name", "docker.io/library/nested:1"));
        add_layout_index(src, entry);
}

START_TEST(test_index_nesting_limit) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source ok = {}, deep = {};
        _cleanup_free_ char *ok_dir = NULL, *deep_dir = NULL;
        json_auto_t *handles = NULL, *none = NULL;
        MsbError err = {};
        int r;

        test_dir_init(&t, "load");
        s = test_store_open(t.store);

        /* OCI_INDEX_DEPTH_MAX indexes below index.json are fine. */
        add_nested(&ok, OCI_INDEX_DEPTH_MAX, "nested ok\n");
        ck_assert_int_ge(asprintf(&ok_dir, "%s/ok", t.path), 0);
        write_directory(&ok, ok_dir);
        r = load(s, ok_dir, NULL, &handles, &err);
        ck_assert_msg(r == 0, "load: %s", err.message);
        ck_assert_uint_eq(json_array_size(handles), 1);

        /* One more is refused, with a clear error. */
        add_nested(&deep, OCI_INDEX_DEPTH_MAX + 1, "nested too deep\n");
        ck_assert_int_ge(asprintf(&deep_dir, "%s/deep", t.path), 0);
        write_directory(&deep, deep_dir);
        ck_assert_int_lt(load(s, deep_dir, NULL, &none, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_IMAGE);
        ck_assert_msg(strstr(err.message, "nest"), "message '%s'", err.message);
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_source_directory_is_only_read) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source layout = {}, docker = {};
        _cleanup_free_ char *layout_dir = NULL, *docker_dir = NULL, *before = NULL, *after = NULL;
        _cleanup_free_ char *tar = NULL;
        char digest[DIGEST_STRING_MAX];
        size_t size, tar_size;
        MsbError err = {};
        int r;

        test_dir_init(&t, "load");
        s = test_store_open(t.store);

        /* An OCI layout directory. */
        add_image(&layout, "layout dir\n", digest, &size);
        add_layout_index(&layout, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/dir:1"));
        ck_assert_int_ge(asprintf(&layout_dir, "%s/layout", t.path), 0);
        write_directory(&layout, layout_dir);
        before = tree_listing(layout_dir);
        json_auto_t *h1 = NULL;
        r = load(s, layout_dir, NULL, &h1, &err);
        ck_assert_msg(r == 0, "load: %s", err.message);
        after = tree_listing(layout_dir);
        ck_assert_str_eq(after, before);
        free(TAKE_PTR(before));
        free(TAKE_PTR(after));

        /* A docker-save tree unpacked into a directory: manifest.json,
         * the config and the layer tar under their own names. */
        add_docker_manifest(&docker, "docker dir\n", "layer0/layer.tar", "docker.io/library/saved:1", &tar, &tar_size);
        source_add(&docker, "layer0/layer.tar", tar, tar_size);
        ck_assert_int_ge(asprintf(&docker_dir, "%s/docker", t.path), 0);
        write_directory(&docker, docker_dir);
        before = tree_listing(docker_dir);
        json_auto_t *h2 = NULL;
        r = load(s, docker_dir, NULL, &h2, &err);
        after = tree_listing(docker_dir);
        /* Loading reads the source; it never writes into the caller's directory. */
        ck_assert_msg(streq(after, before), "load wrote into the source directory:\nbefore:\n%s\nafter:\n%s", before,
                      after);
        ck_assert_msg(r == 0, "load: %s", err.message);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(h2, 0), "reference")),
                         "docker.io/library/saved:1");
}
END_TEST

START_TEST(test_failed_load_leaves_nothing) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source src = {};
        _cleanup_free_ char *archive = NULL;
        char digest[DIGEST_STRING_MAX];
        size_t size;
        json_auto_t *handles = NULL;
        MsbError err = {};

        /* The layer blob's bytes do not match its name. */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        add_image(&src, "good\n", digest, &size);
        for (size_t i = 0; i < src.n; i++)
                if (src.members[i].size > 512) {
                        /* The tar: flip a byte of the file's content. */
                        src.members[i].data[512] ^= 1;
                        break;
                }
        add_layout_index(&src, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/bad:1"));
        ck_assert_int_ge(asprintf(&archive, "%s/image.tar", t.path), 0);
        write_archive(&src, archive);

        ck_assert_int_lt(load(s, archive, NULL, &handles, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        msb_error_clear(&err);
        ck_assert_ptr_null(handles);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
        ck_assert_uint_eq(test_store_count(s, "layers/sha256"), 0);
        json_auto_t *list = NULL;
        ck_assert_int_eq(store_image_list(s, &list, &err), 0);
        ck_assert_uint_eq(json_array_size(list), 0);

        /* A path that is not there. */
        ck_assert_int_lt(load(s, "/nonexistent/image.tar", NULL, &handles, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_PATH_NOT_FOUND);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "path")), "/nonexistent/image.tar");
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_member_count_limit) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *archive = NULL;
        struct archive *a;
        struct archive_entry *e;
        json_auto_t *handles = NULL;
        MsbError err = {};

        /* More members than LOAD_ARCHIVE_MEMBERS_MAX (empty directories keep
         * the archive small): refused before it fills the disk. */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        ck_assert_int_ge(asprintf(&archive, "%s/many.tar", t.path), 0);
        a = archive_write_new();
        e = archive_entry_new();
        ck_assert_int_eq(archive_write_set_format_ustar(a), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_filename(a, archive), ARCHIVE_OK);
        for (unsigned i = 0; i <= LOAD_ARCHIVE_MEMBERS_MAX; i++) {
                char name[32];
                snprintf(name, sizeof(name), "d%u/", i);
                archive_entry_clear(e);
                archive_entry_set_pathname(e, name);
                archive_entry_set_filetype(e, AE_IFDIR);
                archive_entry_set_perm(e, 0755);
                ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        }
        archive_entry_free(e);
        ck_assert_int_eq(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);

        ck_assert_int_lt(load(s, archive, NULL, &handles, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_LIMIT_EXCEEDED);
        msb_error_clear(&err);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

START_TEST(test_member_size_limit) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *archive = NULL, *buf = NULL;
        struct archive *a;
        struct archive_entry *e;
        json_auto_t *handles = NULL;
        MsbError err = {};
        size_t used = 0;

        /* A member that says it is larger than the limit is refused from its
         * header, before a byte of it is unpacked (the archive need not even
         * hold the bytes). */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        ck_assert_int_ge(asprintf(&archive, "%s/huge.tar", t.path), 0);
        buf = malloc(BUFFER_BYTES);
        ck_assert_ptr_nonnull(buf);
        a = archive_write_new();
        e = archive_entry_new();
        ck_assert_int_eq(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        /* Unblocked into a small buffer: the headers get out, and the
         * padding of the missing data fails once the buffer is full
         * instead of writing gigabytes of zeros. */
        ck_assert_int_eq(archive_write_set_bytes_per_block(a, 0), ARCHIVE_OK);
        ck_assert_int_eq(archive_write_open_memory(a, buf, BUFFER_BYTES, &used), ARCHIVE_OK);
        archive_entry_set_pathname(e, "blobs/sha256/huge");
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_size(e, (la_int64_t) LOAD_ARCHIVE_MEMBER_MAX_BYTES + 1);
        ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        archive_entry_free(e);
        (void) archive_write_close(a);
        archive_write_free(a);
        ck_assert_uint_gt(used, 512);
        _cleanup_close_ int fd = open(archive, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write_all(fd, buf, used), 0);

        ck_assert_int_lt(load(s, archive, NULL, &handles, &err), 0);
        ck_assert_msg(err.kind == PROTO_ERROR_LIMIT_EXCEEDED, "%s", err.message);
        msb_error_clear(&err);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}
END_TEST

/* Replaces dir/rel with a FIFO nobody writes to. */
static void replace_with_fifo(const char *dir, const char *rel) {
        _cleanup_free_ char *p = NULL;
        ck_assert_int_ge(asprintf(&p, "%s/%s", dir, rel), 0);
        ck_assert_int_eq(unlink(p), 0);
        ck_assert_int_eq(mkfifo(p, 0644), 0);
}

/* Loads path, which must fail at once as an invalid image naming data_path. */
static void assert_refused(Store *s, const char *path, const char *data_path, const char *says) {
        json_auto_t *handles = NULL;
        MsbError err = {};
        struct timespec t0, t1;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        ck_assert_int_lt(load(s, path, NULL, &handles, &err), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ck_assert_msg(err.kind == PROTO_ERROR_INVALID_IMAGE, "%s", err.message);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "path")), data_path);
        ck_assert_msg(strstr(err.message, says), "message '%s'", err.message);
        ck_assert_int_lt(t1.tv_sec - t0.tv_sec, 2);
        msb_error_clear(&err);
        ck_assert_uint_eq(test_store_count(s, "tmp"), 0);
}

START_TEST(test_fifo_in_a_source_is_refused) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source src = {};
        _cleanup_free_ char *a = NULL, *b = NULL, *archive = NULL;
        char digest[DIGEST_STRING_MAX], rel[128];
        size_t size;

        /* Each of these blocked open() until a writer came: forever. */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        add_image(&src, "fifo\n", digest, &size);
        add_layout_index(&src, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/fifo:1"));
        ck_assert_int_ge(asprintf(&a, "%s/a", t.path), 0);
        write_directory(&src, a);
        replace_with_fifo(a, "index.json");
        assert_refused(s, a, "index.json", "FIFO");

        ck_assert_int_ge(asprintf(&b, "%s/b", t.path), 0);
        write_directory(&src, b);
        snprintf(rel, sizeof(rel), "blobs/sha256/%s", digest_hex(digest));
        replace_with_fifo(b, rel);
        assert_refused(s, b, rel, "FIFO");

        ck_assert_int_ge(asprintf(&archive, "%s/fifo.tar", t.path), 0);
        ck_assert_int_eq(mkfifo(archive, 0644), 0);
        assert_refused(s, archive, archive, "FIFO");
}
END_TEST

/* text, once the path inside the source (rel, which may hold any digits)
 * is blanked out, does not contain secret. */
static void assert_says_nothing_of(const char *text, const char *rel, const char *secret) {
        _cleanup_free_ char *copy = strdup(text);
        ck_assert_ptr_nonnull(copy);
        for (char *p; (p = strstr(copy, rel));)
                memset(p, '_', strlen(rel));
        ck_assert_msg(!strstr(copy, secret), "'%s' in '%s'", secret, text);
}

/* An image whose manifest blob (size bytes, digest) is a symlink to target. */
static void write_layout_linking_manifest(Source *src, const char *dir, const char *target, char digest[DIGEST_STRING_MAX],
                                          char rel[128]) {
        size_t size;
        _cleanup_free_ char *p = NULL;

        add_image(src, "linked\n", digest, &size);
        add_layout_index(src, descriptor(OCI_MEDIA_TYPE_MANIFEST, digest, size, "docker.io/library/link:1"));
        write_directory(src, dir);
        snprintf(rel, 128, "blobs/sha256/%s", digest_hex(digest));
        ck_assert_int_ge(asprintf(&p, "%s/%s", dir, rel), 0);
        ck_assert_int_eq(unlink(p), 0);
        ck_assert_int_eq(symlink(target, p), 0);
}

START_TEST(test_symlink_out_of_a_layout_directory) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source one = {}, two = {};
        _cleanup_free_ char *secret = NULL, *dir = NULL, *dir2 = NULL, *data = NULL;
        char digest[DIGEST_STRING_MAX], secret_hash[DIGEST_STRING_MAX], rel[128];
        json_auto_t *handles = NULL;
        MsbError err = {};

        /* A file outside the layout, with a size and digest of its own: the
         * size and digest checks would report them if it were read. */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        ck_assert_int_ge(asprintf(&secret, "%s/secret-file", t.path), 0);
        {
                _cleanup_close_ int fd = open(secret, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                ck_assert_int_ge(fd, 0);
                ck_assert_int_eq(write_all(fd, "0123456789abcdefghij-secret", 27), 0);
        }
        ck_assert_int_eq(digest_buffer("0123456789abcdefghij-secret", 27, secret_hash), 0);

        ck_assert_int_ge(asprintf(&dir, "%s/abs", t.path), 0);
        write_layout_linking_manifest(&one, dir, secret, digest, rel);
        ck_assert_int_lt(load(s, dir, NULL, &handles, &err), 0);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_IMAGE);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "path")), rel);
        data = json_dumps(err.data, JSON_COMPACT);
        const char *secrets[] = { secret, "secret-file", "27", digest_hex(secret_hash) };
        for (size_t i = 0; i < ELEMENTSOF(secrets); i++) {
                assert_says_nothing_of(err.message, rel, secrets[i]);
                assert_says_nothing_of(data, rel, secrets[i]);
        }
        msb_error_clear(&err);

        /* The same through "..": refused alike. */
        ck_assert_int_ge(asprintf(&dir2, "%s/rel", t.path), 0);
        write_layout_linking_manifest(&two, dir2, "../../../secret-file", digest, rel);
        assert_refused(s, dir2, rel, "outside the source");
        ck_assert_uint_eq(test_store_count(s, "blobs/sha256"), 0);
}
END_TEST

START_TEST(test_docker_directory_layer_links) {
        _cleanup_test_dir_ TestDir t;
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(source_done) Source docker = {};
        _cleanup_free_ char *tar = NULL, *dir = NULL, *real = NULL, *link = NULL, *outside = NULL;
        size_t tar_size;
        json_auto_t *handles = NULL;
        MsbError err = {};
        int r;

        /* A docker-save directory whose layer path is a symlink to the tar
         * elsewhere in the directory (docker save links repeated layers). */
        test_dir_init(&t, "load");
        s = test_store_open(t.store);
        add_docker_manifest(&docker, "docker link\n", "layer0/layer.tar", "docker.io/library/linked:1", &tar, &tar_size);
        source_add(&docker, "real/layer.tar", tar, tar_size);
        source_add_symlink(&docker, "layer0/layer.tar", "../real/layer.tar");
        ck_assert_int_ge(asprintf(&dir, "%s/docker", t.path), 0);
        write_directory(&docker, dir);
        r = load(s, dir, NULL, &handles, &err);
        ck_assert_msg(r == 0, "load: %s", err.message);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(handles, 0), "reference")),
                         "docker.io/library/linked:1");

        /* Moved out of the directory, the same link is refused. */
        ck_assert_int_ge(asprintf(&real, "%s/real/layer.tar", dir), 0);
        ck_assert_int_ge(asprintf(&outside, "%s/layer.tar", t.path), 0);
        ck_assert_int_eq(rename(real, outside), 0);
        ck_assert_int_ge(asprintf(&link, "%s/layer0/layer.tar", dir), 0);
        ck_assert_int_eq(unlink(link), 0);
        ck_assert_int_eq(symlink("../../layer.tar", link), 0);
        assert_refused(s, dir, "layer0/layer.tar", "outside the source");
}
END_TEST

static Suite *load_suite(void) {
        Suite *s = suite_create("load");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_load_archive);
        tcase_add_test(tc, test_members_cannot_escape);
        tcase_add_test(tc, test_symlinked_blob_is_not_followed);
        tcase_add_test(tc, test_index_nesting_limit);
        tcase_add_test(tc, test_source_directory_is_only_read);
        tcase_add_test(tc, test_failed_load_leaves_nothing);
        tcase_add_test(tc, test_member_count_limit);
        tcase_add_test(tc, test_member_size_limit);
        tcase_add_test(tc, test_fifo_in_a_source_is_refused);
        tcase_add_test(tc, test_symlink_out_of_a_layout_directory);
        tcase_add_test(tc, test_docker_directory_layer_links);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(load_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
