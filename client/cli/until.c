/* SPDX-License-Identifier: Apache-2.0 */

/*
 * The value of `--filter until=`, as docker reads it (docker image prune,
 * docker events): a Go duration before now ("24h", "1h30m", "10s",
 * "1.5h"), a Unix timestamp in seconds ("1700000000", "1700000000.5"), or
 * an RFC 3339 date and time ("2024-01-31", "2024-01-31T12:00",
 * "2024-01-31T12:00:00.5Z", "2024-01-31T12:00:00+01:00"; local time when
 * no zone is given). Written here because libc parses neither Go durations
 * nor RFC 3339 zones.
 */

#include <ctype.h>
#include <math.h>
#include <time.h>

#include "cli.h"

/* A decimal number at *p ("10", "1.5", ".5"); moves *p past it. */
static bool parse_decimal(const char **p, double *ret) {
        const char *s = *p;
        char *end;

        if (!isdigit((unsigned char) *s) && !(*s == '.' && isdigit((unsigned char) s[1])))
                return false;
        *ret = strtod(s, &end);
        if (end == s)
                return false;
        *p = end;
        return true;
}

/* A Go duration: one or more number-unit pairs, each unit one of ns, us,
 * µs, ms, s, m, h. */
static int parse_duration_ms(const char *s, double *ret_ms) {
        static const struct {
                const char *unit;
                double ms;
        } units[] = {
                { "ns", 1e-6 }, { "us", 1e-3 }, { "\xc2\xb5s", 1e-3 }, { "ms", 1 },
                { "s", 1e3 },   { "m", 60e3 },  { "h", 3600e3 },
        };
        double total = 0;

        if (!*s)
                return -EINVAL;
        while (*s) {
                double n;
                size_t best = 0, best_len = 0;

                if (!parse_decimal(&s, &n))
                        return -EINVAL;
                /* The longest unit that matches: "ms" before "m". */
                for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                        size_t len = strlen(units[i].unit);
                        if (len > best_len && strncmp(s, units[i].unit, len) == 0) {
                                best = i;
                                best_len = len;
                        }
                }
                if (best_len == 0)
                        return -EINVAL;
                total += n * units[best].ms;
                s += best_len;
        }
        *ret_ms = total;
        return 0;
}

/* Seconds since the epoch, with an optional fraction. */
static int parse_unix(const char *s, double *ret_ms) {
        const char *p = s;
        double v;

        if (!parse_decimal(&p, &v) || *p)
                return -EINVAL;
        *ret_ms = v * 1e3;
        return 0;
}

/* "[.fraction]" after the seconds, in ms. */
static const char *parse_fraction(const char *p, double *ret_ms) {
        double frac = 0, scale = 100;

        if (*p != '.')
                return p;
        p++;
        if (!isdigit((unsigned char) *p))
                return NULL;
        for (; isdigit((unsigned char) *p); p++, scale /= 10)
                frac += (*p - '0') * scale;
        *ret_ms = frac;
        return p;
}

/* "Z", "+HH:MM" or "-HH:MM" (seconds east of UTC); absent: local time. */
static const char *parse_zone(const char *p, bool *ret_local, long *ret_offset) {
        int hh, mm, n = 0;

        *ret_local = false;
        *ret_offset = 0;
        if (*p == 'Z' || *p == 'z')
                return p + 1;
        if (*p != '+' && *p != '-') {
                *ret_local = true;
                return p;
        }
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &n) != 2 || n != 5 || hh > 23 || mm > 59)
                return NULL;
        *ret_offset = (*p == '-' ? -1 : 1) * (hh * 3600L + mm * 60L);
        return p + 1 + n;
}

static int parse_datetime(const char *s, double *ret_ms) {
        struct tm tm = {};
        double frac_ms = 0;
        bool local;
        long offset;
        time_t t;
        const char *p = strptime(s, "%Y-%m-%d", &tm);

        if (!p)
                return -EINVAL;
        if (*p == 'T') {
                /* Hours, then optionally minutes, then seconds. */
                p = strptime(p + 1, "%H", &tm);
                if (p && *p == ':')
                        p = strptime(p + 1, "%M", &tm);
                if (p && *p == ':')
                        p = strptime(p + 1, "%S", &tm);
                if (p)
                        p = parse_fraction(p, &frac_ms);
        }
        if (p)
                p = parse_zone(p, &local, &offset);
        if (!p || *p)
                return -EINVAL;
        if (local) {
                tm.tm_isdst = -1;
                t = mktime(&tm);
        } else
                t = timegm(&tm) - offset;
        if (t == (time_t) -1)
                return -EINVAL;
        *ret_ms = (double) t * 1e3 + frac_ms;
        return 0;
}

int cli_parse_until(const char *s, int64_t now_ms, int64_t *ret_ms) {
        double ms;

        if (parse_unix(s, &ms) == 0 || parse_datetime(s, &ms) == 0) {
                *ret_ms = (int64_t) llround(ms);
                return 0;
        }
        if (parse_duration_ms(s, &ms) < 0 || ms > (double) now_ms)
                return -EINVAL;
        *ret_ms = now_ms - (int64_t) llround(ms);
        return 0;
}
