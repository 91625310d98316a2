// The test suite itself: CTest runs every Catch2 test case under its whole
// name, and reports a skip as a skip.
#include <filesystem>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"

namespace fs = std::filesystem;

namespace {

std::set<std::string> lines_of(const std::string& text)
{
    std::set<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (!line.empty())
            out.insert(line);
    return out;
}

// The build directory of this unit_tests binary, where CTest's test list is.
std::string build_dir() { return fs::path(gms::test::binary()).parent_path(); }

gms::test::Why why_no_ctest()
{
    if (!fs::exists(build_dir() + "/CTestTestfile.cmake"))
        return "no CTest test list beside " + gms::test::binary() + " (the VM lane runs unit_tests alone)";
    return gms::test::needed(gms::test::run({"ctest", "--version"}).exit_code == 0 ? "" : "no ctest on PATH");
}

}  // namespace

TEST_CASE("ctest lists exactly the test cases Catch2 has, each under its whole name", "[suite]")
{
    GMS_SKIP_IF(why_no_ctest());
    // catch_discover_tests cuts a name at ';' and at nothing else: a cut
    // fragment would run `unit_tests "<fragment>"`, match no test and pass.
    auto catch_list = gms::test::run({"/proc/self/exe", "--list-test-names-only"});
    REQUIRE(catch_list.exit_code >= 0);
    auto catch_names = lines_of(catch_list.out);
    REQUIRE(catch_names.size() > 10);
    for (const auto& n : catch_names) {
        INFO(n);
        CHECK(n.find(';') == std::string::npos);
    }

    // Every CTest entry, whatever it runs: CTest's list is Catch2's.
    auto ctest = gms::test::run({"ctest", "--test-dir", build_dir(), "-N"});
    REQUIRE(ctest.exit_code == 0);
    std::set<std::string> ctest_names;
    std::istringstream in(ctest.out);
    for (std::string line; std::getline(in, line);)
        if (auto at = line.find(": "); line.find("Test") != std::string::npos && line.find('#') != std::string::npos &&
                                         at != std::string::npos)
            ctest_names.insert(line.substr(at + 2));
    CHECK(ctest_names == catch_names);
}

TEST_CASE("each CTest entry's command selects exactly its own test case", "[suite]")
{
    GMS_SKIP_IF(why_no_ctest());
    // A name Catch2 reads as something else (a leading '-' is a flag, ','
    // separates specs) would select no test, or another, and pass.
    auto props = gms::test::run({"ctest", "--test-dir", build_dir(), "--show-only=json-v1"});
    REQUIRE(props.exit_code == 0);
    auto doc = nlohmann::json::parse(props.out);
    REQUIRE(doc.at("tests").size() > 10);
    for (const auto& t : doc.at("tests")) {
        std::string name = t.at("name");
        INFO(name);
        std::vector<std::string> argv = t.at("command").get<std::vector<std::string>>();
        argv.push_back("--list-test-names-only");
        auto r = gms::test::run(argv);
        CHECK(r.out == name + "\n");
    }
}

TEST_CASE("a skipped test is reported by CTest as skipped, with its reason", "[suite]")
{
    GMS_SKIP_IF(why_no_ctest());
    // This test's own skip, below, run by CTest when CTest runs the suite:
    // here the property that makes CTest count it.
    auto props = gms::test::run({"ctest", "--test-dir", build_dir(), "-N", "--show-only=json-v1"});
    REQUIRE(props.exit_code == 0);
    CHECK_THAT(props.out, Catch::Contains("SKIP_REGULAR_EXPRESSION") && Catch::Contains("\"SKIPPED:"));
}

TEST_CASE("the skip idiom: a reason CI must provide fails under CI=true, another lane's reason skips", "[suite]")
{
    // The hidden probe below, run in a child so that its FAIL or skip is
    // looked at, not suffered.
    std::string me = fs::read_symlink("/proc/self/exe");
    auto run = [&](const char* ci, const char* which) {
        return gms::test::run({"env", std::string("CI=") + ci, std::string("GMS_SKIP_PROBE=") + which, me,
                               "the skip idiom probe"});
    };
    auto r = run("true", "needed");
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.out, Catch::Contains("CI must run this test"));
    r = run("", "needed");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("SKIPPED: probe needs"));
    r = run("true", "other");
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains("SKIPPED: probe belongs to another lane"));
}

TEST_CASE("the skip idiom probe", "[.suite-probe]")
{
    std::string which = getenv("GMS_SKIP_PROBE") ? getenv("GMS_SKIP_PROBE") : "";
    GMS_SKIP_IF(which == "needed" ? gms::test::needed("probe needs it") : gms::test::Why());
    GMS_SKIP_IF(which == "other" ? "probe belongs to another lane" : "");
    SUCCEED("ran");
}
