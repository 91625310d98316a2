// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * guest_memfd page cache, portable tier: every gmem folio enters and
 * leaves through filemap_add_folio() / __filemap_remove_folio(), whose
 * tracepoints name the inode.  gmem inodes live on anon_inodefs
 * (anon_inode_create_getfile() in kvm_gmem_create()), so filtering on
 * its s_dev keeps the kernel from sending every other file's pages.
 */
#include "common.bpf.h"

static __always_inline int gms_pagecache(struct trace_event_raw_mm_filemap_op_page_cache *ctx,
					 __u32 type)
{
	struct gms_pagecache_event *e;
	__u64 ino, *vmp, vm = 0;

	if (ctx->s_dev != targ_anon_dev || !gms_task_selected())
		return 0;
	ino = ctx->i_ino;
	vmp = bpf_map_lookup_elem(&gmem_vm, &ino);
	if (vmp)
		vm = *vmp;
	if (!gms_vm_selected(vm))
		return 0;
	e = GMS_RESERVE(type, struct gms_pagecache_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, type, sizeof(*e));
	e->vm = vm;
	e->ino = ino;
	e->index = ctx->index;
	e->pfn = ctx->pfn;
	e->order = ctx->order;
	e->pad = 0;
	gms_submit(e);
	return 0;
}

SEC("tp/filemap/mm_filemap_add_to_page_cache")
int gmem_pagecache_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	return gms_pagecache(ctx, GMS_EV_PAGECACHE_ADD);
}

SEC("tp/filemap/mm_filemap_delete_from_page_cache")
int gmem_pagecache_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	return gms_pagecache(ctx, GMS_EV_PAGECACHE_DEL);
}
