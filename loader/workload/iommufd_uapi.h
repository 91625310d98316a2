// iommufd and VFIO device-cdev UAPI that Debian 12's headers (6.1) lack,
// from include/uapi/linux/iommufd.h and vfio.h of Linux 7.3. Each ioctl
// number is the kernel's _IO(';', n) and is checked against bpf/ioctls.h
// where BPF decodes it too; each struct's size is the kernel's, which the
// ioctls take from their `size`/`argsz` field.
//
// Names are the kernel's, in lower case (see loader/workload/kvm_uapi.h).
#pragma once

#include <linux/ioctl.h>
#include <linux/types.h>

#include <cstddef>

#include "ioctls.h"

namespace gms::uapi {

inline constexpr unsigned iommufd_type = ';';  // IOMMUFD_TYPE, shared with VFIO_TYPE
inline constexpr unsigned vfio_base = 100;      // VFIO_BASE

// enum iommufd_ioas_map_flags
inline constexpr __u32 iommu_ioas_map_fixed_iova = 1u << 0;
inline constexpr __u32 iommu_ioas_map_writeable = 1u << 1;
inline constexpr __u32 iommu_ioas_map_readable = 1u << 2;

struct iommu_ioas_alloc {
    __u32 size;
    __u32 flags;
    __u32 out_ioas_id;
};
static_assert(sizeof(iommu_ioas_alloc) == 12);

struct iommu_ioas_map {
    __u32 size;
    __u32 flags;
    __u32 ioas_id;
    __u32 reserved;
    __u64 user_va;
    __u64 length;
    __u64 iova;
};
static_assert(sizeof(iommu_ioas_map) == 40);

// 6.13: maps pages of a memfd (or, in 7.x, a dma-buf) by file offset.
struct iommu_ioas_map_file {
    __u32 size;
    __u32 flags;
    __u32 ioas_id;
    __s32 fd;
    __u64 start;
    __u64 length;
    __u64 iova;
};
static_assert(sizeof(iommu_ioas_map_file) == 40);

struct iommu_ioas_unmap {
    __u32 size;
    __u32 ioas_id;
    __u64 iova;
    __u64 length;
};
static_assert(sizeof(iommu_ioas_unmap) == 24);

// 6.6: a VFIO device opened through /dev/vfio/devices/vfioN is bound to
// an iommufd, then attached to an IOAS (or HWPT) by id.
struct vfio_device_bind_iommufd {
    __u32 argsz;
    __u32 flags;
    __s32 iommufd;
    __u32 out_devid;
    __u64 token_uuid_ptr;  // with VFIO_DEVICE_BIND_FLAG_TOKEN (6.17)
};
static_assert(sizeof(vfio_device_bind_iommufd) == 24);

struct vfio_device_attach_iommufd_pt {
    __u32 argsz;
    __u32 flags;
    __u32 pt_id;
    __u32 pasid;  // with VFIO_DEVICE_ATTACH_PASID (6.14)
};
static_assert(sizeof(vfio_device_attach_iommufd_pt) == 16);

inline constexpr unsigned long iommu_ioas_alloc_ioctl = _IO(iommufd_type, 0x81);
inline constexpr unsigned long iommu_ioas_map_ioctl = _IO(iommufd_type, 0x85);
inline constexpr unsigned long iommu_ioas_unmap_ioctl = _IO(iommufd_type, 0x86);
inline constexpr unsigned long iommu_ioas_map_file_ioctl = _IO(iommufd_type, 0x8f);
inline constexpr unsigned long vfio_device_bind_iommufd_ioctl = _IO(iommufd_type, vfio_base + 18);
inline constexpr unsigned long vfio_device_attach_iommufd_pt_ioctl = _IO(iommufd_type, vfio_base + 19);

static_assert(iommu_ioas_map_ioctl == GMS_IOMMU_IOAS_MAP);
static_assert(iommu_ioas_unmap_ioctl == GMS_IOMMU_IOAS_UNMAP);
static_assert(iommu_ioas_map_file_ioctl == GMS_IOMMU_IOAS_MAP_FILE);

}  // namespace gms::uapi
