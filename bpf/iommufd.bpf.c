// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * iommufd IOAS maps, unmaps and pins (drivers/iommu/iommufd/), precise
 * tier.  Types iommufd keeps private are declared here for CO-RE.
 */
#include "common.bpf.h"

/* drivers/iommu/iommufd/io_pagetable.h */
struct iopt_pages___local {
	void *uptr;
} __attribute__((preserve_access_index));

static __always_inline __u64 gms_read_ulong(unsigned long *p)
{
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), p);
	return v;
}

/* iopt_map_user_pages(ictx, iopt, *iova, uptr, length, iommu_prot, flags) */
SEC("fexit")
int BPF_PROG(iommufd_map, void *ictx, void *iopt, unsigned long *iova, void *uptr,
	     unsigned long length, int iommu_prot, unsigned int flags, int ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_IOMMUFD_MAP, 0, 0, ret);

	if (!e)
		return 0;
	e->args.map.iova = gms_read_ulong(iova);
	e->args.map.start = (__u64)uptr;
	e->args.map.length = length;
	e->args.map.flags = flags;
	gms_submit(e);
	return 0;
}

static __always_inline int gms_map_file(__u64 ino, unsigned long *iova, unsigned long start,
					unsigned long length, unsigned int flags, int ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_IOMMUFD_MAP_FILE, 0, ino, ret);

	if (!e)
		return 0;
	e->args.map.iova = gms_read_ulong(iova);
	e->args.map.start = start;
	e->args.map.length = length;
	e->args.map.flags = flags;
	gms_submit(e);
	return 0;
}

/*
 * iopt_map_file_pages(ictx, iopt, *iova, file, start, length, iommu_prot,
 * flags), v6.13 to v6.18; the catalog's iommufd.map_file row picks this
 * program or the next by the kernel's signature.
 */
SEC("fexit")
int BPF_PROG(iommufd_map_file, void *ictx, void *iopt, unsigned long *iova, struct file *file,
	     unsigned long start, unsigned long length, int iommu_prot, unsigned int flags, int ret)
{
	return gms_map_file(gms_file_ino(file), iova, start, length, flags, ret);
}

/*
 * Since v6.19 (iommufd's dma-buf series, commit 217725f0b2c3 "iommufd: Have
 * iopt_map_file_pages convert the fd to a file"): iopt_map_file_pages(ictx,
 * iopt, *iova, fd, ...) takes the fd, a memfd or a dma-buf, still open in
 * the caller.
 */
SEC("fexit")
int BPF_PROG(iommufd_map_file_fd, void *ictx, void *iopt, unsigned long *iova, int fd,
	     unsigned long start, unsigned long length, int iommu_prot, unsigned int flags, int ret)
{
	return gms_map_file(gms_fd_ino(fd), iova, start, length, flags, ret);
}

/* iopt_unmap_iova_range(iopt, start, last, *unmapped): -EBUSY while an access pins it. */
SEC("fexit")
int BPF_PROG(iommufd_unmap, void *iopt, unsigned long start, unsigned long last,
	     unsigned long *unmapped, int ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_IOMMUFD_UNMAP, 0, 0, ret);

	if (!e)
		return 0;
	e->args.range.start = start;
	e->args.range.end = last + 1;
	gms_submit(e);
	return 0;
}

/*
 * pfn_reader_user_pin(user, pages, start_index, last_index) pins user
 * pages of an IOAS mapping; -ENOMEM past RLIMIT_MEMLOCK comes from
 * pfn_reader_user_update_pinned() inside it.
 */
SEC("fexit")
int BPF_PROG(iommufd_pin, void *user, struct iopt_pages___local *pages, unsigned long start_index,
	     unsigned long last_index, int ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_IOMMUFD_PIN, 0, 0, ret);

	if (!e)
		return 0;
	e->args.pin.vaddr = (__u64)BPF_CORE_READ(pages, uptr) + (start_index << 12);
	e->args.pin.npages = last_index - start_index + 1;
	gms_submit(e);
	return 0;
}

/* iommufd_access_pin_pages(access, iova, length, out_pages, flags): in-kernel users (mdev). */
SEC("fexit")
int BPF_PROG(iommufd_access_pin, void *access, unsigned long iova, unsigned long length,
	     void *out_pages, unsigned int flags, int ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_IOMMUFD_ACCESS_PIN, 0, 0, ret);

	if (!e)
		return 0;
	e->args.pin.iova = iova;
	e->args.pin.npages = (length + 4095) >> 12;
	gms_submit(e);
	return 0;
}
