// Real conversions: the private scenario (loader/workload/private.cpp) in
// a KVM_X86_SW_PROTECTED_VM, on the VM lane's conversion kernel
// (tests/vm/build-kernel.sh). Elsewhere these tests skip and say why,
// except the one that checks the scenario's refusal on kernels without
// private memory.
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "loader/probe/features.hpp"
#include "loader/workload/workload.hpp"

namespace {

using gms::workload::Result;

constexpr uint64_t kPages = 32, kPrivatePages = 8, kPunchPages = 2;

std::vector<std::string> settings(std::vector<std::string> extra = {})
{
    std::vector<std::string> s = {"pages=" + std::to_string(kPages), "private_pages=" + std::to_string(kPrivatePages),
                                  "punch_pages=" + std::to_string(kPunchPages)};
    s.insert(s.end(), extra.begin(), extra.end());
    return s;
}

Result run_private(std::vector<std::string> extra = {})
{
    return gms::workload::run(gms::workload::parse_scenario("private", settings(std::move(extra))));
}

}  // namespace

TEST_CASE("scenario private refuses a kernel without KVM_X86_SW_PROTECTED_VM and names what it needs",
          "[workload][kvm]")
{
    GMS_REQUIRE_LIVE();
    int types = gms::test::kvm_vm_types();
    GMS_SKIP_IF(types > 0 && (types & 2) ? "this kernel has KVM_X86_SW_PROTECTED_VM; the [private] tests run here"
                                         : "");
    REQUIRE_THROWS_WITH(run_private(), Catch::Contains("KVM_X86_SW_PROTECTED_VM") &&
                                           Catch::Contains("CONFIG_KVM_SW_PROTECTED_VM=y") &&
                                           Catch::Contains("KVM_CAP_VM_TYPES"));
}

TEST_CASE("scenario private: conversions both ways, punches, rebind, DMA mappings and a memory failure all "
          "run as the kernel allows",
          "[private][workload]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    Result r = run_private();
    std::vector<std::string> names;
    for (const auto& s : r.steps) {
        INFO(s.name << ": " << s.detail);
        // 7.3's memory_failure() counts kvm_gmem_error_folio's MF_DELAYED
        // as a failed truncation: the page is poisoned and madvise says EBUSY.
        if (s.name == "gmem_hwpoison")
            CHECK((s.error == 0 || s.error == EBUSY));
        else
            CHECK(s.error == 0);
        names.push_back(s.name);
    }
    CHECK(names == std::vector<std::string>{
                       "vm_create", "gmem_bind", "touch_shared", "to_private", "gmem_fault", "gmem_punch",
                       "gmem_punch", "touch_after_punch", "to_shared", "gmem_unbind", "gmem_rebind",
                       "touch_rebound", "vfio_open", "vfio_map", "to_private_vfio_mapped", "to_shared_vfio_mapped",
                       "vfio_unmap", "to_private_after_vfio_unmap", "to_shared_after_vfio_unmap", "iommufd_open",
                       "iommufd_bind", "iommufd_ioas_alloc", "iommufd_attach", "iommufd_map",
                       "to_private_iommufd_mapped", "to_shared_iommufd_mapped", "iommufd_unmap",
                       "to_private_after_iommufd_unmap", "to_shared_after_iommufd_unmap", "iommufd_map_file",
                       "iommufd_unmap_file", "iommufd_dmabuf_regions", "iommufd_dmabuf_export",
                       "iommufd_map_dmabuf", "iommufd_dmabuf_revoke", "iommufd_dmabuf_restore",
                       "iommufd_unmap_dmabuf", "iommufd_dmabuf_close", "gmem_hwpoison", "gmem_close"});
    // Ten conversions over the private range, every one accepted by KVM.
    REQUIRE(r.conversions.size() == 10);
    for (const auto& c : r.conversions)
        CHECK(c.error == 0);
    CHECK(r.punches == kPunchPages);
    CHECK(r.rebinds == 1);
    CHECK(r.pages_touched == 3 * kPages + kPrivatePages);
}

TEST_CASE("hooks --selftest on a kernel with private memory and iommufd: the gmem, conversion and iommufd hooks "
          "fire",
          "[private][selftest]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    auto r = gms::test::run({gms::test::binary(), "--json", "hooks", "--selftest"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    auto doc = nlohmann::json::parse(r.out);
    std::map<std::string, std::string> verdict;
    for (const auto& h : doc["selftest"])
        verdict[h["hook"]] = h["verdict"];
    for (auto h : {"gmem.create", "gmem.bind", "gmem.unbind", "gmem.get_pfn", "gmem.invalidate", "gmem.punch_hole",
                   "gmem.release", "gmem.error_folio", "kvm.set_mem_attributes", "kvm.mmu_notifier", "vfio.pin",
                   "vfio.unpin", "iommufd.map", "iommufd.map_file", "iommufd.unmap", "iommufd.pin"}) {
        INFO(h);
        CHECK(verdict[h] == "fired");
    }
}

namespace {

int step_error(const Result& r, const std::string& name)
{
    auto it = std::find_if(r.steps.begin(), r.steps.end(), [&](const auto& s) { return s.name == name; });
    REQUIRE(it != r.steps.end());
    return it->error;
}

std::string why_no_private_lsm() { return gms::test::why_no_lsm_after(gms::test::why_no_private()); }

// The private scenario run while `gmemscope --json enforce [args]` runs;
// its veto records (one JSON object each).
std::vector<nlohmann::json> under_enforce(const std::vector<std::string>& args, Result& r)
{
    std::vector<std::string> argv = {gms::test::binary(), "--json", "enforce"};
    argv.insert(argv.end(), args.begin(), args.end());
    gms::test::Background enforce(argv);
    REQUIRE(enforce.wait_for_stderr(args.empty() ? "enforcing (" : "audit (", std::chrono::seconds(120)));
    r = run_private({"poison=0"});
    auto out = enforce.stop(SIGINT);
    INFO(out.err);
    CHECK(out.exit_code == 0);
    std::vector<nlohmann::json> vetoes;
    std::istringstream lines(out.out);
    for (std::string line; std::getline(lines, line);)
        if (auto j = nlohmann::json::parse(line); j.contains("mode"))
            vetoes.push_back(j);
    return vetoes;
}

// Each veto record names the private range, the mapping it hit (kind,
// vaddr, iova) and this process.
void check_vetoes(const std::vector<nlohmann::json>& vetoes, const Result& r, const std::string& mode)
{
    REQUIRE(vetoes.size() == 2);
    const char* kinds[] = {"vfio", "iommufd"};
    for (size_t i = 0; i < 2; i++) {
        const auto& v = vetoes[i];
        INFO(v.dump());
        CHECK(v["mode"] == mode);
        CHECK(v["vetoed"] == (mode == "enforce"));
        CHECK(v["first"] == "0x40000");
        CHECK(v["end"] == "0x40008");
        CHECK(v["hit_first_gfn"] == "0x40000");
        CHECK(v["hit_end_gfn"] == "0x40008");
        CHECK(v["pin"]["kind"] == kinds[i]);
        CHECK(v["pin"]["tgid"] == getpid());
        CHECK(v["pin"]["iova"] == "0x100000");
        char vaddr[32];
        std::snprintf(vaddr, sizeof(vaddr), "%#llx", static_cast<unsigned long long>(r.buffer_vaddr));
        CHECK(v["pin"]["vaddr"] == vaddr);
    }
}

}  // namespace

TEST_CASE("enforce: converting to private a range whose shared backing is DMA-mapped fails with EBUSY through "
          "VFIO type1 and through iommufd, and succeeds after the unmap",
          "[private][enforce]")
{
    GMS_SKIP_IF(why_no_private_lsm());
    Result r;
    auto vetoes = under_enforce({}, r);
    CHECK(step_error(r, "to_private") == 0);
    CHECK(step_error(r, "to_private_vfio_mapped") == EBUSY);
    CHECK(step_error(r, "to_private_after_vfio_unmap") == 0);
    CHECK(step_error(r, "to_private_iommufd_mapped") == EBUSY);
    CHECK(step_error(r, "to_private_after_iommufd_unmap") == 0);
    for (const auto& s : r.steps)
        if (s.name != "to_private_vfio_mapped" && s.name != "to_private_iommufd_mapped") {
            INFO(s.name);
            CHECK(s.error == 0);
        }
    check_vetoes(vetoes, r, "enforce");
}

TEST_CASE("enforce --audit: the conversions of DMA-mapped ranges succeed and each is logged with its mapping",
          "[private][enforce]")
{
    GMS_SKIP_IF(why_no_private_lsm());
    Result r;
    auto vetoes = under_enforce({"--audit"}, r);
    for (const auto& s : r.steps) {
        INFO(s.name);
        CHECK(s.error == 0);
    }
    check_vetoes(vetoes, r, "audit");
}

TEST_CASE("enforce --persist on real conversions: after SIGKILL of the loader the mapped conversions still fail "
          "with EBUSY, after --stop they succeed",
          "[private][enforce]")
{
    GMS_SKIP_IF(why_no_private_lsm());
    // Whatever fails below, the later tests find no enforcement left.
    gms::test::StopPersistedAtExit unpin;
    {
        gms::test::Background loader({gms::test::binary(), "enforce", "--persist"});
        REQUIRE(loader.wait_for_stderr("enforcing (", std::chrono::seconds(120)));
        loader.stop(SIGKILL);
    }
    Result r = run_private({"poison=0"});
    CHECK(step_error(r, "to_private") == 0);
    CHECK(step_error(r, "to_private_vfio_mapped") == EBUSY);
    CHECK(step_error(r, "to_private_iommufd_mapped") == EBUSY);
    CHECK(step_error(r, "to_private_after_iommufd_unmap") == 0);
    auto stop = gms::test::run({gms::test::binary(), "enforce", "--stop"});
    INFO(stop.err);
    REQUIRE(stop.exit_code == 0);
    r = run_private({"poison=0"});
    for (const auto& s : r.steps) {
        INFO(s.name);
        CHECK(s.error == 0);
    }
}

TEST_CASE("the conversion kernel advertises VM types 0x3, KVM_MEMORY_ATTRIBUTE_PRIVATE on a type-1 VM, /dev/iommu "
          "and a VFIO device cdev",
          "[private][facts]")
{
    // On the lane's conversion row (GMS_KERNEL_ROW, tests/vm/kernels.tsv)
    // this must run; elsewhere it runs where private memory exists.
    const char* row = std::getenv("GMS_KERNEL_ROW");
    if (!row || std::string(row) != "conversion")
        GMS_SKIP_IF(gms::test::why_no_private());
    CHECK(gms::test::kvm_vm_types() == 0x3);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    REQUIRE(kvm >= 0);
    int vm = ioctl(kvm, KVM_CREATE_VM, 1UL);  // KVM_X86_SW_PROTECTED_VM
    REQUIRE(vm >= 0);
    CHECK(ioctl(vm, KVM_CHECK_EXTENSION, 233) == 8);  // KVM_CAP_MEMORY_ATTRIBUTES: PRIVATE only
    close(vm);
    close(kvm);
    CHECK(access("/dev/iommu", F_OK) == 0);
    CHECK(access("/dev/vfio/devices/vfio0", F_OK) == 0);
}

namespace {

// A JSON hex string as gmemscope writes addresses.
std::string hex_of(uint64_t v)
{
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

gms::test::Run gms_run(std::vector<std::string> args)
{
    args.insert(args.begin(), gms::test::binary());
    auto r = gms::test::run(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r;
}

}  // namespace

// The story gmemscope exists to tell, on real conversions KVM performs:
// with nothing enforced, gfn [0x40000, 0x40008) becomes private twice
// while a device can still reach its shared backing (VFIO type1, then
// iommufd). trace says so as it happens; report, explain and audit -i say
// so from the recording; the BAR dma-buf mapped into the IOAS has its life.
TEST_CASE("a conversion to private over DMA-mapped memory is critical in trace, report, explain and audit -i, and the "
          "BAR dma-buf's life is in report and explain",
          "[private][report]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    gms::test::ScratchDir dir;
    const std::string rec = dir.path + "/rec";
    std::vector<std::string> stress = {gms::test::binary(), "stress", "private"};
    for (const auto& s : settings({"poison=0"}))
        stress.push_back(s);

    // trace: one finding line per exposure, as it happens
    std::vector<std::string> trace = {"--json", "trace", "--"};
    trace.insert(trace.end(), stress.begin(), stress.end());
    std::vector<nlohmann::json> findings;
    std::istringstream lines(gms_run(trace).out);
    for (std::string line; std::getline(lines, line);)
        if (auto j = nlohmann::json::parse(line); j["type"] == "finding")
            findings.push_back(j);
    REQUIRE(findings.size() == 2);
    for (const auto& f : findings) {
        CHECK(f["severity"] == "critical");
        CHECK(f["exposure"]["first_gfn"] == "0x40000");
        CHECK(f["exposure"]["end_gfn"] == "0x40008");
    }

    std::vector<std::string> record = {"record", "-o", rec, "--"};
    record.insert(record.end(), stress.begin(), stress.end());
    gms_run(record);
    auto report = nlohmann::json::parse(gms_run({"--json", "report", "-i", rec}).out);
    REQUIRE(report["vms"].size() >= 1);
    // the scenario's VM: the one with the gmem memslot at gfn 0x40000
    uint64_t uaddr = 0;
    for (const auto& v : report["vms"])
        for (const auto& s : v["memslots"])
            if (s["base_gfn"] == "0x40000" && s.contains("gmem_ino"))
                uaddr = std::stoull(s["uaddr"].get<std::string>(), nullptr, 16);
    REQUIRE(uaddr != 0);
    const auto& xs = report["exposures"];
    REQUIRE(xs.size() == 2);
    const char* by[] = {"VFIO container fd ", "iommufd fd "};
    for (size_t i = 0; i < 2; i++) {
        INFO(xs[i].dump());
        CHECK(xs[i]["call"] == "KVM_SET_MEMORY_ATTRIBUTES");
        CHECK(xs[i]["tgid"] != getpid());
        CHECK(xs[i]["first_gfn"] == "0x40000");
        CHECK(xs[i]["end_gfn"] == "0x40008");
        REQUIRE(xs[i]["mappings"].size() == 1);
        const auto& m = xs[i]["mappings"][0];
        CHECK_THAT(m["by"].get<std::string>(), Catch::StartsWith(by[i]));
        CHECK(m["first_gfn"] == "0x40000");
        CHECK(m["pages"] == kPrivatePages);
        CHECK(m["iova"] == "0x100000");
        CHECK(m["vaddr"] == hex_of(uaddr));
    }
    auto text = gms_run({"report", "-i", rec}).out;
    CHECK_THAT(text, Catch::Contains("CRITICAL: made private while a device can still reach the shared backing:"));

    // The BAR0 dma-buf: exported through the iommufd-bound device, mapped
    // into the IOAS, revoked and restored.
    REQUIRE(report["dma_bufs"].size() == 1);
    const auto& d = report["dma_bufs"][0];
    INFO(d.dump());
    CHECK(d["exporter"] == "vfio_pci_core");
    CHECK(d["region"] == 0);
    CHECK(d["nr_ranges"] == 1);
    CHECK(d["offset"] == 0);
    // the command register's revoke and restore; the device's close may
    // revoke and restore its dma-bufs once more
    REQUIRE(d["moves"].size() >= 2);
    CHECK(d["moves"][0]["revoked"] == true);
    CHECK(d["moves"][1]["revoked"] == false);
    CHECK(d["move_notifies"] >= 1);
    REQUIRE(d["imports"].size() == 1);
    CHECK(d["imports"][0]["ret"] == 0);
    auto life = gms_run({"explain", "-i", rec, "--dma-buf", std::to_string(d["ino"].get<uint64_t>())}).out;
    CHECK_THAT(life, Catch::Contains("exported by gmemscope") && Catch::Contains("BAR0 [0x0,") &&
                         Catch::Contains("mapped into an iommufd IOAS") && Catch::Contains("revoked:") &&
                         Catch::Contains("restored:"));

    // explain of the first private gfn says it, at the conversion
    auto explain = gms_run({"explain", "-i", rec, "--gfn", "0x40000"}).out;
    CHECK_THAT(explain, Catch::Contains("CRITICAL: made private while DMA-mapped: 8 pages (gfn [0x40000, 0x40008)"));

    // audit -i: the recording's exposures are critical findings
    auto audit = nlohmann::json::parse(gms_run({"--json", "audit", "-i", rec}).out);
    size_t critical = 0;
    for (const auto& f : audit["findings"])
        critical += f["code"] == "dma_private_converted" && f["severity"] == "critical";
    CHECK(critical == 2);
}

// explain of gfn 0x40000, the first private page, from a recording of the
// private scenario: every entry, in order, as the workload made it happen
// (pages=32 private_pages=8 punch_pages=2, poison=0), with the gmem inode
// and the shared backing's address the scenario reports; pids, pfns, fds
// and the lengths of VFIO's pin runs vary and are matched as numbers.
TEST_CASE("explain of a real private gfn: binding, conversion with the zap it caused, private faults with the gmem "
          "pfn, punch, conversion back, rebind, the mapped conversions and the critical finding",
          "[private][explain]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    gms::test::ScratchDir dir;
    const std::string rec = dir.path + "/rec";
    std::vector<std::string> record = {"record", "-o", rec, "--", gms::test::binary(), "--json", "stress", "private"};
    for (const auto& s : settings({"poison=0"}))
        record.push_back(s);
    auto stress = nlohmann::json::parse(gms_run(record).out);
    const std::string ino = std::to_string(stress["gmem_ino"].get<uint64_t>());
    const std::string hva = stress["buffer_vaddr"];
    auto doc = nlohmann::json::parse(gms_run({"--json", "explain", "-i", rec, "--gfn", "0x40000"}).out);

    auto esc = [](std::string s) {
        std::string out;
        for (char c : s) {
            if (std::string("[](){}.*+?^$|\\").find(c) != std::string::npos)
                out += '\\';
            out += c;
        }
        return out;
    };
    // comm/pid: the static test binary's comm is "gmemscope_stati"
    const std::string pfn = "pfn 0x[0-9a-f]+", by = "gmemscope[a-z_]*/[0-9]+", fd = "[0-9]+";
    const std::string conv8 = "of gfn \\[0x40000, 0x40008\\) by KVM_SET_MEMORY_ATTRIBUTES from " + by + ": done";
    const std::string zap8 = esc("KVM MMU invalidation of gfn [0x40000, 0x40008) ended (its SPTEs zapped)");
    const std::string bound = esc("memslot 1 bound: gfn [0x40000, 0x40020) -> gmem ino " + ino +
                                  " index [0x0, 0x20), hva " + hva);
    const std::string shared_fault = "write fault on vCPU 0: slot 1 gmem ino " + ino + " index 0x0 -> " + pfn + "$";
    const std::string private_fault = "write private fault on vCPU 0: slot 1 gmem ino " + ino + " index 0x0 -> " + pfn +
                                      esc(" (page allocated in the gmem page cache)");
    const std::string critical = esc("CRITICAL: made private while DMA-mapped: 8 pages (gfn [0x40000, 0x40008), vaddr " +
                                     hva + ") mapped at iova 0x100000 by ");
    std::vector<std::string> want = {
        bound,
        shared_fault,
        "shared->private " + conv8,
        zap8,
        private_fault,
        "punch-hole: fallocate\\(KEEP_SIZE\\|PUNCH_HOLE\\) of gmem ino " + ino + " offset 0x0 len 0x1000 by " + by,
        esc("gmem ino " + ino + " index [0x0, 0x1) invalidated by ") + by,
        esc("KVM MMU invalidation of gfn [0x40000, 0x40001) ended (its SPTEs zapped)"),
        private_fault,
        "private->shared " + conv8,
        zap8,
        "memslot 1 deleted by " + by,
        bound,
        shared_fault,
        "DMA-mapped and pinned by VFIO container fd " + fd + " \\(" + by + "\\): iova 0x100000, 8 pages",
        // VFIO pins in runs of contiguous pfns: the run holding the gfn
        "VFIO pinned [0-9]+ pages by " + by + ": vaddr " + hva + " iova 0x100000 " + pfn,
        "shared->private " + conv8,
        critical + "VFIO container fd " + fd,
        zap8,
        "private->shared " + conv8,
        zap8,
        "DMA-unmapped and unpinned from VFIO container fd " + fd,
        "VFIO unpinned [0-9]+ pages by " + by,
        "shared->private " + conv8,
        zap8,
        "private->shared " + conv8,
        zap8,
        "DMA-mapped and pinned by iommufd fd " + fd + " IOAS [0-9]+ \\(" + by + "\\): iova 0x100000, 8 pages",
        "shared->private " + conv8,
        critical + "iommufd fd " + fd + " IOAS [0-9]+",
        zap8,
        "private->shared " + conv8,
        zap8,
        "DMA-unmapped and unpinned from iommufd fd " + fd,
        "shared->private " + conv8,
        zap8,
        "private->shared " + conv8,
        zap8,
        "memslot 1 deleted by " + by,
        "VM [0-9a-f]+ ended: destroyed \\(kvm_destroy_vm\\)",
    };
    std::vector<std::string> got;
    for (const auto& t : doc["timeline"])
        got.push_back(t["what"]);
    std::string all;
    for (const auto& g : got)
        all += "  " + g + "\n";
    INFO("explain's timeline:\n" << all);
    for (size_t i = 0; i < want.size() && i < got.size(); i++) {
        INFO("entry " << i << ": " << got[i] << "\n  want: " << want[i]);
        CHECK(std::regex_search(got[i], std::regex("^\\[vm [0-9a-f]+\\] " + want[i])));
    }
    CHECK(got.size() == want.size());
}

// A live VM held with gfn [0x40000, 0x40008) private and faulted: the
// audit iterator reads KVM's per-VM attributes (kvm->mem_attr_array).
TEST_CASE("audit of a live VM shows which gfn ranges are private, read from KVM's per-VM attributes",
          "[private][audit]")
{
    GMS_SKIP_IF(gms::test::why_no_private());
    std::vector<std::string> argv = {gms::test::binary(), "stress", "--steps", "private"};
    for (const auto& s : settings({"poison=0", "hold_ms=120000"}))
        argv.push_back(s);
    gms::test::Background held(argv);
    REQUIRE(held.wait_for_stderr(": holding for", std::chrono::seconds(60)));
    auto doc = nlohmann::json::parse(gms_run({"--json", "audit"}).out);
    auto text = gms_run({"audit"}).out;
    held.stop(SIGKILL);
    INFO(text);
    const nlohmann::json* vm = nullptr;
    for (const auto& v : doc["vms"])
        for (const auto& s : v["memslots"])
            if (s["base_gfn"] == "0x40000" && s.contains("gmem_ino"))
                vm = &v;
    REQUIRE(vm != nullptr);
    INFO(vm->dump());
    REQUIRE(vm->contains("attributes"));
    CHECK((*vm)["attributes_complete"] == true);
    REQUIRE((*vm)["attributes"].size() == 1);
    const auto& a = (*vm)["attributes"][0];
    CHECK(a["first_gfn"] == "0x40000");
    CHECK(a["end_gfn"] == "0x40008");
    CHECK(a["attributes"] == 8);
    CHECK(a["private"] == true);
    CHECK_THAT(text, Catch::Contains("gfn [0x40000, 0x40008) 8 pages private"));
}
