/* SPDX-License-Identifier: Apache-2.0 */

#include <check.h>

#include "reference.h"

#define HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define DG "sha256:" HEX

/* Valid references with every normalised field. A NULL tag or digest means
 * the field must be NULL. */
static const struct {
        const char *input;
        const char *canonical;
        const char *domain;
        const char *path;
        const char *tag;
        const char *digest;
} valid[] = {
        { "alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "alpine:latest", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "docker.io/library/alpine:latest", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "docker.io/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "index.docker.io/alpine:3.19", "docker.io/library/alpine:3.19", "docker.io", "library/alpine", "3.19", NULL },
        { "index.docker.io/library/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "library/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", NULL },
        { "user/app:v1.2.3", "docker.io/user/app:v1.2.3", "docker.io", "user/app", "v1.2.3", NULL },
        { "user/team/app", "docker.io/user/team/app:latest", "docker.io", "user/team/app", "latest", NULL },
        { "alpine@" DG, "docker.io/library/alpine@" DG, "docker.io", "library/alpine", NULL, DG },
        { "alpine:3.19@" DG, "docker.io/library/alpine@" DG, "docker.io", "library/alpine", "3.19", DG },
        { "localhost/foo", "localhost/foo:latest", "localhost", "foo", "latest", NULL },
        { "localhost:5000/foo/bar:tag", "localhost:5000/foo/bar:tag", "localhost:5000", "foo/bar", "tag", NULL },
        { "127.0.0.1:5000/alpine", "127.0.0.1:5000/alpine:latest", "127.0.0.1:5000", "alpine", "latest", NULL },
        { "127.0.0.1:5000/ns/img@" DG, "127.0.0.1:5000/ns/img@" DG, "127.0.0.1:5000", "ns/img", NULL, DG },
        { "[::1]:5000/alpine:edge", "[::1]:5000/alpine:edge", "[::1]:5000", "alpine", "edge", NULL },
        { "[::1]/alpine", "[::1]/alpine:latest", "[::1]", "alpine", "latest", NULL },
        { "[2001:db8::1]:443/x", "[2001:db8::1]:443/x:latest", "[2001:db8::1]:443", "x", "latest", NULL },
        { "ghcr.io/owner/repo:main", "ghcr.io/owner/repo:main", "ghcr.io", "owner/repo", "main", NULL },
        { "registry.example.com/a-b/c--d/e__f/g.h/i_j", "registry.example.com/a-b/c--d/e__f/g.h/i_j:latest",
          "registry.example.com", "a-b/c--d/e__f/g.h/i_j", "latest", NULL },
        { "Example.COM/repo", "Example.COM/repo:latest", "Example.COM", "repo", "latest", NULL },
        { "Registry/repo", "Registry/repo:latest", "Registry", "repo", "latest", NULL },
        { "myhost:5000/repo", "myhost:5000/repo:latest", "myhost:5000", "repo", "latest", NULL },
        { "my-host.example/repo", "my-host.example/repo:latest", "my-host.example", "repo", "latest", NULL },
        { "alpine:_", "docker.io/library/alpine:_", "docker.io", "library/alpine", "_", NULL },
        { "alpine:Latest-RC.1_x", "docker.io/library/alpine:Latest-RC.1_x", "docker.io", "library/alpine", "Latest-RC.1_x", NULL },
        { "a", "docker.io/library/a:latest", "docker.io", "library/a", "latest", NULL },
        { "0", "docker.io/library/0:latest", "docker.io", "library/0", "latest", NULL },
        { "a---b", "docker.io/library/a---b:latest", "docker.io", "library/a---b", "latest", NULL },
        /* Without a '/', "localhost:5000" is a name and a tag, as in Docker. */
        { "localhost:5000", "docker.io/library/localhost:5000", "docker.io", "library/localhost", "5000", NULL },
        { "example.com", "docker.io/library/example.com:latest", "docker.io", "library/example.com", "latest", NULL },
        { "sha256:" HEX, "docker.io/library/sha256:" HEX, "docker.io", "library/sha256", HEX, NULL },
        { "localhost:65535/x", "localhost:65535/x:latest", "localhost:65535", "x", "latest", NULL },
};

/* Invalid references with a fragment of the reason that must be given. */
static const struct {
        const char *input;
        const char *reason;
} invalid[] = {
        { "", "empty" },
        { ":tag", "repository name is empty" },
        { "@" DG, "repository name is empty" },
        { " alpine", "whitespace" },
        { "alpine ", "whitespace" },
        { "alp\tine", "whitespace" },
        { "alp\nine", "whitespace" },
        { "alp\x01ine", "control characters" },
        { "alp\x7fine", "control characters" },
        { "alpin\xc3\xa9", "non-ASCII" },
        { "/alpine", "must not start with '/'" },
        { "alpine/", "empty component" },
        { "foo//bar", "empty component" },
        { "localhost/", "empty component" },
        { "Alpine", "uppercase" },
        { "docker.io/Library/alpine", "uppercase" },
        { "example.com/Foo", "uppercase" },
        { "foo/../bar", "start and end with a lowercase" },
        { "foo/..", "start and end with a lowercase" },
        { "a..b", "invalid separator" },
        { "a___b", "invalid separator" },
        { "a._b", "invalid separator" },
        { "a_-b", "invalid separator" },
        { "-alpine", "start and end with a lowercase" },
        { "alpine-", "start and end with a lowercase" },
        { "_alpine", "start and end with a lowercase" },
        { "alp!ne", "may contain only lowercase" },
        { "foo:bar:baz", "may contain only lowercase" },
        { "alpine:", "tag after ':' is empty" },
        { "alpine:.x", "tag must start" },
        { "alpine:-x", "tag must start" },
        { "alpine:a+b", "tag may contain only" },
        { "alpine@", "digest after '@' is empty" },
        { "alpine@sha256", "form algorithm:hex" },
        { "alpine@sha256:", "at least 32" },
        { "alpine@sha256:abc", "at least 32" },
        { "alpine@sha256:" HEX "zz", "form algorithm:hex" },
        { "alpine@sha256:" HEX "00", "exactly 64" },
        { "alpine@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "lowercase hexadecimal" },
        { "alpine@sha512:" HEX HEX, "unsupported digest algorithm" },
        { "alpine@md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm" },
        { "alpine@sha256+b64:" HEX, "unsupported digest algorithm" },
        { "alpine@1sha:" HEX, "form algorithm:hex" },
        { "alpine@" DG "@" DG, "form algorithm:hex" },
        { "alpine@" HEX, "form algorithm:hex" },
        { HEX, "image ID" },
        { "localhost:/foo", "port after ':' is empty" },
        { "localhost:abc/foo", "decimal number" },
        { "localhost:0/foo", "must not be 0" },
        { "localhost:65536/foo", "at most 65535" },
        { "localhost:99999999999999999999/foo", "at most 65535" },
        { "-bad.example/foo", "must not start or end with '-'" },
        { "bad-.example/foo", "must not start or end with '-'" },
        { "bad..example/foo", "empty label" },
        { ".example/foo", "empty label" },
        { "ex_ample.com/foo", "may contain only letters, digits, '-' and '.'" },
        { "[::1/foo", "enclosed in '['" },
        { "[::1]x/foo", "only a ':port'" },
        { "[::1]:/foo", "port after ':' is empty" },
        /* Without '.' or ':' the first element is not a domain but a bad path component. */
        { "[]/foo", "may contain only lowercase" },
        { "[:::::]/foo", "IPv6 registry address is not valid" },
        { "[fe80::1%eth0]/foo", "IPv6 registry address is not valid" },
        { "[::ffff:127.0.0.1]/foo", "IPv6 registry address is not valid" },
};

START_TEST(test_valid) {
        const char *reason = NULL;
        Reference *r = NULL;
        int k = _i;

        ck_assert_msg(reference_parse(valid[k].input, &r, &reason) == 0, "%s: %s", valid[k].input, reason);
        ck_assert_str_eq(r->canonical, valid[k].canonical);
        ck_assert_str_eq(r->domain, valid[k].domain);
        ck_assert_str_eq(r->path, valid[k].path);
        ck_assert_pstr_eq(r->tag, valid[k].tag);
        ck_assert_pstr_eq(r->digest, valid[k].digest);

        /* The repository is the domain and path joined. */
        ck_assert(startswith(r->repository, r->domain));
        ck_assert_int_eq(r->repository[strlen(r->domain)], '/');
        ck_assert_str_eq(r->repository + strlen(r->domain) + 1, r->path);

        /* The canonical form is a fixed point: it parses to itself. */
        _cleanup_(reference_freep) Reference *again = NULL;
        ck_assert_int_eq(reference_parse(r->canonical, &again, &reason), 0);
        ck_assert_str_eq(again->canonical, r->canonical);
        ck_assert_str_eq(again->repository, r->repository);

        ck_assert_ptr_null(reference_free(r));
}
END_TEST

START_TEST(test_invalid) {
        const char *reason = NULL;
        Reference *r = (Reference *) 0x1;
        int k = _i;

        ck_assert_int_eq(reference_parse(invalid[k].input, &r, &reason), -EINVAL);
        ck_assert_ptr_eq(r, (Reference *) 0x1); /* Untouched on failure. */
        ck_assert_ptr_nonnull(reason);
        ck_assert_msg(strstr(reason, invalid[k].reason), "input \"%s\": reason \"%s\" lacks \"%s\"",
                      invalid[k].input, reason, invalid[k].reason);

        /* The reason pointer is optional. */
        ck_assert_int_eq(reference_parse(invalid[k].input, &r, NULL), -EINVAL);
}
END_TEST

START_TEST(test_null) {
        const char *reason = NULL;
        Reference *r = NULL;

        ck_assert_int_eq(reference_parse(NULL, &r, &reason), -EINVAL);
        ck_assert_ptr_nonnull(reason);
        ck_assert_ptr_null(reference_free(NULL));
}
END_TEST

/* Fills buf with a string of n copies of c. */
static char *repeat(char *buf, char c, size_t n) {
        memset(buf, c, n);
        buf[n] = '\0';
        return buf;
}

START_TEST(test_tag_limit) {
        char tag[REFERENCE_TAG_MAX + 2], s[REFERENCE_TAG_MAX + 32];
        _cleanup_(reference_freep) Reference *r = NULL;
        const char *reason = NULL;

        snprintf(s, sizeof(s), "alpine:%s", repeat(tag, 't', REFERENCE_TAG_MAX));
        ck_assert_int_eq(reference_parse(s, &r, &reason), 0);
        ck_assert_uint_eq(strlen(r->tag), REFERENCE_TAG_MAX);

        snprintf(s, sizeof(s), "alpine:%s", repeat(tag, 't', REFERENCE_TAG_MAX + 1));
        ck_assert_int_eq(reference_parse(s, &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the tag is longer than 128 characters");
}
END_TEST

START_TEST(test_name_limit) {
        char path[REFERENCE_NAME_MAX + 2], s[REFERENCE_NAME_MAX + 64];
        _cleanup_(reference_freep) Reference *r = NULL;
        const char *reason = NULL;

        /* The path may take all 255 characters: the domain does not count
         * (distribution/reference v0.6 and later). */
        snprintf(s, sizeof(s), "registry.example.com:5000/%s", repeat(path, 'p', REFERENCE_NAME_MAX));
        ck_assert_int_eq(reference_parse(s, &r, &reason), 0);
        ck_assert_uint_eq(strlen(r->path), REFERENCE_NAME_MAX);
        ck_assert_uint_eq(strlen(r->repository), strlen("registry.example.com:5000/") + REFERENCE_NAME_MAX);
        r = reference_free(r);

        snprintf(s, sizeof(s), "example.com/%s", repeat(path, 'p', REFERENCE_NAME_MAX + 1));
        ck_assert_int_eq(reference_parse(s, &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the repository path is longer than 255 characters");

        /* The limit applies after normalisation: "library/" is added. */
        size_t room = REFERENCE_NAME_MAX - strlen("library/");
        ck_assert_int_eq(reference_parse(repeat(path, 'p', room), &r, &reason), 0);
        ck_assert_str_eq(r->path + strlen("library/"), path);
        r = reference_free(r);
        ck_assert_int_eq(reference_parse(repeat(path, 'p', room + 1), &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the repository path is longer than 255 characters");
}
END_TEST

START_TEST(test_domain_limit) {
        char domain[REFERENCE_DOMAIN_MAX + 2], s[REFERENCE_DOMAIN_MAX + 64];
        _cleanup_(reference_freep) Reference *r = NULL, *again = NULL;
        const char *reason = NULL;

        /* 255 characters, the port included: the canonical form parses again. */
        repeat(domain, 'd', REFERENCE_DOMAIN_MAX);
        memcpy(domain + REFERENCE_DOMAIN_MAX - strlen(".test:5000"), ".test:5000", strlen(".test:5000"));
        snprintf(s, sizeof(s), "%s/app", domain);
        ck_assert_int_eq(reference_parse(s, &r, &reason), 0);
        ck_assert_str_eq(r->domain, domain);
        ck_assert_int_eq(reference_parse(r->canonical, &again, &reason), 0);
        ck_assert_str_eq(again->canonical, r->canonical);
        r = reference_free(r);

        /* One more is refused; an uppercase first component is a domain too
         * (the fuzzer's input: 1,016 of them made a canonical form of 1,027). */
        repeat(domain, 'D', REFERENCE_DOMAIN_MAX + 1);
        snprintf(s, sizeof(s), "%s/app", domain);
        ck_assert_int_eq(reference_parse(s, &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the registry domain is longer than 255 characters");
}
END_TEST

START_TEST(test_string_limit) {
        _cleanup_free_ char *s = malloc(REFERENCE_STRING_MAX + 2);
        _cleanup_(reference_freep) Reference *r = NULL;
        const char *reason = NULL;

        ck_assert_ptr_nonnull(s);
        ck_assert_int_eq(reference_parse(repeat(s, 'a', REFERENCE_STRING_MAX + 1), &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the reference is longer than 1024 characters");

        /* At the limit the string is judged on its content instead. */
        ck_assert_int_eq(reference_parse(repeat(s, 'a', REFERENCE_STRING_MAX), &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the repository path is longer than 255 characters");

        /* A megabyte is refused without walking it. */
        _cleanup_free_ char *big = malloc(1 * MiB + 1);
        ck_assert_ptr_nonnull(big);
        ck_assert_int_eq(reference_parse(repeat(big, 'a', 1 * MiB), &r, &reason), -EINVAL);
        ck_assert_str_eq(reason, "the reference is longer than 1024 characters");
}
END_TEST

START_TEST(test_same_image_spellings) {
        static const char *const spellings[] = {
                "alpine", "alpine:latest", "library/alpine", "library/alpine:latest",
                "docker.io/alpine", "docker.io/library/alpine:latest", "index.docker.io/library/alpine",
        };

        for (size_t i = 0; i < ELEMENTSOF(spellings); i++) {
                _cleanup_(reference_freep) Reference *r = NULL;

                ck_assert_int_eq(reference_parse(spellings[i], &r, NULL), 0);
                ck_assert_str_eq(r->canonical, "docker.io/library/alpine:latest");
        }
}
END_TEST

START_TEST(test_loopback) {
        static const char *const yes[] = {
                "localhost", "localhost:5000", "LocalHost", "127.0.0.1", "127.0.0.1:5000",
                "127.255.255.254:1", "[::1]", "[::1]:5000", "[0:0:0:0:0:0:0:1]:80",
        };
        static const char *const no[] = {
                "docker.io", "localhost.example.com", "128.0.0.1", "126.0.0.1:5000", "127.1",
                "0177.0.0.1", "[::2]:5000", "[::1", "[::1]x", "10.0.0.1", "", "localhostx", "[::ffff:127.0.0.1]",
        };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                ck_assert_msg(reference_domain_is_loopback(yes[i]), "%s", yes[i]);
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                ck_assert_msg(!reference_domain_is_loopback(no[i]), "%s", no[i]);
        ck_assert(!reference_domain_is_loopback(NULL));

        /* The domains the parser produces feed it directly. */
        _cleanup_(reference_freep) Reference *r = NULL;
        ck_assert_int_eq(reference_parse("127.0.0.1:5000/alpine", &r, NULL), 0);
        ck_assert(reference_domain_is_loopback(r->domain));
}
END_TEST

/* What names a cached image: a reference, a digest, or a hex prefix. */
START_TEST(test_image_spec) {
        static const char hex[] = "72e27cbf42385c1df4bbd6f9c4b8e1a3a8d26b0c8f1e6f4d5c3b2a1908172635";
        _cleanup_free_ char *full = NULL, *short_hex = NULL;
        const char *reason = NULL;
        ImageSpec *spec = NULL;

        ck_assert_int_ge(asprintf(&full, "sha256:%s", hex), 0);
        ck_assert_int_ge(asprintf(&short_hex, "%.12s", hex), 0);

        /* A full digest is a digest only. */
        ck_assert_int_eq(image_spec_parse(full, &spec, &reason), 0);
        ck_assert_ptr_null(spec->ref);
        ck_assert_str_eq(spec->id_prefix, full);
        spec = image_spec_free(spec);

        /* A bare 64-digit ID too (it is not a valid name). */
        ck_assert_int_eq(image_spec_parse(hex, &spec, &reason), 0);
        ck_assert_ptr_null(spec->ref);
        ck_assert_str_eq(spec->id_prefix, full);
        spec = image_spec_free(spec);

        /* Twelve digits, as `ls` shows them: a name first, then a prefix. */
        ck_assert_int_eq(image_spec_parse(short_hex, &spec, &reason), 0);
        ck_assert_ptr_nonnull(spec->ref);
        ck_assert_str_eq(spec->ref->canonical, "docker.io/library/72e27cbf4238:latest");
        ck_assert_str_eq(spec->id_prefix, "sha256:72e27cbf4238");
        spec = image_spec_free(spec);

        /* sha256: with a prefix; fewer than 12 digits, uppercase or too many are refused. */
        ck_assert_int_eq(image_spec_parse("sha256:72e27cbf4238", &spec, &reason), 0);
        ck_assert_ptr_null(spec->ref);
        spec = image_spec_free(spec);
        ck_assert_int_eq(image_spec_parse("sha256:72e27cbf423", &spec, &reason), -EINVAL);
        ck_assert_int_eq(image_spec_parse("sha256:72E27CBF4238", &spec, &reason), -EINVAL);
        ck_assert_int_eq(image_spec_parse("sha256:", &spec, &reason), -EINVAL);

        /* Eleven hex digits are just a name. */
        ck_assert_int_eq(image_spec_parse("72e27cbf423", &spec, &reason), 0);
        ck_assert_ptr_nonnull(spec->ref);
        ck_assert_ptr_null(spec->id_prefix);
        spec = image_spec_free(spec);

        /* Names parse as references, errors as reference_parse's. */
        ck_assert_int_eq(image_spec_parse("alpine", &spec, &reason), 0);
        ck_assert_str_eq(spec->ref->canonical, "docker.io/library/alpine:latest");
        ck_assert_ptr_null(spec->id_prefix);
        spec = image_spec_free(spec);
        ck_assert_int_eq(image_spec_parse("Alpine!", &spec, &reason), -EINVAL);
        ck_assert_ptr_nonnull(reason);
        ck_assert_int_eq(image_spec_parse("", &spec, &reason), -EINVAL);
}
END_TEST

static Suite *reference_suite(void) {
        Suite *s = suite_create("reference");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 30);
        tcase_add_loop_test(tc, test_valid, 0, ELEMENTSOF(valid));
        tcase_add_loop_test(tc, test_invalid, 0, ELEMENTSOF(invalid));
        tcase_add_test(tc, test_null);
        tcase_add_test(tc, test_tag_limit);
        tcase_add_test(tc, test_name_limit);
        tcase_add_test(tc, test_domain_limit);
        tcase_add_test(tc, test_string_limit);
        tcase_add_test(tc, test_image_spec);
        tcase_add_test(tc, test_same_image_spellings);
        tcase_add_test(tc, test_loopback);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(reference_suite());
        int failed;

        srunner_set_fork_status(sr, CK_FORK);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
