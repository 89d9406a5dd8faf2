// SPDX-License-Identifier: GPL-2.0
/* superping: ICMP echo round trips timed inside the kernel stack.
 * A request is stamped when the device is about to send it (net:net_dev_start_xmit, after the
 * qdisc; or at net:net_dev_queue, before it) and its reply when it enters the stack
 * (net:netif_receive_skb); the pair is matched on (netns, family, id, seq, remote address) read
 * from the packet headers. Both tracepoints fire in every network namespace: a router or
 * container namespace on the same host that forwards the request, or receives the reply first,
 * must not stand in for the pinging one, so each stamp carries its namespace (netns.h: the
 * sending socket's on TX, else the forwarding device's; the receiving device's on RX) and
 * filter_netns keeps one. Only the first TX stamp of a request in a namespace is kept: stacked
 * devices (veth, VLAN, bond, bridge) transmit the same packet again.
 * IPv4 and IPv6 echoes too large for the MTU are timed by their first fragment.
 * The round trips go to userspace one by one and into a log2 histogram (microseconds). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "netns.h"
#include "superping.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_OFFSET_MASK 0x1FFF	/* fragment offset bits of iphdr.frag_off */
#define NEXTHDR_ICMPV6 58
#define NEXTHDR_FRAGMENT 44
#define IP6_OFFSET_MASK 0xFFF8	/* fragment offset bits of frag_hdr.frag_off */
#define ICMP_ECHO 8
#define ICMP_ECHOREPLY 0
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/* Set by userspace before load. An active superping follows only its own echo id. */
const volatile bool filter_id = false;
const volatile __u16 target_id = 0;
const volatile __u8 target_family = 0;			/* 0: IPv4 and IPv6 */
const volatile __u64 restamp_after_ns = 1000000000;	/* a request older than this is a new one */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);		/* lost requests age out by themselves */
	__uint(max_entries, 16384);
	__type(key, struct echo_key);
	__type(value, struct echo_request);
} requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");
/* Names the event type in the object's BTF, where userspace finds its layout. */
const struct echo_event *event_type_anchor __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct log2_hist);
} rtt_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct echo_counts);
} counts SEC(".maps");

/* Read the echo header behind the network header `nh`; fill `key` and return true when the
 * packet is an ICMP(v6) echo of the wanted direction that passes the filters. */
static __always_inline bool parse_echo(const void *nh, __be16 protocol, bool request,
				       struct echo_key *key)
{
	struct { __u8 type, code; __u16 csum; __be16 id, seq; } echo;
	const void *l4;

	if (protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (target_family && target_family != AF_INET)
			return false;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), nh) || ip.version != 4 ||
		    ip.protocol != IPPROTO_ICMP || (bpf_ntohs(ip.frag_off) & IP_OFFSET_MASK))
			return false;
		l4 = nh + ip.ihl * 4;
		if (bpf_probe_read_kernel(&echo, sizeof(echo), l4) ||
		    echo.type != (request ? ICMP_ECHO : ICMP_ECHOREPLY) || echo.code)
			return false;
		key->family = AF_INET;
		__builtin_memcpy(key->addr, request ? (void *)&ip.daddr : (void *)&ip.saddr, 4);
	} else if (protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (target_family && target_family != AF_INET6)
			return false;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), nh))
			return false;
		l4 = nh + sizeof(ip6);
		/* A large echo is fragmented: its first fragment carries the echo header. Other
		 * extension headers are not followed. */
		if (ip6.nexthdr == NEXTHDR_FRAGMENT) {
			struct frag_hdr fh;

			if (bpf_probe_read_kernel(&fh, sizeof(fh), l4) ||
			    fh.nexthdr != NEXTHDR_ICMPV6 || (bpf_ntohs(fh.frag_off) & IP6_OFFSET_MASK))
				return false;
			l4 += sizeof(fh);
		} else if (ip6.nexthdr != NEXTHDR_ICMPV6) {
			return false;
		}
		if (bpf_probe_read_kernel(&echo, sizeof(echo), l4) ||
		    echo.type != (request ? ICMPV6_ECHO_REQUEST : ICMPV6_ECHO_REPLY) || echo.code)
			return false;
		key->family = AF_INET6;
		__builtin_memcpy(key->addr, request ? (void *)&ip6.daddr : (void *)&ip6.saddr, 16);
	} else {
		return false;
	}
	key->id = bpf_ntohs(echo.id);
	key->seq = bpf_ntohs(echo.seq);
	return !filter_id || key->id == target_id;
}

static __always_inline struct echo_counts *my_counts(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counts, &zero);
}

static __always_inline void stamp_request(const struct sk_buff *skb, const struct net_device *dev)
{
	struct echo_key key = {};
	struct echo_request req = {}, *old;
	struct echo_counts *c;
	__u64 now = bpf_ktime_get_ns();

	if (skb->network_header == (__u16)~0U)
		return;
	if (!parse_echo(skb->head + skb->network_header, skb->protocol, true, &key))
		return;
	key.netns = tx_netns(skb, dev);
	if (!netns_selected(key.netns))
		return;
	/* The first device to send it wins; a request seen long ago is a new one (wrapped seq). */
	old = bpf_map_lookup_elem(&requests, &key);
	if (old && now - old->tx_ns < restamp_after_ns)
		return;
	req.tx_ns = now;
	req.ifindex = dev ? dev->ifindex : 0;
	if (skb->sk) {
		if (!task_selected())
			return;
		req.pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(req.comm, sizeof(req.comm));
	} else {
		/* Forwarded: the task that happens to run the softirq did not send it, and no
		 * process filter can select it. */
		if (filter_tgid || filter_cgroup || filter_comm[0])
			return;
		__builtin_memcpy(req.comm, "[forwarded]", sizeof("[forwarded]"));
	}
	bpf_map_update_elem(&requests, &key, &req, BPF_ANY);
	c = my_counts();
	if (c)
		c->requests++;
}

/* Userspace attaches one of the two TX points: the device's transmit (default: after the
 * qdisc, closest to the driver's SO_TIMESTAMPING stamp) or the qdisc enqueue (--tx-point queue:
 * the RTT then includes time spent in the qdisc, e.g. behind a shaper). */
SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(stamp_at_xmit, const struct sk_buff *skb, const struct net_device *dev)
{
	stamp_request(skb, dev);
	return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(stamp_at_queue, struct sk_buff *skb)
{
	stamp_request(skb, skb->dev);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(match_reply, struct sk_buff *skb)
{
	struct echo_key key = {};
	struct echo_request *req;
	struct echo_event *e;
	struct log2_hist *h;
	struct echo_counts *c;
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;

	/* eth_type_trans has pulled the link header: skb->data is the network header here. */
	if (!parse_echo(skb->data, skb->protocol, false, &key))
		return 0;
	key.netns = dev_netns(skb->dev);
	if (!netns_selected(key.netns))
		return 0;
	c = my_counts();
	req = bpf_map_lookup_elem(&requests, &key);
	if (!req) {
		if (c)
			c->unmatched++;
		return 0;
	}
	if (c)
		c->replies++;
	h = bpf_map_lookup_elem(&rtt_hist, &zero);
	if (h)
		hist_record(h, (now - req->tx_ns) / 1000);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->key = key;
		e->req = *req;
		e->rx_ns = now;
		e->rtt_ns = now - req->tx_ns;
		e->rx_ifindex = skb->dev ? skb->dev->ifindex : 0;
		bpf_ringbuf_submit(e, 0);
	} else {
		count_lost_event();
	}
	bpf_map_delete_elem(&requests, &key);
	return 0;
}
