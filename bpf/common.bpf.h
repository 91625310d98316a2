/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Maps, settings and helpers shared by every bpf/<area>.bpf.c.  The
 * definitions live in bpf/common.bpf.c; `bpftool gen object` links the
 * area objects into one, so all programs share one ring buffer.
 */
#ifndef GMS_COMMON_BPF_H
#define GMS_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "events.h"
#include "core_fixes.bpf.h"

/*
 * bpf/common.bpf.c defines GMS_DEFINE_SHARED and includes this header to
 * define the maps and settings; every other object sees them extern.
 */
#ifdef GMS_DEFINE_SHARED
#define GMS_SHARED
#define GMS_SETTING(type, name) const volatile type name = 0
#else
#define GMS_SHARED extern
#define GMS_SETTING(type, name) extern const volatile type name
#endif

/* Settings the loader fills before load. */
GMS_SETTING(bool, targ_filter_tgid);	/* only tasks whose tgid is in `tgids` */
GMS_SETTING(bool, targ_filter_vm);	/* only events of VMs in `vms` */
GMS_SETTING(__u64, targ_wakeup_bytes);	/* wake the consumer past this fill */
GMS_SETTING(__u32, targ_gmem_dev);	/* kernel dev_t of the filesystem of gmem inodes */
GMS_SETTING(__u32, targ_anon_dev);	/* kernel dev_t of anon_inodefs: VM and vCPU files */
GMS_SETTING(bool, targ_set_spte);	/* kvm_mmu_set_spte is attached */
GMS_SETTING(bool, targ_aggregate);	/* hot events go to `agg`, not the ring buffer */
GMS_SETTING(__u32, targ_stack_sample);	/* aggregate: 1 in N page removals records its stacks; 0: none */
GMS_SETTING(__u32, targ_veto_mode);	/* enum gms_veto_mode */
GMS_SETTING(__s32, targ_veto_ret);	/* what a vetoed ioctl returns: -errno */
GMS_SETTING(bool, targ_fail_open);	/* mappings not indexed do not refuse conversions */
GMS_SETTING(__u32, targ_idx_max_mappings);	/* DMA mappings indexed per process */
GMS_SETTING(__u32, targ_idx_max_declared);	/* declared ranges per process */
GMS_SETTING(__u32, targ_ioctl_ops);	/* bit (1 << enum gms_ioctl_op) per ioctl the session decodes */
GMS_SETTING(bool, targ_fold_allocs);	/* the ioctl exit runs: a fault's page-cache add may wait for it */

/*
 * kfunc, v6.2 (commit a35b9af4ec2c "bpf: Add a kfunc for generic type
 * cast"): a kernel address read with a helper becomes a BTF pointer again,
 * so the fields behind it are plain loads instead of helper calls.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* Internal inflight ops, beyond enum gms_ioctl_op. */
#define GMS_OP_RUN		0x100	/* in KVM_RUN: a page-cache add waits for its fault */
#define GMS_OP_FALLOCATE	0x101

struct gms_inflight {
	__u16 op;
	__u16 fd_kind;
	__u32 vcpu_id;
	__u64 vm;
	__u64 uarg;		/* user pointer to the ioctl argument */
	/*
	 * KVM_RUN: a gmem page-cache add waiting for the fault that caused
	 * it (kvm_gmem_get_pfn() allocates before kvm_mmu_spte_requested).
	 */
	__u64 alloc_ino;
	__u64 alloc_index;
	__u64 alloc_pfn;	/* 0: none waiting */
	__u32 alloc_order;
	__u32 pad;
	__u64 asked_bytes;	/* DMA unmap: the size asked for, before the kernel writes back what it unmapped */
	union {
		struct gms_ioctl_event ioctl;
		struct gms_fallocate_event falloc;
	};
};

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
} events SEC(".maps");

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gms_counters);
} counters SEC(".maps");

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} tgids SEC(".maps");

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} vms SEC(".maps");

/*
 * One syscall between its enter and exit, in task-local storage: no hash
 * on the hot path, freed with the task.  op 0 means none in flight.
 */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct gms_inflight);
} inflight SEC(".maps");

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct gms_agg_key);
	__type(value, struct gms_agg_val);
} agg SEC(".maps");

/* A zero value to create `agg` entries from: too large for the stack. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gms_agg_val);
} agg_zero SEC(".maps");

/* gmem inode -> struct kvm *, learned from gmem fds and faults. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} gmem_vm SEC(".maps");

/*
 * Enforcement's index (bpf/veto.bpf.h): radix-tree nodes of every
 * owner's trees, allocated as used and freed when empty (an idle index
 * costs nothing). Its size bounds all owners together; targ_idx_max_*
 * bound each one.
 */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, struct gms_idx_key);
	__type(value, struct gms_idx_node);
} idx_nodes SEC(".maps");

/* Each mapping's id by where it starts: (owner, start tree, iova page). */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct gms_idx_key);
	__type(value, __u64);
} idx_starts SEC(".maps");

/* The processes the index holds entries of: tgid -> its mm (0: declared ranges only), for their exit. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} idx_tgids SEC(".maps");

/* Indexed mappings and declared ranges by id, the ids idx_starts holds. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, __u64);
	__type(value, struct gms_pin);
} idx_maps SEC(".maps");

/* Per owner (mm, or tgid for declared ranges): counts, and what was not indexed. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct gms_idx_state);
} idx_state SEC(".maps");

/* The last id given to a mapping. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} idx_next_id SEC(".maps");

/* Written by the loader only, read by `enforce --status`. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gms_veto_state);
} veto_state SEC(".maps");

static __always_inline struct gms_counters *gms_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

static __always_inline void gms_count_drop(__u32 cause)
{
	struct gms_counters *c = gms_counters();

	if (c && cause < GMS_DROP_MAX)
		__sync_fetch_and_add(&c->dropped[cause], 1);
}

static __always_inline bool gms_task_selected(void)
{
	__u32 tgid;

	if (!targ_filter_tgid)
		return true;
	tgid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&tgids, &tgid) != NULL;
}

/* An unknown VM (0) passes: its identity is learned later in the stream. */
static __always_inline bool gms_vm_selected(__u64 vm)
{
	if (!targ_filter_vm || !vm)
		return true;
	return bpf_map_lookup_elem(&vms, &vm) != NULL;
}

static __always_inline void gms_fill_hdr_at(struct gms_hdr *h, __u32 type, __u32 size, __u64 ts_ns)
{
	__u64 id = bpf_get_current_pid_tgid();

	h->type = type;
	h->abi = GMS_ABI_VERSION;
	h->flags = 0;
	h->size = size;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = ts_ns;
	h->tgid = id >> 32;
	h->pid = (__u32)id;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

static __always_inline void gms_fill_hdr(struct gms_hdr *h, __u32 type, __u32 size)
{
	gms_fill_hdr_at(h, type, size, bpf_ktime_get_ns());
}

/*
 * Reserve a record and count the attempt; a full ring buffer is counted
 * as a drop, never silent.
 */
static __always_inline void *gms_reserve(__u32 type, __u32 size)
{
	struct gms_counters *c = gms_counters();
	void *e;

	if (c && type < GMS_EV_MAX)
		__sync_fetch_and_add(&c->tried[type], 1);
	e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e) {
		if (c)
			__sync_fetch_and_add(&c->dropped[GMS_DROP_RINGBUF_FULL], 1);
		return NULL;
	}
	return e;
}

#define GMS_RESERVE(type, T) ((T *)gms_reserve(type, sizeof(T)))

/*
 * A wakeup per record costs microseconds (epoll wake of the consumer);
 * wake only past a fill threshold, the consumer also polls on a timer.
 */
static __always_inline void gms_submit(void *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= targ_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/* The current thread's syscall in flight, NULL if none. */
static __always_inline struct gms_inflight *gms_inflight_current(void)
{
	struct gms_inflight *in;

	in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	return in && in->op ? in : NULL;
}

/* Storage for the syscall the current thread enters; counted if none. */
static __always_inline struct gms_inflight *gms_inflight_enter(__u16 op)
{
	struct gms_inflight *in;

	in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		gms_count_drop(GMS_DROP_INFLIGHT_FULL);
		return NULL;
	}
	in->op = op;
	return in;
}

/*
 * The vCPU whose KVM_RUN the current thread is in, NULL if none.  KVM_RUN
 * is not traced (every exit of every VM would pay for it): an event inside
 * it reads the syscall from the thread's own registers instead
 * (bpf_task_pt_regs, v5.15).  x86-64: orig_ax is the syscall number, di
 * and si the ioctl's fd and cmd; that fd is the vCPU's, whose file's
 * private_data is its struct kvm_vcpu (kvm_vcpu_fops).
 */
#define GMS_NR_IOCTL 16

static __always_inline struct kvm_vcpu *gms_run_vcpu(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct fdtable *fdt;
	struct file *file = NULL;
	int fd;

	if (!regs || regs->orig_ax != GMS_NR_IOCTL || (__u32)regs->si != GMS_KVM_RUN)
		return NULL;
	fd = (int)regs->di;
	fdt = task->files->fdt;
	if (fd < 0 || (__u32)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	return file ? BPF_CORE_READ(file, private_data) : NULL;
}

/* The VM the current thread works on: its VM/gmem syscall, or its KVM_RUN. */
static __always_inline __u64 gms_current_vm(__u32 *vcpu_id)
{
	struct gms_inflight *in = gms_inflight_current();
	struct kvm_vcpu *vcpu;

	if (in) {
		if (vcpu_id)
			*vcpu_id = in->vcpu_id;
		return in->vm;
	}
	vcpu = gms_run_vcpu();
	if (!vcpu)
		return 0;
	if (vcpu_id)
		*vcpu_id = BPF_CORE_READ(vcpu, vcpu_id);
	return (__u64)BPF_CORE_READ(vcpu, kvm);
}

/* The current thread's VM, if the thread and the VM pass the filters. */
static __always_inline bool gms_current_vm_selected(__u64 *vm)
{
	if (!gms_task_selected())
		return false;
	*vm = gms_current_vm(NULL);
	return gms_vm_selected(*vm);
}

static __always_inline __u32 gms_hist_slot(__u64 v)
{
	__u32 slot = 0;

	/* bit width of v, in five steps (no loop for the verifier) */
	if (v >> 32) { v >>= 32; slot += 32; }
	if (v >> 16) { v >>= 16; slot += 16; }
	if (v >> 8) { v >>= 8; slot += 8; }
	if (v >> 4) { v >>= 4; slot += 4; }
	if (v >> 2) { v >>= 2; slot += 2; }
	if (v >> 1) { v >>= 1; slot += 1; }
	slot += v;
	return slot < GMS_HIST_SLOTS ? slot : GMS_HIST_SLOTS - 1;
}

/* This CPU's aggregate of (gmem ino, current process), created on first use. */
static __always_inline struct gms_agg_val *gms_agg(__u64 ino, __u64 vm)
{
	struct gms_agg_key key = {.ino = ino, .tgid = bpf_get_current_pid_tgid() >> 32};
	struct gms_agg_val *v = bpf_map_lookup_elem(&agg, &key);

	if (!v) {
		__u32 zero_key = 0;
		struct gms_agg_val *zero = bpf_map_lookup_elem(&agg_zero, &zero_key);

		if (!zero)
			return NULL;
		bpf_map_update_elem(&agg, &key, zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&agg, &key);
		if (!v) {
			gms_count_drop(GMS_DROP_AGG_FULL);
			return NULL;
		}
		bpf_get_current_comm(v->comm, sizeof(v->comm));
	}
	if (vm)
		v->vm = vm;
	return v;
}

static __always_inline void gms_emit_pagecache(__u32 type, __u64 vm, __u64 ino, __u64 index,
					       __u64 pfn, __u32 order)
{
	struct gms_pagecache_event *e = GMS_RESERVE(type, struct gms_pagecache_event);

	if (!e)
		return;
	gms_fill_hdr(&e->hdr, type, sizeof(*e));
	e->vm = vm;
	e->ino = ino;
	e->index = index;
	e->pfn = pfn;
	e->order = order;
	e->pad = 0;
	gms_submit(e);
}

/* A page-cache add whose fault never came is sent on its own. */
static __always_inline void gms_flush_alloc(struct gms_inflight *in)
{
	if (!in->alloc_pfn)
		return;
	gms_emit_pagecache(GMS_EV_PAGECACHE_ADD, in->vm, in->alloc_ino, in->alloc_index,
			   in->alloc_pfn, in->alloc_order);
	in->alloc_pfn = 0;
}

/*
 * A fallocate() on a gmem file ends: counted in `agg` (top) or sent as a
 * record.  Its start is in in->falloc, from the syscall tracepoint or
 * from fentry on kvm_gmem_fallocate (flags GMS_F_KFUNC).
 */
static __always_inline void gms_fallocate_done(struct gms_inflight *in, __s64 ret, __u8 flags)
{
	struct gms_fallocate_event *e;
	__u64 now = bpf_ktime_get_ns();

	in->op = 0;
	if (!gms_vm_selected(in->vm))
		return;
	if (targ_aggregate) {
		struct gms_agg_val *a = gms_agg(in->falloc.gmem_ino, in->vm);

		/*
		 * Punch-holes only (FALLOC_FL_PUNCH_HOLE): kvm_gmem_fallocate()
		 * allocates with KEEP_SIZE alone, whose pages count as adds.
		 */
		if (a && (in->falloc.mode & GMS_FALLOC_FL_PUNCH_HOLE)) {
			if (ret < 0) {
				a->punch_errors++;
				return;
			}
			a->punches++;
			a->punched_bytes += in->falloc.len;
			a->size_hist[gms_hist_slot(in->falloc.len)]++;
			a->lat_hist[gms_hist_slot(now - in->falloc.hdr.ts_ns)]++;
		}
		return;
	}
	e = GMS_RESERVE(GMS_EV_FALLOCATE, struct gms_fallocate_event);
	if (!e)
		return;
	__builtin_memcpy(e, &in->falloc, sizeof(*e));
	gms_fill_hdr_at(&e->hdr, GMS_EV_FALLOCATE, sizeof(*e), in->falloc.hdr.ts_ns);
	e->hdr.flags = flags;
	e->ret = ret;
	e->dur_ns = now - e->hdr.ts_ns;
	gms_submit(e);
}

static __always_inline __u64 gms_file_ino(struct file *file)
{
	return file ? file->f_inode->i_ino : 0;
}

/*
 * The inode number of the current task's fd, 0 if none: for the precise
 * tier, which learns fds from return values (helper reads: the BTF-pointer
 * fast path of bpf/syscalls.bpf.c needs a kfunc that can be linked into
 * only one object with this libbpf).
 */
static __always_inline __u64 gms_fd_ino(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || (__u32)fd >= fdt->max_fds)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	return file ? BPF_CORE_READ(file, f_inode, i_ino) : 0;
}

/*
 * A precise-tier record (fentry/fexit) of kernel function `fn`, if the
 * process and the VM pass the filters; the caller fills args and submits.
 */
static __always_inline struct gms_call_event *gms_call_begin(__u16 fn, __u64 vm, __u64 ino, __s64 ret)
{
	struct gms_call_event *e;

	if (!gms_task_selected() || !gms_vm_selected(vm))
		return NULL;
	e = GMS_RESERVE(GMS_EV_CALL, struct gms_call_event);
	if (!e)
		return NULL;
	gms_fill_hdr(&e->hdr, GMS_EV_CALL, sizeof(*e));
	e->hdr.flags = GMS_F_KFUNC;
	e->vm = vm;
	e->ino = ino;
	e->ret = ret;
	e->fn = fn;
	e->pad16 = 0;
	e->pad32 = 0;
	__builtin_memset(&e->args, 0, sizeof(e->args));
	return e;
}

#endif /* GMS_COMMON_BPF_H */
