/* A TCP socket's addresses and ports as the tcp* tools show them, and the family filter
 * (-4/-6). An IPv6 socket talking IPv4 (IPv4-mapped addresses, ::ffff:a.b.c.d) is an IPv4
 * connection on the wire, so it reads as IPv4: family 4, addresses in the first 4 bytes.
 * Include after common.h. */
#ifndef NETKIT_TCPSOCK_H
#define NETKIT_TCPSOCK_H

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "sockfd.h"

/* Set by userspace before load: 0 (both), 4 or 6. */
const volatile __u8 filter_family = 0;

struct tcp_tuple {
	__u8 laddr[16];		/* IPv4 in the first 4 bytes */
	__u8 raddr[16];
	__u16 lport;		/* host order; 0 before connect() picked one */
	__u16 rport;
	__u8 family;		/* 4 or 6 */
	__u8 pad[3];
};

static __always_inline bool v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline bool unset(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return !(w[0] | w[1] | w[2] | w[3]);
}

/* False for a socket that is neither IPv4 nor IPv6 (or that -4/-6 leaves out). */
static __always_inline bool tcp_tuple_of(const struct sock *sk, struct tcp_tuple *t)
{
	const struct sock_common *c = &sk->__sk_common;
	__u16 family = BPF_CORE_READ(c, skc_family);

	__builtin_memset(t, 0, sizeof(*t));
	/* inet_sport, not skc_num: a socket's port is unhashed (skc_num zeroed) before it
	 * reaches CLOSE, and its number is still wanted there. */
	t->lport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	t->rport = bpf_ntohs(BPF_CORE_READ(c, skc_dport));
	if (family == AF_INET) {
		t->family = 4;
		*(__u32 *)t->laddr = BPF_CORE_READ(c, skc_rcv_saddr);
		*(__u32 *)t->raddr = BPF_CORE_READ(c, skc_daddr);
	} else if (family == AF_INET6) {
		bpf_core_read(t->laddr, 16, &c->skc_v6_rcv_saddr);
		bpf_core_read(t->raddr, 16, &c->skc_v6_daddr);
		if (v4_mapped(t->raddr) || (unset(t->raddr) && v4_mapped(t->laddr))) {
			t->family = 4;
			__builtin_memcpy(t->laddr, t->laddr + 12, 4);
			__builtin_memcpy(t->raddr, t->raddr + 12, 4);
			__builtin_memset(t->laddr + 4, 0, 12);
			__builtin_memset(t->raddr + 4, 0, 12);
		} else {
			t->family = 6;
		}
	} else {
		return false;
	}
	return !filter_family || t->family == filter_family;
}

#endif /* NETKIT_TCPSOCK_H */
