// gmemscope: tracing and enforcement for guest_memfd, KVM memory
// attributes, VFIO, iommufd and dma-buf.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

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

CLI::Validator finite_range(double lo, double hi)
{
    return CLI::Validator(
        [lo, hi](std::string& s) -> std::string {
            errno = 0;
            char* end = nullptr;
            double v = std::strtod(s.c_str(), &end);
            if (s.empty() || *end != '\0')
                return fmt::format("{}: not a number", s);
            if (!std::isfinite(v) || errno == ERANGE)
                return fmt::format("{}: not a finite number", s);
            if (v < lo || v > hi)
                return fmt::format("{} is not in [{:g}, {:g}]", s, lo, hi);
            return "";
        },
        fmt::format("[{:g}, {:g}]", lo, hi));
}

CLI::Validator positive_seconds()
{
    return CLI::Validator(
        [](std::string& s) -> std::string {
            std::string why = finite_range(0, 366 * 86400.0)(s);
            if (!why.empty())
                return why;
            return std::strtod(s.c_str(), nullptr) > 0 ? "" : fmt::format("{}: want a positive number of seconds", s);
        },
        "");
}

CLI::Validator unsigned_number()
{
    return CLI::Validator(
        [](std::string& s) -> std::string {
            bool hex = s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
            size_t digits = 0;
            for (size_t i = hex ? 2 : 0; i < s.size(); i++)
                digits += hex ? isxdigit(static_cast<unsigned char>(s[i])) != 0
                              : isdigit(static_cast<unsigned char>(s[i])) != 0;
            if (s.empty() || digits != s.size() - (hex ? 2 : 0))
                return fmt::format("{}: want a non-negative integer (decimal or 0x hex)", s);
            errno = 0;
            std::strtoull(s.c_str(), nullptr, 0);
            return errno == ERANGE ? fmt::format("{}: does not fit in 64 bits", s) : "";
        },
        "");
}

namespace {

void print_error(const Options& opts, const std::string& msg)
{
    if (opts.json)
        fmt::print(stdout, "{}\n", dump_line(nlohmann::json{{"error", msg}}));
    else
        fmt::print(stderr, "error: {}\n", msg);
}

// What must be known before CLI11 parses: whether --json was given (an
// error while parsing follows it), and empty `--opt=` values, which CLI11
// would fill from the next argument.
std::string prescan(int argc, char** argv, Options& opts)
{
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--")
            break;
        if (a == "--json")
            opts.json = true;
        if (a.starts_with("--") && a.find('=') == a.size() - 1)
            return fmt::format("{}: empty value (give {}VALUE or leave the option out)", a, a);
    }
    return "";
}

}  // namespace
}  // namespace gms::cli

int main(int argc, char** argv)
{
    using namespace gms::cli;
    Options opts;
    Action action;
    CLI::App app{"gmemscope: trace guest_memfd, KVM memory attributes, VFIO, iommufd and dma-buf"};
    bool version = false;
    app.add_flag("--version", version, "Print the version and exit");
    app.require_subcommand(0, 1);   // none only with --version: checked below
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

    if (argc == 3 && std::string(argv[1]) == "--generate-docs") {
        try {
            generate_docs(app, argv[2]);
        } catch (const Error& e) {
            print_error(opts, e.what());
            return e.code;
        }
        return kOk;
    }
    if (std::string why = prescan(argc, argv, opts); !why.empty()) {
        print_error(opts, fmt::format("{} (see gmemscope --help)", why));
        return kUsage;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(opts, fmt::format("{} (see gmemscope --help)", e.what()));
        return kUsage;
    }
    if (version) {
        if (opts.json)
            fmt::print("{}\n", gms::dump_line(nlohmann::json{{"type", "version"}, {"version", GMS_VERSION}}));
        else
            fmt::print("gmemscope {}\n", GMS_VERSION);
        return kOk;
    }
    if (!action) {
        print_error(opts, "a subcommand is required (see gmemscope --help)");
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
