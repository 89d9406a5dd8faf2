// SPDX-License-Identifier: GPL-2.0
/* skbdrop and tcpdrop: packets the kernel dropped, by the reason it gives (skb:kfree_skb).
 *
 * One program on skb:kfree_skb serves both tools. Since 5.17 the tracepoint carries the
 * reason (enum skb_drop_reason), since 6.10 the receiving socket (rx_sk). A packet the stack
 * is done with goes to skb:consume_skb instead (SKB_CONSUMED), so every kfree_skb with a reason
 * is a drop; NOT_SPECIFIED is a free that gives no reason: drops the kernel has not named yet
 * and, from some drivers and older code, packets that were simply done with. Those are only
 * counted, apart, unless count_unspecified is set.
 *
 * skbdrop counts drops in a per-CPU hash by (reason, protocol, and with its options the network
 * namespace and the kernel stack); tcpdrop sends one event per dropped TCP segment, with the
 * segment's addresses and flags and its socket's state. Reason numbers differ between kernels:
 * the program compares with CO-RE enum values and userspace names them from the running
 * kernel's BTF. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "netns.h"
#include "sockfd.h"
#include "owner.h"
#define SOCKOWNER_STATE
#define SOCKOWNER_ACCEPT
#define SOCKOWNER_SEND
#include "sockowners.h"	/* its programs are attached by tcpdrop only */
#include "skbdrop.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

/* Set by userspace before load. */
const volatile bool count_drops = true;		/* skbdrop: the counts map */
const volatile bool tcp_events = false;		/* tcpdrop: one event per TCP segment */
const volatile bool with_stacks = false;	/* -s */
const volatile bool count_unspecified = false;	/* NOT_SPECIFIED frees count as drops */
const volatile bool key_netns = false;		/* --all-netns: the namespace is in the key */
const volatile __u8 filter_family = 0;		/* tcpdrop -4/-6 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ARRAY_REASONS * N_DROP_CLASSES);
	__type(key, __u32);
	__type(value, __u64);
} by_reason SEC(".maps");

/* NOT_SPECIFIED frees that were not counted as drops (without count_unspecified). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unspecified SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 2048);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, DROP_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Puts struct drop_event and enum drop_class into the object's BTF, where netkit reads them. */
const struct drop_event *event_type_anchor __attribute__((unused));
const enum drop_class *drop_class_anchor __attribute__((unused));
const enum skbdrop_limit *limit_anchor __attribute__((unused));

/* The namespace a drop happened in: the receiving socket's when the kernel names one, else the
 * device's (RX, or TX once a device was chosen), else the sending socket's (TX before routing
 * picked a device: netfilter's OUTPUT hook), else the current task's. skb->dev shares its word
 * with dev_scratch once UDP has queued a packet: a scratch value is no readable pointer, its
 * read gives 0 and the next source is tried. */
static __always_inline __u32 drop_netns(struct sk_buff *skb, struct sock *rx_sk)
{
	struct task_struct *task;
	__u32 netns;

	if (rx_sk)
		return sock_netns_btf(rx_sk);
	netns = dev_netns_btf(skb->dev);
	if (netns)
		return netns;
	netns = sock_netns_btf(skb->sk);
	if (netns)
		return netns;
	task = bpf_get_current_task_btf();
	return task->nsproxy->net_ns->ns.inum;
}

/* The IP version and protocol from the network header (no IPv6 extension header walk: a
 * packet with one shows its first next-header value). */
static __always_inline void ip_protocol(struct sk_buff *skb, struct drop_key *key)
{
	__u8 hdr[10];
	unsigned char *nh = skb->head + skb->network_header;

	if (key->ethertype != ETH_P_IP && key->ethertype != ETH_P_IPV6)
		return;
	if (bpf_probe_read_kernel(hdr, sizeof(hdr), nh))
		return;
	if (key->ethertype == ETH_P_IP && hdr[0] >> 4 == 4) {
		key->family = 4;
		key->l4 = hdr[9];
	} else if (key->ethertype == ETH_P_IPV6 && hdr[0] >> 4 == 6) {
		key->family = 6;
		key->l4 = hdr[6];
	}
}

static __always_inline __u32 drop_class(const struct drop_key *key)
{
	if (key->family == 4)
		return key->l4 == IPPROTO_TCP ? DROP_CLASS_TCP_IPV4 :
		       key->l4 == IPPROTO_UDP ? DROP_CLASS_UDP_IPV4 :
		       key->l4 == IPPROTO_ICMP ? DROP_CLASS_ICMP_IPV4 : DROP_CLASS_NONE;
	if (key->family == 6)
		return key->l4 == IPPROTO_TCP ? DROP_CLASS_TCP_IPV6 :
		       key->l4 == IPPROTO_UDP ? DROP_CLASS_UDP_IPV6 :
		       key->l4 == IPPROTO_ICMPV6 ? DROP_CLASS_ICMPV6_IPV6 : DROP_CLASS_NONE;
	return key->ethertype == ETH_P_ARP ? DROP_CLASS_ARP_NONE : DROP_CLASS_NONE;
}

/* The TCP socket a dropped segment belonged to: the receiving one the kernel names, else the
 * sending one it still carries, unless that came with the packet from another namespace (a veth
 * hands the sender's socket over with the skb). */
static __always_inline struct sock *segment_sock(struct sk_buff *skb, struct sock *rx_sk,
						 __u32 netns)
{
	struct sock *sk;

	if (rx_sk)
		return rx_sk;
	sk = skb->sk;
	if (sk && sock_netns_btf(sk) != netns)
		return NULL;
	return sk;
}

static __always_inline void emit_tcp_event(void *ctx, struct sk_buff *skb, struct sock *rx_sk,
					   struct drop_key *key, __u32 netns)
{
	unsigned char *nh = skb->head + skb->network_header;
	struct drop_event *e;
	struct owner owner;
	struct sock *sk;
	__u32 th_off;
	__u8 ihl;

	if (filter_family && filter_family != key->family)
		return;
	sk = segment_sock(skb, rx_sk, netns);
	if (sk) {
		if (!owner_selected(sk, &owner))
			return;
	} else {
		if (!task_selected())
			return;
		owner_of_current(&owner);
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->owner = owner;
	e->reason = key->reason;
	e->netns = netns;
	e->stack_id = key->stack_id;
	e->family = key->family;
	if (key->family == 4) {
		bpf_probe_read_kernel(&ihl, 1, nh);
		bpf_probe_read_kernel(e->saddr, 4, nh + 12);
		bpf_probe_read_kernel(e->daddr, 4, nh + 16);
		th_off = (ihl & 0x0f) * 4;
	} else {
		bpf_probe_read_kernel(e->saddr, 16, nh + 8);
		bpf_probe_read_kernel(e->daddr, 16, nh + 24);
		th_off = 40;
	}
	th_off &= 0xff;
	bpf_probe_read_kernel(&e->sport, 2, nh + th_off);
	bpf_probe_read_kernel(&e->dport, 2, nh + th_off + 2);
	bpf_probe_read_kernel(&e->tcp_flags, 1, nh + th_off + 13);
	e->sport = bpf_ntohs(e->sport);
	e->dport = bpf_ntohs(e->dport);
	if (sk)
		e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int on_free(void *ctx, struct sk_buff *skb, enum skb_drop_reason reason,
				   struct sock *rx_sk)
{
	struct drop_key key = {};
	__u64 none = 0, *count;
	__u32 netns, index, zero = 0;

	/* Both reasons are younger than the tracepoint's reason argument (6.1 has neither
	 * SKB_CONSUMED nor, before 6.0, SKB_NOT_DROPPED_YET): asked only where they exist. */
	if ((bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	     reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED)) ||
	    (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_NOT_DROPPED_YET) &&
	     reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET)))
		return 0;
	netns = drop_netns(skb, rx_sk);
	/* tcpdrop selects by the segment's socket's owner where there is one (emit_tcp_event) */
	if (!netns_selected(netns) || (!tcp_events && !task_selected()))
		return 0;
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED) &&
	    !count_unspecified) {
		count = bpf_map_lookup_elem(&unspecified, &zero);
		if (count)
			*count += 1;
		return 0;
	}
	key.reason = reason;
	key.ethertype = bpf_ntohs(skb->protocol);
	key.stack_id = with_stacks ? bpf_get_stackid(ctx, &stacks, 0) : -1;
	ip_protocol(skb, &key);
	if (tcp_events && key.l4 == IPPROTO_TCP)
		emit_tcp_event(ctx, skb, rx_sk, &key, netns);
	if (!count_drops)
		return 0;
	if (!with_stacks && !key_netns && reason < ARRAY_REASONS) {
		index = drop_class(&key);
		if (index != DROP_CLASS_NONE) {
			index += reason * N_DROP_CLASSES;
			count = bpf_map_lookup_elem(&by_reason, &index);
			if (count)
				*count += 1;
			return 0;
		}
	}
	if (key_netns)
		key.netns = netns;
	count = lookup_or_init(&counts, &key, &none);
	if (count)
		*count += 1;
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(skbdrop_free, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	return on_free(ctx, skb, reason, rx_sk);
}

/* Before 6.11 the tracepoint names no receiving socket (netkit loads one of the two). */
SEC("tp_btf/kfree_skb")
int BPF_PROG(skbdrop_free_compat, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return on_free(ctx, skb, reason, NULL);
}
