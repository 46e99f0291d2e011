/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The msb-image CLI: one file per command, each exporting a CliCommand that
 * main.c lists in a plain table. Commands talk to the daemon only through
 * libmsbimage; this header holds what they share (exit codes, error
 * reporting, option parsing and output formatting).
 */

#include <getopt.h>
#include <stdio.h>

#include "macro.h"

/* Exit codes (issue 6): success, the operation failed, bad usage. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2

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

/* Output formats of --format. */
typedef enum CliFormat {
        CLI_FORMAT_TABLE,
        CLI_FORMAT_JSON,
} CliFormat;

/* Option values shared by the commands' getopt tables. */
enum {
        CLI_OPT_HELP = 'h',
        CLI_OPT_SOCKET = 0x100,
        CLI_OPT_FORMAT,
        CLI_OPT_POLICY,
        CLI_OPT_PLATFORM,
        CLI_OPT_TAG,
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

/* Reports a usage error about cmd (or the program when cmd is NULL) and
 * returns CLI_EXIT_USAGE. */
int cli_usage_error(const CliCommand *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Connects to the daemon; on failure reports it (saying how to start the
 * daemon when nothing listens) and returns a negative errno.
 */
int cli_connect(const CliGlobals *globals, MsbClient **ret_client);

/*
 * Reports a failed call as `msb-image: <what>: <why>`, where why is the
 * daemon's message for a JSON-RPC error and strerror otherwise. Returns
 * CLI_EXIT_FAILURE.
 */
int cli_report(MsbClient *c, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prints a JSON text indented, with a newline; r < 0 on a bad text. */
int cli_print_json(const char *json_text);

/* Sizes, 1024-based: "512 B", "1.5 KiB", "3.2 MiB". */
void cli_format_size(int64_t bytes, char *buf, size_t size);
#define CLI_SIZE_MAX 32

/* A time in ms since the epoch relative to now: "5 minutes ago"; "-" for
 * MSB_NULL_INT. */
void cli_format_ago(int64_t ms, int64_t now_ms, char *buf, size_t size);
/* The same time as "2026-11-27 07:30:15 UTC". */
void cli_format_time(int64_t ms, char *buf, size_t size);
#define CLI_TIME_MAX 64

/* The first 12 hex digits of a digest ("sha256:0123..."), or "<none>". */
const char *cli_short_digest(const char *digest, char *buf, size_t size);
#define CLI_SHORT_DIGEST_MAX 16

int64_t cli_now_ms(void);

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
