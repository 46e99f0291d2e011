/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The libFuzzer entry point every target defines. Built with clang it runs
 * under -fsanitize=fuzzer; otherwise fuzz_driver.c calls it for each file of
 * a corpus, so the corpus is a regression test with any compiler. */

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A promise of the code under test that does not hold: libFuzzer and the
 * standalone driver both report the abort() as a crash, with this line. */
#define FUZZ_CHECK(x)                                                           \
        do {                                                                    \
                if (!(x)) {                                                     \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,  \
                                __LINE__, #x);                                  \
                        abort();                                                \
                }                                                               \
        } while (0)
