/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every kernel-version difference the BPF side reads through lives here,
 * as CO-RE type flavours checked at load time, never LINUX_VERSION_CODE;
 * each helper names the release and, where found, the commit that made
 * the difference.  Differences in which function or program to attach to
 * live in the hook catalog (loader/probe/catalog.cpp) instead.
 */
#ifndef GMS_CORE_FIXES_BPF_H
#define GMS_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * The gmem file's private data: `struct kvm_gmem` since guest_memfd was
 * merged (v6.8, commit a7800aa80ea4 "KVM: Add KVM_CREATE_GUEST_MEMFD ioctl()
 * for guest-specific backing memory"); `struct gmem_file` since v6.19
 * (commit 497b1dfbcacf "KVM: guest_memfd: Rename "struct kvm_gmem" to
 * "struct gmem_file"").  Both start with the owning struct kvm *.
 */
struct kvm_gmem___old {
	struct kvm *kvm;
	struct list_head entry;	/* in its inode's mapping->i_private_list */
} __attribute__((preserve_access_index));

struct gmem_file___new {
	struct kvm *kvm;
	struct list_head entry;	/* in its gmem_inode's gmem_file_list (v7.3) */
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
 * guest_memfd was merged (v6.8, __kvm_gmem_create()); in struct gmem_inode,
 * which embeds the VFS inode, since v6.19 (commit e66438bb81c4 "KVM:
 * guest_memfd: Add gmem_inode.flags field instead of using i_private").
 */
struct gmem_inode___new {
	__u64 flags;
	struct inode vfs_inode;
	struct list_head gmem_file_list;	/* its gmem files (v7.1) */
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
 * include/uapi/linux/magic.h: guest_memfd's own filesystem, v6.19 (commit
 * a63ca4236e67 "KVM: guest_memfd: Use guest mem inodes instead of anonymous
 * inodes"); anon_inodefs before.
 */
#define GMS_GUEST_MEMFD_MAGIC 0x474d454d

/*
 * The inode of a gmem file: struct gmem_file has no inode pointer, but
 * its `entry` is linked into its gmem_inode's gmem_file_list from creation
 * until kvm_gmem_release() is done with it, by v7.3 (Debian's source; the
 * change is d15c987d1226 "kvm: Use private inode list instead of
 * i_private_list" on the VFS tree's 7.1 branch, not checked against a
 * mainline log; v6.19 links it into mapping->i_private_list).  The list
 * head is the node whose container is a gmem_inode on guest_memfd's
 * filesystem; a few VMs share an inode at most, so a few steps find it.
 * 0 if not found.
 */
static __always_inline __u64 gms_gmem_file_ino(struct gmem_file___new *f)
{
	struct list_head *node = BPF_CORE_READ(f, entry.next);
	struct inode *inode;
	int i;

	for (i = 0; i < 8 && node; i++) {
		inode = (void *)node - bpf_core_field_offset(struct gmem_inode___new, gmem_file_list) +
			bpf_core_field_offset(struct gmem_inode___new, vfs_inode);
		if (BPF_CORE_READ(inode, i_sb, s_magic) == GMS_GUEST_MEMFD_MAGIC)
			return BPF_CORE_READ(inode, i_ino);
		node = BPF_CORE_READ(node, next);
	}
	return 0;
}

/*
 * Shadow pages a VM uses: struct kvm_arch's n_used_mmu_pages through v6.12
 * (what its kvm_mmu_zap_all_fast tracepoint prints); by v7.3 the field is
 * gone and kvm_account_mmu_page() counts kvm->stat.mmu_shadow_pages, which
 * that tracepoint prints instead (seen in Debian's 7.3 source; the commit
 * that removed the field was not found).  Neither: the count is unknown
 * (~0).
 */
struct kvm_arch___old {
	unsigned long n_used_mmu_pages;
} __attribute__((preserve_access_index));

struct kvm_vm_stat___new {
	__u64 mmu_shadow_pages;
} __attribute__((preserve_access_index));

static __always_inline __u64 gms_kvm_used_mmu_pages(struct kvm *kvm)
{
	struct kvm_arch___old *arch = (void *)&kvm->arch;
	struct kvm_vm_stat___new *stat = (void *)&kvm->stat;

	if (bpf_core_field_exists(arch->n_used_mmu_pages))
		return BPF_CORE_READ(arch, n_used_mmu_pages);
	if (bpf_core_field_exists(stat->mmu_shadow_pages))
		return BPF_CORE_READ(stat, mmu_shadow_pages);
	return ~0ULL;
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

/*
 * A VM's shared/private attributes: kvm->mem_attr_array, an xarray of
 * gfn -> KVM_MEMORY_ATTRIBUTE_* value entries, one per gfn, since v6.8
 * (commit 5a475554db1e "KVM: Introduce per-page memory attributes",
 * CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES). NULL where the kernel has none.
 */
struct kvm___attrs {
	struct xarray mem_attr_array;
} __attribute__((preserve_access_index));

static __always_inline struct xarray *gms_kvm_attr_array(struct kvm *kvm)
{
	struct kvm___attrs *k = (void *)kvm;

	if (!bpf_core_field_exists(k->mem_attr_array))
		return NULL;
	return (void *)kvm + bpf_core_field_offset(k->mem_attr_array);
}

/*
 * The owner kvm_gmem_invalidate_begin() (kvm_gmem_invalidate_start() by
 * v7.3) is handed, page indexes [start, end) following it:
 * - v6.8 (commit a7800aa80ea4, above): the file's struct kvm_gmem, called
 *   once per gmem file of the inode.  Its `entry` is then the only node of
 *   its inode's mapping->i_private_list (one kvm_gmem per inode), so the
 *   list head gives the address_space and so the inode.
 * - v6.18 (commit 5d3341d684be "KVM: guest_memfd: Invalidate SHARED GPAs
 *   if gmem supports INIT_SHARED"): the inode, which the function walks.
 * Told apart by struct gmem_file (v6.19, commit 497b1dfbcacf), so v6.18
 * alone, whose owner is an inode while struct kvm_gmem still exists, is
 * read as the older kind: no type of v6.18 marks the change.
 * Returns the inode number, 0 if unknown; *vm is the VM where the owner
 * names one (the older kind), else left as it is.
 */
static __always_inline __u64 gms_gmem_invalidate_owner(void *owner, __u64 *vm)
{
	struct kvm_gmem___old *gmem = owner;
	struct address_space *mapping;
	void *head;

	if (bpf_core_type_exists(struct gmem_file___new))
		return BPF_CORE_READ((struct inode *)owner, i_ino);
	head = BPF_CORE_READ(gmem, entry.next);
	*vm = (__u64)BPF_CORE_READ(gmem, kvm);
	mapping = head - bpf_core_field_offset(struct address_space, i_private_list);
	if (BPF_CORE_READ(mapping, host, i_mapping) == mapping)
		return BPF_CORE_READ(mapping, host, i_ino);
	return 0;
}

/*
 * The result of an fexit program's function whose argument count differs
 * across releases: BPF_PROG's trailing `ret` is the slot after the last
 * argument declared, so it would read an argument where the function has
 * one more; bpf_get_func_ret() reads the result wherever it is, into
 * *ret (left as it is if the kernel cannot say).
 * - kvm_gmem_get_pfn(kvm, slot, gfn, *pfn, [**page,] *max_order): v6.13
 *   added the page (commit 1fbee5b01a0f "KVM: guest_memfd: Provide "struct
 *   page" as output from kvm_gmem_get_pfn()").
 * - kvm_gmem_commit_memory_region(kvm, slot[, change]): v7.3 (Debian's 7.3
 *   source) has it with two arguments, the conversion series with three;
 *   no commit found for either.
 */
static __always_inline void gms_fexit_ret(void *ctx, __u64 *ret)
{
	bpf_get_func_ret(ctx, ret);
}

#endif /* GMS_CORE_FIXES_BPF_H */
