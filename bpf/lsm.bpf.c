// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Enforcement: lsm/file_ioctl refuses a conversion to private of memory a
 * device has DMA-mapped (or an operator declared), before KVM sees it.
 * No KVM function allows error injection, so the veto is taken where the
 * ioctl enters: security_file_ioctl(). The decision is bpf/veto.bpf.h's.
 */
#include "veto.bpf.h"

#define GMS_MAX_ERRNO 4095

/*
 * The verifier holds an LSM program's return to [-MAX_ERRNO, 0]: the
 * bounds are spelled out so that it can see them.
 */
SEC("lsm/file_ioctl")
int BPF_PROG(lsm_file_ioctl, struct file *file, unsigned int cmd, unsigned long arg, int ret)
{
	if (ret < 0 && ret >= -GMS_MAX_ERRNO)
		return ret;	/* another LSM refused already */
	if (!gms_veto_cmd(cmd))
		return 0;	/* every other ioctl: nothing read, nothing looked up */
	/*
	 * targ_veto_ret is read-only data, a constant to the verifier (the
	 * loader keeps it in -4095..-1); 6.12's verifier loses the bounds of
	 * a negated value, so the sign is applied in userspace.
	 */
	return gms_veto_decide(file, cmd, arg) ? targ_veto_ret : 0;
}

/*
 * The index's own entry point, run by BPF_PROG_TEST_RUN: `gmemscope pin
 * add|del` declares ranges through it, and the tests and bench_veto index
 * mappings through it where the kernel has no VFIO. It runs the code the
 * map/unmap ioctl exits run, in the calling process (its mm).
 */
SEC("syscall")
int enforce_index_op(struct gms_index_op *op)
{
	struct gms_pin p = {.kind = op->kind, .fd = op->fd, .iova = op->iova, .since_ns = bpf_ktime_get_ns(),
			    .tgid = bpf_get_current_pid_tgid() >> 32};
	__u64 mm = gms_current_mm(), tgid = op->tgid;

	bpf_get_current_comm(p.comm, sizeof(p.comm));
	switch (op->op) {
	case GMS_INDEX_MAP:
		p.vaddr = op->vaddr;
		p.end = op->vaddr + op->bytes;
		op->ret = gms_idx_add(mm, &p);
		break;
	case GMS_INDEX_UNMAP:
		op->ret = gms_idx_remove(mm, &p, op->bytes, op->flags & GMS_VFIO_DMA_UNMAP_FLAG_ALL, op->bytes);
		break;
	case GMS_INDEX_DECLARE:
		p.kind = GMS_PIN_DECLARED;
		p.fd = 0;
		p.tgid = op->tgid;
		p.vaddr = op->vaddr;
		p.end = op->vaddr + op->bytes;
		p.iova = op->vaddr << 12;	/* the start tree finds it by its first gfn */
		__builtin_memcpy(p.comm, op->note, sizeof(p.comm));
		p.comm[sizeof(p.comm) - 1] = 0;
		op->ret = gms_idx_add(tgid, &p);
		break;
	case GMS_INDEX_UNDECLARE:
		p.kind = GMS_PIN_DECLARED;
		p.fd = 0;
		p.iova = op->vaddr << 12;
		op->ret = gms_idx_remove(tgid, &p, 4096, false, 0);
		break;
	default:
		op->ret = -22;
	}
	return 0;
}
