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
GMS_SETTING(__u32, targ_anon_dev);	/* kernel dev_t of anon_inodefs */

/* Internal inflight ops, beyond enum gms_ioctl_op. */
#define GMS_OP_RUN		0x100	/* KVM_RUN: vCPU context for faults */
#define GMS_OP_FALLOCATE	0x101

/* One syscall between its enter and exit, keyed by thread id. */
struct gms_inflight {
	__u16 op;
	__u16 fd_kind;
	__u32 vcpu_id;
	__u64 vm;
	__u64 uarg;		/* user pointer to the ioctl argument */
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

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct gms_inflight);
} inflight SEC(".maps");

GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gms_inflight);
} inflight_scratch SEC(".maps");

/* gmem inode -> struct kvm *, learned from gmem fds and faults. */
GMS_SHARED struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} gmem_vm SEC(".maps");

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

static __always_inline void gms_fill_hdr(struct gms_hdr *h, __u32 type, __u32 size)
{
	__u64 id = bpf_get_current_pid_tgid();

	h->type = type;
	h->abi = GMS_ABI_VERSION;
	h->flags = 0;
	h->size = size;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = bpf_ktime_get_ns();
	h->tgid = id >> 32;
	h->pid = (__u32)id;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
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

static __always_inline struct gms_inflight *gms_inflight_current(void)
{
	__u32 pid = (__u32)bpf_get_current_pid_tgid();

	return bpf_map_lookup_elem(&inflight, &pid);
}

/* The VM the current thread works on: its KVM_RUN or VM/gmem syscall. */
static __always_inline __u64 gms_current_vm(__u32 *vcpu_id)
{
	struct gms_inflight *in = gms_inflight_current();

	if (!in)
		return 0;
	if (vcpu_id)
		*vcpu_id = in->vcpu_id;
	return in->vm;
}

#endif /* GMS_COMMON_BPF_H */
