// gmemscope top: a live view of invalidation storms that refreshes in
// place, like perf top and kvm_stat.  The kernel only counts (per gmem
// file and process: punch-holes, bytes, page-cache removals and adds,
// faults, log2 histograms of punch size and latency); the view reads the
// counters every interval, so it costs far less than recording events.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/target.hpp"
#include "loader/report/symbols.hpp"

namespace gms::cli {
namespace {

using Key = std::pair<uint64_t, uint32_t>;   // gmem ino, tgid
using Snapshot = std::map<Key, gms_agg_val>;

struct Row {
    Key key;
    gms_agg_val d;   // counts over the interval
};

gms_agg_val delta(const gms_agg_val& now, const gms_agg_val* before)
{
    gms_agg_val d = now;
    if (!before)
        return d;
    d.punches -= before->punches;
    d.punched_bytes -= before->punched_bytes;
    d.punch_errors -= before->punch_errors;
    d.invalidated_pages -= before->invalidated_pages;
    d.faults -= before->faults;
    d.allocated_pages -= before->allocated_pages;
    for (size_t i = 0; i < GMS_HIST_SLOTS; i++) {
        d.size_hist[i] -= before->size_hist[i];
        d.lat_hist[i] -= before->lat_hist[i];
    }
    return d;
}

// Upper bound of the bucket holding the q-quantile: "under 8 us".
uint64_t quantile_bound(const __u64 (&hist)[GMS_HIST_SLOTS], double q)
{
    uint64_t total = 0;
    for (auto n : hist)
        total += n;
    if (!total)
        return 0;
    uint64_t want = uint64_t(double(total) * q), seen = 0;
    for (size_t i = 0; i < GMS_HIST_SLOTS; i++) {
        seen += hist[i];
        if (seen > want)
            return i ? 1ull << i : 1;
    }
    return 1ull << (GMS_HIST_SLOTS - 1);
}

std::string ns_text(uint64_t ns)
{
    if (!ns)
        return "-";
    if (ns < 10000)
        return fmt::format("<{}ns", ns);
    if (ns < 10000000)
        return fmt::format("<{}us", ns / 1000);
    return fmt::format("<{}ms", ns / 1000000);
}

std::vector<Row> rows_of(const Snapshot& now, const Snapshot& before)
{
    std::vector<Row> rows;
    for (const auto& [k, v] : now) {
        auto b = before.find(k);
        gms_agg_val d = delta(v, b == before.end() ? nullptr : &b->second);
        if (d.punches || d.invalidated_pages || d.faults || d.allocated_pages)
            rows.push_back({k, d});
    }
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
        return std::tie(a.d.punches, a.d.invalidated_pages, a.d.faults) >
               std::tie(b.d.punches, b.d.invalidated_pages, b.d.faults);
    });
    return rows;
}

nlohmann::json frame_json(const std::vector<Row>& rows, double secs, const gms_drops_record& c)
{
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& r : rows) {
        nlohmann::json j = {{"gmem_ino", r.key.first},
                            {"tgid", r.key.second},
                            {"comm", std::string(r.d.comm, strnlen(r.d.comm, sizeof(r.d.comm)))},
                            {"punches", r.d.punches},
                            {"invalidated_pages", r.d.invalidated_pages},
                            {"faults", r.d.faults},
                            {"punches_per_s", double(r.d.punches) / secs},
                            {"punched_bytes_per_s", double(r.d.punched_bytes) / secs},
                            {"punch_errors", r.d.punch_errors},
                            {"invalidated_pages_per_s", double(r.d.invalidated_pages) / secs},
                            {"faults_per_s", double(r.d.faults) / secs},
                            {"allocated_pages_per_s", double(r.d.allocated_pages) / secs},
                            {"punch_latency_p50_ns_under", quantile_bound(r.d.lat_hist, 0.5)},
                            {"punch_latency_p99_ns_under", quantile_bound(r.d.lat_hist, 0.99)}};
        if (r.d.vm)
            j["vm"] = fmt::format("{:#x}", r.d.vm);
        arr.push_back(j);
    }
    uint64_t lost = 0;
    for (auto d : c.dropped)
        lost += d;
    return {{"type", "top"}, {"seconds", secs}, {"rows", arr}, {"lost", lost}};
}

std::string frame_text(const std::vector<Row>& rows, double secs, const gms_drops_record& c, size_t max_rows)
{
    uint64_t lost = 0;
    for (auto d : c.dropped)
        lost += d;
    std::string out = fmt::format("gmemscope top: per gmem file and process, over {:.1f} s; {} records lost\n\n", secs,
                                  lost);
    out += fmt::format("{:<17} {:<22} {:>9} {:>10} {:>9} {:>11} {:>10} {:>10} {:>9} {:>9}\n", "VM", "PROCESS",
                       "GMEM INO", "PUNCH/s", "KiB/s", "REMOVED/s", "FAULT/s", "ALLOC/s", "LAT p50", "LAT p99");
    for (size_t i = 0; i < rows.size() && i < max_rows; i++) {
        const auto& r = rows[i];
        std::string comm(r.d.comm, strnlen(r.d.comm, sizeof(r.d.comm)));
        out += fmt::format("{:<17} {:<22} {:>9} {:>10.0f} {:>9.0f} {:>11.0f} {:>10.0f} {:>10.0f} {:>9} {:>9}\n",
                           r.d.vm ? fmt::format("{:x}", r.d.vm) : "-", fmt::format("{}/{}", comm, r.key.second),
                           r.key.first ? std::to_string(r.key.first) : "not gmem", double(r.d.punches) / secs,
                           double(r.d.punched_bytes) / 1024 / secs, double(r.d.invalidated_pages) / secs,
                           double(r.d.faults) / secs, double(r.d.allocated_pages) / secs,
                           ns_text(quantile_bound(r.d.lat_hist, 0.5)), ns_text(quantile_bound(r.d.lat_hist, 0.99)));
    }
    if (rows.empty())
        out += "(no gmem invalidations or faults in this interval)\n";
    return out;
}

void print_stacks(const std::vector<Tracer::SampledStack>& stacks, uint32_t sample, bool json, UserSymbols& usyms)
{
    KernelSymbols ksyms;
    nlohmann::json arr = nlohmann::json::array();
    if (!json)
        fmt::print("\nwhere gmem pages were removed from (1 in {} sampled, most first):\n", sample);
    for (size_t i = 0; i < stacks.size() && i < 5; i++) {
        const auto& s = stacks[i];
        nlohmann::json k = nlohmann::json::array(), u = nlohmann::json::array();
        for (auto ip : s.kernel)
            k.push_back(ksyms.name(ip));
        for (auto ip : s.user)
            u.push_back(usyms.name(pid_t(s.tgid), ip));
        arr.push_back({{"tgid", s.tgid}, {"samples", s.count}, {"kernel", k}, {"user", u}});
        if (json)
            continue;
        fmt::print("\n  {} samples, pid {}\n", s.count, s.tgid);
        for (const auto& f : k)
            fmt::print("    {}\n", f.get<std::string>());
        fmt::print("    --\n");
        for (const auto& f : u)
            fmt::print("    {}\n", f.get<std::string>());
    }
    if (json)
        fmt::print("{}\n", dump_line({{"type", "top_stacks"}, {"sample_1_in", sample}, {"stacks", arr}}));
}

}  // namespace

void register_top(CLI::App& app, Options& opts, Action& action)
{
    static TargetOptions t;
    static double interval_s = 1.0;
    static bool batch = false;
    static size_t max_rows = 20;
    static uint32_t stack_sample = 0;
    auto* sub = app.add_subcommand("top", "Live view of gmem invalidations and faults, counted in the kernel");
    sub->add_option("-i,--interval", interval_s, "Seconds between refreshes")->check(finite_range(0.1, 3600));
    sub->add_flag("-b,--batch", batch, "Print each frame after the last instead of refreshing in place");
    sub->add_option("-n,--rows", max_rows, "Rows shown")->check(unsigned_number());
    sub->add_option("--stacks", stack_sample,
                    "Sample the user and kernel stacks of 1 in N gmem page removals; shown at the end")
        ->check(unsigned_number());
    add_target_options(sub, t);
    sub->callback([&opts, &action] {
        action = [&opts] {
            t.aggregate = true;
            t.stack_sample = stack_sample;
            t.command_stdout_to_stderr = opts.json;
            Target target = open_target("top", t);
            target.session.counters_every_s = interval_s;
            bool in_place = !batch && !opts.json && isatty(STDOUT_FILENO);
            std::setvbuf(stdout, nullptr, _IOLBF, 0);
            Snapshot before, start;
            auto show = [&](const Snapshot& now, const Snapshot& since, double secs, const gms_drops_record& c) {
                auto rows = rows_of(now, since);
                if (opts.json)
                    fmt::print("{}\n", dump_line(frame_json(rows, secs, c)));
                else
                    fmt::print("{}{}\n", in_place ? "\033[H\033[2J" : "", frame_text(rows, secs, c, max_rows));
            };
            UserSymbols usyms;   // maps read while the processes live
            auto on_interval = [&](const gms_drops_record& c) {
                Snapshot now = target.tracer->aggregates();
                if (stack_sample)
                    for (const auto& [key, v] : now)
                        usyms.remember(pid_t(key.second));
                show(now, before, interval_s, c);
                before = std::move(now);
            };
            auto t0 = std::chrono::steady_clock::now();
            SessionEnd end = run_session(*target.tracer, target.child.get(), target.session,
                                         // counted in the kernel: the few records that still come are not needed
                                         [](const Event&) {}, on_interval);
            double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            // The whole run, once more, as the last frame.
            if (!opts.json)
                fmt::print("\nwhole run:\n");
            show(target.tracer->aggregates(), start, secs, end.counters);
            if (stack_sample)
                print_stacks(target.tracer->sampled_stacks(), stack_sample, opts.json, usyms);
            return session_exit(end);
        };
    });
}

}  // namespace gms::cli
