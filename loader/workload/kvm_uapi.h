// KVM UAPI that Debian 12's <linux/kvm.h> (6.1) lacks, or that gmemscope
// wants spelled out: guest_memfd (6.8+), KVM_SET_USER_MEMORY_REGION2 (6.8+),
// memory attributes, and the two proposed in-place conversion interfaces.
//
// The ioctl numbers BPF also matches on come from bpf/ioctls.h, the one
// place they are written; each is checked here against the _IOW/_IOWR
// encoding of its struct, so a wrong struct size or direction fails to
// compile. VFIO type1 comes from Debian's <linux/vfio.h>; iommufd
// has no Debian header and is not configured on the development kernel, so
// nothing of it is defined here yet.
//
// Names are the kernel's, in lower case: a newer <linux/kvm.h> defines the
// upper-case spellings as macros, which would rewrite our declarations.
#pragma once

#include <linux/ioctl.h>
#include <linux/types.h>

#include <cstddef>

#include "ioctls.h"

namespace gms::uapi {

inline constexpr unsigned kvmio = 0xAE;  // KVMIO
// The 2025 conversion RFC put its ioctls under their own type byte.
inline constexpr unsigned gmem_convert_io = 0xAF;

// KVM_CHECK_EXTENSION capabilities (include/uapi/linux/kvm.h).
inline constexpr long kvm_cap_user_memory2 = 231;
inline constexpr long kvm_cap_memory_attributes = 233;
inline constexpr long kvm_cap_guest_memfd = 234;
inline constexpr long kvm_cap_vm_types = 235;
inline constexpr long kvm_cap_guest_memfd_flags = 244;

// KVM_CREATE_VM types on x86 (KVM_CAP_VM_TYPES is a bit mask of them).
// KVM_X86_SW_PROTECTED_VM (6.8, CONFIG_KVM_SW_PROTECTED_VM): private
// memory in gmem and KVM_SET_MEMORY_ATTRIBUTES conversions, no hardware.
inline constexpr unsigned long kvm_x86_default_vm = 0;
inline constexpr unsigned long kvm_x86_sw_protected_vm = 1;

// kvm_run::exit_reason added after 6.1.
inline constexpr __u32 kvm_exit_memory_fault = 39;

// kvm_userspace_memory_region2::flags
inline constexpr __u32 kvm_mem_guest_memfd = GMS_KVM_MEM_GUEST_MEMFD;

// kvm_create_guest_memfd::flags. Without MMAP the memslot is not
// "gmem-only": faults are served from userspace_addr instead of gmem.
inline constexpr __u64 guest_memfd_flag_mmap = GMS_GUEST_MEMFD_FLAG_MMAP;
inline constexpr __u64 guest_memfd_flag_init_shared = GMS_GUEST_MEMFD_FLAG_INIT_SHARED;

inline constexpr __u64 kvm_memory_attribute_private = GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE;

struct kvm_create_guest_memfd {
    __u64 size;
    __u64 flags;
    __u64 reserved[6];
};
static_assert(sizeof(kvm_create_guest_memfd) == 64);

struct kvm_userspace_memory_region2 {
    __u32 slot;
    __u32 flags;
    __u64 guest_phys_addr;
    __u64 memory_size;
    __u64 userspace_addr;
    __u64 guest_memfd_offset;
    __u32 guest_memfd;
    __u32 pad1;
    __u64 pad2[14];
};
static_assert(sizeof(kvm_userspace_memory_region2) == 160);
static_assert(offsetof(kvm_userspace_memory_region2, guest_memfd_offset) == 32);
static_assert(offsetof(kvm_userspace_memory_region2, guest_memfd) == 40);

// Upstream, on the VM fd: the range is in guest physical addresses.
struct kvm_memory_attributes {
    __u64 address;
    __u64 size;
    __u64 attributes;
    __u64 flags;
};
static_assert(sizeof(kvm_memory_attributes) == 32);

// In-place conversion series (v8, not merged), on the gmem fd: the range
// is a gmem file offset; the kernel writes error_offset back on -EAGAIN
// (kvm_gmem_is_safe_for_conversion found an elevated folio refcount).
struct kvm_memory_attributes2 {
    __u64 offset;
    __u64 size;
    __u64 attributes;
    __u64 flags;
    __u64 error_offset;
    __u64 reserved[11];
};
static_assert(sizeof(kvm_memory_attributes2) == 128);
static_assert(offsetof(kvm_memory_attributes2, error_offset) == 32);

// Older conversion RFC (2025), on the gmem fd: kvm_gmem_convert_range.
struct kvm_gmem_convert {
    __u64 offset;
    __u64 size;
    __u64 error_offset;
    __u64 reserved[5];
};
static_assert(sizeof(kvm_gmem_convert) == 64);
static_assert(offsetof(kvm_gmem_convert, error_offset) == 16);

// kvm_run::memory_fault, the union member for kvm_exit_memory_fault.
struct kvm_memory_fault_exit {
    __u64 flags;
    __u64 gpa;
    __u64 size;
};
static_assert(sizeof(kvm_memory_fault_exit) == 24);

// Debian 6.1's kvm_cpuid2 declares its entries with __DECLARE_FLEX_ARRAY,
// whose empty struct takes one byte in C++: sizeof becomes 12, entries move
// to offset 12, and the ioctl numbers encode size 12, which the kernel
// rejects with EINVAL. Use this header, then nent entries of 40 bytes
// (Debian's kvm_cpuid_entry2 itself is fine).
struct kvm_cpuid2 {
    __u32 nent;
    __u32 padding;
};
static_assert(sizeof(kvm_cpuid2) == 8);
inline constexpr std::size_t kvm_cpuid_entry2_bytes = 40;

inline constexpr unsigned long kvm_get_supported_cpuid_ioctl = 0xc008ae05;
inline constexpr unsigned long kvm_set_cpuid2_ioctl = 0x4008ae90;
static_assert(kvm_get_supported_cpuid_ioctl == _IOWR(kvmio, 0x05, kvm_cpuid2));
static_assert(kvm_set_cpuid2_ioctl == _IOW(kvmio, 0x90, kvm_cpuid2));

inline constexpr unsigned long kvm_create_guest_memfd_ioctl = GMS_KVM_CREATE_GUEST_MEMFD;
inline constexpr unsigned long kvm_set_user_memory_region2_ioctl = GMS_KVM_SET_USER_MEMORY_REGION2;
inline constexpr unsigned long kvm_set_memory_attributes_ioctl = GMS_KVM_SET_MEMORY_ATTRIBUTES;
inline constexpr unsigned long kvm_set_memory_attributes2_ioctl = GMS_KVM_SET_MEMORY_ATTRIBUTES2;
inline constexpr unsigned long kvm_gmem_convert_shared_ioctl = GMS_KVM_GMEM_CONVERT_SHARED;
inline constexpr unsigned long kvm_gmem_convert_private_ioctl = GMS_KVM_GMEM_CONVERT_PRIVATE;

static_assert(kvm_create_guest_memfd_ioctl ==
              _IOWR(kvmio, 0xd4, kvm_create_guest_memfd));
static_assert(kvm_set_user_memory_region2_ioctl ==
              _IOW(kvmio, 0x49, kvm_userspace_memory_region2));
static_assert(kvm_set_memory_attributes_ioctl ==
              _IOW(kvmio, 0xd2, kvm_memory_attributes));
static_assert(kvm_set_memory_attributes2_ioctl ==
              _IOWR(kvmio, 0xd2, kvm_memory_attributes2));
static_assert(kvm_gmem_convert_shared_ioctl ==
              _IOWR(gmem_convert_io, 0x41, kvm_gmem_convert));
static_assert(kvm_gmem_convert_private_ioctl ==
              _IOWR(gmem_convert_io, 0x42, kvm_gmem_convert));

}  // namespace gms::uapi
