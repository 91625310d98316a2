// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Enforcement's index of DMA mappings and declared ranges: a radix tree
 * of fan-out 64 over page numbers per (owner, tree), stored sparsely in
 * idx_nodes, and each mapping's start in idx_starts. How it works, and
 * why it is this, is in bpf/veto.bpf.h. Its entry points are global
 * functions, each verified once on its own.
 */
#include "veto.bpf.h"

#define GMS_ENOSPC 28
#define GMS_EEXIST 17
#define GMS_IDX_FAN_BITS 6
#define GMS_IDX_FAN_MASK (GMS_IDX_FAN - 1)
/* users of a node being deleted: no update may start on it */
#define GMS_IDX_DEAD (1ull << 62)
/* tries to find a live node while another CPU deletes it */
#define GMS_IDX_PIN_TRIES 4
/* an unmap of up to this many pages that is not one mapping looks each start page up */
#define GMS_IDX_UNMAP_PROBE_PAGES 512

/* what a new node starts from: too big for the stack */
struct gms_idx_node idx_zero_node = {};

static __always_inline __u32 gms_idx_levels(__u32 bits)
{
	__u32 levels = (bits + GMS_IDX_FAN_BITS - 1) / GMS_IDX_FAN_BITS;

	return levels > GMS_IDX_MAX_LEVELS ? GMS_IDX_MAX_LEVELS : levels;
}

/*
 * A node of an update, held: created if missing, its users counted, so
 * that no remover deletes it under us. NULL if the map is full or the
 * node keeps dying under us (another CPU between marking it dead and
 * deleting it).
 */
static __always_inline struct gms_idx_node *gms_idx_hold(struct gms_idx_key *key)
{
	struct gms_idx_node *n;
	int i;

	for (i = 0; i < GMS_IDX_PIN_TRIES; i++) {
		n = bpf_map_lookup_elem(&idx_nodes, key);
		if (!n) {
			/* zero-filled by the kernel: a new node counts nothing */
			bpf_map_update_elem(&idx_nodes, key, &idx_zero_node, BPF_NOEXIST);
			n = bpf_map_lookup_elem(&idx_nodes, key);
			if (!n)
				return NULL;
		}
		if (__sync_fetch_and_add(&n->users, 1) < GMS_IDX_DEAD)
			return n;
	}
	return NULL;
}

/*
 * Lets go of a node; the last user marks it dead (an update that held it
 * meanwhile keeps it) and deletes it. Memory is freed after an RCU grace
 * period (BPF_F_NO_PREALLOC), so a racing holder sees the mark.
 */
static __always_inline void gms_idx_release(struct gms_idx_key *key, struct gms_idx_node *n)
{
	if (__sync_fetch_and_add(&n->users, -1) != 1)
		return;
	if (__sync_val_compare_and_swap(&n->users, 0, GMS_IDX_DEAD) == 0)
		bpf_map_delete_elem(&idx_nodes, key);
}

/* One update of a range [lo, hi) in one tree: delta 1 adds it, -1 removes it. */
struct gms_idx_update {
	struct gms_idx_key key;
	__u64 lo, hi;		/* pages */
	__u64 l, h;		/* the children of this level not yet placed: [l, h) */
	__u64 id;
	__s32 delta;
	__u32 stop_level;	/* a rollback stops here: the level where the add failed */
	bool below_lo;		/* pieces placed below the path to lo */
	bool below_hi;		/* and to hi - 1 */
	bool failed;
};

/* What one update does at one node: two runs of pieces and two children holding pieces below. */
struct gms_idx_work {
	__u64 from[2], to[2];	/* pieces: children [from, to), in the level's child numbers */
	__s64 mark[2];		/* a child (0..63) with pieces of this mapping below it, or -1 */
};

/*
 * Counts a mapping (delta, id) at children [from, to) of n as pieces.
 * Global, as gms_idx_first_sub: the verifier walks its 64 steps once, not
 * at every call site and state.
 */
__noinline int gms_idx_count(struct gms_idx_node *n, __u64 from, __u64 to, int delta, __u64 id)
{
	__u32 i, c;

	if (!n)
		return 0;
	for (i = 0; i < GMS_IDX_FAN; i++) {
		if (from + i >= to)
			break;
		c = (from + i) & GMS_IDX_FAN_MASK;
		__sync_fetch_and_add(&n->here[c], delta);
		__sync_fetch_and_add(&n->sub[c], delta);
		__sync_fetch_and_xor(&n->ids[c], id);
	}
	return 0;
}

/*
 * One node of one level: hold it (add), count, let it go (remove). An
 * add that cannot hold its node changes nothing there.
 */
static __always_inline bool gms_idx_node_update(struct gms_idx_update *u, __u64 prefix, struct gms_idx_work *w)
{
	struct gms_idx_node *n;
	int k;

	u->key.prefix = prefix;
	if (u->delta > 0) {
		n = gms_idx_hold(&u->key);
		if (!n)
			return false;
	} else {
		n = bpf_map_lookup_elem(&idx_nodes, &u->key);
		if (!n)
			return true;	/* not there: nothing of it to remove */
	}
	for (k = 0; k < 2; k++) {
		gms_idx_count(n, w->from[k], w->to[k], u->delta, u->id);
		if (w->mark[k] >= 0)
			__sync_fetch_and_add(&n->sub[w->mark[k] & GMS_IDX_FAN_MASK], u->delta);
	}
	if (u->delta < 0)
		gms_idx_release(&u->key, n);
	return true;
}

/*
 * A level's pieces, the classic iterative decomposition by 64s: of the
 * children [*l, *h) still to place, the left run [l, *ha) goes up to the
 * next multiple of 64 and the right run [*lb, h) starts at the last one;
 * [*l, *h) becomes what is left for the level above (empty: 0, 0).
 */
static __always_inline void gms_idx_split(__u64 *l, __u64 *h, __u64 *ha, __u64 *lb)
{
	__u64 lo = *l, hi = *h;

	*ha = lo;
	*lb = hi;
	if (lo >= hi)
		return;
	if (lo & GMS_IDX_FAN_MASK)
		*ha = (lo | GMS_IDX_FAN_MASK) + 1;
	if (*ha > hi)
		*ha = hi;
	*lb = hi & ~(__u64)GMS_IDX_FAN_MASK;
	if (*lb < *ha)
		*lb = *ha;
	*l = *ha >> GMS_IDX_FAN_BITS;
	*h = *lb >> GMS_IDX_FAN_BITS;
	if (*ha >= *lb)
		*l = *h = 0;
}

/*
 * One level, bottom up. The range's pieces at a level (the classic
 * iterative decomposition, by 64s) lie in at most two nodes, those on the
 * paths to lo and to hi - 1, and on each path the child over pieces of
 * lower levels counts them in `sub`: a level is at most two nodes.
 */
static long gms_idx_update_level(__u64 level, void *data)
{
	struct gms_idx_update *u = data;
	__u32 shift = level * GMS_IDX_FAN_BITS;
	__u64 pa = u->lo >> shift, pb = (u->hi - 1) >> shift;
	__u64 l = u->l, h = u->h, ha, lb;
	struct gms_idx_work a = {.mark = {-1, -1}}, b = {.mark = {-1, -1}};
	bool left, right;

	if (u->delta < 0 && level == u->stop_level)
		return 1;
	gms_idx_split(&u->l, &u->h, &ha, &lb);
	left = l < ha;
	right = lb < h;
	a.from[0] = l;
	a.to[0] = ha;
	a.mark[0] = u->below_lo ? (__s64)(pa & GMS_IDX_FAN_MASK) : -1;
	b.from[0] = lb;
	b.to[0] = h;
	b.mark[0] = u->below_hi ? (__s64)(pb & GMS_IDX_FAN_MASK) : -1;
	u->key.level = level;
	if ((pa >> GMS_IDX_FAN_BITS) == (pb >> GMS_IDX_FAN_BITS)) {
		/* one node for both paths */
		a.from[1] = b.from[0];
		a.to[1] = b.to[0];
		if (b.mark[0] != a.mark[0])
			a.mark[1] = b.mark[0];
		if ((left || right || a.mark[0] >= 0 || a.mark[1] >= 0) &&
		    !gms_idx_node_update(u, pa >> GMS_IDX_FAN_BITS, &a))
			goto failed;
	} else {
		if ((left || a.mark[0] >= 0) && !gms_idx_node_update(u, pa >> GMS_IDX_FAN_BITS, &a))
			goto failed;
		if ((right || b.mark[0] >= 0) && !gms_idx_node_update(u, pb >> GMS_IDX_FAN_BITS, &b)) {
			/* undo this level's first node; the rollback does the levels below */
			if (left || a.mark[0] >= 0) {
				u->delta = -1;
				gms_idx_node_update(u, pa >> GMS_IDX_FAN_BITS, &a);
				u->delta = 1;
			}
			goto failed;
		}
	}
	u->below_lo |= left;
	u->below_hi |= right;
	return 0;
failed:
	u->failed = true;
	u->stop_level = level;
	return 1;
}

/* The range of a mapping (user pages of owner mm) or a declared range (gfns of owner tgid) in its tree. */
static __always_inline void gms_idx_range_of(struct gms_idx_range *r, __u64 owner, const struct gms_pin *p, __u64 id)
{
	bool declared = p->kind == GMS_PIN_DECLARED;

	r->owner = owner;
	r->tree = declared ? GMS_TREE_DECLARED : GMS_TREE_VADDR;
	r->bits = declared ? GMS_IDX_GFN_BITS : GMS_IDX_VADDR_BITS;
	r->lo = declared ? p->vaddr : p->vaddr >> 12;
	r->hi = declared ? p->end : (p->end + 4095) >> 12;
	r->id = id;
}

/*
 * Adds (delta 1) or removes (-1) mapping p (id) of owner; an add that
 * fails is undone: 0 or -ENOSPC. The range is worked out here, not by the
 * callers: their frames and this one sit under the level callback's, and
 * 6.12 allows 512 bytes for the whole chain.
 */
__noinline int gms_idx_update(__u64 owner, struct gms_pin *p, __u64 id, int delta)
{
	struct gms_idx_update u = {.stop_level = ~0u};
	struct gms_idx_range r;
	__u32 levels;

	if (!p)
		return -GMS_ENOSPC;
	gms_idx_range_of(&r, owner, p, id);
	levels = gms_idx_levels(r.bits);
	if (r.lo >= r.hi || r.hi > (1ull << (levels * GMS_IDX_FAN_BITS)))
		return -GMS_ENOSPC;
	u.key.owner = r.owner;
	u.key.tree = r.tree;
	u.lo = u.l = r.lo;
	u.hi = u.h = r.hi;
	u.id = id;
	u.delta = delta;
	bpf_loop(levels, gms_idx_update_level, &u, 0);
	if (!u.failed)
		return 0;
	/* replay the levels below the failure as a removal */
	u.delta = -1;
	u.l = u.lo;
	u.h = u.hi;
	u.below_lo = u.below_hi = false;
	u.failed = false;
	bpf_loop(levels, gms_idx_update_level, &u, 0);
	return -GMS_ENOSPC;
}

/*
 * A query: is any stored range over pages [a, b)? Stored pieces and the
 * query's pieces are aligned blocks, and two aligned blocks meet only if
 * one holds the other: a stored piece inside a query piece is in that
 * child's `sub`; one holding it is a child on the path to a or b - 1 with
 * `here`. So a query reads the same two paths as an update.
 */
struct gms_idx_query {
	struct gms_idx_key key;
	__u64 a, b;
	__u64 l, h;
	__u32 found_level;	/* a child with pieces at or below it: (found_level, found) */
	__u64 found;		/* then, in a scan of the starts, the mapping found (its id) */
	bool below_a, below_b;
	bool hit;		/* found holds a piece itself (here) */
	bool inside;		/* found has pieces below it: descend */
};

/* The first child in [from, to) of n with pieces at or below it, or -1. */
__noinline __s64 gms_idx_first_sub(struct gms_idx_node *n, __u64 from, __u64 to)
{
	__u32 i;

	if (!n)
		return -1;
	for (i = 0; i < GMS_IDX_FAN; i++) {
		if (from + i >= to)
			break;
		if (n->sub[(from + i) & GMS_IDX_FAN_MASK])
			return from + i;
	}
	return -1;
}

static long gms_idx_query_level(__u64 level, void *data)
{
	struct gms_idx_query *q = data;
	__u32 shift = level * GMS_IDX_FAN_BITS;
	__u64 pa = q->a >> shift, pb = (q->b - 1) >> shift;
	__u64 l = q->l, h = q->h, ha, lb;
	struct gms_idx_node *na, *nb;
	__s64 c;

	gms_idx_split(&q->l, &q->h, &ha, &lb);
	q->key.level = level;
	q->key.prefix = pa >> GMS_IDX_FAN_BITS;
	na = bpf_map_lookup_elem(&idx_nodes, &q->key);
	nb = na;
	if ((pb >> GMS_IDX_FAN_BITS) != (pa >> GMS_IDX_FAN_BITS)) {
		q->key.prefix = pb >> GMS_IDX_FAN_BITS;
		nb = bpf_map_lookup_elem(&idx_nodes, &q->key);
	}
	q->found_level = level;
	/* a stored piece holding query pieces of lower levels */
	if (na && q->below_a && na->here[pa & GMS_IDX_FAN_MASK]) {
		q->found = pa;
		q->hit = true;
		return 1;
	}
	if (nb && q->below_b && nb->here[pb & GMS_IDX_FAN_MASK]) {
		q->found = pb;
		q->hit = true;
		return 1;
	}
	/* stored pieces inside (or equal to) this level's query pieces */
	c = na ? gms_idx_first_sub(na, l, ha) : -1;
	if (c < 0 && nb)
		c = gms_idx_first_sub(nb, lb, h);
	if (c >= 0) {
		q->found = c;
		q->inside = true;
		return 1;
	}
	q->below_a |= l < ha;
	q->below_b |= lb < h;
	return 0;
}

/* Down from a child with pieces at or below it to one holding a piece. */
static long gms_idx_query_descend(__u64 i, void *data)
{
	struct gms_idx_query *q = data;
	struct gms_idx_node *n;
	__s64 c;

	q->key.level = q->found_level;
	q->key.prefix = q->found >> GMS_IDX_FAN_BITS;
	n = bpf_map_lookup_elem(&idx_nodes, &q->key);
	if (!n || !n->sub[q->found & GMS_IDX_FAN_MASK])
		return 1;	/* removed under us */
	if (n->here[q->found & GMS_IDX_FAN_MASK]) {
		q->hit = true;
		return 1;
	}
	if (!q->found_level)
		return 1;
	q->found_level--;
	q->key.level = q->found_level;
	q->key.prefix = q->found;
	n = bpf_map_lookup_elem(&idx_nodes, &q->key);
	c = n ? gms_idx_first_sub(n, 0, GMS_IDX_FAN) : -1;
	if (c < 0)
		return 1;
	q->found = (q->found << GMS_IDX_FAN_BITS) | c;
	return 0;
}

/*
 * Looking for a mapping of the query's owner over [a, b) among the
 * starts, where a piece holds several: the query itself is the scan's
 * state (`found` becomes the answer), so that no frame of its own sits
 * under find's (6.12 allows 512 bytes for the ioctl entry's whole call
 * chain, callbacks included).
 */
static long gms_idx_scan_one(struct bpf_map *map, struct gms_idx_key *key, __u64 *id, struct gms_idx_query *q)
{
	bool declared = q->key.tree == GMS_TREE_DECLARED;
	struct gms_pin *m;
	__u64 lo, hi;

	if (key->owner != q->key.owner || ((key->tree >> 56 & 0xf) == GMS_PIN_DECLARED) != declared)
		return 0;
	m = bpf_map_lookup_elem(&idx_maps, id);
	if (!m)
		return 0;
	lo = declared ? m->vaddr : m->vaddr >> 12;
	hi = declared ? m->end : (m->end + 4095) >> 12;
	if (lo >= q->b || hi <= q->a)
		return 0;
	q->found = *id;
	return 1;
}

/* Is anything stored over r's [lo, hi)? 1 with r->id (0 if unnamed), or 0. */
__noinline int gms_idx_find(struct gms_idx_range *r)
{
	struct gms_idx_query q = {};
	struct gms_idx_node *n;
	__u32 levels;
	__u64 c;

	if (!r)
		return 0;
	r->id = 0;
	levels = gms_idx_levels(r->bits);
	q.key.owner = r->owner;
	q.key.tree = r->tree;
	q.a = q.l = r->lo;
	q.b = q.h = r->hi > (1ull << (levels * GMS_IDX_FAN_BITS)) ? 1ull << (levels * GMS_IDX_FAN_BITS) : r->hi;
	if (q.a >= q.b)
		return 0;
	bpf_loop(levels, gms_idx_query_level, &q, 0);
	if (q.inside)
		bpf_loop(GMS_IDX_MAX_LEVELS + 1, gms_idx_query_descend, &q, 0);
	if (!q.hit)
		return 0;
	/* the piece's ids are the xor of its mappings': one mapping's id when here is 1 */
	q.key.level = q.found_level;
	q.key.prefix = q.found >> GMS_IDX_FAN_BITS;
	c = q.found & GMS_IDX_FAN_MASK;
	n = bpf_map_lookup_elem(&idx_nodes, &q.key);
	if (n && n->here[c] == 1 && bpf_map_lookup_elem(&idx_maps, &n->ids[c])) {
		r->id = n->ids[c];
		return 1;
	}
	q.found = 0;
	bpf_for_each_map_elem(&idx_starts, gms_idx_scan_one, &q, 0);
	r->id = q.found;
	return 1;
}

static __always_inline struct gms_idx_state *gms_idx_state_of(__u64 owner, bool create)
{
	struct gms_idx_state *st = bpf_map_lookup_elem(&idx_state, &owner);
	struct gms_idx_state zero = {};

	if (st || !create)
		return st;
	bpf_map_update_elem(&idx_state, &owner, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&idx_state, &owner);
}

/* The key of a mapping's start in idx_starts: (owner, kind << 56 | ioas << 24 | fd, iova page). */
static __always_inline void gms_idx_start_key(struct gms_idx_key *k, __u64 owner, const struct gms_pin *p, __u64 iova)
{
	k->owner = owner;
	k->tree = GMS_TREE_IOVA | (__u64)(p->kind & 0xf) << 56 | (__u64)(p->ioas_id & 0xffffffff) << 24 | p->fd;
	k->prefix = iova >> 12;
	k->level = 0;
	k->pad = 0;
}

static __always_inline __u64 gms_idx_bytes(const struct gms_pin *m)
{
	return m->kind == GMS_PIN_DECLARED ? (m->end - m->vaddr) << 12 : m->end - m->vaddr;
}

/*
 * Removes the mapping whose start is at key (owner, start tree, page):
 * its bytes, or 0 if another CPU removes it (whoever deletes the start
 * owns the removal) or it is gone.
 */
__noinline __u64 gms_idx_remove_start(struct gms_idx_key *key)
{
	struct gms_idx_state *st;
	struct gms_pin *m;
	__u64 id, *idp, owner, bytes;

	if (!key)
		return 0;
	idp = bpf_map_lookup_elem(&idx_starts, key);
	if (!idp)
		return 0;
	id = *idp;
	owner = key->owner;
	m = bpf_map_lookup_elem(&idx_maps, &id);
	if (!m || bpf_map_delete_elem(&idx_starts, key))
		return 0;
	bytes = gms_idx_bytes(m);
	gms_idx_update(owner, m, id, -1);
	bpf_map_delete_elem(&idx_maps, &id);
	st = gms_idx_state_of(owner, false);
	if (st && st->mappings)
		__sync_fetch_and_add(&st->mappings, -1);
	return bytes ? bytes : 1;
}

/* The process (tgid) of an owner, so that its exit finds the owner's entries (mm 0: declared only). */
static __always_inline void gms_idx_note_tgid(__u32 tgid, __u64 mm)
{
	__u64 *known = bpf_map_lookup_elem(&idx_tgids, &tgid);

	if (!known || (mm && *known != mm))
		bpf_map_update_elem(&idx_tgids, &tgid, &mm, BPF_ANY);
}

/*
 * Indexes a mapping (user addresses of owner mm) or a declared range (gfns
 * of owner tgid): 0, or -ENOSPC when it is counted as not indexed.
 */
__noinline int gms_idx_add(__u64 owner, struct gms_pin *p)
{
	struct gms_idx_key start = {};
	struct gms_idx_state *st;
	__u64 id, *next;
	__u32 zero = 0, max;
	bool declared;

	if (!p)
		return -GMS_ENOSPC;
	declared = p->kind == GMS_PIN_DECLARED;
	max = declared ? targ_idx_max_declared : targ_idx_max_mappings;
	st = gms_idx_state_of(owner, true);
	if (!st)
		goto not_indexed;
	st->tgid = p->tgid;
	if (!declared)
		__builtin_memcpy(st->comm, p->comm, sizeof(st->comm));
	gms_idx_note_tgid(p->tgid, declared ? 0 : owner);
	gms_idx_start_key(&start, owner, p, p->iova);
	/* undeclare names a declared range by its first gfn: one range per first gfn */
	if (declared && bpf_map_lookup_elem(&idx_starts, &start))
		return -GMS_EEXIST;
	/*
	 * A DMA mapping's start already there is a mapping whose unmap the
	 * index missed (the kernel refuses overlapping iovas in one container
	 * or IOAS): it goes.
	 */
	if (!declared)
		gms_idx_remove_start(&start);
	if (st->mappings >= max)
		goto not_indexed;
	next = bpf_map_lookup_elem(&idx_next_id, &zero);
	if (!next)
		goto not_indexed;
	id = __sync_fetch_and_add(next, 1) + 1;
	if (bpf_map_update_elem(&idx_maps, &id, p, BPF_NOEXIST))
		goto not_indexed;
	if (gms_idx_update(owner, p, id, 1)) {
		bpf_map_delete_elem(&idx_maps, &id);
		goto not_indexed;
	}
	if (bpf_map_update_elem(&idx_starts, &start, &id, BPF_NOEXIST)) {
		gms_idx_update(owner, p, id, -1);
		bpf_map_delete_elem(&idx_maps, &id);
		goto not_indexed;
	}
	__sync_fetch_and_add(&st->mappings, 1);
	return 0;
not_indexed:
	gms_count_drop(GMS_DROP_PIN_INDEX_FULL);
	if (st) {
		__sync_fetch_and_add(&st->not_indexed, 1);
		__sync_fetch_and_add(&st->unindexed_bytes, gms_idx_bytes(p));
	}
	return -GMS_ENOSPC;
}

/* Removing the mappings that start in one start tree's pages [lo, hi) (all of it: lo 0, hi ~0). */
struct gms_idx_unmap {
	struct gms_idx_key key;
	__u64 lo, hi;
	__u64 bytes;		/* removed */
	__u32 removed;
};

static __always_inline void gms_idx_unmap_account(struct gms_idx_unmap *w, __u64 bytes)
{
	if (!bytes)
		return;
	w->bytes += bytes;
	w->removed++;
}

/* Each page of a short range, looked up. */
static long gms_idx_unmap_probe(__u64 i, void *data)
{
	struct gms_idx_unmap *w = data;

	w->key.prefix = w->lo + i;
	if (w->key.prefix >= w->hi)
		return 1;
	gms_idx_unmap_account(w, gms_idx_remove_start(&w->key));
	return 0;
}

/* A long range or all: every start of the owner's tree, in the map. */
static long gms_idx_unmap_scan(struct bpf_map *map, struct gms_idx_key *key, __u64 *id, struct gms_idx_unmap *w)
{
	if (key->owner != w->key.owner || key->tree != w->key.tree || key->prefix < w->lo || key->prefix >= w->hi)
		return 0;
	w->key.prefix = key->prefix;
	gms_idx_unmap_account(w, gms_idx_remove_start(&w->key));
	return 0;
}

/*
 * The mappings of (kind, fd, ioas) that start in iova [iova, iova + bytes)
 * go (VFIO and iommufd refuse to split a mapping, so starting there is
 * being inside); all of them with `all`. `unmapped`: the bytes the kernel
 * says it unmapped; what the index did not hold of them lifts fail-closed.
 */
__noinline int gms_idx_remove(__u64 owner, struct gms_pin *key, __u64 bytes, int all, __u64 unmapped)
{
	struct gms_idx_unmap w = {};
	struct gms_idx_state *st;
	struct gms_pin *m;
	__u64 *id;

	if (!key)
		return 0;
	gms_idx_start_key(&w.key, owner, key, key->iova);
	w.lo = key->iova >> 12;
	w.hi = (key->iova + bytes + 4095) >> 12;
	if (all) {
		w.lo = 0;
		w.hi = ~0ull;
	} else if (w.hi <= w.lo) {
		return 0;
	}
	/* the common unmap: exactly one mapping, found by its start (no other starts inside it) */
	id = all ? NULL : bpf_map_lookup_elem(&idx_starts, &w.key);
	m = id ? bpf_map_lookup_elem(&idx_maps, id) : NULL;
	if (m && w.hi - w.lo <= (gms_idx_bytes(m) + 4095) >> 12)
		gms_idx_unmap_account(&w, gms_idx_remove_start(&w.key));
	else if (!all && w.hi - w.lo <= GMS_IDX_UNMAP_PROBE_PAGES)
		bpf_loop(GMS_IDX_UNMAP_PROBE_PAGES, gms_idx_unmap_probe, &w, 0);
	else
		bpf_for_each_map_elem(&idx_starts, gms_idx_unmap_scan, &w, 0);
	st = gms_idx_state_of(owner, false);
	if (st && st->unindexed_bytes && unmapped > w.bytes) {
		__u64 rest = unmapped - w.bytes;

		/* clamped: bytes mapped before enforcement started are in `unmapped` too */
		st->unindexed_bytes = st->unindexed_bytes > rest ? st->unindexed_bytes - rest : 0;
	}
	return w.removed;
}

/* An exiting process's entries: its DMA mappings (owner mm) and the ranges declared for it (owner tgid). */
struct gms_idx_exit {
	__u64 mm, tgid;
	struct gms_idx_key key;
};

static long gms_idx_exit_scan(struct bpf_map *map, struct gms_idx_key *key, __u64 *id, struct gms_idx_exit *x)
{
	if (!key->owner || (key->owner != x->mm && key->owner != x->tgid))
		return 0;
	x->key = *key;
	gms_idx_remove_start(&x->key);
	return 0;
}

/*
 * The index's entries leave with their process: a later process reusing
 * the pid (declared ranges) or the mm_struct's address must not inherit
 * them. Only processes the index holds (idx_tgids) cost more than a
 * lookup, once their last thread exits (do_exit() drops signal->live
 * before this tracepoint).
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(enforce_process_exit, struct task_struct *task)
{
	struct gms_idx_exit x = {};
	__u32 tgid;
	__u64 *mm;

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	mm = bpf_map_lookup_elem(&idx_tgids, &tgid);
	if (!mm)
		return 0;
	x.mm = *mm;
	x.tgid = tgid;
	bpf_for_each_map_elem(&idx_starts, gms_idx_exit_scan, &x, 0);
	if (x.mm)
		bpf_map_delete_elem(&idx_state, &x.mm);
	bpf_map_delete_elem(&idx_state, &x.tgid);
	bpf_map_delete_elem(&idx_tgids, &tgid);
	return 0;
}
