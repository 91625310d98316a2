// gmemscope export: a recording as a Chrome trace-event JSON file, for
// Perfetto's UI (ui.perfetto.dev) or chrome://tracing.
#include <fstream>

#include <fmt/format.h>

#include "cli/cli.hpp"
#include "loader/report/perfetto.hpp"
#include "loader/capture/recording.hpp"

namespace gms::cli {

void register_export(CLI::App& app, Options&, Action& action)
{
    static std::string input = "gmemscope.rec", output = "gmemscope.trace.json";
    auto* sub = app.add_subcommand("export", "Convert a recording to Chrome trace-event JSON (Perfetto)");
    sub->add_option("-i,--input", input, "Recording file")->capture_default_str();
    sub->add_option("-o,--output", output, "Trace file to write")->capture_default_str();
    sub->callback([&action] {
        action = [] {
            std::ofstream out(output);
            if (!out)
                throw Error(kFailed, fmt::format("cannot write {}", output));
            PerfettoWriter writer(out);
            try {
                RecordingReader reader(input);
                while (auto ev = reader.next())
                    writer.add(*ev);
            } catch (const BadRecording& e) {
                throw Error(kBadInput, e.what());
            }
            writer.finish();
            if (!out.flush())
                throw Error(kFailed, fmt::format("writing {} failed", output));
            fmt::print(stderr, "wrote {}: open it in ui.perfetto.dev\n", output);
            return 0;
        };
    });
}

}  // namespace gms::cli
