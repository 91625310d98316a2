// gmemscope report: what a recording says happened to each VM's memory.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/capture/recording.hpp"
#include "loader/model/engine.hpp"
#include "loader/report/report.hpp"

namespace gms::cli {

void register_report(CLI::App& app, Options& opts, Action& action)
{
    static std::string input = "gmemscope.rec";
    auto* sub = app.add_subcommand("report", "Summarize a recording per VM and gfn range");
    sub->add_option("-i,--input", input, "Recording file")->capture_default_str();
    sub->callback([&opts, &action] {
        action = [&opts] {
            Engine engine;
            Lost damage;
            try {
                RecordingReader reader(input);
                if (!opts.json)
                    fmt::print("recording of kernel {} ({} clock)\n", reader.meta().value("kernel", "?"),
                               reader.meta().value("clock", "?"));
                while (auto ev = reader.next())
                    engine.add(*ev);
                damage = {reader.damage_text(), reader.damage_json()};
            } catch (const BadRecording& e) {
                throw Error(kBadInput, e.what());
            }
            if (opts.json)
                return print_document(report_json(engine), damage);
            fmt::print("{}", report_text(engine));
            std::fflush(stdout);
            report_damage(damage);
            return 0;
        };
    });
}

}  // namespace gms::cli
