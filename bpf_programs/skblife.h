/* skblife's structs; netkit reads their layout from the object's BTF. */
#ifndef SKBLIFE_H
#define SKBLIFE_H

#define MAX_ALLOCATORS 8

/* An sk_buff whose allocation was seen, until its end. */
struct skb_birth {
	__u64 ts;		/* bpf_ktime_get_ns() at kmem:kmem_cache_alloc */
	__u64 head;		/* skb->head at its first device, 0 before: tells a later life apart */
	__u32 netns;		/* the namespace of the first device it met; 0: none yet */
	__u32 ended;		/* its end is counted; the entry waits for the slab free */
};

/* Cumulative, per CPU. */
struct skblife_counts {
	__u64 allocs;		/* sk_buff allocations seen (every namespace) */
	__u64 lives;		/* lifetimes ended and counted (every namespace) */
	__u64 lost;		/* ends not seen: the sk_buff came back with another data buffer */
	__u64 unseen;		/* sk_buffs freed to the slab whose allocation was not seen */
};

#endif
