/* SPDX-License-Identifier: Apache-2.0 */
#include <sys/statvfs.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "erofs_writer_internal.h"

uint32_t erofs_crc32c(uint32_t crc, const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len--) {
                crc ^= *p++;
                for (unsigned k = 0; k < 8; k++)
                        crc = (crc >> 1) ^ (0x82F63B78U & (0U - (crc & 1)));
        }
        return crc;
}

static uint32_t head_blocks_for(size_t n_devices) {
        uint64_t bytes = EROFS_SUPER_OFFSET + sizeof(struct erofs_super_block) +
                         n_devices * sizeof(struct erofs_deviceslot);
        return (uint32_t) ((bytes + EROFS_BLKSZ - 1) / EROFS_BLKSZ);
}

int erofs_writer_new(int fd, size_t n_devices, ErofsWriter **ret) {
        _cleanup_(erofs_writer_freep) ErofsWriter *w = NULL;
        int r;

        if (fd < 0 || n_devices > UINT16_MAX)
                return -EINVAL;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->fd = fd;
        w->n_devices = n_devices;
        w->xattrs = HASHTAB_INIT(SharedXattr);
        w->xattr_key = hashtab_random_key();
        w->head_blocks = head_blocks_for(n_devices);
        w->pos = w->buf_off = w->writeback_from = (uint64_t) w->head_blocks * EROFS_BLKSZ;
        w->buf = malloc(WRITER_BUFFER_BYTES);
        w->chunk_map = malloc(EROFS_WRITER_FILE_CHUNKS_MAX * sizeof(*w->chunk_map));
        if (!w->buf || !w->chunk_map)
                return -ENOMEM;
        r = erofs_tree_new(&w->tree);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

ErofsWriter *erofs_writer_free(ErofsWriter *w) {
        if (!w)
                return NULL;
        erofs_tree_free(w->tree);
        free(w->buf);
        free(w->chunk_map);
        free(w->order);
        free(w->layout);
        free(w->shared_ids);
        free(w->meta);
        hashtab_done(&w->xattrs);
        free(w->xattr_area);
        free(w);
        /* A layer's tree is many small allocations on a worker thread's
         * malloc arena, which glibc keeps after they are freed; giving the
         * pages back keeps the daemon's resident size bounded by the layer
         * being converted now, not by the largest ever converted. */
        malloc_trim(0);
        return NULL;
}

ErofsTree *erofs_writer_tree(ErofsWriter *w) {
        return w->tree;
}

void erofs_writer_set_keep_free(ErofsWriter *w, uint64_t keep_free) {
        w->keep_free = keep_free;
}

/* -ENOSPC once the image's filesystem has less than the floor free. A
 * filesystem that cannot tell is not refused: its writes will say. */
static int writer_check_floor(ErofsWriter *w) {
        struct statvfs st;

        if (w->keep_free == 0 || fstatvfs(w->fd, &st) < 0)
                return 0;
        return (uint64_t) st.f_bavail * st.f_frsize < w->keep_free ? -ENOSPC : 0;
}

/* The data area is written up to end: once WRITER_WRITEBACK_BYTES more of
 * it are, starts their writeback and looks at the floor. Only
 * SYNC_FILE_RANGE_WRITE, never one of its WAIT flags: it neither waits for
 * the disk nor consumes a writeback error, which the fsync that makes the
 * image durable still reports. A refusal (an fd that is no regular file: a
 * pipe, a test's memfd) only ends the hints, since durability is not the
 * writer's business. */
static int writer_written(ErofsWriter *w, uint64_t end) {
        /* Whole blocks only: a partial one is written to again next. */
        end &= ~(uint64_t) (EROFS_BLKSZ - 1);
        if (end < w->writeback_from || end - w->writeback_from < WRITER_WRITEBACK_BYTES)
                return 0;
        if (!w->writeback_off && sync_file_range(w->fd, (off_t) w->writeback_from,
                                                 (off_t) (end - w->writeback_from), SYNC_FILE_RANGE_WRITE) < 0)
                w->writeback_off = true;
        w->writeback_from = end;
        return writer_check_floor(w);
}

int writer_flush(ErofsWriter *w) {
        int r;

        if (w->buf_len == 0)
                return 0;
        r = pwrite_all(w->fd, w->buf, w->buf_len, w->buf_off);
        if (r < 0)
                return r;
        w->buf_off += w->buf_len;
        w->buf_len = 0;
        return writer_written(w, w->buf_off);
}

/* Appends bytes to the data area at w->pos, through the buffer. */
int writer_data_append(ErofsWriter *w, const void *buf, size_t len) {
        const uint8_t *p = buf;
        int r;

        /* Large pieces go straight to the file once the buffer is drained:
         * no reason to copy them. */
        if (len >= WRITER_BUFFER_BYTES) {
                r = writer_flush(w);
                if (r < 0)
                        return r;
                r = pwrite_all(w->fd, p, len, w->pos);
                if (r < 0)
                        return r;
                w->pos += len;
                w->buf_off = w->pos;
                return writer_written(w, w->pos);
        }
        while (len > 0) {
                size_t n = WRITER_BUFFER_BYTES - w->buf_len;
                if (n > len)
                        n = len;
                memcpy(w->buf + w->buf_len, p, n);
                w->buf_len += n;
                w->pos += n;
                p += n;
                len -= n;
                if (w->buf_len == WRITER_BUFFER_BYTES) {
                        r = writer_flush(w);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int data_zero(ErofsWriter *w, uint64_t len) {
        static const uint8_t zeros[EROFS_BLKSZ];
        int r;

        while (len > 0) {
                size_t n = len > sizeof(zeros) ? sizeof(zeros) : (size_t) len;
                r = writer_data_append(w, zeros, n);
                if (r < 0)
                        return r;
                len -= n;
        }
        return 0;
}

unsigned erofs_writer_chunk_bits(uint64_t size) {
        unsigned bits = 0;

        while (bits < EROFS_CHUNK_FORMAT_BLKBITS_MASK && erofs_chunk_count(size, bits) > EROFS_WRITER_FILE_CHUNKS_MAX)
                bits++;
        return bits;
}

int erofs_writer_file_begin(ErofsWriter *w, uint64_t size) {
        unsigned bits = erofs_writer_chunk_bits(size);

        if (w->in_file)
                return -EBUSY;
        if (erofs_chunk_count(size, bits) > EROFS_WRITER_FILE_CHUNKS_MAX)
                return -EFBIG;
        w->in_file = true;
        w->chunk_open = false;
        w->chunk_bits = (uint8_t) bits;
        w->file_size = size;
        w->file_next = 0;
        w->n_chunks = erofs_chunk_count(size, bits);
        for (uint64_t k = 0; k < w->n_chunks; k++)
                w->chunk_map[k] = EROFS_NULL_ADDR;
        return 0;
}

/* Zero-fills the open chunk up to its end (or the file's), so the next
 * chunk starts on a chunk-sized step from this one. */
static int chunk_close(ErofsWriter *w) {
        uint64_t end = (w->chunk + 1) << (EROFS_BLKSZBITS + w->chunk_bits);
        int r;

        if (!w->chunk_open)
                return 0;
        if (end > w->file_size)
                end = w->file_size;
        r = data_zero(w, end - w->file_next);
        if (r < 0)
                return r;
        w->file_next = end;
        w->chunk_open = false;
        return 0;
}

/* Makes chunk k the open one, starting it at the data area's next block. */
static int chunk_open(ErofsWriter *w, uint64_t k) {
        int r;

        r = chunk_close(w);
        if (r < 0)
                return r;
        if (w->pos % EROFS_BLKSZ != 0)
                return -EFAULT;
        if (w->pos / EROFS_BLKSZ >= EROFS_NULL_ADDR)
                return -EFBIG;
        w->chunk_map[k] = (uint32_t) (w->pos / EROFS_BLKSZ);
        w->chunk = k;
        w->chunk_open = true;
        w->file_next = k << (EROFS_BLKSZBITS + w->chunk_bits);
        return 0;
}

int erofs_writer_file_write(ErofsWriter *w, uint64_t offset, const void *buf, size_t len) {
        unsigned shift = EROFS_BLKSZBITS + w->chunk_bits;
        uint64_t k, last, first_blk;
        int r;

        if (!w->in_file)
                return -EINVAL;
        if (offset < w->file_next || offset > w->file_size || len > w->file_size - offset)
                return -ERANGE;
        if (len == 0)
                return 0;
        k = offset >> shift;
        last = (offset + len - 1) >> shift;
        if (!w->chunk_open || k != w->chunk) {
                r = chunk_open(w, k);
                if (r < 0)
                        return r;
        }
        /* The piece goes in with one append, whatever chunks it runs into:
         * each chunk after k starts a chunk's length after the one before. */
        first_blk = w->chunk_map[k];
        if (first_blk + ((last - k) << w->chunk_bits) >= EROFS_NULL_ADDR)
                return -EFBIG;
        for (uint64_t j = k + 1; j <= last; j++)
                w->chunk_map[j] = (uint32_t) (first_blk + ((j - k) << w->chunk_bits));
        r = data_zero(w, offset - w->file_next);
        if (r < 0)
                return r;
        r = writer_data_append(w, buf, len);
        if (r < 0)
                return r;
        w->chunk = last;
        w->file_next = offset + len;
        return 0;
}

int erofs_writer_file_end(ErofsWriter *w, ErofsInode *inode) {
        uint64_t written = 0;
        uint32_t *map;
        int r;

        if (!w->in_file)
                return -EINVAL;
        r = chunk_close(w);
        if (r < 0)
                return r;
        if (w->pos % EROFS_BLKSZ != 0) {
                r = data_zero(w, EROFS_BLKSZ - w->pos % EROFS_BLKSZ);
                if (r < 0)
                        return r;
        }
        w->in_file = false;
        for (uint64_t k = 0; k < w->n_chunks; k++)
                written += w->chunk_map[k] != EROFS_NULL_ADDR;

        inode->size = w->file_size;
        if (written == w->n_chunks) {
                /* Every chunk was written, each right after the one before:
                 * the file is contiguous, stored flat as any other. */
                inode->blkaddr = w->n_chunks > 0 ? w->chunk_map[0] : 0;
                return 0;
        }
        map = malloc(w->n_chunks * sizeof(*map));
        if (!map)
                return -ENOMEM;
        memcpy(map, w->chunk_map, w->n_chunks * sizeof(*map));
        free(inode->chunks);
        inode->chunks = map;
        inode->chunk_bits = w->chunk_bits;
        inode->blkaddr = 0;
        return 0;
}

static int write_head(ErofsWriter *w, const ErofsWriterOptions *opts) {
        size_t head_bytes = (size_t) w->head_blocks * EROFS_BLKSZ;
        _cleanup_free_ uint8_t *head = calloc(1, head_bytes);
        uint8_t *sb;
        uint64_t mapped = w->total_blocks;

        if (!head)
                return -ENOMEM;
        sb = head + EROFS_SUPER_OFFSET;

#define SB(field) (sb + EROFS_OFF(struct erofs_super_block, field))
        erofs_put_le32(SB(magic), EROFS_SUPER_MAGIC);
        erofs_put_le32(SB(feature_compat), EROFS_FEATURE_COMPAT_SB_CHKSUM);
        *SB(blkszbits) = EROFS_BLKSZBITS;
        erofs_put_le16(SB(root_nid), (uint16_t) writer_layout_of(w, w->order[0])->nid);
        erofs_put_le64(SB(inos), w->n_order);
        erofs_put_le64(SB(build_time), (uint64_t) w->build_time);
        erofs_put_le32(SB(build_time_nsec), w->build_time_nsec);
        erofs_put_le32(SB(blocks), w->total_blocks);
        erofs_put_le32(SB(meta_blkaddr), w->meta_blkaddr);
        erofs_put_le32(SB(xattr_blkaddr), w->xattr_blkaddr);
        memcpy(SB(uuid), opts->uuid, 16);
        /* A layer image has chunk-based inodes only for files with holes:
         * ordinary layers keep a superblock without the feature. */
        if (w->has_chunked)
                erofs_put_le32(SB(feature_incompat), EROFS_FEATURE_INCOMPAT_CHUNKED_FILE);
        if (w->n_devices > 0) {
                uint64_t slotoff = (EROFS_SUPER_OFFSET + sizeof(struct erofs_super_block)) /
                                   sizeof(struct erofs_deviceslot);

                erofs_put_le32(SB(feature_incompat),
                               EROFS_FEATURE_INCOMPAT_CHUNKED_FILE | EROFS_FEATURE_INCOMPAT_DEVICE_TABLE);
                erofs_put_le16(SB(extra_devices), (uint16_t) w->n_devices);
                erofs_put_le16(SB(devt_slotoff), (uint16_t) slotoff);

                /* Each device starts where the previous one ends when the
                 * images are concatenated after this one (the VMDK's order). */
                for (size_t d = 0; d < w->n_devices; d++) {
                        uint8_t *s = head + slotoff * sizeof(struct erofs_deviceslot) +
                                     d * sizeof(struct erofs_deviceslot);
                        if (mapped > UINT32_MAX)
                                return -EFBIG;
                        memcpy(s + EROFS_OFF(struct erofs_deviceslot, tag), opts->devices[d].tag, 64);
                        erofs_put_le32(s + EROFS_OFF(struct erofs_deviceslot, blocks), opts->devices[d].blocks);
                        erofs_put_le32(s + EROFS_OFF(struct erofs_deviceslot, mapped_blkaddr), (uint32_t) mapped);
                        mapped += opts->devices[d].blocks;
                }
        }
        /* The checksum covers the rest of block 0 from the superblock on. */
        erofs_put_le32(SB(checksum), erofs_crc32c(~0U, sb, EROFS_BLKSZ - EROFS_SUPER_OFFSET));
#undef SB
        return pwrite_all(w->fd, head, head_bytes, 0);
}

int erofs_writer_finish(ErofsWriter *w, const ErofsWriterOptions *opts, uint64_t *ret_size) {
        int r;

        if (w->in_file)
                return -EBUSY;
        r = writer_flush(w);
        if (r < 0)
                return r;
        /* No name is looked up from here on: the index goes before the
         * layout's side array comes. */
        erofs_tree_freeze(w->tree);

        r = writer_layout_collect(w);
        if (r < 0)
                return r;
        writer_layout_build_time(w);
        r = writer_layout_xattrs(w);
        if (r < 0)
                return r;
        r = writer_layout_place(w);
        if (r < 0)
                return r;
        r = writer_layout_blocks(w);
        if (r < 0)
                return r;

        r = writer_write_inodes(w);
        if (r < 0)
                return r;
        if (w->xattr_area_len > 0) {
                r = pwrite_all(w->fd, w->xattr_area, (size_t) ((w->xattr_area_len + EROFS_BLKSZ - 1) & ~(uint64_t) (EROFS_BLKSZ - 1)),
                               (uint64_t) w->xattr_blkaddr * EROFS_BLKSZ);
                if (r < 0)
                        return r;
        }
        r = write_head(w, opts);
        if (r < 0)
                return r;
        if (ftruncate(w->fd, (off_t) w->total_blocks * EROFS_BLKSZ) < 0)
                return negative_errno();
        *ret_size = (uint64_t) w->total_blocks * EROFS_BLKSZ;
        return 0;
}

int erofs_writer_uuid_from_digest(const char *label, const char *digest, uint8_t ret[16]) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        int ok;

        if (!md)
                return -ENOMEM;
        ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(md, label, strlen(label)) == 1 &&
             EVP_DigestUpdate(md, digest, strlen(digest)) == 1 && EVP_DigestFinal_ex(md, d, &len) == 1;
        EVP_MD_CTX_free(md);
        if (!ok)
                return -EIO;
        /* Shaped as an RFC 9562 version 8 (custom) UUID. */
        memcpy(ret, d, 16);
        ret[6] = (uint8_t) ((ret[6] & 0x0f) | 0x80);
        ret[8] = (uint8_t) ((ret[8] & 0x3f) | 0x80);
        return 0;
}
