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
    sub->add_option("-o,--output", output,
                    "Recording file (an existing one is kept as FILE.old), or a stream: - (stdout), "
                    "a character device, a FIFO")
        ->capture_default_str();
    sub->add_flag("-f,--force", force, "Overwrite an existing FILE instead of keeping it as FILE.old");
    add_target_options(sub, t);
    sub->callback([&opts, &action] {
        action = [&opts] {
            // Opened before anything is loaded: an output that cannot be
            // written is refused before the programs and the command start.
            std::unique_ptr<Output> out;
            try {
                out = std::make_unique<Output>(output, force ? Output::Existing::replace : Output::Existing::keep_old);
            } catch (const OutputError& e) {
                throw Error(kFailed, e.what());
            }
            if (out->is_stdout() && opts.json)
                throw Error(kUsage, fmt::format("-o {} writes the recording to stdout, where --json writes too: "
                                                "choose one",
                                                output));
            // The recording holds stdout: the command writes to stderr.
            t.command_stdout_to_stderr = opts.json || out->is_stdout();
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
                w = std::make_unique<RecordingWriter>(*out, meta);
            } catch (const std::runtime_error& e) {
                throw Error(kFailed, e.what());
            }
            RecordingWriter& writer = *w;
            if (!writer.note().empty())
                log::info("note: {}", writer.note());
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
