#include "loader/selftest/selftest.hpp"

#include <unistd.h>

#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "loader/events/events.hpp"
#include "loader/capture/tracer.hpp"
#include "loader/workload/workload.hpp"

namespace gms {
namespace {

// Workload steps and the kernel's answer (errno, 0 for success).
using Steps = std::map<std::string, int, std::less<>>;

bool precise(Mech m) { return m == Mech::fentry || m == Mech::fexit; }

std::string read_line(const std::string& path)
{
    std::ifstream in(path);
    std::string s;
    std::getline(in, s);
    return s;
}

// Whether KVM maps guests with two-dimensional paging (EPT/NPT, TDP MMU)
// or shadow paging: they fire different kvmmmu tracepoints.
bool tdp_mmu()
{
    bool two_dim = read_line("/sys/module/kvm_intel/parameters/ept") == "Y" ||
                   read_line("/sys/module/kvm_amd/parameters/npt") == "1" ||
                   read_line("/sys/module/kvm_amd/parameters/npt") == "Y";
    return two_dim && read_line("/sys/module/kvm/parameters/tdp_mmu") == "Y";
}

std::string_view trigger_step(std::string_view hook, bool is_precise)
{
    const Hook* h = find_hook(hook);
    return !h ? "" : is_precise ? h->trigger.precise : h->trigger.portable;
}

// "" if the step ran as the trigger needs, else why not.
std::string unmet(std::string_view spec, const Steps& steps)
{
    if (spec.empty())
        return "the built-in workload has no trigger for it";
    bool tried_only = spec.front() == '?';
    std::string_view name = tried_only ? spec.substr(1) : spec;
    auto it = steps.find(name);
    if (it == steps.end())
        return fmt::format("step {} did not run on this kernel", name);
    if (!tried_only && it->second)
        return fmt::format("step {} failed with {}", name, errno_name(-it->second));
    return "";
}

// Runs the scenarios that serve as triggers, in this process, and names
// their steps for the trigger table.
Steps run_triggers(std::vector<std::string>& lines)
{
    Steps steps;
    bool tdp = tdp_mmu();
    auto add = [&](const std::string& name, int err) {
        auto [it, fresh] = steps.try_emplace(name, err);
        if (!fresh && err == 0)
            it->second = 0;
    };
    auto run = [&](std::string_view name, std::vector<std::string> settings, auto&& on_done) {
        try {
            auto r = workload::run(workload::parse_scenario(name, settings));
            lines.push_back(fmt::format("{}: ran", name));
            on_done(r);
        } catch (const std::exception& e) {
            lines.push_back(fmt::format("{}: not run: {}", name, e.what()));
        }
    };
    // gmem-only memslots: binding, faults served by gmem, punches of resident pages, unbind, close.
    run("rebind", {"pages=8", "punch_pages=2", "rebind_offset=64K"}, [&](const workload::Result&) {
        for (auto s : {"vm_create", "gmem_create", "gmem_bind", "touch", "gmem_fault", "gmem_punch",
                       "gmem_punch_resident", "slot_delete", "gmem_unbind", "gmem_close"})
            add(s, 0);
    });
    run("convert", {"pages=2"}, [&](const workload::Result& r) {
        for (const auto& c : r.conversions)
            add(std::string(workload::to_string(c.kind)), c.error);
    });
    // Device memory: VFIO pins of a memslot's buffer, invalidation, udmabuf.
    run("dma", {"pages=16"}, [&](const workload::Result& r) {
        for (const auto& s : r.steps) {
            add(s.name, s.error);
            lines.push_back(fmt::format("  {}: {}{}", s.name, s.error ? errno_name(-s.error) : "ok",
                                        s.detail.empty() ? "" : " (" + s.detail + ")"));
        }
    });
    // Private memory (KVM_X86_SW_PROTECTED_VM): conversions KVM performs,
    // iommufd, a memory failure on gmem. Kernels without type-1 VMs say so.
    run("private", {"pages=16", "private_pages=4", "punch_pages=1"}, [&](const workload::Result& r) {
        for (const auto& s : r.steps)
            add(s.name, s.error);
        for (const auto& c : r.conversions)
            add(std::string(workload::to_string(c.kind)), c.error);
    });
    // Which kvmmmu tracepoints a fault and a memslot delete reach depends on the MMU.
    for (std::string step : {"touch", "slot_delete"})
        if (auto it = steps.find(step); it != steps.end() && it->second == 0)
            add(step + (tdp ? "_tdp" : "_shadow"), 0);
    lines.push_back(fmt::format("KVM MMU: {}", tdp ? "TDP MMU (EPT/NPT)" : "shadow paging"));
    return steps;
}

struct Round {
    std::vector<HookStatus> hooks;
    std::map<std::string, uint64_t, std::less<>> fired;   // hook -> records from its chosen mechanism
    Steps steps;
    Refused refused;
};

Round run_round(const Features& f, const Refused& refused, std::vector<std::string>& lines)
{
    TraceOptions opts;
    opts.hooks = {"all"};
    opts.tgids = {getpid()};
    opts.refused = refused;
    Tracer t(f, opts);
    Round r;
    r.hooks = t.hooks();
    r.refused = t.refused();
    r.steps = run_triggers(lines);
    std::map<std::string, bool, std::less<>> chosen_precise;
    for (const auto& h : r.hooks)
        if (h.chosen >= 0)
            chosen_precise[std::string(h.hook->name)] = precise(h.mechs[h.chosen].mech->kind);
    t.consume([&](const Event& ev) {
        for (auto [hook, is_precise] : evidence(ev)) {
            auto it = chosen_precise.find(hook->name);
            if (it != chosen_precise.end() && it->second == is_precise)
                r.fired[std::string(hook->name)]++;
        }
    });
    return r;
}

}  // namespace

bool SelftestReport::ok() const
{
    for (const auto& h : hooks)
        if (h.verdict == "not-fired")
            return false;
    return true;
}

SelftestReport run_selftest(const Features& f)
{
    SelftestReport rep;
    rep.triggers.push_back("round 1: every hook at its best mechanism");
    Round first = run_round(f, {}, rep.triggers);
    rep.refused = first.refused;
    Refused silent = first.refused;
    for (const auto& h : first.hooks) {
        SelftestHook s;
        s.hook = h.hook->name;
        if (h.chosen < 0) {
            s.verdict = "unavailable";
            s.why_no_trigger = h.why_none;
            rep.hooks.push_back(std::move(s));
            continue;
        }
        const MechStatus& ms = h.mechs[h.chosen];
        s.mechanism = mech_name(ms.mech->kind);
        s.target = ms.target;
        s.fired = first.fired[s.hook];
        std::string_view spec = trigger_step(s.hook, precise(ms.mech->kind));
        s.why_no_trigger = unmet(spec, first.steps);
        if (s.why_no_trigger.empty())
            s.trigger = std::string(spec.starts_with('?') ? spec.substr(1) : spec);
        if (s.fired)
            s.verdict = "fired";
        else if (!s.trigger.empty())
            s.verdict = "not-fired";
        else
            s.verdict = "no-trigger";
        // A precise program that attached and stayed silent through its
        // trigger is not trusted: its hook falls back.
        if (s.verdict == "not-fired" && precise(ms.mech->kind))
            for (auto p : ms.mech->programs)
                silent[std::string(p)] = fmt::format("attached to {} but never fired in the self-test", ms.target);
        rep.hooks.push_back(std::move(s));
    }
    if (silent.size() == first.refused.size())
        return rep;

    rep.triggers.push_back("round 2: hooks whose precise program never fired, at their fallback");
    Round second = run_round(f, silent, rep.triggers);
    rep.refused = second.refused;
    for (auto& s : rep.hooks) {
        if (s.verdict != "not-fired" || (s.mechanism != "fentry" && s.mechanism != "fexit"))
            continue;
        s.verdict = "replaced";
        for (const auto& h : second.hooks)
            if (h.hook->name == s.hook && h.chosen >= 0) {
                s.fallback = mech_name(h.mechs[h.chosen].mech->kind);
                s.fallback_fired = second.fired[s.hook];
                std::string why = unmet(trigger_step(s.hook, false), second.steps);
                if (!s.fallback_fired && why.empty())
                    s.verdict = "not-fired";   // the fallback is silent too
            }
        if (s.fallback.empty())
            s.verdict = "not-fired";   // nothing to fall back to
    }
    return rep;
}

nlohmann::json to_json(const SelftestReport& r)
{
    nlohmann::json hooks = nlohmann::json::array();
    for (const auto& h : r.hooks) {
        nlohmann::json j = {{"hook", h.hook}, {"verdict", h.verdict}, {"fired", h.fired}};
        if (!h.mechanism.empty()) {
            j["mechanism"] = h.mechanism;
            j["target"] = h.target;
        }
        if (!h.trigger.empty())
            j["trigger"] = h.trigger;
        else
            j["why_no_trigger"] = h.why_no_trigger;
        if (!h.fallback.empty()) {
            j["fallback"] = h.fallback;
            j["fallback_fired"] = h.fallback_fired;
        }
        hooks.push_back(j);
    }
    nlohmann::json refused = nlohmann::json::object();
    for (const auto& [p, why] : r.refused)
        refused[p] = why;
    return {{"type", "selftest"}, {"selftest", hooks}, {"triggers", r.triggers}, {"refused", refused}, {"ok", r.ok()}};
}

}  // namespace gms
