// Every hook gmemscope knows, one table, one row a hook: the kernel
// symbols (with their aliases across releases), the mechanisms that can
// observe it in order of preference and the BPF programs of each, the
// gms_fn id of its call records, the records that show it fired, and the
// built-in workload's steps that make it fire. Everything else (names
// of call records, the self-test's evidence and triggers, which programs
// load) derives from the row: adding a hook is its row and its program.
#pragma once

#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/probe/features.hpp"

namespace gms {

struct Event;

enum class Mech { fentry, fexit, tp_btf, tracepoint, syscall };
std::string_view mech_name(Mech m);

struct Mechanism {
    Mech kind;
    // fentry/fexit: empty, the hook's first symbol present is used, else
    // the function it names (one of another signature);
    // tp_btf: tracepoint name; tracepoint: "category/name";
    // syscall: "ioctl KVM_..." etc.
    std::string_view target;
    // Programs in the BPF object that implement it; none means this
    // build has no program for it yet and it is never chosen. A program
    // that serves one hook is named after it ("gmem.bind" -> gmem_bind,
    // or gmem_punch_hole_entry/_exit for a pair); one that serves several
    // (the syscall tier, a shared tracepoint) after what it attaches to.
    std::vector<std::string_view> programs;
    // The syscall tracepoints it needs besides its target,
    // "syscalls/sys_enter_ioctl".
    std::vector<std::string_view> tracepoints = {};
    // fentry/fexit on a function whose signature changed across releases:
    // its argument `arg` (0: the first) must be a pointer, or must not be
    // (`arg_pointer`); -1: no check.
    int arg = -1;
    bool arg_pointer = true;
};

// A record that shows a hook fired: its type (GMS_EV_*), for an ioctl
// record its op (GMS_IOC_*), for a call record its fn (GMS_FN_*), and a
// further condition where one record type serves several hooks.
struct Seen {
    uint16_t type;
    uint32_t code = 0;
    bool (*when)(const Event&) = nullptr;
};

// The built-in workload's steps that should make the hook fire, per tier
// (loader/selftest/selftest.cpp runs them): a step name means it must have
// succeeded, "?name" only that it was tried (a syscall-tier hook sees the
// ioctl whatever the answer); "" means the workload has no trigger.
struct Trigger {
    std::string_view precise;
    std::string_view portable;
};

struct Hook {
    std::string_view name;   // "gmem.bind"
    std::string_view area;   // "gmem", "kvm", "kvm_mmu", "vfio", "iommufd", "iommu", "dmabuf"
    std::vector<std::string_view> symbols;  // aliases, newest first
    std::vector<Mechanism> mechanisms;      // preferred first
    std::string_view records;
    // Not traced unless asked for (--hooks): its information is in
    // another hook's records and it costs per event.
    bool opt_in = false;
    // enum gms_fn of the call records its programs send (0: none). A call
    // record flagged GMS_F_KFUNC came from the precise tier.
    uint16_t fn = 0;
    std::vector<Seen> seen = {};   // records besides its call records that show it fired
    Trigger trigger = {};
};

std::span<const Hook> catalog();
const Hook* find_hook(std::string_view name);
// The hook whose call records carry `fn`; nullptr if none.
const Hook* hook_of_fn(uint32_t fn);
// The hooks `ev` shows firing, each with whether it came from the precise tier.
std::vector<std::pair<const Hook*, bool>> evidence(const Event& ev);

struct MechStatus {
    const Mechanism* mech;
    bool usable = false;
    std::string target;   // resolved symbol or tracepoint
    std::string reason;   // why not usable
};

struct HookStatus {
    const Hook* hook;
    std::vector<std::pair<std::string, std::string>> symbols;  // name -> "vmlinux"/module/"kallsyms only"/""
    std::vector<MechStatus> mechs;
    int chosen = -1;      // index into mechs
    std::string why_none;
};

// Programs ruled out after a try on this kernel -> why (the verifier
// refused it, or the self-test saw it attached and never firing).
using Refused = std::map<std::string, std::string, std::less<>>;

// Which mechanism each hook gets on this kernel with this build's programs.
std::vector<HookStatus> resolve(const Features& f, const std::set<std::string, std::less<>>& built,
                                const Refused& refused = {});
// Hook names from a --hooks list: names, "default" (all but opt-in) and
// "all"; empty means "default".  Throws std::invalid_argument naming an
// unknown hook.
std::set<std::string, std::less<>> select_hooks(const std::vector<std::string>& names);
// The programs the chosen mechanisms of the selected hooks need.
std::set<std::string, std::less<>> chosen_programs(const std::vector<HookStatus>& hooks,
                                                   const std::set<std::string, std::less<>>& selected);

nlohmann::json to_json(const HookStatus& h);

}  // namespace gms
