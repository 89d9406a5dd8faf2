/* tcpconnlat's event and histograms, read by netkit from the object's BTF. Include after
 * common.h, tcpsock.h and owner.h. */
#ifndef TCPCONNLAT_H
#define TCPCONNLAT_H

struct tcpconnlat_event {
	__u64 ts_ns;			/* CLOCK_MONOTONIC at ESTABLISHED */
	__u64 latency_ns;		/* SYN_SENT to ESTABLISHED */
	struct sock_owner owner;	/* the connecting task */
	struct tcp_tuple tuple;
};

/* Histograms per destination (struct log2_hist: slots in us, sum in ns, exact). */
struct tcpconnlat_key {
	__u8 raddr[16];
	__u16 rport;
	__u8 family;
	__u8 pad[5];
};

#endif
