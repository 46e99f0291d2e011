/* SPDX-License-Identifier: Apache-2.0 */

/*
 * Fuzz target for registry_challenge_parse(), which reads the
 * WWW-Authenticate header of any registry we talk to. Besides memory errors
 * it checks the promises: a Bearer challenge that parses has a realm, and
 * no value is longer than the header value limit.
 */

#include "../fuzz/fuzz.h"
#include "registry.h"

#define FUZZ_CHECK(x)                                                                            \
        do {                                                                                     \
                if (!(x)) {                                                                      \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);   \
                        abort();                                                                 \
                }                                                                                \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = NULL, *realm = NULL, *service = NULL;
        RegistryChallengeScheme scheme = REGISTRY_CHALLENGE_NONE;
        int r;

        if (size > 64 * 1024)
                return 0;
        s = strndup((const char *) data, size);
        if (!s)
                return 0;
        r = registry_challenge_parse(s, &scheme, &realm, &service);
        FUZZ_CHECK(r == 0 || r == -EINVAL || r == -EOPNOTSUPP || r == -ENOMEM);
        if (r < 0) {
                FUZZ_CHECK(!realm && !service);
                return 0;
        }
        FUZZ_CHECK(scheme == REGISTRY_CHALLENGE_BASIC || scheme == REGISTRY_CHALLENGE_BEARER);
        FUZZ_CHECK(scheme != REGISTRY_CHALLENGE_BEARER || realm);
        FUZZ_CHECK(!realm || strlen(realm) < REGISTRY_HEADER_VALUE_MAX_BYTES);
        FUZZ_CHECK(!service || strlen(service) < REGISTRY_HEADER_VALUE_MAX_BYTES);
        return 0;
}
