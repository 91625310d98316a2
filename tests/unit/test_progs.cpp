// gmemscope on guest_memfd programs it did not write (tests/progs): each
// program makes unusual calls on the real KVM and logs every call and its
// result; gmemscope traces it, and its report, explain, export, audit and
// JSON stream are compared with that log.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "loader/audit/audit.hpp"

namespace {

using gms::test::binary;
using gms::test::require_valid;
using gms::test::run;
using gms::test::ScratchDir;
using nlohmann::json;

const std::string kCalls = GMS_CALLS;

// The VM lane's initramfs carries gmemscope and unit_tests, not the test programs.
gms::test::Why why_no_calls()
{
    if (access(kCalls.c_str(), X_OK) == 0)
        return {};
    return "the test program " + kCalls + " is not here (the VM lane carries gmemscope and unit_tests only)";
}

// One line of a program's log: call=NAME key=value ... ret=N errno=NAME.
using LogLine = std::map<std::string, std::string>;

std::vector<LogLine> read_log(const std::string& path)
{
    std::vector<LogLine> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        LogLine l;
        std::istringstream words(line);
        for (std::string w; words >> w;)
            if (auto eq = w.find('='); eq != std::string::npos)
                l[w.substr(0, eq)] = w.substr(eq + 1);
        out.push_back(l);
    }
    return out;
}

uint64_t num(const LogLine& l, const std::string& key) { return std::stoull(l.at(key)); }
int64_t ret_of(const LogLine& l) { return std::stoll(l.at("ret")); }

// A JSON u64 as the schemas allow it: a number, or a hex string above 2^53.
uint64_t u64(const json& j) { return j.is_string() ? std::stoull(j.get<std::string>(), nullptr, 16) : j.get<uint64_t>(); }

std::string hex(uint64_t v)
{
    std::ostringstream s;
    s << "0x" << std::hex << v;
    return s.str();
}

// Records `prog args...` with gmemscope into dir/rec; the program's log is dir/log.
void record(const ScratchDir& dir, const std::vector<std::string>& prog)
{
    std::vector<std::string> argv = {binary(), "record", "-o", dir.path + "/rec", "--"};
    argv.insert(argv.end(), prog.begin(), prog.end());
    auto r = run(argv);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
}

json report_json(const ScratchDir& dir)
{
    auto r = run({binary(), "--json", "report", "-i", dir.path + "/rec"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "summary");
    return json::parse(r.out);
}

}  // namespace

TEST_CASE("fallocate of every mode and failing calls: report, export and explain count exactly what the program logged",
          "[live][progs]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_calls());
    SKIP_WITHOUT_VALIDATOR();
    ScratchDir dir;
    record(dir, {kCalls, "fallocate", dir.path + "/log"});
    auto log = read_log(dir.path + "/log");

    // The truth, from the program's own log.
    uint64_t punches = 0, punched = 0, allocs = 0, allocated = 0;
    std::map<std::pair<std::string, std::string>, uint64_t> failed;   // (call, errno) -> count
    uint64_t gmem_ino = 0;
    for (const auto& l : log) {
        if (ret_of(l) < 0) {
            failed[{l.at("call"), l.at("errno")}]++;
            continue;
        }
        if (l.at("call") == "KVM_CREATE_GUEST_MEMFD")
            gmem_ino = num(l, "ino");
        if (l.at("call") != "fallocate")
            continue;
        if (num(l, "mode") & 2) {
            punches++;
            punched += num(l, "len");
        } else {
            allocs++;
            allocated += num(l, "len");
        }
    }
    REQUIRE(punches == 4);
    REQUIRE(allocs == 2);
    REQUIRE(failed.size() >= 4);
    REQUIRE(gmem_ino != 0);

    json rep = report_json(dir);
    REQUIRE(rep["vms"].size() == 1);
    const json& st = rep["vms"][0]["storm"];
    CHECK(u64(st["punches"]) == punches);
    CHECK(u64(st["punched_bytes"]) == punched);   // above 2^53: a hex string
    CHECK(st["punched_bytes"].is_string());
    CHECK(u64(st["allocations"]) == allocs);
    CHECK(u64(st["allocated_bytes"]) == allocated);
    uint64_t failed_fallocates = 0;
    for (const auto& [k, n] : failed)
        if (k.first == "fallocate")
            failed_fallocates += n;
    CHECK(u64(st["failed_fallocates"]) == failed_fallocates);
    // Every failed call, grouped by call and errno, as the log has them.
    std::map<std::pair<std::string, std::string>, uint64_t> reported;
    for (const auto& g : rep["failed_calls"])
        reported[{g["call"], g["errno"]}] = u64(g["count"]);
    CHECK(reported == failed);
    // The gmem file list, in JSON as in the text.
    REQUIRE(rep["vms"][0]["gmem_files"].size() == 1);
    CHECK(u64(rep["vms"][0]["gmem_files"][0]["gmem_ino"]) == gmem_ino);

    auto text = run({binary(), "report", "-i", dir.path + "/rec"});
    REQUIRE(text.exit_code == 0);
    CHECK_THAT(text.out, Catch::Contains(std::to_string(punches) + " punch-holes (" + std::to_string(punched >> 10) +
                                         " KiB)"));
    CHECK_THAT(text.out, Catch::Contains(std::to_string(allocs) + " allocations (" +
                                         std::to_string(allocated >> 10) + " KiB), " +
                                         std::to_string(failed_fallocates) + " failed"));
    for (const auto& [k, n] : failed) {
        INFO(k.first << " " << k.second);
        CHECK(text.out.find(k.first) != std::string::npos);
    }

    // export: each call on its gmem file's track, named for what it did.
    auto ex = run({binary(), "export", "-i", dir.path + "/rec", "-o", dir.path + "/trace.json"});
    REQUIRE(ex.exit_code == 0);
    json trace = json::parse(std::ifstream(dir.path + "/trace.json"));
    std::map<std::string, uint64_t> by_cat;
    for (const auto& e : trace["traceEvents"])
        if (e.value("ph", "") == "X" && e.contains("cat") && e["args"].value("type", "") == "fallocate")
            by_cat[e["cat"]]++;
    CHECK(by_cat["invalidate"] == punches);
    CHECK(by_cat["allocate"] == allocs);
    CHECK(by_cat["failed"] == failed_fallocates);
    for (const auto& e : trace["traceEvents"])
        if (e.value("ph", "") == "i") {
            INFO(e.dump());
            CHECK(e.contains("tid"));
        }

    // top counts in the kernel: punch-holes and failed punch-holes, not allocations.
    auto top = run({binary(), "--json", "top", "-b", "-i", "0.5", "--", kCalls, "fallocate", dir.path + "/log2"});
    INFO(top.err);
    REQUIRE(top.exit_code == 0);
    uint64_t failed_punches = 0;
    for (const auto& l : log)
        failed_punches += l.at("call") == "fallocate" && ret_of(l) < 0 && (num(l, "mode") & 2);
    std::vector<json> frames;
    std::istringstream top_lines(top.out);
    for (std::string line; std::getline(top_lines, line);)
        frames.push_back(json::parse(line));
    REQUIRE_FALSE(frames.empty());
    uint64_t top_punches = 0, top_errors = 0;
    for (const auto& row : frames.back().at("rows")) {
        top_punches += row.at("punches").get<uint64_t>();
        top_errors += row.at("punch_errors").get<uint64_t>();
    }
    CHECK(top_punches == punches);
    CHECK(top_errors == failed_punches);

    // explain of the slot's first gfn (gmem index 0): what each call did to it.
    auto exp = run({binary(), "explain", "-i", dir.path + "/rec", "--gfn", hex((1ull << 30) >> 12)});
    REQUIRE(exp.exit_code == 0);
    CHECK_THAT(exp.out, Catch::Contains("allocation: fallocate(KEEP_SIZE) of gmem ino " + std::to_string(gmem_ino) +
                                        " offset 0x0 len 0x4000"));
    CHECK_THAT(exp.out, Catch::Contains("punch-hole: fallocate(KEEP_SIZE|PUNCH_HOLE) of gmem ino " +
                                        std::to_string(gmem_ino) + " offset 0x0 len 0x1000"));
    CHECK_THAT(exp.out, Catch::Contains("failed fallocate(KEEP_SIZE|ZERO_RANGE)"));
}

TEST_CASE("50 VMs in sequence in one process: 50 VM lifetimes with their own memslots, explain sees one", "[live][progs]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_calls());
    SKIP_WITHOUT_VALIDATOR();
    constexpr int kVms = 50, kRuns = 5;
    for (int round = 0; round < kRuns; round++) {
        INFO("run " << round + 1);
        ScratchDir dir;
        record(dir, {kCalls, "vms", std::to_string(kVms), dir.path + "/log"});
        // VM k's memslots and gmem file, from the log
        std::vector<std::vector<LogLine>> slots(kVms);
        std::vector<uint64_t> ino(kVms);
        for (const auto& l : read_log(dir.path + "/log")) {
            REQUIRE(ret_of(l) >= 0);
            int k = int(num(l, "vm_index"));
            if (l.at("call") == "KVM_SET_USER_MEMORY_REGION2")
                slots[size_t(k)].push_back(l);
            if (l.at("call") == "KVM_CREATE_GUEST_MEMFD")
                ino[size_t(k)] = num(l, "ino");
        }

        json rep = report_json(dir);
        REQUIRE(rep["vms"].size() == kVms);
        std::set<std::string> addresses;
        for (int k = 0; k < kVms; k++) {
            INFO("VM " << k);
            const json& v = rep["vms"][size_t(k)];
            addresses.insert(v["vm"]);
            REQUIRE(v["memslots"].size() == slots[size_t(k)].size());
            for (size_t i = 0; i < slots[size_t(k)].size(); i++) {
                const json& s = v["memslots"][i];
                const LogLine& l = slots[size_t(k)][i];
                CHECK(s["slot"] == num(l, "slot"));
                CHECK(s["base_gfn"] == hex(num(l, "gpa") >> 12));
                CHECK(u64(s["pages"]) == num(l, "size") >> 12);
                CHECK(u64(s["gmem_ino"]) == ino[size_t(k)]);
                CHECK(u64(s["gmem_pgoff"]) == num(l, "gmem_offset") >> 12);
                CHECK(s["flags"] == 4);   // KVM_MEM_GUEST_MEMFD
            }
            CHECK(u64(v["storm"]["punches"]) == slots[size_t(k)].size());
            CHECK(u64(v["storm"]["allocations"]) == slots[size_t(k)].size());
            REQUIRE(v.contains("created_ns"));
            REQUIRE(v.contains("ended_ns"));
            // Seen to end by the close of its last file reference (the VM fd,
            // after the gmem fd), not only by a later VM at its address.
            CHECK_THAT(v["end"].get<std::string>(), Catch::Contains("its last file reference closed"));
            CHECK(u64(v["ended_ns"]) >= u64(v["created_ns"]));
            if (k + 1 < kVms)
                CHECK(u64(v["ended_ns"]) <= u64(rep["vms"][size_t(k + 1)]["created_ns"]));
        }
        WARN("run " << round + 1 << ": " << kVms << " VMs at " << addresses.size() << " struct kvm addresses");

        // explain of slot 1's first gfn in VM k: VM k's events only.
        for (int k : {0, 1, 17, kVms - 1}) {
            INFO("VM " << k);
            const json& v = rep["vms"][size_t(k)];
            std::string vm = v["vm"].get<std::string>().substr(2) + "#" + std::to_string(v["lifetime"].get<int>());
            uint64_t gfn = num(slots[size_t(k)][0], "gpa") >> 12;
            auto r = run({binary(), "--json", "explain", "-i", dir.path + "/rec", "--vm", vm, "--gfn", hex(gfn)});
            INFO(r.out << r.err);
            REQUIRE(r.exit_code == 0);
            require_valid(r.out, "explain");
            json ex = json::parse(r.out);
            CHECK(ex["vm"] == v["vm"]);
            CHECK(ex["vm_lifetime"] == v["lifetime"]);
            size_t bound = 0, punched = 0, allocated = 0, ended = 0;
            for (const auto& t : ex["timeline"]) {
                std::string what = t["what"];
                INFO(what);
                CHECK(u64(t["ts_ns"]) >= u64(v["created_ns"]));
                CHECK(u64(t["ts_ns"]) <= u64(v["ended_ns"]));
                if (auto at = what.find("gmem ino "); at != std::string::npos)
                    CHECK(std::stoull(what.substr(at + 9)) == ino[size_t(k)]);
                bound += what.starts_with("memslot 1 bound");
                punched += what.starts_with("punch-hole:");
                allocated += what.starts_with("allocation:");
                ended += what.starts_with("VM ");
            }
            CHECK(bound == 1);
            CHECK(punched == 1);
            CHECK(allocated == 1);
            CHECK(ended == 1);
        }
    }
}

TEST_CASE("audit of a VM with 32764 memslots beside a normal VM: every memslot, in full", "[live][progs]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_calls());
    constexpr int kSlots = 32764;   // KVM_USER_MEM_SLOTS on x86
    ScratchDir dir;
    gms::test::Background prog({kCalls, "memslots", std::to_string(kSlots), dir.path + "/log"});
    REQUIRE(prog.wait_for_stderr("ready", std::chrono::seconds(120)));
    auto log = read_log(dir.path + "/log");
    REQUIRE(log.size() >= 2);
    REQUIRE(log[1].at("call") == "memslots");
    REQUIRE(num(log[1], "made") == kSlots);

    auto t0 = std::chrono::steady_clock::now();
    auto r = run({binary(), "--json", "audit"});
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    WARN("audit --json with one VM of " << kSlots << " memslots: " << secs << " s, " << r.out.size() << " bytes");
    json a = json::parse(r.out);
    const json* big = nullptr;
    const json* small = nullptr;
    for (const auto& v : a["vms"])
        for (const auto& h : v["vm_fds"])
            if (h["tgid"] == prog.pid())
                (v["memslots"].size() == 2 ? small : big) = &v;
    REQUIRE(big);
    REQUIRE(small);
    CHECK((*big)["memslots"].size() == kSlots);
    CHECK_FALSE((*big)["memslots_truncated"].get<bool>());
    CHECK((*big)["memslots_lost"] == 0);
    std::set<uint64_t> ids;
    for (const auto& s : (*big)["memslots"]) {
        ids.insert(s["slot"].get<uint64_t>());
        if (s["slot"].get<uint64_t>() == 12345) {
            CHECK(s["base_gfn"] == hex(12345));
            CHECK(s["npages"] == 1);
            CHECK(s["flags"] == 0);
        }
    }
    CHECK(ids.size() == kSlots);
    CHECK(*ids.rbegin() == kSlots - 1);
    // gmem memslots: the flags the ioctl passed (KVM_MEM_GUEST_MEMFD), without
    // the kernel's own KVM_MEMSLOT_GMEM_ONLY
    for (const auto& s : (*small)["memslots"])
        CHECK(s["flags"] == 4);
    if (gms::test::why_no_validator().empty()) {
        // the small VM's document, validated (the whole one holds 32k memslots)
        json trimmed = a;
        for (auto& v : trimmed["vms"])
            if (v["memslots"].size() > 16)
                v["memslots"] = json::array();
        require_valid(trimmed.dump() + "\n", "audit");
    }

    auto text = run({binary(), "audit"});
    REQUIRE(text.exit_code == 0);
    CHECK(std::count(text.out.begin(), text.out.end(), '\n') > kSlots);

    // With a ring buffer too small for them (64 KiB, 546 records), the
    // audit still reports every VM, lists what it could and says how many
    // memslots it lost.
    gms::Features features = gms::Features::probe();
    gms::Auditor small_ring(&features, false, 64u << 10);
    REQUIRE(small_ring.fallback_reason().empty());
    gms::AuditReport rep = small_ring.run();
    const gms::AuditVm* cut = nullptr;
    size_t vms = 0;
    for (const auto& v : rep.vms)
        for (const auto& h : v.vm_fds)
            if (h.tgid == uint32_t(prog.pid())) {
                vms++;
                if (!cut || v.memslots.size() + v.memslots_lost > cut->memslots.size() + cut->memslots_lost)
                    cut = &v;
            }
    CHECK(vms == 2);   // every VM, the small one too (its memslots may be lost with the big one's)
    REQUIRE(cut);
    INFO("listed " << cut->memslots.size() << " lost " << cut->memslots_lost << " walk incomplete "
                   << cut->walk_incomplete);
    CHECK(cut->memslots_truncated);
    CHECK(cut->memslots_lost > 0);
    CHECK(cut->memslots.size() + cut->memslots_lost == kSlots);
    bool said = false;
    for (const auto& f : rep.findings)
        said |= f.code == "memslots_truncated" && f.vm == cut->id &&
                f.message.find(std::to_string(cut->memslots_lost) + " more were read and lost") != std::string::npos;
    CHECK(said);
    prog.stop(SIGTERM);
}

TEST_CASE("a VM ends with the close of whichever file held it last: VM, vCPU, VM stats, vCPU stats, KVM device, gmem",
          "[live][progs]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_calls());
    SKIP_WITHOUT_VALIDATOR();
    ScratchDir dir;
    record(dir, {kCalls, "ends", dir.path + "/log"});
    std::vector<LogLine> closes;
    for (const auto& l : read_log(dir.path + "/log")) {
        INFO(l.at("call"));
        REQUIRE(ret_of(l) >= 0);
        if (l.at("call") == "close")
            closes.push_back(l);
    }
    REQUIRE(closes.size() == 6);
    json rep = report_json(dir);
    REQUIRE(rep["vms"].size() == closes.size());
    for (size_t k = 0; k < closes.size(); k++) {
        const LogLine& c = closes[k];
        const json& v = rep["vms"][k];
        INFO("VM " << k << ", last file " << c.at("what") << ": " << v.dump());
        REQUIRE(v.contains("ended_ns"));
        // At the close that dropped the last reference: inside that syscall.
        CHECK(u64(v["ended_ns"]) >= num(c, "before_ns"));
        CHECK(u64(v["ended_ns"]) <= num(c, "after_ns"));
        CHECK_THAT(v["end"].get<std::string>(),
                   Catch::EndsWith("(fd " + c.at("fd") + ", " + c.at("what") + ")"));
    }
}

TEST_CASE("audit lists the stats files and KVM devices that hold a VM, from the iterator and from /proc",
          "[live][progs]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_calls());
    ScratchDir dir;
    gms::test::Background prog({kCalls, "files", dir.path + "/log"});
    REQUIRE(prog.wait_for_stderr("ready", std::chrono::seconds(60)));
    // What the program holds: kind, file name and fd, from its log.
    std::set<std::tuple<std::string, std::string, int64_t>> want;
    for (const auto& l : read_log(dir.path + "/log")) {
        REQUIRE(ret_of(l) >= 0);
        if (l.at("call") == "KVM_GET_STATS_FD")
            want.insert(l.at("of") == "vm" ? std::tuple{"vm_stats", "kvm-vm-stats", ret_of(l)}
                                           : std::tuple{"vcpu_stats", "kvm-vcpu-stats:0", ret_of(l)});
    }
    REQUIRE(want.size() == 2);
    // The device's fd is the lowest free one after the stats files.
    for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(prog.pid()) + "/fd"))
        if (std::filesystem::read_symlink(e.path()) == "anon_inode:kvm-vfio")
            want.insert({"kvm_device", "kvm-vfio", std::stoll(e.path().filename())});
    REQUIRE(want.size() == 3);
    for (const char* source : {"iterator", "procfs"}) {
        INFO(source);
        std::vector<std::string> argv = {binary(), "--json", "audit"};
        if (std::string(source) == "procfs")
            argv.push_back("--procfs");
        auto r = run(argv);
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        require_valid(r.out, "audit");
        json a = json::parse(r.out);
        std::set<std::tuple<std::string, std::string, int64_t>> got;
        for (const auto& v : a["vms"])
            for (const auto& f : v["files"])
                if (f["holder"]["tgid"] == prog.pid())
                    got.insert({f["kind"], f["name"], f["holder"]["fd"].get<int64_t>()});
        CHECK(got == want);
        argv.erase(argv.begin() + 1);   // the same audit as text
        auto text = run(argv);
        CHECK_THAT(text.out, Catch::Contains("stats files and KVM devices (each holds its VM):"));
        CHECK_THAT(text.out, Catch::Contains("kvm-vcpu-stats:0"));
    }
    prog.stop(SIGTERM);
}

TEST_CASE("trace --json of a command printing without newlines: every line of the stream is JSON", "[live][progs]")
{
    GMS_REQUIRE_LIVE();
    GMS_SKIP_IF(why_no_calls());
    SKIP_WITHOUT_VALIDATOR();
    for (std::string sub : {"trace", "record"}) {
        INFO(sub);
        ScratchDir dir;
        std::vector<std::string> argv = {binary(), "--json", sub};
        if (sub == "record")
            argv.insert(argv.end(), {"-o", dir.path + "/rec"});
        argv.insert(argv.end(), {"--", kCalls, "print", "3"});
        auto r = run(argv);
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        std::istringstream lines(r.out);
        size_t n = 0;
        for (std::string line; std::getline(lines, line); n++) {
            INFO(line);
            CHECK_NOTHROW(json::parse(line));
        }
        CHECK(n >= (sub == "trace" ? 10u : 1u));
        require_valid(r.out, sub == "trace" ? "attached,event" : "recorded");
        // the command's output went to our stderr, whole
        CHECK_THAT(r.err, Catch::Contains("{\"vm\":0,\"done\":true}{\"vm\":1,\"done\":true}{\"vm\":2,\"done\":true}"));
    }
}
