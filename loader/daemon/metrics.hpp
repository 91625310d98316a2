// The daemon's metrics: counters folded from the tracer's records and
// kernel counters, gauges from the last audit, rendered as OpenMetrics
// text (https://openmetrics.io, 1.0.0).  Memory is bounded: label sets
// are bounded by ioctl ops x errnos, and the VMs remembered are the live
// ones.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include "loader/audit/audit.hpp"
#include "loader/events/events.hpp"

namespace gms {

inline constexpr const char* kOpenMetricsType = "application/openmetrics-text; version=1.0.0; charset=utf-8";

class DaemonMetrics {
public:
    // A record from the tracer (aggregate mode sends only the rare ones).
    void add(const Event& ev);
    void set_audit(const AuditReport& r, double unix_time_s);
    // Keeps the counts of an in-kernel aggregate about to be deleted.
    void retire(const gms_agg_val& v);
    // Everything, with the kernel's counters and in-kernel aggregates now.
    std::string render(const gms_drops_record& counters,
                       const std::map<std::pair<uint64_t, uint32_t>, gms_agg_val>& aggregates) const;
    uint64_t vms_seen() const { return vms_seen_; }

private:
    // (op, to, errno) -> count
    std::map<std::tuple<std::string, std::string, std::string>, uint64_t> conversions_;
    // (kind, errno) -> count, and bytes of successful ones
    std::map<std::pair<std::string, std::string>, uint64_t> pins_, unpins_;
    std::map<std::string, uint64_t> pinned_bytes_;
    gms_agg_val retired_{};   // counts of aggregates deleted from the kernel's map
    std::set<uint64_t> live_vms_;
    uint64_t vms_seen_ = 0;
    uint64_t audits_ = 0;
    double audit_time_s_ = 0;
    std::string audit_source_;
    uint64_t audit_vms_ = 0, audit_memslots_ = 0, audit_gmem_ = 0, audit_resident_ = 0, audit_devices_ = 0;
    std::map<std::string, uint64_t> audit_findings_;   // severity -> count
};

}  // namespace gms
