/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Shared libraries the daemon maps at their first use instead of at start.
 *
 * libcurl and libarchive are needed only by a pull and by a layer's
 * conversion, yet linking them makes every start map their dependency
 * chains (GnuTLS, Kerberos, LDAP, libssh2, libxml2, ICU, libstdc++, ...),
 * run those libraries' constructors and relocate them: about 6 MiB of an
 * idle daemon's 13 MiB (bench/memory). glibc has no lazy loading of a
 * DT_NEEDED library (Solaris' -z lazyload), so this does what systemd's
 * dlopen_many_sym_or_warn() does: dlopen() the soname the build linked
 * against on the first call that needs it, and fill a table of function
 * pointers from dlsym().
 *
 * Thread ownership: a DlopenLibrary is a process-wide static of the module
 * that uses the library; its lock guards the one attempt to load it. The
 * function pointers it fills are written only under that lock, once, before
 * the first dlopen_library_load() that returns 0, and never again: a thread
 * calls through them after its own successful dlopen_library_load(), or
 * after a thread that had one handed it work through a lock (a queue, the
 * creation of the thread). The library stays loaded until the process ends.
 */

#include <pthread.h>

#include "error.h"

/* One function of the library: its name and the pointer to set. */
typedef struct DlopenSymbol {
        const char *name;
        void **fn;
} DlopenSymbol;

#define DLOPEN_ERROR_MAX 256

typedef struct DlopenLibrary {
        const char *soname;          /* e.g. "libcurl.so.4", from the build (meson.build) */
        const DlopenSymbol *symbols; /* every function the daemon calls */
        size_t n_symbols;
        pthread_mutex_t lock;  /* guards the fields below and the first write of the symbols */
        bool tried;            /* dlopen() was attempted: result says how it went */
        int result;            /* 0, or -ELIBACC / -ELIBBAD */
        char error[DLOPEN_ERROR_MAX]; /* dlerror()'s words when it failed */
} DlopenLibrary;

/* A DlopenLibrary's initializer; symbols is an array of DlopenSymbol. */
#define DLOPEN_LIBRARY_INIT(so, syms)                                                                       \
        {                                                                                                   \
                .soname = (so), .symbols = (syms), .n_symbols = ELEMENTSOF(syms),                           \
                .lock = PTHREAD_MUTEX_INITIALIZER,                                                          \
        }

/*
 * A library's module lists its functions as an X-macro, FUNCTIONS(X) calling
 * X(name) for each, and with it declares in its header, for each function
 * NAME, the pointer sym_NAME (of NAME's own type, from the library's header):
 *
 *     FUNCTIONS(DLOPEN_SYMBOL_DECLARE)
 *     int prefix_load(MsbError *err);
 *     int prefix_loaded(MsbError *err);
 *
 * and defines in its source the pointers, the DlopenLibrary, prefix_load()
 * and prefix_loaded():
 *
 *     DLOPEN_LIBRARY_DEFINE(prefix, "libfoo.so.1", FUNCTIONS)
 */
#define DLOPEN_SYMBOL_DECLARE(name) extern typeof(name) *sym_##name;
#define DLOPEN_SYMBOL_DEFINE(name) typeof(name) *sym_##name;
#define DLOPEN_SYMBOL_ENTRY(name) { #name, (void **) &sym_##name },
#define DLOPEN_LIBRARY_DEFINE(prefix, so, FUNCTIONS)                                      \
        FUNCTIONS(DLOPEN_SYMBOL_DEFINE)                                                   \
        static const DlopenSymbol prefix##_symbols[] = { FUNCTIONS(DLOPEN_SYMBOL_ENTRY) }; \
        static DlopenLibrary prefix##_library = DLOPEN_LIBRARY_INIT(so, prefix##_symbols); \
        int prefix##_load(MsbError *err) {                                                \
                return dlopen_library_load(&prefix##_library, err);                       \
        }                                                                                 \
        int prefix##_loaded(MsbError *err) {                                              \
                return dlopen_library_loaded(&prefix##_library, err);                     \
        }

/*
 * Loads the library the first time (any thread), and on every call returns
 * 0 when its functions can be called, or records an internal-error naming
 * the library and what dlopen() or dlsym() said, and returns -ELIBACC (the
 * library cannot be loaded) or -ELIBBAD (a function is missing). A failed
 * load is not tried again: what the dynamic loader saw will not change
 * while the daemon runs.
 */
int dlopen_library_load(DlopenLibrary *lib, MsbError *err);

/* Without waiting for a load another thread is doing: 1 when the library
 * was loaded, 0 when that was not done yet (or is being done), or what a
 * failed load returned, with the same error. For a thread that must not
 * block, such as the loop, to decide whether to have a worker load it. */
int dlopen_library_loaded(DlopenLibrary *lib, MsbError *err);
