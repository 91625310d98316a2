// The precise tier (fentry/fexit) on a kernel that loads it: the VM lane
// (tests/vm/run.sh, Debian's 6.12 under QEMU, with VFIO and kvm_amd).
// The dma scenario runs in this process: a VM whose slot 1 is a buffer
// mapped through VFIO type1, and the operations that meet it.
#include <sys/utsname.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <set>
#include <string>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "capture.hpp"
#include "helpers.hpp"
#include "loader/probe/catalog.hpp"
#include "loader/model/engine.hpp"
#include "loader/workload/workload.hpp"

namespace {

using gms::test::Capture;

bool debian_612()
{
    struct utsname u {};
    uname(&u);
    return std::string(u.release).starts_with("6.12.") && std::string(u.release).find("+deb") != std::string::npos;
}

std::vector<gms_call_event> calls(const Capture& cap, uint32_t fn)
{
    std::vector<gms_call_event> out;
    for (const auto& c : cap.all<gms_call_event>(GMS_EV_CALL))
        if (c.fn == fn)
            out.push_back(c);
    return out;
}

int step_error(const gms::workload::Result& r, const std::string& name)
{
    for (const auto& s : r.steps)
        if (s.name == name)
            return s.error;
    FAIL("no step " << name);
    return -1;
}

gms::workload::Result run_dma()
{
    std::vector<std::string> settings = {"pages=16"};
    return gms::workload::run(gms::workload::parse_scenario("dma", settings));
}

constexpr uint64_t kPages = 16;
constexpr uint64_t kIova = 1 << 20;
constexpr uint64_t kBaseGfn = 0x40000;

}  // namespace

TEST_CASE("precise tier: the verifier accepts every program whose function this kernel has", "[precise]")
{
    GMS_SKIP_IF(gms::test::why_no_precise());
    Capture cap(1u << 20, {"all"});
    // A refusal would have fallen back silently: there must be none.
    for (const auto& [prog, why] : cap.tracer.refused())
        FAIL_CHECK(prog << ": " << why);

    std::set<std::string> with_target;
    for (const auto& h : cap.tracer.hooks()) {
        bool has_precise = false, present = false;
        for (const auto& ms : h.mechs)
            if (ms.mech->kind == gms::Mech::fentry || ms.mech->kind == gms::Mech::fexit) {
                has_precise = true;
                present = !ms.target.empty();
            }
        if (!has_precise || !present)
            continue;
        INFO(h.hook->name);
        with_target.emplace(h.hook->name);
        REQUIRE(h.chosen >= 0);
        auto kind = h.mechs[h.chosen].mech->kind;
        CHECK((kind == gms::Mech::fentry || kind == gms::Mech::fexit));
    }
    // Every precise program chosen is attached.
    std::set<std::string> attached;
    for (const auto& a : cap.tracer.attached())
        attached.emplace(a.program);
    for (const auto& h : cap.tracer.hooks())
        if (with_target.contains(std::string(h.hook->name)))
            for (auto p : h.mechs[h.chosen].mech->programs)
                CHECK(attached.contains(std::string(p)));
    // Which hooks have their function on each lane's kernel, and so get
    // fentry/fexit, is written once: tests/vm/expect/NAME, the mechanism of
    // every hook, checked against the self-test by tests/vm/run.sh.
    CHECK(!with_target.empty());
}

TEST_CASE("VFIO: a map is a pin with pages, vaddr, iova and process, unmap an unpin, past RLIMIT_MEMLOCK a "
          "pin failure",
          "[precise][vfio]")
{
    GMS_SKIP_IF(gms::test::why_no_vfio());
    Capture cap(16u << 20, {"all"});
    auto r = run_dma();
    cap.drain();
    REQUIRE(step_error(r, "vfio_map") == 0);
    REQUIRE(step_error(r, "vfio_unmap") == 0);
    CHECK(step_error(r, "vfio_map_past_memlock") == ENOMEM);
    const uint64_t lo = r.buffer_vaddr, hi = lo + kPages * 4096;

    uint64_t pinned = 0, unpinned = 0, failures = 0;
    for (const auto& c : calls(cap, GMS_FN_VFIO_PIN)) {
        CHECK(c.hdr.tgid == uint32_t(getpid()));
        if (c.args.pin.vaddr >= lo && c.args.pin.vaddr < hi) {
            REQUIRE(c.ret > 0);
            CHECK(c.args.pin.iova == kIova + (c.args.pin.vaddr - lo));
            CHECK(c.args.pin.pfn != 0);
            CHECK(c.args.pin.lock_cap == 1);   // root: CAP_IPC_LOCK
            pinned += uint64_t(c.ret);
        } else if (c.ret < 0) {
            CHECK(c.ret == -ENOMEM);
            CHECK(c.args.pin.lock_cap == 0);
            failures++;
        }
    }
    CHECK(pinned == kPages);
    CHECK(failures == 1);
    for (const auto& c : calls(cap, GMS_FN_VFIO_UNPIN))
        if (c.args.pin.vaddr >= lo && c.args.pin.vaddr < hi)
            unpinned += c.args.pin.npages;
    CHECK(unpinned == kPages);

    // The IOMMU mappings made inside the map ioctl.
    auto maps = cap.all<gms_iommu_event>(GMS_EV_IOMMU_MAP);
    REQUIRE_FALSE(maps.empty());
    CHECK(std::any_of(maps.begin(), maps.end(), [](const auto& m) { return m.iova == kIova; }));
    CHECK_FALSE(cap.all<gms_iommu_event>(GMS_EV_IOMMU_UNMAP).empty());
}

TEST_CASE("precise tier: gmem, KVM MMU and dma-buf functions are recorded", "[precise]")
{
    GMS_SKIP_IF(gms::test::why_no_precise());
    Capture cap(16u << 20, {"all"});
    auto r = run_dma();
    cap.drain();
    REQUIRE(step_error(r, "gmem_create") == 0);

    auto created = calls(cap, GMS_FN_GMEM_CREATE);
    REQUIRE(created.size() == 1);
    CHECK(created[0].ino == r.gmem_ino);
    CHECK(created[0].vm != 0);
    CHECK(created[0].ret >= 0);
    CHECK(created[0].args.gmem_create.size == 16 * 4096);
    const uint64_t vm = created[0].vm;

    // The punch: one fentry/fexit fallocate record, and the invalidation of index [0, 1).
    auto punches = cap.all<gms_fallocate_event>(GMS_EV_FALLOCATE);
    REQUIRE(punches.size() == 1);
    CHECK((punches[0].hdr.flags & GMS_F_KFUNC));
    CHECK(punches[0].gmem_ino == r.gmem_ino);
    CHECK(punches[0].vm == vm);
    CHECK(punches[0].ret == 0);
    // kvm_gmem_invalidate_begin: the punch's index [0, 1), then the whole
    // file when it is released (6.12's kvm_gmem_release()).
    auto inval = calls(cap, GMS_FN_GMEM_INVALIDATE);
    REQUIRE(inval.size() == 2);
    for (const auto& c : inval) {
        CHECK(c.ino == r.gmem_ino);
        CHECK(c.vm == vm);
        CHECK(c.args.range.start == 0);
    }
    CHECK(inval[0].args.range.end == 1);
    CHECK(inval[1].args.range.end == ~0ull);

    auto released = calls(cap, GMS_FN_GMEM_RELEASE);
    REQUIRE(released.size() == 1);
    CHECK(released[0].ino == r.gmem_ino);

    // The VM's end: kvm_destroy_vm once, when the workload closed its last reference.
    auto ends = calls(cap, GMS_FN_KVM_DESTROY_VM);
    CHECK(std::count_if(ends.begin(), ends.end(),
                        [&](const auto& c) { return c.vm == vm && (c.hdr.flags & GMS_F_KFUNC); }) == 1);

    // MADV_DONTNEED of slot 1's buffer: KVM's MMU notifier is told, at fentry.
    bool buffer_invalidated = false;
    for (const auto& c : calls(cap, GMS_FN_KVM_MMU_NOTIFIER))
        buffer_invalidated |= c.vm == vm && (c.hdr.flags & GMS_F_KFUNC) && c.args.range.start <= r.buffer_vaddr &&
                              c.args.range.end >= r.buffer_vaddr + kPages * 4096;
    CHECK(buffer_invalidated);

    // udmabuf's dma-buf (a kernel with VFIO PCI dma-bufs exports the BAR's too).
    std::vector<gms_call_event> bufs;
    for (const auto& c : calls(cap, GMS_FN_DMA_BUF_EXPORT))
        if (std::string(c.args.dma_buf.exp_name) == "udmabuf")
            bufs.push_back(c);
    REQUIRE(step_error(r, "udmabuf_create") == 0);
    REQUIRE(bufs.size() == 1);
    CHECK(std::string(bufs[0].args.dma_buf.exp_name) == "udmabuf");
    CHECK(bufs[0].args.dma_buf.size == kPages * 4096);
    CHECK(bufs[0].ret == 0);
    CHECK(bufs[0].ino != 0);

    // Guest faults on slot 1, and the TDP MMU's SPTE changes (kvm_amd NPT).
    auto faults = cap.all<gms_fault_event>(GMS_EV_FAULT);
    CHECK(std::count_if(faults.begin(), faults.end(), [](const auto& f) {
              return f.gfn >= kBaseGfn && f.gfn < kBaseGfn + kPages && f.gmem_ino == 0;
          }) >= long(kPages));
    if (debian_612())
        CHECK_FALSE(cap.all<gms_tdp_spte_event>(GMS_EV_TDP_SPTE).empty());

    // KVM_SET_MEMORY_ATTRIBUTES: 6.12 has no generic memory attributes.
    CHECK(step_error(r, "vm_attributes") == EINVAL);
    CHECK(cap.tracer.counters().dropped[GMS_DROP_RINGBUF_FULL] == 0);
}

TEST_CASE("correlation: the VFIO-pinned host addresses are the memslot's gfns", "[precise][vfio]")
{
    GMS_SKIP_IF(gms::test::why_no_vfio());
    Capture cap(16u << 20, {"all"});
    gms::Engine engine;
    engine.watch(0, 0, kBaseGfn + 3);
    auto r = run_dma();
    cap.drain();
    for (const auto& e : cap.events)
        engine.add(e);

    std::string story;
    for (const auto& t : engine.timeline())
        story += t.what + "\n";
    INFO(story);
    CHECK_THAT(story, Catch::Contains(fmt::format("memslot 1 bound: gfn [0x40000, 0x40010) -> hva {:#x}", r.buffer_vaddr)));
    CHECK_THAT(story, Catch::Contains(fmt::format("VFIO pinned")));
    CHECK_THAT(story, Catch::Contains(fmt::format("by unit_tests/{}: vaddr", getpid())));
    // The host page the guest faulted in at a gfn is the page VFIO pinned at its address.
    for (const auto& f : cap.all<gms_fault_event>(GMS_EV_FAULT)) {
        if (f.gfn < kBaseGfn || f.gfn >= kBaseGfn + kPages)
            continue;
        uint64_t vaddr = r.buffer_vaddr + (f.gfn - kBaseGfn) * 4096;
        bool same = false;
        for (const auto& p : calls(cap, GMS_FN_VFIO_PIN))
            if (p.ret > 0 && vaddr >= p.args.pin.vaddr && vaddr < p.args.pin.vaddr + uint64_t(p.ret) * 4096)
                same = f.pfn == p.args.pin.pfn + (vaddr - p.args.pin.vaddr) / 4096;
        INFO("gfn " << f.gfn);
        CHECK(same);
    }
    CHECK_THAT(story, Catch::Contains("DMA-mapped and pinned by VFIO container fd"));
    CHECK_THAT(story, Catch::Contains("iova 0x100000"));
    CHECK_THAT(story, Catch::Contains("VFIO pinned"));
    CHECK_THAT(story, Catch::Contains("VFIO unpinned"));
    CHECK_THAT(story, Catch::Contains("invalidated through KVM's MMU notifier"));
    // The conversion attempt over the pinned range names the pin and its owner.
    bool named = false;
    for (const auto& f : engine.failures())
        if (f.op == "KVM_SET_MEMORY_ATTRIBUTES") {
            REQUIRE_FALSE(f.pins.empty());
            CHECK(f.pins[0].first_gfn == kBaseGfn);
            CHECK(f.pins[0].pages == kPages);
            CHECK(f.pins[0].owner.tgid == uint32_t(getpid()));
            named = true;
        }
    CHECK(named);
}

TEST_CASE("hooks --selftest: every hook whose trigger ran fired", "[precise][selftest]")
{
    GMS_SKIP_IF(gms::test::why_no_precise());
    auto r = gms::test::run({gms::test::binary(), "--json", "hooks", "--selftest"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    auto doc = nlohmann::json::parse(r.out);
    CHECK(doc["ok"] == true);
    std::map<std::string, std::string> verdict;
    for (const auto& h : doc["selftest"])
        verdict[h["hook"]] = h["verdict"];
    for (auto h : {"gmem.create", "gmem.punch_hole", "gmem.invalidate", "gmem.release", "kvm.mmu_notifier",
                   "kvm.mmu_invalidate_end", "vfio.pin", "vfio.unpin", "dmabuf.export", "kvm_mmu.fault", "iommu.map"})
        CHECK(verdict[h] == "fired");
    // 6.12 inlines kvm_mmu_invalidate_begin into the MMU notifier: its
    // fentry attaches and never fires; the self-test puts the tracepoint in.
    if (debian_612()) {
        CHECK(verdict["kvm.mmu_invalidate"] == "replaced");
        CHECK(doc["refused"]["kvm_mmu_invalidate"] ==
              "attached to kvm_mmu_invalidate_begin but never fired in the self-test");
        for (const auto& h : doc["selftest"])
            if (h["hook"] == "kvm.mmu_invalidate") {
                CHECK(h["fallback"] == "tracepoint");
                CHECK(h["fallback_fired"] > 0);
            }
    }
}
