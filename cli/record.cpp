// gmemscope record: events into a recording file for `report`.
#include <sys/utsname.h>

#include <chrono>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/target.hpp"
#include "loader/base/log.hpp"
#include "loader/capture/recording.hpp"

namespace gms::cli {

void register_record(CLI::App& app, Options& opts, Action& action)
{
    static TargetOptions t;
    static std::string output = "gmemscope.rec";
    static bool force = false;
    auto* sub = app.add_subcommand("record", "Record events to a file (see report)");
    sub->add_option("-o,--output", output, "Recording file; an existing one is kept as FILE.old")
        ->capture_default_str();
    sub->add_flag("-f,--force", force, "Overwrite an existing FILE instead of keeping it as FILE.old");
    add_target_options(sub, t);
    sub->callback([&opts, &action] {
        action = [&opts] {
            t.command_stdout_to_stderr = opts.json;
            Target target = open_target("record", t);
            struct timespec mono {}, real {};
            clock_gettime(CLOCK_MONOTONIC, &mono);
            clock_gettime(CLOCK_REALTIME, &real);
            auto ns = [](const timespec& ts) { return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec); };
            nlohmann::json meta = {{"format", "gmemscope-recording"},
                                   {"kernel", target.features.kernel_release()},
                                   {"clock", "CLOCK_MONOTONIC"},
                                   {"start_monotonic_ns", ns(mono)},
                                   {"start_realtime_ns", ns(real)},
                                   {"command", t.command},
                                   {"pids", t.pids},
                                   {"vms", t.vms},
                                   {"attached", attached_json(*target.tracer)},
                                   {"unobserved", unobserved_json(*target.tracer)},
                                   {"refused", refused_json(*target.tracer)}};
            std::unique_ptr<RecordingWriter> w;
            try {
                w = std::make_unique<RecordingWriter>(output, meta, force);
            } catch (const std::runtime_error& e) {
                throw Error(kFailed, e.what());
            }
            RecordingWriter& writer = *w;
            if (!writer.kept_as().empty())
                log::info("note: the existing {} was kept as {}", output, writer.kept_as());
            auto sink = [&](const Event& ev) { writer.write(ev); };
            auto on_counters = [&](const gms_drops_record& c) { writer.write(Event{c}); };
            SessionEnd end;
            try {
                end = run_session(*target.tracer, target.child.get(), target.session, sink, on_counters);
                writer.finish(end.counters);
            } catch (const std::runtime_error& e) {
                // A full disk: what reached the file stays readable.
                throw Error(kFailed, fmt::format("{}; recording stopped after {} records (gmemscope report reads "
                                                 "what reached the file)",
                                                 e.what(), writer.records()));
            }
            if (opts.json)
                fmt::print("{}\n", dump_line(nlohmann::json{{"type", "recorded"},
                                                  {"output", output},
                                                  {"records", writer.records()},
                                                  {"counters", to_json(Event{end.counters})}}
                                       ));
            else
                fmt::print(stderr, "recorded {} records to {}{}; {}\n", writer.records(), output,
                           end.signal ? fmt::format(" (stopped by signal {})", end.signal) : "",
                           lost_line(end.counters));
            return session_exit(end);
        };
    });
}

}  // namespace gms::cli
