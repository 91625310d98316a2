#include "loader/model/engine.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace gms {
namespace {

constexpr uint64_t kPageShift = 12;
constexpr uint64_t kAttrPrivate = GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE;
constexpr size_t kMaxFailures = 10000;
constexpr size_t kMaxPastSlots = 64;
// The exp_name VFIO's dma-bufs carry (KBUILD_MODNAME of vfio_pci_core.c),
// for one whose dma_buf_export() was not seen.
constexpr const char* kVfioExporter = "vfio_pci_core";
constexpr size_t kMaxTimeline = 100000;

Owner owner_of(const gms_hdr& h) { return {h.tgid, comm_of(h)}; }

bool is_conversion(uint32_t op)
{
    return op == GMS_IOC_SET_MEMORY_ATTRIBUTES || op == GMS_IOC_SET_MEMORY_ATTRIBUTES2 ||
           op == GMS_IOC_GMEM_CONVERT_SHARED || op == GMS_IOC_GMEM_CONVERT_PRIVATE;
}

}  // namespace

std::string falloc_mode_name(uint32_t mode)
{
    // include/uapi/linux/falloc.h
    static const std::pair<uint32_t, const char*> names[] = {
        {0x01, "KEEP_SIZE"},      {0x02, "PUNCH_HOLE"},   {0x04, "NO_HIDE_STALE"}, {0x08, "COLLAPSE_RANGE"},
        {0x10, "ZERO_RANGE"},     {0x20, "INSERT_RANGE"}, {0x40, "UNSHARE_RANGE"}, {0x80, "WRITE_ZEROES"}};
    std::string out;
    for (auto [bit, name] : names)
        if (mode & bit) {
            out += out.empty() ? "" : "|";
            out += name;
            mode &= ~bit;
        }
    if (mode)
        out += fmt::format("{}{:#x}", out.empty() ? "" : "|", mode);
    return out.empty() ? "0" : out;
}

std::string to_string(const DmaSpace& s)
{
    if (s.kind == DmaKind::vfio)
        return fmt::format("VFIO container fd {}", s.fd);
    return fmt::format("iommufd fd {} IOAS {}", s.fd, s.ioas);
}

std::string render_hist(const Log2Hist& h, const std::string& unit)
{
    int first = -2, last = -2;
    for (int i = 0; i < int(h.buckets.size()); i++)
        if (h.buckets[size_t(i)]) {
            last = i - 1;
            if (first == -2)
                first = i - 1;
        }
    if (first == -2)
        return "";
    auto label = [&](int k) -> std::string {
        if (k < 0)
            return "0";
        // k reaches 64: the bucket of values of 2^63 and more ends at 16E.
        static const char* suffix[] = {"", "K", "M", "G", "T", "P", "E"};
        int i = std::min(k / 10, 6);
        return fmt::format("{}{}", 1ull << (k - 10 * i), suffix[i]);
    };
    uint64_t max = *std::max_element(h.buckets.begin(), h.buckets.end());
    std::string out;
    for (int k = first; k <= last; k++) {
        uint64_t n = h.buckets[size_t(k + 1)];
        std::string range = k < 0 ? "[0]" : fmt::format("[{}, {})", label(k), label(k + 1));
        size_t bar = max ? size_t(n * 52 / max) : 0;
        out += fmt::format("{:<18}{:>10} |{:<52}|\n", range + (unit.empty() ? "" : " " + unit).substr(0, 0), n,
                           std::string(bar, '@'));
    }
    return out;
}

uint64_t Engine::new_vm(uint64_t kvm, const gms_hdr& h)
{
    uint64_t key = vms_.empty() ? 1 : vms_.rbegin()->first + 1;
    auto& keys = at_addr_[kvm];
    keys.push_back(key);
    Vm& v = vms_[key];
    v.id = kvm;
    v.lifetime = uint32_t(keys.size());
    v.owner = owner_of(h);
    live_[kvm] = key;
    alive_.insert(key);
    if (watch_kvm_ == kvm && (!watch_lifetime_ || watch_lifetime_ == v.lifetime))
        watch_keys_.insert(key);
    return key;
}

void Engine::bind(uint64_t ino, uint64_t key, uint32_t slot)
{
    auto& slots = bound_[ino];
    std::pair<uint64_t, uint32_t> b{key, slot};
    slots.insert(std::lower_bound(slots.begin(), slots.end(), b), b);
}

void Engine::unbind(uint64_t ino, uint64_t key, uint32_t slot)
{
    auto it = bound_.find(ino);
    if (it == bound_.end())
        return;
    std::erase(it->second, std::pair<uint64_t, uint32_t>{key, slot});
    if (it->second.empty())
        bound_.erase(it);
}

std::optional<uint64_t> Engine::live_key(uint64_t kvm) const
{
    auto it = live_.find(kvm);
    if (it == live_.end())
        return std::nullopt;
    return it->second;
}

uint64_t Engine::key_of(uint64_t kvm, const gms_hdr& h)
{
    if (auto k = live_key(kvm))
        return *k;
    return new_vm(kvm, h);
}

uint64_t Engine::vm_key_at(uint64_t kvm) const
{
    if (auto k = live_key(kvm))
        return *k;
    auto it = at_addr_.find(kvm);
    return it == at_addr_.end() ? 0 : it->second.back();
}

std::optional<uint64_t> Engine::find_vm(uint64_t kvm, uint32_t lifetime) const
{
    auto it = at_addr_.find(kvm);
    if (it == at_addr_.end() || lifetime > it->second.size())
        return std::nullopt;
    return lifetime ? it->second[lifetime - 1] : it->second.back();
}

std::string Engine::vm_name(uint64_t key) const
{
    auto it = vms_.find(key);
    if (it == vms_.end())
        return "?";
    const Vm& v = it->second;
    return v.lifetime > 1 ? fmt::format("{:x}#{}", v.id, v.lifetime) : fmt::format("{:x}", v.id);
}

// After this the address names no VM until KVM_CREATE_VM returns it again;
// events that still carry it go to no VM of the past.
void Engine::end_vm(uint64_t key, uint64_t ts, std::string why)
{
    Vm& v = vms_.at(key);
    if (v.ended_ns)
        return;
    v.ended_ns = ts;
    v.end = std::move(why);
    if (auto it = live_.find(v.id); it != live_.end() && it->second == key)
        live_.erase(it);
    alive_.erase(key);
    for (const auto& [id, s] : v.slots)
        if (s.gmem_ino)
            unbind(s.gmem_ino, key, id);
    punched_at_.erase(key);
    note(key, 0, ~0ull, ts, [&] { return fmt::format("VM {} ended: {}", vm_name(key), v.end); });
}

void Engine::watch(uint64_t kvm, uint32_t lifetime, uint64_t gfn)
{
    watching_ = true;
    watch_kvm_ = kvm;
    watch_lifetime_ = lifetime;
    watch_gfn_ = gfn;
}

void Engine::count_failure(const std::string& call, int64_t ret, uint64_t ts, const std::function<std::string()>& what)
{
    FailureGroup& g = failure_groups_[{call, ret}];
    if (!g.count++) {
        g.first_ns = ts;
        g.example = what();
    }
    g.first_ns = std::min(g.first_ns, ts);
    g.last_ns = std::max(g.last_ns, ts);
}

std::vector<TimelineEntry> Engine::timeline() const
{
    std::vector<TimelineEntry> t = timeline_;
    std::stable_sort(t.begin(), t.end(), [](const auto& a, const auto& b) { return a.ts_ns < b.ts_ns; });
    return t;
}

template <typename F>
void Engine::note(uint64_t vm_id, uint64_t first_gfn, uint64_t end_gfn, uint64_t ts, F&& describe, bool inferred)
{
    if (!watched(vm_id, first_gfn, end_gfn) || timeline_.size() >= kMaxTimeline)
        return;
    std::string what = describe();
    bool one_vm = watch_kvm_ && watch_lifetime_;
    timeline_.push_back({ts, vm_id && !one_vm ? fmt::format("[vm {}] {}", vm_name(vm_id), what) : what, inferred});
}

void Engine::touch_story(Vm& v, uint64_t g0, uint64_t g1, auto&& change)
{
    // Within one range (a fault, a punch inside a run of like pages): one
    // lookup and one assign, no list of parts.
    uint64_t end = 0;
    if (const PageStory* cur = v.story.find(g0, nullptr, &end); cur && end >= g1) {
        PageStory story = *cur;
        change(story);
        v.story.assign(g0, g1, story);
        return;
    }
    // Range by range, not gfn by gfn: the work is bounded by the story's
    // segments, whatever size a record claims.
    std::vector<std::tuple<uint64_t, uint64_t, PageStory>> parts;
    uint64_t at = g0;
    v.story.overlaps(g0, g1, [&](uint64_t s, uint64_t e, const PageStory& cur) {
        if (at < s)
            parts.emplace_back(at, s, PageStory{});
        parts.emplace_back(s, e, cur);
        at = e;
    });
    if (at < g1)
        parts.emplace_back(at, g1, PageStory{});
    for (auto& [s, e, story] : parts) {
        change(story);
        v.story.assign(s, e, story);
    }
}

template <typename F>
void Engine::gfns_of_index(uint64_t ino, uint64_t first, uint64_t end, F&& f) const
{
    auto it = bound_.find(ino);
    if (it == bound_.end())
        return;
    for (auto [id, slot_id] : it->second) {
        const Memslot& s = vms_.at(id).slots.at(slot_id);
        uint64_t lo = std::max(first, s.gmem_pgoff), hi = std::min(end, s.gmem_pgoff + s.npages);
        if (lo < hi)
            f(id, s, s.base_gfn + (lo - s.gmem_pgoff), s.base_gfn + (hi - s.gmem_pgoff));
    }
}

std::optional<uint64_t> Engine::vm_of_gmem(uint64_t ino) const
{
    auto it = gmem_.find(ino);
    if (it == gmem_.end() || !it->second.vm)
        return std::nullopt;
    return it->second.vm;
}

void Engine::add(const Event& ev)
{
    const gms_hdr& h = ev.hdr();
    if (h.type == GMS_REC_DROPS) {
        counters_ = std::get<gms_drops_record>(ev.rec);
        return;
    }
    if (!t0_ns_ || h.ts_ns < t0_ns_)
        t0_ns_ = h.ts_ns;
    counts_[h.type]++;
    std::visit(
        [this](const auto& r) {
            using T = std::decay_t<decltype(r)>;
            if constexpr (std::is_same_v<T, gms_ioctl_event>) {
                on_ioctl(r);
            } else if constexpr (std::is_same_v<T, gms_fault_event>) {
                on_fault(r);
            } else if constexpr (std::is_same_v<T, gms_pagecache_event>) {
                on_pagecache(r);
            } else if constexpr (std::is_same_v<T, gms_fallocate_event>) {
                on_fallocate(r);
            } else if constexpr (std::is_same_v<T, gms_call_event>) {
                on_call(r);
            } else if constexpr (std::is_same_v<T, gms_gmem_close_event>) {
                auto it = gmem_.find(r.gmem_ino);
                if (it != gmem_.end())
                    it->second.closed_ns = r.hdr.ts_ns;
                gfns_of_index(r.gmem_ino, 0, ~0ull, [&](uint64_t id, const Memslot&, uint64_t g0, uint64_t g1) {
                    note(id, g0, g1, r.hdr.ts_ns, [&] { return fmt::format("gmem fd {} (ino {}) closed by {}/{}", r.fd,
                                                              r.gmem_ino, comm_of(r.hdr), r.hdr.pid); });
                });
            } else if constexpr (std::is_same_v<T, gms_zap_event>) {
                auto key = live_key(r.vm);
                if (r.hdr.type == GMS_EV_ZAP_ALL_FAST && key) {
                    note(*key, 0, ~0ull, r.hdr.ts_ns,
                         [&] { return fmt::format("all SPTEs of the VM invalidated (kvm_mmu_zap_all_fast, gen {})", r.gen); });
                    punched_at_.erase(*key);   // the zap was observed: nothing to infer
                }
            }
        },
        ev.rec);
}

// In time order: syscall records come at exit, stamped at entry.
void Engine::add_failure(Failure f)
{
    if (failures_.size() >= kMaxFailures)
        return;
    auto at = std::upper_bound(failures_.begin(), failures_.end(), f.ts_ns,
                               [](uint64_t ts, const Failure& g) { return ts < g.ts_ns; });
    failures_.insert(at, std::move(f));
}

void Engine::on_ioctl(const gms_ioctl_event& e)
{
    if (e.ret < 0)
        count_failure(std::string(ioctl_op_name(e.op)), e.ret, e.hdr.ts_ns, [&] {
            std::string on = e.vm ? fmt::format(" on VM {}", vm_name(vm_key_at(e.vm))) : "";
            return fmt::format("{} ({} fd {}){} by {}/{}", ioctl_op_name(e.op), fd_kind_name(e.fd_kind), e.fd, on,
                               comm_of(e.hdr), e.hdr.pid);
        });
    switch (e.op) {
    case GMS_IOC_CREATE_VM:
        if (e.ret >= 0 && e.args.create_vm.vm) {
            // The kernel hands out a struct kvm address again only after
            // kvm_destroy_vm() freed it: a VM still alive there has ended.
            if (auto old = live_key(e.args.create_vm.vm))
                end_vm(*old, e.hdr.ts_ns, "destroyed before this address was reused by a new VM");
            Vm& v = vms_.at(new_vm(e.args.create_vm.vm, e.hdr));
            v.fd = int32_t(e.ret);
            v.created_ns = e.hdr.ts_ns;
        }
        return;
    case GMS_IOC_CREATE_GUEST_MEMFD:
        if (e.ret >= 0) {
            GmemFile& g = gmem_[e.args.create_gmem.ino];
            g.ino = e.args.create_gmem.ino;
            g.vm = e.vm ? key_of(e.vm, e.hdr) : 0;
            g.size_bytes = e.args.create_gmem.size;
            g.flags = e.args.create_gmem.flags;
            g.owner = owner_of(e.hdr);
            g.created_ns = e.hdr.ts_ns;
        }
        return;
    case GMS_IOC_SET_MEMORY_REGION:
    case GMS_IOC_SET_MEMORY_REGION2:
        on_region(e);
        return;
    case GMS_IOC_VFIO_MAP_DMA:
    case GMS_IOC_VFIO_UNMAP_DMA:
    case GMS_IOC_IOAS_MAP:
    case GMS_IOC_IOAS_MAP_FILE:
    case GMS_IOC_IOAS_UNMAP:
        on_dma(e);
        return;
    case GMS_IOC_VFIO_DMA_BUF:
        if (e.ret >= 0 && e.obj) {
            DmaBuf& d = dma_buf(e.obj, e.hdr);
            if (d.exporter.empty())
                d.exporter = kVfioExporter;
            d.fd = e.ret;
            d.region = e.args.dma_buf.region_index;
            d.offset = e.args.dma_buf.offset;
            d.length = e.args.dma_buf.length;
            d.nr_ranges = e.args.dma_buf.nr_ranges;
        }
        return;
    }
    if (is_conversion(e.op))
        on_attrs(e);
}

void Engine::on_region(const gms_ioctl_event& e)
{
    if (e.ret < 0 || !e.vm)
        return;
    const uint64_t key = key_of(e.vm, e.hdr);
    Vm& v = vms_.at(key);
    const auto& r = e.args.region;
    auto old = v.slots.find(r.slot);
    if (old != v.slots.end()) {
        const Memslot& s = old->second;
        note(key, s.base_gfn, s.base_gfn + s.npages, e.hdr.ts_ns,
             [&] { return fmt::format("memslot {} deleted by {}/{} (its SPTEs are zapped)", s.slot, comm_of(e.hdr), e.hdr.pid); });
        if (watching_ && watch_gfn_ >= s.base_gfn && watch_gfn_ < s.base_gfn + s.npages)
            punched_at_.erase(key);   // deleting the memslot zapped its SPTEs
        if (s.gmem_ino)
            unbind(s.gmem_ino, key, s.slot);
        v.past_slots.push_back(s);
        if (v.past_slots.size() > kMaxPastSlots)
            v.past_slots.erase(v.past_slots.begin());
        v.slots.erase(old);
    }
    if (r.size == 0)
        return;
    Memslot s{r.slot,      r.gpa >> kPageShift, r.size >> kPageShift, r.flags, r.uaddr, r.gmem_ino,
              r.gmem_offset >> kPageShift, e.hdr.ts_ns};
    v.slots[r.slot] = s;
    if (r.gmem_ino) {
        bind(r.gmem_ino, key, r.slot);
        GmemFile& g = gmem_[r.gmem_ino];
        g.ino = r.gmem_ino;
        if (!g.vm)
            g.vm = key;
    }
    note(key, s.base_gfn, s.base_gfn + s.npages, e.hdr.ts_ns,
         [&] { return s.gmem_ino ? fmt::format("memslot {} bound: gfn [{:#x}, {:#x}) -> gmem ino {} index [{:#x}, {:#x}), hva {:#x}",
                                  s.slot, s.base_gfn, s.base_gfn + s.npages, s.gmem_ino, s.gmem_pgoff,
                                  s.gmem_pgoff + s.npages, s.uaddr)
                    : fmt::format("memslot {} bound: gfn [{:#x}, {:#x}) -> hva {:#x}", s.slot, s.base_gfn,
                                  s.base_gfn + s.npages, s.uaddr); });
}

void Engine::on_attrs(const gms_ioctl_event& e)
{
    const auto& a = e.args.attrs;
    bool to_private = e.op == GMS_IOC_GMEM_CONVERT_PRIVATE ||
                      (e.op != GMS_IOC_GMEM_CONVERT_SHARED && (a.attributes & kAttrPrivate));
    // The gfn ranges the call covers: gpa on a VM fd, gmem offsets on a gmem fd.
    std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> ranges;   // vm, first, end
    std::optional<std::pair<uint64_t, uint64_t>> error_gfn;
    const uint64_t key = e.vm ? key_of(e.vm, e.hdr) : 0;
    if (e.op == GMS_IOC_SET_MEMORY_ATTRIBUTES) {
        ranges.emplace_back(key, a.start >> kPageShift, (a.start + a.size) >> kPageShift);
    } else {
        uint64_t first = a.start >> kPageShift, end = (a.start + a.size) >> kPageShift;
        uint64_t err_index = a.error_offset >> kPageShift;
        gfns_of_index(e.obj, first, end, [&](uint64_t id, const Memslot& s, uint64_t g0, uint64_t g1) {
            ranges.emplace_back(id, g0, g1);
            // The in-place conversion series writes error_offset back with
            // -EAGAIN (kvm_gmem_is_safe_for_conversion()); else it is unset.
            if (e.ret == -EAGAIN && a.error_offset >= a.start && a.error_offset < a.start + a.size &&
                err_index >= s.gmem_pgoff && err_index < s.gmem_pgoff + s.npages)
                error_gfn = std::pair{id, s.base_gfn + err_index - s.gmem_pgoff};
        });
    }
    if (ranges.empty())
        ranges.emplace_back(key, 0, 0);
    on_conversion(e.hdr, e.hdr.ts_ns + e.dur_ns, std::string(ioctl_op_name(e.op)), e.ret, to_private, ranges,
                  error_gfn);
}

void Engine::on_conversion(const gms_hdr& h, uint64_t span_end, const std::string& op, int64_t ret,
                           bool to_private, const std::vector<std::tuple<uint64_t, uint64_t, uint64_t>>& ranges,
                           std::optional<std::pair<uint64_t, uint64_t>> error_gfn)
{
    std::string what = to_private ? "shared->private" : "private->shared";
    for (const auto& range : ranges) {
        // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
        uint64_t id = std::get<0>(range), g0 = std::get<1>(range), g1 = std::get<2>(range);
        std::string result = ret < 0 ? fmt::format("failed {} ({})", ret, errno_name(ret)) : "done";
        if (g1 > g0) {
            // The record from inside a call comes first; the call's own
            // record, when it comes, tells the same conversion.
            if (span_end)
                forget_inner(h.pid, id, g0, g1, h.ts_ns, span_end);
            size_t before = timeline_.size();
            note(id, g0, g1, h.ts_ns,
                 [&] { return fmt::format("{} of gfn [{:#x}, {:#x}) by {} from {}/{}: {}", what, g0, g1, op, comm_of(h),
                                          h.pid, result); });
            if (!span_end) {
                inner_.push_back({h.pid, id, g0, g1, h.ts_ns, timeline_.size() > before ? before : kNoEntry});
                if (inner_.size() > 64)
                    inner_.pop_front();
            }
        }
        if (ret == 0 && id && g1 > g0)
            vms_.at(id).attrs.assign(g0, g1, to_private ? kAttrPrivate : 0);
        if (ret == 0 && to_private && id && g1 > g0)
            expose(h, span_end, op, id, g0, g1);
        if (ret < 0) {
            Failure f{h.ts_ns, id, owner_of(h), op, ret, g0, g1, std::nullopt, to_private,
                      g1 > g0 ? pins_over(id, g0, g1) : std::vector<PinOverlap>{}, {}};
            if (error_gfn && error_gfn->first == id)
                f.error_gfn = error_gfn->second;
            add_failure(std::move(f));
        }
    }
}

// Precise-tier records (fentry/fexit): what the syscall tier cannot see,
// or sees only from outside (pins run by run with their pfns, pin
// failures, invalidation ranges, releases).
void Engine::on_call(const gms_call_event& e)
{
    const auto& a = e.args;
    auto by = [&] { return fmt::format("{}/{}", comm_of(e.hdr), e.hdr.pid); };
    if (e.ret < 0)
        count_failure(std::string(fn_name(e.fn)), e.ret, e.hdr.ts_ns,
                      [&] { return fmt::format("{} by {}", fn_name(e.fn), by()); });
    if (e.fn == GMS_FN_KVM_DESTROY_VM) {
        if (auto key = live_key(e.vm))
            end_vm(*key, e.hdr.ts_ns,
                   e.hdr.flags & GMS_F_KFUNC
                       ? "destroyed (kvm_destroy_vm)"
                       : fmt::format("its last file reference closed by {} (fd {}, {})", by(), a.vm_end.fd,
                                     fd_kind_name(a.vm_end.fd_kind)));
        return;
    }
    // Records of the VM alive at their address; one that has ended gets none.
    const uint64_t vm_key = e.vm ? key_of(e.vm, e.hdr) : 0;
    switch (e.fn) {
    case GMS_FN_GMEM_CREATE:
        if (e.ret >= 0 && e.ino) {
            GmemFile& g = gmem_[e.ino];
            g.ino = e.ino;
            g.vm = vm_key;
            g.size_bytes = a.gmem_create.size;
            g.flags = a.gmem_create.flags;
            g.owner = owner_of(e.hdr);
            g.created_ns = e.hdr.ts_ns;
        }
        return;
    case GMS_FN_GMEM_RELEASE:
        if (auto it = gmem_.find(e.ino); it != gmem_.end())
            it->second.closed_ns = e.hdr.ts_ns;
        gfns_of_index(e.ino, 0, ~0ull, [&](uint64_t id, const Memslot&, uint64_t g0, uint64_t g1) {
            note(id, g0, g1, e.hdr.ts_ns, [&] { return fmt::format("gmem ino {} released (kvm_gmem_release)", e.ino); });
        });
        return;
    case GMS_FN_GMEM_INVALIDATE: {
        // The range leaves the page cache: what page-cache deletes say on the portable tier.
        if (auto it = gmem_.find(e.ino); it != gmem_.end()) {
            it->second.resident.overlaps(a.range.start, a.range.end, [&](uint64_t i0, uint64_t i1, const PfnRun& r) {
                pfn_owner_.erase(r.pfn, r.pfn + (i1 - i0));
            });
            it->second.resident.erase(a.range.start, a.range.end);
        }
        gfns_of_index(e.ino, a.range.start, a.range.end, [&](uint64_t id, const Memslot&, uint64_t g0, uint64_t g1) {
            note(id, g0, g1, e.hdr.ts_ns, [&] {
                return fmt::format("gmem ino {} index [{:#x}, {:#x}) invalidated by {} (kvm_gmem_invalidate_begin)", e.ino,
                                   a.range.start, a.range.end, by());
            });
            if (watching_ && watch_gfn_ >= g0 && watch_gfn_ < g1)
                punched_at_[id] = e.hdr.ts_ns;
        });
        return;
    }
    case GMS_FN_KVM_MMU_INVALIDATE_END:
        note(vm_key, a.range.start, a.range.end, e.hdr.ts_ns, [&] {
            return fmt::format("KVM MMU invalidation of gfn [{:#x}, {:#x}) ended (its SPTEs zapped)", a.range.start,
                               a.range.end);
        });
        if (watched(vm_key, a.range.start, a.range.end))
            punched_at_.erase(vm_key);   // the zap was observed: nothing to infer
        return;
    case GMS_FN_KVM_MMU_NOTIFIER:
        // User addresses of the VM's process: the memslots over them say which gfns.
        for (uint64_t id : alive_) {
            const Vm& v = vms_.at(id);
            if ((e.vm && id != vm_key) || (!e.vm && v.owner.tgid != e.hdr.tgid))
                continue;
            for (const auto& [n, s] : v.slots) {
                uint64_t lo = std::max<uint64_t>(a.range.start, s.uaddr);
                uint64_t hi = std::min<uint64_t>(a.range.end, s.uaddr + (s.npages << kPageShift));
                if (lo >= hi)
                    continue;
                uint64_t g0 = s.base_gfn + ((lo - s.uaddr) >> kPageShift), g1 = s.base_gfn + ((hi - s.uaddr + 4095) >> kPageShift);
                note(id, g0, g1, e.hdr.ts_ns, [&] {
                    return fmt::format("hva [{:#x}, {:#x}) (gfn [{:#x}, {:#x})) invalidated through KVM's MMU notifier by {}",
                                       lo, hi, g0, g1, by());
                });
                if (watched(id, g0, g1))
                    punched_at_.erase(id);   // KVM zaps the SPTEs of an invalidated range
            }
        }
        return;
    case GMS_FN_KVM_SET_MEM_ATTRIBUTES:
        on_conversion(e.hdr, 0, "kvm_vm_set_mem_attributes", e.ret, a.range.attributes & kAttrPrivate,
                      {{vm_key, a.range.start, a.range.end}}, std::nullopt);
        return;
    case GMS_FN_GMEM_SET_ATTRIBUTES:
    case GMS_FN_GMEM_CONVERT: {
        std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> ranges;
        std::optional<std::pair<uint64_t, uint64_t>> error_gfn;
        uint64_t err_index = a.range.error_offset >> kPageShift;
        gfns_of_index(e.ino, a.range.start, a.range.end, [&](uint64_t id, const Memslot& s, uint64_t g0, uint64_t g1) {
            ranges.emplace_back(id, g0, g1);
            if (e.ret == -EAGAIN && err_index >= std::max<uint64_t>(a.range.start, s.gmem_pgoff) &&
                err_index < std::min<uint64_t>(a.range.end, s.gmem_pgoff + s.npages))
                error_gfn = std::pair{id, s.base_gfn + err_index - s.gmem_pgoff};
        });
        if (ranges.empty())
            ranges.emplace_back(vm_key, 0, 0);
        on_conversion(e.hdr, 0,
                      std::string(e.fn == GMS_FN_GMEM_CONVERT ? "kvm_gmem_convert_range" : "kvm_gmem_set_attributes"),
                      e.ret, a.range.attributes & kAttrPrivate, ranges, error_gfn);
        return;
    }
    case GMS_FN_VFIO_DMA_BUF_EXPORT:
    case GMS_FN_VFIO_DMA_BUF_MOVE:
    case GMS_FN_DMA_BUF_EXPORT:
    case GMS_FN_DMA_BUF_MOVE_NOTIFY:
    case GMS_FN_IOMMUFD_MAP_FILE:
        on_dma_buf(e);
        return;
    case GMS_FN_VFIO_PIN:
    case GMS_FN_VFIO_UNPIN: {
        bool pin = e.fn == GMS_FN_VFIO_PIN;
        auto g = gfn_of_hva(e.hdr.tgid, a.pin.vaddr);
        if (e.ret < 0) {
            add_failure({e.hdr.ts_ns, g ? g->first : 0, owner_of(e.hdr), "vfio_pin_pages_remote", e.ret, 0, 0,
                         std::nullopt, false, {},
                         fmt::format("VFIO pin of {} pages at vaddr {:#x} (iova {:#x}){}{}", a.pin.npages, a.pin.vaddr,
                                     a.pin.iova, g ? fmt::format(", gfn {:#x}", g->second) : "",
                                     e.ret == -ENOMEM && !a.pin.lock_cap ? ", past RLIMIT_MEMLOCK" : "")});
            return;
        }
        uint64_t pages = pin ? uint64_t(e.ret) : a.pin.npages;
        if (g)
            note(g->first, g->second, g->second + pages, e.hdr.ts_ns, [&] {
                return fmt::format("{} {} pages by {}: vaddr {:#x} iova {:#x} pfn {:#x}{}", pin ? "VFIO pinned" : "VFIO unpinned",
                                   pages, by(), a.pin.vaddr, a.pin.iova, a.pin.pfn,
                                   pin && !a.pin.lock_cap ? " (counted against RLIMIT_MEMLOCK)" : "");
            });
        return;
    }
    }
}

DmaBuf& Engine::dma_buf(uint64_t ino, const gms_hdr& h)
{
    DmaBuf& d = dma_bufs_[ino];
    d.ino = ino;
    // The export ioctl's record is stamped at its entry, before the
    // kernel functions' records inside it: the earliest is the export.
    if (!d.exported_ns || h.ts_ns < d.exported_ns) {
        d.exported_ns = h.ts_ns;
        d.owner = owner_of(h);
    }
    return d;
}

void Engine::on_dma_buf(const gms_call_event& e)
{
    const auto& a = e.args.dma_buf;
    switch (e.fn) {
    case GMS_FN_VFIO_DMA_BUF_EXPORT:
        if (e.ret >= 0 && e.ino) {
            DmaBuf& d = dma_buf(e.ino, e.hdr);
            d.device = a.dev;
            d.fd = e.ret;
            if (d.exporter.empty())
                d.exporter = kVfioExporter;
        }
        return;
    case GMS_FN_DMA_BUF_EXPORT:
        if (e.ret == 0 && e.ino) {
            DmaBuf& d = dma_buf(e.ino, e.hdr);
            d.exporter = exporter_name(e.args);
            d.size_bytes = a.size;
        }
        return;
    case GMS_FN_VFIO_DMA_BUF_MOVE:
        // Every dma-buf of the device is revoked or restored with it.
        for (auto& [ino, d] : dma_bufs_)
            if (d.device == a.dev)
                d.moves.push_back({e.hdr.ts_ns, a.flags != 0});
        return;
    case GMS_FN_DMA_BUF_MOVE_NOTIFY:
        if (auto it = dma_bufs_.find(e.ino); it != dma_bufs_.end())
            it->second.notified_ns.push_back(e.hdr.ts_ns);
        return;
    case GMS_FN_IOMMUFD_MAP_FILE:
        if (auto it = dma_bufs_.find(e.ino); it != dma_bufs_.end()) {
            const auto& m = e.args.map;
            it->second.imports.push_back({e.hdr.ts_ns, owner_of(e.hdr), m.iova, m.start, m.length, e.ret});
        }
        return;
    }
}

void Engine::forget_inner(uint32_t tid, uint64_t vm, uint64_t g0, uint64_t g1, uint64_t ts, uint64_t span_end)
{
    for (auto it = inner_.begin(); it != inner_.end(); ++it) {
        if (it->tid != tid || it->vm != vm || it->g0 != g0 || it->g1 != g1 || it->ts < ts || it->ts > span_end)
            continue;
        if (size_t gone = it->entry; gone != kNoEntry && gone < timeline_.size()) {
            timeline_.erase(timeline_.begin() + std::ptrdiff_t(gone));
            for (auto& other : inner_)
                if (other.entry != kNoEntry && other.entry > gone)
                    other.entry--;
        }
        inner_.erase(it);
        return;
    }
}

void Engine::expose(const gms_hdr& h, uint64_t span_end, const std::string& op, uint64_t vm, uint64_t g0, uint64_t g1)
{
    // One conversion seen twice (the ioctl and the kernel's tracepoint
    // inside it) is one exposure.
    for (auto it = exposures_.rbegin(); it != exposures_.rend() && it->ts_ns >= h.ts_ns; ++it)
        if (it->tid == h.pid && it->vm == vm && it->first_gfn == g0 && it->end_gfn == g1 && it->ts_ns <= span_end) {
            if (span_end > h.ts_ns)
                it->op = op;   // the call the process made, rather than the kernel's function inside it
            return;
        }
    std::vector<PinOverlap> pins = pins_over(vm, g0, g1);
    if (pins.empty() || exposures_.size() >= kMaxFailures)
        return;
    Exposure x{h.ts_ns, vm, owner_of(h), h.pid, op, g0, g1, std::move(pins)};
    for (const auto& p : x.pins)
        note(vm, p.first_gfn, p.first_gfn + p.pages, h.ts_ns, [&] {
            return fmt::format("CRITICAL: made private while DMA-mapped: {}", describe(p));
        });
    auto at = std::upper_bound(exposures_.begin(), exposures_.end(), x.ts_ns,
                               [](uint64_t ts, const Exposure& y) { return ts < y.ts_ns; });
    at = exposures_.insert(at, std::move(x));
    if (on_exposure)
        on_exposure(*at);
}

void Engine::on_dma(const gms_ioctl_event& e)
{
    if (e.ret < 0) {
        add_failure({e.hdr.ts_ns, 0, owner_of(e.hdr), std::string(ioctl_op_name(e.op)), e.ret, 0, 0,
                     std::nullopt, false, {}, {}});
        return;
    }
    bool vfio = e.op == GMS_IOC_VFIO_MAP_DMA || e.op == GMS_IOC_VFIO_UNMAP_DMA;
    DmaSpace space{vfio ? DmaKind::vfio : DmaKind::iommufd, e.hdr.tgid, e.fd, vfio ? 0 : e.args.ioas.ioas_id};
    uint64_t iova = vfio ? e.args.vfio_dma.iova : e.args.ioas.iova;
    uint64_t bytes = vfio ? e.args.vfio_dma.size : e.args.ioas.length;
    uint64_t pages = bytes >> kPageShift, iova_page = iova >> kPageShift;
    auto& by_vaddr = dma_vaddr_[e.hdr.tgid];
    if (e.op == GMS_IOC_VFIO_MAP_DMA || e.op == GMS_IOC_IOAS_MAP) {
        uint64_t vaddr = vfio ? e.args.vfio_dma.vaddr : e.args.ioas.start;
        dma_owner_[space] = owner_of(e.hdr);
        dma_iova_[space].assign(iova_page, iova_page + pages, VaddrRun{vaddr >> kPageShift, e.hdr.ts_ns});
        by_vaddr.assign(vaddr >> kPageShift, (vaddr >> kPageShift) + pages, DmaRun{space, iova_page, e.hdr.ts_ns});
        if (auto g = gfn_of_hva(e.hdr.tgid, vaddr))
            note(g->first, g->second, g->second + pages, e.hdr.ts_ns,
                 [&] { return fmt::format("DMA-mapped and pinned by {} ({}/{}): iova {:#x}, {} pages", to_string(space),
                             comm_of(e.hdr), e.hdr.pid, iova, pages); });
        return;
    }
    if (e.op == GMS_IOC_IOAS_MAP_FILE)
        return;   // file-backed: no user address to tie to a memslot
    auto it = dma_iova_.find(space);
    if (it == dma_iova_.end())
        return;
    it->second.overlaps(iova_page, iova_page + pages, [&](uint64_t s, uint64_t end, const VaddrRun& v) {
        // A user page mapped again at another iova shows its latest
        // mapping: drop only what still points to this one.
        std::vector<std::pair<uint64_t, uint64_t>> drop;
        by_vaddr.overlaps(v.vaddr_page, v.vaddr_page + (end - s), [&](uint64_t a, uint64_t b, const DmaRun& r) {
            if (r.space == space && r.iova_page == s + (a - v.vaddr_page))
                drop.emplace_back(a, b);
        });
        for (auto [a, b] : drop)
            by_vaddr.erase(a, b);
        if (auto g = gfn_of_hva(e.hdr.tgid, v.vaddr_page << kPageShift))
            note(g->first, g->second, g->second + (end - s), e.hdr.ts_ns,
                 [&] { return fmt::format("DMA-unmapped and unpinned from {} ({}/{})", to_string(space), comm_of(e.hdr),
                             e.hdr.pid); });
    });
    it->second.erase(iova_page, iova_page + pages);
}

void Engine::on_fault(const gms_fault_event& e)
{
    const uint64_t key = e.vm ? key_of(e.vm, e.hdr) : 0;
    if (e.gmem_ino) {
        GmemFile& g = gmem_[e.gmem_ino];
        g.ino = e.gmem_ino;
        if (!g.vm)
            g.vm = key;
        g.resident.assign(e.gmem_index, e.gmem_index + 1, PfnRun{e.pfn});
        pfn_owner_.assign(e.pfn, e.pfn + 1, PfnOwner{e.gmem_ino, e.gmem_index});
    }
    if (!key)
        return;
    Vm& v = vms_.at(key);
    storms_[key].faults++;
    touch_story(v, e.gfn, e.gfn + 1, [&](PageStory& s) { s.faults++; });
    if (!watching_ || e.gfn != watch_gfn_)
        return;
    auto punched = punched_at_.find(key);
    if (punched != punched_at_.end()) {
        note(key, e.gfn, e.gfn + 1, e.hdr.ts_ns,
             [&] { return fmt::format("its SPTE was zapped after the punch at {:.6f} s (inferred: the gfn faults again; the "
                         "shadow MMU has no zap tracepoint)",
                         double(punched->second - t0_ns_) / 1e9); },
             true);
        punched_at_.erase(punched);
    }
    std::string gmem = e.gmem_ino ? fmt::format(" gmem ino {} index {:#x}", e.gmem_ino, e.gmem_index) : "";
    note(key, e.gfn, e.gfn + 1, e.hdr.ts_ns,
         [&] { return fmt::format("{} {}fault on vCPU {}: slot {}{} -> pfn {:#x}{}", e.hdr.flags & GMS_FAULT_WRITE ? "write" : "read",
                     e.hdr.flags & GMS_FAULT_PRIVATE ? "private " : "", e.vcpu_id, e.slot_id, gmem, e.pfn,
                     e.hdr.flags & GMS_FAULT_ALLOCATED ? " (page allocated in the gmem page cache)" : ""); });
}

void Engine::on_pagecache(const gms_pagecache_event& e)
{
    GmemFile& g = gmem_[e.ino];
    g.ino = e.ino;
    if (!g.vm && e.vm)
        g.vm = key_of(e.vm, e.hdr);
    // A folio is at most 2^MAX_PAGECACHE_ORDER pages; an order read from a
    // file may be anything: saturate at the end of the index space.
    uint64_t room = UINT64_MAX - e.index;
    uint64_t pages = e.order < 64 ? std::min<uint64_t>(1ull << e.order, room) : room;
    bool add = e.hdr.type == GMS_EV_PAGECACHE_ADD;
    if (add) {
        g.resident.assign(e.index, e.index + pages, PfnRun{e.pfn});
        pfn_owner_.assign(e.pfn, e.pfn + pages, PfnOwner{e.ino, e.index});
    } else {
        g.resident.erase(e.index, e.index + pages);
        pfn_owner_.erase(e.pfn, e.pfn + pages);
        if (g.vm)
            storms_[g.vm].invalidated_pages += pages;
    }
    gfns_of_index(e.ino, e.index, e.index + pages, [&](uint64_t id, const Memslot&, uint64_t g0, uint64_t g1) {
        if (!add)
            touch_story(vms_.at(id), g0, g1, [&](PageStory& s) { s.punches++; });
        note(id, g0, g1, e.hdr.ts_ns,
             [&] { return fmt::format("gmem ino {} index {:#x} {} the page cache (pfn {:#x}) by {}/{}", e.ino, e.index,
                         add ? "added to" : "removed from", e.pfn, comm_of(e.hdr), e.hdr.pid); });
        if (!add && watching_ && watch_gfn_ >= g0 && watch_gfn_ < g1)
            punched_at_[id] = e.hdr.ts_ns;
    });
}

void Engine::on_fallocate(const gms_fallocate_event& e)
{
    // The gmem file knows its VM's lifetime; the record only the address.
    auto known = vm_of_gmem(e.gmem_ino);
    uint64_t id = known ? *known : e.vm ? key_of(e.vm, e.hdr) : 0;
    StormStats& st = storms_[id];
    uint64_t first = e.offset >> kPageShift, end = (e.offset + e.len + 4095) >> kPageShift;
    // Written only where it is read (a watched gfn, a failure's first example): most calls are neither.
    auto what = [&] {
        return fmt::format("fallocate({}) of gmem ino {} offset {:#x} len {:#x} by {}/{}", falloc_mode_name(e.mode),
                           e.gmem_ino, e.offset, e.len, comm_of(e.hdr), e.hdr.pid);
    };
    gfns_of_index(e.gmem_ino, first, end, [&](uint64_t vid, const Memslot&, uint64_t g0, uint64_t g1) {
        note(vid, g0, g1, e.hdr.ts_ns, [&] {
            return fmt::format("{} {} = {} [{} us]",
                               e.ret < 0 ? "failed" : e.mode & GMS_FALLOC_FL_PUNCH_HOLE ? "punch-hole:" : "allocation:", what(),
                               e.ret < 0 ? "-" + errno_name(e.ret) : std::to_string(e.ret), e.dur_ns / 1000);
        });
    });
    if (e.ret < 0) {
        st.failed_fallocates++;
        count_failure("fallocate", e.ret, e.hdr.ts_ns, what);
        return;
    }
    if (!(e.mode & GMS_FALLOC_FL_PUNCH_HOLE)) {
        st.allocations++;
        st.allocated_bytes += e.len;
        return;
    }
    st.punches++;
    st.punched_bytes += e.len;
    if (!st.first_ns)
        st.first_ns = e.hdr.ts_ns;
    st.last_ns = std::max<uint64_t>(st.last_ns, e.hdr.ts_ns);
    st.per_second[(e.hdr.ts_ns - t0_ns_) / 1000000000ull]++;
    st.range_bytes.add(e.len);
    st.latency_ns.add(e.dur_ns);
    auto& who = st.by_tgid[e.hdr.tgid];
    who.first = comm_of(e.hdr);
    who.second++;
    st.by_range[{e.gmem_ino, e.offset >> 21}]++;
}

GfnInfo Engine::gfn_info(uint64_t vm_id, uint64_t gfn) const
{
    GfnInfo info;
    auto v = vms_.find(vm_id);
    if (v == vms_.end())
        return info;
    if (const uint64_t* a = v->second.attrs.find(gfn))
        info.attrs = *a;
    if (const PageStory* s = v->second.story.find(gfn))
        info.story = *s;
    for (const auto& [id, s] : v->second.slots) {
        if (gfn < s.base_gfn || gfn >= s.base_gfn + s.npages)
            continue;
        info.in_slot = true;
        info.slot = s;
        info.hva = s.uaddr + ((gfn - s.base_gfn) << kPageShift);
        if (s.gmem_ino) {
            info.gmem_index = gfn - s.base_gfn + s.gmem_pgoff;
            auto g = gmem_.find(s.gmem_ino);
            if (g != gmem_.end())
                if (const PfnRun* p = g->second.resident.find(info.gmem_index))
                    info.pfn = IntervalMap<PfnRun>::at(*p, 0).pfn;
        }
    }
    // find() returns the run's first pfn: move it to this index.
    if (info.pfn && info.slot.gmem_ino) {
        uint64_t start = 0;
        const auto& g = gmem_.at(info.slot.gmem_ino);
        g.resident.find(info.gmem_index, &start);
        info.pfn = *info.pfn + (info.gmem_index - start);
    }
    info.pins = pins_over(vm_id, gfn, gfn + 1);
    return info;
}

std::vector<PinOverlap> Engine::pins_over(uint64_t vm_id, uint64_t first_gfn, uint64_t end_gfn) const
{
    std::vector<PinOverlap> out;
    auto v = vms_.find(vm_id);
    if (v == vms_.end())
        return out;
    auto dv = dma_vaddr_.find(v->second.owner.tgid);
    if (dv == dma_vaddr_.end())
        return out;
    for (const auto& [id, s] : v->second.slots) {
        uint64_t g0 = std::max(first_gfn, s.base_gfn), g1 = std::min(end_gfn, s.base_gfn + s.npages);
        if (g0 >= g1)
            continue;
        uint64_t vp0 = (s.uaddr >> kPageShift) + (g0 - s.base_gfn);
        dv->second.overlaps(vp0, vp0 + (g1 - g0), [&](uint64_t a, uint64_t b, const DmaRun& r) {
            auto owner = dma_owner_.find(r.space);
            out.push_back({r.space, owner == dma_owner_.end() ? Owner{} : owner->second, g0 + (a - vp0), b - a,
                           r.iova_page << kPageShift, r.since_ns, a << kPageShift});
        });
    }
    return out;
}

std::optional<std::pair<uint64_t, uint64_t>> Engine::gfn_of_hva(uint32_t tgid, uint64_t hva) const
{
    for (uint64_t id : alive_) {
        const Vm& v = vms_.at(id);
        if (tgid && v.owner.tgid != tgid)
            continue;
        for (const auto& [sid, s] : v.slots)
            if (hva >= s.uaddr && hva < s.uaddr + (s.npages << kPageShift))
                return std::pair{id, s.base_gfn + ((hva - s.uaddr) >> kPageShift)};
    }
    return std::nullopt;
}

std::optional<std::pair<uint64_t, uint64_t>> Engine::gfn_of_pfn(uint64_t pfn) const
{
    uint64_t start = 0;
    const PfnOwner* o = pfn_owner_.find(pfn, &start);
    if (!o)
        return std::nullopt;
    uint64_t index = o->index + (pfn - start);
    std::optional<std::pair<uint64_t, uint64_t>> out;
    gfns_of_index(o->ino, index, index + 1, [&](uint64_t id, const Memslot&, uint64_t g0, uint64_t) {
        out = std::pair{id, g0};
    });
    return out;
}

std::optional<std::pair<uint64_t, uint64_t>> Engine::gfn_of_iova(uint64_t iova) const
{
    for (const auto& [space, m] : dma_iova_) {
        uint64_t start = 0;
        if (const VaddrRun* r = m.find(iova >> kPageShift, &start))
            return gfn_of_hva(space.tgid, (r->vaddr_page + ((iova >> kPageShift) - start)) << kPageShift);
    }
    return std::nullopt;
}

std::string Engine::describe(const Failure& f) const
{
    double at = f.ts_ns >= t0_ns_ ? double(f.ts_ns - t0_ns_) / 1e9 : 0;
    std::string vm_s = f.vm ? fmt::format(" on VM {}", vm_name(f.vm)) : "";
    std::string what = !f.what.empty()         ? f.what + vm_s
                       : f.end_gfn > f.first_gfn ? fmt::format("{} of gfn [{:#x}, {:#x}){}", f.to_private ? "shared->private" : "private->shared",
                                         f.first_gfn, f.end_gfn, vm_s)
                           : fmt::format("{}{}", f.op, vm_s);
    std::string out = fmt::format("{:.6f} s: {} by {}/{} ({}) failed {} ({})", at, what, f.caller.comm, f.caller.tgid,
                                  f.op, f.ret, errno_name(f.ret));
    if (f.error_gfn)
        out += fmt::format(" at gfn {:#x}", *f.error_gfn);
    if (f.pins.empty()) {
        if (f.end_gfn > f.first_gfn)
            out += ": no DMA mapping or pin known to gmemscope overlaps it (those made before tracing began are "
                   "not seen)";
        if (f.ret == -ENOTTY)
            out += "; ENOTTY: this kernel has no such ioctl";
        return out;
    }
    for (const auto& p : f.pins) {
        double since = p.since_ns >= t0_ns_ ? double(p.since_ns - t0_ns_) / 1e9 : 0;
        out += fmt::format(": {} pages (gfn [{:#x}, {:#x})) pinned by {} (pid {} {}) since {:.3f} s, iova {:#x}", p.pages,
                           p.first_gfn, p.first_gfn + p.pages, to_string(p.space), p.owner.tgid, p.owner.comm, since,
                           p.iova);
    }
    return out;
}

std::string Engine::describe(const PinOverlap& p) const
{
    double since = p.since_ns >= t0_ns_ ? double(p.since_ns - t0_ns_) / 1e9 : 0;
    return fmt::format("{} pages (gfn [{:#x}, {:#x}), vaddr {:#x}) mapped at iova {:#x} by {} (pid {} {}) since {:.6f} s",
                       p.pages, p.first_gfn, p.first_gfn + p.pages, p.vaddr, p.iova, to_string(p.space), p.owner.tgid,
                       p.owner.comm, since);
}

std::string Engine::describe(const Exposure& x) const
{
    double at = x.ts_ns >= t0_ns_ ? double(x.ts_ns - t0_ns_) / 1e9 : 0;
    std::string out = fmt::format("{:.6f} s: gfn [{:#x}, {:#x}) of VM {} made private by {}/{} ({}) while a device "
                                  "can still reach its shared backing:",
                                  at, x.first_gfn, x.end_gfn, vm_name(x.vm), x.caller.comm, x.caller.tgid, x.op);
    for (const auto& p : x.pins)
        out += " " + describe(p) + ";";
    out.back() = '.';
    return out;
}

std::string Engine::describe(const DmaBuf& d) const
{
    auto at = [&](uint64_t ns) { return ns >= t0_ns_ ? double(ns - t0_ns_) / 1e9 : 0.0; };
    std::string out = fmt::format("dma-buf ino {} ({}", d.ino, d.exporter.empty() ? "exporter unseen" : d.exporter);
    if (d.size_bytes)
        out += fmt::format(", {} KiB", d.size_bytes >> 10);
    out += fmt::format("): exported by {}/{}", d.owner.comm, d.owner.tgid);
    if (d.fd >= 0)
        out += fmt::format(" as fd {}", d.fd);
    out += fmt::format(" at {:.6f} s", at(d.exported_ns));
    if (d.region)
        out += fmt::format(", BAR{} [{:#x}, {:#x}){}", *d.region, d.offset, d.offset + d.length,
                           d.nr_ranges > 1 ? fmt::format(" and {} more ranges", d.nr_ranges - 1) : "");
    if (d.device)
        out += fmt::format(", device {:#x}", d.device);
    for (const auto& m : d.moves)
        out += fmt::format("; {} at {:.6f} s", m.revoked ? "revoked" : "restored", at(m.ts_ns));
    if (!d.notified_ns.empty())
        out += fmt::format("; importers told to drop their mappings {}x", d.notified_ns.size());
    for (const auto& i : d.imports)
        out += fmt::format("; mapped into an iommufd IOAS at iova {:#x} at {:.6f} s{}", i.iova, at(i.ts_ns),
                           i.ret < 0 ? fmt::format(" (failed {})", errno_name(i.ret)) : "");
    return out;
}

std::vector<TimelineEntry> Engine::timeline(const DmaBuf& d) const
{
    std::vector<TimelineEntry> out;
    std::string what = fmt::format("exported by {}/{}", d.owner.comm, d.owner.tgid);
    if (d.fd >= 0)
        what += fmt::format(" as fd {}", d.fd);
    if (d.region)
        what += fmt::format(": BAR{} [{:#x}, {:#x}), {} range{}", *d.region, d.offset, d.offset + d.length,
                            d.nr_ranges, d.nr_ranges == 1 ? "" : "s");
    if (d.size_bytes)
        what += fmt::format(", {} bytes", d.size_bytes);
    if (d.device)
        what += fmt::format(", device {:#x}", d.device);
    out.push_back({d.exported_ns, what});
    for (const auto& i : d.imports)
        out.push_back({i.ts_ns, fmt::format("mapped into an iommufd IOAS by {}/{}: iova {:#x}, {} bytes from offset "
                                            "{:#x}{}",
                                            i.by.comm, i.by.tgid, i.iova, i.length, i.offset,
                                            i.ret < 0 ? fmt::format(": failed {} ({})", i.ret, errno_name(i.ret))
                                                      : "")});
    for (const auto& m : d.moves)
        out.push_back({m.ts_ns, m.revoked ? "revoked: the device's MMIO is gone (memory decode cleared, or a reset)"
                                          : "restored: the device's MMIO is back"});
    for (uint64_t ns : d.notified_ns)
        out.push_back({ns, "importers told to drop their mappings (dmabuf.move_notify)"});
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.ts_ns < b.ts_ns; });
    return out;
}

size_t Engine::segments() const
{
    size_t n = pfn_owner_.segments();
    for (const auto& [id, v] : vms_)
        n += v.attrs.segments() + v.story.segments() + v.slots.size();
    for (const auto& [ino, g] : gmem_)
        n += g.resident.segments();
    for (const auto& [s, m] : dma_iova_)
        n += m.segments();
    for (const auto& [t, m] : dma_vaddr_)
        n += m.segments();
    return n;
}

}  // namespace gms
