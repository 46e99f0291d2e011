/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

static LogLevel max_level = LOG_LEVEL_INFO;
static bool journal_stream = false;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
        [LOG_LEVEL_ERROR] = "error",
        [LOG_LEVEL_WARNING] = "warning",
        [LOG_LEVEL_NOTICE] = "notice",
        [LOG_LEVEL_INFO] = "info",
        [LOG_LEVEL_DEBUG] = "debug",
};

/* JOURNAL_STREAM is "device:inode" of the stream journald connected us to;
 * it only applies while stderr is still that stream. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

void log_setup(void) {
        journal_stream = stderr_is_journal();
}

void log_set_max_level(LogLevel level) {
        max_level = level;
}

LogLevel log_get_max_level(void) {
        return max_level;
}

int log_level_from_string(const char *s, LogLevel *ret) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (level_names[i] && streq(level_names[i], s)) {
                        *ret = (LogLevel) i;
                        return 0;
                }
        return -EINVAL;
}

void log_emit(LogLevel level, const char *fmt, ...) {
        char line[4096];
        va_list ap;
        int n;

        if (level > max_level)
                return;

        if (journal_stream)
                n = snprintf(line, sizeof(line), "<%d>", (int) level);
        else {
                struct timespec ts;
                struct tm tm;

                clock_gettime(CLOCK_REALTIME, &ts);
                gmtime_r(&ts.tv_sec, &tm);
                n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ msb-imaged[%d] %s: ",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                             ts.tv_nsec / 1000000, (int) getpid(), level_names[level]);
        }
        if (n < 0 || (size_t) n >= sizeof(line))
                n = 0;

        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
        va_end(ap);
        if (m < 0)
                m = 0;
        size_t len = (size_t) n + ((size_t) m < sizeof(line) - n - 1 ? (size_t) m : sizeof(line) - n - 2);
        line[len++] = '\n';

        /* One write per line, serialised, so lines from worker threads never interleave. */
        pthread_mutex_lock(&log_lock);
        (void) write_all(STDERR_FILENO, line, len);
        pthread_mutex_unlock(&log_lock);
}
