// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * VFIO type1 pins and VFIO PCI dma-bufs, precise tier.  vfio_iommu_type1
 * and vfio-pci-core are modules whose types are not in vmlinux.h: the
 * fields read are declared here, CO-RE relocates them against the
 * module's BTF at load.
 */
#include "common.bpf.h"

/* drivers/vfio/vfio_iommu_type1.c */
struct vfio_dma___local {
	dma_addr_t iova;
	unsigned long vaddr;
	size_t size;
	bool lock_cap;
} __attribute__((preserve_access_index));

static __always_inline void gms_pin_args(struct gms_call_event *e, struct vfio_dma___local *dma,
					 __u64 vaddr, __u64 iova, __u64 npages)
{
	e->args.pin.vaddr = vaddr;
	e->args.pin.iova = iova;
	e->args.pin.npages = npages;
	e->args.pin.lock_cap = dma->lock_cap;
}

/*
 * vfio_pin_pages_remote(dma, vaddr, npage, *pfn_base, limit, batch) pins
 * one physically contiguous run from vaddr and returns its length, or
 * -ENOMEM past RLIMIT_MEMLOCK (unless dma->lock_cap).  VFIO_IOMMU_MAP_DMA
 * calls it until the mapping is pinned.
 */
SEC("fexit")
int BPF_PROG(vfio_pin, struct vfio_dma___local *dma, unsigned long vaddr, long npage,
	     unsigned long *pfn_base, unsigned long limit, void *batch, long ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_VFIO_PIN, 0, 0, ret);

	if (!e)
		return 0;
	gms_pin_args(e, dma, vaddr, dma->iova + (vaddr - dma->vaddr), npage);
	if (ret > 0)
		bpf_probe_read_kernel(&e->args.pin.pfn, sizeof(e->args.pin.pfn), pfn_base);
	gms_submit(e);
	return 0;
}

/* vfio_unpin_pages_remote(dma, iova, pfn, npage, do_accounting): pages unlocked. */
SEC("fexit")
int BPF_PROG(vfio_unpin, struct vfio_dma___local *dma, dma_addr_t iova, unsigned long pfn,
	     long npage, bool do_accounting, long ret)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_VFIO_UNPIN, 0, 0, ret);

	if (!e)
		return 0;
	gms_pin_args(e, dma, dma->vaddr + (iova - dma->iova), iova, npage);
	e->args.pin.pfn = pfn;
	gms_submit(e);
	return 0;
}

/*
 * VFIO PCI dma-buf export (drivers/vfio/pci/vfio_pci_dmabuf.c, about
 * v6.19): vfio_pci_core_feature_dma_buf(vdev, flags, arg, argsz) returns
 * the dma-buf fd.
 */
SEC("fexit")
int BPF_PROG(vfio_dma_buf_export, void *vdev, __u32 flags, void *arg, size_t argsz, int ret)
{
	__u64 ino = ret >= 0 ? gms_fd_ino(ret) : 0;
	struct gms_call_event *e = gms_call_begin(GMS_FN_VFIO_DMA_BUF_EXPORT, 0, ino, ret);

	if (!e)
		return 0;
	e->args.dma_buf.flags = flags;
	e->args.dma_buf.dev = (__u64)vdev;
	gms_submit(e);
	return 0;
}

/* vfio_pci_dma_buf_move(vdev, revoked): BAR access revoked or restored. */
SEC("fentry")
int BPF_PROG(vfio_dma_buf_move, void *vdev, bool revoked)
{
	struct gms_call_event *e = gms_call_begin(GMS_FN_VFIO_DMA_BUF_MOVE, 0, 0, 0);

	if (!e)
		return 0;
	e->args.dma_buf.flags = revoked;
	e->args.dma_buf.dev = (__u64)vdev;
	gms_submit(e);
	return 0;
}
