/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small front end to the daemon's EROFS module for the tests and the
 * benchmark, so they can drive exactly the code the daemon runs:
 *
 *   erofs-tool convert BLOB MEDIATYPE OUT [--diff-id D] [--blob-digest D] [--blob-size N]
 *   erofs-tool fsmeta OUT MANIFEST_DIGEST LAYER...
 *   erofs-tool vmdk OUT FSMETA LAYER...
 *
 * It prints a JSON line with the result, or the error (code, name, message,
 * data) and exits 1.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>

#include "erofs_layer.h"
#include "vmdk.h"

static int fail(MsbError *err, int r) {
        json_t *o = json_object();

        json_object_set_new(o, "errno", json_integer(-r));
        if (err->set) {
                json_object_set_new(o, "code", json_integer(proto_errors[err->kind].code));
                json_object_set_new(o, "name", json_string(proto_errors[err->kind].name));
                json_object_set_new(o, "message", json_string(err->message));
                if (err->data)
                        json_object_set(o, "data", err->data);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        msb_error_clear(err);
        return 1;
}

static int cmd_convert(int argc, char **argv) {
        const char *diff_id = NULL, *blob_digest = NULL;
        uint64_t blob_size = UINT64_MAX;
        ErofsLayerLimits limits = erofs_layer_limits_default();
        ErofsLayerInfo info = {};
        MsbError err = {};
        int in, out, r;

        if (argc < 5)
                return 2;
        for (int k = 5; k + 1 < argc; k += 2) {
                if (streq(argv[k], "--diff-id"))
                        diff_id = argv[k + 1];
                else if (streq(argv[k], "--blob-digest"))
                        blob_digest = argv[k + 1];
                else if (streq(argv[k], "--blob-size"))
                        blob_size = strtoull(argv[k + 1], NULL, 10);
                else if (streq(argv[k], "--max-entries"))
                        limits.entries = strtoull(argv[k + 1], NULL, 10);
                else if (streq(argv[k], "--max-uncompressed"))
                        limits.uncompressed_bytes = strtoull(argv[k + 1], NULL, 10);
                else
                        return 2;
        }
        in = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (in < 0) {
                perror(argv[2]);
                return 1;
        }
        out = open(argv[4], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
                perror(argv[4]);
                return 1;
        }
        r = erofs_layer_convert_with_limits(in, streq(argv[3], "-") ? NULL : argv[3], blob_digest, blob_size,
                                            diff_id, &limits, out, &info, &err);
        close(in);
        close(out);
        if (r < 0)
                return fail(&err, r);
        printf("{\"diff_id\":\"%s\",\"uncompressed_bytes\":%" PRIu64 ",\"erofs_bytes\":%" PRIu64
               ",\"entries\":%" PRIu64 "}\n",
               info.diff_id, info.uncompressed_bytes, info.erofs_bytes, info.entries);
        return 0;
}

static int cmd_fsmeta(int argc, char **argv) {
        MsbError err = {};
        uint64_t size;
        int out, r;

        if (argc < 5)
                return 2;
        out = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
                perror(argv[2]);
                return 1;
        }
        r = erofs_fsmeta_build((const char *const *) argv + 4, (size_t) (argc - 4), argv[3], out, &size, &err);
        close(out);
        if (r < 0)
                return fail(&err, r);
        printf("{\"size\":%" PRIu64 "}\n", size);
        return 0;
}

static int cmd_vmdk(int argc, char **argv) {
        size_t n = (size_t) (argc - 4);
        _cleanup_free_ uint64_t *sizes = calloc(n + 1, sizeof(uint64_t));
        uint64_t fsmeta_size;
        struct stat st;
        MsbError err = {};
        int out, r;

        if (argc < 4)
                return 2;
        if (!sizes)
                return 1;
        if (stat(argv[3], &st) < 0) {
                perror(argv[3]);
                return 1;
        }
        fsmeta_size = (uint64_t) st.st_size;
        for (size_t k = 0; k < n; k++) {
                if (stat(argv[4 + k], &st) < 0) {
                        perror(argv[4 + k]);
                        return 1;
                }
                sizes[k] = (uint64_t) st.st_size;
        }
        out = open(argv[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
                perror(argv[2]);
                return 1;
        }
        r = vmdk_write(out, argv[3], fsmeta_size, (const char *const *) argv + 4, sizes, n, &err);
        close(out);
        if (r < 0)
                return fail(&err, r);
        printf("{}\n");
        return 0;
}

int main(int argc, char **argv) {
        int r = 2;

        if (argc >= 2 && streq(argv[1], "convert"))
                r = cmd_convert(argc, argv);
        else if (argc >= 2 && streq(argv[1], "fsmeta"))
                r = cmd_fsmeta(argc, argv);
        else if (argc >= 2 && streq(argv[1], "vmdk"))
                r = cmd_vmdk(argc, argv);
        if (r == 2)
                fprintf(stderr,
                        "usage: %s convert BLOB MEDIATYPE|- OUT [--diff-id D] [--blob-digest D] [--blob-size N]\n"
                        "       %s fsmeta OUT MANIFEST_DIGEST LAYER...\n"
                        "       %s vmdk OUT FSMETA LAYER...\n",
                        argv[0], argv[0], argv[0]);
        return r;
}
