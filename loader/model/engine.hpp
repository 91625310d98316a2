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
#include <functional>
#include <map>
#include <optional>
#include <set>
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

// One VM's lifetime, from KVM_CREATE_VM to its destruction.  The kernel
// reuses a freed struct kvm's address for a later VM, so the address alone
// does not name a VM: the engine keys VMs by order of first sight.
struct Vm {
    uint64_t id = 0;          // struct kvm *
    uint32_t lifetime = 1;    // 1: the first VM seen at this address, 2: the next, ...
    Owner owner;
    int32_t fd = -1;          // VM fd in the creating process, -1 if unseen
    uint64_t created_ns = 0;  // 0: created before tracing began
    uint64_t ended_ns = 0;    // 0: not seen to end
    std::string end;          // what showed its end
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
// fallocate() mode bits by name: "PUNCH_HOLE|KEEP_SIZE", "0".
std::string falloc_mode_name(uint32_t mode);

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
    uint64_t vaddr = 0;   // the shared backing's user address at first_gfn
};

// A conversion to private that KVM performed over gfns whose shared
// backing a device could still reach through a DMA mapping: the critical
// finding (DMA keeps reaching pages the guest now believes private).
struct Exposure {
    uint64_t ts_ns = 0;
    uint64_t vm = 0;
    Owner caller;
    uint32_t tid = 0;
    std::string op;
    uint64_t first_gfn = 0, end_gfn = 0;
    std::vector<PinOverlap> pins;
};

// A dma-buf's life: who exported what, and when its importers lost it.
struct DmaBufMove {
    uint64_t ts_ns;
    bool revoked;   // false: restored
};
struct DmaBufImport {   // mapped into an iommufd IOAS (IOMMU_IOAS_MAP_FILE)
    uint64_t ts_ns;
    Owner by;
    uint64_t iova, offset, length;
    int64_t ret;
};
struct DmaBuf {
    uint64_t ino = 0;
    std::string exporter;   // its exp_name: "vfio_pci_core", "udmabuf", ...; "" if unseen
    Owner owner;            // the process whose call exported it
    uint64_t exported_ns = 0;
    int64_t fd = -1;        // its fd there, -1 if unseen
    uint64_t size_bytes = 0;
    uint64_t device = 0;    // VFIO: struct vfio_pci_core_device *
    std::optional<uint32_t> region;   // VFIO: the BAR (region index)
    uint64_t offset = 0, length = 0;  // VFIO: its first range
    uint32_t nr_ranges = 0;
    std::vector<DmaBufMove> moves;    // VFIO revokes and restores, in order
    std::vector<uint64_t> notified_ns;   // importers told to drop their mappings
    std::vector<DmaBufImport> imports;
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

// Failed calls of one kind with one errno.
struct FailureGroup {
    uint64_t count = 0;
    uint64_t first_ns = 0, last_ns = 0;
    std::string example;   // the first one, described
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

// fallocate() on gmem files: kvm_gmem_fallocate() punches with
// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, allocates with KEEP_SIZE
// alone, and refuses everything else; the storm figures are the punches'.
struct StormStats {
    uint64_t punches = 0;           // successful punch-holes
    uint64_t punched_bytes = 0;
    uint64_t allocations = 0;       // successful allocations (KEEP_SIZE without PUNCH_HOLE)
    uint64_t allocated_bytes = 0;
    uint64_t failed_fallocates = 0; // calls that returned an error, any mode
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
    // Called with each exposure as the engine finds it (trace prints them).
    std::function<void(const Exposure&)> on_exposure;

    // Record the causal chain of this gfn as events come: of the VM at
    // struct kvm address `kvm` (0: any VM), its `lifetime`-th there (0: every one).
    void watch(uint64_t kvm, uint32_t lifetime, uint64_t gfn);
    // By timestamp: syscall records arrive at exit, stamped at entry.
    std::vector<TimelineEntry> timeline() const;

    // VMs by key: 1, 2, ... in order of first sight.
    const std::map<uint64_t, Vm>& vms() const { return vms_; }
    // "ffff888104a3c000", and "ffff888104a3c000#2" for the second VM at that address.
    std::string vm_name(uint64_t key) const;
    // The key of the `lifetime`-th VM at struct kvm address `kvm` (0: the last one).
    std::optional<uint64_t> find_vm(uint64_t kvm, uint32_t lifetime) const;
    // The VM alive at this address now, else the last one that was; 0 if none.
    uint64_t vm_key_at(uint64_t kvm) const;
    const std::map<uint64_t, GmemFile>& gmem_files() const { return gmem_; }
    const std::vector<Failure>& failures() const { return failures_; }
    const std::vector<Exposure>& exposures() const { return exposures_; }
    const std::map<uint64_t, DmaBuf>& dma_bufs() const { return dma_bufs_; }
    // Every failed call of a traced kind, by (call, errno).
    const std::map<std::pair<std::string, int64_t>, FailureGroup>& failure_groups() const { return failure_groups_; }
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
    std::string describe(const Exposure& x) const;
    // One line a mapping: what it is, whose, where, since when.
    std::string describe(const PinOverlap& p) const;
    std::string describe(const DmaBuf& d) const;
    // A dma-buf's life in time order: export, imports, revokes, restores.
    std::vector<TimelineEntry> timeline(const DmaBuf& d) const;
    // Total interval-map segments held: the engine's memory driver.
    size_t segments() const;

private:
    // The key of the VM alive at this address, a new VM if none (seen without its creation).
    uint64_t key_of(uint64_t kvm, const gms_hdr& h);
    uint64_t new_vm(uint64_t kvm, const gms_hdr& h);
    void bind(uint64_t ino, uint64_t key, uint32_t slot);
    void unbind(uint64_t ino, uint64_t key, uint32_t slot);
    std::optional<uint64_t> live_key(uint64_t kvm) const;
    void end_vm(uint64_t key, uint64_t ts, std::string why);
    void count_failure(const std::string& call, int64_t ret, uint64_t ts, const std::function<std::string()>& what);
    void on_ioctl(const gms_ioctl_event& e);
    void on_region(const gms_ioctl_event& e);
    void on_attrs(const gms_ioctl_event& e);
    void on_dma(const gms_ioctl_event& e);
    void on_fault(const gms_fault_event& e);
    void on_pagecache(const gms_pagecache_event& e);
    void on_fallocate(const gms_fallocate_event& e);
    void on_call(const gms_call_event& e);
    void add_failure(Failure f);
    // span_end: when the call ended (syscall records are stamped at entry),
    // 0 for a record from inside the call (the kernel's tracepoint or
    // function): the two records of one conversion tell it once.
    void on_conversion(const gms_hdr& h, uint64_t span_end, const std::string& op, int64_t ret, bool to_private,
                       const std::vector<std::tuple<uint64_t, uint64_t, uint64_t>>& ranges,
                       std::optional<std::pair<uint64_t, uint64_t>> error_gfn);
    void on_dma_buf(const gms_call_event& e);
    // Drops the timeline entry of the record from inside the call that
    // this call's record (tid, range, [ts, span_end]) tells again.
    void forget_inner(uint32_t tid, uint64_t vm, uint64_t g0, uint64_t g1, uint64_t ts, uint64_t span_end);
    // The dma-buf at inode `ino`, exported no later than `h`.
    DmaBuf& dma_buf(uint64_t ino, const gms_hdr& h);
    // Records the critical finding if the gfns just made private are DMA-mapped.
    void expose(const gms_hdr& h, uint64_t span_end, const std::string& op, uint64_t vm, uint64_t g0, uint64_t g1);
    // gfns of a gmem index range through the current bindings: f(vm, slot, first_gfn, end_gfn).
    template <typename F>
    void gfns_of_index(uint64_t ino, uint64_t first, uint64_t end, F&& f) const;
    // Whether the watched gfn is in [first_gfn, end_gfn) of vm: checked
    // before a timeline entry is formatted, which costs far more.
    bool watched(uint64_t vm, uint64_t first_gfn, uint64_t end_gfn) const
    {
        return watching_ && watch_gfn_ >= first_gfn && watch_gfn_ < end_gfn &&
               (!watch_kvm_ || !vm || watch_keys_.contains(vm));
    }
    // Adds describe() to the timeline if the range holds the watched gfn.
    template <typename F>
    void note(uint64_t vm, uint64_t first_gfn, uint64_t end_gfn, uint64_t ts, F&& describe, bool inferred = false);
    void touch_story(Vm& v, uint64_t first_gfn, uint64_t end_gfn, auto&& change);

    uint64_t t0_ns_ = 0;
    std::map<uint32_t, uint64_t> counts_;
    std::map<uint64_t, Vm> vms_;
    std::map<uint64_t, uint64_t> live_;                  // struct kvm * -> key of the VM alive there
    std::map<uint64_t, std::vector<uint64_t>> at_addr_;  // struct kvm * -> keys of its VMs, in order
    std::set<uint64_t> alive_;                           // keys of the VMs not seen to end
    // gmem inode -> (VM key, slot) of each memslot bound to it in a VM not
    // seen to end, in key then slot order (the order of vms_): a record of
    // a gmem page finds its gfns without a walk over every VM.
    std::map<uint64_t, std::vector<std::pair<uint64_t, uint32_t>>> bound_;
    std::map<uint64_t, GmemFile> gmem_;
    IntervalMap<PfnOwner> pfn_owner_;                       // pfn -> gmem page
    std::map<DmaSpace, IntervalMap<VaddrRun>> dma_iova_;     // iova page -> vaddr page
    std::map<uint32_t, IntervalMap<DmaRun>> dma_vaddr_;      // tgid: vaddr page -> mapping
    std::map<DmaSpace, Owner> dma_owner_;
    std::vector<Failure> failures_;
    std::vector<Exposure> exposures_;
    std::map<uint64_t, DmaBuf> dma_bufs_;   // by inode
    std::map<std::pair<std::string, int64_t>, FailureGroup> failure_groups_;
    std::map<uint64_t, StormStats> storms_;
    std::optional<gms_drops_record> counters_;
    // watch
    bool watching_ = false;
    uint64_t watch_kvm_ = 0, watch_gfn_ = 0;
    uint32_t watch_lifetime_ = 0;
    std::set<uint64_t> watch_keys_;   // the watched VMs' keys, as they appear
    std::vector<TimelineEntry> timeline_;
    std::map<uint64_t, uint64_t> punched_at_;   // watched gfn's vm -> ts of the punch not yet re-faulted
    // Conversions seen from inside a call whose own record has not come yet.
    static constexpr size_t kNoEntry = ~size_t{0};
    struct Inner {
        uint32_t tid;
        uint64_t vm, g0, g1, ts;
        size_t entry;   // its timeline_ entry, kNoEntry if none
    };
    std::deque<Inner> inner_;
};

}  // namespace gms
