// The command line: errors, exit codes, privileges.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>

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

namespace {

// A usage error: exit 2, one `error: ` line naming `what`, and no number
// of more than 20 digits (CLI11 printed DBL_MAX's 309).
void check_usage(const std::vector<std::string>& args, const std::string& what)
{
    std::vector<std::string> argv = {"timeout", "20", binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv);
    std::string line;
    for (const auto& a : args)
        line += a + " ";
    INFO(line << "-> exit " << r.exit_code << "\nstderr: " << r.err << "\nstdout: " << r.out);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains(what));
    size_t run_of_digits = 0, longest = 0;
    for (char c : r.err) {
        run_of_digits = isdigit(static_cast<unsigned char>(c)) ? run_of_digits + 1 : 0;
        longest = std::max(longest, run_of_digits);
    }
    CHECK(longest <= 20);
}

std::string golden(const std::string& name) { return gms::test::source_dir() + "/tests/golden/" + name; }

}  // namespace

TEST_CASE("nan and inf are refused for every number, with readable range errors", "[cli]")
{
    // --opt=VALUE: "-inf" after a short option would be read as options.
    for (std::string bad : {"nan", "inf", "-inf", "NaN", "1e999", "0"}) {
        check_usage({"trace", "--duration=" + bad}, bad);
        check_usage({"record", "--duration=" + bad}, bad);
        check_usage({"explain", "--gfn", "1", "--duration=" + bad}, bad);
        check_usage({"daemon", "--interval=" + bad}, bad);
        check_usage({"daemon", "--audit-interval=" + bad}, bad);
        check_usage({"daemon", "--duration=" + bad}, bad);
        check_usage({"enforce", "--duration=" + bad}, bad);
        check_usage({"top", "--interval=" + bad}, bad);
    }
    check_usage({"top", "-i", "0.01"}, "not in [0.1, 3600]");
    gms::test::ScratchDir dir;
    std::ofstream(dir.path + "/d.conf") << "interval = nan\n";
    check_usage({"daemon", "--config", dir.path + "/d.conf", "-d", "1"}, "finite");
}

TEST_CASE("parse errors follow --json", "[cli]")
{
    for (std::vector<std::string> args : {std::vector<std::string>{"--json", "report", "-i"},
                                          {"--json", "explain", "--gfn"},
                                          {"report", "--json", "-i"},
                                          {"--json", "trace", "--vm="},
                                          {"--json", "top", "-n", "-1"}}) {
        std::vector<std::string> argv = {binary()};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = run(argv);
        INFO(args[1] << " " << r.err);
        CHECK(r.exit_code == 2);
        CHECK(r.err.empty());
        CHECK(nlohmann::json::parse(r.out).contains("error"));
    }
}

TEST_CASE("out-of-range and negative values are refused", "[cli]")
{
    check_usage({"explain", "-i", golden("rebind.rec"), "--gfn", "-1"}, "-1");
    check_usage({"explain", "-i", golden("rebind.rec"), "--pfn", "0x1ffffffffffffffff"}, "64 bits");
    check_usage({"explain", "-i", golden("rebind.rec"), "--vm", "-1", "--gfn", "1"}, "--vm -1");
    check_usage({"trace", "--vm", "-1", "-d", "1"}, "--vm -1");
    check_usage({"top", "-n", "-1"}, "-1");
    check_usage({"top", "--stacks", "-1"}, "-1");
    std::string self = std::to_string(getpid());
    check_usage({"pin", "add", "-p", self, "--gpa", "0", "--size", "99999999999T"}, "does not fit in 64 bits");
    check_usage({"pin", "add", "-p", self, "--gpa", "0x10000000000000000", "--size", "4096"}, "64 bits");
    check_usage({"pin", "add", "-p", self, "--gpa", "0xfffffffffffff000", "--size", "8192"},
                "past the end of the address space");
    check_usage({"pin", "add", "-p", self, "--gpa", "-4096", "--size", "4096"}, "--gpa -4096");
}

TEST_CASE("an empty --opt= is refused, not filled from the next argument", "[cli]")
{
    check_usage({"trace", "--vm=", "-d", "1"}, "--vm=: empty value");
    check_usage({"report", "--input=", "x"}, "--input=: empty value");
}

TEST_CASE("conflicting options are refused with exit 2", "[cli]")
{
    std::string rec = golden("rebind.rec");
    check_usage({"explain", "-i", rec, "--gfn", "1", "-d", "1"}, "excludes");
    check_usage({"explain", "-i", rec, "--gfn", "1", "-p", "1"}, "excludes");
    check_usage({"explain", "-i", rec, "--gfn", "1", "--", "true"}, "excludes");
    check_usage({"enforce", "--status", "--stop"}, "excludes");
    check_usage({"enforce", "--status", "--audit"}, "excludes");
    check_usage({"enforce", "--stop", "--audit"}, "excludes");
}

TEST_CASE("version: --version follows --json", "[cli]")
{
    auto r = run({binary(), "--json", "--version"});
    CHECK(r.exit_code == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j.at("type") == "version");
    CHECK_FALSE(j.at("version").get<std::string>().empty());
    SKIP_WITHOUT_VALIDATOR();
    gms::test::require_valid(r.out, "version");
}

TEST_CASE("hooks --json says its type", "[cli][live]")
{
    GMS_REQUIRE_ROOT();
    auto r = run({binary(), "--json", "hooks"});
    REQUIRE(r.exit_code == 0);
    CHECK(nlohmann::json::parse(r.out).at("type") == "hooks");
    SKIP_WITHOUT_VALIDATOR();
    gms::test::require_valid(r.out, "hooks");
}
