#include "loader/report/report.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace gms {
namespace {

struct Range {
    uint64_t first_gfn, pages;
    PageStory story;
    const Memslot* slot;   // the binding that covers it now, or last did
    bool resident;         // its gmem page is in the page cache now
};

const Memslot* slot_of(const Vm& v, uint64_t gfn)
{
    for (const auto& [id, s] : v.slots)
        if (gfn >= s.base_gfn && gfn < s.base_gfn + s.npages)
            return &s;
    for (auto it = v.past_slots.rbegin(); it != v.past_slots.rend(); ++it)
        if (gfn >= it->base_gfn && gfn < it->base_gfn + it->npages)
            return &*it;
    return nullptr;
}

// The story's ranges, split where the covering binding changes and where
// the gmem pages behind them are resident or not.
std::vector<Range> ranges_of(const Engine& engine, const Vm& v)
{
    std::vector<Range> out;
    v.story.for_each([&](uint64_t s, uint64_t e, const PageStory& st) {
        for (uint64_t g = s; g < e;) {
            const Memslot* slot = slot_of(v, g);
            uint64_t end = e;
            if (slot)
                end = std::min(end, slot->base_gfn + slot->npages);
            else
                for (const auto& [id, m] : v.slots)
                    if (m.base_gfn > g)
                        end = std::min(end, m.base_gfn);
            auto gmem = slot && slot->gmem_ino ? engine.gmem_files().find(slot->gmem_ino) : engine.gmem_files().end();
            if (gmem == engine.gmem_files().end()) {
                out.push_back({g, end - g, st, slot, false});
                g = end;
                continue;
            }
            uint64_t idx0 = g - slot->base_gfn + slot->gmem_pgoff, idx1 = idx0 + (end - g);
            uint64_t at = idx0;
            auto emit = [&](uint64_t i0, uint64_t i1, bool resident) {
                if (i0 < i1)
                    out.push_back({g + (i0 - idx0), i1 - i0, st, slot, resident});
            };
            gmem->second.resident.overlaps(idx0, idx1, [&](uint64_t i0, uint64_t i1, const PfnRun&) {
                emit(at, i0, false);
                emit(i0, i1, true);
                at = i1;
            });
            emit(at, idx1, false);
            g = end;
        }
    });
    // Neighbours that ended up alike are one range.
    std::vector<Range> merged;
    for (const auto& r : out) {
        if (!merged.empty()) {
            Range& m = merged.back();
            if (m.first_gfn + m.pages == r.first_gfn && m.story == r.story && m.slot == r.slot &&
                m.resident == r.resident) {
                m.pages += r.pages;
                continue;
            }
        }
        merged.push_back(r);
    }
    return merged;
}

// gmem files by their VM's key, each in inode order: one pass over the
// files rather than one per VM.
std::map<uint64_t, std::vector<const GmemFile*>> gmem_by_vm(const Engine& engine)
{
    std::map<uint64_t, std::vector<const GmemFile*>> out;
    for (const auto& [ino, g] : engine.gmem_files())
        out[g.vm].push_back(&g);
    return out;
}

std::string state_of(const Range& r)
{
    if (!r.slot || !r.slot->gmem_ino)
        return "not gmem";
    return r.resident ? "resident" : "not resident";
}

uint64_t peak_rate(const StormStats& st)
{
    uint64_t peak = 0;
    for (const auto& [sec, n] : st.per_second)
        peak = std::max(peak, n);
    return peak;
}

double seconds(const StormStats& st) { return st.last_ns > st.first_ns ? double(st.last_ns - st.first_ns) / 1e9 : 0; }

template <typename M>
auto top(const M& m, size_t n)
{
    std::vector<std::pair<typename M::key_type, uint64_t>> v;
    for (const auto& [k, c] : m) {
        if constexpr (std::is_same_v<std::decay_t<decltype(c)>, uint64_t>)
            v.emplace_back(k, c);
        else
            v.emplace_back(k, c.second);
    }
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (v.size() > n)
        v.resize(n);
    return v;
}

nlohmann::json hist_json(const Log2Hist& h)
{
    nlohmann::json j = nlohmann::json::array();
    for (size_t b = 0; b < h.buckets.size(); b++)
        if (h.buckets[b])
            j.push_back({{"low", u64_json(b ? 1ull << (b - 1) : 0)}, {"count", u64_json(h.buckets[b])}});
    return j;
}

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

nlohmann::json gmem_json(const GmemFile& g)
{
    uint64_t resident = 0;
    g.resident.for_each([&](uint64_t s, uint64_t e, const PfnRun&) { resident += e - s; });
    nlohmann::json j = {{"gmem_ino", u64_json(g.ino)}, {"resident_pages", u64_json(resident)},
                        {"pfn_runs", g.resident.segments()}};
    if (g.size_bytes) {
        j["size_bytes"] = u64_json(g.size_bytes);
        j["flags"] = u64_json(g.flags);
    }
    if (g.owner.tgid) {
        j["tgid"] = g.owner.tgid;
        j["comm"] = g.owner.comm;
    }
    if (g.created_ns)
        j["created_ns"] = u64_json(g.created_ns);
    if (g.closed_ns)
        j["closed_ns"] = u64_json(g.closed_ns);
    return j;
}

nlohmann::json storm_json(const StormStats& s)
{
    nlohmann::json procs = nlohmann::json::array(), hot = nlohmann::json::array();
    for (const auto& [tgid, n] : top(s.by_tgid, 10))
        procs.push_back({{"tgid", tgid}, {"comm", s.by_tgid.at(tgid).first}, {"punches", n}});
    for (const auto& [key, n] : top(s.by_range, 10))
        hot.push_back({{"gmem_ino", u64_json(key.first)}, {"offset", u64_json(key.second << 21)}, {"punches", n}});
    return {{"punches", u64_json(s.punches)},
            {"punched_bytes", u64_json(s.punched_bytes)},
            {"allocations", u64_json(s.allocations)},
            {"allocated_bytes", u64_json(s.allocated_bytes)},
            {"failed_fallocates", u64_json(s.failed_fallocates)},
            {"invalidated_pages", u64_json(s.invalidated_pages)},
            {"faults", u64_json(s.faults)},
            {"seconds", seconds(s)},
            {"peak_per_s", peak_rate(s)},
            {"punch_bytes_hist", hist_json(s.range_bytes)},
            {"punch_latency_ns_hist", hist_json(s.latency_ns)},
            {"top_processes", procs},
            {"top_ranges", hot}};
}

}  // namespace

std::string storm_text(const Engine& engine, uint64_t vm, const StormStats& st)
{
    std::string out;
    double secs = seconds(st);
    out += fmt::format("  invalidations: {} punch-holes ({} KiB), {} gmem pages removed, {} faults; over {:.3f} s: "
                       "mean {:.0f}/s, peak {}/s in one second\n",
                       st.punches, st.punched_bytes >> 10, st.invalidated_pages, st.faults, secs,
                       secs > 0 ? double(st.punches) / secs : 0.0, peak_rate(st));
    if (st.allocations || st.failed_fallocates)
        out += fmt::format("  other fallocate calls: {} allocations ({} KiB), {} failed (in failed calls below)\n",
                           st.allocations, st.allocated_bytes >> 10, st.failed_fallocates);
    if (st.punches) {
        out += "  @punch_bytes:\n" + render_hist(st.range_bytes, "");
        out += "  @punch_latency_ns:\n" + render_hist(st.latency_ns, "");
        out += "  top processes:";
        for (const auto& [tgid, n] : top(st.by_tgid, 5))
            out += fmt::format("  {}/{} {}", st.by_tgid.at(tgid).first, tgid, n);
        out += "\n  top ranges:";
        for (const auto& [key, n] : top(st.by_range, 5))
            out += fmt::format("  gmem ino {} [{:#x}, +2M) {}", key.first, key.second << 21, n);
        out += "\n";
    }
    (void)engine;
    (void)vm;
    return out;
}

std::string report_text(const Engine& engine)
{
    std::string out;
    uint64_t total = 0;
    for (const auto& [t, n] : engine.event_counts())
        total += n;
    out += fmt::format("{} events:", total);
    for (const auto& [t, n] : engine.event_counts())
        out += fmt::format(" {} {}", event_name(t), n);
    out += "\n";
    if (const auto& c = engine.counters()) {
        uint64_t lost = 0;
        for (auto d : c->dropped)
            lost += d;
        out += fmt::format("lost: {}", lost);
        for (uint32_t i = 0; i < GMS_DROP_MAX; i++)
            out += fmt::format("  {} {}", drop_cause_name(i), c->dropped[i]);
        out += "\n";
    } else {
        out += "lost: unknown (no counters record)\n";
    }
    uint64_t t0 = engine.t0_ns();
    auto at = [t0](uint64_t ns) { return ns >= t0 ? double(ns - t0) / 1e9 : 0.0; };
    const auto gmem_of = gmem_by_vm(engine);
    for (const auto& [id, v] : engine.vms()) {
        out += fmt::format("\nVM {}  (pid {} {}{})\n", engine.vm_name(id), v.owner.tgid, v.owner.comm,
                           v.fd >= 0 ? fmt::format(", vm fd {}", v.fd) : "");
        out += fmt::format("  lifetime: {} - {}\n",
                           v.created_ns ? fmt::format("created at {:.6f} s", at(v.created_ns))
                                        : std::string("created before tracing began"),
                           v.ended_ns ? fmt::format("ended at {:.6f} s ({})", at(v.ended_ns), v.end)
                                      : std::string("not seen to end"));
        auto slot_line = [&](const Memslot& s, bool bound) {
            std::string mem = s.gmem_ino ? fmt::format("gmem ino {} index [{:#x}, {:#x})", s.gmem_ino, s.gmem_pgoff,
                                                       s.gmem_pgoff + s.npages)
                                         : fmt::format("hva {:#x}", s.uaddr);
            out += fmt::format("  slot {:<3} gfn [{:#x}, {:#x}) {:>7} pages -> {}  bound at {:.6f} s{}\n", s.slot,
                               s.base_gfn, s.base_gfn + s.npages, s.npages, mem, at(s.since_ns),
                               bound ? "" : " (deleted since)");
        };
        std::vector<std::pair<const Memslot*, bool>> all;
        for (const auto& s : v.past_slots)
            all.emplace_back(&s, false);
        for (const auto& [sid, s] : v.slots)
            all.emplace_back(&s, true);
        std::stable_sort(all.begin(), all.end(), [](auto a, auto b) { return a.first->since_ns < b.first->since_ns; });
        for (auto [s, bound] : all)
            slot_line(*s, bound);
        for (const auto& r : ranges_of(engine, v)) {
            std::string where = "anonymous memory";
            if (r.slot && r.slot->gmem_ino) {
                uint64_t idx = r.first_gfn - r.slot->base_gfn + r.slot->gmem_pgoff;
                where = fmt::format("gmem ino {} index [{:#x}, {:#x})", r.slot->gmem_ino, idx, idx + r.pages);
            }
            out += fmt::format("  gfn [{:#x}, {:#x}) {:>7} pages  {:<38} faulted {}x  invalidated {}x  now {}\n",
                               r.first_gfn, r.first_gfn + r.pages, r.pages, where, r.story.faults, r.story.punches,
                               state_of(r));
        }
        v.attrs.for_each([&](uint64_t s, uint64_t e, uint64_t a) {
            out += fmt::format("  gfn [{:#x}, {:#x}) attributes {:#x}{}\n", s, e, a, a & GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE ? " (private)" : "");
        });
        if (auto files = gmem_of.find(id); files != gmem_of.end())
            for (const GmemFile* g : files->second) {
                uint64_t resident = 0;
                g->resident.for_each([&](uint64_t s, uint64_t e, const PfnRun&) { resident += e - s; });
                out += fmt::format("  gmem ino {}: {} pages resident in {} pfn runs{}{}\n", g->ino, resident,
                                   g->resident.segments(),
                                   g->size_bytes ? fmt::format(", size {} KiB, flags {:#x}", g->size_bytes >> 10, g->flags)
                                                 : "",
                                   g->closed_ns ? fmt::format(", fd closed at {:.6f} s", at(g->closed_ns)) : "");
            }
        auto st = engine.storms().find(id);
        if (st != engine.storms().end() &&
            (st->second.punches || st->second.allocations || st->second.failed_fallocates))
            out += storm_text(engine, id, st->second);
    }
    // fallocate() on gmem files whose VM is not known
    if (auto st = engine.storms().find(0); st != engine.storms().end() &&
                                           (st->second.punches || st->second.allocations || st->second.failed_fallocates)) {
        out += "\ngmem files of no known VM\n";
        out += storm_text(engine, 0, st->second);
    }
    if (!engine.failure_groups().empty()) {
        out += "\nfailed calls, by call and errno:\n";
        for (const auto& [key, g] : engine.failure_groups())
            out += fmt::format("  {:<28} {:<12} {:>8}x  {:.6f} s - {:.6f} s, first: {}\n", key.first,
                               errno_name(key.second), g.count, at(g.first_ns), at(g.last_ns), g.example);
    }
    if (!engine.failures().empty()) {
        out += "\nfailed conversions and DMA calls:\n";
        for (const auto& f : engine.failures())
            out += "  " + engine.describe(f) + "\n";
    }
    if (!engine.exposures().empty()) {
        out += "\nCRITICAL: made private while a device can still reach the shared backing:\n";
        for (const auto& x : engine.exposures())
            out += "  " + engine.describe(x) + "\n";
    }
    if (!engine.dma_bufs().empty()) {
        out += "\ndma-bufs:\n";
        for (const auto& [ino, d] : engine.dma_bufs())
            out += "  " + engine.describe(d) + "\n";
    }
    return out;
}

nlohmann::json pins_json(const std::vector<PinOverlap>& pins)
{
    nlohmann::json a = nlohmann::json::array();
    for (const auto& p : pins)
        a.push_back({{"by", to_string(p.space)}, {"tgid", p.owner.tgid}, {"comm", p.owner.comm},
                     {"first_gfn", hex(p.first_gfn)}, {"pages", p.pages}, {"iova", hex(p.iova)},
                     {"vaddr", hex(p.vaddr)}, {"since_ns", p.since_ns}});
    return a;
}

nlohmann::json exposure_json(const Engine& engine, const Exposure& x)
{
    const Vm& v = engine.vms().at(x.vm);
    return {{"ts_ns", u64_json(x.ts_ns)}, {"vm", hex(v.id)}, {"vm_lifetime", v.lifetime}, {"call", x.op},
            {"tgid", x.caller.tgid}, {"comm", x.caller.comm}, {"first_gfn", hex(x.first_gfn)},
            {"end_gfn", hex(x.end_gfn)}, {"mappings", pins_json(x.pins)}, {"text", engine.describe(x)}};
}

nlohmann::json dma_buf_json(const Engine& engine, const DmaBuf& d)
{
    using nlohmann::json;
    json moves = json::array(), imports = json::array();
    for (const auto& m : d.moves)
        moves.push_back({{"ts_ns", u64_json(m.ts_ns)}, {"revoked", m.revoked}});
    for (const auto& i : d.imports)
        imports.push_back({{"ts_ns", u64_json(i.ts_ns)}, {"tgid", i.by.tgid}, {"comm", i.by.comm},
                           {"iova", hex(i.iova)}, {"offset", u64_json(i.offset)},
                           {"length_bytes", u64_json(i.length)}, {"ret", i.ret}});
    json j = {{"ino", u64_json(d.ino)}, {"exporter", d.exporter}, {"tgid", d.owner.tgid}, {"comm", d.owner.comm},
              {"exported_ns", u64_json(d.exported_ns)}, {"moves", moves},
              {"move_notifies", u64_json(d.notified_ns.size())}, {"imports", imports}, {"text", engine.describe(d)}};
    if (d.fd >= 0)
        j["fd"] = d.fd;
    if (d.size_bytes)
        j["size_bytes"] = u64_json(d.size_bytes);
    if (d.device)
        j["device"] = hex(d.device);
    if (d.region) {
        j["region"] = *d.region;
        j["offset"] = u64_json(d.offset);
        j["length_bytes"] = u64_json(d.length);
        j["nr_ranges"] = d.nr_ranges;
    }
    return j;
}

nlohmann::json report_json(const Engine& engine)
{
    using nlohmann::json;
    json counts = json::object();
    for (const auto& [t, n] : engine.event_counts())
        counts[std::string(event_name(t))] = n;
    json vms = json::array();
    const auto gmem_of = gmem_by_vm(engine);
    for (const auto& [id, v] : engine.vms()) {
        json slots = json::array();
        auto slot_json = [&](const Memslot& s, bool bound) {
            json j = {{"slot", s.slot}, {"base_gfn", hex(s.base_gfn)}, {"pages", u64_json(s.npages)},
                      {"bound_ns", u64_json(s.since_ns)}, {"uaddr", hex(s.uaddr)}, {"bound", bound},
                      {"flags", s.flags}};
            if (s.gmem_ino) {
                j["gmem_ino"] = u64_json(s.gmem_ino);
                j["gmem_pgoff"] = u64_json(s.gmem_pgoff);
            }
            slots.push_back(j);
        };
        for (const auto& s : v.past_slots)
            slot_json(s, false);
        for (const auto& [sid, s] : v.slots)
            slot_json(s, true);
        json ranges = json::array();
        for (const auto& r : ranges_of(engine, v)) {
            json j = {{"first_gfn", hex(r.first_gfn)}, {"pages", u64_json(r.pages)}, {"faults", r.story.faults},
                      {"invalidations", r.story.punches}, {"state", state_of(r)}};
            if (r.slot && r.slot->gmem_ino) {
                j["gmem_ino"] = u64_json(r.slot->gmem_ino);
                j["first_gmem_index"] = u64_json(r.first_gfn - r.slot->base_gfn + r.slot->gmem_pgoff);
            }
            ranges.push_back(j);
        }
        json attrs = json::array();
        v.attrs.for_each([&](uint64_t s, uint64_t e, uint64_t a) {
            attrs.push_back({{"first_gfn", hex(s)}, {"pages", u64_json(e - s)}, {"attributes", u64_json(a)}});
        });
        json gmem = json::array();
        if (auto files = gmem_of.find(id); files != gmem_of.end())
            for (const GmemFile* g : files->second)
                gmem.push_back(gmem_json(*g));
        json j = {{"vm", hex(v.id)}, {"lifetime", v.lifetime}, {"tgid", v.owner.tgid}, {"comm", v.owner.comm},
                  {"memslots", slots}, {"gfn_ranges", ranges}, {"attributes", attrs}, {"gmem_files", gmem}};
        if (v.fd >= 0)
            j["vm_fd"] = v.fd;
        if (v.created_ns)
            j["created_ns"] = u64_json(v.created_ns);
        if (v.ended_ns) {
            j["ended_ns"] = u64_json(v.ended_ns);
            j["end"] = v.end;
        }
        if (auto st = engine.storms().find(id); st != engine.storms().end())
            j["storm"] = storm_json(st->second);
        vms.push_back(j);
    }
    json failures = json::array();
    for (const auto& f : engine.failures()) {
        json pins = pins_json(f.pins);
        json j = {{"ts_ns", u64_json(f.ts_ns)}, {"call", f.op}, {"ret", f.ret}, {"errno", errno_name(f.ret)},
                  {"tgid", f.caller.tgid}, {"comm", f.caller.comm}, {"pins", pins}, {"text", engine.describe(f)}};
        if (auto v = engine.vms().find(f.vm); f.vm && v != engine.vms().end()) {
            j["vm"] = hex(v->second.id);
            j["vm_lifetime"] = v->second.lifetime;
        }
        if (f.end_gfn > f.first_gfn) {
            j["first_gfn"] = hex(f.first_gfn);
            j["end_gfn"] = hex(f.end_gfn);
            j["to"] = f.to_private ? "private" : "shared";
        }
        if (f.error_gfn)
            j["error_gfn"] = hex(*f.error_gfn);
        failures.push_back(j);
    }
    json exposures = json::array();
    for (const auto& x : engine.exposures())
        exposures.push_back(exposure_json(engine, x));
    json dma_bufs = json::array();
    for (const auto& [ino, d] : engine.dma_bufs())
        dma_bufs.push_back(dma_buf_json(engine, d));
    json groups = json::array();
    for (const auto& [key, g] : engine.failure_groups())
        groups.push_back({{"call", key.first}, {"ret", key.second}, {"errno", errno_name(key.second)},
                          {"count", u64_json(g.count)}, {"first_ns", u64_json(g.first_ns)},
                          {"last_ns", u64_json(g.last_ns)}, {"first", g.example}});
    // gmem files of no known VM, and fallocate() on them
    json unknown = json::array();
    for (const auto& [ino, g] : engine.gmem_files())
        if (!g.vm)
            unknown.push_back(gmem_json(g));
    json j = {{"type", "summary"}, {"events", counts}, {"vms", vms}, {"failures", failures},
              {"failed_calls", groups}, {"gmem_files_no_vm", unknown}, {"exposures", exposures},
              {"dma_bufs", dma_bufs}};
    if (auto st = engine.storms().find(0); st != engine.storms().end())
        j["storm_no_vm"] = storm_json(st->second);
    if (const auto& c = engine.counters()) {
        json dropped = json::object();
        for (uint32_t i = 0; i < GMS_DROP_MAX; i++)
            dropped[std::string(drop_cause_name(i))] = c->dropped[i];
        j["dropped"] = dropped;
        j["received"] = c->received;
    }
    return j;
}

}  // namespace gms
