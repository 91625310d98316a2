// Diagnostics on stderr.  The level is set once from -v before anything
// runs; libbpf's print callback has no context pointer, so it reads it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace gms::log {

enum class Level { quiet = 0, info = 1, debug = 2 };

void set_level(Level level);
Level level();
void write(Level level, std::string_view msg);
// Routes libbpf's messages here: warnings at info, the rest at debug.
void route_libbpf();

// While alive, libbpf's warnings go to `lines` instead, and are printed
// only at debug level: a load that is retried without the program that
// failed should not flood stderr with the verifier log.
class LibbpfCapture {
public:
    explicit LibbpfCapture(std::vector<std::string>& lines);
    ~LibbpfCapture();
    LibbpfCapture(const LibbpfCapture&) = delete;
    LibbpfCapture& operator=(const LibbpfCapture&) = delete;
};

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args)
{
    if (level() >= Level::info)
        write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args)
{
    if (level() >= Level::debug)
        write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace gms::log
