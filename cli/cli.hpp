// What the subcommands share: options, errors with exit codes, output.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>

namespace gms {
class Engine;
class Auditor;
}  // namespace gms

namespace gms::cli {

// Exit codes; each means one thing (README "Exit codes").
enum Exit : int {
    kOk = 0,
    kFailed = 1,        // the operation failed at run time
    kUsage = 2,         // bad flags or arguments
    kPrivilege = 3,     // missing capabilities
    kUnsupported = 4,   // this kernel cannot do what was asked
    kBadInput = 5,      // a recording or input file is corrupt
};

struct Error : std::runtime_error {
    Error(Exit c, const std::string& what) : std::runtime_error(what), code(c) {}
    Exit code;
};

struct Options {
    bool json = false;
    int verbose = 0;
};

// A subcommand's body; runs after parsing, may throw Error.
using Action = std::function<int()>;

void register_hooks(CLI::App& app, Options& opts, Action& action);
void register_trace(CLI::App& app, Options& opts, Action& action);
void register_record(CLI::App& app, Options& opts, Action& action);
void register_report(CLI::App& app, Options& opts, Action& action);
void register_stress(CLI::App& app, Options& opts, Action& action);
void register_explain(CLI::App& app, Options& opts, Action& action);
void register_export(CLI::App& app, Options& opts, Action& action);
void register_top(CLI::App& app, Options& opts, Action& action);
void register_audit(CLI::App& app, Options& opts, Action& action);
void register_daemon(CLI::App& app, Options& opts, Action& action);
void register_enforce(CLI::App& app, Options& opts, Action& action);
void register_pin(CLI::App& app, Options& opts, Action& action);

// An engine fed the recording at `path` (nullptr for ""); Error(kBadInput) if corrupt.
std::unique_ptr<Engine> load_recording(const std::string& path);
// The BPF iterator where privileges and the kernel allow, else /proc (logged).
std::unique_ptr<Auditor> open_auditor(bool force_procfs);

// Throws Error(kPrivilege) naming what is missing for BPF work.
void require_bpf_privileges(const std::string& subcommand);

}  // namespace gms::cli
