// Export to the Chrome trace-event JSON format, which Perfetto's UI and
// chrome://tracing open: a process per VM with tracks per vCPU, per gmem
// file and for its calls; punch-holes, ioctls and conversions as spans,
// faults and page-cache removals as instants, DMA mappings (pins) as
// async spans from map to unmap.
#pragma once

#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <string_view>

#include "loader/model/engine.hpp"

namespace gms {

class PerfettoWriter {
public:
    explicit PerfettoWriter(std::ostream& out);
    void add(const Event& ev);
    // Adds the dma-bufs' lives and the critical exposures, closes pins
    // still open at the end and the JSON document.
    void finish();

private:
    int pid_of(uint64_t vm);
    int gmem_tid(uint64_t vm, uint64_t ino);
    void put(const nlohmann::json& j);
    void put_record(const nlohmann::json& args, double ts_us, const char* ph, std::optional<double> dur_us, int pid,
                    int tid, std::string_view cat, const std::string& name);
    void meta(int pid, int tid, const std::string& name);
    void put_findings();

    std::ostream& out_;
    Engine engine_;   // inode -> VM for records that do not carry it
    bool first_ = true;
    uint64_t t0_ns_ = 0;
    uint64_t last_ns_ = 0;
    std::map<uint64_t, int> pids_;                     // vm -> pid
    std::map<std::pair<uint64_t, uint64_t>, int> gmem_tids_;
    std::set<std::pair<int, int>> named_;
    std::map<std::string, nlohmann::json> open_pins_;  // id -> begin event
    std::string line_;   // put_record's, kept to reuse its memory
};

}  // namespace gms
