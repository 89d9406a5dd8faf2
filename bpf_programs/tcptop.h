/* tcptop's flow table; netkit reads the layout from the object's BTF. Include after common.h
 * and sockaddr.h. */
#ifndef TCPTOP_H
#define TCPTOP_H

/* One flow as a process sees it: the process, and both ends of its socket. */
struct flow_key {
	__u32 tgid;
	struct ip_endpoint local;	/* family 4 or 6: the socket's (an IPv4-mapped peer on an
					 * IPv6 socket stays IPv6, as in bcc) */
	struct ip_endpoint remote;
};

/* Cumulative: the kernel only adds; userspace takes differences between reads. */
struct flow_bytes {
	__u64 rx_bytes;		/* what recv/read calls returned (MSG_PEEK excluded) */
	__u64 tx_bytes;		/* what send/write calls returned */
	__u64 closed_ns;	/* bpf_ktime_get_ns() when the socket went to CLOSE; 0 while open */
	char comm[TASK_COMM_LEN];
};

#endif
