// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The audit: one pass of iter/task_file over every open file of every
 * process.  KVM's files (by dentry name, as the syscall decoding tells
 * them) lead through private_data to struct kvm, its memslots and the
 * gmem files bound to them; VFIO and iommufd fds are named.  Records are
 * written into the iterator's seq_file (bpf/audit.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "audit.h"
#include "files.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* kvm_memslots.id_hash has 1 << 7 buckets (include/linux/kvm_host.h). */
#define GMS_ID_HASH_BUCKETS 128

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GMS_AUDIT_RINGBUF_BYTES);
} audit_slots SEC(".maps");

/* VMs whose memslots this pass sent already: a VM is reached from each of its fds. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);	/* struct kvm * */
	__type(value, __u64);	/* audit_pass */
} audit_walked SEC(".maps");

/* Set by the loader before each pass. */
__u64 audit_pass;

struct gms_slot_walk {
	struct kvm_memslots *slots;
	struct hlist_node *node;	/* next memslot in the bucket, or NULL */
	struct gms_audit_hdr hdr;
	__u64 vm;
	__u64 id_node_off;	/* offset of the id_node the hash links */
	__u32 bucket;		/* next bucket to start */
	__u32 sent;
	__u32 lost;
	__u16 as_id;
};

static __always_inline void gms_fill_audit_hdr(struct gms_audit_hdr *h, __u16 kind, __u16 size,
					       struct task_struct *task, __u32 fd)
{
	h->kind = kind;
	h->size = size;
	h->fd = fd;
	h->tgid = task->tgid;
	h->pad = 0;
	BPF_CORE_READ_STR_INTO(&h->comm, task, comm);
}

/*
 * One step of the walk over the id_hash buckets, each an hlist of
 * memslots linked by id_node[node_idx] (kvm_memslots alternate between
 * two node sets, commit a54d806688fe "KVM: Keep memslots in tree-based
 * structures instead of array-based ones"): start the next bucket, or
 * send one memslot.
 */
static long gms_walk_step(__u32 i, struct gms_slot_walk *w)
{
	struct gms_audit_memslot m = {};
	struct hlist_node *node = w->node;
	/* a local: CO-RE must not relocate gms_slot_walk's own fields */
	struct kvm_memslots *slots = w->slots;
	__u32 bucket = w->bucket;
	struct kvm_memory_slot *slot;
	struct file *gmem;

	if (!node) {
		if (bucket >= GMS_ID_HASH_BUCKETS)
			return 1;
		w->node = BPF_CORE_READ(slots, id_hash[bucket & (GMS_ID_HASH_BUCKETS - 1)].first);
		w->bucket++;
		return 0;
	}
	slot = (void *)node - w->id_node_off;
	m.hdr = w->hdr;
	m.hdr.kind = GMS_AUDIT_MEMSLOT;
	m.hdr.size = sizeof(m);
	m.vm = w->vm;
	m.base_gfn = BPF_CORE_READ(slot, base_gfn);
	m.npages = BPF_CORE_READ(slot, npages);
	m.userspace_addr = BPF_CORE_READ(slot, userspace_addr);
	m.flags = BPF_CORE_READ(slot, flags);
	m.id = BPF_CORE_READ(slot, id);
	m.as_id = w->as_id;
	gmem = BPF_CORE_READ(slot, gmem.file);
	if (gmem) {
		struct inode *inode = BPF_CORE_READ(gmem, f_inode);

		m.gmem_ino = BPF_CORE_READ(inode, i_ino);
		m.gmem_pgoff = BPF_CORE_READ(slot, gmem.pgoff);
		m.gmem_size_bytes = BPF_CORE_READ(inode, i_size);
		m.gmem_resident_pages = BPF_CORE_READ(inode, i_mapping, nrpages);
		m.gmem_flags = gms_gmem_flags(inode);
	} else {
		m.gmem_ino = m.gmem_pgoff = m.gmem_size_bytes = 0;
		m.gmem_resident_pages = m.gmem_flags = 0;
	}
	/* the loader wakes up on its own: it reads after each chunk of the seq_file */
	if (bpf_ringbuf_output(&audit_slots, &m, sizeof(m), BPF_RB_NO_WAKEUP))
		w->lost++;
	else
		w->sent++;
	w->node = BPF_CORE_READ(node, next);
	return 0;
}

/*
 * The active memslots of each address space: kvm->memslots[as_id]
 * points at one of the two __memslots sets; SMM adds a second address
 * space on x86 (KVM_MAX_NR_ADDRESS_SPACES).
 */
static __always_inline void gms_walk_memslots(struct seq_file *seq, struct kvm *kvm,
					      const struct gms_audit_hdr *h)
{
	struct gms_slot_walk w = {.hdr = *h, .vm = (__u64)kvm};
	__u32 spaces = bpf_core_field_size(kvm->memslots) / sizeof(void *);
	struct gms_audit_slot_walk done = {.hdr = *h, .vm = (__u64)kvm};
	struct kvm_memslots *slots;
	int node_idx;

	done.hdr.kind = GMS_AUDIT_SLOT_WALK;
	done.hdr.size = sizeof(done);
	for (__u16 as = 0; as < 2 && as < spaces; as++) {
		slots = BPF_CORE_READ(kvm, memslots[as]);
		if (!slots)
			continue;
		w.slots = slots;
		w.node = NULL;
		w.bucket = w.sent = w.lost = 0;
		node_idx = BPF_CORE_READ(slots, node_idx) & 1;
		w.id_node_off = bpf_core_field_offset(struct kvm_memory_slot, id_node) +
				node_idx * bpf_core_type_size(struct hlist_node);
		w.as_id = as;
		bpf_loop(GMS_AUDIT_WALK_STEPS, gms_walk_step, &w, 0);
		done.as_id = as;
		done.sent = w.sent;
		done.lost = w.lost;
		done.complete = !w.node && w.bucket >= GMS_ID_HASH_BUCKETS;
		bpf_seq_write(seq, &done, sizeof(done));
	}
}

/* The attributes walk's own record of the VMs this pass has walked. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);	/* struct kvm * */
	__type(value, __u64);	/* audit_pass */
} audit_attrs_walked SEC(".maps");

/* Whether this pass reaches the VM for the first time (a VM is reached from each of its fds). */
static __always_inline bool gms_first_visit(void *walked, struct kvm *kvm)
{
	__u64 key = (__u64)kvm, pass = audit_pass, *seen;

	seen = bpf_map_lookup_elem(walked, &key);
	if (seen && *seen == pass)
		return false;
	bpf_map_update_elem(walked, &key, &pass, BPF_ANY);
	return true;
}

/*
 * The walk over a VM's attribute xarray (include/linux/xarray.h): a node
 * entry is a pointer tagged 2, a value entry (v << 1) | 1; a node has 64
 * slots, each covering 1 << shift indexes, and knows its parent and its
 * offset there, so the walk climbs without a stack. Consecutive gfns of
 * one value are one range.
 */
#define GMS_XA_CHUNK 64

struct gms_attr_walk {
	struct xa_node *node;	/* NULL: the head entry alone */
	__u64 base;		/* first index of the node */
	__u64 run_first, run_end, run_attrs;
	struct gms_audit_attrs rec;
	__u32 slot;
	__u32 sent;
	__u32 lost;
	__u32 done;
};

/*
 * The walk's state lives in a map value, not on the stack: the verifier
 * does not track what a map value holds, so it checks gms_attr_step once
 * instead of following each step's values until they repeat (past its
 * complexity limit on 7.3).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gms_attr_walk);
} audit_attr_walk SEC(".maps");

static __always_inline bool gms_xa_is_node(__u64 entry) { return (entry & 3) == 2 && entry > 4096; }

static __always_inline void gms_attr_flush(struct gms_attr_walk *w)
{
	if (!w->run_attrs || w->run_end <= w->run_first)
		return;
	w->rec.first_gfn = w->run_first;
	w->rec.end_gfn = w->run_end;
	w->rec.attributes = w->run_attrs;
	if (bpf_ringbuf_output(&audit_slots, &w->rec, sizeof(w->rec), BPF_RB_NO_WAKEUP))
		w->lost++;
	else
		w->sent++;
}

static __always_inline void gms_attr_add(struct gms_attr_walk *w, __u64 first, __u64 end, __u64 attrs)
{
	if (attrs == w->run_attrs && first == w->run_end) {
		w->run_end = end;
		return;
	}
	gms_attr_flush(w);
	w->run_first = first;
	w->run_end = end;
	w->run_attrs = attrs;
}

static long gms_attr_step(__u32 i, void *unused)
{
	__u32 zero = 0;
	struct gms_attr_walk *w = bpf_map_lookup_elem(&audit_attr_walk, &zero);
	struct xa_node *node;
	__u32 slot;
	__u64 entry = 0, shift;

	if (!w)
		return 1;
	node = w->node;
	slot = w->slot;
	if (!node) {
		w->done = 1;
		return 1;
	}
	shift = BPF_CORE_READ(node, shift);
	if (slot < GMS_XA_CHUNK) {
		bpf_probe_read_kernel(&entry, sizeof(entry),
				      (void *)node + bpf_core_field_offset(struct xa_node, slots) + slot * sizeof(void *));
		if (gms_xa_is_node(entry) && shift) {
			w->node = (void *)(entry - 2);
			w->base += (__u64)slot << (shift & 63);
			w->slot = 0;
			return 0;
		}
		if (entry & 1) {
			__u64 first = w->base + ((__u64)slot << (shift & 63));

			gms_attr_add(w, first, first + (1ull << (shift & 63)), entry >> 1);
		}
		w->slot = slot + 1;
		return 0;
	}
	/* the node is done: on to the next slot of its parent */
	w->slot = BPF_CORE_READ(node, offset) + 1;
	w->node = BPF_CORE_READ(node, parent);
	if (w->node) {
		__u64 span_shift = (shift + 12) & 63;	/* the parent covers 64 << (shift + 6) indexes */

		w->base = shift + 12 >= 64 ? 0 : w->base & ~((1ull << span_shift) - 1);
	}
	return 0;
}

/* The VM's gfn ranges with non-zero attributes, as GMS_AUDIT_ATTRS records. */
static __always_inline void gms_walk_attrs(struct seq_file *seq, struct kvm *kvm, const struct gms_audit_hdr *h)
{
	struct gms_audit_attrs_walk done = {.hdr = *h, .vm = (__u64)kvm};
	struct xarray *xa = gms_kvm_attr_array(kvm);
	__u32 zero = 0;
	struct gms_attr_walk *w = bpf_map_lookup_elem(&audit_attr_walk, &zero);
	__u64 head = 0;

	if (!w)
		return;
	__builtin_memset(w, 0, sizeof(*w));
	done.hdr.kind = GMS_AUDIT_ATTRS_WALK;
	done.hdr.size = sizeof(done);
	w->rec.hdr = *h;
	w->rec.hdr.kind = GMS_AUDIT_ATTRS;
	w->rec.hdr.size = sizeof(w->rec);
	w->rec.vm = (__u64)kvm;
	if (xa) {
		done.present = 1;
		head = (__u64)BPF_CORE_READ(xa, xa_head);
		if (gms_xa_is_node(head)) {
			w->node = (void *)(head - 2);
			/* bpf_loop's context must be on the stack: the step looks the state up */
			bpf_loop(GMS_AUDIT_ATTR_STEPS, gms_attr_step, NULL, 0);
		} else {
			if (head & 1)
				gms_attr_add(w, 0, 1, head >> 1);
			w->done = 1;
		}
		gms_attr_flush(w);
	}
	done.sent = w->sent;
	done.lost = w->lost;
	done.complete = !xa || w->done;
	bpf_seq_write(seq, &done, sizeof(done));
}

/* A VM's counters and its memslots, reached from a VM fd or a gmem fd. */
static __always_inline void gms_audit_kvm(struct seq_file *seq, struct kvm *kvm, struct task_struct *task,
					  __u32 fd, bool vm_fd)
{
	struct gms_audit_vm v = {.vm = (__u64)kvm, .vm_fd = vm_fd};

	gms_fill_audit_hdr(&v.hdr, GMS_AUDIT_VM, sizeof(v), task, fd);
	v.nr_memslot_pages = BPF_CORE_READ(kvm, nr_memslot_pages);
	v.created_vcpus = BPF_CORE_READ(kvm, created_vcpus);
	v.online_vcpus = BPF_CORE_READ(kvm, online_vcpus.counter);
	v.userspace_pid = BPF_CORE_READ(kvm, userspace_pid);
	bpf_seq_write(seq, &v, sizeof(v));
	if (gms_first_visit(&audit_walked, kvm))
		gms_walk_memslots(seq, kvm, &v.hdr);
}

static __always_inline bool gms_name_is(const char *name, const char *want, int n)
{
	for (int i = 0; i < n && i < GMS_AUDIT_NAME_LEN; i++)
		if (name[i] != want[i])
			return false;
	return true;
}

/*
 * VFIO and iommufd are often modules, or absent (as on the project's
 * machines): no type to cast to, so their fds are named from the dentry:
 * /dev/vfio/vfio (container), /dev/vfio/N (group), /dev/vfio/devices/vfioN
 * (device cdev), anon "[vfio-device]" (device from a group), /dev/iommu.
 */
static __always_inline void gms_audit_device(struct seq_file *seq, struct task_struct *task, __u32 fd,
					     struct file *file)
{
	struct gms_audit_device d = {};
	struct dentry *dentry = file->f_path.dentry;

	bpf_probe_read_kernel_str(d.name, sizeof(d.name), dentry->d_name.name);
	bpf_probe_read_kernel_str(d.parent, sizeof(d.parent), BPF_CORE_READ(dentry, d_parent, d_name.name));
	if (gms_name_is(d.name, "[vfio", 5))
		goto named;	/* an anon inode: no device number */
	/* the others are character devices (S_ISCHR) */
	if ((file->f_inode->i_mode & 0170000) != 0020000)
		return;
	if (!gms_name_is(d.name, "vfio", 4) && !gms_name_is(d.parent, "vfio", 5) &&
	    !gms_name_is(d.name, "iommu", 6))
		return;
named:
	gms_fill_audit_hdr(&d.hdr, GMS_AUDIT_DEVICE, sizeof(d), task, fd);
	d.ino = file->f_inode->i_ino;
	d.rdev = file->f_inode->i_rdev;
	bpf_seq_write(seq, &d, sizeof(d));
}

SEC("iter/task_file")
int audit_task_file(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct kvm *kvm;
	__u32 fd = ctx->fd;
	__u32 vcpu_id = 0;
	__u16 kind;

	if (!task || !file)
		return 0;
	kind = gms_fd_kind(file);
	if (kind == GMS_FD_OTHER) {
		gms_audit_device(seq, task, fd, file);
		return 0;
	}
	kvm = (struct kvm *)gms_file_vm(file, kind, &vcpu_id);
	if (!kvm)
		return 0;
	if (kind == GMS_FD_VM) {
		gms_audit_kvm(seq, kvm, task, fd, true);
	} else if (kind == GMS_FD_VCPU) {
		struct gms_audit_vcpu c = {.vm = (__u64)kvm, .vcpu_id = vcpu_id};

		gms_fill_audit_hdr(&c.hdr, GMS_AUDIT_VCPU, sizeof(c), task, fd);
		bpf_seq_write(seq, &c, sizeof(c));
	} else if (kind == GMS_FD_VM_STATS || kind == GMS_FD_VCPU_STATS || kind == GMS_FD_KVM_DEVICE) {
		struct gms_audit_vm_file f = {.vm = (__u64)kvm, .vcpu_id = vcpu_id, .fd_kind = kind};

		gms_fill_audit_hdr(&f.hdr, GMS_AUDIT_VM_FILE, sizeof(f), task, fd);
		bpf_probe_read_kernel_str(f.name, sizeof(f.name), file->f_path.dentry->d_name.name);
		bpf_seq_write(seq, &f, sizeof(f));
	} else if (kind == GMS_FD_GMEM) {
		struct gms_audit_gmem g = {.vm = (__u64)kvm};
		struct inode *inode = file->f_inode;

		gms_fill_audit_hdr(&g.hdr, GMS_AUDIT_GMEM, sizeof(g), task, fd);
		g.ino = inode->i_ino;
		g.size_bytes = inode->i_size;
		g.resident_pages = BPF_CORE_READ(inode, i_mapping, nrpages);
		g.flags = gms_gmem_flags(inode);
		bpf_seq_write(seq, &g, sizeof(g));
		/* the VM may have no VM fd left: it is still read */
		gms_audit_kvm(seq, kvm, task, fd, false);
	}
	return 0;
}

/*
 * A second pass, a program of its own: each VM's shared/private
 * attributes, from its VM fds. Apart from audit_task_file so that the
 * verifier checks the two walks apart (together they pass its
 * complexity limit on 7.3), and so that a kernel refusing this one still
 * gets the rest of the audit.
 */
SEC("iter/task_file")
int audit_attrs(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct gms_audit_hdr h = {};
	struct kvm *kvm;
	__u32 vcpu_id = 0;

	if (!task || !file || gms_fd_kind(file) != GMS_FD_VM)
		return 0;
	kvm = (struct kvm *)gms_file_vm(file, GMS_FD_VM, &vcpu_id);
	if (!kvm || !gms_first_visit(&audit_attrs_walked, kvm))
		return 0;
	gms_fill_audit_hdr(&h, GMS_AUDIT_ATTRS_WALK, 0, task, ctx->fd);
	gms_walk_attrs(ctx->meta->seq, kvm, &h);
	return 0;
}
