// gmemscope export: a recording as a Chrome trace-event JSON file, for
// Perfetto's UI (ui.perfetto.dev) or chrome://tracing.
#include <sys/stat.h>

#include <ostream>

#include <fmt/format.h>

#include "cli/cli.hpp"
#include "loader/base/output.hpp"
#include "loader/report/perfetto.hpp"
#include "loader/capture/recording.hpp"

namespace gms::cli {
void register_export(CLI::App& app, Options&, Action& action)
{
    static std::string input = "gmemscope.rec", output = "gmemscope.trace.json";
    auto* sub = app.add_subcommand("export", "Convert a recording to Chrome trace-event JSON (Perfetto)");
    sub->add_option("-i,--input", input, "Recording file")->capture_default_str();
    sub->add_option("-o,--output", output,
                    "Trace file to write (replaced whole at the end), or a stream: - (stdout), a character "
                    "device, a FIFO")
        ->capture_default_str();
    sub->callback([&action] {
        action = [] {
            // The same file under another name (a hard link, ./x) is refused
            // too: writing the trace must never destroy the recording.
            struct stat in {}, out {};
            if (stat(input.c_str(), &in) == 0 && stat(output.c_str(), &out) == 0 && in.st_dev == out.st_dev &&
                in.st_ino == out.st_ino)
                throw Error(kUsage, fmt::format("-o {} is the input recording {}: choose another output file",
                                                output, input));
            // Opened before the recording is read: an output that cannot
            // be written is refused at once.
            try {
                Output file(output, Output::Existing::replace);
                OutputBuf buf(file);
                std::ostream stream(&buf);
                stream.exceptions(std::ios::badbit);   // the OutputError itself, not a silent bad stream
                PerfettoWriter writer(stream);
                Lost damage = read_recording(input, [&](const Event& ev) { writer.add(ev); });
                writer.finish();
                stream.flush();
                file.commit();
                fmt::print(stderr, "wrote {}{}\n", file.stream() ? "the trace to " + output : output,
                           file.stream() ? "" : ": open it in ui.perfetto.dev");
                report_damage(damage);
            } catch (const OutputError& e) {
                throw Error(kFailed, e.what());
            }
            return 0;
        };
    });
}

}  // namespace gms::cli
