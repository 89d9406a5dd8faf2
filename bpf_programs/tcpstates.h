/* tcpstates' event, read by netkit from the object's BTF. Include after common.h, tcpsock.h
 * and sockowners.h. */
#ifndef TCPSTATES_H
#define TCPSTATES_H

struct tcpstates_event {
	__u64 ts_ns;			/* CLOCK_MONOTONIC of the change */
	__u64 skaddr;
	__u64 state_ns;			/* time in the old state; 0 when its start was not seen */
	struct sock_owner owner;
	struct tcp_tuple tuple;
	__u8 oldstate;
	__u8 newstate;
	__u8 pad[6];
};

#endif
