#include "loader/base/log.hpp"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include <bpf/libbpf.h>

namespace gms::log {
namespace {

std::atomic<Level> g_level{Level::info};
std::vector<std::string>* g_capture = nullptr;

int libbpf_print(enum libbpf_print_level lvl, const char* format, va_list args)
{
    Level want = lvl == LIBBPF_WARN && !g_capture ? Level::info : Level::debug;
    if (level() < want && !(g_capture && lvl == LIBBPF_WARN))
        return 0;
    // The verifier log comes as one message of any length.
    char* buf = nullptr;
    int n = vasprintf(&buf, format, args);
    if (n < 0)
        return 0;
    std::string_view msg(buf, size_t(n));
    while (!msg.empty() && msg.back() == '\n')
        msg.remove_suffix(1);
    if (g_capture && lvl == LIBBPF_WARN)
        g_capture->emplace_back(msg);
    if (level() >= want)
        write(want, msg);
    free(buf);
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

LibbpfCapture::LibbpfCapture(std::vector<std::string>& lines)
{
    route_libbpf();
    g_capture = &lines;
}
LibbpfCapture::~LibbpfCapture() { g_capture = nullptr; }

}  // namespace gms::log
