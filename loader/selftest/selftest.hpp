// `gmemscope hooks --selftest`: attach every hook, run the built-in
// workload's scenarios as triggers, and see which hooks fired. A hook
// whose precise-tier program attached and never fired although its
// trigger ran (fentry on kvm_vm_ioctl does that on 6.12) is replaced by
// its fallback, and the fallback is tried in a second round.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/probe/catalog.hpp"
#include "loader/probe/features.hpp"

namespace gms {

struct SelftestHook {
    std::string hook;
    std::string mechanism;   // chosen in the first round; "" if none
    std::string target;
    uint64_t fired = 0;      // records from that mechanism
    std::string trigger;     // the workload step that should fire it; "" if none ran
    std::string why_no_trigger;
    std::string fallback;    // the mechanism of the second round, when replaced
    uint64_t fallback_fired = 0;
    // fired, not-fired, replaced, no-trigger, unavailable
    std::string verdict;
};

struct SelftestReport {
    std::vector<SelftestHook> hooks;
    std::vector<std::string> triggers;   // one line per scenario and step run
    Refused refused;                     // what the rounds ruled out, and why
    bool ok() const;                     // every triggered hook fired (or its fallback did)
};

SelftestReport run_selftest(const Features& f);
nlohmann::json to_json(const SelftestReport& r);

}  // namespace gms
