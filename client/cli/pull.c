/* SPDX-License-Identifier: Apache-2.0 */

/*
 * msb-image pull: fetch an image through the daemon, showing its progress
 * (image.pull.progress, PullProgress in proto/openrpc.json): a live bar per
 * layer on a terminal, one plain line per step otherwise. Ctrl-C cancels
 * the pull in the daemon (rpc.cancel) before the program ends by it.
 */

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>

#include "cli.h"

/* Layers the live display tracks; the daemon refuses images with more
 * (x-limits.layers_per_image), so a larger count is not believed. */
#define PULL_LAYERS_MAX 256

typedef enum LayerState {
        LAYER_WAITING,
        LAYER_DOWNLOADING,
        LAYER_DOWNLOADED,
        LAYER_CONVERTED,
        LAYER_CACHED,
} LayerState;

typedef struct PullLayer {
        LayerState state;
        char digest[CLI_SHORT_DIGEST_MAX];
        int64_t downloaded;
        int64_t total;
        int64_t erofs_size;
} PullLayer;

typedef struct PullView {
        bool live;            /* a terminal: redraw the layer lines in place */
        unsigned rows;        /* the terminal's size, 0 when unknown */
        unsigned columns;
        const char *reference;
        size_t n_layers;
        PullLayer *layers;
        size_t drawn;         /* lines drawn last time, to move back over */
} PullView;

static void layer_line(const PullLayer *l, char *buf, size_t size) {
        char done[CLI_SIZE_MAX], total[CLI_SIZE_MAX], bar[CLI_BAR_WIDTH + 1];

        switch (l->state) {
        case LAYER_WAITING:
                snprintf(buf, size, "%s: waiting", l->digest);
                return;
        case LAYER_CACHED:
                snprintf(buf, size, "%s: already cached", l->digest);
                return;
        case LAYER_DOWNLOADED:
                snprintf(buf, size, "%s: downloaded, converting", l->digest);
                return;
        case LAYER_CONVERTED:
                cli_format_size(l->erofs_size, done, sizeof(done));
                snprintf(buf, size, "%s: done (EROFS %s)", l->digest, done);
                return;
        case LAYER_DOWNLOADING:
                break;
        }
        cli_format_bar(l->downloaded, l->total, bar);
        cli_format_size(l->downloaded, done, sizeof(done));
        cli_format_size(l->total, total, sizeof(total));
        snprintf(buf, size, "%s: [%s] %s / %s", l->digest, bar, done, total);
}

/* Redraws every layer line: back up over the last drawing, then clear and
 * write each line (ECMA-48 CUU and EL). */
static void view_redraw(PullView *v) {
        char line[256];

        if (v->drawn > 0)
                printf("\033[%zuA", v->drawn);
        for (size_t i = 0; i < v->n_layers; i++) {
                layer_line(&v->layers[i], line, sizeof(line));
                /* A line that wraps would take two rows and the cursor
                 * would no longer come back to the first layer. */
                if (v->columns > 1 && strlen(line) >= v->columns)
                        line[v->columns - 1] = '\0';
                printf("\r\033[2K%s\n", line);
        }
        v->drawn = v->n_layers;
        fflush(stdout);
}

static void view_resolved(PullView *v, const MsbPullProgress *p) {
        char size[CLI_SIZE_MAX];

        cli_format_size(p->total_bytes, size, sizeof(size));
        printf("Resolved %s: %lld layer%s, %s\n", p->manifest_digest ?: "?", (long long) p->layer_count,
               p->layer_count == 1 ? "" : "s", size);
        if (v->layers || p->layer_count <= 0 || p->layer_count > PULL_LAYERS_MAX)
                return;
        v->layers = calloc((size_t) p->layer_count, sizeof(PullLayer));
        if (!v->layers)
                return; /* only the display suffers */
        v->n_layers = (size_t) p->layer_count;
        /* More layer lines than the terminal has rows cannot be redrawn in
         * place (the cursor cannot move above the screen): print steps. */
        if (v->rows > 0 && v->n_layers >= v->rows)
                v->live = false;
        /* Until a layer's digest is known, its line is named by position. */
        for (size_t i = 0; i < v->n_layers; i++)
                snprintf(v->layers[i].digest, sizeof(v->layers[i].digest), "layer %u", (unsigned) (i + 1) % 1000);
}

static PullLayer *view_layer(PullView *v, const MsbPullProgress *p) {
        PullLayer *l;

        if (p->position < 0 || (size_t) p->position >= v->n_layers)
                return NULL;
        l = &v->layers[p->position];
        if (p->digest)
                cli_short_digest(p->digest, l->digest, sizeof(l->digest));
        return l;
}

/* Plain output: one line per step; byte progress is left out, since a log
 * wants steps, not a stream of counters. */
static void plain_event(const MsbPullProgress *p, int64_t n_layers) {
        char digest[CLI_SHORT_DIGEST_MAX], size[CLI_SIZE_MAX];
        long long pos = (long long) p->position + 1;

        switch (p->event) {
        case MSB_PULL_RESOLVING:
                printf("Resolving %s\n", p->reference ?: "");
                break;
        case MSB_PULL_LAYER_CACHED:
                printf("Layer %lld/%lld %s: already cached\n", pos, (long long) n_layers,
                       cli_short_digest(p->digest, digest, sizeof(digest)));
                break;
        case MSB_PULL_LAYER_DOWNLOADED:
                printf("Layer %lld/%lld %s: downloaded\n", pos, (long long) n_layers,
                       cli_short_digest(p->digest, digest, sizeof(digest)));
                break;
        case MSB_PULL_LAYER_CONVERTED:
                cli_format_size(p->erofs_size_bytes, size, sizeof(size));
                printf("Layer %lld/%lld %s: converted (EROFS %s)\n", pos, (long long) n_layers,
                       cli_short_digest(p->digest, digest, sizeof(digest)), size);
                break;
        case MSB_PULL_FSMETA:
                cli_format_size(p->size_bytes, size, sizeof(size));
                printf("Wrote fsmeta (%s)\n", size);
                break;
        case MSB_PULL_VMDK:
                puts("Wrote VMDK descriptor");
                break;
        default:
                break;
        }
}

typedef struct PullContext {
        PullView view;
        int64_t n_layers;
} PullContext;

static int on_progress(const MsbPullProgress *p, void *userdata) {
        PullContext *ctx = userdata;
        PullView *v = &ctx->view;
        PullLayer *l;

        if (p->event == MSB_PULL_RESOLVED) {
                ctx->n_layers = p->layer_count;
                view_resolved(v, p);
                if (v->live)
                        view_redraw(v);
                return 0;
        }
        if (!v->live) {
                plain_event(p, ctx->n_layers);
                fflush(stdout);
                return 0;
        }

        switch (p->event) {
        case MSB_PULL_RESOLVING:
                printf("Resolving %s\n", p->reference ?: "");
                fflush(stdout);
                return 0;
        case MSB_PULL_FSMETA:
        case MSB_PULL_VMDK:
                /* The layer lines are final by now; step lines go below. */
                v->drawn = 0;
                plain_event(p, ctx->n_layers);
                fflush(stdout);
                return 0;
        default:
                break;
        }
        l = view_layer(v, p);
        if (!l)
                return 0;
        switch (p->event) {
        case MSB_PULL_LAYER_CACHED:
                l->state = LAYER_CACHED;
                break;
        case MSB_PULL_LAYER_DOWNLOAD:
                l->state = LAYER_DOWNLOADING;
                l->downloaded = p->downloaded_bytes;
                l->total = p->total_bytes;
                break;
        case MSB_PULL_LAYER_DOWNLOADED:
                l->state = LAYER_DOWNLOADED;
                break;
        case MSB_PULL_LAYER_CONVERTED:
                l->state = LAYER_CONVERTED;
                l->erofs_size = p->erofs_size_bytes;
                break;
        default:
                return 0;
        }
        view_redraw(v);
        return 0;
}

/* SIGINT writes here (the self-pipe trick: a signal handler may only do
 * async-signal-safe things); the library watches the read end while the
 * pull runs, and cancels it. */
static int cancel_pipe[2] = { -1, -1 };

static void on_sigint(int sig) {
        int saved = errno;
        char c = 1;

        if (write(cancel_pipe[1], &c, 1) < 0) {
                /* The pipe already holds a byte: the pull is being cancelled. */
        }
        errno = saved;
}

/* Ctrl-C from now on cancels the pull instead of killing us mid-call. */
static int cancel_on_sigint(MsbClient *client) {
        struct sigaction sa = { .sa_handler = on_sigint };

        if (pipe2(cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGINT, &sa, NULL) < 0)
                return -errno;
        msb_client_set_cancel_fd(client, cancel_pipe[0]);
        return 0;
}

/* The pull is cancelled in the daemon: end as Ctrl-C ends a program, so
 * that a shell or a script sees the interrupt (not an exit status). */
_Noreturn static void die_by_sigint(const PullView *v) {
        struct sigaction sa = { .sa_handler = SIG_DFL };

        if (v->live && v->drawn > 0)
                putchar('\n');
        fflush(stdout);
        fputs(CLI_PROGRAM ": pull cancelled\n", stderr);
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        raise(SIGINT);
        _exit(128 + SIGINT);
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "quiet", no_argument, NULL, 'q' },
                { "policy", required_argument, NULL, CLI_OPT_POLICY },
                { "platform", required_argument, NULL, CLI_OPT_PLATFORM },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_freep) MsbImage *image = NULL;
        MsbPullOptions opts = {};
        PullContext ctx = {};
        bool quiet = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "hq", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_pull, c, globals))
                        continue;
                if (c == 'q')
                        quiet = true;
                else if (c == CLI_OPT_POLICY)
                        opts.policy = optarg;
                else if (c == CLI_OPT_PLATFORM)
                        opts.platform = optarg;
        }
        if (optind >= argc)
                return cli_usage_error(&cli_command_pull, "missing image reference");
        if (optind + 1 < argc)
                return cli_usage_error(&cli_command_pull, "unexpected argument '%s'", argv[optind + 1]);
        /* Checked here too so that a typo is a usage error, not a round trip. */
        if (opts.policy && !streq(opts.policy, "if-missing") && !streq(opts.policy, "always") &&
            !streq(opts.policy, "never"))
                return cli_usage_error(&cli_command_pull, "unknown policy '%s' (use if-missing, always or never)",
                                       opts.policy);

        r = cli_connect(globals, &client);
        if (r != 0)
                return r;
        ctx.view.live = isatty(STDOUT_FILENO);
        struct winsize ws = {};
        if (ctx.view.live && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
                ctx.view.rows = ws.ws_row;
                ctx.view.columns = ws.ws_col;
        }
        ctx.view.reference = argv[optind];
        r = cancel_on_sigint(client);
        if (r < 0)
                return cli_report(client, r, "cannot handle Ctrl-C");
        r = msb_client_image_pull(client, argv[optind], &opts, quiet ? NULL : on_progress, &ctx, &image);
        if (r == -ECANCELED)
                die_by_sigint(&ctx.view);
        free(ctx.view.layers);
        if (r < 0)
                return cli_report(client, r, "cannot pull %s", argv[optind]);
        if (quiet)
                puts(image->reference);
        else
                printf("Pulled %s (%s)\n", image->reference, image->manifest_digest ?: "no digest");
        return CLI_EXIT_OK;
}

const CliCommand cli_command_pull = {
        .name = "pull",
        .summary = "fetch an image from a registry into the cache",
        .usage = "Usage: " CLI_PROGRAM " pull [-q] [--policy POLICY] [--platform PLATFORM] REFERENCE\n"
                 "\n"
                 "Fetch an image from its OCI registry into the cache, converting each layer\n"
                 "to EROFS. On a terminal each layer gets a live progress bar; otherwise\n"
                 "each step is one line.\n"
                 "\n"
                 "Options:\n"
                 "  -q, --quiet          print only the canonical reference when done\n"
                 "  --policy POLICY      if-missing (default: use the cache when it has the\n"
                 "                       image), always (ask the registry) or never (cache only)\n"
                 "  --platform PLATFORM  os/architecture[/variant] (default: linux and the\n"
                 "                       daemon's architecture)\n"
                 "  --socket PATH        the daemon's socket\n"
                 "  -h, --help           show this help\n",
        .run = run,
};
