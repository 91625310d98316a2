// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Enforcement's index of DMA mappings and declared ranges: a segment tree
 * over page numbers per (owner, tree), stored sparsely in idx_nodes. How
 * it works, and why it is this and not bpf_rbtree or an arena, is in
 * bpf/veto.bpf.h. Its entry points are global functions, each verified
 * once on its own.
 */
#include "veto.bpf.h"

#define GMS_ENOSPC 28

/* One update of a range [lo, hi) in one tree: delta +1 adds it, -1 removes it. */
struct gms_idx_update {
	struct gms_idx_key key;
	__u64 lo, hi;		/* pages */
	__u64 l, h;		/* the canonical loop's bounds at this level */
	__u64 id;
	__s32 delta;
	__u32 failed_level;	/* insert: where a node could not be made */
	__u32 failed_op;
	__u32 stop_level;	/* rollback: stop before op stop_op of this level */
	__u32 stop_op;
	bool failed;
	/* idx_named keys, here rather than on the callback's stack: 6.12 sums frames rounded to 32 bytes */
	struct gms_idx_key tmp;
};

/*
 * The mappings counted `here` at a node are named in idx_named under the
 * node's key with pad = 0 .. here - 1, packed (a removal moves the last
 * into its place), and idx_named_slot finds a mapping's place: a query
 * names one in one lookup, an update costs two more per canonical node.
 */
/* u->tmp = the key of the mapping's place at this node in idx_named_slot: (mapping, tree, level, prefix). */
static __always_inline void gms_idx_slot_key(struct gms_idx_update *u, __u64 id)
{
	u->tmp = u->key;
	u->tmp.owner = id;
	u->tmp.pad = 0;
}

/* u->tmp = the key of place k at this node in idx_named. */
static __always_inline void gms_idx_named_key(struct gms_idx_update *u, __u32 k)
{
	u->tmp = u->key;
	u->tmp.pad = k;
}

static __always_inline bool gms_idx_name_add(struct gms_idx_update *u, struct gms_idx_node *n)
{
	__u32 k = n->here;

	gms_idx_named_key(u, k);
	if (bpf_map_update_elem(&idx_named, &u->tmp, &u->id, BPF_ANY))
		return false;
	gms_idx_slot_key(u, u->id);
	if (bpf_map_update_elem(&idx_named_slot, &u->tmp, &k, BPF_ANY)) {
		gms_idx_named_key(u, k);
		bpf_map_delete_elem(&idx_named, &u->tmp);
		return false;
	}
	return true;
}

static __always_inline void gms_idx_name_del(struct gms_idx_update *u, struct gms_idx_node *n)
{
	__u32 *k, last = n->here, at;
	__u64 *moved, moved_id;

	gms_idx_slot_key(u, u->id);
	k = bpf_map_lookup_elem(&idx_named_slot, &u->tmp);
	if (!k)
		return;
	at = *k;
	bpf_map_delete_elem(&idx_named_slot, &u->tmp);
	/* n->here was decremented: it is the last place */
	gms_idx_named_key(u, last);
	moved = bpf_map_lookup_elem(&idx_named, &u->tmp);
	if (moved && at != last) {
		moved_id = *moved;
		bpf_map_delete_elem(&idx_named, &u->tmp);
		gms_idx_named_key(u, at);
		bpf_map_update_elem(&idx_named, &u->tmp, &moved_id, BPF_ANY);
		gms_idx_slot_key(u, moved_id);
		bpf_map_update_elem(&idx_named_slot, &u->tmp, &at, BPF_ANY);
		return;
	}
	bpf_map_delete_elem(&idx_named, &u->tmp);
}

/*
 * Counts the range at node (key.level, prefix): `sub`, and `here` if
 * canonical. An add that fails leaves the node as it was.
 */
static __always_inline bool gms_idx_touch(struct gms_idx_update *u, __u64 prefix, bool canonical)
{
	struct gms_idx_node *n, zero = {};

	u->key.prefix = prefix;
	u->key.pad = 0;
	n = bpf_map_lookup_elem(&idx_nodes, &u->key);
	if (u->delta < 0) {
		if (!n)
			return true;
		if (canonical && n->here) {
			n->here--;
			gms_idx_name_del(u, n);
		}
		if (__sync_fetch_and_add(&n->sub, -1) == 1)
			bpf_map_delete_elem(&idx_nodes, &u->key);
		return true;
	}
	if (!n) {
		bpf_map_update_elem(&idx_nodes, &u->key, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&idx_nodes, &u->key);
		if (!n)
			return false;	/* the map is full (or out of memory) */
	}
	if (canonical) {
		if (!gms_idx_name_add(u, n)) {
			if (!n->sub)
				bpf_map_delete_elem(&idx_nodes, &u->key);
			return false;
		}
		n->here++;
	}
	__sync_fetch_and_add(&n->sub, 1);
	return true;
}

/*
 * One level of an update, bottom up. Four operations in a fixed order,
 * so that a rollback can replay exactly the ones done before a failure:
 * 0 and 1 the partly covered nodes holding lo and hi - 1, 2 and 3 the
 * canonical nodes of the classic iterative decomposition.
 */
static long gms_idx_update_level(__u64 level, void *data)
{
	struct gms_idx_update *u = data;
	__u64 na = u->lo >> level, nb = (u->hi - 1) >> level;
	__u32 op;

	u->key.level = level;
	for (op = 0; op < 4; op++) {
		bool ok = true;

		if (u->delta < 0 && u->stop_level == level && u->stop_op == op)
			return 1;
		if (op == 0 && ((na << level) < u->lo || ((na + 1) << level) > u->hi))
			ok = gms_idx_touch(u, na, false);
		else if (op == 1 && nb != na && ((nb << level) < u->lo || ((nb + 1) << level) > u->hi))
			ok = gms_idx_touch(u, nb, false);
		else if (op == 2 && u->l < u->h && (u->l & 1))
			ok = gms_idx_touch(u, u->l++, true);
		else if (op == 3 && u->l < u->h && (u->h & 1))
			ok = gms_idx_touch(u, --u->h, true);
		if (!ok) {
			u->failed = true;
			u->failed_level = level;
			u->failed_op = op;
			return 1;
		}
	}
	u->l >>= 1;
	u->h >>= 1;
	return 0;
}

/* Adds (delta 1) or removes (-1) r's range; an add that fails is undone: 0 or -ENOSPC. */
__noinline int gms_idx_update(struct gms_idx_range *r, int delta)
{
	struct gms_idx_update u = {.stop_level = ~0u};
	__u32 bits;

	if (!r)
		return -GMS_ENOSPC;
	bits = r->bits > GMS_IDX_IOVA_BITS ? GMS_IDX_IOVA_BITS : r->bits;
	if (r->lo >= r->hi || r->hi > (1ull << bits))
		return -GMS_ENOSPC;
	u.key.owner = r->owner;
	u.key.tree = r->tree;
	u.lo = u.l = r->lo;
	u.hi = u.h = r->hi;
	u.id = r->id;
	u.delta = delta;
	bpf_loop(bits + 1, gms_idx_update_level, &u, 0);
	if (!u.failed)
		return 0;
	u.delta = -1;
	u.l = r->lo;
	u.h = r->hi;
	u.stop_level = u.failed_level;
	u.stop_op = u.failed_op;
	u.failed = false;
	bpf_loop(bits + 1, gms_idx_update_level, &u, 0);
	return -GMS_ENOSPC;
}

/* A query: is any stored range over pages [a, b), and which (its id; 0 if unnamed)? */
struct gms_idx_query {
	struct gms_idx_key key;
	__u64 a, b;
	__u64 l, h;
	__u32 bits;
	bool path_a, path_b;	/* the paths to a and to b - 1 still have nodes */
	bool hit;
	__u64 id;
	__u64 below;		/* descent: the prefix at key.level of a node with `sub` */
};

/* The first mapping named at the node q->key points at; 0 if none (the index lost a name). */
static __always_inline __u64 gms_idx_name(struct gms_idx_query *q)
{
	__u64 *id;

	q->key.pad = 0;
	id = bpf_map_lookup_elem(&idx_named, &q->key);
	return id ? *id : 0;
}

/* Top down along the paths to a and to b - 1: a node there holding a range meets [a, b). */
static long gms_idx_query_paths(__u64 i, void *data)
{
	struct gms_idx_query *q = data;
	__u32 level = q->bits - i;
	__u64 pa = q->a >> level, pb = (q->b - 1) >> level;
	struct gms_idx_node *n;

	q->key.level = level;
	if (q->path_a) {
		q->key.prefix = pa;
		n = bpf_map_lookup_elem(&idx_nodes, &q->key);
		if (!n)
			q->path_a = false;
		else if (n->here) {
			q->hit = true;
			q->id = gms_idx_name(q);
			return 1;
		}
	}
	if (q->path_b && (pb != pa || !q->path_a)) {
		q->key.prefix = pb;
		n = bpf_map_lookup_elem(&idx_nodes, &q->key);
		if (!n)
			q->path_b = false;
		else if (n->here) {
			q->hit = true;
			q->id = gms_idx_name(q);
			return 1;
		}
	} else if (pb == pa) {
		q->path_b = q->path_a;
	}
	/* a callback's return must be provably 0 or 1: no bool from memory */
	if (q->path_a || q->path_b)
		return 0;
	return 1;
}

/* Bottom up over the canonical nodes of [a, b): the first with something below it. */
static long gms_idx_query_canonical(__u64 level, void *data)
{
	struct gms_idx_query *q = data;
	struct gms_idx_node *n;
	__u64 c;
	int side;

	if (q->l >= q->h)
		return 1;
	q->key.level = level;
	for (side = 0; side < 2; side++) {
		if (side == 0 && (q->l & 1))
			c = q->l++;
		else if (side == 1 && (q->h & 1))
			c = --q->h;
		else
			continue;
		q->key.prefix = c;
		n = bpf_map_lookup_elem(&idx_nodes, &q->key);
		if (n && n->sub) {
			q->below = c;
			return 1;
		}
	}
	q->l >>= 1;
	q->h >>= 1;
	return 0;
}

/* Down from (key.level, below) to a node holding a range: all of it is inside [a, b). */
static long gms_idx_query_descend(__u64 i, void *data)
{
	struct gms_idx_query *q = data;
	struct gms_idx_node *n;

	q->key.prefix = q->below;
	n = bpf_map_lookup_elem(&idx_nodes, &q->key);
	if (!n || !n->sub)
		return 1;	/* changed under us */
	if (n->here) {
		q->hit = true;
		q->id = gms_idx_name(q);
		return 1;
	}
	if (!q->key.level)
		return 1;
	q->key.level--;
	q->key.prefix = q->below << 1;
	n = bpf_map_lookup_elem(&idx_nodes, &q->key);
	q->below = n && n->sub ? q->below << 1 : (q->below << 1) | 1;
	return 0;
}

/* Is anything stored over r's [lo, hi)? 1 with r->id (0 if unnamed), or 0. */
__noinline int gms_idx_find(struct gms_idx_range *r)
{
	struct gms_idx_query q = {.path_a = true, .path_b = true, .below = ~0ull};
	__u32 bits;

	if (!r)
		return 0;
	r->id = 0;
	bits = r->bits > GMS_IDX_IOVA_BITS ? GMS_IDX_IOVA_BITS : r->bits;
	q.key.owner = r->owner;
	q.key.tree = r->tree;
	q.bits = bits;
	q.a = q.l = r->lo;
	q.b = q.h = r->hi > (1ull << bits) ? 1ull << bits : r->hi;
	if (q.a >= q.b)
		return 0;
	bpf_loop(bits + 1, gms_idx_query_paths, &q, 0);
	if (!q.hit) {
		bpf_loop(bits + 1, gms_idx_query_canonical, &q, 0);
		if (q.below != ~0ull)
			bpf_loop(bits + 1, gms_idx_query_descend, &q, 0);
	}
	r->id = q.id;
	return q.hit ? 1 : 0;
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

static __always_inline __u64 gms_idx_start_tree(const struct gms_pin *p)
{
	return GMS_TREE_IOVA | (__u64)p->kind << 56 | (__u64)(p->ioas_id & 0xffffffff) << 24 | p->fd;
}

/*
 * Indexes a mapping (user addresses of owner mm) or a declared range (gfns
 * of owner tgid): 0, or -ENOSPC when it is counted as not indexed.
 */
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

/* Where it starts, in its start tree (unmap finds it there). */
static __always_inline void gms_idx_start_of(struct gms_idx_range *r, __u64 owner, const struct gms_pin *p, __u64 id)
{
	r->owner = owner;
	r->tree = gms_idx_start_tree(p);
	r->bits = GMS_IDX_IOVA_BITS;
	r->lo = p->iova >> 12;
	r->hi = r->lo + 1;
	r->id = id;
}

/*
 * Indexes a mapping (user addresses of owner mm) or a declared range (gfns
 * of owner tgid): 0, or -ENOSPC when it is counted as not indexed.
 */
__noinline int gms_idx_add(__u64 owner, struct gms_pin *p)
{
	struct gms_idx_range r = {};
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
	if (st->mappings >= max)
		goto not_indexed;
	next = bpf_map_lookup_elem(&idx_next_id, &zero);
	if (!next)
		goto not_indexed;
	id = __sync_fetch_and_add(next, 1) + 1;
	if (bpf_map_update_elem(&idx_maps, &id, p, BPF_NOEXIST))
		goto not_indexed;
	gms_idx_range_of(&r, owner, p, id);
	if (gms_idx_update(&r, 1)) {
		bpf_map_delete_elem(&idx_maps, &id);
		goto not_indexed;
	}
	gms_idx_start_of(&r, owner, p, id);
	if (gms_idx_update(&r, 1)) {
		gms_idx_range_of(&r, owner, p, id);
		gms_idx_update(&r, -1);
		bpf_map_delete_elem(&idx_maps, &id);
		goto not_indexed;
	}
	__sync_fetch_and_add(&st->mappings, 1);
	return 0;
not_indexed:
	gms_count_drop(GMS_DROP_PIN_INDEX_FULL);
	if (st) {
		__sync_fetch_and_add(&st->not_indexed, 1);
		__sync_fetch_and_add(&st->unindexed_bytes, declared ? (p->end - p->vaddr) << 12 : p->end - p->vaddr);
	}
	return -GMS_ENOSPC;
}

/* Removing the mappings that start in one tree's [lo, hi), one per bpf_loop() step. */
struct gms_idx_unmap {
	__u64 owner, start_tree;
	__u64 lo, hi;		/* start pages */
	__u64 bytes;		/* removed */
	__u32 removed;
};

static long gms_idx_unmap_one(__u64 i, void *data)
{
	struct gms_idx_unmap *w = data;
	struct gms_idx_range r = {.owner = w->owner, .tree = w->start_tree, .bits = GMS_IDX_IOVA_BITS,
				  .lo = w->lo, .hi = w->hi};
	struct gms_idx_state *st;
	struct gms_pin *m;
	__u64 id, owner = w->owner;

	if (!gms_idx_find(&r) || !r.id)
		return 1;	/* none left (or one the index cannot name: it stays, which refuses more) */
	id = r.id;
	m = bpf_map_lookup_elem(&idx_maps, &id);
	if (!m)
		return 1;
	w->bytes += m->kind == GMS_PIN_DECLARED ? (m->end - m->vaddr) << 12 : m->end - m->vaddr;
	gms_idx_range_of(&r, owner, m, id);
	gms_idx_update(&r, -1);
	gms_idx_start_of(&r, owner, m, id);
	gms_idx_update(&r, -1);
	bpf_map_delete_elem(&idx_maps, &id);
	st = gms_idx_state_of(owner, false);
	if (st && st->mappings)
		__sync_fetch_and_add(&st->mappings, -1);
	w->removed++;
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
	struct gms_idx_unmap w = {.owner = owner};
	struct gms_idx_state *st;

	if (!key)
		return 0;
	w.start_tree = gms_idx_start_tree(key);
	w.lo = key->iova >> 12;
	w.hi = (key->iova + bytes + 4095) >> 12;

	if (!all && w.hi <= w.lo)
		return 0;
	if (all || w.hi > (1ull << GMS_IDX_IOVA_BITS)) {
		w.lo = 0;
		w.hi = 1ull << GMS_IDX_IOVA_BITS;
	}
	bpf_loop(GMS_IDX_MAX_MAPPINGS + 1, gms_idx_unmap_one, &w, 0);
	st = gms_idx_state_of(owner, false);
	if (st && st->unindexed_bytes && unmapped > w.bytes) {
		__u64 rest = unmapped - w.bytes;

		/* clamped: bytes mapped before enforcement started are in `unmapped` too */
		st->unindexed_bytes = st->unindexed_bytes > rest ? st->unindexed_bytes - rest : 0;
	}
	return w.removed;
}

