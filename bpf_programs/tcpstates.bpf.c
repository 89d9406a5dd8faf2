// SPDX-License-Identifier: GPL-2.0
/* tcpstates: every TCP state change, with the time the socket spent in the state it leaves and
 * the process that owns it (sockowners.h: the task that acted on it, also when the change
 * happens in softirq).
 *
 * Probes: inet_sock_set_state (the changes); from sockowners.h, sys_exit (accept: who owns a
 * new child socket), sock_send_length (a socket older than the trace gets its owner at its
 * next send) and tcp_destroy_sock (the cleanup). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "tcpsock.h"
#include "owner.h"
#define SOCKOWNER_ACCEPT
#define SOCKOWNER_SEND
#include "sockowners.h"
#include "tcpstates.h"

char LICENSE[] SEC("license") = "GPL";

/* socket -> when it entered its current state */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} entered SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

const struct tcpstates_event *event_btf_anchor __attribute__((unused));

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpstates_change, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 skaddr = (__u64)sk, now, *since, entered_ns;
	struct tcpstates_event *e;
	struct sock_owner owner;
	struct tcp_tuple tuple;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	now = bpf_ktime_get_ns();
	sockowner_note(sk, oldstate, newstate, &owner);
	since = bpf_map_lookup_elem(&entered, &skaddr);
	entered_ns = since ? *since : 0;
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&entered, &skaddr);
	else
		bpf_map_update_elem(&entered, &skaddr, &now, BPF_ANY);
	if (!owner.selected || !tcp_tuple_of(sk, &tuple) ||
	    !ports_selected(tuple.lport, tuple.rport))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return 0;
	}
	e->ts_ns = now;
	e->skaddr = skaddr;
	e->state_ns = entered_ns ? now - entered_ns : 0;
	e->owner = owner;
	e->tuple = tuple;
	e->oldstate = oldstate;
	e->newstate = newstate;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
