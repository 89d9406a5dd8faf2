// SPDX-License-Identifier: GPL-2.0
/* ipecn: inbound IP packets marked Congestion Experienced (ECN field 11, RFC 3168).
 *
 * The book's ipecn.bt reads the IPv4 header with a kprobe on ip_rcv. net:netif_receive_skb
 * fires just before, for every packet the stack receives, with the IP header at skb->data (the
 * network header offset is set only after the tracepoint); it sees IPv6 too (the ECN field is
 * the low two bits of the traffic class). Packets are counted per source address in the kernel;
 * with events on, each one is also sent to userspace. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "netns.h"
#include "ipecn.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ECN_CE 3

/* Set by userspace before load. */
const volatile bool key_netns = false;		/* --all-netns */
const volatile bool emit_events = false;	/* -e */
const volatile __u8 filter_ip = 0;		/* -4/-6 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ce_key);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Puts struct ce_event into the object's BTF, where netkit reads its layout. */
const struct ce_event *event_type_anchor __attribute__((unused));

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(ipecn_receive, struct sk_buff *skb)
{
	__u16 ethertype = bpf_ntohs(skb->protocol);
	struct ce_key key = {};
	__u8 hdr[40], daddr[16] = {};
	__u64 zero = 0, *count;
	struct ce_event *e;
	__u32 netns;

	if (ethertype == ETH_P_IP && filter_ip != 6) {
		if (bpf_probe_read_kernel(hdr, 20, skb->data) || hdr[0] >> 4 != 4 ||
		    (hdr[1] & 3) != ECN_CE)
			return 0;
		key.family = 4;
		__builtin_memcpy(key.saddr, hdr + 12, 4);
		__builtin_memcpy(daddr, hdr + 16, 4);
	} else if (ethertype == ETH_P_IPV6 && filter_ip != 4) {
		if (bpf_probe_read_kernel(hdr, 40, skb->data) || hdr[0] >> 4 != 6 ||
		    ((hdr[1] >> 4) & 3) != ECN_CE)
			return 0;
		key.family = 6;
		__builtin_memcpy(key.saddr, hdr + 8, 16);
		__builtin_memcpy(daddr, hdr + 24, 16);
	} else {
		return 0;
	}
	netns = dev_netns_btf(skb->dev);
	if (!netns_selected(netns))
		return 0;
	if (key_netns)
		key.netns = netns;
	count = lookup_or_init(&counts, &key, &zero);
	if (count)
		*count += 1;
	if (!emit_events)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->netns = netns;
	e->ifindex = skb->dev ? skb->dev->ifindex : 0;
	e->family = key.family;
	__builtin_memcpy(e->saddr, key.saddr, 16);
	__builtin_memcpy(e->daddr, daddr, 16);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
