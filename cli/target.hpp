// What `trace` and `record` share: which processes and VMs to watch,
// for how long, and the tracer built from that.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/probe/features.hpp"
#include "loader/capture/session.hpp"
#include "loader/capture/tracer.hpp"

namespace gms::cli {

struct TargetOptions {
    std::vector<int> pids;
    std::vector<std::string> vms;   // struct kvm * as gmemscope prints it, hex
    double duration_s = 0;
    uint64_t ringbuf_mib = 16;
    std::vector<std::string> hooks;
    std::vector<std::string> command;
    bool aggregate = false;   // set by top, not a flag
    bool command_stdout_to_stderr = false;   // set under --json: our stdout holds only JSON
    uint32_t stack_sample = 0;
};

void add_target_options(CLI::App* sub, TargetOptions& t);

// Everything a session needs, built in order: probe, command held
// before exec, tracer attached.
struct Target {
    Features features;
    std::unique_ptr<Child> child;
    std::unique_ptr<Tracer> tracer;
    SessionOptions session;
};

Target open_target(const std::string& subcommand, const TargetOptions& t);
nlohmann::json attached_json(const Tracer& tracer);
// The selected hooks this kernel cannot observe, [{hook, reason}], and the
// programs it refused, {program: reason}.
nlohmann::json unobserved_json(const Tracer& tracer);
nlohmann::json refused_json(const Tracer& tracer);
std::string lost_line(const gms_drops_record& c);
// Exit code of a session: the command's failure or a signal is reported.
int session_exit(const SessionEnd& end);

}  // namespace gms::cli
