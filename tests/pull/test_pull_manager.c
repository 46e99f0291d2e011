/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The pull manager's lifecycle on a real store and a real registry (started
 * by run_registry_tests.py): a complete pull, a cache hit, callers that
 * detach (the pull is abandoned when nobody waits), shutdown, and freeing
 * the manager with a pull in flight. Every test ends with the loop closed
 * clean, so no handle is leaked and none is freed while open.
 */

#include <check.h>
#include <dirent.h>

#include "digest.h"
#include "pull.h"
#include "reference.h"
#include "store.h"

static const char *env(const char *name) {
        const char *v = getenv(name);

        ck_assert_msg(v && v[0], "%s is not set: run through run_registry_tests.py", name);
        return v;
}

typedef struct Caller {
        unsigned events;
        bool done;
        int r;
        ProtoError kind;
        char manifest_digest[DIGEST_STRING_MAX];
        char last_event[32];
} Caller;

static void on_progress(json_t *event, void *userdata) {
        Caller *c = userdata;

        ck_assert(!c->done);
        c->events++;
        snprintf(c->last_event, sizeof(c->last_event), "%s", json_string_value(json_object_get(event, "event")));
}

static void on_done(int r, const MsbError *err, json_t *handle, void *userdata) {
        Caller *c = userdata;

        ck_assert(!c->done);
        c->done = true;
        c->r = r;
        if (r < 0) {
                ck_assert(err && err->set);
                c->kind = err->kind;
                return;
        }
        snprintf(c->manifest_digest, sizeof(c->manifest_digest), "%s",
                 json_string_value(json_object_get(handle, "manifest_digest")));
}

typedef struct Fixture {
        uv_loop_t loop;
        char store_dir[256];
        Store *store;
        PullManager *m;
        Reference *ref;
} Fixture;

static void fixture_init(Fixture *f) {
        MsbError err = {};
        _cleanup_free_ char *s = NULL;

        ck_assert_int_eq(uv_loop_init(&f->loop), 0);
        snprintf(f->store_dir, sizeof(f->store_dir), "%s/store-%d", env("MSB_TEST_TMP"), getpid());
        ck_assert_msg(store_open(f->store_dir, &f->store, &err) == 0, "%s", err.message);
        ck_assert_int_eq(pull_manager_new(&f->loop, f->store, NULL, &f->m), 0);
        ck_assert_int_ge(asprintf(&s, "%s/%s:%s", env("MSB_TEST_PLAIN"), env("MSB_TEST_REPO"), env("MSB_TEST_TAG")), 0);
        ck_assert_int_eq(reference_parse(s, &f->ref, NULL), 0);
}

static void fixture_done(Fixture *f) {
        pull_manager_free(f->m);
        ck_assert_int_eq(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
        ck_assert_int_eq(uv_loop_close(&f->loop), 0);
        store_free(f->store);
        reference_free(f->ref);
        (void) rm_rf(f->store_dir, NULL);
}

static void run_until(Fixture *f, bool (*cond)(void *), void *arg) {
        uint64_t deadline = now_monotonic_ms() + 60 * MSEC_PER_SEC;

        while (!cond(arg)) {
                ck_assert(now_monotonic_ms() < deadline);
                uv_run(&f->loop, UV_RUN_ONCE);
        }
}

static bool caller_done(void *arg) {
        return ((Caller *) arg)->done;
}

static bool manager_idle(void *arg) {
        return pull_manager_n_pulls(arg) == 0;
}

START_TEST(test_pull_then_cache_hit) {
        Fixture f = {};
        Caller a = {}, b = {}, c = {};
        PullRequest *q;
        MsbError err = {};

        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, NULL, NULL, on_progress, on_done, &a, &q, &err), 0);
        /* A second caller of the same reference joins the same pull. */
        ck_assert_int_eq(pull_start(f.m, f.ref, "if-missing", NULL, on_progress, on_done, &b, &q, &err), 0);
        ck_assert_uint_eq(pull_manager_n_pulls(f.m), 1);
        ck_assert(!a.done && !b.done);
        run_until(&f, caller_done, &a);
        run_until(&f, caller_done, &b);
        ck_assert_msg(a.r == 0, "pull failed: %d", a.r);
        ck_assert_int_eq(b.r, 0);
        ck_assert_str_eq(a.manifest_digest, env("MSB_TEST_MANIFEST_DIGEST"));
        ck_assert_str_eq(b.manifest_digest, a.manifest_digest);
        ck_assert_str_eq(a.last_event, "complete");
        ck_assert_str_eq(b.last_event, "complete");

        /* Cached: no pull in flight, answered from the store. */
        ck_assert_int_eq(pull_start(f.m, f.ref, "never", NULL, on_progress, on_done, &c, &q, &err), 0);
        ck_assert_uint_eq(pull_manager_n_pulls(f.m), 0);
        ck_assert(!c.done);
        run_until(&f, caller_done, &c);
        ck_assert_int_eq(c.r, 0);
        ck_assert_str_eq(c.manifest_digest, a.manifest_digest);
        fixture_done(&f);
}
END_TEST

START_TEST(test_immediate_errors) {
        Fixture f = {};
        Caller a = {};
        PullRequest *q = NULL;
        MsbError err = {};

        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, "never", NULL, on_progress, on_done, &a, &q, &err), -ENOENT);
        ck_assert_int_eq(err.kind, PROTO_ERROR_IMAGE_NOT_FOUND);
        msb_error_clear(&err);
        ck_assert_int_eq(pull_start(f.m, f.ref, "sometimes", NULL, on_progress, on_done, &a, &q, &err), -EINVAL);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
        msb_error_clear(&err);
        ck_assert_int_eq(pull_start(f.m, f.ref, NULL, "linux", on_progress, on_done, &a, &q, &err), -EINVAL);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
        msb_error_clear(&err);
        ck_assert(!a.done);
        fixture_done(&f);
}
END_TEST

START_TEST(test_detach_abandons_when_nobody_waits) {
        Fixture f = {};
        Caller a = {}, b = {};
        PullRequest *qa, *qb;
        MsbError err = {};

        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, NULL, NULL, on_progress, on_done, &a, &qa, &err), 0);
        ck_assert_int_eq(pull_start(f.m, f.ref, NULL, NULL, on_progress, on_done, &b, &qb, &err), 0);
        /* One caller leaves: the other still gets the image. */
        pull_request_detach(qa);
        run_until(&f, caller_done, &b);
        ck_assert_int_eq(b.r, 0);
        ck_assert(!a.done);

        /* Everybody leaves: the pull is abandoned, nothing calls back. */
        Caller c = {};
        PullRequest *qc;
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &c, &qc, &err), 0);
        pull_request_detach(qc);
        run_until(&f, manager_idle, f.m);
        ck_assert(!c.done);
        fixture_done(&f);
}
END_TEST

START_TEST(test_shutdown_fails_pulls) {
        Fixture f = {};
        Caller a = {}, b = {};
        PullRequest *q;
        MsbError err = {};

        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &a, &q, &err), 0);
        pull_manager_shutdown(f.m);
        run_until(&f, caller_done, &a);
        ck_assert_int_lt(a.r, 0);
        ck_assert_int_eq(a.kind, PROTO_ERROR_SHUTTING_DOWN);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &b, &q, &err), -ECANCELED);
        ck_assert_int_eq(err.kind, PROTO_ERROR_SHUTTING_DOWN);
        msb_error_clear(&err);
        fixture_done(&f);
}
END_TEST

START_TEST(test_free_with_pull_in_flight) {
        Fixture f = {};
        Caller a = {};
        PullRequest *q;
        MsbError err = {};

        /* Freed while the pull runs: no callback, and the loop closes clean
         * once the worker jobs in flight have returned. */
        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &a, &q, &err), 0);
        for (int i = 0; i < 3; i++)
                uv_run(&f.loop, UV_RUN_NOWAIT);
        fixture_done(&f);
        ck_assert(!a.done);
}
END_TEST

static bool caller_resolved(void *arg) {
        Caller *c = arg;

        return c->done || c->events >= 2;
}

START_TEST(test_free_while_layers_move) {
        Fixture f = {};
        Caller a = {};
        PullRequest *q;
        MsbError err = {};

        /* Freed once the layers are on their way (downloads, maybe a
         * conversion on a worker): the same promises hold. */
        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &a, &q, &err), 0);
        run_until(&f, caller_resolved, &a);
        ck_assert(!a.done);
        fixture_done(&f);
        ck_assert(!a.done);
}
END_TEST

static bool dir_is_empty(const char *path) {
        DIR *d = opendir(path);
        struct dirent *e;
        bool empty = true;

        if (!d)
                return true;
        while ((e = readdir(d)))
                if (!streq(e->d_name, ".") && !streq(e->d_name, ".."))
                        empty = false;
        closedir(d);
        return empty;
}

START_TEST(test_cancel_one_of_two) {
        Fixture f = {};
        Caller a = {}, b = {};
        PullRequest *qa, *qb;
        MsbError err = {};

        fixture_init(&f);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &a, &qa, &err), 0);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &b, &qb, &err), 0);
        ck_assert_str_eq(pull_request_tag(qa), "pull#1");
        ck_assert_str_eq(pull_request_tag(qb), "pull#1");
        /* Answered at once, from inside the call; the other caller's pull
         * goes on. */
        pull_request_cancel(qa);
        ck_assert(a.done);
        ck_assert_int_eq(a.r, -ECANCELED);
        ck_assert_int_eq(a.kind, PROTO_ERROR_SHUTTING_DOWN);
        ck_assert_uint_eq(pull_manager_n_pulls(f.m), 1);
        run_until(&f, caller_done, &b);
        ck_assert_msg(b.r == 0, "pull failed: %d", b.r);
        ck_assert_str_eq(b.manifest_digest, env("MSB_TEST_MANIFEST_DIGEST"));
        fixture_done(&f);
}
END_TEST

START_TEST(test_cancel_stops_the_pull) {
        Fixture f = {};
        Caller a = {}, c = {};
        PullRequest *q;
        MsbError err = {};
        _cleanup_free_ char *tmp = NULL;

        /* Cancelled once its layers are on their way: no pull is left, its
         * temporary files go, nothing is committed. */
        fixture_init(&f);
        ck_assert_int_ge(asprintf(&tmp, "%s/tmp", f.store_dir), 0);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &a, &q, &err), 0);
        run_until(&f, caller_resolved, &a);
        ck_assert(!a.done);
        pull_request_cancel(q);
        ck_assert(a.done);
        ck_assert_int_eq(a.kind, PROTO_ERROR_SHUTTING_DOWN);
        /* The pull ends once its worker jobs are back: by then every
         * temporary file is gone. */
        run_until(&f, manager_idle, f.m);
        ck_assert(dir_is_empty(tmp));
        ck_assert_int_eq(pull_start(f.m, f.ref, "never", NULL, on_progress, on_done, &c, &q, &err), -ENOENT);
        msb_error_clear(&err);
        fixture_done(&f);
}
END_TEST

START_TEST(test_reconfigure) {
        Fixture f = {};
        Caller a = {};
        PullRequest *q;
        MsbError err = {};
        json_auto_t *bad = json_loads("{\"max_concurrent_downloads\": 0}", 0, NULL);
        json_auto_t *good = json_loads("{\"max_concurrent_downloads\": 1, \"max_concurrent_downloads_per_pull\": 1, "
                                       "\"store\": {\"max_bytes\": 1}}", 0, NULL);

        fixture_init(&f);
        ck_assert_int_eq(pull_manager_reconfigure(f.m, bad, &err), -EINVAL);
        ck_assert_int_eq(err.kind, PROTO_ERROR_INVALID_PARAMS);
        msb_error_clear(&err);
        ck_assert_int_eq(pull_start(f.m, f.ref, "always", NULL, on_progress, on_done, &a, &q, &err), 0);
        /* A new config while the pull runs: it ends well. */
        ck_assert_int_eq(pull_manager_reconfigure(f.m, good, &err), 0);
        run_until(&f, caller_resolved, &a);
        ck_assert_int_eq(pull_manager_reconfigure(f.m, good, &err), 0);
        run_until(&f, caller_done, &a);
        ck_assert_msg(a.r == 0, "pull failed: %d", a.r);
        fixture_done(&f);
}
END_TEST

static Suite *pull_manager_suite(void) {
        Suite *s = suite_create("pull_manager");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 90);
        tcase_add_test(tc, test_pull_then_cache_hit);
        tcase_add_test(tc, test_immediate_errors);
        tcase_add_test(tc, test_detach_abandons_when_nobody_waits);
        tcase_add_test(tc, test_shutdown_fails_pulls);
        tcase_add_test(tc, test_free_with_pull_in_flight);
        tcase_add_test(tc, test_free_while_layers_move);
        tcase_add_test(tc, test_cancel_one_of_two);
        tcase_add_test(tc, test_cancel_stops_the_pull);
        tcase_add_test(tc, test_reconfigure);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(pull_manager_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
