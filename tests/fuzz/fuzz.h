/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The libFuzzer entry point every target defines. Built with clang it runs
 * under -fsanitize=fuzzer; otherwise fuzz_driver.c calls it for each file of
 * a corpus, so the corpus is a regression test with any compiler. */

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
