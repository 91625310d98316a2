// gmemscope export: a recording as a Chrome trace-event JSON file, for
// Perfetto's UI (ui.perfetto.dev) or chrome://tracing.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "cli/cli.hpp"
#include "loader/report/perfetto.hpp"
#include "loader/capture/recording.hpp"

namespace gms::cli {
namespace {

// A temporary file beside `path`, renamed over it by commit(); removed
// if never committed, so a failed export leaves nothing behind.
class TempOutput {
public:
    explicit TempOutput(const std::string& path) : path_(path)
    {
        auto slash = path.rfind('/');
        tmp_ = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + ".gmemscope-export.XXXXXX";
        int fd = mkstemp(tmp_.data());
        if (fd < 0)
            throw Error(kFailed, fmt::format("cannot write {}: {}", path, strerror(errno)));
        close(fd);
        out_.open(tmp_, std::ios::binary | std::ios::trunc);
        if (!out_)
            throw Error(kFailed, fmt::format("cannot write {}", tmp_));
    }
    ~TempOutput()
    {
        if (!tmp_.empty())
            unlink(tmp_.c_str());
    }
    std::ostream& stream() { return out_; }
    void commit()
    {
        out_.close();
        if (!out_ || chmod(tmp_.c_str(), 0644) != 0 || rename(tmp_.c_str(), path_.c_str()) != 0)
            throw Error(kFailed, fmt::format("writing {} failed: {}", path_, strerror(errno)));
        tmp_.clear();
    }

private:
    std::string path_, tmp_;
    std::ofstream out_;
};

}  // namespace

void register_export(CLI::App& app, Options&, Action& action)
{
    static std::string input = "gmemscope.rec", output = "gmemscope.trace.json";
    auto* sub = app.add_subcommand("export", "Convert a recording to Chrome trace-event JSON (Perfetto)");
    sub->add_option("-i,--input", input, "Recording file")->capture_default_str();
    sub->add_option("-o,--output", output, "Trace file to write")->capture_default_str();
    sub->callback([&action] {
        action = [] {
            // The same file under another name (a hard link, ./x) is refused
            // too: writing the trace must never destroy the recording.
            struct stat in {}, out {};
            if (stat(input.c_str(), &in) == 0 && stat(output.c_str(), &out) == 0 && in.st_dev == out.st_dev &&
                in.st_ino == out.st_ino)
                throw Error(kUsage, fmt::format("-o {} is the input recording {}: choose another output file",
                                                output, input));
            TempOutput file(output);
            PerfettoWriter writer(file.stream());
            std::string damage = read_recording(input, [&](const Event& ev) { writer.add(ev); });
            writer.finish();
            file.commit();
            fmt::print(stderr, "wrote {}: open it in ui.perfetto.dev\n", output);
            report_damage(damage);
            return 0;
        };
    });
}

}  // namespace gms::cli
