// Small helpers the workload's scenarios share (not part of its interface).
#pragma once

#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <utility>

#include "loader/workload/workload.hpp"

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

// Records a step of `scenario` in `result` and, with a log, prints it;
// whether it succeeded.
inline bool record_step(Result& result, std::ostream* log, const char* scenario, std::string name, int err,
                        std::string detail = {})
{
    if (log)
        *log << scenario << ": " << name << ": " << (err ? std::strerror(err) : "ok")
             << (detail.empty() ? "" : " (" + detail + ")") << '\n';
    result.steps.push_back({std::move(name), err, std::move(detail)});
    return err == 0;
}

}  // namespace gms::workload::util
