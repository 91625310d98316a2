// What the subcommands share: options, errors with exit codes, output.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace gms {
struct Event;
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
    kDamaged = 6,       // a recording is damaged or cut short: what it holds was read and reported
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

// What a recording lost: for people and for a --json document (both
// empty when it was read whole).
struct Lost {
    std::string text;
    nlohmann::json json;
};
// Every record of the recording at `path` into `f`; Error(kBadInput) if
// it is not a readable recording.  Returns what was damaged: the caller
// prints its output, then calls report_damage (text) or puts it in its
// one document (print_document).
Lost read_recording(const std::string& path, const std::function<void(const Event&)>& f);
// Error(kDamaged, damage.text) unless nothing was lost.
void report_damage(const Lost& damage);
// A --json document, with the damage inside it (not after it as an
// error document): kOk, or kDamaged when something was lost.
int print_document(nlohmann::json doc, const Lost& damage);
// An engine fed the recording at `path` (nullptr for ""), and its damage.
std::unique_ptr<Engine> load_recording(const std::string& path, Lost& damage);
// The BPF iterator where privileges and the kernel allow, else /proc (logged).
std::unique_ptr<Auditor> open_auditor(bool force_procfs);

// Number checks for every numeric option: nan and inf are refused, and
// the messages print the bounds as a person would write them.
// A finite number in [lo, hi].
CLI::Validator finite_range(double lo, double hi);
// Seconds: finite, > 0, at most a year.
CLI::Validator positive_seconds();
// An unsigned integer (decimal or 0x hex) that fits in 64 bits: no sign.
CLI::Validator unsigned_number();

// Man pages (gmemscope.1, gmemscope-SUB.1) and bash completion
// (gmemscope.bash) into dir, from the definitions in `app`.
void generate_docs(const CLI::App& app, const std::string& dir);

// Throws Error(kPrivilege) naming what is missing for BPF work.
void require_bpf_privileges(const std::string& subcommand);

}  // namespace gms::cli
