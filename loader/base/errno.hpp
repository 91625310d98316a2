// errno values by name, one convention: a kernel return value (negative
// errno) in, "EINVAL" for -22 out.
#pragma once

#include <cstdint>
#include <string>

namespace gms {

// "EINVAL" for -22, "" for a return value >= 0.
std::string errno_name(int64_t ret);

}  // namespace gms
