/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The registry client against real registries on loopback, started by
 * run_registry_tests.py (see there for the environment): docker-registry in
 * plain HTTP, behind Bearer tokens and behind Basic auth over TLS, and a
 * fault-injecting server. Each test runs its own loop and ends by checking
 * that every handle was closed.
 */

#include <check.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "credential_helper.h"
#include "curl_glue.h"
#include "pull.h"
#include "registry.h"
#include "registry_config.h"
#include "registry_internal.h"

#include <openssl/evp.h>

static const char *env(const char *name) {
        const char *v = getenv(name);

        ck_assert_msg(v && v[0], "%s is not set: run through run_registry_tests.py", name);
        return v;
}

static uint64_t env_u64(const char *name) {
        return strtoull(env(name), NULL, 10);
}

typedef struct Outcome {
        bool done;
        int r;
        MsbError err;
        char digest[DIGEST_STRING_MAX];
        uint64_t size;
        char *body;
        char media_type[256];
        uint64_t progress_calls;
        uint64_t last_progress;
} Outcome;

static void outcome_done(Outcome *o) {
        msb_error_clear(&o->err);
        free(o->body);
}

static void on_progress(RegistryFetch *f, uint64_t bytes, void *userdata) {
        Outcome *o = userdata;

        o->progress_calls++;
        o->last_progress = bytes;
}

static void on_done(RegistryFetch *f, int r, const MsbError *err, void *userdata) {
        Outcome *o = userdata;

        ck_assert(!o->done);
        o->done = true;
        o->r = r;
        if (r < 0) {
                ck_assert_ptr_nonnull(err);
                ck_assert(err->set);
                o->err = *err;
                o->err.data = json_incref(err->data);
                return;
        }
        snprintf(o->digest, sizeof(o->digest), "%s", registry_fetch_digest(f));
        o->size = registry_fetch_size(f);
        if (registry_fetch_media_type(f))
                snprintf(o->media_type, sizeof(o->media_type), "%s", registry_fetch_media_type(f));
        size_t n;
        const char *b = registry_fetch_body(f, &n);
        o->body = strndup(b, n);
}

typedef struct Harness {
        uv_loop_t loop;
        RegistryConfig *config;
        Registry *registry;
} Harness;

static void harness_init(Harness *h, const char *config_json) {
        json_auto_t *j = NULL;
        MsbError err = {};

        ck_assert_int_eq(uv_loop_init(&h->loop), 0);
        if (config_json) {
                j = json_loads(config_json, 0, NULL);
                ck_assert_ptr_nonnull(j);
        }
        ck_assert_int_eq(registry_config_new(j, &h->config, &err), 0);
        ck_assert_int_eq(registry_new(&h->loop, h->config, &h->registry), 0);
}

static void harness_done(Harness *h) {
        registry_free(h->registry);
        ck_assert_int_eq(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&h->loop), 0);
        registry_config_free(h->config);
}

static void run_until(Harness *h, Outcome *const *outcomes, size_t n) {
        uint64_t deadline = now_monotonic_ms() + 60 * MSEC_PER_SEC;

        for (;;) {
                bool all = true;

                for (size_t i = 0; i < n; i++)
                        all = all && outcomes[i]->done;
                if (all)
                        return;
                ck_assert(now_monotonic_ms() < deadline);
                uv_run(&h->loop, UV_RUN_ONCE);
        }
}

static void fetch_manifest(Harness *h, const char *domain, const char *reference, const char *digest,
                           Outcome *o) {
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = domain,
                .repository = env("MSB_TEST_REPO"),
                .reference = reference,
                .digest = digest,
                .max_size = 4 * MiB,
        };
        RegistryFetch *f = NULL;

        ck_assert_int_eq(registry_fetch_start(h->registry, &p, NULL, on_done, o, &f), 0);
        run_until(h, (Outcome *[]) { o }, 1);
        registry_fetch_free(f);
}

static int tmpfile_new(void) {
        char path[] = "/tmp/msb-pull-blob-XXXXXX";
        int fd = mkstemp(path);

        ck_assert_int_ge(fd, 0);
        unlink(path);
        return fd;
}

static void fetch_blob(Harness *h, const char *domain, const char *digest, uint64_t size, int fd, Outcome *o) {
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = domain,
                .repository = env("MSB_TEST_REPO"),
                .digest = digest,
                .size = size,
                .fd = fd,
        };
        RegistryFetch *f = NULL;

        ck_assert_int_eq(registry_fetch_start(h->registry, &p, on_progress, on_done, o, &f), 0);
        run_until(h, (Outcome *[]) { o }, 1);
        registry_fetch_free(f);
}

/* The file holds exactly the blob: its digest is recomputed from disk. */
static void assert_file_is(int fd, const char *digest, uint64_t size) {
        char d[DIGEST_STRING_MAX];
        uint64_t n;

        ck_assert_int_eq(digest_fd(fd, d, &n), 0);
        ck_assert_str_eq(d, digest);
        ck_assert_uint_eq(n, size);
}

START_TEST(test_manifest_by_tag_and_digest) {
        Harness h = {};
        Outcome a = {}, b = {};

        harness_init(&h, NULL);
        fetch_manifest(&h, env("MSB_TEST_PLAIN"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_msg(a.r == 0, "%s", a.err.message);
        ck_assert_str_eq(a.digest, env("MSB_TEST_MANIFEST_DIGEST"));
        ck_assert_uint_eq(a.size, env_u64("MSB_TEST_MANIFEST_SIZE"));
        ck_assert_str_eq(a.media_type, "application/vnd.oci.image.manifest.v1+json");
        ck_assert_ptr_nonnull(strstr(a.body, env("MSB_TEST_BLOB_DIGEST")));

        fetch_manifest(&h, env("MSB_TEST_PLAIN"), env("MSB_TEST_MANIFEST_DIGEST"), env("MSB_TEST_MANIFEST_DIGEST"), &b);
        ck_assert_msg(b.r == 0, "%s", b.err.message);
        ck_assert_str_eq(b.digest, a.digest);
        ck_assert_str_eq(b.body, a.body);

        /* One ping for the endpoint, then reused; plain HTTP on loopback
         * after HTTPS failed. */
        ck_assert_uint_eq(registry_stats(h.registry)->pings, 2);
        ck_assert_uint_eq(registry_stats(h.registry)->requests, 2);
        ck_assert_uint_eq(registry_stats(h.registry)->tokens, 0);
        outcome_done(&a);
        outcome_done(&b);
        harness_done(&h);
}
END_TEST

START_TEST(test_manifest_not_found) {
        Harness h = {};
        Outcome a = {};

        harness_init(&h, NULL);
        fetch_manifest(&h, env("MSB_TEST_PLAIN"), "no-such-tag", NULL, &a);
        ck_assert_int_eq(a.r, -ENOENT);
        ck_assert_int_eq(a.err.kind, PROTO_ERROR_REMOTE_NOT_FOUND);
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_manifest_digest_reference_mismatch) {
        Harness h = {};
        Outcome a = {};

        /* Asking for the tag while expecting another digest: the bytes decide. */
        harness_init(&h, NULL);
        fetch_manifest(&h, env("MSB_TEST_PLAIN"), env("MSB_TEST_TAG"), env("MSB_TEST_BLOB_DIGEST"), &a);
        ck_assert_int_eq(a.r, -EBADMSG);
        ck_assert_int_eq(a.err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_manifest_size_limit) {
        Harness h = {};
        Outcome o = {};
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = env("MSB_TEST_PLAIN"),
                .repository = env("MSB_TEST_REPO"),
                .reference = env("MSB_TEST_TAG"),
                .max_size = env_u64("MSB_TEST_MANIFEST_SIZE") - 1,
        };
        RegistryFetch *f = NULL;

        harness_init(&h, NULL);
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, NULL, on_done, &o, &f), 0);
        run_until(&h, (Outcome *[]) { &o }, 1);
        registry_fetch_free(f);
        ck_assert_int_eq(o.r, -EFBIG);
        ck_assert_int_eq(o.err.kind, PROTO_ERROR_LIMIT_EXCEEDED);
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_blob_download) {
        Harness h = {};
        Outcome o = {};
        _cleanup_close_ int fd = tmpfile_new();

        harness_init(&h, NULL);
        fetch_blob(&h, env("MSB_TEST_PLAIN"), env("MSB_TEST_BLOB_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"), fd, &o);
        ck_assert_msg(o.r == 0, "%s", o.err.message);
        ck_assert_str_eq(o.digest, env("MSB_TEST_BLOB_DIGEST"));
        ck_assert_uint_eq(o.size, env_u64("MSB_TEST_BLOB_SIZE"));
        ck_assert_uint_gt(o.progress_calls, 0);
        ck_assert_uint_eq(o.last_progress, env_u64("MSB_TEST_BLOB_SIZE"));
        assert_file_is(fd, env("MSB_TEST_BLOB_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"));
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_blob_descriptor_too_small) {
        Harness h = {};
        Outcome o = {};
        _cleanup_close_ int fd = tmpfile_new();
        struct stat st;

        /* A descriptor that promises fewer bytes than the registry sends:
         * the download stops at the promise, not at the end. */
        harness_init(&h, NULL);
        fetch_blob(&h, env("MSB_TEST_PLAIN"), env("MSB_TEST_BLOB_DIGEST"), 4096, fd, &o);
        ck_assert_int_eq(o.r, -EBADMSG);
        ck_assert_int_eq(o.err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        ck_assert_int_eq(fstat(fd, &st), 0);
        ck_assert_int_le(st.st_size, 4096);
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_token_flow) {
        Harness h = {};
        Outcome a = {}, b = {};
        _cleanup_close_ int fd = tmpfile_new();
        _cleanup_free_ char *config = NULL;

        ck_assert_int_ge(asprintf(&config, "{\"registries\": {\"%s\": {\"username\": \"%s\", \"password\": \"%s\"}}}",
                                  env("MSB_TEST_TOKEN"), env("MSB_TEST_USER"), env("MSB_TEST_PASSWORD")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_TOKEN"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_msg(a.r == 0, "%s", a.err.message);
        ck_assert_str_eq(a.digest, env("MSB_TEST_MANIFEST_DIGEST"));
        fetch_blob(&h, env("MSB_TEST_TOKEN"), env("MSB_TEST_BLOB_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"), fd, &b);
        ck_assert_msg(b.r == 0, "%s", b.err.message);
        assert_file_is(fd, env("MSB_TEST_BLOB_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"));

        /* The token of the repository was fetched once and reused. */
        ck_assert_uint_eq(registry_stats(h.registry)->tokens, 1);
        outcome_done(&a);
        outcome_done(&b);
        harness_done(&h);
}
END_TEST

START_TEST(test_token_from_docker_config) {
        Harness h = {};
        Outcome a = {};
        _cleanup_free_ char *dir = NULL, *path = NULL, *plain = NULL, *json = NULL;
        unsigned char b64[256];
        FILE *f;

        /* ~/.docker/config.json "auths", base64 of user:password. */
        ck_assert_int_ge(asprintf(&dir, "%s/docker-%d", env("MSB_TEST_TMP"), getpid()), 0);
        ck_assert_int_eq(mkdir_p(dir, 0700), 0);
        ck_assert_int_ge(asprintf(&path, "%s/config.json", dir), 0);
        ck_assert_int_ge(asprintf(&plain, "%s:%s", env("MSB_TEST_USER"), env("MSB_TEST_PASSWORD")), 0);
        ck_assert_int_gt(EVP_EncodeBlock(b64, (unsigned char *) plain, (int) strlen(plain)), 0);
        f = fopen(path, "we");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "{\"auths\": {\"http://%s/v1/\": {\"auth\": \"%s\"}}}", env("MSB_TEST_TOKEN"), b64);
        fclose(f);

        harness_init(&h, NULL);
        setenv("DOCKER_CONFIG", dir, 1);
        ck_assert_int_eq(registry_config_load_docker(h.config, NULL), 0);
        ck_assert_str_eq(registry_config_find(h.config, env("MSB_TEST_TOKEN"))->username, env("MSB_TEST_USER"));
        fetch_manifest(&h, env("MSB_TEST_TOKEN"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_msg(a.r == 0, "%s", a.err.message);
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_token_wrong_credentials) {
        Harness h = {};
        Outcome a = {};
        _cleanup_free_ char *config = NULL;

        ck_assert_int_ge(asprintf(&config, "{\"registries\": {\"%s\": {\"username\": \"%s\", \"password\": \"wrong-Zq9\"}}}",
                                  env("MSB_TEST_TOKEN"), env("MSB_TEST_USER")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_TOKEN"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_int_eq(a.r, -EACCES);
        ck_assert_int_eq(a.err.kind, PROTO_ERROR_UNAUTHORIZED);
        ck_assert_ptr_null(strstr(a.err.message, "wrong-Zq9"));
        ck_assert_ptr_null(strstr(a.err.message, env("MSB_TEST_USER")));
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_token_anonymous_refused) {
        Harness h = {};
        Outcome a = {};

        harness_init(&h, NULL);
        fetch_manifest(&h, env("MSB_TEST_TOKEN"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_int_eq(a.err.kind, PROTO_ERROR_UNAUTHORIZED);
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_basic_over_tls) {
        Harness h = {};
        Outcome a = {}, b = {};
        _cleanup_close_ int fd = tmpfile_new();
        _cleanup_free_ char *config = NULL;

        ck_assert_int_ge(asprintf(&config,
                                  "{\"registries\": {\"%s\": {\"username\": \"%s\", \"password\": \"%s\", \"ca_file\": \"%s\"}}}",
                                  env("MSB_TEST_TLS"), env("MSB_TEST_USER"), env("MSB_TEST_PASSWORD"),
                                  env("MSB_TEST_TLS_CA")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_TLS"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_msg(a.r == 0, "%s", a.err.message);
        fetch_blob(&h, env("MSB_TEST_TLS"), env("MSB_TEST_BLOB2_DIGEST"), env_u64("MSB_TEST_BLOB2_SIZE"), fd, &b);
        ck_assert_msg(b.r == 0, "%s", b.err.message);
        assert_file_is(fd, env("MSB_TEST_BLOB2_DIGEST"), env_u64("MSB_TEST_BLOB2_SIZE"));
        /* HTTPS answered the first ping: no plain HTTP attempt. */
        ck_assert_uint_eq(registry_stats(h.registry)->pings, 1);
        outcome_done(&a);
        outcome_done(&b);
        harness_done(&h);
}
END_TEST

START_TEST(test_tls_untrusted_ca) {
        Harness h = {};
        Outcome a = {};
        _cleanup_free_ char *config = NULL;

        /* Without the test CA the certificate does not verify; the plain
         * HTTP fallback of loopback finds no registry either. */
        ck_assert_int_ge(asprintf(&config, "{\"registries\": {\"%s\": {\"username\": \"%s\", \"password\": \"%s\"}}}",
                                  env("MSB_TEST_TLS"), env("MSB_TEST_USER"), env("MSB_TEST_PASSWORD")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_TLS"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_int_lt(a.r, 0);
        ck_assert(a.err.kind == PROTO_ERROR_NETWORK_ERROR || a.err.kind == PROTO_ERROR_REGISTRY_ERROR);
        ck_assert_ptr_null(strstr(a.err.message, env("MSB_TEST_PASSWORD")));
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_basic_wrong_password) {
        Harness h = {};
        Outcome a = {};
        _cleanup_free_ char *config = NULL;

        ck_assert_int_ge(asprintf(&config,
                                  "{\"registries\": {\"%s\": {\"username\": \"%s\", \"password\": \"nope-77\", \"ca_file\": \"%s\"}}}",
                                  env("MSB_TEST_TLS"), env("MSB_TEST_USER"), env("MSB_TEST_TLS_CA")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_TLS"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_int_eq(a.err.kind, PROTO_ERROR_UNAUTHORIZED);
        ck_assert_ptr_null(strstr(a.err.message, "nope-77"));
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_corrupt_blob) {
        Harness h = {};
        Outcome o = {};
        _cleanup_close_ int fd = tmpfile_new();

        harness_init(&h, NULL);
        fetch_blob(&h, env("MSB_TEST_FAULT"), env("MSB_TEST_CORRUPT_DIGEST"), env_u64("MSB_TEST_BLOB2_SIZE"), fd, &o);
        ck_assert_int_eq(o.r, -EBADMSG);
        ck_assert_int_eq(o.err.kind, PROTO_ERROR_DIGEST_MISMATCH);
        ck_assert_str_eq(json_string_value(json_object_get(o.err.data, "expected")), env("MSB_TEST_CORRUPT_DIGEST"));
        ck_assert(digest_is_valid(json_string_value(json_object_get(o.err.data, "actual"))));
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_cut_blob_resumes) {
        Harness h = {};
        Outcome o = {};
        _cleanup_close_ int fd = tmpfile_new();

        /* The server closes the connection after 1 MiB of the first answer;
         * the client resumes with a Range request and verifies the whole. */
        harness_init(&h, NULL);
        fetch_blob(&h, env("MSB_TEST_FAULT"), env("MSB_TEST_CUT_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"), fd, &o);
        ck_assert_msg(o.r == 0, "%s", o.err.message);
        ck_assert_uint_eq(registry_stats(h.registry)->resumes, 1);
        ck_assert_uint_eq(registry_stats(h.registry)->retries, 1);
        assert_file_is(fd, env("MSB_TEST_CUT_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"));
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_mirror_down_falls_back) {
        Harness h = {};
        Outcome a = {};
        _cleanup_free_ char *config = NULL;

        ck_assert_int_ge(asprintf(&config, "{\"registries\": {\"%s\": {\"mirrors\": [\"http://%s\"]}}}",
                                  env("MSB_TEST_PLAIN"), env("MSB_TEST_DEAD")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_PLAIN"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_msg(a.r == 0, "%s", a.err.message);
        ck_assert_str_eq(a.digest, env("MSB_TEST_MANIFEST_DIGEST"));
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_mirror_serves_first) {
        Harness h = {};
        Outcome a = {};
        _cleanup_free_ char *config = NULL;

        /* The origin is dead; the mirror (the plain registry) has the image. */
        ck_assert_int_ge(asprintf(&config, "{\"registries\": {\"%s\": {\"mirrors\": [\"%s\"]}}}", env("MSB_TEST_DEAD"),
                                  env("MSB_TEST_PLAIN")), 0);
        harness_init(&h, config);
        fetch_manifest(&h, env("MSB_TEST_DEAD"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_msg(a.r == 0, "%s", a.err.message);
        ck_assert_uint_eq(registry_stats(h.registry)->pings, 1);
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_unreachable) {
        Harness h = {};
        Outcome a = {};

        harness_init(&h, NULL);
        fetch_manifest(&h, env("MSB_TEST_DEAD"), env("MSB_TEST_TAG"), NULL, &a);
        ck_assert_int_eq(a.err.kind, PROTO_ERROR_NETWORK_ERROR);
        outcome_done(&a);
        harness_done(&h);
}
END_TEST

START_TEST(test_concurrency_queue) {
        Harness h = {};
        Outcome o[4] = {};
        RegistryFetch *f[4] = {};
        int fds[4];

        /* One download at a time: all four complete, in turn. */
        harness_init(&h, "{\"max_concurrent_downloads\": 1}");
        for (size_t i = 0; i < 4; i++) {
                RegistryFetchParams p = {
                        .kind = REGISTRY_FETCH_BLOB,
                        .domain = env("MSB_TEST_PLAIN"),
                        .repository = env("MSB_TEST_REPO"),
                        .digest = env(i % 2 ? "MSB_TEST_BLOB2_DIGEST" : "MSB_TEST_BLOB_DIGEST"),
                        .size = env_u64(i % 2 ? "MSB_TEST_BLOB2_SIZE" : "MSB_TEST_BLOB_SIZE"),
                };
                fds[i] = p.fd = tmpfile_new();
                ck_assert_int_eq(registry_fetch_start(h.registry, &p, NULL, on_done, &o[i], &f[i]), 0);
        }
        run_until(&h, (Outcome *[]) { &o[0], &o[1], &o[2], &o[3] }, 4);
        for (size_t i = 0; i < 4; i++) {
                ck_assert_msg(o[i].r == 0, "%s", o[i].err.message);
                assert_file_is(fds[i], env(i % 2 ? "MSB_TEST_BLOB2_DIGEST" : "MSB_TEST_BLOB_DIGEST"),
                               env_u64(i % 2 ? "MSB_TEST_BLOB2_SIZE" : "MSB_TEST_BLOB_SIZE"));
                registry_fetch_free(f[i]);
                close(fds[i]);
                outcome_done(&o[i]);
        }
        harness_done(&h);
}
END_TEST

START_TEST(test_cancel_in_flight) {
        Harness h = {};
        Outcome o = {};
        RegistryFetch *f = NULL;
        _cleanup_close_ int fd = tmpfile_new();
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = env("MSB_TEST_PLAIN"),
                .repository = env("MSB_TEST_REPO"),
                .digest = env("MSB_TEST_BLOB_DIGEST"),
                .size = env_u64("MSB_TEST_BLOB_SIZE"),
                .fd = fd,
        };

        /* Cancelled while queued, then while its first transfer is in
         * flight: no callback, and every handle closes. */
        harness_init(&h, NULL);
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, on_progress, on_done, &o, &f), 0);
        registry_fetch_free(f);
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, on_progress, on_done, &o, &f), 0);
        uv_run(&h.loop, UV_RUN_NOWAIT);
        uv_run(&h.loop, UV_RUN_NOWAIT);
        registry_fetch_free(f);
        uv_run(&h.loop, UV_RUN_NOWAIT);
        ck_assert(!o.done);
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_invalid_params) {
        Harness h = {};
        Outcome o = {};
        RegistryFetch *f = NULL;
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = "127.0.0.1:1",
                .repository = "../etc",
                .reference = "v1",
                .max_size = 1024,
        };

        harness_init(&h, NULL);
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, NULL, on_done, &o, &f), -EINVAL);
        p.repository = "ok/repo";
        p.reference = "v1/../../x";
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, NULL, on_done, &o, &f), -EINVAL);
        p.kind = REGISTRY_FETCH_BLOB;
        p.reference = NULL;
        p.digest = "sha256:abc";
        p.fd = -1;
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, NULL, on_done, &o, &f), -EINVAL);
        ck_assert_ptr_null(f);
        harness_done(&h);
}
END_TEST

/* Config parsing needs no network. */

START_TEST(test_config_schema) {
        static const char *const bad[] = {
                "[]",
                "{\"registries\": []}",
                "{\"registries\": {\"r.io\": 1}}",
                "{\"registries\": {\"r.io\": {\"insecure\": \"yes\"}}}",
                "{\"registries\": {\"r.io\": {\"username\": \"u\"}}}",
                "{\"registries\": {\"r.io\": {\"mirrors\": \"m.io\"}}}",
                "{\"registries\": {\"r.io\": {\"mirrors\": [1]}}}",
                "{\"registries\": {\"r.io\": {\"mirrors\": [\"\"]}}}",
                "{\"registries\": {\"r.io\": {\"mirrors\": [\"https://u:p@m.io\"]}}}",
                "{\"registries\": {\"r.io\": {\"mirrors\": [\"u@m.io:5000\"]}}}",
                "{\"max_concurrent_downloads\": 0}",
                "{\"max_concurrent_downloads\": 65}",
                "{\"max_concurrent_downloads_per_pull\": \"3\"}",
        };
        json_auto_t *good = json_loads(
                "{\"registries\": {\"https://Index.Docker.io/v1/\": {\"mirrors\": [\"mirror.example:5000/\", "
                "\"127.0.0.1:5001\", \"http://10.0.0.1:5000\"]}, \"r.io\": {\"insecure\": true, \"ca_file\": \"/ca\", "
                "\"username\": \"u\", \"password\": \"p\"}}, \"max_concurrent_downloads\": 64}",
                0, NULL);
        _cleanup_(registry_config_freep) RegistryConfig *c = NULL;
        const RegistryHostConfig *hc;
        MsbError err = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_auto_t *j = json_loads(bad[i], 0, NULL);
                RegistryConfig *x = NULL;

                ck_assert_ptr_nonnull(j);
                ck_assert_int_eq(registry_config_new(j, &x, &err), -EINVAL);
                ck_assert_ptr_null(x);
                ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
                msb_error_clear(&err);
        }

        ck_assert_int_eq(registry_config_new(good, &c, &err), 0);
        ck_assert_uint_eq(c->max_downloads, 64);
        ck_assert_uint_eq(c->max_downloads_per_pull, REGISTRY_DOWNLOADS_PER_PULL_DEFAULT);
        hc = registry_config_find(c, "docker.io");
        ck_assert_ptr_nonnull(hc);
        ck_assert_uint_eq(hc->n_mirrors, 3);
        ck_assert_str_eq(hc->mirrors[0], "https://mirror.example:5000");
        ck_assert_str_eq(hc->mirrors[1], "http://127.0.0.1:5001");
        ck_assert_str_eq(hc->mirrors[2], "http://10.0.0.1:5000");
        hc = registry_config_find(c, "r.io");
        ck_assert(hc && hc->insecure);
        ck_assert_str_eq(hc->password, "p");
        ck_assert_ptr_null(registry_config_find(c, "other.io"));
}
END_TEST

START_TEST(test_pull_config_check) {
        json_auto_t *bad = json_loads("{\"registries\": {\"r.io\": {\"mirrors\": \"m\"}}}", 0, NULL);
        json_auto_t *good = json_loads("{\"registries\": {\"r.io\": {\"insecure\": true}}}", 0, NULL);
        MsbError err = {};

        ck_assert_int_eq(pull_config_check(good, &err), 0);
        ck_assert_int_eq(pull_config_check(NULL, &err), 0);
        ck_assert_int_eq(pull_config_check(bad, &err), -EINVAL);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
        ck_assert_str_eq(json_string_value(json_object_get(err.data, "parameter")), "registries.r.io");
        ck_assert_ptr_nonnull(strstr(err.message, "mirrors"));
        msb_error_clear(&err);
}
END_TEST

START_TEST(test_config_defaults) {
        _cleanup_(registry_config_freep) RegistryConfig *c = NULL;

        ck_assert_int_eq(registry_config_new(NULL, &c, NULL), 0);
        ck_assert_uint_eq(c->max_downloads, REGISTRY_DOWNLOADS_DEFAULT);
        ck_assert_uint_eq(c->n_hosts, 0);
        ck_assert_ptr_null(registry_config_free(NULL));
}
END_TEST

START_TEST(test_config_mirror_limit) {
        _cleanup_free_ char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);
        json_auto_t *j = NULL;
        RegistryConfig *c = NULL;
        MsbError err = {};

        fputs("{\"registries\": {\"r.io\": {\"mirrors\": [", f);
        for (unsigned i = 0; i <= REGISTRY_MIRRORS_MAX; i++)
                fprintf(f, "%s\"m%u.io\"", i ? "," : "", i);
        fputs("]}}}", f);
        fclose(f);
        j = json_loads(s, 0, NULL);
        ck_assert_int_eq(registry_config_new(j, &c, &err), -EINVAL);
        msb_error_clear(&err);
}
END_TEST

/* A config whose daemon part gives mine.io credentials of its own, with
 * the Docker config docker_json added. */
static RegistryConfig *config_with_docker(const char *docker_json) {
        json_auto_t *j = json_loads("{\"registries\": {\"mine.io\": {\"username\": \"own\", \"password\": \"pw\"}}}", 0, NULL);
        char path[] = "/tmp/msb-docker-config-XXXXXX";
        int fd = mkstemp(path);
        RegistryConfig *c = NULL;
        FILE *f;

        ck_assert_int_ge(fd, 0);
        f = fdopen(fd, "w");
        fputs(docker_json, f);
        fclose(f);
        ck_assert_int_eq(registry_config_new(j, &c, NULL), 0);
        ck_assert_int_eq(registry_config_load_docker(c, path), 0);
        unlink(path);
        return c;
}

START_TEST(test_docker_auths) {
        /* "dXNlcjpwYXNz" = user:pass, "dTpwOnc=" = u:p:w (colon in the
         * password), "bm9jb2xvbg==" has no colon: ignored. */
        _cleanup_(registry_config_freep) RegistryConfig *c = config_with_docker(
                "{\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"dXNlcjpwYXNz\"}, "
                "\"ghcr.io\": {\"auth\": \"dTpwOnc=\"}, \"bad.io\": {\"auth\": \"bm9jb2xvbg==\"}, "
                "\"mine.io\": {\"auth\": \"dXNlcjpwYXNz\"}, \"junk.io\": {\"auth\": \"!!!!\"}}}");

        ck_assert_str_eq(registry_config_find(c, "docker.io")->username, "user");
        ck_assert_str_eq(registry_config_find(c, "docker.io")->password, "pass");
        ck_assert_str_eq(registry_config_find(c, "ghcr.io")->username, "u");
        ck_assert_str_eq(registry_config_find(c, "ghcr.io")->password, "p:w");
        ck_assert_ptr_null(registry_config_find(c, "bad.io"));
        ck_assert_ptr_null(registry_config_find(c, "junk.io"));
        /* The daemon's own config wins. */
        ck_assert_str_eq(registry_config_find(c, "mine.io")->username, "own");
        ck_assert_int_eq(registry_config_load_docker(c, "/nonexistent/config.json"), 0);
}
END_TEST

START_TEST(test_set_config_in_flight) {
        Harness h = {};
        Outcome o = {};
        RegistryFetch *f = NULL;
        RegistryConfig *next = NULL;
        _cleanup_close_ int fd = tmpfile_new();
        json_auto_t *j = json_loads("{\"max_concurrent_downloads\": 1}", 0, NULL);
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_BLOB,
                .domain = env("MSB_TEST_FAULT"),
                .repository = env("MSB_TEST_REPO"),
                .digest = env("MSB_TEST_CUT_DIGEST"),
                .size = env_u64("MSB_TEST_BLOB_SIZE"),
                .fd = fd,
                .log_tag = "test#1",
        };

        /* The config is replaced (and the old one freed) while the fetch
         * runs, and again while it resumes the cut blob: it ends well, and
         * ASan sees nothing read from the freed configs. */
        harness_init(&h, NULL);
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, on_progress, on_done, &o, &f), 0);
        for (int i = 0; i < 2; i++) {
                while (!o.done && o.progress_calls == (uint64_t) i)
                        uv_run(&h.loop, UV_RUN_ONCE);
                ck_assert_int_eq(registry_config_new(j, &next, NULL), 0);
                registry_set_config(h.registry, next);
                registry_config_free(h.config);
                h.config = next;
        }
        run_until(&h, (Outcome *[]) { &o }, 1);
        ck_assert_msg(o.r == 0, "%s", o.err.message);
        ck_assert_uint_eq(h.config->max_downloads, 1);
        assert_file_is(fd, env("MSB_TEST_CUT_DIGEST"), env_u64("MSB_TEST_BLOB_SIZE"));
        registry_fetch_free(f);
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_describe_failure) {
        Harness h = {};
        Outcome o = {};
        RegistryFetch *f = NULL;
        _cleanup_free_ char *what = NULL, *url = NULL;
        RegistryFetchParams p = {
                .kind = REGISTRY_FETCH_MANIFEST,
                .domain = env("MSB_TEST_PLAIN"),
                .repository = env("MSB_TEST_REPO"),
                .reference = "no-such-tag",
                .max_size = 4 * MiB,
        };

        harness_init(&h, NULL);
        ck_assert_int_eq(registry_fetch_start(h.registry, &p, NULL, on_done, &o, &f), 0);
        run_until(&h, (Outcome *[]) { &o }, 1);
        ck_assert_int_eq(o.r, -ENOENT);
        what = registry_fetch_describe(f);
        ck_assert_int_ge(asprintf(&url, "GET http://%s/v2/%s/manifests/no-such-tag: HTTP 404, 0 retries",
                                  env("MSB_TEST_PLAIN"), env("MSB_TEST_REPO")),
                         0);
        ck_assert_str_eq(what, url);
        registry_fetch_free(f);
        outcome_done(&o);
        harness_done(&h);
}
END_TEST

START_TEST(test_url_for_log) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/" },
                { "https://user:pw@mirror.example.com/v2/x/blobs/sha256:ab", "https://mirror.example.com/v2/x/blobs/sha256:ab" },
                { "https://auth.example.com/token?scope=repository:a:pull&service=s", "https://auth.example.com/token" },
                { "https://s3.example.com/b/o?X-Amz-Signature=abc#frag", "https://s3.example.com/b/o" },
                { "https://user@host:1/p", "https://host:1/p" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *got = registry_url_for_log(cases[i].in);
                ck_assert_pstr_eq(got, cases[i].out);
        }
}
END_TEST

START_TEST(test_docker_helpers) {
        /* "dXNlcjpwYXNz" = user:pass. */
        _cleanup_(registry_config_freep) RegistryConfig *c = config_with_docker(
                "{\"credsStore\": \"desktop\", \"credHelpers\": {\"ghcr.io\": \"gh\", \"evil.io\": \"../../bin/sh\", "
                "\"mine.io\": \"gh\", \"https://index.docker.io/v1/\": \"hub\"}, "
                "\"auths\": {\"https://index.docker.io/v1/\": {\"auth\": \"dXNlcjpwYXNz\"}}}");

        ck_assert_str_eq(registry_config_helper(c, "ghcr.io"), "gh");
        ck_assert_str_eq(registry_config_helper(c, "docker.io"), "hub");
        ck_assert_str_eq(registry_config_helper(c, "other.io"), "desktop");
        /* A name that is a path is never run; the store serves that host. */
        ck_assert_str_eq(registry_config_helper(c, "evil.io"), "desktop");
        /* The daemon's own credentials win over any helper. */
        ck_assert_ptr_null(registry_config_helper(c, "mine.io"));
        ck_assert_int_eq(registry_config_set_helper_credentials(c, "mine.io", "h", "hp"), 0);
        ck_assert_str_eq(registry_config_find(c, "mine.io")->username, "own");
        /* A helper's answer replaces the "auths" entry. */
        ck_assert_str_eq(registry_config_find(c, "docker.io")->username, "user");
        ck_assert_int_eq(registry_config_set_helper_credentials(c, "docker.io", "h", "hp"), 0);
        ck_assert_str_eq(registry_config_find(c, "docker.io")->username, "h");
        ck_assert_str_eq(registry_config_find(c, "docker.io")->password, "hp");
        ck_assert_int_eq(registry_config_find(c, "docker.io")->source, REGISTRY_CREDENTIALS_HELPER);
        ck_assert_int_eq(registry_config_set_helper_credentials(c, "new.io", "n", "np"), 0);
        ck_assert_str_eq(registry_config_find(c, "new.io")->username, "n");

        ck_assert(credential_helper_name_is_valid("desktop"));
        ck_assert(credential_helper_name_is_valid("ecr-login"));
        ck_assert(!credential_helper_name_is_valid(""));
        ck_assert(!credential_helper_name_is_valid("a/b"));
        ck_assert(!credential_helper_name_is_valid("a b"));
}
END_TEST

typedef struct HelperOutcome {
        bool done;
        int r;
        char user[64], secret[64], why[256];
} HelperOutcome;

static void on_helper_done(int r, const char *username, const char *secret, const char *why, void *userdata) {
        HelperOutcome *o = userdata;

        ck_assert(!o->done);
        o->done = true;
        o->r = r;
        snprintf(o->user, sizeof(o->user), "%s", username ?: "");
        snprintf(o->secret, sizeof(o->secret), "%s", secret ?: "");
        snprintf(o->why, sizeof(o->why), "%s", why ?: "");
}

/* Runs docker-credential-<name> for server to its end. */
static void helper_run(uv_loop_t *loop, const char *name, const char *server, HelperOutcome *o) {
        CredentialHelperRun *run = NULL;
        uint64_t deadline = now_monotonic_ms() + 30 * MSEC_PER_SEC;

        *o = (HelperOutcome) {};
        ck_assert_int_eq(credential_helper_run(loop, name, server, on_helper_done, o, &run), 0);
        ck_assert(!o->done);
        while (!o->done) {
                ck_assert(now_monotonic_ms() < deadline);
                uv_run(loop, UV_RUN_ONCE);
        }
}

START_TEST(test_credential_helper_run) {
        _cleanup_free_ char *dir = NULL, *path = NULL, *script = NULL;
        uv_loop_t loop;
        HelperOutcome o;
        CredentialHelperRun *run = NULL;
        FILE *f;

        /* One script, four behaviours by its name. */
        ck_assert_int_ge(asprintf(&dir, "%s/helpers-%d", env("MSB_TEST_TMP"), getpid()), 0);
        ck_assert_int_eq(mkdir_p(dir, 0700), 0);
        ck_assert_int_ge(asprintf(&script, "%s/docker-credential-t", dir), 0);
        f = fopen(script, "we");
        ck_assert_ptr_nonnull(f);
        fputs("#!/bin/sh\n"
              "read -r server\n"
              "case \"$1:$server\" in\n"
              "get:reg.example) printf '{\"ServerURL\":\"%s\",\"Username\":\"u1\",\"Secret\":\"s1\"}' \"$server\" ;;\n"
              "get:none.example) echo 'credentials not found in native keychain'; exit 1 ;;\n"
              "get:broken.example) echo 'oops'; exit 3 ;;\n"
              "get:big.example) head -c 70000 /dev/zero ;;\n"
              "get:slow.example) exec sleep 600 ;;\n"
              "*) exit 9 ;;\n"
              "esac\n",
              f);
        fclose(f);
        ck_assert_int_eq(chmod(script, 0755), 0);
        ck_assert_int_ge(asprintf(&path, "%s:/usr/bin:/bin", dir), 0);
        setenv("PATH", path, 1);
        ck_assert_int_eq(uv_loop_init(&loop), 0);

        helper_run(&loop, "t", "reg.example", &o);
        ck_assert_int_eq(o.r, 0);
        ck_assert_str_eq(o.user, "u1");
        ck_assert_str_eq(o.secret, "s1");
        helper_run(&loop, "t", "none.example", &o);
        ck_assert_int_eq(o.r, -ENOENT);
        helper_run(&loop, "t", "broken.example", &o);
        ck_assert_int_eq(o.r, -EIO);
        ck_assert_str_eq(o.why, "docker-credential-t exited with status 3");
        helper_run(&loop, "t", "big.example", &o);
        ck_assert_int_eq(o.r, -EMSGSIZE);
        /* Not on PATH: refused at once, no callback. */
        ck_assert_int_eq(credential_helper_run(&loop, "absent", "x", on_helper_done, &o, &run), -ENOENT);
        ck_assert_int_eq(credential_helper_run(&loop, "../t", "x", on_helper_done, &o, &run), -EINVAL);
        /* Cancelled while it runs: no callback, the process is killed, and
         * every handle closes. */
        o = (HelperOutcome) {};
        ck_assert_int_eq(credential_helper_run(&loop, "t", "slow.example", on_helper_done, &o, &run), 0);
        uv_run(&loop, UV_RUN_NOWAIT);
        credential_helper_cancel(run);
        ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
        ck_assert(!o.done);
        ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(test_challenge_parse) {
        static const struct {
                const char *header;
                int r;
                RegistryChallengeScheme scheme;
                const char *realm, *service;
        } cases[] = {
                { "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/alpine:pull\"",
                  0, REGISTRY_CHALLENGE_BEARER, "https://auth.docker.io/token", "registry.docker.io" },
                { "bearer realm=\"http://127.0.0.1:1/t\"", 0, REGISTRY_CHALLENGE_BEARER, "http://127.0.0.1:1/t", NULL },
                { "Bearer  service=s , realm=\"r\\\"q\"", 0, REGISTRY_CHALLENGE_BEARER, "r\"q", "s" },
                { "Basic realm=\"Registry Realm\"", 0, REGISTRY_CHALLENGE_BASIC, "Registry Realm", NULL },
                { "Basic", 0, REGISTRY_CHALLENGE_BASIC, NULL, NULL },
                { "Bearer realm=\"r\", Basic realm=\"b\"", 0, REGISTRY_CHALLENGE_BEARER, "r", NULL },
                { "Bearer service=\"s\"", -EINVAL, 0, NULL, NULL },
                { "Bearer realm=\"unterminated", -EINVAL, 0, NULL, NULL },
                { "Negotiate abc", -EOPNOTSUPP, 0, NULL, NULL },
                { "Bearerrealm=\"x\"", -EOPNOTSUPP, 0, NULL, NULL },
                { "", -EOPNOTSUPP, 0, NULL, NULL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *realm = NULL, *service = NULL;
                RegistryChallengeScheme scheme = REGISTRY_CHALLENGE_NONE;

                ck_assert_msg(registry_challenge_parse(cases[i].header, &scheme, &realm, &service) == cases[i].r,
                              "case %zu: %s", i, cases[i].header);
                if (cases[i].r < 0)
                        continue;
                ck_assert_int_eq(scheme, cases[i].scheme);
                ck_assert_pstr_eq(realm, cases[i].realm);
                ck_assert_pstr_eq(service, cases[i].service);
        }
}
END_TEST

START_TEST(test_challenge_value_limit) {
        size_t n = REGISTRY_HEADER_VALUE_MAX_BYTES + 64;
        _cleanup_free_ char *h = malloc(n + 32), *realm = NULL, *service = NULL;
        RegistryChallengeScheme scheme;

        /* A realm of exactly the limit minus the NUL parses; one more byte does not. */
        ck_assert_ptr_nonnull(h);
        strcpy(h, "Bearer realm=\"");
        memset(h + strlen(h), 'a', REGISTRY_HEADER_VALUE_MAX_BYTES - 1);
        strcpy(h + strlen("Bearer realm=\"") + REGISTRY_HEADER_VALUE_MAX_BYTES - 1, "\"");
        ck_assert_int_eq(registry_challenge_parse(h, &scheme, &realm, &service), 0);
        ck_assert_uint_eq(strlen(realm), REGISTRY_HEADER_VALUE_MAX_BYTES - 1);
        free(realm);
        realm = NULL;
        strcpy(h, "Bearer realm=\"");
        memset(h + strlen(h), 'a', REGISTRY_HEADER_VALUE_MAX_BYTES);
        strcpy(h + strlen("Bearer realm=\"") + REGISTRY_HEADER_VALUE_MAX_BYTES, "\"");
        ck_assert_int_eq(registry_challenge_parse(h, &scheme, &realm, &service), -EINVAL);
}
END_TEST

START_TEST(test_loopback) {
        ck_assert(registry_host_is_loopback("127.0.0.1:5000"));
        ck_assert(registry_host_is_loopback("127.1.2.3"));
        ck_assert(registry_host_is_loopback("localhost:80"));
        ck_assert(registry_host_is_loopback("[::1]:5000"));
        ck_assert(!registry_host_is_loopback("128.0.0.1:5000"));
        ck_assert(!registry_host_is_loopback("docker.io"));
        ck_assert(!registry_host_is_loopback("127.0.0.1.evil.io"));
        ck_assert(!registry_host_is_loopback("[::2]:5000"));
}
END_TEST

static Suite *registry_suite(void) {
        Suite *s = suite_create("registry");
        TCase *cfg = tcase_create("config"), *net = tcase_create("network");

        tcase_set_timeout(cfg, 30);
        tcase_add_test(cfg, test_config_schema);
        tcase_add_test(cfg, test_config_defaults);
        tcase_add_test(cfg, test_pull_config_check);
        tcase_add_test(cfg, test_config_mirror_limit);
        tcase_add_test(cfg, test_docker_auths);
        tcase_add_test(cfg, test_docker_helpers);
        tcase_add_test(cfg, test_url_for_log);
        tcase_add_test(cfg, test_credential_helper_run);
        tcase_add_test(cfg, test_loopback);
        tcase_add_test(cfg, test_challenge_parse);
        tcase_add_test(cfg, test_challenge_value_limit);
        suite_add_tcase(s, cfg);

        tcase_set_timeout(net, 90);
        tcase_add_test(net, test_manifest_by_tag_and_digest);
        tcase_add_test(net, test_manifest_not_found);
        tcase_add_test(net, test_manifest_digest_reference_mismatch);
        tcase_add_test(net, test_manifest_size_limit);
        tcase_add_test(net, test_blob_download);
        tcase_add_test(net, test_blob_descriptor_too_small);
        tcase_add_test(net, test_token_flow);
        tcase_add_test(net, test_token_from_docker_config);
        tcase_add_test(net, test_token_wrong_credentials);
        tcase_add_test(net, test_token_anonymous_refused);
        tcase_add_test(net, test_basic_over_tls);
        tcase_add_test(net, test_tls_untrusted_ca);
        tcase_add_test(net, test_basic_wrong_password);
        tcase_add_test(net, test_corrupt_blob);
        tcase_add_test(net, test_cut_blob_resumes);
        tcase_add_test(net, test_mirror_down_falls_back);
        tcase_add_test(net, test_mirror_serves_first);
        tcase_add_test(net, test_unreachable);
        tcase_add_test(net, test_concurrency_queue);
        tcase_add_test(net, test_cancel_in_flight);
        tcase_add_test(net, test_set_config_in_flight);
        tcase_add_test(net, test_describe_failure);
        tcase_add_test(net, test_invalid_params);
        suite_add_tcase(s, net);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(registry_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
