/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The disk a VM boots: a VMDK descriptor that concatenates an image's fsmeta
 * and its layer images into one flat disk.
 */

#include <stdint.h>

#include "error.h"

/* Writes the twoGbMaxExtentFlat VMDK descriptor: FLAT extents fsmeta then
 * each layer, absolute paths, sizes in 512-byte sectors. */
int vmdk_write(int out_fd, const char *fsmeta_path, uint64_t fsmeta_size,
               const char *const *layer_paths, const uint64_t *layer_sizes,
               size_t n_layers, MsbError *err);
