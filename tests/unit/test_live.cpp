// Live tracing on the real kernel: the built-in workload runs in this
// process, the tracer watches this tgid, and the test asserts on the
// exact events the kernel produced.
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include <catch2/catch.hpp>

#include "capture.hpp"
#include "helpers.hpp"
#include "loader/capture/tracer.hpp"
#include "loader/workload/workload.hpp"

namespace {

using gms::test::Capture;

size_t index_of(const std::vector<gms::Event>& evs, auto pred)
{
    auto it = std::find_if(evs.begin(), evs.end(), pred);
    REQUIRE(it != evs.end());
    return size_t(it - evs.begin());
}

}  // namespace

TEST_CASE("fault, punch, memslot delete, rebind at another offset, close: exact events", "[live]")
{
    GMS_REQUIRE_LIVE();
    constexpr uint64_t N = 32, K = 5, kRebindPgoff = 0x100;
    Capture cap(16u << 20, {"default", "kvm_mmu.set_spte"});
    auto sc = gms::workload::parse_scenario(
        "rebind", std::vector<std::string>{"pages=32", "punch_pages=5", "rebind_offset=1M"});
    auto res = gms::workload::run(sc);
    cap.drain();
    const uint64_t ino = res.gmem_ino;
    const uint64_t base_gfn = sc.base_gpa >> 12;

    // One VM: its identity comes from KVM_CREATE_VM and every later event carries it.
    auto ioctls = cap.all<gms_ioctl_event>(GMS_EV_IOCTL);
    REQUIRE_FALSE(ioctls.empty());
    REQUIRE(ioctls[0].op == GMS_IOC_CREATE_VM);
    REQUIRE(ioctls[0].ret >= 0);
    const uint64_t vm = ioctls[0].args.create_vm.vm;
    REQUIRE(vm != 0);
    auto created = std::find_if(ioctls.begin(), ioctls.end(),
                                [](const auto& e) { return e.op == GMS_IOC_CREATE_GUEST_MEMFD; });
    REQUIRE(created != ioctls.end());
    CHECK(created->args.create_gmem.ino == ino);
    CHECK(created->vm == vm);

    // Memslot 1: bound at offset 0, deleted, bound at 1 MiB, deleted before close.
    std::vector<gms_ioctl_event> slot1;
    for (const auto& e : ioctls)
        if (e.op == GMS_IOC_SET_MEMORY_REGION2 && e.args.region.slot == 1)
            slot1.push_back(e);
    REQUIRE(slot1.size() == 4);
    CHECK(slot1[0].args.region.size == N * 4096);
    CHECK(slot1[0].args.region.gmem_ino == ino);
    CHECK(slot1[0].args.region.gmem_offset == 0);
    CHECK(slot1[1].args.region.size == 0);
    CHECK(slot1[2].args.region.gmem_offset == kRebindPgoff * 4096);
    CHECK(slot1[2].args.region.gmem_ino == ino);
    CHECK(slot1[3].args.region.size == 0);
    for (const auto& e : slot1) {
        CHECK(e.ret == 0);
        CHECK(e.vm == vm);
    }

    // 2N gmem faults: N at index i, N at 0x100 + i, each allocating its
    // page (the page-cache add is folded into the fault record, so no
    // separate add is sent from the vCPU); the SPTE carries the same pfn.
    auto faults = cap.all<gms_fault_event>(GMS_EV_FAULT);
    std::vector<gms_fault_event> gmem_faults;
    for (const auto& f : faults)
        if (f.gmem_ino)
            gmem_faults.push_back(f);
    REQUIRE(gmem_faults.size() == 2 * N);
    CHECK(cap.all<gms_pagecache_event>(GMS_EV_PAGECACHE_ADD).empty());
    std::map<uint64_t, uint64_t> added_pfn;
    for (const auto& f : gmem_faults) {
        CHECK((f.hdr.flags & GMS_FAULT_ALLOCATED));
        added_pfn[f.gmem_index] = f.pfn;
    }
    REQUIRE(added_pfn.size() == 2 * N);
    std::map<uint64_t, uint64_t> spte_pfn;
    for (const auto& s : cap.all<gms_set_spte_event>(GMS_EV_SET_SPTE))
        spte_pfn[s.gfn] = (s.spte >> 12) & ((1ULL << 40) - 1);
    for (uint64_t i = 0; i < 2 * N; i++) {
        const auto& f = gmem_faults[i];
        uint64_t want_index = i < N ? i : kRebindPgoff + (i - N);
        INFO("fault " << i);
        CHECK(f.vm == vm);
        CHECK(f.gmem_ino == ino);
        CHECK(f.slot_id == 1);
        CHECK(f.gfn == base_gfn + i % N);
        CHECK(f.gmem_index == want_index);
        CHECK((f.hdr.flags & GMS_FAULT_WRITE));
    }
    CHECK(spte_pfn.size() == N);
    for (uint64_t i = 0; i < N; i++)
        CHECK(spte_pfn.at(base_gfn + i) == added_pfn.at(kRebindPgoff + i));  // the last mapping

    // K punches, one page each, each deleting exactly that index.
    auto punches = cap.all<gms_fallocate_event>(GMS_EV_FALLOCATE);
    REQUIRE(punches.size() == K);
    for (uint64_t i = 0; i < K; i++) {
        CHECK(punches[i].gmem_ino == ino);
        CHECK(punches[i].mode == 3);  // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        CHECK(punches[i].offset == i * 4096);
        CHECK(punches[i].len == 4096);
        CHECK(punches[i].ret == 0);
        CHECK(punches[i].vm == vm);
    }
    // Deletes: K punched, then at close everything still resident.
    auto dels = cap.all<gms_pagecache_event>(GMS_EV_PAGECACHE_DEL);
    std::multiset<uint64_t> del_index;
    for (const auto& d : dels) {
        CHECK(d.ino == ino);
        del_index.insert(d.index);
    }
    REQUIRE(dels.size() == K + (N - K) + N);
    for (uint64_t i = 0; i < K; i++) {
        CHECK(dels[i].index == i);
        CHECK(dels[i].pfn == added_pfn.at(i));
    }
    for (uint64_t i = 0; i < N; i++) {
        CHECK(del_index.count(i) == 1);
        CHECK(del_index.count(kRebindPgoff + i) == 1);
    }

    // Each memslot delete zaps all roots of this VM, then its shadow pages.
    auto zaps = cap.all<gms_zap_event>(GMS_EV_ZAP_ALL_FAST);
    REQUIRE(zaps.size() == 2);
    for (const auto& z : zaps)
        CHECK(z.vm == vm);
    CHECK(zaps[1].gen != zaps[0].gen);
    CHECK_FALSE(cap.all<gms_zap_event>(GMS_EV_ZAP_PAGE).empty());

    // The close, then the deletes it causes.
    auto closes = cap.all<gms_gmem_close_event>(GMS_EV_GMEM_CLOSE);
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].gmem_ino == ino);
    CHECK(closes[0].vm == vm);
    size_t close_at = index_of(cap.events, [](const auto& e) { return e.type() == GMS_EV_GMEM_CLOSE; });
    size_t deletes_after = 0;
    for (size_t i = close_at; i < cap.events.size(); i++)
        deletes_after += cap.events[i].type() == GMS_EV_PAGECACHE_DEL;
    CHECK(deletes_after == (N - K) + N);

    // Nothing else: the shadow MMU never fires the TDP tracepoint, no
    // device DMA was mapped, and nothing was lost.
    CHECK(cap.all<gms_tdp_spte_event>(GMS_EV_TDP_SPTE).empty());
    CHECK(cap.all<gms_iommu_event>(GMS_EV_IOMMU_MAP).empty());
    auto c = cap.tracer.counters();
    for (auto d : c.dropped)
        CHECK(d == 0);
    CHECK(c.received == cap.events.size());
}

TEST_CASE("conversion attempts appear with the kernel's errno", "[live]")
{
    GMS_REQUIRE_LIVE();
    Capture cap;
    auto sc = gms::workload::parse_scenario("convert", std::vector<std::string>{"pages=4"});
    auto res = gms::workload::run(sc);
    cap.drain();
    std::vector<gms_ioctl_event> conv;
    for (const auto& e : cap.all<gms_ioctl_event>(GMS_EV_IOCTL))
        if (e.op >= GMS_IOC_SET_MEMORY_ATTRIBUTES && e.op <= GMS_IOC_GMEM_CONVERT_PRIVATE)
            conv.push_back(e);
    REQUIRE(conv.size() == res.conversions.size());
    for (size_t i = 0; i < conv.size(); i++) {
        const auto& want = res.conversions[i];
        INFO(gms::ioctl_op_name(conv[i].op) << " ret " << conv[i].ret);
        CHECK(conv[i].ret == -int64_t(want.error));
        bool on_gmem = want.kind != gms::workload::ConvertKind::vm_attributes;
        CHECK(conv[i].fd_kind == (on_gmem ? GMS_FD_GMEM : GMS_FD_VM));
        if (want.kind == gms::workload::ConvertKind::gmem_convert)
            CHECK(conv[i].op == (want.to_private ? GMS_IOC_GMEM_CONVERT_PRIVATE : GMS_IOC_GMEM_CONVERT_SHARED));
        if (want.kind != gms::workload::ConvertKind::gmem_convert)
            CHECK(conv[i].args.attrs.attributes == (want.to_private ? 1u << 3 : 0u));
        CHECK(conv[i].args.attrs.size == 4 * 4096);
    }
}

TEST_CASE("a flooded ring buffer counts every lost event by cause", "[live]")
{
    GMS_REQUIRE_LIVE();
    Capture cap(16 * 1024);  // a 16 KiB ring: a few hundred records
    auto sc = gms::workload::parse_scenario(
        "punch-storm", std::vector<std::string>{"range_pages=64", "count=5000"});
    auto res = gms::workload::run(sc);
    cap.drain();
    auto c = cap.tracer.counters();
    uint64_t tried = 0;
    for (auto t : c.tried)
        tried += t;
    INFO("tried " << tried << " received " << c.received << " ringbuf_full " << c.dropped[GMS_DROP_RINGBUF_FULL]);
    CHECK(c.dropped[GMS_DROP_RINGBUF_FULL] > 0);
    CHECK(c.received == cap.events.size());
    // Every event the programs produced was either received or counted lost.
    CHECK(tried == c.received + c.dropped[GMS_DROP_RINGBUF_FULL]);
    // And the programs saw every punch the workload made.
    CHECK(c.tried[GMS_EV_FALLOCATE] == res.punches);
    CHECK(c.tried[GMS_EV_PAGECACHE_DEL] >= res.punches);
    CHECK(c.tried[GMS_EV_FAULT] >= res.punches);
}
