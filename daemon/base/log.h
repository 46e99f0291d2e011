/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Logging to stderr with levels. Only the edges log (main, the RPC handlers,
 * the server); library modules return errors instead. When stderr is
 * connected to the journal (JOURNAL_STREAM matches stderr) each line carries
 * a `<N>` syslog priority prefix and no timestamp, which journald reads.
 */

#include "util.h"

typedef enum LogLevel {
        LOG_LEVEL_ERROR = 3,
        LOG_LEVEL_WARNING = 4,
        LOG_LEVEL_NOTICE = 5,
        LOG_LEVEL_INFO = 6,
        LOG_LEVEL_DEBUG = 7,
} LogLevel;

void log_setup(void);
void log_set_max_level(LogLevel level);
LogLevel log_get_max_level(void);
/* Parses "error", "warning", "notice", "info" or "debug"; -EINVAL otherwise. */
int log_level_from_string(const char *s, LogLevel *ret);

void log_emit(LogLevel level, const char *fmt, ...) _printf_(2, 3);

#define log_error(...) log_emit(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_emit(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...) log_emit(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_emit(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_emit(LOG_LEVEL_DEBUG, __VA_ARGS__)
