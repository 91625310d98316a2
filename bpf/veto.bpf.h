/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Enforcement's decision, shared by lsm/file_ioctl (bpf/lsm.bpf.c) and,
 * where the BPF LSM cannot run, the observe-only sys_enter_ioctl path
 * (bpf/syscalls.bpf.c): is a conversion to private over memory a device
 * has mapped for DMA, or over a range an operator declared?
 *
 * The index: per process (struct mm_struct *), the user address ranges
 * of its VFIO and iommufd DMA mappings, kept by the map/unmap ioctls
 * (VFIO type1 pins the pages at map time and unpins them at unmap).
 * A conversion names gfns (VM fd) or gmem offsets (gmem fd); the VM's
 * memslots, walked in the kernel, turn them into user addresses.
 *
 * Cost of one decision: at most GMS_MAX_SLOTS_WALKED memslots, each
 * compared with at most GMS_MAX_PINS mappings and GMS_MAX_DECLARED
 * declared ranges. It does not depend on the size of the range: 1 GiB
 * and 1 TiB cost the same (tests/bench/veto.cpp measures it).
 */
#ifndef GMS_VETO_BPF_H
#define GMS_VETO_BPF_H

#include "common.bpf.h"
#include "files.bpf.h"
#include "ioctls.h"

#define GMS_ATTR_PRIVATE GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE
#define GMS_RB_DEPTH 48			/* an rbtree of 2^24 memslots is shallower */

static __always_inline struct gms_pin_set *gms_pin_set_of(void *map, void *key, bool create)
{
	struct gms_pin_set *set = bpf_map_lookup_elem(map, key);
	__u32 zero = 0;

	if (set || !create)
		return set;
	set = bpf_map_lookup_elem(&pin_set_zero, &zero);
	if (!set)
		return NULL;
	bpf_map_update_elem(map, key, set, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

static __always_inline __u64 gms_current_mm(void)
{
	return (__u64)bpf_get_current_task_btf()->mm;
}

/* A DMA mapping made by the current process; counted when the index is full. */
static __always_inline void gms_pin_add(__u32 kind, __u32 fd, __u64 vaddr, __u64 bytes, __u64 iova)
{
	__u64 mm = gms_current_mm();
	struct gms_pin_set *set = gms_pin_set_of(&dma_pins, &mm, true);
	struct gms_pin *p;
	__u32 n;

	if (!set)
		return;
	n = set->n;
	if (n >= GMS_MAX_PINS) {
		gms_count_drop(GMS_DROP_PIN_INDEX_FULL);
		return;
	}
	p = &set->pins[n & (GMS_MAX_PINS - 1)];
	p->vaddr = vaddr;
	p->end = vaddr + bytes;
	p->iova = iova;
	p->since_ns = bpf_ktime_get_ns();
	p->tgid = bpf_get_current_pid_tgid() >> 32;
	p->fd = fd;
	p->kind = kind;
	bpf_get_current_comm(p->comm, sizeof(p->comm));
	set->n = n + 1;
}

struct gms_pin_del_walk {
	struct gms_pin_set *set;
	__u32 kind, fd, i;
	__u64 iova, iova_end;
	bool all;
};

/* Entry w->i goes if it is one of the unmapped; the last entry fills its place. */
static long gms_pin_del_one(__u64 step, void *data)
{
	struct gms_pin_del_walk *w = data;
	struct gms_pin_set *set = w->set;
	struct gms_pin *p;

	if (w->i >= set->n)
		return 1;
	p = &set->pins[w->i & (GMS_MAX_PINS - 1)];
	if (p->kind == w->kind && p->fd == w->fd &&
	    (w->all || (p->iova >= w->iova && p->iova + (p->end - p->vaddr) <= w->iova_end))) {
		*p = set->pins[(set->n - 1) & (GMS_MAX_PINS - 1)];
		set->n--;
	} else {
		w->i++;
	}
	return 0;
}

/*
 * The mappings of (kind, fd) inside iova [iova, iova + bytes) go; all of
 * the fd's with `all` (VFIO_DMA_UNMAP_FLAG_ALL).
 */
static __always_inline void gms_pin_del(__u32 kind, __u32 fd, __u64 iova, __u64 bytes, bool all)
{
	__u64 mm = gms_current_mm();
	struct gms_pin_del_walk w = {.kind = kind, .fd = fd, .iova = iova, .iova_end = iova + bytes, .all = all};

	w.set = gms_pin_set_of(&dma_pins, &mm, false);
	if (w.set)
		bpf_loop(GMS_MAX_PINS, gms_pin_del_one, &w, 0);
}

/* Keeps the index from a VFIO or iommufd map/unmap ioctl that succeeded. */
static __always_inline void gms_pin_index_ioctl(const struct gms_ioctl_event *e)
{
	if (e->ret != 0)
		return;
	switch (e->op) {
	case GMS_IOC_VFIO_MAP_DMA:
		gms_pin_add(GMS_PIN_VFIO, e->fd, e->args.vfio_dma.vaddr, e->args.vfio_dma.size, e->args.vfio_dma.iova);
		break;
	case GMS_IOC_VFIO_UNMAP_DMA:
		gms_pin_del(GMS_PIN_VFIO, e->fd, e->args.vfio_dma.iova, e->args.vfio_dma.size,
			    e->args.vfio_dma.flags & GMS_VFIO_DMA_UNMAP_FLAG_ALL);
		break;
	case GMS_IOC_IOAS_MAP:
		gms_pin_add(GMS_PIN_IOMMUFD, e->fd, e->args.ioas.start, e->args.ioas.length, e->args.ioas.iova);
		break;
	case GMS_IOC_IOAS_UNMAP:
		gms_pin_del(GMS_PIN_IOMMUFD, e->fd, e->args.ioas.iova, e->args.ioas.length, e->args.ioas.length == 0);
		break;
	}
}

struct gms_veto_walk {
	struct file *gmem;	/* gmem-fd conversion: its file; NULL: VM fd, in gfns */
	__u64 first, end;	/* gfns or gmem indexes */
	struct gms_pin_set *pins;	/* of the VM's process */
	struct gms_pin_set *declared;	/* of the converting process */
	struct rb_node *node;	/* next memslot in gfn order */
	__u64 node_off;		/* offsetof(struct kvm_memory_slot, gfn_node[idx]) */
	/* the memslot being looked at: gfns [g0, g1) at user addresses [v0, v1) */
	__u64 base, uaddr, g0, g1, v0, v1;
	/* the first overlap found */
	bool hit;
	__u64 hit_first_gfn, hit_end_gfn;
	struct gms_pin pin;
};

/* Overlap of [a0, a1) and [b0, b1), as [*lo, *hi); false if empty. */
static __always_inline bool gms_overlap(__u64 a0, __u64 a1, __u64 b0, __u64 b1, __u64 *lo, __u64 *hi)
{
	*lo = a0 > b0 ? a0 : b0;
	*hi = a1 < b1 ? a1 : b1;
	return *lo < *hi;
}

/* Walking the memslots' rbtree (lib/rbtree.c), one bpf_loop() step at a time. */
struct gms_rb_walk {
	struct rb_node *n;
	struct rb_node *found;
};

/* Down the left edge from w->n. */
static long gms_rb_left(__u64 i, void *data)
{
	struct gms_rb_walk *w = data;
	struct rb_node *n = w->n;	/* a local: CO-RE must not relocate w's own field */
	struct rb_node *left = BPF_CORE_READ(n, rb_left);

	if (!left)
		return 1;
	w->n = left;
	return 0;
}

/* Up from w->n until it is a left child: that parent comes next. */
static long gms_rb_up(__u64 i, void *data)
{
	struct gms_rb_walk *w = data;
	struct rb_node *n = w->n;
	struct rb_node *parent = (struct rb_node *)(BPF_CORE_READ(n, __rb_parent_color) & ~3ul);

	if (!parent || BPF_CORE_READ(parent, rb_right) != n) {
		w->found = parent;
		return 1;
	}
	w->n = parent;
	return 0;
}

static __always_inline struct rb_node *gms_rb_leftmost(struct rb_node *n)
{
	struct gms_rb_walk w = {.n = n};

	if (n)
		bpf_loop(GMS_RB_DEPTH, gms_rb_left, &w, 0);
	return w.n;
}

/* In-order successor: rb_next(). */
static __always_inline struct rb_node *gms_rb_next(struct rb_node *node)
{
	struct rb_node *right = BPF_CORE_READ(node, rb_right);
	struct gms_rb_walk w = {.n = node};

	if (right)
		return gms_rb_leftmost(right);
	bpf_loop(GMS_RB_DEPTH, gms_rb_up, &w, 0);
	return w.found;
}

/*
 * bpf_loop() callbacks, so that the verifier checks each body once
 * instead of every path through nested loops.
 */

/* DMA mapping i of the VM's process against the slot's user addresses. */
static long gms_veto_pin(__u64 i, void *data)
{
	struct gms_veto_walk *w = data;
	struct gms_pin_set *set = w->pins;
	struct gms_pin *p;
	__u64 lo, hi;

	if (!set || i >= set->n)
		return 1;
	p = &set->pins[i & (GMS_MAX_PINS - 1)];
	if (!gms_overlap(w->v0, w->v1, p->vaddr, p->end, &lo, &hi))
		return 0;
	w->hit = true;
	w->hit_first_gfn = w->base + ((lo - w->uaddr) >> 12);
	w->hit_end_gfn = w->base + ((hi - w->uaddr + 4095) >> 12);
	w->pin = *p;
	return 1;
}

/* Declared range i of the converting process against gfns [g0, g1). */
static long gms_veto_declared(__u64 i, void *data)
{
	struct gms_veto_walk *w = data;
	struct gms_pin_set *set = w->declared;
	struct gms_pin *p;
	__u64 lo, hi;

	if (!set || i >= set->n)
		return 1;
	p = &set->pins[i & (GMS_MAX_PINS - 1)];
	if (!gms_overlap(w->g0, w->g1, p->vaddr, p->end, &lo, &hi))
		return 0;
	w->hit = true;
	w->hit_first_gfn = lo;
	w->hit_end_gfn = hi;
	w->pin = *p;
	return 1;
}

/* One memslot: the gfns of the conversion in it, against pins and declared ranges. */
static long gms_veto_slot(__u64 index, void *data)
{
	struct gms_veto_walk *w = data;
	struct kvm_memory_slot *slot;
	__u64 npages, lo, hi;

	if (!w->node || w->hit)
		return 1;
	slot = (void *)w->node - w->node_off;
	w->node = gms_rb_next(w->node);
	w->base = BPF_CORE_READ(slot, base_gfn);
	npages = BPF_CORE_READ(slot, npages);
	if (w->gmem) {
		__u64 pgoff = BPF_CORE_READ(slot, gmem.pgoff);

		if (BPF_CORE_READ(slot, gmem.file) != w->gmem ||
		    !gms_overlap(w->first, w->end, pgoff, pgoff + npages, &lo, &hi))
			return 0;
		w->g0 = w->base + lo - pgoff;
		w->g1 = w->base + hi - pgoff;
	} else {
		if (w->base >= w->end)
			return 1;	/* gfn order: no later slot overlaps */
		if (!gms_overlap(w->first, w->end, w->base, w->base + npages, &w->g0, &w->g1))
			return 0;
	}
	w->uaddr = BPF_CORE_READ(slot, userspace_addr);
	w->v0 = w->uaddr + ((w->g0 - w->base) << 12);
	w->v1 = w->uaddr + ((w->g1 - w->base) << 12);
	bpf_loop(GMS_MAX_PINS, gms_veto_pin, w, 0);
	if (!w->hit && w->gmem)
		bpf_loop(GMS_MAX_DECLARED, gms_veto_declared, w, 0);
	return w->hit;
}

/* The leftmost memslot of the VM's address space 0 (struct kvm_memslots.gfn_tree). */
static __always_inline void gms_veto_first_slot(struct gms_veto_walk *w, struct kvm *kvm)
{
	struct kvm_memslots *slots = BPF_CORE_READ(kvm, memslots[0]);
	int idx;

	w->node = NULL;
	if (!slots)
		return;
	idx = BPF_CORE_READ(slots, node_idx) & 1;
	w->node_off = bpf_core_field_offset(struct kvm_memory_slot, gfn_node) +
		      idx * bpf_core_type_size(struct rb_node);
	w->node = gms_rb_leftmost(BPF_CORE_READ(slots, gfn_tree.rb_node));
}

/* The user's argument of a conversion ioctl (offsets of the UAPI structs). */
struct gms_conversion {
	__u64 start;		/* gpa or gmem offset */
	__u64 size;
	__u64 attributes;
};

/*
 * Decides one ioctl: whether to refuse it (enforce mode only). A veto or
 * would-veto is sent as a record.
 */
static __always_inline bool gms_veto_decide(struct file *file, __u32 cmd, unsigned long arg)
{
	struct gms_veto_walk w = {};
	struct gms_conversion c = {};
	struct gms_veto_state *state;
	struct gms_veto_event *e;
	struct kvm *kvm;
	__u32 zero = 0;
	__u64 mm;
	__u32 tgid;
	__u16 kind;

	if (cmd != GMS_KVM_SET_MEMORY_ATTRIBUTES && cmd != GMS_KVM_SET_MEMORY_ATTRIBUTES2 &&
	    cmd != GMS_KVM_GMEM_CONVERT_PRIVATE)
		return 0;
	kind = gms_fd_kind(file);
	if (cmd == GMS_KVM_SET_MEMORY_ATTRIBUTES ? kind != GMS_FD_VM : kind != GMS_FD_GMEM)
		return 0;
	/* CONVERT's struct has no attributes: it is a conversion to private by its name */
	if (bpf_probe_read_user(&c, cmd == GMS_KVM_GMEM_CONVERT_PRIVATE ? 16 : sizeof(c), (void *)arg))
		return 0;	/* the kernel will fail to read it too */
	if (cmd == GMS_KVM_GMEM_CONVERT_PRIVATE)
		c.attributes = GMS_ATTR_PRIVATE;
	if (!(c.attributes & GMS_ATTR_PRIVATE) || !c.size)
		return 0;	/* to shared: the device keeps reaching shared memory */
	if (kind == GMS_FD_VM) {
		kvm = BPF_CORE_READ(file, private_data);
	} else {
		kvm = gms_gmem_file_kvm(file);
		w.gmem = file;
	}
	if (!kvm)
		return 0;
	w.first = c.start >> 12;
	w.end = (c.start + c.size + 4095) >> 12;
	mm = (__u64)BPF_CORE_READ(kvm, mm);
	tgid = bpf_get_current_pid_tgid() >> 32;
	w.pins = bpf_map_lookup_elem(&dma_pins, &mm);
	w.declared = bpf_map_lookup_elem(&declared, &tgid);
	if (!w.gmem) {
		/* a VM fd names gfns: declared ranges need no memslot */
		w.g0 = w.first;
		w.g1 = w.end;
		bpf_loop(GMS_MAX_DECLARED, gms_veto_declared, &w, 0);
	}
	if (!w.hit) {
		gms_veto_first_slot(&w, kvm);
		bpf_loop(GMS_MAX_SLOTS_WALKED, gms_veto_slot, &w, 0);
	}
	if (!w.hit)
		return 0;
	state = bpf_map_lookup_elem(&veto_state, &zero);
	if (state && targ_veto_mode == GMS_VETO_ENFORCE)
		__sync_fetch_and_add(&state->vetoes, 1);
	else if (state)
		__sync_fetch_and_add(&state->would_veto, 1);
	e = GMS_RESERVE(GMS_EV_VETO, struct gms_veto_event);
	if (e) {
		gms_fill_hdr(&e->hdr, GMS_EV_VETO, sizeof(*e));
		e->vm = (__u64)kvm;
		e->gmem_ino = w.gmem ? BPF_CORE_READ(file, f_inode, i_ino) : 0;
		e->first = w.first;
		e->end = w.end;
		e->hit_first_gfn = w.hit_first_gfn;
		e->hit_end_gfn = w.hit_end_gfn;
		e->pin = w.pin;
		e->cmd = cmd;
		e->err = targ_veto_mode == GMS_VETO_ENFORCE ? -targ_veto_ret : 0;
		e->mode = targ_veto_mode;
		__builtin_memset(e->pad, 0, sizeof(e->pad));
		/* a veto is worth waking the reader for */
		bpf_ringbuf_submit(e, 0);
	}
	return targ_veto_mode == GMS_VETO_ENFORCE;
}

#endif /* GMS_VETO_BPF_H */
