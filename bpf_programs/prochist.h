/* Log2 histograms per process, aggregated in the kernel: one struct log2_hist per (process,
 * command name, kind), the kind being the tool's own (read or write size, rmem_alloc or rcvbuf).
 * netkit/engine/prochist.py reads such a map. Include after common.h. */
#ifndef NETKIT_PROCHIST_H
#define NETKIT_PROCHIST_H

struct proc_hist_key {
	__u32 tgid;
	__u32 kind;
	char comm[TASK_COMM_LEN];
};

/* Declares the map: enough processes for a busy host; entries of processes that exited are
 * removed by userspace at each read. */
#define PROC_HIST_MAP(name)						\
	struct {							\
		__uint(type, BPF_MAP_TYPE_HASH);			\
		__uint(max_entries, 10240);				\
		__type(key, struct proc_hist_key);			\
		__type(value, struct log2_hist);			\
	} name SEC(".maps")

/* A zeroed histogram to create entries from: too big to build on the stack beside a key. */
const struct log2_hist empty_log2_hist = {};

static __always_inline void proc_hist_add(void *map, const struct proc_hist_key *key, __u64 value)
{
	struct log2_hist *h = lookup_or_init(map, key, &empty_log2_hist);

	if (h)
		hist_record(h, value);
}

/* The key of the current task's histogram of `kind`. */
static __always_inline void proc_hist_key_of_current(struct proc_hist_key *key, __u32 kind)
{
	key->tgid = bpf_get_current_pid_tgid() >> 32;
	key->kind = kind;
	bpf_get_current_comm(key->comm, sizeof(key->comm));
}

#endif
