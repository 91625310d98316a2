#include "loader/report/perfetto.hpp"

#include <cstring>

#include <fmt/format.h>

namespace gms {
namespace {

constexpr int kIoctlTid = 1;         // the VM's calls (memslots, conversions, DMA)
constexpr int kVcpuTidBase = 100;    // vCPU n
constexpr int kGmemTidBase = 10000;  // gmem files, in order of appearance


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

int PerfettoWriter::pid_of(uint64_t vm)
{
    auto [it, fresh] = pids_.try_emplace(vm, int(pids_.size()) + 1);
    if (fresh) {
        std::string name = "VM ?";
        auto v = engine_.vms().find(vm);
        if (vm && v != engine_.vms().end())
            name = fmt::format("VM {:x} ({} {})", vm, v->second.owner.comm, v->second.owner.tgid);
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
    nlohmann::json base = {{"ts", us(h.ts_ns)}, {"args", to_json(ev)}};
    std::visit(
        [&](const auto& r) {
            using T = std::decay_t<decltype(r)>;
            nlohmann::json j = base;
            if constexpr (std::is_same_v<T, gms_ioctl_event>) {
                uint64_t vm = r.op == GMS_IOC_CREATE_VM ? r.args.create_vm.vm : r.vm;
                j.update({{"ph", "X"}, {"dur", double(r.dur_ns) / 1000.0}, {"pid", pid_of(vm)}, {"tid", kIoctlTid},
                          {"name", std::string(ioctl_op_name(r.op)) + (r.ret < 0 ? " " + errno_name(r.ret) : "")},
                          {"cat", "ioctl"}});
                put(j);
                bool map = r.op == GMS_IOC_VFIO_MAP_DMA || r.op == GMS_IOC_IOAS_MAP;
                bool unmap = r.op == GMS_IOC_VFIO_UNMAP_DMA || r.op == GMS_IOC_IOAS_UNMAP;
                if (r.ret == 0 && (map || unmap)) {
                    bool vfio = r.op == GMS_IOC_VFIO_MAP_DMA || r.op == GMS_IOC_VFIO_UNMAP_DMA;
                    uint64_t iova = vfio ? r.args.vfio_dma.iova : r.args.ioas.iova;
                    std::string id = fmt::format("{}-{}-{}-{:#x}", r.hdr.tgid, r.fd, vfio ? 0 : r.args.ioas.ioas_id, iova);
                    nlohmann::json pin = {{"ph", map ? "b" : "e"}, {"cat", "pin"}, {"id", id}, {"ts", us(h.ts_ns)},
                                          {"pid", pid_of(0)}, {"tid", kIoctlTid},
                                          {"name", fmt::format("DMA map iova {:#x}", iova)}};
                    if (map) {
                        pin["args"] = base["args"];
                        open_pins_[id] = pin;
                        put(pin);
                    } else if (open_pins_.erase(id)) {
                        put(pin);
                    }
                }
            } else if constexpr (std::is_same_v<T, gms_fallocate_event>) {
                uint64_t vm = r.vm ? r.vm : engine_.vm_of_gmem(r.gmem_ino).value_or(0);
                j.update({{"ph", "X"}, {"dur", double(r.dur_ns) / 1000.0}, {"pid", pid_of(vm)},
                          {"tid", gmem_tid(vm, r.gmem_ino)}, {"cat", "invalidate"},
                          {"name", fmt::format("punch-hole {} KiB", r.len >> 10)}});
                put(j);
            } else if constexpr (std::is_same_v<T, gms_fault_event>) {
                int pid = pid_of(r.vm), tid = kVcpuTidBase + int(r.vcpu_id);
                meta(pid, tid, fmt::format("vCPU {}", r.vcpu_id));
                j.update({{"ph", "i"}, {"s", "t"}, {"pid", pid}, {"tid", tid}, {"cat", "fault"},
                          {"name", fmt::format("fault gfn {:#x}", r.gfn)}});
                put(j);
            } else if constexpr (std::is_same_v<T, gms_pagecache_event>) {
                uint64_t vm = r.vm ? r.vm : engine_.vm_of_gmem(r.ino).value_or(0);
                j.update({{"ph", "i"}, {"s", "t"}, {"pid", pid_of(vm)}, {"tid", gmem_tid(vm, r.ino)},
                          {"cat", "pagecache"},
                          {"name", fmt::format("{} index {:#x}", h.type == GMS_EV_PAGECACHE_ADD ? "add" : "remove",
                                               r.index)}});
                put(j);
            } else if constexpr (std::is_same_v<T, gms_gmem_close_event>) {
                j.update({{"ph", "i"}, {"s", "t"}, {"pid", pid_of(r.vm)}, {"tid", gmem_tid(r.vm, r.gmem_ino)},
                          {"cat", "gmem"}, {"name", "close"}});
                put(j);
            } else if constexpr (std::is_same_v<T, gms_zap_event>) {
                if (h.type == GMS_EV_ZAP_ALL_FAST) {
                    j.update({{"ph", "i"}, {"s", "p"}, {"pid", pid_of(r.vm)}, {"cat", "zap"}, {"name", "zap all SPTEs"}});
                    put(j);
                }
            }
        },
        ev.rec);
}

void PerfettoWriter::finish()
{
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
