// gmemscope hooks: every hook gmemscope knows, and how (or why not) it
// would be observed on this kernel.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/probe/catalog.hpp"
#include "loader/probe/features.hpp"
#include "loader/selftest/selftest.hpp"
#include "loader/capture/tracer.hpp"

namespace gms::cli {
namespace {

void print_text(const Features& f, const std::vector<HookStatus>& hooks)
{
    fmt::print("kernel {}  vmlinux BTF: {}  LSM list: {}{}\n", f.kernel_release(),
               f.vmlinux_btf() ? "yes" : "no", f.lsm_list().empty() ? "(unknown)" : f.lsm_list(),
               f.bpf_lsm_active() ? "" : "  (bpf not in it)");
    fmt::print("\nprogram types:\n");
    for (auto k : {ProgKind::tracepoint, ProgKind::raw_tp, ProgKind::tp_btf, ProgKind::iter,
                   ProgKind::fentry, ProgKind::fexit, ProgKind::lsm}) {
        const LoadProbe& p = f.load(k);
        fmt::print("  {:<11} {}\n", prog_kind_name(k), p.ok ? "loads" : "refused: " + p.detail);
    }
    for (const auto& m : f.mounts())
        if (m.mounted_by_gmemscope || !m.error.empty())
            fmt::print("  {} {}\n", m.fs, m.error.empty() ? "mounted by gmemscope at " + m.path : m.error);
    fmt::print("\n{:<26} {:<11} {:<44} {}\n", "HOOK", "MECHANISM", "TARGET", "NOTE");
    for (const auto& h : hooks) {
        if (h.chosen >= 0) {
            const auto& ms = h.mechs[h.chosen];
            std::string note;
            for (int i = 0; i < h.chosen; i++)
                note = fmt::format("{} unusable: {}", mech_name(h.mechs[i].mech->kind), h.mechs[i].reason);
            if (h.hook->opt_in)
                note = "opt-in (--hooks " + std::string(h.hook->name) + ")" + (note.empty() ? "" : "; " + note);
            fmt::print("{:<26} {:<11} {:<44} {}\n", h.hook->name, mech_name(ms.mech->kind), ms.target,
                       note);
        } else {
            fmt::print("{:<26} {:<11} {:<44} {}\n", h.hook->name, "-", "", h.why_none);
        }
    }
}

void print_selftest(const SelftestReport& r)
{
    for (const auto& t : r.triggers)
        fmt::print("{}\n", t);
    fmt::print("\n{:<26} {:<11} {:<44} {:>6}  {}\n", "HOOK", "MECHANISM", "TARGET", "FIRED", "VERDICT");
    for (const auto& h : r.hooks) {
        std::string verdict = h.verdict;
        if (h.verdict == "fired" || h.verdict == "not-fired")
            verdict += h.trigger.empty() ? "" : " (trigger: " + h.trigger + ")";
        else if (h.verdict == "replaced")
            verdict = fmt::format("never fired through {} (trigger: {}): replaced by {}, which fired {} times",
                                  h.mechanism, h.trigger, h.fallback, h.fallback_fired);
        else
            verdict += ": " + h.why_no_trigger;
        fmt::print("{:<26} {:<11} {:<44} {:>6}  {}\n", h.hook, h.mechanism.empty() ? "-" : h.mechanism,
                   h.target, h.fired, verdict);
    }
    for (const auto& [prog, why] : r.refused)
        fmt::print("ruled out: {}: {}\n", prog, why);
    fmt::print("\nself-test {}\n", r.ok() ? "passed: every hook whose trigger ran fired"
                                          : "FAILED: hooks above did not fire although their trigger ran");
}

}  // namespace

void register_hooks(CLI::App& app, Options& opts, Action& action)
{
    auto* sub = app.add_subcommand("hooks", "List the hooks and the mechanism each gets on this kernel");
    static bool selftest = false;
    sub->add_flag("--selftest", selftest,
                  "Attach every hook, run the built-in workload as trigger, report which fired; a precise "
                  "program that never fires is replaced by its fallback");
    sub->callback([&opts, &action] {
        action = [&opts] {
            require_bpf_privileges("hooks");
            Features f = Features::probe();
            if (selftest) {
                SelftestReport r = run_selftest(f);
                if (opts.json)
                    fmt::print("{}\n", dump_line(to_json(r)));
                else
                    print_selftest(r);
                return r.ok() ? 0 : int(kFailed);
            }
            auto hooks = resolve(f, built_programs());
            if (!opts.json) {
                print_text(f, hooks);
                return 0;
            }
            nlohmann::json arr = nlohmann::json::array();
            for (const auto& h : hooks)
                arr.push_back(to_json(h));
            nlohmann::json doc = f.to_json();
            doc["hooks"] = arr;
            fmt::print("{}\n", dump_line(doc));
            return 0;
        };
    });
}

}  // namespace gms::cli
