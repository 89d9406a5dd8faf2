/* tcplife's event and histograms, read by netkit from the object's BTF. Include after
 * common.h, tcpsock.h and sockowners.h. */
#ifndef TCPLIFE_H
#define TCPLIFE_H

/* One closed session. Bytes are payload: the socket's bytes_acked and bytes_received less the
 * SYN and FIN sequence numbers they count. */
struct tcplife_event {
	__u64 ts_ns;			/* CLOCK_MONOTONIC at CLOSE */
	__u64 duration_ns;		/* ESTABLISHED to CLOSE */
	__u64 tx_bytes;
	__u64 rx_bytes;
	struct sock_owner owner;
	struct tcp_tuple tuple;
};

/* Every session that passed the filters, for exporters. */
struct tcplife_hists {
	struct log2_hist duration_ms;
	struct log2_hist tx_bytes;
	struct log2_hist rx_bytes;
	__u64 duration_ns_sum;		/* exact, where duration_ms.sum sums truncated ms */
};

#endif
