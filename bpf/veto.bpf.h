/*
 * Enforcement's decision, shared by lsm/file_ioctl (bpf/lsm.bpf.c) and,
 * where the BPF LSM cannot run, the observe-only sys_enter_ioctl path
 * (bpf/syscalls.bpf.c): is a conversion to private over memory a device
 * has mapped for DMA, or over a range an operator declared?
 *
 * The index: per process (struct mm_struct *), the user pages of its
 * VFIO and iommufd DMA mappings, kept by the map/unmap ioctls (VFIO type1
 * pins the pages at map time and unpins them at unmap); per process
 * (tgid), the gfns an operator declared. Each is a radix tree of fan-out
 * 64 over page numbers, stored sparsely in the hash map idx_nodes under
 * (owner, tree, level, prefix = page >> 6 * (level + 1)); a node holds,
 * per child, `here` (mappings of which the child is a piece), `sub`
 * (pieces at or below it) and the xor of the ids in `here`:
 *  - a range [lo, hi) is cut into pieces, aligned blocks of 64^k pages,
 *    as the classic iterative decomposition does by 64s: at each level at
 *    most two runs of children, in the nodes on the paths to lo and to
 *    hi - 1, whose children over lower pieces count them in `sub`;
 *  - aligned blocks meet only if one holds the other, so a query [a, b)
 *    meets a stored range if and only if one of its pieces has `sub` (a
 *    stored piece inside) or a path child above one of its pieces has
 *    `here` (a stored piece holding it): it reads the same nodes.
 * Insert, delete and query read or write at most two nodes per level: 6
 * levels for user addresses, 7 for gfns; a one-page mapping is one node
 * per level. The node's id xor names the mapping when one holds the
 * piece; when several do, a scan of the owner's starts names one.
 * idx_starts finds a mapping by (owner, container or IOAS, iova page):
 * an unmap of exactly one mapping is one lookup, a short range looks up
 * each page, a long one (or unmap-all, or a process's exit) scans the
 * starts.
 *
 * Concurrency: counts change by atomic adds, which commute, so a map and
 * an unmap on two CPUs leave the same counts in any order. A node is
 * deleted by the update that drops its last user, after marking it dead
 * (compare-and-swap of 0), and an add counts itself a user before it
 * touches a node, retrying past a dead one: no update writes into a node
 * that is gone.
 *
 * Why this and not bpf_rbtree or an arena: bpf_rbtree has no augmented
 * maximum, so an overlap query over intervals is a linear scan of the
 * ones starting before b; arenas need 6.9 and their verifier support
 * moved through 6.12-6.13, and their pages are mapped at load time. A
 * hash map and bpf_loop() load on 6.12's verifier (the VM lane) and on
 * this machine's 6.18 alike, in LSM, tracepoint and syscall programs.
 * A binary segment tree (this index before) cost O(address bits) map
 * operations, 36 to 52 levels of several each: 15-25 us per mapping.
 *
 * A decision finds the memslots of the converted gfns by descending
 * KVM's gfn_tree (as search_memslots() does) and walks only those in the
 * range, querying the index once for each: its cost depends on the
 * memslots in the range and the tree bits, not on how many memslots the
 * VM has or how many mappings the process has.
 *
 * Never silently uncovered: a mapping the index cannot hold (the limit
 * per process, a full map) is counted in the owner's gms_idx_state, and
 * while its bytes are mapped every conversion to private of that
 * process's VMs is refused (GMS_VETO_UNINDEXED), unless targ_fail_open.
 */
#ifndef GMS_VETO_BPF_H
#define GMS_VETO_BPF_H

#include "common.bpf.h"
#include "files.bpf.h"
#include "ioctls.h"

#define GMS_ATTR_PRIVATE GMS_KVM_MEMORY_ATTRIBUTE_PRIVATE
#define GMS_RB_DEPTH 48			/* an rbtree of 2^24 memslots is shallower */

/* A scalar, not a BTF pointer: the index's global functions take it as a key. */
static __always_inline __u64 gms_current_mm(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 mm = 0;

	bpf_probe_read_kernel(&mm, sizeof(mm), &task->mm);
	return mm;
}

/*
 * The index (bpf/veto.bpf.c). Global functions: the verifier checks each
 * once, on its own, instead of once per call site and state, which the
 * decision's nested loops would not fit in (1M instructions).
 */
struct gms_idx_range {
	__u64 owner, tree;
	__u64 lo, hi;		/* pages [lo, hi) (gfns in GMS_TREE_DECLARED) */
	__u64 id;		/* update: the mapping; find: out, the one found (0: unnamed) */
	__u32 bits;		/* of the tree's page numbers */
	__u32 pad;
};
/* Is anything stored over r's [lo, hi)? 1 with r->id, or 0. */
int gms_idx_find(struct gms_idx_range *r);
/* Removes the mapping starting at key (idx_starts): its bytes, or 0. */
__u64 gms_idx_remove_start(struct gms_idx_key *key);
/* Adds (delta 1) or removes (-1) mapping p (id) of owner; an add that fails is undone: 0 or -ENOSPC. */
int gms_idx_update(__u64 owner, struct gms_pin *p, __u64 id, int delta);
/* Indexes a DMA mapping (owner mm) or declared range (owner tgid): 0, or -ENOSPC, counted as not indexed. */
int gms_idx_add(__u64 owner, struct gms_pin *p);
/* Removes key's (kind, fd, ioas) mappings starting in iova [iova, iova + bytes), or all: how many. */
int gms_idx_remove(__u64 owner, struct gms_pin *key, __u64 bytes, int all, __u64 unmapped);

/*
 * Keeps the index from a VFIO or iommufd map/unmap ioctl that succeeded;
 * an unmap's args hold what the kernel wrote back, asked_bytes what was asked.
 */
static __always_inline void gms_pin_index_ioctl(const struct gms_ioctl_event *e, __u64 asked_bytes)
{
	__u64 mm = gms_current_mm();
	struct gms_pin p = {.tgid = e->hdr.tgid, .fd = e->fd, .since_ns = bpf_ktime_get_ns()};

	if (e->ret != 0)
		return;
	__builtin_memcpy(p.comm, e->hdr.comm, sizeof(p.comm));
	switch (e->op) {
	case GMS_IOC_VFIO_MAP_DMA:
		p.kind = GMS_PIN_VFIO;
		p.vaddr = e->args.vfio_dma.vaddr;
		p.end = p.vaddr + e->args.vfio_dma.size;
		p.iova = e->args.vfio_dma.iova;
		gms_idx_add(mm, &p);
		break;
	case GMS_IOC_VFIO_UNMAP_DMA:
		p.kind = GMS_PIN_VFIO;
		p.iova = e->args.vfio_dma.iova;
		gms_idx_remove(mm, &p, asked_bytes, e->args.vfio_dma.flags & GMS_VFIO_DMA_UNMAP_FLAG_ALL,
			       e->args.vfio_dma.size);
		break;
	case GMS_IOC_IOAS_MAP:
		p.kind = GMS_PIN_IOMMUFD;
		p.ioas_id = e->args.ioas.ioas_id;
		p.vaddr = e->args.ioas.start;
		p.end = p.vaddr + e->args.ioas.length;
		p.iova = e->args.ioas.iova;
		gms_idx_add(mm, &p);
		break;
	case GMS_IOC_IOAS_UNMAP:
		p.kind = GMS_PIN_IOMMUFD;
		p.ioas_id = e->args.ioas.ioas_id;
		p.iova = e->args.ioas.iova;
		/* iova 0 and length 0 unmap the whole IOAS (iommufd's iopt_unmap_all) */
		gms_idx_remove(mm, &p, asked_bytes, e->args.ioas.iova == 0 && asked_bytes == 0, e->args.ioas.length);
		break;
	}
}

/* ---- the decision ---- */

/* The user's argument of a conversion ioctl (offsets of the UAPI structs). */
struct gms_conversion {
	__u64 start;		/* gpa or gmem offset */
	__u64 size;
	__u64 attributes;
};

struct gms_veto_walk {
	struct file *gmem;	/* gmem-fd conversion: its file; NULL: VM fd, in gfns */
	__u64 first, end;	/* gfns or gmem indexes */
	__u64 mm;		/* of the VM's process: owner of its DMA mappings */
	__u64 tgid;		/* the converting process: owner of declared ranges */
	struct rb_node *node;	/* next memslot in gfn order */
	__u64 node_off;		/* offsetof(struct kvm_memory_slot, gfn_node[idx]) */
	__u64 slots;		/* memslots looked at */
	bool done;		/* no memslot left in the range */
	/* the first overlap found */
	bool hit;
	__u64 hit_first_gfn, hit_end_gfn;
	__u64 id;
	/*
	 * A query, here rather than on a callback's stack: 6.12 sums the
	 * frames of a call chain (rounded to 16 bytes) against 512. The
	 * user's argument is read into the same bytes, before any query.
	 */
	union {
		struct gms_idx_range r;
		struct gms_conversion c;
	};
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
	__u64 node_off, gfn;
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

/*
 * One step down gfn_tree towards the first memslot that ends after
 * w->gfn, as search_memslots() descends (the slots do not overlap, so
 * they are in the same order by base_gfn and by end).
 */
static long gms_rb_lower_bound(__u64 i, void *data)
{
	struct gms_rb_walk *w = data;
	struct rb_node *n = w->n;
	struct kvm_memory_slot *slot;
	__u64 base;

	if (!n)
		return 1;
	slot = (void *)n - w->node_off;
	base = BPF_CORE_READ(slot, base_gfn);
	if (w->gfn < base + BPF_CORE_READ(slot, npages)) {
		w->found = n;
		if (w->gfn >= base)
			return 1;
		w->n = BPF_CORE_READ(n, rb_left);
	} else {
		w->n = BPF_CORE_READ(n, rb_right);
	}
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
 * bpf_loop() callback, so that the verifier checks the body once: one
 * memslot, the gfns of the conversion in it, against the DMA mappings of
 * the VM's process (through the slot's user addresses) and, for a gmem
 * fd, the declared ranges.
 */
static long gms_veto_slot(__u64 index, void *data)
{
	/*
	 * Intermediate values live in w (its hit_* and r fields), not on this
	 * frame: 6.12 sums the frames of lsm_file_ioctl, this callback and
	 * gms_idx_find, each rounded up to 32 bytes, against 512.
	 */
	struct gms_veto_walk *w = data;
	struct gms_idx_range *r = &w->r;
	struct kvm_memory_slot *slot;
	struct gms_pin *m;
	__u64 base, npages, uaddr;

	if (!w->node) {
		w->done = true;
		return 1;
	}
	w->slots++;
	slot = (void *)w->node - w->node_off;
	w->node = gms_rb_next(w->node);
	base = BPF_CORE_READ(slot, base_gfn);
	npages = BPF_CORE_READ(slot, npages);
	if (w->gmem) {
		__u64 pgoff = BPF_CORE_READ(slot, gmem.pgoff);

		if (BPF_CORE_READ(slot, gmem.file) != w->gmem ||
		    !gms_overlap(w->first, w->end, pgoff, pgoff + npages, &r->lo, &r->hi))
			return 0;
		/* the slot's gfns in the conversion */
		w->hit_first_gfn = base + r->lo - pgoff;
		w->hit_end_gfn = base + r->hi - pgoff;
		r->owner = w->tgid;
		r->tree = GMS_TREE_DECLARED;
		r->bits = GMS_IDX_GFN_BITS;
		r->lo = w->hit_first_gfn;
		r->hi = w->hit_end_gfn;
		if (gms_idx_find(r)) {
			m = r->id ? bpf_map_lookup_elem(&idx_maps, &r->id) : NULL;
			w->id = r->id;
			w->hit = true;
			if (m)
				gms_overlap(w->hit_first_gfn, w->hit_end_gfn, m->vaddr, m->end, &w->hit_first_gfn,
					    &w->hit_end_gfn);
			return 1;
		}
	} else {
		if (base >= w->end) {
			w->done = true;
			return 1;	/* gfn order: no later slot overlaps */
		}
		if (!gms_overlap(w->first, w->end, base, base + npages, &w->hit_first_gfn, &w->hit_end_gfn))
			return 0;
	}
	/* KVM keeps userspace_addr page aligned: user pages are uaddr >> 12 + (gfn - base) */
	uaddr = BPF_CORE_READ(slot, userspace_addr);
	r->owner = w->mm;
	r->tree = GMS_TREE_VADDR;
	r->bits = GMS_IDX_VADDR_BITS;
	r->lo = (uaddr >> 12) + (w->hit_first_gfn - base);
	r->hi = (uaddr >> 12) + (w->hit_end_gfn - base);
	if (!w->mm || !gms_idx_find(r))
		return 0;
	w->id = r->id;
	w->hit = true;
	/* the gfns of the slot that the mapping found covers */
	m = r->id ? bpf_map_lookup_elem(&idx_maps, &r->id) : NULL;
	if (m && gms_overlap(r->lo << 12, r->hi << 12, m->vaddr, m->end, &r->lo, &r->hi)) {
		w->hit_first_gfn = base + ((r->lo - uaddr) >> 12);
		w->hit_end_gfn = base + ((r->hi - uaddr + 4095) >> 12);
	}
	return 1;
}

/*
 * The first memslot to look at, in address space 0 (struct
 * kvm_memslots.gfn_tree): for a VM fd the first one ending after the
 * first gfn, found by descent; for a gmem fd (offsets, not gfns) the
 * leftmost.
 */
static __noinline void gms_veto_first_slot(struct gms_veto_walk *w, struct kvm *kvm)
{
	struct kvm_memslots *slots = BPF_CORE_READ(kvm, memslots[0]);
	struct gms_rb_walk rb = {};
	int idx;

	w->node = NULL;
	if (!slots)
		return;
	idx = BPF_CORE_READ(slots, node_idx) & 1;
	w->node_off = bpf_core_field_offset(struct kvm_memory_slot, gfn_node) +
		      idx * bpf_core_type_size(struct rb_node);
	if (w->gmem) {
		w->node = gms_rb_leftmost(BPF_CORE_READ(slots, gfn_tree.rb_node));
		return;
	}
	rb.n = BPF_CORE_READ(slots, gfn_tree.rb_node);
	rb.node_off = w->node_off;
	rb.gfn = w->first;
	bpf_loop(GMS_RB_DEPTH, gms_rb_lower_bound, &rb, 0);
	w->node = rb.found;
}

/*
 * Decides one ioctl: whether to refuse it (enforce mode only). A veto or
 * would-veto is sent as a record.
 */
/* The commands a decision looks at: every other ioctl leaves before any lookup. */
static __always_inline bool gms_veto_cmd(__u32 cmd)
{
	return cmd == GMS_KVM_SET_MEMORY_ATTRIBUTES || cmd == GMS_KVM_SET_MEMORY_ATTRIBUTES2 ||
	       cmd == GMS_KVM_GMEM_CONVERT_PRIVATE;
}

static __always_inline bool gms_veto_decide(struct file *file, __u32 cmd, unsigned long arg)
{
	struct gms_veto_walk w = {};
	struct gms_conversion *c = &w.c;
	struct gms_veto_state *state;
	struct gms_idx_state *st;
	struct gms_veto_event *e;
	struct gms_pin *m;
	struct kvm *kvm;
	__u32 zero = 0, not_indexed = 0;
	__u8 why = GMS_VETO_OVERLAP;
	__u16 kind;

	if (!gms_veto_cmd(cmd))
		return 0;
	kind = gms_fd_kind(file);
	if (cmd == GMS_KVM_SET_MEMORY_ATTRIBUTES ? kind != GMS_FD_VM : kind != GMS_FD_GMEM)
		return 0;
	/* CONVERT's struct has no attributes: it is a conversion to private by its name */
	if (bpf_probe_read_user(c, cmd == GMS_KVM_GMEM_CONVERT_PRIVATE ? 16 : sizeof(*c), (void *)arg))
		return 0;	/* the kernel will fail to read it too */
	if (cmd == GMS_KVM_GMEM_CONVERT_PRIVATE)
		c->attributes = GMS_ATTR_PRIVATE;
	if (!(c->attributes & GMS_ATTR_PRIVATE) || !c->size)
		return 0;	/* to shared: the device keeps reaching shared memory */
	if (kind == GMS_FD_VM) {
		kvm = BPF_CORE_READ(file, private_data);
	} else {
		kvm = gms_gmem_file_kvm(file);
		w.gmem = file;
	}
	if (!kvm)
		return 0;
	w.first = c->start >> 12;
	w.end = (c->start + c->size + 4095) >> 12;
	w.mm = (__u64)BPF_CORE_READ(kvm, mm);
	w.tgid = bpf_get_current_pid_tgid() >> 32;
	state = bpf_map_lookup_elem(&veto_state, &zero);
	st = w.mm ? bpf_map_lookup_elem(&idx_state, &w.mm) : NULL;
	if (st && st->unindexed_bytes) {
		not_indexed = st->not_indexed > 0xffffffff ? 0xffffffff : st->not_indexed;
		if (!targ_fail_open) {
			why = GMS_VETO_UNINDEXED;
			goto veto;
		}
		if (state)
			__sync_fetch_and_add(&state->passed_unindexed, 1);
	}
	/* a VM fd names gfns: declared ranges need no memslot */
	w.r.owner = w.tgid;
	w.r.tree = GMS_TREE_DECLARED;
	w.r.bits = GMS_IDX_GFN_BITS;
	w.r.lo = w.first;
	w.r.hi = w.end;
	if (!w.gmem && gms_idx_find(&w.r)) {
		w.id = w.r.id;
		w.hit = true;
		w.hit_first_gfn = w.first;
		w.hit_end_gfn = w.end;
		m = w.id ? bpf_map_lookup_elem(&idx_maps, &w.id) : NULL;
		if (m)
			gms_overlap(w.first, w.end, m->vaddr, m->end, &w.hit_first_gfn, &w.hit_end_gfn);
	}
	if (!w.hit) {
		gms_veto_first_slot(&w, kvm);
		bpf_loop(GMS_MAX_SLOTS_WALKED, gms_veto_slot, &w, 0);
		if (!w.hit && !w.done) {
			why = GMS_VETO_TOO_MANY_SLOTS;
			goto veto;
		}
	}
	if (!w.hit)
		return 0;
veto:
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
		m = w.id ? bpf_map_lookup_elem(&idx_maps, &w.id) : NULL;
		if (m)
			e->pin = *m;
		else
			__builtin_memset(&e->pin, 0, sizeof(e->pin));
		e->cmd = cmd;
		e->err = targ_veto_mode == GMS_VETO_ENFORCE ? -targ_veto_ret : 0;
		e->mode = targ_veto_mode;
		e->why = why;
		e->pad = 0;
		e->not_indexed = not_indexed;
		/* a veto is worth waking the reader for */
		bpf_ringbuf_submit(e, 0);
	}
	return targ_veto_mode == GMS_VETO_ENFORCE;
}

#endif /* GMS_VETO_BPF_H */
