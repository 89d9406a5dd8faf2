/* What every netkit BPF program shares: the process filters userspace sets through .rodata
 * before load, the log2 histogram slot, and a ring buffer whose failed reservations are counted
 * (so a tool can say how many events it lost). Include after vmlinux.h and the libbpf headers. */
#ifndef NETKIT_COMMON_H
#define NETKIT_COMMON_H

#define TASK_COMM_LEN 16
#define MAX_SLOTS 32
#define MSG_PEEK 2		/* uapi socket.h: macros are not in vmlinux.h */

/* Filters, written by netkit/engine before the object is loaded; 0/empty means "no filter". */
const volatile __u32 filter_tgid = 0;
const volatile char filter_comm[TASK_COMM_LEN] = {};
const volatile bool filter_cgroup = false;

/* Slot 0 of this map holds the cgroup v2 directory fd that -c/--cgroup names. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

static __always_inline bool comm_matches(void)
{
	char comm[TASK_COMM_LEN];

	if (!filter_comm[0])
		return true;
	bpf_get_current_comm(comm, sizeof(comm));
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

/* True when the current task passes -p, -n and -c. Cheapest checks first. */
static __always_inline bool task_selected(void)
{
	if (filter_tgid && (bpf_get_current_pid_tgid() >> 32) != filter_tgid)
		return false;
	if (filter_cgroup && !bpf_current_task_under_cgroup(&cgroup_filter, 0))
		return false;
	return comm_matches();
}

/* log2 slot: slot 0 holds 0 and 1, slot i holds [2^i, 2^(i+1) - 1]. */
static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8)  { v >>= 8;  r += 8; }
	if (v >> 4)  { v >>= 4;  r += 4; }
	if (v >> 2)  { v >>= 2;  r += 2; }
	if (v >> 1)  { r += 1; }
	return r < MAX_SLOTS ? r : MAX_SLOTS - 1;
}

/* A log2 histogram with its exact count and sum (the sum feeds exporters' _sum, not an estimate).
 * Map values of this type are read by netkit/engine/hist.py. */
struct log2_hist {
	__u64 slots[MAX_SLOTS];
	__u64 count;
	__u64 sum;
};

static __always_inline void hist_record(struct log2_hist *h, __u64 value)
{
	__sync_fetch_and_add(&h->slots[log2_slot(value)], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum, value);
}

/* Events that could not be reserved in the ring buffer (userspace too slow): netkit reports them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

static __always_inline void count_lost_event(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);

	if (lost)
		*lost += 1;
}

#endif /* NETKIT_COMMON_H */
