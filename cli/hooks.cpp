// gmemscope hooks: every hook gmemscope knows, and how (or why not) it
// would be observed on this kernel.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/catalog.hpp"
#include "loader/features.hpp"
#include "loader/tracer.hpp"

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

}  // namespace

void register_hooks(CLI::App& app, Options& opts, Action& action)
{
    auto* sub = app.add_subcommand("hooks", "List the hooks and the mechanism each gets on this kernel");
    sub->callback([&opts, &action] {
        action = [&opts] {
            require_bpf_privileges("hooks");
            Features f = Features::probe();
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
