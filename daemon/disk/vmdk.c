/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <inttypes.h>

#include "erofs_writer.h"
#include "vmdk.h"

/*
 * The VMDK descriptor (VMware "Virtual Disk Format 1.1", section "The
 * Descriptor File") of a twoGbMaxExtentFlat disk: plain text naming the raw
 * files that make up the disk, in order. fsmeta comes first and the layer
 * images follow in the order of its device table, which is what makes the
 * mapped_blkaddr of each device right. The format's name promises extents
 * of at most 2 GiB, so a larger file is named by several extents at
 * increasing offsets.
 */

#define VMDK_SECTOR_BYTES 512ULL
#define VMDK_EXTENT_MAX_SECTORS ((2ULL << 30) / VMDK_SECTOR_BYTES)
/* Descriptor size bound: one line per 2 GiB of up to 257 files of 4 KiB paths. */
#define VMDK_LINE_MAX (4096 + 64)

typedef struct Buf {
        char *data;
        size_t len;
        size_t alloc;
} Buf;

static int buf_printf(Buf *b, const char *fmt, ...) _printf_(2, 3);
static int buf_printf(Buf *b, const char *fmt, ...) {
        va_list ap;
        int n;

        if (b->alloc - b->len < VMDK_LINE_MAX) {
                size_t a = b->alloc ? b->alloc * 2 : 16384;
                char *p = realloc(b->data, a);
                if (!p)
                        return -ENOMEM;
                b->data = p;
                b->alloc = a;
        }
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->alloc - b->len, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= b->alloc - b->len)
                return -ENOBUFS;
        b->len += (size_t) n;
        return 0;
}

static int add_extents(Buf *b, const char *path, uint64_t size, MsbError *err) {
        uint64_t sectors = size / VMDK_SECTOR_BYTES;
        int r;

        /* The descriptor quotes paths and is line-based. */
        if (path[0] != '/' || strpbrk(path, "\"\n\r") || strlen(path) > 4096)
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR,
                                     "cannot name %s in a VMDK descriptor", path);
        if (size == 0 || size % VMDK_SECTOR_BYTES != 0)
                return msb_error_set(err, -EINVAL, PROTO_ERROR_INTERNAL_ERROR,
                                     "%s has %" PRIu64 " bytes, not a whole number of sectors", path, size);
        for (uint64_t off = 0; off < sectors; off += VMDK_EXTENT_MAX_SECTORS) {
                uint64_t n = sectors - off < VMDK_EXTENT_MAX_SECTORS ? sectors - off : VMDK_EXTENT_MAX_SECTORS;
                r = buf_printf(b, "RW %" PRIu64 " FLAT \"%s\" %" PRIu64 "\n", n, path, off);
                if (r < 0)
                        return r;
        }
        return 0;
}

int vmdk_write(int out_fd, const char *fsmeta_path, uint64_t fsmeta_size,
               const char *const *layer_paths, const uint64_t *layer_sizes,
               size_t n_layers, MsbError *err) {
        _cleanup_free_ char *text = NULL;
        Buf extents = {}, all = {};
        uint64_t total = fsmeta_size, cylinders;
        uint32_t cid;
        int r;

        r = add_extents(&extents, fsmeta_path, fsmeta_size, err);
        for (size_t l = 0; r >= 0 && l < n_layers; l++) {
                r = add_extents(&extents, layer_paths[l], layer_sizes[l], err);
                total += layer_sizes[l];
        }
        if (r < 0) {
                free(extents.data);
                return r;
        }

        /* The content ID only has to change when the extents do; deriving
         * it from them keeps the descriptor reproducible. 0xffffffff means
         * "no parent" and is avoided. */
        cid = erofs_crc32c(~0U, extents.data, extents.len);
        if (cid == UINT32_MAX)
                cid--;
        cylinders = total / VMDK_SECTOR_BYTES / (16 * 63);
        if (cylinders > 16383)
                cylinders = 16383;
        if (cylinders == 0)
                cylinders = 1;

        r = buf_printf(&all,
                       "# Disk DescriptorFile\n"
                       "version=1\n"
                       "CID=%08x\n"
                       "parentCID=ffffffff\n"
                       "createType=\"twoGbMaxExtentFlat\"\n"
                       "\n"
                       "# Extent description\n",
                       cid);
        if (r >= 0) {
                /* The extent lines may be longer than one buffer step. */
                while (all.alloc - all.len < extents.len + VMDK_LINE_MAX) {
                        char *p = realloc(all.data, all.alloc * 2);
                        if (!p) {
                                r = -ENOMEM;
                                break;
                        }
                        all.data = p;
                        all.alloc *= 2;
                }
        }
        if (r >= 0) {
                memcpy(all.data + all.len, extents.data, extents.len);
                all.len += extents.len;
                r = buf_printf(&all,
                               "\n"
                               "# The Disk Data Base\n"
                               "#DDB\n"
                               "\n"
                               "ddb.virtualHWVersion = \"4\"\n"
                               "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
                               "ddb.geometry.heads = \"16\"\n"
                               "ddb.geometry.sectors = \"63\"\n"
                               "ddb.adapterType = \"ide\"\n",
                               cylinders);
        }
        free(extents.data);
        text = all.data;
        if (r < 0)
                return msb_error_from_errno(err, r, "building the VMDK descriptor");
        r = write_all(out_fd, text, all.len);
        if (r < 0)
                return msb_error_from_errno(err, r, "writing the VMDK descriptor");
        return 0;
}
