// Golden tests: recordings the built-in workload made on the project's
// host kernel (tests/golden/regen.sh), replayed through report and
// explain, compared byte for byte with the outputs kept beside them.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "helpers.hpp"

namespace {

std::string golden(const std::string& name)
{
    std::ifstream in(gms::test::source_dir() + "/tests/golden/" + name);
    REQUIRE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string path(const std::string& name) { return gms::test::source_dir() + "/tests/golden/" + name; }

void check_output(const std::vector<std::string>& args, const std::string& expected)
{
    std::vector<std::string> argv = {gms::test::binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = gms::test::run(argv);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == golden(expected));
}

}  // namespace

TEST_CASE("report of recorded workloads matches the golden outputs", "[golden]")
{
    for (std::string name : {"rebind", "convert", "storm"}) {
        INFO(name);
        check_output({"report", "-i", path(name + ".rec")}, name + ".report.txt");
    }
}

TEST_CASE("explain of a recorded gfn and pfn matches the golden outputs", "[golden]")
{
    check_output({"explain", "-i", path("rebind.rec"), "--gfn", "0x40002"}, "rebind.explain-gfn.txt");
    std::string pfn = golden("rebind.pfn");
    pfn.erase(pfn.find_last_not_of('\n') + 1);
    check_output({"explain", "-i", path("rebind.rec"), "--pfn", pfn}, "rebind.explain-pfn.txt");
}

TEST_CASE("explain --json and report --json of the golden recordings validate", "[golden][schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--json", "explain", "-i", path("rebind.rec"), "--gfn", "0x40002"},
             {"--json", "report", "-i", path("storm.rec")},
             {"--json", "report", "-i", path("convert.rec")}}) {
        std::vector<std::string> argv = {gms::test::binary()};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = gms::test::run(argv);
        REQUIRE(r.exit_code == 0);
        gms::test::require_valid(r.out, "explain,summary");
    }
}
