/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for reference_parse(), the parser every client-supplied image
 * reference goes through. Besides memory errors (caught by the sanitizers)
 * it checks the parser's promises: a reference that parses has fields that
 * obey the grammar and limits, and its canonical form is a fixed point.
 */

#include "fuzz.h"
#include "digest.h"
#include "reference.h"

static void fuzz_check_reference(const Reference *r) {
        _cleanup_(reference_freep) Reference *again = NULL;
        const char *reason = NULL;
        size_t dl;

        FUZZ_CHECK(r->domain && r->path && r->repository && r->canonical);
        FUZZ_CHECK(r->tag || r->digest);
        /* The limit is on the path: the domain does not count (reference.h). */
        FUZZ_CHECK(strlen(r->path) <= REFERENCE_NAME_MAX);
        FUZZ_CHECK(strlen(r->domain) <= REFERENCE_DOMAIN_MAX);
        FUZZ_CHECK(!r->tag || (strlen(r->tag) >= 1 && strlen(r->tag) <= REFERENCE_TAG_MAX));
        FUZZ_CHECK(!r->digest || digest_is_valid(r->digest));

        dl = strlen(r->domain);
        FUZZ_CHECK(strncmp(r->repository, r->domain, dl) == 0);
        FUZZ_CHECK(r->repository[dl] == '/' && streq(r->repository + dl + 1, r->path));
        FUZZ_CHECK(!streq(r->domain, REFERENCE_LEGACY_DEFAULT_DOMAIN));
        FUZZ_CHECK(!streq(r->domain, REFERENCE_DEFAULT_DOMAIN) || strchr(r->path, '/'));

        /* The canonical form parses to the same reference. */
        FUZZ_CHECK(reference_parse(r->canonical, &again, &reason) == 0);
        FUZZ_CHECK(streq(again->canonical, r->canonical));
        FUZZ_CHECK(streq(again->domain, r->domain));
        FUZZ_CHECK(streq(again->path, r->path));
        FUZZ_CHECK(streq_ptr(again->digest, r->digest));

        /* Loopback detection must cope with every domain the parser yields. */
        (void) reference_domain_is_loopback(r->domain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(reference_freep) Reference *r = NULL;
        _cleanup_free_ char *s = NULL;
        const char *reason = NULL;
        int ret;

        /* The parser takes C strings; bytes after an embedded NUL are simply ignored. */
        s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = '\0';

        ret = reference_parse(s, &r, &reason);
        if (ret == 0)
                fuzz_check_reference(r);
        else {
                FUZZ_CHECK(ret == -EINVAL);
                FUZZ_CHECK(reason && reason[0] != '\0');
                FUZZ_CHECK(!r);
        }

        /* The digest helpers see the same bytes. */
        FUZZ_CHECK(digest_is_valid(s) == (digest_hex(s) != NULL));
        (void) reference_domain_is_loopback(s);
        return 0;
}
