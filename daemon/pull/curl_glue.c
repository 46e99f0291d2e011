/* SPDX-License-Identifier: Apache-2.0 */
#include <assert.h>

#include "curl_glue.h"

/* One watched socket: a uv_poll handle curl asked for. */
typedef struct CurlGluePoll {
        uv_poll_t poll;
        curl_socket_t fd;
        CurlGlue *glue;
        struct CurlGluePoll *prev, *next;
} CurlGluePoll;

/* One running transfer; stored in the easy handle's CURLOPT_PRIVATE. */
typedef struct CurlGlueTransfer {
        CURL *easy;
        CurlGlueDoneFn done;
        void *userdata;
        struct CurlGlueTransfer *prev, *next;
} CurlGlueTransfer;

struct CurlGlue {
        uv_loop_t *loop;
        CURLM *multi;
        uv_timer_t timer;
        CurlGluePoll *polls;
        CurlGlueTransfer *transfers;
        size_t n_transfers;
        unsigned n_open_handles; /* the timer plus every poll not yet closed */
        bool freeing;
};

#define LIST_UNLINK(head, item)                                 \
        do {                                                    \
                if ((item)->prev)                               \
                        (item)->prev->next = (item)->next;      \
                else                                            \
                        (head) = (item)->next;                  \
                if ((item)->next)                               \
                        (item)->next->prev = (item)->prev;      \
                (item)->prev = (item)->next = NULL;             \
        } while (0)

#define LIST_PREPEND(head, item)                                \
        do {                                                    \
                (item)->prev = NULL;                            \
                (item)->next = (head);                          \
                if (head)                                       \
                        (head)->prev = (item);                  \
                (head) = (item);                                \
        } while (0)

static void glue_handle_closed(CurlGlue *g) {
        assert(g->n_open_handles > 0);
        g->n_open_handles--;
        if (g->freeing && g->n_open_handles == 0)
                free(g);
}

static void glue_poll_close_cb(uv_handle_t *h) {
        CurlGluePoll *p = h->data;
        CurlGlue *g = p->glue;

        free(p);
        glue_handle_closed(g);
}

static void glue_timer_close_cb(uv_handle_t *h) {
        glue_handle_closed(h->data);
}

static void glue_poll_close(CurlGluePoll *p) {
        CurlGlue *g = p->glue;

        LIST_UNLINK(g->polls, p);
        uv_poll_stop(&p->poll);
        uv_close((uv_handle_t *) &p->poll, glue_poll_close_cb);
}

/* Hands every finished transfer back to its owner. */
static void glue_check_done(CurlGlue *g) {
        CURLMsg *msg;
        int left;

        while ((msg = sym_curl_multi_info_read(g->multi, &left))) {
                CurlGlueTransfer *t = NULL;
                CURL *easy;
                CURLcode result;

                if (msg->msg != CURLMSG_DONE)
                        continue;

                easy = msg->easy_handle;
                result = msg->data.result;
                if (sym_curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t) != CURLE_OK || !t)
                        continue;

                /* msg points into curl's memory and is invalid after this. */
                sym_curl_multi_remove_handle(g->multi, easy);
                LIST_UNLINK(g->transfers, t);
                g->n_transfers--;

                CurlGlueDoneFn done = t->done;
                void *userdata = t->userdata;
                free(t);
                sym_curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
                done(g, easy, result, userdata);
        }
}

static void glue_poll_cb(uv_poll_t *h, int status, int events) {
        CurlGluePoll *p = h->data;
        CurlGlue *g = p->glue;
        int flags = 0, running;

        if (status < 0)
                flags = CURL_CSELECT_ERR;
        else {
                if (events & UV_READABLE)
                        flags |= CURL_CSELECT_IN;
                if (events & UV_WRITABLE)
                        flags |= CURL_CSELECT_OUT;
        }

        /* p may be closed by the socket callback inside this call. */
        sym_curl_multi_socket_action(g->multi, p->fd, flags, &running);
        glue_check_done(g);
}

static void glue_timer_cb(uv_timer_t *h) {
        CurlGlue *g = h->data;
        int running;

        sym_curl_multi_socket_action(g->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        glue_check_done(g);
}

/* CURLMOPT_SOCKETFUNCTION: curl says what to watch on socket s. */
static int glue_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
        CurlGlue *g = userp;
        CurlGluePoll *p = socketp;
        int events = 0;

        if (what == CURL_POLL_REMOVE) {
                if (p) {
                        sym_curl_multi_assign(g->multi, s, NULL);
                        glue_poll_close(p);
                }
                return 0;
        }

        if (!p) {
                p = calloc(1, sizeof(*p));
                if (!p)
                        return -1;
                p->fd = s;
                p->glue = g;
                if (uv_poll_init_socket(g->loop, &p->poll, s) < 0) {
                        free(p);
                        return -1;
                }
                p->poll.data = p;
                g->n_open_handles++;
                LIST_PREPEND(g->polls, p);
                sym_curl_multi_assign(g->multi, s, p);
        }

        if (what & CURL_POLL_IN)
                events |= UV_READABLE;
        if (what & CURL_POLL_OUT)
                events |= UV_WRITABLE;
        if (uv_poll_start(&p->poll, events, glue_poll_cb) < 0)
                return -1;
        return 0;
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back after timeout_ms
 * (-1: cancel). A zero timeout also goes through the timer, because
 * curl_multi_socket_action() must not be called from inside this callback. */
static int glue_timer_function(CURLM *multi, long timeout_ms, void *userp) {
        CurlGlue *g = userp;

        if (timeout_ms < 0)
                uv_timer_stop(&g->timer);
        else
                uv_timer_start(&g->timer, glue_timer_cb, (uint64_t) timeout_ms, 0);
        return 0;
}

int curl_glue_new(uv_loop_t *loop, CurlGlue **ret) {
        CurlGlue *g;
        int r;

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->loop = loop;

        g->multi = sym_curl_multi_init();
        if (!g->multi) {
                free(g);
                return -ENOMEM;
        }

        r = uv_timer_init(loop, &g->timer);
        if (r < 0) {
                sym_curl_multi_cleanup(g->multi);
                free(g);
                return r;
        }
        g->timer.data = g;
        g->n_open_handles = 1;

        if (sym_curl_multi_setopt(g->multi, CURLMOPT_SOCKETFUNCTION, glue_socket_cb) != CURLM_OK ||
            sym_curl_multi_setopt(g->multi, CURLMOPT_SOCKETDATA, g) != CURLM_OK ||
            sym_curl_multi_setopt(g->multi, CURLMOPT_TIMERFUNCTION, glue_timer_function) != CURLM_OK ||
            sym_curl_multi_setopt(g->multi, CURLMOPT_TIMERDATA, g) != CURLM_OK) {
                curl_glue_free(g);
                return -EIO;
        }

        *ret = g;
        return 0;
}

CurlGlue *curl_glue_free(CurlGlue *g) {
        if (!g)
                return NULL;

        while (g->transfers) {
                CurlGlueTransfer *t = g->transfers;

                sym_curl_multi_remove_handle(g->multi, t->easy);
                sym_curl_easy_setopt(t->easy, CURLOPT_PRIVATE, NULL);
                LIST_UNLINK(g->transfers, t);
                free(t);
        }
        g->n_transfers = 0;

        /* The cleanup may still call the socket callback for sockets of
         * cached connections; the glue is alive until the handles close. */
        sym_curl_multi_cleanup(g->multi);
        g->multi = NULL;

        while (g->polls)
                glue_poll_close(g->polls);

        g->freeing = true;
        uv_timer_stop(&g->timer);
        uv_close((uv_handle_t *) &g->timer, glue_timer_close_cb);
        return NULL;
}

int curl_glue_add(CurlGlue *g, CURL *easy, CurlGlueDoneFn done, void *userdata) {
        CurlGlueTransfer *t;

        if (!g || !easy || !done || g->freeing)
                return -EINVAL;

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *t = (CurlGlueTransfer) {
                .easy = easy,
                .done = done,
                .userdata = userdata,
        };

        if (sym_curl_easy_setopt(easy, CURLOPT_PRIVATE, t) != CURLE_OK) {
                free(t);
                return -EIO;
        }
        if (sym_curl_multi_add_handle(g->multi, easy) != CURLM_OK) {
                sym_curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
                free(t);
                return -EIO;
        }
        LIST_PREPEND(g->transfers, t);
        g->n_transfers++;
        return 0;
}

void curl_glue_remove(CurlGlue *g, CURL *easy) {
        CurlGlueTransfer *t = NULL;

        if (!g || !easy || g->freeing)
                return;
        if (sym_curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t) != CURLE_OK || !t)
                return;

        sym_curl_multi_remove_handle(g->multi, easy);
        sym_curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        LIST_UNLINK(g->transfers, t);
        g->n_transfers--;
        free(t);
}

size_t curl_glue_n_running(const CurlGlue *g) {
        return g ? g->n_transfers : 0;
}

int curl_glue_set_max_host_connections(CurlGlue *g, long n) {
        if (sym_curl_multi_setopt(g->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n) != CURLM_OK)
                return -EINVAL;
        return 0;
}
