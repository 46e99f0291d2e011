/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The EROFS on-disk format, as far as this project writes and reads it.
 *
 * Written from the Linux kernel's Documentation/filesystems/erofs.rst and
 * fs/erofs/erofs_fs.h. Every multi-byte field is little-endian on disk; the
 * structures are only ever filled through the erofs_put_le*() helpers and
 * read through erofs_get_le*() below, so the code is correct on any host.
 * Each structure's size is pinned with a static_assert, because one byte of
 * drift silently corrupts every image.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The superblock lives at byte 1024 so that a boot sector can precede it. */
#define EROFS_SUPER_OFFSET 1024
#define EROFS_SUPER_MAGIC 0xE0F5E1E2U

/* This project always writes 4 KiB blocks (blkszbits 12). */
#define EROFS_BLKSZBITS 12
#define EROFS_BLKSZ (1U << EROFS_BLKSZBITS)

/* Inodes are addressed by nid: byte offset = meta_blkaddr * blksz + nid * 32. */
#define EROFS_ISLOTBITS 5
#define EROFS_ISLOTSIZE (1U << EROFS_ISLOTBITS)

/* feature_compat: the superblock carries a CRC32C of its block. */
#define EROFS_FEATURE_COMPAT_SB_CHKSUM 0x00000001U
/* feature_incompat: chunk-based inodes exist (fsmeta). */
#define EROFS_FEATURE_INCOMPAT_CHUNKED_FILE 0x00000004U
/* feature_incompat: a device table follows the superblock (fsmeta). */
#define EROFS_FEATURE_INCOMPAT_DEVICE_TABLE 0x00000008U

/* i_format bit 0: 0 = 32-byte compact inode, 1 = 64-byte extended inode. */
#define EROFS_INODE_LAYOUT_COMPACT 0
#define EROFS_INODE_LAYOUT_EXTENDED 1
/* i_format bits 1-3: how the inode's data is laid out. */
#define EROFS_INODE_FLAT_PLAIN 0   /* whole blocks at raw_blkaddr, no tail packing */
#define EROFS_INODE_FLAT_INLINE 2  /* whole blocks at raw_blkaddr, tail right after the inode */
#define EROFS_INODE_CHUNK_BASED 4  /* chunk index array right after the inode */
#define EROFS_I_DATALAYOUT_BIT 1

/* chunk_info.format bits 0-4: chunk size = block size << bits. */
#define EROFS_CHUNK_FORMAT_BLKBITS_MASK 0x001F
/* chunk_info.format: 8-byte chunk indexes (with a device id) instead of 4-byte block addresses. */
#define EROFS_CHUNK_FORMAT_INDEXES 0x0020
/* Without EROFS_CHUNK_FORMAT_INDEXES the chunk map is a "block map": one
 * little-endian 32-bit block address per chunk, on the image itself. */
#define EROFS_BLOCK_MAP_ENTRY_SIZE 4U

/* A chunk address meaning "hole": reads give zeros. */
#define EROFS_NULL_ADDR UINT32_MAX

/* The longest file name a dirent can carry. */
#define EROFS_NAME_LEN 255

/* xattr name indexes: the prefix of the name is implied by the index. */
#define EROFS_XATTR_INDEX_USER 1
#define EROFS_XATTR_INDEX_POSIX_ACL_ACCESS 2
#define EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT 3
#define EROFS_XATTR_INDEX_TRUSTED 4
#define EROFS_XATTR_INDEX_SECURITY 6

/* Directory entry file types; they match the generic FT_* values. */
#define EROFS_FT_UNKNOWN 0
#define EROFS_FT_REG_FILE 1
#define EROFS_FT_DIR 2
#define EROFS_FT_CHRDEV 3
#define EROFS_FT_BLKDEV 4
#define EROFS_FT_FIFO 5
#define EROFS_FT_SOCK 6
#define EROFS_FT_SYMLINK 7

/* One slot of the device table, 128 bytes (erofs.rst "Multiple devices"). */
struct erofs_deviceslot {
        uint8_t tag[64];            /* identifies the device: we store the layer's diff_id hex */
        uint32_t blocks;            /* total blocks of this device */
        uint32_t mapped_blkaddr;    /* where this device starts when all are concatenated */
        uint8_t reserved[56];       /* zero */
};
static_assert(sizeof(struct erofs_deviceslot) == 128, "erofs_deviceslot must be 128 bytes");

/* The superblock, 128 bytes at byte 1024 of block 0. */
struct erofs_super_block {
        uint32_t magic;             /* EROFS_SUPER_MAGIC */
        uint32_t checksum;          /* crc32c(~0) of the rest of block 0 from byte 1024, this field zeroed */
        uint32_t feature_compat;    /* EROFS_FEATURE_COMPAT_* */
        uint8_t blkszbits;          /* log2 of the block size */
        uint8_t sb_extslots;        /* superblock size = 128 + sb_extslots * 16; we write 0 */
        uint16_t root_nid;          /* nid of the root directory (must fit 16 bits) */
        uint64_t inos;              /* number of inodes */
        uint64_t build_time;        /* mtime seconds of every compact inode */
        uint32_t build_time_nsec;   /* mtime nanoseconds of every compact inode */
        uint32_t blocks;            /* total blocks of this image (statfs) */
        uint32_t meta_blkaddr;      /* first block of the inode area */
        uint32_t xattr_blkaddr;     /* first block of the shared xattr area */
        uint8_t uuid[16];           /* volume UUID; we derive it from a digest */
        uint8_t volume_name[16];    /* zero */
        uint32_t feature_incompat;  /* EROFS_FEATURE_INCOMPAT_* */
        uint16_t available_compr_algs; /* zero: nothing is compressed */
        uint16_t extra_devices;     /* number of devices besides this image */
        uint16_t devt_slotoff;      /* device table byte offset / 128 */
        uint8_t dirblkbits;         /* directory block size - block size, in bits; 0 */
        uint8_t xattr_prefix_count; /* long xattr name prefixes; 0 */
        uint32_t xattr_prefix_start; /* unused: 0 */
        uint64_t packed_nid;        /* unused: 0 */
        uint8_t xattr_filter_reserved; /* unused: 0 */
        uint8_t reserved2[23];      /* zero */
} __attribute__((packed));
static_assert(sizeof(struct erofs_super_block) == 128, "erofs_super_block must be 128 bytes");

/* Chunk summary of a chunk-based inode, in place of raw_blkaddr. */
struct erofs_inode_chunk_info {
        uint16_t format;            /* chunk blkbits | EROFS_CHUNK_FORMAT_INDEXES */
        uint16_t reserved;          /* zero */
};
static_assert(sizeof(struct erofs_inode_chunk_info) == 4, "erofs_inode_chunk_info must be 4 bytes");

/* The 32-byte compact inode: 16-bit ids and nlink, 32-bit size, mtime = build_time. */
struct erofs_inode_compact {
        uint16_t i_format;          /* layout bit | data layout << 1 */
        uint16_t i_xattr_icount;    /* inline xattr area = 12 + 4 * (icount - 1) bytes, 0 = none */
        uint16_t i_mode;            /* file type and permission bits */
        uint16_t i_nlink;           /* hard link count */
        uint32_t i_size;            /* file size in bytes */
        uint32_t i_reserved;        /* zero (newer kernels: mtime offset from build_time) */
        uint32_t i_u;               /* raw_blkaddr, rdev or erofs_inode_chunk_info */
        uint32_t i_ino;             /* inode number for 32-bit stat */
        uint16_t i_uid;             /* owner */
        uint16_t i_gid;             /* group */
        uint32_t i_reserved2;       /* zero */
};
static_assert(sizeof(struct erofs_inode_compact) == 32, "erofs_inode_compact must be 32 bytes");

/* The 64-byte extended inode: 32-bit ids and nlink, 64-bit size, own mtime. */
struct erofs_inode_extended {
        uint16_t i_format;          /* layout bit | data layout << 1 */
        uint16_t i_xattr_icount;    /* as in the compact inode */
        uint16_t i_mode;            /* file type and permission bits */
        uint16_t i_reserved;        /* zero */
        uint64_t i_size;            /* file size in bytes */
        uint32_t i_u;               /* raw_blkaddr, rdev or erofs_inode_chunk_info */
        uint32_t i_ino;             /* inode number for 32-bit stat */
        uint32_t i_uid;             /* owner */
        uint32_t i_gid;             /* group */
        uint64_t i_mtime;           /* modification time, seconds */
        uint32_t i_mtime_nsec;      /* modification time, nanoseconds */
        uint32_t i_nlink;           /* hard link count */
        uint8_t i_reserved2[16];    /* zero */
} __attribute__((packed));
static_assert(sizeof(struct erofs_inode_extended) == 64, "erofs_inode_extended must be 64 bytes");

/* Header of the inline xattr area that follows an inode. */
struct erofs_xattr_ibody_header {
        uint32_t h_name_filter;     /* bloom filter; unused without the xattr filter feature: 0 */
        uint8_t h_shared_count;     /* number of shared xattr ids that follow */
        uint8_t h_reserved2[7];     /* zero */
        /* followed by h_shared_count 32-bit shared xattr ids */
};
static_assert(sizeof(struct erofs_xattr_ibody_header) == 12, "erofs_xattr_ibody_header must be 12 bytes");

/* One xattr entry, inline or shared; padded to 4 bytes. */
struct erofs_xattr_entry {
        uint8_t e_name_len;         /* length of the name suffix after the index's prefix */
        uint8_t e_name_index;       /* EROFS_XATTR_INDEX_* */
        uint16_t e_value_size;      /* length of the value */
        /* followed by the name suffix and the value */
};
static_assert(sizeof(struct erofs_xattr_entry) == 4, "erofs_xattr_entry must be 4 bytes");

/* One 8-byte chunk index of a chunk-based inode with EROFS_CHUNK_FORMAT_INDEXES. */
struct erofs_inode_chunk_index {
        uint16_t advise;            /* zero */
        uint16_t device_id;         /* 0 = this image, n = n-th entry of the device table */
        uint32_t blkaddr;           /* first block of the chunk on that device */
};
static_assert(sizeof(struct erofs_inode_chunk_index) == 8, "erofs_inode_chunk_index must be 8 bytes");

/* A directory entry; names follow the dirent array of each block, unterminated. */
struct erofs_dirent {
        uint64_t nid;               /* inode of the entry */
        uint16_t nameoff;           /* name offset within the block; the first one / 12 = dirent count */
        uint8_t file_type;          /* EROFS_FT_* */
        uint8_t reserved;           /* zero */
} __attribute__((packed));
static_assert(sizeof(struct erofs_dirent) == 12, "erofs_dirent must be 12 bytes");

/* Little-endian accessors: the only way the code touches on-disk integers. */
static inline void erofs_put_le16(void *p, uint16_t v) {
        uint8_t *b = p;
        b[0] = v & 0xff;
        b[1] = v >> 8;
}

static inline void erofs_put_le32(void *p, uint32_t v) {
        uint8_t *b = p;
        for (unsigned i = 0; i < 4; i++)
                b[i] = (v >> (8 * i)) & 0xff;
}

static inline void erofs_put_le64(void *p, uint64_t v) {
        uint8_t *b = p;
        for (unsigned i = 0; i < 8; i++)
                b[i] = (v >> (8 * i)) & 0xff;
}

static inline uint16_t erofs_get_le16(const void *p) {
        const uint8_t *b = p;
        return (uint16_t) (b[0] | (b[1] << 8));
}

static inline uint32_t erofs_get_le32(const void *p) {
        const uint8_t *b = p;
        return (uint32_t) b[0] | ((uint32_t) b[1] << 8) | ((uint32_t) b[2] << 16) | ((uint32_t) b[3] << 24);
}

static inline uint64_t erofs_get_le64(const void *p) {
        return (uint64_t) erofs_get_le32(p) | ((uint64_t) erofs_get_le32((const uint8_t *) p + 4) << 32);
}

/* Field offsets for the accessors, so code writes `b + EROFS_OFF(struct, field)`. */
#define EROFS_OFF(type, field) offsetof(type, field)

/* Size of an inline xattr area from its i_xattr_icount. */
static inline uint32_t erofs_xattr_ibody_size(uint16_t icount) {
        return icount == 0 ? 0 : (uint32_t) sizeof(struct erofs_xattr_ibody_header) + 4U * (icount - 1U);
}

/* Size of one xattr entry with its name and value, padded to 4 bytes. */
static inline uint32_t erofs_xattr_entry_size(uint32_t name_len, uint32_t value_len) {
        return (uint32_t) ((sizeof(struct erofs_xattr_entry) + name_len + value_len + 3) & ~(size_t) 3);
}

/* Chunks of a chunk-based inode of `size` bytes whose chunks are
 * EROFS_BLKSZ << chunk_bits bytes (the last one may be shorter). */
static inline uint64_t erofs_chunk_count(uint64_t size, unsigned chunk_bits) {
        unsigned shift = EROFS_BLKSZBITS + chunk_bits;
        return (size >> shift) + ((size & ((1ULL << shift) - 1)) != 0);
}

/* Linux's new_encode_dev(): how a device number is stored in i_u. */
static inline uint32_t erofs_encode_dev(uint32_t major, uint32_t minor) {
        return (minor & 0xff) | (major << 8) | ((minor & ~0xffU) << 12);
}

static inline void erofs_decode_dev(uint32_t v, uint32_t *ret_major, uint32_t *ret_minor) {
        *ret_major = (v & 0xfff00) >> 8;
        *ret_minor = (v & 0xff) | ((v >> 12) & 0xfff00);
}
