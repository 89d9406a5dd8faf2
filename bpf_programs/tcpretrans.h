/* tcpretrans's event and count key; netkit reads their layout from the object's BTF. */
#ifndef TCPRETRANS_H
#define TCPRETRANS_H

enum retrans_kind {
	RETRANS_SEGMENT,	/* tcp:tcp_retransmit_skb: data, SYN or FIN again */
	RETRANS_SYNACK,		/* tcp:tcp_retransmit_synack: a listener's SYN-ACK again */
};

/* A connection as the kernel's socket (or request socket) holds it; an IPv4-mapped IPv6
 * connection reads as IPv4. IPv4 addresses fill the first 4 bytes. */
struct retrans_flow {
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;		/* host order */
	__u16 rport;
	__u8 family;		/* 4 or 6 */
	__u8 pad[3];
};

/* One retransmission. */
struct retrans_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	struct owner owner;	/* the socket's owner (sockowners.h); pid 0: not known */
	struct retrans_flow flow;
	__u32 seq;		/* the first sequence number sent again (the SYN-ACK's ISN) */
	__u16 segs;		/* segments in the retransmitted skb (TSO/GSO: more than one) */
	__u8 state;		/* TCP state of the socket (SYN_RECV for a SYN-ACK) */
	__u8 kind;		/* enum retrans_kind */
};

/* -C: retransmissions per flow and kind, counted in the kernel. */
struct retrans_key {
	struct retrans_flow flow;
	__u32 pid;		/* the owner; 0 when not known */
	__u32 kind;
};

struct retrans_count {
	__u64 retransmits;	/* tracepoint hits */
	__u64 segs;		/* segments they carried: what TcpRetransSegs counts */
	char comm[TASK_COMM_LEN];
};

#endif
