/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Ownership helpers in the style of systemd, shared by libmsbimage and the
 * msb-image CLI (header only; nothing here is exported): a `_cleanup_(fn)`
 * local is released when it leaves scope, `TAKE_PTR` hands it over.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msbimage.h"

#define _cleanup_(f) __attribute__((cleanup(f)))

#define TAKE_PTR(p)                          \
        ({                                   \
                __typeof__(p) _p_ = (p);     \
                (p) = NULL;                  \
                _p_;                         \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Defines `func##p(type **p)` for _cleanup_(), calling func(*p). */
#define DEFINE_FREEP(type, func)                 \
        static inline void func##p(type **p) {   \
                func(*p);                        \
        }

DEFINE_FREEP(MsbClient, msb_client_free)
DEFINE_FREEP(MsbImage, msb_image_free)
DEFINE_FREEP(MsbImageList, msb_image_list_free)
DEFINE_FREEP(MsbImageDetail, msb_image_detail_free)
DEFINE_FREEP(MsbPruneReport, msb_prune_report_free)
DEFINE_FREEP(MsbRootfs, msb_rootfs_free)
DEFINE_FREEP(MsbPinList, msb_pin_list_free)
DEFINE_FREEP(MsbSystemInfo, msb_system_info_free)
DEFINE_FREEP(MsbSystemDf, msb_system_df_free)
DEFINE_FREEP(MsbEvent, msb_event_free)

#ifdef JANSSON_H
/* jansson (>= 2.9) provides json_decrefp() for its own json_auto_t. */
#define _cleanup_json_ _cleanup_(json_decrefp)
#endif
