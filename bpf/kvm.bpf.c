// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * KVM memory attributes and MMU invalidation windows, precise tier
 * (fentry/fexit on virt/kvm/kvm_main.c).
 */
#include "common.bpf.h"

/* kvm_vm_set_mem_attributes(kvm, start, end, attributes): gfns [start, end). */
SEC("fexit")
int BPF_PROG(kvm_set_mem_attributes, struct kvm *kvm, gfn_t start, gfn_t end,
	     unsigned long attributes, int ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_KVM_SET_MEM_ATTRIBUTES, (__u64)kvm, 0, ret);

	if (!e)
		return 0;
	e->args.range.start = start;
	e->args.range.end = end;
	e->args.range.attributes = attributes;
	gms_submit(e);
	return 0;
}

/*
 * The MMU notifier telling KVM that user memory of the VM's process goes
 * away (munmap, MADV_DONTNEED, migration): an mmu_notifier_ops callback,
 * so never inlined, unlike kvm_mmu_invalidate_begin/end which 6.12 inlines
 * into it (their out-of-line copies attach and stay silent).
 */
SEC("fentry")
int BPF_PROG(kvm_mmu_notifier, struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	struct kvm *kvm = (void *)mn - bpf_core_field_offset(struct kvm, mmu_notifier);
	struct gms_call_event *e = gms_call_begin(GMS_FN_KVM_MMU_NOTIFIER, (__u64)kvm, 0, 0);

	if (!e)
		return 0;
	e->args.range.start = range->start;
	e->args.range.end = range->end;
	gms_submit(e);
	return 0;
}

/* The portable tier of the same: trace_kvm_unmap_hva_range() in that callback (no VM). */
SEC("tp/kvm/kvm_unmap_hva_range")
int kvm_unmap_hva_range(struct trace_event_raw_kvm_unmap_hva_range *ctx)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_KVM_MMU_NOTIFIER, 0, 0, 0);

	if (!e)
		return 0;
	e->hdr.flags = 0;
	e->args.range.start = ctx->start;
	e->args.range.end = ctx->end;
	gms_submit(e);
	return 0;
}

/*
 * kvm_mmu_invalidate_begin(kvm) opens the window before the range is
 * known (kvm_mmu_invalidate_range_add() grows it); at
 * kvm_mmu_invalidate_end(kvm) it is in mmu_invalidate_range_start/end.
 */
SEC("fentry")
int BPF_PROG(kvm_mmu_invalidate, struct kvm *kvm)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_KVM_MMU_INVALIDATE_BEGIN, (__u64)kvm, 0, 0);

	if (e)
		gms_submit(e);
	return 0;
}

SEC("fentry")
int BPF_PROG(kvm_mmu_invalidate_end, struct kvm *kvm)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_KVM_MMU_INVALIDATE_END, (__u64)kvm, 0, 0);

	if (!e)
		return 0;
	/* past 32 KiB into struct kvm: too far for a load's offset, so a helper read */
	e->args.range.start = BPF_CORE_READ(kvm, mmu_invalidate_range_start);
	e->args.range.end = BPF_CORE_READ(kvm, mmu_invalidate_range_end);
	gms_submit(e);
	return 0;
}
