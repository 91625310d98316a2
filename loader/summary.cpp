#include "loader/summary.hpp"

#include <fmt/format.h>

namespace gms {
namespace {

constexpr uint64_t kPageShift = 12;

std::string comm_of(const gms_hdr& h) { return std::string(h.comm, strnlen(h.comm, sizeof(h.comm))); }

}  // namespace

VmSummary& Summary::vm(uint64_t id, const gms_hdr& h)
{
    auto [it, fresh] = vms_.try_emplace(id);
    if (fresh) {
        it->second.tgid = h.tgid;
        it->second.comm = comm_of(h);
    }
    return it->second;
}

const Binding* Summary::binding_of(const VmSummary& v, uint64_t ino, uint64_t index) const
{
    for (const auto& b : v.bindings)
        if (!b.unbound_ns && b.gmem_ino == ino && index >= b.gmem_pgoff && index < b.gmem_pgoff + b.pages)
            return &b;
    return nullptr;
}

void Summary::on_ioctl(const gms_ioctl_event& e)
{
    if (e.ret < 0) {
        nlohmann::json f = gms::to_json(Event{e});
        failures_.push_back(f);
    }
    if (e.op == GMS_IOC_CREATE_VM && e.ret >= 0 && e.args.create_vm.vm)
        vm(e.args.create_vm.vm, e.hdr);
    if (e.op == GMS_IOC_CREATE_GUEST_MEMFD && e.ret >= 0 && e.vm)
        gmem_owner_[e.args.create_gmem.ino] = e.vm;
    if ((e.op != GMS_IOC_SET_MEMORY_REGION && e.op != GMS_IOC_SET_MEMORY_REGION2) || e.ret < 0 || !e.vm)
        return;
    VmSummary& v = vm(e.vm, e.hdr);
    const auto& r = e.args.region;
    // KVM deletes a slot (size 0) or replaces it: the old binding ends.
    for (auto& b : v.bindings)
        if (b.slot == r.slot && !b.unbound_ns)
            b.unbound_ns = e.hdr.ts_ns;
    if (r.size == 0)
        return;
    v.bindings.push_back({r.slot, r.gpa >> kPageShift, r.size >> kPageShift, r.gmem_ino,
                          r.gmem_offset >> kPageShift, e.hdr.ts_ns, 0});
    if (r.gmem_ino)
        gmem_owner_[r.gmem_ino] = e.vm;
}

void Summary::on_pagecache(const gms_pagecache_event& e)
{
    uint64_t id = e.vm;
    if (!id) {
        auto it = gmem_owner_.find(e.ino);
        if (it == gmem_owner_.end())
            return;
        id = it->second;
    }
    VmSummary& v = vm(id, e.hdr);
    const Binding* b = binding_of(v, e.ino, e.index);
    if (!b) {
        if (e.hdr.type == GMS_EV_PAGECACHE_DEL)
            v.unbound_deletes++;
        return;
    }
    PageState& p = v.pages[b->base_gfn + e.index - b->gmem_pgoff];
    p.gmem_ino = e.ino;
    p.gmem_index = e.index;
    p.pfn = e.pfn;
    if (e.hdr.type == GMS_EV_PAGECACHE_ADD) {
        p.resident = true;
    } else {
        p.resident = false;
        p.punches++;
    }
}

void Summary::add(const Event& ev)
{
    const gms_hdr& h = ev.hdr();
    if (h.type == GMS_REC_DROPS) {
        counters_ = std::get<gms_drops_record>(ev.rec);
        have_counters_ = true;
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
            } else if constexpr (std::is_same_v<T, gms_pagecache_event>) {
                on_pagecache(r);
            } else if constexpr (std::is_same_v<T, gms_fault_event>) {
                if (!r.vm)
                    return;
                PageState& p = vm(r.vm, r.hdr).pages[r.gfn];
                p.faults++;
                p.pfn = r.pfn;
                if (r.gmem_ino) {
                    p.gmem_ino = r.gmem_ino;
                    p.gmem_index = r.gmem_index;
                    gmem_owner_[r.gmem_ino] = r.vm;
                }
                // The page-cache add folded into the fault (bpf/gmem.bpf.c).
                if (r.hdr.flags & GMS_FAULT_ALLOCATED)
                    p.resident = true;
            } else if constexpr (std::is_same_v<T, gms_gmem_close_event>) {
                if (r.vm)
                    vm(r.vm, r.hdr).gmem_closed_ns[r.gmem_ino] = r.hdr.ts_ns;
            }
        },
        ev.rec);
}

namespace {

struct Range {
    uint64_t first_gfn, pages;
    PageState first;
};

// Consecutive gfns whose story is the same, with gmem indexes that
// continue, make one range.
std::vector<Range> coalesce(const std::map<uint64_t, PageState>& pages)
{
    std::vector<Range> out;
    for (const auto& [gfn, p] : pages) {
        if (!out.empty()) {
            Range& r = out.back();
            const PageState& f = r.first;
            bool same = gfn == r.first_gfn + r.pages && p.faults == f.faults && p.punches == f.punches &&
                        p.resident == f.resident && p.gmem_ino == f.gmem_ino &&
                        (!p.gmem_ino || p.gmem_index == f.gmem_index + r.pages);
            if (same) {
                r.pages++;
                continue;
            }
        }
        out.push_back({gfn, 1, p});
    }
    return out;
}

std::string state_of(const PageState& p)
{
    if (!p.gmem_ino)
        return "not gmem";
    return p.resident ? "resident" : p.punches ? "punched" : "not resident";
}

}  // namespace

nlohmann::json Summary::to_json() const
{
    nlohmann::json counts = nlohmann::json::object();
    for (const auto& [t, n] : counts_)
        counts[std::string(event_name(t))] = n;
    nlohmann::json vms = nlohmann::json::array();
    for (const auto& [id, v] : vms_) {
        nlohmann::json slots = nlohmann::json::array();
        for (const auto& b : v.bindings) {
            nlohmann::json s = {{"slot", b.slot}, {"base_gfn", fmt::format("{:#x}", b.base_gfn)},
                                {"pages", b.pages}, {"bound_ns", b.bound_ns}};
            if (b.gmem_ino) {
                s["gmem_ino"] = b.gmem_ino;
                s["gmem_pgoff"] = b.gmem_pgoff;
            }
            if (b.unbound_ns)
                s["unbound_ns"] = b.unbound_ns;
            slots.push_back(s);
        }
        nlohmann::json ranges = nlohmann::json::array();
        for (const auto& r : coalesce(v.pages)) {
            nlohmann::json j = {{"first_gfn", fmt::format("{:#x}", r.first_gfn)}, {"pages", r.pages},
                                {"faults", r.first.faults}, {"punches", r.first.punches},
                                {"state", state_of(r.first)}};
            if (r.first.gmem_ino) {
                j["gmem_ino"] = r.first.gmem_ino;
                j["first_gmem_index"] = r.first.gmem_index;
            }
            ranges.push_back(j);
        }
        vms.push_back({{"vm", fmt::format("{:#x}", id)}, {"tgid", v.tgid}, {"comm", v.comm},
                       {"memslots", slots}, {"gfn_ranges", ranges},
                       {"unbound_pagecache_deletes", v.unbound_deletes}});
    }
    nlohmann::json j = {{"type", "summary"}, {"events", counts}, {"vms", vms}, {"failures", failures_}};
    if (have_counters_) {
        nlohmann::json dropped = nlohmann::json::object();
        for (uint32_t c = 0; c < GMS_DROP_MAX; c++)
            dropped[std::string(drop_cause_name(c))] = counters_.dropped[c];
        j["dropped"] = dropped;
        j["received"] = counters_.received;
    }
    return j;
}

std::string Summary::to_text() const
{
    std::string out;
    uint64_t total = 0;
    for (const auto& [t, n] : counts_)
        total += n;
    out += fmt::format("{} events:", total);
    for (const auto& [t, n] : counts_)
        out += fmt::format(" {} {}", event_name(t), n);
    out += "\n";
    if (have_counters_) {
        uint64_t lost = 0;
        for (auto d : counters_.dropped)
            lost += d;
        out += fmt::format("lost: {}", lost);
        for (uint32_t c = 0; c < GMS_DROP_MAX; c++)
            out += fmt::format("  {} {}", drop_cause_name(c), counters_.dropped[c]);
        out += "\n";
    } else {
        out += "lost: unknown (no counters record)\n";
    }
    auto secs = [this](uint64_t ns) { return ns >= t0_ns_ ? double(ns - t0_ns_) / 1e9 : 0.0; };
    for (const auto& [id, v] : vms_) {
        out += fmt::format("\nVM {:#x}  (pid {} {})\n", id, v.tgid, v.comm);
        for (const auto& b : v.bindings) {
            std::string gmem = b.gmem_ino ? fmt::format("gmem ino {} pgoff {:#x}", b.gmem_ino, b.gmem_pgoff)
                                          : std::string("anonymous memory");
            std::string until = b.unbound_ns ? fmt::format(", deleted at {:.6f}s", secs(b.unbound_ns)) : "";
            out += fmt::format("  slot {:<3} gfn [{:#x}, {:#x}) {:>6} pages -> {}  bound at {:.6f}s{}\n", b.slot,
                               b.base_gfn, b.base_gfn + b.pages, b.pages, gmem, secs(b.bound_ns), until);
        }
        for (const auto& r : coalesce(v.pages)) {
            std::string where = r.first.gmem_ino
                                    ? fmt::format("gmem ino {} index [{:#x}, {:#x})", r.first.gmem_ino,
                                                  r.first.gmem_index, r.first.gmem_index + r.pages)
                                    : std::string("anonymous memory");
            out += fmt::format("  gfn [{:#x}, {:#x}) {:>6} pages  {:<34} faulted {}x  punched {}x  now {}\n",
                               r.first_gfn, r.first_gfn + r.pages, r.pages, where, r.first.faults,
                               r.first.punches, state_of(r.first));
        }
        for (const auto& [ino, ns] : v.gmem_closed_ns)
            out += fmt::format("  gmem ino {} closed at {:.6f}s\n", ino, secs(ns));
        if (v.unbound_deletes)
            out += fmt::format("  {} page-cache deletes of gmem pages bound to no memslot "
                               "(after a memslot delete or at close)\n",
                               v.unbound_deletes);
    }
    if (!failures_.empty()) {
        out += "\nfailed calls:\n";
        for (const auto& f : failures_)
            out += fmt::format("  {} on {} fd {} = {} ({})\n", f["ioctl"].get<std::string>(),
                               f["fd_kind"].get<std::string>(), f["fd"].get<uint32_t>(), f["ret"].get<int64_t>(),
                               f["errno"].get<std::string>());
    }
    return out;
}

}  // namespace gms
