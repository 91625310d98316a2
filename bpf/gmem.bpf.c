// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * guest_memfd page cache, portable tier: every gmem folio enters and
 * leaves through filemap_add_folio() / __filemap_remove_folio(), whose
 * tracepoints name the inode.  gmem inodes live on anon_inodefs through
 * v6.18 (anon_inode_create_getfile() in kvm_gmem_create()) and on
 * guest_memfd's own pseudo filesystem by v7.3 (kvm_gmem_mnt): filtering on
 * that filesystem's s_dev (the loader reads it from a gmem file) keeps the
 * kernel from sending every other file's pages.
 */
#include "common.bpf.h"

#define GMS_STACK_DEPTH 32

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, GMS_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct gms_stack_key);
	__type(value, __u64);
} stack_counts SEC(".maps");

/*
 * Walking two stacks costs microseconds: sample 1 in targ_stack_sample
 * removals, which is enough to rank a storm's sources.
 */
static __always_inline void gms_sample_stacks(void *ctx)
{
	struct gms_stack_key key = {};
	__u64 one = 1, *n;

	if (!targ_stack_sample || bpf_get_prandom_u32() % targ_stack_sample)
		return;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.user_stack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	key.kernel_stack = bpf_get_stackid(ctx, &stacks, 0);
	n = bpf_map_lookup_elem(&stack_counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&stack_counts, &key, &one, BPF_NOEXIST);
}

/*
 * The VM of a gmem inode is looked up only to filter by VM: otherwise the
 * record leaves vm 0 and the consumer maps the inode, which it saw bound.
 */
static __always_inline __u64 gms_gmem_vm(__u64 ino)
{
	__u64 *vm;

	if (!targ_filter_vm)
		return 0;
	vm = bpf_map_lookup_elem(&gmem_vm, &ino);
	return vm ? *vm : 0;
}

static __always_inline bool gms_gmem_selected(struct trace_event_raw_mm_filemap_op_page_cache *ctx, __u64 *vm)
{
	if (ctx->s_dev != targ_gmem_dev || !gms_task_selected())
		return false;
	*vm = gms_gmem_vm(ctx->i_ino);
	return gms_vm_selected(*vm);
}

/*
 * A vCPU's fault allocates the folio (kvm_gmem_get_pfn()) and then
 * requests the SPTE with the same pfn: the add is folded into that fault
 * record (GMS_FAULT_ALLOCATED) instead of costing a record of its own.
 * It waits in the thread's inflight storage, op GMS_OP_RUN, which the
 * KVM_RUN's exit (sys_exit_ioctl) flushes if no fault took it: only
 * where that exit is traced (targ_fold_allocs).
 */
static __always_inline struct gms_inflight *gms_run_inflight(void)
{
	struct gms_inflight *in = gms_inflight_current();
	struct kvm_vcpu *vcpu;

	if (in)
		return in->op == GMS_OP_RUN ? in : NULL;
	vcpu = gms_run_vcpu();
	if (!vcpu)
		return NULL;
	in = gms_inflight_enter(GMS_OP_RUN);
	if (!in)
		return NULL;
	in->vm = (__u64)BPF_CORE_READ(vcpu, kvm);
	in->vcpu_id = BPF_CORE_READ(vcpu, vcpu_id);
	in->alloc_pfn = 0;
	return in;
}

SEC("tp/filemap/mm_filemap_add_to_page_cache")
int gmem_pagecache_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct gms_inflight *in;
	__u64 vm;

	if (!gms_gmem_selected(ctx, &vm))
		return 0;
	if (targ_aggregate) {
		struct gms_agg_val *a = gms_agg(ctx->i_ino, vm);

		if (a)
			a->allocated_pages += 1 << ctx->order;
		return 0;
	}
	in = targ_fold_allocs ? gms_run_inflight() : NULL;
	if (in) {
		gms_flush_alloc(in);
		in->alloc_ino = ctx->i_ino;
		in->alloc_index = ctx->index;
		in->alloc_order = ctx->order;
		in->alloc_pfn = ctx->pfn;
		return 0;
	}
	gms_emit_pagecache(GMS_EV_PAGECACHE_ADD, vm, ctx->i_ino, ctx->index, ctx->pfn, ctx->order);
	return 0;
}

SEC("tp/filemap/mm_filemap_delete_from_page_cache")
int gmem_invalidate_pagecache(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	__u64 vm;

	if (!gms_gmem_selected(ctx, &vm))
		return 0;
	if (targ_aggregate) {
		struct gms_agg_val *a = gms_agg(ctx->i_ino, vm);

		if (a)
			a->invalidated_pages += 1 << ctx->order;
		gms_sample_stacks(ctx);
		return 0;
	}
	gms_emit_pagecache(GMS_EV_PAGECACHE_DEL, vm, ctx->i_ino, ctx->index, ctx->pfn, ctx->order);
	return 0;
}

/*
 * Precise tier: fentry/fexit on guest_memfd itself (virt/kvm/guest_memfd.c).
 * The loader attaches each program to the first of its hook's symbols the
 * kernel has (bpf_program__set_attach_target), hence the bare sections.
 */

/* kvm_gmem_create(kvm, args) returns the new fd, installed by then. */
SEC("fexit")
int BPF_PROG(gmem_create, struct kvm *kvm, struct kvm_create_guest_memfd *args, int ret)
{
	__u64 ino = ret >= 0 ? gms_fd_ino(ret) : 0;
	struct gms_call_event *e = gms_call_begin(GMS_FN_GMEM_CREATE, (__u64)kvm, ino, ret);

	if (!e)
		return 0;
	e->args.gmem_create.size = args->size;
	e->args.gmem_create.flags = args->flags;
	gms_submit(e);
	return 0;
}

static __always_inline void gms_slot_args(struct gms_call_event *e, struct kvm_memory_slot *slot)
{
	e->args.slot.slot = slot->id;
	e->args.slot.base_gfn = slot->base_gfn;
	e->args.slot.npages = slot->npages;
	e->args.slot.uaddr = slot->userspace_addr;
	e->args.slot.gmem_pgoff = slot->gmem.pgoff;
}

/* kvm_gmem_bind(kvm, slot, fd, offset): slot->gmem is set on success. */
SEC("fexit")
int BPF_PROG(gmem_bind, struct kvm *kvm, struct kvm_memory_slot *slot, unsigned int fd,
	     loff_t offset, int ret)
{
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_GMEM_BIND, (__u64)kvm, gms_fd_ino(fd), ret);
	if (!e)
		return 0;
	gms_slot_args(e, slot);
	e->args.slot.gmem_pgoff = offset >> 12;
	gms_submit(e);
	return 0;
}

/*
 * v7.3: kvm_gmem_commit_memory_region(kvm, slot[, change]) enters a slot
 * kvm_gmem_prepare_memory_region() bound in its gmem file's bindings;
 * -EEXIST when another slot binds a page of the range.  Its argument
 * count differs across releases (gms_fexit_ret).
 */
SEC("fexit")
int BPF_PROG(gmem_bind_commit, struct kvm *kvm, struct kvm_memory_slot *slot)
{
	struct gms_call_event *e;
	__u64 ret = 0;

	gms_fexit_ret(ctx, &ret);
	e = gms_call_begin(GMS_FN_GMEM_BIND_COMMIT, (__u64)kvm, gms_file_ino(slot->gmem.file), (int)ret);
	if (!e)
		return 0;
	gms_slot_args(e, slot);
	gms_submit(e);
	return 0;
}

SEC("fentry")
int BPF_PROG(gmem_unbind, struct kvm_memory_slot *slot)
{
	struct file *file = slot->gmem.file;
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_GMEM_UNBIND, (__u64)(file ? gms_gmem_file_kvm(file) : NULL),
			   gms_file_ino(file), 0);
	if (!e)
		return 0;
	gms_slot_args(e, slot);
	gms_submit(e);
	return 0;
}

/*
 * kvm_gmem_get_pfn(kvm, slot, gfn, *pfn, ...): its argument count differs
 * across releases (gms_fexit_ret).
 */
SEC("fexit")
int BPF_PROG(gmem_get_pfn, struct kvm *kvm, struct kvm_memory_slot *slot, gfn_t gfn, kvm_pfn_t *pfn)
{
	struct file *file = slot->gmem.file;
	struct gms_call_event *e;
	__u32 vcpu_id = 0;
	__u64 ret = 0;

	gms_fexit_ret(ctx, &ret);
	gms_current_vm(&vcpu_id);
	e = gms_call_begin(GMS_FN_GMEM_GET_PFN, (__u64)kvm, gms_file_ino(file), (int)ret);
	if (!e)
		return 0;
	e->args.get_pfn.gfn = gfn;
	e->args.get_pfn.slot = slot->id;
	e->args.get_pfn.vcpu_id = vcpu_id;
	e->args.get_pfn.gmem_index = gfn - slot->base_gfn + slot->gmem.pgoff;
	if ((int)ret == 0)
		bpf_probe_read_kernel(&e->args.get_pfn.pfn, sizeof(e->args.get_pfn.pfn), pfn);
	gms_submit(e);
	return 0;
}

/* kvm_gmem_populate(kvm, start_gfn, src, npages, post_populate, opaque): pages done or -errno. */
SEC("fexit")
int BPF_PROG(gmem_populate, struct kvm *kvm, gfn_t start_gfn, void *src, long npages,
	     void *post_populate, void *opaque, long ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_GMEM_POPULATE, (__u64)kvm, 0, ret);

	if (!e)
		return 0;
	e->args.range.start = start_gfn;
	e->args.range.end = start_gfn + npages;
	gms_submit(e);
	return 0;
}

/*
 * __kvm_gmem_invalidate_start(f, start, end, attr_filter), v7.3: one call
 * per gmem file of the inode from kvm_gmem_invalidate_start() (static and
 * inlined there into punch-hole and memory-failure paths), and one from
 * kvm_gmem_release() over the whole file; page indexes [start, end).
 */
SEC("fentry")
int BPF_PROG(gmem_invalidate_file, struct gmem_file___new *f, unsigned long start, unsigned long end)
{
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_GMEM_INVALIDATE, (__u64)BPF_CORE_READ(f, kvm), gms_gmem_file_ino(f), 0);
	if (!e)
		return 0;
	e->args.range.start = start;
	e->args.range.end = end;
	gms_submit(e);
	return 0;
}

/*
 * kvm_gmem_invalidate_begin(owner, start, end), page indexes [start, end):
 * what the owner is depends on the release (gms_gmem_invalidate_owner).
 */
SEC("fentry")
int BPF_PROG(gmem_invalidate, void *owner, unsigned long start, unsigned long end)
{
	struct gms_call_event *e;
	__u64 vm = 0, ino;

	ino = gms_gmem_invalidate_owner(owner, &vm);
	e = gms_call_begin(GMS_FN_GMEM_INVALIDATE, vm, ino, 0);
	if (!e)
		return 0;
	e->args.range.start = start;
	e->args.range.end = end;
	gms_submit(e);
	return 0;
}

/*
 * kvm_gmem_fallocate(file, mode, offset, len): the same record as the
 * syscall tier's fallocate (one fentry and one fexit instead of two
 * syscall tracepoints that run for every file), flagged GMS_F_KFUNC.
 */
SEC("fentry")
int BPF_PROG(gmem_punch_hole_entry, struct file *file, int mode, loff_t offset, loff_t len)
{
	struct gms_fallocate_event *e;
	struct gms_inflight *in;

	if (!gms_task_selected())
		return 0;
	in = gms_inflight_enter(GMS_OP_FALLOCATE);
	if (!in)
		return 0;
	in->fd_kind = GMS_FD_GMEM;
	in->vm = (__u64)gms_gmem_file_kvm(file);
	e = &in->falloc;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->vm = in->vm;
	e->gmem_ino = file->f_inode->i_ino;
	e->fd = ~0u;	/* not known at this level */
	e->mode = mode;
	e->offset = offset;
	e->len = len;
	return 0;
}

SEC("fexit")
int BPF_PROG(gmem_punch_hole_exit, struct file *file, int mode, loff_t offset, loff_t len, long ret)
{
	struct gms_inflight *in = gms_inflight_current();

	if (in && in->op == GMS_OP_FALLOCATE)
		gms_fallocate_done(in, ret, GMS_F_KFUNC);
	return 0;
}

/* kvm_gmem_release(inode, file): the last reference to a gmem file is gone. */
SEC("fentry")
int BPF_PROG(gmem_release, struct inode *inode, struct file *file)
{
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_GMEM_RELEASE, (__u64)gms_gmem_file_kvm(file), inode->i_ino, 0);
	if (e)
		gms_submit(e);
	return 0;
}

/* kvm_gmem_error_folio(mapping, folio): memory failure on a gmem folio. */
SEC("fentry")
int BPF_PROG(gmem_error_folio, struct address_space *mapping, struct folio *folio)
{
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_GMEM_ERROR_FOLIO, 0, mapping->host->i_ino, 0);
	if (!e)
		return 0;
	e->args.folio.gmem_index = folio->index;
	gms_submit(e);
	return 0;
}

/*
 * The in-place conversion series (v8, June 2026):
 * kvm_gmem_set_attributes(file, argp) on the gmem fd, argp the user's
 * struct kvm_memory_attributes2 {offset, size, attributes, flags,
 * error_offset, ...}, read back after the kernel wrote error_offset.
 */
struct gms_memory_attributes2 {
	__u64 offset;
	__u64 size;
	__u64 attributes;
	__u64 flags;
	__u64 error_offset;
};

SEC("fexit")
int BPF_PROG(gmem_set_attributes, struct file *file, void *argp, long ret)
{
	struct gms_memory_attributes2 a = {};
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_GMEM_SET_ATTRIBUTES, (__u64)gms_gmem_file_kvm(file), file->f_inode->i_ino, ret);
	if (!e)
		return 0;
	if (bpf_probe_read_user(&a, sizeof(a), argp))
		e->hdr.flags |= GMS_F_ARGS_UNREAD;
	e->args.range.start = a.offset >> 12;
	e->args.range.end = (a.offset + a.size) >> 12;
	e->args.range.attributes = a.attributes;
	e->args.range.error_offset = a.error_offset;
	gms_submit(e);
	return 0;
}

/*
 * The 2025 RFC: kvm_gmem_convert_range(file, start, nr_pages, shared,
 * *error_index), page indexes; attributes 0 means "to shared".
 */
SEC("fexit")
int BPF_PROG(gmem_convert, struct file *file, unsigned long start, size_t nr_pages, bool shared,
	     unsigned long *error_index, int ret)
{
	struct gms_call_event *e;
	__u64 err_index = 0;

	e = gms_call_begin(GMS_FN_GMEM_CONVERT, (__u64)gms_gmem_file_kvm(file), file->f_inode->i_ino, ret);
	if (!e)
		return 0;
	if (ret < 0 && error_index)
		bpf_probe_read_kernel(&err_index, sizeof(err_index), error_index);
	e->args.range.start = start;
	e->args.range.end = start + nr_pages;
	e->args.range.attributes = shared ? 0 : GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE;
	e->args.range.error_offset = err_index << 12;
	gms_submit(e);
	return 0;
}
