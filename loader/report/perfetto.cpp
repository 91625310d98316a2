#include "loader/report/perfetto.hpp"

#include <cstring>
#include <iterator>
#include <optional>

#include <fmt/format.h>

namespace gms {
namespace {

constexpr int kIoctlTid = 1;         // the VM's calls (memslots, conversions, DMA)
constexpr int kMmuTid = 2;           // KVM MMU: zaps, SPTE changes
constexpr int kKernelTid = 3;        // kernel functions (precise tier) and IOMMU mappings
constexpr int kVcpuTidBase = 100;    // vCPU n
constexpr int kGmemTidBase = 10000;  // gmem files, in order of appearance
constexpr int kDmaBufPid = 1000000;  // the dma-bufs, one thread each


}  // namespace

PerfettoWriter::PerfettoWriter(std::ostream& out) : out_(out) { out_ << "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"; }

void PerfettoWriter::put(const nlohmann::json& j)
{
    out_ << (first_ ? "" : ",\n") << dump_line(j);
    first_ = false;
}

void PerfettoWriter::meta(int pid, int tid, const std::string& name)
{
    if (!named_.insert({pid, tid}).second)
        return;
    if (tid == 0)
        put({{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"args", {{"name", name}}}});
    else
        put({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", tid}, {"args", {{"name", name}}}});
}

// vm: the engine's key of a VM lifetime, 0 for none known.
int PerfettoWriter::pid_of(uint64_t vm)
{
    auto [it, fresh] = pids_.try_emplace(vm, int(pids_.size()) + 1);
    if (fresh) {
        std::string name = "VM ?";
        auto v = engine_.vms().find(vm);
        if (vm && v != engine_.vms().end())
            name = fmt::format("VM {} ({} {})", engine_.vm_name(vm), v->second.owner.comm, v->second.owner.tgid);
        else if (!vm)
            name = "unknown VM";
        meta(it->second, 0, name);
        meta(it->second, kIoctlTid, "calls");
    }
    return it->second;
}

int PerfettoWriter::gmem_tid(uint64_t vm, uint64_t ino)
{
    auto [it, fresh] = gmem_tids_.try_emplace({vm, ino}, kGmemTidBase + int(gmem_tids_.size()));
    if (fresh)
        meta(pid_of(vm), it->second, fmt::format("gmem ino {}", ino));
    return it->second;
}

// A record's event, written as nlohmann::json writes the object the
// writer built for it before (keys in std::map order, numbers by its
// serializer), without building that object: only the record's args are
// one. cat and name are ASCII made here from fixed names and numbers,
// nothing to escape. ph "i" events are thread-scoped instants.
void PerfettoWriter::put_record(const nlohmann::json& args, double ts_us, const char* ph, std::optional<double> dur_us,
                                int pid, int tid, std::string_view cat, const std::string& name)
{
    auto num = [](double v) { return nlohmann::json(v).dump(); };
    std::string& line = line_;
    line.assign(first_ ? "" : ",\n");
    first_ = false;
    fmt::format_to(std::back_inserter(line), R"({{"args":{},"cat":"{}",)", dump_line(args), cat);
    if (dur_us)
        fmt::format_to(std::back_inserter(line), R"("dur":{},)", num(*dur_us));
    fmt::format_to(std::back_inserter(line), R"("name":"{}","ph":"{}","pid":{},{}"tid":{},"ts":{}}})", name, ph, pid,
                   std::strcmp(ph, "i") == 0 ? R"("s":"t",)" : "", tid, num(ts_us));
    out_ << line;
}

void PerfettoWriter::add(const Event& ev)
{
    engine_.add(ev);
    const gms_hdr& h = ev.hdr();
    if (h.type == GMS_REC_DROPS)
        return;
    if (!t0_ns_)
        t0_ns_ = h.ts_ns;
    last_ns_ = std::max<uint64_t>(last_ns_, h.ts_ns);
    auto us = [this](uint64_t ns) { return ns >= t0_ns_ ? double(ns - t0_ns_) / 1000.0 : 0.0; };
    const nlohmann::json args = to_json(ev);
    auto span = [&](double dur_us, int pid, int tid, std::string_view cat, const std::string& name) {
        put_record(args, us(h.ts_ns), "X", dur_us, pid, tid, cat, name);
    };
    auto instant = [&](int pid, int tid, std::string_view cat, const std::string& name) {
        put_record(args, us(h.ts_ns), "i", std::nullopt, pid, tid, cat, name);
    };
    // Records carry a struct kvm address; the engine, fed first, knows whose lifetime it is now.
    auto key = [this](uint64_t kvm) { return kvm ? engine_.vm_key_at(kvm) : 0; };
    auto gmem_vm = [&](uint64_t ino, uint64_t kvm) { return engine_.vm_of_gmem(ino).value_or(key(kvm)); };
    std::visit(
        [&](const auto& r) {
            using T = std::decay_t<decltype(r)>;
            if constexpr (std::is_same_v<T, gms_ioctl_event>) {
                uint64_t vm = key(r.op == GMS_IOC_CREATE_VM ? r.args.create_vm.vm : r.vm);
                span(double(r.dur_ns) / 1000.0, pid_of(vm), kIoctlTid,
                     "ioctl", std::string(ioctl_op_name(r.op)) + (r.ret < 0 ? " " + errno_name(r.ret) : ""));
                bool map = r.op == GMS_IOC_VFIO_MAP_DMA || r.op == GMS_IOC_IOAS_MAP;
                bool unmap = r.op == GMS_IOC_VFIO_UNMAP_DMA || r.op == GMS_IOC_IOAS_UNMAP;
                if (r.ret == 0 && (map || unmap)) {
                    bool vfio = r.op == GMS_IOC_VFIO_MAP_DMA || r.op == GMS_IOC_VFIO_UNMAP_DMA;
                    uint64_t iova = vfio ? r.args.vfio_dma.iova : r.args.ioas.iova;
                    std::string id = fmt::format("{}-{}-{}-{:#x}", r.hdr.tgid, r.fd, vfio ? 0 : r.args.ioas.ioas_id, iova);
                    // A span in the process of the VM whose memory is mapped: at
                    // map time its user address is in one of that VM's memslots.
                    uint64_t vaddr = vfio ? r.args.vfio_dma.vaddr : r.args.ioas.start;
                    auto g = map ? engine_.gfn_of_hva(r.hdr.tgid, vaddr) : std::nullopt;
                    auto open = open_pins_.find(id);
                    int pid = map ? pid_of(g ? g->first : 0) : open != open_pins_.end() ? open->second["pid"].get<int>() : pid_of(0);
                    nlohmann::json pin = {{"ph", map ? "b" : "e"}, {"cat", "pin"}, {"id", id}, {"ts", us(h.ts_ns)},
                                          {"pid", pid}, {"tid", kIoctlTid},
                                          {"name", fmt::format("DMA map iova {:#x}", iova)}};
                    if (map) {
                        pin["args"] = args;
                        open_pins_[id] = pin;
                        put(pin);
                    } else if (open_pins_.erase(id)) {
                        put(pin);
                    }
                }
            } else if constexpr (std::is_same_v<T, gms_fallocate_event>) {
                uint64_t vm = gmem_vm(r.gmem_ino, r.vm);
                bool punch = r.mode & GMS_FALLOC_FL_PUNCH_HOLE;
                std::string name = r.ret < 0 ? fmt::format("fallocate {} {}", falloc_mode_name(r.mode), errno_name(r.ret))
                                   : punch   ? fmt::format("punch-hole {} KiB", r.len >> 10)
                                             : fmt::format("allocate {} KiB", r.len >> 10);
                span(double(r.dur_ns) / 1000.0, pid_of(vm), gmem_tid(vm, r.gmem_ino),
                     r.ret < 0 ? "failed" : punch ? "invalidate" : "allocate", name);
            } else if constexpr (std::is_same_v<T, gms_fault_event>) {
                int pid = pid_of(key(r.vm)), tid = kVcpuTidBase + int(r.vcpu_id);
                meta(pid, tid, fmt::format("vCPU {}", r.vcpu_id));
                instant(pid, tid, "fault", fmt::format("fault gfn {:#x}", r.gfn));
            } else if constexpr (std::is_same_v<T, gms_pagecache_event>) {
                uint64_t vm = gmem_vm(r.ino, r.vm);
                instant(pid_of(vm), gmem_tid(vm, r.ino), "pagecache",
                        fmt::format("{} index {:#x}", h.type == GMS_EV_PAGECACHE_ADD ? "add" : "remove", r.index));
            } else if constexpr (std::is_same_v<T, gms_gmem_close_event>) {
                uint64_t vm = gmem_vm(r.gmem_ino, r.vm);
                instant(pid_of(vm), gmem_tid(vm, r.gmem_ino), "gmem", "close");
            } else if constexpr (std::is_same_v<T, gms_zap_event>) {
                int pid = pid_of(key(r.vm));
                meta(pid, kMmuTid, "KVM MMU");
                instant(pid, kMmuTid, "zap",
                        h.type == GMS_EV_ZAP_ALL_FAST ? std::string("zap all SPTEs") : fmt::format("zap page gfn {:#x}", r.gfn));
            } else if constexpr (std::is_same_v<T, gms_set_spte_event> || std::is_same_v<T, gms_tdp_spte_event>) {
                int pid = pid_of(key(r.vm));
                meta(pid, kMmuTid, "KVM MMU");
                instant(pid, kMmuTid, "spte", fmt::format("{} gfn {:#x}", event_name(h.type), r.gfn));
            } else if constexpr (std::is_same_v<T, gms_call_event>) {
                // kvm.destroy_vm: the engine has ended the VM; key() still names it (the last at its address).
                int pid = pid_of(key(r.vm));
                meta(pid, kKernelTid, "kernel");
                instant(pid, kKernelTid, "call", std::string(fn_name(r.fn)) + (r.ret < 0 ? " " + errno_name(r.ret) : ""));
            } else if constexpr (std::is_same_v<T, gms_iommu_event> || std::is_same_v<T, gms_veto_event>) {
                uint64_t vm = 0;
                if constexpr (std::is_same_v<T, gms_veto_event>)
                    vm = key(r.vm);
                int pid = pid_of(vm);
                meta(pid, kKernelTid, "kernel");
                instant(pid, kKernelTid, event_name(h.type), std::string(event_name(h.type)));
            }
        },
        ev.rec);
}

// What the engine concludes over the whole recording: each dma-buf's
// life as spans, and the critical exposures as instants in their VM.
void PerfettoWriter::put_findings()
{
    auto us = [this](uint64_t ns) { return ns >= t0_ns_ ? double(ns - t0_ns_) / 1000.0 : 0.0; };
    int tid = 0;
    for (const auto& [ino, d] : engine_.dma_bufs()) {
        meta(kDmaBufPid, 0, "dma-bufs");
        meta(kDmaBufPid, ++tid,
             fmt::format("dma-buf ino {} ({}{})", ino, d.exporter.empty() ? "?" : d.exporter,
                         d.region ? fmt::format(" BAR{}", *d.region) : ""));
        uint64_t end = std::max(last_ns_, d.exported_ns);
        put({{"ph", "X"}, {"pid", kDmaBufPid}, {"tid", tid}, {"cat", "dma_buf"}, {"name", "exported"},
             {"ts", us(d.exported_ns)}, {"dur", us(end) - us(d.exported_ns)},
             {"args", {{"text", engine_.describe(d)}}}});
        std::optional<uint64_t> revoked;
        auto close_revoke = [&](uint64_t at) {
            put({{"ph", "X"}, {"pid", kDmaBufPid}, {"tid", tid}, {"cat", "dma_buf"}, {"name", "revoked"},
                 {"ts", us(*revoked)}, {"dur", us(at) - us(*revoked)}});
            revoked.reset();
        };
        for (const auto& m : d.moves) {
            if (m.revoked && !revoked)
                revoked = m.ts_ns;
            else if (!m.revoked && revoked)
                close_revoke(m.ts_ns);
        }
        if (revoked)
            close_revoke(end);
        for (const auto& t : engine_.timeline(d))
            if (t.ts_ns != d.exported_ns)
                put({{"ph", "i"}, {"s", "t"}, {"pid", kDmaBufPid}, {"tid", tid}, {"cat", "dma_buf"},
                     {"ts", us(t.ts_ns)}, {"name", t.what}});
    }
    for (const auto& x : engine_.exposures())
        put({{"ph", "i"}, {"s", "p"}, {"pid", pid_of(x.vm)}, {"tid", kIoctlTid}, {"cat", "finding"},
             {"ts", us(x.ts_ns)}, {"name", "CRITICAL: made private while DMA-mapped"},
             {"args", {{"text", engine_.describe(x)}}}});
}

void PerfettoWriter::finish()
{
    put_findings();
    for (auto& [id, pin] : open_pins_) {
        pin["ph"] = "e";
        pin["ts"] = double(last_ns_ - t0_ns_) / 1000.0;
        pin.erase("args");
        put(pin);
    }
    open_pins_.clear();
    out_ << "\n]}\n";
}

}  // namespace gms
