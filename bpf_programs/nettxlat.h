/* nettxlat's structs; netkit reads their layout from the object's BTF. */
#ifndef NETTXLAT_H
#define NETTXLAT_H

/* An skb handed to a driver, remembered until it is freed. */
struct nettxlat_start {
	__u64 ts;		/* bpf_ktime_get_ns() at net:net_dev_start_xmit */
	__u64 head;		/* skb->head then: the same at the free, or it is another skb */
	struct dev_key dev;
};

/* Cumulative, per CPU. */
struct nettxlat_counts {
	__u64 consumed;		/* frees through skb:consume_skb (a completed transmit) */
	__u64 kfreed;		/* frees through skb:kfree_skb (a drop, or a driver that completes so) */
	__u64 reused;		/* freed with another data buffer: the skb sent was freed unseen and
				 * its sk_buff reused (or its buffer reallocated); not counted */
};

#endif
