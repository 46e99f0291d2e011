/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The msb-image CLI: one file per command, each exporting a CliCommand that
 * main.c lists in a plain table. Commands talk to the daemon only through
 * libmsbimage; this header holds what they share (exit codes, error
 * reporting, option parsing and output formatting).
 */

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>

#include "macro.h"

/*
 * Exit codes, the same for every command (documented in msb-image(1)), so
 * that a script can tell what went wrong without parsing messages.
 */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1     /* the daemon refused, or a local failure */
#define CLI_EXIT_USAGE 2       /* bad command line; nothing was sent */
#define CLI_EXIT_NOT_FOUND 3   /* what the command names does not exist */
#define CLI_EXIT_UNREACHABLE 4 /* no daemon to talk to, or it went away */
/* `exists` answers "no" with 1, as `podman image exists` and test(1) do, so
 * a failure to find out cannot use 1 there: it is this. */
#define CLI_EXIT_EXISTS_ERROR 5

#define CLI_PROGRAM "msb-image"

/* Options every command accepts besides its own. */
typedef struct CliGlobals {
        const char *socket_path; /* --socket; NULL: the default discovery */
} CliGlobals;

typedef struct CliCommand {
        const char *name;
        const char *alias;   /* another name, or NULL */
        const char *summary; /* one line for the command list */
        const char *usage;   /* the --help text, starting with the synopsis */
        int (*run)(int argc, char *argv[], CliGlobals *globals);
} CliCommand;

extern const CliCommand cli_command_ls;
extern const CliCommand cli_command_inspect;
extern const CliCommand cli_command_rm;
extern const CliCommand cli_command_prune;
extern const CliCommand cli_command_pull;
extern const CliCommand cli_command_load;
extern const CliCommand cli_command_pin;
extern const CliCommand cli_command_df;
extern const CliCommand cli_command_info;
extern const CliCommand cli_command_exists;
extern const CliCommand cli_command_events;

/* Output formats of --format. */
typedef enum CliFormat {
        CLI_FORMAT_TABLE,
        CLI_FORMAT_JSON,
        CLI_FORMAT_TEMPLATE, /* ls and inspect only: see CliOutput */
} CliFormat;

/* Option values shared by the commands' getopt tables. */
enum {
        CLI_OPT_HELP = 'h',
        CLI_OPT_SOCKET = 0x100,
        CLI_OPT_FORMAT,
        CLI_OPT_POLICY,
        CLI_OPT_PLATFORM,
        CLI_OPT_TAG,
        CLI_OPT_IMAGE,
        CLI_OPT_FILTER,
};

#define CLI_COMMON_OPTIONS                                              \
        { "help", no_argument, NULL, CLI_OPT_HELP },                    \
        { "socket", required_argument, NULL, CLI_OPT_SOCKET }

/*
 * Handles an option every command has (--help, --socket, unknown options).
 * Returns 1 when opt was handled and parsing goes on, 0 when the command
 * must exit with *ret_exit (help printed, or a usage error reported), and
 * -1 when opt is the command's own.
 */
int cli_common_option(const CliCommand *cmd, int opt, CliGlobals *globals, int *ret_exit);

/* In a command's getopt loop: returns from the command when a common
 * option says so (help, usage error), and is true when opt was handled. */
#define CLI_COMMON_OPTION(cmd, opt, globals)                                       \
        ({                                                                          \
                int _ex_ = CLI_EXIT_OK;                                            \
                int _r_ = cli_common_option((cmd), (opt), (globals), &_ex_);       \
                if (_r_ == 0)                                                      \
                        return _ex_;                                               \
                _r_ > 0;                                                           \
        })

/* Parses --format's argument; a usage error is reported. */
int cli_parse_format(const CliCommand *cmd, const char *arg, CliFormat *ret);

/*
 * --format of ls and inspect, which also take a template in the manner of
 * docker's Go templates: text with {{.Field}} placeholders (a dotted path
 * such as {{.Config.Env}}), {{json .Field}} and {{json .}}; "\t" and "\n"
 * stand for a tab and a newline. "table TEMPLATE" prints aligned columns
 * (cells split at tabs) under headers. Each command describes the fields
 * of the object a placeholder reads (its "view"); a field it does not
 * list is a usage error, found before anything is sent.
 */
typedef struct CliField {
        const char *path;   /* "Repository", "Config.Env" */
        const char *header; /* its column header under "table TEMPLATE" */
} CliField;

typedef struct CliTemplate CliTemplate;

typedef struct CliOutput {
        CliFormat format;
        bool table;            /* "table TEMPLATE" */
        CliTemplate *template; /* owned; set for CLI_FORMAT_TEMPLATE */
} CliOutput;

/* Parses "table", "json", "TEMPLATE" or "table TEMPLATE" into *ret (which
 * is cleared first); returns 0, or reports a usage error and returns
 * CLI_EXIT_USAGE. */
int cli_parse_output(const CliCommand *cmd, const char *arg, const CliField *fields, size_t n_fields,
                     CliOutput *ret);
void cli_output_done(CliOutput *o);

/* Prints one line per view (a JSON array of view objects) with a template
 * output, or the table of "table TEMPLATE". */
int cli_output_print(const CliOutput *o, json_t *views);

/* Reports a usage error about cmd (or the program when cmd is NULL) and
 * returns CLI_EXIT_USAGE. */
int cli_usage_error(const CliCommand *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Connects to the daemon. Returns 0, or reports the failure (saying how to
 * start the daemon when nothing listens) and returns the exit status to
 * end with: CLI_EXIT_UNREACHABLE, or CLI_EXIT_FAILURE when out of memory.
 */
int cli_connect(const CliGlobals *globals, MsbClient **ret_client);

/* For a command whose only option is --format and that takes no argument:
 * parses its command line and connects. True to go on; false when the
 * command ends with *ret_exit (help printed, a usage error, no daemon). */
bool cli_format_command_connect(const CliCommand *cmd, int argc, char *argv[], CliGlobals *globals,
                                CliFormat *ret_format, MsbClient **ret_client, int *ret_exit);

/* The exit status a failed call r (a negative errno, -MSB_EREMOTE for an
 * error the daemon sent) ends the command with. */
int cli_exit_status(MsbClient *c, int r);

/*
 * Reports a failed call as `msb-image: <what>: <why>`, where why is the
 * daemon's message for a JSON-RPC error and strerror otherwise. Returns
 * cli_exit_status(c, r).
 */
int cli_report(MsbClient *c, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prints a JSON text indented, with a newline; r < 0 on a bad text. */
int cli_print_json(const char *json_text);
int cli_print_json_value(json_t *j);

/* Sizes, 1024-based: "512 B", "1.5 KiB", "3.2 MiB". */
void cli_format_size(int64_t bytes, char *buf, size_t size);
#define CLI_SIZE_MAX 32

/* A progress bar of CLI_BAR_WIDTH characters ("=====>    ") for done of
 * total bytes; empty while total is not positive. */
#define CLI_BAR_WIDTH 30
void cli_format_bar(int64_t done, int64_t total, char bar[static CLI_BAR_WIDTH + 1]);

/* A time in ms since the epoch relative to now: "5 minutes ago"; "-" for
 * MSB_NULL_INT. */
void cli_format_ago(int64_t ms, int64_t now_ms, char *buf, size_t size);
/* The same time as "2026-11-27 07:30:15 UTC". */
void cli_format_time(int64_t ms, char *buf, size_t size);
#define CLI_TIME_MAX 64

/*
 * The parts of a reference ("docker.io/library/alpine:3.19",
 * "example.com/app@sha256:..."), found without copying: the name is the
 * first name_len bytes; its familiar form, as docker prints it ("alpine",
 * "user/app": docker.io/ and docker.io/library/ dropped), starts at
 * familiar. tag and digest point into the reference (NULL when absent).
 */
typedef struct CliReferenceParts {
        size_t name_len;
        size_t familiar;
        const char *tag;
        size_t tag_len;
        const char *digest;
} CliReferenceParts;

void cli_reference_parts(const char *reference, CliReferenceParts *ret);

/* The first 12 hex digits of a digest ("sha256:0123..."), or "<none>". */
const char *cli_short_digest(const char *digest, char *buf, size_t size);
#define CLI_SHORT_DIGEST_MAX 16

int64_t cli_now_ms(void);

/* The time `--filter until=VALUE` names, in ms since the epoch: a Go
 * duration before now_ms ("24h", "30m", "10s"), a Unix timestamp, or an
 * RFC 3339 date and time (until.c). -EINVAL when VALUE is none of them. */
int cli_parse_until(const char *value, int64_t now_ms, int64_t *ret_ms);

/* qsort/bsearch comparison of two `const char *` elements. */
int cli_compare_strings(const void *a, const void *b);

/* A text table: rows of cells printed in columns two spaces apart. */
typedef struct CliTable {
        size_t n_columns;
        size_t n_rows;   /* the header included */
        char **cells;    /* n_rows * n_columns, owned */
} CliTable;

int cli_table_new(size_t n_columns, const char *const *header, CliTable **ret);
/* Adds a row of n_columns cells (copied). */
int cli_table_add(CliTable *t, const char *const *cells);
void cli_table_print(const CliTable *t, FILE *f);
CliTable *cli_table_free(CliTable *t);
DEFINE_FREEP(CliTable, cli_table_free)
