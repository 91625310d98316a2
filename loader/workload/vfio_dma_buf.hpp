// A VFIO PCI dma-buf's life, shared by the dma and private scenarios: a
// dma-buf of the device's BAR0 exported through VFIO_DEVICE_FEATURE_DMA_BUF,
// used, revoked by clearing memory decode in the command register through
// the config region (vfio_basic_config_write() -> vfio_pci_dma_buf_move(vdev,
// true), whose dma_buf_invalidate_mappings() tells importers), restored
// (vfio_pci_dma_buf_move(vdev, false)), and closed.
#pragma once

#include <fcntl.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "loader/workload/util.hpp"

namespace gms::workload {

// VFIO_DEVICE_FEATURE_DMA_BUF (include/uapi/linux/vfio.h, v6.19+ with
// CONFIG_VFIO_PCI_DMABUF), which Debian 12's <linux/vfio.h> lacks.
constexpr std::uint32_t vfio_device_feature_dma_buf = 11;
struct VfioDmaBufRequest {
    std::uint32_t argsz, feature_flags;   // struct vfio_device_feature; its data[] is what follows
    std::uint32_t region_index, open_flags, flags, nr_ranges;
    struct {
        std::uint64_t offset, length;
    } range;
};
static_assert(sizeof(VfioDmaBufRequest) == sizeof(vfio_device_feature) + 16 + 16);

// On the VFIO device fd `dev`: the steps PREFIX_regions, PREFIX_export,
// PREFIX_revoke, PREFIX_restore and PREFIX_close, each recorded by `step` (name, errno,
// detail) -> whether it succeeded; the later ones only if the export did.
// `exported(fd, bytes)` runs once the dma-buf is exported, before the
// revoke, and `closing(fd, bytes)` after the restore, before the close.
template <typename Step, typename Exported, typename Closing>
void vfio_dma_buf_life(int dev, const std::string& prefix, Step&& step, Exported&& exported, Closing&& closing)
{
    using util::hex;
    vfio_region_info bar0{}, config{};
    bar0.argsz = config.argsz = sizeof(vfio_region_info);
    bar0.index = VFIO_PCI_BAR0_REGION_INDEX;
    config.index = VFIO_PCI_CONFIG_REGION_INDEX;
    int err = util::ioctl_err(dev, VFIO_DEVICE_GET_REGION_INFO, &bar0);
    if (!err)
        err = util::ioctl_err(dev, VFIO_DEVICE_GET_REGION_INFO, &config);
    if (!step(prefix + "_regions", err, "BAR0 " + hex(bar0.size) + " bytes"))
        return;
    VfioDmaBufRequest req{};
    req.argsz = sizeof(req);
    req.feature_flags = VFIO_DEVICE_FEATURE_GET | vfio_device_feature_dma_buf;
    req.region_index = VFIO_PCI_BAR0_REGION_INDEX;
    req.open_flags = O_RDWR | O_CLOEXEC;
    req.nr_ranges = 1;
    req.range = {0, bar0.size};
    int buf = ::ioctl(dev, VFIO_DEVICE_FEATURE, &req);
    if (!step(prefix + "_export", buf < 0 ? errno : 0, "BAR0 [0, " + hex(bar0.size) + ")"))
        return;
    Fd dmabuf(buf);
    exported(buf, bar0.size);
    // A short transfer of the config region is an error of its own (EIO).
    auto config_io = [&](ssize_t n) { return n == 2 ? 0 : n < 0 ? errno : EIO; };
    const off_t command = static_cast<off_t>(config.offset) + PCI_COMMAND;
    std::uint16_t cmd = 0;
    err = config_io(::pread(dev, &cmd, sizeof(cmd), command));
    std::uint16_t off = static_cast<std::uint16_t>(cmd & ~PCI_COMMAND_MEMORY);
    if (!err)
        err = config_io(::pwrite(dev, &off, sizeof(off), command));
    if (step(prefix + "_revoke", err, "PCI_COMMAND " + hex(cmd) + " -> " + hex(off)))
        step(prefix + "_restore", config_io(::pwrite(dev, &cmd, sizeof(cmd), command)), "PCI_COMMAND " + hex(cmd));
    closing(buf, bar0.size);
    dmabuf.reset();
    step(prefix + "_close", 0, "");
}

}  // namespace gms::workload
