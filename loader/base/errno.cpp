#include "loader/base/errno.hpp"

#include <cstring>

#include <fmt/format.h>

namespace gms {

std::string errno_name(int64_t ret)
{
    if (ret >= 0)
        return "";
    // Errors are -4095..-1 (MAX_ERRNO); a value read from a file may be
    // anything, INT64_MIN included, which cannot be negated.
    if (ret < -4095)
        return "not an errno";
    const char* name = strerrorname_np(static_cast<int>(-ret));
    return name ? name : fmt::format("E{}", -ret);
}

}  // namespace gms
