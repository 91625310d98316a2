// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * KVM MMU events: the fault that maps a gfn to a pfn (with the memslot's
 * gmem file and index), the SPTE it installs, and zaps.
 */
#include "common.bpf.h"

/* Per CPU: the gfn of the last gmem fault, so set_spte keeps only those. */
struct gms_last_fault {
	__u64 gfn;
	__u64 vm;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gms_last_fault);
} last_gmem_fault SEC(".maps");

/*
 * kvm_mmu_spte_requested fires from kvm_mmu_map()/direct_map() and
 * FNAME(fetch) once the fault's pfn is known (struct kvm_page_fault,
 * v6.1+).  index = gfn - base_gfn + slot->gmem.pgoff, as in
 * kvm_gmem_get_index().
 */
SEC("tp_btf/kvm_mmu_spte_requested")
int BPF_PROG(kvm_mmu_fault, struct kvm_page_fault *fault)
{
	struct kvm_memory_slot *slot;
	struct file *gmem;
	struct kvm_vcpu *vcpu;
	struct gms_inflight *in;
	struct gms_last_fault *last;
	struct gms_fault_event *e;
	__u64 vm = 0, *known;
	__u32 zero = 0, vcpu_id = 0;

	/*
	 * tp_btf arguments are BTF pointers: plain loads, no helper calls.  Where
	 * KVM is a module (Debian), the verifier holds them possibly NULL.
	 */
	if (!fault || !gms_task_selected())
		return 0;
	slot = fault->slot;
	gmem = slot ? slot->gmem.file : NULL;
	vcpu = gms_run_vcpu();
	if (vcpu) {
		vm = (__u64)BPF_CORE_READ(vcpu, kvm);
		vcpu_id = BPF_CORE_READ(vcpu, vcpu_id);
	}
	if (!gms_vm_selected(vm))
		return 0;
	if (targ_aggregate) {
		struct gms_agg_val *a = gms_agg(gmem ? gmem->f_inode->i_ino : 0, vm);

		if (a)
			a->faults++;
		return 0;
	}
	e = GMS_RESERVE(GMS_EV_FAULT, struct gms_fault_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, GMS_EV_FAULT, sizeof(*e));
	e->vm = vm;
	e->gfn = fault->gfn;
	e->pfn = fault->pfn;
	e->slot_base_gfn = slot ? slot->base_gfn : 0;
	e->slot_id = slot ? slot->id : 0;
	e->vcpu_id = vcpu_id;
	e->level = fault->goal_level;
	e->pad = 0;
	e->gmem_ino = 0;
	e->gmem_index = 0;
	if (gmem) {
		e->gmem_ino = gmem->f_inode->i_ino;
		e->gmem_index = e->gfn - e->slot_base_gfn + slot->gmem.pgoff;
		known = bpf_map_lookup_elem(&gmem_vm, &e->gmem_ino);
		if (vm && (!known || *known != vm))
			bpf_map_update_elem(&gmem_vm, &e->gmem_ino, &vm, BPF_ANY);
	}
	if (fault->write)
		e->hdr.flags |= GMS_FAULT_WRITE;
	if (fault->exec)
		e->hdr.flags |= GMS_FAULT_EXEC;
	if (fault->is_private)
		e->hdr.flags |= GMS_FAULT_PRIVATE;
	/* a page-cache add of this KVM_RUN waiting for its fault (gmem.bpf.c) */
	in = targ_fold_allocs ? gms_inflight_current() : NULL;
	if (in && in->op == GMS_OP_RUN && in->alloc_pfn) {
		if (in->alloc_pfn == e->pfn) {
			e->hdr.flags |= GMS_FAULT_ALLOCATED;
			in->alloc_pfn = 0;
		} else {
			gms_flush_alloc(in);
		}
	}
	last = targ_set_spte ? bpf_map_lookup_elem(&last_gmem_fault, &zero) : NULL;
	if (last) {
		last->gfn = gmem ? e->gfn : ~0ULL;
		last->vm = vm;
	}
	gms_submit(e);
	return 0;
}

SEC("tp/kvmmmu/kvm_mmu_set_spte")
int kvm_mmu_set_spte(struct trace_event_raw_kvm_mmu_set_spte *ctx)
{
	struct gms_last_fault *last;
	struct gms_set_spte_event *e;
	__u32 zero = 0;

	last = bpf_map_lookup_elem(&last_gmem_fault, &zero);
	if (!last || last->gfn != ctx->gfn)
		return 0;
	last->gfn = ~0ULL;
	e = GMS_RESERVE(GMS_EV_SET_SPTE, struct gms_set_spte_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, GMS_EV_SET_SPTE, sizeof(*e));
	e->vm = last->vm;
	e->gfn = ctx->gfn;
	e->spte = ctx->spte;
	e->level = ctx->level;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	gms_submit(e);
	return 0;
}

/* kvm_mmu_zap_all_fast(): memslot delete or move invalidates every root. */
SEC("tp_btf/kvm_mmu_zap_all_fast")
int BPF_PROG(kvm_mmu_zap_all_fast, struct kvm *kvm)
{
	struct gms_zap_event *e;

	if (!kvm || !gms_task_selected() || !gms_vm_selected((__u64)kvm))
		return 0;
	e = GMS_RESERVE(GMS_EV_ZAP_ALL_FAST, struct gms_zap_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, GMS_EV_ZAP_ALL_FAST, sizeof(*e));
	e->vm = (__u64)kvm;
	e->gfn = 0;
	e->role = 0;
	e->count = gms_kvm_used_mmu_pages(kvm);
	e->gen = kvm->arch.mmu_valid_gen;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	gms_submit(e);
	return 0;
}

SEC("tp/kvmmmu/kvm_mmu_prepare_zap_page")
int kvm_mmu_prepare_zap_page(struct trace_event_raw_kvm_mmu_page_class *ctx)
{
	struct gms_zap_event *e;
	__u64 vm;

	if (!gms_current_vm_selected(&vm))
		return 0;
	e = GMS_RESERVE(GMS_EV_ZAP_PAGE, struct gms_zap_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, GMS_EV_ZAP_PAGE, sizeof(*e));
	e->vm = vm;
	e->gfn = ctx->gfn;
	e->role = ctx->role;
	e->count = ctx->root_count;
	e->gen = ctx->mmu_valid_gen;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	gms_submit(e);
	return 0;
}

/* Only the TDP MMU fires this (kvm.tdp_mmu=Y, EPT/NPT hosts). */
SEC("tp/kvmmmu/kvm_tdp_mmu_spte_changed")
int kvm_mmu_tdp_spte_changed(struct trace_event_raw_kvm_tdp_mmu_spte_changed *ctx)
{
	struct gms_tdp_spte_event *e;
	__u64 vm;

	if (!gms_current_vm_selected(&vm))
		return 0;
	e = GMS_RESERVE(GMS_EV_TDP_SPTE, struct gms_tdp_spte_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, GMS_EV_TDP_SPTE, sizeof(*e));
	e->vm = vm;
	e->gfn = ctx->gfn;
	e->old_spte = ctx->old_spte;
	e->new_spte = ctx->new_spte;
	e->level = ctx->level;
	e->as_id = ctx->as_id;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	gms_submit(e);
	return 0;
}
