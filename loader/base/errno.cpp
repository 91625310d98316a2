#include "loader/base/errno.hpp"

#include <cstring>

#include <fmt/format.h>

namespace gms {

std::string errno_name(int64_t ret)
{
    if (ret >= 0)
        return "";
    const char* name = strerrorname_np(static_cast<int>(-ret));
    return name ? name : fmt::format("E{}", -ret);
}

}  // namespace gms
