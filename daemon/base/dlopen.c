/* SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>

#include "dlopen.h"

static void dlopen_library_open(DlopenLibrary *lib) {
        const char *why;
        void *handle;

        /* RTLD_LOCAL: the library's symbols serve only the pointers below
         * and cannot interpose on anything else the process has loaded. */
        handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
                why = dlerror();
                snprintf(lib->error, sizeof(lib->error), "%s", why ?: "unknown error");
                lib->result = -ELIBACC;
                return;
        }
        for (size_t i = 0; i < lib->n_symbols; i++) {
                void *fn;

                (void) dlerror();
                fn = dlsym(handle, lib->symbols[i].name);
                if (!fn) {
                        why = dlerror();
                        snprintf(lib->error, sizeof(lib->error), "%s", why ?: lib->symbols[i].name);
                        for (size_t j = 0; j < i; j++)
                                *lib->symbols[j].fn = NULL;
                        dlclose(handle);
                        lib->result = -ELIBBAD;
                        return;
                }
                *lib->symbols[i].fn = fn;
        }
        /* The handle is never closed: the pointers stay valid for the
         * life of the process. */
        lib->result = 0;
}

/* What a finished load left in result: 0, or its error recorded in err.
 * error and result are written once, before tried, under the lock the
 * caller took to read tried. */
static int dlopen_library_result(const DlopenLibrary *lib, int result, MsbError *err) {
        if (result < 0)
                return msb_error_set(err, result, PROTO_ERROR_INTERNAL_ERROR, "cannot load %s: %s", lib->soname,
                                     lib->error);
        return 0;
}

int dlopen_library_loaded(DlopenLibrary *lib, MsbError *err) {
        bool tried;
        int r;

        /* trylock: a load in progress holds the lock for its whole dlopen(). */
        if (pthread_mutex_trylock(&lib->lock) != 0)
                return 0;
        tried = lib->tried;
        r = lib->result;
        pthread_mutex_unlock(&lib->lock);
        if (!tried)
                return 0;
        return dlopen_library_result(lib, r, err) < 0 ? r : 1;
}

int dlopen_library_load(DlopenLibrary *lib, MsbError *err) {
        int r;

        pthread_mutex_lock(&lib->lock);
        if (!lib->tried) {
                dlopen_library_open(lib);
                lib->tried = true;
        }
        r = lib->result;
        pthread_mutex_unlock(&lib->lock);
        return dlopen_library_result(lib, r, err);
}
