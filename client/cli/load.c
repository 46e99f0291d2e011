/* SPDX-License-Identifier: Apache-2.0 */

/*
 * msb-image load: import images from an OCI layout or archive. An archive
 * (a file, or stdin) is opened here and passed to the daemon with the
 * request, so the daemon reads what this user can read and needs no view
 * of the file (a service with a private /tmp, say); a layout directory is
 * named by path and read by the daemon. Progress (image.load.progress,
 * LoadProgress in proto/openrpc.json): the bytes read of the archive on one
 * line redrawn in place on a terminal, then one line per step.
 */

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "cli.h"

typedef struct LoadView {
        bool live;         /* a terminal: the reading line is redrawn in place */
        bool reading_open; /* the reading line was drawn and not ended yet */
        int64_t read_bytes, total_bytes;
        int64_t n_layers;
} LoadView;

static void view_draw_reading(LoadView *v) {
        char done[CLI_SIZE_MAX], total[CLI_SIZE_MAX], bar[CLI_BAR_WIDTH + 1];

        cli_format_size(v->read_bytes, done, sizeof(done));
        if (v->total_bytes <= 0) {
                printf("\r\033[2KReading archive: %s\r", done);
                return;
        }
        cli_format_bar(v->read_bytes, v->total_bytes, bar);
        cli_format_size(v->total_bytes, total, sizeof(total));
        printf("\r\033[2KReading archive: [%s] %s / %s\r", bar, done, total);
}

/* The archive is read: its last count stays, as one line. */
static void view_end_reading(LoadView *v) {
        char done[CLI_SIZE_MAX];

        if (v->read_bytes == MSB_NULL_INT)
                return;
        cli_format_size(v->read_bytes, done, sizeof(done));
        printf("%sRead %s of archive\n", v->live ? "\r\033[2K" : "", done);
        v->read_bytes = MSB_NULL_INT;
        v->reading_open = false;
}

static void view_step(LoadView *v, const MsbLoadProgress *p) {
        char digest[CLI_SHORT_DIGEST_MAX], size[CLI_SIZE_MAX];
        long long pos = (long long) p->position + 1;

        switch (p->event) {
        case MSB_LOAD_RESOLVED:
                v->n_layers = p->layer_count;
                cli_format_size(p->total_bytes, size, sizeof(size));
                printf("Resolved %s: %lld layer%s, %s\n", p->manifest_digest ?: "?", (long long) p->layer_count,
                       p->layer_count == 1 ? "" : "s", size);
                break;
        case MSB_LOAD_LAYER_CACHED:
                printf("Layer %lld/%lld %s: already cached\n", pos, (long long) v->n_layers,
                       cli_short_digest(p->digest, digest, sizeof(digest)));
                break;
        case MSB_LOAD_LAYER_CONVERTED:
                cli_format_size(p->erofs_size_bytes, size, sizeof(size));
                printf("Layer %lld/%lld %s: converted (EROFS %s)\n", pos, (long long) v->n_layers,
                       cli_short_digest(p->digest, digest, sizeof(digest)), size);
                break;
        default:
                break;
        }
}

static int on_progress(const MsbLoadProgress *p, void *userdata) {
        LoadView *v = userdata;

        if (p->event == MSB_LOAD_READING) {
                v->read_bytes = p->read_bytes;
                v->total_bytes = p->total_bytes;
                if (v->live) {
                        view_draw_reading(v);
                        v->reading_open = true;
                }
        } else {
                view_end_reading(v);
                view_step(v, p);
        }
        fflush(stdout);
        return 0;
}

/* What to load: *ret_path (a layout directory, by absolute path) or
 * *ret_fd (an archive, opened here; stdin when name is NULL). */
static int open_source(const char *name, char **ret_path, int *ret_fd) {
        struct stat st;
        int fd, r;

        if (!name) {
                if (isatty(STDIN_FILENO))
                        return cli_usage_error(&cli_command_load,
                                               "missing path: give PATH or -i FILE, or pipe an archive to stdin");
                *ret_fd = STDIN_FILENO;
                return 0;
        }
        fd = open(name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = errno;
                if (fd >= 0)
                        close(fd);
                fprintf(stderr, CLI_PROGRAM ": cannot load %s: %s\n", name, strerror(r));
                return r == ENOENT ? CLI_EXIT_NOT_FOUND : CLI_EXIT_FAILURE;
        }
        if (!S_ISDIR(st.st_mode)) {
                *ret_fd = fd;
                return 0;
        }
        close(fd);
        /* The daemon reads a layout itself and does not share our working
         * directory, so it gets an absolute path. */
        *ret_path = realpath(name, NULL);
        if (!*ret_path) {
                fprintf(stderr, CLI_PROGRAM ": cannot load %s: %s\n", name, strerror(errno));
                return CLI_EXIT_FAILURE;
        }
        return 0;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        static const struct option options[] = {
                CLI_COMMON_OPTIONS,
                { "tag", required_argument, NULL, CLI_OPT_TAG },
                { "image", required_argument, NULL, CLI_OPT_IMAGE },
                { "input", required_argument, NULL, 'i' },
                { "quiet", no_argument, NULL, 'q' },
                {},
        };
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        _cleanup_(msb_image_list_freep) MsbImageList *list = NULL;
        _cleanup_free_ char *path = NULL;
        MsbLoadOptions opts = { .fd = -1 };
        LoadView view = { .read_bytes = MSB_NULL_INT };
        const char *name = NULL;
        bool quiet = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "ht:i:q", options, NULL)) >= 0) {
                if (CLI_COMMON_OPTION(&cli_command_load, c, globals))
                        continue;
                if (c == CLI_OPT_TAG || c == 't')
                        opts.tag = optarg;
                else if (c == CLI_OPT_IMAGE)
                        opts.image = optarg;
                else if (c == 'i')
                        name = optarg;
                else if (c == 'q')
                        quiet = true;
        }
        if (name && optind < argc)
                return cli_usage_error(&cli_command_load, "give the archive as PATH or with -i, not both");
        if (optind + 1 < argc)
                return cli_usage_error(&cli_command_load, "unexpected argument '%s'", argv[optind + 1]);
        if (optind < argc)
                name = argv[optind];

        r = open_source(name, &path, &opts.fd);
        if (r != 0)
                return r;
        opts.path = path;
        r = cli_connect(globals, &client);
        if (r == 0) {
                view.live = isatty(STDOUT_FILENO);
                r = msb_client_image_load_with(client, &opts, quiet ? NULL : on_progress, &view, &list);
                if (view.reading_open)
                        putchar('\n');
                r = r < 0 ? cli_report(client, r, "cannot load %s", name ?: "the archive on stdin") : CLI_EXIT_OK;
        }
        if (opts.fd > STDIN_FILENO)
                close(opts.fd);
        if (r != CLI_EXIT_OK)
                return r;
        for (size_t i = 0; i < list->n_images; i++)
                if (quiet)
                        puts(list->images[i].reference);
                else
                        printf("Loaded %s (%s)\n", list->images[i].reference,
                               list->images[i].manifest_digest ?: "no digest");
        return CLI_EXIT_OK;
}

const CliCommand cli_command_load = {
        .name = "load",
        .summary = "import images from an OCI layout or archive",
        .usage = "Usage: " CLI_PROGRAM " load [-q] [--image NAME] [--tag REFERENCE] [-i FILE | PATH]\n"
                 "\n"
                 "Import the images of an OCI archive or a docker-save archive (tar, maybe\n"
                 "gzip or zstd compressed), or of an OCI image layout directory. An archive\n"
                 "is read from PATH, from FILE, or from stdin when neither is given; it is\n"
                 "passed to the daemon, so the daemon needs no access to it. A directory is\n"
                 "read by the daemon. Every blob is verified against its digest; a load that\n"
                 "fails leaves the cache as it was. On a terminal the bytes read show on a\n"
                 "live line; then each layer is one line.\n"
                 "\n"
                 "Options:\n"
                 "  -i, --input FILE     read the archive from FILE\n"
                 "  --image NAME         load only this image of a source holding several: a\n"
                 "                       name it gives (ref.name or RepoTag) or its manifest\n"
                 "                       digest\n"
                 "  -t, --tag REFERENCE  the reference to record (required when the source\n"
                 "                       names none)\n"
                 "  -q, --quiet          print only the references recorded\n"
                 "  --socket PATH        the daemon's socket\n"
                 "  -h, --help           show this help\n",
        .run = run,
};
