// Every kind of JSON document gmemscope writes, from the real binary,
// validated against schemas/ by tests/validate_json.py; and proof that the
// validator rejects broken documents, so that none of this passes vacuously.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <map>
#include <string>
#include <vector>

#include "helpers.hpp"

namespace {

using gms::test::binary;
using gms::test::run;
using gms::test::source_dir;
using gms::test::require_valid;
using gms::test::ScratchDir;
using gms::test::shell_quote;
using gms::test::validate;
using gms::test::why_no_validator;
using nlohmann::json;

std::string command_line(const std::vector<std::string>& argv)
{
    std::string line;
    for (const auto& a : argv)
        line += (line.empty() ? "" : " ") + a;
    return line;
}

std::vector<json> parse_lines(const std::string& out)
{
    std::vector<json> docs;
    std::istringstream in(out);
    for (std::string line; std::getline(in, line);)
        docs.push_back(json::parse(line));
    return docs;
}

// A script in dir running `gmemscope --json stress ARGS` with its stdout in
// dir/stress.jsonl, so that trace's output holds only trace's documents.
std::string stress_script(const std::string& dir, const std::string& args)
{
    std::string path = dir + "/stress.sh";
    std::ofstream(path) << "#!/bin/sh\nexec " << shell_quote(binary()) << " --json stress " << args << " > "
                        << shell_quote(dir + "/stress.jsonl") << "\n";
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return path;
}

std::string read_file(const std::string& path)
{
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A fault event as gmemscope writes it, valid against event.schema.json.
json good_fault()
{
    return json::parse(R"({"allocated":true,"comm":"gmemscope","cpu":0,"gfn":"0x40000","gmem_index":0,
        "gmem_ino":49909,"level":1,"pfn":"0x118b82","pid":6594,"private":false,"slot":1,
        "slot_base_gfn":"0x40000","tgid":6594,"ts_ns":1910223859791,"type":"fault","vcpu":0,
        "vm":"0xffff888100da9000","write":true})");
}


}  // namespace

TEST_CASE("the validator rejects wrong documents", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    // The base document passes: every rejection below is the mutation's.
    json fault = good_fault();
    require_valid(fault.dump() + "\n", "event");

    SECTION("an event with a required field missing")
    {
        json bad = fault;
        bad.erase("gfn");
        auto v = validate(fault.dump() + "\n" + bad.dump() + "\n");
        CHECK(v.exit_code == 1);
        CHECK_THAT(v.err, Catch::Contains("line 2: $: 'gfn' is a required property"));
        CHECK_THAT(v.err, !Catch::Contains("line 1:"));
    }
    SECTION("a fault whose gfn is not hex")
    {
        for (json gfn : {json("262144"), json(262144), json("0x4000G"), json("0X40000"), json("0x")}) {
            json bad = fault;
            bad["gfn"] = gfn;
            auto v = validate(bad.dump() + "\n");
            INFO(v.err);
            CHECK(v.exit_code == 1);
            CHECK_THAT(v.err, Catch::Contains("line 1: $.gfn: "));
        }
    }
    SECTION("a field the record does not have")
    {
        json bad = fault;
        bad["used_pages"] = 1;
        auto v = validate(bad.dump() + "\n");
        CHECK(v.exit_code == 1);
        CHECK_THAT(v.err, Catch::Contains("'used_pages' was unexpected"));
    }
    SECTION("gmem_ino without gmem_index, a gmem allocation without gmem_ino")
    {
        json bad = fault;
        bad.erase("gmem_index");
        CHECK(validate(bad.dump() + "\n").exit_code == 1);
        bad.erase("gmem_ino");
        CHECK(validate(bad.dump() + "\n").exit_code == 1);
        bad["allocated"] = false;
        require_valid(bad.dump() + "\n", "event");
    }
    SECTION("a failed ioctl without its errno")
    {
        json ioctl = json::parse(R"({"args":{"attributes":8,"error_offset":0,"flags":0,"size_bytes":16384,
            "start":"0x0"},"args_read":true,"cmd":"0xc080aed2","comm":"gmemscope","cpu":0,"dur_ns":1723,
            "errno":"ENOTTY","fd":5,"fd_kind":"gmem","gmem_ino":49909,"ioctl":"KVM_SET_MEMORY_ATTRIBUTES2",
            "pid":6594,"ret":-25,"tgid":6594,"ts_ns":1910223944349,"type":"ioctl","vm":"0xffff888100da9000"})");
        require_valid(ioctl.dump() + "\n", "event");
        ioctl.erase("errno");
        auto v = validate(ioctl.dump() + "\n");
        CHECK(v.exit_code == 1);
        CHECK_THAT(v.err, Catch::Contains("'errno' is a required property"));
    }
    SECTION("an unknown event type")
    {
        json bad = fault;
        bad["type"] = "page_fault";
        CHECK(validate(bad.dump() + "\n").exit_code == 1);
    }
    SECTION("a line that is not JSON, and no line at all")
    {
        CHECK(validate(fault.dump() + "\nfault gfn 0x40000\n").exit_code == 1);
        CHECK(validate("").exit_code != 0);
    }
    SECTION("--schema and --expect")
    {
        auto v = validate(fault.dump() + "\n", {"--schema", source_dir() + "/schemas/error.schema.json"});
        CHECK(v.exit_code == 1);
        v = validate(R"({"error": "x"})" "\n", {"--expect", "event"});
        CHECK(v.exit_code == 1);
        CHECK_THAT(v.err, Catch::Contains("document kind error, expected event"));
    }
}

TEST_CASE("errors under --json are error documents", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    struct Case {
        std::vector<std::string> args;
        int exit_code;  // 0: any failure
    };
    // --json is a flag of the top-level app; fallthrough() lets it follow
    // the subcommand too.
    for (const auto& c : std::vector<Case>{{{"--json", "hooks", "--bogus"}, 2},
                                           {{"hooks", "--bogus", "--json"}, 2},
                                           {{"--json"}, 2},
                                           {{"--json", "stress", "no-such-scenario"}, 2},
                                           {{"--json", "report", "-i", "/nonexistent/x.rec"}, 0}}) {
        std::vector<std::string> argv = {binary()};
        argv.insert(argv.end(), c.args.begin(), c.args.end());
        auto r = run(argv);
        INFO(command_line(argv));
        CHECK(r.exit_code != 0);
        if (c.exit_code)
            CHECK(r.exit_code == c.exit_code);
        require_valid(r.out, "error");
        CHECK(parse_lines(r.out).size() == 1);
    }
}

TEST_CASE("hooks --json is a hooks document", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_ROOT();
    for (const auto& argv : std::vector<std::vector<std::string>>{{binary(), "--json", "hooks"},
                                                                  {binary(), "hooks", "--json"}}) {
        auto r = run(argv);
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        require_valid(r.out, "hooks");
        auto docs = parse_lines(r.out);
        REQUIRE(docs.size() == 1);
        CHECK(docs[0].at("hooks").size() >= 20);
    }
}

TEST_CASE("hooks --selftest --json is a selftest document, and on the host lane the portable tier fires", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    auto r = run({binary(), "--json", "hooks", "--selftest"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    require_valid(r.out, "selftest");
    auto doc = parse_lines(r.out).at(0);
    CHECK(doc["ok"] == true);
    std::map<std::string, nlohmann::json> hook;
    for (const auto& h : doc["selftest"])
        hook[h["hook"]] = h;
    CHECK(hook["gmem.punch_hole"]["verdict"] == "fired");
    CHECK(hook["kvm_mmu.fault"]["verdict"] == "fired");
    CHECK(hook["gmem.pagecache_add"]["verdict"] == "fired");
    CHECK(hook["iommufd.map"]["verdict"] == "no-trigger");
}

TEST_CASE("stress --json is a stress document for every scenario", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    for (const auto& scenario : {"fault", "punch-storm", "punch-empty", "rebind", "churn", "convert", "dma"}) {
        auto r = run({binary(), "--json", "stress", scenario, "pages=8", "range_pages=8", "count=4"});
        INFO(scenario << ": " << r.err);
        REQUIRE(r.exit_code == 0);
        require_valid(r.out, "stress");
    }
    auto r = run({binary(), "stress", "convert", "pages=4", "--json"});
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "stress");
}

TEST_CASE("trace --json: attached, events, drops", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    ScratchDir dir;
    // --hooks=all: kvm_mmu.set_spte is opt-in, and its records are events too.
    auto r = run({binary(), "--json", "trace", "--hooks=all", "--",
                  stress_script(dir.path, "rebind pages=8 punch_pages=2")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "attached,event");
    require_valid(read_file(dir.path + "/stress.jsonl"), "stress");

    std::vector<std::string> types;
    for (const auto& doc : parse_lines(r.out))
        types.push_back(doc.at("type").get<std::string>());
    REQUIRE(types.size() >= 3);
    CHECK(types.front() == "attached");
    CHECK(types.back() == "drops");
    CHECK(std::count(types.begin(), types.end(), "attached") == 1);
    CHECK(std::count(types.begin(), types.end(), "drops") == 1);
    // What rebind does: every kind of record it causes is in the stream,
    // so each of their schemas was exercised. (Its page-cache adds are
    // folded into its faults: no pagecache_add.)
    for (auto t : {"ioctl", "fault", "set_spte", "pagecache_delete", "fallocate", "zap_all_fast",
                   "zap_page", "gmem_close"}) {
        INFO(t);
        CHECK(std::count(types.begin(), types.end(), t) > 0);
    }
}

TEST_CASE("trace --json of a failing command ends with an error document", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    auto r = run({binary(), "--json", "trace", "--", "false"});
    CHECK(r.exit_code == 1);
    require_valid(r.out, "attached,event,error");
    auto docs = parse_lines(r.out);
    REQUIRE(docs.size() == 3);
    CHECK(docs[0].at("type") == "attached");
    CHECK(docs[1].at("type") == "drops");
    CHECK(docs[2].contains("error"));
}

TEST_CASE("record --json and report --json: recorded and summary documents", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    ScratchDir dir;
    std::string rec = dir.path + "/rebind.rec";
    auto r = run({binary(), "--json", "record", "-o", rec, "--", stress_script(dir.path, "rebind")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "recorded");
    require_valid(read_file(dir.path + "/stress.jsonl"), "stress");
    auto docs = parse_lines(r.out);
    REQUIRE(docs.size() == 1);
    CHECK(docs[0].at("output") == rec);
    CHECK(docs[0].at("records").get<uint64_t>() > 0);

    r = run({binary(), "--json", "report", "-i", rec});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "summary");
    docs = parse_lines(r.out);
    REQUIRE(docs.size() == 1);
    REQUIRE(docs[0].at("vms").size() == 1);
    CHECK(docs[0].at("vms")[0].at("memslots").size() >= 2);
    CHECK(docs[0].at("vms")[0].at("gfn_ranges").size() >= 1);
    CHECK(docs[0].contains("dropped"));
}

TEST_CASE("without privileges: the error under --json is an error document", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    auto r = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                  "--bounding-set=-all", binary(), "--json", "hooks"});
    CHECK(r.exit_code == 3);
    require_valid(r.out, "error");
}

// KVM_SET_MEMORY_ATTRIBUTES has no error_offset (struct kvm_memory_attributes);
// the attrs2 and convert ioctls do.
TEST_CASE("trace --json of conversion ioctls", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    ScratchDir dir;
    auto r = run({binary(), "--json", "trace", "--", stress_script(dir.path, "convert pages=4")});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(read_file(dir.path + "/stress.jsonl"), "stress");
    int failed_ioctls = 0;
    for (const auto& doc : parse_lines(r.out))
        failed_ioctls += doc.value("type", "") == "ioctl" && doc.at("ret").get<int64_t>() < 0;
    CHECK(failed_ioctls > 0);
    require_valid(r.out, "attached,event");
}

// The summary's failures are those ioctl events.
TEST_CASE("report --json of conversion ioctls", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    ScratchDir dir;
    std::string rec = dir.path + "/convert.rec";
    auto r = run({binary(), "record", "-o", rec, "--", binary(), "stress", "convert", "pages=4"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    r = run({binary(), "--json", "report", "-i", rec});
    REQUIRE(r.exit_code == 0);
    CHECK_FALSE(parse_lines(r.out).at(0).at("failures").empty());
    require_valid(r.out, "summary");
}

// trace's stdout is line-buffered, so a traced command sharing it cannot
// land inside one of trace's lines; a punch storm keeps trace writing
// while the command runs.
TEST_CASE("a traced command's output does not split trace's JSON lines", "[schema]")
{
    SKIP_WITHOUT_VALIDATOR();
    GMS_REQUIRE_LIVE();
    auto r = run({binary(), "--json", "trace", "--", binary(), "--json", "stress", "punch-storm",
                  "duration_ms=100"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "attached,event,stress");
}
