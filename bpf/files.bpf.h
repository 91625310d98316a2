/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What a struct file is to gmemscope, from its dentry name, and the
 * struct kvm * behind it: shared by the syscall decoding and the audit
 * iterator.
 */
#ifndef GMS_FILES_BPF_H
#define GMS_FILES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include "events.h"
#include "core_fixes.bpf.h"

#define GMS_NAME_LEN 16

static __always_inline bool gms_prefix(const char *name, const char *want, int n)
{
	for (int i = 0; i < n && i < GMS_NAME_LEN; i++)
		if (name[i] != want[i])
			return false;
	return true;
}

/*
 * KVM's files are told apart by their dentry names: anon_inode_getfile()
 * names them "kvm-vm" and "kvm-vcpu:N", their stats files (KVM_GET_STATS_FD,
 * kvm_vm_ioctl_get_stats_fd() and kvm_vcpu_ioctl_get_stats_fd())
 * "kvm-vm-stats" and "kvm-vcpu-stats:N", a device from KVM_CREATE_DEVICE
 * its ops' name ("kvm-vfio"), guest_memfd "[kvm-gmem]" (kvm_gmem_fops is
 * not exported, so there is no f_op to compare).  Each of them holds a
 * reference on its struct kvm.
 */
static __always_inline __u16 gms_fd_kind(struct file *file)
{
	char name[GMS_NAME_LEN] = {};
	const unsigned char *p;

	if (!file)
		return GMS_FD_OTHER;
	p = file->f_path.dentry->d_name.name;
	if (bpf_probe_read_kernel_str(name, sizeof(name), p) < 0)
		return GMS_FD_OTHER;
	if (gms_prefix(name, "[kvm-gmem]", 11))
		return GMS_FD_GMEM;
	if (gms_prefix(name, "kvm-vm", 7))
		return GMS_FD_VM;
	if (gms_prefix(name, "kvm-vcpu:", 9))
		return GMS_FD_VCPU;
	if (gms_prefix(name, "kvm-vm-stats", 13))
		return GMS_FD_VM_STATS;
	if (gms_prefix(name, "kvm-vcpu-stats:", 15))
		return GMS_FD_VCPU_STATS;
	if (gms_prefix(name, "kvm", 4))
		return GMS_FD_KVM;
	if (gms_prefix(name, "kvm-", 4))
		return GMS_FD_KVM_DEVICE;
	return GMS_FD_OTHER;
}

/* The struct kvm * behind a file of one of the kinds above but /dev/kvm. */
static __always_inline __u64 gms_file_vm(struct file *file, __u16 kind, __u32 *vcpu_id)
{
	struct kvm_vcpu *vcpu;

	if (!file)
		return 0;
	switch (kind) {
	case GMS_FD_VM:
	case GMS_FD_VM_STATS:
		return (__u64)file->private_data;
	case GMS_FD_KVM_DEVICE:
		return (__u64)BPF_CORE_READ((struct kvm_device *)file->private_data, kvm);
	case GMS_FD_VCPU:
	case GMS_FD_VCPU_STATS:
		vcpu = BPF_CORE_READ(file, private_data);
		if (vcpu_id)
			*vcpu_id = BPF_CORE_READ(vcpu, vcpu_id);
		return (__u64)BPF_CORE_READ(vcpu, kvm);
	case GMS_FD_GMEM:
		return (__u64)gms_gmem_file_kvm(file);
	}
	return 0;
}

#endif /* GMS_FILES_BPF_H */
