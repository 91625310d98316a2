// gmemscope audit on the real kernel: workload VMs held alive in other
// processes, audited by the real binary; the snapshot must say exactly
// what the workloads built.  Every document is validated against
// schemas/audit.schema.json.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "loader/workload/workload.hpp"

namespace {

using gms::test::Background;
using gms::test::binary;
using gms::test::require_valid;
using nlohmann::json;

// One workload process, held after its work, and the gmem files it logged.
struct Held {
    explicit Held(const std::vector<std::string>& settings) : proc(argv(settings))
    {
        REQUIRE(proc.wait_for_stderr(": holding for", std::chrono::seconds(30)));
        static const std::regex ino_re("gmem ino ([0-9]+) .* pgoff (0x[0-9a-f]+)");
        for (std::sregex_iterator it(proc.err().begin(), proc.err().end(), ino_re), end; it != end; ++it)
            pgoff[std::stoull((*it)[1])] = std::stoull((*it)[2], nullptr, 16);
    }
    static std::vector<std::string> argv(const std::vector<std::string>& settings)
    {
        std::vector<std::string> a = {binary(), "stress", "--steps"};
        a.insert(a.end(), settings.begin(), settings.end());
        a.push_back("hold_ms=120000");
        return a;
    }
    Background proc;
    std::map<uint64_t, uint64_t> pgoff;   // gmem ino -> pgoff of its (last) binding
};

json audit(const std::vector<std::string>& extra = {})
{
    std::vector<std::string> argv = {binary(), "--json", "audit"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = gms::test::run(argv);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    require_valid(r.out, "audit");
    return json::parse(r.out);
}

std::vector<json> vms_of(const json& a, pid_t tgid)
{
    std::vector<json> out;
    for (const auto& v : a["vms"])
        for (const auto& f : v["vm_fds"])
            if (f["tgid"] == tgid)
                out.push_back(v);
    return out;
}

const json* gmem_of(const json& a, uint64_t ino)
{
    for (const auto& g : a["gmem"])
        if (g["ino"] == ino)
            return &g;
    return nullptr;
}

// The VM's two memslots as the workload binds them: slot 0 anonymous
// (2 MiB at gpa 0), slot 1 gmem at gfn 0x40000.
void require_workload_slots(const json& vm, uint64_t npages, uint64_t ino, uint64_t pgoff)
{
    REQUIRE(vm["memslots"].size() == 2);
    const json& s0 = vm["memslots"][0];
    CHECK(s0["slot"] == 0);
    CHECK(s0["base_gfn"] == "0x0");
    CHECK(s0["npages"] == 512);
    CHECK_FALSE(s0.contains("gmem_ino"));
    const json& s1 = vm["memslots"][1];
    CHECK(s1["slot"] == 1);
    CHECK(s1["as_id"] == 0);
    CHECK(s1["base_gfn"] == "0x40000");
    CHECK(s1["npages"] == npages);
    CHECK(s1["flags"] == 4);   // KVM_MEM_GUEST_MEMFD, without the kernel-internal KVM_MEMSLOT_GMEM_ONLY
    CHECK(s1["gmem_ino"] == ino);
    CHECK(s1["gmem_pgoff"] == pgoff);
    CHECK(vm["nr_memslot_pages"] == 512 + npages);
    REQUIRE(vm["vcpus"].size() == 1);
    CHECK(vm["vcpus"][0]["id"] == 0);
    CHECK(vm["created_vcpus"] == 1);
    CHECK(vm["memslots_truncated"] == false);
}

void require_gmem(const json& a, const json& vm, uint64_t ino, uint64_t size_bytes, uint64_t resident,
                  uint64_t pgoff, pid_t tgid)
{
    const json* g = gmem_of(a, ino);
    REQUIRE(g != nullptr);
    CHECK((*g)["vm"] == vm["vm"]);
    CHECK((*g)["size_bytes"] == size_bytes);
    CHECK((*g)["flags"] == 3);   // MMAP | INIT_SHARED
    CHECK((*g)["resident_pages"] == resident);
    REQUIRE((*g)["holders"].size() == 1);
    CHECK((*g)["holders"][0]["tgid"] == tgid);
    REQUIRE((*g)["bindings"].size() == 1);
    CHECK((*g)["bindings"][0]["slot"] == 1);
    CHECK((*g)["bindings"][0]["gmem_pgoff"] == pgoff);
    CHECK((*g)["bindings"][0]["vm"] == vm["vm"]);
}

}  // namespace

TEST_CASE("audit of workload VMs in three processes: exactly what they built", "[live][audit]")
{
    GMS_REQUIRE_LIVE();
    SKIP_WITHOUT_VALIDATOR();
    // A: one VM whose gmem slot was rebound at 1 MiB; 16 pages touched,
    // 2 punched, 16 touched again at the new offset: 30 resident.
    Held a({"rebind", "pages=16", "punch_pages=2", "rebind_offset=1M"});
    // B: two VMs in one process; 10 punches of 1 page over 8-page ranges:
    // the first VM's 8 pages all punched, the second's 2 of 8.
    Held b({"punch-storm", "vms=2", "range_pages=8", "count=10"});
    // C: one VM bound at gmem offset 64 KiB, 5 pages touched.
    Held c({"fault", "pages=5", "gmem_offset=64K"});
    REQUIRE(a.pgoff.size() == 1);
    REQUIRE(b.pgoff.size() == 2);
    REQUIRE(c.pgoff.size() == 1);

    json r = audit();
    CHECK(r["source"] == "iterator");

    auto va = vms_of(r, a.proc.pid());
    REQUIRE(va.size() == 1);
    uint64_t ino_a = a.pgoff.begin()->first;
    CHECK(a.pgoff.at(ino_a) == 0x100);
    require_workload_slots(va[0], 16, ino_a, 0x100);
    require_gmem(r, va[0], ino_a, (1u << 20) + 16 * 4096, 30, 0x100, a.proc.pid());

    auto vb = vms_of(r, b.proc.pid());
    REQUIRE(vb.size() == 2);
    std::map<uint64_t, uint64_t> resident_b;
    for (const auto& vm : vb) {
        uint64_t ino = vm["memslots"][1]["gmem_ino"];
        REQUIRE(b.pgoff.contains(ino));
        require_workload_slots(vm, 8, ino, 0);
        const json* g = gmem_of(r, ino);
        REQUIRE(g != nullptr);
        resident_b[ino] = (*g)["resident_pages"];
        require_gmem(r, vm, ino, 8 * 4096, resident_b[ino], 0, b.proc.pid());
    }
    // The workload logs its VMs in order; the storm went through them in order.
    CHECK(resident_b.at(b.pgoff.begin()->first) == 0);
    CHECK(resident_b.at(std::next(b.pgoff.begin())->first) == 6);

    auto vc = vms_of(r, c.proc.pid());
    REQUIRE(vc.size() == 1);
    uint64_t ino_c = c.pgoff.begin()->first;
    require_workload_slots(vc[0], 5, ino_c, 16);
    require_gmem(r, vc[0], ino_c, 65536 + 5 * 4096, 5, 16, c.proc.pid());

    // Nothing is wrong with these VMs.
    std::set<uint64_t> ours = {ino_a, ino_c, b.pgoff.begin()->first, std::next(b.pgoff.begin())->first};
    for (const auto& f : r["findings"])
        CHECK_FALSE(ours.contains(f.value("gmem_ino", uint64_t(0))));

    SECTION("the /proc fallback sees the same fds and gmem sizes, and says what it cannot see")
    {
        json p = audit({"--procfs"});
        CHECK(p["source"] == "procfs");
        CHECK(p["unseen"].size() >= 3);
        CHECK(vms_of(p, a.proc.pid()).size() == 1);
        CHECK(vms_of(p, b.proc.pid()).size() == 2);
        CHECK(vms_of(p, c.proc.pid()).size() == 1);
        for (uint64_t ino : ours) {
            const json* g = gmem_of(p, ino);
            REQUIRE(g != nullptr);
            CHECK((*g)["size_bytes"] == (*gmem_of(r, ino))["size_bytes"]);
            CHECK((*g)["holders"] == (*gmem_of(r, ino))["holders"]);
        }
    }

    SECTION("once the processes are gone, so are their VMs")
    {
        std::vector<pid_t> pids = {a.proc.pid(), b.proc.pid(), c.proc.pid()};
        a.proc.stop(SIGTERM);
        b.proc.stop(SIGTERM);
        c.proc.stop(SIGTERM);
        json after = audit();
        for (pid_t p : pids)
            CHECK(vms_of(after, p).empty());
        for (uint64_t ino : ours)
            CHECK(gmem_of(after, ino) == nullptr);
    }
}

TEST_CASE("audit findings: a gmem file bound to no memslot, resident pages with no VM fd", "[live][audit]")
{
    GMS_REQUIRE_LIVE();
    SKIP_WITHOUT_VALIDATOR();
    gms::workload::VmConfig cfg;
    cfg.slot_pages = 8;
    cfg.gmem_size_bytes = 8 * 4096;
    gms::workload::Vm unbound(cfg), orphan(cfg);
    unbound.touch(0, 4);
    unbound.delete_slot();
    orphan.touch(0, 3);
    // The VM fd goes away; the VM lives on through its vCPU and gmem files.
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(devnull >= 0);
    REQUIRE(dup3(devnull, orphan.vm_fd(), O_CLOEXEC) == orphan.vm_fd());
    close(devnull);

    json r = audit();
    std::map<std::string, json> by_code;
    for (const auto& f : r["findings"]) {
        uint64_t ino = f.value("gmem_ino", uint64_t(0));
        if (ino == unbound.gmem_ino() || ino == orphan.gmem_ino())
            by_code[f["code"]] = f;
    }
    REQUIRE(by_code.contains("gmem_unbound"));
    CHECK(by_code["gmem_unbound"]["severity"] == "warning");
    CHECK(by_code["gmem_unbound"]["gmem_ino"] == unbound.gmem_ino());
    REQUIRE(by_code.contains("gmem_orphan"));
    CHECK(by_code["gmem_orphan"]["severity"] == "warning");
    CHECK(by_code["gmem_orphan"]["gmem_ino"] == orphan.gmem_ino());
    CHECK(by_code.size() == 2);

    const json* g = gmem_of(r, unbound.gmem_ino());
    REQUIRE(g != nullptr);
    CHECK((*g)["bindings"].empty());
    CHECK((*g)["resident_pages"] == 4);
    g = gmem_of(r, orphan.gmem_ino());
    REQUIRE(g != nullptr);
    CHECK((*g)["resident_pages"] == 3);
    bool orphan_vm_found = false;
    for (const auto& v : r["vms"])
        if (v["vm"] == (*g)["vm"]) {
            orphan_vm_found = true;
            CHECK(v["vm_fds"].empty());
            CHECK(v["vcpus"].size() == 1);
            CHECK(v["created_vcpus"] == 1);
            CHECK(v["nr_memslot_pages"] == 512 + 8);
            CHECK(v["memslots"].size() == 2);
        }
    CHECK(orphan_vm_found);
}

TEST_CASE("audit -i adds what a recording knows and refuses a bad recording", "[audit]")
{
    GMS_REQUIRE_ROOT();
    SKIP_WITHOUT_VALIDATOR();
    std::string rec = gms::test::source_dir() + "/tests/golden/convert.rec";
    json r = audit({"-i", rec});
    CHECK(r["recording"] == rec);
    // That run mapped nothing for DMA: nothing to report, and no claim that it was not looked for.
    CHECK(r["dma"].empty());
    for (const auto& u : r["unseen"])
        CHECK(u.get<std::string>().find("known only from a recording") == std::string::npos);

    gms::test::ScratchDir dir;
    std::string bad = dir.path + "/bad.rec";
    FILE* f = fopen(bad.c_str(), "w");
    REQUIRE(f != nullptr);
    fputs("not a recording", f);
    fclose(f);
    auto e = gms::test::run({binary(), "--json", "audit", "-i", bad});
    CHECK(e.exit_code == 5);
    require_valid(e.out, "error");
}
