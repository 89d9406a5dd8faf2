/* What every netkit BPF program shares: the process and port filters userspace sets through
 * .rodata before load (netkit/engine/bpfobject.py's Filters), lookup-or-init for map entries,
 * the log2 histogram, and the count of events a ring buffer could not take (so a tool can say
 * how many it lost). Include after vmlinux.h and the libbpf headers. */
#ifndef NETKIT_COMMON_H
#define NETKIT_COMMON_H

#define TASK_COMM_LEN 16
#define MAX_SLOTS 32		/* netkit/engine/hist.py's MAX_SLOTS */
#define MAX_PORTS 8		/* netkit/cli/options.py's MAX_PORTS */
#define MSG_PEEK 2		/* uapi socket.h: macros are not in vmlinux.h */
#define AF_INET 2
#define AF_INET6 10

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

/* -D/-L: up to MAX_PORTS remote and local ports, in host order; none given passes all. */
const volatile __u16 filter_dports[MAX_PORTS] = {};
const volatile __u32 n_dports = 0;
const volatile __u16 filter_lports[MAX_PORTS] = {};
const volatile __u32 n_lports = 0;

static __always_inline bool port_listed(const volatile __u16 *ports, __u32 n, __u16 port)
{
	if (!n)
		return true;
#pragma unroll
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i < n && ports[i] == port)
			return true;
	}
	return false;
}

static __always_inline bool dport_selected(__u16 dport)
{
	return port_listed(filter_dports, n_dports, dport);
}

/* True when a connection's ports pass -D and -L (host order). */
static __always_inline bool ports_selected(__u16 lport, __u16 dport)
{
	return port_listed(filter_dports, n_dports, dport) &&
	       port_listed(filter_lports, n_lports, lport);
}

/* The map's entry for key, created from init when there is none (BPF_NOEXIST: when two CPUs
 * race to create it, both then use the one that won). NULL only when the map is full. */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *init)
{
	void *value = bpf_map_lookup_elem(map, key);

	if (value)
		return value;
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
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
