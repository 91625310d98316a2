// gmemscope trace: events as they happen, as lines or JSON lines.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/target.hpp"
#include "loader/model/engine.hpp"
#include "loader/report/report.hpp"

namespace gms::cli {
namespace {

// Our stdout.  To a terminal, each line as it comes; to a file or a pipe,
// lines gathered and written when the reader has emptied the ring buffer
// (Session's after_batch) or 64 KiB have gathered: a write per batch, not
// per event.  Each write() ends at a line's end and, when a traced command
// shares this stdout, holds at most PIPE_BUF bytes, which a pipe writes
// whole (pipe(7)): the command's output never lands inside one of our lines.
class LineOutput {
public:
    LineOutput(int fd, bool shared) : fd_(fd), tty_(isatty(fd) == 1), chunk_(shared ? PIPE_BUF : kGather) {}
    ~LineOutput()
    {
        try {
            flush();
        } catch (const std::exception&) {
        }
    }
    LineOutput(const LineOutput&) = delete;
    LineOutput& operator=(const LineOutput&) = delete;

    void line(std::string_view s)
    {
        buf_.append(s);
        buf_ += '\n';
        if (tty_ || buf_.size() >= kGather)
            flush();
    }

    void flush()
    {
        size_t at = 0;
        while (at < buf_.size()) {
            size_t end = buf_.size();
            if (end - at > chunk_) {
                // The last line's end within the chunk; a longer line goes alone.
                size_t nl = buf_.rfind('\n', at + chunk_ - 1);
                end = nl != std::string::npos && nl >= at ? nl + 1 : buf_.find('\n', at) + 1;
            }
            put(buf_.data() + at, end - at);
            at = end;
        }
        buf_.clear();
    }

private:
    static constexpr size_t kGather = 64 << 10;

    void put(const char* p, size_t len)
    {
        while (len) {
            ssize_t n = ::write(fd_, p, len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                throw Error(kFailed, fmt::format("writing events to stdout: {}", strerror(errno)));
            p += n;
            len -= size_t(n);
        }
    }

    int fd_;
    bool tty_;
    size_t chunk_;
    std::string buf_;
};

}  // namespace

void register_trace(CLI::App& app, Options& opts, Action& action)
{
    static TargetOptions t;
    auto* sub = app.add_subcommand("trace", "Print gmem, KVM, VFIO and iommufd events live");
    add_target_options(sub, t);
    sub->callback([&opts, &action] {
        action = [&opts] {
            t.command_stdout_to_stderr = opts.json;
            Target target = open_target("trace", t);
            // A traced command writes to this stdout in text mode (under
            // --json to our stderr).
            std::fflush(stdout);
            LineOutput out(STDOUT_FILENO, !t.command.empty() && !opts.json);
            target.session.after_batch = [&out] { out.flush(); };
            if (opts.json)
                out.line(dump_line(nlohmann::json{{"type", "attached"},
                                                  {"programs", attached_json(*target.tracer)},
                                                  {"unobserved", unobserved_json(*target.tracer)},
                                                  {"refused", refused_json(*target.tracer)}}));
            else
                fmt::print(stderr, "tracing with {} programs; Ctrl-C to stop\n", target.tracer->attached().size());
            out.flush();
            uint64_t t0 = 0;
            // The engine follows along for what no single record says: a
            // conversion to private over a range a device can still reach.
            Engine engine;
            engine.on_exposure = [&](const Exposure& x) {
                if (opts.json)
                    out.line(dump_line({{"type", "finding"}, {"severity", "critical"},
                                        {"kind", "dma_private"}, {"exposure", exposure_json(engine, x)}}));
                else
                    out.line("CRITICAL " + engine.describe(x));
            };
            auto sink = [&](const Event& ev) {
                if (!t0)
                    t0 = ev.hdr().ts_ns;
                out.line(opts.json ? dump_line(to_json(ev)) : to_line(ev, t0));
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
                out.line(dump_line(to_json(Event{end.counters})));
            else
                fmt::print(stderr, "{}\n", lost_line(end.counters));
            out.flush();
            return session_exit(end);
        };
    });
}

}  // namespace gms::cli
