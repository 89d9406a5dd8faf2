// SPDX-License-Identifier: GPL-2.0
/* tcplife: one event per TCP session when it closes: who owned it, its addresses, the payload
 * bytes each way and how long it lived.
 *
 * A session starts when its socket reaches ESTABLISHED and ends when it reaches CLOSE
 * (inet_sock_set_state). Bytes come from the socket's own counters at CLOSE: bytes_acked (sent
 * and acknowledged) and bytes_received count sequence space, so they include the SYN this
 * side sent (an active open: its SYN is acknowledged by the SYN-ACK; a passive open starts
 * counting after its SYN-ACK) and a FIN: ours once acknowledged, the peer's once received
 * (SOCK_DONE). Those are taken off, so the figures are the bytes the applications exchanged.
 *
 * The owner comes from sockowners.h: the close() or connect() caller, the accept() caller
 * (sys_exit), or the listener's owner for a connection nobody accepted; the CLOSE itself often
 * fires in softirq, when the peer's last ACK or FIN arrives. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "tcpsock.h"
#include "owner.h"
#define SOCKOWNER_ACCEPT
#include "sockowners.h"
#include "tcplife.h"

char LICENSE[] SEC("license") = "GPL";

const volatile bool emit_events = true;

struct birth {
	__u64 ns;
	__u64 active;		/* this side sent the SYN */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct birth);
} births SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcplife_hists);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

const struct tcplife_event *event_btf_anchor __attribute__((unused));

/* A global function is verified once, on its own: three log2 slots computed in a row inline
 * would make the verifier walk every combination of their branches (64^3). */
__noinline int record_log2(struct log2_hist *h, __u64 value)
{
	if (h)
		hist_record(h, value);
	return 0;
}

/* Payload bytes of a session at CLOSE (see the file's comment). */
static __always_inline void payload_bytes(const struct sock *sk, int oldstate, bool active,
					  __u64 *tx, __u64 *rx)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u64 acked = BPF_CORE_READ(tp, bytes_acked);
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	__u64 flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	bool fin_sent = oldstate == TCP_FIN_WAIT1 || oldstate == TCP_FIN_WAIT2 ||
			oldstate == TCP_CLOSING || oldstate == TCP_LAST_ACK;
	__u64 control = active;

	/* Our FIN is queued in these states; everything up to it is acknowledged when snd_una
	 * has reached write_seq, which counts it. */
	if (fin_sent && BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		control++;
	*tx = acked > control ? acked - control : 0;
	control = (flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1;
	*rx = received > control ? received - control : 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcplife_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 skaddr = (__u64)sk, now;
	struct tcplife_hists *h;
	struct tcplife_event *e;
	struct sock_owner owner;
	struct tcp_tuple tuple;
	struct birth *b, born;
	__u32 zero = 0;
	__u64 tx, rx;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	sockowner_note(sk, oldstate, newstate, &owner);
	if (newstate == TCP_ESTABLISHED) {
		born.ns = bpf_ktime_get_ns();
		born.active = oldstate == TCP_SYN_SENT;
		bpf_map_update_elem(&births, &skaddr, &born, BPF_ANY);
		return 0;
	}
	if (newstate != TCP_CLOSE)
		return 0;
	b = bpf_map_lookup_elem(&births, &skaddr);
	if (!b)
		return 0;	/* never established, or before tracing began */
	born = *b;
	bpf_map_delete_elem(&births, &skaddr);
	if (!owner.selected || !tcp_tuple_of(sk, &tuple) ||
	    !ports_selected(tuple.lport, tuple.rport))
		return 0;
	now = bpf_ktime_get_ns();
	payload_bytes(sk, oldstate, born.active, &tx, &rx);
	h = bpf_map_lookup_elem(&hists, &zero);
	if (h) {
		record_log2(&h->duration_ms, (now - born.ns) / 1000000);
		record_log2(&h->tx_bytes, tx);
		record_log2(&h->rx_bytes, rx);
		__sync_fetch_and_add(&h->duration_ns_sum, now - born.ns);
	}
	if (!emit_events)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return 0;
	}
	e->ts_ns = now;
	e->duration_ns = now - born.ns;
	e->tx_bytes = tx;
	e->rx_bytes = rx;
	e->owner = owner;
	e->tuple = tuple;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
