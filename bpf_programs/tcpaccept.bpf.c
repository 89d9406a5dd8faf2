// SPDX-License-Identifier: GPL-2.0
/* tcpaccept: passive TCP opens as a process takes them: at the return of accept()/accept4(),
 * in the accepting task, the new socket is found from the returned fd and the listener from
 * the listening fd (its accept queue after this accept).
 *
 * Not the state tracepoint's SYN_RECV -> ESTABLISHED: that fires in softirq, when the
 * handshake completes, before any process has the connection, and names whatever task was
 * on the CPU (bcc removed its tracepoint path for that reason, bcc issue 2304). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "tcpsock.h"
#include "owner.h"
#include "tcpaccept.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

const struct tcpaccept_event *event_btf_anchor __attribute__((unused));

SEC("tp_btf/sys_exit")
int BPF_PROG(tcpaccept_exit, struct pt_regs *regs, long ret)
{
	struct sock *sk, *listener;
	struct tcpaccept_event *e;
	struct tcp_tuple tuple;

	sk = accepted_tcp_sock(regs, ret, &listener);
	if (!sk || !task_selected() || !tcp_tuple_of(sk, &tuple) ||
	    !ports_selected(tuple.lport, tuple.rport))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	current_owner(&e->owner);
	e->tuple = tuple;
	e->backlog = listener ? BPF_CORE_READ(listener, sk_ack_backlog) : 0;
	e->backlog_max = listener ? BPF_CORE_READ(listener, sk_max_ack_backlog) : 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
