// gmemscope trace: events as they happen, as lines or JSON lines.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/target.hpp"
#include "loader/model/engine.hpp"
#include "loader/report/report.hpp"

namespace gms::cli {

void register_trace(CLI::App& app, Options& opts, Action& action)
{
    static TargetOptions t;
    auto* sub = app.add_subcommand("trace", "Print gmem, KVM, VFIO and iommufd events live");
    add_target_options(sub, t);
    sub->callback([&opts, &action] {
        action = [&opts] {
            t.command_stdout_to_stderr = opts.json;
            Target target = open_target("trace", t);
            // Line-buffered: a reader of the pipe sees each event as it
            // comes, and a traced command sharing this stdout (text mode;
            // under --json it writes to our stderr) never splits a line.
            std::setvbuf(stdout, nullptr, _IOLBF, 0);
            if (opts.json)
                fmt::print("{}\n", dump_line(nlohmann::json{{"type", "attached"},
                                                          {"programs", attached_json(*target.tracer)},
                                                          {"unobserved", unobserved_json(*target.tracer)},
                                                          {"refused", refused_json(*target.tracer)}}
                                       ));
            else
                fmt::print(stderr, "tracing with {} programs; Ctrl-C to stop\n", target.tracer->attached().size());
            uint64_t t0 = 0;
            // The engine follows along for what no single record says: a
            // conversion to private over a range a device can still reach.
            Engine engine;
            engine.on_exposure = [&](const Exposure& x) {
                if (opts.json)
                    fmt::print("{}\n", dump_line({{"type", "finding"}, {"severity", "critical"},
                                                   {"kind", "dma_private"}, {"exposure", exposure_json(engine, x)}}));
                else
                    fmt::print("CRITICAL {}\n", engine.describe(x));
            };
            auto sink = [&](const Event& ev) {
                if (!t0)
                    t0 = ev.hdr().ts_ns;
                if (opts.json)
                    fmt::print("{}\n", dump_line(to_json(ev)));
                else
                    fmt::print("{}\n", to_line(ev, t0));
                engine.add(ev);
            };
            uint64_t last_lost = 0;
            auto on_counters = [&](const gms_drops_record& c) {
                uint64_t lost = 0;
                for (auto d : c.dropped)
                    lost += d;
                if (lost != last_lost)
                    fmt::print(stderr, "warning: {}\n", lost_line(c));
                last_lost = lost;
            };
            SessionEnd end = run_session(*target.tracer, target.child.get(), target.session, sink, on_counters);
            if (opts.json)
                fmt::print("{}\n", dump_line(to_json(Event{end.counters})));
            else
                fmt::print(stderr, "{}\n", lost_line(end.counters));
            std::fflush(stdout);
            return session_exit(end);
        };
    });
}

}  // namespace gms::cli
