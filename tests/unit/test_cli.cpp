// The command line: errors, exit codes, privileges.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"

using gms::test::binary;
using gms::test::run;

TEST_CASE("bad flags give a usage error and exit code 2", "[cli]")
{
    auto r = run({binary(), "hooks", "--bogus"});
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::StartsWith("error: "));
    CHECK_THAT(r.err, Catch::Contains("--bogus"));

    r = run({binary(), "--json", "stress", "no-such-scenario"});
    CHECK(r.exit_code == 2);
    auto j = nlohmann::json::parse(r.out);
    CHECK_THAT(j.at("error").get<std::string>(), Catch::Contains("no-such-scenario"));

    r = run({binary()});
    CHECK(r.exit_code == 2);
}

TEST_CASE("version and help flags", "[cli]")
{
    auto r = run({binary(), "--version"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::StartsWith("gmemscope "));
    r = run({binary(), "--help"});
    CHECK(r.exit_code == 0);
    for (auto sub : {"hooks", "trace", "record", "report", "stress"})
        CHECK_THAT(r.out, Catch::Contains(sub));
}

TEST_CASE("without privileges: a clear error naming the capability, exit code 3", "[cli][live]")
{
    GMS_REQUIRE_ROOT();
    // setpriv drops to nobody with no capabilities left.
    std::vector<std::string> as_nobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                          "--inh-caps=-all", "--bounding-set=-all"};
    for (auto sub : {"hooks", "trace"}) {
        auto argv = as_nobody;
        argv.push_back(binary());
        argv.push_back(sub);
        auto r = run(argv);
        INFO(r.err);
        CHECK(r.exit_code == 3);
        CHECK_THAT(r.err, Catch::StartsWith("error: "));
        CHECK_THAT(r.err, Catch::Contains("CAP_BPF"));
        CHECK_THAT(r.err, Catch::Contains("CAP_PERFMON"));
    }
    auto argv = as_nobody;
    argv.insert(argv.end(), {binary(), "--json", "hooks"});
    auto r = run(argv);
    CHECK(r.exit_code == 3);
    CHECK_THAT(nlohmann::json::parse(r.out).at("error").get<std::string>(), Catch::Contains("CAP_BPF"));
}
