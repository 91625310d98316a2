// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Defines the maps and settings bpf/common.bpf.h declares. */
#define GMS_DEFINE_SHARED
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
