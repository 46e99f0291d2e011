/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * SHA-256 content digests as OCI writes them: "sha256:" followed by 64
 * lowercase hex digits (OCI image-spec, descriptor.md "Digests"). Only
 * sha256 is supported; it is the algorithm every registry and every image
 * we handle uses, and accepting others would need a second hash per byte.
 *
 * The hashing is OpenSSL EVP, streaming, so pulls can hash bytes as they
 * arrive and never read a blob twice.
 */

#include "util.h"

#define DIGEST_ALGORITHM_PREFIX "sha256:"
#define DIGEST_ALGORITHM_PREFIX_LEN 7
#define DIGEST_HEX_LEN 64
/* "sha256:" + 64 hex digits + NUL. */
#define DIGEST_STRING_MAX (7 + 64 + 1)

/* Bytes digest_fd() reads per pread(2): large enough that syscall overhead
 * is negligible next to hashing, small enough to stay in L2 cache. */
#define DIGEST_READ_BUFFER_BYTES (1 * MiB)

/* True when s is "sha256:" followed by exactly 64 lowercase hex digits. */
bool digest_is_valid(const char *s);

/* The hex part of a valid digest (a pointer into it, past "sha256:"), or
 * NULL when digest is not valid. */
const char *digest_hex(const char *digest);

typedef struct Sha256 Sha256;

/* A new streaming hash; 0, -ENOMEM, or -EIO if OpenSSL cannot provide sha256. */
int sha256_new(Sha256 **ret);

/* Feeds n bytes. A failure inside OpenSSL is remembered and reported by
 * sha256_final_string() rather than here, so callers can feed bytes from a
 * callback without an error path. */
void sha256_update(Sha256 *h, const void *p, size_t n);

/*
 * Writes "sha256:<hex>" of everything fed since creation (or the previous
 * final) and resets h to hash a new stream. If OpenSSL failed at any point,
 * ret is the empty string: it never equals a valid digest, so a caller that
 * verifies content against an expected digest rejects it.
 */
void sha256_final_string(Sha256 *h, char ret[DIGEST_STRING_MAX]);

Sha256 *sha256_free(Sha256 *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(Sha256 *, sha256_free);

/* The digest of a buffer; 0 or a negative errno. */
int digest_buffer(const void *p, size_t n, char ret[DIGEST_STRING_MAX]);

/*
 * The digest of the whole content of fd, read with pread(2) from offset 0 so
 * the file offset is left alone; *ret_size (may be NULL) gets the byte
 * count. 0 or a negative errno.
 */
int digest_fd(int fd, char ret[DIGEST_STRING_MAX], uint64_t *ret_size);
