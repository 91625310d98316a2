// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* dma-buf creation and move notification (drivers/dma-buf/dma-buf.c), precise tier. */
#include "common.bpf.h"

/* dma_buf_export(exp_info) returns the dma-buf or an ERR_PTR. */
SEC("fexit")
int BPF_PROG(dmabuf_export, const struct dma_buf_export_info *exp_info, struct dma_buf *ret)
{
	long err = (unsigned long)ret >= (unsigned long)-4095 ? (long)ret : 0;
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_DMA_BUF_EXPORT, 0, err || !ret ? 0 : ret->file->f_inode->i_ino, err);
	if (!e)
		return 0;
	e->args.dma_buf.size = exp_info->size;
	e->args.dma_buf.flags = exp_info->flags;
	bpf_probe_read_kernel_str(e->args.dma_buf.exp_name, sizeof(e->args.dma_buf.exp_name),
				  exp_info->exp_name);
	gms_submit(e);
	return 0;
}

/* dma_buf_move_notify(dmabuf), renamed dma_buf_invalidate_mappings (2026 series). */
SEC("fentry")
int BPF_PROG(dmabuf_move_notify, struct dma_buf *dmabuf)
{
	struct gms_call_event *e;

	e = gms_call_begin(GMS_FN_DMA_BUF_MOVE_NOTIFY, 0, dmabuf->file->f_inode->i_ino, 0);
	if (!e)
		return 0;
	e->args.dma_buf.size = dmabuf->size;
	bpf_probe_read_kernel_str(e->args.dma_buf.exp_name, sizeof(e->args.dma_buf.exp_name),
				  dmabuf->exp_name);
	gms_submit(e);
	return 0;
}
