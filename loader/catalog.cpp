#include "loader/catalog.hpp"

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

Mechanism ioctl(std::string_view what) { return {Mech::syscall, what, kIoctlProgs, kIoctlTps}; }
// Precise tier: the programs attach to the first of the hook's symbols in BTF.
Mechanism fentry(std::vector<std::string_view> progs) { return {Mech::fentry, "", std::move(progs)}; }
Mechanism fexit(std::vector<std::string_view> progs) { return {Mech::fexit, "", std::move(progs)}; }

// Aliases of one hook share a signature (a rename); functions whose
// arguments differ are hooks of their own.
const std::vector<Hook> kCatalog = {
    {"gmem.create", "gmem", {"kvm_gmem_create"},
     {fexit({"gmem_create_exit"}), ioctl("ioctl KVM_CREATE_GUEST_MEMFD")}, "new gmem file: VM, size, flags, inode"},
    {"gmem.bind", "gmem", {"kvm_gmem_bind"},
     {fexit({"gmem_bind_exit"}), ioctl("ioctl KVM_SET_USER_MEMORY_REGION2")},
     "memslot bound to a gmem file: slot, gpa, pages, gmem offset, result"},
    {"gmem.unbind", "gmem", {"kvm_gmem_unbind"},
     {fentry({"gmem_unbind"}), ioctl("ioctl KVM_SET_USER_MEMORY_REGION2 (size 0)")},
     "memslot unbound from its gmem file"},
    {"gmem.get_pfn", "gmem", {"kvm_gmem_get_pfn"}, {fexit({"gmem_get_pfn_exit"})},
     "gmem pfn lookup for a guest fault: gfn, gmem inode and index, pfn, result"},
    {"gmem.populate", "gmem", {"kvm_gmem_populate"}, {fexit({"gmem_populate_exit"})},
     "gmem pages populated before launch: gfn range, result"},
    {"gmem.invalidate", "gmem", {"kvm_gmem_invalidate_start", "kvm_gmem_invalidate_begin"},
     {fentry({"gmem_invalidate"}),
      {Mech::tracepoint, "filemap/mm_filemap_delete_from_page_cache", {"gmem_pagecache_delete"}}},
     "gmem range invalidated: inode, index range (portable tier: per folio removed)"},
    {"gmem.pagecache_add", "gmem", {}, {{Mech::tracepoint, "filemap/mm_filemap_add_to_page_cache", {"gmem_pagecache_add"}}},
     "folio added to a gmem file: inode, index, pfn"},
    {"gmem.punch_hole", "gmem", {"kvm_gmem_fallocate"},
     {fexit({"gmem_fallocate_entry", "gmem_fallocate_exit"}),
      {Mech::syscall, "fallocate on a gmem fd", {"syscalls_fallocate_enter", "syscalls_fallocate_exit"},
       {"syscalls/sys_enter_fallocate", "syscalls/sys_exit_fallocate"}}},
     "punch-hole or allocation on a gmem file: offset, length, result"},
    {"gmem.release", "gmem", {"kvm_gmem_release"},
     {fentry({"gmem_release"}), {Mech::syscall, "close of a gmem fd", {"syscalls_close_enter"}, {"syscalls/sys_enter_close"}}},
     "gmem file released (precise tier) or its fd closed (portable tier)"},
    {"gmem.error_folio", "gmem", {"kvm_gmem_error_folio"}, {fentry({"gmem_error_folio"})},
     "memory failure on a gmem folio: inode, index"},
    {"gmem.set_attributes", "gmem", {"kvm_gmem_set_attributes"},
     {fexit({"gmem_set_attributes_exit"}), ioctl("ioctl KVM_SET_MEMORY_ATTRIBUTES2")},
     "in-place conversion on a gmem fd: offset range, attributes, result, error offset"},
    {"gmem.convert", "gmem", {"kvm_gmem_convert_range"},
     {fexit({"gmem_convert_exit"}), ioctl("ioctl KVM_GMEM_CONVERT_SHARED/PRIVATE")},
     "conversion on a gmem fd (2025 RFC): offset range, result, error offset"},
    {"kvm.create_vm", "kvm", {"kvm_dev_ioctl_create_vm"}, {ioctl("ioctl KVM_CREATE_VM")},
     "new VM: struct kvm identity, owning process"},
    {"kvm.destroy_vm", "kvm", {"kvm_destroy_vm"},
     {fentry({"kvm_destroy_vm"}),
      {Mech::syscall, "close of a VM's last file reference", {"syscalls_close_enter"}, {"syscalls/sys_enter_close"}}},
     "VM destroyed: the end of its lifetime (portable tier: the close() that drops its last reference)"},
    {"kvm.set_memory_region", "kvm", {"kvm_set_memory_region", "__kvm_set_memory_region"},
     {ioctl("ioctl KVM_SET_USER_MEMORY_REGION(2)")}, "memslot created, moved or deleted"},
    {"kvm.set_mem_attributes", "kvm", {"kvm_vm_set_mem_attributes"},
     {fexit({"kvm_set_mem_attributes_exit"}), ioctl("ioctl KVM_SET_MEMORY_ATTRIBUTES")},
     "shared/private conversion of a gpa range on a VM fd, result"},
    {"kvm.mmu_notifier", "kvm", {"kvm_mmu_notifier_invalidate_range_start"},
     {fentry({"kvm_mmu_notifier_invalidate"}), {Mech::tracepoint, "kvm/kvm_unmap_hva_range", {"kvm_unmap_hva_range"}}},
     "user memory of a VM's process invalidated (munmap, MADV_DONTNEED, migration): VM, user address range"},
    // The tracepoint fires in the MMU notifier right before it opens the
    // window; gmem invalidations (kvm_gmem_invalidate_begin) open it too
    // and only the precise tier sees those.
    {"kvm.mmu_invalidate", "kvm", {"kvm_mmu_invalidate_start", "kvm_mmu_invalidate_begin"},
     {fentry({"kvm_mmu_invalidate_begin"}), {Mech::tracepoint, "kvm/kvm_unmap_hva_range", {"kvm_unmap_hva_range"}}},
     "KVM MMU invalidation window opened (its range is known at the end)", true},
    {"kvm.mmu_invalidate_end", "kvm", {"kvm_mmu_invalidate_end"}, {fentry({"kvm_mmu_invalidate_end"})},
     "KVM MMU invalidation window closed: VM, gfn range"},
    {"kvm_mmu.fault", "kvm_mmu", {}, {{Mech::tp_btf, "kvm_mmu_spte_requested", {"kvm_mmu_spte_requested"}}},
     "guest fault mapped: gfn, memslot, pfn, gmem inode and index"},
    {"kvm_mmu.set_spte", "kvm_mmu", {}, {{Mech::tracepoint, "kvmmmu/kvm_mmu_set_spte", {"kvm_mmu_set_spte"}}},
     "SPTE installed after a gmem fault: gfn, spte (pfn), level", true},
    {"kvm_mmu.zap_all_fast", "kvm_mmu", {}, {{Mech::tp_btf, "kvm_mmu_zap_all_fast", {"kvm_mmu_zap_all_fast"}}},
     "all roots invalidated (memslot delete or move)"},
    {"kvm_mmu.prepare_zap_page", "kvm_mmu", {},
     {{Mech::tracepoint, "kvmmmu/kvm_mmu_prepare_zap_page", {"kvm_mmu_prepare_zap_page"}}},
     "shadow page zapped: gfn, role"},
    {"kvm_mmu.tdp_spte_changed", "kvm_mmu", {},
     {{Mech::tracepoint, "kvmmmu/kvm_tdp_mmu_spte_changed", {"kvm_mmu_tdp_spte_changed"}}},
     "TDP MMU SPTE change (TDP MMU only): gfn, old and new spte"},
    {"vfio.pin", "vfio", {"vfio_pin_pages_remote"}, {fexit({"vfio_pin_exit"}), ioctl("ioctl VFIO_IOMMU_MAP_DMA")},
     "VFIO type1 pin: vaddr, iova, pages, first pfn, result (-ENOMEM past RLIMIT_MEMLOCK)"},
    {"vfio.unpin", "vfio", {"vfio_unpin_pages_remote"},
     {fexit({"vfio_unpin_exit"}), ioctl("ioctl VFIO_IOMMU_UNMAP_DMA")}, "VFIO type1 unpin: vaddr, iova, pfn, pages"},
    {"iommufd.map", "iommufd", {"iopt_map_user_pages"}, {fexit({"iommufd_map_exit"}), ioctl("ioctl IOMMU_IOAS_MAP")},
     "IOAS map of user memory: user va, iova, length, result"},
    {"iommufd.map_file", "iommufd", {"iopt_map_file_pages"},
     {fexit({"iommufd_map_file_exit"}), ioctl("ioctl IOMMU_IOAS_MAP_FILE")},
     "IOAS map of a file (memfd, dma-buf): file inode, offset, iova, length, result"},
    {"iommufd.unmap", "iommufd", {"iopt_unmap_iova_range"}, {fexit({"iommufd_unmap_exit"}), ioctl("ioctl IOMMU_IOAS_UNMAP")},
     "IOAS unmap: iova range, result (-EBUSY while pinned)"},
    {"iommufd.pin", "iommufd", {"pfn_reader_user_pin"}, {fexit({"iommufd_pin_exit"})},
     "iommufd pin of user pages: va, pages, result (-ENOMEM past memlock)"},
    {"iommufd.access_pin", "iommufd", {"iommufd_access_pin_pages"}, {fexit({"iommufd_access_pin_exit"})},
     "iommufd access pin by an in-kernel user: iova, pages, result"},
    {"iommu.map", "iommu", {}, {{Mech::tracepoint, "iommu/map", {"iommu_map"}}},
     "IOMMU mapping made inside a VFIO/iommufd map: iova, paddr, size"},
    {"iommu.unmap", "iommu", {}, {{Mech::tracepoint, "iommu/unmap", {"iommu_unmap"}}},
     "IOMMU mapping removed inside a VFIO/iommufd unmap: iova, size"},
    {"vfio.dma_buf_export", "vfio", {"vfio_pci_core_feature_dma_buf"},
     {fexit({"vfio_dma_buf_export_exit"}), ioctl("ioctl VFIO_DEVICE_FEATURE(DMA_BUF)")},
     "dma-buf exported from a VFIO PCI BAR: fd's inode, result"},
    {"vfio.dma_buf_move", "vfio", {"vfio_pci_dma_buf_move"}, {fentry({"vfio_dma_buf_move"})},
     "VFIO dma-buf revoked or restored"},
    {"dmabuf.export", "dmabuf", {"dma_buf_export"}, {fexit({"dmabuf_export_exit"})},
     "dma-buf created: size, exporter, inode"},
    {"dmabuf.move_notify", "dmabuf", {"dma_buf_invalidate_mappings", "dma_buf_move_notify"},
     {fentry({"dmabuf_move_notify"})}, "importers told to drop their mappings"},
};

}  // namespace

std::span<const Hook> catalog() { return kCatalog; }

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
                ms.target = present;
                if (!f.loads(pk))
                    ms.reason = fmt::format("{} programs refused: {}", mech_name(m.kind), f.load(pk).detail);
                else if (present.empty())
                    ms.reason = fmt::format("no {} in BTF", fmt::join(h.symbols, " or "));
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
                for (auto tp : m.tracepoints) {
                    auto slash = tp.find('/');
                    if (!f.has_tracepoint(tp.substr(0, slash), tp.substr(slash + 1)))
                        ms.reason = fmt::format("no tracepoint {} (CONFIG_FTRACE_SYSCALLS)", tp);
                }
                if (!f.loads(ProgKind::tracepoint))
                    ms.reason = fmt::format("tracepoint programs refused: {}", f.load(ProgKind::tracepoint).detail);
                break;
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
