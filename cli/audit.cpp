// gmemscope audit: a snapshot of every VM process on the host, its
// memslots, gmem files, VFIO and iommufd fds, and what looks wrong.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "loader/audit/audit.hpp"
#include "loader/events/events.hpp"
#include "loader/base/log.hpp"
#include "loader/capture/recording.hpp"

namespace gms::cli {

std::unique_ptr<Engine> load_recording(const std::string& path)
{
    if (path.empty())
        return nullptr;
    auto engine = std::make_unique<Engine>();
    try {
        RecordingReader reader(path);
        while (auto ev = reader.next())
            engine->add(*ev);
    } catch (const BadRecording& e) {
        throw Error(kBadInput, e.what());
    }
    return engine;
}

std::unique_ptr<Auditor> open_auditor(bool force_procfs)
{
    std::optional<Features> features;
    if (!force_procfs && missing_bpf_capabilities().empty())
        features = Features::probe();
    auto auditor = std::make_unique<Auditor>(features ? &*features : nullptr, force_procfs);
    if (!auditor->fallback_reason().empty())
        log::info("note: audit reads /proc/*/fd: {}", auditor->fallback_reason());
    return auditor;
}

void register_audit(CLI::App& app, Options& opts, Action& action)
{
    static std::string input;
    static bool procfs = false;
    auto* sub = app.add_subcommand("audit", "Snapshot of every VM on the host: memslots, gmem files, VFIO and "
                                            "iommufd fds, and findings");
    sub->add_option("-i,--input", input, "A recording whose DMA mappings, pins and attributes to add");
    sub->add_flag("--procfs", procfs, "Read /proc/*/fd instead of the BPF iterator");
    sub->callback([&opts, &action] {
        action = [&opts] {
            auto recording = load_recording(input);
            AuditReport r = open_auditor(procfs)->run(recording.get(), input);
            if (opts.json)
                fmt::print("{}\n", dump_line(to_json(r)));
            else
                fmt::print("{}", to_text(r));
            return 0;
        };
    });
}

}  // namespace gms::cli
