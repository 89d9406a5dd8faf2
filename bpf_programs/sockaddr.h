/* IP endpoints, as the socket tools report them: from the sockaddr a process passed to the
 * kernel (connect) and from a struct sock (the peer an accept() returned, the local address a
 * packet was dropped at). Include after common.h and <bpf/bpf_endian.h>. */
#ifndef NETKIT_SOCKADDR_H
#define NETKIT_SOCKADDR_H

#define AF_UNSPEC 0

/* One end of an IP conversation. netkit/render/sockets.py's endpoint() reads it. */
struct ip_endpoint {
	__u8 addr[16];		/* IPv4 in the first 4 bytes */
	__u16 port;		/* host order */
	__u8 family;		/* 4 or 6; 0: not an IP endpoint */
	__u8 pad;
};

/* Reads the sockaddr a process passed (uaddr, addrlen as the syscall got them). Returns its
 * sa_family, or -1 when it cannot be read; fills ep (family 4 or 6) only for an AF_INET or
 * AF_INET6 sockaddr long enough to be one (the kernel refuses shorter ones with EINVAL), and
 * zeroes it otherwise. Every helper here zeroes ep first: endpoints go into map keys, where
 * the unused bytes of an IPv4 address must not differ. */
static __always_inline int read_user_sockaddr(const void *uaddr, int addrlen,
					      struct ip_endpoint *ep)
{
	union {
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} sa;
	__u16 family = 0;
	__u32 size;

	__builtin_memset(ep, 0, sizeof(*ep));
	if (!uaddr || addrlen < (int)sizeof(family) ||
	    bpf_probe_read_user(&family, sizeof(family), uaddr))
		return -1;
	if (family == AF_INET)
		size = sizeof(sa.in);
	else if (family == AF_INET6)
		size = sizeof(sa.in6);
	else
		return family;
	if (addrlen < (int)size || bpf_probe_read_user(&sa, size, uaddr))
		return family;
	/* sin_port and sin6_port share their offset. */
	ep->port = bpf_ntohs(sa.in.sin_port);
	if (family == AF_INET) {
		ep->family = 4;
		__builtin_memcpy(ep->addr, &sa.in.sin_addr, 4);
	} else {
		ep->family = 6;
		__builtin_memcpy(ep->addr, &sa.in6.sin6_addr, 16);
	}
	return family;
}

/* The remote end of an AF_INET/AF_INET6 socket (family 0 for other families). */
static __always_inline void sock_peer(const struct sock *sk, struct ip_endpoint *ep)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(ep, 0, sizeof(*ep));
	if (family == AF_INET) {
		ep->family = 4;
		BPF_CORE_READ_INTO((__u32 *)ep->addr, sk, __sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		ep->family = 6;
		BPF_CORE_READ_INTO((struct in6_addr *)ep->addr, sk, __sk_common.skc_v6_daddr);
	} else {
		return;
	}
	ep->port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* The local end of an AF_INET/AF_INET6 socket (family 0 for other families). */
static __always_inline void sock_local(const struct sock *sk, struct ip_endpoint *ep)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(ep, 0, sizeof(*ep));
	if (family == AF_INET) {
		ep->family = 4;
		BPF_CORE_READ_INTO((__u32 *)ep->addr, sk, __sk_common.skc_rcv_saddr);
	} else if (family == AF_INET6) {
		ep->family = 6;
		BPF_CORE_READ_INTO((struct in6_addr *)ep->addr, sk, __sk_common.skc_v6_rcv_saddr);
	} else {
		return;
	}
	ep->port = BPF_CORE_READ(sk, __sk_common.skc_num);	/* already host order */
}

#endif
