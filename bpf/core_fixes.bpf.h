/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every kernel-version difference the BPF side reads through lives here,
 * as CO-RE type flavours checked at load time, never LINUX_VERSION_CODE.
 */
#ifndef GMS_CORE_FIXES_BPF_H
#define GMS_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * The gmem file's private data: `struct kvm_gmem` since guest_memfd was
 * merged (v6.8, commit a7800aa80ea4 "KVM: Add KVM_CREATE_GUEST_MEMFD ioctl()
 * for guest-specific backing memory"); the in-place conversion work renames
 * it `struct gmem_file` (kvm-x86 tree, 2025).  Both start with the owning
 * struct kvm *.
 */
struct kvm_gmem___old {
	struct kvm *kvm;
	struct list_head entry;	/* in its inode's mapping->i_private_list */
} __attribute__((preserve_access_index));

struct gmem_file___new {
	struct kvm *kvm;
} __attribute__((preserve_access_index));

static __always_inline struct kvm *gms_gmem_file_kvm(struct file *file)
{
	void *priv = BPF_CORE_READ(file, private_data);

	if (!priv)
		return NULL;
	if (bpf_core_type_exists(struct gmem_file___new))
		return BPF_CORE_READ((struct gmem_file___new *)priv, kvm);
	if (bpf_core_type_exists(struct kvm_gmem___old))
		return BPF_CORE_READ((struct kvm_gmem___old *)priv, kvm);
	return NULL;
}

/*
 * GUEST_MEMFD_FLAG_* of a gmem inode: kept in inode->i_private since
 * guest_memfd was merged (v6.8, __kvm_gmem_create()); the in-place
 * conversion work moves them to struct gmem_inode (kvm-x86 tree, 2025),
 * which embeds the VFS inode.
 */
struct gmem_inode___new {
	__u64 flags;
	struct inode vfs_inode;
} __attribute__((preserve_access_index));

static __always_inline __u64 gms_gmem_flags(struct inode *inode)
{
	if (bpf_core_type_exists(struct gmem_inode___new)) {
		struct gmem_inode___new *gi = (void *)inode -
			bpf_core_field_offset(struct gmem_inode___new, vfs_inode);

		return BPF_CORE_READ(gi, flags);
	}
	return (__u64)BPF_CORE_READ(inode, i_private);
}

/*
 * Whether the fdtable's reference is a file's last one.  6.13 made
 * f_count a file_ref_t whose counter holds references - 1 (commit
 * 90ee6ed776c0 "fs: port files to file_ref"); before, an atomic_long_t.
 */
struct file___old {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

static __always_inline bool gms_file_last_ref(struct file *file)
{
	if (bpf_core_field_exists(file->f_ref))
		return BPF_CORE_READ(file, f_ref.refcnt.counter) == 0;
	return BPF_CORE_READ((struct file___old *)file, f_count.counter) == 1;
}

#endif /* GMS_CORE_FIXES_BPF_H */
