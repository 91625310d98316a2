#include "loader/probe/catalog.hpp"

#include "loader/events/events.hpp"

#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace gms {

std::string_view mech_name(Mech m)
{
    switch (m) {
    case Mech::fentry: return "fentry";
    case Mech::fexit: return "fexit";
    case Mech::tp_btf: return "tp_btf";
    case Mech::tracepoint: return "tracepoint";
    case Mech::syscall: return "syscall";
    }
    return "?";
}

namespace {

const std::vector<std::string_view> kIoctlProgs = {"syscalls_ioctl_enter", "syscalls_ioctl_exit"};
const std::vector<std::string_view> kIoctlTps = {"syscalls/sys_enter_ioctl", "syscalls/sys_exit_ioctl"};
const std::vector<std::string_view> kIommuMapProgs = {"iommu_map", "syscalls_ioctl_enter", "syscalls_ioctl_exit"};
const std::vector<std::string_view> kIommuUnmapProgs = {"iommu_unmap", "syscalls_ioctl_enter", "syscalls_ioctl_exit"};

Mechanism ioctl(std::string_view what) { return {Mech::syscall, what, kIoctlProgs, kIoctlTps}; }
// Precise tier: the programs attach to the first of the hook's symbols in BTF.
Mechanism fentry(std::vector<std::string_view> progs) { return {Mech::fentry, "", std::move(progs)}; }
Mechanism fexit(std::vector<std::string_view> progs) { return {Mech::fexit, "", std::move(progs)}; }
// ... to the hook's symbol only where its argument `arg` is (or is not) a pointer.
Mechanism fexit_if_arg(int arg, bool pointer, std::vector<std::string_view> progs)
{
    return {Mech::fexit, "", std::move(progs), {}, arg, pointer};
}
// ... or to a function of another signature that serves the same hook.
Mechanism fentry_on(std::string_view symbol, std::vector<std::string_view> progs)
{
    return {Mech::fentry, symbol, std::move(progs)};
}

bool region_bound(const Event& ev) { return std::get<gms_ioctl_event>(ev.rec).args.region.size != 0; }
bool region_unbound(const Event& ev) { return !region_bound(ev); }
bool fault_allocated(const Event& ev) { return (ev.hdr().flags & GMS_FAULT_ALLOCATED) != 0; }
bool portable_record(const Event& ev) { return (ev.hdr().flags & GMS_F_KFUNC) == 0; }

Seen on_ioctl(uint32_t op, bool (*when)(const Event&) = nullptr) { return {GMS_EV_IOCTL, op, when}; }

// Aliases of one hook share a signature (a rename); functions whose
// arguments differ are hooks of their own.
const std::vector<Hook> kCatalog = {
    {"gmem.create", "gmem", {"kvm_gmem_create"},
     {fexit({"gmem_create"}), ioctl("ioctl KVM_CREATE_GUEST_MEMFD")}, "new gmem file: VM, size, flags, inode", false,
     GMS_FN_GMEM_CREATE, {on_ioctl(GMS_IOC_CREATE_GUEST_MEMFD)}, {"gmem_create", "gmem_create"}},
    // v7.3 binds in two steps: kvm_gmem_prepare_memory_region(kvm, slot, fd,
    // offset), kvm_gmem_bind's signature, sets slot->gmem; then
    // kvm_gmem_commit_memory_region(kvm, slot) enters the slot in the file's
    // bindings (-EEXIST on an overlap, seen in the ioctl's result).
    {"gmem.bind", "gmem", {"kvm_gmem_prepare_memory_region", "kvm_gmem_bind"},
     {fexit({"gmem_bind"}), ioctl("ioctl KVM_SET_USER_MEMORY_REGION2")},
     "memslot bound to a gmem file: slot, gpa, pages, gmem offset, result", false, GMS_FN_GMEM_BIND,
     {on_ioctl(GMS_IOC_SET_MEMORY_REGION2, region_bound)}, {"gmem_bind", "gmem_bind"}},
    {"gmem.bind_commit", "gmem", {"kvm_gmem_commit_memory_region"}, {fexit({"gmem_bind_commit"})},
     "v7.3: memslot entered in its gmem file's bindings: slot, gfns, gmem offset, result (-EEXIST on an overlap)",
     false, GMS_FN_GMEM_BIND_COMMIT, {}, {"gmem_bind", ""}},
    {"gmem.unbind", "gmem", {"kvm_gmem_unbind"},
     {fentry({"gmem_unbind"}), ioctl("ioctl KVM_SET_USER_MEMORY_REGION2 (size 0)")},
     "memslot unbound from its gmem file", false, GMS_FN_GMEM_UNBIND,
     {on_ioctl(GMS_IOC_SET_MEMORY_REGION2, region_unbound)}, {"gmem_unbind", "gmem_unbind"}},
    {"gmem.get_pfn", "gmem", {"kvm_gmem_get_pfn"}, {fexit({"gmem_get_pfn"})},
     "gmem pfn lookup for a guest fault: gfn, gmem inode and index, pfn, result", false, GMS_FN_GMEM_GET_PFN, {},
     {"gmem_fault", ""}},
    {"gmem.populate", "gmem", {"kvm_gmem_populate"}, {fexit({"gmem_populate"})},
     "gmem pages populated before launch: gfn range, result", false, GMS_FN_GMEM_POPULATE},
    // v7.3: kvm_gmem_invalidate_start(inode, start, end) is static and
    // inlined; per gmem file it calls __kvm_gmem_invalidate_start(struct
    // gmem_file *, start, end, filter), which kvm_gmem_release() calls too.
    {"gmem.invalidate", "gmem", {"kvm_gmem_invalidate_start", "kvm_gmem_invalidate_begin"},
     {fentry({"gmem_invalidate"}), fentry_on("__kvm_gmem_invalidate_start", {"gmem_invalidate_file"}),
      {Mech::tracepoint, "filemap/mm_filemap_delete_from_page_cache", {"gmem_invalidate_pagecache"}}},
     "gmem range invalidated: inode, index range (portable tier: per folio removed)", false, GMS_FN_GMEM_INVALIDATE,
     {{GMS_EV_PAGECACHE_DEL}}, {"gmem_punch", "gmem_punch_resident"}},
    {"gmem.pagecache_add", "gmem", {}, {{Mech::tracepoint, "filemap/mm_filemap_add_to_page_cache", {"gmem_pagecache_add"}}},
     "folio added to a gmem file: inode, index, pfn", false, 0,
     // a gmem page added during a vCPU's fault is folded into the fault's record
     {{GMS_EV_PAGECACHE_ADD}, {GMS_EV_FAULT, 0, fault_allocated}}, {"", "gmem_fault"}},
    {"gmem.punch_hole", "gmem", {"kvm_gmem_fallocate"},
     {fexit({"gmem_punch_hole_entry", "gmem_punch_hole_exit"}),
      {Mech::syscall, "fallocate on a gmem fd", {"syscalls_fallocate_enter", "syscalls_fallocate_exit"},
       {"syscalls/sys_enter_fallocate", "syscalls/sys_exit_fallocate"}}},
     "punch-hole or allocation on a gmem file: offset, length, result", false, 0, {{GMS_EV_FALLOCATE}},
     {"gmem_punch", "gmem_punch"}},
    {"gmem.release", "gmem", {"kvm_gmem_release"},
     {fentry({"gmem_release"}), {Mech::syscall, "close of a gmem fd", {"syscalls_close_enter"}, {"syscalls/sys_enter_close"}}},
     "gmem file released (precise tier) or its fd closed (portable tier)", false, GMS_FN_GMEM_RELEASE,
     {{GMS_EV_GMEM_CLOSE}}, {"gmem_close", "gmem_close"}},
    // kvm_gmem_error_folio answers MF_DELAYED, which 7.3's memory_failure()
    // counts as a failed truncation: MADV_HWPOISON returns EBUSY after it ran.
    {"gmem.error_folio", "gmem", {"kvm_gmem_error_folio"}, {fentry({"gmem_error_folio"})},
     "memory failure on a gmem folio: inode, index", false, GMS_FN_GMEM_ERROR_FOLIO, {}, {"?gmem_hwpoison", ""}},
    {"gmem.set_attributes", "gmem", {"kvm_gmem_set_attributes"},
     {fexit({"gmem_set_attributes"}), ioctl("ioctl KVM_SET_MEMORY_ATTRIBUTES2")},
     "in-place conversion on a gmem fd: offset range, attributes, result, error offset", false,
     GMS_FN_GMEM_SET_ATTRIBUTES, {on_ioctl(GMS_IOC_SET_MEMORY_ATTRIBUTES2)}, {"gmem_attributes2", "?gmem_attributes2"}},
    {"gmem.convert", "gmem", {"kvm_gmem_convert_range"},
     {fexit({"gmem_convert"}), ioctl("ioctl KVM_GMEM_CONVERT_SHARED/PRIVATE")},
     "conversion on a gmem fd (2025 RFC): offset range, result, error offset", false, GMS_FN_GMEM_CONVERT,
     {on_ioctl(GMS_IOC_GMEM_CONVERT_SHARED), on_ioctl(GMS_IOC_GMEM_CONVERT_PRIVATE)}, {"gmem_convert", "?gmem_convert"}},
    {"kvm.create_vm", "kvm", {"kvm_dev_ioctl_create_vm"}, {ioctl("ioctl KVM_CREATE_VM")},
     "new VM: struct kvm identity, owning process", false, 0, {on_ioctl(GMS_IOC_CREATE_VM)}, {"", "vm_create"}},
    {"kvm.destroy_vm", "kvm", {"kvm_destroy_vm"},
     {fentry({"kvm_destroy_vm"}),
      {Mech::syscall, "close of a VM's last file reference", {"syscalls_close_enter"}, {"syscalls/sys_enter_close"}}},
     "VM destroyed: the end of its lifetime (portable tier: the close() that drops its last reference)", false,
     // the dma scenario's VM is destroyed when the scenario ends
     GMS_FN_KVM_DESTROY_VM, {}, {"vm_create", "vm_create"}},
    {"kvm.set_memory_region", "kvm", {"kvm_set_memory_region", "__kvm_set_memory_region"},
     {ioctl("ioctl KVM_SET_USER_MEMORY_REGION(2)")}, "memslot created, moved or deleted", false, 0,
     {on_ioctl(GMS_IOC_SET_MEMORY_REGION), on_ioctl(GMS_IOC_SET_MEMORY_REGION2)}, {"", "vm_create"}},
    // v7.3: kvm_vm_set_mem_attributes() is static (not in BTF) and fires the
    // tracepoint kvm:kvm_vm_set_mem_attributes(start, end, attr) once the
    // ioctl's checks passed.
    {"kvm.set_mem_attributes", "kvm", {"kvm_vm_set_mem_attributes"},
     {fexit({"kvm_set_mem_attributes"}),
      {Mech::tracepoint, "kvm/kvm_vm_set_mem_attributes", {"kvm_set_mem_attributes_tp"}},
      ioctl("ioctl KVM_SET_MEMORY_ATTRIBUTES")},
     "shared/private conversion of a gpa range on a VM fd, result (tracepoint: accepted requests, no result)", false,
     GMS_FN_KVM_SET_MEM_ATTRIBUTES,
     {on_ioctl(GMS_IOC_SET_MEMORY_ATTRIBUTES)}, {"vm_attributes", "?vm_attributes"}},
    {"kvm.mmu_notifier", "kvm", {"kvm_mmu_notifier_invalidate_range_start"},
     {fentry({"kvm_mmu_notifier"}), {Mech::tracepoint, "kvm/kvm_unmap_hva_range", {"kvm_unmap_hva_range"}}},
     "user memory of a VM's process invalidated (munmap, MADV_DONTNEED, migration): VM, user address range", false,
     GMS_FN_KVM_MMU_NOTIFIER, {}, {"madvise_dontneed", "madvise_dontneed"}},
    // The tracepoint fires in the MMU notifier right before it opens the
    // window; gmem invalidations (kvm_gmem_invalidate_begin) open it too
    // and only the precise tier sees those. 6.12 inlines
    // kvm_mmu_invalidate_begin into the MMU notifier, so its fentry
    // attaches and stays silent: the self-test replaces it.
    {"kvm.mmu_invalidate", "kvm", {"kvm_mmu_invalidate_start", "kvm_mmu_invalidate_begin"},
     {fentry({"kvm_mmu_invalidate"}), {Mech::tracepoint, "kvm/kvm_unmap_hva_range", {"kvm_unmap_hva_range"}}},
     "KVM MMU invalidation window opened (its range is known at the end)", true, GMS_FN_KVM_MMU_INVALIDATE_BEGIN,
     {{GMS_EV_CALL, GMS_FN_KVM_MMU_NOTIFIER, portable_record}}, {"madvise_dontneed", "madvise_dontneed"}},
    {"kvm.mmu_invalidate_end", "kvm", {"kvm_mmu_invalidate_end"}, {fentry({"kvm_mmu_invalidate_end"})},
     "KVM MMU invalidation window closed: VM, gfn range", false, GMS_FN_KVM_MMU_INVALIDATE_END, {},
     {"madvise_dontneed", ""}},
    {"kvm_mmu.fault", "kvm_mmu", {}, {{Mech::tp_btf, "kvm_mmu_spte_requested", {"kvm_mmu_fault"}}},
     "guest fault mapped: gfn, memslot, pfn, gmem inode and index", false, 0, {{GMS_EV_FAULT}}, {"", "touch"}},
    {"kvm_mmu.set_spte", "kvm_mmu", {}, {{Mech::tracepoint, "kvmmmu/kvm_mmu_set_spte", {"kvm_mmu_set_spte"}}},
     "SPTE installed after a gmem fault: gfn, spte (pfn), level", true, 0, {{GMS_EV_SET_SPTE}}, {"", "touch_shadow"}},
    {"kvm_mmu.zap_all_fast", "kvm_mmu", {}, {{Mech::tp_btf, "kvm_mmu_zap_all_fast", {"kvm_mmu_zap_all_fast"}}},
     "all roots invalidated (memslot delete or move)", false, 0, {{GMS_EV_ZAP_ALL_FAST}}, {"", "slot_delete"}},
    {"kvm_mmu.prepare_zap_page", "kvm_mmu", {},
     {{Mech::tracepoint, "kvmmmu/kvm_mmu_prepare_zap_page", {"kvm_mmu_prepare_zap_page"}}},
     "shadow page zapped: gfn, role", false, 0, {{GMS_EV_ZAP_PAGE}}, {"", "slot_delete_shadow"}},
    {"kvm_mmu.tdp_spte_changed", "kvm_mmu", {},
     {{Mech::tracepoint, "kvmmmu/kvm_tdp_mmu_spte_changed", {"kvm_mmu_tdp_spte_changed"}}},
     "TDP MMU SPTE change (TDP MMU only): gfn, old and new spte", false, 0, {{GMS_EV_TDP_SPTE}}, {"", "touch_tdp"}},
    {"vfio.pin", "vfio", {"vfio_pin_pages_remote"}, {fexit({"vfio_pin"}), ioctl("ioctl VFIO_IOMMU_MAP_DMA")},
     "VFIO type1 pin: vaddr, iova, pages, first pfn, result (-ENOMEM past RLIMIT_MEMLOCK)", false, GMS_FN_VFIO_PIN,
     {on_ioctl(GMS_IOC_VFIO_MAP_DMA)}, {"vfio_map", "vfio_map"}},
    {"vfio.unpin", "vfio", {"vfio_unpin_pages_remote"},
     {fexit({"vfio_unpin"}), ioctl("ioctl VFIO_IOMMU_UNMAP_DMA")}, "VFIO type1 unpin: vaddr, iova, pfn, pages", false,
     GMS_FN_VFIO_UNPIN, {on_ioctl(GMS_IOC_VFIO_UNMAP_DMA)}, {"vfio_unmap", "vfio_unmap"}},
    {"iommufd.map", "iommufd", {"iopt_map_user_pages"}, {fexit({"iommufd_map"}), ioctl("ioctl IOMMU_IOAS_MAP")},
     "IOAS map of user memory: user va, iova, length, result", false, GMS_FN_IOMMUFD_MAP, {on_ioctl(GMS_IOC_IOAS_MAP)},
     {"iommufd_map", "iommufd_map"}},
    // iopt_map_file_pages took the struct file * when it came in v6.13
    // (commit f4986a72d6e4 "iommufd: Add IOMMU_IOAS_MAP_FILE") and takes
    // the fd, a memfd's or a dma-buf's, since v6.19 (commit 217725f0b2c3
    // "iommufd: Have iopt_map_file_pages convert the fd to a file"): the
    // program is chosen by whether its fourth argument is a pointer.
    {"iommufd.map_file", "iommufd", {"iopt_map_file_pages"},
     {fexit_if_arg(3, true, {"iommufd_map_file"}), fexit_if_arg(3, false, {"iommufd_map_file_fd"}),
      ioctl("ioctl IOMMU_IOAS_MAP_FILE")},
     "IOAS map of a file (memfd, dma-buf): file inode, offset, iova, length, result", false, GMS_FN_IOMMUFD_MAP_FILE,
     {on_ioctl(GMS_IOC_IOAS_MAP_FILE)}, {"iommufd_map_file", "iommufd_map_file"}},
    {"iommufd.unmap", "iommufd", {"iopt_unmap_iova_range"}, {fexit({"iommufd_unmap"}), ioctl("ioctl IOMMU_IOAS_UNMAP")},
     "IOAS unmap: iova range, result (-EBUSY while pinned)", false, GMS_FN_IOMMUFD_UNMAP,
     {on_ioctl(GMS_IOC_IOAS_UNMAP)}, {"iommufd_unmap", "iommufd_unmap"}},
    {"iommufd.pin", "iommufd", {"pfn_reader_user_pin"}, {fexit({"iommufd_pin"})},
     "iommufd pin of user pages: va, pages, result (-ENOMEM past memlock)", false, GMS_FN_IOMMUFD_PIN, {},
     {"iommufd_map", ""}},
    {"iommufd.access_pin", "iommufd", {"iommufd_access_pin_pages"}, {fexit({"iommufd_access_pin"})},
     "iommufd access pin by an in-kernel user: iova, pages, result", false, GMS_FN_IOMMUFD_ACCESS_PIN},
    // The IOMMU tracepoints count only inside a VFIO or iommufd ioctl,
    // which the ioctl programs delimit.
    {"iommu.map", "iommu", {}, {{Mech::tracepoint, "iommu/map", kIommuMapProgs, kIoctlTps}},
     "IOMMU mapping made inside a VFIO/iommufd map: iova, paddr, size", false, 0, {{GMS_EV_IOMMU_MAP}},
     {"", "vfio_map"}},
    {"iommu.unmap", "iommu", {}, {{Mech::tracepoint, "iommu/unmap", kIommuUnmapProgs, kIoctlTps}},
     "IOMMU mapping removed inside a VFIO/iommufd unmap: iova, size", false, 0, {{GMS_EV_IOMMU_UNMAP}},
     {"", "vfio_unmap"}},
    {"vfio.dma_buf_export", "vfio", {"vfio_pci_core_feature_dma_buf"},
     {fexit({"vfio_dma_buf_export"}), ioctl("ioctl VFIO_DEVICE_FEATURE(DMA_BUF)")},
     "dma-buf exported from a VFIO PCI BAR: fd's inode, result", false, GMS_FN_VFIO_DMA_BUF_EXPORT,
     {on_ioctl(GMS_IOC_VFIO_DMA_BUF)}, {"vfio_dmabuf_export", "?vfio_dmabuf_export"}},
    // Memory decode cleared (revoke) or set (restore) in the command
    // register, or a reset (v6.19+, CONFIG_VFIO_PCI_DMABUF).
    {"vfio.dma_buf_move", "vfio", {"vfio_pci_dma_buf_move"}, {fentry({"vfio_dma_buf_move"})},
     "VFIO dma-buf revoked or restored", false, GMS_FN_VFIO_DMA_BUF_MOVE, {}, {"vfio_dmabuf_revoke", ""}},
    {"dmabuf.export", "dmabuf", {"dma_buf_export"}, {fexit({"dmabuf_export"})},
     "dma-buf created: size, exporter, inode", false, GMS_FN_DMA_BUF_EXPORT, {}, {"udmabuf_create", ""}},
    // dma_buf_move_notify(dmabuf) is dma_buf_invalidate_mappings(dmabuf) in v7.3.
    {"dmabuf.move_notify", "dmabuf", {"dma_buf_invalidate_mappings", "dma_buf_move_notify"},
     {fentry({"dmabuf_move_notify"})}, "importers told to drop their mappings", false, GMS_FN_DMA_BUF_MOVE_NOTIFY, {},
     {"vfio_dmabuf_revoke", ""}},
};

}  // namespace

std::span<const Hook> catalog() { return kCatalog; }

const Hook* find_hook(std::string_view name)
{
    for (const Hook& h : kCatalog)
        if (h.name == name)
            return &h;
    return nullptr;
}

const Hook* hook_of_fn(uint32_t fn)
{
    for (const Hook& h : kCatalog)
        if (fn && h.fn == fn)
            return &h;
    return nullptr;
}

std::vector<std::pair<const Hook*, bool>> evidence(const Event& ev)
{
    const gms_hdr& hdr = ev.hdr();
    uint32_t code = 0;
    if (hdr.type == GMS_EV_CALL)
        code = std::get<gms_call_event>(ev.rec).fn;
    else if (hdr.type == GMS_EV_IOCTL)
        code = std::get<gms_ioctl_event>(ev.rec).op;
    bool precise = (hdr.flags & GMS_F_KFUNC) != 0;
    std::vector<std::pair<const Hook*, bool>> out;
    for (const Hook& h : kCatalog) {
        bool shown = hdr.type == GMS_EV_CALL && h.fn && h.fn == code;
        for (const Seen& s : h.seen)
            shown |= s.type == hdr.type && (!s.code || s.code == code) && (!s.when || s.when(ev));
        if (shown)
            out.emplace_back(&h, precise);
    }
    return out;
}

std::vector<HookStatus> resolve(const Features& f, const std::set<std::string, std::less<>>& built,
                                const Refused& refused)
{
    std::vector<HookStatus> out;
    for (const Hook& h : kCatalog) {
        HookStatus hs{&h, {}, {}, -1, {}};
        std::string present;
        for (auto sym : h.symbols) {
            std::string owner = f.btf_func_owner(sym);
            if (owner.empty() && f.has_kallsyms(sym))
                owner = "kallsyms only";
            if (present.empty() && !owner.empty() && owner != "kallsyms only")
                present = sym;
            hs.symbols.emplace_back(std::string(sym), owner);
        }
        for (const Mechanism& m : h.mechanisms) {
            MechStatus ms{&m, false, {}, {}};
            bool built_all = !m.programs.empty();
            for (auto p : m.programs)
                built_all &= built.contains(p);
            switch (m.kind) {
            case Mech::fentry:
            case Mech::fexit: {
                ProgKind pk = m.kind == Mech::fentry ? ProgKind::fentry : ProgKind::fexit;
                ms.target = m.target.empty() ? present : std::string(m.target);
                bool in_btf = m.target.empty() ? !present.empty() : !f.btf_func_owner(m.target).empty();
                if (!f.loads(pk))
                    ms.reason = fmt::format("{} programs refused: {}", mech_name(m.kind), f.load(pk).detail);
                else if (!in_btf)
                    ms.reason = fmt::format("no {} in BTF", m.target.empty() ? fmt::format("{}", fmt::join(h.symbols, " or "))
                                                                           : std::string(m.target));
                else if (m.arg >= 0 && f.btf_func_arg_is_pointer(ms.target, m.arg) != m.arg_pointer)
                    ms.reason = fmt::format("argument {} of {} is {}a pointer on this kernel", m.arg + 1, ms.target,
                                            m.arg_pointer ? "not " : "");
                break;
            }
            case Mech::tp_btf:
                ms.target = m.target;
                if (!f.loads(ProgKind::tp_btf))
                    ms.reason = fmt::format("tp_btf programs refused: {}", f.load(ProgKind::tp_btf).detail);
                else if (!f.has_btf_typedef(fmt::format("btf_trace_{}", m.target)))
                    ms.reason = fmt::format("no tracepoint {} in BTF", m.target);
                break;
            case Mech::tracepoint: {
                ms.target = m.target;
                auto slash = m.target.find('/');
                if (!f.loads(ProgKind::tracepoint))
                    ms.reason = fmt::format("tracepoint programs refused: {}", f.load(ProgKind::tracepoint).detail);
                else if (!f.has_tracepoint(m.target.substr(0, slash), m.target.substr(slash + 1)))
                    ms.reason = fmt::format("no tracepoint {} in tracefs", m.target);
                break;
            }
            case Mech::syscall:
                ms.target = m.target;
                if (!f.loads(ProgKind::tracepoint))
                    ms.reason = fmt::format("tracepoint programs refused: {}", f.load(ProgKind::tracepoint).detail);
                break;
            }
            for (auto tp : m.tracepoints) {
                auto slash = tp.find('/');
                if (ms.reason.empty() && !f.has_tracepoint(tp.substr(0, slash), tp.substr(slash + 1)))
                    ms.reason = fmt::format("no tracepoint {} (CONFIG_FTRACE_SYSCALLS)", tp);
            }
            if (ms.reason.empty() && !built_all)
                ms.reason = "kernel allows it; no program for it in this build";
            for (auto p : m.programs)
                if (auto it = refused.find(p); ms.reason.empty() && it != refused.end())
                    ms.reason = fmt::format("{}: {}", p, it->second);
            ms.usable = ms.reason.empty();
            if (ms.usable && hs.chosen < 0)
                hs.chosen = static_cast<int>(hs.mechs.size());
            hs.mechs.push_back(std::move(ms));
        }
        if (hs.chosen < 0) {
            std::vector<std::string> why;
            for (const auto& ms : hs.mechs)
                why.push_back(fmt::format("{}: {}", mech_name(ms.mech->kind), ms.reason));
            hs.why_none = fmt::format("{}", fmt::join(why, "; "));
        }
        out.push_back(std::move(hs));
    }
    return out;
}

std::set<std::string, std::less<>> select_hooks(const std::vector<std::string>& names)
{
    std::set<std::string, std::less<>> out;
    auto add_all = [&](bool with_opt_in) {
        for (const Hook& h : kCatalog)
            if (with_opt_in || !h.opt_in)
                out.emplace(h.name);
    };
    if (names.empty())
        add_all(false);
    for (const auto& n : names) {
        if (n == "default" || n == "all") {
            add_all(n == "all");
            continue;
        }
        bool known = false;
        for (const Hook& h : kCatalog)
            known |= h.name == n;
        if (!known)
            throw std::invalid_argument(fmt::format("no hook named {} (gmemscope hooks lists them)", n));
        out.emplace(n);
    }
    return out;
}

std::set<std::string, std::less<>> chosen_programs(const std::vector<HookStatus>& hooks,
                                                   const std::set<std::string, std::less<>>& selected)
{
    std::set<std::string, std::less<>> out;
    for (const auto& h : hooks)
        if (h.chosen >= 0 && selected.contains(h.hook->name))
            for (auto p : h.mechs[h.chosen].mech->programs)
                out.emplace(p);
    return out;
}

nlohmann::json to_json(const HookStatus& h)
{
    nlohmann::json syms = nlohmann::json::array();
    for (const auto& [name, owner] : h.symbols)
        syms.push_back({{"name", name}, {"present", !owner.empty()}, {"where", owner}});
    nlohmann::json mechs = nlohmann::json::array();
    for (const auto& ms : h.mechs) {
        nlohmann::json progs = nlohmann::json::array();
        for (auto p : ms.mech->programs)
            progs.push_back(p);
        nlohmann::json j = {{"mechanism", mech_name(ms.mech->kind)}, {"target", ms.target},
                            {"programs", progs}, {"usable", ms.usable}};
        if (!ms.usable)
            j["reason"] = ms.reason;
        mechs.push_back(j);
    }
    nlohmann::json j = {{"hook", h.hook->name},         {"area", h.hook->area},
                        {"records", h.hook->records},   {"symbols", syms},
                        {"mechanisms", mechs},          {"available", h.chosen >= 0},
                        {"default", !h.hook->opt_in}};
    if (h.chosen >= 0)
        j["chosen"] = mech_name(h.mechs[h.chosen].mech->kind);
    else
        j["reason"] = h.why_none;
    return j;
}

}  // namespace gms
