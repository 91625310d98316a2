// gmemscope stress: the built-in workload.  Real KVM VMs with
// guest_memfd memslots and vCPUs running user-mode guest code; named
// scenarios reproduce faults, punch-hole storms, memslot churn and
// conversion attempts, and report the kernel's answers as they are.
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/events/events.hpp"
#include "loader/workload/workload.hpp"

namespace gms::cli {

void register_stress(CLI::App& app, Options& opts, Action& action)
{
    static std::string name;
    static std::vector<std::string> settings;
    static bool steps = false;
    auto* sub = app.add_subcommand(
        "stress", fmt::format("Run a built-in workload scenario: {}", fmt::join(workload::scenario_names(), ", ")));
    sub->add_option("scenario", name, "Scenario name")->required();
    sub->add_option("settings", settings,
                    fmt::format("key=value settings: {}", fmt::join(workload::scenario_keys(), ", ")));
    sub->add_flag("--steps", steps, "Print each step the workload takes");
    sub->callback([&opts, &action] {
        action = [&opts] {
            workload::Scenario sc;
            try {
                sc = workload::parse_scenario(name, settings);
            } catch (const std::invalid_argument& e) {
                throw Error(kUsage, e.what());
            }
            workload::Result r;
            try {
                r = workload::run(sc, steps ? &std::cerr : nullptr);
            } catch (const std::system_error& e) {
                Exit code = e.code().value() == EACCES || e.code().value() == EPERM ? kPrivilege : kFailed;
                throw Error(code, fmt::format("workload {}: {}", name, e.what()));
            }
            nlohmann::json conv = nlohmann::json::array();
            for (const auto& c : r.conversions) {
                nlohmann::json j = {{"kind", workload::to_string(c.kind)},
                                    {"to", c.to_private ? "private" : "shared"},
                                    {"ok", c.error == 0}};
                if (c.error)
                    j["errno"] = errno_name(-c.error);
                if (c.error_offset)
                    j["error_offset"] = *c.error_offset;
                conv.push_back(j);
            }
            nlohmann::json steps_j = nlohmann::json::array();
            for (const auto& st : r.steps) {
                nlohmann::json j = {{"step", st.name}, {"ok", st.error == 0}, {"detail", st.detail}};
                if (st.error)
                    j["errno"] = errno_name(-st.error);
                steps_j.push_back(j);
            }
            if (opts.json) {
                fmt::print("{}\n", dump_line(nlohmann::json{{"type", "stress"},
                                                  {"scenario", workload::to_string(r.kind)},
                                                  {"ops", r.ops},
                                                  {"ops_per_s", r.ops_per_s()},
                                                  {"elapsed_ns", r.elapsed_ns},
                                                  {"pages_touched", r.pages_touched},
                                                  {"punches", r.punches},
                                                  {"rebinds", r.rebinds},
                                                  {"vcpu_runs", r.vcpu_runs},
                                                  {"gmem_ino", r.gmem_ino},
                                                  {"conversions", conv},
                                                  {"steps", steps_j},
                                                  {"buffer_vaddr", fmt::format("{:#x}", r.buffer_vaddr)}}
                                       ));
                return 0;
            }
            fmt::print("{}: {} ops in {:.3f} s = {:.0f} ops/s (pages touched {}, punches {}, rebinds {}, "
                       "vCPU runs {}, gmem ino {})\n",
                       workload::to_string(r.kind), r.ops, double(r.elapsed_ns) / 1e9, r.ops_per_s(),
                       r.pages_touched, r.punches, r.rebinds, r.vcpu_runs, r.gmem_ino);
            for (const auto& c : r.conversions)
                fmt::print("  {} to {}: {}\n", workload::to_string(c.kind), c.to_private ? "private" : "shared",
                           c.error ? fmt::format("{} ({})", errno_name(-c.error), strerror(c.error))
                                   : std::string("ok"));
            for (const auto& st : r.steps)
                fmt::print("  {}: {}{}\n", st.name,
                           st.error ? fmt::format("{} ({})", errno_name(-st.error), strerror(st.error)) : "ok",
                           st.detail.empty() ? "" : " -- " + st.detail);
            return 0;
        };
    });
}

}  // namespace gms::cli
