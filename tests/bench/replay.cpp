// Replay throughput of the correlation engine and its memory per tracked
// range.  Not a test: prints figures.
//   build/bench_replay [RECORDING] [REPEATS]
// Without a recording it replays tests/golden/storm.rec.
#include <malloc.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "loader/model/engine.hpp"
#include "loader/capture/recording.hpp"

namespace {

// Bytes allocated on the heap now.
long heap_bytes() { return long(mallinfo2().uordblks); }

// An engine that saw one 4 GiB gmem memslot and `pages` faults, `stride`
// pages apart, each on a pfn that does not continue the previous one.
gms::Engine faulted_engine(uint64_t pages, uint64_t stride)
{
    gms::Engine engine;
    gms_ioctl_event bind{};
    bind.hdr = {GMS_EV_IOCTL, GMS_ABI_VERSION, 0, sizeof(bind), 0, 0, 0, 0, {}};
    bind.vm = 0x1000;
    bind.op = GMS_IOC_SET_MEMORY_REGION2;
    bind.args.region.slot = 1;
    bind.args.region.size = 1ull << 32;
    bind.args.region.gmem_ino = 5;
    engine.add({bind});
    for (uint64_t i = 0; i < pages; i++) {
        gms_fault_event f{};
        f.hdr = {GMS_EV_FAULT, GMS_ABI_VERSION, 0, sizeof(f), 0, 0, 0, 0, {}};
        f.vm = 0x1000;
        f.gfn = stride * i;
        f.pfn = 0x100000 + (stride == 1 ? i : 7 * i);
        f.gmem_ino = 5;
        f.gmem_index = stride * i;
        engine.add({f});
    }
    return engine;
}

// Feeds the events to a fresh engine `repeats` times (a function of its
// own so that `valgrind --tool=callgrind --toggle-collect='*replay_into*'`
// profiles this loop alone).
[[gnu::noinline]] size_t replay_into(const std::vector<gms::Event>& events, int repeats)
{
    size_t fed = 0;
    for (int i = 0; i < repeats; i++) {
        gms::Engine engine;
        for (const auto& ev : events)
            engine.add(ev);
        fed += events.size();
    }
    return fed;
}

// CPU time of this thread: on a shared machine wall time counts the other
// processes' turns too.
double thread_cpu_s()
{
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv)
{
    std::string path = argc > 1 ? argv[1] : std::string(GMS_SOURCE_DIR) + "/tests/golden/storm.rec";
    int repeats = argc > 2 ? std::stoi(argv[2]) : 200;

    // Decoding from the file, once: the reader's own cost.
    std::vector<gms::Event> events;
    auto t0 = std::chrono::steady_clock::now();
    gms::RecordingReader reader(path);
    while (auto ev = reader.next())
        events.push_back(*ev);
    double read_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("read and decode: {} records in {:.3f} ms = {:.2f} M records/s\n", events.size(), read_s * 1e3,
               double(events.size()) / read_s / 1e6);

    // The engine alone, on one core, over the same events again and again.
    auto t1 = std::chrono::steady_clock::now();
    double cpu0 = thread_cpu_s();
    size_t fed = replay_into(events, repeats);
    double cpu = thread_cpu_s() - cpu0;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    fmt::print("engine replay: {} events in {:.3f} s = {:.2f} M events/s (one core); {:.3f} s of CPU = {:.2f} M "
               "events per CPU-second\n",
               fed, s, double(fed) / s / 1e6, cpu, double(fed) / cpu / 1e6);

    // Memory per tracked range: every other page faulted gives one range
    // per page in each map; pages faulted in order merge into one.
    for (uint64_t stride : {2, 1}) {
        long before = heap_bytes();
        gms::Engine engine = faulted_engine(1'000'000, stride);
        long bytes = heap_bytes() - before;
        fmt::print("memory, 1M pages faulted {}: {} interval-map ranges in {} KiB = {:.0f} bytes per range\n",
                   stride == 1 ? "in order" : "every other page", engine.segments(), bytes >> 10,
                   double(bytes) / double(engine.segments()));
    }
    return 0;
}
