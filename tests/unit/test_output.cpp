// How trace writes its output: to a file, in batches, not a write per event.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "helpers.hpp"

using namespace gms::test;

namespace {

// Built beside gmemscope (tests/progs/gms_load.cpp).
const std::string kLoad = (std::filesystem::path(binary()).parent_path() / "gms_load").string();

Why why_no_load_or_strace()
{
    if (access(kLoad.c_str(), X_OK) != 0)
        return "the test program " + kLoad + " is not here (the VM lane carries gmemscope and unit_tests only)";
    if (run({"sh", "-c", "command -v strace"}).exit_code != 0)
        return "strace is not installed";
    return {};
}

std::string slurp(const std::string& path)
{
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

size_t count_lines_starting(const std::string& text, const std::string& prefix)
{
    std::istringstream lines(text);
    size_t n = 0;
    for (std::string line; std::getline(lines, line);)
        n += line.rfind(prefix, 0) == 0;
    return n;
}

}  // namespace

TEST_CASE("trace --json into a file writes its events in batches, not one write per event", "[live][output]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_load_or_strace());
    SKIP_WITHOUT_VALIDATOR();
    ScratchDir dir;
    // strace -f follows the traced command too; it writes to fd 2 only
    // (under --json its stdout is our stderr).
    auto r = run({"sh", "-c",
                  "strace -f -qq -e trace=write -e signal=none -o " + dir.path + "/strace.log " + binary() +
                      " trace --json -- " + kLoad + " ioctls 1000 > " + dir.path + "/events.jsonl"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::string events = slurp(dir.path + "/events.jsonl");
    size_t lines = count_lines_starting(events, "{");
    // 1,000 failing creations and 1,000 failing fallocates, each an event.
    CHECK(lines >= 2000);
    require_valid(events, "attached,event");
    std::string calls = slurp(dir.path + "/strace.log");
    size_t writes = 0;
    std::istringstream log(calls);
    for (std::string line; std::getline(log, line);)
        writes += line.find(" write(1, ") != std::string::npos;
    INFO(writes << " writes to stdout for " << lines << " lines");
    CHECK(writes >= 1);
    CHECK(writes * 20 <= lines);
}
