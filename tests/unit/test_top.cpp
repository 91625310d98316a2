// top on the real kernel: the in-kernel counts are exact, and the sampled
// stacks name the kernel path that removed the pages.
#include <cstdio>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"

using gms::test::binary;

namespace {

std::vector<nlohmann::json> lines(const std::string& out)
{
    std::vector<nlohmann::json> v;
    std::istringstream in(out);
    for (std::string l; std::getline(in, l);)
        if (!l.empty() && l[0] == '{')
            v.push_back(nlohmann::json::parse(l));
    return v;
}

}  // namespace

TEST_CASE("top counts every punch of a storm in the kernel and finds its stacks", "[top][live]")
{
    GMS_REQUIRE_LIVE();
    auto r = gms::test::run({binary(), "--json", "top", "-b", "-i", "0.5", "--stacks", "1", "--", "sh", "-c",
                             binary() + " stress punch-storm range_pages=16 count=3000 > /dev/null"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto docs = lines(r.out);
    REQUIRE(docs.size() >= 2);
    // The last frame covers the whole run; the storm has one gmem file.
    const auto& whole = docs[docs.size() - 2];
    REQUIRE(whole.at("type") == "top");
    uint64_t punches = 0, removed = 0;
    for (const auto& row : whole.at("rows")) {
        punches += row.at("punches").get<uint64_t>();
        removed += row.at("invalidated_pages").get<uint64_t>();
    }
    CHECK(punches == 3000);
    CHECK(removed >= 3000);   // each punch removes its resident page; close removes the rest
    const auto& stacks = docs.back();
    REQUIRE(stacks.at("type") == "top_stacks");
    REQUIRE_FALSE(stacks.at("stacks").empty());
    bool punch_path = false;
    for (const auto& frame : stacks.at("stacks")[0].at("kernel"))
        punch_path |= frame.get<std::string>().rfind("kvm_gmem_fallocate", 0) == 0;
    CHECK(punch_path);
    // And every line is a valid top document (where the validator runs:
    // the VM lane's guest has no Python, its host checks other documents).
    if (gms::test::why_no_validator().empty())
        gms::test::require_valid(r.out, "top");
}
