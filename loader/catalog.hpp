// Every hook gmemscope knows, one table: the kernel symbols (with their
// aliases across releases), the mechanisms that can observe it in order
// of preference, and the BPF programs that implement each mechanism.
#pragma once

#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/features.hpp"

namespace gms {

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
    // build has no program for it yet and it is never chosen.
    std::vector<std::string_view> programs;
    // syscall: the tracepoints it needs, "syscalls/sys_enter_ioctl".
    std::vector<std::string_view> tracepoints = {};
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
};

std::span<const Hook> catalog();

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
