/* tcpaccept's event, read by netkit from the object's BTF. Include after common.h, tcpsock.h
 * and owner.h. */
#ifndef TCPACCEPT_H
#define TCPACCEPT_H

struct tcpaccept_event {
	__u64 ts_ns;
	struct sock_owner owner;	/* the task that called accept() */
	struct tcp_tuple tuple;
	__u32 backlog;			/* connections left in the listener's accept queue */
	__u32 backlog_max;		/* its limit (listen()'s backlog, capped by somaxconn) */
};

#endif
