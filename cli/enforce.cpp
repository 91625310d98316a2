// gmemscope enforce: refuse conversions to private of memory a device has
// DMA-mapped (BPF LSM on file_ioctl), or --audit: report them only.
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli/target.hpp"
#include "loader/enforce/enforce.hpp"

namespace gms::cli {
namespace {

int parse_errno(const std::string& s)
{
    for (int e = 1; e < 134; e++)
        if (errno_name(-e) == s)
            return e;
    try {
        size_t used = 0;
        int e = std::stoi(s, &used);
        if (used == s.size() && e > 0 && e < 4096)
            return e;
    } catch (const std::exception&) {
    }
    throw Error(kUsage, fmt::format("--errno {}: want an errno name (EBUSY, EPERM, ...) or a positive number", s));
}

std::string describe(const EnforceStatus& s)
{
    if (!s.active)
        return fmt::format("not active: no lsm_file_ioctl program is attached{}",
                           s.pinned.empty() ? "" : fmt::format(" ({} leftover pins in {}; --stop removes them)",
                                                               s.pinned.size(), kEnforceDir));
    if (!s.state)
        return fmt::format("active: lsm_file_ioctl attached (link {}, program {}), set up by an unknown loader",
                           s.link_id, s.prog_id);
    time_t since = time_t(s.state->since_unix_ns / 1000000000ull);
    char when[64];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&since));
    std::string what = s.state->mode == GMS_VETO_ENFORCE
                           ? fmt::format("enforcing: conversions to private of DMA-pinned ranges fail with {}",
                                         errno_name(-s.state->err))
                           : std::string("auditing: conversions are only reported");
    IndexTotals t = index_totals(s.index);
    std::string index = fmt::format("; index: {} DMA mappings (at most {} per process)", t.mappings,
                                    s.state->max_mappings);
    if (t.not_indexed)
        index += fmt::format("; {} mappings NOT indexed ({} bytes still mapped, in {} processes): {}", t.not_indexed,
                             t.unindexed_bytes, t.processes_failing_closed,
                             s.state->fail_open
                                 ? fmt::format("fail-open, so conversions over them pass ({} passed so far)",
                                               s.state->passed_unindexed)
                                 : std::string("conversions to private of those processes' VMs are refused "
                                               "(fail closed)"));
    for (const auto& o : s.index)
        if (o.state.not_indexed && o.key > UINT32_MAX)
            index += fmt::format("\n  pid {} ({}): {} indexed, {} not indexed", o.state.tgid,
                                 std::string(o.state.comm, strnlen(o.state.comm, sizeof(o.state.comm))),
                                 o.state.mappings, o.state.not_indexed);
    return fmt::format("{} since {} (lsm_file_ioctl, link {}); set up by pid {} ({}){}{}{}", what, when, s.link_id,
                       s.state->loader_pid, s.loader_running ? "running" : "gone",
                       s.state->persist ? fmt::format("; persisted in {}", kEnforceDir) : "",
                       s.state->fail_open ? "; fail-open for mappings not indexed" : "", index);
}

}  // namespace

void register_enforce(CLI::App& app, Options& opts, Action& action)
{
    static bool audit = false, persist = false, status = false, stop = false, fail_open = false;
    static std::string err_name = "EBUSY";
    static double duration_s = 0;
    auto* sub = app.add_subcommand(
        "enforce", "Refuse conversions to private of DMA-pinned memory (BPF LSM), or --audit them");
    auto* audit_o = sub->add_flag("--audit", audit, "Report the conversions that would be vetoed; block nothing");
    auto* errno_o = sub->add_option("--errno", err_name, "What a vetoed ioctl returns (default EBUSY)");
    auto* persist_o = sub->add_flag("--persist", persist,
                                    "Keep enforcing after this process ends (programs, links and maps pinned in " +
                                        std::string(kEnforceDir) + "); --stop removes it");
    auto* fail_open_o = sub->add_flag(
        "--fail-open", fail_open,
        "Let conversions pass when the index could not hold some of a process's DMA mappings "
        "(default: refuse every conversion to private of that process's VMs while they are mapped)");
    auto* status_o = sub->add_flag("--status", status, "Say what is enforced now, by which program, since when");
    auto* stop_o = sub->add_flag("--stop", stop, "Remove persisted enforcement");
    auto* duration_o = sub->add_option("-d,--duration", duration_s, "Stop after SECONDS")->check(positive_seconds());
    // --status and --stop each do one thing and end: nothing to combine them with.
    status_o->excludes(stop_o);
    for (auto* o : {status_o, stop_o})
        for (auto* other : {audit_o, errno_o, persist_o, fail_open_o, duration_o})
            o->excludes(other);
    sub->callback([&opts, &action] {
        action = [&opts] {
            require_bpf_privileges("enforce");
            if (status || stop) {
                if (stop)
                    for (const auto& path : enforce_stop())
                        fmt::print(stderr, "removed {}\n", path);
                EnforceStatus s = enforce_status();
                if (opts.json)
                    fmt::print("{}\n", dump_line(to_json(s)));
                else
                    fmt::print("{}\n", describe(s));
                if (stop && s.active)
                    throw Error(kFailed, fmt::format("enforcement is still attached: pid {} holds it and was not "
                                                     "persisted; stop that process",
                                                     s.state ? s.state->loader_pid : 0));
                return 0;
            }
            int veto_errno = parse_errno(err_name);
            block_stop_signals();
            Features f = Features::probe();
            // The index of DMA mappings is fed by the ioctls' syscall tracepoints.
            for (const char* tp : {"sys_enter_ioctl", "sys_exit_ioctl"})
                if (!f.has_tracepoint("syscalls", tp))
                    throw Error(kUnsupported,
                                fmt::format("cannot index DMA mappings on this kernel, so nothing is enforced or "
                                            "audited: no tracepoint syscalls/{} (a kernel built without "
                                            "CONFIG_FTRACE_SYSCALLS)",
                                            tp));
            std::string why_not;
            if (!f.bpf_lsm_active())
                why_not = fmt::format("bpf is not in the kernel's LSM list ({}); boot with lsm=<the list>,bpf",
                                      f.lsm_list().empty() ? "unknown" : f.lsm_list());
            else if (!f.loads(ProgKind::lsm))
                why_not = "LSM programs are refused: " + f.load(ProgKind::lsm).detail;
            if (!why_not.empty() && !audit)
                throw Error(kUnsupported,
                            fmt::format("cannot veto conversions on this kernel, so nothing is enforced: {}. "
                                        "`gmemscope enforce --audit` reports the conversions it would veto "
                                        "without blocking them.",
                                        why_not));
            if (!why_not.empty() && persist)
                throw Error(kUnsupported, fmt::format("--persist needs the BPF LSM: {}", why_not));
            EnforceStatus before = enforce_status();
            if (before.active)
                throw Error(kFailed, fmt::format("already active: {}. `gmemscope enforce --stop` removes "
                                                 "persisted enforcement",
                                                 describe(before)));

            TraceOptions o;
            o.veto_mode = audit ? (why_not.empty() ? GMS_VETO_AUDIT : GMS_VETO_AUDIT_SYSCALL) : GMS_VETO_ENFORCE;
            o.veto_errno = veto_errno;
            o.veto_only = true;
            o.veto_persist = persist;
            o.veto_fail_open = fail_open;
            Tracer tracer(f, o);
            if (mkdir(kEnforceDir, 0700) != 0 && errno != EEXIST)
                throw Error(kFailed, fmt::format("mkdir {}: {}", kEnforceDir, strerror(errno)));
            chmod(kEnforceDir, 0700);
            tracer.pin_enforcement(kEnforceDir, persist);

            std::setvbuf(stdout, nullptr, _IOLBF, 0);
            std::string scope = "KVM_SET_MEMORY_ATTRIBUTES (VM fd), KVM_SET_MEMORY_ATTRIBUTES2 and "
                                "KVM_GMEM_CONVERT_PRIVATE (gmem fd) to private, over ranges DMA-mapped through "
                                "VFIO or iommufd since now or declared with `gmemscope pin add`; a process whose mappings the "
                                "index cannot all hold (" + std::to_string(o.index_max_mappings) +
                                " per process) has " +
                                (fail_open ? std::string("them unchecked (--fail-open)")
                                           : std::string("every conversion to private of its VMs ") +
                                                 (audit ? "reported" : "refused"));
            if (o.veto_mode == GMS_VETO_ENFORCE)
                fmt::print(stderr, "enforcing (lsm/file_ioctl): {} fail with {}. {}\n", scope,
                           errno_name(-veto_errno),
                           persist ? "Persisted: stays in force after this process; `gmemscope enforce --stop` "
                                     "removes it."
                                   : "Fail-open: it ends with this process.");
            else
                fmt::print(stderr, "audit ({}): observing only, nothing is blocked; reporting {}\n",
                           o.veto_mode == GMS_VETO_AUDIT ? "lsm/file_ioctl"
                                                         : "sys_enter_ioctl, the BPF LSM being unavailable: " + why_not,
                           scope);
            // The index starts empty: mappings made before now are only known where declared.
            for (const auto& h : dma_holders())
                fmt::print(stderr,
                           "warning: pid {} ({}) holds {}, opened before enforcement started: DMA mappings it made "
                           "before now are not in the index (this version cannot read VFIO type1 or iommufd "
                           "mapping lists from the kernel); declare the guest ranges they cover with `gmemscope "
                           "pin add -p {} --gpa GPA --size BYTES`\n",
                           h.pid, h.comm, fmt::join(h.fds, ", "), h.pid);
            uint64_t t0 = 0;
            auto sink = [&](const Event& ev) {
                if (ev.type() != GMS_EV_VETO)
                    return;
                if (!t0)
                    t0 = ev.hdr().ts_ns;
                fmt::print("{}\n", opts.json ? dump_line(to_json(ev)) : to_line(ev, t0));
            };
            uint64_t last_lost = 0;
            auto on_counters = [&](const gms_drops_record& c) {
                uint64_t lost = c.dropped[GMS_DROP_PIN_INDEX_FULL] + c.dropped[GMS_DROP_INFLIGHT_FULL];
                if (lost != last_lost)
                    fmt::print(stderr, "warning: {}\n", lost_line(c));
                last_lost = lost;
            };
            SessionOptions so;
            so.duration_s = duration_s;
            SessionEnd end = run_session(tracer, nullptr, so, sink, on_counters);
            if (!persist)
                enforce_stop();
            fmt::print(stderr, "{}\n", lost_line(end.counters));
            return 0;
        };
    });
}

}  // namespace gms::cli
