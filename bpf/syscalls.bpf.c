// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The portable tier's syscall decoding: KVM, VFIO and iommufd ioctls,
 * fallocate() and close() on gmem fds.  Enter stashes the decoded
 * argument per thread, exit adds the result and submits, so a record
 * carries the kernel's answer (errno, error_offset written back).
 */
#include "veto.bpf.h"

static __always_inline struct file *gms_fd_file(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || (__u32)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	if (!file)
		return NULL;
	return bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
}

static __always_inline void gms_learn_gmem(__u64 ino, __u64 vm)
{
	__u64 *known;

	if (!ino || !vm)
		return;
	/* an LRU update is several times a lookup: punch storms repeat this */
	known = bpf_map_lookup_elem(&gmem_vm, &ino);
	if (!known || *known != vm)
		bpf_map_update_elem(&gmem_vm, &ino, &vm, BPF_ANY);
}

/*
 * Is the file a gmem file, and of which VM?  gmem inodes live on
 * anon_inodefs, and those seen before are in gmem_vm: the storm's path
 * is a few loads and one lookup.  Inode numbers come from get_next_ino(),
 * reused only after it wraps at 2^32.
 */
static __always_inline bool gms_gmem_file(struct file *file, __u64 *vm)
{
	struct inode *inode;
	__u64 ino, *known;

	if (!file)
		return false;
	inode = file->f_inode;
	if (inode->i_sb->s_dev != targ_gmem_dev)
		return false;
	ino = inode->i_ino;
	known = bpf_map_lookup_elem(&gmem_vm, &ino);
	if (known) {
		*vm = *known;
		return true;
	}
	if (gms_fd_kind(file) != GMS_FD_GMEM)
		return false;
	*vm = gms_file_vm(file, GMS_FD_GMEM, NULL);
	gms_learn_gmem(ino, *vm);
	return true;
}

static __always_inline __u16 gms_ioctl_op(__u32 cmd)
{
	switch (cmd) {
	case GMS_KVM_CREATE_VM:			return GMS_IOC_CREATE_VM;
	case GMS_KVM_CREATE_GUEST_MEMFD:	return GMS_IOC_CREATE_GUEST_MEMFD;
	case GMS_KVM_SET_USER_MEMORY_REGION:	return GMS_IOC_SET_MEMORY_REGION;
	case GMS_KVM_SET_USER_MEMORY_REGION2:	return GMS_IOC_SET_MEMORY_REGION2;
	case GMS_KVM_SET_MEMORY_ATTRIBUTES:	return GMS_IOC_SET_MEMORY_ATTRIBUTES;
	case GMS_KVM_SET_MEMORY_ATTRIBUTES2:	return GMS_IOC_SET_MEMORY_ATTRIBUTES2;
	case GMS_KVM_GMEM_CONVERT_SHARED:	return GMS_IOC_GMEM_CONVERT_SHARED;
	case GMS_KVM_GMEM_CONVERT_PRIVATE:	return GMS_IOC_GMEM_CONVERT_PRIVATE;
	case GMS_VFIO_IOMMU_MAP_DMA:		return GMS_IOC_VFIO_MAP_DMA;
	case GMS_VFIO_IOMMU_UNMAP_DMA:		return GMS_IOC_VFIO_UNMAP_DMA;
	case GMS_VFIO_DEVICE_FEATURE:		return GMS_IOC_VFIO_DMA_BUF;
	case GMS_IOMMU_IOAS_MAP:		return GMS_IOC_IOAS_MAP;
	case GMS_IOMMU_IOAS_MAP_FILE:		return GMS_IOC_IOAS_MAP_FILE;
	case GMS_IOMMU_IOAS_UNMAP:		return GMS_IOC_IOAS_UNMAP;
	}
	return 0;
}

/* UAPI argument layouts, as the kernel reads them from user memory. */
struct gms_u_region2 {
	__u32 slot, flags;
	__u64 gpa, size, uaddr, gmem_offset;
	__u32 gmem_fd, pad;
};
struct gms_u_attrs { __u64 start, size, attributes, flags, error_offset; };
struct gms_u_convert { __u64 offset, size, error_offset; };
struct gms_u_ioas_map { __u32 size, flags, ioas_id; __s32 fd; __u64 start, length, iova; };
struct gms_u_ioas_unmap { __u32 size, ioas_id; __u64 iova, length; };
struct gms_u_dma_buf {
	__u32 argsz, flags;
	__u32 region_index, open_flags, dmabuf_flags, nr_ranges;
	__u64 offset, length;
};

/*
 * Reads the argument struct; false leaves GMS_F_ARGS_UNREAD for the
 * consumer. A function of its own: its copies of the user's structs are
 * then not in the ioctl entry's frame, under which the enforcement
 * index's calls sit (6.12 allows 512 bytes for a whole call chain).
 */
static __noinline bool gms_decode_args(struct gms_ioctl_event *e, __u16 op, const void *uarg)
{
	union gms_ioctl_args *a = &e->args;
	struct gms_u_region2 r = {};
	struct gms_u_convert c = {};
	struct gms_u_ioas_map m = {};
	struct gms_u_ioas_unmap u = {};
	struct gms_u_dma_buf d = {};
	long err = 0;

	switch (op) {
	case GMS_IOC_CREATE_VM:
		a->create_vm.type = (__u64)uarg;
		return true;
	case GMS_IOC_CREATE_GUEST_MEMFD:
		return !bpf_probe_read_user(&a->create_gmem, 16, uarg);
	case GMS_IOC_SET_MEMORY_REGION:
	case GMS_IOC_SET_MEMORY_REGION2:
		err = bpf_probe_read_user(&r, op == GMS_IOC_SET_MEMORY_REGION ? 32 : sizeof(r), uarg);
		a->region.slot = r.slot;
		a->region.flags = r.flags;
		a->region.gpa = r.gpa;
		a->region.size = r.size;
		a->region.uaddr = r.uaddr;
		a->region.gmem_offset = r.gmem_offset;
		a->region.gmem_fd = r.gmem_fd;
		return !err;
	case GMS_IOC_SET_MEMORY_ATTRIBUTES:
		return !bpf_probe_read_user(&a->attrs, 32, uarg);
	case GMS_IOC_SET_MEMORY_ATTRIBUTES2:
		return !bpf_probe_read_user(&a->attrs, sizeof(a->attrs), uarg);
	case GMS_IOC_GMEM_CONVERT_SHARED:
	case GMS_IOC_GMEM_CONVERT_PRIVATE:
		err = bpf_probe_read_user(&c, sizeof(c), uarg);
		a->attrs.start = c.offset;
		a->attrs.size = c.size;
		return !err;
	case GMS_IOC_VFIO_MAP_DMA:
		return !bpf_probe_read_user(&a->vfio_dma, sizeof(a->vfio_dma), uarg);
	case GMS_IOC_VFIO_UNMAP_DMA:
		/* struct vfio_iommu_type1_dma_unmap has no vaddr */
		err = bpf_probe_read_user(&a->vfio_dma, 8, uarg);
		err |= bpf_probe_read_user(&a->vfio_dma.iova, 16, uarg + 8);
		return !err;
	case GMS_IOC_IOAS_MAP:
	case GMS_IOC_IOAS_MAP_FILE:
		err = bpf_probe_read_user(&m, sizeof(m), uarg);
		a->ioas.flags = m.flags;
		a->ioas.ioas_id = m.ioas_id;
		a->ioas.fd = op == GMS_IOC_IOAS_MAP_FILE ? m.fd : -1;
		a->ioas.start = m.start;
		a->ioas.length = m.length;
		a->ioas.iova = m.iova;
		return !err;
	case GMS_IOC_IOAS_UNMAP:
		err = bpf_probe_read_user(&u, sizeof(u), uarg);
		a->ioas.ioas_id = u.ioas_id;
		a->ioas.fd = -1;
		a->ioas.iova = u.iova;
		a->ioas.length = u.length;
		return !err;
	case GMS_IOC_VFIO_DMA_BUF:
		err = bpf_probe_read_user(&d, sizeof(d), uarg);
		a->dma_buf.argsz = d.argsz;
		a->dma_buf.flags = d.flags;
		a->dma_buf.region_index = d.region_index;
		a->dma_buf.nr_ranges = d.nr_ranges;
		a->dma_buf.offset = d.offset;
		a->dma_buf.length = d.length;
		return !err;
	}
	return true;
}

/*
 * Every ioctl of every process passes here, KVM_RUN once per exit of every
 * VM: the cmd is tested against the ioctls this session decodes
 * (targ_ioctl_ops; KVM_RUN is never one, see gms_run_vcpu()) before the
 * process filter, the fd or any map.
 */
SEC("tp/syscalls/sys_enter_ioctl")
int syscalls_ioctl_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 cmd = (__u32)ctx->args[1];
	const void *uarg = (const void *)ctx->args[2];
	int fd = (int)ctx->args[0];
	struct gms_inflight *in;
	struct gms_ioctl_event *e;
	struct file *file;
	__u16 op;

	op = gms_ioctl_op(cmd);
	if (!(targ_ioctl_ops & (1u << op)) || !gms_task_selected())
		return 0;
	file = gms_fd_file(fd);
	in = gms_inflight_enter(op);
	if (!in)
		return 0;
	in->fd_kind = gms_fd_kind(file);
	in->vcpu_id = 0;
	in->vm = gms_file_vm(file, in->fd_kind, &in->vcpu_id);
	in->uarg = (__u64)uarg;
	e = &in->ioctl;
	__builtin_memset(e, 0, sizeof(*e));
	gms_fill_hdr(&e->hdr, GMS_EV_IOCTL, sizeof(*e));
	e->vm = in->vm;
	e->fd = fd;
	e->cmd = cmd;
	e->op = op;
	e->fd_kind = in->fd_kind;
	if (in->fd_kind == GMS_FD_GMEM) {
		e->obj = gms_file_ino(file);
		gms_learn_gmem(e->obj, in->vm);
	}
	if (op == GMS_IOC_VFIO_DMA_BUF) {
		__u32 flags = 0;

		bpf_probe_read_user(&flags, sizeof(flags), uarg + 4);
		if ((flags & GMS_VFIO_DEVICE_FEATURE_MASK) != GMS_VFIO_DEVICE_FEATURE_DMA_BUF) {
			in->op = 0;
			return 0;
		}
	}
	if (targ_veto_mode == GMS_VETO_AUDIT_SYSCALL && file)
		gms_veto_decide(file, cmd, (unsigned long)uarg);
	if (!gms_decode_args(e, op, uarg))
		e->hdr.flags |= GMS_F_ARGS_UNREAD;
	if (op == GMS_IOC_SET_MEMORY_REGION2 && (e->args.region.flags & GMS_KVM_MEM_GUEST_MEMFD))
		e->args.region.gmem_ino = gms_file_ino(gms_fd_file(e->args.region.gmem_fd));
	return 0;
}

/* What only the exit knows: the new fd's object, values written back. */
static __always_inline void gms_ioctl_result(struct gms_inflight *in, long ret)
{
	struct gms_ioctl_event *e = &in->ioctl;
	const void *uarg = (const void *)in->uarg;
	struct file *file;

	e->ret = ret;
	switch (e->op) {
	case GMS_IOC_CREATE_VM:
		if (ret >= 0) {
			file = gms_fd_file(ret);
			e->args.create_vm.vm = gms_file_vm(file, GMS_FD_VM, NULL);
		}
		break;
	case GMS_IOC_CREATE_GUEST_MEMFD:
		if (ret >= 0) {
			e->args.create_gmem.ino = gms_file_ino(gms_fd_file(ret));
			gms_learn_gmem(e->args.create_gmem.ino, e->vm);
		}
		break;
	case GMS_IOC_VFIO_DMA_BUF:
		if (ret >= 0)
			e->obj = gms_file_ino(gms_fd_file(ret));
		break;
	case GMS_IOC_SET_MEMORY_ATTRIBUTES2:
		bpf_probe_read_user(&e->args.attrs.error_offset, 8, uarg + 32);
		break;
	case GMS_IOC_GMEM_CONVERT_SHARED:
	case GMS_IOC_GMEM_CONVERT_PRIVATE:
		bpf_probe_read_user(&e->args.attrs.error_offset, 8, uarg + 16);
		break;
	case GMS_IOC_VFIO_UNMAP_DMA:
		/* the kernel writes back the size it unmapped */
		in->asked_bytes = e->args.vfio_dma.size;
		bpf_probe_read_user(&e->args.vfio_dma.size, 8, uarg + 16);
		break;
	case GMS_IOC_IOAS_UNMAP:
		/* iommufd writes back the length it unmapped (iommufd_ioas_unmap) */
		in->asked_bytes = e->args.ioas.length;
		bpf_probe_read_user(&e->args.ioas.length, 8, uarg + 16);
		break;
	case GMS_IOC_IOAS_MAP:
	case GMS_IOC_IOAS_MAP_FILE:
		bpf_probe_read_user(&e->args.ioas.iova, 8, uarg + 32);
		break;
	}
}

/*
 * The exit of every ioctl too: the cmd is still in the thread's saved
 * registers (x86-64: si), so one the session neither decodes nor folds a
 * page-cache add into (KVM_RUN, where gmem.bpf.c does) returns before the
 * inflight lookup.
 */
SEC("tp/syscalls/sys_exit_ioctl")
int syscalls_ioctl_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u32 cmd = regs ? (__u32)regs->si : 0;
	struct gms_inflight *in;
	struct gms_ioctl_event *e;

	if (cmd == GMS_KVM_RUN ? !targ_fold_allocs : !(targ_ioctl_ops & (1u << gms_ioctl_op(cmd))))
		return 0;
	in = gms_inflight_current();
	if (!in)
		return 0;
	if (in->op == GMS_OP_RUN)
		gms_flush_alloc(in);
	if (in->op != GMS_OP_RUN && in->op != GMS_OP_FALLOCATE) {
		bool selected = gms_vm_selected(in->vm);

		/* enforcement's index needs the result of every VM's DMA ioctls */
		if (selected || targ_veto_mode)
			gms_ioctl_result(in, ctx->ret);
		if (targ_veto_mode)
			gms_pin_index_ioctl(&in->ioctl, in->asked_bytes);
		e = selected ? GMS_RESERVE(GMS_EV_IOCTL, struct gms_ioctl_event) : NULL;
		if (e) {
			__builtin_memcpy(e, &in->ioctl, sizeof(*e));
			e->dur_ns = bpf_ktime_get_ns() - e->hdr.ts_ns;
			gms_submit(e);
		}
	}
	in->op = 0;
	return 0;
}

SEC("tp/syscalls/sys_enter_fallocate")
int syscalls_fallocate_enter(struct trace_event_raw_sys_enter *ctx)
{
	int fd = (int)ctx->args[0];
	struct gms_fallocate_event *e;
	struct gms_inflight *in;
	struct file *file;
	__u64 vm = 0;

	if (!gms_task_selected())
		return 0;
	file = gms_fd_file(fd);
	if (!gms_gmem_file(file, &vm))
		return 0;
	in = gms_inflight_enter(GMS_OP_FALLOCATE);
	if (!in)
		return 0;
	in->fd_kind = GMS_FD_GMEM;
	in->vm = vm;
	e = &in->falloc;
	/* the header is filled at exit: only the entry time is needed now */
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->vm = in->vm;
	e->gmem_ino = gms_file_ino(file);
	e->fd = fd;
	e->mode = (__u32)ctx->args[1];
	e->offset = ctx->args[2];
	e->len = ctx->args[3];
	return 0;
}

SEC("tp/syscalls/sys_exit_fallocate")
int syscalls_fallocate_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct gms_inflight *in = gms_inflight_current();

	if (in && in->op == GMS_OP_FALLOCATE)
		gms_fallocate_done(in, ctx->ret, 0);
	return 0;
}

/*
 * The portable tier's view of a VM's end: VM, vCPU, stats, KVM device and
 * gmem files each hold a reference on their struct kvm (kvm_get_kvm() at
 * creation), and
 * the release of the last one calls kvm_destroy_vm() before close()
 * returns (__fput runs as task work).  A close of a file's last
 * reference while the VM has no other user is that close.  A reference
 * dropped elsewhere (munmap of a gmem mapping, process exit) is not seen
 * here; a later KVM_CREATE_VM at the same address shows it in the engine.
 */
static __always_inline void gms_vm_end_on_close(struct file *file, __u16 kind, __u64 vm, int fd)
{
	struct gms_call_event *e;

	if (!vm || !gms_file_last_ref(file) ||
	    BPF_CORE_READ((struct kvm *)vm, users_count.refs.counter) != 1)
		return;
	e = gms_call_begin(GMS_FN_KVM_DESTROY_VM, vm, 0, 0);
	if (!e)
		return;
	e->hdr.flags = 0;
	e->args.vm_end.fd = fd;
	e->args.vm_end.fd_kind = kind;
	gms_submit(e);
}

SEC("tp/syscalls/sys_enter_close")
int syscalls_close_enter(struct trace_event_raw_sys_enter *ctx)
{
	int fd = (int)ctx->args[0];
	struct gms_gmem_close_event *e;
	struct file *file;
	__u16 kind;
	__u64 vm = 0;

	if (!gms_task_selected())
		return 0;
	file = gms_fd_file(fd);
	if (!gms_gmem_file(file, &vm)) {
		/* KVM's other files live on anon_inodefs too */
		if (!file || file->f_inode->i_sb->s_dev != targ_anon_dev)
			return 0;
		kind = gms_fd_kind(file);
		if (kind == GMS_FD_OTHER || kind == GMS_FD_KVM)
			return 0;
		vm = gms_file_vm(file, kind, NULL);
		if (gms_vm_selected(vm))
			gms_vm_end_on_close(file, kind, vm, fd);
		return 0;
	}
	if (!gms_vm_selected(vm))
		return 0;
	e = GMS_RESERVE(GMS_EV_GMEM_CLOSE, struct gms_gmem_close_event);
	if (e) {
		gms_fill_hdr(&e->hdr, GMS_EV_GMEM_CLOSE, sizeof(*e));
		e->vm = vm;
		e->gmem_ino = gms_file_ino(file);
		e->fd = fd;
		e->pad = 0;
		gms_submit(e);
	}
	gms_vm_end_on_close(file, GMS_FD_GMEM, vm, fd);
	return 0;
}
