// The correlation engine: fed decoded events, live or from a recording,
// it keeps what the kernel objects are now and how they relate: VMs,
// memslots and their gmem bindings, gmem files and the pfns of their
// resident pages, shared/private attributes, DMA mappings and pins; and
// it explains a gfn, attributes failed conversions to the pins that
// overlap them, and keeps per-VM storm statistics.  Ranges are interval
// maps: memory grows with the number of distinct ranges.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/events/events.hpp"
#include "loader/model/interval_map.hpp"

namespace gms {

struct Owner {
    uint32_t tgid = 0;
    std::string comm;
};

struct Memslot {
    uint32_t slot = 0;
    uint64_t base_gfn = 0;
    uint64_t npages = 0;
    uint32_t flags = 0;
    uint64_t uaddr = 0;
    uint64_t gmem_ino = 0;    // 0: not gmem-backed
    uint64_t gmem_pgoff = 0;
    uint64_t since_ns = 0;
};

// pfn of the first page of a run of resident gmem pages.
struct PfnRun {
    uint64_t pfn;
    PfnRun shifted(uint64_t d) const { return {pfn + d}; }
    bool operator==(const PfnRun&) const = default;
    bool continues(const PfnRun& n, uint64_t len) const { return n.pfn == pfn + len; }
};

// Which gmem page a pfn holds.
struct PfnOwner {
    uint64_t ino;
    uint64_t index;
    PfnOwner shifted(uint64_t d) const { return {ino, index + d}; }
    bool operator==(const PfnOwner&) const = default;
    bool continues(const PfnOwner& n, uint64_t len) const { return n.ino == ino && n.index == index + len; }
};

struct GmemFile {
    uint64_t ino = 0;
    uint64_t vm = 0;
    uint64_t size_bytes = 0;
    uint64_t flags = 0;
    Owner owner;
    uint64_t created_ns = 0;
    uint64_t closed_ns = 0;
    IntervalMap<PfnRun> resident;  // page index -> pfn
};

// What happened to a range of gfns, merged while the story is the same.
struct PageStory {
    uint32_t faults = 0;
    uint32_t punches = 0;   // page-cache removals while bound to the gfn
    bool operator==(const PageStory&) const = default;
};

struct Vm {
    uint64_t id = 0;          // struct kvm *
    Owner owner;
    int32_t fd = -1;          // VM fd in the creating process, -1 if unseen
    uint64_t created_ns = 0;
    std::map<uint32_t, Memslot> slots;
    std::vector<Memslot> past_slots;   // unbound, most recent last (bounded)
    IntervalMap<uint64_t> attrs;       // gfn -> KVM_MEMORY_ATTRIBUTE_* as last set
    IntervalMap<PageStory> story;      // gfn -> story
};

enum class DmaKind : uint8_t { vfio = 1, iommufd = 2 };

// One VFIO container or iommufd IOAS, as seen from its owner's fd.
struct DmaSpace {
    DmaKind kind = DmaKind::vfio;
    uint32_t tgid = 0;
    uint32_t fd = 0;
    uint32_t ioas = 0;
    auto operator<=>(const DmaSpace&) const = default;
};
std::string to_string(const DmaSpace& s);

// A user address range mapped for DMA (VFIO type1 pins it at map time).
struct DmaRun {
    DmaSpace space;
    uint64_t iova_page;   // iova of the run's first page, in pages
    uint64_t since_ns;
    DmaRun shifted(uint64_t d) const { return {space, iova_page + d, since_ns}; }
    bool operator==(const DmaRun&) const = default;
    bool continues(const DmaRun& n, uint64_t len) const
    {
        return n.space == space && n.iova_page == iova_page + len && n.since_ns == since_ns;
    }
};

struct VaddrRun {
    uint64_t vaddr_page;
    uint64_t since_ns;
    VaddrRun shifted(uint64_t d) const { return {vaddr_page + d, since_ns}; }
    bool operator==(const VaddrRun&) const = default;
    bool continues(const VaddrRun& n, uint64_t len) const
    {
        return n.vaddr_page == vaddr_page + len && n.since_ns == since_ns;
    }
};

// A pin or DMA mapping over a gfn range of a VM.
struct PinOverlap {
    DmaSpace space;
    Owner owner;
    uint64_t first_gfn = 0;
    uint64_t pages = 0;
    uint64_t iova = 0;
    uint64_t since_ns = 0;
};

struct GfnInfo {
    bool in_slot = false;
    Memslot slot;
    uint64_t hva = 0;
    uint64_t gmem_index = 0;
    std::optional<uint64_t> pfn;
    uint64_t attrs = 0;
    PageStory story;
    std::vector<PinOverlap> pins;
};

struct TimelineEntry {
    uint64_t ts_ns;
    std::string what;
    bool inferred = false;
};

struct Failure {
    uint64_t ts_ns = 0;
    uint64_t vm = 0;
    Owner caller;
    std::string op;
    int64_t ret = 0;
    uint64_t first_gfn = 0, end_gfn = 0;
    std::optional<uint64_t> error_gfn;
    bool to_private = false;
    std::vector<PinOverlap> pins;
    std::string what;   // set when the failure is not a conversion: what was tried
};

// log2 histogram, as bpftrace's hist(): bucket k + 1 counts values in
// [2^k, 2^(k+1)), bucket 0 the value 0.
struct Log2Hist {
    std::array<uint64_t, 65> buckets{};
    uint64_t count = 0;
    void add(uint64_t v) { buckets[std::bit_width(v)]++, count++; }
};
std::string render_hist(const Log2Hist& h, const std::string& unit);

struct StormStats {
    uint64_t punches = 0;
    uint64_t punched_bytes = 0;
    uint64_t invalidated_pages = 0;   // page-cache deletes
    uint64_t faults = 0;
    uint64_t first_ns = 0, last_ns = 0;
    std::map<uint64_t, uint64_t> per_second;   // second since t0 -> punches
    Log2Hist range_bytes;
    Log2Hist latency_ns;
    std::map<uint32_t, std::pair<std::string, uint64_t>> by_tgid;   // punches
    std::map<std::pair<uint64_t, uint64_t>, uint64_t> by_range;      // (ino, 2 MiB chunk) -> punches
};

class Engine {
public:
    void add(const Event& ev);

    // Record the causal chain of this gfn (vm 0: of any VM) as events come.
    void watch(uint64_t vm, uint64_t gfn);
    // By timestamp: syscall records arrive at exit, stamped at entry.
    std::vector<TimelineEntry> timeline() const;

    const std::map<uint64_t, Vm>& vms() const { return vms_; }
    const std::map<uint64_t, GmemFile>& gmem_files() const { return gmem_; }
    const std::vector<Failure>& failures() const { return failures_; }
    const std::map<uint64_t, StormStats>& storms() const { return storms_; }
    const std::map<uint32_t, uint64_t>& event_counts() const { return counts_; }
    const std::optional<gms_drops_record>& counters() const { return counters_; }
    uint64_t t0_ns() const { return t0_ns_; }

    GfnInfo gfn_info(uint64_t vm, uint64_t gfn) const;
    std::vector<PinOverlap> pins_over(uint64_t vm, uint64_t first_gfn, uint64_t end_gfn) const;
    // Address translations to (vm, gfn); nullopt if no known mapping.
    std::optional<std::pair<uint64_t, uint64_t>> gfn_of_hva(uint32_t tgid, uint64_t hva) const;
    std::optional<std::pair<uint64_t, uint64_t>> gfn_of_pfn(uint64_t pfn) const;
    std::optional<std::pair<uint64_t, uint64_t>> gfn_of_iova(uint64_t iova) const;
    std::optional<uint64_t> vm_of_gmem(uint64_t ino) const;

    std::string describe(const Failure& f) const;
    // Total interval-map segments held: the engine's memory driver.
    size_t segments() const;

private:
    Vm& vm(uint64_t id, const gms_hdr& h);
    void on_ioctl(const gms_ioctl_event& e);
    void on_region(const gms_ioctl_event& e);
    void on_attrs(const gms_ioctl_event& e);
    void on_dma(const gms_ioctl_event& e);
    void on_fault(const gms_fault_event& e);
    void on_pagecache(const gms_pagecache_event& e);
    void on_fallocate(const gms_fallocate_event& e);
    void on_call(const gms_call_event& e);
    void add_failure(Failure f);
    void on_conversion(const gms_hdr& h, const std::string& op, int64_t ret, bool to_private,
                       const std::vector<std::tuple<uint64_t, uint64_t, uint64_t>>& ranges,
                       std::optional<std::pair<uint64_t, uint64_t>> error_gfn);
    // gfns of a gmem index range through the current bindings: f(vm, slot, first_gfn, end_gfn).
    template <typename F>
    void gfns_of_index(uint64_t ino, uint64_t first, uint64_t end, F&& f) const;
    // Whether the watched gfn is in [first_gfn, end_gfn) of vm: checked
    // before a timeline entry is formatted, which costs far more.
    bool watched(uint64_t vm, uint64_t first_gfn, uint64_t end_gfn) const
    {
        return watching_ && (!watch_vm_ || !vm || vm == watch_vm_) && watch_gfn_ >= first_gfn &&
               watch_gfn_ < end_gfn;
    }
    // Adds describe() to the timeline if the range holds the watched gfn.
    template <typename F>
    void note(uint64_t vm, uint64_t first_gfn, uint64_t end_gfn, uint64_t ts, F&& describe, bool inferred = false);
    void touch_story(Vm& v, uint64_t gfn, auto&& change);

    uint64_t t0_ns_ = 0;
    std::map<uint32_t, uint64_t> counts_;
    std::map<uint64_t, Vm> vms_;
    std::map<uint64_t, GmemFile> gmem_;
    IntervalMap<PfnOwner> pfn_owner_;                       // pfn -> gmem page
    std::map<DmaSpace, IntervalMap<VaddrRun>> dma_iova_;     // iova page -> vaddr page
    std::map<uint32_t, IntervalMap<DmaRun>> dma_vaddr_;      // tgid: vaddr page -> mapping
    std::map<DmaSpace, Owner> dma_owner_;
    std::vector<Failure> failures_;
    std::map<uint64_t, StormStats> storms_;
    std::optional<gms_drops_record> counters_;
    // watch
    bool watching_ = false;
    uint64_t watch_vm_ = 0, watch_gfn_ = 0;
    std::vector<TimelineEntry> timeline_;
    std::map<uint64_t, uint64_t> punched_at_;   // watched gfn's vm -> ts of the punch not yet re-faulted
};

}  // namespace gms
