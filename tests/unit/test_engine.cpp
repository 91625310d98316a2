// The correlation engine on SYNTHETIC event streams (built here, not
// read from a kernel), against a deliberately simple reference model
// that keeps one array slot per page.
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <random>

#include <catch2/catch.hpp>

#include "loader/model/engine.hpp"
#include "synthetic.hpp"

namespace {

constexpr uint64_t kVm = 0xffff888100001000;
constexpr uint64_t kIno = 77;
constexpr uint64_t kBaseGfn = 0x1000;
constexpr uint64_t kUaddrBase = 0x7f0000000000;   // hva of gmem index 0 (the gmem fd's mmap)
constexpr uint32_t kContainerFd = 12;

gms::Event ioctl(uint64_t ts, uint16_t op, int64_t ret, uint32_t fd = 4)
{
    return {gms::syn::ioctl(ts, op, kVm, ret, fd)};
}

// A stream generator and the reference model it keeps in step.
struct Model {
    std::mt19937_64 rng;
    gms::Engine engine;
    uint64_t ts = 1000;
    uint64_t next_pfn = 0x100000;
    // reference
    std::optional<uint64_t> slot_pages, slot_pgoff;
    std::map<uint64_t, uint64_t> resident;           // gmem index -> pfn
    std::map<uint64_t, uint64_t> attrs;              // gfn -> attributes
    std::map<uint64_t, uint32_t> faults, punches;    // gfn -> count
    std::map<uint64_t, uint64_t> pinned;             // hva page -> iova page
    uint64_t next_iova_page = 0x10;
    size_t failures = 0;

    explicit Model(uint64_t seed) : rng(seed)
    {
        gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(ts, GMS_IOC_CREATE_VM, 4, 3).rec);
        e.vm = 0;
        e.args.create_vm.vm = kVm;
        engine.add({e});
    }
    uint64_t pick(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); }
    std::optional<uint64_t> index_of(uint64_t gfn) const
    {
        if (!slot_pages || gfn < kBaseGfn || gfn >= kBaseGfn + *slot_pages)
            return std::nullopt;
        return gfn - kBaseGfn + *slot_pgoff;
    }
    uint64_t hva_page(uint64_t gfn) const { return (kUaddrBase >> 12) + *index_of(gfn); }

    void region(uint64_t pages, uint64_t pgoff)
    {
        gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(++ts, GMS_IOC_SET_MEMORY_REGION2, 0).rec);
        e.args.region.slot = 1;
        e.args.region.flags = pages ? 4 : 0;
        e.args.region.gpa = kBaseGfn << 12;
        e.args.region.size = pages << 12;
        e.args.region.uaddr = pages ? kUaddrBase + (pgoff << 12) : 0;
        e.args.region.gmem_offset = pgoff << 12;
        e.args.region.gmem_ino = pages ? kIno : 0;
        engine.add({e});
    }
    void bind()
    {
        slot_pages = pick(1, 128);
        slot_pgoff = pick(0, 128);
        region(*slot_pages, *slot_pgoff);
    }
    void unbind()
    {
        region(0, 0);
        slot_pages.reset();
    }
    void fault()
    {
        uint64_t gfn = kBaseGfn + pick(0, *slot_pages - 1), index = *index_of(gfn);
        bool allocated = !resident.count(index);
        if (allocated)
            resident[index] = next_pfn++;
        auto e = gms::syn::record<gms_fault_event>(GMS_EV_FAULT, ++ts);
        e.hdr.flags = GMS_FAULT_WRITE | (allocated ? GMS_FAULT_ALLOCATED : 0);
        e.vm = kVm;
        e.gfn = gfn;
        e.pfn = resident[index];
        e.slot_base_gfn = kBaseGfn;
        e.gmem_ino = kIno;
        e.gmem_index = index;
        e.slot_id = 1;
        engine.add({e});
        faults[gfn]++;
    }
    void punch()
    {
        uint64_t first = pick(0, 255), len = pick(1, 16);
        auto f = gms::syn::record<gms_fallocate_event>(GMS_EV_FALLOCATE, ++ts);
        f.vm = kVm;
        f.gmem_ino = kIno;
        f.offset = first << 12;
        f.len = len << 12;
        f.mode = 3;
        for (uint64_t i = first; i < first + len; i++) {
            auto it = resident.find(i);
            if (it == resident.end())
                continue;
            auto d = gms::syn::record<gms_pagecache_event>(GMS_EV_PAGECACHE_DEL, ++ts);
            d.ino = kIno;   // vm 0, as the kernel sends it unless filtering by VM
            d.index = i;
            d.pfn = it->second;
            engine.add({d});
            resident.erase(it);
            if (slot_pages && i >= *slot_pgoff && i < *slot_pgoff + *slot_pages)
                punches[kBaseGfn + i - *slot_pgoff]++;
        }
        engine.add({f});
    }
    void convert()
    {
        uint64_t first = kBaseGfn - 16 + pick(0, 160), pages = pick(1, 32);
        bool to_private = pick(0, 1), fail = pick(0, 3) == 0;
        gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(++ts, GMS_IOC_SET_MEMORY_ATTRIBUTES, fail ? -EAGAIN : 0).rec);
        e.args.attrs.start = first << 12;
        e.args.attrs.size = pages << 12;
        e.args.attrs.attributes = to_private ? 8 : 0;
        engine.add({e});
        if (fail) {
            failures++;
            REQUIRE(engine.failures().size() == failures);
            const gms::Failure& f = engine.failures().back();
            CHECK(f.first_gfn == first);
            CHECK(f.end_gfn == first + pages);
            CHECK(f.ret == -EAGAIN);
            uint64_t want = 0, got = 0;
            for (uint64_t g = first; g < first + pages; g++)
                want += index_of(g) && pinned.count(hva_page(g));
            for (const auto& p : f.pins)
                got += p.pages;
            CHECK(got == want);
            return;
        }
        for (uint64_t g = first; g < first + pages; g++)
            attrs[g] = to_private ? 8 : 0;
    }
    void dma_map()
    {
        uint64_t vpage = (kUaddrBase >> 12) + pick(0, 255), pages = pick(1, 8);
        gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(++ts, GMS_IOC_VFIO_MAP_DMA, 0, kContainerFd).rec);
        e.vm = 0;
        e.fd_kind = GMS_FD_OTHER;
        e.args.vfio_dma.vaddr = vpage << 12;
        e.args.vfio_dma.iova = next_iova_page << 12;
        e.args.vfio_dma.size = pages << 12;
        engine.add({e});
        for (uint64_t i = 0; i < pages; i++)
            pinned[vpage + i] = next_iova_page + i;
        next_iova_page += pages + pick(0, 4);
    }
    void dma_unmap()
    {
        if (pinned.empty())
            return;
        auto it = pinned.begin();
        std::advance(it, pick(0, pinned.size() - 1));
        uint64_t iova_page = it->second, pages = pick(1, 4);
        gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(++ts, GMS_IOC_VFIO_UNMAP_DMA, 0, kContainerFd).rec);
        e.vm = 0;
        e.fd_kind = GMS_FD_OTHER;
        e.args.vfio_dma.iova = iova_page << 12;
        e.args.vfio_dma.size = pages << 12;
        engine.add({e});
        for (auto p = pinned.begin(); p != pinned.end();)
            p = p->second >= iova_page && p->second < iova_page + pages ? pinned.erase(p) : std::next(p);
    }
    void step()
    {
        switch (pick(0, 9)) {
        case 0: slot_pages ? unbind() : bind(); break;
        case 1: case 2: case 3: slot_pages ? fault() : bind(); break;
        case 4: case 5: punch(); break;
        case 6: convert(); break;
        case 7: case 8: dma_map(); break;
        case 9: dma_unmap(); break;
        }
    }
    // Every gfn around the slot: the engine and the model agree.
    void check_all() const
    {
        for (uint64_t g = kBaseGfn - 16; g < kBaseGfn + 144; g++) {
            INFO("gfn " << std::hex << g);
            gms::GfnInfo info = engine.gfn_info(*engine.find_vm(kVm, 1), g);
            auto index = index_of(g);
            REQUIRE(info.in_slot == index.has_value());
            CHECK(info.story.faults == (faults.count(g) ? faults.at(g) : 0));
            CHECK(info.story.punches == (punches.count(g) ? punches.at(g) : 0));
            CHECK(info.attrs == (attrs.count(g) ? attrs.at(g) : 0));
            if (!index) {
                CHECK(info.pins.empty());
                continue;
            }
            CHECK(info.gmem_index == *index);
            CHECK(info.hva == hva_page(g) << 12);
            auto r = resident.find(*index);
            REQUIRE(info.pfn.has_value() == (r != resident.end()));
            if (info.pfn)
                CHECK(*info.pfn == r->second);
            auto p = pinned.find(hva_page(g));
            REQUIRE(info.pins.size() == (p != pinned.end() ? 1u : 0u));
            if (p != pinned.end()) {
                CHECK(info.pins[0].iova == p->second << 12);
                CHECK(info.pins[0].pages == 1);
                CHECK(info.pins[0].space.fd == kContainerFd);
            }
            if (info.pfn) {
                auto back = engine.gfn_of_pfn(*info.pfn);
                REQUIRE(back);
                CHECK(back->second == g);
            }
        }
    }
};

}  // namespace

TEST_CASE("engine agrees with a per-page reference model on random synthetic streams", "[engine]")
{
    for (uint64_t seed = 1; seed <= 2000; seed++) {
        INFO("seed " << seed);
        Model m(seed);
        for (int i = 0; i < 80; i++) {
            m.step();
            if (i % 20 == 19)
                m.check_all();
        }
        m.check_all();
    }
}

TEST_CASE("interval maps merge what continues and split what does not", "[engine]")
{
    gms::IntervalMap<gms::PfnRun> m;
    for (uint64_t i = 0; i < 100; i++)
        m.assign(i, i + 1, {0x500 + i});
    CHECK(m.segments() == 1);
    m.erase(10, 20);
    CHECK(m.segments() == 2);
    REQUIRE(m.find(25));
    uint64_t start = 0;
    m.find(25, &start);
    CHECK(start == 20);
    CHECK(gms::IntervalMap<gms::PfnRun>::at(*m.find(25), 25 - start).pfn == 0x500 + 25);
    m.assign(10, 20, {0x50a});
    CHECK(m.segments() == 1);
    m.assign(50, 51, {0x9999});
    CHECK(m.segments() == 3);
}

TEST_CASE("a failed conversion is attributed to the pins over its range", "[engine]")
{
    Model m(7);
    m.slot_pages = 64;
    m.slot_pgoff = 0;
    m.region(64, 0);
    // Pin gfn [0x1008, 0x1010) through the gmem mmap.
    gms_ioctl_event map = std::get<gms_ioctl_event>(ioctl(++m.ts, GMS_IOC_VFIO_MAP_DMA, 0, kContainerFd).rec);
    map.args.vfio_dma.vaddr = kUaddrBase + (8 << 12);
    map.args.vfio_dma.iova = 0x100000;
    map.args.vfio_dma.size = 8 << 12;
    m.engine.add({map});
    gms_ioctl_event conv = std::get<gms_ioctl_event>(ioctl(++m.ts, GMS_IOC_SET_MEMORY_ATTRIBUTES, -EAGAIN).rec);
    conv.args.attrs.start = kBaseGfn << 12;
    conv.args.attrs.size = 32 << 12;
    conv.args.attrs.attributes = 8;
    m.engine.add({conv});
    REQUIRE(m.engine.failures().size() == 1);
    const auto& f = m.engine.failures()[0];
    REQUIRE(f.pins.size() == 1);
    CHECK(f.pins[0].first_gfn == 0x1008);
    CHECK(f.pins[0].pages == 8);
    std::string text = m.engine.describe(f);
    CHECK_THAT(text, Catch::Contains("shared->private of gfn [0x1000, 0x1020)") &&
                         Catch::Contains("failed -11 (EAGAIN)") && Catch::Contains("8 pages (gfn [0x1008, 0x1010))") &&
                         Catch::Contains("VFIO container fd 12") && Catch::Contains("pid 4242 synthetic"));
    CHECK(m.engine.gfn_of_iova(0x100000 + (3 << 12)) == std::pair<uint64_t, uint64_t>{*m.engine.find_vm(kVm, 1), 0x100b});
}

namespace {

gms::Event create_vm(uint64_t ts, uint64_t kvm)
{
    gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(ts, GMS_IOC_CREATE_VM, 5, 3).rec);
    e.vm = 0;
    e.fd_kind = GMS_FD_KVM;
    e.args.create_vm.vm = kvm;
    return {e};
}

gms::Event bind(uint64_t ts, uint32_t slot, uint64_t gfn, uint64_t pages, uint64_t ino)
{
    gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(ts, GMS_IOC_SET_MEMORY_REGION2, 0).rec);
    e.args.region.slot = slot;
    e.args.region.flags = 4;
    e.args.region.gpa = gfn << 12;
    e.args.region.size = pages << 12;
    e.args.region.uaddr = kUaddrBase;
    e.args.region.gmem_ino = ino;
    return {e};
}

gms::Event fallocate(uint64_t ts, uint64_t ino, uint32_t mode, uint64_t offset, uint64_t len, int64_t ret)
{
    auto f = gms::syn::record<gms_fallocate_event>(GMS_EV_FALLOCATE, ts);
    f.vm = kVm;
    f.gmem_ino = ino;
    f.mode = mode;
    f.offset = offset;
    f.len = len;
    f.ret = ret;
    return {f};
}

gms::Event vm_end(uint64_t ts, bool kfunc)
{
    auto c = gms::syn::record<gms_call_event>(GMS_EV_CALL, ts);
    c.hdr.flags = kfunc ? GMS_F_KFUNC : 0;
    c.fn = GMS_FN_KVM_DESTROY_VM;
    c.vm = kVm;
    c.args.vm_end.fd = 5;
    c.args.vm_end.fd_kind = GMS_FD_VM;
    return {c};
}

gms::Event fault(uint64_t ts, uint64_t gfn)
{
    auto e = gms::syn::record<gms_fault_event>(GMS_EV_FAULT, ts);
    e.vm = kVm;
    e.gfn = gfn;
    e.pfn = 0x1234;
    e.slot_id = 1;
    return {e};
}

}  // namespace

// Three VMs at one struct kvm address, as the kernel hands a freed
// address to the next VM: ended by kvm_destroy_vm, by a new VM at the
// address, and an event after an end (SYNTHETIC stream).
TEST_CASE("a VM is its lifetime: a reused struct kvm address is a new VM, events after its end never attach to it",
          "[engine]")
{
    for (bool watch_first : {true, false}) {
        gms::Engine e;
        e.watch(kVm, watch_first ? 1 : 3, kBaseGfn);
        e.add(create_vm(10, kVm));
        e.add(bind(11, 1, kBaseGfn, 16, 100));
        e.add(fallocate(12, 100, 3, 0, 4096, 0));
        e.add(vm_end(13, true));
        e.add(fault(14, kBaseGfn));   // after its end: a VM of its own, unseen creation
        e.add(create_vm(20, kVm));
        e.add(bind(21, 2, kBaseGfn, 8, 200));
        e.add(fallocate(22, 200, 3, 0, 4096, 0));
        e.add(create_vm(30, kVm));   // the second ended unseen: its address is reused
        e.add(bind(31, 1, kBaseGfn, 4, 300));
        REQUIRE(e.vms().size() == 4);
        std::vector<const gms::Vm*> v;
        for (const auto& [key, vm] : e.vms())
            v.push_back(&vm);
        CHECK(v[0]->lifetime == 1);
        CHECK(v[0]->created_ns == 10);
        CHECK(v[0]->ended_ns == 13);
        CHECK(v[0]->end == "destroyed (kvm_destroy_vm)");
        REQUIRE(v[0]->slots.size() == 1);
        CHECK(v[0]->slots.at(1).npages == 16);
        CHECK(v[1]->lifetime == 2);   // the fault after the end
        CHECK(v[1]->created_ns == 0);
        CHECK(v[1]->ended_ns == 20);
        CHECK(v[1]->slots.empty());
        CHECK(v[2]->lifetime == 3);
        CHECK(v[2]->ended_ns == 30);
        REQUIRE(v[2]->slots.size() == 1);
        CHECK(v[2]->slots.at(2).npages == 8);
        CHECK(v[3]->lifetime == 4);
        CHECK(v[3]->ended_ns == 0);
        CHECK(e.vm_name(e.find_vm(kVm, 3).value()) == "ffff888100001000#3");
        CHECK(e.vm_name(e.find_vm(kVm, 1).value()) == "ffff888100001000");
        CHECK(e.storms().at(*e.find_vm(kVm, 1)).punches == 1);
        CHECK(e.storms().at(*e.find_vm(kVm, 3)).punches == 1);
        // the watch sees its VM's events only: one bind, one punch, one end
        auto t = e.timeline();
        REQUIRE(t.size() == 3);
        if (watch_first) {
            CHECK_THAT(t[0].what, Catch::StartsWith("memslot 1 bound") && Catch::Contains("gmem ino 100"));
            CHECK_THAT(t[1].what, Catch::StartsWith("punch-hole: fallocate(KEEP_SIZE|PUNCH_HOLE) of gmem ino 100"));
            CHECK_THAT(t[2].what, Catch::StartsWith("VM ffff888100001000 ended: destroyed (kvm_destroy_vm)"));
        } else {
            CHECK_THAT(t[0].what, Catch::StartsWith("memslot 2 bound") && Catch::Contains("gmem ino 200"));
            CHECK_THAT(t[1].what, Catch::StartsWith("punch-hole: fallocate(KEEP_SIZE|PUNCH_HOLE) of gmem ino 200"));
            CHECK_THAT(t[2].what, Catch::StartsWith("VM ffff888100001000#3 ended: destroyed before this address was reused"));
        }
    }
    // Every VM at the address: each line says whose.
    gms::Engine all;
    all.watch(kVm, 0, kBaseGfn);
    all.add(create_vm(10, kVm));
    all.add(bind(11, 1, kBaseGfn, 16, 100));
    all.add(vm_end(12, false));
    all.add(create_vm(20, kVm));
    all.add(bind(21, 1, kBaseGfn, 16, 200));
    auto t = all.timeline();
    REQUIRE(t.size() == 3);
    CHECK_THAT(t[1].what, Catch::StartsWith("[vm ffff888100001000] VM ffff888100001000 ended: its last file reference "
                                            "closed by synthetic/4242 (fd 5, vm)"));
    CHECK_THAT(t[2].what, Catch::StartsWith("[vm ffff888100001000#2] memslot 1 bound"));
}

// fallocate() on gmem: kvm_gmem_fallocate() punches with PUNCH_HOLE |
// KEEP_SIZE, allocates with KEEP_SIZE alone, refuses the rest (SYNTHETIC).
TEST_CASE("fallocate: punch-holes, allocations and failed calls counted apart, failures grouped by call and errno",
          "[engine]")
{
    gms::Engine e;
    e.add(create_vm(1, kVm));
    e.add(bind(2, 1, kBaseGfn, 16, 100));
    e.add(fallocate(3, 100, 1, 0, 4 << 12, 0));         // allocation
    e.add(fallocate(4, 100, 3, 0, 1 << 12, 0));         // punch-hole
    e.add(fallocate(5, 100, 3, 4096, 2 << 12, 0));      // punch-hole
    e.add(fallocate(6, 100, 0, 0, 4096, -EOPNOTSUPP));  // failed
    e.add(fallocate(7, 100, 3, 1, 4096, -EINVAL));      // failed
    e.add(fallocate(8, 100, 0x11, 0, 4096, -EOPNOTSUPP));
    gms_ioctl_event bad = std::get<gms_ioctl_event>(ioctl(9, GMS_IOC_CREATE_GUEST_MEMFD, -EINVAL).rec);
    e.add({bad});
    const gms::StormStats& st = e.storms().at(*e.find_vm(kVm, 1));
    CHECK(st.punches == 2);
    CHECK(st.punched_bytes == 3 << 12);
    CHECK(st.allocations == 1);
    CHECK(st.allocated_bytes == 4 << 12);
    CHECK(st.failed_fallocates == 3);
    CHECK(st.range_bytes.count == 2);
    std::map<std::pair<std::string, int64_t>, uint64_t> groups;
    for (const auto& [k, g] : e.failure_groups())
        groups[k] = g.count;
    CHECK(groups == std::map<std::pair<std::string, int64_t>, uint64_t>{
                        {{"fallocate", -EOPNOTSUPP}, 2}, {{"fallocate", -EINVAL}, 1}, {{"KVM_CREATE_GUEST_MEMFD", -EINVAL}, 1}});
    CHECK(e.failure_groups().at({"fallocate", -EOPNOTSUPP}).example ==
          "fallocate(0) of gmem ino 100 offset 0x0 len 0x1000 by synthetic/4242");
    CHECK(gms::falloc_mode_name(0x11) == "KEEP_SIZE|ZERO_RANGE");
    CHECK(gms::falloc_mode_name(0x103) == "KEEP_SIZE|PUNCH_HOLE|0x100");
}

namespace {

gms::Event call(uint64_t ts, uint16_t fn, uint64_t ino, int64_t ret)
{
    auto c = gms::syn::record<gms_call_event>(GMS_EV_CALL, ts);
    c.hdr.flags = GMS_F_KFUNC;
    c.fn = fn;
    c.vm = kVm;
    c.ino = ino;
    c.ret = ret;
    return {c};
}

gms::Event set_attributes(uint64_t ts, uint64_t dur, uint64_t gfn, uint64_t pages, bool to_private)
{
    gms_ioctl_event e = std::get<gms_ioctl_event>(ioctl(ts, GMS_IOC_SET_MEMORY_ATTRIBUTES, 0).rec);
    e.dur_ns = dur;
    e.args.attrs.start = gfn << 12;
    e.args.attrs.size = pages << 12;
    e.args.attrs.attributes = to_private ? 8 : 0;
    return {e};
}

}  // namespace

// The conversion that matters, on a SYNTHETIC stream: KVM converts a range
// to private while a VFIO mapping of its shared backing stands.
TEST_CASE("a conversion to private performed over a DMA-mapped range is a critical exposure, once per conversion",
          "[engine]")
{
    Model m(11);
    m.slot_pages = 64;
    m.slot_pgoff = 0;
    m.region(64, 0);
    gms_ioctl_event map = std::get<gms_ioctl_event>(ioctl(m.ts += 10, GMS_IOC_VFIO_MAP_DMA, 0, kContainerFd).rec);
    map.args.vfio_dma.vaddr = kUaddrBase + (8 << 12);
    map.args.vfio_dma.iova = 0x100000;
    map.args.vfio_dma.size = 8 << 12;
    m.engine.add({map});
    std::vector<std::string> live;
    m.engine.on_exposure = [&](const gms::Exposure& x) { live.push_back(m.engine.describe(x)); };

    // Beside the mapping, and to shared: no exposure.
    m.engine.add(set_attributes(m.ts += 10, 5, 0x1020, 8, true));
    m.engine.add(set_attributes(m.ts += 10, 5, 0x1000, 32, false));
    CHECK(m.engine.exposures().empty());

    // 7.3 sends the kernel's tracepoint record from inside the ioctl, then
    // the ioctl's record stamped at its entry: one conversion, one exposure.
    uint64_t entry = m.ts += 10;
    gms_call_event tp = std::get<gms_call_event>(call(entry + 2, GMS_FN_KVM_SET_MEM_ATTRIBUTES, 0, 0).rec);
    tp.hdr.flags = 0;
    tp.args.range = {0x1000, 0x1020, 8, 0};
    m.engine.add({tp});
    m.engine.add(set_attributes(entry, 5, 0x1000, 32, true));
    REQUIRE(m.engine.exposures().size() == 1);
    REQUIRE(live.size() == 1);
    const gms::Exposure& x = m.engine.exposures()[0];
    CHECK(x.first_gfn == 0x1000);
    CHECK(x.end_gfn == 0x1020);
    REQUIRE(x.pins.size() == 1);
    CHECK(x.pins[0].first_gfn == 0x1008);
    CHECK(x.pins[0].pages == 8);
    CHECK(x.pins[0].iova == 0x100000);
    CHECK(x.pins[0].vaddr == kUaddrBase + (8 << 12));
    CHECK_THAT(live[0], Catch::Contains("gfn [0x1000, 0x1020)") && Catch::Contains("made private by synthetic/4242") &&
                            Catch::Contains("VFIO container fd 12") && Catch::Contains("iova 0x100000") &&
                            Catch::Contains("vaddr 0x7f0000008000"));

    // The same range again, later: a second conversion, a second exposure.
    m.engine.add(set_attributes(m.ts += 10, 5, 0x1000, 32, true));
    CHECK(m.engine.exposures().size() == 2);
    // After the unmap nothing is exposed.
    gms_ioctl_event unmap = std::get<gms_ioctl_event>(ioctl(m.ts += 10, GMS_IOC_VFIO_UNMAP_DMA, 0, kContainerFd).rec);
    unmap.args.vfio_dma.iova = 0x100000;
    unmap.args.vfio_dma.size = 8 << 12;
    m.engine.add({unmap});
    m.engine.add(set_attributes(m.ts += 10, 5, 0x1000, 32, true));
    CHECK(m.engine.exposures().size() == 2);
}

// A VFIO PCI dma-buf's life as the 7.3 hooks report it (SYNTHETIC stream):
// the export ioctl, the kernel's export functions inside it, a revoke and
// a restore of the device, and an iommufd IOAS import.
TEST_CASE("a dma-buf's life: exporter, BAR and range, size, revokes and restores, imports, in time order", "[engine]")
{
    constexpr uint64_t kBuf = 9001, kDev = 0xffff888123450000;
    gms::Engine e;
    gms_ioctl_event x = std::get<gms_ioctl_event>(ioctl(1000, GMS_IOC_VFIO_DMA_BUF, 7, 5).rec);
    x.vm = 0;
    x.fd_kind = GMS_FD_OTHER;
    x.obj = kBuf;
    x.dur_ns = 50;
    x.args.dma_buf = {48, 11, 0, 1, 0, 0x100000};
    gms_call_event vexp = std::get<gms_call_event>(call(1040, GMS_FN_VFIO_DMA_BUF_EXPORT, kBuf, 7).rec);
    vexp.args.dma_buf.dev = kDev;
    gms_call_event dexp = std::get<gms_call_event>(call(1020, GMS_FN_DMA_BUF_EXPORT, kBuf, 0).rec);
    dexp.args.dma_buf.size = 0x100000;
    std::strcpy(dexp.args.dma_buf.exp_name, "vfio_pci_core");
    // in the order the ring buffer hands them over: the ioctl comes at its exit
    for (const gms::Event& ev : {gms::Event{dexp}, gms::Event{vexp}, gms::Event{x}})
        e.add(ev);
    auto move = [&](uint64_t ts, bool revoked) {
        gms_call_event c = std::get<gms_call_event>(call(ts, GMS_FN_VFIO_DMA_BUF_MOVE, 0, 0).rec);
        c.args.dma_buf = {0, revoked, kDev, {}};
        e.add({c});
        e.add(call(ts + 1, GMS_FN_DMA_BUF_MOVE_NOTIFY, kBuf, 0));
    };
    gms_call_event import = std::get<gms_call_event>(call(2000, GMS_FN_IOMMUFD_MAP_FILE, kBuf, 0).rec);
    import.args.map = {0x200000, 0, 0x100000, 0, 0};
    e.add({import});
    move(3000, true);
    move(4000, false);
    // another device's revoke leaves this dma-buf alone
    gms_call_event other = std::get<gms_call_event>(call(5000, GMS_FN_VFIO_DMA_BUF_MOVE, 0, 0).rec);
    other.args.dma_buf = {0, 1, kDev + 0x1000, {}};
    e.add({other});

    REQUIRE(e.dma_bufs().size() == 1);
    const gms::DmaBuf& d = e.dma_bufs().at(kBuf);
    CHECK(d.exporter == "vfio_pci_core");
    CHECK(d.exported_ns == 1000);
    CHECK(d.owner.tgid == gms::syn::kTgid);
    CHECK(d.fd == 7);
    CHECK(d.size_bytes == 0x100000);
    CHECK(d.device == kDev);
    CHECK(d.region == 0u);
    CHECK(d.length == 0x100000);
    CHECK(d.nr_ranges == 1);
    REQUIRE(d.moves.size() == 2);
    CHECK((d.moves[0].ts_ns == 3000 && d.moves[0].revoked));
    CHECK((d.moves[1].ts_ns == 4000 && !d.moves[1].revoked));
    CHECK(d.notified_ns == std::vector<uint64_t>{3001, 4001});
    REQUIRE(d.imports.size() == 1);
    CHECK(d.imports[0].iova == 0x200000);
    std::vector<uint64_t> order;
    std::vector<std::string> what;
    for (const auto& t : e.timeline(d)) {
        order.push_back(t.ts_ns);
        what.push_back(t.what);
    }
    CHECK(order == std::vector<uint64_t>{1000, 2000, 3000, 3001, 4000, 4001});
    CHECK_THAT(what[0], Catch::Contains("exported by synthetic/4242 as fd 7: BAR0 [0x0, 0x100000), 1 range"));
    CHECK_THAT(what[1], Catch::Contains("mapped into an iommufd IOAS") && Catch::Contains("iova 0x200000"));
    CHECK_THAT(what[2], Catch::StartsWith("revoked"));
    CHECK_THAT(what[4], Catch::StartsWith("restored"));
    CHECK_THAT(e.describe(d), Catch::Contains("dma-buf ino 9001 (vfio_pci_core, 1024 KiB)") &&
                                  Catch::Contains("revoked at") && Catch::Contains("restored at"));
}

// SYNTHETIC: 7.3's tracepoint inside KVM_SET_MEMORY_ATTRIBUTES and the
// ioctl's own record are one conversion in explain's timeline, told by the
// ioctl; a tracepoint record with no ioctl record (the syscall tier off)
// stays.
TEST_CASE("explain tells a conversion seen from inside its ioctl and by the ioctl once", "[engine]")
{
    gms::Engine e;
    e.watch(kVm, 0, 0x1003);
    e.add(create_vm(100, kVm));
    e.add(bind(110, 1, 0x1000, 16, kIno));
    auto tp = [&](uint64_t ts, bool to_private) {
        gms_call_event c = std::get<gms_call_event>(call(ts, GMS_FN_KVM_SET_MEM_ATTRIBUTES, 0, 0).rec);
        c.hdr.flags = 0;
        c.args.range = {0x1000, 0x1008, to_private ? 8u : 0u, 0};
        e.add({c});
    };
    tp(205, true);
    e.add(set_attributes(200, 10, 0x1000, 8, true));
    tp(305, false);   // its ioctl record lost
    std::vector<std::string> conversions;
    for (const auto& t : e.timeline())
        if (t.what.find("of gfn [0x1000, 0x1008)") != std::string::npos)
            conversions.push_back(t.what);
    REQUIRE(conversions.size() == 2);
    CHECK_THAT(conversions[0], Catch::Contains("] shared->private") &&
                                   Catch::Contains("by KVM_SET_MEMORY_ATTRIBUTES from synthetic/4242: done"));
    CHECK_THAT(conversions[1], Catch::Contains("] private->shared") && Catch::Contains("by kvm_vm_set_mem_attributes"));
}
