#include "loader/events/events.hpp"

#include "loader/probe/catalog.hpp"

#include <cstring>

#include <fmt/format.h>

namespace gms {
namespace {

template <typename T>
std::optional<Event> copy_as(std::span<const std::byte> bytes)
{
    T rec;
    std::memcpy(&rec, bytes.data(), sizeof(T));
    return Event{rec};
}

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

}  // namespace

std::string comm_of(const gms_hdr& h)
{
    return std::string(h.comm, strnlen(h.comm, sizeof(h.comm)));
}

std::string exporter_name(const gms_call_args& a)
{
    return std::string(a.dma_buf.exp_name, strnlen(a.dma_buf.exp_name, sizeof(a.dma_buf.exp_name)));
}

const gms_hdr& Event::hdr() const
{
    return std::visit([](const auto& r) -> const gms_hdr& { return r.hdr; }, rec);
}

size_t record_size(uint32_t type)
{
    switch (type) {
    case GMS_EV_IOCTL: return sizeof(gms_ioctl_event);
    case GMS_EV_FALLOCATE: return sizeof(gms_fallocate_event);
    case GMS_EV_GMEM_CLOSE: return sizeof(gms_gmem_close_event);
    case GMS_EV_FAULT: return sizeof(gms_fault_event);
    case GMS_EV_SET_SPTE: return sizeof(gms_set_spte_event);
    case GMS_EV_PAGECACHE_ADD:
    case GMS_EV_PAGECACHE_DEL: return sizeof(gms_pagecache_event);
    case GMS_EV_ZAP_ALL_FAST:
    case GMS_EV_ZAP_PAGE: return sizeof(gms_zap_event);
    case GMS_EV_TDP_SPTE: return sizeof(gms_tdp_spte_event);
    case GMS_EV_IOMMU_MAP:
    case GMS_EV_IOMMU_UNMAP: return sizeof(gms_iommu_event);
    case GMS_EV_CALL: return sizeof(gms_call_event);
    case GMS_EV_VETO: return sizeof(gms_veto_event);
    case GMS_REC_DROPS: return sizeof(gms_drops_record);
    }
    return 0;
}

std::optional<Event> decode(std::span<const std::byte> bytes, std::string& why)
{
    if (bytes.size() < sizeof(gms_hdr)) {
        why = fmt::format("{} bytes, shorter than a record header ({})", bytes.size(),
                          sizeof(gms_hdr));
        return std::nullopt;
    }
    gms_hdr h;
    std::memcpy(&h, bytes.data(), sizeof(h));
    if (h.abi != GMS_ABI_VERSION) {
        why = fmt::format("ABI version {}, this gmemscope reads {}", h.abi, GMS_ABI_VERSION);
        return std::nullopt;
    }
    size_t want = record_size(h.type);
    if (want == 0) {
        why = fmt::format("unknown record type {}", h.type);
        return std::nullopt;
    }
    if (h.size != want || bytes.size() < want) {
        why = fmt::format("{} record of {} bytes (header says {}), expected {}",
                          event_name(h.type), bytes.size(), h.size, want);
        return std::nullopt;
    }
    switch (h.type) {
    case GMS_EV_IOCTL: return copy_as<gms_ioctl_event>(bytes);
    case GMS_EV_FALLOCATE: return copy_as<gms_fallocate_event>(bytes);
    case GMS_EV_GMEM_CLOSE: return copy_as<gms_gmem_close_event>(bytes);
    case GMS_EV_FAULT: return copy_as<gms_fault_event>(bytes);
    case GMS_EV_SET_SPTE: return copy_as<gms_set_spte_event>(bytes);
    case GMS_EV_PAGECACHE_ADD:
    case GMS_EV_PAGECACHE_DEL: return copy_as<gms_pagecache_event>(bytes);
    case GMS_EV_ZAP_ALL_FAST:
    case GMS_EV_ZAP_PAGE: return copy_as<gms_zap_event>(bytes);
    case GMS_EV_TDP_SPTE: return copy_as<gms_tdp_spte_event>(bytes);
    case GMS_EV_IOMMU_MAP:
    case GMS_EV_IOMMU_UNMAP: return copy_as<gms_iommu_event>(bytes);
    case GMS_EV_CALL: return copy_as<gms_call_event>(bytes);
    case GMS_EV_VETO: return copy_as<gms_veto_event>(bytes);
    default: return copy_as<gms_drops_record>(bytes);
    }
}

std::string_view event_name(uint32_t type)
{
    switch (type) {
    case GMS_EV_IOCTL: return "ioctl";
    case GMS_EV_FALLOCATE: return "fallocate";
    case GMS_EV_GMEM_CLOSE: return "gmem_close";
    case GMS_EV_FAULT: return "fault";
    case GMS_EV_SET_SPTE: return "set_spte";
    case GMS_EV_PAGECACHE_ADD: return "pagecache_add";
    case GMS_EV_PAGECACHE_DEL: return "pagecache_delete";
    case GMS_EV_ZAP_ALL_FAST: return "zap_all_fast";
    case GMS_EV_ZAP_PAGE: return "zap_page";
    case GMS_EV_TDP_SPTE: return "tdp_spte_changed";
    case GMS_EV_IOMMU_MAP: return "iommu_map";
    case GMS_EV_IOMMU_UNMAP: return "iommu_unmap";
    case GMS_EV_CALL: return "call";
    case GMS_EV_VETO: return "veto";
    case GMS_REC_DROPS: return "drops";
    }
    return "unknown";
}

std::string_view drop_cause_name(uint32_t cause)
{
    switch (cause) {
    case GMS_DROP_RINGBUF_FULL: return "ringbuf_full";
    case GMS_DROP_INFLIGHT_FULL: return "inflight_full";
    case GMS_DROP_PIN_INDEX_FULL: return "pin_index_full";
    case GMS_DROP_AGG_FULL: return "agg_full";
    }
    return "unknown";
}

std::string_view ioctl_op_name(uint32_t op)
{
    switch (op) {
    case GMS_IOC_CREATE_VM: return "KVM_CREATE_VM";
    case GMS_IOC_CREATE_GUEST_MEMFD: return "KVM_CREATE_GUEST_MEMFD";
    case GMS_IOC_SET_MEMORY_REGION: return "KVM_SET_USER_MEMORY_REGION";
    case GMS_IOC_SET_MEMORY_REGION2: return "KVM_SET_USER_MEMORY_REGION2";
    case GMS_IOC_SET_MEMORY_ATTRIBUTES: return "KVM_SET_MEMORY_ATTRIBUTES";
    case GMS_IOC_SET_MEMORY_ATTRIBUTES2: return "KVM_SET_MEMORY_ATTRIBUTES2";
    case GMS_IOC_GMEM_CONVERT_SHARED: return "KVM_GMEM_CONVERT_SHARED";
    case GMS_IOC_GMEM_CONVERT_PRIVATE: return "KVM_GMEM_CONVERT_PRIVATE";
    case GMS_IOC_VFIO_MAP_DMA: return "VFIO_IOMMU_MAP_DMA";
    case GMS_IOC_VFIO_UNMAP_DMA: return "VFIO_IOMMU_UNMAP_DMA";
    case GMS_IOC_IOAS_MAP: return "IOMMU_IOAS_MAP";
    case GMS_IOC_IOAS_MAP_FILE: return "IOMMU_IOAS_MAP_FILE";
    case GMS_IOC_IOAS_UNMAP: return "IOMMU_IOAS_UNMAP";
    case GMS_IOC_VFIO_DMA_BUF: return "VFIO_DEVICE_FEATURE_DMA_BUF";
    }
    return "unknown";
}

std::string_view fd_kind_name(uint32_t kind)
{
    switch (kind) {
    case GMS_FD_KVM: return "kvm";
    case GMS_FD_VM: return "vm";
    case GMS_FD_VCPU: return "vcpu";
    case GMS_FD_GMEM: return "gmem";
    case GMS_FD_VM_STATS: return "vm_stats";
    case GMS_FD_VCPU_STATS: return "vcpu_stats";
    case GMS_FD_KVM_DEVICE: return "kvm_device";
    }
    return "other";
}

std::string_view fn_name(uint32_t fn)
{
    const Hook* h = hook_of_fn(fn);
    return h ? h->name : "unknown";
}

std::string_view pin_kind_name(uint32_t kind)
{
    switch (kind) {
    case GMS_PIN_VFIO: return "vfio";
    case GMS_PIN_IOMMUFD: return "iommufd";
    case GMS_PIN_DECLARED: return "declared";
    }
    return "unknown";
}

std::string_view veto_mode_name(uint32_t mode)
{
    switch (mode) {
    case GMS_VETO_AUDIT: return "audit";
    case GMS_VETO_ENFORCE: return "enforce";
    case GMS_VETO_AUDIT_SYSCALL: return "audit-syscall";
    }
    return "off";
}

std::string describe_pin(const gms_pin& p)
{
    std::string who = std::string(p.comm, strnlen(p.comm, sizeof(p.comm)));
    if (p.kind == GMS_PIN_DECLARED)
        return fmt::format("range gfn [{:#x}, {:#x}) declared for pid {}{}", p.vaddr, p.end, p.tgid,
                           who.empty() ? "" : " (" + who + ")");
    return fmt::format("{} DMA mapping of vaddr [{:#x}, {:#x}) at iova {:#x} by {}/{} (fd {})", pin_kind_name(p.kind),
                       p.vaddr, p.end, p.iova, who, p.tgid, p.fd);
}

namespace {

using nlohmann::json;

json ioctl_args_json(const gms_ioctl_event& e)
{
    const auto& a = e.args;
    switch (e.op) {
    case GMS_IOC_CREATE_VM:
        return {{"vm_type", u64_json(a.create_vm.type)}, {"new_vm", hex(a.create_vm.vm)}};
    case GMS_IOC_CREATE_GUEST_MEMFD:
        return {{"size_bytes", u64_json(a.create_gmem.size)}, {"flags", u64_json(a.create_gmem.flags)},
                {"gmem_ino", u64_json(a.create_gmem.ino)}};
    case GMS_IOC_SET_MEMORY_REGION:
    case GMS_IOC_SET_MEMORY_REGION2:
        return {{"slot", a.region.slot}, {"flags", a.region.flags},
                {"gpa", hex(a.region.gpa)}, {"size_bytes", u64_json(a.region.size)},
                {"uaddr", hex(a.region.uaddr)}, {"gmem_fd", a.region.gmem_fd},
                {"gmem_offset", u64_json(a.region.gmem_offset)}, {"gmem_ino", u64_json(a.region.gmem_ino)}};
    case GMS_IOC_SET_MEMORY_ATTRIBUTES:
        // struct kvm_memory_attributes has no error_offset
        return {{"start", hex(a.attrs.start)}, {"size_bytes", u64_json(a.attrs.size)},
                {"attributes", u64_json(a.attrs.attributes)}, {"flags", u64_json(a.attrs.flags)}};
    case GMS_IOC_SET_MEMORY_ATTRIBUTES2:
    case GMS_IOC_GMEM_CONVERT_SHARED:
    case GMS_IOC_GMEM_CONVERT_PRIVATE:
        return {{"start", hex(a.attrs.start)}, {"size_bytes", u64_json(a.attrs.size)},
                {"attributes", u64_json(a.attrs.attributes)}, {"flags", u64_json(a.attrs.flags)},
                {"error_offset", u64_json(a.attrs.error_offset)}};
    case GMS_IOC_VFIO_MAP_DMA:
    case GMS_IOC_VFIO_UNMAP_DMA:
        return {{"flags", a.vfio_dma.flags}, {"vaddr", hex(a.vfio_dma.vaddr)},
                {"iova", hex(a.vfio_dma.iova)}, {"size_bytes", u64_json(a.vfio_dma.size)}};
    case GMS_IOC_IOAS_MAP:
    case GMS_IOC_IOAS_MAP_FILE:
    case GMS_IOC_IOAS_UNMAP:
        return {{"flags", a.ioas.flags}, {"ioas_id", a.ioas.ioas_id}, {"file_fd", a.ioas.fd},
                {"start", hex(a.ioas.start)}, {"length_bytes", u64_json(a.ioas.length)},
                {"iova", hex(a.ioas.iova)}};
    case GMS_IOC_VFIO_DMA_BUF:
        return {{"flags", u64_json(a.dma_buf.flags)}, {"region_index", a.dma_buf.region_index},
                {"nr_ranges", a.dma_buf.nr_ranges}, {"offset", u64_json(a.dma_buf.offset)},
                {"length_bytes", u64_json(a.dma_buf.length)}};
    }
    return json::object();
}

json body_json(const gms_ioctl_event& e)
{
    json j = {{"vm", hex(e.vm)}, {"fd", e.fd}, {"fd_kind", fd_kind_name(e.fd_kind)},
              {"cmd", hex(e.cmd)}, {"ioctl", ioctl_op_name(e.op)}, {"ret", e.ret},
              {"dur_ns", u64_json(e.dur_ns)}, {"args", ioctl_args_json(e)},
              {"args_read", !(e.hdr.flags & GMS_F_ARGS_UNREAD)}};
    if (e.fd_kind == GMS_FD_GMEM)
        j["gmem_ino"] = u64_json(e.obj);
    if (e.op == GMS_IOC_VFIO_DMA_BUF && e.ret >= 0)
        j["dma_buf_ino"] = u64_json(e.obj);
    if (e.ret < 0)
        j["errno"] = errno_name(e.ret);
    return j;
}

json body_json(const gms_fallocate_event& e)
{
    json j = {{"vm", hex(e.vm)}, {"gmem_ino", u64_json(e.gmem_ino)}, {"fd", e.fd}, {"mode", e.mode},
              {"offset", u64_json(e.offset)}, {"len_bytes", u64_json(e.len)}, {"ret", e.ret}, {"dur_ns", u64_json(e.dur_ns)}};
    if (e.ret < 0)
        j["errno"] = errno_name(e.ret);
    return j;
}

json body_json(const gms_gmem_close_event& e)
{
    return {{"vm", hex(e.vm)}, {"gmem_ino", u64_json(e.gmem_ino)}, {"fd", e.fd}};
}

json body_json(const gms_fault_event& e)
{
    json j = {{"vm", hex(e.vm)}, {"vcpu", e.vcpu_id}, {"gfn", hex(e.gfn)}, {"pfn", hex(e.pfn)},
              {"slot", e.slot_id}, {"slot_base_gfn", hex(e.slot_base_gfn)}, {"level", e.level},
              {"write", !!(e.hdr.flags & GMS_FAULT_WRITE)},
              {"allocated", !!(e.hdr.flags & GMS_FAULT_ALLOCATED)},
              {"private", !!(e.hdr.flags & GMS_FAULT_PRIVATE)}};
    if (e.gmem_ino) {
        j["gmem_ino"] = u64_json(e.gmem_ino);
        j["gmem_index"] = u64_json(e.gmem_index);
    }
    return j;
}

json body_json(const gms_set_spte_event& e)
{
    return {{"vm", hex(e.vm)}, {"gfn", hex(e.gfn)}, {"spte", hex(e.spte)},
            {"pfn", hex((e.spte >> 12) & ((1ULL << 40) - 1))}, {"level", e.level}};
}

json body_json(const gms_pagecache_event& e)
{
    return {{"vm", hex(e.vm)}, {"gmem_ino", u64_json(e.ino)}, {"index", u64_json(e.index)}, {"pfn", hex(e.pfn)},
            {"order", e.order}};
}

json body_json(const gms_zap_event& e)
{
    json j = {{"vm", hex(e.vm)}, {"mmu_valid_gen", e.gen}};
    if (e.hdr.type == GMS_EV_ZAP_PAGE) {
        j["gfn"] = hex(e.gfn);
        j["role"] = hex(e.role);
        j["root_count"] = e.count;
    } else {
        j["used_pages"] = e.count;
    }
    return j;
}

json body_json(const gms_tdp_spte_event& e)
{
    return {{"vm", hex(e.vm)}, {"gfn", hex(e.gfn)}, {"old_spte", hex(e.old_spte)},
            {"new_spte", hex(e.new_spte)}, {"level", e.level}, {"as_id", e.as_id}};
}

json body_json(const gms_iommu_event& e)
{
    json j = {{"iova", hex(e.iova)}, {"size_bytes", u64_json(e.size)}};
    if (e.hdr.type == GMS_EV_IOMMU_MAP)
        j["paddr"] = hex(e.paddr);
    else
        j["unmapped_bytes"] = u64_json(e.unmapped);
    return j;
}

json call_args_json(const gms_call_event& e)
{
    const auto& a = e.args;
    switch (e.fn) {
    case GMS_FN_GMEM_CREATE:
        return {{"size_bytes", u64_json(a.gmem_create.size)}, {"flags", u64_json(a.gmem_create.flags)}};
    case GMS_FN_GMEM_BIND:
    case GMS_FN_GMEM_BIND_COMMIT:
    case GMS_FN_GMEM_UNBIND:
        return {{"slot", a.slot.slot}, {"base_gfn", hex(a.slot.base_gfn)}, {"npages", u64_json(a.slot.npages)},
                {"gmem_pgoff", hex(a.slot.gmem_pgoff)}, {"uaddr", hex(a.slot.uaddr)}};
    case GMS_FN_GMEM_GET_PFN:
        return {{"gfn", hex(a.get_pfn.gfn)}, {"pfn", hex(a.get_pfn.pfn)}, {"gmem_index", hex(a.get_pfn.gmem_index)},
                {"slot", a.get_pfn.slot}, {"vcpu", a.get_pfn.vcpu_id}};
    case GMS_FN_GMEM_ERROR_FOLIO:
        return {{"gmem_index", hex(a.folio.gmem_index)}};
    case GMS_FN_VFIO_PIN:
    case GMS_FN_VFIO_UNPIN:
    case GMS_FN_IOMMUFD_PIN:
    case GMS_FN_IOMMUFD_ACCESS_PIN:
        return {{"vaddr", hex(a.pin.vaddr)}, {"iova", hex(a.pin.iova)}, {"npages", u64_json(a.pin.npages)},
                {"pfn", hex(a.pin.pfn)}, {"lock_cap", a.pin.lock_cap != 0}};
    case GMS_FN_IOMMUFD_MAP:
    case GMS_FN_IOMMUFD_MAP_FILE:
        return {{"iova", hex(a.map.iova)}, {"start", hex(a.map.start)}, {"length_bytes", u64_json(a.map.length)},
                {"flags", a.map.flags}};
    case GMS_FN_VFIO_DMA_BUF_EXPORT:
        return {{"device", hex(a.dma_buf.dev)}, {"flags", u64_json(a.dma_buf.flags)}};
    case GMS_FN_VFIO_DMA_BUF_MOVE:
        return {{"device", hex(a.dma_buf.dev)}, {"revoked", a.dma_buf.flags != 0}};
    case GMS_FN_DMA_BUF_EXPORT:
        return {{"size_bytes", u64_json(a.dma_buf.size)}, {"flags", u64_json(a.dma_buf.flags)},
                {"exporter", exporter_name(a)}};
    case GMS_FN_DMA_BUF_MOVE_NOTIFY:
        return {{"size_bytes", u64_json(a.dma_buf.size)}, {"exporter", exporter_name(a)}};
    case GMS_FN_KVM_MMU_INVALIDATE_BEGIN:
        return json::object();
    case GMS_FN_KVM_DESTROY_VM:
        if (e.hdr.flags & GMS_F_KFUNC)
            return json::object();
        return {{"fd", a.vm_end.fd}, {"fd_kind", fd_kind_name(a.vm_end.fd_kind)}};
    case GMS_FN_KVM_SET_MEM_ATTRIBUTES:
        return {{"start", hex(a.range.start)}, {"end", hex(a.range.end)}, {"attributes", u64_json(a.range.attributes)}};
    case GMS_FN_GMEM_SET_ATTRIBUTES:
    case GMS_FN_GMEM_CONVERT:
        return {{"start", hex(a.range.start)}, {"end", hex(a.range.end)}, {"attributes", u64_json(a.range.attributes)},
                {"error_offset", hex(a.range.error_offset)}};
    }
    // The ranges: invalidations, populate, MMU notifier and MMU invalidation, iommufd unmap.
    return {{"start", hex(a.range.start)}, {"end", hex(a.range.end)}};
}

json body_json(const gms_call_event& e)
{
    json j = {{"hook", fn_name(e.fn)}, {"vm", hex(e.vm)}, {"ret", e.ret}, {"args", call_args_json(e)}};
    if (e.ino)
        j["ino"] = u64_json(e.ino);
    if (e.ret < 0)
        j["errno"] = errno_name(e.ret);
    return j;
}

json pin_body(const gms_pin& p)
{
    json j = {{"kind", pin_kind_name(p.kind)}, {"tgid", p.tgid}, {"since_ns", u64_json(p.since_ns)}};
    std::string comm(p.comm, strnlen(p.comm, sizeof(p.comm)));
    if (p.kind == GMS_PIN_DECLARED) {
        j["first_gfn"] = hex(p.vaddr);
        j["end_gfn"] = hex(p.end);
        j["note"] = comm;
    } else {
        j["vaddr"] = hex(p.vaddr);
        j["end"] = hex(p.end);
        j["iova"] = hex(p.iova);
        j["fd"] = p.fd;
        j["comm"] = comm;
    }
    return j;
}

json body_json(const gms_veto_event& e)
{
    json j = {{"vm", hex(e.vm)},     {"mode", veto_mode_name(e.mode)},  {"cmd", hex(e.cmd)},
              {"first", hex(e.first)}, {"end", hex(e.end)},            {"hit_first_gfn", hex(e.hit_first_gfn)},
              {"hit_end_gfn", hex(e.hit_end_gfn)}, {"pin", pin_body(e.pin)}, {"vetoed", e.err != 0},
              {"why", e.why == GMS_VETO_UNINDEXED       ? "not_indexed"
                      : e.why == GMS_VETO_TOO_MANY_SLOTS ? "too_many_memslots"
                                                         : "overlap"}};
    if (e.not_indexed)
        j["not_indexed"] = e.not_indexed;
    if (e.gmem_ino)
        j["gmem_ino"] = u64_json(e.gmem_ino);
    if (e.err)
        j["errno"] = errno_name(-e.err);
    return j;
}

json body_json(const gms_drops_record& e)
{
    json tried = json::object(), dropped = json::object();
    for (uint32_t t = 1; t < GMS_EV_MAX; t++)
        tried[std::string(event_name(t))] = u64_json(e.tried[t]);
    for (uint32_t c = 0; c < GMS_DROP_MAX; c++)
        dropped[std::string(drop_cause_name(c))] = u64_json(e.dropped[c]);
    return {{"tried", tried}, {"dropped", dropped}, {"received", u64_json(e.received)}};
}

std::string ioctl_line(const gms_ioctl_event& e)
{
    const auto& a = e.args;
    std::string args;
    switch (e.op) {
    case GMS_IOC_CREATE_VM:
        args = fmt::format("type={} -> vm {:#x}", a.create_vm.type, a.create_vm.vm);
        break;
    case GMS_IOC_CREATE_GUEST_MEMFD:
        args = fmt::format("size={:#x} flags={:#x} -> gmem ino {}", a.create_gmem.size,
                           a.create_gmem.flags, a.create_gmem.ino);
        break;
    case GMS_IOC_SET_MEMORY_REGION:
    case GMS_IOC_SET_MEMORY_REGION2:
        args = fmt::format("slot={} flags={:#x} gpa={:#x} size={:#x} uaddr={:#x}", a.region.slot,
                           a.region.flags, a.region.gpa, a.region.size, a.region.uaddr);
        if (a.region.gmem_ino)
            args += fmt::format(" gmem ino {} offset={:#x}", a.region.gmem_ino,
                                a.region.gmem_offset);
        break;
    case GMS_IOC_SET_MEMORY_ATTRIBUTES:
    case GMS_IOC_SET_MEMORY_ATTRIBUTES2:
    case GMS_IOC_GMEM_CONVERT_SHARED:
    case GMS_IOC_GMEM_CONVERT_PRIVATE:
        args = fmt::format("start={:#x} size={:#x} attrs={:#x}", a.attrs.start, a.attrs.size,
                           a.attrs.attributes);
        if (e.ret < 0 && e.op != GMS_IOC_SET_MEMORY_ATTRIBUTES)
            args += fmt::format(" error_offset={:#x}", a.attrs.error_offset);
        break;
    case GMS_IOC_VFIO_MAP_DMA:
    case GMS_IOC_VFIO_UNMAP_DMA:
        args = fmt::format("vaddr={:#x} iova={:#x} size={:#x}", a.vfio_dma.vaddr, a.vfio_dma.iova,
                           a.vfio_dma.size);
        break;
    case GMS_IOC_IOAS_MAP:
    case GMS_IOC_IOAS_MAP_FILE:
    case GMS_IOC_IOAS_UNMAP:
        args = fmt::format("ioas={} start={:#x} length={:#x} iova={:#x}", a.ioas.ioas_id,
                           a.ioas.start, a.ioas.length, a.ioas.iova);
        break;
    case GMS_IOC_VFIO_DMA_BUF:
        args = fmt::format("region={} ranges={} offset={:#x} length={:#x}", a.dma_buf.region_index,
                           a.dma_buf.nr_ranges, a.dma_buf.offset, a.dma_buf.length);
        if (e.ret >= 0)
            args += fmt::format(" dma-buf ino {}", e.obj);
        break;
    }
    std::string ret = e.ret < 0 ? fmt::format("= {} ({})", e.ret, errno_name(e.ret))
                                : fmt::format("= {}", e.ret);
    return fmt::format("{}({} fd {}) {} {} [{} us]", ioctl_op_name(e.op), fd_kind_name(e.fd_kind),
                       e.fd, args, ret, e.dur_ns / 1000);
}

std::string body_line(const gms_ioctl_event& e) { return ioctl_line(e); }

std::string body_line(const gms_fallocate_event& e)
{
    std::string ret = e.ret < 0 ? fmt::format("{} ({})", e.ret, errno_name(e.ret))
                                : fmt::format("{}", e.ret);
    return fmt::format("fallocate(gmem ino {} fd {}) mode={:#x} offset={:#x} len={:#x} = {} [{} us]",
                       e.gmem_ino, e.fd, e.mode, e.offset, e.len, ret, e.dur_ns / 1000);
}

std::string body_line(const gms_gmem_close_event& e)
{
    return fmt::format("close(gmem ino {} fd {})", e.gmem_ino, e.fd);
}

std::string body_line(const gms_fault_event& e)
{
    std::string gmem = e.gmem_ino ? fmt::format(" gmem ino {} index {:#x}", e.gmem_ino, e.gmem_index)
                                  : std::string(" (not gmem)");
    return fmt::format("fault vcpu {} gfn {:#x} slot {}{} pfn {:#x}{}{}", e.vcpu_id, e.gfn, e.slot_id,
                       gmem, e.pfn, e.hdr.flags & GMS_FAULT_WRITE ? " write" : "",
                       e.hdr.flags & GMS_FAULT_ALLOCATED ? " (allocated)" : "");
}

std::string body_line(const gms_set_spte_event& e)
{
    return fmt::format("set_spte gfn {:#x} spte {:#x} level {}", e.gfn, e.spte, e.level);
}

std::string body_line(const gms_pagecache_event& e)
{
    return fmt::format("{} gmem ino {} index {:#x} pfn {:#x}",
                       e.hdr.type == GMS_EV_PAGECACHE_ADD ? "pagecache_add" : "pagecache_delete",
                       e.ino, e.index, e.pfn);
}

std::string body_line(const gms_zap_event& e)
{
    if (e.hdr.type == GMS_EV_ZAP_PAGE)
        return fmt::format("zap_page gfn {:#x} role {:#x} gen {}", e.gfn, e.role, e.gen);
    return fmt::format("zap_all_fast gen {} used_pages {}", e.gen, e.count);
}

std::string body_line(const gms_tdp_spte_event& e)
{
    return fmt::format("tdp_spte_changed gfn {:#x} {:#x} -> {:#x} level {}", e.gfn, e.old_spte,
                       e.new_spte, e.level);
}

std::string body_line(const gms_iommu_event& e)
{
    if (e.hdr.type == GMS_EV_IOMMU_MAP)
        return fmt::format("iommu_map iova {:#x} size {:#x} paddr {:#x}", e.iova, e.size, e.paddr);
    return fmt::format("iommu_unmap iova {:#x} size {:#x} unmapped {:#x}", e.iova, e.size,
                       e.unmapped);
}

std::string body_line(const gms_call_event& e)
{
    std::string args;
    const json a = call_args_json(e);
    for (auto it = a.begin(); it != a.end(); ++it)
        args += fmt::format(" {}={}", it.key(), it->is_string() ? it->get<std::string>() : it->dump());
    std::string ino = e.ino ? fmt::format(" ino {}", e.ino) : std::string();
    std::string ret = e.ret < 0 ? fmt::format(" = {} ({})", e.ret, errno_name(e.ret)) : fmt::format(" = {}", e.ret);
    return fmt::format("{}{}{}{}", fn_name(e.fn), ino, args, ret);
}

std::string body_line(const gms_veto_event& e)
{
    std::string range = e.gmem_ino ? fmt::format("gmem ino {} index [{:#x}, {:#x})", e.gmem_ino, e.first, e.end)
                                   : fmt::format("gfn [{:#x}, {:#x})", e.first, e.end);
    std::string verdict = e.err ? fmt::format("VETOED with {}", errno_name(-e.err)) : std::string("would be vetoed (audit)");
    if (e.why == GMS_VETO_UNINDEXED)
        return fmt::format("conversion to private of {} {}: fail closed, the VM's process has {} DMA mappings the "
                           "index could not hold (enforce --fail-open lets these pass)",
                           range, verdict, e.not_indexed);
    if (e.why == GMS_VETO_TOO_MANY_SLOTS)
        return fmt::format("conversion to private of {} {}: fail closed, more than {} memslots in the range", range,
                           verdict, GMS_MAX_SLOTS_WALKED);
    if (!e.pin.kind)
        return fmt::format("conversion to private of {} {}: gfn [{:#x}, {:#x}) is under a DMA mapping the index "
                           "counts but cannot name",
                           range, verdict, e.hit_first_gfn, e.hit_end_gfn);
    return fmt::format("conversion to private of {} {}: gfn [{:#x}, {:#x}) is under the {}", range, verdict,
                       e.hit_first_gfn, e.hit_end_gfn, describe_pin(e.pin));
}

std::string body_line(const gms_drops_record& e)
{
    uint64_t dropped = 0;
    for (auto d : e.dropped)
        dropped += d;
    return fmt::format("drops: {} dropped, {} received", dropped, e.received);
}

uint64_t vm_of(const Record& r)
{
    return std::visit(
        [](const auto& x) -> uint64_t {
            if constexpr (requires { x.vm; })
                return x.vm;
            else
                return 0;
        },
        r);
}

}  // namespace

std::string dump_line(const nlohmann::json& j)
{
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json pin_json(const gms_pin& p) { return pin_body(p); }

nlohmann::json u64_json(uint64_t v)
{
    if (v <= kJsonMaxExact)
        return v;
    return hex(v);
}

nlohmann::json to_json(const Event& ev)
{
    const gms_hdr& h = ev.hdr();
    json j = std::visit([](const auto& r) { return body_json(r); }, ev.rec);
    j["type"] = event_name(h.type);
    j["ts_ns"] = u64_json(h.ts_ns);
    j["cpu"] = h.cpu;
    j["tgid"] = h.tgid;
    j["pid"] = h.pid;
    j["comm"] = comm_of(h);
    return j;
}

std::string to_line(const Event& ev, uint64_t t0_ns)
{
    const gms_hdr& h = ev.hdr();
    double t = h.ts_ns >= t0_ns ? double(h.ts_ns - t0_ns) / 1e9 : 0.0;
    uint64_t vm = vm_of(ev.rec);
    std::string who = fmt::format("{}/{}", comm_of(h), h.pid);
    std::string vm_s = vm ? fmt::format(" vm {:x}", vm) : std::string();
    std::string body = std::visit([](const auto& r) { return body_line(r); }, ev.rec);
    return fmt::format("{:12.6f} {:<20} cpu{:<2}{} {}", t, who, h.cpu, vm_s, body);
}

}  // namespace gms
