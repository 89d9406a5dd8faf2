/* Histograms of packet events kept per network device (netsize, nettxlat, qdisclat, skblife).
 *
 * A device is named by its namespace and ifindex together (ifindexes repeat across namespaces:
 * every namespace has its lo at 1), and the key carries the device's name for display, so
 * userspace need not enter the namespace to look it up. Without per_device the device part of
 * the key stays zero and a namespace has one histogram.
 *
 * Durations go into the slots in the unit userspace chose (unit_ns: us or ms) with their exact
 * sum kept in nanoseconds, so a mean or an exporter's _sum loses nothing to the rounding of the
 * slots. Include after common.h and netns.h. */
#ifndef NETKIT_DEVHIST_H
#define NETKIT_DEVHIST_H

#define IFNAMSIZ 16

struct dev_key {
	__u32 netns;		/* inode of the device's network namespace */
	__u32 ifindex;		/* 0: all devices of the namespace together */
	char name[IFNAMSIZ];	/* the device's name when it was first counted */
};

/* A tool's histograms: one per key, per CPU (at packet rates a shared one bounces between
 * caches). Userspace reads the map "hists". */
#define DEVHIST_MAP(key_type)						\
	struct {							\
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);			\
		__uint(max_entries, 4096);				\
		__type(key, key_type);					\
		__type(value, struct log2_hist);			\
	} hists SEC(".maps")

/* A tool's cumulative counters, one struct per CPU in the map "counts", and my_counts() to
 * reach this CPU's. */
#define COUNTS_MAP(value_type)						\
	struct {							\
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);		\
		__uint(max_entries, 1);					\
		__type(key, __u32);					\
		__type(value, value_type);				\
	} counts SEC(".maps");						\
									\
	static __always_inline value_type *my_counts(void)		\
	{								\
		__u32 zero = 0;						\
									\
		return bpf_map_lookup_elem(&counts, &zero);		\
	}

/* Set by userspace before load. */
const volatile bool per_device = false;
const volatile __u64 unit_ns = 1000;

static __always_inline void dev_key_fill(struct dev_key *key, const struct net_device *dev,
					 __u32 netns)
{
	key->netns = netns;
	if (!per_device || !dev)
		return;
	key->ifindex = BPF_CORE_READ(dev, ifindex);
	bpf_probe_read_kernel_str(key->name, sizeof(key->name), dev->name);
}

/* The histogram of `key` in `map`, created empty when there is none (NULL: the map is full). */
static __always_inline struct log2_hist *hist_of(void *map, const void *key)
{
	static const struct log2_hist empty;

	return lookup_or_init(map, key, &empty);
}

/* A duration: slotted in unit_ns units, summed in ns. */
static __always_inline void hist_record_ns(struct log2_hist *h, __u64 ns)
{
	__sync_fetch_and_add(&h->slots[log2_slot(ns / unit_ns)], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum, ns);
}

#endif /* NETKIT_DEVHIST_H */
