#include "loader/log.hpp"

#include <atomic>
#include <cstdarg>
#include <cstdio>

#include <bpf/libbpf.h>

namespace gms::log {
namespace {

std::atomic<Level> g_level{Level::info};

int libbpf_print(enum libbpf_print_level lvl, const char* format, va_list args)
{
    Level want = lvl == LIBBPF_WARN ? Level::info : Level::debug;
    if (level() < want)
        return 0;
    char buf[1024];
    int n = vsnprintf(buf, sizeof(buf), format, args);
    std::string_view msg(buf, n < 0 ? 0 : std::min<size_t>(size_t(n), sizeof(buf) - 1));
    while (!msg.empty() && msg.back() == '\n')
        msg.remove_suffix(1);
    write(want, fmt::format("libbpf: {}", msg));
    return 0;
}

}  // namespace

void set_level(Level l) { g_level = l; }
Level level() { return g_level; }

void write(Level, std::string_view msg)
{
    fmt::print(stderr, "{}\n", msg);
}

void route_libbpf() { libbpf_set_print(libbpf_print); }

}  // namespace gms::log
