/* skbdrop's and tcpdrop's map keys and events; netkit reads their layout from the object's BTF. */
#ifndef SKBDROP_H
#define SKBDROP_H

#define DROP_STACK_DEPTH 32	/* kernel frames kept per stack (netkit/tools/skbdrop.py) */
/* Reasons below ARRAY_REASONS are counted in an array when they can be (netkit/tools/skbdrop.py
 * has the same number; tests/test_c_constants.py ties the two). */
enum skbdrop_limit {
	ARRAY_REASONS = 256,
};

/* The protocols whose drops are counted in the by_reason array, by reason * N_DROP_CLASSES +
 * class, when neither stacks nor namespaces are in the key: a per-CPU array slot costs ~45 ns
 * less per drop than a hash lookup. Others go to the counts hash. Names are PROTOCOL_FAMILY. */
enum drop_class {
	DROP_CLASS_NONE,	/* not one of these: counted in the hash */
	DROP_CLASS_TCP_IPV4,
	DROP_CLASS_UDP_IPV4,
	DROP_CLASS_ICMP_IPV4,
	DROP_CLASS_TCP_IPV6,
	DROP_CLASS_UDP_IPV6,
	DROP_CLASS_ICMPV6_IPV6,
	DROP_CLASS_ARP_NONE,
	N_DROP_CLASSES,
};

/* Dropped packets are counted per key. A field the options did not ask for stays 0 (netns
 * without --all-netns) or -1 (stack_id without -s), so the map holds one entry per reason and
 * protocol in the plain case. */
struct drop_key {
	__u32 reason;		/* enum skb_drop_reason, as the kernel numbers it */
	__u32 netns;		/* inode of the namespace the drop happened in (--all-netns) */
	__s32 stack_id;		/* in the stacks map (-s); negative: none */
	__u16 ethertype;	/* skb->protocol, host order (0x0800 IPv4, 0x86DD IPv6, 0x0806 ARP) */
	__u8 family;		/* 4 or 6 when an IP header was found, else 0 */
	__u8 l4;		/* the IP protocol (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6) when family != 0 */
};

/* One dropped TCP segment (tcpdrop). Addresses as the segment carries them: IPv4 in the first 4
 * bytes. The owner is the socket's when the segment belonged to one (sockowners.h; pid 0 when
 * nobody was seen owning it), else the task the kernel ran the drop in. */
struct drop_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	struct owner owner;
	__u32 reason;
	__u32 netns;
	__s32 stack_id;
	__u8 family;		/* 4 or 6 */
	__u8 state;		/* TCP state of the socket; 0 when there was none */
	__u8 tcp_flags;		/* byte 13 of the TCP header: FIN 0x01 ... CWR 0x80 */
	__u8 pad;
	__u16 sport;		/* host order */
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

#endif
