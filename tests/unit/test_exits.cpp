// The exits scenario, and bench_exits run briefly: what each mode costs a
// VM's exits to user space on this kernel (the lane prints the MEASURED
// lines; build/bench_exits measures properly, tests/bench/README.md).
#include <catch2/catch.hpp>

#include <sys/utsname.h>

#include <cstdio>

#include "helpers.hpp"
#include "loader/workload/workload.hpp"
#include "tests/bench/exits.hpp"

using gms::workload::Result;

TEST_CASE("scenario exits makes one exit per KVM_RUN", "[workload][kvm][scenario][exits]")
{
    GMS_REQUIRE_LIVE();
    std::vector<std::string> settings = {"count=2000"};
    Result r = gms::workload::run(gms::workload::parse_scenario("exits", settings));
    CHECK(r.ops == 2000);
    CHECK(r.vcpu_runs == 2000);
    CHECK(r.punches == 0);
    CHECK(r.ops_per_s() > 0);
}

TEST_CASE("bench_exits measures every mode against the untraced loop", "[bench][exits]")
{
    GMS_REQUIRE_LIVE();
    gms::test::ScratchDir dir;
    // what the VM lane can run (no bpftrace there); enforce skips where the
    // BPF LSM cannot run, with gmemscope's reason
    std::vector<std::string> modes = {"none", "record", "top", "enforce-audit", "enforce"};
    auto runs = gms::bench::run_all(modes, gms::test::binary(), "", 1, 1.0, dir.path, [](const auto&) {});
    struct utsname u {};
    uname(&u);
    auto rows = gms::bench::summarize(runs, modes, u.release);
    REQUIRE(rows.size() == modes.size());
    std::string lines;
    for (const auto& j : rows) {
        lines += j.dump() + "\n";
        INFO(j.dump());
        std::string mode = j["mode"];
        if (j.contains("skipped")) {
            // only the LSM mode may be missing, and only where the LSM cannot run
            CHECK(mode == "enforce");
            CHECK(!gms::test::why_no_lsm_after("").empty());
            std::printf("MEASURED bench_exits %s: skipped: %s\n", mode.c_str(),
                        j["skipped"].get<std::string>().c_str());
            continue;
        }
        CHECK(j["runs"] == 1);
        CHECK(j["exits_per_s"]["median"].get<double>() > 0);
        std::printf("MEASURED bench_exits %s: %.0f exits/s, %.2f us/exit, ratio %.3f\n", mode.c_str(),
                    j["exits_per_s"]["median"].get<double>(), j["us_per_exit"].get<double>(),
                    j["ratio"]["median"].get<double>());
    }
    if (gms::test::why_no_validator().empty()) {
        auto v = gms::test::validate(lines, {"--schema", gms::test::source_dir() + "/schemas/bench_exits.schema.json"});
        CHECK(v.exit_code == 0);
        INFO(v.out << v.err);
    }
}
