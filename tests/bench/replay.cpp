// Replay throughput of the correlation engine and its memory per tracked
// range.  Not a test: prints figures.
//   build/bench_replay [RECORDING] [REPEATS]
// Without a recording it replays tests/golden/storm.rec.
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "loader/engine.hpp"
#include "loader/recording.hpp"

namespace {

// Bytes allocated on the heap now.
long heap_bytes() { return long(mallinfo2().uordblks); }

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
    size_t fed = 0;
    for (int i = 0; i < repeats; i++) {
        gms::Engine engine;
        for (const auto& ev : events)
            engine.add(ev);
        fed += events.size();
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    fmt::print("engine replay: {} events in {:.3f} s = {:.2f} M events/s (one core)\n", fed, s, double(fed) / s / 1e6);

    // Memory per tracked range: a VM whose gmem file has every other page
    // resident holds one pfn range per resident page.
    long before = heap_bytes();
    gms::Engine engine;
    gms_ioctl_event bind{};
    bind.hdr.type = GMS_EV_IOCTL;
    bind.hdr.abi = GMS_ABI_VERSION;
    bind.hdr.size = sizeof(bind);
    bind.vm = 0x1000;
    bind.op = GMS_IOC_SET_MEMORY_REGION2;
    bind.args.region.slot = 1;
    bind.args.region.size = 1ull << 32;
    bind.args.region.gmem_ino = 5;
    engine.add({bind});
    constexpr uint64_t kRanges = 1'000'000;
    for (uint64_t i = 0; i < kRanges; i++) {
        gms_fault_event f{};
        f.hdr.type = GMS_EV_FAULT;
        f.hdr.abi = GMS_ABI_VERSION;
        f.hdr.size = sizeof(f);
        f.vm = 0x1000;
        f.gfn = 2 * i;
        f.pfn = 0x100000 + 7 * i;
        f.gmem_ino = 5;
        f.gmem_index = 2 * i;
        engine.add({f});
    }
    long after = heap_bytes();
    size_t segs = engine.segments();
    fmt::print("memory: {} interval-map ranges in {} KiB = {:.0f} bytes per range\n", segs, (after - before) >> 10,
               double(after - before) / double(segs));
    fmt::print("memory for a fully merged 4 GiB slot (1M pages faulted in order): ");
    gms::Engine merged;
    merged.add({bind});
    long b2 = heap_bytes();
    for (uint64_t i = 0; i < kRanges; i++) {
        gms_fault_event f{};
        f.hdr.type = GMS_EV_FAULT;
        f.hdr.abi = GMS_ABI_VERSION;
        f.hdr.size = sizeof(f);
        f.vm = 0x1000;
        f.gfn = i;
        f.pfn = 0x100000 + i;
        f.gmem_ino = 5;
        f.gmem_index = i;
        merged.add({f});
    }
    fmt::print("{} ranges, {} bytes\n", merged.segments(), heap_bytes() - b2);
    return 0;
}
