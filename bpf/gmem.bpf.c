// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * guest_memfd page cache, portable tier: every gmem folio enters and
 * leaves through filemap_add_folio() / __filemap_remove_folio(), whose
 * tracepoints name the inode.  gmem inodes live on anon_inodefs
 * (anon_inode_create_getfile() in kvm_gmem_create()), so filtering on
 * its s_dev keeps the kernel from sending every other file's pages.
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
	if (ctx->s_dev != targ_anon_dev || !gms_task_selected())
		return false;
	*vm = gms_gmem_vm(ctx->i_ino);
	return gms_vm_selected(*vm);
}

/*
 * A vCPU's fault allocates the folio (kvm_gmem_get_pfn()) and then
 * requests the SPTE with the same pfn: the add is folded into that fault
 * record (GMS_FAULT_ALLOCATED) instead of costing a record of its own.
 */
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
	in = gms_inflight_current();
	if (in && in->op == GMS_OP_RUN) {
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
int gmem_pagecache_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
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
