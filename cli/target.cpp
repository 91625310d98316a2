#include "cli/target.hpp"

#include <sys/wait.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "loader/base/log.hpp"

namespace gms::cli {

void add_target_options(CLI::App* sub, TargetOptions& t)
{
    // One value per occurrence (comma lists allowed): a list option must
    // not swallow the `--` that starts the command.
    sub->add_option("-p,--pid", t.pids, "Only these processes (tgid), and their children")
        ->delimiter(',')
        ->allow_extra_args(false);
    sub->add_option("--vm", t.vms, "Only these VMs: the struct kvm address gmemscope prints (hex)")
        ->delimiter(',')
        ->allow_extra_args(false);
    sub->add_option("-d,--duration", t.duration_s, "Stop after SECONDS")->check(positive_seconds());
    sub->add_option("--ringbuf-size", t.ringbuf_mib, "Ring buffer size in MiB (power of two)")
        ->check(CLI::Range(1, 1024));
    sub->add_option("--hooks", t.hooks,
                    "Hooks to trace: names from `gmemscope hooks`, default (all but opt-in) or all")
        ->delimiter(',')
        ->allow_extra_args(false);
    sub->add_option("command", t.command, "Command to start and trace (after --)");
}

Target open_target(const std::string& subcommand, const TargetOptions& t)
{
    require_bpf_privileges(subcommand);
    block_stop_signals();
    uint64_t rb = t.ringbuf_mib << 20;
    if (rb & (rb - 1))
        throw Error(kUsage, fmt::format("--ringbuf-size {} is not a power of two", t.ringbuf_mib));
    TraceOptions to;
    to.ringbuf_bytes = rb;
    to.wakeup_bytes = rb / 4;
    for (int p : t.pids) {
        if (p <= 0 || kill(p, 0) != 0)
            throw Error(kUsage, fmt::format("-p {}: no such process", p));
        to.tgids.push_back(p);
    }
    to.follow_forks = true;
    to.hooks = t.hooks;
    to.aggregate = t.aggregate;
    to.stack_sample = t.stack_sample;
    try {
        select_hooks(t.hooks);
    } catch (const std::invalid_argument& e) {
        throw Error(kUsage, e.what());
    }
    for (const auto& v : t.vms) {
        try {
            // stoull would take "-1" as 0xffffffffffffffff.
            if (v.empty() || !isxdigit(static_cast<unsigned char>(v[0])))
                throw std::invalid_argument(v);
            size_t used = 0;
            to.vms.push_back(std::stoull(v, &used, 16));
            if (used != v.size())
                throw std::invalid_argument(v);
        } catch (const std::exception&) {
            throw Error(kUsage, fmt::format("--vm {}: expected the VM's kernel address in hex, as "
                                            "gmemscope prints it (vm ffff...)", v));
        }
    }
    Target target{Features::probe(), nullptr, nullptr, {}};
    if (!target.features.vmlinux_btf())
        throw Error(kUnsupported, "this kernel has no BTF (/sys/kernel/btf/vmlinux), and gmemscope's programs "
                                  "read kernel structs through CO-RE: use a kernel built with "
                                  "CONFIG_DEBUG_INFO_BTF=y");
    if (!target.features.loads(ProgKind::tracepoint))
        throw Error(kUnsupported, fmt::format("this kernel refuses tracepoint BPF programs: {}",
                                              target.features.load(ProgKind::tracepoint).detail));
    if (target.features.tracefs().empty())
        throw Error(kUnsupported, "tracefs is not mounted and could not be mounted at /sys/kernel/tracing: "
                                  "mount it (mount -t tracefs tracefs /sys/kernel/tracing) and retry");
    if (!t.command.empty()) {
        target.child = std::make_unique<Child>(t.command, t.command_stdout_to_stderr);
        to.tgids.push_back(target.child->pid());
    }
    target.tracer = std::make_unique<Tracer>(target.features, to);
    target.session.duration_s = t.duration_s;
    auto missing = target.tracer->unobserved();
    if (missing.size() == select_hooks(t.hooks).size())
        throw Error(kUnsupported, "none of the selected hooks can be observed on this kernel (see gmemscope hooks)");
    if (!missing.empty()) {
        log::info("note: {} hooks are not observable on this kernel and are left out (see gmemscope hooks):",
                  missing.size());
        for (const auto& [hook, why] : missing)
            log::info("  {}: {}", hook, why);
    }
    return target;
}

nlohmann::json attached_json(const Tracer& tracer)
{
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& a : tracer.attached())
        arr.push_back({{"hooks", a.hooks}, {"mechanism", a.mechanism}, {"program", a.program},
                       {"attach", a.attach}});
    return arr;
}

nlohmann::json unobserved_json(const Tracer& tracer)
{
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& [hook, why] : tracer.unobserved())
        arr.push_back({{"hook", hook}, {"reason", why}});
    return arr;
}

nlohmann::json refused_json(const Tracer& tracer)
{
    nlohmann::json obj = nlohmann::json::object();
    for (const auto& [prog, why] : tracer.refused())
        obj[prog] = why;
    return obj;
}

std::string lost_line(const gms_drops_record& c)
{
    uint64_t lost = 0;
    for (auto n : c.dropped)
        lost += n;
    std::string causes;
    for (uint32_t i = 0; i < GMS_DROP_MAX; i++)
        causes += fmt::format(", {} {}", drop_cause_name(i), c.dropped[i]);
    return fmt::format("{} events received, {} lost{}", c.received, lost, causes);
}

int session_exit(const SessionEnd& end)
{
    if (end.command_status > 0 && WIFEXITED(end.command_status) && WEXITSTATUS(end.command_status) != 0)
        throw Error(kFailed, fmt::format("the traced command exited with status {}",
                                         WEXITSTATUS(end.command_status)));
    return kOk;
}

}  // namespace gms::cli
