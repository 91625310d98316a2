// gmemscope daemon: long-running tracing counted in the kernel, periodic
// audits, and metrics for a scraper (/metrics on a loopback socket:
// Prometheus text, or OpenMetrics when asked for) and for node_exporter's
// textfile collector (Prometheus text, written atomically).
// SIGHUP re-reads the config file and re-runs the audit; SIGINT/SIGTERM
// write the last state and exit.
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "cli/target.hpp"
#include "loader/audit/audit.hpp"
#include "loader/daemon/http.hpp"
#include "loader/base/log.hpp"
#include "loader/base/output.hpp"
#include "loader/daemon/metrics.hpp"

namespace gms::cli {
namespace {

using Clock = std::chrono::steady_clock;

Clock::time_point after(double seconds)
{
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

struct DaemonSettings {
    std::string textfile;                  // "": none
    std::string listen = "127.0.0.1:9477"; // "" or "none": no HTTP
    double interval_s = 15;                // textfile rewrite period
    double audit_interval_s = 60;
    bool operator==(const DaemonSettings&) const = default;
};

// The config file: `key = value` lines (textfile, listen, interval,
// audit_interval), `#` comments; its values override the flags.
DaemonSettings read_config(const std::string& path, DaemonSettings s)
{
    std::ifstream in(path);
    if (!in)
        throw Error(kUsage, fmt::format("--config {}: cannot read it", path));
    std::string line;
    for (int n = 1; std::getline(in, line); n++) {
        line = line.substr(0, line.find('#'));
        auto trim = [](std::string v) {
            v.erase(0, v.find_first_not_of(" \t"));
            v.erase(v.find_last_not_of(" \t\r") + 1);
            return v;
        };
        if (trim(line).empty())
            continue;
        auto eq = line.find('=');
        std::string key = trim(line.substr(0, eq)), value = eq == std::string::npos ? "" : trim(line.substr(eq + 1));
        try {
            if (eq == std::string::npos)
                throw std::invalid_argument("not key = value");
            if (key == "textfile")
                s.textfile = value;
            else if (key == "listen")
                s.listen = value;
            else if (key == "interval")
                s.interval_s = std::stod(value);
            else if (key == "audit_interval")
                s.audit_interval_s = std::stod(value);
            else
                throw std::invalid_argument("unknown key (textfile, listen, interval, audit_interval)");
        } catch (const std::exception& e) {
            throw Error(kUsage, fmt::format("{}:{}: {}: {}", path, n, line, e.what()));
        }
    }
    // Written so that nan fails too (every comparison with nan is false).
    for (double v : {s.interval_s, s.audit_interval_s})
        if (!(v > 0 && v <= 366 * 86400.0))
            throw Error(kUsage, fmt::format("{}: interval and audit_interval must be positive finite seconds", path));
    return s;
}

// Written beside the target and renamed over it (Output): a collector
// never reads half a file.  `opened`: an Output opened before, else one is
// opened now.  Whether it was written; the reason is logged.
bool write_textfile(const std::string& path, const std::string& text, std::unique_ptr<Output> opened = nullptr)
{
    try {
        if (!opened)
            opened = std::make_unique<Output>(path, Output::Existing::replace);
        opened->write(text);
        opened->commit();
        return true;
    } catch (const OutputError& e) {
        log::info("daemon: {}", e.what());
        return false;
    }
}

std::unique_ptr<MetricsServer> open_server(const std::string& listen)
{
    if (listen.empty() || listen == "none")
        return nullptr;
    try {
        auto s = std::make_unique<MetricsServer>(listen);
        log::info("daemon: serving http://{}/metrics", s->address());
        return s;
    } catch (const std::runtime_error& e) {
        throw Error(kUsage, e.what());
    }
}

}  // namespace

void register_daemon(CLI::App& app, Options& /*opts*/, Action& action)
{
    static DaemonSettings flags;
    static std::string config;
    static double duration_s = 0;
    static bool procfs = false;
    auto* sub = app.add_subcommand("daemon", "Trace and audit continuously; metrics on /metrics and in a textfile");
    sub->add_option("--textfile", flags.textfile, "Write the metrics to this file (atomically) every --interval");
    sub->add_option("--listen", flags.listen, "Serve /metrics on ADDR:PORT (none: no HTTP)")->capture_default_str();
    sub->add_option("--interval", flags.interval_s, "Seconds between textfile writes")
        ->check(positive_seconds())
        ->capture_default_str();
    sub->add_option("--audit-interval", flags.audit_interval_s, "Seconds between audits")
        ->check(positive_seconds())
        ->capture_default_str();
    sub->add_option("--config", config, "key = value file (textfile, listen, interval, audit_interval), "
                                        "re-read on SIGHUP; its values override the flags");
    sub->add_option("-d,--duration", duration_s, "Stop after SECONDS")->check(positive_seconds());
    sub->add_flag("--procfs", procfs, "Audit from /proc/*/fd instead of the BPF iterator");
    sub->callback([&action] {
        action = [] {
            // SIGHUP waits for the signalfd, as SIGINT and SIGTERM do (open_target).
            sigset_t hup;
            sigemptyset(&hup);
            sigaddset(&hup, SIGHUP);
            sigprocmask(SIG_BLOCK, &hup, nullptr);
            DaemonSettings s = config.empty() ? flags : read_config(config, flags);
            // A textfile that cannot be written is an error now, before
            // anything is loaded, not a line in a log nobody reads.
            std::unique_ptr<Output> first_textfile;
            try {
                if (!s.textfile.empty())
                    first_textfile = std::make_unique<Output>(s.textfile, Output::Existing::replace);
            } catch (const OutputError& e) {
                throw Error(kFailed, fmt::format("--textfile: {}", e.what()));
            }
            TargetOptions t;
            t.aggregate = true;   // punches, page-cache changes and faults are only counted
            Target target = open_target("daemon", t);
            auto auditor = open_auditor(procfs);
            auto server = open_server(s.listen);
            SignalFd signals{SIGINT, SIGTERM, SIGHUP};
            DaemonMetrics metrics;
            Tracer& tracer = *target.tracer;
            auto render = [&](bool openmetrics = false) {
                return metrics.render(tracer.counters(), tracer.aggregates(), openmetrics);
            };
            // The kernel's aggregate map is bounded: the counts of processes
            // that have exited move into the daemon's own totals.
            auto retire_exited = [&] {
                for (const auto& [key, v] : tracer.aggregates())
                    if (kill(pid_t(key.second), 0) != 0 && errno == ESRCH) {
                        metrics.retire(v);
                        tracer.forget_aggregate(key.first, key.second);
                    }
            };
            auto audit = [&] {
                retire_exited();
                try {
                    AuditReport r = auditor->run();
                    metrics.set_audit(r, double(time(nullptr)));
                    return fmt::format("{} VMs, {} memslots, {} gmem files, {} findings", r.vms.size(),
                                       r.memslot_count(), r.gmem.size(), r.findings.size());
                } catch (const std::exception& e) {
                    log::info("daemon: audit failed: {}", e.what());
                    return std::string("audit failed");
                }
            };
            if (!s.textfile.empty() && !write_textfile(s.textfile, render(), std::move(first_textfile)))
                throw Error(kFailed, fmt::format("--textfile {}: cannot write it (see above)", s.textfile));
            log::info("daemon: tracing; textfile {}, audit every {} s: first audit: {}",
                      s.textfile.empty() ? "none" : s.textfile, s.audit_interval_s, audit());
            Clock::time_point start = Clock::now(), next_audit = after(s.audit_interval_s), next_write = start;
            int stop = 0;
            while (!stop) {
                std::vector<pollfd> fds = {{tracer.ready_fd(), POLLIN, 0}, {signals.fd(), POLLIN, 0}};
                if (server)
                    server->add_pollfds(fds);
                poll(fds.data(), fds.size(), 100);
                tracer.consume([&](const Event& ev) { metrics.add(ev); });
                if (server)
                    server->serve(render);
                while (int sig = signals.take()) {
                    if (sig != SIGHUP) {
                        stop = sig;
                        break;
                    }
                    std::string what = "no config file";
                    if (!config.empty()) {
                        try {
                            DaemonSettings fresh = read_config(config, flags);
                            if (fresh.listen != s.listen)
                                server = open_server(fresh.listen);
                            s = fresh;
                            what = "re-read " + config;
                        } catch (const Error& e) {
                            what = fmt::format("kept the settings ({})", e.what());
                        }
                    }
                    log::info("daemon: SIGHUP: {}; audit re-run: {}", what, audit());
                    next_audit = after(s.audit_interval_s);
                }
                auto now = Clock::now();
                if (now >= next_audit) {
                    log::debug("daemon: audit: {}", audit());
                    next_audit = after(s.audit_interval_s);
                }
                if (!s.textfile.empty() && now >= next_write) {
                    write_textfile(s.textfile, render());   // a failure is logged; the next write may succeed
                    next_write = after(s.interval_s);
                }
                if (duration_s > 0 && now - start >= std::chrono::duration<double>(duration_s))
                    break;
            }
            tracer.consume([&](const Event& ev) { metrics.add(ev); });
            bool written = !s.textfile.empty() && write_textfile(s.textfile, render());
            std::string why = stop ? strsignal(stop) : "duration reached";
            if (!s.textfile.empty() && !written)
                throw Error(kFailed, fmt::format("daemon: {}; the last metrics could not be written to {}", why,
                                                 s.textfile));
            log::info("daemon: {}; last metrics written{}", why, written ? " to " + s.textfile : "");
            return 0;
        };
    });
}

}  // namespace gms::cli
