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

Lost read_recording(const std::string& path, const std::function<void(const Event&)>& f)
{
    try {
        RecordingReader reader(path);
        while (auto ev = reader.next())
            f(*ev);
        return {reader.damage_text(), reader.damage_json()};
    } catch (const BadRecording& e) {
        throw Error(kBadInput, e.what());
    }
}

void report_damage(const Lost& damage)
{
    if (!damage.text.empty())
        throw Error(kDamaged, damage.text);
}

int print_document(nlohmann::json doc, const Lost& damage)
{
    if (!damage.json.is_null())
        doc["damage"] = damage.json;
    fmt::print("{}\n", dump_line(doc));
    return damage.text.empty() ? int(kOk) : int(kDamaged);
}

std::unique_ptr<Engine> load_recording(const std::string& path, Lost& damage)
{
    if (path.empty())
        return nullptr;
    auto engine = std::make_unique<Engine>();
    damage = read_recording(path, [&](const Event& ev) { engine->add(ev); });
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
            Lost damage;
            auto recording = load_recording(input, damage);
            AuditReport r = open_auditor(procfs)->run(recording.get(), input);
            if (opts.json)
                return print_document(to_json(r), damage);
            fmt::print("{}", to_text(r));
            std::fflush(stdout);
            report_damage(damage);
            return 0;
        };
    });
}

}  // namespace gms::cli
