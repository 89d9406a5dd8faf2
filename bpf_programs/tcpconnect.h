/* tcpconnect's shared structs, read by netkit from the object's BTF. Include after common.h,
 * tcpsock.h and owner.h. */
#ifndef TCPCONNECT_H
#define TCPCONNECT_H

/* Results are errno numbers (0: established), and one that no errno uses: the socket was
 * closed while its SYN was still unanswered (by its owner, or by connect() itself failing to
 * find a local port). netkit reads it from BTF. */
enum tcpconnect_result {
	RESULT_CLOSED = 4096,
};

/* One active open. has_result is set when the event was sent at the end of the handshake
 * (--failed); otherwise the event was sent when the connect was under way (SYN sent, local
 * port chosen) and result is 0. */
struct tcpconnect_event {
	__u64 ts_ns;
	struct sock_owner owner;
	struct tcp_tuple tuple;
	__u32 result;
	__u32 has_result;
};

/* Count mode and exporters: connects that ended, by addresses, destination port and result. */
struct tcpconnect_key {
	__u8 laddr[16];
	__u8 raddr[16];
	__u32 result;
	__u16 rport;
	__u8 family;
	__u8 pad;
};

#endif
