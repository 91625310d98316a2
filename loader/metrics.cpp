#include "loader/metrics.hpp"

#include "loader/enforce.hpp"

#include <fmt/format.h>

#include "loader/tracer.hpp"

namespace gms {
namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

// OpenMetrics text: a family's metadata, then its samples; `# EOF` last.
class Exposition {
public:
    void family(const std::string& name, const char* type, const std::string& help)
    {
        name_ = name;
        out_ += fmt::format("# TYPE {} {}\n# HELP {} {}\n", name, type, name, escape(help, false));
    }
    // suffix: "_total" for counters, "" for gauges.
    void sample(const char* suffix, const Labels& labels, uint64_t value)
    {
        out_ += name_ + suffix;
        if (!labels.empty()) {
            out_ += '{';
            for (size_t i = 0; i < labels.size(); i++)
                out_ += fmt::format("{}{}=\"{}\"", i ? "," : "", labels[i].first, escape(labels[i].second, true));
            out_ += '}';
        }
        out_ += fmt::format(" {}\n", value);
    }
    void counter(const std::string& name, const std::string& help, uint64_t value)
    {
        family(name, "counter", help);
        sample("_total", {}, value);
    }
    void gauge(const std::string& name, const std::string& help, uint64_t value)
    {
        family(name, "gauge", help);
        sample("", {}, value);
    }
    std::string finish() { return std::move(out_) + "# EOF\n"; }

private:
    static std::string escape(const std::string& s, bool quote)
    {
        std::string r;
        for (char c : s) {
            if (c == '\\')
                r += "\\\\";
            else if (c == '\n')
                r += "\\n";
            else if (c == '"' && quote)
                r += "\\\"";
            else
                r += c;
        }
        return r;
    }
    std::string out_, name_;
};

std::string errno_label(int64_t ret) { return ret < 0 ? errno_name(ret) : "ok"; }

}  // namespace

void DaemonMetrics::add(const Event& ev)
{
    const auto* e = std::get_if<gms_ioctl_event>(&ev.rec);
    if (!e)
        return;
    std::string err = errno_label(e->ret);
    switch (e->op) {
    case GMS_IOC_CREATE_VM:
        // Each creation is a new VM, even at the address of one that has
        // gone since the last audit (struct kvm is soon reused).
        if (e->ret >= 0) {
            live_vms_.insert(e->args.create_vm.vm);
            vms_seen_++;
        }
        break;
    case GMS_IOC_SET_MEMORY_ATTRIBUTES:
    case GMS_IOC_SET_MEMORY_ATTRIBUTES2:
    case GMS_IOC_GMEM_CONVERT_SHARED:
    case GMS_IOC_GMEM_CONVERT_PRIVATE: {
        // The convert ioctls say the direction in their name.
        bool to_private = e->op == GMS_IOC_GMEM_CONVERT_PRIVATE ||
                          (e->op != GMS_IOC_GMEM_CONVERT_SHARED && (e->args.attrs.attributes & GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE));
        conversions_[{std::string(ioctl_op_name(e->op)), to_private ? "private" : "shared", err}]++;
        break;
    }
    case GMS_IOC_VFIO_MAP_DMA:
        pins_[{"vfio", err}]++;
        if (e->ret >= 0)
            pinned_bytes_["vfio"] += e->args.vfio_dma.size;
        break;
    case GMS_IOC_IOAS_MAP:
    case GMS_IOC_IOAS_MAP_FILE:
        pins_[{"iommufd", err}]++;
        if (e->ret >= 0)
            pinned_bytes_["iommufd"] += e->args.ioas.length;
        break;
    case GMS_IOC_VFIO_UNMAP_DMA: unpins_[{"vfio", err}]++; break;
    case GMS_IOC_IOAS_UNMAP: unpins_[{"iommufd", err}]++; break;
    default: break;
    }
}

void DaemonMetrics::retire(const gms_agg_val& v) { add_counts(retired_, v); }

void DaemonMetrics::set_audit(const AuditReport& r, double unix_time_s)
{
    audits_++;
    audit_time_s_ = unix_time_s;
    audit_source_ = r.source;
    audit_vms_ = r.vms.size();
    audit_memslots_ = r.memslot_count();
    audit_gmem_ = r.gmem.size();
    audit_resident_ = r.resident_pages();
    audit_devices_ = r.devices.size();
    audit_findings_.clear();
    for (auto s : {Severity::info, Severity::warning, Severity::error, Severity::critical})
        audit_findings_[std::string(severity_name(s))] = 0;
    for (const auto& f : r.findings)
        audit_findings_[std::string(severity_name(f.severity))]++;
    if (r.source != "iterator")
        return;   // /proc shows no VM addresses
    // Only the live VMs are remembered: memory stays bounded under churn.
    std::set<uint64_t> live;
    for (const auto& v : r.vms) {
        if (!live_vms_.contains(v.id))
            vms_seen_++;   // created before tracing began (or, rarely, its
                           // KVM_CREATE_VM record is not consumed yet: counted twice)
        live.insert(v.id);
    }
    live_vms_ = std::move(live);
}

std::string DaemonMetrics::render(const gms_drops_record& c,
                                  const std::map<std::pair<uint64_t, uint32_t>, gms_agg_val>& aggregates) const
{
    gms_agg_val sum = retired_;
    for (const auto& [key, v] : aggregates)
        add_counts(sum, v);
    Exposition m;
    // A gauge rather than OpenMetrics' info type: the textfile is also
    // read by parsers of the older Prometheus text format.
    m.family("gmemscope_build_info", "gauge", "gmemscope's version");
    m.sample("", {{"version", GMS_VERSION}}, 1);

    m.family("gmemscope_conversions", "counter",
             "Conversion ioctls between shared and private, by ioctl, direction and errno (ok: succeeded)");
    for (const auto& [k, n] : conversions_)
        m.sample("_total", {{"op", std::get<0>(k)}, {"to", std::get<1>(k)}, {"errno", std::get<2>(k)}}, n);
    m.counter("gmemscope_punch_holes", "fallocate(PUNCH_HOLE) calls on gmem files", sum.punches);
    m.counter("gmemscope_punched_bytes", "Bytes asked to be punched from gmem files", sum.punched_bytes);
    m.counter("gmemscope_punch_errors", "Punch-holes on gmem files that failed", sum.punch_errors);
    m.counter("gmemscope_pagecache_removals", "gmem pages removed from their page cache (punch, truncate, close)",
              sum.invalidated_pages);
    m.counter("gmemscope_pagecache_adds", "gmem pages added to their page cache", sum.allocated_pages);
    m.counter("gmemscope_faults", "KVM faults that mapped a guest frame", sum.faults);
    m.family("gmemscope_zaps", "counter", "KVM MMU zaps seen, by kind");
    m.sample("_total", {{"kind", "zap_all_fast"}}, c.tried[GMS_EV_ZAP_ALL_FAST]);
    m.sample("_total", {{"kind", "zap_page"}}, c.tried[GMS_EV_ZAP_PAGE]);
    m.sample("_total", {{"kind", "tdp_spte_changed"}}, c.tried[GMS_EV_TDP_SPTE]);
    m.family("gmemscope_pins", "counter", "DMA map calls that pin memory (VFIO_IOMMU_MAP_DMA, IOMMU_IOAS_MAP*), by errno");
    for (const auto& [k, n] : pins_)
        m.sample("_total", {{"kind", k.first}, {"errno", k.second}}, n);
    m.family("gmemscope_unpins", "counter", "DMA unmap calls (VFIO_IOMMU_UNMAP_DMA, IOMMU_IOAS_UNMAP), by errno");
    for (const auto& [k, n] : unpins_)
        m.sample("_total", {{"kind", k.first}, {"errno", k.second}}, n);
    m.family("gmemscope_pinned_bytes", "counter", "Bytes mapped for DMA by successful map calls");
    for (const auto& [k, n] : pinned_bytes_)
        m.sample("_total", {{"kind", k}}, n);
    m.family("gmemscope_iommu_events", "counter", "iommu:map and iommu:unmap inside VFIO or iommufd map calls");
    m.sample("_total", {{"kind", "map"}}, c.tried[GMS_EV_IOMMU_MAP]);
    m.sample("_total", {{"kind", "unmap"}}, c.tried[GMS_EV_IOMMU_UNMAP]);
    // Enforcement runs in its own process (gmemscope enforce); its pinned
    // state holds the kernel's counts while it is in force.
    auto veto = pinned_veto_state();
    m.family("gmemscope_vetoes", "counter",
             "Conversions to private over DMA-pinned ranges: refused (enforce), or reported only (audit); 0 without "
             "enforcement");
    m.sample("_total", {{"mode", "enforce"}}, veto ? veto->vetoes : 0);
    m.sample("_total", {{"mode", "audit"}}, veto ? veto->would_veto : 0);
    m.counter("gmemscope_vms_seen", "Distinct VMs seen (created while tracing, or found by an audit)", vms_seen_);
    m.family("gmemscope_events", "counter", "Records the BPF programs tried to send, by type");
    for (uint32_t t = 1; t < GMS_EV_MAX; t++)
        m.sample("_total", {{"type", std::string(event_name(t))}}, c.tried[t]);
    m.family("gmemscope_dropped_events", "counter", "Records lost, by cause");
    for (uint32_t d = 0; d < GMS_DROP_MAX; d++)
        m.sample("_total", {{"cause", std::string(drop_cause_name(d))}}, c.dropped[d]);

    m.counter("gmemscope_audits", "Audits run", audits_);
    m.gauge("gmemscope_audit_timestamp_seconds", "When the last audit ran (Unix time)", uint64_t(audit_time_s_));
    m.gauge("gmemscope_audit_iterator", "1 if the last audit read the kernel through the BPF iterator, 0 if /proc",
            audit_source_ == "iterator");
    m.gauge("gmemscope_audit_vms", "VMs found by the last audit", audit_vms_);
    m.gauge("gmemscope_audit_memslots", "Memslots found by the last audit", audit_memslots_);
    m.gauge("gmemscope_audit_gmem_files", "gmem files found by the last audit", audit_gmem_);
    m.gauge("gmemscope_audit_resident_pages", "Resident gmem pages found by the last audit", audit_resident_);
    m.gauge("gmemscope_audit_device_fds", "VFIO and iommufd fds found by the last audit", audit_devices_);
    m.family("gmemscope_audit_findings", "gauge", "Findings of the last audit, by severity");
    for (const auto& [sev, n] : audit_findings_)
        m.sample("", {{"severity", sev}}, n);
    return m.finish();
}

}  // namespace gms
