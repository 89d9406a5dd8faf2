/* superping's map keys and events; netkit reads their layout from the object's BTF. */
#ifndef SUPERPING_H
#define SUPERPING_H

/* One echo exchange as one network namespace sees it: the request's (netns, family, id, seq,
 * destination) is the reply's (netns, family, id, seq, source). id and seq are in host order;
 * IPv4 addresses fill addr[0..3]. */
struct echo_key {
	__u8 family;		/* AF_INET or AF_INET6 */
	__u8 pad;
	__u16 id;
	__u16 seq;
	__u16 pad2;
	__u32 netns;		/* inode of the namespace that sent the request and got the reply */
	__u8 addr[16];		/* the remote host */
};

/* What is remembered of a request until its reply comes. */
struct echo_request {
	__u64 tx_ns;		/* bpf_ktime_get_ns() at the TX tracepoint */
	__u32 pid;		/* tgid of the sender (the TX point runs in its context); 0 when
				 * no local socket sent it (forwarded by this namespace) */
	__u32 ifindex;		/* device the request left by */
	char comm[TASK_COMM_LEN];
};

/* One matched echo reply, sent to userspace through the ring buffer. */
struct echo_event {
	struct echo_key key;
	struct echo_request req;
	__u64 rx_ns;		/* bpf_ktime_get_ns() at the RX tracepoint */
	__u64 rtt_ns;		/* rx_ns - req.tx_ns: the in-stack round trip */
	__u32 rx_ifindex;
	__u32 pad;
};

/* Cumulative counters (per CPU); userspace sums them. */
struct echo_counts {
	__u64 requests;		/* echo requests stamped at TX */
	__u64 replies;		/* echo replies matched to a request */
	__u64 unmatched;	/* echo replies whose request was not seen (or filtered out) */
};

#endif
