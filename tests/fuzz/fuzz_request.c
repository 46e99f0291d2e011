/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for the JSON-RPC request path as the server drives it: bytes
 * arrive in reads of varying sizes, go through a LineBuffer with the
 * server's line limit, and each line goes to rpc_handle_line() with the
 * daemon's real method table (its names, modes and param tables, which
 * rpc_new() checks against proto/). Only the handlers are stubs, since a
 * store, a registry and a pull manager are not what is fuzzed here: each
 * answers from the params it was given, {"method": NAME, "params": WHAT IT
 * DECODED}, on the thread its mode runs it on (the loop, the worker pool,
 * or later for the deferred image.pull, which first sends a progress
 * notification). A string param that starts with "!" makes a handler fail
 * instead: image-not-found naming the string, or for "!!" a bare -EIO that
 * must reach the client as internal-error. rpc.cancel's stub cancels as the
 * real one does.
 *
 * The peer is a fake connection (RpcPeerOps) that counts every answer byte
 * reserved, released and sent, holds the lines sent until it "writes" them
 * (every few lines, like a slow reader), stops reading while rpc has it
 * paused, and enforces an answer limit the input chooses, as the server does.
 *
 * The oracle does not re-derive params validation. It checks what JSON-RPC
 * 2.0 and proto/openrpc.json promise whatever the params:
 *  - every line sent is one JSON text: a response, a non-empty array of
 *    responses, or a progress notification of a pull that was asked for;
 *  - a response has jsonrpc "2.0", an id, and one of result and error; an
 *    error has an integer code, a message and data.name, and the code is
 *    the one the document gives that name;
 *  - a request with an id gets exactly one answer with that id, a
 *    notification none, an unparsable line or a broken request one with id
 *    null; a batch's answers come as one array with one member per request
 *    that gets one, and no line when none does;
 *  - a success is the echo of what was sent (the right handler ran, with
 *    the params decoded as sent); method-not-found comes only for a method
 *    the document lacks, invalid-params names a param, shutting-down only
 *    for a method that does not run inline once rpc_shutdown() was called,
 *    and no such handler runs then;
 *  - every byte reserved is released or sent, with the exact length of the
 *    line sent; every hold is released; no call is left in flight.
 * Only when the connection closed (the answer limit crossed, or the input
 * asked to hang up) may answers go missing.
 *
 * Input: two control bytes, then the byte stream. The first: bits 0-1 the
 * answer limit (none, 4096, 1024, 256 bytes), bit 2 rpc shut down, bit 3
 * hang up at the end of the input with calls in flight, bit 4 handlers
 * answer with text (rpc_call_set_raw_result, or set_shared_result without
 * params), bit 5 a deferred call completes within its cancellation, bits
 * 6-7 the peer reads its answers every 1, 2, 4 or 8 lines. The second
 * seeds the read sizes.
 */

#include "daemon.h"
#include "framing.h"
#include "fuzz.h"
#include "log.h"
#include "rpc.h"

/* Slots for stub handlers: at least the daemon's number of methods. */
#define FUZZ_METHODS_MAX 24
/* Ids seen more often than this in one input are matched by count only:
 * matching answers to requests exactly costs their product. */
#define FUZZ_MATCH_GROUP_MAX 64
/* The limit error the fake peer gives, as the server names it. */
#define FUZZ_ANSWER_LIMIT_NAME "connection_pending_answer_bytes"

static const size_t answer_limits[] = { SIZE_MAX / 4, 4096, 1024, 256 };

/* ---- what the document says (the oracle's only source besides the spec) ---- */

static struct {
        json_t *doc;
        json_t *methods;       /* the document's */
        json_t *errors;        /* components.errors */
        json_t *notifications; /* x-notifications */
        size_t batch_max;      /* x-limits.batch_members */
} proto;

static json_t *doc_method(const char *name) {
        json_t *m;
        size_t i;

        json_array_foreach(proto.methods, i, m)
                if (name && streq(json_string_value(json_object_get(m, "name")), name))
                        return m;
        return NULL;
}

/* The schema type of a declared param, or NULL. */
static const char *doc_param_type(json_t *method, const char *key) {
        json_t *p;
        size_t i;

        json_array_foreach(json_object_get(method, "params"), i, p)
                if (streq(json_string_value(json_object_get(p, "name")), key))
                        return json_string_value(json_object_get(json_object_get(p, "schema"), "type")) ?: "";
        return NULL;
}

static bool doc_error_code(const char *name, json_int_t *ret) {
        const char *key;
        json_t *e;

        json_object_foreach(proto.errors, key, e)
                if (streq_ptr(json_string_value(json_object_get(json_object_get(e, "data"), "name")), name)) {
                        *ret = json_integer_value(json_object_get(e, "code"));
                        return true;
                }
        return false;
}

static bool doc_notification(const char *name) {
        json_t *n;
        size_t i;

        json_array_foreach(proto.notifications, i, n)
                if (streq_ptr(json_string_value(json_object_get(n, "name")), name))
                        return true;
        return false;
}

static void proto_load(void) {
        proto.doc = json_loadb(proto_openrpc_json, proto_openrpc_json_len, 0, NULL);
        FUZZ_CHECK(proto.doc);
        proto.methods = json_object_get(proto.doc, "methods");
        proto.errors = json_object_get(json_object_get(proto.doc, "components"), "errors");
        proto.notifications = json_object_get(proto.doc, "x-notifications");
        proto.batch_max = (size_t) json_integer_value(
                json_object_get(json_object_get(proto.doc, "x-limits"), "batch_members"));
        FUZZ_CHECK(json_array_size(proto.methods) > 0 && json_object_size(proto.errors) > 0 && proto.batch_max > 0);
}

/* ---- the run's state ---- */

typedef enum Pool {
        POOL_SINGLE, /* answered on a line of its own */
        POOL_BATCH,  /* answered as a member of a batch's array */
} Pool;

/* An answer some request is owed. */
typedef struct Expect {
        Pool pool;
        json_t *id;        /* the id the answer carries: the request's, or null */
        json_t *req;       /* the request, for a call; NULL when the answer must be an error */
        const char *must;  /* that error's name */
        const char *limit; /* for must "limit-exceeded": its data.limit */
        char *key;         /* pool and id as text, to group by */
} Expect;

/* An answer received. */
typedef struct Answer {
        Pool pool;
        json_t *resp;
        char *key;
} Answer;

typedef struct Deferred Deferred;
struct Deferred {
        RpcCall *call;
        json_t *result;
        bool cancelled;
        Deferred *prev, *next;
};

typedef struct Line {
        char *text;
        size_t bytes;
        bool last;
} Line;

typedef struct FakePeer {
        RpcPeer base;
        size_t limit;
        size_t held;       /* reserved and neither released nor written */
        Line *queue;       /* sent, not yet written */
        size_t n_queue;
        unsigned holds;
        bool open, closing, paused;
} FakePeer;

static struct {
        uv_loop_t loop;
        Rpc *rpc, *rpc_down; /* the second one shut down */
        RpcMethod methods[FUZZ_METHODS_MAX];
        char *shared_text[FUZZ_METHODS_MAX];

        /* This input's. */
        Rpc *cur;
        FakePeer peer;
        bool limited, down, raw, complete_on_cancel, lost;
        Deferred *deferred; /* oldest last */
        size_t n_deferred;
        Expect *expects;
        size_t n_expects;
        Answer *answers;
        size_t n_answers;
        size_t *batch_want, *batch_got; /* lengths of batch replies */
        size_t n_batch_want, n_batch_got;
        json_t *pull_ids; /* ids of the image.pull requests sent (null for notifications) */
} fz;

/* Appends to an array of n elements, doubling its room at each power of
 * two (an ASan realloc() always copies). */
#define FUZZ_PUSH(array, n, value)                                                         \
        do {                                                                               \
                if ((n) == 0 || ((n) & ((n) - 1)) == 0) {                                  \
                        (array) = realloc((array), 2 * ((n) ?: 1) * sizeof(*(array)));     \
                        FUZZ_CHECK(array);                                                 \
                }                                                                          \
                (array)[(n)++] = (value);                                                  \
        } while (0)

static char *id_key(Pool pool, json_t *id) {
        _cleanup_free_ char *text = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
        char *key;

        FUZZ_CHECK(text && asprintf(&key, "%d%s", (int) pool, text) >= 0);
        return key;
}

/* ---- expectations, from the requests by the spec (JSON-RPC 2.0 sections 4-6) ---- */

static void expect(Pool pool, json_t *id, json_t *req, const char *must, const char *limit) {
        Expect e = {
                .pool = pool,
                .id = json_incref(id ?: json_null()),
                .req = json_incref(req),
                .must = must,
                .limit = limit,
        };
        e.key = id_key(pool, e.id);
        FUZZ_PUSH(fz.expects, fz.n_expects, e);
}

/* The answers one request is owed: 0 or 1. */
static size_t expect_request(Pool pool, json_t *req) {
        json_t *id, *method, *params, *version;

        if (!json_is_object(req)) {
                expect(pool, NULL, NULL, "invalid-request", NULL);
                return 1;
        }
        id = json_object_get(req, "id");
        if (id && !json_is_string(id) && !json_is_number(id) && !json_is_null(id)) {
                expect(pool, NULL, NULL, "invalid-request", NULL);
                return 1;
        }
        version = json_object_get(req, "jsonrpc");
        method = json_object_get(req, "method");
        params = json_object_get(req, "params");
        if (!json_is_string(version) || !streq(json_string_value(version), "2.0") || !json_is_string(method) ||
            (params && !json_is_object(params) && !json_is_array(params))) {
                expect(pool, id, NULL, "invalid-request", NULL);
                return 1;
        }
        if (streq(json_string_value(method), "image.pull"))
                FUZZ_CHECK(json_array_append(fz.pull_ids, id ?: json_null()) == 0);
        if (!id)
                return 0;
        expect(pool, id, req, NULL, NULL);
        return 1;
}

static void expect_line(const char *line, size_t len) {
        json_auto_t *msg = NULL;
        size_t n, owed = 0;

        if (len == 0 || strspn(line, " \t\r") == len)
                return;
        msg = json_loadb(line, len, JSON_DECODE_ANY, NULL);
        if (!msg) {
                expect(POOL_SINGLE, NULL, NULL, "parse-error", NULL);
                return;
        }
        if (!json_is_array(msg)) {
                expect_request(POOL_SINGLE, msg);
                return;
        }
        n = json_array_size(msg);
        if (n == 0)
                expect(POOL_SINGLE, NULL, NULL, "invalid-request", NULL);
        else if (n > proto.batch_max)
                expect(POOL_SINGLE, NULL, NULL, "limit-exceeded", "batch_members");
        else {
                for (size_t i = 0; i < n; i++)
                        owed += expect_request(POOL_BATCH, json_array_get(msg, i));
                if (owed > 0)
                        FUZZ_PUSH(fz.batch_want, fz.n_batch_want, owed);
        }
}

/* ---- answers as they are written ---- */

/* A string of an error response's data, or NULL. */
static const char *error_data(json_t *resp, const char *key) {
        return json_string_value(json_object_get(json_object_get(json_object_get(resp, "error"), "data"), key));
}

static const char *error_name(json_t *resp) {
        return error_data(resp, "name");
}

static bool is_answer_limit(json_t *resp) {
        return streq_ptr(error_name(resp), "limit-exceeded") &&
               streq_ptr(error_data(resp, "limit"), FUZZ_ANSWER_LIMIT_NAME);
}

static void check_error(json_t *e) {
        json_t *code = json_object_get(e, "code"), *message = json_object_get(e, "message");
        json_t *data = json_object_get(e, "data");
        const char *name = json_string_value(json_object_get(data, "name"));
        json_int_t want;

        FUZZ_CHECK(json_is_object(e) && json_object_size(e) == 3);
        FUZZ_CHECK(json_is_integer(code));
        FUZZ_CHECK(json_is_string(message) && json_string_length(message) > 0);
        FUZZ_CHECK(json_is_object(data) && name);
        FUZZ_CHECK(doc_error_code(name, &want));
        FUZZ_CHECK(json_integer_value(code) == want);
        if (streq(name, "invalid-params"))
                FUZZ_CHECK(json_is_string(json_object_get(data, "parameter")));
        if (streq(name, "limit-exceeded"))
                FUZZ_CHECK(json_is_string(json_object_get(data, "limit")) &&
                           json_integer_value(json_object_get(data, "max")) > 0);
}

static void check_response(json_t *r) {
        json_t *version = json_object_get(r, "jsonrpc"), *id = json_object_get(r, "id");
        bool result = json_object_get(r, "result"), error = json_object_get(r, "error");

        FUZZ_CHECK(json_is_object(r) && json_object_size(r) == 3);
        FUZZ_CHECK(json_is_string(version) && streq(json_string_value(version), "2.0"));
        FUZZ_CHECK(json_is_string(id) || json_is_number(id) || json_is_null(id));
        FUZZ_CHECK(result != error);
        if (error)
                check_error(json_object_get(r, "error"));
}

static void check_notification(json_t *n) {
        json_t *params = json_object_get(n, "params"), *id;
        size_t i;
        bool asked = false;

        FUZZ_CHECK(json_object_size(n) == 3 && streq_ptr(json_string_value(json_object_get(n, "jsonrpc")), "2.0"));
        FUZZ_CHECK(doc_notification(json_string_value(json_object_get(n, "method"))));
        FUZZ_CHECK(json_is_object(params));
        json_array_foreach(fz.pull_ids, i, id)
                asked = asked || json_equal(id, json_object_get(params, "id"));
        FUZZ_CHECK(asked);
}

static void receive_answer(Pool pool, json_t *resp) {
        Answer a = { .pool = pool, .resp = json_incref(resp) };

        check_response(resp);
        a.key = id_key(pool, json_object_get(resp, "id"));
        FUZZ_PUSH(fz.answers, fz.n_answers, a);
}

/* A line the peer wrote; the last one (after which the connection closes)
 * is the error saying which limit was crossed. */
static void receive_line(const Line *l) {
        json_auto_t *v = NULL;
        json_t *m;
        size_t i;

        FUZZ_CHECK(!strchr(l->text, '\n'));
        FUZZ_CHECK(l->bytes == strlen(l->text) + 1);
        v = json_loads(l->text, 0, NULL);
        FUZZ_CHECK(v);
        if (l->last) {
                check_response(v);
                FUZZ_CHECK(streq_ptr(error_name(v), "limit-exceeded"));
                return;
        }
        if (json_is_array(v)) {
                FUZZ_CHECK(json_array_size(v) > 0);
                json_array_foreach(v, i, m)
                        receive_answer(POOL_BATCH, m);
                FUZZ_PUSH(fz.batch_got, fz.n_batch_got, json_array_size(v));
        } else if (json_object_get(v, "method"))
                check_notification(v);
        else
                receive_answer(POOL_SINGLE, v);
}

/* ---- whether an answer may be the one a request is owed ---- */

/* The params as the echo gives them back: a false boolean reads as absent
 * (rpc.h: "bool, false when absent"). */
static json_t *params_echoed(json_t *params) {
        json_t *copy = json_is_object(params) ? json_copy(params) : json_object(), *v;
        const char *key;
        void *tmp;

        FUZZ_CHECK(copy);
        json_object_foreach_safe(copy, tmp, key, v)
                if (json_is_false(v))
                        json_object_del(copy, key);
        return copy;
}

/* Whether a param the document types as a string has the value s (or,
 * with prefix, one starting with s): the stubs fail on "!" strings. */
static bool string_param(json_t *method, json_t *params, const char *s, bool prefix) {
        const char *key;
        json_t *v;

        json_object_foreach(params, key, v)
                if (json_is_string(v) && streq_ptr(doc_param_type(method, key), "string") &&
                    (prefix ? startswith(json_string_value(v), s) : streq(json_string_value(v), s)))
                        return true;
        return false;
}

static bool method_runs_inline(const char *name) {
        for (size_t k = 0; k < daemon_n_methods; k++)
                if (streq(daemon_methods[k].name, name))
                        return daemon_methods[k].mode == RPC_INLINE;
        return false;
}

static bool call_success_ok(json_t *req, json_t *method, json_t *result) {
        const char *name = json_string_value(json_object_get(req, "method"));
        json_t *params = json_object_get(req, "params");
        json_auto_t *echo = NULL;

        if (!method || (fz.down && !method_runs_inline(name)) || string_param(method, params, "!", true))
                return false;
        echo = params_echoed(params);
        return streq_ptr(json_string_value(json_object_get(result, "method")), name) &&
               json_equal(json_object_get(result, "params"), echo);
}

static bool call_error_ok(json_t *req, json_t *method, json_t *resp) {
        json_t *params = json_object_get(req, "params");
        const char *name = error_name(resp), *parameter, *bang;

        if (streq(name, "method-not-found"))
                return !method;
        if (!method)
                return false;
        if (streq(name, "shutting-down"))
                return fz.down && !method_runs_inline(json_string_value(json_object_get(req, "method")));
        if (streq(name, "invalid-params")) {
                parameter = error_data(resp, "parameter");
                return streq(parameter, "params") || doc_param_type(method, parameter) ||
                       json_object_get(params, parameter);
        }
        if (streq(name, "internal-error"))
                return string_param(method, params, "!!", true);
        if (streq(name, "image-not-found")) {
                bang = error_data(resp, "reference");
                return bang && startswith(bang, "!") && !startswith(bang, "!!") &&
                       string_param(method, params, bang, false);
        }
        return false;
}

static bool accepts(const Expect *e, const Answer *a) {
        json_t *resp = a->resp;

        if (e->pool != a->pool || !json_equal(e->id, json_object_get(resp, "id")))
                return false;
        /* Any answer may be replaced by the error that it did not fit. */
        if (fz.limited && is_answer_limit(resp))
                return true;
        if (e->must)
                return streq_ptr(error_name(resp), e->must) && (!e->limit || streq_ptr(error_data(resp, "limit"), e->limit));
        json_t *method = doc_method(json_string_value(json_object_get(e->req, "method")));
        if (json_object_get(resp, "result"))
                return call_success_ok(e->req, method, json_object_get(resp, "result"));
        return call_error_ok(e->req, method, resp);
}

/* ---- matching the answers to what was owed ---- */

static int expect_cmp(const void *a, const void *b) {
        return strcmp(((const Expect *) a)->key, ((const Expect *) b)->key);
}

static int answer_cmp(const void *a, const void *b) {
        return strcmp(((const Answer *) a)->key, ((const Answer *) b)->key);
}

/* qsort() of no elements, whose array may be NULL. */
static void sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
        if (n > 0)
                qsort(base, n, size, cmp);
}

static int size_cmp(const void *a, const void *b) {
        size_t x = *(const size_t *) a, y = *(const size_t *) b;
        return x < y ? -1 : x > y;
}

static void fail_answer(const Answer *a, const char *why) {
        _cleanup_free_ char *text = json_dumps(a->resp, JSON_COMPACT);
        fprintf(stderr, "answer %s %s\n", text ?: "?", why);
        abort();
}

/* Kuhn's augmenting path from answer ai: owner[e] is the answer given expectation e. */
static bool augment(size_t ai, size_t ne, const uint8_t *adj, size_t *owner, uint8_t *seen) {
        for (size_t ei = 0; ei < ne; ei++) {
                if (!adj[ai * ne + ei] || seen[ei])
                        continue;
                seen[ei] = 1;
                if (owner[ei] == SIZE_MAX || augment(owner[ei], ne, adj, owner, seen)) {
                        owner[ei] = ai;
                        return true;
                }
        }
        return false;
}

/* Answers and expectations of one pool and id: each answer to a different
 * request that may have it, and every request answered unless the
 * connection closed. */
static void match_group(const Expect *es, size_t ne, const Answer *as, size_t na) {
        _cleanup_free_ uint8_t *adj = NULL, *seen = NULL;
        _cleanup_free_ size_t *owner = NULL;

        if (na > ne)
                fail_answer(&as[0], "is one more than its id is owed");
        if (!fz.lost)
                FUZZ_CHECK(na == ne);
        if (ne > FUZZ_MATCH_GROUP_MAX) {
                for (size_t ai = 0; ai < na; ai++) {
                        bool ok = false;
                        for (size_t ei = 0; ei < ne && !ok; ei++)
                                ok = accepts(&es[ei], &as[ai]);
                        if (!ok)
                                fail_answer(&as[ai], "answers no request");
                }
                return;
        }
        adj = calloc(ne * na + 1, 1);
        seen = calloc(ne + 1, 1);
        owner = calloc(ne + 1, sizeof(size_t));
        FUZZ_CHECK(adj && seen && owner);
        for (size_t ai = 0; ai < na; ai++)
                for (size_t ei = 0; ei < ne; ei++)
                        adj[ai * ne + ei] = accepts(&es[ei], &as[ai]);
        for (size_t ei = 0; ei < ne; ei++)
                owner[ei] = SIZE_MAX;
        for (size_t ai = 0; ai < na; ai++) {
                memset(seen, 0, ne);
                if (!augment(ai, ne, adj, owner, seen))
                        fail_answer(&as[ai], "answers no request that is owed one");
        }
}

static void match_all(void) {
        size_t e = 0, a = 0;

        sort(fz.expects, fz.n_expects, sizeof(Expect), expect_cmp);
        sort(fz.answers, fz.n_answers, sizeof(Answer), answer_cmp);
        while (e < fz.n_expects || a < fz.n_answers) {
                const char *key = e < fz.n_expects && (a == fz.n_answers || strcmp(fz.expects[e].key,
                                                                                   fz.answers[a].key) <= 0)
                                          ? fz.expects[e].key
                                          : fz.answers[a].key;
                size_t e0 = e, a0 = a;

                while (e < fz.n_expects && streq(fz.expects[e].key, key))
                        e++;
                while (a < fz.n_answers && streq(fz.answers[a].key, key))
                        a++;
                match_group(e > e0 ? fz.expects + e0 : NULL, e - e0, a > a0 ? fz.answers + a0 : NULL, a - a0);
        }

        /* Each batch reply has as many members as its batch is owed answers. */
        sort(fz.batch_want, fz.n_batch_want, sizeof(size_t), size_cmp);
        sort(fz.batch_got, fz.n_batch_got, sizeof(size_t), size_cmp);
        if (!fz.lost)
                FUZZ_CHECK(fz.n_batch_got == fz.n_batch_want);
        for (size_t g = 0, w = 0; g < fz.n_batch_got; g++, w++) {
                while (w < fz.n_batch_want && fz.batch_want[w] < fz.batch_got[g])
                        w++;
                FUZZ_CHECK(w < fz.n_batch_want && fz.batch_want[w] == fz.batch_got[g]);
        }
}

/* ---- the fake connection ---- */

static FakePeer *fake_of(RpcPeer *p) {
        FUZZ_CHECK(p == &fz.peer.base);
        return &fz.peer;
}

static void fake_close(void) {
        FakePeer *f = &fz.peer;

        if (!f->open)
                return;
        /* Lines not written yet never reach the client. */
        for (size_t i = 0; i < f->n_queue; i++) {
                FUZZ_CHECK(f->held >= f->queue[i].bytes);
                f->held -= f->queue[i].bytes;
                free(f->queue[i].text);
        }
        f->n_queue = 0;
        f->open = false;
        fz.lost = true;
        rpc_peer_closed(fz.cur, &f->base);
}

/* The client reads what was sent; after the last line the connection closes. */
static void fake_write(void) {
        FakePeer *f = &fz.peer;

        for (size_t i = 0; i < f->n_queue; i++) {
                receive_line(&f->queue[i]);
                FUZZ_CHECK(f->held >= f->queue[i].bytes);
                f->held -= f->queue[i].bytes;
                free(f->queue[i].text);
        }
        f->n_queue = 0;
        if (f->closing)
                fake_close();
}

static int fake_answer_reserve(RpcPeer *p, size_t bytes, MsbError *err) {
        FakePeer *f = fake_of(p);

        if (!f->open || f->closing)
                return -ENOTCONN;
        if (f->held + bytes > f->limit)
                return msb_error_limit(err, FUZZ_ANSWER_LIMIT_NAME, f->limit, "the answers would exceed %zu bytes",
                                       f->limit);
        f->held += bytes;
        return 0;
}

static void fake_answer_release(RpcPeer *p, size_t bytes) {
        FakePeer *f = fake_of(p);

        FUZZ_CHECK(f->held >= bytes);
        f->held -= bytes;
}

static void fake_queue(FakePeer *f, char *text, size_t bytes, bool last) {
        Line l = { .text = text, .bytes = bytes, .last = last };
        FUZZ_PUSH(f->queue, f->n_queue, l);
}

static void fake_send_reserved(RpcPeer *p, char *text, size_t reserved) {
        FakePeer *f = fake_of(p);

        /* What was reserved is the line: the text and its newline. */
        FUZZ_CHECK(text && reserved == strlen(text) + 1);
        if (!f->open || f->closing) {
                fake_answer_release(p, reserved);
                free(text);
                return;
        }
        fake_queue(f, text, reserved, false);
}

static void fake_send_last(RpcPeer *p, char *text) {
        FakePeer *f = fake_of(p);
        size_t bytes = strlen(text) + 1;

        if (!f->open || f->closing) {
                free(text);
                return;
        }
        /* One line past the limit, then nothing more, as the server does. */
        f->closing = true;
        fz.lost = true;
        f->held += bytes;
        fake_queue(f, text, bytes, true);
}

static void fake_abort(RpcPeer *p) {
        /* Only an answer that cannot be built (out of memory) hangs up. */
        FUZZ_CHECK(!"rpc hung up on the peer");
}

static void fake_hold(RpcPeer *p) {
        fake_of(p)->holds++;
}

static void fake_release(RpcPeer *p) {
        FakePeer *f = fake_of(p);

        FUZZ_CHECK(f->holds > 0);
        f->holds--;
}

static bool fake_is_open(const RpcPeer *p) {
        return fz.peer.open;
}

static void fake_set_paused(RpcPeer *p, bool paused) {
        FakePeer *f = fake_of(p);

        /* rpc says so only when it changes. */
        FUZZ_CHECK(paused != f->paused);
        f->paused = paused;
}

static const RpcPeerOps fake_ops = {
        .answer_reserve = fake_answer_reserve,
        .answer_release = fake_answer_release,
        .send_reserved = fake_send_reserved,
        .send_last = fake_send_last,
        .abort = fake_abort,
        .hold = fake_hold,
        .release = fake_release,
        .is_open = fake_is_open,
        .set_paused = fake_set_paused,
};

/* ---- the stub handlers ---- */

/* What the handler of method k got: {"method": name, "params": {...}}. */
static json_t *stub_echo(size_t k, const void *params) {
        const RpcMethod *m = &daemon_methods[k];
        json_t *echo = json_object();
        const uint8_t *base = params;

        FUZZ_CHECK(echo);
        for (const RpcField *f = m->fields; f && f->name; f++) {
                const void *slot = base + f->offset;
                json_t *v = NULL;

                switch (f->type) {
                case RPC_FIELD_STRING:
                        v = *(const char *const *) slot ? json_string(*(const char *const *) slot) : NULL;
                        break;
                case RPC_FIELD_BOOL:
                        v = *(const bool *) slot ? json_true() : NULL;
                        break;
                case RPC_FIELD_INT:
                        v = *(const int64_t *) slot != RPC_FIELD_INT_ABSENT ? json_integer(*(const int64_t *) slot)
                                                                             : NULL;
                        break;
                case RPC_FIELD_ENUM:
                        v = *(const int *) slot >= 0 ? json_string(f->enum_names[*(const int *) slot]) : NULL;
                        break;
                case RPC_FIELD_JSON:
                        v = *(json_t *const *) slot ? json_deep_copy(*(json_t *const *) slot) : NULL;
                        break;
                case RPC_FIELD_FD:
                        /* No descriptor comes with a fuzzed line: a request
                         * naming one is refused before its handler runs. */
                        FUZZ_CHECK(*(const int *) slot < 0);
                        break;
                }
                if (v)
                        FUZZ_CHECK(json_object_set_new(echo, f->name, v) == 0);
        }
        return json_pack("{s:s, s:o}", "method", m->name, "params", echo);
}

/* The first string param starting with "!" makes the call fail. */
static int stub_fail(size_t k, const void *params, MsbError *err) {
        const uint8_t *base = params;

        for (const RpcField *f = daemon_methods[k].fields; f && f->name; f++) {
                const char *s = f->type == RPC_FIELD_STRING ? *(const char *const *) (base + f->offset) : NULL;
                if (!s || s[0] != '!')
                        continue;
                if (s[1] == '!')
                        return -EIO;
                msb_error_set(err, -ENOENT, PROTO_ERROR_IMAGE_NOT_FOUND, "no image %s", s);
                msb_error_add_data(err, "reference", json_string(s));
                return -ENOENT;
        }
        return 0;
}

/* Any handler, on the thread its mode runs it on. */
static int stub_answer(size_t k, RpcCall *call, const void *params, json_t **ret, MsbError *err) {
        int r;

        /* Once shut down, only inline methods may start. */
        FUZZ_CHECK(!fz.down || daemon_methods[k].mode == RPC_INLINE);
        r = stub_fail(k, params, err);
        if (r < 0)
                return r;
        if (fz.raw && daemon_methods[k].mode != RPC_DEFERRED) {
                if (!daemon_methods[k].fields) {
                        rpc_call_set_shared_result(call, fz.shared_text[k]);
                        return 0;
                }
                json_auto_t *echo = stub_echo(k, params);
                char *text = json_dumps(echo, JSON_COMPACT);
                FUZZ_CHECK(text);
                rpc_call_set_raw_result(call, text);
                return 0;
        }
        *ret = stub_echo(k, params);
        FUZZ_CHECK(*ret);
        return 0;
}

static void deferred_complete(Deferred *d) {
        if (d->prev)
                d->prev->next = d->next;
        else
                fz.deferred = d->next;
        if (d->next)
                d->next->prev = d->prev;
        fz.n_deferred--;
        rpc_call_complete(d->call, d->result, NULL);
        free(d);
}

static void deferred_cancelled(void *userdata) {
        Deferred *d = userdata;

        FUZZ_CHECK(!d->cancelled);
        d->cancelled = true;
        if (fz.complete_on_cancel)
                deferred_complete(d);
}

static int stub_loop(size_t k, RpcCall *call, const void *params, json_t **ret, MsbError *err) {
        const RpcMethod *m = &daemon_methods[k];
        Deferred *d;
        int r;

        /* rpc.cancel does what the daemon's does with its id. */
        for (const RpcField *f = m->fields; f && f->name; f++)
                if (f->type == RPC_FIELD_JSON && streq(m->name, "rpc.cancel"))
                        (void) rpc_peer_cancel(rpc_call_peer(call), *(json_t *const *) ((const uint8_t *) params +
                                                                                        f->offset));
        r = stub_answer(k, call, params, ret, err);
        if (r < 0 || m->mode != RPC_DEFERRED)
                return r;

        /* A deferred call tells its progress, and completes later. */
        rpc_call_notify(call, "image.pull.progress", json_pack("{s:O, s:s}", "id", rpc_call_id(call) ?: json_null(),
                                                               "stage", "stub"));
        d = calloc(1, sizeof(*d));
        FUZZ_CHECK(d);
        *d = (Deferred) { .call = call, .result = TAKE_PTR(*ret), .next = fz.deferred };
        if (fz.deferred)
                fz.deferred->prev = d;
        fz.deferred = d;
        fz.n_deferred++;
        rpc_call_on_cancel(call, deferred_cancelled, d);
        return RPC_PENDING;
}

#define STUB(k)                                                                                              \
        static int stub_loop_##k(RpcCall *c, RpcLoopContext *x, const void *p, json_t **ret, MsbError *err) { \
                return stub_loop(k, c, p, ret, err);                                                         \
        }                                                                                                    \
        static int stub_worker_##k(RpcCall *c, RpcWorkerContext *x, const void *p, json_t **ret,             \
                                   MsbError *err) {                                                          \
                return stub_answer(k, c, p, ret, err);                                                       \
        }
STUB(0) STUB(1) STUB(2) STUB(3) STUB(4) STUB(5) STUB(6) STUB(7) STUB(8) STUB(9) STUB(10) STUB(11)
STUB(12) STUB(13) STUB(14) STUB(15) STUB(16) STUB(17) STUB(18) STUB(19) STUB(20) STUB(21) STUB(22) STUB(23)
#define STUBS(k) { stub_loop_##k, stub_worker_##k }
static const struct {
        RpcLoopHandler on_loop;
        RpcWorkerHandler on_worker;
} stubs[FUZZ_METHODS_MAX] = {
        STUBS(0), STUBS(1), STUBS(2), STUBS(3), STUBS(4), STUBS(5), STUBS(6), STUBS(7),
        STUBS(8), STUBS(9), STUBS(10), STUBS(11), STUBS(12), STUBS(13), STUBS(14), STUBS(15),
        STUBS(16), STUBS(17), STUBS(18), STUBS(19), STUBS(20), STUBS(21), STUBS(22), STUBS(23),
};

/* The daemon's table with the stubs for handlers. */
static void fuzz_init(void) {
        MsbError err = {};

        if (fz.rpc)
                return;
        proto_load();
        /* The internal errors the stubs are made to return would be logged
         * at every run: the checks say what matters. */
        log_set_max_level((LogLevel) (LOG_LEVEL_ERROR - 1));
        FUZZ_CHECK(daemon_n_methods <= FUZZ_METHODS_MAX);
        for (size_t k = 0; k < daemon_n_methods; k++) {
                json_auto_t *echo = json_pack("{s:s, s:{}}", "method", daemon_methods[k].name, "params");
                fz.methods[k] = daemon_methods[k];
                fz.methods[k].on_loop = daemon_methods[k].on_loop ? stubs[k].on_loop : NULL;
                fz.methods[k].on_worker = daemon_methods[k].on_worker ? stubs[k].on_worker : NULL;
                fz.shared_text[k] = json_dumps(echo, JSON_COMPACT);
                FUZZ_CHECK(fz.shared_text[k]);
        }
        FUZZ_CHECK(uv_loop_init(&fz.loop) == 0);
        FUZZ_CHECK(rpc_new(&fz.loop, fz.methods, daemon_n_methods, NULL, NULL, &fz.rpc, &err) == 0);
        FUZZ_CHECK(rpc_new(&fz.loop, fz.methods, daemon_n_methods, NULL, NULL, &fz.rpc_down, &err) == 0);
        rpc_shutdown(fz.rpc_down);
}

/* ---- the run ---- */

/* Lets the calls in flight progress: worker calls finish on the pool; when
 * only deferred calls are left, the oldest (a cancelled one first)
 * completes. With all, until none is left; else until reading may resume. */
static void settle(bool all) {
        while (rpc_in_flight(fz.cur) > 0 && (all || fz.peer.paused)) {
                Deferred *oldest = NULL;

                if (rpc_in_flight(fz.cur) > fz.n_deferred) {
                        /* Worker calls are on the pool: something must finish them. */
                        FUZZ_CHECK(uv_loop_alive(&fz.loop));
                        uv_run(&fz.loop, UV_RUN_ONCE);
                        continue;
                }
                for (Deferred *d = fz.deferred; d; d = d->next)
                        if (!oldest || d->cancelled || !oldest->cancelled)
                                oldest = d;
                FUZZ_CHECK(oldest);
                deferred_complete(oldest);
                fake_write();
        }
}

static void handle_line(const char *line, size_t len) {
        expect_line(line, len);
        rpc_handle_line(fz.cur, &fz.peer.base, line, len, NULL);
}

/* Feeds the stream as the server's on_read() does, in reads of sizes from
 * seed, reading the answers every write_every lines. */
static void feed(const uint8_t *data, size_t size, unsigned seed, unsigned write_every) {
        LineBuffer b;
        size_t pos = 0, lines = 0, read_max = 1 + (size_t) seed * seed;
        char *line;
        size_t len;
        int r = 0;

        line_buffer_init(&b, FRAMING_LINE_MAX_BYTES);
        while (pos < size && fz.peer.open && !fz.peer.closing) {
                size_t chunk;

                /* Reading waits while rpc has the peer paused, and while its answers are unread. */
                settle(false);
                if (fz.peer.held >= fz.peer.limit / 2)
                        fake_write();
                if (!fz.peer.open || fz.peer.closing)
                        break;
                seed = seed * 1103515245u + 12345u;
                chunk = 1 + (seed >> 16) % read_max;
                chunk = chunk < size - pos ? chunk : size - pos;
                r = line_buffer_append(&b, data + pos, chunk);
                pos += chunk;
                while (r >= 0 && fz.peer.open && !fz.peer.closing && (r = line_buffer_next(&b, &line, &len)) > 0) {
                        handle_line(line, len);
                        if (++lines % write_every == 0)
                                fake_write();
                }
                /* No input is near the 16 MiB line limit. */
                FUZZ_CHECK(r >= 0);
                uv_run(&fz.loop, UV_RUN_NOWAIT);
        }
        if (fz.peer.open && !fz.peer.closing && line_buffer_take_rest(&b, &line, &len) > 0)
                handle_line(line, len);
        line_buffer_done(&b);
}

static void *free_null(void *p) {
        free(p);
        return NULL;
}

/* Frees what the run allocated: a run that keeps memory makes libFuzzer
 * look for leaks after each input, which is slow. */
static void run_reset(void) {
        for (size_t i = 0; i < fz.n_expects; i++) {
                json_decref(fz.expects[i].id);
                json_decref(fz.expects[i].req);
                free(fz.expects[i].key);
        }
        for (size_t i = 0; i < fz.n_answers; i++) {
                json_decref(fz.answers[i].resp);
                free(fz.answers[i].key);
        }
        fz.expects = free_null(fz.expects);
        fz.answers = free_null(fz.answers);
        fz.batch_want = free_null(fz.batch_want);
        fz.batch_got = free_null(fz.batch_got);
        fz.peer.queue = free_null(fz.peer.queue);
        fz.n_expects = fz.n_answers = fz.n_batch_want = fz.n_batch_got = 0;
        json_decref(TAKE_PTR(fz.pull_ids));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t mode;

        fuzz_init();
        if (size < 2)
                return 0;
        mode = data[0];
        fz.limited = (mode & 3) != 0;
        fz.down = mode & 4;
        fz.raw = mode & 16;
        fz.complete_on_cancel = mode & 32;
        fz.lost = false;
        fz.pull_ids = json_array();
        FUZZ_CHECK(fz.pull_ids);
        fz.cur = fz.down ? fz.rpc_down : fz.rpc;
        fz.peer = (FakePeer) { .limit = answer_limits[mode & 3], .open = true };
        rpc_peer_init(&fz.peer.base, &fake_ops);

        feed(data + 2, size - 2, data[1], 1u << (mode >> 6));
        if (mode & 8)
                fake_close();
        settle(true);
        fake_write();

        /* Everything ended: no call, hold or byte is left behind. */
        FUZZ_CHECK(rpc_in_flight(fz.cur) == 0);
        FUZZ_CHECK(fz.n_deferred == 0);
        FUZZ_CHECK(fz.peer.holds == 0);
        FUZZ_CHECK(fz.peer.held == 0);
        FUZZ_CHECK(!fz.peer.paused);
        match_all();

        if (fz.peer.open)
                rpc_peer_closed(fz.cur, &fz.peer.base);
        run_reset();
        return 0;
}
