// SPDX-License-Identifier: GPL-2.0
/* tcpconnlat: the TCP handshake's latency, from the socket's move to SYN_SENT (in connect(),
 * just before the SYN is built) to ESTABLISHED (when the SYN-ACK is processed, usually in
 * softirq): the network round trip plus the peer's SYN-ACK time, without the local
 * scheduling that soconnlat's syscall timing includes.
 *
 * inet_sock_set_state only. The connecting task is current at CLOSE -> SYN_SENT and is kept
 * with the start; a handshake that ends in CLOSE (refused, timed out, abandoned) is dropped.
 * Histograms per destination are kept always (--hist, exporters); events go to the ring
 * buffer in trace mode when at least min_ns long. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "tcpsock.h"
#include "owner.h"
#include "tcpconnlat.h"

char LICENSE[] SEC("license") = "GPL";

const volatile bool emit_events = true;
const volatile __u64 min_ns = 0;

struct start {
	struct sock_owner owner;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tcpconnlat_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

const struct tcpconnlat_event *event_btf_anchor __attribute__((unused));

static const struct log2_hist empty_hist;

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconnlat_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 skaddr = (__u64)sk, now, latency;
	struct log2_hist *h;
	struct tcpconnlat_key key = {};
	struct tcpconnlat_event *e;
	struct tcp_tuple tuple;
	struct start *s, start;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		current_owner(&start.owner);
		if (!start.owner.selected || !tcp_tuple_of(sk, &tuple))
			return 0;
		start.ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&starts, &skaddr, &start, BPF_ANY);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	s = bpf_map_lookup_elem(&starts, &skaddr);
	if (!s)
		return 0;
	start = *s;
	bpf_map_delete_elem(&starts, &skaddr);
	if (newstate != TCP_ESTABLISHED || !tcp_tuple_of(sk, &tuple))
		return 0;
	now = bpf_ktime_get_ns();
	latency = now - start.ns;
	__builtin_memcpy(key.raddr, tuple.raddr, sizeof(key.raddr));
	key.rport = tuple.rport;
	key.family = tuple.family;
	h = lookup_or_init(&hists, &key, &empty_hist);
	if (h) {
		/* Slotted in us, summed in ns (the mean and the exporters' _sum lose nothing). */
		__sync_fetch_and_add(&h->slots[log2_slot(latency / 1000)], 1);
		__sync_fetch_and_add(&h->count, 1);
		__sync_fetch_and_add(&h->sum, latency);
	} else {
		count_lost_event();
	}
	if (!emit_events || latency < min_ns)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return 0;
	}
	e->ts_ns = now;
	e->latency_ns = latency;
	e->owner = start.owner;
	e->tuple = tuple;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
