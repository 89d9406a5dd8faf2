/* A packet event belongs to a network namespace, and a tool says which.
 *
 * Device and packet tracepoints (net:*, skb:*, qdisc:*) fire in every network namespace of the
 * host: a container's, a router's, the host's own. A packet that crosses namespaces on one host
 * (veth, or a TUN pair) is seen once in each of them, so a tool that matches packets by their
 * headers must first ask in which namespace the event happened, or it takes a router's copy for
 * its own. A namespace is named by its inode number: net->ns.inum, the number that
 * `ls -Li /proc/PID/ns/net`, `lsns -t net` and bcc's --netns use.
 *
 * Userspace (netkit/engine/netns.py) writes filter_netns before load: the namespace to keep, or
 * 0 for all of them, in which case the tool puts the namespace in its keys and its events.
 * Include after vmlinux.h and the libbpf headers. */
#ifndef NETKIT_NETNS_H
#define NETKIT_NETNS_H

#include <bpf/bpf_core_read.h>

const volatile __u32 filter_netns = 0;

/* Where a device-level event happens: RX, a qdisc, a drop on a device. */
static __always_inline __u32 dev_netns(const struct net_device *dev)
{
	return dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
}

static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return sk ? BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) : 0;
}

/* The namespace that sends a packet: the owning socket's when one owns it, else that of the
 * device sending it (a forwarded packet belongs to the namespace that forwards it; IP input
 * orphans it). Only for TX: a veth hands the skb to its peer namespace with the sender's socket
 * still attached (seen on 6.18 at netif_receive_skb), so a received packet's socket may be in
 * another namespace; on RX take dev_netns(skb->dev). */
static __always_inline __u32 tx_netns(const struct sk_buff *skb, const struct net_device *dev)
{
	const struct sock *sk = BPF_CORE_READ(skb, sk);

	if (sk)
		return sock_netns(sk);
	return dev_netns(dev ? dev : BPF_CORE_READ(skb, dev));
}

/* dev_netns and sock_netns for pointers a tp_btf program was given (its arguments and the
 * pointers in them): direct loads, which the JIT makes fault-safe, cost a few ns where each
 * bpf_probe_read_kernel of BPF_CORE_READ costs ~50 (skbdrop: 165 against 278 ns per event). */
static __always_inline __u32 dev_netns_btf(const struct net_device *dev)
{
	return dev ? dev->nd_net.net->ns.inum : 0;
}

static __always_inline __u32 sock_netns_btf(const struct sock *sk)
{
	return sk ? sk->__sk_common.skc_net.net->ns.inum : 0;
}

static __always_inline bool netns_selected(__u32 netns)
{
	return !filter_netns || netns == filter_netns;
}

#endif /* NETKIT_NETNS_H */
