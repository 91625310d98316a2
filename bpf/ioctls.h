/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The UAPI gmemscope decodes (ioctl numbers, flags, attributes), as plain
 * constants so that BPF C and C++ share them: every UAPI constant lives here.  tests/unit/test_abi.cpp recomputes each one with the
 * _IO/_IOW/_IOWR macros from the UAPI struct sizes.
 */
#ifndef GMS_IOCTLS_H
#define GMS_IOCTLS_H

#define GMS_KVMIO		0xAE
#define GMS_KVM_GMEMIO		0xAF	/* 2025 RFC conversion ioctls */
#define GMS_VFIO_TYPE		0x3B	/* ';', shared by VFIO and iommufd */
#define GMS_VFIO_DMA_UNMAP_FLAG_ALL	(1u << 1)	/* struct vfio_iommu_type1_dma_unmap.flags, v5.12 */

#define GMS_KVM_CREATE_VM			0x0000AE01u	/* _IO(KVMIO, 0x01) */
#define GMS_KVM_RUN				0x0000AE80u	/* _IO(KVMIO, 0x80) */
#define GMS_KVM_SET_USER_MEMORY_REGION		0x4020AE46u	/* _IOW(KVMIO, 0x46, 32 bytes) */
#define GMS_KVM_SET_USER_MEMORY_REGION2		0x40A0AE49u	/* _IOW(KVMIO, 0x49, 160 bytes), 6.8 */
#define GMS_KVM_CREATE_GUEST_MEMFD		0xC040AED4u	/* _IOWR(KVMIO, 0xd4, 64 bytes), 6.8 */
#define GMS_KVM_SET_MEMORY_ATTRIBUTES		0x4020AED2u	/* _IOW(KVMIO, 0xd2, 32 bytes), 6.8 */
#define GMS_KVM_SET_MEMORY_ATTRIBUTES2		0xC080AED2u	/* _IOWR(KVMIO, 0xd2, 128 bytes), gmem fd */
#define GMS_KVM_GMEM_CONVERT_SHARED		0xC040AF41u	/* _IOWR(0xAF, 0x41, 64 bytes) */
#define GMS_KVM_GMEM_CONVERT_PRIVATE		0xC040AF42u	/* _IOWR(0xAF, 0x42, 64 bytes) */
#define GMS_VFIO_IOMMU_MAP_DMA			0x00003B71u	/* _IO(';', 100 + 13) */
#define GMS_VFIO_IOMMU_UNMAP_DMA		0x00003B72u	/* _IO(';', 100 + 14) */
#define GMS_VFIO_DEVICE_FEATURE			0x00003B75u	/* _IO(';', 100 + 17) */
#define GMS_IOMMU_IOAS_MAP			0x00003B85u	/* _IO(';', 0x85) */
#define GMS_IOMMU_IOAS_UNMAP			0x00003B86u	/* _IO(';', 0x86) */
#define GMS_IOMMU_IOAS_MAP_FILE			0x00003B8Fu	/* _IO(';', 0x8f), 6.13 */

/* Flags and attributes of the KVM UAPI that both sides test. */
#define GMS_KVM_MEM_GUEST_MEMFD			(1u << 2)	/* memslot flag, 6.8 */
#define GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE	(1ull << 3)	/* 6.8 */
#define GMS_GUEST_MEMFD_FLAG_MMAP		(1ull << 0)	/* 6.17 */
#define GMS_GUEST_MEMFD_FLAG_INIT_SHARED	(1ull << 1)	/* 6.17 */

#define GMS_VFIO_DEVICE_FEATURE_MASK		0xffffu
#define GMS_VFIO_DEVICE_FEATURE_GET		(1u << 16)
#define GMS_VFIO_DEVICE_FEATURE_DMA_BUF		11u

#endif /* GMS_IOCTLS_H */
