/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pull manager and the public API (pull.h): the pulls in flight, the
 * memory of converted layers, start (policies, the cache, joining a pull
 * in flight), shutdown and free.
 */
#include "pull_internal.h"

/* How the Docker config file looks now. */
static PullDockerStamp docker_stamp(const char *path) {
        struct stat st;

        if (!path || stat(path, &st) < 0)
                return (PullDockerStamp) {};
        return (PullDockerStamp) {
                .exists = true,
                .dev = st.st_dev,
                .ino = st.st_ino,
                .size = st.st_size,
                .mtime = st.st_mtim,
        };
}

static bool docker_stamp_equal(const PullDockerStamp *a, const PullDockerStamp *b) {
        return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
               a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* The registries of the daemon config plus what the Docker config says
 * about credentials; *ret_stamp is how the Docker config looked when read
 * (taken first: a change while we read is seen by the next look). */
static int manager_build_config(PullManager *m, const json_t *config, RegistryConfig **ret,
                                PullDockerStamp *ret_stamp, MsbError *err) {
        _cleanup_(registry_config_freep) RegistryConfig *c = NULL;
        PullDockerStamp stamp = docker_stamp(m->docker_path);
        int r;

        r = registry_config_new(config, &c, err);
        if (r < 0)
                return r;
        r = m->docker_path ? registry_config_load_docker(c, m->docker_path) : 0;
        if (r == -ENOMEM)
                return r;
        /* A broken Docker config only costs its credentials. */
        if (r < 0)
                log_warning("cannot use the Docker config %s: %s; pulls go without its credentials", m->docker_path,
                            r == -EINVAL ? "it is not a JSON object with \"auths\" an object" : strerror(-r));
        *ret = TAKE_PTR(c);
        *ret_stamp = stamp;
        return 0;
}

/* Makes c the config of every request from now on. */
static void manager_swap_config(PullManager *m, RegistryConfig *c, const PullDockerStamp *stamp) {
        registry_set_config(m->registry, c);
        registry_config_free(m->config);
        m->config = c;
        m->docker_stamp = *stamp;
}

int pull_manager_new(uv_loop_t *loop, Store *store, const json_t *config, PullManager **ret) {
        PullManager *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->loop = loop;
        m->store = store;
        m->config_json = config ? json_deep_copy(config) : json_object();
        r = m->config_json ? registry_docker_config_path(&m->docker_path) : -ENOMEM;
        /* Created here, on the loop thread, which is the only one to use it. */
        if (r >= 0)
                r = store_reader_new(store, &m->reader);
        if (r >= 0)
                r = manager_build_config(m, config, &m->config, &m->docker_stamp, NULL);
        if (r >= 0)
                r = registry_new(loop, m->config, &m->registry);
        if (r < 0) {
                registry_config_free(m->config);
                store_reader_free(m->reader);
                json_decref(m->config_json);
                free(m->docker_path);
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int pull_manager_reconfigure(PullManager *m, const json_t *config, MsbError *err) {
        RegistryConfig *c = NULL;
        PullDockerStamp stamp;
        json_t *copy;
        int r;

        if (!m || !config)
                return -EINVAL;
        copy = json_deep_copy(config);
        if (!copy)
                return -ENOMEM;
        r = manager_build_config(m, config, &c, &stamp, err);
        if (r < 0) {
                json_decref(copy);
                return r;
        }
        manager_swap_config(m, c, &stamp);
        json_decref(m->config_json);
        m->config_json = copy;
        return 0;
}

int pull_config_check(const json_t *config, MsbError *err) {
        _cleanup_(registry_config_freep) RegistryConfig *c = NULL;

        return registry_config_new(config, &c, err);
}

void pull_manager_refresh_docker_config(PullManager *m, const char *tag) {
        PullDockerStamp now = docker_stamp(m->docker_path), stamp;
        RegistryConfig *c = NULL;

        if (docker_stamp_equal(&now, &m->docker_stamp))
                return;
        /* The daemon config was valid when it was taken: only memory can
         * fail here, and then the old credentials stay. */
        if (manager_build_config(m, m->config_json, &c, &stamp, NULL) < 0)
                return;
        manager_swap_config(m, c, &stamp);
        log_notice("%s %s changed: its registry credentials were read again", tag, m->docker_path);
}

void pull_manager_new_tag(PullManager *m, char tag[static PULL_TAG_MAX]) {
        snprintf(tag, PULL_TAG_MAX, "pull#%u", ++m->next_tag);
}

void pull_manager_maybe_release(PullManager *m) {
        if (!m->freeing || m->busy > 0 || m->ops || m->works_in_flight > 0)
                return;
        for (size_t i = 0; i < PULL_CONVERTED_MEMORY; i++)
                free(m->converted[i]);
        registry_config_free(m->config);
        json_decref(m->config_json);
        free(m->docker_path);
        store_reader_free(m->reader);
        free(m->stream_buf);
        free(m);
}

PullManager *pull_manager_free(PullManager *m) {
        if (!m)
                return NULL;
        m->freeing = true;
        m->shutting_down = true;
        m->busy++;
        /* Network first: every fetch must be gone before the registry. */
        for (PullOp *op = m->ops; op; op = op->next) {
                op->failed = true;
                pull_op_drop_transfers(op);
        }
        while (m->blobs)
                pull_blob_free(m->blobs);
        m->registry = registry_free(m->registry);
        for (PullOp *op = m->ops, *next; op; op = next) {
                next = op->next;
                pull_op_finish(op); /* frees it unless a worker still has it */
        }
        m->busy--;
        pull_manager_maybe_release(m);
        return NULL;
}

void pull_manager_shutdown(PullManager *m) {
        _cleanup_free_ PullOp **ops = NULL;
        MsbError err = {};
        size_t n = 0;

        if (!m || m->shutting_down)
                return;
        m->shutting_down = true;
        msb_error_set(&err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");

        /* pull_op_fail may free the op (and call back): work on a snapshot. */
        n = pull_manager_n_pulls(m);
        ops = calloc(n + 1, sizeof(PullOp *));
        if (ops) {
                size_t k = 0;
                for (PullOp *op = m->ops; op; op = op->next)
                        ops[k++] = op;
                for (size_t i = 0; i < n; i++)
                        if (pull_manager_has_op(m, ops[i]))
                                pull_op_fail(ops[i], -ECANCELED, &err);
        }
        msb_error_clear(&err);
}

size_t pull_manager_n_pulls(const PullManager *m) {
        size_t n = 0;

        for (PullOp *op = m ? m->ops : NULL; op; op = op->next)
                n++;
        return n;
}

bool pull_manager_has_op(const PullManager *m, const PullOp *op) {
        for (PullOp *o = m->ops; o; o = o->next)
                if (o == op)
                        return true;
        return false;
}

bool pull_manager_converted(const PullManager *m, const char *diff_id) {
        for (size_t i = 0; i < PULL_CONVERTED_MEMORY; i++)
                if (m->converted[i] && streq(m->converted[i], diff_id))
                        return true;
        return false;
}

void pull_manager_remember_converted(PullManager *m, const char *diff_id) {
        char *copy;

        if (pull_manager_converted(m, diff_id) || !(copy = strdup(diff_id)))
                return;
        free(m->converted[m->converted_next]);
        m->converted[m->converted_next] = copy;
        m->converted_next = (m->converted_next + 1) % PULL_CONVERTED_MEMORY;
}

void pull_manager_forget_converted(PullManager *m, const char *diff_id) {
        for (size_t i = 0; i < PULL_CONVERTED_MEMORY; i++)
                if (m->converted[i] && streq(m->converted[i], diff_id))
                        m->converted[i] = (free(m->converted[i]), NULL);
}

/* Starting a pull. */

const char *pull_request_tag(const PullRequest *q) {
        return q && q->tag[0] ? q->tag : "pull";
}

static bool platform_matches(const json_t *handle, const OciPlatform *want) {
        return streq_ptr(json_string_value(json_object_get(handle, "os")), want->os) &&
               streq_ptr(json_string_value(json_object_get(handle, "architecture")), want->architecture);
}

static int pull_check_policy(const char *policy, MsbError *err) {
        if (streq(policy, "if-missing") || streq(policy, "always") || streq(policy, "never"))
                return 0;
        return msb_error_invalid_param(err, "policy", "unknown pull policy \"%s\"", policy);
}

/* The platform a pull wants: the caller's, or linux and the host's
 * architecture. */
static int pull_want_platform(const char *platform, OciPlatform *ret, MsbError *err) {
        OciPlatform host;

        if (platform) {
                if (oci_platform_parse(platform, ret) >= 0)
                        return 0;
                return msb_error_invalid_param(err, "platform", "platform \"%s\" is not os/architecture[/variant]",
                                               platform);
        }
        oci_host_platform(&host);
        ret->os = strdup(host.os);
        ret->architecture = strdup(host.architecture);
        if (!ret->os || !ret->architecture) {
                oci_platform_done(ret);
                return -ENOMEM;
        }
        return 0;
}

/* The cache first, on the loop's read connection: a hit costs no network
 * and no worker round trip beyond marking it used. Returns 1 when q is
 * answered from the cache (q then travels with the work item that marks
 * the reference used, and so does the handle), 0 when the cache has no
 * image for the caller. */
static int pull_try_cache(PullManager *m, const Reference *ref, const OciPlatform *want, bool any_platform,
                          PullRequest *q) {
        /* By name only: pulling "abcdef123456" names a repository. */
        ImageSpec by_name = image_spec_borrow(ref);
        json_auto_t *cached = NULL;
        MsbError lookup_err = {};
        int r;

        r = store_reader_image_get(m->reader, &by_name, &cached, &lookup_err);
        msb_error_clear(&lookup_err);
        if (r < 0 || (!any_platform && !platform_matches(cached, want)))
                return 0;
        const char *reference = json_string_value(json_object_get(cached, "reference"));
        pull_manager_new_tag(m, q->tag);
        log_info("%s %s: answered from the cache", q->tag, ref->canonical);
        r = pull_work_queue(m, NULL, WORK_TOUCH, 0, reference, q, TAKE_PTR(cached));
        return r < 0 ? r : 1;
}

/* The pull in flight of key that a new caller can join, or NULL. */
static PullOp *pull_find_op(const PullManager *m, const char *key) {
        for (PullOp *op = m->ops; op; op = op->next)
                if (!op->failed && streq(op->key, key))
                        return op;
        return NULL;
}

int pull_start(PullManager *m, const Reference *ref, const char *policy, const char *platform,
               PullProgressFn progress, PullDoneFn done, void *userdata, PullRequest **ret, MsbError *err) {
        _cleanup_(pull_request_freep) PullRequest *q = NULL;
        _cleanup_(oci_platform_done) OciPlatform want = {};
        _cleanup_free_ char *key = NULL;
        PullOp *op;
        int r;

        if (!m || !ref || !done || !ret)
                return -EINVAL;
        if (m->shutting_down)
                return msb_error_set(err, -ECANCELED, PROTO_ERROR_SHUTTING_DOWN, "the daemon is shutting down");
        if (!policy)
                policy = "if-missing";
        r = pull_check_policy(policy, err);
        if (r < 0)
                return r;
        r = pull_want_platform(platform, &want, err);
        if (r < 0)
                return r;
        r = pull_request_new(m, progress, done, userdata, &q);
        if (r < 0)
                return r;

        if (!streq(policy, "always")) {
                r = pull_try_cache(m, ref, &want, !platform, q);
                if (r < 0)
                        return r;
                if (r > 0) {
                        *ret = TAKE_PTR(q);
                        return 0;
                }
                if (streq(policy, "never")) {
                        msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND, "no cached image %s",
                                      ref->canonical);
                        msb_error_add_data(err, "reference", json_string(ref->canonical));
                        return -ENOENT;
                }
        }

        /* Two pulls of one reference for one platform are one pull. */
        if (asprintf(&key, "%s|%s/%s/%s", ref->canonical, want.os, want.architecture, want.variant ?: "") < 0)
                return -ENOMEM;
        op = pull_find_op(m, key);
        if (!op) {
                r = pull_op_new(m, ref, &key, &want, &op, err);
                if (r < 0)
                        return r;
        } else
                log_info("%s %s: one more caller waits for it", op->tag, op->ref->canonical);
        pull_request_join(op, q);
        *ret = TAKE_PTR(q);
        return 0;
}
