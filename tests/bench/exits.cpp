// bench_exits: what each gmemscope mode costs a VM that exits to user
// space in a loop (tests/bench/exits.hpp), against the untraced loop in
// the same run and against the one-program floor of the syscall
// tracepoint mechanism (bpftrace counting sys_enter_ioctl of the
// workload's process alone).
//
//   build/bench_exits [--reps N] [--seconds S] [--modes A,B,...]
//                     [--gmemscope PATH] [--baseline PATH]
//   (root; one JSON line per mode on stdout, schemas/bench_exits.schema.json;
//   progress on stderr.) Modes: none, record, top, trace (--json, to a
//   file), daemon, enforce-audit, enforce (the BPF LSM; where it cannot run
//   its row is skipped with gmemscope's reason), bpftrace; NAME@base runs
//   mode NAME with the --baseline binary, to compare two builds in one run.
//   Installs bpftrace from Debian when the bpftrace mode is asked for and
//   it is missing; if it still cannot run, that row says why.
#include <sys/utsname.h>

#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include "tests/bench/exits.hpp"

namespace {

std::vector<std::string> split(const std::string& s)
{
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');)
        if (!item.empty())
            out.push_back(item);
    return out;
}

bool on_path(const char* exe)
{
    return std::system(fmt::format("command -v {} >/dev/null 2>&1", exe).c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv)
{
    int reps = 4;
    double seconds = 3;
    std::string gms = GMS_BINARY, base;
    std::vector<std::string> modes = gms::bench::mode_names();
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                fmt::print(stderr, "error: {} needs a value\n", a);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--reps")
            reps = std::atoi(value().c_str());
        else if (a == "--seconds")
            seconds = std::atof(value().c_str());
        else if (a == "--modes")
            modes = split(value());
        else if (a == "--gmemscope")
            gms = value();
        else if (a == "--baseline")
            base = value();
        else {
            fmt::print(stderr, "usage: bench_exits [--reps N] [--seconds S] [--modes A,B] [--gmemscope PATH] "
                               "[--baseline PATH]\n");
            return 2;
        }
    }
    if (reps < 1 || seconds <= 0 || modes.empty()) {
        fmt::print(stderr, "error: --reps and --seconds must be positive, --modes not empty\n");
        return 2;
    }
    if (std::find(modes.begin(), modes.end(), "none") == modes.end())
        modes.insert(modes.begin(), "none");   // every ratio needs the untraced run
    if (std::find(modes.begin(), modes.end(), "bpftrace") != modes.end() && !on_path("bpftrace"))
        std::system("apt-get install -y -qq bpftrace >/dev/null 2>&1 || "
                    "(apt-get update -qq && apt-get install -y -qq bpftrace) >/dev/null 2>&1");
    try {
        for (const auto& m : modes)   // unknown names fail before any run
            gms::bench::make_mode(m, gms, base, "/nonexistent");
    } catch (const std::exception& e) {
        fmt::print(stderr, "error: {}\n", e.what());
        return 2;
    }
    char tmpl[] = "/tmp/gms-bench-exits-XXXXXX";
    if (!mkdtemp(tmpl)) {
        fmt::print(stderr, "error: mkdtemp: {}\n", strerror(errno));
        return 1;
    }
    struct utsname u {};
    uname(&u);
    auto runs = gms::bench::run_all(modes, gms, base, reps, seconds, tmpl, [&](const gms::bench::Run& r) {
        fmt::print(stderr, "rep {}/{} {:14} {}\n", r.rep + 1, reps, r.mode,
                   r.exits_per_s ? fmt::format("{:.0f} exits/s", *r.exits_per_s) : r.error);
    });
    for (auto& j : gms::bench::summarize(runs, modes, u.release)) {
        j["reps"] = reps;
        j["seconds"] = seconds;
        j["gmemscope"] = j["mode"].get<std::string>().ends_with("@base") ? base : gms;
        std::cout << j.dump() << "\n";
    }
    std::system(fmt::format("rm -rf {}", tmpl).c_str());
    return 0;
}
