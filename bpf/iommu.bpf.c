// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * iommu:map and iommu:unmap, kept only while the thread is inside a
 * VFIO or iommufd map/unmap ioctl: drivers' streaming DMA maps go through
 * the same tracepoints at a far higher rate and say nothing about guests.
 */
#include "common.bpf.h"

static __always_inline bool gms_in_dma_ioctl(void)
{
	struct gms_inflight *in = gms_inflight_current();

	if (!in)
		return false;
	switch (in->op) {
	case GMS_IOC_VFIO_MAP_DMA:
	case GMS_IOC_VFIO_UNMAP_DMA:
	case GMS_IOC_IOAS_MAP:
	case GMS_IOC_IOAS_MAP_FILE:
	case GMS_IOC_IOAS_UNMAP:
		return true;
	}
	return false;
}

static __always_inline int gms_iommu(__u32 type, __u64 iova, __u64 paddr, __u64 size, __u64 unmapped)
{
	struct gms_iommu_event *e;

	if (!gms_in_dma_ioctl())
		return 0;
	e = GMS_RESERVE(type, struct gms_iommu_event);
	if (!e)
		return 0;
	gms_fill_hdr(&e->hdr, type, sizeof(*e));
	e->iova = iova;
	e->paddr = paddr;
	e->size = size;
	e->unmapped = unmapped;
	gms_submit(e);
	return 0;
}

SEC("tp/iommu/map")
int iommu_map(struct trace_event_raw_map *ctx)
{
	return gms_iommu(GMS_EV_IOMMU_MAP, ctx->iova, ctx->paddr, ctx->size, 0);
}

SEC("tp/iommu/unmap")
int iommu_unmap(struct trace_event_raw_unmap *ctx)
{
	return gms_iommu(GMS_EV_IOMMU_UNMAP, ctx->iova, 0, ctx->size, ctx->unmapped_size);
}
