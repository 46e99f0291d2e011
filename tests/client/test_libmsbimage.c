/* SPDX-License-Identifier: Apache-2.0 */

/*
 * libmsbimage against the real msb-imaged: every call, every error the
 * daemon sends for it, and a connection that breaks. Images are real OCI
 * layouts and archives built by mkimage.py; every expected value comes from
 * those bytes, never from a constant.
 */

#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "msbimage.h"

static TestDaemon daemon_;
static bool daemon_killed;
static json_t *truth;    /* mkimage.py's description of the test images */
static char *images_dir;
static MsbClient *client;

/* --- fixtures ---------------------------------------------------------- */

static void images_setup(void) {
        truth = test_images_build(&images_dir);
}

static void images_teardown(void) {
        json_decref(truth);
        if (images_dir && !getenv("MSB_TEST_KEEP"))
                test_rm_rf(images_dir);
        free(images_dir);
}

static void daemon_setup(void) {
        daemon_killed = false;
        test_daemon_start(&daemon_);
        ck_assert_int_eq(msb_client_connect(daemon_.socket_path, &client), 0);
}

static void daemon_teardown(void) {
        client = msb_client_free(client);
        if (!daemon_killed) {
                int status = test_daemon_stop(&daemon_);
                ck_assert_msg(status == 0, "msb-imaged exited with %d after SIGTERM (log: %s)", status,
                              daemon_.log_path);
        }
        ck_assert_msg(!test_daemon_log_has_sanitizer_report(&daemon_), "sanitizer report in %s",
                      daemon_.log_path);
        test_daemon_cleanup(&daemon_);
}

/* --- helpers ----------------------------------------------------------- */

static const char *truth_str(const char *key) {
        return json_string_value(json_object_get(truth, key));
}

static int64_t truth_int(const char *key) {
        return json_integer_value(json_object_get(truth, key));
}

/* Asserts that the last call failed with the JSON-RPC error code and name. */
static void assert_remote_error(int r, int code, const char *name) {
        const MsbClientError *e = msb_client_last_error(client);

        ck_assert_int_eq(r, -MSB_EREMOTE);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(e->code, code);
        ck_assert_str_eq(e->name, name);
        ck_assert_ptr_nonnull(e->message);
        ck_assert_int_gt(strlen(e->message), 0);
        ck_assert_ptr_nonnull(e->data_json);
        /* A JSON-RPC error leaves the connection usable. */
        ck_assert(msb_client_is_connected(client));
}

static void assert_image_matches_truth(const MsbImage *im) {
        ck_assert_str_eq(im->reference, truth_str("reference"));
        ck_assert_str_eq(im->manifest_digest, truth_str("manifest_digest"));
        ck_assert_str_eq(im->architecture, truth_str("architecture"));
        ck_assert_str_eq(im->os, truth_str("os"));
        ck_assert_int_eq(im->layer_count, truth_int("layer_count"));
        ck_assert_int_eq(im->size_bytes, truth_int("size_bytes"));
        ck_assert_int_gt(im->created_at, 0);
        ck_assert_int_ge(im->last_used_at, im->created_at);
        ck_assert_ptr_nonnull(im->json);
}

static void load_app(const char *tag) {
        MsbImageList *list = NULL;

        ck_assert_int_eq(msb_client_image_load(client, truth_str("layout"), tag, &list), 0);
        ck_assert_uint_eq(list->n_images, 1);
        msb_image_list_free(list);
}

static bool strv_equals_json(char *const *l, json_t *a) {
        size_t i;

        if (json_is_null(a))
                return l == NULL;
        if (!l)
                return false;
        for (i = 0; l[i]; i++)
                if (i >= json_array_size(a) || strcmp(l[i], json_string_value(json_array_get(a, i))) != 0)
                        return false;
        return i == json_array_size(a);
}

static const char *strv_lookup_pair(char *const *l, const char *key) {
        for (size_t i = 0; l && l[i]; i += 2)
                if (strcmp(l[i], key) == 0)
                        return l[i + 1];
        return NULL;
}

/* --- connection -------------------------------------------------------- */

START_TEST(test_socket_path_default) {
        char *p = NULL;

        setenv("MSB_IMAGED_SOCKET", "/run/x/imaged.sock", 1);
        ck_assert_int_eq(msb_socket_path_default(&p), 0);
        ck_assert_str_eq(p, "/run/x/imaged.sock");
        free(p);

        unsetenv("MSB_IMAGED_SOCKET");
        setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
        ck_assert_int_eq(msb_socket_path_default(&p), 0);
        ck_assert_str_eq(p, "/run/user/4242/microsandbox/imaged.sock");
        free(p);

        unsetenv("XDG_RUNTIME_DIR");
        char want[64];
        snprintf(want, sizeof(want), "/tmp/microsandbox-%u/imaged.sock", (unsigned) getuid());
        ck_assert_int_eq(msb_socket_path_default(&p), 0);
        ck_assert_str_eq(p, want);
        free(p);
}
END_TEST

START_TEST(test_connect_default_path_from_env) {
        MsbClient *c = NULL;
        MsbSystemInfo *info = NULL;

        setenv("MSB_IMAGED_SOCKET", daemon_.socket_path, 1);
        ck_assert_int_eq(msb_client_connect(NULL, &c), 0);
        ck_assert_str_eq(msb_client_socket_path(c), daemon_.socket_path);
        ck_assert_int_eq(msb_client_system_info(c, &info), 0);
        ck_assert_int_eq(info->pid, daemon_.pid);
        msb_system_info_free(info);
        msb_client_free(c);
}
END_TEST

START_TEST(test_connect_missing_socket) {
        MsbClient *c = NULL;
        char path[400];

        snprintf(path, sizeof(path), "%s/no-such.sock", daemon_.dir);
        ck_assert_int_eq(msb_client_connect(path, &c), -ENOENT);
        ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_connect_empty_path) {
        MsbClient *c = NULL;

        ck_assert_int_eq(msb_client_connect("", &c), -EINVAL);
        ck_assert_int_eq(msb_client_connect(daemon_.socket_path, NULL), -EINVAL);
        ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_connect_path_too_long) {
        char path[MSB_CLIENT_SOCKET_PATH_MAX + 2];
        MsbClient *c = NULL;

        memset(path, 'a', sizeof(path) - 1);
        path[0] = '/';
        path[sizeof(path) - 1] = '\0';
        ck_assert_int_eq(msb_client_connect(path, &c), -ENAMETOOLONG);
        ck_assert_ptr_null(c);
}
END_TEST

START_TEST(test_connect_refused_after_daemon_exit) {
        MsbClient *c = NULL;

        ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
        daemon_killed = true;
        int r = msb_client_connect(daemon_.socket_path, &c);
        /* The daemon removes its socket on a clean exit; a left-over socket
         * file would refuse instead. Both mean "not running". */
        ck_assert_msg(r == -ENOENT || r == -ECONNREFUSED, "connect gave %d", r);
}
END_TEST

START_TEST(test_free_null) {
        ck_assert_ptr_null(msb_client_free(NULL));
        ck_assert_ptr_null(msb_image_free(NULL));
        ck_assert_ptr_null(msb_image_list_free(NULL));
        ck_assert_ptr_null(msb_image_detail_free(NULL));
        ck_assert_ptr_null(msb_prune_report_free(NULL));
        ck_assert_ptr_null(msb_rootfs_free(NULL));
        ck_assert_ptr_null(msb_pin_list_free(NULL));
        ck_assert_ptr_null(msb_system_info_free(NULL));
        ck_assert_ptr_null(msb_system_df_free(NULL));
        ck_assert_str_eq(msb_version(), MSB_VERSION);
}
END_TEST

/* --- system ------------------------------------------------------------ */

START_TEST(test_system_info) {
        MsbSystemInfo *info = NULL;

        ck_assert_int_eq(msb_client_system_info(client, &info), 0);
        ck_assert_str_eq(info->version, MSB_VERSION);
        ck_assert_str_eq(info->socket_path, daemon_.socket_path);
        ck_assert_str_eq(info->store_path, daemon_.store_path);
        ck_assert_int_eq(info->pid, daemon_.pid);
        ck_assert_int_ge(info->uptime_ms, 0);
        ck_assert_int_gt(info->started_at, 0);
        ck_assert_ptr_null(msb_client_last_error(client));
        msb_system_info_free(info);
}
END_TEST

START_TEST(test_system_df) {
        MsbSystemDf *df = NULL;

        ck_assert_int_eq(msb_client_system_df(client, &df), 0);
        ck_assert_int_eq(df->image_refs, 0);
        ck_assert_int_eq(df->layers.count, 0);
        ck_assert_int_eq(df->manifests.count, 0);
        msb_system_df_free(df);

        load_app(NULL);
        ck_assert_int_eq(msb_client_system_df(client, &df), 0);
        ck_assert_int_eq(df->image_refs, 1);
        ck_assert_int_eq(df->manifests.count, 1);
        ck_assert_int_eq(df->configs.count, 1);
        ck_assert_int_eq(df->layers.count, truth_int("layer_count"));
        ck_assert_int_gt(df->layers.bytes, 0);
        ck_assert_int_ge(df->total_bytes, df->layers.bytes + df->manifests.bytes);
        ck_assert_int_gt(df->reclaimable_bytes, 0);
        msb_system_df_free(df);
}
END_TEST

/* --- images ------------------------------------------------------------ */

START_TEST(test_image_list_empty) {
        MsbImageList *list = NULL;

        ck_assert_int_eq(msb_client_image_list(client, &list), 0);
        ck_assert_uint_eq(list->n_images, 0);
        ck_assert_str_eq(list->json, "[]");
        msb_image_list_free(list);
}
END_TEST

/* A list's json is the daemon's array in compact form, each item's json
 * its element: the library joins the items' texts rather than dumping the
 * array a second time, and this checks that the join is byte-exact. */
static void assert_list_json_compact(const MsbImageList *list) {
        json_t *j = json_loads(list->json, 0, NULL);
        char *dumped = json_dumps(j, JSON_COMPACT);

        ck_assert(json_is_array(j));
        ck_assert_uint_eq(json_array_size(j), list->n_images);
        ck_assert_str_eq(dumped, list->json);
        for (size_t i = 0; i < list->n_images; i++) {
                char *item = json_dumps(json_array_get(j, i), JSON_COMPACT);
                ck_assert_str_eq(item, list->images[i].json);
                free(item);
        }
        free(dumped);
        json_decref(j);
}

START_TEST(test_image_load_layout_and_list) {
        MsbImageList *list = NULL;

        ck_assert_int_eq(msb_client_image_load(client, truth_str("layout"), NULL, &list), 0);
        ck_assert_uint_eq(list->n_images, 1);
        assert_image_matches_truth(&list->images[0]);
        msb_image_list_free(list);

        ck_assert_int_eq(msb_client_image_list(client, &list), 0);
        ck_assert_uint_eq(list->n_images, 1);
        assert_image_matches_truth(&list->images[0]);
        assert_list_json_compact(list);
        /* The raw JSON is the daemon's list: parse it and compare a field. */
        json_t *j = json_loads(list->json, 0, NULL);
        ck_assert(json_is_array(j));
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "manifest_digest")),
                         truth_str("manifest_digest"));
        json_decref(j);
        msb_image_list_free(list);
}
END_TEST

START_TEST(test_image_load_archive_with_tag) {
        MsbImageList *list = NULL;
        MsbImage *im = NULL;

        /* The archive names example.com/test/app:v1 itself; the tag adds
         * another reference to the same manifest. */
        ck_assert_int_eq(msb_client_image_load(client, truth_str("archive"), "alpine:3.99", &list), 0);
        ck_assert_uint_ge(list->n_images, 1);
        assert_list_json_compact(list);
        bool tagged = false;
        for (size_t i = 0; i < list->n_images; i++) {
                ck_assert_str_eq(list->images[i].manifest_digest, truth_str("manifest_digest"));
                if (strcmp(list->images[i].reference, "docker.io/library/alpine:3.99") == 0)
                        tagged = true;
        }
        ck_assert(tagged);
        list = msb_image_list_free(list);
        ck_assert_int_eq(msb_client_image_list(client, &list), 0);
        ck_assert_uint_ge(list->n_images, 2);
        assert_list_json_compact(list);
        msb_image_list_free(list);

        /* Any spelling finds it; the answer shows the canonical form. */
        ck_assert_int_eq(msb_client_image_get(client, "docker.io/library/alpine:3.99", &im), 0);
        ck_assert_str_eq(im->reference, "docker.io/library/alpine:3.99");
        im = msb_image_free(im);
        ck_assert_int_eq(msb_client_image_get(client, "alpine:3.99", &im), 0);
        ck_assert_str_eq(im->manifest_digest, truth_str("manifest_digest"));
        msb_image_free(im);
}
END_TEST

typedef struct LoadSeen {
        unsigned reading, resolved, converted, cached, complete;
        int64_t last_read, total;
} LoadSeen;

static int count_load_progress(const MsbLoadProgress *p, void *userdata) {
        LoadSeen *seen = userdata;

        ck_assert_ptr_nonnull(p->json);
        switch (p->event) {
        case MSB_LOAD_READING:
                seen->reading++;
                seen->last_read = p->read_bytes;
                seen->total = p->total_bytes;
                break;
        case MSB_LOAD_RESOLVED:
                seen->resolved++;
                ck_assert_str_eq(p->manifest_digest, truth_str("manifest_digest"));
                ck_assert_int_eq(p->layer_count, truth_int("layer_count"));
                break;
        case MSB_LOAD_LAYER_CONVERTED:
                seen->converted++;
                ck_assert_int_gt(p->erofs_size_bytes, 0);
                break;
        case MSB_LOAD_LAYER_CACHED:
                seen->cached++;
                break;
        case MSB_LOAD_COMPLETE:
                seen->complete++;
                ck_assert_int_eq(p->images, 1);
                break;
        default:
                ck_abort_msg("unexpected load event %s", p->event_name);
        }
        return 0;
}

/* The archive goes to the daemon as a descriptor with the request, once
 * as a file and once through a pipe; progress reports its bytes. */
START_TEST(test_image_load_by_descriptor_with_progress) {
        MsbImageList *list = NULL;
        LoadSeen seen = {};
        struct stat st;
        int fd = open(truth_str("archive"), O_RDONLY | O_CLOEXEC);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fstat(fd, &st), 0);
        MsbLoadOptions o = { .fd = fd, .tag = "example.com/by/fd:1" };
        ck_assert_int_eq(msb_client_image_load_with(client, &o, count_load_progress, &seen, &list), 0);
        close(fd);
        ck_assert_uint_eq(list->n_images, 2);
        list = msb_image_list_free(list);
        ck_assert_uint_ge(seen.reading, 1);
        ck_assert_int_eq(seen.last_read, st.st_size);
        ck_assert_int_eq(seen.total, st.st_size);
        ck_assert_uint_eq(seen.resolved, 1);
        ck_assert_uint_eq(seen.converted, (unsigned) truth_int("layer_count"));
        ck_assert_uint_eq(seen.complete, 1);

        /* A pipe: its size is not known; the layers are cached now. */
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        pid_t child = fork();
        if (child == 0) {
                close(p[0]);
                int in = open(truth_str("archive"), O_RDONLY);
                char buf[4096];
                ssize_t n;
                while (in >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
                        if (write(p[1], buf, (size_t) n) != n)
                                _exit(1);
                _exit(0);
        }
        close(p[1]);
        seen = (LoadSeen) {};
        o = (MsbLoadOptions) { .fd = p[0], .image = truth_str("reference") };
        ck_assert_int_eq(msb_client_image_load_with(client, &o, count_load_progress, &seen, &list), 0);
        close(p[0]);
        int status;
        ck_assert_int_eq(waitpid(child, &status, 0), child);
        ck_assert_int_eq(WEXITSTATUS(status), 0);
        ck_assert_uint_eq(list->n_images, 1);
        ck_assert_str_eq(list->images[0].reference, truth_str("reference"));
        msb_image_list_free(list);
        ck_assert_int_eq(seen.total, MSB_NULL_INT);
        ck_assert_int_eq(seen.last_read, st.st_size);
        ck_assert_uint_eq(seen.cached, (unsigned) truth_int("layer_count"));
        ck_assert_uint_eq(seen.converted, 0);

        /* Neither a path nor a descriptor. */
        o = (MsbLoadOptions) { .fd = -1 };
        ck_assert_int_eq(msb_client_image_load_with(client, &o, NULL, NULL, &list), -EINVAL);
}
END_TEST

START_TEST(test_image_load_errors) {
        MsbImageList *list = NULL;
        char path[400];
        int r;

        r = msb_client_image_load(client, "relative/path", NULL, &list);
        assert_remote_error(r, -32602, "invalid-params");
        ck_assert_ptr_nonnull(strstr(msb_client_last_error(client)->data_json, "\"path\""));

        snprintf(path, sizeof(path), "%s/not-there", daemon_.dir);
        r = msb_client_image_load(client, path, NULL, &list);
        assert_remote_error(r, 1011, "path-not-found");

        r = msb_client_image_load(client, truth_str("layout"), "Not A Reference", &list);
        assert_remote_error(r, -32602, "invalid-reference");
        ck_assert_ptr_null(list);

        ck_assert_int_eq(msb_client_image_load(client, NULL, NULL, &list), -EINVAL);
}
END_TEST

START_TEST(test_image_get) {
        MsbImage *im = NULL;

        load_app(NULL);
        ck_assert_int_eq(msb_client_image_get(client, truth_str("reference"), &im), 0);
        assert_image_matches_truth(im);
        json_t *j = json_loads(im->json, 0, NULL);
        ck_assert_str_eq(json_string_value(json_object_get(j, "reference")), truth_str("reference"));
        json_decref(j);
        msb_image_free(im);
}
END_TEST

START_TEST(test_image_get_errors) {
        MsbImage *im = NULL;
        int r;

        r = msb_client_image_get(client, "example.com/nothing:here", &im);
        assert_remote_error(r, 1001, "image-not-found");
        ck_assert_ptr_null(im);

        r = msb_client_image_get(client, "UPPER/case::bad", &im);
        assert_remote_error(r, -32602, "invalid-reference");
        ck_assert_ptr_nonnull(strstr(msb_client_last_error(client)->data_json, "reference"));

        /* A later success clears the error. */
        MsbImageList *list = NULL;
        ck_assert_int_eq(msb_client_image_list(client, &list), 0);
        ck_assert_ptr_null(msb_client_last_error(client));
        msb_image_list_free(list);

        /* A call refused before it reaches the daemon clears the error too. */
        assert_remote_error(msb_client_image_get(client, "example.com/nothing:here", &im), 1001, "image-not-found");
        ck_assert_int_eq(msb_client_image_get(client, NULL, &im), -EINVAL);
        ck_assert_ptr_null(msb_client_last_error(client));
        ck_assert_int_eq(msb_client_image_get(client, "alpine", NULL), -EINVAL);
        ck_assert_ptr_null(im);
}
END_TEST

START_TEST(test_image_inspect) {
        MsbImageDetail *d = NULL;
        json_t *cfg = json_object_get(truth, "config"), *layers = json_object_get(truth, "layers");

        load_app(NULL);
        ck_assert_int_eq(msb_client_image_inspect(client, truth_str("reference"), &d), 0);
        assert_image_matches_truth(&(MsbImage) { .reference = d->handle.reference,
                                                 .manifest_digest = d->handle.manifest_digest,
                                                 .architecture = d->handle.architecture,
                                                 .os = d->handle.os,
                                                 .layer_count = d->handle.layer_count,
                                                 .size_bytes = d->handle.size_bytes,
                                                 .created_at = d->handle.created_at,
                                                 .last_used_at = d->handle.last_used_at,
                                                 .json = d->json });

        ck_assert_ptr_nonnull(d->config);
        ck_assert_str_eq(d->config->digest, json_string_value(json_object_get(cfg, "digest")));
        ck_assert(strv_equals_json(d->config->env, json_object_get(cfg, "env")));
        ck_assert(strv_equals_json(d->config->cmd, json_object_get(cfg, "cmd")));
        ck_assert(strv_equals_json(d->config->entrypoint, json_object_get(cfg, "entrypoint")));
        ck_assert_str_eq(d->config->working_dir, json_string_value(json_object_get(cfg, "working_dir")));
        ck_assert_str_eq(d->config->user, json_string_value(json_object_get(cfg, "user")));
        ck_assert_str_eq(d->config->stop_signal, json_string_value(json_object_get(cfg, "stop_signal")));
        const char *key;
        json_t *v;
        size_t n_labels = 0;
        json_object_foreach(json_object_get(cfg, "labels"), key, v) {
                ck_assert_str_eq(strv_lookup_pair(d->config->labels, key), json_string_value(v));
                n_labels++;
        }
        size_t n_strv = 0;
        while (d->config->labels[n_strv])
                n_strv++;
        ck_assert_uint_eq(n_strv, 2 * n_labels);

        ck_assert_uint_eq(d->n_layers, json_array_size(layers));
        for (size_t i = 0; i < d->n_layers; i++) {
                json_t *l = json_array_get(layers, i);
                ck_assert_str_eq(d->layers[i].diff_id, json_string_value(json_object_get(l, "diff_id")));
                ck_assert_str_eq(d->layers[i].blob_digest, json_string_value(json_object_get(l, "blob_digest")));
                ck_assert_str_eq(d->layers[i].media_type, json_string_value(json_object_get(l, "media_type")));
                ck_assert_int_eq(d->layers[i].compressed_size_bytes,
                                 json_integer_value(json_object_get(l, "compressed_size_bytes")));
                ck_assert_int_eq(d->layers[i].position, (int64_t) i);
                /* An EROFS image is whole 4 KiB blocks (README "The store"). */
                ck_assert_int_gt(d->layers[i].erofs_size_bytes, 0);
                ck_assert_int_eq(d->layers[i].erofs_size_bytes % 4096, 0);
        }
        msb_image_detail_free(d);
}
END_TEST

START_TEST(test_image_inspect_errors) {
        MsbImageDetail *d = NULL;

        assert_remote_error(msb_client_image_inspect(client, "example.com/absent:1", &d), 1001, "image-not-found");
        assert_remote_error(msb_client_image_inspect(client, "::", &d), -32602, "invalid-reference");
        ck_assert_ptr_null(d);
}
END_TEST

START_TEST(test_image_remove) {
        MsbImage *im = NULL;

        load_app(NULL);
        ck_assert_int_eq(msb_client_image_remove(client, truth_str("reference"), false), 0);
        assert_remote_error(msb_client_image_get(client, truth_str("reference"), &im), 1001, "image-not-found");
        assert_remote_error(msb_client_image_remove(client, truth_str("reference"), false), 1001,
                            "image-not-found");
        assert_remote_error(msb_client_image_remove(client, "bad reference", false), -32602, "invalid-reference");
}
END_TEST

START_TEST(test_image_remove_in_use_and_force) {
        MsbRootfs *rootfs = NULL;
        MsbImage *im = NULL;
        json_t *data, *holders;

        load_app(NULL);
        ck_assert_int_eq(msb_client_pin_add(client, "sandbox", "box-1", truth_str("reference"), &rootfs), 0);
        msb_rootfs_free(rootfs);

        assert_remote_error(msb_client_image_remove(client, truth_str("reference"), false), 1002, "image-in-use");
        data = json_loads(msb_client_last_error(client)->data_json, 0, NULL);
        holders = json_object_get(data, "holders");
        ck_assert_uint_eq(json_array_size(holders), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(holders, 0), "kind")), "sandbox");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(holders, 0), "name")), "box-1");
        json_decref(data);
        /* Nothing changed. */
        ck_assert_int_eq(msb_client_image_get(client, truth_str("reference"), &im), 0);
        im = msb_image_free(im);

        ck_assert_int_eq(msb_client_image_remove(client, truth_str("reference"), true), 0);
        assert_remote_error(msb_client_image_get(client, truth_str("reference"), &im), 1001, "image-not-found");
}
END_TEST

START_TEST(test_image_prune) {
        MsbPruneReport *p = NULL;
        MsbImageList *list = NULL;

        load_app(NULL);
        ck_assert_int_eq(msb_client_image_prune(client, &p), 0);
        ck_assert_int_eq(p->image_refs_removed, 1);
        ck_assert_int_eq(p->manifests_removed, 1);
        ck_assert_int_eq(p->layers_removed, truth_int("layer_count"));
        ck_assert_int_ge(p->fsmeta_removed, 0);
        ck_assert_int_ge(p->vmdk_removed, 0);
        ck_assert_int_gt(p->bytes_reclaimed, 0);
        json_t *j = json_loads(p->json, 0, NULL);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "layers_removed")), truth_int("layer_count"));
        json_decref(j);
        p = msb_prune_report_free(p);

        ck_assert_int_eq(msb_client_image_list(client, &list), 0);
        ck_assert_uint_eq(list->n_images, 0);
        msb_image_list_free(list);

        /* Nothing left: zero counts. */
        ck_assert_int_eq(msb_client_image_prune(client, &p), 0);
        ck_assert_int_eq(p->image_refs_removed, 0);
        ck_assert_int_eq(p->layers_removed, 0);
        msb_prune_report_free(p);
}
END_TEST

START_TEST(test_image_prune_keeps_pinned) {
        MsbPruneReport *p = NULL;
        MsbRootfs *rootfs = NULL;
        MsbImage *im = NULL;

        load_app(NULL);
        ck_assert_int_eq(msb_client_pin_add(client, "snapshot", "snap", truth_str("reference"), &rootfs), 0);
        msb_rootfs_free(rootfs);
        ck_assert_int_eq(msb_client_image_prune(client, &p), 0);
        ck_assert_int_eq(p->layers_removed, 0);
        ck_assert_int_eq(p->manifests_removed, 0);
        msb_prune_report_free(p);
        ck_assert_int_eq(msb_client_image_get(client, truth_str("reference"), &im), 0);
        msb_image_free(im);
}
END_TEST

START_TEST(test_image_prune_unused) {
        MsbPruneReport *p = NULL;

        load_app(NULL);
        /* Used just now: not unused for an hour. */
        ck_assert_int_eq(msb_client_image_prune_unused(client, 3600 * 1000, &p), 0);
        ck_assert_int_eq(p->image_refs_removed, 0);
        ck_assert_ptr_nonnull(strstr(p->json, "\"image_refs_removed\":0"));
        p = msb_prune_report_free(p);
        ck_assert_int_eq(msb_client_image_prune_unused(client, -5, &p), -EINVAL);
        ck_assert_ptr_null(p);
        usleep(20 * 1000);
        ck_assert_int_eq(msb_client_image_prune_unused(client, 10, &p), 0);
        ck_assert_int_eq(p->image_refs_removed, 1);
        ck_assert_int_eq(p->layers_removed, truth_int("layer_count"));
        msb_prune_report_free(p);
}
END_TEST

START_TEST(test_events) {
        MsbClient *sub = NULL;
        MsbRootfs *rootfs = NULL;
        MsbEvent *e = NULL;
        MsbSystemDf *df = NULL;

        ck_assert_int_eq(msb_client_connect(daemon_.socket_path, &sub), 0);
        ck_assert_int_eq(msb_client_events_subscribe(sub), 0);
        /* Nothing yet: the timeout leaves the connection usable. */
        msb_client_set_timeout(sub, 100);
        ck_assert_int_eq(msb_client_event_read(sub, &e), -ETIMEDOUT);
        ck_assert(msb_client_is_connected(sub));
        msb_client_set_timeout(sub, 30000);

        load_app(NULL);
        ck_assert_int_eq(msb_client_pin_add(client, "sandbox", "web", truth_str("reference"), &rootfs), 0);
        msb_rootfs_free(rootfs);
        ck_assert_int_eq(msb_client_event_read(sub, &e), 0);
        ck_assert_str_eq(e->type, "image.loaded");
        ck_assert_str_eq(e->reference, truth_str("reference"));
        ck_assert_str_eq(e->manifest_digest, truth_str("manifest_digest"));
        ck_assert_int_gt(e->at, 0);
        ck_assert_ptr_null(e->kind);
        ck_assert_int_eq(e->lost_count, MSB_NULL_INT);
        ck_assert_ptr_nonnull(strstr(e->json, "\"type\":\"image.loaded\""));
        e = msb_event_free(e);
        ck_assert_int_eq(msb_client_event_read(sub, &e), 0);
        ck_assert_str_eq(e->type, "pin.added");
        ck_assert_str_eq(e->kind, "sandbox");
        ck_assert_str_eq(e->name, "web");
        e = msb_event_free(e);

        /* Unsubscribed: the next change is not heard. */
        ck_assert_int_eq(msb_client_events_unsubscribe(sub), 0);
        ck_assert_int_eq(msb_client_pin_remove(client, "sandbox", "web"), 0);
        msb_client_set_timeout(sub, 300);
        ck_assert_int_eq(msb_client_event_read(sub, &e), -ETIMEDOUT);

        /* No budget configured: null in system.df, MSB_NULL_INT here. */
        ck_assert_int_eq(msb_client_system_df(client, &df), 0);
        ck_assert_int_eq(df->budget_max_bytes, MSB_NULL_INT);
        ck_assert_int_eq(df->budget_remaining_bytes, MSB_NULL_INT);
        msb_system_df_free(df);

        /* The daemon goes: the stream ends with -ECONNRESET. */
        msb_client_set_timeout(sub, 0);
        ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
        daemon_killed = true; /* gone already: nothing for the teardown to stop */
        ck_assert_int_eq(msb_client_event_read(sub, &e), -ECONNRESET);
        ck_assert(!msb_client_is_connected(sub));
        msb_client_free(sub);
}
END_TEST

/* --- pins -------------------------------------------------------------- */

START_TEST(test_pins) {
        MsbRootfs *rootfs = NULL;
        MsbPinList *pins = NULL;
        json_t *layers = json_object_get(truth, "layers");
        struct stat st;

        load_app(NULL);
        ck_assert_int_eq(msb_client_pin_list(client, &pins), 0);
        ck_assert_uint_eq(pins->n_pins, 0);
        pins = msb_pin_list_free(pins);

        ck_assert_int_eq(msb_client_pin_add(client, "sandbox", "web", truth_str("reference"), &rootfs), 0);
        ck_assert_str_eq(rootfs->manifest_digest, truth_str("manifest_digest"));
        ck_assert_uint_eq(rootfs->n_layers, json_array_size(layers));
        for (size_t i = 0; i < rootfs->n_layers; i++) {
                ck_assert_str_eq(rootfs->layers[i].diff_id,
                                 json_string_value(json_object_get(json_array_get(layers, i), "diff_id")));
                /* An absolute path to a file of the reported size. */
                ck_assert_int_eq(rootfs->layers[i].path[0], '/');
                ck_assert_int_eq(stat(rootfs->layers[i].path, &st), 0);
                ck_assert_int_eq(st.st_size, rootfs->layers[i].erofs_size_bytes);
        }
        if (rootfs->fsmeta_path)
                ck_assert_int_eq(stat(rootfs->fsmeta_path, &st), 0);
        if (rootfs->vmdk_path)
                ck_assert_int_eq(stat(rootfs->vmdk_path, &st), 0);
        rootfs = msb_rootfs_free(rootfs);

        ck_assert_int_eq(msb_client_pin_add(client, "snapshot", "s1", truth_str("reference"), &rootfs), 0);
        rootfs = msb_rootfs_free(rootfs);

        ck_assert_int_eq(msb_client_pin_list(client, &pins), 0);
        ck_assert_uint_eq(pins->n_pins, 2);
        /* Oldest first. */
        ck_assert_str_eq(pins->pins[0].kind, "sandbox");
        ck_assert_str_eq(pins->pins[0].name, "web");
        ck_assert_str_eq(pins->pins[0].reference, truth_str("reference"));
        ck_assert_str_eq(pins->pins[0].manifest_digest, truth_str("manifest_digest"));
        ck_assert_int_gt(pins->pins[0].created_at, 0);
        ck_assert_str_eq(pins->pins[1].kind, "snapshot");
        ck_assert_str_eq(pins->pins[1].name, "s1");
        pins = msb_pin_list_free(pins);

        ck_assert_int_eq(msb_client_pin_remove(client, "sandbox", "web"), 0);
        ck_assert_int_eq(msb_client_pin_list(client, &pins), 0);
        ck_assert_uint_eq(pins->n_pins, 1);
        ck_assert_str_eq(pins->pins[0].name, "s1");
        msb_pin_list_free(pins);
}
END_TEST

START_TEST(test_pin_errors) {
        MsbRootfs *rootfs = NULL;
        int r;

        r = msb_client_pin_add(client, "sandbox", "x", "example.com/absent:1", &rootfs);
        assert_remote_error(r, 1001, "image-not-found");
        r = msb_client_pin_add(client, "volume", "x", "example.com/absent:1", &rootfs);
        assert_remote_error(r, -32602, "invalid-params");
        ck_assert_ptr_nonnull(strstr(msb_client_last_error(client)->data_json, "kind"));
        r = msb_client_pin_add(client, "sandbox", "", "example.com/absent:1", &rootfs);
        assert_remote_error(r, -32602, "invalid-params");
        r = msb_client_pin_remove(client, "sandbox", "never-added");
        assert_remote_error(r, 1003, "pin-not-found");
        ck_assert_ptr_null(rootfs);
}
END_TEST

/* --- pull -------------------------------------------------------------- */

typedef struct ProgressLog {
        int n_events;
        int n_resolving;
        char reference[256];
} ProgressLog;

static int record_progress(const MsbPullProgress *p, void *userdata) {
        ProgressLog *log = userdata;

        log->n_events++;
        ck_assert_ptr_nonnull(p->json);
        ck_assert_ptr_nonnull(p->event_name);
        if (p->event == MSB_PULL_RESOLVING) {
                log->n_resolving++;
                snprintf(log->reference, sizeof(log->reference), "%s", p->reference ?: "");
        }
        return 0;
}

START_TEST(test_pull_cached) {
        ProgressLog log = {};
        MsbImage *im = NULL;

        load_app(NULL);
        /* if-missing and never are answered from the cache, without a registry. */
        ck_assert_int_eq(msb_client_image_pull(client, truth_str("reference"), NULL, record_progress, &log, &im), 0);
        assert_image_matches_truth(im);
        im = msb_image_free(im);
        ck_assert_int_eq(msb_client_image_pull(client, truth_str("reference"),
                                               &(MsbPullOptions) { .policy = "never" }, NULL, NULL, &im),
                         0);
        ck_assert_str_eq(im->manifest_digest, truth_str("manifest_digest"));
        msb_image_free(im);
}
END_TEST

START_TEST(test_pull_errors) {
        ProgressLog log = {};
        MsbImage *im = NULL;
        int r;

        r = msb_client_image_pull(client, "example.com/absent:1", &(MsbPullOptions) { .policy = "never" }, NULL,
                                  NULL, &im);
        assert_remote_error(r, 1001, "image-not-found");

        r = msb_client_image_pull(client, "example.com/absent:1", &(MsbPullOptions) { .policy = "sometimes" },
                                  NULL, NULL, &im);
        assert_remote_error(r, -32602, "invalid-params");

        r = msb_client_image_pull(client, "Bad::Ref", NULL, NULL, NULL, &im);
        assert_remote_error(r, -32602, "invalid-reference");

        /* Port 1 on loopback: nothing listens, so the registry cannot be
         * reached; the progress seen before the failure names the reference. */
        r = msb_client_image_pull(client, "127.0.0.1:1/absent/image:1", NULL, record_progress, &log, &im);
        ck_assert_int_eq(r, -MSB_EREMOTE);
        ck_assert_int_ge(msb_client_last_error(client)->code, 1000);
        ck_assert(msb_client_is_connected(client));
        if (log.n_resolving > 0)
                ck_assert_str_eq(log.reference, "127.0.0.1:1/absent/image:1");
        ck_assert_ptr_null(im);
}
END_TEST

/* --- raw calls --------------------------------------------------------- */

START_TEST(test_rpc_discover) {
        char *doc = NULL;
        json_t *j, *m;
        size_t i;
        bool has_pull = false;

        ck_assert_int_eq(msb_client_rpc_discover(client, &doc), 0);
        j = json_loads(doc, 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_ptr_nonnull(json_object_get(json_object_get(j, "components"), "errors"));
        json_array_foreach(json_object_get(j, "methods"), i, m)
                if (strcmp(json_string_value(json_object_get(m, "name")) ?: "", "image.pull") == 0)
                        has_pull = true;
        ck_assert(has_pull);
        json_decref(j);
        free(doc);
        ck_assert_int_eq(msb_client_rpc_discover(client, NULL), -EINVAL);
}
END_TEST

START_TEST(test_call_raw) {
        char *out = NULL;
        json_t *j;

        ck_assert_int_eq(msb_client_call(client, "rpc.discover", NULL, &out), 0);
        j = json_loads(out, 0, NULL);
        ck_assert_ptr_nonnull(json_object_get(j, "openrpc"));
        ck_assert(json_is_array(json_object_get(j, "methods")));
        json_decref(j);
        free(out);

        ck_assert_int_eq(msb_client_call(client, "image.get", "{\"reference\": \"example.com/x:1\"}", &out),
                         -MSB_EREMOTE);
        assert_remote_error(-MSB_EREMOTE, 1001, "image-not-found");

        ck_assert_int_eq(msb_client_call(client, "image.remove", "{}", &out), -MSB_EREMOTE);
        assert_remote_error(-MSB_EREMOTE, -32602, "invalid-params");
        ck_assert_ptr_nonnull(strstr(msb_client_last_error(client)->data_json, "reference"));

        ck_assert_int_eq(msb_client_call(client, "image.frobnicate", NULL, &out), -MSB_EREMOTE);
        assert_remote_error(-MSB_EREMOTE, -32601, "method-not-found");

        /* Params must be a JSON object; refused before anything is sent. */
        ck_assert_int_eq(msb_client_call(client, "image.list", "[1]", &out), -EINVAL);
        ck_assert_int_eq(msb_client_call(client, "image.list", "{", &out), -EINVAL);

        ck_assert_int_eq(msb_client_call(client, "image.list", "{}", &out), 0);
        ck_assert_str_eq(out, "[]");
        free(out);
}
END_TEST

/* --- threads ----------------------------------------------------------- */

#define THREADS_N 4
#define THREAD_CALLS_N 50

/* One connection per thread, no shared state: each thread gets its own
 * answers, in step, while the others call at the same time. */
static void *thread_calls(void *arg) {
        MsbClient *c = NULL;
        intptr_t failures = 0;

        if (msb_client_connect(arg, &c) < 0)
                return (void *) (intptr_t) THREAD_CALLS_N;
        for (int i = 0; i < THREAD_CALLS_N; i++) {
                MsbImageList *list = NULL;
                MsbImage *im = NULL;

                if (msb_client_image_list(c, &list) < 0 || list->n_images != 1)
                        failures++;
                msb_image_list_free(list);
                /* An error answer in between keeps the stream in step. */
                if (msb_client_image_get(c, "example.com/absent:1", &im) != -MSB_EREMOTE ||
                    msb_client_last_error(c)->code != 1001)
                        failures++;
        }
        msb_client_free(c);
        return (void *) failures;
}

START_TEST(test_one_client_per_thread) {
        pthread_t threads[THREADS_N];

        load_app(NULL);
        for (int i = 0; i < THREADS_N; i++)
                ck_assert_int_eq(pthread_create(&threads[i], NULL, thread_calls, daemon_.socket_path), 0);
        for (int i = 0; i < THREADS_N; i++) {
                void *failures;
                ck_assert_int_eq(pthread_join(threads[i], &failures), 0);
                ck_assert_int_eq((intptr_t) failures, 0);
        }
}
END_TEST

/* --- broken connection ------------------------------------------------- */

START_TEST(test_daemon_killed) {
        MsbImageList *list = NULL;
        int r;

        ck_assert_int_eq(msb_client_image_list(client, &list), 0);
        list = msb_image_list_free(list);

        test_daemon_kill(&daemon_);
        daemon_killed = true;

        r = msb_client_image_list(client, &list);
        ck_assert_msg(r == -ECONNRESET || r == -EPIPE, "call on a dead daemon gave %d (%s)", r, strerror(-r));
        ck_assert_ptr_null(msb_client_last_error(client));
        ck_assert(!msb_client_is_connected(client));
        ck_assert_int_eq(msb_client_image_list(client, &list), -ENOTCONN);
        ck_assert_ptr_null(list);
}
END_TEST

START_TEST(test_daemon_stopped_between_calls) {
        MsbSystemInfo *info = NULL;

        ck_assert_int_eq(test_daemon_stop(&daemon_), 0);
        daemon_killed = true;
        int r = msb_client_system_info(client, &info);
        ck_assert_msg(r == -ECONNRESET || r == -EPIPE, "call after SIGTERM gave %d", r);
        ck_assert(!msb_client_is_connected(client));
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("libmsbimage");
        TCase *tc;

        tc = tcase_create("offline");
        tcase_add_test(tc, test_socket_path_default);
        tcase_add_test(tc, test_free_null);
        suite_add_tcase(s, tc);

        tc = tcase_create("daemon");
        tcase_set_timeout(tc, 120);
        tcase_add_unchecked_fixture(tc, images_setup, images_teardown);
        tcase_add_checked_fixture(tc, daemon_setup, daemon_teardown);
        tcase_add_test(tc, test_connect_default_path_from_env);
        tcase_add_test(tc, test_connect_missing_socket);
        tcase_add_test(tc, test_connect_empty_path);
        tcase_add_test(tc, test_connect_path_too_long);
        tcase_add_test(tc, test_connect_refused_after_daemon_exit);
        tcase_add_test(tc, test_system_info);
        tcase_add_test(tc, test_system_df);
        tcase_add_test(tc, test_image_list_empty);
        tcase_add_test(tc, test_image_load_layout_and_list);
        tcase_add_test(tc, test_image_load_archive_with_tag);
        tcase_add_test(tc, test_image_load_errors);
        tcase_add_test(tc, test_image_load_by_descriptor_with_progress);
        tcase_add_test(tc, test_image_get);
        tcase_add_test(tc, test_image_get_errors);
        tcase_add_test(tc, test_image_inspect);
        tcase_add_test(tc, test_image_inspect_errors);
        tcase_add_test(tc, test_image_remove);
        tcase_add_test(tc, test_image_remove_in_use_and_force);
        tcase_add_test(tc, test_image_prune);
        tcase_add_test(tc, test_image_prune_keeps_pinned);
        tcase_add_test(tc, test_image_prune_unused);
        tcase_add_test(tc, test_events);
        tcase_add_test(tc, test_pins);
        tcase_add_test(tc, test_pin_errors);
        tcase_add_test(tc, test_pull_cached);
        tcase_add_test(tc, test_pull_errors);
        tcase_add_test(tc, test_rpc_discover);
        tcase_add_test(tc, test_call_raw);
        tcase_add_test(tc, test_one_client_per_thread);
        tcase_add_test(tc, test_daemon_killed);
        tcase_add_test(tc, test_daemon_stopped_between_calls);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(suite());
        int failed;

        /* A write to the killed daemon must come back as -EPIPE from the
         * library (MSG_NOSIGNAL), not kill the test: leave SIGPIPE at its
         * default so that a regression shows. */
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
