/* SPDX-License-Identifier: Apache-2.0 */

/*
 * libmsbimage against a peer that misbehaves at the byte level, as a broken
 * or hostile daemon might (in the spirit of redis' tests/unit/protocol.tcl):
 * an answer longer than MSB_CLIENT_RESPONSE_MAX_BYTES, text that is not
 * JSON, an answer to another id, a result of the wrong shape, silence, a
 * connection closed mid-line, answers split into single bytes, and progress
 * notifications interleaved before the answer. The well-behaved side of
 * every call is tested against the real daemon in test_libmsbimage.c.
 *
 * The peer is a child process on a real Unix socket: it reads one request
 * line, checks it is a JSON-RPC 2.0 request for the expected method, and
 * writes the scripted bytes.
 */

#include <check.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "msbimage.h"

typedef enum PeerMode {
        PEER_WRITE,          /* write the script at once */
        PEER_WRITE_BYTEWISE, /* one byte per write */
        PEER_OVERSIZED,      /* MSB_CLIENT_RESPONSE_MAX_BYTES + 1 bytes, no newline */
        PEER_SILENT,         /* read the request, answer nothing */
        PEER_WRITE_CLOSE,    /* write the script, then hang up at once */
        PEER_BIG_TWICE,      /* answer two requests, each with a 2 MiB string */
        PEER_CANCEL,         /* expect rpc.cancel for request 1, then write the script */
        PEER_CANCEL_SILENT,  /* expect rpc.cancel for request 1, answer nothing */
} PeerMode;

/* Larger than the buffer a client keeps between calls (1 MiB). */
#define PEER_BIG_BYTES (2 * 1024 * 1024)

typedef struct Peer {
        char dir[64];
        char path[96];
        pid_t pid;
} Peer;

/* Reads one line of the client and parses it (NULL: not JSON, or EOF). */
static json_t *read_message(int fd) {
        char buf[4096];
        size_t n = 0;

        while (n < sizeof(buf) - 1) {
                ssize_t k = read(fd, buf + n, 1);
                if (k <= 0)
                        return NULL;
                if (buf[n++] == '\n')
                        break;
        }
        buf[n] = '\0';
        return json_loads(buf, 0, NULL);
}

static int read_request(int fd, const char *method, json_int_t id) {
        json_t *req = read_message(fd);
        int ok = req && strcmp(json_string_value(json_object_get(req, "jsonrpc")) ?: "", "2.0") == 0 &&
                 json_integer_value(json_object_get(req, "id")) == id &&
                 strcmp(json_string_value(json_object_get(req, "method")) ?: "", method) == 0;

        json_decref(req);
        return ok ? 0 : -1;
}

/* Reads one line: an rpc.cancel notification for request id. */
static int read_cancel(int fd, json_int_t id) {
        json_t *req = read_message(fd);
        int ok = req && !json_object_get(req, "id") &&
                 strcmp(json_string_value(json_object_get(req, "method")) ?: "", "rpc.cancel") == 0 &&
                 json_integer_value(json_object_get(json_object_get(req, "params"), "id")) == id;

        json_decref(req);
        return ok ? 0 : -1;
}

static void write_all(int fd, const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k <= 0)
                        _exit(3);
                p += k;
                n -= (size_t) k;
        }
}

static void peer_serve(int listen_fd, const char *method, PeerMode mode, const char *script) {
        char drain[256];
        int fd = accept(listen_fd, NULL, NULL);

        if (fd < 0)
                _exit(1);
        if (read_request(fd, method, 1) < 0)
                _exit(2);
        switch (mode) {
        case PEER_WRITE:
                write_all(fd, script, strlen(script));
                break;
        case PEER_WRITE_BYTEWISE:
                for (const char *p = script; *p; p++) {
                        write_all(fd, p, 1);
                        usleep(100);
                }
                break;
        case PEER_OVERSIZED: {
                size_t chunk = 1 << 20, left = MSB_CLIENT_RESPONSE_MAX_BYTES + 1;
                char *junk = malloc(chunk);
                memset(junk, 'x', chunk);
                /* The client hangs up once it has seen too much; a write
                 * failing then is the expected end. */
                signal(SIGPIPE, SIG_IGN);
                while (left > 0) {
                        size_t n = left < chunk ? left : chunk;
                        ssize_t k = write(fd, junk, n);
                        if (k <= 0)
                                break;
                        left -= (size_t) k;
                }
                free(junk);
                break;
        }
        case PEER_SILENT:
                break;
        case PEER_CANCEL:
        case PEER_CANCEL_SILENT:
                if (read_cancel(fd, 1) < 0)
                        _exit(4);
                if (mode == PEER_CANCEL)
                        write_all(fd, script, strlen(script));
                break;
        case PEER_WRITE_CLOSE:
                write_all(fd, script, strlen(script));
                _exit(0);
        case PEER_BIG_TWICE:
                for (json_int_t id = 1; id <= 2; id++) {
                        char *big = malloc(PEER_BIG_BYTES + 1);
                        memset(big, 'x', PEER_BIG_BYTES);
                        big[PEER_BIG_BYTES] = '\0';
                        if (id == 2 && read_request(fd, method, 2) < 0)
                                _exit(2);
                        json_t *answer = json_pack("{s:s, s:I, s:s}", "jsonrpc", "2.0", "id", id, "result", big);
                        char *text = json_dumps(answer, JSON_COMPACT);
                        write_all(fd, text, strlen(text));
                        write_all(fd, "\n", 1);
                        free(text);
                        json_decref(answer);
                        free(big);
                }
                break;
        }
        /* Wait for the client to hang up, so it reads everything first. */
        while (read(fd, drain, sizeof(drain)) > 0)
                ;
        _exit(0);
}

static void peer_start(Peer *p, const char *method, PeerMode mode, const char *script) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        snprintf(p->dir, sizeof(p->dir), "/tmp/msbp-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(p->dir));
        snprintf(p->path, sizeof(p->path), "%s/peer.sock", p->dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fd, 1), 0);
        p->pid = fork();
        ck_assert_int_ge(p->pid, 0);
        if (p->pid == 0)
                peer_serve(fd, method, mode, script);
        close(fd);
}

/* Reaps the peer and asserts it saw a well-formed request. */
static void peer_finish(Peer *p) {
        int status;

        ck_assert_int_eq(waitpid(p->pid, &status, 0), p->pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "peer exited with %d", status);
        unlink(p->path);
        rmdir(p->dir);
}

static MsbClient *connect_peer(const Peer *p) {
        MsbClient *c = NULL;
        ck_assert_int_eq(msb_client_connect(p->path, &c), 0);
        return c;
}

START_TEST(test_response_too_long) {
        MsbImageList *list = NULL;
        Peer p;

        peer_start(&p, "image.list", PEER_OVERSIZED, NULL);
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_list(c, &list), -EMSGSIZE);
        ck_assert_ptr_null(list);
        ck_assert(!msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_response_not_json) {
        MsbImageList *list = NULL;
        Peer p;

        peer_start(&p, "image.list", PEER_WRITE, "this is not json\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_list(c, &list), -EPROTO);
        ck_assert(!msb_client_is_connected(c));
        ck_assert_int_eq(msb_client_image_list(c, &list), -ENOTCONN);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_response_wrong_id) {
        char *out = NULL;
        Peer p;

        peer_start(&p, "image.list", PEER_WRITE, "{\"jsonrpc\":\"2.0\",\"id\":999,\"result\":[]}\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_call(c, "image.list", NULL, &out), -EPROTO);
        ck_assert_ptr_null(out);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_response_not_jsonrpc_2) {
        char *out = NULL;
        Peer p;

        peer_start(&p, "image.list", PEER_WRITE, "{\"jsonrpc\":\"1.0\",\"id\":1,\"result\":[]}\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_call(c, "image.list", NULL, &out), -EPROTO);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_result_wrong_shape) {
        MsbImageList *list = NULL;
        Peer p;

        /* An ImageHandle without its required layer_count. */
        peer_start(&p, "image.list", PEER_WRITE,
                   "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[{\"reference\":\"a\",\"manifest_digest\":null,"
                   "\"architecture\":null,\"os\":null,\"size_bytes\":null,\"created_at\":null,"
                   "\"last_used_at\":null}]}\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_list(c, &list), -EPROTO);
        ck_assert_ptr_null(list);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_item_json_as_sent) {
        static const char item0[] =
                "{\"reference\":\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\xc3\xa9\xe2\x80\xa8\","
                "\"manifest_digest\":null,\"architecture\":\"amd64\",\"os\":\"linux\",\"layer_count\":-9223372036854775807,"
                "\"size_bytes\":0,\"created_at\":9223372036854775807,\"last_used_at\":null,"
                "\"k\\u00e9y\\n\":true,\"f\":false}";
        static const char item1[] =
                "{\"reference\":\"b\",\"manifest_digest\":null,\"architecture\":null,\"os\":null,"
                "\"layer_count\":1,\"size_bytes\":null,\"created_at\":1.5,\"last_used_at\":null,"
                "\"extra\":{\"x\":[1]}}";
        static const char item2[] =
                "{\"reference\":\"\",\"manifest_digest\":null,\"architecture\":null,\"os\":null,"
                "\"layer_count\":0,\"size_bytes\":null,\"created_at\":null,\"last_used_at\":null}";
        char result[sizeof(item0) + sizeof(item1) + sizeof(item2) + 8], answer[sizeof(result) + 64];
        MsbImageList *list = NULL;
        Peer p;

        /* Each item's json, and the list's, is its text exactly as the
         * daemon sent it (msbimage.h), whatever escapes it chose: strings
         * with every kind of escape, UTF-8, a slash, DEL, an extra boolean,
         * a nested member and a real. */
        snprintf(result, sizeof(result), "[%s,%s,%s]", item0, item1, item2);
        snprintf(answer, sizeof(answer), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":%s}\n", result);
        peer_start(&p, "image.list", PEER_WRITE, answer);
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_list(c, &list), 0);
        ck_assert_uint_eq(list->n_images, 3);
        ck_assert_str_eq(list->json, result);
        ck_assert_str_eq(list->images[0].json, item0);
        ck_assert_str_eq(list->images[1].json, item1);
        ck_assert_str_eq(list->images[2].json, item2);
        ck_assert_str_eq(list->images[0].reference, "a\"b\\c/d\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\xe2\x80\xa8");
        ck_assert_str_eq(list->images[0].os, "linux");
        ck_assert_ptr_null(list->images[0].manifest_digest);
        ck_assert_int_eq(list->images[0].layer_count, -9223372036854775807LL);
        ck_assert_int_eq(list->images[0].size_bytes, 0);
        ck_assert_int_eq(list->images[0].created_at, 9223372036854775807LL);
        ck_assert_int_eq(list->images[0].last_used_at, MSB_NULL_INT);
        ck_assert_int_eq(list->images[1].created_at, 1);
        ck_assert_int_eq(list->images[1].size_bytes, MSB_NULL_INT);
        ck_assert_str_eq(list->images[2].reference, "");
        msb_image_list_free(list);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_nullable_fields) {
        MsbImage *im = NULL;
        Peer p;

        /* Every nullable member null, times as reals: all accepted. */
        peer_start(&p, "image.get", PEER_WRITE,
                   "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"reference\":\"example.com/a:1\","
                   "\"manifest_digest\":null,\"architecture\":null,\"os\":null,\"layer_count\":0,"
                   "\"size_bytes\":null,\"created_at\":1700000000123.75,\"last_used_at\":null}}\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_get(c, "example.com/a:1", &im), 0);
        ck_assert_str_eq(im->reference, "example.com/a:1");
        ck_assert_ptr_null(im->manifest_digest);
        ck_assert_ptr_null(im->architecture);
        ck_assert_ptr_null(im->os);
        ck_assert_int_eq(im->size_bytes, MSB_NULL_INT);
        ck_assert_int_eq(im->created_at, 1700000000123);
        ck_assert_int_eq(im->last_used_at, MSB_NULL_INT);
        msb_image_free(im);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_error_without_data) {
        MsbImage *im = NULL;
        Peer p;

        peer_start(&p, "image.get", PEER_WRITE,
                   "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32000,\"message\":\"odd\"}}\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_get(c, "example.com/a:1", &im), -MSB_EREMOTE);
        const MsbClientError *e = msb_client_last_error(c);
        ck_assert_int_eq(e->code, -32000);
        ck_assert_str_eq(e->message, "odd");
        ck_assert_ptr_null(e->name);
        ck_assert_ptr_null(e->data_json);
        ck_assert(msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_closed_mid_line) {
        MsbSystemInfo *info = NULL;
        Peer p;

        peer_start(&p, "system.info", PEER_WRITE_CLOSE, "{\"jsonrpc\":\"2.0\",\"id\":1,\"res");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_system_info(c, &info), -ECONNRESET);
        ck_assert(!msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_partial_line_times_out) {
        MsbSystemInfo *info = NULL;
        Peer p;

        /* Half an answer and then nothing: the timeout bounds the wait. */
        peer_start(&p, "system.info", PEER_WRITE, "{\"jsonrpc\":\"2.0\",\"id\":1,\"res");
        MsbClient *c = connect_peer(&p);
        msb_client_set_timeout(c, 300);
        ck_assert_int_eq(msb_client_system_info(c, &info), -ETIMEDOUT);
        ck_assert(!msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_silent_peer_times_out) {
        MsbImageList *list = NULL;
        Peer p;

        peer_start(&p, "image.list", PEER_SILENT, NULL);
        MsbClient *c = connect_peer(&p);
        msb_client_set_timeout(c, 200);
        ck_assert_int_eq(msb_client_image_list(c, &list), -ETIMEDOUT);
        ck_assert(!msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_answer_split_bytewise) {
        MsbPinList *pins = NULL;
        Peer p;

        peer_start(&p, "pin.list", PEER_WRITE_BYTEWISE,
                   "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":[{\"kind\":\"sandbox\",\"name\":\"n\","
                   "\"reference\":\"example.com/a:1\",\"manifest_digest\":\"sha256:00\",\"created_at\":5}]}\n");
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_pin_list(c, &pins), 0);
        ck_assert_uint_eq(pins->n_pins, 1);
        ck_assert_str_eq(pins->pins[0].name, "n");
        ck_assert_int_eq(pins->pins[0].created_at, 5);
        msb_pin_list_free(pins);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_big_answers_in_a_row) {
        char *out = NULL;
        Peer p;

        peer_start(&p, "rpc.discover", PEER_BIG_TWICE, NULL);
        MsbClient *c = connect_peer(&p);
        for (int i = 0; i < 2; i++) {
                ck_assert_int_eq(msb_client_call(c, "rpc.discover", NULL, &out), 0);
                ck_assert_uint_eq(strlen(out), PEER_BIG_BYTES + 2);
                ck_assert_int_eq(out[0], '"');
                ck_assert_int_eq(out[PEER_BIG_BYTES], 'x');
                free(out);
        }
        ck_assert(msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

typedef struct Seen {
        int n;
        MsbPullEvent events[8];
        int64_t downloaded;
        int abort_at; /* 0: never */
} Seen;

static int on_progress(const MsbPullProgress *p, void *userdata) {
        Seen *s = userdata;

        if (s->n < 8)
                s->events[s->n] = p->event;
        s->n++;
        if (p->event == MSB_PULL_LAYER_DOWNLOAD)
                s->downloaded = p->downloaded_bytes;
        if (s->abort_at > 0 && s->n == s->abort_at)
                return -ECANCELED;
        return 0;
}

#define PROGRESS(id, rest) \
        "{\"jsonrpc\":\"2.0\",\"method\":\"image.pull.progress\",\"params\":{\"id\":" #id "," rest "}}\n"

static const char pull_script[] =
        PROGRESS(1, "\"event\":\"resolving\",\"reference\":\"example.com/a:1\"")
        PROGRESS(7, "\"event\":\"resolving\",\"reference\":\"someone-else\"")
        "{\"jsonrpc\":\"2.0\",\"method\":\"something.else\",\"params\":{}}\n"
        PROGRESS(1, "\"event\":\"layer-download\",\"position\":0,\"digest\":\"sha256:aa\","
                    "\"downloaded_bytes\":10,\"total_bytes\":20")
        PROGRESS(1, "\"event\":\"brand-new-event\"")
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"reference\":\"example.com/a:1\",\"manifest_digest\":"
        "\"sha256:bb\",\"architecture\":\"amd64\",\"os\":\"linux\",\"layer_count\":1,\"size_bytes\":20,"
        "\"created_at\":1,\"last_used_at\":2}}\n";

START_TEST(test_pull_progress_interleaved) {
        Seen seen = {};
        MsbImage *im = NULL;
        Peer p;

        peer_start(&p, "image.pull", PEER_WRITE, pull_script);
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_pull(c, "example.com/a:1", NULL, on_progress, &seen, &im), 0);
        /* Only the notifications about our request id reach the callback. */
        ck_assert_int_eq(seen.n, 3);
        ck_assert_int_eq(seen.events[0], MSB_PULL_RESOLVING);
        ck_assert_int_eq(seen.events[1], MSB_PULL_LAYER_DOWNLOAD);
        ck_assert_int_eq(seen.events[2], MSB_PULL_UNKNOWN);
        ck_assert_int_eq(seen.downloaded, 10);
        ck_assert_str_eq(im->manifest_digest, "sha256:bb");
        msb_image_free(im);
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

START_TEST(test_pull_progress_abort) {
        Seen seen = { .abort_at = 2 };
        MsbImage *im = NULL;
        Peer p;

        peer_start(&p, "image.pull", PEER_WRITE, pull_script);
        MsbClient *c = connect_peer(&p);
        ck_assert_int_eq(msb_client_image_pull(c, "example.com/a:1", NULL, on_progress, &seen, &im), -ECANCELED);
        ck_assert_ptr_null(im);
        ck_assert(!msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
}
END_TEST

static const char cancel_script[] =
        "{\"jsonrpc\":\"2.0\",\"method\":\"image.pull.progress\",\"params\":{\"id\":1,\"event\":\"resolving\"}}\n"
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1016,\"message\":\"the pull was cancelled by its "
        "caller\",\"data\":{\"name\":\"shutting-down\"}}}\n";

START_TEST(test_cancel_fd) {
        MsbImage *im = NULL;
        int pipe_fds[2];
        Peer p;

        /* Readable from the start: the request goes, then rpc.cancel for it;
         * the answer keeps the connection in step. */
        ck_assert_int_eq(pipe(pipe_fds), 0);
        ck_assert_int_eq(write(pipe_fds[1], "x", 1), 1);
        peer_start(&p, "image.pull", PEER_CANCEL, cancel_script);
        MsbClient *c = connect_peer(&p);
        msb_client_set_cancel_fd(c, pipe_fds[0]);
        ck_assert_int_eq(msb_client_image_pull(c, "example.com/a:1", NULL, NULL, NULL, &im), -ECANCELED);
        ck_assert_ptr_null(im);
        ck_assert(msb_client_is_connected(c));
        ck_assert_ptr_null(msb_client_last_error(c));
        msb_client_free(c);
        peer_finish(&p);

        /* No answer to the cancelled call within MSB_CLIENT_CANCEL_WAIT_MS:
         * the connection is closed. */
        peer_start(&p, "image.pull", PEER_CANCEL_SILENT, NULL);
        c = connect_peer(&p);
        msb_client_set_cancel_fd(c, pipe_fds[0]);
        ck_assert_int_eq(msb_client_image_pull(c, "example.com/a:1", NULL, NULL, NULL, &im), -ECANCELED);
        ck_assert(!msb_client_is_connected(c));
        msb_client_free(c);
        peer_finish(&p);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("libmsbimage-protocol");
        TCase *tc = tcase_create("peer");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_response_too_long);
        tcase_add_test(tc, test_response_not_json);
        tcase_add_test(tc, test_response_wrong_id);
        tcase_add_test(tc, test_item_json_as_sent);
        tcase_add_test(tc, test_response_not_jsonrpc_2);
        tcase_add_test(tc, test_result_wrong_shape);
        tcase_add_test(tc, test_nullable_fields);
        tcase_add_test(tc, test_error_without_data);
        tcase_add_test(tc, test_closed_mid_line);
        tcase_add_test(tc, test_partial_line_times_out);
        tcase_add_test(tc, test_silent_peer_times_out);
        tcase_add_test(tc, test_answer_split_bytewise);
        tcase_add_test(tc, test_big_answers_in_a_row);
        tcase_add_test(tc, test_pull_progress_interleaved);
        tcase_add_test(tc, test_pull_progress_abort);
        tcase_add_test(tc, test_cancel_fd);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
