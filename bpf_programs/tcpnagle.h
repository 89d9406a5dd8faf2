/* tcpnagle's shared layouts; netkit reads them from the object's BTF. Include after common.h. */
#ifndef TCPNAGLE_H
#define TCPNAGLE_H

#define NONAGLE_VALUES 16	/* tcp_sock.nonagle is a 4-bit field */
#define HOLD_RING 8		/* holds a socket can have pending at once */

/* Why a send left bytes in the send queue, inferred from the socket right after the send.
 * The order here is the order of the tests in classify(); netkit reads the names from BTF. */
enum hold_cause {
	CAUSE_CORK,		/* TCP_CORK set: partial segments wait for uncork or a full MSS */
	CAUSE_RWND,		/* the receiver's window has no room for the next segment */
	CAUSE_CWND,		/* packets in flight >= congestion window */
	CAUSE_AUTOCORK,		/* earlier packets still in the qdisc/device (autocork or TSQ) */
	CAUSE_NAGLE,		/* Nagle: sub-MSS segment while data is unacknowledged */
	CAUSE_MORE,		/* nothing in flight, no cork: a MSG_MORE (or splice) send */
	CAUSE_OTHER,		/* anything else (TSO deferral, pacing) */
};
#define N_CAUSES (CAUSE_OTHER + 1)

/* Run totals, one per CPU (index 0 of a per-CPU array); userspace sums and differences them. */
struct tcpnagle_counts {
	__u64 sends[NONAGLE_VALUES];	/* TCP sends that queued bytes, by tp->nonagle */
	__u64 held[N_CAUSES];		/* of those, the sends that left bytes unsent */
	__u64 overflow;			/* held sends not timed: HOLD_RING holds already pending */
	__u64 missed;			/* holds whose bytes left before the hold was recorded */
	__u64 dropped;			/* holds pending when the socket closed or the map was full */
};

/* One held send: when the send returned and the sequence number after its last byte. */
struct hold {
	__u64 start_ns;
	__u32 end_seq;
	__u32 cause;
};

/* The holds of one socket, oldest first: the sending task appends at tail, the transmit path
 * (serialised per socket by the socket lock) removes at head. */
struct pending {
	struct hold ring[HOLD_RING];
	__u32 head;
	__u32 tail;
	__u64 cookie;		/* socket cookie, the key of the per-socket totals */
};

/* Per-socket totals for --by sock, keyed by socket cookie (never reused, unlike addresses). */
struct tcpnagle_sock {
	__u64 sends;
	__u64 held;		/* sends that left bytes unsent */
	__u64 holds;		/* holds measured (released) */
	__u64 held_ns;		/* their summed duration */
	__u64 max_ns;
	__u32 tgid;
	__u16 family;
	__u16 lport;		/* host order */
	__u16 dport;		/* host order */
	__u8 closed;
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
	struct log2_hist hold_us;	/* common.h */
};

#endif
