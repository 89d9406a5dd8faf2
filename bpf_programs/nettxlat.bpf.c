// SPDX-License-Identifier: GPL-2.0
/* nettxlat: device transmit latency, from the moment the stack hands an skb to the driver
 * (net:net_dev_start_xmit) to the skb's free (skb:consume_skb, or skb:kfree_skb for drivers that
 * complete transmits with dev_kfree_skb_any, and for drops), as a log2 histogram per namespace
 * or per device. On a real NIC the free comes when the hardware has sent the packet (TX
 * completion); loopback and veth hand the skb on to the receiver instead, so there the figure
 * is how long the receiving side kept it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "netns.h"
#include "devhist.h"
#include "nettxlat.h"

char LICENSE[] SEC("license") = "GPL";

/* skbs in flight, by address. An skb freed without a tracepoint (a socket's deferred free, see
 * the man page) leaves its entry behind: the next skb sent from that address replaces it, one
 * received there carries another data buffer (skb->head) and does not match it, and the LRU
 * evicts what is left. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct nettxlat_start);
} starts SEC(".maps");

DEVHIST_MAP(struct dev_key);
COUNTS_MAP(struct nettxlat_counts)

/* A stacked device (VLAN, bond, a tunnel) hands the same skb to the device below: the last
 * driver's start counts, as its free ends it. */
SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(xmit_start, const struct sk_buff *skb, const struct net_device *dev)
{
	struct nettxlat_start start = {};
	__u64 addr = (__u64)skb;
	__u32 netns = dev_netns(dev);

	if (!netns_selected(netns))
		return 0;
	start.ts = bpf_ktime_get_ns();
	start.head = (__u64)skb->head;
	dev_key_fill(&start.dev, dev, netns);
	bpf_map_update_elem(&starts, &addr, &start, BPF_ANY);
	return 0;
}

static __always_inline void freed(const struct sk_buff *skb, bool kfreed)
{
	__u64 addr = (__u64)skb, now = bpf_ktime_get_ns();
	struct nettxlat_start *start = bpf_map_lookup_elem(&starts, &addr);
	struct nettxlat_counts *c;
	struct log2_hist *h;

	if (!start)
		return;
	c = my_counts();
	if ((__u64)skb->head != start->head) {
		if (c)
			c->reused++;
		bpf_map_delete_elem(&starts, &addr);
		return;
	}
	h = hist_of(&hists, &start->dev);
	if (h)
		hist_record_ns(h, now - start->ts);
	if (c) {
		if (kfreed)
			c->kfreed++;
		else
			c->consumed++;
	}
	bpf_map_delete_elem(&starts, &addr);
}

SEC("tp_btf/consume_skb")
int BPF_PROG(skb_consumed, struct sk_buff *skb, void *location)
{
	freed(skb, false);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(skb_dropped, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	freed(skb, true);
	return 0;
}
