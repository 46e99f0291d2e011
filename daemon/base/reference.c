/* SPDX-License-Identifier: Apache-2.0 */

/*
 * A hand-written parser for the distribution/reference grammar (see
 * reference.h). It works on slices of the input and allocates only once the
 * whole reference is known to be valid, so every rejection is allocation-free
 * and comes with one precise reason.
 */

#include <arpa/inet.h>
#include <netinet/in.h>

#include "digest.h"
#include "reference.h"

/* Every canonical form parses again: domain, '/', path, then ':' and a tag
 * or '@' and a digest. */
_Static_assert(REFERENCE_DOMAIN_MAX + 1 + REFERENCE_NAME_MAX + 1 + (REFERENCE_TAG_MAX > DIGEST_STRING_MAX
                                                                       ? REFERENCE_TAG_MAX
                                                                       : DIGEST_STRING_MAX) <=
                       REFERENCE_STRING_MAX,
               "a canonical reference may be longer than the parser accepts");

/* A piece of the input: not NUL-terminated. */
typedef struct Slice {
        const char *p;
        size_t n;
} Slice;

static bool char_is_lower_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool char_is_alnum(char c) {
        return char_is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool char_is_upper(char c) {
        return c >= 'A' && c <= 'Z';
}

static bool char_is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool char_is_hex(char c) {
        return char_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A "word" character of Go's regexp syntax (\w), which tags are made of. */
static bool char_is_word(char c) {
        return char_is_alnum(c) || c == '_';
}

static bool slice_eq(Slice s, const char *lit) {
        return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static bool slice_contains(Slice s, char c) {
        return memchr(s.p, c, s.n) != NULL;
}

static const char *slice_rchr(Slice s, char c) {
        return memrchr(s.p, c, s.n);
}

/* Rejects bytes that can never be part of a reference, with the most helpful reason. */
static const char *reference_check_bytes(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];

                if (c == ' ' || (c >= '\t' && c <= '\r'))
                        return "whitespace is not allowed in a reference";
                if (c < 0x20 || c == 0x7f)
                        return "control characters are not allowed in a reference";
                if (c >= 0x80)
                        return "non-ASCII characters are not allowed in a reference";
        }
        return NULL;
}

/* Docker refuses a bare 64-hex-digit string as a name, because it is an image
 * ID and would silently mean something else (normalize.go, ParseNormalizedNamed). */
static bool reference_is_identifier(const char *s, size_t n) {
        if (n != DIGEST_HEX_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!char_is_digit(s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
                        return false;
        return true;
}

/*
 * A digest must be well-formed per the general grammar
 * (algorithm-component ([+._-] algorithm-component)* ":" hex{32,}) before we
 * say anything about the algorithm, so a typo is reported as a typo and a
 * real but foreign algorithm as unsupported (OCI image-spec descriptor.md,
 * "Digests"; only sha256 is registered here).
 */
static const char *reference_check_digest(Slice d) {
        size_t i = 0, colon;

        if (d.n == 0)
                return "the digest after '@' is empty";

        for (;;) {
                if (i >= d.n || !((d.p[i] >= 'a' && d.p[i] <= 'z') || char_is_upper(d.p[i])))
                        return "the digest must have the form algorithm:hex, e.g. sha256:<64 hex digits>";
                while (i < d.n && char_is_alnum(d.p[i]))
                        i++;
                if (i < d.n && strchr("+._-", d.p[i])) {
                        i++;
                        continue;
                }
                break;
        }
        if (i >= d.n || d.p[i] != ':')
                return "the digest must have the form algorithm:hex, e.g. sha256:<64 hex digits>";
        colon = i;

        for (i = colon + 1; i < d.n; i++)
                if (!char_is_hex(d.p[i]))
                        return "the digest must have the form algorithm:hex, e.g. sha256:<64 hex digits>";
        if (d.n - colon - 1 < 32)
                return "the digest must have at least 32 hexadecimal digits";

        if (colon != DIGEST_ALGORITHM_PREFIX_LEN - 1 || memcmp(d.p, DIGEST_ALGORITHM_PREFIX, colon + 1) != 0)
                return "unsupported digest algorithm: only sha256 is supported";

        /* go-digest's sha256 encoding is exactly 64 lowercase hex digits. */
        if (d.n != DIGEST_STRING_MAX - 1)
                return "a sha256 digest must have exactly 64 hexadecimal digits";
        for (i = colon + 1; i < d.n; i++)
                if (d.p[i] >= 'A' && d.p[i] <= 'F')
                        return "a sha256 digest must be written in lowercase hexadecimal";

        return NULL;
}

static const char *reference_check_tag(Slice t) {
        if (t.n == 0)
                return "the tag after ':' is empty";
        if (t.n > REFERENCE_TAG_MAX)
                return "the tag is longer than 128 characters";
        if (!char_is_word(t.p[0]))
                return "the tag must start with a letter, a digit or '_'";
        for (size_t i = 1; i < t.n; i++)
                if (!char_is_word(t.p[i]) && t.p[i] != '.' && t.p[i] != '-')
                        return "the tag may contain only letters, digits, '_', '.' and '-'";
        return NULL;
}

/* An IPv6 address between brackets, without zone identifier or embedded IPv4
 * (regexp.go, ipv6address), and one inet_pton(3) accepts. */
static const char *reference_check_ipv6(Slice h) {
        char buf[INET6_ADDRSTRLEN];
        struct in6_addr a;

        if (h.n < 3 || h.p[h.n - 1] != ']')
                return "an IPv6 registry address must be enclosed in '[' and ']'";
        if (h.n - 2 >= sizeof(buf))
                return "the IPv6 registry address is not valid";
        for (size_t i = 1; i < h.n - 1; i++)
                if (!char_is_hex(h.p[i]) && h.p[i] != ':')
                        return "the IPv6 registry address is not valid";

        memcpy(buf, h.p + 1, h.n - 2);
        buf[h.n - 2] = '\0';
        if (inet_pton(AF_INET6, buf, &a) != 1)
                return "the IPv6 registry address is not valid";
        return NULL;
}

/* Dot-separated labels of letters, digits and inner hyphens (regexp.go, domainName). */
static const char *reference_check_hostname(Slice h) {
        size_t start = 0;

        for (size_t i = 0; i <= h.n; i++) {
                if (i < h.n && h.p[i] != '.') {
                        if (!char_is_alnum(h.p[i]) && h.p[i] != '-')
                                return "the registry domain may contain only letters, digits, '-' and '.'";
                        continue;
                }
                if (i == start)
                        return "the registry domain has an empty label";
                if (h.p[start] == '-' || h.p[i - 1] == '-')
                        return "a registry domain label must not start or end with '-'";
                start = i + 1;
        }
        return NULL;
}

static const char *reference_check_port(Slice p) {
        unsigned port = 0;

        if (p.n == 0)
                return "the registry port after ':' is empty";
        for (size_t i = 0; i < p.n; i++) {
                if (!char_is_digit(p.p[i]))
                        return "the registry port must be a decimal number";
                port = port * 10 + (unsigned) (p.p[i] - '0');
                if (port > REFERENCE_PORT_MAX)
                        return "the registry port must be at most 65535";
        }
        if (port == 0)
                return "the registry port must not be 0";
        return NULL;
}

static const char *reference_check_domain(Slice d) {
        Slice host = d, port = {};
        const char *colon, *reason;

        if (d.n == 0)
                return "the registry domain is empty";
        if (d.n > REFERENCE_DOMAIN_MAX)
                return "the registry domain is longer than 255 characters";

        if (d.p[0] == '[') {
                const char *bracket = memchr(d.p, ']', d.n);

                if (!bracket)
                        return "an IPv6 registry address must be enclosed in '[' and ']'";
                host.n = (size_t) (bracket - d.p) + 1;
                if (host.n < d.n) {
                        if (d.p[host.n] != ':')
                                return "only a ':port' may follow an IPv6 registry address";
                        port = (Slice) { d.p + host.n + 1, d.n - host.n - 1 };
                        if (port.n == 0)
                                return "the registry port after ':' is empty";
                }
                reason = reference_check_ipv6(host);
        } else {
                colon = memchr(d.p, ':', d.n);
                if (colon) {
                        host.n = (size_t) (colon - d.p);
                        port = (Slice) { colon + 1, d.n - host.n - 1 };
                        if (port.n == 0)
                                return "the registry port after ':' is empty";
                }
                reason = reference_check_hostname(host);
        }
        if (reason)
                return reason;

        return port.p ? reference_check_port(port) : NULL;
}

static bool separator_is_valid(Slice sep) {
        if (slice_eq(sep, ".") || slice_eq(sep, "_") || slice_eq(sep, "__"))
                return true;
        for (size_t i = 0; i < sep.n; i++)
                if (sep.p[i] != '-')
                        return false;
        return sep.n > 0;
}

/* Path components of lowercase letters and digits, joined by one '.', one or
 * two '_', or any number of '-' (regexp.go, pathComponent and separator). */
static const char *reference_check_path_component(Slice c) {
        if (c.n == 0)
                return "the repository name has an empty component (a leading, trailing or doubled '/')";
        if (!char_is_lower_alnum(c.p[0]) || !char_is_lower_alnum(c.p[c.n - 1]))
                return "a repository name component must start and end with a lowercase letter or digit";

        for (size_t i = 0; i < c.n;) {
                size_t run;

                if (char_is_lower_alnum(c.p[i])) {
                        i++;
                        continue;
                }

                for (run = 0; i + run < c.n && !char_is_lower_alnum(c.p[i + run]); run++)
                        ;
                if (!separator_is_valid((Slice) { c.p + i, run }))
                        return "the repository name has an invalid separator; allowed are '.', '_', '__' or dashes between letters and digits";
                i += run;
        }
        return NULL;
}

static const char *reference_check_path(Slice p) {
        size_t start = 0;

        /* Reasons for characters come first: they are what the user got wrong. */
        for (size_t i = 0; i < p.n; i++) {
                if (char_is_upper(p.p[i]))
                        return "uppercase letters are not allowed in the repository name";
                if (!char_is_lower_alnum(p.p[i]) && !strchr("._-/", p.p[i]))
                        return "the repository name may contain only lowercase letters, digits, '.', '_', '-' and '/'";
        }

        for (size_t i = 0; i <= p.n; i++) {
                const char *reason;

                if (i < p.n && p.p[i] != '/')
                        continue;
                reason = reference_check_path_component((Slice) { p.p + start, i - start });
                if (reason)
                        return reason;
                start = i + 1;
        }
        return NULL;
}

/* The decision of normalize.go, splitDockerDomain: whether the first element
 * of a name that has a '/' names a registry. */
static bool reference_first_is_domain(Slice first) {
        if (slice_eq(first, "localhost") || slice_contains(first, '.') || slice_contains(first, ':'))
                return true;
        for (size_t i = 0; i < first.n; i++)
                if (char_is_upper(first.p[i]))
                        return true;
        return false;
}

static char *slice_strdup(Slice s) {
        return strndup(s.p, s.n);
}

Reference *reference_free(Reference *r) {
        if (!r)
                return NULL;
        free(r->domain);
        free(r->path);
        free(r->tag);
        free(r->digest);
        free(r->repository);
        free(r->canonical);
        free(r);
        return NULL;
}

static int reference_new(Slice domain, const char *path_prefix, Slice path, Slice tag, Slice digest, Reference **ret) {
        _cleanup_(reference_freep) Reference *r = NULL;
        int n;

        r = calloc(1, sizeof(Reference));
        if (!r)
                return -ENOMEM;

        r->domain = slice_strdup(domain);
        if (!r->domain || asprintf(&r->path, "%s%.*s", path_prefix, (int) path.n, path.p) < 0) {
                r->path = NULL;
                return -ENOMEM;
        }
        if (tag.p) {
                r->tag = slice_strdup(tag);
                if (!r->tag)
                        return -ENOMEM;
        }
        if (digest.p) {
                r->digest = slice_strdup(digest);
                if (!r->digest)
                        return -ENOMEM;
        }
        if (asprintf(&r->repository, "%s/%s", r->domain, r->path) < 0) {
                r->repository = NULL;
                return -ENOMEM;
        }

        if (r->digest)
                n = asprintf(&r->canonical, "%s@%s", r->repository, r->digest);
        else
                n = asprintf(&r->canonical, "%s:%s", r->repository, r->tag);
        if (n < 0) {
                r->canonical = NULL;
                return -ENOMEM;
        }

        *ret = TAKE_PTR(r);
        return 0;
}

static int reference_fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EINVAL;
}

int reference_parse(const char *s, Reference **ret, const char **ret_reason) {
        Slice name, tag = {}, digest = {}, domain, path;
        const char *at, *colon, *slash, *reason, *prefix = "";
        size_t n;
        int r;

        if (!s || s[0] == '\0')
                return reference_fail(ret_reason, "the reference is empty");

        n = strnlen(s, REFERENCE_STRING_MAX + 1);
        if (n > REFERENCE_STRING_MAX)
                return reference_fail(ret_reason, "the reference is longer than 1024 characters");

        reason = reference_check_bytes(s, n);
        if (reason)
                return reference_fail(ret_reason, reason);

        if (reference_is_identifier(s, n))
                return reference_fail(ret_reason,
                                      "a bare 64-digit hexadecimal string is an image ID, not a reference; write name@sha256:<hex>");

        /* The digest is everything after the first '@'; neither names nor tags contain one. */
        name = (Slice) { s, n };
        at = memchr(s, '@', n);
        if (at) {
                name.n = (size_t) (at - s);
                digest = (Slice) { at + 1, n - name.n - 1 };
                reason = reference_check_digest(digest);
                if (reason)
                        return reference_fail(ret_reason, reason);
        }

        /* A ':' after the last '/' starts the tag; earlier ones belong to a registry port. */
        colon = slice_rchr(name, ':');
        slash = slice_rchr(name, '/');
        if (colon && (!slash || colon > slash)) {
                tag = (Slice) { colon + 1, name.n - (size_t) (colon - name.p) - 1 };
                name.n = (size_t) (colon - name.p);
                reason = reference_check_tag(tag);
                if (reason)
                        return reference_fail(ret_reason, reason);
        }

        if (name.n == 0)
                return reference_fail(ret_reason, "the repository name is empty");
        if (name.p[0] == '/')
                return reference_fail(ret_reason, "a reference must not start with '/'");

        slash = memchr(name.p, '/', name.n);
        domain = (Slice) { REFERENCE_DEFAULT_DOMAIN, strlen(REFERENCE_DEFAULT_DOMAIN) };
        path = name;
        if (slash) {
                Slice first = { name.p, (size_t) (slash - name.p) };

                if (reference_first_is_domain(first)) {
                        path = (Slice) { slash + 1, name.n - first.n - 1 };
                        if (!slice_eq(first, REFERENCE_LEGACY_DEFAULT_DOMAIN))
                                domain = first;
                }
        }

        reason = reference_check_path(path);
        if (reason)
                return reference_fail(ret_reason, reason);

        reason = reference_check_domain(domain);
        if (reason)
                return reference_fail(ret_reason, reason);

        /* Official images live under library/ on Docker Hub only. */
        if (slice_eq(domain, REFERENCE_DEFAULT_DOMAIN) && !slice_contains(path, '/'))
                prefix = REFERENCE_OFFICIAL_PREFIX;

        if (strlen(prefix) + path.n > REFERENCE_NAME_MAX)
                return reference_fail(ret_reason, "the repository path is longer than 255 characters");

        /* Without tag or digest a reference means the tag "latest". */
        if (!tag.p && !digest.p)
                tag = (Slice) { REFERENCE_DEFAULT_TAG, strlen(REFERENCE_DEFAULT_TAG) };

        r = reference_new(domain, prefix, path, tag, digest, ret);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = "out of memory";
                return r;
        }
        return 0;
}

bool reference_domain_is_loopback(const char *domain) {
        char host[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        struct in_addr a4;
        const char *end;
        size_t n;

        if (!domain)
                return false;

        if (domain[0] == '[') {
                end = strchr(domain, ']');
                if (!end)
                        return false;
                n = (size_t) (end - domain) - 1;
                if (n >= sizeof(host) || !(end[1] == '\0' || end[1] == ':'))
                        return false;
                memcpy(host, domain + 1, n);
                host[n] = '\0';
                return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
        }

        end = strchrnul(domain, ':');
        n = (size_t) (end - domain);
        if (n >= sizeof(host))
                return false;
        memcpy(host, domain, n);
        host[n] = '\0';

        if (strcasecmp(host, "localhost") == 0)
                return true;

        /* inet_pton accepts only the dotted-quad form, so "127.1" or octal
         * spellings are not mistaken for loopback. */
        return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* Lowercase hex digits only, between the prefix minimum and a full digest. */
static bool id_prefix_is_valid(const char *hex) {
        size_t n = strlen(hex);

        if (n < REFERENCE_ID_PREFIX_MIN || n > DIGEST_HEX_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!char_is_digit(hex[i]) && !(hex[i] >= 'a' && hex[i] <= 'f'))
                        return false;
        return true;
}

ImageSpec *image_spec_free(ImageSpec *spec) {
        if (!spec)
                return NULL;
        reference_free(spec->ref);
        free(spec->id_prefix);
        free(spec);
        return NULL;
}

int image_spec_parse(const char *s, ImageSpec **ret, const char **ret_reason) {
        _cleanup_(image_spec_freep) ImageSpec *spec = NULL;
        const char *hex = NULL;
        int r;

        if (!s || s[0] == '\0')
                return reference_fail(ret_reason, "the reference is empty");
        spec = calloc(1, sizeof(*spec));
        if (!spec)
                return -ENOMEM;

        if (startswith(s, "sha256:")) {
                /* "sha256:<hex>" is a digest, never a name: docker reads it so. */
                hex = s + strlen("sha256:");
                if (!id_prefix_is_valid(hex))
                        return reference_fail(ret_reason, "a digest is sha256: and 12 to 64 lowercase hexadecimal digits");
        } else if (id_prefix_is_valid(s)) {
                hex = s;
                /* A full 64-digit ID is not a name (reference_parse refuses it). */
                if (strlen(s) < DIGEST_HEX_LEN && reference_parse(s, &spec->ref, NULL) < 0)
                        return -ENOMEM;
        } else {
                r = reference_parse(s, &spec->ref, ret_reason);
                if (r < 0)
                        return r;
        }
        if (hex && asprintf(&spec->id_prefix, "sha256:%s", hex) < 0) {
                spec->id_prefix = NULL;
                return -ENOMEM;
        }
        *ret = TAKE_PTR(spec);
        return 0;
}
