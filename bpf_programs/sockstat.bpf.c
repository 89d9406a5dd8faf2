// SPDX-License-Identifier: GPL-2.0
/* sockstat: socket API activity per process, counted in the kernel.
 *
 * All probes are BTF tracepoints (tp_btf). The socket syscalls are counted at the raw sys_enter
 * tracepoint by syscall number, not at one syscalls:sys_enter_* event each: a perf-event
 * tracepoint costs ~60 ms of RCU grace period to detach, thirteen of them most of a second, while
 * a tp_btf link detaches at once; the price is one early-exit check per syscall.
 * sock_send_length/sock_recv_length (end of sock_sendmsg/sock_recvmsg, kernel >= 6.3) give
 * bytes, inet_sock_set_state the TCP state changes. Counters are cumulative: userspace takes
 * differences between reads, so nothing is lost between a read and a reset. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "common.h"
#include "syscalls.h"
#include "sockstat.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);			/* tgid */
	__type(value, struct sockstat_counts);
} counts SEC(".maps");

static __always_inline struct sockstat_counts *my_counts(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sockstat_counts *c, zero = {};

	if (!task_selected())
		return NULL;
	c = bpf_map_lookup_elem(&counts, &tgid);
	if (c)
		return c;
	bpf_get_current_comm(zero.comm, sizeof(zero.comm));
	return lookup_or_init(&counts, &tgid, &zero);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(count_syscall, struct pt_regs *regs, long id)
{
	struct sockstat_counts *c;

	switch (id) {
	case NR_socket: case NR_socketpair: case NR_bind: case NR_listen: case NR_connect:
	case NR_accept: case NR_accept4: case NR_sendto: case NR_sendmsg: case NR_sendmmsg:
	case NR_recvfrom: case NR_recvmsg: case NR_recvmmsg:
		break;
	default:
		return 0;
	}
	c = my_counts();
	if (!c)
		return 0;
	switch (id) {
	case NR_socket: case NR_socketpair: c->socket++; break;
	case NR_bind: c->bind++; break;
	case NR_listen: c->listen++; break;
	case NR_connect: c->connect++; break;
	case NR_accept: case NR_accept4: c->accept++; break;
	case NR_sendto: case NR_sendmsg: case NR_sendmmsg: c->send++; break;
	default: c->recv++; break;
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(count_tcp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct sockstat_counts *c;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	c = my_counts();
	if (c)
		c->tcp_state++;
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(count_tx_bytes, struct sock *sk, int ret, int flags)
{
	struct sockstat_counts *c;

	if (ret <= 0)
		return 0;
	c = my_counts();
	if (c)
		c->tx_bytes += ret;
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(count_rx_bytes, struct sock *sk, int ret, int flags)
{
	struct sockstat_counts *c;

	/* MSG_PEEK leaves the data queued: it is counted when it is really read. */
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	c = my_counts();
	if (c)
		c->rx_bytes += ret;
	return 0;
}
