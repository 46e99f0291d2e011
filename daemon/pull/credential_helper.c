/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A Docker credential helper run as a child process on the event loop
 * (credential_helper.h): the server's address to its stdin, its answer read
 * from its stdout through a pipe, a timer bounding it. libuv reaps the
 * process; every handle is closed before the run's memory goes.
 */
#include <jansson.h>
#include <signal.h>

#include "credential_helper.h"

struct CredentialHelperRun {
        uv_process_t process;
        uv_pipe_t in;  /* the helper's stdin: the server, then EOF */
        uv_pipe_t out; /* the helper's stdout: its answer */
        uv_timer_t timer;
        uv_write_t write;
        unsigned open_handles;
        bool spawned;
        bool exited;
        bool output_done;    /* EOF, an error, or we stopped reading */
        int64_t exit_status;
        int term_signal;
        int failure;         /* our own verdict (timeout, too much output), 0 while none */
        char program[sizeof("docker-credential-") + CREDENTIAL_HELPER_NAME_MAX];
        char why[256];
        char *server;
        char *output;        /* CREDENTIAL_HELPER_OUTPUT_MAX_BYTES + 1, to see one byte too many */
        size_t n_output;
        CredentialHelperDoneFn done; /* NULL once reported or cancelled */
        void *userdata;
};

bool credential_helper_name_is_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;

        if (n == 0 || n > CREDENTIAL_HELPER_NAME_MAX)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      strchr("._-", *p)))
                        return false;
        return true;
}

static void run_free(CredentialHelperRun *run) {
        if (run->output) {
                explicit_bzero(run->output, CREDENTIAL_HELPER_OUTPUT_MAX_BYTES + 1);
                free(run->output);
        }
        free(run->server);
        free(run);
}

static void run_handle_closed(uv_handle_t *h) {
        CredentialHelperRun *run = h->data;

        if (--run->open_handles == 0)
                run_free(run);
}

static void run_close(CredentialHelperRun *run, uv_handle_t *h) {
        if (!uv_is_closing(h))
                uv_close(h, run_handle_closed);
}

/* Everything but the process, which is closed once it has exited (so that
 * libuv reaps it). */
static void run_close_io(CredentialHelperRun *run) {
        uv_timer_stop(&run->timer);
        run_close(run, (uv_handle_t *) &run->timer);
        run_close(run, (uv_handle_t *) &run->in);
        run_close(run, (uv_handle_t *) &run->out);
}

static void run_kill(CredentialHelperRun *run) {
        if (run->spawned && !run->exited)
                (void) uv_process_kill(&run->process, SIGKILL);
}

/* Reads {"Username", "Secret"} out of a successful answer. */
static int run_parse(CredentialHelperRun *run, char **ret_user, char **ret_secret) {
        json_auto_t *j = json_loadb(run->output, run->n_output, 0, NULL);
        const char *user = json_string_value(json_object_get(j, "Username"));
        const char *secret = json_string_value(json_object_get(j, "Secret"));

        if (!user || !secret || !secret[0]) {
                snprintf(run->why, sizeof(run->why), "%s answered something other than {Username, Secret}",
                         run->program);
                return -EBADMSG;
        }
        /* A Username of "<token>" (REGISTRY_IDENTITY_TOKEN_USER) makes the
         * Secret an identity token, which the registry client exchanges at
         * the token server: passed on as it is. */
        *ret_user = strdup(user);
        *ret_secret = strdup(secret);
        if (!*ret_user || !*ret_secret) {
                free(*ret_user);
                free(*ret_secret);
                return -ENOMEM;
        }
        return 0;
}

/* What the helper's exit means: credentials, none for this server, or a
 * failure. */
static int run_verdict(CredentialHelperRun *run, char **ret_user, char **ret_secret) {
        if (run->failure < 0)
                return run->failure;
        if (run->term_signal != 0) {
                snprintf(run->why, sizeof(run->why), "%s was killed by signal %d", run->program, run->term_signal);
                return -EIO;
        }
        if (run->exit_status != 0) {
                /* The helpers' protocol: "credentials not found in native
                 * keychain" on stdout, and a non-zero status. */
                run->output[run->n_output] = '\0';
                if (strstr(run->output, "credentials not found"))
                        return -ENOENT;
                snprintf(run->why, sizeof(run->why), "%s exited with status %" PRId64, run->program,
                         run->exit_status);
                return -EIO;
        }
        return run_parse(run, ret_user, ret_secret);
}

/* Reports once there is something to report: our own verdict at once, the
 * helper's once it has exited and its output is read. */
static void run_maybe_finish(CredentialHelperRun *run) {
        _cleanup_free_ char *user = NULL, *secret = NULL;
        CredentialHelperDoneFn done = run->done;
        int r;

        if (!done || (run->failure == 0 && !(run->exited && run->output_done)))
                return;
        run->done = NULL;
        r = run_verdict(run, &user, &secret);
        explicit_bzero(run->output, CREDENTIAL_HELPER_OUTPUT_MAX_BYTES + 1);
        run_kill(run);
        run_close_io(run);
        done(r, user, secret, run->why, run->userdata);
        if (secret)
                explicit_bzero(secret, strlen(secret));
}

static void run_fail(CredentialHelperRun *run, int r) {
        if (run->failure == 0)
                run->failure = r;
        run_kill(run);
        run_maybe_finish(run);
}

static void run_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal) {
        CredentialHelperRun *run = p->data;

        run->exited = true;
        run->exit_status = exit_status;
        run->term_signal = term_signal;
        run_close(run, (uv_handle_t *) &run->process);
        run_maybe_finish(run);
}

static void run_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
        CredentialHelperRun *run = h->data;

        *buf = uv_buf_init(run->output + run->n_output,
                           (unsigned) (CREDENTIAL_HELPER_OUTPUT_MAX_BYTES + 1 - run->n_output));
}

static void run_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
        CredentialHelperRun *run = s->data;

        if (n > 0) {
                run->n_output += (size_t) n;
                if (run->n_output <= CREDENTIAL_HELPER_OUTPUT_MAX_BYTES)
                        return;
                snprintf(run->why, sizeof(run->why), "%s wrote more than %" PRIu64 " bytes", run->program,
                         (uint64_t) CREDENTIAL_HELPER_OUTPUT_MAX_BYTES);
                run->n_output = CREDENTIAL_HELPER_OUTPUT_MAX_BYTES;
                run->output_done = true;
                uv_read_stop(s);
                return run_fail(run, -EMSGSIZE);
        }
        if (n == 0)
                return;
        /* UV_EOF, or an error: the answer is what came so far. */
        run->output_done = true;
        uv_read_stop(s);
        run_maybe_finish(run);
}

static void run_write_cb(uv_write_t *w, int status) {
        CredentialHelperRun *run = w->data;

        /* EOF on its stdin tells the helper the address is complete. A
         * write error (the helper exited without reading) is for its exit
         * status to explain. */
        run_close(run, (uv_handle_t *) &run->in);
}

static void run_timer_cb(uv_timer_t *t) {
        CredentialHelperRun *run = t->data;

        snprintf(run->why, sizeof(run->why), "%s did not answer within %" PRIu64 " ms", run->program,
                 (uint64_t) CREDENTIAL_HELPER_TIMEOUT_MS);
        run_fail(run, -ETIMEDOUT);
}

static int run_init_handles(uv_loop_t *loop, CredentialHelperRun *run) {
        int r;

        r = uv_timer_init(loop, &run->timer);
        if (r < 0)
                return r;
        run->open_handles++;
        r = uv_pipe_init(loop, &run->in, 0);
        if (r < 0)
                return r;
        run->open_handles++;
        r = uv_pipe_init(loop, &run->out, 0);
        if (r < 0)
                return r;
        run->open_handles++;
        run->timer.data = run->in.data = run->out.data = run->process.data = run->write.data = run;
        return 0;
}

static int run_spawn(uv_loop_t *loop, CredentialHelperRun *run) {
        char *args[] = { run->program, (char *) "get", NULL };
        uv_stdio_container_t stdio[3] = {
                { .flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *) &run->in },
                { .flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *) &run->out },
                { .flags = UV_IGNORE },
        };
        uv_process_options_t o = {
                .exit_cb = run_exit_cb,
                .file = run->program, /* found through PATH, as execvp(3) does */
                .args = args,
                .stdio_count = ELEMENTSOF(stdio),
                .stdio = stdio,
        };
        int r;

        r = uv_spawn(loop, &run->process, &o);
        /* The handle is initialised even when the spawn failed. */
        run->open_handles++;
        if (r < 0) {
                run_close(run, (uv_handle_t *) &run->process);
                return r;
        }
        run->spawned = true;
        return 0;
}

int credential_helper_run(uv_loop_t *loop, const char *helper, const char *server, CredentialHelperDoneFn done,
                          void *userdata, CredentialHelperRun **ret) {
        CredentialHelperRun *run;
        uv_buf_t buf;
        int r;

        if (!loop || !credential_helper_name_is_valid(helper) || !server || !done || !ret)
                return -EINVAL;
        run = calloc(1, sizeof(*run));
        if (!run)
                return -ENOMEM;
        snprintf(run->program, sizeof(run->program), "docker-credential-%s", helper);
        run->done = done;
        run->userdata = userdata;
        run->server = strdup(server);
        run->output = malloc(CREDENTIAL_HELPER_OUTPUT_MAX_BYTES + 1);
        if (!run->server || !run->output) {
                run_free(run);
                return -ENOMEM;
        }

        r = run_init_handles(loop, run);
        if (r >= 0)
                r = run_spawn(loop, run);
        if (r >= 0)
                r = uv_read_start((uv_stream_t *) &run->out, run_alloc_cb, run_read_cb);
        if (r >= 0) {
                buf = uv_buf_init(run->server, (unsigned) strlen(run->server));
                r = uv_write(&run->write, (uv_stream_t *) &run->in, &buf, 1, run_write_cb);
        }
        if (r >= 0)
                r = uv_timer_start(&run->timer, run_timer_cb, CREDENTIAL_HELPER_TIMEOUT_MS, 0);
        if (r < 0) {
                run->done = NULL;
                run_kill(run);
                run_close_io(run);
                if (run->open_handles == 0)
                        run_free(run);
                return r;
        }
        *ret = run;
        return 0;
}

CredentialHelperRun *credential_helper_cancel(CredentialHelperRun *run) {
        if (!run || !run->done)
                return NULL;
        run->done = NULL;
        run_kill(run);
        run_close_io(run);
        return NULL;
}
