// SPDX-License-Identifier: GPL-2.0
/* netsize: log2 histograms of packet sizes (bytes, skb->len) where the stack and the driver meet:
 * the stack's receive (after GRO) and send (before GSO), the NIC's receive (before GRO) and send
 * (what the driver took, after GSO). Comparing the stack's sizes with the NIC's shows whether GRO
 * and TSO/GSO are merging and splitting packets. Each event belongs to the namespace of its
 * device; one histogram per namespace and point, or per device too. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "netns.h"
#include "devhist.h"
#include "netsize.h"

char LICENSE[] SEC("license") = "GPL";

#define NET_XMIT_MASK 0x0f	/* a driver's return below this took the skb (dev_xmit_complete) */

DEVHIST_MAP(struct netsize_key);
/* Names the point enum in the object's BTF, where userspace reads the point names. */
const enum netsize_point *point_type_anchor __attribute__((unused));

static __always_inline void count_size(const struct net_device *dev, __u32 len,
				       enum netsize_point point)
{
	struct netsize_key key = {};
	struct log2_hist *h;
	__u32 netns = dev_netns(dev);

	if (!netns_selected(netns))
		return;
	dev_key_fill(&key.dev, dev, netns);
	key.point = point;
	h = hist_of(&hists, &key);
	if (h)
		hist_record(h, len);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(stack_recv, struct sk_buff *skb)
{
	count_size(skb->dev, skb->len, POINT_RECV);
	return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(stack_send, struct sk_buff *skb)
{
	count_size(skb->dev, skb->len, POINT_SEND);
	return 0;
}

SEC("tp_btf/napi_gro_receive_entry")
int BPF_PROG(nic_recv, const struct sk_buff *skb)
{
	count_size(skb->dev, skb->len, POINT_NIC_RECV);
	return 0;
}

/* Drivers that build skbs from page fragments enter GRO here instead. */
SEC("tp_btf/napi_gro_frags_entry")
int BPF_PROG(nic_recv_frags, const struct sk_buff *skb)
{
	count_size(skb->dev, skb->len, POINT_NIC_RECV);
	return 0;
}

/* The skb may be freed by now: only the length the tracepoint saved before the call is read.
 * A driver that answers NETDEV_TX_BUSY gets the skb again later: counted once, when taken. */
SEC("tp_btf/net_dev_xmit")
int BPF_PROG(nic_send, struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len)
{
	if (rc >= NET_XMIT_MASK)
		return 0;
	count_size(dev, skb_len, POINT_NIC_SEND);
	return 0;
}
