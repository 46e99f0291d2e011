/* SPDX-License-Identifier: Apache-2.0 */

#include <openssl/evp.h>

#include "digest.h"

struct Sha256 {
        EVP_MD_CTX *ctx;
        bool failed;
};

static bool char_is_lower_hex(char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool digest_is_valid(const char *s) {
        if (!s || !startswith(s, DIGEST_ALGORITHM_PREFIX))
                return false;

        s += DIGEST_ALGORITHM_PREFIX_LEN;
        for (size_t i = 0; i < DIGEST_HEX_LEN; i++)
                if (!char_is_lower_hex(s[i]))
                        return false; /* Also stops at a NUL before 64 digits. */

        return s[DIGEST_HEX_LEN] == '\0';
}

const char *digest_hex(const char *digest) {
        if (!digest_is_valid(digest))
                return NULL;
        return digest + DIGEST_ALGORITHM_PREFIX_LEN;
}

int sha256_new(Sha256 **ret) {
        Sha256 *h;

        h = calloc(1, sizeof(Sha256));
        if (!h)
                return -ENOMEM;

        h->ctx = EVP_MD_CTX_new();
        if (!h->ctx) {
                free(h);
                return -ENOMEM;
        }

        if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
                sha256_free(h);
                return -EIO;
        }

        *ret = h;
        return 0;
}

void sha256_update(Sha256 *h, const void *p, size_t n) {
        if (h->failed || n == 0)
                return;
        if (EVP_DigestUpdate(h->ctx, p, n) != 1)
                h->failed = true;
}

static void hex_encode(const unsigned char *in, size_t n, char *out) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 0xf];
        }
        out[2 * n] = '\0';
}

void sha256_final_string(Sha256 *h, char ret[DIGEST_STRING_MAX]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;

        if (!h->failed && EVP_DigestFinal_ex(h->ctx, md, &md_len) == 1 && md_len == DIGEST_HEX_LEN / 2) {
                memcpy(ret, DIGEST_ALGORITHM_PREFIX, DIGEST_ALGORITHM_PREFIX_LEN);
                hex_encode(md, md_len, ret + DIGEST_ALGORITHM_PREFIX_LEN);
        } else
                ret[0] = '\0';

        /* Start over so the same object can hash the next stream. */
        h->failed = EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1;
}

Sha256 *sha256_free(Sha256 *h) {
        if (!h)
                return NULL;
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
}

static int sha256_final_checked(Sha256 *h, char ret[DIGEST_STRING_MAX]) {
        char s[DIGEST_STRING_MAX];

        sha256_final_string(h, s);
        if (s[0] == '\0')
                return -EIO;

        memcpy(ret, s, DIGEST_STRING_MAX);
        return 0;
}

int digest_buffer(const void *p, size_t n, char ret[DIGEST_STRING_MAX]) {
        _cleanup_(sha256_freep) Sha256 *h = NULL;
        int r;

        r = sha256_new(&h);
        if (r < 0)
                return r;

        sha256_update(h, p, n);
        return sha256_final_checked(h, ret);
}

int digest_fd(int fd, char ret[DIGEST_STRING_MAX], uint64_t *ret_size) {
        _cleanup_(sha256_freep) Sha256 *h = NULL;
        _cleanup_free_ void *buf = NULL;
        uint64_t offset = 0;
        int r;

        if (fd < 0)
                return -EBADF;

        buf = malloc(DIGEST_READ_BUFFER_BYTES);
        if (!buf)
                return -ENOMEM;

        r = sha256_new(&h);
        if (r < 0)
                return r;

        for (;;) {
                ssize_t n;

                n = pread(fd, buf, DIGEST_READ_BUFFER_BYTES, (off_t) offset);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;

                sha256_update(h, buf, (size_t) n);
                offset += (uint64_t) n;
        }

        r = sha256_final_checked(h, ret);
        if (r < 0)
                return r;

        if (ret_size)
                *ret_size = offset;
        return 0;
}
