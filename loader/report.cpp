#include "loader/report.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace gms {
namespace {

constexpr uint64_t kPageShift = 12;

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
            j.push_back({{"low", b ? 1ull << (b - 1) : 0}, {"count", h.buckets[b]}});
    return j;
}

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

}  // namespace

std::string storm_text(const Engine& engine, uint64_t vm, const StormStats& st)
{
    std::string out;
    double secs = seconds(st);
    out += fmt::format("  invalidations: {} punch-holes ({} KiB), {} gmem pages removed, {} faults; over {:.3f} s: "
                       "mean {:.0f}/s, peak {}/s in one second\n",
                       st.punches, st.punched_bytes >> 10, st.invalidated_pages, st.faults, secs,
                       secs > 0 ? double(st.punches) / secs : 0.0, peak_rate(st));
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
    for (const auto& [id, v] : engine.vms()) {
        out += fmt::format("\nVM {:x}  (pid {} {}{})\n", id, v.owner.tgid, v.owner.comm,
                           v.fd >= 0 ? fmt::format(", vm fd {}", v.fd) : "");
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
        for (const auto& [ino, g] : engine.gmem_files()) {
            if (g.vm != id)
                continue;
            uint64_t resident = 0;
            g.resident.for_each([&](uint64_t s, uint64_t e, const PfnRun&) { resident += e - s; });
            out += fmt::format("  gmem ino {}: {} pages resident in {} pfn runs{}{}\n", ino, resident,
                               g.resident.segments(),
                               g.size_bytes ? fmt::format(", size {} KiB, flags {:#x}", g.size_bytes >> 10, g.flags) : "",
                               g.closed_ns ? fmt::format(", fd closed at {:.6f} s", at(g.closed_ns)) : "");
        }
        auto st = engine.storms().find(id);
        if (st != engine.storms().end() && st->second.punches)
            out += storm_text(engine, id, st->second);
    }
    if (!engine.failures().empty()) {
        out += "\nfailed calls:\n";
        for (const auto& f : engine.failures())
            out += "  " + engine.describe(f) + "\n";
    }
    return out;
}

nlohmann::json report_json(const Engine& engine)
{
    using nlohmann::json;
    json counts = json::object();
    for (const auto& [t, n] : engine.event_counts())
        counts[std::string(event_name(t))] = n;
    json vms = json::array();
    for (const auto& [id, v] : engine.vms()) {
        json slots = json::array();
        auto slot_json = [&](const Memslot& s, bool bound) {
            json j = {{"slot", s.slot}, {"base_gfn", hex(s.base_gfn)}, {"pages", s.npages},
                      {"bound_ns", s.since_ns}, {"uaddr", hex(s.uaddr)}, {"bound", bound}};
            if (s.gmem_ino) {
                j["gmem_ino"] = s.gmem_ino;
                j["gmem_pgoff"] = s.gmem_pgoff;
            }
            slots.push_back(j);
        };
        for (const auto& s : v.past_slots)
            slot_json(s, false);
        for (const auto& [sid, s] : v.slots)
            slot_json(s, true);
        json ranges = json::array();
        for (const auto& r : ranges_of(engine, v)) {
            json j = {{"first_gfn", hex(r.first_gfn)}, {"pages", r.pages}, {"faults", r.story.faults},
                      {"invalidations", r.story.punches}, {"state", state_of(r)}};
            if (r.slot && r.slot->gmem_ino) {
                j["gmem_ino"] = r.slot->gmem_ino;
                j["first_gmem_index"] = r.first_gfn - r.slot->base_gfn + r.slot->gmem_pgoff;
            }
            ranges.push_back(j);
        }
        json attrs = json::array();
        v.attrs.for_each([&](uint64_t s, uint64_t e, uint64_t a) {
            attrs.push_back({{"first_gfn", hex(s)}, {"pages", e - s}, {"attributes", a}});
        });
        json j = {{"vm", hex(id)}, {"tgid", v.owner.tgid}, {"comm", v.owner.comm}, {"memslots", slots},
                  {"gfn_ranges", ranges}, {"attributes", attrs}};
        auto st = engine.storms().find(id);
        if (st != engine.storms().end()) {
            const StormStats& s = st->second;
            json procs = json::array(), hot = json::array();
            for (const auto& [tgid, n] : top(s.by_tgid, 10))
                procs.push_back({{"tgid", tgid}, {"comm", s.by_tgid.at(tgid).first}, {"punches", n}});
            for (const auto& [key, n] : top(s.by_range, 10))
                hot.push_back({{"gmem_ino", key.first}, {"offset", key.second << 21}, {"punches", n}});
            j["storm"] = {{"punches", s.punches},
                          {"punched_bytes", s.punched_bytes},
                          {"invalidated_pages", s.invalidated_pages},
                          {"faults", s.faults},
                          {"seconds", seconds(s)},
                          {"peak_per_s", peak_rate(s)},
                          {"punch_bytes_hist", hist_json(s.range_bytes)},
                          {"punch_latency_ns_hist", hist_json(s.latency_ns)},
                          {"top_processes", procs},
                          {"top_ranges", hot}};
        }
        vms.push_back(j);
    }
    json failures = json::array();
    for (const auto& f : engine.failures()) {
        json pins = json::array();
        for (const auto& p : f.pins)
            pins.push_back({{"by", to_string(p.space)}, {"tgid", p.owner.tgid}, {"comm", p.owner.comm},
                            {"first_gfn", hex(p.first_gfn)}, {"pages", p.pages}, {"iova", hex(p.iova)},
                            {"since_ns", p.since_ns}});
        json j = {{"ts_ns", f.ts_ns}, {"call", f.op}, {"ret", f.ret}, {"errno", errno_name(f.ret)},
                  {"tgid", f.caller.tgid}, {"comm", f.caller.comm}, {"pins", pins}, {"text", engine.describe(f)}};
        if (f.vm)
            j["vm"] = hex(f.vm);
        if (f.end_gfn > f.first_gfn) {
            j["first_gfn"] = hex(f.first_gfn);
            j["end_gfn"] = hex(f.end_gfn);
            j["to"] = f.to_private ? "private" : "shared";
        }
        if (f.error_gfn)
            j["error_gfn"] = hex(*f.error_gfn);
        failures.push_back(j);
    }
    json j = {{"type", "summary"}, {"events", counts}, {"vms", vms}, {"failures", failures}};
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
