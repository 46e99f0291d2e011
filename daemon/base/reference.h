/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Image references, parsed and normalised the way Docker does (the grammar
 * of github.com/distribution/reference, regexp.go and normalize.go):
 *
 *   reference  := name [ ":" tag ] [ "@" digest ]
 *   name       := [ domain "/" ] path
 *   domain     := host [ ":" port ]
 *   host       := label ( "." label )* | "[" ipv6 "]"
 *   label      := [A-Za-z0-9] | [A-Za-z0-9] [A-Za-z0-9-]* [A-Za-z0-9]
 *   path       := component ( "/" component )*
 *   component  := [a-z0-9]+ ( separator [a-z0-9]+ )*
 *   separator  := "." | "_" | "__" | "-"+
 *   tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
 *   digest     := "sha256:" [a-f0-9]{64}
 *
 * The first path element is the domain only if it contains '.' or ':', is
 * "localhost", or has uppercase letters; otherwise the domain is docker.io.
 * "index.docker.io" is spelled docker.io, and a docker.io name with a single
 * component lives under "library/". So `alpine`, `alpine:latest` and
 * `docker.io/library/alpine:latest` are the same reference.
 */

#include "proto-gen.h"
#include "util.h"

/* Longest repository path (after the domain, "library/" included), as
 * distribution/reference's NameTotalLengthMax, which since v0.6 does not
 * count the domain. */
#define REFERENCE_NAME_MAX ((size_t) PROTO_LIMIT_REFERENCE_NAME_BYTES)
/* Longest tag, from the tag grammar. */
#define REFERENCE_TAG_MAX ((size_t) PROTO_LIMIT_REFERENCE_TAG_BYTES)
/* Longest registry domain, its port included (a DNS name has at most 253
 * characters). Without a bound a domain could fill the whole input string,
 * and the canonical form, which adds ":latest", would then be refused when
 * given back. */
#define REFERENCE_DOMAIN_MAX ((size_t) PROTO_LIMIT_REFERENCE_DOMAIN_BYTES)
/* Longest input string accepted at all. Any valid reference is shorter (a
 * domain of at most 255, a path of 255, a tag of 128 and a digest of 71
 * bytes), canonical forms included; the bound keeps a client from making
 * the parser walk megabytes. */
#define REFERENCE_STRING_MAX ((size_t) PROTO_LIMIT_REFERENCE_BYTES)
/* Fewest hex digits of a manifest digest that name an image by prefix, as
 * `msb-image ls` (and docker) show them. */
#define REFERENCE_ID_PREFIX_MIN 12
/* Largest TCP port in a registry domain. */
#define REFERENCE_PORT_MAX 65535

#define REFERENCE_DEFAULT_DOMAIN "docker.io"
#define REFERENCE_LEGACY_DEFAULT_DOMAIN "index.docker.io"
#define REFERENCE_OFFICIAL_PREFIX "library/"
#define REFERENCE_DEFAULT_TAG "latest"

typedef struct Reference {
        char *domain;     /* "docker.io", "127.0.0.1:5000", "localhost", "[::1]:5000" */
        char *path;       /* "library/alpine" */
        char *tag;        /* "latest" (default when no digest), or NULL */
        char *digest;     /* "sha256:<64 lowercase hex>" or NULL */
        char *repository; /* domain + "/" + path */
        char *canonical;  /* repository + ":" + tag, or repository + "@" + digest
                           * (a digest reference's canonical form drops the tag,
                           * which stays in ->tag) */
} Reference;

/*
 * Parses and normalises s. Returns 0, -EINVAL with *ret_reason (may be NULL)
 * set to a static sentence saying what is wrong, or -ENOMEM.
 */
int reference_parse(const char *s, Reference **ret, const char **ret_reason);

Reference *reference_free(Reference *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(Reference *, reference_free);

/*
 * What a client may name a cached image by (README "Semantics"): a
 * reference, a manifest digest "sha256:<64 hex>", or a prefix of its hex
 * digits, with or without "sha256:", of REFERENCE_ID_PREFIX_MIN to 64
 * digits. A bare hex string is also a valid repository name
 * ("docker.io/library/<hex>:latest"), so it gets both: the reference is
 * looked up first, as docker does, then the prefix.
 */
typedef struct ImageSpec {
        Reference *ref;   /* a name reference, or NULL for "sha256:<hex>" */
        char *id_prefix;  /* "sha256:" + 12..64 lowercase hex digits, or NULL */
} ImageSpec;

/* Parses s as an ImageSpec; -EINVAL with *ret_reason as reference_parse(). */
int image_spec_parse(const char *s, ImageSpec **ret, const char **ret_reason);
ImageSpec *image_spec_free(ImageSpec *spec);
DEFINE_TRIVIAL_CLEANUP_FUNC(ImageSpec *, image_spec_free);
/* A spec naming exactly ref, borrowed (not to be freed): lookups by name
 * only, as a pull makes them. */
static inline ImageSpec image_spec_borrow(const Reference *ref) {
        return (ImageSpec) { .ref = (Reference *) ref };
}

/* True for a loopback registry domain, with or without a port: localhost,
 * 127.0.0.0/8 in dotted-quad form, [::1]. Docker treats these as insecure
 * registries by default (plain HTTP allowed), and so may a caller. */
bool reference_domain_is_loopback(const char *domain);
