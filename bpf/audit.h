/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Records of the audit iterator (bpf/audit.bpf.c), written with
 * bpf_seq_write() into the iterator's seq_file and read back by
 * loader/audit/audit.cpp.  Only __u32/__u64-style types, as bpf/events.h.
 */
#ifndef GMS_AUDIT_H
#define GMS_AUDIT_H

#include "events.h"

enum gms_audit_kind {
	GMS_AUDIT_VM = 1,	/* a VM, from its kvm-vm fd or a gmem fd */
	GMS_AUDIT_VCPU = 2,	/* a kvm-vcpu:N fd */
	GMS_AUDIT_GMEM = 3,	/* a [kvm-gmem] fd */
	GMS_AUDIT_MEMSLOT = 4,	/* one memslot of that VM, sent through the audit_slots ring buffer */
	GMS_AUDIT_DEVICE = 5,	/* a VFIO or iommufd fd, by its dentry names */
	GMS_AUDIT_SLOT_WALK = 6,	/* what one memslot walk read, sent and lost */
	GMS_AUDIT_ATTRS = 7,	/* a gfn range of one VM with the same attributes, through audit_slots */
	GMS_AUDIT_ATTRS_WALK = 8,	/* what one attributes walk read, sent and lost */
	GMS_AUDIT_VM_FILE = 9,	/* another file holding a VM: a stats fd or a KVM device */
};

/*
 * Memslots go through a ring buffer, not the seq_file: one call of the
 * iterator program must fit its output in the seq_file's buffer (8
 * pages; more is -E2BIG for the whole read), which holds 292 memslot
 * records, and KVM allows 32764 memslots per address space.
 */
#define GMS_AUDIT_RINGBUF_BYTES (8u << 20)
/* Steps of one walk: every id_hash bucket and KVM_USER_MEM_SLOTS (32764) memslots, with room. */
#define GMS_AUDIT_WALK_STEPS (128 + 65536)

#define GMS_AUDIT_NAME_LEN 16

struct gms_audit_hdr {
	__u16 kind;		/* enum gms_audit_kind */
	__u16 size;		/* bytes, header included */
	__u32 fd;
	__u32 tgid;
	__u32 pad;
	char comm[GMS_COMM_LEN];
};

struct gms_audit_vm {
	struct gms_audit_hdr hdr;
	__u64 vm;		/* struct kvm * */
	__u64 nr_memslot_pages;
	__s32 created_vcpus;
	__s32 online_vcpus;
	__u32 userspace_pid;	/* kvm->userspace_pid: the last KVM_RUN caller */
	__u32 vm_fd;		/* 1: hdr.fd is this VM's fd; 0: a gmem fd led here */
};

struct gms_audit_vcpu {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u32 vcpu_id;
	__u32 pad;
};

/* A stats file of a VM or vCPU, or a device made by KVM_CREATE_DEVICE. */
struct gms_audit_vm_file {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u32 vcpu_id;		/* GMS_FD_VCPU_STATS: its vCPU */
	__u32 fd_kind;		/* enum gms_fd_kind */
	char name[32];		/* dentry name: "kvm-vm-stats", "kvm-vcpu-stats:12", "kvm-vfio" */
};

struct gms_audit_gmem {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u64 ino;
	__u64 size_bytes;	/* i_size */
	__u64 resident_pages;	/* i_mapping->nrpages */
	__u64 flags;		/* GUEST_MEMFD_FLAG_* */
};

struct gms_audit_memslot {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u64 base_gfn;
	__u64 npages;
	__u64 userspace_addr;
	__u64 gmem_ino;		/* 0: not gmem-backed */
	__u64 gmem_pgoff;
	/* the bound gmem file, which may have no fd open anywhere */
	__u64 gmem_size_bytes;
	__u64 gmem_resident_pages;
	__u64 gmem_flags;
	__u32 flags;		/* KVM_MEM_* */
	__u16 id;
	__u16 as_id;
};

struct gms_audit_slot_walk {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u32 sent;		/* memslot records in the ring buffer */
	__u32 lost;		/* memslots read and not sent: the ring buffer was full */
	__u16 as_id;
	__u16 complete;		/* 0: the walk stopped at GMS_AUDIT_WALK_STEPS */
	__u32 pad;
};

/* gfns [first_gfn, end_gfn) of a VM whose attributes are all `attributes` (non-zero). */
struct gms_audit_attrs {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u64 first_gfn;
	__u64 end_gfn;
	__u64 attributes;	/* KVM_MEMORY_ATTRIBUTE_* */
};

struct gms_audit_attrs_walk {
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u32 sent;		/* range records in the ring buffer */
	__u32 lost;		/* ranges read and not sent: the ring buffer was full */
	__u16 present;		/* 0: this kernel keeps no per-VM attributes */
	__u16 complete;		/* 0: the walk stopped at GMS_AUDIT_ATTR_STEPS */
	__u32 pad;
};

/* Slots one attributes walk visits at most: 4M gfns (16 GiB) in leaves, with room. */
#define GMS_AUDIT_ATTR_STEPS (1u << 23)

struct gms_audit_device {
	struct gms_audit_hdr hdr;
	__u64 ino;
	__u32 rdev;		/* kernel dev_t of a character device, else 0 */
	__u32 pad;
	char name[GMS_AUDIT_NAME_LEN];		/* dentry name: "vfio", "3", "iommu", "[vfio-device]" */
	char parent[GMS_AUDIT_NAME_LEN];	/* its parent's: "vfio", "devices", "/" */
};

#endif /* GMS_AUDIT_H */
