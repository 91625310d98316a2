// gmemscope: tracing and enforcement for guest_memfd, KVM memory
// attributes, VFIO, iommufd and dma-buf.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/events/events.hpp"
#include "loader/probe/features.hpp"
#include "loader/base/log.hpp"

namespace gms::cli {

void require_bpf_privileges(const std::string& subcommand)
{
    std::string missing = missing_bpf_capabilities();
    if (!missing.empty())
        throw Error(kPrivilege,
                    fmt::format("gmemscope {} loads BPF programs and needs {}; run it as root or "
                                "grant the capabilities (setcap cap_bpf,cap_perfmon,cap_sys_admin+ep)",
                                subcommand, missing));
}

namespace {

void print_error(const Options& opts, const std::string& msg)
{
    if (opts.json)
        fmt::print(stdout, "{}\n", dump_line(nlohmann::json{{"error", msg}}));
    else
        fmt::print(stderr, "error: {}\n", msg);
}

}  // namespace
}  // namespace gms::cli

int main(int argc, char** argv)
{
    using namespace gms::cli;
    Options opts;
    Action action;
    CLI::App app{"gmemscope: trace guest_memfd, KVM memory attributes, VFIO, iommufd and dma-buf"};
    app.set_version_flag("--version", fmt::format("gmemscope {}", GMS_VERSION));
    app.require_subcommand(1);
    app.fallthrough();
    app.add_flag("--json", opts.json, "JSON output, one object per line");
    app.add_flag("-v,--verbose", opts.verbose, "Debug messages (libbpf, verifier); repeat for more");

    register_hooks(app, opts, action);
    register_trace(app, opts, action);
    register_record(app, opts, action);
    register_report(app, opts, action);
    register_stress(app, opts, action);
    register_explain(app, opts, action);
    register_export(app, opts, action);
    register_top(app, opts, action);
    register_audit(app, opts, action);
    register_daemon(app, opts, action);
    register_enforce(app, opts, action);
    register_pin(app, opts, action);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(opts, fmt::format("{} (see gmemscope --help)", e.what()));
        return kUsage;
    }
    gms::log::set_level(opts.verbose ? gms::log::Level::debug : gms::log::Level::info);
    gms::log::route_libbpf();
    try {
        return action();
    } catch (const Error& e) {
        print_error(opts, e.what());
        return e.code;
    } catch (const std::exception& e) {
        print_error(opts, e.what());
        return kFailed;
    }
}
