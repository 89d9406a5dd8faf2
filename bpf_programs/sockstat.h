/* sockstat's per-process counters; netkit reads the layout from the object's BTF. */
#ifndef SOCKSTAT_H
#define SOCKSTAT_H

struct sockstat_counts {
	__u64 socket;		/* socket(), socketpair() */
	__u64 bind;
	__u64 listen;
	__u64 connect;
	__u64 accept;		/* accept(), accept4() */
	__u64 send;		/* sendto(), sendmsg(), sendmmsg() (send() is sendto()) */
	__u64 recv;		/* recvfrom(), recvmsg(), recvmmsg() (recv() is recvfrom()) */
	__u64 tcp_state;	/* TCP state transitions */
	__u64 tx_bytes;		/* bytes through sock_sendmsg (any syscall, write() included) */
	__u64 rx_bytes;		/* bytes through sock_recvmsg, MSG_PEEK excluded */
	char comm[TASK_COMM_LEN];
};

#endif
