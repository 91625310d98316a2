// libFuzzer target: bytes as a recording file, through the reader, the
// correlation engine (with a watched gfn, as explain runs it), the report
// (text and JSON, with the damage) and the Perfetto export.  Built with
// clang's -fsanitize=fuzzer,address,undefined (CMakeLists.txt, target
// fuzz_recording), where a stored checksum of 0 is the only wrong one
// (recording.cpp crc_matches), so that mutations reach both what a
// checksum guards and the salvage of what fails it; seeded with
// tests/golden/*.rec and tests/fuzz/seeds (the salvage seeds come from
// make_salvage_seeds.py: a cut block, a bad block checksum, a missing
// block, a block claiming 0xffffffff records, a bad metadata checksum);
// inputs that once crashed or hung are kept in tests/fuzz/regressions/.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>

#include "loader/model/engine.hpp"
#include "loader/report/perfetto.hpp"
#include "loader/capture/recording.hpp"
#include "loader/report/report.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    // The reader maps a file: a memfd is one, without touching the disk.
    int fd = memfd_create("fuzz.rec", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);
        if (n <= 0)
            break;
        off += size_t(n);
    }
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    uint64_t watch_gfn = 0;
    if (size >= 8)
        std::memcpy(&watch_gfn, data + size - 8, 8);
    try {
        gms::RecordingReader reader(path);
        gms::Engine engine, watched;
        watched.watch(0, 0, watch_gfn % (1u << 20));
        std::ostringstream trace;
        gms::PerfettoWriter perfetto(trace);
        uint64_t salvaged = 0;
        while (auto ev = reader.next()) {
            salvaged += reader.salvaged();
            engine.add(*ev);
            watched.add(*ev);
            perfetto.add(*ev);
        }
        perfetto.finish();
        if (salvaged != reader.records_salvaged() || reader.records_salvaged() > reader.records_read())
            __builtin_trap();
        (void)reader.damage_text();
        (void)gms::report_text(engine);
        auto json = gms::report_json(engine);
        json["damage"] = reader.damage_json();   // as report --json writes it
        (void)gms::dump_line(json);   // as the CLI writes it: invalid UTF-8 replaced
        for (const auto& t : watched.timeline())
            (void)t.what.size();
        (void)watched.gfn_info(0, watch_gfn % (1u << 20));
    } catch (const gms::BadRecording&) {
    } catch (const std::runtime_error&) {
    }
    close(fd);
    return 0;
}
