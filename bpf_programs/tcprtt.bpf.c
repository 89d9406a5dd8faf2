// SPDX-License-Identifier: GPL-2.0
/* tcprtt: histograms of TCP's smoothed round-trip time (srtt), as bcc's tcprtt.
 *
 * bcc's tcprtt reads tcp_sock.srtt_us at the entry of tcp_rcv_established (a kprobe or fentry).
 * tcp:tcp_probe is called at the top of that same function, for every segment received on an
 * established connection, with the socket: srtt is read there, from the socket, in the kernel's
 * unit (srtt_us holds 8 times the microseconds). Histograms are log2, keyed by nothing, by the
 * local address or by the remote one, with the exact count and sum (so the mean) of each.
 * Segments arrive in softirq: -p/-n/-c select by the socket's owner (sockowners.h, whose
 * programs netkit attaches only then). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "owner.h"
#define SOCKOWNER_STATE
#define SOCKOWNER_ACCEPT
#define SOCKOWNER_SEND
#include "sockowners.h"
#include "tcprtt.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile __u8 key_by = KEY_NONE;		/* -b, -B */
const volatile __u8 filter_ip = 0;		/* -4/-6 */
const volatile __u32 unit_us = 1;		/* 1000 with -m */
const volatile __u8 filter_laddr_family = 0;	/* -a: 4 or 6, 0 for none */
const volatile __u8 filter_laddr[16] = {};
const volatile __u8 filter_raddr_family = 0;	/* -A */
const volatile __u8 filter_raddr[16] = {};

const enum rtt_key_by *key_by_anchor __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rtt_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

/* The local and remote address of sk; an IPv4-mapped IPv6 connection reads as IPv4. */
static __always_inline __u8 addresses(struct sock *sk, __u8 *laddr, __u8 *raddr)
{
	__u16 family = sk->__sk_common.skc_family;
	const __u32 *r6;

	if (family == AF_INET) {
		*(__u32 *)laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)raddr = sk->__sk_common.skc_daddr;
		return 4;
	}
	if (family != AF_INET6)
		return 0;
	__builtin_memcpy(laddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
	__builtin_memcpy(raddr, &sk->__sk_common.skc_v6_daddr, 16);
	r6 = (const __u32 *)raddr;
	if (r6[0] == 0 && r6[1] == 0 && r6[2] == bpf_htonl(0xffff)) {
		__builtin_memcpy(laddr, laddr + 12, 4);
		__builtin_memcpy(raddr, raddr + 12, 4);
		return 4;
	}
	return 6;
}

static __always_inline bool same_address(const volatile __u8 *want, __u8 family,
					 const __u8 *addr)
{
	for (int i = 0; i < 16; i++) {
		if (i >= (family == 4 ? 4 : 16))
			break;
		if (want[i] != addr[i])
			return false;
	}
	return true;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcprtt_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct tcp_sock *tp;
	struct log2_hist *h, empty = {};
	struct rtt_key key = {};
	__u8 laddr[16] = {}, raddr[16] = {};
	__u16 lport, rport;
	struct owner owner;
	__u8 family;
	__u64 srtt;

	if (process_filtered() && !owner_selected(sk, &owner))
		return 0;
	lport = sk->__sk_common.skc_num;
	rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (!ports_selected(lport, rport))
		return 0;
	family = addresses(sk, laddr, raddr);
	if (!family || (filter_ip && family != filter_ip))
		return 0;
	if (filter_laddr_family && (family != filter_laddr_family ||
				    !same_address(filter_laddr, family, laddr)))
		return 0;
	if (filter_raddr_family && (family != filter_raddr_family ||
				    !same_address(filter_raddr, family, raddr)))
		return 0;
	if (key_by != KEY_NONE) {
		key.family = family;
		__builtin_memcpy(key.addr, key_by == KEY_LADDR ? laddr : raddr, 16);
	}
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	srtt = (tp->srtt_us >> 3) / unit_us;
	h = lookup_or_init(&hists, &key, &empty);
	if (h)
		hist_record(h, srtt);
	return 0;
}
