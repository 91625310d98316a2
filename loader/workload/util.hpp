// Small helpers the workload's scenarios share (not part of its interface).
#pragma once

#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>

namespace gms::workload::util {

// "%#llx": 0x1000, and 0 for zero.
inline std::string hex(std::uint64_t v)
{
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

// 0 or the errno of a failed ioctl.
inline int ioctl_err(int fd, unsigned long request, void* arg)
{
    return ::ioctl(fd, request, arg) < 0 ? errno : 0;
}

}  // namespace gms::workload::util
