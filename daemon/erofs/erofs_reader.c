/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "erofs_fs.h"
#include "erofs_reader.h"
#include "erofs_writer.h"

struct ErofsImage {
        const uint8_t *map;
        uint64_t size;
        uint64_t root_nid;
        uint32_t blocks;
        uint32_t meta_blkaddr;
        uint32_t xattr_blkaddr;
        int64_t build_time;
        uint32_t build_time_nsec;
};

int erofs_image_open(const char *path, ErofsImage **ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ ErofsImage *img = NULL;
        struct stat st;
        const uint8_t *sb;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) || st.st_size < EROFS_BLKSZ || st.st_size % EROFS_BLKSZ != 0)
                return -EUCLEAN;
        img = calloc(1, sizeof(*img));
        if (!img)
                return -ENOMEM;
        img->size = (uint64_t) st.st_size;
        img->map = mmap(NULL, img->size, PROT_READ, MAP_SHARED, fd, 0);
        if (img->map == MAP_FAILED) {
                img->map = NULL;
                return negative_errno();
        }

        sb = img->map + EROFS_SUPER_OFFSET;
#define SB(field) (sb + EROFS_OFF(struct erofs_super_block, field))
        if (erofs_get_le32(SB(magic)) != EROFS_SUPER_MAGIC || *SB(blkszbits) != EROFS_BLKSZBITS)
                goto corrupt;
        if (erofs_get_le32(SB(feature_compat)) & EROFS_FEATURE_COMPAT_SB_CHKSUM) {
                uint8_t block[EROFS_BLKSZ - EROFS_SUPER_OFFSET];
                memcpy(block, sb, sizeof(block));
                erofs_put_le32(block + EROFS_OFF(struct erofs_super_block, checksum), 0);
                if (erofs_crc32c(~0U, block, sizeof(block)) != erofs_get_le32(SB(checksum)))
                        goto corrupt;
        }
        img->root_nid = erofs_get_le16(SB(root_nid));
        img->blocks = erofs_get_le32(SB(blocks));
        img->meta_blkaddr = erofs_get_le32(SB(meta_blkaddr));
        img->xattr_blkaddr = erofs_get_le32(SB(xattr_blkaddr));
        img->build_time = (int64_t) erofs_get_le64(SB(build_time));
        img->build_time_nsec = erofs_get_le32(SB(build_time_nsec));
#undef SB
        if ((uint64_t) img->blocks * EROFS_BLKSZ != img->size)
                goto corrupt;
        *ret = TAKE_PTR(img);
        return 0;

corrupt:
        munmap((void *) img->map, img->size);
        return -EUCLEAN;
}

ErofsImage *erofs_image_close(ErofsImage *img) {
        if (!img)
                return NULL;
        if (img->map)
                munmap((void *) img->map, img->size);
        free(img);
        return NULL;
}

uint64_t erofs_image_root_nid(const ErofsImage *img) {
        return img->root_nid;
}

uint32_t erofs_image_blocks(const ErofsImage *img) {
        return img->blocks;
}

static bool in_image(const ErofsImage *img, uint64_t off, uint64_t len) {
        return off <= img->size && len <= img->size - off;
}

static uint64_t chunk_unit(const ErofsInodeView *v) {
        return (v->chunk_format & EROFS_CHUNK_FORMAT_INDEXES) ? sizeof(struct erofs_inode_chunk_index)
                                                               : EROFS_BLOCK_MAP_ENTRY_SIZE;
}

/* Finds a chunk-based inode's map (erofs.rst "Chunk-based files"): right
 * after the inode and its xattrs, aligned to its entry size, one entry per
 * chunk. The whole map must be inside the image. */
static int chunk_map_locate(const ErofsImage *img, ErofsInodeView *v) {
        uint64_t unit;

        if (!S_ISREG(v->mode) || (v->chunk_format & ~(EROFS_CHUNK_FORMAT_BLKBITS_MASK | EROFS_CHUNK_FORMAT_INDEXES)))
                return -EUCLEAN;
        unit = chunk_unit(v);
        v->chunk_bits = (uint8_t) (v->chunk_format & EROFS_CHUNK_FORMAT_BLKBITS_MASK);
        v->chunk_count = erofs_chunk_count(v->size, v->chunk_bits);
        v->chunk_off = (v->tail_off + unit - 1) & ~(unit - 1);
        /* chunk_count <= 2^52 (size >> 12), so the product cannot overflow. */
        if (!in_image(img, v->chunk_off, v->chunk_count * unit))
                return -EUCLEAN;
        return 0;
}

int erofs_image_chunk(const ErofsImage *img, const ErofsInodeView *v, uint64_t k, uint32_t *ret_blkaddr,
                      uint16_t *ret_device) {
        uint64_t unit = chunk_unit(v), shift = EROFS_BLKSZBITS + v->chunk_bits, len;
        const uint8_t *p;
        uint32_t blkaddr;
        uint16_t device = 0;

        if (v->datalayout != EROFS_INODE_CHUNK_BASED || k >= v->chunk_count)
                return -EINVAL;
        p = img->map + v->chunk_off + k * unit;
        if (unit == EROFS_BLOCK_MAP_ENTRY_SIZE)
                blkaddr = erofs_get_le32(p);
        else {
                blkaddr = erofs_get_le32(p + EROFS_OFF(struct erofs_inode_chunk_index, blkaddr));
                device = erofs_get_le16(p + EROFS_OFF(struct erofs_inode_chunk_index, device_id));
        }
        if (blkaddr == EROFS_NULL_ADDR)
                device = 0;
        else if (device == 0) {
                /* The chunk's blocks: a whole chunk, or the file's last blocks. */
                len = v->size - (k << shift);
                if (len > (1ULL << shift))
                        len = 1ULL << shift;
                if (!in_image(img, (uint64_t) blkaddr * EROFS_BLKSZ, len))
                        return -EUCLEAN;
        }
        *ret_blkaddr = blkaddr;
        *ret_device = device;
        return 0;
}

int erofs_image_inode(const ErofsImage *img, uint64_t nid, ErofsInodeView *ret) {
        uint64_t off = (uint64_t) img->meta_blkaddr * EROFS_BLKSZ + nid * EROFS_ISLOTSIZE;
        ErofsInodeView v = { .nid = nid };
        const uint8_t *p;
        uint16_t format, icount;
        uint32_t isize, iu;

        if (nid > (UINT64_MAX >> EROFS_ISLOTBITS) || !in_image(img, off, sizeof(struct erofs_inode_compact)))
                return -EUCLEAN;
        p = img->map + off;
        format = erofs_get_le16(p);
        v.datalayout = (format >> EROFS_I_DATALAYOUT_BIT) & 0x7;
        if (format & 1) {
                if (!in_image(img, off, sizeof(struct erofs_inode_extended)))
                        return -EUCLEAN;
#define X(field) (p + EROFS_OFF(struct erofs_inode_extended, field))
                isize = sizeof(struct erofs_inode_extended);
                icount = erofs_get_le16(X(i_xattr_icount));
                v.mode = erofs_get_le16(X(i_mode));
                v.size = erofs_get_le64(X(i_size));
                iu = erofs_get_le32(X(i_u));
                v.uid = erofs_get_le32(X(i_uid));
                v.gid = erofs_get_le32(X(i_gid));
                v.mtime = (int64_t) erofs_get_le64(X(i_mtime));
                v.mtime_nsec = erofs_get_le32(X(i_mtime_nsec));
                v.nlink = erofs_get_le32(X(i_nlink));
#undef X
        } else {
#define C(field) (p + EROFS_OFF(struct erofs_inode_compact, field))
                isize = sizeof(struct erofs_inode_compact);
                icount = erofs_get_le16(C(i_xattr_icount));
                v.mode = erofs_get_le16(C(i_mode));
                v.size = erofs_get_le32(C(i_size));
                iu = erofs_get_le32(C(i_u));
                v.uid = erofs_get_le16(C(i_uid));
                v.gid = erofs_get_le16(C(i_gid));
                v.mtime = img->build_time;
                v.mtime_nsec = img->build_time_nsec;
                v.nlink = erofs_get_le16(C(i_nlink));
#undef C
        }
        v.raw_blkaddr = iu;
        v.rdev = iu;
        v.chunk_format = (uint16_t) iu;
        v.xattr_size = erofs_xattr_ibody_size(icount);
        if (v.xattr_size > 0)
                v.xattr_off = off + isize;
        v.tail_off = off + isize + v.xattr_size;
        if (!in_image(img, off, (uint64_t) isize + v.xattr_size))
                return -EUCLEAN;
        if (v.datalayout == EROFS_INODE_CHUNK_BASED) {
                int r = chunk_map_locate(img, &v);
                if (r < 0)
                        return r;
        }
        *ret = v;
        return 0;
}

/* Reads through the chunk map: a hole gives zeros, a chunk on this image
 * its bytes (erofs_image_chunk() checked it lies inside). */
static int read_chunked(const ErofsImage *img, const ErofsInodeView *v, uint64_t offset, uint8_t *out, size_t len) {
        uint64_t shift = EROFS_BLKSZBITS + v->chunk_bits;

        while (len > 0) {
                uint64_t k = offset >> shift, in_chunk = offset - (k << shift);
                uint64_t n = (1ULL << shift) - in_chunk;
                uint32_t blkaddr;
                uint16_t device;
                int r;

                if (n > len)
                        n = len;
                r = erofs_image_chunk(img, v, k, &blkaddr, &device);
                if (r < 0)
                        return r;
                if (device != 0)
                        return -EOPNOTSUPP;
                if (blkaddr == EROFS_NULL_ADDR)
                        memset(out, 0, n);
                else
                        memcpy(out, img->map + (uint64_t) blkaddr * EROFS_BLKSZ + in_chunk, n);
                out += n;
                offset += n;
                len -= n;
        }
        return 0;
}

int erofs_image_read(const ErofsImage *img, const ErofsInodeView *v, uint64_t offset, void *buf, size_t len) {
        uint64_t full_blocks = v->size / EROFS_BLKSZ;
        uint8_t *out = buf;

        if (offset > v->size || len > v->size - offset)
                return -EINVAL;
        if (v->datalayout == EROFS_INODE_CHUNK_BASED)
                return read_chunked(img, v, offset, buf, len);
        if (v->datalayout != EROFS_INODE_FLAT_PLAIN && v->datalayout != EROFS_INODE_FLAT_INLINE)
                return -EOPNOTSUPP;
        while (len > 0) {
                uint64_t in_block = EROFS_BLKSZ - offset % EROFS_BLKSZ, n = len < in_block ? len : in_block;
                uint64_t src;

                if (v->datalayout == EROFS_INODE_FLAT_INLINE && offset / EROFS_BLKSZ >= full_blocks)
                        src = v->tail_off + offset % EROFS_BLKSZ;
                else
                        src = (uint64_t) v->raw_blkaddr * EROFS_BLKSZ + offset;
                if (!in_image(img, src, n))
                        return -EUCLEAN;
                memcpy(out, img->map + src, n);
                out += n;
                offset += n;
                len -= n;
        }
        return 0;
}

int erofs_image_readdir(const ErofsImage *img, const ErofsInodeView *v, erofs_dirent_cb cb, void *userdata) {
        _cleanup_free_ uint8_t *block = malloc(EROFS_BLKSZ);
        int r;

        if (!block)
                return -ENOMEM;
        if (!S_ISDIR(v->mode))
                return -ENOTDIR;
        for (uint64_t pos = 0; pos < v->size; pos += EROFS_BLKSZ) {
                size_t bsize = v->size - pos < EROFS_BLKSZ ? (size_t) (v->size - pos) : EROFS_BLKSZ;
                size_t n, nameoff0;

                r = erofs_image_read(img, v, pos, block, bsize);
                if (r < 0)
                        return r;
                if (bsize < sizeof(struct erofs_dirent))
                        return -EUCLEAN;
                nameoff0 = erofs_get_le16(block + EROFS_OFF(struct erofs_dirent, nameoff));
                if (nameoff0 < sizeof(struct erofs_dirent) || nameoff0 % sizeof(struct erofs_dirent) != 0 ||
                    nameoff0 > bsize)
                        return -EUCLEAN;
                n = nameoff0 / sizeof(struct erofs_dirent);
                for (size_t k = 0; k < n; k++) {
                        const uint8_t *d = block + k * sizeof(struct erofs_dirent);
                        size_t off = erofs_get_le16(d + EROFS_OFF(struct erofs_dirent, nameoff)), end;

                        if (k + 1 < n)
                                end = erofs_get_le16(d + sizeof(struct erofs_dirent) +
                                                     EROFS_OFF(struct erofs_dirent, nameoff));
                        else {
                                end = off;
                                while (end < bsize && block[end] != 0)
                                        end++;
                        }
                        if (off < nameoff0 || end <= off || end > bsize)
                                return -EUCLEAN;
                        const char *name = (const char *) block + off;
                        size_t len = end - off;
                        if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
                                continue;
                        r = cb(name, len, erofs_get_le64(d + EROFS_OFF(struct erofs_dirent, nid)),
                               d[EROFS_OFF(struct erofs_dirent, file_type)], userdata);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int xattr_entries(const ErofsImage *img, uint64_t off, uint64_t end, bool one, erofs_xattr_cb cb,
                         void *userdata) {
        while (off < end) {
                const uint8_t *e;
                uint32_t nl, vl;
                int r;

                if (!in_image(img, off, sizeof(struct erofs_xattr_entry)))
                        return -EUCLEAN;
                e = img->map + off;
                nl = e[0];
                vl = erofs_get_le16(e + 2);
                if (!in_image(img, off, sizeof(struct erofs_xattr_entry) + nl + vl))
                        return -EUCLEAN;
                r = cb(e[1], (const char *) e + 4, nl, e + 4 + nl, vl, userdata);
                if (r < 0)
                        return r;
                if (one)
                        break;
                off += erofs_xattr_entry_size(nl, vl);
        }
        return 0;
}

int erofs_image_xattrs(const ErofsImage *img, const ErofsInodeView *v, erofs_xattr_cb cb, void *userdata) {
        uint64_t off, end;
        uint8_t shared;
        int r;

        if (v->xattr_size == 0)
                return 0;
        off = v->xattr_off;
        end = off + v->xattr_size;
        shared = img->map[off + EROFS_OFF(struct erofs_xattr_ibody_header, h_shared_count)];
        off += sizeof(struct erofs_xattr_ibody_header);
        if (off + 4ULL * shared > end)
                return -EUCLEAN;
        for (unsigned k = 0; k < shared; k++) {
                uint32_t id = erofs_get_le32(img->map + off + 4ULL * k);
                uint64_t at = (uint64_t) img->xattr_blkaddr * EROFS_BLKSZ + 4ULL * id;
                r = xattr_entries(img, at, at + 1, true, cb, userdata);
                if (r < 0)
                        return r;
        }
        return xattr_entries(img, off + 4ULL * shared, end, false, cb, userdata);
}
