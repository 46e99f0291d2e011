/* SPDX-License-Identifier: Apache-2.0 */

/* msb-image events: the cache's changes as they happen, one line each, as
 * docker events prints them. */

#include <time.h>

#include "cli.h"

/* "2026-11-27T08:30:15.123+01:00": local time with milliseconds, as docker
 * events shows its times (to the nanosecond). */
static void format_event_time(int64_t ms, char *buf, size_t size) {
        char date[32], zone[8];
        struct tm tm;
        time_t t = (time_t) (ms / 1000);

        if (ms == MSB_NULL_INT || !localtime_r(&t, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0 ||
            strftime(zone, sizeof(zone), "%z", &tm) != 5) {
                snprintf(buf, size, "-");
                return;
        }
        snprintf(buf, size, "%s.%03d%.3s:%s", date, (int) (ms % 1000), zone, zone + 3);
}

static void print_human(const MsbEvent *e) {
        char when[CLI_TIME_MAX];

        format_event_time(e->at, when, sizeof(when));
        if (e->lost_count != MSB_NULL_INT) {
                printf("%s events.lost %lld event(s) were not received: this reader fell behind\n", when,
                       (long long) e->lost_count);
                return;
        }
        printf("%s %s %s %s", when, e->type, e->reference ?: "-", e->manifest_digest ?: "-");
        if (e->kind)
                printf(" (%s %s)", e->kind, e->name ?: "");
        putchar('\n');
}

/* One JSON object per line: the event's params; a loss as
 * {"type": "events.lost", "count", "at"}. */
static int print_json(const MsbEvent *e) {
        _cleanup_free_ char *text = NULL;
        json_t *o;

        if (e->lost_count == MSB_NULL_INT) {
                puts(e->json);
                return 0;
        }
        o = json_pack("{s:s, s:I, s:I}", "type", "events.lost", "count", (json_int_t) e->lost_count, "at",
                      (json_int_t) e->at);
        text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!text)
                return -ENOMEM;
        puts(text);
        return 0;
}

static int run(int argc, char *argv[], CliGlobals *globals) {
        _cleanup_(msb_client_freep) MsbClient *client = NULL;
        CliFormat format = CLI_FORMAT_TABLE;
        int r;

        if (!cli_format_command_connect(&cli_command_events, argc, argv, globals, &format, &client, &r))
                return r;
        r = msb_client_events_subscribe(client);
        if (r < 0)
                return cli_report(client, r, "cannot subscribe to events");
        for (;;) {
                _cleanup_(msb_event_freep) MsbEvent *e = NULL;

                r = msb_client_event_read(client, &e);
                if (r == -ECONNRESET) {
                        fputs(CLI_PROGRAM ": the daemon closed the connection\n", stderr);
                        return CLI_EXIT_UNREACHABLE;
                }
                if (r < 0)
                        return cli_report(client, r, "cannot read events");
                if (format == CLI_FORMAT_JSON)
                        r = print_json(e);
                else
                        print_human(e);
                /* Each line as it happens, also into a pipe. */
                if (r < 0 || fflush(stdout) != 0)
                        return cli_report(client, r < 0 ? r : -errno, "cannot print an event");
        }
}

const CliCommand cli_command_events = {
        .name = "events",
        .summary = "print the cache's changes as they happen",
        .usage = "Usage: " CLI_PROGRAM " events [--format table|json]\n"
                 "\n"
                 "Print each change of the cache as it happens, one line each, until\n"
                 "interrupted: the time, the type (image.loaded, image.pulled, image.removed,\n"
                 "image.pruned, image.evicted, pin.added, pin.removed), the reference and the\n"
                 "manifest digest; for a pin, its kind and name. A reader that falls behind\n"
                 "loses events: a line events.lost then says how many.\n"
                 "\n"
                 "Options:\n"
                 "  --format FORMAT  table (default: the lines above) or json (one object per\n"
                 "                   line: the daemon's Event, or {\"type\": \"events.lost\", \"count\"})\n"
                 "  --socket PATH    the daemon's socket\n"
                 "  -h, --help       show this help\n",
        .run = run,
};
