/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The WWW-Authenticate parser. Its input comes from any registry we talk
 * to, so it is written to be fuzzed (tests/pull/fuzz_challenge.c): every
 * value it keeps is bounded by REGISTRY_HEADER_VALUE_MAX_BYTES and a
 * malformed header is an error, never a read past its end.
 */
#include "registry.h"

/* An auth-param value (RFC 7235 section 2.1): a quoted-string, whose
 * backslash escapes are undone, or a token. *p is advanced past it. */
static int challenge_value(const char **p, char value[static REGISTRY_HEADER_VALUE_MAX_BYTES]) {
        const char *c = *p;
        size_t v = 0;

        if (*c == '"') {
                c++;
                while (*c && *c != '"') {
                        if (*c == '\\' && c[1])
                                c++;
                        if (v + 1 >= REGISTRY_HEADER_VALUE_MAX_BYTES)
                                return -EINVAL;
                        value[v++] = *c++;
                }
                if (*c != '"')
                        return -EINVAL;
                c++;
        } else
                while (*c && *c != ',' && *c != ' ') {
                        if (v + 1 >= REGISTRY_HEADER_VALUE_MAX_BYTES)
                                return -EINVAL;
                        value[v++] = *c++;
                }
        value[v] = '\0';
        *p = c;
        return 0;
}

static int challenge_keep(char **slot, const char *value) {
        free(*slot);
        *slot = strdup(value);
        return *slot ? 0 : -ENOMEM;
}

/*
 * Parses a WWW-Authenticate challenge (RFC 7235 section 4.1):
 * `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
 * Only the first challenge is read; unknown parameters are skipped.
 */
int registry_challenge_parse(const char *s, RegistryChallengeScheme *ret_scheme, char **ret_realm,
                             char **ret_service) {
        _cleanup_free_ char *realm = NULL, *service = NULL;
        RegistryChallengeScheme scheme;
        const char *p = s;
        int r;

        while (*p == ' ')
                p++;
        if (strncasecmp(p, "bearer", 6) == 0 && (p[6] == ' ' || p[6] == '\0'))
                scheme = REGISTRY_CHALLENGE_BEARER, p += 6;
        else if (strncasecmp(p, "basic", 5) == 0 && (p[5] == ' ' || p[5] == '\0'))
                scheme = REGISTRY_CHALLENGE_BASIC, p += 5;
        else
                return -EOPNOTSUPP;

        for (;;) {
                char key[32], value[REGISTRY_HEADER_VALUE_MAX_BYTES];
                size_t k = 0;

                while (*p == ' ' || *p == ',')
                        p++;
                if (*p == '\0')
                        break;
                /* A longer name is cut: it matches no name we keep. */
                while (*p && *p != '=' && *p != ' ' && *p != ',') {
                        if (k + 1 < sizeof(key))
                                key[k++] = *p;
                        p++;
                }
                key[k] = '\0';
                if (*p != '=')
                        break; /* The start of a second challenge. */
                p++;
                r = challenge_value(&p, value);
                if (r < 0)
                        return r;

                if (strcasecmp(key, "realm") == 0)
                        r = challenge_keep(&realm, value);
                else if (strcasecmp(key, "service") == 0)
                        r = challenge_keep(&service, value);
                if (r < 0)
                        return r;
        }

        if (scheme == REGISTRY_CHALLENGE_BEARER && !realm)
                return -EINVAL;
        *ret_scheme = scheme;
        *ret_realm = TAKE_PTR(realm);
        *ret_service = TAKE_PTR(service);
        return 0;
}
