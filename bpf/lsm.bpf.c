// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Enforcement: lsm/file_ioctl refuses a conversion to private of memory a
 * device has DMA-mapped (or an operator declared), before KVM sees it.
 * No KVM function allows error injection, so the veto is taken where the
 * ioctl enters: security_file_ioctl(). The decision is bpf/veto.bpf.h's.
 */
#include "veto.bpf.h"

SEC("lsm/file_ioctl")
int BPF_PROG(lsm_file_ioctl, struct file *file, unsigned int cmd, unsigned long arg, int ret)
{
	if (ret)
		return ret;	/* another LSM refused already */
	return -gms_veto_decide(file, cmd, arg);
}
