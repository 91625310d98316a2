// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The process filter follows forks: a child process of a traced tgid is
 * traced too (threads share their tgid and need nothing).
 */
#include "common.bpf.h"

SEC("tp_btf/sched_process_fork")
int BPF_PROG(task_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid, ctgid;
	__u8 one = 1;

	if (!parent || !child)
		return 0;
	ptgid = BPF_CORE_READ(parent, tgid);
	ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid || !bpf_map_lookup_elem(&tgids, &ptgid))
		return 0;
	bpf_map_update_elem(&tgids, &ctgid, &one, BPF_ANY);
	return 0;
}
