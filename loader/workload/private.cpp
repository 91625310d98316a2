// The private scenario: real shared<->private conversions in a
// KVM_X86_SW_PROTECTED_VM, and the conversion that matters to gmemscope:
// a range turned private while a device can still reach its shared
// backing through VFIO type1 or iommufd. KVM does not look at DMA
// mappings, so on a kernel without enforcement that conversion succeeds.
#include "loader/workload/iommufd_uapi.h"
#include "loader/workload/kvm_uapi.h"
#include "loader/workload/util.hpp"
#include "loader/workload/vfio_dma_buf.hpp"
#include "loader/workload/workload.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <chrono>

namespace gms::workload {
namespace {

using util::hex;
using util::ioctl_err;

// The first /dev/vfio/devices/vfioN (a VFIO device cdev, 6.6), or vfioN.
std::string find_vfio_device(std::uint64_t wanted)
{
    const std::string dir_path = "/dev/vfio/devices";
    if (wanted != ~0ull)
        return dir_path + "/vfio" + std::to_string(wanted);
    std::string found;
    if (DIR* dir = ::opendir(dir_path.c_str())) {
        while (dirent* d = ::readdir(dir)) {
            std::string name = d->d_name;
            if (name.starts_with("vfio") && name.size() > 4 && std::isdigit(static_cast<unsigned char>(name[4])) &&
                (found.empty() || name < found.substr(dir_path.size() + 1)))
                found = dir_path + "/" + name;
        }
        ::closedir(dir);
    }
    return found;
}

// A VFIO device bound to an iommufd and attached to one IOAS: the
// iommufd way of giving a device an address space (no group, no
// container). Calls return 0 or an errno.
class Iommufd {
public:
    int open_device(std::uint64_t wanted, std::string& detail)
    {
        std::string path = find_vfio_device(wanted);
        if (path.empty()) {
            detail = "no /dev/vfio/devices/vfio*: no device cdev (CONFIG_VFIO_DEVICE_CDEV) bound to vfio-pci";
            return ENODEV;
        }
        detail = path + " and /dev/iommu";
        device_ = Fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (device_.get() < 0)
            return errno;
        iommufd_ = Fd(::open("/dev/iommu", O_RDWR | O_CLOEXEC));
        return iommufd_.get() < 0 ? errno : 0;
    }
    int bind(std::string& detail)
    {
        uapi::vfio_device_bind_iommufd bind{};
        bind.argsz = sizeof(bind);
        bind.iommufd = iommufd_.get();
        int err = ioctl_err(device_.get(), uapi::vfio_device_bind_iommufd_ioctl, &bind);
        detail = "devid " + std::to_string(bind.out_devid);
        return err;
    }
    int alloc_ioas(std::string& detail)
    {
        uapi::iommu_ioas_alloc alloc{};
        alloc.size = sizeof(alloc);
        int err = ioctl_err(iommufd_.get(), uapi::iommu_ioas_alloc_ioctl, &alloc);
        ioas_id_ = alloc.out_ioas_id;
        detail = "ioas " + std::to_string(ioas_id_);
        return err;
    }
    int attach()
    {
        uapi::vfio_device_attach_iommufd_pt attach{};
        attach.argsz = sizeof(attach);
        attach.pt_id = ioas_id_;
        return ioctl_err(device_.get(), uapi::vfio_device_attach_iommufd_pt_ioctl, &attach);
    }
    // IOMMU_IOAS_MAP at a fixed iova: pins the pages now, the device
    // being attached (iopt_fill_domains_pages).
    int map(const std::byte* vaddr, std::uint64_t iova, std::uint64_t bytes)
    {
        uapi::iommu_ioas_map map{};
        map.size = sizeof(map);
        map.flags = uapi::iommu_ioas_map_fixed_iova | uapi::iommu_ioas_map_readable |
                    uapi::iommu_ioas_map_writeable;
        map.ioas_id = ioas_id_;
        map.user_va = reinterpret_cast<std::uint64_t>(vaddr);
        map.length = bytes;
        map.iova = iova;
        return ioctl_err(iommufd_.get(), uapi::iommu_ioas_map_ioctl, &map);
    }
    int map_file(int fd, std::uint64_t start, std::uint64_t iova, std::uint64_t bytes)
    {
        uapi::iommu_ioas_map_file map{};
        map.size = sizeof(map);
        map.flags = uapi::iommu_ioas_map_fixed_iova | uapi::iommu_ioas_map_readable |
                    uapi::iommu_ioas_map_writeable;
        map.ioas_id = ioas_id_;
        map.fd = fd;
        map.start = start;
        map.length = bytes;
        map.iova = iova;
        return ioctl_err(iommufd_.get(), uapi::iommu_ioas_map_file_ioctl, &map);
    }
    int unmap(std::uint64_t iova, std::uint64_t bytes)
    {
        uapi::iommu_ioas_unmap unmap{};
        unmap.size = sizeof(unmap);
        unmap.ioas_id = ioas_id_;
        unmap.iova = iova;
        unmap.length = bytes;
        return ioctl_err(iommufd_.get(), uapi::iommu_ioas_unmap_ioctl, &unmap);
    }
    int fd() const { return iommufd_.get(); }
    int device() const { return device_.get(); }

private:
    Fd device_;
    Fd iommufd_;
    std::uint32_t ioas_id_ = 0;
};

volatile sig_atomic_t sigbus_seen = 0;
void on_sigbus(int) { sigbus_seen = 1; }

// A memory failure on a gmem page: MADV_HWPOISON (CAP_SYS_ADMIN,
// CONFIG_MEMORY_FAILURE) of a page of a gmem file the host maps, which
// memory_failure() hands to the gmem mapping's error_remove_folio,
// kvm_gmem_error_folio. A private VM's gmem cannot be mapped by the host
// (no INIT_SHARED for VMs with private memory, 7.3), so the page is a
// default VM's MMAP|INIT_SHARED gmem. The poisoned page stays poisoned
// (the kernel keeps it out of use) until /sys/kernel/debug/hwpoison/unpoison-pfn.
// gmem folios are never dirty (noop_dirty_folio), so memory_failure()
// does not kill the mapping process; SIGBUS is caught in case it does.
int poison_gmem_page(std::string& detail)
{
    VmConfig config;
    config.gmem_size_bytes = 4 * page_bytes;
    config.slot_pages = 4;
    Vm vm(config);
    std::span<std::byte> gmem = vm.gmem_mapping();
    gmem[0] = std::byte{1};  // faults the folio in through the host mapping
    detail = "gmem ino " + std::to_string(vm.gmem_ino()) + " pgoff 0";
    struct sigaction guard{}, old{};
    guard.sa_handler = on_sigbus;
    ::sigemptyset(&guard.sa_mask);
    ::sigaction(SIGBUS, &guard, &old);
    sigbus_seen = 0;
    int err = ::madvise(gmem.data(), page_bytes, MADV_HWPOISON) < 0 ? errno : 0;
    ::sigaction(SIGBUS, &old, nullptr);
    if (sigbus_seen)
        detail += ", SIGBUS delivered";
    // The poisoned page is never read again: the VM and its gmem go now.
    return err;
}

}  // namespace

Result run_private(const Scenario& s, std::ostream* log)
{
    Result result;
    result.kind = s.kind;
    auto step = [&](std::string name, int err, std::string detail = {}) {
        return util::record_step(result, log, "private", std::move(name), err, std::move(detail));
    };

    Vm::PrivateMemory config{};
    config.slot_pages = s.pages;
    config.gmem_offset_bytes = s.gmem_offset_bytes;
    config.gmem_size_bytes = s.gmem_size_bytes ? s.gmem_size_bytes : s.gmem_offset_bytes + s.pages * page_bytes;
    config.base_gpa = s.base_gpa;
    Vm vm(config);
    result.gmem_ino = vm.gmem_ino();
    result.buffer_vaddr = reinterpret_cast<std::uint64_t>(vm.shared_addr());
    const std::uint64_t gfn = vm.base_gfn();
    const std::uint64_t private_bytes = s.private_pages * page_bytes;
    auto range = [&](std::uint64_t pages) {
        return "gfn " + hex(gfn) + ".." + hex(gfn + pages - 1) + " gmem pgoff " + hex(vm.gmem_pgoff()) +
               " shared backing " + hex(result.buffer_vaddr);
    };
    step("vm_create", 0, "type 1 (KVM_X86_SW_PROTECTED_VM), gmem ino " + std::to_string(vm.gmem_ino()));
    step("gmem_bind", 0, "slot " + std::to_string(Vm::gmem_slot) + " " + range(s.pages));

    auto touch = [&](const std::string& name, std::uint64_t pages) {
        vm.touch(0, pages);
        result.pages_touched += pages;
        ++result.vcpu_runs;
        step(name, 0, std::to_string(pages) + " pages from gfn " + hex(gfn));
    };
    // KVM_SET_MEMORY_ATTRIBUTES over the private range: a step and a conversion.
    auto convert = [&](const std::string& name, bool to_private) {
        ConvertAnswer a = vm.convert(ConvertKind::vm_attributes, vm.base_gpa(), private_bytes, to_private);
        result.conversions.push_back(a);
        return step(name, a.error, range(s.private_pages) + (to_private ? " to private" : " to shared"));
    };

    // Every gfn starts shared: the first faults come from the shared backing.
    touch("touch_shared", s.pages);
    convert("to_private", true);
    // Private gfns now fault through kvm_gmem_get_pfn (the fault's
    // PFERR_PRIVATE_ACCESS follows the attribute on SW-protected VMs).
    touch("gmem_fault", s.pages);
    // hold_ms: a live VM with a private range, faulted, for audit and explain.
    if (s.hold_ms) {
        if (log)
            *log << "private: holding for " << s.hold_ms << " ms\n";
        std::this_thread::sleep_for(std::chrono::milliseconds(s.hold_ms));
    }
    for (std::uint64_t page = 0; page < s.punch_pages; ++page) {
        std::uint64_t offset = vm.gmem_offset_bytes() + page * page_bytes;
        step("gmem_punch", -vm.punch(offset, page_bytes), "gmem offset " + hex(offset));
        ++result.punches;
    }
    touch("touch_after_punch", s.private_pages);
    convert("to_shared", false);
    vm.delete_slot();
    step("gmem_unbind", 0, "slot " + std::to_string(Vm::gmem_slot));
    vm.bind_slot(s.base_gpa, s.pages, s.gmem_offset_bytes);
    ++result.rebinds;
    step("gmem_rebind", 0, range(s.pages));
    touch("touch_rebound", s.pages);

    // The conversion that matters: the private range's shared backing is
    // reachable by a device (pinned and in its IOMMU) while it turns
    // private. VFIO type1 first: its group and the device cdev below
    // exclude each other, so the container is closed before the cdev opens.
    const std::byte* backing = vm.shared_addr();
    const std::string where = "vaddr " + hex(result.buffer_vaddr) + " iova " + hex(s.iova) + " pages " +
                              std::to_string(s.private_pages);
    {
        VfioContainer container;
        std::string detail;
        if (step("vfio_open", container.open(s.vfio_group, detail), detail) &&
            step("vfio_map", container.map(backing, s.iova, private_bytes), where)) {
            convert("to_private_vfio_mapped", true);
            convert("to_shared_vfio_mapped", false);
            step("vfio_unmap", container.unmap(s.iova, private_bytes), where);
            convert("to_private_after_vfio_unmap", true);
            convert("to_shared_after_vfio_unmap", false);
        }
    }
    {
        Iommufd iommufd;
        std::string detail;
        if (step("iommufd_open", iommufd.open_device(s.vfio_device, detail), detail) &&
            step("iommufd_bind", iommufd.bind(detail), detail) &&
            step("iommufd_ioas_alloc", iommufd.alloc_ioas(detail), detail) &&
            step("iommufd_attach", iommufd.attach()) &&
            step("iommufd_map", iommufd.map(backing, s.iova, private_bytes), where)) {
            convert("to_private_iommufd_mapped", true);
            convert("to_shared_iommufd_mapped", false);
            step("iommufd_unmap", iommufd.unmap(s.iova, private_bytes), where);
            convert("to_private_after_iommufd_unmap", true);
            convert("to_shared_after_iommufd_unmap", false);

            // IOMMU_IOAS_MAP_FILE (6.13): pages of a memfd by file offset.
            Fd memfd(::memfd_create("gmemscope-ioas-file", MFD_CLOEXEC));
            int err = memfd.get() < 0 ? errno : 0;
            if (!err && ::ftruncate(memfd.get(), static_cast<off_t>(private_bytes)) < 0)
                err = errno;
            std::uint64_t file_iova = s.iova + private_bytes;
            std::string file_where = "memfd iova " + hex(file_iova) + " pages " + std::to_string(s.private_pages);
            if (step("iommufd_map_file", err ? err : iommufd.map_file(memfd.get(), 0, file_iova, private_bytes),
                     file_where))
                step("iommufd_unmap_file", iommufd.unmap(file_iova, private_bytes), file_where);

            // The device's own BAR as a dma-buf mapped into the IOAS (the
            // VMM's shared dma-buf of the TDISP threads): on the revoke the
            // kernel takes the mapping's pages away (iopt_dmabuf_revoked).
            const std::uint64_t bar_iova = file_iova + private_bytes;
            bool mapped = false;
            vfio_dma_buf_life(
                iommufd.device(), "iommufd_dmabuf", step,
                [&](int buf, std::uint64_t bytes) {
                    mapped = step("iommufd_map_dmabuf", iommufd.map_file(buf, 0, bar_iova, bytes),
                                  "iova " + hex(bar_iova) + " bytes " + hex(bytes));
                },
                [&](int, std::uint64_t bytes) {
                    if (mapped)
                        step("iommufd_unmap_dmabuf", iommufd.unmap(bar_iova, bytes), "iova " + hex(bar_iova));
                });
        }
    }

    if (s.poison) {
        std::string detail;
        int err = poison_gmem_page(detail);
        step("gmem_hwpoison", err, detail);
    }

    vm.close_gmem();
    step("gmem_close", 0, "gmem ino " + std::to_string(result.gmem_ino));
    result.ops = result.conversions.size();
    return result;
}

}  // namespace gms::workload
