// The dma scenario: guest memory that a device reaches. A buffer is
// mapped for DMA through VFIO type1 (which pins it) and is also a VM's
// memslot, so the same pages are both guest frames and DMA targets; then
// the operations that meet them: a conversion attempt, unmap, an MMU
// notifier invalidation, a memslot delete, a pin refused by
// RLIMIT_MEMLOCK, a dma-buf from udmabuf, and a dma-buf of the device's
// BAR0 exported through VFIO, revoked and restored.
#include "loader/workload/util.hpp"
#include "loader/workload/vfio_dma_buf.hpp"
#include "loader/workload/workload.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/pci_regs.h>
#include <linux/udmabuf.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>
#include <string>

namespace gms::workload {
namespace {

using util::hex;
using util::ioctl_err;

// The first /dev/vfio/<N>: an IOMMU group whose devices are bound to vfio-pci.
std::string find_vfio_group(std::uint64_t wanted)
{
    if (wanted != ~0ull)
        return "/dev/vfio/" + std::to_string(wanted);
    std::string found;
    if (DIR* dir = ::opendir("/dev/vfio")) {
        while (dirent* d = ::readdir(dir))
            if (std::isdigit(static_cast<unsigned char>(d->d_name[0])) && found.empty())
                found = std::string("/dev/vfio/") + d->d_name;
        ::closedir(dir);
    }
    return found;
}

Mapping anonymous(std::uint64_t bytes)
{
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        throw std::system_error(errno, std::generic_category(), "mmap DMA buffer");
    return Mapping(p, bytes);
}

// Maps `pages` with RLIMIT_MEMLOCK at a quarter of them and without
// CAP_IPC_LOCK, which would exempt the pins from the limit
// (vfio_dma->lock_cap): the errno of VFIO_IOMMU_MAP_DMA, ENOMEM expected.
// The capability leaves only this thread's effective set, and comes back.
int map_past_memlock(const VfioContainer& vfio, std::uint64_t iova, std::uint64_t pages)
{
    Mapping buffer = anonymous(pages * page_bytes);
    rlimit old{};
    ::getrlimit(RLIMIT_MEMLOCK, &old);
    rlimit low{pages * page_bytes / 4, old.rlim_max};
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct caps[2]{}, saved[2]{};
    if (::syscall(SYS_capget, &header, saved) < 0)
        return errno;
    std::memcpy(caps, saved, sizeof(caps));
    caps[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    if (::setrlimit(RLIMIT_MEMLOCK, &low) < 0 || ::syscall(SYS_capset, &header, caps) < 0)
        return errno;
    int err = vfio.map(buffer.addr(), iova, pages * page_bytes);
    ::syscall(SYS_capset, &header, saved);
    ::setrlimit(RLIMIT_MEMLOCK, &old);
    if (err == 0)
        vfio.unmap(iova, pages * page_bytes);
    return err;
}

// A dma-buf over a sealed memfd (drivers/dma-buf/udmabuf.c): 0 or an errno.
int make_udmabuf(std::uint64_t pages)
{
    Fd memfd(::memfd_create("gmemscope-udmabuf", MFD_ALLOW_SEALING | MFD_CLOEXEC));
    if (memfd.get() < 0)
        return errno;
    if (::ftruncate(memfd.get(), static_cast<off_t>(pages * page_bytes)) < 0 ||
        ::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK) < 0)
        return errno;
    Fd dev(::open("/dev/udmabuf", O_RDWR | O_CLOEXEC));
    if (dev.get() < 0)
        return errno;
    udmabuf_create create{};
    create.memfd = static_cast<__u32>(memfd.get());
    create.flags = UDMABUF_FLAGS_CLOEXEC;
    create.size = pages * page_bytes;
    int buf = ::ioctl(dev.get(), UDMABUF_CREATE, &create);
    if (buf < 0)
        return errno;
    ::close(buf);
    return 0;
}

// A VFIO PCI dma-buf of the device's BAR0, revoked and restored
// (loader/workload/vfio_dma_buf.hpp).
template <typename Step>
void vfio_dma_buf(const VfioContainer& vfio, Step&& step)
{
    std::string detail;
    int dev = vfio.device_fd(detail);
    if (!step("vfio_device", dev < 0 ? -dev : 0, detail))
        return;
    Fd device(dev);
    auto nothing = [](int, std::uint64_t) {};
    vfio_dma_buf_life(dev, "vfio_dmabuf", step, nothing, nothing);
}

}  // namespace

int VfioContainer::device_fd(std::string& detail) const
{
    // /dev/vfio/<N> is the group of /sys/kernel/iommu_groups/<N>.
    std::string dir = "/sys/kernel/iommu_groups/" + group_path_.substr(group_path_.rfind('/') + 1) + "/devices";
    std::string name;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] != '.' && name.empty())
                name = e->d_name;
        ::closedir(d);
    }
    if (name.empty()) {
        detail = "no device in " + dir;
        return -ENODEV;
    }
    detail = name;
    int fd = ::ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, name.c_str());
    return fd < 0 ? -errno : fd;
}

int VfioContainer::open(std::uint64_t group_id, std::string& detail)
{
    std::string group_path = find_vfio_group(group_id);
    if (group_path.empty()) {
        detail = "no /dev/vfio/<group>: no device is bound to vfio-pci";
        return ENODEV;
    }
    detail = group_path;
    group_path_ = group_path;
    container_ = Fd(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
    if (container_.get() < 0)
        return errno;
    if (::ioctl(container_.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
        detail += ": no VFIO_TYPE1v2_IOMMU (vfio_iommu_type1 not loaded?)";
        return ENOTSUP;
    }
    group_ = Fd(::open(group_path.c_str(), O_RDWR | O_CLOEXEC));
    if (group_.get() < 0)
        return errno;
    vfio_group_status status{};
    status.argsz = sizeof(status);
    if (int err = ioctl_err(group_.get(), VFIO_GROUP_GET_STATUS, &status))
        return err;
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        detail += ": group not viable (a device of it is not bound to vfio-pci)";
        return EBUSY;
    }
    int cfd = container_.get();
    if (int err = ioctl_err(group_.get(), VFIO_GROUP_SET_CONTAINER, &cfd))
        return err;
    if (::ioctl(container_.get(), VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
        return errno;
    return 0;
}

int VfioContainer::map(const std::byte* vaddr, std::uint64_t iova, std::uint64_t bytes) const
{
    vfio_iommu_type1_dma_map map{};
    map.argsz = sizeof(map);
    map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    map.vaddr = reinterpret_cast<std::uint64_t>(vaddr);
    map.iova = iova;
    map.size = bytes;
    return ioctl_err(container_.get(), VFIO_IOMMU_MAP_DMA, &map);
}

int VfioContainer::unmap(std::uint64_t iova, std::uint64_t bytes) const
{
    vfio_iommu_type1_dma_unmap unmap{};
    unmap.argsz = sizeof(unmap);
    unmap.iova = iova;
    unmap.size = bytes;
    return ioctl_err(container_.get(), VFIO_IOMMU_UNMAP_DMA, &unmap);
}

Result run_dma(const Scenario& s, std::ostream* log)
{
    Result result;
    result.kind = s.kind;
    auto step = [&](std::string name, int err, std::string detail = {}) {
        return util::record_step(result, log, "dma", std::move(name), err, std::move(detail));
    };
    const std::uint64_t bytes = s.pages * page_bytes;
    Mapping buffer = anonymous(bytes);
    result.buffer_vaddr = reinterpret_cast<std::uint64_t>(buffer.addr());

    // The memslot first, so that the map and its pins land on known gfns.
    Vm vm(Vm::UserMemory{buffer.addr(), s.pages, s.base_gpa});
    step("vm_create", 0, "slot 1 gfn " + hex(vm.base_gfn()) + " -> the buffer at " + hex(result.buffer_vaddr));
    VfioContainer container;
    std::string detail;
    int err = container.open(s.vfio_group, detail);
    bool vfio = step("vfio_open", err, detail);
    bool mapped = vfio && step("vfio_map", container.map(buffer.addr(), s.iova, bytes),
                               "vaddr " + hex(result.buffer_vaddr) + " iova " + hex(s.iova) + " pages " +
                                   std::to_string(s.pages));
    vm.touch(0, s.pages);
    result.pages_touched = s.pages;
    result.vcpu_runs = 1;
    step("touch", 0, std::to_string(s.pages) + " pages");

    if (step("gmem_create", -vm.create_unbound_gmem(16 * page_bytes))) {
        result.gmem_ino = vm.gmem_ino();
        step("gmem_punch", -vm.punch(0, page_bytes));
    }
    ConvertAnswer a = vm.convert(ConvertKind::vm_attributes, vm.base_gpa(), bytes, true);
    step("vm_attributes", a.error, "gpa " + hex(vm.base_gpa()) + " to private");

    if (mapped)
        step("vfio_unmap", container.unmap(s.iova, bytes));
    // The MMU notifier tells KVM the buffer's pages go: an invalidation of slot 1's gfns.
    step("madvise_dontneed", ::madvise(buffer.addr(), bytes, MADV_DONTNEED) < 0 ? errno : 0);
    vm.delete_user_slot();
    step("slot_delete", 0);
    if (vfio)
        step("vfio_map_past_memlock", map_past_memlock(container, s.iova, s.pages),
             "RLIMIT_MEMLOCK " + std::to_string(bytes / 4) + " bytes, no CAP_IPC_LOCK");
    step("udmabuf_create", make_udmabuf(s.pages));
    if (vfio)
        vfio_dma_buf(container, step);
    if (result.gmem_ino) {
        vm.close_gmem();
        step("gmem_close", 0);
    }
    result.ops = result.steps.size();
    return result;
}

}  // namespace gms::workload
