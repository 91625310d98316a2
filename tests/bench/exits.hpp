// What tracing costs a VM for its exits to user space: the built-in
// workload's `exits` scenario (one KVM_RUN per exit, the guest looping on
// `out`) untraced and under each gmemscope mode, taking turns within each
// repetition (in an order rotated each repetition, so drift in the
// machine's load hits them all), each ratio against the untraced run of
// the same repetition. Shared by build/bench_exits (tests/bench/exits.cpp)
// and the lane's short run (tests/unit/test_exits.cpp).
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

extern char** environ;

namespace gms::bench {

// A mode: how the workload runs. A session mode wraps the workload
// (`gmemscope record -- CMD`); a background mode runs beside it, started
// first and ready once its stderr says `ready` (daemon, enforce).
struct Mode {
    std::string name;
    std::vector<std::string> argv;   // before the workload's command; empty: untraced
    bool background = false;
    std::string ready;               // background: the stderr text that says it is attached
    std::string stdout_file;         // where the tool's stdout goes (trace's events)
};

// One-program floor of the syscall tracepoint mechanism: bpftrace counting
// sys_enter_ioctl of the workload's process alone.
inline constexpr const char* bpftrace_floor =
    "tracepoint:syscalls:sys_enter_ioctl /pid == cpid/ { @ioctls = count(); }";

inline std::vector<std::string> mode_names()
{
    return {"none", "record", "top", "trace", "daemon", "enforce-audit", "enforce", "bpftrace"};
}

// Mode `name` (or `name@base`: the same with the baseline binary).
inline Mode make_mode(const std::string& name, const std::string& gms, const std::string& base,
                      const std::string& dir)
{
    std::string kind = name, bin = gms;
    if (auto at = name.find('@'); at != std::string::npos) {
        if (name.substr(at) != "@base" || base.empty())
            throw std::invalid_argument("mode " + name + ": only NAME@base, with --baseline");
        kind = name.substr(0, at);
        bin = base;
    }
    auto session = [&](std::vector<std::string> argv, std::string stdout_file = "") {
        return Mode{name, std::move(argv), false, "", std::move(stdout_file)};
    };
    auto beside = [&](std::vector<std::string> argv, std::string ready) {
        return Mode{name, std::move(argv), true, std::move(ready), ""};
    };
    if (kind == "none")
        return session({});
    if (kind == "record")
        return session({bin, "record", "-o", dir + "/x.rec", "--"});
    if (kind == "top")
        return session({bin, "--json", "top", "--batch", "--"}, dir + "/top.jsonl");
    if (kind == "trace")
        return session({bin, "--json", "trace", "--"}, dir + "/trace.jsonl");
    if (kind == "daemon")
        return beside({bin, "daemon", "--listen", "none", "--textfile", dir + "/metrics.prom",
                       "--audit-interval", "3600"}, "daemon: tracing");
    if (kind == "enforce-audit")
        return beside({bin, "enforce", "--audit"}, "audit (");
    if (kind == "enforce")
        return beside({bin, "enforce"}, "enforcing (");
    if (kind == "bpftrace")
        return session({"bpftrace", "-e", bpftrace_floor, "-c"});
    throw std::invalid_argument("unknown mode " + name);
}

inline std::string slurp(const std::string& path)
{
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

inline std::string last_line(const std::string& text)
{
    std::string line, last;
    std::stringstream s(text);
    while (std::getline(s, line))
        if (!line.empty())
            last = line;
    return last;
}

inline pid_t spawn(const std::vector<std::string>& argv, const std::string& out, const std::string& err)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        throw std::runtime_error("cannot start " + argv[0] + ": " + strerror(rc));
    return pid;
}

inline int wait_exit(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// One run: exits per second of the workload, or why none.
struct Run {
    std::string mode;
    int rep = 0;
    std::optional<double> exits_per_s;
    std::string error;
};

inline Run measure_once(const Mode& mode, const std::string& gms, double seconds, const std::string& dir)
{
    Run r{mode.name, 0, std::nullopt, ""};
    mkdir(dir.c_str(), 0755);
    // exec keeps the pid the tools are given (bpftrace's cpid); the stress
    // JSON goes to a file, not to the stdout trace shares with it. nice -10
    // (root) keeps a loaded machine's other work from swamping the figure,
    // where there is a nice (the VM lane's busybox has none).
    std::string cmd = dir + "/cmd.sh", result = dir + "/stress.json";
    std::ofstream(cmd) << (geteuid() == 0 ? "command -v nice >/dev/null && n='nice -n -10'\n" : "") << "exec $n "
                       << gms << " --json stress exits duration_ms="
                       << static_cast<long>(seconds * 1000) << " >" << result << "\n";
    std::vector<std::string> workload = {"/bin/sh", cmd};
    std::string out = mode.stdout_file.empty() ? dir + "/stdout" : mode.stdout_file;
    std::string err = dir + "/stderr", bg_err = dir + "/tool.stderr";
    pid_t bg = -1;
    if (mode.background) {
        bg = spawn(mode.argv, dir + "/tool.stdout", bg_err);
        // 120 s, times the VM lane's time factor where there is one
        // (tests/vm/init.sh sets GMS_TIME_FACTOR).
        const char* factor = getenv("GMS_TIME_FACTOR");
        const int ready_s = int(120 * std::max(1.0, factor ? atof(factor) : 1.0));
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(ready_s);
        for (;;) {
            if (slurp(bg_err).find(mode.ready) != std::string::npos)
                break;
            int status = 0;
            if (waitpid(bg, &status, WNOHANG) == bg) {
                r.error = "did not start: " + last_line(slurp(bg_err));
                return r;
            }
            if (std::chrono::steady_clock::now() > until) {
                kill(bg, SIGKILL);
                wait_exit(bg);
                r.error = "not ready after " + std::to_string(ready_s) + " s";
                return r;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    std::vector<std::string> argv = mode.background ? std::vector<std::string>{} : mode.argv;
    if (!mode.background && !argv.empty() && argv[0] == "bpftrace")
        argv.push_back("/bin/sh " + cmd);   // -c takes one string
    else
        argv.insert(argv.end(), workload.begin(), workload.end());
    int rc = wait_exit(spawn(argv, out, err));
    if (bg > 0) {
        kill(bg, SIGTERM);
        if (int brc = wait_exit(bg); brc != 0 && rc == 0) {
            rc = brc;
            err = bg_err;
        }
    }
    std::stringstream lines(slurp(result));
    double ops = 0, ns = 0;
    for (std::string line; std::getline(lines, line);)
        if (line.starts_with("{")) {
            auto j = nlohmann::json::parse(line);
            ops += j.at("ops").get<double>();
            ns += j.at("elapsed_ns").get<double>();
        }
    if (rc != 0 || ns == 0) {
        r.error = "exit " + std::to_string(rc) + ": " + last_line(slurp(err));
        return r;
    }
    r.exits_per_s = ops * 1e9 / ns;
    return r;
}

inline Run measure(const Mode& mode, const std::string& gms, double seconds, const std::string& dir)
{
    try {
        return measure_once(mode, gms, seconds, dir);
    } catch (const std::exception& e) {
        return {mode.name, 0, std::nullopt, e.what()};
    }
}

inline double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Per mode over every repetition: one JSON object (schemas/bench_exits.schema.json).
inline std::vector<nlohmann::json> summarize(const std::vector<Run>& runs, const std::vector<std::string>& modes,
                                             const std::string& kernel)
{
    std::map<int, double> untraced;
    for (const auto& r : runs)
        if (r.mode == "none" && r.exits_per_s)
            untraced[r.rep] = *r.exits_per_s;
    std::vector<nlohmann::json> out;
    for (const auto& m : modes) {
        std::vector<double> rates, ratios;
        std::string error;
        int failed = 0;
        for (const auto& r : runs) {
            if (r.mode != m)
                continue;
            if (!r.exits_per_s) {
                failed++;
                if (error.empty())
                    error = r.error;
                continue;
            }
            rates.push_back(*r.exits_per_s);
            if (auto u = untraced.find(r.rep); u != untraced.end())
                ratios.push_back(*r.exits_per_s / u->second);
        }
        nlohmann::json j = {{"type", "bench_exits"}, {"kernel", kernel}, {"mode", m},
                            {"runs", rates.size()}, {"failed", failed}};
        if (rates.empty()) {
            j["skipped"] = error.empty() ? "no run" : error;
            out.push_back(j);
            continue;
        }
        double med = median(rates);
        j["exits_per_s"] = {{"median", med}, {"min", *std::min_element(rates.begin(), rates.end())}};
        j["us_per_exit"] = 1e6 / med;
        if (!ratios.empty()) {
            double ratio = median(ratios);
            j["ratio"] = {{"median", ratio}, {"min", *std::min_element(ratios.begin(), ratios.end())}};
            // what one exit costs more than untraced, at the medians
            j["added_us_per_exit"] = 1e6 / med - 1e6 / median([&] {
                std::vector<double> u;
                for (const auto& [rep, v] : untraced)
                    u.push_back(v);
                return u;
            }());
        }
        if (failed)
            j["note"] = error;
        out.push_back(j);
    }
    return out;
}

// Every repetition runs every mode once, in an order rotated by one each time.
template <typename Progress>
std::vector<Run> run_all(const std::vector<std::string>& modes, const std::string& gms, const std::string& base,
                         int reps, double seconds, const std::string& work, Progress&& progress)
{
    std::vector<Run> runs;
    for (int rep = 0; rep < reps; rep++) {
        std::vector<std::string> order = modes;
        std::rotate(order.begin(), order.begin() + (rep % order.size()), order.end());
        for (const auto& name : order) {
            std::string dir = work + "/" + std::to_string(rep) + "-" + name;
            mkdir(dir.c_str(), 0755);
            Run r = measure(make_mode(name, gms, base, dir), gms, seconds, dir);
            r.rep = rep;
            progress(r);
            runs.push_back(r);
        }
    }
    return runs;
}

}  // namespace gms::bench
