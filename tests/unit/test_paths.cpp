// The tree's own paths: every file of the repository that a README, a
// schema or a comment names exists (tests/check_paths.py, whose header
// says what counts as a path), so that a file that moves takes the
// sentences naming it along. And proof that the check finds a stale path
// and leaves build outputs, patterns and examples alone.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "helpers.hpp"

namespace fs = std::filesystem;

namespace {

using gms::test::run;
using gms::test::source_dir;

std::string checker() { return source_dir() + "/tests/check_paths.py"; }

gms::test::Why why_no_checker()
{
    if (!fs::exists(checker()))
        return "no source tree at " + source_dir() + " (the VM lane runs unit_tests alone)";
    return gms::test::needed(fs::exists("/usr/bin/python3") ? "" : "no /usr/bin/python3");
}

}  // namespace

TEST_CASE("Every repository path named in READMEs, schemas and comments exists", "[paths]")
{
    GMS_SKIP_IF(why_no_checker());
    auto r = run({"/usr/bin/python3", checker(), source_dir()});
    INFO("check_paths.py:\n" << r.out << r.err);
    REQUIRE(r.exit_code == 0);
}

TEST_CASE("The path check names a stale path and skips outputs, patterns and examples", "[paths]")
{
    GMS_SKIP_IF(why_no_checker());
    // Split, so that the check of this very file does not see them.
    const std::string stale_model = std::string("loader") + "/engine.cpp";
    const std::string stale_report = std::string("loader") + "/report.cpp";
    gms::test::ScratchDir dir;
    for (const char* d : {"schemas", "loader/model", "bpf", "tests/unit"})
        fs::create_directories(dir.path + "/" + d);
    std::ofstream(dir.path + "/loader/model/engine.cpp") << "// see `loader/model/engine.cpp`\n";
    std::ofstream(dir.path + "/bpf/gmem.bpf.c")
        << "/* bpf/gmem.bpf.c; build/bpf/gmem.bpf.o; <bpf/bpf_helpers.h>;\n"
           " * tools/testing/selftests/bpf/test_cpp.cpp */\n";
    std::ofstream(dir.path + "/README.md")
        << "The model is `loader/model/engine.cpp` (was " << stale_model << ").\n"
           "Tests: tests/unit/test_<module>.cpp, loader/probe/features.*, schemas/KIND.schema.json.\n";
    std::ofstream(dir.path + "/schemas/a.schema.json") << "{\"description\": \"written by " << stale_report << "\"}\n";

    auto r = run({"/usr/bin/python3", checker(), dir.path});
    INFO("check_paths.py:\n" << r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out == "README.md:1: " + stale_model + "\nschemas/a.schema.json:1: " + stale_report + "\n");
}
