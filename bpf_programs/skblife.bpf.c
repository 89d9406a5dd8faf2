// SPDX-License-Identifier: GPL-2.0
/* skblife: the lifetime of sk_buffs, from their allocation (kmem:kmem_cache_alloc from the skb
 * caches) to their end (skb:consume_skb or skb:kfree_skb, when the last reference goes, or
 * kmem:kmem_cache_free when the memory goes back to the slab, whichever comes first), as a log2
 * histogram per network namespace.
 *
 * The skb caches are found, not named: the fclone cache is merged with other caches of its size
 * (its objects then share a kmem_cache and a name with unrelated ones), so a cache is learned
 * from an allocation made inside __alloc_skb, and the fclone cache's allocations count only from
 * there. skbuff_head_cache carries a usercopy region and is not merged where the kernel hardens
 * usercopy; where it is (userspace finds out from /sys/kernel/slab), its allocations count only
 * from the skb allocators too.
 *
 * Invisible: sk_buffs taken from or returned to the per-CPU NAPI cache (bulk allocations and
 * frees, no per-object tracepoint), which most NIC receive paths and, since 6.18, sockets'
 * deferred frees use. Such a life can begin or end unseen; a life whose end was unseen must not
 * run into the next one at the same address, so each life is fingerprinted by its data buffer
 * (skb->head) at the first device it meets: a later sighting with another buffer is another
 * life. An sk_buff belongs to the namespace of that first device (its send or its receive). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "netns.h"
#include "devhist.h"
#include "skblife.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace from /proc/kallsyms and /sys/kernel/slab. Allocator 0 is __alloc_skb. */
const volatile __u64 allocator_start[MAX_ALLOCATORS] = {};
const volatile __u64 allocator_end[MAX_ALLOCATORS] = {};
const volatile __u32 n_allocators = 0;
const volatile bool head_cache_shared = false;

/* Learned at run time (both stay 0 until __alloc_skb allocates from them). */
__u64 head_cache = 0;
__u64 fclone_cache = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct skb_birth);
} births SEC(".maps");

DEVHIST_MAP(struct dev_key);
COUNTS_MAP(struct skblife_counts)

static __always_inline bool in_allocator(__u64 call_site, __u32 first, __u32 last)
{
	for (__u32 i = first; i < MAX_ALLOCATORS && i <= last; i++) {
		if (i < n_allocators && call_site >= allocator_start[i] &&
		    call_site < allocator_end[i])
			return true;
	}
	return false;
}

static __always_inline bool is_skb_alloc(__u64 call_site, const struct kmem_cache *s)
{
	__u64 cache = (__u64)s;

	if (cache == head_cache)
		return !head_cache_shared || in_allocator(call_site, 0, MAX_ALLOCATORS - 1);
	if (cache == fclone_cache)
		return in_allocator(call_site, 0, 0);
	if (!in_allocator(call_site, 0, 0))
		return false;
	/* __alloc_skb allocates from one of the two: an fclone pair is twice an sk_buff. */
	if (BPF_CORE_READ(s, object_size) >= bpf_core_type_size(struct sk_buff_fclones))
		fclone_cache = cache;
	else
		head_cache = cache;
	return true;
}

/* raw_tp, not tp_btf: 6.1's verifier refuses a tp_btf program's read of a `const void *`
 * argument (ptr), and the slab object is only a number here anyway. */
SEC("raw_tp/kmem_cache_alloc")
int BPF_PROG(slab_alloc, unsigned long call_site, const void *ptr, struct kmem_cache *s,
	     gfp_t gfp_flags, int node)
{
	struct skb_birth birth = {};
	struct skblife_counts *c;
	__u64 addr = (__u64)ptr;

	if (!ptr || !is_skb_alloc(call_site, s))
		return 0;
	birth.ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&births, &addr, &birth, BPF_ANY);
	c = my_counts();
	if (c)
		c->allocs++;
	return 0;
}

static __always_inline void count_life(struct skb_birth *birth)
{
	struct dev_key key = { .netns = birth->netns };
	struct skblife_counts *c = my_counts();
	struct log2_hist *h;

	birth->ended = 1;
	if (c)
		c->lives++;
	if (!netns_selected(birth->netns))
		return;
	h = hist_of(&hists, &key);
	if (h)
		hist_record_ns(h, bpf_ktime_get_ns() - birth->ts);
}

/* The life seen at `addr` has another data buffer than the one it was fingerprinted with: it
 * ended unseen and this is a later one. */
static __always_inline bool another_life(struct skb_birth *birth, __u64 addr, __u64 head)
{
	struct skblife_counts *c;

	if (!birth->head || birth->head == head)
		return false;
	if (!birth->ended) {
		c = my_counts();
		if (c)
			c->lost++;
	}
	bpf_map_delete_elem(&births, &addr);
	return true;
}

/* A device event: the first one names the sk_buff's namespace and fingerprints its life. A
 * clone sent out of an fclone pair (TCP's) stands for the pair, which was allocated as one. */
static __always_inline void met_device(const struct sk_buff *skb, const struct net_device *dev)
{
	__u64 addr = (__u64)skb, head = (__u64)BPF_CORE_READ(skb, head);
	struct skb_birth *birth;

	if (BPF_CORE_READ_BITFIELD_PROBED(skb, fclone) == SKB_FCLONE_CLONE)
		addr -= bpf_core_type_size(struct sk_buff);
	birth = bpf_map_lookup_elem(&births, &addr);
	if (!birth || another_life(birth, addr, head) || birth->head)
		return;
	birth->head = head;
	birth->netns = dev_netns(dev);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(sent, struct sk_buff *skb)
{
	met_device(skb, skb->dev);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(received, struct sk_buff *skb)
{
	met_device(skb, skb->dev);
	return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(nic_received, const struct sk_buff *skb)
{
	met_device(skb, skb->dev);
	return 0;
}

static __always_inline void skb_ended(const struct sk_buff *skb)
{
	__u64 addr = (__u64)skb;
	struct skb_birth *birth = bpf_map_lookup_elem(&births, &addr);

	if (!birth || birth->ended || another_life(birth, addr, (__u64)skb->head))
		return;
	count_life(birth);
}

SEC("tp_btf/consume_skb")
int BPF_PROG(consumed, struct sk_buff *skb, void *location)
{
	skb_ended(skb);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(dropped, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	skb_ended(skb);
	return 0;
}

/* The memory goes back to the slab: an end not yet seen (an fclone pair freed when both of its
 * sk_buffs are done, an skb freed without a tracepoint) is counted here. */
SEC("raw_tp/kmem_cache_free")
int BPF_PROG(slab_free, unsigned long call_site, const void *ptr, const struct kmem_cache *s)
{
	__u64 addr = (__u64)ptr, head;
	struct skb_birth *birth = bpf_map_lookup_elem(&births, &addr);
	struct skblife_counts *c;

	if (!birth) {
		if (addr && (__u64)s == head_cache) {
			c = my_counts();
			if (c)
				c->unseen++;
		}
		return 0;
	}
	if (!birth->ended) {
		head = (__u64)BPF_CORE_READ((struct sk_buff *)ptr, head);
		if (another_life(birth, addr, head))
			return 0;
		count_life(birth);
	}
	bpf_map_delete_elem(&births, &addr);
	return 0;
}
