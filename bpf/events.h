/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The event ABI shared by the BPF programs and the loader.
 *
 * Only __u8.._u64 types, so that it compiles against vmlinux.h on the BPF
 * side and against <linux/types.h> in C++; the C++ side static_asserts
 * every size and offset (loader/events/events.hpp).  A record is a struct
 * gms_hdr followed by the body its type names; hdr.size covers both.
 * Recordings store records byte for byte, so a change here bumps
 * GMS_ABI_VERSION.
 */
#ifndef GMS_EVENTS_H
#define GMS_EVENTS_H

#include "ioctls.h"	/* the UAPI constants records carry */

#define GMS_ABI_VERSION 2
#define GMS_COMM_LEN 16

enum gms_event_type {
	GMS_EV_IOCTL = 1,		/* KVM, VFIO or iommufd ioctl, decoded, with result */
	GMS_EV_FALLOCATE = 2,		/* fallocate() on a gmem fd, with result */
	GMS_EV_GMEM_CLOSE = 3,		/* close() of a gmem fd */
	GMS_EV_FAULT = 4,		/* kvm_mmu_spte_requested: gfn -> slot -> pfn */
	GMS_EV_SET_SPTE = 5,		/* kvm_mmu_set_spte after a gmem fault */
	GMS_EV_PAGECACHE_ADD = 6,	/* gmem folio added to its page cache */
	GMS_EV_PAGECACHE_DEL = 7,	/* gmem folio removed: punch-hole, truncation */
	GMS_EV_ZAP_ALL_FAST = 8,	/* kvm_mmu_zap_all_fast: memslot delete/move */
	GMS_EV_ZAP_PAGE = 9,		/* kvm_mmu_prepare_zap_page */
	GMS_EV_TDP_SPTE = 10,		/* kvm_tdp_mmu_spte_changed (TDP MMU only) */
	GMS_EV_IOMMU_MAP = 11,		/* iommu:map */
	GMS_EV_IOMMU_UNMAP = 12,	/* iommu:unmap */
	GMS_EV_CALL = 13,		/* a kernel function, at fentry/fexit (precise tier) */
	GMS_EV_VETO = 14,		/* a conversion over DMA-pinned memory: vetoed, or would be (audit) */
	GMS_EV_MAX,
	/* Records written by the loader, never by BPF. */
	GMS_REC_DROPS = 0x100,		/* drop and emit counters at a point in time */
};

/* Room for event types to come without changing the counters' layout. */
#define GMS_EV_SLOTS 32

/* Why an event was lost; counted per CPU in the `counters` map. */
enum gms_drop_cause {
	GMS_DROP_RINGBUF_FULL = 0,	/* bpf_ringbuf_reserve() failed */
	GMS_DROP_INFLIGHT_FULL = 1,	/* no task storage to pair a syscall's enter and exit */
	GMS_DROP_PIN_INDEX_FULL = 2,	/* a DMA mapping not indexed (limit, memory): see gms_idx_state */
	GMS_DROP_AGG_FULL = 3,		/* an event not counted: `agg` has no room for its key */
	GMS_DROP_MAX,
};
#define GMS_DROP_SLOTS 8	/* room for causes to come, as GMS_EV_SLOTS */

/* hdr.flags */
#define GMS_F_ARGS_UNREAD	(1 << 0)	/* user argument struct could not be read */
#define GMS_F_KFUNC		(1 << 1)	/* seen at a kernel function (fentry/fexit), not at a syscall
						 * or tracepoint */
#define GMS_F_FINAL		(1 << 7)	/* drops record: the last of a recording */

struct gms_hdr {
	__u16 type;		/* enum gms_event_type */
	__u8 abi;		/* GMS_ABI_VERSION */
	__u8 flags;		/* GMS_F_* */
	__u16 size;		/* bytes, header included */
	__u16 cpu;
	__u64 ts_ns;		/* CLOCK_MONOTONIC (bpf_ktime_get_ns); syscalls: entry time */
	__u32 tgid;
	__u32 pid;
	char comm[GMS_COMM_LEN];
};

/* What an ioctl is; the loader names them (loader/events/events.cpp). */
enum gms_ioctl_op {
	GMS_IOC_CREATE_VM = 1,
	GMS_IOC_CREATE_GUEST_MEMFD,
	GMS_IOC_SET_MEMORY_REGION,
	GMS_IOC_SET_MEMORY_REGION2,
	GMS_IOC_SET_MEMORY_ATTRIBUTES,	/* VM fd, gpa range (upstream) */
	GMS_IOC_SET_MEMORY_ATTRIBUTES2,	/* gmem fd, offset range (in-place series) */
	GMS_IOC_GMEM_CONVERT_SHARED,	/* gmem fd, 2025 RFC */
	GMS_IOC_GMEM_CONVERT_PRIVATE,
	GMS_IOC_VFIO_MAP_DMA,
	GMS_IOC_VFIO_UNMAP_DMA,
	GMS_IOC_IOAS_MAP,
	GMS_IOC_IOAS_MAP_FILE,
	GMS_IOC_IOAS_UNMAP,
	GMS_IOC_VFIO_DMA_BUF,		/* VFIO_DEVICE_FEATURE, feature DMA_BUF */
	GMS_IOC_MAX,
};

/* What the fd of a syscall refers to, read from its struct file. */
enum gms_fd_kind {
	GMS_FD_OTHER = 0,
	GMS_FD_KVM = 1,		/* /dev/kvm */
	GMS_FD_VM = 2,		/* anon_inode:kvm-vm */
	GMS_FD_VCPU = 3,	/* anon_inode:kvm-vcpu:N */
	GMS_FD_GMEM = 4,	/* anon_inode:[kvm-gmem] */
	GMS_FD_VM_STATS = 5,	/* anon_inode:kvm-vm-stats (KVM_GET_STATS_FD on a VM fd) */
	GMS_FD_VCPU_STATS = 6,	/* anon_inode:kvm-vcpu-stats:N (KVM_GET_STATS_FD on a vCPU fd) */
	GMS_FD_KVM_DEVICE = 7,	/* anon_inode:kvm-NAME (KVM_CREATE_DEVICE: kvm-vfio, ...) */
};

union gms_ioctl_args {
	struct { __u64 type; __u64 vm; } create_vm;		/* vm: struct kvm * of the new fd */
	struct { __u64 size; __u64 flags; __u64 ino; } create_gmem;	/* ino of the new gmem file */
	struct {
		__u32 slot;
		__u32 flags;
		__u64 gpa;
		__u64 size;
		__u64 uaddr;
		__u64 gmem_offset;
		__u64 gmem_ino;		/* 0 when the slot is not gmem-backed */
		__u32 gmem_fd;
		__u32 pad;
	} region;
	struct {
		__u64 start;		/* gpa (VM fd) or gmem offset (gmem fd) */
		__u64 size;
		__u64 attributes;	/* attrs ioctls; for CONVERT_*: 0 */
		__u64 flags;
		__u64 error_offset;	/* as the kernel wrote it back */
	} attrs;
	struct { __u32 argsz; __u32 flags; __u64 vaddr; __u64 iova; __u64 size; } vfio_dma;
	struct {
		__u32 flags;
		__u32 ioas_id;
		__s32 fd;		/* IOAS_MAP_FILE */
		__u32 pad;
		__u64 start;		/* user va (MAP) or file offset (MAP_FILE) */
		__u64 length;
		__u64 iova;		/* written back when the kernel chose it */
	} ioas;
	struct {
		__u32 argsz;
		__u32 flags;
		__u32 region_index;
		__u32 nr_ranges;
		__u64 offset;		/* first range */
		__u64 length;
	} dma_buf;
	__u64 raw[7];
};

struct gms_ioctl_event {
	struct gms_hdr hdr;
	__u64 vm;		/* struct kvm * the fd leads to, or 0 */
	__u64 obj;		/* gmem: inode number of the fd's file; VFIO_DEVICE_FEATURE_DMA_BUF: the new dma-buf's */
	__s64 ret;		/* return value: 0, a new fd, or -errno */
	__u64 dur_ns;
	__u32 fd;
	__u32 cmd;
	__u16 op;		/* enum gms_ioctl_op */
	__u16 fd_kind;		/* enum gms_fd_kind */
	__u32 pad;
	union gms_ioctl_args args;
};

struct gms_fallocate_event {
	struct gms_hdr hdr;
	__u64 vm;
	__u64 gmem_ino;
	__u64 offset;
	__u64 len;
	__s64 ret;
	__u64 dur_ns;
	__u32 fd;
	__u32 mode;
};

struct gms_gmem_close_event {
	struct gms_hdr hdr;
	__u64 vm;
	__u64 gmem_ino;
	__u32 fd;
	__u32 pad;
};

/* hdr.flags of a fault */
#define GMS_FAULT_ALLOCATED	(1 << 3)	/* the fault added this pfn to the gmem page cache;
						 * no pagecache_add record is sent for it */
#define GMS_FAULT_WRITE		(1 << 4)
#define GMS_FAULT_EXEC		(1 << 5)
#define GMS_FAULT_PRIVATE	(1 << 6)

struct gms_fault_event {
	struct gms_hdr hdr;
	__u64 vm;		/* struct kvm * of the faulting vCPU, 0 if unknown */
	__u64 gfn;
	__u64 pfn;
	__u64 slot_base_gfn;
	__u64 gmem_ino;		/* 0 when the slot is not gmem-backed */
	__u64 gmem_index;	/* gfn - base_gfn + slot->gmem.pgoff */
	__u32 vcpu_id;
	__u16 slot_id;
	__u8 level;
	__u8 pad;
};

struct gms_set_spte_event {
	struct gms_hdr hdr;
	__u64 vm;
	__u64 gfn;
	__u64 spte;
	__u8 level;
	__u8 pad[7];
};

struct gms_pagecache_event {
	struct gms_hdr hdr;
	__u64 vm;		/* filled when filtering by VM, else 0: the consumer maps ino */
	__u64 ino;
	__u64 index;
	__u64 pfn;
	__u32 order;
	__u32 pad;
};

struct gms_zap_event {
	struct gms_hdr hdr;
	__u64 vm;		/* zap_all_fast: the tracepoint's kvm; zap_page: the ioctl's */
	__u64 gfn;		/* zap_page only */
	__u32 role;		/* zap_page: union kvm_mmu_page_role */
	__u32 count;		/* zap_all_fast: used pages; zap_page: root count */
	__u8 gen;		/* mmu_valid_gen */
	__u8 pad[7];
};

struct gms_tdp_spte_event {
	struct gms_hdr hdr;
	__u64 vm;
	__u64 gfn;
	__u64 old_spte;
	__u64 new_spte;
	__u8 level;
	__u8 as_id;
	__u8 pad[6];
};

struct gms_iommu_event {
	struct gms_hdr hdr;
	__u64 iova;
	__u64 paddr;		/* map only */
	__u64 size;
	__u64 unmapped;		/* unmap only */
};

/* The kernel function a GMS_EV_CALL record comes from. */
enum gms_fn {
	GMS_FN_GMEM_CREATE = 1,		/* kvm_gmem_create */
	GMS_FN_GMEM_BIND,		/* kvm_gmem_bind */
	GMS_FN_GMEM_UNBIND,		/* kvm_gmem_unbind */
	GMS_FN_GMEM_GET_PFN,		/* kvm_gmem_get_pfn */
	GMS_FN_GMEM_POPULATE,		/* kvm_gmem_populate */
	GMS_FN_GMEM_INVALIDATE,		/* kvm_gmem_invalidate_begin/start */
	GMS_FN_GMEM_RELEASE,		/* kvm_gmem_release */
	GMS_FN_GMEM_ERROR_FOLIO,	/* kvm_gmem_error_folio */
	GMS_FN_GMEM_SET_ATTRIBUTES,	/* kvm_gmem_set_attributes (in-place series) */
	GMS_FN_GMEM_CONVERT,		/* kvm_gmem_convert_range (2025 RFC) */
	GMS_FN_KVM_SET_MEM_ATTRIBUTES,	/* kvm_vm_set_mem_attributes */
	GMS_FN_KVM_MMU_INVALIDATE_BEGIN,	/* kvm_mmu_invalidate_begin/start */
	GMS_FN_KVM_MMU_INVALIDATE_END,	/* kvm_mmu_invalidate_end */
	GMS_FN_VFIO_PIN,		/* vfio_pin_pages_remote */
	GMS_FN_VFIO_UNPIN,		/* vfio_unpin_pages_remote */
	GMS_FN_IOMMUFD_MAP,		/* iopt_map_user_pages */
	GMS_FN_IOMMUFD_MAP_FILE,	/* iopt_map_file_pages */
	GMS_FN_IOMMUFD_UNMAP,		/* iopt_unmap_iova_range */
	GMS_FN_IOMMUFD_PIN,		/* pfn_reader_user_pin */
	GMS_FN_IOMMUFD_ACCESS_PIN,	/* iommufd_access_pin_pages */
	GMS_FN_VFIO_DMA_BUF_EXPORT,	/* vfio_pci_core_feature_dma_buf */
	GMS_FN_VFIO_DMA_BUF_MOVE,	/* vfio_pci_dma_buf_move */
	GMS_FN_DMA_BUF_EXPORT,		/* dma_buf_export */
	GMS_FN_DMA_BUF_MOVE_NOTIFY,	/* dma_buf_move_notify / dma_buf_invalidate_mappings */
	GMS_FN_KVM_MMU_NOTIFIER,	/* kvm_mmu_notifier_invalidate_range_start, or kvm:kvm_unmap_hva_range */
	GMS_FN_KVM_DESTROY_VM,		/* kvm_destroy_vm, or the close() that drops a VM's last reference */
	GMS_FN_GMEM_BIND_COMMIT,	/* kvm_gmem_commit_memory_region (v7.3) */
	GMS_FN_MAX,
};

union gms_call_args {
	struct { __u64 size; __u64 flags; } gmem_create;
	struct {
		__u64 base_gfn;
		__u64 npages;
		__u64 gmem_pgoff;	/* page index of the slot's first gfn in the gmem file */
		__u64 uaddr;
		__u32 slot;
		__u32 pad;
	} slot;				/* gmem bind and unbind */
	struct {
		__u64 gfn;
		__u64 pfn;
		__u64 gmem_index;
		__u32 slot;
		__u32 vcpu_id;
	} get_pfn;
	/*
	 * [start, end): gmem page indexes (invalidate, convert, set_attributes),
	 * gfns (KVM attributes, MMU invalidation, populate), iovas (iommufd unmap),
	 * user addresses (MMU notifier)
	 */
	struct { __u64 start; __u64 end; __u64 attributes; __u64 error_offset; } range;
	struct { __u64 gmem_index; } folio;
	struct {
		__u64 vaddr;
		__u64 iova;
		__u64 npages;		/* asked for; ret says how many were pinned */
		__u64 pfn;		/* the first pinned page's, when ret > 0 */
		__u32 lock_cap;		/* CAP_IPC_LOCK: no RLIMIT_MEMLOCK accounting */
		__u32 pad;
	} pin;
	struct { __u64 iova; __u64 start; __u64 length; __u32 flags; __u32 pad; } map;	/* iommufd */
	struct {
		__u64 size;
		__u64 flags;		/* vfio.dma_buf_move: 1 revoked, 0 restored */
		__u64 dev;		/* VFIO: the exporting device (struct vfio_pci_core_device *) */
		char exp_name[16];
	} dma_buf;
	struct { __u32 fd; __u32 fd_kind; } vm_end;	/* portable tier: the fd whose close ends the VM */
	__u64 raw[5];
};

struct gms_call_event {
	struct gms_hdr hdr;
	__u64 vm;		/* struct kvm *, 0 if none or unknown */
	__u64 ino;		/* gmem or dma-buf inode, 0 if none */
	__s64 ret;		/* fexit: return value (-errno on failure); fentry: 0 */
	__u16 fn;		/* enum gms_fn */
	__u16 pad16;
	__u32 pad32;
	union gms_call_args args;
};

/*
 * Enforcement (`gmemscope enforce`, bpf/lsm.bpf.c, bpf/veto.bpf.h): an
 * index of the DMA mappings of each process (struct mm_struct *), kept
 * by the VFIO and iommufd map/unmap ioctls, and of the ranges an
 * operator declares (`gmemscope pin add`), per process in gfns.
 *
 * Each is a radix tree of fan-out 64 over page numbers, stored sparsely
 * in one hash map (idx_nodes) keyed by (owner, tree, level, prefix): a
 * mapping is counted at its pieces (the aligned blocks it covers, at most
 * two runs per level, all in the two nodes on the paths to its first and
 * last page), and each path node counts the pieces below. Insert, delete
 * and the overlap query read or write at most two nodes per level (6
 * levels for user addresses, 7 for gfns), whatever the number of
 * mappings. idx_starts finds a mapping by where it starts, for unmap.
 */
#define GMS_IDX_MAX_MAPPINGS 65536	/* per process, default of targ_idx_max_mappings */
#define GMS_IDX_MAX_DECLARED 4096	/* per process, default of targ_idx_max_declared */
#define GMS_IDX_VADDR_BITS 36		/* user addresses below 2^48 */
#define GMS_IDX_GFN_BITS 40		/* guest physical addresses below 2^52 */
#define GMS_IDX_FAN 64			/* children of a node */
#define GMS_IDX_MAX_LEVELS 7		/* 42 bits of page numbers */
#define GMS_MAX_SLOTS_WALKED 32768	/* memslots one decision may look at: x86 KVM_USER_MEM_SLOTS is 32767 */

/* idx_nodes key: the trees of one owner */
enum gms_idx_tree {
	GMS_TREE_VADDR = 1,		/* owner mm: the user pages its DMA mappings cover */
	GMS_TREE_DECLARED = 2,		/* owner tgid: declared gfns */
};
/* idx_starts key tree: GMS_TREE_IOVA | kind << 56 | ioas_id << 24 | fd; prefix: the iova page it starts at */
#define GMS_TREE_IOVA (3ull << 60)

struct gms_idx_key {
	__u64 owner;
	__u64 tree;
	__u64 prefix;		/* idx_nodes: page >> (6 * (level + 1)); idx_starts: iova page */
	__u32 level;
	__u32 pad;
};

/* A node at level k: 64 children of 64^k pages each. */
struct gms_idx_node {
	__u64 users;			/* updates of live mappings through it; 1 << 62: being deleted */
	__u32 here[GMS_IDX_FAN];	/* mappings with the child as a piece */
	__u32 sub[GMS_IDX_FAN];		/* pieces at or below the child */
	__u64 ids[GMS_IDX_FAN];		/* xor of the ids of the mappings in here: the id when here is 1 */
};

/* Per owner (mm or tgid): what its index holds and what it could not. */
struct gms_idx_state {
	__u32 mappings;		/* indexed now */
	__u32 tgid;		/* the last process that mapped or declared */
	__u64 not_indexed;	/* mappings the index could not hold, since enforcement started */
	__u64 unindexed_bytes;	/* of those, bytes not unmapped yet: while > 0, conversions fail closed */
	char comm[GMS_COMM_LEN];
};


/* The index's own entry point (SEC("syscall") enforce_index_op): pin add/del, tests, bench. */
enum gms_index_op_kind {
	GMS_INDEX_MAP = 1,		/* a DMA mapping of the calling process, as the map ioctl's exit adds it */
	GMS_INDEX_UNMAP = 2,		/* as the unmap ioctl's exit removes them */
	GMS_INDEX_DECLARE = 3,		/* gfns [vaddr, vaddr + bytes) of process tgid */
	GMS_INDEX_UNDECLARE = 4,	/* the declared ranges of tgid starting at gfn vaddr */
};

struct gms_index_op {
	__u32 op;		/* enum gms_index_op_kind */
	__u32 kind;		/* enum gms_pin_kind */
	__u32 fd;
	__u32 tgid;		/* declare/undeclare */
	__u64 vaddr;		/* declared: first gfn */
	__u64 bytes;		/* declared: pages */
	__u64 iova;
	__u64 flags;		/* unmap: VFIO_DMA_UNMAP_FLAG_ALL */
	char note[GMS_COMM_LEN];
	__s64 ret;		/* out: 0, or -errno (-ENOSPC: not indexed) */
};

enum gms_pin_kind {
	GMS_PIN_VFIO = 1,	/* VFIO_IOMMU_MAP_DMA: type1 pins the pages at map time */
	GMS_PIN_IOMMUFD = 2,	/* IOMMU_IOAS_MAP */
	GMS_PIN_DECLARED = 3,	/* gmemscope pin add */
};

struct gms_pin {
	__u64 vaddr;		/* user addresses [vaddr, end); declared: gfns */
	__u64 end;
	__u64 iova;
	__u64 since_ns;
	__u32 tgid;		/* who mapped or declared it */
	__u32 fd;		/* the container or iommufd fd in that process */
	__u32 kind;		/* enum gms_pin_kind */
	__u32 ioas_id;		/* iommufd: the IOAS */
	char comm[GMS_COMM_LEN];	/* declared: the operator's note */
};


/* targ_veto_mode */
enum gms_veto_mode {
	GMS_VETO_OFF = 0,
	GMS_VETO_AUDIT = 1,		/* lsm/file_ioctl decides, never refuses */
	GMS_VETO_ENFORCE = 2,		/* lsm/file_ioctl refuses with targ_veto_ret */
	GMS_VETO_AUDIT_SYSCALL = 3,	/* no BPF LSM: sys_enter_ioctl decides, observes only */
};

struct gms_veto_event {
	struct gms_hdr hdr;	/* the process converting */
	__u64 vm;
	__u64 gmem_ino;		/* gmem-fd conversions */
	__u64 first;		/* the conversion: gfns (VM fd) or gmem indexes [first, end) */
	__u64 end;
	__u64 hit_first_gfn;	/* the part of it over the pin */
	__u64 hit_end_gfn;
	struct gms_pin pin;	/* the overlapping pin and its owner */
	__u32 cmd;
	__s32 err;		/* errno the ioctl got; 0 in audit modes */
	__u8 mode;		/* enum gms_veto_mode */
	__u8 why;		/* enum gms_veto_why */
	__u16 pad;
	__u32 not_indexed;	/* mappings of the VM's process the index could not hold */
};

/* gms_veto_event.why */
enum gms_veto_why {
	GMS_VETO_OVERLAP = 0,		/* the range is over `pin` */
	GMS_VETO_UNINDEXED = 1,		/* fail closed: the VM's process has mappings the index could not hold */
	GMS_VETO_TOO_MANY_SLOTS = 2,	/* fail closed: more memslots in the range than one decision walks */
};

/* What the loader says of the enforcement it set up, for --status; the counts are the kernel's. */
struct gms_veto_state {
	__u64 since_unix_ns;
	__u32 mode;
	__s32 err;
	__u32 loader_pid;
	__u32 persist;
	__u64 vetoes;		/* conversions refused */
	__u64 would_veto;	/* audit modes: conversions that would have been */
	__u32 fail_open;	/* --fail-open: mappings not indexed do not refuse conversions */
	__u32 max_mappings;	/* the index's limit per process */
	__u64 passed_unindexed;	/* fail-open: conversions let through while mappings were not indexed */
};

/* Userspace-only record: the kernel's counters as the loader read them. */
struct gms_drops_record {
	struct gms_hdr hdr;	/* cpu, tgid, pid and comm are zero */
	__u64 tried[GMS_EV_SLOTS];	/* events the programs tried to submit */
	__u64 dropped[GMS_DROP_SLOTS];
	__u64 received;			/* records the loader consumed */
};

/* Per-CPU counters map value. */
struct gms_counters {
	__u64 tried[GMS_EV_SLOTS];
	__u64 dropped[GMS_DROP_SLOTS];
};

/*
 * In-kernel aggregation (`gmemscope top`): the hot events update these
 * per-CPU counters instead of sending records.  Key: the gmem file and
 * the process; ino 0 holds faults on memory that is not gmem.
 */
#define GMS_HIST_SLOTS 40	/* slot 0: value 0; slot k: [2^(k-1), 2^k) */

struct gms_agg_key {
	__u64 ino;
	__u32 tgid;
	__u32 pad;
};

struct gms_agg_val {
	__u64 vm;			/* struct kvm *, as last seen */
	__u64 punches;			/* successful punch-holes on the gmem file */
	__u64 punched_bytes;
	__u64 punch_errors;		/* punch-holes that failed */
	__u64 invalidated_pages;	/* page-cache removals */
	__u64 faults;
	__u64 allocated_pages;		/* page-cache adds */
	__u64 size_hist[GMS_HIST_SLOTS];	/* fallocate length, bytes */
	__u64 lat_hist[GMS_HIST_SLOTS];	/* fallocate latency, ns */
	char comm[GMS_COMM_LEN];
};

/* Sampled stacks of what removes gmem pages (`top`): key -> count. */
struct gms_stack_key {
	__u32 tgid;
	__s32 user_stack;	/* ids in the `stacks` map; negative: not captured */
	__s32 kernel_stack;
	__u32 pad;
};

#endif /* GMS_EVENTS_H */
