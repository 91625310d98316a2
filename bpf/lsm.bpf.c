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
	/*
	 * targ_veto_ret is read-only data, a constant to the verifier (the
	 * loader keeps it in -4095..-1); 6.12's verifier loses the bounds of
	 * a negated value, so the sign is applied in userspace.
	 */
	return gms_veto_decide(file, cmd, arg) ? targ_veto_ret : 0;
}
